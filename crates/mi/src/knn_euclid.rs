//! KSG neighbours with the Euclidean norm inside each marginal: the joint distance of two
//! points is max(||x_i - x_j||_2, ||y_i - y_j||_2), as Kraskov et al. (2004) allow for any
//! norms in the marginal spaces, and the marginal counts use the same Euclidean norms.
//!
//! The search is an exact brute-force scan, O(N^2 (dx + dy)), parallel over blocks of query
//! points (each point's result is computed alone, so the estimate does not depend on the
//! thread count), and never forms an N x N matrix: memory is O(N (dx + dy + k)).
//!
//! The scan is tiled: the points are copied into panels of `LANES` points stored
//! coordinate-major, a block of queries walks a cache-resident tile of panels, and a register
//! tile of `Q` queries x `LANES` candidates accumulates squared distances one coordinate at a
//! time (AVX2 when the CPU has it). Each squared distance is still the sum over coordinates in
//! order of (q_c - x_c)^2, with no fused multiply-add, so every distance, neighbour, count and
//! estimate has the bits of the direct scalar scan kept below as the reference
//! ([`k_nearest_scalar`], [`count_within_scalar`]).

use rayon::prelude::*;

use crate::matrix::Matrix;

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// Candidates per panel, the lanes of one kernel step.
const LANES: usize = 8;
/// Queries per rayon task.
const QUERY_BLOCK: usize = 64;
/// Panels per candidate tile: 1,024 points, 64 KiB per 8 coordinates.
const TILE_PANELS: usize = 128;

/// Points in panels of `LANES`: coordinate c of point p * LANES + l is
/// `data[(p * dim + c) * LANES + l]`. Lanes past the last point are NaN, which every
/// comparison below rejects.
struct Panels {
    dim: usize,
    count: usize,
    data: Vec<f64>,
}

impl Panels {
    fn new(m: &Matrix) -> Panels {
        let (n, dim) = (m.rows(), m.cols());
        let count = n.div_ceil(LANES);
        let mut data = vec![f64::NAN; count * dim * LANES];
        for j in 0..n {
            let (p, l) = (j / LANES, j % LANES);
            for (c, &v) in m.row(j).iter().enumerate() {
                data[(p * dim + c) * LANES + l] = v;
            }
        }
        Panels { dim, count, data }
    }

    fn panel(&self, p: usize) -> &[f64] {
        &self.data[p * self.dim * LANES..(p + 1) * self.dim * LANES]
    }
}

/// Queries `rows` of `m`, coordinate-major: `out[c][q]`.
fn pack<const Q: usize>(m: &Matrix, rows: std::ops::Range<usize>) -> Vec<[f64; Q]> {
    let mut out = vec![[0.0; Q]; m.cols()];
    for (q, i) in rows.enumerate() {
        for (o, &v) in out.iter_mut().zip(m.row(i)) {
            o[q] = v;
        }
    }
    out
}

/// Squared distances from Q packed queries to the LANES points of one panel, each summed
/// over coordinates in order as [`sq_dist`] sums them.
#[inline(always)]
fn sq_panel<const Q: usize>(queries: &[[f64; Q]], panel: &[f64]) -> [[f64; LANES]; Q] {
    let mut acc = [[0.0f64; LANES]; Q];
    for (col, qs) in panel.chunks_exact(LANES).zip(queries) {
        for (a, &v) in acc.iter_mut().zip(qs) {
            for l in 0..LANES {
                let t = v - col[l];
                a[l] += t * t;
            }
        }
    }
    acc
}

/// One neighbour: joint distance and index, ordered by (distance, index).
#[derive(Clone, Copy)]
struct Near {
    dist: f64,
    index: usize,
}

impl Near {
    #[inline]
    fn before(&self, other: &Near) -> bool {
        self.dist < other.dist || (self.dist == other.dist && self.index < other.index)
    }
}

/// Inserts `cand` into the ascending list `best` (length k) if it belongs there.
#[inline]
fn insert(best: &mut [Near], cand: Near) {
    let k = best.len();
    if !cand.before(&best[k - 1]) {
        return;
    }
    let mut p = k - 1;
    while p > 0 && cand.before(&best[p - 1]) {
        best[p] = best[p - 1];
        p -= 1;
    }
    best[p] = cand;
}

