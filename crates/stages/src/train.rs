//! `train`: fits a contrastive encoder through our own ONNX training-step graph, executed by
//! ONNX Runtime (see [`cbound_onnx`]).
//!
//! Views are made fresh every epoch from the `views` spec with the shared augmentation code,
//! batches are shuffled from the instance seed, and after every epoch a checkpoint
//! (parameters, optimizer state, the curve so far) goes to `.checkpoint/` in the instance's
//! staging directory, so a killed run resumes from its last finished epoch and ends with
//! bitwise the same parameters. Outputs: `training_curve.parquet`, `train_step.onnx`,
//! `encoder.onnx` (f, parameters baked in), `projection.onnx` (g o f, where the critic
//! scores), `params.ckpt`, `model.json`, and with `snapshot_every` both graphs per snapshot.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, UInt64Array};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use cbound_data::augment::make_views_into;
use cbound_data::parquet_io::read_dataset;
use cbound_data::views::{check_views, view_ops, OpSpec, ViewSpec};
use cbound_data::SampleShape;
use cbound_engine::artifact::{read_json, write_atomic, write_json};
use cbound_engine::config::Resources;
use cbound_engine::stage::{Need, ParamError, Stage, StageContext, StageError, StageOutput};
use cbound_onnx::loss::{LossConfig, LossKind};
use cbound_onnx::models::{
    Activation, ContrastiveModel, ConvConfig, EncoderConfig, MlpConfig, ModelConfig, PoolKind,
    ResNetConfig, ResNetDepth, Stem,
};
use cbound_onnx::optim::{LrSchedule, OptimizerConfig};
use cbound_onnx::runtime::{self, Device, LibrarySearch, Precision, SessionOptions};
use cbound_onnx::step::{
    build_encoder, build_eval, build_projection, build_train_step, MixedPrecision, ParamSource,
    StepConfig,
};
use cbound_onnx::trainer::SlotMemory;
use cbound_onnx::{Checkpoint, RuntimeError, Trainer};
use cbound_tables::model::{snapshot_file, ModelInfo};
use cbound_tables::{training_curve, Builder};

fn study_hidden() -> Vec<usize> {
    vec![512, 512]
}
fn d128() -> usize {
    128
}
fn conv_channels() -> Vec<usize> {
    vec![32, 64]
}
fn three() -> usize {
    3
}
fn two() -> usize {
    2
}

/// The encoder f; its input size follows the data.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderSpec {
    /// Fully connected: input -> hidden... -> output.
    Mlp {
        #[serde(default = "study_hidden")]
        hidden: Vec<usize>,
        #[serde(default = "d128")]
        output: usize,
        #[serde(default)]
        activation: Activation,
    },
    /// Conv -> activation -> pool blocks, then a linear layer (images only).
    Conv {
        #[serde(default = "conv_channels")]
        channels: Vec<usize>,
        #[serde(default = "three")]
        kernel: usize,
        /// `max` or `average`.
        #[serde(default)]
        pool: PoolKind,
        #[serde(default = "two")]
        pool_size: usize,
        #[serde(default = "d128")]
        output: usize,
        #[serde(default)]
        activation: Activation,
    },
    /// torchvision's ResNet-18 (BasicBlocks [2, 2, 2, 2]) with BatchNorm, without `fc`: the
    /// output is the pooled last feature map, `512 * width` wide (images only, any size).
    Resnet18 {
        /// `cifar` (3x3 conv, stride 1, no max-pool) or `imagenet` (7x7/2 conv + 3x3/2 max-pool).
        #[serde(default)]
        stem: Stem,
        /// Multiplier of the base widths 64, 128, 256, 512 (rounded, at least 1 channel).
        #[serde(default = "one")]
        width: f64,
    },
    /// ResNet-34 (BasicBlocks [3, 4, 6, 3]); otherwise as `resnet18`.
    Resnet34 {
        #[serde(default)]
        stem: Stem,
        #[serde(default = "one")]
        width: f64,
    },
}

fn one() -> f64 {
    1.0
}

/// Largest accepted ResNet width multiplier (16 gives 8192 channels in the last stage).
const MAX_RESNET_WIDTH: f64 = 16.0;

impl Default for EncoderSpec {
    fn default() -> Self {
        EncoderSpec::Mlp {
            hidden: study_hidden(),
            output: d128(),
            activation: Activation::Relu,
        }
    }
}

fn study_projector() -> Option<Vec<usize>> {
    Some(vec![512, 128])
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[serde(default)]
    pub encoder: EncoderSpec,
    /// Projector g widths after the encoder output (hidden..., output); null for none.
    #[serde(default = "study_projector")]
    pub projector: Option<Vec<usize>>,
    #[serde(default)]
    pub projector_activation: Activation,
}

impl ModelSpec {
    /// Every layer width and size at least 1 (the data's shape is checked when it is read).
    fn check(&self) -> Vec<ParamError> {
        let mut out = Vec::new();
        let mut ranges = Vec::new();
        let mut positive = |path: &[&str], what: &str, v: usize| {
            if v == 0 {
                out.push(ParamError::at(
                    path,
                    format!("{what} must be at least 1, got 0"),
                ));
            }
        };
        match &self.encoder {
            EncoderSpec::Mlp { hidden, output, .. } => {
                for (i, w) in hidden.iter().enumerate() {
                    let i = i.to_string();
                    positive(&["model", "encoder", "hidden", &i], "a layer width", *w);
                }
                positive(&["model", "encoder", "output"], "the output width", *output);
            }
            EncoderSpec::Conv {
                channels,
                kernel,
                pool_size,
                output,
                ..
            } => {
                for (i, c) in channels.iter().enumerate() {
                    let i = i.to_string();
                    positive(&["model", "encoder", "channels", &i], "a channel count", *c);
                }
                positive(&["model", "encoder", "kernel"], "the kernel size", *kernel);
                positive(
                    &["model", "encoder", "pool_size"],
                    "the pool size",
                    *pool_size,
                );
                positive(&["model", "encoder", "output"], "the output width", *output);
            }
            EncoderSpec::Resnet18 { width, .. } | EncoderSpec::Resnet34 { width, .. } => {
                if !(width.is_finite() && *width > 0.0 && *width <= MAX_RESNET_WIDTH) {
                    ranges.push(ParamError::at(
                        &["model", "encoder", "width"],
                        format!(
                            "the width multiplier must be in (0, {MAX_RESNET_WIDTH}] (1 = torchvision's 64-512 channels, 0.25 = 16-128), got {width}"
                        ),
                    ));
                }
            }
        }
        for (i, w) in self.projector.iter().flatten().enumerate() {
            let i = i.to_string();
            positive(&["model", "projector", &i], "a projector width", *w);
        }
        out.extend(ranges);
        out
    }
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            encoder: EncoderSpec::default(),
            projector: study_projector(),
            projector_activation: Activation::Relu,
        }
    }
}

