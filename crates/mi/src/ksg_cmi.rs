//! Conditional mutual information I(X;Y|Z) by k nearest neighbours (Frenzel and Pompe, 2007).
//!
//! Continuous Z: eps_i is the max-norm distance to the k-th neighbour of point i
//! in the joint (x, y, z) space; n_xz(i), n_yz(i), n_z(i) count the other points
//! strictly within eps_i in the (x, z), (y, z) and z spaces, and
//! I(X;Y|Z) = psi(k) - <psi(n_xz + 1) + psi(n_yz + 1) - psi(n_z + 1)>.
//!
//! Discrete Z (class labels): the KSG estimate (algorithm 1) is computed
//! within each class and the results are averaged with weights n_c / N.
//! This is not an ad-hoc choice: it is exactly the Frenzel-Pompe estimator
//! with an infinite distance between different classes (then n_z(i) = n_c - 1
//! and the k-NN ball never leaves the class), which the tests check. Every
//! class needs at least k + 1 samples; smaller classes are an error rather
//! than silently dropped, because dropping them would bias the weights.
//!
//! Like KSG, this is a point estimate (not a bound); it underestimates
//! large conditional MI in high dimension.

use std::collections::HashMap;
use std::hash::Hash;

use super::error::MiError;
use super::knn::{count_within, k_nearest, NeighbourSearch};
use super::ksg::{check_enough, check_k, ksg_core, KsgAlgorithm, KsgMetric};
use super::matrix::Matrix;
use super::special::digamma;
use super::{check_one, Direction, MiEstimate};

/// Frenzel-Pompe conditional-MI estimator configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KsgCmi {
    /// Number of neighbours (>= 1).
    pub k: usize,
    /// Neighbour-search strategy (affects speed only).
    pub search: NeighbourSearch,
}

impl Default for KsgCmi {
    fn default() -> Self {
        KsgCmi {
            k: 3,
            search: NeighbourSearch::Auto,
        }
    }
}

impl KsgCmi {
    /// Estimator with `k` neighbours; `k` must be at least 1.
    pub fn new(k: usize) -> Result<Self, MiError> {
        check_k(k)?;
        Ok(KsgCmi {
            k,
            ..KsgCmi::default()
        })
    }

    /// I(X;Y|Z) in nats for continuous Z (rows of `z` paired with rows of `x`, `y`).
    pub fn estimate_continuous(
        &self,
        x: &Matrix,
        y: &Matrix,
        z: &Matrix,
    ) -> Result<MiEstimate, MiError> {
        check_k(self.k)?;
        check_rows(x, y, z.rows(), "z")?;
        check_one(x, "x")?;
        check_one(y, "y")?;
        check_one(z, "z")?;
        let n = x.rows();
        check_enough(n, self.k, "KSG conditional MI")?;
        let k = self.k;
        let xz = x.hstack(z)?;
        let yz = y.hstack(z)?;
        let xyz = xz.hstack(y)?;
        let nb = k_nearest(&xyz, k, self.search);
        let eps: Vec<f64> = nb.chunks_exact(k).map(|c| c[k - 1].dist).collect();
        let n_xz = count_within(&xz, &eps, true, self.search);
        let n_yz = count_within(&yz, &eps, true, self.search);
        let n_z = count_within(z, &eps, true, self.search);
        let sum: f64 = (0..n)
            .map(|i| {
                digamma(n_xz[i] as f64 + 1.0) + digamma(n_yz[i] as f64 + 1.0)
                    - digamma(n_z[i] as f64 + 1.0)
            })
            .sum();
        let nats = digamma(k as f64) - sum / n as f64;
        Ok(MiEstimate {
            nats,
            n,
            dims: (x.cols(), y.cols()),
            direction: Direction::Estimate,
            note: Some(format!(
                "Frenzel-Pompe conditional MI given {}-d continuous z, k = {k}, max-norm",
                z.cols()
            )),
        })
    }

