//! Durable files: atomic writes (temporary name, then rename), JSON and Parquet read and
//! written whole, content hashes and canonical JSON. Every layer that writes a file goes
//! through here, so a killed run can leave stray temporaries but never a half-written table
//! under a real name.

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

pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
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

/// Whether an output records wall-clock measurements (`*.timing.parquet`, `*.timing.json`):
/// such files are kept beside the results but left out of [`outputs_digest`], because two
/// runs that compute the same instance never take the same time, and their downstream cache
/// keys must still agree.
pub fn is_timing_output(name: &str) -> bool {
    name.ends_with(".timing.parquet") || name.ends_with(".timing.json")
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
}
