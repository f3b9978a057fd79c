//! KSG neighbours with the Euclidean norm inside each marginal: the joint distance of two
//! points is max(||x_i - x_j||_2, ||y_i - y_j||_2), as Kraskov et al. (2004) allow for any
//! norms in the marginal spaces, and the marginal counts use the same Euclidean norms.
//!
//! The search is an exact brute-force scan, O(N^2 (dx + dy)), parallel over blocks of query
//! points (each point's result is computed alone, so the estimate does not depend on the
//! thread count), and never forms an N x N matrix: memory is O(N (dx + dy + k)).
//!
//! The scan is tiled like a matrix product: the points, centred, are copied into panels of
//! `LANES` points stored coordinate-major, a block of queries walks a cache-resident tile of
//! panels, and a register tile of `Q` queries x `LANES` candidates accumulates dot products
//! one coordinate at a time (AVX-512 or AVX2, with fused multiply-adds where the CPU has
//! them, chosen at run time: [`Isa`]). A squared distance from them,
//! |q|^2 + |x|^2 - 2 q.x, is only an approximation, so it only filters: with a proven bound on
//! its distance to the squared distance as the scalar scan rounds it (the sum over coordinates
//! in order of (q_c - x_c)^2), a candidate is dropped only when that bound shows it cannot be
//! among the k nearest or cannot be within the radius, counted without an exact check only when
//! it shows it is within, and every other case (a few candidates per query) is decided on the
//! exactly rounded distance. Every neighbour, distance and count, and so the estimate, is
//! therefore the one of the direct scalar scan kept below as the reference
//! ([`k_nearest_scalar`], [`count_within_scalar`]), bit for bit.

use rayon::prelude::*;

use crate::matrix::Matrix;

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// Candidates per panel, the lanes of one kernel step.
const LANES: usize = 8;
/// Queries per rayon task.
const QUERY_BLOCK: usize = 64;
/// Bytes of candidate panels a query block walks while they stay in cache: about a core's
/// L1 data cache, so the kernel's panel loads come from L1 (5% faster than a 128 KiB,
/// L2-resident tile at 5,000-10,000 x 32-128 on an AVX-512 Xeon; equal at 10 dimensions).
const TILE_BYTES: usize = 32 * 1024;

/// Panels per candidate tile for points of `dim` coordinates in all (x and y for the joint
/// search).
fn tile_panels(dim: usize) -> usize {
    (TILE_BYTES / (dim.max(1) * LANES * 8)).clamp(4, 1024)
}
/// Unit roundoff of f64.
const U: f64 = f64::EPSILON / 2.0;
/// Relative slack of the thresholds below (far above a few units of roundoff, far below any
/// spread of distances that matters for speed).
const SLACK: f64 = 1e-12;

/// Points centred on their column means in panels of `LANES`: coordinate c of point
/// p * LANES + l is `data[(p * dim + c) * LANES + l]`, its squared norm `norms[p * LANES + l]`.
/// Lanes past the last point are NaN, which fails every test below that could accept one.
struct Panels {
    dim: usize,
    count: usize,
    centre: Vec<f64>,
    data: Vec<f64>,
    norms: Vec<f64>,
    /// `|s' - s| <= tol (|q|^2 + |x|^2)` for the approximation s' and the scalar scan's s.
    tol: f64,
    /// All norms finite (no overflow): otherwise the callers use the scalar scan.
    finite: bool,
}

impl Panels {
    fn new(m: &Matrix) -> Panels {
        let (n, dim) = (m.rows(), m.cols());
        let mut centre = vec![0.0; dim];
        for r in m.iter_rows() {
            centre.iter_mut().zip(r).for_each(|(c, v)| *c += v);
        }
        centre.iter_mut().for_each(|c| *c /= n.max(1) as f64);
        let count = n.div_ceil(LANES);
        let mut data = vec![f64::NAN; count * dim * LANES];
        let mut norms = vec![f64::NAN; count * LANES];
        let mut finite = true;
        for (j, slot) in norms.iter_mut().take(n).enumerate() {
            let (p, l) = (j / LANES, j % LANES);
            let mut norm = 0.0;
            for (c, (&v, &mu)) in m.row(j).iter().zip(&centre).enumerate() {
                let v = v - mu;
                data[(p * dim + c) * LANES + l] = v;
                norm += v * v;
            }
            finite &= norm.is_finite() && norm < 1e300;
            *slot = norm;
        }
        // The approximation's error (dot products and norms: about (2d + 3) u (|q|^2 + |x|^2),
        // the centring's rounding: 4 u, the scalar scan's own rounding: (2d + 4) u), doubled.
        let tol = 8.0 * (dim as f64 + 4.0) * U;
        Panels {
            dim,
            count,
            centre,
            data,
            norms,
            tol,
            finite,
        }
    }

