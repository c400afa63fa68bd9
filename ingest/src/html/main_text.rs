//! Main-content extraction over a parsed page: drop boilerplate, cut blocks, score, pick.
//! See the [parent module](super) for the method.

use html5ever::local_name;

use super::dom::{Dom, Kind, Node, NONE};

/// What the page holds besides its markup.
pub(crate) struct MainText {
    pub text: String,
    pub title: Option<String>,
    pub lang: Option<String>,
    pub description: Option<String>,
}

/// Elements never holding main text: their whole subtree is skipped.
fn skip_tag(tag: &str) -> bool {
    matches!(
        tag,
        "script"
            | "style"
            | "noscript"
            | "template"
            | "svg"
            | "math"
            | "iframe"
            | "object"
            | "embed"
            | "canvas"
            | "select"
            | "option"
            | "button"
            | "textarea"
            | "input"
            | "nav"
            | "aside"
            | "footer"
            | "header"
            | "menu"
            | "dialog"
            | "head"
            | "figure"
            | "figcaption"
            | "video"
            | "audio"
            | "map"
            | "form"
    )
}

/// Block-level elements: text inside one is cut into a block of its own.
fn block_tag(tag: &str) -> bool {
    matches!(
        tag,
        "address"
            | "article"
            | "blockquote"
            | "body"
            | "center"
            | "dd"
            | "details"
            | "div"
            | "dl"
            | "dt"
            | "fieldset"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "hr"
            | "li"
            | "main"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "summary"
            | "table"
            | "tbody"
            | "thead"
            | "tfoot"
            | "tr"
            | "ul"
            | "caption"
            | "html"
    )
}

