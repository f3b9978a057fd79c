//! Plug-in MI from an equal-width histogram, optionally with the Miller-Madow correction.
//!
//! Each column is cut into `bins` equal-width bins over its observed range;
//! the joint cell of a sample is the tuple of its bins. Then
//! I = H(X) + H(Y) - H(X,Y) from cell frequencies. Two biases pull in
//! opposite directions: the plug-in entropy is biased low by about
//! (m - 1) / (2N) for m occupied cells, which makes the MI biased high by
//! about (m_x + m_y - m_xy - 1) / (2N) (Miller-Madow removes this leading
//! term); coarse bins lose information (data processing), which biases the MI
//! low. The result is a point estimate, not a bound. Only sensible in low
//! dimension: the grid has bins^(d_x + d_y) cells, and the estimator refuses
//! grids above `max_cells`.

use super::error::MiError;
use super::matrix::Matrix;
use super::{check_pair, Direction, Estimator, MiEstimate};

/// Histogram estimator configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Histogram {
    /// Bins per dimension (>= 2).
    pub bins: usize,
    /// Apply the Miller-Madow correction to each entropy.
    pub miller_madow: bool,
    /// Largest allowed number of joint cells, bins^(d_x + d_y).
    pub max_cells: f64,
}

/// Default cell limit: beyond this the grid is hopelessly sparse for any realistic N.
pub const DEFAULT_MAX_CELLS: f64 = 1e7;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bins: 16,
            miller_madow: true,
            max_cells: DEFAULT_MAX_CELLS,
        }
    }
}

impl Histogram {
    /// `bins` per dimension with the Miller-Madow correction.
    pub fn new(bins: usize) -> Result<Self, MiError> {
        check_bins(bins)?;
        Ok(Histogram {
            bins,
            ..Histogram::default()
        })
    }
}

fn check_bins(bins: usize) -> Result<(), MiError> {
    if bins < 2 {
        return Err(MiError::InvalidParameter {
            name: "bins",
            reason: format!("need at least 2 bins per dimension, got {bins}"),
        });
    }
    Ok(())
}

/// Cell index of every row of `m` (mixed radix over its columns).
fn cells(m: &Matrix, bins: usize, which: &'static str) -> Result<Vec<u64>, MiError> {
    let mut code = vec![0u64; m.rows()];
    let mut radix = 1u64;
    for j in 0..m.cols() {
        let col = m.column(j).unwrap_or_default();
        let lo = col.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if hi <= lo {
            return Err(MiError::ConstantColumn {
                which,
                column: j,
                value: lo,
            });
        }
        let width = hi - lo;
        for (c, &v) in code.iter_mut().zip(&col) {
            // The maximum lands exactly on `bins`; fold it into the last bin.
            let b = (((v - lo) / width) * bins as f64).floor() as u64;
            *c += b.min(bins as u64 - 1) * radix;
        }
        radix *= bins as u64;
    }
    Ok(code)
}

/// Plug-in entropy (nats) of a list of cell codes and the number of occupied cells.
pub(crate) fn entropy_of_codes(codes: &mut [u64]) -> (f64, usize) {
    let n = codes.len() as f64;
    codes.sort_unstable();
    let mut h = 0.0;
    let mut occupied = 0usize;
    let mut start = 0usize;
    while start < codes.len() {
        let mut end = start + 1;
        while end < codes.len() && codes[end] == codes[start] {
            end += 1;
        }
        let c = (end - start) as f64;
        h -= c / n * (c / n).ln();
        occupied += 1;
        start = end;
    }
    (h, occupied)
}

