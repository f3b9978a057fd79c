//! Exact max-norm k-nearest-neighbour search and radius counting for the k-NN estimators.
//!
//! Two strategies with identical results:
//! - brute force, parallel over blocks of query points, tiled so a block of
//!   queries reuses a cache-resident tile of candidates, with conservative
//!   fixed-point filters (AVX-512BW or AVX2 where the CPU has it, chosen at run time, else
//!   portable loops that auto-vectorise; same integers either way, see
//!   `BruteIndex` and `Kernel`) and an exact `f64` decision for whatever they
//!   cannot settle; in low dimension the points are stored in a chunk-aligned k-d
//!   order so whole 64-point chunks are skipped by their bounding boxes, and radius
//!   counts compute 64 exact distances at a time instead of filtering (`ExactColumns`);
//! - a k-d tree with bounding boxes (and a sorted array for 1-d radius counts)
//!   for low dimension, where pruning beats scanning.
//!
//! Ties are broken by sample index, so "the k nearest" is always well defined:
//! neighbours are ordered by `(distance, index)`. No N x N matrix is ever formed.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use super::matrix::Matrix;

/// Which neighbour-search strategy the k-NN estimators use. Results are identical;
/// only speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NeighbourSearch {
    /// Sorted array for 1-d counts, k-d tree in low dimension, brute force
    /// above; the crossover (measured, release build, Gaussian data, N up to
    /// 20,000) is 8 dimensions for k-NN search and 4 for radius counts.
    #[default]
    Auto,
    /// Always scan all points.
    BruteForce,
    /// Always use the k-d tree, whatever the dimension.
    KdTree,
}

/// One neighbour of a query point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Neighbour {
    pub dist: f64,
    pub index: usize,
}

impl Neighbour {
    pub(crate) const NONE: Neighbour = Neighbour {
        dist: f64::INFINITY,
        index: usize::MAX,
    };

    #[inline]
    fn before(&self, other: &Neighbour) -> bool {
        self.dist < other.dist || (self.dist == other.dist && self.index < other.index)
    }
}

/// Inserts `cand` into the ascending list `best` (fixed length k) if it belongs there.
#[inline]
pub(crate) fn insert(best: &mut [Neighbour], cand: Neighbour) {
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

#[derive(Clone, Copy)]
enum Plan {
    Brute,
    Tree,
    Sorted1d,
}

fn plan(search: NeighbourSearch, dim: usize, counting: bool) -> Plan {
    // Crossovers measured on Gaussian data (release build): radius counts
    // with KSG-sized radii lose their tree advantage sooner than k-NN search,
    // and both move to higher dimension as n grows. Measured again for
    // whole max-norm KSG runs (`ksg_maxnorm_bench`, 2 cores, 2026-12-03):
    // at 10 and 12 joint dimensions (5 and 6 per marginal) brute force beat
    // the tree by 1.2-2x at N = 5,000-7,000 and tied at 10,000, so the size
    // at which the tree takes over there is 8,000 (it was 4,000). With the AVX2 filters
    // (2026-12-04, same example, load 5-7) brute force beat `Auto` 1.7-2.7x at N = 10,000,
    // D = 10 and 12 and at N = 20,000, D = 10, where the tree did the joint search or the
    // 5-6-d counts, and tied at N = 10,000, D = 8: the size clauses are gone.
    let tree = if counting { dim <= 4 } else { dim <= 8 };
    match search {
        NeighbourSearch::BruteForce => Plan::Brute,
        NeighbourSearch::KdTree => Plan::Tree,
        NeighbourSearch::Auto if dim == 1 && counting => Plan::Sorted1d,
        NeighbourSearch::Auto if tree => Plan::Tree,
        NeighbourSearch::Auto => Plan::Brute,
    }
}

/// The `k` nearest neighbours (excluding the point itself) of every row of `m`,
/// flattened: entries `i*k .. (i+1)*k` belong to row `i`, ascending by `(dist, index)`.
///
/// Callers guarantee `k >= 1` and `m.rows() > k`; missing neighbours would show up
/// as infinite distances.
pub(crate) fn k_nearest(m: &Matrix, k: usize, search: NeighbourSearch) -> Vec<Neighbour> {
    match plan(search, m.cols(), false) {
        Plan::Brute => knn_brute(m, k, Kernel::detect()),
        Plan::Tree | Plan::Sorted1d => KdTree::build(m).knn_all(k),
    }
}

/// For every row `i`, the number of other rows within `radii[i]` (max-norm):
/// distance `< radii[i]` if `strict`, else `<=`.
pub(crate) fn count_within(
    m: &Matrix,
    radii: &[f64],
    strict: bool,
    search: NeighbourSearch,
) -> Vec<usize> {
    match plan(search, m.cols(), true) {
        Plan::Brute => count_brute(m, radii, strict, Kernel::detect()),
        Plan::Tree => KdTree::build(m).count_all(radii, strict),
        Plan::Sorted1d => count_sorted_1d(m.as_slice(), radii, strict),
    }
}

/// Max-norm distance from query `a` to row `j` (same formula everywhere, so all paths agree bit for bit).
#[inline]
pub(crate) fn max_dist(a: &[f64], b: &[f64]) -> f64 {
    block_max(a, b)
}

// ---------------------------------------------------------------------------
// Brute force
// ---------------------------------------------------------------------------

const QUERY_BLOCK: usize = 128;
/// Candidates per tile; a multiple of `CHUNK`.
const CANDIDATE_TILE: usize = 256;
/// First-stage chunks per tile.
const TILE_CHUNKS: usize = CANDIDATE_TILE / CHUNK;
/// Candidates per first-stage chunk: 64 `u8` lanes, four SSE2 registers.
const CHUNK: usize = 64;
/// Coordinates per query checked in the vectorised first stage.
const HEAD: usize = 16;
/// Candidates each query checks exactly before the filtered scan (rounded up to whole
/// chunks, taken around the query's own chunk), so the scan is filtered against a finite
/// k-th-neighbour bound from its first tile on.
const SEED_CANDIDATES: usize = 32;
/// Second-stage quantisation: coordinates map to integers in [-QMAX16, QMAX16],
/// so a difference of two always fits in `i16` without overflow.
const QMAX16: f64 = 16383.0;
/// First-stage quantisation: coordinates map to integers in [0, 255].
const QMAX8: f64 = 255.0;
/// Coordinates per second-stage panel (one 64-byte cache line of `i16`).
const LANES: usize = 32;

/// `LANES` consecutive quantised coordinates; 64-byte aligned so a panel is one cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Panel([i16; LANES]);

/// Brute-force search state for one point set: an 8-bit column-major copy of
/// the points for the first stage, a 16-bit row-major copy for the second,
/// and the exact `f64` rows for the final decision.
///
/// Why it is fast: a max-norm distance exceeds a bound as soon as one
/// coordinate difference does, and the coordinates where the query is most
/// extreme (farthest from the centre of that coordinate's range) are by far
/// the most likely to do so. Each query therefore checks its own `HEAD` most
/// extreme coordinates first, against 64 candidates at a time (column-major
/// `u8` storage makes that a contiguous, branch-free loop that compiles to
/// packed `psubusb`/`por`/`pmaxub`); on 128-d Gaussian data this discards
/// 90-96% of candidates, against about 40% for the first 16 coordinates in
/// storage order. Survivors are compared on all coordinates in 16-bit fixed
/// point (whole cache-line panels, early exit), and only those the 16-bit
/// comparison cannot decide are computed exactly in `f64`.
///
/// Points are stored in a chunk-aligned k-d order (median splits on the widest coordinate
/// down to one chunk), so a chunk's 64 points are close together and each chunk has a small
/// bounding box in 8-bit space. Before scanning, a query marks the chunks whose box is
/// within its threshold on every head coordinate (`Query::live`); a chunk outside it cannot
/// hold a first-stage survivor (each candidate's 8-bit difference is at least the box's), so
/// skipping it changes nothing but the time. At 10 joint dimensions about a quarter of the
/// chunks stay live; in high dimension nearly all do, and the marking costs a few percent.
/// The k-nearest search also seeds each query from the chunks around its own, so its bound
/// is nearly final before the scan. Results are reported under the original row indices,
/// and ties are broken by those, so the order is invisible.
///
/// Exactness: with `q = round((x - c) * scale)` (c a per-coordinate offset,
/// `scale` shared), each quantised coordinate is within 0.5 (plus
/// floating-point rounding, covered by `slack`) of `(x - c) * scale`, so
/// `|q_a - q_b| <= |x_a - x_b| * scale + 1 + slack` and
/// `|x_a - x_b| * scale <= |q_a - q_b| + 1 + slack`. A candidate is dropped
/// only when the first inequality proves its exact distance exceeds the
/// bound, and counted without an exact check only when the second proves it
/// is inside; every other case is decided in `f64`. The result is therefore
/// the exact one.
struct BruteIndex<'a> {
    n: usize,
    dim: usize,
    /// The exact rows in k-d order: position `p` holds original row `perm[p]`.
    rows: Cow<'a, [f64]>,
    perm: Vec<usize>,
    /// First stage: `cols8[d * n_pad + j]`, padded to a whole number of chunks.
    cols8: Vec<u8>,
    n_pad: usize,
    scale8: f64,
    slack8: f64,
    /// Second stage: row `j` is `qrows[j * panels .. (j + 1) * panels]`.
    qrows: Vec<Panel>,
    panels: usize,
    scale16: f64,
    slack16: f64,
    /// Each chunk's 8-bit bounding box: `box_lo8[d * chunks_pad + c]` and `box_hi8` likewise,
    /// `chunks_pad` a multiple of 64 (padding boxes are never marked live).
    box_lo8: Vec<u8>,
    box_hi8: Vec<u8>,
    chunks: usize,
    chunks_pad: usize,
    /// Whether `perm` is the k-d order and chunk boxes are used (low dimension only).
    spatial: bool,
    /// Which filter kernels run (same bits either way).
    kernel: Kernel,
}