fn default_temperature() -> f64 {
    0.1
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossSpec {
    #[serde(default)]
    pub kind: LossKind,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

impl Default for LossSpec {
    fn default() -> Self {
        LossSpec {
            kind: LossKind::InfoNce,
            temperature: 0.1,
        }
    }
}

fn default_lr() -> f64 {
    1e-3
}
fn default_momentum() -> f64 {
    0.9
}
/// SimCLR's and solo-learn's trust coefficient.
fn default_eta() -> f64 {
    1e-3
}
/// SimCLR's CIFAR-10 weight decay.
fn default_lars_decay() -> f64 {
    1e-6
}
fn yes() -> bool {
    true
}

/// The optimizer, picked by `kind`: `adam` (the default), `adamw`, `sgd` or `lars`; each
/// kind takes only its own settings, so `momentum` on Adam is an unknown key rather than
/// silently ignored.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
// `remote = "Self"` makes the derive an inherent function, so the trait impl below can fill
// in the default `kind` first (an internally tagged enum has no default variant).
#[serde(remote = "Self")]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[schemars(transform = adam_needs_no_kind)]
pub enum OptimizerSpec {
    /// Adam (betas 0.9, 0.999; eps 1e-8); `weight_decay` is L2 added to the gradient.
    Adam {
        #[serde(default = "default_lr")]
        lr: f64,
        #[serde(default)]
        weight_decay: f64,
        /// Exempt biases and normalisation parameters from weight decay (a parameter group
        /// with `weight_decay: 0`, as the SimCLR and solo-learn recipes do).
        #[serde(default)]
        exclude_bias_and_norm: bool,
        /// Learning-rate schedule: `constant`, `warmup` (linear) or `cosine` (warm-up then cosine to 0).
        #[serde(default)]
        schedule: ScheduleName,
        #[serde(default)]
        warmup_epochs: u64,
    },
    /// AdamW: Adam with decoupled weight decay.
    Adamw {
        #[serde(default = "default_lr")]
        lr: f64,
        #[serde(default)]
        weight_decay: f64,
        /// Exempt biases and normalisation parameters from weight decay (a parameter group
        /// with `weight_decay: 0`, as the SimCLR and solo-learn recipes do).
        #[serde(default)]
        exclude_bias_and_norm: bool,
        /// Learning-rate schedule: `constant`, `warmup` (linear) or `cosine` (warm-up then cosine to 0).
        #[serde(default)]
        schedule: ScheduleName,
        #[serde(default)]
        warmup_epochs: u64,
    },
    /// SGD with heavy-ball momentum.
    Sgd {
        #[serde(default = "default_lr")]
        lr: f64,
        #[serde(default)]
        weight_decay: f64,
        /// Exempt biases and normalisation parameters from weight decay (a parameter group
        /// with `weight_decay: 0`, as the SimCLR and solo-learn recipes do).
        #[serde(default)]
        exclude_bias_and_norm: bool,
        /// In [0, 1); 0 keeps no momentum buffer.
        #[serde(default = "default_momentum")]
        momentum: f64,
        /// Learning-rate schedule: `constant`, `warmup` (linear) or `cosine` (warm-up then cosine to 0).
        #[serde(default)]
        schedule: ScheduleName,
        #[serde(default)]
        warmup_epochs: u64,
    },
    /// LARS as in the SimCLR reference: per tensor, `g' = g + weight_decay w`, trust ratio
    /// `r = eta ||w|| / ||g'||` (1 where a norm is 0), `v = momentum v + lr r g'`, `w -= v`.
    /// No default learning rate: SimCLR uses `0.3 x batch_size / 256`.
    Lars {
        lr: f64,
        /// In [0, 1); 0 keeps no momentum buffer.
        #[serde(default = "default_momentum")]
        momentum: f64,
        /// Trust coefficient (> 0).
        #[serde(default = "default_eta")]
        eta: f64,
        #[serde(default = "default_lars_decay")]
        weight_decay: f64,
        /// Exempt biases and normalisation parameters from weight decay and from the trust
        /// ratio (SimCLR's and solo-learn's setting).
        #[serde(default = "yes")]
        exclude_bias_and_norm: bool,
        /// Learning-rate schedule: `constant`, `warmup` (linear) or `cosine` (warm-up then cosine to 0).
        #[serde(default)]
        schedule: ScheduleName,
        #[serde(default)]
        warmup_epochs: u64,
    },
}

/// The schema of [`OptimizerSpec`] as the deserialiser reads it: `kind` may be left out,
/// meaning Adam.
fn adam_needs_no_kind(schema: &mut schemars::Schema) {
    let Some(variants) = schema.get_mut("oneOf").and_then(|v| v.as_array_mut()) else {
        return;
    };
    for variant in variants {
        let is_adam = variant.pointer("/properties/kind/const") == Some(&"adam".into());
        if let (true, Some(required)) = (
            is_adam,
            variant.get_mut("required").and_then(|r| r.as_array_mut()),
        ) {
            required.retain(|k| k != "kind");
        }
    }
}

impl<'de> Deserialize<'de> for OptimizerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(d)?;
        if let Some(map) = value.as_object_mut() {
            map.entry("kind").or_insert_with(|| "adam".into());
        }
        OptimizerSpec::deserialize(value).map_err(serde::de::Error::custom)
    }
}

