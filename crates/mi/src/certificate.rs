//! Certificates: what an estimate records so that a confidence bound on the true quantity
//! can be computed from it later, at whatever level the `bound` stage asks for.
//!
//! An estimator's point value (the `nats` column) is what it measured; a certificate holds
//! the sample summaries behind it (held-out losses, per-batch InfoNCE values, distances to
//! class means) and knows the inequality that turns them into a one-sided bound. The level is
//! not fixed here because one bound instance splits its failure probability over every term
//! and snapshot it certifies (a union bound), which only it can count.
//! docs/certification.md gives each formula with its source and assumptions.

use serde::{Deserialize, Serialize};

use super::confidence::{clopper_pearson_lower, entropy_lower, BoundedSample};
use super::error::MiError;

/// Which way a certified value points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertifiedSide {
    /// The true quantity is at least the value.
    Lower,
    /// The true quantity is at most the value.
    Upper,
}

/// The sample summaries of one estimate and the inequality they certify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Certificate {
    /// Barber-Agakov with a bounded loss: for the probe q mixed with a uniform floor,
    /// q_eps = (1 - eps) q + eps / K, every held-out loss -log q_eps(z|u) lies in
    /// [0, log(K / eps)] and I(U;Z) >= H(Z) - E[-log q_eps(Z|U)]. The expectation gets an
    /// empirical-Bernstein upper bound, H(Z) a lower bound from the label counts (or its exact
    /// value where the data fix it), and the held-out accuracy a Clopper-Pearson lower bound.
    Probe {
        /// Held-out losses of the floored probe.
        loss: BoundedSample,
        /// The floor eps.
        floor: f64,
        /// K: the label values the probe predicts.
        classes: usize,
        /// Count of each label over every row (train and held-out), for H(Z).
        label_counts: Vec<u64>,
        /// Held-out rows the probe classified correctly, and held-out rows.
        correct: u64,
        n_test: u64,
    },
    /// InfoNCE over disjoint held-out batches of N pairs: each batch value
    /// B = log N - L lies in [-2 / t, log N] for a critic whose scores lie in [-1/t, 1/t] (the
    /// cosine critic at temperature t; `infonce_critic` with `score_bound` 1/t), the
    /// batches are independent, and E[B] <= I(X;Y); so an empirical-Bernstein lower bound on
    /// E[B] is a lower bound on I(X;Y).
    Infonce {
        /// One value log N - L per batch.
        batches: BoundedSample,
        /// N.
        batch: usize,
        temperature: f64,
    },
    /// Gaussian channel through the trace: for Y = X + s E,
    /// I(X;Y|Z) <= sum_z p(z) 1/2 log det(I + Cov(X|z)/s^2) <= d/2 log(1 + T / (d s^2)) with
    /// T = E tr Cov(X|Z) (AM-GM, then Jensen). T <= E ||X - c_Z||^2 for class centres c fitted
    /// on another half of the rows, and that expectation gets an empirical-Bernstein upper
    /// bound: each squared distance is bounded because every feature lies in a known range.
    ChannelTrace {
        /// Squared distances ||x - c_z||^2 on the rows not used for the centres.
        distances: BoundedSample,
        /// d.
        dim: usize,
        noise_std: f64,
        /// The declared range every feature lies in.
        feature_range: [f64; 2],
    },
}

/// A confidence bound computed from a certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct Certified {
    /// The bound in nats.
    pub nats: f64,
    pub side: CertifiedSide,
    /// The inequality with its numbers, for the report.
    pub how: String,
}

/// The probe's certified pieces at one failure probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeParts {
    /// Upper confidence bound on the floored cross-entropy.
    pub cross_entropy_upper: f64,
    /// Lower bound on H(Z): exact where given, else from the label counts.
    pub entropy_lower: f64,
    /// Whether `entropy_lower` is the exact value.
    pub entropy_exact: bool,
}

