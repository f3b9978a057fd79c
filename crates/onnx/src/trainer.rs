//! Drives the training-step graph with parameters and optimizer state resident in ONNX
//! Runtime tensors between steps.
//!
//! # Per-step data movement (CPU execution provider)
//!
//! Two sets of tensors, A and B, each hold every parameter, buffer (BatchNorm running
//! statistics, updated by the step's forward pass) and optimizer-state tensor. Two
//! `IoBinding`s are prepared once: binding 0 feeds A as inputs and has ONNX Runtime write the
//! step's outputs (`next.*`) straight into B; binding 1 does the reverse. A step therefore:
//!
//! * copies the two views into the bound view input(s) (`2 x B x prod(view)` floats in
//!   total: into the two halves of the stacked `x` input, or into `x1` and `x2`) and writes
//!   the scalars `lr` and `step`;
//! * runs the bound session (ONNX Runtime writes the new parameters/state into the other set
//!   in place; bound CPU tensors are aliased, not copied);
//! * reads the rank-0 `loss` output (one float);
//! * flips which set is current.
//!
//! Parameters and state never pass through Rust-side conversions during training; they are
//! copied out only by [`Trainer::params`] / [`Trainer::optimizer_state`] / [`Trainer::state`]
//! and in by the loaders. Adam's first moment is kept scaled inside the graph (see
//! [`crate::optim::OptimizerConfig::state_scales`]); `optimizer_state` converts to
//! PyTorch's convention, `state` stores the internal values plus their scales so a resume
//! is bit-exact.
//! If the loss is NaN/Inf the flip is skipped, so the model is left exactly as before the
//! failing step and the error names the step.
//!
//! # Where the two sets live ([`SlotMemory`])
//!
//! The sets are allocated from the memory the step session runs in: host memory on the CPU
//! provider, the CUDA provider's device memory on CUDA (through ONNX Runtime's allocator for
//! that memory). On CUDA a step therefore moves only the views to the device (from pinned
//! host memory where the provider offers it) and the loss back; the step graph for CUDA keeps the whole update there too (the ai.onnx Adam chain,
//! not the CPU-only fused kernel: [`crate::step::StepConfig::custom_kernels`]). Device
//! tensors cannot be read from the host, so every host access to a set (checkpoints,
//! snapshots, the final parameters, loading) goes through `Trainer::read_slot` and
//! `Trainer::write_slot`, which on the device copy through an Identity session on the same
//! provider. On the CPU they read and write in place, as before.
//!
//! # Mixed precision
//!
//! A step graph built with loss scaling (fp16 mixed precision) adds the loss scale and its
//! count of good steps to the sets, so they ping-pong and checkpoint with the parameters; the
//! trainer reads the graph's `amp.skipped` after each step and counts skipped steps, which are
//! no optimizer steps: Adam's `step` input advances only on the others.

use std::path::PathBuf;

use std::collections::HashMap;

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session, SessionInputValue, SessionInputs};
use ort::value::{Tensor, TensorRef};

use super::checkpoint::{Checkpoint, NamedTensor};
use super::graph::{DType, Graph, OPSET};
use super::runtime::{ort_err, ActiveDevice, Device, Runtime, RuntimeError, SessionOptions};
use super::step::{
    next_name, EncoderGraph, EvalGraph, LossScaling, StepGraph, TensorSpec, INPUT_GOOD_STEPS,
    INPUT_LOSS_SCALE, INPUT_LR, INPUT_STEP, INPUT_X, INPUT_X1, INPUT_X2, OUTPUT_EMBEDDING,
    OUTPUT_LOSS, OUTPUT_SKIPPED,
};

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// A zero-filled tensor owned by ONNX Runtime's allocator: `IoBinding` only accepts such
/// tensors as output buffers (tensors backed by Rust memory are refused).
fn new_tensor(alloc: &Allocator, shape: &[usize]) -> Result<Tensor<f32>, RuntimeError> {
    let mut t = Tensor::<f32>::new(alloc, dims(shape)).map_err(ort_err("allocating a tensor"))?;
    host_mut(&mut t, "a new tensor")?.fill(0.0);
    Ok(t)
}

/// The values of a host-accessible tensor (host or pinned memory), or why not.
fn host_mut<'a>(t: &'a mut Tensor<f32>, what: &str) -> Result<&'a mut [f32], RuntimeError> {
    t.try_extract_tensor_mut()
        .map(|(_, d)| d)
        .map_err(ort_err(format!("writing {what} from the host")))
}

fn write(t: &mut Tensor<f32>, src: &[f32], what: &str) -> Result<(), RuntimeError> {
    let dst = host_mut(t, what)?;
    if dst.len() != src.len() {
        return Err(RuntimeError::Size {
            what: what.to_string(),
            expected: dst.len(),
            got: src.len(),
        });
    }
    dst.copy_from_slice(src);
    Ok(())
}

fn read(t: &Tensor<f32>) -> Vec<f32> {
    t.extract_tensor().1.to_vec()
}

/// Where the trainer keeps parameters, buffers and optimizer state between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotMemory {
    /// Host memory, read and written in place.
    Host,
    /// The CUDA provider's memory on device `device_id`.
    Cuda { device_id: usize },
}

impl SlotMemory {
    /// The memory of a session that runs on `device`.
    pub fn of(device: ActiveDevice, device_id: usize) -> SlotMemory {
        match device {
            ActiveDevice::Cpu => SlotMemory::Host,
            ActiveDevice::Cuda => SlotMemory::Cuda { device_id },
        }
    }

    /// ONNX Runtime's description of this memory, for an allocator of the step session.
    fn memory_info(self) -> Result<MemoryInfo<'static>, RuntimeError> {
        let (device, id) = match self {
            SlotMemory::Host => (AllocationDevice::CPU, 0),
            SlotMemory::Cuda { device_id } => (
                AllocationDevice::CUDA,
                i32::try_from(device_id).map_err(|_| RuntimeError::Tensor {
                    name: "device_id".into(),
                    detail: format!("CUDA device {device_id} is out of range"),
                })?,
            ),
        };
        MemoryInfo::new(device, id, AllocatorType::Device, MemoryType::Default)
            .map_err(ort_err("describing the parameters' memory"))
    }

    /// Where the host side of a step's inputs (the views, `lr`, `step`) is allocated when the
    /// sets are on a device: page-locked host memory from the CUDA provider's pinned
    /// allocator, so ONNX Runtime copies the views to the device by DMA instead of staging
    /// them through a bounce buffer. `None`: ONNX Runtime's plain host allocator (CPU).
    fn staging_memory_info(self) -> Result<Option<MemoryInfo<'static>>, RuntimeError> {
        match self {
            SlotMemory::Host => Ok(None),
            SlotMemory::Cuda { .. } => MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                0,
                AllocatorType::Device,
                MemoryType::CPUInput,
            )
            .map(Some)
            .map_err(ort_err("describing pinned host memory")),
        }
    }
}

/// Copies between host tensors and device tensors of one shape: an Identity graph per shape
/// on the step session's provider and device, bound to the source and the target.
struct DeviceCopy {
    sessions: HashMap<Vec<usize>, Session>,
}

impl DeviceCopy {
    fn new(
        rt: &Runtime,
        shapes: &[&[usize]],
        opts: &SessionOptions,
        device: Device,
    ) -> Result<DeviceCopy, RuntimeError> {
        let mut sessions = HashMap::new();
        let graph_err = |e: crate::graph::GraphError| RuntimeError::Tensor {
            name: "copy graph".into(),
            detail: e.to_string(),
        };
        let opts = SessionOptions {
            device,
            profiling: None,
            ..opts.clone()
        };
        for &shape in shapes {
            if sessions.contains_key(shape) {
                continue;
            }
            let mut g = Graph::new("cbound_copy");
            let x = g.input("x", DType::F32, shape).map_err(graph_err)?;
            let y = g.identity(x).map_err(graph_err)?;
            g.output(y, "y").map_err(graph_err)?;
            let bytes = g.to_model_bytes(OPSET).map_err(graph_err)?;
            sessions.insert(shape.to_vec(), rt.session(&bytes, &opts)?.session);
        }
        Ok(DeviceCopy { sessions })
    }

    /// Copies `src` into `dst` (same shape; either may be on the host or the device).
    fn copy(
        &mut self,
        shape: &[usize],
        src: &Tensor<f32>,
        dst: &mut Tensor<f32>,
    ) -> Result<(), RuntimeError> {
        let session = self
            .sessions
            .get_mut(shape)
            .ok_or_else(|| RuntimeError::Tensor {
                name: format!("{shape:?}"),
                detail: "internal: no copy session for this shape".into(),
            })?;
        let mut binding = session
            .create_binding()
            .map_err(ort_err("creating a copy binding"))?;
        binding
            .bind_input("x", src)
            .map_err(ort_err("binding a copy's source"))?;
        binding
            .bind_output("y", dst)
            .map_err(ort_err("binding a copy's target"))?;
        session
            .run_binding(&binding)
            .map_err(ort_err("copying between host and device"))?;
        Ok(())
    }
}

