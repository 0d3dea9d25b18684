//! A YAML document as a tree of nodes that remember where they came from.
//!
//! serde stops at the first error and forgets positions; users of `job/config.yaml` need every
//! error with its line and column. So the file is first read into this tree (with saphyr's event
//! parser, the same parser family serde-saphyr uses), duplicate keys are caught here, and the
//! schema check walks the tree.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in the source text: line and column, both 1-based, as editors show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    fn from_span(span: &Span) -> Self {
        Location {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One YAML node with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub location: Location,
    pub value: NodeValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    /// A scalar: its text exactly as written (after unquoting), and whether it was plain
    /// (unquoted), which decides whether `3` is a number or `"3"` a string.
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

impl Node {
    /// YAML 1.2 core schema null: `~`, `null`, or nothing at all.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, NodeValue::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// What kind of node this is, for error messages ("expected a list, found a mapping").
    pub fn describe(&self) -> &'static str {
        match &self.value {
            _ if self.is_null() => "null",
            NodeValue::Scalar { .. } => "a scalar",
            NodeValue::Sequence(_) => "a list",
            NodeValue::Mapping(_) => "a mapping",
        }
    }
}

/// A YAML syntax error, a duplicate key, or a second document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    pub location: Location,
    pub message: String,
}

/// A YAML document read into a located tree, with the problems that did not stop the reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The (first) document; an empty document is a null scalar at 1:1.
    pub root: Node,
    /// Every duplicate key (the tree keeps both entries) and a second document (left out).
    pub errors: Vec<YamlError>,
}

/// The most nodes a config file's tree may hold, every alias counted as the nodes it repeats.
/// A config of 200 actions has about 8,000 (the benchmark's); an alias that repeats an alias
/// that repeats … (the "billion laughs") would otherwise grow the tree exponentially from a few
/// hundred bytes.
pub const MAX_NODES: usize = 250_000;

/// The most bytes of scalar text a config file's tree may hold, every alias counted as the text
/// it repeats and every anchor as the copy kept of it: a 300 KB scalar repeated by 170,000
/// aliases is 170,000 nodes but 51 GB.
pub const MAX_TEXT_BYTES: usize = 16 << 20;

/// The most collections a config file's tree may nest: the tree is read, dropped and walked by
/// recursion, and a list of 200,000 `- - - …` would overflow the stack (the parser caps flow
/// collections at 255 levels, not block ones).
pub const MAX_DEPTH: usize = 128;

/// Parses a single YAML document into a located tree.
///
/// A syntax error stops the parser, so it is the only error returned; duplicate keys and
/// further documents do not, so the tree can still be checked.
pub fn parse_document(text: &str) -> Result<Document, YamlError> {
    let mut builder = TreeBuilder::default();
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => builder.push(event, &span)?,
            Err(error) => {
                let marker = error.marker();
                return Err(YamlError {
                    location: Location {
                        line: marker.line(),
                        column: marker.col() + 1,
                    },
                    message: format!("invalid YAML: {}", error.info()),
                });
            }
        }
    }
    builder.finish()
}

enum Frame {
    Sequence(Location, Vec<Node>),
    Mapping {
        location: Location,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        /// The line of each scalar key so far, to report a duplicate without a scan.
        keys: HashMap<String, usize>,
    },
}

/// The error of a file nested past [`MAX_DEPTH`].
fn too_deep(location: Location, how: &str) -> YamlError {
    YamlError {
        location,
        message: format!(
            "the file is nested too deeply: more than {MAX_DEPTH} lists and mappings inside one \
             another{how}"
        ),
    }
}

/// A collection under construction, and the nodes and bytes of text in it so far.
struct Open {
    frame: Frame,
    nodes: usize,
    bytes: usize,
    /// The most collections nested in one another inside it so far.
    height: usize,
}

/// An anchored node, its size in nodes, its bytes of text, and its height: the most
/// collections nested in one another in it (0 for a scalar).
struct Anchored {
    node: Node,
    size: usize,
    bytes: usize,
    height: usize,
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Open>,
    /// Each anchored node (what an alias to it adds).
    anchors: HashMap<usize, Anchored>,
    /// Nodes in the tree so far, aliases expanded.
    nodes: usize,
    /// Bytes of scalar text in the tree and in the anchors' copies so far.
    bytes: usize,
    /// Anchor ids of the collections under construction, to register when they close.
    open_anchors: Vec<usize>,
    documents: Vec<Node>,
    errors: Vec<YamlError>,
}

