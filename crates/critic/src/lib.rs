//! cbound-critic: trained MLP critics for the variational MI estimators of cbound-mi
//! (`infonce_critic`, `nwj_critic`, `mine_critic`), built with cbound-onnx and run on ONNX
//! Runtime.
//!
//! [`OnnxCritic`] implements [`cbound_mi::critic::CriticTrainer`]. For each fit it emits two
//! graphs with cbound-onnx's builder:
//!
//! * one **training step** (as the contrastive trainer's): forward pass of a batch of N pairs
//!   to the N x N score matrix S[i][j] = T(x_i, y_j), the objective's loss, its gradient by
//!   cbound-onnx's reverse-mode autodiff, and Adam's update, with inputs `x1` = the N rows of
//!   x, `x2` = the N rows of y; driven by [`cbound_onnx::Trainer`] (parameters and optimizer
//!   state stay in ONNX Runtime tensors, ping-ponged through two IoBindings);
//! * one **scoring** graph: the same forward pass to S, parameters as inputs, run on the
//!   held-out batches with the trained parameters.
//!
//! The losses minimised (the negated objectives of [`cbound_mi::critic::Objective`], the
//! constant log N of InfoNCE left out): InfoNCE `mean_i logsumexp_j S_ij - mean_i S_ii`; NWJ
//! `mean_{i != j} exp(S_ij - 1) - mean_i S_ii`; Donsker-Varadhan
//! `log mean_{i != j} exp(S_ij) - mean_i S_ii` (its gradient is MINE's without the
//! moving-average correction). Everything is f32 on the CPU with a fixed number of threads
//! (1 by default), initialised and batched from the estimate's seed, so a fit is
//! reproducible.

use std::sync::Arc;

use ort::session::{Session, SessionInputValue, SessionInputs};
use ort::value::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

use cbound_core::Matrix;
use cbound_mi::critic::{
    training_batches, CriticArch, CriticConfig, CriticTrainer, Objective, TrainedCritic,
};
use cbound_onnx::autodiff::AutodiffError;
use cbound_onnx::graph::{DType, Graph, GraphError, TensorData, ValueId, OPSET};
use cbound_onnx::models::{Activation, MlpConfig, ModelError, Network, ParamSpec};
use cbound_onnx::optim::OptimizerConfig;
use cbound_onnx::runtime::{self, LibrarySearch, Runtime, RuntimeError, SessionOptions};
use cbound_onnx::step::{
    emit_update, matmul_flops, state_inputs, StateInputs, StepError, StepGraph, TensorSpec,
    INPUT_LR, INPUT_STEP, INPUT_X1, INPUT_X2,
};
use cbound_onnx::{NamedTensor, Trainer};

/// Name of the scoring graph's output: the N x N score matrix.
pub const OUTPUT_SCORES: &str = "scores";

/// What can go wrong fitting or scoring a critic.
#[derive(Debug, thiserror::Error)]
pub enum CriticError {
    #[error("critic settings: {0}")]
    Config(String),
    #[error("building the critic's graph failed: {0}")]
    Graph(#[from] GraphError),
    #[error("the critic network: {0}")]
    Model(#[from] ModelError),
    #[error("differentiating the critic's loss failed: {0}")]
    Autodiff(#[from] AutodiffError),
    #[error("building the critic's training step failed: {0}")]
    Step(#[from] StepError),
    #[error(
        "ONNX Runtime: {0} (`cbound doctor` shows which library is used and how to install one)"
    )]
    Runtime(#[from] RuntimeError),
    #[error(
        "training diverged at step {step} of {steps}: the loss is {loss}; lower `lr` (now {lr}) or use a smaller critic"
    )]
    Diverged {
        step: usize,
        steps: usize,
        loss: f32,
        lr: f64,
    },
}

/// Trains critics with cbound-onnx graphs on ONNX Runtime's CPU provider.
#[derive(Debug, Clone)]
pub struct OnnxCritic {
    /// Intra-op threads of every session (fixed, so results do not depend on the machine).
    pub threads: usize,
    /// Where the ONNX Runtime library is looked for (as `cbound doctor` does by default).
    pub search: LibrarySearch,
}

impl Default for OnnxCritic {
    fn default() -> OnnxCritic {
        OnnxCritic {
            threads: 1,
            search: LibrarySearch::default(),
        }
    }
}

/// The critic's networks: f and g for a separable critic, h for a concatenated one.
#[derive(Debug, Clone)]
pub enum Networks {
    Separable { f: Network, g: Network },
    Concat { h: Network },
}

impl Networks {
    /// The networks of `cfg` for x of width `dx` and y of width `dy`.
    pub fn new(cfg: &CriticConfig, dx: usize, dy: usize) -> Result<Networks, CriticError> {
        if dx == 0 || dy == 0 {
            return Err(CriticError::Config(format!(
                "x and y need at least one column each, got {dx} and {dy}"
            )));
        }
        let dims = |input: usize, output: usize| {
            let mut d = vec![input];
            d.extend(&cfg.hidden);
            d.push(output);
            MlpConfig {
                dims: d,
                activation: Activation::Relu,
            }
        };
        Ok(match cfg.arch {
            CriticArch::Separable => Networks::Separable {
                f: Network::mlp("f", &dims(dx, cfg.embedding))?,
                g: Network::mlp("g", &dims(dy, cfg.embedding))?,
            },
            CriticArch::Concat => Networks::Concat {
                h: Network::mlp("h", &dims(dx + dy, 1))?,
            },
        })
    }

