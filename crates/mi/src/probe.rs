//! Linear-probe lower bound on I(U;Z) (Barber-Agakov).
//!
//! For any classifier q, I(U;Z) >= H(Z) - E[-log q(Z|U)]. A softmax regression is fitted on a
//! train split of (U, Z) and its cross-entropy measured on the held-out split, so the bound is
//! not flattered by overfitting. Unlike InfoNCE it is not capped by log N. H(Z) is the plug-in
//! entropy of all labels (exact for the empirical label distribution; with K classes and
//! N >> K its error is O(K/N)). The probe's held-out accuracy is reported beside it.
//!
//! That point value is below the truth only on average. For a bound that holds with stated
//! confidence the fit also records a [`Certificate`]: the held-out losses of the probe mixed
//! with a uniform floor (so each loss is bounded), the label counts and the number of correct
//! held-out predictions, from which `bound` computes confidence bounds at its level.
//!
//! The linear-evaluation protocol, and what keeps it from leaking: the probe reads embeddings
//! as numbers (an `embed` table), so the encoder is frozen by construction (no gradient
//! reaches it, and nothing here can change it); it is fitted on one seeded split of the rows
//! and scored on the disjoint rest ([`HeldOut`], recorded in the result and written by
//! `estimate_mi` to `mi_estimates.splits.parquet`); and its standardisation uses the fitted
//! rows' statistics only.

use rayon::prelude::*;

use super::certificate::Certificate;
use super::heldout::{class_counts, entropy, labels_of, score, HeldOut};
use super::{check_pair, Direction, Estimator, Matrix, MiError, MiEstimate};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Fraction of rows used to fit; the rest measure the cross-entropy.
    pub train_fraction: f64,
    /// Full-batch optimisation steps.
    pub steps: usize,
    /// L2 penalty on the weights.
    pub l2: f64,
    /// Uniform floor eps of the certified loss: q_eps = (1 - eps) q + eps / K, so each
    /// held-out loss is at most log(K / eps).
    pub floor: f64,
    /// K, the number of label values Z can take; default: the largest label seen + 1. A
    /// class absent from the sample still counts toward the certificate's floor and H(Z).
    pub classes: Option<usize>,
    pub seed: u64,
}

/// Default uniform floor of the certified loss: costs at most -log(1 - eps) = 0.01 nats of
/// cross-entropy, and bounds each loss by log(100 K).
pub const DEFAULT_FLOOR: f64 = 0.01;

impl Default for Probe {
    fn default() -> Probe {
        Probe {
            train_fraction: 0.8,
            steps: 300,
            l2: 1e-4,
            floor: DEFAULT_FLOOR,
            classes: None,
            seed: 0,
        }
    }
}

/// Everything a fitted probe reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// H(Z) - held-out cross-entropy, nats: the lower bound on I(U;Z).
    pub mi_lower_bound: f64,
    pub entropy: f64,
    pub cross_entropy: f64,
    pub accuracy: f64,
    pub n_train: usize,
    pub n_test: usize,
    pub classes: usize,
    /// What a confidence bound needs (see the module doc).
    pub certificate: Certificate,
    /// The rows it was fitted on and the rows it was scored on.
    pub held_out: HeldOut,
}

impl Probe {
    /// Fits on the seeded split of `train_fraction` and scores the rest.
    pub fn fit(&self, u: &Matrix, z: &Matrix) -> Result<ProbeResult, MiError> {
        self.fit_with(u, z, false, None)
    }

    /// Fits on `held_out.train` and scores `held_out.test` (a split the data gives, such as
    /// CIFAR's train and test images); `train_fraction` and the seed's split are not used.
    pub fn fit_split(
        &self,
        u: &Matrix,
        z: &Matrix,
        held_out: HeldOut,
    ) -> Result<ProbeResult, MiError> {
        self.fit_with(u, z, false, Some(held_out))
    }