impl Certificate {
    /// Which side of the true quantity the certified value lies on.
    pub fn side(&self) -> CertifiedSide {
        match self {
            Certificate::Probe { .. } | Certificate::Infonce { .. } => CertifiedSide::Lower,
            Certificate::ChannelTrace { .. } => CertifiedSide::Upper,
        }
    }

    /// What must hold beyond independent, identically distributed rows.
    pub fn assumptions(&self) -> &'static str {
        match self {
            Certificate::Probe { .. } => {
                "held-out rows i.i.d. and unseen by the probe's fit; Z takes only the K label values"
            }
            Certificate::Infonce { .. } => {
                "held-out pairs i.i.d. and unseen by the critic's training; critic scores within [-1/t, 1/t] (the cosine critic at temperature t, or a trained critic with score_bound 1/t)"
            }
            Certificate::ChannelTrace { .. } => {
                "Y = X + s E with E standard normal independent of (X, Z); every feature of X in the declared range; rows i.i.d."
            }
        }
    }

    /// The probe's two certified pieces, each at failure probability `delta / 2` (or the
    /// cross-entropy at `delta` when H(Z) is exact).
    pub fn probe_parts(
        &self,
        delta: f64,
        exact_entropy: Option<f64>,
    ) -> Result<Option<ProbeParts>, MiError> {
        let Certificate::Probe {
            loss,
            classes,
            label_counts,
            ..
        } = self
        else {
            return Ok(None);
        };
        Ok(Some(match exact_entropy {
            Some(h) => ProbeParts {
                cross_entropy_upper: loss.upper(delta)?,
                entropy_lower: h,
                entropy_exact: true,
            },
            None => ProbeParts {
                cross_entropy_upper: loss.upper(delta / 2.0)?,
                entropy_lower: entropy_lower(label_counts, *classes, delta / 2.0)?,
                entropy_exact: false,
            },
        }))
    }

    /// The confidence bound that fails with probability at most `delta`. `exact_entropy` is
    /// H(Z) where the data fix it (a probe then spends all of `delta` on the cross-entropy).
    pub fn bound(&self, delta: f64, exact_entropy: Option<f64>) -> Result<Certified, MiError> {
        match self {
            Certificate::Probe { floor, classes, .. } => {
                let parts = self.probe_parts(delta, exact_entropy)?.ok_or_else(|| {
                    MiError::InvalidParameter {
                        name: "certificate",
                        reason: "not a probe certificate".into(),
                    }
                })?;
                let h = if parts.entropy_exact {
                    format!("H(Z) {:.4} (exact)", parts.entropy_lower)
                } else {
                    format!("H(Z) >= {:.4} (label counts)", parts.entropy_lower)
                };
                Ok(Certified {
                    nats: parts.entropy_lower - parts.cross_entropy_upper,
                    side: CertifiedSide::Lower,
                    how: format!(
                        "{h} - cross-entropy <= {:.4} (empirical Bernstein, probe floored at eps = {floor} over K = {classes})",
                        parts.cross_entropy_upper
                    ),
                })
            }
            Certificate::Infonce {
                batches,
                batch,
                temperature,
            } => {
                let v = batches.lower(delta)?;
                Ok(Certified {
                    nats: v,
                    side: CertifiedSide::Lower,
                    how: format!(
                        "mean of {} disjoint batches of N = {batch} (t = {temperature}) >= {v:.4} (empirical Bernstein over [{:.2}, {:.2}])",
                        batches.n, batches.low, batches.high
                    ),
                })
            }
            Certificate::ChannelTrace {
                distances,
                dim,
                noise_std,
                ..
            } => {
                let t = distances.upper(delta)?;
                let d = *dim as f64;
                let v = 0.5 * d * (1.0 + t / (d * noise_std * noise_std)).ln();
                Ok(Certified {
                    nats: v,
                    side: CertifiedSide::Upper,
                    how: format!(
                        "d/2 log(1 + T/(d s^2)) with T <= {t:.4} (empirical Bernstein over {} rows), d = {dim}, s = {noise_std}",
                        distances.n
                    ),
                })
            }
        }
    }

    /// Clopper-Pearson lower bound on the probe's held-out accuracy, which is also a lower
    /// bound on the Bayes accuracy of predicting Z from U (the probe is one classifier).
    pub fn accuracy_lower(&self, delta: f64) -> Result<Option<f64>, MiError> {
        match self {
            Certificate::Probe {
                correct, n_test, ..
            } => Ok(Some(clopper_pearson_lower(*correct, *n_test, delta)?)),
            _ => Ok(None),
        }
    }

    /// K, the label values the probe predicts (declared, or the largest label + 1), for
    /// checking `classes`.
    pub fn classes(&self) -> Option<usize> {
        match self {
            Certificate::Probe { classes, .. } => Some(*classes),
            _ => None,
        }
    }

    /// The label counts over all rows (probe only).
    pub fn label_counts(&self) -> Option<&[u64]> {
        match self {
            Certificate::Probe { label_counts, .. } => Some(label_counts),
            _ => None,
        }
    }

    /// As JSON, for the `certificate` column of `mi_estimates.parquet`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From the `certificate` column.
    pub fn from_json(text: &str) -> Result<Certificate, MiError> {
        serde_json::from_str(text).map_err(|e| MiError::InvalidParameter {
            name: "certificate",
            reason: format!("unreadable certificate ({e}): {text}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(values: &[f64], low: f64, high: f64) -> BoundedSample {
        BoundedSample::from_values(values, low, high).unwrap()
    }

    #[test]
    fn json_round_trip_is_exact() {
        let c = Certificate::Probe {
            loss: sample(&[0.1, 0.7, 0.30000000000000004], 0.0, 6.0),
            floor: 0.01,
            classes: 3,
            label_counts: vec![4, 5, 6],
            correct: 2,
            n_test: 3,
        };
        let back = Certificate::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
        assert!(Certificate::from_json("{\"method\": \"nope\"}").is_err());
    }

    #[test]
    fn probe_bound_spends_delta_on_entropy_only_when_it_is_not_exact() {
        let losses: Vec<f64> = (0..2000)
            .map(|i| 0.5 + 0.1 * ((i % 7) as f64 - 3.0))
            .collect();
        let c = Certificate::Probe {
            loss: sample(&losses, 0.0, (3.0f64 / 0.01).ln()),
            floor: 0.01,
            classes: 3,
            label_counts: vec![3000, 3000, 3000],
            correct: 1500,
            n_test: 2000,
        };
        let exact = c.bound(0.05, Some(3f64.ln())).unwrap();
        let counted = c.bound(0.05, None).unwrap();
        assert_eq!(exact.side, CertifiedSide::Lower);
        assert!(exact.nats > counted.nats, "{exact:?} {counted:?}");
        assert!(
            exact.nats < 3f64.ln() - 0.5 && exact.nats > 3f64.ln() - 0.6,
            "{exact:?}"
        );
        let acc = c.accuracy_lower(0.05).unwrap().unwrap();
        assert!(acc < 0.75 && acc > 0.72, "{acc}");
        assert_eq!(c.classes(), Some(3));
    }

    #[test]
    fn channel_trace_bound_is_above_the_gaussian_value_at_the_true_trace() {
        // Any T at or above the true trace gives at least d/2 log(1 + T/(d s^2)).
        let d = 4usize;
        let dist: Vec<f64> = (0..4000)
            .map(|i| 1.0 + 0.5 * ((i % 5) as f64 - 2.0))
            .collect();
        let c = Certificate::ChannelTrace {
            distances: sample(&dist, 0.0, 16.0),
            dim: d,
            noise_std: 0.5,
            feature_range: [-1.0, 1.0],
        };
        let b = c.bound(0.05, None).unwrap();
        let at_mean = 0.5 * d as f64 * (1.0 + 1.0 / (d as f64 * 0.25)).ln();
        assert_eq!(b.side, CertifiedSide::Upper);
        assert!(
            b.nats > at_mean && b.nats < at_mean + 0.2,
            "{b:?} vs {at_mean}"
        );
    }
}
