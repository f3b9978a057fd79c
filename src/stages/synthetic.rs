//! `synthetic`: samples a ground-truth task whose mutual information is known in closed form
//! (../shared/reference/ground-truth.md), so estimators and bounds can be checked against the
//! truth. Writes `samples.parquet` (columns `x0..`, `y0..`) and reports the true MI.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Stage, StageContext, StageError, StageOutput};
use crate::artifact::documented_schema;
use crate::data::ground_truth::GaussianTask;
use crate::data::mixture::MixtureTask;

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskName {
    /// (X, Y) 1-d each, correlation `rho` (default 0.75: 0.4133 nats).
    Bivariate,
    /// X, Y each `dim`-d, every off-diagonal correlation `rho` (default 0.5).
    Dense,
    /// Two coordinate pairs with correlation `rho` (default 0.8: 1.0217 nats) among `dim` dims.
    TwoPair,
    /// `dim` independent pairs sharing `mi` nats in total (default 20 pairs, 2 nats).
    Staircase,
    /// Multi-view mixture: Z uniform over `classes`, X = m_Z + nuisance N + noise E1,
    /// Y = m_Z + nuisance N + noise E2 (X, Y independent given Z when nuisance = 0). Writes a
    /// label column `z`; I(X;Z), I(Y;Z), I(X;Y), I(X;Y|Z) by Monte Carlo with the exact density.
    Mixture,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyntheticParams {
    /// Which ground-truth task to sample.
    #[serde(default = "default_task")]
    pub task: TaskName,
    /// Number of samples.
    #[serde(default = "default_n")]
    pub n: usize,
    /// Correlation; the task's reference value when omitted.
    #[serde(default)]
    pub rho: Option<f64>,
    /// Dimension of X and of Y (pairs for `staircase`); the task's reference value when omitted.
    #[serde(default)]
    pub dim: Option<usize>,
    /// Total MI in nats, for `staircase`.
    #[serde(default)]
    pub mi: Option<f64>,
    /// Map every coordinate through the standard normal CDF (MI is unchanged).
    #[serde(default)]
    pub cdf_transform: bool,
    /// Mixture: number of classes.
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// Mixture: per-view noise standard deviation s.
    #[serde(default = "default_noise")]
    pub noise: f64,
    /// Mixture: standard deviation of the noise shared by both views (0: X, Y independent given Z).
    #[serde(default)]
    pub nuisance: f64,
    /// Mixture: standard deviation of the class means (drawn once, from `means_seed`).
    #[serde(default = "default_spread")]
    pub spread: f64,
    /// Mixture: seed of the class means (fixed, so a sweep over n or noise keeps the same classes).
    #[serde(default)]
    pub means_seed: u64,
    /// Mixture: Monte Carlo samples for the true information quantities (200k: about 1e-3 nats).
    #[serde(default = "default_mc")]
    pub mc_samples: usize,
}

fn default_classes() -> usize {
    10
}
fn default_noise() -> f64 {
    1.0
}
fn default_spread() -> f64 {
    2.0
}
fn default_mc() -> usize {
    200_000
}

fn default_task() -> TaskName {
    TaskName::Bivariate
}

fn default_n() -> usize {
    5000
}

impl SyntheticParams {
    pub fn mixture(&self) -> MixtureTask {
        MixtureTask {
            classes: self.classes,
            dim: self.dim.unwrap_or(8),
            noise: self.noise,
            nuisance: self.nuisance,
            spread: self.spread,
            means_seed: self.means_seed,
            given_means: None,
        }
    }

    pub fn task(&self) -> GaussianTask {
        match self.task {
            // Only reached for Gaussian tasks; run() handles the mixture first.
            TaskName::Mixture => GaussianTask::Bivariate { rho: 0.0 },
            TaskName::Bivariate => GaussianTask::Bivariate {
                rho: self.rho.unwrap_or(0.75),
            },
            TaskName::Dense => GaussianTask::Dense {
                dim: self.dim.unwrap_or(2),
                rho: self.rho.unwrap_or(0.5),
            },
            TaskName::TwoPair => GaussianTask::TwoPair {
                dim: self.dim.unwrap_or(5),
                rho: self.rho.unwrap_or(0.8),
            },
            TaskName::Staircase => GaussianTask::Staircase {
                pairs: self.dim.unwrap_or(20),
                mi: self.mi.unwrap_or(2.0),
            },
        }
    }
}

pub struct Synthetic;

fn run_mixture(params: &SyntheticParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
    let task = params.mixture();
    task.validate()
        .map_err(|e| StageError::Params(e.to_string()))?;
    ctx.progress(0, 2, "sampling");
    let mut rng = ctx.rng();
    let (x, y, z) = task
        .sample(params.n, &mut rng)
        .map_err(|e| StageError::Params(e.to_string()))?;
    let d = task.dim;
    let mut fields = vec![
        (
            Field::new("id", DataType::UInt64, false),
            "sample index".to_string(),
        ),
        (
            Field::new("z", DataType::UInt32, false),
            "class label Z".to_string(),
        ),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(0..params.n as u64)),
        Arc::new(UInt32Array::from(z)),
    ];
    for (name, m) in [("x", &x), ("y", &y)] {
        for j in 0..d {
            fields.push((
                Field::new(format!("{name}{j}"), DataType::Float64, false),
                format!("coordinate {j} of {}", name.to_uppercase()),
            ));
            columns.push(Arc::new(Float64Array::from_iter_values(
                (0..params.n).map(|i| m[i * d + j]),
            )));
        }
    }
    let schema = documented_schema(
        fields
            .iter()
            .map(|(f, doc)| (f.clone(), doc.as_str()))
            .collect(),
    );
    let batch = RecordBatch::try_new(schema, columns)
        .map_err(|e| StageError::Failed(format!("building samples table: {e}")))?;
    ctx.write_table("samples", &batch)?;
    ctx.check_cancelled()?;
    ctx.progress(1, 2, "Monte Carlo truth");
    // Its own seed stream: the truth does not depend on n.
    let t = task
        .try_truth(params.mc_samples, params.means_seed ^ 0x7275_7468)
        .map_err(|e| StageError::Params(e.to_string()))?;
    Ok(StageOutput::default()
        .metric("true_mi_nats", t.i_xy)
        .metric("true_i_xz", t.i_xz)
        .metric("true_i_yz", t.i_yz)
        .metric("true_i_xy", t.i_xy)
        .metric("true_i_xy_given_z", t.i_xy_given_z)
        .metric("true_h_z", t.h_z)
        .metric("mc_stderr_i_xz", t.std_err[0])
        .metric("mc_stderr_i_yz", t.std_err[1])
        .metric("mc_stderr_i_xy", t.std_err[2])
        .metric("n", params.n as f64)
        .metric("dim_x", d as f64)
        .metric("dim_y", d as f64))
}

