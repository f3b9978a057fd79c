//! `synthetic`: samples a ground-truth task whose mutual information is known in closed form
//! (../shared/reference/ground-truth.md), so estimators and bounds can be checked against the
//! truth. Writes `samples.parquet` (columns `x0..`, `y0..`, and `z` for labelled tasks) and
//! reports the true information quantities as metrics.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field};
use schemars::JsonSchema;
use serde::Deserialize;

use cbound_bounds::joint::{random_joint, Counterexample, Encoder, Joint, Lcg, U, Z};
use cbound_bounds::Quantity;
use cbound_data::beyond_normal::{Base, BenchmarkTask, Transform};
use cbound_data::channel_task::ChannelTask;
use cbound_data::ground_truth::GaussianTask;
use cbound_data::mixture::MixtureTask;
use cbound_data::vmf::VmfTask;
use cbound_engine::artifact::documented_schema;
use cbound_engine::stage::{ParamError, Stage, StageContext, StageError, StageOutput};

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
    /// Discrete (U, X, Y, Z) drawn from an explicit joint table (`case`): every bound term is
    /// exact. Writes integer columns `u`, `x`, `y`, `z`.
    Discrete,
    /// von Mises-Fisher pairs: X uniform on the unit sphere in R^`dim` (default 3), Y | X
    /// von Mises-Fisher around X with concentration `kappa` (default 4: 1.0825 nats). The
    /// critic `kappa` x.y (cosine similarity at temperature 1/`kappa`) is the optimal InfoNCE
    /// critic; I(X;Y) exact.
    Vmf,
    /// Multivariate Student-t, `dim` x `dim` (default 1 x 1), `df` degrees of freedom (default
    /// 1), identity dispersion: X and Y uncorrelated but dependent; closed-form MI.
    Student,
    /// X ~ U(0, 1), Y = X + U(-`epsilon`, `epsilon`) (default epsilon 0.75: 1/3 nats).
    AdditiveNoise,
    /// A task of the Beyond-Normal benchmark named by its bmi id (`bmi_task`), e.g.
    /// `spiral-normal_cdf-multinormal-sparse-3-3-2-2.0` or `asinh-student-identity-2-2-1`:
    /// same distribution, parameters and closed-form MI as bmi's (samples differ). Writes the
    /// id and bmi's task name into samples.parquet's schema metadata.
    BeyondNormal,
    /// Bounded class-conditional data through a Gaussian channel: Z uniform over `classes`
    /// (default 4), each of the `dim` (default 4) coordinates of X uniform on
    /// [m - `half_width`, m + `half_width`] around its class mean m, Y = X + `noise` E.
    /// Writes a label column `z`; I(X;Y|Z) exact (quadrature to ~1e-15), and the exact
    /// feature range.
    Channel,
}

/// A per-variable diffeomorphism applied to a task's samples (the MI is unchanged).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TransformName {
    /// The standard normal CDF on every coordinate.
    NormalCdf,
    /// x sqrt|x| on every coordinate.
    HalfCube,
    /// asinh on every coordinate.
    Asinh,
    /// bmi's wiggly maps (one for X's coordinates, one for Y's).
    Wiggly,
    /// bmi's spiral: X rotated in the plane (0, 1), Y in (1, 2), by ||v||^2 / dim (dim_x >= 2,
    /// dim_y >= 3).
    Spiral,
    /// The Swiss-roll embedding of a 1-d X in [0, 1] (must follow `normal_cdf`; X becomes 2-d).
    SwissRoll,
}

impl From<TransformName> for Transform {
    fn from(t: TransformName) -> Transform {
        match t {
            TransformName::NormalCdf => Transform::NormalCdf,
            TransformName::HalfCube => Transform::HalfCube,
            TransformName::Asinh => Transform::Asinh,
            TransformName::Wiggly => Transform::Wiggly,
            TransformName::Spiral => Transform::Spiral,
            TransformName::SwissRoll => Transform::SwissRoll,
        }
    }
}

