//! Typed errors for the mutual-information estimators.
//!
//! Every variant names the offending input (`x`, `y`, `z`, a class, a column)
//! and the numbers involved, so a failed pipeline run can be diagnosed from
//! the message alone.

use thiserror::Error;

/// Errors raised by the estimators, the matrix type and the preprocessing helpers.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MiError {
    /// Fewer samples than the estimator needs (for k-NN estimators: k + 1).
    #[error("{context} needs at least {needed} samples, got {got}")]
    TooFewSamples {
        /// What needed the samples, e.g. "KSG with k = 3".
        context: String,
        /// Minimum number of samples.
        needed: usize,
        /// Number of samples supplied.
        got: usize,
    },

    /// Two inputs that must describe the same samples have different row counts.
    #[error("row counts differ: {a_name} has {a_rows} rows, {b_name} has {b_rows}")]
    RowMismatch {
        /// Name of the first input.
        a_name: &'static str,
        /// Rows of the first input.
        a_rows: usize,
        /// Name of the second input.
        b_name: &'static str,
        /// Rows of the second input.
        b_rows: usize,
    },

    /// A NaN or infinite value.
    #[error("{which}: non-finite value {value} in column {column}, row {row}")]
    NonFinite {
        /// Name of the input.
        which: &'static str,
        /// Row (sample) index, 0-based.
        row: usize,
        /// Column index, 0-based.
        column: usize,
        /// The offending value.
        value: f64,
    },

    /// A column whose values are all equal, where the operation needs spread.
    #[error("{which}: column {column} is constant (every value is {value})")]
    ConstantColumn {
        /// Name of the input.
        which: &'static str,
        /// Column index, 0-based.
        column: usize,
        /// The single value the column takes.
        value: f64,
    },

    /// Discrete labels that take only one value.
    #[error("{which}: all {n} labels belong to one class; at least two classes are needed")]
    SingleClass {
        /// Name of the input.
        which: &'static str,
        /// Number of labels.
        n: usize,
    },

    /// An input with no rows or no columns.
    #[error("{which} is empty ({rows} rows x {cols} columns)")]
    Empty {
        /// Name of the input.
        which: &'static str,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },

    /// Flat data whose length does not match the declared shape.
    #[error("data of length {len} cannot form a {rows} x {cols} matrix")]
    ShapeMismatch {
        /// Declared rows.
        rows: usize,
        /// Declared columns.
        cols: usize,
        /// Actual data length.
        len: usize,
    },

    /// Rows (or columns) of different lengths passed to a matrix constructor.
    #[error("ragged input: {kind} {index} has length {got}, expected {expected}")]
    Ragged {
        /// "row" or "column".
        kind: &'static str,
        /// Index of the first offending row or column.
        index: usize,
        /// Length of the first row or column.
        expected: usize,
        /// Length of the offending one.
        got: usize,
    },

    /// An index outside the matrix.
    #[error("{kind} index {index} out of range for length {len}")]
    IndexOutOfRange {
        /// "row" or "column".
        kind: &'static str,
        /// The index.
        index: usize,
        /// The length it was checked against.
        len: usize,
    },

    /// An estimator or helper parameter outside its valid range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },

    /// Estimator settings (or preprocessing, interval) that break a rule of their kind; found
    /// before anything runs (`EstimatorKind::check` in cbound-mi).
    #[error("{estimator}: invalid settings: {problem}")]
    Settings {
        /// The estimator kind.
        estimator: &'static str,
        /// The broken rule, with the setting's path.
        problem: String,
    },

    /// An estimator that trains a critic, run by a caller that gave it no trainer (the
    /// training lives in a crate above the estimators: cbound-critic).
    #[error(
        "{estimator} trains a neural critic, and this caller passed no critic trainer: run it through `cbound mi` or an `estimate_mi` stage, or pass one (cbound_critic::OnnxCritic) to cbound_mi::spec::estimate_with"
    )]
    NoCriticTrainer {
        /// The estimator kind.
        estimator: &'static str,
    },

    /// Training a critic or scoring held-out pairs with it failed.
    #[error("{estimator}: {detail}")]
    Critic {
        /// The estimator kind.
        estimator: &'static str,
        /// What failed, with what to change.
        detail: String,
    },

    /// A histogram whose joint grid would be too large to be meaningful.
    #[error(
        "histogram with {bins} bins over {dims} joint dimensions has {cells:e} cells, above the limit {limit:e}; use fewer bins or a k-NN estimator"
    )]
    TooManyCells {
        /// Bins per dimension.
        bins: usize,
        /// Joint dimensionality.
        dims: usize,
        /// bins^dims.
        cells: f64,
        /// The configured limit.
        limit: f64,
    },

    /// A covariance matrix that is singular or not positive definite.
    #[error(
        "sample covariance of {which} is singular or not positive definite (Cholesky pivot {pivot} is {value:e}); look for duplicated or collinear columns"
    )]
    Singular {
        /// Which block: "x", "y" or "joint (x, y)".
        which: &'static str,
        /// 0-based pivot at which the factorisation failed.
        pivot: usize,
        /// Value of the failed pivot.
        value: f64,
    },
}
