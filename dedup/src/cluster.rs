//! The gather → cluster → apply engine shared by exact and near dedup.
//!
//! Why: both dedups have the same shape. While the runner gathers, every document leaves a
//! few fixed-size records `(key, position)` (one content hash, or one key per LSH band) in an
//! external [`Sorter`](crate::spill::Sorter), and one entry in a compact document table.
//! At the end the sorted records are read group by group (equal keys), each group is joined
//! in a union-find (optionally after checking candidate pairs by estimated Jaccard), and one
//! document per cluster is kept by a [`KeepRule`]. During apply each row finds its cluster
//! by its position.
//!
//! Determinism: a document's position is `(unit << 40) | row` from
//! [`BatchCtx`](quern_core::BatchCtx), never its arrival order, the records are sorted by
//! `(key, position)`, union-find joins toward the smaller position, and ties in the keep rule
//! go to the smaller position. Clusters are a function of the input and the config, whatever
//! the thread count or batch arrival order, spilled or not.
//!
//! Memory per document (stated here because the budget depends on it):
//! - while gathering: 24 bytes in the document table (position, log offset, keep score),
//!   plus 16 bytes per band (near) or 24 bytes (exact) in the sort buffer until it spills;
//! - while clustering: the table, plus 8 (sorted positions) + 4 (union-find) + 8 (keep rule
//!   bookkeeping) bytes, so about 44 bytes;
//! - while applying: 12 bytes (position and cluster root), plus the kept id of each
//!   cluster with more than one member.
//!
//! Ids (and, with verification, signatures) go to an append-only log file in the spill
//! directory, not to memory; only the kept ids of real clusters are read back.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use quern_core::error::IoContext;
use quern_core::{Error, Result};
use rayon::slice::ParallelSliceMut;
use serde::{Deserialize, Serialize};

use crate::minhash::estimated_jaccard;
use crate::spill::{Rec, Sorter};

/// Which document of a cluster is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepRule {
    /// The first by position in the corpus (input order). The default, as in datatrove.
    #[default]
    First,
    /// The longest text (in bytes); ties go to the first.
    Longest,
    /// The highest value of `keep_column` (a numeric column such as a quality score); nulls
    /// rank lowest, ties go to the first.
    MaxColumn,
}

/// Bits of a position given to the row number within a unit.
pub const ROW_BITS: u32 = 40;

/// The global position of row `i` of a batch.
pub fn position(ctx: &quern_core::BatchCtx, i: usize) -> Result<u64> {
    let row = ctx.first_row + i as u64;
    if ctx.unit >= (1 << (64 - ROW_BITS)) || row >= (1 << ROW_BITS) {
        return Err(Error::usage(format!(
            "dedup supports at most 2^24 work units of 2^40 rows each (got unit {}, row {row})",
            ctx.unit
        )));
    }
    Ok((ctx.unit << ROW_BITS) | row)
}

/// One document as a stage hands it to the engine.
#[derive(Debug, Clone, Copy)]
pub struct DocIn<'a> {
    pub pos: u64,
    pub id: &'a str,
    pub score: f64,
    /// The signature, kept only when candidates are verified.
    pub sig: Option<&'a [u32]>,
}

#[derive(Debug, Clone, Copy)]
struct DocEntry {
    pos: u64,
    log_off: u64,
    score: f64,
}

struct Gathering<R: Rec> {
    sorter: Sorter<R>,
    docs: Vec<DocEntry>,
    log: BufWriter<File>,
    log_len: u64,
}

/// Counts from the clustering, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterStats {
    /// Documents gathered.
    pub documents: u64,
    /// Clusters with more than one member.
    pub clusters: u64,
    /// Documents that are not their cluster's kept one.
    pub duplicates: u64,
    /// Candidate pairs rejected by verification.
    pub rejected_candidates: u64,
    /// Sorted runs written to disk.
    pub runs: u64,
    /// Bytes of records written to disk.
    pub spilled_bytes: u64,
}

/// What apply needs: each position's cluster root and each real cluster's kept document.
#[derive(Debug)]
pub struct Clusters {
    positions: Vec<u64>,
    root: Vec<u32>,
    kept: HashMap<u32, (u32, String)>,
    pub stats: ClusterStats,
}