/// Class/id words that mark boilerplate (`Boiler`) or content containers (`Good`): whole
/// words of the attribute (split at `-`, `_`, spaces; case changes are not considered),
/// lowercased.
fn class_word(word: &[u8]) -> Option<Hint> {
    match word {
        b"ad" | b"ads" | b"adsense" | b"advert" | b"advertisement" | b"banner" | b"breadcrumb"
        | b"breadcrumbs" | b"byline" | b"caption" | b"comment" | b"comments" | b"cookie"
        | b"cookies" | b"copyright" | b"credit" | b"dateline" | b"disqus" | b"footer"
        | b"header" | b"hidden" | b"hide" | b"login" | b"masthead" | b"menu" | b"modal"
        | b"most" | b"nav" | b"navbar" | b"navigation" | b"newsletter" | b"outbrain" | b"pager"
        | b"pagination" | b"popular" | b"popup" | b"print" | b"promo" | b"recommended"
        | b"related" | b"rss" | b"share" | b"sharebar" | b"sharing" | b"sidebar" | b"signup"
        | b"skip" | b"social" | b"sponsor" | b"sponsored" | b"subscribe" | b"subscription"
        | b"taboola" | b"tagcloud" | b"tags" | b"timestamp" | b"toolbar" | b"trending"
        | b"widget" => Some(Hint::Boiler),
        b"article" | b"blog" | b"body" | b"content" | b"entry" | b"hentry" | b"main" | b"page"
        | b"paragraph" | b"post" | b"prose" | b"story" | b"storytext" | b"text" | b"zn" => {
            Some(Hint::Good)
        }
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hint {
    Boiler,
    Good,
}

/// ARIA roles of boilerplate regions.
fn boiler_role(role: &str) -> bool {
    matches!(
        role,
        "navigation"
            | "banner"
            | "contentinfo"
            | "complementary"
            | "menu"
            | "menubar"
            | "dialog"
            | "alert"
            | "search"
    )
}

/// Whether some word of a class or id value (split at every byte that is not an ASCII
/// letter or digit, compared lowercased) is a boilerplate word, and whether one is a content
/// word.
fn class_id_hints(value: &str) -> (bool, bool) {
    let (mut boiler, mut good) = (false, false);
    for w in value.as_bytes().split(|c| !c.is_ascii_alphanumeric()) {
        // Longer than any listed word (or empty): cannot match.
        let mut buf = [0u8; 16];
        if w.is_empty() || w.len() > buf.len() {
            continue;
        }
        let buf = &mut buf[..w.len()];
        buf.copy_from_slice(w);
        buf.make_ascii_lowercase();
        match class_word(buf) {
            Some(Hint::Boiler) => boiler = true,
            Some(Hint::Good) => good = true,
            None => {}
        }
    }
    (boiler, good)
}

/// What the walks need to know about a node, computed once per node ([`flags`]).
type Flags = u16;
const ELEMENT: Flags = 1;
/// Removed whatever it holds: by tag ([`skip_tag`]), `hidden`, `aria-hidden="true"`, a
/// hiding `style`, or a boilerplate ARIA role.
const HARD: Flags = 1 << 1;
/// A boilerplate class or id word, on an element other than `html`, `body`, `main` and
/// `article` (see [`skipped`]).
const HINT: Flags = 1 << 2;
/// A content class or id word ([`class_weight`]).
const GOOD: Flags = 1 << 3;
const BLOCK: Flags = 1 << 4;
const LINK: Flags = 1 << 5;
const PRE: Flags = 1 << 6;
const BR: Flags = 1 << 7;
const CELL: Flags = 1 << 8;

fn flags(d: &Dom) -> Vec<Flags> {
    d.nodes
        .iter()
        .map(|n| {
            let Kind::Element { attrs, .. } = &n.kind else {
                return 0;
            };
            let tag = n.tag();
            let mut f = ELEMENT;
            if skip_tag(tag) {
                f |= HARD;
            }
            if block_tag(tag) {
                f |= BLOCK;
            }
            f |= match tag {
                "a" => LINK,
                "pre" => PRE,
                "br" => BR,
                "td" | "th" => CELL,
                _ => 0,
            };
            // One pass over the attributes (each name appears once: the tokenizer and the
            // tree builder drop repeats).
            let (mut boiler, mut good) = (false, false);
            for a in attrs {
                let v = &*a.value;
                match a.name.local {
                    local_name!("class") | local_name!("id") => {
                        let (b, g) = class_id_hints(v);
                        boiler |= b;
                        good |= g;
                    }
                    local_name!("hidden") => f |= HARD,
                    local_name!("aria-hidden") if v == "true" => f |= HARD,
                    local_name!("style") if hidden_style(v) => f |= HARD,
                    local_name!("role") if boiler_role(&v.trim().to_ascii_lowercase()) => f |= HARD,
                    _ => {}
                }
            }
            if boiler && !matches!(tag, "html" | "body" | "main" | "article") {
                f |= HINT;
            }
            if good {
                f |= GOOD;
            }
            f
        })
        .collect()
}

/// Whether an element's subtree is boilerplate by its tag or attributes. A class or id
/// hint alone does not remove an element holding much text that is not links (`raw_chars`
/// and `raw_links` of its subtree): pages put words like `nav` on the classes of containers
/// that wrap the whole page.
fn skipped(f: Flags, raw_chars: usize, raw_links: usize) -> bool {
    if f & HARD != 0 {
        return true;
    }
    let big = raw_chars.saturating_sub(raw_links) >= CLASS_HINT_MAX_CHARS;
    !big && f & HINT != 0
}

/// Elements with at least this much text outside links are not removed for a class or id
/// hint alone (the scoring decides about them).
const CLASS_HINT_MAX_CHARS: usize = 500;

/// A `style` that hides the element.
fn hidden_style(style: &str) -> bool {
    let s: String = style
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    s.contains("display:none") || s.contains("visibility:hidden")
}

/// Text and link characters under every node, counting only what is not [`HARD`] skipped;
/// for a text node, its own count (which [`Walk::text`] reuses).
fn raw_counts(d: &Dom, flags: &[Flags]) -> (Vec<usize>, Vec<usize>) {
    let n = d.nodes.len();
    let (mut chars, mut links) = (vec![0usize; n], vec![0usize; n]);
    let mut in_link = 0usize;
    let cell = std::cell::RefCell::new((&mut chars, &mut links, &mut in_link));
    d.preorder(
        0,
        |i, node| {
            let mut c = cell.borrow_mut();
            match &node.kind {
                Kind::Text(t) => {
                    let k = nonspace(t);
                    c.0[i as usize] = k;
                    if node.parent != NONE {
                        c.0[node.parent as usize] += k;
                        if *c.2 > 0 {
                            c.1[node.parent as usize] += k;
                        }
                    }
                    false
                }
                Kind::Element { .. } => {
                    let f = flags[i as usize];
                    if f & HARD != 0 {
                        return false;
                    }
                    if f & LINK != 0 {
                        *c.2 += 1;
                    }
                    true
                }
                Kind::Document => true,
                Kind::Other => false,
            }
        },
        |i, node| {
            let mut c = cell.borrow_mut();
            if flags[i as usize] & LINK != 0 {
                *c.2 = c.2.saturating_sub(1);
            }
            if node.parent != NONE {
                let p = node.parent as usize;
                let (a, b) = (c.0[i as usize], c.1[i as usize]);
                c.0[p] += a;
                c.1[p] += b;
            }
        },
    );
    (chars, links)
}

fn class_weight(n: &Node, f: Flags) -> f64 {
    let mut w = 0.0;
    if f & GOOD != 0 {
        w += 25.0;
    }
    if matches!(n.tag(), "article" | "main") || n.attr("itemprop") == Some("articleBody") {
        w += 25.0;
    }
    w
}

fn tag_weight(tag: &str) -> f64 {
    match tag {
        "div" | "article" | "main" | "section" => 5.0,
        "pre" | "td" | "blockquote" => 3.0,
        "address" | "ol" | "ul" | "dl" | "dd" | "dt" | "li" => -3.0,
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "th" => -5.0,
        _ => 0.0,
    }
}

/// How a block's lines join the next block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Paragraph,
    Heading,
    Item,
    Row,
}

struct Block {
    text: String,
    /// Non-whitespace characters, and those inside links.
    chars: usize,
    link_chars: usize,
    /// The innermost block-level element holding the text.
    owner: u32,
    kind: BlockKind,
}

/// Counts non-whitespace characters.
fn nonspace(s: &str) -> usize {
    if s.is_ascii() {
        // `char::is_whitespace` on ASCII.
        return s
            .bytes()
            .filter(|c| !matches!(c, b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | b' '))
            .count();
    }
    s.chars().filter(|c| !c.is_whitespace()).count()
}

/// Commas (Latin and CJK), Readability's proxy for prose.
fn commas(s: &str) -> usize {
    s.chars()
        .filter(|c| matches!(c, ',' | '，' | '、' | '،' | '。'))
        .count()
}

struct Walk<'d> {
    dom: &'d Dom,
    blocks: Vec<Block>,
    cur: String,
    cur_chars: usize,
    cur_links: usize,
    /// Open block-level elements (innermost last) and their kind.
    owners: Vec<(u32, BlockKind)>,
    links: usize,
    pre: usize,
    /// Subtree text characters and link characters per node.
    chars: Vec<usize>,
    link_chars: Vec<usize>,
    flags: Vec<Flags>,
}

