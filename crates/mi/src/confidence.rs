//! Finite-sample, one-sided confidence bounds: the statistics that turn an estimator's point
//! value into a number that holds with a stated probability.
//!
//! Every function here takes a failure probability `delta` and returns a bound that is wrong
//! with probability at most `delta` over the draw of the samples, under the assumptions its
//! doc comment names (always: the values are independent and identically distributed; where
//! said: they lie in a known range). Nothing is asymptotic: no normal approximation, no
//! bootstrap. The formulas and their sources are in docs/certification.md.

use super::error::MiError;

fn check_delta(delta: f64) -> Result<f64, MiError> {
    if delta > 0.0 && delta < 1.0 {
        Ok(delta)
    } else {
        Err(MiError::InvalidParameter {
            name: "delta",
            reason: format!("a failure probability must lie strictly between 0 and 1, got {delta}"),
        })
    }
}

/// Mean and unbiased sample variance of `values` (variance 0 for one value).
pub fn mean_and_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, ss / (n - 1) as f64)
}

/// Sample summary of i.i.d. values known to lie in `[low, high]`: all that the
/// empirical-Bernstein bound needs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoundedSample {
    /// Number of values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Their unbiased sample variance.
    pub variance: f64,
    /// The smallest value any draw can take (not the observed minimum).
    pub low: f64,
    /// The largest value any draw can take.
    pub high: f64,
}

impl BoundedSample {
    /// Summarises `values`, checking that each lies in `[low, high]` (a value outside means the
    /// stated range is wrong, and so would be any bound built on it).
    pub fn from_values(values: &[f64], low: f64, high: f64) -> Result<BoundedSample, MiError> {
        if !(low.is_finite() && high.is_finite() && low < high) {
            return Err(MiError::InvalidParameter {
                name: "range",
                reason: format!("need finite low < high, got [{low}, {high}]"),
            });
        }
        // Rounding can put a value a hair outside a range it lies in exactly.
        let slack = 1e-9 * (high - low).max(1.0);
        if let Some((i, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !(**v >= low - slack && **v <= high + slack))
        {
            return Err(MiError::InvalidParameter {
                name: "range",
                reason: format!(
                    "value {i} is {v}, outside the range [{low}, {high}] it must lie in"
                ),
            });
        }
        let (mean, variance) = mean_and_variance(values);
        Ok(BoundedSample {
            n: values.len(),
            mean,
            variance,
            low,
            high,
        })
    }

    /// Upper confidence bound on the expectation (empirical Bernstein, Maurer and Pontil 2009,
    /// Theorem 4): with probability at least 1 - delta,
    /// E <= mean + sqrt(2 V ln(2/delta) / n) + 7 R ln(2/delta) / (3 (n - 1)),
    /// with V the unbiased sample variance and R = high - low. Never above `high`.
    pub fn upper(&self, delta: f64) -> Result<f64, MiError> {
        Ok((self.mean + self.deviation(delta)?).min(self.high))
    }

    /// Lower confidence bound on the expectation, the mirror of [`BoundedSample::upper`].
    pub fn lower(&self, delta: f64) -> Result<f64, MiError> {
        Ok((self.mean - self.deviation(delta)?).max(self.low))
    }

    fn deviation(&self, delta: f64) -> Result<f64, MiError> {
        let delta = check_delta(delta)?;
        if self.n < 2 {
            return Err(MiError::TooFewSamples {
                context: "an empirical-Bernstein confidence bound".into(),
                needed: 2,
                got: self.n,
            });
        }
        let n = self.n as f64;
        let log = (2.0 / delta).ln();
        let range = self.high - self.low;
        let variance = self.variance.max(0.0);
        Ok((2.0 * variance * log / n).sqrt() + 7.0 * range * log / (3.0 * (n - 1.0)))
    }
}

/// Clopper-Pearson one-sided lower bound on a success probability from `successes` out of
/// `trials` independent trials: the p with P(Binomial(trials, p) >= successes) = delta, so
/// the true p lies above it with probability at least 1 - delta. Exact (no normal
/// approximation); 0 when there are no successes.
pub fn clopper_pearson_lower(successes: u64, trials: u64, delta: f64) -> Result<f64, MiError> {
    let delta = check_delta(delta)?;
    if trials == 0 || successes > trials {
        return Err(MiError::InvalidParameter {
            name: "trials",
            reason: format!(
                "need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}"
            ),
        });
    }
    if successes == 0 {
        return Ok(0.0);
    }
    let (k, n) = (successes as f64, trials as f64);
    // P(Bin(n, p) >= k) = I_p(k, n - k + 1), increasing in p: bisect for the delta crossing.
    let tail = |p: f64| regularized_beta(p, k, n - k + 1.0);
    let (mut lo, mut hi) = (0.0_f64, k / n);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if tail(mid) < delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // The lower end of the bracket keeps the bound conservative under rounding.
    Ok(lo)
}

/// Clopper-Pearson one-sided upper bound: 1 - the lower bound for the failures.
pub fn clopper_pearson_upper(successes: u64, trials: u64, delta: f64) -> Result<f64, MiError> {
    if successes > trials {
        return clopper_pearson_lower(successes, trials, delta);
    }
    Ok(1.0 - clopper_pearson_lower(trials - successes, trials, delta)?)
}

/// Regularized incomplete beta function I_x(a, b), by the continued fraction (Lentz's
/// method) on whichever side converges fast.
pub fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        (ln_front.exp() * beta_cf(x, a, b) / a).clamp(0.0, 1.0)
    } else {
        (1.0 - ln_front.exp() * beta_cf(1.0 - x, b, a) / b).clamp(0.0, 1.0)
    }
}

