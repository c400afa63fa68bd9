//! LoRA: `[lora]` runs train adapters only, checkpoint them with their base's hash, resume
//! exactly, and `quern merge` folds them into a model directory whose logits are the
//! unmerged adapters' (fp32); the adapters' forward and merge are checked against plain
//! PyTorch and Hugging Face `peft` on a Hugging Face Llama, and on SmolLM2-135M; bad configs
//! are refused naming the key.
//!
//! The runs start from a tiny Llama-like model trained for a few steps on byte tokens of
//! the GPL-3.0 text, so each test takes seconds on one CPU thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use quern_models::lora::{self, LoraConfig};
use quern_models::store;
use quern_train::config::Precision;
use quern_train::TrainConfig;
use tch::{Device, Kind, Tensor};

use crate::common::{quern, run_err, run_ok, run_peer};

const SEQ: usize = 32;

/// A word-level tokenizer.json (enough to check that it travels with the weights).
const TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"free":1,"software":2},"unk_token":"[UNK]"}}"#;

/// Byte-token splits of the GPL text and a tiny Llama-like base run trained on them
/// (`root/base`, 4 steps). Returns the base run's directory.
fn setup(root: &Path) -> PathBuf {
    let text = std::fs::read(crate::common::fixture("train/gpl-3.0.txt")).unwrap();
    let cut = text.len() * 9 / 10;
    for (name, bytes) in [("train", &text[..cut]), ("val", &text[cut..])] {
        let dir = root.join("tokens").join(name);
        quern_train::data::write_byte_split(&dir, bytes, SEQ, false).unwrap();
        std::fs::write(dir.join("tokenizer.json"), TOKENIZER).unwrap();
    }
    let toml = "out_dir = \"base\"\n[data]\ntrain = \"tokens/train\"\n\
                [model]\nlayers = 2\nheads = 4\nkv_heads = 2\ndim = 32\npositions = \"rotary\"\n\
                norm = \"rmsnorm\"\nmlp = \"swiglu\"\ntie_embeddings = false\n\
                [optim]\nlr = 3e-3\n[train]\nmicro_batch = 4\nmax_steps = 4\neval_every = 0\n\
                [checkpoint]\nevery = 0\nkeep = 1\n";
    let path = root.join("base.toml");
    std::fs::write(&path, toml).unwrap();
    run_ok(quern().args(["train", "--quiet"]).arg(&path));
    root.join("base")
}

