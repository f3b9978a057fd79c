//! The augmentation ops as pipelines write them (`views:` lists of [`OpSpec`]), their
//! rules, and their conversion to [`Op`]s. One declaration shared by the `augment`, `train`
//! and `embed` stages, so a view means the same thing in all three.

use cbound_core::params::{ParamError, PathSeg};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::augment::{self, Op};
use crate::SampleShape;

fn half() -> f32 {
    0.5
}
fn one() -> f32 {
    1.0
}
fn default_scale() -> [f32; 2] {
    [0.08, 1.0]
}
fn default_ratio() -> [f32; 2] {
    [0.75, 4.0 / 3.0]
}
fn default_sigma() -> [f32; 2] {
    [0.1, 2.0]
}
fn default_gray() -> f32 {
    0.2
}

/// One augmentation op, written `{op: gaussian_noise, std: 0.1}`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpSpec {
    /// Random area/aspect crop resized to `size` x `size` (torchvision RandomResizedCrop). Images.
    RandomResizedCrop {
        size: usize,
        #[serde(default = "default_scale")]
        scale: [f32; 2],
        #[serde(default = "default_ratio")]
        ratio: [f32; 2],
    },
    /// Mirror left-right with probability `p`. Images.
    HorizontalFlip {
        #[serde(default = "half")]
        p: f32,
    },
    /// torchvision ColorJitter: brightness, contrast, saturation factors uniform in [1-v, 1+v],
    /// a hue shift uniform in [-hue, hue] (at most 0.5), in random order, applied with
    /// probability `p`. Images.
    ColorJitter {
        #[serde(default)]
        brightness: f32,
        #[serde(default)]
        contrast: f32,
        #[serde(default)]
        saturation: f32,
        #[serde(default)]
        hue: f32,
        #[serde(default = "one")]
        p: f32,
    },
    /// Luma to all three channels with probability `p`. Images.
    Grayscale {
        #[serde(default = "default_gray")]
        p: f32,
    },
    /// Separable Gaussian blur, sigma uniform in `sigma`, with probability `p`. Images.
    GaussianBlur {
        kernel_size: usize,
        #[serde(default = "default_sigma")]
        sigma: [f32; 2],
        #[serde(default = "half")]
        p: f32,
    },
    /// Zero a `size` x `size` square with probability `p`. Images.
    Cutout {
        size: usize,
        #[serde(default = "half")]
        p: f32,
    },
    /// x + std * N(0, 1) (the source study's view). Images and vectors.
    GaussianNoise { std: f32 },
    /// Zero each value with probability `p`. Images and vectors.
    RandomMask { p: f32 },
    /// Start this view from the sample's paired view (data loaded with `view_columns`, e.g. the
    /// mixture's Y); first op of a view only.
    Paired,
}

impl OpSpec {
    pub fn to_op(&self) -> Op {
        match *self {
            OpSpec::RandomResizedCrop { size, scale, ratio } => {
                Op::RandomResizedCrop(augment::RandomResizedCrop {
                    size,
                    scale: (scale[0], scale[1]),
                    ratio: (ratio[0], ratio[1]),
                })
            }
            OpSpec::HorizontalFlip { p } => Op::HorizontalFlip(augment::HorizontalFlip { p }),
            OpSpec::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
                p,
            } => Op::ColorJitter(augment::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
                p,
            }),
            OpSpec::Grayscale { p } => Op::Grayscale(augment::Grayscale { p }),
            OpSpec::GaussianBlur {
                kernel_size,
                sigma,
                p,
            } => Op::GaussianBlur(augment::GaussianBlur {
                kernel_size,
                sigma: (sigma[0], sigma[1]),
                p,
            }),
            OpSpec::Cutout { size, p } => Op::Cutout(augment::Cutout { size, p }),
            OpSpec::GaussianNoise { std } => Op::GaussianNoise(augment::GaussianNoise { std }),
            OpSpec::RandomMask { p } => Op::RandomMask(augment::RandomMask { p }),
            OpSpec::Paired => Op::Paired,
        }
    }
}

/// Views: one list of ops per view (an empty list is the sample itself).
pub type ViewSpec = Vec<Vec<OpSpec>>;

/// Converts a view spec and checks it against the input shape; returns the output shape.
pub fn view_ops(
    views: &ViewSpec,
    input: SampleShape,
) -> Result<(Vec<Vec<Op>>, SampleShape), String> {
    if views.len() < 2 {
        return Err(format!(
            "contrastive learning needs at least 2 views, got {}",
            views.len()
        ));
    }
    let ops: Vec<Vec<Op>> = views
        .iter()
        .map(|v| v.iter().map(OpSpec::to_op).collect())
        .collect();
    let mut shape = None;
    for (i, v) in ops.iter().enumerate() {
        let s = augment::output_shape(input, v).map_err(|e| format!("view {i}: {e}"))?;
        match shape {
            None => shape = Some(s),
            Some(first) if first != s => {
                return Err(format!(
                    "view {i} produces {s} but view 0 produces {first}; views must match"
                ))
            }
            _ => {}
        }
    }
    Ok((ops, shape.unwrap_or(input)))
}

/// The rules of a `views` list that hold whatever the data's shape: how many views (at least
/// 2, or exactly `exact`), and each op's own settings (probabilities, ranges, `paired`
/// first). Sizes against the image are checked when the data is read.
pub fn check_views(views: &ViewSpec, exact: Option<usize>) -> Vec<ParamError> {
    let mut out = Vec::new();
    match exact {
        Some(n) if views.len() != n => out.push(ParamError::at(
            &["views"],
            format!("this stage uses exactly {n} views, got {}", views.len()),
        )),
        None if views.len() < 2 => out.push(ParamError::at(
            &["views"],
            format!(
                "contrastive learning needs at least 2 views, got {}",
                views.len()
            ),
        )),
        _ => {}
    }
    for (i, view) in views.iter().enumerate() {
        out.extend(check_ops(view).into_iter().map(|e| {
            e.under(PathSeg::Index(i))
                .under(PathSeg::Key("views".into()))
        }));
    }
    out
}

/// The settings of one view's ops, each problem at the op's index.
pub fn check_ops(view: &[OpSpec]) -> Vec<ParamError> {
    let mut out = Vec::new();
    for (j, spec) in view.iter().enumerate() {
        let op = spec.to_op();
        let problem = if j > 0 && op == Op::Paired {
            Some("`paired` replaces the sample, so it must be the first op of its view".into())
        } else {
            op.check_settings().err().map(|e| e.to_string())
        };
        if let Some(message) = problem {
            out.push(ParamError::at(&[&j.to_string()], message));
        }
    }
    out
}