/// A row's place in the clustering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership<'a> {
    /// In no cluster with others.
    Unique,
    /// The kept document of the cluster named by its id.
    Kept(&'a str),
    /// A duplicate of the kept document with this id.
    Duplicate(&'a str),
}

impl Clusters {
    /// The membership of the document at `pos`.
    pub fn lookup(&self, pos: u64) -> Result<Membership<'_>> {
        let i = self.positions.binary_search(&pos).map_err(|_| {
            Error::bug(format!(
                "dedup: apply saw a row (position {pos:#x}) that gather did not see"
            ))
        })?;
        let r = self.root[i];
        Ok(match self.kept.get(&r) {
            None => Membership::Unique,
            Some((k, id)) if *k as usize == i => Membership::Kept(id),
            Some((_, id)) => Membership::Duplicate(id),
        })
    }

    /// Cluster sizes > 1 by kept id, sorted (for tests and reports).
    pub fn cluster_members(&self) -> Vec<(String, Vec<u64>)> {
        let mut by_root: HashMap<u32, Vec<u64>> = HashMap::new();
        for (i, &r) in self.root.iter().enumerate() {
            if self.kept.contains_key(&r) {
                by_root.entry(r).or_default().push(self.positions[i]);
            }
        }
        let mut out: Vec<(String, Vec<u64>)> = by_root
            .into_iter()
            .map(|(r, members)| (self.kept[&r].1.clone(), members))
            .collect();
        out.sort();
        out
    }
}

/// Verification of candidate pairs: keep a band collision only when the signatures agree on
/// at least `threshold` of their positions.
#[derive(Debug, Clone, Copy)]
pub struct Verify {
    pub threshold: f64,
    pub sig_len: usize,
}

/// The engine. `R` is the record type: `(u64, u64)` for band keys, `(u128, u64)` for exact.
pub struct Engine<R: Rec> {
    name: String,
    keep: KeepRule,
    verify: Option<Verify>,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    gathering: Mutex<Option<Gathering<R>>>,
    done: OnceLock<Clusters>,
}

