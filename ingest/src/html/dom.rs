//! An HTML5 document as a flat arena of nodes, built by html5ever's tree builder.
//!
//! html5ever's tree builder, fed tokens by [`super::tokenize`], builds the tree as browsers
//! do (the WHATWG algorithm: misnested tags, implied `<p>` ends, tables, foster parenting),
//! but leaves the tree to a [`TreeSink`]. The sink here
//! keeps nodes in one `Vec` addressed by index, with parent/sibling links, instead of the
//! reference-counted nodes of `markup5ever_rcdom` (which html5ever publishes as unsupported,
//! for its own tests): one allocation per document instead of one per node, and no
//! recursion anywhere, so a hostile page nested a million levels deep cannot overflow the
//! stack (walks over the tree are iterative, see [`Dom::preorder`]).

use std::borrow::Cow;
use std::cell::{Ref, RefCell};

use html5ever::interface::tree_builder::{ElementFlags, NodeOrText, QuirksMode, TreeSink};
use html5ever::tendril::StrTendril;
use html5ever::tree_builder::{TreeBuilder, TreeBuilderOpts};
use html5ever::{local_name, ns, Attribute, QualName};

/// No node (a missing link).
pub(crate) const NONE: u32 = u32::MAX;

/// What a node is.
pub(crate) enum Kind {
    Document,
    Element {
        attrs: Vec<Attribute>,
        template: u32,
    },
    Text(StrTendril),
    /// Comments, doctypes, processing instructions: never text.
    Other,
}

/// One node and its links (indices into [`Dom::nodes`], [`NONE`] when absent).
pub(crate) struct Node {
    pub parent: u32,
    pub first_child: u32,
    pub last_child: u32,
    pub prev: u32,
    pub next: u32,
    /// The element's name; an empty name for other nodes.
    pub name: QualName,
    pub kind: Kind,
}

impl Node {
    fn new(name: QualName, kind: Kind) -> Self {
        Node {
            parent: NONE,
            first_child: NONE,
            last_child: NONE,
            prev: NONE,
            next: NONE,
            name,
            kind,
        }
    }

    /// The local name of an element (`""` for other nodes).
    pub fn tag(&self) -> &str {
        &self.name.local
    }

    /// The value of attribute `name` of an element.
    pub fn attr(&self, name: &str) -> Option<&str> {
        match &self.kind {
            Kind::Element { attrs, .. } => attrs
                .iter()
                .find(|a| &*a.name.local == name)
                .map(|a| &*a.value),
            _ => None,
        }
    }
}

/// A parsed document: node 0 is the document.
pub(crate) struct Dom {
    pub nodes: Vec<Node>,
}

fn no_name() -> QualName {
    QualName::new(None, ns!(), local_name!(""))
}

struct Sink {
    nodes: RefCell<Vec<Node>>,
}

impl Sink {
    fn push(&self, node: Node) -> u32 {
        let mut n = self.nodes.borrow_mut();
        n.push(node);
        (n.len() - 1) as u32
    }

    fn detach(nodes: &mut [Node], i: u32) {
        let (parent, prev, next) = {
            let n = &mut nodes[i as usize];
            let t = (n.parent, n.prev, n.next);
            n.parent = NONE;
            n.prev = NONE;
            n.next = NONE;
            t
        };
        if next != NONE {
            nodes[next as usize].prev = prev;
        } else if parent != NONE {
            nodes[parent as usize].last_child = prev;
        }
        if prev != NONE {
            nodes[prev as usize].next = next;
        } else if parent != NONE {
            nodes[parent as usize].first_child = next;
        }
    }

    fn append_node(nodes: &mut [Node], parent: u32, child: u32) {
        Self::detach(nodes, child);
        let last = nodes[parent as usize].last_child;
        nodes[child as usize].parent = parent;
        nodes[child as usize].prev = last;
        if last != NONE {
            nodes[last as usize].next = child;
        } else {
            nodes[parent as usize].first_child = child;
        }
        nodes[parent as usize].last_child = child;
    }