/// Dimension up to which the brute force stores points in k-d order and skips chunks by
/// their boxes. Above it boxes rarely exclude a chunk, and ordering and marking cost more
/// than they save (measured with `ksg_maxnorm_bench`, 2026-12-06, AVX-512 Xeon: at
/// 10 joint dimensions the whole estimate was 1.25-1.45x faster, at 32 and 128 it was
/// 1.2-1.4x slower with the order than without).
const SPATIAL_MAX_DIM: usize = 10;

/// The smallest box holding rows `ids` of `m`: per-coordinate minima and maxima.
fn bounding_box(m: &Matrix, ids: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let mut lo = vec![f64::INFINITY; m.cols()];
    let mut hi = vec![f64::NEG_INFINITY; m.cols()];
    for &i in ids {
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(m.row(i)) {
            *l = l.min(v);
            *h = h.max(v);
        }
    }
    (lo, hi)
}

/// The box's widest coordinate (the first, if several) and its width.
fn widest(lo: &[f64], hi: &[f64]) -> (usize, f64) {
    let mut best = (0usize, -1.0f64);
    for (d, (l, h)) in lo.iter().zip(hi).enumerate() {
        if h - l > best.1 {
            best = (d, h - l);
        }
    }
    best
}

/// A chunk-aligned k-d order of `m`'s rows: the row at each position. Each range is split at
/// a multiple of `CHUNK` near its middle, on its widest coordinate, until it fits one chunk,
/// so every chunk holds points that are close together. Deterministic (no randomness), and
/// O(N D log(N / CHUNK)).
fn spatial_order(m: &Matrix) -> Vec<usize> {
    let n = m.rows();
    let mut perm: Vec<usize> = (0..n).collect();
    let mut stack = vec![(0, n)];
    while let Some((s, e)) = stack.pop() {
        if e - s <= CHUNK {
            continue;
        }
        let (lo, hi) = bounding_box(m, &perm[s..e]);
        let (d, spread) = widest(&lo, &hi);
        if spread <= 0.0 {
            // All points in the range coincide: any order is as good.
            continue;
        }
        // A chunk multiple strictly inside (s, e): e - s > CHUNK.
        let half = ((e - s) / 2).div_ceil(CHUNK) * CHUNK;
        perm[s..e].select_nth_unstable_by(half, |&a, &b| {
            m.row(a)[d].total_cmp(&m.row(b)[d]).then(a.cmp(&b))
        });
        stack.push((s, s + half));
        stack.push((s + half, e));
    }
    perm
}

/// The instruction set the two fixed-point filter stages use. Both compute the same
/// integers (saturating differences, maxima and comparisons are exact), so the kernel only
/// changes speed, never a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Portable loops that LLVM vectorises for the build's baseline (SSE2 on x86-64).
    Scalar,
    /// AVX2 intrinsics (32 lanes of `u8`, 16 of `i16`), chosen at run time when the CPU
    /// has AVX2: the baseline build cannot assume it, and its vectorised first stage spent
    /// about half its time assembling the survivor mask lane by lane, which
    /// `_mm256_movemask_epi8` does in one instruction per 32 candidates.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512BW for the first stage (a 64-candidate chunk is one register, and the
    /// comparison yields the survivor mask directly), AVX2 for the second.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512bw") && has!("avx2") {
                return Kernel::Avx512;
            }
            if has!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Scalar
    }

    /// Every kernel this CPU runs (the tests compare them all with the definition).
    #[cfg(test)]
    fn available() -> Vec<Kernel> {
        let mut all = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            all.push(Kernel::Avx2);
            if std::arch::is_x86_feature_detected!("avx512bw") {
                all.push(Kernel::Avx512);
            }
        }
        all
    }
}

/// Per-thread candidate buffers: indices and their partial 16-bit distances.
struct Scratch {
    cand: Vec<usize>,
    dq: Vec<i16>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            cand: Vec::with_capacity(CANDIDATE_TILE),
            dq: Vec::with_capacity(CANDIDATE_TILE),
        }
    }
}

/// A query prepared for the first stage: its coordinates, most extreme
/// first, and its 8-bit values on the leading `HEAD` of them.
///
/// Filled in place by [`BruteIndex::query_into`]: each thread keeps one block of them and
/// reuses their buffers, so preparing a query allocates nothing.
#[derive(Default)]
struct Query {
    order: Vec<usize>,
    /// Scratch: per coordinate, how far it is from the centre of its range (from the 16-bit
    /// copy, which is centred; `QMAX16 - |q|`, so smaller is more extreme) in the high half,
    /// the coordinate in the low half: a plain integer selection finds the head.
    keys: Vec<u64>,
    /// Each head value repeated across a 16-byte vector, so the first stage
    /// loads it instead of broadcasting it for every chunk.
    head8: Vec<[u8; 16]>,
    /// Bit `c` set: chunk `c` may hold a survivor and is scanned (see
    /// [`BruteIndex::mark_live`]); all set until marked.
    live: Vec<u64>,
}

impl Query {
    #[inline(always)]
    fn is_live(&self, chunk: usize) -> bool {
        self.live[chunk / 64] >> (chunk % 64) & 1 == 1
    }
}

/// Quantisation threshold: never below `bound * scale + 1 + slack`.
///
/// `floor(t)` capped at `max` (an integer at most `i16::MAX`): `floor(t) >= max` exactly
/// when `t >= max`, and below it `t` is positive, so truncation is the floor. Written with a
/// cast because `f64::floor` is a library call in the baseline x86-64 build (no SSE4.1), and
/// the k-nearest search asks for two thresholds per query per tile.
#[inline]
fn quantised_threshold(bound: f64, scale: f64, slack: f64, max: f64) -> f64 {
    let t = bound * scale * (1.0 + 1e-12) + 1.5 + slack;
    if t >= max {
        max
    } else {
        f64::from(t as i32)
    }
}

