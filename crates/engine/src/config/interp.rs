//! `${...}` interpolation and `--set` overrides, both applied to the spanned YAML tree so
//! that an error in an interpolated or overridden value still points at a real location.
//!
//! `${name}` refers to an entry of the pipeline's `vars:` (nested with dots: `${model.width}`)
//! or, as `${env.NAME}`, to an environment variable. A string that is exactly one reference
//! takes the referenced value with its type (`lr: ${lr}` stays a number); a reference inside
//! a longer string is spliced in as text. `$${` writes a literal `${`.

use std::collections::{HashMap, HashSet};

use super::diagnostics::Collector;
use super::yaml::{self, Entry, Node, NodeKind, Span};

/// Applies `--set key.path=value` overrides.
///
/// An override replaces what the file says, so its path must name something that can be
/// there: a stage the file declares (`stages.<id>...`) and a variable it defines
/// (`vars.<name>`) are checked here, with did-you-mean, and everything else (top-level keys,
/// a stage's fields, its kind's parameters) is checked by the loader like the file itself.
/// `+key.path=value` adds what the file does not have (a new stage or variable), as Hydra's
/// `+` does. A matrix axis is one key even with dots in it:
/// `--set 'stages.train.matrix.model.encoder.output=[8, 32]'`. Missing mappings along the
/// path are created, so `--set stages.train.params.epochs=2` works whether or not the file
/// writes `params:`.
pub fn apply_overrides(root: &mut Node, overrides: &[String], errors: &mut Collector) {
    for item in overrides {
        let (add, item) = match item.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, item.as_str()),
        };
        let Some((key, value)) = item.split_once('=') else {
            errors.error_with_help(
                Span::COMMAND_LINE,
                item,
                format!("--set `{item}` has no `=`"),
                "write --set key.path=value, e.g. --set vars.epochs=2",
            );
            continue;
        };
        let key = key.trim();
        let mut segments: Vec<&str> = key.split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            errors.error(
                Span::COMMAND_LINE,
                key,
                format!("--set key `{key}` has an empty path segment"),
            );
            continue;
        }
        // `stages.<id>.matrix.<axis>`: the axis is a parameter path, dots and all.
        let axis;
        if segments.len() > 4 && segments[0] == "stages" && segments[2] == "matrix" {
            axis = segments[3..].join(".");
            segments.truncate(3);
            segments.push(&axis);
        }
        if let Err((message, help)) = check_override_path(root, &segments, add) {
            errors.error_with_help(Span::COMMAND_LINE, key, message, help);
            continue;
        }
        if let Err(message) = set_path(root, &segments, yaml::parse_value(value.trim())) {
            errors.error(Span::COMMAND_LINE, key, message);
        }
    }
}

/// The names a free-form mapping of the file declares (`stages`, `vars`).
fn declared<'a>(root: &'a Node, section: &str) -> Vec<&'a str> {
    root.get(section)
        .and_then(|e| e.value.as_map())
        .map(|m| m.iter().map(|e| e.key.as_str()).collect())
        .unwrap_or_default()
}

/// Whether an override may set `segments`: without `+`, a stage or variable it names must
/// exist; with `+`, the path must not exist yet (else the `+` is a mistake to point out).
fn check_override_path(root: &Node, segments: &[&str], add: bool) -> Result<(), (String, String)> {
    let rendered = segments.join(".");
    if add {
        let mut node = root;
        for seg in segments {
            match node.get(seg) {
                Some(e) => node = &e.value,
                None => return Ok(()),
            }
        }
        return Err((
            format!("`+{rendered}` adds a key, but the pipeline already sets it"),
            format!("drop the `+` to replace it: --set {rendered}=..."),
        ));
    }
    let (section, what) = match segments.first() {
        Some(&"stages") => ("stages", "stage"),
        Some(&"vars") => ("vars", "variable"),
        _ => return Ok(()),
    };
    let Some(name) = segments.get(1) else {
        return Ok(());
    };
    let names = declared(root, section);
    if names.contains(name) {
        return Ok(());
    }
    let message = format!("the pipeline has no {what} `{name}` (in `--set {rendered}=...`)");
    let help = match super::diagnostics::did_you_mean(name, &names) {
        Some(s) => format!(
            "did you mean `{s}`? ({section}: {}); to add a new {what}, write --set +{rendered}=...",
            names.join(", ")
        ),
        None if names.is_empty() => {
            format!("the file has no `{section}`; to add one, write --set +{rendered}=...")
        }
        None => format!(
            "{section}: {}; to add a new {what}, write --set +{rendered}=...",
            names.join(", ")
        ),
    };
    Err((message, help))
}

