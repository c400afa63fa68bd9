//! The reader the trainer streams tokenized rows with.
//!
//! Training needs three things from its data loader that a plain scan does not give:
//! a shuffle that is the same for the same seed (so a run can be reproduced), a split of the
//! rows between ranks that never hands one row to two ranks, and a cursor that can be saved
//! in a checkpoint and restored so a resumed run sees exactly the rows it would have seen.
//! It must also not hold the split in memory.
//!
//! How rows are ordered in epoch `e` (every step depends only on `seed`, `e`, the rank and
//! the shards, never on timing or on `batch_rows`):
//!
//! 1. The split's row groups, across all shards, are permuted with a generator seeded by
//!    `(seed, e)`. Concatenated in that order they form the epoch's global row order.
//! 2. Rank `r` of `w` takes the contiguous range `[N·r/w, N·(r+1)/w)` of that order, so ranks
//!    are disjoint, together cover every row once, differ by at most one row, and each reads
//!    only about `1/w` of the row groups.
//! 3. The rank's range is cut into windows of whole row-group pieces of at least
//!    [`WINDOW_ROWS`] rows; rows inside a window are permuted with a generator seeded by
//!    `(seed, e, rank, window)`. Only the current window is held in memory.
//!
//! [`next_row`](TokenReader::next_row) wraps to the next epoch, which is reshuffled. A
//! [`Cursor`] is `(epoch, position)` where `position` counts the rows this rank has read
//! in the epoch; [`seek`](TokenReader::seek) rebuilds the epoch's plan and continues from it.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, Int8Type};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use quern_core::error::{Context, IoContext, Place};
use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::meta::{Objective, TokenMeta, META_JSON};
use crate::schema;

/// Rows in a shuffle window (at least; windows end on row-group piece boundaries).
pub const WINDOW_ROWS: u64 = 8192;

/// How a [`TokenReader`] shuffles and shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderConfig {
    /// Seed of the shuffle. Epoch `e` is shuffled with `(seed, e)`.
    pub seed: u64,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of ranks the rows are split between.
    pub world_size: usize,
    /// Rows per decoded Arrow batch when a row group is read. Does not change the order.
    pub batch_rows: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            seed: 0,
            rank: 0,
            world_size: 1,
            batch_rows: 1024,
        }
    }
}

/// Where a reader is: the next row it will return is row `position` of epoch `epoch` (of
/// this rank's order). Saved in checkpoints; [`TokenReader::seek`] continues exactly there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub position: u64,
}

/// One tokenized row, by objective.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// `clm`/`mlm`: `seq_len + 1` ids and the documents they came from.
    Packed {
        tokens: Vec<i32>,
        doc_ids: Vec<String>,
    },
    /// `sft`: input ids and a mask (1 where the loss counts), same length. In a packed
    /// split (`meta.json` `packed`), `doc_starts` holds where each conversation begins
    /// (strictly increasing, the first 0); empty for one conversation per row.
    Sft {
        input_ids: Vec<i32>,
        loss_mask: Vec<i8>,
        doc_starts: Vec<i32>,
    },
    /// `cls`: input ids and the class id.
    Cls { input_ids: Vec<i32>, label: i64 },
    /// `nsp`: `[CLS] A [SEP] B [SEP]`, its token types and the next-sentence label.
    Nsp {
        input_ids: Vec<i32>,
        token_type_ids: Vec<i8>,
        label: i64,
    },
    /// `rm`/`dpo`: prompt and the two completions.
    Pref {
        prompt_ids: Vec<i32>,
        chosen_ids: Vec<i32>,
        rejected_ids: Vec<i32>,
    },
}

/// A row group of a shard.
#[derive(Debug, Clone, Copy)]
struct Block {
    shard: usize,
    row_group: usize,
    rows: u64,
}

/// Rows `start..start + len` of a block.
#[derive(Debug, Clone, Copy)]
struct Piece {
    block: usize,
    start: u64,
    len: u64,
}

#[derive(Debug, Clone)]
struct Window {
    pieces: Vec<Piece>,
    /// Position of the window's first row in the rank's epoch.
    first: u64,
    len: u64,
}