impl<'a> BruteIndex<'a> {
    fn new(m: &'a Matrix, kernel: Kernel) -> BruteIndex<'a> {
        let n = m.rows();
        let dim = m.cols();
        let spatial = dim <= SPATIAL_MAX_DIM;
        let perm = if spatial {
            spatial_order(m)
        } else {
            (0..n).collect()
        };
        // Unordered, the rows are the matrix's own: no copy.
        let rows: Cow<'a, [f64]> = if spatial {
            let mut rows = Vec::with_capacity(n * dim);
            for &i in &perm {
                rows.extend_from_slice(m.row(i));
            }
            Cow::Owned(rows)
        } else {
            Cow::Borrowed(m.as_slice())
        };
        let mut lo = vec![f64::INFINITY; dim];
        let mut hi = vec![f64::NEG_INFINITY; dim];
        let mut max_abs = 0.0f64;
        for row in m.iter_rows() {
            for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
                *l = l.min(v);
                *h = h.max(v);
                max_abs = max_abs.max(v.abs());
            }
        }
        // Distances are translation invariant per coordinate, so offsetting
        // each coordinate by its own range keeps quantisation fine for data
        // with large offsets; the scale is shared so thresholds are uniform.
        let mid: Vec<f64> = lo.iter().zip(&hi).map(|(l, h)| 0.5 * (l + h)).collect();
        let range = lo.iter().zip(&hi).fold(0.0f64, |a, (l, h)| a.max(h - l));
        let range = if range > 0.0 {
            range * (1.0 + 1e-9)
        } else {
            1.0
        };
        let scale8 = QMAX8 / range;
        let scale16 = 2.0 * QMAX16 / range;
        // Rounding in (x - offset) is at most a few ulps of max_abs.
        let slack8 = 8.0 * f64::EPSILON * max_abs * scale8;
        let slack16 = 8.0 * f64::EPSILON * max_abs * scale16;
        let n_pad = n.div_ceil(CHUNK) * CHUNK;
        let panels = dim.div_ceil(LANES);
        // Padding entries are never reported: their lanes are masked out.
        let mut cols8 = vec![0u8; n_pad * dim];
        // Padding coordinates are 0 in every row, so they add 0 to every distance.
        let mut qrows = vec![Panel([0; LANES]); n * panels];
        for (j, row) in rows.chunks_exact(dim.max(1)).enumerate() {
            for (d, &v) in row.iter().enumerate() {
                // (v - lo) * scale8 is within [0, 255) and (v - mid) * scale16
                // within (-QMAX16, QMAX16), so neither cast saturates. Rounding to
                // nearest is "add 0.5 (after QMAX16 for the signed one), truncate" rather
                // than `f64::round`, a library call per coordinate in the baseline x86-64
                // build (no SSE4.1), which took half of building the index: the error bound
                // is the same 0.5, and the addition's own rounding (at most half an ulp of
                // 256, resp. 32768) is within `slack8`, resp. `slack16`, since
                // `max_abs * scale8 >= 127.5` and `max_abs * scale16 >= QMAX16`.
                cols8[d * n_pad + j] = ((v - lo[d]) * scale8 + 0.5) as u8;
                qrows[j * panels + d / LANES].0[d % LANES] =
                    (((v - mid[d]) * scale16 + (QMAX16 + 0.5)) as i32 - QMAX16 as i32) as i16;
            }
        }
        let chunks = n_pad / CHUNK;
        let chunks_pad = chunks.div_ceil(64) * 64;
        // Only the k-d order gives chunks boxes worth testing (see `mark_live`).
        let boxed = if spatial { dim } else { 0 };
        let mut box_lo8 = vec![u8::MAX; boxed * chunks_pad];
        let mut box_hi8 = vec![0u8; boxed * chunks_pad];
        for d in 0..boxed {
            for c in 0..chunks {
                let members = &cols8[d * n_pad + c * CHUNK..d * n_pad + (c * CHUNK + CHUNK).min(n)];
                box_lo8[d * chunks_pad + c] = members.iter().copied().min().unwrap_or(u8::MAX);
                box_hi8[d * chunks_pad + c] = members.iter().copied().max().unwrap_or(0);
            }
        }
        BruteIndex {
            n,
            dim,
            rows,
            perm,
            cols8,
            n_pad,
            scale8,
            slack8,
            qrows,
            panels,
            scale16,
            slack16,
            box_lo8,
            box_hi8,
            chunks,
            chunks_pad,
            spatial,
            kernel,
        }
    }

    /// Marks in `q.live` the chunks from `from_chunk` on whose 8-bit box is within
    /// `max(thr, chunk_thr[c])` of the query on every head coordinate; the others cannot
    /// hold a first-stage survivor. `acc` is scratch.
    fn mark_live(
        &self,
        q: &mut Query,
        thr: u8,
        chunk_thr: Option<&[u8]>,
        from_chunk: usize,
        acc: &mut Vec<u8>,
    ) {
        if !self.spatial {
            // Unordered chunks have boxes spanning nearly everything: all stay live.
            return;
        }
        let cp = self.chunks_pad;
        acc.clear();
        acc.resize(cp, 0);
        // Column by column over all chunks: a plain loop the compiler vectorises.
        for (&d, a) in q.order.iter().zip(&q.head8) {
            let a = a[0];
            let lo = &self.box_lo8[d * cp..(d + 1) * cp];
            let hi = &self.box_hi8[d * cp..(d + 1) * cp];
            for ((s, &l), &h) in acc.iter_mut().zip(lo).zip(hi) {
                *s = (*s).max(l.saturating_sub(a) | a.saturating_sub(h));
            }
        }
        q.live.clear();
        q.live.resize(cp / 64, 0);
        for c in from_chunk..self.chunks {
            let t = chunk_thr.map_or(thr, |ct| thr.max(ct[c]));
            q.live[c / 64] |= u64::from(acc[c] <= t) << (c % 64);
        }
    }

    #[inline]
    fn row(&self, i: usize) -> &[f64] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }

    fn threshold8(&self, bound: f64) -> u8 {
        quantised_threshold(bound, self.scale8, self.slack8, QMAX8) as u8
    }

    fn threshold16(&self, bound: f64) -> i16 {
        quantised_threshold(bound, self.scale16, self.slack16, f64::from(i16::MAX)) as i16
    }

    /// Prepares point `i` as a query in `q`: coordinates with the `HEAD` most
    /// extreme first (in no particular order among themselves), all chunks live.
    fn query_into(&self, i: usize, q: &mut Query) {
        let Query {
            order,
            keys,
            head8,
            live,
        } = q;
        order.clear();
        let head = HEAD.min(self.dim);
        if head < self.dim {
            let p = self.panels;
            let row16 = &self.qrows[i * p..(i + 1) * p];
            keys.clear();
            keys.extend((0..self.dim).map(|d| {
                let e = u64::from(row16[d / LANES].0[d % LANES].unsigned_abs());
                ((QMAX16 as u64 - e) << 32) | d as u64
            }));
            // A partial selection is enough: the first stage only needs the set. Which
            // coordinates win near-ties changes nothing but the filter's speed.
            keys.select_nth_unstable(head - 1);
            order.extend(keys.iter().map(|&key| (key & 0xffff_ffff) as usize));
        } else {
            order.extend(0..self.dim);
        }
        head8.clear();
        head8.extend(
            order[..head]
                .iter()
                .map(|&d| [self.cols8[d * self.n_pad + i]; 16]),
        );
        live.clear();
        live.resize(self.chunks_pad / 64, u64::MAX);
    }

    /// The block of queries `q0..q1` prepared in `pool` (grown as needed, buffers reused);
    /// returns the prepared slice.
    fn queries_into<'p>(&self, q0: usize, q1: usize, pool: &'p mut Vec<Query>) -> &'p mut [Query] {
        if pool.len() < q1 - q0 {
            pool.resize_with(q1 - q0, Query::default);
        }
        let block = &mut pool[..q1 - q0];
        for (q, i) in block.iter_mut().zip(q0..q1) {
            self.query_into(i, q);
        }
        block
    }

    /// First stage: collects in `scratch.cand` the candidates of `tile`
    /// (chunk-aligned start) whose 8-bit differences to the query on its head
    /// coordinates are all `<= thr`.
    ///
    /// With `cand_thr`, candidate `j` is kept if it passes `max(thr, cand_thr[j])`
    /// (symmetric counting needs both ends' radii).
    fn stage1(
        &self,
        q: &Query,
        tile: Range<usize>,
        thr: u8,
        cand_thr: Option<&[u8]>,
        scratch: &mut Scratch,
    ) {
        match self.kernel {
            Kernel::Scalar => self.stage1_scalar(q, tile, thr, cand_thr, scratch),
            // SAFETY: `Kernel::Avx2` is only chosen when the CPU reports AVX2.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { self.stage1_avx2(q, tile, thr, cand_thr, scratch) },
            // SAFETY: `Kernel::Avx512` is only chosen when the CPU reports AVX-512BW.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { self.stage1_avx512(q, tile, thr, cand_thr, scratch) },
        }
    }

    /// Appends to `cand` the candidates of the chunk at `c0` whose bits are set in `mask`
    /// (bit l: candidate c0 + l), padding lanes past the last point masked out. A walk over
    /// set bits: the keep/drop outcome is unpredictable, so no per-candidate branch.
    #[inline(always)]
    fn push_survivors(&self, mut mask: u64, c0: usize, cand: &mut Vec<usize>) {
        if c0 + CHUNK > self.n {
            mask &= (1u64 << (self.n - c0)) - 1;
        }
        while mask != 0 {
            cand.push(c0 + mask.trailing_zeros() as usize);
            mask &= mask - 1;
        }
    }

    /// [`Self::stage1`] in portable code.
    fn stage1_scalar(
        &self,
        q: &Query,
        tile: Range<usize>,
        thr: u8,
        cand_thr: Option<&[u8]>,
        scratch: &mut Scratch,
    ) {
        let np = self.n_pad;
        let head = &q.order[..q.head8.len()];
        scratch.cand.clear();
        let mut c0 = tile.start;
        while c0 < tile.end {
            if !q.is_live(c0 / CHUNK) {
                c0 += CHUNK;
                continue;
            }
            let mut acc = [0u8; CHUNK];
            for (&d, a) in head.iter().zip(&q.head8) {
                let col = &self.cols8[d * np + c0..d * np + c0 + CHUNK];
                for (s16, c16) in acc.chunks_exact_mut(16).zip(col.chunks_exact(16)) {
                    for ((s, &c), &a) in s16.iter_mut().zip(c16).zip(a) {
                        let x = a.saturating_sub(c) | c.saturating_sub(a);
                        *s = (*s).max(x);
                    }
                }
            }
            // A survivor bit mask built without branches, walked by push_survivors.
            let mut mask = 0u64;
            match cand_thr {
                None => {
                    for (l, &s) in acc.iter().enumerate() {
                        mask |= u64::from(s <= thr) << l;
                    }
                }
                Some(ct) => {
                    for (l, (&s, &t)) in acc.iter().zip(&ct[c0..c0 + CHUNK]).enumerate() {
                        mask |= u64::from(s <= thr.max(t)) << l;
                    }
                }
            }
            self.push_survivors(mask, c0, &mut scratch.cand);
            c0 += CHUNK;
        }
    }

    /// [`Self::stage1`] with AVX2: per chunk, two 32-lane accumulators over the head
    /// coordinates, then one `movemask` per 32 candidates.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn stage1_avx2(
        &self,
        q: &Query,
        tile: Range<usize>,
        thr: u8,
        cand_thr: Option<&[u8]>,
        scratch: &mut Scratch,
    ) {
        use std::arch::x86_64::*;
        let np = self.n_pad;
        scratch.cand.clear();
        let t = _mm256_set1_epi8(thr as i8);
        let mut c0 = tile.start;
        while c0 < tile.end {
            if !q.is_live(c0 / CHUNK) {
                c0 += CHUNK;
                continue;
            }
            let mut s0 = _mm256_setzero_si256();
            let mut s1 = _mm256_setzero_si256();
            for (&d, a) in q.order.iter().zip(&q.head8) {
                // SAFETY: `a` is 16 bytes; `loadu` has no alignment requirement.
                let a = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(a.as_ptr().cast()) });
                // Bounds-checked once here, so the loads below stay in the slice.
                let col = &self.cols8[d * np + c0..d * np + c0 + CHUNK];
                // SAFETY: `col` holds 64 bytes: bytes 0..32 and 32..64 are in it.
                let (c, e) = unsafe {
                    (
                        _mm256_loadu_si256(col.as_ptr().cast()),
                        _mm256_loadu_si256(col.as_ptr().add(32).cast()),
                    )
                };
                s0 = _mm256_max_epu8(
                    s0,
                    _mm256_or_si256(_mm256_subs_epu8(a, c), _mm256_subs_epu8(c, a)),
                );
                s1 = _mm256_max_epu8(
                    s1,
                    _mm256_or_si256(_mm256_subs_epu8(a, e), _mm256_subs_epu8(e, a)),
                );
            }
            let (t0, t1) = match cand_thr {
                None => (t, t),
                Some(ct) => {
                    let ct = &ct[c0..c0 + CHUNK];
                    // SAFETY: `ct` holds 64 bytes; `loadu` has no alignment requirement.
                    unsafe {
                        (
                            _mm256_max_epu8(t, _mm256_loadu_si256(ct.as_ptr().cast())),
                            _mm256_max_epu8(t, _mm256_loadu_si256(ct.as_ptr().add(32).cast())),
                        )
                    }
                }
            };
            // s <= t (unsigned) exactly when min(s, t) == s.
            let le0 = _mm256_cmpeq_epi8(_mm256_min_epu8(s0, t0), s0);
            let le1 = _mm256_cmpeq_epi8(_mm256_min_epu8(s1, t1), s1);
            let mask = u64::from(_mm256_movemask_epi8(le0) as u32)
                | (u64::from(_mm256_movemask_epi8(le1) as u32) << 32);
            self.push_survivors(mask, c0, &mut scratch.cand);
            c0 += CHUNK;
        }
    }

    /// [`Self::stage1`] with AVX-512BW: one 64-lane accumulator per chunk over the head
    /// coordinates, and the survivor mask straight from an unsigned comparison.
    ///
    /// # Safety
    /// The CPU must support AVX-512BW.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512bw")]
    unsafe fn stage1_avx512(
        &self,
        q: &Query,
        tile: Range<usize>,
        thr: u8,
        cand_thr: Option<&[u8]>,
        scratch: &mut Scratch,
    ) {
        use std::arch::x86_64::*;
        let np = self.n_pad;
        scratch.cand.clear();
        let t = _mm512_set1_epi8(thr as i8);
        let mut c0 = tile.start;
        if !self.spatial && tile.end - tile.start == CANDIDATE_TILE {
            // SAFETY: this function's own contract (AVX-512BW).
            unsafe { self.stage1_avx512_tile(q, c0, t, cand_thr, scratch) };
            return;
        }
        while c0 < tile.end {
            if !q.is_live(c0 / CHUNK) {
                c0 += CHUNK;
                continue;
            }
            let mut s = _mm512_setzero_si512();
            for (&d, a) in q.order.iter().zip(&q.head8) {
                // SAFETY: `a` is 16 bytes; `loadu` has no alignment requirement.
                let a = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(a.as_ptr().cast()) });
                // Bounds-checked once here, so the load below stays in the slice.
                let col = &self.cols8[d * np + c0..d * np + c0 + CHUNK];
                // SAFETY: `col` holds 64 bytes.
                let c = unsafe { _mm512_loadu_si512(col.as_ptr().cast()) };
                s = _mm512_max_epu8(
                    s,
                    _mm512_or_si512(_mm512_subs_epu8(a, c), _mm512_subs_epu8(c, a)),
                );
            }
            let t = match cand_thr {
                None => t,
                Some(ct) => {
                    let ct = &ct[c0..c0 + CHUNK];
                    // SAFETY: `ct` holds 64 bytes; `loadu` has no alignment requirement.
                    _mm512_max_epu8(t, unsafe { _mm512_loadu_si512(ct.as_ptr().cast()) })
                }
            };
            let mask = _mm512_cmple_epu8_mask(s, t);
            self.push_survivors(mask, c0, &mut scratch.cand);
            c0 += CHUNK;
        }
    }

    /// [`Self::stage1_avx512`] over one whole tile (`TILE_CHUNKS` chunks from `c0`) at
    /// once, for unordered points (above `SPATIAL_MAX_DIM`, where no chunk is skipped by its
    /// box): each head coordinate's query value is loaded once per tile instead of once per
    /// chunk, and the four chunks' accumulators are independent, so the loop is not bound by
    /// one chain of maxima. The same integers per chunk as the chunk-by-chunk loop; a chunk
    /// that is not live (a query's seed chunks, already checked exactly) yields no survivor.
    ///
    /// # Safety
    /// The CPU must support AVX-512BW; `c0 + CANDIDATE_TILE <= n_pad`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512bw")]
    unsafe fn stage1_avx512_tile(
        &self,
        q: &Query,
        c0: usize,
        t: std::arch::x86_64::__m512i,
        cand_thr: Option<&[u8]>,
        scratch: &mut Scratch,
    ) {
        use std::arch::x86_64::*;
        let np = self.n_pad;
        let mut s = [_mm512_setzero_si512(); TILE_CHUNKS];
        for (&d, a) in q.order.iter().zip(&q.head8) {
            // SAFETY: `a` is 16 bytes; `loadu` has no alignment requirement.
            let a = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(a.as_ptr().cast()) });
            // Bounds-checked once here, so the loads below stay in the slice.
            let col = &self.cols8[d * np + c0..d * np + c0 + CANDIDATE_TILE];
            for (l, acc) in s.iter_mut().enumerate() {
                // SAFETY: `col` holds TILE_CHUNKS * 64 bytes.
                let c = unsafe { _mm512_loadu_si512(col.as_ptr().add(l * CHUNK).cast()) };
                *acc = _mm512_max_epu8(
                    *acc,
                    _mm512_or_si512(_mm512_subs_epu8(a, c), _mm512_subs_epu8(c, a)),
                );
            }
        }
        for (l, acc) in s.iter().enumerate() {
            let base = c0 + l * CHUNK;
            if !q.is_live(base / CHUNK) {
                continue;
            }
            let t = match cand_thr {
                None => t,
                Some(ct) => {
                    let ct = &ct[base..base + CHUNK];
                    // SAFETY: `ct` holds 64 bytes; `loadu` has no alignment requirement.
                    _mm512_max_epu8(t, unsafe { _mm512_loadu_si512(ct.as_ptr().cast()) })
                }
            };
            let mask = _mm512_cmple_epu8_mask(*acc, t);
            self.push_survivors(mask, base, &mut scratch.cand);
        }
    }

    /// Second stage: keeps in `scratch.cand` the candidates whose 16-bit
    /// distance to query `i` is `<= thr`, with that distance in `scratch.dq`.
    ///
    /// Panel by panel over the whole list with branch-free compaction, rather
    /// than candidate by candidate with early exit: the exit branch is
    /// unpredictable, and without it the loads for successive candidates
    /// (mostly cache misses) overlap instead of serialising.
    ///
    /// With `cand_thr`, candidate `j` is kept if within `max(thr, cand_thr[j])`.
    fn stage2(&self, i: usize, thr: i16, cand_thr: Option<&[i16]>, scratch: &mut Scratch) {
        match self.kernel {
            Kernel::Scalar => self.stage2_with(i, thr, cand_thr, scratch, panel_absmax),
            // SAFETY: `Kernel::Avx2` and `Kernel::Avx512` are only chosen when the CPU
            // reports AVX2.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 => unsafe { self.stage2_avx2(i, thr, cand_thr, scratch) },
        }
    }

    /// [`Self::stage2`] with AVX2 panel maxima.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn stage2_avx2(
        &self,
        i: usize,
        thr: i16,
        cand_thr: Option<&[i16]>,
        scratch: &mut Scratch,
    ) {
        // SAFETY: this function only runs with AVX2 (its own contract).
        self.stage2_with(i, thr, cand_thr, scratch, |a, b| unsafe {
            panel_absmax_avx2(a, b)
        });
    }

    /// [`Self::stage2`] with `absmax` computing one panel's maximum.
    #[inline(always)]
    fn stage2_with(
        &self,
        i: usize,
        thr: i16,
        cand_thr: Option<&[i16]>,
        scratch: &mut Scratch,
        absmax: impl Fn(&Panel, &Panel) -> i16,
    ) {
        let p = self.panels;
        let q = &self.qrows[i * p..(i + 1) * p];
        let Scratch { cand, dq } = scratch;
        dq.clear();
        dq.resize(cand.len(), 0);
        let mut len = cand.len();
        for (panel, qp) in q.iter().enumerate() {
            let mut w = 0;
            for idx in 0..len {
                let j = cand[idx];
                let m = absmax(qp, &self.qrows[j * p + panel]).max(dq[idx]);
                let t = cand_thr.map_or(thr, |ct| thr.max(ct[j]));
                cand[w] = j;
                dq[w] = m;
                w += usize::from(m <= t);
            }
            len = w;
        }
        cand.truncate(len);
        dq.truncate(len);
    }

    /// True when a 16-bit distance `dq` proves the exact distance is `< r`.
    #[inline]
    fn certainly_within(&self, dq: i16, r: f64) -> bool {
        f64::from(dq) + 1.0 + self.slack16 < r * self.scale16 * (1.0 - 1e-12)
    }

    /// The largest `dq` for which [`Self::certainly_within`]`(dq, r)` holds (-1: none), so
    /// that `dq <= sure16(r)` is that test as one integer comparison. Found from the formula,
    /// then moved until the test itself agrees (it is monotone in `dq`), so the two never
    /// differ.
    fn sure16(&self, r: f64) -> i16 {
        let guess = (r * self.scale16 * (1.0 - 1e-12) - 1.0 - self.slack16).floor();
        let mut m = if guess.is_nan() || guess < 0.0 {
            -1
        } else if guess >= f64::from(i16::MAX) {
            i16::MAX
        } else {
            guess as i16
        };
        while m >= 0 && !self.certainly_within(m, r) {
            m -= 1;
        }
        while m < i16::MAX && self.certainly_within(m + 1, r) {
            m += 1;
        }
        m
    }

    /// Exact max-norm distance from `i` to `j` ([`block_max`], vectorised where the CPU allows).
    #[inline]
    fn exact(&self, i: usize, j: usize) -> f64 {
        match self.kernel {
            Kernel::Scalar => block_max(self.row(i), self.row(j)),
            // SAFETY: both kernels are only chosen when the CPU reports AVX2.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 => unsafe { block_max_avx2(self.row(i), self.row(j)) },
        }
    }

    /// Exact max-norm distance from `i` to `j`, visiting coordinates in
    /// `order`; returns early with some value `> bound` once it exceeds `bound`.
    #[inline]
    fn exact_bounded(&self, i: usize, j: usize, order: &[usize], bound: f64) -> f64 {
        let a = self.row(i);
        let b = self.row(j);
        let mut m = 0.0f64;
        for chunk in order.chunks(4) {
            for &d in chunk {
                let x = (a[d] - b[d]).abs();
                m = if x > m { x } else { m };
            }
            if m > bound {
                return m;
            }
        }
        m
    }

    /// Chunk-aligned tiles covering `from..n`.
    fn tiles(&self, from: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        (from..self.n_pad)
            .step_by(CANDIDATE_TILE)
            .map(move |t0| t0..(t0 + CANDIDATE_TILE).min(self.n_pad))
    }
}

