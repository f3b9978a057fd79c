//! Estimators as configured in a pipeline or on the command line, and one function that runs
//! any of them on a pair (with preprocessing and an interval) into a uniform result row.
//! Shared by the `estimate_mi` stage and `cbound mi`, so both behave identically.

use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bootstrap::{subsample_interval, SubsampleConfig};
use super::channel::gaussian_channel_bound;
use super::discrete::Correction;
use super::preprocess::{asinh, jitter, subsample_indices, DEFAULT_JITTER};
use super::{
    BiasDirection, DiscreteMi, Estimator, GaussianMi, Histogram, InfoNce, Ksg, KsgAlgorithm,
    KsgCmi, Matrix, MiError, Probe,
};

fn default_k() -> usize {
    3
}
fn default_algorithm() -> u8 {
    1
}
fn default_bins() -> usize {
    16
}
fn yes() -> bool {
    true
}
fn default_batch() -> usize {
    256
}
fn default_train_fraction() -> f64 {
    0.8
}
fn default_steps() -> usize {
    300
}
fn default_l2() -> f64 {
    1e-4
}
fn default_floor() -> f64 {
    super::probe::DEFAULT_FLOOR
}

/// One estimator with its settings, written `{name: ksg, k: 3}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum EstimatorSpec {
    /// Kraskov-Stoegbauer-Grassberger k-NN estimate; an estimate, biased low at high MI or dimension.
    Ksg {
        #[serde(default = "default_k")]
        k: usize,
        /// 1 or 2 (Kraskov et al. 2004).
        #[serde(default = "default_algorithm")]
        algorithm: u8,
    },
    /// Frenzel-Pompe conditional MI I(X;Y|Z); needs `z`.
    KsgCmi {
        #[serde(default = "default_k")]
        k: usize,
        /// Treat Z as class labels (per-class KSG weighted by class frequency).
        #[serde(default)]
        discrete_z: bool,
    },
    /// Equal-width histogram plug-in, for low dimensions.
    Histogram {
        #[serde(default = "default_bins")]
        bins: usize,
        #[serde(default = "yes")]
        miller_madow: bool,
    },
    /// Log-determinant (Gaussian) estimate: exact for Gaussians, blind to nonlinear dependence.
    Gaussian,
    /// Plug-in MI between label columns.
    Discrete {
        #[serde(default = "yes")]
        miller_madow: bool,
    },
    /// log N - L of the contrastive critic on held-out projection pairs: a lower bound, capped at log N.
    Infonce {
        temperature: f64,
        #[serde(default = "default_batch")]
        batch: usize,
    },
    /// Upper bound on I(X;Y) (or I(X;Y|Z) with `z` labels) for the augmentation Y = X + noise_std * E:
    /// 1/2 log det(I + Cov(X|z) / noise_std^2). x: the clean input, y: its noise view (checked).
    GaussianChannel {
        noise_std: f64,
        /// `[low, high]` that every feature of x lies in (e.g. of normalised pixels). With it the
        /// row also certifies an upper bound (through the trace); without it the plug-in value
        /// is only an estimate, since it is biased low.
        #[serde(default)]
        feature_range: Option<[f64; 2]>,
    },
    /// Softmax-regression probe: I(U;Z) >= H(Z) - held-out cross-entropy (a lower bound); y must be labels.
    Probe {
        #[serde(default = "default_train_fraction")]
        train_fraction: f64,
        #[serde(default = "default_steps")]
        steps: usize,
        #[serde(default = "default_l2")]
        l2: f64,
        /// Uniform floor eps mixed into the probe for its confidence bound (each held-out loss
        /// is then at most log(K / eps)).
        #[serde(default = "default_floor")]
        floor: f64,
        /// K, the number of label values (default: the largest label + 1); give it when a
        /// rare class may be missing from the sample.
        #[serde(default)]
        classes: Option<usize>,
    },
}

