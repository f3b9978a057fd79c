//! `discrete`: the plug-in MI between label columns ([`crate::discrete`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample};
use crate::{Correction, Direction, DiscreteMi, Estimator, MiError};
use cbound_core::params::ParamError;

/// Settings of `discrete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DiscreteParams {
    /// Apply the Miller-Madow correction to each entropy.
    pub miller_madow: bool,
}

impl Default for DiscreteParams {
    fn default() -> DiscreteParams {
        DiscreteParams { miller_madow: true }
    }
}

impl DiscreteParams {
    fn estimator(&self) -> DiscreteMi {
        DiscreteMi {
            correction: if self.miller_madow {
                Correction::MillerMadow
            } else {
                Correction::None
            },
        }
    }
}

pub struct DiscreteKind;

impl EstimatorKind for DiscreteKind {
    type Params = DiscreteParams;
    const NAME: &'static str = "discrete";
    const SUMMARY: &'static str = "Plug-in MI between label columns.";
    const EXAMPLE: &'static str = "{name: discrete, miller_madow: true}";

    fn inputs(_: &DiscreteParams) -> Inputs {
        Inputs {
            x: Input::Labels,
            y: Input::Labels,
            z: Conditioning::Unused,
        }
    }

    fn direction(_: &DiscreteParams) -> Direction {
        Direction::Estimate
    }

    fn check(_: &DiscreteParams) -> Vec<ParamError> {
        // A flag only: every value is valid.
        Vec::new()
    }

    fn run(p: &DiscreteParams, s: &Sample) -> Result<Outcome, MiError> {
        Ok(p.estimator().estimate(s.x, s.y)?.into())
    }

    fn resampling(p: &DiscreteParams, _seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Subsample(Box::new(p.estimator())))
    }
}
