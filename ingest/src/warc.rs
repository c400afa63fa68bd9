//! WARC and WET reader: web crawls, one document per page.
//!
//! A WARC file (ISO 28500, WARC/1.0 and 1.1) is a sequence of records, each a version line,
//! named headers, a blank line and `Content-Length` bytes of content. Common Crawl writes
//! `.warc.gz` with every record in its own gzip member, so that a record can be fetched by
//! (offset, length); its WET files are the same format with `conversion` records holding
//! the extracted text.
//!
//! Reading:
//!
//! - **Gzip members are tracked**: the decoder ([`Members`]) reads one member at a time
//!   (flate2's single-member decoder over the file), so a record's `byte_offset` is the
//!   on-disk offset of the member it starts in (the offset Common Crawl's index gives), and
//!   a broken member is skipped: the reader seeks past its start to the next gzip header and
//!   goes on. For an uncompressed `.warc`, offsets are plain file offsets.
//! - **Streaming, bounded**: records are read into batches of at most `batch_rows` records
//!   or [`WARC_BATCH_BYTES`] of content; a record's content is kept up to `max_page_bytes`
//!   and the rest is skipped without being held, so a 50 MB page costs at most that much
//!   memory. Batches are processed (HTTP parsing, charset, HTML extraction) in parallel
//!   with rayon while the next one is read.
//! - **Every record is accounted for**:
//!   - `response` (an HTTP response) with a 2xx status and an HTML payload: a document
//!     whose `text` is the page's main text ([`crate::html`]); `resource` records with an
//!     HTML content type likewise, without the HTTP layer; `conversion` (WET): a document
//!     with the record's text;
//!   - other records are rejected (table `rejected`, `rejected_by = "warc"`) with a
//!     reason: `warc_request`, `warc_warcinfo`, `warc_metadata`, `warc_revisit`,
//!     `warc_<type>` for any other type, `http_redirect` (3xx), `http_error` (any other
//!     non-2xx status), `not_html` (another content type), `page_too_large` (content over
//!     `max_page_bytes`), `no_main_text` (nothing left after extraction);
//!   - records that cannot be read go to `quarantine` with their byte offset: a missing
//!     version line or `Content-Length`, an HTTP response without a status line, a payload
//!     whose `Content-Encoding` cannot be decoded, a broken gzip member. A record whose
//!     declared length runs past the end of the file, or a file that ends inside a record,
//!     is quarantined and ends the file with an error (as a truncated `.jsonl.gz` does).
//! - **Columns**: the document's `meta` holds `url`, `warc_record_id`, `date`,
//!   `content_type`, `http_status`, `charset`, `title`, `lang`, `description` and
//!   `warc_offset` (where known), so `url_filter` and SQL (`meta->>'url'`) find them. The
//!   raw payload is never in `text`. The id is `<file name>:<record number>` (1-based,
//!   counting every record), the WARC-Record-ID is in `meta`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::bufread::GzDecoder;
use quern_core::error::IoContext;
use quern_core::Result;
use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::batch::{Builders, Emitter};
use crate::html;
use crate::options::Compression;

/// Content bytes (after `max_page_bytes` cuts) gathered before a batch is processed.
pub(crate) const WARC_BATCH_BYTES: usize = 32 << 20;
/// The longest header line, and all of a record's headers together.
const MAX_LINE: usize = 64 << 10;
const MAX_HEADERS: usize = 1 << 20;
const BUF: usize = 1 << 20;

