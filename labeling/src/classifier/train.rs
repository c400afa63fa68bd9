//! Training the classifier: fastText's supervised recipe in Rust.
//!
//! - Every document is featurised once, in parallel ([`FeatureConfig::features`]), and the
//!   distinct features (seen at least `min_count` times) become the rows of the input
//!   matrix; fastText instead re-reads and re-tokenises its input file on every epoch.
//! - Input rows start uniform in `[-1/dim, 1/dim]`, the output matrix at zero (as fastText).
//! - Plain SGD on the softmax cross-entropy, one document at a time: the hidden vector is
//!   the mean of the document's rows; the output rows move by `lr · (1[y] − p) · hidden`;
//!   the document's input rows move by the hidden gradient divided by the number of
//!   features (fastText's normalisation for supervised models).
//! - The learning rate decays linearly from `lr` to zero over `epochs × tokens`.
//! - The rows are scattered over a matrix far larger than the caches, so SGD mostly waits
//!   on memory: the forward pass prefetches the rows 8 features ahead.
//! - One thread (`threads = 1`) updates the weights in place, example after example.
//! - Several threads work in rounds, deterministically. The documents of each epoch are
//!   shuffled (seeded) and dealt out in order: in a round, each thread takes the next
//!   documents, about 1,024 tokens' worth (see `share_tokens`), and trains on them with the
//!   same step as one thread, against the input matrix as the round found it (shared,
//!   read-only) plus its own updates of the round (sparse delta rows), and its own copy of
//!   the output matrix. At the end of the round every thread's changes are added to both
//!   matrices in thread order (the input rows in parallel, in 64 disjoint ranges of rows),
//!   and the next round starts from the result. So a thread sees the others' updates at
//!   most one round late, where fastText's Hogwild threads see them at once or never, in
//!   an order set by the scheduler. The learning rate of a thread's example is that of the
//!   run's progress as if every thread went at its pace.
//! - Determinism: the same data, options, seed and thread count give a byte-identical
//!   model file (the model header keeps no wall-clock timings for that reason; see
//!   `job.rs`). Different thread counts give different models (as accurate on the bench
//!   and the tests), as the documents of a round are split differently; `threads = 0`
//!   means all cores, so it depends on the machine. The rounds are checked against a naive
//!   definition (every thread on full copies of the matrices) in the tests.
//! - No shared writes: during a round the shared matrix is only read; the merge writes
//!   disjoint row ranges from separate threads (no `unsafe` here; prefetch hints come from
//!   `quern_core::hint`), and the only lock guards a thread's own row map and is never
//!   contended. fastText's races on plain floats would be undefined behaviour in Rust; the earlier Hogwild version here
//!   used relaxed atomics instead, which the compiler does not vectorise, and both threads
//!   wrote the 2 × dim output matrix on every example, so two threads trained slower than
//!   one.

use std::sync::Mutex;
use std::time::Instant;

use quern_core::hint::{prefetch, prefetch_slice};
use quern_core::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::model::{argmax, softmax, FeatureConfig, HashIndex, Header, Model};
use crate::text::mix64;

/// Training options. Every field has a default (shown), as on `quern label train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Width of the hidden vector. Default 64.
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Passes over the training data. Default 5.
    #[serde(default = "d_epochs")]
    pub epochs: u32,
    /// Starting learning rate, decayed linearly to 0. Default 0.5.
    #[serde(default = "d_lr")]
    pub lr: f32,
    /// Features (word n-grams, character n-grams, lowercasing). Default words + bigrams.
    #[serde(default)]
    pub features: FeatureConfig,
    /// A feature needs this many occurrences in the training data to get a row. Default 1.
    #[serde(default = "d_min_count")]
    pub min_count: u32,
    /// Worker threads; 0 = all cores. Training is deterministic for a given thread count
    /// (byte-identical models); see the module docs. Default 0.
    #[serde(default)]
    pub threads: usize,
    /// Seed of the initial weights and of the shuffling. Default 0.
    #[serde(default)]
    pub seed: u64,
}

fn d_dim() -> usize {
    64
}
fn d_epochs() -> u32 {
    5
}
fn d_lr() -> f32 {
    0.5
}
fn d_min_count() -> u32 {
    1
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            dim: d_dim(),
            epochs: d_epochs(),
            lr: d_lr(),
            features: FeatureConfig::default(),
            min_count: d_min_count(),
            threads: 0,
            seed: 0,
        }
    }
}

