//! `ksg_cmi`: the Frenzel-Pompe conditional MI I(X;Y|Z) ([`crate::ksg_cmi`]), with a
//! continuous Z or, with `discrete_z`, class labels.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    label_codes, rules, Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample,
};
use crate::{Direction, KsgCmi, MiError};
use cbound_core::params::ParamError;

/// Settings of `ksg_cmi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KsgCmiParams {
    /// Neighbours (at least 1).
    pub k: usize,
    /// Treat Z as class labels (per-class KSG weighted by class frequency).
    pub discrete_z: bool,
}

impl Default for KsgCmiParams {
    fn default() -> KsgCmiParams {
        KsgCmiParams {
            k: 3,
            discrete_z: false,
        }
    }
}

pub struct KsgCmiKind;

impl EstimatorKind for KsgCmiKind {
    type Params = KsgCmiParams;
    const NAME: &'static str = "ksg_cmi";
    const SUMMARY: &'static str = "Frenzel-Pompe conditional MI I(X;Y|Z); needs `z`.";
    const EXAMPLE: &'static str = "{name: ksg_cmi, k: 3, discrete_z: true}";

    fn inputs(p: &KsgCmiParams) -> Inputs {
        Inputs {
            x: Input::NeighbourFeatures,
            y: Input::NeighbourFeatures,
            z: Conditioning::Required(if p.discrete_z {
                Input::Labels
            } else {
                Input::NeighbourFeatures
            }),
        }
    }

    fn direction(_: &KsgCmiParams) -> Direction {
        Direction::Estimate
    }

    fn check(p: &KsgCmiParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        rules::at_least(&mut out, "k", p.k, 1, "");
        out
    }

    fn run(p: &KsgCmiParams, s: &Sample) -> Result<Outcome, MiError> {
        // The driver hands a `Required` z to every run; this is its message should that fail.
        let z = s.z.ok_or_else(|| MiError::InvalidParameter {
            name: "z",
            reason: "ksg_cmi estimates I(X;Y|Z): give a `z`".into(),
        })?;
        let est = KsgCmi::new(p.k)?;
        let e = if p.discrete_z {
            est.estimate_discrete(s.x, s.y, &label_codes(z))?
        } else {
            est.estimate_continuous(s.x, s.y, z)?
        };
        Ok(e.into())
    }

    fn resampling(_: &KsgCmiParams, _seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Unsupported(
            "subsampling intervals are not implemented for conditional MI",
        ))
    }
}
