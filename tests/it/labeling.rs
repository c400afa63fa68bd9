//! `quern label` and the labeling stages inside `quern build`, on the real SpamAssassin
//! fixture (`tests/data/labeling/spam_ham.jsonl`).

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{Array, StringArray};
use arrow::record_batch::RecordBatch;

use crate::common::*;

fn strings(batches: &[RecordBatch], col: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column_by_name(col)
                .unwrap_or_else(|| panic!("no column `{col}`"))
                .clone();
            let a = arrow::compute::cast(&a, &arrow::datatypes::DataType::Utf8).unwrap();
            let a = a.as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..a.len())
                .map(move |i| (!a.is_null(i)).then(|| a.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn train_model(dir: &Path) -> (std::path::PathBuf, serde_json::Value) {
    let model = dir.join("models/spam.qcls");
    let out = run_ok(
        quern()
            .args([
                "label",
                "train",
                "--label-field",
                "label",
                "--threads",
                "1",
                "--epochs",
                "15",
                "--dim",
                "32",
            ])
            .args(["--valid-frac", "0.25", "--json", "--data"])
            .arg(fixture("labeling/spam_ham.jsonl"))
            .arg("--out")
            .arg(&model),
    );
    (
        model,
        serde_json::from_slice(&out.stdout).expect("--json prints JSON"),
    )
}

#[test]
fn label_train_reports_held_out_scores_and_eval_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let (model, report) = train_model(dir.path());
    let ho = &report["held_out"];
    let acc = ho["accuracy"].as_f64().unwrap();
    let n = ho["examples"].as_u64().unwrap();
    assert!(n >= 40, "a quarter of 300 held out: {report}");
    assert!(acc >= 0.85, "held-out accuracy {acc}: {report}");
    assert!(ho["macro_f1"].as_f64().unwrap() >= 0.85, "{report}");
    assert_eq!(report["labels"], serde_json::json!(["ham", "spam"]));
    // Deterministic with one thread: a second run writes the same bytes.
    let again = dir.path().join("again.qcls");
    run_ok(
        quern()
            .args([
                "label",
                "train",
                "--label-field",
                "label",
                "--threads",
                "1",
                "--epochs",
                "15",
                "--dim",
                "32",
                "--valid-frac",
                "0.25",
            ])
            .arg("--data")
            .arg(fixture("labeling/spam_ham.jsonl"))
            .arg("--out")
            .arg(&again),
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // eval on the whole fixture prints the matrix.
    let out = run_ok(
        quern()
            .args(["label", "eval", "--label-field", "label", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(fixture("labeling/spam_ham.jsonl")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("accuracy") && text.contains("macro-F1") && text.contains("confusion"),
        "{text}"
    );
    // A missing label field is an error naming the file, the line and the field.
    let err = run_err(
        quern()
            .args(["label", "train", "--label-field", "category", "--data"])
            .arg(fixture("labeling/spam_ham.jsonl"))
            .arg("--out")
            .arg(dir.path().join("x.qcls")),
    );
    assert!(
        err.contains("spam_ham.jsonl:1") && err.contains("category"),
        "{err}"
    );
}

/// `quern label eval` on the file `label train --test` scored gives the same numbers as the
/// training report, and those numbers are what its own confusion matrix implies (accuracy,
/// per-class precision/recall/F1, macro-F1, recomputed here).
#[test]
fn label_eval_numbers_equal_the_training_report_and_its_confusion_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(fixture("labeling/spam_ham.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let (train, held) = (
        dir.path().join("train.jsonl"),
        dir.path().join("held.jsonl"),
    );
    let pick = |keep: bool| {
        let mut v: Vec<&str> = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if (i % 4 == 3) == keep {
                v.push(l);
            }
        }
        v.join("\n") + "\n"
    };
    std::fs::write(&train, pick(false)).unwrap();
    std::fs::write(&held, pick(true)).unwrap();
    let model = dir.path().join("m.qcls");
    let out = run_ok(
        quern()
            .args(["label", "train", "--label-field", "label", "--threads", "1"])
            .args(["--epochs", "15", "--dim", "32", "--json", "--data"])
            .arg(&train)
            .arg("--test")
            .arg(&held)
            .arg("--out")
            .arg(&model),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = run_ok(
        quern()
            .args([
                "label",
                "eval",
                "--label-field",
                "label",
                "--json",
                "--model",
            ])
            .arg(&model)
            .arg("--data")
            .arg(&held),
    );
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        eval, report["held_out"],
        "eval = the training report's test scores"
    );
    assert_eq!(eval["examples"].as_u64().unwrap() as usize, lines.len() / 4);

    let c: Vec<Vec<f64>> = eval["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    let k = c.len();
    assert_eq!(k, 2);
    let total: f64 = c.iter().flatten().sum();
    assert_eq!(
        total as usize,
        lines.len() / 4,
        "every example in the matrix once"
    );
    let close = |a: f64, b: &serde_json::Value, what: &str| {
        let b = b.as_f64().unwrap();
        assert!(
            (a - b).abs() < 1e-12,
            "{what}: recomputed {a}, reported {b}"
        );
    };
    close(
        (0..k).map(|i| c[i][i]).sum::<f64>() / total,
        &eval["accuracy"],
        "accuracy",
    );
    let mut f1s = Vec::new();
    for j in 0..k {
        // Rows are the gold label, columns the prediction.
        let tp = c[j][j];
        let predicted: f64 = (0..k).map(|i| c[i][j]).sum();
        let gold: f64 = c[j].iter().sum();
        let p = if predicted > 0.0 { tp / predicted } else { 0.0 };
        let r = if gold > 0.0 { tp / gold } else { 0.0 };
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        close(p, &eval["precision"][j], "precision");
        close(r, &eval["recall"][j], "recall");
        close(f, &eval["f1"][j], "f1");
        f1s.push(f);
    }
    close(
        f1s.iter().sum::<f64>() / k as f64,
        &eval["macro_f1"],
        "macro-F1",
    );
}

#[test]
fn build_labels_decontaminates_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = train_model(dir.path());
    // Three "benchmark" items cut from fixture messages: those messages are contaminated.
    let docs: Vec<serde_json::Value> = std::fs::read_to_string(fixture("labeling/spam_ham.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let long: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["text"].as_str().unwrap().split_whitespace().count() > 60)
        .collect();
    let mut planted = Vec::new();
    let mut passages = Vec::new();
    let mut items = String::new();
    for d in long.iter().step_by(37).take(3) {
        let words: Vec<&str> = d["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .skip(20)
            .take(25)
            .collect();
        items.push_str(&serde_json::json!({"text": words.join(" ")}).to_string());
        items.push('\n');
        planted.push(d["id"].as_str().unwrap().to_string());
        passages.push(words.join(" "));
    }
    std::fs::write(dir.path().join("bench.jsonl"), items).unwrap();
    std::fs::write(dir.path().join("lexicon.txt"), "free\nmoney\nclick here\n").unwrap();
    let input = dir.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(fixture("labeling/spam_ham.jsonl"), input.join("mail.jsonl")).unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[input]
paths = ["input"]
id_field = "id"

[output]
dir = "out"

[[stages]]
type = "decontaminate"
action = "drop"
[[stages.eval_sets]]
path = "{bench}"

[[stages]]
type = "rules"
name = "topic"
default_label = "other"
[[stages.labels]]
name = "tech"
keywords = ["linux", "perl", "python", "kernel", "rpm", "debian"]

[[stages]]
type = "lexicon"
name = "promo"
path = "{lexicon}"

[[stages]]
type = "classifier"
name = "spam"
model = "{model}"

[[stages]]
type = "split"
stratify_by = "spam_label"
"#,
            bench = dir.path().join("bench.jsonl").display(),
            lexicon = dir.path().join("lexicon.txt").display(),
            model = model.display(),
        ),
    )
    .unwrap();
    run_ok(quern().arg("build").arg(&pipeline));
    let out = dir.path().join("out");
    let kept = quern_core::shard::read_table(&out.join("docs")).unwrap();
    let rejected = quern_core::shard::read_table(&out.join("rejected")).unwrap();
    let kept_n: usize = kept.iter().map(|b| b.num_rows()).sum();
    let rej_n: usize = rejected.iter().map(|b| b.num_rows()).sum();
    assert_eq!(kept_n + rej_n, docs.len());
    // Exactly the documents holding a planted passage were dropped as contaminated, with
    // the set named: the three the passages were cut from, and every other message that
    // holds one of the 25-word passages verbatim. The fixture has one: spam-1/00081 and
    // spam-1/00097 are two mailings of the same spam template ("Guaranteed to increase, lift
    // and firm your breasts ... money back!! 100% herbal and natural. Proven formula since
    // 1996. ..."), so the passage cut from 00097 is in 00081 word for word (14 of its
    // 13-grams): a true positive, not a false one. Checked here by plain substring search
    // on whitespace-joined words, independent of the n-gram index.
    let joined = |t: &str| format!(" {} ", t.split_whitespace().collect::<Vec<_>>().join(" "));
    let mut expected: Vec<String> = docs
        .iter()
        .filter(|d| {
            let t = joined(d["text"].as_str().unwrap());
            passages.iter().any(|p| t.contains(&joined(p)))
        })
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    planted.sort();
    assert!(planted.iter().all(|p| expected.contains(p)));
    let extra: Vec<&String> = expected.iter().filter(|e| !planted.contains(e)).collect();
    assert_eq!(
        extra,
        ["spam-1/00081"],
        "verbatim copies beyond the planted ones"
    );
    let mut rej_ids: Vec<String> = strings(&rejected, "id").into_iter().flatten().collect();
    rej_ids.sort();
    assert_eq!(rej_ids, expected);
    assert!(strings(&rejected, "reason")
        .iter()
        .all(|r| r.as_deref() == Some("contaminated")));
    assert!(strings(&rejected, "details")
        .iter()
        .all(|d| d.as_deref().unwrap_or("").contains("bench")));
    // Every kept document is labelled and split; the classifier agrees with the gold label
    // on most of the (mostly training) data.
    let gold: HashMap<&str, &str> = docs
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["label"].as_str().unwrap()))
        .collect();
    let ids = strings(&kept, "id");
    let pred = strings(&kept, "spam_label");
    let agree = ids
        .iter()
        .zip(&pred)
        .filter(|(i, p)| gold[i.as_deref().unwrap()] == p.as_deref().unwrap())
        .count();
    assert!(agree as f64 / kept_n as f64 > 0.9, "{agree} of {kept_n}");
    let splits = strings(&kept, "split");
    for s in ["train", "val", "test"] {
        assert!(
            splits.iter().any(|x| x.as_deref() == Some(s)),
            "no {s} rows"
        );
    }
    assert!(strings(&kept, "topic").iter().all(Option::is_some));
    assert!(strings(&kept, "promo_score").iter().all(Option::is_some));
}

/// `quern demo` labels, decontaminates and splits: the held-out passages it ships
/// (data/demo/evals) are in no kept document, documents holding them were dropped as
/// contaminated with the set named, and every kept document has a topic and a split.
#[test]
fn demo_labels_decontaminates_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(quern().arg("demo").arg("--dir").arg(dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("decontaminate "))
        .unwrap_or_else(|| panic!("no decontaminate row in the funnel:\n{stdout}"));
    let dropped: usize = line
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let passages: Vec<String> = read_jsonl(&repo().join("data/demo/evals/heldout_passages.jsonl"))
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_string())
        .collect();
    assert!(dropped >= passages.len(), "{line}");
    let joined = |t: &str| format!(" {} ", t.split_whitespace().collect::<Vec<_>>().join(" "));
    let read = |t: &str| quern_core::shard::read_table(&dir.path().join("out").join(t)).unwrap();
    let (kept, rejected) = (read("docs"), read("rejected"));
    for text in strings(&kept, "text").into_iter().flatten() {
        let t = joined(&text);
        assert!(
            !passages.iter().any(|p| t.contains(&joined(p))),
            "a kept document holds a held-out passage"
        );
    }
    let reasons = strings(&rejected, "reason");
    let details = strings(&rejected, "details");
    let texts = strings(&rejected, "text");
    let contaminated: Vec<usize> = (0..reasons.len())
        .filter(|&i| reasons[i].as_deref() == Some("contaminated"))
        .collect();
    assert_eq!(contaminated.len(), dropped);
    assert!(contaminated.iter().all(|&i| details[i]
        .as_deref()
        .unwrap_or("")
        .contains("heldout_passages")));
    // Each passage was cut from a document of the corpus, so some dropped document holds
    // it (the check above is not vacuous), and decontamination is what dropped one: no
    // earlier demo stage (filters, dedup) removed every copy before it could be found.
    for p in &passages {
        let holders: Vec<usize> = (0..texts.len())
            .filter(|&i| joined(texts[i].as_deref().unwrap_or("")).contains(&joined(p)))
            .collect();
        assert!(!holders.is_empty(), "no document holds {p:?}");
        assert!(
            holders.iter().any(|i| contaminated.contains(i)),
            "the source of {p:?} was dropped before decontamination (by {:?}); cut a \
             replacement from a document that reaches the stage (data/demo/README.md)",
            holders.iter().map(|&i| &reasons[i]).collect::<Vec<_>>()
        );
    }
    let splits = strings(&kept, "split");
    for s in ["train", "val", "test"] {
        assert!(splits.iter().any(|x| x.as_deref() == Some(s)), "no {s}");
    }
    assert!(splits.iter().all(Option::is_some));
    assert!(strings(&kept, "topic").iter().all(Option::is_some));
    demo_generates(dir.path(), &stdout);
}

/// The demo ends by generating from the model it trained, and `quern generate` reads that
/// run (its newest checkpoint carries the tokenizer) on its own.
#[cfg(feature = "torch")]
fn demo_generates(dir: &std::path::Path, stdout: &str) {
    let tail = stdout
        .split("== generate")
        .nth(1)
        .unwrap_or_else(|| panic!("the demo did not generate:\n{stdout}"));
    for p in ["The history of", "In the city", "A new study"] {
        let line = tail
            .lines()
            .find(|l| l.trim_start().starts_with(p))
            .unwrap_or_else(|| panic!("no line for {p:?}:\n{tail}"));
        assert!(line.trim().len() > p.len(), "nothing generated after {p:?}");
    }
    let out = run_ok(
        quern()
            .args(["generate", "--json", "--max-tokens", "6", "--model"])
            .arg(dir.join("run"))
            .args(["The history of", "In the"]),
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let n = r["tokens"].as_array().unwrap().len();
        assert!((1..=6).contains(&n), "{r}");
        assert!(
            ["length", "stop"].contains(&r["finish_reason"].as_str().unwrap()),
            "{r}"
        );
    }
    // Then it evaluates that model per source; `quern eval ppl` on the same split agrees
    // with the table it printed, and the sources add up to the whole.
    let table = stdout
        .split("== eval")
        .nth(1)
        .unwrap_or_else(|| panic!("the demo did not evaluate:\n{stdout}"));
    let out = run_ok(
        quern()
            .args(["eval", "ppl", "--json", "--model"])
            .arg(dir.join("run"))
            .arg("--data")
            .arg(dir.join("tokens/val")),
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &r["result"];
    let all = table
        .lines()
        .find(|l| l.starts_with("(all)"))
        .unwrap_or_else(|| panic!("no (all) line:\n{table}"));
    let printed: Vec<&str> = all.split_whitespace().collect();
    assert_eq!(printed[1], r["overall"]["tokens"].to_string(), "{all}");
    let ppl = r["overall"]["ppl"].as_f64().unwrap();
    assert_eq!(printed[2], format!("{ppl:.1}"), "{all}");
    assert!(ppl > 1.0 && ppl < 4096.0, "{r}");
    let sources = r["sources"].as_object().unwrap();
    assert!(sources.len() >= 2, "{r}");
    let n: u64 = sources
        .values()
        .map(|p| p["tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(n, r["overall"]["tokens"].as_u64().unwrap());
    for s in sources.keys() {
        assert!(
            table.lines().any(|l| l.starts_with(s.as_str())),
            "{s} not in\n{table}"
        );
    }
    demo_finetunes(dir, stdout);
}

/// Then it fine-tunes that model into a classifier of the build's `topic` labels and scores
/// it on the test split: `quern eval cls` on the run it left agrees with the table it
/// printed, and the classifier beats always answering the most frequent topic.
#[cfg(feature = "torch")]
fn demo_finetunes(dir: &std::path::Path, stdout: &str) {
    let tail = stdout
        .split("== fine-tune")
        .nth(1)
        .unwrap_or_else(|| panic!("the demo did not fine-tune:\n{stdout}"));
    let table = tail
        .split("== eval")
        .nth(1)
        .unwrap_or_else(|| panic!("the demo did not evaluate the classifier:\n{tail}"));
    let out = run_ok(
        quern()
            .args(["eval", "cls", "--json", "--model"])
            .arg(dir.join("run-topic"))
            .arg("--data")
            .arg(dir.join("tokens-topic/test")),
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &r["result"];
    let acc = r["report"]["accuracy"].as_f64().unwrap();
    let rows = r["rows"].as_u64().unwrap();
    assert!(
        table.contains(&format!("{rows} rows: accuracy {acc:.4}")),
        "quern eval cls says {acc:.4} on {rows} rows; the demo printed\n{table}"
    );
    let labels: Vec<&str> = r["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(labels, ["licence", "mail", "manual", "other"]);
    let most = r["report"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["support"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        acc > most as f64 / rows as f64 + 0.05,
        "accuracy {acc} does not beat the majority class ({most} of {rows})"
    );
}

#[cfg(not(feature = "torch"))]
fn demo_generates(_dir: &std::path::Path, _stdout: &str) {}
