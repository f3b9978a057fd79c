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

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::certificate::Certificate;
use super::confidence::BoundedSample;
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
}

fn labels_of(z: &Matrix) -> Result<Vec<usize>, MiError> {
    if z.cols() != 1 {
        return Err(MiError::InvalidParameter {
            name: "labels",
            reason: format!("the probe needs one label column, got {}", z.cols()),
        });
    }
    z.iter_rows()
        .enumerate()
        .map(|(i, r)| {
            let v = r[0];
            if v >= 0.0 && v.fract() == 0.0 && v < 1e6 {
                Ok(v as usize)
            } else {
                Err(MiError::InvalidParameter {
                    name: "labels",
                    reason: format!(
                        "row {i}: label {v} is not a class index (a non-negative integer)"
                    ),
                })
            }
        })
        .collect()
}

impl Probe {
    pub fn fit(&self, u: &Matrix, z: &Matrix) -> Result<ProbeResult, MiError> {
        let n = check_pair(u, z)?;
        if !(self.train_fraction > 0.0 && self.train_fraction < 1.0) {
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
        let labels = labels_of(z)?;
        let seen = labels.iter().copied().max().unwrap_or(0) + 1;
        let k = match self.classes {
            Some(c) if c < seen => {
                return Err(MiError::InvalidParameter {
                    name: "classes",
                    reason: format!(
                        "`classes: {c}` but a label is {}: labels must lie in 0..{c}",
                        seen - 1
                    ),
                })
            }
            Some(c) => c,
            None => seen,
        };
        let mut counts = vec![0usize; k];
        for &l in &labels {
            counts[l] += 1;
        }
        // With K declared, one observed class is data, not an error: Z may be nearly constant,
        // and the certified bound then says (correctly) that little is known.
        if counts.iter().filter(|&&c| c > 0).count() < 2 && self.classes.is_none() {
            return Err(MiError::SingleClass { which: "labels", n });
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(self.seed));
        let n_train = ((n as f64) * self.train_fraction).round() as usize;
        if n_train < 2 || n - n_train < 1 {
            return Err(MiError::TooFewSamples {
                context: "a probe with a held-out split".into(),
                needed: 4,
                got: n,
            });
        }
        let (train, test) = order.split_at(n_train);
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
        let features = |i: usize| -> Vec<f64> {
            u.row(i)
                .iter()
                .zip(&mean)
                .zip(&sd)
                .map(|((v, m), s)| (v - m) / s)
                .collect()
        };
        let xtrain: Vec<Vec<f64>> = train.iter().map(|&i| features(i)).collect();
        let xtest: Vec<Vec<f64>> = test.iter().map(|&i| features(i)).collect();
        let ytrain: Vec<usize> = train.iter().map(|&i| labels[i]).collect();
        let ytest: Vec<usize> = test.iter().map(|&i| labels[i]).collect();

        // Weights (d + 1) x k, bias last; Adam on the mean cross-entropy (a convex problem).
        let width = d + 1;
        let mut w = vec![0.0; width * k];
        let (mut m1, mut m2) = (vec![0.0; w.len()], vec![0.0; w.len()]);
        let (lr, b1, b2, eps) = (0.05, 0.9, 0.999, 1e-8);
        for step in 1..=self.steps {
            let grad = xtrain
                .par_chunks(256)
                .zip(ytrain.par_chunks(256))
                .map(|(xs, ys)| {
                    let mut g = vec![0.0; width * k];
                    let mut p = vec![0.0; k];
                    for (x, &y) in xs.iter().zip(ys) {
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
                let reg = if idx < d * k { self.l2 * w[idx] } else { 0.0 };
                let g = g / n_train as f64 + reg;
                m1[idx] = b1 * m1[idx] + (1.0 - b1) * g;
                m2[idx] = b2 * m2[idx] + (1.0 - b2) * g * g;
                let mhat = m1[idx] / (1.0 - b1.powi(step as i32));
                let vhat = m2[idx] / (1.0 - b2.powi(step as i32));
                w[idx] -= lr * mhat / (vhat.sqrt() + eps);
            }
        }
        let mut p = vec![0.0; k];
        let mut ce = 0.0;
        let mut correct = 0usize;
        let mut floored = Vec::with_capacity(xtest.len());
        let uniform = self.floor / k as f64;
        for (x, &y) in xtest.iter().zip(&ytest) {
            softmax(&w, x, k, &mut p);
            ce -= p[y].max(1e-300).ln();
            floored.push(-((1.0 - self.floor) * p[y] + uniform).ln());
            let best = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(c, _)| c)
                .unwrap_or(0);
            correct += usize::from(best == y);
        }
        let n_test = ytest.len();
        let ce = ce / n_test as f64;
        let entropy = -counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let q = c as f64 / n as f64;
                q * q.ln()
            })
            .sum::<f64>();
        let loss = BoundedSample::from_values(&floored, 0.0, (k as f64 / self.floor).ln())?;
        Ok(ProbeResult {
            mi_lower_bound: entropy - ce,
            entropy,
            cross_entropy: ce,
            accuracy: correct as f64 / n_test as f64,
            n_train,
            n_test,
            classes: counts.iter().filter(|&&c| c > 0).count(),
            certificate: Certificate::Probe {
                loss,
                floor: self.floor,
                classes: k,
                label_counts: counts.iter().map(|&c| c as u64).collect(),
                correct: correct as u64,
                n_test: n_test as u64,
            },
        })
    }
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
