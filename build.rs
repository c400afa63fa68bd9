//! Link libtorch into `quern-torch` so CUDA works at run time.
//!
//! libtorch registers its CUDA backend from `libtorch_cuda.so` in a static initialiser. The
//! binary calls nothing in that library directly, so a default `--as-needed` link drops it
//! and CUDA silently reports "unavailable". We force it in with `--no-as-needed`, and add an
//! rpath to torch's lib directory so the binary runs without `LD_LIBRARY_PATH`.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    record_dependency_versions();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report libtorch's lib directory; CUDA may be unavailable");
        return;
    };
    let dir = std::path::Path::new(&lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    // Only `quern-torch` runs libtorch; `quern` references none of it, so the default
    // `--as-needed` keeps libtorch out of `quern` and data commands start without it.
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-arg-bin=quern-torch=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg-bin=quern-torch=-ltorch_cuda");
        println!("cargo:rustc-link-arg-bin=quern-torch=-Wl,--as-needed");
    }
}

/// Reads the versions of arrow, datafusion, parquet and tokenizers from Cargo.lock, for
/// `quern doctor`.
fn record_dependency_versions() {
    let lock =
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let mut name = "";
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = n.trim_matches('"');
        } else if let Some(v) = line.strip_prefix("version = ") {
            let v = v.trim_matches('"');
            let key = match name {
                "arrow" => "QUERN_ARROW_VERSION",
                "parquet" => "QUERN_PARQUET_VERSION",
                "datafusion" => "QUERN_DATAFUSION_VERSION",
                "tokenizers" => "QUERN_TOKENIZERS_VERSION",
                _ => continue,
            };
            println!("cargo:rustc-env={key}={v}");
        }
    }
}
