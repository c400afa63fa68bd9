//! `cls` end to end: labelled mail (the SpamAssassin fixture) through `quern tokenize
//! --objective cls`, `quern train` with `objective = "cls"` (the loss falls; accumulating
//! micro-batches gives the one-batch losses; the validation figures equal `quern eval cls`'s),
//! `quern eval cls` (independent of the batch size; the head survives the checkpoint and a
//! `quern import`), LoRA with a trainable head merged by `quern merge`, logits and loss
//! against transformers' `*ForSequenceClassification` on SmolLM2-135M and all-MiniLM-L6-v2,
//! and bad labels or class weights refused.
//!
//! Training runs go through the binary (one process each), so no other test's use of
//! libtorch's global generator can reach their initialisation.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::common::{fixture, quern, read_jsonl, run_err, run_ok, run_peer};

/// The spam/ham fixture as a cls corpus with a `split` column (every fifth message `val`),
/// tokenized with `tokenizer` (a trained byte-level BPE when `None`) into `root/tokens`.
fn tokenized(root: &Path, tokenizer: Option<&Path>, seq_len: usize) -> PathBuf {
    let corpus = root.join("mail.jsonl");
    let lines: Vec<String> = read_jsonl(&fixture("labeling/spam_ham.jsonl"))
        .iter()
        .enumerate()
        .map(|(i, r)| {
            serde_json::json!({
                "id": r["id"], "text": r["text"], "label": r["label"],
                "split": if i % 5 == 4 { "val" } else { "train" },
            })
            .to_string()
        })
        .collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    let tok = match tokenizer {
        Some(t) => t.to_path_buf(),
        None => {
            let tok = root.join("tokenizer.json");
            run_ok(
                quern()
                    .args(["tokenizer", "train", "--vocab-size", "800", "--out"])
                    .arg(&tok)
                    .arg("--input")
                    .arg(&corpus),
            );
            tok
        }
    };
    let tokens = root.join("tokens");
    run_ok(
        quern()
            .args(["tokenize", "--objective", "cls", "--json", "--seq-len"])
            .arg(seq_len.to_string())
            .arg("--corpus")
            .arg(&corpus)
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(&tokens),
    );
    tokens
}

