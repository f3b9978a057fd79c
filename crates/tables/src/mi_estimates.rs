//! `mi_estimates.parquet` (written by `estimate_mi` and `cbound mi --output`, read by
//! `bound` and the report): one row per (snapshot, pair, estimator). Its timing side,
//! `mi_estimates.timing.parquet`, is kept apart so compute times stay out of the outputs
//! digest.

use arrow_array::RecordBatch;

use super::{Column, ColumnType, Reader, Table, TableError};

pub static EPOCH: Column = Column {
    name: "epoch",
    ty: ColumnType::Int64,
    nullable: true,
    always: false,
    doc: "training epoch of the encoder snapshot (embed with snapshots)",
};
pub static PAIR: Column = Column {
    name: "pair",
    ty: ColumnType::Utf8,
    nullable: false,
    always: true,
    doc: "pair name",
};
pub static ESTIMATOR: Column = Column {
    name: "estimator",
    ty: ColumnType::Utf8,
    nullable: false,
    always: true,
    doc: "estimator name",
};
pub static PARAMS: Column = Column {
    name: "params",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "estimator settings (JSON)",
};
pub static N: Column = Column {
    name: "n",
    ty: ColumnType::UInt64,
    nullable: true,
    always: true,
    doc: "rows used",
};
pub static DIM_X: Column = Column {
    name: "dim_x",
    ty: ColumnType::UInt64,
    nullable: true,
    always: true,
    doc: "columns of x",
};
pub static DIM_Y: Column = Column {
    name: "dim_y",
    ty: ColumnType::UInt64,
    nullable: true,
    always: true,
    doc: "columns of y",
};
pub static NATS: Column = Column {
    name: "nats",
    ty: ColumnType::Float64,
    nullable: false,
    always: true,
    doc: "the estimate in nats (NaN when the estimator could not run: see error)",
};
pub static BITS: Column = Column {
    name: "bits",
    ty: ColumnType::Float64,
    nullable: false,
    always: true,
    doc: "the estimate in bits",
};
pub static CI_LOW: Column = Column {
    name: "ci_low",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "interval lower end, nats",
};
pub static CI_HIGH: Column = Column {
    name: "ci_high",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "interval upper end, nats",
};
pub static CI_LEVEL: Column = Column {
    name: "ci_level",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "interval coverage",
};
pub static KIND: Column = Column {
    name: "kind",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "lower_bound, upper_bound or estimate: what the number promises",
};
pub static ACCURACY: Column = Column {
    name: "accuracy",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "held-out accuracy (probe, knn)",
};
pub static N_TRAIN: Column = Column {
    name: "n_train",
    ty: ColumnType::UInt64,
    nullable: true,
    always: true,
    doc: "rows the classifier was fitted on (probe, knn; which rows: mi_estimates.splits.parquet)",
};
pub static N_TEST: Column = Column {
    name: "n_test",
    ty: ColumnType::UInt64,
    nullable: true,
    always: true,
    doc: "held-out rows it was scored on, disjoint from the fitted ones (probe, knn)",
};
pub static SPLIT_SEED: Column = Column {
    name: "split_seed",
    ty: ColumnType::UInt64,
    nullable: true,
    always: true,
    doc: "seed of the estimator, from which its held-out split is drawn (probe, knn); null when the data gave the split (estimate_mi's `split`)",
};
pub static CAP_NATS: Column = Column {
    name: "cap_nats",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "largest reportable value: log N (infonce), H(Z) (probe, knn)",
};
pub static NOTE: Column = Column {
    name: "note",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "estimator's remarks",
};
pub static ERROR: Column = Column {
    name: "error",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "why the estimator could not run",
};
pub static CERTIFICATE: Column = Column {
    name: "certificate",
    ty: ColumnType::Utf8,
    nullable: true,
    always: true,
    doc: "sample summaries from which `bound` computes a confidence bound at its level (JSON; probe, knn, infonce, gaussian_channel with feature_range)",
};

/// The file name of [`TABLE`].
pub const FILE: &str = "mi_estimates.parquet";

pub static TABLE: Table = Table {
    name: "mi_estimates",
    file: FILE,
    row: "one estimate of one pair by one estimator (per encoder snapshot)",
    columns: &[
        &EPOCH,
        &PAIR,
        &ESTIMATOR,
        &PARAMS,
        &N,
        &DIM_X,
        &DIM_Y,
        &NATS,
        &BITS,
        &CI_LOW,
        &CI_HIGH,
        &CI_LEVEL,
        &KIND,
        &ACCURACY,
        &N_TRAIN,
        &N_TEST,
        &SPLIT_SEED,
        &CAP_NATS,
        &NOTE,
        &ERROR,
        &CERTIFICATE,
    ],
};

