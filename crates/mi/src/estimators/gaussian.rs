//! `gaussian`: the log-determinant estimate ([`crate::gaussian`]), exact for Gaussians and
//! blind to nonlinear dependence.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample};
use crate::{Direction, Estimator, GaussianMi, MiError};
use cbound_core::params::ParamError;

/// `gaussian` has no settings; any key besides `name` is refused.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GaussianParams {}

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

    fn run(_: &GaussianParams, s: &Sample) -> Result<Outcome, MiError> {
        Ok(GaussianMi.estimate(s.x, s.y)?.into())
    }

    fn resampling(_: &GaussianParams, _seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Subsample(Box::new(GaussianMi)))
    }
}
