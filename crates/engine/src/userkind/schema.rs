//! The parameter language of stage kinds declared in YAML: a subset of JSON Schema, so that a
//! kind's parameters are typed without Rust, checked by `cbound validate` like a built-in
//! kind's, and exported unchanged into the pipeline's JSON Schema for editors.
//!
//! Supported, per parameter: `type` (`string`, `integer`, `number`, `boolean`, `array` with
//! `items` of one of these), `description`, `default`, `enum`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `minItems`, `maxItems`, and `required: true`. The one
//! departure from JSON Schema: `required` is a flag on the parameter, not a list on the
//! object, because a kind's parameters are written one per entry in YAML.
//!
//! Problems come in the two classes the built-in kinds' come in, so that the loader reports
//! both the same way: what a type says (an unknown parameter, a wrong type, a string outside
//! its `enum`, a missing required parameter) worded as serde words them (the loader turns
//! them into "did you mean" help), and rules about values (ranges, list lengths), worded for
//! the user and reported at their path.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Number, Value};

use crate::config::diagnostics::Collector;
use crate::config::load::join;
use crate::config::yaml::{Node, NodeKind, PathSeg};
use crate::stage::ParamError;

/// The value types a parameter may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
}

pub const TYPE_NAMES: &[&str] = &["string", "integer", "number", "boolean", "array"];

impl ParamType {
    fn from_name(name: &str) -> Option<ParamType> {
        Some(match name {
            "string" => ParamType::String,
            "integer" => ParamType::Integer,
            "number" => ParamType::Number,
            "boolean" => ParamType::Boolean,
            "array" => ParamType::Array,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
        }
    }

    /// What a value of this type is called in a message ("expected an integer").
    fn expected(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Integer => "an integer",
            ParamType::Number => "a number",
            ParamType::Boolean => "a boolean",
            ParamType::Array => "a list",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, ParamType::Integer | ParamType::Number)
    }
}

/// One parameter (or, under `items`, the elements of a list parameter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub ty: ParamType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_minimum: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive_maximum: Option<Number>,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<ParamSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_items: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
}

/// A kind's parameters, in the order the definition lists them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Params(pub Vec<(String, ParamSpec)>);

/// A problem with one value: what its type says (serde's wording), or a rule about values.
#[derive(Debug, Clone, PartialEq)]
enum Problem {
    Type(ParamError),
    Rule(ParamError),
}

/// How serde names a value it did not expect, so the loader's rewording applies.
fn unexpected(v: &Value) -> String {
    match v {
        Value::Null => "unit value".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".into(),
        Value::Object(_) => "map".into(),
    }
}

