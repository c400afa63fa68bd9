//! The HTML tokenizer in front of html5ever's tree builder.
//!
//! html5ever's own tokenizer walks the input one `char` at a time through a queue of
//! tendrils, copies every script, and keeps every attribute of every tag: on real news pages
//! most of the bytes are inline JavaScript, and most of the rest attributes (`data-*` JSON,
//! long `srcset` and `class` lists) that the extraction never reads. This one scans bytes
//! with `memchr`, steps over the text of comments and of `<script>`, `<style>`, `<noscript>`
//! and `<iframe>` ([`DROPPED_TEXT`]) without copying it, and keeps only the attributes in
//! [`kept_attr`] (those [`super::main_text`] reads and those the tree builder looks at). Its
//! tokens go to the same [`TreeBuilder`](html5ever::tree_builder::TreeBuilder), so tree
//! construction (implied end tags, misnesting, foster parenting, foreign content) is
//! html5ever's, unchanged.
//!
//! Tokenization follows the WHATWG states where they change the tree: character references
//! (named, with the longest-prefix and attribute rules, and numeric, with the C1 and invalid
//! replacements), CR/LF normalisation, NUL handling, tag and attribute name lowercasing,
//! duplicate attributes (the first wins), unquoted and quoted values, self-closing tags, an
//! unterminated tag at the end of input (dropped), the RCDATA/RAWTEXT/script/PLAINTEXT text
//! modes the tree builder switches to, comments and bogus comments (sent empty), `DOCTYPE`
//! (name, public and system identifiers, force-quirks: the tree builder derives quirks mode
//! from them) and CDATA sections in foreign content. Script data is ended by its first
//! `</script>` (the escape states for `<!--` inside scripts are not followed). The tests
//! below check the trees against html5ever's own tokenizer on hand-written and generated
//! markup.

use html5ever::data::{C1_REPLACEMENTS, NAMED_ENTITIES};
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{Doctype, Tag, TagKind, Token, TokenSink, TokenSinkResult};
use html5ever::{local_name, ns, Attribute, LocalName, QualName};

/// Raw-text elements whose text the extraction never reads: it is stepped over without a
/// copy (on script-heavy pages, megabytes of inline JavaScript), and the element stays in the
/// tree, empty.
const DROPPED_TEXT: &[&str] = &["script", "style", "noscript", "iframe"];

/// Whether `</name` followed by whitespace, `/` or `>` (the end tag of a raw-text element)
/// starts at `p`. The name is matched ignoring ASCII case.
fn is_end_tag(b: &[u8], p: usize, name: &str) -> bool {
    let n = name.len();
    b.len() > p + 2 + n
        && b[p + 1] == b'/'
        && b[p + 2..p + 2 + n].eq_ignore_ascii_case(name.as_bytes())
        && matches!(b[p + 2 + n], b'\t' | b'\n' | b'\x0C' | b' ' | b'/' | b'>')
}

/// Whitespace as the tokenizer sees it (CR is gone after newline normalisation).
fn is_ws(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | b'\x0C' | b' ')
}

/// The first index at or after `i` that is not HTML whitespace (`b.len()` when none is).
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// Where text goes between tags.
enum Mode {
    Data,
    /// RCDATA (`rcdata`: character references decoded), RAWTEXT or script data, ended by
    /// `</name`.
    Raw {
        rcdata: bool,
        name: String,
    },
    Plaintext,
}

/// Tokenizes `html` into `sink` (html5ever's tree builder), then ends it.
pub(crate) fn tokenize<S: TokenSink>(html: &str, sink: &S) {
    let html = html.strip_prefix('\u{feff}').unwrap_or(html);
    let normalized;
    let html = if memchr::memchr(b'\r', html.as_bytes()).is_some() {
        normalized = html.replace("\r\n", "\n").replace('\r', "\n");
        normalized.as_str()
    } else {
        html
    };
    let mut t = Tokenizer {
        s: html,
        b: html.as_bytes(),
        at: 0,
        text: StrTendril::new(),
        sink,
    };
    let mut mode = Mode::Data;
    while t.at < t.b.len() {
        mode = match mode {
            Mode::Data => t.data(),
            Mode::Raw { rcdata, name } => t.raw(rcdata, name),
            Mode::Plaintext => {
                t.push_replacing_nul(t.at, t.b.len());
                t.at = t.b.len();
                Mode::Plaintext
            }
        };
    }
    t.flush();
    let _ = t.sink.process_token(Token::EOFToken, 1);
    t.sink.end();
}

