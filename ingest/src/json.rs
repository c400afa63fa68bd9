//! JSONL and JSON-array readers.
//!
//! Both cut the (decompressed) byte stream into raw records without parsing them: lines for
//! JSONL, top-level elements for a JSON array (a small scanner that tracks strings and
//! nesting, so an array of any size is streamed, never loaded). Records are gathered into a
//! raw batch of at most `batch_rows` records (or [`BATCH_BYTES`] bytes), and each batch is
//! parsed in parallel with rayon while the next one is read (`rayon::join`), so one large
//! file uses every core. Memory is a few batches, whatever the file size.
//!
//! A stream that breaks (a truncated `.gz`/`.zst`, an array that ends inside an element)
//! stops reading: the records before the break are emitted, the break is quarantined with
//! its line and byte offset, and the caller gets an error naming the file and how far it
//! was read.

use std::io::{self, BufRead};

use arrow::compute::concat_batches;
use quern_core::schema::{doc_schema, quarantine_schema};
use quern_core::Result;
use rayon::prelude::*;

use crate::batch::{Builders, Emitter, BATCH_BYTES};
use crate::open::Input;
use crate::record::{RecordParser, RecordPlace};
use crate::Chunk;

/// One raw record's place in a [`RawBatch`] and in the file.
#[derive(Clone, Copy)]
struct RawRec {
    start: usize,
    end: usize,
    line: u64,
    offset: u64,
    ordinal: u64,
}

#[derive(Default)]
struct RawBatch {
    buf: Vec<u8>,
    recs: Vec<RawRec>,
}

impl RawBatch {
    fn clear(&mut self) {
        self.buf.clear();
        self.recs.clear();
    }
}

/// Where and why a stream stopped early.
struct Failure {
    message: String,
    line: u64,
    offset: u64,
    raw: Vec<u8>,
}

/// Cuts a stream into raw records.
trait Splitter: Send {
    /// Fills `b` with up to `rows` records; `Err` when the stream breaks (records read
    /// before the break stay in `b`).
    fn fill(&mut self, rows: usize, b: &mut RawBatch) -> Result<(), Failure>;
    fn done(&self) -> bool;
}

/// JSONL: one record per line.
struct Lines {
    reader: Box<dyn BufRead + Send>,
    line: u64,
    offset: u64,
    eof: bool,
}

impl Splitter for Lines {
    fn fill(&mut self, rows: usize, b: &mut RawBatch) -> Result<(), Failure> {
        b.clear();
        while !self.eof && b.recs.len() < rows && b.buf.len() < BATCH_BYTES {
            let start = b.buf.len();
            match self.reader.read_until(b'\n', &mut b.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.line += 1;
                    b.recs.push(RawRec {
                        start,
                        end: b.buf.len(),
                        line: self.line,
                        offset: self.offset,
                        ordinal: self.line,
                    });
                    self.offset += n as u64;
                }
                Err(e) => {
                    self.eof = true;
                    let raw = b.buf.split_off(start);
                    return Err(Failure {
                        message: format!(
                            "the stream broke at decompressed byte {} (line {}): {e}",
                            self.offset + raw.len() as u64,
                            self.line + 1
                        ),
                        line: self.line + 1,
                        offset: self.offset,
                        raw,
                    });
                }
            }
        }
        Ok(())
    }
    fn done(&self) -> bool {
        self.eof
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Start,
    Array { first: bool },
    AfterArray,
    Sequence,
    Done,
}

/// A JSON array streamed element by element; a file not starting with `[` is read as a
/// sequence of top-level values.
struct Elements {
    reader: Box<dyn BufRead + Send>,
    /// Decompressed offset of the next unread byte.
    offset: u64,
    /// 1-based line of the next unread byte.
    line: u64,
    mode: Mode,
    ordinal: u64,
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

impl Elements {
    fn consume(&mut self, n: usize) {
        if let Ok(buf) = self.reader.fill_buf() {
            self.line += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        }
        self.reader.consume(n);
        self.offset += n as u64;
    }