/// Writes `root/NAME.toml`: a run from the base with `lora` as its `[lora]` section (none
/// when empty) and `extra` appended.
fn lora_toml(root: &Path, name: &str, lora: &str, extra: &str) -> PathBuf {
    let lora = if lora.is_empty() {
        String::new()
    } else {
        format!("[lora]\n{lora}")
    };
    let toml = format!(
        "out_dir = \"{name}\"\n[data]\ntrain = \"tokens/train\"\n[init]\nfrom = \"base\"\n\
         [optim]\nlr = 1e-2\nweight_decay = 0.0\n[train]\nmicro_batch = 4\nmax_steps = 6\n\
         eval_every = 0\n[checkpoint]\nevery = 3\nkeep = 2\n{lora}{extra}"
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

const ALL_LINEAR: &str = "rank = 4\nalpha = 8.0\ntargets = [\"all-linear\"]\n";

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
        .abs()
        .max()
        .double_value(&[])
}

fn ids() -> Tensor {
    Tensor::from_slice(&[70i64, 114, 101, 101, 32, 115, 111, 102, 116, 119, 97, 114]).view([2, 6])
}

fn deep(map: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    map.iter().map(|(k, v)| (k.clone(), v.copy())).collect()
}

/// The whole journey through the binary: a LoRA run checkpoints only adapters with its
/// base's path and hash; `quern merge` writes a model directory (tokenizer included) whose
/// logits equal the unmerged adapters' in fp32 and differ from the base's; a run directory
/// loads as the merged model; another base, a moved base, a full-weights run and an
/// existing --out are refused, and a refused merge leaves nothing at --out.
#[test]
fn a_lora_run_checkpoints_adapters_and_merges_to_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let base = setup(root);
    let cfg = lora_toml(root, "lora", ALL_LINEAR, "");
    let out = run_ok(quern().args(["train", "--quiet", "--json"]).arg(&cfg));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"], 6);
    // 2 blocks x 7 adapters, each a 4 x in A (in 32, or the MLP's 128 for out) and a
    // rows x 4 B (q 32, k 16, v 16, proj 32, gate 128, up 128, out 32): all the optimizer sees.
    let per_block = 4 * (32 * 6 + 128) + 4 * (32 + 16 + 16 + 32 + 128 + 128 + 32);
    assert_eq!(report["trainable_parameters"], 2 * per_block);
    let run = root.join("lora");
    let ck = run.join("checkpoints/step-00000006");

    // Only adapters in the checkpoint: 2 layers x 7 layers adapted (q, k, v, proj, gate,
    // up, out) x (A, B); the optimizer state only for them.
    let adapters = store::read_safetensors(&ck.join("model.safetensors")).unwrap();
    assert_eq!(adapters.len(), 2 * 7 * 2, "{:?}", adapters.keys());
    assert!(
        adapters.keys().all(|k| k.contains(".lora_")),
        "{:?}",
        adapters.keys()
    );
    let opt = store::read_safetensors(&ck.join("optimizer.safetensors")).unwrap();
    assert_eq!(opt.len(), 2 * adapters.len());
    assert!(
        adapters
            .iter()
            .filter(|(k, _)| k.ends_with("lora_b"))
            .all(|(_, t)| t.abs().max().double_value(&[]) > 0.0),
        "every B moved from zero"
    );
    let record = lora::read_record(&ck).unwrap().expect("a lora record");
    let base_w = store::load_weights(&base).unwrap();
    assert_eq!(record.base_hash, lora::weights_hash(&base_w.tensors));
    assert_eq!(
        record.base,
        std::fs::canonicalize(base.join("checkpoints/step-00000004")).unwrap()
    );
    assert_eq!(record.lora.rank, 4);

    // The unmerged adapters, in fp32: the base with the checkpoint's adapters.
    let mut unmerged = quern_models::Transformer::from_weights(
        &base_w.meta.config,
        Device::Cpu,
        &base_w.tensors,
        Path::new("base"),
    )
    .unwrap();
    let plain = unmerged.forward(&ids(), true, false);
    unmerged.add_lora(&record.lora).unwrap();
    quern_train::checkpoint::restore_weights(
        unmerged.trainable_mut(),
        &adapters,
        Path::new("adapters"),
    )
    .unwrap();
    let want = unmerged.forward(&ids(), true, false);

    let merged = root.join("merged");
    let out = run_ok(
        quern()
            .args(["merge", "--json", "--adapter"])
            .arg(&run)
            .arg("--out")
            .arg(&merged),
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rank"], 4);
    assert_eq!(summary["tokenizer"], true);
    assert_eq!(
        std::fs::read_to_string(merged.join("tokenizer.json")).unwrap(),
        TOKENIZER
    );
    let m = store::load(&merged, Device::Cpu).unwrap();
    assert_eq!(m.kind, store::SourceKind::QuernModel);
    assert_eq!(m.meta.config, base_w.meta.config);
    let got = m.model.forward(&ids(), true, false);
    let d = max_diff(&got, &want);
    // Observed: about 1e-6 (fp32 rounding of W + s·B·A).
    assert!(
        d < 2e-5,
        "merged logits differ from the unmerged adapters by {d}"
    );
    let moved = max_diff(&got, &plain);
    assert!(
        moved > 1e-2,
        "the adapters changed the logits by only {moved}"
    );
    // The run directory loads as the same merged model (what generate and eval call).
    let via_run = store::load(&run, Device::Cpu).unwrap();
    assert_eq!(
        max_diff(&via_run.model.forward(&ids(), true, false), &got),
        0.0
    );

    // A merge killed with every file written but before the rename leaves nothing at
    // --out; the next merge there succeeds and removes the killed one's temporary directory.
    let killed = root.join("killed");
    let out = quern()
        .args(["merge", "--adapter"])
        .arg(&run)
        .arg("--out")
        .arg(&killed)
        .env("QUERN_TEST_FAULT", "model_before_rename")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !killed.exists(),
        "an interrupted merge left {}",
        killed.display()
    );
    let temporaries = || -> Vec<String> {
        std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".killed.tmp-"))
            .collect()
    };
    assert_eq!(
        temporaries().len(),
        1,
        "the fault hit after the files were written"
    );
    run_ok(
        quern()
            .args(["merge", "--adapter"])
            .arg(&run)
            .arg("--out")
            .arg(&killed),
    );
    assert!(temporaries().is_empty(), "{:?}", temporaries());
    assert_eq!(
        std::fs::read(killed.join("model.safetensors")).unwrap(),
        std::fs::read(merged.join("model.safetensors")).unwrap()
    );
    std::fs::remove_dir_all(&killed).unwrap();

    // An existing --out is refused.
    let e = run_err(
        quern()
            .args(["merge", "--adapter"])
            .arg(&run)
            .arg("--out")
            .arg(&merged),
    );
    assert!(e.contains("--force"), "{e}");
    // Another base (here the merged model itself) is refused by its hash.
    let out2 = root.join("merged2");
    let e = run_err(
        quern()
            .args(["merge", "--adapter"])
            .arg(&ck)
            .arg("--base")
            .arg(&merged)
            .arg("--out")
            .arg(&out2),
    );
    assert!(
        e.contains("hash") && e.contains(&record.base_hash) && e.contains("merged"),
        "{e}"
    );
    assert!(!out2.exists());
    // A run of full weights has no adapters to merge.
    let e = run_err(
        quern()
            .args(["merge", "--adapter"])
            .arg(&base)
            .arg("--out")
            .arg(&out2),
    );
    assert!(
        e.contains("not LoRA adapters") && e.contains("quern import"),
        "{e}"
    );
    // A moved base is reported with the way out, and found again with --base.
    let moved_base = root.join("moved-base");
    std::fs::rename(&base, &moved_base).unwrap();
    let e = run_err(
        quern()
            .args(["merge", "--adapter"])
            .arg(&run)
            .arg("--out")
            .arg(&out2),
    );
    assert!(e.contains("--base") && e.contains("not there"), "{e}");
    assert!(!out2.exists());
    run_ok(
        quern()
            .args(["merge", "--adapter"])
            .arg(&run)
            .arg("--base")
            .arg(&moved_base)
            .arg("--out")
            .arg(&out2),
    );
    assert_eq!(
        std::fs::read(out2.join("model.safetensors")).unwrap(),
        std::fs::read(merged.join("model.safetensors")).unwrap()
    );
    // Nothing but the two model directories was written beside them.
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.starts_with("merged"))
        .collect();
    names.sort();
    assert_eq!(names, ["merged", "merged2"]);
}

