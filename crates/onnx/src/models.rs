//! Encoders and projectors for contrastive training, emitted into a [`Graph`].
//!
//! Parameters follow PyTorch's layouts and `nn.Sequential` naming so that checkpoints and the
//! PyTorch reference line up: a linear layer's weight is `[out, in]` (`prefix.{i}.weight`,
//! `prefix.{i}.bias`) where `i` is the module index inside the sequential stack (activations and
//! pools take indices too). Initialisation is PyTorch's default for `nn.Linear`/`nn.Conv2d`,
//! i.e. Kaiming-uniform with `a = sqrt(5)`: weights and biases uniform in `±1/sqrt(fan_in)`,
//! drawn in parameter order from one `ChaCha8Rng` seeded by the caller.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use super::checkpoint::NamedTensor;
use super::graph::{Graph, GraphResult, ValueId};

/// Nonlinearity between layers; written `relu`, `gelu`, `tanh` in pipelines.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    /// Tanh approximation `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    Gelu,
    Tanh,
}

impl Activation {
    pub fn parse(s: &str) -> Option<Activation> {
        match s.to_ascii_lowercase().as_str() {
            "relu" => Some(Activation::Relu),
            "gelu" => Some(Activation::Gelu),
            "tanh" => Some(Activation::Tanh),
            _ => None,
        }
    }

    /// Emits the activation of `x`.
    pub fn apply(self, g: &mut Graph, x: ValueId) -> GraphResult<ValueId> {
        match self {
            Activation::Relu => g.relu(x),
            Activation::Tanh => g.tanh(x),
            Activation::Gelu => {
                let x2 = g.mul(x, x)?;
                let x3 = g.mul(x2, x)?;
                let c = g.scale(x3, 0.044715)?;
                let inner = g.add(x, c)?;
                let inner = g.scale(inner, (2.0 / std::f64::consts::PI).sqrt())?;
                let t = g.tanh(inner)?;
                let one_p = g.add_scalar(t, 1.0)?;
                let hx = g.scale(x, 0.5)?;
                g.mul(hx, one_p)
            }
        }
    }
}

/// A multi-layer perceptron: `dims[0] -> dims[1] -> ... -> dims[n]`, activation between
/// layers and none after the last.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    pub dims: Vec<usize>,
    pub activation: Activation,
}

impl MlpConfig {
    /// The source study's encoder: `input-512-512-128` with ReLU (input 3072 for CIFAR-sized data).
    pub fn study_encoder(input: usize) -> MlpConfig {
        MlpConfig {
            dims: vec![input, 512, 512, 128],
            activation: Activation::Relu,
        }
    }

    /// The source study's projector: `128-512-128` with ReLU.
    pub fn study_projector() -> MlpConfig {
        MlpConfig {
            dims: vec![128, 512, 128],
            activation: Activation::Relu,
        }
    }
}

/// Pooling used by the conv encoder's blocks; `max` or `average` in pipelines.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    #[default]
    Max,
    Average,
}

/// A small conv encoder: blocks of `Conv(k, same padding) -> activation -> pool(p, stride p)`,
/// then `Flatten` and one linear layer to `out_dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvConfig {
    /// Per-sample input shape (channels, height, width), taken from the data.
    pub input: [usize; 3],
    pub channels: Vec<usize>,
    pub kernel: usize,
    pub pool: PoolKind,
    pub pool_size: usize,
    pub out_dim: usize,
    pub activation: Activation,
}

impl ConvConfig {
    /// Two blocks of 32 and 64 channels, 3x3 kernels, 2x2 max pooling, 128-d output.
    pub fn small(input: [usize; 3]) -> ConvConfig {
        ConvConfig {
            input,
            channels: vec![32, 64],
            kernel: 3,
            pool: PoolKind::Max,
            pool_size: 2,
            out_dim: 128,
            activation: Activation::Relu,
        }
    }
}

/// ResNet stem; `cifar` or `imagenet` in pipelines.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stem {
    /// 3x3 convolution, stride 1, no max-pool (the CIFAR variant SimCLR and solo-learn use).
    #[default]
    Cifar,
    /// torchvision's 7x7 convolution, stride 2, then 3x3 max-pool, stride 2.
    Imagenet,
}

/// ResNet depth with BasicBlocks: 18 = [2, 2, 2, 2], 34 = [3, 4, 6, 3].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetDepth {
    R18,
    R34,
}

