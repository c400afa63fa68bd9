//! `quern eval` end to end on SmolLM2-135M-Instruct (its GGUF, from setup), checked against
//! `transformers` and plain PyTorch (`tests/peers/hf_eval.py`) on the same weights and
//! inputs: perplexity of a tokenized split (overall and per source) and multiple-choice
//! log-likelihoods on real MMLU questions, zero- and few-shot; results independent of the
//! batch size; bad task files refused with the file and line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use quern_core::shard::{ShardOptions, ShardWriter};

use crate::common::{fixture, quern, read_jsonl, run_err, run_ok, run_peer};
use crate::models::smollm2;

/// Runs `tests/peers/hf_eval.py` on a task.
fn reference(task: serde_json::Value) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = run_peer(dir.path(), "hf_eval.py", &task, "out.json");
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

/// A JSON array of arrays of numbers.
fn matrix(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn gguf_task(extra: serde_json::Value) -> serde_json::Value {
    let g = smollm2();
    let mut t = serde_json::json!({
        "dir": g.parent().unwrap(),
        "file": g.file_name().unwrap().to_str().unwrap(),
    });
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    t
}

fn eval_json(args: &[&str], model: &Path) -> serde_json::Value {
    let out = run_ok(
        quern()
            .arg("eval")
            .args(args)
            .arg("--model")
            .arg(model)
            .arg("--json"),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A docs shard of the first two documents of four sources of the real fixture, each cut
/// to its first 500 characters (about a thousand SmolLM2 tokens in all: the model runs on
/// one thread in tests, three times over).
fn small_docs(dir: &Path) -> Vec<(String, String)> {
    let docs = read_jsonl(&fixture("corpus/mixed.jsonl"));
    let mut picked: Vec<(String, String, String)> = Vec::new();
    for src in ["manpages", "mail", "licenses", "python-docs"] {
        for d in docs.iter().filter(|d| d["source"] == src).take(2) {
            let text: String = d["text"].as_str().unwrap().chars().take(500).collect();
            picked.push((d["id"].as_str().unwrap().into(), text, src.into()));
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("meta", DataType::Utf8, true),
    ]));
    type Doc = (String, String, String);
    let col = |f: &dyn Fn(&Doc) -> Option<String>| {
        Arc::new(StringArray::from(picked.iter().map(f).collect::<Vec<_>>()))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            col(&|p| Some(p.0.clone())),
            col(&|p| Some(p.1.clone())),
            col(&|p| Some(p.2.clone())),
            col(&|_| None),
        ],
    )
    .unwrap();
    let mut w = ShardWriter::new(dir, "docs", "part", schema, ShardOptions::default()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    picked.into_iter().map(|p| (p.0, p.2)).collect()
}

fn import_smollm2(dir: &Path) -> PathBuf {
    let m = dir.join("smollm2");
    run_ok(quern().arg("import").arg(smollm2()).arg("--out").arg(&m));
    m
}

#[test]
fn perplexity_equals_plain_pytorch_overall_and_per_source() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = import_smollm2(t);
    let docs = small_docs(&t.join("build"));
    run_ok(
        quern()
            .args(["tokenize", "--seq-len", "48", "--corpus"])
            .arg(t.join("build"))
            .arg("--tokenizer")
            .arg(model.join("tokenizer.json"))
            .arg("--out")
            .arg(t.join("tok")),
    );
    let split = t.join("tok/train");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(split.join("meta.json")).unwrap()).unwrap();
    let (rows, ids) = (
        meta["rows"].as_u64().unwrap(),
        meta["tokens"].as_u64().unwrap(),
    );
    assert!(rows >= 10, "{meta}");

    let r3 = eval_json(
        &[
            "ppl",
            "--data",
            split.to_str().unwrap(),
            "--batch-size",
            "3",
            "--out",
            t.join("ppl.json").to_str().unwrap(),
        ],
        &model,
    );
    // The same at batch size 1, as a table naming every source.
    let out = run_ok(
        quern()
            .args(["eval", "ppl", "--batch-size", "1", "--data"])
            .arg(&split)
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(t.join("ppl1.json")),
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let r1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("ppl1.json")).unwrap()).unwrap();
    let (a, b) = (&r3["result"], &r1["result"]);
    assert_eq!(a["rows"], rows);
    assert_eq!(a["ids"], ids, "every real id found");
    // Every id but each row's first is a target exactly once.
    assert_eq!(a["overall"]["tokens"], ids - rows);
    let nll = a["overall"]["nll"].as_f64().unwrap();
    assert!(
        (nll - b["overall"]["nll"].as_f64().unwrap()).abs() < 1e-5,
        "{a} vs {b}"
    );

    // Plain PyTorch on transformers' logits: the whole split is one work unit, so padding
    // is the tail of the last row: rows * (seq_len + 1) - ids positions.
    let want = reference(gguf_task(serde_json::json!({ "split": split })));
    let per_row = matrix(&want["split"]["nll"]);
    assert_eq!(per_row.len() as u64, rows);
    let pad = (rows * 49 - ids) as usize;
    let mut all: Vec<f64> = per_row.concat();
    all.truncate(all.len() - pad);
    let ref_nll = all.iter().sum::<f64>() / all.len() as f64;
    assert_eq!(all.len() as u64, ids - rows);
    assert!(
        (nll - ref_nll).abs() < 1e-4 * ref_nll.max(1.0),
        "quern nll {nll} vs PyTorch {ref_nll}"
    );
    let ppl = a["overall"]["ppl"].as_f64().unwrap();
    assert!((ppl - ref_nll.exp()).abs() / ppl < 1e-4);

    // Per source: the four sources, from the tokenize manifest, adding up to the whole.
    let sources = a["sources"].as_object().unwrap();
    let mut names: Vec<&str> = sources.keys().map(String::as_str).collect();
    names.sort();
    let mut want_names: Vec<&str> = docs.iter().map(|d| d.1.as_str()).collect();
    want_names.sort();
    want_names.dedup();
    assert_eq!(names, want_names, "{}", a["sources_from"]);
    let (mut n, mut s) = (0u64, 0.0);
    for p in sources.values() {
        let k = p["tokens"].as_u64().unwrap();
        assert!(k > 0);
        n += k;
        s += k as f64 * p["nll"].as_f64().unwrap();
    }
    assert_eq!(n, ids - rows);
    assert!((s / n as f64 - nll).abs() < 1e-6);

    for name in &want_names {
        assert!(table.contains(name), "{table}");
    }
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("ppl.json")).unwrap()).unwrap();
    assert_eq!(written["result"]["overall"]["tokens"], ids - rows);
    assert!(!written["model"]["weights_xxh3"]
        .as_str()
        .unwrap()
        .is_empty());
}

