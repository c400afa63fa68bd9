//! Preference objectives end to end (`rm`, `dpo`): `quern train` on `rm`/`dpo` splits of a
//! toy preference set (chosen completions drawn from one band of ids, rejected ones from
//! another, every completion ending in eos, pad == eos), each run a process of its own.
//!
//! - rm: the loss falls and held-out pairs are ranked; the run's validation loss and reward
//!   metrics equal a plain PyTorch computation (`tests/peers/pref_loss.py`) on the weights
//!   `quern export` writes from the checkpoint (so the reward head survives it), each
//!   sequence run alone and unpadded there; the same after LoRA on it and `quern merge`.
//! - dpo: the first loss is ln 2, 1/(4β²) and 1 for sigmoid, ipo and hinge, and its
//!   gradients on a tiny transformers Llama are plain PyTorch's; the loss falls;
//!   a run against another reference (`dpo.reference`) has the validation loss and implicit
//!   rewards the peer computes from the two exported models.
//! - Both: micro-batches of 2 accumulated 4 times give the losses of one batch of 8.
//! - Bad input: rm on cls shards, an unknown loss variant, an empty completion and a
//!   reference with another vocabulary or a shorter context are refused naming the file,
//!   key or row.

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::common::{quern, read_jsonl, run_err, run_ok, run_peer};

type Pair = (Vec<i32>, Vec<i32>, Vec<i32>);

const EOS: i32 = 2;
const SPECIAL: [Option<u32>; 4] = [Some(2), Some(1), Some(2), None];

/// `n` toy pairs from `seed`: a prompt of 2 to 5 ids in 10..40; the chosen completion 1 to
/// 4 ids in 40..50, the rejected one 1 to 4 ids in 50..60, each then eos.
fn pairs(n: usize, seed: u64) -> Vec<Pair> {
    let mut s = seed;
    let mut next = |m: u64| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) % m) as i32
    };
    (0..n)
        .map(|_| {
            let prompt: Vec<i32> = (0..2 + next(4)).map(|_| 10 + next(30)).collect();
            let mut c: Vec<i32> = (0..1 + next(4)).map(|_| 40 + next(10)).collect();
            let mut r: Vec<i32> = (0..1 + next(4)).map(|_| 50 + next(10)).collect();
            c.push(EOS);
            r.push(EOS);
            (prompt, c, r)
        })
        .collect()
}

/// Train and val splits of the toy set for `objective` under `root/tokens`; returns the
/// val pairs.
fn splits(root: &Path, objective: &str) -> Vec<Pair> {
    let obj = match objective {
        "rm" => quern_tokenize::Objective::Rm,
        _ => quern_tokenize::Objective::Dpo,
    };
    let val = pairs(12, 2);
    for (dir, rows) in [("train", pairs(48, 1)), ("val", val.clone())] {
        quern_train::data::write_pref_split(
            &root.join("tokens").join(dir),
            obj,
            &rows,
            16,
            64,
            SPECIAL,
            "toy",
        )
        .unwrap();
    }
    val
}

const TINY: &str = "[model]\nlayers = 2\nheads = 2\ndim = 32\npositions = \"rotary\"\n\
                    norm = \"rmsnorm\"\nmlp = \"swiglu\"\n\
                    [optim]\nlr = 3e-3\ndecay = \"constant\"\nwarmup_steps = 0\n";

