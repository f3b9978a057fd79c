//! Rows of `mi_estimates.parquet` as the estimators produce them, and the batches they
//! become: one builder shared by the `estimate_mi` stage and `cbound mi --output`, so the two
//! writers cannot drift apart.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use cbound_mi::spec::EstimateRow;
use cbound_mi::HeldOut;

use crate::{Builder, TableError};

/// One (pair, estimator) outcome: a row, or why the estimator could not run.
#[derive(Debug, Clone)]
pub struct PairEstimate {
    pub pair: String,
    /// The encoder snapshot the rows came from, when the table has an `epoch` column.
    pub epoch: Option<i64>,
    pub estimator: String,
    pub result: Result<EstimateRow, String>,
}

/// `mi_estimates.timing.parquet`: each estimate's compute time, apart from the estimates so
/// that it stays out of the outputs digest (see `is_timing_output` in the engine).
pub fn timing_table(rows: &[PairEstimate]) -> Result<RecordBatch, TableError> {
    Builder::new(&crate::mi_estimates::TIMING)
        .column(
            &crate::mi_estimates::TIMING_EPOCH,
            Arc::new(rows.iter().map(|r| r.epoch).collect::<Int64Array>()),
        )
        .column(
            &crate::mi_estimates::TIMING_PAIR,
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.pair.as_str()))
                    .collect::<StringArray>(),
            ),
        )
        .column(
            &crate::mi_estimates::TIMING_ESTIMATOR,
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.estimator.as_str()))
                    .collect::<StringArray>(),
            ),
        )
        .column(
            &crate::mi_estimates::SECONDS,
            Arc::new(
                rows.iter()
                    .map(|r| r.result.as_ref().ok().map(|r| r.seconds))
                    .collect::<Float64Array>(),
            ),
        )
        .build()
}

/// `mi_estimates.parquet`, shared with `cbound mi --output`; its columns are declared in
/// [`crate::mi_estimates`].
pub fn estimates_table(rows: &[PairEstimate]) -> Result<RecordBatch, TableError> {
    use crate::mi_estimates as t;
    let ok = |i: usize| rows[i].result.as_ref().ok();
    let n = rows.len();
    let f64col = |f: &dyn Fn(&EstimateRow) -> Option<f64>| -> ArrayRef {
        Arc::new((0..n).map(|i| ok(i).and_then(f)).collect::<Float64Array>())
    };
    let u64col = |f: &dyn Fn(&EstimateRow) -> usize| -> ArrayRef {
        Arc::new(
            (0..n)
                .map(|i| ok(i).map(|r| f(r) as u64))
                .collect::<UInt64Array>(),
        )
    };
    let held = |f: &dyn Fn(&HeldOut) -> Option<u64>| -> ArrayRef {
        Arc::new(
            (0..n)
                .map(|i| ok(i).and_then(|r| r.held_out.as_ref()).and_then(f))
                .collect::<UInt64Array>(),
        )
    };
    let strcol = |f: &dyn Fn(usize) -> Option<String>| -> ArrayRef {
        Arc::new((0..n).map(f).collect::<StringArray>())
    };
    let value = |f: &dyn Fn(f64) -> f64| -> ArrayRef {
        Arc::new(
            (0..n)
                .map(|i| ok(i).map(|r| f(r.nats)).unwrap_or(f64::NAN))
                .collect::<Float64Array>(),
        )
    };
    let mut table = Builder::new(&t::TABLE)
        .column(&t::PAIR, strcol(&|i| Some(rows[i].pair.clone())))
        .column(&t::ESTIMATOR, strcol(&|i| Some(rows[i].estimator.clone())))
        .column(&t::PARAMS, strcol(&|i| ok(i).map(|r| r.params.clone())))
        .column(&t::N, u64col(&|r| r.n))
        .column(&t::DIM_X, u64col(&|r| r.dim_x))
        .column(&t::DIM_Y, u64col(&|r| r.dim_y))
        .column(&t::NATS, value(&|v| v))
        .column(&t::BITS, value(&|v| v / std::f64::consts::LN_2))
        .column(&t::CI_LOW, f64col(&|r| r.ci_low))
        .column(&t::CI_HIGH, f64col(&|r| r.ci_high))
        .column(&t::CI_LEVEL, f64col(&|r| r.ci_level))
        .column(
            &t::KIND,
            strcol(&|i| ok(i).map(|r| r.kind.as_str().to_string())),
        )
        .column(&t::ACCURACY, f64col(&|r| r.accuracy))
        .column(&t::N_TRAIN, held(&|h| Some(h.train.len() as u64)))
        .column(&t::N_TEST, held(&|h| Some(h.test.len() as u64)))
        .column(&t::SPLIT_SEED, held(&|h| h.seed))
        .column(&t::CAP_NATS, f64col(&|r| r.cap_nats))
        .column(&t::NOTE, strcol(&|i| ok(i).and_then(|r| r.note.clone())))
        .column(
            &t::ERROR,
            strcol(&|i| rows[i].result.as_ref().err().cloned()),
        )
        .column(
            &t::CERTIFICATE,
            strcol(&|i| ok(i).and_then(|r| r.certificate.as_ref().map(|c| c.to_json()))),
        );
    // Only with encoder snapshots: an `epoch` column is what tells them apart.
    if rows.iter().any(|r| r.epoch.is_some()) {
        table = table.column(
            &t::EPOCH,
            Arc::new(rows.iter().map(|r| r.epoch).collect::<Int64Array>()),
        );
    }
    table.build()
}

/// `mi_estimates.splits.parquet`: each held-out classifier's fitted and scored rows, keyed
/// by the row of `mi_estimates.parquet` ([`estimates_table`] of the same `rows`). The splits
/// in `rows` must already index the upstream table's rows. `None` when no estimate has a
/// split.
pub fn splits_table(rows: &[PairEstimate]) -> Result<Option<RecordBatch>, TableError> {
    use crate::mi_estimates as t;
    let mut estimate = Vec::new();
    let mut epoch = Vec::new();
    let (mut pair, mut estimator, mut row, mut side) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate() {
        let Some(h) = r.result.as_ref().ok().and_then(|e| e.held_out.as_ref()) else {
            continue;
        };
        for (rows, name) in [(&h.train, "train"), (&h.test, "test")] {
            for &j in rows {
                estimate.push(i as u64);
                epoch.push(r.epoch);
                pair.push(r.pair.as_str());
                estimator.push(r.estimator.as_str());
                row.push(j as u64);
                side.push(name);
            }
        }
    }
    if estimate.is_empty() {
        return Ok(None);
    }
    let mut table = Builder::new(&t::SPLITS)
        .column(&t::SPLIT_ESTIMATE, Arc::new(UInt64Array::from(estimate)))
        .column(&t::SPLIT_PAIR, Arc::new(StringArray::from(pair)))
        .column(&t::SPLIT_ESTIMATOR, Arc::new(StringArray::from(estimator)))
        .column(&t::SPLIT_ROW, Arc::new(UInt64Array::from(row)))
        .column(&t::SPLIT_SIDE, Arc::new(StringArray::from(side)));
    if rows.iter().any(|r| r.epoch.is_some()) {
        table = table.column(&t::SPLIT_EPOCH, Arc::new(Int64Array::from(epoch)));
    }
    table.build().map(Some)
}