    /// I(X;Y|Z) in nats for discrete Z: per-class KSG weighted by class frequency.
    pub fn estimate_discrete<L: Hash + Eq>(
        &self,
        x: &Matrix,
        y: &Matrix,
        z: &[L],
    ) -> Result<MiEstimate, MiError> {
        check_k(self.k)?;
        check_rows(x, y, z.len(), "z")?;
        check_one(x, "x")?;
        check_one(y, "y")?;
        let n = x.rows();
        let mut classes: Vec<Vec<usize>> = Vec::new();
        let mut slot: HashMap<&L, usize> = HashMap::new();
        for (i, label) in z.iter().enumerate() {
            let c = *slot.entry(label).or_insert_with(|| {
                classes.push(Vec::new());
                classes.len() - 1
            });
            classes[c].push(i);
        }
        if classes.len() < 2 {
            return Err(MiError::SingleClass { which: "z", n });
        }
        let mut nats = 0.0;
        for (c, rows) in classes.iter().enumerate() {
            if rows.len() < self.k + 1 {
                return Err(MiError::TooFewSamples {
                    context: format!(
                        "class #{c} of z (first seen at row {}) with k = {}",
                        rows[0], self.k
                    ),
                    needed: self.k + 1,
                    got: rows.len(),
                });
            }
            let xc = x.select_rows(rows)?;
            let yc = y.select_rows(rows)?;
            let core = ksg_core(
                &xc,
                &yc,
                self.k,
                KsgAlgorithm::One,
                self.search,
                KsgMetric::Max,
            )?;
            nats += rows.len() as f64 / n as f64 * core.nats;
        }
        Ok(MiEstimate {
            nats,
            n,
            dims: (x.cols(), y.cols()),
            direction: Direction::Estimate,
            note: Some(format!(
                "per-class KSG (algorithm 1, k = {}) over {} classes of z, weighted by class frequency",
                self.k,
                classes.len()
            )),
        })
    }
}

