//! `quern sql` end to end: the binary over a corpus written with core's shard writer and
//! manifest from the real-text fixture `tests/data/corpus/mixed.jsonl` (its unreadable lines
//! go to `quarantine`, as ingest would put them).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use quern_core::manifest::{FileCounts, Manifest, UnitRecord};
use quern_core::schema::{cut_raw, doc_schema, quarantine_schema};
use quern_core::shard::{ShardOptions, ShardWriter};
use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/corpus/mixed.jsonl");

/// A readable document of the fixture.
struct Doc {
    id: String,
    text: String,
    source: String,
}

/// An unreadable line of the fixture.
struct Bad {
    line: u64,
    offset: u64,
    error: String,
}

/// Bad records planted among the real ones, as (line number before which it goes, bytes).
const PLANTED: [(usize, &[u8]); 4] = [
    (3, b"{\"id\": \"planted-1\", \"text\": 42}"),
    (50, b"{\"id\": \"planted-2\", \"text\": \"cut off"),
    (
        120,
        b"{\"id\": \"planted-3\", \"text\": \"caf\xe9 latin-1\"}",
    ),
    (200, b"{\"id\": \"planted-4\"}"),
];

/// Reads the fixture, with [`PLANTED`] bad records, as ingest would: one document per line
/// with a string `text`; anything else is quarantined with its line and byte offset.
fn read_fixture() -> (Vec<Doc>, Vec<(Bad, String)>) {
    let real = std::fs::read(FIXTURE).unwrap_or_else(|e| panic!("{FIXTURE}: {e}"));
    let mut lines: Vec<&[u8]> = real
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    for (at, bad) in PLANTED {
        lines.insert(at - 1, bad);
    }
    let (mut docs, mut bad) = (Vec::new(), Vec::new());
    let mut offset = 0u64;
    for (i, raw) in lines.iter().enumerate() {
        let line = i as u64 + 1;
        let start = offset;
        offset += raw.len() as u64 + 1;
        let parsed = std::str::from_utf8(raw)
            .map_err(|e| format!("invalid UTF-8: {e}"))
            .and_then(|s| serde_json::from_str::<Value>(s).map_err(|e| format!("bad JSON: {e}")))
            .and_then(|v| match (v.get("text"), v.get("source")) {
                (Some(Value::String(t)), Some(Value::String(s))) => {
                    let id = v
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("line:{line}"));
                    Ok(Doc {
                        id,
                        text: t.clone(),
                        source: s.clone(),
                    })
                }
                _ => Err("no string field `text`".to_string()),
            });
        match parsed {
            Ok(doc) => docs.push(doc),
            Err(error) => bad.push((
                Bad {
                    line,
                    offset: start,
                    error,
                },
                cut_raw(raw),
            )),
        }
    }
    assert!(
        docs.len() >= 100,
        "the fixture should hold real documents, found {}",
        docs.len()
    );
    assert_eq!(
        bad.iter().map(|(b, _)| b.line as usize).collect::<Vec<_>>(),
        PLANTED.map(|(at, _)| at),
        "exactly the planted records are bad"
    );
    (docs, bad)
}

