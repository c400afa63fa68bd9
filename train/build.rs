//! Records the version of the torch installation tch links, for `quern doctor`, and compiles
//! the C++ sidecar (`csrc/sidecar.cpp`) against the same torch headers tch uses.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=csrc/sidecar.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report libtorch's lib directory (DEP_TCH_LIBTORCH_LIB); source scripts/env.sh");
    };
    let lib = std::path::Path::new(&lib);
    let version_py = lib.join("../version.py");
    println!("cargo:rerun-if-changed={}", version_py.display());
    if let Ok(text) = std::fs::read_to_string(&version_py) {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("__version__ = ") {
                let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
                println!("cargo:rustc-env=QUERN_LIBTORCH_VERSION={v}");
            }
        }
    }
    let include = lib.join("../include");
    cc::Build::new()
        .cpp(true)
        .file("csrc/sidecar.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-w")
        .warnings(false)
        .compile("quern_sidecar");
    // This crate's own test and example binaries load libtorch without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
