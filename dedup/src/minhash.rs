//! MinHash signatures and LSH banding.
//!
//! Why: comparing every pair of documents is quadratic. A MinHash signature of `num_perm`
//! 32-bit values estimates the Jaccard similarity of two shingle sets (the fraction of equal
//! positions), and cutting it into `bands` of `rows` values turns "similar" into "some band
//! is equal", which a sort (or hash table) finds in linear time. The probability that a pair
//! at Jaccard `s` shares a band is `1 - (1 - s^rows)^bands`: the S-curve.
//!
//! Hashing: each shingle's xxh3-64 hash `h` goes through `num_perm` multiply-add-shift
//! permutations `(a_i * h + b_i) >> 32` (a_i odd, all in wrapping 64-bit arithmetic), a
//! 2-universal family that costs one multiply and one add per lane. The lanes are kept as
//! structure-of-arrays (`a: [u64]`, `b: [u64]`, `sig: [u32]`) so the inner loop over lanes is
//! a straight vectorizable loop. Parameters come from splitmix64 of the seed, so a
//! signature depends only on the text and the config.
//!
//! Band keys: band `j` of a signature is hashed with xxh3-64 (seed `j`) into one `u64`; two
//! documents collide in band `j` when their keys are equal. Keys of different bands are
//! distinct by construction of the seed (a cross-band collision of 64-bit keys has
//! probability ~2^-64 per pair).

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::normalize::{normalize_into, NormalizeConfig};
use crate::shingle::{shingle_hashes, ShingleKind};
use quern_core::{Error, Result};

/// datatrove's default: 14 bands.
pub const DEFAULT_BANDS: usize = 14;
/// datatrove's default: 8 rows (hashes) per band.
pub const DEFAULT_ROWS: usize = 8;

/// splitmix64: a tiny, well-mixed generator for hash parameters.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything that decides a document's signature.
#[derive(Debug, Clone, PartialEq)]
pub struct MinHashParams {
    pub normalize: NormalizeConfig,
    pub shingle: ShingleKind,
    pub ngram: usize,
    pub num_perm: usize,
    pub bands: usize,
    pub rows: usize,
    pub seed: u64,
}

impl Default for MinHashParams {
    /// datatrove's defaults: simplify_text, 5-word shingles, 14 bands × 8 rows, seed 1.
    fn default() -> Self {
        MinHashParams {
            normalize: NormalizeConfig::default(),
            shingle: ShingleKind::Word,
            ngram: 5,
            num_perm: DEFAULT_BANDS * DEFAULT_ROWS,
            bands: DEFAULT_BANDS,
            rows: DEFAULT_ROWS,
            seed: 1,
        }
    }
}

impl MinHashParams {
    /// The Jaccard similarity at which the S-curve is steepest: `(1/bands)^(1/rows)`.
    pub fn threshold(&self) -> f64 {
        (1.0 / self.bands as f64).powf(1.0 / self.rows as f64)
    }

    /// Checks the parameters, naming the config key at `key`.
    pub fn validate(&self, key: &str) -> Result<()> {
        if self.ngram == 0 {
            return Err(Error::bad_config(
                format!("{key}.ngram"),
                "must be at least 1",
            ));
        }
        if self.bands == 0 || self.rows == 0 {
            return Err(Error::bad_config(
                format!("{key}.bands"),
                "bands and rows must be at least 1",
            ));
        }
        if self.bands * self.rows > self.num_perm {
            return Err(Error::bad_config(
                format!("{key}.num_perm"),
                format!(
                    "bands × rows = {} exceeds num_perm = {}",
                    self.bands * self.rows,
                    self.num_perm
                ),
            ));
        }
        if self.num_perm > 4096 {
            return Err(Error::bad_config(
                format!("{key}.num_perm"),
                "at most 4096 permutations",
            ));
        }
        Ok(())
    }
}

/// The probability that a pair at Jaccard `s` shares at least one band.
pub fn collision_probability(s: f64, bands: usize, rows: usize) -> f64 {
    1.0 - (1.0 - s.powi(rows as i32)).powi(bands as i32)
}

fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    // Composite Simpson's rule; the integrands are smooth polynomials in s.
    let n = 200;
    let h = (b - a) / n as f64;
    let mut s = f(a) + f(b);
    for i in 1..n {
        s += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0
}

/// Bands × rows for a Jaccard `threshold` with at most `num_perm` permutations: the pair
/// minimising the (equally weighted) areas of false positives below the threshold and false
/// negatives above it, as datasketch's `MinHashLSH` and text-dedup derive them.
pub fn optimal_bands_rows(threshold: f64, num_perm: usize) -> (usize, usize) {
    let mut best = (1, 1);
    let mut best_err = f64::INFINITY;
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let fp = integrate(|s| collision_probability(s, b, r), 0.0, threshold);
            let fneg = integrate(|s| 1.0 - collision_probability(s, b, r), threshold, 1.0);
            let err = 0.5 * fp + 0.5 * fneg;
            if err < best_err {
                best_err = err;
                best = (b, r);
            }
        }
    }
    best
}

/// Computes signatures and band keys for one parameter set. Cheap to clone and `Sync`:
/// one instance serves every thread.
#[derive(Debug, Clone)]
pub struct MinHasher {
    params: MinHashParams,
    a: Vec<u64>,
    b: Vec<u64>,
}

/// Reusable buffers for one thread, so the hot loop allocates nothing per document.
#[derive(Debug, Default)]
pub struct Scratch {
    norm: String,
    hashes: Vec<u64>,
    offsets: Vec<usize>,
    band: Vec<u8>,
}

impl MinHasher {
    pub fn new(params: MinHashParams) -> Self {
        let mut state = params.seed ^ 0x5155_4552_4E4D_4831; // "QUERNMH1"
        let a = (0..params.num_perm)
            .map(|_| splitmix64(&mut state) | 1)
            .collect();
        let b = (0..params.num_perm)
            .map(|_| splitmix64(&mut state))
            .collect();
        MinHasher { params, a, b }
    }

    pub fn params(&self) -> &MinHashParams {
        &self.params
    }

    /// The shingle hashes of `text` after normalization (with duplicates).
    pub fn shingles<'s>(&self, text: &str, scratch: &'s mut Scratch) -> &'s [u64] {
        let p = &self.params;
        normalize_into(text, &p.normalize, &mut scratch.norm);
        scratch.hashes.clear();
        shingle_hashes(
            &scratch.norm,
            p.shingle,
            p.ngram,
            p.seed,
            p.normalize.norm_whitespace,
            &mut scratch.hashes,
            &mut scratch.offsets,
        );
        &scratch.hashes
    }

    /// Writes the signature of a set of shingle hashes into `sig` (`num_perm` long).
    /// Returns false (and leaves `sig` all `u32::MAX`) when there are no shingles.
    pub fn signature_of_hashes(&self, hashes: &[u64], sig: &mut [u32]) -> bool {
        let p = self.params.num_perm;
        let (a, b, sig) = (&self.a[..p], &self.b[..p], &mut sig[..p]);
        sig.fill(u32::MAX);
        for &h in hashes {
            // The lanes: one multiply-add-shift each, a branch-free min; vectorizes.
            for ((s, &ai), &bi) in sig.iter_mut().zip(a).zip(b) {
                let v = (ai.wrapping_mul(h).wrapping_add(bi) >> 32) as u32;
                *s = (*s).min(v);
            }
        }
        !hashes.is_empty()
    }

    /// The signature of `text`, or `None` when it has no shingles (too short).
    pub fn signature(&self, text: &str, scratch: &mut Scratch) -> Option<Vec<u32>> {
        let mut sig = vec![0u32; self.params.num_perm];
        self.signature_into(text, scratch, &mut sig).then_some(sig)
    }

    /// Like [`signature`](Self::signature), into a caller's buffer; false when no shingles.
    pub fn signature_into(&self, text: &str, scratch: &mut Scratch, sig: &mut [u32]) -> bool {
        self.shingles(text, scratch);
        let hashes = std::mem::take(&mut scratch.hashes);
        let ok = self.signature_of_hashes(&hashes, sig);
        scratch.hashes = hashes;
        ok
    }

    /// Appends the `bands` band keys of `sig` to `out`.
    pub fn band_keys(&self, sig: &[u32], scratch: &mut Scratch, out: &mut Vec<u64>) {
        let r = self.params.rows;
        for j in 0..self.params.bands {
            scratch.band.clear();
            for v in &sig[j * r..(j + 1) * r] {
                scratch.band.extend_from_slice(&v.to_le_bytes());
            }
            out.push(xxh3_64_with_seed(&scratch.band, j as u64));
        }
    }
}

