//! `quern compress`: quantized models store codes and scales and load within half a step of
//! the source; low-bit kernels give the dequantized model's logits; pruning leaves the
//! pattern it promises and training keeps the zeros; Wanda and GPTQ equal a plain PyTorch
//! implementation on the same Hugging Face model and calibration rows; bad requests are
//! refused naming the flag, with nothing written.
//!
//! The model is a tiny Llama-like one trained for a few steps on byte tokens of the GPL-3.0
//! text, so each test takes seconds on one CPU thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use quern_models::compress;
use quern_models::store;
use quern_train::data::{BatchSource, ShardRows};
use tch::{Device, Kind, Tensor};

use crate::common::{quern, run_err, run_ok, run_peer};

const SEQ: usize = 32;

/// Byte-token splits of the GPL text and a tiny Llama-like run trained on them
/// (`root/base`). Returns the base run's directory.
fn setup(root: &Path) -> PathBuf {
    let text = std::fs::read(crate::common::fixture("train/gpl-3.0.txt")).unwrap();
    let cut = text.len() * 9 / 10;
    for (name, bytes) in [("train", &text[..cut]), ("val", &text[cut..])] {
        quern_train::data::write_byte_split(&root.join("tokens").join(name), bytes, SEQ, false)
            .unwrap();
    }
    let toml = "out_dir = \"base\"\n[data]\ntrain = \"tokens/train\"\n\
                [model]\nlayers = 2\nheads = 4\nkv_heads = 2\ndim = 64\nmlp_hidden = 128\n\
                positions = \"rotary\"\nnorm = \"rmsnorm\"\nmlp = \"swiglu\"\ntie_embeddings = false\n\
                [optim]\nlr = 3e-3\n[train]\nmicro_batch = 8\nmax_steps = 30\neval_every = 0\n\
                [checkpoint]\nevery = 0\nkeep = 1\n";
    let path = root.join("base.toml");
    std::fs::write(&path, toml).unwrap();
    run_ok(quern().args(["train", "--quiet"]).arg(&path));
    root.join("base")
}

/// A tiny random Llama-like model (1 layer, width 32, tied embeddings) saved as `root/m`.
fn tiny_random(root: &Path) -> quern_models::Transformer {
    let cfg = quern_models::ModelConfig::llama()
        .with_dim(32)
        .with_layers(1)
        .with_seq_len(16)
        .with_vocab_size(64);
    let m = quern_models::Transformer::new(&cfg, Device::Cpu);
    store::save(
        &root.join("m"),
        &store::ModelMeta::new(cfg),
        &m.params().named(),
        None,
        false,
    )
    .unwrap();
    m
}

