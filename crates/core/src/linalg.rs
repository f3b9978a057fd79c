//! Dense symmetric positive-definite helpers: Cholesky, log-determinant, sample covariance.
//!
//! Matrices here are small (at most a few hundred dimensions), so a plain
//! row-major O(n^3) Cholesky is fast enough and keeps the crate free of
//! BLAS/LAPACK.

use thiserror::Error;

use super::matrix::Matrix;

/// Failure of a factorisation.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LinalgError {
    /// The flat buffer does not hold an `n x n` matrix.
    #[error("buffer of length {len} is not a {n} x {n} matrix")]
    NotSquare {
        /// Declared order.
        n: usize,
        /// Buffer length.
        len: usize,
    },
    /// A pivot was not positive (or was negligible relative to its diagonal entry).
    #[error("matrix is not positive definite: pivot {pivot} is {value:e}")]
    NotPositiveDefinite {
        /// 0-based pivot index.
        pivot: usize,
        /// Value of the failed pivot (the would-be square of `L[pivot][pivot]`).
        value: f64,
    },
}

// A pivot this small relative to its diagonal entry means the column is a
// linear combination of earlier ones up to rounding, so it is treated as
// singular instead of yielding a meaningless huge negative log-determinant.
const RELATIVE_PIVOT_TOL: f64 = 1e-12;

/// Lower-triangular Cholesky factor `L` (row-major, `n x n`) with `A = L L^T`.
///
/// Only the lower triangle of `a` is read.
pub fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>, LinalgError> {
    if n.checked_mul(n) != Some(a.len()) {
        return Err(LinalgError::NotSquare { n, len: a.len() });
    }
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let diag = a[j * n + j];
        let d = diag - dot(&l[j * n..j * n + j], &l[j * n..j * n + j]);
        if d.is_nan() || d.is_infinite() || d <= RELATIVE_PIVOT_TOL * diag.abs() {
            return Err(LinalgError::NotPositiveDefinite { pivot: j, value: d });
        }
        let ljj = d.sqrt();
        l[j * n + j] = ljj;
        for i in (j + 1)..n {
            let s = a[i * n + j] - dot(&l[i * n..i * n + j], &l[j * n..j * n + j]);
            l[i * n + j] = s / ljj;
        }
    }
    Ok(l)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// log det A for symmetric positive-definite `A`, via Cholesky.
pub fn logdet_spd(a: &[f64], n: usize) -> Result<f64, LinalgError> {
    let l = cholesky(a, n)?;
    Ok(2.0 * (0..n).map(|i| l[i * n + i].ln()).sum::<f64>())
}

/// The principal submatrix of the `n x n` matrix `a` on the given indices.
pub fn submatrix(a: &[f64], n: usize, idx: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(idx.len() * idx.len());
    for &i in idx {
        for &j in idx {
            out.push(a[i * n + j]);
        }
    }
    out
}

/// Sample covariance (`n - 1` denominator) of the columns of `m`, row-major `cols x cols`.
///
/// Columns are centred first, which keeps the accumulation accurate when
/// means are large relative to spreads.
pub fn sample_covariance(m: &Matrix) -> Vec<f64> {
    let d = m.cols();
    let means = m.column_means();
    let mut s = vec![0.0; d * d];
    let mut centred = vec![0.0; d];
    for r in m.iter_rows() {
        for ((c, &v), &mu) in centred.iter_mut().zip(r).zip(&means) {
            *c = v - mu;
        }
        // Upper triangle only; mirrored below.
        for a in 0..d {
            let ca = centred[a];
            let row = &mut s[a * d + a..a * d + d];
            for (acc, &cb) in row.iter_mut().zip(&centred[a..]) {
                *acc += ca * cb;
            }
        }
    }
    let denom = m.rows().saturating_sub(1).max(1) as f64;
    for a in 0..d {
        for b in a..d {
            let v = s[a * d + b] / denom;
            s[a * d + b] = v;
            s[b * d + a] = v;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_reconstructs() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let l = cholesky(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((v - a[i * 3 + j]).abs() < 1e-12);
            }
        }
        // det = 4*5*3 + 2*1*0.6*2 - 0.6*5*0.6 - 2*2*3 - 1*1*4 = 60 + 2.4 - 1.8 - 12 - 4
        let det: f64 = 60.0 + 2.4 - 1.8 - 12.0 - 4.0;
        assert!((logdet_spd(&a, 3).unwrap() - det.ln()).abs() < 1e-12);
    }

    #[test]
    fn cholesky_failures() {
        assert!(matches!(
            cholesky(&[1.0, 2.0, 2.0, 1.0], 2),
            Err(LinalgError::NotPositiveDefinite { pivot: 1, .. })
        ));
        // Exactly singular (duplicated variable).
        assert!(matches!(
            cholesky(&[1.0, 1.0, 1.0, 1.0], 2),
            Err(LinalgError::NotPositiveDefinite { pivot: 1, .. })
        ));
        assert!(matches!(
            cholesky(&[1.0, 0.0, 0.0], 2),
            Err(LinalgError::NotSquare { n: 2, len: 3 })
        ));
        assert!(cholesky(&[f64::NAN], 1).is_err());
        assert!(cholesky(&[-1.0], 1).is_err());
    }

    #[test]
    fn covariance_matches_hand_computation() {
        let m =
            Matrix::from_columns(&[vec![1.0, 2.0, 3.0, 4.0], vec![2.0, 1.0, 4.0, 3.0]]).unwrap();
        let s = sample_covariance(&m);
        // var = 5/3, cov = (-1.5*-0.5 + -0.5*-1.5 + 0.5*1.5 + 1.5*0.5)/3 = 3/3
        assert!((s[0] - 5.0 / 3.0).abs() < 1e-12);
        assert!((s[1] - 1.0).abs() < 1e-12);
        assert!((s[2] - 1.0).abs() < 1e-12);
        assert!((s[3] - 5.0 / 3.0).abs() < 1e-12);
    }
}