struct Tokenizer<'a, S> {
    s: &'a str,
    b: &'a [u8],
    /// The next byte to read.
    at: usize,
    /// Text not yet sent (one character token per run of text between other tokens).
    text: StrTendril,
    sink: &'a S,
}

impl<S: TokenSink> Tokenizer<'_, S> {
    fn flush(&mut self) {
        if !self.text.is_empty() {
            let t = std::mem::take(&mut self.text);
            let _ = self.sink.process_token(Token::CharacterTokens(t), 1);
        }
    }

    fn push(&mut self, from: usize, to: usize) {
        if from < to {
            self.text.push_slice(&self.s[from..to]);
        }
    }

    /// Text outside the data state: NUL becomes U+FFFD.
    fn push_replacing_nul(&mut self, mut from: usize, to: usize) {
        while let Some(k) = memchr::memchr(0, &self.b[from..to]) {
            self.push(from, from + k);
            self.text.push_char('\u{fffd}');
            from += k + 1;
        }
        self.push(from, to);
    }

    /// Text in the data state (or a CDATA section): NUL is a token of its own, which the tree
    /// builder drops or keeps depending on where it is.
    fn push_data(&mut self, mut from: usize, to: usize) {
        while let Some(k) = memchr::memchr(0, &self.b[from..to]) {
            self.push(from, from + k);
            self.flush();
            let _ = self.sink.process_token(Token::NullCharacterToken, 1);
            from += k + 1;
        }
        self.push(from, to);
    }

    /// A character reference at `self.at` (just after `&`) in text, else a literal `&`.
    fn text_charref(&mut self) {
        match charref(self.b, self.at, self.b.len(), false) {
            Some((len, c1, c2)) => {
                self.text.push_char(c1);
                if let Some(c2) = c2 {
                    self.text.push_char(c2);
                }
                self.at += len;
            }
            None => self.text.push_char('&'),
        }
    }

    /// The data state, until the input ends or a start tag switches the text mode.
    fn data(&mut self) -> Mode {
        while self.at < self.b.len() {
            let Some(k) = memchr::memchr3(b'<', b'&', 0, &self.b[self.at..]) else {
                self.push(self.at, self.b.len());
                self.at = self.b.len();
                break;
            };
            let p = self.at + k;
            self.push(self.at, p);
            self.at = p + 1;
            match self.b[p] {
                0 => self.push_data(p, p + 1),
                b'&' => self.text_charref(),
                _ => {
                    if let Some(m) = self.markup(p) {
                        return m;
                    }
                }
            }
        }
        Mode::Data
    }

    /// RCDATA, RAWTEXT and script data: text up to the end tag named `name`.
    fn raw(&mut self, rcdata: bool, name: String) -> Mode {
        if DROPPED_TEXT.contains(&name.as_str()) {
            return self.skip_raw(&name);
        }
        while self.at < self.b.len() {
            let rest = &self.b[self.at..];
            let found = if rcdata {
                memchr::memchr2(b'<', b'&', rest)
            } else {
                memchr::memchr(b'<', rest)
            };
            let Some(k) = found else {
                self.push_replacing_nul(self.at, self.b.len());
                self.at = self.b.len();
                break;
            };
            let p = self.at + k;
            self.push_replacing_nul(self.at, p);
            self.at = p + 1;
            if self.b[p] == b'&' {
                self.text_charref();
                continue;
            }
            if is_end_tag(self.b, p, &name) {
                return self.tag(p + 2, TagKind::EndTag).unwrap_or(Mode::Data);
            }
            self.text.push_char('<');
        }
        Mode::Raw { rcdata, name }
    }

    /// The raw text of an element in [`DROPPED_TEXT`]: stepped over to its end tag, sent
    /// nowhere.
    fn skip_raw(&mut self, name: &str) -> Mode {
        let finder = memchr::memmem::Finder::new(b"</");
        while let Some(k) = finder.find(&self.b[self.at..]) {
            let p = self.at + k;
            self.at = p + 1;
            if is_end_tag(self.b, p, name) {
                return self.tag(p + 2, TagKind::EndTag).unwrap_or(Mode::Data);
            }
        }
        self.at = self.b.len();
        Mode::Data
    }

    /// Markup at a `<` at `p` (`self.at` is just after it). Returns the new text mode when a
    /// start tag changes it.
    fn markup(&mut self, p: usize) -> Option<Mode> {
        let b = self.b;
        match b.get(p + 1) {
            Some(c) if c.is_ascii_alphabetic() => return self.tag(p + 1, TagKind::StartTag),
            Some(b'/') => match b.get(p + 2) {
                Some(c) if c.is_ascii_alphabetic() => return self.tag(p + 2, TagKind::EndTag),
                // `</>` is dropped. html5ever's tokenizer reports it as an error, which ends
                // the tree builder's skipping of a newline right after `<pre>`: so here.
                Some(b'>') => {
                    self.flush();
                    let _ = self
                        .sink
                        .process_token(Token::ParseError("empty end tag".into()), 1);
                    self.at = p + 3;
                }
                None => {
                    self.text.push_slice("</");
                    self.at = p + 2;
                }
                Some(_) => {
                    self.comment();
                    self.at = after_gt(b, p + 2);
                }
            },
            Some(b'!') => self.at = self.declaration(p + 2),
            Some(b'?') => {
                self.comment();
                self.at = after_gt(b, p + 1);
            }
            _ => self.text.push_char('<'),
        }
        None
    }

    /// After `<!` at `q`: a comment, a DOCTYPE, a CDATA section or a bogus comment. Returns
    /// where the data state resumes.
    fn declaration(&mut self, q: usize) -> usize {
        let b = self.b;
        let rest = &b[q..];
        if rest.starts_with(b"--") {
            self.comment();
            return comment_end(b, q + 2);
        }
        if rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b"doctype") {
            return self.doctype(q + 7);
        }
        if rest.starts_with(b"[CDATA[")
            && self
                .sink
                .adjusted_current_node_present_but_not_in_html_namespace()
        {
            let from = q + 7;
            return match memchr::memmem::find(&b[from..], b"]]>") {
                Some(e) => {
                    self.push_data(from, from + e);
                    from + e + 3
                }
                None => {
                    self.push_data(from, b.len());
                    b.len()
                }
            };
        }
        self.comment();
        after_gt(b, q)
    }

    /// A comment, sent without its text (never read). It is still sent: a comment ends a
    /// run of text inside a table, where the tree builder decides whether the run is moved
    /// out of the table (foster parenting).
    fn comment(&mut self) {
        self.flush();
        let _ = self
            .sink
            .process_token(Token::CommentToken(StrTendril::new()), 1);
    }

    /// A DOCTYPE whose name starts at `q` (after the keyword).
    fn doctype(&mut self, q: usize) -> usize {
        let b = self.b;
        let (end, next, mut force_quirks) = match memchr::memchr(b'>', &b[q..]) {
            Some(g) => (q + g, q + g + 1, false),
            None => (b.len(), b.len(), true),
        };
        let body = &self.s[q..end];
        let body = body.trim_start_matches(is_ws_char);
        let mut d = Doctype::default();
        if body.is_empty() {
            force_quirks = true;
        } else {
            let name_end = body.find(is_ws_char).unwrap_or(body.len());
            d.name = Some(lower_tendril(&body[..name_end]));
            let rest = body[name_end..].trim_start_matches(is_ws_char);
            if !rest.is_empty() {
                let keyword = |k: &str| {
                    rest.len() >= k.len()
                        && rest.as_bytes()[..k.len()].eq_ignore_ascii_case(k.as_bytes())
                };
                if keyword("public") {
                    let (id, after, ok) = quoted_id(&rest[6..]);
                    d.public_id = id;
                    force_quirks |= !ok;
                    if ok && !after.is_empty() {
                        let (id, _, ok) = quoted_id(after);
                        d.system_id = id;
                        force_quirks |= !ok;
                    }
                } else if keyword("system") {
                    let (id, _, ok) = quoted_id(&rest[6..]);
                    d.system_id = id;
                    force_quirks |= !ok;
                } else {
                    force_quirks = true;
                }
            }
        }
        d.force_quirks = force_quirks;
        self.flush();
        let _ = self.sink.process_token(Token::DoctypeToken(d), 1);
        next
    }

    /// A start or end tag whose name starts at `j`. Sends it and returns the text mode the
    /// tree builder asks for after a start tag; a tag cut off by the end of input is dropped.
    fn tag(&mut self, j: usize, kind: TagKind) -> Option<Mode> {
        let (b, len) = (self.b, self.b.len());
        let mut i = j;
        while i < len && !matches!(b[i], b'\t' | b'\n' | b'\x0C' | b' ' | b'/' | b'>') {
            i += 1;
        }
        let name = tag_name(&self.s[j..i]);
        let mut attrs: Vec<Attribute> = Vec::new();
        let mut self_closing = false;
        loop {
            i = skip_ws(b, i);
            if i >= len {
                self.at = len;
                return None;
            }
            match b[i] {
                b'/' => {
                    i += 1;
                    if b.get(i) == Some(&b'>') {
                        self_closing = true;
                        i += 1;
                        break;
                    }
                    continue;
                }
                b'>' => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            // The attribute's name; its first character may be `=`.
            let an = i;
            i += 1;
            while i < len && !matches!(b[i], b'\t' | b'\n' | b'\x0C' | b' ' | b'/' | b'>' | b'=') {
                i += 1;
            }
            let an_end = i;
            i = skip_ws(b, i);
            let mut value = (i, i);
            if i < len && b[i] == b'=' {
                i += 1;
                i = skip_ws(b, i);
                if i >= len {
                    self.at = len;
                    return None;
                }
                match b[i] {
                    q @ (b'"' | b'\'') => {
                        let Some(e) = memchr::memchr(q, &b[i + 1..]) else {
                            self.at = len;
                            return None;
                        };
                        value = (i + 1, i + 1 + e);
                        i += e + 2;
                    }
                    b'>' => {}
                    _ => {
                        let vs = i;
                        while i < len && !matches!(b[i], b'\t' | b'\n' | b'\x0C' | b' ' | b'>') {
                            i += 1;
                        }
                        value = (vs, i);
                    }
                }
            }
            if kind == TagKind::EndTag {
                continue;
            }
            let Some(kept) = kept_attr(&name, &b[an..an_end]) else {
                continue;
            };
            if attrs.iter().any(|a| a.name.local == kept) {
                continue;
            }
            attrs.push(Attribute {
                name: QualName::new(None, ns!(), kept),
                value: self.attr_value(value.0, value.1),
            });
        }
        self.at = i;
        self.flush();
        let token = Token::TagToken(Tag {
            kind,
            name: name.clone(),
            self_closing,
            attrs,
            had_duplicate_attributes: false,
        });
        match self.sink.process_token(token, 1) {
            _ if kind == TagKind::EndTag => None,
            TokenSinkResult::RawData(raw) => Some(Mode::Raw {
                rcdata: matches!(raw, RawKind::Rcdata),
                name: (*name).to_owned(),
            }),
            TokenSinkResult::Plaintext => Some(Mode::Plaintext),
            _ => None,
        }
    }

    /// An attribute value (`from..to` of the input) with character references decoded and
    /// NUL replaced.
    fn attr_value(&self, from: usize, to: usize) -> StrTendril {
        let b = &self.b[..to];
        let mut v = StrTendril::new();
        let mut at = from;
        while let Some(k) = memchr::memchr2(b'&', 0, &b[at..]) {
            let p = at + k;
            v.push_slice(&self.s[at..p]);
            at = p + 1;
            if b[p] == 0 {
                v.push_char('\u{fffd}');
                continue;
            }
            match charref(b, at, to, true) {
                Some((len, c1, c2)) => {
                    v.push_char(c1);
                    if let Some(c2) = c2 {
                        v.push_char(c2);
                    }
                    at += len;
                }
                None => v.push_char('&'),
            }
        }
        v.push_slice(&self.s[at..to]);
        v
    }
}