/// max over one panel of |a - b| (no overflow: |a|, |b| <= QMAX16 < 2^14).
///
/// Kept out of line: on its own LLVM compiles it to four packed
/// `psubw`/`pmaxsw` pairs and one horizontal step, but inlined into the
/// candidate loops its vectoriser chose lane-transposing `pinsrw` sequences
/// that ran several times slower.
#[inline(never)]
fn panel_absmax(a: &Panel, b: &Panel) -> i16 {
    let mut m = 0i16;
    for (x, y) in a.0.iter().zip(&b.0) {
        let d = x.wrapping_sub(*y);
        m = m.max(d.max(d.wrapping_neg()));
    }
    m
}

/// [`panel_absmax`] with AVX2: two 16-lane differences, then the horizontal maximum by
/// `phminposuw` on `0x7fff - v` (every `v` is in `[0, 32766]`, so the unsigned minimum of
/// `0x7fff - v` is `0x7fff` minus the maximum). Same integers as the scalar loop.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn panel_absmax_avx2(a: &Panel, b: &Panel) -> i16 {
    use std::arch::x86_64::*;
    let pa = a.0.as_ptr().cast::<__m256i>();
    let pb = b.0.as_ptr().cast::<__m256i>();
    // SAFETY: a panel is 64 bytes, 64-byte aligned: two aligned 32-byte loads each.
    let (a0, a1, b0, b1) = unsafe {
        (
            _mm256_load_si256(pa),
            _mm256_load_si256(pa.add(1)),
            _mm256_load_si256(pb),
            _mm256_load_si256(pb.add(1)),
        )
    };
    // No overflow: |a|, |b| <= QMAX16 < 2^14, so each difference fits in i16.
    let d0 = _mm256_abs_epi16(_mm256_sub_epi16(a0, b0));
    let d1 = _mm256_abs_epi16(_mm256_sub_epi16(a1, b1));
    let m = _mm256_max_epi16(d0, d1);
    let m = _mm_max_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    let inv = _mm_sub_epi16(_mm_set1_epi16(0x7fff), m);
    0x7fff - (_mm_cvtsi128_si32(_mm_minpos_epu16(inv)) as u16 as i16)
}

