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
//! * [`build_eval`]: the loss only, from `params + buffers + x1 + x2` (for the held-out
//!   estimate `ln N - L`; BatchNorm in inference mode, on running statistics). Parameters are inputs so the trainer's live buffers feed it without copies.
//! * [`build_encoder`]: `U = f(X)`. Parameters are either graph inputs (to run on the trainer's
//!   live buffers) or baked in as initializers (a self-contained `.onnx` artifact); BatchNorm
//!   runs in inference mode on the running statistics, which come the same way. The batch
//!   axis is symbolic, so one session serves any number of rows.

use super::autodiff::{self, AutodiffError};
use super::checkpoint::NamedTensor;
use super::graph::{DType, Graph, GraphError, TensorData, ValueId, OPSET};
use super::loss::{self, LossConfig};
use super::models::{BnMode, ContrastiveModel, ParamRole};
use super::optim::{self, OptimizerConfig};

pub const INPUT_X1: &str = "x1";
pub const INPUT_X2: &str = "x2";
pub const INPUT_X: &str = "x";
pub const INPUT_STEP: &str = "step";
pub const INPUT_LR: &str = "lr";
pub const OUTPUT_LOSS: &str = "loss";
pub const OUTPUT_EMBEDDING: &str = "u";

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
    /// ([`Graph::set_custom_kernels`]).
    pub custom_kernels: bool,
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
        }
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
    use super::graph::Op;
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
    check_batch(cfg.batch, &cfg.loss)?;
    let mut g = Graph::new("cbound_train_step");
    g.set_custom_kernels(cfg.custom_kernels);
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
    use crate::testutil::run_python;

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
        let want: [(&str, u64); 4] = [
            ("study adam", 10963268562414760815),
            ("study adam, cuda-style", 9055546556614847436),
            ("conv sgd", 9705787142306613899),
            ("resnet adamw", 6231669225125256638),
        ];
        assert_eq!(got, want);
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
