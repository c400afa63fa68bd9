//! `quern sweep`: a grid of tiny training runs ranked by their own reports, seeded random
//! search, refusal of bad keys and values before anything is written, and resume.

use std::path::{Path, PathBuf};

use crate::common::{fixture, quern, run_err, run_ok};

const SEQ: usize = 32;

/// Byte-level splits of the GPL-3.0 text and a tiny base run.toml under `root/base/`
/// (paths relative to it, so the sweep must resolve them against the base file).
fn setup(root: &Path) -> PathBuf {
    let text = std::fs::read(fixture("train/gpl-3.0.txt")).unwrap();
    let cut = text.len() * 9 / 10;
    let base = root.join("base");
    let split = |name: &str, bytes: &[u8]| {
        quern_train::data::write_byte_split(&base.join("tokens").join(name), bytes, SEQ, false)
            .unwrap()
    };
    split("train", &text[..cut]);
    split("val", &text[cut..]);
    let toml = "out_dir = \"ignored\"\n[data]\ntrain = \"tokens/train\"\nval = \"tokens/val\"\n\
                [model]\nlayers = 1\nheads = 2\ndim = 32\n[optim]\nlr = 3e-3\n\
                [train]\nmicro_batch = 8\nmax_steps = 8\neval_every = 4\neval_batches = 2\n\
                device = \"cpu\"\n[checkpoint]\nevery = 4\nkeep = 2\nkeep_best = false\n";
    std::fs::write(base.join("run.toml"), toml).unwrap();
    base.join("run.toml")
}

fn write_sweep(root: &Path, body: &str) -> PathBuf {
    let path = root.join("sweep.toml");
    std::fs::write(
        &path,
        format!("base = \"base/run.toml\"\nout_dir = \"sweeps/s\"\n{body}"),
    )
    .unwrap();
    path
}

fn sweep_json(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("sweeps/s/sweep.json")).unwrap()).unwrap()
}

#[test]
fn a_grid_runs_every_trial_ranked_by_their_reports_and_a_rerun_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let sweep = write_sweep(
        dir.path(),
        "[params]\n\"optim.lr\" = [1e-4, 3e-3]\n\"train.micro_batch\" = [4, 8]\n",
    );
    let out = run_ok(quern().arg("sweep").arg(&sweep));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("4 run now, 0 already finished"), "{stdout}");
    let s = dir.path().join("sweeps/s");
    // Each trial's own report.json, and its run.toml with the grid's values.
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    for i in 0..4 {
        let t = s.join(format!("trial-{i:03}"));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["steps"], 8);
        let best = report["best"]["val_loss"].as_f64().unwrap();
        expected.push((best, format!("trial-{i:03}")));
        let cfg: toml::Table =
            toml::from_str(&std::fs::read_to_string(t.join("run.toml")).unwrap()).unwrap();
        seen.push((
            cfg["optim"]["lr"].as_float().unwrap(),
            cfg["train"]["micro_batch"].as_integer().unwrap(),
        ));
    }
    assert_eq!(seen, [(1e-4, 4), (1e-4, 8), (3e-3, 4), (3e-3, 8)]);
    expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let ranked: Vec<String> = expected.iter().map(|e| e.1.clone()).collect();
    let json = sweep_json(dir.path());
    let ranking: Vec<String> = json["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ranking, ranked);
    // The figures in sweep.json are the reports' own.
    for t in json["trials"].as_array().unwrap() {
        let e = expected.iter().find(|e| e.1 == t["trial"]).unwrap();
        assert_eq!(t["best_val_loss"].as_f64().unwrap(), e.0);
        assert_eq!(t["status"], "ok");
    }
    // The table lists the trials in the same order.
    let order: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|w| w.starts_with("trial-"))
        .collect();
    assert_eq!(order, ranked);
    let csv = std::fs::read_to_string(s.join("sweep.csv")).unwrap();
    let csv_order: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(csv_order, ranked);

    // Again: every trial is finished, nothing runs, the results are the same.
    let reports: Vec<Vec<u8>> = (0..4)
        .map(|i| std::fs::read(s.join(format!("trial-{i:03}/report.json"))).unwrap())
        .collect();
    let out = run_ok(quern().arg("sweep").arg(&sweep));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 run now, 4 already finished"), "{stdout}");
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(
            &std::fs::read(s.join(format!("trial-{i:03}/report.json"))).unwrap(),
            r
        );
    }
    assert_eq!(sweep_json(dir.path()), json);
}

/// An interrupted trial (checkpoints, no report.json) is resumed and finishes as the
/// uninterrupted trial did.
#[test]
fn an_unfinished_trial_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let sweep = write_sweep(dir.path(), "[params]\n\"optim.lr\" = [3e-3]\n");
    run_ok(quern().arg("sweep").arg(&sweep));
    let t = dir.path().join("sweeps/s/trial-000");
    let full: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("report.json")).unwrap()).unwrap();
    // As if killed after the step-4 checkpoint: no step-8 checkpoint, no report.
    std::fs::remove_dir_all(t.join("checkpoints/step-00000008")).unwrap();
    std::fs::remove_file(t.join("report.json")).unwrap();
    let out = run_ok(quern().arg("sweep").arg(&sweep));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 run now, 0 already finished"));
    let resumed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("report.json")).unwrap()).unwrap();
    assert_eq!(resumed["start_step"], 4);
    assert_eq!(resumed["steps"], 8);
    assert_eq!(resumed["best"], full["best"]);
    assert_eq!(
        resumed["evals"].as_array().unwrap().last(),
        full["evals"].as_array().unwrap().last()
    );
}

