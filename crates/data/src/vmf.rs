//! von Mises-Fisher pairs: a ground truth whose optimal InfoNCE critic is known exactly, for
//! checking critics, temperatures and InfoNCE bounds against an exact I(X;Y).
//!
//! X is uniform on the unit sphere S^{d-1} in R^d and Y | X ~ vMF(mean X, concentration
//! kappa), with density p(y|x) = C_d(kappa) exp(kappa x.y) on the sphere. Y is then uniform
//! too, p(y) = 1 / |S^{d-1}|, so
//!
//!   log p(y|x) / p(y) = log C_d(kappa) + log |S^{d-1}| + kappa x.y:
//!
//! the critic kappa x.y (cosine similarity at temperature 1/kappa) is the optimal InfoNCE
//! critic up to a constant, and I(X;Y) = log C_d + log |S^{d-1}| + kappa A_d(kappa), where
//! A_d = E[x.y] = I_{d/2}(kappa) / I_{d/2-1}(kappa) is the mean resultant length.
//!
//! With nu = d/2 - 1, I_nu(k) = (k/2)^nu / Gamma(nu + 1) * S(k) where
//! S(k) = 0F1(; nu + 1; k^2/4) = sum_j t_j, t_j = (k^2/4)^j / (j! (nu + 1)_j). In
//! C_d = k^nu / ((2 pi)^{d/2} I_nu(k)) and |S^{d-1}| = 2 pi^{d/2} / Gamma(d/2) every Gamma
//! function and power of 2 pi cancels: log C_d + log |S^{d-1}| = -log S(kappa). And
//! A_d = (kappa/2) sum_j t_j / (nu + 1 + j) / sum_j t_j over the same terms, so
//!
//!   I(X;Y) = kappa A_d(kappa) - log S(kappa)
//!
//! comes from one series of positive terms (no cancellation inside the sums; rescaled by
//! powers of two as it grows, so terms of size e^kappa do not overflow). S(kappa) is also
//! E[exp(kappa w)] for w = x.y with x, y independent and uniform, which is how the tests
//! check it independently (quadrature over the angle). For d = 3,
//! I = log(kappa / sinh kappa) + kappa coth kappa - 1 in closed form, used for kappa >= 1;
//! below 1 the closed form loses digits to cancellation (both terms approach 0) while the
//! series, summed from its second term with ln_1p, stays exact to rounding. The series is
//! used up to [`KAPPA_MAX_SERIES`], where the tests measure it against the d = 3 and d = 5
//! closed forms; beyond that the task is refused for d != 3 rather than reported unchecked.
//!
//! Sampling: X is a normalised standard normal vector. The cosine w = x.y has density
//! proportional to exp(kappa w) (1 - w^2)^{(d-3)/2} on [-1, 1]; for d = 3 it is drawn by the
//! exact inverse CDF w = 1 + log(u + (1 - u) e^{-2 kappa}) / kappa, otherwise by Wood's
//! (1994) rejection sampler. Then Y = w X + sqrt(1 - w^2) V with V uniform on the unit
//! vectors orthogonal to X (a normal vector with its X component removed, normalised).

use std::f64::consts::LN_2;

use rand::Rng;
use rand_distr::{Beta, Distribution, StandardNormal};
use thiserror::Error;

/// Largest concentration accepted for d != 3, where I(X;Y) comes from the series. The
/// tests compare the series with the closed forms of d = 3 and d = 5 up to here (agreement
/// about 1e-11 nats); the number of terms grows like kappa, and with it the rounding.
pub const KAPPA_MAX_SERIES: f64 = 1.0e4;

/// Invalid vMF task parameters.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum VmfError {
    /// A dimension below 2 (S^0 is two points, not a sphere with a direction to sample).
    #[error("vmf: dim must be at least 2 (X and Y lie on the unit sphere in R^dim), got {got}")]
    Dimension {
        /// Given dimension.
        got: usize,
    },
    /// A concentration that is not finite or not positive.
    #[error("vmf: kappa must be finite and > 0, got {got}")]
    Kappa {
        /// Given concentration.
        got: f64,
    },
    /// A concentration beyond the checked range of the series (d != 3).
    #[error(
        "vmf: kappa = {got} is above {max} for dim = {dim}, beyond the range where the Bessel \
         series for I(X;Y) is checked (dim = 3 has a closed form and takes any kappa)"
    )]
    KappaTooLarge {
        /// Given concentration.
        got: f64,
        /// Largest accepted concentration.
        max: f64,
        /// Dimension.
        dim: usize,
    },
    /// A request for zero samples.
    #[error("vmf: sample size must be at least 1")]
    EmptySample,
    /// n * dim does not fit in memory addresses.
    #[error("vmf: n x dim = {n} x {dim} is too large")]
    TooLarge {
        /// Number of samples.
        n: usize,
        /// Dimension.
        dim: usize,
    },
}