impl ResNetDepth {
    pub fn blocks(self) -> [usize; 4] {
        match self {
            ResNetDepth::R18 => [2, 2, 2, 2],
            ResNetDepth::R34 => [3, 4, 6, 3],
        }
    }
}

/// A torchvision-layout ResNet with BasicBlocks and BatchNorm, without its final `fc`: the
/// output is the globally average-pooled last feature map (`512 * width` wide).
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Per-sample input shape (channels, height, width), taken from the data; any size.
    pub input: [usize; 3],
    pub depth: ResNetDepth,
    pub stem: Stem,
    /// Multiplier of the base widths 64, 128, 256, 512 (each rounded, at least 1 channel).
    pub width: f64,
}

impl ResNetConfig {
    /// Channels of the stem and the four stages.
    pub fn widths(&self) -> [usize; 4] {
        [64.0, 128.0, 256.0, 512.0].map(|b: f64| ((b * self.width).round() as usize).max(1))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EncoderConfig {
    Mlp(MlpConfig),
    Conv(ConvConfig),
    ResNet(ResNetConfig),
}

/// Encoder plus optional projector (the loss is computed on the projector's output).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub encoder: EncoderConfig,
    pub projector: Option<MlpConfig>,
}

impl ModelConfig {
    /// The source study's model for `input`-dimensional vectors.
    pub fn study(input: usize) -> ModelConfig {
        ModelConfig {
            encoder: EncoderConfig::Mlp(MlpConfig::study_encoder(input)),
            projector: Some(MlpConfig::study_projector()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model configuration: {0}")]
    Config(String),
}

/// What a parameter is, as optimizers need to know it: the standard recipes (SimCLR's LARS,
/// AdamW) exclude biases and normalisation parameters from weight decay and from LARS's
/// trust-ratio adaptation, so the role is declared where the parameter is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// A linear or convolution weight matrix/kernel.
    Weight,
    /// An additive bias.
    Bias,
    /// A normalisation layer's scale or shift (BatchNorm/LayerNorm gamma and beta).
    Norm,
}

/// How a parameter is initialised (drawn in parameter order from the model's one RNG).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamInit {
    /// PyTorch's `nn.Linear`/`nn.Conv2d` default: uniform in `±1/sqrt(fan_in)`.
    DefaultUniform,
    /// torchvision's ResNet convolutions: `kaiming_normal_(mode="fan_out",
    /// nonlinearity="relu")`, i.e. normal with std `sqrt(2 / fan_out)`.
    KaimingNormalFanOut { fan_out: usize },
    /// Every entry equal (BatchNorm scale 1, shift 0).
    Constant(f32),
}

/// Name, shape, fan-in (for initialisation), initialiser and role of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub fan_in: usize,
    pub role: ParamRole,
    pub init: ParamInit,
}

/// A non-trainable tensor of the model (BatchNorm running statistics): updated by the
/// training step's forward pass, not by the optimizer, and saved with the parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// Initial value of every entry (running mean 0, running variance 1).
    pub init: f32,
}

/// Whether batch normalisation uses batch statistics (training step; updates the running
/// statistics) or running statistics (encoder/eval graphs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnMode {
    Train,
    Inference,
}

/// PyTorch's `nn.BatchNorm2d` defaults.
pub const BN_MOMENTUM: f64 = 0.1;
pub const BN_EPS: f64 = 1e-5;

#[derive(Debug, Clone, PartialEq)]
enum Layer {
    /// Indices into the network's parameter list.
    Linear {
        w: usize,
        b: usize,
    },
    Act(Activation),
    Conv {
        w: usize,
        b: usize,
        pad: usize,
    },
    Pool {
        kind: PoolKind,
        size: usize,
    },
    Flatten,
    /// Convolution without bias, batch norm, optional ReLU (a ResNet stem).
    ConvBn {
        conv: ConvRef,
        bn: BnRef,
        relu: bool,
    },
    /// torchvision's BasicBlock: `relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))`, the
    /// shortcut a 1x1 strided convolution + batch norm where the shape changes.
    Block {
        conv1: ConvRef,
        bn1: BnRef,
        conv2: ConvRef,
        bn2: BnRef,
        downsample: Option<(ConvRef, BnRef)>,
    },
    /// Max-pool with explicit kernel, stride and symmetric padding (the ImageNet stem's).
    MaxPoolPadded {
        kernel: usize,
        stride: usize,
        pad: usize,
    },
    /// Mean over the spatial axes, `[N, C, H, W]` -> `[N, C]`.
    GlobalAvgPool,
}