fn beta_cf(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    // One Lentz step: the even or the odd term of the continued fraction.
    let step = |aa: f64, c: &mut f64, d: &mut f64| -> f64 {
        *d = 1.0 + aa * *d;
        if d.abs() < TINY {
            *d = TINY;
        }
        *c = 1.0 + aa / *c;
        if c.abs() < TINY {
            *c = TINY;
        }
        *d = 1.0 / *d;
        *d * *c
    };
    for m in 1..10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)), &mut c, &mut d);
        let del = step(
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
            &mut c,
            &mut d,
        );
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// log Gamma(x), shared with the ground-truth tasks (one implementation, in cbound-core).
pub use cbound_core::special::ln_gamma;

/// Lower confidence bound on the entropy H(Z) (nats) of a distribution over `classes` values
/// from observed class `counts` (i.i.d. draws).
///
/// With probability at least 1 - delta the true distribution p lies within L1 distance
/// eps = sqrt(2 / n * ln((2^K - 2) / delta)) of the empirical one (Weissman, Ordentlich,
/// Seroussi, Verdu and Weinberger 2003). Entropy is Schur-concave, and among the
/// distributions in that ball the one that moves eps/2 of mass from the rarest classes onto
/// the most frequent majorises all others, so its entropy is the smallest: that entropy is
/// the bound. Classes never observed count toward K (they widen the ball).
pub fn entropy_lower(counts: &[u64], classes: usize, delta: f64) -> Result<f64, MiError> {
    let delta = check_delta(delta)?;
    let k = classes.max(counts.len());
    let n: u64 = counts.iter().sum();
    if n == 0 || k < 2 {
        return Ok(0.0);
    }
    // ln(2^K - 2) without overflow: K ln 2 + ln(1 - 2^(1-K)).
    let ln_cells = k as f64 * std::f64::consts::LN_2 + (1.0 - 2f64.powi(1 - k as i32)).ln();
    let eps = (2.0 / n as f64 * (ln_cells - delta.ln())).sqrt();
    let mut p: Vec<f64> = counts.iter().map(|&c| c as f64 / n as f64).collect();
    p.resize(k, 0.0);
    p.sort_by(|a, b| b.total_cmp(a));
    let mut moved = (eps / 2.0).min(1.0 - p[0]);
    p[0] += moved;
    for v in p.iter_mut().skip(1).rev() {
        if moved <= 0.0 {
            break;
        }
        let take = v.min(moved);
        *v -= take;
        moved -= take;
    }
    Ok(p.iter()
        .filter(|&&q| q > 0.0)
        .map(|&q| -q * q.ln())
        .sum::<f64>()
        .max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        let mut f = 1.0f64;
        for n in 1..30 {
            // Gamma(n + 1) = n!
            f *= n as f64;
            assert!(
                (ln_gamma(n as f64 + 1.0) - f.ln()).abs() < 1e-12 * f.ln().max(1.0),
                "{n}"
            );
        }
        let sqrt_pi = std::f64::consts::PI.sqrt();
        assert!((ln_gamma(0.5) - sqrt_pi.ln()).abs() < 1e-14);
        assert!((ln_gamma(1.5) - (0.5 * sqrt_pi).ln()).abs() < 1e-14);
        assert!((ln_gamma(0.1) - 2.252_712_651_734_206).abs() < 1e-13);
    }

    #[test]
    fn regularized_beta_matches_the_binomial_tail() {
        // P(Bin(n, p) >= k) summed directly.
        let tail = |n: u64, k: u64, p: f64| -> f64 {
            (k..=n)
                .map(|j| {
                    let lc = ln_gamma(n as f64 + 1.0)
                        - ln_gamma(j as f64 + 1.0)
                        - ln_gamma((n - j) as f64 + 1.0);
                    (lc + j as f64 * p.ln() + (n - j) as f64 * (1.0 - p).ln()).exp()
                })
                .sum()
        };
        for (n, k, p) in [
            (10, 3, 0.2),
            (50, 40, 0.7),
            (200, 1, 0.001),
            (1000, 850, 0.86),
        ] {
            let direct = tail(n, k, p);
            let beta = regularized_beta(p, k as f64, (n - k + 1) as f64);
            assert!(
                (direct - beta).abs() < 1e-10,
                "{n} {k} {p}: {direct} vs {beta}"
            );
        }
        assert_eq!(regularized_beta(0.0, 2.0, 3.0), 0.0);
        assert_eq!(regularized_beta(1.0, 2.0, 3.0), 1.0);
    }

    #[test]
    fn clopper_pearson_known_values() {
        // 0 successes: 0; all successes of n at delta: delta^(1/n).
        assert_eq!(clopper_pearson_lower(0, 10, 0.05).unwrap(), 0.0);
        let all = clopper_pearson_lower(10, 10, 0.05).unwrap();
        assert!((all - 0.05f64.powf(0.1)).abs() < 1e-9, "{all}");
        // The delta crossing of the binomial tail, summed directly in Python (math.comb).
        let v = clopper_pearson_lower(8, 10, 0.05).unwrap();
        assert!((v - 0.493_098_7).abs() < 1e-6, "{v}");
        let up = clopper_pearson_upper(2, 10, 0.05).unwrap();
        assert!((up - (1.0 - 0.493_098_7)).abs() < 1e-6, "{up}");
        assert!(clopper_pearson_lower(3, 2, 0.05).is_err());
        assert!(clopper_pearson_lower(1, 2, 0.0).is_err());
    }

    #[test]
    fn clopper_pearson_covers_over_many_seeds() {
        // Coverage is at least 1 - delta by construction; measure it.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (p, n, delta, reps) = (0.83, 300u64, 0.1, 2000);
        let mut misses = 0;
        for _ in 0..reps {
            let k = (0..n).filter(|_| rng.random::<f64>() < p).count() as u64;
            misses += usize::from(clopper_pearson_lower(k, n, delta).unwrap() > p);
        }
        let rate = misses as f64 / reps as f64;
        assert!(rate <= delta + 0.02, "miss rate {rate}");
        assert!(
            rate > 0.0,
            "a bound that never misses at delta = 0.1 is suspiciously loose"
        );
    }

    #[test]
    fn empirical_bernstein_covers_and_tightens_with_n() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let delta = 0.05;
        let mut widths = vec![];
        for n in [30, 300, 3000] {
            let mut misses = 0;
            let mut width = 0.0;
            for _ in 0..400 {
                // Skewed values in [0, 4] with mean 0.4.
                let v: Vec<f64> = (0..n)
                    .map(|_| if rng.random::<f64>() < 0.1 { 4.0 } else { 0.0 })
                    .collect();
                let s = BoundedSample::from_values(&v, 0.0, 4.0).unwrap();
                let up = s.upper(delta).unwrap();
                let lo = s.lower(delta).unwrap();
                misses += usize::from(up < 0.4) + usize::from(lo > 0.4);
                width += up - s.mean;
            }
            assert!(misses as f64 / 800.0 <= delta, "n = {n}: {misses} misses");
            widths.push(width / 400.0);
        }
        assert!(widths[0] > widths[1] && widths[1] > widths[2], "{widths:?}");
        assert!(widths[2] < 0.1, "{widths:?}");
    }

    #[test]
    fn bounded_sample_refuses_values_outside_the_range() {
        let e = BoundedSample::from_values(&[0.1, 2.0], 0.0, 1.0).unwrap_err();
        assert!(e.to_string().contains("outside the range"), "{e}");
        assert!(BoundedSample::from_values(&[0.1], 1.0, 0.0).is_err());
        let one = BoundedSample::from_values(&[0.5], 0.0, 1.0).unwrap();
        assert!(
            one.upper(0.05).is_err(),
            "one value gives no confidence bound"
        );
    }

    #[test]
    fn entropy_lower_bound_covers_and_is_close_for_balanced_labels() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let p = [0.5f64, 0.3, 0.15, 0.05];
        let h: f64 = p.iter().map(|q| -q * q.ln()).sum();
        let delta = 0.05;
        let mut misses = 0;
        for _ in 0..300 {
            let mut counts = [0u64; 4];
            for _ in 0..2000 {
                let r: f64 = rng.random();
                let mut acc = 0.0;
                let c = p.iter().position(|q| {
                    acc += q;
                    r < acc
                });
                counts[c.unwrap_or(3)] += 1;
            }
            misses += usize::from(entropy_lower(&counts, 4, delta).unwrap() > h);
        }
        assert!(misses as f64 / 300.0 <= delta, "{misses}");
        // Balanced classes: entropy is flat near uniform, so the bound costs little.
        let lb = entropy_lower(&[7500, 7500, 7500, 7500], 4, 0.01).unwrap();
        assert!(lb < 4f64.ln() && lb > 4f64.ln() - 0.01, "{lb}");
        // Unseen classes widen the ball but cannot raise the bound.
        assert!(
            entropy_lower(&[10, 10], 5, 0.05).unwrap()
                <= entropy_lower(&[10, 10], 2, 0.05).unwrap()
        );
        assert_eq!(entropy_lower(&[], 3, 0.05).unwrap(), 0.0);
    }
}
