//! Artifacts on disk: each instance's `meta.json`, its outputs and their digests, and the
//! cache key's preimage. Nothing here knows about pipelines; [`store`] lays them out per
//! pipeline. The file primitives (atomic writes, Parquet, hashes) are
//! [`cbound_core::files`], re-exported here.

pub mod gc;
pub mod store;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use cbound_core::files::*;

/// One file an instance produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the instance directory.
    pub name: String,
    pub bytes: u64,
    pub blake3: String,
}

/// One upstream instance as seen by a cache key: its id and the digest of its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInput {
    pub instance: String,
    pub digest: String,
}

/// An external file (data, script) that an instance depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyFile {
    pub path: String,
    pub digest: String,
}

/// Everything an instance's result depends on. Its BLAKE3 is the cache key, computed before
/// the instance runs; kept in `meta.json` so that `cbound plan --why` can say which part
/// changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub kind: String,
    pub kind_version: u32,
    /// Digest of the kind's definition, for kinds declared in YAML
    /// ([`crate::stage::DynStage::definition_digest`]); absent for built-in kinds, whose
    /// keys are therefore what they were before kinds could be declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    pub cbound_version: String,
    pub seed: u64,
    pub params: serde_json::Value,
    pub inputs: Vec<KeyInput>,
    pub files: Vec<KeyFile>,
}

/// Serialises a value exactly as [`canonical_json`] of it serialises, without building the
/// sorted copy first (a cache key is computed for every instance of every run).
struct Canonical<'a>(&'a serde_json::Value);

impl Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(map) => {
                let mut sorted: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                let mut out = s.serialize_map(Some(sorted.len()))?;
                for (k, v) in sorted {
                    out.serialize_entry(k, &Canonical(v))?;
                }
                out.end()
            }
            serde_json::Value::Array(items) => {
                let mut out = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&Canonical(v))?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

/// The cache key's preimage: the fields of [`KeyInputs`] in this order, `params` canonical.
#[derive(Serialize)]
struct KeyPreimage<'a> {
    kind: &'a str,
    kind_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    definition: Option<&'a str>,
    cbound_version: &'a str,
    seed: u64,
    params: Canonical<'a>,
    inputs: &'a [KeyInput],
    files: &'a [KeyFile],
}

impl KeyInputs {
    pub fn key(&self) -> String {
        let preimage = KeyPreimage {
            kind: &self.kind,
            kind_version: self.kind_version,
            definition: self.definition.as_deref(),
            cbound_version: &self.cbound_version,
            seed: self.seed,
            params: Canonical(&self.params),
            inputs: &self.inputs,
            files: &self.files,
        };
        // Serialising plain strings, numbers and JSON values cannot fail.
        let bytes = serde_json::to_vec(&preimage).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }
}

/// The record of one finished instance, written last into its directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceMeta {
    pub pipeline: String,
    pub stage: String,
    pub instance: String,
    pub kind: String,
    pub cache_key: String,
    pub key_inputs: KeyInputs,
    /// The sweep values that distinguish this instance (its own and inherited).
    pub labels: BTreeMap<String, serde_json::Value>,
    pub outputs: Vec<OutputFile>,
    /// BLAKE3 over the output list: what downstream cache keys see.
    pub outputs_digest: String,
    /// NaN (an estimator that refused) is written as JSON `null` and read back as NaN, so a
    /// result with one is found in the cache like any other.
    #[serde(deserialize_with = "metrics_with_nan")]
    pub metrics: BTreeMap<String, f64>,
    /// How it ran (see [`crate::stage::StageOutput::fact`]); absent from the records of
    /// stages that report none, and of instances committed before facts existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    pub threads: usize,
    pub host: String,
}

