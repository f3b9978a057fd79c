//! `results.parquet`: one row per instance of a run with its flattened parameters, sweep
//! values and scalar metrics. The table a user opens first.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | run_id, pipeline, stage, instance, kind | string | which instance |
//! | status | string | `ok` (computed now), `cached` (reused), `failed`, `cancelled` (the run was stopped while it ran), `skipped` |
//! | cache_key | string, null | BLAKE3 cache key; the result lives in `.cbound/objects/<key>` |
//! | seed | uint64 | the instance's derived seed |
//! | seconds | float64, null | compute time of the result (of the original run if cached) |
//! | error | string, null | why it failed, was cancelled or was skipped |
//! | `sweep.<name>` | by value | matrix values that identify the instance, inherited included; `sweep.replicate` (int) with `repeat:` |
//! | `param.<path>` | by value | resolved parameters, nested keys joined with `.` |
//! | `metric.<name>` | float64 | scalar metrics the stage reported |
//!
//! Value columns are boolean, int64 or float64 when every value fits, else strings (JSON for
//! lists and objects).

use std::collections::BTreeMap;
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

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                flatten(&format!("{prefix}.{k}"), child, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
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

pub fn results_batch(
    dag: &Dag,
    run_id: &str,
    summary: &RunSummary,
) -> Result<RecordBatch, ArtifactError> {
    let rows: Vec<usize> = (0..dag.instances.len())
        .filter(|&i| !matches!(summary.outcomes[i], Outcome::NotSelected))
        .collect();
    let mut params: Vec<BTreeMap<String, serde_json::Value>> = Vec::new();
    let mut sweeps: Vec<BTreeMap<String, serde_json::Value>> = Vec::new();
    let mut metric_names = std::collections::BTreeSet::new();
    for &i in &rows {
        let inst = &dag.instances[i];
        let mut p = BTreeMap::new();
        flatten("param", &inst.params, &mut p);
        p.remove("param");
        params.push(p);
        sweeps.push(
            inst.labels
                .iter()
                .map(|(k, v)| (format!("sweep.{k}"), v.clone()))
                .collect(),
        );
        if let Some(meta) = summary.outcomes[i].meta() {
            metric_names.extend(meta.metrics.keys().cloned());
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
        (&sweeps, "sweep value identifying the instance"),
        (&params, "resolved stage parameter"),
    ] {
        let names: std::collections::BTreeSet<&String> =
            group.iter().flat_map(|m| m.keys()).collect();
        // Sweep columns come in instance-id order of first appearance, params sorted.
        for name in names {
            let values: Vec<Option<&serde_json::Value>> =
                group.iter().map(|m| m.get(name)).collect();
            let (ty, col) = value_column(&values);
            push(name, ty, true, doc, col);
        }
    }
    for name in &metric_names {
        let col: Float64Array = rows
            .iter()
            .map(|&i| {
                summary.outcomes[i]
                    .meta()
                    .and_then(|m| m.metrics.get(name).copied())
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
    summary: &RunSummary,
) -> Result<(), ArtifactError> {
    let batch = results_batch(dag, run_id, summary)?;
    write_parquet(path, &batch)
}