/// A bias-free convolution: weight index, stride and symmetric padding.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ConvRef {
    w: usize,
    stride: usize,
    pad: usize,
}

/// A BatchNorm layer: scale and shift (parameter indices), running mean and variance
/// (buffer indices).
#[derive(Debug, Clone, Copy, PartialEq)]
struct BnRef {
    w: usize,
    b: usize,
    mean: usize,
    var: usize,
}

/// A sequential stack of layers with its parameter and buffer lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    params: Vec<ParamSpec>,
    buffers: Vec<BufferSpec>,
    layers: Vec<Layer>,
    input: Vec<usize>,
    output_dim: usize,
}

/// Collects a ResNet's parameters and buffers in torchvision's `state_dict` order.
struct ResNetBuilder {
    prefix: String,
    params: Vec<ParamSpec>,
    buffers: Vec<BufferSpec>,
}

impl ResNetBuilder {
    fn conv(&mut self, name: &str, cin: usize, cout: usize, k: usize, stride: usize) -> ConvRef {
        self.params.push(ParamSpec {
            name: format!("{}.{name}.weight", self.prefix),
            shape: vec![cout, cin, k, k],
            fan_in: cin * k * k,
            role: ParamRole::Weight,
            init: ParamInit::KaimingNormalFanOut {
                fan_out: cout * k * k,
            },
        });
        ConvRef {
            w: self.params.len() - 1,
            stride,
            pad: k / 2,
        }
    }

    fn bn(&mut self, name: &str, c: usize) -> BnRef {
        for (what, init) in [("weight", 1.0), ("bias", 0.0)] {
            self.params.push(ParamSpec {
                name: format!("{}.{name}.{what}", self.prefix),
                shape: vec![c],
                fan_in: c,
                role: ParamRole::Norm,
                init: ParamInit::Constant(init),
            });
        }
        for (what, init) in [("running_mean", 0.0), ("running_var", 1.0)] {
            self.buffers.push(BufferSpec {
                name: format!("{}.{name}.{what}", self.prefix),
                shape: vec![c],
                init,
            });
        }
        BnRef {
            w: self.params.len() - 2,
            b: self.params.len() - 1,
            mean: self.buffers.len() - 2,
            var: self.buffers.len() - 1,
        }
    }
}

impl Network {
    pub fn mlp(prefix: &str, cfg: &MlpConfig) -> Result<Network, ModelError> {
        if cfg.dims.len() < 2 || cfg.dims.contains(&0) {
            return Err(ModelError::Config(format!(
                "`{prefix}` MLP needs at least input and output widths, all positive; got {:?}",
                cfg.dims
            )));
        }
        let mut params = Vec::new();
        let mut layers = Vec::new();
        let n = cfg.dims.len() - 1;
        for i in 0..n {
            let (fan_in, out) = (cfg.dims[i], cfg.dims[i + 1]);
            let idx = layers.len();
            params.push(ParamSpec {
                name: format!("{prefix}.{idx}.weight"),
                shape: vec![out, fan_in],
                fan_in,
                role: ParamRole::Weight,
                init: ParamInit::DefaultUniform,
            });
            params.push(ParamSpec {
                name: format!("{prefix}.{idx}.bias"),
                shape: vec![out],
                fan_in,
                role: ParamRole::Bias,
                init: ParamInit::DefaultUniform,
            });
            layers.push(Layer::Linear {
                w: params.len() - 2,
                b: params.len() - 1,
            });
            if i + 1 < n {
                layers.push(Layer::Act(cfg.activation));
            }
        }
        Ok(Network {
            params,
            buffers: Vec::new(),
            layers,
            input: vec![cfg.dims[0]],
            output_dim: cfg.dims[n],
        })
    }

