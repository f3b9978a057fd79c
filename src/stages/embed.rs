//! `embed`: runs a trained encoder (`encoder.onnx` of a `train` instance) over a dataset and
//! writes U = f(X) as `embeddings.parquet` (`id`, `label`, `u` fixed_size_list<float32>),
//! optionally with the input view it encoded (`x`), so that estimators can pair U with X, a
//! view Y or the label Z.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use schemars::JsonSchema;
use serde::Deserialize;

use super::augment::OpSpec;
use super::train::{device, load_runtime, model_info, DeviceName};
use super::{Stage, StageContext, StageError, StageOutput};
use crate::data::augment::{make_views_into, output_shape};
use crate::data::parquet_io::{float_list_array, read_dataset};
use crate::onnx::runtime::SessionOptions;
use crate::onnx::step::EncoderGraph;
use crate::onnx::trainer::Embedder;

fn default_chunk() -> usize {
    1024
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedParams {
    /// Ops applied to each sample before encoding (e.g. the study's noise view); none: the clean sample.
    #[serde(default)]
    pub view: Vec<OpSpec>,
    /// Also write the encoded input as column `x`.
    #[serde(default)]
    pub include_input: bool,
    /// Only the first `limit` samples.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Rows per ONNX Runtime call.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    #[serde(default)]
    pub device: DeviceName,
}

pub struct Embed;

impl Stage for Embed {
    type Params = EmbedParams;
    const KIND: &'static str = "embed";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Encode a dataset with a trained encoder: embeddings.parquet with U = f(X).";
    const EXAMPLE: &'static str = r#"embed:
  kind: embed
  inputs: [train, test_data]
  params: {view: [{op: gaussian_noise, std: 0.1}], include_input: true}
"#;

    fn run(p: &EmbedParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        let has =
            |i: &&super::InputArtifact, name: &str| i.meta.outputs.iter().any(|o| o.name == name);
        let model = ctx
            .inputs
            .iter()
            .find(|i| has(i, "encoder.onnx"))
            .ok_or_else(|| {
                StageError::Params(
                    "embed needs a `train` stage among its inputs (one with encoder.onnx)".into(),
                )
            })?;
        let data = ctx
            .inputs
            .iter()
            .find(|i| has(i, "dataset.parquet"))
            .ok_or_else(|| {
                StageError::Params(
                    "embed needs a `load` stage among its inputs (one with dataset.parquet)".into(),
                )
            })?;
        let info = model_info(&model.dir)?;
        let (ds, normalisation) = read_dataset(&data.dir.join("dataset.parquet"))
            .map_err(|e| StageError::Input(e.to_string()))?;
        let ds = match p.limit {
            Some(n) => ds.limit(n),
            None => ds,
        };
        let ops: Vec<_> = p.view.iter().map(OpSpec::to_op).collect();
        let shape =
            output_shape(ds.sample_shape(), &ops).map_err(|e| StageError::Params(e.to_string()))?;
        let want: usize = info.view_shape.iter().product();
        if shape.numel() != want {
            return Err(StageError::Input(format!(
                "the data gives {} values per sample ({shape}), but the encoder of `{}` takes {want} ({:?}); load matching data or add a `view` that produces that shape",
                shape.numel(),
                model.instance,
                info.view_shape
            )));
        }
        let bytes = std::fs::read(model.dir.join("encoder.onnx")).map_err(|e| StageError::Io {
            context: "reading encoder.onnx".into(),
            source: e,
        })?;
        let graph = EncoderGraph {
            model_bytes: bytes,
            view_shape: info.view_shape.clone(),
            embedding_dim: info.embedding_dim,
            params: vec![],
        };
        let rt = load_runtime()?;
        let opts = SessionOptions {
            device: device(p.device),
            intra_threads: ctx.threads.max(1),
            ..SessionOptions::default()
        };
        let mut embedder =
            Embedder::new(&rt, &graph, &opts).map_err(|e| StageError::Failed(e.to_string()))?;
        let n = ds.len();
        let d = info.embedding_dim;
        let mut u = Vec::with_capacity(n * d);
        let mut xs = Vec::new();
        let mut views = Vec::new();
        let indices: Vec<usize> = (0..n).collect();
        let chunk = p.chunk.max(1);
        for (c, batch) in indices.chunks(chunk).enumerate() {
            ctx.check_cancelled()?;
            ctx.progress((c * chunk) as u64, n as u64, "encoding");
            make_views_into(
                &ds,
                batch,
                std::slice::from_ref(&ops),
                ctx.seed,
                0,
                &normalisation,
                &mut views,
            )
            .map_err(|e| StageError::Failed(e.to_string()))?;
            u.extend(
                embedder
                    .embed(&views[0], chunk)
                    .map_err(|e| StageError::Failed(e.to_string()))?,
            );
            if p.include_input {
                xs.extend_from_slice(&views[0]);
            }
        }
        if let Some(bad) = u.iter().position(|v| !v.is_finite()) {
            return Err(StageError::Failed(format!(
                "embedding of sample {} is not finite",
                bad / d
            )));
        }
        let mut fields = vec![Field::new("id", DataType::UInt64, false)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(ds.ids.clone()))];
        if ds.is_labelled() {
            fields.push(Field::new("label", DataType::UInt32, false));
            columns.push(Arc::new(UInt32Array::from(ds.labels.clone())));
        }
        let u = float_list_array(u, d).map_err(|e| StageError::Failed(e.to_string()))?;
        fields.push(Field::new("u", u.data_type().clone(), false));
        columns.push(Arc::new(u));
        if p.include_input {
            let x = float_list_array(xs, want).map_err(|e| StageError::Failed(e.to_string()))?;
            fields.push(Field::new("x", x.data_type().clone(), false));
            columns.push(Arc::new(x));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| StageError::Failed(format!("building embeddings table: {e}")))?;
        ctx.write_table("embeddings", &batch)?;
        Ok(StageOutput::default()
            .metric("n", n as f64)
            .metric("embedding_dim", d as f64))
    }
}