/// Writes the fixture as a quern output directory: `docs` in several shards (so queries
/// span files), `quarantine`, and a manifest.
fn write_corpus(dir: &Path) -> (Vec<Doc>, Vec<Bad>) {
    let (docs, bad) = read_fixture();
    let opts = ShardOptions::default()
        .with_max_rows(docs.len() / 3 + 1)
        .with_row_group_rows(16);
    let mut w = ShardWriter::new(dir, "docs", "part-mixed", doc_schema(), opts.clone()).unwrap();
    let col = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let batch = RecordBatch::try_new(
        doc_schema(),
        vec![
            col(docs.iter().map(|d| d.id.as_str()).collect()),
            col(docs.iter().map(|d| d.text.as_str()).collect()),
            col(docs.iter().map(|d| d.source.as_str()).collect()),
            Arc::new(StringArray::from(vec![None::<&str>; docs.len()])),
        ],
    )
    .unwrap();
    w.write(&batch).unwrap();
    let doc_shards = w.finish().unwrap();
    assert!(doc_shards.len() >= 3, "docs split into several shards");

    let mut q =
        ShardWriter::new(dir, "quarantine", "part-mixed", quarantine_schema(), opts).unwrap();
    let qb = RecordBatch::try_new(
        quarantine_schema(),
        vec![
            col(vec![FIXTURE; bad.len()]),
            Arc::new(UInt64Array::from(
                bad.iter().map(|(b, _)| Some(b.line)).collect::<Vec<_>>(),
            )),
            Arc::new(UInt64Array::from(
                bad.iter().map(|(b, _)| Some(b.offset)).collect::<Vec<_>>(),
            )),
            col(bad.iter().map(|(b, _)| b.error.as_str()).collect()),
            Arc::new(StringArray::from(
                bad.iter()
                    .map(|(_, r)| Some(r.as_str()))
                    .collect::<Vec<_>>(),
            )),
            col(vec!["mixed"; bad.len()]),
        ],
    )
    .unwrap();
    q.write(&qb).unwrap();
    let q_shards = q.finish().unwrap();

    let mut m = Manifest::new("ingest", serde_json::json!({"inputs": [FIXTURE]}));
    let mut unit = UnitRecord::default();
    unit.tables.insert("docs".into(), doc_shards);
    unit.tables.insert("quarantine".into(), q_shards);
    unit.files.push(FileCounts {
        file: FIXTURE.into(),
        records: (docs.len() + bad.len()) as u64,
        ingested: docs.len() as u64,
        quarantined: bad.len() as u64,
        bytes: 0,
    });
    m.units.insert("00000".into(), unit);
    m.save(dir).unwrap();
    (docs, bad.into_iter().map(|(b, _)| b).collect())
}

fn quern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quern"))
}

/// Runs `quern sql QUERY --corpus DIR EXTRA...` with HOME in the corpus's parent.
fn sql(dir: &Path, query: &str, extra: &[&str]) -> Output {
    quern()
        .args(["sql", query, "--corpus"])
        .arg(dir)
        .args(extra)
        .env("HOME", dir.parent().unwrap())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "quern sql failed: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fresh() -> (tempfile::TempDir, PathBuf, Vec<Doc>, Vec<Bad>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let (docs, bad) = write_corpus(&dir);
    (tmp, dir, docs, bad)
}

#[test]
fn udfs_match_a_naive_reference_on_real_text() {
    let (_tmp, dir, docs, _) = fresh();
    let out = ok(&sql(
        &dir,
        "SELECT id, word_count(text) AS words, char_count(text) AS chars, xxh3(text) AS h, xxh3_hex(text) AS hx, \
         length(text) AS len FROM docs",
        &["--format", "json"],
    ));
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), docs.len());
    let mut non_ascii = 0;
    for r in &rows {
        let id = r["id"].as_str().unwrap();
        let d = docs
            .iter()
            .find(|d| d.id == id)
            .unwrap_or_else(|| panic!("unknown id {id}"));
        non_ascii += usize::from(!d.text.is_ascii());
        assert_eq!(
            r["words"].as_u64().unwrap(),
            d.text.split_whitespace().count() as u64,
            "word_count of {id}"
        );
        assert_eq!(
            r["chars"].as_u64().unwrap(),
            d.text.chars().count() as u64,
            "char_count of {id}"
        );
        assert_eq!(
            r["len"], r["chars"],
            "char_count agrees with DataFusion's length() on {id}"
        );
        let h = xxhash_rust::xxh3::xxh3_64(d.text.as_bytes());
        assert_eq!(r["h"].as_u64().unwrap(), h, "xxh3 of {id}");
        assert_eq!(
            r["hx"].as_str().unwrap(),
            format!("{h:016x}"),
            "xxh3_hex of {id}"
        );
    }
    assert!(non_ascii > 0, "the fixture should exercise non-ASCII text");
    // Literals go through the same functions.
    let out = ok(&sql(
        &dir,
        "SELECT word_count('a  b\tc') AS w, char_count('🦀é') AS c, xxh3_hex('') AS h",
        &["--format", "csv"],
    ));
    assert_eq!(out, "w,c,h\n3,2,2d06800538d394c2\n");
}