/// Which joint table the `discrete` task samples.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DiscreteCase {
    /// U = X = Y = Z, one fair bit: refutes the study's general bound.
    GeneralCounterexample,
    /// X, Y independent fair bits, Z constant, U = Y: refutes Theorem 1.
    Theorem1ZConstant,
    /// X, Y independent fair bits, Z = Y, U = X: refutes Theorem 1 with U = f(X).
    Theorem1ZIsY,
    /// A random table from `table_seed` over alphabets of size `alphabet` (U: `u_alphabet`).
    Random,
}

/// How U depends on X in a random discrete table.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EncoderKind {
    /// U = f(X) for a random f.
    Deterministic,
    /// U drawn from a random p(u|x).
    Stochastic,
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
    /// Dimension of X and of Y (pairs for `staircase`); the task's reference value when omitted
    /// (bivariate 1, dense 2, two_pair 5, staircase 20, mixture 8, vmf 3, channel 4).
    #[serde(default)]
    pub dim: Option<usize>,
    /// Total MI in nats, for `staircase`.
    #[serde(default)]
    pub mi: Option<f64>,
    /// Map every coordinate through the standard normal CDF (MI is unchanged).
    #[serde(default)]
    pub cdf_transform: bool,
    /// Bivariate, dense, two_pair, staircase, student, additive_noise: transforms applied to
    /// every sample in this order, after `cdf_transform` (the MI is unchanged), as in the
    /// Beyond-Normal benchmark: `[half_cube]`, `[normal_cdf, spiral]`.
    #[serde(default)]
    pub transform: Vec<TransformName>,
    /// Student: degrees of freedom (default 1).
    #[serde(default)]
    pub df: Option<f64>,
    /// Additive_noise: half-width of the uniform noise (default 0.75).
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// Beyond_normal: the bmi task id (`cbound_data::beyond_normal::V1_TASKS` lists the v1
    /// suite's 40).
    #[serde(default)]
    pub bmi_task: Option<String>,
    /// Mixture and channel: number of classes (when omitted: mixture 10, channel 4).
    #[serde(default)]
    pub classes: Option<usize>,
    /// Mixture: per-view noise standard deviation s. Channel: standard deviation s of the
    /// augmentation noise, Y = X + s E.
    #[serde(default = "default_noise")]
    pub noise: f64,
    /// Mixture: standard deviation of the noise shared by both views (0: X, Y independent given Z).
    #[serde(default)]
    pub nuisance: f64,
    /// Mixture and channel: standard deviation of the class means (drawn once, from
    /// `means_seed`).
    #[serde(default = "default_spread")]
    pub spread: f64,
    /// Mixture and channel: seed of the class means (fixed, so a sweep over n or noise keeps the
    /// same classes; with equal `classes` and `dim`, one seed gives both tasks the same means).
    #[serde(default)]
    pub means_seed: u64,
    /// Mixture: Monte Carlo samples for the true information quantities (200k: about 1e-3 nats).
    #[serde(default = "default_mc")]
    pub mc_samples: usize,
    /// Vmf: concentration kappa > 0 of Y around X; the optimal critic is kappa x.y, i.e.
    /// cosine similarity at temperature 1/kappa. Above 1e4 only for dim 3.
    #[serde(default = "default_kappa")]
    pub kappa: f64,
    /// Channel: half-width a > 0 of each coordinate's uniform distribution around its class
    /// mean (Cov(X|Z) = a^2/3 I).
    #[serde(default = "default_half_width")]
    pub half_width: f64,
    /// Discrete: which joint table.
    #[serde(default = "default_case")]
    pub case: DiscreteCase,
    /// Discrete, random case: alphabet size of X, Y and Z.
    #[serde(default = "default_alphabet")]
    pub alphabet: usize,
    /// Discrete, random case: alphabet size of U.
    #[serde(default = "default_u_alphabet")]
    pub u_alphabet: usize,
    /// Discrete, random case: U = f(X) or a random channel p(u|x).
    #[serde(default = "default_encoder")]
    pub encoder: EncoderKind,
    /// Discrete, random case: make X and Y independent given Z.
    #[serde(default)]
    pub conditionally_independent: bool,
    /// Discrete, random case: seed of the table (the samples use the instance seed); when
    /// omitted, the instance seed, so each replicate (`repeat`) draws its own table.
    #[serde(default)]
    pub table_seed: Option<u64>,
}