fn trial_values(root: &Path) -> Vec<serde_json::Value> {
    sweep_json(root)["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["params"].clone())
        .collect()
}

#[test]
fn random_search_repeats_with_its_seed_and_changes_with_another() {
    let params = "[params]\n\"optim.lr\" = { log_uniform = [1e-4, 1e-2] }\n\
                  \"train.micro_batch\" = { int = [2, 8] }\n\
                  \"optim.decay\" = { choice = [\"cosine\", \"linear\"] }\n\
                  \"optim.weight_decay\" = { uniform = [0.0, 0.2] }\n";
    let draw = |seed: u64| {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let sweep = write_sweep(
            dir.path(),
            &format!("strategy = \"random\"\ntrials = 3\nseed = {seed}\n{params}"),
        );
        // --check lists the trials without running or writing anything.
        let out = run_ok(quern().args(["sweep", "--check"]).arg(&sweep));
        assert!(!dir.path().join("sweeps").exists());
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(listed.contains("3 trials checked"), "{listed}");
        // The table without the last line (which names the temporary out_dir).
        let listed: Vec<String> = listed.lines().take(4).map(String::from).collect();
        run_ok(quern().arg("sweep").arg(&sweep).env("OMP_NUM_THREADS", "1"));
        let values = trial_values(dir.path());
        for v in &values {
            let lr = v["optim.lr"].as_f64().unwrap();
            assert!((1e-4..=1e-2).contains(&lr), "{lr}");
            let b = v["train.micro_batch"].as_i64().unwrap();
            assert!((2..=8).contains(&b), "{b}");
        }
        (values, listed)
    };
    let (a, listed_a) = draw(11);
    let (b, listed_b) = draw(11);
    let (c, _) = draw(12);
    assert_eq!(a, b);
    assert_eq!(listed_a, listed_b);
    assert_ne!(a, c);
    let distinct: std::collections::BTreeSet<String> = a.iter().map(|v| v.to_string()).collect();
    assert_eq!(distinct.len(), 3, "three different draws: {a:?}");
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_naming_file_and_key_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let cases = [
        (
            "[params]\n\"optim.lr_max\" = [1e-3]\n",
            "optim.lr_max",
            "lr_max",
        ),
        (
            "[params]\n\"optim.lr\" = [\"fast\"]\n",
            "optim.lr",
            "invalid type",
        ),
        (
            "[params]\n\"train.micro_batch\" = [4, 0]\n",
            "train.micro_batch",
            "at least 1",
        ),
        (
            "[params]\n\"train.nonsense\" = [1]\n",
            "train.nonsense",
            "nonsense",
        ),
        (
            "[params]\n\"optim.lr\" = { log_uniform = [1e-4, 1e-2] }\n",
            "optim.lr",
            "strategy = \"random\"",
        ),
        (
            "[params]\n\"out_dir\" = [\"x\"]\n",
            "out_dir",
            "set by the sweep",
        ),
    ];
    for (body, key, why) in cases {
        let sweep = write_sweep(dir.path(), body);
        let err = run_err(quern().arg("sweep").arg(&sweep));
        assert!(
            err.contains(&sweep.display().to_string()) && err.contains(key) && err.contains(why),
            "{body}: {err}"
        );
        assert!(
            !dir.path().join("sweeps").exists(),
            "{body}: wrote something"
        );
    }
    // A key of the sweep file itself.
    let sweep = write_sweep(
        dir.path(),
        "stratgy = \"grid\"\n[params]\n\"optim.lr\" = [1e-3]\n",
    );
    let err = run_err(quern().arg("sweep").arg(&sweep));
    assert!(
        err.contains(&sweep.display().to_string()) && err.contains("stratgy"),
        "{err}"
    );
    assert!(!dir.path().join("sweeps").exists());
}

/// A trial that fails when it runs (its data split does not exist) is recorded as failed with
/// its error, the others finish and are ranked, the command fails after writing the results;
/// running it again retries only the failed trial.
#[test]
fn a_failed_trial_is_recorded_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let sweep = write_sweep(
        dir.path(),
        "[params]\n\"data.train\" = [\"nowhere/train\", \"base/tokens/train\"]\n",
    );
    let out = quern().arg("sweep").arg(&sweep).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 of 2 trials failed"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("trial-")).collect();
    assert!(
        rows.len() == 2 && rows[0].contains("trial-001") && rows[0].ends_with("ok"),
        "{stdout}"
    );
    assert!(rows[1].contains("trial-000") && rows[1].ends_with("failed"));
    let json = sweep_json(dir.path());
    let failed = &json["trials"][0];
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("nowhere"),
        "{failed}"
    );
    assert_eq!(json["trials"][1]["status"], "ok");
    assert_eq!(
        json["ranking"],
        serde_json::json!(["trial-001", "trial-000"])
    );
    let csv = std::fs::read_to_string(dir.path().join("sweeps/s/sweep.csv")).unwrap();
    assert!(csv.contains(",failed,"), "{csv}");

    let report = dir.path().join("sweeps/s/trial-001/report.json");
    let before = std::fs::read(&report).unwrap();
    let out = quern().arg("sweep").arg(&sweep).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 run now, 1 already finished"), "{stdout}");
    assert_eq!(std::fs::read(&report).unwrap(), before);
}
