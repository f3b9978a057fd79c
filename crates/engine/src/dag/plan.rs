//! Cache keys and the decision, per instance, to reuse a result or run it, with the reason.
//!
//! The key is computed before an instance runs (never from its outputs): BLAKE3 over its
//! resolved parameters, its seed, its stage kind and version, cbound's version, the output
//! digests of its inputs and the content of files it tracks. An upstream that reran but
//! produced identical bytes therefore leaves downstream keys unchanged.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use super::Dag;
use crate::artifact::store::Store;
use crate::artifact::{hash_file, InstanceMeta, KeyFile, KeyInput, KeyInputs};
use crate::exec::outcome::InstanceStatus;
use crate::stage::Registry;

pub const CBOUND_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds the key inputs of an instance whose upstream results are known, from the
/// parameters the DAG parsed once for it.
pub fn key_inputs(
    dag: &Dag,
    instance: usize,
    registry: &Registry,
    upstream: &[&InstanceMeta],
) -> Result<KeyInputs, String> {
    let inst = &dag.instances[instance];
    let kind = dag.kind(instance);
    let stage = registry
        .get(kind)
        .ok_or_else(|| format!("unknown stage kind `{kind}`"))?;
    let tracked = match &inst.prepared {
        Some(prepared) => prepared.tracked_files()?,
        None => stage.tracked_files(&inst.params)?,
    };
    assemble(
        kind,
        stage.version(),
        stage.definition_digest(),
        &inst.params,
        inst.seed,
        tracked,
        upstream,
    )
}

/// [`key_inputs`] from the instance's parts, for a cluster node that has no DAG: it learns
/// its upstream results only when its job array task starts.
pub fn key_inputs_of(
    kind: &str,
    params: &serde_json::Value,
    seed: u64,
    registry: &Registry,
    upstream: &[&InstanceMeta],
) -> Result<KeyInputs, String> {
    let stage = registry
        .get(kind)
        .ok_or_else(|| format!("unknown stage kind `{kind}`"))?;
    let tracked = stage.tracked_files(params)?;
    assemble(
        kind,
        stage.version(),
        stage.definition_digest(),
        params,
        seed,
        tracked,
        upstream,
    )
}

fn assemble(
    kind: &str,
    kind_version: u32,
    definition: Option<String>,
    params: &serde_json::Value,
    seed: u64,
    tracked: Vec<std::path::PathBuf>,
    upstream: &[&InstanceMeta],
) -> Result<KeyInputs, String> {
    let mut files = Vec::new();
    for path in tracked {
        files.push(KeyFile {
            digest: hash_tracked(&path)?,
            path: path.to_string_lossy().into_owned(),
        });
    }
    Ok(KeyInputs {
        kind: kind.to_string(),
        kind_version,
        definition,
        cbound_version: CBOUND_VERSION.to_string(),
        seed,
        params: params.clone(),
        inputs: upstream
            .iter()
            .map(|m| KeyInput {
                instance: m.instance.clone(),
                digest: m.outputs_digest.clone(),
            })
            .collect(),
        files,
    })
}

fn hash_tracked(path: &Path) -> Result<String, String> {
    hash_file(path).map_err(|e| format!("tracked file {}: {e}", path.display()))
}

/// Why an instance will run.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// No result for this instance id was ever recorded.
    New,
    Forced,
    ParamsChanged(Vec<String>),
    SeedChanged,
    StageVersionChanged {
        from: u32,
        to: u32,
    },
    /// The definition of a kind declared in YAML changed (its command, parameters, ...).
    KindDefinitionChanged,
    CboundVersionChanged {
        from: String,
        to: String,
    },
    InputsChanged(Vec<String>),
    FilesChanged(Vec<String>),
    /// Its inputs are not computed yet, so its key is not known.
    UpstreamRuns(Vec<String>),
    /// The key matched once, but that result is gone from the store.
    ResultMissing,
    /// A tracked file or stage problem prevents computing the key.
    KeyError(String),
    /// The last attempt with this very key failed.
    LastAttemptFailed(String),
    /// The last attempt with this very key was cancelled: its run was stopped.
    LastAttemptCancelled,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::New => write!(f, "never run"),
            Reason::Forced => write!(f, "forced (--force)"),
            Reason::ParamsChanged(changes) => write!(f, "params changed: {}", changes.join(", ")),
            Reason::SeedChanged => write!(f, "seed changed"),
            Reason::StageVersionChanged { from, to } => {
                write!(f, "stage kind version changed: {from} -> {to}")
            }
            Reason::KindDefinitionChanged => write!(f, "stage kind definition changed"),
            Reason::CboundVersionChanged { from, to } => {
                write!(f, "cbound version changed: {from} -> {to}")
            }
            Reason::InputsChanged(names) => write!(f, "input changed: {}", names.join(", ")),
            Reason::FilesChanged(names) => write!(f, "tracked file changed: {}", names.join(", ")),
            Reason::UpstreamRuns(names) => write!(f, "waits for upstream: {}", names.join(", ")),
            Reason::ResultMissing => write!(f, "cached result was deleted"),
            Reason::KeyError(e) => write!(f, "cannot compute cache key: {e}"),
            Reason::LastAttemptFailed(e) => write!(f, "last attempt failed: {e}"),
            Reason::LastAttemptCancelled => write!(
                f,
                "last attempt was cancelled: its run was interrupted before it finished"
            ),
        }
    }
}