impl EstimatorSpec {
    /// Parses the command line's short form: `ksg`, `ksg:k=5`, `infonce:temperature=0.1,batch=128`.
    pub fn parse_cli(text: &str) -> Result<EstimatorSpec, String> {
        let (name, rest) = text.split_once(':').unwrap_or((text, ""));
        let mut map = serde_json::Map::new();
        map.insert(
            "name".into(),
            serde_json::Value::String(name.trim().to_string()),
        );
        for kv in rest.split(',').filter(|s| !s.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("`{kv}` in `{text}` is not key=value"))?;
            let value = serde_json::from_str(v.trim())
                .unwrap_or_else(|_| serde_json::Value::String(v.trim().into()));
            map.insert(k.trim().to_string(), value);
        }
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| format!("estimator `{text}`: {e}"))
    }

    pub fn name(&self) -> &'static str {
        match self {
            EstimatorSpec::Ksg { .. } => "ksg",
            EstimatorSpec::KsgCmi { .. } => "ksg_cmi",
            EstimatorSpec::GaussianChannel { .. } => "gaussian_channel",
            EstimatorSpec::Histogram { .. } => "histogram",
            EstimatorSpec::Gaussian => "gaussian",
            EstimatorSpec::Discrete { .. } => "discrete",
            EstimatorSpec::Infonce { .. } => "infonce",
            EstimatorSpec::Probe { .. } => "probe",
        }
    }

    /// Whether x and y are continuous features (to be preprocessed) or labels/projections.
    /// The channel bound is in the units of the augmentation's noise: never rescaled.
    fn continuous_x(&self) -> bool {
        !matches!(
            self,
            EstimatorSpec::Discrete { .. }
                | EstimatorSpec::Infonce { .. }
                | EstimatorSpec::GaussianChannel { .. }
        )
    }

    fn continuous_y(&self) -> bool {
        !matches!(
            self,
            EstimatorSpec::Discrete { .. }
                | EstimatorSpec::Infonce { .. }
                | EstimatorSpec::Probe { .. }
                | EstimatorSpec::GaussianChannel { .. }
        )
    }

    fn uses_neighbours(&self) -> bool {
        matches!(
            self,
            EstimatorSpec::Ksg { .. } | EstimatorSpec::KsgCmi { .. }
        )
    }

    fn build(&self, seed: u64) -> Result<Box<dyn Estimator>, MiError> {
        Ok(match self {
            EstimatorSpec::Ksg { k, algorithm } => {
                let algorithm = match algorithm {
                    1 => KsgAlgorithm::One,
                    2 => KsgAlgorithm::Two,
                    other => {
                        return Err(MiError::InvalidParameter {
                            name: "algorithm",
                            reason: format!("must be 1 or 2, got {other}"),
                        })
                    }
                };
                Box::new(Ksg::new(*k)?.with_algorithm(algorithm))
            }
            EstimatorSpec::Histogram { bins, miller_madow } => {
                let mut h = Histogram::new(*bins)?;
                h.miller_madow = *miller_madow;
                Box::new(h)
            }
            EstimatorSpec::Gaussian => Box::new(GaussianMi),
            EstimatorSpec::Discrete { miller_madow } => Box::new(DiscreteMi {
                correction: if *miller_madow {
                    Correction::MillerMadow
                } else {
                    Correction::None
                },
            }),
            EstimatorSpec::Infonce { temperature, batch } => {
                let mut e = InfoNce::new(*temperature, *batch)?;
                e.seed = seed;
                Box::new(e)
            }
            EstimatorSpec::Probe {
                train_fraction,
                steps,
                l2,
                floor,
                classes,
            } => Box::new(Probe {
                train_fraction: *train_fraction,
                steps: *steps,
                l2: *l2,
                floor: *floor,
                classes: *classes,
                seed,
            }),
            EstimatorSpec::KsgCmi { .. } | EstimatorSpec::GaussianChannel { .. } => {
                // Both read z, so estimate() handles them before building a two-sample estimator.
                return Err(MiError::InvalidParameter {
                    name: "estimator",
                    reason: format!("{} is not a two-sample estimator", self.name()),
                });
            }
        })
    }
}

/// Preprocessing applied to continuous inputs before estimating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Shift and scale every continuous column to mean 0, sd 1 (constant columns are only centred).
    #[serde(default = "yes")]
    pub standardise: bool,
    /// Add a tiny seeded jitter (1e-10 sd) before k-NN estimators, so ties break deterministically.
    #[serde(default = "yes")]
    pub jitter: bool,
    /// Apply asinh to continuous columns first (tames heavy tails).
    #[serde(default)]
    pub asinh: bool,
    /// Estimate on a seeded subsample of at most this many rows.
    #[serde(default)]
    pub max_rows: Option<usize>,
}

impl Default for Preprocess {
    fn default() -> Preprocess {
        Preprocess {
            standardise: true,
            jitter: true,
            asinh: false,
            max_rows: None,
        }
    }
}

/// A resampling interval: half-sampling (delete-d jackknife) spread of the estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntervalSpec {
    /// Number of subsamples.
    #[serde(default = "default_reps")]
    pub reps: usize,
    /// Central coverage.
    #[serde(default = "default_level")]
    pub level: f64,
}

fn default_reps() -> usize {
    50
}
fn default_level() -> f64 {
    0.95
}

