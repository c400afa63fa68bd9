//! End-to-end checks of the trainer on real text (the GPL-3.0 licence, byte-level tokens):
//! the loss falls, gradient accumulation equals one large batch, resume is exact, the
//! mixed-precision paths run on CPU, non-finite steps are skipped and stop the run, and the
//! loss and gradients match a plain PyTorch model given the same weights and batch.

use std::path::{Path, PathBuf};

use quern_train::config::{Mlp, ModelConfig, Norm, Positions, Precision, TrainConfig};
use quern_train::data::{write_byte_split, ShardRows};
use quern_train::model::Transformer;
use quern_train::objective::{Clm, Objective, Prepared, IGNORE};
use quern_train::trainer::{TrainOptions, Trainer};
use quern_train::{train, train_with};
use tch::{Device, Kind, Tensor};

const SEQ: usize = 32;

/// libtorch's default random generator is process-global and the trainer reseeds it every
/// step, so tests that run in parallel threads would draw from each other's streams. Each
/// test holds this lock for its whole run.
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn torch_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}
/// The byte-level splits' vocabulary: 256 bytes, pad, bos, eos, mask (`write_byte_split`).
const VOCAB: usize = 260;

fn corpus() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/train/gpl-3.0.txt");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Train (90%) and val (10%) splits of the corpus under `root`.
fn splits(root: &Path) -> (PathBuf, PathBuf) {
    let text = corpus();
    let cut = text.len() * 9 / 10;
    let (train, val) = (root.join("tokens/train"), root.join("tokens/val"));
    write_byte_split(&train, &text[..cut], SEQ, true).unwrap();
    write_byte_split(&val, &text[cut..], SEQ, true).unwrap();
    (train, val)
}

fn tiny_config(root: &Path, train: &Path, val: &Path) -> TrainConfig {
    let text = format!(
        r#"
out_dir = "{out}"
[data]
train = "{train}"
val = "{val}"
[model]
layers = 2
heads = 4
dim = 64
[optim]
lr = 3e-3
warmup_steps = 5
[train]
micro_batch = 8
max_steps = 60
eval_every = 30
eval_batches = 4
[checkpoint]
every = 30
keep = 2
"#,
        out = root.join("run").display(),
        train = train.display(),
        val = val.display()
    );
    TrainConfig::from_toml(&text).unwrap()
}

#[test]
fn loss_falls_on_real_text_and_the_run_leaves_its_records() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, val_dir) = splits(dir.path());
    let cfg = tiny_config(dir.path(), &train_dir, &val_dir);
    let report = train(&cfg, false).unwrap();
    assert_eq!(report.steps, 60);
    let (first, last) = report.loss_drop(5).unwrap();
    // Uniform over 260 ids is ln(260) = 5.56; byte-level English drops well below that.
    assert!(first > 4.5, "first loss {first}");
    assert!(last < first - 1.5, "loss went from {first} to {last}");
    assert_eq!(report.evals.len(), 2, "{:?}", report.evals);
    assert!(report.evals[1].val_loss < report.evals[0].val_loss + 0.05);
    assert!((report.evals[1].val_ppl - report.evals[1].val_loss.exp()).abs() < 1e-9);
    let metrics = std::fs::read_to_string(cfg.out_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.contains("\"kind\":\"train\""))
            .count(),
        60
    );
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.contains("\"kind\":\"eval\""))
            .count(),
        2
    );
    let cks = quern_train::checkpoint::list(&cfg.out_dir).unwrap();
    assert_eq!(cks.iter().map(|c| c.0).collect::<Vec<_>>(), vec![30, 60]);
    assert!(cfg.out_dir.join("report.json").exists());
}

/// clm that ignores targets that are spaces, so micro-batches hold different numbers of
/// targets (the case where per-micro-batch averaging goes wrong).
struct NoSpaces;

impl Objective for NoSpaces {
    fn name(&self) -> &'static str {
        "clm-no-spaces"
    }
    fn causal(&self) -> bool {
        true
    }
    fn prepare(&self, rows: &Tensor) -> Prepared {
        let p = Clm.prepare(rows);
        let keep = p.targets.ne(b' ' as i64);
        let targets = p
            .targets
            .where_self(&keep, &Tensor::full_like(&p.targets, IGNORE));
        let count = keep.sum(Kind::Int64).int64_value(&[]);
        Prepared {
            input: p.input,
            targets,
            count,
            mask: None,
            segments: None,
            nsp: None,
        }
    }
}

