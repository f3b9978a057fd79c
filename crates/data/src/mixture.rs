//! Multi-view Gaussian mixture: a ground truth with a discrete label Z and two views X, Y.
//!
//! Z is uniform over K classes with means m_1..m_K in R^d, and
//!
//! - X = m_Z + a N + s E1,  Y = m_Z + a N + s E2,  E1, E2, N ~ N(0, I_d) independent.
//!
//! With a = 0 (no nuisance) X and Y are independent given Z, the setting of the
//! multi-view bounds in `bounds.md`; with a > 0 the shared nuisance N makes them dependent
//! given Z, so bounds that assume conditional independence can be shown to fail.
//!
//! I(X;Z), I(Y;Z) and I(X;Y) have no closed form. [`MixtureTask::truth`] computes them by
//! Monte Carlo with the exact densities, p(x) = 1/K sum_k N(x; m_k, (s^2 + a^2) I) and
//! p(x, y) = 1/K sum_k N([x; y]; [m_k; m_k], Sigma) (Sigma: blocks (s^2 + a^2) I on the
//! diagonal, a^2 I off it, inverted and log-det'ed per coordinate in closed form), all
//! evaluated with log-sum-exp over the classes, so the only error is sampling error,
//! reported as a standard error. Given Z, each coordinate pair (X_j, Y_j) is bivariate
//! normal with variances s^2 + a^2 and covariance a^2, which gives
//! I(X;Y|Z) = d/2 log((s^2 + a^2)^2 / ((s^2 + a^2)^2 - a^4)), 0 for a = 0.
//!
//! The averages are Rao-Blackwellised over the label, which keeps the mean and cuts the
//! variance (2 to 5 times in standard error on the tasks tried):
//!
//! - I(X;Z) = E[log K - H(p(.|X))], the inner average over Z of log p(x|z) - log p(x)
//!   done exactly from the class posterior; every term lies in [0, log K].
//! - I(X;Y) = I(X;Z) + I(X;Y|Z) - I(X;Z|Y) (chain rule, both ways round for
//!   I(X;Y,Z)), with I(X;Y|Z) exact and I(X;Z|Y) = E[H(p(.|Y)) - H(p(.|X,Y))]; the
//!   direct average of log p(x,y) - log p(x) - log p(y) is kept as a test cross-check.
//! - I(X;Y|Z) is also averaged directly (log p(x,y|z) - log p(x|z) - log p(y|z)) and
//!   reported beside the closed form as a check of the joint density.
//!
//! Precision: the standard error is sd / sqrt(n), sd being the spread of the per-sample
//! terms, measured from the sample. Measured at n = 200,000: K = 4, d = 3, s = 1,
//! spread 1.5 gives about 6e-4 nats for every quantity; K = 10, d = 128, spread 0.3 about
//! 7e-4 for I(X;Z) and 9e-4 for I(X;Y) (1.1e-3 with a = 0.5). So 200,000 samples give
//! about 1e-3 nats, and the error falls as 1/sqrt(n); trust the reported standard errors
//! over this rule of thumb (the MC check of I(X;Y|Z) is noisier, 5e-3 in the d = 128,
//! a = 0.5 case). The work is split into fixed chunks with per-chunk seeded generators
//! combined in chunk order, so the result depends on the seed and sample count only,
//! never on the number of threads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use thiserror::Error;

/// Monte Carlo samples per chunk. Fixed (not derived from the thread count) so that the
/// chunk boundaries, and with them the random streams, are the same on every machine.
const CHUNK: usize = 8192;

/// Number of Monte Carlo averages: I(X;Z), I(Y;Z), I(X;Y), I(X;Y|Z), and the direct
/// (higher-variance) I(X;Y) kept as a cross-check.
const M: usize = 5;