    /// A ResNet-18/34 (see [`ResNetConfig`]) with torchvision's parameter names under
    /// `prefix` (`enc.conv1.weight`, `enc.bn1.running_mean`, `enc.layer2.0.downsample.0.weight`).
    pub fn resnet(prefix: &str, cfg: &ResNetConfig) -> Result<Network, ModelError> {
        let [c0, h, w] = cfg.input;
        if c0 == 0 || h == 0 || w == 0 {
            return Err(ModelError::Config(format!(
                "`{prefix}` ResNet needs a non-empty image input; got {:?}",
                cfg.input
            )));
        }
        if !(cfg.width.is_finite() && cfg.width > 0.0) {
            return Err(ModelError::Config(format!(
                "`{prefix}` ResNet width multiplier must be a positive number; got {}",
                cfg.width
            )));
        }
        let widths = cfg.widths();
        let mut b = ResNetBuilder {
            prefix: prefix.to_string(),
            params: Vec::new(),
            buffers: Vec::new(),
        };
        let mut layers = Vec::new();
        let (k, stride) = match cfg.stem {
            Stem::Cifar => (3, 1),
            Stem::Imagenet => (7, 2),
        };
        let conv = b.conv("conv1", c0, widths[0], k, stride);
        let bn = b.bn("bn1", widths[0]);
        layers.push(Layer::ConvBn {
            conv,
            bn,
            relu: true,
        });
        if cfg.stem == Stem::Imagenet {
            layers.push(Layer::MaxPoolPadded {
                kernel: 3,
                stride: 2,
                pad: 1,
            });
        }
        let mut inplanes = widths[0];
        for (stage, (&planes, &n)) in widths.iter().zip(&cfg.depth.blocks()).enumerate() {
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let name = format!("layer{}.{i}", stage + 1);
                let conv1 = b.conv(&format!("{name}.conv1"), inplanes, planes, 3, stride);
                let bn1 = b.bn(&format!("{name}.bn1"), planes);
                let conv2 = b.conv(&format!("{name}.conv2"), planes, planes, 3, 1);
                let bn2 = b.bn(&format!("{name}.bn2"), planes);
                let downsample = if stride != 1 || inplanes != planes {
                    let c = b.conv(&format!("{name}.downsample.0"), inplanes, planes, 1, stride);
                    Some((c, b.bn(&format!("{name}.downsample.1"), planes)))
                } else {
                    None
                };
                layers.push(Layer::Block {
                    conv1,
                    bn1,
                    conv2,
                    bn2,
                    downsample,
                });
                inplanes = planes;
            }
        }
        layers.push(Layer::GlobalAvgPool);
        Ok(Network {
            params: b.params,
            buffers: b.buffers,
            layers,
            input: cfg.input.to_vec(),
            output_dim: inplanes,
        })
    }

    pub fn conv(prefix: &str, cfg: &ConvConfig) -> Result<Network, ModelError> {
        let [c0, mut h, mut w] = cfg.input;
        if c0 == 0
            || h == 0
            || w == 0
            || cfg.kernel == 0
            || cfg.kernel.is_multiple_of(2)
            || cfg.pool_size == 0
            || cfg.out_dim == 0
        {
            return Err(ModelError::Config(format!(
                "`{prefix}` conv encoder needs a non-empty input, an odd kernel and positive pool/output sizes; got {cfg:?}"
            )));
        }
        let mut params = Vec::new();
        let mut layers = Vec::new();
        let mut c = c0;
        for &out_c in &cfg.channels {
            if out_c == 0 {
                return Err(ModelError::Config(format!(
                    "`{prefix}`: zero conv channels"
                )));
            }
            let idx = layers.len();
            let fan_in = c * cfg.kernel * cfg.kernel;
            params.push(ParamSpec {
                name: format!("{prefix}.{idx}.weight"),
                shape: vec![out_c, c, cfg.kernel, cfg.kernel],
                fan_in,
                role: ParamRole::Weight,
                init: ParamInit::DefaultUniform,
            });
            params.push(ParamSpec {
                name: format!("{prefix}.{idx}.bias"),
                shape: vec![out_c],
                fan_in,
                role: ParamRole::Bias,
                init: ParamInit::DefaultUniform,
            });
            layers.push(Layer::Conv {
                w: params.len() - 2,
                b: params.len() - 1,
                pad: cfg.kernel / 2,
            });
            layers.push(Layer::Act(cfg.activation));
            if h < cfg.pool_size || w < cfg.pool_size {
                return Err(ModelError::Config(format!(
                    "`{prefix}`: feature map {h}x{w} is smaller than the pool size {} after {} blocks; use fewer blocks",
                    cfg.pool_size,
                    params.len() / 2 - 1
                )));
            }
            layers.push(Layer::Pool {
                kind: cfg.pool,
                size: cfg.pool_size,
            });
            h /= cfg.pool_size;
            w /= cfg.pool_size;
            c = out_c;
        }
        layers.push(Layer::Flatten);
        let fan_in = c * h * w;
        let idx = layers.len();
        params.push(ParamSpec {
            name: format!("{prefix}.{idx}.weight"),
            shape: vec![cfg.out_dim, fan_in],
            fan_in,
            role: ParamRole::Weight,
            init: ParamInit::DefaultUniform,
        });
        params.push(ParamSpec {
            name: format!("{prefix}.{idx}.bias"),
            shape: vec![cfg.out_dim],
            fan_in,
            role: ParamRole::Bias,
            init: ParamInit::DefaultUniform,
        });
        layers.push(Layer::Linear {
            w: params.len() - 2,
            b: params.len() - 1,
        });
        Ok(Network {
            params,
            buffers: Vec::new(),
            layers,
            input: cfg.input.to_vec(),
            output_dim: cfg.out_dim,
        })
    }

    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input
    }

    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// Non-trainable tensors (BatchNorm running statistics), in `state_dict` order.
    pub fn buffers(&self) -> &[BufferSpec] {
        &self.buffers
    }

    /// Emits the forward pass for a batch `x` of shape `[N, input...]`; `params` are the graph
    /// values of [`Network::params`] in order. Only for networks without buffers (no
    /// BatchNorm); see [`Network::forward_mode`].
    pub fn forward(&self, g: &mut Graph, x: ValueId, params: &[ValueId]) -> GraphResult<ValueId> {
        Ok(self.forward_mode(g, x, params, &[], BnMode::Inference)?.0)
    }

    /// Emits the forward pass with `buffers` the graph values of [`Network::buffers`]. In
    /// [`BnMode::Train`] batch norm uses batch statistics and the second result holds the
    /// updated buffers (same order); in [`BnMode::Inference`] it uses the buffers and the
    /// second result is empty.
    pub fn forward_mode(
        &self,
        g: &mut Graph,
        x: ValueId,
        params: &[ValueId],
        buffers: &[ValueId],
        mode: BnMode,
    ) -> GraphResult<(ValueId, Vec<ValueId>)> {
        let missing = |what: &str| super::graph::GraphError::Invalid {
            op: "model",
            detail: format!("parameter or buffer list too short for {what}"),
        };
        let p = |i: usize| params.get(i).copied().ok_or_else(|| missing("a layer"));
        if buffers.len() != self.buffers.len() {
            return Err(missing(&format!(
                "{} buffers (got {})",
                self.buffers.len(),
                buffers.len()
            )));
        }
        let mut next_buffers: Vec<Option<ValueId>> = vec![None; self.buffers.len()];
        let conv = |g: &mut Graph, h: ValueId, c: &ConvRef| -> GraphResult<ValueId> {
            g.conv2d(h, p(c.w)?, None, [c.stride; 2], [c.pad; 4], 1)
        };
        let mut bn = |g: &mut Graph, h: ValueId, r: &BnRef| -> GraphResult<ValueId> {
            let (gamma, beta) = (p(r.w)?, p(r.b)?);
            let (mean, var) = (buffers[r.mean], buffers[r.var]);
            match mode {
                BnMode::Inference => g.batch_norm_inference(h, gamma, beta, mean, var, BN_EPS),
                BnMode::Train => {
                    let t = g.batch_norm_train(h, gamma, beta, mean, var, BN_MOMENTUM, BN_EPS)?;
                    next_buffers[r.mean] = Some(t.running_mean);
                    next_buffers[r.var] = Some(t.running_var);
                    Ok(t.y)
                }
            }
        };
        let mut h = x;
        for layer in &self.layers {
            h = match layer {
                Layer::Linear { w, b } => g.linear(h, p(*w)?, Some(p(*b)?))?,
                Layer::Act(a) => a.apply(g, h)?,
                Layer::Conv { w, b, pad } => {
                    g.conv2d(h, p(*w)?, Some(p(*b)?), [1, 1], [*pad; 4], 1)?
                }
                Layer::Pool { kind, size } => match kind {
                    PoolKind::Max => g.max_pool(h, [*size; 2], [*size; 2], [0; 4])?.0,
                    PoolKind::Average => g.average_pool(h, [*size; 2], [*size; 2], [0; 4])?,
                },
                Layer::Flatten => g.flatten(h, 1)?,
                Layer::ConvBn {
                    conv: c,
                    bn: r,
                    relu,
                } => {
                    let y = conv(g, h, c)?;
                    let y = bn(g, y, r)?;
                    if *relu {
                        g.relu(y)?
                    } else {
                        y
                    }
                }
                Layer::Block {
                    conv1,
                    bn1,
                    conv2,
                    bn2,
                    downsample,
                } => {
                    let y = conv(g, h, conv1)?;
                    let y = bn(g, y, bn1)?;
                    let y = g.relu(y)?;
                    let y = conv(g, y, conv2)?;
                    let y = bn(g, y, bn2)?;
                    let shortcut = match downsample {
                        Some((c, r)) => {
                            let s = conv(g, h, c)?;
                            bn(g, s, r)?
                        }
                        None => h,
                    };
                    let sum = g.add(y, shortcut)?;
                    g.relu(sum)?
                }
                Layer::MaxPoolPadded {
                    kernel,
                    stride,
                    pad,
                } => g.max_pool(h, [*kernel; 2], [*stride; 2], [*pad; 4])?.0,
                Layer::GlobalAvgPool => g.global_average_pool(h)?,
            };
        }
        let next = match mode {
            BnMode::Inference => Vec::new(),
            BnMode::Train => next_buffers
                .into_iter()
                .enumerate()
                .map(|(i, v)| v.ok_or_else(|| missing(&format!("buffer #{i}"))))
                .collect::<GraphResult<_>>()?,
        };
        Ok((h, next))
    }

    fn init_into(
        &self,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<NamedTensor>,
    ) -> Result<(), ModelError> {
        for spec in &self.params {
            let n: usize = spec.shape.iter().product();
            let fail = |e: &dyn std::fmt::Display| {
                ModelError::Config(format!("cannot initialise `{}`: {e}", spec.name))
            };
            let data = match spec.init {
                ParamInit::DefaultUniform => {
                    let bound = 1.0 / (spec.fan_in as f64).sqrt();
                    let dist = Uniform::new(-bound as f32, bound as f32).map_err(|e| fail(&e))?;
                    (0..n).map(|_| dist.sample(rng)).collect()
                }
                ParamInit::KaimingNormalFanOut { fan_out } => {
                    let std = (2.0 / fan_out.max(1) as f64).sqrt();
                    let dist = Normal::new(0.0, std).map_err(|e| fail(&e))?;
                    (0..n).map(|_| dist.sample(rng) as f32).collect()
                }
                ParamInit::Constant(c) => vec![c; n],
            };
            out.push(NamedTensor::new(
                spec.name.clone(),
                spec.shape.clone(),
                data,
            ));
        }
        Ok(())
    }
}