fn default_case() -> DiscreteCase {
    DiscreteCase::Random
}
fn default_alphabet() -> usize {
    3
}
fn default_u_alphabet() -> usize {
    2
}
fn default_encoder() -> EncoderKind {
    EncoderKind::Deterministic
}

fn default_kappa() -> f64 {
    4.0
}
fn default_half_width() -> f64 {
    1.0
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
    /// Why a random joint table cannot have these alphabets, if it cannot. The tables grow
    /// as alphabet^3 * u_alphabet cells; beyond 32 values the exact sums stop being instant
    /// and a plug-in check needs far more samples anyway.
    fn alphabet_problem(&self) -> Option<String> {
        (!(2..=32).contains(&self.alphabet) || !(2..=32).contains(&self.u_alphabet)).then(|| {
            format!(
                "`alphabet` ({}) and `u_alphabet` ({}) must be between 2 and 32",
                self.alphabet, self.u_alphabet
            )
        })
    }

    pub fn mixture(&self) -> MixtureTask {
        MixtureTask {
            classes: self.classes.unwrap_or(10),
            dim: self.dim.unwrap_or(8),
            noise: self.noise,
            nuisance: self.nuisance,
            spread: self.spread,
            means_seed: self.means_seed,
            given_means: None,
        }
    }

    pub fn vmf(&self) -> VmfTask {
        VmfTask {
            dim: self.dim.unwrap_or(3),
            kappa: self.kappa,
        }
    }

    pub fn channel(&self) -> ChannelTask {
        ChannelTask {
            classes: self.classes.unwrap_or(4),
            dim: self.dim.unwrap_or(4),
            half_width: self.half_width,
            noise: self.noise,
            spread: self.spread,
            means_seed: self.means_seed,
        }
    }

    pub fn task(&self) -> GaussianTask {
        match self.task {
            // Only reached for Gaussian tasks; run() handles the others first.
            TaskName::Mixture
            | TaskName::Discrete
            | TaskName::Vmf
            | TaskName::Channel
            | TaskName::Student
            | TaskName::AdditiveNoise
            | TaskName::BeyondNormal => GaussianTask::Bivariate { rho: 0.0 },
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

impl SyntheticParams {
    /// The task as a Beyond-Normal task, for the kinds that are one (student, additive_noise,
    /// beyond_normal) and for Gaussian tasks with a `transform`; None for a plain Gaussian task
    /// (sampled as before, so its samples and cache keys do not change) and for the others.
    pub fn benchmark(&self) -> Result<Option<BenchmarkTask>, String> {
        let mut transforms: Vec<Transform> = Vec::new();
        if self.cdf_transform {
            transforms.push(Transform::NormalCdf);
        }
        transforms.extend(self.transform.iter().map(|&t| Transform::from(t)));
        let base = match self.task {
            TaskName::BeyondNormal => {
                let id = self.bmi_task.as_deref().ok_or_else(|| {
                    "task `beyond_normal` needs `bmi_task` (a bmi task id such as \
                     `multinormal-dense-5-5-0.5`)"
                        .to_string()
                })?;
                if !transforms.is_empty() {
                    return Err("`beyond_normal` takes its transforms from `bmi_task`; \
                                `transform` and `cdf_transform` do not apply"
                        .to_string());
                }
                return BenchmarkTask::parse(id)
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
            TaskName::Student => {
                let dim = self.dim.unwrap_or(1);
                Base::Student {
                    dim_x: dim,
                    dim_y: dim,
                    df: self.df.unwrap_or(1.0),
                }
            }
            TaskName::AdditiveNoise => Base::AdditiveUniform {
                epsilon: self.epsilon.unwrap_or(0.75),
            },
            TaskName::Bivariate | TaskName::Dense | TaskName::TwoPair | TaskName::Staircase
                if !self.transform.is_empty() =>
            {
                Base::Normal(self.task())
            }
            _ => return Ok(None),
        };
        let task = BenchmarkTask { base, transforms };
        task.validate().map_err(|e| e.to_string())?;
        Ok(Some(task))
    }
}

/// Samples a Beyond-Normal task; samples.parquet's schema metadata names it
/// (`cbound.task_id`, `cbound.task_name`: bmi's id and name).
fn run_benchmark(
    task: &BenchmarkTask,
    params: &SyntheticParams,
    ctx: &StageContext,
) -> Result<StageOutput, StageError> {
    let mi = task
        .true_mi()
        .map_err(|e| StageError::Params(e.to_string()))?;
    let mut rng = ctx.rng();
    let (x, y) = task
        .sample(params.n, &mut rng)
        .map_err(|e| StageError::Params(e.to_string()))?;
    let (dx, dy) = (x.cols(), y.cols());
    let (mut fields, mut columns) = id_column(params.n);
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
            .map(|(f, doc)| (f.clone(), doc.as_str()))
            .collect(),
    );
    let metadata = [
        ("cbound.task_id".to_string(), task.id()),
        ("cbound.task_name".to_string(), task.name()),
    ]
    .into_iter()
    .collect();
    let schema = Arc::new(schema.as_ref().clone().with_metadata(metadata));
    let batch = RecordBatch::try_new(schema, columns)
        .map_err(|e| StageError::Failed(format!("building samples table: {e}")))?;
    ctx.write_table("samples", &batch)?;
    Ok(StageOutput::default()
        .metric("true_mi_nats", mi)
        .metric("true_mi_bits", mi / std::f64::consts::LN_2)
        .metric("n", params.n as f64)
        .metric("dim_x", dx as f64)
        .metric("dim_y", dy as f64))
}

pub struct Synthetic;

/// Writes `samples.parquet` with each column's description in the field metadata.
fn write_samples(
    ctx: &StageContext,
    fields: &[(Field, String)],
    columns: Vec<ArrayRef>,
) -> Result<(), StageError> {
    let schema = documented_schema(
        fields
            .iter()
            .map(|(f, doc)| (f.clone(), doc.as_str()))
            .collect(),
    );
    let batch = RecordBatch::try_new(schema, columns)
        .map_err(|e| StageError::Failed(format!("building samples table: {e}")))?;
    ctx.write_table("samples", &batch)?;
    Ok(())
}

/// Appends columns `x0..x{d-1}` and `y0..y{d-1}` (float64) from row-major n x d matrices.
fn push_coordinates(
    fields: &mut Vec<(Field, String)>,
    columns: &mut Vec<ArrayRef>,
    n: usize,
    d: usize,
    x: &[f64],
    y: &[f64],
) {
    for (name, m) in [("x", x), ("y", y)] {
        for j in 0..d {
            fields.push((
                Field::new(format!("{name}{j}"), DataType::Float64, false),
                format!("coordinate {j} of {}", name.to_uppercase()),
            ));
            columns.push(Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| m[i * d + j]),
            )));
        }
    }
}

