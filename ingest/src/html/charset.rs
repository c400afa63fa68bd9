//! Decoding a page's bytes: which charset, and the text.
//!
//! The order is the one browsers follow (WHATWG "encoding sniffing", simplified): a byte
//! order mark; the charset of the HTTP `Content-Type` header; a `<meta charset>` or
//! `<meta http-equiv="Content-Type" content="…; charset=…">` in the first 4 KiB; then, when
//! nothing declared one, UTF-8 if the bytes are valid UTF-8, else `chardetng`'s guess (the
//! detector Firefox uses for undeclared legacy pages, given the URL's top-level domain as a
//! hint). Labels are resolved by `encoding_rs` (the WHATWG label table: `latin1` and
//! `iso-8859-1` mean windows-1252, as in browsers). A declared label that names no encoding
//! is ignored. Bytes invalid in the chosen encoding become U+FFFD; decoding never fails.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// Where the charset came from, for the `charset` column's consumers and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharsetSource {
    Bom,
    Header,
    Meta,
    /// Undeclared, valid UTF-8.
    Utf8,
    /// Undeclared, guessed by chardetng.
    Detected,
}

/// The charset label in a `Content-Type` value (`text/html; charset="utf-8"`).
pub fn charset_param(content_type: &str) -> Option<&str> {
    for part in content_type.split(';').skip(1) {
        let (k, v) = part.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("charset") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'').trim();
            if !v.is_empty() {
                return Some(v);
            }
        }
    }
    None
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// The charset a `<meta>` tag declares in the first 4 KiB (a byte scan, as the HTML
/// prescan does: no parsing).
pub fn meta_charset(bytes: &[u8]) -> Option<&'static Encoding> {
    let head = &bytes[..bytes.len().min(4096)];
    let mut at = 0;
    while let Some(i) = find_ci(&head[at..], b"<meta") {
        let start = at + i + 5;
        let end = head[start..]
            .iter()
            .position(|&c| c == b'>')
            .map_or(head.len(), |e| start + e);
        let tag = &head[start..end];
        if let Some(j) = find_ci(tag, b"charset") {
            let rest = &tag[j + 7..];
            let rest = rest.trim_ascii_start();
            if let Some(rest) = rest.strip_prefix(b"=") {
                let rest = rest.trim_ascii_start();
                let rest = rest
                    .strip_prefix(b"\"")
                    .or_else(|| rest.strip_prefix(b"'"))
                    .unwrap_or(rest);
                let len = rest
                    .iter()
                    .position(|&c| {
                        matches!(
                            c,
                            b'"' | b'\'' | b';' | b' ' | b'/' | b'>' | b'\t' | b'\n' | b'\r'
                        )
                    })
                    .unwrap_or(rest.len());
                if let Some(e) = Encoding::for_label(&rest[..len]) {
                    return Some(e);
                }
            }
        }
        at = end;
    }
    None
}

/// The URL's top-level domain, chardetng's hint (`.jp` pages are more likely Shift_JIS).
fn tld(url: Option<&str>) -> Option<&[u8]> {
    let host = url?.split_once("://")?.1;
    let host = host.split(['/', '?', '#', ':']).next()?;
    let t = host.rsplit('.').next()?;
    (!t.is_empty() && t.bytes().all(|c| c.is_ascii_alphabetic())).then_some(t.as_bytes())
}

/// Decodes a page. `header` is the HTTP `Content-Type` value, when known. A page that is
/// already UTF-8 is borrowed, not copied.
pub fn decode<'a>(
    bytes: &'a [u8],
    header: Option<&str>,
    url: Option<&str>,
) -> (Cow<'a, str>, &'static Encoding, CharsetSource) {
    let (enc, src) = match choose(bytes, header, url) {
        Choice::Utf8(text) => {
            return (Cow::Borrowed(text), encoding_rs::UTF_8, CharsetSource::Utf8)
        }
        Choice::Declared(enc, src) => (enc, src),
    };
    // `decode` strips a BOM of the encoding it sniffs, which wins over `enc` (as in
    // browsers); without a BOM it decodes with `enc`.
    let (text, used, _) = enc.decode(bytes);
    (text, used, src)
}