impl TrainOptions {
    pub fn with_dim(mut self, dim: usize) -> Self {
        self.dim = dim;
        self
    }
    pub fn with_epochs(mut self, epochs: u32) -> Self {
        self.epochs = epochs;
        self
    }
    pub fn with_lr(mut self, lr: f32) -> Self {
        self.lr = lr;
        self
    }
    pub fn with_word_ngrams(mut self, n: u32) -> Self {
        self.features.word_ngrams = n;
        self
    }
    pub fn with_char_ngrams(mut self, min: u32, max: u32) -> Self {
        self.features.char_ngrams = [min, max];
        self
    }
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn with_min_count(mut self, n: u32) -> Self {
        self.min_count = n;
        self
    }

    /// Checks every value, naming the option.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.dim > 4096 {
            return Err(Error::bad_config("dim", "must be between 1 and 4096"));
        }
        if self.epochs == 0 {
            return Err(Error::bad_config("epochs", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::bad_config("lr", "must be a positive number"));
        }
        if self.min_count == 0 {
            return Err(Error::bad_config("min_count", "must be at least 1"));
        }
        self.features.validate("")
    }
}

/// What a training run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainStats {
    pub examples: usize,
    /// Examples with no feature at all (no update was made for them).
    pub empty_examples: usize,
    pub tokens: u64,
    pub rows: usize,
    pub threads: usize,
    /// Mean cross-entropy over the last epoch.
    pub last_epoch_loss: f64,
    pub featurize_seconds: f64,
    pub sgd_seconds: f64,
}

/// Uniform in [0, 1) from a 64-bit state.
#[inline]
fn unit(x: u64) -> f32 {
    (mix64(x) >> 40) as f32 / (1u64 << 24) as f32
}

/// Trains a classifier. `labels[i]` indexes `label_names` for `texts[i]`.
pub fn train(
    texts: &[&str],
    labels: &[u32],
    label_names: &[String],
    opts: &TrainOptions,
) -> Result<(Model, TrainStats)> {
    opts.validate()?;
    if texts.len() != labels.len() {
        return Err(Error::bug(format!(
            "{} texts but {} labels",
            texts.len(),
            labels.len()
        )));
    }
    if texts.is_empty() {
        return Err(Error::usage(
            "no training examples: the training data is empty",
        ));
    }
    if label_names.len() < 2 {
        return Err(Error::usage(format!(
            "a classifier needs at least two labels, the training data has {}: {:?}",
            label_names.len(),
            label_names
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= label_names.len()) {
        return Err(Error::bug(format!("label index {bad} out of range")));
    }
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::bug(format!("cannot start {threads} training threads: {e}")))?;
    pool.install(|| train_in_pool(texts, labels, label_names, opts, threads))
}

fn train_in_pool(
    texts: &[&str],
    labels: &[u32],
    label_names: &[String],
    opts: &TrainOptions,
    threads: usize,
) -> Result<(Model, TrainStats)> {
    let t0 = Instant::now();
    let dim = opts.dim;
    let fcfg = &opts.features;
    // 1. Featurise every document once.
    let feats: Vec<Vec<u64>> = texts
        .par_iter()
        .map_init(
            || (String::new(), Vec::new()),
            |(buf, words), t| {
                let mut out = Vec::new();
                fcfg.features(t, buf, words, &mut out);
                out
            },
        )
        .collect();
    // 2. The distinct features (ascending), with at least min_count occurrences.
    let mut all: Vec<u64> = feats.par_iter().flatten().copied().collect();
    all.par_sort_unstable();
    let mut keys = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j] == all[i] {
            j += 1;
        }
        if (j - i) as u32 >= opts.min_count {
            keys.push(all[i]);
        }
        i = j;
    }
    drop(all);
    let mut index = HashIndex::with_capacity_and_hasher(keys.len(), Default::default());
    for (r, &k) in keys.iter().enumerate() {
        index.insert(k, r as u32);
    }
    let docs: Vec<Vec<u32>> = feats
        .into_par_iter()
        .map(|f| f.iter().filter_map(|k| index.get(k).copied()).collect())
        .collect();
    drop(index);
    let rows = keys.len();
    let tokens: u64 = docs.iter().map(|d| d.len() as u64).sum();
    let empty_examples = docs.iter().filter(|d| d.is_empty()).count();

    // 3. Initial weights: input uniform in [-1/dim, 1/dim], seeded per row (parallel and
    //    deterministic); output zero.
    let bound = 1.0 / dim as f32;
    let input: Vec<f32> = (0..rows * dim)
        .into_par_iter()
        .map(|i| {
            (unit(opts.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) * 2.0 - 1.0) * bound
        })
        .collect();
    let nl = label_names.len();
    let featurize_seconds = t0.elapsed().as_secs_f64();

    // 4. SGD: one thread works on the weights directly; several work in rounds (see the
    //    module docs).
    let t1 = Instant::now();
    let total = (tokens * opts.epochs as u64).max(1);
    let mut input: Vec<f32> = input;
    let mut output = vec![0f32; nl * dim];
    let mut order: Vec<u32> = (0..docs.len() as u32).collect();
    let sgd = Sgd {
        docs: &docs,
        labels,
        dim,
        lr0: opts.lr,
        total,
        share_tokens: share_tokens(threads),
    };
    let mut last_loss = 0.0;
    let mut done = 0u64;
    let mut rounds = if threads > 1 {
        Some(Rounds::new(rows, nl, dim, threads, threads))
    } else {
        None
    };
    for epoch in 0..opts.epochs {
        shuffle(&mut order, mix64(opts.seed.wrapping_add(epoch as u64 + 1)));
        let (l, n) = match rounds.as_mut() {
            None => sgd.run(&order, &mut done, &mut Plain(&mut input), &mut output),
            Some(r) => sgd.run_rounds(&order, &mut done, &mut input, &mut output, r),
        };
        last_loss = if n > 0 { l / n as f64 } else { 0.0 };
    }
    drop(rounds);
    let sgd_seconds = t1.elapsed().as_secs_f64();

    let stats = TrainStats {
        examples: texts.len(),
        empty_examples,
        tokens,
        rows,
        threads,
        last_epoch_loss: last_loss,
        featurize_seconds,
        sgd_seconds,
    };
    let header = Header {
        labels: label_names.to_vec(),
        dim,
        features: opts.features.clone(),
        rows,
        training: serde_json::json!({ "options": opts }),
    };
    Ok((Model::from_parts(header, keys, input, output)?, stats))
}

