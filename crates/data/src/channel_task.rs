//! Bounded class-conditional data through a known Gaussian augmentation channel, with exact
//! I(X;Y|Z): a ground truth for certificates that need bounded features and a known noise
//! channel (the Gaussian-channel upper bound on I(X;Y|Z), range-based concentration).
//!
//! Z is uniform over K classes. Given Z = z the d coordinates of X are independent,
//! X_j ~ Uniform[m_{z,j} - a, m_{z,j} + a], with class means m_{z,j} ~ N(0, spread^2) drawn
//! once from `means_seed` (the same draw as the mixture task's means, so with equal classes
//! and dim the two tasks share their class means). The view is Y = X + s E with
//! E ~ N(0, I_d).
//!
//! Given Z the pairs (X_j, Y_j) are independent and a mean shift changes no information, so
//! I(X;Y|Z) = d J(a / s), where J(r) = I(V; V + E) for V ~ Uniform[-r, r] and E ~ N(0, 1)
//! (scaling both by 1/s changes nothing). Y = V + E has density
//! f(y) = (Phi(y + r) - Phi(y - r)) / (2 r) and variance sigma^2 = 1 + r^2/3, and
//! h(f) = 1/2 log(2 pi e sigma^2) - D(f || N(0, sigma^2)), so
//!
//!   J(r) = 1/2 log(1 + r^2/3) - D(f || N(0, sigma^2)).
//!
//! The first term is the Gaussian-channel value 1/2 log det(I + Cov(X|Z)/s^2) per
//! coordinate, so D >= 0 is exactly how far that upper bound is from the truth. Computing
//! J this way instead of as h(f) - h(E) keeps its digits when r is small (J ~ r^2/6 while
//! both entropies are about 1.42). D is a 1-d integral of an analytic integrand, taken by
//! composite 20-point Gauss-Legendre over y >= 0 (f is even): panels of width 1/4 where f
//! falls from 1/(2r) to 0 (within 12 noise scales of the edge y = r, beyond which f is below
//! 1e-33), and of width sigma/2 on the flat part, where f is constant to 1e-33 and the
//! integrand a quadratic in y. For r < 1 the density itself is an integral of the normal
//! density over [y - r, y + r] (20-point Gauss-Legendre), since Phi(y + r) - Phi(y - r)
//! would cancel digits. The tests measure the result against a grid with halved and
//! quartered panels (agreement ~1e-15), against the direct -int f log f, against Monte
//! Carlo of E[log f(Y)] and against the limits. D falls like r^8 / 2700 (the squared excess
//! kurtosis / 48) as r -> 0 and sinks below the quadrature's rounding (a few 1e-16) near
//! r = 0.05; below r = 0.01 (D about 4e-20) J is the first term alone.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use thiserror::Error;

use cbound_core::special::erfc;

/// Invalid channel task parameters.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ChannelError {
    /// Fewer than one class, or more than a u32 label holds.
    #[error("channel: classes must be between 1 and {}, got {got}", u32::MAX)]
    Classes {
        /// Given number of classes.
        got: usize,
    },
    /// Zero dimension.
    #[error("channel: dim must be at least 1, got {got}")]
    Dimension {
        /// Given dimension.
        got: usize,
    },
    /// A scale parameter out of range.
    #[error("channel: {name} must be {expected}, got {value}")]
    Parameter {
        /// Parameter name (half_width, noise, spread).
        name: &'static str,
        /// What the parameter must satisfy.
        expected: &'static str,
        /// Given value.
        value: f64,
    },
    /// A request for zero samples.
    #[error("channel: sample size must be at least 1")]
    EmptySample,
    /// classes * dim or n * dim does not fit in memory addresses.
    #[error("channel: {what} x dim = {rows} x {dim} is too large")]
    TooLarge {
        /// Which count: `classes` or `n`.
        what: &'static str,
        /// Its value.
        rows: usize,
        /// Dimension.
        dim: usize,
    },
}

/// Samples (x, y, z): x and y row-major n x d, z the class of each row.
pub type ChannelSample = (Vec<f64>, Vec<f64>, Vec<u32>);