/// Counts bytes read from the file (for progress).
struct Counting {
    inner: File,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for Counting {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

type Raw = BufReader<Counting>;

/// A byte stream that knows the on-disk offset of what it is about to hand out, and can
/// skip a broken gzip member.
trait Source: BufRead + Send {
    /// The offset to report for a record starting at the next byte of `fill_buf`.
    fn offset(&mut self) -> u64;
    /// After a read error: skips to the next gzip member. `Some(offset)` of that member, or
    /// `None` when there is none (or the stream cannot skip).
    fn resync(&mut self) -> io::Result<Option<u64>>;
}

/// An uncompressed file.
struct Plain {
    r: Raw,
    pos: u64,
}

impl Read for Plain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl BufRead for Plain {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.r.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.pos += n as u64;
        self.r.consume(n)
    }
}

impl Source for Plain {
    fn offset(&mut self) -> u64 {
        self.pos
    }
    fn resync(&mut self) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

enum State {
    /// Between members: the file positioned at the next one (or at its end).
    Between(Raw),
    Decoding(Box<GzDecoder<Raw>>),
    /// A member failed to decode.
    Broken(Raw),
    Done,
}

/// A gzip file read member by member.
struct Members {
    state: State,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// On-disk offset of the member that produced `buf`.
    member_start: u64,
}

const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

impl Read for Members {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let b = self.fill_buf()?;
        let n = b.len().min(out.len());
        out[..n].copy_from_slice(&b[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Members {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.len {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Ok(&[]),
                State::Broken(r) => {
                    self.state = State::Broken(r);
                    return Err(io::Error::other("the gzip member is broken"));
                }
                State::Between(mut raw) => {
                    if raw.fill_buf()?.is_empty() {
                        return Ok(&[]);
                    }
                    self.member_start = raw.stream_position()?;
                    self.state = State::Decoding(Box::new(GzDecoder::new(raw)));
                }
                State::Decoding(mut dec) => match dec.read(&mut self.buf) {
                    Ok(0) => self.state = State::Between(dec.into_inner()),
                    Ok(n) => {
                        self.pos = 0;
                        self.len = n;
                        self.state = State::Decoding(dec);
                    }
                    Err(e) => {
                        self.state = State::Broken(dec.into_inner());
                        return Err(e);
                    }
                },
            }
        }
        Ok(&self.buf[self.pos..self.len])
    }
    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

impl Source for Members {
    fn offset(&mut self) -> u64 {
        self.member_start
    }

    fn resync(&mut self) -> io::Result<Option<u64>> {
        self.pos = 0;
        self.len = 0;
        let mut raw = match std::mem::replace(&mut self.state, State::Done) {
            State::Broken(r) | State::Between(r) => r,
            State::Decoding(d) => d.into_inner(),
            State::Done => return Ok(None),
        };
        raw.seek(SeekFrom::Start(self.member_start + 1))?;
        let mut matched = 0usize;
        loop {
            let at = raw.stream_position()?;
            let b = raw.fill_buf()?;
            if b.is_empty() {
                return Ok(None);
            }
            for (k, &c) in b.iter().enumerate() {
                if c == GZIP_MAGIC[matched] {
                    matched += 1;
                    if matched == GZIP_MAGIC.len() {
                        let start = at + k as u64 + 1 - GZIP_MAGIC.len() as u64;
                        raw.seek(SeekFrom::Start(start))?;
                        self.member_start = start;
                        self.state = State::Between(raw);
                        return Ok(Some(start));
                    }
                } else {
                    matched = usize::from(c == GZIP_MAGIC[0]);
                }
            }
            let n = b.len();
            raw.consume(n);
        }
    }
}

/// One record as read from the file, before its content is interpreted.
pub(crate) struct RawRecord {
    /// Position in the file (1-based, counting every record).
    ordinal: u64,
    offset: u64,
    typ: String,
    uri: Option<String>,
    record_id: Option<String>,
    date: Option<String>,
    content_type: Option<String>,
    /// Declared content length.
    length: u64,
    /// The content, cut to `max_page_bytes`.
    content: Vec<u8>,
}

/// A record that could not be read.
struct Bad {
    offset: u64,
    message: String,
    raw: Vec<u8>,
    /// The file cannot be read past this point.
    fatal: bool,
}

enum Next {
    Record(RawRecord),
    Bad(Bad),
    End,
}

enum Line {
    Eof,
    Read,
    TooLong,
}

/// Reads one line (with its `\n`) into `out`, at most `cap` bytes.
fn read_line(src: &mut dyn Source, out: &mut Vec<u8>, cap: usize) -> io::Result<Line> {
    out.clear();
    loop {
        let b = src.fill_buf()?;
        if b.is_empty() {
            return Ok(if out.is_empty() {
                Line::Eof
            } else {
                Line::Read
            });
        }
        let (take, done) = match memchr::memchr(b'\n', b) {
            Some(i) => (i + 1, true),
            None => (b.len(), false),
        };
        if out.len() + take > cap {
            return Ok(Line::TooLong);
        }
        out.extend_from_slice(&b[..take]);
        src.consume(take);
        if done {
            return Ok(Line::Read);
        }
    }
}

fn is_version_line(l: &[u8]) -> bool {
    l.starts_with(b"WARC/")
}

/// Cuts a file into raw records.
struct Reader {
    src: Box<dyn Source>,
    max_content: u64,
    ordinal: u64,
    /// A version line found while skipping garbage, to start the next record with.
    pending: Option<(u64, Vec<u8>)>,
    line: Vec<u8>,
    done: bool,
}

impl Reader {
    /// Skips lines up to the next version line, keeping the first bytes skipped for the
    /// quarantine row. The version line found is kept for the next record.
    fn skip_to_record(&mut self, raw: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let at = self.src.offset();
            match read_line(self.src.as_mut(), &mut self.line, MAX_LINE)? {
                Line::Eof => return Ok(()),
                Line::TooLong => {
                    // Drop the rest of the overlong line.
                    loop {
                        let b = self.src.fill_buf()?;
                        if b.is_empty() {
                            return Ok(());
                        }
                        if let Some(i) = memchr::memchr(b'\n', b) {
                            self.src.consume(i + 1);
                            break;
                        }
                        let n = b.len();
                        self.src.consume(n);
                    }
                }
                Line::Read if is_version_line(&self.line) => {
                    self.pending = Some((at, std::mem::take(&mut self.line)));
                    return Ok(());
                }
                Line::Read => {
                    if raw.len() < quern_core::schema::RAW_LIMIT {
                        raw.extend_from_slice(&self.line);
                    }
                }
            }
        }
    }

    fn next(&mut self) -> Next {
        match self.try_next() {
            Ok(n) => n,
            Err(e) => {
                // A read error inside a record: a broken gzip member (or an I/O error).
                let offset = self.src.offset();
                self.ordinal += 1;
                self.pending = None;
                match self.src.resync() {
                    Ok(Some(next)) => Next::Bad(Bad {
                        offset,
                        message: format!(
                            "broken gzip member at byte {offset}: {e}; reading resumed at the next member, byte {next}"
                        ),
                        raw: Vec::new(),
                        fatal: false,
                    }),
                    _ => {
                        self.done = true;
                        Next::Bad(Bad {
                            offset,
                            message: format!("the stream broke at byte {offset}: {e}"),
                            raw: Vec::new(),
                            fatal: true,
                        })
                    }
                }
            }
        }
    }

    fn try_next(&mut self) -> io::Result<Next> {
        if self.done {
            return Ok(Next::End);
        }
        let (offset, first) = match self.pending.take() {
            Some(p) => p,
            None => {
                // Blank lines between records.
                loop {
                    let b = self.src.fill_buf()?;
                    if b.is_empty() {
                        self.done = true;
                        return Ok(Next::End);
                    }
                    let n = b.iter().take_while(|&&c| c == b'\r' || c == b'\n').count();
                    if n == 0 {
                        break;
                    }
                    self.src.consume(n);
                }
                let at = self.src.offset();
                match read_line(self.src.as_mut(), &mut self.line, MAX_LINE)? {
                    Line::Eof => {
                        self.done = true;
                        return Ok(Next::End);
                    }
                    Line::Read if is_version_line(&self.line) => {
                        (at, std::mem::take(&mut self.line))
                    }
                    _ => {
                        self.ordinal += 1;
                        let mut raw = std::mem::take(&mut self.line);
                        raw.truncate(quern_core::schema::RAW_LIMIT);
                        self.skip_to_record(&mut raw)?;
                        return Ok(Next::Bad(Bad {
                            offset: at,
                            message: format!(
                                "not a WARC record at byte {at}: expected a `WARC/1.x` version line"
                            ),
                            raw,
                            fatal: false,
                        }));
                    }
                }
            }
        };
        self.ordinal += 1;
        let mut head = first;
        let mut fields: Vec<(String, String)> = Vec::new();
        loop {
            match read_line(self.src.as_mut(), &mut self.line, MAX_LINE)? {
                Line::Eof => {
                    self.done = true;
                    return Ok(Next::Bad(Bad {
                        offset,
                        message: format!(
                            "the file ends inside the headers of the record at byte {offset}"
                        ),
                        raw: head,
                        fatal: true,
                    }));
                }
                Line::TooLong => {
                    let mut raw = head;
                    raw.truncate(quern_core::schema::RAW_LIMIT);
                    self.skip_to_record(&mut raw)?;
                    return Ok(Next::Bad(Bad {
                        offset,
                        message: format!("a header line of the record at byte {offset} is longer than {MAX_LINE} bytes"),
                        raw,
                        fatal: false,
                    }));
                }
                Line::Read => {}
            }
            if head.len() < MAX_HEADERS {
                head.extend_from_slice(&self.line);
            }
            let l = self.line.trim_ascii_end();
            if l.is_empty() {
                break;
            }
            if matches!(l[0], b' ' | b'\t') {
                if let Some(last) = fields.last_mut() {
                    last.1.push(' ');
                    last.1
                        .push_str(String::from_utf8_lossy(l.trim_ascii()).as_ref());
                }
                continue;
            }
            if let Some(c) = memchr::memchr(b':', l) {
                let k = String::from_utf8_lossy(l[..c].trim_ascii()).into_owned();
                let v = String::from_utf8_lossy(l[c + 1..].trim_ascii()).into_owned();
                fields.push((k, v));
            }
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let Some(length) = get("Content-Length").and_then(|v| v.parse::<u64>().ok()) else {
            let mut raw = head;
            raw.truncate(quern_core::schema::RAW_LIMIT);
            self.skip_to_record(&mut raw)?;
            return Ok(Next::Bad(Bad {
                offset,
                message: format!("the record at byte {offset} has no valid Content-Length header"),
                raw,
                fatal: false,
            }));
        };
        let keep = length.min(self.max_content);
        let mut content = Vec::with_capacity(keep.min(1 << 24) as usize);
        let mut got = 0u64;
        while got < length {
            let b = self.src.fill_buf()?;
            if b.is_empty() {
                self.done = true;
                head.truncate(quern_core::schema::RAW_LIMIT);
                return Ok(Next::Bad(Bad {
                    offset,
                    message: format!(
                        "the record at byte {offset} declares Content-Length {length} but the file ends after {got} bytes of it (truncated)"
                    ),
                    raw: head,
                    fatal: true,
                }));
            }
            let n = (b.len() as u64).min(length - got) as usize;
            if got < keep {
                let k = ((keep - got) as usize).min(n);
                content.extend_from_slice(&b[..k]);
            }
            self.src.consume(n);
            got += n as u64;
        }
        let typ = get("WARC-Type").unwrap_or_default().to_ascii_lowercase();
        Ok(Next::Record(RawRecord {
            ordinal: self.ordinal,
            offset,
            typ,
            uri: get("WARC-Target-URI").map(|u| u.trim_matches(['<', '>']).to_string()),
            record_id: get("WARC-Record-ID"),
            date: get("WARC-Date"),
            content_type: get("Content-Type"),
            length,
            content,
        }))
    }
}

/// Opens a WARC file as a [`Source`]: member by member when it is gzip-compressed.
fn open_source(path: &Path) -> Result<(Box<dyn Source>, Arc<AtomicU64>)> {
    let file = File::open(path).at(path)?;
    let count = Arc::new(AtomicU64::new(0));
    let raw = BufReader::with_capacity(
        BUF,
        Counting {
            inner: file,
            count: count.clone(),
        },
    );
    let src: Box<dyn Source> = match Compression::of(path) {
        Compression::Gzip => Box::new(Members {
            state: State::Between(raw),
            buf: vec![0; BUF],
            pos: 0,
            len: 0,
            member_start: 0,
        }),
        _ => Box::new(Plain { r: raw, pos: 0 }),
    };
    Ok((src, count))
}

/// Per-file settings.
pub(crate) struct WarcCfg<'a> {
    pub name: &'a str,
    pub forced_source: Option<&'a str>,
    pub default_source: &'a str,
    pub max_page_bytes: u64,
}

/// What one record becomes.
enum Outcome {
    Doc {
        text: String,
        meta: Map<String, Value>,
    },
    Reject {
        reason: String,
        meta: Map<String, Value>,
    },
    Quarantine {
        message: String,
        raw: Vec<u8>,
    },
}

fn is_html(mime: &str) -> bool {
    matches!(mime, "text/html" | "application/xhtml+xml")
}

/// Whether an undeclared payload looks like HTML.
fn sniff_html(body: &[u8]) -> bool {
    let head = &body[..body.len().min(1024)];
    let t = head.trim_ascii_start();
    let t = t.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(t);
    let lower: Vec<u8> = t.iter().take(15).map(|c| c.to_ascii_lowercase()).collect();
    lower.starts_with(b"<!doctype html")
        || lower.starts_with(b"<html")
        || lower.starts_with(b"<head")
}

fn mime_of(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes `Transfer-Encoding: chunked`.
fn dechunk(mut b: &[u8], cap: usize) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = memchr::memchr(b'\n', b).ok_or("a chunk size line is cut")?;
        let line = std::str::from_utf8(&b[..nl]).map_err(|_| "a chunk size is not text")?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size `{hex}`"))?;
        b = &b[nl + 1..];
        if n == 0 {
            return Ok(out);
        }
        if n > b.len() {
            // A cut payload (over the size cap): keep what is there.
            out.extend_from_slice(b);
            return Ok(out);
        }
        out.extend_from_slice(&b[..n]);
        if out.len() > cap {
            return Ok(out);
        }
        b = &b[n..];
        b = b
            .strip_prefix(b"\r\n")
            .or_else(|| b.strip_prefix(b"\n"))
            .unwrap_or(b);
    }
}

fn decompress(body: &[u8], encoding: &str, cap: u64) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let r = match encoding {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(body)
            .take(cap)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .take(cap)
            .read_to_end(&mut out),
        other => return Err(format!("Content-Encoding `{other}` is not supported")),
    };
    r.map(|_| out)
        .map_err(|e| format!("the {encoding} payload cannot be decoded: {e}"))
}

fn base_meta(r: &RawRecord) -> Map<String, Value> {
    let mut m = Map::new();
    let s = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    m.insert("url".into(), s(&r.uri));
    m.insert("warc_type".into(), Value::String(r.typ.clone()));
    m.insert("warc_record_id".into(), s(&r.record_id));
    m.insert("date".into(), s(&r.date));
    m.insert("warc_offset".into(), Value::from(r.offset));
    m
}

fn process(r: &RawRecord, max: u64) -> Outcome {
    let mut meta = base_meta(r);
    let reject = |reason: &str, meta: Map<String, Value>| Outcome::Reject {
        reason: reason.to_string(),
        meta,
    };
    match r.typ.as_str() {
        "response" | "resource" => {}
        "conversion" => {
            let ct = r.content_type.clone();
            meta.insert(
                "content_type".into(),
                ct.clone().map_or(Value::Null, Value::String),
            );
            if r.length > max {
                return reject("page_too_large", meta);
            }
            let (text, enc, _) = html::charset::decode(&r.content, ct.as_deref(), r.uri.as_deref());
            meta.insert("charset".into(), Value::String(enc.name().into()));
            if text.trim().is_empty() {
                return reject("no_main_text", meta);
            }
            return Outcome::Doc {
                text: text.into_owned(),
                meta,
            };
        }
        "" => return reject("warc_untyped", meta),
        other => {
            return reject(
                &format!(
                    "warc_{}",
                    other.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
                ),
                meta,
            )
        }
    }
    let (ct, body): (Option<String>, std::borrow::Cow<'_, [u8]>) = if r.typ == "response"
        && r.content_type
            .as_deref()
            .is_some_and(|c| mime_of(c) == "application/http")
    {
        let c = &r.content;
        let end = memchr::memmem::find(c, b"\r\n\r\n")
            .map(|i| (i, i + 4))
            .or_else(|| memchr::memmem::find(c, b"\n\n").map(|i| (i, i + 2)));
        let Some((hend, bstart)) = end else {
            return Outcome::Quarantine {
                message: format!(
                    "the response record at byte {} has no complete HTTP header",
                    r.offset
                ),
                raw: c[..c.len().min(quern_core::schema::RAW_LIMIT)].to_vec(),
            };
        };
        let head = String::from_utf8_lossy(&c[..hend]);
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or("");
        let code = status_line
            .strip_prefix("HTTP/")
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok());
        let Some(code) = code else {
            return Outcome::Quarantine {
                message: format!(
                    "the response record at byte {} has no HTTP status line (found `{}`)",
                    r.offset,
                    status_line.chars().take(80).collect::<String>()
                ),
                raw: c[..c.len().min(quern_core::schema::RAW_LIMIT)].to_vec(),
            };
        };
        let mut ct = None;
        let (mut te, mut ce) = (String::new(), String::new());
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-type") {
                    ct = Some(v.to_string());
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    te = v.to_ascii_lowercase();
                } else if k.eq_ignore_ascii_case("content-encoding") {
                    ce = v.to_ascii_lowercase();
                }
            }
        }
        meta.insert("http_status".into(), Value::from(code));
        meta.insert(
            "content_type".into(),
            ct.clone().map_or(Value::Null, Value::String),
        );
        let mut body = std::borrow::Cow::Borrowed(&c[bstart..]);
        if (300..400).contains(&code) || !(200..300).contains(&code) {
            let reason = if (300..400).contains(&code) {
                "http_redirect"
            } else {
                "http_error"
            };
            return reject(reason, meta);
        }
        if r.length > max {
            return reject("page_too_large", meta);
        }
        if te.contains("chunked") {
            match dechunk(&body, max as usize) {
                Ok(b) => body = std::borrow::Cow::Owned(b),
                Err(e) => {
                    return Outcome::Quarantine {
                        message: format!(
                            "the chunked payload of the record at byte {}: {e}",
                            r.offset
                        ),
                        raw: Vec::new(),
                    }
                }
            }
        }
        if !ce.is_empty() && ce != "identity" {
            match decompress(&body, &ce, max) {
                Ok(b) => body = std::borrow::Cow::Owned(b),
                Err(e) => {
                    return Outcome::Quarantine {
                        message: format!("the record at byte {}: {e}", r.offset),
                        raw: Vec::new(),
                    }
                }
            }
        }
        (ct, body)
    } else {
        meta.insert(
            "content_type".into(),
            r.content_type.clone().map_or(Value::Null, Value::String),
        );
        if r.length > max {
            return reject("page_too_large", meta);
        }
        (
            r.content_type.clone(),
            std::borrow::Cow::Borrowed(&r.content[..]),
        )
    };
    let mime = ct.as_deref().map(mime_of).unwrap_or_default();
    let html_page = if mime.is_empty() {
        sniff_html(&body)
    } else {
        is_html(&mime)
    };
    if !html_page {
        return reject("not_html", meta);
    }
    let e = html::extract(&body, ct.as_deref(), r.uri.as_deref());
    meta.insert("charset".into(), Value::String(e.charset.into()));
    let opt = |v: Option<String>| v.map_or(Value::Null, Value::String);
    meta.insert("title".into(), opt(e.title));
    meta.insert("lang".into(), opt(e.lang));
    meta.insert("description".into(), opt(e.description));
    if e.text.is_empty() {
        return reject("no_main_text", meta);
    }
    Outcome::Doc { text: e.text, meta }
}

