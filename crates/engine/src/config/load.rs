//! Reads a pipeline file into a validated [`Pipeline`], collecting every error in one pass.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::diagnostics::{did_you_mean, Collector, ConfigErrors};
use super::interp::{apply_overrides, Interpolator};
use super::yaml::{self, render_path, Entry, Node, NodeKind, PathSeg, Span};
use super::{
    set_dotted, ClusterResources, ExecutorDecl, ExecutorKind, Gpus, MatrixAxis, Pipeline,
    Resources, StageDecl,
};
use crate::stage::{DynStage, Registry};

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "seed",
    "repeat",
    "vars",
    "executor",
    "stages",
    // Stage kinds declared in the file; read by the userkind module before the file is loaded (the
    // registry it builds is what this loader checks stages against), so skipped here.
    "kinds",
];
const STAGE_KEYS: &[&str] = &[
    "kind",
    "description",
    "inputs",
    "gather",
    "params",
    "matrix",
    "matrix_mode",
    "repeat",
    "resources",
];
const RESOURCE_KEYS: &[&str] = &["cpus", "gpus", "memory", "time", "partition", "sbatch"];
const EXECUTOR_KEYS: &[&str] = &[
    "kind",
    "max_parallel",
    "memory",
    "time",
    "partition",
    "sbatch",
    "cbound",
];

/// The most instances one stage's own matrix (with `repeat`) may declare.
pub const MAX_STAGE_INSTANCES: usize = 100_000;

/// The largest pipeline file read: real pipelines are a few kilobytes, and parsing is held to
/// linear time, but nothing needs more.
pub const MAX_PIPELINE_BYTES: usize = 16 << 20;

/// Loads and validates a pipeline file, with `--set` overrides applied first.
pub fn load(
    path: &Path,
    overrides: &[String],
    registry: &Registry,
) -> Result<Pipeline, ConfigErrors> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() > MAX_PIPELINE_BYTES => {
            let mut c = Collector::new(path);
            c.error(
                Span { line: 1, col: 1 },
                "",
                format!(
                    "the pipeline file is {} bytes, over the limit of {MAX_PIPELINE_BYTES}: \
                     put data in files that stages read, not in the pipeline",
                    bytes.len()
                ),
            );
            Err(c.errors)
        }
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_str(&text, path, overrides, registry),
            Err(e) => {
                // Point at the first byte that is not UTF-8, not at the start of the file.
                let valid = e.utf8_error().valid_up_to();
                let before = &e.as_bytes()[..valid];
                let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
                let line_start = before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let col = 1 + String::from_utf8_lossy(&before[line_start..])
                    .chars()
                    .count();
                let mut c = Collector::new(path);
                c.error(
                    Span { line, col },
                    "",
                    format!(
                        "the pipeline file is not valid UTF-8 (byte {valid}); save it as UTF-8"
                    ),
                );
                Err(c.errors)
            }
        },
        Err(e) => {
            let mut c = Collector::new(path);
            c.error(
                Span { line: 1, col: 1 },
                "",
                format!("cannot read pipeline file: {e}"),
            );
            Err(c.errors)
        }
    }
}

/// Like [`load`], from text already in memory; `path` is used in messages and as the
/// default pipeline name.
pub fn load_str(
    text: &str,
    path: &Path,
    overrides: &[String],
    registry: &Registry,
) -> Result<Pipeline, ConfigErrors> {
    let mut c = Collector::new(path);
    let (mut root, problems) = match yaml::parse(text) {
        Ok(parsed) => parsed,
        Err(p) => {
            c.error(p.span, p.path, p.message);
            return Err(c.errors);
        }
    };
    for p in problems {
        c.error(p.span, p.path, p.message);
    }
    apply_overrides(&mut root, overrides, &mut c);
    let pipeline = build(&root, path, registry, &mut c);
    let mut errors = c.errors;
    match pipeline {
        Some(p) if errors.is_empty() => Ok(p),
        _ => {
            errors.normalise();
            Err(errors)
        }
    }
}

