//! Building output batches, and handing them to the caller with the file's running counts.
//!
//! Every reader turns records into calls on a [`Builders`] (a document, or a quarantined
//! record with its place), so the document and quarantine schemas are built in one place.
//! The [`Emitter`] owns the caller's callback and the file's [`FileCounts`]: it counts
//! exactly what it hands over, so `records = ingested + quarantined` holds by construction,
//! and in strict mode it turns the first quarantined record into an error naming its place.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, StringBuilder, UInt64Array, UInt64Builder,
};
use quern_core::error::Place;
use quern_core::manifest::FileCounts;
use quern_core::schema::{cut_raw, doc_schema, quarantine_schema, rejected_schema};
use quern_core::{Error, Result};

use crate::Chunk;

/// Documents larger than this many bytes of text in one batch start a new batch early, so a
/// batch of very long documents stays bounded in memory too.
pub(crate) const BATCH_BYTES: usize = 64 << 20;

/// Arrow builders for one batch of documents and one of quarantined records.
pub(crate) struct Builders {
    ids: StringBuilder,
    texts: StringBuilder,
    sources: StringBuilder,
    metas: StringBuilder,
    q_file: StringBuilder,
    q_line: UInt64Builder,
    q_offset: UInt64Builder,
    q_error: StringBuilder,
    q_raw: StringBuilder,
    q_source: StringBuilder,
    r_ids: StringBuilder,
    r_sources: StringBuilder,
    r_metas: StringBuilder,
    r_by: StringBuilder,
    r_reasons: StringBuilder,
    pub(crate) docs: usize,
    pub(crate) rejected: usize,
    pub(crate) quarantined: usize,
    pub(crate) text_bytes: usize,
}

impl Builders {
    pub(crate) fn new(rows: usize) -> Self {
        let rows = rows.min(1 << 16);
        Builders {
            ids: StringBuilder::with_capacity(rows, rows * 16),
            texts: StringBuilder::with_capacity(rows, rows * 256),
            sources: StringBuilder::with_capacity(rows, rows * 8),
            metas: StringBuilder::with_capacity(rows, rows * 32),
            q_file: StringBuilder::new(),
            q_line: UInt64Builder::new(),
            q_offset: UInt64Builder::new(),
            q_error: StringBuilder::new(),
            q_raw: StringBuilder::new(),
            q_source: StringBuilder::new(),
            r_ids: StringBuilder::new(),
            r_sources: StringBuilder::new(),
            r_metas: StringBuilder::new(),
            r_by: StringBuilder::new(),
            r_reasons: StringBuilder::new(),
            docs: 0,
            rejected: 0,
            quarantined: 0,
            text_bytes: 0,
        }
    }

    pub(crate) fn doc(&mut self, id: &str, text: &str, source: &str, meta: Option<&str>) {
        self.ids.append_value(id);
        self.texts.append_value(text);
        self.sources.append_value(source);
        self.metas.append_option(meta);
        self.docs += 1;
        self.text_bytes += text.len();
    }

    /// A record the reader itself rejects (a WARC request record, a redirect): no text, its
    /// fields in `meta`, `rejected_by` the reader, and a reason.
    pub(crate) fn reject(
        &mut self,
        id: &str,
        source: &str,
        meta: Option<&str>,
        by: &str,
        reason: &str,
    ) {
        self.r_ids.append_value(id);
        self.r_sources.append_value(source);
        self.r_metas.append_option(meta);
        self.r_by.append_value(by);
        self.r_reasons.append_value(reason);
        self.rejected += 1;
    }

    pub(crate) fn quarantine(
        &mut self,
        file: &str,
        line: Option<u64>,
        offset: Option<u64>,
        error: &str,
        raw: Option<&[u8]>,
        source: &str,
    ) {
        self.q_file.append_value(file);
        self.q_line.append_option(line);
        self.q_offset.append_option(offset);
        self.q_error.append_value(error);
        self.q_raw.append_option(raw.map(cut_raw));
        self.q_source.append_value(source);
        self.quarantined += 1;
    }

