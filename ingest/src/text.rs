//! Plain-text reader: one document per file (`.txt`, `.md`, optionally compressed).
//!
//! The document's id is the file's name (its path relative to the input root), its source
//! the name of the folder holding it (a folder of text files is usually one corpus; naming
//! each document's source after its own file would make `source` useless), and `meta` is
//! null. A file that is not valid UTF-8 is quarantined whole, with the offset of the first
//! bad byte.

use quern_core::Result;

use crate::batch::{Builders, Emitter};
use crate::open::{read_all, Input};

pub(crate) fn read(mut input: Input, name: &str, source: &str, em: &mut Emitter<'_>) -> Result<()> {
    let mut buf = Vec::new();
    if let Err(e) = read_all(input.reader.as_mut(), &mut buf) {
        let at = input.skipped + buf.len() as u64;
        let msg = format!("the stream broke at decompressed byte {at}: {e}");
        return Err(em.fail(
            None,
            Some(at),
            &msg,
            Some(buf.as_slice()),
            source,
            input.consumed(),
        ));
    }
    let mut b = Builders::new(1);
    match std::str::from_utf8(&buf) {
        Ok(text) => b.doc(name, text, source, None),
        Err(e) => {
            let at = e.valid_up_to();
            let line = memchr::memchr_iter(b'\n', &buf[..at]).count() as u64 + 1;
            let at = at as u64 + input.skipped;
            let msg = format!("invalid UTF-8 at byte {at} (line {line})");
            b.quarantine(
                &em.file,
                Some(line),
                Some(at),
                &msg,
                Some(buf.as_slice()),
                source,
            );
        }
    }
    em.flush(&mut b, input.consumed())
}
