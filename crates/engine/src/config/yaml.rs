//! YAML parsed into a tree that remembers where every node came from.
//!
//! serde_yaml and friends throw positions away once a value is built, but every config error
//! cbound reports must point at `file:line:column`. So the pipeline file is read through
//! yaml-rust2's event parser into [`Node`]s that carry a [`Span`], and duplicate keys (which
//! YAML parsers usually resolve silently, last one wins) are reported instead of dropped.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// A position in the pipeline file, 1-based. Line 0 means "not from the file" (a `--set`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

impl Span {
    /// The span given to values that came from the command line.
    pub const COMMAND_LINE: Span = Span { line: 0, col: 0 };

    fn from_marker(m: &Marker) -> Span {
        Span {
            line: m.line(),
            col: m.col() + 1,
        }
    }

    pub fn is_command_line(&self) -> bool {
        self.line == 0
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A mapping entry. Keys are always strings in a pipeline file; the key's own span is kept
/// because "unknown key" errors point at the key, not at its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// A problem found while reading YAML text: where, and what.
#[derive(Clone, Debug, PartialEq)]
pub struct YamlProblem {
    pub span: Span,
    pub path: String,
    pub message: String,
}

impl Node {
    pub fn new(kind: NodeKind, span: Span) -> Node {
        Node { kind, span }
    }

    /// The name of this node's type as a user would say it.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a number",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Looks up `key` in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.as_map()?.iter().find(|e| e.key == key)
    }

    /// Converts to JSON, the form typed stage parameters are deserialised from.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::from(*i),
            NodeKind::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                // JSON has no NaN or infinity; keep them readable rather than losing them.
                .unwrap_or_else(|| Value::String(f.to_string())),
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// Builds a node from JSON, every part of it placed at `span`.
    pub fn from_json(value: &serde_json::Value, span: Span) -> Node {
        use serde_json::Value;
        let kind = match value {
            Value::Null => NodeKind::Null,
            Value::Bool(b) => NodeKind::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => NodeKind::Int(i),
                None => NodeKind::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => NodeKind::Str(s.clone()),
            Value::Array(items) => {
                NodeKind::Seq(items.iter().map(|v| Node::from_json(v, span)).collect())
            }
            Value::Object(map) => NodeKind::Map(
                map.iter()
                    .map(|(k, v)| Entry {
                        key: k.clone(),
                        key_span: span,
                        value: Node::from_json(v, span),
                    })
                    .collect(),
            ),
        };
        Node { kind, span }
    }

    /// Finds the span of the node at a JSON-pointer-like path of keys and indices, falling
    /// back to the deepest ancestor that exists (a missing field is reported at its parent).
    pub fn span_at(&self, path: &[PathSeg]) -> Span {
        let mut node = self;
        let mut span = self.span;
        for seg in path {
            let next = match (seg, &node.kind) {
                (PathSeg::Key(k), NodeKind::Map(entries)) => entries
                    .iter()
                    .find(|e| &e.key == k)
                    .map(|e| (e.key_span, &e.value)),
                (PathSeg::Index(i), NodeKind::Seq(items)) => items.get(*i).map(|n| (n.span, n)),
                _ => None,
            };
            match next {
                Some((key_span, child)) => {
                    // A value span is more precise for scalars; a key span for containers,
                    // whose own span often points at their first child.
                    span = match child.kind {
                        NodeKind::Map(_) | NodeKind::Seq(_) => key_span,
                        _ => child.span,
                    };
                    node = child;
                }
                None => break,
            }
        }
        span
    }
}

pub use cbound_core::params::{render_path, PathSeg};

/// Parses one YAML document. A syntax error is returned alone (nothing after it can be
/// trusted); structural problems such as duplicate keys are all collected.
pub fn parse(text: &str) -> Result<(Node, Vec<YamlProblem>), YamlProblem> {
    // A UTF-8 byte-order mark is not content; left in, it would become part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // All documents are read so that a second one is reported instead of silently ignored.
    parser.load(&mut builder, true).map_err(|e| YamlProblem {
        span: Span::from_marker(e.marker()),
        path: String::new(),
        message: format!("YAML syntax error: {}", e.info()),
    })?;
    let root = builder
        .root
        .unwrap_or_else(|| Node::new(NodeKind::Null, Span { line: 1, col: 1 }));
    Ok((root, builder.problems))
}

/// Parses a single value given on the command line (`--set key=VALUE`) with YAML rules, so
/// `3` is a number, `[0.1, 0.2]` a list and `abc` a string.
pub fn parse_value(text: &str) -> Node {
    match parse(text) {
        Ok((node, problems)) if problems.is_empty() => relocate(node, Span::COMMAND_LINE),
        _ => Node::new(NodeKind::Str(text.to_string()), Span::COMMAND_LINE),
    }
}

fn relocate(mut node: Node, span: Span) -> Node {
    node.span = span;
    node.kind = match node.kind {
        NodeKind::Seq(items) => {
            NodeKind::Seq(items.into_iter().map(|n| relocate(n, span)).collect())
        }
        NodeKind::Map(entries) => NodeKind::Map(
            entries
                .into_iter()
                .map(|e| Entry {
                    key: e.key,
                    key_span: span,
                    value: relocate(e.value, span),
                })
                .collect(),
        ),
        other => other,
    };
    node
}

enum Frame {
    Seq {
        items: Vec<Node>,
        span: Span,
        anchor: usize,
    },
    Map {
        entries: Vec<Entry>,
        /// Key -> position in `entries`: duplicate keys are found in constant time, so a
        /// mapping with 100k keys loads in linear time.
        index: HashMap<String, usize>,
        pending_key: Option<(String, Span)>,
        span: Span,
        anchor: usize,
    },
}

/// The most values a document may hold once its aliases are expanded: far above any real
/// pipeline, far below what a few hundred bytes of nested aliases (an "alias bomb") expand to.
pub const MAX_EXPANDED_VALUES: usize = 1_000_000;

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Anchored nodes with their size in values (for the expansion budget).
    anchors: HashMap<usize, (Node, usize)>,
    problems: Vec<YamlProblem>,
    /// Values in the document so far, aliases expanded.
    values: usize,
    /// Set once the budget is exceeded: further aliases become null, with one problem.
    over_budget: bool,
    documents: usize,
}