/// Invalid mixture parameters or Monte Carlo settings.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MixtureError {
    /// Fewer than one class.
    #[error("mixture: classes must be at least 1, got {got}")]
    Classes {
        /// Given number of classes.
        got: usize,
    },
    /// Zero dimension.
    #[error("mixture: dim must be at least 1, got {got}")]
    Dimension {
        /// Given dimension.
        got: usize,
    },
    /// A scale parameter out of range.
    #[error("mixture: {name} must be {expected}, got {value}")]
    Parameter {
        /// Parameter name (noise, nuisance, spread).
        name: &'static str,
        /// What the parameter must satisfy.
        expected: &'static str,
        /// Given value.
        value: f64,
    },
    /// Given class means with the wrong number of values.
    #[error(
        "mixture: given means hold {got} values, expected classes x dim = {classes} x {dim} = {expected} (row-major, one row per class)"
    )]
    MeansShape {
        /// Number of classes.
        classes: usize,
        /// Dimension.
        dim: usize,
        /// classes * dim.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// A given class mean that is NaN or infinite.
    #[error("mixture: given mean of class {class}, coordinate {coord} is {value}; expected a finite number")]
    MeansNotFinite {
        /// Class index.
        class: usize,
        /// Coordinate index.
        coord: usize,
        /// The value.
        value: f64,
    },
    /// classes * dim does not fit in memory addresses.
    #[error("mixture: classes x dim = {classes} x {dim} is too large")]
    TooLarge {
        /// Number of classes.
        classes: usize,
        /// Dimension.
        dim: usize,
    },
    /// Too few samples for the request.
    #[error("mixture: {what} needs at least {needed} samples, got {got}")]
    TooFewSamples {
        /// What was asked for.
        what: &'static str,
        /// Minimum.
        needed: usize,
        /// Given.
        got: usize,
    },
}

/// Samples (x, y, z): x and y row-major n x d, z the class of each row.
pub type MixtureSample = (Vec<f64>, Vec<f64>, Vec<u32>);

/// A multi-view mixture task (see the module documentation for the model).
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureTask {
    /// Number of classes K (>= 1); Z is uniform over them.
    pub classes: usize,
    /// Dimension d of X and of Y (>= 1).
    pub dim: usize,
    /// View noise scale s (> 0).
    pub noise: f64,
    /// Shared nuisance scale a (>= 0); 0 makes X and Y independent given Z.
    pub nuisance: f64,
    /// Scale of the drawn class means: m_k = spread * G_k, G_k ~ N(0, I_d), so two means
    /// are on average sqrt(2 d) * spread apart. Ignored when `given_means` is set.
    pub spread: f64,
    /// Seed of the generator the class means are drawn from. Ignored when `given_means`
    /// is set.
    pub means_seed: u64,
    /// Class means given explicitly, row-major K x d, instead of drawn.
    pub given_means: Option<Vec<f64>>,
}

/// Information quantities of a [`MixtureTask`] in nats.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureTruth {
    /// I(X;Z), Monte Carlo.
    pub i_xz: f64,
    /// I(Y;Z), Monte Carlo (equal to I(X;Z) in truth; estimated from the Y draws, so the
    /// two differ by sampling error only).
    pub i_yz: f64,
    /// I(X;Y), Monte Carlo.
    pub i_xy: f64,
    /// I(X;Y|Z), closed form (exact).
    pub i_xy_given_z: f64,
    /// I(X;Y|Z), Monte Carlo, as a check of the closed form and of the joint density.
    pub i_xy_given_z_mc: f64,
    /// H(Z) = log K (exact).
    pub h_z: f64,
    /// Monte Carlo standard errors of i_xz, i_yz, i_xy and i_xy_given_z_mc, in that order.
    pub std_err: [f64; 4],
    /// Number of Monte Carlo samples.
    pub samples: usize,
}

impl MixtureTruth {
    fn nan(samples: usize) -> Self {
        MixtureTruth {
            i_xz: f64::NAN,
            i_yz: f64::NAN,
            i_xy: f64::NAN,
            i_xy_given_z: f64::NAN,
            i_xy_given_z_mc: f64::NAN,
            h_z: f64::NAN,
            std_err: [f64::NAN; 4],
            samples,
        }
    }
}