fn run_toml(root: &Path, name: &str, extra: &str) -> PathBuf {
    let text = format!(
        "out_dir = \"{name}\"\n[data]\ntrain = \"tokens/train\"\nval = \"tokens/val\"\n\
         {extra}\n[checkpoint]\nevery = 0\nkeep = 1\n"
    );
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

const TINY: &str = "[model]\nlayers = 2\nheads = 2\ndim = 32\n\
                    [optim]\nlr = 3e-3\ndecay = \"constant\"\nwarmup_steps = 0\n";

fn report(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap()
}

fn losses(r: &serde_json::Value) -> Vec<f64> {
    r["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["loss"].as_f64().unwrap())
        .collect()
}

fn eval_cls(model: &Path, data: &Path, batch: usize) -> serde_json::Value {
    let out = run_ok(
        quern()
            .args(["eval", "cls", "--json", "--device", "cpu", "--batch-size"])
            .arg(batch.to_string())
            .arg("--model")
            .arg(model)
            .arg("--data")
            .arg(data),
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["result"].clone()
}

/// A short run on real mail lowers the loss; its last validation loss and accuracy are those
/// `quern eval cls` computes on the same checkpoint (two implementations of the cls forward
/// and loss); `quern eval cls` gives the same figures at batch sizes 1, 5 and 64 and on the
/// model `quern import` writes from the run.
#[test]
fn a_cls_run_on_mail_learns_and_eval_cls_agrees_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tokens = tokenized(root, None, 96);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tokens.join("train/meta.json")).unwrap()).unwrap();
    assert_eq!(meta["labels"], serde_json::json!(["ham", "spam"]));
    let val_meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tokens.join("val/meta.json")).unwrap()).unwrap();
    let val_rows = val_meta["rows"].as_u64().unwrap() as usize;
    assert!(val_rows >= 50, "{val_rows} val rows");
    let cfg = run_toml(
        root,
        "run",
        &format!(
            "{TINY}[train]\nobjective = \"cls\"\nmicro_batch = 8\nmax_steps = 40\n\
             eval_every = 20\neval_batches = {}\n",
            val_rows.div_ceil(8)
        ),
    );
    run_ok(quern().arg("train").arg(&cfg));
    let run = root.join("run");
    let r = report(&run);
    let l = losses(&r);
    let first: f64 = l[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < first - 0.1, "loss {first:.4} -> {last:.4}");
    assert_eq!(r["model"]["head"]["pooling"], "last");
    assert_eq!(
        r["model"]["head"]["labels"],
        serde_json::json!(["ham", "spam"])
    );
    let evals = r["evals"].as_array().unwrap();
    let final_eval = evals.last().unwrap();
    let acc = final_eval["accuracy"].as_f64().unwrap();
    assert!(final_eval["macro_f1"].as_f64().is_some());
    assert!(acc > 0.6, "val accuracy {acc}");

    let e1 = eval_cls(&run, &tokens.join("val"), 1);
    assert_eq!(e1["rows"].as_u64().unwrap() as usize, val_rows);
    let nll = e1["nll"].as_f64().unwrap();
    let val_loss = final_eval["val_loss"].as_f64().unwrap();
    assert!(
        (nll - val_loss).abs() < 1e-4,
        "eval cls nll {nll} vs the run's val loss {val_loss}"
    );
    assert!((e1["report"]["accuracy"].as_f64().unwrap() - acc).abs() < 1e-12);
    let confusion = &e1["report"]["confusion"];
    let total: u64 = confusion
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, val_rows);
    for b in [5, 64] {
        let e = eval_cls(&run, &tokens.join("val"), b);
        assert_eq!(e["report"], e1["report"], "batch size {b}");
        assert!(
            (e["nll"].as_f64().unwrap() - nll).abs() < 1e-5,
            "batch size {b}"
        );
    }
    // The head survives a round trip through a model directory.
    let imported = root.join("imported");
    run_ok(quern().arg("import").arg(&run).arg("--out").arg(&imported));
    let model_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(imported.join("model.json")).unwrap()).unwrap();
    assert_eq!(model_json["config"]["head"]["num_labels"], 2);
    let e = eval_cls(&imported, &tokens.join("val"), 8);
    assert_eq!(e["report"], e1["report"]);
    assert!((e["nll"].as_f64().unwrap() - nll).abs() < 1e-6);
    // The table names the classes and the confusion matrix.
    let out = run_ok(
        quern()
            .args(["eval", "cls", "--device", "cpu", "--model"])
            .arg(&imported)
            .arg("--data")
            .arg(tokens.join("val")),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("macro-F1") && table.contains("confusion") && table.contains("spam"),
        "{table}"
    );
}

/// Micro-batches of 2 accumulated 4 times give the losses of one batch of 8, step for step,
/// with class weights (the normalizer is the step's rows, not each micro-batch's), though
/// the rows are padded to different widths in the two runs.
#[test]
fn accumulating_micro_batches_equals_one_big_batch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    tokenized(root, None, 96);
    let common = "[cls]\nclass_weights = [1.0, 2.5]\n";
    let mut curves = Vec::new();
    for (name, mb, acc) in [("one", 8, 1), ("accum", 2, 4)] {
        let cfg = run_toml(
            root,
            name,
            &format!(
                "{TINY}[train]\nobjective = \"cls\"\nmicro_batch = {mb}\ngrad_accum = {acc}\n\
                 max_steps = 6\neval_every = 0\n{common}"
            ),
        );
        run_ok(quern().arg("train").arg(&cfg));
        curves.push(losses(&report(&root.join(name))));
    }
    assert_eq!(curves[0].len(), 6);
    for (s, (a, b)) in curves[0].iter().zip(&curves[1]).enumerate() {
        assert!((a - b).abs() < 1e-5, "step {}: {a} vs {b}", s + 1);
    }
    // The curve moves: equal curves are not equal because nothing trained.
    assert!(
        (curves[0][0] - curves[0][5]).abs() > 1e-3,
        "{:?}",
        curves[0]
    );
}

