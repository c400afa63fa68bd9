//! Gopher repetition filter (Rae et al. 2021, table A1), with datatrove's
//! `GopherRepetitionFilter` defaults, rule order and reason names.
//!
//! Why: repeated lines, paragraphs and n-grams mark boilerplate and spam; the Gopher
//! thresholds are the common baseline.
//!
//! Rules, in order: duplicate paragraphs (split on `\n{2,}` of the stripped text) above
//! `dup_para_frac` of paragraphs (`dup_para_frac`) or `dup_para_char_frac` of characters
//! (`dup_para_char_frac`); duplicate lines (split on `\n+`) likewise (`dup_line_frac`,
//! `dup_line_char_frac`); for each `(n, frac)` in `top_n_grams`, the characters of the most
//! frequent word n-gram (space-joined length × count) above `frac` of the text
//! (`top_{n}_gram`); for each `(n, frac)` in `dup_n_grams`, characters in repeated
//! non-overlapping n-grams above `frac` (`duplicated_{n}_n_grams`). Fractions of 0 disable.
//!
//! Signals: `gopher_rep_dup_para_frac`, `gopher_rep_dup_para_char_frac`,
//! `gopher_rep_dup_line_frac`, `gopher_rep_dup_line_char_frac`, and
//! `gopher_rep_top_{2,3,4}_gram`, `gopher_rep_dup_{5..10}_gram` for the default n's.
//!
//! ```toml
//! [[stages]]
//! type = "gopher_repetition"
//! top_n_grams = [[2, 0.2], [3, 0.18], [4, 0.16]]
//! ```

use quern_core::stage::{Keeps, Threshold};
use serde::Deserialize;

use crate::grams::{count_duplicates, GramTable, PREFETCH};
use crate::kernel::{DocKernel, Outcome};
use crate::text::{char_len, py_strip};
use crate::words::WordTokenizer;

/// Configuration. Every field defaults to datatrove's value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GopherRepetitionConfig {
    /// Text column. Default `"text"`.
    pub column: String,
    /// Drop failing documents. Default `true`.
    pub drop: bool,
    /// Default 0.3.
    pub dup_line_frac: f64,
    /// Default 0.3.
    pub dup_para_frac: f64,
    /// Default 0.2.
    pub dup_line_char_frac: f64,
    /// Default 0.2.
    pub dup_para_char_frac: f64,
    /// `(n, max_fraction)` pairs. Default `[[2, 0.2], [3, 0.18], [4, 0.16]]`.
    pub top_n_grams: Vec<(usize, f64)>,
    /// `(n, max_fraction)` pairs. Default `[[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.1]]`.
    pub dup_n_grams: Vec<(usize, f64)>,
}

impl Default for GopherRepetitionConfig {
    fn default() -> Self {
        GopherRepetitionConfig {
            column: "text".into(),
            drop: true,
            dup_line_frac: 0.3,
            dup_para_frac: 0.3,
            dup_line_char_frac: 0.2,
            dup_para_char_frac: 0.2,
            top_n_grams: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            dup_n_grams: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
        }
    }
}

/// The Gopher repetition kernel.
pub struct GopherRepetition {
    cfg: GopherRepetitionConfig,
    signals: Vec<&'static str>,
    top_reasons: Vec<String>,
    dup_reasons: Vec<String>,
}

impl GopherRepetition {
    pub fn new(cfg: GopherRepetitionConfig) -> Self {
        let mut signals: Vec<&'static str> = vec![
            "gopher_rep_dup_para_frac",
            "gopher_rep_dup_para_char_frac",
            "gopher_rep_dup_line_frac",
            "gopher_rep_dup_line_char_frac",
        ];
        // Column names are built once per stage; leaking a few short strings keeps the
        // signal list `&'static str` like every other kernel's.
        for (n, _) in &cfg.top_n_grams {
            signals.push(Box::leak(
                format!("gopher_rep_top_{n}_gram").into_boxed_str(),
            ));
        }
        for (n, _) in &cfg.dup_n_grams {
            signals.push(Box::leak(
                format!("gopher_rep_dup_{n}_gram").into_boxed_str(),
            ));
        }
        let top_reasons = cfg
            .top_n_grams
            .iter()
            .map(|(n, _)| format!("top_{n}_gram"))
            .collect();
        let dup_reasons = cfg
            .dup_n_grams
            .iter()
            .map(|(n, _)| format!("duplicated_{n}_n_grams"))
            .collect();
        GopherRepetition {
            cfg,
            signals,
            top_reasons,
            dup_reasons,
        }
    }
}