fn check_scale(name: &'static str, value: f64, positive: bool) -> Result<(), MixtureError> {
    let ok = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
    if ok {
        Ok(())
    } else {
        Err(MixtureError::Parameter {
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

impl MixtureTask {
    /// Checks every parameter (and the given means, if any).
    pub fn validate(&self) -> Result<(), MixtureError> {
        if self.classes == 0 {
            return Err(MixtureError::Classes { got: 0 });
        }
        if self.dim == 0 {
            return Err(MixtureError::Dimension { got: 0 });
        }
        let len = self.len_means()?;
        check_scale("noise", self.noise, true)?;
        check_scale("nuisance", self.nuisance, false)?;
        check_scale("spread", self.spread, false)?;
        if let Some(m) = &self.given_means {
            if m.len() != len {
                return Err(MixtureError::MeansShape {
                    classes: self.classes,
                    dim: self.dim,
                    expected: len,
                    got: m.len(),
                });
            }
            if let Some(i) = m.iter().position(|v| !v.is_finite()) {
                return Err(MixtureError::MeansNotFinite {
                    class: i / self.dim,
                    coord: i % self.dim,
                    value: m[i],
                });
            }
        }
        Ok(())
    }

    fn len_means(&self) -> Result<usize, MixtureError> {
        self.classes
            .checked_mul(self.dim)
            .ok_or(MixtureError::TooLarge {
                classes: self.classes,
                dim: self.dim,
            })
    }

    /// Class means, row-major K x d: the given ones, or drawn from `means_seed`; empty for
    /// a task that fails [`MixtureTask::validate`].
    ///
    /// Drawing does not depend on any other generator, so the same task always has the
    /// same means, whichever seed later drives sampling.
    pub fn means(&self) -> Vec<f64> {
        if self.validate().is_err() {
            return Vec::new();
        }
        if let Some(m) = &self.given_means {
            return m.clone();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.means_seed);
        (0..self.classes * self.dim)
            .map(|_| {
                let g: f64 = StandardNormal.sample(&mut rng);
                self.spread * g
            })
            .collect()
    }

    /// I(X;Y|Z) in nats, closed form.
    ///
    /// Given Z the coordinate pairs are independent bivariate normals with variances
    /// v = s^2 + a^2 and covariance a^2, each contributing -1/2 log(1 - rho^2) with
    /// rho = a^2 / v. Written as a ratio of determinants so that a = 0 gives exactly 0.
    pub fn cmi_closed_form(&self) -> f64 {
        let (v, c) = self.variances();
        let det = self.noise * self.noise * (self.noise * self.noise + 2.0 * c);
        0.5 * self.dim as f64 * (v * v / det).ln()
    }

    /// (s^2 + a^2, a^2): per-coordinate variance of a view given Z, and covariance of the
    /// two views' coordinates given Z.
    fn variances(&self) -> (f64, f64) {
        let c = self.nuisance * self.nuisance;
        (self.noise * self.noise + c, c)
    }

    /// `n` samples: x and y row-major n x d, and the labels z.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        n: usize,
        rng: &mut R,
    ) -> Result<MixtureSample, MixtureError> {
        self.validate()?;
        if n == 0 {
            return Err(MixtureError::TooFewSamples {
                what: "sampling",
                needed: 1,
                got: 0,
            });
        }
        if u32::try_from(self.classes).is_err() {
            return Err(MixtureError::TooLarge {
                classes: self.classes,
                dim: self.dim,
            });
        }
        let total = n.checked_mul(self.dim).ok_or(MixtureError::TooLarge {
            classes: n,
            dim: self.dim,
        })?;
        let means = self.means();
        let d = self.dim;
        let mut x = vec![0.0; total];
        let mut y = vec![0.0; total];
        let mut z = Vec::with_capacity(n);
        let mut nuis = vec![0.0; d];
        for (xr, yr) in x.chunks_exact_mut(d).zip(y.chunks_exact_mut(d)) {
            let k = self.draw_one(rng, &means, xr, yr, &mut nuis);
            // Checked above that every class index fits in u32.
            z.push(k as u32);
        }
        Ok((x, y, z))
    }

    /// Draws one (x, y) into the given rows and returns its class. Shared by `sample` and
    /// `truth`, so the sampler and the reference values cannot drift apart.
    fn draw_one<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        means: &[f64],
        x: &mut [f64],
        y: &mut [f64],
        nuis: &mut [f64],
    ) -> usize {
        let d = self.dim;
        let k = rng.random_range(0..self.classes);
        let m = &means[k * d..(k + 1) * d];
        if self.nuisance > 0.0 {
            for v in nuis.iter_mut() {
                let g: f64 = StandardNormal.sample(rng);
                *v = self.nuisance * g;
            }
        } else {
            // Skipping the draws keeps the a = 0 stream identical to a plain mixture.
            nuis.fill(0.0);
        }
        for j in 0..d {
            let e: f64 = StandardNormal.sample(rng);
            x[j] = m[j] + nuis[j] + self.noise * e;
        }
        for j in 0..d {
            let e: f64 = StandardNormal.sample(rng);
            y[j] = m[j] + nuis[j] + self.noise * e;
        }
        k
    }

    /// Monte Carlo information quantities (see [`MixtureTruth`]); NaN everywhere for an
    /// invalid task or fewer than 2 samples (use [`MixtureTask::try_truth`] for the reason).
    pub fn truth(&self, mc_samples: usize, seed: u64) -> MixtureTruth {
        self.try_truth(mc_samples, seed)
            .unwrap_or_else(|_| MixtureTruth::nan(mc_samples))
    }

    /// Monte Carlo information quantities, or why they cannot be computed.
    ///
    /// Runs on the current rayon pool; the result does not depend on its size.
    pub fn try_truth(&self, mc_samples: usize, seed: u64) -> Result<MixtureTruth, MixtureError> {
        self.validate()?;
        if mc_samples < 2 {
            return Err(MixtureError::TooFewSamples {
                what: "a Monte Carlo standard error",
                needed: 2,
                got: mc_samples,
            });
        }
        let total = self.accumulate(mc_samples, seed);
        let se = |i: usize| (total.m2[i] / (total.n - 1.0) / total.n).sqrt();
        Ok(MixtureTruth {
            i_xz: total.mean[0],
            i_yz: total.mean[1],
            i_xy: total.mean[2],
            i_xy_given_z: self.cmi_closed_form(),
            i_xy_given_z_mc: total.mean[3],
            h_z: (self.classes as f64).ln(),
            std_err: [se(0), se(1), se(2), se(3)],
            samples: mc_samples,
        })
    }

    /// All Monte Carlo averages over `n` samples (n >= 1, task valid).
    fn accumulate(&self, n: usize, seed: u64) -> Welford {
        let means = self.means();
        let parts: Vec<Welford> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(c as u64);
                self.mc_chunk(&means, CHUNK.min(n - c * CHUNK), &mut rng)
            })
            .collect();
        // Combined in chunk order, never in completion order, for thread-count independence.
        parts.iter().fold(Welford::default(), |acc, p| acc.merge(p))
    }

    /// Per-sample integrands of one chunk, accumulated (order as in [`M`]).
    fn mc_chunk(&self, means: &[f64], n: usize, rng: &mut ChaCha8Rng) -> Welford {
        let d = self.dim;
        let kk = self.classes;
        let (v, c) = self.variances();
        // det of the per-coordinate 2x2 covariance [[v, c], [c, v]], v^2 - c^2, written
        // as s^2 (s^2 + 2 a^2) to avoid cancellation when a >> s.
        let s2 = self.noise * self.noise;
        let det = s2 * (s2 + 2.0 * c);
        let log_k = (kk as f64).ln();
        // The normalising constants that survive in the log-ratios (the 2 pi factors
        // cancel) add up to d/2 log(v^2 / det), which is exactly the closed-form I(X;Y|Z).
        let cmi = self.cmi_closed_form();
        let joint_const = cmi;
        let (inv_2v, inv_2det) = (0.5 / v, 0.5 / det);

        let mut x = vec![0.0; d];
        let mut y = vec![0.0; d];
        let mut nuis = vec![0.0; d];
        let mut lx = vec![0.0; kk];
        let mut ly = vec![0.0; kk];
        let mut lj = vec![0.0; kk];
        let mut acc = Welford::default();
        for _ in 0..n {
            let z = self.draw_one(rng, means, &mut x, &mut y, &mut nuis);
            for k in 0..kk {
                let m = &means[k * d..(k + 1) * d];
                let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
                for j in 0..d {
                    let u = x[j] - m[j];
                    let w = y[j] - m[j];
                    sxx += u * u;
                    syy += w * w;
                    sxy += u * w;
                }
                // Exponents of N(x; m_k, vI), N(y; m_k, vI) and the joint density, each
                // without its normalising constant.
                lx[k] = -sxx * inv_2v;
                ly[k] = -syy * inv_2v;
                lj[k] = -(v * (sxx + syy) - 2.0 * c * sxy) * inv_2det;
            }
            let (mx, my, mj) = (log_sum_exp(&lx), log_sum_exp(&ly), log_sum_exp(&lj));
            let (hx, hy) = (posterior_entropy(&lx, mx), posterior_entropy(&ly, my));
            let terms = [
                log_k - hx,
                log_k - hy,
                log_k - hx + cmi - hy + posterior_entropy(&lj, mj),
                lj[z] - lx[z] - ly[z] + joint_const,
                mj - mx - my + log_k + joint_const,
            ];
            acc.push(&terms);
        }
        acc
    }
}