/// A trainer built as `train_with` builds it, from `cfg`.
fn trainer(cfg: &TrainConfig) -> quern_train::trainer::Trainer {
    let (rows, meta) =
        quern_train::data::ShardRows::open(&cfg.data.train, cfg.train.seed, 0, 1).unwrap();
    let w = store::load_weights(cfg.init.from.as_ref().unwrap()).unwrap();
    let model_cfg =
        quern_train::trainer::resolve_init(&cfg.model, &w, &meta, &cfg.data.train).unwrap();
    let objective = quern_train::trainer::make_objective(cfg, &meta).unwrap();
    let mut t = quern_train::trainer::Trainer::new(
        cfg,
        &model_cfg,
        objective,
        Box::new(rows),
        None,
        Device::Cpu,
    )
    .unwrap();
    quern_train::checkpoint::restore_weights(t.model.params_mut(), &w.tensors, &w.path).unwrap();
    t
}

/// Training steps change the adapters and leave every base tensor bitwise as it was, in
/// fp32 and under bf16 autocast.
#[test]
fn only_the_adapters_train_in_fp32_and_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    setup(root);
    for precision in [Precision::Fp32, Precision::Bf16] {
        let mut cfg = TrainConfig::load(&lora_toml(
            root,
            "lora",
            "rank = 2\ntargets = [\"q\", \"v\", \"proj\", \"up\"]\ndropout = 0.1\n",
            "",
        ))
        .unwrap();
        cfg.train.precision = precision;
        let mut t = trainer(&cfg);
        let base: HashMap<String, Tensor> = deep(&t.model.params().named().into_iter().collect());
        let before: HashMap<String, Tensor> =
            deep(&t.model.trainable().named().into_iter().collect());
        assert_eq!(before.len(), 2 * 4 * 2);
        assert!(t
            .model
            .params()
            .params
            .iter()
            .all(|p| !p.tensor.requires_grad()));
        for _ in 0..3 {
            let log = t.train_step().unwrap();
            assert!(
                log.loss.is_finite() && !log.skipped,
                "{precision:?}: {log:?}"
            );
        }
        for p in &t.model.params().params {
            assert!(
                p.tensor.equal(&base[&p.name]),
                "{precision:?}: base tensor {} changed",
                p.name
            );
        }
        for p in &t.model.trainable().params {
            assert!(
                !p.tensor.equal(&before[&p.name]),
                "{precision:?}: adapter {} did not train",
                p.name
            );
            assert_eq!(p.tensor.kind(), Kind::Float, "master weights stay fp32");
        }
    }
}

