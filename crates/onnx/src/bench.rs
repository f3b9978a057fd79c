//! Machinery of the training-step benchmark (`examples/train_bench.rs` drives it side by side
//! with PyTorch; a unit test runs it at a tiny size): the study's model family, timing a step
//! through the [`Trainer`], an ONNX Runtime profile summed per operator type, and the fp32 GEMM
//! rate of the step's own matrix products run on their own.
//!
//! The GEMM rate is measured on the step's shapes because MLAS runs different shapes at very
//! different rates (a 2048^3 product is slower than the step's 512 x 3072 x 512), so a square
//! "peak" misstates how close the step's products come to what the library can do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::session::SessionInputs;
use ort::value::TensorRef;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};

use super::checkpoint::NamedTensor;
use super::graph::{DType, GemmAttrs, Graph, GraphError, Op, ValueId, OPSET};
use super::loss::LossConfig;
use super::models::{
    Activation, ContrastiveModel, EncoderConfig, MlpConfig, ModelConfig, ModelError,
};
use super::optim::OptimizerConfig;
use super::runtime::{ort_err, Runtime, RuntimeError, SessionOptions};
use super::step::{build_train_step_graph, matmul_flops, StepConfig, StepError, StepGraph};
use super::trainer::Trainer;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("reading the ONNX Runtime profile `{path}`: {detail}")]
    Profile { path: PathBuf, detail: String },
    #[error("invalid benchmark setting: {0}")]
    Config(String),
}

pub type BenchResult<T> = Result<T, BenchError>;

/// The study's family: encoder `input-H-H-128`, projector `128-H-128`, ReLU (H = 512 is the
/// source study's model).
pub fn study_family(input: usize, hidden: usize) -> ModelConfig {
    ModelConfig {
        encoder: EncoderConfig::Mlp(MlpConfig {
            dims: vec![input, hidden, hidden, 128],
            activation: Activation::Relu,
        }),
        projector: Some(MlpConfig {
            dims: vec![128, hidden, 128],
            activation: Activation::Relu,
        }),
    }
}

/// One benchmark case: the study's step (InfoNCE t = 0.1, stacked views) at one size.
#[derive(Debug, Clone)]
pub struct StepCase {
    pub input: usize,
    pub hidden: usize,
    pub batch: usize,
    pub optimizer: OptimizerConfig,
}

/// A built case: the step graph, the GEMM-only graph of its products, and the initial
/// parameters.
pub struct PreparedCase {
    pub case: StepCase,
    pub step: StepGraph,
    /// Every MatMul/Gemm of the step graph with the same shapes and attributes, as
    /// independent nodes of one graph (see [`gemm_graph`]).
    pub gemms: Graph,
    pub init: Vec<NamedTensor>,
}

impl PreparedCase {
    pub fn new(case: StepCase) -> BenchResult<PreparedCase> {
        let model = ContrastiveModel::new(&study_family(case.input, case.hidden))?;
        let cfg = StepConfig::new(case.batch, LossConfig::study(), case.optimizer).stacked();
        let (g, step) = build_train_step_graph(&model, &cfg, DType::F32)?;
        let step = StepGraph {
            model_bytes: g.to_model_bytes(OPSET)?,
            ..step
        };
        let gemms = gemm_graph(&g)?;
        let init = model.init_params(0)?;
        Ok(PreparedCase {
            case,
            step,
            gemms,
            init,
        })
    }
}

/// Views for the benchmark: rows of a fixed Gaussian pool plus fresh noise `0.1 * randn`, as
/// `bench/torch_reference.py` makes them.
pub struct ViewSource {
    pool: Vec<f32>,
    dim: usize,
    rng: ChaCha8Rng,
}