impl TreeBuilder {
    fn push(&mut self, event: Event<'_>, span: &Span) -> Result<(), YamlError> {
        let location = Location::from_span(span);
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let bytes = text.len();
                let node = Node {
                    location,
                    value: NodeValue::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                self.count(1, bytes, location)?;
                if anchor != 0 {
                    self.count(1, bytes, location)?;
                    let anchored = Anchored {
                        node: node.clone(),
                        size: 1,
                        bytes,
                        height: 0,
                    };
                    self.anchors.insert(anchor, anchored);
                }
                self.place(node, 1, bytes, 0);
            }
            Event::Alias(anchor) => {
                let Some((size, bytes, height)) = self
                    .anchors
                    .get(&anchor)
                    .map(|a| (a.size, a.bytes, a.height))
                else {
                    return Err(YamlError {
                        location,
                        message: "invalid YAML: alias to an unknown anchor".to_string(),
                    });
                };
                // An alias nests what it repeats where it stands: aliases of nested anchors
                // would otherwise build a tree thousands of levels deep from a small file, and
                // reading it (recursively) would overflow the stack.
                if self.stack.len() + height > MAX_DEPTH {
                    return Err(too_deep(location, " once aliases are expanded"));
                }
                // Counted before the copy is made: the copy is what could exhaust memory.
                self.count(size, bytes, location)?;
                if let Some(anchored) = self.anchors.get(&anchor) {
                    let mut node = anchored.node.clone();
                    node.location = location;
                    self.place(node, size, bytes, height);
                }
            }
            Event::SequenceStart(anchor, _) => {
                self.open(location)?;
                self.open_anchors.push(anchor);
                self.stack.push(Open {
                    frame: Frame::Sequence(location, Vec::new()),
                    nodes: 0,
                    bytes: 0,
                    height: 0,
                });
            }
            Event::MappingStart(anchor, _) => {
                self.open(location)?;
                self.open_anchors.push(anchor);
                self.stack.push(Open {
                    frame: Frame::Mapping {
                        location,
                        entries: Vec::new(),
                        pending_key: None,
                        keys: HashMap::new(),
                    },
                    nodes: 0,
                    bytes: 0,
                    height: 0,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(Open {
                    frame,
                    nodes,
                    bytes,
                    height,
                }) = self.stack.pop()
                else {
                    return Ok(());
                };
                let node = match frame {
                    Frame::Sequence(location, items) => Node {
                        location,
                        value: NodeValue::Sequence(items),
                    },
                    Frame::Mapping {
                        location, entries, ..
                    } => Node {
                        location,
                        value: NodeValue::Mapping(merge_keys(entries, &mut self.errors)),
                    },
                };
                // The collection itself was counted when it started; the copy an anchor keeps
                // is counted as it is made (anchors nested in anchors copy their insides again).
                let size = nodes + 1;
                let height = height + 1;
                if let Some(anchor) = self.open_anchors.pop()
                    && anchor != 0
                {
                    self.count(size, bytes, node.location)?;
                    let anchored = Anchored {
                        node: node.clone(),
                        size,
                        bytes,
                        height,
                    };
                    self.anchors.insert(anchor, anchored);
                }
                self.place(node, size, bytes, height);
            }
            Event::DocumentStart(_) | Event::DocumentEnd => {}
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }

    /// Counts a collection that starts, or refuses one nested past [`MAX_DEPTH`].
    fn open(&mut self, location: Location) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(too_deep(location, ""));
        }
        self.count(1, 0, location)
    }

