//! Simple filters users expect next to the quality families: length bounds, URL/domain
//! block lists, regex keep/drop lists and word block lists.
//!
//! Why: most corpus builds start with these cheap, explainable cuts; having them as stages
//! means every drop is recorded with a reason like every other filter's.
//!
//! - `length`: characters (code points), words (whitespace-separated) and lines, each with
//!   an optional minimum and maximum (`too_few_chars`, `too_many_chars`, `too_few_words`,
//!   `too_many_words`, `too_few_lines`, `too_many_lines`); signals `length_chars`,
//!   `length_words`, `length_lines`.
//! - `url_filter`: the document URL (a JSON field of `meta`, or a column) checked against
//!   a domain list (a domain blocks itself and its subdomains) and URL substrings, from
//!   files (one entry per line, `#` comments) or inline (`domains`, `url_substrings`).
//! - `regex_filter`: drop documents matching any of `drop_patterns` (`regex_drop`), and,
//!   when `keep_patterns` are given, those matching none (`regex_no_keep`).
//! - `word_blocklist`: whole-word, case-insensitive matches of listed words; drop at
//!   `min_hits` or more (`blocked_words`); signal `blocklist_hits`.

use std::path::PathBuf;

use regex::{Regex, RegexSet};
use serde::Deserialize;

use quern_core::stage::{Keeps, Threshold};
use quern_core::{Error, Result};

use crate::kernel::{DocKernel, Outcome};
use crate::text::{char_len, py_split_whitespace, py_splitlines};

/// `length` configuration. Unset bounds are not checked.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LengthConfig {
    /// Text column. Default `"text"`.
    pub column: Option<String>,
    /// Drop failing documents. Default `true` (unset means true).
    pub drop: Option<bool>,
    /// Default: unset.
    pub min_chars: Option<usize>,
    /// Default: unset.
    pub max_chars: Option<usize>,
    /// Default: unset.
    pub min_words: Option<usize>,
    /// Default: unset.
    pub max_words: Option<usize>,
    /// Default: unset.
    pub min_lines: Option<usize>,
    /// Default: unset.
    pub max_lines: Option<usize>,
}

/// The `length` stage's signal columns.
const LENGTH_SIGNALS: [&str; 3] = ["length_chars", "length_words", "length_lines"];

/// The length kernel.
pub struct Length {
    pub cfg: LengthConfig,
}

impl DocKernel for Length {
    type Scratch = ();
    fn signals(&self) -> &[&'static str] {
        &LENGTH_SIGNALS
    }
    fn thresholds(&self) -> Vec<Threshold> {
        let c = &self.cfg;
        [
            (0, Keeps::AtLeast, c.min_chars, "min_chars", "too_few_chars"),
            (0, Keeps::AtMost, c.max_chars, "max_chars", "too_many_chars"),
            (1, Keeps::AtLeast, c.min_words, "min_words", "too_few_words"),
            (1, Keeps::AtMost, c.max_words, "max_words", "too_many_words"),
            (2, Keeps::AtLeast, c.min_lines, "min_lines", "too_few_lines"),
            (2, Keeps::AtMost, c.max_lines, "max_lines", "too_many_lines"),
        ]
        .into_iter()
        .filter_map(|(i, keeps, v, param, reason)| {
            Some(Threshold::new(
                LENGTH_SIGNALS[i],
                keeps,
                v? as f64,
                param,
                reason,
            ))
        })
        .collect()
    }
    fn eval(&self, text: &str, _: &mut (), s: &mut [f64]) -> Outcome {
        let c = &self.cfg;
        let chars = char_len(text);
        let words = py_split_whitespace(text).count();
        let lines = py_splitlines(text).count();
        s[0] = chars as f64;
        s[1] = words as f64;
        s[2] = lines as f64;
        let checks = [
            (c.min_chars.is_some_and(|m| chars < m), "too_few_chars"),
            (c.max_chars.is_some_and(|m| chars > m), "too_many_chars"),
            (c.min_words.is_some_and(|m| words < m), "too_few_words"),
            (c.max_words.is_some_and(|m| words > m), "too_many_words"),
            (c.min_lines.is_some_and(|m| lines < m), "too_few_lines"),
            (c.max_lines.is_some_and(|m| lines > m), "too_many_lines"),
        ];
        checks
            .iter()
            .find(|(hit, _)| *hit)
            .map_or_else(Outcome::keep, |(_, r)| Outcome::reject(*r))
    }
}

