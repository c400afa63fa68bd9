//! Gopher quality filter (Rae et al. 2021, "Scaling Language Models", appendix A), with
//! datatrove's `GopherQualityFilter` defaults, rule order and reason names.
//!
//! Why: the Gopher rules are the de-facto baseline quality filter for web text, and users
//! compare against datatrove's implementation, so rules, thresholds and reasons match it.
//!
//! Rules, in order (each threshold disabled by 0, as datatrove's falsy `None`/`0`):
//! non-symbol words outside `[min_doc_words, max_doc_words]` (`gopher_short_doc`,
//! `gopher_long_doc`); mean non-symbol word length outside `[min_avg_word_length,
//! max_avg_word_length]` (`gopher_below_avg_threshold`, `gopher_above_avg_threshold`); `#`
//! per word or `...`/`…` per word above `max_symbol_word_ratio` (`gopher_too_many_hashes`,
//! `gopher_too_many_ellipsis`); share of lines starting with a bullet above
//! `max_bullet_lines_ratio` (`gopher_too_many_bullets`); share of lines ending with an
//! ellipsis above `max_ellipsis_lines_ratio` (`gopher_too_many_end_ellipsis`); share of words
//! with a letter below `max_non_alpha_words_ratio` (`gopher_below_alpha_threshold`); fewer
//! distinct stop words than `min_stop_words` (`gopher_enough_stop_words`).
//!
//! Signals: `gopher_word_count`, `gopher_mean_word_length`, `gopher_hash_ratio`,
//! `gopher_ellipsis_ratio`, `gopher_bullet_lines_ratio`, `gopher_end_ellipsis_lines_ratio`,
//! `gopher_alpha_words_ratio`, `gopher_stop_words`.
//!
//! ```toml
//! [[stages]]
//! type = "gopher_quality"
//! min_doc_words = 50
//! ```

use std::sync::LazyLock;

use quern_core::stage::{Keeps, Threshold};
use serde::Deserialize;

use crate::kernel::{DocKernel, Outcome};
use crate::text::{char_len, count_str, py_lstrip, py_rstrip, py_splitlines, PUNCTUATION_SET};
use crate::words::WordTokenizer;

/// Configuration (pipeline TOML / serde). Every field defaults to datatrove's value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GopherQualityConfig {
    /// Text column to read. Default `"text"`.
    pub column: String,
    /// Drop failing documents (`false`: only write the signal columns). Default `true`.
    pub drop: bool,
    /// Minimum number of non-symbol words. Default 50.
    pub min_doc_words: f64,
    /// Maximum number of non-symbol words. Default 100000.
    pub max_doc_words: f64,
    /// Minimum mean non-symbol word length (characters). Default 3.
    pub min_avg_word_length: f64,
    /// Maximum mean non-symbol word length. Default 10.
    pub max_avg_word_length: f64,
    /// Maximum `#` (and `...`) per word. Default 0.1.
    pub max_symbol_word_ratio: f64,
    /// Maximum share of lines starting with `•` or `-`. Default 0.9.
    pub max_bullet_lines_ratio: f64,
    /// Maximum share of lines ending with `...` or `…`. Default 0.3.
    pub max_ellipsis_lines_ratio: f64,
    /// Minimum share of words holding a letter (datatrove's name). Default 0.8.
    pub max_non_alpha_words_ratio: f64,
    /// Minimum number of distinct stop words. Default 2.
    pub min_stop_words: f64,
    /// Stop words. Default `["the", "be", "to", "of", "and", "that", "have", "with"]`.
    pub stop_words: Vec<String>,
}