fn compress_json(args: &[&str], root: &Path) -> serde_json::Value {
    let out = run_ok(
        quern()
            .current_dir(root)
            .arg("compress")
            .args(args)
            .arg("--json"),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn block_weights(w: &HashMap<String, Tensor>) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = w
        .iter()
        .filter(|(k, _)| compress::compressible(k))
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// int8 and int4 models: the file holds codes (int8; int4 two to a byte) and scales, not
/// f32 matrices; loading gives weights within half a step of the source's and everything
/// else unchanged; the low-bit kernels give the dequantized model's logits (to bf16
/// activations' rounding); `quern generate` runs it and names the kernels; the report's
/// perplexity is the eval's, and int8 moves it by well under a percent.
#[test]
fn quantized_models_store_codes_and_run_on_low_bit_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let base = setup(root);
    let src = store::load_weights(&base).unwrap();
    let mut step_bytes = HashMap::new();
    for (flags, name, scheme) in [
        (vec!["--quant", "int8"], "q8", compress::Scheme::Int8),
        (
            vec!["--quant", "int8", "--quant-head"],
            "q8h",
            compress::Scheme::Int8,
        ),
        (
            vec!["--quant", "int4", "--group", "32"],
            "q4",
            compress::Scheme::Int4 { group: 32 },
        ),
    ] {
        let head = name.ends_with('h');
        let n_quant = 10 + usize::from(head);
        let mut args = vec![
            "base",
            "--out",
            name,
            "--eval",
            "tokens/val",
            "--eval-rows",
            "40",
        ];
        args.extend(flags.iter().copied());
        let report = compress_json(&args, root);
        let out = root.join(name);
        assert!(out.join("compress.json").exists());
        let ppl = &report["perplexity"];
        let (before, after) = (
            ppl["source"].as_f64().unwrap(),
            ppl["compressed"].as_f64().unwrap(),
        );
        assert!(before > 1.0 && before < 259.0, "{report}");
        if scheme == compress::Scheme::Int8 {
            assert!((after / before - 1.0).abs() < 0.01, "{before} -> {after}");
        }
        // The file: codes and scales for the 10 block matrices.
        let raw = store::read_safetensors(&out.join("model.safetensors")).unwrap();
        let blocks = block_weights(&src.tensors);
        assert_eq!(blocks.len(), 10);
        for (n, w) in &blocks {
            assert!(!raw.contains_key(n), "{n} stored in f32");
            let q = &raw[&format!("{n}.q")];
            let (rows, cols) = w.size2().unwrap();
            match scheme {
                compress::Scheme::Int8 => {
                    assert_eq!((q.kind(), q.size()), (Kind::Int8, vec![rows, cols]))
                }
                compress::Scheme::Int4 { .. } => {
                    assert_eq!((q.kind(), q.size()), (Kind::Uint8, vec![rows, cols / 2]))
                }
            }
        }
        assert_eq!(raw.contains_key("lm_head.weight.q"), head);
        assert_eq!(raw.contains_key("lm_head.weight"), !head);
        // Loaded: dequantized within half a step; the rest bit for bit.
        let back = store::load_weights(&out).unwrap();
        assert_eq!(back.quant.len(), n_quant);
        for (n, w) in &src.tensors {
            let b = &back.tensors[n];
            match back.quant.get(n) {
                Some(q) => {
                    let step = match scheme {
                        compress::Scheme::Int8 => q.scale.view([-1, 1]).expand_as(w),
                        compress::Scheme::Int4 { group } => q
                            .scale
                            .repeat_interleave_self_int(group, Some(1), None)
                            .narrow(1, 0, w.size()[1]),
                    };
                    let over = (b - w).abs() - step / 2.0 - 1e-6;
                    assert!(over.max().double_value(&[]) <= 0.0, "{n}");
                }
                None => assert!(b.equal(w), "{n} changed"),
            }
        }
        // Low-bit kernels against the dequantized model.
        let mut low = store::load(&out, Device::Cpu).unwrap();
        let dense = store::load(&out, Device::Cpu).unwrap();
        assert_eq!(low.model.use_quantized(&low.quant).unwrap(), n_quant);
        let ids =
            Tensor::from_slice(&[70i64, 114, 101, 101, 32, 115, 111, 102, 116, 119]).view([2, 5]);
        let a = low.model.forward(&ids, true, false);
        let b = dense.model.forward(&ids, true, false);
        let rel = (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[]);
        assert!(
            rel < 2e-2,
            "{name}: low-bit logits differ by {rel} relative"
        );
        assert!(rel > 0.0, "{name}: the kernels did not run");
        // Five rows without autograd, as decoding has them: quern's own kernels (int8 and
        // int4 alike), which round the activations to int16 where libtorch's low-bit
        // products round them to bf16, so they land much closer to the dequantized model.
        {
            let _g = tch::no_grad_guard();
            let one = ids.narrow(0, 0, 1);
            let before = quern_models::kernels::calls_here();
            let a = low.model.forward(&one, true, false);
            assert!(
                quern_models::kernels::calls_here() > before,
                "{name}: no decoding kernel ran"
            );
            let b = dense.model.forward(&one, true, false);
            let rel = (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[]);
            assert!(rel < 2e-3, "{name}: kernel logits differ by {rel} relative");
        }
        // `quern generate` names the kernels it ran on; --dequantize runs none.
        for (extra, want) in [(None, n_quant), (Some("--dequantize"), 0)] {
            let out = run_ok(
                quern()
                    .current_dir(root)
                    .args(["generate", "--model", name, "--prompt-tokens", "4"])
                    .args([
                        "--batch-size",
                        "1",
                        "--max-tokens",
                        "4",
                        "--bench",
                        "--json",
                    ])
                    .args(["--repeat", "1", "--threads", "1"])
                    .args(extra),
            );
            let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(row["low_bit_matrices"], want, "{extra:?}: {row}");
            if extra.is_none() {
                step_bytes.insert(name, row["weight_bytes_per_step"].as_f64().unwrap());
            }
        }
    }
    // The int8 head reads about a quarter of the f32 head's bytes per step (codes, an f32
    // scale and a bf16 one per row: 3 bytes a weight and 6 a row saved at dim 64).
    let saved = step_bytes["q8"] - step_bytes["q8h"];
    let f32_head = (src.tensors["lm_head.weight"].numel() * 4) as f64;
    assert!(
        saved > 0.7 * f32_head && saved < 0.76 * f32_head,
        "{step_bytes:?}"
    );
}

/// `--quant-head` on a model with tied embeddings unties it: the token embeddings stay as
/// they were in f32, the output projection becomes int8 codes within half a step of them,
/// and the low-bit head gives the dequantized model's logits.
#[test]
fn a_tied_head_is_untied_and_quantized() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let m = tiny_random(root);
    assert!(m.config().tie_embeddings);
    compress_json(
        &["m", "--out", "h", "--quant", "int8", "--quant-head"],
        root,
    );
    let back = store::load_weights(&root.join("h")).unwrap();
    assert!(!back.meta.config.tie_embeddings);
    let emb = &m.params().get("tok_emb.weight").unwrap();
    assert!(back.tensors["tok_emb.weight"].equal(emb));
    let q = &back.quant["lm_head.weight"];
    let step = q.scale.view([-1, 1]).expand_as(emb);
    let over = (&back.tensors["lm_head.weight"] - *emb).abs() - step / 2.0 - 1e-6;
    assert!(over.max().double_value(&[]) <= 0.0);
    let mut low = store::load(&root.join("h"), Device::Cpu).unwrap();
    let dense = store::load(&root.join("h"), Device::Cpu).unwrap();
    assert_eq!(low.model.use_quantized(&low.quant).unwrap(), 6);
    let ids = Tensor::from_slice(&[5i64, 9, 33, 2]).view([1, 4]);
    let a = low.model.forward(&ids, true, false);
    let b = dense.model.forward(&ids, true, false);
    let rel = (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[]);
    assert!(rel > 0.0 && rel < 2e-2, "{rel}");
}

