//! Where training rows come from.
//!
//! The trainer reads rows of token ids through the [`BatchSource`] trait, so the model,
//! optimizer and loop do not depend on how rows are stored and tests can feed rows from
//! memory. [`ShardRows`] streams the packed shards `quern tokenize` writes for `clm`/`mlm`
//! (`tokens: List<Int32>` of `seq_len + 1` ids per row, and `meta.json`; see
//! docs/DEVELOPING.md "Tokenized shards"); [`SftRows`] streams `sft` shards (`input_ids` and
//! `loss_mask` of at most `seq_len` ids, one conversation per row) and right-pads each
//! micro-batch to its longest row, with a loss mask of 0 on the padding ([`Rows`]). Both
//! read through `quern_tokenize::TokenReader`, which holds one shuffle window in memory, never
//! the split; they check every id against the vocabulary and name the split of a bad one.
//! [`PrefRows`] streams `rm`/`dpo` preference pairs as chosen and rejected sequences.
//! [`TokenRows`] holds packed rows in memory (tests, benches).
//!
//! Order is deterministic: each epoch visits the rows in an order drawn from `(seed, epoch)`.
//! The position in that order is a [`DataCursor`], saved in each checkpoint, so a resumed run
//! reads exactly the rows the uninterrupted run would have.

use std::path::Path;

use quern_core::error::Place;
use quern_core::shard::{ShardOptions, ShardWriter};
use quern_core::{Error, Result};
use quern_tokenize::schema::RowBuilder;
use quern_tokenize::{Cursor, MetaShard, Objective, ReaderConfig, Row, TokenMeta, TokenReader};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The position of a [`BatchSource`]: which epoch, and how many rows of it were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataCursor {
    pub epoch: u64,
    pub position: u64,
}

/// A micro-batch of rows as a [`BatchSource`] gives them, on the CPU.
#[derive(Debug)]
pub struct Rows {
    /// Token ids `[n, width]` (int64). Packed rows are all `width` ids; `sft` rows are
    /// right-padded to the longest row of the micro-batch.
    pub ids: Tensor,
    /// `sft`: `[n, width]` (int64), 1 where the id is a target the loss counts (a response
    /// token), 0 on prompts and padding. `None` for packed rows.
    pub loss_mask: Option<Tensor>,
    /// `sft`, `cls`: the length of each row before padding. Empty for packed rows.
    pub lengths: Vec<usize>,
    /// `cls`: each row's class id `[n]` (int64); `nsp`: each row's next-sentence label.
    /// `None` otherwise.
    pub labels: Option<Tensor>,
    /// Packed `sft` rows: `[n, width]` (int64), the conversation of each id within its row
    /// (0, 1, ... in order; the padding after the last conversation one more), so the model
    /// keeps attention and positions inside each conversation. `None` otherwise.
    pub segments: Option<Tensor>,
    /// `nsp` rows: `[n, width]` (int64), each id's token type (0 for `[CLS]` A `[SEP]`, 1
    /// for B `[SEP]`, 0 on the padding). `None` otherwise.
    pub token_types: Option<Tensor>,
}

impl Rows {
    /// Packed rows, all of the same width.
    pub fn packed(ids: Tensor) -> Self {
        Rows {
            ids,
            loss_mask: None,
            lengths: Vec::new(),
            labels: None,
            segments: None,
            token_types: None,
        }
    }

    /// Model input positions in these rows when each is cut to `width` ids: every row's
    /// length less one (its last id is only a target).
    pub fn input_tokens(&self, width: usize) -> u64 {
        if self.labels.is_some() {
            // cls rows are read whole: every real id is an input.
            self.lengths.iter().map(|&l| l as u64).sum()
        } else if self.lengths.is_empty() {
            let n = self.ids.size().first().copied().unwrap_or(0).max(0) as u64;
            n * (width.saturating_sub(1) as u64)
        } else {
            self.lengths
                .iter()
                .map(|&l| l.min(width).saturating_sub(1) as u64)
                .sum()
        }
    }
}

/// A source of rows of token ids.
pub trait BatchSource: Send {
    /// Ids per row (`seq_len + 1` for packed `clm`/`mlm` rows); for sources of
    /// variable-length rows (see [`fixed_width`](Self::fixed_width)), the most a row holds.
    fn row_width(&self) -> usize;
    /// Whether every row holds `row_width` ids and may be cut to a shorter training window
    /// (packed rows). `false` for variable-length rows, which must never be cut (a cut
    /// conversation loses its response): the trainer refuses a model whose context cannot
    /// hold `row_width` ids. Default `true`.
    fn fixed_width(&self) -> bool {
        true
    }
    /// Number of rows in one epoch.
    fn rows(&self) -> usize;
    /// The next `n` rows as an int64 tensor `[n, row_width]` on the CPU, wrapping into the
    /// next epoch when one ends. Variable-length sources right-pad to the longest row.
    fn next_rows(&mut self, n: usize) -> Result<Tensor>;
    /// The next `n` rows with whatever else the source holds (the loss mask of `sft` rows).
    /// Default: [`next_rows`](Self::next_rows) as packed rows.
    fn next_batch(&mut self, n: usize) -> Result<Rows> {
        Ok(Rows::packed(self.next_rows(n)?))
    }
    /// Where the source is now.
    fn cursor(&self) -> DataCursor;
    /// Moves to a position saved earlier.
    fn seek(&mut self, cursor: DataCursor) -> Result<()>;
    /// A mixture ([`crate::mix::MixRows`]): the rows each of its splits gave so far.
    fn mix_rows(&self) -> Option<Vec<u64>> {
        None
    }
}

/// What the trainer needs from a split's `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitMeta {
    pub objective: String,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub rows: u64,
    pub pad_id: Option<i64>,
    pub bos_id: Option<i64>,
    pub eos_id: Option<i64>,
    pub mask_id: Option<i64>,
    pub tokenizer_hash: String,
    /// `cls`: the class names in id order; empty otherwise.
    #[serde(default)]
    pub labels: Vec<String>,
    /// `sft`: rows pack several conversations (meta.json `packed`).
    #[serde(default)]
    pub packed: bool,
}

impl From<&TokenMeta> for SplitMeta {
    fn from(m: &TokenMeta) -> Self {
        SplitMeta {
            objective: m.objective.name().to_string(),
            vocab_size: m.vocab_size as usize,
            seq_len: m.seq_len as usize,
            rows: m.rows,
            pad_id: m.pad_id.map(i64::from),
            bos_id: m.bos_id.map(i64::from),
            eos_id: m.eos_id.map(i64::from),
            mask_id: m.mask_id.map(i64::from),
            tokenizer_hash: m.tokenizer_hash.clone(),
            labels: m.labels.clone(),
            packed: m.packed,
        }
    }
}

