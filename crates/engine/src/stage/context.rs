//! What a running stage instance may see and do: its seed, its thread budget, its input
//! artifacts, a directory for its outputs, a way to report progress and to notice Ctrl-C.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::RecordBatch;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::StageError;
use crate::artifact::{self, InstanceMeta};

/// A finished upstream instance whose outputs this instance reads.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    pub stage: String,
    pub instance: String,
    pub dir: PathBuf,
    pub meta: InstanceMeta,
}

impl InputArtifact {
    /// The upstream's one Parquet table; when it has several, an error asking for the
    /// parameter `param` that names one.
    pub fn only_table(&self, param: &str) -> Result<PathBuf, StageError> {
        let tables: Vec<&str> = self
            .meta
            .outputs
            .iter()
            .map(|o| o.name.as_str())
            .filter(|n| n.ends_with(".parquet") && !artifact::is_timing_output(n))
            .collect();
        match tables.as_slice() {
            [one] => Ok(self.dir.join(one)),
            _ => Err(StageError::Params(format!(
                "`{param}` is required: `{}` has tables {}",
                self.instance,
                tables.join(", ")
            ))),
        }
    }

    /// Path of one of the upstream's output files, or an error naming what it does have.
    pub fn file(&self, name: &str) -> Result<PathBuf, StageError> {
        if self.meta.outputs.iter().any(|o| o.name == name) {
            return Ok(self.dir.join(name));
        }
        let have: Vec<&str> = self.meta.outputs.iter().map(|o| o.name.as_str()).collect();
        Err(StageError::Input(format!(
            "`{}` has no output `{name}` (it has: {})",
            self.instance,
            have.join(", ")
        )))
    }
}

/// A progress report from inside a stage: `done` of `total` units, with a short note.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub message: String,
}

pub struct StageContext<'a> {
    pub instance: &'a str,
    pub seed: u64,
    /// Threads this instance may use: its CPU weight, so parallel instances do not
    /// oversubscribe the machine.
    pub threads: usize,
    /// The GPU device ids this instance was given (`resources.gpus` of them; empty when it
    /// asked for none; one for a share). No other running instance has any of them, unless
    /// this one asked for a share.
    pub gpus: &'a [usize],
    /// The share of its one device this instance asked for (`resources: {gpus: 0.5}` gives
    /// `Some(0.5)`): other shares may run on the same device, so a stage that allocates device
    /// memory should keep to this fraction of it. `None` for whole devices or none.
    pub gpu_share: Option<f64>,
    pub out_dir: &'a Path,
    pub inputs: &'a [InputArtifact],
    /// Every matrix axis of the instance's lineage and its configuration id
    /// ([`crate::dag::Instance::sweep`], [`crate::dag::Instance::config_id`]).
    pub sweep: &'a [(String, serde_json::Value)],
    pub config_id: &'a str,
    pub cancel: &'a AtomicBool,
    pub progress_sink: &'a (dyn Fn(Progress) + Sync),
}