fn logliks(details: &Path) -> Vec<Vec<f64>> {
    let rows: Vec<serde_json::Value> = read_jsonl(details)
        .into_iter()
        .map(|d| d["loglik"].clone())
        .collect();
    matrix(&serde_json::Value::from(rows))
}

#[test]
fn multiple_choice_logliks_equal_transformers_zero_and_few_shot() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let gguf = smollm2();
    // (file, format, shots, questions, batch sizes): MMLU zero-shot on all 12 questions
    // (one-token continuations), two-shot on the first 4 (long contexts), and the plain
    // layout one-shot (multi-token continuations, a context ending in a space) at two batch
    // sizes (the unit tests of `quern_eval::score` try more against a plain computation).
    let configs = [
        ("eval/mmlu_sample.jsonl", "mmlu", 0, 12, &["5"][..]),
        ("eval/mmlu_sample.jsonl", "mmlu", 2, 4, &["3"][..]),
        ("eval/mmlu_plain.jsonl", "plain", 1, 8, &["1", "5"][..]),
    ];
    let want = reference(gguf_task(serde_json::json!({
        "mc": configs.iter().map(|(file, format, shots, n, _)| serde_json::json!({
            "path": fixture(file), "format": format, "shots": shots, "limit": n
        })).collect::<Vec<_>>()
    })));
    for (k, (file, format, shots, n, batches)) in configs.iter().enumerate() {
        let task = fixture(file);
        let want = &want["mc"][k];
        let want_ll = matrix(&want["loglik"]);
        assert_eq!(want_ll.len(), *n);
        let mut got = Vec::new();
        let mut reports = Vec::new();
        for bs in batches.iter() {
            let details = t.join(format!("d-{k}-{bs}.jsonl"));
            let r = eval_json(
                &[
                    "mc",
                    "--task",
                    task.to_str().unwrap(),
                    "--format",
                    format,
                    "--shots",
                    &shots.to_string(),
                    "--limit",
                    &n.to_string(),
                    "--batch-size",
                    bs,
                    "--details",
                    details.to_str().unwrap(),
                ],
                &gguf,
            );
            got.push(logliks(&details));
            reports.push(r);
        }
        for (b, g) in got.iter().enumerate() {
            assert_eq!(g.len(), *n);
            for (q, (a, w)) in g.iter().zip(&want_ll).enumerate() {
                for (c, (x, y)) in a.iter().zip(w).enumerate() {
                    assert!(
                        (x - y).abs() < 2e-3,
                        "{file} {shots}-shot, batch size {}, question {q}, choice {c}: quern {x} vs transformers {y}",
                        batches[b]
                    );
                }
            }
        }
        // The batch size changes nothing but rounding.
        if got.len() == 2 {
            for (a, b) in got[0].iter().flatten().zip(got[1].iter().flatten()) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
            assert_eq!(
                reports[0]["result"]["overall"],
                reports[1]["result"]["overall"]
            );
        }
        let r = &reports[0]["result"];
        assert_eq!(r["overall"]["questions"], *n as u64);
        for m in ["acc", "acc_norm"] {
            let (a, b) = (r["overall"][m].as_f64().unwrap(), want[m].as_f64().unwrap());
            assert!(
                (a - b).abs() < 1e-9,
                "{file} {shots}-shot {m}: quern {a} vs {b}"
            );
        }
        if *format == "mmlu" {
            assert_eq!(r["skipped_header_rows"], 1);
        }
        if k == 0 {
            assert_eq!(r["subjects"].as_object().unwrap().len(), 4);
        }
    }
}

