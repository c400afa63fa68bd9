//! Readers that turn raw corpora into batches in quern's document schema.
//!
//! This crate exists so that every way a corpus arrives (JSONL, plain or `.gz`/`.zst`; JSON
//! arrays; Parquet with any schema; CSV/TSV; folders of `.txt`/`.md`; web crawls as WARC,
//! `.warc.gz` or WET, whose HTML pages are reduced to their main text by [`html`]) becomes
//! the same thing: a stream of [`Chunk`]s, each a `docs` batch
//! ([`quern_core::schema::doc_schema`]) and a `quarantine` batch
//! ([`quern_core::schema::quarantine_schema`]), plus, for readers that reject records
//! themselves (WARC), a `rejected` batch. `quern ingest` and
//! the pipeline runner (`quern build`) both read through it.
//!
//! Contracts every reader keeps:
//!
//! - **Streaming.** [`read_file`] hands over batches of at most
//!   [`IngestOptions::batch_rows`] records (and about 64 MiB of text); memory depends on
//!   the batch size, never on the file size.
//! - **Nothing lost.** Every record ends up a document or a quarantined row with its file,
//!   line (or row) and byte offset, the error and the raw record. The returned
//!   [`FileCounts`] satisfy `records = ingested + quarantined`. With
//!   [`IngestOptions::strict`] the first malformed record is an error instead.
//! - **Broken files are loud.** A truncated or corrupt file ends with an [`Error`] naming
//!   the path and how far it was read; what came before the break is handed over and the
//!   break itself is quarantined with its offset. Third-party decoders that panic on hostile
//!   input are caught.
//! - **Deterministic ids.** With no id field, ids are `<name>:<n>`: the file's name (see
//!   [`relative_names`]) and the 1-based line (JSONL, CSV/TSV), element (JSON) or row
//!   (Parquet); a text file's id is its name.
//! - **Source** is [`IngestOptions::source`], else a string field `source` in the record,
//!   else the file stem (for text files, their folder's name).
//! - **Meta.** Every field other than the text and id fields goes into `meta` as a JSON
//!   object (null when there is none), copied from the raw JSON for JSON inputs.
//!
//! ```no_run
//! use quern_ingest::{expand_inputs, read_file, IngestOptions};
//! let files = expand_inputs(&["corpus/".to_string()])?;
//! let opts = IngestOptions::default().with_text_field("content");
//! for f in &files {
//!     let counts = read_file(f, &opts, &mut |chunk| {
//!         println!("{} docs, {} quarantined", chunk.docs.num_rows(), chunk.quarantine.num_rows());
//!         Ok(())
//!     })?;
//!     assert_eq!(counts.records, counts.ingested + counts.quarantined);
//! }
//! # Ok::<(), quern_core::Error>(())
//! ```

mod batch;
mod delimited;
mod expand;
pub mod html;
mod json;
mod open;
mod options;
mod parquet;
mod record;
pub mod run;
mod text;
pub mod url;
mod warc;

use std::path::Path;

use arrow::array::RecordBatch;
pub use quern_core::manifest::FileCounts;
use quern_core::{Error, Result};

pub use expand::{expand_inputs, relative_names};
pub use options::{Format, IngestOptions, DEFAULT_MAX_PAGE_BYTES};

/// One batch of output from a file: documents and quarantined records (either may be empty).
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Documents, in [`quern_core::schema::doc_schema`].
    pub docs: RecordBatch,
    /// Records that could not be read, in [`quern_core::schema::quarantine_schema`].
    pub quarantine: RecordBatch,
    /// Records the reader read but rejected, in [`quern_core::schema::rejected_schema`]
    /// (`rejected_by` = the reader, e.g. `warc`): a WARC file's request and metadata
    /// records, redirects, non-HTML payloads. Empty for the other formats. They count as
    /// ingested records in [`FileCounts`]; [`reader_rejections`] gives their counts by
    /// reason for the accounting.
    pub rejected: RecordBatch,
    /// On-disk bytes of the file consumed since the previous chunk (for progress bars). The
    /// sum over a file's chunks is the file's size when it was read to the end.
    pub bytes: u64,
}

/// Registers this crate's stage types (`html_extract`, `url_normalize`; see
/// [`quern_core::stage`]).
pub fn register_stages(reg: &mut quern_core::StageRegistry) {
    reg.register(
        "html_extract",
        "raw HTML to its main text (boilerplate removed); title, html_lang, description",
        |spec| {
            let cfg: html::stage::HtmlExtractConfig = quern_core::stage::parse_params(spec)?;
            Ok(Box::new(html::stage::HtmlExtract::new(&spec.name, cfg)))
        },
    );
    reg.register(
        "url_normalize",
        "url column: the meta URL in one spelling (case, default port, dots, fragment, tracking)",
        |spec| {
            let cfg: url::UrlNormalizeConfig = quern_core::stage::parse_params(spec)?;
            Ok(Box::new(url::UrlNormalize::new(&spec.name, cfg)))
        },
    );
}

/// The name under which a reader's own rejections are counted as a stage (see
/// [`Chunk::rejected`]).
pub const READER_STAGE: &str = "warc";