impl Estimator for Histogram {
    fn name(&self) -> &'static str {
        if self.miller_madow {
            "histogram-mm"
        } else {
            "histogram"
        }
    }

    fn direction(&self) -> Direction {
        Direction::Estimate
    }

    fn estimate(&self, x: &Matrix, y: &Matrix) -> Result<MiEstimate, MiError> {
        check_bins(self.bins)?;
        let n = check_pair(x, y)?;
        if n < 2 {
            return Err(MiError::TooFewSamples {
                context: "histogram estimator".into(),
                needed: 2,
                got: n,
            });
        }
        let dims = x.cols() + y.cols();
        let grid = (self.bins as f64).powi(dims as i32);
        // Cell codes are u64, so the grid must stay far below 2^64 whatever max_cells says.
        if grid > self.max_cells || grid > 1e18 {
            return Err(MiError::TooManyCells {
                bins: self.bins,
                dims,
                cells: grid,
                limit: self.max_cells,
            });
        }
        let mut cx = cells(x, self.bins, "x")?;
        let mut cy = cells(y, self.bins, "y")?;
        let y_cells = (self.bins as u64).pow(y.cols() as u32);
        let mut cxy: Vec<u64> = cx.iter().zip(&cy).map(|(&a, &b)| a * y_cells + b).collect();
        let (hx, mx) = entropy_of_codes(&mut cx);
        let (hy, my) = entropy_of_codes(&mut cy);
        let (hxy, mxy) = entropy_of_codes(&mut cxy);
        let mut nats = hx + hy - hxy;
        if self.miller_madow {
            // (mx-1) + (my-1) - (mxy-1), each over 2N.
            nats += (mx as f64 + my as f64 - mxy as f64 - 1.0) / (2.0 * n as f64);
        }
        Ok(MiEstimate {
            nats,
            n,
            dims: (x.cols(), y.cols()),
            direction: Direction::Estimate,
            note: Some(format!(
                "equal-width histogram, {} bins per dimension, {mxy} occupied joint cells{}",
                self.bins,
                if self.miller_madow {
                    ", Miller-Madow corrected"
                } else {
                    ", plug-in (biased high by about (B-1)^2/(2N))"
                }
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{bivariate, split, uniform};
    use super::*;

    #[test]
    fn exact_on_discrete_grid() {
        // x uniform over 4 bins, y = x: I = H(X) = ln 4 when every cell is hit equally.
        let xs: Vec<f64> = (0..4000).map(|i| (i % 4) as f64).collect();
        let x = Matrix::from_column(&xs);
        let h = Histogram {
            bins: 4,
            miller_madow: false,
            ..Histogram::default()
        };
        let e = h.estimate(&x, &x).unwrap();
        assert!((e.nats - 4f64.ln()).abs() < 1e-12);
        // Miller-Madow: mx = my = mxy = 4, correction (4 + 4 - 4 - 1)/(2N).
        let mm = Histogram::new(4).unwrap().estimate(&x, &x).unwrap();
        assert!((mm.nats - 4f64.ln() - 3.0 / 8000.0).abs() < 1e-12);
    }

    #[test]
    fn independent_is_near_zero_with_correction() {
        let u = uniform(5000, 2, 3);
        let (x, y) = split(&u, 1);
        let plug = Histogram {
            bins: 16,
            miller_madow: false,
            ..Histogram::default()
        }
        .estimate(&x, &y)
        .unwrap()
        .nats;
        let mm = Histogram::new(16).unwrap().estimate(&x, &y).unwrap().nats;
        // Plug-in bias about (B-1)^2/(2N) = 0.0225; Miller-Madow removes most of it.
        assert!(plug > 0.01, "{plug}");
        assert!(mm.abs() < 0.01, "{mm}");
    }

    #[test]
    fn bad_inputs() {
        let (x, y) = bivariate(100, 0.5, 1);
        assert!(matches!(
            Histogram::new(1),
            Err(MiError::InvalidParameter { name: "bins", .. })
        ));
        let wide = uniform(100, 8, 2);
        assert!(matches!(
            Histogram::default().estimate(&wide, &y),
            Err(MiError::TooManyCells { dims: 9, .. })
        ));
        let c = Matrix::from_column(&[1.0; 100]);
        assert!(matches!(
            Histogram::default().estimate(&x, &c),
            Err(MiError::ConstantColumn {
                which: "y",
                column: 0,
                ..
            })
        ));
        let one = Matrix::from_column(&[1.0]);
        assert!(matches!(
            Histogram::default().estimate(&one, &one),
            Err(MiError::TooFewSamples {
                needed: 2,
                got: 1,
                ..
            })
        ));
    }
}