/// A LoRA run stopped after 3 steps and resumed repeats the uninterrupted run's losses
/// exactly; resuming it under another [lora] section is refused naming `lora`.
#[test]
fn a_resumed_lora_run_repeats_the_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    setup(root);
    let opts = |resume, stop_after| quern_train::TrainOptions {
        resume,
        stop_after,
        ..Default::default()
    };
    let whole = TrainConfig::load(&lora_toml(root, "whole", ALL_LINEAR, "")).unwrap();
    let want = quern_train::train_with(&whole, &opts(false, None)).unwrap();
    let parts = TrainConfig::load(&lora_toml(root, "parts", ALL_LINEAR, "")).unwrap();
    quern_train::train_with(&parts, &opts(false, Some(3))).unwrap();
    let mut other = parts.clone();
    other.lora = Some(LoraConfig {
        rank: 2,
        ..parts.lora.clone().unwrap()
    });
    let e = quern_train::train_with(&other, &opts(true, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("lora") && e.contains("rank 4"), "{e}");
    let got = quern_train::train_with(&parts, &opts(true, None)).unwrap();
    assert_eq!(got.start_step, 3);
    let losses =
        |r: &quern_train::TrainReport| -> Vec<f64> { r.losses.iter().map(|l| l.loss).collect() };
    assert_eq!(losses(&got), losses(&want)[3..].to_vec());
    let a =
        store::read_safetensors(&root.join("whole/checkpoints/step-00000006/model.safetensors"))
            .unwrap();
    let b =
        store::read_safetensors(&root.join("parts/checkpoints/step-00000006/model.safetensors"))
            .unwrap();
    assert!(
        a.iter().all(|(k, v)| v.equal(&b[k])),
        "adapters differ after resume"
    );
}

