//! `histogram`: the equal-width histogram plug-in estimate ([`crate::histogram`]), for
//! low dimensions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample};
use crate::{Direction, Estimator, Histogram, MiError};
use cbound_core::params::ParamError;

/// Settings of `histogram`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HistogramParams {
    /// Bins per dimension (at least 2).
    pub bins: usize,
    /// Apply the Miller-Madow correction to each entropy.
    pub miller_madow: bool,
}

impl Default for HistogramParams {
    fn default() -> HistogramParams {
        HistogramParams {
            bins: 16,
            miller_madow: true,
        }
    }
}

impl HistogramParams {
    fn estimator(&self) -> Result<Histogram, MiError> {
        let mut h = Histogram::new(self.bins)?;
        h.miller_madow = self.miller_madow;
        Ok(h)
    }
}

pub struct HistogramKind;

impl EstimatorKind for HistogramKind {
    type Params = HistogramParams;
    const NAME: &'static str = "histogram";
    const SUMMARY: &'static str = "Equal-width histogram plug-in, for low dimensions.";
    const EXAMPLE: &'static str = "{name: histogram, bins: 16, miller_madow: true}";

    fn inputs(_: &HistogramParams) -> Inputs {
        Inputs {
            x: Input::Features,
            y: Input::Features,
            z: Conditioning::Unused,
        }
    }

    fn direction(_: &HistogramParams) -> Direction {
        Direction::Estimate
    }

    fn check(p: &HistogramParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        rules::at_least(&mut out, "bins", p.bins, 2, " per dimension");
        out
    }

    fn run(p: &HistogramParams, s: &Sample) -> Result<Outcome, MiError> {
        Ok(p.estimator()?.estimate(s.x, s.y)?.into())
    }

    fn resampling(p: &HistogramParams, _seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Subsample(Box::new(p.estimator()?)))
    }
}
