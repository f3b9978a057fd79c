//! Stand-ins for the built-in kinds, for the engine's own tests. They carry the built-in
//! kinds' names and a subset of their parameters, so that the tests read like the pipelines
//! users write, but they live here: the engine does not depend on the real kinds
//! (`cbound-stages`), and its tests must not either. What they run is trivial and
//! deterministic: a small JSON file of their parameters and seed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Need, ParamError, Registry, Stage, StageContext, StageError, StageOutput};

/// The registry the engine's tests load pipelines with.
pub fn registry() -> Registry {
    Registry::new()
        .with::<Synthetic>()
        .with::<Command>()
        .with::<Load>()
        .with::<Augment>()
}

fn write_params<P: Serialize>(
    params: &P,
    ctx: &StageContext,
    file: &str,
) -> Result<StageOutput, StageError> {
    let value = serde_json::json!({"params": params, "seed": ctx.seed});
    crate::artifact::write_json(&ctx.out_dir.join(file), &value)?;
    Ok(StageOutput::default())
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Bivariate,
    Gaussian,
}

/// `synthetic`: a task name, a sample count and a correlation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyntheticParams {
    #[serde(default = "bivariate")]
    pub task: Task,
    #[serde(default = "thousand")]
    pub n: usize,
    #[serde(default)]
    pub rho: Option<f64>,
    #[serde(default)]
    pub dim: Option<usize>,
}

fn bivariate() -> Task {
    Task::Bivariate
}

fn thousand() -> usize {
    1000
}

pub struct Synthetic;

impl Stage for Synthetic {
    type Params = SyntheticParams;
    const KIND: &'static str = "synthetic";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "test stand-in: writes its parameters";
    const EXAMPLE: &'static str = "data: {kind: synthetic, params: {n: 10}}";
    const WRITES: Option<&'static [&'static str]> = Some(&["params.json"]);
    fn check(p: &SyntheticParams) -> Vec<ParamError> {
        match p.rho {
            Some(rho) if !(rho > -1.0 && rho < 1.0) => {
                vec![ParamError::at(
                    &["rho"],
                    format!("rho must lie in (-1, 1), got {rho}"),
                )]
            }
            _ => Vec::new(),
        }
    }
    fn run(p: &SyntheticParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        write_params(p, ctx, "params.json")
    }
}

/// `command`: an argv; outputs unknown before running.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    pub argv: Vec<String>,
}

pub struct Command;

impl Stage for Command {
    type Params = CommandParams;
    const KIND: &'static str = "command";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "test stand-in: writes its parameters";
    const EXAMPLE: &'static str = "post: {kind: command, params: {argv: [\"true\"]}}";
    const WRITES: Option<&'static [&'static str]> = None;
    fn run(p: &CommandParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        write_params(p, ctx, "command.json")
    }
}

/// `load`: a format and a path.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    pub format: String,
    pub path: String,
}

pub struct Load;

impl Stage for Load {
    type Params = LoadParams;
    const KIND: &'static str = "load";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "test stand-in: writes its parameters";
    const EXAMPLE: &'static str = "data: {kind: load, params: {format: npy, path: x.npy}}";
    const WRITES: Option<&'static [&'static str]> = Some(&["params.json"]);
    fn run(p: &LoadParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        write_params(p, ctx, "params.json")
    }
}

/// One augmentation op: a name and a strength.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Op {
    pub op: String,
    #[serde(default)]
    pub std: f64,
}

/// `augment`: lists of ops, one list per view; reads its input's `params.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AugmentParams {
    pub views: Vec<Vec<Op>>,
}

pub struct Augment;

impl Stage for Augment {
    type Params = AugmentParams;
    const KIND: &'static str = "augment";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "test stand-in: writes its parameters";
    const EXAMPLE: &'static str = "views: {kind: augment, inputs: data, params: {views: [[]]}}";
    const WRITES: Option<&'static [&'static str]> = Some(&["params.json"]);
    fn needs(_: &AugmentParams) -> Vec<Need> {
        vec![Need::only("params.json")]
    }
    fn run(p: &AugmentParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        write_params(p, ctx, "params.json")
    }
}
