//! Compiles the decoding kernels (`csrc/decode.cpp`) and the gradient helper
//! (`csrc/grads.cpp`) against the torch headers tch uses, and gives this crate's own test binaries an rpath to libtorch, so they load it without
//! `LD_LIBRARY_PATH` (the `quern` binary and `quern-train` do the same).
//!
//! The kernels split their rows with `at::parallel_for`, which libtorch's headers implement
//! as an OpenMP region: they are compiled with `-fopenmp` and linked against the OpenMP
//! runtime libtorch itself loads (`libgomp.so.1` beside `libtorch_cpu.so`), so the kernels
//! and libtorch share one thread pool.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=csrc/decode.cpp");
    println!("cargo:rerun-if-changed=csrc/grads.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report libtorch's lib directory (DEP_TCH_LIBTORCH_LIB); source scripts/env.sh");
    };
    let lib = Path::new(&lib);
    let include = lib.join("../include");
    cc::Build::new()
        .cpp(true)
        .file("csrc/decode.cpp")
        .file("csrc/grads.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-fopenmp")
        // Rotary positions round each product as libtorch does (no fused multiply-adds).
        .flag("-ffp-contract=off")
        .opt_level(3)
        .warnings(false)
        .compile("quern_decode");
    println!("cargo:rustc-link-search=native={}", lib.display());
    if lib.join("libgomp.so.1").exists() {
        println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
    } else {
        // A libtorch without its own OpenMP runtime (a system or conda build) uses the
        // system's.
        println!("cargo:rustc-link-lib=dylib=gomp");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
