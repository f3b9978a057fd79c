//! Estimator kinds: what `{name: ..., ...}` in a pipeline or `-e name:k=v` on the command line
//! can name.
//!
//! Each kind lives in its own file and implements [`EstimatorKind`]: a typed parameter struct
//! (which is also the source of the JSON Schema), the inputs it reads (and so how each side
//! is preprocessed), the direction its value points, the rules its parameters must meet
//! (checked by `cbound validate` and before anything runs), and its run. Kinds are listed
//! once, in [`each_kind`]; adding one is a new file plus one line there
//! (docs/adding-an-estimator.md). [`crate::spec`] holds the configured estimator that
//! pipelines carry and the driver that runs any kind into a row of `mi_estimates.parquet`.

pub mod critic;
pub mod discrete;
pub mod gaussian;
pub mod gaussian_channel;
pub mod histogram;
pub mod infonce;
pub mod knn;
pub mod ksg;
pub mod ksg_cmi;
pub mod probe;

use std::fmt::Debug;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::certificate::Certificate;
use super::heldout::HeldOut;
use super::{Direction, Estimator, Matrix, MiError, MiEstimate};
use cbound_core::params::ParamError;

/// How an estimator reads one side of a pair; this, not the estimator's name, decides how
/// that side is preprocessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Continuous features: asinh and standardisation apply as `preprocess` says.
    Features,
    /// Continuous features compared through nearest-neighbour distances: as [`Input::Features`],
    /// plus the tie-breaking jitter (`preprocess.jitter`), because duplicate points give zero
    /// neighbour radii.
    NeighbourFeatures,
    /// Class labels, compared for equality: never rescaled.
    Labels,
    /// Projections scored by a critic that normalises them itself: never rescaled.
    Projections,
    /// Values in the units of a known channel (an augmentation's noise): rescaling would
    /// change the quantity being bounded.
    ChannelUnits,
}

impl Input {
    /// Whether `preprocess` (asinh, standardise) applies.
    pub fn preprocessed(self) -> bool {
        match self {
            Input::Features | Input::NeighbourFeatures => true,
            Input::Labels | Input::Projections | Input::ChannelUnits => false,
        }
    }

    /// Whether the tie-breaking jitter applies (when `preprocess.jitter` is on).
    pub fn jittered(self) -> bool {
        match self {
            Input::NeighbourFeatures => true,
            Input::Features | Input::Labels | Input::Projections | Input::ChannelUnits => false,
        }
    }

    /// A few words for listings (`cbound estimators`).
    pub fn describe(self) -> &'static str {
        match self {
            Input::Features => "continuous features",
            Input::NeighbourFeatures => "continuous features (k-NN, jittered)",
            Input::Labels => "class labels",
            Input::Projections => "projections",
            Input::ChannelUnits => "values in the channel's units (not rescaled)",
        }
    }
}

/// Whether an estimator reads a pair's `z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditioning {
    /// It estimates I(X;Y) and ignores a `z`.
    Unused,
    /// I(X;Y|Z) when the pair has a `z`, I(X;Y) without one.
    Optional(Input),
    /// It needs a `z`: `validate` refuses a pair without one.
    Required(Input),
}

impl Conditioning {
    /// How `z` is read, when it is.
    pub fn input(self) -> Option<Input> {
        match self {
            Conditioning::Unused => None,
            Conditioning::Optional(i) | Conditioning::Required(i) => Some(i),
        }
    }
}

/// What an estimator with given settings reads from a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    pub x: Input,
    pub y: Input,
    pub z: Conditioning,
}

/// A pair after subsampling and preprocessing, as a kind's `run` sees it.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub x: &'a Matrix,
    pub y: &'a Matrix,
    /// Present whenever the pair has a `z` and the kind reads one (a kind whose `z` is
    /// [`Conditioning::Required`] always gets it).
    pub z: Option<&'a Matrix>,
    /// Seed for everything random the estimator does.
    pub seed: u64,
    /// What trains a neural critic, where the caller provides one (`cbound mi` and
    /// `estimate_mi` pass cbound-critic's); the trained-critic kinds fail without it.
    pub critic: Option<&'a dyn crate::critic::CriticTrainer>,
    /// A split the data gives (see [`crate::spec::Tools::split`]): the kinds that hold rows
    /// out fit on its `train` rows and score its `test` rows instead of drawing their own.
    pub split: Option<&'a crate::heldout::HeldOut>,
}