    /// Every parameter, f's then g's (or h's).
    pub fn params(&self) -> Vec<ParamSpec> {
        match self {
            Networks::Separable { f, g } => f.params().iter().chain(g.params()).cloned().collect(),
            Networks::Concat { h } => h.params().to_vec(),
        }
    }

    /// PyTorch's default `nn.Linear` initialisation (uniform in +-1/sqrt(fan_in)), drawn in
    /// parameter order from one generator seeded by `seed`.
    pub fn init(&self, seed: u64) -> Result<Vec<NamedTensor>, CriticError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc417_1c00_0000_0004);
        let mut out = Vec::new();
        for spec in self.params() {
            let bound = (1.0 / (spec.fan_in as f64).sqrt()) as f32;
            let dist = Uniform::new(-bound, bound).map_err(|e| {
                CriticError::Config(format!("cannot initialise `{}`: {e}", spec.name))
            })?;
            let n: usize = spec.shape.iter().product();
            let data = (0..n).map(|_| dist.sample(&mut rng)).collect();
            out.push(NamedTensor::new(spec.name, spec.shape, data));
        }
        Ok(out)
    }

    /// Emits the N x N scores of x `[N, dx]` and y `[N, dy]`; `params` in [`Networks::params`]
    /// order.
    pub fn scores(
        &self,
        g: &mut Graph,
        x: ValueId,
        y: ValueId,
        params: &[ValueId],
    ) -> Result<ValueId, CriticError> {
        let n = g.shape(x)[0];
        match self {
            Networks::Separable { f, g: gn } => {
                let nf = f.params().len();
                let fx = f.forward(g, x, &params[..nf])?;
                let gy = gn.forward(g, y, &params[nf..])?;
                let gt = g.transpose(gy, &[1, 0])?;
                Ok(g.matmul(fx, gt)?)
            }
            Networks::Concat { h } => {
                // Row i * N + j of the pair matrix is (x_i, y_j).
                let (dx, dy) = (g.shape(x)[1], g.shape(y)[1]);
                let xe = g.unsqueeze(x, &[1])?;
                let xe = g.expand(xe, &[n, n, dx])?;
                let ye = g.unsqueeze(y, &[0])?;
                let ye = g.expand(ye, &[n, n, dy])?;
                let pairs = g.concat(&[xe, ye], 2)?;
                let pairs = g.reshape(pairs, &[n * n, dx + dy])?;
                let t = h.forward(g, pairs, params)?;
                Ok(g.reshape(t, &[n, n])?)
            }
        }
    }
}

/// `c tanh(s / c)` with `Some(c)`: scores squashed into (-c, c); `s` itself with `None`.
fn bounded(g: &mut Graph, s: ValueId, score_bound: Option<f64>) -> Result<ValueId, CriticError> {
    match score_bound {
        None => Ok(s),
        Some(c) if c > 0.0 && c.is_finite() => {
            let t = g.scale(s, 1.0 / c)?;
            let t = g.tanh(t)?;
            Ok(g.scale(t, c)?)
        }
        Some(c) => Err(CriticError::Config(format!(
            "score_bound must be positive and finite, got {c}"
        ))),
    }
}