fn set_path(node: &mut Node, segments: &[&str], value: Node) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else {
        *node = value;
        return Ok(());
    };
    if matches!(node.kind, NodeKind::Null) {
        node.kind = NodeKind::Map(Vec::new());
    }
    let type_name = node.type_name();
    let NodeKind::Map(entries) = &mut node.kind else {
        return Err(format!("cannot set `{first}` inside {type_name}"));
    };
    let pos = match entries.iter().position(|e| e.key == *first) {
        Some(pos) => pos,
        None => {
            entries.push(Entry {
                key: first.to_string(),
                key_span: Span::COMMAND_LINE,
                value: Node::new(NodeKind::Null, Span::COMMAND_LINE),
            });
            entries.len() - 1
        }
    };
    set_path(&mut entries[pos].value, rest, value)
}

/// Resolves `${...}` references. Variables may refer to other variables; cycles are errors.
pub struct Interpolator<'a> {
    raw: &'a [Entry],
    resolved: HashMap<String, Option<Node>>,
    visiting: Vec<String>,
    /// Variables some `${...}` referred to (in the tree or in another variable).
    referenced: HashSet<String>,
}

impl<'a> Interpolator<'a> {
    pub fn new(vars: &'a [Entry]) -> Interpolator<'a> {
        Interpolator {
            raw: vars,
            resolved: HashMap::new(),
            visiting: Vec::new(),
            referenced: HashSet::new(),
        }
    }

    /// The variables nothing referred to so far: after every value of the file has been
    /// interpolated, a variable in this list does nothing (usually a typo of one that does).
    pub fn unused(&self) -> Vec<&'a Entry> {
        self.raw
            .iter()
            .filter(|e| !self.referenced.contains(&e.key))
            .collect()
    }

    /// All variables, resolved, in file order (for the record of a run).
    pub fn resolved_vars(&mut self, errors: &mut Collector) -> Vec<(String, Node)> {
        let names: Vec<String> = self.raw.iter().map(|e| e.key.clone()).collect();
        names
            .into_iter()
            .filter_map(|name| {
                let span = self.raw.iter().find(|e| e.key == name)?.key_span;
                self.var(&name, span, errors).map(|n| (name, n))
            })
            .collect()
    }

    fn var(&mut self, name: &str, used_at: Span, errors: &mut Collector) -> Option<Node> {
        if let Some(done) = self.resolved.get(name) {
            return done.clone();
        }
        let entry = self.raw.iter().find(|e| e.key == name)?;
        if self.visiting.iter().any(|v| v == name) {
            let mut cycle = self.visiting.clone();
            cycle.push(name.to_string());
            errors.error(
                used_at,
                format!("vars.{name}"),
                format!(
                    "variables refer to each other in a cycle: {}",
                    cycle.join(" -> ")
                ),
            );
            return None;
        }
        self.visiting.push(name.to_string());
        let value = self.interpolate(&entry.value, &format!("vars.{name}"), errors);
        self.visiting.pop();
        self.resolved.insert(name.to_string(), Some(value.clone()));
        Some(value)
    }

    fn lookup(
        &mut self,
        reference: &str,
        span: Span,
        path: &str,
        errors: &mut Collector,
    ) -> Option<Node> {
        if let Some(env) = reference.strip_prefix("env.") {
            return match std::env::var(env) {
                Ok(v) => Some(Node::new(NodeKind::Str(v), span)),
                Err(_) => {
                    errors.error(
                        span,
                        path,
                        format!(
                            "environment variable `{env}` is not set (used as `${{{reference}}}`)"
                        ),
                    );
                    None
                }
            };
        }
        let mut parts = reference.split('.');
        let head = parts.next().unwrap_or_default();
        self.referenced.insert(head.to_string());
        if !self.raw.iter().any(|e| e.key == head) {
            let known: Vec<&str> = self.raw.iter().map(|e| e.key.as_str()).collect();
            errors.unknown(span, path, "variable", head, &known);
            return None;
        }
        let mut node = self.var(head, span, errors)?;
        let mut walked = head.to_string();
        for part in parts {
            let next = node.get(part).map(|e| e.value.clone());
            match next {
                Some(n) => node = n,
                None => {
                    errors.error(
                        span,
                        path,
                        format!("variable `{walked}` has no field `{part}`"),
                    );
                    return None;
                }
            }
            walked = format!("{walked}.{part}");
        }
        node.span = span;
        Some(node)
    }