/// Estimated Jaccard similarity: the fraction of equal signature positions.
pub fn estimated_jaccard(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() || a.len() != b.len() {
        return 0.0;
    }
    let eq = a.iter().zip(b).filter(|(x, y)| x == y).count();
    eq as f64 / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shingle::{jaccard_sorted, shingle_set};

    #[test]
    fn datatrove_defaults() {
        let p = MinHashParams::default();
        assert_eq!((p.ngram, p.bands, p.rows, p.num_perm), (5, 14, 8, 112));
        // datatrove's docstring: threshold (1/14)^(1/8) ≈ 0.72, P(0.8) ≈ 0.924.
        assert!((p.threshold() - 0.719).abs() < 1e-3);
        assert!((collision_probability(0.8, 14, 8) - 0.924).abs() < 1e-3);
    }

    #[test]
    fn optimal_params_move_with_the_threshold() {
        let (b_lo, r_lo) = optimal_bands_rows(0.5, 128);
        let (b_hi, r_hi) = optimal_bands_rows(0.9, 128);
        assert!(b_lo * r_lo <= 128 && b_hi * r_hi <= 128);
        // A higher threshold needs more rows per band (a steeper, later S-curve).
        assert!(r_hi > r_lo, "{r_lo} {r_hi}");
        let t_hi = (1.0 / b_hi as f64).powf(1.0 / r_hi as f64);
        assert!((t_hi - 0.9).abs() < 0.08, "{b_hi}x{r_hi} -> {t_hi}");
    }

    #[test]
    fn estimate_tracks_exact_jaccard() {
        // Letters only: normalization folds digits.
        let words: Vec<String> = (0..400u32)
            .map(|i| {
                (0..4)
                    .map(|k| (b'a' + ((i * 7919) >> ((3 * k) % 26)) as u8 % 26) as char)
                    .collect()
            })
            .collect();
        let a = words.join(" ");
        let mut bw = words.clone();
        for w in bw.iter_mut().skip(300) {
            w.push('x');
        }
        let b = bw.join(" ");
        let p = MinHashParams {
            num_perm: 512,
            ..MinHashParams::default()
        };
        let mh = MinHasher::new(p.clone());
        let mut s = Scratch::default();
        let sa = mh.signature(&a, &mut s).unwrap();
        let sb = mh.signature(&b, &mut s).unwrap();
        let set = |t: &str| {
            shingle_set(
                &crate::normalize::normalize(t, &p.normalize),
                ShingleKind::Word,
                5,
                p.seed,
                true,
            )
        };
        let exact = jaccard_sorted(&set(&a), &set(&b));
        let est = estimated_jaccard(&sa, &sb);
        // 512 lanes: standard error sqrt(J(1-J)/512) < 0.023; 4 sigma.
        assert!((est - exact).abs() < 0.09, "exact {exact} est {est}");
        assert!(mh.signature("too short", &mut s).is_none());
    }

    #[test]
    fn band_keys_are_deterministic_and_band_specific() {
        let mh = MinHasher::new(MinHashParams::default());
        let mut s = Scratch::default();
        let sig = vec![7u32; 112];
        let (mut k1, mut k2) = (Vec::new(), Vec::new());
        mh.band_keys(&sig, &mut s, &mut k1);
        mh.band_keys(&sig, &mut s, &mut k2);
        assert_eq!(k1, k2);
        assert_eq!(k1.len(), 14);
        // Equal band contents in different bands give different keys.
        assert_ne!(k1[0], k1[1]);
    }
}