/// Per point i: its k nearest neighbours in the joint space (ascending distance, ties by
/// index), as (index, joint distance, x distance, y distance).
pub(crate) fn k_nearest(x: &Matrix, y: &Matrix, k: usize) -> Vec<Vec<(usize, f64, f64, f64)>> {
    let n = x.rows();
    let (px, py) = (Panels::new(x), Panels::new(y));
    let starts: Vec<usize> = (0..n).step_by(QUERY_BLOCK).collect();
    let near: Vec<Near> = starts
        .into_par_iter()
        .flat_map_iter(|start| {
            let rows = start..(start + QUERY_BLOCK).min(n);
            knn_block(x, y, &px, &py, k, rows)
        })
        .collect();
    // The joint distance is max(sqrt(s_x), sqrt(s_y)) = sqrt(max(s_x, s_y)) (sqrt is
    // correctly rounded, so monotone); the marginal ones are recomputed for the k found.
    near.chunks_exact(k)
        .enumerate()
        .map(|(i, c)| {
            c.iter()
                .map(|nb| {
                    let dx = sq_dist(x.row(i), x.row(nb.index)).sqrt();
                    let dy = sq_dist(y.row(i), y.row(nb.index)).sqrt();
                    (nb.index, dx.max(dy), dx, dy)
                })
                .collect()
        })
        .collect()
}

fn knn_block(
    x: &Matrix,
    y: &Matrix,
    px: &Panels,
    py: &Panels,
    k: usize,
    rows: std::ops::Range<usize>,
) -> Vec<Near> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked on the line above), all this function needs.
        return unsafe { knn_block_avx2(x, y, px, py, k, rows) };
    }
    knn_block_with::<2>(x, y, px, py, k, rows)
}

/// [`knn_block`] compiled for AVX2, never FMA (products and sums rounded one by one, as in
/// the portable version), with more queries per register tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn knn_block_avx2(
    x: &Matrix,
    y: &Matrix,
    px: &Panels,
    py: &Panels,
    k: usize,
    rows: std::ops::Range<usize>,
) -> Vec<Near> {
    knn_block_with::<4>(x, y, px, py, k, rows)
}

#[inline(always)]
fn knn_block_with<const Q: usize>(
    x: &Matrix,
    y: &Matrix,
    px: &Panels,
    py: &Panels,
    k: usize,
    rows: std::ops::Range<usize>,
) -> Vec<Near> {
    let none = Near {
        dist: f64::INFINITY,
        index: usize::MAX,
    };
    let mut best = vec![none; rows.len() * k];
    let tiles: Vec<usize> = (rows.start..rows.end).step_by(Q).collect();
    let full: Vec<(Vec<[f64; Q]>, Vec<[f64; Q]>)> = tiles
        .iter()
        .filter(|&&s| s + Q <= rows.end)
        .map(|&s| (pack::<Q>(x, s..s + Q), pack::<Q>(y, s..s + Q)))
        .collect();
    for t0 in (0..px.count).step_by(TILE_PANELS) {
        let tile = t0..(t0 + TILE_PANELS).min(px.count);
        for (qi, &s) in tiles.iter().enumerate() {
            let b0 = (s - rows.start) * k;
            if let Some((qx, qy)) = full.get(qi) {
                scan_joint::<Q>(
                    qx,
                    qy,
                    px,
                    py,
                    tile.clone(),
                    s,
                    &mut best[b0..b0 + Q * k],
                    k,
                );
            } else {
                for i in s..rows.end {
                    let (qx, qy) = (pack::<1>(x, i..i + 1), pack::<1>(y, i..i + 1));
                    let b = (i - rows.start) * k;
                    scan_joint::<1>(&qx, &qy, px, py, tile.clone(), i, &mut best[b..b + k], k);
                }
            }
        }
    }
    best
}