/// [`block_max`] with AVX2: two 4-lane running maxima of `|a - b|` (sign bit cleared),
/// then their horizontal maximum, then the last coordinates one by one. Maxima do not
/// round and `_mm256_max_pd(d, m)` is `if d > m { d } else { m }` lane by lane, so the
/// bits are [`block_max`]'s for finite input (all the estimators accept).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_max_avx2(a: &[f64], b: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let sign = _mm256_set1_pd(-0.0);
    let (mut m0, mut m1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut c = 0;
    // SAFETY (all loads): `c + 8 <= n` or `c + 4 <= n`, so every lane is inside both slices.
    while c + 8 <= n {
        let (a0, b0, a1, b1) = unsafe {
            (
                _mm256_loadu_pd(pa.add(c)),
                _mm256_loadu_pd(pb.add(c)),
                _mm256_loadu_pd(pa.add(c + 4)),
                _mm256_loadu_pd(pb.add(c + 4)),
            )
        };
        m0 = _mm256_max_pd(_mm256_andnot_pd(sign, _mm256_sub_pd(a0, b0)), m0);
        m1 = _mm256_max_pd(_mm256_andnot_pd(sign, _mm256_sub_pd(a1, b1)), m1);
        c += 8;
    }
    if c + 4 <= n {
        let (a0, b0) = unsafe { (_mm256_loadu_pd(pa.add(c)), _mm256_loadu_pd(pb.add(c))) };
        m0 = _mm256_max_pd(_mm256_andnot_pd(sign, _mm256_sub_pd(a0, b0)), m0);
        c += 4;
    }
    let m = _mm256_max_pd(m0, m1);
    let m = _mm_max_pd(_mm256_castpd256_pd128(m), _mm256_extractf128_pd::<1>(m));
    let mut m = f64::max(_mm_cvtsd_f64(m), _mm_cvtsd_f64(_mm_unpackhi_pd(m, m)));
    for (&u, &v) in a[c..n].iter().zip(&b[c..n]) {
        let d = (u - v).abs();
        m = if d > m { d } else { m };
    }
    m
}

/// Lanes of [`block_max`]'s running maxima: eight `f64`, one AVX-512 register or two
/// AVX2 / four SSE2 ones.
const MAX_LANES: usize = 8;

/// Exact max-norm distance between two coordinate slices (max is exact, so
/// every path agrees bit for bit with the textbook definition).
///
/// Eight independent running maxima, one per lane, then their maximum: a maximum does
/// not round, so the order in which coordinates meet changes nothing, and the lane
/// form lets the compiler use packed `maxpd` (`if d > m { d } else { m }` is exactly
/// `maxpd`), where one serial chain of scalar maxima cannot be vectorised.
#[inline]
fn block_max(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0.0f64; MAX_LANES];
    let (a8, b8) = (a.chunks_exact(MAX_LANES), b.chunks_exact(MAX_LANES));
    let mut m = 0.0f64;
    for (&u, &v) in a8.remainder().iter().zip(b8.remainder()) {
        let d = (u - v).abs();
        m = if d > m { d } else { m };
    }
    for (ca, cb) in a8.zip(b8) {
        for ((l, &u), &v) in lanes.iter_mut().zip(ca).zip(cb) {
            let d = (u - v).abs();
            *l = if d > *l { d } else { *l };
        }
    }
    for &l in &lanes {
        m = if l > m { l } else { m };
    }
    m
}

fn knn_brute(m: &Matrix, k: usize, kernel: Kernel) -> Vec<Neighbour> {
    let n = m.rows();
    let mut out = vec![Neighbour::NONE; n * k];
    if k == 0 || n == 0 {
        return out;
    }
    let index = BruteIndex::new(m, kernel);
    // Each query first checks, exactly, the chunks around its own (k-d neighbours, so its
    // bound is nearly final), then scans the rest filtered.
    let seed_chunks = SEED_CANDIDATES
        .max(2 * k + 2)
        .div_ceil(CHUNK)
        .min(index.chunks);
    // Filled by position, then moved to the original rows.
    let mut by_pos = vec![Neighbour::NONE; n * k];
    by_pos
        .par_chunks_mut(QUERY_BLOCK * k)
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new(), Scratch::new()),
            |(pool, acc, scratch), (block, chunk)| {
                let q0 = block * QUERY_BLOCK;
                let queries = index.queries_into(q0, q0 + chunk.len() / k, pool);
                for ((qi, best), q) in chunk
                    .chunks_exact_mut(k)
                    .enumerate()
                    .zip(queries.iter_mut())
                {
                    let i = q0 + qi;
                    let first = (i / CHUNK).min(index.chunks - seed_chunks);
                    let seeds = first * CHUNK..((first + seed_chunks) * CHUNK).min(n);
                    for j in seeds.filter(|&j| j != i) {
                        let d = index.exact(i, j);
                        if d <= best[k - 1].dist {
                            insert(
                                best,
                                Neighbour {
                                    dist: d,
                                    index: index.perm[j],
                                },
                            );
                        }
                    }
                    index.mark_live(q, index.threshold8(best[k - 1].dist), None, 0, acc);
                    for c in first..first + seed_chunks {
                        q.live[c / 64] &= !(1u64 << (c % 64));
                    }
                }
                for tile in index.tiles(0) {
                    for ((qi, best), q) in chunk.chunks_exact_mut(k).enumerate().zip(queries.iter())
                    {
                        let i = q0 + qi;
                        let bound = best[k - 1].dist;
                        index.stage1(q, tile.clone(), index.threshold8(bound), None, scratch);
                        index.stage2(i, index.threshold16(bound), None, scratch);
                        for &j in &scratch.cand {
                            if j == i {
                                continue;
                            }
                            // The bound may have tightened since the filters ran.
                            let bound = best[k - 1].dist;
                            let d = index.exact(i, j);
                            if d <= bound {
                                insert(
                                    best,
                                    Neighbour {
                                        dist: d,
                                        index: index.perm[j],
                                    },
                                );
                            }
                        }
                    }
                }
            },
        );
    for (p, best) in by_pos.chunks_exact(k).enumerate() {
        let i = index.perm[p];
        out[i * k..(i + 1) * k].copy_from_slice(best);
    }
    out
}

/// Dimension up to which radius counts skip the fixed-point filters and compute every
/// distance exactly, 64 candidates at a time (see [`ExactColumns`]). At 5-d the filters let
/// through about 6 candidates per 64-point chunk, each costing a second-stage panel and a
/// scalar decision, more than 64 exact distances cost in registers. Measured with
/// `ksg_maxnorm_bench` (2026-12-06, AVX-512 Xeon, N = 5,000, Gaussian marginals, one count
/// pass, exact / filtered): 6-d 3.9 / 7.0 ms, 7-d 5.1 / 7.0 ms, 8-d 8.2 / 7.7 ms, 10-d 12.1
/// / 8.0 ms.
const EXACT_COUNT_MAX_DIM: usize = 7;

/// The points of a low-dimensional set in chunk-aligned k-d order, column-major in `f64`
/// (`cols[d * n_pad + p]`), with each chunk's bounding box. Radius counts compute each
/// chunk's 64 distances to a query in vector registers: the same subtraction, absolute
/// value and maximum as [`max_dist`], so the same bits, with no filter and no uncertain case.
struct ExactColumns {
    n: usize,
    dim: usize,
    n_pad: usize,
    chunks: usize,
    /// Position `p` holds original row `perm[p]`.
    perm: Vec<usize>,
    cols: Vec<f64>,
    /// Chunk `c`'s box on coordinate `d`: `box_lo[d * chunks + c]` to `box_hi[d * chunks + c]`.
    box_lo: Vec<f64>,
    box_hi: Vec<f64>,
}

