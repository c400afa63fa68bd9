//! Reading labelled examples (for training) and evaluation-set items (for
//! decontamination) from JSONL, Parquet or plain-text files.
//!
//! These are small side inputs, read whole into memory; the corpus itself goes through the
//! pipeline. Every error names the file and, for JSONL, the line and the key.

use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow::array::{Array, StringArray};
use arrow::datatypes::DataType;
use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};

/// Labelled examples: `texts[i]` has label `labels[i]`.
#[derive(Debug, Clone, Default)]
pub struct Labelled {
    pub texts: Vec<String>,
    pub labels: Vec<String>,
}

impl Labelled {
    /// The sorted distinct labels, and each example's index into them.
    pub fn encode(&self) -> (Vec<String>, Vec<u32>) {
        let mut names: Vec<String> = self.labels.clone();
        names.sort();
        names.dedup();
        let idx = self
            .labels
            .iter()
            .map(|l| names.binary_search(l).unwrap() as u32)
            .collect();
        (names, idx)
    }
}

fn ext(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// A JSON value used as a label: strings as they are, numbers and booleans as written.
fn label_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn for_each_json_line(
    path: &Path,
    mut f: impl FnMut(u64, serde_json::Map<String, serde_json::Value>) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).at(path)?;
    let reader = BufReader::new(file);
    for (i, line) in reader.lines().enumerate() {
        let lineno = i as u64 + 1;
        let line = line.at(path)?;
        let line = if i == 0 {
            quern_core::text::strip_bom(&line)
        } else {
            &line
        };
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::bad_input(
                Place::file(path).with_line(lineno),
                format!("not a JSON record: {e}"),
            )
        })?;
        match v {
            serde_json::Value::Object(m) => f(lineno, m)?,
            _ => {
                return Err(Error::bad_input(
                    Place::file(path).with_line(lineno),
                    "expected a JSON object per line",
                ))
            }
        }
    }
    Ok(())
}