fn check_keys(entries: &[Entry], path: &str, known: &[&str], what: &str, c: &mut Collector) {
    for e in entries {
        if !known.contains(&e.key.as_str()) {
            c.unknown(e.key_span, join(path, &e.key), what, &e.key, known);
        }
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if key.is_empty() {
        path.to_string()
    } else if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
}

fn build(root: &Node, path: &Path, registry: &Registry, c: &mut Collector) -> Option<Pipeline> {
    let Some(top) = root.as_map() else {
        c.error(
            root.span,
            "",
            format!(
                "a pipeline file must be a mapping with `name`, `seed` and `stages`, not {}",
                root.type_name()
            ),
        );
        return None;
    };
    check_keys(top, "", TOP_KEYS, "top-level key", c);
    let empty = Vec::new();
    let var_entries = match root.get("vars") {
        None => &empty,
        Some(e) => match e.value.as_map() {
            Some(entries) => &entries.to_vec(),
            None if matches!(e.value.kind, NodeKind::Null) => &empty,
            None => {
                c.error(
                    e.value.span,
                    "vars",
                    format!("`vars` must be a mapping, not {}", e.value.type_name()),
                );
                &empty
            }
        },
    };
    let mut interp = Interpolator::new(var_entries);
    let vars: serde_json::Map<String, serde_json::Value> = interp
        .resolved_vars(c)
        .into_iter()
        .map(|(k, v)| (k, v.to_json()))
        .collect();

    // The name becomes a directory under --out: one plain path component, never `..`.
    let valid_name = |s: &str| {
        s.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
            && !s.is_empty()
            && !s.starts_with('.')
    };
    let name = match root.get("name") {
        None => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into());
            if !valid_name(&stem) {
                c.error_with_help(
                    root.span,
                    "name",
                    format!(
                        "the pipeline is named after its file, `{stem}`, which cannot name an \
                         output directory (letters, digits, `_`, `-` and `.`, not starting with \
                         `.`)"
                    ),
                    "add a `name:` to the pipeline, or rename the file",
                );
                return None;
            }
            stem
        }
        Some(e) => {
            let node = interp.interpolate(&e.value, "name", c);
            match node.as_str() {
                Some(s) if valid_name(s) => s.to_string(),
                _ => {
                    c.error_with_help(
                        node.span,
                        "name",
                        "`name` must be a non-empty string of letters, digits, `_`, `-` and `.`",
                        "it names the output directory outputs/<name>/",
                    );
                    "pipeline".into()
                }
            }
        }
    };
    let description = root.get("description").and_then(|e| {
        let node = interp.interpolate(&e.value, "description", c);
        match node.kind {
            NodeKind::Str(s) => Some(s),
            NodeKind::Null => None,
            _ => {
                c.error(node.span, "description", "`description` must be a string");
                None
            }
        }
    });
    let seed = match root.get("seed") {
        None => 0,
        Some(e) => {
            let node = interp.interpolate(&e.value, "seed", c);
            match node.kind {
                NodeKind::Int(i) if i >= 0 => i as u64,
                _ => {
                    c.error(
                        node.span,
                        "seed",
                        format!(
                            "`seed` must be a non-negative integer, not {}",
                            node.type_name()
                        ),
                    );
                    0
                }
            }
        }
    };

    let repeat = root.get("repeat").and_then(|e| {
        let node = interp.interpolate(&e.value, "repeat", c);
        parse_repeat(&node, "repeat", c)
    });

    let executor = match root.get("executor") {
        None => ExecutorDecl::default(),
        Some(e) => {
            let node = interp.interpolate(&e.value, "executor", c);
            parse_executor(&node, c)
        }
    };

    let mut stages = Vec::new();
    let mut spans: HashMap<String, (Span, Vec<Span>)> = HashMap::new();
    let mut param_nodes: HashMap<String, Node> = HashMap::new();
    match root.get("stages") {
        None => c.error_with_help(
            root.span,
            "stages",
            "the pipeline has no `stages`",
            "add `stages:` with at least one stage, e.g. `data: {kind: synthetic}`",
        ),
        Some(e) => match e.value.as_map() {
            Some([]) => c.error(e.key_span, "stages", "`stages` is empty"),
            Some(entries) => {
                for entry in entries {
                    let parsed = parse_stage(entry, registry, &mut interp, repeat, c);
                    if let Some((decl, input_spans, params)) = parsed {
                        spans.insert(decl.id.clone(), (entry.key_span, input_spans));
                        param_nodes.insert(decl.id.clone(), params);
                        stages.push(decl);
                    }
                }
            }
            None => c.error(
                e.value.span,
                "stages",
                format!(
                    "`stages` must be a mapping from stage id to stage, not {}",
                    e.value.type_name()
                ),
            ),
        },
    }
    // Every value is interpolated by now: a variable nothing refers to does nothing, and is
    // most often a misspelling of one that would have (`epoch` for `epochs`). A variable that
    // holds a YAML anchor (`estimate: &est {...}`, used as `*est`) is used by its aliases,
    // which the parser expanded into copies that keep the anchored value's span.
    let unused = interp.unused();
    // Walked only when some variable is unreferenced: the tree of a large sweep is big.
    let mut aliased = HashSet::new();
    if !unused.is_empty() {
        for e in top.iter().filter(|e| e.key != "vars") {
            spans_of(&e.value, &mut aliased);
        }
        // Values from `--set` all share one span; they are no aliases.
        aliased.remove(&Span::COMMAND_LINE);
    }
    for var in unused
        .into_iter()
        .filter(|v| !aliased.contains(&v.value.span))
    {
        c.error_with_help(
            var.key_span,
            format!("vars.{}", var.key),
            format!(
                "variable `{}` is never used: no `${{{}}}` refers to it",
                var.key, var.key
            ),
            format!(
                "refer to it as `${{{}}}` where it belongs, or remove it",
                var.key
            ),
        );
    }
    check_graph(&stages, &spans, c);
    super::wiring::check(&stages, &spans, &param_nodes, registry, c);
    check_fan_out(&stages, &spans, repeat, c);
    Some(Pipeline {
        name,
        description,
        seed,
        source: path.to_path_buf(),
        vars,
        executor,
        repeat,
        stages,
    })
}

/// Every span in a tree (its nodes and their keys' values).
fn spans_of(node: &Node, out: &mut HashSet<Span>) {
    out.insert(node.span);
    match &node.kind {
        NodeKind::Seq(items) => items.iter().for_each(|n| spans_of(n, out)),
        NodeKind::Map(entries) => entries.iter().for_each(|e| spans_of(&e.value, out)),
        _ => {}
    }
}

/// `repeat: N`, the number of replicates: an integer of at least 1.
fn parse_repeat(node: &Node, path: &str, c: &mut Collector) -> Option<usize> {
    match node.kind {
        NodeKind::Int(n) if n > MAX_STAGE_INSTANCES as i64 => {
            // Expanding a billion replicates would exhaust memory before anything ran.
            c.error_with_help(
                node.span,
                path,
                format!("`repeat` is {n}, over the limit of {MAX_STAGE_INSTANCES} replicates"),
                "it is the number of replicates: each configuration runs that many times with its own seed",
            );
            None
        }
        NodeKind::Int(n) if n >= 1 => Some(n as usize),
        _ => {
            let what = match node.kind {
                NodeKind::Int(n) => n.to_string(),
                _ => node.type_name().to_string(),
            };
            c.error_with_help(
                node.span,
                path,
                format!("`repeat` must be an integer of at least 1, not {what}"),
                "it is the number of replicates: each configuration runs that many times with its own seed",
            );
            None
        }
    }
}