    fn panel(&self, p: usize) -> &[f64] {
        &self.data[p * self.dim * LANES..(p + 1) * self.dim * LANES]
    }

    fn panel_norms(&self, p: usize) -> &[f64] {
        &self.norms[p * LANES..(p + 1) * LANES]
    }

    /// Queries `rows` of `m` (the points of these panels), centred, coordinate-major
    /// (`out[c][q]`), and their squared norms.
    fn pack<const Q: usize>(
        &self,
        m: &Matrix,
        rows: std::ops::Range<usize>,
    ) -> (Vec<[f64; Q]>, [f64; Q]) {
        let mut out = vec![[0.0; Q]; m.cols()];
        let mut norms = [0.0; Q];
        for (q, i) in rows.enumerate() {
            norms[q] = self.norms[i];
            for ((o, &v), &mu) in out.iter_mut().zip(m.row(i)).zip(&self.centre) {
                o[q] = v - mu;
            }
        }
        (out, norms)
    }

    /// For Q packed queries and the LANES points of panel `p`: the approximate squared
    /// distances and their error bounds.
    #[inline(always)]
    fn approx<const Q: usize, const F: bool>(
        &self,
        queries: &[[f64; Q]],
        qnorms: &[f64; Q],
        p: usize,
    ) -> ([[f64; LANES]; Q], [[f64; LANES]; Q]) {
        let panel = self.panel(p);
        let mut dot = [[0.0f64; LANES]; Q];
        for (col, qs) in panel.chunks_exact(LANES).zip(queries) {
            for (a, &v) in dot.iter_mut().zip(qs) {
                for l in 0..LANES {
                    a[l] = if F {
                        v.mul_add(col[l], a[l])
                    } else {
                        a[l] + v * col[l]
                    };
                }
            }
        }
        let xn = self.panel_norms(p);
        let mut err = [[0.0f64; LANES]; Q];
        for q in 0..Q {
            for l in 0..LANES {
                let both = qnorms[q] + xn[l];
                err[q][l] = self.tol * both;
                dot[q][l] = both - 2.0 * dot[q][l];
            }
        }
        (dot, err)
    }
}

/// One neighbour (joint distance, index), ordered by (distance, index), and its insertion
/// into a k-list: the max-norm search's, shared.
use super::knn::{insert, Neighbour as Near};

const NONE: Near = Near::NONE;

/// Per point i: its k nearest neighbours in the joint space (ascending distance, ties by
/// index), as (index, joint distance, x distance, y distance).
///
/// Each pair is looked at once, as in [`count_within`]: a pair found near enough for either
/// point's list is offered to both. The lists of each rayon task are merged at the end; the
/// k first under the total order (distance, index) do not depend on the order of the offers.
pub(crate) fn k_nearest(x: &Matrix, y: &Matrix, k: usize) -> Vec<Vec<(usize, f64, f64, f64)>> {
    k_nearest_on(x, y, k, Isa::detect())
}