/// Appends the class label column `z` (uint32).
fn push_label(fields: &mut Vec<(Field, String)>, columns: &mut Vec<ArrayRef>, z: Vec<u32>) {
    fields.push((
        Field::new("z", DataType::UInt32, false),
        "class label Z".to_string(),
    ));
    columns.push(Arc::new(UInt32Array::from(z)));
}

/// The `id` column and its field.
fn id_column(n: usize) -> (Vec<(Field, String)>, Vec<ArrayRef>) {
    (
        vec![(
            Field::new("id", DataType::UInt64, false),
            "sample index".to_string(),
        )],
        vec![Arc::new(UInt64Array::from_iter_values(0..n as u64))],
    )
}

fn run_vmf(params: &SyntheticParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
    let task = params.vmf();
    // The truth first: it validates the task, so a bad kappa fails before any sampling.
    let t = task
        .truth()
        .map_err(|e| StageError::Params(e.to_string()))?;
    let mut rng = ctx.rng();
    let (x, y) = task
        .sample(params.n, &mut rng)
        .map_err(|e| StageError::Params(e.to_string()))?;
    let d = task.dim;
    let (mut fields, mut columns) = id_column(params.n);
    push_coordinates(&mut fields, &mut columns, params.n, d, &x, &y);
    write_samples(ctx, &fields, columns)?;
    Ok(StageOutput::default()
        .metric("true_mi_nats", t.mi)
        .metric("true_i_xy", t.mi)
        .metric("true_mi_bits", t.mi / std::f64::consts::LN_2)
        .metric("true_mean_cosine", t.mean_cosine)
        .metric("kappa", task.kappa)
        .metric("optimal_temperature", 1.0 / task.kappa)
        .metric("n", params.n as f64)
        .metric("dim_x", d as f64)
        .metric("dim_y", d as f64))
}