/// Compares the key inputs an instance had last time with the ones it has now.
pub fn explain_change(old: &KeyInputs, new: &KeyInputs) -> Reason {
    if old.kind_version != new.kind_version {
        return Reason::StageVersionChanged {
            from: old.kind_version,
            to: new.kind_version,
        };
    }
    if old.definition != new.definition {
        return Reason::KindDefinitionChanged;
    }
    if old.cbound_version != new.cbound_version {
        return Reason::CboundVersionChanged {
            from: old.cbound_version.clone(),
            to: new.cbound_version.clone(),
        };
    }
    let mut before = Vec::new();
    let mut after = Vec::new();
    flatten("", &old.params, &mut before);
    flatten("", &new.params, &mut after);
    let mut changes = Vec::new();
    for (k, v) in &after {
        match before.iter().find(|(bk, _)| bk == k) {
            Some((_, bv)) if bv != v => changes.push(format!("{k} {bv} -> {v}")),
            None => changes.push(format!("{k} added ({v})")),
            _ => {}
        }
    }
    for (k, _) in &before {
        if !after.iter().any(|(ak, _)| ak == k) {
            changes.push(format!("{k} removed"));
        }
    }
    if !changes.is_empty() {
        return Reason::ParamsChanged(changes);
    }
    if old.seed != new.seed {
        return Reason::SeedChanged;
    }
    let inputs: Vec<String> = new
        .inputs
        .iter()
        .filter(|i| !old.inputs.contains(i))
        .map(|i| i.instance.clone())
        .collect();
    if !inputs.is_empty() || old.inputs.len() != new.inputs.len() {
        return Reason::InputsChanged(inputs);
    }
    let files: Vec<String> = new
        .files
        .iter()
        .filter(|f| !old.files.contains(f))
        .map(|f| f.path.clone())
        .collect();
    if !files.is_empty() {
        return Reason::FilesChanged(files);
    }
    Reason::ResultMissing
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, child, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// The decision for one instance at planning time.
#[derive(Debug, Clone)]
pub enum Decision {
    Cached(Box<InstanceMeta>),
    Run(Reason),
}

/// Decides, without running anything, which instances a run would reuse.
pub fn plan(
    dag: &Dag,
    store: &Store,
    registry: &Registry,
    forced: &HashSet<usize>,
) -> Vec<Decision> {
    let mut decisions: Vec<Decision> = Vec::with_capacity(dag.instances.len());
    for i in 0..dag.instances.len() {
        let inst = &dag.instances[i];
        let mut upstream = Vec::new();
        let mut waiting = Vec::new();
        for &u in &inst.inputs {
            match &decisions[u] {
                Decision::Cached(meta) => upstream.push(meta.as_ref()),
                Decision::Run(_) => waiting.push(dag.instances[u].id.clone()),
            }
        }
        let decision = if forced.contains(&i) {
            Decision::Run(Reason::Forced)
        } else if !waiting.is_empty() {
            Decision::Run(Reason::UpstreamRuns(waiting))
        } else {
            match key_inputs(dag, i, registry, &upstream) {
                Err(e) => Decision::Run(Reason::KeyError(e)),
                Ok(ki) => match store.lookup(&ki.key()) {
                    Some(meta) => Decision::Cached(Box::new(meta)),
                    None => Decision::Run(match store.last_failure(dag.stage_id(i), &inst.id) {
                        Some(f) if f.cache_key == ki.key() => match f.status {
                            InstanceStatus::Cancelled => Reason::LastAttemptCancelled,
                            _ => Reason::LastAttemptFailed(f.error),
                        },
                        _ => match store.last_result(dag.stage_id(i), &inst.id) {
                            Some(last) => explain_change(&last.key_inputs, &ki),
                            None => Reason::New,
                        },
                    }),
                },
            }
        };
        decisions.push(decision);
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ki(params: serde_json::Value) -> KeyInputs {
        KeyInputs {
            kind: "k".into(),
            kind_version: 1,
            definition: None,
            cbound_version: "1".into(),
            seed: 1,
            params,
            inputs: vec![KeyInput {
                instance: "a".into(),
                digest: "d1".into(),
            }],
            files: vec![],
        }
    }

    #[test]
    fn explains_the_first_difference_a_user_cares_about() {
        let old = ki(serde_json::json!({"t": 0.1, "m": {"w": 1}}));
        let new = ki(serde_json::json!({"t": 0.2, "m": {"w": 1}}));
        assert_eq!(
            explain_change(&old, &new).to_string(),
            "params changed: t 0.1 -> 0.2"
        );
        let mut moved = old.clone();
        moved.inputs[0].digest = "d2".into();
        assert_eq!(explain_change(&old, &moved).to_string(), "input changed: a");
        let mut v = old.clone();
        v.kind_version = 2;
        assert_eq!(
            explain_change(&old, &v).to_string(),
            "stage kind version changed: 1 -> 2"
        );
        let mut d = old.clone();
        d.definition = Some("edited".into());
        assert_eq!(
            explain_change(&old, &d).to_string(),
            "stage kind definition changed"
        );
        let mut s = old.clone();
        s.seed = 9;
        assert_eq!(explain_change(&old, &s), Reason::SeedChanged);
    }
}
