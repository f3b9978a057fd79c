//! cbound-mi: mutual-information estimators behind one [`Estimator`] trait.
//!
//! All estimators report nats. k-NN (KSG), histogram and Gaussian estimates are point
//! estimates with biases that depend on the data (see each module), so they are labelled
//! [`Direction::Estimate`]. The probe, the kNN classifier, InfoNCE and the Gaussian channel point one way
//! (lower, lower, upper), but their point values hold only on average; each also records a
//! [`certificate::Certificate`] from which a confidence bound is computed
//! ([`confidence`] holds the statistics).
//!
//! Two layers: [`Estimator`] is the computation on a pair of matrices (the files named after
//! each method); [`estimators`] holds the kinds a pipeline or `cbound mi` can name, one file
//! each behind [`EstimatorKind`] (settings, inputs, direction, checks, run), and [`spec`]
//! runs any configured kind into a row of `mi_estimates.parquet`.

pub mod bootstrap;
pub mod certificate;
pub mod channel;
pub mod confidence;
pub mod critic;
pub mod discrete;
pub mod estimators;
pub mod gaussian;
pub mod heldout;
pub mod histogram;
pub mod infonce;
mod knn;
pub mod knn_classifier;
mod knn_euclid;
pub mod ksg;
pub mod ksg_cmi;
pub mod preprocess;
pub mod probe;
pub mod spec;
#[cfg(test)]
mod testutil;

pub use discrete::{Correction, DiscreteMi};
pub use estimators::{Conditioning, EstimatorKind, Input, Inputs};
pub use gaussian::{GaussianMi, GaussianMiBc};
pub use heldout::HeldOut;
pub use histogram::Histogram;
pub use infonce::InfoNce;
pub use knn::NeighbourSearch;
pub use knn_classifier::{KnnResult, WeightedKnn};
pub use ksg::{Ksg, KsgAlgorithm, KsgMetric};
pub use ksg_cmi::KsgCmi;
pub use probe::{Probe, ProbeResult};

/// What an estimate promises about the true value: the workspace-wide vocabulary
/// ([`cbound_core::direction`]). Estimators report `LowerBound`, `UpperBound` or `Estimate`,
/// never `Exact`.
pub use cbound_core::Direction;
/// The numeric core these estimators compute on, re-exported so that `cbound_mi::Matrix`
/// and `cbound_mi::linalg` read as before the workspace split.
pub use cbound_core::{error, linalg, matrix, special, Matrix, MiError};

/// One mutual-information estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct MiEstimate {
    /// The estimate in nats.
    pub nats: f64,
    /// Number of samples used.
    pub n: usize,
    /// Dimensions of (x, y).
    pub dims: (usize, usize),
    /// What the number promises.
    pub direction: Direction,
    /// Estimator settings and caveats worth carrying into a report.
    pub note: Option<String>,
}

impl MiEstimate {
    /// The estimate in bits.
    pub fn bits(&self) -> f64 {
        self.nats / std::f64::consts::LN_2
    }
}

/// A mutual-information estimator I(X;Y) from paired samples (row i of x with row i of y).
pub trait Estimator: Send + Sync {
    /// Short stable name, e.g. "ksg1".
    fn name(&self) -> &'static str;
    /// What the estimates promise.
    fn direction(&self) -> Direction;
    /// Estimates I(X;Y) in nats.
    fn estimate(&self, x: &Matrix, y: &Matrix) -> Result<MiEstimate, MiError>;
}

/// Shared input checks: same row count, at least one column each, all finite.
/// Returns the number of rows.
pub(crate) fn check_pair(x: &Matrix, y: &Matrix) -> Result<usize, MiError> {
    if x.rows() != y.rows() {
        return Err(MiError::RowMismatch {
            a_name: "x",
            a_rows: x.rows(),
            b_name: "y",
            b_rows: y.rows(),
        });
    }
    check_one(x, "x")?;
    check_one(y, "y")?;
    Ok(x.rows())
}

pub(crate) fn check_one(m: &Matrix, which: &'static str) -> Result<(), MiError> {
    if m.cols() == 0 || m.rows() == 0 {
        return Err(MiError::Empty {
            which,
            rows: m.rows(),
            cols: m.cols(),
        });
    }
    m.check_finite(which)
}