    fn insert_before_node(nodes: &mut [Node], sibling: u32, child: u32) {
        Self::detach(nodes, child);
        let (parent, prev) = {
            let s = &nodes[sibling as usize];
            (s.parent, s.prev)
        };
        nodes[child as usize].parent = parent;
        nodes[child as usize].next = sibling;
        nodes[child as usize].prev = prev;
        if prev != NONE {
            nodes[prev as usize].next = child;
        } else if parent != NONE {
            nodes[parent as usize].first_child = child;
        }
        nodes[sibling as usize].prev = child;
    }

    /// Appends text to `neighbour` when it is a text node (adjacent text is merged); returns
    /// false when it is not.
    fn merge_text(nodes: &mut [Node], neighbour: u32, text: &StrTendril) -> bool {
        if neighbour == NONE {
            return false;
        }
        if let Kind::Text(t) = &mut nodes[neighbour as usize].kind {
            t.push_tendril(text);
            return true;
        }
        false
    }
}

impl TreeSink for Sink {
    type Handle = u32;
    type Output = Dom;
    type ElemName<'a> = Ref<'a, QualName>;

    fn finish(self) -> Dom {
        Dom {
            nodes: self.nodes.into_inner(),
        }
    }

    fn parse_error(&self, _msg: Cow<'static, str>) {}

    fn get_document(&self) -> u32 {
        0
    }

    fn elem_name<'a>(&'a self, target: &'a u32) -> Ref<'a, QualName> {
        Ref::map(self.nodes.borrow(), |n| &n[*target as usize].name)
    }

    fn create_element(&self, name: QualName, attrs: Vec<Attribute>, flags: ElementFlags) -> u32 {
        let template = if flags.template {
            self.push(Node::new(no_name(), Kind::Document))
        } else {
            NONE
        };
        self.push(Node::new(name, Kind::Element { attrs, template }))
    }

    fn create_comment(&self, _text: StrTendril) -> u32 {
        self.push(Node::new(no_name(), Kind::Other))
    }

    fn create_pi(&self, _target: StrTendril, _data: StrTendril) -> u32 {
        self.push(Node::new(no_name(), Kind::Other))
    }

    fn append(&self, parent: &u32, child: NodeOrText<u32>) {
        let mut nodes = self.nodes.borrow_mut();
        match child {
            NodeOrText::AppendText(text) => {
                let last = nodes[*parent as usize].last_child;
                if !Self::merge_text(&mut nodes, last, &text) {
                    nodes.push(Node::new(no_name(), Kind::Text(text)));
                    let i = (nodes.len() - 1) as u32;
                    Self::append_node(&mut nodes, *parent, i);
                }
            }
            NodeOrText::AppendNode(n) => Self::append_node(&mut nodes, *parent, n),
        }
    }

    fn append_based_on_parent_node(
        &self,
        element: &u32,
        prev_element: &u32,
        child: NodeOrText<u32>,
    ) {
        let has_parent = self.nodes.borrow()[*element as usize].parent != NONE;
        if has_parent {
            self.append_before_sibling(element, child)
        } else {
            self.append(prev_element, child)
        }
    }

    fn append_doctype_to_document(&self, _n: StrTendril, _p: StrTendril, _s: StrTendril) {
        let i = self.push(Node::new(no_name(), Kind::Other));
        Self::append_node(&mut self.nodes.borrow_mut(), 0, i);
    }

    fn get_template_contents(&self, target: &u32) -> u32 {
        match &self.nodes.borrow()[*target as usize].kind {
            Kind::Element { template, .. } if *template != NONE => *template,
            // Only called for template elements, which always have contents; a detached
            // fragment keeps the builder going if that ever changes.
            _ => self.push(Node::new(no_name(), Kind::Document)),
        }
    }

    fn same_node(&self, x: &u32, y: &u32) -> bool {
        x == y
    }

    fn set_quirks_mode(&self, _mode: QuirksMode) {}

    fn append_before_sibling(&self, sibling: &u32, child: NodeOrText<u32>) {
        let mut nodes = self.nodes.borrow_mut();
        match child {
            NodeOrText::AppendText(text) => {
                let prev = nodes[*sibling as usize].prev;
                if !Self::merge_text(&mut nodes, prev, &text) {
                    nodes.push(Node::new(no_name(), Kind::Text(text)));
                    let i = (nodes.len() - 1) as u32;
                    Self::insert_before_node(&mut nodes, *sibling, i);
                }
            }
            NodeOrText::AppendNode(n) => Self::insert_before_node(&mut nodes, *sibling, n),
        }
    }

    fn add_attrs_if_missing(&self, target: &u32, attrs: Vec<Attribute>) {
        if let Kind::Element { attrs: have, .. } =
            &mut self.nodes.borrow_mut()[*target as usize].kind
        {
            for a in attrs {
                if !have.iter().any(|h| h.name == a.name) {
                    have.push(a);
                }
            }
        }
    }

    fn remove_from_parent(&self, target: &u32) {
        Self::detach(&mut self.nodes.borrow_mut(), *target);
    }

    fn reparent_children(&self, node: &u32, new_parent: &u32) {
        let mut nodes = self.nodes.borrow_mut();
        let mut c = nodes[*node as usize].first_child;
        while c != NONE {
            let next = nodes[c as usize].next;
            Self::append_node(&mut nodes, *new_parent, c);
            c = next;
        }
    }
}

impl Dom {
    fn sink() -> Sink {
        Sink {
            nodes: RefCell::new(vec![Node::new(no_name(), Kind::Document)]),
        }
    }