impl ViewSource {
    pub fn new(rows: usize, dim: usize, seed: u64) -> ViewSource {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pool = (0..rows * dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        ViewSource { pool, dim, rng }
    }

    pub fn batch(&mut self, b: usize) -> BenchResult<(Vec<f32>, Vec<f32>)> {
        let d = self.dim;
        let rows = self.pool.len() / d.max(1);
        let pick = Uniform::new(0, rows).map_err(|e| BenchError::Config(e.to_string()))?;
        let (mut v1, mut v2) = (Vec::with_capacity(b * d), Vec::with_capacity(b * d));
        for _ in 0..b {
            let r = pick.sample(&mut self.rng);
            for &x in &self.pool[r * d..(r + 1) * d] {
                let n1: f32 = StandardNormal.sample(&mut self.rng);
                let n2: f32 = StandardNormal.sample(&mut self.rng);
                v1.push(x + 0.1 * n1);
                v2.push(x + 0.1 * n2);
            }
        }
        Ok((v1, v2))
    }
}

/// Wall-clock times of timed steps.
#[derive(Debug, Clone)]
pub struct StepTimes {
    pub median_s: f64,
    pub best_s: f64,
    pub final_loss: f32,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Times `steps` training steps after `warmup` untimed ones, on a fresh trainer.
pub fn time_steps(
    rt: &Runtime,
    prepared: &PreparedCase,
    opts: &SessionOptions,
    data: &mut ViewSource,
    (warmup, steps): (usize, usize),
) -> BenchResult<StepTimes> {
    if steps == 0 {
        return Err(BenchError::Config("steps must be positive".into()));
    }
    let mut trainer = Trainer::new(rt, &prepared.step, &prepared.init, opts)?;
    let mut times = Vec::with_capacity(steps);
    let mut last = f32::NAN;
    for i in 0..warmup + steps {
        let (v1, v2) = data.batch(prepared.case.batch)?;
        let t = Instant::now();
        last = trainer.step(&v1, &v2, 1e-3)?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(StepTimes {
        median_s: median(&mut times),
        best_s: best,
        final_loss: last,
    })
}

/// Kernel time of one operator type in a profile, per profiled run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    pub op: String,
    pub ms_per_run: f64,
    pub nodes_per_run: f64,
}

/// Operator types ONNX Runtime runs matrix products as (after its fusions).
pub const GEMM_OPS: &[&str] = &["Gemm", "FusedGemm", "MatMul", "FusedMatMul"];

/// Per-operator-type kernel time of an ONNX Runtime profile (JSON trace), divided by `runs`,
/// largest first.
pub fn summarise_profile(path: &Path, runs: usize) -> BenchResult<Vec<OpTime>> {
    let err = |detail: String| BenchError::Profile {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let events: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let events = events
        .as_array()
        .ok_or_else(|| err("the trace is not a JSON array of events".into()))?;
    let mut by_op: HashMap<String, (f64, usize)> = HashMap::new();
    for e in events {
        let is_kernel = e["cat"] == "Node"
            && e["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_kernel_time"));
        if !is_kernel {
            continue;
        }
        let op = e["args"]["op_name"].as_str().unwrap_or("?").to_string();
        let entry = by_op.entry(op).or_default();
        entry.0 += e["dur"].as_f64().unwrap_or(0.0);
        entry.1 += 1;
    }
    let runs = runs.max(1) as f64;
    let mut v: Vec<OpTime> = by_op
        .into_iter()
        .map(|(op, (us, n))| OpTime {
            op,
            ms_per_run: us / 1e3 / runs,
            nodes_per_run: n as f64 / runs,
        })
        .collect();
    v.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
    Ok(v)
}

/// Profiles `runs` steps (after two untimed ones) and returns the per-operator-type totals.
/// The trace is written under `dir`.
pub fn profile_steps(
    rt: &Runtime,
    prepared: &PreparedCase,
    opts: &SessionOptions,
    data: &mut ViewSource,
    runs: usize,
    dir: &Path,
) -> BenchResult<Vec<OpTime>> {
    // Warm-up steps go through a separate trainer so the trace holds only the profiled runs.
    time_steps(rt, prepared, opts, data, (0, 2))?;
    let popts = SessionOptions {
        profiling: Some(dir.join("train_step")),
        ..opts.clone()
    };
    let mut trainer = Trainer::new(rt, &prepared.step, &prepared.init, &popts)?;
    for _ in 0..runs {
        let (v1, v2) = data.batch(prepared.case.batch)?;
        trainer.step(&v1, &v2, 1e-3)?;
    }
    let file = trainer.end_profiling()?;
    summarise_profile(&file, runs)
}

/// Every MatMul/Gemm node of `g` as an independent node of a new graph, with the same operand
/// shapes and attributes (operands become inputs named `a{i}`, `b{i}`, `c{i}`), so their
/// fp32 rate can be measured outside the step.
pub fn gemm_graph(g: &Graph) -> BenchResult<Graph> {
    let mut out = Graph::new("step_gemms");
    let mut k = 0;
    for n in g.nodes() {
        let operand = |out: &mut Graph, prefix: &str, j: usize| {
            out.input(
                &format!("{prefix}{k}"),
                g.dtype(n.inputs[j]),
                g.shape(n.inputs[j]),
            )
        };
        let y = match &n.op {
            Op::MatMul => {
                let a = operand(&mut out, "a", 0)?;
                let b = operand(&mut out, "b", 1)?;
                out.matmul(a, b)?
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let a = operand(&mut out, "a", 0)?;
                let b = operand(&mut out, "b", 1)?;
                let c = match n.inputs.len() > 2 {
                    true => Some(operand(&mut out, "c", 2)?),
                    false => None,
                };
                let attrs = GemmAttrs::new(*alpha, *trans_a, *trans_b).with_beta(*beta);
                out.gemm(a, b, c, attrs)?
            }
            _ => continue,
        };
        out.output(y, &format!("y{k}"))?;
        k += 1;
    }
    Ok(out)
}

/// The products of a [`gemm_graph`] as text for `bench/torch_reference.py --products`, so that
/// PyTorch times the same products on their own: `A_SHAPE:B_SHAPE:TA:TB:C` per product (shapes
/// as stored, `x`-separated; TA, TB 0 or 1 for a transposed operand, C 1 when a bias is
/// added), products joined by `;`. Batched MatMuls keep their leading dimensions.
pub fn product_spec(gemms: &Graph) -> String {
    let dims = |v: ValueId| {
        gemms
            .shape(v)
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    gemms
        .nodes()
        .iter()
        .filter_map(|n| {
            let (ta, tb) = match &n.op {
                Op::MatMul => (false, false),
                Op::Gemm {
                    trans_a, trans_b, ..
                } => (*trans_a, *trans_b),
                _ => return None,
            };
            Some(format!(
                "{}:{}:{}:{}:{}",
                dims(n.inputs[0]),
                dims(n.inputs[1]),
                u8::from(ta),
                u8::from(tb),
                u8::from(n.inputs.len() > 2)
            ))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// fp32 rate (FLOP/s) of the step's products run on their own: `gemms` (from [`gemm_graph`])
/// on Gaussian operands, median wall time of `runs` runs after two untimed ones.
pub fn gemm_rate(
    rt: &Runtime,
    gemms: &Graph,
    opts: &SessionOptions,
    runs: usize,
) -> BenchResult<f64> {
    let flops = matmul_flops(gemms) as f64;
    let mut session = rt.session(&gemms.to_model_bytes(OPSET)?, opts)?.session;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let operands: Vec<(String, Vec<i64>, Vec<f32>)> = gemms
        .inputs()
        .iter()
        .map(|&v| {
            let shape = gemms.shape(v);
            let data = (0..shape.iter().product::<usize>())
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            let dims = shape.iter().map(|&d| d as i64).collect();
            (gemms.value(v).name.clone(), dims, data)
        })
        .collect();
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + 2 {
        let mut feeds = Vec::with_capacity(operands.len());
        for (name, dims, data) in &operands {
            let t = TensorRef::from_array_view((dims.clone(), data.as_slice()))
                .map_err(ort_err(format!("wrapping operand `{name}`")))?;
            feeds.push((name.as_str(), t));
        }
        let t0 = Instant::now();
        let out = session
            .run(SessionInputs::from(feeds))
            .map_err(ort_err("running the GEMM-only graph"))?;
        let dt = t0.elapsed().as_secs_f64();
        drop(out);
        if i >= 2 {
            times.push(dt);
        }
    }
    Ok(flops / median(&mut times))
}

/// The kernel time of the matrix-product operator types in a profile summary (ms per run).
pub fn gemm_ms(ops: &[OpTime]) -> f64 {
    ops.iter()
        .filter(|o| GEMM_OPS.contains(&o.op.as_str()))
        .map(|o| o.ms_per_run)
        .sum()
}

/// One line of `bench/torch_reference.py`'s output:
/// `torch VARIANT batch B hidden H median_ms M best_ms M loss L`.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchLine {
    pub variant: String,
    pub batch: usize,
    pub hidden: usize,
    pub median_ms: f64,
    pub best_ms: f64,
}

/// Parses a line of `bench/torch_reference.py`; `None` for any other line.
pub fn parse_torch_line(line: &str) -> Option<TorchLine> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["torch", variant, "batch", b, "hidden", h, "median_ms", m, "best_ms", best, ..] => {
            Some(TorchLine {
                variant: variant.to_string(),
                batch: b.parse().ok()?,
                hidden: h.parse().ok()?,
                median_ms: m.parse().ok()?,
                best_ms: best.parse().ok()?,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::runtime;

    /// The whole benchmark at a tiny size: timing, the profile and the GEMM rate.
    #[test]
    fn tiny_benchmark_runs_and_profiles_the_step() -> Result<(), Box<dyn std::error::Error>> {
        let rt = runtime();
        let case = StepCase {
            input: 24,
            hidden: 16,
            batch: 8,
            optimizer: OptimizerConfig::adam(),
        };
        let prepared = PreparedCase::new(case)?;
        // The GEMM-only graph holds exactly the step's products.
        assert_eq!(matmul_flops(&prepared.gemms), prepared.step.matmul_flops);
        let opts = SessionOptions {
            intra_threads: 1,
            ..SessionOptions::default()
        };
        let mut data = ViewSource::new(64, 24, 1);
        let t = time_steps(&rt, &prepared, &opts, &mut data, (1, 3))?;
        assert!(t.final_loss.is_finite() && t.best_s <= t.median_s, "{t:?}");
        let dir = tempfile::tempdir()?;
        let ops = profile_steps(&rt, &prepared, &opts, &mut data, 2, dir.path())?;
        // Every product of the step shows up as a matrix-product kernel: 5 Linear layers
        // forward and their weight gradients, input gradients, bias column sums and the
        // logits with their two gradients.
        let gemm_nodes: f64 = ops
            .iter()
            .filter(|o| GEMM_OPS.contains(&o.op.as_str()))
            .map(|o| o.nodes_per_run)
            .sum();
        let expected = prepared
            .gemms
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::Gemm { .. } | Op::MatMul))
            .count();
        assert_eq!(gemm_nodes, expected as f64, "{ops:?}");
        assert!(gemm_ms(&ops) > 0.0, "{ops:?}");
        assert!(gemm_rate(&rt, &prepared.gemms, &opts, 2)? > 0.0);
        // The text PyTorch reads back describes the same products: one entry per node, and
        // the FLOPs recomputed from it alone equal the step's.
        let spec = product_spec(&prepared.gemms);
        let mut flops = 0u64;
        for p in spec.split(';') {
            let f: Vec<&str> = p.split(':').collect();
            assert_eq!(f.len(), 5, "{p}");
            let dims = |t: &str| -> Vec<u64> { t.split('x').map(|d| d.parse().unwrap()).collect() };
            let (a, b) = (dims(f[0]), dims(f[1]));
            let (m, k) = if f[2] == "1" {
                (a[1], a[0])
            } else {
                (a[0], a[1])
            };
            let n = if f[3] == "1" { b[0] } else { b[1] };
            flops += 2 * m * k * n;
        }
        assert_eq!(spec.split(';').count(), expected);
        assert_eq!(flops, prepared.step.matmul_flops);
        Ok(())
    }

    #[test]
    fn torch_lines_parse() {
        let l = parse_torch_line(
            "torch fused batch 256 hidden 512 median_ms 21.034 best_ms 20.1 loss 0.1776",
        );
        assert_eq!(
            l,
            Some(TorchLine {
                variant: "fused".into(),
                batch: 256,
                hidden: 512,
                median_ms: 21.034,
                best_ms: 20.1,
            })
        );
        assert_eq!(parse_torch_line("torch 2.15 threads=2"), None);
    }
}
