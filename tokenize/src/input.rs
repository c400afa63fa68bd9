//! Finding documents to tokenize or to train a tokenizer on.
//!
//! Users point quern at whatever they have: a build or ingest output directory (its
//! `manifest.json` lists the committed `docs` shards), a directory of Parquet files, a
//! single Parquet file, or a JSONL file (`.jsonl`/`.ndjson`: records such as
//! `{"messages": [...]}` that `quern ingest` cannot take, since they have no text field, and
//! for tokenizer training `{"text": ...}` records). This module turns those into a list of
//! input files read as Arrow batches ([`read_columns`]: a JSONL record's string fields are
//! text columns, its other fields their JSON text), or a stream of texts.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use quern_core::error::{Context, IoContext, Place};
use quern_core::manifest::Manifest;
use quern_core::shard::list_shards;
use quern_core::{Error, Result};

/// The Parquet shards of the `docs` table at `path`: a quern output directory (by its
/// manifest), a directory of Parquet files (or its `docs/` subdirectory), or one file.
pub fn resolve_docs(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "parquet") || is_jsonl(path) {
            return Ok(vec![path.to_path_buf()]);
        }
        return Err(Error::bad_input(
            Place::file(path),
            "expected a .parquet or .jsonl file, or a directory of Parquet files",
        ));
    }
    if !path.is_dir() {
        return Err(Error::usage(format!("{} does not exist", path.display())));
    }
    if let Some(m) = Manifest::load(path)? {
        let shards = m.tables().get("docs").cloned().unwrap_or_default();
        if shards.is_empty() {
            return Err(Error::usage(format!(
                "{} is a quern `{}` output without a `docs` table; point at a build or ingest output",
                path.display(),
                m.kind
            )));
        }
        return Ok(shards.iter().map(|s| path.join(&s.file)).collect());
    }
    let mut shards = list_shards(path)?;
    if shards.is_empty() {
        shards = list_shards(&path.join("docs"))?;
    }
    if shards.is_empty() {
        return Err(Error::usage(format!(
            "{} holds no Parquet files (nor does its docs/ directory)",
            path.display()
        )));
    }
    Ok(shards)
}

/// A column as a UTF-8 string array (casting LargeUtf8 and Utf8View).
pub fn utf8_column(
    batch: &RecordBatch,
    name: &str,
    path: &Path,
) -> Result<Option<arrow::array::ArrayRef>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    if col.data_type() == &DataType::Utf8 {
        return Ok(Some(col.clone()));
    }
    match col.data_type() {
        DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
            Ok(Some(cast(col, &DataType::Utf8)?))
        }
        other => Err(Error::bad_input(
            Place::file(path),
            format!("column `{name}` is {other}, not text"),
        )),
    }
}

/// Whether `path` names a JSONL file (`.jsonl` or `.ndjson`).
pub fn is_jsonl(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "jsonl" || e == "ndjson")
}

/// Reads a Parquet file's batches, keeping only the named columns it has; or a JSONL file's
/// records as batches of text columns, one per named field its records have (a string field
/// is its text, any other value its JSON text, a missing field null).
pub fn read_columns(
    path: &Path,
    columns: &[&str],
    batch_rows: usize,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
    if is_jsonl(path) {
        return jsonl_batches(path, columns, batch_rows);
    }
    let file = File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading the Parquet footer of {}", path.display()))?;
    let schema = builder.schema().clone();
    let roots: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| columns.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(batch_rows.max(1))
        .build()
        .with_context(|| format!("opening {}", path.display()))?;
    let path = path.to_path_buf();
    Ok(Box::new(reader.map(move |b| {
        b.with_context(|| format!("reading {}", path.display()))
    })))
}

