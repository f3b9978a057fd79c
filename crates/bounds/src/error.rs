//! Errors of the bounds library, worded so the caller knows what to supply or fix.

use thiserror::Error;

use super::terms::{Direction, Quantity};

/// Why a bound or an accuracy conversion could not be computed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BoundsError {
    /// A bound needs a quantity that was not supplied.
    #[error("{needed_by} needs {quantity}, which was not supplied; provide it with {suggestion}")]
    MissingTerm {
        quantity: Quantity,
        needed_by: String,
        suggestion: String,
    },
    /// A value is NaN or infinite, usually a failed estimator upstream.
    #[error("{what} is not finite ({value}); check the estimator output that produced it")]
    NonFinite { what: String, value: f64 },
    /// A numeric parameter is out of its domain.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    /// A bound was requested whose proof needs an assumption the caller did not assert.
    #[error(
        "{bound} holds only if {assumption}; set Assumptions::{flag} = true only when this is \
         known to be true of the data, otherwise use the always-valid bound"
    )]
    AssumptionNotAsserted {
        bound: &'static str,
        assumption: &'static str,
        flag: &'static str,
    },
    /// Ground truth must be exact, or a violation could be an estimator artefact.
    #[error(
        "ground truth for {quantity} must be an Exact term, got {kind:?} from `{origin}`; \
         compute it exactly (known synthetic distribution) or do not use it as truth"
    )]
    TruthNotExact {
        quantity: Quantity,
        kind: Direction,
        origin: String,
    },
}