fn trainer_on(rows: &Path, objective: Box<dyn Objective>, cfg: &TrainConfig) -> Trainer {
    let (data, meta) = ShardRows::open(rows, 0, 0, 1).unwrap();
    let model = quern_train::trainer::resolve_model(&cfg.model, &meta).unwrap();
    Trainer::new(cfg, &model, objective, Box::new(data), None, Device::Cpu).unwrap()
}

fn grads(t: &Trainer) -> Vec<Tensor> {
    t.model
        .params()
        .params
        .iter()
        .map(|p| p.tensor.grad().copy())
        .collect()
}

#[test]
fn accumulating_micro_batches_equals_one_large_batch() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, val_dir) = splits(dir.path());
    let cfg = tiny_config(dir.path(), &train_dir, &val_dir);
    let mut t = trainer_on(&train_dir, Box::new(NoSpaces), &cfg);
    let rows = t.train_data.next_rows(16).unwrap();
    let (big_loss, big_count) = t.accumulate(&[rows.shallow_clone()], 1.0).unwrap();
    let big = grads(&t);
    let parts = [
        rows.narrow(0, 0, 5),
        rows.narrow(0, 5, 4),
        rows.narrow(0, 9, 7),
    ];
    let (acc_loss, acc_count) = t.accumulate(&parts, 1.0).unwrap();
    let acc = grads(&t);
    assert_eq!(big_count, acc_count);
    assert!(
        (big_loss - acc_loss).abs() < 1e-5,
        "{big_loss} vs {acc_loss}"
    );
    // Counts per micro-batch differ, so averaging each micro-batch would not match.
    let counts: Vec<i64> = parts.iter().map(|p| NoSpaces.prepare(p).count).collect();
    assert!(
        counts[0] * 4 != counts[1] * 5 || counts[2] * 5 != counts[0] * 7,
        "{counts:?}"
    );
    for ((a, b), p) in big.iter().zip(&acc).zip(&t.model.params().params) {
        let scale = a.abs().max().double_value(&[]).max(1e-6);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(
            diff / scale < 1e-4,
            "{}: relative gradient difference {}",
            p.name,
            diff / scale
        );
    }
}

fn resume_config(root: &Path, train: &Path, val: &Path, out: &str) -> TrainConfig {
    let mut cfg = tiny_config(root, train, val);
    cfg.out_dir = root.join(out);
    cfg.model.dropout = 0.1;
    cfg.train.max_steps = 8;
    cfg.train.eval_every = 3;
    cfg.train.objective = "mlm".into();
    cfg.checkpoint.every = 2;
    cfg.checkpoint.keep = 2;
    cfg
}