impl Stage for Synthetic {
    type Params = SyntheticParams;
    const KIND: &'static str = "synthetic";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Sample a Gaussian task with known mutual information (samples.parquet; metric true_mi_nats).";
    const EXAMPLE: &'static str = r#"truth:
  kind: synthetic
  params: {task: dense, dim: 3, rho: 0.5, n: 5000}
  matrix: {n: [1000, 5000]}
"#;

    fn run(params: &SyntheticParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        if params.n == 0 {
            return Err(StageError::Params("`n` must be at least 1".into()));
        }
        if params.task == TaskName::Mixture {
            return run_mixture(params, ctx);
        }
        let task = params.task();
        task.validate()
            .map_err(|e| StageError::Params(e.to_string()))?;
        let mut rng = ctx.rng();
        let (x, y) = task
            .sample(params.n, &mut rng, params.cdf_transform)
            .map_err(|e| StageError::Failed(e.to_string()))?;
        let mut fields = vec![(
            Field::new("id", DataType::UInt64, false),
            "sample index".to_string(),
        )];
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(UInt64Array::from_iter_values(0..params.n as u64))];
        for (name, m) in [("x", &x), ("y", &y)] {
            for j in 0..m.cols() {
                fields.push((
                    Field::new(format!("{name}{j}"), DataType::Float64, false),
                    format!("coordinate {j} of {}", name.to_uppercase()),
                ));
                columns.push(Arc::new(Float64Array::from_iter_values(
                    m.iter_rows().map(|row| row[j]),
                )));
            }
        }
        let schema = documented_schema(
            fields
                .iter()
                .map(|(f, d)| (f.clone(), d.as_str()))
                .collect(),
        );
        let batch = RecordBatch::try_new(schema, columns)
            .map_err(|e| StageError::Failed(format!("building samples table: {e}")))?;
        ctx.write_table("samples", &batch)?;
        let mi = task.true_mi();
        let (dx, dy) = task.dims();
        Ok(StageOutput::default()
            .metric("true_mi_nats", mi)
            .metric("true_mi_bits", mi / std::f64::consts::LN_2)
            .metric("n", params.n as f64)
            .metric("dim_x", dx as f64)
            .metric("dim_y", dy as f64))
    }
}