/// Reads a list file: one entry per line, blank lines and `#` comments skipped.
pub fn read_list(path: &PathBuf, key: &str) -> Result<Vec<String>> {
    let body = std::fs::read_to_string(path).map_err(|e| {
        Error::bad_config(
            key,
            format!("cannot read list file {}: {e}", path.display()),
        )
    })?;
    Ok(body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// `url_filter` configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UrlFilterConfig {
    /// Column holding the URL, or the JSON metadata. Default `"meta"`.
    pub column: String,
    /// Field of the JSON object in `column` holding the URL; empty: the column is the URL.
    /// Default `"url"`.
    pub json_field: String,
    /// Drop failing documents. Default `true`.
    pub drop: bool,
    /// Blocked domains, inline. Default empty.
    pub domains: Vec<String>,
    /// File of blocked domains, relative to the pipeline file. Default none.
    pub domains_file: Option<PathBuf>,
    /// Blocked URL substrings, inline. Default empty.
    pub url_substrings: Vec<String>,
    /// File of blocked URL substrings, relative to the pipeline file. Default none.
    pub url_substrings_file: Option<PathBuf>,
}

impl Default for UrlFilterConfig {
    fn default() -> Self {
        UrlFilterConfig {
            column: "meta".into(),
            json_field: "url".into(),
            drop: true,
            domains: Vec::new(),
            domains_file: None,
            url_substrings: Vec::new(),
            url_substrings_file: None,
        }
    }
}

/// The URL block-list kernel (reads the URL column, not the text).
pub struct UrlFilter {
    json_field: String,
    domains: std::collections::HashSet<String>,
    substrings: Vec<String>,
}

impl UrlFilter {
    pub fn new(cfg: &UrlFilterConfig, key: &str) -> Result<Self> {
        let mut domains: Vec<String> = cfg.domains.clone();
        if let Some(p) = &cfg.domains_file {
            domains.extend(read_list(p, &format!("{key}.domains_file"))?);
        }
        let mut substrings = cfg.url_substrings.clone();
        if let Some(p) = &cfg.url_substrings_file {
            substrings.extend(read_list(p, &format!("{key}.url_substrings_file"))?);
        }
        Ok(UrlFilter {
            json_field: cfg.json_field.clone(),
            domains: domains
                .into_iter()
                .map(|d| d.trim_start_matches("www.").to_ascii_lowercase())
                .collect(),
            substrings: substrings
                .into_iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
        })
    }
}

/// The host of a URL, lower-cased, without `www.`, user info or port.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.split(':').next()?;
    if host.is_empty() {
        return None;
    }
    Some(host.trim_start_matches("www.").to_ascii_lowercase())
}

impl DocKernel for UrlFilter {
    type Scratch = ();
    fn signals(&self) -> &[&'static str] {
        &[]
    }
    fn eval(&self, value: &str, _: &mut (), _: &mut [f64]) -> Outcome {
        let url: String = if self.json_field.is_empty() {
            value.to_string()
        } else {
            match serde_json::from_str::<serde_json::Value>(value) {
                Ok(v) => v
                    .get(&self.json_field)
                    .and_then(|u| u.as_str())
                    .unwrap_or("")
                    .to_string(),
                Err(_) => String::new(),
            }
        };
        if url.is_empty() {
            return Outcome::keep();
        }
        if let Some(host) = url_host(&url) {
            let mut h = host.as_str();
            loop {
                if self.domains.contains(h) {
                    return Outcome::reject("blocked_domain");
                }
                match h.split_once('.') {
                    Some((_, rest)) if rest.contains('.') || self.domains.contains(rest) => {
                        h = rest
                    }
                    _ => break,
                }
            }
        }
        let lower = url.to_ascii_lowercase();
        if self.substrings.iter().any(|s| lower.contains(s.as_str())) {
            return Outcome::reject("blocked_url");
        }
        Outcome::keep()
    }
}