/// [`k_nearest`] with the filters compiled for `isa` (which the CPU must have).
fn k_nearest_on(x: &Matrix, y: &Matrix, k: usize, isa: Isa) -> Vec<Vec<(usize, f64, f64, f64)>> {
    let n = x.rows();
    let (px, py) = (Panels::new(x), Panels::new(y));
    if !(px.finite && py.finite) {
        return k_nearest_scalar(x, y, k);
    }
    let padded = px.count * LANES;
    let blocks = n.div_ceil(QUERY_BLOCK);
    // First each block against itself: every point's k nearest within its block, whose
    // k-th distance bounds the true one and so filters the pairs across blocks from the start.
    let mut seed = vec![NONE; padded * k];
    seed.par_chunks_mut(QUERY_BLOCK * k)
        .enumerate()
        .for_each(|(b, lists)| knn_block(isa, x, y, &px, &py, k, b, Pass::Own(lists), &[]));
    let seed_limit: Vec<f64> = seed.chunks_exact(k).map(|l| limit(l, k)).collect();
    let mut near = (0..blocks.div_ceil(2))
        .into_par_iter()
        .fold(
            || vec![NONE; padded * k],
            |mut acc, t| {
                knn_block(
                    isa,
                    x,
                    y,
                    &px,
                    &py,
                    k,
                    t,
                    Pass::Later(&mut acc),
                    &seed_limit,
                );
                if blocks - 1 - t != t {
                    let b = blocks - 1 - t;
                    knn_block(
                        isa,
                        x,
                        y,
                        &px,
                        &py,
                        k,
                        b,
                        Pass::Later(&mut acc),
                        &seed_limit,
                    );
                }
                acc
            },
        )
        .reduce(|| vec![NONE; padded * k], |a, b| merge(a, &b, k));
    near = merge(near, &seed, k);
    near[..n * k]
        .chunks_exact(k)
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

/// Offers the lists `b` to the lists `a` (k entries per point).
fn merge(mut a: Vec<Near>, b: &[Near], k: usize) -> Vec<Near> {
    for (la, lb) in a.chunks_exact_mut(k).zip(b.chunks_exact(k)) {
        for &c in lb.iter().filter(|c| c.index != usize::MAX) {
            insert(la, c);
        }
    }
    a
}

/// A bound on the squared joint distance of any candidate that could still enter `list`:
/// entering needs d = sqrt(max(s_x, s_y)) <= B, the k-th distance, so max(s_x, s_y) <=
/// B^2 (1 + 3u), below this.
#[inline(always)]
fn limit(list: &[Near], k: usize) -> f64 {
    let b = list[k - 1].dist;
    b * b * (1.0 + SLACK)
}

/// What one call of [`knn_block`] does: the block against itself, into the block's lists, or
/// against every later block, both ways, into lists for every point.
enum Pass<'a> {
    Own(&'a mut [Near]),
    Later(&'a mut [Near]),
}

#[allow(clippy::too_many_arguments)]
fn knn_block(
    isa: Isa,
    x: &Matrix,
    y: &Matrix,
    px: &Panels,
    py: &Panels,
    k: usize,
    block: usize,
    pass: Pass,
    seed: &[f64],
) {
    match isa {
        // SAFETY (all three): the callers' `isa` comes from `Isa::detect` or
        // `Isa::available`, which found the features each function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Fma => unsafe { knn_block_avx512(x, y, px, py, k, block, pass, seed) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { knn_block_avx2_fma(x, y, px, py, k, block, pass, seed) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { knn_block_avx2(x, y, px, py, k, block, pass, seed) },
        _ => knn_block_with::<2, false>(x, y, px, py, k, block, pass, seed),
    }
}

/// Defines `fn $name` as `$generic::<Q, F>` compiled with `$features` enabled, so the
/// generic filter code is instantiated once per instruction set and picked at run time.
macro_rules! compiled_for {
    ($(#[$doc:meta])* $name:ident = $generic:ident::<$q:literal, $fma:literal>
        with $features:literal ($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            $generic::<$q, $fma>($($arg),*)
        }
    };
}

compiled_for! {
    /// [`knn_block`] compiled for AVX-512F with fused multiply-adds: a panel's `LANES`
    /// candidates fill one register.
    knn_block_avx512 = knn_block_with::<4, true> with "avx512f,fma" (
        x: &Matrix, y: &Matrix, px: &Panels, py: &Panels, k: usize, block: usize, pass: Pass,
        seed: &[f64],
    )
}
compiled_for! {
    /// [`knn_block`] compiled for AVX2 with fused multiply-adds.
    knn_block_avx2_fma = knn_block_with::<4, true> with "avx2,fma" (
        x: &Matrix, y: &Matrix, px: &Panels, py: &Panels, k: usize, block: usize, pass: Pass,
        seed: &[f64],
    )
}
compiled_for! {
    /// [`knn_block`] compiled for AVX2, with more queries per register tile. (Only the
    /// filter runs there; the decisions are made on the scalar scan's distances either way.)
    knn_block_avx2 = knn_block_with::<4, false> with "avx2" (
        x: &Matrix, y: &Matrix, px: &Panels, py: &Panels, k: usize, block: usize, pass: Pass,
        seed: &[f64],
    )
}

/// An instruction set the filters are compiled for. Only the filters' speed depends on it:
/// their error bound holds on every path (a fused multiply-add rounds once where a multiply
/// and an add round twice, so the dot products' error is no larger), and the decisions are
/// made on the scalar scan's distances, so neighbours and counts are the same bits on every
/// path (tested for each one the CPU has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Isa {
    Avx512Fma,
    Avx2Fma,
    Avx2,
    Portable,
}

impl Isa {
    /// Every path this CPU can run, widest first.
    fn available() -> Vec<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let (avx512, avx2, fma) = (has!("avx512f"), has!("avx2"), has!("fma"));
            let mut out = Vec::new();
            if avx512 && fma {
                out.push(Isa::Avx512Fma);
            }
            if avx2 && fma {
                out.push(Isa::Avx2Fma);
            }
            if avx2 {
                out.push(Isa::Avx2);
            }
            out.push(Isa::Portable);
            out
        }
        #[cfg(not(target_arch = "x86_64"))]
        vec![Isa::Portable]
    }

    /// The widest path, or the widest at most `CBOUND_KSG_ISA` (`avx512`, `avx2-fma`,
    /// `avx2`, `portable`: for benchmarks that compare paths on one machine).
    fn detect() -> Isa {
        let cap = match std::env::var("CBOUND_KSG_ISA").as_deref() {
            Ok("avx2-fma") => 1,
            Ok("avx2") => 2,
            Ok("portable") => 3,
            _ => 0,
        };
        let rank = |i: &Isa| match i {
            Isa::Avx512Fma => 0,
            Isa::Avx2Fma => 1,
            Isa::Avx2 => 2,
            Isa::Portable => 3,
        };
        Isa::available()
            .into_iter()
            .find(|i| rank(i) >= cap)
            .unwrap_or(Isa::Portable)
    }
}

