//! The stage API: what a stage kind is to the engine.
//!
//! A kind implements [`Stage`]: a typed parameter struct (which doubles as the source of the
//! JSON Schema and of `cbound stages`), a version that is part of every cache key, the files
//! it writes and what it reads from its inputs, and a `run` that sees only its parameters
//! and a [`StageContext`]. The engine holds kinds as [`DynStage`]s in a [`Registry`] that
//! its caller fills: the engine knows no kind by name (the built-in ones are in the
//! `cbound-stages` crate; docs/adding-a-stage.md).

mod context;
#[cfg(test)]
pub(crate) mod testkinds;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

pub use context::{InputArtifact, Progress, StageContext};

use crate::artifact::ArtifactError;
use crate::config::{ClusterResources, Resources};
use cbound_core::params::PathSeg;

/// What a finished stage reports besides the files it wrote: scalar metrics and short facts
/// about how it ran (the execution provider, a library version), which become `metric.*`
/// and `info.*` columns of the run's `results.parquet`.
#[derive(Debug, Default, Clone)]
pub struct StageOutput {
    pub metrics: BTreeMap<String, f64>,
    pub facts: BTreeMap<String, String>,
}

impl StageOutput {
    pub fn metric(mut self, name: &str, value: f64) -> StageOutput {
        self.metrics.insert(name.to_string(), value);
        self
    }

    /// A fact about how the instance ran, e.g. `execution_provider = cpu`.
    pub fn fact(mut self, name: &str, value: impl Into<String>) -> StageOutput {
        self.facts.insert(name.to_string(), value.into());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("invalid parameters: {0}")]
    Params(String),
    #[error("input: {0}")]
    Input(String),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

pub use cbound_core::params::ParamError;

/// Which input an instance reads something from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The input stage of this id (named in the parameters).
    Named(String),
    /// The stage's one input: it must have exactly one.
    Only,
    /// Whichever input has it: at least one must.
    Any,
}

/// What is read from that input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// This output file (`dataset.parquet`, `encoder.onnx`).
    File(String),
    /// The input's one table, its name left out of the parameters.
    OnlyTable,
    /// Only its directory (a command's `{input.<stage>}`).
    Directory,
}

/// One thing an instance reads from its inputs, as its parameters say. `validate` checks
/// each against the stages wired in and what their kinds write ([`Stage::WRITES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub from: Upstream,
    pub wanted: Wanted,
    /// Where inside `params` the need is written; empty when it comes with the kind (train
    /// always reads `dataset.parquet`), so the error points at the stage's `inputs`.
    pub at: Vec<PathSeg>,
}

impl Need {
    /// The kind reads `file` from its one input, whatever its parameters.
    pub fn only(file: &str) -> Need {
        Need {
            from: Upstream::Only,
            wanted: Wanted::File(file.to_string()),
            at: Vec::new(),
        }
    }

    /// The kind reads `file` from whichever input has it.
    pub fn any(file: &str) -> Need {
        Need {
            from: Upstream::Any,
            wanted: Wanted::File(file.to_string()),
            at: Vec::new(),
        }
    }
}

/// One kind of stage. Implemented once per file under `src/stages/`.
pub trait Stage: Send + Sync + 'static {
    /// Parameters as written under `params:`. Use `#[serde(deny_unknown_fields)]` so typos
    /// are errors, and doc comments: they become the schema's descriptions.
    type Params: DeserializeOwned + JsonSchema;
    /// The name used as `kind:` in pipelines.
    const KIND: &'static str;
    /// Bump when the stage's output changes for the same parameters: invalidates caches.
    const VERSION: u32;
    const SUMMARY: &'static str;
    /// A YAML snippet of one stage of this kind, shown by `cbound stages`.
    const EXAMPLE: &'static str;
    /// The files every instance writes, for `validate` to check what downstream stages read;
    /// `None` when they are not known before running (a command's outputs). Files an
    /// instance writes only sometimes (encoder snapshots) need not be listed.
    const WRITES: Option<&'static [&'static str]>;

    /// What an instance reads from its inputs (see [`Need`]).
    fn needs(_params: &Self::Params) -> Vec<Need> {
        Vec::new()
    }

    /// Rules about parameter values that the types cannot say (ranges, fields that exclude
    /// each other), each reported at its path inside `params`. `validate` and `plan` call it
    /// on every matrix value, and `run` never sees parameters that fail it, so a stage's
    /// `run` may rely on them.
    fn check(_params: &Self::Params) -> Vec<ParamError> {
        Vec::new()
    }

    /// Resources one instance needs unless the pipeline says otherwise.
    fn resources(_params: &Self::Params) -> Resources {
        Resources::default()
    }

    /// Files outside cbound's outputs whose content the result depends on (a data file, a
    /// script). Their hashes join the cache key. An error (a directory too large to track)
    /// stops the instance before it runs, with the message.
    fn tracked_files(_params: &Self::Params) -> Result<Vec<PathBuf>, String> {
        Ok(Vec::new())
    }

    fn run(params: &Self::Params, ctx: &StageContext) -> Result<StageOutput, StageError>;
}