/// How many features ahead the forward pass prefetches input rows. The rows are scattered
/// over a matrix far larger than the caches, so each one is a memory access; one thread's
/// training otherwise waits on them most of the time.
const PREFETCH: usize = 8;

/// Row access to the input matrix, so one SGD step serves the one-thread path (the matrix
/// itself) and the rounds of several threads (a read-only matrix plus private deltas).
trait InputRows {
    /// Starts loading what `add_row_to(row)` will read.
    fn prefetch(&self, row: usize, dim: usize);
    /// `into += W[row]`
    fn add_row_to(&self, row: usize, into: &mut [f32]);
    /// `W[row] += v`
    fn add_to_row(&mut self, row: usize, v: &[f32]);
}

/// The input matrix, owned by the one training thread.
struct Plain<'a>(&'a mut [f32]);

impl InputRows for Plain<'_> {
    #[inline]
    fn prefetch(&self, row: usize, d: usize) {
        prefetch_slice(&self.0[row * d..(row + 1) * d]);
    }
    #[inline]
    fn add_row_to(&self, row: usize, into: &mut [f32]) {
        let d = into.len();
        for (h, w) in into.iter_mut().zip(&self.0[row * d..(row + 1) * d]) {
            *h += w;
        }
    }
    #[inline]
    fn add_to_row(&mut self, row: usize, v: &[f32]) {
        let d = v.len();
        for (w, x) in self.0[row * d..(row + 1) * d].iter_mut().zip(v) {
            *w += x;
        }
    }
}

/// No delta row (in [`Overlay::slot`]).
const NO_SLOT: u32 = u32::MAX;

/// What one thread sees of the input matrix during a round: the matrix as it was when the
/// round began (shared, read-only) plus this thread's own updates of the round, kept as
/// one delta row per row it touched.
struct Overlay<'a> {
    shared: &'a [f32],
    /// Row → index of its delta row, or [`NO_SLOT`]; one entry per input row.
    slot: &'a mut [u32],
    /// (row, delta row) of every row with a delta row, in the order they were first
    /// touched, by the range of rows that merges them (`row / per`).
    touched: &'a mut [Vec<(u32, u32)>],
    /// Rows per merge range.
    per: usize,
    /// The delta rows, `dim` floats each.
    delta: &'a mut Vec<f32>,
}