/// Checkpoint entry listing, per optimizer state tensor, the factor between the stored values
/// and PyTorch's convention.
pub const INTERNAL_SCALES: &str = "opt.internal_scales";

/// Checkpoint entry of a loss-scaled (fp16 mixed-precision) run: how many of its steps were
/// skipped because their gradients were not finite (rank 0, exact up to 2^24).
pub const SKIPPED_STEPS: &str = "amp.skipped_steps";

/// Dynamic loss scaling's bookkeeping on the host. The scale and the count of good steps
/// live in the ping-pong sets with the parameters (the graph updates them); what the host
/// needs is whether the last step was skipped and how many were, because a skipped step
/// is not an optimizer step: Adam's step count (its bias correction) does not advance, as
/// with PyTorch's `GradScaler`, which then never calls `optimizer.step()`.
struct Amp {
    /// The step graph's [`OUTPUT_SKIPPED`], read back after each step (host memory).
    skipped: Tensor<f32>,
    skipped_total: u64,
    last_skipped: bool,
    scaling: LossScaling,
}

/// Session of the loss-only graph, fed from the trainer's live parameter tensors.
struct EvalSession {
    session: Session,
    /// As [`EncoderSession::inputs`].
    inputs: Vec<usize>,
    batch: usize,
    view_numel: usize,
    view_shape: Vec<usize>,
}

/// Session of the encoder graph with parameters as inputs.
struct EncoderSession {
    session: Session,
    view_shape: Vec<usize>,
    embedding_dim: usize,
    /// Index into the trainer's tensors of each of the graph's parameter/buffer inputs.
    inputs: Vec<usize>,
}

/// Owns the step session and the model's parameters and optimizer state.
pub struct Trainer {
    session: Session,
    bindings: [IoBinding; 2],
    /// `slots[k]` = parameters, buffers, optimizer state, then (fp16 mixed precision) the
    /// loss scale and its good-step count, in [`StepGraph`] order, in `memory`.
    slots: [Vec<Tensor<f32>>; 2],
    memory: SlotMemory,
    /// Host access to `slots` where they are on a device.
    copy: Option<DeviceCopy>,
    current: usize,
    specs: Vec<TensorSpec>,
    /// Parameters plus buffers: the model's tensors (its `state_dict`), which
    /// [`Trainer::params`] returns and [`Trainer::load_params`] takes.
    num_params: usize,
    /// Optimizer state tensors, after the model's (`state_scales` has one scale for each).
    num_state: usize,
    /// Loss scaling (fp16 mixed precision) or `None`.
    amp: Option<Amp>,
    /// `[x]` (stacked `[2B, ...]`) or `[x1, x2]`, as the step graph expects.
    views: Vec<Tensor<f32>>,
    /// Per state tensor, internal = conventional x scale.
    state_scales: Vec<f32>,
    lr: Tensor<f32>,
    step_input: Tensor<f32>,
    loss: Tensor<f32>,
    steps_done: u64,
    batch: usize,
    view_numel: usize,
    /// Floats per sample of the second view (equal to `view_numel` unless the step graph
    /// gives `x2` its own shape).
    view2_numel: usize,
    device: ActiveDevice,
    warnings: Vec<String>,
    eval: Option<EvalSession>,
    encoder: Option<EncoderSession>,
    opts: SessionOptions,
}

impl Trainer {
    /// Creates the step session and loads `params` (every parameter and buffer of the step
    /// graph, any order); optimizer state starts at zero and the step count at 0.
    pub fn new(
        rt: &Runtime,
        step: &StepGraph,
        params: &[NamedTensor],
        opts: &SessionOptions,
    ) -> Result<Trainer, RuntimeError> {
        Trainer::build(rt, step, params, opts, false)
    }

    /// [`Trainer::new`]; `copy_on_host` sends host access to the sets through the copy
    /// sessions even in host memory (on the CPU provider), so tests here exercise the path
    /// device memory takes.
    fn build(
        rt: &Runtime,
        step: &StepGraph,
        params: &[NamedTensor],
        opts: &SessionOptions,
        copy_on_host: bool,
    ) -> Result<Trainer, RuntimeError> {
        let handle = rt.session(&step.model_bytes, opts)?;
        let session = handle.session;
        let scaling = step.mixed.and_then(|m| m.loss_scaling);
        let amp_specs: Vec<TensorSpec> = match scaling {
            Some(_) => [INPUT_LOSS_SCALE, INPUT_GOOD_STEPS]
                .iter()
                .map(|n| TensorSpec {
                    name: (*n).to_string(),
                    shape: Vec::new(),
                })
                .collect(),
            None => Vec::new(),
        };
        let specs: Vec<TensorSpec> = step
            .params
            .iter()
            .chain(&step.buffers)
            .chain(&step.state)
            .chain(&amp_specs)
            .cloned()
            .collect();
        let memory = SlotMemory::of(handle.device, opts.device_id);
        let slot_alloc = Allocator::new(&session, memory.memory_info()?)
            .map_err(ort_err("creating the parameters' allocator"))?;
        let shapes: Vec<&[usize]> = specs.iter().map(|s| s.shape.as_slice()).collect();
        let copy = match memory {
            SlotMemory::Host if copy_on_host => {
                Some(DeviceCopy::new(rt, &shapes, opts, Device::Cpu)?)
            }
            SlotMemory::Host => None,
            SlotMemory::Cuda { .. } => Some(DeviceCopy::new(rt, &shapes, opts, Device::Cuda)?),
        };
        let mut slots: [Vec<Tensor<f32>>; 2] = [Vec::new(), Vec::new()];
        for set in &mut slots {
            for s in &specs {
                set.push(match memory {
                    SlotMemory::Host => new_tensor(&slot_alloc, &s.shape)?,
                    // Zeroed below, through the copy sessions.
                    SlotMemory::Cuda { .. } => Tensor::<f32>::new(&slot_alloc, dims(&s.shape))
                        .map_err(ort_err("allocating a device tensor"))?,
                });
            }
        }
        // Views, scalars and the loss stay on the host: ONNX Runtime moves the views in and
        // the loss out at each step. On a device the inputs are pinned where the provider
        // offers it; a provider that does not only costs speed, so that is a warning.
        let mut warnings = handle.warnings;
        let pinned = match memory.staging_memory_info()? {
            None => None,
            Some(info) => match Allocator::new(&session, info) {
                Ok(a) => Some(a),
                Err(e) => {
                    warnings.push(format!(
                        "pinned host memory is not available ({e}); the views reach the device from pageable memory"
                    ));
                    None
                }
            },
        };
        let host = session.allocator();
        let alloc = pinned.as_ref().unwrap_or(host);
        let view_numel: usize = step.view_shape.iter().product();
        let second_shape = step.second_view_shape.as_ref().unwrap_or(&step.view_shape);
        let view2_numel: usize = second_shape.iter().product();
        if step.stacked_views && step.second_view_shape.is_some() {
            return Err(RuntimeError::Tensor {
                name: INPUT_X.into(),
                detail: "stacked views must share one shape (the step graph gives x2 its own)"
                    .into(),
            });
        }
        let batched = |rows: usize, view: &[usize]| {
            let mut shape = vec![rows];
            shape.extend_from_slice(view);
            shape
        };
        let (view_names, views): (&[&str], Vec<Tensor<f32>>) = if step.stacked_views {
            (
                &[INPUT_X],
                vec![new_tensor(
                    alloc,
                    &batched(2 * step.batch, &step.view_shape),
                )?],
            )
        } else {
            (
                &[INPUT_X1, INPUT_X2],
                vec![
                    new_tensor(alloc, &batched(step.batch, &step.view_shape))?,
                    new_tensor(alloc, &batched(step.batch, second_shape))?,
                ],
            )
        };
        if step.state_scales.len() != step.state.len() {
            return Err(RuntimeError::Tensor {
                name: "state".into(),
                detail: "the step graph lists a scale for each state tensor".into(),
            });
        }
        let lr = new_tensor(alloc, &[])?;
        let step_input = new_tensor(alloc, &[])?;
        let mut loss = new_tensor(host, &[])?;
        let mut amp = match scaling {
            Some(scaling) => Some(Amp {
                skipped: new_tensor(host, &[])?,
                skipped_total: 0,
                last_skipped: false,
                scaling,
            }),
            None => None,
        };

        let mut bindings = [
            session
                .create_binding()
                .map_err(ort_err("creating an IoBinding"))?,
            session
                .create_binding()
                .map_err(ort_err("creating an IoBinding"))?,
        ];
        for (k, binding) in bindings.iter_mut().enumerate() {
            let bind_err = |what: &str| ort_err(format!("binding `{what}`"));
            for (s, t) in specs.iter().zip(&slots[k]) {
                binding
                    .bind_input(s.name.as_str(), t)
                    .map_err(bind_err(&s.name))?;
            }
            for (s, t) in specs.iter().zip(slots[1 - k].iter_mut()) {
                let name = next_name(&s.name);
                binding
                    .bind_output(name.as_str(), t)
                    .map_err(bind_err(&name))?;
            }
            for (name, t) in view_names.iter().zip(&views) {
                binding.bind_input(*name, t).map_err(bind_err(name))?;
            }
            binding
                .bind_input(INPUT_LR, &lr)
                .map_err(bind_err(INPUT_LR))?;
            binding
                .bind_input(INPUT_STEP, &step_input)
                .map_err(bind_err(INPUT_STEP))?;
            binding
                .bind_output(OUTPUT_LOSS, &mut loss)
                .map_err(bind_err(OUTPUT_LOSS))?;
            if let Some(a) = amp.as_mut() {
                binding
                    .bind_output(OUTPUT_SKIPPED, &mut a.skipped)
                    .map_err(bind_err(OUTPUT_SKIPPED))?;
            }
        }
        let mut t = Trainer {
            session,
            bindings,
            slots,
            memory,
            copy,
            current: 0,
            specs,
            num_params: step.params.len() + step.buffers.len(),
            num_state: step.state.len(),
            amp,
            views,
            state_scales: step.state_scales.clone(),
            lr,
            step_input,
            loss,
            steps_done: 0,
            batch: step.batch,
            view_numel,
            view2_numel,
            device: handle.device,
            warnings,
            eval: None,
            encoder: None,
            opts: opts.clone(),
        };
        if t.copy.is_some() {
            for set in 0..2 {
                for i in 0..t.specs.len() {
                    let zeros = vec![0.0; t.specs[i].numel()];
                    t.write_slot(set, i, &zeros)?;
                }
            }
        }
        t.load_params(params)?;
        if let Some(scaling) = t.amp.as_ref().map(|a| a.scaling) {
            let first = t.num_params + t.num_state;
            t.write_slot(t.current, first, &[scaling.init_scale])?;
            t.write_slot(t.current, first + 1, &[0.0])?;
        }
        Ok(t)
    }