/// X uniform on S^{dim-1}, Y | X ~ vMF(X, kappa).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmfTask {
    /// Dimension d of the ambient space (X, Y in R^d on the unit sphere), at least 2.
    pub dim: usize,
    /// Concentration kappa > 0.
    pub kappa: f64,
}

/// Exact information quantities of a [`VmfTask`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmfTruth {
    /// I(X;Y) in nats.
    pub mi: f64,
    /// A_d(kappa) = E[x.y], the mean resultant length.
    pub mean_cosine: f64,
    /// log C_d(kappa) + log |S^{d-1}| = -log 0F1(; d/2; kappa^2/4): the constant that makes
    /// kappa x.y the exact log density ratio log p(y|x) / p(y).
    pub log_ratio_offset: f64,
}

impl VmfTask {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), VmfError> {
        if self.dim < 2 {
            return Err(VmfError::Dimension { got: self.dim });
        }
        if !(self.kappa.is_finite() && self.kappa > 0.0) {
            return Err(VmfError::Kappa { got: self.kappa });
        }
        if self.dim != 3 && self.kappa > KAPPA_MAX_SERIES {
            return Err(VmfError::KappaTooLarge {
                got: self.kappa,
                max: KAPPA_MAX_SERIES,
                dim: self.dim,
            });
        }
        Ok(())
    }

    /// I(X;Y), A_d(kappa) and the log density ratio's offset, exact (see the module
    /// documentation).
    pub fn truth(&self) -> Result<VmfTruth, VmfError> {
        self.validate()?;
        let (log_s, a) = if self.dim == 3 && self.kappa >= 1.0 {
            closed_form_d3(self.kappa)
        } else {
            bessel_series(self.dim, self.kappa)
        };
        Ok(VmfTruth {
            mi: self.kappa * a - log_s,
            mean_cosine: a,
            log_ratio_offset: -log_s,
        })
    }

    /// `n` pairs: x and y row-major n x dim, every row a unit vector.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        rng: &mut R,
    ) -> Result<(Vec<f64>, Vec<f64>), VmfError> {
        self.validate()?;
        if n == 0 {
            return Err(VmfError::EmptySample);
        }
        let d = self.dim;
        let total = n.checked_mul(d).ok_or(VmfError::TooLarge { n, dim: d })?;
        let cosine = CosineSampler::new(d, self.kappa)?;
        let mut x = vec![0.0; total];
        let mut y = vec![0.0; total];
        let mut v = vec![0.0; d];
        for (xr, yr) in x.chunks_exact_mut(d).zip(y.chunks_exact_mut(d)) {
            uniform_on_sphere(rng, xr);
            let (w, r) = cosine.draw(rng);
            orthogonal_direction(rng, xr, &mut v);
            for j in 0..d {
                yr[j] = w * xr[j] + r * v[j];
            }
            // w^2 + r^2 = 1 and x is orthogonal to v up to rounding; renormalising keeps
            // y on the sphere to the last bit, which a cosine critic assumes.
            normalise(yr);
        }
        Ok((x, y))
    }
}

/// d = 3 in closed form: (log S, A) with S = sinh(kappa) / kappa and
/// A = coth(kappa) - 1/kappa; accurate for kappa >= 1 and any larger kappa (log sinh is
/// written so that it does not overflow).
fn closed_form_d3(kappa: f64) -> (f64, f64) {
    let ln_sinh = kappa - LN_2 + (-(-2.0 * kappa).exp()).ln_1p();
    let coth = 1.0 / kappa.tanh();
    (ln_sinh - kappa.ln(), coth - 1.0 / kappa)
}

/// Powers of two by which the series is rescaled: division by them is exact.
const RESCALE_LOG2: i32 = 500;

