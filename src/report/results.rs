//! `results.parquet`: one row per instance of a run with its flattened parameters, sweep
//! values and scalar metrics. The table a user opens first.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | run_id, pipeline, stage, instance, kind | string | which instance |
//! | cbound_version | string | the cbound that ran the pipeline |
//! | status | string | `ok` (computed now), `cached` (reused), `failed`, `cancelled` (the run was stopped while it ran), `skipped` |
//! | cache_key | string, null | BLAKE3 cache key; the result lives in `.cbound/objects/<key>` |
//! | seed | uint64 | the instance's derived seed |
//! | seconds | float64, null | compute time of the result (of the original run if cached) |
//! | error | string, null | why it failed, was cancelled or was skipped |
//! | `sweep.<name>` | by value | matrix values that identify the instance, inherited included; `sweep.replicate` (int) with `repeat:` |
//! | `param.<path>` | by value | resolved parameters, nested keys joined with `.` |
//! | `metric.<name>` | float64 | scalar metrics the stage reported |
//! | `info.<name>` | string | how the instance ran, as the stage reported it: `info.execution_provider` (`cpu` or `cuda`) and `info.onnxruntime` (its version) for train and embed |
//!
//! Value columns are boolean, int64 or float64 when every value fits, else strings (JSON for
//! lists and objects).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field};

use crate::artifact::{documented_schema, write_parquet, ArtifactError};
use crate::dag::Dag;
use crate::exec::outcome::Outcome;
use crate::exec::scheduler::RunSummary;

/// Values by column name, one slot per row (`None` where a row has no such value), filled
/// without building a map per row: at ten thousand rows the per-row maps cost more than the
/// table.
struct Columns<'a> {
    rows: usize,
    by_name: HashMap<String, Vec<Option<&'a serde_json::Value>>>,
}

impl<'a> Columns<'a> {
    fn new(rows: usize) -> Columns<'a> {
        Columns {
            rows,
            by_name: HashMap::new(),
        }
    }

    fn set(&mut self, name: &str, row: usize, value: &'a serde_json::Value) {
        let column = match self.by_name.get_mut(name) {
            Some(column) => column,
            None => self
                .by_name
                .entry(name.to_string())
                .or_insert_with(|| vec![None; self.rows]),
        };
        column[row] = Some(value);
    }

    /// `v` under `name`, non-empty objects flattened into `name.key` columns. `root` leaves
    /// are not columns (parameters that are not a mapping have no name of their own).
    fn flatten(&mut self, name: &mut String, v: &'a serde_json::Value, row: usize, root: bool) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    let len = name.len();
                    name.push('.');
                    name.push_str(k);
                    self.flatten(name, child, row, false);
                    name.truncate(len);
                }
            }
            other if !root => self.set(name, row, other),
            _ => {}
        }
    }

    /// The columns in name order.
    fn sorted(self) -> Vec<(String, Vec<Option<&'a serde_json::Value>>)> {
        let mut columns: Vec<_> = self.by_name.into_iter().collect();
        columns.sort_by(|a, b| a.0.cmp(&b.0));
        columns
    }
}

/// Builds one column from per-row JSON values, choosing the narrowest type that fits all.
fn value_column(values: &[Option<&serde_json::Value>]) -> (DataType, ArrayRef) {
    let present: Vec<&serde_json::Value> = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| !v.is_null())
        .collect();
    if !present.is_empty() && present.iter().all(|v| v.is_boolean()) {
        let a: BooleanArray = values.iter().map(|v| v.and_then(|v| v.as_bool())).collect();
        return (DataType::Boolean, Arc::new(a));
    }
    if !present.is_empty() && present.iter().all(|v| v.is_i64()) {
        let a: Int64Array = values.iter().map(|v| v.and_then(|v| v.as_i64())).collect();
        return (DataType::Int64, Arc::new(a));
    }
    if !present.is_empty() && present.iter().all(|v| v.is_number()) {
        let a: Float64Array = values.iter().map(|v| v.and_then(|v| v.as_f64())).collect();
        return (DataType::Float64, Arc::new(a));
    }
    let a: StringArray = values
        .iter()
        .map(|v| match v {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        })
        .collect();
    (DataType::Utf8, Arc::new(a))
}

/// What identifies a run beyond its id, for run.json and every row of results.parquet: the
/// name it was given (`--name`) and the state of the git repository the pipeline file is in
/// (None outside one, or without git).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunIdentity {
    pub name: Option<String>,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
}

impl RunIdentity {
    /// The identity of a run of the pipeline at `pipeline_file`, named `name`.
    pub fn of(pipeline_file: &Path, name: Option<String>) -> RunIdentity {
        let dir = pipeline_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let git_commit = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty());
        // Dirty: any tracked change, staged or not (untracked files do not change a run).
        let git_dirty = git_commit
            .as_ref()
            .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
            .map(|s| !s.is_empty());
        RunIdentity {
            name,
            git_commit,
            git_dirty,
        }
    }
}

