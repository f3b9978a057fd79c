//! Composition of model, loss and optimizer into the graphs the runtime executes.
//!
//! * [`build_train_step`]: ONE graph for a whole optimizer step. Inputs: every parameter (by
//!   its name, e.g. `enc.0.weight`), every optimizer state tensor (`opt.m.enc.0.weight`, ...),
//!   `step` (rank-0 float, 1-based), `lr` (rank-0 float) and the two views `x1`, `x2` of shape
//!   `[B, ...]` (or, with [`StepConfig::stacked_views`], one `x` of shape `[2B, ...]`).
//!   Outputs: `loss` (rank 0, computed before the update), then `next.<name>` for every
//!   parameter and state tensor in input order. A model with BatchNorm also takes its running
//!   statistics (`enc.bn1.running_mean`, ...) as inputs and returns them updated from the
//!   step's batch statistics as `next.<name>` (PyTorch's update, see `graph/norm.rs`); they are
//!   non-trainable state that the trainer ping-pongs like the parameters. Both views go through the encoder as one
//!   `[2B, ...]` batch (larger GEMMs, one pass of each weight), and no gradient is formed for
//!   the inputs. Gradients are scaled by [`OptimizerConfig::gradient_prescale`] through the
//!   backward seed, which saves an elementwise pass per parameter in the update.
//! * With [`StepConfig::mixed`] set, [`build_train_step`] builds the mixed-precision variant
//!   instead (see [`MixedPrecision`]): the same inputs and outputs, the products of forward
//!   and backward pass in f16 or bf16 ([`Graph::set_autocast`]), parameters, optimizer state
//!   and everything with range needs in f32; for f16 dynamic loss scaling adds the rank-0
//!   inputs [`INPUT_LOSS_SCALE`] and [`INPUT_GOOD_STEPS`] (returned as `next.<name>`) and the
//!   output [`OUTPUT_SKIPPED`]. The fp32 graph is built by its own code path, unchanged.
//! * [`build_eval`]: the loss only, from `params + buffers + x1 + x2` (for the held-out
//!   estimate `ln N - L`; BatchNorm in inference mode, on running statistics). Parameters are inputs so the trainer's live buffers feed it without copies.
//! * [`build_encoder`]: `U = f(X)`. Parameters are either graph inputs (to run on the trainer's
//!   live buffers) or baked in as initializers (a self-contained `.onnx` artifact); BatchNorm
//!   runs in inference mode on the running statistics, which come the same way. The batch
//!   axis is symbolic, so one session serves any number of rows.

use super::autodiff::{self, AutodiffError, Seed};
use super::checkpoint::NamedTensor;
use super::graph::{DType, Graph, GraphError, Op, TensorData, ValueId, OPSET};
use super::loss::{self, LossConfig};
use super::models::{BnMode, ContrastiveModel, ParamRole};
use super::optim::{self, OptimizerConfig};
use super::runtime::Precision;

pub const INPUT_X1: &str = "x1";
pub const INPUT_X2: &str = "x2";
pub const INPUT_X: &str = "x";
pub const INPUT_STEP: &str = "step";
pub const INPUT_LR: &str = "lr";
pub const OUTPUT_LOSS: &str = "loss";
pub const OUTPUT_EMBEDDING: &str = "u";
/// Dynamic loss scaling's current scale (rank-0 f32 input; `next.` output).
pub const INPUT_LOSS_SCALE: &str = "amp.loss_scale";
/// Steps since the scale last changed without a non-finite gradient (rank-0 f32 counter).
pub const INPUT_GOOD_STEPS: &str = "amp.good_steps";
/// 1 when the step's gradients were not finite and the update was skipped, else 0 (rank 0).
pub const OUTPUT_SKIPPED: &str = "amp.skipped";

/// Dynamic loss scaling for f16 (PyTorch's `GradScaler`): the backward seed is multiplied by
/// `scale` so small gradients do not flush to zero in half precision, and the gradients are
/// divided by it before the update. A step whose gradients are not all finite changes
/// nothing (parameters and optimizer state pass through) and halves the scale; after
/// `growth_interval` finite steps in a row the scale doubles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaling {
    /// The scale of the first step (PyTorch: 2^16).
    pub init_scale: f32,
    /// Finite steps in a row after which the scale doubles (PyTorch: 2000); at least 1.
    pub growth_interval: u32,
}

impl LossScaling {
    /// The factor the scale grows by after `growth_interval` finite steps.
    pub const GROWTH: f64 = 2.0;
    /// The factor the scale shrinks by after a non-finite step.
    pub const BACKOFF: f64 = 0.5;
}

impl Default for LossScaling {
    /// PyTorch's `GradScaler` defaults: init 2^16, growth 2, backoff 0.5, interval 2000.
    fn default() -> LossScaling {
        LossScaling {
            init_scale: 65536.0,
            growth_interval: 2000,
        }
    }
}

/// A mixed-precision step: the dtype its matrix products and convolutions run in, and loss
/// scaling where that dtype needs it. Master weights, optimizer state, the loss, softmax,
/// reductions and BatchNorm statistics stay f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixedPrecision {
    /// [`DType::F16`] or [`DType::BF16`].
    pub compute: DType,
    pub loss_scaling: Option<LossScaling>,
}

impl MixedPrecision {
    /// f16 products with dynamic loss scaling at PyTorch's defaults.
    pub fn fp16() -> MixedPrecision {
        MixedPrecision {
            compute: DType::F16,
            loss_scaling: Some(LossScaling::default()),
        }
    }

    /// bf16 products; bf16 has f32's exponent range, so no loss scaling.
    pub fn bf16() -> MixedPrecision {
        MixedPrecision {
            compute: DType::BF16,
            loss_scaling: None,
        }
    }

    /// The step a pipeline's `precision` asks for; `None` for `fp32`.
    pub fn of(precision: Precision) -> Option<MixedPrecision> {
        match precision {
            Precision::Fp32 => None,
            Precision::Fp16Mixed => Some(MixedPrecision::fp16()),
            Precision::Bf16Mixed => Some(MixedPrecision::bf16()),
        }
    }
}

