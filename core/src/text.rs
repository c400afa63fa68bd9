//! Small text helpers shared by every reader of text files.

/// The UTF-8 byte-order mark Windows tools write at the start of text files.
pub const BOM: char = '\u{feff}';

/// `s` without a leading UTF-8 byte-order mark: readers call it on a file's first line (or
/// its whole text), so the first record of a file saved by Notepad or Excel reads like the
/// others.
pub fn strip_bom(s: &str) -> &str {
    s.strip_prefix(BOM).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_leading_mark_goes() {
        assert_eq!(super::strip_bom("\u{feff}{\"a\":1}"), "{\"a\":1}");
        assert_eq!(super::strip_bom("a\u{feff}"), "a\u{feff}");
        assert_eq!(super::strip_bom(""), "");
    }
}