struct Loaded {
    window: usize,
    /// Rows in shuffled order; taken as they are returned.
    rows: Vec<Option<Row>>,
}

/// Streams the rows of one tokenized split directory. See the module docs for the order.
pub struct TokenReader {
    dir: PathBuf,
    cfg: ReaderConfig,
    meta: TokenMeta,
    shards: Vec<(PathBuf, ArrowReaderMetadata)>,
    blocks: Vec<Block>,
    total: u64,
    lo: u64,
    hi: u64,
    epoch: u64,
    position: u64,
    windows: Vec<Window>,
    loaded: Option<Loaded>,
}

impl TokenReader {
    /// Opens a split directory (`meta.json` and the shards it lists). Reads only footers.
    pub fn open(split_dir: &Path, cfg: ReaderConfig) -> Result<Self> {
        if cfg.world_size == 0 || cfg.rank >= cfg.world_size {
            return Err(Error::bad_config(
                "rank",
                format!(
                    "rank {} is not in 0..world_size ({})",
                    cfg.rank, cfg.world_size
                ),
            ));
        }
        let meta = TokenMeta::load(split_dir)?;
        let mut shards = Vec::with_capacity(meta.shards.len());
        let mut blocks = Vec::new();
        for (si, s) in meta.shards.iter().enumerate() {
            let path = split_dir.join(&s.file);
            let file = File::open(&path).at(&path)?;
            let md = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
                .with_context(|| format!("reading the Parquet footer of {}", path.display()))?;
            let expected = schema::split_schema(meta.objective, meta.packed);
            for f in expected.fields() {
                if md.schema().field_with_name(f.name()).is_err() {
                    return Err(Error::bad_input(
                        Place::file(&path),
                        format!(
                            "no `{}` column, which `{}` shards must have",
                            f.name(),
                            meta.objective
                        ),
                    ));
                }
            }
            let mut rows = 0;
            for (rg, g) in md.metadata().row_groups().iter().enumerate() {
                let n = g.num_rows() as u64;
                rows += n;
                if n > 0 {
                    blocks.push(Block {
                        shard: si,
                        row_group: rg,
                        rows: n,
                    });
                }
            }
            if rows != s.rows {
                return Err(Error::bad_input(
                    Place::file(&path),
                    format!("holds {rows} rows but {} lists {}; the split is damaged, rerun quern tokenize", META_JSON, s.rows),
                ));
            }
            shards.push((path, md));
        }
        let total: u64 = blocks.iter().map(|b| b.rows).sum();
        if total != meta.rows {
            return Err(Error::bad_input(
                Place::file(split_dir.join(META_JSON)),
                format!("says {} rows but its shards hold {total}", meta.rows),
            ));
        }
        let w = cfg.world_size as u128;
        let lo = (total as u128 * cfg.rank as u128 / w) as u64;
        let hi = (total as u128 * (cfg.rank as u128 + 1) / w) as u64;
        let mut r = TokenReader {
            dir: split_dir.to_path_buf(),
            cfg,
            meta,
            shards,
            blocks,
            total,
            lo,
            hi,
            epoch: 0,
            position: 0,
            windows: Vec::new(),
            loaded: None,
        };
        r.plan_epoch(0);
        Ok(r)
    }

    /// The split's parsed `meta.json`.
    pub fn meta(&self) -> &TokenMeta {
        &self.meta
    }

    /// The split directory this reader reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rows this rank sees per epoch (every rank gets `⌊N/w⌋` or `⌈N/w⌉`).
    pub fn rows_per_epoch(&self) -> u64 {
        self.hi - self.lo
    }

    /// Rows in the whole split, over all ranks.
    pub fn total_rows(&self) -> u64 {
        self.total
    }