fn is_ws_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0C' | ' ')
}

/// Attributes kept on tags: those the extraction reads (`class`, `id`, `style`, `role`,
/// `hidden`, `aria-hidden`, `itemprop` anywhere; `lang` of `<html>`; `name`, `property`,
/// `http-equiv`, `content` of `<meta>`) and those the tree builder looks at (`type` of
/// `<input>`, `encoding` of `<annotation-xml>`, `color`/`face`/`size` of `<font>`,
/// `shadowrootmode` of `<template>`). Every other attribute is skipped without being copied.
/// Returns the attribute's atom when `name` (any ASCII case) is kept on element `tag`.
fn kept_attr(tag: &LocalName, name: &[u8]) -> Option<LocalName> {
    let mut buf = [0u8; 16];
    if name.len() > buf.len() {
        return None;
    }
    let buf = &mut buf[..name.len()];
    buf.copy_from_slice(name);
    buf.make_ascii_lowercase();
    let (attr, on) = match &*buf {
        b"class" => (local_name!("class"), None),
        b"id" => (local_name!("id"), None),
        b"style" => (local_name!("style"), None),
        b"role" => (local_name!("role"), None),
        b"hidden" => (local_name!("hidden"), None),
        b"aria-hidden" => (local_name!("aria-hidden"), None),
        b"itemprop" => (local_name!("itemprop"), None),
        b"lang" => (local_name!("lang"), Some(local_name!("html"))),
        b"xml:lang" => (local_name!("xml:lang"), Some(local_name!("html"))),
        b"name" => (local_name!("name"), Some(local_name!("meta"))),
        b"property" => (local_name!("property"), Some(local_name!("meta"))),
        b"http-equiv" => (local_name!("http-equiv"), Some(local_name!("meta"))),
        b"content" => (local_name!("content"), Some(local_name!("meta"))),
        b"type" => (local_name!("type"), Some(local_name!("input"))),
        b"encoding" => (local_name!("encoding"), Some(local_name!("annotation-xml"))),
        b"color" => (local_name!("color"), Some(local_name!("font"))),
        b"face" => (local_name!("face"), Some(local_name!("font"))),
        b"size" => (local_name!("size"), Some(local_name!("font"))),
        b"shadowrootmode" => (local_name!("shadowrootmode"), Some(local_name!("template"))),
        _ => return None,
    };
    match on {
        Some(t) if t != *tag => None,
        _ => Some(attr),
    }
}