    /// Counts `size` more nodes and `bytes` more of text into the tree, or refuses the file once
    /// it passes [`MAX_NODES`] or [`MAX_TEXT_BYTES`].
    fn count(&mut self, size: usize, bytes: usize, location: Location) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(size);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                location,
                message: format!(
                    "the file is too large: more than {MAX_NODES} YAML nodes once aliases are \
                     expanded (an alias counts every node it repeats)"
                ),
            });
        }
        if self.bytes > MAX_TEXT_BYTES {
            return Err(YamlError {
                location,
                message: format!(
                    "the file is too large: more than {MAX_TEXT_BYTES} bytes of text once \
                     aliases are expanded (an alias counts the text it repeats)"
                ),
            });
        }
        Ok(())
    }

    /// Puts a counted node of `size` nodes and `bytes` of text into the collection under
    /// construction.
    fn place(&mut self, node: Node, size: usize, bytes: usize, height: usize) {
        let Some(open) = self.stack.last_mut() else {
            self.documents.push(node);
            return;
        };
        open.nodes += size;
        open.bytes += bytes;
        open.height = open.height.max(height);
        match &mut open.frame {
            Frame::Sequence(_, items) => items.push(node),
            Frame::Mapping {
                entries,
                pending_key,
                keys,
                ..
            } => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    // Merge keys may repeat, each merged in turn ([`merge_keys`]).
                    let merge = matches!(&key.value, NodeValue::Scalar { text, plain: true } if text == "<<");
                    if let NodeValue::Scalar { text, .. } = &key.value
                        && !merge
                    {
                        match keys.entry(text.clone()) {
                            Entry::Occupied(first) => self.errors.push(YamlError {
                                location: key.location,
                                message: format!(
                                    "duplicate key \"{text}\" (first defined at line {})",
                                    first.get()
                                ),
                            }),
                            Entry::Vacant(slot) => {
                                slot.insert(key.location.line);
                            }
                        }
                    }
                    entries.push((key, node));
                }
            },
        }
    }

    fn finish(mut self) -> Result<Document, YamlError> {
        // An empty document (a `---` at the end, or two in a row) holds nothing to lose; Keptn's
        // service read the first document alone, and configs written for it may end so.
        let empty = |node: &Node| matches!(&node.value, NodeValue::Scalar { text, plain: true } if text.is_empty());
        if self.documents.len() > 1 {
            self.documents.retain(|node| !empty(node));
        }
        if let Some(second) = self.documents.get(1) {
            self.errors.push(YamlError {
                location: second.location,
                message: "expected one YAML document, found several (separated by `---`)"
                    .to_string(),
            });
        }
        let root = self.documents.into_iter().next().unwrap_or(Node {
            location: Location { line: 1, column: 1 },
            value: NodeValue::Scalar {
                text: String::new(),
                plain: true,
            },
        });
        Ok(Document {
            root,
            errors: self.errors,
        })
    }
}

/// A mapping's entries with its merge keys (`<<: *defaults`, `<<: [*a, *b]`) applied, as
/// Keptn's service read them (Go's yaml.v2): the merged mappings' entries are added after the
/// mapping's own, each key only where neither the mapping nor an earlier merged mapping has it.
fn merge_keys(entries: Vec<(Node, Node)>, errors: &mut Vec<YamlError>) -> Vec<(Node, Node)> {
    let is_merge =
        |key: &Node| matches!(&key.value, NodeValue::Scalar { text, plain: true } if text == "<<");
    if !entries.iter().any(|(key, _)| is_merge(key)) {
        return entries;
    }
    let (merges, mut own): (Vec<_>, Vec<_>) =
        entries.into_iter().partition(|(key, _)| is_merge(key));
    let text_of = |key: &Node| match &key.value {
        NodeValue::Scalar { text, .. } => Some(text.clone()),
        _ => None,
    };
    let mut present: HashSet<String> = own.iter().filter_map(|(key, _)| text_of(key)).collect();
    for (_, value) in merges {
        let sources = match value.value {
            NodeValue::Mapping(entries) => vec![entries],
            NodeValue::Sequence(items) => {
                let mut sources = Vec::new();
                for item in items {
                    match item.value {
                        NodeValue::Mapping(entries) => sources.push(entries),
                        _ => errors.push(not_mergeable(&item)),
                    }
                }
                sources
            }
            _ => {
                errors.push(not_mergeable(&value));
                continue;
            }
        };
        for (merged_key, merged_value) in sources.into_iter().flatten() {
            if text_of(&merged_key).is_none_or(|text| present.insert(text)) {
                own.push((merged_key, merged_value));
            }
        }
    }
    own
}