fn parse_stage(
    entry: &Entry,
    registry: &Registry,
    interp: &mut Interpolator,
    pipeline_repeat: Option<usize>,
    c: &mut Collector,
) -> Option<(StageDecl, Vec<Span>, Node)> {
    let id = entry.key.clone();
    let path = format!("stages.{id}");
    if !is_identifier(&id) {
        c.error_with_help(
            entry.key_span,
            &path,
            format!("invalid stage id `{id}`"),
            "stage ids use letters, digits, `_` and `-` (they name directories and instance ids)",
        );
    }
    let node = interp.interpolate(&entry.value, &path, c);
    let Some(fields) = node.as_map() else {
        c.error(
            entry.key_span,
            &path,
            format!(
                "stage `{id}` must be a mapping with `kind`, not {}",
                node.type_name()
            ),
        );
        return None;
    };
    check_keys(fields, &path, STAGE_KEYS, "stage key", c);

    let kind = match node.get("kind") {
        None => {
            c.error_with_help(
                entry.key_span,
                &path,
                format!("stage `{id}` has no `kind`"),
                format!("known kinds: {}", registry.kinds().join(", ")),
            );
            None
        }
        Some(k) => match k.value.as_str() {
            Some(kind) => match registry.get(kind) {
                Some(stage) => Some(stage),
                None => {
                    c.unknown(
                        k.value.span,
                        format!("{path}.kind"),
                        "stage kind",
                        kind,
                        &registry.kinds(),
                    );
                    None
                }
            },
            None => {
                c.error(
                    k.value.span,
                    format!("{path}.kind"),
                    "`kind` must be a string",
                );
                None
            }
        },
    };

    let mut inputs = Vec::new();
    let mut input_spans = Vec::new();
    if let Some(e) = node.get("inputs") {
        let items: Vec<&Node> = match &e.value.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            NodeKind::Str(_) => vec![&e.value],
            NodeKind::Null => vec![],
            _ => {
                c.error(
                    e.value.span,
                    format!("{path}.inputs"),
                    "`inputs` must be a stage id or a list of stage ids",
                );
                vec![]
            }
        };
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => {
                    inputs.push(s.to_string());
                    input_spans.push(item.span);
                }
                None => c.error(
                    item.span,
                    format!("{path}.inputs[{i}]"),
                    "an input must be a stage id (a string)",
                ),
            }
        }
    }

    let params_node = match node.get("params") {
        None => Node::new(NodeKind::Map(vec![]), entry.key_span),
        Some(e) => match e.value.kind {
            NodeKind::Map(_) => e.value.clone(),
            NodeKind::Null => Node::new(NodeKind::Map(vec![]), e.key_span),
            _ => {
                c.error(
                    e.value.span,
                    format!("{path}.params"),
                    format!("`params` must be a mapping, not {}", e.value.type_name()),
                );
                Node::new(NodeKind::Map(vec![]), e.key_span)
            }
        },
    };

    let mut matrix = Vec::new();
    let mut matrix_spans: Vec<Vec<Span>> = Vec::new();
    if let Some(e) = node.get("matrix") {
        match e.value.as_map() {
            Some(axes) => {
                for axis in axes {
                    let axis_path = format!("{path}.matrix.{}", axis.key);
                    match &axis.value.kind {
                        NodeKind::Seq(values) if !values.is_empty() => {
                            // Rendered value -> index of its first occurrence: a lookup, not a
                            // scan, so an axis of 40,000 values stays linear.
                            let mut first_of: std::collections::HashMap<String, usize> =
                                std::collections::HashMap::with_capacity(values.len());
                            for (j, v) in values.iter().enumerate() {
                                let text = super::render_value(&v.to_json());
                                if let Some(&first) = first_of.get(&text) {
                                    c.error(
                                        v.span,
                                        format!("{axis_path}[{j}]"),
                                        format!("matrix value `{text}` repeats value {first} of the same axis (instance ids would clash)"),
                                    );
                                } else {
                                    first_of.insert(text, j);
                                }
                            }
                            matrix.push(MatrixAxis {
                                key: axis.key.clone(),
                                values: values.iter().map(Node::to_json).collect(),
                            });
                            matrix_spans.push(values.iter().map(|v| v.span).collect());
                        }
                        NodeKind::Seq(_) => c.error(
                            axis.key_span,
                            axis_path,
                            "a matrix axis needs at least one value",
                        ),
                        _ => c.error_with_help(
                            axis.value.span,
                            axis_path,
                            format!(
                                "a matrix axis must be a list of values, not {}",
                                axis.value.type_name()
                            ),
                            format!("write `{}: [a, b, c]`", axis.key),
                        ),
                    }
                }
            }
            None => c.error(
                e.value.span,
                format!("{path}.matrix"),
                "`matrix` must map parameter names to lists of values",
            ),
        }
    }

    let (resources, cluster) = node
        .get("resources")
        .map(|e| parse_resources(e, &path, c))
        .unwrap_or_default();

    let base = params_node.to_json();
    let mut reachable = true;
    for axis in &matrix {
        if let Err(message) = super::check_list_indices(&base, &axis.key) {
            let span = node
                .get("matrix")
                .and_then(|m| m.value.get(&axis.key))
                .map(|e| e.key_span)
                .unwrap_or(entry.key_span);
            c.error(
                span,
                format!("{path}.matrix.{}", axis.key),
                format!("matrix key `{}`: {message}", axis.key),
            );
            reachable = false;
        }
    }
    if let (Some(stage), true) = (kind, reachable) {
        check_params(stage, &params_node, &matrix, &matrix_spans, &path, c);
    }
    let description = node
        .get("description")
        .and_then(|e| e.value.as_str().map(String::from));
    let one_at_a_time = match node.get("matrix_mode") {
        None => false,
        Some(e) => match e.value.as_str() {
            Some("cross") => false,
            Some("one_at_a_time") => true,
            _ => {
                c.error_with_help(
                    e.value.span,
                    format!("{path}.matrix_mode"),
                    "`matrix_mode` must be `cross` or `one_at_a_time`",
                    "one_at_a_time varies each matrix axis alone, the others at their params value",
                );
                false
            }
        },
    };
    let repeat = node
        .get("repeat")
        .and_then(|e| parse_repeat(&e.value, &format!("{path}.repeat"), c));
    if node.get("repeat").is_some() || pipeline_repeat.is_some() {
        if let Some(axis) = node
            .get("matrix")
            .and_then(|m| m.value.get(super::REPLICATE))
        {
            let from = if node.get("repeat").is_some() {
                "this stage's `repeat`"
            } else {
                "the pipeline's `repeat`"
            };
            c.error_with_help(
                axis.key_span,
                format!("{path}.matrix.{}", super::REPLICATE),
                format!("matrix axis `{}` clashes with {from}", super::REPLICATE),
                "with `repeat`, `replicate` names the replicate in instance ids and results (sweep.replicate); rename the axis or drop `repeat`",
            );
        }
    }
    // A stage's own instances (matrix x repeat); upstream fan-out multiplies further, but a
    // single stage past this is a typo or an accident, and expanding it would exhaust memory.
    let own: u128 = if one_at_a_time {
        matrix
            .iter()
            .map(|a| a.values.len() as u128)
            .sum::<u128>()
            .max(1)
    } else {
        matrix.iter().map(|a| a.values.len() as u128).product()
    } * repeat
        // A stage without inputs runs the pipeline's `repeat` replicates itself.
        .or(pipeline_repeat.filter(|_| inputs.is_empty()))
        .unwrap_or(1) as u128;
    if own > MAX_STAGE_INSTANCES as u128 {
        let span = node
            .get("matrix")
            .map(|m| m.key_span)
            .unwrap_or(entry.key_span);
        c.error_with_help(
            span,
            format!("{path}.matrix"),
            format!(
                "this stage's matrix{} has {own} instances, over the limit of {MAX_STAGE_INSTANCES}",
                if repeat.is_some() { " with `repeat`" } else { "" }
            ),
            "sweep fewer values, or use `matrix_mode: one_at_a_time` for an ablation",
        );
    }
    let gather = match node.get("gather") {
        None => false,
        Some(e) => match e.value.kind {
            NodeKind::Bool(b) => b,
            _ => {
                c.error(
                    e.value.span,
                    format!("{path}.gather"),
                    "`gather` must be true or false",
                );
                false
            }
        },
    };
    Some((
        StageDecl {
            id,
            kind: kind.map(|s| s.kind().to_string()).unwrap_or_default(),
            description,
            inputs,
            gather,
            params: params_node.to_json(),
            matrix,
            one_at_a_time,
            repeat,
            resources,
            // A kind may say what its instances need on a cluster; the stage's own settings win.
            cluster: match kind {
                Some(k) => cluster.or(&k.cluster_defaults()),
                None => cluster,
            },
        },
        input_spans,
        params_node,
    ))
}