/// The JSON objects of a JSONL file with their line numbers (blank lines skipped, a
/// byte-order mark at the start ignored); a line that is not a JSON object is an error naming
/// the file and line.
fn jsonl_records(
    path: &Path,
) -> Result<impl Iterator<Item = Result<(u64, serde_json::Map<String, serde_json::Value>)>>> {
    let f = File::open(path).at(path)?;
    let path = path.to_path_buf();
    let lines = BufReader::with_capacity(1 << 20, f).lines().enumerate();
    Ok(lines.filter_map(move |(i, line)| {
        let line = match line {
            Ok(l) => l,
            Err(e) => return Some(Err(Error::io(&path, e))),
        };
        let text = if i == 0 {
            quern_core::text::strip_bom(&line)
        } else {
            &line
        };
        if text.trim().is_empty() {
            return None;
        }
        let place = || Place::file(&path).with_line(i as u64 + 1);
        Some(match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(m)) => Ok((i as u64 + 1, m)),
            Ok(_) => Err(Error::bad_input(place(), "not a JSON object")),
            Err(e) => Err(Error::bad_input(place(), format!("not JSON: {e}"))),
        })
    }))
}

/// The fields that occur in a JSONL file's records, in first-seen order.
fn jsonl_fields(path: &Path) -> Result<Vec<String>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for rec in jsonl_records(path)? {
        for k in rec?.1.keys() {
            if seen.insert(k.clone()) {
                out.push(k.clone());
            }
        }
    }
    Ok(out)
}

fn jsonl_batches(
    path: &Path,
    columns: &[&str],
    batch_rows: usize,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
    let present = jsonl_fields(path)?;
    let names: Vec<String> = present
        .into_iter()
        .filter(|f| columns.contains(&f.as_str()))
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(
        names
            .iter()
            .map(|n| arrow::datatypes::Field::new(n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let mut records = jsonl_records(path)?;
    let rows = batch_rows.max(1);
    Ok(Box::new(std::iter::from_fn(move || {
        let mut cols: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows); names.len()];
        let mut n = 0;
        for rec in records.by_ref() {
            let (_, rec) = match rec {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            for (c, name) in cols.iter_mut().zip(&names) {
                c.push(match rec.get(name) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(v) => Some(v.to_string()),
                });
            }
            n += 1;
            if n >= rows {
                break;
            }
        }
        if n == 0 {
            return None;
        }
        let arrays: Vec<arrow::array::ArrayRef> = cols
            .into_iter()
            .map(|c| Arc::new(arrow::array::StringArray::from(c)) as arrow::array::ArrayRef)
            .collect();
        Some(
            RecordBatch::try_new_with_options(
                schema.clone(),
                arrays,
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
            )
            .map_err(Error::from),
        )
    })))
}

/// The column names of a Parquet file, or the fields of a JSONL file's records.
pub fn parquet_columns(path: &Path) -> Result<Vec<String>> {
    if is_jsonl(path) {
        return jsonl_fields(path);
    }
    let file = File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading the Parquet footer of {}", path.display()))?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect())
}

/// Where texts for tokenizer training come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextSource {
    /// Parquet shards; when they have a `split` column, only rows of `split` are used.
    Parquet {
        shards: Vec<PathBuf>,
        split: Option<String>,
    },
    /// A JSONL file of objects with a text field.
    Jsonl(PathBuf),
}

impl TextSource {
    /// Resolves a command-line input: `.jsonl` files are read as JSONL, anything else as docs.
    pub fn resolve(path: &Path, split: Option<&str>) -> Result<TextSource> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_file() && (name.ends_with(".jsonl") || name.ends_with(".ndjson")) {
            return Ok(TextSource::Jsonl(path.to_path_buf()));
        }
        if path.is_file() && (name.ends_with(".gz") || name.ends_with(".zst")) {
            return Err(Error::bad_input(
                Place::file(path),
                "compressed JSONL is read by `quern ingest`; ingest it first, or decompress it",
            ));
        }
        Ok(TextSource::Parquet {
            shards: resolve_docs(path)?,
            split: split.map(str::to_string),
        })
    }
}