fn mask(g: &mut Graph, n: usize, diagonal: bool) -> Result<ValueId, CriticError> {
    let data = (0..n * n)
        .map(|k| {
            if (k / n == k % n) == diagonal {
                1.0f32
            } else {
                0.0
            }
        })
        .collect();
    Ok(g.constant(TensorData::F32(data), &[n, n])?)
}

/// The loss minimised for `objective` on scores `s` `[N, N]` (rank 0): the objective negated,
/// without InfoNCE's constant log N.
pub fn loss(g: &mut Graph, s: ValueId, objective: Objective) -> Result<ValueId, CriticError> {
    let n = g.shape(s)[0];
    if n < 2 || g.shape(s) != [n, n] {
        return Err(CriticError::Config(format!(
            "scores must be N x N with N >= 2, got {:?}",
            g.shape(s)
        )));
    }
    let nf = n as f64;
    let eye = mask(g, n, true)?;
    let diag = g.mul(s, eye)?;
    let diag = g.reduce_sum_all(diag)?;
    let diag_mean = g.scale(diag, 1.0 / nf)?;
    let term = match objective {
        Objective::Infonce => {
            let lse = g.logsumexp(s, 1)?;
            let total = g.reduce_sum_all(lse)?;
            g.scale(total, 1.0 / nf)?
        }
        Objective::Nwj => {
            let off = mask(g, n, false)?;
            let shifted = g.add_scalar(s, -1.0)?;
            let e = g.exp(shifted)?;
            let e = g.mul(e, off)?;
            let total = g.reduce_sum_all(e)?;
            g.scale(total, 1.0 / (nf * (nf - 1.0)))?
        }
        Objective::Mine => {
            let off = mask(g, n, false)?;
            let m = g.reduce_max(s, &[0, 1], true)?;
            let m = g.stop_gradient(m)?;
            let shifted = g.sub(s, m)?;
            let e = g.exp(shifted)?;
            let e = g.mul(e, off)?;
            let total = g.reduce_sum_all(e)?;
            let log_total = g.log(total)?;
            let m = g.reduce_sum_all(m)?;
            let lse = g.add(log_total, m)?;
            g.add_scalar(lse, -(nf * (nf - 1.0)).ln())?
        }
    };
    Ok(g.sub(term, diag_mean)?)
}

/// The one-step training graph of a critic on batches of `batch` pairs (f32, Adam).
pub fn build_step(
    nets: &Networks,
    objective: Objective,
    batch: usize,
    (dx, dy): (usize, usize),
    score_bound: Option<f64>,
) -> Result<StepGraph, CriticError> {
    let optimizer = OptimizerConfig::adam();
    let mut g = Graph::new("cbound_critic_step");
    g.set_doc(format!(
        "one Adam step of a {} critic on {batch} pairs",
        objective.name()
    ));
    let mut params = Vec::new();
    let mut pvals = Vec::new();
    for p in nets.params() {
        pvals.push(g.input(&p.name, DType::F32, &p.shape)?);
        params.push(TensorSpec {
            name: p.name,
            shape: p.shape,
        });
    }
    let StateInputs {
        specs: state,
        values: svals,
        scales: state_scales,
    } = state_inputs(&mut g, &optimizer, &params, DType::F32)?;
    let step = g.input(INPUT_STEP, DType::F32, &[])?;
    let lr = g.input(INPUT_LR, DType::F32, &[])?;
    let x = g.input(INPUT_X1, DType::F32, &[batch, dx])?;
    let y = g.input(INPUT_X2, DType::F32, &[batch, dy])?;
    let s = nets.scores(&mut g, x, y, &pvals)?;
    let s = bounded(&mut g, s, score_bound)?;
    let l = loss(&mut g, s, objective)?;
    emit_update(
        &mut g,
        l,
        &optimizer,
        (&params, &pvals),
        (&state, &svals),
        (step, lr),
    )?;
    Ok(StepGraph {
        model_bytes: g.to_model_bytes(OPSET)?,
        batch,
        view_shape: vec![dx],
        second_view_shape: Some(vec![dy]),
        params,
        // MLP critics have no BatchNorm.
        buffers: Vec::new(),
        state,
        optimizer,
        stacked_views: false,
        state_scales,
        matmul_flops: matmul_flops(&g),
        mixed: None,
    })
}