/// `regex_filter` configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegexFilterConfig {
    /// Text column. Default `"text"`.
    pub column: String,
    /// Drop documents matching any of these. Default empty.
    pub drop_patterns: Vec<String>,
    /// When non-empty, drop documents matching none of these. Default empty.
    pub keep_patterns: Vec<String>,
}

impl Default for RegexFilterConfig {
    fn default() -> Self {
        RegexFilterConfig {
            column: "text".into(),
            drop_patterns: Vec::new(),
            keep_patterns: Vec::new(),
        }
    }
}

/// The regex keep/drop kernel.
pub struct RegexFilter {
    drop: RegexSet,
    keep: Option<RegexSet>,
}

impl RegexFilter {
    pub fn new(cfg: &RegexFilterConfig, key: &str) -> Result<Self> {
        let set = |pats: &[String], field: &str| {
            RegexSet::new(pats).map_err(|e| {
                Error::bad_config(format!("{key}.{field}"), format!("invalid regex: {e}"))
            })
        };
        let drop = set(&cfg.drop_patterns, "drop_patterns")?;
        let keep = if cfg.keep_patterns.is_empty() {
            None
        } else {
            Some(set(&cfg.keep_patterns, "keep_patterns")?)
        };
        Ok(RegexFilter { drop, keep })
    }
}

impl DocKernel for RegexFilter {
    type Scratch = ();
    fn signals(&self) -> &[&'static str] {
        &[]
    }
    fn eval(&self, text: &str, _: &mut (), _: &mut [f64]) -> Outcome {
        if self.drop.is_match(text) {
            return Outcome::reject("regex_drop");
        }
        if let Some(k) = &self.keep {
            if !k.is_match(text) {
                return Outcome::reject("regex_no_keep");
            }
        }
        Outcome::keep()
    }
}

/// `word_blocklist` configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WordBlocklistConfig {
    /// Text column. Default `"text"`.
    pub column: String,
    /// Drop failing documents. Default `true`.
    pub drop: bool,
    /// Blocked words or phrases, inline. Default empty.
    pub words: Vec<String>,
    /// File of blocked words (one per line), relative to the pipeline file. Default none.
    pub words_file: Option<PathBuf>,
    /// Drop at this many hits or more. Default 1.
    pub min_hits: usize,
}

impl Default for WordBlocklistConfig {
    fn default() -> Self {
        WordBlocklistConfig {
            column: "text".into(),
            drop: true,
            words: Vec::new(),
            words_file: None,
            min_hits: 1,
        }
    }
}

/// The word block-list kernel.
pub struct WordBlocklist {
    re: Option<Regex>,
    min_hits: usize,
}

impl WordBlocklist {
    pub fn new(cfg: &WordBlocklistConfig, key: &str) -> Result<Self> {
        let mut words = cfg.words.clone();
        if let Some(p) = &cfg.words_file {
            words.extend(read_list(p, &format!("{key}.words_file"))?);
        }
        let re = if words.is_empty() {
            None
        } else {
            let alts = words
                .iter()
                .map(|w| regex::escape(w))
                .collect::<Vec<_>>()
                .join("|");
            Some(
                Regex::new(&format!(r"(?i)(?:^|\W)(?:{alts})(?:\W|$)"))
                    .map_err(|e| Error::bad_config(format!("{key}.words"), e.to_string()))?,
            )
        };
        Ok(WordBlocklist {
            re,
            min_hits: cfg.min_hits.max(1),
        })
    }
}

