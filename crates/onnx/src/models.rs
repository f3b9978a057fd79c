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
use rand_distr::{Distribution, Uniform};

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

#[derive(Debug, Clone, PartialEq)]
pub enum EncoderConfig {
    Mlp(MlpConfig),
    Conv(ConvConfig),
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

/// Name, shape, fan-in (for initialisation) and role of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub fan_in: usize,
    pub role: ParamRole,
}

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
}

/// A sequential stack of layers with its parameter list.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    params: Vec<ParamSpec>,
    layers: Vec<Layer>,
    input: Vec<usize>,
    output_dim: usize,
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
            });
            params.push(ParamSpec {
                name: format!("{prefix}.{idx}.bias"),
                shape: vec![out],
                fan_in,
                role: ParamRole::Bias,
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
            layers,
            input: vec![cfg.dims[0]],
            output_dim: cfg.dims[n],
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
            });
            params.push(ParamSpec {
                name: format!("{prefix}.{idx}.bias"),
                shape: vec![out_c],
                fan_in,
                role: ParamRole::Bias,
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
        });
        params.push(ParamSpec {
            name: format!("{prefix}.{idx}.bias"),
            shape: vec![cfg.out_dim],
            fan_in,
            role: ParamRole::Bias,
        });
        layers.push(Layer::Linear {
            w: params.len() - 2,
            b: params.len() - 1,
        });
        Ok(Network {
            params,
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

    /// Emits the forward pass for a batch `x` of shape `[N, input...]`; `params` are the graph
    /// values of [`Network::params`] in order.
    pub fn forward(&self, g: &mut Graph, x: ValueId, params: &[ValueId]) -> GraphResult<ValueId> {
        let mut h = x;
        let p = |i: usize| params.get(i).copied();
        let missing = |what: &str| super::graph::GraphError::Invalid {
            op: "model",
            detail: format!("parameter list too short for {what}"),
        };
        for layer in &self.layers {
            h = match layer {
                Layer::Linear { w, b } => {
                    let (w, b) = (
                        p(*w).ok_or_else(|| missing("linear"))?,
                        p(*b).ok_or_else(|| missing("linear"))?,
                    );
                    g.linear(h, w, Some(b))?
                }
                Layer::Act(a) => a.apply(g, h)?,
                Layer::Conv { w, b, pad } => {
                    let (w, b) = (
                        p(*w).ok_or_else(|| missing("conv"))?,
                        p(*b).ok_or_else(|| missing("conv"))?,
                    );
                    g.conv2d(h, w, Some(b), [1, 1], [*pad; 4], 1)?
                }
                Layer::Pool { kind, size } => match kind {
                    PoolKind::Max => g.max_pool(h, [*size; 2], [*size; 2], [0; 4])?.0,
                    PoolKind::Average => g.average_pool(h, [*size; 2], [*size; 2], [0; 4])?,
                },
                Layer::Flatten => g.flatten(h, 1)?,
            };
        }
        Ok(h)
    }

    fn init_into(
        &self,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<NamedTensor>,
    ) -> Result<(), ModelError> {
        for spec in &self.params {
            let bound = 1.0 / (spec.fan_in as f64).sqrt();
            let dist = Uniform::new(-bound as f32, bound as f32).map_err(|e| {
                ModelError::Config(format!("cannot initialise `{}`: {e}", spec.name))
            })?;
            let n: usize = spec.shape.iter().product();
            let data = (0..n).map(|_| dist.sample(rng)).collect();
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

    /// Deterministic initial parameters for `seed`.
    pub fn init_params(&self, seed: u64) -> Result<Vec<NamedTensor>, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        self.encoder.init_into(&mut rng, &mut out)?;
        if let Some(p) = &self.projector {
            p.init_into(&mut rng, &mut out)?;
        }
        Ok(out)
    }

    /// Emits encoder then projector; returns (representation, projection).
    pub fn forward(
        &self,
        g: &mut Graph,
        x: ValueId,
        params: &[ValueId],
    ) -> GraphResult<(ValueId, ValueId)> {
        let ne = self.num_encoder_params();
        let h = self
            .encoder
            .forward(g, x, params.get(..ne).unwrap_or(params))?;
        let z = match &self.projector {
            Some(p) => p.forward(g, h, params.get(ne..).unwrap_or(&[]))?,
            None => h,
        };
        Ok((h, z))
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
