//! HTML to text: a page's main content as plain text with line structure, and its title,
//! language hint and description.
//!
//! Three steps, each in its own module:
//!
//! 1. [`charset`]: the bytes are decoded with the charset of the HTTP header, a `<meta>`
//!    tag, or, for undeclared pages, UTF-8 or `chardetng`'s guess.
//! 2. [`dom`]: the text is parsed as a browser would into a flat node arena: our tokenizer
//!    ([`tokenize`]: bytes scanned with `memchr`, only the attributes the extraction reads
//!    kept, script and style text stepped over) feeds html5ever's tree builder.
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
mod tokenize;

pub use charset::CharsetSource;

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
    let d = dom::Dom::parse(html);
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