impl InputRows for Overlay<'_> {
    #[inline]
    fn prefetch(&self, row: usize, d: usize) {
        prefetch_slice(&self.shared[row * d..(row + 1) * d]);
        prefetch(&self.slot[row]);
    }
    #[inline]
    fn add_row_to(&self, row: usize, into: &mut [f32]) {
        let d = into.len();
        for (h, w) in into.iter_mut().zip(&self.shared[row * d..(row + 1) * d]) {
            *h += w;
        }
        let s = self.slot[row];
        if s != NO_SLOT {
            let s = s as usize;
            for (h, x) in into.iter_mut().zip(&self.delta[s * d..(s + 1) * d]) {
                *h += x;
            }
        }
    }
    #[inline]
    fn add_to_row(&mut self, row: usize, v: &[f32]) {
        let d = v.len();
        let s = self.slot[row];
        if s == NO_SLOT {
            let s = (self.delta.len() / d) as u32;
            self.slot[row] = s;
            self.touched[row / self.per].push((row as u32, s));
            self.delta.extend_from_slice(v);
        } else {
            let s = s as usize;
            for (w, x) in self.delta[s * d..(s + 1) * d].iter_mut().zip(v) {
                *w += x;
            }
        }
    }
}

/// Scratch vectors of one SGD step.
struct Scratch {
    hidden: Vec<f32>,
    grad: Vec<f32>,
    probs: Vec<f32>,
}

impl Scratch {
    fn new(nl: usize, dim: usize) -> Self {
        Scratch {
            hidden: vec![0f32; dim],
            grad: vec![0f32; dim],
            probs: vec![0f32; nl],
        }
    }
}

/// One share of a round: the documents one thread trains on in turn, its private state.
struct Share {
    scratch: Scratch,
    /// This share's copy of the output matrix (equal to the merged one when a round begins).
    output: Vec<f32>,
    /// (row, delta row) of every input row this share updated in the round, by the merge
    /// range holding the row.
    touched: Vec<Vec<(u32, u32)>>,
    /// The delta rows, `dim` floats each.
    delta: Vec<f32>,
    /// Tokens of this round's examples.
    tokens: u64,
    /// Summed loss and examples of this epoch.
    loss: f64,
    n: u64,
}

/// The state of a multi-threaded run.
struct Rounds {
    shares: Vec<Share>,
    /// One row → delta row map per thread (all [`NO_SLOT`] between shares), so memory does
    /// not grow with the number of shares. A thread locks only its own (never contended).
    slots: Vec<Mutex<Vec<u32>>>,
    /// Input rows per merge range.
    per: usize,
}

impl Rounds {
    fn new(rows: usize, nl: usize, dim: usize, shares: usize, threads: usize) -> Self {
        let per = rows.div_ceil(MERGE_RANGES).max(1);
        let ranges = rows.div_ceil(per);
        Rounds {
            shares: (0..shares)
                .map(|_| Share {
                    scratch: Scratch::new(nl, dim),
                    output: vec![0f32; nl * dim],
                    touched: vec![Vec::new(); ranges],
                    delta: Vec::new(),
                    tokens: 0,
                    loss: 0.0,
                    n: 0,
                })
                .collect(),
            slots: (0..threads)
                .map(|_| Mutex::new(vec![NO_SLOT; rows]))
                .collect(),
            per,
        }
    }
}

/// Tokens per share of a round (whole documents, so a little more) with `threads` threads,
/// one share each: 1,024, fewer from 17 threads on so that a round stays within 16,384
/// tokens, but at least 256.
///
/// Why: each share's output-matrix change is computed from the same starting point and the
/// changes are summed, so many shares in a round overshoot. On the SpamAssassin bench
/// (10 epochs, lr 0.5) 2 × 1,024, 16 × 1,024 and 64 × 256 trained as well as one thread
/// (within 0.3 points), 16 × 4,096 lost 1.2 points and 64 × 1,024 diverged (69%). 1,024
/// rather than more keeps a round's rows in cache for the merge (2 × 1,024 was the fastest
/// of 512 to 16,384).
fn share_tokens(threads: usize) -> u64 {
    (16_384 / threads.max(1) as u64).clamp(256, 1024)
}

/// The input matrix is merged in this many ranges of rows, in parallel.
const MERGE_RANGES: usize = 64;

