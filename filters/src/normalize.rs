//! Text normalization: Unicode normal form, control characters, whitespace and line
//! endings, and optional mojibake repair, with counts of what changed.
//!
//! Why: the same text arrives with different bytes (CRLF vs LF, NBSP vs space, decomposed
//! accents, UTF-8 read as Windows-1252); normalizing first makes dedup, filters and
//! tokenizers see one form. Counts are written as signals so the effect is auditable.
//!
//! Steps, in order: mojibake repair (`fix_mojibake`, off by default: text whose bytes were
//! UTF-8 decoded as Windows-1252 is re-decoded when that gives valid UTF-8 with fewer
//! mojibake markers); `\r\n` and `\r` to `\n`; control characters other than `\n` and `\t`
//! removed; Unicode normal form (`nfc` default, `nfkc`, or `none`); whitespace: other
//! horizontal spaces to ' ', runs of spaces collapsed, trailing spaces cut, more than two
//! consecutive newlines cut to two (`whitespace = true`).
//!
//! Signals: `normalize_mojibake_fixed` (0/1), `normalize_line_endings`,
//! `normalize_controls_removed`, `normalize_unicode_changed` (0/1),
//! `normalize_whitespace_changes`.

use serde::Deserialize;
use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

use crate::kernel::{DocKernel, Outcome};

/// Unicode normal forms.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    Nfc,
    Nfkc,
    None,
}

/// Configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NormalizeConfig {
    /// Text column. Default `"text"`.
    pub column: String,
    /// Unicode normal form. Default `nfc`.
    pub form: Form,
    /// Remove control characters (except `\n`, `\t`). Default `true`.
    pub remove_controls: bool,
    /// Normalize line endings to `\n`. Default `true`.
    pub line_endings: bool,
    /// Normalize horizontal whitespace and blank-line runs. Default `true`.
    pub whitespace: bool,
    /// Repair UTF-8 decoded as Windows-1252. Default `false`.
    pub fix_mojibake: bool,
}

impl Default for NormalizeConfig {
    fn default() -> Self {
        NormalizeConfig {
            column: "text".into(),
            form: Form::Nfc,
            remove_controls: true,
            line_endings: true,
            whitespace: true,
            fix_mojibake: false,
        }
    }
}

/// The normalization kernel.
pub struct Normalize {
    pub cfg: NormalizeConfig,
}

pub const SIGNALS: &[&str] = &[
    "normalize_mojibake_fixed",
    "normalize_line_endings",
    "normalize_controls_removed",
    "normalize_unicode_changed",
    "normalize_whitespace_changes",
];

/// Windows-1252 bytes 0x80–0x9F as Unicode (None: undefined in 1252).
const CP1252_HIGH: [Option<char>; 32] = [
    Some('€'),
    None,
    Some('‚'),
    Some('ƒ'),
    Some('„'),
    Some('…'),
    Some('†'),
    Some('‡'),
    Some('ˆ'),
    Some('‰'),
    Some('Š'),
    Some('‹'),
    Some('Œ'),
    None,
    Some('Ž'),
    None,
    None,
    Some('‘'),
    Some('’'),
    Some('“'),
    Some('”'),
    Some('•'),
    Some('–'),
    Some('—'),
    Some('˜'),
    Some('™'),
    Some('š'),
    Some('›'),
    Some('œ'),
    None,
    Some('ž'),
    Some('Ÿ'),
];

fn cp1252_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 0x80 || (0xA0..=0xFF).contains(&u) {
        return Some(u as u8);
    }
    CP1252_HIGH
        .iter()
        .position(|x| *x == Some(c))
        .map(|i| 0x80 + i as u8)
}

fn mojibake_markers(s: &str) -> usize {
    s.chars()
        .filter(|c| matches!(c, 'Ã' | 'Â' | 'â' | 'Å' | 'Ð' | 'Ñ' | '€' | '™' | 'œ' | 'ž'))
        .count()
}

/// Re-decodes text whose UTF-8 bytes were read as Windows-1252, when that is what happened.
pub fn fix_mojibake(s: &str) -> Option<String> {
    if !s.contains(['Ã', 'Â', 'â', 'Å', 'Ð', 'Ñ']) {
        return None;
    }
    let bytes: Option<Vec<u8>> = s.chars().map(cp1252_byte).collect();
    let fixed = String::from_utf8(bytes?).ok()?;
    (fixed != s && mojibake_markers(&fixed) < mojibake_markers(s)).then_some(fixed)
}

fn is_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{200b}' | '\u{feff}' | '\u{00ad}')
}

