//! `quern tokenizer train` and `quern tokenize` end to end through the binary: a tokenizer
//! trained on the real fixture, a build-like docs directory tokenized into splits, the
//! report's accounting, the nanoGPT export read back by numpy, and bad flags refused.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use quern_core::shard::{ShardOptions, ShardWriter};

use crate::common::{fixture, python, quern, read_jsonl, run_err, run_ok};

/// The fixture as a docs directory (one shard) with a `split` column: every 4th doc is `val`.
fn docs_dir(dir: &Path) -> usize {
    let docs = read_jsonl(&fixture("corpus/mixed.jsonl"));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("meta", DataType::Utf8, true),
        Field::new("split", DataType::Utf8, true),
    ]));
    let s = |f: &dyn Fn(usize, &serde_json::Value) -> Option<String>| {
        Arc::new(StringArray::from(
            docs.iter()
                .enumerate()
                .map(|(i, d)| f(i, d))
                .collect::<Vec<_>>(),
        ))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            s(&|_, d| Some(d["id"].as_str().unwrap().to_string())),
            s(&|_, d| Some(d["text"].as_str().unwrap().to_string())),
            s(&|_, d| Some(d["source"].as_str().unwrap().to_string())),
            s(&|_, _| None),
            s(&|i, _| Some(if i % 4 == 3 { "val" } else { "train" }.to_string())),
        ],
    )
    .unwrap();
    let mut w = ShardWriter::new(dir, "docs", "part", schema, ShardOptions::default()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    docs.len()
}