/// Bad [lora] sections are refused before training, naming the key; nothing is written.
#[test]
fn bad_lora_configs_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    setup(root);
    let cases = [
        ("rank = 0\n", "", "lora.rank"),
        ("alpha = -1.0\n", "", "lora.alpha"),
        ("dropout = 1.5\n", "", "lora.dropout"),
        ("targets = [\"qq\"]\n", "", "lora.targets"),
        ("rnak = 4\n", "", "rnak"),
        // A layer this SwiGLU model does not have: the error lists those it has.
        ("targets = [\"fc\"]\n", "", "gate, up, out"),
    ];
    for (i, (lora, extra, needle)) in cases.into_iter().enumerate() {
        let name = format!("bad{i}");
        let cfg = lora_toml(root, &name, lora, extra);
        let e = run_err(quern().args(["train", "--quiet"]).arg(&cfg));
        assert!(e.contains(needle), "{lora:?}: {e}");
        assert!(e.contains("lora"), "{lora:?}: {e}");
        assert!(!root.join(&name).exists(), "{lora:?} started a run");
    }
    let bad = lora_toml(root, "bad-targets", "targets = [\"qq\"]\n", "");
    let e = run_err(quern().args(["train", "--quiet"]).arg(bad));
    assert!(e.contains("q, k, v, proj, fc, gate, up, out"), "{e}");
    // [lora] without a model to adapt.
    let path = root.join("no-init.toml");
    std::fs::write(
        &path,
        "out_dir = \"no-init\"\n[data]\ntrain = \"tokens/train\"\n[lora]\nrank = 4\n",
    )
    .unwrap();
    let e = run_err(quern().args(["train", "--quiet"]).arg(&path));
    assert!(e.contains("init.from") && e.contains("[lora]"), "{e}");
    assert!(!root.join("no-init").exists());
}