    /// [`Probe::fit`] through the scalar row-at-a-time loops the probe had before its blocked
    /// kernels: the same arithmetic in the same order, so the same bits. Kept to check and to
    /// time the blocked version against (`cargo run --release -p cbound-mi --example
    /// probe_bench`); not for use.
    #[doc(hidden)]
    pub fn fit_scalar_reference(&self, u: &Matrix, z: &Matrix) -> Result<ProbeResult, MiError> {
        self.fit_with(u, z, true, None)
    }

    fn fit_with(
        &self,
        u: &Matrix,
        z: &Matrix,
        scalar: bool,
        given: Option<HeldOut>,
    ) -> Result<ProbeResult, MiError> {
        let n = check_pair(u, z)?;
        if given.is_none() && !(self.train_fraction > 0.0 && self.train_fraction < 1.0) {
            return Err(MiError::InvalidParameter {
                name: "train_fraction",
                reason: format!(
                    "must lie strictly between 0 and 1, got {}",
                    self.train_fraction
                ),
            });
        }
        if !(self.floor > 0.0 && self.floor < 1.0) {
            return Err(MiError::InvalidParameter {
                name: "floor",
                reason: format!("must lie strictly between 0 and 1, got {}", self.floor),
            });
        }
        let labels = labels_of(z, "the probe")?;
        let (k, counts) = class_counts(&labels, self.classes)?;
        let held_out = match given {
            Some(h) => {
                h.check(n)?;
                h
            }
            None => HeldOut::random(n, self.train_fraction, self.seed)?,
        };
        let n_train = held_out.train.len();
        if n_train < 2 || held_out.test.is_empty() {
            return Err(MiError::TooFewSamples {
                context: "a probe with a held-out split".into(),
                needed: 4,
                got: n,
            });
        }
        let (train, test) = (&held_out.train[..], &held_out.test[..]);
        let d = u.cols();
        // Standardise with train statistics; constant features stay as they are.
        let mut mean = vec![0.0; d];
        let mut sd = vec![0.0; d];
        for &i in train {
            for (m, v) in mean.iter_mut().zip(u.row(i)) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n_train as f64);
        for &i in train {
            for ((s, m), v) in sd.iter_mut().zip(&mean).zip(u.row(i)) {
                *s += (v - m) * (v - m);
            }
        }
        sd.iter_mut().for_each(|s| {
            *s = if *s > 0.0 {
                (*s / n_train as f64).sqrt()
            } else {
                1.0
            }
        });
        let standardised = |rows: &[usize]| -> Vec<f64> {
            let mut out = Vec::with_capacity(rows.len() * d);
            for &i in rows {
                out.extend(
                    u.row(i)
                        .iter()
                        .zip(&mean)
                        .zip(&sd)
                        .map(|((v, m), s)| (v - m) / s),
                );
            }
            out
        };
        let xtrain = standardised(train);
        let xtest = standardised(test);
        let ytrain: Vec<usize> = train.iter().map(|&i| labels[i]).collect();
        let ytest: Vec<usize> = test.iter().map(|&i| labels[i]).collect();

        let (w, kp) = if scalar {
            (adam_scalar(self, &xtrain, &ytrain, d, k), k)
        } else {
            adam_blocked(self, &xtrain, &ytrain, d, k)
        };
        let mut probs = vec![0.0; ytest.len() * kp];
        if scalar {
            for (x, p) in xtest.chunks_exact(d.max(1)).zip(probs.chunks_exact_mut(k)) {
                softmax(&w, x, k, p);
            }
        } else {
            softmax_rows(&w, &xtest, d, k, kp, &mut probs);
        }
        let scored = score(&probs, kp, k, &ytest, self.floor, &counts)?;
        let n_test = ytest.len();
        let entropy = entropy(&counts);
        Ok(ProbeResult {
            mi_lower_bound: entropy - scored.cross_entropy,
            entropy,
            cross_entropy: scored.cross_entropy,
            accuracy: scored.correct as f64 / n_test as f64,
            n_train,
            n_test,
            classes: counts.iter().filter(|&&c| c > 0).count(),
            certificate: scored.certificate,
            held_out,
        })
    }
}

