//! An upper bound on I(X;Y) and I(X;Y|Z) for a known additive Gaussian augmentation
//! Y = X + s E (E standard normal, independent of X and Z).
//!
//! The valid bounds subtract I(X;Y|Z), so a certificate needs an UPPER bound on it, which no
//! sample-based estimator gives. The augmentation channel does: given Z = z,
//! I(X;Y|z) = h(Y|z) - h(sE) and Cov(Y|z) = Cov(X|z) + s^2 I, and the Gaussian has the largest
//! entropy for a covariance, so I(X;Y|z) <= 1/2 log det(I + Cov(X|z) / s^2)
//! (docs/bounds.md). It is exact when X given z is Gaussian.
//!
//! Only Cov(X|z) is estimated, and the plug-in log-determinant is concave in it, so it is
//! biased LOW: the point value is an estimate of the bound, not an upper bound itself. A
//! confidence upper bound goes through the trace instead,
//! 1/2 log det(I + C/s^2) <= d/2 log(1 + tr C / (d s^2)), with an empirical-Bernstein upper
//! bound on E ||X - c_Z||^2 >= E tr Cov(X|Z) for class centres c fitted on a separate half of
//! the rows; that needs every feature in a known range (`feature_range`), which is checked.
//! Without a range the row is an estimate. Y is used to check that it really is X plus noise
//! of the stated size, because the bound means nothing otherwise.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::certificate::Certificate;
use super::confidence::BoundedSample;
use super::error::MiError;
use super::gaussian::logdet;
use super::linalg::sample_covariance;
use super::matrix::Matrix;
use super::{check_pair, Direction, MiEstimate};

/// How far the measured sd of Y - X may stray from `noise_std` before the input is refused.
const NOISE_TOLERANCE: f64 = 0.1;

/// 1/2 log det(I + Cov(X|z) / s^2), averaged over the classes `z` (one class when `None`),
/// as an estimate; with `feature_range`, also the certificate of a confidence upper bound
/// (module doc). `seed` picks the rows that fit the class centres.
pub fn gaussian_channel_bound(
    x: &Matrix,
    y: &Matrix,
    z: Option<&[u64]>,
    noise_std: f64,
    feature_range: Option<[f64; 2]>,
    seed: u64,
) -> Result<(MiEstimate, Option<Certificate>), MiError> {
    if !(noise_std > 0.0 && noise_std.is_finite()) {
        return Err(MiError::InvalidParameter {
            name: "noise_std",
            reason: format!("must be positive, got {noise_std}"),
        });
    }
    let n = check_pair(x, y)?;
    let d = x.cols();
    if y.cols() != d {
        return Err(MiError::InvalidParameter {
            name: "y",
            reason: format!(
                "Y = X + noise needs Y of X's dimension {d}, got {}",
                y.cols()
            ),
        });
    }
    let sq: f64 = x
        .as_slice()
        .iter()
        .zip(y.as_slice())
        .map(|(a, b)| (b - a) * (b - a))
        .sum();
    let measured = (sq / (n * d) as f64).sqrt();
    if (measured / noise_std - 1.0).abs() > NOISE_TOLERANCE {
        return Err(MiError::InvalidParameter {
            name: "noise_std",
            reason: format!(
                "Y - X has standard deviation {measured:.4}, not noise_std {noise_std}: the bound \
                 holds only for Y = X + noise_std * E with standard normal E (pair the clean \
                 input with its noise view, unstandardised)"
            ),
        });
    }
    let mut groups: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        groups.entry(z.map_or(0, |z| z[i])).or_default().push(i);
    }
    let inv_s2 = 1.0 / (noise_std * noise_std);
    let mut total = 0.0;
    let mut smallest = usize::MAX;
    for (class, idx) in &groups {
        if idx.len() < 2 {
            return Err(MiError::TooFewSamples {
                context: format!("the covariance of class {class}"),
                needed: 2,
                got: idx.len(),
            });
        }
        smallest = smallest.min(idx.len());
        let mut m = sample_covariance(&x.select_rows(idx)?);
        for v in m.iter_mut() {
            *v *= inv_s2;
        }
        for j in 0..d {
            m[j * d + j] += 1.0;
        }
        let logdet = logdet(&m, d, "I + Cov(X|z)/s^2")?;
        total += idx.len() as f64 / n as f64 * 0.5 * logdet;
    }
    let mut note = format!(
        "Gaussian channel s = {noise_std} (measured sd of Y - X: {measured:.4}); {} class(es), \
         smallest {smallest} rows for dimension {d}",
        groups.len()
    );
    if smallest < 10 * d {
        note.push_str("; few rows per dimension: the plug-in log-determinant is biased low");
    }
    let certificate = match feature_range {
        Some(range) => Some(trace_certificate(x, z, noise_std, range, seed)?),
        None => {
            note.push_str(
                "; no feature_range given, so no confidence upper bound (the plug-in value is biased low)",
            );
            None
        }
    };
    let estimate = MiEstimate {
        nats: total,
        n,
        dims: (d, d),
        direction: if certificate.is_some() {
            Direction::UpperBound
        } else {
            Direction::Estimate
        },
        note: Some(note),
    };
    Ok((estimate, certificate))
}