/// A label that is not a class id is refused naming the shard; class weights of the wrong
/// number or sign name `cls.class_weights`; `[cls]` without the objective names `cls`; a model
/// without a head is refused by `quern eval cls`.
#[test]
fn bad_labels_and_class_weights_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let labels = vec!["neg".to_string(), "pos".to_string()];
    let rows: Vec<(Vec<i32>, i64)> = (0..16i32)
        .map(|i| (vec![1, 2, 3 + i % 5], i64::from(i % 2)))
        .collect();
    let mut bad = rows.clone();
    bad[11].1 = 7;
    let sp = [Some(0), None, Some(0), None];
    let w = |d: &str, r: &[(Vec<i32>, i64)]| {
        quern_train::data::write_cls_split(&root.join(d), r, &labels, 8, 16, sp, "t").unwrap()
    };
    w("tokens/train", &bad);
    w("tokens/val", &rows);
    let cfg = run_toml(
        root,
        "bad",
        &format!("{TINY}[train]\nobjective = \"cls\"\nmicro_batch = 4\nmax_steps = 2\n"),
    );
    let err = run_err(quern().arg("train").arg(&cfg));
    assert!(
        err.contains(".parquet") && err.contains("row 11") && err.contains("label 7"),
        "{err}"
    );
    assert!(!root.join("bad/checkpoints").exists());
    std::fs::remove_dir_all(root.join("tokens/train")).unwrap();
    w("tokens/train", &rows);
    for (extra, needle) in [
        ("[cls]\nclass_weights = [1.0, 2.0, 3.0]\n", "3 weight(s)"),
        ("[cls]\nclass_weights = [1.0, -2.0]\n", "positive"),
        ("[cls]\nclass_weights = []\n", "empty"),
    ] {
        let cfg = run_toml(
            root,
            "w",
            &format!("{TINY}[train]\nobjective = \"cls\"\nmicro_batch = 4\nmax_steps = 2\n{extra}"),
        );
        let err = run_err(quern().arg("train").arg(&cfg));
        assert!(
            err.contains("cls.class_weights") && err.contains(needle),
            "{extra}: {err}"
        );
    }
    let cfg = run_toml(
        root,
        "p",
        &format!(
            "{TINY}[train]\nobjective = \"cls\"\nmicro_batch = 4\n[cls]\npooling = \"first\"\n"
        ),
    );
    let err = run_err(quern().arg("train").arg(&cfg));
    assert!(err.contains("cls.pooling"), "{err}");
    let cfg = run_toml(
        root,
        "c",
        &format!("{TINY}[train]\nobjective = \"clm\"\n[cls]\npooler = true\n"),
    );
    let err = run_err(quern().arg("train").arg(&cfg));
    assert!(
        err.contains("cls") && err.contains("train.objective"),
        "{err}"
    );
    // A trained cls model on a split whose labels it does not know, and a model without a
    // head, are refused by quern eval cls.
    let cfg = run_toml(
        root,
        "ok",
        &format!("{TINY}[train]\nobjective = \"cls\"\nmicro_batch = 4\nmax_steps = 1\n"),
    );
    run_ok(quern().arg("train").arg(&cfg));
    let other = root.join("other");
    quern_train::data::write_cls_split(
        &other,
        &rows,
        &["a".into(), "b".into(), "c".into()],
        8,
        16,
        sp,
        "t",
    )
    .unwrap();
    let err = run_err(
        quern()
            .args(["eval", "cls", "--device", "cpu", "--model"])
            .arg(root.join("ok"))
            .arg("--data")
            .arg(&other),
    );
    assert!(err.contains("labels") && err.contains("meta.json"), "{err}");
    let err = run_err(
        quern()
            .args(["eval", "cls", "--device", "cpu", "--model"])
            .arg(crate::models::smollm2())
            .arg("--data")
            .arg(root.join("tokens/val")),
    );
    assert!(err.contains("no classification head"), "{err}");
}