    /// Parses a decoded document: our tokenizer ([`super::tokenize`]) feeding html5ever's
    /// tree builder.
    pub fn parse(html: &str) -> Dom {
        let tb = TreeBuilder::new(Self::sink(), TreeBuilderOpts::default());
        super::tokenize::tokenize(html, &tb);
        tb.sink.finish()
    }

    /// Parses with html5ever's own tokenizer: the reference the tests hold
    /// [`Dom::parse`] to.
    #[cfg(test)]
    pub fn parse_reference(html: &str) -> Dom {
        use html5ever::tendril::TendrilSink;
        html5ever::parse_document(Self::sink(), html5ever::ParseOpts::default()).one(html)
    }

    /// Visits the subtree under `root` in document order without recursion. `enter` returns
    /// whether to descend into a node's children; `leave` is called after an entered node's
    /// children.
    pub fn preorder(
        &self,
        root: u32,
        mut enter: impl FnMut(u32, &Node) -> bool,
        mut leave: impl FnMut(u32, &Node),
    ) {
        let mut stack: Vec<(u32, bool)> = vec![(root, false)];
        while let Some((i, entered)) = stack.pop() {
            let n = &self.nodes[i as usize];
            if entered {
                leave(i, n);
                continue;
            }
            if !enter(i, n) {
                continue;
            }
            stack.push((i, true));
            // Children pushed last-first so the first child is visited first.
            let mut c = n.last_child;
            while c != NONE {
                stack.push((c, false));
                c = self.nodes[c as usize].prev;
            }
        }
    }
}

/// Every text node's text in document order (for tests).
#[cfg(test)]
pub(crate) fn text_of(d: &Dom) -> String {
    let mut s = String::new();
    d.preorder(
        0,
        |_, n| {
            if let Kind::Text(t) = &n.kind {
                s.push_str(t);
            }
            true
        },
        |_, _| {},
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misnested_markup_is_repaired_as_browsers_do() {
        let d = Dom::parse("<p>one<p>two <b>bold <i>both</b> italic</i><table><td>cell</table>");
        assert_eq!(text_of(&d), "onetwo bold both italiccell");
        let tags: Vec<&str> = d
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, Kind::Element { .. }))
            .map(|n| n.tag())
            .collect();
        for t in ["html", "head", "body", "p", "table", "tbody", "tr", "td"] {
            assert!(tags.contains(&t), "{t} in {tags:?}");
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // Deep enough for a recursive walk to overflow a test thread's 2 MiB stack; html5ever
        // itself is quadratic in the nesting depth, so not deeper.
        let html = "<div>".repeat(30_000) + "deep" + &"</div>".repeat(30_000);
        let d = Dom::parse(&html);
        assert_eq!(text_of(&d), "deep");
    }
}