impl ExactColumns {
    fn new(m: &Matrix) -> ExactColumns {
        let n = m.rows();
        let dim = m.cols();
        let perm = spatial_order(m);
        let n_pad = n.div_ceil(CHUNK) * CHUNK;
        let chunks = n_pad / CHUNK;
        // Padding lanes are never read as candidates (lane ranges stop at n).
        let mut cols = vec![0.0f64; dim * n_pad];
        let mut box_lo = Vec::with_capacity(chunks * dim);
        let mut box_hi = Vec::with_capacity(chunks * dim);
        for (p, &i) in perm.iter().enumerate() {
            for (d, &v) in m.row(i).iter().enumerate() {
                cols[d * n_pad + p] = v;
            }
        }
        for d in 0..dim {
            for members in cols[d * n_pad..d * n_pad + n].chunks(CHUNK) {
                box_lo.push(members.iter().copied().fold(f64::INFINITY, f64::min));
                box_hi.push(members.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            }
        }
        ExactColumns {
            n,
            dim,
            n_pad,
            chunks,
            perm,
            cols,
            box_lo,
            box_hi,
        }
    }

    /// Into `bd[c]`, for each chunk `c` from `from` on, a lower bound on the computed
    /// distance from `q` to every point of the chunk: each coordinate difference to a point
    /// inside the box is at least the difference to the box's face, and rounding is
    /// monotone, so the computed distances are at least this. (The data are finite: the
    /// estimators check.) All chunks at once, coordinate by coordinate, so it vectorises.
    #[inline(always)]
    fn box_dists(&self, q: &[f64], from: usize, bd: &mut [f64]) {
        let bd = &mut bd[from..self.chunks];
        bd.fill(0.0);
        for (d, &a) in q.iter().enumerate() {
            let lo = &self.box_lo[d * self.chunks + from..(d + 1) * self.chunks];
            let hi = &self.box_hi[d * self.chunks + from..(d + 1) * self.chunks];
            for ((m, &l), &h) in bd.iter_mut().zip(lo).zip(hi) {
                let x = l - a;
                let y = a - h;
                let x = if y > x { y } else { x };
                *m = if x > *m { x } else { *m };
            }
        }
    }

    /// Exact distances from `q` to the 64 points of the chunk starting at `c0`.
    #[inline(always)]
    fn chunk_dists(&self, q: &[f64], c0: usize, acc: &mut [f64; CHUNK]) {
        *acc = [0.0; CHUNK];
        for (d, &a) in q.iter().enumerate() {
            let col = &self.cols[d * self.n_pad + c0..d * self.n_pad + c0 + CHUNK];
            for (s, &c) in acc.iter_mut().zip(col) {
                let x = (a - c).abs();
                *s = if x > *s { x } else { *s };
            }
        }
    }
}

/// Radius counts by exact distances in registers, for low dimension: each query against
/// every chunk whose box is within its own radius. One-sided, unlike [`count_brute`]: a
/// shared pair would have to be kept while within either end's radius, and at 5-d
/// marginals the query's radius alone excludes more chunks than the two sides' shared
/// pairs save (measured with `ksg_maxnorm_bench`, see `EXACT_COUNT_MAX_DIM`); it also
/// writes no counter but the query's own, so queries run independently.
fn count_exact(m: &Matrix, radii: &[f64], strict: bool, kernel: Kernel) -> Vec<usize> {
    let index = ExactColumns::new(m);
    let n = index.n;
    let mut by_pos = vec![0usize; n];
    by_pos
        .par_chunks_mut(QUERY_BLOCK)
        .enumerate()
        .for_each(|(block, out)| {
            let mut q = vec![0.0f64; index.dim];
            let mut bd = vec![0.0f64; index.chunks];
            for (qi, o) in out.iter_mut().enumerate() {
                let i = block * QUERY_BLOCK + qi;
                for (d, v) in q.iter_mut().enumerate() {
                    *v = index.cols[d * index.n_pad + i];
                }
                let r = radii[index.perm[i]];
                *o = match (kernel, strict) {
                    // SAFETY: `Kernel::Avx512` is only chosen when the CPU reports
                    // AVX-512BW (which implies AVX-512F), `Kernel::Avx2` with AVX2.
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, true) => unsafe {
                        count_row_avx512::<true>(&index, &q, r, &mut bd)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx512, false) => unsafe {
                        count_row_avx512::<false>(&index, &q, r, &mut bd)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx2, true) => unsafe {
                        count_row_avx2::<true>(&index, &q, r, &mut bd)
                    },
                    #[cfg(target_arch = "x86_64")]
                    (Kernel::Avx2, false) => unsafe {
                        count_row_avx2::<false>(&index, &q, r, &mut bd)
                    },
                    (_, true) => count_row::<true>(&index, &q, r, &mut bd),
                    (_, false) => count_row::<false>(&index, &q, r, &mut bd),
                };
            }
        });
    let mut out = vec![0usize; n];
    for (&i, c) in index.perm.iter().zip(by_pos) {
        out[i] = c;
    }
    out
}

/// How many other points are within `r` of the query at coordinates `q` (one of the points).
#[inline(always)]
fn count_row<const STRICT: bool>(index: &ExactColumns, q: &[f64], r: f64, bd: &mut [f64]) -> usize {
    let inside = |d: f64| if STRICT { d < r } else { d <= r };
    index.box_dists(q, 0, bd);
    let mut acc = [0.0f64; CHUNK];
    let mut count = 0usize;
    for (c, &b) in bd.iter().enumerate() {
        if b > r {
            continue;
        }
        let c0 = c * CHUNK;
        index.chunk_dists(q, c0, &mut acc);
        let mut in_chunk = 0u32;
        for &d in &acc[..(index.n - c0).min(CHUNK)] {
            in_chunk += u32::from(inside(d));
        }
        count += in_chunk as usize;
    }
    // The query itself was among them, at distance exactly 0, in its own chunk (whose box
    // contains it, so it was never skipped).
    count - usize::from(inside(0.0))
}

/// [`count_row`] compiled for AVX-512F (eight distances per register).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn count_row_avx512<const STRICT: bool>(
    index: &ExactColumns,
    q: &[f64],
    r: f64,
    bd: &mut [f64],
) -> usize {
    count_row::<STRICT>(index, q, r, bd)
}

/// [`count_row`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn count_row_avx2<const STRICT: bool>(
    index: &ExactColumns,
    q: &[f64],
    r: f64,
    bd: &mut [f64],
) -> usize {
    count_row::<STRICT>(index, q, r, bd)
}

/// One radius count's radii by position in a [`BruteIndex`], with their 16-bit thresholds.
struct CountRadii {
    radii: Vec<f64>,
    /// [`BruteIndex::threshold16`] of each radius: a larger 16-bit distance is outside.
    thr16: Vec<i16>,
    /// [`BruteIndex::sure16`] of each radius: a 16-bit distance at most this is inside.
    sure16: Vec<i16>,
    /// Whether "within" is `< r` (else `<= r`).
    strict: bool,
}

impl BruteIndex<'_> {
    /// Counts each second-stage survivor `j > i` of query `i` in `scratch` at each end whose
    /// radius its 16-bit distance is within. No branch on the outcomes (they are
    /// unpredictable): query `i`'s own count is summed in a register, each `j`'s added
    /// unconditionally, and only a pair the 16-bit distance leaves open at either end (rare)
    /// takes a branch to the exact decision.
    #[inline(always)]
    fn settle_pairs(
        &self,
        r: &CountRadii,
        i: usize,
        scratch: &Scratch,
        order: &[usize],
        counts: &mut [u32],
    ) {
        let (sure_i, thr_i) = (r.sure16[i], r.thr16[i]);
        let mut own = 0u32;
        for (&j, &dq) in scratch.cand.iter().zip(&scratch.dq) {
            if j <= i {
                // Counted from j's side (only in the query's own first tile).
                continue;
            }
            let (in_i, in_j) = (dq <= sure_i, dq <= r.sure16[j]);
            let open = (!in_i & (dq <= thr_i)) | (!in_j & (dq <= r.thr16[j]));
            if open {
                self.settle_exactly(r, i, j, dq, order, counts);
            } else {
                own += u32::from(in_i);
                counts[j] += u32::from(in_j);
            }
        }
        counts[i] += own;
    }

    /// [`Self::settle_pairs`] for the rare pair the 16-bit distance leaves open at an end:
    /// one exact distance serves both ends (bounded by the larger radius, it is either
    /// exact or above both).
    #[inline(never)]
    fn settle_exactly(
        &self,
        r: &CountRadii,
        i: usize,
        j: usize,
        dq: i16,
        order: &[usize],
        counts: &mut [u32],
    ) {
        let (ri, rj) = (r.radii[i], r.radii[j]);
        let mut exact = None;
        let mut decide = |radius: f64, t16: i16| -> bool {
            if self.certainly_within(dq, radius) {
                return true;
            }
            if dq > t16 {
                return false;
            }
            let d = *exact.get_or_insert_with(|| self.exact_bounded(i, j, order, ri.max(rj)));
            d < radius || (!r.strict && d == radius)
        };
        if decide(ri, r.thr16[i]) {
            counts[i] += 1;
        }
        if decide(rj, r.thr16[j]) {
            counts[j] += 1;
        }
    }
}