/// log sum exp(v), shifted by the maximum so that very negative exponents (well-separated
/// classes) do not underflow to log 0.
fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|a| (a - m).exp()).sum::<f64>().ln()
}

/// Entropy of the class posterior p(k|x) = exp(l_k - lse), with lse = log sum exp(l).
///
/// log K - H(Z|X=x) is E[log p(x|Z) - log p(x) | X = x], the I(X;Z) integrand averaged
/// over Z analytically (Rao-Blackwell): the same mean with a smaller variance, and every
/// term lies in [0, log K], so the estimate can never leave [0, H(Z)].
fn posterior_entropy(l: &[f64], lse: f64) -> f64 {
    l.iter()
        .map(|&a| {
            let lp = a - lse;
            let p = lp.exp();
            // p log p -> 0 as p -> 0; the guard avoids 0 * -inf = NaN.
            if p > 0.0 {
                -p * lp
            } else {
                0.0
            }
        })
        .sum()
}

/// Running mean and sum of squared deviations (Welford), mergeable (Chan et al.), so that
/// chunk results combine without the cancellation of sum-of-squares formulas.
#[derive(Debug, Clone, Copy, Default)]
struct Welford {
    n: f64,
    mean: [f64; M],
    m2: [f64; M],
}

impl Welford {
    fn push(&mut self, t: &[f64; M]) {
        self.n += 1.0;
        for ((&v, mean), m2) in t.iter().zip(&mut self.mean).zip(&mut self.m2) {
            let delta = v - *mean;
            *mean += delta / self.n;
            *m2 += delta * (v - *mean);
        }
    }