/// A tag's name as the tokenizer gives it: ASCII letters lowercased, NUL replaced. The
/// commonest names are atoms without a lookup.
fn tag_name(s: &str) -> LocalName {
    if s.bytes().any(|c| c.is_ascii_uppercase() || c == 0) {
        return LocalName::from(&*lower_tendril(s));
    }
    match s {
        "a" => local_name!("a"),
        "div" => local_name!("div"),
        "span" => local_name!("span"),
        "p" => local_name!("p"),
        "li" => local_name!("li"),
        "img" => local_name!("img"),
        "br" => local_name!("br"),
        "td" => local_name!("td"),
        "tr" => local_name!("tr"),
        _ => LocalName::from(s),
    }
}

/// A name lowercased (ASCII only, as the tokenizer does), NUL replaced.
fn lower_tendril(s: &str) -> StrTendril {
    let mut t = StrTendril::new();
    if s.bytes().all(|c| !c.is_ascii_uppercase() && c != 0) {
        t.push_slice(s);
        return t;
    }
    for c in s.chars() {
        t.push_char(if c == '\0' {
            '\u{fffd}'
        } else {
            c.to_ascii_lowercase()
        });
    }
    t
}

/// A DOCTYPE identifier after its keyword: the quoted text, what follows it, and whether it
/// was well formed (a missing quote sets force-quirks).
fn quoted_id(s: &str) -> (Option<StrTendril>, &str, bool) {
    let s = s.trim_start_matches(is_ws_char);
    let Some(q) = s.chars().next().filter(|c| matches!(c, '"' | '\'')) else {
        return (None, "", false);
    };
    match s[1..].find(q) {
        Some(e) => (
            Some(StrTendril::from_slice(&s[1..1 + e])),
            s[2 + e..].trim_start_matches(is_ws_char),
            true,
        ),
        // The identifier ran into the `>`: kept, with force-quirks.
        None => (Some(StrTendril::from_slice(&s[1..])), "", false),
    }
}