impl OptimizerSpec {
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerSpec::Adam { lr, .. }
            | OptimizerSpec::Adamw { lr, .. }
            | OptimizerSpec::Sgd { lr, .. }
            | OptimizerSpec::Lars { lr, .. } => *lr,
        }
    }

    pub fn weight_decay(&self) -> f64 {
        match self {
            OptimizerSpec::Adam { weight_decay, .. }
            | OptimizerSpec::Adamw { weight_decay, .. }
            | OptimizerSpec::Sgd { weight_decay, .. }
            | OptimizerSpec::Lars { weight_decay, .. } => *weight_decay,
        }
    }

    /// Whether biases and normalisation parameters are exempt from weight decay (and LARS's
    /// trust ratio).
    pub fn exclude_bias_and_norm(&self) -> bool {
        match self {
            OptimizerSpec::Adam {
                exclude_bias_and_norm,
                ..
            }
            | OptimizerSpec::Adamw {
                exclude_bias_and_norm,
                ..
            }
            | OptimizerSpec::Sgd {
                exclude_bias_and_norm,
                ..
            }
            | OptimizerSpec::Lars {
                exclude_bias_and_norm,
                ..
            } => *exclude_bias_and_norm,
        }
    }

    /// The schedule and its warm-up epochs.
    pub fn schedule(&self) -> (ScheduleName, u64) {
        match self {
            OptimizerSpec::Adam {
                schedule,
                warmup_epochs,
                ..
            }
            | OptimizerSpec::Adamw {
                schedule,
                warmup_epochs,
                ..
            }
            | OptimizerSpec::Sgd {
                schedule,
                warmup_epochs,
                ..
            }
            | OptimizerSpec::Lars {
                schedule,
                warmup_epochs,
                ..
            } => (*schedule, *warmup_epochs),
        }
    }

    /// The step graph's optimizer for these settings.
    fn config(&self) -> OptimizerConfig {
        match *self {
            OptimizerSpec::Adam { weight_decay, .. } => OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
            },
            OptimizerSpec::Adamw { weight_decay, .. } => OptimizerConfig::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
            },
            OptimizerSpec::Sgd {
                momentum,
                weight_decay,
                ..
            } => OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                nesterov: false,
            },
            OptimizerSpec::Lars {
                momentum,
                eta,
                weight_decay,
                ..
            } => OptimizerConfig::Lars {
                momentum,
                eta,
                weight_decay,
            },
        }
    }

    fn check(&self) -> Vec<ParamError> {
        let mut out = Vec::new();
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            out.push(ParamError::at(
                &["optimizer", "lr"],
                format!("the learning rate must be finite and > 0, got {lr}"),
            ));
        }
        let wd = self.weight_decay();
        if !(wd.is_finite() && wd >= 0.0) {
            out.push(ParamError::at(
                &["optimizer", "weight_decay"],
                format!("weight_decay must be finite and >= 0, got {wd}"),
            ));
        }
        if let OptimizerSpec::Sgd { momentum, .. } | OptimizerSpec::Lars { momentum, .. } = self {
            if !(0.0..1.0).contains(momentum) {
                out.push(ParamError::at(
                    &["optimizer", "momentum"],
                    format!("momentum must be in [0, 1), got {momentum}"),
                ));
            }
        }
        if let OptimizerSpec::Lars { eta, .. } = self {
            if !(eta.is_finite() && *eta > 0.0) {
                out.push(ParamError::at(
                    &["optimizer", "eta"],
                    format!(
                        "the LARS trust coefficient eta must be finite and > 0 (SimCLR: 0.001), got {eta}"
                    ),
                ));
            }
        }
        out
    }
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec::Adam {
            lr: default_lr(),
            weight_decay: 0.0,
            exclude_bias_and_norm: false,
            schedule: ScheduleName::Constant,
            warmup_epochs: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleName {
    #[default]
    Constant,
    Warmup,
    Cosine,
}

fn default_epochs() -> u64 {
    10
}
fn default_batch() -> usize {
    256
}
fn default_holdout() -> f64 {
    0.1
}
fn study_views() -> ViewSpec {
    vec![
        vec![OpSpec::GaussianNoise { std: 0.1 }],
        vec![OpSpec::GaussianNoise { std: 0.1 }],
    ]
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    #[serde(default)]
    pub model: ModelSpec,
    #[serde(default)]
    pub loss: LossSpec,
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    #[serde(default = "default_epochs")]
    pub epochs: u64,
    /// N: pairs per batch (the InfoNCE estimate is capped at log N).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Two views per sample, made fresh each epoch (default: the study's x + 0.1 N(0, 1) twice).
    #[serde(default = "study_views")]
    pub views: ViewSpec,
    /// Fraction of samples held out for the InfoNCE estimate log N - L.
    #[serde(default = "default_holdout")]
    pub holdout: f64,
    #[serde(default)]
    pub device: Device,
    /// `fp32` (default, the only choice on CPU), `fp16_mixed` (f16 products, f32 master
    /// weights, dynamic loss scaling; skipped steps counted in the training curve) or
    /// `bf16_mixed` (bf16 products, no loss scaling; MLP encoders only). CUDA only.
    #[serde(default)]
    pub precision: Precision,
    /// Also save the encoder every this many epochs (and before training, as epoch 0) as
    /// `encoder_epoch<E>.onnx`, for `embed` with `snapshots: true`; 0: only the final encoder.
    #[serde(default)]
    pub snapshot_every: u64,
}

/// One row of `training_curve.parquet`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurveRow {
    pub epoch: u64,
    pub loss: f64,
    pub heldout_loss: f64,
    /// log N - held-out loss: a lower bound on I(X;Y) in expectation, capped at log N.
    pub heldout_infonce: f64,
    pub lr: f64,
    pub samples_per_s: f64,
    pub seconds: f64,
    /// fp16_mixed: steps of this epoch skipped for non-finite gradients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u64>,
    /// fp16_mixed: the loss scale after the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
}

