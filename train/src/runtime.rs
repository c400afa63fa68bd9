//! What libtorch this binary runs on, and a proof that the link works.

use serde::Serialize;

/// libtorch's version and devices, as `quern doctor` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeInfo {
    /// Version of the torch installation tch was built against (e.g. `2.11.0+cu130`).
    pub libtorch_version: String,
    pub cuda_available: bool,
    pub cuda_devices: usize,
    pub cudnn_available: bool,
    /// Threads libtorch uses for CPU ops.
    pub torch_threads: i32,
    /// The result of a small matmul on the CPU (should be 14.0): proves kernels run.
    pub smoke_matmul: f64,
}

/// Queries libtorch and runs a small tensor op.
pub fn runtime_info() -> RuntimeInfo {
    let a = tch::Tensor::from_slice(&[1.0f64, 2.0, 3.0]).reshape([1, 3]);
    let b = tch::Tensor::from_slice(&[1.0f64, 2.0, 3.0]).reshape([3, 1]);
    let smoke_matmul = a.matmul(&b).double_value(&[0, 0]);
    RuntimeInfo {
        libtorch_version: libtorch_version(),
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count().max(0) as usize,
        cudnn_available: tch::Cuda::cudnn_is_available(),
        torch_threads: tch::get_num_threads(),
        smoke_matmul,
    }
}

/// The torch version the build linked, recorded by torch-sys at build time when available.
fn libtorch_version() -> String {
    option_env!("QUERN_LIBTORCH_VERSION")
        .unwrap_or("unknown (torch-sys reported no version.py)")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn libtorch_runs_a_matmul() {
        let info = super::runtime_info();
        assert_eq!(info.smoke_matmul, 14.0);
    }
}
