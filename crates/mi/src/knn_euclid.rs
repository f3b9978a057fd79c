//! KSG neighbours with the Euclidean norm inside each marginal: the joint distance of two
//! points is max(||x_i - x_j||_2, ||y_i - y_j||_2), as Kraskov et al. (2004) allow for any
//! norms in the marginal spaces, and the marginal counts use the same Euclidean norms.
//!
//! The search is an exact brute-force scan, O(N^2 (dx + dy)), parallel over query points
//! (each point's result is computed alone, so the estimate does not depend on the thread
//! count). The max-norm path ([`crate::knn`]) has faster indexes; this one is here for
//! correctness in many dimensions, where Euclidean balls fit the data better than cubes.

use rayon::prelude::*;

use crate::matrix::Matrix;

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// Per point i: its k nearest neighbours in the joint space (ascending distance, ties by
/// index), as (index, joint distance, x distance, y distance).
pub(crate) fn k_nearest(x: &Matrix, y: &Matrix, k: usize) -> Vec<Vec<(usize, f64, f64, f64)>> {
    let n = x.rows();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mut best: Vec<(usize, f64, f64, f64)> = Vec::with_capacity(k + 1);
            for j in (0..n).filter(|&j| j != i) {
                let dx = sq_dist(x.row(i), x.row(j)).sqrt();
                let dy = sq_dist(y.row(i), y.row(j)).sqrt();
                let d = dx.max(dy);
                let worse = |b: &(usize, f64, f64, f64)| d < b.1 || (d == b.1 && j < b.0);
                if best.len() < k || best.last().is_some_and(worse) {
                    let at = best.partition_point(|b| !worse(b));
                    best.insert(at, (j, d, dx, dy));
                    best.truncate(k);
                }
            }
            best
        })
        .collect()
}

/// Per point i: #{j != i : ||m_j - m_i||_2 < radii[i]} (`strict`) or `<=`.
pub(crate) fn count_within(m: &Matrix, radii: &[f64], strict: bool) -> Vec<usize> {
    let n = m.rows();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let r2 = radii[i] * radii[i];
            (0..n)
                .filter(|&j| j != i)
                .filter(|&j| {
                    let d2 = sq_dist(m.row(i), m.row(j));
                    // Compared as distances, so a radius computed with sqrt is met exactly.
                    if strict {
                        d2 < r2 && d2.sqrt() < radii[i]
                    } else {
                        d2.sqrt() <= radii[i]
                    }
                })
                .count()
        })
        .collect()
}