/// The environment variable that overrides when the next batch's views are made during the
/// current step (`on`, `off`; unset: on when the step runs on a device).
pub const VIEW_PREFETCH_ENV: &str = "CBOUND_VIEW_PREFETCH";

/// Whether to make the next batch's views while the current step runs. On a device the CPU
/// is otherwise idle during a step, so overlapping hides the views' cost; on the CPU the step
/// already uses the cores it was given, so views are made between steps. Either way the
/// views and everything trained from them are the same bits (each sample's views are a
/// function of the seed, the epoch and its index).
fn view_prefetch(memory: SlotMemory) -> Result<bool, StageError> {
    match std::env::var(VIEW_PREFETCH_ENV).ok().as_deref() {
        None | Some("") => Ok(memory != SlotMemory::Host),
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(StageError::Params(format!(
            "{VIEW_PREFETCH_ENV}={other:?}: expected `on` or `off` (or unset: on for a device)"
        ))),
    }
}

/// Runs `step` on every batch in order with its views from `make`. With `prefetch`, a second
/// thread makes batch s + 1's views while `step` runs on batch s (one batch ahead, buffers
/// recycled); an error from either side stops both and is returned. Without, `views` is
/// reused for every batch. The order of calls to `step`, and what it sees, are the same.
fn for_each_batch<'a, I, M, S>(
    prefetch: bool,
    batches: I,
    views: &mut Vec<Vec<f32>>,
    make: M,
    mut step: S,
) -> Result<(), StageError>
where
    I: Iterator<Item = &'a [usize]> + Send,
    M: Fn(&[usize], &mut Vec<Vec<f32>>) -> Result<(), StageError> + Sync,
    S: FnMut(usize, &[Vec<f32>]) -> Result<(), StageError>,
{
    if !prefetch {
        for (s, batch) in batches.enumerate() {
            make(batch, views)?;
            step(s, views)?;
        }
        return Ok(());
    }
    type Made = Result<Vec<Vec<f32>>, StageError>;
    std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Made>(1);
        let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<Vec<f32>>>();
        let make = &make;
        scope.spawn(move || {
            for batch in batches {
                let mut buf = spare_rx.try_recv().unwrap_or_default();
                let made = make(batch, &mut buf).map(|()| buf);
                let failed = made.is_err();
                // A closed channel means the consumer stopped (an error): stop too.
                if ready_tx.send(made).is_err() || failed {
                    return;
                }
            }
        });
        for (s, made) in ready_rx.iter().enumerate() {
            let buf = made?;
            step(s, &buf)?;
            // The producer may have finished; then the buffer is simply dropped.
            let _ = spare_tx.send(buf);
        }
        Ok(())
    })
}

fn rt_err(e: RuntimeError) -> StageError {
    match e {
        RuntimeError::NonFiniteLoss { step, loss } => StageError::Failed(format!(
            "loss became {loss} at step {step}; lower optimizer.lr, raise loss.temperature, or check the data for NaN/Inf"
        )),
        other => StageError::Failed(other.to_string()),
    }
}

fn model_config(spec: &ModelSpec, input: SampleShape) -> Result<ModelConfig, StageError> {
    let (encoder, out) = match &spec.encoder {
        EncoderSpec::Mlp {
            hidden,
            output,
            activation,
        } => {
            let mut dims = vec![input.numel()];
            dims.extend(hidden);
            dims.push(*output);
            (
                EncoderConfig::Mlp(MlpConfig {
                    dims,
                    activation: *activation,
                }),
                *output,
            )
        }
        EncoderSpec::Conv {
            channels,
            kernel,
            pool,
            pool_size,
            output,
            activation,
        } => {
            let SampleShape::Image {
                channels: c,
                height,
                width,
            } = input
            else {
                return Err(StageError::Params(format!(
                    "a conv encoder needs images; the views are a {input}"
                )));
            };
            (
                EncoderConfig::Conv(ConvConfig {
                    input: [c, height, width],
                    channels: channels.clone(),
                    kernel: *kernel,
                    pool: *pool,
                    pool_size: *pool_size,
                    out_dim: *output,
                    activation: *activation,
                }),
                *output,
            )
        }
        EncoderSpec::Resnet18 { stem, width } | EncoderSpec::Resnet34 { stem, width } => {
            let depth = match &spec.encoder {
                EncoderSpec::Resnet34 { .. } => ResNetDepth::R34,
                _ => ResNetDepth::R18,
            };
            let SampleShape::Image {
                channels: c,
                height,
                width: w,
            } = input
            else {
                return Err(StageError::Params(format!(
                    "a resnet encoder needs images; the views are a {input}"
                )));
            };
            let cfg = ResNetConfig {
                input: [c, height, w],
                depth,
                stem: *stem,
                width: *width,
            };
            let out = cfg.widths()[3];
            (EncoderConfig::ResNet(cfg), out)
        }
    };
    let projector = spec.projector.as_ref().filter(|p| !p.is_empty()).map(|p| {
        let mut dims = vec![out];
        dims.extend(p);
        MlpConfig {
            dims,
            activation: spec.projector_activation,
        }
    });
    Ok(ModelConfig { encoder, projector })
}

/// ONNX Runtime, found the way `cbound doctor` reports it.
pub fn load_runtime() -> Result<Arc<runtime::Runtime>, StageError> {
    runtime::runtime(&LibrarySearch::default()).map_err(|e| StageError::Failed(e.to_string()))
}