/// Magnitude pruning per matrix zeroes exactly its share of each matrix; 2:4 Wanda leaves
/// at least 2 zeros in every 4 consecutive inputs; the zeros are recorded and training from
/// the pruned model keeps them (while the other weights move); neuron pruning shrinks the
/// MLP and the model still loads and evaluates.
#[test]
fn pruning_keeps_its_pattern_through_training() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let base = setup(root);
    let src = store::load_weights(&base).unwrap();

    let r = compress_json(
        &[
            "base",
            "--out",
            "mag",
            "--prune",
            "magnitude",
            "--sparsity",
            "0.3",
        ],
        root,
    );
    assert!(
        r["block_matrices"]["sparsity"].as_f64().unwrap() >= 0.29,
        "{r}"
    );
    let mag = store::load_weights(&root.join("mag")).unwrap();
    for (n, w) in block_weights(&mag.tensors) {
        let zeros = w.eq(0.0).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(zeros, (0.3 * w.numel() as f64).floor() as i64, "{n}");
        // The survivors are the source's weights, untouched, and the largest ones.
        let s = &src.tensors[&n];
        let kept = w.ne(0.0);
        assert!(w.masked_select(&kept).equal(&s.masked_select(&kept)));
        let cut_max = s
            .abs()
            .masked_select(&kept.logical_not())
            .max()
            .double_value(&[]);
        let kept_min = s.abs().masked_select(&kept).min().double_value(&[]);
        assert!(cut_max <= kept_min, "{n}");
    }

    compress_json(
        &[
            "base",
            "--out",
            "w24",
            "--prune",
            "wanda",
            "--pattern",
            "2:4",
            "--calib",
            "tokens/train",
            "--calib-rows",
            "16",
        ],
        root,
    );
    let w24 = store::load_weights(&root.join("w24")).unwrap();
    assert_eq!(w24.meta.config.pruned.len(), 10);
    for (n, w) in block_weights(&w24.tensors) {
        let (rows, cols) = w.size2().unwrap();
        let zeros = w
            .eq(0.0)
            .view([rows, cols / 4, 4])
            .sum_dim_intlist(2, false, Kind::Int64);
        assert!(bool::try_from(zeros.ge(2).all()).unwrap(), "{n}");
    }

    // Train from the pruned model: zeros stay, the rest moves.
    let toml = "out_dir = \"ft\"\n[data]\ntrain = \"tokens/train\"\n[init]\nfrom = \"w24\"\n\
                [optim]\nlr = 1e-2\n[train]\nmicro_batch = 4\nmax_steps = 5\neval_every = 0\n\
                [checkpoint]\nevery = 0\nkeep = 1\n";
    std::fs::write(root.join("ft.toml"), toml).unwrap();
    run_ok(quern().args(["train", "--quiet"]).arg(root.join("ft.toml")));
    let ft = store::load_weights(&root.join("ft")).unwrap();
    assert_eq!(ft.meta.config.pruned, w24.meta.config.pruned);
    let mut moved = 0.0f64;
    for (n, w) in block_weights(&w24.tensors) {
        let t = &ft.tensors[&n];
        assert!(t.eq(0.0).equal(&w.eq(0.0)), "{n}: the zeros moved");
        moved = moved.max(max_diff(t, &w));
    }
    assert!(moved > 1e-4, "training changed nothing ({moved})");

    // Structured: a quarter of the MLP neurons go; the model is smaller and evaluates.
    let r = compress_json(
        &[
            "base",
            "--out",
            "neurons",
            "--prune-neurons",
            "0.25",
            "--calib",
            "tokens/train",
            "--calib-rows",
            "16",
            "--eval",
            "tokens/val",
            "--eval-rows",
            "20",
        ],
        root,
    );
    let nw = store::load_weights(&root.join("neurons")).unwrap();
    assert_eq!(nw.meta.config.mlp_hidden, Some(96));
    assert_eq!(nw.tensors["blocks.0.mlp.out.weight"].size(), [64, 96]);
    assert!(
        r["params"]["compressed"].as_i64() < r["params"]["source"].as_i64(),
        "{r}"
    );
    assert!(
        r["perplexity"]["compressed"].as_f64().unwrap().is_finite(),
        "{r}"
    );
}