/// The scoring graph: parameters, `x1` `[n, dx]`, `x2` `[n, dy]` in; `scores` `[n, n]` out.
pub fn build_scores(
    nets: &Networks,
    n: usize,
    (dx, dy): (usize, usize),
    score_bound: Option<f64>,
) -> Result<Vec<u8>, CriticError> {
    let mut g = Graph::new("cbound_critic_scores");
    let mut pvals = Vec::new();
    for p in nets.params() {
        pvals.push(g.input(&p.name, DType::F32, &p.shape)?);
    }
    let x = g.input(INPUT_X1, DType::F32, &[n, dx])?;
    let y = g.input(INPUT_X2, DType::F32, &[n, dy])?;
    let s = nets.scores(&mut g, x, y, &pvals)?;
    let s = bounded(&mut g, s, score_bound)?;
    g.output(s, OUTPUT_SCORES)?;
    Ok(g.to_model_bytes(OPSET)?)
}

fn ort_err(context: &'static str) -> impl Fn(ort::Error) -> RuntimeError {
    move |e| RuntimeError::Ort {
        context: context.into(),
        message: e.to_string(),
    }
}

fn f32_rows(m: &Matrix, rows: &[usize], out: &mut Vec<f32>) {
    out.clear();
    for &r in rows {
        out.extend(m.row(r).iter().map(|&v| v as f32));
    }
}

/// A fitted critic: its parameters and a scoring session for batches of its N.
pub struct FittedCritic {
    session: Session,
    params: Vec<NamedTensor>,
    batch: usize,
    dims: (usize, usize),
    losses: Vec<f32>,
}

impl FittedCritic {
    /// The trained parameters (f's then g's, or h's; PyTorch layout).
    pub fn params(&self) -> &[NamedTensor] {
        &self.params
    }

    /// The training loss of every step (before its update).
    pub fn losses(&self) -> &[f32] {
        &self.losses
    }

    /// Scores of N rows of x and N of y (N = the training batch).
    pub fn score(&mut self, x: &Matrix, y: &Matrix) -> Result<Matrix, CriticError> {
        let n = self.batch;
        if x.rows() != n || y.rows() != n || x.cols() != self.dims.0 || y.cols() != self.dims.1 {
            return Err(CriticError::Config(format!(
                "the critic scores batches of {n} rows of widths {:?}, got {}x{} and {}x{}",
                self.dims,
                x.rows(),
                x.cols(),
                y.rows(),
                y.cols()
            )));
        }
        let rows: Vec<usize> = (0..n).collect();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        f32_rows(x, &rows, &mut xs);
        f32_rows(y, &rows, &mut ys);
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::new();
        let tensor = |shape: &[usize], data: Vec<f32>| {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            Tensor::from_array((dims, data)).map_err(ort_err("wrapping a critic input"))
        };
        for p in &self.params {
            inputs.push((p.name.clone(), tensor(&p.shape, p.data.clone())?.into()));
        }
        inputs.push((INPUT_X1.into(), tensor(&[n, self.dims.0], xs)?.into()));
        inputs.push((INPUT_X2.into(), tensor(&[n, self.dims.1], ys)?.into()));
        let outputs = self
            .session
            .run(SessionInputs::from(inputs))
            .map_err(ort_err("scoring held-out pairs"))?;
        let (_, s) = outputs[OUTPUT_SCORES]
            .try_extract_tensor::<f32>()
            .map_err(ort_err("reading the critic's scores"))?;
        Matrix::new(n, n, s.iter().map(|&v| f64::from(v)).collect())
            .map_err(|e| CriticError::Config(e.to_string()))
    }
}

impl TrainedCritic for FittedCritic {
    fn scores(
        &mut self,
        x: &Matrix,
        y: &Matrix,
    ) -> Result<Matrix, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.score(x, y)?)
    }

    fn summary(&self) -> String {
        let k = self.losses.len().clamp(1, 20);
        let mean = |s: &[f32]| s.iter().map(|&v| f64::from(v)).sum::<f64>() / s.len().max(1) as f64;
        format!(
            "training loss {:.4} (first {k} steps) -> {:.4} (last {k})",
            mean(&self.losses[..k.min(self.losses.len())]),
            mean(&self.losses[self.losses.len().saturating_sub(k)..])
        )
    }
}