/// The object-safe face of [`Stage`] that the engine works with.
pub trait DynStage: Send + Sync {
    fn kind(&self) -> &'static str;
    fn version(&self) -> u32;
    fn summary(&self) -> &'static str;
    fn example(&self) -> &'static str;
    fn params_schema(&self) -> serde_json::Value;
    /// Parses `params` once: the first reason they do not deserialise, or else every rule
    /// of [`Stage::check`] they break (empty when they are fine).
    fn check_params(&self, params: &serde_json::Value) -> Result<Vec<ParamError>, ParamError>;
    fn writes(&self) -> Option<&'static [&'static str]>;
    /// What an instance with these parameters reads (none when they do not deserialise).
    fn needs(&self, params: &serde_json::Value) -> Vec<Need>;
    fn resources(&self, params: &serde_json::Value) -> Resources;
    fn tracked_files(&self, params: &serde_json::Value) -> Result<Vec<PathBuf>, String>;
    fn run(
        &self,
        params: &serde_json::Value,
        ctx: &StageContext,
    ) -> Result<StageOutput, StageError>;
    /// Parses `params` once, for everything the engine asks of one instance: its resources
    /// and tracked files while planning, then its run. The engine holds the result for the
    /// instance's lifetime instead of deserialising the same JSON three times.
    fn prepare(&self, params: &serde_json::Value) -> Result<Arc<dyn PreparedStage>, ParamError>;
    /// For a kind defined outside the binary (declared in YAML): a digest of its definition,
    /// which joins every cache key of the kind, because editing the definition changes the
    /// results as a new version of a built-in kind does. `None` for built-in kinds, whose
    /// definition is the binary (cbound's version is in the key).
    fn definition_digest(&self) -> Option<String> {
        None
    }
    /// Cluster settings (memory, time, ...) of the kind's instances where the stage's
    /// `resources:` do not set them.
    fn cluster_defaults(&self) -> ClusterResources {
        ClusterResources::default()
    }
}

/// One instance's parameters, parsed: what [`DynStage`] answers from JSON, answered from the
/// typed parameters of its kind.
pub trait PreparedStage: Send + Sync {
    fn kind(&self) -> &'static str;
    fn resources(&self) -> Resources;
    fn tracked_files(&self) -> Result<Vec<PathBuf>, String>;
    /// Runs the stage, first refusing parameters that break a rule of [`Stage::check`]
    /// (validate reports them earlier; this keeps `run` from ever seeing them).
    fn run(&self, ctx: &StageContext) -> Result<StageOutput, StageError>;
}

impl std::fmt::Debug for dyn PreparedStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedStage({})", self.kind())
    }
}

struct Prepared<S: Stage> {
    params: S::Params,
}

impl<S: Stage> PreparedStage for Prepared<S>
where
    S::Params: Send + Sync,
{
    fn kind(&self) -> &'static str {
        S::KIND
    }
    fn resources(&self) -> Resources {
        S::resources(&self.params)
    }
    fn tracked_files(&self) -> Result<Vec<PathBuf>, String> {
        S::tracked_files(&self.params)
    }
    fn run(&self, ctx: &StageContext) -> Result<StageOutput, StageError> {
        if let Some(problem) = S::check(&self.params).into_iter().next() {
            return Err(StageError::Params(problem.to_string()));
        }
        S::run(&self.params, ctx)
    }
}

struct Registered<S>(PhantomData<S>);

fn register<S: Stage>() -> Box<dyn DynStage>
where
    S::Params: Send + Sync,
{
    Box::new(Registered::<S>(PhantomData))
}

