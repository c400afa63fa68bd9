//! C4 quality filter (Raffel et al. 2020), with datatrove's `C4QualityFilter` defaults,
//! reason names and its line-level rewriting of `text`.
//!
//! Why: C4's rules remove navigation, boilerplate and code from web pages line by line, and
//! drop pages with too few sentences; datatrove's version is what users compare against.
//!
//! Per line (of `str.splitlines()`, stripped): drop it if a word is longer than
//! `max_word_length`; remove Wikipedia citations (`[1]`, `[edit]`, `[citation needed]`);
//! drop it without terminal punctuation (`. ? ! " '`, not `...`); with fewer than
//! `min_words_per_line` words; mentioning "javascript"; or holding a policy phrase ("terms
//! of use", "cookie policy", ...). Drop the document on "lorem ipsum" (`lorem_ipsum`) or a
//! `{` (`curly_bracket`) in a kept line, or when the kept lines hold fewer than
//! `min_num_sentences` sentences (`too_few_sentences`, spaCy sentencizer rules). Kept
//! documents get the kept lines joined by `\n` as their new text.
//!
//! Signals: `c4_lines`, `c4_lines_kept`, `c4_sentences`.
//!
//! ```toml
//! [[stages]]
//! type = "c4"
//! min_num_sentences = 5
//! ```

use std::sync::LazyLock;

use quern_core::stage::{Keeps, Threshold};
use regex::Regex;
use serde::Deserialize;

use crate::kernel::{DocKernel, Outcome};
use crate::text::{char_len, py_split_whitespace, py_splitlines, py_strip};
use crate::words::{sentences_in, WordTokenizer};

/// Configuration. Every field defaults to datatrove's value; `-1` disables a count rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct C4Config {
    /// Text column. Default `"text"`.
    pub column: String,
    /// Drop failing documents (`false`: still rewrite and write signals). Default `true`.
    pub drop: bool,
    /// Rewrite `text` to the kept lines. Default `true`.
    pub rewrite: bool,
    /// Remove `[1]`, `[edit]`, `[citation needed]`. Default `true`.
    pub remove_citations: bool,
    /// Drop lines without terminal punctuation. Default `true`.
    pub filter_no_terminal_punct: bool,
    /// Minimum sentences in the kept lines (-1 disables). Default 5.
    pub min_num_sentences: i64,
    /// Minimum words per kept line. Default 3.
    pub min_words_per_line: i64,
    /// Drop lines with a longer word (-1 disables). Default 1000.
    pub max_word_length: i64,
    /// Default `true`.
    pub filter_lorem_ipsum: bool,
    /// Default `true`.
    pub filter_javascript: bool,
    /// Default `true`.
    pub filter_curly_bracket: bool,
    /// Default `true`.
    pub filter_policy: bool,
}

impl Default for C4Config {
    fn default() -> Self {
        C4Config {
            column: "text".into(),
            drop: true,
            rewrite: true,
            remove_citations: true,
            filter_no_terminal_punct: true,
            min_num_sentences: 5,
            min_words_per_line: 3,
            max_word_length: 1000,
            filter_lorem_ipsum: true,
            filter_javascript: true,
            filter_curly_bracket: true,
            filter_policy: true,
        }
    }
}

static CITATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[\d*]|\[edit]|\[citation needed]").expect("citation regex"));
const POLICY: &[&str] = &[
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

/// The C4 kernel.
pub struct C4 {
    cfg: C4Config,
}

impl C4 {
    pub fn new(cfg: C4Config) -> Self {
        C4 { cfg }
    }
}

pub const SIGNALS: &[&str] = &["c4_lines", "c4_lines_kept", "c4_sentences"];

/// Per-worker buffers.
#[derive(Default)]
pub struct Scratch {
    lower: String,
    toks: Vec<&'static str>,
    doc_words: Vec<&'static str>,
}

/// Every lower-case phrase the line rules look for, in one pattern: a line without a match
/// (most lines) skips the eight separate searches.
static ANY_PHRASE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new("lorem ipsum|javascript|terms of use|privacy policy|cookie").expect("phrase regex")
});

