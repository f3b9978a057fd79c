//! Gaussian tasks with closed-form mutual information, for testing estimators.
//!
//! The tasks follow the "Beyond Normal" benchmark (Czyz et al., NeurIPS 2023):
//! bivariate normal, dense multinormal (all off-diagonal correlations equal),
//! two correlated coordinate pairs among independent noise, and the high-MI
//! "staircase" of d independent correlated pairs. The true MI always comes
//! from the general formula I = 1/2 (log det S_xx + log det S_yy - log det S)
//! evaluated with our own Cholesky, so the sampler and the reference value
//! share one covariance and cannot drift apart. Mapping every coordinate
//! through the standard normal CDF leaves the MI unchanged (per-coordinate
//! bijection) while making the marginals uniform, which tests estimators off
//! the Gaussian family.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use thiserror::Error;

use cbound_core::linalg::{cholesky, logdet_spd, submatrix, LinalgError};
use cbound_core::special::normal_cdf;
use cbound_core::{Matrix, MiError};

/// A Gaussian task: X and Y jointly normal with a known covariance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GaussianTask {
    /// (X, Y) one-dimensional each, unit variances, correlation `rho`.
    Bivariate {
        /// Correlation, |rho| < 1.
        rho: f64,
    },
    /// X, Y each `dim`-dimensional; every off-diagonal entry of the joint
    /// 2dim x 2dim covariance is `rho` (positive definite for
    /// -1/(2 dim - 1) < rho < 1).
    Dense {
        /// Dimension of X and of Y.
        dim: usize,
        /// Common correlation.
        rho: f64,
    },
    /// X, Y each `dim`-dimensional (dim >= 2); (X_1, Y_1) and (X_2, Y_2) have
    /// correlation `rho`, every other coordinate is independent noise.
    /// I = -log(1 - rho^2) for any dim.
    TwoPair {
        /// Dimension of X and of Y.
        dim: usize,
        /// Correlation of the two informative pairs.
        rho: f64,
    },
    /// `pairs` independent pairs (X_i, Y_i), each with correlation
    /// sqrt(1 - exp(-2 mi / pairs)), so the total MI is `mi`.
    Staircase {
        /// Number of pairs (dimension of X and of Y).
        pairs: usize,
        /// Total mutual information in nats.
        mi: f64,
    },
}

/// Invalid task parameters or an unusable covariance.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GroundTruthError {
    /// A dimension below the task's minimum.
    #[error("{task}: dimension must be at least {min}, got {got}")]
    Dimension {
        /// Task name.
        task: &'static str,
        /// Minimum dimension.
        min: usize,
        /// Given dimension.
        got: usize,
    },
    /// A correlation that is not finite or has |rho| >= 1.
    #[error("{task}: correlation must be finite with |rho| < 1, got {rho}")]
    Correlation {
        /// Task name.
        task: &'static str,
        /// Given correlation.
        rho: f64,
    },
    /// A target MI that is negative or not finite.
    #[error("staircase: mutual information must be finite and >= 0, got {mi}")]
    MutualInformation {
        /// Given MI.
        mi: f64,
    },
    /// The covariance is not positive definite (e.g. a dense task with rho <= -1/(2 dim - 1)).
    #[error("{task}: covariance is not positive definite (Cholesky pivot {pivot} is {value:e})")]
    NotPositiveDefinite {
        /// Task name.
        task: &'static str,
        /// 0-based failed pivot.
        pivot: usize,
        /// Its value.
        value: f64,
    },
    /// A request for zero samples.
    #[error("sample size must be at least 1")]
    EmptySample,
    /// A matrix construction error (not expected; shapes are computed here).
    #[error(transparent)]
    Matrix(#[from] MiError),
}