/// Compares two JSON numbers exactly when both are integers (bounds on 64-bit seeds and counts
/// must not round), as floats otherwise.
fn compare(a: &Number, b: &Number) -> Ordering {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn path_name(path: &[PathSeg]) -> String {
    crate::config::yaml::render_path(path)
}

impl ParamSpec {
    /// Checks `value` at `path` (inside `params`), adding every problem to `out`.
    fn check(&self, value: &Value, path: &mut Vec<PathSeg>, out: &mut Vec<Problem>) {
        let type_ok = match self.ty {
            ParamType::String => value.is_string(),
            ParamType::Integer => value.is_i64() || value.is_u64(),
            ParamType::Number => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Array => value.is_array(),
        };
        if !type_ok {
            out.push(Problem::Type(ParamError {
                path: path.clone(),
                message: format!(
                    "invalid type: {}, expected {}",
                    unexpected(value),
                    self.ty.expected()
                ),
            }));
            return;
        }
        let rule = |out: &mut Vec<Problem>, path: &[PathSeg], message: String| {
            out.push(Problem::Rule(ParamError {
                path: path.to_vec(),
                message,
            }))
        };
        if let Some(allowed) = &self.one_of {
            if !allowed.contains(value) {
                if let Value::String(s) = value {
                    // serde's wording for an enum, so the loader says "did you mean".
                    let expected: Vec<String> =
                        allowed.iter().map(|a| format!("`{}`", render(a))).collect();
                    out.push(Problem::Type(ParamError {
                        path: path.clone(),
                        message: format!(
                            "unknown variant `{s}`, expected one of {}",
                            expected.join(", ")
                        ),
                    }));
                } else {
                    let allowed: Vec<String> = allowed.iter().map(render).collect();
                    rule(
                        out,
                        path,
                        format!(
                            "`{}` must be one of {}, got {}",
                            path_name(path),
                            allowed.join(", "),
                            render(value)
                        ),
                    );
                }
                return;
            }
        }
        if let Value::Number(n) = value {
            let bounds = [
                (&self.minimum, ">=", Ordering::Less, false),
                (&self.exclusive_minimum, ">", Ordering::Less, true),
                (&self.maximum, "<=", Ordering::Greater, false),
                (&self.exclusive_maximum, "<", Ordering::Greater, true),
            ];
            for (bound, op, beyond, exclusive) in bounds {
                let Some(b) = bound else { continue };
                let ord = compare(n, b);
                if ord == beyond || (exclusive && ord == Ordering::Equal) {
                    rule(
                        out,
                        path,
                        format!("`{}` must be {op} {b}, got {n}", path_name(path)),
                    );
                }
            }
        }
        if let Value::Array(items) = value {
            let len = items.len() as u64;
            if let Some(min) = self.min_items.filter(|m| len < *m) {
                rule(
                    out,
                    path,
                    format!(
                        "`{}` needs at least {min} element(s), got {len}",
                        path_name(path)
                    ),
                );
            }
            if let Some(max) = self.max_items.filter(|m| len > *m) {
                rule(
                    out,
                    path,
                    format!(
                        "`{}` takes at most {max} element(s), got {len}",
                        path_name(path)
                    ),
                );
            }
            if let Some(item) = &self.items {
                for (i, v) in items.iter().enumerate() {
                    path.push(PathSeg::Index(i));
                    item.check(v, path, out);
                    path.pop();
                }
            }
        }
    }

    /// Problems of `value` on its own (a default, an enum value), as messages.
    fn problems(&self, value: &Value, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.check(value, &mut vec![PathSeg::Key(name.to_string())], &mut out);
        out.into_iter()
            .map(|p| match p {
                Problem::Type(e) | Problem::Rule(e) => e.message,
            })
            .collect()
    }

    /// The JSON Schema of this parameter.
    pub fn json_schema(&self) -> Value {
        let mut s = Map::new();
        s.insert("type".into(), json!(self.ty.name()));
        if let Some(d) = &self.description {
            s.insert("description".into(), json!(d));
        }
        if let Some(d) = &self.default {
            s.insert("default".into(), d.clone());
        }
        if let Some(e) = &self.one_of {
            s.insert("enum".into(), json!(e));
        }
        for (key, bound) in [
            ("minimum", &self.minimum),
            ("maximum", &self.maximum),
            ("exclusiveMinimum", &self.exclusive_minimum),
            ("exclusiveMaximum", &self.exclusive_maximum),
        ] {
            if let Some(b) = bound {
                s.insert(key.into(), Value::Number(b.clone()));
            }
        }
        if let Some(items) = &self.items {
            s.insert("items".into(), items.json_schema());
        }
        if let Some(n) = self.min_items {
            s.insert("minItems".into(), json!(n));
        }
        if let Some(n) = self.max_items {
            s.insert("maxItems".into(), json!(n));
        }
        Value::Object(s)
    }

    /// The rules a type name does not say, for `cbound stages`: `>= 1, <= 16`.
    pub fn rules_text(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (op, bound) in [
            (">=", &self.minimum),
            (">", &self.exclusive_minimum),
            ("<=", &self.maximum),
            ("<", &self.exclusive_maximum),
        ] {
            if let Some(b) = bound {
                parts.push(format!("{op} {b}"));
            }
        }
        if let Some(n) = self.min_items {
            parts.push(format!("at least {n} element(s)"));
        }
        if let Some(n) = self.max_items {
            parts.push(format!("at most {n} element(s)"));
        }
        if let Some(item) = self.items.as_ref().and_then(|i| i.rules_text()) {
            parts.push(format!("each {item}"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// A value that satisfies this spec, for a generated example.
    pub fn example_value(&self) -> Value {
        if let Some(d) = &self.default {
            return d.clone();
        }
        if let Some(first) = self.one_of.as_ref().and_then(|e| e.first()) {
            return first.clone();
        }
        match self.ty {
            ParamType::String => json!("text"),
            ParamType::Boolean => json!(false),
            ParamType::Array => {
                let n = self.min_items.unwrap_or(1).max(1) as usize;
                let item = self
                    .items
                    .as_ref()
                    .map(|i| i.example_value())
                    .unwrap_or(Value::Null);
                Value::Array(vec![item; n])
            }
            ParamType::Integer | ParamType::Number => {
                let int = self.ty == ParamType::Integer;
                let low = self.minimum.as_ref().and_then(Number::as_f64).or_else(|| {
                    self.exclusive_minimum
                        .as_ref()
                        .and_then(Number::as_f64)
                        .map(|m| if int { m.floor() + 1.0 } else { m + 1.0 })
                });
                let high = self.maximum.as_ref().and_then(Number::as_f64).or_else(|| {
                    self.exclusive_maximum
                        .as_ref()
                        .and_then(Number::as_f64)
                        .map(|m| if int { m.ceil() - 1.0 } else { m - 1.0 })
                });
                let v = match (low, high) {
                    (Some(l), Some(h)) if !int => (l + h) / 2.0,
                    (Some(l), _) => l,
                    (None, Some(h)) => h.min(1.0),
                    (None, None) => 1.0,
                };
                if int {
                    json!(v.ceil() as i64)
                } else {
                    json!(v)
                }
            }
        }
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Checks a stage's `params` as [`crate::stage::DynStage::check_params`] does: the first
    /// problem its types find (unknown and missing parameters, wrong types, a string outside
    /// its enum), or else every rule the values break.
    pub fn check(&self, params: &Value) -> Result<Vec<ParamError>, ParamError> {
        let empty = Map::new();
        let given = match params {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => {
                return Err(ParamError {
                    path: Vec::new(),
                    message: format!("invalid type: {}, expected a mapping", unexpected(other)),
                })
            }
        };
        let mut problems = Vec::new();
        for (name, value) in given {
            let Some(spec) = self.get(name) else {
                let names: Vec<String> = self.names().iter().map(|n| format!("`{n}`")).collect();
                return Err(ParamError {
                    path: vec![PathSeg::Key(name.clone())],
                    message: if names.is_empty() {
                        format!("unknown field `{name}`, there are no fields")
                    } else {
                        format!(
                            "unknown field `{name}`, expected one of {}",
                            names.join(", ")
                        )
                    },
                });
            };
            spec.check(value, &mut vec![PathSeg::Key(name.clone())], &mut problems);
            if let Some(Problem::Type(e)) = problems.iter().find(|p| matches!(p, Problem::Type(_)))
            {
                return Err(e.clone());
            }
        }
        if let Some((name, _)) = self
            .0
            .iter()
            .find(|(name, spec)| spec.required && !given.contains_key(name))
        {
            return Err(ParamError {
                path: Vec::new(),
                message: format!("missing field `{name}`"),
            });
        }
        Ok(problems
            .into_iter()
            .filter_map(|p| match p {
                Problem::Rule(e) => Some(e),
                Problem::Type(_) => None,
            })
            .collect())
    }

    /// `params` with every default filled in, in the definition's order; the caller has
    /// checked them.
    pub fn resolve(&self, params: &Value) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, spec) in &self.0 {
            match params.get(name).or(spec.default.as_ref()) {
                Some(v) => {
                    out.insert(name.clone(), v.clone());
                }
                None => continue,
            }
        }
        out
    }

    /// The JSON Schema of a stage's `params`.
    pub fn json_schema(&self) -> Value {
        let properties: Map<String, Value> = self
            .0
            .iter()
            .map(|(name, spec)| (name.clone(), spec.json_schema()))
            .collect();
        let required: Vec<&str> = self
            .0
            .iter()
            .filter(|(_, s)| s.required)
            .map(|(n, _)| n.as_str())
            .collect();
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": properties,
            "required": required,
        })
    }
}

const SPEC_KEYS: &[&str] = &[
    "type",
    "description",
    "default",
    "required",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "items",
    "minItems",
    "maxItems",
];

/// Reads the `params:` of a definition, each parameter at `path.<name>`; every problem is
/// reported to `c` with its position, and parameters with problems are left out.
pub fn parse_params(node: &Node, path: &str, c: &mut Collector) -> Params {
    let Some(entries) = node.as_map() else {
        if !matches!(node.kind, NodeKind::Null) {
            c.error_with_help(
                node.span,
                path,
                format!("`params` must be a mapping, not {}", node.type_name()),
                "write `params: {components: {type: integer, default: 2}}`",
            );
        }
        return Params::default();
    };
    let mut out = Vec::new();
    for e in entries {
        let at = join(path, &e.key);
        if !is_param_name(&e.key) {
            c.error_with_help(
                e.key_span,
                &at,
                format!("invalid parameter name `{}`", e.key),
                "parameter names use letters, digits and `_`, starting with a letter (they appear in placeholders as {params.NAME})",
            );
            continue;
        }
        if let Some(spec) = parse_spec(&e.value, &at, &e.key, true, c) {
            out.push((e.key.clone(), spec));
        }
    }
    Params(out)
}

fn is_param_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A number of a range keyword, or an error at it.
fn number_at(node: &Node, path: &str, key: &str, c: &mut Collector) -> Option<Number> {
    match node.kind {
        NodeKind::Int(i) => Some(Number::from(i)),
        NodeKind::Float(f) => match Number::from_f64(f) {
            Some(n) => Some(n),
            None => {
                c.error(node.span, path, format!("`{key}` must be a finite number"));
                None
            }
        },
        _ => {
            c.error(
                node.span,
                path,
                format!("`{key}` must be a number, not {}", node.type_name()),
            );
            None
        }
    }
}

fn count_at(node: &Node, path: &str, key: &str, c: &mut Collector) -> Option<u64> {
    match node.kind {
        NodeKind::Int(i) if i >= 0 => Some(i as u64),
        _ => {
            c.error(
                node.span,
                path,
                format!("`{key}` must be a non-negative integer"),
            );
            None
        }
    }
}

/// One parameter's spec: a mapping of the keywords above, or just a type name
/// (`components: integer`). `top` is false under `items`, where `default` and `required`
/// have no meaning.
fn parse_spec(
    node: &Node,
    path: &str,
    name: &str,
    top: bool,
    c: &mut Collector,
) -> Option<ParamSpec> {
    let type_node;
    let entries: &[crate::config::yaml::Entry] = match &node.kind {
        NodeKind::Str(_) => {
            type_node = node.clone();
            &[]
        }
        NodeKind::Map(entries) => {
            type_node = match node.get("type") {
                Some(t) => t.value.clone(),
                None => {
                    c.error_with_help(
                        node.span,
                        path,
                        "a parameter needs a `type`",
                        format!("one of: {}", TYPE_NAMES.join(", ")),
                    );
                    return None;
                }
            };
            entries
        }
        _ => {
            c.error_with_help(
                node.span,
                path,
                format!(
                    "a parameter must be a mapping or a type name, not {}",
                    node.type_name()
                ),
                "write `{type: integer, minimum: 1, default: 2}` or just `integer`",
            );
            return None;
        }
    };
    let type_path = if entries.is_empty() {
        path.to_string()
    } else {
        join(path, "type")
    };
    let ty = match type_node.as_str().and_then(ParamType::from_name) {
        Some(ty) => ty,
        None => {
            match type_node.as_str() {
                Some(t) => c.unknown(type_node.span, &type_path, "parameter type", t, TYPE_NAMES),
                None => c.error_with_help(
                    type_node.span,
                    &type_path,
                    format!("`type` must be a type name, not {}", type_node.type_name()),
                    format!("one of: {}", TYPE_NAMES.join(", ")),
                ),
            }
            return None;
        }
    };
    let mut spec = ParamSpec {
        ty,
        description: None,
        default: None,
        required: false,
        minimum: None,
        maximum: None,
        exclusive_minimum: None,
        exclusive_maximum: None,
        one_of: None,
        items: None,
        min_items: None,
        max_items: None,
    };
    let mut ok = true;
    let mut default_node = None;
    let mut enum_node = None;
    for e in entries {
        let at = join(path, &e.key);
        let v = &e.value;
        match e.key.as_str() {
            "type" => {}
            "description" => match v.as_str() {
                Some(s) => spec.description = Some(s.to_string()),
                None => c.error(v.span, &at, "`description` must be a string"),
            },
            "default" | "required" if !top => {
                c.error_with_help(
                    e.key_span,
                    &at,
                    format!("`{}` belongs to the parameter, not to its `items`", e.key),
                    "move it one level up",
                );
                ok = false;
            }
            "default" => default_node = Some(v),
            "required" => match v.kind {
                NodeKind::Bool(b) => spec.required = b,
                _ => c.error(v.span, &at, "`required` must be true or false"),
            },
            "enum" => match &v.kind {
                NodeKind::Seq(items) if !items.is_empty() => enum_node = Some(v),
                _ => {
                    c.error(
                        v.span,
                        &at,
                        "`enum` must be a non-empty list of the allowed values",
                    );
                    ok = false;
                }
            },
            key @ ("minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum") => {
                if !ty.is_numeric() {
                    c.error_with_help(
                        e.key_span,
                        &at,
                        format!(
                            "`{key}` applies to integer and number parameters, not {}",
                            ty.name()
                        ),
                        if ty == ParamType::Array {
                            "put it under `items`"
                        } else {
                            "drop it, or change the type"
                        },
                    );
                    ok = false;
                    continue;
                }
                let n = number_at(v, &at, key, c);
                ok &= n.is_some();
                match key {
                    "minimum" => spec.minimum = n,
                    "maximum" => spec.maximum = n,
                    "exclusiveMinimum" => spec.exclusive_minimum = n,
                    _ => spec.exclusive_maximum = n,
                }
            }
            key @ ("items" | "minItems" | "maxItems") if ty != ParamType::Array => {
                c.error(
                    e.key_span,
                    &at,
                    format!("`{key}` applies to array parameters, not {}", ty.name()),
                );
                ok = false;
            }
            "items" => match parse_spec(v, &at, name, false, c) {
                Some(item) if item.ty == ParamType::Array => {
                    c.error_with_help(
                        v.span,
                        &at,
                        "lists of lists are not supported",
                        "pass nested data in a file the program reads, or as a string",
                    );
                    ok = false;
                }
                Some(item) => spec.items = Some(Box::new(item)),
                None => ok = false,
            },
            "minItems" => spec.min_items = count_at(v, &at, "minItems", c),
            "maxItems" => spec.max_items = count_at(v, &at, "maxItems", c),
            _ => {
                c.unknown(e.key_span, &at, "parameter keyword", &e.key, SPEC_KEYS);
                ok = false;
            }
        }
    }
    if ty == ParamType::Array && spec.items.is_none() && ok {
        c.error_with_help(
            node.span,
            path,
            "an array parameter needs `items`, the type of its elements",
            "e.g. `{type: array, items: {type: number}}`",
        );
        return None;
    }
    let low = spec.minimum.as_ref().or(spec.exclusive_minimum.as_ref());
    let high = spec.maximum.as_ref().or(spec.exclusive_maximum.as_ref());
    if let (Some(l), Some(h)) = (low, high) {
        if compare(l, h) == Ordering::Greater {
            c.error(
                node.span,
                path,
                format!("the range is empty: the lower bound {l} is above the upper bound {h}"),
            );
            ok = false;
        }
    }
    if let (Some(l), Some(h)) = (spec.min_items, spec.max_items) {
        if l > h {
            c.error(
                node.span,
                path,
                format!("`minItems` {l} is above `maxItems` {h}"),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    // Enum values and the default must themselves be valid values, checked with the rest
    // of the spec in place, so a definition cannot promise what it then refuses.
    if let Some(values) = enum_node {
        let mut list = Vec::new();
        if let NodeKind::Seq(items) = &values.kind {
            for (i, item) in items.iter().enumerate() {
                let v = item.to_json();
                let mut alone = spec.clone();
                alone.one_of = None;
                for message in alone.problems(&v, name) {
                    c.error(
                        item.span,
                        format!("{}.enum[{i}]", path),
                        format!("enum value {}: {message}", render(&v)),
                    );
                    ok = false;
                }
                list.push(v);
            }
        }
        spec.one_of = Some(list);
    }
    if let Some(d) = default_node {
        let v = d.to_json();
        for message in spec.problems(&v, name) {
            c.error(
                d.span,
                join(path, "default"),
                format!("the default does not fit the parameter: {message}"),
            );
            ok = false;
        }
        if spec.required {
            c.error_with_help(
                d.span,
                join(path, "default"),
                "a required parameter has no default",
                "drop `required: true` (a parameter with a default is never missing) or the default",
            );
            ok = false;
        }
        spec.default = Some(v);
    }
    ok.then_some(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec_of(yaml: &str) -> Result<Params, String> {
        let (root, _) = crate::config::yaml::parse(yaml).unwrap();
        let mut c = Collector::new(Path::new("k.yaml"));
        let params = parse_params(&root, "params", &mut c);
        if c.errors.is_empty() {
            Ok(params)
        } else {
            Err(c.errors.to_string())
        }
    }

    const SPEC: &str = r#"
components: {type: integer, minimum: 1, maximum: 16, default: 2, description: kept}
rate: {type: number, exclusiveMinimum: 0, exclusiveMaximum: 1}
method: {type: string, enum: [svd, eig], default: svd}
label: string
layers: {type: array, items: {type: integer, minimum: 1}, minItems: 1, maxItems: 3}
flag: {type: boolean, required: true}
"#;

    fn params() -> Params {
        spec_of(SPEC).unwrap()
    }

    fn key(k: &str) -> PathSeg {
        PathSeg::Key(k.into())
    }

    #[test]
    fn valid_params_pass_and_defaults_fill_in() {
        let p = params();
        let given = json!({"flag": true, "rate": 0.5, "layers": [4, 8]});
        assert_eq!(p.check(&given), Ok(vec![]));
        let resolved = p.resolve(&given);
        assert_eq!(
            Value::Object(resolved),
            json!({"components": 2, "rate": 0.5, "method": "svd", "layers": [4, 8], "flag": true})
        );
    }

    #[test]
    fn types_are_checked_with_serde_wording_and_a_path() {
        let p = params();
        let err = p
            .check(&json!({"flag": true, "components": "two"}))
            .unwrap_err();
        assert_eq!(err.path, vec![key("components")]);
        assert_eq!(
            err.message,
            "invalid type: string \"two\", expected an integer"
        );
        let err = p
            .check(&json!({"flag": true, "components": 2.5}))
            .unwrap_err();
        assert_eq!(
            err.message,
            "invalid type: floating point `2.5`, expected an integer"
        );
        // A whole number is a number; a string is not.
        assert_eq!(
            p.check(&json!({"flag": true, "rate": "0.5"}))
                .unwrap_err()
                .path,
            vec![key("rate")]
        );
        let err = p.check(&json!({"flag": 1})).unwrap_err();
        assert_eq!(err.message, "invalid type: integer `1`, expected a boolean");
        // Inside a list: the element's index.
        let err = p
            .check(&json!({"flag": true, "layers": [4, "x"]}))
            .unwrap_err();
        assert_eq!(err.path, vec![key("layers"), PathSeg::Index(1)]);
        let err = p.check(&json!({"flag": true, "layers": 4})).unwrap_err();
        assert_eq!(err.message, "invalid type: integer `4`, expected a list");
    }

    #[test]
    fn unknown_and_missing_parameters_use_serde_wording() {
        let p = params();
        let err = p.check(&json!({"flag": true, "componets": 3})).unwrap_err();
        assert_eq!(err.path, vec![key("componets")]);
        assert!(
            err.message
                .starts_with("unknown field `componets`, expected one of `components`, `rate`"),
            "{}",
            err.message
        );
        let err = p.check(&json!({})).unwrap_err();
        assert_eq!(
            err,
            ParamError {
                path: vec![],
                message: "missing field `flag`".into()
            }
        );
        let none = Params::default();
        assert_eq!(
            none.check(&json!({"x": 1})).unwrap_err().message,
            "unknown field `x`, there are no fields"
        );
    }

    #[test]
    fn ranges_are_rules_at_their_path() {
        let p = params();
        let rules = p
            .check(&json!({"flag": true, "components": 0, "rate": 1, "layers": [0, 2, 3, 4]}))
            .unwrap();
        let messages: Vec<(String, String)> = rules
            .iter()
            .map(|e| (crate::config::yaml::render_path(&e.path), e.message.clone()))
            .collect();
        assert_eq!(
            messages,
            vec![
                (
                    "components".into(),
                    "`components` must be >= 1, got 0".into()
                ),
                ("rate".into(), "`rate` must be < 1, got 1".into()),
                (
                    "layers".into(),
                    "`layers` takes at most 3 element(s), got 4".into()
                ),
                ("layers[0]".into(), "`layers[0]` must be >= 1, got 0".into()),
            ]
        );
        // Exclusive bounds exclude the bound itself; inclusive ones include it.
        assert_eq!(p.check(&json!({"flag": true, "rate": 0})).unwrap().len(), 1);
        assert_eq!(
            p.check(&json!({"flag": true, "components": 16})).unwrap(),
            vec![]
        );
        assert_eq!(
            p.check(&json!({"flag": true, "components": 17}))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            p.check(&json!({"flag": true, "layers": []})).unwrap().len(),
            1
        );
    }

    #[test]
    fn integer_bounds_compare_exactly() {
        let p = spec_of("seed: {type: integer, maximum: 9007199254740993}").unwrap();
        assert_eq!(p.check(&json!({"seed": 9007199254740993u64})), Ok(vec![]));
        assert_eq!(
            p.check(&json!({"seed": 9007199254740994u64}))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn enums_of_strings_are_variants_and_others_rules() {
        let p = params();
        let err = p
            .check(&json!({"flag": true, "method": "svdd"}))
            .unwrap_err();
        assert_eq!(
            err.message,
            "unknown variant `svdd`, expected one of `svd`, `eig`"
        );
        let q = spec_of("k: {type: integer, enum: [1, 2, 4]}").unwrap();
        assert_eq!(
            q.check(&json!({"k": 3})).unwrap()[0].message,
            "`k` must be one of 1, 2, 4, got 3"
        );
    }

    #[test]
    fn json_schema_keeps_the_keywords() {
        let schema = params().json_schema();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!(["flag"]));
        assert_eq!(
            schema["properties"]["components"],
            json!({"type": "integer", "description": "kept", "default": 2, "minimum": 1, "maximum": 16})
        );
        assert_eq!(schema["properties"]["rate"]["exclusiveMaximum"], 1);
        assert_eq!(
            schema["properties"]["method"]["enum"],
            json!(["svd", "eig"])
        );
        assert_eq!(
            schema["properties"]["layers"],
            json!({"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 3})
        );
        assert_eq!(schema["properties"]["label"], json!({"type": "string"}));
    }

    #[test]
    fn example_values_satisfy_their_spec() {
        let p = params();
        let mut example = Map::new();
        for (name, spec) in &p.0 {
            example.insert(name.clone(), spec.example_value());
        }
        assert_eq!(p.check(&Value::Object(example)), Ok(vec![]));
        let q = spec_of(
            "a: {type: integer, exclusiveMinimum: 3}\nb: {type: number, exclusiveMaximum: -2}\nc: {type: number, minimum: 2, maximum: 4}",
        )
        .unwrap();
        let mut example = Map::new();
        for (name, spec) in &q.0 {
            example.insert(name.clone(), spec.example_value());
        }
        assert_eq!(q.check(&Value::Object(example)), Ok(vec![]));
    }

    #[test]
    fn bad_specs_are_errors_at_their_position() {
        let cases = [
            ("n: {type: integr}", "k.yaml:1:11", "unknown parameter type `integr`"),
            ("n: {type: integer, minimun: 1}", "k.yaml:1:20", "unknown parameter keyword `minimun`"),
            ("n: {type: integer, minimum: 5, default: 2}", "k.yaml:1:41", "the default does not fit the parameter: `n` must be >= 5, got 2"),
            ("n: {type: integer, default: two}", "k.yaml:1:29", "the default does not fit the parameter: invalid type: string \"two\", expected an integer"),
            ("n: {type: string, minimum: 1}", "k.yaml:1:19", "`minimum` applies to integer and number parameters, not string"),
            ("n: {type: array}", "k.yaml:1:4", "an array parameter needs `items`"),
            ("n: {type: integer, minimum: 3, maximum: 2}", "k.yaml:1:4", "the range is empty"),
            ("n: {type: integer, enum: [1, x]}", "k.yaml:1:30", "enum value x: invalid type"),
            ("n: {type: integer, required: true, default: 1}", "k.yaml:1:45", "a required parameter has no default"),
            ("n: {type: array, items: {type: integer, default: 1}}", "k.yaml:1:41", "`default` belongs to the parameter"),
            ("n: {description: no type}", "k.yaml:1:4", "a parameter needs a `type`"),
            ("2n: integer", "k.yaml:1:1", "invalid parameter name `2n`"),
        ];
        for (yaml, location, message) in cases {
            let err = spec_of(yaml).expect_err(yaml);
            assert!(
                err.contains(location) && err.contains(message),
                "{yaml}: expected `{message}` at {location}, got:\n{err}"
            );
        }
        let err = spec_of("n: {type: integr}").unwrap_err();
        assert!(err.contains("did you mean `integer`?"), "{err}");
        assert!(err.contains("(at `params.n.type`)"), "{err}");
    }
}