impl SplitMeta {
    /// Reads `{dir}/meta.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::bad_input(
                Place::file(dir),
                "not a directory of tokenized shards (run `quern tokenize` first)",
            ));
        }
        Ok((&TokenMeta::load(dir)?).into())
    }
}

/// Refuses a row holding an id outside the vocabulary, naming the split and the row.
fn check_vocab(ids: &[i32], vocab: usize, dir: &Path, at: &Cursor) -> Result<()> {
    match ids.iter().find(|&&t| t < 0 || t as usize >= vocab) {
        Some(bad) => Err(Error::bad_input(
            Place::file(dir),
            format!(
                "token id {bad} outside the vocabulary (size {vocab}) in row {} of epoch {}",
                at.position, at.epoch
            ),
        )),
        None => Ok(()),
    }
}

/// The packed rows of a tokenized split, streamed in a seeded order.
pub struct ShardRows {
    reader: TokenReader,
    width: usize,
    vocab: usize,
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for ShardRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRows")
            .field("dir", &self.dir)
            .field("width", &self.width)
            .finish()
    }
}

impl ShardRows {
    /// Opens a split directory for rank `rank` of `world_size` (1 process: 0 of 1).
    pub fn open(
        dir: &Path,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<(Self, SplitMeta)> {
        let meta = SplitMeta::load(dir)?;
        let reader = TokenReader::open(
            dir,
            ReaderConfig {
                seed,
                rank,
                world_size,
                ..ReaderConfig::default()
            },
        )?;
        if !reader.meta().objective.is_packed() {
            return Err(Error::bad_input(
                Place::file(dir.join("meta.json")),
                format!(
                    "`objective` is `{}`: these are not packed `tokens` rows, which clm and mlm train on; \
                     tokenize with objective clm or mlm{}",
                    reader.meta().objective,
                    match reader.meta().objective {
                        Objective::Sft => ", or set train.objective = \"sft\"",
                        Objective::Nsp => ", or set train.objective = \"nsp\"",
                        _ => "",
                    }
                ),
            ));
        }
        let rows = ShardRows {
            reader,
            width: meta.seq_len + 1,
            vocab: meta.vocab_size,
            dir: dir.to_path_buf(),
        };
        Ok((rows, meta))
    }
}

impl BatchSource for ShardRows {
    fn row_width(&self) -> usize {
        self.width
    }
    fn rows(&self) -> usize {
        self.reader.rows_per_epoch() as usize
    }
    fn next_rows(&mut self, n: usize) -> Result<Tensor> {
        let mut out = Vec::with_capacity(n * self.width);
        for _ in 0..n {
            let at = self.reader.cursor();
            match self.reader.next_row()? {
                Row::Packed { tokens, .. } => {
                    check_vocab(&tokens, self.vocab, &self.dir, &at)?;
                    out.extend(tokens.iter().map(|&t| t as i64));
                }
                _ => return Err(Error::bug("a packed split returned an unpacked row")),
            }
        }
        Ok(Tensor::from_slice(&out).view([n as i64, self.width as i64]))
    }
    fn cursor(&self) -> DataCursor {
        let c = self.reader.cursor();
        DataCursor {
            epoch: c.epoch,
            position: c.position,
        }
    }
    fn seek(&mut self, c: DataCursor) -> Result<()> {
        self.reader.seek(&Cursor {
            epoch: c.epoch,
            position: c.position,
        })
    }
}

/// The `sft` rows of a tokenized split (`input_ids` + `loss_mask`, at most `seq_len` ids:
/// one conversation per row, or several whole ones in a packed split), streamed in a seeded
/// order and right-padded per micro-batch. Rows of a packed split come with their
/// [`Rows::segments`].
pub struct SftRows {
    reader: TokenReader,
    max_len: usize,
    vocab: usize,
    pad: i64,
    packed: bool,
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for SftRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftRows")
            .field("dir", &self.dir)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl SftRows {
    /// Opens an `sft` split directory for rank `rank` of `world_size` (1 process: 0 of 1).
    /// Refuses a split of another objective, naming its `meta.json`.
    pub fn open(
        dir: &Path,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<(Self, SplitMeta)> {
        let meta = SplitMeta::load(dir)?;
        if meta.objective != Objective::Sft.name() {
            return Err(Error::bad_input(
                Place::file(dir.join("meta.json")),
                format!(
                    "`objective` is `{}`, but train.objective = \"sft\" trains on `sft` rows \
                     (input_ids + loss_mask): tokenize with --objective sft{}",
                    meta.objective,
                    match meta.objective.as_str() {
                        "clm" => ", or set train.objective = \"clm\"",
                        "mlm" => ", or set train.objective = \"mlm\"",
                        _ => "",
                    }
                ),
            ));
        }
        let reader = TokenReader::open(
            dir,
            ReaderConfig {
                seed,
                rank,
                world_size,
                ..ReaderConfig::default()
            },
        )?;
        // Padding only ever sits where the loss mask is 0 and after every real id of its row
        // (a causal model never attends to it), so any id in the vocabulary would do.
        let pad = meta.pad_id.or(meta.eos_id).unwrap_or(0);
        let rows = SftRows {
            reader,
            max_len: meta.seq_len,
            vocab: meta.vocab_size,
            pad,
            packed: meta.packed,
            dir: dir.to_path_buf(),
        };
        Ok((rows, meta))
    }
}

impl BatchSource for SftRows {
    fn row_width(&self) -> usize {
        self.max_len
    }
    fn fixed_width(&self) -> bool {
        false
    }
    fn rows(&self) -> usize {
        self.reader.rows_per_epoch() as usize
    }
    fn next_rows(&mut self, n: usize) -> Result<Tensor> {
        Ok(self.next_batch(n)?.ids)
    }
    fn next_batch(&mut self, n: usize) -> Result<Rows> {
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.reader.cursor();
            let place = || format!("row {} of epoch {}", at.position, at.epoch);
            match self.reader.next_row()? {
                Row::Sft {
                    input_ids,
                    loss_mask,
                    doc_starts,
                } => {
                    check_vocab(&input_ids, self.vocab, &self.dir, &at)?;
                    if input_ids.len() > self.max_len {
                        return Err(Error::bad_input(
                            Place::file(&self.dir),
                            format!(
                                "{} holds {} ids, more than meta.json's seq_len ({}); the split is damaged, rerun quern tokenize",
                                place(),
                                input_ids.len(),
                                self.max_len
                            ),
                        ));
                    }
                    rows.push((input_ids, loss_mask, doc_starts));
                }
                _ => return Err(Error::bug("an sft split returned a row of another kind")),
            }
        }
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(n * width);
        let mut mask = Vec::with_capacity(n * width);
        let mut lengths = Vec::with_capacity(n);
        let mut segments = Vec::with_capacity(if self.packed { n * width } else { 0 });
        for (i, m, starts) in &rows {
            ids.extend(i.iter().map(|&t| i64::from(t)));
            ids.extend(std::iter::repeat_n(self.pad, width - i.len()));
            mask.extend(m.iter().map(|&b| i64::from(b != 0)));
            mask.extend(std::iter::repeat_n(0i64, width - m.len()));
            lengths.push(i.len());
            if self.packed {
                // Conversation k covers starts[k]..starts[k + 1]; the padding is one more.
                let mut k = 0usize;
                for t in 0..width {
                    while k < starts.len() && starts[k] as usize <= t {
                        k += 1;
                    }
                    let seg = if t < i.len() { k - 1 } else { starts.len() };
                    segments.push(seg as i64);
                }
            }
        }
        let shape = [n as i64, width as i64];
        Ok(Rows {
            ids: Tensor::from_slice(&ids).view(shape),
            loss_mask: Some(Tensor::from_slice(&mask).view(shape)),
            lengths,
            labels: None,
            segments: self
                .packed
                .then(|| Tensor::from_slice(&segments).view(shape)),
            token_types: None,
        })
    }
    fn cursor(&self) -> DataCursor {
        let c = self.reader.cursor();
        DataCursor {
            epoch: c.epoch,
            position: c.position,
        }
    }
    fn seek(&mut self, c: DataCursor) -> Result<()> {
        self.reader.seek(&Cursor {
            epoch: c.epoch,
            position: c.position,
        })
    }
}

/// The `cls` rows of a tokenized split (`input_ids` of at most `seq_len` ids and a `label`
/// per row), streamed in a seeded order and right-padded per micro-batch; [`Rows::lengths`]
/// tells the padding apart. Every label is checked against `meta.json`'s `labels` when the
/// split is opened, so a bad one is refused before training, naming its shard.
pub struct ClsRows {
    reader: TokenReader,
    max_len: usize,
    vocab: usize,
    labels: usize,
    pad: i64,
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for ClsRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClsRows")
            .field("dir", &self.dir)
            .field("max_len", &self.max_len)
            .field("labels", &self.labels)
            .finish()
    }
}

impl ClsRows {
    /// Opens a `cls` split directory for rank `rank` of `world_size`. Refuses a split of
    /// another objective or without label names (naming its `meta.json`), and a row whose
    /// label is not a class id (naming its shard).
    pub fn open(
        dir: &Path,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<(Self, SplitMeta)> {
        let meta = SplitMeta::load(dir)?;
        let meta_path = dir.join("meta.json");
        if meta.objective != Objective::Cls.name() {
            return Err(Error::bad_input(
                Place::file(&meta_path),
                format!(
                    "`objective` is `{}`, but train.objective = \"cls\" trains on `cls` rows \
                     (input_ids + label): tokenize with --objective cls",
                    meta.objective
                ),
            ));
        }
        if meta.labels.len() < 2 {
            return Err(Error::bad_input(
                Place::file(&meta_path),
                format!(
                    "`labels` names {} class(es); a classifier needs at least 2 (rerun quern tokenize --objective cls)",
                    meta.labels.len()
                ),
            ));
        }
        check_labels(dir, meta.labels.len())?;
        let reader = TokenReader::open(
            dir,
            ReaderConfig {
                seed,
                rank,
                world_size,
                ..ReaderConfig::default()
            },
        )?;
        // Padding is masked out of attention and pooling, so any id in the vocabulary does.
        let pad = meta.pad_id.or(meta.eos_id).unwrap_or(0);
        let rows = ClsRows {
            reader,
            max_len: meta.seq_len,
            vocab: meta.vocab_size,
            labels: meta.labels.len(),
            pad,
            dir: dir.to_path_buf(),
        };
        Ok((rows, meta))
    }
}

/// Checks every `label` of a cls split's shards is in `0..labels`; an error names the shard
/// file, the row and the label.
pub fn check_labels(dir: &Path, labels: usize) -> Result<()> {
    use arrow::array::{Array, Int64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let meta = TokenMeta::load(dir)?;
    for shard in &meta.shards {
        let path = dir.join(&shard.file);
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let unreadable =
            |e: &dyn std::fmt::Display| Error::bad_input(Place::file(&path), e.to_string());
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| unreadable(&e))?;
        let idx = builder
            .schema()
            .index_of("label")
            .map_err(|_| unreadable(&"no `label` column, which `cls` shards must have"))?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| unreadable(&e))?;
        let mut row = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| unreadable(&e))?;
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| unreadable(&"`label` is not an Int64 column"))?;
            for i in 0..col.len() {
                let bad = if col.is_null(i) {
                    Some("null".to_string())
                } else {
                    let l = col.value(i);
                    (l < 0 || l as u64 >= labels as u64).then(|| l.to_string())
                };
                if let Some(l) = bad {
                    return Err(Error::bad_input(
                        Place::file(&path),
                        format!(
                            "row {} has label {l}, not a class id: meta.json names {labels} labels, ids 0..{}",
                            row + i as u64,
                            labels - 1
                        ),
                    ));
                }
            }
            row += col.len() as u64;
        }
    }
    Ok(())
}