/// Graph output name carrying the updated value of input `name`.
pub fn next_name(name: &str) -> String {
    format!("next.{name}")
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("building the graph failed: {0}")]
    Graph(#[from] GraphError),
    #[error("differentiating the loss failed: {0}")]
    Autodiff(#[from] AutodiffError),
    #[error("invalid step configuration: {0}")]
    Config(String),
}

/// Name and shape of one graph input tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Debug, Clone)]
pub struct StepConfig {
    pub batch: usize,
    pub loss: LossConfig,
    pub optimizer: OptimizerConfig,
    /// Take both views as ONE input `x` of shape `[2B, ...]` (view 1 in rows `0..B`, view 2
    /// in rows `B..2B`) instead of `x1` and `x2`. The trainer's API is the same either way; the
    /// stacked layout saves the graph's `[2B, ...]` Concat (one pass over the batch, ~2% of
    /// the study's step) because the trainer writes the views straight into place.
    pub stacked_views: bool,
    /// Exempt biases and normalisation parameters ([`ParamRole::Bias`], [`ParamRole::Norm`])
    /// from weight decay and from LARS's trust ratio (see [`optim::apply_update_grouped`]).
    pub exclude_bias_and_norm: bool,
    /// Use cbound's CPU-only fused kernels (default); off for a graph the CUDA provider runs
    /// ([`Graph::set_custom_kernels`]). A mixed-precision step never uses them.
    pub custom_kernels: bool,
    /// Run the convolutions that gain from it through ONNX Runtime's NCHWc kernels, in
    /// channel blocks of this size ([`Graph::set_blocked_convs`]; the block must be
    /// [`crate::runtime::Runtime::conv_block`]'s). `None` (default): plain `Conv` nodes.
    /// Needs `custom_kernels`.
    pub blocked_convs: Option<usize>,
    /// Build the mixed-precision step instead of the fp32 one; `None` (default): fp32.
    pub mixed: Option<MixedPrecision>,
}

impl StepConfig {
    /// Separate `x1`/`x2` inputs.
    pub fn new(batch: usize, loss: LossConfig, optimizer: OptimizerConfig) -> StepConfig {
        StepConfig {
            batch,
            loss,
            optimizer,
            stacked_views: false,
            exclude_bias_and_norm: false,
            custom_kernels: true,
            blocked_convs: None,
            mixed: None,
        }
    }

    /// See [`StepConfig::blocked_convs`].
    pub fn with_blocked_convs(self, block: Option<usize>) -> StepConfig {
        StepConfig {
            blocked_convs: block,
            ..self
        }
    }

    /// See [`StepConfig::mixed`].
    pub fn with_mixed_precision(self, mixed: Option<MixedPrecision>) -> StepConfig {
        StepConfig { mixed, ..self }
    }

    /// See [`StepConfig::custom_kernels`].
    pub fn with_custom_kernels(self, allowed: bool) -> StepConfig {
        StepConfig {
            custom_kernels: allowed,
            ..self
        }
    }

    pub fn excluding_bias_and_norm(self, exclude: bool) -> StepConfig {
        StepConfig {
            exclude_bias_and_norm: exclude,
            ..self
        }
    }

    pub fn stacked(self) -> StepConfig {
        StepConfig {
            stacked_views: true,
            ..self
        }
    }
}

/// A serialised training-step graph and the layout of its inputs and outputs.
#[derive(Debug, Clone)]
pub struct StepGraph {
    pub model_bytes: Vec<u8>,
    pub batch: usize,
    /// Per-sample view shape (e.g. `[3072]` or `[1, 28, 28]`).
    pub view_shape: Vec<usize>,
    /// Per-sample shape of `x2` where it differs from `x1`'s (a critic scoring pairs (x, y)
    /// of different widths); `None`: both views have [`StepGraph::view_shape`]. Only with
    /// separate `x1`/`x2` inputs.
    pub second_view_shape: Option<Vec<usize>>,
    pub params: Vec<TensorSpec>,
    /// Non-trainable model tensors (BatchNorm running statistics): inputs, and `next.<name>`
    /// outputs updated by the forward pass, not by the optimizer.
    pub buffers: Vec<TensorSpec>,
    pub state: Vec<TensorSpec>,
    pub optimizer: OptimizerConfig,
    /// Whether the views arrive stacked in one input `x` (see [`StepConfig::stacked_views`]).
    pub stacked_views: bool,
    /// Per state tensor, internal value = conventional value x scale (see
    /// [`OptimizerConfig::state_scales`]); the trainer converts when exporting/importing.
    pub state_scales: Vec<f32>,
    /// FLOPs of the MatMul/Gemm/Conv nodes of one step (2 per multiply-add).
    pub matmul_flops: u64,
    /// The mixed-precision step's settings; `None` for fp32. With loss scaling the graph has
    /// the inputs [`INPUT_LOSS_SCALE`], [`INPUT_GOOD_STEPS`] and the output [`OUTPUT_SKIPPED`].
    pub mixed: Option<MixedPrecision>,
}

/// A serialised loss-only graph.
#[derive(Debug, Clone)]
pub struct EvalGraph {
    pub model_bytes: Vec<u8>,
    pub batch: usize,
    pub view_shape: Vec<usize>,
    /// Parameter then buffer inputs.
    pub params: Vec<TensorSpec>,
}

/// How the encoder graph receives its parameters.
#[derive(Debug, Clone, Copy)]
pub enum ParamSource<'a> {
    /// As graph inputs named like the parameters.
    Inputs,
    /// Baked in as initializers (must list every encoder parameter).
    Baked(&'a [NamedTensor]),
}

/// A serialised encoder graph: input `x` `[batch, ...]`, output `u` `[batch, embedding_dim]`.
#[derive(Debug, Clone)]
pub struct EncoderGraph {
    pub model_bytes: Vec<u8>,
    pub view_shape: Vec<usize>,
    pub embedding_dim: usize,
    /// Parameter then buffer inputs (empty when baked).
    pub params: Vec<TensorSpec>,
}

fn param_inputs(
    g: &mut Graph,
    model: &ContrastiveModel,
    dtype: DType,
) -> Result<(Vec<TensorSpec>, Vec<ValueId>), StepError> {
    let mut specs = Vec::new();
    let mut values = Vec::new();
    for p in model.param_specs() {
        values.push(g.input(&p.name, dtype, &p.shape)?);
        specs.push(TensorSpec {
            name: p.name,
            shape: p.shape,
        });
    }
    Ok((specs, values))
}

fn buffer_inputs(
    g: &mut Graph,
    model: &ContrastiveModel,
    dtype: DType,
) -> Result<(Vec<TensorSpec>, Vec<ValueId>), StepError> {
    let mut specs = Vec::new();
    let mut values = Vec::new();
    for b in model.buffer_specs() {
        values.push(g.input(&b.name, dtype, &b.shape)?);
        specs.push(TensorSpec {
            name: b.name,
            shape: b.shape,
        });
    }
    Ok((specs, values))
}

fn batched(batch: usize, view: &[usize]) -> Vec<usize> {
    let mut s = vec![batch];
    s.extend_from_slice(view);
    s
}

/// Forward pass of both views as one concatenated batch (so BatchNorm's statistics are over
/// all `2B` samples, as SimCLR computes them); returns the loss value and, in train mode, the
/// updated buffers.
#[allow(clippy::too_many_arguments)]
fn forward_loss(
    g: &mut Graph,
    model: &ContrastiveModel,
    params: &[ValueId],
    buffers: &[ValueId],
    mode: BnMode,
    batch: usize,
    loss_cfg: &LossConfig,
    dtype: DType,
    stacked: bool,
) -> Result<(ValueId, Vec<ValueId>), StepError> {
    let view = model.input_shape().to_vec();
    let x = if stacked {
        g.input(INPUT_X, dtype, &batched(2 * batch, &view))?
    } else {
        let x1 = g.input(INPUT_X1, dtype, &batched(batch, &view))?;
        let x2 = g.input(INPUT_X2, dtype, &batched(batch, &view))?;
        g.concat(&[x1, x2], 0)?
    };
    let (_, z, next_buffers) = model.forward_mode(g, x, params, buffers, mode)?;
    let halves = g.split(z, 0, &[batch, batch])?;
    let (z1, z2) = match halves.as_slice() {
        [a, b] => (*a, *b),
        _ => {
            return Err(StepError::Config(
                "internal: split did not yield two halves".into(),
            ));
        }
    };
    Ok((loss::contrastive_loss(g, z1, z2, loss_cfg)?, next_buffers))
}

fn check_batch(batch: usize, loss_cfg: &LossConfig) -> Result<(), StepError> {
    if batch < 2 {
        return Err(StepError::Config(format!(
            "batch size {batch} is too small: a contrastive loss needs at least 2 pairs ({:?})",
            loss_cfg.kind
        )));
    }
    Ok(())
}

/// FLOPs of the matrix-multiply-like nodes (Gemm/MatMul/Conv/ConvTranspose).
pub fn matmul_flops(g: &Graph) -> u64 {
    let mut total = 0u64;
    for n in g.nodes() {
        let f = match &n.op {
            Op::MatMul => {
                let (a, b) = (g.shape(n.inputs[0]), g.shape(n.inputs[1]));
                2 * a[0] * a[1] * b[1]
            }
            Op::Gemm { trans_a, .. } => {
                let a = g.shape(n.inputs[0]);
                let k = if *trans_a { a[0] } else { a[1] };
                let y = g.shape(n.outputs[0]);
                2 * y[0] * y[1] * k
            }
            Op::Conv { .. } => {
                // w[1] is already C_in / group.
                let w = g.shape(n.inputs[1]);
                let y = g.shape(n.outputs[0]);
                2 * y.iter().product::<usize>() * w[1] * w[2] * w[3]
            }
            Op::ConvTranspose { .. } => {
                let x = g.shape(n.inputs[0]);
                let w = g.shape(n.inputs[1]);
                2 * x.iter().product::<usize>() * w[1] * w[2] * w[3]
            }
            _ => 0,
        };
        total += f as u64;
    }
    total
}

/// A step graph's optimizer-state inputs: one per parameter and optimizer slot (Adam's two
/// moments), and the scale each is stored at.
pub struct StateInputs {
    pub specs: Vec<TensorSpec>,
    pub values: Vec<ValueId>,
    pub scales: Vec<f32>,
}

/// Declares the optimizer-state inputs of the parameters `params`, slot by slot.
pub fn state_inputs(
    g: &mut Graph,
    optimizer: &OptimizerConfig,
    params: &[TensorSpec],
    dtype: DType,
) -> Result<StateInputs, StepError> {
    let slots = optimizer.state_slots();
    let slot_scales = optimizer.state_scales(optimizer.gradient_prescale());
    let mut out = StateInputs {
        specs: vec![],
        values: vec![],
        scales: vec![],
    };
    for p in params {
        for (slot, scale) in slots.iter().zip(&slot_scales) {
            let name = OptimizerConfig::state_name(slot, &p.name);
            out.values.push(g.input(&name, dtype, &p.shape)?);
            out.specs.push(TensorSpec {
                name,
                shape: p.shape.clone(),
            });
            out.scales.push(*scale as f32);
        }
    }
    Ok(out)
}

/// What every training step does once its loss is built: the gradients of `loss` by the
/// parameters, the optimizer's update, and as outputs the loss and the next parameters and
/// state (each named by [`next_name`], which the ping-pong binding relies on).
pub fn emit_update(
    g: &mut Graph,
    loss: ValueId,
    optimizer: &OptimizerConfig,
    params: (&[TensorSpec], &[ValueId]),
    state: (&[TensorSpec], &[ValueId]),
    step_lr: (ValueId, ValueId),
) -> Result<(), StepError> {
    emit_update_grouped(g, loss, optimizer, params, state, step_lr, &[])
}

/// As [`emit_update`], with parameter `i` exempt from weight decay and LARS's trust ratio
/// where `exempt[i]` (see [`optim::apply_update_grouped`]).
pub fn emit_update_grouped(
    g: &mut Graph,
    loss: ValueId,
    optimizer: &OptimizerConfig,
    (params, pvals): (&[TensorSpec], &[ValueId]),
    (state, svals): (&[TensorSpec], &[ValueId]),
    (step, lr): (ValueId, ValueId),
    exempt: &[bool],
) -> Result<(), StepError> {
    let grad_scale = optimizer.gradient_prescale();
    let grads = autodiff::gradients_scaled(g, loss, pvals, grad_scale)?;
    let upd = optim::apply_update_grouped(
        g,
        optimizer,
        &optim::UpdateInputs {
            params: pvals,
            grads: &grads,
            grad_scale,
            state: svals,
            step,
            lr,
        },
        exempt,
    )?;
    g.output(loss, OUTPUT_LOSS)?;
    for (spec, v) in params.iter().zip(&upd.params) {
        g.output(*v, &next_name(&spec.name))?;
    }
    for (spec, v) in state.iter().zip(&upd.state) {
        g.output(*v, &next_name(&spec.name))?;
    }
    Ok(())
}

/// Builds the one-step training graph (f32) for `model`.
pub fn build_train_step(
    model: &ContrastiveModel,
    cfg: &StepConfig,
) -> Result<StepGraph, StepError> {
    let (g, step) = build_train_step_graph(model, cfg, DType::F32)?;
    Ok(StepGraph {
        model_bytes: g.to_model_bytes(OPSET)?,
        ..step
    })
}

/// As [`build_train_step`] but returns the unserialised graph too, in the given float dtype
/// (f64 is used by gradient tests; ONNX Runtime has no f64 Conv kernels).
pub fn build_train_step_graph(
    model: &ContrastiveModel,
    cfg: &StepConfig,
    dtype: DType,
) -> Result<(Graph, StepGraph), StepError> {
    if let Some(mixed) = cfg.mixed {
        if dtype != DType::F32 {
            return Err(StepError::Config(format!(
                "a mixed-precision step keeps f32 master weights; it cannot be built in {}",
                dtype.name()
            )));
        }
        return build_mixed_step_graph(model, cfg, mixed);
    }
    check_batch(cfg.batch, &cfg.loss)?;
    let mut g = Graph::new("cbound_train_step");
    g.set_custom_kernels(cfg.custom_kernels);
    g.set_blocked_convs(cfg.blocked_convs);
    g.set_doc(format!(
        "one training step: {:?} loss (T={}), {:?}{}, batch {}",
        cfg.loss.kind,
        cfg.loss.temperature,
        cfg.optimizer,
        if cfg.exclude_bias_and_norm {
            " (biases and norm parameters exempt)"
        } else {
            ""
        },
        cfg.batch
    ));
    let (params, pvals) = param_inputs(&mut g, model, dtype)?;
    let (buffers, bvals) = buffer_inputs(&mut g, model, dtype)?;
    let StateInputs {
        specs: state,
        values: svals,
        scales: state_scales,
    } = state_inputs(&mut g, &cfg.optimizer, &params, dtype)?;
    let step = g.input(INPUT_STEP, dtype, &[])?;
    let lr = g.input(INPUT_LR, dtype, &[])?;
    let (loss, next_buffers) = forward_loss(
        &mut g,
        model,
        &pvals,
        &bvals,
        BnMode::Train,
        cfg.batch,
        &cfg.loss,
        dtype,
        cfg.stacked_views,
    )?;
    let exempt: Vec<bool> = if cfg.exclude_bias_and_norm {
        model
            .param_specs()
            .iter()
            .map(|p| matches!(p.role, ParamRole::Bias | ParamRole::Norm))
            .collect()
    } else {
        Vec::new()
    };
    emit_update_grouped(
        &mut g,
        loss,
        &cfg.optimizer,
        (&params, &pvals),
        (&state, &svals),
        (step, lr),
        &exempt,
    )?;
    for (spec, v) in buffers.iter().zip(&next_buffers) {
        g.output(*v, &next_name(&spec.name))?;
    }
    let flops = matmul_flops(&g);
    let sg = StepGraph {
        model_bytes: Vec::new(),
        batch: cfg.batch,
        view_shape: model.input_shape().to_vec(),
        second_view_shape: None,
        params,
        buffers,
        state,
        optimizer: cfg.optimizer,
        stacked_views: cfg.stacked_views,
        state_scales,
        matmul_flops: flops,
        mixed: None,
    };
    Ok((g, sg))
}

/// `true` (rank-0 bool) where every element of every tensor in `xs` is finite. `0 x` is 0
/// for finite `x` and NaN for an infinity or NaN, and a NaN survives the sums, so one
/// reduction per tensor answers it; the per-tensor sums themselves cannot overflow f32 for
/// gradients of f16 products (each element below 65504 times the element count).
fn all_finite(g: &mut Graph, xs: &[ValueId]) -> Result<ValueId, StepError> {
    let mut sums = Vec::with_capacity(xs.len());
    for &x in xs {
        let axes: Vec<usize> = (0..g.shape(x).len()).collect();
        sums.push(if axes.is_empty() {
            x
        } else {
            g.reduce_sum(x, &axes, false)?
        });
    }
    let total = g.sum(&sums)?;
    let zero = g.scalar(DType::F32, 0.0)?;
    let probe = g.mul(total, zero)?;
    Ok(g.equal(probe, zero)?)
}

/// The mixed-precision step (see [`MixedPrecision`] and the module docs): inputs and outputs
/// as the fp32 step's, plus the loss-scaling state where there is one.
fn build_mixed_step_graph(
    model: &ContrastiveModel,
    cfg: &StepConfig,
    mixed: MixedPrecision,
) -> Result<(Graph, StepGraph), StepError> {
    check_batch(cfg.batch, &cfg.loss)?;
    if let Some(ls) = mixed.loss_scaling {
        if !(ls.init_scale.is_finite() && ls.init_scale > 0.0) || ls.growth_interval == 0 {
            return Err(StepError::Config(format!(
                "loss scaling needs a finite initial scale > 0 and a growth interval >= 1, got {} and {}",
                ls.init_scale, ls.growth_interval
            )));
        }
    }
    let dtype = DType::F32;
    let mut g = Graph::new("cbound_train_step_mixed");
    // cbound's fused kernels are CPU-only and mixed precision is for CUDA: the ai.onnx chain.
    g.set_custom_kernels(false);
    g.set_doc(format!(
        "one mixed-precision training step ({} products{}): {:?} loss (T={}), {:?}{}, batch {}",
        mixed.compute.name(),
        match mixed.loss_scaling {
            Some(ls) => format!(
                ", dynamic loss scaling from {} doubling every {} finite steps",
                ls.init_scale, ls.growth_interval
            ),
            None => String::new(),
        },
        cfg.loss.kind,
        cfg.loss.temperature,
        cfg.optimizer,
        if cfg.exclude_bias_and_norm {
            " (biases and norm parameters exempt)"
        } else {
            ""
        },
        cfg.batch
    ));
    let (params, pvals) = param_inputs(&mut g, model, dtype)?;
    let (buffers, bvals) = buffer_inputs(&mut g, model, dtype)?;
    let StateInputs {
        specs: state,
        values: svals,
        scales: state_scales,
    } = state_inputs(&mut g, &cfg.optimizer, &params, dtype)?;
    let step = g.input(INPUT_STEP, dtype, &[])?;
    let lr = g.input(INPUT_LR, dtype, &[])?;
    let scaler = match mixed.loss_scaling {
        Some(ls) => Some((
            ls,
            g.input(INPUT_LOSS_SCALE, dtype, &[])?,
            g.input(INPUT_GOOD_STEPS, dtype, &[])?,
        )),
        None => None,
    };
    g.set_autocast(Some(mixed.compute))?;
    let (loss, next_buffers) = forward_loss(
        &mut g,
        model,
        &pvals,
        &bvals,
        BnMode::Train,
        cfg.batch,
        &cfg.loss,
        dtype,
        cfg.stacked_views,
    )?;
    g.set_autocast(None)?;
    if mixed.compute == DType::BF16 && g.nodes().iter().any(|n| matches!(n.op, Op::Conv { .. })) {
        return Err(StepError::Config(
            "bf16_mixed is not available for convolutional encoders: ONNX opset 18, which the \
             step graphs use, defines Conv for f16, f32 and f64 only (bfloat16 from opset 22); \
             use fp16_mixed or fp32"
                .into(),
        ));
    }
    let exempt: Vec<bool> = if cfg.exclude_bias_and_norm {
        model
            .param_specs()
            .iter()
            .map(|p| matches!(p.role, ParamRole::Bias | ParamRole::Norm))
            .collect()
    } else {
        Vec::new()
    };
    let grad_scale = cfg.optimizer.gradient_prescale();
    let (grads, finite) = match scaler {
        None => (
            autodiff::gradients_scaled(&mut g, loss, &pvals, grad_scale)?,
            None,
        ),
        Some((_, scale, _)) => {
            // The seed carries the loss scale as well as the optimizer's prescale; dividing by
            // the scale (a power of two) afterwards is exact.
            let k = g.scalar(dtype, grad_scale)?;
            let seed = g.mul(scale, k)?;
            let scaled = autodiff::gradients_seeded(&mut g, loss, &pvals, Seed::Value(seed))?;
            let one = g.scalar(dtype, 1.0)?;
            let inv = g.div(one, scale)?;
            let grads = scaled
                .iter()
                .map(|&d| g.mul(d, inv))
                .collect::<Result<Vec<_>, _>>()?;
            let finite = all_finite(&mut g, &grads)?;
            (grads, Some(finite))
        }
    };
    let upd = optim::apply_update_grouped(
        &mut g,
        &cfg.optimizer,
        &optim::UpdateInputs {
            params: &pvals,
            grads: &grads,
            grad_scale,
            state: &svals,
            step,
            lr,
        },
        &exempt,
    )?;
    g.output(loss, OUTPUT_LOSS)?;
    // A skipped step returns its inputs: Where picks them bit for bit.
    let keep = |g: &mut Graph, new: ValueId, old: ValueId| match finite {
        Some(f) => g.where_(f, new, old),
        None => Ok(new),
    };
    for ((spec, &v), &old) in params.iter().zip(&upd.params).zip(&pvals) {
        let v = keep(&mut g, v, old)?;
        g.output(v, &next_name(&spec.name))?;
    }
    for ((spec, &v), &old) in state.iter().zip(&upd.state).zip(&svals) {
        let v = keep(&mut g, v, old)?;
        g.output(v, &next_name(&spec.name))?;
    }
    if let (Some((ls, scale, good)), Some(finite)) = (scaler, finite) {
        let fin = g.cast(finite, dtype)?;
        let one = g.scalar(dtype, 1.0)?;
        let zero = g.scalar(dtype, 0.0)?;
        // A non-finite step resets the count; the count reaching the interval doubles the
        // scale and starts it again (PyTorch's `_amp_update_scale_`).
        let counted = g.add(good, one)?;
        let counted = g.mul(counted, fin)?;
        let threshold = g.scalar(dtype, f64::from(ls.growth_interval) - 0.5)?;
        let grow = g.greater(counted, threshold)?;
        let growth = g.scalar(dtype, LossScaling::GROWTH)?;
        let grown = g.mul(scale, growth)?;
        let kept = g.where_(grow, grown, scale)?;
        let backoff = g.scalar(dtype, LossScaling::BACKOFF)?;
        let backed_off = g.mul(scale, backoff)?;
        let next_scale = g.where_(finite, kept, backed_off)?;
        let next_good = g.where_(grow, zero, counted)?;
        let skipped = g.sub(one, fin)?;
        g.output(next_scale, &next_name(INPUT_LOSS_SCALE))?;
        g.output(next_good, &next_name(INPUT_GOOD_STEPS))?;
        g.output(skipped, OUTPUT_SKIPPED)?;
    }
    for (spec, v) in buffers.iter().zip(&next_buffers) {
        g.output(*v, &next_name(&spec.name))?;
    }
    let flops = matmul_flops(&g);
    let sg = StepGraph {
        model_bytes: Vec::new(),
        batch: cfg.batch,
        view_shape: model.input_shape().to_vec(),
        second_view_shape: None,
        params,
        buffers,
        state,
        optimizer: cfg.optimizer,
        stacked_views: cfg.stacked_views,
        state_scales,
        matmul_flops: flops,
        mixed: Some(mixed),
    };
    Ok((g, sg))
}

/// Builds the loss-only graph for `batch` held-out pairs.
pub fn build_eval(
    model: &ContrastiveModel,
    batch: usize,
    loss_cfg: &LossConfig,
) -> Result<EvalGraph, StepError> {
    check_batch(batch, loss_cfg)?;
    let mut g = Graph::new("cbound_eval_loss");
    let (mut params, pvals) = param_inputs(&mut g, model, DType::F32)?;
    let (buffers, bvals) = buffer_inputs(&mut g, model, DType::F32)?;
    params.extend(buffers);
    let (loss, _) = forward_loss(
        &mut g,
        model,
        &pvals,
        &bvals,
        BnMode::Inference,
        batch,
        loss_cfg,
        DType::F32,
        false,
    )?;
    g.output(loss, OUTPUT_LOSS)?;
    Ok(EvalGraph {
        model_bytes: g.to_model_bytes(OPSET)?,
        batch,
        view_shape: model.input_shape().to_vec(),
        params,
    })
}

/// Builds the encoder graph `u = f(x)` with a symbolic batch axis.
pub fn build_encoder(
    model: &ContrastiveModel,
    source: ParamSource<'_>,
) -> Result<EncoderGraph, StepError> {
    build_forward(model, source, false)
}

/// Builds the projection graph `z = g(f(x))` (the space the contrastive critic scores), with
/// the same interface as the encoder graph: input `x`, output `u` of the projection size.
pub fn build_projection(
    model: &ContrastiveModel,
    source: ParamSource<'_>,
) -> Result<EncoderGraph, StepError> {
    build_forward(model, source, true)
}

fn build_forward(
    model: &ContrastiveModel,
    source: ParamSource<'_>,
    project: bool,
) -> Result<EncoderGraph, StepError> {
    let mut g = Graph::new(if project {
        "cbound_projection"
    } else {
        "cbound_encoder"
    });
    let mut specs = Vec::new();
    let mut values = Vec::new();
    let (mut wanted, buffers): (Vec<TensorSpec>, Vec<TensorSpec>) = {
        let as_spec = |name: &str, shape: &[usize]| TensorSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
        };
        let params = if project {
            model.param_specs()
        } else {
            model.encoder.params().to_vec()
        };
        let buffers = if project {
            model.buffer_specs()
        } else {
            model.encoder.buffers().to_vec()
        };
        (
            params.iter().map(|p| as_spec(&p.name, &p.shape)).collect(),
            buffers.iter().map(|b| as_spec(&b.name, &b.shape)).collect(),
        )
    };
    let num_params = wanted.len();
    wanted.extend(buffers);
    for p in &wanted {
        match source {
            ParamSource::Inputs => {
                values.push(g.input(&p.name, DType::F32, &p.shape)?);
                specs.push(TensorSpec {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                });
            }
            ParamSource::Baked(list) => {
                let t = list.iter().find(|t| t.name == p.name).ok_or_else(|| {
                    StepError::Config(format!(
                        "parameter `{}` is missing from the baked list",
                        p.name
                    ))
                })?;
                if t.shape != p.shape {
                    return Err(StepError::Config(format!(
                        "parameter `{}` has shape {:?}, the model expects {:?}",
                        p.name, t.shape, p.shape
                    )));
                }
                values.push(g.initializer(&p.name, TensorData::F32(t.data.clone()), &p.shape)?);
            }
        }
    }
    // The shape's batch entry is a placeholder: the axis is serialised as symbolic and the
    // encoder uses no batch-dependent op (Flatten, not Reshape).
    let view = model.input_shape().to_vec();
    let x = g.input(INPUT_X, DType::F32, &batched(1, &view))?;
    g.mark_batch_dim(x);
    let (pvals, bvals) = values.split_at(num_params);
    let (u, dim) = if project {
        let (_, z, _) = model.forward_mode(&mut g, x, pvals, bvals, BnMode::Inference)?;
        (z, model.projection_dim())
    } else {
        let (u, _) = model
            .encoder
            .forward_mode(&mut g, x, pvals, bvals, BnMode::Inference)?;
        (u, model.embedding_dim())
    };
    let u = g.output(u, OUTPUT_EMBEDDING)?;
    g.mark_batch_dim(u);
    Ok(EncoderGraph {
        model_bytes: g.to_model_bytes(OPSET)?,
        view_shape: view,
        embedding_dim: dim,
        params: specs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::LossKind;
    use crate::models::{ConvConfig, EncoderConfig, MlpConfig, ModelConfig, PoolKind};
    use crate::testutil::{run_python, Data};

    const CHECKER: &str = r#"
import sys, onnx
for path in sys.argv[1:]:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    print(path.rsplit('/', 1)[-1], len(m.graph.node), 'nodes ok')
"#;

    fn conv_model() -> ModelConfig {
        ModelConfig {
            encoder: EncoderConfig::Conv(ConvConfig {
                channels: vec![4, 8],
                out_dim: 16,
                pool: PoolKind::Average,
                ..ConvConfig::small([1, 12, 12])
            }),
            projector: Some(MlpConfig {
                dims: vec![16, 16, 8],
                activation: crate::models::Activation::Gelu,
            }),
        }
    }

    #[test]
    fn serialised_graphs_pass_the_onnx_checker() -> Result<(), Box<dyn std::error::Error>> {
        let study = ContrastiveModel::new(&ModelConfig::study(3072))?;
        let step = build_train_step(
            &study,
            &StepConfig::new(256, LossConfig::study(), OptimizerConfig::adam()),
        )?;
        let conv = ContrastiveModel::new(&conv_model())?;
        let conv_step = build_train_step(
            &conv,
            &StepConfig::new(
                4,
                LossConfig {
                    kind: LossKind::NtXent,
                    temperature: 0.5,
                    eps: 1e-12,
                },
                OptimizerConfig::Sgd {
                    momentum: 0.9,
                    weight_decay: 1e-4,
                    nesterov: true,
                },
            ),
        )?;
        let eval = build_eval(&study, 64, &LossConfig::study())?;
        let conv_params = conv.init_params(0)?;
        let baked = build_encoder(&conv, ParamSource::Baked(&conv_params))?;
        let inputs = build_encoder(&study, ParamSource::Inputs)?;

        let dir = tempfile::tempdir()?;
        let mut paths = Vec::new();
        for (name, bytes) in [
            ("study_step.onnx", &step.model_bytes),
            ("conv_step.onnx", &conv_step.model_bytes),
            ("eval.onnx", &eval.model_bytes),
            ("encoder_baked.onnx", &baked.model_bytes),
            ("encoder_inputs.onnx", &inputs.model_bytes),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes)?;
            paths.push(p.to_string_lossy().into_owned());
        }
        let args: Vec<&str> = paths.iter().map(String::as_str).collect();
        let out = run_python(CHECKER, &args);
        assert_eq!(
            out.lines().filter(|l| l.ends_with("nodes ok")).count(),
            5,
            "{out}"
        );

        // Linear layers on 512 rows: forward 2.080 GFLOP, weight gradients the same, input
        // gradients for all but the first layer 0.470; the 256x256x128 logits Gemm and its two
        // gradients 0.050. No dL/dX Gemm for the 3072-wide first layer.
        let fwd: u64 = 2 * 512 * (3072 * 512 + 512 * 512 + 512 * 128 + 128 * 512 + 512 * 128);
        let dx: u64 = 2 * 512 * (512 * 512 + 512 * 128 + 128 * 512 + 512 * 128);
        let logits: u64 = 2 * 256 * 256 * 128;
        // Bias gradients are column sums done as ones[1, 512] x dY GEMVs.
        let bias: u64 = 2 * 512 * (512 + 512 + 128 + 512 + 128);
        assert_eq!(step.matmul_flops, 2 * fwd + dx + 3 * logits + bias);
        assert_eq!(step.params.len(), 10);
        assert_eq!(step.state.len(), 20);
        Ok(())
    }

    /// FNV-1a, 64 bit: a hash whose value no Rust release changes (unlike `DefaultHasher`).
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The fp32 step graphs are pinned byte for byte: the mixed-precision variant is built
    /// beside them and must not change a node, a name or an initializer of theirs. The hashes
    /// were taken before the mixed-precision graph existed (commit f0ff55f).
    #[test]
    fn fp32_step_graphs_are_unchanged_byte_for_byte() -> Result<(), Box<dyn std::error::Error>> {
        use crate::models::{ResNetConfig, ResNetDepth, Stem};
        let study = ContrastiveModel::new(&ModelConfig::study(64))?;
        let conv = ContrastiveModel::new(&conv_model())?;
        let resnet = ContrastiveModel::new(&ModelConfig {
            encoder: EncoderConfig::ResNet(ResNetConfig {
                input: [3, 8, 8],
                depth: ResNetDepth::R18,
                stem: Stem::Cifar,
                width: 0.0625,
            }),
            projector: Some(MlpConfig {
                dims: vec![32, 16, 8],
                activation: crate::models::Activation::Relu,
            }),
        })?;
        let adam = StepConfig::new(8, LossConfig::study(), OptimizerConfig::adam());
        let sgd = StepConfig::new(
            4,
            LossConfig::study(),
            OptimizerConfig::Sgd {
                momentum: 0.9,
                weight_decay: 1e-4,
                nesterov: true,
            },
        );
        let cases = [
            ("study adam", &study, adam.clone()),
            (
                "study adam, cuda-style",
                &study,
                adam.clone()
                    .stacked()
                    .excluding_bias_and_norm(true)
                    .with_custom_kernels(false),
            ),
            ("conv sgd", &conv, sgd.clone()),
            (
                "resnet adamw",
                &resnet,
                StepConfig::new(4, LossConfig::study(), OptimizerConfig::adamw()).stacked(),
            ),
        ];
        let got: Vec<(&str, u64)> = cases
            .iter()
            .map(|(name, m, cfg)| Ok((*name, fnv1a(&build_train_step(m, cfg)?.model_bytes))))
            .collect::<Result<_, StepError>>()?;
        // Re-pinned (all but the cuda-style graph, which has no cbound kernels) when the ReLU
        // backward became one ReluGrad node and the stride-1 input gradient's flipped weight
        // one FlipFilter node: graphs with the same bits as before (the kernels' tests).
        let want: [(&str, u64); 4] = [
            ("study adam", 6978875060109417204),
            ("study adam, cuda-style", 9055546556614847436),
            // Re-pinned when convolution weight gradients became chunked Im2Col + Gemm.
            ("conv sgd", 17681452596475832024),
            // Re-pinned when training-mode BatchNorm became cbound's BatchNormTrain kernel.
            ("resnet adamw", 9258206595453338841),
        ];
        assert_eq!(got, want);
        Ok(())
    }

    fn small_mlp() -> ModelConfig {
        ModelConfig {
            encoder: EncoderConfig::Mlp(MlpConfig {
                dims: vec![16, 32, 16],
                activation: crate::models::Activation::Relu,
            }),
            projector: Some(MlpConfig {
                dims: vec![16, 32, 8],
                activation: crate::models::Activation::Relu,
            }),
        }
    }

    /// The feeds of one step: parameters from `init`, optimizer state filled with small
    /// positive values (nonzero, so a pass-through is visible), the two views from a fixed
    /// stream and `extra` rank-0 inputs by name.
    fn step_feeds(
        g: &Graph,
        sg: &StepGraph,
        init: &[NamedTensor],
        extra: &[(&str, f32)],
    ) -> Result<Vec<(ValueId, Data)>, Box<dyn std::error::Error>> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let find = |name: &str| g.find(name).ok_or_else(|| format!("no input `{name}`"));
        let mut feeds = Vec::new();
        for t in init {
            feeds.push((find(&t.name)?, Data::F32(t.data.clone())));
        }
        for (k, s) in sg.state.iter().enumerate() {
            let data = (0..s.numel())
                .map(|i| 1e-3 * ((i + k) % 7 + 1) as f32)
                .collect();
            feeds.push((find(&s.name)?, Data::F32(data)));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = sg.batch * sg.view_shape.iter().product::<usize>();
        for name in [INPUT_X1, INPUT_X2] {
            let x: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
            feeds.push((find(name)?, Data::F32(x)));
        }
        for (name, v) in extra {
            feeds.push((find(name)?, Data::F32(vec![*v])));
        }
        Ok(feeds)
    }

    fn sgd() -> OptimizerConfig {
        OptimizerConfig::Sgd {
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    #[test]
    fn fp16_step_matches_the_fp32_step_within_half_precision(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::testutil::run_graph;
        let model = ContrastiveModel::new(&small_mlp())?;
        let init = model.init_params(3)?;
        let lr = 0.5_f32;
        let cfg = StepConfig::new(8, LossConfig::study(), sgd());
        let (g32, s32) = build_train_step_graph(&model, &cfg, DType::F32)?;
        let mixed = cfg
            .clone()
            .with_mixed_precision(Some(MixedPrecision::fp16()));
        let (g16, s16) = build_train_step_graph(&model, &mixed, DType::F32)?;
        assert_eq!(s16.params, s32.params);
        assert_eq!(s16.state, s32.state);
        let base = [(INPUT_STEP, 1.0), (INPUT_LR, lr)];
        let out32 = run_graph(&g32, &step_feeds(&g32, &s32, &init, &base)?);
        let with_scale = [
            (INPUT_STEP, 1.0),
            (INPUT_LR, lr),
            (INPUT_LOSS_SCALE, 65536.0),
            (INPUT_GOOD_STEPS, 5.0),
        ];
        let out16 = run_graph(&g16, &step_feeds(&g16, &s16, &init, &with_scale)?);
        let (l32, l16) = (out32[OUTPUT_LOSS][0], out16[OUTPUT_LOSS][0]);
        assert!(
            (l32 - l16).abs() < 5e-3 * l32.abs(),
            "loss {l16} vs fp32 {l32}"
        );
        assert_eq!(out16[OUTPUT_SKIPPED], vec![0.0]);
        assert_eq!(out16[&next_name(INPUT_LOSS_SCALE)], vec![65536.0]);
        assert_eq!(out16[&next_name(INPUT_GOOD_STEPS)], vec![6.0]);
        // SGD's momentum buffer after one step is the gradient plus 0.9 x the fed one, so
        // the two graphs' gradients compare through it: within a few f16 ulps in norm.
        for p in &s32.params {
            let name = next_name(&OptimizerConfig::state_name("momentum", &p.name));
            let (a, b) = (&out32[&name], &out16[&name]);
            let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
            let norm: f64 = a.iter().map(|x| x * x).sum::<f64>();
            assert!(
                diff.sqrt() <= 1e-2 * norm.sqrt() + 1e-6,
                "{name}: |diff| {} vs |g| {}",
                diff.sqrt(),
                norm.sqrt()
            );
        }
        Ok(())
    }

    /// Convolutions, pooling and BatchNorm (a small ResNet): the fp16 step runs on ONNX
    /// Runtime's CPU provider and its loss and BatchNorm statistics (kept in f32) match the
    /// fp32 step's.
    #[test]
    fn fp16_conv_and_resnet_steps_run_and_match_fp32() -> Result<(), Box<dyn std::error::Error>> {
        use crate::models::{ResNetConfig, ResNetDepth, Stem};
        use crate::testutil::run_graph;
        let resnet = ModelConfig {
            encoder: EncoderConfig::ResNet(ResNetConfig {
                input: [3, 8, 8],
                depth: ResNetDepth::R18,
                stem: Stem::Cifar,
                width: 0.0625,
            }),
            projector: Some(MlpConfig {
                dims: vec![32, 16, 8],
                activation: crate::models::Activation::Relu,
            }),
        };
        for (what, cfg) in [("conv", conv_model()), ("resnet", resnet)] {
            let model = ContrastiveModel::new(&cfg)?;
            let mut init = model.init_params(5)?;
            let buffers: Vec<NamedTensor> = model
                .buffer_specs()
                .into_iter()
                .map(|b| {
                    let n = b.shape.iter().product();
                    let fill = if b.name.ends_with("running_var") {
                        1.0
                    } else {
                        0.0
                    };
                    NamedTensor::new(b.name, b.shape, vec![fill; n])
                })
                .collect();
            init.retain(|t| !buffers.iter().any(|b| b.name == t.name));
            init.extend(buffers);
            let step = StepConfig::new(4, LossConfig::study(), sgd());
            let (g32, s32) = build_train_step_graph(&model, &step, DType::F32)?;
            let mixed = step.with_mixed_precision(Some(MixedPrecision::fp16()));
            let (g16, s16) = build_train_step_graph(&model, &mixed, DType::F32)?;
            let base = [(INPUT_STEP, 1.0), (INPUT_LR, 0.1)];
            let out32 = run_graph(&g32, &step_feeds(&g32, &s32, &init, &base)?);
            // 2^16 overflows the first step of the ResNet (as in PyTorch, the first steps of
            // a run back the scale off); 2^10 is where a run would settle.
            let scaled = [
                (INPUT_STEP, 1.0),
                (INPUT_LR, 0.1),
                (INPUT_LOSS_SCALE, 1024.0),
                (INPUT_GOOD_STEPS, 0.0),
            ];
            let out16 = run_graph(&g16, &step_feeds(&g16, &s16, &init, &scaled)?);
            let (l32, l16) = (out32[OUTPUT_LOSS][0], out16[OUTPUT_LOSS][0]);
            assert!(
                (l32 - l16).abs() < 1e-2 * l32.abs(),
                "{what}: loss {l16} vs {l32}"
            );
            assert_eq!(out16[OUTPUT_SKIPPED], vec![0.0], "{what}");
            for b in &s32.buffers {
                let name = next_name(&b.name);
                for (x, y) in out32[&name].iter().zip(&out16[&name]) {
                    assert!(
                        (x - y).abs() <= 1e-2 * x.abs() + 1e-3,
                        "{what} {name}: {y} vs {x}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn an_overflowing_fp16_step_changes_nothing_and_halves_the_scale(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::testutil::run_graph;
        let model = ContrastiveModel::new(&small_mlp())?;
        let init = model.init_params(3)?;
        let cfg = StepConfig::new(8, LossConfig::study(), OptimizerConfig::adam())
            .with_mixed_precision(Some(MixedPrecision::fp16()));
        let (g, sg) = build_train_step_graph(&model, &cfg, DType::F32)?;
        // 2^40 times gradients of order 1e-3 is far past f16's 65504: every product's
        // gradient overflows.
        let scale = 2f32.powi(40);
        let extra = [
            (INPUT_STEP, 3.0),
            (INPUT_LR, 1e-3),
            (INPUT_LOSS_SCALE, scale),
            (INPUT_GOOD_STEPS, 17.0),
        ];
        let feeds = step_feeds(&g, &sg, &init, &extra)?;
        let out = run_graph(&g, &feeds);
        assert_eq!(out[OUTPUT_SKIPPED], vec![1.0]);
        assert_eq!(
            out[&next_name(INPUT_LOSS_SCALE)],
            vec![f64::from(scale) * 0.5]
        );
        assert_eq!(out[&next_name(INPUT_GOOD_STEPS)], vec![0.0]);
        assert!(out[OUTPUT_LOSS][0].is_finite());
        // Parameters and optimizer state come back bit for bit.
        let mut checked = 0;
        for (v, d) in &feeds {
            let name = g.name_of(*v);
            if name == INPUT_LOSS_SCALE || name == INPUT_GOOD_STEPS {
                continue;
            }
            let Some(next) = out.get(&next_name(name)) else {
                continue;
            };
            let Data::F32(fed) = d else {
                continue;
            };
            let fed: Vec<f64> = fed.iter().map(|&x| f64::from(x)).collect();
            assert_eq!(next, &fed, "{name} changed in a skipped step");
            checked += 1;
        }
        assert_eq!(checked, sg.params.len() + sg.state.len());
        Ok(())
    }

    #[test]
    fn the_loss_scale_doubles_after_the_growth_interval() -> Result<(), Box<dyn std::error::Error>>
    {
        use crate::testutil::Runner;
        let model = ContrastiveModel::new(&small_mlp())?;
        let init = model.init_params(3)?;
        let mixed = MixedPrecision {
            compute: DType::F16,
            loss_scaling: Some(LossScaling {
                init_scale: 1024.0,
                growth_interval: 3,
            }),
        };
        let cfg = StepConfig::new(8, LossConfig::study(), OptimizerConfig::adam())
            .with_mixed_precision(Some(mixed));
        let (g, sg) = build_train_step_graph(&model, &cfg, DType::F32)?;
        let mut runner = Runner::new(&g);
        // (good steps fed, scale fed) -> (good steps, scale) out.
        for (good, want_good, want_scale) in
            [(0.0, 1.0, 1024.0), (1.0, 2.0, 1024.0), (2.0, 0.0, 2048.0)]
        {
            let extra = [
                (INPUT_STEP, 1.0),
                (INPUT_LR, 1e-3),
                (INPUT_LOSS_SCALE, 1024.0),
                (INPUT_GOOD_STEPS, good),
            ];
            let out = runner.run(&step_feeds(&g, &sg, &init, &extra)?);
            assert_eq!(out[OUTPUT_SKIPPED], vec![0.0], "good steps {good}");
            assert_eq!(out[&next_name(INPUT_GOOD_STEPS)], vec![want_good]);
            assert_eq!(out[&next_name(INPUT_LOSS_SCALE)], vec![want_scale]);
        }
        Ok(())
    }

    #[test]
    fn mixed_graphs_cast_only_the_products_and_pass_the_checker(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mlp = ContrastiveModel::new(&small_mlp())?;
        let conv = ContrastiveModel::new(&conv_model())?;
        let base = StepConfig::new(4, LossConfig::study(), OptimizerConfig::adam()).stacked();
        let dir = tempfile::tempdir()?;
        let mut paths = Vec::new();
        for (name, model, mixed) in [
            ("mlp_fp16.onnx", &mlp, MixedPrecision::fp16()),
            ("mlp_bf16.onnx", &mlp, MixedPrecision::bf16()),
            ("conv_fp16.onnx", &conv, MixedPrecision::fp16()),
        ] {
            let cfg = base.clone().with_mixed_precision(Some(mixed));
            let (g, sg) = build_train_step_graph(model, &cfg, DType::F32)?;
            assert_eq!(sg.mixed, Some(mixed));
            // Every product runs in the low dtype, nothing uses cbound's CPU-only kernels,
            // and every graph input and output is f32 (or the views').
            let lo = mixed.compute;
            let mut products = 0;
            for n in g.nodes() {
                assert!(n.op.domain().is_none(), "{name}: custom op {:?}", n.op);
                if matches!(n.op, Op::MatMul | Op::Gemm { .. } | Op::Conv { .. }) {
                    assert_eq!(g.dtype(n.outputs[0]), lo, "{name}: {:?}", n.op);
                    products += 1;
                }
            }
            assert!(products > 0);
            for &v in g.inputs().iter().chain(g.outputs()) {
                assert_eq!(g.dtype(v), DType::F32, "{name}: {}", g.name_of(v));
            }
            let has_scaler = g.find(INPUT_LOSS_SCALE).is_some();
            assert_eq!(has_scaler, mixed.loss_scaling.is_some(), "{name}");
            let p = dir.path().join(name);
            std::fs::write(&p, g.to_model_bytes(OPSET)?)?;
            paths.push(p.to_string_lossy().into_owned());
        }
        let args: Vec<&str> = paths.iter().map(String::as_str).collect();
        let out = run_python(CHECKER, &args);
        assert_eq!(
            out.lines().filter(|l| l.ends_with("nodes ok")).count(),
            3,
            "{out}"
        );
        // bf16 Conv needs opset 22: refused with the reason.
        let cfg = base.with_mixed_precision(Some(MixedPrecision::bf16()));
        match build_train_step(&conv, &cfg) {
            Err(StepError::Config(why)) => assert!(why.contains("opset"), "{why}"),
            other => panic!("bf16 conv step: {:?}", other.map(|s| s.params.len())),
        }
        Ok(())
    }

    #[test]
    fn tiny_batches_are_rejected() -> Result<(), Box<dyn std::error::Error>> {
        let m = ContrastiveModel::new(&ModelConfig::study(8))?;
        let cfg = StepConfig::new(1, LossConfig::study(), OptimizerConfig::adam());
        assert!(matches!(
            build_train_step(&m, &cfg),
            Err(StepError::Config(_))
        ));
        Ok(())
    }
}