fn parquet_columns(path: &Path, fields: &[&str]) -> Result<Vec<Vec<Option<String>>>> {
    let mut out = vec![Vec::new(); fields.len()];
    for batch in quern_core::shard::read_shard(path, 8192)? {
        let batch = batch?;
        for (k, name) in fields.iter().enumerate() {
            let col = batch.column_by_name(name).ok_or_else(|| {
                Error::bad_input(
                    Place::file(path),
                    format!(
                        "no column `{name}`; columns are: {}",
                        batch
                            .schema()
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            let col = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| {
                Error::bad_input(
                    Place::file(path),
                    format!("column `{name}` cannot be read as text: {e}"),
                )
            })?;
            let s = col
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::bug("cast to Utf8 gave another type"))?;
            out[k].extend(s.iter().map(|v| v.map(str::to_string)));
        }
    }
    Ok(out)
}

/// Reads labelled examples from `.jsonl` (one object per line) or `.parquet`.
pub fn read_labelled(path: &Path, text_field: &str, label_field: &str) -> Result<Labelled> {
    let mut out = Labelled::default();
    match ext(path).as_str() {
        "jsonl" | "ndjson" => for_each_json_line(path, |line, m| {
            let place = || Place::file(path).with_line(line);
            let text = m.get(text_field).and_then(|v| v.as_str()).ok_or_else(|| {
                Error::bad_input(
                    place(),
                    format!("no string field `{text_field}` (set it with --text-field)"),
                )
            })?;
            let label = m.get(label_field).and_then(label_string).ok_or_else(|| {
                Error::bad_input(place(), format!("no string, number or boolean field `{label_field}` (set it with --label-field)"))
            })?;
            out.texts.push(text.to_string());
            out.labels.push(label);
            Ok(())
        })?,
        "parquet" => {
            let mut cols = parquet_columns(path, &[text_field, label_field])?;
            let labels = cols.pop().unwrap();
            let texts = cols.pop().unwrap();
            for (row, (t, l)) in texts.into_iter().zip(labels).enumerate() {
                match (t, l) {
                    (Some(t), Some(l)) => {
                        out.texts.push(t);
                        out.labels.push(l);
                    }
                    _ => {
                        return Err(Error::bad_input(
                            Place::file(path),
                            format!("row {row}: null `{text_field}` or `{label_field}`"),
                        ))
                    }
                }
            }
        }
        other => {
            return Err(Error::bad_input(
                Place::file(path),
                format!("unknown labelled-data format `.{other}`: use .jsonl or .parquet"),
            ))
        }
    }
    if out.texts.is_empty() {
        return Err(Error::bad_input(
            Place::file(path),
            "no labelled examples in the file",
        ));
    }
    Ok(out)
}

/// Reads the items of an evaluation set: every value of every field in `fields` of every
/// record (`.jsonl`, `.parquet`), or every non-empty line (`.txt`). Records lacking a
/// field are skipped for that field; a file with no item at all is an error.
pub fn read_items(path: &Path, fields: &[String]) -> Result<Vec<String>> {
    let mut items = Vec::new();
    match ext(path).as_str() {
        "jsonl" | "ndjson" => for_each_json_line(path, |_, m| {
            for f in fields {
                match m.get(f) {
                    Some(serde_json::Value::String(s)) => items.push(s.clone()),
                    Some(serde_json::Value::Array(a)) => {
                        items.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)))
                    }
                    _ => {}
                }
            }
            Ok(())
        })?,
        "parquet" => {
            let names: Vec<&str> = fields.iter().map(String::as_str).collect();
            for col in parquet_columns(path, &names)? {
                items.extend(col.into_iter().flatten());
            }
        }
        "txt" | "text" => {
            let text = std::fs::read_to_string(path).at(path)?;
            items.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            );
        }
        other => {
            return Err(Error::bad_input(
                Place::file(path),
                format!("unknown evaluation-set format `.{other}`: use .jsonl, .parquet or .txt"),
            ))
        }
    }
    if items.is_empty() {
        return Err(Error::bad_input(
            Place::file(path),
            format!("no items (looked for fields {fields:?})"),
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_labels_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"text\":\"a\",\"y\":\"spam\"}\n\n{\"text\":\"b\",\"y\":3}\n",
        )
        .unwrap();
        let l = read_labelled(&p, "text", "y").unwrap();
        assert_eq!(l.labels, ["spam", "3"]);
        let (names, idx) = l.encode();
        assert_eq!(names, ["3", "spam"]);
        assert_eq!(idx, [1, 0]);
        std::fs::write(&p, "{\"text\":\"a\",\"y\":\"spam\"}\n{\"text\":\"b\"}\n").unwrap();
        let e = read_labelled(&p, "text", "y").unwrap_err().to_string();
        assert!(e.contains("d.jsonl:2") && e.contains("`y`"), "{e}");
        // A byte-order mark and CRLF endings, as Windows tools write JSONL.
        std::fs::write(
            &p,
            "\u{feff}{\"text\":\"a\",\"y\":\"spam\"}\r\n{\"text\":\"b\",\"y\":\"ham\"}\r\n",
        )
        .unwrap();
        assert_eq!(
            read_labelled(&p, "text", "y").unwrap().labels,
            ["spam", "ham"]
        );
        std::fs::write(&p, "{oops\n").unwrap();
        assert!(read_labelled(&p, "text", "y")
            .unwrap_err()
            .to_string()
            .contains("d.jsonl:1"));
    }

    #[test]
    fn items_from_txt_and_jsonl_fields() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("e.txt");
        std::fs::write(&t, "first item\n\nsecond item\n").unwrap();
        assert_eq!(read_items(&t, &[]).unwrap(), ["first item", "second item"]);
        let j = dir.path().join("e.jsonl");
        std::fs::write(
            &j,
            "{\"q\":\"what\",\"a\":[\"x\",\"y\"]}\n{\"q\":\"who\"}\n",
        )
        .unwrap();
        let got = read_items(&j, &["q".into(), "a".into()]).unwrap();
        assert_eq!(got, ["what", "x", "y", "who"]);
        let e = read_items(&j, &["nope".into()]).unwrap_err().to_string();
        assert!(e.contains("e.jsonl") && e.contains("no items"), "{e}");
    }
}