    /// The next row; after the last row of an epoch, the first row of the next (reshuffled) one.
    pub fn next_row(&mut self) -> Result<Row> {
        if self.rows_per_epoch() == 0 {
            return Err(Error::usage(format!(
                "rank {} of {} gets no rows of {} ({} rows in all); use fewer ranks or more data",
                self.cfg.rank,
                self.cfg.world_size,
                self.dir.display(),
                self.total
            )));
        }
        if self.position >= self.rows_per_epoch() {
            self.epoch += 1;
            self.position = 0;
            self.plan_epoch(self.epoch);
        }
        let w = self
            .windows
            .partition_point(|w| w.first + w.len <= self.position);
        if self.loaded.as_ref().is_none_or(|l| l.window != w) {
            self.loaded = Some(self.load_window(w)?);
        }
        let first = self.windows[w].first;
        let idx = (self.position - first) as usize;
        let loaded = self.loaded.as_mut().expect("loaded above");
        let row = match loaded.rows[idx].take() {
            Some(r) => r,
            None => {
                // Only reachable if a row was already taken, which sequential reading never does.
                return Err(Error::bug(format!(
                    "row {} of epoch {} read twice",
                    self.position, self.epoch
                )));
            }
        };
        self.position += 1;
        Ok(row)
    }

    /// Where the reader is; [`seek`](Self::seek) to it to continue exactly from here.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            position: self.position,
        }
    }

    /// Continues from a saved cursor.
    pub fn seek(&mut self, c: &Cursor) -> Result<()> {
        if c.position > self.rows_per_epoch() {
            return Err(Error::bad_input(
                Place::file(self.dir.join(META_JSON)),
                format!(
                    "cursor position {} is past this rank's {} rows per epoch; was it saved with another world size or split?",
                    c.position,
                    self.rows_per_epoch()
                ),
            ));
        }
        if c.epoch != self.epoch || self.windows.is_empty() {
            self.plan_epoch(c.epoch);
        }
        self.epoch = c.epoch;
        self.position = c.position;
        self.loaded = None;
        Ok(())
    }

    /// Builds the windows of this rank's part of epoch `epoch`.
    fn plan_epoch(&mut self, epoch: u64) {
        let order = permutation(
            self.blocks.len(),
            mix(&[self.cfg.seed, epoch, 0x626c6f636b73]),
        );
        let mut windows = Vec::new();
        let mut cur = Window {
            pieces: Vec::new(),
            first: 0,
            len: 0,
        };
        let mut offset = 0u64; // global position of the block's first row
        for &b in &order {
            let rows = self.blocks[b].rows;
            let (s, e) = (offset.max(self.lo), (offset + rows).min(self.hi));
            offset += rows;
            if s >= e {
                continue;
            }
            cur.pieces.push(Piece {
                block: b,
                start: s - (offset - rows),
                len: e - s,
            });
            cur.len += e - s;
            if cur.len >= WINDOW_ROWS {
                let next_first = cur.first + cur.len;
                windows.push(std::mem::replace(
                    &mut cur,
                    Window {
                        pieces: Vec::new(),
                        first: next_first,
                        len: 0,
                    },
                ));
            }
        }
        if cur.len > 0 {
            windows.push(cur);
        }
        self.windows = windows;
        self.loaded = None;
    }

    fn load_window(&self, w: usize) -> Result<Loaded> {
        let win = &self.windows[w];
        let mut raw: Vec<Row> = Vec::with_capacity(win.len as usize);
        for p in &win.pieces {
            let block = self.blocks[p.block];
            let (path, md) = &self.shards[block.shard];
            let file = File::open(path).at(path)?;
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, md.clone())
                .with_row_groups(vec![block.row_group])
                .with_batch_size(self.cfg.batch_rows.max(1))
                .build()
                .with_context(|| format!("opening {}", path.display()))?;
            let mut row_in_block = 0u64;
            for batch in reader {
                let batch = batch.with_context(|| {
                    format!(
                        "reading row group {} of {}",
                        block.row_group,
                        path.display()
                    )
                })?;
                let n = batch.num_rows() as u64;
                let (s, e) = (
                    p.start.max(row_in_block),
                    (p.start + p.len).min(row_in_block + n),
                );
                if s < e {
                    let sliced = batch.slice((s - row_in_block) as usize, (e - s) as usize);
                    decode_rows(&sliced, &self.meta, path, &mut raw)?;
                }
                row_in_block += n;
            }
        }
        if raw.len() as u64 != win.len {
            return Err(Error::bad_input(
                Place::file(&self.dir),
                format!(
                    "a shuffle window should hold {} rows but its row groups gave {}",
                    win.len,
                    raw.len()
                ),
            ));
        }
        let perm = permutation(
            raw.len(),
            mix(&[self.cfg.seed, self.epoch, self.cfg.rank as u64, w as u64]),
        );
        let mut slots: Vec<Option<Row>> = raw.into_iter().map(Some).collect();
        let rows = perm.iter().map(|&i| slots[i].take()).collect();
        Ok(Loaded { window: w, rows })
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|a| a.as_ref())
        .ok_or_else(|| Error::bad_input(Place::file(path), format!("no `{name}` column")))
}

