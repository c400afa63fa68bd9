//! Records the version of the torch installation tch links, for `quern doctor`, and compiles
//! the C++ sidecar (`csrc/sidecar.cpp`, and `csrc/dist.cpp` for data-parallel training)
//! against the same torch headers tch uses.
//!
//! `dist.cpp` gets Gloo (CPU process groups) where gloo's headers exist (Debian's
//! `libgloo-dev`, or `QUERN_GLOO_INCLUDE`), and NCCL where the wheel's CUDA, NCCL, CRT and
//! CCCL headers exist (PyPI `nvidia-cuda-crt`, `nvidia-cuda-cccl`; scripts/setup.sh installs
//! both); without them it builds without that backend and says so when asked for it. The
//! gloo headers are not the gloo inside libtorch (docs/distributed.md), so the object is
//! checked to reference no gloo symbol.
use std::path::{Path, PathBuf};
use std::process::Command;

/// The sizes libtorch 2.11.0 allocates for `ProcessGroupGloo` and its `Options`, and for
/// `ProcessGroupNCCL` (read from the `operator new` calls in libtorch's own code; see
/// docs/distributed.md). `dist.cpp` static_asserts its headers give the same.
const TORCH_VERSION: &str = "2.11.0";
const GLOO_PG_SIZE: usize = 488;
const GLOO_OPTIONS_SIZE: usize = 176;
const NCCL_PG_SIZE: usize = 1112;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=QUERN_GLOO_INCLUDE");
    println!("cargo:rerun-if-changed=csrc/sidecar.cpp");
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report libtorch's lib directory (DEP_TCH_LIBTORCH_LIB); source scripts/env.sh");
    };
    let lib = Path::new(&lib);
    let version_py = lib.join("../version.py");
    println!("cargo:rerun-if-changed={}", version_py.display());
    let mut version = String::new();
    if let Ok(text) = std::fs::read_to_string(&version_py) {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("__version__ = ") {
                let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
                println!("cargo:rustc-env=QUERN_LIBTORCH_VERSION={v}");
                version = v.to_string();
            }
        }
    }
    let include = lib.join("../include");
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
            .flag_if_supported("-Wno-unused-parameter")
            .flag_if_supported("-w")
            .warnings(false);
        b
    };
    let verified = version.split('+').next() == Some(TORCH_VERSION);
    let mut dist = base();
    dist.file("csrc/dist.cpp");
    let gloo = gloo_include().filter(|_| verified);
    if let Some(dir) = &gloo {
        dist.include(dir)
            .define("USE_C10D_GLOO", None)
            .define("QUERN_GLOO_PG_SIZE", GLOO_PG_SIZE.to_string().as_str())
            .define(
                "QUERN_GLOO_OPTIONS_SIZE",
                GLOO_OPTIONS_SIZE.to_string().as_str(),
            );
    }
    let nccl = nccl_includes(lib).filter(|_| verified);
    if let Some(dirs) = &nccl {
        for d in dirs {
            dist.include(d);
        }
        dist.define("QUERN_NCCL", None)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .define("QUERN_NCCL_PG_SIZE", NCCL_PG_SIZE.to_string().as_str());
    }
    let objects = dist.compile_intermediates();
    if gloo.is_some() {
        check_no_gloo_symbols(&objects);
    }
    base()
        .file("csrc/sidecar.cpp")
        .objects(&objects)
        .compile("quern_sidecar");
    // This crate's own test and example binaries load libtorch without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-search=native={}", lib.display());
    if nccl.is_some() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// gloo's headers: `QUERN_GLOO_INCLUDE`, else the system's (Debian's libgloo-dev).
fn gloo_include() -> Option<PathBuf> {
    let candidates = std::env::var_os("QUERN_GLOO_INCLUDE")
        .map(|p| vec![PathBuf::from(p)])
        .unwrap_or_else(|| vec!["/usr/include".into(), "/usr/local/include".into()]);
    candidates.into_iter().find(|d| {
        let ok = d.join("gloo/context.h").exists() && d.join("gloo/rendezvous/store.h").exists();
        println!(
            "cargo:rerun-if-changed={}",
            d.join("gloo/context.h").display()
        );
        ok
    })
}

/// The include directories ProcessGroupNCCL.hpp needs, from the CUDA wheel's site-packages
/// (`torch/lib/../..`), when they are all there and libtorch has its CUDA part.
fn nccl_includes(lib: &Path) -> Option<Vec<PathBuf>> {
    let nvidia = lib.join("../../nvidia");
    let cu = nvidia.join("cu13/include");
    let dirs = vec![cu.clone(), nvidia.join("nccl/include"), cu.join("cccl")];
    let needed = [
        lib.join("libtorch_cuda.so"),
        cu.join("cuda_runtime_api.h"),
        cu.join("crt/host_config.h"),
        cu.join("cccl/cuda/std/version"),
        nvidia.join("nccl/include/nccl.h"),
    ];
    for f in &needed {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    needed.iter().all(|f| f.exists()).then_some(dirs)
}

/// Fails the build when the compiled distributed sidecar references a gloo symbol or emits a
/// gloo vtable: those would come from the Debian headers, whose layouts are not libtorch's.
fn check_no_gloo_symbols(objects: &[PathBuf]) {
    for o in objects {
        let Ok(out) = Command::new("nm").arg("-C").arg(o).output() else {
            // No binutils: the static_asserts on the allocated sizes still hold.
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| {
                let undefined = l.trim_start().starts_with("U ") && l.contains("gloo::");
                undefined || l.contains("vtable for gloo::") || l.contains("typeinfo for gloo::")
            })
            .collect();
        if !bad.is_empty() {
            panic!(
                "csrc/dist.cpp uses gloo itself ({}): the gloo headers it is compiled against are not \
                 the gloo inside libtorch; call only functions libtorch exports",
                bad.join("; ")
            );
        }
    }
}