/// Radius counts by brute force, each unordered pair visited once.
///
/// Counting is symmetric, so pair (i, j) with i < j is examined only from
/// i's side, filtered against the larger of the two radii, and then decided
/// for both ends: half the pairs of the one-sided scan, at the cost of a
/// slightly weaker filter.
fn count_brute(m: &Matrix, radii: &[f64], strict: bool, kernel: Kernel) -> Vec<usize> {
    if m.cols() <= EXACT_COUNT_MAX_DIM {
        return count_exact(m, radii, strict, kernel);
    }
    let n = m.rows();
    let index = BruteIndex::new(m, kernel);
    // Everything below is by position in the index's order.
    let radii: Vec<f64> = index.perm.iter().map(|&i| radii[i]).collect();
    let mut thr8 = vec![0u8; index.n_pad];
    for (t, &r) in thr8.iter_mut().zip(&radii) {
        *t = index.threshold8(r);
    }
    // A chunk's largest threshold: a pair is kept if within either end's radius.
    let chunk_thr8: Vec<u8> = thr8
        .chunks_exact(CHUNK)
        .map(|c| c.iter().copied().max().unwrap_or(0))
        .collect();
    let radii = CountRadii {
        thr16: radii.iter().map(|&r| index.threshold16(r)).collect(),
        sure16: radii.iter().map(|&r| index.sure16(r)).collect(),
        radii,
        strict,
    };
    let blocks = n.div_ceil(QUERY_BLOCK);
    // One counter array per group rather than per rayon split, to bound
    // memory; groups take interleaved blocks because early blocks (more
    // candidates j > i) cost more than late ones.
    let groups = (2 * rayon::current_num_threads()).clamp(1, blocks.max(1));
    let per_group: Vec<Vec<u32>> = (0..groups)
        .into_par_iter()
        .map(|g| {
            let mut counts = vec![0u32; n];
            let mut scratch = Scratch::new();
            let mut acc = Vec::new();
            let mut pool = Vec::new();
            for block in (g..blocks).step_by(groups) {
                let q0 = block * QUERY_BLOCK;
                let q1 = (q0 + QUERY_BLOCK).min(n);
                let queries = index.queries_into(q0, q1, &mut pool);
                for (q, i) in queries.iter_mut().zip(q0..q1) {
                    // Pairs (i, j) with j < i were counted from j's side.
                    index.mark_live(q, thr8[i], Some(&chunk_thr8), i / CHUNK, &mut acc);
                }
                let queries = &*queries;
                for tile in index.tiles(q0 / CHUNK * CHUNK) {
                    for (qi, q) in queries.iter().enumerate() {
                        let i = q0 + qi;
                        index.stage1(q, tile.clone(), thr8[i], Some(&thr8), &mut scratch);
                        index.stage2(i, radii.thr16[i], Some(&radii.thr16), &mut scratch);
                        index.settle_pairs(&radii, i, &scratch, &q.order, &mut counts);
                    }
                }
            }
            counts
        })
        .collect();
    let mut out = vec![0usize; n];
    for counts in per_group {
        for (&i, c) in index.perm.iter().zip(counts) {
            out[i] += c as usize;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Sorted array for 1-d radius counts
// ---------------------------------------------------------------------------

fn count_sorted_1d(values: &[f64], radii: &[f64], strict: bool) -> Vec<usize> {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| values[a].total_cmp(&values[b]));
    let sorted: Vec<f64> = order.iter().map(|&i| values[i]).collect();
    let mut rank = vec![0usize; n];
    for (p, &i) in order.iter().enumerate() {
        rank[i] = p;
    }
    (0..n)
        .into_par_iter()
        .map(|i| {
            let p = rank[i];
            let v = sorted[p];
            let r = radii[i];
            // |x - v| is monotone in x on each side of v, so each side is a
            // contiguous run found by binary search with the exact predicate.
            let inside = |x: f64| {
                let d = (v - x).abs();
                d < r || (!strict && d == r)
            };
            let right = sorted[p + 1..].partition_point(|&x| inside(x));
            let left = p - sorted[..p].partition_point(|&x| !inside(x));
            left + right
        })
        .collect()
}

// ---------------------------------------------------------------------------
// k-d tree
// ---------------------------------------------------------------------------

const LEAF_SIZE: usize = 12;

struct Node {
    start: usize,
    end: usize,
    children: Option<(usize, usize)>,
}

struct KdTree {
    dim: usize,
    /// Rows reordered so every node owns a contiguous range.
    pts: Vec<f64>,
    /// Original row index of reordered position p.
    ids: Vec<usize>,
    /// Reordered position of original row i.
    pos: Vec<usize>,
    nodes: Vec<Node>,
    /// Per node: `dim` lower bounds then `dim` upper bounds.
    boxes: Vec<f64>,
}

impl KdTree {
    fn build(m: &Matrix) -> KdTree {
        let n = m.rows();
        let dim = m.cols();
        let data = m.as_slice();
        let mut perm: Vec<usize> = (0..n).collect();
        let mut nodes = vec![Node {
            start: 0,
            end: n,
            children: None,
        }];
        let mut boxes: Vec<f64> = Vec::new();
        let mut stack = vec![0usize];
        while let Some(id) = stack.pop() {
            let (s, e) = (nodes[id].start, nodes[id].end);
            let (lo, hi) = bounding_box(m, &perm[s..e]);
            let (split, spread) = widest(&lo, &hi);
            // Nodes are created before they are visited, so the box slot may not exist yet.
            if boxes.len() < (id + 1) * 2 * dim {
                boxes.resize((id + 1) * 2 * dim, 0.0);
            }
            boxes[id * 2 * dim..id * 2 * dim + dim].copy_from_slice(&lo);
            boxes[id * 2 * dim + dim..(id + 1) * 2 * dim].copy_from_slice(&hi);
            if e - s <= LEAF_SIZE || spread <= 0.0 {
                continue;
            }
            let mid = s + (e - s) / 2;
            perm[s..e].select_nth_unstable_by(mid - s, |&a, &b| {
                data[a * dim + split].total_cmp(&data[b * dim + split])
            });
            let l = nodes.len();
            nodes.push(Node {
                start: s,
                end: mid,
                children: None,
            });
            nodes.push(Node {
                start: mid,
                end: e,
                children: None,
            });
            nodes[id].children = Some((l, l + 1));
            stack.push(l + 1);
            stack.push(l);
        }
        let mut pts = Vec::with_capacity(n * dim);
        let mut pos = vec![0usize; n];
        for (p, &i) in perm.iter().enumerate() {
            pts.extend_from_slice(&data[i * dim..(i + 1) * dim]);
            pos[i] = p;
        }
        KdTree {
            dim,
            pts,
            ids: perm,
            pos,
            nodes,
            boxes,
        }
    }

    #[inline]
    fn point(&self, p: usize) -> &[f64] {
        &self.pts[p * self.dim..(p + 1) * self.dim]
    }

    /// Smallest and largest max-norm distance from `q` to any point of node `id`'s box.
    #[inline]
    fn box_dists(&self, id: usize, q: &[f64]) -> (f64, f64) {
        let b = &self.boxes[id * 2 * self.dim..(id + 1) * 2 * self.dim];
        let (lo, hi) = b.split_at(self.dim);
        let mut near = 0.0f64;
        let mut far = 0.0f64;
        for ((&x, &l), &h) in q.iter().zip(lo).zip(hi) {
            let below = l - x;
            let above = x - h;
            let gap = if below > 0.0 {
                below
            } else if above > 0.0 {
                above
            } else {
                0.0
            };
            near = near.max(gap);
            far = far.max((x - l).abs().max((x - h).abs()));
        }
        (near, far)
    }

    fn knn_all(&self, k: usize) -> Vec<Neighbour> {
        let n = self.ids.len();
        let mut out = vec![Neighbour::NONE; n * k];
        if k == 0 || n == 0 {
            return out;
        }
        out.par_chunks_mut(k).enumerate().for_each(|(i, best)| {
            let p = self.pos[i];
            self.knn_one(self.point(p), p, best);
        });
        out
    }

    fn knn_one(&self, q: &[f64], self_pos: usize, best: &mut [Neighbour]) {
        let k = best.len();
        let mut stack: Vec<(usize, f64)> = vec![(0, 0.0)];
        while let Some((id, near)) = stack.pop() {
            if near > best[k - 1].dist {
                continue;
            }
            let node = &self.nodes[id];
            match node.children {
                None => {
                    for p in node.start..node.end {
                        if p == self_pos {
                            continue;
                        }
                        let d = max_dist(q, self.point(p));
                        insert(
                            best,
                            Neighbour {
                                dist: d,
                                index: self.ids[p],
                            },
                        );
                    }
                }
                Some((l, r)) => {
                    let dl = self.box_dists(l, q).0;
                    let dr = self.box_dists(r, q).0;
                    // Nearer child on top of the stack so the bound tightens early.
                    if dl <= dr {
                        stack.push((r, dr));
                        stack.push((l, dl));
                    } else {
                        stack.push((l, dl));
                        stack.push((r, dr));
                    }
                }
            }
        }
    }

    fn count_all(&self, radii: &[f64], strict: bool) -> Vec<usize> {
        (0..self.ids.len())
            .into_par_iter()
            .map(|i| {
                let p = self.pos[i];
                self.count_one(self.point(p), p, radii[i], strict)
            })
            .collect()
    }

    fn count_one(&self, q: &[f64], self_pos: usize, r: f64, strict: bool) -> usize {
        let within = |d: f64| d < r || (!strict && d == r);
        let mut count = 0usize;
        let mut stack = vec![0usize];
        while let Some(id) = stack.pop() {
            let node = &self.nodes[id];
            let (near, far) = self.box_dists(id, q);
            if !within(near) {
                continue;
            }
            if within(far) {
                count += node.end - node.start;
                if (node.start..node.end).contains(&self_pos) {
                    count -= 1;
                }
                continue;
            }
            match node.children {
                None => {
                    for p in node.start..node.end {
                        if p != self_pos && within(max_dist(q, self.point(p))) {
                            count += 1;
                        }
                    }
                }
                Some((l, rr)) => {
                    stack.push(l);
                    stack.push(rr);
                }
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::uniform;
    use super::*;

    /// The max-norm distance as the textbook writes it, independent of [`block_max`].
    fn textbook_dist(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(u, v)| (u - v).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn block_max_kernels_match_the_textbook_distance_at_every_length() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for len in 0..=41 {
            for round in 0..50 {
                // Half the rounds on coarse values, where coordinates tie often.
                let draw = |rng: &mut rand_chacha::ChaCha8Rng| {
                    if round % 2 == 0 {
                        f64::from(rng.random_range(-4i32..4)) * 0.5
                    } else {
                        rng.random_range(-3.0..3.0)
                    }
                };
                let a: Vec<f64> = (0..len).map(|_| draw(&mut rng)).collect();
                let b: Vec<f64> = (0..len).map(|_| draw(&mut rng)).collect();
                let want = textbook_dist(&a, &b);
                assert_eq!(block_max(&a, &b).to_bits(), want.to_bits(), "len {len}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU reports AVX2.
                    let got = unsafe { block_max_avx2(&a, &b) };
                    assert_eq!(got.to_bits(), want.to_bits(), "avx2, len {len}");
                }
            }
        }
    }

    /// The direct definition: all other rows sorted by `(distance, index)`.
    fn naive_knn(m: &Matrix, k: usize) -> Vec<Neighbour> {
        let n = m.rows();
        let mut out = Vec::with_capacity(n * k);
        for i in 0..n {
            let mut all: Vec<Neighbour> = (0..n)
                .filter(|&j| j != i)
                .map(|j| Neighbour {
                    dist: textbook_dist(m.row(i), m.row(j)),
                    index: j,
                })
                .collect();
            all.sort_by(|a, b| a.dist.total_cmp(&b.dist).then(a.index.cmp(&b.index)));
            out.extend_from_slice(&all[..k]);
        }
        out
    }

    fn naive_count(m: &Matrix, radii: &[f64], strict: bool) -> Vec<usize> {
        let n = m.rows();
        (0..n)
            .map(|i| {
                (0..n)
                    .filter(|&j| j != i)
                    .filter(|&j| {
                        let d = textbook_dist(m.row(i), m.row(j));
                        d < radii[i] || (!strict && d == radii[i])
                    })
                    .count()
            })
            .collect()
    }

    /// Random, gridded (many exact ties) and offset data; 300 rows crosses the brute force's
    /// query blocks and candidate tiles.
    fn datasets(n: usize, d: usize) -> Vec<(&'static str, Matrix)> {
        let u = uniform(n, d, 7 + d as u64);
        let grid: Vec<f64> = u.as_slice().iter().map(|v| (v * 3.0).round()).collect();
        let offset: Vec<f64> = u.as_slice().iter().map(|v| 1e6 + v).collect();
        vec![
            ("uniform", u.clone()),
            ("grid", Matrix::new(n, d, grid).unwrap()),
            ("offset", Matrix::new(n, d, offset).unwrap()),
        ]
    }

    /// Every strategy gives the naive neighbours and counts bit for bit (distances compared
    /// as bits, indices exactly), so switching strategy by dimension and size never changes
    /// an estimate.
    #[test]
    fn strategies_agree_bit_for_bit_with_the_definition() {
        let strategies = [
            NeighbourSearch::Auto,
            NeighbourSearch::BruteForce,
            NeighbourSearch::KdTree,
        ];
        for d in [1, 3, 5, 10, 17, 40] {
            for (name, m) in datasets(300, d) {
                let k = 3;
                let want = naive_knn(&m, k);
                let radii: Vec<f64> = want.chunks_exact(k).map(|c| c[k - 1].dist).collect();
                let want_strict = naive_count(&m, &radii, true);
                let want_loose = naive_count(&m, &radii, false);
                for s in strategies {
                    let got = k_nearest(&m, k, s);
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(
                            (g.dist.to_bits(), g.index),
                            (w.dist.to_bits(), w.index),
                            "{name} d={d} {s:?}"
                        );
                    }
                    assert_eq!(
                        count_within(&m, &radii, true, s),
                        want_strict,
                        "{name} d={d} {s:?}"
                    );
                    assert_eq!(
                        count_within(&m, &radii, false, s),
                        want_loose,
                        "{name} d={d} {s:?}"
                    );
                }
            }
        }
    }

    /// Each filter kernel this CPU runs (portable and, where present, AVX2 and AVX-512) gives the
    /// definition's neighbours and counts bit for bit, including sizes that end on a partial
    /// group of chunks and a partial chunk (the AVX2 first stage masks 32 lanes at a time).
    #[test]
    fn filter_kernels_agree_bit_for_bit_with_the_definition() {
        for kernel in Kernel::available() {
            for (n, d) in [(300, 3), (300, 10), (300, 40), (333, 17), (97, 70)] {
                for (name, m) in datasets(n, d) {
                    for k in [1, 3] {
                        let want = naive_knn(&m, k);
                        let got = knn_brute(&m, k, kernel);
                        for (g, w) in got.iter().zip(&want) {
                            assert_eq!(
                                (g.dist.to_bits(), g.index),
                                (w.dist.to_bits(), w.index),
                                "{name} n={n} d={d} k={k} {kernel:?}"
                            );
                        }
                        let radii: Vec<f64> = want.chunks_exact(k).map(|c| c[k - 1].dist).collect();
                        for strict in [true, false] {
                            assert_eq!(
                                count_brute(&m, &radii, strict, kernel),
                                naive_count(&m, &radii, strict),
                                "{name} n={n} d={d} k={k} strict={strict} {kernel:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// `dq <= sure16(r)` is exactly `certainly_within(dq, r)`, for radii from 0 to beyond the
    /// 16-bit range (the counts use the one in place of the other).
    #[test]
    fn sure16_is_the_certainly_within_test_as_one_comparison() {
        let m = uniform(200, 12, 5);
        let index = BruteIndex::new(&m, Kernel::Scalar);
        for i in 0..400 {
            let r = (i as f64 / 100.0).powi(3) * 0.7;
            let sure = index.sure16(r);
            let s = i32::from(sure);
            for dq in [0, 1, s - 2, s - 1, s, s + 1, s + 2, i32::from(i16::MAX)] {
                if let Ok(dq) = i16::try_from(dq) {
                    if dq >= 0 {
                        assert_eq!(index.certainly_within(dq, r), dq <= sure, "r {r} dq {dq}");
                    }
                }
            }
        }
        assert_eq!(index.sure16(0.0), -1);
        assert_eq!(index.sure16(1e9), i16::MAX);
    }

    /// With many chunks (more than 64, so the live masks span several words) the k-d order,
    /// the box skipping and the exact low-dimensional counts give what the k-d tree gives
    /// (itself checked against the definition above), on clustered and on gridded data where
    /// many boxes touch and distances tie.
    #[test]
    fn box_skipping_on_many_chunks_matches_the_tree() {
        let n = 4500;
        for d in [2, 5, 8, 10] {
            let u = uniform(n, d, 11 + d as u64);
            // Clusters of very different density, and a grid with exact ties.
            let clustered: Vec<f64> = u
                .as_slice()
                .chunks_exact(d)
                .enumerate()
                .flat_map(|(i, row)| {
                    let centre = (i % 7) as f64 * 3.0;
                    let spread = if i % 7 == 0 { 0.01 } else { 1.0 };
                    row.iter()
                        .map(move |v| centre + spread * v)
                        .collect::<Vec<_>>()
                })
                .collect();
            let grid: Vec<f64> = u.as_slice().iter().map(|v| (v * 8.0).round()).collect();
            for (name, m) in [
                ("clustered", Matrix::new(n, d, clustered).unwrap()),
                ("grid", Matrix::new(n, d, grid).unwrap()),
            ] {
                let tree = KdTree::build(&m);
                let k = 3;
                let want = tree.knn_all(k);
                let radii: Vec<f64> = want.chunks_exact(k).map(|c| c[k - 1].dist).collect();
                for kernel in Kernel::available() {
                    let got = knn_brute(&m, k, kernel);
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(
                            (g.dist.to_bits(), g.index),
                            (w.dist.to_bits(), w.index),
                            "{name} d={d} {kernel:?}"
                        );
                    }
                    for strict in [true, false] {
                        assert_eq!(
                            count_brute(&m, &radii, strict, kernel),
                            tree.count_all(&radii, strict),
                            "{name} d={d} strict={strict} {kernel:?}"
                        );
                    }
                }
            }
        }
    }

    /// The AVX2 panel maximum equals the portable one, at the extremes of the quantised
    /// range (differences up to 2 QMAX16) and on random panels.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_panel_absmax_matches_the_scalar_one() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let q = QMAX16 as i16;
        let u = uniform(200, 2 * LANES, 3);
        let mut pairs: Vec<(Panel, Panel)> = u
            .iter_rows()
            .map(|row| {
                let mut a = Panel([0; LANES]);
                let mut b = Panel([0; LANES]);
                for l in 0..LANES {
                    a.0[l] = (row[l] * QMAX16).round() as i16;
                    b.0[l] = (row[LANES + l] * QMAX16).round() as i16;
                }
                (a, b)
            })
            .collect();
        for l in 0..LANES {
            let mut a = Panel([0; LANES]);
            let mut b = Panel([0; LANES]);
            a.0[l] = q;
            b.0[l] = -q;
            pairs.push((a, b));
            pairs.push((b, a));
        }
        pairs.push((Panel([0; LANES]), Panel([0; LANES])));
        for (a, b) in &pairs {
            // SAFETY: AVX2 was detected above.
            let got = unsafe { panel_absmax_avx2(a, b) };
            assert_eq!(got, panel_absmax(a, b));
        }
        assert_eq!(
            unsafe { panel_absmax_avx2(&pairs[200].0, &pairs[200].1) },
            2 * q
        );
    }

    /// The crossover: tree up to it, brute force above, as measured (see `plan`).
    #[test]
    fn plan_switches_by_dimension() {
        let tree = |d, c| matches!(plan(NeighbourSearch::Auto, d, c), Plan::Tree);
        assert!(tree(8, false) && !tree(9, false) && !tree(10, false) && !tree(32, false));
        assert!(tree(4, true) && !tree(5, true) && !tree(6, true));
        assert!(matches!(
            plan(NeighbourSearch::Auto, 1, true),
            Plan::Sorted1d
        ));
    }
}