/// The adapters' forward equals plain PyTorch's `x·Wᵀ + s·(x·Aᵀ)·Bᵀ` on every projection of
/// a Hugging Face Llama (tests/peers/hf_lora.py patches transformers' modules), with the
/// same tensors: quern's `q`/`k`/`v` rows of `attn.qkv` are `q_proj`/`k_proj`/`v_proj`; and
/// `peft` given the same adapters gives the same logits and merges the same weights.
#[test]
fn lora_equals_plain_pytorch_and_peft_on_a_hugging_face_llama() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    let ids = vec![
        vec![1i64, 5, 9, 2, 33, 7, 4, 60],
        vec![3, 3, 8, 12, 40, 41, 2, 0],
    ];
    let made = run_peer(
        dir.path(),
        "hf_models.py",
        &serde_json::json!({"kind": "llama_hf_tiny", "dir": hf, "ids": ids, "tie": false}),
        "made.safetensors",
    );
    assert!(made.exists());
    let mut m = store::load(&hf, Device::Cpu).unwrap().model;
    let x = Tensor::from_slice(&ids.concat()).view([2, 8]);
    let plain = m.forward(&x, true, false);
    let l = LoraConfig {
        rank: 4,
        alpha: 6.0,
        dropout: 0.0,
        targets: vec!["all-linear".into()],
    };
    m.add_lora(&l).unwrap();
    {
        let _g = tch::no_grad_guard();
        tch::manual_seed(21);
        for p in &mut m.trainable_mut().params {
            let _ = p.tensor.normal_(0.0, 0.2);
        }
    }
    let got = m.forward(&x, true, false);
    let adapters = dir.path().join("adapters.safetensors");
    Tensor::write_safetensors(&m.trainable().named(), &adapters).unwrap();
    let out = run_peer(
        dir.path(),
        "hf_lora.py",
        &serde_json::json!({"dir": hf, "adapters": adapters, "scale": l.scale(), "ids": ids,
                            "rank": l.rank, "alpha": l.alpha}),
        "lora.safetensors",
    );
    let want: HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    let d_base = max_diff(&plain, &want["base"]);
    assert!(
        d_base <= 1e-5,
        "base logits differ from transformers by {d_base}"
    );
    let d = max_diff(&got, &want["lora"]);
    assert!(d <= 1e-5, "LoRA logits differ from plain PyTorch by {d}");
    let moved = max_diff(&want["lora"], &want["base"]);
    assert!(
        moved > 1e-2,
        "the adapters moved the logits by only {moved}"
    );

    // Hugging Face peft with the same adapters: the same logits, and merge_and_unload folds
    // the same weights as quern's merge (quern's attn.qkv rows are q_proj, k_proj, v_proj).
    let d = max_diff(&got, &want["peft"]);
    assert!(d <= 1e-5, "LoRA logits differ from peft's by {d}");
    let mut merged = store::load_weights(&hf).unwrap().tensors;
    let cfg = m.config().clone();
    let trained: HashMap<String, Tensor> = m.trainable().named().into_iter().collect();
    lora::merge_into(&mut merged, &cfg, &l, &trained, Path::new("adapters")).unwrap();
    let mut compared = 0;
    for i in 0..cfg.layers {
        let qkv = &merged[&format!("blocks.{i}.attn.qkv.weight")];
        let hf_name = |m: &str| format!("merged.model.layers.{i}.{m}.weight");
        let pairs = [
            ("self_attn.q_proj", qkv.narrow(0, 0, 32)),
            ("self_attn.k_proj", qkv.narrow(0, 32, 16)),
            ("self_attn.v_proj", qkv.narrow(0, 48, 16)),
            (
                "self_attn.o_proj",
                merged[&format!("blocks.{i}.attn.proj.weight")].shallow_clone(),
            ),
            (
                "mlp.gate_proj",
                merged[&format!("blocks.{i}.mlp.gate.weight")].shallow_clone(),
            ),
            (
                "mlp.up_proj",
                merged[&format!("blocks.{i}.mlp.up.weight")].shallow_clone(),
            ),
            (
                "mlp.down_proj",
                merged[&format!("blocks.{i}.mlp.out.weight")].shallow_clone(),
            ),
        ];
        for (module, ours) in pairs {
            let d = max_diff(&ours, &want[&hf_name(module)]);
            assert!(
                d <= 1e-6,
                "layer {i} {module}: merged weights differ from peft's by {d}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 2 * 7);
}

/// On SmolLM2-135M: fresh adapters (B = 0) on every projection give exactly the base's
/// logits; with B != 0, the weights merged in fp32 give the unmerged adapters' logits.
#[test]
fn smollm2_with_fresh_adapters_is_the_base_and_merges_in_fp32() {
    let w = store::load_weights(&crate::models::smollm2()).unwrap();
    let cfg = w.meta.config.clone();
    let mut m =
        quern_models::Transformer::from_weights(&cfg, Device::Cpu, &w.tensors, Path::new("s"))
            .unwrap();
    let x = Tensor::from_slice(&[1i64, 504, 3458, 282, 253, 1345, 314, 10, 4256, 30]).view([1, 10]);
    let plain = m.forward(&x, true, false);
    let l = LoraConfig {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        targets: vec!["all-linear".into()],
    };
    m.add_lora(&l).unwrap();
    assert_eq!(max_diff(&m.forward(&x, true, false), &plain), 0.0);
    {
        let _g = tch::no_grad_guard();
        tch::manual_seed(22);
        for p in &mut m.trainable_mut().params {
            if p.name.ends_with("lora_b") {
                let _ = p.tensor.normal_(0.0, 0.01);
            }
        }
    }
    let unmerged = m.forward(&x, true, false);
    let adapters: HashMap<String, Tensor> = m.trainable().named().into_iter().collect();
    let mut merged_w = deep(&w.tensors);
    drop(m);
    lora::merge_into(&mut merged_w, &cfg, &l, &adapters, Path::new("a")).unwrap();
    let merged =
        quern_models::Transformer::from_weights(&cfg, Device::Cpu, &merged_w, Path::new("m"))
            .unwrap()
            .forward(&x, true, false);
    let d = max_diff(&merged, &unmerged);
    let moved = max_diff(&unmerged, &plain);
    eprintln!("smollm2: merged vs unmerged {d:e}, adapters moved the logits by {moved:e}");
    assert!(
        d < 1e-3,
        "merged logits differ from the unmerged adapters by {d}"
    );
    assert!(moved > 0.1, "the adapters moved the logits by only {moved}");
}
