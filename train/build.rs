//! Records the version of the torch installation tch links, for `quern doctor`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // This crate's own test and bench binaries load libtorch too.
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        let version_py = std::path::Path::new(&lib).join("../version.py");
        println!("cargo:rerun-if-changed={}", version_py.display());
        if let Ok(text) = std::fs::read_to_string(&version_py) {
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("__version__ = ") {
                    let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
                    println!("cargo:rustc-env=QUERN_LIBTORCH_VERSION={v}");
                }
            }
        }
    }
}