/// SGD over the featurised documents (see the module docs).
struct Sgd<'a> {
    docs: &'a [Vec<u32>],
    labels: &'a [u32],
    dim: usize,
    lr0: f32,
    /// Tokens of the whole run (`epochs × tokens`): the learning rate reaches 0 there.
    total: u64,
    /// [`share_tokens`], smaller in tests.
    share_tokens: u64,
}

impl Sgd<'_> {
    /// One example: forward, softmax, output and input updates. Returns its loss.
    #[inline]
    fn step<I: InputRows>(
        &self,
        ids: &[u32],
        y: usize,
        lr: f32,
        input: &mut I,
        output: &mut [f32],
        s: &mut Scratch,
    ) -> f64 {
        let dim = self.dim;
        let Scratch {
            hidden,
            grad,
            probs,
        } = s;
        hidden.iter_mut().for_each(|h| *h = 0.0);
        for &r in &ids[..ids.len().min(PREFETCH)] {
            input.prefetch(r as usize, dim);
        }
        for (i, &r) in ids.iter().enumerate() {
            if let Some(&next) = ids.get(i + PREFETCH) {
                input.prefetch(next as usize, dim);
            }
            input.add_row_to(r as usize, hidden);
        }
        let inv = 1.0 / ids.len() as f32;
        hidden.iter_mut().for_each(|h| *h *= inv);
        for (j, p) in probs.iter_mut().enumerate() {
            *p = super::model::dot(&output[j * dim..(j + 1) * dim], hidden);
        }
        softmax(probs);
        let loss = -(probs[y].max(1e-12) as f64).ln();
        grad.iter_mut().for_each(|g| *g = 0.0);
        for (j, &p) in probs.iter().enumerate() {
            let alpha = lr * (if j == y { 1.0 } else { 0.0 } - p);
            // grad += alpha · output[j], then output[j] += alpha · hidden
            for ((g, w), h) in grad
                .iter_mut()
                .zip(&mut output[j * dim..(j + 1) * dim])
                .zip(hidden.iter())
            {
                *g += alpha * *w;
                *w += alpha * h;
            }
        }
        grad.iter_mut().for_each(|g| *g *= inv);
        for &r in ids {
            input.add_to_row(r as usize, grad);
        }
        loss
    }

    /// The learning rate after `done` of the run's tokens.
    #[inline]
    fn lr(&self, done: u64) -> f32 {
        self.lr0 * (1.0 - done as f32 / self.total as f32).max(0.0)
    }

    /// One thread: trains on `order`'s documents in turn; returns (summed loss, examples).
    fn run<I: InputRows>(
        &self,
        order: &[u32],
        done: &mut u64,
        input: &mut I,
        output: &mut [f32],
    ) -> (f64, u64) {
        let nl = output.len() / self.dim;
        let mut s = Scratch::new(nl, self.dim);
        let (mut loss, mut n) = (0f64, 0u64);
        for &d in order {
            let ids = &self.docs[d as usize];
            if ids.is_empty() {
                continue;
            }
            let lr = self.lr(*done);
            *done += ids.len() as u64;
            loss += self.step(
                ids,
                self.labels[d as usize] as usize,
                lr,
                input,
                output,
                &mut s,
            );
            n += 1;
        }
        (loss, n)
    }

    /// The next round's documents for each share: the next ones in the shuffled order, up
    /// to `share_tokens` tokens each (whole documents, so a little more), or an even part
    /// of what is left of the epoch when that is less.
    fn cut(
        &self,
        order: &[u32],
        pos: &mut usize,
        remaining: &mut u64,
        shares: usize,
    ) -> Vec<std::ops::Range<usize>> {
        let target = self
            .share_tokens
            .min(remaining.div_ceil(shares as u64))
            .max(1);
        (0..shares)
            .map(|_| {
                let start = *pos;
                let mut tok = 0u64;
                while *pos < order.len() && tok < target {
                    tok += self.docs[order[*pos] as usize].len() as u64;
                    *pos += 1;
                }
                *remaining -= tok;
                start..*pos
            })
            .collect()
    }

    /// Several threads, in rounds (see the module docs): returns (summed loss, examples).
    fn run_rounds(
        &self,
        order: &[u32],
        done: &mut u64,
        input: &mut [f32],
        output: &mut [f32],
        rounds: &mut Rounds,
    ) -> (f64, u64) {
        let dim = self.dim;
        let Rounds { shares, slots, per } = rounds;
        let (per, nshares) = (*per, shares.len());
        for w in shares.iter_mut() {
            w.loss = 0.0;
            w.n = 0;
        }
        let mut remaining: u64 = order
            .iter()
            .map(|&d| self.docs[d as usize].len() as u64)
            .sum();
        let mut pos = 0;
        while pos < order.len() {
            let cuts = self.cut(order, &mut pos, &mut remaining, nshares);
            // 1. Every share is trained on against the matrix as the round found it plus its
            //    own deltas, and its own copy of the output matrix.
            let base = *done;
            let shared: &[f32] = input;
            let slots: &[Mutex<Vec<u32>>] = slots;
            shares
                .par_iter_mut()
                .zip(cuts)
                .with_max_len(1)
                .for_each(|(w, range)| {
                    let t = rayon::current_thread_index().unwrap_or(0) % slots.len();
                    let mut slot = slots[t].lock().unwrap_or_else(|e| e.into_inner());
                    self.round(w, &order[range], shared, &mut slot, per, base, nshares)
                });
            // 2. The deltas are added to the input matrix in share order, in parallel over
            //    disjoint ranges of rows.
            let shares_ro: &[Share] = shares;
            input
                .par_chunks_mut(per * dim)
                .with_max_len(1)
                .enumerate()
                .for_each(|(c, chunk)| {
                    let lo = c * per;
                    for w in shares_ro {
                        let touched = &w.touched[c];
                        for (i, &(r, s)) in touched.iter().enumerate() {
                            if let Some(&(next, _)) = touched.get(i + PREFETCH) {
                                let next = next as usize - lo;
                                prefetch_slice(&chunk[next * dim..(next + 1) * dim]);
                            }
                            let (r, s) = (r as usize - lo, s as usize);
                            let row = &mut chunk[r * dim..(r + 1) * dim];
                            for (x, d) in row.iter_mut().zip(&w.delta[s * dim..(s + 1) * dim]) {
                                *x += d;
                            }
                        }
                    }
                });
            // 3. So are the output matrices' changes; every share starts the next round
            //    from the merged one.
            for (i, o) in output.iter_mut().enumerate() {
                let before = *o;
                for w in shares.iter() {
                    *o += w.output[i] - before;
                }
            }
            for w in shares.iter_mut() {
                w.output.copy_from_slice(output);
                *done += w.tokens;
            }
        }
        shares
            .iter()
            .fold((0.0, 0), |(l, n), w| (l + w.loss, n + w.n))
    }

    /// One share of a round, on the calling thread with its row → delta row map `slot`
    /// (left all [`NO_SLOT`]). Its learning rate follows the run's progress as if every
    /// share went at its pace.
    #[allow(clippy::too_many_arguments)]
    fn round(
        &self,
        w: &mut Share,
        order: &[u32],
        shared: &[f32],
        slot: &mut [u32],
        per: usize,
        base: u64,
        nshares: usize,
    ) {
        w.touched.iter_mut().for_each(Vec::clear);
        w.delta.clear();
        w.tokens = 0;
        let mut input = Overlay {
            shared,
            slot,
            touched: &mut w.touched,
            per,
            delta: &mut w.delta,
        };
        for &d in order {
            let ids = &self.docs[d as usize];
            if ids.is_empty() {
                continue;
            }
            let lr = self.lr(base + w.tokens * nshares as u64);
            w.tokens += ids.len() as u64;
            w.loss += self.step(
                ids,
                self.labels[d as usize] as usize,
                lr,
                &mut input,
                &mut w.output,
                &mut w.scratch,
            );
            w.n += 1;
        }
        for t in &w.touched {
            for &(r, _) in t {
                slot[r as usize] = NO_SLOT;
            }
        }
    }
}

