//! `gaussian_channel`: the upper bound on I(X;Y) (or I(X;Y|Z) with `z` labels) for the
//! augmentation Y = X + noise_std * E ([`crate::channel`]), certified when the features'
//! range is known.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    label_codes, rules, Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample,
};
use crate::channel::gaussian_channel_bound;
use crate::{Direction, MiError};
use cbound_core::params::ParamError;

/// Settings of `gaussian_channel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GaussianChannelParams {
    /// The augmentation's noise standard deviation s (positive; checked against Y - X).
    pub noise_std: f64,
    /// `[low, high]` that every feature of x lies in (e.g. of normalised pixels). With it the
    /// row also certifies an upper bound (through the trace); without it the plug-in value
    /// is only an estimate, since it is biased low.
    #[serde(default)]
    pub feature_range: Option<[f64; 2]>,
}

pub struct GaussianChannelKind;

impl EstimatorKind for GaussianChannelKind {
    type Params = GaussianChannelParams;
    const NAME: &'static str = "gaussian_channel";
    const SUMMARY: &'static str = "Upper bound on I(X;Y) (or I(X;Y|Z) with `z` labels) for the augmentation Y = X + noise_std * E:\n1/2 log det(I + Cov(X|z) / noise_std^2). x: the clean input, y: its noise view (checked).";
    const EXAMPLE: &'static str =
        "{name: gaussian_channel, noise_std: 0.5, feature_range: [0.0, 1.0]}";

    fn inputs(_: &GaussianChannelParams) -> Inputs {
        Inputs {
            x: Input::ChannelUnits,
            y: Input::ChannelUnits,
            z: Conditioning::Optional(Input::Labels),
        }
    }

    fn direction(p: &GaussianChannelParams) -> Direction {
        // The certificate (and with it the upper bound) needs the range; the plug-in value
        // alone is biased low.
        match p.feature_range {
            Some(_) => Direction::UpperBound,
            None => Direction::Estimate,
        }
    }

    fn check(p: &GaussianChannelParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        rules::positive(&mut out, "noise_std", p.noise_std);
        if let Some([low, high]) = p.feature_range {
            if !(low.is_finite() && high.is_finite() && low < high) {
                out.push(ParamError::at(
                    &["feature_range"],
                    format!("feature_range must be finite [low, high] with low < high, got [{low}, {high}]"),
                ));
            }
        }
        out
    }

    fn run(p: &GaussianChannelParams, s: &Sample) -> Result<Outcome, MiError> {
        let labels = s.z.map(label_codes);
        let (e, certificate) = gaussian_channel_bound(
            s.x,
            s.y,
            labels.as_deref(),
            p.noise_std,
            p.feature_range,
            s.seed,
        )?;
        Ok(Outcome {
            certificate,
            held_out: None,
            ..e.into()
        })
    }

    fn resampling(_: &GaussianChannelParams, _seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Silent)
    }
}
