//! Sentence pairs for BERT's next-sentence prediction (`quern tokenize --objective nsp`).
//!
//! Each row is `[CLS] A [SEP] B [SEP]` with `token_type_ids` 0 on `[CLS]`, A and the first
//! `[SEP]`, 1 on B and the last `[SEP]`, and `next_sentence_label` 0 when B is the text that
//! follows A in its document, 1 when B is taken from another document ("random"), as BERT
//! and `transformers`' `next_sentence_label` have them. `[CLS]` is the tokenizer's
//! beginning-of-text token and `[SEP]` its end-of-text token (`[CLS]` and `[SEP]` in a BERT
//! vocabulary). Masking is not done here: the trainer masks 15% of the pair's ids (never
//! `[CLS]`, `[SEP]` or padding) afresh at every step, 80/10/10 as for `mlm`.
//!
//! Pairs are made as Google's `create_pretraining_data.py` makes them
//! (`create_instances_from_document`), one document at a time:
//!
//! - A document is split into segments on sentence boundaries (Unicode's, UAX #29, which
//!   also end a sentence at a line break); each trimmed, non-empty sentence is encoded on
//!   its own.
//! - Segments are gathered into a chunk until it holds `target` ids (`seq_len - 3`, or with
//!   probability `short_seq_prob` a length drawn from `2..=seq_len - 3`) or the document
//!   ends. A is the chunk's first `a_end` segments (`a_end` drawn from `1..len`).
//! - With probability 0.5, or always when the chunk holds one segment, B is "random": the
//!   segments of another document of the same split, from a random start, until B holds
//!   `target - len(A)` ids; the chunk's segments after A are put back and start the next
//!   chunk. Otherwise B is the rest of the chunk (label 0).
//! - The pair is cut to `seq_len - 3` ids longest-first: the longer of A and B loses one id
//!   at a time, from its front or its back by a coin flip (`truncate_seq_pair`).
//!
//! Every draw comes from one generator seeded by `(nsp_seed, input shard, split)`, so the
//! same inputs and seed give the same rows. "Another document" is one of the same split in
//! the same input shard (a work unit), which keeps units independent and resumable; it is
//! never the document itself (BERT's script only tries 10 times to avoid it).
//!
//! **Accounting.** A document with text gives at least one row, so it is kept. A document
//! with a single sentence has a chunk of one segment, so its B is always random (as in
//! BERT). Rejected, with the reason in `rejected/`: a null text (`missing_text`), a text
//! without any token (`empty_text`), and a document that is alone in its split of its
//! input shard and has a single sentence (`no_pair`: no next segment and no other
//! document). A lone document with several sentences gives "is next" pairs only, and a
//! one-segment chunk of it is dropped (its ids counted as dropped).

use unicode_segmentation::UnicodeSegmentation;

use crate::reader::{mix, SplitMix};

/// The sentences of a text: Unicode sentence boundaries, each trimmed, empty ones left out.
pub fn sentences(text: &str) -> Vec<&str> {
    text.split_sentence_bounds()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// A document ready to pair: its id and its sentences' ids (each non-empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NspDoc {
    pub id: String,
    pub segments: Vec<Vec<i32>>,
}

/// One row: the ids, their token types, the label and where A and B came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub input_ids: Vec<i32>,
    pub token_type_ids: Vec<i8>,
    /// 0: B follows A; 1: B is from another document.
    pub label: i64,
    /// Index (in the pool) of A's document.
    pub a_doc: usize,
    /// Index of B's document (A's when the label is 0).
    pub b_doc: usize,
    /// Ids cut by the truncation.
    pub truncated: usize,
}

/// What pairing a pool of documents gave.
#[derive(Debug, Default)]
pub struct Pairs {
    pub pairs: Vec<Pair>,
    /// Documents that gave no pair (`no_pair`), by pool index.
    pub unpaired: Vec<usize>,
    /// Ids of one-segment chunks of a lone document, which could not be paired.
    pub dropped: u64,
}

/// How pairs are made.
#[derive(Debug, Clone, Copy)]
pub struct PairConfig {
    /// Row length: `[CLS]`, A, `[SEP]`, B, `[SEP]` hold at most this many ids. At least 5.
    pub seq_len: usize,
    /// Probability of a shorter target length, drawn from `2..=seq_len - 3`.
    pub short_seq_prob: f64,
    pub cls: i32,
    pub sep: i32,
    /// The generator's seed (see [`seed_for`]).
    pub seed: u64,
}

/// The seed of the pairs of split `split` of input shard `unit`, from the configured seed.
pub fn seed_for(seed: u64, unit: usize, split: &str) -> u64 {
    // FNV-1a of the split's name: stable across platforms and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in split.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(&[seed, unit as u64, h])
}

