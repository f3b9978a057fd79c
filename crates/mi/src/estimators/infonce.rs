//! `infonce`: log N - L of a fixed contrastive critic on projection pairs
//! ([`crate::infonce`]): a lower bound, capped at log N, with the certificate of its
//! confidence bound.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample};
use crate::{Direction, InfoNce, MiError};
use cbound_core::params::ParamError;

fn default_batch() -> usize {
    256
}

/// Settings of `infonce`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfoNceParams {
    /// Critic temperature: scores are cosine similarities divided by it (positive).
    pub temperature: f64,
    /// N, pairs per batch: one positive and N - 1 negatives each (at least 2).
    #[serde(default = "default_batch")]
    pub batch: usize,
}

impl InfoNceParams {
    fn critic(&self, seed: u64) -> Result<InfoNce, MiError> {
        let mut critic = InfoNce::new(self.temperature, self.batch)?;
        critic.seed = seed;
        Ok(critic)
    }
}

pub struct InfoNceKind;

impl EstimatorKind for InfoNceKind {
    type Params = InfoNceParams;
    const NAME: &'static str = "infonce";
    const SUMMARY: &'static str =
        "log N - L of the contrastive critic on held-out projection pairs: a lower bound, capped at log N.";
    const EXAMPLE: &'static str = "{name: infonce, temperature: 0.1, batch: 256}";

    fn inputs(_: &InfoNceParams) -> Inputs {
        Inputs {
            x: Input::Projections,
            y: Input::Projections,
            z: Conditioning::Unused,
        }
    }

    fn direction(_: &InfoNceParams) -> Direction {
        Direction::LowerBound
    }

    fn check(p: &InfoNceParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        rules::positive(&mut out, "temperature", p.temperature);
        rules::at_least(
            &mut out,
            "batch",
            p.batch,
            2,
            " (one positive and at least one negative)",
        );
        out
    }

    fn run(p: &InfoNceParams, s: &Sample) -> Result<Outcome, MiError> {
        // The batch losses once: their mean is the estimate, their spread the certificate.
        let critic = p.critic(s.seed)?;
        let losses = critic.batch_losses(s.x, s.y)?;
        let e = critic.estimate_from(s.x, s.y, &losses);
        Ok(Outcome {
            cap_nats: Some(critic.cap()),
            certificate: critic.certificate_from(&losses)?,
            ..e.into()
        })
    }

    fn resampling(p: &InfoNceParams, seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Subsample(Box::new(p.critic(seed)?)))
    }
}