/// Rows per gradient chunk. The chunks' gradients are summed in chunk order, so this fixes the
/// summation order, and with it the bits of the fit (and every cache key downstream).
const CHUNK_ROWS: usize = 256;
/// Classes per kernel panel; the class count is padded to a multiple of it.
const LANES: usize = 4;
/// Rows (logits) or features (gradient) per register tile.
const TILE: usize = 4;
const ADAM: (f64, f64, f64, f64) = (0.05, 0.9, 0.999, 1e-8);

/// The fit: weights (d + 1) x k, bias last, Adam on the mean cross-entropy (a convex problem),
/// one full-batch step at a time. Each step is two matrix products per chunk of rows, logits
/// X W and gradient X^T (P - Y), in register tiles over contiguous rows and class panels.
/// Every sum runs in the order of [`adam_scalar`] (features in order for a logit, rows in order
/// within a chunk, chunks in order), with no fused multiply-add, so the two give the same bits.
/// Returns the weights with the class count padded to `kp` (the padding stays 0), and `kp`.
fn adam_blocked(p: &Probe, x: &[f64], y: &[usize], d: usize, k: usize) -> (Vec<f64>, usize) {
    let kp = k.div_ceil(LANES) * LANES;
    let width = d + 1;
    let n_train = y.len();
    let mut w = vec![0.0; width * kp];
    let (mut m1, mut m2) = (vec![0.0; w.len()], vec![0.0; w.len()]);
    let (lr, b1, b2, eps) = ADAM;
    for step in 1..=p.steps {
        let grad = x
            .par_chunks(CHUNK_ROWS * d)
            .zip(y.par_chunks(CHUNK_ROWS))
            .map(|(xs, ys)| {
                let mut probs = vec![0.0; ys.len() * kp];
                softmax_rows(&w, xs, d, k, kp, &mut probs);
                for (row, &c) in probs.chunks_exact_mut(kp).zip(ys) {
                    row[c] -= 1.0;
                }
                let mut g = vec![0.0; width * kp];
                gradient(xs, &probs, d, kp, &mut g);
                g
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold(vec![0.0; width * kp], |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            });
        let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for j in 0..width {
            for c in 0..k {
                let idx = j * kp + c;
                let reg = if j < d { p.l2 * w[idx] } else { 0.0 };
                let g = grad[idx] / n_train as f64 + reg;
                m1[idx] = b1 * m1[idx] + (1.0 - b1) * g;
                m2[idx] = b2 * m2[idx] + (1.0 - b2) * g * g;
                let mhat = m1[idx] / c1;
                let vhat = m2[idx] / c2;
                w[idx] -= lr * mhat / (vhat.sqrt() + eps);
            }
        }
    }
    (w, kp)
}

/// Softmax probabilities of the rows of `x` (row-major, `d` wide) under padded weights `w`
/// into `out` (rows x `kp`; the padding columns are set to 0).
fn softmax_rows(w: &[f64], x: &[f64], d: usize, k: usize, kp: usize, out: &mut [f64]) {
    logits(w, x, d, kp, out);
    for row in out.chunks_exact_mut(kp) {
        let (o, pad) = row.split_at_mut(k);
        pad.fill(0.0);
        let max = o.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for v in o.iter_mut() {
            *v = (*v - max).exp();
            total += *v;
        }
        o.iter_mut().for_each(|v| *v /= total);
    }
}

/// `out = X W[..d] + bias`, rows of X in register tiles.
fn logits(w: &[f64], x: &[f64], d: usize, kp: usize, out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked on the line above), all this function needs.
        unsafe { logits_avx2(w, x, d, kp, out) };
        return;
    }
    logits_with::<TILE>(w, x, d, kp, out);
}

/// [`logits`] compiled for AVX2 (4 f64 lanes), with twice the rows per tile to keep its
/// registers busy. AVX2 only, never FMA: the products and sums are rounded one by one as in
/// the portable version, so both give the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn logits_avx2(w: &[f64], x: &[f64], d: usize, kp: usize, out: &mut [f64]) {
    logits_with::<{ 2 * TILE }>(w, x, d, kp, out);
}