    pub(crate) fn len(&self) -> usize {
        self.docs + self.quarantined + self.rejected
    }

    /// Finishes both batches and resets the builders.
    pub(crate) fn finish(&mut self) -> Result<Chunk> {
        let docs = RecordBatch::try_new(
            doc_schema(),
            vec![
                Arc::new(self.ids.finish()) as ArrayRef,
                Arc::new(self.texts.finish()),
                Arc::new(self.sources.finish()),
                Arc::new(self.metas.finish()),
            ],
        )?;
        let quarantine = RecordBatch::try_new(
            quarantine_schema(),
            vec![
                Arc::new(self.q_file.finish()) as ArrayRef,
                Arc::new(self.q_line.finish()),
                Arc::new(self.q_offset.finish()),
                Arc::new(self.q_error.finish()),
                Arc::new(self.q_raw.finish()),
                Arc::new(self.q_source.finish()),
            ],
        )?;
        let n = self.rejected;
        let rejected = RecordBatch::try_new(
            rejected_schema(),
            vec![
                Arc::new(self.r_ids.finish()) as ArrayRef,
                Arc::new(StringArray::from(vec![""; n])),
                Arc::new(self.r_sources.finish()),
                Arc::new(self.r_metas.finish()),
                Arc::new(self.r_by.finish()),
                Arc::new(self.r_reasons.finish()),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
            ],
        )?;
        self.docs = 0;
        self.quarantined = 0;
        self.rejected = 0;
        self.text_bytes = 0;
        Ok(Chunk {
            docs,
            quarantine,
            rejected,
            bytes: 0,
        })
    }
}

/// Where one file's records go: the caller's callback, with the running counts.
pub(crate) struct Emitter<'a> {
    pub(crate) path: PathBuf,
    /// The file as quarantine rows name it.
    pub(crate) file: String,
    pub(crate) strict: bool,
    counts: FileCounts,
    on_chunk: &'a mut dyn FnMut(Chunk) -> Result<()>,
    /// Input bytes reported to the caller so far.
    reported_bytes: u64,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(
        path: &Path,
        strict: bool,
        on_chunk: &'a mut dyn FnMut(Chunk) -> Result<()>,
    ) -> Self {
        let file = path.display().to_string();
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Emitter {
            path: path.to_path_buf(),
            counts: FileCounts {
                file: file.clone(),
                bytes,
                ..Default::default()
            },
            file,
            strict,
            on_chunk,
            reported_bytes: 0,
        }
    }

    /// Hands a chunk to the caller. `bytes_read` is how far into the file (on-disk bytes)
    /// reading has got. In strict mode a quarantined record is an error naming its place.
    pub(crate) fn emit(&mut self, mut chunk: Chunk, bytes_read: u64) -> Result<()> {
        if self.strict && chunk.quarantine.num_rows() > 0 {
            return Err(first_quarantined_error(&self.path, &chunk.quarantine));
        }
        let bytes_read = bytes_read.min(self.counts.bytes).max(self.reported_bytes);
        chunk.bytes = bytes_read - self.reported_bytes;
        self.reported_bytes = bytes_read;
        // Records the reader rejected were read: they count as ingested (and reach the
        // `rejected` table), so `records = ingested + quarantined` still holds.
        let docs = (chunk.docs.num_rows() + chunk.rejected.num_rows()) as u64;
        let quarantined = chunk.quarantine.num_rows() as u64;
        if docs + quarantined == 0 && chunk.bytes == 0 {
            return Ok(());
        }
        (self.on_chunk)(chunk)?;
        self.counts.ingested += docs;
        self.counts.quarantined += quarantined;
        self.counts.records += docs + quarantined;
        Ok(())
    }

    /// Emits what the builders hold.
    pub(crate) fn flush(&mut self, b: &mut Builders, bytes_read: u64) -> Result<()> {
        if b.len() == 0 {
            return Ok(());
        }
        let chunk = b.finish()?;
        self.emit(chunk, bytes_read)
    }

    pub(crate) fn records(&self) -> u64 {
        self.counts.records
    }

    /// Reports the rest of the file's bytes as read and returns the counts.
    pub(crate) fn finish(mut self) -> Result<FileCounts> {
        let total = self.counts.bytes;
        if total > self.reported_bytes {
            let mut b = Builders::new(0);
            let chunk = b.finish()?;
            self.emit(chunk, total)?;
        }
        Ok(self.counts)
    }

    /// Quarantines the failure that stopped reading a file (so the output says where the
    /// file broke), then returns the error naming the path and how far it was read.
    pub(crate) fn fail(
        &mut self,
        line: Option<u64>,
        offset: Option<u64>,
        message: &str,
        raw: Option<&[u8]>,
        source: &str,
        bytes_read: u64,
    ) -> Error {
        let records = self.records();
        let what = format!("{message} (read {records} records before the failure; they are kept)");
        if !self.strict {
            let mut b = Builders::new(1);
            b.quarantine(&self.file, line, offset, message, raw, source);
            if let Err(e) = b.finish().and_then(|c| self.emit(c, bytes_read)) {
                return e;
            }
        }
        let mut place = Place::file(&self.path);
        place.line = line;
        place.byte_offset = offset;
        Error::bad_input(place, what)
    }
}