/// Squared distances to class centres fitted on the other half of the rows (module doc).
fn trace_certificate(
    x: &Matrix,
    z: Option<&[u64]>,
    noise_std: f64,
    [low, high]: [f64; 2],
    seed: u64,
) -> Result<Certificate, MiError> {
    if !(low.is_finite() && high.is_finite() && low < high) {
        return Err(MiError::InvalidParameter {
            name: "feature_range",
            reason: format!("need finite low < high, got [{low}, {high}]"),
        });
    }
    let (n, d) = (x.rows(), x.cols());
    for i in 0..n {
        if let Some((j, v)) = x
            .row(i)
            .iter()
            .enumerate()
            .find(|(_, v)| !(low..=high).contains(*v))
        {
            return Err(MiError::InvalidParameter {
                name: "feature_range",
                reason: format!(
                    "x row {i}, column {j} is {v}, outside feature_range [{low}, {high}]: the \
                     certified bound holds only for features in that range (give the range of \
                     the unstandardised input, e.g. of normalised pixels)"
                ),
            });
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x0c4a_77e1));
    let (fit, score) = order.split_at(n / 2);
    let class = |i: usize| z.map_or(0, |z| z[i]);
    let mut sums: BTreeMap<u64, (Vec<f64>, usize)> = BTreeMap::new();
    for &i in fit {
        let e = sums.entry(class(i)).or_insert_with(|| (vec![0.0; d], 0));
        e.0.iter_mut().zip(x.row(i)).for_each(|(s, v)| *s += v);
        e.1 += 1;
    }
    // A class absent from the fitting half is centred mid-range: any fixed centre is valid.
    let mid = 0.5 * (low + high);
    let centre = |c: u64| -> Vec<f64> {
        match sums.get(&c) {
            Some((s, k)) => s.iter().map(|v| v / *k as f64).collect(),
            None => vec![mid; d],
        }
    };
    let mut centres: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut worst = 0.0f64;
    let mut distances = Vec::with_capacity(score.len());
    for &i in score {
        let c = centres.entry(class(i)).or_insert_with(|| centre(class(i)));
        distances.push(
            x.row(i)
                .iter()
                .zip(c.iter())
                .map(|(v, m)| (v - m) * (v - m))
                .sum::<f64>(),
        );
    }
    // The largest squared distance any point in the box can have from any centre used.
    for c in centres.values() {
        let far: f64 = c.iter().map(|m| (m - low).max(high - m).powi(2)).sum();
        worst = worst.max(far);
    }
    let distances = BoundedSample::from_values(&distances, 0.0, worst.max(f64::MIN_POSITIVE))?;
    Ok(Certificate::ChannelTrace {
        distances,
        dim: d,
        noise_std,
        feature_range: [low, high],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn noisy(n: usize, scales: &[f64], s: f64, seed: u64) -> (Matrix, Matrix, Vec<u64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = scales.len();
        let (mut x, mut y, mut z) = (vec![], vec![], vec![]);
        for i in 0..n {
            let class = (i % 2) as u64;
            for &a in scales {
                let e: f64 = StandardNormal.sample(&mut rng);
                let xi = 3.0 * class as f64 + a * e;
                let noise: f64 = StandardNormal.sample(&mut rng);
                x.push(xi);
                y.push(xi + s * noise);
            }
            z.push(class);
        }
        (
            Matrix::new(n, d, x).unwrap(),
            Matrix::new(n, d, y).unwrap(),
            z,
        )
    }

    #[test]
    fn matches_the_closed_form_for_gaussian_classes() {
        // Given z, X ~ N(m_z, diag(a^2)): I(X;Y|Z) = sum 1/2 log(1 + a^2/s^2) exactly.
        let scales = [1.0, 0.5, 2.0];
        let s = 0.5;
        let (x, y, z) = noisy(40_000, &scales, s, 1);
        let truth: f64 = scales
            .iter()
            .map(|a| 0.5 * (1.0 + a * a / (s * s)).ln())
            .sum();
        let (e, cert) = gaussian_channel_bound(&x, &y, Some(&z), s, None, 0).unwrap();
        assert!((e.nats - truth).abs() < 0.02, "{} vs {truth}", e.nats);
        assert_eq!(e.direction, Direction::Estimate, "no range: no upper bound");
        assert!(cert.is_none());
        // Without Z the class means add to the covariance: a larger bound on I(X;Y).
        let (all, _) = gaussian_channel_bound(&x, &y, None, s, None, 0).unwrap();
        assert!(all.nats > e.nats + 0.5, "{} vs {}", all.nats, e.nats);
    }

    #[test]
    fn trace_certificate_covers_the_exact_value_for_bounded_features() {
        // Given z, X uniform on [m - 1, m + 1]^d: the Gaussian bound at the true covariance
        // (a^2/3 per coordinate) is at least I(X;Y|Z), so the certified value must be above it.
        let (d, s, a) = (3usize, 0.5f64, 1.0f64);
        let gaussian_at_truth = 0.5 * d as f64 * (1.0 + a * a / 3.0 / (s * s)).ln();
        let mut misses = 0;
        let mut gap = 0.0;
        for seed in 0..40u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let n = 2000;
            let (mut x, mut y, mut z) = (vec![], vec![], vec![]);
            for i in 0..n {
                let class = (i % 2) as u64;
                for _ in 0..d {
                    let u: f64 = rand::Rng::random_range(&mut rng, -a..a);
                    let e: f64 = StandardNormal.sample(&mut rng);
                    let xi = 1.5 * class as f64 + u;
                    x.push(xi);
                    y.push(xi + s * e);
                }
                z.push(class);
            }
            let (x, y) = (Matrix::new(n, d, x).unwrap(), Matrix::new(n, d, y).unwrap());
            let (est, cert) =
                gaussian_channel_bound(&x, &y, Some(&z), s, Some([-1.0, 2.5]), seed).unwrap();
            assert_eq!(est.direction, Direction::UpperBound);
            let b = cert.unwrap().bound(0.05, None).unwrap();
            misses += usize::from(b.nats < gaussian_at_truth);
            gap += b.nats - est.nats;
        }
        assert_eq!(
            misses, 0,
            "the certified upper bound fell below the truth's ceiling"
        );
        assert!(
            gap / 40.0 < 0.5,
            "certified bound too loose: mean gap {}",
            gap / 40.0
        );
    }

    #[test]
    fn refuses_a_view_that_is_not_x_plus_that_noise() {
        let (x, y, z) = noisy(2_000, &[1.0, 1.0], 0.5, 2);
        let err = gaussian_channel_bound(&x, &y, Some(&z), 0.1, None, 0).unwrap_err();
        assert!(err.to_string().contains("not noise_std 0.1"), "{err}");
        let err = gaussian_channel_bound(&x, &y, Some(&z), 0.5, Some([-1.0, 1.0]), 0).unwrap_err();
        assert!(err.to_string().contains("outside feature_range"), "{err}");
        let err = gaussian_channel_bound(&x, &x, Some(&z), 0.5, None, 0).unwrap_err();
        assert!(
            err.to_string().contains("standard deviation 0.0000"),
            "{err}"
        );
    }
}
