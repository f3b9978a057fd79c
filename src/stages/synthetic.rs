//! `synthetic`: samples a ground-truth task whose mutual information is known in closed form
//! (../shared/reference/ground-truth.md), so estimators and bounds can be checked against the
//! truth. Writes `samples.parquet` (columns `x0..`, `y0..`) and reports the true MI.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Stage, StageContext, StageError, StageOutput};
use crate::artifact::documented_schema;
use crate::data::ground_truth::GaussianTask;

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
}

fn default_task() -> TaskName {
    TaskName::Bivariate
}

fn default_n() -> usize {
    5000
}

impl SyntheticParams {
    pub fn task(&self) -> GaussianTask {
        match self.task {
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
