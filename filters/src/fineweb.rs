//! FineWeb quality filter (Penedo et al. 2024), with datatrove's `FineWebQualityFilter`
//! defaults and reason names.
//!
//! Why: FineWeb's three line-level heuristics were chosen on ablations over CommonCrawl and
//! complement Gopher and C4; datatrove's implementation defines them.
//!
//! Over the non-blank lines of `text.split("\n")`: drop if none (`empty`); if the share of
//! lines ending in a stop character (datatrove's terminal punctuation) is below
//! `line_punct_thr` (`line_punct_ratio`); if the share of lines of at most
//! `short_line_length` characters is above `short_line_thr` (`short_line_ratio`); if
//! characters in duplicated lines over characters outside newlines exceed
//! `char_duplicates_ratio` (`char_dup_ratio`); if newlines per word exceed `new_line_ratio`
//! (`list_ratio`).
//!
//! Signals: `fineweb_line_punct_ratio`, `fineweb_short_line_ratio`,
//! `fineweb_char_dup_ratio`, `fineweb_list_ratio`.
//!
//! ```toml
//! [[stages]]
//! type = "fineweb_quality"
//! line_punct_thr = 0.12
//! ```

use quern_core::stage::{Keeps, Threshold};
use serde::Deserialize;

use crate::grams::{count_duplicates, GramTable};
use crate::kernel::{DocKernel, Outcome};
use crate::text::{char_len, py_strip, CharSet, TERMINAL_PUNCTUATION};
use crate::words::WordTokenizer;

/// Configuration. Every field defaults to datatrove's value.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FineWebConfig {
    /// Text column. Default `"text"`.
    pub column: String,
    /// Drop failing documents. Default `true`.
    pub drop: bool,
    /// Minimum share of lines ending in a stop character. Default 0.12.
    pub line_punct_thr: f64,
    /// Do not reject when no line at all ends in a stop character. Default `false`.
    pub line_punct_exclude_zero: bool,
    /// Stop characters. Default: datatrove's `TERMINAL_PUNCTUATION` (empty list = default).
    pub stop_chars: Vec<char>,
    /// Maximum share of short lines. Default 0.67.
    pub short_line_thr: f64,
    /// A line of at most this many characters is short. Default 30.
    pub short_line_length: usize,
    /// Maximum share of characters in duplicated lines. Default 0.01.
    pub char_duplicates_ratio: f64,
    /// Maximum newlines per word. Default 0.3.
    pub new_line_ratio: f64,
}

impl Default for FineWebConfig {
    fn default() -> Self {
        FineWebConfig {
            column: "text".into(),
            drop: true,
            line_punct_thr: 0.12,
            line_punct_exclude_zero: false,
            stop_chars: Vec::new(),
            short_line_thr: 0.67,
            short_line_length: 30,
            char_duplicates_ratio: 0.01,
            new_line_ratio: 0.3,
        }
    }
}

/// The FineWeb kernel.
pub struct FineWeb {
    cfg: FineWebConfig,
    stop: Option<CharSet>,
}

impl FineWeb {
    pub fn new(cfg: FineWebConfig) -> Self {
        let stop = (!cfg.stop_chars.is_empty())
            .then(|| CharSet::from_chars(cfg.stop_chars.iter().copied()));
        FineWeb { cfg, stop }
    }
}

pub const SIGNALS: &[&str] = &[
    "fineweb_line_punct_ratio",
    "fineweb_short_line_ratio",
    "fineweb_char_dup_ratio",
    "fineweb_list_ratio",
];

/// Per-worker buffers.
#[derive(Default)]
pub struct Scratch {
    words: Vec<&'static str>,
    lines: Vec<&'static str>,
    grams: GramTable,
}

