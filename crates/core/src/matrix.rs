//! A small owned, row-major `f64` matrix: one row per sample, one column per feature.
//!
//! The estimators need contiguous rows (k-NN distance kernels stream them) and
//! nothing more, so this stays deliberately minimal instead of pulling in a
//! linear-algebra crate.

use super::error::MiError;

/// Row-major matrix of `f64`; row `i` holds sample `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    data: Vec<f64>,
    rows: usize,
    cols: usize,
}

impl Matrix {
    /// Wraps flat row-major data; `data.len()` must equal `rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self, MiError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(MiError::ShapeMismatch {
                rows,
                cols,
                len: data.len(),
            });
        }
        Ok(Self { data, rows, cols })
    }

    /// A `rows x cols` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            data: vec![0.0; rows * cols],
            rows,
            cols,
        }
    }

    /// Builds a matrix from rows of equal length.
    pub fn from_rows<R: AsRef<[f64]>>(rows: &[R]) -> Result<Self, MiError> {
        let cols = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(rows.len() * cols);
        for (index, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != cols {
                return Err(MiError::Ragged {
                    kind: "row",
                    index,
                    expected: cols,
                    got: row.len(),
                });
            }
            data.extend_from_slice(row);
        }
        Ok(Self {
            data,
            rows: rows.len(),
            cols,
        })
    }

    /// Builds a matrix from columns of equal length (one column per feature).
    pub fn from_columns<C: AsRef<[f64]>>(columns: &[C]) -> Result<Self, MiError> {
        let cols = columns.len();
        let rows = columns.first().map_or(0, |c| c.as_ref().len());
        for (index, c) in columns.iter().enumerate() {
            if c.as_ref().len() != rows {
                return Err(MiError::Ragged {
                    kind: "column",
                    index,
                    expected: rows,
                    got: c.as_ref().len(),
                });
            }
        }
        let mut data = vec![0.0; rows * cols];
        for (j, c) in columns.iter().enumerate() {
            for (i, &v) in c.as_ref().iter().enumerate() {
                data[i * cols + j] = v;
            }
        }
        Ok(Self { data, rows, cols })
    }

    /// A single-column matrix.
    pub fn from_column(values: &[f64]) -> Self {
        Self {
            data: values.to_vec(),
            rows: values.len(),
            cols: 1,
        }
    }

    /// Number of rows (samples).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// True when the matrix has no entries.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The flat row-major data.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// Consumes the matrix, returning the flat row-major data.
    pub fn into_vec(self) -> Vec<f64> {
        self.data
    }

    /// Entry `(row, col)`, or `None` outside the matrix.
    pub fn get(&self, row: usize, col: usize) -> Option<f64> {
        if row < self.rows && col < self.cols {
            Some(self.data[row * self.cols + col])
        } else {
            None
        }
    }

    /// Row `i` as a slice.
    ///
    /// # Panics
    /// If `i >= self.rows()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Row `i` as a mutable slice.
    ///
    /// # Panics
    /// If `i >= self.rows()`, like slice indexing.
    pub fn row_mut(&mut self, i: usize) -> &mut [f64] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Iterator over rows.
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f64]> + '_ {
        // chunks_exact(0) panics, so a zero-column matrix yields `rows` empty slices by hand.
        let cols = self.cols.max(1);
        let n = if self.cols == 0 { 0 } else { self.rows };
        self.data.chunks_exact(cols).take(n)
    }

    /// Copy of column `j`, or `None` when out of range.
    pub fn column(&self, j: usize) -> Option<Vec<f64>> {
        if j >= self.cols {
            return None;
        }
        Some(self.iter_rows().map(|r| r[j]).collect())
    }

    /// Applies `f` to every entry.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Matrix {
        Matrix {
            data: self.data.iter().map(|&v| f(v)).collect(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Concatenates columns: `[self | other]`, row by row.
    pub fn hstack(&self, other: &Matrix) -> Result<Matrix, MiError> {
        if self.rows != other.rows {
            return Err(MiError::RowMismatch {
                a_name: "left",
                a_rows: self.rows,
                b_name: "right",
                b_rows: other.rows,
            });
        }
        let cols = self.cols + other.cols;
        let mut data = Vec::with_capacity(self.rows * cols);
        for i in 0..self.rows {
            data.extend_from_slice(self.row(i));
            data.extend_from_slice(other.row(i));
        }
        Ok(Matrix {
            data,
            rows: self.rows,
            cols,
        })
    }

    /// The rows listed in `indices`, in that order (repeats allowed).
    pub fn select_rows(&self, indices: &[usize]) -> Result<Matrix, MiError> {
        let mut data = Vec::with_capacity(indices.len() * self.cols);
        for &i in indices {
            if i >= self.rows {
                return Err(MiError::IndexOutOfRange {
                    kind: "row",
                    index: i,
                    len: self.rows,
                });
            }
            data.extend_from_slice(self.row(i));
        }
        Ok(Matrix {
            data,
            rows: indices.len(),
            cols: self.cols,
        })
    }

    /// The columns listed in `indices`, in that order.
    pub fn select_columns(&self, indices: &[usize]) -> Result<Matrix, MiError> {
        if let Some(&bad) = indices.iter().find(|&&j| j >= self.cols) {
            return Err(MiError::IndexOutOfRange {
                kind: "column",
                index: bad,
                len: self.cols,
            });
        }
        let mut data = Vec::with_capacity(self.rows * indices.len());
        for r in self.iter_rows() {
            data.extend(indices.iter().map(|&j| r[j]));
        }
        Ok(Matrix {
            data,
            rows: self.rows,
            cols: indices.len(),
        })
    }

    /// Fails on the first NaN or infinity, naming `which`, the column and the row.
    pub fn check_finite(&self, which: &'static str) -> Result<(), MiError> {
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(p) => Err(MiError::NonFinite {
                which,
                row: p / self.cols,
                column: p % self.cols,
                value: self.data[p],
            }),
        }
    }

    /// Fails on the first column whose values are all equal.
    pub fn check_no_constant_column(&self, which: &'static str) -> Result<(), MiError> {
        if self.rows == 0 {
            return Ok(());
        }
        let first = self.row(0);
        for (j, &v0) in first.iter().enumerate() {
            if self.iter_rows().all(|r| r[j] == v0) {
                return Err(MiError::ConstantColumn {
                    which,
                    column: j,
                    value: v0,
                });
            }
        }
        Ok(())
    }

    /// Column means.
    pub fn column_means(&self) -> Vec<f64> {
        let mut m = vec![0.0; self.cols];
        for r in self.iter_rows() {
            for (a, &v) in m.iter_mut().zip(r) {
                *a += v;
            }
        }
        let n = self.rows.max(1) as f64;
        m.iter_mut().for_each(|a| *a /= n);
        m
    }

    /// Column standard deviations with the `n - 1` denominator (0 for fewer than 2 rows).
    pub fn column_stds(&self) -> Vec<f64> {
        let means = self.column_means();
        let mut s = vec![0.0; self.cols];
        for r in self.iter_rows() {
            for ((a, &v), &m) in s.iter_mut().zip(r).zip(&means) {
                *a += (v - m) * (v - m);
            }
        }
        let denom = self.rows.saturating_sub(1).max(1) as f64;
        s.iter_mut().for_each(|a| *a = (*a / denom).sqrt());
        s
    }

    /// Each column shifted to mean 0 and scaled to standard deviation 1.
    ///
    /// Fails on non-finite entries and on constant columns (they cannot be
    /// scaled; drop them with `preprocess::drop_constant_columns`).
    pub fn standardized(&self) -> Result<Matrix, MiError> {
        self.check_finite("matrix")?;
        self.check_no_constant_column("matrix")?;
        let means = self.column_means();
        let stds = self.column_stds();
        let mut out = self.clone();
        for r in out.data.chunks_exact_mut(self.cols.max(1)) {
            for ((v, &m), &s) in r.iter_mut().zip(&means).zip(&stds) {
                *v = (*v - m) / s;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_agree() {
        let a = Matrix::from_rows(&[vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]).unwrap();
        let b = Matrix::from_columns(&[vec![1.0, 3.0, 5.0], vec![2.0, 4.0, 6.0]]).unwrap();
        let c = Matrix::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.row(1), &[3.0, 4.0]);
        assert_eq!(a.column(1), Some(vec![2.0, 4.0, 6.0]));
        assert_eq!(a.get(2, 0), Some(5.0));
        assert_eq!(a.get(3, 0), None);
        assert_eq!(a.iter_rows().count(), 3);
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(matches!(
            Matrix::new(2, 2, vec![1.0; 3]),
            Err(MiError::ShapeMismatch { len: 3, .. })
        ));
        assert!(matches!(
            Matrix::from_rows(&[vec![1.0, 2.0], vec![3.0]]),
            Err(MiError::Ragged {
                kind: "row",
                index: 1,
                expected: 2,
                got: 1
            })
        ));
        assert!(matches!(
            Matrix::from_columns(&[vec![1.0, 2.0], vec![3.0]]),
            Err(MiError::Ragged { kind: "column", .. })
        ));
        let a = Matrix::zeros(2, 2);
        assert!(a.select_rows(&[0, 2]).is_err());
        assert!(a.select_columns(&[5]).is_err());
        assert!(a.hstack(&Matrix::zeros(3, 1)).is_err());
    }

    #[test]
    fn standardized_has_zero_mean_unit_std() {
        let a = Matrix::from_columns(&[vec![1.0, 2.0, 3.0, 10.0], vec![-5.0, 0.0, 2.0, 2.5]])
            .unwrap()
            .standardized()
            .unwrap();
        for m in a.column_means() {
            assert!(m.abs() < 1e-12);
        }
        for s in a.column_stds() {
            assert!((s - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn standardized_rejects_constant_and_nan() {
        let c = Matrix::from_columns(&[vec![1.0, 2.0, 3.0], vec![7.0, 7.0, 7.0]]).unwrap();
        assert_eq!(
            c.standardized(),
            Err(MiError::ConstantColumn {
                which: "matrix",
                column: 1,
                value: 7.0
            })
        );
        let n = Matrix::from_rows(&[vec![1.0, 2.0], vec![f64::NAN, 1.0]]).unwrap();
        assert!(matches!(
            n.check_finite("x"),
            Err(MiError::NonFinite {
                which: "x",
                row: 1,
                column: 0,
                ..
            })
        ));
    }

    #[test]
    fn hstack_and_select() {
        let a = Matrix::from_column(&[1.0, 2.0]);
        let b = Matrix::from_rows(&[vec![3.0, 4.0], vec![5.0, 6.0]]).unwrap();
        let h = a.hstack(&b).unwrap();
        assert_eq!(h.as_slice(), &[1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        assert_eq!(h.select_rows(&[1]).unwrap().as_slice(), &[2.0, 5.0, 6.0]);
        assert_eq!(
            h.select_columns(&[2, 0]).unwrap().as_slice(),
            &[4.0, 1.0, 6.0, 2.0]
        );
    }
}