fn check_rows(x: &Matrix, y: &Matrix, z_rows: usize, z_name: &'static str) -> Result<(), MiError> {
    if x.rows() != y.rows() {
        return Err(MiError::RowMismatch {
            a_name: "x",
            a_rows: x.rows(),
            b_name: "y",
            b_rows: y.rows(),
        });
    }
    if x.rows() != z_rows {
        return Err(MiError::RowMismatch {
            a_name: "x",
            a_rows: x.rows(),
            b_name: z_name,
            b_rows: z_rows,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::linalg::{logdet_spd, submatrix};
    use super::super::testutil::{gaussian, split};
    use super::*;

    /// Closed-form I(X;Y|Z) for a Gaussian with covariance `s` over (x, y, z) indices.
    fn gaussian_cmi(s: &[f64], d: usize, x: &[usize], y: &[usize], z: &[usize]) -> f64 {
        let cat = |a: &[usize], b: &[usize]| [a, b].concat();
        let ld = |idx: &[usize]| logdet_spd(&submatrix(s, d, idx), idx.len()).unwrap();
        let xyz = [x, y, z].concat();
        0.5 * (ld(&cat(x, z)) + ld(&cat(y, z)) - ld(z) - ld(&xyz))
    }

    #[test]
    fn conditionally_independent_gives_zero() {
        // X = Z + e1, Y = Z + e2: covariance over (x, y, z).
        let s = [2.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0];
        assert!(gaussian_cmi(&s, 3, &[0], &[1], &[2]).abs() < 1e-12);
        let m = gaussian(2000, &s, 21);
        let (x, yz) = split(&m, 1);
        let (y, z) = split(&yz, 1);
        let e = KsgCmi::default().estimate_continuous(&x, &y, &z).unwrap();
        assert!(e.nats.abs() < 0.03, "{}", e.nats);
    }

    #[test]
    fn gaussian_closed_form_nonzero() {
        let s = [1.0, 0.7, 0.5, 0.7, 1.0, 0.4, 0.5, 0.4, 1.0];
        let truth = gaussian_cmi(&s, 3, &[0], &[1], &[2]);
        // 1/2 log(0.75 * 0.84 / 0.38)
        assert!((truth - 0.5 * (0.75f64 * 0.84 / 0.38).ln()).abs() < 1e-12);
        let m = gaussian(3000, &s, 22);
        let (x, yz) = split(&m, 1);
        let (y, z) = split(&yz, 1);
        let e = KsgCmi::default().estimate_continuous(&x, &y, &z).unwrap();
        assert!((e.nats - truth).abs() < 0.04, "{} vs {truth}", e.nats);
    }

    #[test]
    fn discrete_z_per_class() {
        let rhos = [0.0, 0.5, 0.8];
        let per = 1000;
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        let mut z = Vec::new();
        for (c, &r) in rhos.iter().enumerate() {
            let m = gaussian(per, &[1.0, r, r, 1.0], 30 + c as u64);
            for row in m.iter_rows() {
                xs.push(row[0]);
                ys.push(row[1]);
                z.push(c as u32);
            }
        }
        let truth: f64 = rhos.iter().map(|r| -0.5 * (1.0 - r * r).ln()).sum::<f64>() / 3.0;
        let x = Matrix::from_column(&xs);
        let y = Matrix::from_column(&ys);
        let e = KsgCmi::default().estimate_discrete(&x, &y, &z).unwrap();
        assert!((e.nats - truth).abs() < 0.04, "{} vs {truth}", e.nats);
    }

    #[test]
    fn discrete_equals_frenzel_pompe_with_separated_classes() {
        // Classes encoded as far-apart z values: the continuous estimator then
        // never mixes classes, and must agree with the per-class estimator.
        let m = gaussian(600, &[1.0, 0.6, 0.6, 1.0], 40);
        let (x, y) = split(&m, 1);
        let labels: Vec<u8> = (0..600).map(|i| (i % 3) as u8).collect();
        let zc = Matrix::from_column(
            &labels
                .iter()
                .map(|&l| f64::from(l) * 1e6)
                .collect::<Vec<_>>(),
        );
        for search in [NeighbourSearch::Auto, NeighbourSearch::BruteForce] {
            let est = KsgCmi { k: 4, search };
            let a = est.estimate_discrete(&x, &y, &labels).unwrap().nats;
            let b = est.estimate_continuous(&x, &y, &zc).unwrap().nats;
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn bad_inputs() {
        let m = gaussian(20, &[1.0, 0.5, 0.5, 1.0], 1);
        let (x, y) = split(&m, 1);
        let z = Matrix::zeros(19, 1);
        assert!(matches!(
            KsgCmi::default().estimate_continuous(&x, &y, &z),
            Err(MiError::RowMismatch {
                b_name: "z",
                a_rows: 20,
                b_rows: 19,
                ..
            })
        ));
        let one = vec![7u8; 20];
        assert_eq!(
            KsgCmi::default().estimate_discrete(&x, &y, &one),
            Err(MiError::SingleClass { which: "z", n: 20 })
        );
        let mut small = vec![0u8; 20];
        small[5] = 1;
        small[6] = 1;
        assert!(matches!(
            KsgCmi::default().estimate_discrete(&x, &y, &small),
            Err(MiError::TooFewSamples {
                needed: 4,
                got: 2,
                ..
            })
        ));
        let (x3, y3) = split(&gaussian(3, &[1.0, 0.5, 0.5, 1.0], 2), 1);
        assert!(matches!(
            KsgCmi::default().estimate_continuous(&x3, &y3, &Matrix::zeros(3, 1)),
            Err(MiError::TooFewSamples {
                needed: 4,
                got: 3,
                ..
            })
        ));
        assert!(KsgCmi::new(0).is_err());
    }
}