fn build(cfg: &WarcCfg<'_>, file: &str, recs: &[Next], out: &mut Builders) {
    let source = cfg.forced_source.unwrap_or(cfg.default_source);
    let outcomes: Vec<Option<(u64, Outcome)>> = recs
        .par_iter()
        .map(|n| match n {
            Next::Record(r) => Some((r.ordinal, process(r, cfg.max_page_bytes))),
            _ => None,
        })
        .collect();
    for (n, o) in recs.iter().zip(outcomes) {
        match (n, o) {
            (Next::Bad(b), _) => {
                out.quarantine(file, None, Some(b.offset), &b.message, Some(&b.raw), source)
            }
            (Next::Record(r), Some((ordinal, o))) => {
                let id = format!("{}:{ordinal}", cfg.name);
                match o {
                    Outcome::Doc { text, meta } => {
                        out.doc(&id, &text, source, Some(&Value::Object(meta).to_string()))
                    }
                    Outcome::Reject { reason, meta } => out.reject(
                        &id,
                        source,
                        Some(&Value::Object(meta).to_string()),
                        "warc",
                        &reason,
                    ),
                    Outcome::Quarantine { message, raw } => {
                        out.quarantine(file, None, Some(r.offset), &message, Some(&raw), source)
                    }
                }
            }
            _ => {}
        }
    }
}

