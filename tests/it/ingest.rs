//! `quern ingest` end to end: a real corpus with planted bad records accounted for record by
//! record, resume and refusal, read-back by pyarrow and DuckDB, and the parquet-testing
//! files (good and bad).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, UInt64Type};
use quern_core::manifest::Manifest;
use quern_core::shard::read_table;

use crate::common::{fixture, python, quern, run_err, run_ok, tree};

fn ingest() -> Command {
    let mut c = quern();
    c.arg("ingest");
    c
}

/// Rows of a table directory as (column name → values) maps, one per row.
fn rows(dir: &Path) -> Vec<BTreeMap<String, Option<String>>> {
    let batches: Vec<RecordBatch> = read_table(dir).unwrap();
    let mut out = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let mut row = BTreeMap::new();
            for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                let v = if c.is_null(i) {
                    None
                } else if c.data_type() == &DataType::UInt64 {
                    Some(c.as_primitive::<UInt64Type>().value(i).to_string())
                } else {
                    Some(c.as_string::<i32>().value(i).to_string())
                };
                row.insert(f.name().clone(), v);
            }
            out.push(row);
        }
    }
    out
}

/// What a planted line should become.
enum Want {
    Doc(String),
    Quarantine(&'static str),
}

/// Splits the real corpus into two files with the same name in different folders, planting
/// one bad record of each kind, and returns what every line should become.
fn planted(dir: &Path) -> BTreeMap<(String, u64), Want> {
    let lines: Vec<String> = std::fs::read_to_string(fixture("corpus/mixed.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(lines.len() > 400);
    let bad: [(&[u8], &'static str); 7] = [
        (b"{\"text\": \"cut short", "invalid JSON"),
        (b"{\"text\": \"caf\xe9 latin-1\"}", "invalid UTF-8"),
        (
            b"{\"body\": \"no text field\"}",
            "missing text field `text`",
        ),
        (b"{\"text\": null, \"source\": \"x\"}", "is null"),
        (b"{\"text\": [\"a\", \"list\"]}", "is an array"),
        (b"\"just a string\"", "expected a JSON object"),
        (b"{\"text\": 3.5}", "is a number"),
    ];
    let mut want = BTreeMap::new();
    let half = lines.len() / 2;
    for (part, (name, range)) in [
        ("a/corpus.jsonl", 0..half),
        ("b/corpus.jsonl", half..lines.len()),
    ]
    .into_iter()
    .enumerate()
    {
        let mut bytes: Vec<u8> = Vec::new();
        let mut line_no = 0u64;
        for (k, l) in lines[range].iter().enumerate() {
            if k % 29 == 3 {
                let (raw, why) = bad[(k / 29 + part * 3) % bad.len()];
                bytes.extend_from_slice(raw);
                bytes.push(b'\n');
                line_no += 1;
                want.insert((name.to_string(), line_no), Want::Quarantine(why));
            }
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
            line_no += 1;
            want.insert(
                (name.to_string(), line_no),
                Want::Doc(v["text"].as_str().unwrap().to_string()),
            );
        }
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &bytes).unwrap();
    }
    want
}

#[test]
fn real_corpus_with_planted_bad_records_is_accounted_for_record_by_record() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    let want = planted(&input);
    let out = d.path().join("out");
    let o = run_ok(
        ingest()
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(["--batch-rows", "50"]),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);

    let docs = rows(&out.join("docs"));
    let quar = rows(&out.join("quarantine"));
    let mut seen = BTreeMap::new();
    for r in &docs {
        let id = r["id"].clone().unwrap();
        let (name, line) = id.rsplit_once(':').unwrap();
        let key = (name.to_string(), line.parse::<u64>().unwrap());
        match want.get(&key) {
            Some(Want::Doc(text)) => assert_eq!(r["text"].as_deref(), Some(text.as_str()), "{id}"),
            _ => panic!("document {id} was not expected"),
        }
        // The corpus's own `id` and other fields are kept in meta; source comes from the record.
        let meta: serde_json::Value = serde_json::from_str(r["meta"].as_deref().unwrap()).unwrap();
        assert!(
            meta.get("id").is_some() && meta.get("source").is_some(),
            "{meta}"
        );
        assert_eq!(meta["source"].as_str(), r["source"].as_deref());
        assert!(seen.insert(key, ()).is_none(), "{id} twice");
    }
    for r in &quar {
        let file = r["file"].clone().unwrap();
        let name = if file.contains("/a/") {
            "a/corpus.jsonl"
        } else {
            "b/corpus.jsonl"
        };
        let key = (
            name.to_string(),
            r["line"].as_deref().unwrap().parse::<u64>().unwrap(),
        );
        let err = r["error"].clone().unwrap();
        match want.get(&key) {
            Some(Want::Quarantine(why)) => {
                assert!(err.contains(why), "{key:?}: {err} should say {why}")
            }
            _ => panic!("quarantined {key:?} ({err}) was not expected"),
        }
        assert!(r["byte_offset"].is_some() && r["raw"].is_some());
        assert!(
            seen.insert(key, ()).is_none(),
            "{file}:{:?} twice",
            r["line"]
        );
    }
    let missing: Vec<_> = want.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "records neither ingested nor quarantined: {missing:?}"
    );
    let n_bad = want
        .values()
        .filter(|w| matches!(w, Want::Quarantine(_)))
        .count();
    assert_eq!(quar.len(), n_bad);
    assert!(n_bad >= 14);

    let m = Manifest::load(&out).unwrap().unwrap();
    assert!(m.complete);
    let acc = m.accounting.unwrap();
    assert_eq!(
        (
            acc.input as usize,
            acc.kept as usize,
            acc.quarantined as usize
        ),
        (want.len(), docs.len(), n_bad)
    );
    assert!(
        stdout.contains(&format!(
            "{:>12} = {:>12} + {:>12}",
            want.len(),
            docs.len(),
            n_bad
        )),
        "{stdout}"
    );

    // A rerun of the same ingest skips every unit and changes nothing.
    let before = tree(&out);
    let o = run_ok(
        ingest()
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(["--batch-rows", "50"]),
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 already committed"));
    assert_eq!(tree(&out), before);
    // A different ingest into the same directory is refused, unless --force.
    let e = run_err(
        ingest()
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(["--source", "other"]),
    );
    assert!(
        e.contains("different ingest run") && e.contains("--force"),
        "{e}"
    );
    run_ok(
        ingest()
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(["--source", "other", "--force"]),
    );
    assert!(rows(&out.join("docs"))
        .iter()
        .all(|r| r["source"].as_deref() == Some("other")));
}

#[test]
fn output_is_deterministic_and_strict_stops_at_the_first_bad_record() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    planted(&input);
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    run_ok(ingest().arg(&input).arg("--out").arg(&a));
    run_ok(
        ingest()
            .arg(input.join("b"))
            .arg(input.join("a"))
            .arg("--out")
            .arg(&b),
    );
    let (ta, tb) = (tree(&a), tree(&b));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, v) in &ta {
        if k.ends_with(".parquet") {
            assert!(v == &tb[k], "{k} differs");
        }
    }
    let e = run_err(
        ingest()
            .arg(&input)
            .arg("--out")
            .arg(d.path().join("s"))
            .arg("--strict"),
    );
    assert!(
        e.contains("corpus.jsonl:4") && e.contains("--strict"),
        "{e}"
    );
}

