//! HTML to text: a page's main content as plain text with line structure, and its title,
//! language hint and description.
//!
//! Three steps, each in its own module:
//!
//! 1. [`charset`]: the bytes are decoded with the charset of the HTTP header, a `<meta>`
//!    tag, or, for undeclared pages, UTF-8 or `chardetng`'s guess.
//! 2. [`dom`]: html5ever parses the text as a browser would into a flat node arena.
//! 3. [`main_text`]: our own boilerplate removal. Scripts, styles, forms' controls, hidden
//!    elements, `<nav>`/`<aside>`/`<footer>`/`<header>` and elements whose class or id names
//!    navigation, sharing, comments, ads and the like are dropped; the remaining text is cut
//!    into blocks at block-level elements; blocks are scored as Readability does (length
//!    and commas, credited to the enclosing elements, weighted by tag and by class/id hints,
//!    discounted by link density); the best-scoring element and its qualifying siblings are
//!    the main content, and within it blocks made mostly of links are dropped.
//!
//! Paragraphs and headings come out separated by a blank line, list items and table rows
//! on lines of their own (cells separated by ` | `), `<br>` as a line break, `<pre>` as
//! written. Token-level F1 against newspaper4k's gold texts is measured in
//! `tests/it/web.rs` and `benches/web/` (see BENCHMARKS.md, `## web`).

pub mod charset;
mod dom;
mod main_text;
pub mod stage;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_and_style_contents_are_emptied_and_nothing_else() {
        let cases = [
            (
                "<p>a</p><script>var x = '<p>';</script><p>b</p>",
                "<p>a</p><script></script><p>b</p>",
            ),
            (
                "<SCRIPT type=x>1<2</Script ><style>p{}</style>",
                "<SCRIPT type=x></Script ><style></style>",
            ),
            (
                "<!-- <script> --><p>kept</p><script>x</script>",
                "<!-- <script> --><p>kept</p><script></script>",
            ),
            (
                "<scripts>text</scripts><stylesheet>t</stylesheet>",
                "<scripts>text</scripts><stylesheet>t</stylesheet>",
            ),
            ("<script>never closed", "<script>never closed"),
            ("<p>é</p><style>ü</style>ß", "<p>é</p><style></style>ß"),
        ];
        for (html, want) in cases {
            assert_eq!(strip_raw_text(html), want, "{html}");
        }
    }
}

pub use charset::CharsetSource;

use std::borrow::Cow;

/// Finds `needle` (ASCII, lowercase) in `hay` ignoring ASCII case.
fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut at = 0;
    while let Some(i) = memchr::memchr2(first, first.to_ascii_uppercase(), &hay[at..]) {
        let s = at + i;
        if hay.len() - s >= needle.len() && hay[s..s + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(s);
        }
        at = s + 1;
    }
    None
}

/// Empties the contents of `<script>` and `<style>` elements before parsing: they are never
/// text, and on script-heavy pages (megabytes of inline JavaScript) tokenizing them was most
/// of the parse. The elements themselves stay, so the tree is the one html5ever builds from
/// the page: their contents are raw text, which ends at the first `</script` (`</style`),
/// exactly where the cut ends. Comments are stepped over, so a `<script` inside one is not
/// taken for a tag.
fn strip_raw_text(html: &str) -> Cow<'_, str> {
    let b = html.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0usize;
    let mut at = 0usize;
    while let Some(i) = memchr::memchr(b'<', &b[at..]) {
        let lt = at + i;
        let rest = &b[lt + 1..];
        if rest.starts_with(b"!--") {
            at = match memchr::memmem::find(&rest[3..], b"-->") {
                Some(e) => lt + 4 + e + 3,
                None => break,
            };
            continue;
        }
        let name: &[u8] = if rest.len() > 6 && rest[..6].eq_ignore_ascii_case(b"script") {
            b"script"
        } else if rest.len() > 5 && rest[..5].eq_ignore_ascii_case(b"style") {
            b"style"
        } else {
            at = lt + 1;
            continue;
        };
        let after = rest[name.len()];
        if !(after.is_ascii_whitespace() || after == b'>' || after == b'/') {
            at = lt + 1;
            continue;
        }
        let Some(gt) = memchr::memchr(b'>', &b[lt..]).map(|g| lt + g + 1) else {
            break;
        };
        let mut close = Vec::with_capacity(name.len() + 2);
        close.extend_from_slice(b"</");
        close.extend_from_slice(name);
        let Some(end) = find_ci(&b[gt..], &close).map(|e| gt + e) else {
            break;
        };
        if end > gt {
            let o = out.get_or_insert_with(|| String::with_capacity(html.len() / 2));
            o.push_str(&html[copied..gt]);
            copied = end;
        }
        at = end + close.len();
    }
    match out {
        None => Cow::Borrowed(html),
        Some(mut o) => {
            o.push_str(&html[copied..]);
            Cow::Owned(o)
        }
    }
}

/// What [`extract`] found in a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The main text; empty when the page has none.
    pub text: String,
    /// `<title>`, else `og:title`.
    pub title: Option<String>,
    /// The page's declared language: `<html lang>`, else `Content-Language` or `og:locale`,
    /// lowercased (`en-us`). A hint from the page, not a detection.
    pub lang: Option<String>,
    /// `<meta name="description">`, else `og:description`.
    pub description: Option<String>,
    /// The charset the bytes were decoded with (an `encoding_rs` name, e.g. `UTF-8`,
    /// `windows-1252`, `Shift_JIS`).
    pub charset: &'static str,
    /// Where that charset came from.
    pub charset_source: CharsetSource,
}

/// Extracts the main text of an HTML page given as bytes. `content_type` is the HTTP
/// `Content-Type` header (its charset wins over the page's own declaration); `url` gives
/// the charset detector a top-level-domain hint.
pub fn extract(bytes: &[u8], content_type: Option<&str>, url: Option<&str>) -> Extracted {
    let (html, enc, src) = charset::decode(bytes, content_type, url);
    let mut e = extract_str(&html);
    e.charset = enc.name();
    e.charset_source = src;
    e
}

/// Extracts the main text of an already decoded page.
pub fn extract_str(html: &str) -> Extracted {
    let html = strip_raw_text(html);
    let d = dom::Dom::parse(&html);
    let m = main_text::main_text(&d);
    Extracted {
        text: m.text,
        title: m.title,
        lang: m.lang,
        description: m.description,
        charset: "UTF-8",
        charset_source: CharsetSource::Utf8,
    }
}
