//! InfoNCE lower bound from a trained critic: log N - L on held-out batches.
//!
//! Given the projections z1 = g(f(x)) and z2 = g(f(y)) of held-out pairs, the critic is the
//! contrastive model's own score s(i, j) = cos(z1_i, z2_j) / temperature. Each batch of N
//! pairs gives a loss L (cross-entropy with the diagonal as positives); log N - L bounds
//! I(X;Y) from below in expectation and can never exceed log N (the cap, reported with it).
//! A single batch can overshoot, so the estimate averages over all full batches of a
//! seeded shuffle. The average is still below the truth only on average: the batch values
//! are recorded in a [`Certificate`] (each lies in [-2/t, log N] for the normalised critic),
//! from which `bound` computes an empirical-Bernstein lower bound at its confidence level.
//! With few batches that bound is often vacuous, which is the honest answer.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::certificate::Certificate;
use super::confidence::BoundedSample;
use super::{check_pair, Direction, Estimator, Matrix, MiError, MiEstimate};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InfoNce {
    pub temperature: f64,
    /// N: pairs per batch (1 positive and N - 1 negatives each).
    pub batch: usize,
    /// L2-normalise projections first (as InfoNCE training does).
    pub normalise: bool,
    pub seed: u64,
}

impl InfoNce {
    pub fn new(temperature: f64, batch: usize) -> Result<InfoNce, MiError> {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(MiError::InvalidParameter {
                name: "temperature",
                reason: format!("must be positive, got {temperature}"),
            });
        }
        if batch < 2 {
            return Err(MiError::InvalidParameter {
                name: "batch",
                reason: format!("needs at least 2 pairs per batch, got {batch}"),
            });
        }
        Ok(InfoNce {
            temperature,
            batch,
            normalise: true,
            seed: 0,
        })
    }

    /// log N: no InfoNCE estimate can exceed it.
    pub fn cap(&self) -> f64 {
        (self.batch as f64).ln()
    }

    /// Mean InfoNCE loss over full batches.
    pub fn loss(&self, z1: &Matrix, z2: &Matrix) -> Result<f64, MiError> {
        let losses = self.batch_losses(z1, z2)?;
        Ok(losses.iter().sum::<f64>() / losses.len() as f64)
    }

    /// The certificate of the estimate: the batch values log N - L. Only a normalised
    /// (cosine) critic has the bounded range the confidence bound needs.
    pub fn certificate(&self, z1: &Matrix, z2: &Matrix) -> Result<Option<Certificate>, MiError> {
        self.certificate_from(&self.batch_losses(z1, z2)?)
    }

    /// The certificate from batch losses already computed (see [`InfoNce::batch_losses`]).
    pub fn certificate_from(&self, losses: &[f64]) -> Result<Option<Certificate>, MiError> {
        if !self.normalise {
            return Ok(None);
        }
        let values: Vec<f64> = losses.iter().map(|l| self.cap() - l).collect();
        if values.len() < 2 {
            return Ok(None);
        }
        let batches = BoundedSample::from_values(&values, -2.0 / self.temperature, self.cap())?;
        Ok(Some(Certificate::Infonce {
            batches,
            batch: self.batch,
            temperature: self.temperature,
        }))
    }

    /// The InfoNCE loss of each full batch of a seeded shuffle.
    pub fn batch_losses(&self, z1: &Matrix, z2: &Matrix) -> Result<Vec<f64>, MiError> {
        let n = check_pair(z1, z2)?;
        if z1.cols() != z2.cols() {
            return Err(MiError::InvalidParameter {
                name: "dims",
                reason: format!(
                    "projections must have the same width, got {} and {}",
                    z1.cols(),
                    z2.cols()
                ),
            });
        }
        if n < self.batch {
            return Err(MiError::TooFewSamples {
                context: format!("InfoNCE with batch N = {}", self.batch),
                needed: self.batch,
                got: n,
            });
        }
        let prep = |m: &Matrix| -> Vec<Vec<f64>> {
            m.iter_rows()
                .map(|r| {
                    let norm = if self.normalise {
                        r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12)
                    } else {
                        1.0
                    };
                    r.iter().map(|v| v / norm).collect()
                })
                .collect()
        };
        let (a, b) = (prep(z1), prep(z2));
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
        let batches: Vec<&[usize]> = order.chunks_exact(self.batch).collect();
        let losses: Vec<f64> = batches
            .par_iter()
            .map(|idx| {
                let mut total = 0.0;
                let mut logits = vec![0.0; idx.len()];
                for &i in idx.iter() {
                    for (slot, &j) in logits.iter_mut().zip(idx.iter()) {
                        *slot = a[i].iter().zip(&b[j]).map(|(p, q)| p * q).sum::<f64>()
                            / self.temperature;
                    }
                    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
                    let pos =
                        a[i].iter().zip(&b[i]).map(|(p, q)| p * q).sum::<f64>() / self.temperature;
                    total += lse - pos;
                }
                total / idx.len() as f64
            })
            .collect();
        Ok(losses)
    }
}