fn ids_at(a: &dyn Array, i: usize, name: &str, path: &Path) -> Result<Vec<i32>> {
    let list = a.as_list_opt::<i32>().ok_or_else(|| {
        Error::bad_input(Place::file(path), format!("`{name}` is not a list column"))
    })?;
    let v = list.value(i);
    let v = v.as_primitive_opt::<Int32Type>().ok_or_else(|| {
        Error::bad_input(
            Place::file(path),
            format!("`{name}` is not a list of int32"),
        )
    })?;
    Ok(v.values().to_vec())
}

/// Decodes the rows of a batch of tokenized shards, checking what the format promises.
pub(crate) fn decode_rows(
    batch: &RecordBatch,
    meta: &TokenMeta,
    path: &Path,
    out: &mut Vec<Row>,
) -> Result<()> {
    let (objective, seq_len) = (meta.objective, meta.seq_len);
    let n = batch.num_rows();
    match objective {
        Objective::Clm | Objective::Mlm => {
            let tokens = column(batch, schema::TOKENS, path)?;
            let docs = column(batch, schema::DOC_IDS, path)?
                .as_list_opt::<i32>()
                .ok_or_else(|| {
                    Error::bad_input(Place::file(path), "`doc_ids` is not a list column")
                })?;
            for i in 0..n {
                let t = ids_at(tokens, i, schema::TOKENS, path)?;
                if t.len() as u64 != seq_len + 1 {
                    return Err(Error::bad_input(
                        Place::file(path),
                        format!(
                            "a packed row holds {} tokens, not seq_len + 1 = {}",
                            t.len(),
                            seq_len + 1
                        ),
                    ));
                }
                let d = docs.value(i);
                let d = d.as_string_opt::<i32>().ok_or_else(|| {
                    Error::bad_input(Place::file(path), "`doc_ids` is not a list of strings")
                })?;
                let doc_ids = d
                    .iter()
                    .map(|s| s.unwrap_or_default().to_string())
                    .collect();
                out.push(Row::Packed { tokens: t, doc_ids });
            }
        }
        Objective::Sft => {
            let ids = column(batch, schema::INPUT_IDS, path)?;
            let starts = if meta.packed {
                Some(column(batch, schema::DOC_STARTS, path)?)
            } else {
                None
            };
            let mask = column(batch, schema::LOSS_MASK, path)?
                .as_list_opt::<i32>()
                .ok_or_else(|| {
                    Error::bad_input(Place::file(path), "`loss_mask` is not a list column")
                })?;
            for i in 0..n {
                let input_ids = ids_at(ids, i, schema::INPUT_IDS, path)?;
                let m = mask.value(i);
                let m = m.as_primitive_opt::<Int8Type>().ok_or_else(|| {
                    Error::bad_input(Place::file(path), "`loss_mask` is not a list of int8")
                })?;
                let loss_mask = m.values().to_vec();
                if loss_mask.len() != input_ids.len() {
                    return Err(Error::bad_input(
                        Place::file(path),
                        "`loss_mask` and `input_ids` differ in length",
                    ));
                }
                let doc_starts = match starts {
                    Some(s) => {
                        let st = ids_at(s, i, schema::DOC_STARTS, path)?;
                        let ordered = st.first() == Some(&0)
                            && st.windows(2).all(|w| w[0] < w[1])
                            && st.last().is_some_and(|&l| (l as usize) < input_ids.len());
                        if !ordered {
                            return Err(Error::bad_input(
                                Place::file(path),
                                format!(
                                    "a packed sft row's `doc_starts` {st:?} are not increasing \
                                     positions from 0 inside its {} ids; the split is damaged, \
                                     rerun quern tokenize",
                                    input_ids.len()
                                ),
                            ));
                        }
                        st
                    }
                    None => Vec::new(),
                };
                out.push(Row::Sft {
                    input_ids,
                    loss_mask,
                    doc_starts,
                });
            }
        }
        Objective::Cls => {
            let ids = column(batch, schema::INPUT_IDS, path)?;
            let label = column(batch, schema::LABEL, path)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| Error::bad_input(Place::file(path), "`label` is not int64"))?;
            for i in 0..n {
                out.push(Row::Cls {
                    input_ids: ids_at(ids, i, schema::INPUT_IDS, path)?,
                    label: label.value(i),
                });
            }
        }
        Objective::Nsp => {
            let ids = column(batch, schema::INPUT_IDS, path)?;
            let types = column(batch, schema::TOKEN_TYPE_IDS, path)?
                .as_list_opt::<i32>()
                .ok_or_else(|| {
                    Error::bad_input(Place::file(path), "`token_type_ids` is not a list column")
                })?;
            let label = column(batch, schema::NEXT_SENTENCE_LABEL, path)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| {
                    Error::bad_input(Place::file(path), "`next_sentence_label` is not int64")
                })?;
            for i in 0..n {
                let input_ids = ids_at(ids, i, schema::INPUT_IDS, path)?;
                let t = types.value(i);
                let t = t.as_primitive_opt::<Int8Type>().ok_or_else(|| {
                    Error::bad_input(Place::file(path), "`token_type_ids` is not a list of int8")
                })?;
                let token_type_ids = t.values().to_vec();
                if token_type_ids.len() != input_ids.len() {
                    return Err(Error::bad_input(
                        Place::file(path),
                        "`token_type_ids` and `input_ids` differ in length",
                    ));
                }
                out.push(Row::Nsp {
                    input_ids,
                    token_type_ids,
                    label: label.value(i),
                });
            }
        }
        Objective::Rm | Objective::Dpo => {
            let p = column(batch, schema::PROMPT_IDS, path)?;
            let c = column(batch, schema::CHOSEN_IDS, path)?;
            let r = column(batch, schema::REJECTED_IDS, path)?;
            for i in 0..n {
                out.push(Row::Pref {
                    prompt_ids: ids_at(p, i, schema::PROMPT_IDS, path)?,
                    chosen_ids: ids_at(c, i, schema::CHOSEN_IDS, path)?,
                    rejected_ids: ids_at(r, i, schema::REJECTED_IDS, path)?,
                });
            }
        }
    }
    Ok(())
}