/// Just after the first `>` at or after `from` (the end of a bogus comment), or the end.
fn after_gt(b: &[u8], from: usize) -> usize {
    memchr::memchr(b'>', &b[from..]).map_or(b.len(), |g| from + g + 1)
}

/// Where a comment whose text starts at `q` (after `<!--`) ends: after `-->` or `--!>`;
/// `<!-->` and `<!--->` are empty comments. An unterminated comment runs to the end.
fn comment_end(b: &[u8], q: usize) -> usize {
    let rest = &b[q..];
    if rest.starts_with(b">") {
        return q + 1;
    }
    if rest.starts_with(b"->") {
        return q + 2;
    }
    for g in memchr::memchr_iter(b'>', rest) {
        if (g >= 2 && &rest[g - 2..g] == b"--") || (g >= 3 && &rest[g - 3..g] == b"--!") {
            return q + g + 1;
        }
    }
    b.len()
}

/// A character reference at `at` (just after the `&`), reading no further than `end`:
/// its length in bytes and the one or two characters it stands for, or `None` when the
/// `&` is literal. `in_attr` applies the attribute rule: a named reference without `;`
/// followed by `=` or an alphanumeric is not decoded.
fn charref(b: &[u8], at: usize, end: usize, in_attr: bool) -> Option<(usize, char, Option<char>)> {
    let c = *b[..end].get(at)?;
    if c == b'#' {
        return numeric_charref(&b[..end], at);
    }
    if !c.is_ascii_alphanumeric() {
        return None;
    }
    // Longest match: the table holds every prefix of every name (with (0, 0) for prefixes
    // that are not names themselves).
    let mut best: Option<(usize, u32, u32)> = None;
    let mut k = at;
    while k < end && (b[k].is_ascii_alphanumeric() || b[k] == b';') {
        k += 1;
        // ASCII only, so this is a valid str.
        let key = std::str::from_utf8(&b[at..k]).unwrap_or("");
        match NAMED_ENTITIES.get(key) {
            Some(&(c1, c2)) => {
                if c1 != 0 {
                    best = Some((k - at, c1, c2));
                }
                if b[k - 1] == b';' {
                    break;
                }
            }
            None => break,
        }
    }
    let (len, c1, c2) = best?;
    if in_attr && b[at + len - 1] != b';' {
        if let Some(&next) = b[..end].get(at + len) {
            if next == b'=' || next.is_ascii_alphanumeric() {
                return None;
            }
        }
    }
    let c1 = char::from_u32(c1)?;
    Some((len, c1, char::from_u32(c2).filter(|_| c2 != 0)))
}