/// What one run of an estimator reports; the driver adds the row's sizes, interval and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub nats: f64,
    /// What the number promises, as the estimator computed it (a test checks it against the
    /// kind's declared [`EstimatorKind::direction`]).
    pub direction: Direction,
    pub note: Option<String>,
    /// Held-out accuracy (probe, knn).
    pub accuracy: Option<f64>,
    /// The largest value the estimator can report (log N for InfoNCE, H(Z) for the probe).
    pub cap_nats: Option<f64>,
    /// What a confidence bound on the quantity needs.
    pub certificate: Option<Certificate>,
    /// The rows a classifier was fitted on and those it was scored on (probe, knn), as
    /// indices into the sample it was given.
    pub held_out: Option<HeldOut>,
}

impl From<MiEstimate> for Outcome {
    fn from(e: MiEstimate) -> Outcome {
        Outcome {
            nats: e.nats,
            direction: e.direction,
            note: e.note,
            accuracy: None,
            cap_nats: None,
            certificate: None,
            held_out: None,
        }
    }
}

/// How a kind answers an `interval:` request.
pub enum Resampling {
    /// The subsampling spread of this two-sample estimator (same settings and seed as the
    /// point estimate).
    Subsample(Box<dyn Estimator>),
    /// No interval; the row's note says why.
    Unsupported(&'static str),
    /// No interval and no remark: the row's certificate is its statement of uncertainty
    /// (gaussian_channel; kept silent as it always was, so its rows do not change).
    Silent,
}

/// One kind of estimator. Implemented once per file under `src/mi/estimators/`.
///
/// None of the declarations has a default: a new kind says what it reads, which way it
/// points and what it checks, rather than inheriting a guess.
pub trait EstimatorKind: Send + Sync + 'static {
    /// Settings as written next to `name:`. Use `#[serde(deny_unknown_fields)]` so typos are
    /// errors, and doc comments: they become the schema's descriptions. Serialised (after
    /// `name`) into the `params` column of `mi_estimates.parquet`.
    type Params: Serialize + DeserializeOwned + JsonSchema + Clone + Debug + Send + Sync + 'static;
    /// The `name:` in pipelines and on the command line.
    const NAME: &'static str;
    /// One line for the schema and `cbound estimators`.
    const SUMMARY: &'static str;
    /// One estimator of this kind as written in a pipeline, e.g. `{name: ksg, k: 3}`; a test
    /// checks that it validates.
    const EXAMPLE: &'static str;

    /// What it reads from a pair with these settings.
    fn inputs(params: &Self::Params) -> Inputs;

    /// What its value promises with these settings.
    fn direction(params: &Self::Params) -> Direction;

    /// Rules about the settings that their types cannot say (ranges), each at its path
    /// relative to the estimator's mapping. `validate` reports them with file:line:column;
    /// `run` never sees settings that break one.
    fn check(params: &Self::Params) -> Vec<ParamError>;

    /// The estimate on a preprocessed pair.
    fn run(params: &Self::Params, sample: &Sample) -> Result<Outcome, MiError>;

    /// How an `interval:` is computed for it.
    fn resampling(params: &Self::Params, seed: u64) -> Result<Resampling, MiError>;
}

/// The object-safe face of a configured estimator (a kind with its settings).
pub trait DynEstimator: Send + Sync {
    fn name(&self) -> &'static str;
    /// `{"name": ..., <settings>}` as JSON text: the `params` column.
    fn params_json(&self) -> String;
    fn to_value(&self) -> Result<serde_json::Value, serde_json::Error>;
    fn inputs(&self) -> Inputs;
    fn direction(&self) -> Direction;
    fn check(&self) -> Vec<ParamError>;
    fn run(&self, sample: &Sample) -> Result<Outcome, MiError>;
    fn resampling(&self, seed: u64) -> Result<Resampling, MiError>;
    fn clone_box(&self) -> Box<dyn DynEstimator>;
}

/// The settings serialised after the kind's name, in declaration order: the same text an
/// internally tagged enum wrote, so `params` columns and cache keys carry over.
#[derive(Serialize)]
struct Tagged<'a, P> {
    name: &'static str,
    #[serde(flatten)]
    params: &'a P,
}

pub(crate) struct Configured<K: EstimatorKind> {
    pub(crate) params: K::Params,
}

impl<K: EstimatorKind> DynEstimator for Configured<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn params_json(&self) -> String {
        serde_json::to_string(&Tagged {
            name: K::NAME,
            params: &self.params,
        })
        .unwrap_or_default()
    }
    fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(Tagged {
            name: K::NAME,
            params: &self.params,
        })
    }
    fn inputs(&self) -> Inputs {
        K::inputs(&self.params)
    }
    fn direction(&self) -> Direction {
        K::direction(&self.params)
    }
    fn check(&self) -> Vec<ParamError> {
        K::check(&self.params)
    }
    fn run(&self, sample: &Sample) -> Result<Outcome, MiError> {
        K::run(&self.params, sample)
    }
    fn resampling(&self, seed: u64) -> Result<Resampling, MiError> {
        K::resampling(&self.params, seed)
    }
    fn clone_box(&self) -> Box<dyn DynEstimator> {
        Box::new(Configured::<K> {
            params: self.params.clone(),
        })
    }
}