#[test]
fn train_tokenize_export() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tok = t.join("tokenizer.json");
    run_ok(
        quern()
            .args(["tokenizer", "train", "--vocab-size", "1200", "--out"])
            .arg(&tok)
            .arg("--input")
            .arg(fixture("corpus/mixed.jsonl")),
    );
    let enc = run_ok(
        quern()
            .args(["tokenizer", "encode", "--tokenizer"])
            .arg(&tok)
            .arg("Hello, world"),
    );
    let v: serde_json::Value = serde_json::from_slice(&enc.stdout).unwrap();
    assert!(!v["ids"].as_array().unwrap().is_empty());
    // `tokenizer encode` gives the ids and tokens Python's `tokenizers` gives for the same
    // tokenizer.json, on plain text, whitespace runs, other scripts, digits and emoji.
    let texts = [
        "Hello, world",
        "  two  spaces\tand a tab\n\nnew lines",
        "Grüße aus Köln — 東京 и Москва",
        "x = 3.14159 * (r ** 2)  # 2024-12-06",
        "emoji 🙂👍 end",
    ];
    let mut ours = Vec::new();
    for t in texts {
        let out = run_ok(
            quern()
                .args(["tokenizer", "encode", "--tokenizer"])
                .arg(&tok)
                .arg(t),
        );
        ours.push(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap());
    }
    let py = run_ok(
        std::process::Command::new(python())
            .arg("-c")
            .arg(
                "import json, sys\nfrom tokenizers import Tokenizer\n\
                 t = Tokenizer.from_file(sys.argv[1])\n\
                 for s in json.loads(sys.argv[2]):\n\
                 \x20   e = t.encode(s, add_special_tokens=False)\n\
                 \x20   print(json.dumps({'ids': e.ids, 'tokens': e.tokens}))",
            )
            .arg(&tok)
            .arg(serde_json::to_string(&texts).unwrap()),
    );
    let theirs: Vec<serde_json::Value> = String::from_utf8(py.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), texts.len());
    for ((t, a), b) in texts.iter().zip(&ours).zip(&theirs) {
        assert_eq!(a["ids"], b["ids"], "{t:?}");
        assert_eq!(a["tokens"], b["tokens"], "{t:?}");
        assert!(a["ids"].as_array().unwrap().len() > 1, "{t:?}");
    }

    let n = docs_dir(&t.join("build"));
    let out = run_ok(
        quern()
            .args(["tokenize", "--json", "--seq-len", "64", "--corpus"])
            .arg(t.join("build"))
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(t.join("tok")),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["accounting"]["input"], n as u64);
    assert_eq!(report["accounting"]["kept"], n as u64);
    assert_eq!(report["splits"]["val"]["documents"], (n / 4) as u64);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("tok/train/meta.json")).unwrap()).unwrap();
    assert_eq!(meta["seq_len"], 64);
    assert_eq!(meta["objective"], "clm");

    // `quern sql` over the output: `tokens` rows carry their split, and `token_splits` has
    // each split's counts from meta.json; both agree with every split's meta.json.
    let sql = run_ok(
        quern()
            .arg("sql")
            .arg(
                "SELECT t.split, t.n, t.ids, s.sequences, s.tokens, s.documents, s.seq_len \
                 FROM (SELECT split, count(*) AS n, sum(cardinality(tokens)) AS ids \
                       FROM tokens GROUP BY split) t \
                 JOIN token_splits s ON t.split = s.split ORDER BY t.split",
            )
            .args(["--format", "json", "--corpus"])
            .arg(t.join("tok")),
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(sql.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let splits: Vec<&str> = rows.iter().map(|r| r["split"].as_str().unwrap()).collect();
    assert_eq!(splits, ["train", "val"]);
    for r in &rows {
        let split = r["split"].as_str().unwrap();
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(t.join("tok").join(split).join("meta.json")).unwrap(),
        )
        .unwrap();
        assert!(m["rows"].as_u64().unwrap() > 0, "{split}");
        assert_eq!(r["n"], m["rows"], "{split}: sequences in tokens");
        assert_eq!(r["sequences"], m["rows"], "{split}");
        assert_eq!(r["tokens"], m["tokens"], "{split}");
        assert_eq!(r["documents"], m["documents"], "{split}");
        assert_eq!(r["seq_len"], 64);
        // Packed rows hold seq_len + 1 ids each.
        assert_eq!(
            r["ids"].as_u64().unwrap(),
            m["rows"].as_u64().unwrap() * 65,
            "{split}"
        );
    }
    assert_eq!(rows[1]["documents"], (n / 4) as u64);

    // A different run into the same directory is refused with a way out.
    let err = run_err(
        quern()
            .args(["tokenize", "--seq-len", "32", "--corpus"])
            .arg(t.join("build"))
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(t.join("tok")),
    );
    assert!(err.contains("--force"), "{err}");
    let err = run_err(
        quern()
            .args(["tokenize", "--objective", "gpt", "--corpus"])
            .arg(t.join("build"))
            .arg("--tokenizer")
            .arg(&tok)
            .arg("--out")
            .arg(t.join("x")),
    );
    assert!(err.contains("`gpt` is not one of"), "{err}");

    run_ok(
        quern()
            .args(["tokenize", "export", "--format", "nanogpt", "--input"])
            .arg(t.join("tok"))
            .arg("--out")
            .arg(t.join("nano")),
    );
    let check = r#"
import json, sys, numpy as np, pyarrow.parquet as pq
meta = json.load(open(sys.argv[1] + "/train/meta.json"))
rows = [r for s in meta["shards"] for r in pq.read_table(sys.argv[1] + "/train/" + s["file"]).column("tokens").to_pylist()]
flat = [t for r in rows for t in r if t != meta["pad_id"]]
data = np.memmap(sys.argv[2] + "/train.bin", dtype=np.uint16, mode="r")
assert data.tolist() == flat, (len(data), len(flat))
assert len(flat) == meta["tokens"], (len(flat), meta["tokens"])
print(len(flat))
"#;
    let out = run_ok(
        std::process::Command::new(python())
            .args(["-c", check])
            .arg(t.join("tok"))
            .arg(t.join("nano")),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap()
            > 1000
    );
}

/// A relative `tokenizer` path in a `--config` file is relative to the file, not to the
/// working directory (issue 19: every path in a config file resolves against that file).
#[test]
fn a_config_file_path_resolves_against_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (conf, elsewhere) = (t.join("conf"), t.join("elsewhere"));
    std::fs::create_dir_all(&elsewhere).unwrap();
    run_ok(
        quern()
            .args(["tokenizer", "train", "--vocab-size", "600", "--out"])
            .arg(conf.join("tok/tokenizer.json"))
            .arg("--input")
            .arg(fixture("corpus/mixed.jsonl")),
    );
    std::fs::write(
        conf.join("tokenize.toml"),
        "[tokenize]\ntokenizer = \"tok/tokenizer.json\"\nseq_len = 64\n",
    )
    .unwrap();
    docs_dir(&t.join("build"));
    run_ok(
        quern()
            .args(["tokenize", "--json", "--corpus"])
            .arg(t.join("build"))
            .arg("--config")
            .arg(conf.join("tokenize.toml"))
            .arg("--out")
            .arg(t.join("out"))
            .current_dir(&elsewhere),
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.join("out/train/meta.json")).unwrap()).unwrap();
    assert_eq!(meta["seq_len"], 64);
}
