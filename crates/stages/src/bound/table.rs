//! `bounds.parquet` rows, written through the table's declaration in
//! [`cbound_tables::bounds`].

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};

use cbound_engine::stage::StageError;
use cbound_tables::{bounds, Builder};

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
        let mut table = Builder::new(&bounds::TABLE)
            .column(&bounds::NAME, s(&|r| r.name.clone()))
            .column(&bounds::STATEMENT, s(&|r| r.statement.clone()))
            .column(&bounds::STATUS, s(&|r| r.status.clone()))
            .column(&bounds::CERTIFICATION, s(&|r| r.certification.clone()))
            .column(&bounds::SIDE, s(&|r| r.side.clone()))
            .column(&bounds::LHS, s(&|r| r.lhs.clone()))
            .column(&bounds::VALUE_NATS, fl(&|r| r.value))
            .column(&bounds::CERTIFIED_NATS, fl(&|r| r.certified_value))
            .column(&bounds::CONFIDENCE, fl(&|r| r.confidence))
            .column(
                &bounds::CERTIFIED,
                b(&|r| r.certification.as_ref().map(|c| c == "certified")),
            )
            .column(&bounds::TERMS, s(&|r| r.terms_json.clone()))
            .column(&bounds::TRUTH_NATS, fl(&|r| r.truth))
            .column(&bounds::VIOLATED, b(&|r| r.violated))
            .column(&bounds::MARGIN_NATS, fl(&|r| r.margin))
            .column(&bounds::CERTIFIED_VIOLATED, b(&|r| r.certified_violated))
            .column(&bounds::CERTIFIED_MARGIN_NATS, fl(&|r| r.certified_margin))
            .column(&bounds::ERROR, s(&|r| r.error.clone()));
        if with_epoch {
            table = table.column(
                &bounds::EPOCH,
                Arc::new(rows.iter().map(|r| r.epoch).collect::<Int64Array>()),
            );
        }
        table
            .build()
            .map_err(|e| StageError::Failed(format!("building bounds table: {e}")))
    }
}
