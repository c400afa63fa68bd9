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
//! - Threads: the documents of each epoch are shuffled (seeded) and cut into one slice per
//!   thread; threads update the shared weights without locks (Hogwild, as fastText does).
//!   Shared weights are `AtomicU32` bit patterns read and written with relaxed ordering,
//!   which on x86 and ARM is an ordinary load and store: lock-free races exactly as in
//!   fastText, without undefined behaviour. With `threads = 1` the weights are plain `f32`
//!   vectors (the compiler vectorises the row loops) and training is deterministic: the
//!   same data, options and seed give a byte-identical model file (the model header keeps
//!   no wall-clock timings for that reason; see `job.rs`).
//! - Why several threads are not deterministic: Hogwild's speed comes from threads reading
//!   and writing the shared rows without any ordering, so which update a thread sees
//!   depends on scheduling. A deterministic parallel scheme (per-shard weight deltas merged
//!   in a fixed order) is a different optimiser with its own accuracy and speed, which the
//!   side-by-side benchmark would have to measure again; until then `threads = 1` is the
//!   deterministic mode and is what tests and reproducible builds use.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

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
    /// Worker threads; 0 = all cores. 1 makes training deterministic (byte-identical
    /// models); more threads race by design (Hogwild). Default 0.
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

#[inline]
fn ld(a: &AtomicU32) -> f32 {
    f32::from_bits(a.load(Relaxed))
}

#[inline]
fn add(a: &AtomicU32, v: f32) {
    a.store((ld(a) + v).to_bits(), Relaxed);
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
    let input: Vec<AtomicU32> = (0..rows * dim)
        .into_par_iter()
        .map(|i| {
            AtomicU32::new(
                ((unit(opts.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) * 2.0 - 1.0)
                    * bound)
                    .to_bits(),
            )
        })
        .collect();
    let nl = label_names.len();
    let featurize_seconds = t0.elapsed().as_secs_f64();

    // 4. SGD: plain vectors (which the compiler vectorises) on one thread, atomics shared
    //    Hogwild-style on several.
    let t1 = Instant::now();
    let total = (tokens * opts.epochs as u64).max(1);
    let done = AtomicU64::new(0);
    let mut last_loss = 0.0;
    let mut order: Vec<u32> = (0..docs.len() as u32).collect();
    let sgd = Sgd {
        docs: &docs,
        labels,
        dim,
        nl,
        lr0: opts.lr,
        total,
        done: &done,
    };
    let (input, output) = if threads == 1 {
        let mut input: Vec<f32> = input
            .into_iter()
            .map(|a| f32::from_bits(a.into_inner()))
            .collect();
        let mut output = vec![0f32; nl * dim];
        for epoch in 0..opts.epochs {
            shuffle(&mut order, mix64(opts.seed.wrapping_add(epoch as u64 + 1)));
            let (l, n) = sgd.run(&order, &mut Plain(&mut input), &mut Plain(&mut output));
            last_loss = if n > 0 { l / n as f64 } else { 0.0 };
        }
        (input, output)
    } else {
        let output: Vec<AtomicU32> = (0..nl * dim)
            .map(|_| AtomicU32::new(0f32.to_bits()))
            .collect();
        for epoch in 0..opts.epochs {
            shuffle(&mut order, mix64(opts.seed.wrapping_add(epoch as u64 + 1)));
            let chunk = order.len().div_ceil(threads).max(1);
            let losses: Vec<(f64, u64)> = order
                .par_chunks(chunk)
                .map(|slice| sgd.run(slice, &mut Shared(&input), &mut Shared(&output)))
                .collect();
            let (l, n) = losses
                .iter()
                .fold((0.0, 0u64), |a, b| (a.0 + b.0, a.1 + b.1));
            last_loss = if n > 0 { l / n as f64 } else { 0.0 };
        }
        let f = |v: Vec<AtomicU32>| {
            v.into_iter()
                .map(|a| f32::from_bits(a.into_inner()))
                .collect::<Vec<f32>>()
        };
        (f(input), f(output))
    };
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

/// Row access to a weight matrix, so one SGD step serves plain and shared weights.
trait Weights {
    /// `into += W[row]`
    fn add_row_to(&mut self, row: usize, into: &mut [f32]);
    /// `W[row] · v`
    fn dot_row(&mut self, row: usize, v: &[f32]) -> f32;
    /// `grad += alpha · W[row]`, then `W[row] += alpha · v`
    fn grad_and_update(&mut self, row: usize, alpha: f32, v: &[f32], grad: &mut [f32]);
    /// `W[row] += v`
    fn add_to_row(&mut self, row: usize, v: &[f32]);
}

/// Weights owned by one thread.
struct Plain<'a>(&'a mut [f32]);