/// One estimate, as a row of `mi_estimates.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimateRow {
    pub estimator: String,
    /// The estimator's settings, as JSON.
    pub params: String,
    pub n: usize,
    pub dim_x: usize,
    pub dim_y: usize,
    pub nats: f64,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub ci_level: Option<f64>,
    /// `lower_bound`, `upper_bound` or `estimate`.
    pub kind: &'static str,
    /// Held-out accuracy (probe only).
    pub accuracy: Option<f64>,
    /// The largest value the estimator can report (log N for InfoNCE).
    pub cap_nats: Option<f64>,
    pub seconds: f64,
    pub note: Option<String>,
    /// What a confidence bound on the quantity needs (probe, infonce, gaussian_channel).
    pub certificate: Option<super::certificate::Certificate>,
}

fn kind_name(d: BiasDirection) -> &'static str {
    match d {
        BiasDirection::LowerBound => "lower_bound",
        BiasDirection::UpperBound => "upper_bound",
        BiasDirection::Estimate => "estimate",
    }
}

fn prepare(m: &Matrix, pre: &Preprocess, neighbours: bool, seed: u64) -> Result<Matrix, MiError> {
    let mut m = if pre.asinh { asinh(m) } else { m.clone() };
    if pre.standardise {
        let means = m.column_means();
        let sds = m.column_stds();
        let cols = m.cols();
        for r in 0..m.rows() {
            for (j, v) in m.row_mut(r).iter_mut().enumerate().take(cols) {
                *v -= means[j];
                if sds[j] > 0.0 {
                    *v /= sds[j];
                }
            }
        }
    }
    if neighbours && pre.jitter {
        m = jitter(&m, DEFAULT_JITTER, seed)?;
    }
    Ok(m)
}

/// Rows of a label matrix as hashable class codes (equal rows, equal codes).
fn label_codes(z: &Matrix) -> Vec<u64> {
    z.iter_rows()
        .map(|r| {
            r.iter()
                .fold(0u64, |h, v| h.rotate_left(17) ^ (v + 0.0).to_bits())
        })
        .collect()
}

