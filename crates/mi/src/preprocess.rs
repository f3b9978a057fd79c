//! Preprocessing before estimation: standardisation, tie-breaking jitter,
//! asinh compression, constant-column removal and seeded subsampling.
//!
//! k-NN estimators use max-norm distances, so columns must share a scale
//! (standardise) and heavy tails should be tamed (asinh); duplicate points
//! give zero neighbour distances, so discrete-valued data need a tiny
//! deterministic jitter. Everything random here is seeded (ChaCha8), so a
//! pipeline run is reproducible bit for bit.

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::MiError;
use super::matrix::Matrix;

/// Default jitter amplitude relative to each column's standard deviation:
/// far below any meaningful scale, far above f64 resolution for standardised data.
pub const DEFAULT_JITTER: f64 = 1e-10;

/// Columns shifted to mean 0 and scaled to standard deviation 1 (see [`Matrix::standardized`]).
pub fn standardize(m: &Matrix) -> Result<Matrix, MiError> {
    m.standardized()
}

/// Adds seeded uniform noise in `[-a_j, a_j]` with `a_j = relative * std_j` to column `j`,
/// breaking exact ties without moving any point measurably.
///
/// Constant columns are left unchanged: they add 0 to every max-norm
/// distance, so they create no ties that matter.
pub fn jitter(m: &Matrix, relative: f64, seed: u64) -> Result<Matrix, MiError> {
    if !(relative.is_finite() && relative >= 0.0) {
        return Err(MiError::InvalidParameter {
            name: "relative",
            reason: format!("jitter amplitude must be finite and >= 0, got {relative}"),
        });
    }
    m.check_finite("matrix")?;
    let amp: Vec<f64> = m.column_stds().iter().map(|s| s * relative).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = m.clone();
    for i in 0..out.rows() {
        for (v, &a) in out.row_mut(i).iter_mut().zip(&amp) {
            let u: f64 = rng.random_range(-1.0..=1.0);
            *v += a * u;
        }
    }
    Ok(out)
}

/// Element-wise asinh: linear near 0, logarithmic in the tails.
pub fn asinh(m: &Matrix) -> Matrix {
    m.map(f64::asinh)
}

/// Drops constant columns; returns the reduced matrix and the dropped column indices.
pub fn drop_constant_columns(m: &Matrix) -> (Matrix, Vec<usize>) {
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    for j in 0..m.cols() {
        let first = m.get(0, j);
        if m.iter_rows().all(|r| Some(r[j]) == first) {
            dropped.push(j);
        } else {
            keep.push(j);
        }
    }
    // Indices come from 0..cols, so selection cannot fail; fall back to a clone defensively.
    let reduced = m.select_columns(&keep).unwrap_or_else(|_| m.clone());
    (reduced, dropped)
}

/// `m` distinct indices from `0..n`, uniformly without replacement, sorted ascending.
pub fn subsample_indices(n: usize, m: usize, seed: u64) -> Result<Vec<usize>, MiError> {
    if m > n {
        return Err(MiError::InvalidParameter {
            name: "m",
            reason: format!("cannot draw {m} of {n} samples without replacement"),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = sample(&mut rng, n, m).into_vec();
    idx.sort_unstable();
    Ok(idx)
}

/// The same `m` randomly chosen rows (without replacement) of `x` and `y`.
pub fn subsample(x: &Matrix, y: &Matrix, m: usize, seed: u64) -> Result<(Matrix, Matrix), MiError> {
    if x.rows() != y.rows() {
        return Err(MiError::RowMismatch {
            a_name: "x",
            a_rows: x.rows(),
            b_name: "y",
            b_rows: y.rows(),
        });
    }
    let idx = subsample_indices(x.rows(), m, seed)?;
    Ok((x.select_rows(&idx)?, y.select_rows(&idx)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_deterministic_tiny_and_breaks_ties() {
        let m =
            Matrix::from_columns(&[vec![1.0, 1.0, 2.0, 2.0], vec![3.0, 3.0, 3.0, 3.0]]).unwrap();
        let a = jitter(&m, DEFAULT_JITTER, 9).unwrap();
        let b = jitter(&m, DEFAULT_JITTER, 9).unwrap();
        let c = jitter(&m, DEFAULT_JITTER, 10).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let col0 = a.column(0).unwrap();
        assert_ne!(col0[0], col0[1]);
        for (u, v) in col0.iter().zip([1.0, 1.0, 2.0, 2.0]) {
            assert!((u - v).abs() < 1e-9);
        }
        // The constant column is untouched.
        assert_eq!(a.column(1).unwrap(), vec![3.0; 4]);
        assert!(jitter(&m, -1.0, 0).is_err());
        assert!(jitter(&m, f64::NAN, 0).is_err());
    }

    #[test]
    fn subsampling_is_seeded_and_without_replacement() {
        let a = subsample_indices(100, 50, 1).unwrap();
        assert_eq!(a, subsample_indices(100, 50, 1).unwrap());
        assert_ne!(a, subsample_indices(100, 50, 2).unwrap());
        let mut d = a.clone();
        d.dedup();
        assert_eq!(d.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(subsample_indices(10, 11, 0).is_err());
        let x = Matrix::from_column(&(0..10).map(f64::from).collect::<Vec<_>>());
        let (sx, sy) = subsample(&x, &x, 4, 3).unwrap();
        assert_eq!(sx, sy);
        assert_eq!(sx.rows(), 4);
        assert!(subsample(&x, &Matrix::zeros(9, 1), 4, 3).is_err());
    }

    #[test]
    fn asinh_and_constant_columns() {
        let m = Matrix::from_columns(&[vec![0.0, 1.0], vec![5.0, 5.0], vec![-1.0, 2.0]]).unwrap();
        let (r, dropped) = drop_constant_columns(&m);
        assert_eq!(dropped, vec![1]);
        assert_eq!(r.cols(), 2);
        let a = asinh(&m);
        assert!((a.get(1, 0).unwrap() - 1f64.asinh()).abs() < 1e-15);
        assert!(standardize(&m).is_err());
        assert!(standardize(&r).is_ok());
    }
}