impl BatchSource for ClsRows {
    fn row_width(&self) -> usize {
        self.max_len
    }
    fn fixed_width(&self) -> bool {
        false
    }
    fn rows(&self) -> usize {
        self.reader.rows_per_epoch() as usize
    }
    fn next_rows(&mut self, n: usize) -> Result<Tensor> {
        Ok(self.next_batch(n)?.ids)
    }
    fn next_batch(&mut self, n: usize) -> Result<Rows> {
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.reader.cursor();
            let place = || format!("row {} of epoch {}", at.position, at.epoch);
            match self.reader.next_row()? {
                Row::Cls { input_ids, label } => {
                    check_vocab(&input_ids, self.vocab, &self.dir, &at)?;
                    if input_ids.is_empty() || input_ids.len() > self.max_len {
                        return Err(Error::bad_input(
                            Place::file(&self.dir),
                            format!(
                                "{} holds {} ids, not 1 to meta.json's seq_len ({}); the split is damaged, rerun quern tokenize",
                                place(),
                                input_ids.len(),
                                self.max_len
                            ),
                        ));
                    }
                    if label < 0 || label as usize >= self.labels {
                        return Err(Error::bad_input(
                            Place::file(&self.dir),
                            format!(
                                "{} has label {label}, not a class id (0..{})",
                                place(),
                                self.labels - 1
                            ),
                        ));
                    }
                    rows.push((input_ids, label));
                }
                _ => return Err(Error::bug("a cls split returned a row of another kind")),
            }
        }
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(n * width);
        let mut lengths = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for (i, l) in &rows {
            ids.extend(i.iter().map(|&t| i64::from(t)));
            ids.extend(std::iter::repeat_n(self.pad, width - i.len()));
            lengths.push(i.len());
            labels.push(*l);
        }
        Ok(Rows {
            ids: Tensor::from_slice(&ids).view([n as i64, width as i64]),
            loss_mask: None,
            lengths,
            labels: Some(Tensor::from_slice(&labels)),
            segments: None,
            token_types: None,
        })
    }
    fn cursor(&self) -> DataCursor {
        let c = self.reader.cursor();
        DataCursor {
            epoch: c.epoch,
            position: c.position,
        }
    }
    fn seek(&mut self, c: DataCursor) -> Result<()> {
        self.reader.seek(&Cursor {
            epoch: c.epoch,
            position: c.position,
        })
    }
}

