//! `bounds.parquet`: one row per inequality, certified term and accuracy bound of each
//! snapshot, declared once here (columns, types, descriptions) and written from [`Row`]s.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field};

use crate::artifact::documented_schema;
use crate::stages::StageError;

/// One row of `bounds.parquet`.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub epoch: Option<i64>,
    pub name: Option<String>,
    pub statement: Option<String>,
    /// valid, as_stated or inconsistent.
    pub status: Option<String>,
    /// certified, vacuous, estimate, not_a_bound or inconsistent.
    pub certification: Option<String>,
    pub side: Option<String>,
    pub lhs: Option<String>,
    pub value: Option<f64>,
    pub certified_value: Option<f64>,
    pub confidence: Option<f64>,
    pub terms_json: Option<String>,
    pub truth: Option<f64>,
    pub violated: Option<bool>,
    pub margin: Option<f64>,
    pub certified_violated: Option<bool>,
    pub certified_margin: Option<f64>,
    pub error: Option<String>,
}

/// The rows of one instance.
#[derive(Default)]
pub struct BoundsTable {
    pub rows: Vec<Row>,
}

impl BoundsTable {
    pub fn batch(&self, with_epoch: bool) -> Result<RecordBatch, StageError> {
        let rows = &self.rows;
        let s = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<StringArray>())
        };
        let fl = |f: &dyn Fn(&Row) -> Option<f64>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<Float64Array>())
        };
        let b = |f: &dyn Fn(&Row) -> Option<bool>| -> ArrayRef {
            Arc::new(rows.iter().map(f).collect::<BooleanArray>())
        };
        let mut cols: Vec<(Field, &str, ArrayRef)> = vec![
            (
                Field::new("name", DataType::Utf8, true),
                "inequality (or `term`, `accuracy_*`, `consistency`)",
                s(&|r| r.name.clone()),
            ),
            (
                Field::new("statement", DataType::Utf8, true),
                "the inequality in words",
                s(&|r| r.statement.clone()),
            ),
            (
                Field::new("status", DataType::Utf8, true),
                "valid, as_stated (the study's claim; not a bound), or inconsistent (two certified values contradict each other or a trivial range)",
                s(&|r| r.status.clone()),
            ),
            (
                Field::new("certification", DataType::Utf8, true),
                "certified (holds with the stated confidence), vacuous (holds, but at or below the trivial value), estimate (some term has no confidence bound), not_a_bound (as stated), inconsistent",
                s(&|r| r.certification.clone()),
            ),
            (
                Field::new("side", DataType::Utf8, true),
                "lower or upper bound on the left-hand side",
                s(&|r| r.side.clone()),
            ),
            (
                Field::new("lhs", DataType::Utf8, true),
                "the bounded quantity",
                s(&|r| r.lhs.clone()),
            ),
            (
                Field::new("value_nats", DataType::Float64, true),
                "the bound from the terms' point values, nats (an accuracy for accuracy rows)",
                fl(&|r| r.value),
            ),
            (
                Field::new("certified_nats", DataType::Float64, true),
                "the bound from the terms' confidence bounds: holds, with every other certified value of the instance, with probability >= confidence",
                fl(&|r| r.certified_value),
            ),
            (
                Field::new("confidence", DataType::Float64, true),
                "the joint confidence level of the instance's certified values",
                fl(&|r| r.confidence),
            ),
            (
                Field::new("certified", DataType::Boolean, true),
                "certification = certified: valid, every term a confidence bound pointing the right way, not vacuous, not inconsistent",
                b(&|r| {
                    r.certification
                        .as_ref()
                        .map(|c| c == "certified")
                }),
            ),
            (
                Field::new("terms", DataType::Utf8, true),
                "terms used, with point value, direction, source, certified value and how it was certified (JSON)",
                s(&|r| r.terms_json.clone()),
            ),
            (
                Field::new("truth_nats", DataType::Float64, true),
                "exact value of the left-hand side, when known",
                fl(&|r| r.truth),
            ),
            (
                Field::new("violated", DataType::Boolean, true),
                "the point value contradicts the truth (beyond the tolerance)",
                b(&|r| r.violated),
            ),
            (
                Field::new("margin_nats", DataType::Float64, true),
                "by how much the point value contradicts the truth",
                fl(&|r| r.margin),
            ),
            (
                Field::new("certified_violated", DataType::Boolean, true),
                "the certified value contradicts the truth (beyond the tolerance): a failure of the confidence statement",
                b(&|r| r.certified_violated),
            ),
            (
                Field::new("certified_margin_nats", DataType::Float64, true),
                "by how much the certified value contradicts the truth",
                fl(&|r| r.certified_margin),
            ),
            (
                Field::new("error", DataType::Utf8, true),
                "why the row could not be computed (missing term and which estimator provides it), or what contradicts",
                s(&|r| r.error.clone()),
            ),
        ];
        if with_epoch {
            cols.insert(
                0,
                (
                    Field::new("epoch", DataType::Int64, true),
                    "training epoch of the encoder snapshot the estimates came from",
                    Arc::new(rows.iter().map(|r| r.epoch).collect::<Int64Array>()),
                ),
            );
        }
        let schema = documented_schema(cols.iter().map(|(f, d, _)| (f.clone(), *d)).collect());
        RecordBatch::try_new(schema, cols.into_iter().map(|(_, _, a)| a).collect())
            .map_err(|e| StageError::Failed(format!("building bounds table: {e}")))
    }
}