/// (log S, A) from the series S = sum_j t_j, t_j = (kappa^2/4)^j / (j! (d/2)_j), and
/// A = (kappa/2) sum_j t_j / (d/2 + j) / S (see the module documentation).
fn bessel_series(dim: usize, kappa: f64) -> (f64, f64) {
    let b = dim as f64 / 2.0; // nu + 1
    let x = kappa * kappa / 4.0;
    let rescale = 2f64.powi(RESCALE_LOG2);
    // t_0 = 1 is kept apart from the rest so that log S = ln_1p(rest) keeps every digit
    // when kappa is small and S barely exceeds 1.
    let (mut head, mut rest, mut t) = (1.0, 0.0, 1.0);
    let mut ratio_sum = 1.0 / b;
    let mut rescales = 0i32;
    // The terms rise while x > (j + 1)(b + j) and fall after: the sum stops once they are
    // past the peak and below the last bit. The cap is far above what that needs (the peak
    // is near j = kappa/2, the fall to 1e-17 of the sum takes a few sqrt(kappa) more).
    let cap = (4.0 * kappa) as usize + 10 * dim + 1000;
    for j in 0..cap {
        let jf = j as f64;
        let factor = x / ((jf + 1.0) * (b + jf));
        t *= factor;
        rest += t;
        ratio_sum += t / (b + jf + 1.0);
        if rest > rescale {
            t /= rescale;
            rest /= rescale;
            head /= rescale;
            ratio_sum /= rescale;
            rescales += 1;
        }
        if factor < 1.0 && t <= 1e-17 * (head + rest) {
            break;
        }
    }
    let s = head + rest;
    let log_s = if rescales == 0 {
        rest.ln_1p()
    } else {
        f64::from(rescales * RESCALE_LOG2) * LN_2 + s.ln()
    };
    (log_s, 0.5 * kappa * ratio_sum / s)
}

/// Fills `v` with a uniform unit vector (a normalised standard normal vector).
fn uniform_on_sphere<R: Rng + ?Sized>(rng: &mut R, v: &mut [f64]) {
    loop {
        for c in v.iter_mut() {
            *c = StandardNormal.sample(rng);
        }
        // A zero (or subnormal) draw has no direction; it has probability ~0, but redraw.
        if norm(v) > 1e-100 {
            normalise(v);
            return;
        }
    }
}

/// Fills `v` with a unit vector uniform among those orthogonal to the unit vector `x`.
fn orthogonal_direction<R: Rng + ?Sized>(rng: &mut R, x: &[f64], v: &mut [f64]) {
    loop {
        for c in v.iter_mut() {
            *c = StandardNormal.sample(rng);
        }
        let along: f64 = v.iter().zip(x).map(|(a, b)| a * b).sum();
        for (c, &xc) in v.iter_mut().zip(x) {
            *c -= along * xc;
        }
        // The projection of a normal vector is normal on the orthogonal complement, so its
        // direction is uniform there; a (near-)zero projection is redrawn.
        if norm(v) > 1e-100 {
            normalise(v);
            return;
        }
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|c| c * c).sum::<f64>().sqrt()
}

fn normalise(v: &mut [f64]) {
    let s = norm(v);
    for c in v.iter_mut() {
        *c /= s;
    }
}

/// Draws (w, sqrt(1 - w^2)) for the cosine w = x.y of a vMF draw around x.
enum CosineSampler {
    /// d = 3: w has density proportional to exp(kappa w) on [-1, 1], inverted exactly.
    InverseCdf { kappa: f64, exp_m2k: f64 },
    /// Wood (1994), any d >= 2.
    Wood {
        kappa: f64,
        b: f64,
        x0: f64,
        c: f64,
        m1: f64,
        beta: Beta<f64>,
    },
}

impl CosineSampler {
    fn new(dim: usize, kappa: f64) -> Result<Self, VmfError> {
        if dim == 3 {
            return Ok(CosineSampler::InverseCdf {
                kappa,
                exp_m2k: (-2.0 * kappa).exp(),
            });
        }
        Self::wood(dim, kappa)
    }

    fn wood(dim: usize, kappa: f64) -> Result<Self, VmfError> {
        let m1 = dim as f64 - 1.0;
        // b = (-2 kappa + sqrt(4 kappa^2 + m1^2)) / m1, rationalised: the textbook form
        // cancels catastrophically when kappa >> m1.
        let b = m1 / (2.0 * kappa + (4.0 * kappa * kappa + m1 * m1).sqrt());
        let x0 = (1.0 - b) / (1.0 + b);
        // 1 - x0^2 = 4 b / (1 + b)^2, without the cancellation as x0 -> 1.
        let c = kappa * x0 + m1 * ((4.0 * b).ln() - 2.0 * b.ln_1p());
        let beta = Beta::new(m1 / 2.0, m1 / 2.0).map_err(|_| VmfError::Dimension { got: dim })?;
        Ok(CosineSampler::Wood {
            kappa,
            b,
            x0,
            c,
            m1,
            beta,
        })
    }

    fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> (f64, f64) {
        match self {
            CosineSampler::InverseCdf { kappa, exp_m2k } => {
                // u in (0, 1], so the logarithm's argument is at least u > 0 even when
                // e^{-2 kappa} underflows to 0.
                let u = 1.0 - rng.random::<f64>();
                // t = 1 - w directly: w is near 1 for large kappa, and 1 - w^2 = t (2 - t)
                // keeps the sine's digits there.
                let t = (-(u + (1.0 - u) * exp_m2k).ln() / kappa).clamp(0.0, 2.0);
                (1.0 - t, (t * (2.0 - t)).sqrt())
            }
            CosineSampler::Wood {
                kappa,
                b,
                x0,
                c,
                m1,
                beta,
            } => loop {
                let z: f64 = beta.sample(rng);
                let denom = 1.0 - (1.0 - b) * z;
                let w = (1.0 - (1.0 + b) * z) / denom;
                let u = 1.0 - rng.random::<f64>();
                if kappa * w + m1 * (1.0 - x0 * w).ln() - c >= u.ln() {
                    // 1 - w^2 = (1 - w)(1 + w) = 4 b z (1 - z) / denom^2, exact near w = 1.
                    let r = 2.0 * (b * z * (1.0 - z)).max(0.0).sqrt() / denom;
                    return (w.clamp(-1.0, 1.0), r);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::f64::consts::PI;

    /// log E[exp(kappa w)] and E[w exp(kappa w)] / E[exp(kappa w)] for w = x.y, x and y
    /// independent uniform on S^{d-1}, by Simpson quadrature over the angle theta
    /// (w = cos theta has density proportional to sin^{d-2} theta on [0, pi]). Independent
    /// of the Bessel series: this is the integral representation of I_nu.
    fn quadrature(dim: usize, kappa: f64) -> (f64, f64) {
        let n = 40_000;
        let h = PI / n as f64;
        let (mut den, mut num, mut num_w) = (0.0, 0.0, 0.0);
        for i in 0..=n {
            let th = i as f64 * h;
            let wgt = if i == 0 || i == n {
                1.0
            } else if i % 2 == 1 {
                4.0
            } else {
                2.0
            };
            let jac = th.sin().powi(dim as i32 - 2);
            // exp(kappa (cos theta - 1)): scaled by e^{-kappa} so that it cannot overflow.
            let e = (kappa * (th.cos() - 1.0)).exp();
            den += wgt * jac;
            num += wgt * jac * e;
            num_w += wgt * jac * e * th.cos();
        }
        (kappa + (num / den).ln(), num_w / num)
    }

    /// d = 5 in closed form: S = 3 (kappa cosh kappa - sinh kappa) / kappa^3 and
    /// A = I_{5/2} / I_{3/2} = ((1 + 3/kappa^2) tanh kappa - 3/kappa) / (1 - tanh kappa / kappa).
    fn closed_form_d5(kappa: f64) -> (f64, f64) {
        let th = kappa.tanh();
        // kappa cosh - sinh = cosh (kappa - tanh); log cosh without overflow.
        let ln_cosh = kappa - LN_2 + (-2.0 * kappa).exp().ln_1p();
        let log_s = 3f64.ln() + ln_cosh + (kappa - th).ln() - 3.0 * kappa.ln();
        let a = ((1.0 + 3.0 / (kappa * kappa)) * th - 3.0 / kappa) / (1.0 - th / kappa);
        (log_s, a)
    }

    #[test]
    fn reference_value_at_kappa_4() {
        let t = VmfTask { dim: 3, kappa: 4.0 }.truth().unwrap();
        let k: f64 = 4.0;
        let want = (k / k.sinh()).ln() + k / k.tanh() - 1.0;
        assert!((t.mi - want).abs() < 1e-14, "{t:?} vs {want}");
        assert!((t.mi - 1.0825).abs() < 5e-5, "{t:?}");
    }

    #[test]
    fn series_matches_closed_forms() {
        let mut worst = (0.0f64, 0.0f64);
        for kappa in [
            1.0, 2.0, 4.0, 10.0, 50.0, 200.0, 709.0, 1000.0, 5000.0, 1.0e4,
        ] {
            for (dim, closed) in [(3, closed_form_d3(kappa)), (5, closed_form_d5(kappa))] {
                let (ls, a) = bessel_series(dim, kappa);
                let (mi_s, mi_c) = (kappa * a - ls, kappa * closed.1 - closed.0);
                let (dmi, da) = ((mi_s - mi_c).abs(), (a - closed.1).abs());
                worst = (worst.0.max(dmi), worst.1.max(da));
                assert!(dmi < 1e-10, "d {dim} kappa {kappa}: {mi_s} vs {mi_c}");
                assert!(da < 1e-13, "d {dim} kappa {kappa}: A {a} vs {}", closed.1);
            }
        }
        eprintln!(
            "series vs closed forms: worst |dI| {:e}, |dA| {:e}",
            worst.0, worst.1
        );
    }

    #[test]
    fn small_kappa_is_exact_to_rounding() {
        // I = kappa^2 / (2d) - O(kappa^4): the leading term is exact at kappa = 1e-6.
        for dim in [2, 3, 7] {
            let t = VmfTask { dim, kappa: 1e-6 }.truth().unwrap();
            let want = 1e-12 / (2.0 * dim as f64);
            assert!((t.mi / want - 1.0).abs() < 1e-9, "{dim}: {t:?}");
            assert!((t.mean_cosine / (1e-6 / dim as f64) - 1.0).abs() < 1e-9);
        }
        // The d = 3 switch from series to closed form at kappa = 1 is seamless.
        let below = bessel_series(3, 1.0);
        let above = closed_form_d3(1.0);
        assert!((below.0 - above.0).abs() < 1e-15 && (below.1 - above.1).abs() < 1e-15);
    }

    #[test]
    fn series_matches_quadrature_of_the_integral_representation() {
        for dim in [2, 3, 4, 5, 8, 16, 64] {
            for kappa in [0.01, 0.5, 4.0, 20.0, 100.0] {
                let (ls, a) = bessel_series(dim, kappa);
                let (lq, aq) = quadrature(dim, kappa);
                assert!(
                    (ls - lq).abs() < 1e-10,
                    "d {dim} kappa {kappa}: {ls} vs {lq}"
                );
                assert!((a - aq).abs() < 1e-10, "d {dim} kappa {kappa}: {a} vs {aq}");
            }
        }
    }

    #[test]
    fn information_grows_with_kappa_and_approaches_its_asymptote() {
        // For d = 3, kappa coth kappa = kappa up to O(kappa e^{-2 kappa}) and
        // log sinh kappa = kappa - log 2 likewise, so I = log(2 kappa) - 1 for large kappa.
        let mut prev = 0.0;
        for kappa in [0.1, 1.0, 4.0, 16.0, 64.0, 256.0] {
            let mi = VmfTask { dim: 4, kappa }.truth().unwrap().mi;
            assert!(mi > prev, "{kappa}: {mi} after {prev}");
            prev = mi;
        }
        let k = 1e6;
        let mi = VmfTask { dim: 3, kappa: k }.truth().unwrap().mi;
        assert!((mi - ((2.0 * k).ln() - 1.0)).abs() < 1e-8, "{mi}");
    }

    struct Moments {
        mean: f64,
        se: f64,
    }

    fn moments(v: &[f64]) -> Moments {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Moments {
            mean,
            se: (var / n).sqrt(),
        }
    }

    fn check_sample(task: VmfTask, seed: u64) {
        let n = 200_000;
        let d = task.dim;
        let t = task.truth().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (x, y) = task.sample(n, &mut rng).unwrap();
        for row in x.chunks(d).chain(y.chunks(d)) {
            assert!((norm(row) - 1.0).abs() < 1e-14, "{row:?}");
        }
        let w: Vec<f64> = x
            .chunks(d)
            .zip(y.chunks(d))
            .map(|(a, b)| a.iter().zip(b).map(|(p, q)| p * q).sum())
            .collect();
        // Monte Carlo of E[log p(y|x) / p(y)] over the sampled pairs, with the normaliser
        // from quadrature (not from the series under test).
        let (log_s_quad, _) = quadrature(d, task.kappa);
        let terms: Vec<f64> = w.iter().map(|&c| task.kappa * c - log_s_quad).collect();
        let mc = moments(&terms);
        eprintln!(
            "vmf d {d} kappa {}: exact I {:.6}, Monte Carlo {:.6} +- {:.6} (diff {:.2} se)",
            task.kappa,
            t.mi,
            mc.mean,
            mc.se,
            (mc.mean - t.mi) / mc.se
        );
        assert!(
            (mc.mean - t.mi).abs() < 3.0 * mc.se,
            "I: {} vs {t:?}",
            mc.mean
        );
        let cos = moments(&w);
        assert!(
            (cos.mean - t.mean_cosine).abs() < 3.0 * cos.se,
            "A: {} +- {} vs {t:?}",
            cos.mean,
            cos.se
        );
        // Second moment: E[(x.y)^2] = 1 - (d - 1) A / kappa.
        let sq: Vec<f64> = w.iter().map(|c| c * c).collect();
        let sq = moments(&sq);
        let want = 1.0 - (d as f64 - 1.0) * t.mean_cosine / task.kappa;
        assert!(
            (sq.mean - want).abs() < 4.0 * sq.se,
            "E w^2 {} vs {want}",
            sq.mean
        );
        // X (and so Y) uniform: every coordinate has mean 0 and variance 1/d.
        for j in 0..d {
            let c: Vec<f64> = x.chunks(d).map(|r| r[j]).collect();
            let m = moments(&c);
            assert!(m.mean.abs() < 4.0 * m.se, "x{j} mean {}", m.mean);
            let var = c.iter().map(|v| v * v).sum::<f64>() / n as f64;
            assert!((var - 1.0 / d as f64).abs() < 0.01, "x{j} var {var}");
        }
    }

    #[test]
    fn samples_match_the_exact_information_and_mean_cosine() {
        check_sample(VmfTask { dim: 3, kappa: 4.0 }, 1);
        check_sample(VmfTask { dim: 2, kappa: 1.5 }, 2);
        check_sample(
            VmfTask {
                dim: 8,
                kappa: 10.0,
            },
            3,
        );
        check_sample(
            VmfTask {
                dim: 3,
                kappa: 300.0,
            },
            4,
        );
    }

    #[test]
    fn wood_agrees_with_the_inverse_cdf_in_three_dimensions() {
        let n = 200_000;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for kappa in [0.5, 4.0, 50.0] {
            let a = VmfTask { dim: 3, kappa }.truth().unwrap().mean_cosine;
            for s in [
                CosineSampler::wood(3, kappa).unwrap(),
                CosineSampler::new(3, kappa).unwrap(),
            ] {
                let draws: Vec<(f64, f64)> = (0..n).map(|_| s.draw(&mut rng)).collect();
                assert!(draws.iter().all(
                    |&(w, r)| (-1.0..=1.0).contains(&w) && (w * w + r * r - 1.0).abs() < 1e-12
                ));
                let w: Vec<f64> = draws.iter().map(|d| d.0).collect();
                let m = moments(&w);
                assert!(
                    (m.mean - a).abs() < 3.5 * m.se,
                    "kappa {kappa}: {} vs {a}",
                    m.mean
                );
            }
        }
    }

    #[test]
    fn invalid_tasks_are_errors() {
        assert_eq!(
            VmfTask { dim: 1, kappa: 1.0 }.validate(),
            Err(VmfError::Dimension { got: 1 })
        );
        for kappa in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                VmfTask { dim: 3, kappa }.truth(),
                Err(VmfError::Kappa { .. })
            ));
        }
        assert!(matches!(
            VmfTask { dim: 4, kappa: 2e4 }.truth(),
            Err(VmfError::KappaTooLarge { dim: 4, .. })
        ));
        assert!(VmfTask { dim: 3, kappa: 2e4 }.truth().is_ok());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(
            VmfTask { dim: 3, kappa: 1.0 }.sample(0, &mut rng),
            Err(VmfError::EmptySample)
        );
        assert!(matches!(
            VmfTask { dim: 3, kappa: 1.0 }.sample(usize::MAX / 2, &mut rng),
            Err(VmfError::TooLarge { .. })
        ));
        let msg = VmfTask {
            dim: 3,
            kappa: -2.0,
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("kappa must be finite and > 0, got -2"),
            "{msg}"
        );
    }
}
