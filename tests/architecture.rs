//! The workspace's layers, checked: which crate may depend on which (from `cargo metadata`,
//! so a new edge in any Cargo.toml fails here), and the two rules the manifests cannot say
//! by themselves: no built-in stage kind imports another, and the command line and report
//! reach the kinds only through their registry.
//!
//! The layers (bottom to top): core; mi, bounds, onnx, data; critic; tables; engine; stages;
//! cbound.
//! docs/architecture.md explains what each holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// For each crate of the workspace, the workspace crates it may depend on (normal, dev or
/// build dependencies alike). An edge not listed here is a layering error.
const ALLOWED: &[(&str, &[&str])] = &[
    ("cbound-core", &[]),
    ("cbound-mi", &["cbound-core"]),
    ("cbound-bounds", &["cbound-core"]),
    ("cbound-onnx", &[]),
    // Trained critics: the estimators' training, on the ONNX machinery.
    (
        "cbound-critic",
        &["cbound-core", "cbound-mi", "cbound-onnx"],
    ),
    // The ground-truth tests compare closed forms with the estimators (a dev-dependency).
    ("cbound-data", &["cbound-core", "cbound-mi"]),
    ("cbound-tables", &["cbound-core", "cbound-mi"]),
    ("cbound-engine", &["cbound-core"]),
    (
        "cbound-stages",
        &[
            "cbound-core",
            "cbound-mi",
            "cbound-bounds",
            "cbound-onnx",
            "cbound-critic",
            "cbound-data",
            "cbound-tables",
            "cbound-engine",
        ],
    ),
    (
        "cbound",
        &[
            "cbound-core",
            "cbound-mi",
            "cbound-bounds",
            "cbound-onnx",
            "cbound-critic",
            "cbound-data",
            "cbound-tables",
            "cbound-engine",
            "cbound-stages",
        ],
    ),
];

/// Edges the issue that split the crate names as impossible; listed apart from [`ALLOWED`]
/// so that widening the allowlist by mistake still fails with the reason.
const FORBIDDEN: &[(&str, &str)] = &[
    ("cbound-mi", "cbound-engine"),
    ("cbound-bounds", "cbound-engine"),
    ("cbound-onnx", "cbound-engine"),
    ("cbound-data", "cbound-engine"),
    ("cbound-critic", "cbound-engine"),
    ("cbound-mi", "cbound-critic"),
    ("cbound-onnx", "cbound-critic"),
    ("cbound-mi", "cbound-stages"),
    ("cbound-bounds", "cbound-stages"),
    ("cbound-onnx", "cbound-stages"),
    ("cbound-data", "cbound-stages"),
    ("cbound-mi", "cbound"),
    ("cbound-bounds", "cbound"),
    ("cbound-onnx", "cbound"),
    ("cbound-data", "cbound"),
    ("cbound-engine", "cbound-stages"),
    ("cbound-engine", "cbound"),
    ("cbound-stages", "cbound"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Workspace crate -> the workspace crates it depends on, from `cargo metadata`.
fn workspace_edges() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let mut edges = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let deps: BTreeSet<String> = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .filter(|n| members.contains(n))
            .collect();
        edges.insert(p["name"].as_str().unwrap().to_string(), deps);
    }
    edges
}

#[test]
fn crates_depend_only_down_the_layers() {
    let edges = workspace_edges();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for (krate, deps) in &edges {
        let Some(ok) = allowed.get(krate.as_str()) else {
            problems.push(format!(
                "crate {krate} has no entry in ALLOWED: say which layer it is"
            ));
            continue;
        };
        for dep in deps {
            if FORBIDDEN.contains(&(krate.as_str(), dep.as_str())) {
                problems.push(format!("{krate} -> {dep} is forbidden"));
            } else if !ok.contains(&dep.as_str()) {
                problems.push(format!("{krate} -> {dep} is not an allowed edge"));
            }
        }
    }
    for (krate, _) in ALLOWED {
        assert!(
            edges.contains_key(*krate),
            "{krate} is listed but not a workspace member"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The forbidden list agrees with the allowlist (a forbidden edge never allowed).
#[test]
fn forbidden_edges_are_not_allowed() {
    for (from, to) in FORBIDDEN {
        let ok = ALLOWED.iter().find(|(k, _)| k == from).unwrap().1;
        assert!(
            !ok.contains(to),
            "{from} -> {to} is both forbidden and allowed"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The kind a file of crates/stages/src belongs to: its first path component below src
/// (`train.rs` -> train, `bound/resolve.rs` -> bound); None for lib.rs.
fn kind_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let kind = first.trim_end_matches(".rs").to_string();
    (kind != "lib").then_some(kind)
}

/// Source lines with comments removed, so a doc comment naming another kind is no import.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
}

#[test]
fn no_stage_kind_imports_another() {
    let src = root().join("crates/stages/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let kinds: BTreeSet<String> = files.iter().filter_map(|f| kind_of(&src, f)).collect();
    assert!(
        kinds.contains("train") && kinds.contains("embed"),
        "{kinds:?}"
    );
    let mut problems = Vec::new();
    for file in &files {
        let Some(own) = kind_of(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, code) in code_lines(&text) {
            for other in kinds.iter().filter(|k| **k != own) {
                // `crate::train`, `cbound_stages::train`, or `super::train` from a top-level file.
                let paths = [
                    format!("crate::{other}"),
                    format!("cbound_stages::{other}"),
                    format!("super::{other}"),
                ];
                for p in &paths {
                    if let Some(at) = code.find(p.as_str()) {
                        let next = code[at + p.len()..].chars().next();
                        if !next.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                            problems.push(format!(
                                "{}:{line}: kind `{own}` uses kind `{other}` ({p}); move what they share down a layer",
                                file.display()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The command line and the report see the built-in kinds only as a registry: nothing of a
/// kind's internals, which may change with the kind.
#[test]
fn cli_and_report_reach_kinds_only_through_the_registry() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, code) in code_lines(&text) {
            for prefix in ["cbound_stages::", "crate::stages::"] {
                let mut rest = code;
                while let Some(at) = rest.find(prefix) {
                    let after = &rest[at + prefix.len()..];
                    if !after.starts_with("builtin") {
                        problems.push(format!("{}:{line}: {}", file.display(), code.trim()));
                    }
                    rest = after;
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