#[inline(always)]
fn logits_with<const T: usize>(w: &[f64], x: &[f64], d: usize, kp: usize, out: &mut [f64]) {
    let rows = out.len() / kp;
    let mut r = 0;
    while r + T <= rows {
        logits_tile::<T>(w, x, d, kp, r, out);
        r += T;
    }
    while r < rows {
        logits_tile::<1>(w, x, d, kp, r, out);
        r += 1;
    }
}

#[inline(always)]
fn logits_tile<const T: usize>(
    w: &[f64],
    x: &[f64],
    d: usize,
    kp: usize,
    r: usize,
    out: &mut [f64],
) {
    // The tile's rows feature-major, so the inner loop reads T contiguous values per feature.
    let mut pack = vec![[0.0f64; T]; d];
    for (t, row) in x[r * d..(r + T) * d].chunks_exact(d).enumerate() {
        for (p, &v) in pack.iter_mut().zip(row) {
            p[t] = v;
        }
    }
    let bias = &w[d * kp..(d + 1) * kp];
    for cb in (0..kp).step_by(LANES) {
        let mut acc = [[0.0f64; LANES]; T];
        for (wrow, xs) in w.chunks_exact(kp).zip(&pack) {
            let wv = &wrow[cb..cb + LANES];
            for (a, &xv) in acc.iter_mut().zip(xs) {
                for l in 0..LANES {
                    a[l] += wv[l] * xv;
                }
            }
        }
        for (t, a) in acc.iter().enumerate() {
            let o = &mut out[(r + t) * kp + cb..(r + t) * kp + cb + LANES];
            for l in 0..LANES {
                o[l] = a[l] + bias[cb + l];
            }
        }
    }
}

/// `g = X^T P` (features in register tiles) and, in its last row, the column sums of P.
fn gradient(x: &[f64], p: &[f64], d: usize, kp: usize, g: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked on the line above), all this function needs.
        unsafe { gradient_avx2(x, p, d, kp, g) };
        return;
    }
    gradient_with::<TILE>(x, p, d, kp, g);
}

/// [`gradient`] compiled for AVX2, never FMA (see [`logits_avx2`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gradient_avx2(x: &[f64], p: &[f64], d: usize, kp: usize, g: &mut [f64]) {
    gradient_with::<{ 2 * TILE }>(x, p, d, kp, g);
}

#[inline(always)]
fn gradient_with<const T: usize>(x: &[f64], p: &[f64], d: usize, kp: usize, g: &mut [f64]) {
    let mut j = 0;
    while j + T <= d {
        gradient_tile::<T>(x, p, d, kp, j, g);
        j += T;
    }
    while j < d {
        gradient_tile::<1>(x, p, d, kp, j, g);
        j += 1;
    }
    let bias = &mut g[d * kp..(d + 1) * kp];
    for row in p.chunks_exact(kp) {
        bias.iter_mut().zip(row).for_each(|(b, v)| *b += v);
    }
}

#[inline(always)]
fn gradient_tile<const T: usize>(
    x: &[f64],
    p: &[f64],
    d: usize,
    kp: usize,
    j: usize,
    g: &mut [f64],
) {
    for cb in (0..kp).step_by(LANES) {
        let mut acc = [[0.0f64; LANES]; T];
        for (prow, xrow) in p.chunks_exact(kp).zip(x.chunks_exact(d)) {
            let pv = &prow[cb..cb + LANES];
            let xv = &xrow[j..j + T];
            for (a, &xj) in acc.iter_mut().zip(xv) {
                for l in 0..LANES {
                    a[l] += pv[l] * xj;
                }
            }
        }
        for (t, a) in acc.iter().enumerate() {
            g[(j + t) * kp + cb..(j + t) * kp + cb + LANES].copy_from_slice(a);
        }
    }
}