/// Adds a chunk's documents and reader rejections to the reader's stage counts
/// ([`READER_STAGE`]: input = documents + rejected, kept = documents, reasons from the
/// rejected rows), so that a build's accounting `input = kept + rejected + quarantined`
/// holds with the reader's rejections in it.
pub fn count_reader_stage(chunk: &Chunk, counts: &mut quern_core::manifest::StageCounts) {
    use arrow::array::{Array, AsArray};
    let docs = chunk.docs.num_rows() as u64;
    let rejected = chunk.rejected.num_rows() as u64;
    let text_bytes = |b: &RecordBatch| -> u64 {
        b.column_by_name(quern_core::schema::TEXT)
            .and_then(|c| c.as_string_opt::<i32>().map(|s| s.values().len() as u64))
            .unwrap_or(0)
    };
    let kept_bytes = text_bytes(&chunk.docs);
    counts.stage = READER_STAGE.to_string();
    counts.input += docs + rejected;
    counts.kept += docs;
    counts.rejected += rejected;
    counts.input_bytes += kept_bytes;
    counts.kept_bytes += kept_bytes;
    if let Some(r) = chunk
        .rejected
        .column_by_name(quern_core::schema::REASON)
        .and_then(|c| c.as_string_opt::<i32>())
    {
        for i in 0..r.len() {
            *counts.reasons.entry(r.value(i).to_string()).or_default() += 1;
        }
    }
}

/// The file's stem with compression and format extensions removed (`a.jsonl.gz` → `a`).
fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut s = name.as_str();
    for ext in [".gz", ".gzip", ".zst", ".zstd"] {
        if s.to_ascii_lowercase().ends_with(ext) {
            s = &s[..s.len() - ext.len()];
            break;
        }
    }
    match s.rsplit_once('.') {
        Some((a, _)) if !a.is_empty() => a.to_string(),
        _ => s.to_string(),
    }
}

/// Reads one file, naming it by its file name in generated ids. See [`read_file_named`].
pub fn read_file(
    path: &Path,
    opts: &IngestOptions,
    on_chunk: &mut dyn FnMut(Chunk) -> Result<()>,
) -> Result<FileCounts> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    read_file_named(path, &name, opts, on_chunk)
}

/// Reads one file, handing each batch to `on_chunk` in file order, and returns its counts.
///
/// `name` starts every generated id (`<name>:<line>`); pass the file's entry from
/// [`relative_names`] so ids are unique across a build's files. On a broken file the
/// error names the path and how far it was read; the chunks handed over before it (and the
/// quarantined failure) are the part that was read.
pub fn read_file_named(
    path: &Path,
    name: &str,
    opts: &IngestOptions,
    on_chunk: &mut dyn FnMut(Chunk) -> Result<()>,
) -> Result<FileCounts> {
    opts.validate()?;
    let format = opts.format_of(path)?;
    let mut em = batch::Emitter::new(path, opts.strict, on_chunk);
    let file_stem = stem(path);
    let rows = opts.batch_rows.max(1);
    let forced = opts.source.as_deref();
    match format {
        Format::Jsonl | Format::Json => {
            let input = open::open(path)?;
            let cfg = json::JsonCfg {
                file: &em.file.clone(),
                name,
                text_field: &opts.text_field,
                id_field: opts.id_field.as_deref(),
                forced_source: forced,
                default_source: &file_stem,
            };
            json::read(input, format == Format::Json, &cfg, rows, &mut em)?;
        }
        Format::Parquet => {
            let cfg = parquet::ParquetCfg {
                name,
                text_field: &opts.text_field,
                id_field: opts.id_field.as_deref(),
                forced_source: forced,
                default_source: &file_stem,
            };
            parquet::read(path, &cfg, rows, &mut em)?;
        }
        Format::Csv | Format::Tsv => {
            let input = open::open(path)?;
            let cfg = delimited::DelimitedCfg {
                name,
                tsv: format == Format::Tsv,
                text_field: &opts.text_field,
                id_field: opts.id_field.as_deref(),
                forced_source: forced,
                default_source: &file_stem,
            };
            delimited::read(input, &cfg, rows, &mut em)?;
        }
        Format::Text => {
            let input = open::open(path)?;
            let folder = path
                .canonicalize()
                .ok()
                .and_then(|p| {
                    p.parent()
                        .and_then(|d| d.file_name())
                        .map(|d| d.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| file_stem.clone());
            let source = forced.map(str::to_string).unwrap_or(folder);
            text::read(input, name, &source, &mut em)?;
        }
        Format::Warc => {
            let cfg = warc::WarcCfg {
                name,
                forced_source: forced,
                default_source: &file_stem,
                max_page_bytes: opts.max_page_bytes.unwrap_or(DEFAULT_MAX_PAGE_BYTES),
            };
            warc::read(path, &cfg, rows, &mut em)?;
        }
    }
    let counts = em.finish()?;
    if counts.records != counts.ingested + counts.quarantined {
        return Err(Error::bug(format!(
            "{}: counts do not add up: {counts:?}",
            path.display()
        )));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests;