#[test]
fn every_format_writes_the_same_rows() {
    let (tmp, dir, docs, _) = fresh();
    let q = "SELECT id, word_count(text) AS words FROM docs ORDER BY id";
    let mut expected: Vec<(String, u64)> = docs
        .iter()
        .map(|d| (d.id.clone(), d.text.split_whitespace().count() as u64))
        .collect();
    expected.sort();

    let csv = ok(&sql(&dir, q, &["--format", "csv"]));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,words"));
    let got: Vec<(String, u64)> = lines
        .map(|l| {
            let (a, b) = l.rsplit_once(',').unwrap();
            (a.trim_matches('"').to_string(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(got, expected, "csv");

    let json = ok(&sql(&dir, q, &["--format", "json"]));
    let got: Vec<(String, u64)> = json
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["words"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected, "json");

    let table = ok(&sql(&dir, q, &["--format", "table"]));
    assert!(
        table.lines().nth(1).unwrap().contains("| id "),
        "header row: {table}"
    );
    for (id, words) in &expected {
        let row = table
            .lines()
            .find(|l| l.split('|').nth(1).map(str::trim) == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{id} missing from\n{table}"));
        assert_eq!(row.split('|').nth(2).unwrap().trim(), words.to_string());
    }

    let file = tmp.path().join("out.parquet");
    let out = sql(&dir, q, &["--format", "parquet"]);
    assert!(
        !out.status.success(),
        "parquet without --out must be refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
    ok(&sql(
        &dir,
        q,
        &["--format", "parquet", "--out", file.to_str().unwrap()],
    ));
    let batches: Vec<RecordBatch> = quern_core::shard::read_shard(&file, 1000)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut got = Vec::new();
    for b in &batches {
        assert_eq!(
            b.schema().field(0).data_type(),
            &arrow::datatypes::DataType::Utf8,
            "views are written as plain strings"
        );
        let ids = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let w = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            got.push((ids.value(i).to_string(), w.value(i) as u64));
        }
    }
    assert_eq!(got, expected, "parquet");
    // No temporary file is left beside the output.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".quern-sql-")),
        "{names:?}"
    );
}

#[test]
fn writes_are_refused_unless_allowed() {
    let (tmp, dir, docs, _) = fresh();
    let target = tmp.path().join("copy.csv");
    let copy = format!(
        "COPY (SELECT id FROM docs) TO '{}' STORED AS CSV",
        target.display()
    );
    for q in [
        copy.as_str(),
        "CREATE TABLE t AS SELECT * FROM docs",
        "CREATE VIEW v AS SELECT 1",
        "INSERT INTO docs SELECT * FROM docs",
        "DROP TABLE docs",
    ] {
        let out = sql(&dir, q, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{q} must fail: {err}");
        assert!(
            err.contains("read-only") && err.contains("--allow-write"),
            "{q}: {err}"
        );
    }
    assert!(!target.exists(), "a refused COPY wrote nothing");
    // The corpus is untouched.
    let n = ok(&sql(
        &dir,
        "SELECT count(*) AS n FROM docs",
        &["--format", "csv"],
    ));
    assert_eq!(n, format!("n\n{}\n", docs.len()));
    // Allowed, COPY writes the file.
    ok(&sql(&dir, &copy, &["--allow-write"]));
    let text = std::fs::read_to_string(&target).unwrap();
    assert_eq!(
        text.lines().count(),
        docs.len() + 1,
        "header and one line per document"
    );
}

#[test]
fn quarantine_and_missing_tables_are_queryable() {
    let (_tmp, dir, _, bad) = fresh();
    let out = ok(&sql(
        &dir,
        "SELECT line, byte_offset, error FROM quarantine ORDER BY line",
        &["--format", "json"],
    ));
    let got: Vec<(u64, u64, String)> = out
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["byte_offset"].as_u64().unwrap(),
                v["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, u64, String)> = bad
        .iter()
        .map(|b| (b.line, b.offset, b.error.clone()))
        .collect();
    assert_eq!(got, want);
    // `rejected` and `tokens` have no shards in an ingest: empty, with their contract columns.
    let out = ok(&sql(
        &dir,
        "SELECT (SELECT count(*) FROM rejected) AS r, (SELECT count(reason) FROM rejected) AS reasons, (SELECT count(*) FROM tokens) AS t",
        &["--format", "csv"],
    ));
    assert_eq!(out, "r,reasons,t\n0,0,0\n");
}

#[test]
fn only_the_manifest_shards_are_read() {
    let (_tmp, dir, docs, _) = fresh();
    // A stray copy of a shard, as a killed run could leave, is not part of the table.
    std::fs::copy(
        dir.join("docs/part-mixed-00000.parquet"),
        dir.join("docs/part-mixed-99999.parquet"),
    )
    .unwrap();
    let n = ok(&sql(
        &dir,
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM docs",
        &["--format", "csv"],
    ));
    assert_eq!(n, format!("n,d\n{0},{0}\n", docs.len()));
    // A listed shard that has gone is an error naming it.
    std::fs::remove_file(dir.join("docs/part-mixed-00001.parquet")).unwrap();
    let out = sql(&dir, "SELECT 1", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("part-mixed-00001.parquet") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn errors_show_the_query_and_the_cause() {
    let (_tmp, dir, _, _) = fresh();
    let out = sql(&dir, "SELECT no_such_column FROM docs", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("query failed") && err.contains("SELECT no_such_column FROM docs"),
        "{err}"
    );
    assert!(
        err.contains("no_such_column"),
        "DataFusion's cause is shown: {err}"
    );
    let out = sql(&dir.join("nope"), "SELECT 1", &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a quern output directory"));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let (_tmp, dir, _, _) = fresh();
    // Far more output than a pipe buffers, so the writer meets the closed pipe.
    let mut child = quern()
        .args([
            "sql",
            "SELECT a.text FROM docs a, docs b",
            "--format",
            "csv",
            "--corpus",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"text\n"));
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {} stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shell_runs_statements_and_commands() {
    let (tmp, dir, docs, bad) = fresh();
    let mut child = quern()
        .args(["sql", "--format", "csv", "--corpus"])
        .arg(&dir)
        .env("HOME", tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = ".tables\n.schema quarantine\nSELECT count(*)\n  AS n FROM docs;\nSELECT nope;\n.bogus\nDROP TABLE docs;\nSELECT count(*) AS q FROM quarantine;\n.quit\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let docs_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("docs "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(docs_line.contains(&docs.len().to_string()), "{docs_line}");
    assert!(
        stdout.contains("byte_offset") && stdout.contains("UInt64"),
        ".schema: {stdout}"
    );
    assert!(
        stdout.contains(&format!("n\n{}\n", docs.len())),
        "multi-line statement: {stdout}"
    );
    assert!(
        stdout.contains(&format!("q\n{}\n", bad.len())),
        "the shell goes on after errors: {stdout}"
    );
    assert!(stderr.contains("nope"), "{stderr}");
    assert!(stderr.contains("unknown command `.bogus`"), "{stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
    let history = std::fs::read_to_string(tmp.path().join(".quern_history")).unwrap();
    assert!(
        history.contains("FROM quarantine"),
        "history kept: {history}"
    );
}