fn curve_table(rows: &[CurveRow], batch: usize) -> Result<RecordBatch, StageError> {
    let f = |get: &dyn Fn(&CurveRow) -> f64| -> ArrayRef {
        Arc::new(rows.iter().map(get).collect::<Float64Array>())
    };
    Builder::new(&training_curve::TABLE)
        .column(
            &training_curve::EPOCH,
            Arc::new(rows.iter().map(|r| r.epoch).collect::<UInt64Array>()),
        )
        .column(&training_curve::LOSS, f(&|r| r.loss))
        .column(&training_curve::HELDOUT_LOSS, f(&|r| r.heldout_loss))
        .column(&training_curve::HELDOUT_INFONCE, f(&|r| r.heldout_infonce))
        .column(
            &training_curve::N,
            Arc::new(rows.iter().map(|_| batch as u64).collect::<UInt64Array>()),
        )
        .column(&training_curve::LR, f(&|r| r.lr))
        .optional_column(
            &training_curve::SKIPPED_STEPS,
            rows.iter().all(|r| r.skipped_steps.is_some()).then(|| {
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.skipped_steps.unwrap_or(0)),
                )) as ArrayRef
            }),
        )
        .optional_column(
            &training_curve::LOSS_SCALE,
            rows.iter().all(|r| r.loss_scale.is_some()).then(|| {
                Arc::new(Float64Array::from_iter_values(
                    rows.iter().map(|r| r.loss_scale.unwrap_or(f64::NAN)),
                )) as ArrayRef
            }),
        )
        .build()
        .map_err(|e| StageError::Failed(format!("building training curve: {e}")))
}

/// `training_curve.timing.parquet`: the wall-clock side of the curve, kept out of the outputs
/// digest (see [`cbound_engine::artifact::is_timing_output`]) so a resumed or re-run training with the
/// same result gives downstream stages the same cache keys.
fn timing_table(rows: &[CurveRow]) -> Result<RecordBatch, StageError> {
    let f = |get: &dyn Fn(&CurveRow) -> f64| -> ArrayRef {
        Arc::new(rows.iter().map(get).collect::<Float64Array>())
    };
    Builder::new(&training_curve::TIMING_TABLE)
        .column(
            &training_curve::TIMING_EPOCH,
            Arc::new(rows.iter().map(|r| r.epoch).collect::<UInt64Array>()),
        )
        .column(
            &training_curve::TIMING_SAMPLES_PER_S,
            f(&|r| r.samples_per_s),
        )
        .column(&training_curve::TIMING_SECONDS, f(&|r| r.seconds))
        .build()
        .map_err(|e| StageError::Failed(format!("building training timing: {e}")))
}

fn ckpt_io(e: impl std::fmt::Display) -> StageError {
    StageError::Failed(format!("checkpoint: {e}"))
}

pub struct Train;