struct Rng(SplitMix);

impl Rng {
    /// Uniform in [0, 1).
    fn random(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `lo..=hi`.
    fn randint(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.0.below(hi - lo + 1)
    }
}

/// Pairs every document of `docs` (one split of one input shard, in input order), drawing
/// random B's from the other documents of `docs` (see the module docs).
pub fn make_pairs(docs: &[NspDoc], cfg: &PairConfig) -> Pairs {
    let mut rng = Rng(SplitMix::new(cfg.seed));
    let max_tokens = cfg.seq_len.saturating_sub(3).max(2);
    let mut out = Pairs::default();
    for (d, doc) in docs.iter().enumerate() {
        let before = out.pairs.len();
        let segs = &doc.segments;
        let mut target = max_tokens;
        if rng.random() < cfg.short_seq_prob {
            target = rng.randint(2, max_tokens);
        }
        let mut chunk: Vec<usize> = Vec::new();
        let mut len = 0usize;
        let mut i = 0usize;
        while i < segs.len() {
            chunk.push(i);
            len += segs[i].len();
            if i + 1 == segs.len() || len >= target {
                let a_end = if chunk.len() >= 2 {
                    rng.randint(1, chunk.len() - 1)
                } else {
                    1
                };
                let mut a: Vec<i32> = chunk[..a_end]
                    .iter()
                    .flat_map(|&k| segs[k].iter().copied())
                    .collect();
                let mut random_next = chunk.len() == 1 || rng.random() < 0.5;
                let lone = docs.len() < 2;
                if random_next && lone && chunk.len() == 1 {
                    // No next segment and no other document: nothing to pair A with.
                    out.dropped += a.len() as u64;
                    chunk.clear();
                    len = 0;
                    i += 1;
                    continue;
                }
                if random_next && lone {
                    random_next = false;
                }
                let (mut b, b_doc) = if random_next {
                    let target_b = target.saturating_sub(a.len());
                    // Uniform over the other documents, never this one.
                    let mut r = rng.randint(0, docs.len() - 2);
                    if r >= d {
                        r += 1;
                    }
                    let other = &docs[r].segments;
                    let start = rng.randint(0, other.len() - 1);
                    let mut b = Vec::new();
                    for seg in &other[start..] {
                        b.extend_from_slice(seg);
                        if b.len() >= target_b {
                            break;
                        }
                    }
                    // The segments of the chunk after A were not used: they start the next.
                    i -= chunk.len() - a_end;
                    (b, r)
                } else {
                    let b: Vec<i32> = chunk[a_end..]
                        .iter()
                        .flat_map(|&k| segs[k].iter().copied())
                        .collect();
                    (b, d)
                };
                let truncated = truncate_pair(&mut a, &mut b, max_tokens, &mut rng);
                out.pairs
                    .push(frame(&a, &b, cfg, d, b_doc, truncated, random_next));
                chunk.clear();
                len = 0;
            }
            i += 1;
        }
        if out.pairs.len() == before {
            out.unpaired.push(d);
        }
    }
    out
}

/// `[CLS] A [SEP] B [SEP]` with its token types.
fn frame(
    a: &[i32],
    b: &[i32],
    cfg: &PairConfig,
    a_doc: usize,
    b_doc: usize,
    truncated: usize,
    random_next: bool,
) -> Pair {
    let mut input_ids = Vec::with_capacity(a.len() + b.len() + 3);
    input_ids.push(cfg.cls);
    input_ids.extend_from_slice(a);
    input_ids.push(cfg.sep);
    let first = input_ids.len();
    input_ids.extend_from_slice(b);
    input_ids.push(cfg.sep);
    let mut token_type_ids = vec![0i8; input_ids.len()];
    token_type_ids[first..].fill(1);
    Pair {
        input_ids,
        token_type_ids,
        label: i64::from(random_next),
        a_doc,
        b_doc,
        truncated,
    }
}

/// Cuts A and B to at most `max` ids together, one id at a time from the longer (B on a
/// tie), from its front or back by a coin flip, as BERT's `truncate_seq_pair`. Returns the
/// number of ids cut.
fn truncate_pair(a: &mut Vec<i32>, b: &mut Vec<i32>, max: usize, rng: &mut Rng) -> usize {
    // Kept ranges, so that cutting from the front is not quadratic.
    let (mut a_lo, mut a_hi, mut b_lo, mut b_hi) = (0, a.len(), 0, b.len());
    let mut cut = 0;
    while (a_hi - a_lo) + (b_hi - b_lo) > max {
        let (lo, hi) = if a_hi - a_lo > b_hi - b_lo {
            (&mut a_lo, &mut a_hi)
        } else {
            (&mut b_lo, &mut b_hi)
        };
        if rng.random() < 0.5 {
            *lo += 1;
        } else {
            *hi -= 1;
        }
        cut += 1;
    }
    if cut > 0 {
        *a = a[a_lo..a_hi].to_vec();
        *b = b[b_lo..b_hi].to_vec();
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, lens: &[usize], base: i32) -> NspDoc {
        let mut next = base;
        NspDoc {
            id: id.into(),
            segments: lens
                .iter()
                .map(|&n| {
                    (0..n)
                        .map(|_| {
                            next += 1;
                            next
                        })
                        .collect()
                })
                .collect(),
        }
    }

    fn cfg(seq_len: usize, seed: u64) -> PairConfig {
        PairConfig {
            seq_len,
            short_seq_prob: 0.1,
            cls: 1,
            sep: 2,
            seed,
        }
    }

    #[test]
    fn sentences_split_on_punctuation_and_lines() {
        assert_eq!(
            sentences("One two. Three four? Five!\nSix\n\n  \nSeven"),
            vec!["One two.", "Three four?", "Five!", "Six", "Seven"]
        );
        assert!(sentences("  \n ").is_empty());
    }

    /// Pairs are framed with the right token types, B is what follows A (label 0) or comes
    /// from another document (label 1), rows fit, and the same seed gives the same rows.
    #[test]
    fn pairs_are_framed_reproducible_and_never_self_random() {
        let docs: Vec<NspDoc> = (0..40)
            .map(|i| {
                let lens: Vec<usize> = (0..(1 + i % 7)).map(|k| 3 + (i + k) % 9).collect();
                doc(&format!("d{i}"), &lens, 100 * (i as i32 + 1))
            })
            .collect();
        let c = cfg(24, 7);
        let p = make_pairs(&docs, &c);
        assert!(p.unpaired.is_empty() && p.dropped == 0);
        let mut next = 0;
        for pair in &p.pairs {
            let ids = &pair.input_ids;
            assert!(ids.len() <= 24 && ids[0] == 1 && *ids.last().unwrap() == 2);
            let first_sep = ids.iter().position(|&t| t == 2).unwrap();
            let types: Vec<i8> = (0..ids.len()).map(|k| i8::from(k > first_sep)).collect();
            assert_eq!(pair.token_type_ids, types);
            assert!(
                first_sep >= 2 && ids.len() - first_sep >= 3,
                "A and B non-empty"
            );
            // Ids are 100 * (doc + 1) + k: each side's ids come from its recorded document.
            let owner = |t: i32| (t - 1) / 100 - 1;
            assert!(ids[1..first_sep]
                .iter()
                .all(|&t| owner(t) == pair.a_doc as i32));
            assert!(ids[first_sep + 1..ids.len() - 1]
                .iter()
                .all(|&t| owner(t) == pair.b_doc as i32));
            if pair.label == 0 {
                assert_eq!(pair.a_doc, pair.b_doc);
                next += 1;
            } else {
                assert_ne!(pair.a_doc, pair.b_doc);
            }
        }
        let share = next as f64 / p.pairs.len() as f64;
        assert!((0.2..0.6).contains(&share), "is-next share {share}");
        assert_eq!(make_pairs(&docs, &c).pairs, p.pairs);
        assert_ne!(make_pairs(&docs, &cfg(24, 8)).pairs, p.pairs);
    }

    /// A lone document: several sentences give is-next pairs only; one sentence gives none.
    #[test]
    fn a_lone_document_pairs_with_itself_or_not_at_all() {
        let p = make_pairs(&[doc("a", &[4, 4, 4, 4], 0)], &cfg(64, 1));
        assert!(!p.pairs.is_empty() && p.pairs.iter().all(|x| x.label == 0));
        let p = make_pairs(&[doc("a", &[6], 0)], &cfg(64, 1));
        assert!(p.pairs.is_empty());
        assert_eq!((p.unpaired, p.dropped), (vec![0], 6));
    }

    /// Truncation cuts the longer side first and keeps the row within seq_len.
    #[test]
    fn truncation_is_longest_first() {
        let mut rng = Rng(SplitMix::new(3));
        let (mut a, mut b) = (
            (0..30).collect::<Vec<i32>>(),
            (100..104).collect::<Vec<i32>>(),
        );
        let cut = truncate_pair(&mut a, &mut b, 10, &mut rng);
        assert_eq!((cut, a.len(), b.len()), (24, 6, 4));
        assert!(a.windows(2).all(|w| w[1] == w[0] + 1), "a contiguous run");
        let (mut a, mut b) = (vec![1; 9], vec![2; 9]);
        truncate_pair(&mut a, &mut b, 10, &mut rng);
        assert_eq!((a.len(), b.len()), (5, 5));
    }
}