impl Estimator for InfoNce {
    fn name(&self) -> &'static str {
        "infonce"
    }

    fn direction(&self) -> Direction {
        Direction::LowerBound
    }

    fn estimate(&self, x: &Matrix, y: &Matrix) -> Result<MiEstimate, MiError> {
        let losses = self.batch_losses(x, y)?;
        Ok(self.estimate_from(x, y, &losses))
    }
}

impl InfoNce {
    /// The estimate log N - mean loss from batch losses already computed.
    pub fn estimate_from(&self, x: &Matrix, y: &Matrix, losses: &[f64]) -> MiEstimate {
        let loss = losses.iter().sum::<f64>() / losses.len() as f64;
        let full = losses.len();
        MiEstimate {
            nats: self.cap() - loss,
            n: x.rows(),
            dims: (x.cols(), y.cols()),
            direction: Direction::LowerBound,
            note: Some(format!(
                "log N - L over {full} held-out batches of N = {}, temperature {}; capped at log N = {:.4}",
                self.batch,
                self.temperature,
                self.cap()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_batch() {
        // Two pairs, unnormalised, temperature 1: logits [[1, 0], [0, 1]].
        let z1 = Matrix::from_rows(&[[1.0, 0.0], [0.0, 1.0]]).unwrap();
        let z2 = z1.clone();
        let mut est = InfoNce::new(1.0, 2).unwrap();
        est.normalise = false;
        let expected = (1.0f64.exp() + 1.0).ln() - 1.0;
        assert!((est.loss(&z1, &z2).unwrap() - expected).abs() < 1e-12);
        let e = est.estimate(&z1, &z2).unwrap();
        assert!((e.nats - (2f64.ln() - expected)).abs() < 1e-12);
        assert_eq!(e.direction, Direction::LowerBound);
    }

    #[test]
    fn perfect_critic_approaches_the_cap_and_independent_data_stays_below_zero() {
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 1024;
        let d = 16;
        let x: Vec<f64> = (0..n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let noise: Vec<f64> = (0..n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let z1 = Matrix::new(n, d, x.clone()).unwrap();
        let same = Matrix::new(
            n,
            d,
            x.iter().zip(&noise).map(|(a, e)| a + 0.01 * e).collect(),
        )
        .unwrap();
        let indep = Matrix::new(n, d, noise).unwrap();
        let est = InfoNce::new(0.05, 64).unwrap();
        let high = est.estimate(&z1, &same).unwrap().nats;
        assert!(high > 0.95 * est.cap() && high <= est.cap(), "{high}");
        // With no dependence a sharp critic is confidently wrong: far below zero, which is
        // still a valid (useless) lower bound; a soft one sits near zero, never clearly above.
        let sharp = est.estimate(&z1, &indep).unwrap().nats;
        assert!(sharp < -1.0, "{sharp}");
        let soft = InfoNce::new(1.0, 64)
            .unwrap()
            .estimate(&z1, &indep)
            .unwrap()
            .nats;
        assert!(soft < 0.05 && soft > -0.5, "{soft}");
    }

    #[test]
    fn too_few_rows_for_a_batch_is_an_error() {
        let z = Matrix::from_rows(&[[1.0], [2.0]]).unwrap();
        let err = InfoNce::new(0.1, 8).unwrap().estimate(&z, &z).unwrap_err();
        assert!(err.to_string().contains('8'), "{err}");
        assert!(InfoNce::new(0.0, 8).is_err());
    }
}