    /// Returns a copy of `node` with every reference replaced.
    pub fn interpolate(&mut self, node: &Node, path: &str, errors: &mut Collector) -> Node {
        match &node.kind {
            NodeKind::Str(s) if s.contains("${") => {
                self.interpolate_str(s, node.span, path, errors)
            }
            NodeKind::Seq(items) => Node::new(
                NodeKind::Seq(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, n)| self.interpolate(n, &format!("{path}[{i}]"), errors))
                        .collect(),
                ),
                node.span,
            ),
            NodeKind::Map(entries) => Node::new(
                NodeKind::Map(
                    entries
                        .iter()
                        .map(|e| Entry {
                            key: e.key.clone(),
                            key_span: e.key_span,
                            value: self.interpolate(&e.value, &join(path, &e.key), errors),
                        })
                        .collect(),
                ),
                node.span,
            ),
            _ => node.clone(),
        }
    }

    fn interpolate_str(&mut self, s: &str, span: Span, path: &str, errors: &mut Collector) -> Node {
        let pieces = match split_references(s) {
            Ok(p) => p,
            Err(message) => {
                errors.error(span, path, message);
                return Node::new(NodeKind::Str(s.to_string()), span);
            }
        };
        if let [Piece::Ref(reference)] = pieces.as_slice() {
            return self
                .lookup(reference, span, path, errors)
                .unwrap_or_else(|| Node::new(NodeKind::Null, span));
        }
        let mut out = String::new();
        for piece in pieces {
            match piece {
                Piece::Text(t) => out.push_str(&t),
                Piece::Ref(reference) => {
                    if let Some(node) = self.lookup(&reference, span, path, errors) {
                        match scalar_text(&node) {
                            Some(text) => out.push_str(&text),
                            None => errors.error(
                                span,
                                path,
                                format!(
                                    "`${{{reference}}}` is {} and cannot be spliced into a string",
                                    node.type_name()
                                ),
                            ),
                        }
                    }
                }
            }
        }
        Node::new(NodeKind::Str(out), span)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn scalar_text(node: &Node) -> Option<String> {
    match &node.kind {
        NodeKind::Null => Some("null".into()),
        NodeKind::Bool(b) => Some(b.to_string()),
        NodeKind::Int(i) => Some(i.to_string()),
        NodeKind::Float(f) => Some(f.to_string()),
        NodeKind::Str(s) => Some(s.clone()),
        NodeKind::Seq(_) | NodeKind::Map(_) => None,
    }
}

#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Ref(String),
}

