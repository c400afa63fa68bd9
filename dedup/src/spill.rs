//! Sorted runs on disk: the external sort that keeps dedup within its memory budget.
//!
//! Why: grouping documents by band key (or content hash) means sorting one fixed-size record
//! per (document, band). Past the budget, the in-memory buffer is sorted and written to a
//! temporary file as a run; at the end the runs are merged with a heap, streaming, so the
//! resident set is the buffer plus one read buffer per run. Records are fixed-size
//! little-endian, so a run is a flat file with no framing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use quern_core::error::IoContext;
use quern_core::Result;
use rayon::slice::ParallelSliceMut;

/// A fixed-size, totally ordered record. The sort order groups records with equal keys and
/// orders each group by document position.
pub trait Rec: Copy + Ord + Send + Sync + std::fmt::Debug {
    const SIZE: usize;
    fn write_le(&self, out: &mut [u8]);
    fn read_le(buf: &[u8]) -> Self;
    /// The document position.
    fn pos(&self) -> u64;
    /// Whether two records share a key.
    fn same_key(&self, other: &Self) -> bool;
}

/// `(band key, position)`: 16 bytes.
impl Rec for (u64, u64) {
    const SIZE: usize = 16;
    fn write_le(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.0.to_le_bytes());
        out[8..16].copy_from_slice(&self.1.to_le_bytes());
    }
    fn read_le(buf: &[u8]) -> Self {
        (
            u64::from_le_bytes(buf[..8].try_into().unwrap()),
            u64::from_le_bytes(buf[8..16].try_into().unwrap()),
        )
    }
    fn pos(&self) -> u64 {
        self.1
    }
    fn same_key(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// `(128-bit content hash, position)`: 24 bytes.
impl Rec for (u128, u64) {
    const SIZE: usize = 24;
    fn write_le(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.0.to_le_bytes());
        out[16..24].copy_from_slice(&self.1.to_le_bytes());
    }
    fn read_le(buf: &[u8]) -> Self {
        (
            u128::from_le_bytes(buf[..16].try_into().unwrap()),
            u64::from_le_bytes(buf[16..24].try_into().unwrap()),
        )
    }
    fn pos(&self) -> u64 {
        self.1
    }
    fn same_key(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

/// Collects records; spills sorted runs to `dir` once the buffer holds `max_buffered`.
#[derive(Debug)]
pub struct Sorter<R: Rec> {
    dir: PathBuf,
    buf: Vec<R>,
    max_buffered: usize,
    runs: Vec<PathBuf>,
    spilled_bytes: u64,
}

impl<R: Rec> Sorter<R> {
    /// `max_buffered = usize::MAX` never spills.
    pub fn new(dir: &Path, max_buffered: usize) -> Self {
        Sorter {
            dir: dir.to_path_buf(),
            buf: Vec::new(),
            max_buffered: max_buffered.max(1024),
            runs: Vec::new(),
            spilled_bytes: 0,
        }
    }

    pub fn push(&mut self, r: R) -> Result<()> {
        if self.buf.capacity() == 0 && self.max_buffered < (1 << 32) {
            // Exactly the budget: a doubling Vec could otherwise overshoot it by half.
            self.buf.reserve_exact(self.max_buffered);
        }
        self.buf.push(r);
        if self.buf.len() >= self.max_buffered {
            self.spill()?;
        }
        Ok(())
    }

    pub fn extend(&mut self, rs: impl IntoIterator<Item = R>) -> Result<()> {
        for r in rs {
            self.push(r)?;
        }
        Ok(())
    }

    /// Number of runs written so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Bytes written to disk so far.
    pub fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    fn spill(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.buf.par_sort_unstable();
        let path = self.dir.join(format!("run-{:05}.bin", self.runs.len()));
        let f = File::create(&path).at(&path)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut rec = vec![0u8; R::SIZE];
        for r in &self.buf {
            r.write_le(&mut rec);
            w.write_all(&rec).at(&path)?;
        }
        w.flush().at(&path)?;
        self.spilled_bytes += (self.buf.len() * R::SIZE) as u64;
        self.buf.clear();
        self.runs.push(path);
        Ok(())
    }

    /// Sorts what is buffered and returns every record in order, merged with the runs.
    pub fn finish(mut self) -> Result<Merged<R>> {
        self.buf.par_sort_unstable();
        let mut readers = Vec::with_capacity(self.runs.len());
        let per_run = (if self.runs.is_empty() {
            0
        } else {
            (8 << 20) / self.runs.len()
        })
        .clamp(R::SIZE * 64, 1 << 20);
        for p in &self.runs {
            readers.push(RunReader {
                r: BufReader::with_capacity(per_run, File::open(p).at(p)?),
                path: p.clone(),
                rec: vec![0; R::SIZE],
            });
        }
        let mut heap = BinaryHeap::with_capacity(readers.len() + 1);
        for (i, rd) in readers.iter_mut().enumerate() {
            if let Some(r) = rd.next::<R>()? {
                heap.push(Reverse((r, i)));
            }
        }
        let mem = std::mem::take(&mut self.buf).into_iter();
        let mut m = Merged {
            readers,
            heap,
            mem,
            mem_head: None,
            _runs: self.runs,
        };
        m.mem_head = m.mem.next();
        Ok(m)
    }
}

struct RunReader {
    r: BufReader<File>,
    path: PathBuf,
    rec: Vec<u8>,
}

impl RunReader {
    fn next<R: Rec>(&mut self) -> Result<Option<R>> {
        match self.r.read_exact(&mut self.rec) {
            Ok(()) => Ok(Some(R::read_le(&self.rec))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e).at(&self.path),
        }
    }
}

/// The merged, sorted stream of a [`Sorter`]'s records.
pub struct Merged<R: Rec> {
    readers: Vec<RunReader>,
    heap: BinaryHeap<Reverse<(R, usize)>>,
    mem: std::vec::IntoIter<R>,
    mem_head: Option<R>,
    _runs: Vec<PathBuf>,
}

impl<R: Rec> Merged<R> {
    /// The next record in sort order.
    pub fn next_rec(&mut self) -> Result<Option<R>> {
        let from_heap = self.heap.peek().map(|Reverse((r, _))| *r);
        match (from_heap, self.mem_head) {
            (None, None) => Ok(None),
            (Some(h), m) if m.is_none_or(|m| h <= m) => {
                let Reverse((r, i)) = self.heap.pop().expect("peeked");
                if let Some(n) = self.readers[i].next::<R>()? {
                    self.heap.push(Reverse((n, i)));
                }
                debug_assert_eq!(r, h);
                Ok(Some(r))
            }
            (_, Some(m)) => {
                self.mem_head = self.mem.next();
                Ok(Some(m))
            }
            (Some(_), None) => unreachable!("covered by the guard above"),
        }
    }

    /// Calls `f` with each group of records sharing a key (sorted by position), in key order.
    pub fn for_each_group(mut self, mut f: impl FnMut(&[R]) -> Result<()>) -> Result<()> {
        let mut group: Vec<R> = Vec::new();
        while let Some(r) = self.next_rec()? {
            if let Some(first) = group.first() {
                if !first.same_key(&r) {
                    f(&group)?;
                    group.clear();
                }
            }
            group.push(r);
        }
        if !group.is_empty() {
            f(&group)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(m: Merged<(u64, u64)>) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut m = m;
        while let Some(r) = m.next_rec().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn spilled_and_in_memory_sorts_agree() {
        let dir = tempfile::tempdir().unwrap();
        // A fixed LCG: keys with many repeats, positions unique.
        let mut state = 42u64;
        let recs: Vec<(u64, u64)> = (0..10_000u64)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % 500, i)
            })
            .collect();
        let mut spilling = Sorter::new(dir.path(), 1024);
        spilling.extend(recs.iter().copied()).unwrap();
        assert!(spilling.runs() >= 9, "{}", spilling.runs());
        let mut memory = Sorter::new(dir.path(), usize::MAX);
        memory.extend(recs.iter().copied()).unwrap();
        assert_eq!(memory.runs(), 0);
        let mut want = recs.clone();
        want.sort();
        assert_eq!(collect(spilling.finish().unwrap()), want);
        assert_eq!(collect(memory.finish().unwrap()), want);
    }

    #[test]
    fn groups_share_keys_and_are_ordered_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sorter::new(dir.path(), 1024);
        s.extend([(5u64, 9u64), (1, 3), (5, 2), (1, 1), (7, 0)])
            .unwrap();
        let mut groups = Vec::new();
        s.finish()
            .unwrap()
            .for_each_group(|g| {
                groups.push(g.iter().map(|r| r.1).collect::<Vec<_>>());
                Ok(())
            })
            .unwrap();
        assert_eq!(groups, vec![vec![1, 3], vec![2, 9], vec![0]]);
    }
}
