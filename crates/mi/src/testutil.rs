//! Test-only helpers: seeded Gaussian samples with a given covariance.
//!
//! Kept inside `mi` so the estimator tests do not depend on the ground-truth
//! module, which lives elsewhere in the host crate.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::linalg::cholesky;
use super::matrix::Matrix;

/// `n` draws of N(0, cov) (`cov` row-major d x d), as a `n x d` matrix.
pub fn gaussian(n: usize, cov: &[f64], seed: u64) -> Matrix {
    let d = (cov.len() as f64).sqrt().round() as usize;
    let l = cholesky(cov, d).expect("test covariance must be positive definite");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(n * d);
    let mut z = vec![0.0; d];
    for _ in 0..n {
        for v in z.iter_mut() {
            *v = rng.sample(StandardNormal);
        }
        for i in 0..d {
            data.push((0..=i).map(|j| l[i * d + j] * z[j]).sum());
        }
    }
    Matrix::new(n, d, data).expect("shape is consistent")
}

/// Uniform(-1, 1) entries.
pub fn uniform(n: usize, d: usize, seed: u64) -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..n * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    Matrix::new(n, d, data).expect("shape is consistent")
}

/// Bivariate normal with unit variances and correlation `rho`, as (x, y) columns.
pub fn bivariate(n: usize, rho: f64, seed: u64) -> (Matrix, Matrix) {
    let m = gaussian(n, &[1.0, rho, rho, 1.0], seed);
    split(&m, 1)
}

/// Splits columns `[0, at)` and `[at, cols)`.
pub fn split(m: &Matrix, at: usize) -> (Matrix, Matrix) {
    let a: Vec<usize> = (0..at).collect();
    let b: Vec<usize> = (at..m.cols()).collect();
    (
        m.select_columns(&a).expect("in range"),
        m.select_columns(&b).expect("in range"),
    )
}