/// A stream of texts from several sources that records the first error and then stops:
/// the tokenizer trainer takes a plain iterator, so errors are checked after training with
/// [`TextStream::error`].
pub struct TextStream {
    sources: std::vec::IntoIter<TextSource>,
    column: String,
    current: Option<Box<dyn Iterator<Item = Result<Vec<String>>> + Send>>,
    pending: std::vec::IntoIter<String>,
    error: Arc<Mutex<Option<Error>>>,
}

impl TextStream {
    pub fn new(sources: Vec<TextSource>, column: &str) -> Self {
        TextStream {
            sources: sources.into_iter(),
            column: column.to_string(),
            current: None,
            pending: Vec::new().into_iter(),
            error: Arc::new(Mutex::new(None)),
        }
    }

    /// A handle on the first error met, to check once the stream has been consumed.
    pub fn error_slot(&self) -> Arc<Mutex<Option<Error>>> {
        self.error.clone()
    }

    fn open(&self, s: TextSource) -> Result<Box<dyn Iterator<Item = Result<Vec<String>>> + Send>> {
        let column = self.column.clone();
        match s {
            TextSource::Jsonl(path) => {
                let f = File::open(&path).at(&path)?;
                let mut lines = BufReader::with_capacity(1 << 20, f).lines().enumerate();
                Ok(Box::new(std::iter::from_fn(move || {
                    let mut out = Vec::new();
                    for (i, line) in lines.by_ref() {
                        let line = match line {
                            Ok(l) => l,
                            Err(e) => return Some(Err(Error::io(&path, e))),
                        };
                        let line = if i == 0 {
                            quern_core::text::strip_bom(&line)
                        } else {
                            &line
                        };
                        if line.trim().is_empty() {
                            continue;
                        }
                        let place = || Place::file(&path).with_line(i as u64 + 1);
                        let v: serde_json::Value = match serde_json::from_str(line) {
                            Ok(v) => v,
                            Err(e) => {
                                return Some(Err(Error::bad_input(
                                    place(),
                                    format!("not JSON: {e}"),
                                )));
                            }
                        };
                        match v.get(&column).and_then(|t| t.as_str()) {
                            Some(t) => out.push(t.to_string()),
                            None => {
                                return Some(Err(Error::bad_input(
                                    place(),
                                    format!("no string field `{column}`"),
                                )));
                            }
                        }
                        if out.len() >= 1024 {
                            break;
                        }
                    }
                    (!out.is_empty()).then_some(Ok(out))
                })))
            }
            TextSource::Parquet { shards, split } => {
                let mut iters = Vec::new();
                for shard in shards {
                    let names = parquet_columns(&shard)?;
                    if !names.contains(&column) {
                        return Err(Error::bad_input(
                            Place::file(&shard),
                            format!("no `{column}` column"),
                        ));
                    }
                    let split_col = split
                        .as_ref()
                        .filter(|_| names.iter().any(|n| n == "split"))
                        .cloned();
                    let cols: Vec<&str> = vec![column.as_str(), "split"];
                    let reader = read_columns(&shard, &cols, 4096)?;
                    let column = column.clone();
                    iters.push(reader.map(move |b| -> Result<Vec<String>> {
                        let b = b?;
                        let text = utf8_column(&b, &column, &shard)?.expect("projected");
                        let text = text.as_string::<i32>();
                        let split_arr = match &split_col {
                            Some(_) => utf8_column(&b, "split", &shard)?,
                            None => None,
                        };
                        let split_arr = split_arr.as_ref().map(|a| a.as_string::<i32>().clone());
                        let mut out = Vec::with_capacity(b.num_rows());
                        for i in 0..b.num_rows() {
                            if let (Some(want), Some(s)) = (&split_col, &split_arr) {
                                if s.is_null(i) || s.value(i) != want {
                                    continue;
                                }
                            }
                            if text.is_valid(i) {
                                out.push(text.value(i).to_string());
                            }
                        }
                        Ok(out)
                    }));
                }
                Ok(Box::new(iters.into_iter().flatten()))
            }
        }
    }
}