impl OnnxCritic {
    fn runtime(&self) -> Result<Arc<Runtime>, CriticError> {
        Ok(runtime::runtime(&self.search)?)
    }

    /// Whether ONNX Runtime can be loaded, with the reason and the fix when it cannot: what
    /// the machine lacks, not a property of the data, so a stage fails on it (and caches
    /// nothing) rather than recording it as an estimate's error.
    pub fn check_available(&self) -> Result<(), CriticError> {
        self.runtime().map(|_| ())
    }

    fn options(&self) -> SessionOptions {
        SessionOptions {
            intra_threads: self.threads.max(1),
            // Other work may share the cores (a sweep runs estimators in parallel).
            spinning: false,
            ..SessionOptions::default()
        }
    }

    /// Fits a critic on the pairs (x_i, y_i) (see the crate docs).
    pub fn fit(
        &self,
        cfg: &CriticConfig,
        x: &Matrix,
        y: &Matrix,
    ) -> Result<FittedCritic, CriticError> {
        let (n, dx, dy) = (x.rows(), x.cols(), y.cols());
        if y.rows() != n {
            return Err(CriticError::Config(format!(
                "x has {n} rows and y {}: pairs need equal counts",
                y.rows()
            )));
        }
        if cfg.batch < 2 || cfg.batch > n {
            return Err(CriticError::Config(format!(
                "batch N = {} needs 2 <= N <= the {n} training rows",
                cfg.batch
            )));
        }
        let nets = Networks::new(cfg, dx, dy)?;
        let step = build_step(&nets, cfg.objective, cfg.batch, (dx, dy), cfg.score_bound)?;
        let rt = self.runtime()?;
        let opts = self.options();
        let mut trainer = Trainer::new(&rt, &step, &nets.init(cfg.seed)?, &opts)?;
        let lr = cfg.lr as f32;
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        let mut losses = Vec::with_capacity(cfg.steps);
        for (k, rows) in training_batches(n, cfg.batch, cfg.steps, cfg.seed)
            .iter()
            .enumerate()
        {
            f32_rows(x, rows, &mut xs);
            f32_rows(y, rows, &mut ys);
            match trainer.step(&xs, &ys, lr) {
                Ok(l) => losses.push(l),
                Err(RuntimeError::NonFiniteLoss { loss, .. }) => {
                    return Err(CriticError::Diverged {
                        step: k + 1,
                        steps: cfg.steps,
                        loss,
                        lr: cfg.lr,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        let bytes = build_scores(&nets, cfg.batch, (dx, dy), cfg.score_bound)?;
        let session = rt.session(&bytes, &opts)?.session;
        Ok(FittedCritic {
            session,
            params: trainer.params()?,
            batch: cfg.batch,
            dims: (dx, dy),
            losses,
        })
    }

    /// A scoring session for given parameters (f's then g's, or h's), for batches of `n` pairs.
    pub fn with_params(
        &self,
        cfg: &CriticConfig,
        dims: (usize, usize),
        params: Vec<NamedTensor>,
    ) -> Result<FittedCritic, CriticError> {
        let nets = Networks::new(cfg, dims.0, dims.1)?;
        let specs = nets.params();
        if specs.len() != params.len()
            || specs
                .iter()
                .zip(&params)
                .any(|(s, p)| s.name != p.name || s.shape != p.shape)
        {
            return Err(CriticError::Config(
                "the parameters do not match the critic's networks (names and shapes)".into(),
            ));
        }
        let bytes = build_scores(&nets, cfg.batch, dims, cfg.score_bound)?;
        let session = self.runtime()?.session(&bytes, &self.options())?.session;
        Ok(FittedCritic {
            session,
            params,
            batch: cfg.batch,
            dims,
            losses: Vec::new(),
        })
    }
}

impl CriticTrainer for OnnxCritic {
    fn train(
        &self,
        cfg: &CriticConfig,
        x: &Matrix,
        y: &Matrix,
    ) -> Result<Box<dyn TrainedCritic>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Box::new(self.fit(cfg, x, y)?))
    }
}

#[cfg(test)]
mod tests;
