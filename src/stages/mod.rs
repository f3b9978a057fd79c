//! Stage kinds: what a pipeline stage can do.
//!
//! Each kind lives in its own file and implements [`Stage`]: a typed parameter struct (which
//! doubles as the source of the JSON Schema and of `cbound stages`), a version that is part of
//! every cache key, and a `run` that sees only its parameters and a [`StageContext`]. Kinds are
//! listed once, in [`Registry::builtin`]; adding one is a new file plus one line there
//! (docs/adding-a-stage.md).

pub mod augment;
pub mod bound;
pub mod command;
mod context;
pub mod embed;
pub mod estimate_mi;
pub mod load;
pub mod synthetic;
pub mod train;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

pub use context::{InputArtifact, Progress, StageContext};

use crate::artifact::ArtifactError;
use crate::config::yaml::PathSeg;
use crate::config::{ClusterResources, Resources};

/// What a finished stage reports besides the files it wrote: scalar metrics, which become
/// columns of the run's `results.parquet`.
#[derive(Debug, Default, Clone)]
pub struct StageOutput {
    pub metrics: BTreeMap<String, f64>,
}

impl StageOutput {
    pub fn metric(mut self, name: &str, value: f64) -> StageOutput {
        self.metrics.insert(name.to_string(), value);
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

/// A stage parameter that failed to deserialise: where inside `params`, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub path: Vec<PathSeg>,
    pub message: String,
}

impl ParamError {
    /// A problem at `path` (keys and indices below `params`).
    pub fn at(path: &[&str], message: impl Into<String>) -> ParamError {
        ParamError {
            path: path
                .iter()
                .map(|seg| match seg.parse::<usize>() {
                    Ok(i) => PathSeg::Index(i),
                    Err(_) => PathSeg::Key(seg.to_string()),
                })
                .collect(),
            message: message.into(),
        }
    }

    /// The same problem one level down, under `seg` (a check of a nested spec reported
    /// from its parent).
    pub fn under(mut self, seg: PathSeg) -> ParamError {
        self.path.insert(0, seg);
        self
    }
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(
                f,
                "`{}`: {}",
                crate::config::yaml::render_path(&self.path),
                self.message
            )
        }
    }
}

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

/// Schema settings shared by `cbound schema` and `cbound stages`: subschemas inlined so a
/// stage's parameter schema can be embedded anywhere without dangling `$ref`s.
pub fn schema_settings() -> schemars::generate::SchemaSettings {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    settings
}

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

/// Every stage kind cbound knows, in the order `cbound stages` lists them.
pub struct Registry {
    stages: Vec<Box<dyn DynStage>>,
}

impl Registry {
    pub fn builtin() -> Registry {
        Registry {
            stages: vec![
                register::<synthetic::Synthetic>(),
                register::<command::Command>(),
                register::<estimate_mi::EstimateMi>(),
                register::<bound::Bound>(),
                register::<load::Load>(),
                register::<augment::Augment>(),
                register::<train::Train>(),
                register::<embed::Embed>(),
            ],
        }
    }

    /// Adds a kind defined outside this file (one declared in YAML, src/userkind). The
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

    /// The built-in kinds and `S`, for tests of the engine with a stage of their own.
    #[cfg(test)]
    pub(crate) fn with<S: Stage>(mut self) -> Registry
    where
        S::Params: Send + Sync,
    {
        self.stages.push(register::<S>());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_examples_are_valid_yaml() {
        let registry = Registry::builtin();
        let mut kinds = registry.kinds();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), registry.kinds().len());
        for stage in registry.iter() {
            let parsed = crate::config::yaml::parse(stage.example());
            assert!(parsed.is_ok(), "example of {} is not YAML", stage.kind());
            let schema = stage.params_schema();
            assert_eq!(schema["type"], "object", "{}", stage.kind());
        }
    }

    #[test]
    fn every_example_validates_as_a_pipeline() {
        // Each example's inputs become stages whose outputs are unknown before running (a
        // `command`), so the example is checked on its own: parameters, rules, placeholders.
        let registry = Registry::builtin();
        for stage in registry.iter() {
            let (root, _) = crate::config::yaml::parse(stage.example()).unwrap();
            let inputs: Vec<String> = root
                .as_map()
                .and_then(|m| m.first())
                .and_then(|e| e.value.get("inputs"))
                .map(|e| match &e.value.kind {
                    crate::config::yaml::NodeKind::Seq(items) => items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect(),
                    _ => e.value.as_str().map(str::to_string).into_iter().collect(),
                })
                .unwrap_or_default();
            let mut text = String::from("stages:\n");
            for input in &inputs {
                text.push_str(&format!(
                    "  {input}: {{kind: command, params: {{argv: [\"true\"]}}}}\n"
                ));
            }
            for line in stage.example().lines() {
                text.push_str(&format!("  {line}\n"));
            }
            let loaded = crate::config::load_str(
                &text,
                std::path::Path::new("example.yaml"),
                &[],
                &registry,
            );
            assert!(
                loaded.is_ok(),
                "example of {}: {loaded:?}\n{text}",
                stage.kind()
            );
        }
    }

    #[test]
    fn param_errors_carry_a_path() {
        let registry = Registry::builtin();
        let synthetic = registry.get("synthetic").unwrap();
        let err = synthetic
            .check_params(&serde_json::json!({"n": "many"}))
            .unwrap_err();
        assert_eq!(err.path, vec![PathSeg::Key("n".into())]);
        let err = synthetic
            .check_params(&serde_json::json!({"nn": 5}))
            .unwrap_err();
        assert!(
            err.message.contains("unknown field `nn`"),
            "{}",
            err.message
        );
    }
}