/// Wanda (unstructured and 2:4) and GPTQ (int8, int4 g32) equal a plain PyTorch
/// implementation of the papers' formulas run by transformers on quern's Hugging Face export
/// of the same model, with the same calibration rows, block by block (the default) and, for
/// int4 GPTQ, from the source model's statistics; int4 GPTQ in act order with searched
/// ranges, and round-to-nearest with searched ranges: the same zeros (Wanda), the same
/// dequantized weights (GPTQ, allowing a few codes one step apart where float rounding in
/// the statistics tips a tie).
#[test]
fn wanda_and_gptq_equal_plain_pytorch_on_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    setup(root);
    let rows = 16usize;
    let (mut reader, _) = ShardRows::open(&root.join("tokens/train"), 0, 0, 1).unwrap();
    let calib = reader.next_rows(rows).unwrap().narrow(1, 0, SEQ as i64);
    let calib: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(&calib).unwrap();
    let n_rows = rows.to_string();
    let gptq4 = ["--quant", "int4", "--group", "32", "--rounding", "gptq"];
    let with = |extra: &[&'static str]| [gptq4.as_slice(), extra].concat();
    let runs: [(&str, Vec<&str>); 7] = [
        ("wanda50", vec!["--prune", "wanda", "--sparsity", "0.5"]),
        ("wanda24", vec!["--prune", "wanda", "--pattern", "2:4"]),
        ("gptq8", vec!["--quant", "int8", "--rounding", "gptq"]),
        ("gptq4", gptq4.to_vec()),
        ("gptq4src", with(&["--calib-stats", "source"])),
        ("gptq4act", with(&["--act-order", "--range", "search"])),
        (
            "rtn4search",
            vec!["--quant", "int4", "--group", "32", "--range", "search"],
        ),
    ];
    for (name, flags) in &runs {
        let mut args = vec!["base", "--out", name];
        if !name.starts_with("rtn") {
            args.extend(["--calib", "tokens/train", "--calib-rows", &n_rows]);
        }
        args.extend(flags.iter().copied());
        compress_json(&args, root);
        run_ok(
            quern()
                .current_dir(root)
                .args(["export", name, "--format", "hf", "--out"])
                .arg(format!("{name}-hf")),
        );
    }
    run_ok(
        quern()
            .current_dir(root)
            .args(["export", "base", "--format", "hf", "--out", "base-hf"]),
    );
    let task = serde_json::json!({
        "dir": root.join("base-hf"),
        "calib": calib,
        "ops": [
            {"kind": "wanda", "sparsity": 0.5, "pattern": "unstructured", "sequential": true},
            {"kind": "wanda", "sparsity": 0.5, "pattern": "2:4", "sequential": true},
            {"kind": "gptq", "bits": 8, "group": 0, "damp": 0.01, "block": 128, "sequential": true},
            {"kind": "gptq", "bits": 4, "group": 32, "damp": 0.01, "block": 128, "sequential": true},
            {"kind": "gptq", "bits": 4, "group": 32, "damp": 0.01, "block": 128},
            {"kind": "gptq", "bits": 4, "group": 32, "damp": 0.01, "block": 128,
             "act_order": true, "range": "search", "sequential": true},
            {"kind": "rtn", "bits": 4, "group": 32, "range": "search"},
        ],
    });
    let peer =
        store::read_safetensors(&run_peer(root, "compress_ref.py", &task, "ref.safetensors"))
            .unwrap();
    // The two orders differ after the first layer, so agreeing with both says quern follows
    // the order asked for.
    let seq = &peer["o3.model.layers.1.mlp.down_proj.weight"];
    let src = &peer["o4.model.layers.1.mlp.down_proj.weight"];
    let moved = (seq - src).abs().gt(1e-5).sum(Kind::Int64).int64_value(&[]);
    assert!(
        moved as f64 > 0.05 * seq.numel() as f64,
        "sequential and source statistics gave nearly the same weights ({moved} differ)"
    );
    for (i, (name, _)) in runs.iter().enumerate() {
        let ours =
            store::read_safetensors(&root.join(format!("{name}-hf/model.safetensors"))).unwrap();
        let mut layers = 0;
        let (mut same, mut total) = (0i64, 0i64);
        for (key, theirs) in &peer {
            let Some(hf_name) = key.strip_prefix(&format!("o{i}.")) else {
                continue;
            };
            let w = &ours[hf_name];
            layers += 1;
            if name.starts_with("wanda") {
                same += w
                    .eq(0.0)
                    .eq_tensor(&theirs.eq(0.0))
                    .sum(Kind::Int64)
                    .int64_value(&[]);
                total += w.numel() as i64;
                let both = w.ne(0.0).logical_and(&theirs.ne(0.0));
                assert_eq!(
                    max_diff(&w.masked_select(&both), &theirs.masked_select(&both)),
                    0.0
                );
            } else {
                same += (w - theirs)
                    .abs()
                    .le(1e-5)
                    .sum(Kind::Int64)
                    .int64_value(&[]);
                total += w.numel() as i64;
                // Any difference is at most a step or two of the level grid.
                assert!(
                    max_diff(w, theirs) < 0.2 * w.abs().max().double_value(&[]),
                    "{name} {hf_name}"
                );
            }
        }
        assert_eq!(layers, 14, "{name}: q, k, v, o, gate, up, down in 2 layers");
        let share = same as f64 / total as f64;
        let need = if name.starts_with("wanda") {
            0.999
        } else {
            0.98
        };
        assert!(
            share >= need,
            "{name}: {share} of the weights agree with plain PyTorch"
        );
        eprintln!("{name}: {share:.5} of {total} weights agree with plain PyTorch");
    }
}