/// The `resources:` of a stage (or of a kind declared in YAML): CPUs and GPUs (for every
/// executor; `None` when neither is given, so the stage kind's default applies) and the
/// cluster-only settings.
pub(crate) fn parse_resources(
    e: &Entry,
    path: &str,
    c: &mut Collector,
) -> (Option<Resources>, ClusterResources) {
    let path = join(path, "resources");
    let Some(fields) = e.value.as_map() else {
        c.error(
            e.value.span,
            &path,
            "`resources` must be a mapping like `{cpus: 2, gpus: 1, memory: 8G}`",
        );
        return (None, ClusterResources::default());
    };
    check_keys(fields, &path, RESOURCE_KEYS, "resource", c);
    let mut res = Resources::default();
    let mut counted = false;
    let mut cluster = ClusterResources::default();
    for f in fields {
        let key = f.key.as_str();
        if !matches!(key, "cpus" | "gpus") {
            parse_cluster_field(f, &path, &mut cluster, c);
            continue;
        }
        counted = true;
        if key == "gpus" {
            let parsed = match f.value.kind {
                NodeKind::Int(i) => Gpus::parse(i as f64),
                NodeKind::Float(x) => Gpus::parse(x),
                _ => Err("`gpus` must be a whole number of GPUs (0, 1, 2, ...) or a share of one GPU below 1, like 0.5".into()),
            };
            match parsed {
                Ok(g) => res.gpus = g,
                Err(message) => c.error(f.value.span, join(&path, key), message),
            }
            continue;
        }
        let value = match f.value.kind {
            NodeKind::Int(i) if i >= 0 => i as usize,
            _ => {
                c.error(
                    f.value.span,
                    join(&path, key),
                    format!("`{key}` must be a non-negative integer"),
                );
                continue;
            }
        };
        match key {
            "cpus" if value == 0 => c.error(
                f.value.span,
                join(&path, "cpus"),
                "`cpus` must be at least 1",
            ),
            _ => res.cpus = value,
        }
    }
    (counted.then_some(res), cluster)
}

/// `memory`, `time`, `partition` or `sbatch`, in a stage's `resources:` or in `executor:`;
/// other keys are ignored here (the caller reports unknown ones).
fn parse_cluster_field(f: &Entry, path: &str, out: &mut ClusterResources, c: &mut Collector) {
    let at = join(path, &f.key);
    // Slurm accepts `--mem=4096` and `--time=30`: a bare number is fine.
    let scalar = match &f.value.kind {
        NodeKind::Str(s) => Some(s.trim().to_string()),
        NodeKind::Int(i) if *i > 0 => Some(i.to_string()),
        _ => None,
    };
    match f.key.as_str() {
        "memory" => match scalar.filter(|s| valid_memory(s)) {
            Some(s) => out.memory = Some(s),
            None => c.error_with_help(
                f.value.span,
                at,
                "`memory` must be a size like `4G`, `500M` or a number of megabytes",
                "it becomes sbatch --mem",
            ),
        },
        "time" => match scalar.filter(|s| valid_time(s)) {
            Some(s) => out.time = Some(s),
            None => c.error_with_help(
                f.value.span,
                at,
                "`time` must be a Slurm time limit like `30` (minutes), `2:00:00` or `1-12:00:00`",
                "it becomes sbatch --time",
            ),
        },
        "partition" => match scalar.filter(|s| !s.is_empty() && !s.contains(char::is_whitespace)) {
            Some(s) => out.partition = Some(s),
            None => c.error(f.value.span, at, "`partition` must be a partition name"),
        },
        "sbatch" => {
            let items: Vec<&Node> = match &f.value.kind {
                NodeKind::Seq(items) => items.iter().collect(),
                NodeKind::Str(_) => vec![&f.value],
                _ => Vec::new(),
            };
            if items.is_empty() && !matches!(&f.value.kind, NodeKind::Seq(_)) {
                c.error_with_help(
                    f.value.span,
                    &at,
                    "`sbatch` must be a list of sbatch flags",
                    "e.g. `sbatch: [--qos=high, --account=lab]`",
                );
            }
            for item in items {
                match item.as_str() {
                    Some(flag) if flag.starts_with('-') => out.sbatch.push(flag.to_string()),
                    _ => c.error_with_help(
                        item.span,
                        &at,
                        "each `sbatch` entry must be one flag starting with `-`",
                        "write flags with their value joined: `--qos=high`",
                    ),
                }
            }
        }
        _ => {}
    }
}

fn valid_memory(s: &str) -> bool {
    let digits = s.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty() && digits.len() + 1 >= s.len() && digits.chars().all(|c| c.is_ascii_digit())
}

/// Slurm's formats: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, or `UNLIMITED`.
fn valid_time(s: &str) -> bool {
    if s.eq_ignore_ascii_case("unlimited") || s.eq_ignore_ascii_case("infinite") {
        return true;
    }
    let (days, clock) = match s.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, s),
    };
    let number = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    let parts: Vec<&str> = clock.split(':').collect();
    days.is_none_or(number) && parts.len() <= 3 && parts.iter().all(|p| number(p))
}

fn parse_executor(node: &Node, c: &mut Collector) -> ExecutorDecl {
    let mut decl = ExecutorDecl::default();
    let Some(fields) = node.as_map() else {
        c.error_with_help(
            node.span,
            "executor",
            format!("`executor` must be a mapping, not {}", node.type_name()),
            "e.g. `executor: {kind: slurm, max_parallel: 8, partition: gpu}`",
        );
        return decl;
    };
    check_keys(fields, "executor", EXECUTOR_KEYS, "executor setting", c);
    for f in fields {
        let at = join("executor", &f.key);
        match f.key.as_str() {
            "kind" => match f.value.as_str() {
                Some("local") => decl.kind = ExecutorKind::Local,
                Some("slurm") => decl.kind = ExecutorKind::Slurm,
                _ => c.error(f.value.span, at, "`kind` must be `local` or `slurm`"),
            },
            "max_parallel" => match f.value.kind {
                NodeKind::Int(i) if i >= 1 => decl.max_parallel = Some(i as usize),
                _ => c.error_with_help(
                    f.value.span,
                    at,
                    "`max_parallel` must be a positive integer",
                    "it caps the running tasks of each job array (sbatch --array=0-N%K)",
                ),
            },
            "cbound" => match f.value.as_str() {
                Some(p) if !p.is_empty() => decl.cbound = Some(PathBuf::from(p)),
                _ => c.error(
                    f.value.span,
                    at,
                    "`cbound` must be the path of the cbound binary on the cluster nodes",
                ),
            },
            _ => parse_cluster_field(f, "executor", &mut decl.defaults, c),
        }
    }
    decl
}