/// The fit as it was before the blocked kernels, kept as their reference: one row at a time,
/// weights read and gradient written with stride k.
fn adam_scalar(p: &Probe, x: &[f64], y: &[usize], d: usize, k: usize) -> Vec<f64> {
    let n_train = y.len();
    let width = d + 1;
    let mut w = vec![0.0; width * k];
    let (mut m1, mut m2) = (vec![0.0; w.len()], vec![0.0; w.len()]);
    let (lr, b1, b2, eps) = ADAM;
    for step in 1..=p.steps {
        let grad = x
            .par_chunks(CHUNK_ROWS * d)
            .zip(y.par_chunks(CHUNK_ROWS))
            .map(|(xs, ys)| {
                let mut g = vec![0.0; width * k];
                let mut p = vec![0.0; k];
                for (x, &y) in xs.chunks_exact(d).zip(ys) {
                    softmax(&w, x, k, &mut p);
                    p[y] -= 1.0;
                    for (c, pc) in p.iter().enumerate() {
                        for (j, xj) in x.iter().enumerate() {
                            g[j * k + c] += pc * xj;
                        }
                        g[d * k + c] += pc;
                    }
                }
                g
            })
            .collect::<Vec<_>>()
            // Summed in chunk order: a rayon `reduce` combines in whatever order the
            // work was split, so the last bits of the fit (and every cache key
            // downstream) changed from run to run.
            .into_iter()
            .fold(vec![0.0; width * k], |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            });
        for (idx, g) in grad.iter().enumerate() {
            let reg = if idx < d * k { p.l2 * w[idx] } else { 0.0 };
            let g = g / n_train as f64 + reg;
            m1[idx] = b1 * m1[idx] + (1.0 - b1) * g;
            m2[idx] = b2 * m2[idx] + (1.0 - b2) * g * g;
            let mhat = m1[idx] / (1.0 - b1.powi(step as i32));
            let vhat = m2[idx] / (1.0 - b2.powi(step as i32));
            w[idx] -= lr * mhat / (vhat.sqrt() + eps);
        }
    }
    w
}

fn softmax(w: &[f64], x: &[f64], k: usize, out: &mut [f64]) {
    let d = x.len();
    for (c, o) in out.iter_mut().enumerate() {
        *o = w[d * k + c]
            + x.iter()
                .enumerate()
                .map(|(j, xj)| w[j * k + c] * xj)
                .sum::<f64>();
    }
    let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for o in out.iter_mut() {
        *o = (*o - max).exp();
        total += *o;
    }
    out.iter_mut().for_each(|o| *o /= total);
}

