//! cbound-core: the bottom layer every other crate builds on.
//!
//! - numbers: [`Matrix`] (row-major samples x dimensions), [`linalg`] (Cholesky, log-det,
//!   covariance) and [`special`] functions (erf, digamma, the normal CDF);
//! - shared vocabulary: [`Direction`] (what a number promises about the truth),
//!   [`params::ParamError`] and [`params::PathSeg`] (where in a configuration a problem is),
//!   [`MiError`] (the matrix and estimator errors);
//! - durable [`files`] (atomic writes, Parquet, JSON, hashes) and [`failpoint`]s for the
//!   fault-injection tests.
//!
//! Nothing here knows about pipelines, stages or estimators' settings.

pub mod direction;
pub mod error;
pub mod failpoint;
pub mod files;
pub mod linalg;
pub mod matrix;
pub mod params;
pub mod special;

pub use direction::Direction;
pub use error::MiError;
pub use matrix::Matrix;

/// This machine's name, for run records and lock files. Asked once per process: every
/// instance's `meta.json` records it, and a system call per instance adds up over a sweep.
pub fn host_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| gethostname::gethostname().to_string_lossy().into_owned())
        .clone()
}