impl<R: Rec> std::fmt::Debug for Engine<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.name)
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl<R: Rec> Engine<R> {
    /// `sort_budget`: bytes the sort buffer may hold before it spills (`None`: never).
    /// `spill_dir`: where the temporary directory goes (default: the system's).
    pub fn new(
        name: &str,
        keep: KeepRule,
        verify: Option<Verify>,
        sort_budget: Option<u64>,
        spill_dir: Option<&Path>,
    ) -> Result<Self> {
        let base = spill_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).at(&base)?;
        let dir = tempfile::Builder::new()
            .prefix("quern-dedup-")
            .tempdir_in(&base)
            .at(&base)?;
        let log_path = dir.path().join("docs.log");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .at(&log_path)?;
        let log = BufWriter::with_capacity(1 << 20, file);
        let max_buffered = match sort_budget {
            None => usize::MAX,
            Some(b) => (b / R::SIZE as u64).max(1024) as usize,
        };
        let sorter = Sorter::new(dir.path(), max_buffered);
        Ok(Engine {
            name: name.to_string(),
            keep,
            verify,
            log_path,
            gathering: Mutex::new(Some(Gathering {
                sorter,
                docs: Vec::new(),
                log,
                log_len: 0,
            })),
            dir,
            done: OnceLock::new(),
        })
    }

    /// Adds one batch's documents and records. Called from several threads.
    pub fn add(&self, docs: &[DocIn<'_>], recs: Vec<R>) -> Result<()> {
        let mut g = self
            .gathering
            .lock()
            .map_err(|_| Error::bug("dedup: a gather thread panicked"))?;
        let g = g.as_mut().ok_or_else(|| {
            Error::bug(format!(
                "stage `{}`: gather called after end_gather",
                self.name
            ))
        })?;
        for d in docs {
            let off = g.log_len;
            if let (Some(v), Some(sig)) = (self.verify, d.sig) {
                debug_assert_eq!(sig.len(), v.sig_len);
                for x in sig {
                    g.log.write_all(&x.to_le_bytes()).at(&self.log_path)?;
                }
                g.log_len += 4 * sig.len() as u64;
            } else if let Some(v) = self.verify {
                // No signature (too short to shingle): a zero signature never verifies
                // because such a document has no band records either.
                g.log
                    .write_all(&vec![0u8; 4 * v.sig_len])
                    .at(&self.log_path)?;
                g.log_len += 4 * v.sig_len as u64;
            }
            g.log
                .write_all(&(d.id.len() as u32).to_le_bytes())
                .at(&self.log_path)?;
            g.log.write_all(d.id.as_bytes()).at(&self.log_path)?;
            g.log_len += 4 + d.id.len() as u64;
            g.docs.push(DocEntry {
                pos: d.pos,
                log_off: off,
                score: d.score,
            });
        }
        g.sorter.extend(recs)
    }

    /// Clusters what was gathered. Called once.
    pub fn finish(&self) -> Result<&Clusters> {
        let g = self
            .gathering
            .lock()
            .map_err(|_| Error::bug("dedup: a gather thread panicked"))?
            .take()
            .ok_or_else(|| Error::bug(format!("stage `{}`: end_gather called twice", self.name)))?;
        let Gathering {
            sorter,
            mut docs,
            log,
            ..
        } = g;
        let log = log
            .into_inner()
            .map_err(|e| Error::io(&self.log_path, e.into_error()))?;
        docs.par_sort_unstable_by_key(|d| d.pos);
        if let Some(w) = docs.windows(2).find(|w| w[0].pos == w[1].pos) {
            return Err(Error::bug(format!(
                "stage `{}`: the row at position {:#x} was gathered twice (the runner must give each batch a distinct BatchCtx)",
                self.name, w[0].pos
            )));
        }
        if docs.len() >= u32::MAX as usize {
            return Err(Error::usage(
                "dedup handles at most 4 billion documents per stage",
            ));
        }
        let positions: Vec<u64> = docs.iter().map(|d| d.pos).collect();
        let dense = |pos: u64| -> Result<u32> {
            positions
                .binary_search(&pos)
                .map(|i| i as u32)
                .map_err(|_| Error::bug(format!("dedup: record for unknown position {pos:#x}")))
        };
        let mut parent: Vec<u32> = (0..docs.len() as u32).collect();
        let mut stats = ClusterStats {
            documents: docs.len() as u64,
            runs: sorter.runs() as u64,
            spilled_bytes: sorter.spilled_bytes(),
            ..Default::default()
        };
        let mut sig_cache: Vec<Vec<u32>> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        sorter.finish()?.for_each_group(|group| {
            if group.len() < 2 {
                return Ok(());
            }
            ids.clear();
            for r in group {
                ids.push(dense(r.pos())?);
            }
            match self.verify {
                None => {
                    for &j in &ids[1..] {
                        union(&mut parent, ids[0], j);
                    }
                }
                Some(v) => {
                    sig_cache.resize_with(ids.len(), Vec::new);
                    for (k, &i) in ids.iter().enumerate() {
                        let buf = &mut sig_cache[k];
                        buf.resize(v.sig_len, 0);
                        read_sig(&log, &self.log_path, docs[i as usize].log_off, buf)?;
                    }
                    // Join each member to the first earlier one it really resembles; looking
                    // back at most 32 members bounds the work on giant buckets.
                    for j in 1..ids.len() {
                        let found = (j.saturating_sub(32)..j).find(|&k| {
                            estimated_jaccard(&sig_cache[j], &sig_cache[k]) >= v.threshold
                        });
                        match found {
                            Some(k) => union(&mut parent, ids[k], ids[j]),
                            None => stats.rejected_candidates += 1,
                        }
                    }
                }
            }
            Ok(())
        })?;
        // Final roots, and the kept member of each cluster.
        let n = docs.len();
        for i in 0..n {
            let r = find(&mut parent, i as u32);
            parent[i] = r;
        }
        let mut size: Vec<u32> = vec![0; n];
        let mut best: Vec<u32> = (0..n as u32).collect();
        for i in 0..n {
            let r = parent[i] as usize;
            size[r] += 1;
            let b = best[r] as usize;
            let better = match self.keep {
                KeepRule::First => false,
                KeepRule::Longest | KeepRule::MaxColumn => docs[i].score > docs[b].score,
            };
            if better {
                best[r] = i as u32;
            }
        }
        let mut kept = HashMap::new();
        for r in 0..n {
            if size[r] > 1 && parent[r] as usize == r {
                let k = best[r];
                let id = read_id(
                    &log,
                    &self.log_path,
                    docs[k as usize].log_off,
                    self.verify.map_or(0, |v| v.sig_len),
                )?;
                kept.insert(r as u32, (k, id));
                stats.clusters += 1;
                stats.duplicates += size[r] as u64 - 1;
            }
        }
        drop(docs);
        drop(log);
        let _ = std::fs::remove_file(&self.log_path);
        let clusters = Clusters {
            positions,
            root: parent,
            kept,
            stats,
        };
        self.done
            .set(clusters)
            .map_err(|_| Error::bug("dedup: clustered twice"))?;
        Ok(self.done.get().expect("just set"))
    }

    /// The clustering, once [`finish`](Self::finish) has run.
    pub fn clusters(&self) -> Result<&Clusters> {
        self.done.get().ok_or_else(|| {
            Error::bug(format!(
                "stage `{}`: apply called before end_gather (dedup stages are global)",
                self.name
            ))
        })
    }

    /// The spill directory (removed when the engine is dropped).
    pub fn spill_dir(&self) -> &Path {
        self.dir.path()
    }
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

/// Joins two sets; the smaller index (earlier position) becomes the root.
fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

fn read_sig(log: &File, path: &Path, off: u64, out: &mut [u32]) -> Result<()> {
    let mut bytes = vec![0u8; out.len() * 4];
    log.read_exact_at(&mut bytes, off).at(path)?;
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = u32::from_le_bytes(c.try_into().unwrap());
    }
    Ok(())
}

