//! Parquet reader: any schema, read batch by batch (row group by row group), never whole.
//!
//! The text field must be a string column (or a binary one, validated as UTF-8 row by row);
//! the id field may be any column Arrow can print; every other column goes to `meta`,
//! encoded as JSON by arrow's JSON writer (columns it cannot encode are written as their
//! display strings). Generated ids are `<file>:<row>` with 1-based rows.
//!
//! Parquet decoders can fail or, on hostile input, panic; both are caught
//! (`catch_unwind` around the third-party decoder) and turned into an error naming the file,
//! the row where reading stopped and the byte offset of its row group. A file whose footer
//! declares more rows than could be decoded is an error too, never a silent partial result.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;
use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};

use crate::batch::{Builders, Emitter};

/// Per-file settings.
pub(crate) struct ParquetCfg<'a> {
    pub name: &'a str,
    pub text_field: &'a str,
    pub id_field: Option<&'a str>,
    pub forced_source: Option<&'a str>,
    pub default_source: &'a str,
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("the Parquet decoder panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("the Parquet decoder panicked: {s}")
    } else {
        "the Parquet decoder panicked".to_string()
    }
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

fn is_binary(t: &DataType) -> bool {
    match t {
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => true,
        DataType::Dictionary(_, v) => is_binary(v),
        _ => false,
    }
}

/// Byte offset of the row group holding `row` (0-based), for error places.
fn row_group_offset(md: &ParquetMetaData, row: u64) -> Option<u64> {
    let mut seen = 0u64;
    for rg in md.row_groups() {
        seen += rg.num_rows().max(0) as u64;
        if row < seen {
            return rg
                .columns()
                .iter()
                .map(|c| {
                    c.dictionary_page_offset()
                        .unwrap_or(c.data_page_offset())
                        .max(0) as u64
                })
                .min();
        }
    }
    None
}

/// Every value of `col` as an optional string: a cast where Arrow has one, else its display.
fn strings(col: &ArrayRef) -> Result<Vec<Option<String>>> {
    if let Ok(s) = cast(col, &DataType::Utf8) {
        let s = s.as_string::<i32>();
        return Ok(s.iter().map(|v| v.map(str::to_string)).collect());
    }
    let f = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())?;
    Ok((0..col.len())
        .map(|i| {
            if col.is_null(i) {
                None
            } else {
                Some(f.value(i).to_string())
            }
        })
        .collect())
}

/// One JSON object per row for the columns of `batch`.
fn json_rows(batch: &RecordBatch) -> Result<Vec<String>> {
    fn write(batch: &RecordBatch) -> std::result::Result<Vec<u8>, arrow::error::ArrowError> {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(Vec::with_capacity(
            batch.num_rows() * 64,
        ));
        w.write(batch)?;
        w.finish()?;
        Ok(w.into_inner())
    }
    let bytes = match write(batch) {
        Ok(b) => b,
        Err(_) => {
            // Some column type has no JSON encoding: write those columns as display strings.
            let mut fields = Vec::new();
            let mut cols = Vec::new();
            for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
                let one = RecordBatch::try_new(
                    Arc::new(Schema::new(vec![f.as_ref().clone()])),
                    vec![c.clone()],
                )?;
                if write(&one.slice(0, one.num_rows().min(1))).is_ok() {
                    fields.push(f.as_ref().clone());
                    cols.push(c.clone());
                } else {
                    let s: StringArray = strings(c)?.into_iter().collect();
                    fields.push(Field::new(f.name(), DataType::Utf8, true));
                    cols.push(Arc::new(s) as ArrayRef);
                }
            }
            write(&RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)?
        }
    };
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::bug(format!("arrow's JSON writer produced invalid UTF-8: {e}")))?;
    let rows: Vec<String> = text.lines().map(str::to_string).collect();
    if rows.len() != batch.num_rows() {
        return Err(Error::bug(format!(
            "JSON writer gave {} lines for {} rows",
            rows.len(),
            batch.num_rows()
        )));
    }
    Ok(rows)
}

