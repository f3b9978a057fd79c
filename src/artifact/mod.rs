//! Artifacts on disk: atomic writes, content hashes, Parquet tables and each instance's
//! `meta.json`. Nothing here knows about pipelines; [`store`] lays them out per pipeline.
//!
//! Every file is written to a temporary name in the same directory and renamed into place,
//! so a killed run can leave stray temporaries but never a half-written table under a real
//! name.

pub mod store;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: Parquet: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Writes through `write` into a temporary file next to `path`, then renames it over `path`.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), ArtifactError>,
) -> Result<(), ArtifactError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        write(&mut file)?;
        drop(file);
        crate::failpoint::hit("write.before_rename");
        // No fsync: the rename is what protects against a killed process, and fsync per
        // file would dominate sweeps of many small instances. Power loss is out of scope.
        fs::rename(&tmp, path).map_err(io_err(path))?;
        crate::failpoint::hit("write.after_rename");
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    write_atomic_with(path, |f| f.write_all(bytes).map_err(io_err(path)))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ArtifactError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| ArtifactError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ArtifactError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| ArtifactError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes one record batch as a zstd-compressed Parquet file, atomically.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), ArtifactError> {
    write_atomic_with(path, |file| {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let pq = |source| ArtifactError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(pq)?;
        writer.write(batch).map_err(pq)?;
        writer.close().map_err(pq)?;
        Ok(())
    })
}

/// Reads every record batch of a Parquet file.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, ArtifactError> {
    // The parquet crate panics on some malformed files (an RLE index out of bounds, a thrift
    // decode) instead of returning an error; a corrupt input must be an error naming the file.
    match quiet_catch_unwind(|| read_parquet_unguarded(path)) {
        Ok(result) => result,
        Err(message) => Err(ArtifactError::Invalid {
            path: path.to_path_buf(),
            message: format!("malformed Parquet file (the reader failed: {message})"),
        }),
    }
}

thread_local! {
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into its message, without the panic hook printing it: for
/// third-party code that panics on malformed input. Other threads' panics print as usual.
fn quiet_catch_unwind<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET_PANICS.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

fn read_parquet_unguarded(path: &Path) -> Result<Vec<RecordBatch>, ArtifactError> {
    let file = File::open(path).map_err(io_err(path))?;
    let pq = |source| ArtifactError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    // The reader's batches carry a schema without the file's schema-level metadata; put the
    // full schema back so tables can describe themselves (shapes, normalisation).
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(pq)?;
    reader
        .map(|batch| {
            let batch = batch.map_err(|e| ArtifactError::Parquet {
                path: path.to_path_buf(),
                source: e.into(),
            })?;
            batch
                .with_schema(schema.clone())
                .map_err(|e| ArtifactError::Invalid {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
        })
        .collect()
}

/// BLAKE3 of a file's content, hex.
pub fn hash_file(path: &Path) -> Result<String, ArtifactError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// JSON with object keys sorted at every level, so that hashing does not depend on the order
/// keys were written in the pipeline file.
pub fn canonical_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, canonical_json(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical_json).collect()),
        other => other.clone(),
    }
}

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
    /// ([`crate::stages::DynStage::definition_digest`]); absent for built-in kinds, whose
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
    pub metrics: BTreeMap<String, f64>,
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    pub threads: usize,
    pub host: String,
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

/// Whether an output records wall-clock measurements (`*.timing.parquet`, `*.timing.json`):
/// such files are kept beside the results but left out of [`outputs_digest`], because two
/// runs that compute the same instance never take the same time, and their downstream cache
/// keys must still agree.
pub fn is_timing_output(name: &str) -> bool {
    name.ends_with(".timing.parquet") || name.ends_with(".timing.json")
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

/// A schema with field-level doc strings attached as Parquet/Arrow metadata, so the tables
/// describe their own columns to anyone who opens them.
pub fn documented_schema(fields: Vec<(arrow_schema::Field, &str)>) -> Arc<arrow_schema::Schema> {
    let fields: Vec<arrow_schema::Field> = fields
        .into_iter()
        .map(|(f, doc)| {
            let mut md = f.metadata().clone();
            md.insert("description".into(), doc.into());
            f.with_metadata(md)
        })
        .collect();
    Arc::new(arrow_schema::Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array};
    use arrow_schema::{DataType, Field};

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
    fn parquet_round_trip_and_no_temporaries_left() {
        let dir = tempfile::tempdir().unwrap();
        let schema = documented_schema(vec![
            (Field::new("a", DataType::Int64, false), "an integer"),
            (Field::new("b", DataType::Float64, false), "a float"),
        ]);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5])),
            ],
        )
        .unwrap();
        let path = dir.path().join("t.parquet");
        write_parquet(&path, &batch).unwrap();
        let back = read_parquet(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].num_rows(), 3);
        assert_eq!(back[0].column(1).as_ref(), batch.column(1).as_ref());
        assert_eq!(
            back[0]
                .schema()
                .field(0)
                .metadata()
                .get("description")
                .map(String::as_str),
            Some("an integer")
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("t.parquet")]);
    }

    #[test]
    fn failed_atomic_write_leaves_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_atomic(&path, b"old").unwrap();
        let result = write_atomic_with(&path, |_| {
            Err(ArtifactError::Invalid {
                path: path.clone(),
                message: "simulated crash".into(),
            })
        });
        assert!(result.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
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