    /// The next non-whitespace byte, not consumed; `None` at the end of the stream.
    fn skip_ws(&mut self) -> io::Result<Option<u8>> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|&c| !is_ws(c)) {
                Some(i) => {
                    let c = buf[i];
                    self.consume(i);
                    return Ok(Some(c));
                }
                None => {
                    let n = buf.len();
                    self.consume(n);
                }
            }
        }
    }

    /// Copies one JSON value (balanced brackets, strings with escapes, or a bare token) into
    /// `out`. Returns false when the stream ends inside the value.
    fn read_value(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        let (mut depth, mut in_str, mut esc, mut started) = (0usize, false, false, false);
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                // A bare token (number, literal) may end at the end of the stream.
                return Ok(started && depth == 0 && !in_str);
            }
            let mut end = None;
            for (i, &c) in buf.iter().enumerate() {
                if in_str {
                    if esc {
                        esc = false;
                    } else if c == b'\\' {
                        esc = true;
                    } else if c == b'"' {
                        in_str = false;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    continue;
                }
                if !started {
                    started = true;
                    match c {
                        b'"' => in_str = true,
                        b'{' | b'[' => depth = 1,
                        b',' | b']' | b'}' | b':' => {
                            // Stray punctuation: a one-byte (malformed) record.
                            end = Some(1);
                            break;
                        }
                        _ => {}
                    }
                    continue;
                }
                if depth == 0 {
                    // Inside a bare token: it ends at a delimiter, which is not consumed.
                    if is_ws(c) || matches!(c, b',' | b']' | b'}' | b'[' | b'{' | b'"') {
                        end = Some(i);
                        break;
                    }
                    continue;
                }
                match c {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let n = end.unwrap_or(buf.len());
            out.extend_from_slice(&buf[..n]);
            let newlines = memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            self.reader.consume(n);
            self.offset += n as u64;
            self.line += newlines;
            if end.is_some() {
                return Ok(true);
            }
        }
    }

    fn failure(&self, message: String, raw: Vec<u8>) -> Failure {
        Failure {
            message,
            line: self.line,
            offset: self.offset,
            raw,
        }
    }

    /// Reads the next element into `b`; Ok(false) at the end.
    fn next(&mut self, b: &mut RawBatch) -> Result<bool, Failure> {
        let io_fail = |s: &Self, e: io::Error| {
            s.failure(
                format!("the stream broke at decompressed byte {}: {e}", s.offset),
                Vec::new(),
            )
        };
        loop {
            let c = match self.skip_ws() {
                Ok(c) => c,
                Err(e) => return Err(io_fail(self, e)),
            };
            match (self.mode, c) {
                (Mode::Done, _) => return Ok(false),
                (Mode::Start, None) | (Mode::Sequence, None) | (Mode::AfterArray, None) => {
                    self.mode = Mode::Done;
                    return Ok(false);
                }
                (Mode::Start, Some(b'[')) => {
                    self.consume(1);
                    self.mode = Mode::Array { first: true };
                }
                (Mode::Start, Some(_)) => self.mode = Mode::Sequence,
                (Mode::Array { .. }, None) => {
                    self.mode = Mode::Done;
                    return Err(self.failure(
                        format!("the JSON array is truncated: the file ends after element {} without `]`", self.ordinal),
                        Vec::new(),
                    ));
                }
                (Mode::Array { .. }, Some(b']')) => {
                    self.consume(1);
                    self.mode = Mode::AfterArray;
                }
                (Mode::Array { first: false }, Some(b',')) => {
                    self.consume(1);
                    self.mode = Mode::Array { first: true };
                }
                (Mode::Array { first: false }, Some(c)) => {
                    self.mode = Mode::Done;
                    return Err(self.failure(
                        format!(
                            "expected `,` or `]` after element {} of the JSON array, found `{}`",
                            self.ordinal, c as char
                        ),
                        Vec::new(),
                    ));
                }
                (Mode::AfterArray, Some(c)) => {
                    self.mode = Mode::Done;
                    return Err(self.failure(
                        format!("unexpected `{}` after the end of the JSON array", c as char),
                        Vec::new(),
                    ));
                }
                (Mode::Array { first: true }, Some(_)) | (Mode::Sequence, Some(_)) => {
                    let (line, offset) = (self.line, self.offset);
                    let start = b.buf.len();
                    match self.read_value(&mut b.buf) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.mode = Mode::Done;
                            let raw = b.buf.split_off(start);
                            return Err(Failure {
                                message: format!(
                                    "the file ends inside element {} (truncated JSON)",
                                    self.ordinal + 1
                                ),
                                line,
                                offset,
                                raw,
                            });
                        }
                        Err(e) => {
                            self.mode = Mode::Done;
                            let raw = b.buf.split_off(start);
                            let mut f = io_fail(self, e);
                            f.raw = raw;
                            return Err(f);
                        }
                    }
                    self.ordinal += 1;
                    b.recs.push(RawRec {
                        start,
                        end: b.buf.len(),
                        line,
                        offset,
                        ordinal: self.ordinal,
                    });
                    if let Mode::Array { .. } = self.mode {
                        self.mode = Mode::Array { first: false };
                    }
                    return Ok(true);
                }
            }
        }
    }
}