/// Uniform class-conditional features through a Gaussian channel (see the module
/// documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelTask {
    /// Number of classes K (>= 1); Z is uniform over them.
    pub classes: usize,
    /// Dimension d of X and of Y (>= 1).
    pub dim: usize,
    /// Half-width a (> 0) of every coordinate's uniform distribution around its class mean.
    pub half_width: f64,
    /// Standard deviation s (> 0) of the channel noise, Y = X + s E.
    pub noise: f64,
    /// Standard deviation of the class means (>= 0).
    pub spread: f64,
    /// Seed of the generator the class means are drawn from.
    pub means_seed: u64,
}

/// Exact quantities of a [`ChannelTask`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelTruth {
    /// I(X;Y|Z) in nats, d J(a/s).
    pub i_xy_given_z: f64,
    /// J(a/s): I(X_j; Y_j | Z) of one coordinate.
    pub per_coordinate: f64,
    /// The Gaussian-channel upper bound with the exact Cov(X|Z) = a^2/3 I:
    /// d/2 log(1 + a^2 / (3 s^2)) >= I(X;Y|Z).
    pub gaussian_bound: f64,
    /// H(Z) = log K.
    pub h_z: f64,
    /// E tr Cov(X|Z) = d a^2 / 3.
    pub trace_cov_x_given_z: f64,
    /// Smallest value any coordinate of X can take: min over classes and coordinates of
    /// m - a.
    pub feature_low: f64,
    /// Largest value any coordinate of X can take: max of m + a.
    pub feature_high: f64,
}

fn check_scale(name: &'static str, value: f64, positive: bool) -> Result<(), ChannelError> {
    let ok = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
    if ok {
        Ok(())
    } else {
        Err(ChannelError::Parameter {
            name,
            expected: if positive {
                "finite and > 0"
            } else {
                "finite and >= 0"
            },
            value,
        })
    }
}

impl ChannelTask {
    /// Checks every parameter.
    pub fn validate(&self) -> Result<(), ChannelError> {
        if self.classes == 0 || u32::try_from(self.classes).is_err() {
            return Err(ChannelError::Classes { got: self.classes });
        }
        if self.dim == 0 {
            return Err(ChannelError::Dimension { got: 0 });
        }
        self.classes
            .checked_mul(self.dim)
            .ok_or(ChannelError::TooLarge {
                what: "classes",
                rows: self.classes,
                dim: self.dim,
            })?;
        check_scale("half_width", self.half_width, true)?;
        check_scale("noise", self.noise, true)?;
        check_scale("spread", self.spread, false)?;
        Ok(())
    }

    /// Class means, row-major K x d, drawn from `means_seed` alone (so the same task always
    /// has the same means, whichever seed drives sampling); empty for an invalid task.
    pub fn means(&self) -> Vec<f64> {
        if self.validate().is_err() {
            return Vec::new();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.means_seed);
        (0..self.classes * self.dim)
            .map(|_| {
                let g: f64 = StandardNormal.sample(&mut rng);
                self.spread * g
            })
            .collect()
    }

    /// The exact quantities (see [`ChannelTruth`]).
    pub fn truth(&self) -> Result<ChannelTruth, ChannelError> {
        self.validate()?;
        let (a, s, d) = (self.half_width, self.noise, self.dim as f64);
        let per = uniform_gaussian_information(a / s);
        let means = self.means();
        // Computed with the same rounding as the samples (m + a (2u - 1) with 2u - 1 in
        // [-1, 1)), so no sample can fall outside the range by a last bit.
        let low = means.iter().map(|m| m - a).fold(f64::INFINITY, f64::min);
        let high = means
            .iter()
            .map(|m| m + a)
            .fold(f64::NEG_INFINITY, f64::max);
        Ok(ChannelTruth {
            i_xy_given_z: d * per,
            per_coordinate: per,
            gaussian_bound: 0.5 * d * (a * a / (3.0 * s * s)).ln_1p(),
            h_z: (self.classes as f64).ln(),
            trace_cov_x_given_z: d * a * a / 3.0,
            feature_low: low,
            feature_high: high,
        })
    }