/// Metrics as JSON writes them: numbers, and `null` for NaN (JSON has no NaN).
fn metrics_with_nan<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, f64>, D::Error> {
    let raw: BTreeMap<String, Option<f64>> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// Lists and hashes the files of a finished instance directory. Names starting with `.` are
/// private to the stage (checkpoints, temporaries) and are not outputs.
pub fn collect_outputs(dir: &Path) -> Result<Vec<OutputFile>, ArtifactError> {
    let mut out = Vec::new();
    collect_into(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn collect_into(root: &Path, dir: &Path, out: &mut Vec<OutputFile>) -> Result<(), ArtifactError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || name == "meta.json" {
            continue;
        }
        let path = entry.path();
        let ty = entry.file_type().map_err(io_err(&path))?;
        if ty.is_dir() {
            collect_into(root, &path, out)?;
        } else if ty.is_file() {
            let bytes = entry.metadata().map_err(io_err(&path))?.len();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push(OutputFile {
                name: rel,
                bytes,
                blake3: hash_file(&path)?,
            });
        }
    }
    Ok(())
}

/// BLAKE3 over the output list (names and content hashes), timing outputs excepted.
pub fn outputs_digest(outputs: &[OutputFile]) -> String {
    let mut hasher = blake3::Hasher::new();
    for o in outputs.iter().filter(|o| !is_timing_output(&o.name)) {
        hasher.update(o.name.as_bytes());
        hasher.update(&[0]);
        hasher.update(o.blake3.as_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How keys were computed before the preimage was serialised directly: the key of
    /// every result in every existing store.
    fn key_as_first_computed(k: &KeyInputs) -> String {
        let canonical = serde_json::json!({
            "kind": k.kind,
            "kind_version": k.kind_version,
            "cbound_version": k.cbound_version,
            "seed": k.seed,
            "params": canonical_json(&k.params),
            "inputs": k.inputs,
            "files": k.files,
        });
        blake3::hash(&serde_json::to_vec(&canonical).unwrap())
            .to_hex()
            .to_string()
    }

    #[test]
    fn cache_keys_are_the_ones_existing_stores_hold() {
        let params = [
            serde_json::json!({}),
            serde_json::json!({"n": 100, "rho": 0.505109, "task": "bivariate"}),
            serde_json::json!({"z": [3, {"b": 1e300, "a": -0.1}], "a": {"y": null, "x": true},
                "é": "ünïcode \"quoted\"\n", "m": u64::MAX, "f": 0.30000000000000004}),
            serde_json::json!([{"k": 2, "j": 1}, "s", 1.5]),
            serde_json::json!("a string as params"),
        ];
        for (i, params) in params.into_iter().enumerate() {
            let k = KeyInputs {
                kind: "synthetic".into(),
                kind_version: 3,
                definition: None,
                cbound_version: "0.1.0".into(),
                seed: u64::MAX - i as u64,
                params,
                inputs: vec![KeyInput {
                    instance: "data@rho=0.1".into(),
                    digest: "d1".into(),
                }],
                files: vec![KeyFile {
                    path: "/data/x.csv".into(),
                    digest: "f1".into(),
                }],
            };
            assert_eq!(k.key(), key_as_first_computed(&k), "{:?}", k.params);
        }
    }

    #[test]
    fn cache_key_ignores_param_order_but_not_values() {
        let base = KeyInputs {
            kind: "k".into(),
            kind_version: 1,
            definition: None,
            cbound_version: "0".into(),
            seed: 1,
            params: serde_json::json!({"a": 1, "b": 2}),
            inputs: vec![],
            files: vec![],
        };
        let mut reordered = base.clone();
        reordered.params = serde_json::json!({"b": 2, "a": 1});
        assert_eq!(base.key(), reordered.key());
        let mut changed = base.clone();
        changed.params = serde_json::json!({"a": 1, "b": 3});
        assert_ne!(base.key(), changed.key());
        let mut reseeded = base.clone();
        reseeded.seed = 2;
        assert_ne!(base.key(), reseeded.key());
        // A kind declared in YAML: its definition is part of the key.
        let mut defined = base.clone();
        defined.definition = Some("d1".into());
        assert_ne!(base.key(), defined.key());
        let mut redefined = defined.clone();
        redefined.definition = Some("d2".into());
        assert_ne!(defined.key(), redefined.key());
    }
}