/// The `rm`/`dpo` rows of a tokenized split (`prompt_ids`, `chosen_ids`, `rejected_ids`),
/// streamed in a seeded order. A micro-batch of `n` pairs is `2n` sequences, right-padded to
/// the longest: rows `0..n` are prompt + chosen, rows `n..2n` prompt + rejected of the same
/// pairs in the same order; [`Rows::lengths`] gives each sequence's real length (the padding
/// is told apart by length, never by the pad id, which may equal eos), and
/// [`Rows::loss_mask`] is 1 on the completion's ids. A pair whose prompt + completion holds
/// more than `seq_len` ids or whose completion is empty is refused naming the split and row.
pub struct PrefRows {
    reader: TokenReader,
    max_len: usize,
    vocab: usize,
    pad: i64,
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for PrefRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefRows")
            .field("dir", &self.dir)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl PrefRows {
    /// Opens an `rm` or `dpo` split for `train.objective = objective` (either reads either),
    /// rank `rank` of `world_size`. Refuses a split of another objective, naming its
    /// `meta.json`.
    pub fn open(
        dir: &Path,
        objective: &str,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<(Self, SplitMeta)> {
        let meta = SplitMeta::load(dir)?;
        if !matches!(meta.objective.as_str(), "rm" | "dpo") {
            return Err(Error::bad_input(
                Place::file(dir.join("meta.json")),
                format!(
                    "`objective` is `{}`, but train.objective = \"{objective}\" trains on preference \
                     pairs (prompt_ids + chosen_ids + rejected_ids): tokenize with --objective {objective}",
                    meta.objective
                ),
            ));
        }
        let reader = TokenReader::open(
            dir,
            ReaderConfig {
                seed,
                rank,
                world_size,
                ..ReaderConfig::default()
            },
        )?;
        // Padding sits after every real id of its row, and lengths tell it apart.
        let pad = meta.pad_id.or(meta.eos_id).unwrap_or(0);
        let rows = PrefRows {
            reader,
            max_len: meta.seq_len,
            vocab: meta.vocab_size,
            pad,
            dir: dir.to_path_buf(),
        };
        Ok((rows, meta))
    }
}

impl BatchSource for PrefRows {
    fn row_width(&self) -> usize {
        self.max_len
    }
    fn fixed_width(&self) -> bool {
        false
    }
    fn rows(&self) -> usize {
        self.reader.rows_per_epoch() as usize
    }
    fn next_rows(&mut self, n: usize) -> Result<Tensor> {
        Ok(self.next_batch(n)?.ids)
    }
    fn next_batch(&mut self, n: usize) -> Result<Rows> {
        let mut seqs: Vec<(Vec<i32>, usize)> = vec![Default::default(); 2 * n];
        for k in 0..n {
            let at = self.reader.cursor();
            let place = || format!("row {} of epoch {}", at.position, at.epoch);
            match self.reader.next_row()? {
                Row::Pref {
                    prompt_ids,
                    chosen_ids,
                    rejected_ids,
                } => {
                    for (slot, (name, c)) in [
                        (k, ("chosen_ids", chosen_ids)),
                        (n + k, ("rejected_ids", rejected_ids)),
                    ] {
                        let mut ids = prompt_ids.clone();
                        ids.extend_from_slice(&c);
                        check_vocab(&ids, self.vocab, &self.dir, &at)?;
                        if c.is_empty() || ids.len() > self.max_len {
                            return Err(Error::bad_input(
                                Place::file(&self.dir),
                                format!(
                                    "{}: `{name}` holds {} ids after a prompt of {}; a completion needs 1 id or more, \
                                     and the two together at most meta.json's seq_len ({}): the split is damaged, rerun quern tokenize",
                                    place(),
                                    c.len(),
                                    prompt_ids.len(),
                                    self.max_len
                                ),
                            ));
                        }
                        seqs[slot] = (ids, prompt_ids.len());
                    }
                }
                _ => {
                    return Err(Error::bug(
                        "a preference split returned a row of another kind",
                    ))
                }
            }
        }
        Ok(pair_batch(&seqs, self.pad))
    }
    fn cursor(&self) -> DataCursor {
        let c = self.reader.cursor();
        DataCursor {
            epoch: c.epoch,
            position: c.position,
        }
    }
    fn seek(&mut self, c: DataCursor) -> Result<()> {
        self.reader.seek(&Cursor {
            epoch: c.epoch,
            position: c.position,
        })
    }
}

/// The [`Rows`] of `2n` sequences, each `(ids, prompt length)` (prompt + chosen of every pair,
/// then prompt + rejected of every pair), as [`PrefRows`] gives them: right-padded with `pad`
/// to the longest, their lengths, and a loss mask of 1 on each completion.
pub fn pair_batch(seqs: &[(Vec<i32>, usize)], pad: i64) -> Rows {
    let width = seqs.iter().map(|r| r.0.len()).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(seqs.len() * width);
    let mut mask = Vec::with_capacity(seqs.len() * width);
    let mut lengths = Vec::with_capacity(seqs.len());
    for (i, prompt) in seqs {
        ids.extend(i.iter().map(|&t| i64::from(t)));
        ids.extend(std::iter::repeat_n(pad, width - i.len()));
        mask.extend((0..width).map(|t| i64::from(t >= *prompt && t < i.len())));
        lengths.push(i.len());
    }
    let shape = [seqs.len() as i64, width as i64];
    Rows {
        ids: Tensor::from_slice(&ids).view(shape),
        loss_mask: Some(Tensor::from_slice(&mask).view(shape)),
        lengths,
        labels: None,
        segments: None,
        token_types: None,
    }
}

/// Writes `rows` (prompt, chosen and rejected ids) as an `objective` (`rm` or `dpo`) split in
/// `dir`, in the layout `quern tokenize` writes: for tests and benchmarks. Rows are written
/// as given; no `tokenizer.json` is written.
pub fn write_pref_split(
    dir: &Path,
    objective: Objective,
    rows: &[(Vec<i32>, Vec<i32>, Vec<i32>)],
    seq_len: usize,
    vocab_size: usize,
    special: [Option<u32>; 4],
    tokenizer: &str,
) -> Result<()> {
    if rows.is_empty() || !matches!(objective, Objective::Rm | Objective::Dpo) {
        return Err(Error::usage(
            "preference splits need rows and the rm or dpo objective",
        ));
    }
    let mut b = RowBuilder::new(objective);
    for (i, (p, c, r)) in rows.iter().enumerate() {
        b.push_pref(p, c, r, &[format!("row-{i}")]);
    }
    let tokens = rows
        .iter()
        .map(|(p, c, r)| (p.len() + c.len() + r.len()) as u64)
        .sum();
    write_split(
        dir,
        objective,
        &b.finish()?,
        seq_len,
        rows.len(),
        tokens,
        vocab_size,
        special,
        tokenizer,
    )
}

/// The `nsp` rows of a tokenized split (`[CLS] A [SEP] B [SEP]` of at most `seq_len` ids,
/// their `token_type_ids` and `next_sentence_label`), streamed in a seeded order and
/// right-padded per micro-batch ([`Rows::lengths`] tells the padding apart, token type 0 on
/// it). A row whose label is not 0 or 1, or whose token types are not 0s then 1s, is
/// refused naming the split and the row.
pub struct NspRows {
    reader: TokenReader,
    max_len: usize,
    vocab: usize,
    pad: i64,
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for NspRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NspRows")
            .field("dir", &self.dir)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl NspRows {
    /// Opens an `nsp` split directory for rank `rank` of `world_size`. Refuses a split of
    /// another objective, naming its `meta.json`.
    pub fn open(
        dir: &Path,
        seed: u64,
        rank: usize,
        world_size: usize,
    ) -> Result<(Self, SplitMeta)> {
        let meta = SplitMeta::load(dir)?;
        if meta.objective != Objective::Nsp.name() {
            return Err(Error::bad_input(
                Place::file(dir.join("meta.json")),
                format!(
                    "`objective` is `{}`, but train.objective = \"nsp\" trains on `nsp` rows \
                     (input_ids + token_type_ids + next_sentence_label): tokenize with --objective nsp{}",
                    meta.objective,
                    match meta.objective.as_str() {
                        "mlm" => ", or set train.objective = \"mlm\"",
                        _ => "",
                    }
                ),
            ));
        }
        let reader = TokenReader::open(
            dir,
            ReaderConfig {
                seed,
                rank,
                world_size,
                ..ReaderConfig::default()
            },
        )?;
        // Padding is masked out of attention and never masked for MLM, so any id would do.
        let pad = meta.pad_id.or(meta.eos_id).unwrap_or(0);
        let rows = NspRows {
            reader,
            max_len: meta.seq_len,
            vocab: meta.vocab_size,
            pad,
            dir: dir.to_path_buf(),
        };
        Ok((rows, meta))
    }
}

impl BatchSource for NspRows {
    fn row_width(&self) -> usize {
        self.max_len
    }
    fn fixed_width(&self) -> bool {
        false
    }
    fn rows(&self) -> usize {
        self.reader.rows_per_epoch() as usize
    }
    fn next_rows(&mut self, n: usize) -> Result<Tensor> {
        Ok(self.next_batch(n)?.ids)
    }
    fn next_batch(&mut self, n: usize) -> Result<Rows> {
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.reader.cursor();
            let bad = |what: String| {
                Error::bad_input(
                    Place::file(&self.dir),
                    format!(
                        "row {} of epoch {} {what}; the split is damaged, rerun quern tokenize",
                        at.position, at.epoch
                    ),
                )
            };
            match self.reader.next_row()? {
                Row::Nsp {
                    input_ids,
                    token_type_ids,
                    label,
                } => {
                    check_vocab(&input_ids, self.vocab, &self.dir, &at)?;
                    if input_ids.len() < 3 || input_ids.len() > self.max_len {
                        return Err(bad(format!(
                            "holds {} ids, not 3 to meta.json's seq_len ({})",
                            input_ids.len(),
                            self.max_len
                        )));
                    }
                    if !(0..=1).contains(&label) {
                        return Err(bad(format!(
                            "has next_sentence_label {label}, not 0 (is next) or 1 (random)"
                        )));
                    }
                    let b = token_type_ids.iter().position(|&t| t != 0);
                    let ordered = b.is_some_and(|b| token_type_ids[b..].iter().all(|&t| t == 1));
                    if !ordered {
                        return Err(bad("has token types that are not 0s then 1s".into()));
                    }
                    rows.push((input_ids, token_type_ids, label));
                }
                _ => return Err(Error::bug("an nsp split returned a row of another kind")),
            }
        }
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(n * width);
        let mut types = Vec::with_capacity(n * width);
        let mut lengths = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for (i, t, l) in &rows {
            ids.extend(i.iter().map(|&x| i64::from(x)));
            ids.extend(std::iter::repeat_n(self.pad, width - i.len()));
            types.extend(t.iter().map(|&x| i64::from(x)));
            types.extend(std::iter::repeat_n(0i64, width - t.len()));
            lengths.push(i.len());
            labels.push(*l);
        }
        let shape = [n as i64, width as i64];
        Ok(Rows {
            ids: Tensor::from_slice(&ids).view(shape),
            loss_mask: None,
            lengths,
            labels: Some(Tensor::from_slice(&labels)),
            segments: None,
            token_types: Some(Tensor::from_slice(&types).view(shape)),
        })
    }
    fn cursor(&self) -> DataCursor {
        let c = self.reader.cursor();
        DataCursor {
            epoch: c.epoch,
            position: c.position,
        }
    }
    fn seek(&mut self, c: DataCursor) -> Result<()> {
        self.reader.seek(&Cursor {
            epoch: c.epoch,
            position: c.position,
        })
    }
}

/// Writes `rows` (`[CLS] A [SEP] B [SEP]` ids, their token types and the next-sentence
/// label) as an `nsp` split in `dir`, in the layout `quern tokenize` writes: for tests and
/// benchmarks. Rows are written as given; no `tokenizer.json` is written.
pub fn write_nsp_split(
    dir: &Path,
    rows: &[(Vec<i32>, Vec<i8>, i64)],
    seq_len: usize,
    vocab_size: usize,
    special: [Option<u32>; 4],
    tokenizer: &str,
) -> Result<()> {
    if rows.is_empty()
        || rows
            .iter()
            .any(|(i, t, _)| i.len() != t.len() || i.is_empty() || i.len() > seq_len)
    {
        return Err(Error::usage(
            "nsp rows need ids and token types of the same length, 1 to seq_len ids",
        ));
    }
    let mut b = RowBuilder::new(Objective::Nsp);
    for (i, (ids, types, label)) in rows.iter().enumerate() {
        b.push_nsp(ids, types, *label, &[format!("row-{i}")]);
    }
    let tokens = rows.iter().map(|r| r.0.len() as u64).sum();
    write_split(
        dir,
        Objective::Nsp,
        &b.finish()?,
        seq_len,
        rows.len(),
        tokens,
        vocab_size,
        special,
        tokenizer,
    )
}

/// Writes `rows` (input ids, 1 to `seq_len` of them, and a class id) as a `cls` split in
/// `dir` with the class names `labels`, in the layout `quern tokenize` writes: for tests and
/// benchmarks. Labels are written as given (a test may write a bad one); no
/// `tokenizer.json` is written.
pub fn write_cls_split(
    dir: &Path,
    rows: &[(Vec<i32>, i64)],
    labels: &[String],
    seq_len: usize,
    vocab_size: usize,
    special: [Option<u32>; 4],
    tokenizer: &str,
) -> Result<()> {
    if rows.is_empty() || rows.iter().any(|(i, _)| i.is_empty() || i.len() > seq_len) {
        return Err(Error::usage("cls rows need 1 to seq_len ids"));
    }
    let mut b = RowBuilder::new(Objective::Cls);
    for (i, (ids, label)) in rows.iter().enumerate() {
        b.push_cls(ids, *label, &[format!("row-{i}")]);
    }
    let tokens = rows.iter().map(|r| r.0.len() as u64).sum();
    write_split(
        dir,
        Objective::Cls,
        &b.finish()?,
        seq_len,
        rows.len(),
        tokens,
        vocab_size,
        special,
        tokenizer,
    )?;
    let mut meta = TokenMeta::load(dir)?;
    meta.labels = labels.to_vec();
    meta.save(dir)
}

/// Writes `rows` (input ids and a loss mask of the same length, at most `seq_len` ids each)
/// as an `sft` split in `dir`, in the layout `quern tokenize` writes: for tests and
/// benchmarks that bring their own ids. No `tokenizer.json` is written; `tokenizer_hash` is
/// `tokenizer`.
pub fn write_sft_split(
    dir: &Path,
    rows: &[(Vec<i32>, Vec<i8>)],
    seq_len: usize,
    vocab_size: usize,
    special: [Option<u32>; 4],
    tokenizer: &str,
) -> Result<()> {
    if rows.is_empty()
        || rows
            .iter()
            .any(|(i, m)| i.len() != m.len() || i.is_empty() || i.len() > seq_len)
    {
        return Err(Error::usage(
            "sft rows need ids and a mask of the same length, 1 to seq_len ids",
        ));
    }
    let mut b = RowBuilder::new(Objective::Sft);
    for (i, (ids, mask)) in rows.iter().enumerate() {
        b.push_sft(ids, mask, &[format!("row-{i}")]);
    }
    let tokens = rows.iter().map(|r| r.0.len() as u64).sum();
    write_split(
        dir,
        Objective::Sft,
        &b.finish()?,
        seq_len,
        rows.len(),
        tokens,
        vocab_size,
        special,
        tokenizer,
    )
}

/// Writes packed `sft` rows as a split in `dir` (`meta.json` `packed`, as `quern tokenize
/// --pack` writes them): each row is its conversations (ids and loss mask, same length)
/// end to end, at most `seq_len` ids in all. For tests and benchmarks.
pub fn write_packed_sft_split(
    dir: &Path,
    rows: &[Vec<(Vec<i32>, Vec<i8>)>],
    seq_len: usize,
    vocab_size: usize,
    special: [Option<u32>; 4],
    tokenizer: &str,
) -> Result<()> {
    let bad = |r: &Vec<(Vec<i32>, Vec<i8>)>| {
        r.is_empty()
            || r.iter().map(|c| c.0.len()).sum::<usize>() > seq_len
            || r.iter().any(|(i, m)| i.is_empty() || i.len() != m.len())
    };
    if rows.is_empty() || rows.iter().any(bad) {
        return Err(Error::usage(
            "packed sft rows need conversations of ids and a mask of the same length, \
             at most seq_len ids a row",
        ));
    }
    let mut b = RowBuilder::new(Objective::Sft).with_packed(true);
    let mut tokens = 0u64;
    let mut conversations = 0;
    for (r, convs) in rows.iter().enumerate() {
        let (mut ids, mut mask, mut starts, mut docs) = (vec![], vec![], vec![], vec![]);
        for (k, (i, m)) in convs.iter().enumerate() {
            starts.push(ids.len() as i32);
            docs.push(format!("row-{r}-{k}"));
            ids.extend_from_slice(i);
            mask.extend_from_slice(m);
        }
        tokens += ids.len() as u64;
        conversations += convs.len();
        b.push_sft_packed(&ids, &mask, &docs, &starts);
    }
    write_split(
        dir,
        Objective::Sft,
        &b.finish()?,
        seq_len,
        rows.len(),
        tokens,
        vocab_size,
        special,
        tokenizer,
    )?;
    let mut meta = TokenMeta::load(dir)?;
    meta.packed = true;
    meta.documents = conversations as u64;
    meta.save(dir)
}

/// Writes the bytes of a text as a byte-level tokenized split in `dir`: ids 0–255 are the
/// bytes, then pad 256, bos 257, eos 258 and, with `mask`, mask 259 (vocabulary 259 or 260);
/// rows of `seq_len + 1` ids, each starting where the one before ended. For tests and
/// benchmarks that train without a tokenizer (see [`write_packed_split`]).
pub fn write_byte_split(dir: &Path, bytes: &[u8], seq_len: usize, mask: bool) -> Result<()> {
    let rows: Vec<Vec<i32>> = bytes
        .windows(seq_len + 1)
        .step_by(seq_len)
        .map(|w| w.iter().map(|&b| i32::from(b)).collect())
        .collect();
    let (vocab, mask_id) = if mask { (260, Some(259)) } else { (259, None) };
    write_packed_split(
        dir,
        &rows,
        vocab,
        [Some(256), Some(257), Some(258), mask_id],
        "bytes",
    )
}

/// Writes `rows` (each `seq_len + 1` ids) as a packed tokenized split in `dir`, in the layout
/// `quern tokenize` writes: for tests, benchmarks and demos that bring their own ids (e.g.
/// bytes of a text). No `tokenizer.json` is written; `tokenizer_hash` is `tokenizer`.
pub fn write_packed_split(
    dir: &Path,
    rows: &[Vec<i32>],
    vocab_size: usize,
    special: [Option<u32>; 4],
    tokenizer: &str,
) -> Result<()> {
    let seq_len = rows.first().map_or(0, |r| r.len().saturating_sub(1));
    if seq_len == 0 || rows.iter().any(|r| r.len() != seq_len + 1) {
        return Err(Error::usage(
            "packed rows must all hold seq_len + 1 >= 2 ids",
        ));
    }
    let mut b = RowBuilder::new(Objective::Clm);
    for (i, r) in rows.iter().enumerate() {
        b.push_packed(r, &[format!("row-{i}")], &[0]);
    }
    write_split(
        dir,
        Objective::Clm,
        &b.finish()?,
        seq_len,
        rows.len(),
        (rows.len() * (seq_len + 1)) as u64,
        vocab_size,
        special,
        tokenizer,
    )
}

/// Writes one batch of rows and its `meta.json` as a split directory.
fn write_split(
    dir: &Path,
    objective: Objective,
    batch: &arrow::array::RecordBatch,
    seq_len: usize,
    rows: usize,
    tokens: u64,
    vocab_size: usize,
    special: [Option<u32>; 4],
    tokenizer: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut w = ShardWriter::new(dir, ".", "part", batch.schema(), ShardOptions::default())?;
    w.write(batch)?;
    let shards = w
        .finish()?
        .into_iter()
        .map(|s| MetaShard {
            file: Path::new(&s.file)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or(s.file),
            rows: s.rows,
            xxh3: s.xxh3,
        })
        .collect();
    let [pad_id, bos_id, eos_id, mask_id] = special;
    let meta = TokenMeta {
        objective,
        vocab_size: vocab_size as u64,
        seq_len: seq_len as u64,
        rows: rows as u64,
        tokens,
        documents: rows as u64,
        tokenizer_hash: tokenizer.to_string(),
        pad_id,
        bos_id,
        eos_id,
        mask_id,
        labels: Vec::new(),
        packed: false,
        shards,
    };
    meta.save(dir)
}

/// Rows held in memory, read in a seeded order (for tests and benchmarks).
#[derive(Debug)]
pub struct TokenRows {
    ids: Vec<i32>,
    width: usize,
    n: usize,
    shuffle: bool,
    seed: u64,
    order: Vec<u32>,
    cursor: DataCursor,
}

impl TokenRows {
    /// Rows from memory: `ids` holds `ids.len() / width` rows back to back.
    pub fn from_ids(ids: Vec<i32>, width: usize, shuffle: bool, seed: u64) -> Result<Self> {
        if width < 2 || ids.is_empty() || !ids.len().is_multiple_of(width) {
            return Err(Error::usage(format!(
                "token rows need a width of at least 2 and a whole number of rows (got {} ids, width {width})",
                ids.len()
            )));
        }
        let n = ids.len() / width;
        let mut rows = TokenRows {
            ids,
            width,
            n,
            shuffle,
            seed,
            order: Vec::new(),
            cursor: DataCursor::default(),
        };
        rows.reorder();
        Ok(rows)
    }

    fn reorder(&mut self) {
        self.order = (0..self.n as u32).collect();
        if self.shuffle {
            let mut rng =
                SplitMix64(self.seed ^ self.cursor.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for i in (1..self.n).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                self.order.swap(i, j);
            }
        }
    }
}

impl BatchSource for TokenRows {
    fn row_width(&self) -> usize {
        self.width
    }
    fn rows(&self) -> usize {
        self.n
    }
    fn next_rows(&mut self, n: usize) -> Result<Tensor> {
        let mut out = Vec::with_capacity(n * self.width);
        for _ in 0..n {
            if self.cursor.position as usize >= self.n {
                self.cursor = DataCursor {
                    epoch: self.cursor.epoch + 1,
                    position: 0,
                };
                self.reorder();
            }
            let r = self.order[self.cursor.position as usize] as usize;
            out.extend(
                self.ids[r * self.width..(r + 1) * self.width]
                    .iter()
                    .map(|&t| t as i64),
            );
            self.cursor.position += 1;
        }
        Ok(Tensor::from_slice(&out).view([n as i64, self.width as i64]))
    }
    fn cursor(&self) -> DataCursor {
        self.cursor
    }
    fn seek(&mut self, cursor: DataCursor) -> Result<()> {
        if cursor.position as usize > self.n {
            return Err(Error::usage(format!(
                "data cursor (row {} of epoch {}) is past the {} rows: was the data changed?",
                cursor.position, cursor.epoch, self.n
            )));
        }
        self.cursor = cursor;
        self.reorder();
        Ok(())
    }
}

/// A small, fast, seedable generator for data order (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_seek_replays() {
        let ids: Vec<i32> = (0..30).collect();
        let mut a = TokenRows::from_ids(ids.clone(), 3, true, 5).unwrap();
        let first: Vec<i64> = Vec::try_from(a.next_rows(10).unwrap().select(1, 0)).unwrap();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).map(|r| r * 3).collect::<Vec<i64>>());
        assert_ne!(first, sorted, "shuffle on but rows came in order");
        let _ = a.next_rows(4).unwrap();
        let at = a.cursor();
        assert_eq!(
            at,
            DataCursor {
                epoch: 1,
                position: 4
            }
        );
        let next: Vec<i64> = Vec::try_from(a.next_rows(7).unwrap().view([-1])).unwrap();
        let mut b = TokenRows::from_ids(ids, 3, true, 5).unwrap();
        b.seek(at).unwrap();
        let replay: Vec<i64> = Vec::try_from(b.next_rows(7).unwrap().view([-1])).unwrap();
        assert_eq!(next, replay);
    }

    #[test]
    fn shard_rows_stream_a_written_split_and_check_ids() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<Vec<i32>> = (0..20)
            .map(|r| (0..5).map(|i| (r * 5 + i) % 50).collect())
            .collect();
        write_packed_split(dir.path(), &rows, 50, [None, None, None, None], "t").unwrap();
        let (mut src, meta) = ShardRows::open(dir.path(), 3, 0, 1).unwrap();
        assert_eq!((meta.seq_len, meta.vocab_size, src.rows()), (4, 50, 20));
        let all = src.next_rows(20).unwrap();
        let mut firsts: Vec<i64> = Vec::try_from(all.select(1, 0)).unwrap();
        firsts.sort();
        let want: Vec<i64> = rows
            .iter()
            .map(|r| r[0] as i64)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            firsts
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
            want
        );
        let bad = tempfile::tempdir().unwrap();
        write_packed_split(bad.path(), &rows, 40, [None, None, None, None], "t").unwrap();
        let (mut src, _) = ShardRows::open(bad.path(), 3, 0, 1).unwrap();
        let err = src.next_rows(20).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
    }

    /// sft rows come back right-padded to the micro-batch's longest row with mask 0 on the
    /// padding, a saved cursor replays them, and each kind of split refuses the other.
    #[test]
    fn sft_rows_pad_per_batch_resume_and_refuse_packed_splits() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<(Vec<i32>, Vec<i8>)> = (0..9)
            .map(|r| {
                let n = 2 + r % 4;
                let ids = (0..n).map(|i| (r * 7 + i) % 40).collect();
                let mask = (0..n).map(|i| i8::from(i >= n / 2)).collect();
                (ids, mask)
            })
            .collect();
        write_sft_split(dir.path(), &rows, 6, 40, [Some(39), None, None, None], "t").unwrap();
        let (mut src, meta) = SftRows::open(dir.path(), 5, 0, 1).unwrap();
        assert_eq!(
            (meta.objective.as_str(), src.row_width(), src.rows()),
            ("sft", 6, 9)
        );
        assert!(!src.fixed_width());
        let b = src.next_batch(4).unwrap();
        let (n, w) = b.ids.size2().unwrap();
        assert_eq!((n, w as usize), (4, *b.lengths.iter().max().unwrap()));
        let ids: Vec<i64> = Vec::try_from(b.ids.reshape([-1])).unwrap();
        let mask: Vec<i64> = Vec::try_from(b.loss_mask.as_ref().unwrap().reshape([-1])).unwrap();
        for (r, &len) in b.lengths.iter().enumerate() {
            let row = &ids[r * w as usize..(r + 1) * w as usize];
            let m = &mask[r * w as usize..(r + 1) * w as usize];
            let src_row = rows.iter().find(|x| {
                x.0.len() == len && x.0.iter().zip(row).all(|(a, &b)| i64::from(*a) == b)
            });
            let (_, want_mask) = src_row.expect("a written row");
            assert!(m[..len]
                .iter()
                .zip(want_mask)
                .all(|(&a, &b)| a == i64::from(b)));
            assert!(row[len..].iter().all(|&p| p == 39), "padding is pad_id");
            assert!(m[len..].iter().all(|&p| p == 0), "padding never counts");
        }
        assert_eq!(
            b.input_tokens(6),
            b.lengths.iter().map(|&l| l as u64 - 1).sum::<u64>()
        );
        let at = src.cursor();
        let next: Vec<i64> = Vec::try_from(src.next_batch(7).unwrap().ids.reshape([-1])).unwrap();
        let (mut again, _) = SftRows::open(dir.path(), 5, 0, 1).unwrap();
        again.seek(at).unwrap();
        let replay: Vec<i64> =
            Vec::try_from(again.next_batch(7).unwrap().ids.reshape([-1])).unwrap();
        assert_eq!(next, replay);

        let e = ShardRows::open(dir.path(), 0, 0, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("meta.json") && e.contains("train.objective = \"sft\""),
            "{e}"
        );
        let packed = tempfile::tempdir().unwrap();
        write_packed_split(packed.path(), &[vec![1, 2, 3]], 40, [None; 4], "t").unwrap();
        let e = SftRows::open(packed.path(), 0, 0, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("meta.json") && e.contains("`objective` is `clm`"),
            "{e}"
        );
    }

    /// Rows of a packed split come with the conversation of every id (the padding a
    /// segment of its own); an unpacked split's rows have none.
    #[test]
    fn packed_sft_rows_carry_their_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let conv = |n: usize, first: i32| -> (Vec<i32>, Vec<i8>) {
            (
                (first..first + n as i32).collect(),
                (0..n).map(|i| i8::from(i > 0)).collect(),
            )
        };
        let rows = vec![
            vec![conv(3, 1), conv(2, 10), conv(2, 20)],
            vec![conv(5, 30)],
        ];
        write_packed_sft_split(dir.path(), &rows, 8, 40, [Some(0), None, None, None], "t").unwrap();
        let meta = TokenMeta::load(dir.path()).unwrap();
        assert!(meta.packed);
        assert_eq!((meta.rows, meta.documents, meta.tokens), (2, 4, 12));
        let (mut src, m) = SftRows::open(dir.path(), 1, 0, 1).unwrap();
        assert!(m.packed);
        let b = src.next_batch(2).unwrap();
        let seg: Vec<i64> = Vec::try_from(b.segments.as_ref().unwrap().reshape([-1])).unwrap();
        let ids: Vec<i64> = Vec::try_from(b.ids.reshape([-1])).unwrap();
        let want = |first: i64| -> Vec<i64> {
            if first == 1 {
                vec![0, 0, 0, 1, 1, 2, 2]
            } else {
                vec![0, 0, 0, 0, 0, 1, 1]
            }
        };
        for r in 0..2 {
            assert_eq!(seg[r * 7..(r + 1) * 7], want(ids[r * 7])[..], "row {r}");
        }
        let plain = tempfile::tempdir().unwrap();
        write_sft_split(plain.path(), &[conv(3, 1)], 8, 40, [None; 4], "t").unwrap();
        let (mut src, m) = SftRows::open(plain.path(), 1, 0, 1).unwrap();
        assert!(!m.packed && src.next_batch(1).unwrap().segments.is_none());
    }

    #[test]
    fn bad_widths_are_refused() {
        assert!(TokenRows::from_ids(vec![1, 2, 3], 2, false, 0).is_err());
        assert!(TokenRows::from_ids(vec![], 2, false, 0).is_err());
    }
}
