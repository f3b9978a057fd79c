//! `augment`: turns each sample into two or more views by an ordered list of ops per view,
//! and materialises them as `views.parquet`. The same [`ViewSpec`] drives on-the-fly views
//! inside `train`, so a materialised view and a fresh one are computed by one implementation
//! ([`crate::data::augment::make_views`]); each sample's randomness derives from (instance
//! seed, epoch, sample index, view index), so results do not depend on thread count.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{Need, ParamError, Stage, StageContext, StageError, StageOutput};
use crate::config::yaml::PathSeg;
use crate::data::augment::{self, Op};
use crate::data::parquet_io::{float_list_array, read_dataset};
use crate::data::SampleShape;

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
    /// Brightness, contrast, saturation factors uniform in [1-v, 1+v], applied with probability `p`. Images.
    ColorJitter {
        #[serde(default)]
        brightness: f32,
        #[serde(default)]
        contrast: f32,
        #[serde(default)]
        saturation: f32,
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
                p,
            } => Op::ColorJitter(augment::ColorJitter {
                brightness,
                contrast,
                saturation,
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
) -> Result<(Vec<Vec<Op>>, SampleShape), StageError> {
    if views.len() < 2 {
        return Err(StageError::Params(format!(
            "contrastive learning needs at least 2 views, got {}",
            views.len()
        )));
    }
    let ops: Vec<Vec<Op>> = views
        .iter()
        .map(|v| v.iter().map(OpSpec::to_op).collect())
        .collect();
    let mut shape = None;
    for (i, v) in ops.iter().enumerate() {
        let s = augment::output_shape(input, v)
            .map_err(|e| StageError::Params(format!("view {i}: {e}")))?;
        match shape {
            None => shape = Some(s),
            Some(first) if first != s => {
                return Err(StageError::Params(format!(
                    "view {i} produces {s} but view 0 produces {first}; views must match"
                )))
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

fn default_epochs() -> u64 {
    1
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AugmentParams {
    /// One list of ops per view, e.g. `[[{op: gaussian_noise, std: 0.1}], [{op: gaussian_noise, std: 0.1}]]`.
    pub views: ViewSpec,
    /// Materialise views for epochs 0..epochs (each epoch draws fresh randomness).
    #[serde(default = "default_epochs")]
    pub epochs: u64,
    /// Only the first `limit` samples.
    #[serde(default)]
    pub limit: Option<usize>,
}

pub struct Augment;

impl Stage for Augment {
    type Params = AugmentParams;
    const KIND: &'static str = "augment";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Make two or more augmented views of every sample (views.parquet: view_0, view_1, ...).";
    const EXAMPLE: &'static str = r#"views:
  kind: augment
  inputs: [data]
  params:
    views:
      - [{op: random_resized_crop, size: 28, scale: [0.5, 1.0]}, {op: horizontal_flip}]
      - [{op: gaussian_noise, std: 0.1}]
"#;
    const WRITES: Option<&'static [&'static str]> = Some(&["views.parquet"]);

    fn needs(_p: &AugmentParams) -> Vec<Need> {
        vec![Need::only("dataset.parquet")]
    }

    fn check(p: &AugmentParams) -> Vec<ParamError> {
        check_views(&p.views, None)
    }

    fn run(p: &AugmentParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        let [input] = ctx.inputs else {
            return Err(StageError::Params(format!(
                "augment reads one dataset, got {} inputs",
                ctx.inputs.len()
            )));
        };
        let (ds, normalisation) = read_dataset(&input.file("dataset.parquet")?)
            .map_err(|e| StageError::Input(e.to_string()))?;
        let ds = match p.limit {
            Some(n) => ds.limit(n),
            None => ds,
        };
        let (ops, shape) = view_ops(&p.views, ds.sample_shape())?;
        let width = shape.numel();
        let indices: Vec<usize> = (0..ds.len()).collect();
        let mut fields = vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("epoch", DataType::UInt32, false),
        ];
        let mut ids = Vec::new();
        let mut epochs = Vec::new();
        let mut labels = Vec::new();
        let mut view_data: Vec<Vec<f32>> = vec![Vec::new(); ops.len()];
        for epoch in 0..p.epochs {
            ctx.check_cancelled()?;
            ctx.progress(epoch, p.epochs, format!("epoch {epoch}"));
            // Batches of 4096 keep memory bounded and let Ctrl-C in between.
            for chunk in indices.chunks(4096) {
                let views = augment::make_views(&ds, chunk, &ops, ctx.seed, epoch, &normalisation)
                    .map_err(|e| StageError::Failed(e.to_string()))?;
                for (acc, v) in view_data.iter_mut().zip(views) {
                    acc.extend(v);
                }
                ctx.check_cancelled()?;
            }
            ids.extend(ds.ids.iter().copied());
            epochs.extend(std::iter::repeat_n(epoch as u32, ds.len()));
            labels.extend(ds.labels.iter().copied());
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(ids)),
            Arc::new(UInt32Array::from(epochs)),
        ];
        if ds.is_labelled() {
            fields.push(Field::new("label", DataType::UInt32, false));
            columns.push(Arc::new(UInt32Array::from(labels)));
        }
        for (v, data) in view_data.into_iter().enumerate() {
            let list =
                float_list_array(data, width).map_err(|e| StageError::Failed(e.to_string()))?;
            fields.push(Field::new(
                format!("view_{v}"),
                list.data_type().clone(),
                false,
            ));
            columns.push(Arc::new(list));
        }
        let mut meta = std::collections::HashMap::new();
        meta.insert("cbound.view_shape".to_string(), format!("{shape}"));
        let batch =
            RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, meta)), columns)
                .map_err(|e| StageError::Failed(format!("building views table: {e}")))?;
        ctx.write_table("views", &batch)?;
        Ok(StageOutput::default()
            .metric("rows", (ds.len() as u64 * p.epochs) as f64)
            .metric("views", ops.len() as f64)
            .metric("view_dim", width as f64))
    }
}