    /// Adds a held-out loss session (see [`Trainer::eval_loss`]).
    pub fn with_eval(mut self, rt: &Runtime, eval: &EvalGraph) -> Result<Trainer, RuntimeError> {
        let inputs = self.param_indices(&eval.params, "eval graph")?;
        let opts = SessionOptions {
            profiling: None,
            ..self.opts.clone()
        };
        let h = rt.session(&eval.model_bytes, &opts)?;
        self.warnings.extend(h.warnings);
        self.eval = Some(EvalSession {
            session: h.session,
            inputs,
            batch: eval.batch,
            view_numel: eval.view_shape.iter().product(),
            view_shape: eval.view_shape.clone(),
        });
        Ok(self)
    }

    /// Adds an encoder session whose parameters are fed from the live tensors.
    pub fn with_encoder(
        mut self,
        rt: &Runtime,
        enc: &EncoderGraph,
    ) -> Result<Trainer, RuntimeError> {
        let inputs = self.param_indices(&enc.params, "encoder graph")?;
        let opts = SessionOptions {
            profiling: None,
            ..self.opts.clone()
        };
        let h = rt.session(&enc.model_bytes, &opts)?;
        self.warnings.extend(h.warnings);
        self.encoder = Some(EncoderSession {
            session: h.session,
            view_shape: enc.view_shape.clone(),
            embedding_dim: enc.embedding_dim,
            inputs,
        });
        Ok(self)
    }

    /// Where each of another graph's parameter/buffer inputs lives among the model tensors
    /// (an encoder-only graph takes the encoder's parameters and buffers, which are not a
    /// prefix of the step graph's list when there is a projector).
    fn param_indices(&self, specs: &[TensorSpec], what: &str) -> Result<Vec<usize>, RuntimeError> {
        specs
            .iter()
            .map(|s| {
                self.specs[..self.num_params]
                    .iter()
                    .position(|t| t == s)
                    .ok_or_else(|| RuntimeError::Tensor {
                        name: s.name.clone(),
                        detail: format!(
                            "the {what} input {:?} is not a parameter or buffer of the step graph",
                            s.shape
                        ),
                    })
            })
            .collect()
    }

    /// One optimizer step on a batch of pairs (`view1[i]`, `view2[i]`), row-major
    /// `[batch, view...]` each. Returns the loss before the update.
    pub fn step(&mut self, view1: &[f32], view2: &[f32], lr: f32) -> Result<f32, RuntimeError> {
        let half = self.batch * self.view_numel;
        for (what, v, expected) in [
            ("view 1 of the batch", view1, half),
            ("view 2 of the batch", view2, self.batch * self.view2_numel),
        ] {
            if v.len() != expected {
                return Err(RuntimeError::Size {
                    what: what.into(),
                    expected,
                    got: v.len(),
                });
            }
        }
        match self.views.as_mut_slice() {
            [x] => {
                // Stacked: view 1 fills rows 0..B, view 2 rows B..2B.
                let dst = host_mut(x, "the stacked views")?;
                dst[..half].copy_from_slice(view1);
                dst[half..].copy_from_slice(view2);
            }
            [x1, x2] => {
                write(x1, view1, "view 1 of the batch")?;
                write(x2, view2, "view 2 of the batch")?;
            }
            _ => {
                return Err(RuntimeError::Tensor {
                    name: "views".into(),
                    detail: "internal: unexpected number of view inputs".into(),
                });
            }
        }
        let t = self.steps_done + 1;
        // The optimizer's own count: skipped (non-finite, loss-scaled) steps are not updates.
        let skipped = self.amp.as_ref().map_or(0, |a| a.skipped_total);
        let optimizer_step = t - skipped;
        write(&mut self.lr, &[lr], "lr")?;
        // f32 represents every step count up to 2^24 exactly.
        write(&mut self.step_input, &[optimizer_step as f32], "step")?;
        let outputs = self
            .session
            .run_binding(&self.bindings[self.current])
            .map_err(ort_err(format!("running training step {t}")))?;
        drop(outputs);
        let loss = self
            .loss
            .extract_tensor()
            .1
            .first()
            .copied()
            .unwrap_or(f32::NAN);
        if !loss.is_finite() {
            return Err(RuntimeError::NonFiniteLoss { step: t, loss });
        }
        if let Some(a) = self.amp.as_mut() {
            // The graph left parameters and optimizer state as they were and backed the
            // scale off; the sets still flip (the scale and BatchNorm's statistics moved).
            a.last_skipped = a.skipped.extract_tensor().1.first().copied() != Some(0.0);
            a.skipped_total += u64::from(a.last_skipped);
        }
        self.current = 1 - self.current;
        self.steps_done = t;
        Ok(loss)
    }

    /// Whether the last step's gradients were not finite, so that it changed no parameter
    /// (fp16 mixed precision; always `false` otherwise).
    pub fn last_step_skipped(&self) -> bool {
        self.amp.as_ref().is_some_and(|a| a.last_skipped)
    }

    /// Steps skipped so far for non-finite gradients (0 without loss scaling).
    pub fn skipped_steps(&self) -> u64 {
        self.amp.as_ref().map_or(0, |a| a.skipped_total)
    }

    /// The current loss scale (fp16 mixed precision), copied from where the sets live.
    pub fn loss_scale(&mut self) -> Result<Option<f32>, RuntimeError> {
        if self.amp.is_none() {
            return Ok(None);
        }
        let i = self.num_params + self.num_state;
        Ok(self.read_slot(self.current, i)?.first().copied())
    }

    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Floats per sample of one view.
    pub fn view_numel(&self) -> usize {
        self.view_numel
    }

    pub fn device(&self) -> ActiveDevice {
        self.device
    }

    /// Warnings collected while creating sessions (e.g. CUDA fallback).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Where parameters and optimizer state live between steps.
    pub fn memory(&self) -> SlotMemory {
        self.memory
    }

    /// The values of tensor `i` of set `set`, on the host.
    fn read_slot(&mut self, set: usize, i: usize) -> Result<Vec<f32>, RuntimeError> {
        let Some(copy) = self.copy.as_mut() else {
            return Ok(read(&self.slots[set][i]));
        };
        let shape = &self.specs[i].shape;
        let mut host = Tensor::<f32>::new(&Allocator::default(), dims(shape))
            .map_err(ort_err("allocating a host tensor"))?;
        copy.copy(shape, &self.slots[set][i], &mut host)?;
        Ok(read(&host))
    }

    /// Sets tensor `i` of set `set` to `data` (its size checked).
    fn write_slot(&mut self, set: usize, i: usize, data: &[f32]) -> Result<(), RuntimeError> {
        let spec = &self.specs[i];
        let Some(copy) = self.copy.as_mut() else {
            return write(&mut self.slots[set][i], data, &spec.name);
        };
        let mut host = Tensor::<f32>::new(&Allocator::default(), dims(&spec.shape))
            .map_err(ort_err("allocating a host tensor"))?;
        write(&mut host, data, &spec.name)?;
        copy.copy(&spec.shape, &host, &mut self.slots[set][i])
    }

    /// Copies the current parameters and buffers out (the model's whole `state_dict`).
    pub fn params(&mut self) -> Result<Vec<NamedTensor>, RuntimeError> {
        (0..self.num_params)
            .map(|i| {
                let data = self.read_slot(self.current, i)?;
                let s = &self.specs[i];
                Ok(NamedTensor::new(s.name.clone(), s.shape.clone(), data))
            })
            .collect()
    }