/// Runs one estimator on (x, y[, z]).
pub fn estimate(
    spec: &EstimatorSpec,
    x: &Matrix,
    y: &Matrix,
    z: Option<&Matrix>,
    pre: &Preprocess,
    interval: Option<&IntervalSpec>,
    seed: u64,
) -> Result<EstimateRow, MiError> {
    let start = Instant::now();
    for m in [Some(x), Some(y), z].into_iter().flatten() {
        m.check_finite(if std::ptr::eq(m, x) {
            "x"
        } else if std::ptr::eq(m, y) {
            "y"
        } else {
            "z"
        })?;
    }
    let rows = x.rows();
    let (mut x, mut y, mut z) = (x.clone(), y.clone(), z.cloned());
    if let Some(limit) = pre.max_rows.filter(|&m| m < rows) {
        let idx = subsample_indices(rows, limit, seed)?;
        x = x.select_rows(&idx)?;
        y = y.select_rows(&idx)?;
        z = z.map(|m| m.select_rows(&idx)).transpose()?;
    }
    let nb = spec.uses_neighbours();
    if spec.continuous_x() {
        x = prepare(&x, pre, nb, seed)?;
    }
    if spec.continuous_y() {
        y = prepare(&y, pre, nb, seed ^ 0x9e37_79b9_7f4a_7c15)?;
    }
    let params = serde_json::to_string(spec).unwrap_or_default();
    let mut row = EstimateRow {
        estimator: spec.name().to_string(),
        params,
        n: x.rows(),
        dim_x: x.cols(),
        dim_y: y.cols(),
        nats: f64::NAN,
        ci_low: None,
        ci_high: None,
        ci_level: None,
        kind: "estimate",
        accuracy: None,
        cap_nats: None,
        seconds: 0.0,
        note: None,
        certificate: None,
    };
    if let EstimatorSpec::GaussianChannel {
        noise_std,
        feature_range,
    } = spec
    {
        let labels = z.as_ref().map(label_codes);
        let (e, certificate) =
            gaussian_channel_bound(&x, &y, labels.as_deref(), *noise_std, *feature_range, seed)?;
        row.nats = e.nats;
        row.kind = kind_name(e.direction);
        row.note = e.note;
        row.certificate = certificate;
        row.seconds = start.elapsed().as_secs_f64();
        return Ok(row);
    }
    if let EstimatorSpec::KsgCmi { k, discrete_z } = spec {
        let z = z.ok_or_else(|| MiError::InvalidParameter {
            name: "z",
            reason: "ksg_cmi estimates I(X;Y|Z): give a `z`".into(),
        })?;
        let est = KsgCmi::new(*k)?;
        let e = if *discrete_z {
            est.estimate_discrete(&x, &y, &label_codes(&z))?
        } else {
            let z = prepare(&z, pre, true, seed ^ 0x51)?;
            est.estimate_continuous(&x, &y, &z)?
        };
        row.nats = e.nats;
        row.kind = kind_name(e.direction);
        row.note = e.note;
        if interval.is_some() {
            row.note = Some(format!(
                "{} (no interval: subsampling intervals are not implemented for conditional MI)",
                row.note.unwrap_or_default()
            ));
        }
        row.seconds = start.elapsed().as_secs_f64();
        return Ok(row);
    }
    let est = spec.build(seed)?;
    if let EstimatorSpec::Probe {
        train_fraction,
        steps,
        l2,
        floor,
        classes,
    } = spec
    {
        // Fitted once here (not through the trait) to keep its accuracy, H(Z), certificate.
        let r = Probe {
            train_fraction: *train_fraction,
            steps: *steps,
            l2: *l2,
            floor: *floor,
            classes: *classes,
            seed,
        }
        .fit(&x, &y)?;
        row.nats = r.mi_lower_bound;
        row.kind = kind_name(BiasDirection::LowerBound);
        row.accuracy = Some(r.accuracy);
        row.cap_nats = Some(r.entropy);
        row.note = Some(format!(
            "H(Z) {:.4} - held-out cross-entropy {:.4}; held-out accuracy on {} rows",
            r.entropy, r.cross_entropy, r.n_test
        ));
        row.certificate = Some(r.certificate);
    } else if let EstimatorSpec::Infonce { temperature, batch } = spec {
        // The batch losses once: their mean is the estimate, their spread the certificate.
        let mut critic = InfoNce::new(*temperature, *batch)?;
        critic.seed = seed;
        let losses = critic.batch_losses(&x, &y)?;
        let e = critic.estimate_from(&x, &y, &losses);
        row.nats = e.nats;
        row.kind = kind_name(e.direction);
        row.note = e.note;
        row.cap_nats = Some(critic.cap());
        row.certificate = critic.certificate_from(&losses)?;
    } else {
        let e = est.estimate(&x, &y)?;
        row.nats = e.nats;
        row.kind = kind_name(e.direction);
        row.note = e.note;
    }
    if let Some(iv) = interval {
        let cfg = SubsampleConfig {
            reps: iv.reps,
            level: iv.level,
            seed,
            ..SubsampleConfig::default()
        };
        let i = subsample_interval(est.as_ref(), &x, &y, &cfg)?;
        row.ci_low = Some(i.lo);
        row.ci_high = Some(i.hi);
        row.ci_level = Some(iv.level);
    }
    row.seconds = start.elapsed().as_secs_f64();
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_short_forms_parse() {
        assert_eq!(
            EstimatorSpec::parse_cli("ksg").unwrap(),
            EstimatorSpec::Ksg { k: 3, algorithm: 1 }
        );
        assert_eq!(
            EstimatorSpec::parse_cli("ksg:k=5,algorithm=2").unwrap(),
            EstimatorSpec::Ksg { k: 5, algorithm: 2 }
        );
        assert_eq!(
            EstimatorSpec::parse_cli("infonce:temperature=0.1").unwrap(),
            EstimatorSpec::Infonce {
                temperature: 0.1,
                batch: 256
            }
        );
        let err = EstimatorSpec::parse_cli("ksg:kk=5").unwrap_err();
        assert!(err.contains("unknown field `kk`"), "{err}");
        assert!(EstimatorSpec::parse_cli("nope").is_err());
    }

    #[test]
    fn gaussian_pair_through_every_continuous_estimator() {
        use crate::data::ground_truth::GaussianTask;
        use rand::SeedableRng;
        let task = GaussianTask::Bivariate { rho: 0.75 };
        let (x, y) = task
            .sample(2000, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3), false)
            .unwrap();
        for spec in ["ksg", "ksg:algorithm=2", "gaussian", "histogram:bins=16"] {
            let spec = EstimatorSpec::parse_cli(spec).unwrap();
            let row = estimate(
                &spec,
                &x,
                &y,
                None,
                &Preprocess::default(),
                Some(&IntervalSpec {
                    reps: 10,
                    level: 0.9,
                }),
                1,
            )
            .unwrap();
            assert!((row.nats - task.true_mi()).abs() < 0.08, "{row:?}");
            let (lo, hi) = (row.ci_low.unwrap(), row.ci_high.unwrap());
            assert!(lo <= row.nats && row.nats <= hi, "{row:?}");
            assert_eq!(row.kind, "estimate");
        }
    }

    #[test]
    fn nan_input_is_an_error_naming_the_side() {
        let x = Matrix::from_rows(&[[1.0], [f64::NAN], [3.0], [4.0], [5.0]]).unwrap();
        let y = Matrix::from_rows(&[[1.0], [2.0], [3.0], [4.0], [5.0]]).unwrap();
        let err = estimate(
            &EstimatorSpec::Gaussian,
            &x,
            &y,
            None,
            &Preprocess::default(),
            None,
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains('x'), "{err}");
    }
}