#[test]
fn an_interrupted_and_resumed_run_repeats_every_loss() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, val_dir) = splits(dir.path());
    let whole = train(&resume_config(dir.path(), &train_dir, &val_dir, "a"), false).unwrap();
    let cfg = resume_config(dir.path(), &train_dir, &val_dir, "b");
    let first = train_with(
        &cfg,
        &TrainOptions {
            stop_after: Some(5),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(first.steps, 5);
    let second = train_with(
        &cfg,
        &TrainOptions {
            resume: true,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        second.start_step, 4,
        "resumes from the last checkpoint, step 4"
    );
    let mut combined: Vec<(u64, f64)> = first
        .losses
        .iter()
        .take(4)
        .map(|l| (l.step, l.loss))
        .collect();
    combined.extend(second.losses.iter().map(|l| (l.step, l.loss)));
    let want: Vec<(u64, f64)> = whole.losses.iter().map(|l| (l.step, l.loss)).collect();
    assert_eq!(
        combined, want,
        "resumed losses differ from the uninterrupted run"
    );
    // Step 5 was computed twice (before the interruption and after resume) with the same loss.
    assert_eq!(first.losses[4].loss, whole.losses[4].loss);
    let last = |r: &quern_train::TrainReport| r.evals.last().map(|e| e.val_loss);
    assert_eq!(last(&second), last(&whole));
    let metrics = std::fs::read_to_string(cfg.out_dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .filter(|l| l.contains("\"kind\":\"train\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        steps,
        (1..=8).collect::<Vec<_>>(),
        "metrics log repeats or misses steps"
    );
}

/// A `dpo` run without `init.from` takes its reference from the seeded initialisation; an
/// interrupted run resumed from its checkpoint rebuilds that reference (not the checkpoint's
/// trained weights), so its losses are the uninterrupted run's, step for step.
#[test]
fn an_interrupted_dpo_run_resumes_against_the_same_reference() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Prompts of bytes, chosen completions in one band, rejected in another, eos 258.
    let rows: Vec<(Vec<i32>, Vec<i32>, Vec<i32>)> = (0..24i32)
        .map(|i| {
            (
                vec![10 + i % 7, 20 + i % 5, 30 + i % 3],
                vec![100 + i % 9, 110 + i % 4, 258],
                vec![200 + i % 6, 258],
            )
        })
        .collect();
    let (train_dir, val_dir) = (root.join("p/train"), root.join("p/val"));
    for d in [&train_dir, &val_dir] {
        quern_train::data::write_pref_split(
            d,
            quern_tokenize::Objective::Dpo,
            &rows,
            SEQ,
            VOCAB,
            [None, Some(257), Some(258), None],
            "bytes",
        )
        .unwrap();
    }
    let config = |out: &str| {
        let mut cfg = tiny_config(root, &train_dir, &val_dir);
        cfg.out_dir = root.join(out);
        cfg.train.objective = "dpo".into();
        cfg.train.micro_batch = 4;
        cfg.train.max_steps = 6;
        cfg.train.eval_every = 0;
        cfg.checkpoint.every = 2;
        cfg
    };
    let whole = train(&config("a"), false).unwrap();
    assert!((whole.losses[0].loss - std::f64::consts::LN_2).abs() < 1e-6);
    let cfg = config("b");
    let first = train_with(
        &cfg,
        &TrainOptions {
            stop_after: Some(5),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(first.steps, 5);
    let second = train_with(
        &cfg,
        &TrainOptions {
            resume: true,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(second.start_step, 4);
    let losses =
        |r: &quern_train::TrainReport| -> Vec<f64> { r.losses.iter().map(|l| l.loss).collect() };
    let mut combined = losses(&first)[..4].to_vec();
    combined.extend(losses(&second));
    assert_eq!(combined, losses(&whole));
    // Step 5 after resume is not ln 2: the policy moved away from the reference.
    assert!((whole.losses[4].loss - std::f64::consts::LN_2).abs() > 1e-3);
}

#[test]
fn bf16_and_fp16_train_on_cpu() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, val_dir) = splits(dir.path());
    for precision in [Precision::Bf16, Precision::Fp16] {
        let mut cfg = tiny_config(dir.path(), &train_dir, &val_dir);
        cfg.out_dir = dir.path().join(format!("{precision:?}"));
        cfg.train.precision = precision;
        cfg.train.max_steps = 20;
        cfg.train.loss_scale = 1024.0;
        let r = train(&cfg, false).unwrap();
        let (first, last) = r.loss_drop(3).unwrap();
        assert!(
            last < first - 0.5,
            "{precision:?}: loss went from {first} to {last}"
        );
        assert_eq!(r.skipped_steps, 0, "{precision:?}");
    }
}

/// An objective whose loss is NaN: every step must be skipped, then the run stops.
struct Poisoned;

impl Objective for Poisoned {
    fn name(&self) -> &'static str {
        "poisoned"
    }
    fn causal(&self) -> bool {
        true
    }
    fn prepare(&self, rows: &Tensor) -> Prepared {
        Clm.prepare(rows)
    }
    fn loss_sum(&self, model: &Transformer, batch: &Prepared, train: bool) -> Tensor {
        Clm.loss_sum(model, batch, train) * f64::NAN
    }
}

#[test]
fn non_finite_steps_are_skipped_then_stop_the_run() {
    let _torch = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, val_dir) = splits(dir.path());
    let mut cfg = tiny_config(dir.path(), &train_dir, &val_dir);
    cfg.train.max_consecutive_skips = 3;
    let mut t = trainer_on(&train_dir, Box::new(Poisoned), &cfg);
    let before = t.model.params().get("tok_emb.weight").unwrap().copy();
    for _ in 0..2 {
        let log = t.train_step().unwrap();
        assert!(log.skipped);
    }
    let after = t.model.params().get("tok_emb.weight").unwrap();
    assert!(
        bool::try_from(before.eq_tensor(after).all()).unwrap(),
        "a skipped step changed the weights"
    );
    let err = t.train_step().unwrap_err().to_string();
    assert!(
        err.contains("3 steps in a row") && err.contains("non-finite"),
        "{err}"
    );
}

fn reference_case(name: &str, model: ModelConfig, causal: bool) {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(11);
    let m = Transformer::new(&model, Device::Cpu);
    let weights: Vec<(String, Tensor)> = m
        .params()
        .params
        .iter()
        .map(|p| (p.name.clone(), p.tensor.detach()))
        .collect();
    let wpath = dir.path().join("w.safetensors");
    Tensor::write_safetensors(&weights, &wpath).unwrap();
    let text = corpus();
    let ids: Vec<i64> = text[1000..1000 + 4 * (SEQ + 1)]
        .iter()
        .map(|&b| b as i64)
        .collect();
    let rows = Tensor::from_slice(&ids).view([4, SEQ as i64 + 1]);
    let mut p = Clm.prepare(&rows);
    // Ignore some targets, so the reference's ignore_index path is exercised too.
    p.targets = p.targets.where_self(
        &p.targets.ne(b'e' as i64),
        &Tensor::full_like(&p.targets, IGNORE),
    );
    p.count = p.targets.ne(IGNORE).sum(Kind::Int64).int64_value(&[]);
    let bpath = dir.path().join("b.safetensors");
    let (input, targets) = (p.input.contiguous(), p.targets.contiguous());
    Tensor::write_safetensors(&[("input", &input), ("targets", &targets)], &bpath).unwrap();
    let loss = m
        .forward(&p.input, causal, false)
        .view([-1, model.vocab_size.unwrap() as i64])
        .cross_entropy_loss(
            &p.targets.reshape([-1]),
            None::<Tensor>,
            tch::Reduction::Mean,
            IGNORE,
            0.0,
        );
    loss.backward();
    let mut shape = serde_json::to_value(&model).unwrap();
    shape["hidden"] = model.hidden().into();
    shape["causal"] = causal.into();
    let cpath = dir.path().join("c.json");
    std::fs::write(&cpath, shape.to_string()).unwrap();
    let gpath = dir.path().join("g.safetensors");
    let python = std::env::var("QUERN_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference_gpt.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([&cpath, &wpath, &bpath, &gpath])
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e} (source scripts/env.sh)"));
    assert!(
        out.status.success(),
        "{name}: reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ref_loss = got["loss"].as_f64().unwrap();
    let ours = loss.double_value(&[]);
    assert!(
        (ours - ref_loss).abs() < 1e-5 * ref_loss.abs().max(1.0),
        "{name}: loss {ours} vs PyTorch {ref_loss}"
    );
    let ref_grads: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&gpath)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ref_grads.len(), weights.len());
    for prm in &m.params().params {
        let g = prm.tensor.grad();
        let r = &ref_grads[&prm.name];
        let scale = r.abs().max().double_value(&[]).max(1e-8);
        let diff = (&g - r).abs().max().double_value(&[]);
        assert!(
            diff / scale < 1e-4,
            "{name}: {} gradient differs by {diff} (scale {scale})",
            prm.name
        );
    }
}

#[test]
fn loss_and_gradients_match_plain_pytorch() {
    let _torch = torch_lock();
    let base = ModelConfig {
        layers: 2,
        heads: 4,
        dim: 32,
        seq_len: Some(SEQ),
        vocab_size: Some(VOCAB),
        ..ModelConfig::default()
    };
    reference_case("gpt2-like decoder", base.clone(), true);
    reference_case(
        "llama-like decoder",
        ModelConfig {
            positions: Positions::Rotary,
            norm: Norm::RmsNorm,
            mlp: Mlp::SwiGlu,
            tie_embeddings: false,
            ..base.clone()
        },
        true,
    );
    reference_case(
        "encoder with biases",
        ModelConfig { bias: true, ..base },
        false,
    );
}

/// A step larger than the split, and a micro-batch far beyond memory (issue 19's 200,000 rows
/// of 33 ids, with a 50k vocabulary), are refused before anything is allocated, naming the
/// key; the second gives its estimate and a micro-batch that fits.
#[test]
fn impossible_batches_are_refused_before_the_first_step() {
    let _g = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, val) = splits(dir.path());
    let mut cfg = tiny_config(dir.path(), &train_dir, &val);
    let rows = ShardRows::open(&train_dir, 0, 0, 1).unwrap().1.rows as usize;
    cfg.train.micro_batch = rows / 2 + 1;
    cfg.train.grad_accum = 2;
    let err = train(&cfg, false).unwrap_err().to_string();
    assert!(
        err.contains("train.grad_accum") && err.contains(&format!("holds only {rows}")),
        "{err}"
    );
    assert!(
        !cfg.out_dir.join("metrics.jsonl").exists(),
        "nothing written"
    );

    // A shape whose one micro-batch needs terabytes (64 layers of width 8192: 51B
    // parameters, 800 GB of weights and AdamW state alone) is refused from its shape,
    // before any weight is allocated.
    let mut cfg = tiny_config(dir.path(), &train_dir, &val);
    cfg.model.layers = 64;
    cfg.model.dim = 8192;
    cfg.model.heads = 64;
    cfg.model.vocab_size = Some(50_304);
    cfg.train.micro_batch = rows;
    let err = train(&cfg, false).unwrap_err().to_string();
    assert!(
        err.contains("train.micro_batch") && err.contains("needs about") && err.contains("TB"),
        "{err}"
    );
    assert!(err.contains("even one row does not fit"), "{err}");
}

/// Model selection: `best/` holds the weights of the evaluation with the lowest validation
/// loss (equal to that step's checkpoint), and early stopping ends the run after
/// `train.early_stop_patience` evaluations without an improvement, also across a resume.
#[test]
fn the_best_checkpoint_is_kept_and_early_stopping_stops() {
    let _g = torch_lock();
    let dir = tempfile::tempdir().unwrap();
    let (train_dir, val) = splits(dir.path());

    // Every 10 steps an evaluation and a checkpoint, all kept: best/ must equal the
    // checkpoint of the step with the lowest validation loss.
    let mut cfg = tiny_config(dir.path(), &train_dir, &val);
    cfg.out_dir = dir.path().join("sel");
    cfg.train.max_steps = 40;
    cfg.train.eval_every = 10;
    cfg.checkpoint.every = 10;
    cfg.checkpoint.keep = 10;
    let r = train(&cfg, false).unwrap();
    assert_eq!(r.evals.len(), 4);
    let lowest = r
        .evals
        .iter()
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
        .unwrap();
    let best = r.best.unwrap();
    assert_eq!((best.step, best.val_loss), (lowest.step, lowest.val_loss));
    let best_dir = r.best_dir.clone().unwrap();
    assert_eq!(best_dir, cfg.out_dir.join("best"));
    let load = |p: &Path| {
        let mut t = Tensor::read_safetensors(p).unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    let a = load(&best_dir.join("model.safetensors"));
    let b = load(&cfg.out_dir.join(format!(
        "checkpoints/step-{:08}/model.safetensors",
        best.step
    )));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            ta.equal(tb),
            "{na} differs from the step-{} checkpoint",
            best.step
        );
    }
    assert!(!best_dir.join("optimizer.safetensors").exists());
    // It loads as a model wherever one is taken (generate, eval, init.from).
    let loaded = quern_models::store::load(&best_dir, Device::Cpu).unwrap();
    assert_eq!(loaded.model.params().numel(), r.parameters);
    assert!(!r.stopped_early);

    // A min_delta no evaluation can beat: the first evaluation is the best, the next two
    // do not improve, and patience 2 stops the run at step 15 instead of 60.
    let mut cfg = tiny_config(dir.path(), &train_dir, &val);
    cfg.out_dir = dir.path().join("early");
    cfg.train.eval_every = 5;
    cfg.train.early_stop_patience = 2;
    cfg.train.early_stop_min_delta = 100.0;
    let r = train(&cfg, false).unwrap();
    assert!(r.stopped_early);
    assert_eq!(r.steps, 15);
    assert_eq!(
        r.evals.iter().map(|e| e.step).collect::<Vec<_>>(),
        [5, 10, 15]
    );
    assert_eq!(r.best.unwrap().step, 5);

    // Interrupted at step 10 and resumed, the run stops at the same step: the count of
    // evaluations without improvement is in the checkpoint.
    let mut cfg = tiny_config(dir.path(), &train_dir, &val);
    cfg.out_dir = dir.path().join("early-resumed");
    cfg.train.eval_every = 5;
    cfg.train.early_stop_patience = 2;
    cfg.train.early_stop_min_delta = 100.0;
    cfg.checkpoint.every = 10;
    let stopped = train_with(
        &cfg,
        &TrainOptions {
            stop_after: Some(10),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(stopped.steps, 10);
    let r = train_with(
        &cfg,
        &TrainOptions {
            resume: true,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert!(r.stopped_early);
    assert_eq!(r.steps, 15);
    assert_eq!(r.best.unwrap().step, 5);

    // Early stopping without a validation split is refused, naming the key.
    let mut cfg = tiny_config(dir.path(), &train_dir, &val);
    cfg.data.val = None;
    cfg.train.early_stop_patience = 3;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("train.early_stop_patience"), "{err}");
}