impl Default for GopherQualityConfig {
    fn default() -> Self {
        GopherQualityConfig {
            column: "text".into(),
            drop: true,
            min_doc_words: 50.0,
            max_doc_words: 100_000.0,
            min_avg_word_length: 3.0,
            max_avg_word_length: 10.0,
            max_symbol_word_ratio: 0.1,
            max_bullet_lines_ratio: 0.9,
            max_ellipsis_lines_ratio: 0.3,
            max_non_alpha_words_ratio: 0.8,
            min_stop_words: 2.0,
            stop_words: ["the", "be", "to", "of", "and", "that", "have", "with"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// The Gopher quality kernel.
pub struct GopherQuality {
    cfg: GopherQualityConfig,
    /// A word can only be a stop word if its first byte and its length are those of one.
    stop_first: [bool; 256],
    stop_lens: u64,
}

impl GopherQuality {
    pub fn new(mut cfg: GopherQualityConfig) -> Self {
        cfg.stop_words.sort();
        cfg.stop_words.dedup();
        let mut stop_first = [false; 256];
        let mut stop_lens = 0u64;
        for w in &cfg.stop_words {
            if let Some(&b) = w.as_bytes().first() {
                stop_first[b as usize] = true;
            }
            stop_lens |= 1 << w.len().min(63);
        }
        GopherQuality {
            cfg,
            stop_first,
            stop_lens,
        }
    }

    #[inline]
    fn maybe_stop(&self, w: &str) -> bool {
        w.as_bytes()
            .first()
            .is_some_and(|&b| self.stop_first[b as usize])
            && self.stop_lens & (1 << w.len().min(63)) != 0
    }
}

pub const SIGNALS: &[&str] = &[
    "gopher_word_count",
    "gopher_mean_word_length",
    "gopher_hash_ratio",
    "gopher_ellipsis_ratio",
    "gopher_bullet_lines_ratio",
    "gopher_end_ellipsis_lines_ratio",
    "gopher_alpha_words_ratio",
    "gopher_stop_words",
];

/// Per-worker buffers.
#[derive(Default)]
pub struct Scratch {
    words: Vec<&'static str>,
    seen: Vec<bool>,
}

/// Per byte: 1 for an ASCII character outside datatrove's punctuation set, 2 for an ASCII
/// letter, 4 for any byte of a non-ASCII character.
static ASCII_CLASS: LazyLock<[u8; 256]> = LazyLock::new(|| {
    let mut t = [4u8; 256];
    for b in 0u8..128 {
        let c = b as char;
        t[b as usize] =
            u8::from(!PUNCTUATION_SET.contains(c)) | (u8::from(c.is_ascii_alphabetic()) << 1);
    }
    t
});

/// Whether a word holds a character outside datatrove's punctuation set.
pub(crate) fn is_non_symbol(w: &str) -> bool {
    w.chars().any(|c| !PUNCTUATION_SET.contains(c))
}

fn div(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

impl DocKernel for GopherQuality {
    type Scratch = Scratch;
    fn signals(&self) -> &[&'static str] {
        SIGNALS
    }
    fn thresholds(&self) -> Vec<Threshold> {
        use Keeps::{AtLeast, AtMost};
        let c = &self.cfg;
        // The rules of `eval`, in its order (signal slot, kept side, value, parameter,
        // reason); a threshold of 0 disables its rule.
        #[rustfmt::skip]
        let rules = [
            (0, AtLeast, c.min_doc_words, "min_doc_words", "gopher_short_doc"),
            (0, AtMost, c.max_doc_words, "max_doc_words", "gopher_long_doc"),
            (1, AtLeast, c.min_avg_word_length, "min_avg_word_length", "gopher_below_avg_threshold"),
            (1, AtMost, c.max_avg_word_length, "max_avg_word_length", "gopher_above_avg_threshold"),
            (2, AtMost, c.max_symbol_word_ratio, "max_symbol_word_ratio", "gopher_too_many_hashes"),
            (3, AtMost, c.max_symbol_word_ratio, "max_symbol_word_ratio", "gopher_too_many_ellipsis"),
            (4, AtMost, c.max_bullet_lines_ratio, "max_bullet_lines_ratio", "gopher_too_many_bullets"),
            (5, AtMost, c.max_ellipsis_lines_ratio, "max_ellipsis_lines_ratio", "gopher_too_many_end_ellipsis"),
            (6, AtLeast, c.max_non_alpha_words_ratio, "max_non_alpha_words_ratio", "gopher_below_alpha_threshold"),
            (7, AtLeast, c.min_stop_words, "min_stop_words", "gopher_enough_stop_words"),
        ];
        rules
            .into_iter()
            .filter(|t| t.2 != 0.0)
            .map(|(i, keeps, v, param, reason)| Threshold::new(SIGNALS[i], keeps, v, param, reason))
            .collect()
    }
    fn eval(&self, text: &str, scratch: &mut Scratch, s: &mut [f64]) -> Outcome {
        let c = &self.cfg;
        // The buffer outlives no call: reuse its allocation with this call's lifetime.
        let mut words: Vec<&str> = std::mem::take(&mut scratch.words);
        words.clear();
        WordTokenizer::get().words_cached(text, &mut words);
        let n_words = words.len() as f64;
        let (mut n_ns, mut ns_len, mut n_alpha) = (0usize, 0usize, 0usize);
        scratch.seen.clear();
        scratch.seen.resize(c.stop_words.len(), false);
        let class = &*ASCII_CLASS;
        for w in &words {
            // One pass: OR of the bytes' classes (bit 0: not punctuation, 1: letter, 2: not
            // ASCII).
            let bits = w.bytes().fold(0u8, |a, b| a | class[b as usize]);
            if bits & 4 == 0 {
                if bits & 1 != 0 {
                    n_ns += 1;
                    ns_len += w.len();
                }
                if bits & 2 != 0 {
                    n_alpha += 1;
                }
            } else {
                if is_non_symbol(w) {
                    n_ns += 1;
                    ns_len += char_len(w);
                }
                if w.chars().any(char::is_alphabetic) {
                    n_alpha += 1;
                }
            }
            if self.maybe_stop(w) {
                if let Ok(i) = c.stop_words.binary_search_by(|sw| sw.as_str().cmp(w)) {
                    scratch.seen[i] = true;
                }
            }
        }
        let stop = scratch.seen.iter().filter(|b| **b).count() as f64;
        words.clear();
        scratch.words = words.into_iter().map(|_| "").collect();

        let (mut n_lines, mut bullets, mut ellipsis_lines) = (0usize, 0usize, 0usize);
        for line in py_splitlines(text) {
            n_lines += 1;
            let l = py_lstrip(line);
            if l.starts_with('•') || l.starts_with('-') {
                bullets += 1;
            }
            let r = py_rstrip(line);
            if r.ends_with("...") || r.ends_with('…') {
                ellipsis_lines += 1;
            }
        }
        let n_ns_f = n_ns as f64;
        s[0] = n_ns_f;
        s[1] = div(ns_len as f64, n_ns_f);
        s[2] = div(count_str(text, "#") as f64, n_words);
        s[3] = div(
            (count_str(text, "...") + count_str(text, "…")) as f64,
            n_words,
        );
        s[4] = div(bullets as f64, n_lines as f64);
        s[5] = div(ellipsis_lines as f64, n_lines as f64);
        s[6] = div(n_alpha as f64, n_words);
        s[7] = stop;

        // NaN comparisons are false, as numpy's are: an undefined signal never rejects.
        let on = |t: f64| t != 0.0;
        if on(c.min_doc_words) && n_ns_f < c.min_doc_words {
            return Outcome::reject("gopher_short_doc");
        }
        if on(c.max_doc_words) && n_ns_f > c.max_doc_words {
            return Outcome::reject("gopher_long_doc");
        }
        if on(c.min_avg_word_length) && s[1] < c.min_avg_word_length {
            return Outcome::reject("gopher_below_avg_threshold");
        }
        if on(c.max_avg_word_length) && s[1] > c.max_avg_word_length {
            return Outcome::reject("gopher_above_avg_threshold");
        }
        if on(c.max_symbol_word_ratio) && s[2] > c.max_symbol_word_ratio {
            return Outcome::reject("gopher_too_many_hashes");
        }
        if on(c.max_symbol_word_ratio) && s[3] > c.max_symbol_word_ratio {
            return Outcome::reject("gopher_too_many_ellipsis");
        }
        if on(c.max_bullet_lines_ratio) && s[4] > c.max_bullet_lines_ratio {
            return Outcome::reject("gopher_too_many_bullets");
        }
        if on(c.max_ellipsis_lines_ratio) && s[5] > c.max_ellipsis_lines_ratio {
            return Outcome::reject("gopher_too_many_end_ellipsis");
        }
        if on(c.max_non_alpha_words_ratio) && s[6] < c.max_non_alpha_words_ratio {
            return Outcome::reject("gopher_below_alpha_threshold");
        }
        if on(c.min_stop_words) && stop < c.min_stop_words {
            return Outcome::reject("gopher_enough_stop_words");
        }
        Outcome::keep()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> Option<String> {
        let k = GopherQuality::new(GopherQualityConfig::default());
        let mut s = vec![f64::NAN; SIGNALS.len()];
        k.eval(text, &mut Scratch::default(), &mut s)
            .reason
            .map(|r| r.into_owned())
    }

    const GOOD: &str = "The history of the city goes back to the Roman period, when a small fort was built \
        on the river. Over the centuries the settlement grew into a market town with a church, a bridge and \
        a busy harbour. Today it is known for its old quarter, its university and the festival that takes \
        place every summer, attracting visitors from all over the country and abroad.";

    /// Golden expectations from datatrove's rules (order and thresholds as in
    /// `gopher_quality_filter.py`).
    #[test]
    fn table() {
        let hashes = format!("{GOOD} {}", "#tag ".repeat(12));
        let bullets = (0..60)
            .map(|i| format!("- item number {i} of the list and the rest"))
            .collect::<Vec<_>>()
            .join("\n");
        // Long lines: the end-ellipsis share trips, not the ellipsis-per-word ratio (checked
        // against datatrove 0.10.1, which rejects "and then it went on...\n" x 30 for too many ellipses).
        let ellipses = format!(
            "{GOOD}\n{}",
            "and so on and on, it went on for a long while and then stopped...\n".repeat(30)
        );
        let numbers = format!("{GOOD} {}", "1234 5678 9012 ".repeat(30));
        let long_words =
            "Incomprehensibilities characteristically institutionalisation ".repeat(20) + "the and";
        let no_stop = "Cats dogs birds fish horses cows sheep goats pigs ducks ".repeat(6);
        let cases: Vec<(&str, Option<&str>)> = vec![
            (GOOD, None),
            ("Too short to be a document.", Some("gopher_short_doc")),
            (hashes.as_str(), Some("gopher_too_many_hashes")),
            (bullets.as_str(), Some("gopher_too_many_bullets")),
            (ellipses.as_str(), Some("gopher_too_many_end_ellipsis")),
            (numbers.as_str(), Some("gopher_below_alpha_threshold")),
            (long_words.as_str(), Some("gopher_above_avg_threshold")),
            (no_stop.as_str(), Some("gopher_enough_stop_words")),
        ];
        for (text, want) in cases {
            assert_eq!(reason(text).as_deref(), want, "{text:.60}");
        }
    }

    #[test]
    fn signals_are_written() {
        let k = GopherQuality::new(GopherQualityConfig::default());
        let mut s = vec![f64::NAN; SIGNALS.len()];
        k.eval("The cat, and the dog.", &mut Scratch::default(), &mut s);
        assert_eq!(s[0], 5.0); // The cat and the dog (punctuation words excluded)
        assert_eq!(s[7], 2.0); // "and" and "the" ("The" does not count: case-sensitive)
        assert_eq!(s[2], 0.0);
    }
}
