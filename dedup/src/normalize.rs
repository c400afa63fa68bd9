//! Text normalization before hashing, so that near-identical documents hash alike.
//!
//! Why: two copies of a page that differ in case, spacing, punctuation, accents or numbers
//! are the same document for training purposes. The defaults follow datatrove's
//! `simplify_text` (`datatrove/utils/text.py`), so quern and datatrove find the same
//! duplicates: lowercase, collapse whitespace to one space, remove punctuation, strip
//! combining marks after NFD decomposition, and replace every run of digits with `0`.
//!
//! One difference, on purpose: datatrove removes Unicode category `Mn` marks; we remove
//! every combining mark (`Mn`, `Mc`, `Me`) as `unicode-normalization` classifies them, which
//! differs only for a few spacing marks of Indic scripts.

use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Which normalizations to apply. Every field defaults to datatrove's `TextNormConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeConfig {
    /// Lowercase the text. Default `true`.
    pub lowercase: bool,
    /// Collapse every run of whitespace to one space and trim the ends. Default `true`.
    pub norm_whitespace: bool,
    /// Remove ASCII and common Unicode punctuation and control characters. Default `true`.
    pub remove_punctuation: bool,
    /// NFD-decompose and drop combining marks (`é` becomes `e`). Default `true`.
    pub norm_unicode_diacritics: bool,
    /// Replace every run of digits with `0`. Default `true`.
    pub norm_numbers: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            lowercase: true,
            norm_whitespace: true,
            remove_punctuation: true,
            norm_unicode_diacritics: true,
            norm_numbers: true,
        }
    }
}

impl NormalizeConfig {
    /// No normalization at all: the text is hashed byte for byte.
    pub fn none() -> Self {
        NormalizeConfig {
            lowercase: false,
            norm_whitespace: false,
            remove_punctuation: false,
            norm_unicode_diacritics: false,
            norm_numbers: false,
        }
    }

    /// True when [`normalize_into`] would return the text unchanged.
    pub fn is_identity(&self) -> bool {
        *self == Self::none()
    }
}

/// datatrove's punctuation set: ASCII punctuation, common CJK and typographic marks, and the
/// control characters 0–8, 11–31 and 127–159 (tab and newline are whitespace, not removed).
const PUNCTUATION: &str =
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»";

fn is_punctuation(c: char) -> bool {
    let u = c as u32;
    if u < 9 || u == 11 || u == 12 || (13..32).contains(&u) || (127..160).contains(&u) {
        return true;
    }
    if c.is_ascii_alphanumeric() || c == ' ' {
        return false;
    }
    PUNCTUATION.contains(c)
}

/// Normalizes `text` into `out` (cleared first). Reusing `out` across documents avoids an
/// allocation per document in the hot loop.
pub fn normalize_into(text: &str, cfg: &NormalizeConfig, out: &mut String) {
    out.clear();
    if cfg.is_identity() {
        out.push_str(text);
        return;
    }
    // One pass over the chars, in datatrove's order: lowercase, collapse whitespace, remove
    // punctuation, strip marks, fold digits. Whitespace is collapsed before punctuation is
    // removed, so "a — b" keeps two spaces, as in datatrove.
    let mut pending_space = false;
    let mut in_digits = false;
    let mut push = |c: char, out: &mut String| {
        if cfg.norm_numbers && c.is_ascii_digit() {
            if !in_digits {
                out.push('0');
            }
            in_digits = true;
            return;
        }
        in_digits = false;
        out.push(c);
    };
    let trimmed = if cfg.norm_whitespace {
        text.trim()
    } else {
        text
    };
    let mut emit = |c: char, out: &mut String| {
        if cfg.norm_whitespace && c.is_whitespace() {
            pending_space = true;
            return;
        }
        if pending_space {
            // The collapsed space is emitted even when punctuation follows (datatrove's order).
            push(' ', out);
            pending_space = false;
        }
        if cfg.remove_punctuation && is_punctuation(c) {
            return;
        }
        if cfg.norm_unicode_diacritics && !c.is_ascii() {
            for d in std::iter::once(c).nfd() {
                if !is_combining_mark(d) {
                    push(d, out);
                }
            }
            return;
        }
        push(c, out);
    };
    for ch in trimmed.chars() {
        if cfg.lowercase && !ch.is_ascii() {
            for l in ch.to_lowercase() {
                emit(l, out);
            }
        } else if cfg.lowercase {
            emit(ch.to_ascii_lowercase(), out);
        } else {
            emit(ch, out);
        }
    }
    // datatrove strips the result at the end (punctuation at an edge can leave a space).
    let end = out.trim_end().len();
    out.truncate(end);
    if out.starts_with(' ') {
        let start = out.len() - out.trim_start().len();
        out.drain(..start);
    }
}

/// Normalizes `text` into a new string. See [`normalize_into`].
pub fn normalize(text: &str, cfg: &NormalizeConfig) -> String {
    let mut out = String::with_capacity(text.len());
    normalize_into(text, cfg, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_datatrove_simplify_text() {
        // Expected values computed with datatrove's simplify_text (default TextNormConfig).
        let cases = [
            ("Hello,   World!", "hello world"),
            (
                "  Café au lait\n\tcosts 12.50 EUR ",
                "cafe au lait costs 0 eur",
            ),
            ("Don't stop — ever.", "dont stop  ever"),
            ("ÀÉÎõü 2024-01-31", "aeiou 0"),
            ("", ""),
            ("...", ""),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize(input, &NormalizeConfig::default()),
                want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn none_is_identity() {
        let s = "  Keep ME, 42 ";
        assert_eq!(normalize(s, &NormalizeConfig::none()), s);
    }

    #[test]
    fn each_switch_is_independent() {
        let only_lower = NormalizeConfig {
            lowercase: true,
            ..NormalizeConfig::none()
        };
        assert_eq!(normalize("AbC 12", &only_lower), "abc 12");
        let only_num = NormalizeConfig {
            norm_numbers: true,
            ..NormalizeConfig::none()
        };
        assert_eq!(normalize("a 123 b 4", &only_num), "a 0 b 0");
    }
}