/// Encoder (`enc.*`) and optional projector (`proj.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastiveModel {
    pub encoder: Network,
    pub projector: Option<Network>,
}

impl ContrastiveModel {
    pub fn new(cfg: &ModelConfig) -> Result<ContrastiveModel, ModelError> {
        let encoder = match &cfg.encoder {
            EncoderConfig::Mlp(m) => Network::mlp("enc", m)?,
            EncoderConfig::Conv(c) => Network::conv("enc", c)?,
            EncoderConfig::ResNet(r) => Network::resnet("enc", r)?,
        };
        let projector = match &cfg.projector {
            Some(p) => {
                if p.dims.first() != Some(&encoder.output_dim()) {
                    return Err(ModelError::Config(format!(
                        "projector input width {:?} must equal the encoder output width {}",
                        p.dims.first(),
                        encoder.output_dim()
                    )));
                }
                Some(Network::mlp("proj", p)?)
            }
            None => None,
        };
        Ok(ContrastiveModel { encoder, projector })
    }

    /// All parameters: encoder first, then projector.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let mut v = self.encoder.params().to_vec();
        if let Some(p) = &self.projector {
            v.extend_from_slice(p.params());
        }
        v
    }

    /// All buffers (BatchNorm running statistics): encoder first, then projector.
    pub fn buffer_specs(&self) -> Vec<BufferSpec> {
        let mut v = self.encoder.buffers().to_vec();
        if let Some(p) = &self.projector {
            v.extend_from_slice(p.buffers());
        }
        v
    }

    pub fn num_encoder_params(&self) -> usize {
        self.encoder.params().len()
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        self.encoder.input_shape()
    }

    pub fn embedding_dim(&self) -> usize {
        self.encoder.output_dim()
    }

    /// Width of the vectors the loss sees.
    pub fn projection_dim(&self) -> usize {
        self.projector
            .as_ref()
            .map_or(self.encoder.output_dim(), Network::output_dim)
    }

    /// Deterministic initial parameters for `seed`, followed by the initial buffers (the
    /// model's whole `state_dict`, which is what trainers load).
    pub fn init_params(&self, seed: u64) -> Result<Vec<NamedTensor>, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        self.encoder.init_into(&mut rng, &mut out)?;
        if let Some(p) = &self.projector {
            p.init_into(&mut rng, &mut out)?;
        }
        for b in self.buffer_specs() {
            let n = b.shape.iter().product();
            out.push(NamedTensor::new(b.name, b.shape, vec![b.init; n]));
        }
        Ok(out)
    }

    /// Emits encoder then projector; returns (representation, projection). Only for models
    /// without buffers; see [`ContrastiveModel::forward_mode`].
    pub fn forward(
        &self,
        g: &mut Graph,
        x: ValueId,
        params: &[ValueId],
    ) -> GraphResult<(ValueId, ValueId)> {
        let (h, z, _) = self.forward_mode(g, x, params, &[], BnMode::Inference)?;
        Ok((h, z))
    }

    /// Emits encoder then projector with the model's buffers (in [`Self::buffer_specs`]
    /// order); returns (representation, projection, updated buffers in train mode).
    pub fn forward_mode(
        &self,
        g: &mut Graph,
        x: ValueId,
        params: &[ValueId],
        buffers: &[ValueId],
        mode: BnMode,
    ) -> GraphResult<(ValueId, ValueId, Vec<ValueId>)> {
        let ne = self.num_encoder_params();
        let nb = self.encoder.buffers().len();
        let (h, mut next) = self.encoder.forward_mode(
            g,
            x,
            params.get(..ne).unwrap_or(params),
            buffers.get(..nb).unwrap_or(buffers),
            mode,
        )?;
        let z = match &self.projector {
            Some(p) => {
                let (z, pn) = p.forward_mode(
                    g,
                    h,
                    params.get(ne..).unwrap_or(&[]),
                    buffers.get(nb..).unwrap_or(&[]),
                    mode,
                )?;
                next.extend(pn);
                z
            }
            None => h,
        };
        Ok((h, z, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_model_names_and_shapes() -> Result<(), ModelError> {
        let m = ContrastiveModel::new(&ModelConfig::study(3072))?;
        let names: Vec<String> = m.param_specs().iter().map(|p| p.name.clone()).collect();
        assert_eq!(
            names,
            [
                "enc.0.weight",
                "enc.0.bias",
                "enc.2.weight",
                "enc.2.bias",
                "enc.4.weight",
                "enc.4.bias",
                "proj.0.weight",
                "proj.0.bias",
                "proj.2.weight",
                "proj.2.bias"
            ]
        );
        assert_eq!(m.param_specs()[0].shape, vec![512, 3072]);
        let a = m.init_params(3)?;
        let b = m.init_params(3)?;
        assert_eq!(a, b);
        let bound = 1.0 / 3072f32.sqrt();
        assert!(a[0].data.iter().all(|x| x.abs() <= bound));
        assert_ne!(a, m.init_params(4)?);
        Ok(())
    }

    #[test]
    fn conv_encoder_shapes_follow_the_input() -> Result<(), ModelError> {
        let cfg = ModelConfig {
            encoder: EncoderConfig::Conv(ConvConfig::small([1, 28, 28])),
            projector: None,
        };
        let m = ContrastiveModel::new(&cfg)?;
        let last = m.param_specs().into_iter().rev().nth(1).map(|p| p.shape);
        assert_eq!(last, Some(vec![128, 64 * 7 * 7]));
        let bad = ConvConfig {
            channels: vec![8; 6],
            ..ConvConfig::small([1, 28, 28])
        };
        assert!(Network::conv("enc", &bad).is_err());
        Ok(())
    }
}