#[test]
fn truncated_gzip_keeps_what_was_read_and_fails_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    // gzip(1) rather than a Rust encoder: the quern package does not depend on flate2.
    let gz = run_ok(
        Command::new("gzip")
            .arg("-c")
            .arg(fixture("corpus/mixed.jsonl")),
    )
    .stdout;
    let p = d.path().join("cut.jsonl.gz");
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    let out = d.path().join("out");
    let o = ingest().arg(&p).arg("--out").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cut.jsonl.gz") && err.contains("could not be read to the end"),
        "{err}"
    );
    let docs = rows(&out.join("docs"));
    let quar = rows(&out.join("quarantine"));
    assert!(!docs.is_empty() && docs.len() < 435, "{}", docs.len());
    assert_eq!(quar.len(), 1);
    assert!(quar[0]["error"].as_deref().unwrap().contains("broke"));
    assert!(!Manifest::load(&out).unwrap().unwrap().complete);
}

#[test]
fn pyarrow_and_duckdb_read_back_the_same_rows() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    planted(&input);
    let out = d.path().join("out");
    run_ok(ingest().arg(&input).arg("--out").arg(&out));
    let py = python();
    let have = Command::new(&py)
        .args(["-c", "import pyarrow, duckdb"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "pyarrow/duckdb missing in {}: run scripts/setup.sh --test",
            py.display()
        );
        eprintln!(
            "skipping: pyarrow/duckdb missing in {} (run scripts/setup.sh --test)",
            py.display()
        );
        return;
    }
    // Each client reads every row; rows are sorted by their first two columns on both sides.
    let script = r#"
