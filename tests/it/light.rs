//! The `quern` binary links no libtorch: data commands start without it, and the model
//! commands are handed to `quern-torch` next to it, with their arguments, output and exit
//! code intact.

use std::path::Path;

use crate::common::*;

/// The shared libraries an ELF binary names in its dynamic section (`readelf -d`).
fn needed(bin: &Path) -> Vec<String> {
    let out = std::process::Command::new("readelf")
        .arg("-d")
        .arg(bin)
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {}", bin.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect()
}

#[test]
fn quern_does_not_link_libtorch_and_quern_torch_does() {
    let quern = Path::new(env!("CARGO_BIN_EXE_quern"));
    let libs = needed(quern);
    assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{libs:?}");
    assert!(
        !libs
            .iter()
            .any(|l| l.contains("torch") || l.contains("c10")),
        "quern loads libtorch: {libs:?}"
    );
    let torch = needed(Path::new(env!("CARGO_BIN_EXE_quern-torch")));
    assert!(
        torch.iter().any(|l| l.starts_with("libtorch_cpu")),
        "{torch:?}"
    );
}

/// Nothing in the `quern` library reaches the model crates: their code lives in
/// `src/bin/quern-torch/`, so the library (and `quern`) build without the `torch` feature.
#[test]
fn the_library_holds_no_model_code() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if !p.ends_with("bin") {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("src"), &mut files);
    assert!(files.len() > 20, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for needle in [
            "quern_models",
            "quern_train",
            "quern_eval",
            "tch::",
            "torch_sys",
        ] {
            let hit = text.lines().any(|l| {
                let code = l.split("//").next().unwrap_or("");
                code.contains(needle) && !code.contains("Batch::")
            });
            assert!(!hit, "{} uses {needle}", f.display());
        }
    }
}

#[test]
fn model_commands_are_handed_to_quern_torch() {
    // doctor runs in quern-torch: it reports libtorch and its smoke test.
    let out = run_ok(quern().args(["doctor", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["libtorch_smoke_test"], "ok", "{v}");
    // An error there keeps its message and exit code.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("run.toml");
    let out = quern().arg("train").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run.toml"), "{err}");
    // --help of a model command comes from the one command-line definition.
    let out = run_ok(quern().args(["train", "--help"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--resume"));
}

#[test]
fn without_quern_torch_data_commands_run_and_model_commands_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("quern");
    std::fs::copy(env!("CARGO_BIN_EXE_quern"), &alone).unwrap();
    let out = run_ok(std::process::Command::new(&alone).arg("stages"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("minhash_dedup"));
    let err = run_err(std::process::Command::new(&alone).args(["generate", "--model", "m"]));
    assert!(
        err.contains("quern-torch") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
}

/// A libtorch failure inside a model command is an error with libtorch's own words (not a
/// Rust panic and its backtrace hint); running out of memory says what to lower.
#[test]
fn libtorch_failures_are_errors_and_out_of_memory_names_the_fix() {
    for (fault, want) in [
        ("shape", "libtorch failed: "),
        ("oom", "libtorch ran out of memory: "),
    ] {
        let out = quern()
            .args(["doctor", "--json"])
            .env("QUERN_TEST_TORCH_FAULT", fault)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{fault}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&format!("error: {want}")), "{fault}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
        assert!(!err.contains("frame #"), "no C++ trace: {err}");
    }
    let out = quern()
        .args(["doctor", "--json"])
        .env("QUERN_TEST_TORCH_FAULT", "oom")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("train.micro_batch"));
}