    /// Copies the current optimizer state out, in conventional (PyTorch) units.
    pub fn optimizer_state(&mut self) -> Result<Vec<NamedTensor>, RuntimeError> {
        (self.num_params..self.num_params + self.num_state)
            .map(|i| {
                let k = self.state_scales[i - self.num_params];
                let data = self.read_slot(self.current, i)?;
                let s = &self.specs[i];
                let data = data.iter().map(|x| x / k).collect();
                Ok(NamedTensor::new(s.name.clone(), s.shape.clone(), data))
            })
            .collect()
    }

    /// Copies `tensors` into the current slots `range`. State tensors are multiplied by
    /// `internal / stored` where `stored` is the scale they were saved with (1 for
    /// conventional values), so same-scale checkpoints load bit for bit.
    fn load_named(
        &mut self,
        tensors: &[NamedTensor],
        range: std::ops::Range<usize>,
        stored_scales: Option<&[f32]>,
        what: &str,
    ) -> Result<(), RuntimeError> {
        for i in range {
            let spec = &self.specs[i];
            let t = tensors
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| RuntimeError::Tensor {
                    name: spec.name.clone(),
                    detail: format!("missing from the {what} being loaded"),
                })?;
            if t.shape != spec.shape || t.data.len() != spec.numel() {
                return Err(RuntimeError::Tensor {
                    name: spec.name.clone(),
                    detail: format!(
                        "shape {:?} ({} values) does not match the model's {:?}",
                        t.shape,
                        t.data.len(),
                        spec.shape
                    ),
                });
            }
            let state_index = i.checked_sub(self.num_params);
            let internal = state_index.and_then(|j| self.state_scales.get(j)).copied();
            let stored = match (state_index, stored_scales) {
                (Some(j), Some(s)) => s.get(j).copied().unwrap_or(1.0),
                _ => 1.0,
            };
            match internal {
                Some(k) if k != stored => {
                    let scaled: Vec<f32> = t.data.iter().map(|&x| x * (k / stored)).collect();
                    self.write_slot(self.current, i, &scaled)?;
                }
                _ => self.write_slot(self.current, i, &t.data)?,
            }
        }
        Ok(())
    }

    /// Replaces all parameters (every one must be present; extra tensors are ignored).
    pub fn load_params(&mut self, params: &[NamedTensor]) -> Result<(), RuntimeError> {
        self.load_named(params, 0..self.num_params, None, "parameters")
    }

    /// Step count, parameters and optimizer state, for an exact resume: state tensors are
    /// stored as the step graph keeps them, with their scales in [`INTERNAL_SCALES`] (see
    /// [`crate::optim::OptimizerConfig::state_scales`]); use
    /// [`Trainer::optimizer_state`] for PyTorch-convention values. A loss-scaled run also
    /// stores its scale, good-step count and [`SKIPPED_STEPS`].
    pub fn state(&mut self) -> Result<Checkpoint, RuntimeError> {
        let mut tensors = self.params()?;
        for i in self.num_params..self.specs.len() {
            let data = self.read_slot(self.current, i)?;
            let s = &self.specs[i];
            tensors.push(NamedTensor::new(s.name.clone(), s.shape.clone(), data));
        }
        tensors.push(NamedTensor::new(
            INTERNAL_SCALES,
            vec![self.state_scales.len()],
            self.state_scales.clone(),
        ));
        if let Some(a) = &self.amp {
            tensors.push(NamedTensor::new(
                SKIPPED_STEPS,
                Vec::new(),
                vec![a.skipped_total as f32],
            ));
        }
        Ok(Checkpoint {
            step: self.steps_done,
            tensors,
        })
    }

    /// Restores a [`Trainer::state`] (same model and optimizer). A checkpoint without
    /// [`INTERNAL_SCALES`] is read as conventional (PyTorch) optimizer state.
    pub fn load_state(&mut self, ck: &Checkpoint) -> Result<(), RuntimeError> {
        let scales = match ck.get(INTERNAL_SCALES) {
            Some(t) if t.data.len() == self.state_scales.len() => Some(t.data.clone()),
            Some(t) => {
                return Err(RuntimeError::Tensor {
                    name: INTERNAL_SCALES.into(),
                    detail: format!(
                        "lists {} scales but the optimizer keeps {} state tensors",
                        t.data.len(),
                        self.state_scales.len()
                    ),
                });
            }
            None => None,
        };
        let skipped = match (&self.amp, ck.get(SKIPPED_STEPS)) {
            (None, _) => 0,
            (Some(_), Some(t)) => match t.data.as_slice() {
                &[n] if n >= 0.0 && n.fract() == 0.0 && (n as u64) <= ck.step => {
                    n as u64
                }
                other => {
                    return Err(RuntimeError::Tensor {
                        name: SKIPPED_STEPS.into(),
                        detail: format!(
                            "must be one whole count no larger than the checkpoint's step {}, got {other:?}",
                            ck.step
                        ),
                    })
                }
            },
            (Some(_), None) => {
                return Err(RuntimeError::Tensor {
                    name: SKIPPED_STEPS.into(),
                    detail: "missing from the checkpoint: it was not written by a loss-scaled \
                             (fp16_mixed) run, so it cannot resume one"
                        .into(),
                })
            }
        };
        let all = 0..self.specs.len();
        self.load_named(&ck.tensors, all, scales.as_deref(), "checkpoint")?;
        self.steps_done = ck.step;
        if let Some(a) = self.amp.as_mut() {
            a.skipped_total = skipped;
            a.last_skipped = false;
        }
        Ok(())
    }

    /// Loss of the current parameters on held-out pairs (no update). Requires
    /// [`Trainer::with_eval`]; the batch must equal the eval graph's.
    pub fn eval_loss(&mut self, view1: &[f32], view2: &[f32]) -> Result<f32, RuntimeError> {
        let Some(ev) = self.eval.as_mut() else {
            return Err(RuntimeError::Tensor {
                name: OUTPUT_LOSS.into(),
                detail: "no eval graph attached (call Trainer::with_eval)".into(),
            });
        };
        let expected = ev.batch * ev.view_numel;
        for (what, v) in [("held-out view 1", view1), ("held-out view 2", view2)] {
            if v.len() != expected {
                return Err(RuntimeError::Size {
                    what: what.into(),
                    expected,
                    got: v.len(),
                });
            }
        }
        let shape = dims_with_batch(ev.batch, &ev.view_shape);
        let mut inputs = param_inputs(&self.specs, &self.slots[self.current], &ev.inputs);
        let a = TensorRef::from_array_view((shape.clone(), view1))
            .map_err(ort_err("wrapping view 1"))?;
        let b = TensorRef::from_array_view((shape, view2)).map_err(ort_err("wrapping view 2"))?;
        inputs.push((INPUT_X1.into(), SessionInputValue::from(a)));
        inputs.push((INPUT_X2.into(), SessionInputValue::from(b)));
        let outputs = ev
            .session
            .run(SessionInputs::from(inputs))
            .map_err(ort_err("running the eval graph"))?;
        let (_, loss) = outputs[OUTPUT_LOSS]
            .try_extract_tensor::<f32>()
            .map_err(ort_err("reading the eval loss"))?;
        Ok(loss.first().copied().unwrap_or(f32::NAN))
    }

    /// Embeds `x` (whole rows, row-major) with the current encoder parameters, in chunks of at
    /// most `chunk` rows. Requires [`Trainer::with_encoder`].
    pub fn embed(&mut self, x: &[f32], chunk: usize) -> Result<Vec<f32>, RuntimeError> {
        let Some(enc) = self.encoder.as_mut() else {
            return Err(RuntimeError::Tensor {
                name: OUTPUT_EMBEDDING.into(),
                detail: "no encoder graph attached (call Trainer::with_encoder)".into(),
            });
        };
        let (specs, slots) = (&self.specs, &self.slots[self.current]);
        embed_in_chunks(x, chunk, &enc.view_shape, enc.embedding_dim, |xs, out| {
            let mut inputs = param_inputs(specs, slots, &enc.inputs);
            inputs.push((INPUT_X.into(), SessionInputValue::from(xs)));
            let outputs = enc
                .session
                .run(SessionInputs::from(inputs))
                .map_err(ort_err("running the encoder"))?;
            let (_, u) = outputs[OUTPUT_EMBEDDING]
                .try_extract_tensor::<f32>()
                .map_err(ort_err("reading embeddings"))?;
            out.extend_from_slice(u);
            Ok(())
        })
    }

    /// Ends ONNX Runtime profiling of the step session and returns the trace file.
    pub fn end_profiling(&mut self) -> Result<PathBuf, RuntimeError> {
        self.session
            .end_profiling()
            .map(PathBuf::from)
            .map_err(ort_err("ending profiling"))
    }
}

/// Runs a self-contained encoder graph (parameters baked in, see
/// [`crate::step::ParamSource::Baked`]), e.g. for embedding data from a checkpoint.
pub struct Embedder {
    session: Session,
    view_shape: Vec<usize>,
    embedding_dim: usize,
    device: ActiveDevice,
    warnings: Vec<String>,
}