pub fn results_batch(
    dag: &Dag,
    run_id: &str,
    identity: &RunIdentity,
    summary: &RunSummary,
) -> Result<RecordBatch, ArtifactError> {
    let rows: Vec<usize> = (0..dag.instances.len())
        .filter(|&i| !matches!(summary.outcomes[i], Outcome::NotSelected))
        .collect();
    let mut params = Columns::new(rows.len());
    let mut sweeps = Columns::new(rows.len());
    let mut metric_names = std::collections::BTreeSet::new();
    let mut fact_names = std::collections::BTreeSet::new();
    let mut name = String::new();
    for (r, &i) in rows.iter().enumerate() {
        let inst = &dag.instances[i];
        name.clear();
        name.push_str("param");
        params.flatten(&mut name, &inst.params, r, true);
        for (k, v) in &inst.sweep {
            name.clear();
            name.push_str("sweep.");
            name.push_str(k);
            sweeps.set(&name, r, v);
        }
        if let Some(meta) = summary.outcomes[i].meta() {
            metric_names.extend(meta.metrics.keys());
            fact_names.extend(meta.facts.keys());
        }
    }
    let text = |f: &dyn Fn(usize) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(|&i| f(i)).collect::<StringArray>())
    };
    let mut fields: Vec<(Field, String)> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut push = |name: &str, ty: DataType, nullable: bool, doc: &str, col: ArrayRef| {
        fields.push((Field::new(name, ty, nullable), doc.to_string()));
        columns.push(col);
    };
    push(
        "run_id",
        DataType::Utf8,
        false,
        "run this row belongs to",
        text(&|_| Some(run_id.to_string())),
    );
    push(
        "pipeline",
        DataType::Utf8,
        false,
        "pipeline name",
        text(&|_| Some(dag.pipeline.name.clone())),
    );
    push(
        "run_name",
        DataType::Utf8,
        true,
        "the run's name (`cbound run --name`), if it was given one",
        text(&|_| identity.name.clone()),
    );
    push(
        "git_commit",
        DataType::Utf8,
        true,
        "commit of the git repository holding the pipeline file, if any",
        text(&|_| identity.git_commit.clone()),
    );
    push(
        "git_dirty",
        DataType::Boolean,
        true,
        "whether that repository had uncommitted changes to tracked files",
        Arc::new(
            rows.iter()
                .map(|_| identity.git_dirty)
                .collect::<arrow_array::BooleanArray>(),
        ),
    );
    push(
        "cbound_version",
        DataType::Utf8,
        false,
        "version of cbound that ran the pipeline (it is part of every cache key, so a cached \
         result was computed by the same version)",
        text(&|_| Some(crate::dag::plan::CBOUND_VERSION.to_string())),
    );
    push(
        "stage",
        DataType::Utf8,
        false,
        "stage id",
        text(&|i| Some(dag.stage_id(i).to_string())),
    );
    push(
        "instance",
        DataType::Utf8,
        false,
        "instance id (stage@sweep values)",
        text(&|i| Some(dag.instances[i].id.clone())),
    );
    push(
        "config_id",
        DataType::Utf8,
        false,
        "the configuration (every sweep value of the lineage but the replicate), hashed: rows of different stages, tables and replicates of one configuration share it",
        text(&|i| Some(dag.instances[i].config_id.clone())),
    );
    push(
        "sweep_axes",
        DataType::Utf8,
        false,
        "the sweep axes that tell this instance apart (those in its id), comma-separated; the other sweep.* columns hold the params values of one-at-a-time axes it leaves alone",
        text(&|i| {
            Some(
                dag.instances[i]
                    .labels
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        }),
    );
    push(
        "kind",
        DataType::Utf8,
        false,
        "stage kind",
        text(&|i| Some(dag.kind(i).to_string())),
    );
    push(
        "status",
        DataType::Utf8,
        false,
        "ok, cached, failed, cancelled or skipped",
        text(&|i| Some(summary.outcomes[i].status().as_str().to_string())),
    );
    push(
        "cache_key",
        DataType::Utf8,
        true,
        "BLAKE3 cache key of the result",
        text(&|i| summary.outcomes[i].meta().map(|m| m.cache_key.clone())),
    );
    push(
        "seed",
        DataType::UInt64,
        false,
        "seed derived from the pipeline seed and the instance id",
        Arc::new(
            rows.iter()
                .map(|&i| dag.instances[i].seed)
                .collect::<UInt64Array>(),
        ),
    );
    push(
        "seconds",
        DataType::Float64,
        true,
        "compute time of the result in seconds (original run if cached)",
        Arc::new(
            rows.iter()
                .map(|&i| summary.outcomes[i].meta().map(|m| m.seconds))
                .collect::<Float64Array>(),
        ),
    );
    push(
        "error",
        DataType::Utf8,
        true,
        "why the instance failed, was cancelled or was skipped",
        text(&|i| summary.outcomes[i].message()),
    );
    for (group, doc) in [
        (sweeps, "sweep value identifying the instance"),
        (params, "resolved stage parameter"),
    ] {
        // Both groups in name order.
        for (name, values) in group.sorted() {
            let (ty, col) = value_column(&values);
            push(&name, ty, true, doc, col);
        }
    }
    for name in &metric_names {
        let col: Float64Array = rows
            .iter()
            .map(|&i| {
                summary.outcomes[i]
                    .meta()
                    .and_then(|m| m.metrics.get(name.as_str()).copied())
            })
            .collect();
        push(
            &format!("metric.{name}"),
            DataType::Float64,
            true,
            "scalar metric reported by the stage",
            Arc::new(col),
        );
    }
    for name in &fact_names {
        let col = text(&|i| {
            summary.outcomes[i]
                .meta()
                .and_then(|m| m.facts.get(name.as_str()).cloned())
        });
        push(
            &format!("info.{name}"),
            DataType::Utf8,
            true,
            "how the instance ran, as the stage reported it",
            col,
        );
    }
    let schema = documented_schema(
        fields
            .iter()
            .map(|(f, d)| (f.clone(), d.as_str()))
            .collect(),
    );
    RecordBatch::try_new(schema, columns).map_err(|e| ArtifactError::Invalid {
        path: "results.parquet".into(),
        message: e.to_string(),
    })
}