/// Bad requests: nothing to do, Wanda or GPTQ without calibration data, calibration data or
/// statistics for methods that read none, sequential statistics for a global scope, int4 on a
/// pruned model, a sparsity out of range, an existing output: each named, nothing written.
#[test]
fn bad_requests_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A tiny random model is enough to be refused.
    tiny_random(root);
    let cases: [(&[&str], &str); 11] = [
        (&["m", "--out", "x"], "nothing to do"),
        (
            &["m", "--out", "x", "--quant", "int8", "--calib", "c"],
            "none of them is asked for",
        ),
        (
            &["m", "--out", "x", "--quant", "int8", "--range", "search"],
            "--range",
        ),
        (
            &["m", "--out", "x", "--quant", "int4", "--act-order"],
            "--rounding gptq",
        ),
        (
            &[
                "m",
                "--out",
                "x",
                "--quant",
                "int8",
                "--calib-stats",
                "source",
            ],
            "--calib-stats",
        ),
        (
            &[
                "m",
                "--out",
                "x",
                "--prune",
                "wanda",
                "--scope",
                "global",
                "--calib-stats",
                "sequential",
                "--calib",
                "c",
            ],
            "--calib-stats source",
        ),
        (&["m", "--out", "x", "--prune", "wanda"], "--calib"),
        (
            &["m", "--out", "x", "--quant", "int4", "--rounding", "gptq"],
            "--calib",
        ),
        (
            &["m", "--out", "x", "--prune", "magnitude", "--quant", "int4"],
            "int8",
        ),
        (
            &[
                "m",
                "--out",
                "x",
                "--prune",
                "magnitude",
                "--sparsity",
                "1.5",
            ],
            "--sparsity",
        ),
        (&["m", "--out", "m", "--quant", "int8"], "--force"),
    ];
    for (args, want) in cases {
        let e = run_err(quern().current_dir(root).arg("compress").args(args));
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert!(!root.join("x").exists());
    let e = run_err(quern().current_dir(root).args([
        "compress", "m", "--out", "x", "--prune", "wanda", "--calib", "nowhere",
    ]));
    assert!(e.contains("nowhere"), "{e}");
    assert!(!root.join("x").exists());
}