/// Offers every point of the panels in `tile` to the k-lists of queries `first..first + Q`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scan_joint<const Q: usize>(
    qx: &[[f64; Q]],
    qy: &[[f64; Q]],
    px: &Panels,
    py: &Panels,
    tile: std::ops::Range<usize>,
    first: usize,
    best: &mut [Near],
    k: usize,
) {
    for p in tile {
        let sx = sq_panel::<Q>(qx, px.panel(p));
        let sy = sq_panel::<Q>(qy, py.panel(p));
        for q in 0..Q {
            let mut d = [0.0f64; LANES];
            for l in 0..LANES {
                // NaN padding stays NaN (and fails the test below).
                let s = if sx[q][l] > sy[q][l] {
                    sx[q][l]
                } else {
                    sy[q][l]
                };
                d[l] = s.sqrt();
            }
            let list = &mut best[q * k..(q + 1) * k];
            let bound = list[k - 1].dist;
            for (l, &dist) in d.iter().enumerate() {
                let index = p * LANES + l;
                if dist <= bound && index != first + q {
                    insert(list, Near { dist, index });
                }
            }
        }
    }
}

/// Per point i: #{j != i : ||m_j - m_i||_2 < radii[i]} (`strict`) or `<=`.
pub(crate) fn count_within(m: &Matrix, radii: &[f64], strict: bool) -> Vec<usize> {
    let n = m.rows();
    let pm = Panels::new(m);
    let starts: Vec<usize> = (0..n).step_by(QUERY_BLOCK).collect();
    starts
        .into_par_iter()
        .flat_map_iter(|start| {
            let rows = start..(start + QUERY_BLOCK).min(n);
            count_block(m, &pm, radii, strict, rows)
        })
        .collect()
}

fn count_block(
    m: &Matrix,
    pm: &Panels,
    radii: &[f64],
    strict: bool,
    rows: std::ops::Range<usize>,
) -> Vec<usize> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked on the line above), all this function needs.
        return unsafe { count_block_avx2(m, pm, radii, strict, rows) };
    }
    count_block_with::<2>(m, pm, radii, strict, rows)
}

/// [`count_block`] compiled for AVX2, never FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn count_block_avx2(
    m: &Matrix,
    pm: &Panels,
    radii: &[f64],
    strict: bool,
    rows: std::ops::Range<usize>,
) -> Vec<usize> {
    count_block_with::<4>(m, pm, radii, strict, rows)
}

/// Whether squared distance `s` is within radius `r` (`r2 = r * r`), exactly as the scalar
/// scan decides it.
#[inline(always)]
fn within(s: f64, r: f64, r2: f64, strict: bool) -> bool {
    if strict {
        s < r2 && s.sqrt() < r
    } else {
        s.sqrt() <= r
    }
}

#[inline(always)]
fn count_block_with<const Q: usize>(
    m: &Matrix,
    pm: &Panels,
    radii: &[f64],
    strict: bool,
    rows: std::ops::Range<usize>,
) -> Vec<usize> {
    let mut counts = vec![0usize; rows.len()];
    let tiles: Vec<usize> = (rows.start..rows.end).step_by(Q).collect();
    let full: Vec<Vec<[f64; Q]>> = tiles
        .iter()
        .filter(|&&s| s + Q <= rows.end)
        .map(|&s| pack::<Q>(m, s..s + Q))
        .collect();
    for t0 in (0..pm.count).step_by(TILE_PANELS) {
        let tile = t0..(t0 + TILE_PANELS).min(pm.count);
        for (qi, &s) in tiles.iter().enumerate() {
            let c0 = s - rows.start;
            if let Some(q) = full.get(qi) {
                scan_count::<Q>(
                    q,
                    pm,
                    tile.clone(),
                    &radii[s..s + Q],
                    strict,
                    &mut counts[c0..c0 + Q],
                );
            } else {
                for i in s..rows.end {
                    let q = pack::<1>(m, i..i + 1);
                    let c = i - rows.start;
                    scan_count::<1>(
                        &q,
                        pm,
                        tile.clone(),
                        &radii[i..i + 1],
                        strict,
                        &mut counts[c..c + 1],
                    );
                }
            }
        }
    }
    // Each query met itself at squared distance exactly 0.
    for (c, &r) in counts.iter_mut().zip(&radii[rows]) {
        *c -= usize::from(within(0.0, r, r * r, strict));
    }
    counts
}