/// Reads a WARC or WET file.
pub(crate) fn read(
    path: &Path,
    cfg: &WarcCfg<'_>,
    rows: usize,
    em: &mut Emitter<'_>,
) -> Result<()> {
    let (src, count) = open_source(path)?;
    let mut reader = Reader {
        src,
        max_content: cfg.max_page_bytes.saturating_add(1),
        ordinal: 0,
        pending: None,
        line: Vec::new(),
        done: false,
    };
    let file = em.file.clone();
    let bytes = || count.load(Ordering::Relaxed);
    let fill = |reader: &mut Reader, batch: &mut Vec<Next>| -> Option<Bad> {
        batch.clear();
        let mut size = 0usize;
        while batch.len() < rows && size < WARC_BATCH_BYTES {
            match reader.next() {
                Next::End => break,
                Next::Bad(b) if b.fatal => return Some(b),
                Next::Record(r) => {
                    size += r.content.len();
                    batch.push(Next::Record(r));
                }
                other => batch.push(other),
            }
        }
        None
    };
    let mut cur: Vec<Next> = Vec::new();
    let mut next: Vec<Next> = Vec::new();
    let mut fail = fill(&mut reader, &mut cur);
    loop {
        if cur.is_empty() && fail.is_none() {
            break;
        }
        let mut b = Builders::new(cur.len());
        let next_fail = if fail.is_none() && !reader.done {
            let (_, f) = rayon::join(
                || build(cfg, &file, &cur, &mut b),
                || fill(&mut reader, &mut next),
            );
            f
        } else {
            next.clear();
            build(cfg, &file, &cur, &mut b);
            None
        };
        em.flush(&mut b, bytes())?;
        if let Some(f) = fail {
            let source = cfg.forced_source.unwrap_or(cfg.default_source);
            return Err(em.fail(
                None,
                Some(f.offset),
                &f.message,
                Some(&f.raw),
                source,
                bytes(),
            ));
        }
        std::mem::swap(&mut cur, &mut next);
        fail = next_fail;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    fn record(typ: &str, extra: &str, content: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "WARC/1.1\r\nWARC-Type: {typ}\r\nWARC-Target-URI: http://x.test/{typ}\r\n{extra}Content-Length: {}\r\n\r\n",
            content.len()
        )
        .into_bytes();
        r.extend_from_slice(content);
        r.extend_from_slice(b"\r\n\r\n");
        r
    }

    #[test]
    fn garbage_and_headerless_records_are_quarantined_and_reading_goes_on() {
        let http = "Content-Type: application/http; msgtype=response\r\n";
        let page = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n\
            1c\r\n<p>A paragraph of real text \r\n2c\r\nthat is long enough to count as content.</p>\r\n0\r\n\r\n";
        let mut f = record("response", http, page);
        let first = f.len() as u64;
        f.extend_from_slice(b"this is not a record\r\nnor is this\r\n");
        f.extend_from_slice(b"WARC/1.0\r\nWARC-Type: resource\r\n\r\nno length here\r\n");
        f.extend(record(
            "conversion",
            "Content-Type: text/plain\r\n",
            "plain text, é".as_bytes(),
        ));
        f.extend(record("response", http, b"garbage, no status\r\n\r\n"));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.warc");
        std::fs::write(&p, &f).unwrap();
        let mut docs = Vec::new();
        let mut quarantined = Vec::new();
        let counts = crate::read_file(&p, &crate::IngestOptions::default(), &mut |c| {
            let t = c.docs.column(1).as_string::<i32>();
            docs.extend((0..t.len()).map(|i| t.value(i).to_string()));
            let e = c.quarantine.column(3).as_string::<i32>();
            let o = c
                .quarantine
                .column(2)
                .as_primitive::<arrow::datatypes::UInt64Type>();
            quarantined.extend((0..e.len()).map(|i| (o.value(i), e.value(i).to_string())));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            docs,
            [
                "A paragraph of real text that is long enough to count as content.",
                "plain text, é"
            ]
        );
        assert_eq!(quarantined.len(), 3, "{quarantined:?}");
        assert_eq!(quarantined[0].0, first);
        assert!(
            quarantined[0].1.contains("not a WARC record"),
            "{quarantined:?}"
        );
        assert!(
            quarantined[1].1.contains("no valid Content-Length"),
            "{quarantined:?}"
        );
        assert!(
            quarantined[2].1.contains("no HTTP status line"),
            "{quarantined:?}"
        );
        assert_eq!(
            (counts.records, counts.ingested, counts.quarantined),
            (5, 2, 3)
        );
    }

    #[test]
    fn chunked_and_content_types() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n", 1 << 20).unwrap(),
            b"hello world"
        );
        assert!(dechunk(b"zz\r\nhello", 100).is_err());
        assert_eq!(mime_of("Text/HTML; charset=utf-8"), "text/html");
        assert!(sniff_html(b"  <!DOCTYPE html><p>x"));
        assert!(!sniff_html(b"%PDF-1.4"));
    }
}
