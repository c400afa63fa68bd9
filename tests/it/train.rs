//! `quern train`: a run from TOML to checkpoints, resume, and refusal of a bad config.

use std::path::Path;

use crate::common::{fixture, quern, run_err, run_ok};

const SEQ: usize = 32;

fn setup(root: &Path, extra: &str) -> std::path::PathBuf {
    let text = std::fs::read(fixture("train/gpl-3.0.txt")).unwrap();
    let cut = text.len() * 9 / 10;
    // Byte-level tokens of the GPL-3.0 text (tests/data/train).
    let split = |name: &str, bytes: &[u8]| {
        quern_train::data::write_byte_split(&root.join("tokens").join(name), bytes, SEQ, false)
            .unwrap()
    };
    split("train", &text[..cut]);
    split("val", &text[cut..]);
    let toml = format!(
        "out_dir = \"run\"\n[data]\ntrain = \"tokens/train\"\nval = \"tokens/val\"\n\
         [model]\nlayers = 1\nheads = 2\ndim = 32\n[optim]\nlr = 3e-3\n{extra}\
         [train]\nmicro_batch = 8\nmax_steps = 30\neval_every = 15\neval_batches = 2\n\
         [checkpoint]\nevery = 10\nkeep = 2\n"
    );
    let path = root.join("run.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn trains_checkpoints_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), "");
    let out = run_ok(quern().args(["train", "--quiet", "--json"]).arg(&cfg));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"], 30);
    let losses = report["losses"].as_array().unwrap();
    let first = losses[0]["loss"].as_f64().unwrap();
    let last = losses[29]["loss"].as_f64().unwrap();
    assert!(last < first - 1.0, "loss {first} -> {last}");
    let run = dir.path().join("run");
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        30 + 2
    );
    let ckpts: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ckpts.len(), 2, "keep = 2: {ckpts:?}");
    assert!(ckpts.contains(&"step-00000030".to_string()));
    let page = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(page.contains("<title>Train and validation loss</title>") && page.contains("<svg"));

    let out = run_ok(
        quern()
            .args(["train", "--quiet", "--resume", "--max-steps", "40"])
            .arg(&cfg),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("steps 30..40"), "{text}");
    assert!(text.contains("val loss"), "{text}");
}

#[test]
fn a_bad_key_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), "lr_max = 1.0\n");
    let err = run_err(quern().args(["train", "--quiet"]).arg(&cfg));
    assert!(err.contains("optim") && err.contains("lr_max"), "{err}");
    assert!(
        !dir.path().join("run").exists(),
        "a refused config must not start a run"
    );
}

/// A second run into an out_dir that holds a run is refused, naming the directory and the
/// way out, and leaves that run as it was (it used to delete its metrics and mix
/// checkpoints); `--force` replaces it.
#[test]
fn a_run_into_an_out_dir_holding_another_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), "");
    let run = dir.path().join("run");
    run_ok(
        quern()
            .args(["train", "--quiet", "--max-steps", "12"])
            .arg(&cfg),
    );
    let metrics = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let ckpts = crate::common::tree(&run.join("checkpoints"));
    let err = run_err(
        quern()
            .args(["train", "--quiet", "--max-steps", "3"])
            .arg(&cfg),
    );
    assert!(
        err.contains(&run.display().to_string())
            && err.contains("already holds a training run")
            && err.contains("--resume")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), metrics);
    assert_eq!(crate::common::tree(&run.join("checkpoints")), ckpts);

    run_ok(
        quern()
            .args(["train", "--quiet", "--force", "--max-steps", "3"])
            .arg(&cfg),
    );
    let steps: Vec<u64> = crate::common::read_jsonl(&run.join("metrics.jsonl"))
        .iter()
        .filter(|l| l["kind"] == "train")
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3], "the forced run starts a fresh log");
    let names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["step-00000003"], "only the new run's checkpoints");

    let help = run_ok(quern().args(["train", "--help"]));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--force"));
}