fn read_id(log: &File, path: &Path, off: u64, sig_len: usize) -> Result<String> {
    let off = off + 4 * sig_len as u64;
    let mut len = [0u8; 4];
    log.read_exact_at(&mut len, off).at(path)?;
    let mut id = vec![0u8; u32::from_le_bytes(len) as usize];
    log.read_exact_at(&mut id, off + 4).at(path)?;
    String::from_utf8(id).map_err(|e| Error::bug(format!("dedup: id log corrupted: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(keep: KeepRule, budget: Option<u64>, order: &[usize]) -> Vec<(String, Vec<u64>)> {
        // Six docs: {0,2,5} share key 1, {1,4} share key 2, 3 is alone.
        let keys = [1u64, 2, 1, 3, 2, 1];
        let scores = [1.0, 5.0, 9.0, 0.0, 2.0, 9.0];
        let e: Engine<(u64, u64)> = Engine::new("t", keep, None, budget, None).unwrap();
        let ids: Vec<String> = (0..6).map(|i| format!("d{i}")).collect();
        for &i in order {
            let doc = DocIn {
                pos: i as u64,
                id: &ids[i],
                score: scores[i],
                sig: None,
            };
            e.add(&[doc], vec![(keys[i], i as u64)]).unwrap();
        }
        e.finish().unwrap().cluster_members()
    }

    #[test]
    fn keep_rules_and_order_independence() {
        let first = run(KeepRule::First, None, &[0, 1, 2, 3, 4, 5]);
        assert_eq!(
            first,
            vec![
                ("d0".to_string(), vec![0, 2, 5]),
                ("d1".to_string(), vec![1, 4])
            ]
        );
        assert_eq!(run(KeepRule::First, Some(0), &[5, 3, 1, 0, 4, 2]), first);
        let max = run(KeepRule::MaxColumn, None, &[3, 2, 1, 0, 5, 4]);
        // Ties (9.0 at 2 and 5) go to the earlier position.
        assert_eq!(
            max,
            vec![
                ("d1".to_string(), vec![1, 4]),
                ("d2".to_string(), vec![0, 2, 5])
            ]
        );
    }

    #[test]
    fn lookup_reports_membership() {
        let e: Engine<(u64, u64)> = Engine::new("t", KeepRule::First, None, None, None).unwrap();
        let docs = [
            DocIn {
                pos: 10,
                id: "a",
                score: 0.0,
                sig: None,
            },
            DocIn {
                pos: 11,
                id: "b",
                score: 0.0,
                sig: None,
            },
            DocIn {
                pos: 12,
                id: "c",
                score: 0.0,
                sig: None,
            },
        ];
        e.add(&docs, vec![(7, 11), (7, 10), (8, 12)]).unwrap();
        assert!(e.clusters().is_err());
        let c = e.finish().unwrap();
        assert_eq!(c.lookup(10).unwrap(), Membership::Kept("a"));
        assert_eq!(c.lookup(11).unwrap(), Membership::Duplicate("a"));
        assert_eq!(c.lookup(12).unwrap(), Membership::Unique);
        assert!(matches!(c.lookup(13), Err(Error::Bug(_))));
        assert_eq!(c.stats.duplicates, 1);
        assert!(e.add(&docs[..1], vec![]).is_err());
    }

    #[test]
    fn verification_rejects_dissimilar_candidates() {
        let v = Verify {
            threshold: 0.8,
            sig_len: 4,
        };
        let e: Engine<(u64, u64)> = Engine::new("t", KeepRule::First, Some(v), None, None).unwrap();
        let (s0, s1, s2) = ([1u32, 2, 3, 4], [1u32, 2, 3, 4], [1u32, 9, 9, 9]);
        let docs = [
            DocIn {
                pos: 0,
                id: "x",
                score: 0.0,
                sig: Some(&s0),
            },
            DocIn {
                pos: 1,
                id: "y",
                score: 0.0,
                sig: Some(&s1),
            },
            DocIn {
                pos: 2,
                id: "z",
                score: 0.0,
                sig: Some(&s2),
            },
        ];
        e.add(&docs, vec![(5, 0), (5, 1), (5, 2)]).unwrap();
        let c = e.finish().unwrap();
        assert_eq!(c.cluster_members(), vec![("x".to_string(), vec![0, 1])]);
        assert_eq!(c.stats.rejected_candidates, 1);
    }
}