impl Stage for Train {
    type Params = TrainParams;
    const KIND: &'static str = "train";
    // 5: views with grayscale, contrast or saturation use torchvision's 0.2989 luma (was
    // 0.299), so a cached model trained on such views must not be reused.
    // 6: convolution gradients are built differently (flipped-kernel Conv for dX, one GEMM
    // per kernel offset for dW), which changes conv and ResNet encoders' weights at ~1e-7.
    // 7: dW is summed over chunks of the batch (cbound's Im2Col patches, one Gemm per chunk),
    // a different summation order, so conv and ResNet weights change in their last bits.
    // 8: on the CPU, convolutions with 16+ channels (8+ with AVX2) at 8x8 or larger run
    // through ONNX Runtime's NCHWc kernels, another summation order again.
    const VERSION: u32 = 8;
    const SUMMARY: &'static str =
        "Train a contrastive encoder (InfoNCE / NT-Xent) through an ONNX training graph on ONNX Runtime; resumable per epoch.";
    const EXAMPLE: &'static str = r#"train:
  kind: train
  inputs: [data]
  params:
    model: {encoder: {kind: mlp, hidden: [512, 512], output: 128}, projector: [512, 128]}
    loss: {kind: infonce, temperature: 0.1}
    optimizer: {kind: adam, lr: 0.001}
    epochs: 10
    batch_size: 256
    views: [[{op: gaussian_noise, std: 0.1}], [{op: gaussian_noise, std: 0.1}]]
  matrix: {loss.temperature: [0.05, 0.1, 0.2, 0.5]}
  resources: {cpus: 2}
"#;
    const WRITES: Option<&'static [&'static str]> = Some(&[
        training_curve::FILE,
        "train_step.onnx",
        "encoder.onnx",
        "projection.onnx",
        "params.ckpt",
        "model.json",
    ]);

    fn needs(_p: &TrainParams) -> Vec<Need> {
        vec![Need::only("dataset.parquet")]
    }

    fn resources(_p: &TrainParams) -> Resources {
        Resources {
            cpus: 2,
            ..Resources::default()
        }
    }

    fn check(p: &TrainParams) -> Vec<ParamError> {
        let mut out = check_views(&p.views, Some(2));
        if !(0.0..1.0).contains(&p.holdout) {
            out.push(ParamError::at(
                &["holdout"],
                format!("holdout must be in [0, 1), got {}", p.holdout),
            ));
        }
        if p.batch_size < 2 {
            out.push(ParamError::at(
                &["batch_size"],
                format!(
                    "batch_size must be at least 2 (each positive pair needs a negative), got {}",
                    p.batch_size
                ),
            ));
        }
        let t = p.loss.temperature;
        if !(t.is_finite() && t > 0.0) {
            out.push(ParamError::at(
                &["loss", "temperature"],
                format!("the temperature must be finite and > 0, got {t}"),
            ));
        }
        out.extend(p.optimizer.check());
        out.extend(p.model.check());
        if let Some(why) = p.precision.refusal(p.device) {
            out.push(ParamError::at(&["precision"], why));
        }
        if p.precision == Precision::Bf16Mixed
            && !matches!(p.model.encoder, EncoderSpec::Mlp { .. })
        {
            out.push(ParamError::at(
                &["precision"],
                "bf16_mixed is for MLP encoders: ONNX opset 18, which the step graphs use, has no bfloat16 convolution (from opset 22); use fp16_mixed or fp32",
            ));
        }
        out
    }

    fn run(p: &TrainParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        // Validation refuses this already; kept here so no path trains in fp32 while the
        // pipeline says otherwise.
        if let Some(why) = p.precision.refusal(p.device) {
            return Err(StageError::Params(why));
        }
        let [input] = ctx.inputs else {
            return Err(StageError::Params(format!(
                "train reads one dataset (a load stage), got {} inputs",
                ctx.inputs.len()
            )));
        };
        let (ds, normalisation) = read_dataset(&input.file("dataset.parquet")?)
            .map_err(|e| StageError::Input(e.to_string()))?;
        let (ops, view_shape) =
            view_ops(&p.views, ds.sample_shape()).map_err(StageError::Params)?;
        let b = p.batch_size;
        let mut order: Vec<usize> = (0..ds.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(ctx.seed));
        let n_hold = ((ds.len() as f64) * p.holdout).round() as usize;
        let (held, train) = order.split_at(n_hold);
        if train.len() < b || (p.holdout > 0.0 && held.len() < b) {
            return Err(StageError::Params(format!(
                "batch_size {b} needs at least {b} training and {b} held-out samples; the data has {} ({} held out at holdout {})",
                ds.len(),
                held.len(),
                p.holdout
            )));
        }
        let cfg = model_config(&p.model, view_shape)?;
        let model = ContrastiveModel::new(&cfg).map_err(|e| StageError::Params(e.to_string()))?;
        let loss = LossConfig {
            kind: p.loss.kind,
            temperature: p.loss.temperature,
            ..LossConfig::study()
        };
        let optimizer = p.optimizer.config();
        let steps_per_epoch = (train.len() / b) as u64;
        let total = steps_per_epoch * p.epochs;
        let (schedule, warmup_epochs) = p.optimizer.schedule();
        let warmup = warmup_epochs * steps_per_epoch;
        let lr = p.optimizer.lr();
        let schedule = match schedule {
            ScheduleName::Constant => LrSchedule::Constant { lr },
            ScheduleName::Warmup => LrSchedule::LinearWarmup { lr, warmup },
            ScheduleName::Cosine => LrSchedule::WarmupCosine {
                lr,
                warmup,
                total,
                min_lr: 0.0,
            },
        };
        let rt = load_runtime()?;
        // The fused Adam kernel is CPU-only: a graph that may run on CUDA (`cuda`, `auto`)
        // gets the ai.onnx chain instead, so the update stays on the device (same f32 bits).
        // On the CPU, convolutions run through ONNX Runtime's NCHWc kernels where this CPU
        // has them and they gain (ResNet-18's step 1.11x faster on an AVX-512 Xeon).
        let cpu = p.device == Device::Cpu;
        let step_cfg = StepConfig::new(b, loss, optimizer)
            .stacked()
            .excluding_bias_and_norm(p.optimizer.exclude_bias_and_norm())
            .with_custom_kernels(cpu)
            .with_blocked_convs(if cpu { rt.conv_block() } else { None })
            .with_mixed_precision(MixedPrecision::of(p.precision));
        let step_graph =
            build_train_step(&model, &step_cfg).map_err(|e| StageError::Params(e.to_string()))?;
        let eval_graph =
            build_eval(&model, b, &loss).map_err(|e| StageError::Params(e.to_string()))?;
        write_atomic(
            &ctx.out_dir.join("train_step.onnx"),
            &step_graph.model_bytes,
        )?;

        let opts = SessionOptions {
            device: p.device,
            // Its own GPU when it asked for one (resources.gpus), so instances never share,
            // unless it asked for a share: then its arena keeps to that share of the memory.
            device_id: ctx.device_id(),
            gpu_memory_share: ctx.gpu_share,
            intra_threads: ctx.threads.max(1),
            ..SessionOptions::default()
        };
        let init = model
            .init_params(ctx.seed)
            .map_err(|e| StageError::Params(e.to_string()))?;
        let mut trainer = Trainer::new(&rt, &step_graph, &init, &opts)
            .and_then(|t| t.with_eval(&rt, &eval_graph))
            .map_err(rt_err)?;
        for w in trainer.warnings() {
            tracing::warn!("{}: {w}", ctx.instance);
        }
        if let Some(why) = p.precision.refusal_on(trainer.device()) {
            return Err(StageError::Params(why));
        }
        let loss_scaled = trainer.loss_scale().map_err(rt_err)?.is_some();
        let prefetch = view_prefetch(trainer.memory())?;

        // Resume from the last committed epoch, if a previous attempt got that far.
        let ckpt_dir = ctx.out_dir.join(".checkpoint");
        std::fs::create_dir_all(&ckpt_dir).map_err(|e| StageError::Io {
            context: format!("creating {}", ckpt_dir.display()),
            source: e,
        })?;
        let mut manifest = match Manifest::load(&ckpt_dir) {
            Some((m, state, saved)) => {
                if let Some(ck) = state {
                    trainer.load_state(&ck).map_err(rt_err)?;
                }
                tracing::info!("{}: resuming after epoch {}", ctx.instance, m.epochs_done);
                let mut m = m;
                m.curve_rows = saved;
                m
            }
            None => Manifest::default(),
        };
        manifest.remove_strays(&ckpt_dir);
        if p.snapshot_every > 0 && manifest.epochs_done == 0 && manifest.snapshots.is_empty() {
            save_snapshot(&ckpt_dir, &model, &mut trainer, 0)?;
            manifest.snapshots.push(0);
            manifest.commit(&ckpt_dir)?;
        }
        let mut curve = std::mem::take(&mut manifest.curve_rows);
        let mut views: Vec<Vec<f32>> = Vec::new();
        let held_seed = ctx.seed ^ 0x6865_6c64;
        for epoch in curve.len() as u64..p.epochs {
            let clock = Instant::now();
            let mut order = train.to_vec();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(
                ctx.seed.wrapping_add(epoch + 1),
            ));
            let mut loss_sum = 0.0;
            let skipped_before = trainer.skipped_steps();
            let mut lr = p.optimizer.lr();
            let seed = ctx.seed;
            let make = |batch: &[usize], views: &mut Vec<Vec<f32>>| {
                make_views_into(&ds, batch, &ops, seed, epoch, &normalisation, views)
                    .map_err(|e| StageError::Failed(e.to_string()))
            };
            for_each_batch(
                prefetch,
                order.chunks_exact(b),
                &mut views,
                make,
                |s, views| {
                    ctx.check_cancelled()?;
                    lr = schedule.lr_at(trainer.steps_done());
                    loss_sum += trainer
                        .step(&views[0], &views[1], lr as f32)
                        .map_err(rt_err)? as f64;
                    if s % 10 == 0 {
                        ctx.progress(
                            epoch * steps_per_epoch + s as u64,
                            total,
                            format!("epoch {}/{}", epoch + 1, p.epochs),
                        );
                    }
                    Ok(())
                },
            )?;
            let train_secs = clock.elapsed().as_secs_f64();
            // Held-out InfoNCE with views drawn from their own stream (fixed across epochs).
            let mut held_sum = 0.0;
            let mut held_batches = 0;
            for batch in held.chunks_exact(b) {
                make_views_into(&ds, batch, &ops, held_seed, 0, &normalisation, &mut views)
                    .map_err(|e| StageError::Failed(e.to_string()))?;
                held_sum += trainer.eval_loss(&views[0], &views[1]).map_err(rt_err)? as f64;
                held_batches += 1;
            }
            let held_loss = if held_batches > 0 {
                held_sum / held_batches as f64
            } else {
                f64::NAN
            };
            curve.push(CurveRow {
                epoch: epoch + 1,
                loss: loss_sum / steps_per_epoch.max(1) as f64,
                heldout_loss: held_loss,
                heldout_infonce: (b as f64).ln() - held_loss,
                lr,
                samples_per_s: (steps_per_epoch as usize * b) as f64 / train_secs,
                seconds: clock.elapsed().as_secs_f64(),
                skipped_steps: loss_scaled.then(|| trainer.skipped_steps() - skipped_before),
                loss_scale: trainer.loss_scale().map_err(rt_err)?.map(f64::from),
            });
            // One epoch commits as a unit: its state, curve and snapshot files are written
            // under names of their own, then the manifest naming them is renamed into place.
            // A kill before that rename resumes from the previous epoch, after it from this
            // one; never from a mix.
            let done = epoch + 1;
            let previous = (manifest.state.clone(), manifest.curve.clone());
            manifest.epochs_done = done;
            manifest.state = Some(format!("state-{done}.ckpt"));
            manifest.curve = Some(format!("curve-{done}.json"));
            trainer
                .state()
                .map_err(rt_err)?
                .save(&ckpt_dir.join(format!("state-{done}.ckpt")))
                .map_err(ckpt_io)?;
            write_json(&ckpt_dir.join(format!("curve-{done}.json")), &curve)?;
            if p.snapshot_every > 0 && (done % p.snapshot_every == 0 || done == p.epochs) {
                save_snapshot(&ckpt_dir, &model, &mut trainer, done)?;
                manifest.snapshots.push(done);
            }
            cbound_core::failpoint::hit("train.epoch_written");
            manifest.commit(&ckpt_dir)?;
            cbound_core::failpoint::hit("train.epoch_committed");
            for old in [previous.0, previous.1].into_iter().flatten() {
                let _ = std::fs::remove_file(ckpt_dir.join(old));
            }
        }
        // The snapshots become outputs only now, copied (not moved) so that a kill during
        // this final phase leaves the checkpoint whole and a rerun repeats it identically.
        for &e in &manifest.snapshots {
            for graph in ["encoder", "projection"] {
                let name = snapshot_file(graph, e);
                let bytes = std::fs::read(ckpt_dir.join(&name)).map_err(|err| StageError::Io {
                    context: format!("reading snapshot {name}"),
                    source: err,
                })?;
                write_atomic(&ctx.out_dir.join(&name), &bytes)?;
            }
        }

        let params = trainer.params().map_err(rt_err)?;
        let encoder = build_encoder(&model, ParamSource::Baked(&params))
            .map_err(|e| StageError::Failed(e.to_string()))?;
        write_atomic(&ctx.out_dir.join("encoder.onnx"), &encoder.model_bytes)?;
        let projection = build_projection(&model, ParamSource::Baked(&params))
            .map_err(|e| StageError::Failed(e.to_string()))?;
        write_atomic(
            &ctx.out_dir.join("projection.onnx"),
            &projection.model_bytes,
        )?;
        Checkpoint {
            step: trainer.steps_done(),
            tensors: params.clone(),
        }
        .save(&ctx.out_dir.join("params.ckpt"))
        .map_err(ckpt_io)?;
        write_json(
            &ctx.out_dir.join("model.json"),
            &ModelInfo {
                view_shape: encoder.view_shape.clone(),
                embedding_dim: encoder.embedding_dim,
                projection_dim: Some(projection.embedding_dim),
                // Trainable parameters only (not BatchNorm running statistics), as PyTorch counts.
                params: model
                    .param_specs()
                    .iter()
                    .map(|p| p.shape.iter().product::<usize>())
                    .sum(),
                steps: trainer.steps_done(),
            },
        )?;
        ctx.write_result_table(training_curve::TABLE.name, &curve_table(&curve, b)?)?;
        ctx.write_table(training_curve::TIMING_TABLE.name, &timing_table(&curve)?)?;
        let last = curve.last().cloned();
        let mut out = StageOutput::default()
            .metric("epochs", p.epochs as f64)
            .metric("steps", trainer.steps_done() as f64)
            .metric("log_n", (b as f64).ln())
            .fact("execution_provider", trainer.device().as_str())
            .fact("onnxruntime", rt.version());
        if let Some(l) = last {
            out = out
                .metric("final_loss", l.loss)
                .metric("heldout_infonce", l.heldout_infonce)
                .metric("samples_per_s", l.samples_per_s);
        }
        Ok(out)
    }
}