impl Splitter for Elements {
    fn fill(&mut self, rows: usize, b: &mut RawBatch) -> Result<(), Failure> {
        b.clear();
        while b.recs.len() < rows && b.buf.len() < BATCH_BYTES {
            if !self.next(b)? {
                break;
            }
        }
        Ok(())
    }
    fn done(&self) -> bool {
        self.mode == Mode::Done
    }
}

/// Per-file settings every parse of a raw batch needs.
pub(crate) struct JsonCfg<'a> {
    pub file: &'a str,
    pub name: &'a str,
    pub text_field: &'a str,
    pub id_field: Option<&'a str>,
    pub forced_source: Option<&'a str>,
    pub default_source: &'a str,
}

fn parse_part(cfg: &JsonCfg<'_>, raw: &RawBatch, recs: &[RawRec]) -> Result<Chunk> {
    let mut p = RecordParser::new(
        cfg.text_field,
        cfg.id_field,
        cfg.forced_source,
        cfg.default_source,
    );
    let mut b = Builders::new(recs.len());
    for r in recs {
        let at = RecordPlace {
            file: cfg.file,
            name: cfg.name,
            line: r.line,
            offset: r.offset,
            ordinal: r.ordinal,
        };
        p.parse(&raw.buf[r.start..r.end], &at, &mut b);
    }
    b.finish()
}

/// Parses a raw batch, in parallel pieces when it is large enough to be worth it.
fn parse_batch(cfg: &JsonCfg<'_>, raw: &RawBatch) -> Result<Chunk> {
    let n = raw.recs.len();
    let pieces = rayon::current_num_threads().min(n / 256).max(1);
    if pieces == 1 {
        return parse_part(cfg, raw, &raw.recs);
    }
    let per = n.div_ceil(pieces);
    let parts: Vec<Chunk> = raw
        .recs
        .par_chunks(per)
        .map(|recs| parse_part(cfg, raw, recs))
        .collect::<Result<_>>()?;
    let docs = concat_batches(&doc_schema(), parts.iter().map(|c| &c.docs))?;
    let quarantine = concat_batches(&quarantine_schema(), parts.iter().map(|c| &c.quarantine))?;
    Ok(Chunk {
        docs,
        quarantine,
        rejected: arrow::array::RecordBatch::new_empty(quern_core::schema::rejected_schema()),
        bytes: 0,
    })
}

/// Reads a JSONL stream (`array == false`) or a JSON array / value sequence.
pub(crate) fn read(
    input: Input,
    array: bool,
    cfg: &JsonCfg<'_>,
    rows: usize,
    em: &mut Emitter<'_>,
) -> Result<()> {
    let consumed = input.consumed.clone();
    let mut split: Box<dyn Splitter> = if array {
        Box::new(Elements {
            reader: input.reader,
            offset: input.skipped,
            line: 1,
            mode: Mode::Start,
            ordinal: 0,
        })
    } else {
        Box::new(Lines {
            reader: input.reader,
            line: 0,
            offset: input.skipped,
            eof: false,
        })
    };
    let bytes = || consumed.load(std::sync::atomic::Ordering::Relaxed);
    let mut cur = RawBatch::default();
    let mut next = RawBatch::default();
    let mut fail = split.fill(rows, &mut cur).err();
    loop {
        if cur.recs.is_empty() && fail.is_none() {
            break;
        }
        let (chunk, next_fail) = if fail.is_none() && !split.done() {
            let (c, f) = rayon::join(
                || parse_batch(cfg, &cur),
                || split.fill(rows, &mut next).err(),
            );
            (c, f)
        } else {
            next.clear();
            (parse_batch(cfg, &cur), None)
        };
        em.emit(chunk?, bytes())?;
        if let Some(f) = fail {
            return Err(em.fail(
                Some(f.line),
                Some(f.offset),
                &f.message,
                Some(f.raw.as_slice()),
                cfg.forced_source.unwrap_or(cfg.default_source),
                bytes(),
            ));
        }
        std::mem::swap(&mut cur, &mut next);
        fail = next_fail;
    }
    Ok(())
}
