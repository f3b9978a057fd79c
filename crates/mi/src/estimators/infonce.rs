//! `infonce_cosine` (and its old name `infonce`, kept as an alias for existing pipelines):
//! log N - L of the fixed cosine critic cos(x, y) / temperature on the raw columns
//! ([`crate::infonce`]), meant for the projections of a trained contrastive encoder: a lower
//! bound, capped at log N, with the certificate of its confidence bound. Nothing is trained;
//! on anything but embeddings the cosine of raw columns is a poor critic (use
//! `infonce_critic`).

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

/// `infonce_cosine`: the name that says what the critic is.
pub struct InfoNceCosineKind;

impl EstimatorKind for InfoNceCosineKind {
    type Params = InfoNceParams;
    const NAME: &'static str = "infonce_cosine";
    const SUMMARY: &'static str =
        "log N - L of the fixed cosine critic cos(x, y)/temperature on held-out projection pairs (embeddings of a contrastive encoder; nothing is trained): a lower bound, capped at log N.";
    const EXAMPLE: &'static str = "{name: infonce_cosine, temperature: 0.1, batch: 256}";

    fn inputs(p: &InfoNceParams) -> Inputs {
        InfoNceKind::inputs(p)
    }
    fn direction(p: &InfoNceParams) -> Direction {
        InfoNceKind::direction(p)
    }
    fn check(p: &InfoNceParams) -> Vec<ParamError> {
        InfoNceKind::check(p)
    }
    fn run(p: &InfoNceParams, s: &Sample) -> Result<Outcome, MiError> {
        InfoNceKind::run(p, s)
    }
    fn resampling(p: &InfoNceParams, seed: u64) -> Result<Resampling, MiError> {
        InfoNceKind::resampling(p, seed)
    }
}

/// `infonce`: the old name of `infonce_cosine`, kept so existing pipelines (and their cached
/// rows, whose `params` say `"name":"infonce"`) read and run as before.
pub struct InfoNceKind;

impl EstimatorKind for InfoNceKind {
    type Params = InfoNceParams;
    const NAME: &'static str = "infonce";
    const SUMMARY: &'static str =
        "Alias of infonce_cosine (the fixed cosine critic on projection pairs; kept for existing pipelines). For a trained critic use infonce_critic.";
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
            held_out: None,
            ..e.into()
        })
    }

    fn resampling(p: &InfoNceParams, seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Subsample(Box::new(p.critic(seed)?)))
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::{estimate, EstimatorSpec, Preprocess};
    use crate::Matrix;

    /// The old name still reads, runs and writes `"name":"infonce"` (cached rows carry
    /// over); the new one gives the same number.
    #[test]
    fn infonce_is_an_alias_of_infonce_cosine() {
        let x = Matrix::new(64, 2, (0..128).map(|i| ((i * 37) % 11) as f64).collect()).unwrap();
        let old = EstimatorSpec::parse_cli("infonce:temperature=0.5,batch=16").unwrap();
        let new = EstimatorSpec::parse_cli("infonce_cosine:temperature=0.5,batch=16").unwrap();
        assert_eq!(
            old.params_json(),
            r#"{"name":"infonce","temperature":0.5,"batch":16}"#
        );
        assert_eq!(
            new.params_json(),
            r#"{"name":"infonce_cosine","temperature":0.5,"batch":16}"#
        );
        let pre = Preprocess::default();
        let a = estimate(&old, &x, &x, None, &pre, None, 1).unwrap();
        let b = estimate(&new, &x, &x, None, &pre, None, 1).unwrap();
        assert_eq!(a.nats, b.nats);
        assert_eq!(a.cap_nats, b.cap_nats);
        assert_eq!(a.certificate, b.certificate);
    }
}