/// LoRA on all-MiniLM-L6-v2 (an encoder, `[CLS]` pooling through a fresh pooler): the head
/// trains with the adapters (counted in the trainable parameters, saved in the adapter
/// checkpoint), and `quern merge` writes a model whose evaluation equals the adapters'
/// merged on the fly.
#[test]
fn lora_trains_the_head_and_merge_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let minilm = crate::models::minilm();
    tokenized(root, Some(&minilm.join("tokenizer.json")), 64);
    let cfg = run_toml(
        root,
        "lora",
        &format!(
            "[init]\nfrom = \"{}\"\n[lora]\nrank = 4\nalpha = 8.0\ntargets = [\"q\", \"v\"]\n\
             [optim]\nlr = 1e-3\n[train]\nobjective = \"cls\"\nmicro_batch = 4\nmax_steps = 3\n\
             eval_every = 0\neval_batches = 2\n[cls]\npooler = true\n",
            minilm.display()
        ),
    );
    run_ok(quern().arg("train").arg(&cfg));
    let run = root.join("lora");
    let r = report(&run);
    assert_eq!(r["model"]["head"]["pooling"], "first");
    let (layers, dim) = (6i64, 384i64);
    let adapters = layers * 2 * (4 * dim + dim * 4);
    let head = dim * dim + dim + 2 * dim + 2;
    assert_eq!(r["trainable_parameters"].as_i64().unwrap(), adapters + head);
    let ck = quern_models::store::newest_checkpoint(&run).unwrap();
    let saved = quern_models::store::read_safetensors(&ck.join("model.safetensors")).unwrap();
    for name in [
        "head.out.weight",
        "head.out.bias",
        "head.pooler.weight",
        "blocks.0.attn.q.lora_a",
    ] {
        assert!(
            saved.contains_key(name),
            "{name} not in the adapter checkpoint"
        );
    }
    let merged = root.join("merged");
    run_ok(
        quern()
            .args(["merge", "--adapter"])
            .arg(&run)
            .arg("--out")
            .arg(&merged),
    );
    let a = eval_cls(&run, &root.join("tokens/val"), 8);
    let b = eval_cls(&merged, &root.join("tokens/val"), 8);
    assert_eq!(a["report"]["confusion"], b["report"]["confusion"]);
    let (na, nb) = (a["nll"].as_f64().unwrap(), b["nll"].as_f64().unwrap());
    assert!((na - nb).abs() < 1e-4, "{na} vs {nb}");
    // The merged head is the trained one, not a fresh draw.
    let m = quern_models::store::read_safetensors(&merged.join("model.safetensors")).unwrap();
    let d = (&m["head.out.weight"] - &saved["head.out.weight"])
        .abs()
        .max()
        .double_value(&[]);
    assert_eq!(d, 0.0);
}

/// Rows of different lengths, right-padded, with their masks; `labels` cycles 0, 1.
fn padded(rows: &[Vec<i64>], pad: i64) -> (Vec<Vec<i64>>, Vec<Vec<i64>>, Vec<i64>) {
    let w = rows.iter().map(|r| r.len()).max().unwrap();
    let ids = rows
        .iter()
        .map(|r| [r.clone(), vec![pad; w - r.len()]].concat())
        .collect();
    let mask = rows
        .iter()
        .map(|r| [vec![1i64; r.len()], vec![0; w - r.len()]].concat())
        .collect();
    (ids, mask, (0..rows.len() as i64).map(|i| i % 2).collect())
}

fn t2(v: &[Vec<i64>]) -> Tensor {
    Tensor::from_slice(&v.concat()).view([v.len() as i64, -1])
}