/// Number of values in a tree (scalars, lists and mappings each count one).
fn size(node: &Node) -> usize {
    1 + match &node.kind {
        NodeKind::Seq(items) => items.iter().map(size).sum(),
        NodeKind::Map(entries) => entries.iter().map(|e| size(&e.value)).sum(),
        _ => 0,
    }
}

impl Builder {
    fn current_path(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => parts.push(format!("[{}]", items.len())),
                Frame::Map { pending_key, .. } => {
                    if let Some((k, _)) = pending_key {
                        parts.push(k.clone());
                    }
                }
            }
        }
        let mut out = String::new();
        for p in parts {
            if !p.starts_with('[') && !out.is_empty() {
                out.push('.');
            }
            out.push_str(&p);
        }
        out
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let n = size(&node);
            self.anchors.insert(anchor, (node.clone(), n));
        }
        let path = self.current_path();
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                index,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let key = match &node.kind {
                        NodeKind::Str(s) => s.clone(),
                        NodeKind::Int(i) => i.to_string(),
                        NodeKind::Bool(b) => b.to_string(),
                        NodeKind::Float(f) => f.to_string(),
                        NodeKind::Null => "null".to_string(),
                        _ => {
                            self.problems.push(YamlProblem {
                                span: node.span,
                                path,
                                message: "mapping keys must be plain strings".into(),
                            });
                            "<invalid key>".to_string()
                        }
                    };
                    *pending_key = Some((key, node.span));
                }
                Some((key, key_span)) => {
                    if let Some(first) = index.get(&key).map(|&i| &entries[i]) {
                        self.problems.push(YamlProblem {
                            span: key_span,
                            path,
                            message: format!(
                                "duplicate key `{key}` (first defined at line {}, column {})",
                                first.key_span.line, first.key_span.col
                            ),
                        });
                    } else {
                        index.insert(key.clone(), entries.len());
                        entries.push(Entry {
                            key,
                            key_span,
                            value: node,
                        });
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let span = Span::from_marker(&mark);
        if let Event::DocumentStart = ev {
            self.documents += 1;
            if self.documents == 2 {
                self.problems.push(YamlProblem {
                    span,
                    path: String::new(),
                    message: "a second YAML document starts here: a pipeline file holds one \
                              document (remove the `---` line, or split the file)"
                        .into(),
                });
            }
        }
        // Nothing of a second document is read: it would replace the first.
        if self.documents > 1 {
            return;
        }
        if matches!(
            ev,
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..)
        ) {
            self.values += 1;
        }
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let kind = if style == TScalarStyle::Plain {
                    match Yaml::from_str(&value) {
                        Yaml::Null => NodeKind::Null,
                        Yaml::Boolean(b) => NodeKind::Bool(b),
                        Yaml::Integer(i) => NodeKind::Int(i),
                        Yaml::Real(r) => NodeKind::Float(parse_yaml_float(&r)),
                        _ => NodeKind::Str(value),
                    }
                } else {
                    NodeKind::Str(value)
                };
                self.push_value(Node::new(kind, span), anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                span,
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                entries: Vec::new(),
                index: HashMap::new(),
                pending_key: None,
                span,
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        span,
                        anchor,
                    }) => (Node::new(NodeKind::Seq(items), span), anchor),
                    Some(Frame::Map {
                        entries,
                        span,
                        anchor,
                        ..
                    }) => (Node::new(NodeKind::Map(entries), span), anchor),
                    None => return,
                };
                self.push_value(node, anchor);
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some((_, n)) if self.over_budget || self.values + n > MAX_EXPANDED_VALUES => {
                        if !self.over_budget {
                            self.over_budget = true;
                            self.problems.push(YamlProblem {
                                span,
                                path: self.current_path(),
                                message: format!(
                                    "aliases expand this document to more than {MAX_EXPANDED_VALUES} \
                                     values (nested aliases that multiply, an \"alias bomb\"?); \
                                     write the values out or use fewer levels of aliases"
                                ),
                            });
                        }
                        Node::new(NodeKind::Null, span)
                    }
                    Some((n, k)) => {
                        self.values += k;
                        n.clone()
                    }
                    None => {
                        self.problems.push(YamlProblem {
                            span,
                            path: self.current_path(),
                            message: "alias refers to an unknown anchor".into(),
                        });
                        Node::new(NodeKind::Null, span)
                    }
                };
                self.push_value(node, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

fn parse_yaml_float(text: &str) -> f64 {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => f64::INFINITY,
        "-.inf" | "-.Inf" | "-.INF" => f64::NEG_INFINITY,
        ".nan" | ".NaN" | ".NAN" => f64::NAN,
        _ => text.parse().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_is_not_part_of_the_first_key() {
        let (root, problems) = parse("\u{feff}name: x\n").unwrap();
        assert!(problems.is_empty());
        assert_eq!(root.get("name").unwrap().value.as_str(), Some("x"));
    }

    #[test]
    fn a_second_document_is_reported_not_ignored() {
        let (root, problems) = parse("name: a\n---\nname: b\n").unwrap();
        assert_eq!(root.get("name").unwrap().value.as_str(), Some("a"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("second YAML document"));
        assert_eq!(problems[0].span.line, 2);
    }

    #[test]
    fn alias_bombs_stop_at_the_budget_quickly() {
        // Each level multiplies by 9: 9^9 = 387 million values from a few hundred bytes.
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            text.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        // Without the budget this expands 387 million nodes and runs out of memory.
        let (_, problems) = parse(&text).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("alias bomb"), "{problems:?}");
    }

    #[test]
    fn many_keys_load_in_linear_time() {
        let text: String = (0..100_000).map(|i| format!("k{i}: {i}\n")).collect();
        // A quadratic duplicate check made this take tens of seconds (no timing is asserted:
        // the suite's own time shows a regression).
        let (root, problems) = parse(&text).unwrap();
        assert!(problems.is_empty());
        assert_eq!(root.as_map().unwrap().len(), 100_000);
    }

    #[test]
    fn spans_are_one_based_and_point_at_keys_and_values() {
        let (root, problems) = parse("name: demo\nstages:\n  a:\n    kind: synthetic\n").unwrap();
        assert!(problems.is_empty());
        let stages = root.get("stages").unwrap();
        assert_eq!(stages.key_span, Span { line: 2, col: 1 });
        let a = stages.value.get("a").unwrap();
        assert_eq!(a.key_span, Span { line: 3, col: 3 });
        let kind = a.value.get("kind").unwrap();
        assert_eq!(kind.value.span, Span { line: 4, col: 11 });
        assert_eq!(kind.value.as_str(), Some("synthetic"));
    }

    #[test]
    fn scalars_are_typed_like_yaml_and_quoted_stay_strings() {
        let (root, _) = parse("a: 3\nb: 0.5\nc: true\nd: '3'\ne: ~\nf: .inf\n").unwrap();
        let kinds: Vec<_> = root
            .as_map()
            .unwrap()
            .iter()
            .map(|e| &e.value.kind)
            .collect();
        assert_eq!(kinds[0], &NodeKind::Int(3));
        assert_eq!(kinds[1], &NodeKind::Float(0.5));
        assert_eq!(kinds[2], &NodeKind::Bool(true));
        assert_eq!(kinds[3], &NodeKind::Str("3".into()));
        assert_eq!(kinds[4], &NodeKind::Null);
        assert_eq!(kinds[5], &NodeKind::Float(f64::INFINITY));
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_positions() {
        let (_, problems) = parse("stages:\n  a: 1\n  a: 2\n").unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].span, Span { line: 3, col: 3 });
        assert!(problems[0].message.contains("line 2, column 3"));
        assert_eq!(problems[0].path, "stages.a");
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.span.line >= 1);
        assert!(err.message.contains("syntax"));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let (root, problems) = parse("x: &v [1, 2]\ny: *v\n").unwrap();
        assert!(problems.is_empty());
        assert_eq!(
            root.get("y").unwrap().value.to_json(),
            serde_json::json!([1, 2])
        );
    }

    #[test]
    fn span_at_finds_nested_values_and_falls_back_to_parents() {
        let (root, _) = parse("a:\n  b: [10, 20]\n").unwrap();
        let path = [
            PathSeg::Key("a".into()),
            PathSeg::Key("b".into()),
            PathSeg::Index(1),
        ];
        assert_eq!(root.span_at(&path), Span { line: 2, col: 11 });
        let missing = [PathSeg::Key("a".into()), PathSeg::Key("zz".into())];
        assert_eq!(root.span_at(&missing), Span { line: 1, col: 1 });
        assert_eq!(render_path(&path), "a.b[1]");
    }

    #[test]
    fn command_line_values_parse_as_yaml() {
        assert_eq!(parse_value("3").kind, NodeKind::Int(3));
        assert_eq!(
            parse_value("[0.1, 0.2]").to_json(),
            serde_json::json!([0.1, 0.2])
        );
        assert_eq!(
            parse_value("hello world").kind,
            NodeKind::Str("hello world".into())
        );
        assert!(parse_value("3").span.is_command_line());
    }
}
