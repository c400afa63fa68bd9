//! Shingles: the set of hashed n-grams a document is compared by.
//!
//! Why a module: MinHash estimates the Jaccard similarity of two shingle sets, so what a
//! shingle is decides what "near duplicate" means. The default follows datatrove: 5-grams of
//! words of the normalized text (words are what `str::split_whitespace` yields after
//! normalization has removed punctuation, which is what nltk's `word_tokenize` yields on
//! datatrove's simplified text). Character n-grams serve short texts and languages without
//! spaces.
//!
//! A shingle's hash is xxh3-64 (seeded) of its bytes: for word n-grams the words joined by
//! one space, hashed straight from the normalized text's buffer when whitespace was
//! normalized (no copy). A document with fewer than `n` words (or chars) has no shingles,
//! as in datatrove: it is never a near duplicate (exact dedup still catches copies).

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// What a shingle is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShingleKind {
    /// n consecutive words (whitespace-separated tokens of the normalized text).
    Word,
    /// n consecutive Unicode scalar values of the normalized text.
    Char,
}

/// Appends the hashes of `text`'s n-grams to `out` (duplicates included: MinHash takes a
/// minimum, so a repeated shingle changes nothing). `scratch` is reused between calls.
/// `single_spaced` promises that words are separated by exactly one space (true after
/// whitespace normalization), which lets word n-grams be hashed in place.
pub fn shingle_hashes(
    text: &str,
    kind: ShingleKind,
    n: usize,
    seed: u64,
    single_spaced: bool,
    out: &mut Vec<u64>,
    scratch: &mut Vec<usize>,
) {
    let n = n.max(1);
    match kind {
        ShingleKind::Word => {
            // scratch holds (start, end) byte offsets of the words, flattened.
            scratch.clear();
            let base = text.as_ptr() as usize;
            for w in text.split_whitespace() {
                let s = w.as_ptr() as usize - base;
                scratch.push(s);
                scratch.push(s + w.len());
            }
            let words = scratch.len() / 2;
            if words < n {
                return;
            }
            out.reserve(words + 1 - n);
            if single_spaced {
                for i in 0..=words - n {
                    let s = scratch[2 * i];
                    let e = scratch[2 * (i + n - 1) + 1];
                    out.push(xxh3_64_with_seed(&text.as_bytes()[s..e], seed));
                }
            } else {
                let mut buf = Vec::new();
                for i in 0..=words - n {
                    buf.clear();
                    for k in 0..n {
                        if k > 0 {
                            buf.push(b' ');
                        }
                        buf.extend_from_slice(
                            &text.as_bytes()[scratch[2 * (i + k)]..scratch[2 * (i + k) + 1]],
                        );
                    }
                    out.push(xxh3_64_with_seed(&buf, seed));
                }
            }
        }
        ShingleKind::Char => {
            scratch.clear();
            scratch.extend(text.char_indices().map(|(i, _)| i));
            scratch.push(text.len());
            let chars = scratch.len() - 1;
            if chars < n {
                return;
            }
            out.reserve(chars + 1 - n);
            for i in 0..=chars - n {
                out.push(xxh3_64_with_seed(
                    &text.as_bytes()[scratch[i]..scratch[i + n]],
                    seed,
                ));
            }
        }
    }
}

/// The sorted, deduplicated shingle set of `text` (for exact Jaccard and SQL).
pub fn shingle_set(
    text: &str,
    kind: ShingleKind,
    n: usize,
    seed: u64,
    single_spaced: bool,
) -> Vec<u64> {
    let mut out = Vec::new();
    shingle_hashes(
        text,
        kind,
        n,
        seed,
        single_spaced,
        &mut out,
        &mut Vec::new(),
    );
    out.sort_unstable();
    out.dedup();
    out
}

/// Exact Jaccard similarity of two sorted, deduplicated sets. Two empty sets give 0 (no
/// evidence of similarity, matching how empty documents are never near duplicates).
pub fn jaccard_sorted(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_ngrams_in_place_equal_joined() {
        let t = "a bb ccc dddd e";
        let mut inplace = Vec::new();
        shingle_hashes(
            t,
            ShingleKind::Word,
            2,
            7,
            true,
            &mut inplace,
            &mut Vec::new(),
        );
        let mut joined = Vec::new();
        shingle_hashes(
            "a  bb\tccc\ndddd e",
            ShingleKind::Word,
            2,
            7,
            false,
            &mut joined,
            &mut Vec::new(),
        );
        assert_eq!(inplace.len(), 4);
        assert_eq!(inplace, joined);
        assert_eq!(inplace[0], xxh3_64_with_seed(b"a bb", 7));
    }

    #[test]
    fn short_documents_have_no_shingles() {
        assert!(shingle_set("one two three", ShingleKind::Word, 5, 0, true).is_empty());
        assert_eq!(shingle_set("héllo", ShingleKind::Char, 3, 0, true).len(), 3);
        assert!(shingle_set("hé", ShingleKind::Char, 3, 0, true).is_empty());
    }

    #[test]
    fn jaccard_table() {
        let cases: Vec<(Vec<u64>, Vec<u64>, f64)> = vec![
            (vec![1, 2, 3], vec![1, 2, 3], 1.0),
            (vec![1, 2], vec![3, 4], 0.0),
            (vec![1, 2, 3], vec![2, 3, 4], 0.5),
            (vec![], vec![], 0.0),
        ];
        for (a, b, want) in cases {
            assert!((jaccard_sorted(&a, &b) - want).abs() < 1e-12, "{a:?} {b:?}");
        }
    }
}