fn split_key(key: &str) -> Vec<PathSeg> {
    key.split('.')
        .map(|k| match k.parse::<usize>() {
            Ok(i) => PathSeg::Index(i),
            Err(_) => PathSeg::Key(k.to_string()),
        })
        .collect()
}

/// Deserialises the parameters of every distinct matrix value through the stage kind's typed
/// struct, and reports each error at the YAML node that caused it.
fn check_params(
    stage: &dyn DynStage,
    params: &Node,
    matrix: &[MatrixAxis],
    matrix_spans: &[Vec<Span>],
    stage_path: &str,
    c: &mut Collector,
) {
    let mut first = params.to_json();
    for axis in matrix {
        set_dotted(&mut first, &axis.key, axis.values[0].clone());
    }
    // Related paths: the error sits at, inside, or (for values serde buffers, such as
    // internally tagged enums) around the swept key.
    let related = |path: &[PathSeg], key: &str| {
        let k = split_key(key);
        path.starts_with(&k) || k.starts_with(path) && !path.is_empty()
    };
    let report = |c: &mut Collector, err: &ParamProblem, axis: Option<(usize, usize)>| {
        let (span, yaml_path) = match axis {
            Some((a, j)) => (
                matrix_spans[a][j],
                format!("{stage_path}.matrix.{}[{j}]", matrix[a].key),
            ),
            None => (
                params.span_at(&err.path),
                join(&format!("{stage_path}.params"), &render_path(&err.path)),
            ),
        };
        let (message, help) = if err.rule {
            (err.message.clone(), None)
        } else {
            explain(stage.kind(), &err.message)
        };
        match help {
            Some(h) => c.error_with_help(span, yaml_path, message, h),
            None => c.error(span, yaml_path, message),
        }
    };
    let base_errors = all_param_errors(stage, first.clone());
    for err in &base_errors {
        let axis = matrix.iter().position(|axis| related(&err.path, &axis.key));
        report(c, err, axis.map(|a| (a, 0)));
    }
    // Every other value of each axis, the rest at their first values: an error the first
    // combination did not have is this value's fault.
    for (a, axis) in matrix.iter().enumerate() {
        for (j, value) in axis.values.iter().enumerate().skip(1) {
            let mut v = first.clone();
            set_dotted(&mut v, &axis.key, value.clone());
            for err in all_param_errors(stage, v) {
                let seen = base_errors
                    .iter()
                    .any(|b| b.path == err.path && b.message == err.message);
                if !seen {
                    report(c, &err, Some((a, j)));
                }
            }
        }
    }
}

/// A parameter error, with the path made to end at the offending key for unknown fields.
struct ParamProblem {
    path: Vec<PathSeg>,
    message: String,
    /// Broken [`crate::stage::Stage::check`] rule (its message is already the user's).
    rule: bool,
}

/// serde stops at the first error; to report them all, the offending value is removed and
/// deserialisation retried until it passes or the error cannot be localised.
fn all_param_errors(stage: &dyn DynStage, mut value: serde_json::Value) -> Vec<ParamProblem> {
    let mut out: Vec<ParamProblem> = Vec::new();
    for _ in 0..64 {
        let err = match stage.check_params(&value) {
            // What deserialises may still break a rule of the kind's `check` (a range, a
            // combination), reported at its own path; but only for parameters that
            // deserialised as written: after a bad value was removed, a rule may fail for
            // the removal alone (an emptied list).
            Ok(rules) if out.is_empty() => {
                return rules
                    .into_iter()
                    .map(|e| ParamProblem {
                        path: e.path,
                        message: e.message,
                        rule: true,
                    })
                    .collect()
            }
            Ok(_) => return out,
            Err(err) => err,
        };
        // Removing a bad required value makes it missing: that is the same problem again.
        if let Some(field) = quoted_after(&err.message, "missing field ") {
            let mut missing = err.path.clone();
            missing.push(PathSeg::Key(field));
            if out.iter().any(|p| p.path == missing) {
                return out;
            }
        }
        let mut path = err.path.clone();
        if let Some(field) = quoted_after(&err.message, "unknown field ") {
            if path.last() != Some(&PathSeg::Key(field.clone())) {
                path.push(PathSeg::Key(field));
            }
        }
        let removed = remove_at(&mut value, &path);
        out.push(ParamProblem {
            path,
            message: err.message,
            rule: false,
        });
        if !removed {
            return out;
        }
    }
    out
}

fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Rewrites serde's messages in the terms of a pipeline file, with "did you mean".
fn explain(kind: &str, message: &str) -> (String, Option<String>) {
    let expected: Vec<&str> = message
        .split_once("expected")
        .map(|(_, rest)| rest.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    for (prefix, what) in [
        ("unknown field ", "parameter"),
        ("unknown variant ", "value"),
    ] {
        if let Some(name) = quoted_after(message, prefix) {
            let msg = format!("unknown {what} `{name}` for stage kind `{kind}`");
            let help = match did_you_mean(&name, &expected) {
                Some(s) => format!(
                    "did you mean `{s}`? (expected one of: {})",
                    expected.join(", ")
                ),
                None if expected.is_empty() => "nothing here takes parameters".to_string(),
                None => format!("expected one of: {}", expected.join(", ")),
            };
            return (msg, Some(help));
        }
    }
    if let Some(field) = quoted_after(message, "missing field ") {
        return (
            format!("stage kind `{kind}` requires parameter `{field}`"),
            Some(format!("see `cbound stages {kind}`")),
        );
    }
    (format!("invalid parameter: {message}"), None)
}

fn remove_at(value: &mut serde_json::Value, path: &[PathSeg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        node = match (seg, node) {
            (PathSeg::Key(k), serde_json::Value::Object(map)) => match map.get_mut(k) {
                Some(n) => n,
                None => return false,
            },
            (PathSeg::Index(i), serde_json::Value::Array(items)) => match items.get_mut(*i) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (PathSeg::Key(k), serde_json::Value::Object(map)) => map.shift_remove(k).is_some(),
        (PathSeg::Index(i), serde_json::Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        _ => false,
    }
}

/// The most instances a pipeline may expand to, all stages together: fan-out multiplies the
/// stages' own matrices (three stages of 1,000 values each make 10^9 instances), and
/// expanding that would exhaust memory before anything ran.
pub const MAX_PIPELINE_INSTANCES: u128 = 1_000_000;

/// Refuses a pipeline whose expansion is over [`MAX_PIPELINE_INSTANCES`]. A stage's instances
/// are at most the product of its own configurations and those of every swept stage it
/// descends from (inputs join on shared lineage; a `gather` stage descends from none).
fn check_fan_out(
    stages: &[StageDecl],
    spans: &HashMap<String, (Span, Vec<Span>)>,
    pipeline_repeat: Option<usize>,
    c: &mut Collector,
) {
    use std::collections::BTreeSet;
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let own: Vec<u128> = stages
        .iter()
        .map(|s| {
            let m = if s.one_at_a_time {
                s.matrix
                    .iter()
                    .map(|a| a.values.len() as u128)
                    .sum::<u128>()
                    .max(1)
            } else {
                s.matrix.iter().map(|a| a.values.len() as u128).product()
            };
            m * s.repeat.unwrap_or(1) as u128
        })
        .collect();
    // Swept ancestors of each stage (itself included), memoised; a cycle (reported by
    // check_graph) is cut.
    fn lineage(
        s: usize,
        stages: &[StageDecl],
        index: &HashMap<&str, usize>,
        memo: &mut Vec<Option<BTreeSet<usize>>>,
        visiting: &mut Vec<bool>,
    ) -> BTreeSet<usize> {
        if let Some(l) = &memo[s] {
            return l.clone();
        }
        let mut out = BTreeSet::new();
        if visiting[s] {
            return out;
        }
        visiting[s] = true;
        out.insert(s);
        if !stages[s].gather {
            for input in &stages[s].inputs {
                if let Some(&u) = index.get(input.as_str()) {
                    out.extend(lineage(u, stages, index, memo, visiting));
                }
            }
        }
        visiting[s] = false;
        memo[s] = Some(out.clone());
        out
    }
    let mut memo = vec![None; stages.len()];
    let mut visiting = vec![false; stages.len()];
    let mut total: u128 = 0;
    for (i, s) in stages.iter().enumerate() {
        let mut n: u128 = lineage(i, stages, &index, &mut memo, &mut visiting)
            .iter()
            .map(|&a| own[a])
            .fold(1u128, |acc, x| acc.saturating_mul(x));
        if !s.gather {
            n = n.saturating_mul(pipeline_repeat.unwrap_or(1) as u128);
        }
        total = total.saturating_add(n);
        if total > MAX_PIPELINE_INSTANCES {
            let span = spans.get(&s.id).map(|(k, _)| *k).unwrap_or_default();
            c.error_with_help(
                span,
                format!("stages.{}", s.id),
                format!(
                    "the pipeline expands to more than {MAX_PIPELINE_INSTANCES} instances by stage `{}` ({n} instances of it: its matrix crossed with every swept stage upstream)",
                    s.id
                ),
                "sweep fewer values, use `matrix_mode: one_at_a_time`, or `gather: true` to summarise a sweep once",
            );
            return;
        }
    }
}

fn check_graph(
    stages: &[StageDecl],
    spans: &HashMap<String, (Span, Vec<Span>)>,
    c: &mut Collector,
) {
    let ids: Vec<&str> = stages.iter().map(|s| s.id.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    for s in stages {
        let (_, input_spans) = &spans[&s.id];
        for (i, input) in s.inputs.iter().enumerate() {
            let path = format!("stages.{}.inputs[{i}]", s.id);
            if !ids.contains(&input.as_str()) {
                let others: Vec<&str> = ids.iter().copied().filter(|x| *x != s.id).collect();
                c.unknown(input_spans[i], path, "input stage", input, &others);
            } else if !seen.insert((s.id.clone(), input.clone())) {
                c.error(
                    input_spans[i],
                    path,
                    format!("input `{input}` is listed twice"),
                );
            }
        }
    }
    // Depth-first search; a back edge closes a cycle, reported once per set of stages.
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut state = vec![0u8; stages.len()]; // 0 new, 1 on stack, 2 done
    let mut reported: Vec<Vec<usize>> = Vec::new();
    fn visit(
        v: usize,
        stages: &[StageDecl],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
        found: &mut Vec<Vec<usize>>,
    ) {
        state[v] = 1;
        stack.push(v);
        for input in &stages[v].inputs {
            let Some(&u) = index.get(input.as_str()) else {
                continue;
            };
            if state[u] == 1 {
                let start = stack.iter().position(|x| *x == u).unwrap_or(0);
                found.push(stack[start..].to_vec());
            } else if state[u] == 0 {
                visit(u, stages, index, state, stack, found);
            }
        }
        stack.pop();
        state[v] = 2;
    }
    for v in 0..stages.len() {
        if state[v] == 0 {
            let mut found = Vec::new();
            visit(v, stages, &index, &mut state, &mut Vec::new(), &mut found);
            for cycle in found {
                let mut members = cycle.clone();
                members.sort();
                if reported.contains(&members) {
                    continue;
                }
                reported.push(members);
                // The stack runs downstream -> upstream; print it in data-flow order.
                let mut names: Vec<&str> = cycle.iter().rev().map(|i| ids[*i]).collect();
                names.push(names[0]);
                let first = cycle[0];
                c.error_with_help(
                    spans[ids[first]].0,
                    format!("stages.{}.inputs", ids[first]),
                    format!("stages form a cycle: {}", names.join(" -> ")),
                    "a stage cannot depend, directly or through others, on its own output",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Pipeline, ConfigErrors> {
        load_str(
            text,
            Path::new("p.yaml"),
            &[],
            &crate::stage::testkinds::registry(),
        )
    }

    fn messages(text: &str) -> Vec<String> {
        load_text(text)
            .unwrap_err()
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn a_valid_pipeline_loads_with_vars_and_matrix() {
        let p = load_text(
            "name: demo\nseed: 7\nvars: {n: 100}\nstages:\n  data:\n    kind: synthetic\n    params: {n: '${n}', task: bivariate}\n    matrix: {rho: [0.1, 0.5]}\n  post:\n    kind: command\n    inputs: data\n    params: {argv: [echo, hi]}\n",
        )
        .unwrap();
        assert_eq!(p.name, "demo");
        assert_eq!(p.seed, 7);
        assert_eq!(p.stages[0].params["n"], 100);
        assert_eq!(p.stages[0].matrix[0].values.len(), 2);
        assert_eq!(p.stages[1].inputs, vec!["data".to_string()]);
    }

    #[test]
    fn all_errors_of_a_file_are_collected_with_positions() {
        let m = messages(
            "name: demo\nsedd: 1\nstages:\n  a:\n    kind: synthetc\n  b:\n    kind: synthetic\n    inputs: [zz]\n    params: {n: many, tsk: x}\n",
        );
        let all = m.join("\n");
        assert!(
            all.contains("p.yaml:2:1") && all.contains("did you mean `seed`"),
            "{all}"
        );
        assert!(
            all.contains("p.yaml:5:11") && all.contains("did you mean `synthetic`"),
            "{all}"
        );
        assert!(
            all.contains("p.yaml:8:14") && all.contains("unknown input stage `zz`"),
            "{all}"
        );
        assert!(
            all.contains("p.yaml:9:17") && all.contains("stages.b.params.n"),
            "{all}"
        );
        assert!(
            all.contains("unknown parameter `tsk`") && all.contains("did you mean `task`"),
            "{all}"
        );
        assert_eq!(m.len(), 5, "{all}");
    }

    #[test]
    fn a_variable_nothing_uses_is_an_error_unless_an_alias_uses_it() {
        let m = messages("vars: {epochs: 3, epoch: 2}\nstages:\n  a: {kind: synthetic, params: {n: '${epochs}'}}\n");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("p.yaml:1:19") && m[0].contains("variable `epoch` is never used"),
            "{}",
            m[0]
        );
        // A variable that holds an anchor is used through its aliases.
        let p = load_text(
            "vars:\n  common: &common {n: 20}\nstages:\n  a: {kind: synthetic, params: *common}\n",
        )
        .unwrap();
        assert_eq!(p.stages[0].params["n"], 20);
        // A variable added from the command line is checked too.
        let err = load_str(
            "stages:\n  a: {kind: synthetic}\n",
            Path::new("p.yaml"),
            &["+vars.n=3".into()],
            &crate::stage::testkinds::registry(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("variable `n` is never used"),
            "{err}"
        );
    }

    #[test]
    fn cycles_print_their_path() {
        let m = messages(
            "stages:\n  a: {kind: synthetic, inputs: [c]}\n  b: {kind: synthetic, inputs: [a]}\n  c: {kind: synthetic, inputs: [b]}\n",
        );
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("cycle: a -> b -> c -> a")
                || m[0].contains("cycle: c -> a -> b -> c")
                || m[0].contains("cycle: b -> c -> a -> b"),
            "{}",
            m[0]
        );
        let m = messages("stages:\n  a: {kind: synthetic, inputs: [a]}\n");
        assert!(m[0].contains("cycle: a -> a"), "{}", m[0]);
    }

    #[test]
    fn duplicate_stage_ids_are_errors() {
        let m = messages("stages:\n  a: {kind: synthetic}\n  a: {kind: synthetic}\n");
        assert!(
            m[0].contains("duplicate key `a`") && m[0].contains("p.yaml:3:3"),
            "{}",
            m[0]
        );
    }

    #[test]
    fn bad_matrix_values_point_at_the_value() {
        let m = messages("stages:\n  a:\n    kind: synthetic\n    matrix: {n: [10, oops, 30]}\n");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("p.yaml:4:22") && m[0].contains("stages.a.matrix.n[1]"),
            "{}",
            m[0]
        );
    }

    #[test]
    fn overrides_are_validated_too() {
        let err = load_str(
            "stages:\n  a: {kind: synthetic}\n",
            Path::new("p.yaml"),
            &["stages.a.params.n=abc".into()],
            &crate::stage::testkinds::registry(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("(from --set)"), "{err}");
        let ok = load_str(
            "stages:\n  a: {kind: synthetic}\n",
            Path::new("p.yaml"),
            &["stages.a.params.n=50".into(), "seed=3".into()],
            &crate::stage::testkinds::registry(),
        )
        .unwrap();
        assert_eq!(ok.stages[0].params["n"], 50);
        assert_eq!(ok.seed, 3);
    }

    #[test]
    fn matrix_keys_reach_into_lists() {
        let text = "stages:\n  d: {kind: load, params: {format: npy, path: x.npy}}\n  v:\n    kind: augment\n    inputs: d\n    params: {views: [[{op: gaussian_noise, std: 0.1}], []]}\n    matrix: {views.0.0.std: [0.1, 0.5]}\n";
        let p = load_text(text).unwrap();
        assert_eq!(p.stages[1].matrix[0].key, "views.0.0.std");
        let m = messages(&text.replace("views.0.0.std", "views.5.0.std"));
        assert!(
            m[0].contains("`views` has 2 element(s), no element 5"),
            "{}",
            m[0]
        );
        let m = messages(&text.replace("[0.1, 0.5]", "[0.1, loud]"));
        assert!(
            m[0].contains("stages.v.matrix.views.0.0.std[1]"),
            "{}",
            m[0]
        );
    }

    #[test]
    fn cluster_settings_load_and_leave_cpu_defaults_alone() {
        let p = load_text(
            "name: p\nexecutor: {kind: slurm, max_parallel: 4, partition: short, sbatch: [--qos=low]}\nstages:\n  a:\n    kind: synthetic\n    resources: {memory: 8G, time: \"1:00:00\", gpus: 1}\n  b:\n    kind: synthetic\n    resources: {memory: 512}\n",
        )
        .unwrap();
        assert_eq!(p.executor.kind, ExecutorKind::Slurm);
        assert_eq!(p.executor.max_parallel, Some(4));
        assert_eq!(p.executor.defaults.partition.as_deref(), Some("short"));
        assert_eq!(p.executor.defaults.sbatch, vec!["--qos=low"]);
        let a = p.stage("a").unwrap();
        assert_eq!(a.cluster.memory.as_deref(), Some("8G"));
        assert_eq!(a.cluster.time.as_deref(), Some("1:00:00"));
        assert_eq!(
            a.resources,
            Some(Resources {
                cpus: 1,
                gpus: Gpus::whole(1)
            })
        );
        let b = p.stage("b").unwrap();
        assert_eq!(b.cluster.memory.as_deref(), Some("512"));
        // Only cluster settings: the stage kind still decides CPUs and GPUs.
        assert_eq!(b.resources, None);
    }

    #[test]
    fn bad_cluster_settings_are_errors_with_help() {
        let errors = messages(
            "name: p\nexecutor: {kind: pbs, max_parallel: 0, walltime: 3}\nstages:\n  a:\n    kind: synthetic\n    resources: {memory: lots, time: soon, sbatch: [qos=high]}\n",
        );
        let all = errors.join("\n");
        for part in [
            "`kind` must be `local` or `slurm`",
            "`max_parallel` must be a positive integer",
            "walltime",
            "`memory` must be a size",
            "`time` must be a Slurm time limit",
            "must be one flag starting with `-`",
        ] {
            assert!(all.contains(part), "missing {part}:\n{all}");
        }
    }

    #[test]
    fn slurm_time_formats() {
        for ok in [
            "30",
            "30:00",
            "2:00:00",
            "1-12",
            "1-12:30",
            "1-12:30:00",
            "UNLIMITED",
        ] {
            assert!(valid_time(ok), "{ok}");
        }
        for bad in ["", "1h", "1:2:3:4", "-5", "a-1"] {
            assert!(!valid_time(bad), "{bad}");
        }
        assert!(
            valid_memory("4G")
                && valid_memory("4096")
                && !valid_memory("G")
                && !valid_memory("4GB")
        );
    }

    #[test]
    fn repeat_loads_from_the_file_vars_and_set() {
        let p = load_text(
            "repeat: 2\nvars: {reps: 4}\nstages:\n  a: {kind: synthetic, repeat: 3}\n  b: {kind: synthetic, repeat: '${reps}'}\n  c: {kind: synthetic}\n",
        )
        .unwrap();
        assert_eq!(p.repeat, Some(2));
        let reps: Vec<Option<usize>> = p.stages.iter().map(|s| s.repeat).collect();
        assert_eq!(reps, vec![Some(3), Some(4), None]);
        assert_eq!(p.replicates(&p.stages[0]), super::super::Replicates::Own(3));
        assert_eq!(
            p.replicates(&p.stages[2]),
            super::super::Replicates::Pipeline(2)
        );
        let set = load_str(
            "stages:\n  a: {kind: synthetic}\n  b: {kind: synthetic, inputs: a}\n",
            Path::new("p.yaml"),
            &["stages.a.repeat=3".into(), "repeat=5".into()],
            &crate::stage::testkinds::registry(),
        )
        .unwrap();
        assert_eq!((set.repeat, set.stages[0].repeat), (Some(5), Some(3)));
        // A stage with inputs does not take the pipeline's repeat: it inherits it.
        assert_eq!(
            set.replicates(&set.stages[1]),
            super::super::Replicates::Single
        );
    }

    #[test]
    fn fan_out_past_the_limit_is_refused_at_the_stage() {
        // Found by tests/fuzz_pipeline.rs: three chained stages of 1,000 values hung validate.
        let values = (1..=1000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let m = messages(&format!(
            "stages:\n  a:\n    kind: synthetic\n    matrix: {{n: [{values}]}}\n  b:\n    kind: synthetic\n    inputs: a\n    matrix: {{dim: [{values}]}}\n  c:\n    kind: synthetic\n    inputs: b\n"
        ));
        assert!(
            m.len() == 1
                && m[0].contains("p.yaml:5:3")
                && m[0].contains("more than 1000000 instances by stage `b`"),
            "{m:?}"
        );
        // Inputs sharing an ancestor join on it: a diamond is not counted twice.
        let values = (1..=500)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        load_text(&format!(
            "stages:\n  a:\n    kind: synthetic\n    matrix: {{n: [{values}]}}\n  b: {{kind: synthetic, inputs: a}}\n  c: {{kind: synthetic, inputs: a}}\n  d: {{kind: synthetic, inputs: [b, c]}}\n"
        ))
        .unwrap();
    }

    #[test]
    fn huge_repeat_is_refused_before_expansion() {
        // Found by tests/fuzz_pipeline.rs: `repeat: 1000000000` hung validate (expansion).
        let m = messages("repeat: 1000000000\nstages:\n  a: {kind: synthetic}\n");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("p.yaml:1:9") && m[0].contains("over the limit of 100000"),
            "{m:?}"
        );
        // The pipeline's repeat multiplies a root stage's own matrix.
        let m = messages(
            "repeat: 1000\nstages:\n  a:\n    kind: synthetic\n    matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101]}\n",
        );
        assert!(
            m.len() == 1 && m[0].contains("101000 instances") && m[0].contains("p.yaml:5:5"),
            "{m:?}"
        );
    }

    #[test]
    fn bad_repeat_values_are_errors_with_positions() {
        let m = messages(
            "repeat: 0\nstages:\n  a: {kind: synthetic, repeat: -2}\n  b: {kind: synthetic, repeat: 2.5}\n  c: {kind: synthetic, repeat: many}\n",
        );
        let all = m.join("\n");
        assert_eq!(m.len(), 4, "{all}");
        for (at, path, what) in [
            ("p.yaml:1:9", "`repeat`", "not 0"),
            ("p.yaml:3:32", "`stages.a.repeat`", "not -2"),
            ("p.yaml:4:32", "`stages.b.repeat`", "not a number"),
            ("p.yaml:5:32", "`stages.c.repeat`", "not a string"),
        ] {
            assert!(
                m.iter().any(|e| e.contains(at)
                    && e.contains(&format!("(at {path})"))
                    && e.contains("`repeat` must be an integer of at least 1")
                    && e.contains(what)),
                "missing {at} {path} {what}:\n{all}"
            );
        }
        let err = load_str(
            "stages:\n  a: {kind: synthetic}\n",
            Path::new("p.yaml"),
            &["stages.a.repeat=0".into()],
            &crate::stage::testkinds::registry(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("(from --set) (at `stages.a.repeat`)"), "{err}");
    }

    #[test]
    fn a_matrix_axis_named_replicate_clashes_with_repeat() {
        let m = messages(
            "stages:\n  a:\n    kind: synthetic\n    repeat: 2\n    matrix: {replicate: [1, 2]}\n",
        );
        assert!(
            m.iter().any(|e| e.contains("p.yaml:5:14")
                && e.contains("(at `stages.a.matrix.replicate`)")
                && e.contains("matrix axis `replicate` clashes with this stage's `repeat`")),
            "{m:?}"
        );
        let m = messages(
            "repeat: 2\nstages:\n  a: {kind: synthetic}\n  b:\n    kind: synthetic\n    inputs: a\n    matrix: {replicate: [1, 2]}\n",
        );
        assert!(
            m.iter()
                .any(|e| e.contains("clashes with the pipeline's `repeat`")),
            "{m:?}"
        );
    }

    #[test]
    fn malformed_yaml_is_one_error_with_position() {
        let m = messages("stages:\n  a: {kind: synthetic\n");
        assert_eq!(m.len(), 1);
        assert!(
            m[0].contains("YAML syntax error") && m[0].contains("p.yaml:"),
            "{}",
            m[0]
        );
    }

    #[test]
    fn gpus_take_whole_devices_or_a_share_below_one() {
        let registry = crate::stage::testkinds::registry();
        let with = |gpus: &str| {
            load_str(
                &format!("name: p\nstages:\n  a:\n    kind: synthetic\n    resources: {{gpus: {gpus}}}\n"),
                Path::new("p.yaml"),
                &[],
                &registry,
            )
            .map(|p| p.stages[0].resources.map(|r| r.gpus))
            .map_err(|e| e.to_string())
        };
        assert_eq!(with("2"), Ok(Some(Gpus::whole(2))));
        assert_eq!(with("0"), Ok(Some(Gpus::NONE)));
        let half = with("0.5").unwrap().unwrap();
        assert_eq!((half.share(), half.devices()), (Some(0.5), 1));
        assert_eq!(with("0.125").unwrap().unwrap().share(), Some(0.125));
        assert_eq!(with("1.0"), Ok(Some(Gpus::whole(1))));
        for (bad, says) in [
            ("1.5", "a share must be below 1"),
            ("-1", "a whole number of GPUs"),
            ("0.0001", "to a thousandth"),
            ("0.3333", "to a thousandth"),
            ("many", "a whole number of GPUs"),
        ] {
            let e = with(bad).unwrap_err();
            assert!(e.contains(says) && e.contains("p.yaml:5:"), "{bad}: {e}");
            assert!(e.contains("stages.a.resources.gpus"), "{bad}: {e}");
        }
    }
}