pub(crate) fn read(
    path: &Path,
    cfg: &ParquetCfg<'_>,
    rows: usize,
    em: &mut Emitter<'_>,
) -> Result<()> {
    let src = cfg.forced_source.unwrap_or(cfg.default_source);
    let file = File::open(path).at(path)?;
    let file_len = file.metadata().at(path)?.len();
    let builder = match catch_unwind(AssertUnwindSafe(|| {
        ParquetRecordBatchReaderBuilder::try_new(file)
    })) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Err(em.fail(
                None,
                None,
                &format!("not a readable Parquet file: {e}"),
                None,
                src,
                file_len,
            ))
        }
        Err(p) => {
            return Err(em.fail(
                None,
                None,
                &format!("not a readable Parquet file: {}", panic_message(p)),
                None,
                src,
                file_len,
            ))
        }
    };
    let schema = builder.schema().clone();
    let md = builder.metadata().clone();
    let declared = md.file_metadata().num_rows().max(0) as u64;
    let place = || Place::file(path);
    let text_idx = schema.index_of(cfg.text_field).map_err(|_| {
        let strs: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| is_string(f.data_type()))
            .map(|f| f.name().as_str())
            .collect();
        Error::bad_input(
            place(),
            format!(
                "no column `{}`; its string columns are [{}]: pass one as --text-field",
                cfg.text_field,
                strs.join(", ")
            ),
        )
    })?;
    let text_type = schema.field(text_idx).data_type().clone();
    if !is_string(&text_type) && !is_binary(&text_type) {
        return Err(Error::bad_input(
            place(),
            format!(
                "column `{}` is {text_type}, expected a string column",
                cfg.text_field
            ),
        ));
    }
    let id_idx = match cfg.id_field {
        Some(f) => Some(
            schema
                .index_of(f)
                .map_err(|_| Error::bad_input(place(), format!("no id column `{f}`")))?,
        ),
        None => None,
    };
    let source_idx = schema
        .index_of("source")
        .ok()
        .filter(|&i| is_string(schema.field(i).data_type()) && cfg.forced_source.is_none());
    let meta_idx: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| i != text_idx && Some(i) != id_idx)
        .collect();

    let reader = match catch_unwind(AssertUnwindSafe(|| builder.with_batch_size(rows).build())) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err(em.fail(
                None,
                row_group_offset(&md, 0),
                &format!("cannot read Parquet data: {e}"),
                None,
                src,
                0,
            ))
        }
        Err(p) => {
            return Err(em.fail(
                None,
                row_group_offset(&md, 0),
                &panic_message(p),
                None,
                src,
                0,
            ))
        }
    };
    let mut reader = reader;
    let mut row = 0u64;
    let mut id = String::new();
    loop {
        let next = catch_unwind(AssertUnwindSafe(|| reader.next()));
        let batch = match next {
            Ok(None) => break,
            Ok(Some(Ok(b))) => b,
            Ok(Some(Err(e))) => {
                let msg = format!(
                    "decoding failed at row {} (of {declared} declared): {e}",
                    row + 1
                );
                return Err(em.fail(
                    Some(row + 1),
                    row_group_offset(&md, row),
                    &msg,
                    None,
                    src,
                    file_len * row / declared.max(1),
                ));
            }
            Err(p) => {
                let msg = format!(
                    "decoding failed at row {} (of {declared} declared): {}",
                    row + 1,
                    panic_message(p)
                );
                return Err(em.fail(
                    Some(row + 1),
                    row_group_offset(&md, row),
                    &msg,
                    None,
                    src,
                    file_len * row / declared.max(1),
                ));
            }
        };
        let n = batch.num_rows();
        let text_col = batch.column(text_idx);
        let texts: Vec<Option<std::result::Result<String, String>>> = if is_string(&text_type) {
            let s = cast(text_col, &DataType::Utf8)?;
            s.as_string::<i32>()
                .iter()
                .map(|v| v.map(|t| Ok(t.to_string())))
                .collect()
        } else {
            let b = cast(text_col, &DataType::Binary)?;
            b.as_binary::<i32>()
                .iter()
                .map(|v| {
                    v.map(|t| {
                        std::str::from_utf8(t).map(str::to_string).map_err(|e| {
                            format!(
                                "text column `{}` holds invalid UTF-8 at byte {}",
                                cfg.text_field,
                                e.valid_up_to()
                            )
                        })
                    })
                })
                .collect()
        };
        let ids = match id_idx {
            Some(i) => Some(strings(batch.column(i))?),
            None => None,
        };
        let sources = match source_idx {
            Some(i) => Some(cast(batch.column(i), &DataType::Utf8)?),
            None => None,
        };
        let sources = sources.as_ref().map(|s| s.as_string::<i32>());
        let meta = if meta_idx.is_empty() {
            None
        } else {
            Some(json_rows(&batch.project(&meta_idx)?)?)
        };
        let mut b = Builders::new(n);
        for i in 0..n {
            let r = row + i as u64 + 1;
            let m = meta.as_ref().map(|m| m[i].as_str());
            let s = sources
                .filter(|s| s.is_valid(i))
                .map(|s| s.value(i))
                .unwrap_or(src);
            let text = match &texts[i] {
                Some(Ok(t)) => t,
                Some(Err(e)) => {
                    b.quarantine(&em.file, Some(r), None, e, m.map(str::as_bytes), s);
                    continue;
                }
                None => {
                    let e = format!("text column `{}` is null", cfg.text_field);
                    b.quarantine(&em.file, Some(r), None, &e, m.map(str::as_bytes), s);
                    continue;
                }
            };
            id.clear();
            match &ids {
                Some(v) => match &v[i] {
                    Some(x) => id.push_str(x),
                    None => {
                        let e = format!("id column `{}` is null", cfg.id_field.unwrap_or_default());
                        b.quarantine(&em.file, Some(r), None, &e, m.map(str::as_bytes), s);
                        continue;
                    }
                },
                None => {
                    use std::fmt::Write as _;
                    let _ = write!(id, "{}:{r}", cfg.name);
                }
            }
            b.doc(&id, text, s, m);
        }
        row += n as u64;
        em.flush(&mut b, file_len * row / declared.max(1))?;
    }
    if row != declared {
        let msg = format!("the footer declares {declared} rows but the data holds {row}");
        return Err(em.fail(
            Some(row + 1),
            row_group_offset(&md, row),
            &msg,
            None,
            src,
            file_len,
        ));
    }
    Ok(())
}