    /// `n` samples: x and y row-major n x d, and the labels z.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        rng: &mut R,
    ) -> Result<ChannelSample, ChannelError> {
        self.validate()?;
        if n == 0 {
            return Err(ChannelError::EmptySample);
        }
        let d = self.dim;
        let total = n.checked_mul(d).ok_or(ChannelError::TooLarge {
            what: "n",
            rows: n,
            dim: d,
        })?;
        let means = self.means();
        let (a, s) = (self.half_width, self.noise);
        let mut x = vec![0.0; total];
        let mut y = vec![0.0; total];
        let mut z = Vec::with_capacity(n);
        for (xr, yr) in x.chunks_exact_mut(d).zip(y.chunks_exact_mut(d)) {
            let k = rng.random_range(0..self.classes);
            let m = &means[k * d..(k + 1) * d];
            for j in 0..d {
                let u: f64 = rng.random();
                xr[j] = m[j] + a * (2.0 * u - 1.0);
                let e: f64 = StandardNormal.sample(rng);
                yr[j] = xr[j] + s * e;
            }
            // validate() checked that every class index fits in u32.
            z.push(k as u32);
        }
        Ok((x, y, z))
    }
}

/// Below this ratio a/s the divergence term is dropped (it is below 4e-20; see the module
/// documentation).
const SMALL_RATIO: f64 = 1e-2;

/// Noise scales beyond the edge y = r where the integrals stop: f < Phi(-12) / (2r) there.
const TAIL: f64 = 12.0;

/// I(V; V + E) in nats for V ~ Uniform[-r, r] and E ~ N(0, 1), i.e. the information one
/// coordinate of the channel carries at r = half_width / noise (see the module
/// documentation). NaN for r that is not finite and positive.
pub fn uniform_gaussian_information(r: f64) -> f64 {
    if !(r.is_finite() && r > 0.0) {
        return f64::NAN;
    }
    let gaussian = 0.5 * (r * r / 3.0).ln_1p();
    if r < SMALL_RATIO {
        return gaussian;
    }
    // D >= 0 (Gibbs); a negative value is rounding, where D is below ~1e-16.
    gaussian - divergence_from_gaussian(r, 1.0).max(0.0)
}

/// f(y) * 2r = Phi(y + r) - Phi(y - r) for y >= 0.
///
/// For r >= 1 as a difference of upper tails: neither is a difference of numbers near 1,
/// and the second is at most e^{-2 r y} of the first, so nothing cancels. For r < 1 the
/// difference would cancel (both tails nearly equal, relative error ~1e-16 / r), so it is
/// the integral of the normal density over [y - r, y + r] instead, by 20-point
/// Gauss-Legendre: over an interval at most 2 wide the entire integrand is resolved to
/// rounding.
fn convolved_mass(y: f64, r: f64, rule: &Rule) -> f64 {
    if r >= 1.0 {
        let q = |t: f64| 0.5 * erfc(t / std::f64::consts::SQRT_2);
        return q(y - r) - q(y + r);
    }
    let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    let sum: f64 = rule
        .nodes
        .iter()
        .zip(&rule.weights)
        .map(|(&u, &w)| {
            let t = y + r * u;
            w * (-0.5 * t * t).exp()
        })
        .sum();
    r * inv_sqrt_2pi * sum
}

/// A Gauss-Legendre rule on [-1, 1].
struct Rule {
    nodes: Vec<f64>,
    weights: Vec<f64>,
}

impl Rule {
    fn new(n: usize) -> Rule {
        let (nodes, weights) = gauss_legendre(n);
        Rule { nodes, weights }
    }
}

/// D(f || N(0, 1 + r^2/3)) by composite Gauss-Legendre over y >= 0, doubled (f is even).
/// `refine` divides every panel (1: the production grid; the tests use 2 to check it).
fn divergence_from_gaussian(r: f64, refine: f64) -> f64 {
    let var = 1.0 + r * r / 3.0;
    // log f - log g with log g(y) = -y^2 / (2 var) - 1/2 log(2 pi var).
    let ln_norm = 0.5 * (2.0 * std::f64::consts::PI * var).ln();
    2.0 * integrate_density(r, refine, |y, f, ln_f| {
        f * (ln_f + y * y / (2.0 * var) + ln_norm)
    })
}