impl Iterator for TextStream {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if let Some(t) = self.pending.next() {
                return Some(t);
            }
            if self.error.lock().map(|e| e.is_some()).unwrap_or(true) {
                return None;
            }
            match self.current.as_mut().and_then(|c| c.next()) {
                Some(Ok(v)) => self.pending = v.into_iter(),
                Some(Err(e)) => {
                    *self.error.lock().expect("not poisoned") = Some(e);
                    return None;
                }
                None => {
                    let s = self.sources.next()?;
                    match self.open(s) {
                        Ok(it) => self.current = Some(it),
                        Err(e) => {
                            *self.error.lock().expect("not poisoned") = Some(e);
                            return None;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSONL records as batches: string fields as text, other values as their JSON text,
    /// missing or null fields null, only the named fields the file has; a bad line is an
    /// error naming its file and line.
    #[test]
    fn jsonl_records_read_as_text_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        std::fs::write(
            &p,
            "\u{feff}{\"id\": 7, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n\n\
             {\"id\": \"x\", \"split\": \"val\", \"messages\": null}\n{\"id\": \"y\"}\n",
        )
        .unwrap();
        assert_eq!(resolve_docs(&p).unwrap(), vec![p.clone()]);
        assert_eq!(parquet_columns(&p).unwrap(), ["id", "messages", "split"]);
        let batches: Vec<RecordBatch> = read_columns(&p, &["id", "messages", "prompt"], 2)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [2, 1]
        );
        let col = |name: &str| -> Vec<Option<String>> {
            batches
                .iter()
                .flat_map(|b| {
                    let a = b.column_by_name(name).unwrap().as_string::<i32>().clone();
                    (0..a.len())
                        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(
            col("id"),
            [Some("7".into()), Some("x".into()), Some("y".into())]
        );
        assert_eq!(
            col("messages"),
            [
                Some(r#"[{"role":"user","content":"hi"}]"#.into()),
                None,
                None
            ]
        );
        assert!(batches[0].column_by_name("prompt").is_none());
        std::fs::write(&p, "{\"id\": 1}\n[1, 2]\n").unwrap();
        let e = read_columns(&p, &["id"], 8)
            .map(|b| b.collect::<Result<Vec<_>>>())
            .and_then(|r| r)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.jsonl") && e.contains('2') && e.contains("not a JSON object"),
            "{e}"
        );
    }

    #[test]
    fn jsonl_texts_and_errors_with_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(
            &p,
            "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n{\"body\": 1}\n",
        )
        .unwrap();
        let s = TextStream::new(vec![TextSource::resolve(&p, None).unwrap()], "text");
        let err = s.error_slot();
        let got: Vec<String> = s.collect();
        assert_eq!(
            got,
            Vec::<String>::new(),
            "the batch with the bad line is not used"
        );
        let e = err.lock().unwrap().take().unwrap().to_string();
        assert!(
            e.contains("a.jsonl:4") && e.contains("no string field `text`"),
            "{e}"
        );
        std::fs::write(&p, "{\"text\": \"one\"}\n{\"text\": \"two\"}\n").unwrap();
        let got: Vec<String> =
            TextStream::new(vec![TextSource::Jsonl(p.clone())], "text").collect();
        assert_eq!(got, vec!["one", "two"]);
        // A byte-order mark and CRLF endings, as Windows tools write JSONL.
        std::fs::write(&p, "\u{feff}{\"text\": \"one\"}\r\n{\"text\": \"two\"}\r\n").unwrap();
        let got: Vec<String> =
            TextStream::new(vec![TextSource::Jsonl(p.clone())], "text").collect();
        assert_eq!(got, vec!["one", "two"]);
    }

    #[test]
    fn missing_and_foreign_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve_docs(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = resolve_docs(dir.path()).unwrap_err().to_string();
        assert!(e.contains("holds no Parquet files"), "{e}");
    }
}