type Packed<const Q: usize> = (Vec<[f64; Q]>, [f64; Q]);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn knn_block_with<const Q: usize, const F: bool>(
    x: &Matrix,
    y: &Matrix,
    px: &Panels,
    py: &Panels,
    k: usize,
    block: usize,
    pass: Pass,
    seed: &[f64],
) {
    let n = x.rows();
    let rows = block * QUERY_BLOCK..((block + 1) * QUERY_BLOCK).min(n);
    let full: Vec<(Packed<Q>, Packed<Q>)> = (rows.start..rows.end)
        .step_by(Q)
        .filter(|&s| s + Q <= rows.end)
        .map(|s| (px.pack::<Q>(x, s..s + Q), py.pack::<Q>(y, s..s + Q)))
        .collect();
    let single: Vec<(Packed<1>, Packed<1>)> = (rows.start + full.len() * Q..rows.end)
        .map(|i| (px.pack::<1>(x, i..i + 1), py.pack::<1>(y, i..i + 1)))
        .collect();
    let joint = Joint { x, y, px, py, k };
    let own = block * QUERY_BLOCK / LANES..((block + 1) * QUERY_BLOCK / LANES).min(px.count);
    match pass {
        Pass::Own(lists) => {
            for (qi, (qx, qy)) in full.iter().enumerate() {
                let b = qi * Q * k;
                let s = rows.start + qi * Q;
                joint.scan::<Q, F>(qx, qy, own.clone(), s, &mut lists[b..b + Q * k]);
            }
            for (qi, (qx, qy)) in single.iter().enumerate() {
                let b = (full.len() * Q + qi) * k;
                let i = rows.start + full.len() * Q + qi;
                joint.scan::<1, F>(qx, qy, own.clone(), i, &mut lists[b..b + k]);
            }
        }
        Pass::Later(acc) => {
            let later = own.end..px.count;
            let step = tile_panels(px.dim + py.dim);
            for t0 in later.clone().step_by(step) {
                let tile = t0..(t0 + step).min(later.end);
                for (qi, (qx, qy)) in full.iter().enumerate() {
                    let s = rows.start + qi * Q;
                    joint.both_ways::<Q, F>(qx, qy, tile.clone(), s, acc, seed);
                }
                for (qi, (qx, qy)) in single.iter().enumerate() {
                    let i = rows.start + full.len() * Q + qi;
                    joint.both_ways::<1, F>(qx, qy, tile.clone(), i, acc, seed);
                }
            }
        }
    }
}