pub static TIMING_EPOCH: Column = Column {
    name: "epoch",
    ty: ColumnType::Int64,
    nullable: true,
    always: false,
    doc: "encoder snapshot, as in mi_estimates",
};
pub static TIMING_PAIR: Column = Column {
    name: "pair",
    ty: ColumnType::Utf8,
    nullable: false,
    always: true,
    doc: "pair name",
};
pub static TIMING_ESTIMATOR: Column = Column {
    name: "estimator",
    ty: ColumnType::Utf8,
    nullable: false,
    always: true,
    doc: "estimator name",
};
pub static SECONDS: Column = Column {
    name: "seconds",
    ty: ColumnType::Float64,
    nullable: true,
    always: true,
    doc: "compute time",
};

/// The file name of [`TIMING`].
pub const TIMING_FILE: &str = "mi_estimates.timing.parquet";

pub static TIMING: Table = Table {
    name: "mi_estimates.timing",
    file: TIMING_FILE,
    row: "the compute time of one row of mi_estimates",
    columns: &[&TIMING_EPOCH, &TIMING_PAIR, &TIMING_ESTIMATOR, &SECONDS],
};

pub static SPLIT_ESTIMATE: Column = Column {
    name: "estimate",
    ty: ColumnType::UInt64,
    nullable: false,
    always: true,
    doc: "the row of mi_estimates.parquet (0-based) whose classifier this split belongs to",
};
pub static SPLIT_EPOCH: Column = Column {
    name: "epoch",
    ty: ColumnType::Int64,
    nullable: true,
    always: false,
    doc: "encoder snapshot, as in mi_estimates",
};
pub static SPLIT_PAIR: Column = Column {
    name: "pair",
    ty: ColumnType::Utf8,
    nullable: false,
    always: true,
    doc: "pair name",
};
pub static SPLIT_ESTIMATOR: Column = Column {
    name: "estimator",
    ty: ColumnType::Utf8,
    nullable: false,
    always: true,
    doc: "estimator name",
};
pub static SPLIT_ROW: Column = Column {
    name: "row",
    ty: ColumnType::UInt64,
    nullable: false,
    always: true,
    doc: "the row (0-based) of the upstream table the pair's columns were read from",
};
pub static SPLIT_SIDE: Column = Column {
    name: "split",
    ty: ColumnType::Utf8,
    nullable: false,
    always: true,
    doc: "`train` (the classifier was fitted on it) or `test` (it was scored on it)",
};

/// The file name of [`SPLITS`].
pub const SPLITS_FILE: &str = "mi_estimates.splits.parquet";

/// Which rows each held-out classifier (probe, knn) was fitted and scored on, so that an
/// estimate can be audited for leakage; written only when some estimate has a split.
pub static SPLITS: Table = Table {
    name: "mi_estimates.splits",
    file: SPLITS_FILE,
    row: "one row of the upstream table, in the fitted or the scored split of one estimate",
    columns: &[
        &SPLIT_ESTIMATE,
        &SPLIT_EPOCH,
        &SPLIT_PAIR,
        &SPLIT_ESTIMATOR,
        &SPLIT_ROW,
        &SPLIT_SIDE,
    ],
};

/// The columns of one `mi_estimates` row that downstream stages use.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub epoch: Option<i64>,
    pub pair: String,
    pub estimator: String,
    pub nats: f64,
    /// `lower_bound`, `upper_bound` or `estimate`; `None` for a row whose estimator failed.
    pub kind: Option<String>,
    pub accuracy: Option<f64>,
    /// JSON of a [`cbound_mi::certificate::Certificate`].
    pub certificate: Option<String>,
}

/// Every row of a batch, typed.
pub fn records(batch: &RecordBatch) -> Result<Vec<Record>, TableError> {
    let r = Reader::new(&TABLE, batch);
    let (epoch, pair, estimator) = (r.i64s(&EPOCH)?, r.strings(&PAIR)?, r.strings(&ESTIMATOR)?);
    let (nats, kind) = (r.f64s(&NATS)?, r.strings(&KIND)?);
    let (accuracy, certificate) = (r.f64s(&ACCURACY)?, r.strings(&CERTIFICATE)?);
    Ok((0..r.rows())
        .map(|i| Record {
            epoch: epoch[i],
            pair: pair[i].unwrap_or_default().to_string(),
            estimator: estimator[i].unwrap_or_default().to_string(),
            nats: nats[i].unwrap_or(f64::NAN),
            kind: kind[i].map(str::to_string),
            accuracy: accuracy[i],
            certificate: certificate[i].map(str::to_string),
        })
        .collect())
}
