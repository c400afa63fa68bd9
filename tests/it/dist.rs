//! Data-parallel `quern train` (issue 17): ranks of the built binary on loopback, with the
//! variables torchrun sets, over c10d's Gloo process group. Two ranks reach the weights of
//! one process with the same global batch; a 2-rank run killed mid-way resumes to the
//! uninterrupted run's weights exactly (and refuses another world size); a rank that never
//! joins gets an error naming it and the store; `torchrun --no-python quern train` works.
//!
//! Every run is a tiny `sft` model (variable-length rows, so the ranks' shares hold
//! different numbers of target tokens and only a loss normalised by the global count gives
//! one process's gradient).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::{assert_success, python, quern, read_jsonl};

/// A free loopback port (a race with another process taking it in between is possible but
/// harmless: that test then fails to serve the store and says so).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `rows` sft conversations of 3 to 15 ids with responses of varying length, and a
/// run.toml training a tiny decoder on them into `out`.
fn setup(root: &Path, rows: usize, micro: usize, accum: usize, steps: u64, extra: &str) -> PathBuf {
    let data: Vec<(Vec<i32>, Vec<i8>)> = (0..rows)
        .map(|r| {
            let len = 3 + (r * 7) % 13;
            let ids: Vec<i32> = (0..len)
                .map(|i| 4 + ((r * 5 + i * 3) % 36) as i32)
                .collect();
            let prompt = 1 + r % (len - 1);
            let mask: Vec<i8> = (0..len).map(|i| i8::from(i >= prompt)).collect();
            (ids, mask)
        })
        .collect();
    let split = root.join("sft");
    if !split.exists() {
        quern_train::data::write_sft_split(
            &split,
            &data,
            16,
            40,
            [Some(0), Some(1), Some(2), None],
            "t",
        )
        .unwrap();
    }
    let toml = format!(
        "out_dir = \"out\"\n[data]\ntrain = \"sft\"\n\
         [model]\nlayers = 1\nheads = 2\ndim = 16\ndropout = 0.0\n\
         [optim]\nlr = 1e-2\nwarmup_steps = 0\n\
         [train]\nobjective = \"sft\"\ndevice = \"cpu\"\nmicro_batch = {micro}\ngrad_accum = {accum}\n\
         max_steps = {steps}\neval_every = 0\n\
         [dist]\ntimeout_s = 20\n{extra}"
    );
    let path = root.join("run.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// `quern train` as rank `rank` of `world` at `127.0.0.1:port`.
fn rank_cmd(cfg: &Path, rank: usize, world: usize, port: u16, args: &[&str]) -> Command {
    let mut c = quern();
    c.arg("train")
        .arg("--quiet")
        .args(args)
        .arg(cfg)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `world` ranks together and returns their outputs, in rank order.
fn run_ranks(cfg: &Path, world: usize, args: &[&str], env: &[(&str, &str)]) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..world)
        .map(|r| {
            let mut c = rank_cmd(cfg, r, world, port, args);
            for (k, v) in env {
                c.env(k, v);
            }
            c.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// `quern train` of `cfg` in one process (no torchrun variables), one libtorch thread.
fn train_alone(cfg: &Path) -> Output {
    quern()
        .args(["train", "--quiet"])
        .arg(cfg)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn assert_all_ok(outs: &[Output]) {
    for (r, o) in outs.iter().enumerate() {
        assert_success(&format!("rank {r}"), o);
    }
}

/// The weights of the newest checkpoint of the run in `root/out`.
fn final_weights(root: &Path) -> Vec<(String, tch::Tensor)> {
    let ck = root.join("out/checkpoints");
    let mut steps: Vec<PathBuf> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    steps.sort();
    let mut w =
        tch::Tensor::read_safetensors(steps.last().unwrap().join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// The largest difference between two sets of weights, relative to the largest weight.
fn max_rel_diff(a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f64;
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        let scale = ta.abs().max().double_value(&[]).max(1e-6);
        worst = worst.max((ta - tb).abs().max().double_value(&[]) / scale);
    }
    worst
}

fn train_losses(root: &Path) -> Vec<f64> {
    read_jsonl(&root.join("out/metrics.jsonl"))
        .iter()
        .filter(|l| l["kind"] == "train")
        .map(|l| l["loss"].as_f64().unwrap())
        .collect()
}

/// Two ranks of micro-batch 2 x accumulation 2 see the 8 rows one process sees with
/// micro-batch 4 x accumulation 2 (every step is a whole epoch, so each side sums the same
/// rows' gradients). After 6 AdamW steps their weights agree to 1e-4 of the largest weight
/// (float32 sums in another order, amplified a little by Adam's normalisation); a loss
/// normalised per rank, or ranks reading the same rows, are off by far more.
#[test]
fn two_gloo_ranks_reach_the_weights_of_one_process_with_the_same_global_batch() {
    let one = tempfile::tempdir().unwrap();
    let cfg = setup(one.path(), 8, 4, 2, 6, "");
    assert_all_ok(&[train_alone(&cfg)]);

    let two = tempfile::tempdir().unwrap();
    let cfg = setup(two.path(), 8, 2, 2, 6, "");
    let outs = run_ranks(&cfg, 2, &[], &[]);
    assert_all_ok(&outs);
    // Rank 0 alone reports, logs and checkpoints.
    assert!(String::from_utf8_lossy(&outs[0].stdout).contains("trained"));
    assert!(
        outs[1].stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&outs[1].stdout)
    );
    let (l1, l2) = (train_losses(one.path()), train_losses(two.path()));
    assert_eq!(l2.len(), 6, "one metrics line per step");
    for (a, b) in l1.iter().zip(&l2) {
        assert!(
            (a - b).abs() < 1e-4 * a.abs().max(1.0),
            "losses {l1:?} vs {l2:?}"
        );
    }
    let (w1, w2) = (final_weights(one.path()), final_weights(two.path()));
    let d = max_rel_diff(&w1, &w2);
    eprintln!("2 ranks vs 1 process: relative weight difference {d:e}");
    assert!(
        d < 1e-4,
        "2 ranks vs 1 process: relative weight difference {d}"
    );
    // The tolerance tells batches apart: one process on half the global batch (what a rank
    // alone would train on) ends far from both.
    let half = tempfile::tempdir().unwrap();
    let cfg = setup(half.path(), 8, 2, 2, 6, "");
    assert_all_ok(&[train_alone(&cfg)]);
    let off = max_rel_diff(&final_weights(half.path()), &w2);
    eprintln!("half the batch on 1 process vs 2 ranks: relative weight difference {off:e}");
    assert!(off > 100.0 * d.max(1e-6), "{off} vs {d}");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(two.path().join("out/checkpoints/step-00000006/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["world_size"], 2);
    assert_eq!(state["cursors"].as_array().unwrap().len(), 2);
}

/// 25 rows between 2 ranks: rank 0 gets 12, rank 1 gets 13, so their data cursors part
/// ways after the first epoch. Killed after step 8 (checkpointed at 7), resumed, the run
/// ends with the uninterrupted run's weights and losses, bit for bit. Resuming it with
/// another number of ranks is refused, naming both.
#[test]
fn an_interrupted_two_rank_run_resumes_exactly() {
    let extra = "[checkpoint]\nevery = 7\n";
    let full = tempfile::tempdir().unwrap();
    let cfg = setup(full.path(), 25, 2, 1, 10, extra);
    assert_all_ok(&run_ranks(&cfg, 2, &[], &[]));

    let cut = tempfile::tempdir().unwrap();
    let cfg = setup(cut.path(), 25, 2, 1, 10, extra);
    let killed = run_ranks(&cfg, 2, &[], &[("QUERN_TEST_FAULT", "train_abort_after:8")]);
    assert!(killed.iter().all(|o| !o.status.success()));
    let ck = cut.path().join("out/checkpoints");
    let names: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["step-00000007"]);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("step-00000007/state.json")).unwrap())
            .unwrap();
    let cursors = state["cursors"].as_array().unwrap();
    assert_eq!(cursors.len(), 2);
    assert_ne!(
        cursors[0], cursors[1],
        "the ranks' cursors should differ here: {cursors:?}"
    );

    let err = quern()
        .args(["train", "--quiet", "--resume"])
        .arg(&cfg)
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success() && msg.contains("WORLD_SIZE 2") && msg.contains("WORLD_SIZE 1"),
        "{msg}"
    );

    assert_all_ok(&run_ranks(&cfg, 2, &["--resume"], &[]));
    assert_eq!(train_losses(cut.path()), train_losses(full.path()));
    let (a, b) = (final_weights(full.path()), final_weights(cut.path()));
    assert_eq!(max_rel_diff(&a, &b), 0.0);
}

/// Rank 0 alone: it serves the store, waits `dist.timeout_s` and names rank 1 and the store.
/// Rank 1 alone: nobody serves the store, and it says so.
#[test]
fn a_rank_that_never_joins_is_named_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 8, 2, 1, 2, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("timeout_s = 20", "timeout_s = 2");
    std::fs::write(&cfg, text).unwrap();
    let port = free_port();
    let out = rank_cmd(&cfg, 0, 2, port, &[]).output().unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let store = format!("127.0.0.1:{port}");
    assert!(
        msg.contains("timed out")
            && msg.contains("waiting for rank 1 of WORLD_SIZE 2")
            && msg.contains(&store),
        "{msg}"
    );
    let port = free_port();
    let out = rank_cmd(&cfg, 1, 2, port, &[]).output().unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && msg.contains("rank 1 could not reach the store")
            && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(!dir.path().join("out/metrics.jsonl").exists());
}

/// `torchrun --no-python --nproc-per-node 2 quern train run.toml`: torchrun's agent serves
/// the store and both ranks join it; the run equals the one the test harness's ranks make.
#[test]
fn torchrun_no_python_runs_two_ranks() {
    let torchrun = python().with_file_name("torchrun");
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 8, 2, 2, 3, "");
    let out = Command::new(&torchrun)
        .args([
            "--no-python",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
        ])
        .arg(format!("--master-port={}", free_port()))
        .arg(env!("CARGO_BIN_EXE_quern"))
        .args(["train", "--quiet"])
        .arg(&cfg)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", torchrun.display()));
    assert_all_ok(&[out]);
    let ours = tempfile::tempdir().unwrap();
    let cfg = setup(ours.path(), 8, 2, 2, 3, "");
    assert_all_ok(&run_ranks(&cfg, 2, &[], &[]));
    assert_eq!(train_losses(dir.path()), train_losses(ours.path()));
    assert_eq!(
        max_rel_diff(&final_weights(dir.path()), &final_weights(ours.path())),
        0.0
    );
}