/// `&#…;`: decimal or hexadecimal, `;` optional; none without digits.
fn numeric_charref(b: &[u8], at: usize) -> Option<(usize, char, Option<char>)> {
    let mut i = at + 1;
    let hex = matches!(b.get(i), Some(b'x' | b'X'));
    if hex {
        i += 1;
    }
    let start = i;
    let mut n: u32 = 0;
    let mut too_big = false;
    while let Some(&c) = b.get(i) {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' if hex => c - b'a' + 10,
            b'A'..=b'F' if hex => c - b'A' + 10,
            _ => break,
        };
        match n
            .checked_mul(if hex { 16 } else { 10 })
            .and_then(|v| v.checked_add(d as u32))
        {
            Some(v) => n = v,
            None => too_big = true,
        }
        i += 1;
    }
    if i == start {
        return None;
    }
    if b.get(i) == Some(&b';') {
        i += 1;
    }
    let c = match n {
        _ if too_big || n > 0x10FFFF => '\u{fffd}',
        0 | 0xD800..=0xDFFF => '\u{fffd}',
        0x80..=0x9F => C1_REPLACEMENTS[(n - 0x80) as usize]
            .unwrap_or_else(|| char::from_u32(n).unwrap_or('\u{fffd}')),
        _ => char::from_u32(n).unwrap_or('\u{fffd}'),
    };
    Some((i - at, c, None))
}

#[cfg(test)]
mod tests {
    use super::super::dom::{Dom, Kind};
    use super::{kept_attr, DROPPED_TEXT};

    /// The tree as text: elements with their namespace and kept attributes, and text;
    /// comments (sent without their text), doctypes and the text of [`DROPPED_TEXT`]
    /// elements left out.
    fn dump(d: &Dom) -> String {
        let out = std::cell::RefCell::new((String::new(), false));
        d.preorder(
            0,
            |_, n| {
                let (out, last_text) = &mut *out.borrow_mut();
                match &n.kind {
                    Kind::Element { attrs, .. } => {
                        let mut a: Vec<String> = attrs
                            .iter()
                            .filter(|a| kept_attr(&n.name.local, a.name.local.as_bytes()).is_some())
                            .map(|a| format!(" {}={:?}", &*a.name.local, &*a.value))
                            .collect();
                        a.sort();
                        out.push_str(&format!("<{}:{}{}>", &*n.name.ns, n.tag(), a.concat()));
                        *last_text = false;
                        true
                    }
                    Kind::Text(_)
                        if DROPPED_TEXT.contains(&d.nodes[n.parent as usize].tag())
                            && d.nodes[n.parent as usize].name.ns == html5ever::ns!(html) =>
                    {
                        false
                    }
                    Kind::Text(t) => {
                        if !*last_text {
                            out.push('"');
                        }
                        out.push_str(&t.escape_debug().to_string());
                        *last_text = true;
                        false
                    }
                    Kind::Document => true,
                    Kind::Other => false,
                }
            },
            |_, n| {
                if let Kind::Element { .. } = n.kind {
                    let (out, last_text) = &mut *out.borrow_mut();
                    out.push_str(&format!("</{}>", n.tag()));
                    *last_text = false;
                }
            },
        );
        out.into_inner().0
    }

    fn same_tree(html: &str) {
        let ours = dump(&Dom::parse(html));
        let reference = dump(&Dom::parse_reference(html));
        assert_eq!(ours, reference, "input: {html:?}");
    }