/// int_0^{r + TAIL} g(y, f(y), log f(y)) dy by composite Gauss-Legendre on the panels
/// described in the module documentation.
fn integrate_density(r: f64, refine: f64, g: impl Fn(f64, f64, f64) -> f64) -> f64 {
    let rule = Rule::new(20);
    let sigma = (1.0 + r * r / 3.0).sqrt();
    let edge_lo = (r - TAIL).max(0.0);
    let edge_hi = r + TAIL;
    let ln_2r = (2.0 * r).ln();
    let mut total = 0.0;
    for (lo, hi, width) in [(0.0, edge_lo, 0.5 * sigma), (edge_lo, edge_hi, 0.25)] {
        if hi <= lo {
            continue;
        }
        let panels = ((hi - lo) / width * refine).ceil().max(1.0) as usize;
        let h = (hi - lo) / panels as f64;
        for p in 0..panels {
            let mid = lo + (p as f64 + 0.5) * h;
            for (&t, &w) in rule.nodes.iter().zip(&rule.weights) {
                let y = mid + 0.5 * h * t;
                let mass = convolved_mass(y, r, &rule);
                if mass > 0.0 {
                    total += 0.5 * h * w * g(y, mass / (2.0 * r), mass.ln() - ln_2r);
                }
            }
        }
    }
    total
}