fn not_mergeable(node: &Node) -> YamlError {
    YamlError {
        location: node.location,
        message: format!(
            "a merge key `<<` takes a mapping or a list of mappings, found {}",
            node.describe()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &str {
        match &node.value {
            NodeValue::Scalar { text, .. } => text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn records_locations_of_keys_and_values() {
        let doc = parse_document("a: 1\nb:\n  - x\n  - \"y\"\n").unwrap().root;
        let NodeValue::Mapping(entries) = &doc.value else {
            panic!()
        };
        assert_eq!(entries[1].0.location, Location { line: 2, column: 1 });
        let NodeValue::Sequence(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[1].location, Location { line: 4, column: 5 });
        assert_eq!(scalar(&items[1]), "y");
        assert!(matches!(
            items[0].value,
            NodeValue::Scalar { plain: true, .. }
        ));
        assert!(matches!(
            items[1].value,
            NodeValue::Scalar { plain: false, .. }
        ));
    }

    #[test]
    fn reports_every_duplicate_key() {
        let document = parse_document("a: 1\nb: 2\na: 3\nc:\n  x: 1\n  x: 2\n").unwrap();
        let errors = document.errors;
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].location, Location { line: 3, column: 1 });
        assert_eq!(
            errors[0].message,
            "duplicate key \"a\" (first defined at line 1)"
        );
        assert_eq!(errors[1].location, Location { line: 6, column: 3 });
        // The tree is still read, with both entries, so the rest can be checked.
        let NodeValue::Mapping(entries) = &document.root.value else {
            panic!()
        };
        assert_eq!(entries.len(), 4);
    }

    #[test]
    fn syntax_error_has_a_location() {
        // The unclosed `[` runs into the next line's key: the parser stops at its `:`.
        let error = parse_document("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(
            error.message,
            "invalid YAML: illegal placement of ':' indicator"
        );
        assert_eq!(error.location, Location { line: 2, column: 2 });
    }

    #[test]
    fn aliases_resolve_to_the_anchored_node() {
        let doc = parse_document("base: &b {x: 1}\ncopy: *b\n").unwrap().root;
        let NodeValue::Mapping(entries) = &doc.value else {
            panic!()
        };
        assert!(matches!(&entries[1].1.value, NodeValue::Mapping(e) if e.len() == 1));
    }

    #[test]
    fn alias_expansion_is_bounded() {
        // Nine levels of nine: 9^9 (387 million) nodes if every alias were copied.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for level in 1..=9 {
            let previous = format!("*a{}", level - 1);
            let items = [previous.as_str(); 9].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let error = parse_document(&text).unwrap_err();
        assert!(
            error.message.contains("more than 250000 YAML nodes"),
            "{error:?}"
        );
        // Where the tree passed the limit: an alias of the level that crosses it.
        assert_eq!(error.location.line, 6, "{error:?}");
        // Aliases within the limit still expand.
        let small = "base: &b {x: 1, y: [1, 2]}\nuse: [*b, *b, *b]\n";
        let doc = parse_document(small).unwrap();
        let NodeValue::Mapping(entries) = &doc.root.value else {
            panic!()
        };
        assert!(matches!(&entries[1].1.value, NodeValue::Sequence(items) if items.len() == 3));
    }

    #[test]
    fn the_node_limit_counts_every_node_once() {
        // A flat list just under the limit (the list and the root mapping count too).
        let items = MAX_NODES - 3;
        let text = format!("k: [{}]\n", vec!["1"; items].join(","));
        assert!(parse_document(&text).is_ok());
        let text = format!("k: [{}]\n", vec!["1"; items + 1].join(","));
        assert!(parse_document(&text).is_err());
    }

    #[test]
    fn describe_names_each_kind_of_node() {
        let doc = parse_document("n: ~\ne:\ns: x\nq: 'null'\nl: [1]\nm: {a: 1}\n").unwrap();
        let NodeValue::Mapping(entries) = &doc.root.value else {
            panic!()
        };
        let kinds: Vec<&str> = entries.iter().map(|(_, value)| value.describe()).collect();
        assert_eq!(
            kinds,
            [
                "null",
                "null",
                "a scalar",
                "a scalar",
                "a list",
                "a mapping"
            ]
        );
    }

    #[test]
    fn a_scalar_anchor_is_aliased() {
        let doc = parse_document("a: &x hello\nb: *x\nc: plain\n").unwrap();
        let NodeValue::Mapping(entries) = &doc.root.value else {
            panic!()
        };
        assert!(
            matches!(&entries[1].1.value, NodeValue::Scalar { text, .. } if text == "hello"),
            "{entries:?}"
        );
    }

    #[test]
    fn an_alias_counts_the_whole_collection_it_repeats() {
        // The root mapping, three keys, `x` (a list and its 9 items) and the anchor's copy of it,
        // `b` (a list of `n` aliases, each 10 nodes) and `c` (a list of `m` items):
        // 26 + 10 n + m nodes.
        let text = |m: usize| {
            let n = 24_997;
            format!(
                "a: &x [0, 0, 0, 0, 0, 0, 0, 0, 0]\nb: [{}]\nc: [{}]\n",
                vec!["*x"; n].join(", "),
                vec!["0"; m].join(", ")
            )
        };
        assert_eq!(26 + 10 * 24_997 + 4, MAX_NODES);
        assert!(parse_document(&text(4)).is_ok(), "exactly at the limit");
        let error = parse_document(&text(5)).unwrap_err();
        assert!(
            error.message.contains("more than 250000 YAML nodes"),
            "{error:?}"
        );
        assert_eq!(error.location.line, 3, "{error:?}");
    }

    /// What a few hundred KB can make of aliases and anchors stays bounded: text repeated by
    /// aliases counts as the text it repeats, anchors nested in anchors count the copies they
    /// keep, and nesting is bounded (the tree is dropped and walked by recursion).
    #[test]
    fn repeated_text_nested_anchors_and_deep_nesting_are_refused() {
        let big = "y".repeat(300_000);
        let aliases = vec!["*x"; 100].join(", ");
        let error = parse_document(&format!("a: &x {big}\nb: [{aliases}]\n")).unwrap_err();
        assert!(
            error.message.contains("more than 16777216 bytes of text"),
            "{error:?}"
        );
        assert_eq!(error.location.line, 2);
        // 60 anchors, each around the one inside it, around 5,000 items: no alias at all.
        let items = vec!["x"; 5_000].join(", ");
        let nested = format!("k: {}[{items}]{}\n", "&a [".repeat(60), "]".repeat(60));
        let error = parse_document(&nested).unwrap_err();
        assert!(
            error.message.contains("more than 250000 YAML nodes"),
            "{error:?}"
        );
        let deep = format!("{}x\n", "- ".repeat(200_000));
        let error = parse_document(&deep).unwrap_err();
        assert!(
            error.message.contains("nested too deeply: more than 128"),
            "{error:?}"
        );
        assert!(parse_document(&format!("{}x\n", "- ".repeat(MAX_DEPTH))).is_ok());
    }

    /// An alias nests what it repeats where it stands: a chain of anchors, each holding an
    /// alias to the one before it, is refused once it nests past the bound (a few KB of them
    /// made a tree thousands of levels deep that overflowed the stack when read).
    #[test]
    fn aliases_that_nest_past_the_bound_are_refused() {
        // 127 lists inside the root mapping: 128 collections nested, the bound.
        let anchored = format!("a: &a {}x{}\n", "[".repeat(127), "]".repeat(127));
        assert!(parse_document(&format!("{anchored}b: *a\n")).is_ok());
        let error = parse_document(&format!("{anchored}b: *a\nc: [*a]\n")).unwrap_err();
        assert_eq!(
            error.message,
            "the file is nested too deeply: more than 128 lists and mappings inside one another \
             once aliases are expanded"
        );
        assert_eq!(error.location, Location { line: 3, column: 5 });
        // Each anchor 100 lists deep around an alias to the one before: the second is refused.
        let mut chain = String::from("a0: &a0 x\n");
        for i in 1..40 {
            let around = |s: &str| s.repeat(100);
            chain.push_str(&format!(
                "a{i}: &a{i} {}*a{}{}\n",
                around("["),
                i - 1,
                around("]")
            ));
        }
        let error = parse_document(&chain).unwrap_err();
        assert!(
            error.message.contains("once aliases are expanded"),
            "{error:?}"
        );
        assert_eq!(error.location.line, 3, "{error:?}");
    }

    #[test]
    fn empty_document_is_null() {
        assert!(parse_document("").unwrap().root.is_null());
        assert!(parse_document("# only a comment\n").unwrap().root.is_null());
    }

    #[test]
    fn empty_documents_beside_the_config_are_ignored() {
        for text in [
            "a: 1\n---\n",
            "a: 1\n---\n...\n",
            "---\na: 1\n---\n---\n",
            "---\n---\na: 1\n",
        ] {
            let document = parse_document(text).unwrap();
            assert!(
                document.errors.is_empty(),
                "{text:?}: {:?}",
                document.errors
            );
            assert!(
                matches!(&document.root.value, NodeValue::Mapping(e) if e.len() == 1),
                "{text:?}"
            );
        }
        // A document that holds something is no config's.
        let document = parse_document("a: 1\n---\n~\n").unwrap();
        assert!(document.errors[0].message.contains("one YAML document"));
    }

    #[test]
    fn several_documents_are_an_error() {
        let document = parse_document("a: 1\n---\nb: 2\n").unwrap();
        assert!(document.errors[0].message.contains("one YAML document"));
        assert_eq!(document.errors[0].location, Location { line: 3, column: 1 });
        assert!(matches!(&document.root.value, NodeValue::Mapping(e) if e.len() == 1));
    }
}