    #[test]
    fn trees_match_html5evers_tokenizer_on_tricky_markup() {
        let cases = [
            "",
            "plain text",
            "<!DOCTYPE html><html lang=en><head><title>T &amp; t</title></head><body><p>x</p>",
            "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\"><p>a<table><tr><td>b</table>",
            "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\"><p>quirks<table><td>x</table>",
            "<!doctype><p>a<table>b",
            "<!DOCTYPE html SYSTEM \"about:legacy-compat\"><p>x",
            "<!DOCTYPE html PUBLIC><p>x<table>y</table>",
            "<!DOCTYPE html PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN><p>x<table>y</table>",
            "<p class=\"a b\" id=x CLASS=dup data-x='{\"a\":\"<p>\"}'>one<p>two",
            "<div class=a/b>x</div><div class='x'/>y<br/>z<img src=a.png alt=\"&lt;\">",
            "<a href=\"?a=1&amp;b=2&copy=3&copy;&notit;&#38;&#x26;&#0;&#x110000;&#128;&#xD800;\" title=&amp>l</a>",
            "text &amp &amp; &notit; &notin; &#65 &#x41; &#xZZ; &#; &; && &lt&gt &AElig &aeligx &CounterClockwiseContourIntegral; &#1234567890123;",
            "<p>a<!-- c -->b<!---->c<!-->d<!--->e<!-- x --!>f<!-- <!-- -- > -->g<!-- unterminated",
            "<p>a<?php echo 1 ?>b</>c</ 3>d<!x>e<!DOCTYPE html>f",
            "<title>a <b> &amp; </title x> </TITLE>b",
            "<textarea>\nfirst<p>&lt;</textarea><pre>\n\nkept</pre><listing>\nx</listing>",
            "<style>p{}</style><script>var a = '</scr' + 'ipt>';</script><noscript><p>no</p></noscript>x",
            "<xmp><b>raw</b></xmp><iframe><p>i</iframe><noembed>n</noembed><noframes>f</noframes>",
            "<p>before<plaintext><p>all</p> &amp; text",
            "<svg><desc>d</desc><![CDATA[ <p>cdata</p> ]]><foreignObject><p>html</p></foreignObject></svg><p>x<![CDATA[y]]>z",
            "<math><mi>x</mi><annotation-xml encoding=\"text/html\"><p>h</p></annotation-xml></math>",
            "<svg><font color=red>f</font><p>out</p></svg>",
            "<table><tr><td>a</td></tr>stray<input type=hidden><input type=text><form><td>b</table>",
            "<b><i>x</b>y</i><a>1<a>2</a><p><b>3<p>4</b>",
            "<select><option>a<option>b</select><frameset><frame></frameset>",
            "<template><p>t</p></template><template shadowrootmode=open><p>s</p></template>",
            "<body class=x><p>a</p><body id=y lang=fr><html lang=de data-a=1>",
            "a\r\nb\rc\r\n\r\nd<pre>\r\nx</pre>",
            "a\0b<p \0x=1>\0</p><title>\0</title><textarea>\0</textarea>",
            "<p =x a b = c d=\"e\"f g='h'>x</p><p/x/>y<p a=>z</p>",
            "<P CLASS=Up ID=Mid>case</P><DiV>x</dIv>",
            "<p>cut off <a href=\"",
            "<p>cut off <div class",
            "<p>cut off <",
            "<p>cut off </",
            "<p>cut off &am",
            "\u{feff}<p>bom</p>",
            "<h1>é</h1><p>日本語 <b>тест</b></p><ü>x</ü>",
            "<ul><li>1<li>2</ul><dl><dt>a<dd>b</dl><ruby>a<rt>b</ruby>",
            "<head><meta charset=utf-8><meta http-equiv=Content-Type content=\"text/html; charset=latin1\"><meta name=description content=d></head>",
            "<p hidden aria-hidden=true style=\"display: none\" role=navigation itemprop=articleBody>h</p>",
            "<table><caption>c<table>x</table><colgroup><col><tbody><tr><th>h<td>d</table>",
            "<noscript><style>a</style></noscript><head><noscript><link></noscript></head>",
            "<textarea>a</textareaX>b</textarea>",
            "<title>a</title",
        ];
        for html in cases {
            same_tree(html);
        }
    }