struct Joint<'a> {
    x: &'a Matrix,
    y: &'a Matrix,
    px: &'a Panels,
    py: &'a Panels,
    k: usize,
}

impl Joint<'_> {
    /// Offers every point of the panels in `tile` to the k-lists of queries `first..first + Q`.
    #[inline(always)]
    fn scan<const Q: usize, const F: bool>(
        &self,
        qx: &Packed<Q>,
        qy: &Packed<Q>,
        tile: std::ops::Range<usize>,
        first: usize,
        best: &mut [Near],
    ) {
        let k = self.k;
        for p in tile {
            let (sx, ex) = self.px.approx::<Q, F>(&qx.0, &qx.1, p);
            let (sy, ey) = self.py.approx::<Q, F>(&qy.0, &qy.1, p);
            for q in 0..Q {
                let list = &mut best[q * k..(q + 1) * k];
                // A candidate enters only if its joint distance d = sqrt(max(s_x, s_y)) is at
                // most the k-th one, B, which needs max(s_x, s_y) <= B^2 (1 + 3u) < limit.
                let b = list[k - 1].dist;
                let limit = b * b * (1.0 + SLACK);
                let mut any = false;
                let mut low = [0.0f64; LANES];
                for l in 0..LANES {
                    let (a, c) = (sx[q][l] - ex[q][l], sy[q][l] - ey[q][l]);
                    // NaN (padding) stays NaN and fails the test.
                    low[l] = if a > c { a } else { c };
                    any |= low[l] <= limit;
                }
                if !any {
                    continue;
                }
                let i = first + q;
                for (l, &lo) in low.iter().enumerate() {
                    let j = p * LANES + l;
                    if lo <= list[k - 1].dist * list[k - 1].dist * (1.0 + SLACK) && j != i {
                        let dx = sq_dist(self.x.row(i), self.x.row(j)).sqrt();
                        let dy = sq_dist(self.y.row(i), self.y.row(j)).sqrt();
                        insert(
                            list,
                            Near {
                                dist: dx.max(dy),
                                index: j,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Offers every pair of a query `first..first + Q` and a point of the panels in `tile`
    /// (all after the queries' block) to both lists, `acc` holding every point's.
    #[inline(always)]
    fn both_ways<const Q: usize, const F: bool>(
        &self,
        qx: &Packed<Q>,
        qy: &Packed<Q>,
        tile: std::ops::Range<usize>,
        first: usize,
        acc: &mut [Near],
        seed: &[f64],
    ) {
        let k = self.k;
        // The tighter of the list's own bound and the block-seeded one.
        let bound = |acc: &[Near], i: usize| limit(&acc[i * k..(i + 1) * k], k).min(seed[i]);
        for p in tile {
            let (sx, ex) = self.px.approx::<Q, F>(&qx.0, &qx.1, p);
            let (sy, ey) = self.py.approx::<Q, F>(&qy.0, &qy.1, p);
            // The points' bounds as they stand (they only tighten, so using these is safe).
            let mut limit_j = [0.0f64; LANES];
            for (l, lj) in limit_j.iter_mut().enumerate() {
                *lj = bound(acc, p * LANES + l);
            }
            for q in 0..Q {
                let i = first + q;
                let limit_i = bound(acc, i);
                let mut any = false;
                let mut low = [0.0f64; LANES];
                for l in 0..LANES {
                    let (a, c) = (sx[q][l] - ex[q][l], sy[q][l] - ey[q][l]);
                    low[l] = if a > c { a } else { c };
                    any |= (low[l] <= limit_i) | (low[l] <= limit_j[l]);
                }
                if !any {
                    continue;
                }
                for (l, &lo) in low.iter().enumerate() {
                    if lo <= bound(acc, i) || lo <= limit_j[l] {
                        let j = p * LANES + l;
                        // Symmetric to the last bit: (a - b)^2 = (b - a)^2.
                        let dx = sq_dist(self.x.row(i), self.x.row(j)).sqrt();
                        let dy = sq_dist(self.y.row(i), self.y.row(j)).sqrt();
                        let dist = dx.max(dy);
                        insert(&mut acc[i * k..(i + 1) * k], Near { dist, index: j });
                        insert(&mut acc[j * k..(j + 1) * k], Near { dist, index: i });
                    }
                }
            }
        }
    }
}

/// Per point i: #{j != i : ||m_j - m_i||_2 < radii[i]} (`strict`) or `<=`.
///
/// Each pair is looked at once: block b of queries scans itself one-sidedly and every later
/// block both ways (the approximation and the exactly rounded squared distance are the same
/// for (i, j) and (j, i)), so the work is half a full scan. Counts are integers, so their sums
/// do not depend on how rayon splits the work.
pub(crate) fn count_within(m: &Matrix, radii: &[f64], strict: bool) -> Vec<usize> {
    count_within_on(m, radii, strict, Isa::detect())
}

/// [`count_within`] with the filters compiled for `isa` (which the CPU must have).
fn count_within_on(m: &Matrix, radii: &[f64], strict: bool, isa: Isa) -> Vec<usize> {
    let n = m.rows();
    let pm = Panels::new(m);
    if !pm.finite {
        return count_within_scalar(m, radii, strict);
    }
    let padded = pm.count * LANES;
    let mut all: Vec<Radius> = radii.iter().map(|&r| Radius::new(r, strict)).collect();
    all.resize(padded, Radius::new(0.0, strict));
    let blocks = n.div_ceil(QUERY_BLOCK);
    // Early blocks meet more later ones: task t takes blocks t and blocks - 1 - t.
    let mut counts = (0..blocks.div_ceil(2))
        .into_par_iter()
        .fold(
            || vec![0usize; padded],
            |mut acc, t| {
                count_block(isa, m, &pm, &all, strict, t, &mut acc);
                if blocks - 1 - t != t {
                    count_block(isa, m, &pm, &all, strict, blocks - 1 - t, &mut acc);
                }
                acc
            },
        )
        .reduce(
            || vec![0usize; padded],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    counts.truncate(n);
    // Each query met itself, at squared distance exactly 0, and was decided as that.
    for (c, &r) in counts.iter_mut().zip(radii) {
        *c -= usize::from(within(0.0, r, r * r, strict));
    }
    counts
}

fn count_block(
    isa: Isa,
    m: &Matrix,
    pm: &Panels,
    all: &[Radius],
    strict: bool,
    block: usize,
    acc: &mut [usize],
) {
    match isa {
        // SAFETY (all three): as in `knn_block`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Fma => unsafe { count_block_avx512(m, pm, all, strict, block, acc) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { count_block_avx2_fma(m, pm, all, strict, block, acc) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { count_block_avx2(m, pm, all, strict, block, acc) },
        _ => count_block_with::<2, false>(m, pm, all, strict, block, acc),
    }
}

compiled_for! {
    /// [`count_block`] compiled for AVX-512F with fused multiply-adds.
    count_block_avx512 = count_block_with::<4, true> with "avx512f,fma" (
        m: &Matrix, pm: &Panels, all: &[Radius], strict: bool, block: usize, acc: &mut [usize],
    )
}
compiled_for! {
    /// [`count_block`] compiled for AVX2 with fused multiply-adds.
    count_block_avx2_fma = count_block_with::<4, true> with "avx2,fma" (
        m: &Matrix, pm: &Panels, all: &[Radius], strict: bool, block: usize, acc: &mut [usize],
    )
}
compiled_for! {
    /// [`count_block`] compiled for AVX2.
    count_block_avx2 = count_block_with::<4, false> with "avx2" (
        m: &Matrix, pm: &Panels, all: &[Radius], strict: bool, block: usize, acc: &mut [usize],
    )
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

/// A radius as two thresholds on the squared distance s: [`within`] holds for every s < `lo`
/// and fails for every s > `hi`.
#[derive(Clone, Copy)]
struct Radius {
    r: f64,
    r2: f64,
    lo: f64,
    hi: f64,
}

impl Radius {
    fn new(r: f64, strict: bool) -> Radius {
        let r2 = r * r;
        // Relative thresholds need r^2 normal; below that, decide exactly (or, for `<=`, use
        // that s > 1e-278 means sqrt(s) > 1e-139 > r).
        let normal = r2 >= 1e-280;
        let lo = if normal {
            r2 * (1.0 - SLACK)
        } else {
            f64::NEG_INFINITY
        };
        let hi = match (strict, normal) {
            (true, _) => r2,
            (false, true) => r2 * (1.0 + SLACK),
            (false, false) => 1e-278,
        };
        Radius { r, r2, lo, hi }
    }

    /// Whether a squared distance known only to lie in [`lower`, `upper`] (NaN for
    /// padding) is neither surely within nor surely outside.
    #[inline(always)]
    fn unsure(&self, upper: f64, lower: f64) -> bool {
        let inside = upper < self.lo;
        let outside = lower > self.hi;
        !inside && !outside
    }
}

#[inline(always)]
fn count_block_with<const Q: usize, const F: bool>(
    m: &Matrix,
    pm: &Panels,
    all: &[Radius],
    strict: bool,
    block: usize,
    acc: &mut [usize],
) {
    let n = m.rows();
    let rows = block * QUERY_BLOCK..((block + 1) * QUERY_BLOCK).min(n);
    let full: Vec<(Packed<Q>, [Radius; Q])> = (rows.start..rows.end)
        .step_by(Q)
        .filter(|&s| s + Q <= rows.end)
        .map(|s| {
            let r = std::array::from_fn(|q| all[s + q]);
            (pm.pack::<Q>(m, s..s + Q), r)
        })
        .collect();
    let single: Vec<(Packed<1>, [Radius; 1])> = (rows.start + full.len() * Q..rows.end)
        .map(|i| (pm.pack::<1>(m, i..i + 1), [all[i]]))
        .collect();
    let scan = Counting { m, pm, strict, all };
    // The block's own panels (QUERY_BLOCK is a whole number of panels), one way.
    let own = block * QUERY_BLOCK / LANES..((block + 1) * QUERY_BLOCK / LANES).min(pm.count);
    let later = own.end..pm.count;
    for (qi, (q, r)) in full.iter().enumerate() {
        let c = rows.start + qi * Q;
        scan.one_way::<Q, F>(q, r, own.clone(), c, &mut acc[c..c + Q]);
    }
    for (qi, (q, r)) in single.iter().enumerate() {
        let c = rows.start + full.len() * Q + qi;
        scan.one_way::<1, F>(q, r, own.clone(), c, &mut acc[c..c + 1]);
    }
    let step = tile_panels(pm.dim);
    for t0 in later.clone().step_by(step) {
        let tile = t0..(t0 + step).min(later.end);
        for (qi, (q, r)) in full.iter().enumerate() {
            scan.both_ways::<Q, F>(q, r, tile.clone(), rows.start + qi * Q, acc);
        }
        for (qi, (q, r)) in single.iter().enumerate() {
            let c = rows.start + full.len() * Q + qi;
            scan.both_ways::<1, F>(q, r, tile.clone(), c, acc);
        }
    }
}

struct Counting<'a> {
    m: &'a Matrix,
    pm: &'a Panels,
    strict: bool,
    all: &'a [Radius],
}

impl Counting<'_> {
    /// Counts for queries `first..first + Q` the points of `tile` within their radii.
    #[inline(always)]
    fn one_way<const Q: usize, const F: bool>(
        &self,
        queries: &Packed<Q>,
        radii: &[Radius; Q],
        tile: std::ops::Range<usize>,
        first: usize,
        counts: &mut [usize],
    ) {
        let n = self.m.rows();
        for p in tile {
            let (s, e) = self.pm.approx::<Q, F>(&queries.0, &queries.1, p);
            for q in 0..Q {
                let r = radii[q];
                let mut hits = 0usize;
                let mut unsure = false;
                for l in 0..LANES {
                    let inside = s[q][l] + e[q][l] < r.lo;
                    let outside = s[q][l] - e[q][l] > r.hi;
                    hits += usize::from(inside);
                    unsure |= !inside & !outside;
                }
                if unsure {
                    let i = first + q;
                    for l in 0..LANES {
                        let j = p * LANES + l;
                        let inside = s[q][l] + e[q][l] < r.lo;
                        let outside = s[q][l] - e[q][l] > r.hi;
                        if !inside && !outside && j < n {
                            let d2 = sq_dist(self.m.row(i), self.m.row(j));
                            hits += usize::from(within(d2, r.r, r.r2, self.strict));
                        }
                    }
                }
                counts[q] += hits;
            }
        }
    }

    /// As [`Counting::one_way`], and also counts each query for the points of `tile`
    /// within their own radii (`acc` indexed by point).
    #[inline(always)]
    fn both_ways<const Q: usize, const F: bool>(
        &self,
        queries: &Packed<Q>,
        radii: &[Radius; Q],
        tile: std::ops::Range<usize>,
        first: usize,
        acc: &mut [usize],
    ) {
        let n = self.m.rows();
        for p in tile {
            let (s, e) = self.pm.approx::<Q, F>(&queries.0, &queries.1, p);
            let rj = &self.all[p * LANES..(p + 1) * LANES];
            let mut jhits = [0usize; LANES];
            for q in 0..Q {
                let ri = radii[q];
                let mut hits = 0usize;
                let mut unsure = false;
                for l in 0..LANES {
                    let (upper, lower) = (s[q][l] + e[q][l], s[q][l] - e[q][l]);
                    let (in_i, out_i) = (upper < ri.lo, lower > ri.hi);
                    let (in_j, out_j) = (upper < rj[l].lo, lower > rj[l].hi);
                    hits += usize::from(in_i);
                    jhits[l] += usize::from(in_j);
                    unsure |= (!in_i & !out_i) | (!in_j & !out_j);
                }
                if unsure {
                    let i = first + q;
                    for l in 0..LANES {
                        let j = p * LANES + l;
                        let (upper, lower) = (s[q][l] + e[q][l], s[q][l] - e[q][l]);
                        let unsure_i = ri.unsure(upper, lower);
                        let unsure_j = rj[l].unsure(upper, lower);
                        if (unsure_i || unsure_j) && j < n {
                            // (a - b)^2 = (b - a)^2 exactly, so this is also j's distance to i.
                            let d2 = sq_dist(self.m.row(i), self.m.row(j));
                            if unsure_i {
                                hits += usize::from(within(d2, ri.r, ri.r2, self.strict));
                            }
                            if unsure_j {
                                jhits[l] += usize::from(within(d2, rj[l].r, rj[l].r2, self.strict));
                            }
                        }
                    }
                }
                acc[first + q] += hits;
            }
            for (a, h) in acc[p * LANES..(p + 1) * LANES].iter_mut().zip(jhits) {
                *a += h;
            }
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
            (261, 3, 4, 4),
            (300, 70, 3, 5),
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
            // A large offset and heavy tails: the centred dot products lose digits, the
            // filter's error bound must still hold.
            let h = m.map(|v| 1e6 + v + 0.3 / (v + 1e-3));
            let (x, y) = split(&h, dx);
            out.push((format!("offset heavy-tailed n {n} {dx}x{dy}"), x, y));
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
                let old = k_nearest_scalar(&x, &y, k);
                for &isa in &Isa::available() {
                    let new = k_nearest_on(&x, &y, k, isa);
                    assert_eq!(new.len(), old.len());
                    for (i, (a, b)) in new.iter().zip(&old).enumerate() {
                        assert_eq!(bits(a), bits(b), "{name} k {k} point {i} {isa:?}");
                    }
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
                        let want = count_within_scalar(m, r, strict);
                        for &isa in &Isa::available() {
                            assert_eq!(
                                count_within_on(m, r, strict, isa),
                                want,
                                "{name} k {k} strict {strict} {isa:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn squares_past_the_float_range_take_the_scalar_scan() {
        let u = uniform(40, 4, 9).map(|v| v * 1e160);
        let (x, y) = split(&u, 2);
        assert_eq!(
            format!("{:?}", k_nearest(&x, &y, 3)),
            format!("{:?}", k_nearest_scalar(&x, &y, 3))
        );
        let r = vec![3e159; 40];
        assert_eq!(
            count_within(&x, &r, true),
            count_within_scalar(&x, &r, true)
        );
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