fn run_toml(root: &Path, name: &str, body: &str) -> PathBuf {
    let text = format!(
        "out_dir = \"{name}\"\n[data]\ntrain = \"tokens/train\"\nval = \"tokens/val\"\n\
         {body}\n[checkpoint]\nevery = 0\nkeep = 1\n"
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn train(root: &Path, name: &str, body: &str) -> serde_json::Value {
    run_ok(quern().arg("train").arg(run_toml(root, name, body)));
    serde_json::from_slice(&std::fs::read(root.join(name).join("report.json")).unwrap()).unwrap()
}

fn losses(r: &serde_json::Value) -> Vec<f64> {
    r["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["loss"].as_f64().unwrap())
        .collect()
}

fn first_last(l: &[f64], n: usize) -> (f64, f64) {
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    (mean(&l[..n]), mean(&l[l.len() - n..]))
}

fn export(root: &Path, run: &str) -> PathBuf {
    let out = root.join(format!("{run}-hf"));
    run_ok(
        quern()
            .arg("export")
            .arg(root.join(run))
            .args(["--format", "hf", "--out"])
            .arg(&out),
    );
    out
}

/// The peer's per-pair scores and loss.
fn peer(root: &Path, task: serde_json::Value) -> (Vec<f64>, Vec<f64>, f64) {
    let out = run_peer(root, "pref_loss.py", &task, "peer.safetensors");
    let t: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    let v = |k: &str| Vec::<f64>::try_from(&t[k]).unwrap();
    (v("chosen"), v("rejected"), t["loss"].double_value(&[]))
}

/// The run's last evaluation against the peer's loss and scores: the loss, and the pair
/// metrics computed here from the scores.
fn assert_eval_matches(eval: &serde_json::Value, chosen: &[f64], rejected: &[f64], loss: f64) {
    let n = chosen.len() as f64;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let all: Vec<f64> = chosen.iter().chain(rejected).copied().collect();
    let m = mean(&all);
    let std = (all.iter().map(|x| (x - m).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
    let right = chosen.iter().zip(rejected).filter(|(c, r)| c > r).count() as f64;
    let want = [
        ("val_loss", loss),
        ("pair_accuracy", right / n),
        ("margin", mean(chosen) - mean(rejected)),
        ("reward_chosen", mean(chosen)),
        ("reward_rejected", mean(rejected)),
        ("reward_mean", m),
        ("reward_std", std),
    ];
    let mut worst = 0f64;
    for (key, w) in want {
        let got = eval[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {eval}"));
        assert!(
            (got - w).abs() < 1e-4 * w.abs().max(1.0),
            "{key}: quern {got}, PyTorch {w}"
        );
        worst = worst.max((got - w).abs());
    }
    eprintln!("val loss {loss:.6} (PyTorch); quern's loss and pair metrics within {worst:.1e}");
}

fn as_json(pairs: &[Pair]) -> serde_json::Value {
    serde_json::json!(pairs
        .iter()
        .map(|(p, c, r)| serde_json::json!([p, c, r]))
        .collect::<Vec<_>>())
}

/// A reward model learns the toy preferences (the loss falls, held-out pairs are ranked),
/// logs its pair metrics per step, and its final validation loss (with reward centering)
/// and metrics equal the plain PyTorch computation on the exported checkpoint.
#[test]
fn a_reward_model_learns_and_matches_plain_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let val = splits(root, "rm");
    let r = train(
        root,
        "rm",
        &format!(
            "{TINY}[train]\nobjective = \"rm\"\nmicro_batch = 8\nmax_steps = 30\n\
             eval_every = 0\neval_batches = 2\n[rm]\ncenter_rewards_coefficient = 0.01\n"
        ),
    );
    assert_eq!(r["model"]["head"]["num_labels"], 1);
    assert_eq!(r["model"]["head"]["pooling"], "last");
    let (first, last) = first_last(&losses(&r), 5);
    assert!(last < first - 0.2, "loss {first:.4} -> {last:.4}");
    let metrics = read_jsonl(&root.join("rm/metrics.jsonl"));
    let step = metrics.iter().find(|m| m["kind"] == "train").unwrap();
    for key in [
        "pair_accuracy",
        "margin",
        "reward_chosen",
        "reward_rejected",
        "reward_mean",
        "reward_std",
    ] {
        assert!(step[key].is_f64(), "{key}: {step}");
    }
    let eval = r["evals"].as_array().unwrap().last().unwrap().clone();
    assert!(eval["pair_accuracy"].as_f64().unwrap() >= 0.75, "{eval}");
    let hf = export(root, "rm");
    let (c, rej, loss) = peer(
        root,
        serde_json::json!({"kind": "rm", "model": hf, "pairs": as_json(&val), "center": 0.01}),
    );
    assert_eq!(c.len(), 12);
    assert_eval_matches(&eval, &c, &rej, loss);
    // LoRA on the reward model keeps its head (trainable beside the adapters), and `quern
    // merge` writes a model whose rewards are the run's.
    let r = train(
        root,
        "lora",
        "[init]\nfrom = \"rm\"\n[optim]\nlr = 1e-2\n[train]\nobjective = \"rm\"\n\
         micro_batch = 8\nmax_steps = 3\neval_every = 0\neval_batches = 2\n[lora]\nrank = 4\n",
    );
    let eval = r["evals"].as_array().unwrap().last().unwrap().clone();
    run_ok(
        quern()
            .args(["merge", "--adapter"])
            .arg(root.join("lora"))
            .arg("--out")
            .arg(root.join("merged")),
    );
    let hf = export(root, "merged");
    let (c, rej, loss) = peer(
        root,
        serde_json::json!({"kind": "rm", "model": hf, "pairs": as_json(&val), "center": 0.0}),
    );
    assert_eval_matches(&eval, &c, &rej, loss);
}

/// For rm and dpo, micro-batches of 2 pairs accumulated 4 times give the losses and pair
/// metrics of one batch of 8, step for step, though the sequences are padded to other
/// widths; the curves move, so they are not equal because nothing trained.
#[test]
fn accumulating_pairs_equals_one_big_batch() {
    for objective in ["rm", "dpo"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        splits(root, objective);
        let mut runs = Vec::new();
        for (name, mb, acc) in [("one", 8, 1), ("accum", 2, 4)] {
            runs.push(train(
                root,
                name,
                &format!(
                    "{TINY}[train]\nobjective = \"{objective}\"\nmicro_batch = {mb}\n\
                     grad_accum = {acc}\nmax_steps = 4\neval_every = 0\n"
                ),
            ));
        }
        let (a, b) = (losses(&runs[0]), losses(&runs[1]));
        assert_eq!(a.len(), 4);
        for (s, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() < 1e-5,
                "{objective} step {}: {x} vs {y}",
                s + 1
            );
            for key in ["pair_accuracy", "margin", "reward_std"] {
                let (x, y) = (
                    runs[0]["losses"][s][key].as_f64().unwrap(),
                    runs[1]["losses"][s][key].as_f64().unwrap(),
                );
                assert!(
                    (x - y).abs() < 1e-5,
                    "{objective} step {} {key}: {x} vs {y}",
                    s + 1
                );
            }
        }
        assert!((a[0] - a[3]).abs() > 1e-3, "{objective}: {a:?}");
    }
}

/// DPO's first loss, with policy = reference, is ln 2 (sigmoid), 1/(4β²) (ipo) and 1
/// (hinge), with zero implicit rewards; a sigmoid run lowers the loss and ranks held-out
/// pairs; a run from it against an explicit reference (`dpo.reference`) has the validation
/// loss and implicit rewards that plain PyTorch computes from the two exported models.
#[test]
fn dpo_starts_at_its_formulas_learns_and_matches_plain_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let val = splits(root, "dpo");
    for (loss, beta, want) in [
        ("ipo", 0.5, 1.0 / (4.0 * 0.25)),
        ("hinge", 0.1, 1.0),
        ("sigmoid", 0.1, std::f64::consts::LN_2),
    ] {
        let steps = if loss == "sigmoid" { 30 } else { 1 };
        let r = train(
            root,
            loss,
            &format!(
                "{TINY}[train]\nobjective = \"dpo\"\nmicro_batch = 8\nmax_steps = {steps}\n\
                 eval_every = 0\neval_batches = 2\n[dpo]\nloss = \"{loss}\"\nbeta = {beta}\n"
            ),
        );
        let first = &r["losses"][0];
        let l = first["loss"].as_f64().unwrap();
        assert!(
            (l - want).abs() < 1e-6 * want,
            "{loss}: first loss {l}, want {want}"
        );
        for key in [
            "reward_chosen",
            "reward_rejected",
            "margin",
            "pair_accuracy",
        ] {
            assert_eq!(first[key].as_f64(), Some(0.0), "{loss} {key}: {first}");
        }
        if loss == "sigmoid" {
            let (a, b) = first_last(&losses(&r), 5);
            assert!(b < a - 0.1, "loss {a:.4} -> {b:.4}");
            let eval = r["evals"].as_array().unwrap().last().unwrap();
            assert!(eval["pair_accuracy"].as_f64().unwrap() >= 0.75, "{eval}");
            assert!(eval["margin"].as_f64().unwrap() > 0.0, "{eval}");
        }
    }
    // The trained sigmoid run as the reference of an ipo run started from the hinge run.
    let r = train(
        root,
        "against",
        "[init]\nfrom = \"hinge\"\n[optim]\nlr = 3e-3\n[train]\nobjective = \"dpo\"\n\
         micro_batch = 8\nmax_steps = 2\neval_every = 0\neval_batches = 2\n\
         [dpo]\nloss = \"ipo\"\nbeta = 0.5\nreference = \"sigmoid\"\n",
    );
    let eval = r["evals"].as_array().unwrap().last().unwrap().clone();
    let (policy, reference) = (export(root, "against"), export(root, "sigmoid"));
    let (c, rej, loss) = peer(
        root,
        serde_json::json!({"kind": "dpo", "model": policy, "reference": reference,
                           "pairs": as_json(&val), "beta": 0.5, "loss": "ipo"}),
    );
    assert!(c.iter().any(|x| x.abs() > 1e-2), "{c:?}");
    assert_eval_matches(&eval, &c, &rej, loss);
}

/// DPO with policy = reference on a tiny random Llama that transformers drew and quern
/// imported, on pairs right-padded with pad == eos: each variant's first loss is its formula
/// (ln 2, 1/(4β²), 1) and transformers' (computed by hand from its logits), and its gradients
/// for ten weights (embeddings, output, final and block norms, q/k/v, projections, MLP)
/// equal plain PyTorch's.
#[test]
fn dpo_first_loss_and_gradients_match_plain_pytorch() {
    use quern_train::config::DpoLoss;
    use quern_train::objective::{Dpo, Objective};
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("llama");
    let toy = pairs(6, 5);
    let out = run_peer(
        dir.path(),
        "pref_loss.py",
        &serde_json::json!({"kind": "dpo_grad", "dir": hf, "pairs": as_json(&toy), "beta": 0.1}),
        "grad.safetensors",
    );
    let want: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    let mut m = quern_models::store::load(&hf, tch::Device::Cpu).unwrap();
    let seq = |p: &[i32], c: &[i32]| ([p, c].concat(), p.len());
    let mut seqs: Vec<_> = toy.iter().map(|(p, c, _)| seq(p, c)).collect();
    seqs.extend(toy.iter().map(|(p, _, r)| seq(p, r)));
    let rows = quern_train::data::pair_batch(&seqs, i64::from(EOS));
    let pairs_of = [
        ("model.embed_tokens.weight", "tok_emb.weight"),
        ("lm_head.weight", "lm_head.weight"),
        ("model.norm.weight", "ln_f.weight"),
        (
            "model.layers.1.self_attn.o_proj.weight",
            "blocks.1.attn.proj.weight",
        ),
        (
            "model.layers.0.mlp.down_proj.weight",
            "blocks.0.mlp.out.weight",
        ),
        (
            "model.layers.1.mlp.gate_proj.weight",
            "blocks.1.mlp.gate.weight",
        ),
        (
            "model.layers.0.input_layernorm.weight",
            "blocks.0.ln1.weight",
        ),
    ];
    for (variant, name, formula) in [
        (DpoLoss::Sigmoid, "sigmoid", std::f64::consts::LN_2),
        (DpoLoss::Ipo, "ipo", 1.0 / (4.0 * 0.01)),
        (DpoLoss::Hinge, "hinge", 1.0),
    ] {
        let dpo = Dpo {
            beta: 0.1,
            loss: variant,
            reference: None,
        };
        let p = dpo.prepare_rows(&rows).unwrap();
        m.model.params_mut().zero_grad();
        let loss = dpo.pairs(&m.model, &p, false).unwrap().loss_sum / p.count as f64;
        let l = loss.double_value(&[]);
        let theirs = want[&format!("{name}_loss")].double_value(&[]);
        assert!(
            (l - formula).abs() < 1e-6 * formula,
            "{name}: {l} vs {formula}"
        );
        assert!(
            (l - theirs).abs() < 1e-6 * formula,
            "{name}: {l} vs transformers {theirs}"
        );
        loss.backward();
        let grad = |n: &str| m.model.params().get(n).unwrap().grad();
        let qkv = Tensor::cat(
            &["q", "k", "v"].map(|x| {
                want[&format!("{name}_grad_model.layers.0.self_attn.{x}_proj.weight")]
                    .shallow_clone()
            }),
            0,
        );
        let mut checks: Vec<(String, Tensor, Tensor)> = pairs_of
            .iter()
            .map(|(hf, ours)| {
                (
                    ours.to_string(),
                    grad(ours),
                    want[&format!("{name}_grad_{hf}")].shallow_clone(),
                )
            })
            .collect();
        checks.push((
            "blocks.0.attn.qkv.weight".into(),
            grad("blocks.0.attn.qkv.weight"),
            qkv,
        ));
        let mut worst = 0f64;
        for (n, ours, theirs) in checks {
            let scale = theirs.abs().max().double_value(&[]);
            assert!(scale > 1e-8, "{name} {n}: a zero gradient checks nothing");
            let d = (ours - &theirs).abs().max().double_value(&[]) / scale;
            assert!(d < 1e-4, "{name} {n}: relative gradient difference {d}");
            worst = worst.max(d);
        }
        eprintln!(
            "dpo {name}: loss {l} (transformers {theirs}), gradients within {worst:.1e} relative"
        );
    }
}

/// rm on cls shards names the split's meta.json; an unknown loss variant names `dpo.loss`;
/// an empty completion names the split and row; a reference with another vocabulary or a
/// context shorter than the rows names `dpo.reference`.
#[test]
fn bad_preference_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let labels = vec!["a".to_string(), "b".to_string()];
    let rows: Vec<(Vec<i32>, i64)> = (0..8).map(|i| (vec![3, 4, 5], i % 2)).collect();
    let cls = root.join("cls/tokens");
    for d in ["train", "val"] {
        quern_train::data::write_cls_split(&cls.join(d), &rows, &labels, 8, 16, SPECIAL, "t")
            .unwrap();
    }
    let err = run_err(quern().arg("train").arg(run_toml(
        &root.join("cls"),
        "r",
        &format!("{TINY}[train]\nobjective = \"rm\"\nmicro_batch = 4\nmax_steps = 1\n"),
    )));
    assert!(
        err.contains("meta.json") && err.contains("`cls`") && err.contains("--objective rm"),
        "{err}"
    );
    splits(root, "dpo");
    let path = run_toml(
        root,
        "k",
        &format!("{TINY}[train]\nobjective = \"dpo\"\n[dpo]\nloss = \"kto\"\n"),
    );
    let err = run_err(quern().arg("train").arg(&path));
    assert!(
        err.contains("dpo.loss") && err.contains("kto") && err.contains("k.toml"),
        "{err}"
    );
    // A reference with a vocabulary of 256 ids for a policy of 64.
    let wide = root.join("wide");
    for d in ["train", "val"] {
        quern_train::data::write_pref_split(
            &wide.join("tokens").join(d),
            quern_tokenize::Objective::Dpo,
            &pairs(8, 3),
            16,
            200,
            SPECIAL,
            "toy",
        )
        .unwrap();
    }
    train(
        &wide,
        "w",
        &format!("{TINY}[train]\nobjective = \"dpo\"\nmicro_batch = 4\nmax_steps = 1\n"),
    );
    let err = run_err(quern().arg("train").arg(run_toml(
        root,
        "v",
        &format!(
            "{TINY}[train]\nobjective = \"dpo\"\nmicro_batch = 4\nmax_steps = 1\n\
             [dpo]\nreference = \"wide/w\"\n"
        ),
    )));
    assert!(
        err.contains("dpo.reference") && err.contains("256") && err.contains("64"),
        "{err}"
    );
    // A reference whose context is shorter than the rows.
    let short = root.join("short");
    for d in ["train", "val"] {
        quern_train::data::write_pref_split(
            &short.join("tokens").join(d),
            quern_tokenize::Objective::Dpo,
            &pairs(8, 3)
                .into_iter()
                .map(|(p, c, r)| (p[..1].to_vec(), c[..1].to_vec(), r[..1].to_vec()))
                .collect::<Vec<_>>(),
            4,
            64,
            SPECIAL,
            "toy",
        )
        .unwrap();
    }
    train(
        &short,
        "s",
        &format!("{TINY}[train]\nobjective = \"dpo\"\nmicro_batch = 4\nmax_steps = 1\n"),
    );
    let err = run_err(quern().arg("train").arg(run_toml(
        root,
        "c",
        &format!(
            "{TINY}[train]\nobjective = \"dpo\"\nmicro_batch = 4\nmax_steps = 1\n\
             [dpo]\nreference = \"short/s\"\n"
        ),
    )));
    assert!(
        err.contains("dpo.reference") && err.contains("context of 4"),
        "{err}"
    );
    // An empty completion.
    let mut bad = pairs(8, 4);
    bad[5].2.clear();
    let empty = root.join("empty");
    for d in ["train", "val"] {
        quern_train::data::write_pref_split(
            &empty.join("tokens").join(d),
            quern_tokenize::Objective::Rm,
            &bad,
            16,
            64,
            SPECIAL,
            "toy",
        )
        .unwrap();
    }
    let err = run_err(quern().arg("train").arg(run_toml(
        &empty,
        "e",
        &format!("{TINY}[train]\nobjective = \"rm\"\nmicro_batch = 8\nmax_steps = 1\n"),
    )));
    assert!(
        err.contains("rejected_ids") && err.contains("row") && err.contains("empty/tokens/train"),
        "{err}"
    );
}
