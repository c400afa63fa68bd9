//! Opening an input file as a buffered byte stream: decompression by extension, and a count
//! of the on-disk bytes consumed so far (for the progress bar and for saying how far a
//! broken file was read).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quern_core::error::IoContext;
use quern_core::Result;

use crate::options::Compression;

/// Read buffer size: large enough that syscalls and decoder calls are not the bottleneck.
const BUF: usize = 1 << 20;

/// Counts bytes read from the underlying file.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An open input: the decompressed byte stream, and how many on-disk bytes it has consumed.
pub(crate) struct Input {
    pub reader: Box<dyn BufRead + Send>,
    pub consumed: Arc<AtomicU64>,
    /// Bytes skipped at the start (a UTF-8 byte-order mark): where offsets start counting.
    pub skipped: u64,
}

impl Input {
    pub(crate) fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }
}

/// Opens `path`, decompressing `.gz` (all members) and `.zst` by its name.
pub(crate) fn open(path: &Path) -> Result<Input> {
    let file = File::open(path).at(path)?;
    let consumed = Arc::new(AtomicU64::new(0));
    let counted = Counting {
        inner: file,
        count: consumed.clone(),
    };
    let mut reader: Box<dyn BufRead + Send> = match Compression::of(path) {
        Compression::None => Box::new(BufReader::with_capacity(BUF, counted)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUF,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(BUF, counted)),
        )),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::new(counted).at(path)?;
            Box::new(BufReader::with_capacity(BUF, dec))
        }
    };
    let skipped = skip_bom(reader.as_mut()).at(path)?;
    Ok(Input {
        reader,
        consumed,
        skipped,
    })
}

/// The UTF-8 byte-order mark that Windows tools write at the start of text files.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Skips a UTF-8 byte-order mark at the start of the stream; returns the bytes skipped (0 or
/// 3). A BOM split across the first two reads of a decompressor is not recognised (no real
/// reader returns fewer than 3 bytes first).
fn skip_bom(r: &mut dyn BufRead) -> io::Result<u64> {
    let buf = loop {
        match r.fill_buf() {
            Ok(b) => break b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if buf.starts_with(BOM) {
        r.consume(BOM.len());
        Ok(BOM.len() as u64)
    } else {
        Ok(0)
    }
}

/// Reads to the end of the stream, stopping at an error but keeping what was read before it.
pub(crate) fn read_all(r: &mut dyn BufRead, out: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(());
        }
        out.extend_from_slice(buf);
        let n = buf.len();
        r.consume(n);
    }
}
