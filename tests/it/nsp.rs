//! BERT pretraining: BERT's MLM head and the NSP objective against `transformers`'
//! `BertForPreTraining` (logits, loss, gradients), `mlm` from the real all-MiniLM-L6-v2 (which
//! has no MLM head) with the head initialised fresh, and bad input.

use std::collections::HashMap;
use std::path::Path;

use quern_models::transformer::Extras;
use quern_train::objective::{Mlm, Nsp, NspParts, Objective, Prepared, IGNORE};
use tch::{Device, Kind, Tensor};

use crate::common::{fixture, quern, run_err, run_ok, run_peer};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
        .abs()
        .max()
        .double_value(&[])
}

fn t2(v: &[Vec<i64>]) -> Tensor {
    Tensor::from_slice(&v.concat()).view([v.len() as i64, -1])
}

/// A tiny random `BertForPreTraining` saved by `save_pretrained` and imported by quern gives
/// transformers' MLM prediction logits, seq_relationship logits and total loss (with
/// `labels` and `next_sentence_label`) on the same padded pairs within 1e-4, and the same
/// gradients for weights of both heads, the tied embedding and the encoder.
#[test]
fn bert_for_pretraining_logits_loss_and_gradients_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let bert = dir.path().join("bert");
    // Two pairs (the first padded), [CLS] = 2, [SEP] = 3.
    let ids = vec![
        vec![2, 5, 6, 7, 3, 8, 9, 3, 0, 0],
        vec![2, 10, 11, 3, 12, 13, 14, 15, 16, 3],
    ];
    let mask = vec![vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0], vec![1; 10]];
    let types = vec![
        vec![0, 0, 0, 0, 0, 1, 1, 1, 0, 0],
        vec![0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    ];
    let i = IGNORE;
    let labels = vec![
        vec![i, 5, i, 40, i, i, 9, i, i, i],
        vec![i, i, 11, i, 12, i, i, i, 16, i],
    ];
    let next = vec![0i64, 1];
    let peer = tempfile::tempdir().unwrap();
    let out = run_peer(
        peer.path(),
        "hf_models.py",
        &serde_json::json!({
            "kind": "bert_pretraining_tiny", "dir": bert, "ids": ids, "mask": mask,
            "types": types, "labels": labels, "next": next,
        }),
        "out.safetensors",
    );
    let want: HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();

    let m = quern_models::store::load(&bert, Device::Cpu).unwrap();
    let model = &m.model;
    let cfg = model.config();
    assert!(cfg.has_mlm_head(), "cls.predictions imported");
    assert_eq!(cfg.head, Some(quern_models::head::nsp_head()));
    let (ids_t, mask_t, types_t) = (t2(&ids), t2(&mask), t2(&types));

    // Logits, without gradients.
    let (mlm, nsp) = tch::no_grad(|| {
        let extras = Extras {
            token_types: Some(&types_t),
            key_mask: Some(&mask_t),
            ..Extras::default()
        };
        let h = model.hidden(&ids_t, &extras, false, false, None).unwrap();
        (
            model.logits(&h),
            model.classify_hidden(&h, &mask_t).unwrap(),
        )
    });
    // Padded positions are not defined the same way: compare real tokens.
    let keep = mask_t.unsqueeze(-1).to_kind(Kind::Float);
    let d = max_diff(&(&mlm * &keep), &(&want["mlm_logits"] * &keep));
    assert!(d <= 1e-4, "MLM logits differ from transformers by {d}");
    let dn = max_diff(&nsp, &want["nsp_logits"]);
    assert!(dn <= 1e-4, "seq_relationship logits differ by {dn}");
    eprintln!("BertForPreTraining: MLM logits differ by {d:.2e}, NSP logits by {dn:.2e}");

    // The nsp objective's loss on the same targets: MLM mean over the masked positions plus
    // NSP mean over the rows, as BertForPreTraining's `loss`.
    let objective = Nsp {
        mlm: Mlm {
            mask_prob: 0.15,
            mask_id: 4,
            vocab_size: 64,
            pad_id: Some(0),
        },
        cls_id: 2,
        sep_id: 3,
    };
    let targets = t2(&labels);
    let count = targets.ne(IGNORE).sum(Kind::Int64).int64_value(&[]);
    let batch = Prepared {
        input: ids_t.shallow_clone(),
        targets,
        count,
        mask: Some(mask_t.shallow_clone()),
        segments: None,
        nsp: Some(NspParts {
            token_types: types_t.shallow_clone(),
            labels: Tensor::from_slice(&next),
        }),
    };
    let terms = objective.terms(model, &batch, false).unwrap();
    let loss = terms.mlm_sum / count as f64 + terms.nsp_sum / 2.0;
    let d = (loss.double_value(&[]) - want["loss"].double_value(&[0])).abs();
    assert!(d <= 1e-4, "total loss differs from transformers by {d}");
    eprintln!(
        "loss {} vs transformers {} (differ by {d:.2e})",
        loss.double_value(&[]),
        want["loss"].double_value(&[0])
    );
    loss.backward();
    let grad = |name: &str| model.params().get(name).unwrap().grad();
    for (ours, theirs, rows) in [
        (
            "mlm_head.dense.weight",
            "cls.predictions.transform.dense.weight",
            None,
        ),
        (
            "mlm_head.norm.weight",
            "cls.predictions.transform.LayerNorm.weight",
            None,
        ),
        ("mlm_head.bias", "cls.predictions.bias", None),
        // Tied: the embedding's gradient includes the decoder's.
        (
            "tok_emb.weight",
            "bert.embeddings.word_embeddings.weight",
            None,
        ),
        (
            "type_emb.weight",
            "bert.embeddings.token_type_embeddings.weight",
            None,
        ),
        ("head.pooler.weight", "bert.pooler.dense.weight", None),
        ("head.out.weight", "cls.seq_relationship.weight", None),
        (
            "blocks.0.attn.qkv.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
            Some(32),
        ),
    ] {
        let g = grad(ours);
        let g = match rows {
            Some(n) => g.narrow(0, 0, n),
            None => g,
        };
        let w = &want[&format!("grad_{theirs}")];
        let scale = w.abs().max().double_value(&[]).max(1e-6);
        let d = max_diff(&g, w);
        assert!(
            d / scale <= 1e-4,
            "{ours}: relative gradient difference {}",
            d / scale
        );
        eprintln!("gradient of {ours}: relative difference {:.2e}", d / scale);
    }
}