/// The error strict mode raises for the first quarantined row of a batch.
fn first_quarantined_error(path: &Path, q: &RecordBatch) -> Error {
    let col = |i: usize| q.column(i).clone();
    let line = col(1);
    let line = line.as_any().downcast_ref::<UInt64Array>();
    let off = col(2);
    let off = off.as_any().downcast_ref::<UInt64Array>();
    let err = col(3);
    let err = err.as_any().downcast_ref::<StringArray>();
    let mut place = Place::file(path);
    place.line = line.filter(|a| a.is_valid(0)).map(|a| a.value(0));
    place.byte_offset = off.filter(|a| a.is_valid(0)).map(|a| a.value(0));
    let mut msg = err.map(|a| a.value(0).to_string()).unwrap_or_default();
    let _ = write!(
        msg,
        " (--strict stops at the first malformed record; leave it off to quarantine such records)"
    );
    Error::bad_input(place, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitter_counts_what_it_hands_over_and_strict_names_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.jsonl");
        std::fs::write(&p, b"0123456789").unwrap();
        let mut got = Vec::new();
        let mut cb = |c: Chunk| {
            got.push((c.docs.num_rows(), c.quarantine.num_rows(), c.bytes));
            Ok(())
        };
        let mut e = Emitter::new(&p, false, &mut cb);
        let mut b = Builders::new(4);
        b.doc("f:1", "hello", "f", None);
        b.quarantine("f.jsonl", Some(2), Some(6), "bad", Some(b"{"), "f");
        e.flush(&mut b, 7).unwrap();
        let counts = e.finish().unwrap();
        assert_eq!(
            (
                counts.records,
                counts.ingested,
                counts.quarantined,
                counts.bytes
            ),
            (2, 1, 1, 10)
        );
        assert_eq!(got, vec![(1, 1, 7), (0, 0, 3)]);

        let mut cb = |_c: Chunk| Ok(());
        let mut e = Emitter::new(&p, true, &mut cb);
        let mut b = Builders::new(4);
        b.quarantine("f.jsonl", Some(2), Some(6), "invalid JSON", None, "f");
        let err = e.flush(&mut b, 7).unwrap_err().to_string();
        assert!(
            err.contains("f.jsonl:2") && err.contains("invalid JSON") && err.contains("--strict"),
            "{err}"
        );
    }
}