pub fn write_results(
    path: &Path,
    dag: &Dag,
    run_id: &str,
    identity: &RunIdentity,
    summary: &RunSummary,
) -> Result<(), ArtifactError> {
    let batch = results_batch(dag, run_id, identity, summary)?;
    write_parquet(path, &batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::outcome::SkipReason;
    use arrow_array::Array;
    use std::collections::BTreeMap;

    /// The columns as they were first built: a map per row, then the union of names.
    fn first_flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    first_flatten(&format!("{prefix}.{k}"), child, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }

    #[test]
    fn parameter_and_sweep_columns_are_the_union_in_name_order() {
        let registry = cbound_stages::builtin();
        let text = concat!(
            "name: r\n",
            "stages:\n",
            "  a: {kind: synthetic, params: {n: 10}, matrix: {rho: [0.1, 0.2]}}\n",
            "  c: {kind: command, inputs: a, params: {argv: [echo, x], env: {B: '2', A: '1'}}}\n",
            "  z: {kind: synthetic}\n",
        );
        let p = crate::config::load_str(text, Path::new("r.yaml"), &[], &registry).unwrap();
        let dag = Dag::build(p, &registry);
        let outcomes = (0..dag.instances.len())
            .map(|i| {
                if dag.instances[i].id == "z" {
                    Outcome::NotSelected
                } else {
                    Outcome::Skipped(SkipReason::NotReached)
                }
            })
            .collect();
        let summary = RunSummary {
            outcomes,
            interrupted: false,
        };
        let batch = results_batch(&dag, "run", &RunIdentity::default(), &summary).unwrap();
        let rows: Vec<usize> = (0..dag.instances.len())
            .filter(|&i| dag.instances[i].id != "z")
            .collect();
        assert_eq!(batch.num_rows(), rows.len());
        let mut want: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        for (r, &i) in rows.iter().enumerate() {
            let mut p = BTreeMap::new();
            first_flatten("param", &dag.instances[i].params, &mut p);
            p.remove("param");
            for (k, v) in &dag.instances[i].sweep {
                p.insert(format!("sweep.{k}"), v.to_string());
            }
            for (name, v) in p {
                want.entry(name).or_insert_with(|| vec![None; rows.len()])[r] = Some(v);
            }
        }
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        // After the 16 fixed columns (run, identity, version, instance, configuration, axes,
        // status, key, seed, timing, error).
        let value_names: Vec<&str> = names[16..].to_vec();
        let mut sweeps: Vec<&str> = want
            .keys()
            .map(String::as_str)
            .filter(|n| n.starts_with("sweep."))
            .collect();
        let params: Vec<&str> = want
            .keys()
            .map(String::as_str)
            .filter(|n| n.starts_with("param."))
            .collect();
        sweeps.extend(params);
        assert_eq!(value_names, sweeps);
        assert!(value_names.contains(&"param.env.A") && value_names.contains(&"param.argv"));
        for (name, values) in &want {
            let col = batch.column_by_name(name).unwrap();
            for (r, v) in values.iter().enumerate() {
                assert_eq!(col.is_null(r), v.is_none(), "{name} row {r}");
            }
        }
    }
}
