//! Data mixtures (`[[data.mix]]`): rows come from each split in its weight's share (checked
//! on the rows themselves, and over a whole run through the binary), a resumed mixture run
//! ends with the uninterrupted run's weights, and bad mixtures are refused naming the key.

use std::path::Path;

use quern_train::data::{BatchSource, ShardRows};
use quern_train::mix::MixRows;

use crate::common::{quern, run_err, run_ok};

const SEQ: usize = 16;

/// A packed split of `rows` rows whose ids are all in `[lo, lo + 8)`, so a row's split can
/// be told from its ids.
fn split(dir: &Path, rows: usize, lo: i32) {
    let rows: Vec<Vec<i32>> = (0..rows)
        .map(|r| (0..=SEQ).map(|i| lo + ((r + i) % 8) as i32).collect())
        .collect();
    quern_train::data::write_packed_split(
        dir,
        &rows,
        64,
        [Some(60), Some(61), Some(62), None],
        "t",
    )
    .unwrap();
}

/// The rows themselves: a 0.5 / 0.3 / 0.2 mixture of three splits with disjoint ids gives
/// each split's rows in its share to within one row after every batch, a small split
/// wraps into its next epoch, and a mixture seeked to a position continues as the one that
/// read up to it.
#[test]
fn a_mixture_gives_each_split_its_share_of_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (name, rows, lo) in [("a", 40, 0), ("b", 30, 8), ("c", 5, 16)] {
        split(&root.join(name), rows, lo);
    }
    let open = || -> MixRows {
        let srcs: Vec<Box<dyn BatchSource>> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                Box::new(ShardRows::open(&root.join(n), 7, 0, 1).unwrap().0) as Box<dyn BatchSource>
            })
            .collect();
        MixRows::new(srcs, &[5.0, 3.0, 2.0]).unwrap()
    };
    let mut mix = open();
    let mut seen = [0u64; 3];
    let mut all = Vec::new();
    for batch in 0..20 {
        let t = mix.next_rows(6).unwrap();
        let ids: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&t).unwrap();
        for row in &ids {
            seen[(row[0] / 8) as usize] += 1;
        }
        all.extend(ids);
        let n = 6.0 * (batch + 1) as f64;
        for (j, w) in [0.5, 0.3, 0.2].iter().enumerate() {
            assert!(
                (seen[j] as f64 - w * n).abs() <= 1.0,
                "after {n} rows: {seen:?}"
            );
        }
        assert_eq!(mix.mix_rows().unwrap(), seen.to_vec());
    }
    // 24 rows of the 5-row split: it went through nearly five epochs.
    assert_eq!(seen, [60, 36, 24]);
    // A fresh mixture seeked to row 66 reads what the first one read from there.
    let mut again = open();
    again
        .seek(quern_train::data::DataCursor {
            epoch: 0,
            position: 66,
        })
        .unwrap();
    let rest: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&again.next_rows(54).unwrap()).unwrap();
    assert_eq!(rest, all[66..].to_vec());
}