fn split_references(s: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        text.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(escaped) = after.strip_prefix("$${") {
            text.push_str("${");
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
            let name = inner[..end].trim();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(format!("`${{{name}}}` is not a valid reference (use letters, digits, `_`, `-` and `.`)"));
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Ref(name.to_string()));
            rest = &inner[end + 1..];
        } else {
            text.push('$');
            rest = &after[1..];
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn run(text: &str, target: &str) -> (serde_json::Value, Vec<String>) {
        let (root, _) = yaml::parse(text).unwrap();
        let mut errors = Collector::new(Path::new("t.yaml"));
        let vars = root
            .get("vars")
            .and_then(|e| e.value.as_map())
            .unwrap_or(&[])
            .to_vec();
        let mut interp = Interpolator::new(&vars);
        let node = &root.get(target).unwrap().value;
        let out = interp.interpolate(node, target, &mut errors);
        let msgs = errors
            .errors
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect();
        (out.to_json(), msgs)
    }

    #[test]
    fn whole_references_keep_their_type_and_partial_ones_splice_text() {
        let (v, e) = run(
            "vars: {lr: 0.01, m: {w: 3}, tag: run}\nx: {a: '${lr}', b: 'lr=${lr}-${tag}', c: '${m.w}', d: '$${lr}'}\n",
            "x",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            v,
            serde_json::json!({"a": 0.01, "b": "lr=0.01-run", "c": 3, "d": "${lr}"})
        );
    }

    #[test]
    fn variables_may_use_variables_but_not_in_a_cycle() {
        let (v, e) = run("vars: {a: '${b}', b: 5}\nx: '${a}'\n", "x");
        assert!(e.is_empty());
        assert_eq!(v, serde_json::json!(5));
        let (_, e) = run("vars: {a: '${b}', b: '${a}'}\nx: '${a}'\n", "x");
        assert!(e.iter().any(|m| m.contains("cycle: a -> b -> a")), "{e:?}");
    }

    #[test]
    fn undefined_variables_are_errors_with_position_and_suggestion() {
        let (_, e) = run("vars: {epochs: 3}\nx:\n  n: '${epoch}'\n", "x");
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("t.yaml:3:6"), "{}", e[0]);
        assert!(e[0].contains("did you mean `epochs`"), "{}", e[0]);
    }

    #[test]
    fn overrides_create_and_replace_values() {
        let (mut root, _) = yaml::parse("seed: 1\nstages: {a: {kind: x}}\n").unwrap();
        let mut errors = Collector::new(Path::new("t.yaml"));
        apply_overrides(
            &mut root,
            &[
                "seed=7".into(),
                "+vars.n=[1, 2]".into(),
                "stages.a.params.k=5".into(),
                "bad".into(),
            ],
            &mut errors,
        );
        assert_eq!(errors.errors.len(), 1);
        let json = root.to_json();
        assert_eq!(json["seed"], 7);
        assert_eq!(json["vars"]["n"], serde_json::json!([1, 2]));
        assert_eq!(json["stages"]["a"]["params"]["k"], 5);
    }

    fn override_errors(text: &str, items: &[&str]) -> (Node, Vec<String>) {
        let (mut root, _) = yaml::parse(text).unwrap();
        let mut errors = Collector::new(Path::new("t.yaml"));
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        apply_overrides(&mut root, &items, &mut errors);
        let messages = errors
            .errors
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect();
        (root, messages)
    }

    #[test]
    fn overrides_of_stages_and_vars_the_file_lacks_need_a_plus() {
        let text = "vars: {epochs: 3}\nstages: {train: {kind: x}}\n";
        let (_, e) = override_errors(text, &["vars.epoch=1"]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("no variable `epoch`") && e[0].contains("did you mean `epochs`"),
            "{}",
            e[0]
        );
        let (_, e) = override_errors(text, &["stages.trian.params.lr=1"]);
        assert!(
            e[0].contains("no stage `trian`") && e[0].contains("did you mean `train`"),
            "{}",
            e[0]
        );
        assert!(e[0].contains("+stages.trian.params.lr"), "{}", e[0]);
        // With `+`, a new stage or variable is added; `+` on what exists is refused.
        let (root, e) = override_errors(text, &["+vars.width=8", "+stages.more.kind=x"]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(root.to_json()["vars"]["width"], 8);
        assert_eq!(root.to_json()["stages"]["more"]["kind"], "x");
        let (_, e) = override_errors(text, &["+vars.epochs=8"]);
        assert!(
            e[0].contains("already sets it") && e[0].contains("drop the `+`"),
            "{}",
            e[0]
        );
        // Replacing what exists, and fields of a stage the loader checks, need no `+`.
        let (root, e) = override_errors(text, &["vars.epochs=5", "stages.train.params.n=2"]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(root.to_json()["vars"]["epochs"], 5);
    }

    #[test]
    fn a_matrix_axis_with_dots_is_one_key() {
        let text = "stages: {train: {kind: x, matrix: {model.width: [1]}}}\n";
        let (root, e) = override_errors(text, &["stages.train.matrix.model.width=[8, 32]"]);
        assert!(e.is_empty(), "{e:?}");
        let json = root.to_json();
        assert_eq!(
            json["stages"]["train"]["matrix"]["model.width"],
            serde_json::json!([8, 32])
        );
        assert!(
            json["stages"]["train"]["matrix"].get("model").is_none(),
            "{json}"
        );
    }
}
