//! `embed`: runs a trained encoder (`encoder.onnx` of a `train` instance) over a dataset and
//! writes U = f(X) as `embeddings.parquet` (`id`, `label`, `u` fixed_size_list<float32>),
//! optionally with a second view's encoding U_Y = f(Y) (`u_view`), the inputs (`x`, `y`), and
//! with `snapshots` one block per encoder snapshot (`epoch`), so that estimators can pair U
//! with X, a view Y or the label Z, and follow them over training.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use schemars::JsonSchema;
use serde::Deserialize;

use cbound_data::augment::{make_views_into, output_shape};
use cbound_data::parquet_io::{float_list_array, read_dataset};
use cbound_data::views::{check_ops, OpSpec};
use cbound_engine::config::yaml::PathSeg;
use cbound_engine::stage::{Need, ParamError, Stage, StageContext, StageError, StageOutput};
use cbound_onnx::runtime::Device;
use cbound_onnx::runtime::SessionOptions;
use cbound_onnx::step::EncoderGraph;
use cbound_onnx::trainer::Embedder;
use cbound_tables::model::{model_info, snapshot_epochs, snapshot_file};
use cbound_tables::SNAPSHOT_KEY;

fn default_chunk() -> usize {
    1024
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedParams {
    /// Ops applied to each sample before encoding (e.g. the study's noise view); none: the clean sample.
    #[serde(default)]
    pub view: Vec<OpSpec>,
    /// A second view Y of each sample (e.g. the training augmentation): writes U_Y = f(Y) as
    /// column `u_view`, so estimators can bound I(U;Y) (e.g. infonce on `u` and `u_view`).
    #[serde(default)]
    pub second_view: Option<Vec<OpSpec>>,
    /// Also write the encoded input as column `x` (and the second view as `y`).
    #[serde(default)]
    pub include_input: bool,
    /// Encode with every snapshot the train stage saved (`snapshot_every`), not only the final
    /// encoder: one block of rows per snapshot, told apart by an `epoch` column, which
    /// estimate_mi and bound then follow.
    #[serde(default)]
    pub snapshots: bool,
    /// Also write the projections z = g(f(x)) (column `z`, and `z_view` for the second view):
    /// the space the training critic scores, where `infonce` gives its tightest bound.
    #[serde(default)]
    pub projections: bool,
    /// Only the first `limit` samples.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Rows per ONNX Runtime call.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    #[serde(default)]
    pub device: Device,
}

pub struct Embed;

/// The `split` column's value for each dataset, when embed has several: each must come from
/// a source with a train/test split (recorded by `load`), and no two from the same half. One
/// dataset gives no column, as before.
fn split_names(
    inputs: &[&cbound_engine::stage::InputArtifact],
    sets: &[(cbound_data::Dataset, cbound_data::Normalisation)],
) -> Result<Option<Vec<String>>, StageError> {
    if sets.len() < 2 {
        return Ok(None);
    }
    let mut names: Vec<String> = Vec::with_capacity(sets.len());
    for (input, (ds, _)) in inputs.iter().zip(sets) {
        let Some(split) = ds.split else {
            return Err(StageError::Input(format!(
                "embed has {} datasets, so it labels each row with its dataset's split, but `{}` records none (only cifar10, cifar100, idx and fashion_mnist loads have a train/test split; a dataset written by an older cbound: rerun its load stage)",
                sets.len(),
                input.instance
            )));
        };
        if let Some(j) = names.iter().position(|n| n == split.as_str()) {
            return Err(StageError::Input(format!(
                "embed's datasets `{}` and `{}` are both the {split} split: give it one dataset per split",
                inputs[j].instance, input.instance
            )));
        }
        names.push(split.as_str().to_string());
    }
    Ok(Some(names))
}

/// The growing columns of `embeddings.parquet`, row-major lists.
#[derive(Default)]
struct Columns {
    epoch: Vec<Option<i64>>,
    u: Vec<f32>,
    u_view: Vec<f32>,
    z: Vec<f32>,
    z_view: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Stage for Embed {
    type Params = EmbedParams;
    const KIND: &'static str = "embed";
    // 3: a `second_view` with grayscale, contrast or saturation uses torchvision's 0.2989 luma.
    const VERSION: u32 = 3;
    const SUMMARY: &'static str =
        "Encode a dataset with a trained encoder: embeddings.parquet with U = f(X).";
    const EXAMPLE: &'static str = r#"embed:
  kind: embed
  inputs: [train, test_data]
  params: {view: [{op: gaussian_noise, std: 0.1}], include_input: true}
"#;
    const WRITES: Option<&'static [&'static str]> = Some(&["embeddings.parquet"]);

    fn needs(_p: &EmbedParams) -> Vec<Need> {
        vec![Need::any("encoder.onnx"), Need::any("dataset.parquet")]
    }

    fn check(p: &EmbedParams) -> Vec<ParamError> {
        let under = |key: &str, errors: Vec<ParamError>| -> Vec<ParamError> {
            errors
                .into_iter()
                .map(|e| e.under(PathSeg::Key(key.into())))
                .collect()
        };
        let mut out = under("view", check_ops(&p.view));
        if let Some(second) = &p.second_view {
            out.extend(under("second_view", check_ops(second)));
        }
        if p.chunk == 0 {
            out.push(ParamError::at(&["chunk"], "chunk must be at least 1 row"));
        }
        out
    }

    fn run(p: &EmbedParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        let has = |i: &&cbound_engine::stage::InputArtifact, name: &str| {
            i.meta.outputs.iter().any(|o| o.name == name)
        };
        let model = ctx
            .inputs
            .iter()
            .find(|i| has(i, "encoder.onnx"))
            .ok_or_else(|| {
                StageError::Params(
                    "embed needs a `train` stage among its inputs (one with encoder.onnx)".into(),
                )
            })?;
        let inputs: Vec<_> = ctx
            .inputs
            .iter()
            .filter(|i| has(i, "dataset.parquet"))
            .collect();
        if inputs.is_empty() {
            return Err(StageError::Params(
                "embed needs a `load` stage among its inputs (one with dataset.parquet)".into(),
            ));
        }
        let info = model_info(&model.dir).map_err(|e| StageError::Input(e.to_string()))?;
        let mut sets = Vec::with_capacity(inputs.len());
        for input in &inputs {
            let (ds, normalisation) = read_dataset(&input.dir.join("dataset.parquet"))
                .map_err(|e| StageError::Input(e.to_string()))?;
            let ds = match p.limit {
                Some(n) => ds.limit(n),
                None => ds,
            };
            sets.push((ds, normalisation));
        }
        let splits = split_names(&inputs, &sets)?;
        if sets.iter().any(|(d, _)| d.is_labelled()) && !sets.iter().all(|(d, _)| d.is_labelled()) {
            return Err(StageError::Input(
                "some of embed's datasets are labelled and some are not: give it datasets of one kind".into(),
            ));
        }
        let ds = &sets[0].0;
        if let Some((i, (other, _))) = sets
            .iter()
            .enumerate()
            .find(|(_, (d, _))| d.sample_shape() != ds.sample_shape())
        {
            return Err(StageError::Input(format!(
                "embed's datasets differ in shape: `{}` has {} per sample, `{}` {}",
                inputs[0].instance,
                ds.sample_shape(),
                inputs[i].instance,
                other.sample_shape()
            )));
        }
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
        let projection_dim = match (p.projections, info.projection_dim) {
            (false, _) => None,
            (true, Some(k)) => Some(k),
            (true, None) => {
                return Err(StageError::Input(format!(
                    "`{}` has no projection graph (trained by an older cbound, or without a projector); drop `projections`",
                    model.instance
                )))
            }
        };
        let encoders: Vec<(Option<i64>, String)> = if p.snapshots {
            let names: Vec<String> = model.meta.outputs.iter().map(|o| o.name.clone()).collect();
            let epochs = snapshot_epochs(&names);
            if epochs.is_empty() {
                return Err(StageError::Input(format!(
                    "`{}` saved no encoder snapshots: set `snapshot_every` in its train stage, or drop `snapshots`",
                    model.instance
                )));
            }
            epochs
                .into_iter()
                .map(|e| (Some(e as i64), snapshot_file("encoder", e)))
                .collect()
        } else {
            vec![(None, "encoder.onnx".to_string())]
        };
        let rt = cbound_onnx::runtime::runtime(&cbound_onnx::runtime::LibrarySearch::default())
            .map_err(|e| StageError::Failed(e.to_string()))?;
        let opts = SessionOptions {
            device: p.device,
            // Its own GPU when it asked for one (resources.gpus), so instances never share,
            // unless it asked for a share: then its arena keeps to that share of the memory.
            device_id: ctx.device_id(),
            gpu_memory_share: ctx.gpu_share,
            intra_threads: ctx.threads.max(1),
            ..SessionOptions::default()
        };
        let mut view_ops = vec![ops];
        if let Some(second) = &p.second_view {
            let second: Vec<_> = second.iter().map(OpSpec::to_op).collect();
            let shape2 = output_shape(ds.sample_shape(), &second)
                .map_err(|e| StageError::Params(e.to_string()))?;
            if shape2.numel() != want {
                return Err(StageError::Params(format!(
                    "second_view gives {} values per sample ({shape2}), but the encoder takes {want}",
                    shape2.numel()
                )));
            }
            view_ops.push(second);
        }
        // Every dataset's rows, block after block: dataset 0's rows, then dataset 1's, ...
        let n: usize = sets.iter().map(|(d, _)| d.len()).sum();
        let d = info.embedding_dim;
        let blocks = encoders.len();
        let mut cols = Columns::default();
        let chunk = p.chunk.max(1);
        let mut views = Vec::new();
        // The provider the sessions ran on (all of them ask for the same device).
        let mut provider = "cpu";
        for (b, (epoch, file)) in encoders.iter().enumerate() {
            let open = |file: &str, dim: usize| -> Result<Embedder, StageError> {
                let bytes = std::fs::read(model.dir.join(file)).map_err(|e| StageError::Io {
                    context: format!("reading {file} of `{}`", model.instance),
                    source: e,
                })?;
                let graph = EncoderGraph {
                    model_bytes: bytes,
                    view_shape: info.view_shape.clone(),
                    embedding_dim: dim,
                    params: vec![],
                };
                Embedder::new(&rt, &graph, &opts).map_err(|e| StageError::Failed(e.to_string()))
            };
            let mut embedder = open(file, info.embedding_dim)?;
            provider = embedder.device().as_str();
            let mut projector = projection_dim
                .map(|k| open(&file.replacen("encoder", "projection", 1), k))
                .transpose()?;
            let mut before = 0;
            for (s, (set, normalisation)) in sets.iter().enumerate() {
                // The first dataset's views are seeded as a lone dataset's always were; the
                // others get seeds of their own, so that row i of two datasets does not
                // share its noise.
                let seed = if s == 0 {
                    ctx.seed
                } else {
                    ctx.seed ^ (s as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                };
                let indices: Vec<usize> = (0..set.len()).collect();
                for (c, batch) in indices.chunks(chunk).enumerate() {
                    ctx.check_cancelled()?;
                    ctx.progress(
                        (b * n + before + c * chunk) as u64,
                        (blocks * n) as u64,
                        match epoch {
                            Some(e) => format!("encoding (epoch {e})"),
                            None => "encoding".to_string(),
                        },
                    );
                    // The same views for every snapshot (seeded by sample, not by block), so
                    // the epochs differ only in the encoder.
                    make_views_into(set, batch, &view_ops, seed, 0, normalisation, &mut views)
                        .map_err(|e| StageError::Failed(e.to_string()))?;
                    let embed = |embedder: &mut Embedder, v: &[f32]| {
                        embedder
                            .embed(v, chunk)
                            .map_err(|e| StageError::Failed(e.to_string()))
                    };
                    cols.u.extend(embed(&mut embedder, &views[0])?);
                    if view_ops.len() > 1 {
                        cols.u_view.extend(embed(&mut embedder, &views[1])?);
                    }
                    if let Some(proj) = projector.as_mut() {
                        cols.z.extend(embed(proj, &views[0])?);
                        if view_ops.len() > 1 {
                            cols.z_view.extend(embed(proj, &views[1])?);
                        }
                    }
                    if p.include_input {
                        cols.x.extend_from_slice(&views[0]);
                        if view_ops.len() > 1 {
                            cols.y.extend_from_slice(&views[1]);
                        }
                    }
                    cols.epoch.extend(std::iter::repeat_n(*epoch, batch.len()));
                }
                before += set.len();
            }
        }
        if let Some(bad) = cols
            .u
            .iter()
            .chain(&cols.u_view)
            .position(|v| !v.is_finite())
        {
            return Err(StageError::Failed(format!(
                "embedding of row {} is not finite",
                (bad / d) % n
            )));
        }
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        if p.snapshots {
            fields.push(Field::new("epoch", DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from(cols.epoch)));
        }
        // A per-row value of every dataset, repeated for each snapshot block.
        let each_block = |f: &dyn Fn(&cbound_data::Dataset) -> Vec<u64>| -> Vec<u64> {
            let one: Vec<u64> = sets.iter().flat_map(|(d, _)| f(d)).collect();
            (0..blocks).flat_map(|_| one.iter().copied()).collect()
        };
        fields.push(Field::new("id", DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from(each_block(&|d| d.ids.clone()))));
        if let Some(names) = &splits {
            let one: Vec<&str> = sets
                .iter()
                .zip(names)
                .flat_map(|((d, _), name)| std::iter::repeat_n(name.as_str(), d.len()))
                .collect();
            let all: Vec<&str> = (0..blocks).flat_map(|_| one.iter().copied()).collect();
            fields.push(Field::new("split", DataType::Utf8, false));
            columns.push(Arc::new(StringArray::from(all)));
        }
        if ds.is_labelled() {
            let one: Vec<u32> = sets
                .iter()
                .flat_map(|(d, _)| d.labels.iter().copied())
                .collect();
            let labels: Vec<u32> = (0..blocks).flat_map(|_| one.iter().copied()).collect();
            fields.push(Field::new("label", DataType::UInt32, false));
            columns.push(Arc::new(UInt32Array::from(labels)));
        }
        let lists = [
            ("u", cols.u, d),
            ("u_view", cols.u_view, d),
            ("z", cols.z, projection_dim.unwrap_or(1)),
            ("z_view", cols.z_view, projection_dim.unwrap_or(1)),
            ("x", cols.x, want),
            ("y", cols.y, want),
        ];
        for (name, values, width) in lists {
            if values.is_empty() {
                continue;
            }
            let a =
                float_list_array(values, width).map_err(|e| StageError::Failed(e.to_string()))?;
            fields.push(Field::new(name, a.data_type().clone(), false));
            columns.push(Arc::new(a));
        }
        let mut meta = std::collections::HashMap::new();
        if p.snapshots {
            meta.insert(SNAPSHOT_KEY.to_string(), "true".to_string());
        }
        let batch =
            RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, meta)), columns)
                .map_err(|e| StageError::Failed(format!("building embeddings table: {e}")))?;
        ctx.write_table("embeddings", &batch)?;
        Ok(StageOutput::default()
            .metric("n", n as f64)
            .metric("embedding_dim", d as f64)
            .fact("execution_provider", provider)
            .fact("onnxruntime", rt.version()))
    }
}