    fn merge(self, o: &Welford) -> Welford {
        if o.n == 0.0 {
            return self;
        }
        if self.n == 0.0 {
            return *o;
        }
        let n = self.n + o.n;
        let mut out = Welford {
            n,
            ..Welford::default()
        };
        for i in 0..M {
            let delta = o.mean[i] - self.mean[i];
            out.mean[i] = self.mean[i] + delta * o.n / n;
            out.m2[i] = self.m2[i] + o.m2[i] + delta * delta * self.n * o.n / n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::{LN_2, PI};

    fn task(classes: usize, dim: usize, noise: f64, nuisance: f64, spread: f64) -> MixtureTask {
        MixtureTask {
            classes,
            dim,
            noise,
            nuisance,
            spread,
            means_seed: 11,
            given_means: None,
        }
    }

    fn normal_pdf(x: f64, m: f64, var: f64) -> f64 {
        (-(x - m) * (x - m) / (2.0 * var)).exp() / (2.0 * PI * var).sqrt()
    }

    /// Composite Simpson weights on n + 1 points (n even) with step h.
    fn simpson_weights(n: usize, h: f64) -> Vec<f64> {
        (0..=n)
            .map(|i| {
                let w = if i == 0 || i == n {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                w * h / 3.0
            })
            .collect()
    }

    #[test]
    fn well_separated_classes_approach_log_2() {
        let mut prev = -1.0;
        for spread in [0.25, 1.0, 4.0, 16.0] {
            let t = task(2, 2, 1.0, 0.0, spread).truth(100_000, 5);
            assert!(t.i_xz > prev, "spread {spread}: {} after {prev}", t.i_xz);
            assert!(t.i_xz <= LN_2 + 4.0 * t.std_err[0], "{t:?}");
            prev = t.i_xz;
        }
        // At spread 16 the two means (fixed seed) are far apart relative to s = 1.
        let m = task(2, 2, 1.0, 0.0, 16.0).means();
        let dist = ((m[0] - m[2]).powi(2) + (m[1] - m[3]).powi(2)).sqrt();
        assert!(dist > 12.0, "means only {dist} apart");
        assert!((prev - LN_2).abs() < 1e-3, "{prev}");
        // Given means: a few noise scales apart already carries almost all of log 2.
        let far = MixtureTask {
            given_means: Some(vec![-10.0, 10.0]),
            ..task(2, 1, 1.0, 0.0, 0.0)
        };
        let t = far.truth(20_000, 1);
        assert!((t.i_xz - LN_2).abs() < 1e-9, "{t:?}");
        assert_eq!(t.h_z, LN_2);
    }

    #[test]
    fn equal_means_carry_no_label_information() {
        for nuisance in [0.0, 0.7] {
            let t = task(5, 3, 1.0, nuisance, 0.0).truth(20_000, 2);
            assert!(t.i_xz.abs() < 1e-12 && t.i_yz.abs() < 1e-12, "{t:?}");
            assert!(t.std_err[0] < 1e-12, "{t:?}");
            // Z is independent of (X, Y), so I(X;Y) = I(X;Y|Z).
            let tol = 4.0 * t.std_err[2] + 1e-12;
            assert!((t.i_xy - t.i_xy_given_z).abs() < tol, "{t:?}");
        }
    }

    #[test]
    fn one_dimensional_case_matches_numerical_integration() {
        // K = 2, means -1 and +1.5, s = 0.8, a = 0.5: per-coordinate variance v = 0.89 and
        // cross covariance 0.25 given Z.
        let mt = MixtureTask {
            given_means: Some(vec![-1.0, 1.5]),
            ..task(2, 1, 0.8, 0.5, 0.0)
        };
        let (s, a) = (mt.noise, mt.nuisance);
        let (v, c) = (s * s + a * a, a * a);
        let means = [-1.0, 1.5];

        // I(X;Z) = h(X) - h(X|Z), h(X|Z) = 1/2 log(2 pi e v).
        let (lo, hi, n) = (-12.0, 12.0, 4800);
        let h = (hi - lo) / n as f64;
        let w = simpson_weights(n, h);
        let grid: Vec<f64> = (0..=n).map(|i| lo + i as f64 * h).collect();
        let px: Vec<f64> = grid
            .iter()
            .map(|&x| 0.5 * means.iter().map(|&m| normal_pdf(x, m, v)).sum::<f64>())
            .collect();
        let hx: f64 = -px
            .iter()
            .zip(&w)
            .map(|(&p, &wi)| if p > 0.0 { wi * p * p.ln() } else { 0.0 })
            .sum::<f64>();
        let want_xz = hx - 0.5 * (2.0 * PI * std::f64::consts::E * v).ln();

        // I(X;Y) = 2 h(X) - h(X, Y) on a 2-d grid.
        let (lo2, hi2, n2) = (-9.0, 9.0, 900);
        let h2 = (hi2 - lo2) / n2 as f64;
        let w2 = simpson_weights(n2, h2);
        let det = v * v - c * c;
        let mut hxy = 0.0;
        let mut mass = 0.0;
        for i in 0..=n2 {
            let x = lo2 + i as f64 * h2;
            for j in 0..=n2 {
                let y = lo2 + j as f64 * h2;
                let p: f64 = means
                    .iter()
                    .map(|&m| {
                        let (u, t) = (x - m, y - m);
                        let q = (v * u * u - 2.0 * c * u * t + v * t * t) / det;
                        0.5 * (-0.5 * q).exp() / (2.0 * PI * det.sqrt())
                    })
                    .sum();
                if p > 0.0 {
                    hxy -= w2[i] * w2[j] * p * p.ln();
                    mass += w2[i] * w2[j] * p;
                }
            }
        }
        assert!((mass - 1.0).abs() < 1e-6, "grid misses mass: {mass}");
        let want_xy = 2.0 * hx - hxy;

        let t = mt.truth(1_000_000, 3);
        // 1e-3 is over 4 standard errors here.
        assert!(t.std_err[0] < 2.5e-4 && t.std_err[2] < 2.5e-4, "{t:?}");
        assert!(
            (t.i_xz - want_xz).abs() < 1e-3,
            "I(X;Z) {} vs {want_xz}",
            t.i_xz
        );
        assert!(
            (t.i_yz - want_xz).abs() < 1e-3,
            "I(Y;Z) {} vs {want_xz}",
            t.i_yz
        );
        assert!(
            (t.i_xy - want_xy).abs() < 1e-3,
            "I(X;Y) {} vs {want_xy}",
            t.i_xy
        );
        let cmi = t.i_xy_given_z;
        assert!(
            (t.i_xy_given_z_mc - cmi).abs() < 4.0 * t.std_err[3],
            "{t:?}"
        );
    }

    #[test]
    fn conditionally_independent_views_obey_data_processing() {
        let t = task(4, 3, 1.0, 0.0, 1.5).truth(200_000, 4);
        assert_eq!(t.i_xy_given_z, 0.0);
        assert!(t.i_xy_given_z_mc.abs() < 1e-12, "{t:?}");
        // X - Z - Y is a Markov chain, so I(X;Y) <= min(I(X;Z), I(Y;Z)).
        let min = t.i_xz.min(t.i_yz);
        let tol = 3.0 * (t.std_err[0].max(t.std_err[1]) + t.std_err[2]);
        assert!(t.i_xy <= min + tol, "{t:?}");
        assert!(t.i_xy > 0.0 && t.i_xz < t.h_z, "{t:?}");
        for se in t.std_err {
            assert!(se < 2e-3, "{t:?}");
        }
    }

    #[test]
    fn nuisance_gives_closed_form_conditional_information() {
        let mt = task(3, 4, 1.0, 0.8, 1.0);
        let (v, c): (f64, f64) = (1.0 + 0.64, 0.64);
        let want = 4.0 * 0.5 * (v * v / (v * v - c * c)).ln();
        assert!((mt.cmi_closed_form() - want).abs() < 1e-12);
        let t = mt.truth(200_000, 6);
        assert_eq!(t.i_xy_given_z, mt.cmi_closed_form());
        assert!(
            (t.i_xy_given_z_mc - want).abs() < 4.0 * t.std_err[3],
            "{t:?} vs {want}"
        );
        // The shared nuisance adds dependence on top of what Z carries: data processing
        // through Z no longer holds here.
        assert!(t.i_xy > t.i_xz.min(t.i_yz), "{t:?}");
    }

    #[test]
    fn rao_blackwellised_and_direct_averages_agree() {
        for mt in [task(4, 3, 1.0, 0.0, 1.5), task(3, 4, 1.0, 0.8, 1.0)] {
            let w = mt.accumulate(100_000, 7);
            let se = |i: usize| (w.m2[i] / (w.n - 1.0) / w.n).sqrt();
            // Index 2: chain-rule I(X;Y); index 4: direct log p(x,y) - log p(x) - log p(y).
            let gap = (w.mean[2] - w.mean[4]).abs();
            assert!(gap < 4.0 * (se(2) + se(4)), "{mt:?}: {w:?}");
            assert!(se(2) < se(4), "{mt:?}: {w:?}");
        }
    }

    #[test]
    fn result_is_independent_of_thread_count() {
        let mt = task(3, 2, 0.7, 0.3, 1.0);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| mt.truth(5 * CHUNK + 123, 9))
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_eq!(one, run(4));
        assert_ne!(one, mt.truth(5 * CHUNK + 123, 10));
    }

    #[test]
    fn samples_follow_the_model() {
        let mt = task(3, 2, 0.5, 0.4, 2.0);
        let means = mt.means();
        assert_eq!(
            means,
            mt.means(),
            "means must not depend on anything but the seed"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 90_000;
        let (x, y, z) = mt.sample(n, &mut rng).unwrap();
        assert_eq!((x.len(), y.len(), z.len()), (n * 2, n * 2, n));
        // Per class: mean m_k, variance s^2 + a^2, cross covariance a^2.
        for k in 0..3 {
            let rows: Vec<usize> = (0..n).filter(|&i| z[i] as usize == k).collect();
            let cnt = rows.len() as f64;
            assert!((cnt / n as f64 - 1.0 / 3.0).abs() < 0.01);
            for j in 0..2 {
                let mx = rows.iter().map(|&i| x[i * 2 + j]).sum::<f64>() / cnt;
                let my = rows.iter().map(|&i| y[i * 2 + j]).sum::<f64>() / cnt;
                let vx = rows
                    .iter()
                    .map(|&i| (x[i * 2 + j] - mx).powi(2))
                    .sum::<f64>()
                    / cnt;
                let cxy = rows
                    .iter()
                    .map(|&i| (x[i * 2 + j] - mx) * (y[i * 2 + j] - my))
                    .sum::<f64>()
                    / cnt;
                assert!((mx - means[k * 2 + j]).abs() < 0.02, "{mx}");
                assert!((my - means[k * 2 + j]).abs() < 0.02, "{my}");
                assert!((vx - 0.41).abs() < 0.02, "{vx}");
                assert!((cxy - 0.16).abs() < 0.02, "{cxy}");
            }
        }
    }

    #[test]
    fn invalid_tasks_are_errors() {
        let ok = task(2, 2, 1.0, 0.0, 1.0);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            MixtureTask {
                classes: 0,
                ..ok.clone()
            }
            .validate(),
            Err(MixtureError::Classes { got: 0 })
        );
        assert_eq!(
            MixtureTask {
                dim: 0,
                ..ok.clone()
            }
            .validate(),
            Err(MixtureError::Dimension { got: 0 })
        );
        for (t, name) in [
            (
                MixtureTask {
                    noise: 0.0,
                    ..ok.clone()
                },
                "noise",
            ),
            (
                MixtureTask {
                    noise: f64::NAN,
                    ..ok.clone()
                },
                "noise",
            ),
            (
                MixtureTask {
                    nuisance: -0.1,
                    ..ok.clone()
                },
                "nuisance",
            ),
            (
                MixtureTask {
                    spread: f64::INFINITY,
                    ..ok.clone()
                },
                "spread",
            ),
        ] {
            assert!(
                matches!(t.validate(), Err(MixtureError::Parameter { name: n, .. }) if n == name),
                "{t:?}"
            );
            assert!(t.truth(100, 0).i_xz.is_nan());
        }
        let bad_shape = MixtureTask {
            given_means: Some(vec![0.0; 3]),
            ..ok.clone()
        };
        let e = bad_shape.validate().unwrap_err();
        assert!(
            e.to_string().contains("expected classes x dim = 2 x 2 = 4"),
            "{e}"
        );
        let bad_value = MixtureTask {
            given_means: Some(vec![0.0, 1.0, f64::NAN, 0.0]),
            ..ok.clone()
        };
        assert!(matches!(
            bad_value.validate(),
            Err(MixtureError::MeansNotFinite { class: 1, coord: 0, value }) if value.is_nan()
        ));
        assert!(matches!(
            MixtureTask {
                classes: usize::MAX,
                ..ok.clone()
            }
            .validate(),
            Err(MixtureError::TooLarge { .. })
        ));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(matches!(
            ok.sample(0, &mut rng),
            Err(MixtureError::TooFewSamples { needed: 1, .. })
        ));
        assert!(matches!(
            ok.try_truth(1, 0),
            Err(MixtureError::TooFewSamples { needed: 2, .. })
        ));
    }
}
