//! Gaussian (log-determinant) MI: I = 1/2 (log det S_xx + log det S_yy - log det S).
//!
//! Exact for jointly Gaussian data given the covariance, and a consistent
//! estimator from the sample covariance there. For other data it measures
//! only linear dependence: zero for dependent but uncorrelated variables, and
//! it can also exceed the true MI (e.g. binary X plus Gaussian noise), so it
//! is a point estimate, not a bound. The `n - 1` normalisation cancels in the
//! formula, so it does not matter which one is used.

use super::error::MiError;
use super::linalg::{logdet_spd, sample_covariance, submatrix, LinalgError};
use super::matrix::Matrix;
use super::{check_pair, Direction, Estimator, MiEstimate};

/// log det of a symmetric positive-definite `k x k` block, naming the block when it is not.
pub(crate) fn logdet(m: &[f64], k: usize, which: &'static str) -> Result<f64, MiError> {
    logdet_spd(m, k).map_err(|e| match e {
        LinalgError::NotPositiveDefinite { pivot, value } => MiError::Singular {
            which,
            pivot,
            value,
        },
        LinalgError::NotSquare { n, len } => MiError::ShapeMismatch {
            rows: n,
            cols: n,
            len,
        },
    })
}

/// The log-determinant estimator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GaussianMi;

/// Gaussian MI from a joint covariance (row-major, (dx+dy)^2) whose first `dx`
/// coordinates are X and the remaining `dy` are Y.
pub fn mi_from_covariance(cov: &[f64], dx: usize, dy: usize) -> Result<f64, MiError> {
    let d = dx + dy;
    if cov.len() != d * d {
        return Err(MiError::ShapeMismatch {
            rows: d,
            cols: d,
            len: cov.len(),
        });
    }
    let xi: Vec<usize> = (0..dx).collect();
    let yi: Vec<usize> = (dx..d).collect();
    let ld = logdet;
    let lx = ld(&submatrix(cov, d, &xi), dx, "x")?;
    let ly = ld(&submatrix(cov, d, &yi), dy, "y")?;
    let lxy = ld(cov, d, "joint (x, y)")?;
    Ok(0.5 * (lx + ly - lxy))
}

impl Estimator for GaussianMi {
    fn name(&self) -> &'static str {
        "gaussian"
    }

    fn direction(&self) -> Direction {
        Direction::Estimate
    }

    fn estimate(&self, x: &Matrix, y: &Matrix) -> Result<MiEstimate, MiError> {
        let n = check_pair(x, y)?;
        let d = x.cols() + y.cols();
        // A sample covariance of n points has rank at most n - 1.
        if n < d + 1 {
            return Err(MiError::TooFewSamples {
                context: format!("Gaussian (log-det) estimator in {d} joint dimensions"),
                needed: d + 1,
                got: n,
            });
        }
        // Name the column rather than report a bare singular pivot.
        x.check_no_constant_column("x")?;
        y.check_no_constant_column("y")?;
        let cov = sample_covariance(&x.hstack(y)?);
        let nats = mi_from_covariance(&cov, x.cols(), y.cols())?;
        Ok(MiEstimate {
            nats,
            n,
            dims: (x.cols(), y.cols()),
            direction: Direction::Estimate,
            note: Some(
                "Gaussian log-det estimate: exact for Gaussians, measures linear dependence only"
                    .into(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{bivariate, gaussian, split};
    use super::*;

    #[test]
    fn closed_form_from_covariance() {
        let r: f64 = 0.75;
        let v = mi_from_covariance(&[1.0, r, r, 1.0], 1, 1).unwrap();
        assert!((v + 0.5 * (1.0 - r * r).ln()).abs() < 1e-14);
    }

    #[test]
    fn recovers_gaussian_mi() {
        let (x, y) = bivariate(20000, 0.6, 5);
        let e = GaussianMi.estimate(&x, &y).unwrap();
        assert!(
            (e.nats + 0.5 * (1.0f64 - 0.36).ln()).abs() < 0.01,
            "{}",
            e.nats
        );
    }

    #[test]
    fn blind_to_nonlinear_dependence() {
        // y = x^2 - 1 is a function of x, yet uncorrelated with it.
        let (x, _) = bivariate(5000, 0.0, 6);
        let y = x.map(|v| v * v - 1.0);
        let e = GaussianMi.estimate(&x, &y).unwrap();
        assert!(e.nats < 0.01, "{}", e.nats);
    }

    #[test]
    fn bad_inputs() {
        let m = gaussian(50, &[1.0, 0.3, 0.3, 1.0], 7);
        let (x, _) = split(&m, 1);
        // Duplicated column: singular x block, named.
        let xx = x.hstack(&x).unwrap();
        let err = GaussianMi.estimate(&xx, &x).unwrap_err();
        assert!(matches!(err, MiError::Singular { which: "x", .. }), "{err}");
        assert!(err.to_string().contains("singular"));
        let c = Matrix::from_column(&[2.0; 50]);
        assert!(matches!(
            GaussianMi.estimate(&x, &c),
            Err(MiError::ConstantColumn { which: "y", .. })
        ));
        let few = gaussian(3, &[1.0, 0.3, 0.3, 1.0], 8);
        let (a, b) = split(&few, 1);
        let wide = a
            .hstack(&b)
            .unwrap()
            .hstack(&a.map(|v| v * 2.0 + 1.0))
            .unwrap();
        assert!(matches!(
            GaussianMi.estimate(&wide, &b),
            Err(MiError::TooFewSamples {
                needed: 5,
                got: 3,
                ..
            })
        ));
        assert!(mi_from_covariance(&[1.0, 2.0, 2.0, 1.0], 1, 1).is_err());
    }
}