fn toml(root: &Path, name: &str, mix: &str, steps: u64) -> std::path::PathBuf {
    let text = format!(
        "out_dir = \"{name}\"\n[data]\ntrain = \"a\"\n{mix}\
         [model]\nlayers = 1\nheads = 2\ndim = 16\n[optim]\nlr = 1e-2\n\
         [train]\nmicro_batch = 4\nmax_steps = {steps}\neval_every = 0\nlog_every = 1\n\
         [checkpoint]\nevery = 5\nkeep = 3\n"
    );
    let p = root.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

const MIX: &str = "train_weight = 0.6\n[[data.mix]]\nsplit = \"b\"\nweight = 0.3\n\
                   [[data.mix]]\nsplit = \"c\"\nweight = 0.1\n";

/// Through the binary: over a 100-step run (400 rows) the realised shares are within 1% of
/// the weights, `metrics.jsonl` logs the rows per split at every step (rising to the
/// report's), and a run stopped at step 5 and resumed ends with the same weights as the
/// uninterrupted run.
#[test]
fn a_mixture_run_logs_its_ratios_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (name, rows, lo) in [("a", 40, 0), ("b", 30, 8), ("c", 5, 16)] {
        split(&root.join(name), rows, lo);
    }
    let out = run_ok(
        quern()
            .args(["train", "--quiet", "--json"])
            .arg(toml(root, "long", MIX, 100)),
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mix = r["mix"].as_array().unwrap();
    assert_eq!(mix.len(), 3);
    let mut total = 0;
    for (m, w) in mix.iter().zip([0.6, 0.3, 0.1]) {
        assert!((m["weight"].as_f64().unwrap() - w).abs() < 1e-12);
        assert!((m["share"].as_f64().unwrap() - w).abs() < 0.01, "{m}");
        total += m["rows"].as_u64().unwrap();
    }
    assert_eq!(total, 400);
    let metrics = crate::common::read_jsonl(&root.join("long/metrics.jsonl"));
    let steps: Vec<&serde_json::Value> = metrics
        .iter()
        .filter(|m| m.get("mix_rows").is_some())
        .collect();
    assert_eq!(steps.len(), 100);
    let last: Vec<u64> = steps[99]["mix_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let reported: Vec<u64> = mix.iter().map(|m| m["rows"].as_u64().unwrap()).collect();
    assert_eq!(last, reported);

    // Resume: 10 steps straight against stopped after 5 and resumed (same schedule).
    let opts = |resume, stop_after| quern_train::TrainOptions {
        resume,
        stop_after,
        ..Default::default()
    };
    let straight = quern_train::TrainConfig::load(&toml(root, "straight", MIX, 10)).unwrap();
    let want = quern_train::train_with(&straight, &opts(false, None)).unwrap();
    let cut = quern_train::TrainConfig::load(&toml(root, "cut", MIX, 10)).unwrap();
    quern_train::train_with(&cut, &opts(false, Some(5))).unwrap();
    let got = quern_train::train_with(&cut, &opts(true, None)).unwrap();
    assert_eq!(got.start_step, 5);
    let losses =
        |r: &quern_train::TrainReport| -> Vec<f64> { r.losses.iter().map(|l| l.loss).collect() };
    assert_eq!(losses(&got), losses(&want)[5..].to_vec());
    assert_eq!(got.mix, want.mix);
    let a = quern_models::store::load_weights(&root.join("straight")).unwrap();
    let b = quern_models::store::load_weights(&root.join("cut")).unwrap();
    for (k, t) in &a.tensors {
        assert!(t.equal(&b.tensors[k]), "{k} differs after resuming");
    }
}

/// Bad mixtures: a negative weight, all weights zero, a split that does not exist, a split
/// tokenized differently, a mixture for a non-packed objective: each refused naming the key,
/// and no run starts.
#[test]
fn bad_mixtures_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    split(&root.join("a"), 10, 0);
    let rows: Vec<Vec<i32>> = (0..4).map(|_| vec![1; 9]).collect();
    quern_train::data::write_packed_split(
        &root.join("short"),
        &rows,
        64,
        [Some(60), None, None, None],
        "t",
    )
    .unwrap();
    let cases = [
        (
            "[[data.mix]]\nsplit = \"a\"\nweight = -1.0\n",
            "data.mix[0].weight",
        ),
        (
            "train_weight = 0.0\n[[data.mix]]\nsplit = \"a\"\nweight = 0.0\n",
            "data.mix",
        ),
        (
            "[[data.mix]]\nsplit = \"nowhere\"\nweight = 1.0\n",
            "data.mix[0].split",
        ),
        (
            "[[data.mix]]\nsplit = \"short\"\nweight = 1.0\n",
            "data.mix[0].split",
        ),
        ("[[data.mix]]\nsplit = \"a\"\nwieght = 1.0\n", "wieght"),
    ];
    for (i, (mix, key)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let e = run_err(
            quern()
                .args(["train", "--quiet"])
                .arg(toml(root, &name, mix, 2)),
        );
        assert!(e.contains(key), "{mix}: {e}");
        assert!(!root.join(&name).join("checkpoints").exists());
    }
    let p = toml(
        root,
        "sft",
        "[[data.mix]]\nsplit = \"a\"\nweight = 1.0\n",
        2,
    );
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("[train]\n", "[train]\nobjective = \"sft\"\n");
    std::fs::write(&p, text).unwrap();
    let e = run_err(quern().args(["train", "--quiet"]).arg(&p));
    assert!(e.contains("data.mix"), "{e}");
}
