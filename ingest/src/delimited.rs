//! CSV and TSV readers (header row required).
//!
//! CSV follows RFC 4180 (quoted fields may hold commas and newlines); TSV follows the IANA
//! text/tab-separated-values type (no quoting; a tab or newline never occurs inside a
//! field). Records are read as bytes so that one field with invalid UTF-8 quarantines its
//! record, not the file. Every column other than the text and id columns goes to `meta` as a
//! JSON string (CSV has no types; quern does not guess them). Generated ids are
//! `<file>:<line>`, the line where the record starts.

use std::fmt::Write as _;

use csv::{ByteRecord, ReaderBuilder};
use quern_core::error::Place;
use quern_core::{Error, Result};

use crate::batch::{Builders, Emitter, BATCH_BYTES};
use crate::open::Input;

pub(crate) struct DelimitedCfg<'a> {
    pub name: &'a str,
    pub tsv: bool,
    pub text_field: &'a str,
    pub id_field: Option<&'a str>,
    pub forced_source: Option<&'a str>,
    pub default_source: &'a str,
}

fn join_raw(rec: &ByteRecord, sep: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in rec.iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.extend_from_slice(f);
    }
    out
}

pub(crate) fn read(
    input: Input,
    cfg: &DelimitedCfg<'_>,
    rows: usize,
    em: &mut Emitter<'_>,
) -> Result<()> {
    let src = cfg.forced_source.unwrap_or(cfg.default_source);
    let consumed = input.consumed.clone();
    let bytes = || consumed.load(std::sync::atomic::Ordering::Relaxed);
    let sep = if cfg.tsv { b'\t' } else { b',' };
    let mut rdr = ReaderBuilder::new()
        .delimiter(sep)
        .quoting(!cfg.tsv)
        .has_headers(true)
        .flexible(true)
        .from_reader(input.reader);
    let headers = match rdr.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(em.fail(
                Some(1),
                Some(0),
                &format!("cannot read the header row: {e}"),
                None,
                src,
                bytes(),
            ))
        }
    };
    let mut names = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        match std::str::from_utf8(h) {
            Ok(s) => names.push(s.to_string()),
            Err(_) => {
                return Err(Error::bad_input(
                    Place::file(&em.path).with_line(1),
                    format!("header column {} is not valid UTF-8", i + 1),
                ));
            }
        }
    }
    let text_idx = names
        .iter()
        .position(|n| n == cfg.text_field)
        .ok_or_else(|| {
            Error::bad_input(
                Place::file(&em.path).with_line(1),
                format!(
                    "no column `{}` in the header; its columns are [{}]: pass one as --text-field",
                    cfg.text_field,
                    names.join(", ")
                ),
            )
        })?;
    let id_idx = match cfg.id_field {
        Some(f) => Some(names.iter().position(|n| n == f).ok_or_else(|| {
            Error::bad_input(
                Place::file(&em.path).with_line(1),
                format!(
                    "no id column `{f}` in the header; its columns are [{}]",
                    names.join(", ")
                ),
            )
        })?),
        None => None,
    };
    let source_idx = if cfg.forced_source.is_some() {
        None
    } else {
        names.iter().position(|n| n == "source")
    };
    // JSON-escaped keys, computed once.
    let keys: Vec<String> = names
        .iter()
        .map(|n| serde_json::to_string(n).unwrap_or_default())
        .collect();

    let mut rec = ByteRecord::new();
    let mut b = Builders::new(rows);
    let mut meta = String::new();
    let mut id = String::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let (line, off) = e.position().map(|p| (p.line(), p.byte())).unwrap_or((0, 0));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    em.flush(&mut b, bytes())?;
                    return Err(em.fail(
                        Some(line.max(1)),
                        Some(off),
                        &format!("the stream broke: {e}"),
                        None,
                        src,
                        bytes(),
                    ));
                }
                b.quarantine(
                    &em.file,
                    Some(line),
                    Some(off),
                    &format!("malformed record: {e}"),
                    None,
                    src,
                );
                continue;
            }
        }
        let pos = rec.position().cloned().unwrap_or_else(csv::Position::new);
        let (line, off) = (pos.line(), pos.byte());
        if rec.len() != names.len() {
            let msg = format!(
                "the record has {} fields, the header has {}",
                rec.len(),
                names.len()
            );
            b.quarantine(
                &em.file,
                Some(line),
                Some(off),
                &msg,
                Some(join_raw(&rec, sep).as_slice()),
                src,
            );
        } else {
            match rec.iter().position(|f| std::str::from_utf8(f).is_err()) {
                Some(bad) => {
                    let msg = format!("column `{}` holds invalid UTF-8", names[bad]);
                    b.quarantine(
                        &em.file,
                        Some(line),
                        Some(off),
                        &msg,
                        Some(join_raw(&rec, sep).as_slice()),
                        src,
                    );
                }
                None => {
                    // Every field is valid UTF-8 (checked above).
                    let field = |i: usize| std::str::from_utf8(&rec[i]).unwrap_or_default();
                    meta.clear();
                    for (i, key) in keys.iter().enumerate() {
                        if i == text_idx || Some(i) == id_idx {
                            continue;
                        }
                        meta.push(if meta.is_empty() { '{' } else { ',' });
                        meta.push_str(key);
                        meta.push(':');
                        let _ = write!(meta, "{}", serde_json::Value::String(field(i).to_string()));
                    }
                    let m = if meta.is_empty() {
                        None
                    } else {
                        meta.push('}');
                        Some(meta.as_str())
                    };
                    id.clear();
                    match id_idx {
                        Some(i) => id.push_str(field(i)),
                        None => {
                            let _ = write!(id, "{}:{line}", cfg.name);
                        }
                    }
                    let s = source_idx
                        .map(field)
                        .filter(|s| !s.is_empty())
                        .unwrap_or(src);
                    b.doc(&id, field(text_idx), s, m);
                }
            }
        }
        if b.len() >= rows || b.text_bytes >= BATCH_BYTES {
            em.flush(&mut b, bytes())?;
        }
    }
    em.flush(&mut b, bytes())
}