impl StageContext<'_> {
    /// The device a stage that uses one GPU runs on: its first GPU, or device 0 where the
    /// instance asked for none (then nothing keeps another instance off that device).
    pub fn device_id(&self) -> usize {
        self.gpus.first().copied().unwrap_or(0)
    }

    /// A generator seeded from this instance's seed; the same pipeline seed and instance id
    /// give the same stream on every machine (ChaCha is platform independent).
    pub fn rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Long loops call this between units of work so Ctrl-C stops them promptly.
    pub fn check_cancelled(&self) -> Result<(), StageError> {
        if self.is_cancelled() {
            Err(StageError::Cancelled)
        } else {
            Ok(())
        }
    }

    pub fn progress(&self, done: u64, total: u64, message: impl Into<String>) {
        (self.progress_sink)(Progress {
            done,
            total,
            message: message.into(),
        });
    }

    /// Writes `<out_dir>/<name>.parquet` atomically (zstd).
    pub fn write_table(&self, name: &str, batch: &RecordBatch) -> Result<PathBuf, StageError> {
        let path = self.out_dir.join(format!("{name}.parquet"));
        artifact::write_parquet(&path, batch)?;
        Ok(path)
    }

    /// [`write_table`](Self::write_table) for a table of results, with what makes its rows
    /// join across stages appended to each: `config_id` and a `sweep.<axis>` column per
    /// matrix axis of the lineage (as in results.parquet). Rows of the bound stage then
    /// join the train stage's on `config_id` in DuckDB or polars with no key wrangling.
    pub fn write_result_table(
        &self,
        name: &str,
        batch: &RecordBatch,
    ) -> Result<PathBuf, StageError> {
        let batch = with_lineage(batch, self.config_id, self.sweep)
            .map_err(|e| StageError::Failed(format!("{name}: adding lineage columns: {e}")))?;
        self.write_table(name, &batch)
    }

    /// The single input from stage `stage`, or a clear error.
    pub fn input(&self, stage: &str) -> Result<&InputArtifact, StageError> {
        let n = self.inputs.iter().filter(|i| i.stage == stage).count();
        if n > 1 {
            return Err(StageError::Input(format!(
                "{n} instances of `{stage}` are inputs here (a gathering stage): iterate over all inputs instead"
            )));
        }
        self.inputs
            .iter()
            .find(|i| i.stage == stage)
            .ok_or_else(|| {
                StageError::Input(format!(
                    "no input from stage `{stage}` (inputs: {})",
                    self.inputs
                        .iter()
                        .map(|i| i.instance.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

/// `batch` with a `config_id` column and one `sweep.<axis>` column per axis, each constant
/// down the rows (numbers as Float64, booleans, strings; anything else as its JSON text). A
/// name the table already has is left alone.
pub fn with_lineage(
    batch: &RecordBatch,
    config_id: &str,
    sweep: &[(String, serde_json::Value)],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    use arrow_array::{ArrayRef, BooleanArray, Float64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;
    let n = batch.num_rows();
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let mut add = |name: String, column: ArrayRef, doc: &str| {
        if schema.column_with_name(&name).is_none() {
            let mut md = std::collections::HashMap::new();
            md.insert("description".to_string(), doc.to_string());
            fields.push(Field::new(name, column.data_type().clone(), true).with_metadata(md));
            columns.push(column);
        }
    };
    add(
        "config_id".into(),
        Arc::new(StringArray::from(vec![Some(config_id); n])),
        "the configuration (sweep values without the replicate), hashed: join key across stages",
    );
    for (axis, value) in sweep {
        let column: ArrayRef = match value {
            serde_json::Value::Bool(b) => Arc::new(BooleanArray::from(vec![Some(*b); n])),
            // Every number as Float64: each instance writes its own file, and an axis such
            // as [1, 0.5] must not give Int64 in one and Float64 in the next, or a glob over
            // the stage's tables no longer reads as one table.
            serde_json::Value::Number(x) => Arc::new(Float64Array::from(vec![x.as_f64(); n])),
            serde_json::Value::String(s) => Arc::new(StringArray::from(vec![Some(s.as_str()); n])),
            serde_json::Value::Null => Arc::new(StringArray::from(vec![None::<&str>; n])),
            other => Arc::new(StringArray::from(vec![Some(other.to_string()); n])),
        };
        add(
            format!("sweep.{axis}"),
            column,
            "a matrix value of this row's lineage",
        );
    }
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Float64Array, Int64Array};
    use std::sync::Arc;

    #[test]
    fn lineage_columns_are_constant_and_typed_alike_across_instances() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "v",
            arrow_schema::DataType::Int64,
            false,
        )]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
        let sweep = |v: serde_json::Value| {
            vec![
                ("lr".to_string(), v),
                ("act".to_string(), serde_json::json!("relu")),
            ]
        };
        let a = with_lineage(&batch, "c1", &sweep(serde_json::json!(1))).unwrap();
        let b = with_lineage(&batch, "c2", &sweep(serde_json::json!(0.5))).unwrap();
        assert_eq!(
            a.schema(),
            b.schema(),
            "an integer and a float value give one type"
        );
        let names: Vec<String> = a
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["v", "config_id", "sweep.lr", "sweep.act"]);
        let lr = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!((lr.len(), lr.value(2)), (3, 0.5));
        assert_eq!(
            a.schema()
                .field(1)
                .metadata()
                .get("description")
                .map(|d| d.contains("join")),
            Some(true)
        );
    }
}
