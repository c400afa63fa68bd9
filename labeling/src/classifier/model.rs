//! The classifier's model: hashed features, the two weight matrices, prediction, and the
//! `.qcls` file format.
//!
//! # Features
//!
//! As in fastText, a document is the bag of its word features: every token (see
//! [`crate::text::for_each_token`]), every word n-gram up to `word_ngrams`, and, when
//! `char_ngrams = [min, max]` is set, every character n-gram of `<word>`. Each feature is a
//! 64-bit hash. Unlike fastText there is no fixed-size bucket table: training keeps one row
//! per distinct feature seen (at least `min_count` times), so there are no bucket
//! collisions and the matrix is as large as the data needs, never 2M × dim up front. A
//! feature never seen in training is skipped at prediction, as fastText skips words that
//! are not in its dictionary.
//!
//! # Model
//!
//! `hidden = mean(input[f] for f in features)`, `p = softmax(output · hidden)`.
//!
//! # File format (`.qcls`, version 1), all integers little-endian
//!
//! | bytes | what |
//! |---|---|
//! | 4 | magic `QCLS` |
//! | 4 | format version (u32, 1) |
//! | 8 | header length H (u64) |
//! | H | header: UTF-8 JSON ([`Header`]: labels, dim, feature config, rows, training info) |
//! | 8 × rows | feature hashes (u64), ascending; row i of the input matrix belongs to hash i |
//! | 4 × rows × dim | input matrix (f32, row-major) |
//! | 4 × labels × dim | output matrix (f32, row-major) |
//! | 8 | xxh3-64 of every byte before it |
//!
//! Like safetensors: a JSON header anyone can read with `head -c`, then raw tensors.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use quern_core::error::IoContext;
use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::text::{for_each_token, hash_str, mix64};

/// How a document becomes features. Stored in the model so prediction featurises exactly as
/// training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Longest word n-gram (1 = words only; fastText's `-wordNgrams`). Default 2.
    #[serde(default = "default_word_ngrams")]
    pub word_ngrams: u32,
    /// Character n-gram lengths `[min, max]` of `<word>`; `[0, 0]` = none (fastText's
    /// `-minn -maxn`, off by default for classification). Default `[0, 0]`.
    #[serde(default)]
    pub char_ngrams: [u32; 2],
    /// Lowercase tokens first. Default true.
    #[serde(default = "default_true")]
    pub lowercase: bool,
}

fn default_word_ngrams() -> u32 {
    2
}
fn default_true() -> bool {
    true
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            word_ngrams: 2,
            char_ngrams: [0, 0],
            lowercase: true,
        }
    }
}

const SEED_WORD: u64 = 0x51_7c_c1_b7_27_22_0a_95;
const SEED_CHAR: u64 = 0x2545_f491_4f6c_dd1d;

impl FeatureConfig {
    /// Checks the values, naming the key (`prefix.word_ngrams`, ...).
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if self.word_ngrams == 0 || self.word_ngrams > 8 {
            return Err(Error::bad_config(
                format!("{prefix}word_ngrams"),
                "must be between 1 and 8",
            ));
        }
        let [lo, hi] = self.char_ngrams;
        if (lo == 0) != (hi == 0) || lo > hi || hi > 12 {
            return Err(Error::bad_config(
                format!("{prefix}char_ngrams"),
                "must be [0, 0] (off) or [min, max] with 1 <= min <= max <= 12",
            ));
        }
        Ok(())
    }

    /// Appends the feature hashes of `text` to `out`. `buf` is scratch space.
    pub fn features(&self, text: &str, buf: &mut String, words: &mut Vec<u64>, out: &mut Vec<u64>) {
        words.clear();
        let [lo, hi] = self.char_ngrams;
        for_each_token(text, self.lowercase, buf, |tok| {
            let h = hash_str(tok, SEED_WORD);
            words.push(h);
            out.push(h);
            if lo > 0 {
                char_ngrams(tok, lo as usize, hi as usize, out);
            }
        });
        for n in 2..=self.word_ngrams as usize {
            if words.len() < n {
                break;
            }
            for w in words.windows(n) {
                let mut h = n as u64;
                for &x in w {
                    h = mix64(h.rotate_left(17) ^ x);
                }
                out.push(h);
            }
        }
    }
}

fn char_ngrams(word: &str, lo: usize, hi: usize, out: &mut Vec<u64>) {
    // `<word>` as chars; n-grams by char, hashed as the UTF-8 of the slice.
    let mut padded = String::with_capacity(word.len() + 2);
    padded.push('<');
    padded.push_str(word);
    padded.push('>');
    let bounds: Vec<usize> = padded
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(padded.len()))
        .collect();
    let nchars = bounds.len() - 1;
    for n in lo..=hi {
        if n > nchars {
            break;
        }
        for s in 0..=(nchars - n) {
            // The whole `<word>` is the word feature already.
            if n == nchars {
                continue;
            }
            out.push(hash_str(
                &padded[bounds[s]..bounds[s + n]],
                SEED_CHAR ^ n as u64,
            ));
        }
    }
}