    /// Tag soup from markup fragments, with a fixed seed: every document must give html5ever's
    /// tree.
    #[test]
    fn trees_match_html5evers_tokenizer_on_generated_tag_soup() {
        let parts = [
            "<p>",
            "</p>",
            "<div class=\"a b\">",
            "</div>",
            "<table>",
            "<tr>",
            "<td>",
            "</td>",
            "</table>",
            "text",
            " ",
            "\n",
            "\r\n",
            "&amp;",
            "&notin",
            "&not",
            "&#x41;",
            "&#150;",
            "&",
            "<",
            ">",
            "\"",
            "'",
            "=",
            "/",
            "<!--",
            "-->",
            "--!>",
            "<!-",
            "<title>",
            "</title>",
            "<textarea>",
            "</textarea>",
            "<style>",
            "</style>",
            "<script>",
            "</script>",
            "<svg>",
            "</svg>",
            "<math>",
            "<mi>",
            "<![CDATA[",
            "]]>",
            "<b>",
            "</b>",
            "<i>",
            "</i>",
            "<a href=x>",
            "</a>",
            "<pre>",
            "</pre>",
            "<select>",
            "<option>",
            "<noscript>",
            "</noscript>",
            "<template>",
            "</template>",
            "<html lang=en>",
            "<body id=b>",
            "<input type=hidden>",
            "<font color=red>",
            "<h1>",
            "</h1>",
            "<li>",
            "<ul>",
            "<br>",
            "<br/>",
            "<img alt='&lt;x'>",
            "<!DOCTYPE html>",
            "<?x>",
            "</>",
            "<frameset>",
            "<head>",
            "<meta name=description content=x>",
            "\0",
            "é",
            "日本",
            "<p class=c id=i style=\"display:none\">",
            "<xmp>",
            "</xmp>",
            "<plaintext>",
            "<foreignObject>",
            "<desc>",
            "<form>",
            "</form>",
            "<caption>",
            "<col>",
            "<th>",
            "<DIV CLASS=X>",
            "</DIV>",
            "<p a=\"1\" a=\"2\" class=x class=y>",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let n = 1 + (next() % 40) as usize;
            let mut html = String::new();
            for _ in 0..n {
                let p = parts[(next() % parts.len() as u64) as usize];
                // <plaintext> swallows the rest: rarely.
                if p == "<plaintext>" && next() % 8 != 0 {
                    continue;
                }
                html.push_str(p);
            }
            if !script_escape(&html) {
                same_tree(&html);
            }
        }
    }

    /// Whether a `<!--` comes between a `<script` and the next `</script`: html5ever follows
    /// the script data escape states there, which this tokenizer does not.
    fn script_escape(html: &str) -> bool {
        let mut rest = html;
        while let Some(i) = rest.find("<script") {
            rest = &rest[i + 7..];
            let end = rest.find("</script").unwrap_or(rest.len());
            if rest[..end].contains("<!--") {
                return true;
            }
        }
        false
    }

    #[test]
    fn script_and_style_text_is_stepped_over_and_nothing_else() {
        let cases = [
            ("<p>a</p><script>var x = '<p>';</script><p>b</p>", "ab"),
            ("<SCRIPT type=x>1<2</Script ><style>p{}</style>c", "c"),
            ("<!-- <script> --><p>kept</p><script>x</script>", "kept"),
            ("<scripts>text</scripts><stylesheet>t</stylesheet>", "textt"),
            ("<script>never closed", ""),
            (
                "<p>é</p><style>ü</style>ß<noscript>n</noscript><iframe>i</iframe>",
                "éß",
            ),
            ("<script>a</scripts>b</script>c", "c"),
            // Script data ends at the first `</script>`, even after a `<!--` (where browsers
            // and html5ever follow the escape states): the rest is text.
            ("<script>a<!--<script>b</script>c</script>d", "cd"),
            // Where the tree builder does not switch to raw text, nothing is dropped.
            (
                "<textarea><script>kept</script></textarea>",
                "<script>kept</script>",
            ),
            ("<svg><style>s</style></svg>", "s"),
        ];
        for (html, want) in cases {
            let d = Dom::parse(html);
            assert_eq!(crate::html::dom::text_of(&d), want, "{html}");
        }
        let d = Dom::parse("<p>a</p><script>x</script><style>y</style>");
        for tag in ["script", "style"] {
            assert!(d.nodes.iter().any(|n| n.tag() == tag), "{tag}");
        }
    }

    #[test]
    fn only_the_kept_attributes_are_on_elements() {
        let d = Dom::parse(
            "<html lang=en><meta name=d content=c><p data-a='x' class=k onclick=\"f()\" ID=i \
             lang=fr><a name=n type=t>a</a></p>",
        );
        let names = |tag: &str| -> Vec<String> {
            let n = d.nodes.iter().find(|n| n.tag() == tag).unwrap();
            let Kind::Element { attrs, .. } = &n.kind else {
                unreachable!()
            };
            attrs.iter().map(|a| a.name.local.to_string()).collect()
        };
        assert_eq!(names("html"), ["lang"]);
        assert_eq!(names("meta"), ["name", "content"]);
        assert_eq!(names("p"), ["class", "id"]);
        assert!(names("a").is_empty());
    }
}