impl Estimator for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn direction(&self) -> Direction {
        Direction::LowerBound
    }

    fn estimate(&self, x: &Matrix, y: &Matrix) -> Result<MiEstimate, MiError> {
        let r = self.fit(x, y)?;
        Ok(MiEstimate {
            nats: r.mi_lower_bound,
            n: x.rows(),
            dims: (x.cols(), 1),
            direction: Direction::LowerBound,
            note: Some(format!(
                "H(Z) {:.4} - held-out cross-entropy {:.4}; held-out accuracy {:.4} on {} rows ({} classes)",
                r.entropy, r.cross_entropy, r.accuracy, r.n_test, r.classes
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn clusters(n: usize, separation: f64, seed: u64) -> (Matrix, Matrix) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut u = Vec::new();
        let mut z = Vec::new();
        for i in 0..n {
            let c = i % 3;
            let centre = [(c as f64) * separation, -(c as f64) * separation];
            for m in centre {
                let e: f64 = StandardNormal.sample(&mut rng);
                u.push(m + e);
            }
            z.push(c as f64);
        }
        (Matrix::new(n, 2, u).unwrap(), Matrix::new(n, 1, z).unwrap())
    }

    #[test]
    fn separable_classes_approach_h_z_and_noise_gives_about_zero() {
        let (u, z) = clusters(1500, 8.0, 1);
        let r = Probe::default().fit(&u, &z).unwrap();
        assert!((r.entropy - 3f64.ln()).abs() < 1e-3);
        assert!(r.accuracy > 0.99, "{r:?}");
        assert!(r.mi_lower_bound > 0.95 * 3f64.ln(), "{r:?}");
        let (u, z) = clusters(1500, 0.0, 2);
        let r = Probe::default().fit(&u, &z).unwrap();
        assert!(r.mi_lower_bound.abs() < 0.05, "{r:?}");
        assert!(
            r.mi_lower_bound <= 0.02,
            "a bound on independent data must not be clearly positive: {r:?}"
        );
    }

    #[test]
    fn the_fit_is_bitwise_the_same_on_any_number_of_threads() {
        // 4,000 training rows make 13 chunks, so rayon splits them differently per pool.
        let (u, z) = clusters(5000, 1.5, 3);
        let fit = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let probe = Probe {
                steps: 40,
                ..Probe::default()
            };
            pool.install(|| probe.fit(&u, &z).unwrap())
        };
        let one = fit(1);
        for threads in [2, 3, 8] {
            let r = fit(threads);
            assert_eq!(
                r.mi_lower_bound.to_bits(),
                one.mi_lower_bound.to_bits(),
                "{threads} threads"
            );
            assert_eq!(r.cross_entropy.to_bits(), one.cross_entropy.to_bits());
        }
    }

    #[test]
    fn blocked_kernels_give_the_scalar_loops_bits() {
        // Widths and class counts on and off the tile sizes, a last chunk and a last row tile
        // that are partial, one feature, and a constant feature.
        for (n, d, k, steps, seed) in [
            (1500, 128, 10, 30, 1u64),
            (700, 7, 3, 50, 2),
            (333, 1, 2, 40, 3),
            (1100, 13, 5, 25, 4),
            (257, 4, 4, 60, 5),
            (900, 33, 17, 15, 6),
        ] {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut u = Vec::with_capacity(n * d);
            let mut z = Vec::with_capacity(n);
            for i in 0..n {
                let c = (i * 7 + i / 3) % k;
                for j in 0..d {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    let signal = if j % k == c { 1.5 } else { 0.0 };
                    u.push(if j == 2 { 3.0 } else { signal + e });
                }
                z.push(c as f64);
            }
            let (u, z) = (Matrix::new(n, d, u).unwrap(), Matrix::new(n, 1, z).unwrap());
            let probe = Probe {
                steps,
                seed,
                ..Probe::default()
            };
            let blocked = probe.fit(&u, &z).unwrap();
            let scalar = probe.fit_scalar_reference(&u, &z).unwrap();
            assert_eq!(
                blocked.mi_lower_bound.to_bits(),
                scalar.mi_lower_bound.to_bits(),
                "n {n} d {d} k {k}"
            );
            assert_eq!(blocked, scalar, "n {n} d {d} k {k}");
        }
    }

    /// `Probe::default()` on `clusters(1500, 1.0, 9)`, computed by the probe on main before
    /// the blocked kernels (0.4284735801144375 nats, cross-entropy 0.6701387085536721).
    const MAIN_BOUND: u64 = 0x3fdb6c1c7372a8ac;
    const MAIN_CE: u64 = 0x3fe571c6bba0b1be;

    #[test]
    fn the_fit_keeps_the_values_of_main() {
        let (u, z) = clusters(1500, 1.0, 9);
        let r = Probe::default().fit(&u, &z).unwrap();
        assert_eq!(
            (r.mi_lower_bound.to_bits(), r.cross_entropy.to_bits()),
            (MAIN_BOUND, MAIN_CE),
            "{} {}",
            r.mi_lower_bound,
            r.cross_entropy
        );
    }

    #[test]
    fn bad_labels_are_errors() {
        let u = Matrix::from_rows(&[[0.0], [1.0], [2.0], [3.0]]).unwrap();
        let z = Matrix::from_rows(&[[0.0], [0.5], [1.0], [1.0]]).unwrap();
        assert!(Probe::default()
            .fit(&u, &z)
            .unwrap_err()
            .to_string()
            .contains("row 1"));
        let one = Matrix::from_rows(&[[1.0], [1.0], [1.0], [1.0]]).unwrap();
        assert!(matches!(
            Probe::default().fit(&u, &one),
            Err(MiError::SingleClass { .. })
        ));
    }
}