impl DocKernel for Normalize {
    type Scratch = ();
    fn signals(&self) -> &[&'static str] {
        SIGNALS
    }
    fn rewrites_text(&self) -> bool {
        true
    }
    fn eval(&self, text: &str, _: &mut (), s: &mut [f64]) -> Outcome {
        let c = &self.cfg;
        for v in s.iter_mut() {
            *v = 0.0;
        }
        let mut cur: std::borrow::Cow<str> = text.into();
        if c.fix_mojibake {
            if let Some(f) = fix_mojibake(&cur) {
                s[0] = 1.0;
                cur = f.into();
            }
        }
        if c.line_endings && cur.contains('\r') {
            s[1] = cur.matches('\r').count() as f64;
            cur = cur.replace("\r\n", "\n").replace('\r', "\n").into();
        }
        if c.remove_controls && cur.chars().any(is_control) {
            let before = cur.chars().count();
            let t: String = cur.chars().filter(|ch| !is_control(*ch)).collect();
            s[2] = (before - t.chars().count()) as f64;
            cur = t.into();
        }
        let normal = match c.form {
            Form::Nfc => is_nfc_quick(cur.chars()) == IsNormalized::Yes,
            Form::Nfkc => is_nfkc_quick(cur.chars()) == IsNormalized::Yes,
            Form::None => true,
        };
        if !normal {
            let t: String = match c.form {
                Form::Nfkc => cur.nfkc().collect(),
                _ => cur.nfc().collect(),
            };
            if t != cur {
                s[3] = 1.0;
                cur = t.into();
            }
        }
        if c.whitespace {
            let (t, changes) = normalize_whitespace(&cur);
            if changes > 0 {
                s[4] = changes as f64;
                cur = t.into();
            }
        }
        match cur {
            std::borrow::Cow::Borrowed(_) => Outcome::keep(),
            std::borrow::Cow::Owned(t) => Outcome {
                text: Some(t),
                ..Outcome::keep()
            },
        }
    }
}

/// Horizontal spaces to ' ', runs collapsed, trailing spaces cut, 3+ newlines to 2.
/// Returns the new text and how many edits were made.
pub fn normalize_whitespace(s: &str) -> (String, usize) {
    let mut out = String::with_capacity(s.len());
    let mut changes = 0;
    let mut pending_space = 0usize; // spaces seen since the last non-space
    let mut newlines = 0usize;
    for ch in s.chars() {
        if ch == '\n' {
            if pending_space > 0 {
                changes += 1;
                pending_space = 0;
            }
            newlines += 1;
            if newlines <= 2 {
                out.push('\n');
            } else {
                changes += 1;
            }
            continue;
        }
        if ch != '\n' && ch.is_whitespace() {
            if ch != ' ' && ch != '\t' {
                changes += 1;
            }
            pending_space += 1;
            continue;
        }
        if pending_space > 0 {
            if pending_space > 1 {
                changes += 1;
            }
            out.push(' ');
            pending_space = 0;
        }
        newlines = 0;
        out.push(ch);
    }
    if pending_space > 0 {
        changes += 1;
    }
    (out, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: NormalizeConfig, text: &str) -> (String, Vec<f64>) {
        let k = Normalize { cfg };
        let mut s = vec![f64::NAN; SIGNALS.len()];
        let o = k.eval(text, &mut (), &mut s);
        (o.text.unwrap_or_else(|| text.to_string()), s)
    }

    #[test]
    fn table() {
        let d = NormalizeConfig::default;
        let cases: Vec<(NormalizeConfig, &str, &str)> = vec![
            (d(), "plain text\nstays.", "plain text\nstays."),
            (d(), "cafe\u{301}", "café"),
            (d(), "a\r\nb\rc", "a\nb\nc"),
            (d(), "a\u{0}b\u{7}c", "abc"),
            (d(), "a  \u{a0} b  \nc\n\n\n\nd", "a b\nc\n\nd"),
            (
                NormalizeConfig {
                    form: Form::Nfkc,
                    ..d()
                },
                "ﬁne ①",
                "fine 1",
            ),
            (
                NormalizeConfig {
                    fix_mojibake: true,
                    ..d()
                },
                "cafÃ© dÃ©jÃ\u{a0} vu",
                "café déjà vu",
            ),
            (
                NormalizeConfig {
                    fix_mojibake: true,
                    ..d()
                },
                "Ã is a letter",
                "Ã is a letter",
            ),
        ];
        for (cfg, input, want) in cases {
            assert_eq!(run(cfg, input).0, want, "{input:?}");
        }
        let (_, s) = run(d(), "a\r\nb\u{7}");
        assert_eq!(&s[1..3], &[1.0, 1.0]);
    }
}
