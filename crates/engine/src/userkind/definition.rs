//! One stage kind declared in YAML, read from its definition with every problem reported at
//! its place in the file, the way pipeline errors are.
//!
//! ```yaml
//! summary: PCA projection of embeddings.       # shown by `cbound stages`
//! version: 1                                     # bump when the results change: joins every cache key
//! params:                                        # a JSON Schema subset (schema.rs)
//!   components: {type: integer, minimum: 1, default: 2}
//! needs: [embeddings.parquet]                    # read from whichever input wrote it
//! produces: [pca.parquet, pca.png]               # checked after every run; downstream wiring uses it
//! track: [pca_embeddings.py]                     # relative to this file; content joins the cache key
//! command: [python3, "{kind_dir}/pca_embeddings.py", "{needs.embeddings.parquet}", "{out}"]
//! resources: {cpus: 1, memory: 1G, time: "10"}
//! ```
//!
//! Definitions are taken literally: no `${...}` interpolation and no `--set`, so that a kind
//! means the same in every pipeline that uses it.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::schema::{parse_params, Params};
use super::template::{self, Piece};
use crate::config::diagnostics::{did_you_mean, Collector};
use crate::config::load::join;
use crate::config::yaml::{Entry, Node, NodeKind, Span};
use crate::config::{ClusterResources, Resources};

/// Keys of a definition (a kind file may also say its `name`).
pub const KIND_KEYS: &[&str] = &[
    "summary",
    "version",
    "params",
    "needs",
    "produces",
    "track",
    "command",
    "env",
    "pass_env",
    "timeout_s",
    "resources",
    "example",
];

/// Where a definition was written, for `cbound stages NAME` and messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// A kind declared in YAML, checked. Serialisable, so that a run can hand its kinds to a
/// cluster node and to `cbound report` (see [`super::UserKinds::write_snapshot`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindDef {
    pub name: String,
    pub summary: String,
    pub version: u32,
    pub params: Params,
    /// Files read from the inputs (from whichever input wrote each).
    pub needs: Vec<String>,
    /// Files every instance writes; `None`: not declared (unknown before running).
    pub produces: Option<Vec<String>>,
    /// Files whose content joins the cache key, as written (relative to `dir`).
    pub track: Vec<PathBuf>,
    /// The argument list, placeholders unfilled.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub pass_env: Vec<String>,
    pub timeout_s: Option<f64>,
    /// CPUs and GPUs of an instance unless the stage says otherwise.
    pub resources: Option<Resources>,
    pub cluster: ClusterResources,
    /// A pipeline snippet for `cbound stages`; generated when not given.
    pub example: Option<String>,
    /// The directory of the definition's file: `{kind_dir}`, and what `track` is relative to.
    pub dir: PathBuf,
    pub source: Source,
}

/// What of a definition decides its results, for the cache key: not its summary, example,
/// parameter descriptions or resources (as for built-in kinds, where documentation and
/// resources do not enter the key either), nor its version (in the key on its own).
#[derive(Serialize)]
struct Semantics<'a> {
    command: &'a [String],
    params: Params,
    needs: &'a [String],
    produces: &'a Option<Vec<String>>,
    track: &'a [PathBuf],
    env: &'a BTreeMap<String, String>,
    pass_env: &'a [String],
}

