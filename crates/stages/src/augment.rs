//! `augment`: turns each sample into two or more views by an ordered list of ops per view,
//! and materialises them as `views.parquet`. The same [`ViewSpec`] drives on-the-fly views
//! inside `train`, so a materialised view and a fresh one are computed by one implementation
//! ([`cbound_data::augment::make_views`]); each sample's randomness derives from (instance
//! seed, epoch, sample index, view index), so results do not depend on thread count.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use schemars::JsonSchema;
use serde::Deserialize;

use cbound_data::augment;
use cbound_data::parquet_io::{float_list_array, read_dataset};
use cbound_data::views::{check_views, view_ops, ViewSpec};
use cbound_engine::stage::{Need, ParamError, Stage, StageContext, StageError, StageOutput};

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
    // 2: grayscale, contrast and saturation use torchvision's 0.2989 luma (was 0.299).
    const VERSION: u32 = 2;
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
        let (ops, shape) = view_ops(&p.views, ds.sample_shape()).map_err(StageError::Params)?;
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
