//! `knn`: the weighted kNN classifier of contrastive learning's kNN monitor
//! ([`crate::knn_classifier`]): cosine similarity on L2-normalised embeddings, the k nearest
//! rows of a fitted bank voting with weight exp(s / T), scored on disjoint held-out rows. It
//! reports the held-out accuracy and, as the probe does, I(U;Z) >= H(Z) - held-out
//! cross-entropy of the (floored) vote, a lower bound with the same certificate.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, Conditioning, EstimatorKind, Input, Inputs, Outcome, Resampling, Sample};
use crate::knn_classifier::{note, WeightedKnn};
use crate::{Direction, MiError};
use cbound_core::params::ParamError;

/// Settings of `knn`. The defaults follow the kNN monitor of Wu et al. (2018) as the
/// contrastive CIFAR recipes run it: k = 200 neighbours, temperature 0.1 (solo-learn's
/// `WeightedKNNClassifier` defaults to k = 20, T = 0.07: set both to compare with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KnnParams {
    /// Neighbours that vote (at least 1; a bank smaller than k votes whole).
    pub k: usize,
    /// T in the vote weight exp(cosine similarity / T), positive.
    pub temperature: f64,
    /// Fraction of rows in the neighbour bank, strictly between 0 and 1; the rest are scored.
    pub train_fraction: f64,
    /// Uniform floor eps mixed into the vote for the cross-entropy and its confidence bound
    /// (each held-out loss is then at most log(K / eps)).
    pub floor: f64,
    /// K, the number of label values (default: the largest label + 1); give it when a
    /// rare class may be missing from the sample.
    pub classes: Option<usize>,
}

impl Default for KnnParams {
    fn default() -> KnnParams {
        let d = WeightedKnn::default();
        KnnParams {
            k: d.k,
            temperature: d.temperature,
            train_fraction: d.train_fraction,
            floor: d.floor,
            classes: d.classes,
        }
    }
}

impl KnnParams {
    fn classifier(&self, seed: u64) -> WeightedKnn {
        WeightedKnn {
            k: self.k,
            temperature: self.temperature,
            train_fraction: self.train_fraction,
            floor: self.floor,
            classes: self.classes,
            seed,
        }
    }
}

pub struct KnnKind;

impl EstimatorKind for KnnKind {
    type Params = KnnParams;
    const NAME: &'static str = "knn";
    const SUMMARY: &'static str =
        "Weighted kNN classifier (cosine, exp(s/T) votes; Wu et al. 2018): held-out accuracy, and I(U;Z) >= H(Z) - held-out cross-entropy (a lower bound); y must be labels.";
    const EXAMPLE: &'static str = "{name: knn, k: 200, temperature: 0.1}";

    fn inputs(_: &KnnParams) -> Inputs {
        Inputs {
            // Never rescaled: the cosine of the embeddings as the encoder gives them is the
            // monitor's; standardising columns first would change which rows are nearest.
            x: Input::Projections,
            y: Input::Labels,
            z: Conditioning::Unused,
        }
    }

    fn direction(_: &KnnParams) -> Direction {
        Direction::LowerBound
    }

    fn check(p: &KnnParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        rules::at_least(&mut out, "k", p.k, 1, " (neighbours that vote)");
        rules::positive(&mut out, "temperature", p.temperature);
        rules::open_unit(&mut out, "train_fraction", p.train_fraction);
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

    fn run(p: &KnnParams, s: &Sample) -> Result<Outcome, MiError> {
        let knn = p.classifier(s.seed);
        let r = match s.split {
            Some(h) => knn.fit_split(s.x, s.y, h.clone())?,
            None => knn.fit(s.x, s.y)?,
        };
        Ok(Outcome {
            nats: r.mi_lower_bound,
            direction: Direction::LowerBound,
            note: Some(note(&r)),
            accuracy: Some(r.accuracy),
            cap_nats: Some(r.entropy),
            certificate: Some(r.certificate),
            held_out: Some(r.held_out),
        })
    }

    fn resampling(p: &KnnParams, seed: u64) -> Result<Resampling, MiError> {
        Ok(Resampling::Subsample(Box::new(p.classifier(seed))))
    }
}