impl KindDef {
    /// BLAKE3 of the definition's [`Semantics`].
    pub fn digest(&self) -> String {
        let mut params = self.params.clone();
        for (_, spec) in params.0.iter_mut() {
            spec.description = None;
            if let Some(items) = spec.items.as_mut() {
                items.description = None;
            }
        }
        let semantics = Semantics {
            command: &self.command,
            params,
            needs: &self.needs,
            produces: &self.produces,
            track: &self.track,
            env: &self.env,
            pass_env: &self.pass_env,
        };
        // Strings, numbers and lists only: serialising cannot fail.
        let bytes = serde_json::to_vec(&semantics).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// The parsed command; the definition was checked when read, so this fails only for a
    /// definition that did not come through [`parse_kind`] (a hand-edited snapshot).
    pub fn templates(&self) -> Result<Vec<Vec<Piece>>, String> {
        self.command
            .iter()
            .map(|a| template::parse_arg(a))
            .collect()
    }

    /// Tracked files, as paths from the working directory.
    pub fn tracked_paths(&self) -> Vec<PathBuf> {
        self.track.iter().map(|t| self.dir.join(t)).collect()
    }
}

/// A kind name: it appears as `kind:` in pipelines and in results.parquet.
pub fn is_kind_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A relative path that stays inside the output directory and names a public file
/// (names starting with `.` are private and dropped when an instance is published).
fn output_name_problem(name: &str) -> Option<&'static str> {
    let path = Path::new(name);
    if name.is_empty() || path.is_absolute() {
        return Some("must be a file name relative to the output directory");
    }
    for c in path.components() {
        match c {
            Component::Normal(part) if part.to_string_lossy().starts_with('.') => {
                return Some("names starting with `.` are private and dropped when the instance is published");
            }
            Component::Normal(_) => {}
            _ => return Some("must stay inside the output directory (no `..`, no leading `/`)"),
        }
    }
    if name == "meta.json" {
        return Some("`meta.json` is written by cbound");
    }
    None
}

fn strings(node: &Node, path: &str, what: &str, c: &mut Collector) -> Vec<(String, Span)> {
    let items: Vec<&Node> = match &node.kind {
        NodeKind::Seq(items) => items.iter().collect(),
        NodeKind::Str(_) => vec![node],
        NodeKind::Null => vec![],
        _ => {
            c.error(
                node.span,
                path,
                format!(
                    "`{what}` must be a list of strings, not {}",
                    node.type_name()
                ),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) => out.push((s.to_string(), item.span)),
            None => c.error(
                item.span,
                format!("{path}[{i}]"),
                format!(
                    "each entry of `{what}` must be a string, not {}",
                    item.type_name()
                ),
            ),
        }
    }
    out
}

/// Where a definition is read from: its file, the YAML path of the definition in it
/// (`kinds.NAME` in a pipeline, empty in a kind file), and whether a `name:` key may rename
/// it (kind files only).
pub struct Origin<'a> {
    pub file: &'a Path,
    pub prefix: &'a str,
    pub allow_name: bool,
}