/// Writes the encoder and projection as they are after `epoch` epochs into the checkpoint
/// directory `dir`; the manifest that lists them commits them with their epoch.
fn save_snapshot(
    dir: &Path,
    model: &ContrastiveModel,
    trainer: &mut Trainer,
    epoch: u64,
) -> Result<(), StageError> {
    let params = trainer.params().map_err(rt_err)?;
    let encoder = build_encoder(model, ParamSource::Baked(&params))
        .map_err(|e| StageError::Failed(e.to_string()))?;
    write_atomic(
        &dir.join(snapshot_file("encoder", epoch)),
        &encoder.model_bytes,
    )?;
    let projection = build_projection(model, ParamSource::Baked(&params))
        .map_err(|e| StageError::Failed(e.to_string()))?;
    write_atomic(
        &dir.join(snapshot_file("projection", epoch)),
        &projection.model_bytes,
    )?;
    Ok(())
}

/// The last committed epoch of a training attempt (`.checkpoint/manifest.json`): the files
/// holding its optimizer state and curve, and every snapshot written so far. Files the
/// manifest does not name are leftovers of an interrupted epoch.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    epochs_done: u64,
    /// None before the first epoch: training starts from the seeded initial parameters.
    state: Option<String>,
    curve: Option<String>,
    snapshots: Vec<u64>,
    #[serde(skip)]
    curve_rows: Vec<CurveRow>,
}