fn parse_params<P: DeserializeOwned>(params: &serde_json::Value) -> Result<P, ParamError> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(PathSeg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        ParamError {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

pub use cbound_core::params::schema_settings;

impl<S: Stage> DynStage for Registered<S>
where
    S::Params: Send + Sync,
{
    fn kind(&self) -> &'static str {
        S::KIND
    }
    fn version(&self) -> u32 {
        S::VERSION
    }
    fn summary(&self) -> &'static str {
        S::SUMMARY
    }
    fn example(&self) -> &'static str {
        S::EXAMPLE
    }
    fn params_schema(&self) -> serde_json::Value {
        let schema = schema_settings()
            .into_generator()
            .into_root_schema_for::<S::Params>();
        schema.to_value()
    }
    fn check_params(&self, params: &serde_json::Value) -> Result<Vec<ParamError>, ParamError> {
        parse_params::<S::Params>(params).map(|p| S::check(&p))
    }
    fn writes(&self) -> Option<&'static [&'static str]> {
        S::WRITES
    }
    fn needs(&self, params: &serde_json::Value) -> Vec<Need> {
        parse_params::<S::Params>(params)
            .map(|p| S::needs(&p))
            .unwrap_or_default()
    }
    fn resources(&self, params: &serde_json::Value) -> Resources {
        parse_params::<S::Params>(params)
            .map(|p| S::resources(&p))
            .unwrap_or_default()
    }
    fn tracked_files(&self, params: &serde_json::Value) -> Result<Vec<PathBuf>, String> {
        parse_params::<S::Params>(params)
            .map(|p| S::tracked_files(&p))
            .unwrap_or(Ok(Vec::new()))
    }
    fn run(
        &self,
        params: &serde_json::Value,
        ctx: &StageContext,
    ) -> Result<StageOutput, StageError> {
        self.prepare(params)
            .map_err(|e| StageError::Params(e.message))?
            .run(ctx)
    }
    fn prepare(&self, params: &serde_json::Value) -> Result<Arc<dyn PreparedStage>, ParamError> {
        let params = parse_params::<S::Params>(params)?;
        Ok(Arc::new(Prepared::<S> { params }))
    }
}

/// The stage kinds a run can use, in the order `cbound stages` lists them. Empty when made;
/// the caller adds the kinds it has ([`Registry::with`], [`Registry::push`]).
#[derive(Default)]
pub struct Registry {
    stages: Vec<Box<dyn DynStage>>,
}

impl Registry {
    /// A registry with no kinds.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// This registry and kind `S`.
    pub fn with<S: Stage>(mut self) -> Registry
    where
        S::Params: Send + Sync,
    {
        self.stages.push(register::<S>());
        self
    }

    /// Adds a kind already behind the object-safe interface (one declared in YAML,
    /// [`crate::userkind`]). The
    /// caller keeps kind names unique: [`Registry::get`] finds the first of a name.
    pub fn push(&mut self, stage: Box<dyn DynStage>) {
        self.stages.push(stage);
    }

    pub fn get(&self, kind: &str) -> Option<&dyn DynStage> {
        self.stages
            .iter()
            .find(|s| s.kind() == kind)
            .map(|s| s.as_ref())
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.kind()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn DynStage> {
        self.stages.iter().map(|s| s.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_errors_carry_a_path() {
        #[derive(serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct P {
            #[allow(dead_code)]
            n: usize,
        }
        struct K;
        impl Stage for K {
            type Params = P;
            const KIND: &'static str = "k";
            const VERSION: u32 = 1;
            const SUMMARY: &'static str = "a test kind";
            const EXAMPLE: &'static str = "k: {kind: k, params: {n: 1}}";
            const WRITES: Option<&'static [&'static str]> = Some(&[]);
            fn run(_: &P, _: &StageContext) -> Result<StageOutput, StageError> {
                Ok(StageOutput::default())
            }
        }
        let registry = Registry::new().with::<K>();
        let k = registry.get("k").unwrap();
        let err = k
            .check_params(&serde_json::json!({"n": "many"}))
            .unwrap_err();
        assert_eq!(err.path, vec![PathSeg::Key("n".into())]);
        let err = k.check_params(&serde_json::json!({"nn": 5})).unwrap_err();
        assert!(
            err.message.contains("unknown field `nn`"),
            "{}",
            err.message
        );
        assert!(Registry::new().get("k").is_none());
    }
}
