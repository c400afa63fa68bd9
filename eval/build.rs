//! Gives this crate's own test binaries an rpath to libtorch, so they load it without
//! `LD_LIBRARY_PATH` (as `quern-models` does).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report libtorch's lib directory (DEP_TCH_LIBTORCH_LIB); source scripts/env.sh");
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
}
