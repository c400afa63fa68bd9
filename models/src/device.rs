//! Device and dtype names as the command line takes them.

use quern_core::{Error, Result};
use tch::{Device, Kind};

/// `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`.
pub fn parse(name: &str) -> Result<Device> {
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "cuda:0" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        n if n.starts_with("cuda") => {
            if !tch::Cuda::is_available() {
                return Err(Error::bad_config(
                    "device",
                    "CUDA is not available on this machine",
                ));
            }
            let i: usize = n
                .strip_prefix("cuda:")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    Error::bad_config("device", format!("`{n}`: expected cuda or cuda:N"))
                })?;
            if i as i64 >= tch::Cuda::device_count() {
                return Err(Error::bad_config(
                    "device",
                    format!("`{n}`: only {} CUDA devices", tch::Cuda::device_count()),
                ));
            }
            Ok(Device::Cuda(i))
        }
        other => Err(Error::bad_config(
            "device",
            format!("`{other}` is not one of auto, cpu, cuda, cuda:N"),
        )),
    }
}

/// `fp32`, `bf16` or `fp16`.
pub fn parse_dtype(name: &str) -> Result<Kind> {
    match name {
        "fp32" | "f32" | "float32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "fp16" | "f16" | "float16" => Ok(Kind::Half),
        other => Err(Error::bad_config(
            "dtype",
            format!("`{other}` is not one of fp32, bf16, fp16"),
        )),
    }
}

/// On CPU every training step or decoding pass allocates and frees the same activation
/// buffers (megabytes each). glibc's malloc gives large freed blocks back to the kernel
/// (munmap, heap trim) and the next step faults fresh zeroed pages in again: 25% of a small
/// model's training step was kernel time (BENCHMARKS.md, `train`). Fixed thresholds keep
/// those blocks in the heap for reuse, as a caching allocator does on the GPU. Process-wide,
/// set once; the trainer and the generator call it for CPU runs.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator tunables; it is safe to call at any time.
            // 32 MiB is the largest mmap threshold glibc accepts on 64-bit; larger blocks are
            // still mapped and unmapped. A refused setting leaves malloc as it was.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_bad_ones_are_named() {
        assert_eq!(parse("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_dtype("bf16").unwrap(), Kind::BFloat16);
        assert!(parse("tpu").unwrap_err().to_string().contains("tpu"));
        assert!(parse_dtype("fp8").unwrap_err().to_string().contains("fp8"));
    }
}