impl Walk<'_> {
    fn flush(&mut self) {
        let text = std::mem::take(&mut self.cur);
        let (chars, links) = (self.cur_chars, self.cur_links);
        self.cur_chars = 0;
        self.cur_links = 0;
        if chars == 0 {
            return;
        }
        let (owner, kind) = self
            .owners
            .last()
            .copied()
            .unwrap_or((0, BlockKind::Paragraph));
        // Lines trimmed, blank lines dropped, spaces already collapsed.
        let mut out = String::with_capacity(text.len());
        for line in text.split('\n') {
            let l = if self.pre > 0 {
                line.trim_end()
            } else {
                line.trim()
            };
            if !l.is_empty() {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(l);
            }
        }
        self.blocks.push(Block {
            text: out,
            chars,
            link_chars: links,
            owner,
            kind,
        });
    }

    /// Appends a text node's text; `chars` is its count of non-whitespace characters.
    fn text(&mut self, t: &str, chars: usize) {
        self.cur_chars += chars;
        if self.links > 0 {
            self.cur_links += chars;
        }
        if self.pre > 0 {
            self.cur.push_str(t);
            return;
        }
        // Runs of whitespace become one space (none at the start of a line); words are copied
        // whole.
        let mut space = self.cur.is_empty() || self.cur.ends_with([' ', '\n']);
        let mut rest = t;
        loop {
            let word = rest.trim_start();
            if word.len() != rest.len() && !space {
                self.cur.push(' ');
            }
            if word.is_empty() {
                break;
            }
            let end = word.find(char::is_whitespace).unwrap_or(word.len());
            self.cur.push_str(&word[..end]);
            space = false;
            rest = &word[end..];
        }
    }
}