/// `mlm` from the real all-MiniLM-L6-v2 (a BertModel: no `cls.predictions`): the run says
/// the MLM head is initialised fresh, the loss falls over a few steps, and the checkpoint
/// carries the head (`mlm_head.*`), which a run started from it keeps (no second note).
#[test]
fn mlm_from_minilm_initialises_the_head_fresh_and_trains() {
    let minilm = crate::models::minilm();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    run_ok(
        quern()
            .args([
                "tokenize",
                "--json",
                "--objective",
                "mlm",
                "--seq-len",
                "32",
            ])
            .arg("--corpus")
            .arg(fixture("corpus/mixed.jsonl"))
            .arg("--tokenizer")
            .arg(minilm.join("tokenizer.json"))
            .arg("--out")
            .arg(root.join("tok")),
    );
    let run = |name: &str, from: &Path, steps: u32| {
        std::fs::write(
            root.join(format!("{name}.toml")),
            format!(
                "out_dir = \"{name}\"\n[init]\nfrom = \"{}\"\n[data]\ntrain = \"tok/train\"\n\
                 [optim]\nlr = 5e-4\nwarmup_steps = 0\n[train]\nobjective = \"mlm\"\n\
                 micro_batch = 8\nmax_steps = {steps}\nseed = 3\n[checkpoint]\nevery = 0\n",
                from.display()
            ),
        )
        .unwrap();
        let out = run_ok(
            quern()
                .args(["train", "--quiet", "--json"])
                .arg(root.join(format!("{name}.toml")))
                .env("OMP_NUM_THREADS", "1"),
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (report, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (report, stderr) = run("a", &minilm, 12);
    assert!(
        stderr.contains("no MLM head") && stderr.contains("initialised fresh"),
        "{stderr}"
    );
    assert!(report["notes"][0]
        .as_str()
        .is_some_and(|n| n.contains("MLM head")));
    assert_eq!(report["model"]["mlm_head"], true);
    let losses: Vec<f64> = report["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["loss"].as_f64().unwrap())
        .collect();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&losses[..3]), mean(&losses[losses.len() - 3..]));
    assert!(
        last < first - 1.0,
        "loss did not fall: {first:.3} -> {last:.3} ({losses:?})"
    );
    eprintln!(
        "mlm from all-MiniLM-L6-v2: loss {first:.3} -> {last:.3} over {} steps",
        losses.len()
    );
    // The head is in the checkpoint, and a run started from it keeps it.
    let ck = quern_models::store::newest_checkpoint(&root.join("a")).unwrap();
    let w = quern_models::store::read_safetensors(&ck.join("model.safetensors")).unwrap();
    for name in [
        "mlm_head.dense.weight",
        "mlm_head.norm.bias",
        "mlm_head.bias",
    ] {
        assert!(w.contains_key(name), "{name} missing from the checkpoint");
    }
    let (b, stderr) = run("b", &root.join("a"), 1);
    assert!(!stderr.contains("initialised fresh"), "{stderr}");
    assert!(
        (b["losses"][0]["loss"].as_f64().unwrap() - last).abs() < 1.0,
        "run b starts where a ended: {} vs {last}",
        b["losses"][0]["loss"]
    );
}

/// Bad input: `nsp` on shards of another objective is refused naming their meta.json (and
/// `mlm` on nsp shards too); `nsp` on a decoder is refused naming the key; a `[model]
/// mlm_head` with another objective is refused.
#[test]
fn nsp_on_other_shards_or_models_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let text = std::fs::read(fixture("train/gpl-3.0.txt")).unwrap();
    quern_train::data::write_byte_split(&root.join("mlm"), &text, 32, true).unwrap();
    // Pairs of byte ids: [CLS] = 257 (bos), [SEP] = 258 (eos).
    let rows: Vec<(Vec<i32>, Vec<i8>, i64)> = (0..16)
        .map(|r| {
            let ids = vec![257, 65 + r, 66, 258, 67, 68 + r, 258];
            (ids, vec![0, 0, 0, 0, 1, 1, 1], i64::from(r % 2))
        })
        .collect();
    quern_train::data::write_nsp_split(
        &root.join("pairs"),
        &rows,
        16,
        260,
        [Some(256), Some(257), Some(258), Some(259)],
        "bytes",
    )
    .unwrap();
    let bert = "[model]\nlayers = 1\nheads = 2\ndim = 16\npost_norm = true\ntype_vocab_size = 2\nbias = true\nmlp = \"gelu_erf\"\n";
    let train = |name: &str, data: &str, objective: &str, model: &str| {
        std::fs::write(
            root.join(format!("{name}.toml")),
            format!(
                "out_dir = \"{name}\"\n[data]\ntrain = \"{data}\"\n[train]\nobjective = \"{objective}\"\nmicro_batch = 4\nmax_steps = 2\n{model}"
            ),
        )
        .unwrap();
        run_err(
            quern()
                .args(["train", "--quiet"])
                .arg(root.join(format!("{name}.toml"))),
        )
    };
    let e = train("a", "mlm", "nsp", bert);
    assert!(
        e.contains(&root.join("mlm/meta.json").display().to_string())
            && e.contains("`objective` is `clm`")
            && e.contains("--objective nsp"),
        "{e}"
    );
    let e = train("b", "pairs", "mlm", bert);
    assert!(
        e.contains(&root.join("pairs/meta.json").display().to_string()) && e.contains("nsp"),
        "{e}"
    );
    let e = train(
        "c",
        "pairs",
        "nsp",
        "[model]\nlayers = 1\nheads = 2\ndim = 16\n",
    );
    assert!(
        e.contains("model.type_vocab_size") && e.contains("BERT-like"),
        "{e}"
    );
    let e = train("d", "mlm", "clm", "[model]\nmlm_head = true\n");
    assert!(e.contains("model.mlm_head"), "{e}");
    // The same BERT trains nsp on its pairs: the metrics have both losses and the accuracy.
    std::fs::write(
        root.join("e.toml"),
        format!("out_dir = \"e\"\n[data]\ntrain = \"pairs\"\nval = \"pairs\"\n[train]\nobjective = \"nsp\"\nmicro_batch = 4\nmax_steps = 3\neval_every = 0\n{bert}"),
    )
    .unwrap();
    run_ok(quern().args(["train", "--quiet"]).arg(root.join("e.toml")));
    let metrics = std::fs::read_to_string(root.join("e/metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let step = &lines[0];
    let (m, n) = (
        step["mlm_loss"].as_f64().unwrap(),
        step["nsp_loss"].as_f64().unwrap(),
    );
    assert!(
        (step["loss"].as_f64().unwrap() - (m + n)).abs() < 1e-9,
        "{step}"
    );
    assert!((0.0..=1.0).contains(&step["nsp_accuracy"].as_f64().unwrap()));
    let eval = lines.iter().find(|l| l["kind"] == "eval").unwrap();
    let (vm, vn) = (
        eval["val_mlm_loss"].as_f64().unwrap(),
        eval["val_nsp_loss"].as_f64().unwrap(),
    );
    assert!((eval["val_loss"].as_f64().unwrap() - (vm + vn)).abs() < 1e-9);
    assert!((eval["val_ppl"].as_f64().unwrap() - vm.exp()).abs() < 1e-6 * vm.exp());
    let html = std::fs::read_to_string(root.join("e/report.html")).unwrap();
    assert!(html.contains("Next-sentence prediction accuracy"));
}