impl Weights for Plain<'_> {
    #[inline]
    fn add_row_to(&mut self, row: usize, into: &mut [f32]) {
        let d = into.len();
        for (h, w) in into.iter_mut().zip(&self.0[row * d..(row + 1) * d]) {
            *h += w;
        }
    }
    #[inline]
    fn dot_row(&mut self, row: usize, v: &[f32]) -> f32 {
        let d = v.len();
        super::model::dot(&self.0[row * d..(row + 1) * d], v)
    }
    #[inline]
    fn grad_and_update(&mut self, row: usize, alpha: f32, v: &[f32], grad: &mut [f32]) {
        let d = v.len();
        for ((g, w), h) in grad
            .iter_mut()
            .zip(&mut self.0[row * d..(row + 1) * d])
            .zip(v)
        {
            *g += alpha * *w;
            *w += alpha * h;
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

/// Weights shared by the Hogwild threads.
struct Shared<'a>(&'a [AtomicU32]);

impl Weights for Shared<'_> {
    #[inline]
    fn add_row_to(&mut self, row: usize, into: &mut [f32]) {
        let d = into.len();
        for (h, w) in into.iter_mut().zip(&self.0[row * d..(row + 1) * d]) {
            *h += ld(w);
        }
    }
    #[inline]
    fn dot_row(&mut self, row: usize, v: &[f32]) -> f32 {
        let d = v.len();
        self.0[row * d..(row + 1) * d]
            .iter()
            .zip(v)
            .map(|(w, x)| ld(w) * x)
            .sum()
    }
    #[inline]
    fn grad_and_update(&mut self, row: usize, alpha: f32, v: &[f32], grad: &mut [f32]) {
        let d = v.len();
        for ((g, w), h) in grad.iter_mut().zip(&self.0[row * d..(row + 1) * d]).zip(v) {
            let x = ld(w);
            *g += alpha * x;
            w.store((x + alpha * h).to_bits(), Relaxed);
        }
    }
    #[inline]
    fn add_to_row(&mut self, row: usize, v: &[f32]) {
        let d = v.len();
        for (w, x) in self.0[row * d..(row + 1) * d].iter().zip(v) {
            add(w, *x);
        }
    }
}

/// One SGD pass over some documents (see the module docs).
struct Sgd<'a> {
    docs: &'a [Vec<u32>],
    labels: &'a [u32],
    dim: usize,
    nl: usize,
    lr0: f32,
    total: u64,
    done: &'a AtomicU64,
}

impl Sgd<'_> {
    /// Trains on `order`'s documents; returns (summed loss, examples).
    fn run<I: Weights, O: Weights>(
        &self,
        order: &[u32],
        input: &mut I,
        output: &mut O,
    ) -> (f64, u64) {
        let dim = self.dim;
        let mut hidden = vec![0f32; dim];
        let mut grad = vec![0f32; dim];
        let mut probs = vec![0f32; self.nl];
        let (mut loss, mut n) = (0f64, 0u64);
        for &d in order {
            let ids = &self.docs[d as usize];
            if ids.is_empty() {
                continue;
            }
            let progress =
                self.done.fetch_add(ids.len() as u64, Relaxed) as f32 / self.total as f32;
            let lr = self.lr0 * (1.0 - progress).max(0.0);
            hidden.iter_mut().for_each(|h| *h = 0.0);
            for &r in ids {
                input.add_row_to(r as usize, &mut hidden);
            }
            let inv = 1.0 / ids.len() as f32;
            hidden.iter_mut().for_each(|h| *h *= inv);
            for (j, p) in probs.iter_mut().enumerate() {
                *p = output.dot_row(j, &hidden);
            }
            softmax(&mut probs);
            let y = self.labels[d as usize] as usize;
            loss -= (probs[y].max(1e-12) as f64).ln();
            n += 1;
            grad.iter_mut().for_each(|g| *g = 0.0);
            for (j, &p) in probs.iter().enumerate() {
                let alpha = lr * (if j == y { 1.0 } else { 0.0 } - p);
                output.grad_and_update(j, alpha, &hidden, &mut grad);
            }
            grad.iter_mut().for_each(|g| *g *= inv);
            for &r in ids {
                input.add_to_row(r as usize, &grad);
            }
        }
        (loss, n)
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