/// A hasher for keys that are hashes already.
#[derive(Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

/// A `HashMap` keyed by 64-bit hashes.
pub type HashIndex<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// The JSON header of a `.qcls` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub labels: Vec<String>,
    pub dim: usize,
    pub features: FeatureConfig,
    pub rows: usize,
    /// How the model was trained and how it scored on its held-out split (free-form).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// A trained classifier.
#[derive(Debug, Clone)]
pub struct Model {
    pub header: Header,
    keys: Vec<u64>,
    index: HashIndex<u32>,
    input: Vec<f32>,
    output: Vec<f32>,
}

const MAGIC: &[u8; 4] = b"QCLS";
const VERSION: u32 = 1;

/// Scratch space for prediction, reused across documents of one thread.
#[derive(Default)]
pub struct Scratch {
    buf: String,
    words: Vec<u64>,
    feats: Vec<u64>,
    hidden: Vec<f32>,
}

impl Model {
    /// Assembles a model from its parts (training does this). `keys` ascending, one per row.
    pub fn from_parts(
        header: Header,
        keys: Vec<u64>,
        input: Vec<f32>,
        output: Vec<f32>,
    ) -> Result<Model> {
        let (rows, dim, nl) = (keys.len(), header.dim, header.labels.len());
        if header.rows != rows || input.len() != rows * dim || output.len() != nl * dim || nl == 0 {
            return Err(Error::bug(format!(
                "classifier parts do not fit: rows {rows} (header {}), input {}, output {}, dim {dim}, labels {nl}",
                header.rows,
                input.len(),
                output.len()
            )));
        }
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::bug(
                "classifier feature hashes are not strictly ascending",
            ));
        }
        let mut index = HashIndex::with_capacity_and_hasher(rows, Default::default());
        for (i, &k) in keys.iter().enumerate() {
            index.insert(k, i as u32);
        }
        Ok(Model {
            header,
            keys,
            index,
            input,
            output,
        })
    }

    pub fn labels(&self) -> &[String] {
        &self.header.labels
    }

    pub fn dim(&self) -> usize {
        self.header.dim
    }

    /// Number of feature rows.
    pub fn rows(&self) -> usize {
        self.keys.len()
    }

    /// Class probabilities of `text`, written to `probs` (one per label).
    pub fn predict_into(&self, text: &str, scratch: &mut Scratch, probs: &mut Vec<f32>) {
        let dim = self.header.dim;
        scratch.feats.clear();
        self.header.features.features(
            text,
            &mut scratch.buf,
            &mut scratch.words,
            &mut scratch.feats,
        );
        scratch.hidden.clear();
        scratch.hidden.resize(dim, 0.0);
        let mut n = 0usize;
        for f in &scratch.feats {
            if let Some(&row) = self.index.get(f) {
                let r = &self.input[row as usize * dim..(row as usize + 1) * dim];
                for (h, w) in scratch.hidden.iter_mut().zip(r) {
                    *h += w;
                }
                n += 1;
            }
        }
        if n > 0 {
            let inv = 1.0 / n as f32;
            scratch.hidden.iter_mut().for_each(|h| *h *= inv);
        }
        probs.clear();
        probs.extend(
            self.output
                .chunks_exact(dim)
                .map(|o| dot(o, &scratch.hidden)),
        );
        softmax(probs);
    }

    /// The most probable label's index and its probability.
    pub fn predict(&self, text: &str, scratch: &mut Scratch) -> (usize, f32) {
        let mut probs = Vec::with_capacity(self.header.labels.len());
        self.predict_into(text, scratch, &mut probs);
        argmax(&probs)
    }

    /// Writes the model atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = serde_json::to_vec(&self.header)?;
        let mut bytes = Vec::with_capacity(
            24 + header.len()
                + self.keys.len() * 8
                + (self.input.len() + self.output.len()) * 4
                + 8,
        );
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        for k in &self.keys {
            bytes.extend_from_slice(&k.to_le_bytes());
        }
        for x in self.input.iter().chain(&self.output) {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        quern_core::shard::write_atomic(path, &bytes)
    }

    /// Reads a `.qcls` file; every way it can be wrong is an error naming the file.
    pub fn load(path: &Path) -> Result<Model> {
        let bytes = std::fs::read(path).at(path)?;
        let bad = |msg: String| Error::bad_input(quern_core::error::Place::file(path), msg);
        if bytes.len() < 24 + 8 || &bytes[..4] != MAGIC {
            return Err(bad(
                "not a quern classifier (.qcls) file: wrong magic bytes or too short".into(),
            ));
        }
        let version = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        if version != VERSION {
            return Err(bad(format!(
                "classifier format version {version}; this quern reads version {VERSION}"
            )));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 8);
        let want = u64::from_le_bytes(tail.try_into().unwrap());
        if xxhash_rust::xxh3::xxh3_64(body) != want {
            return Err(bad(
                "checksum mismatch: the file is truncated or corrupted; train it again".into(),
            ));
        }
        let hlen = u64::from_le_bytes(body[8..16].try_into().unwrap()) as usize;
        let hend = 16usize
            .checked_add(hlen)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("header length past the end of the file".into()))?;
        let header: Header = serde_json::from_slice(&body[16..hend])
            .map_err(|e| bad(format!("bad JSON header: {e}")))?;
        header.features.validate("header.features.")?;
        let (rows, dim, nl) = (header.rows, header.dim, header.labels.len());
        let need = rows * 8 + (rows * dim + nl * dim) * 4;
        let data = &body[hend..];
        if data.len() != need {
            return Err(bad(format!(
                "{} bytes of weights, the header's shape needs {need}",
                data.len()
            )));
        }
        let (kb, wb) = data.split_at(rows * 8);
        let keys: Vec<u64> = kb
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let floats: Vec<f32> = wb
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (input, output) = floats.split_at(rows * dim);
        Model::from_parts(header, keys, input.to_vec(), output.to_vec())
            .map_err(|e| bad(e.to_string()))
    }
}