impl GaussianTask {
    /// Short name used in messages and reports.
    pub fn name(&self) -> &'static str {
        match self {
            GaussianTask::Bivariate { .. } => "bivariate",
            GaussianTask::Dense { .. } => "dense",
            GaussianTask::TwoPair { .. } => "two-pair",
            GaussianTask::Staircase { .. } => "staircase",
        }
    }

    /// Dimensions of (X, Y).
    pub fn dims(&self) -> (usize, usize) {
        match *self {
            GaussianTask::Bivariate { .. } => (1, 1),
            GaussianTask::Dense { dim, .. } | GaussianTask::TwoPair { dim, .. } => (dim, dim),
            GaussianTask::Staircase { pairs, .. } => (pairs, pairs),
        }
    }

    /// Per-pair correlation of the staircase.
    fn staircase_rho(pairs: usize, mi: f64) -> f64 {
        (1.0 - (-2.0 * mi / pairs as f64).exp()).sqrt()
    }

    /// Joint covariance of (X, Y), row-major (dx + dy)^2, X coordinates first.
    pub fn covariance(&self) -> Vec<f64> {
        let (dx, dy) = self.dims();
        let d = dx + dy;
        let mut s = vec![0.0; d * d];
        for i in 0..d {
            s[i * d + i] = 1.0;
        }
        let mut pair = |i: usize, j: usize, r: f64| {
            s[i * d + j] = r;
            s[j * d + i] = r;
        };
        match *self {
            GaussianTask::Bivariate { rho } => pair(0, 1, rho),
            GaussianTask::Dense { rho, .. } => {
                for i in 0..d {
                    for j in (i + 1)..d {
                        pair(i, j, rho);
                    }
                }
            }
            GaussianTask::TwoPair { dim, rho } => {
                for i in 0..dim.min(2) {
                    pair(i, dim + i, rho);
                }
            }
            GaussianTask::Staircase { pairs, mi } => {
                let r = Self::staircase_rho(pairs, mi);
                for i in 0..pairs {
                    pair(i, pairs + i, r);
                }
            }
        }
        s
    }

    fn check_rho(&self, rho: f64) -> Result<(), GroundTruthError> {
        if !(rho.is_finite() && rho.abs() < 1.0) {
            return Err(GroundTruthError::Correlation {
                task: self.name(),
                rho,
            });
        }
        Ok(())
    }

    fn check_dim(&self, got: usize, min: usize) -> Result<(), GroundTruthError> {
        if got < min {
            return Err(GroundTruthError::Dimension {
                task: self.name(),
                min,
                got,
            });
        }
        Ok(())
    }

    fn map_linalg(&self, e: LinalgError) -> GroundTruthError {
        match e {
            LinalgError::NotPositiveDefinite { pivot, value } => {
                GroundTruthError::NotPositiveDefinite {
                    task: self.name(),
                    pivot,
                    value,
                }
            }
            LinalgError::NotSquare { n, len } => GroundTruthError::Matrix(MiError::ShapeMismatch {
                rows: n,
                cols: n,
                len,
            }),
        }
    }

    /// Lower-triangular Cholesky factor of the covariance, after parameter checks.
    pub fn cholesky_factor(&self) -> Result<Vec<f64>, GroundTruthError> {
        match *self {
            GaussianTask::Bivariate { rho } => self.check_rho(rho)?,
            GaussianTask::Dense { dim, rho } => {
                self.check_dim(dim, 1)?;
                self.check_rho(rho)?;
            }
            GaussianTask::TwoPair { dim, rho } => {
                self.check_dim(dim, 2)?;
                self.check_rho(rho)?;
            }
            GaussianTask::Staircase { pairs, mi } => {
                self.check_dim(pairs, 1)?;
                if !(mi.is_finite() && mi >= 0.0) {
                    return Err(GroundTruthError::MutualInformation { mi });
                }
            }
        }
        let (dx, dy) = self.dims();
        cholesky(&self.covariance(), dx + dy).map_err(|e| self.map_linalg(e))
    }

    /// Checks the parameters and that the covariance is positive definite.
    pub fn validate(&self) -> Result<(), GroundTruthError> {
        self.cholesky_factor().map(|_| ())
    }

    /// True MI in nats from the general log-det formula, or the reason it does not exist.
    pub fn try_true_mi(&self) -> Result<f64, GroundTruthError> {
        self.validate()?;
        let (dx, dy) = self.dims();
        let d = dx + dy;
        let s = self.covariance();
        let xi: Vec<usize> = (0..dx).collect();
        let yi: Vec<usize> = (dx..d).collect();
        let ld = |m: &[f64], k: usize| logdet_spd(m, k).map_err(|e| self.map_linalg(e));
        let lx = ld(&submatrix(&s, d, &xi), dx)?;
        let ly = ld(&submatrix(&s, d, &yi), dy)?;
        let lxy = ld(&s, d)?;
        Ok(0.5 * (lx + ly - lxy))
    }

    /// True MI in nats (general log-det formula); NaN for an invalid task
    /// (use [`GaussianTask::try_true_mi`] to get the reason).
    pub fn true_mi(&self) -> f64 {
        self.try_true_mi().unwrap_or(f64::NAN)
    }

    /// Textbook closed form, used to cross-check the general formula.
    pub fn closed_form_mi(&self) -> f64 {
        match *self {
            GaussianTask::Bivariate { rho } => -0.5 * (1.0 - rho * rho).ln(),
            GaussianTask::Dense { dim, rho } => {
                // det of an m x m equicorrelation matrix: (1 - rho)^(m-1) (1 + (m-1) rho).
                let ld = |m: usize| {
                    let m = m as f64;
                    (m - 1.0) * (1.0 - rho).ln() + (1.0 + (m - 1.0) * rho).ln()
                };
                0.5 * (2.0 * ld(dim) - ld(2 * dim))
            }
            GaussianTask::TwoPair { rho, .. } => -(1.0 - rho * rho).ln(),
            GaussianTask::Staircase { mi, .. } => mi,
        }
    }

    /// `n` samples as (X, Y) matrices, optionally with every coordinate mapped
    /// through the standard normal CDF (same MI, uniform marginals).
    ///
    /// x = L z with L the Cholesky factor and z ~ N(0, I).
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        rng: &mut R,
        cdf_transform: bool,
    ) -> Result<(Matrix, Matrix), GroundTruthError> {
        if n == 0 {
            return Err(GroundTruthError::EmptySample);
        }
        let l = self.cholesky_factor()?;
        let (dx, dy) = self.dims();
        let d = dx + dy;
        let mut xs = Vec::with_capacity(n * dx);
        let mut ys = Vec::with_capacity(n * dy);
        let mut z = vec![0.0; d];
        for _ in 0..n {
            for v in z.iter_mut() {
                *v = StandardNormal.sample(rng);
            }
            for i in 0..d {
                let row = &l[i * d..i * d + i + 1];
                let mut v: f64 = row.iter().zip(&z).map(|(a, b)| a * b).sum();
                if cdf_transform {
                    v = normal_cdf(v);
                }
                if i < dx {
                    xs.push(v);
                } else {
                    ys.push(v);
                }
            }
        }
        Ok((Matrix::new(n, dx, xs)?, Matrix::new(n, dy, ys)?))
    }
}