/// quern's head on a pretrained model, against transformers' `*ForSequenceClassification`
/// with the same head weights: logits on a right-padded batch and the mean cross-entropy.
fn check_against_transformers(
    kind: &str,
    model_path: &Path,
    pooling: quern_models::head::Pooling,
    pooler: bool,
    task_model: serde_json::Value,
    tol: f64,
) {
    let mut w = quern_models::store::load_weights(model_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tok_file = dir.path().join("tokenizer.json");
    std::fs::write(&tok_file, w.tokenizer_json.as_deref().expect("a tokenizer")).unwrap();
    let tok = quern_tokenize::tokenizer::load_tokenizer(&tok_file).unwrap();
    let texts = [
        "This film was a delight from start to finish.",
        "Dull, long and badly acted.",
        "An ok movie, I guess.",
    ];
    let rows: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| {
            tok.encode(*t, kind == "bert")
                .unwrap()
                .get_ids()
                .iter()
                .map(|&i| i as i64)
                .collect()
        })
        .collect();
    assert!(rows[0].len() != rows[1].len(), "the batch needs padding");
    let (ids, mask, labels) = padded(&rows, 0);
    tch::manual_seed(11);
    let d = w.meta.config.dim as i64;
    let mut head = vec![(
        "head.out.weight".to_string(),
        Tensor::randn([2, d], (Kind::Float, Device::Cpu)) * 0.05,
    )];
    if w.meta.config.bias {
        head.push(("head.out.bias".into(), Tensor::from_slice(&[0.1f32, -0.2])));
    }
    if pooler {
        head.push((
            "head.pooler.weight".into(),
            Tensor::randn([d, d], (Kind::Float, Device::Cpu)) * 0.05,
        ));
        head.push((
            "head.pooler.bias".into(),
            Tensor::randn([d], (Kind::Float, Device::Cpu)) * 0.05,
        ));
    }
    let head_file = dir.path().join("head.safetensors");
    Tensor::write_safetensors(&head, &head_file).unwrap();
    w.meta.config.head = Some(quern_models::head::HeadConfig {
        num_labels: 2,
        labels: vec![],
        pooling,
        pooler,
    });
    for (n, t) in head {
        w.tensors.insert(n, t);
    }
    let model =
        quern_models::Transformer::from_weights(&w.meta.config, Device::Cpu, &w.tensors, &w.path)
            .unwrap();
    let logits = tch::no_grad(|| model.classify(&t2(&ids), &t2(&mask), false).unwrap());
    let loss = logits
        .cross_entropy_for_logits(&Tensor::from_slice(&labels))
        .double_value(&[]);
    let mut task = task_model;
    task["kind"] = kind.into();
    task["head"] = head_file.display().to_string().into();
    task["ids"] = serde_json::json!(ids);
    task["mask"] = serde_json::json!(mask);
    task["labels"] = serde_json::json!(labels);
    task["pad_id"] = 0.into();
    let out = run_peer(dir.path(), "hf_cls.py", &task, "out.safetensors");
    let want: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    let dl = (&logits - &want["logits"]).abs().max().double_value(&[]);
    assert!(dl < tol, "{kind}: logits differ from transformers by {dl}");
    let want_loss = want["loss"].double_value(&[]);
    assert!(
        (loss - want_loss).abs() < tol,
        "{kind}: loss {loss} vs transformers {want_loss}"
    );
    // A row alone gives the logits it has in the padded batch.
    let alone = tch::no_grad(|| {
        model
            .classify(
                &Tensor::from_slice(&rows[1]).view([1, -1]),
                &Tensor::ones([1, rows[1].len() as i64], (Kind::Int64, Device::Cpu)),
                false,
            )
            .unwrap()
    });
    let da = (alone - logits.get(1).view([1, 2]))
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        da < 1e-4,
        "{kind}: padded row differs from itself alone by {da}"
    );
}

/// SmolLM2-135M: the last real token's hidden state through `score`, as
/// `LlamaForSequenceClassification` reads it.
#[test]
fn smollm2_cls_logits_and_loss_equal_transformers() {
    let gguf = crate::models::smollm2();
    let task = serde_json::json!({
        "dir": gguf.parent().unwrap(),
        "file": gguf.file_name().unwrap().to_str().unwrap(),
    });
    check_against_transformers(
        "llama",
        &gguf,
        quern_models::head::Pooling::Last,
        false,
        task,
        1e-4,
    );
}

/// all-MiniLM-L6-v2: `[CLS]` through the pooler and the classifier, as
/// `BertForSequenceClassification`.
#[test]
fn minilm_cls_logits_and_loss_equal_transformers() {
    let dir = crate::models::minilm();
    let task = serde_json::json!({ "dir": dir });
    check_against_transformers(
        "bert",
        &dir,
        quern_models::head::Pooling::First,
        true,
        task,
        1e-4,
    );
}
