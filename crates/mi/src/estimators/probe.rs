//! `probe`: a softmax-regression probe of labels y from features x ([`crate::probe`]):
//! I(U;Z) >= H(Z) - held-out cross-entropy, a lower bound with the certificate of its
//! confidence bound and the held-out accuracy.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample};
use crate::{Direction, MiError, Probe};
use cbound_core::params::ParamError;

/// Settings of `probe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeParams {
    /// Fraction of rows used to fit, strictly between 0 and 1; the rest measure the
    /// cross-entropy.
    pub train_fraction: f64,
    /// Full-batch optimisation steps (at least 1).
    pub steps: usize,
    /// L2 penalty on the weights (at least 0).
    pub l2: f64,
    /// Uniform floor eps mixed into the probe for its confidence bound (each held-out loss
    /// is then at most log(K / eps)).
    pub floor: f64,
    /// K, the number of label values (default: the largest label + 1); give it when a
    /// rare class may be missing from the sample.
    pub classes: Option<usize>,
}

impl Default for ProbeParams {
    fn default() -> ProbeParams {
        let p = Probe::default();
        ProbeParams {
            train_fraction: p.train_fraction,
            steps: p.steps,
            l2: p.l2,
            floor: p.floor,
            classes: p.classes,
        }
    }
}

impl ProbeParams {
    fn probe(&self, seed: u64) -> Probe {
        Probe {
            train_fraction: self.train_fraction,
            steps: self.steps,
            l2: self.l2,
            floor: self.floor,
            classes: self.classes,
            seed,
        }
    }
}

pub struct ProbeKind;

impl EstimatorKind for ProbeKind {
    type Params = ProbeParams;
    const NAME: &'static str = "probe";
    const SUMMARY: &'static str =
        "Softmax-regression probe: I(U;Z) >= H(Z) - held-out cross-entropy (a lower bound); y must be labels.";
    const EXAMPLE: &'static str = "{name: probe, steps: 300, classes: 10}";

    fn inputs(_: &ProbeParams) -> Inputs {
        Inputs {
            x: Input::Features,
            y: Input::Labels,
            z: Conditioning::Unused,
        }
    }

    fn direction(_: &ProbeParams) -> Direction {
        Direction::LowerBound
    }

    fn check(p: &ProbeParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        rules::open_unit(&mut out, "train_fraction", p.train_fraction);
        rules::at_least(&mut out, "steps", p.steps, 1, "");
        if !(p.l2 >= 0.0 && p.l2.is_finite()) {
            out.push(ParamError::at(
                &["l2"],
                format!("l2 must be finite and at least 0, got {}", p.l2),
            ));
        }
        rules::open_unit(&mut out, "floor", p.floor);
        if let Some(c) = p.classes {
            rules::at_least(
                &mut out,
                "classes",
                c,
                2,
                " (a label takes at least two values)",
            );
        }
        out
    }

    fn run(p: &ProbeParams, s: &Sample) -> Result<Outcome, MiError> {
        // Fitted directly (not through the two-sample trait) to keep its accuracy, H(Z) and
        // certificate.
        let probe = p.probe(s.seed);
        let r = match s.split {
            Some(h) => probe.fit_split(s.x, s.y, h.clone())?,
            None => probe.fit(s.x, s.y)?,
        };
        Ok(Outcome {
            nats: r.mi_lower_bound,
            direction: Direction::LowerBound,
            note: Some(format!(
                "H(Z) {:.4} - held-out cross-entropy {:.4}; held-out accuracy on {} rows",
                r.entropy, r.cross_entropy, r.n_test
            )),
            accuracy: Some(r.accuracy),
            cap_nats: Some(r.entropy),
            certificate: Some(r.certificate),
            held_out: Some(r.held_out),
        })
    }

    fn resampling(p: &ProbeParams, seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Subsample(Box::new(p.probe(seed))))
    }
}