impl Embedder {
    pub fn new(
        rt: &Runtime,
        enc: &EncoderGraph,
        opts: &SessionOptions,
    ) -> Result<Embedder, RuntimeError> {
        if !enc.params.is_empty() {
            return Err(RuntimeError::Tensor {
                name: enc.params[0].name.clone(),
                detail: "the encoder graph takes its parameters as inputs; build it with ParamSource::Baked or use Trainer::with_encoder".into(),
            });
        }
        let h = rt.session(&enc.model_bytes, opts)?;
        Ok(Embedder {
            session: h.session,
            view_shape: enc.view_shape.clone(),
            embedding_dim: enc.embedding_dim,
            device: h.device,
            warnings: h.warnings,
        })
    }

    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    /// The provider its session runs on.
    pub fn device(&self) -> ActiveDevice {
        self.device
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Embeds whole rows of `x` (row-major) in chunks of at most `chunk` rows.
    pub fn embed(&mut self, x: &[f32], chunk: usize) -> Result<Vec<f32>, RuntimeError> {
        let session = &mut self.session;
        embed_in_chunks(x, chunk, &self.view_shape, self.embedding_dim, |xs, out| {
            let outputs = session
                .run(ort::inputs![INPUT_X => xs])
                .map_err(ort_err("running the encoder"))?;
            let (_, u) = outputs[OUTPUT_EMBEDDING]
                .try_extract_tensor::<f32>()
                .map_err(ort_err("reading embeddings"))?;
            out.extend_from_slice(u);
            Ok(())
        })
    }
}

/// Feeds whole rows of `x` to an encoder `chunk` rows at a time; `run` executes one chunk
/// (with whatever other inputs its session needs) and appends the embeddings to `out`.
fn embed_in_chunks(
    x: &[f32],
    chunk: usize,
    view_shape: &[usize],
    embedding_dim: usize,
    mut run: impl FnMut(TensorRef<'_, f32>, &mut Vec<f32>) -> Result<(), RuntimeError>,
) -> Result<Vec<f32>, RuntimeError> {
    let row: usize = view_shape.iter().product();
    if row == 0 || !x.len().is_multiple_of(row) {
        return Err(RuntimeError::Size {
            what: "encoder input (a whole number of rows)".into(),
            expected: row,
            got: x.len(),
        });
    }
    let n = x.len() / row;
    let mut out = Vec::with_capacity(n * embedding_dim);
    let chunk = chunk.max(1);
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let shape = dims_with_batch(end - start, view_shape);
        let xs = TensorRef::from_array_view((shape, &x[start * row..end * row]))
            .map_err(ort_err("wrapping rows"))?;
        run(xs, &mut out)?;
        start = end;
    }
    Ok(out)
}

fn dims_with_batch(batch: usize, view: &[usize]) -> Vec<i64> {
    let mut shape = vec![batch as i64];
    shape.extend(view.iter().map(|&d| d as i64));
    shape
}

/// Borrowed views of the live tensors `indices` as named session inputs (no copies).
fn param_inputs<'a>(
    specs: &[TensorSpec],
    slots: &'a [Tensor<f32>],
    indices: &[usize],
) -> Vec<(String, SessionInputValue<'a>)> {
    indices
        .iter()
        .map(|&i| (specs[i].name.clone(), SessionInputValue::from(&slots[i])))
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal, Uniform};

    use super::*;
    use crate::loss::{infonce_estimate, LossConfig, LossKind};
    use crate::models::{
        Activation, ContrastiveModel, ConvConfig, EncoderConfig, MlpConfig, ModelConfig, PoolKind,
    };
    use crate::optim::OptimizerConfig;
    use crate::step::{build_encoder, build_eval, build_train_step, ParamSource, StepConfig};
    use crate::testutil::{run_graph, runtime, Data};

    const D: usize = 32;

    /// 8 Gaussian clusters in 32-d; a sample is a cluster point, its views add 0.1-noise.
    struct Clusters {
        centers: Vec<Vec<f32>>,
        rng: ChaCha8Rng,
    }

    impl Clusters {
        fn new(seed: u64) -> Clusters {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let centers = (0..8)
                .map(|_| {
                    (0..D)
                        .map(|_| 3.0 * Distribution::<f32>::sample(&StandardNormal, &mut rng))
                        .collect()
                })
                .collect();
            Clusters { centers, rng }
        }

        fn pairs(&mut self, n: usize) -> (Vec<f32>, Vec<f32>) {
            let pick = Uniform::new(0, self.centers.len()).expect("range");
            let (mut a, mut b) = (Vec::with_capacity(n * D), Vec::with_capacity(n * D));
            for _ in 0..n {
                let c = &self.centers[pick.sample(&mut self.rng)];
                for &cj in c.iter() {
                    let x = cj + Distribution::<f32>::sample(&StandardNormal, &mut self.rng);
                    let n1: f32 = StandardNormal.sample(&mut self.rng);
                    let n2: f32 = StandardNormal.sample(&mut self.rng);
                    a.push(x + 0.1 * n1);
                    b.push(x + 0.1 * n2);
                }
            }
            (a, b)
        }
    }

    fn small_model() -> ContrastiveModel {
        ContrastiveModel::new(&ModelConfig {
            encoder: EncoderConfig::Mlp(MlpConfig {
                dims: vec![D, 64, 32],
                activation: Activation::Relu,
            }),
            projector: Some(MlpConfig {
                dims: vec![32, 32, 16],
                activation: Activation::Relu,
            }),
        })
        .expect("valid model")
    }

    fn options(threads: usize) -> SessionOptions {
        SessionOptions {
            intra_threads: threads,
            ..SessionOptions::default()
        }
    }

    /// Trains for `steps` and returns (first-10 mean loss, last-10 mean loss, eval before,
    /// eval after, final parameters).
    fn train(seed: u64, steps: usize, stacked: bool) -> (f32, f32, f32, f32, Vec<NamedTensor>) {
        train_with(seed, steps, stacked, true)
    }

    /// [`train`] with cbound's fused kernels allowed or not ([`StepConfig::custom_kernels`]).
    fn train_with(
        seed: u64,
        steps: usize,
        stacked: bool,
        custom_kernels: bool,
    ) -> (f32, f32, f32, f32, Vec<NamedTensor>) {
        let rt = runtime();
        let model = small_model();
        let loss = LossConfig {
            kind: LossKind::InfoNce,
            temperature: 0.2,
            eps: 1e-12,
        };
        let step = build_train_step(
            &model,
            &if stacked {
                StepConfig::new(32, loss, OptimizerConfig::adam()).stacked()
            } else {
                StepConfig::new(32, loss, OptimizerConfig::adam())
            }
            .with_custom_kernels(custom_kernels),
        )
        .expect("step graph");
        let has_fused = step
            .model_bytes
            .windows(b"AdamUpdate".len())
            .any(|w| w == b"AdamUpdate");
        assert_eq!(
            has_fused, custom_kernels,
            "AdamUpdate nodes in the step graph"
        );
        let eval = build_eval(&model, 64, &loss).expect("eval graph");
        let init = model.init_params(seed).expect("init");
        let mut tr = Trainer::new(&rt, &step, &init, &options(2))
            .and_then(|t| t.with_eval(&rt, &eval))
            .expect("trainer");
        let mut data = Clusters::new(seed + 100);
        let (h1, h2) = data.pairs(64);
        let before = tr.eval_loss(&h1, &h2).expect("eval");
        let mut losses = Vec::new();
        for _ in 0..steps {
            let (a, b) = data.pairs(32);
            losses.push(tr.step(&a, &b, 3e-3).expect("step"));
        }
        let after = tr.eval_loss(&h1, &h2).expect("eval");
        let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
        (
            mean(&losses[..10]),
            mean(&losses[steps - 10..]),
            before,
            after,
            tr.params().expect("params"),
        )
    }

    #[test]
    fn training_reduces_the_loss_and_is_bitwise_reproducible() {
        let (first, last, before, after, params) = train(1, 150, false);
        eprintln!("train loss {first} -> {last}; held-out loss {before} -> {after}");
        assert!(last < 0.5 * first, "loss {first} -> {last}");
        let (est0, est1) = (
            infonce_estimate(f64::from(before), 64),
            infonce_estimate(f64::from(after), 64),
        );
        assert!(
            est1 > est0 + 1.0,
            "held-out estimate ln N - L {est0} -> {est1}"
        );
        let bits = |t: &NamedTensor| t.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (_, _, _, _, again) = train(1, 150, false);
        for (a, b) in params.iter().zip(&again) {
            assert_eq!(
                bits(a),
                bits(b),
                "parameter {} differs between identical runs",
                a.name
            );
        }
        // Stacked views feed the encoder the same [2B, d] batch without the Concat node.
        let (_, _, _, _, stacked) = train(1, 150, true);
        for (a, b) in params.iter().zip(&stacked) {
            assert_eq!(
                bits(a),
                bits(b),
                "parameter {} differs with stacked views",
                a.name
            );
        }
    }

    /// Host access through the copy sessions (the path device memory takes) gives the same
    /// bits as access in place: parameters, optimizer state and a resumed run.
    #[test]
    fn access_through_copy_sessions_matches_access_in_place() {
        let rt = runtime();
        let model = small_model();
        let loss = LossConfig::study();
        let step = build_train_step(
            &model,
            &StepConfig::new(16, loss, OptimizerConfig::adam()).stacked(),
        )
        .expect("step graph");
        let init = model.init_params(5).expect("init");
        let run = |copy_on_host: bool| {
            let mut tr =
                Trainer::build(&rt, &step, &init, &options(1), copy_on_host).expect("trainer");
            assert_eq!(tr.memory(), SlotMemory::Host);
            assert_eq!(tr.copy.is_some(), copy_on_host);
            let mut data = Clusters::new(9);
            for _ in 0..5 {
                let (a, b) = data.pairs(16);
                tr.step(&a, &b, 1e-3).expect("step");
            }
            let ck = tr.state().expect("state");
            // Resume a fresh trainer from it and take one more step.
            let mut again =
                Trainer::build(&rt, &step, &init, &options(1), copy_on_host).expect("trainer");
            again.load_state(&ck).expect("load");
            let (a, b) = data.pairs(16);
            let l = again.step(&a, &b, 1e-3).expect("step");
            (
                ck,
                tr.optimizer_state().expect("optimizer state"),
                again.params().expect("params"),
                l,
            )
        };
        let bits = |ts: &[NamedTensor]| -> Vec<Vec<u32>> {
            ts.iter()
                .map(|t| t.data.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        let (ck_a, opt_a, resumed_a, loss_a) = run(false);
        let (ck_b, opt_b, resumed_b, loss_b) = run(true);
        assert_eq!(bits(&ck_a.tensors), bits(&ck_b.tensors));
        assert_eq!(bits(&opt_a), bits(&opt_b));
        assert_eq!(bits(&resumed_a), bits(&resumed_b));
        assert_eq!(loss_a.to_bits(), loss_b.to_bits());
        assert!(opt_a.iter().any(|t| t.data.iter().any(|&x| x != 0.0)));
    }

    /// The graph for the CUDA provider (the ai.onnx Adam chain instead of the CPU-only fused
    /// kernel) trains to the same bits; run here on the CPU provider.
    #[test]
    fn the_step_graph_without_custom_kernels_trains_bitwise_alike() {
        let bits = |t: &NamedTensor| t.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (_, _, _, _, fused) = train_with(3, 20, true, true);
        let (_, _, _, _, chain) = train_with(3, 20, true, false);
        assert_eq!(fused.len(), chain.len());
        for (a, b) in fused.iter().zip(&chain) {
            assert_eq!(bits(a), bits(b), "parameter {} differs", a.name);
        }
    }

    #[test]
    fn non_finite_loss_names_the_step_and_keeps_the_model() {
        let rt = runtime();
        let model = small_model();
        let step = build_train_step(
            &model,
            &StepConfig::new(4, LossConfig::study(), OptimizerConfig::adam()),
        )
        .expect("step graph");
        let init = model.init_params(5).expect("init");
        let mut tr = Trainer::new(&rt, &step, &init, &options(1)).expect("trainer");
        let mut data = Clusters::new(9);
        let (a, b) = data.pairs(4);
        tr.step(&a, &b, 1e-3).expect("finite step");
        let before = tr.state().expect("state");
        let mut bad = a.clone();
        bad[3] = f32::NAN;
        match tr.step(&bad, &b, 1e-3) {
            Err(RuntimeError::NonFiniteLoss { step, .. }) => assert_eq!(step, 2),
            other => panic!("expected NonFiniteLoss, got {other:?}"),
        }
        assert_eq!(
            tr.state().expect("state"),
            before,
            "a failed step must not change the model"
        );
        assert!(tr.step(&a, &b, 1e-3).is_ok());
        assert_eq!(tr.steps_done(), 2);
        // Wrong batch sizes are reported, not truncated.
        assert!(matches!(
            tr.step(&a[..8], &b, 1e-3),
            Err(RuntimeError::Size { .. })
        ));
    }

    /// A ResNet with BatchNorm: the running statistics change every step, are saved in the
    /// checkpoint and restored, so a resumed run ends bitwise where the uninterrupted one does;
    /// the encoder fed from the live tensors and the exported one agree.
    #[test]
    fn batchnorm_model_resumes_bitwise_with_its_running_statistics(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::models::{ResNetConfig, ResNetDepth, Stem};
        let rt = runtime();
        let model = ContrastiveModel::new(&ModelConfig {
            encoder: EncoderConfig::ResNet(ResNetConfig {
                input: [2, 6, 6],
                depth: ResNetDepth::R18,
                stem: Stem::Cifar,
                width: 1.0 / 32.0,
            }),
            projector: Some(MlpConfig {
                dims: vec![16, 16, 8],
                activation: Activation::Relu,
            }),
        })?;
        let cfg = StepConfig::new(4, LossConfig::study(), OptimizerConfig::adamw()).stacked();
        let step = build_train_step(&model, &cfg)?;
        let n_buf = model.buffer_specs().len();
        assert_eq!(step.buffers.len(), n_buf);
        assert!(n_buf > 0);
        let init = model.init_params(2)?;
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let batches: Vec<(Vec<f32>, Vec<f32>)> = (0..4)
            .map(|_| {
                let mut v = || -> Vec<f32> {
                    (0..4 * 72)
                        .map(|_| StandardNormal.sample(&mut rng))
                        .collect()
                };
                (v(), v())
            })
            .collect();
        let mut a = Trainer::new(&rt, &step, &init, &options(1))?;
        let buffers_of = |tr: &mut Trainer| -> Vec<NamedTensor> {
            tr.params()
                .expect("params")
                .into_iter()
                .filter(|t| t.name.contains("running_"))
                .collect()
        };
        let before = buffers_of(&mut a);
        a.step(&batches[0].0, &batches[0].1, 1e-3)?;
        a.step(&batches[1].0, &batches[1].1, 1e-3)?;
        assert_eq!(before.len(), n_buf);
        assert_ne!(before, buffers_of(&mut a), "running statistics must move");
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bn.ckpt");
        a.state().expect("state").save(&path)?;
        for (x, y) in &batches[2..] {
            a.step(x, y, 1e-3)?;
        }
        let mut b = Trainer::new(&rt, &step, &model.init_params(99)?, &options(1))?;
        b.load_state(&Checkpoint::load(&path)?)?;
        for (x, y) in &batches[2..] {
            b.step(x, y, 1e-3)?;
        }
        assert_eq!(a.state().expect("state"), b.state().expect("state"));

        // Encoder-only inputs are not a prefix of the step's tensors (the projector's come
        // between the encoder's parameters and its buffers): the live and baked encoders agree.
        let enc = build_encoder(&model, ParamSource::Inputs)?;
        let mut b = b.with_encoder(&rt, &enc)?;
        let live = b.embed(&batches[0].0, 4)?;
        let baked = build_encoder(&model, ParamSource::Baked(&b.params().expect("params")))?;
        let mut emb = Embedder::new(&rt, &baked, &options(1))?;
        // Not bitwise: with the statistics baked in, ONNX Runtime folds BatchNorm into the
        // convolutions, which rounds differently.
        for (u, w) in live.iter().zip(&emb.embed(&batches[0].0, 4)?) {
            assert!((u - w).abs() <= 1e-5 * (1.0 + u.abs()), "{u} vs {w}");
        }
        Ok(())
    }

    #[test]
    fn checkpoint_resume_matches_uninterrupted_training() -> Result<(), Box<dyn std::error::Error>>
    {
        let rt = runtime();
        let model = small_model();
        let step = build_train_step(
            &model,
            &StepConfig::new(8, LossConfig::study(), OptimizerConfig::adamw()),
        )?;
        let init = model.init_params(2)?;
        let mut data = Clusters::new(3);
        let batches: Vec<_> = (0..6).map(|_| data.pairs(8)).collect();
        let mut a = Trainer::new(&rt, &step, &init, &options(1))?;
        for (x, y) in &batches[..3] {
            a.step(x, y, 1e-3)?;
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.ckpt");
        a.state().expect("state").save(&path)?;
        for (x, y) in &batches[3..] {
            a.step(x, y, 1e-3)?;
        }
        let mut b = Trainer::new(&rt, &step, &model.init_params(99)?, &options(1))?;
        b.load_state(&Checkpoint::load(&path)?)?;
        assert_eq!(b.steps_done(), 3);
        for (x, y) in &batches[3..] {
            b.step(x, y, 1e-3)?;
        }
        assert_eq!(a.state().expect("state"), b.state().expect("state"));

        // Conventional (PyTorch-unit) optimizer state loads too; after one Adam step from zero
        // state m = (1 - b1) g and v = (1 - b2) g^2.
        let mut fresh = Trainer::new(&rt, &step, &init, &options(1))?;
        fresh.step(&batches[0].0, &batches[0].1, 1e-3)?;
        let conv = fresh.optimizer_state().expect("optimizer state");
        for pair in conv.chunks(2) {
            for (m, v) in pair[0].data.iter().zip(&pair[1].data) {
                let (g_m, g_v2) = (m / 0.1, v / 0.001);
                assert!(
                    (g_m * g_m - g_v2).abs() <= 1e-3 * g_v2.abs() + 1e-12,
                    "{m} {v}"
                );
            }
        }
        let mut ck = fresh.state().expect("state");
        ck.tensors.retain(|t| t.name != INTERNAL_SCALES);
        for t in ck.tensors.iter_mut() {
            if let Some(c) = conv.iter().find(|c| c.name == t.name) {
                t.data = c.data.clone();
            }
        }
        let mut resumed = Trainer::new(&rt, &step, &init, &options(1))?;
        resumed.load_state(&ck)?;
        let (x, y) = &batches[1];
        let (l1, l2) = (fresh.step(x, y, 1e-3)?, resumed.step(x, y, 1e-3)?);
        assert_eq!(l1, l2);
        for (p, q) in fresh
            .params()
            .expect("params")
            .iter()
            .zip(&resumed.params().expect("params"))
        {
            for (u, w) in p.data.iter().zip(&q.data) {
                assert!(
                    (u - w).abs() <= 1e-6 * (1.0 + u.abs()),
                    "{}: {u} vs {w}",
                    p.name
                );
            }
        }
        // Loading the wrong shapes is refused.
        let mut wrong = a.params().expect("params");
        wrong[0].shape = vec![1, 1];
        assert!(matches!(
            b.load_params(&wrong),
            Err(RuntimeError::Tensor { .. })
        ));
        Ok(())
    }

    #[test]
    fn embeddings_match_the_baked_encoder() -> Result<(), Box<dyn std::error::Error>> {
        let rt = runtime();
        let model = small_model();
        let step = build_train_step(
            &model,
            &StepConfig::new(8, LossConfig::study(), OptimizerConfig::adam()),
        )?;
        let enc = build_encoder(&model, ParamSource::Inputs)?;
        let mut tr = Trainer::new(&rt, &step, &model.init_params(4)?, &options(1))?
            .with_encoder(&rt, &enc)?;
        let mut data = Clusters::new(5);
        let (x, y) = data.pairs(8);
        tr.step(&x, &y, 1e-2)?;
        let (rows, _) = data.pairs(11);
        let u_chunked = tr.embed(&rows, 4)?;
        let u_whole = tr.embed(&rows, 100)?;
        assert_eq!(u_chunked, u_whole);
        assert_eq!(u_whole.len(), 11 * 32);

        // The same parameters baked into a standalone encoder graph give the same embeddings.
        let params = tr.params().expect("params");
        let baked = build_encoder(&model, ParamSource::Baked(&params))?;
        let mut embedder = Embedder::new(&rt, &baked, &options(1))?;
        assert_eq!(embedder.embed(&rows, 3)?, u_whole);
        assert!(Embedder::new(&rt, &enc, &options(1)).is_err());
        Ok(())
    }

    #[test]
    fn conv_encoder_trains() -> Result<(), Box<dyn std::error::Error>> {
        let rt = runtime();
        let model = ContrastiveModel::new(&ModelConfig {
            encoder: EncoderConfig::Conv(ConvConfig {
                channels: vec![4, 8],
                out_dim: 16,
                pool: PoolKind::Max,
                ..ConvConfig::small([1, 8, 8])
            }),
            projector: None,
        })?;
        let step = build_train_step(
            &model,
            &StepConfig::new(
                16,
                LossConfig {
                    kind: LossKind::NtXent,
                    temperature: 0.5,
                    eps: 1e-12,
                },
                OptimizerConfig::Sgd {
                    momentum: 0.9,
                    weight_decay: 0.0,
                    nesterov: false,
                },
            ),
        )?;
        let mut tr = Trainer::new(&rt, &step, &model.init_params(6)?, &options(1))?;
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        // Fixed images; views differ by small noise.
        let images: Vec<f32> = (0..16 * 64)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let mut losses = Vec::new();
        for _ in 0..40 {
            let noisy = |rng: &mut ChaCha8Rng| -> Vec<f32> {
                images
                    .iter()
                    .map(|&p| p + 0.05 * Distribution::<f32>::sample(&StandardNormal, rng))
                    .collect()
            };
            let (a, b) = (noisy(&mut rng), noisy(&mut rng));
            losses.push(tr.step(&a, &b, 0.05)?);
        }
        assert!(losses[39] < losses[0], "{losses:?}");
        Ok(())
    }

    #[test]
    fn trainer_graph_gradients_match_an_f64_reference_step() {
        // The f32 step graph's first update equals an f64 evaluation of the same graph.
        let model = small_model();
        let cfg = StepConfig::new(
            4,
            LossConfig::study(),
            OptimizerConfig::Sgd {
                momentum: 0.0,
                weight_decay: 0.0,
                nesterov: false,
            },
        );
        let (g64, spec) =
            crate::step::build_train_step_graph(&model, &cfg, crate::graph::DType::F64)
                .expect("f64 graph");
        let init = model.init_params(11).expect("init");
        let mut data = Clusters::new(12);
        let (a, b) = data.pairs(4);
        let mut feeds = Vec::new();
        for t in &init {
            let v = g64.find(&t.name).expect("param input");
            feeds.push((v, Data::F64(t.data.iter().map(|&x| f64::from(x)).collect())));
        }
        let f64s = |v: &[f32]| Data::F64(v.iter().map(|&x| f64::from(x)).collect());
        for (name, d) in [
            ("x1", f64s(&a)),
            ("x2", f64s(&b)),
            ("step", Data::F64(vec![1.0])),
            ("lr", Data::F64(vec![0.1])),
        ] {
            feeds.push((g64.find(name).expect("input"), d));
        }
        let reference = run_graph(&g64, &feeds);

        let rt = runtime();
        let step = build_train_step(&model, &cfg).expect("f32 graph");
        let mut tr = Trainer::new(&rt, &step, &init, &options(1)).expect("trainer");
        let loss = tr.step(&a, &b, 0.1).expect("step");
        assert!((f64::from(loss) - reference["loss"][0]).abs() < 1e-4 * reference["loss"][0].abs());
        for (p, s) in tr.params().expect("params").iter().zip(&spec.params) {
            let r = &reference[&next_name(&s.name)];
            for (x, y) in p.data.iter().zip(r) {
                assert!(
                    (f64::from(*x) - y).abs() < 1e-5 + 1e-4 * y.abs(),
                    "{}: {x} vs {y}",
                    s.name
                );
            }
        }
    }

    /// The memories the sets and the step's inputs are allocated in, as ONNX Runtime is
    /// told them: the sets in the CUDA provider's device memory of the instance's own device,
    /// the views in pinned host memory (readable from the host); on CPU both plain host memory.
    #[test]
    fn memory_infos_name_device_memory_for_the_sets_and_pinned_memory_for_the_views() {
        let _rt = runtime();
        let sets = SlotMemory::Cuda { device_id: 1 }
            .memory_info()
            .expect("device memory info");
        assert_eq!(sets.allocation_device(), AllocationDevice::CUDA);
        assert_eq!(sets.device_id(), 1);
        assert!(!sets.is_cpu_accessible());
        let views = SlotMemory::Cuda { device_id: 1 }
            .staging_memory_info()
            .expect("pinned memory info")
            .expect("pinned on CUDA");
        assert_eq!(views.allocation_device(), AllocationDevice::CUDA_PINNED);
        assert_eq!(views.memory_type(), MemoryType::CPUInput);
        assert!(views.is_cpu_accessible());
        let host = SlotMemory::Host.memory_info().expect("host memory info");
        assert_eq!(host.allocation_device(), AllocationDevice::CPU);
        assert!(host.is_cpu_accessible());
        assert!(SlotMemory::Host
            .staging_memory_info()
            .expect("host")
            .is_none());
        assert_eq!(
            SlotMemory::of(ActiveDevice::Cuda, 3),
            SlotMemory::Cuda { device_id: 3 }
        );
        assert_eq!(SlotMemory::of(ActiveDevice::Cpu, 3), SlotMemory::Host);
    }

    /// The fp16 mixed-precision step as the trainer drives it (the step graph runs on ONNX
    /// Runtime's CPU provider here; pipelines allow it only on CUDA): `steps` Adam steps from
    /// `init_scale`, returning each step's (loss, skipped) and the trainer.
    fn train_fp16(
        init_scale: f32,
        growth_interval: u32,
        steps: usize,
        seed: u64,
    ) -> (Vec<(f32, bool)>, Trainer) {
        let (rt, model) = (runtime(), small_model());
        let mixed = crate::step::MixedPrecision {
            compute: crate::graph::DType::F16,
            loss_scaling: Some(LossScaling {
                init_scale,
                growth_interval,
            }),
        };
        let cfg = StepConfig::new(16, LossConfig::study(), OptimizerConfig::adam())
            .with_mixed_precision(Some(mixed));
        let step = build_train_step(&model, &cfg).expect("mixed step graph");
        let init = model.init_params(seed).expect("init");
        let mut tr = Trainer::new(&rt, &step, &init, &options(1)).expect("trainer");
        let mut data = Clusters::new(seed + 7);
        let mut out = Vec::new();
        for _ in 0..steps {
            let (a, b) = data.pairs(16);
            let loss = tr.step(&a, &b, 3e-3).expect("step");
            out.push((loss, tr.last_step_skipped()));
        }
        (out, tr)
    }

    #[test]
    fn fp16_training_learns_keeps_the_scale_and_is_bitwise_reproducible() {
        let (losses, mut tr) = train_fp16(65536.0, 2000, 60, 3);
        assert_eq!(tr.skipped_steps(), 0, "{losses:?}");
        assert_eq!(tr.loss_scale().expect("scale"), Some(65536.0));
        let mean = |s: &[(f32, bool)]| s.iter().map(|l| l.0).sum::<f32>() / s.len() as f32;
        let (first, last) = (mean(&losses[..10]), mean(&losses[50..]));
        assert!(last < 0.7 * first, "fp16 loss {first} -> {last}");
        let (_, mut again) = train_fp16(65536.0, 2000, 60, 3);
        let bits = |t: &NamedTensor| t.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (a, b) in tr
            .params()
            .expect("params")
            .iter()
            .zip(&again.params().expect("params"))
        {
            assert_eq!(bits(a), bits(b), "{} differs between two fp16 runs", a.name);
        }
    }

    #[test]
    fn a_skipped_fp16_step_changes_no_parameter_and_is_no_optimizer_step() {
        // 2^40 overflows f16 in the backward pass: steps are skipped, halving the scale each
        // time, until it fits (PyTorch's GradScaler does the same at a run's start).
        let (losses, mut tr) = train_fp16(2f32.powi(40), 2000, 40, 5);
        let skipped = tr.skipped_steps();
        let k = losses.iter().take_while(|l| l.1).count();
        assert!(k >= 1 && skipped as usize == k, "skips {losses:?}");
        assert!(losses[k..].iter().all(|l| !l.1), "a late skip: {losses:?}");
        let scale = 2f32.powi(40 - k as i32);
        assert_eq!(tr.loss_scale().expect("scale"), Some(scale));
        assert_eq!(tr.steps_done(), 40);

        // After the k skips the model is its initialisation, Adam's moments are zero and the
        // scale is 2^(40 - k): a fresh trainer started at that scale and fed batches k.. must
        // end bit for bit where this one did. It would not if the skips had advanced Adam's
        // step count (its bias correction depends on it).
        let (rt, model) = (runtime(), small_model());
        let mixed = crate::step::MixedPrecision {
            compute: crate::graph::DType::F16,
            loss_scaling: Some(LossScaling {
                init_scale: scale,
                growth_interval: 2000,
            }),
        };
        let cfg = StepConfig::new(16, LossConfig::study(), OptimizerConfig::adam())
            .with_mixed_precision(Some(mixed));
        let step = build_train_step(&model, &cfg).expect("mixed step graph");
        let init = model.init_params(5).expect("init");
        let mut fresh = Trainer::new(&rt, &step, &init, &options(1)).expect("trainer");
        let mut data = Clusters::new(5 + 7);
        for (i, l) in losses.iter().enumerate() {
            let (a, b) = data.pairs(16);
            if i >= k {
                let loss = fresh.step(&a, &b, 3e-3).expect("step");
                assert_eq!(loss.to_bits(), l.0.to_bits(), "loss of batch {i}");
            }
        }
        assert_eq!(fresh.skipped_steps(), 0);
        let bits = |t: &NamedTensor| t.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (a, b) in tr
            .params()
            .expect("params")
            .iter()
            .zip(&fresh.params().expect("params"))
        {
            assert_eq!(bits(a), bits(b), "{}", a.name);
        }
    }

    /// The loss scale and good-step count live with the parameters, on the device under
    /// CUDA: through the copy sessions (the device path) a run with skips ends as in place.
    #[test]
    fn fp16_state_through_the_copy_sessions_matches_in_place() {
        let (losses, mut in_place) = train_fp16(2f32.powi(24), 3, 12, 6);
        let (rt, model) = (runtime(), small_model());
        let mixed = crate::step::MixedPrecision {
            compute: crate::graph::DType::F16,
            loss_scaling: Some(LossScaling {
                init_scale: 2f32.powi(24),
                growth_interval: 3,
            }),
        };
        let cfg = StepConfig::new(16, LossConfig::study(), OptimizerConfig::adam())
            .with_mixed_precision(Some(mixed));
        let step = build_train_step(&model, &cfg).expect("mixed step graph");
        let init = model.init_params(6).expect("init");
        let mut copied = Trainer::build(&rt, &step, &init, &options(1), true).expect("trainer");
        let mut data = Clusters::new(6 + 7);
        for (i, l) in losses.iter().enumerate() {
            let (a, b) = data.pairs(16);
            let loss = copied.step(&a, &b, 3e-3).expect("step");
            assert_eq!(
                (loss.to_bits(), copied.last_step_skipped()),
                (l.0.to_bits(), l.1),
                "step {i}"
            );
        }
        assert!(copied.skipped_steps() >= 1, "{losses:?}");
        assert_eq!(
            copied.loss_scale().expect("scale"),
            in_place.loss_scale().expect("scale")
        );
        let a = copied.state().expect("state");
        let b = in_place.state().expect("state");
        assert_eq!(a, b);
    }

    #[test]
    fn fp16_checkpoints_resume_bitwise_with_scale_and_skips() {
        // Growth every 4 steps from 2^20 makes the run skip, grow and skip again.
        let steps = 30;
        let (losses, mut whole) = train_fp16(2f32.powi(20), 4, steps, 9);
        assert!(whole.skipped_steps() >= 1, "{losses:?}");
        let (rt, model) = (runtime(), small_model());
        let mixed = crate::step::MixedPrecision {
            compute: crate::graph::DType::F16,
            loss_scaling: Some(LossScaling {
                init_scale: 2f32.powi(20),
                growth_interval: 4,
            }),
        };
        let cfg = StepConfig::new(16, LossConfig::study(), OptimizerConfig::adam())
            .with_mixed_precision(Some(mixed));
        let step = build_train_step(&model, &cfg).expect("mixed step graph");
        let init = model.init_params(9).expect("init");
        let mut data = Clusters::new(9 + 7);
        let batches: Vec<_> = (0..steps).map(|_| data.pairs(16)).collect();
        let half = steps / 2;
        let mut first = Trainer::new(&rt, &step, &init, &options(1)).expect("trainer");
        for (a, b) in &batches[..half] {
            first.step(a, b, 3e-3).expect("step");
        }
        let ck = first.state().expect("state");
        assert!(ck.get(SKIPPED_STEPS).is_some() && ck.get(INPUT_LOSS_SCALE).is_some());
        let other = model.init_params(99).expect("init");
        let mut resumed = Trainer::new(&rt, &step, &other, &options(1)).expect("trainer");
        resumed.load_state(&ck).expect("resume");
        assert_eq!(resumed.skipped_steps(), first.skipped_steps());
        for (i, (a, b)) in batches.iter().enumerate().skip(half) {
            let loss = resumed.step(a, b, 3e-3).expect("step");
            assert_eq!(loss.to_bits(), losses[i].0.to_bits(), "loss of batch {i}");
        }
        assert_eq!(resumed.skipped_steps(), whole.skipped_steps());
        assert_eq!(
            resumed.loss_scale().expect("scale"),
            whole.loss_scale().expect("scale")
        );
        let bits = |t: &NamedTensor| t.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (a, b) in whole
            .params()
            .expect("params")
            .iter()
            .zip(&resumed.params().expect("params"))
        {
            assert_eq!(bits(a), bits(b), "{}", a.name);
        }

        // A checkpoint of an fp32 run cannot resume a loss-scaled one.
        let mut fp32 = ck.clone();
        fp32.tensors.retain(|t| t.name != SKIPPED_STEPS);
        let err = resumed.load_state(&fp32).expect_err("no skip count");
        assert!(err.to_string().contains(SKIPPED_STEPS), "{err}");
    }

    /// bf16 steps run on CUDA only: ONNX Runtime 1.31's CPU provider has no bfloat16 Gemm
    /// or MatMul, so a trainer cannot even be built there. This pins that fact (and with it
    /// why the stage refuses mixed precision on CPU); when a future ONNX Runtime adds the
    /// kernels, this test fails and should become a bf16 training test.
    #[test]
    fn bf16_steps_need_kernels_the_cpu_provider_lacks() {
        let (rt, model) = (runtime(), small_model());
        let cfg = StepConfig::new(16, LossConfig::study(), OptimizerConfig::adam())
            .with_mixed_precision(Some(crate::step::MixedPrecision::bf16()));
        let step = build_train_step(&model, &cfg).expect("bf16 step graph");
        assert!(step.mixed.is_some_and(|m| m.loss_scaling.is_none()));
        let init = model.init_params(4).expect("init");
        let err = match Trainer::new(&rt, &step, &init, &options(1)) {
            Ok(_) => panic!("the CPU provider now runs bf16 steps: test training here instead"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("Could not find an implementation"), "{err}");
    }
}