/// Per-worker buffers.
#[derive(Default)]
pub struct Scratch {
    words: Vec<&'static str>,
    /// Where each word starts in the words joined (plus the end).
    cat_at: Vec<usize>,
    /// Cumulative character counts of the words.
    chars_at: Vec<usize>,
    /// Hashes of the first i words joined, and of the first i word hashes; the powers of
    /// each base.
    cat_hash: Vec<u64>,
    word_hash: Vec<u64>,
    pow: Vec<u64>,
    word_pow: Vec<u64>,
    grams: GramTable,
    /// One pass's n-gram hashes.
    hv: Vec<u64>,
    /// Top n-gram passes: the positions counted, and each one's table slot.
    repeated_at: Vec<u32>,
    slot_of: Vec<u32>,
    /// The paragraphs or lines of [`duplicate_parts`].
    parts: Vec<&'static str>,
}

/// The parts of `text` split on runs of at least `min` newlines (`re.split("\n{min,}")`):
/// (how many, how many repeat an earlier one, characters in those repeats).
fn duplicate_parts(text: &str, min: usize, sc: &mut Scratch) -> (usize, usize, usize) {
    let b = text.as_bytes();
    // The buffer outlives no call: reuse its allocation with this call's lifetime.
    let mut parts: Vec<&str> = std::mem::take(&mut sc.parts);
    parts.clear();
    let mut start = 0;
    let mut i = 0;
    while let Some(k) = memchr::memchr(b'\n', &b[i..]) {
        let nl = i + k;
        let mut j = nl;
        while j < b.len() && b[j] == b'\n' {
            j += 1;
        }
        if j - nl >= min {
            parts.push(&text[start..nl]);
            start = j;
        }
        i = j;
    }
    parts.push(&text[start..]);
    let (n, chars) = count_duplicates(&parts, &mut sc.grams);
    let total = parts.len();
    parts.clear();
    sc.parts = parts.into_iter().map(|_| "").collect();
    (total, n, chars)
}

const BASE: u64 = 0x100_0000_01b3;
const WORD_BASE: u64 = 0x9E37_79B9_7F4A_7C15;

/// Grows `pow` to hold `base^k` for k ≤ `n`.
fn powers(pow: &mut Vec<u64>, base: u64, n: usize) {
    if pow.is_empty() {
        pow.push(1);
    }
    while pow.len() <= n {
        let last = pow[pow.len() - 1];
        pow.push(last.wrapping_mul(base));
    }
}