/// Something done once per estimator kind (see [`each_kind`]): generic, so it can
/// deserialise a kind's settings from any serde source without erasing its type.
pub trait VisitKind {
    fn visit<K: EstimatorKind>(&mut self);
}

/// Every estimator kind cbound knows, in the order the schema and `cbound estimators` list
/// them. Adding a kind is its file under `src/mi/estimators/` and one line here.
pub fn each_kind(v: &mut impl VisitKind) {
    v.visit::<ksg::KsgKind>();
    v.visit::<ksg_cmi::KsgCmiKind>();
    v.visit::<histogram::HistogramKind>();
    v.visit::<gaussian::GaussianKind>();
    v.visit::<discrete::DiscreteKind>();
    v.visit::<infonce::InfoNceCosineKind>();
    v.visit::<infonce::InfoNceKind>();
    v.visit::<critic::InfoNceCriticKind>();
    v.visit::<critic::NwjCriticKind>();
    v.visit::<critic::MineCriticKind>();
    v.visit::<gaussian_channel::GaussianChannelKind>();
    v.visit::<probe::ProbeKind>();
    v.visit::<knn::KnnKind>();
}

/// A kind as listings see it.
#[derive(Debug, Clone)]
pub struct KindInfo {
    pub name: &'static str,
    pub summary: &'static str,
    pub example: &'static str,
    /// The settings' schema (properties after `name`), with subschemas inlined.
    pub schema: serde_json::Value,
}

/// Every kind's name, summary, example and settings schema, in registry order.
pub fn kinds() -> Vec<KindInfo> {
    struct Collect(Vec<KindInfo>);
    impl VisitKind for Collect {
        fn visit<K: EstimatorKind>(&mut self) {
            let mut generator = cbound_core::params::schema_settings().into_generator();
            self.0.push(KindInfo {
                name: K::NAME,
                summary: K::SUMMARY,
                example: K::EXAMPLE,
                schema: K::Params::json_schema(&mut generator).to_value(),
            });
        }
    }
    let mut c = Collect(Vec::new());
    each_kind(&mut c);
    c.0
}

/// Every kind's name, in registry order (for "expected one of" messages, which serde wants
/// `'static`).
pub fn names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        struct Names(Vec<&'static str>);
        impl VisitKind for Names {
            fn visit<K: EstimatorKind>(&mut self) {
                self.0.push(K::NAME);
            }
        }
        let mut n = Names(Vec::new());
        each_kind(&mut n);
        n.0
    })
}

/// Rows of a label matrix as hashable class codes (equal rows, equal codes).
pub(crate) fn label_codes(z: &Matrix) -> Vec<u64> {
    z.iter_rows()
        .map(|r| {
            r.iter()
                .fold(0u64, |h, v| h.rotate_left(17) ^ (v + 0.0).to_bits())
        })
        .collect()
}

/// Checks shared by several kinds, with the messages users see from `validate`.
pub(crate) mod rules {
    use cbound_core::params::ParamError;

    /// `value >= min` for a count.
    pub fn at_least(out: &mut Vec<ParamError>, key: &str, value: usize, min: usize, why: &str) {
        if value < min {
            out.push(ParamError::at(
                &[key],
                format!("{key} must be at least {min}{why}, got {value}"),
            ));
        }
    }

    /// A finite `value > 0`.
    pub fn positive(out: &mut Vec<ParamError>, key: &str, value: f64) {
        if !(value > 0.0 && value.is_finite()) {
            out.push(ParamError::at(
                &[key],
                format!("{key} must be positive and finite, got {value}"),
            ));
        }
    }

    /// `0 < value < 1`.
    pub fn open_unit(out: &mut Vec<ParamError>, key: &str, value: f64) {
        if !(value > 0.0 && value < 1.0) {
            out.push(ParamError::at(
                &[key],
                format!("{key} must lie strictly between 0 and 1, got {value}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_schemas_are_objects() {
        let mut names = names().to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), kinds().len());
        for kind in kinds() {
            assert_eq!(kind.schema["type"], "object", "{}", kind.name);
            assert_eq!(
                kind.schema["additionalProperties"], false,
                "{} must deny unknown fields",
                kind.name
            );
            assert!(
                kind.schema["properties"].get("name").is_none(),
                "{}: `name` is the kind, not a setting",
                kind.name
            );
        }
    }
}