/// Seeded Fisher–Yates.
fn shuffle(v: &mut [u32], seed: u64) {
    let mut s = seed;
    for i in (1..v.len()).rev() {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let j = (mix64(s) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Predicts every text in parallel: `(label index, probability)` per text.
pub fn predict_all(model: &Model, texts: &[&str]) -> Vec<(usize, f32)> {
    texts
        .par_iter()
        .map_init(super::model::Scratch::default, |s, t| {
            let mut probs = Vec::new();
            model.predict_into(t, s, &mut probs);
            argmax(&probs)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<&'static str>, Vec<u32>, Vec<String>) {
        let pos = [
            "great fun film",
            "loved it great",
            "fun and great",
            "what a great fun ride",
        ];
        let neg = [
            "boring dull film",
            "hated it dull",
            "dull and boring",
            "what a boring slow ride",
        ];
        let mut t = Vec::new();
        let mut l = Vec::new();
        for i in 0..4 {
            t.push(pos[i]);
            l.push(0);
            t.push(neg[i]);
            l.push(1);
        }
        (t, l, vec!["pos".into(), "neg".into()])
    }

    #[test]
    fn learns_a_separable_toy_task() {
        let (t, l, names) = toy();
        let opts = TrainOptions::default()
            .with_threads(1)
            .with_epochs(50)
            .with_dim(8);
        let (m, stats) = train(&t, &l, &names, &opts).unwrap();
        assert_eq!(stats.examples, 8);
        assert!(stats.last_epoch_loss < 0.3, "{stats:?}");
        let preds = predict_all(&m, &["great fun", "dull boring"]);
        assert_eq!(preds[0].0, 0);
        assert_eq!(preds[1].0, 1);
        assert!(preds[0].1 > 0.5);
    }

    #[test]
    fn one_thread_is_deterministic() {
        let (t, l, names) = toy();
        let opts = TrainOptions::default()
            .with_threads(1)
            .with_epochs(3)
            .with_dim(4)
            .with_seed(7);
        let (a, _) = train(&t, &l, &names, &opts).unwrap();
        let (b, _) = train(&t, &l, &names, &opts).unwrap();
        let dir = tempfile::tempdir().unwrap();
        a.save(&dir.path().join("a")).unwrap();
        b.save(&dir.path().join("b")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a")).unwrap(),
            std::fs::read(dir.path().join("b")).unwrap()
        );
        let (c, _) = train(&t, &l, &names, &opts.clone().with_seed(8)).unwrap();
        c.save(&dir.path().join("c")).unwrap();
        assert_ne!(
            std::fs::read(dir.path().join("a")).unwrap(),
            std::fs::read(dir.path().join("c")).unwrap()
        );
    }

    /// The rounds of several threads, spelled out naively: every thread of a round trains
    /// (with the one-thread step) on its own full copies of both matrices as the round found
    /// them, and the round's result is the starting matrices plus every thread's change,
    /// added in thread order.
    #[allow(clippy::too_many_arguments)]
    fn naive_rounds(
        sgd: &Sgd,
        order: &[u32],
        shares: usize,
        nl: usize,
        input: &mut [f32],
        output: &mut [f32],
        done: &mut u64,
    ) -> (f64, u64) {
        let (mut loss, mut n) = (0.0, 0);
        let mut remaining: u64 = order
            .iter()
            .map(|&d| sgd.docs[d as usize].len() as u64)
            .sum();
        let mut pos = 0;
        while pos < order.len() {
            let (in0, out0) = (input.to_vec(), output.to_vec());
            let base = *done;
            for range in sgd.cut(order, &mut pos, &mut remaining, shares) {
                let (mut li, mut lo) = (in0.clone(), out0.clone());
                let (mut tok, mut s) = (0u64, Scratch::new(nl, sgd.dim));
                for &d in &order[range] {
                    let d = d as usize;
                    let ids = &sgd.docs[d];
                    if ids.is_empty() {
                        continue;
                    }
                    let lr = sgd.lr(base + tok * shares as u64);
                    tok += ids.len() as u64;
                    let y = sgd.labels[d] as usize;
                    loss += sgd.step(ids, y, lr, &mut Plain(&mut li), &mut lo, &mut s);
                    n += 1;
                }
                for ((x, l), o) in input.iter_mut().zip(&li).zip(&in0) {
                    *x += l - o;
                }
                for ((x, l), o) in output.iter_mut().zip(&lo).zip(&out0) {
                    *x += l - o;
                }
                *done += tok;
            }
        }
        (loss, n)
    }

    /// Random documents over a few rows (so threads touch the same rows often), repeated
    /// features within a document, and some empty documents.
    fn random_docs(n: usize, rows: u32, seed: u64) -> (Vec<Vec<u32>>, Vec<u32>) {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix64(s)
        };
        let mut docs = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            let len = (next() % 12) as usize;
            let y = (next() % 3) as u32;
            // Rows 0..8 lean to label y, the rest are noise.
            docs.push(
                (0..len)
                    .map(|i| {
                        if i % 2 == 0 {
                            (y * 3 + (next() % 3) as u32) % 8
                        } else {
                            (next() % rows as u64) as u32
                        }
                    })
                    .collect(),
            );
            labels.push(y);
        }
        (docs, labels)
    }

    #[test]
    fn rounds_match_the_naive_definition() {
        let (dim, nl, rows) = (8, 3, 40);
        let (docs, labels) = random_docs(300, rows, 5);
        let tokens: u64 = docs.iter().map(|d| d.len() as u64).sum();
        for (threads, shares, share_tokens) in
            [(2, 2, 1), (2, 5, 20), (3, 3, 7), (4, 9, 64), (2, 64, 3)]
        {
            let sgd = Sgd {
                docs: &docs,
                labels: &labels,
                dim,
                lr0: 0.3,
                total: tokens * 3,
                share_tokens,
            };
            let init: Vec<f32> = (0..rows as usize * dim)
                .map(|i| unit(i as u64) * 0.2 - 0.1)
                .collect();
            let (mut fi, mut fo) = (init.clone(), vec![0f32; nl * dim]);
            let (mut ni, mut no) = (init.clone(), vec![0f32; nl * dim]);
            let mut rounds = Rounds::new(rows as usize, nl, dim, shares, threads);
            let (mut fd, mut nd) = (0, 0);
            let mut order: Vec<u32> = (0..docs.len() as u32).collect();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for epoch in 0..3 {
                shuffle(&mut order, epoch);
                let f =
                    pool.install(|| sgd.run_rounds(&order, &mut fd, &mut fi, &mut fo, &mut rounds));
                let n = naive_rounds(&sgd, &order, shares, nl, &mut ni, &mut no, &mut nd);
                assert_eq!(f.1, n.1);
                assert!((f.0 - n.0).abs() < 1e-3 * n.0.abs(), "{f:?} {n:?}");
            }
            assert_eq!(fd, nd);
            assert_eq!(fd, tokens * 3);
            let close = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .all(|(x, y)| (x - y).abs() <= 1e-4 + 1e-3 * y.abs())
            };
            assert!(
                close(&fi, &ni),
                "input, {threads} threads, {shares} shares of {share_tokens}"
            );
            assert!(
                close(&fo, &no),
                "output, {threads} threads, {shares} shares of {share_tokens}"
            );
            // The check can fail: training moved the weights.
            assert!(!close(&fi, &init) && fo.iter().any(|&x| x.abs() > 0.01));
        }
    }

    #[test]
    fn several_threads_are_deterministic() {
        let (t, l, names) = toy();
        let opts = TrainOptions::default()
            .with_threads(2)
            .with_epochs(20)
            .with_dim(8);
        let bytes = |opts: &TrainOptions, name: &str| {
            let (m, _) = train(&t, &l, &names, opts).unwrap();
            let dir = tempfile::tempdir().unwrap();
            m.save(&dir.path().join(name)).unwrap();
            std::fs::read(dir.path().join(name)).unwrap()
        };
        let a = bytes(&opts, "a");
        assert_eq!(a, bytes(&opts, "b"));
        // Three threads deal the documents out differently: another model, as
        // deterministic, and still learnt.
        let c = bytes(&opts.clone().with_threads(3), "c");
        assert_ne!(a, c);
        assert_eq!(c, bytes(&opts.clone().with_threads(3), "d"));
        let (m3, s3) = train(&t, &l, &names, &opts.clone().with_threads(3)).unwrap();
        assert_eq!(s3.threads, 3);
        let p = predict_all(&m3, &["great fun", "dull boring"]);
        assert_eq!((p[0].0, p[1].0), (0, 1));
    }

    #[test]
    fn min_count_drops_rare_features() {
        let (t, l, names) = toy();
        let o1 = TrainOptions::default().with_threads(1).with_epochs(1);
        let (_, s1) = train(&t, &l, &names, &o1).unwrap();
        let (_, s2) = train(&t, &l, &names, &o1.clone().with_min_count(2)).unwrap();
        assert!(s2.rows < s1.rows, "{} vs {}", s2.rows, s1.rows);
    }

    #[test]
    fn refuses_bad_inputs() {
        let (t, l, _) = toy();
        let e = train(&t, &l, &["only".into()], &TrainOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("two labels"), "{e}");
        let e = train(
            &t,
            &l,
            &["a".into(), "b".into()],
            &TrainOptions::default().with_lr(0.0),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lr"), "{e}");
    }
}