import sys, json
import pyarrow.parquet as pq, duckdb
d = sys.argv[1]
cols = {"docs": ["id", "text", "source", "meta"], "quarantine": ["file", "line", "byte_offset", "error", "raw", "source"]}
out = {}
for t, cs in cols.items():
    tab = pq.read_table(f"{d}/{t}")
    pa_rows = sorted(([r[c] for c in cs] for r in tab.to_pylist()), key=lambda r: (r[0], r[1]))
    duck = duckdb.sql(f"SELECT {', '.join(cs)} FROM read_parquet('{d}/{t}/*.parquet') ORDER BY 1, 2").fetchall()
    out[t] = {"pyarrow": pa_rows, "duckdb": [list(r) for r in duck]}
print(json.dumps(out))
"#;
    let o = run_ok(Command::new(&py).args(["-c", script]).arg(&out));
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for t in ["docs", "quarantine"] {
        let r = rows(&out.join(t));
        let cols: &[&str] = if t == "docs" {
            &["id", "text", "source", "meta"]
        } else {
            &["file", "line", "byte_offset", "error", "raw", "source"]
        };
        let mut want: Vec<Vec<serde_json::Value>> = r
            .iter()
            .map(|row| {
                cols.iter()
                    .map(|c| match (&row[*c], *c) {
                        (None, _) => serde_json::Value::Null,
                        (Some(v), "line" | "byte_offset") => {
                            serde_json::Value::from(v.parse::<u64>().unwrap())
                        }
                        (Some(v), _) => serde_json::Value::from(v.as_str()),
                    })
                    .collect()
            })
            .collect();
        want.sort_by_key(|r| key(r));
        assert!(want.len() > 10, "{t}: {} rows", want.len());
        let want = serde_json::Value::from(want);
        assert_eq!(
            got[t]["pyarrow"], want,
            "{t}: pyarrow reads different rows than quern wrote"
        );
        assert_eq!(
            got[t]["duckdb"], want,
            "{t}: DuckDB reads different rows than quern wrote"
        );
    }
}

/// Sort key of a row: its first two columns (id and text, or file and line), compared the
/// way Python and DuckDB compare them (strings by code point, numbers by value).
fn key(r: &[serde_json::Value]) -> (Vec<u32>, Vec<u32>, u64) {
    let s = |v: &serde_json::Value| {
        v.as_str()
            .map(|s| s.chars().map(|c| c as u32).collect())
            .unwrap_or_default()
    };
    (s(&r[0]), s(&r[1]), r[1].as_u64().unwrap_or(0))
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    v.sort();
    v
}

/// A string column of the file (the test picks the text field per file), if its footer reads.
fn string_column(p: &Path) -> Option<String> {
    let f = std::fs::File::open(p).ok()?;
    let b = std::panic::catch_unwind(|| {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
    })
    .ok()?
    .ok()?;
    b.schema()
        .fields()
        .iter()
        .find(|f| {
            matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Binary
            )
        })
        .map(|f| f.name().clone())
}

#[test]
fn every_parquet_testing_file_ingests_or_fails_with_a_clear_error() {
    let files = parquet_files(&fixture("parquet-testing/data"));
    assert!(files.len() > 50);
    let d = tempfile::tempdir().unwrap();
    let (mut ok, mut failed) = (0, 0);
    for (i, p) in files.iter().enumerate() {
        let field = string_column(p);
        let out = d.path().join(format!("o{i}"));
        let o = ingest()
            .arg(p)
            .arg("--out")
            .arg(&out)
            .args(["--text-field", field.as_deref().unwrap_or("text")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        match o.status.code() {
            Some(0) => {
                ok += 1;
                let acc = Manifest::load(&out).unwrap().unwrap().accounting.unwrap();
                assert_eq!(acc.input, acc.kept + acc.quarantined, "{}", p.display());
            }
            Some(2) => {
                failed += 1;
                assert!(
                    err.contains(&p.display().to_string()),
                    "{}: the error does not name the file: {err}",
                    p.display()
                );
                if field.is_none() {
                    assert!(
                        err.contains("no column `text`")
                            || err.contains("not a readable Parquet file"),
                        "{err}"
                    );
                }
            }
            c => panic!("{}: exit {c:?} (a panic?)\n{err}", p.display()),
        }
    }
    assert!(ok > 20 && failed > 0, "ok {ok}, failed {failed}");
}

#[test]
fn every_bad_data_file_fails_cleanly() {
    let files = parquet_files(&fixture("parquet-testing/bad_data"));
    assert!(files.len() >= 5);
    let d = tempfile::tempdir().unwrap();
    for (i, p) in files.iter().enumerate() {
        let field = string_column(p);
        let out = d.path().join(format!("o{i}"));
        let o = ingest()
            .arg(p)
            .arg("--out")
            .arg(&out)
            .args(["--text-field", field.as_deref().unwrap_or("text")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}: expected a clean error\n{err}",
            p.display()
        );
        assert!(
            err.contains(&p.display().to_string()),
            "{}: {err}",
            p.display()
        );
    }
}