impl Manifest {
    const FILE: &'static str = "manifest.json";

    /// The committed manifest with its state and curve, or None when there is none or its
    /// files do not read back (then training restarts, which gives the same result).
    fn load(dir: &Path) -> Option<(Manifest, Option<Checkpoint>, Vec<CurveRow>)> {
        let m: Manifest = read_json(&dir.join(Self::FILE)).ok()?;
        let state = match &m.state {
            Some(f) => Some(Checkpoint::load(&dir.join(f)).ok()?),
            None => None,
        };
        let curve = match &m.curve {
            Some(f) => read_json::<Vec<CurveRow>>(&dir.join(f)).ok()?,
            None => Vec::new(),
        };
        let snapshots_present = m.snapshots.iter().all(|&e| {
            ["encoder", "projection"]
                .iter()
                .all(|g| dir.join(snapshot_file(g, e)).is_file())
        });
        (curve.len() as u64 == m.epochs_done && snapshots_present).then_some((m, state, curve))
    }

    fn commit(&self, dir: &Path) -> Result<(), StageError> {
        write_json(&dir.join(Self::FILE), self)?;
        Ok(())
    }

    /// Removes what an interrupted epoch left behind, so it cannot be mistaken for committed.
    fn remove_strays(&self, dir: &Path) {
        let mut keep: Vec<String> = vec![Self::FILE.into()];
        keep.extend(self.state.clone());
        keep.extend(self.curve.clone());
        for &e in &self.snapshots {
            keep.push(snapshot_file("encoder", e));
            keep.push(snapshot_file("projection", e));
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: u64, amp: Option<(u64, f64)>) -> CurveRow {
        CurveRow {
            epoch,
            loss: 4.0,
            heldout_loss: 4.1,
            heldout_infonce: 1.4,
            lr: 1e-3,
            samples_per_s: 100.0,
            seconds: 1.0,
            skipped_steps: amp.map(|a| a.0),
            loss_scale: amp.map(|a| a.1),
        }
    }

    /// Both ways of making views feed `step` the same batches in the same order, and an error
    /// on either side ends the loop with it.
    #[test]
    fn batches_come_in_order_with_or_without_prefetch() {
        let order: Vec<usize> = (0..23).collect();
        let make = |batch: &[usize], views: &mut Vec<Vec<f32>>| {
            *views = vec![
                batch.iter().map(|&i| i as f32).collect(),
                vec![batch[0] as f32],
            ];
            Ok(())
        };
        let mut seen = [Vec::new(), Vec::new()];
        for (k, prefetch) in [false, true].into_iter().enumerate() {
            let mut views = Vec::new();
            for_each_batch(prefetch, order.chunks_exact(4), &mut views, make, |s, v| {
                seen[k].push((s, v.to_vec()));
                Ok(())
            })
            .expect("no error");
        }
        assert_eq!(seen[0].len(), 5);
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[1][4].1[0], vec![16.0, 17.0, 18.0, 19.0]);

        for prefetch in [false, true] {
            let failing_make = |batch: &[usize], views: &mut Vec<Vec<f32>>| {
                if batch.contains(&9) {
                    return Err(StageError::Failed("bad view at 9".into()));
                }
                make(batch, views)
            };
            let mut steps = 0;
            let err = for_each_batch(
                prefetch,
                order.chunks_exact(4),
                &mut Vec::new(),
                failing_make,
                |_, _| {
                    steps += 1;
                    Ok(())
                },
            )
            .expect_err("make fails");
            assert!(err.to_string().contains("bad view at 9"), "{err}");
            assert_eq!(steps, 2, "batches before the bad one were stepped");

            let mut steps = 0;
            let err = for_each_batch(
                prefetch,
                order.chunks_exact(4),
                &mut Vec::new(),
                make,
                |s, _| {
                    steps += 1;
                    if s == 1 {
                        return Err(StageError::Failed("step 1 failed".into()));
                    }
                    Ok(())
                },
            )
            .expect_err("step fails");
            assert!(err.to_string().contains("step 1 failed"), "{err}");
            assert_eq!(steps, 2);
        }
    }

    #[test]
    fn the_curve_has_loss_scaling_columns_only_when_loss_scaled() -> Result<(), StageError> {
        let fp32 = curve_table(&[row(1, None), row(2, None)], 8)?;
        let names: Vec<String> = fp32
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "epoch",
                "loss",
                "heldout_loss",
                "heldout_infonce",
                "n",
                "lr"
            ]
        );
        let fp16 = curve_table(&[row(1, Some((3, 8192.0))), row(2, Some((0, 16384.0)))], 8)?;
        let skipped = fp16
            .column_by_name("skipped_steps")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>().cloned())
            .map(|a| a.values().to_vec());
        assert_eq!(skipped, Some(vec![3, 0]));
        let scale = fp16
            .column_by_name("loss_scale")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
            .map(|a| a.values().to_vec());
        assert_eq!(scale, Some(vec![8192.0, 16384.0]));
        // The checkpointed curve of an fp32 run keeps its JSON (no null fields), so resumes
        // of runs made before these columns existed read back the same rows.
        let json =
            serde_json::to_string(&row(1, None)).map_err(|e| StageError::Failed(e.to_string()))?;
        assert!(
            !json.contains("skipped") && !json.contains("loss_scale"),
            "{json}"
        );
        Ok(())
    }
}