fn div(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

impl DocKernel for GopherRepetition {
    type Scratch = Scratch;
    fn signals(&self) -> &[&'static str] {
        &self.signals
    }
    fn thresholds(&self) -> Vec<Threshold> {
        let c = &self.cfg;
        // The paragraph and line rules (0 disables them), then every n-gram rule (always
        // on, as in `eval`), in `eval`'s order and slots.
        let mut t: Vec<Threshold> = [
            (c.dup_para_frac, "dup_para_frac"),
            (c.dup_para_char_frac, "dup_para_char_frac"),
            (c.dup_line_frac, "dup_line_frac"),
            (c.dup_line_char_frac, "dup_line_char_frac"),
        ]
        .into_iter()
        .enumerate()
        .filter(|(_, (v, _))| *v != 0.0)
        .map(|(i, (v, name))| Threshold::new(self.signals[i], Keeps::AtMost, v, name, name))
        .collect();
        let base = 4 + c.top_n_grams.len();
        for (k, (_, frac)) in c.top_n_grams.iter().enumerate() {
            t.push(Threshold::new(
                self.signals[4 + k],
                Keeps::AtMost,
                *frac,
                format!("top_n_grams[{k}]"),
                self.top_reasons[k].clone(),
            ));
        }
        for (k, (_, frac)) in c.dup_n_grams.iter().enumerate() {
            t.push(Threshold::new(
                self.signals[base + k],
                Keeps::AtMost,
                *frac,
                format!("dup_n_grams[{k}]"),
                self.dup_reasons[k].clone(),
            ));
        }
        t
    }
    fn eval(&self, text: &str, sc: &mut Scratch, s: &mut [f64]) -> Outcome {
        let c = &self.cfg;
        let text_len = char_len(text) as f64;
        let on = |t: f64| t != 0.0;

        let stripped = py_strip(text);
        let (n_paras, pd, pc) = duplicate_parts(stripped, 2, sc);
        s[0] = div(pd as f64, n_paras as f64);
        s[1] = div(pc as f64, text_len);
        let (n_lines, ld, lc) = duplicate_parts(text, 1, sc);
        s[2] = div(ld as f64, n_lines as f64);
        s[3] = div(lc as f64, text_len);

        // The buffer outlives no call: reuse its allocation with this call's lifetime.
        let mut words: Vec<&str> = std::mem::take(&mut sc.words);
        words.clear();
        WordTokenizer::get().words_cached(text, &mut words);
        let nw = words.len();
        // datatrove's duplicate n-grams compare the words joined without a separator. Their
        // hashes come from each word's own polynomial hash (words hash independently, so
        // the CPU overlaps them) chained over byte offsets: `cat_hash[i]` is the hash of
        // the first i words joined, `cat_at[i]` its length in bytes.
        sc.cat_at.clear();
        sc.chars_at.clear();
        sc.cat_hash.clear();
        sc.word_hash.clear();
        // The words joined are no longer than the text.
        powers(&mut sc.pow, BASE, text.len());
        powers(&mut sc.word_pow, WORD_BASE, nw);
        let (mut at, mut chars, mut ch, mut wh) = (0usize, 0usize, 0u64, 0u64);
        for w in &words {
            sc.cat_at.push(at);
            sc.chars_at.push(chars);
            sc.cat_hash.push(ch);
            sc.word_hash.push(wh);
            let mut h = 0u64;
            for &b in w.as_bytes() {
                h = h.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1);
            }
            ch = ch.wrapping_mul(sc.pow[w.len()]).wrapping_add(h);
            // Word n-grams (space-joined in datatrove; words hold no space, so equal joined
            // n-grams are equal word sequences) hash from the words' hashes.
            wh = wh.wrapping_mul(WORD_BASE).wrapping_add(h ^ (h >> 29));
            at += w.len();
            chars += char_len(w);
        }
        sc.cat_at.push(at);
        sc.chars_at.push(chars);
        sc.cat_hash.push(ch);
        sc.word_hash.push(wh);
        let (cat_at, chars_at) = (&sc.cat_at[..], &sc.chars_at[..]);
        let (grams, hv) = (&mut sc.grams, &mut sc.hv);
        let ws = &words[..];

        let base = 4;
        // Positions whose previous-pass n-gram (one word shorter) occurs more than once:
        // an n-gram can only repeat where its first n - 1 words do, so the next pass
        // counts just those and knows every other n-gram occurs once.
        let (rep, slot_of) = (&mut sc.repeated_at, &mut sc.slot_of);
        let mut prev_n = None;
        for (k, (n, _)) in c.top_n_grams.iter().enumerate() {
            let n = *n;
            if n == 0 || nw < n {
                prev_n = None;
                continue;
            }
            // Counter.most_common(1): the highest count, first seen among ties.
            let m = nw - n + 1;
            let pruned = prev_n == Some(n - 1);
            let (wh, p) = (&sc.word_hash[..], sc.word_pow[n]);
            hv.clear();
            if pruned {
                rep.retain(|&i| (i as usize) < m);
            } else {
                rep.clear();
                rep.extend(0..m as u32);
            }
            hv.extend(rep.iter().map(|&i| {
                let i = i as usize;
                wh[i + n].wrapping_sub(wh[i].wrapping_mul(p))
            }));
            grams.reset(hv.len(), true);
            let same = |a: usize, b: usize| ws[a..a + n] == ws[b..b + n];
            // (count, first word) of the best so far: most counts, then first seen.
            let (mut best_count, mut best_i) = (0u32, 0u32);
            slot_of.clear();
            for (j, &i) in rep.iter().enumerate() {
                if let Some(&ahead) = hv.get(j + PREFETCH) {
                    grams.prefetch(ahead);
                }
                let (slot, _) = grams.entry(hv[j], i as usize, same);
                slot_of.push(slot as u32);
                grams.counts[slot] += 1;
                let (c, first) = (grams.counts[slot], grams.words[slot]);
                if c > best_count || (c == best_count && first < best_i) {
                    (best_count, best_i) = (c, first);
                }
            }
            if best_count <= 1 {
                // Every n-gram occurs once: the first one wins.
                (best_count, best_i) = (1, 0);
            }
            // The positions whose n-gram repeats, for the next pass.
            let mut w = 0;
            for j in 0..rep.len() {
                if grams.counts[slot_of[j] as usize] >= 2 {
                    rep[w] = rep[j];
                    w += 1;
                }
            }
            rep.truncate(w);
            prev_n = Some(n);
            let bi = best_i as usize;
            let len = chars_at[bi + n] - chars_at[bi] + (n - 1);
            s[base + k] = div((len * best_count as usize) as f64, text_len);
        }
        let base = 4 + c.top_n_grams.len();
        let (ch, pow) = (&sc.cat_hash[..], &sc.pow[..]);
        for (k, (n, _)) in c.dup_n_grams.iter().enumerate() {
            let n = *n;
            let mut repeated = 0usize;
            if n > 0 && n <= nw {
                let m = nw - n + 1;
                hv.clear();
                hv.extend((0..m).map(|i| {
                    let len = cat_at[i + n] - cat_at[i];
                    ch[i + n].wrapping_sub(ch[i].wrapping_mul(pow[len]))
                }));
                grams.reset(nw, false);
                // The same words joined: same length, then the same bytes.
                let joined = |w: usize| ws[w..w + n].iter().flat_map(|x| x.bytes());
                let same = |a: usize, b: usize| {
                    cat_at[a + n] - cat_at[a] == cat_at[b + n] - cat_at[b]
                        && joined(a).eq(joined(b))
                };
                let mut idx = 0usize;
                while idx < m {
                    if let Some(&ahead) = hv.get(idx + PREFETCH) {
                        grams.prefetch(ahead);
                    }
                    if grams.entry(hv[idx], idx, same).1 {
                        idx += 1;
                    } else {
                        repeated += chars_at[idx + n] - chars_at[idx];
                        idx += n;
                    }
                }
            }
            s[base + k] = div(repeated as f64, text_len);
        }

        words.clear();
        sc.words = words.into_iter().map(|_| "").collect();

        if on(c.dup_para_frac) && s[0] > c.dup_para_frac {
            return Outcome::reject("dup_para_frac");
        }
        if on(c.dup_para_char_frac) && s[1] > c.dup_para_char_frac {
            return Outcome::reject("dup_para_char_frac");
        }
        if on(c.dup_line_frac) && s[2] > c.dup_line_frac {
            return Outcome::reject("dup_line_frac");
        }
        if on(c.dup_line_char_frac) && s[3] > c.dup_line_char_frac {
            return Outcome::reject("dup_line_char_frac");
        }
        for (k, (_, frac)) in c.top_n_grams.iter().enumerate() {
            if s[4 + k] > *frac {
                return Outcome::reject(self.top_reasons[k].clone());
            }
        }
        for (k, (_, frac)) in c.dup_n_grams.iter().enumerate() {
            if s[base + k] > *frac {
                return Outcome::reject(self.dup_reasons[k].clone());
            }
        }
        Outcome::keep()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn run(text: &str) -> (Option<String>, Vec<f64>) {
        let k = GopherRepetition::new(GopherRepetitionConfig::default());
        let mut s = vec![f64::NAN; k.signals().len()];
        let r = k
            .eval(text, &mut Scratch::default(), &mut s)
            .reason
            .map(|r| r.into_owned());
        (r, s)
    }

    const PROSE: &str = "The river runs through the old town, past the mill and the church.\n\
        Farmers bring their goods to the market every Tuesday morning.\n\
        In winter the lake freezes and children skate on it until dark.\n\
        A new bridge was opened last year after a long debate in the council.";

    #[test]
    fn table() {
        let dup_para =
            "Same paragraph here.\n\nSame paragraph here.\n\nSame paragraph here.\n\nOther one.";
        let dup_line = format!(
            "{PROSE}\nclick here\nclick here\nclick here\nclick here\nclick here\nclick here"
        );
        let top2 = format!("{PROSE} {}", "buy now ".repeat(40));
        let cases: Vec<(&str, Option<&str>)> = vec![
            (PROSE, None),
            (dup_para, Some("dup_para_frac")),
            (dup_line.as_str(), Some("dup_line_frac")),
            (top2.as_str(), Some("top_2_gram")),
        ];
        for (text, want) in cases {
            assert_eq!(run(text).0.as_deref(), want, "{text:.60}");
        }
    }

    #[test]
    fn all_duplicate_skips_like_datatrove() {
        // words: a b c d e a b c d e -> the 5-gram "abcde" repeats once: 5 chars of 19.
        let (_, s) = run("a b c d e a b c d e");
        let i = 4 + 3; // first dup n-gram slot (n = 5)
        assert!((s[i] - 5.0 / 19.0).abs() < 1e-12, "{}", s[i]);
        // top 2-gram: "a b" twice = 3 chars * 2 = 6 of 19
        assert!((s[4] - 6.0 / 19.0).abs() < 1e-12, "{}", s[4]);
    }

    #[test]
    fn dup_n_grams_compare_joined_text_like_datatrove() {
        // datatrove compares `"".join(words)`: `ab c d e f` and `a bc d e f` are the same
        // 5-gram, so 6 characters of 21 repeat; the top 2-gram counts words ("d e" twice).
        let (_, s) = run("ab c d e f a bc d e f");
        assert!((s[4 + 3] - 6.0 / 21.0).abs() < 1e-12, "{}", s[7]);
        assert!((s[4] - 6.0 / 21.0).abs() < 1e-12, "{}", s[4]);
        // Nothing repeats at 6 words and above.
        assert_eq!(&s[8..], &[0.0; 5]);
    }

    /// datatrove's n-gram signals computed plainly (string keys, a Counter), for comparison.
    fn plain_ngram_signals(text: &str) -> Vec<f64> {
        let words = crate::words::split_words(text);
        let total = char_len(text) as f64;
        let cfg = GopherRepetitionConfig::default();
        let mut out = Vec::new();
        for (n, _) in &cfg.top_n_grams {
            let grams: Vec<String> = words.windows(*n).map(|w| w.join(" ")).collect();
            let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
            for (i, g) in grams.iter().enumerate() {
                counts.entry(g).or_insert((0, i)).0 += 1;
            }
            let best = counts
                .iter()
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)));
            out.push(best.map_or(f64::NAN, |(g, (c, _))| (char_len(g) * c) as f64 / total));
        }
        for (n, _) in &cfg.dup_n_grams {
            let grams: Vec<String> = words.windows(*n).map(|w| w.concat()).collect();
            let (mut seen, mut repeated, mut idx) = (HashSet::<&str>::new(), 0, 0);
            while idx < grams.len() {
                if seen.contains(grams[idx].as_str()) {
                    repeated += char_len(&grams[idx]);
                    idx += n;
                } else {
                    seen.insert(&grams[idx]);
                    idx += 1;
                }
            }
            out.push(repeated as f64 / total);
        }
        out
    }

    #[test]
    fn ngram_signals_equal_a_plain_counter_on_real_text() {
        let raw = include_str!("../../tests/data/corpus/mixed.jsonl");
        let mut texts: Vec<String> = raw
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["text"].as_str().map(str::to_string))
            .collect();
        // Repetition as spam has it, and joined-text collisions across word boundaries.
        texts.push(format!(
            "{} {}",
            texts[0],
            "buy cheap pills now ".repeat(30)
        ));
        texts.push("ab c d e f g a bc d e f g ab c d e f g".into());
        assert!(texts.len() >= 50);
        let mut sc = Scratch::default();
        for t in &texts {
            let k = GopherRepetition::new(GopherRepetitionConfig::default());
            let mut s = vec![f64::NAN; k.signals().len()];
            k.eval(t, &mut sc, &mut s);
            let want = plain_ngram_signals(t);
            for (j, w) in want.iter().enumerate() {
                let got = s[4 + j];
                assert!(
                    (got - w).abs() < 1e-12 || (got.is_nan() && w.is_nan()),
                    "{} signal {j}: {got} vs {w}: {t:.80}",
                    k.signals()[4 + j]
                );
            }
        }
    }

    #[test]
    fn newline_runs_split_like_re() {
        let mut sc = Scratch::default();
        // re.split("\n{2,}"): ["a\nb", "c", "a\nb"]; the third repeats the first.
        assert_eq!(
            duplicate_parts("a\nb\n\n\nc\n\na\nb", 2, &mut sc),
            (3, 1, 3)
        );
        // re.split("\n+"): ["", "a", "é"]
        assert_eq!(duplicate_parts("\na\n\né", 1, &mut sc), (3, 0, 0));
        // ["", "a", ""]: the empty last part repeats the first (0 characters)
        assert_eq!(duplicate_parts("\na\n", 1, &mut sc), (3, 1, 0));
        assert_eq!(duplicate_parts("é\né", 1, &mut sc), (2, 1, 1));
    }
}