/// The reference tasks of `ground-truth.md` with their published MI values (nats, 4 decimals).
pub fn reference_tasks() -> Vec<(GaussianTask, f64)> {
    let mut v = vec![
        (GaussianTask::Bivariate { rho: 0.75 }, 0.4133),
        (GaussianTask::Dense { dim: 2, rho: 0.5 }, 0.2939),
        (GaussianTask::Dense { dim: 3, rho: 0.5 }, 0.4133),
        (GaussianTask::Dense { dim: 5, rho: 0.5 }, 0.5928),
        (GaussianTask::Dense { dim: 25, rho: 0.5 }, 1.2922),
    ];
    for dim in [2, 3, 5, 10, 25] {
        v.push((GaussianTask::TwoPair { dim, rho: 0.8 }, 1.0217));
    }
    for mi in [2.0, 4.0, 6.0, 8.0, 10.0] {
        v.push((GaussianTask::Staircase { pairs: 20, mi }, mi));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbound_mi::{
        Estimator, GaussianMi, Histogram, Ksg, KsgAlgorithm, MiEstimate, NeighbourSearch,
    };
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn draw(task: GaussianTask, n: usize, seed: u64, cdf: bool) -> (Matrix, Matrix) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (x, y) = task.sample(n, &mut rng, cdf).unwrap();
        (x.standardized().unwrap(), y.standardized().unwrap())
    }

    fn run(e: &dyn Estimator, task: GaussianTask, seed: u64) -> MiEstimate {
        let (x, y) = draw(task, 5000, seed, false);
        e.estimate(&x, &y).unwrap()
    }

    #[test]
    fn reference_values_reproduced() {
        for (task, want) in reference_tasks() {
            let got = task.true_mi();
            assert!((got - want).abs() < 1e-4, "{task:?}: {got} vs {want}");
            assert!((task.closed_form_mi() - got).abs() < 1e-9, "{task:?}");
        }
        assert!(
            (GaussianTask::TwoPair { dim: 2, rho: 0.8 }.true_mi() + 0.36f64.ln()).abs() < 1e-12
        );
    }

    #[test]
    fn sample_covariance_matches_target() {
        let tasks = [
            GaussianTask::Bivariate { rho: 0.75 },
            GaussianTask::Dense { dim: 3, rho: 0.5 },
            GaussianTask::TwoPair { dim: 3, rho: 0.8 },
            GaussianTask::Staircase { pairs: 2, mi: 1.0 },
        ];
        for (t, task) in tasks.into_iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(100 + t as u64);
            let (x, y) = task.sample(200_000, &mut rng, false).unwrap();
            let s = cbound_core::linalg::sample_covariance(&x.hstack(&y).unwrap());
            let target = task.covariance();
            for (a, b) in s.iter().zip(&target) {
                // Standard error of a covariance entry here is at most ~0.0032.
                assert!((a - b).abs() < 0.015, "{task:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn cdf_transform_gives_uniform_marginals() {
        let task = GaussianTask::Dense { dim: 2, rho: 0.5 };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (x, _) = task.sample(50_000, &mut rng, true).unwrap();
        assert!(x.as_slice().iter().all(|&v| v > 0.0 && v < 1.0));
        for (m, s) in x.column_means().iter().zip(x.column_stds()) {
            assert!((m - 0.5).abs() < 0.01);
            assert!((s * s - 1.0 / 12.0).abs() < 0.003);
        }
    }

    #[test]
    fn invalid_tasks_are_errors() {
        // rho below -1/(2 dim - 1) = -1/3: not positive definite.
        assert!(matches!(
            GaussianTask::Dense { dim: 2, rho: -0.5 }.validate(),
            Err(GroundTruthError::NotPositiveDefinite { task: "dense", .. })
        ));
        assert!(GaussianTask::Dense { dim: 2, rho: -0.5 }.true_mi().is_nan());
        assert!(matches!(
            GaussianTask::Bivariate { rho: 1.0 }.validate(),
            Err(GroundTruthError::Correlation { .. })
        ));
        assert!(matches!(
            GaussianTask::Bivariate { rho: f64::NAN }.validate(),
            Err(GroundTruthError::Correlation { .. })
        ));
        assert!(matches!(
            GaussianTask::Dense { dim: 0, rho: 0.5 }.validate(),
            Err(GroundTruthError::Dimension { min: 1, got: 0, .. })
        ));
        assert!(matches!(
            GaussianTask::TwoPair { dim: 1, rho: 0.5 }.validate(),
            Err(GroundTruthError::Dimension { min: 2, got: 1, .. })
        ));
        assert!(matches!(
            GaussianTask::Staircase { pairs: 3, mi: -1.0 }.validate(),
            Err(GroundTruthError::MutualInformation { .. })
        ));
        // So much MI per pair that rho rounds to 1: Cholesky must refuse.
        assert!(matches!(
            GaussianTask::Staircase { pairs: 1, mi: 40.0 }.validate(),
            Err(GroundTruthError::NotPositiveDefinite { .. })
        ));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(matches!(
            GaussianTask::Dense { dim: 2, rho: -0.5 }.sample(10, &mut rng, false),
            Err(GroundTruthError::NotPositiveDefinite { .. })
        ));
        assert_eq!(
            GaussianTask::Bivariate { rho: 0.5 }.sample(0, &mut rng, false),
            Err(GroundTruthError::EmptySample)
        );
    }

    // Estimator accuracy at the benchmark's protocol size N = 5000, standardised.

    #[test]
    fn ksg_accuracy_low_dimension() {
        let tasks = [
            GaussianTask::Bivariate { rho: 0.75 },
            GaussianTask::Dense { dim: 2, rho: 0.5 },
            GaussianTask::Dense { dim: 3, rho: 0.5 },
        ];
        for (s, task) in tasks.into_iter().enumerate() {
            let e = run(&Ksg::default(), task, 200 + s as u64);
            assert!(
                (e.nats - task.true_mi()).abs() < 0.05,
                "{task:?}: KSG {} vs {}",
                e.nats,
                task.true_mi()
            );
        }
        // Normal-CDF marginals: same MI.
        let task = GaussianTask::Bivariate { rho: 0.75 };
        let (x, y) = draw(task, 5000, 210, true);
        let e = Ksg::default().estimate(&x, &y).unwrap();
        assert!((e.nats - task.true_mi()).abs() < 0.05, "cdf: {}", e.nats);
    }

    #[test]
    fn ksg_underestimates_two_pair_5() {
        let task = GaussianTask::TwoPair { dim: 5, rho: 0.8 };
        for alg in [KsgAlgorithm::One, KsgAlgorithm::Two] {
            let e = run(&Ksg::default().with_algorithm(alg), task, 220);
            assert!(e.nats < task.true_mi(), "{alg:?}: {}", e.nats);
            assert!(e.nats > 0.5, "{alg:?}: {}", e.nats);
        }
    }

    #[test]
    fn gaussian_estimator_accuracy() {
        let tasks = [
            GaussianTask::Bivariate { rho: 0.75 },
            GaussianTask::Dense { dim: 2, rho: 0.5 },
            GaussianTask::Dense { dim: 3, rho: 0.5 },
            GaussianTask::Dense { dim: 5, rho: 0.5 },
        ];
        for (s, task) in tasks.into_iter().enumerate() {
            let e = run(&GaussianMi, task, 230 + s as u64);
            assert!(
                (e.nats - task.true_mi()).abs() < 0.02,
                "{task:?}: {} vs {}",
                e.nats,
                task.true_mi()
            );
        }
    }

    #[test]
    fn gaussian_estimator_high_mi_tasks() {
        // 0.02 is not a meaningful tolerance here: per informative pair the
        // estimate has sampling variance about rho^2 / N, and the estimator is
        // biased up by about dx * dy / (2N). TwoPair 5x5: sd ~0.016, bias
        // ~0.003; Staircase 20 pairs, I = 2: sd ~0.027, bias ~0.04. Tolerance:
        // bias + 3 sd.
        let cases = [
            (GaussianTask::TwoPair { dim: 5, rho: 0.8 }, 0.055),
            (GaussianTask::Staircase { pairs: 20, mi: 2.0 }, 0.125),
        ];
        for (s, (task, tol)) in cases.into_iter().enumerate() {
            let e = run(&GaussianMi, task, 240 + s as u64);
            assert!(
                (e.nats - task.true_mi()).abs() < tol,
                "{task:?}: {} vs {}",
                e.nats,
                task.true_mi()
            );
        }
    }

    #[test]
    fn histogram_accuracy_bivariate() {
        let task = GaussianTask::Bivariate { rho: 0.75 };
        let e = run(&Histogram::new(16).unwrap(), task, 250);
        assert!((e.nats - task.true_mi()).abs() < 0.05, "{}", e.nats);
    }

    #[test]
    fn search_strategy_does_not_change_ksg() {
        let (x, y) = draw(GaussianTask::Dense { dim: 2, rho: 0.5 }, 1500, 260, false);
        let values: Vec<f64> = [
            NeighbourSearch::Auto,
            NeighbourSearch::BruteForce,
            NeighbourSearch::KdTree,
        ]
        .into_iter()
        .map(|s| Ksg::default().with_search(s).estimate(&x, &y).unwrap().nats)
        .collect();
        assert_eq!(values[0], values[1]);
        assert_eq!(values[0], values[2]);
    }
}
