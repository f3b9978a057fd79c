//! An upper bound on I(X;Y) and I(X;Y|Z) for a known additive Gaussian augmentation
//! Y = X + s E (E standard normal, independent of X and Z).
//!
//! The valid bounds subtract I(X;Y|Z), so a certificate needs an UPPER bound on it, which no
//! sample-based estimator gives. The augmentation channel does: given Z = z,
//! I(X;Y|z) = h(Y|z) - h(sE) and Cov(Y|z) = Cov(X|z) + s^2 I, and the Gaussian has the largest
//! entropy for a covariance, so I(X;Y|z) <= 1/2 log det(I + Cov(X|z) / s^2)
//! (shared/reference/bounds.md). It is exact when X given z is Gaussian.
//!
//! Only Cov(X|z) is estimated. With few samples per class relative to the dimension the
//! plug-in log-determinant is biased low, which the row's note says; Y is used to check that
//! it really is X plus noise of the stated size, because the bound means nothing otherwise.

use std::collections::BTreeMap;

use super::error::MiError;
use super::gaussian::logdet;
use super::linalg::sample_covariance;
use super::matrix::Matrix;
use super::{check_pair, BiasDirection, MiEstimate};

/// How far the measured sd of Y - X may stray from `noise_std` before the input is refused.
const NOISE_TOLERANCE: f64 = 0.1;

/// 1/2 log det(I + Cov(X|z) / s^2), averaged over the classes `z` (one class when `None`).
pub fn gaussian_channel_bound(
    x: &Matrix,
    y: &Matrix,
    z: Option<&[u64]>,
    noise_std: f64,
) -> Result<MiEstimate, MiError> {
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
    Ok(MiEstimate {
        nats: total,
        n,
        dims: (d, d),
        direction: BiasDirection::UpperBound,
        note: Some(note),
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
        let e = gaussian_channel_bound(&x, &y, Some(&z), s).unwrap();
        assert!((e.nats - truth).abs() < 0.02, "{} vs {truth}", e.nats);
        assert_eq!(e.direction, BiasDirection::UpperBound);
        // Without Z the class means add to the covariance: a larger bound on I(X;Y).
        let all = gaussian_channel_bound(&x, &y, None, s).unwrap();
        assert!(all.nats > e.nats + 0.5, "{} vs {}", all.nats, e.nats);
    }

    #[test]
    fn refuses_a_view_that_is_not_x_plus_that_noise() {
        let (x, y, z) = noisy(2_000, &[1.0, 1.0], 0.5, 2);
        let err = gaussian_channel_bound(&x, &y, Some(&z), 0.1).unwrap_err();
        assert!(err.to_string().contains("not noise_std 0.1"), "{err}");
        let err = gaussian_channel_bound(&x, &x, Some(&z), 0.5).unwrap_err();
        assert!(
            err.to_string().contains("standard deviation 0.0000"),
            "{err}"
        );
    }
}
