//! Python string semantics the filters need to agree with datatrove.
//!
//! datatrove's rules are written in Python: `len()` counts code points, `str.splitlines()`
//! splits on a dozen line boundaries, `str.strip()` strips Python whitespace (which includes
//! `\x1c`–`\x1f`), and its punctuation sets are explicit tables. Reproducing those exactly
//! here, once, keeps every filter's counts equal to datatrove's.

use std::sync::LazyLock;

/// Python's `str.isspace()` for one character.
#[inline]
pub fn py_isspace(c: char) -> bool {
    match c {
        ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c'..='\x1f' | '\u{85}' | '\u{a0}' => true,
        c if (c as u32) < 0x80 => false,
        c => c.is_whitespace(),
    }
}

/// Python's `str.strip()`.
#[inline]
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

/// Python's `str.lstrip()`.
#[inline]
pub fn py_lstrip(s: &str) -> &str {
    s.trim_start_matches(py_isspace)
}

/// Python's `str.rstrip()`.
#[inline]
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_isspace)
}

/// Python's `len()` of a str: the number of code points.
#[inline]
pub fn char_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// Python's `str.split()` without arguments: runs of whitespace separate, no empty parts.
pub fn py_split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_isspace).filter(|p| !p.is_empty())
}

/// Whether `c` ends a line for Python's `str.splitlines()`.
#[inline]
fn is_line_boundary(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\x0b'
            | '\x0c'
            | '\x1c'
            | '\x1d'
            | '\x1e'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Python's `str.splitlines()` (without `keepends`): `"\r\n"` is one boundary, and a
/// trailing boundary does not make an empty last line.
pub fn py_splitlines(s: &str) -> SplitLines<'_> {
    SplitLines { rest: s }
}

/// Bytes that start a line boundary (ASCII ones) or may (any non-ASCII lead byte).
const LINE_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = matches!(b as u8, b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1e) || b >= 0x80;
        b += 1;
    }
    t
};

/// Iterator of [`py_splitlines`].
pub struct SplitLines<'a> {
    rest: &'a str,
}

impl<'a> Iterator for SplitLines<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let bytes = self.rest.as_bytes();
        // Fast scan: every boundary starts with a byte marked in LINE_BYTE.
        let mut i = 0;
        while i < bytes.len() {
            while i < bytes.len() && !LINE_BYTE[bytes[i] as usize] {
                i += 1;
            }
            if i == bytes.len() {
                break;
            }
            let b = bytes[i];
            if b < 0x80 {
                let line = &self.rest[..i];
                let skip = if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                self.rest = &self.rest[i + skip..];
                return Some(line);
            }
            let c = self.rest[i..].chars().next().unwrap_or('\0');
            if is_line_boundary(c) {
                let line = &self.rest[..i];
                self.rest = &self.rest[i + c.len_utf8()..];
                return Some(line);
            }
            i += c.len_utf8();
        }
        let line = self.rest;
        self.rest = "";
        Some(line)
    }
}

/// Counts non-overlapping occurrences of `needle` (Python's `str.count`).
pub fn count_str(hay: &str, needle: &str) -> usize {
    memchr::memmem::find_iter(hay.as_bytes(), needle.as_bytes()).count()
}

/// A set of characters: a lookup table for ASCII and a sorted list above it.
#[derive(Debug, Clone)]
pub struct CharSet {
    ascii: [bool; 128],
    rest: Vec<char>,
}

impl CharSet {
    pub fn from_chars(chars: impl IntoIterator<Item = char>) -> Self {
        let mut ascii = [false; 128];
        let mut rest = Vec::new();
        for c in chars {
            if (c as u32) < 128 {
                ascii[c as usize] = true;
            } else {
                rest.push(c);
            }
        }
        rest.sort_unstable();
        rest.dedup();
        CharSet { ascii, rest }
    }

    #[inline]
    pub fn contains(&self, c: char) -> bool {
        if (c as u32) < 128 {
            self.ascii[c as usize]
        } else {
            self.rest.binary_search(&c).is_ok()
        }
    }
}

const PUNCT_TSV: &str = include_str!("../data/punctuation.tsv");

fn punct_table(name: &str) -> CharSet {
    let line = PUNCT_TSV
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .unwrap_or_else(|| panic!("filters/data/punctuation.tsv has no {name} line"));
    let hexes = line.split('\t').nth(1).unwrap_or("");
    CharSet::from_chars(hexes.split(' ').filter(|h| !h.is_empty()).map(|h| {
        char::from_u32(u32::from_str_radix(h, 16).expect("hex code point")).expect("valid char")
    }))
}

/// datatrove's `PUNCTUATION_SET` (its `PUNCTUATION` string, control characters and
/// `TERMINAL_PUNCTUATION`): a word made only of these is a "symbol word".
pub static PUNCTUATION_SET: LazyLock<CharSet> = LazyLock::new(|| {
    let mut p = punct_table("PUNCTUATION");
    let t = punct_table("TERMINAL");
    for (i, v) in t.ascii.iter().enumerate() {
        p.ascii[i] |= *v;
    }
    p.rest.extend(t.rest);
    p.rest.sort_unstable();
    p.rest.dedup();
    p
});

/// datatrove's `TERMINAL_PUNCTUATION`: FineWeb's default line stop characters.
pub static TERMINAL_PUNCTUATION: LazyLock<CharSet> = LazyLock::new(|| punct_table("TERMINAL"));

/// spaCy's sentencizer punctuation (`Sentencizer.default_punct_chars`).
pub static SENTENCE_PUNCT: LazyLock<CharSet> = LazyLock::new(|| punct_table("SENTENCIZER"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitlines_matches_python() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("a", &["a"]),
            ("a\n", &["a"]),
            ("a\n\nb", &["a", "", "b"]),
            ("a\r\nb\rc", &["a", "b", "c"]),
            ("a\u{2028}b\x0cc", &["a", "b", "c"]),
            ("\n", &[""]),
        ];
        for (s, want) in cases {
            let got: Vec<&str> = py_splitlines(s).collect();
            assert_eq!(&got, want, "{s:?}");
        }
    }

    #[test]
    fn strip_and_space_follow_python() {
        assert_eq!(py_strip("\x1c a \u{a0}"), "a");
        assert!(py_isspace('\u{3000}'));
        assert!(!py_isspace('\u{200b}'));
        assert_eq!(char_len("héllo"), 5);
        assert_eq!(
            py_split_whitespace(" a  b\tc ").collect::<Vec<_>>(),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn punctuation_tables_load() {
        assert!(PUNCTUATION_SET.contains('#'));
        assert!(PUNCTUATION_SET.contains('…'));
        assert!(PUNCTUATION_SET.contains('\x01'));
        assert!(!PUNCTUATION_SET.contains('a'));
        assert!(TERMINAL_PUNCTUATION.contains('。'));
        assert!(!TERMINAL_PUNCTUATION.contains('"'));
        assert!(SENTENCE_PUNCT.contains('!'));
        assert_eq!(count_str("a...b....", "..."), 2);
    }
}