impl DocKernel for WordBlocklist {
    type Scratch = ();
    fn signals(&self) -> &[&'static str] {
        &["blocklist_hits"]
    }
    fn thresholds(&self) -> Vec<Threshold> {
        // No words: nothing is ever blocked.
        self.re
            .as_ref()
            .map(|_| {
                Threshold::new(
                    "blocklist_hits",
                    Keeps::Below,
                    self.min_hits as f64,
                    "min_hits",
                    "blocked_words",
                )
            })
            .into_iter()
            .collect()
    }
    fn eval(&self, text: &str, _: &mut (), s: &mut [f64]) -> Outcome {
        let Some(re) = &self.re else {
            s[0] = 0.0;
            return Outcome::keep();
        };
        // Matches consume their flanking non-word character; count hits by restarting
        // just after each word so adjacent words are both found.
        let mut hits = 0;
        let mut at = 0;
        while let Some(m) = re.find_at(text, at) {
            hits += 1;
            let end = m.end();
            let back = text[..end]
                .chars()
                .next_back()
                .filter(|c| !c.is_alphanumeric() && *c != '_')
                .map_or(0, char::len_utf8);
            at = if end - back > m.start() {
                end - back
            } else {
                end
            };
            if at >= text.len() {
                break;
            }
        }
        s[0] = hits as f64;
        if hits >= self.min_hits {
            Outcome::reject("blocked_words")
        } else {
            Outcome::keep()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_table() {
        let k = Length {
            cfg: LengthConfig {
                min_words: Some(3),
                max_chars: Some(40),
                ..Default::default()
            },
        };
        let mut s = [0.0; 3];
        let cases: &[(&str, Option<&str>)] = &[
            ("three small words", None),
            ("two words", Some("too_few_words")),
            (
                "this line is far too long for the limit we set",
                Some("too_many_chars"),
            ),
        ];
        for (t, want) in cases {
            assert_eq!(k.eval(t, &mut (), &mut s).reason.as_deref(), *want, "{t}");
        }
        k.eval("a b\nc", &mut (), &mut s);
        assert_eq!(s, [5.0, 3.0, 2.0]);
    }

    #[test]
    fn url_blocklist() {
        let cfg = UrlFilterConfig {
            domains: vec!["spam.example".into()],
            url_substrings: vec!["/casino/".into()],
            ..Default::default()
        };
        let k = UrlFilter::new(&cfg, "stages[0]").unwrap();
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"url":"https://spam.example/page"}"#,
                Some("blocked_domain"),
            ),
            (
                r#"{"url":"http://www.blog.spam.example:8080/x"}"#,
                Some("blocked_domain"),
            ),
            (r#"{"url":"https://notspam.example/"}"#, None),
            (
                r#"{"url":"https://ok.example/casino/win"}"#,
                Some("blocked_url"),
            ),
            (r#"{"other":1}"#, None),
        ];
        for (m, want) in cases {
            assert_eq!(k.eval(m, &mut (), &mut []).reason.as_deref(), *want, "{m}");
        }
    }

    #[test]
    fn regex_and_words() {
        let cfg = RegexFilterConfig {
            drop_patterns: vec![r"(?i)buy now".into()],
            keep_patterns: vec!["the".into()],
            ..Default::default()
        };
        let k = RegexFilter::new(&cfg, "s").unwrap();
        assert_eq!(
            k.eval("BUY NOW the best", &mut (), &mut [])
                .reason
                .as_deref(),
            Some("regex_drop")
        );
        assert_eq!(
            k.eval("nothing here", &mut (), &mut []).reason.as_deref(),
            Some("regex_no_keep")
        );
        assert_eq!(k.eval("the end", &mut (), &mut []).reason, None);
        let bad = RegexFilterConfig {
            drop_patterns: vec!["(".into()],
            ..Default::default()
        };
        let e = RegexFilter::new(&bad, "stages[1]")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("stages[1].drop_patterns"), "{e}");

        let w = WordBlocklist::new(
            &WordBlocklistConfig {
                words: vec!["darn".into(), "heck".into()],
                min_hits: 2,
                ..Default::default()
            },
            "s",
        )
        .unwrap();
        let mut s = [0.0];
        assert_eq!(
            w.eval("Darn heck", &mut (), &mut s).reason.as_deref(),
            Some("blocked_words")
        );
        assert_eq!(s[0], 2.0);
        assert_eq!(w.eval("darned checking", &mut (), &mut s).reason, None);
        assert_eq!(s[0], 0.0);
    }
}
