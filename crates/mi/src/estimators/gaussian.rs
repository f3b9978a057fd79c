//! `gaussian`: the log-determinant estimate ([`crate::gaussian`]), exact for Gaussians and
//! blind to nonlinear dependence; with `bias_correction: true`, each log-determinant's
//! expected Wishart bias is removed (the plug-in value is biased up in high dimension).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample};
use crate::{Direction, Estimator, GaussianMi, GaussianMiBc, MiError};
use cbound_core::params::ParamError;

/// `gaussian`'s one setting; any other key besides `name` is refused.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GaussianParams {
    /// Remove the expected bias of each sample log-determinant (Gaussian data: (n - 1) S is
    /// Wishart), which makes the plug-in estimate too high in high dimension (about
    /// dx * dy / (2 n) nats for independent blocks). Off by default: the plug-in value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bias_correction: bool,
}

pub struct GaussianKind;

impl EstimatorKind for GaussianKind {
    type Params = GaussianParams;
    const NAME: &'static str = "gaussian";
    const SUMMARY: &'static str =
        "Log-determinant (Gaussian) estimate: exact for Gaussians, blind to nonlinear dependence.";
    const EXAMPLE: &'static str = "{name: gaussian}";

    fn inputs(_: &GaussianParams) -> Inputs {
        Inputs {
            x: Input::Features,
            y: Input::Features,
            z: Conditioning::Unused,
        }
    }

    fn direction(_: &GaussianParams) -> Direction {
        Direction::Estimate
    }

    fn check(_: &GaussianParams) -> Vec<ParamError> {
        // No settings, so nothing to range-check.
        Vec::new()
    }

    fn run(p: &GaussianParams, s: &Sample) -> Result<Outcome, MiError> {
        if p.bias_correction {
            Ok(GaussianMiBc.estimate(s.x, s.y)?.into())
        } else {
            Ok(GaussianMi.estimate(s.x, s.y)?.into())
        }
    }

    fn resampling(p: &GaussianParams, _seed: u64) -> Result<Resampling, MiError> {
        if p.bias_correction {
            Ok(Resampling::Subsample(Box::new(GaussianMiBc)))
        } else {
            Ok(Resampling::Subsample(Box::new(GaussianMi)))
        }
    }
}