/// splitmix64: a small, well-mixed generator whose output is fixed by its definition, so a
/// seed gives the same shuffle on every platform and every version of quern.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for our sizes).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Folds several words into one seed.
pub(crate) fn mix(words: &[u64]) -> u64 {
    let mut g = SplitMix::new(0x7175_6572_6e00_0001);
    let mut acc = 0u64;
    for &w in words {
        g.0 ^= w;
        acc = acc.rotate_left(17) ^ g.next_u64();
    }
    acc
}

/// A Fisher–Yates permutation of `0..n`.
pub(crate) fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut g = SplitMix::new(seed);
    for i in (1..n).rev() {
        let j = g.below(i + 1);
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaShard;
    use crate::schema::RowBuilder;
    use quern_core::shard::{ShardOptions, ShardWriter};
    use std::collections::BTreeSet;

    /// A `cls` split of `n` rows whose label is the row's number, cut into about ten shards
    /// (at least 23 rows each) with row groups of 7, so windows, pieces and rank ranges cross
    /// shard and row-group boundaries.
    fn split(n: usize, dir: &Path) {
        let mut w = ShardWriter::new(
            dir,
            "",
            "part",
            schema::token_schema(Objective::Cls),
            ShardOptions::default()
                .with_max_rows((n / 10).max(23))
                .with_row_group_rows(7),
        )
        .unwrap();
        let mut b = RowBuilder::new(Objective::Cls);
        for i in 0..n {
            b.push_cls(&[i as i32, 1, 2], i as i64, &[format!("d{i}")]);
            if b.len() == 10 {
                w.write(&b.finish().unwrap()).unwrap();
            }
        }
        if !b.is_empty() {
            w.write(&b.finish().unwrap()).unwrap();
        }
        let shards = w.finish().unwrap();
        TokenMeta {
            objective: Objective::Cls,
            vocab_size: 10,
            seq_len: 8,
            rows: n as u64,
            tokens: 3 * n as u64,
            documents: n as u64,
            tokenizer_hash: "0".into(),
            pad_id: None,
            bos_id: None,
            eos_id: None,
            mask_id: None,
            labels: vec![],
            packed: false,
            shards: shards
                .iter()
                .map(|s| MetaShard {
                    file: s.file.clone(),
                    rows: s.rows,
                    xxh3: s.xxh3.clone(),
                })
                .collect(),
        }
        .save(dir)
        .unwrap();
    }

    fn labels(r: &mut TokenReader, k: usize) -> Vec<i64> {
        (0..k)
            .map(|_| match r.next_row().unwrap() {
                Row::Cls { label, input_ids } => {
                    assert_eq!(input_ids[0] as i64, label);
                    label
                }
                other => panic!("unexpected row {other:?}"),
            })
            .collect()
    }

    fn cfg(seed: u64, rank: usize, world_size: usize) -> ReaderConfig {
        ReaderConfig {
            seed,
            rank,
            world_size,
            batch_rows: 5,
        }
    }

    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        for n in [0, 1, 2, 17, 1000] {
            let p = permutation(n, 7);
            let mut s = p.clone();
            s.sort();
            assert_eq!(s, (0..n).collect::<Vec<_>>());
            assert_eq!(p, permutation(n, 7));
        }
        assert_ne!(permutation(100, 1), permutation(100, 2));
        assert_ne!(mix(&[1, 2]), mix(&[2, 1]));
    }

    #[test]
    fn epoch_covers_every_row_once_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        split(20_000, dir.path()); // more than two windows
        let mut a = TokenReader::open(dir.path(), cfg(3, 0, 1)).unwrap();
        let mut b = TokenReader::open(dir.path(), cfg(3, 0, 1)).unwrap();
        assert_eq!(a.rows_per_epoch(), 20_000);
        let e0 = labels(&mut a, 20_000);
        assert_eq!(e0, labels(&mut b, 20_000), "same seed, same order");
        let set: BTreeSet<i64> = e0.iter().copied().collect();
        assert_eq!(set.len(), 20_000, "every row exactly once");
        assert_ne!(e0[..100], (0..100).collect::<Vec<i64>>()[..], "shuffled");
        // The next epoch wraps around, covers everything again, in another order.
        let e1 = labels(&mut a, 20_000);
        assert_eq!(
            a.cursor(),
            Cursor {
                epoch: 1,
                position: 20_000
            }
        );
        assert_eq!(e1.iter().copied().collect::<BTreeSet<_>>(), set);
        assert_ne!(e0, e1);
        let mut c = TokenReader::open(dir.path(), cfg(4, 0, 1)).unwrap();
        assert_ne!(
            labels(&mut c, 200),
            e0[..200].to_vec(),
            "another seed, another order"
        );
    }

    #[test]
    fn ranks_are_disjoint_and_cover_the_split() {
        let dir = tempfile::tempdir().unwrap();
        split(1001, dir.path());
        let mut all = BTreeSet::new();
        let mut counts = Vec::new();
        for rank in 0..3 {
            let mut r = TokenReader::open(dir.path(), cfg(9, rank, 3)).unwrap();
            let n = r.rows_per_epoch() as usize;
            counts.push(n);
            for l in labels(&mut r, n) {
                assert!(all.insert(l), "row {l} given to two ranks");
            }
        }
        assert_eq!(all.len(), 1001);
        assert_eq!(counts.iter().sum::<usize>(), 1001);
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{counts:?}"
        );
        let e = TokenReader::open(dir.path(), cfg(9, 3, 3)).err().unwrap();
        assert!(
            e.to_string().contains("rank 3 is not in 0..world_size (3)"),
            "{e}"
        );
    }

    #[test]
    fn cursor_restore_continues_exactly() {
        let dir = tempfile::tempdir().unwrap();
        split(9000, dir.path());
        for (world, rank, before) in [(1, 0, 8300), (2, 1, 4499), (1, 0, 9000), (2, 0, 10)] {
            let mut a = TokenReader::open(dir.path(), cfg(5, rank, world)).unwrap();
            labels(&mut a, before);
            let saved = serde_json::to_string(&a.cursor()).unwrap();
            let expect = labels(&mut a, 6000); // crosses into the next epoch
            let mut b = TokenReader::open(dir.path(), cfg(5, rank, world)).unwrap();
            b.seek(&serde_json::from_str(&saved).unwrap()).unwrap();
            assert_eq!(
                labels(&mut b, 6000),
                expect,
                "world {world} rank {rank} after {before}"
            );
            assert_eq!(a.cursor(), b.cursor());
        }
        let mut r = TokenReader::open(dir.path(), cfg(5, 0, 2)).unwrap();
        assert!(r
            .seek(&Cursor {
                epoch: 0,
                position: 9000
            })
            .is_err());
    }

    #[test]
    fn damaged_meta_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        split(30, dir.path());
        let mut m = TokenMeta::load(dir.path()).unwrap();
        m.shards[0].rows += 1;
        m.save(dir.path()).unwrap();
        let e = TokenReader::open(dir.path(), cfg(0, 0, 1))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("part-00000.parquet") && e.contains("holds 23 rows but meta.json lists 24"),
            "{e}"
        );
    }

    /// A packed sft split's rows come back with their conversation starts; starts that are not
    /// increasing positions from 0 inside the row, and `packed` on another objective, are
    /// refused naming the file.
    #[test]
    fn packed_sft_rows_carry_their_starts_and_bad_starts_are_refused() {
        let write = |dir: &Path, starts: &[i32], objective: Objective| {
            let mut w = ShardWriter::new(
                dir,
                "",
                "part",
                schema::split_schema(Objective::Sft, true),
                ShardOptions::default(),
            )
            .unwrap();
            let mut b = RowBuilder::new(Objective::Sft).with_packed(true);
            let docs: Vec<String> = (0..starts.len()).map(|k| format!("c{k}")).collect();
            b.push_sft_packed(&[1, 2, 3, 4, 5, 6], &[0, 1, 1, 0, 0, 1], &docs, starts);
            w.write(&b.finish().unwrap()).unwrap();
            let shards = w.finish().unwrap();
            TokenMeta {
                objective,
                vocab_size: 10,
                seq_len: 8,
                rows: 1,
                tokens: 6,
                documents: starts.len() as u64,
                tokenizer_hash: "0".into(),
                pad_id: None,
                bos_id: None,
                eos_id: None,
                mask_id: None,
                labels: vec![],
                packed: true,
                shards: shards
                    .iter()
                    .map(|s| MetaShard {
                        file: s.file.clone(),
                        rows: s.rows,
                        xxh3: s.xxh3.clone(),
                    })
                    .collect(),
            }
            .save(dir)
            .unwrap();
        };
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[0, 3], Objective::Sft);
        let mut r = TokenReader::open(dir.path(), cfg(0, 0, 1)).unwrap();
        match r.next_row().unwrap() {
            Row::Sft { doc_starts, .. } => assert_eq!(doc_starts, vec![0, 3]),
            other => panic!("unexpected row {other:?}"),
        }
        for bad in [&[1, 3][..], &[0, 3, 3], &[0, 6]] {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), bad, Objective::Sft);
            let mut r = TokenReader::open(dir.path(), cfg(0, 0, 1)).unwrap();
            let e = r.next_row().unwrap_err().to_string();
            assert!(
                e.contains("part-00000.parquet") && e.contains("doc_starts"),
                "{bad:?}: {e}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[0, 3], Objective::Cls);
        let e = TokenReader::open(dir.path(), cfg(0, 0, 1))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("meta.json") && e.contains("`packed`"), "{e}");
    }
}