impl DocKernel for FineWeb {
    type Scratch = Scratch;
    fn signals(&self) -> &[&'static str] {
        SIGNALS
    }
    fn thresholds(&self) -> Vec<Threshold> {
        let c = &self.cfg;
        // `eval`'s four rules, always on. With `line_punct_exclude_zero` a ratio of exactly 0
        // is kept too, which a single cut cannot say: the marker is still the threshold.
        vec![
            Threshold::new(
                SIGNALS[0],
                Keeps::AtLeast,
                c.line_punct_thr,
                "line_punct_thr",
                "line_punct_ratio",
            ),
            Threshold::new(
                SIGNALS[1],
                Keeps::AtMost,
                c.short_line_thr,
                "short_line_thr",
                "short_line_ratio",
            ),
            Threshold::new(
                SIGNALS[2],
                Keeps::AtMost,
                c.char_duplicates_ratio,
                "char_duplicates_ratio",
                "char_dup_ratio",
            ),
            Threshold::new(
                SIGNALS[3],
                Keeps::AtMost,
                c.new_line_ratio,
                "new_line_ratio",
                "list_ratio",
            ),
        ]
    }
    fn eval(&self, text: &str, sc: &mut Scratch, s: &mut [f64]) -> Outcome {
        let c = &self.cfg;
        let stop = self.stop.as_ref().unwrap_or(&*TERMINAL_PUNCTUATION);
        // The buffer outlives no call: reuse its allocation with this call's lifetime.
        let mut lines: Vec<&str> = std::mem::take(&mut sc.lines);
        lines.clear();
        lines.extend(text.split('\n').filter(|l| !py_strip(l).is_empty()));
        let (n, mut punct, mut short) = (lines.len(), 0usize, 0usize);
        for l in &lines {
            if l.chars().next_back().is_some_and(|ch| stop.contains(ch)) {
                punct += 1;
            }
            if char_len(l) <= c.short_line_length {
                short += 1;
            }
        }
        let dup_chars = if n == 0 {
            0
        } else {
            count_duplicates(&lines, &mut sc.grams).1
        };
        lines.clear();
        sc.lines = lines.into_iter().map(|_| "").collect();
        if n == 0 {
            return Outcome::reject("empty");
        }
        let nf = n as f64;
        s[0] = punct as f64 / nf;
        s[1] = short as f64 / nf;
        let newlines = memchr::memchr_iter(b'\n', text.as_bytes()).count();
        let non_nl = char_len(text) - newlines;
        s[2] = if non_nl == 0 {
            f64::NAN
        } else {
            dup_chars as f64 / non_nl as f64
        };
        let mut words: Vec<&str> = std::mem::take(&mut sc.words);
        words.clear();
        WordTokenizer::get().words_cached(text, &mut words);
        let nw = words.len();
        words.clear();
        sc.words = words.into_iter().map(|_| "").collect();
        s[3] = if nw == 0 {
            f64::NAN
        } else {
            newlines as f64 / nw as f64
        };

        if s[0] < c.line_punct_thr && !(s[0] == 0.0 && c.line_punct_exclude_zero) {
            return Outcome::reject("line_punct_ratio");
        }
        if s[1] > c.short_line_thr {
            return Outcome::reject("short_line_ratio");
        }
        if s[2] > c.char_duplicates_ratio {
            return Outcome::reject("char_dup_ratio");
        }
        if s[3] > c.new_line_ratio {
            return Outcome::reject("list_ratio");
        }
        Outcome::keep()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> Option<String> {
        let k = FineWeb::new(FineWebConfig::default());
        let mut s = vec![f64::NAN; SIGNALS.len()];
        k.eval(text, &mut Scratch::default(), &mut s)
            .reason
            .map(|r| r.into_owned())
    }

    #[test]
    fn table() {
        let prose = "The committee met on Monday to discuss the new budget for the library.\n\
                     Several members asked for more money to be spent on children's books.";
        let menu = "Home\nAbout us\nProducts\nContact\nA longer line that ends without a stop";
        let short = "Short line one.\nShort line two.\nShort line three.\nThis line is long enough to not count as short.";
        let dup = format!("{prose}\nThe same line repeated here.\nThe same line repeated here.");
        let cases: Vec<(&str, Option<&str>)> = vec![
            (prose, None),
            ("\n \n", Some("empty")),
            (menu, Some("line_punct_ratio")),
            (short, Some("short_line_ratio")),
            (dup.as_str(), Some("char_dup_ratio")),
        ];
        for (text, want) in cases {
            assert_eq!(reason(text).as_deref(), want, "{text:.60}");
        }
    }
}