fn kind_of(tag: &str) -> BlockKind {
    match tag {
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => BlockKind::Heading,
        "li" | "dt" | "dd" => BlockKind::Item,
        "tr" => BlockKind::Row,
        _ => BlockKind::Paragraph,
    }
}

/// The text of the first element named `tag` (for `<title>`).
fn first_text(d: &Dom, tag: &str) -> Option<String> {
    let mut found: Option<u32> = None;
    d.preorder(
        0,
        |i, n| {
            if found.is_some() {
                return false;
            }
            if n.tag() == tag && matches!(n.kind, Kind::Element { .. }) {
                found = Some(i);
                return false;
            }
            true
        },
        |_, _| {},
    );
    let mut s = String::new();
    d.preorder(
        found?,
        |_, n| {
            if let Kind::Text(t) = &n.kind {
                s.push_str(t);
            }
            true
        },
        |_, _| {},
    );
    clean(&s)
}

/// Whitespace collapsed; `None` when empty.
fn clean(s: &str) -> Option<String> {
    let t = s.split_whitespace().collect::<Vec<_>>().join(" ");
    (!t.is_empty()).then_some(t)
}

fn metadata(d: &Dom) -> (Option<String>, Option<String>, Option<String>) {
    let (mut desc, mut og_desc, mut og_title, mut lang, mut meta_lang) =
        (None, None, None, None, None);
    for n in &d.nodes {
        match n.tag() {
            "html" if lang.is_none() => {
                lang = n
                    .attr("lang")
                    .or_else(|| n.attr("xml:lang"))
                    .and_then(clean)
            }
            "meta" => {
                let key = n
                    .attr("name")
                    .or_else(|| n.attr("property"))
                    .or_else(|| n.attr("http-equiv"))
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let content = n.attr("content").and_then(clean);
                match key.as_str() {
                    "description" if desc.is_none() => desc = content,
                    "og:description" if og_desc.is_none() => og_desc = content,
                    "og:title" if og_title.is_none() => og_title = content,
                    "content-language" | "og:locale" | "language" if meta_lang.is_none() => {
                        meta_lang = content
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let title = first_text(d, "title").or(og_title);
    let lang = lang
        .or(meta_lang)
        .map(|l| l.replace('_', "-").to_ascii_lowercase());
    (title, lang, desc.or(og_desc))
}

pub(crate) fn main_text(d: &Dom) -> MainText {
    let (title, lang, description) = metadata(d);
    let n = d.nodes.len();
    let flags = flags(d);
    let (raw_chars, raw_links) = raw_counts(d, &flags);
    let mut w = Walk {
        dom: d,
        blocks: Vec::new(),
        cur: String::new(),
        cur_chars: 0,
        cur_links: 0,
        owners: Vec::new(),
        links: 0,
        pre: 0,
        chars: vec![0; n],
        link_chars: vec![0; n],
        flags,
    };
    // Text per node is credited when its block is flushed; subtree sums come from the leave
    // callback (children always leave before their parent).
    let wc = std::cell::RefCell::new(&mut w);
    d.preorder(
        0,
        |i, node| {
            let mut w = wc.borrow_mut();
            match &node.kind {
                Kind::Text(t) => {
                    let before = w.cur_chars;
                    let links_before = w.cur_links;
                    w.text(t, raw_chars[i as usize]);
                    let (c, l) = (w.cur_chars - before, w.cur_links - links_before);
                    if node.parent != NONE {
                        w.chars[node.parent as usize] += c;
                        w.link_chars[node.parent as usize] += l;
                    }
                    false
                }
                Kind::Element { .. } => {
                    let f = w.flags[i as usize];
                    if skipped(f, raw_chars[i as usize], raw_links[i as usize]) {
                        return false;
                    }
                    if f & BR != 0 {
                        w.cur.push('\n');
                        return false;
                    }
                    if f & LINK != 0 {
                        w.links += 1;
                    }
                    if f & PRE != 0 {
                        w.pre += 1;
                    }
                    if f & CELL != 0 && !w.cur.trim().is_empty() {
                        w.cur.push_str(" | ");
                    }
                    if f & BLOCK != 0 {
                        w.flush();
                        w.owners.push((i, kind_of(node.tag())));
                    }
                    true
                }
                Kind::Document => true,
                Kind::Other => false,
            }
        },
        |i, node| {
            let mut w = wc.borrow_mut();
            let f = w.flags[i as usize];
            if f & BLOCK != 0 {
                w.flush();
                w.owners.pop();
            }
            if f & LINK != 0 {
                w.links = w.links.saturating_sub(1);
            }
            if f & PRE != 0 {
                w.pre = w.pre.saturating_sub(1);
            }
            if node.parent != NONE {
                let p = node.parent as usize;
                let (c, l) = (w.chars[i as usize], w.link_chars[i as usize]);
                w.chars[p] += c;
                w.link_chars[p] += l;
            }
        },
    );
    w.flush();
    let text = select(&w);
    MainText {
        text,
        title,
        lang,
        description,
    }
}

/// Blocks of fewer characters than this are not evidence of content.
const MIN_BLOCK_CHARS: usize = 25;

fn link_density(w: &Walk<'_>, i: u32) -> f64 {
    let c = w.chars[i as usize];
    if c == 0 {
        0.0
    } else {
        w.link_chars[i as usize] as f64 / c as f64
    }
}

/// Scores the candidates, picks the main content and joins its blocks.
fn select(w: &Walk<'_>) -> String {
    let d = w.dom;
    let mut score: Vec<f64> = vec![f64::NAN; d.nodes.len()];
    let init = |score: &mut Vec<f64>, i: u32| {
        let s = &mut score[i as usize];
        if s.is_nan() {
            let n = &d.nodes[i as usize];
            *s = tag_weight(n.tag()) + class_weight(n, w.flags[i as usize]);
        }
    };
    for b in &w.blocks {
        if b.chars < MIN_BLOCK_CHARS {
            continue;
        }
        let s = 1.0 + commas(&b.text) as f64 + (b.chars as f64 / 100.0).min(3.0);
        let owner = &d.nodes[b.owner as usize];
        let mut at = if matches!(owner.tag(), "div" | "section" | "article" | "main" | "body") {
            b.owner
        } else {
            owner.parent
        };
        for level in 0..3 {
            if at == NONE || at == 0 {
                break;
            }
            init(&mut score, at);
            let div = match level {
                0 => 1.0,
                1 => 2.0,
                l => l as f64 * 3.0,
            };
            score[at as usize] += s / div;
            at = d.nodes[at as usize].parent;
        }
    }
    let mut top: Option<(u32, f64)> = None;
    for (i, s) in score.iter().enumerate() {
        if s.is_nan() {
            continue;
        }
        let f = s * (1.0 - link_density(w, i as u32));
        if top.is_none_or(|(_, t)| f > t) {
            top = Some((i as u32, f));
        }
    }
    let mut inside = vec![false; d.nodes.len()];
    let Some((top, top_score)) = top else {
        // No block long enough to score: keep every block that is not mostly links.
        return join(w.blocks.iter().filter(|b| keep_block(b)));
    };
    let parent = d.nodes[top as usize].parent;
    let mut roots = vec![top];
    if parent != NONE {
        let threshold = (top_score * 0.2).max(10.0);
        let mut c = d.nodes[parent as usize].first_child;
        while c != NONE {
            if c != top && matches!(d.nodes[c as usize].kind, Kind::Element { .. }) {
                let s = score[c as usize];
                let ld = link_density(w, c);
                let chars = w.chars[c as usize];
                let own = if s.is_nan() { 0.0 } else { s * (1.0 - ld) };
                if own >= threshold || (d.nodes[c as usize].tag() == "p" && chars > 80 && ld < 0.25)
                {
                    roots.push(c);
                }
            }
            c = d.nodes[c as usize].next;
        }
    }
    // Articles cut into chunks between ad slots repeat their container: elements with the
    // top candidate's tag and class that score well are content too.
    let top_node = &d.nodes[top as usize];
    if let Some(class) = top_node.attr("class").filter(|c| !c.trim().is_empty()) {
        let threshold = (top_score * 0.2).max(10.0);
        for (i, s) in score.iter().enumerate() {
            let n = &d.nodes[i];
            if i as u32 != top
                && !s.is_nan()
                && n.tag() == top_node.tag()
                && n.attr("class") == Some(class)
                && s * (1.0 - link_density(w, i as u32)) >= threshold
            {
                roots.push(i as u32);
            }
        }
    }
    for r in roots {
        d.preorder(
            r,
            |i, _| {
                inside[i as usize] = true;
                true
            },
            |_, _| {},
        );
    }
    join(
        w.blocks
            .iter()
            .filter(|b| inside[b.owner as usize] && keep_block(b)),
    )
}

fn keep_block(b: &Block) -> bool {
    b.chars > 0 && (b.link_chars as f64) < 0.5 * b.chars as f64
}

fn join<'a>(blocks: impl Iterator<Item = &'a Block>) -> String {
    let mut out = String::new();
    let mut prev: Option<BlockKind> = None;
    for b in blocks {
        if let Some(p) = prev {
            let tight = p == b.kind && matches!(b.kind, BlockKind::Item | BlockKind::Row);
            out.push_str(if tight { "\n" } else { "\n\n" });
        }
        out.push_str(&b.text);
        prev = Some(b.kind);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_and_id_words_are_matched_whole_and_lowercased() {
        assert_eq!(class_id_hints("Main-Nav menu_x"), (true, true));
        assert_eq!(class_id_hints("storytext"), (false, true));
        assert_eq!(class_id_hints("navigational adsx"), (false, false));
    }

    fn run(html: &str) -> MainText {
        main_text(&Dom::parse(html))
    }

    #[test]
    fn keeps_the_article_and_drops_navigation_scripts_and_link_lists() {
        let para = "The committee met on Tuesday to discuss the budget, which has grown by a third since last year, and agreed on a plan.";
        let html = format!(
            r#"<html lang="en-US"><head><title> Budget  news </title>
            <meta name="description" content="What the committee decided.">
            <script>var x = "not text";</script><style>p {{ color: red }}</style></head>
            <body><nav><a href="/">Home</a> <a href="/world">World</a></nav>
            <div class="menu"><ul><li><a href="/a">Sport</a></li><li><a href="/b">Weather</a></li></ul></div>
            <div id="main-article" class="article-body">
              <h1>Budget agreed</h1>
              <p>{para}</p>
              <p>Second paragraph, with a <a href="/x">link</a> inside, stays as it is.</p>
              <ul><li>first point</li><li>second point</li></ul>
              <table><tr><td>Year</td><td>Spend</td></tr><tr><td>2024</td><td>1,200</td></tr></table>
              <p>Line one<br>line two</p>
              <div class="share-tools"><a href="/s">Share on social media</a></div>
            </div>
            <div class="sidebar"><p>Most read stories of the week, all of them, right here, every day.</p></div>
            <footer>Copyright 2024, all rights reserved, everywhere, forever.</footer>
            </body></html>"#
        );
        let m = run(&html);
        assert_eq!(
            m.text,
            format!(
                "Budget agreed\n\n{para}\n\nSecond paragraph, with a link inside, stays as it is.\n\n\
                 first point\nsecond point\n\nYear | Spend\n2024 | 1,200\n\nLine one\nline two"
            )
        );
        assert_eq!(m.title.as_deref(), Some("Budget news"));
        assert_eq!(m.lang.as_deref(), Some("en-us"));
        assert_eq!(
            m.description.as_deref(),
            Some("What the committee decided.")
        );
    }

    #[test]
    fn a_page_without_content_gives_empty_text_and_pre_keeps_its_layout() {
        assert_eq!(run("<html><body><nav>x</nav></body></html>").text, "");
        assert_eq!(run("").text, "");
        let m = run("<body><pre>fn main() {\n    print();\n}</pre></body>");
        assert_eq!(m.text, "fn main() {\n    print();\n}");
    }
}