#[inline(always)]
fn scan_count<const Q: usize>(
    queries: &[[f64; Q]],
    pm: &Panels,
    tile: std::ops::Range<usize>,
    radii: &[f64],
    strict: bool,
    counts: &mut [usize],
) {
    let mut r = [0.0f64; Q];
    let mut r2 = [0.0f64; Q];
    for q in 0..Q {
        r[q] = radii[q];
        r2[q] = radii[q] * radii[q];
    }
    for p in tile {
        let s = sq_panel::<Q>(queries, pm.panel(p));
        for q in 0..Q {
            let mut hits = 0usize;
            for l in 0..LANES {
                hits += usize::from(within(s[q][l], r[q], r2[q], strict));
            }
            counts[q] += hits;
        }
    }
}

/// The direct scan [`k_nearest`] replaced, kept as its reference: the same results.
pub(crate) fn k_nearest_scalar(
    x: &Matrix,
    y: &Matrix,
    k: usize,
) -> Vec<Vec<(usize, f64, f64, f64)>> {
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

/// The direct scan [`count_within`] replaced, kept as its reference: the same results.
pub(crate) fn count_within_scalar(m: &Matrix, radii: &[f64], strict: bool) -> Vec<usize> {
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

#[cfg(test)]
mod tests {
    use super::super::testutil::{split, uniform};
    use super::*;

    /// Point sets for the tiled-vs-scalar comparison: sizes on and off the panel, tile and
    /// query-block sizes, marginals from 1 to 70 coordinates, and coarse grids whose many
    /// duplicate points and equal distances exercise the ties.
    fn cases() -> Vec<(String, Matrix, Matrix)> {
        let mut out = Vec::new();
        for (n, dx, dy, seed) in [
            (5usize, 1usize, 1usize, 1u64),
            (9, 2, 3, 2),
            (203, 5, 5, 3),
            (1100, 3, 4, 4),
            (333, 70, 3, 5),
            (130, 1, 9, 6),
        ] {
            let u = uniform(n, dx + dy, seed);
            let mut m = u.clone();
            for i in 0..n {
                let x0 = m.row(i)[0];
                m.row_mut(i)[dx] += 0.8 * x0;
            }
            let (x, y) = split(&m, dx);
            out.push((format!("uniform n {n} {dx}x{dy}"), x, y));
            let g = m.map(|v| (v * 3.0).round() / 3.0);
            let (x, y) = split(&g, dx);
            out.push((format!("grid n {n} {dx}x{dy} (ties)"), x, y));
        }
        out
    }

    #[test]
    fn the_tiled_search_gives_the_scalar_scans_bits() {
        let bits = |v: &[(usize, f64, f64, f64)]| -> Vec<(usize, u64, u64, u64)> {
            v.iter()
                .map(|t| (t.0, t.1.to_bits(), t.2.to_bits(), t.3.to_bits()))
                .collect()
        };
        for (name, x, y) in cases() {
            for k in [1, 3, 5] {
                if x.rows() <= k {
                    continue;
                }
                let new = k_nearest(&x, &y, k);
                let old = k_nearest_scalar(&x, &y, k);
                assert_eq!(new.len(), old.len());
                for (i, (a, b)) in new.iter().zip(&old).enumerate() {
                    assert_eq!(bits(a), bits(b), "{name} k {k} point {i}");
                }
                // Radii that are exactly some points' distances (the k-th neighbour's, and
                // the marginal extents), strict and not.
                let eps: Vec<f64> = old.iter().map(|c| c[k - 1].1).collect();
                let ex: Vec<f64> = old
                    .iter()
                    .map(|c| c.iter().map(|t| t.2).fold(0.0, f64::max))
                    .collect();
                for (m, r) in [(&x, &eps), (&y, &eps), (&x, &ex)] {
                    for strict in [true, false] {
                        assert_eq!(
                            count_within(m, r, strict),
                            count_within_scalar(m, r, strict),
                            "{name} k {k} strict {strict}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn tiny_and_zero_radii_count_as_the_scalar_scan_does() {
        // A radius whose square underflows to 0, a zero radius, and duplicate points.
        let m = Matrix::from_rows(&[[0.0], [0.0], [1e-200], [2e-200], [1.0]]).unwrap();
        for radii in [vec![1e-170; 5], vec![0.0; 5], vec![1e-200; 5]] {
            for strict in [true, false] {
                assert_eq!(
                    count_within(&m, &radii, strict),
                    count_within_scalar(&m, &radii, strict),
                    "{radii:?} {strict}"
                );
            }
        }
    }
}