#[test]
fn bad_tasks_and_splits_are_refused_with_the_place() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let gguf = smollm2();
    let cases = [
        (
            "{\"question\": \"q\", \"choices\": [\"a\", \"b\"]}\n",
            "gold",
        ),
        (
            "{\"question\": \"q\", \"choices\": [\"a\"], \"gold\": 0}\n",
            "at least two",
        ),
    ];
    for (text, want) in cases {
        let f = t.join("task.jsonl");
        std::fs::write(&f, text).unwrap();
        let e = run_err(
            quern()
                .args(["eval", "mc", "--task"])
                .arg(&f)
                .arg("--model")
                .arg(&gguf),
        );
        assert!(e.contains("task.jsonl:1") && e.contains(want), "{e}");
    }
    // A directory that is not a tokenized split.
    let e = run_err(
        quern()
            .args(["eval", "ppl", "--data"])
            .arg(t)
            .arg("--model")
            .arg(&gguf),
    );
    assert!(e.contains("meta.json"), "{e}");
    // --out is not written when the evaluation fails.
    let e = run_err(
        quern()
            .args(["eval", "ppl", "--batch-size", "0", "--data"])
            .arg(t)
            .arg("--model")
            .arg(&gguf)
            .arg("--out")
            .arg(t.join("r.json")),
    );
    assert!(e.contains("--batch-size"), "{e}");
    assert!(!t.join("r.json").exists());
}
