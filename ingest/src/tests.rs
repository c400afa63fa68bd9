//! Reader tests: every format, every kind of bad record and broken file, and the
//! parquet-testing corpus (good and bad files), through the public API.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, ListArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, UInt64Type};
use quern_core::Result;

use super::*;

/// A quarantined row: line, byte offset, error, raw.
type QRow = (Option<u64>, Option<u64>, String, Option<String>);

/// Everything a read produced, flattened into rows.
#[derive(Default, Debug)]
struct Out {
    ids: Vec<String>,
    texts: Vec<String>,
    sources: Vec<String>,
    metas: Vec<Option<String>>,
    quarantine: Vec<QRow>,
    chunks: usize,
    max_chunk_rows: usize,
    bytes: u64,
}

fn collect(path: &Path, opts: &IngestOptions) -> (Out, Result<FileCounts>) {
    let mut out = Out::default();
    let res = read_file(path, opts, &mut |c: Chunk| {
        let d = &c.docs;
        let s = |i: usize| d.column(i).as_string::<i32>().clone();
        out.ids.extend(s(0).iter().map(|v| v.unwrap().to_string()));
        out.texts
            .extend(s(1).iter().map(|v| v.unwrap().to_string()));
        out.sources
            .extend(s(2).iter().map(|v| v.unwrap().to_string()));
        out.metas.extend(s(3).iter().map(|v| v.map(str::to_string)));
        let q = &c.quarantine;
        let line = q.column(1).as_primitive::<UInt64Type>();
        let off = q.column(2).as_primitive::<UInt64Type>();
        let err = q.column(3).as_string::<i32>();
        let raw = q.column(4).as_string::<i32>();
        for i in 0..q.num_rows() {
            out.quarantine.push((
                line.is_valid(i).then(|| line.value(i)),
                off.is_valid(i).then(|| off.value(i)),
                err.value(i).to_string(),
                raw.is_valid(i).then(|| raw.value(i).to_string()),
            ));
        }
        out.chunks += 1;
        out.max_chunk_rows = out.max_chunk_rows.max(d.num_rows() + q.num_rows());
        out.bytes += c.bytes;
        Ok(())
    });
    (out, res)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A JSONL of real-looking prose (Project Gutenberg's public-domain "Pride and Prejudice",
/// opening sentences) with one bad record of each kind.
const JSONL: &str = concat!(
    r#"{"text": "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.", "url": "gutenberg/1342", "n": 1}"#,
    "\n",
    r#"{"text": "However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families.", "source": "austen"}"#,
    "\n",
    "\n",
    r#"{"text": "\"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that Netherfield Park is let at last?\""}"#,
    "\n",
    r#"{"text": "Mr. Bennet replied that he had not.", "#,
    "\n",
    r#"{"title": "no text here"}"#,
    "\n",
    r#"{"text": null}"#,
    "\n",
    r#"{"text": "But it is," returned she; "for Mrs. Long has just been here."}"#,
    "\n",
);

#[test]
fn jsonl_plain_gz_and_zst_read_the_same_and_quarantine_bad_lines() {
    let d = tempfile::tempdir().unwrap();
    let plain = write(d.path(), "austen.jsonl", JSONL.as_bytes());
    let gzp = write(d.path(), "austen.jsonl.gz", &gz(JSONL.as_bytes()));
    let zst = write(
        d.path(),
        "austen.jsonl.zst",
        &zstd::encode_all(JSONL.as_bytes(), 3).unwrap(),
    );
    let opts = IngestOptions::default();
    let (a, ca) = collect(&plain, &opts);
    let ca = ca.unwrap();
    assert_eq!(
        a.ids,
        ["austen.jsonl:1", "austen.jsonl:2", "austen.jsonl:4"]
    );
    assert_eq!(a.sources, ["austen", "austen", "austen"]);
    assert!(a.texts[2].starts_with("\"My dear Mr. Bennet,\""));
    assert_eq!(
        a.metas[0].as_deref(),
        Some(r#"{"url":"gutenberg/1342","n":1}"#)
    );
    let lines: Vec<u64> = a.quarantine.iter().map(|q| q.0.unwrap()).collect();
    assert_eq!(lines, [5, 6, 7, 8], "{:?}", a.quarantine);
    assert!(a.quarantine[0].2.contains("invalid JSON"));
    assert!(a.quarantine[1].2.contains("missing text field `text`"));
    assert!(a.quarantine[2].2.contains("is null"));
    assert_eq!(
        a.quarantine[1].3.as_deref(),
        Some(r#"{"title": "no text here"}"#)
    );
    // Byte offsets point at the start of the line.
    let off = a.quarantine[1].1.unwrap() as usize;
    assert!(JSONL[off..].starts_with(r#"{"title""#));
    assert_eq!((ca.records, ca.ingested, ca.quarantined), (7, 3, 4));
    assert_eq!(a.bytes, ca.bytes);
    for p in [&gzp, &zst] {
        let (b, cb) = collect(p, &opts);
        let cb = cb.unwrap();
        let stem_ids: Vec<String> = b
            .ids
            .iter()
            .map(|i| i.split_once(':').unwrap().1.to_string())
            .collect();
        assert_eq!(stem_ids, ["1", "2", "4"]);
        assert_eq!(b.texts, a.texts);
        assert_eq!(b.metas, a.metas);
        assert_eq!(b.sources, a.sources, "the stem drops .jsonl.gz");
        assert_eq!(b.quarantine, a.quarantine);
        assert_eq!((cb.records, cb.ingested, cb.quarantined), (7, 3, 4));
        assert_eq!(b.bytes, std::fs::metadata(p).unwrap().len());
    }
}

#[test]
fn options_change_ids_sources_and_text_field() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "x.ndjson",
        b"{\"body\":\"one\",\"key\":\"k1\",\"source\":\"s\"}\n{\"body\":\"two\",\"key\":2}\n",
    );
    let opts = IngestOptions::default()
        .with_text_field("body")
        .with_id_field("key")
        .with_source("forced");
    let (o, c) = collect(&p, &opts);
    c.unwrap();
    assert_eq!(o.ids, ["k1", "2"]);
    assert_eq!(o.texts, ["one", "two"]);
    assert_eq!(o.sources, ["forced", "forced"]);
    assert_eq!(o.metas, [Some(r#"{"source":"s"}"#.to_string()), None]);
    let e = read_file(&p, &opts.clone().with_text_field(""), &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("text_field"), "{e}");
}

#[test]
fn strict_stops_at_the_first_bad_record_naming_its_line() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "a.jsonl", JSONL.as_bytes());
    let e = read_file(&p, &IngestOptions::default().with_strict(true), &mut |_| {
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("a.jsonl:5") && e.contains("invalid JSON") && e.contains("--strict"),
        "{e}"
    );
}

#[test]
fn batches_are_bounded_by_batch_rows() {
    let d = tempfile::tempdir().unwrap();
    let mut s = String::new();
    for i in 0..5000 {
        s.push_str(&format!("{{\"text\": \"line {i} of a long file\"}}\n"));
        if i % 1000 == 7 {
            s.push_str("{broken\n");
        }
    }
    let p = write(d.path(), "big.jsonl", s.as_bytes());
    let (o, c) = collect(&p, &IngestOptions::default().with_batch_rows(300));
    let c = c.unwrap();
    assert_eq!((c.ingested, c.quarantined), (5000, 5));
    assert!(o.max_chunk_rows <= 300, "{}", o.max_chunk_rows);
    assert!(o.chunks >= 5005 / 300);
    // Order and ids survive parallel parsing.
    assert_eq!(o.texts[4321], "line 4321 of a long file");
    assert_eq!(o.ids[9], "big.jsonl:11", "line 9 is the first broken one");
}

#[test]
fn truncated_gzip_and_zstd_fail_naming_the_file_and_keep_what_was_read() {
    let d = tempfile::tempdir().unwrap();
    let mut s = String::new();
    for i in 0..20000 {
        s.push_str(&format!(
            "{{\"text\": \"document number {i} with some words to compress {}\"}}\n",
            i * 7919 % 10007
        ));
    }
    let full_gz = gz(s.as_bytes());
    let full_zst = zstd::encode_all(s.as_bytes(), 3).unwrap();
    for (name, full) in [("t.jsonl.gz", full_gz), ("t.jsonl.zst", full_zst)] {
        let p = write(d.path(), name, &full[..full.len() * 2 / 3]);
        let (o, res) = collect(&p, &IngestOptions::default().with_batch_rows(1000));
        let e = res.unwrap_err().to_string();
        assert!(
            e.contains(name) && e.contains("records before the failure"),
            "{e}"
        );
        assert!(
            !o.ids.is_empty() && o.ids.len() < 20000,
            "{name}: {} docs",
            o.ids.len()
        );
        // Documents before the break are complete and in order.
        for (i, t) in o.texts.iter().enumerate() {
            assert!(t.starts_with(&format!("document number {i} ")), "{t}");
        }
        let last = o.quarantine.last().expect("the break is quarantined");
        assert!(last.1.is_some() && last.2.contains("broke"), "{last:?}");
    }
}

#[test]
fn json_arrays_stream_elements_and_report_breaks() {
    let d = tempfile::tempdir().unwrap();
    let arr = br#"[
  {"text": "Call me Ishmael.", "tags": ["a", "]"]},
  {"text": "Some years ago\u2014never mind how long precisely", "nested": {"x": "{"}},
  42,
  {"text": 7},
  {"text": "having little or no money in my purse"}
]
"#;
    let p = write(d.path(), "moby.json", arr);
    let (o, c) = collect(&p, &IngestOptions::default().with_batch_rows(2));
    let c = c.unwrap();
    assert_eq!(o.ids, ["moby.json:1", "moby.json:2", "moby.json:5"]);
    assert_eq!(
        o.texts[1],
        "Some years ago\u{2014}never mind how long precisely"
    );
    assert_eq!(o.metas[0].as_deref(), Some(r#"{"tags":["a", "]"]}"#));
    assert_eq!(
        o.quarantine
            .iter()
            .map(|q| q.0.unwrap())
            .collect::<Vec<_>>(),
        [4, 5]
    );
    assert!(o.quarantine[0].2.contains("found a number"));
    assert_eq!((c.records, c.ingested, c.quarantined), (5, 3, 2));

    // A sequence of objects (JSONL in a .json file) and a single object read too.
    let p = write(
        d.path(),
        "seq.json.gz",
        &gz(b"{\"text\":\"a\"}\n{\"text\":\"b\"}"),
    );
    assert_eq!(collect(&p, &IngestOptions::default()).0.texts, ["a", "b"]);

    for (name, bytes, want) in [
        ("cut.json", &arr[..arr.len() / 2], "ends inside element"),
        ("open.json", &b"[{\"text\":\"a\"},"[..], "truncated"),
        (
            "junk.json",
            &b"[{\"text\":\"a\"}] x"[..],
            "after the end of the JSON array",
        ),
        (
            "nocomma.json",
            &b"[{\"text\":\"a\"} {\"text\":\"b\"}]"[..],
            "expected `,` or `]`",
        ),
    ] {
        let p = write(d.path(), name, bytes);
        let (o, res) = collect(&p, &IngestOptions::default());
        let e = res.unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(want), "{name}: {e}");
        assert!(o.quarantine.last().unwrap().2.contains(want));
    }
}

#[test]
fn csv_and_tsv_read_headers_quote_and_quarantine() {
    let d = tempfile::tempdir().unwrap();
    let csv = b"id,text,lang\n1,\"Hello, world\",en\n2,\"two\nlines\",en\n3,short\n4,\"bad \xff byte\",en\n5,last,fr\n";
    let p = write(d.path(), "c.csv", csv);
    let (o, c) = collect(&p, &IngestOptions::default().with_id_field("id"));
    let c = c.unwrap();
    assert_eq!(o.ids, ["1", "2", "5"]);
    assert_eq!(o.texts, ["Hello, world", "two\nlines", "last"]);
    assert_eq!(o.metas[2].as_deref(), Some(r#"{"lang":"fr"}"#));
    assert_eq!(
        o.quarantine
            .iter()
            .map(|q| q.0.unwrap())
            .collect::<Vec<_>>(),
        [5, 6]
    );
    assert!(o.quarantine[0].2.contains("2 fields, the header has 3"));
    assert!(o.quarantine[1].2.contains("`text` holds invalid UTF-8"));
    assert_eq!((c.records, c.ingested, c.quarantined), (5, 3, 2));

    let p = write(d.path(), "t.tsv", b"text\tauthor\n\"quoted\" as is\tX\n");
    let (o, _) = collect(&p, &IngestOptions::default());
    assert_eq!(o.texts, ["\"quoted\" as is"]);
    assert_eq!(o.ids, ["t.tsv:2"]);

    let e = read_file(
        &p,
        &IngestOptions::default().with_text_field("body"),
        &mut |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t.tsv") && e.contains("no column `body`") && e.contains("[text, author]"),
        "{e}"
    );
}

#[test]
fn text_files_are_one_document_each() {
    let d = tempfile::tempdir().unwrap();
    let a = write(
        d.path(),
        "poems/a.txt",
        "Tyger Tyger, burning bright,\nIn the forests of the night;\n".as_bytes(),
    );
    let b = write(d.path(), "poems/b.md", b"# Title\n\nok \xfe then");
    let (o, c) = collect(&a, &IngestOptions::default());
    c.unwrap();
    assert_eq!(o.ids, ["a.txt"]);
    assert_eq!(o.sources, ["poems"]);
    assert!(o.texts[0].starts_with("Tyger Tyger"));
    let (o, c) = collect(&b, &IngestOptions::default());
    assert_eq!(c.unwrap().quarantined, 1);
    assert_eq!(o.quarantine[0].0, Some(3));
    assert_eq!(o.quarantine[0].1, Some(12));
}

#[test]
fn parquet_any_schema_goes_to_meta_and_null_text_is_quarantined() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("p.parquet");
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), Some(2)]),
        None,
        Some(vec![]),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("num", DataType::Int64, true),
        Field::new("body", DataType::Utf8, true),
        Field::new("tags", list.data_type().clone(), true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![Some(10), Some(11), None])),
        Arc::new(StringArray::from(vec![Some("first"), None, Some("third")])),
        Arc::new(list),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let mut w =
        ::parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let (o, c) = collect(
        &p,
        &IngestOptions::default()
            .with_text_field("body")
            .with_batch_rows(2),
    );
    let c = c.unwrap();
    assert_eq!((c.records, c.ingested, c.quarantined), (6, 4, 2));
    assert_eq!(
        o.ids,
        ["p.parquet:1", "p.parquet:3", "p.parquet:4", "p.parquet:6"]
    );
    assert_eq!(o.metas[0].as_deref(), Some(r#"{"num":10,"tags":[1,2]}"#));
    assert_eq!(o.metas[1].as_deref(), Some(r#"{"num":null,"tags":[]}"#));
    assert_eq!(o.quarantine[0].0, Some(2));
    assert!(o.quarantine[0].2.contains("`body` is null"));
    assert!(o.max_chunk_rows <= 2);
    let (o, _) = collect(
        &p,
        &IngestOptions::default()
            .with_text_field("body")
            .with_id_field("num"),
    );
    assert_eq!(o.ids, ["10", "10"]);
    let e = read_file(&p, &IngestOptions::default(), &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.parquet") && e.contains("no column `text`") && e.contains("[body]"),
        "{e}"
    );
    let e = read_file(
        &p,
        &IngestOptions::default().with_text_field("num"),
        &mut |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`num` is Int64, expected a string column"),
        "{e}"
    );
}

/// Apache parquet-testing's files, vendored in `tests/data/parquet-testing/`.
fn parquet_testing() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/parquet-testing")
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

/// The first string column of a Parquet file, if its footer can be read.
fn string_column(p: &Path) -> Option<String> {
    let f = std::fs::File::open(p).ok()?;
    let b = catch_unwind(AssertUnwindSafe(|| {
        ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
    }))
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
fn every_parquet_testing_file_ingests_or_fails_with_a_specific_error() {
    let files = parquet_files(&parquet_testing().join("data"));
    assert!(files.len() > 50, "parquet-testing data not found");
    let (mut ok, mut failed) = (0, 0);
    for p in &files {
        let field = string_column(p);
        let opts = IngestOptions::default()
            .with_text_field(field.clone().unwrap_or_else(|| "text".into()))
            .with_batch_rows(1000);
        let res = catch_unwind(AssertUnwindSafe(|| collect(p, &opts)));
        let (o, res) = res.unwrap_or_else(|_| panic!("{} panicked", p.display()));
        match res {
            Ok(c) => {
                ok += 1;
                assert!(
                    field.is_some(),
                    "{} ingested without a string column",
                    p.display()
                );
                assert_eq!(c.records, c.ingested + c.quarantined);
                assert_eq!(o.ids.len() as u64, c.ingested);
                assert_eq!(o.quarantine.len() as u64, c.quarantined);
            }
            Err(e) => {
                failed += 1;
                let m = e.to_string();
                assert!(
                    m.contains(&p.display().to_string()),
                    "{}: error does not name the file: {m}",
                    p.display()
                );
                if field.is_none() {
                    assert!(
                        m.contains("no column `text`") || m.contains("not a readable Parquet file"),
                        "{m}"
                    );
                }
            }
        }
    }
    assert!(ok > 20 && failed > 0, "ok {ok}, failed {failed}");
}

#[test]
fn every_bad_data_file_fails_cleanly() {
    let files = parquet_files(&parquet_testing().join("bad_data"));
    assert!(files.len() >= 5, "parquet-testing bad_data not found");
    for p in &files {
        let field = string_column(p).unwrap_or_else(|| "text".into());
        let opts = IngestOptions::default().with_text_field(field);
        let res = catch_unwind(AssertUnwindSafe(|| collect(p, &opts)));
        let (o, res) = res.unwrap_or_else(|_| panic!("{} panicked", p.display()));
        let e = res
            .expect_err(&format!("{} read without error", p.display()))
            .to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(
            !o.quarantine.is_empty() || e.contains("no column"),
            "{}: the failure is quarantined: {e}",
            p.display()
        );
    }
}

/// Windows tools write UTF-8 with a byte-order mark, often with CRLF line endings: the BOM is
/// skipped by every text reader (JSONL plain and compressed, JSON arrays, CSV, text), so the
/// first record is read like the others, and byte offsets still count from the file's start.
#[test]
fn a_utf8_byte_order_mark_is_skipped_by_every_text_reader() {
    let d = tempfile::tempdir().unwrap();
    let bom = b"\xEF\xBB\xBF";
    let jsonl = b"{\"text\": \"first\"}\r\n{\"text\": \"second\"}\r\nnot json\r\n";
    let with_bom = [&bom[..], jsonl].concat();
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (
            write(d.path(), "w.jsonl", &with_bom),
            vec!["first", "second"],
        ),
        (
            write(d.path(), "w.jsonl.gz", &gz(&with_bom)),
            vec!["first", "second"],
        ),
        (
            write(
                d.path(),
                "w.json",
                &[&bom[..], b"[{\"text\": \"a\"}, {\"text\": \"b\"}]\r\n"].concat(),
            ),
            vec!["a", "b"],
        ),
        (
            write(
                d.path(),
                "w.csv",
                &[&bom[..], b"text,lang\r\nhello,en\r\n"].concat(),
            ),
            vec!["hello"],
        ),
        (
            write(d.path(), "w.txt", &[&bom[..], b"plain text\r\n"].concat()),
            vec!["plain text\r\n"],
        ),
    ];
    for (path, want) in cases {
        let (o, c) = collect(&path, &IngestOptions::default());
        let c = c.unwrap();
        assert_eq!(o.texts, want, "{}", path.display());
        let bad: Vec<&QRow> = o
            .quarantine
            .iter()
            .filter(|q| !q.2.contains("invalid JSON") || q.0 != Some(3))
            .collect();
        assert!(bad.is_empty(), "{}: {:?}", path.display(), o.quarantine);
        assert_eq!(c.ingested as usize, want.len());
    }
    // The bad third line's offset points at it in the file, BOM included.
    let (o, _) = collect(&d.path().join("w.jsonl"), &IngestOptions::default());
    let off = o.quarantine[0].1.unwrap() as usize;
    assert!(with_bom[off..].starts_with(b"not json"), "offset {off}");
}