/// Nodes and weights of the n-point Gauss-Legendre rule on [-1, 1] (Newton's method on the
/// Legendre polynomial from the usual cosine guesses; accurate to rounding for n <= 100).
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let legendre = |x: f64| {
        // (P_n(x), P_n'(x)) by the three-term recurrence.
        let (mut p0, mut p1) = (1.0, x);
        for k in 2..=n {
            let kf = k as f64;
            let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
            p0 = p1;
            p1 = p2;
        }
        let dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
        (p1, dp)
    };
    let mut nodes = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    for i in 0..n {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        for _ in 0..100 {
            let (p, dp) = legendre(x);
            let dx = p / dp;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        let (_, dp) = legendre(x);
        nodes.push(x);
        weights.push(2.0 / ((1.0 - x * x) * dp * dp));
    }
    (nodes, weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::{E, PI};

    fn task() -> ChannelTask {
        ChannelTask {
            classes: 4,
            dim: 4,
            half_width: 1.0,
            noise: 1.0,
            spread: 2.0,
            means_seed: 0,
        }
    }

    #[test]
    fn gauss_legendre_is_exact_for_polynomials() {
        let (x, w) = gauss_legendre(20);
        assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-14);
        for deg in [2, 10, 38] {
            let got: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(deg)).sum();
            let want = 2.0 / (deg as f64 + 1.0);
            assert!((got - want).abs() < 1e-14, "x^{deg}: {got} vs {want}");
        }
        let got: f64 = x.iter().zip(&w).map(|(x, w)| w * x.exp()).sum();
        assert!((got - (1f64.exp() - (-1f64).exp())).abs() < 1e-14);
    }

    #[test]
    fn quadrature_is_converged_and_normalised() {
        for r in [1e-3, 0.1, 0.5, 0.999, 1.0, 2.0, 10.0, 100.0, 1e4] {
            let mass = 2.0 * integrate_density(r, 1.0, |_, f, _| f);
            assert!((mass - 1.0).abs() < 1e-13, "r {r}: mass {mass}");
            let d1 = divergence_from_gaussian(r, 1.0);
            for refine in [2.0, 4.0] {
                let d2 = divergence_from_gaussian(r, refine);
                assert!((d1 - d2).abs() < 1e-14, "r {r}: {d1} vs {d2} ({refine})");
            }
            assert!(d1 >= -1e-15, "r {r}: D = {d1}");
            // The direct route, h(f) - h(E): the same number (fewer digits at small r).
            let h = -2.0 * integrate_density(r, 1.0, |_, f, ln_f| f * ln_f);
            let direct = h - 0.5 * (2.0 * PI * E).ln();
            let j = uniform_gaussian_information(r);
            assert!((direct - j).abs() < 1e-12, "r {r}: {direct} vs {j}");
        }
    }

    #[test]
    fn divergence_is_negligible_where_it_is_dropped() {
        // D ~ r^8 / 2700 for small r (squared excess kurtosis / 48): measured 0.987 of that
        // at r = 0.1 and 0.95 at r = 0.2. At the cut-off r = 0.01 it is about 4e-20, below
        // the quadrature's rounding (a few 1e-16), which is why it is dropped there.
        let r: f64 = 0.1;
        let d = divergence_from_gaussian(r, 1.0);
        let lead = r.powi(8) / 2700.0;
        assert!((d / lead - 1.0).abs() < 0.03, "{d} vs {lead}");
        assert!(divergence_from_gaussian(SMALL_RATIO, 1.0).abs() < 1e-15);
    }

    #[test]
    fn limits_and_inequalities() {
        let mut prev = 0.0;
        for r in [1e-4, 1e-2, 0.1, 0.5, 1.0, 2.0, 5.0, 20.0, 100.0, 1e3, 1e5] {
            let j = uniform_gaussian_information(r);
            assert!(j > prev, "r {r}: {j} after {prev}");
            prev = j;
            // Upper: the Gaussian with the same variance (Gaussian-channel bound).
            let gauss = 0.5 * (r * r / 3.0).ln_1p();
            assert!(j <= gauss, "r {r}: {j} > {gauss}");
            // Lower: the entropy power inequality, e^{2h(V+E)} >= e^{2h(V)} + e^{2h(E)}.
            let epi = 0.5 * (4.0 * r * r / (2.0 * PI * E)).ln_1p();
            assert!(j >= epi, "r {r}: {j} < {epi}");
        }
        // s >> a: the Gaussian value, to relative O(r^6).
        let r: f64 = 0.05;
        let gauss = 0.5 * (r * r / 3.0).ln_1p();
        assert!((uniform_gaussian_information(r) / gauss - 1.0).abs() < 1e-9);
        // s << a: h(V + E) -> h(V) = log 2r, and the gap falls like 1/r.
        let gap =
            |r: f64| uniform_gaussian_information(r) - ((2.0 * r).ln() - 0.5 * (2.0 * PI * E).ln());
        let (g2, g3) = (gap(100.0), gap(1000.0));
        assert!(g2 > 0.0 && g3 > 0.0, "{g2} {g3}");
        assert!((g2 / g3 - 10.0).abs() < 0.5, "{g2} vs {g3}");
    }

    #[test]
    fn monte_carlo_entropy_matches_quadrature() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let rule = Rule::new(20);
        let n = 200_000;
        for (a, s) in [(1.0, 1.0), (1.0, 0.25), (3.0, 2.0), (0.2, 1.0)] {
            let r = a / s;
            // -log f(Y) for Y = V + sE, with f the density of Y (that of (V + sE)/s scaled).
            let terms: Vec<f64> = (0..n)
                .map(|_| {
                    let v = a * (2.0 * rng.random::<f64>() - 1.0);
                    let e: f64 = StandardNormal.sample(&mut rng);
                    let y = ((v + s * e) / s).abs();
                    -(convolved_mass(y, r, &rule) / (2.0 * r)).ln() + s.ln()
                })
                .collect();
            let mean = terms.iter().sum::<f64>() / n as f64;
            let var = terms.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let se = (var / n as f64).sqrt();
            let h = uniform_gaussian_information(r) + 0.5 * (2.0 * PI * E * s * s).ln();
            eprintln!(
                "channel a {a} s {s}: h(V+sE) quadrature {h:.6}, Monte Carlo {mean:.6} +- {se:.6} (diff {:.2} se)",
                (mean - h) / se
            );
            assert!(
                (mean - h).abs() < 3.0 * se,
                "a {a} s {s}: {mean} +- {se} vs {h}"
            );
        }
    }

    #[test]
    fn truth_and_samples_follow_the_model() {
        let t = task();
        let truth = t.truth().unwrap();
        assert_eq!(truth.i_xy_given_z, 4.0 * uniform_gaussian_information(1.0));
        assert!(truth.i_xy_given_z < truth.gaussian_bound);
        assert!((truth.trace_cov_x_given_z - 4.0 / 3.0).abs() < 1e-15);
        assert!((truth.h_z - 4f64.ln()).abs() < 1e-15);
        let means = t.means();
        assert_eq!(means, t.means());
        let mixture = crate::mixture::MixtureTask {
            classes: 4,
            dim: 4,
            noise: 1.0,
            nuisance: 0.0,
            spread: 2.0,
            means_seed: 0,
            given_means: None,
        };
        assert_eq!(means, mixture.means(), "one seed, one set of class means");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 80_000;
        let (x, y, z) = t.sample(n, &mut rng).unwrap();
        assert!(x
            .iter()
            .all(|&v| v >= truth.feature_low && v <= truth.feature_high));
        for k in 0..4 {
            let rows: Vec<usize> = (0..n).filter(|&i| z[i] as usize == k).collect();
            let cnt = rows.len() as f64;
            assert!((cnt / n as f64 - 0.25).abs() < 0.01);
            for j in 0..4 {
                let m = means[k * 4 + j];
                assert!(rows.iter().all(|&i| (x[i * 4 + j] - m).abs() <= 1.0));
                let mx = rows.iter().map(|&i| x[i * 4 + j]).sum::<f64>() / cnt;
                let vx = rows
                    .iter()
                    .map(|&i| (x[i * 4 + j] - m).powi(2))
                    .sum::<f64>()
                    / cnt;
                let vn = rows
                    .iter()
                    .map(|&i| (y[i * 4 + j] - x[i * 4 + j]).powi(2))
                    .sum::<f64>()
                    / cnt;
                assert!((mx - m).abs() < 0.02, "{mx} vs {m}");
                assert!((vx - 1.0 / 3.0).abs() < 0.01, "{vx}");
                assert!((vn - 1.0).abs() < 0.04, "{vn}");
            }
        }
    }

    #[test]
    fn invalid_tasks_are_errors() {
        let ok = task();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            ChannelTask {
                classes: 0,
                ..ok.clone()
            }
            .validate(),
            Err(ChannelError::Classes { got: 0 })
        );
        assert_eq!(
            ChannelTask {
                dim: 0,
                ..ok.clone()
            }
            .validate(),
            Err(ChannelError::Dimension { got: 0 })
        );
        for (t, name) in [
            (
                ChannelTask {
                    half_width: 0.0,
                    ..ok.clone()
                },
                "half_width",
            ),
            (
                ChannelTask {
                    half_width: f64::NAN,
                    ..ok.clone()
                },
                "half_width",
            ),
            (
                ChannelTask {
                    noise: -1.0,
                    ..ok.clone()
                },
                "noise",
            ),
            (
                ChannelTask {
                    noise: 0.0,
                    ..ok.clone()
                },
                "noise",
            ),
            (
                ChannelTask {
                    spread: f64::INFINITY,
                    ..ok.clone()
                },
                "spread",
            ),
        ] {
            assert!(
                matches!(t.truth(), Err(ChannelError::Parameter { name: n, .. }) if n == name),
                "{t:?}"
            );
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(ok.sample(0, &mut rng), Err(ChannelError::EmptySample));
        assert!(matches!(
            ChannelTask {
                classes: usize::MAX / 2,
                ..ok.clone()
            }
            .validate(),
            Err(ChannelError::Classes { .. })
        ));
        assert!(matches!(
            ok.sample(usize::MAX / 2, &mut rng),
            Err(ChannelError::TooLarge { what: "n", .. })
        ));
        assert!(uniform_gaussian_information(0.0).is_nan());
        let msg = ChannelTask { noise: 0.0, ..ok }
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "channel: noise must be finite and > 0, got 0");
    }
}