fn run_channel(params: &SyntheticParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
    let task = params.channel();
    let t = task
        .truth()
        .map_err(|e| StageError::Params(e.to_string()))?;
    let mut rng = ctx.rng();
    let (x, y, z) = task
        .sample(params.n, &mut rng)
        .map_err(|e| StageError::Params(e.to_string()))?;
    let d = task.dim;
    let (mut fields, mut columns) = id_column(params.n);
    push_label(&mut fields, &mut columns, z);
    push_coordinates(&mut fields, &mut columns, params.n, d, &x, &y);
    write_samples(ctx, &fields, columns)?;
    Ok(StageOutput::default()
        .metric("true_i_xy_given_z", t.i_xy_given_z)
        .metric("true_h_z", t.h_z)
        // Y = X + noise: never independent given Z.
        .metric("x_indep_y_given_z", 0.0)
        .metric("gaussian_channel_bound_nats", t.gaussian_bound)
        .metric("true_trace_cov_x_given_z", t.trace_cov_x_given_z)
        .metric("feature_low", t.feature_low)
        .metric("feature_high", t.feature_high)
        .metric("half_width", task.half_width)
        .metric("noise_std", task.noise)
        .metric("classes", task.classes as f64)
        .metric("n", params.n as f64)
        .metric("dim_x", d as f64)
        .metric("dim_y", d as f64))
}

impl SyntheticParams {
    /// The joint table of the `discrete` task (`seed`: the instance seed, for a random table
    /// without `table_seed`).
    pub fn joint(&self, seed: u64) -> Result<Joint, StageError> {
        let named = |c: Counterexample| Ok(c.joint());
        match self.case {
            DiscreteCase::GeneralCounterexample => named(Counterexample::GeneralAllEqual),
            DiscreteCase::Theorem1ZConstant => named(Counterexample::Theorem1ZConstant),
            DiscreteCase::Theorem1ZIsY => named(Counterexample::Theorem1ZIsY),
            DiscreteCase::Random => {
                if let Some(problem) = self.alphabet_problem() {
                    return Err(StageError::Params(problem));
                }
                let encoder = match self.encoder {
                    EncoderKind::Deterministic => Encoder::Deterministic,
                    EncoderKind::Stochastic => Encoder::Stochastic,
                };
                let mut rng = Lcg::new(self.table_seed.unwrap_or(seed) ^ 0xd15c_7e7e);
                Ok(random_joint(
                    &mut rng,
                    self.alphabet,
                    self.u_alphabet,
                    encoder,
                    self.conditionally_independent,
                ))
            }
        }
    }
}

fn run_discrete(params: &SyntheticParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
    let joint = params.joint(ctx.seed)?;
    let mut rng = ctx.rng();
    let samples = joint.sample(params.n, &mut rng);
    let (mut fields, mut columns) = id_column(params.n);
    for (j, name) in ["u", "x", "y", "z"].iter().enumerate() {
        fields.push((
            Field::new(*name, DataType::UInt32, false),
            format!("{} (discrete)", name.to_uppercase()),
        ));
        columns.push(Arc::new(UInt32Array::from_iter_values(
            samples.iter().map(|c| c[j] as u32),
        )));
    }
    write_samples(ctx, &fields, columns)?;
    let terms = joint.terms();
    let exact = |q: Quantity| terms.find(q).map(|t| t.nats).unwrap_or(f64::NAN);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let mut out = StageOutput::default();
    for (name, q) in [
        ("true_i_uz", Quantity::IUZ),
        ("true_i_uy", Quantity::IUY),
        ("true_i_xy", Quantity::IXY),
        ("true_i_xz", Quantity::IXZ),
        ("true_i_yz", Quantity::IYZ),
        ("true_i_xy_given_z", Quantity::IXYgivenZ),
        ("true_i_uy_given_xz", Quantity::IUYgivenXZ),
        ("true_h_z", Quantity::HZ),
        ("true_h_z_given_xy", Quantity::HZgivenXY),
    ] {
        out = out.metric(name, exact(q));
    }
    Ok(out
        .metric("u_is_function_of_x", flag(joint.u_is_function_of_x()))
        .metric("true_bayes_accuracy_uz", joint.bayes_accuracy(U, Z))
        .metric(
            "x_indep_y_given_z",
            flag(exact(Quantity::IXYgivenZ) < 1e-12),
        )
        .metric("n", params.n as f64))
}

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
    let (mut fields, mut columns) = id_column(params.n);
    push_label(&mut fields, &mut columns, z);
    push_coordinates(&mut fields, &mut columns, params.n, d, &x, &y);
    write_samples(ctx, &fields, columns)?;
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
        .metric(
            "x_indep_y_given_z",
            if task.nuisance == 0.0 { 1.0 } else { 0.0 },
        )
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
    const SUMMARY: &'static str = "Sample a task with known information quantities: Gaussian, the Beyond-Normal families (Student-t, additive noise, transforms; bmi task ids), multi-view mixture, von Mises-Fisher pairs, bounded Gaussian channel or discrete joint table (samples.parquet; metrics true_*).";
    const EXAMPLE: &'static str = r#"truth:
  kind: synthetic
  params: {task: dense, dim: 3, rho: 0.5, n: 5000}
  matrix: {n: [1000, 5000]}