impl DocKernel for C4 {
    type Scratch = Scratch;
    fn signals(&self) -> &[&'static str] {
        SIGNALS
    }
    fn thresholds(&self) -> Vec<Threshold> {
        // The only numeric cut on a signal: the sentences of the kept lines. The line rules
        // (`min_words_per_line`, `max_word_length`) cut lines, not documents. A count is
        // never negative, so a minimum of 0 or below (-1: disabled) rejects nothing.
        let min = self.cfg.min_num_sentences;
        (min > 0)
            .then(|| {
                Threshold::new(
                    SIGNALS[2],
                    Keeps::AtLeast,
                    min as f64,
                    "min_num_sentences",
                    "too_few_sentences",
                )
            })
            .into_iter()
            .collect()
    }
    fn rewrites_text(&self) -> bool {
        self.cfg.rewrite
    }
    fn eval(&self, text: &str, sc: &mut Scratch, s: &mut [f64]) -> Outcome {
        let c = &self.cfg;
        let tok = WordTokenizer::get();
        let mut kept = String::with_capacity(if c.rewrite { text.len() } else { 0 });
        let (mut n_lines, mut n_kept, mut sentences) = (0usize, 0usize, 0usize);
        let mut reason: Option<&'static str> = None;
        // The words of the whole text, if another stage split it already (the shared word
        // cache): every line boundary is whitespace to the splitter, so a line's words are
        // the text's words inside it, and its sentences are counted from those.
        // The buffer outlives no call: reuse its allocation with this call's lifetime.
        let mut doc_words: Vec<&str> = std::mem::take(&mut sc.doc_words);
        doc_words.clear();
        let have_doc = c.min_num_sentences != -1 && tok.cached_words(text, &mut doc_words);
        let off = |w: &str| w.as_ptr() as usize - text.as_ptr() as usize;
        let mut cursor = 0;
        for raw in py_splitlines(text) {
            n_lines += 1;
            let line0 = py_strip(raw);
            let mut n_words = 0i64;
            let mut too_long = false;
            for w in py_split_whitespace(line0) {
                n_words += 1;
                if c.max_word_length != -1 && char_len(w) as i64 > c.max_word_length {
                    too_long = true;
                }
            }
            if too_long {
                continue;
            }
            let cleaned;
            let line: &str = if c.remove_citations && line0.contains('[') {
                cleaned = CITATION.replace_all(line0, "");
                &cleaned
            } else {
                line0
            };
            if c.filter_no_terminal_punct
                && (!line.ends_with(['.', '?', '!', '"', '\'']) || line.ends_with("..."))
            {
                continue;
            }
            if n_words < c.min_words_per_line {
                continue;
            }
            sc.lower.clear();
            if line.is_ascii() {
                sc.lower.push_str(line);
                sc.lower.make_ascii_lowercase();
            } else {
                for ch in line.chars() {
                    sc.lower.extend(ch.to_lowercase());
                }
            }
            let l = sc.lower.as_str();
            // POLICY phrases all hold "cookie", "terms of use" or "privacy policy".
            let phrases = ANY_PHRASE.is_match(l);
            if c.filter_lorem_ipsum && phrases && l.contains("lorem ipsum") {
                reason = Some("lorem_ipsum");
                break;
            }
            if c.filter_javascript && phrases && l.contains("javascript") {
                continue;
            }
            if c.filter_curly_bracket && line.contains('{') {
                reason = Some("curly_bracket");
                break;
            }
            if c.filter_policy && phrases && POLICY.iter().any(|p| l.contains(p)) {
                continue;
            }
            let unchanged = line.len() == line0.len() && line.as_ptr() == line0.as_ptr();
            if have_doc && unchanged {
                let (a, b) = (off(line0), off(line0) + line0.len());
                while cursor < doc_words.len() && off(doc_words[cursor]) < a {
                    cursor += 1;
                }
                let first = cursor;
                while cursor < doc_words.len() && off(doc_words[cursor]) < b {
                    cursor += 1;
                }
                sentences += sentences_in(&doc_words[first..cursor]);
            } else if c.min_num_sentences != -1 {
                // The buffer outlives no line: reuse its allocation with this line's lifetime.
                let mut toks: Vec<&str> = std::mem::take(&mut sc.toks);
                sentences += tok.count_sentences(line, &mut toks);
                toks.clear();
                sc.toks = toks.into_iter().map(|_| "").collect();
            }
            if c.rewrite {
                if n_kept > 0 {
                    kept.push('\n');
                }
                kept.push_str(line);
            }
            n_kept += 1;
        }
        doc_words.clear();
        sc.doc_words = doc_words.into_iter().map(|_| "").collect();
        s[0] = n_lines as f64;
        s[1] = n_kept as f64;
        s[2] = sentences as f64;
        if let Some(r) = reason {
            s[1] = f64::NAN;
            s[2] = f64::NAN;
            return Outcome::reject(r);
        }
        if (sentences as i64) < c.min_num_sentences {
            return Outcome::reject("too_few_sentences");
        }
        let text = c.rewrite.then(|| py_strip(&kept).to_string());
        Outcome {
            reason: None,
            text,
            count: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Outcome {
        let k = C4::new(C4Config::default());
        let mut s = vec![f64::NAN; SIGNALS.len()];
        k.eval(text, &mut Scratch::default(), &mut s)
    }

    const PAGE: &str = "Home | About | Contact\n\
        The festival opens on Friday with a concert in the park.\n\
        Tickets are available at the town hall and online.\n\
        Please enable JavaScript to view the map of the venue.\n\
        Local bakeries will sell bread, cakes and pies all weekend.\n\
        The parade starts at noon and ends at the old bridge.\n\
        Parking is free near the station for the whole event.[1]\n\
        This site uses cookies to improve your experience.\n\
        Share";

    #[test]
    fn rewrites_lines_like_datatrove() {
        let o = run(PAGE);
        assert_eq!(o.reason, None);
        assert_eq!(
            o.text.as_deref(),
            Some(
                "The festival opens on Friday with a concert in the park.\n\
                 Tickets are available at the town hall and online.\n\
                 Local bakeries will sell bread, cakes and pies all weekend.\n\
                 The parade starts at noon and ends at the old bridge.\n\
                 Parking is free near the station for the whole event."
            )
        );
    }

    #[test]
    fn sentences_from_cached_words_match_line_splits() {
        // A text another stage has split: C4 counts each line's sentences from the text's
        // words instead of splitting the line again; the cited line is split afresh.
        let text = format!(
            "{PAGE}\nDr. Smith (the mayor) said: \"It's done.\" Then he left... Why? e.g. rain.\n\
             The U.S. team won 3-2 at 10:30 a.m. today. Fans cheered!! [citation needed] Again."
        );
        let k = C4::new(C4Config::default());
        let (mut a, mut b) = (vec![f64::NAN; 3], vec![f64::NAN; 3]);
        let fresh = k.eval(&text, &mut Scratch::default(), &mut a);
        let mut words = Vec::new();
        assert!(!WordTokenizer::get().cached_words(&text, &mut words));
        WordTokenizer::get().words_cached(&text, &mut words);
        let cached = k.eval(&text, &mut Scratch::default(), &mut b);
        assert_eq!(fresh, cached);
        assert_eq!(a, b);
        assert!(a[2] >= 9.0, "{a:?}");
    }

    #[test]
    fn table() {
        let cases: Vec<(String, Option<&str>)> = vec![
            (
                format!("{PAGE}\nLorem ipsum dolor sit amet, consectetur."),
                Some("lorem_ipsum"),
            ),
            (
                format!("{PAGE}\nfunction f() {{ return 1; }} is code."),
                Some("curly_bracket"),
            ),
            (
                "One sentence only here.\nAnd a second one here.".into(),
                Some("too_few_sentences"),
            ),
            (
                "Wait... is this all? No. It is not. Really! Yes.".into(),
                None,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(run(&text).reason.as_deref(), want, "{text:.60}");
        }
    }
}
