//! Writing query results: an aligned table, CSV, JSON lines or Parquet.
//!
//! Results stream batch by batch (except `table`, which must see every row to size its
//! columns), so `quern sql "SELECT text FROM docs" --format csv | head` starts printing at
//! once and stops cleanly when `head` closes the pipe. Each batch is encoded into a buffer and
//! then written with one `write_all`, so a closed pipe surfaces as a plain
//! `std::io::Error` of kind `BrokenPipe`, which the binary treats as success.
//!
//! DataFusion reads Parquet strings as `Utf8View`; results are cast back to `Utf8`
//! (`BinaryView` to `Binary`) before writing, so every reader of the output (pyarrow, DuckDB,
//! an older Arrow) sees plain strings.
//!
//! | format | layout |
//! |---|---|
//! | `table` | the rows as an aligned text table (arrow's pretty printer) |
//! | `csv` | RFC 4180 CSV with a header line |
//! | `json` | JSON lines: one object per row, nulls written as `null` |
//! | `parquet` | one zstd-compressed Parquet file (needs `--out`) |

use std::io::Write;
use std::sync::Arc;

use anyhow::Context as _;
use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// JSON lines, one object per row.
    Json,
    /// A Parquet file (needs --out).
    Parquet,
}

/// The schema results are written with: view types replaced by their plain forms.
pub fn plain_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            DataType::BinaryView => f.as_ref().clone().with_data_type(DataType::Binary),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Casts a batch's view columns to their plain forms (see [`plain_schema`]).
pub fn plain_batch(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    let schema = plain_schema(batch.schema().as_ref());
    if schema.fields() == batch.schema().fields() {
        return Ok(batch.clone());
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Writes every batch of `stream` to `w` in `format`, and returns the rows written.
pub async fn write_stream(
    mut stream: datafusion::physical_plan::SendableRecordBatchStream,
    format: Format,
    w: &mut (dyn Write + Send),
) -> anyhow::Result<u64> {
    let schema =
        plain_schema(datafusion::physical_plan::RecordBatchStream::schema(&*stream).as_ref());
    let mut rows = 0u64;
    match format {
        Format::Table => {
            let mut batches = Vec::new();
            while let Some(b) = stream.next().await {
                let b = plain_batch(&b?)?;
                rows += b.num_rows() as u64;
                batches.push(b);
            }
            let text = if batches.is_empty() {
                arrow::util::pretty::pretty_format_batches_with_schema(schema, &[])?.to_string()
            } else {
                arrow::util::pretty::pretty_format_batches(&batches)?.to_string()
            };
            writeln!(w, "{text}")?;
        }
        Format::Csv => {
            let mut first = true;
            let mut buf = Vec::new();
            while let Some(b) = stream.next().await {
                let b = plain_batch(&b?)?;
                rows += b.num_rows() as u64;
                buf.clear();
                arrow::csv::WriterBuilder::new()
                    .with_header(first)
                    .build(&mut buf)
                    .write(&b)?;
                first = false;
                w.write_all(&buf)?;
            }
            if first {
                // No rows: still write the header, so the output is valid CSV for its columns.
                buf.clear();
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf)
                    .write(&RecordBatch::new_empty(schema))?;
                w.write_all(&buf)?;
            }
        }
        Format::Json => {
            let mut buf = Vec::new();
            while let Some(b) = stream.next().await {
                let b = plain_batch(&b?)?;
                rows += b.num_rows() as u64;
                buf.clear();
                let mut jw = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
                jw.write(&b)?;
                jw.finish()?;
                drop(jw);
                w.write_all(&buf)?;
            }
        }
        Format::Parquet => {
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
                .set_created_by(format!("quern sql {}", env!("CARGO_PKG_VERSION")))
                .build();
            let mut pw = ArrowWriter::try_new(w, schema, Some(props))
                .context("starting the Parquet output")?;
            while let Some(b) = stream.next().await {
                let b = plain_batch(&b?)?;
                rows += b.num_rows() as u64;
                pw.write(&b)?;
            }
            pw.close().context("finishing the Parquet output")?;
            return Ok(rows);
        }
    }
    w.flush()?;
    Ok(rows)
}