"#;
    const WRITES: Option<&'static [&'static str]> = Some(&["samples.parquet"]);

    fn check(p: &SyntheticParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        if p.n == 0 {
            out.push(ParamError::at(&["n"], "`n` must be at least 1"));
        }
        // Each task checks its own settings (correlations, dimensions, concentrations)
        // without sampling; the discrete task's random tables check their alphabets.
        if matches!(
            p.task,
            TaskName::Student | TaskName::AdditiveNoise | TaskName::BeyondNormal
        ) || !p.transform.is_empty()
        {
            let at = match p.task {
                TaskName::BeyondNormal if p.bmi_task.is_some() => "bmi_task",
                _ if !p.transform.is_empty() => "transform",
                _ => "task",
            };
            // Large Gaussian bases are checked when they run (a Cholesky per matrix value).
            let large = matches!(
                p.task,
                TaskName::Dense | TaskName::TwoPair | TaskName::Staircase
            ) && p.dim.unwrap_or(0) > 128;
            if !large {
                if let Err(message) = p.benchmark() {
                    out.push(ParamError::at(&[at], message));
                }
            }
            return out;
        }
        let task = match p.task {
            TaskName::Mixture => p.mixture().validate().map_err(|e| e.to_string()),
            TaskName::Vmf => p.vmf().validate().map_err(|e| e.to_string()),
            TaskName::Channel => p.channel().validate().map_err(|e| e.to_string()),
            TaskName::Discrete => match p.case {
                DiscreteCase::Random => p.alphabet_problem().map_or(Ok(()), Err),
                _ => Ok(()),
            },
            // The Gaussian check is a Cholesky factorisation: cubic in the dimension, so
            // large tasks are checked when they run rather than once per matrix value here.
            _ => match p.task() {
                t if t.dims().0 + t.dims().1 <= 256 => t.validate().map_err(|e| e.to_string()),
                _ => Ok(()),
            },
        };
        if let Err(message) = task {
            let at = match p.task {
                TaskName::Discrete if !(2..=32).contains(&p.alphabet) => "alphabet",
                TaskName::Discrete => "u_alphabet",
                _ => "task",
            };
            out.push(ParamError::at(&[at], message));
        }
        out
    }

    fn run(params: &SyntheticParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        match params.task {
            TaskName::Mixture => return run_mixture(params, ctx),
            TaskName::Discrete => return run_discrete(params, ctx),
            TaskName::Vmf => return run_vmf(params, ctx),
            TaskName::Channel => return run_channel(params, ctx),
            _ => {}
        }
        if let Some(task) = params.benchmark().map_err(StageError::Params)? {
            return run_benchmark(&task, params, ctx);
        }
        let task = params.task();
        task.validate()
            .map_err(|e| StageError::Params(e.to_string()))?;
        let mut rng = ctx.rng();
        let (x, y) = task
            .sample(params.n, &mut rng, params.cdf_transform)
            .map_err(|e| StageError::Failed(e.to_string()))?;
        let (mut fields, mut columns) = id_column(params.n);
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
        write_samples(ctx, &fields, columns)?;
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