#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// In-place softmax, stable for large logits.
pub(crate) fn softmax(x: &mut [f32]) {
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Index and value of the largest element (the first on ties).
pub(crate) fn argmax(x: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in x.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(cfg: &FeatureConfig, text: &str) -> Vec<u64> {
        let (mut b, mut w, mut o) = (String::new(), Vec::new(), Vec::new());
        cfg.features(text, &mut b, &mut w, &mut o);
        o
    }

    #[test]
    fn feature_counts_follow_the_config() {
        let words = FeatureConfig {
            word_ngrams: 1,
            ..Default::default()
        };
        assert_eq!(feats(&words, "a b c").len(), 3);
        let bi = FeatureConfig {
            word_ngrams: 2,
            ..Default::default()
        };
        assert_eq!(feats(&bi, "a b c").len(), 5);
        // "<ab>" has char 2-grams "<a", "ab", "b>" and 3-grams "<ab", "ab>".
        let ch = FeatureConfig {
            word_ngrams: 1,
            char_ngrams: [2, 3],
            lowercase: true,
        };
        assert_eq!(feats(&ch, "ab").len(), 1 + 5);
        // Lowercasing makes case variants the same features.
        assert_eq!(feats(&bi, "Free MONEY"), feats(&bi, "free money"));
        let cased = FeatureConfig {
            lowercase: false,
            ..Default::default()
        };
        assert_ne!(feats(&cased, "Free MONEY"), feats(&cased, "free money"));
        // Order matters for bigrams, not for words.
        let (a, b) = (feats(&bi, "x y"), feats(&bi, "y x"));
        assert_eq!(
            a[..2].iter().rev().collect::<Vec<_>>(),
            b[..2].iter().collect::<Vec<_>>()
        );
        assert_ne!(a[2], b[2]);
    }

    #[test]
    fn bad_feature_configs_name_the_key() {
        let c = FeatureConfig {
            char_ngrams: [3, 0],
            ..Default::default()
        };
        assert!(c
            .validate("x.")
            .unwrap_err()
            .to_string()
            .contains("x.char_ngrams"));
        let c = FeatureConfig {
            word_ngrams: 0,
            ..Default::default()
        };
        assert!(c
            .validate("x.")
            .unwrap_err()
            .to_string()
            .contains("x.word_ngrams"));
    }

    fn tiny() -> Model {
        let header = Header {
            labels: vec!["a".into(), "b".into()],
            dim: 2,
            features: FeatureConfig {
                word_ngrams: 1,
                ..Default::default()
            },
            rows: 2,
            training: serde_json::Value::Null,
        };
        let mut keys = vec![hash_str("good", SEED_WORD), hash_str("bad", SEED_WORD)];
        let mut input = vec![1.0, 0.0, 0.0, 1.0];
        if keys[0] > keys[1] {
            keys.swap(0, 1);
            input = vec![0.0, 1.0, 1.0, 0.0];
        }
        Model::from_parts(header, keys, input, vec![4.0, 0.0, 0.0, 4.0]).unwrap()
    }

    #[test]
    fn predicts_and_round_trips_through_a_file() {
        let m = tiny();
        let mut s = Scratch::default();
        assert_eq!(m.predict("good good", &mut s).0, 0);
        assert_eq!(m.predict("bad", &mut s).0, 1);
        let (_, p) = m.predict("unknown words only", &mut s);
        assert!((p - 0.5).abs() < 1e-6, "{p}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.qcls");
        m.save(&path).unwrap();
        let back = Model::load(&path).unwrap();
        assert_eq!(back.keys, m.keys);
        assert_eq!(back.input, m.input);
        assert_eq!(back.predict("bad", &mut s), m.predict("bad", &mut s));
    }

    #[test]
    fn corrupt_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.qcls");
        tiny().save(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 12] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = Model::load(&path).unwrap_err().to_string();
        assert!(e.contains("m.qcls") && e.contains("checksum"), "{e}");
        std::fs::write(&path, b"PK\x03\x04 not a model at all, no no").unwrap();
        assert!(Model::load(&path)
            .unwrap_err()
            .to_string()
            .contains("magic"));
    }
}