/// Reads the definition of kind `name` (written at `at`) from `node`; problems go to `c`,
/// and a definition with any is `None`.
pub fn parse_kind(
    name: &str,
    at: Span,
    node: &Node,
    origin: &Origin,
    c: &mut Collector,
) -> Option<KindDef> {
    let (file, prefix, allow_name) = (origin.file, origin.prefix, origin.allow_name);
    // Paths in the definition (track, {kind_dir}) are relative to its file.
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(entries) = node.as_map() else {
        c.error_with_help(
            node.span,
            prefix,
            format!(
                "a stage kind definition must be a mapping, not {}",
                node.type_name()
            ),
            "with at least `version` and `command` (docs/adding-a-stage.md)",
        );
        return None;
    };
    let before = c.errors.len();
    let mut name = name.to_string();
    for e in entries {
        if KIND_KEYS.contains(&e.key.as_str()) {
            continue;
        }
        if allow_name && e.key == "name" {
            match e.value.as_str() {
                Some(n) => name = n.to_string(),
                None => c.error(
                    e.value.span,
                    join(prefix, "name"),
                    "`name` must be a string",
                ),
            }
            continue;
        }
        let mut known: Vec<&str> = KIND_KEYS.to_vec();
        if allow_name {
            known.push("name");
        }
        c.unknown(
            e.key_span,
            join(prefix, &e.key),
            "stage kind key",
            &e.key,
            &known,
        );
    }
    if !is_kind_name(&name) {
        c.error_with_help(
            at,
            prefix,
            format!("invalid stage kind name `{name}`"),
            "kind names use letters, digits, `_` and `-`, starting with a letter",
        );
    }
    let get = |key: &str| -> Option<&Entry> { entries.iter().find(|e| e.key == key) };
    let path = |key: &str| join(prefix, key);

    let summary = match get("summary") {
        None => String::new(),
        Some(e) => match e.value.as_str() {
            Some(s) => s.trim().to_string(),
            None => {
                c.error(e.value.span, path("summary"), "`summary` must be a string");
                String::new()
            }
        },
    };
    let version = match get("version") {
        None => {
            c.error_with_help(
                at,
                path("version"),
                format!("stage kind `{name}` has no `version`"),
                "add `version: 1`, and bump it whenever the kind's results change for the same parameters: it joins every cache key",
            );
            0
        }
        Some(e) => match e.value.kind {
            NodeKind::Int(v) if (1..=u32::MAX as i64).contains(&v) => v as u32,
            _ => {
                c.error(
                    e.value.span,
                    path("version"),
                    "`version` must be a positive integer",
                );
                0
            }
        },
    };
    let params = get("params")
        .map(|e| parse_params(&e.value, &path("params"), c))
        .unwrap_or_default();

    let needs: Vec<(String, Span)> = get("needs")
        .map(|e| strings(&e.value, &path("needs"), "needs", c))
        .unwrap_or_default();
    for (i, (file, span)) in needs.iter().enumerate() {
        if let Some(problem) = output_name_problem(file) {
            c.error(
                *span,
                format!("{}[{i}]", path("needs")),
                format!("`{file}` {problem}"),
            );
        }
    }
    let produces: Option<Vec<(String, Span)>> =
        get("produces").map(|e| strings(&e.value, &path("produces"), "produces", c));
    if let Some(files) = &produces {
        for (i, (file, span)) in files.iter().enumerate() {
            let at = format!("{}[{i}]", path("produces"));
            if let Some(problem) = output_name_problem(file) {
                c.error(*span, &at, format!("`{file}` {problem}"));
            } else if files[..i].iter().any(|(f, _)| f == file) {
                c.error(*span, &at, format!("`{file}` is listed twice"));
            }
        }
    }
    let mut track = Vec::new();
    if let Some(e) = get("track") {
        for (i, (file, span)) in strings(&e.value, &path("track"), "track", c)
            .into_iter()
            .enumerate()
        {
            let resolved = dir.join(&file);
            if resolved.is_file() {
                track.push(PathBuf::from(file));
            } else {
                c.error_with_help(
                    span,
                    format!("{}[{i}]", path("track")),
                    format!(
                        "tracked file `{file}` does not exist ({} is not a file)",
                        resolved.display()
                    ),
                    "`track` paths are relative to the directory of the kind's definition",
                );
            }
        }
    }

    let mut command = Vec::new();
    match get("command") {
        None => c.error_with_help(
            at,
            path("command"),
            format!("stage kind `{name}` has no `command`"),
            "add the program and its arguments, e.g. `command: [python3, \"{kind_dir}/script.py\", \"{out}\"]`",
        ),
        Some(e) => {
            let args = strings(&e.value, &path("command"), "command", c);
            if args.is_empty() && matches!(e.value.kind, NodeKind::Seq(_) | NodeKind::Null) {
                c.error(e.value.span, path("command"), "`command` is empty: name a program to run");
            }
            let names = params.names();
            let need_names: Vec<&str> = needs.iter().map(|(n, _)| n.as_str()).collect();
            for (i, (arg, span)) in args.into_iter().enumerate() {
                let at = format!("{}[{i}]", path("command"));
                match template::parse_arg(&arg) {
                    Err(message) => c.error(span, &at, message),
                    Ok(pieces) => {
                        for piece in &pieces {
                            match piece {
                                Piece::Param(p) => match params.get(p) {
                                    None => c.error_with_help(
                                        span,
                                        &at,
                                        format!("`{{params.{p}}}` names no parameter of stage kind `{name}`"),
                                        match did_you_mean(p, &names) {
                                            Some(s) => format!("did you mean `{{params.{s}}}`?"),
                                            None if names.is_empty() => "declare it under `params`".to_string(),
                                            None => format!("parameters: {}", names.join(", ")),
                                        },
                                    ),
                                    Some(spec) if spec.default.is_none() && !spec.required => c.error_with_help(
                                        span,
                                        &at,
                                        format!("`{{params.{p}}}` has no value when the stage does not set `{p}`"),
                                        format!("give `{p}` a `default`, or make it `required: true`; optional parameters without a default reach the program only through $CBOUND_PARAMS"),
                                    ),
                                    Some(_) => {}
                                },
                                Piece::Needs(file) if !need_names.contains(&file.as_str()) => {
                                    c.error_with_help(
                                        span,
                                        &at,
                                        format!("`{{needs.{file}}}` names a file that is not in `needs`"),
                                        format!("add `{file}` to `needs`, so `validate` checks that an input writes it"),
                                    )
                                }
                                _ => {}
                            }
                        }
                        command.push(arg);
                    }
                }
            }
        }
    }

    let mut env = BTreeMap::new();
    if let Some(e) = get("env") {
        match e.value.as_map() {
            Some(vars) => {
                for v in vars {
                    let text = match &v.value.kind {
                        NodeKind::Str(s) => Some(s.clone()),
                        NodeKind::Int(i) => Some(i.to_string()),
                        NodeKind::Float(f) => Some(f.to_string()),
                        NodeKind::Bool(b) => Some(b.to_string()),
                        _ => None,
                    };
                    match text {
                        Some(t) => {
                            env.insert(v.key.clone(), t);
                        }
                        None => c.error(
                            v.value.span,
                            join(&path("env"), &v.key),
                            "an environment variable's value must be a string or a number",
                        ),
                    }
                }
            }
            None => c.error(
                e.value.span,
                path("env"),
                "`env` must map variable names to values",
            ),
        }
    }
    let pass_env: Vec<String> = get("pass_env")
        .map(|e| strings(&e.value, &path("pass_env"), "pass_env", c))
        .unwrap_or_default()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let timeout_s = get("timeout_s").and_then(|e| {
        let t = match e.value.kind {
            NodeKind::Int(i) => Some(i as f64),
            NodeKind::Float(f) => Some(f),
            _ => None,
        };
        match t {
            Some(t) if t.is_finite() && t > 0.0 => Some(t),
            _ => {
                c.error(
                    e.value.span,
                    path("timeout_s"),
                    "`timeout_s` must be a positive number of seconds",
                );
                None
            }
        }
    });
    let (resources, cluster) = get("resources")
        .map(|e| crate::config::load::parse_resources(e, prefix, c))
        .unwrap_or_default();
    let example = match get("example") {
        None => None,
        Some(e) => match e.value.as_str() {
            Some(s) if crate::config::yaml::parse(s).is_ok() => Some(s.to_string()),
            Some(_) => {
                c.error(
                    e.value.span,
                    path("example"),
                    "`example` must be a YAML snippet of one stage",
                );
                None
            }
            None => {
                c.error(e.value.span, path("example"), "`example` must be a string");
                None
            }
        },
    };
    if c.errors.len() > before {
        return None;
    }
    Some(KindDef {
        name,
        summary,
        version,
        params,
        needs: needs.into_iter().map(|(n, _)| n).collect(),
        produces: produces.map(|files| files.into_iter().map(|(n, _)| n).collect()),
        track,
        command,
        env,
        pass_env,
        timeout_s,
        resources,
        cluster,
        example,
        dir: dir.to_path_buf(),
        source: Source {
            file: file.to_path_buf(),
            line: at.line,
            col: at.col,
        },
    })
}