enum Choice<'a> {
    /// Undeclared and valid UTF-8 (checked once, here).
    Utf8(&'a str),
    Declared(&'static Encoding, CharsetSource),
}

fn choose<'a>(bytes: &'a [u8], header: Option<&str>, url: Option<&str>) -> Choice<'a> {
    if let Some((e, _)) = Encoding::for_bom(bytes) {
        return Choice::Declared(e, CharsetSource::Bom);
    }
    if let Some(e) = header
        .and_then(charset_param)
        .and_then(|l| Encoding::for_label(l.as_bytes()))
    {
        return Choice::Declared(utf16_as_utf8(e), CharsetSource::Header);
    }
    if let Some(e) = meta_charset(bytes) {
        return Choice::Declared(utf16_as_utf8(e), CharsetSource::Meta);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Choice::Utf8(text);
    }
    let mut det = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    det.feed(bytes, true);
    Choice::Declared(
        det.guess(tld(url), chardetng::Utf8Detection::Allow),
        CharsetSource::Detected,
    )
}

/// A UTF-16 label without a BOM is treated as UTF-8, as the HTML standard says for `<meta>`
/// (a page that really is UTF-16 has a BOM, which wins first).
fn utf16_as_utf8(e: &'static Encoding) -> &'static Encoding {
    if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE {
        encoding_rs::UTF_8
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charset_comes_from_bom_header_meta_or_detection_in_that_order() {
        let latin = b"<html><head><meta charset=\"iso-8859-1\"></head><body>caf\xe9</body></html>";
        let (t, e, s) = decode(latin, None, None);
        assert_eq!((e.name(), s), ("windows-1252", CharsetSource::Meta));
        assert!(t.contains("café"), "{t}");
        // The header wins over the meta tag.
        let (_, e, s) = decode(latin, Some("text/html; charset=\"KOI8-R\""), None);
        assert_eq!((e.name(), s), ("KOI8-R", CharsetSource::Header));
        // An unknown label in the header is ignored.
        let (_, e, s) = decode(latin, Some("text/html; charset=nonsense"), None);
        assert_eq!((e.name(), s), ("windows-1252", CharsetSource::Meta));
        let http_equiv = b"<meta http-equiv=Content-Type content='text/html; charset=Shift_JIS'>";
        assert_eq!(
            meta_charset(http_equiv).map(|e| e.name()),
            Some("Shift_JIS")
        );
        let (_, e, s) = decode(
            "\u{feff}<p>é</p>".as_bytes(),
            Some("text/html; charset=latin1"),
            None,
        );
        assert_eq!((e.name(), s), ("UTF-8", CharsetSource::Bom));
        let (_, e, s) = decode("<p>naïve</p>".as_bytes(), None, None);
        assert_eq!((e.name(), s), ("UTF-8", CharsetSource::Utf8));
    }

    #[test]
    fn an_undeclared_legacy_page_is_detected() {
        // Russian in windows-1251 with no declaration anywhere.
        let text =
            "Москва — столица России, крупнейший по численности населения город страны. ".repeat(4);
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(&text);
        let (t, e, s) = decode(&bytes, Some("text/html"), Some("http://example.ru/a"));
        assert_eq!(s, CharsetSource::Detected);
        assert_eq!(e.name(), "windows-1251");
        assert_eq!(t, text);
    }

    #[test]
    fn content_type_parameters() {
        assert_eq!(charset_param("text/html; charset=UTF-8"), Some("UTF-8"));
        assert_eq!(charset_param("text/html;CHARSET='gbk' ; x=y"), Some("gbk"));
        assert_eq!(charset_param("text/html"), None);
        assert_eq!(tld(Some("https://www.asahi.co.jp:443/x")), Some(&b"jp"[..]));
    }
}
