//! Pipeline configuration: YAML text in, a validated [`Pipeline`] out.
//!
//! The stages of loading are kept apart so each can point at the file: [`yaml`] keeps
//! positions, [`interp`] applies `--set` and `${...}`, [`load`] checks structure, stage kinds,
//! parameters (through each kind's typed struct), inputs and cycles, collecting every error
//! of a file in one pass. [`schema`] derives the editor-facing JSON Schema from the same types.

pub mod diagnostics;
pub mod interp;
pub mod load;
pub mod schema;
pub mod yaml;

use std::path::PathBuf;

pub use diagnostics::{ConfigErrors, Diagnostic};
pub use load::{load, load_str};

/// What one instance of a stage occupies while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPU threads; counted against `--jobs`.
    pub cpus: usize,
    /// GPU slots; counted against `--gpus`.
    pub gpus: usize,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources { cpus: 1, gpus: 0 }
    }
}

/// One swept parameter of a stage: `matrix: {temperature: [0.1, 0.2]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixAxis {
    /// Dotted path into `params`.
    pub key: String,
    pub values: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageDecl {
    pub id: String,
    pub kind: String,
    pub description: Option<String>,
    pub inputs: Vec<String>,
    /// Run once over every instance of the inputs (a summary across a sweep) instead of once
    /// per upstream instance.
    pub gather: bool,
    /// Parameters after interpolation, before the matrix is applied.
    pub params: serde_json::Value,
    pub matrix: Vec<MatrixAxis>,
    /// `matrix_mode: one_at_a_time`: each axis varies alone, the others keep their `params`
    /// value (an ablation), instead of the cross product of all axes.
    pub one_at_a_time: bool,
    /// Resources from the pipeline file; `None` means the stage kind's default.
    pub resources: Option<Resources>,
}

/// A pipeline that passed validation: every stage kind exists, every parameter
/// deserialises, every input names a stage, and the stage graph is acyclic.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: String,
    pub description: Option<String>,
    pub seed: u64,
    pub source: PathBuf,
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// In file order.
    pub stages: Vec<StageDecl>,
}

impl Pipeline {
    pub fn stage(&self, id: &str) -> Option<&StageDecl> {
        self.stages.iter().find(|s| s.id == id)
    }
}

/// Sets `value` at a dotted path inside a JSON object, creating objects on the way.
/// A numeric segment indexes into an existing list (`views.0.0.std`), so a sweep can reach
/// inside list-valued parameters.
pub fn set_dotted(target: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    let parts: Vec<&str> = key.split('.').collect();
    set_parts(target, &parts, value);
}

/// Checks that every numeric segment of a dotted key indexes an existing list element
/// (object keys may be created; list elements may not).
pub fn check_list_indices(target: &serde_json::Value, key: &str) -> Result<(), String> {
    let mut node = Some(target);
    let mut walked = String::new();
    for part in key.split('.') {
        node = match (node, part.parse::<usize>()) {
            (Some(serde_json::Value::Array(items)), Ok(i)) => match items.get(i) {
                Some(item) => Some(item),
                None => {
                    return Err(format!(
                        "`{walked}` has {} element(s), no element {i}",
                        items.len()
                    ));
                }
            },
            (Some(serde_json::Value::Object(map)), _) => map.get(part),
            _ => None,
        };
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(part);
    }
    Ok(())
}

fn set_parts(node: &mut serde_json::Value, parts: &[&str], value: serde_json::Value) {
    let Some((first, rest)) = parts.split_first() else {
        *node = value;
        return;
    };
    if let serde_json::Value::Array(items) = node {
        if let Some(item) = first.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
            return set_parts(item, rest, value);
        }
    }
    if !node.is_object() {
        *node = serde_json::Value::Object(Default::default());
    }
    if let serde_json::Value::Object(map) = node {
        let child = map
            .entry(first.to_string())
            .or_insert(serde_json::Value::Null);
        set_parts(child, rest, value);
    }
}

/// How a matrix value appears in an instance id: numbers and strings bare, anything else as
/// compact JSON.
pub fn render_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
