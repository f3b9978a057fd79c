//! Training-step benchmark for the source study's setup (see `bench/torch_reference.py` for
//! the PyTorch twin): batch 256, two views `x + 0.1 * randn` of 3072-d inputs, MLP
//! 3072-512-512-128 + projector 128-512-128, InfoNCE (T = 0.1), Adam lr 1e-3, 2 intra-op
//! threads. Reports median ms/step and samples/s, the fraction of the machine's fp32 matmul
//! peak (2048^3 MatMul through ONNX Runtime with the same threads), and the operators that
//! dominate an ONNX Runtime profile of the step.
//!
//! `cargo run --release --example train_bench -- [--steps 30] [--warmup 5] [--threads 2]
//!  [--ort-lib PATH] [--no-profile] [--separate-views] [--opt disable|basic|extended|all]`
//!
//! By default the step graph takes both views stacked in one `[2B, d]` input (the trainer
//! writes them in place); `--separate-views` uses the `x1`/`x2` inputs plus an in-graph Concat.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use cbound::onnx::graph::{DType, Graph, OPSET};
use cbound::onnx::loss::LossConfig;
use cbound::onnx::models::{ContrastiveModel, ModelConfig};
use cbound::onnx::optim::OptimizerConfig;
use cbound::onnx::runtime::{self, LibrarySearch, Optimization, SessionOptions};
use cbound::onnx::step::{build_train_step, StepConfig};
use cbound::onnx::trainer::Trainer;
use ort::session::SessionInputs;
use ort::value::TensorRef;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    steps: usize,
    warmup: usize,
    threads: usize,
    ort_lib: Option<PathBuf>,
    profile: bool,
    optimization: Optimization,
    separate_views: bool,
}

fn parse_args() -> BoxResult<Args> {
    let mut a = Args {
        steps: 30,
        warmup: 5,
        threads: 2,
        ort_lib: None,
        profile: true,
        optimization: Optimization::All,
        separate_views: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--steps" => a.steps = value()?.parse()?,
            "--warmup" => a.warmup = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--ort-lib" => a.ort_lib = Some(PathBuf::from(value()?)),
            "--no-profile" => a.profile = false,
            "--separate-views" => a.separate_views = true,
            "--opt" => {
                a.optimization = match value()?.as_str() {
                    "disable" => Optimization::Disable,
                    "basic" => Optimization::Basic,
                    "extended" => Optimization::Extended,
                    _ => Optimization::All,
                }
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if a.steps == 0 {
        return Err("--steps must be positive".into());
    }
    Ok(a)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// fp32 matmul peak (FLOP/s) of a 2048^3 MatMul through ONNX Runtime: (median, best) run.
fn matmul_peak(rt: &runtime::Runtime, threads: usize) -> BoxResult<(f64, f64)> {
    let n = 2048;
    let mut g = Graph::new("peak");
    let a = g.input("a", DType::F32, &[n, n])?;
    let b = g.input("b", DType::F32, &[n, n])?;
    let c = g.matmul(a, b)?;
    g.output(c, "c")?;
    let opts = SessionOptions {
        intra_threads: threads,
        ..SessionOptions::default()
    };
    let mut session = rt.session(&g.to_model_bytes(OPSET)?, &opts)?.session;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let data: Vec<f32> = (0..n * n)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let mut times = Vec::new();
    for i in 0..8 {
        let ta = TensorRef::from_array_view((vec![n as i64, n as i64], data.as_slice()))?;
        let tb = TensorRef::from_array_view((vec![n as i64, n as i64], data.as_slice()))?;
        let t0 = Instant::now();
        let out = session.run(SessionInputs::from(ort::inputs!["a" => ta, "b" => tb]))?;
        let dt = t0.elapsed().as_secs_f64();
        drop(out);
        if i >= 2 {
            times.push(dt);
        }
    }
    let flops = 2.0 * (n as f64).powi(3);
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((flops / median(&mut times), flops / best))
}

/// Per-op-type kernel time (µs) and node-run counts from an ONNX Runtime profile.
fn summarise_profile(path: &PathBuf) -> BoxResult<Vec<(String, f64, usize)>> {
    let text = std::fs::read_to_string(path)?;
    let events: serde_json::Value = serde_json::from_str(&text)?;
    let mut by_op: HashMap<String, (f64, usize)> = HashMap::new();
    for e in events.as_array().into_iter().flatten() {
        let is_kernel = e["cat"] == "Node"
            && e["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_kernel_time"));
        if !is_kernel {
            continue;
        }
        let op = e["args"]["op_name"].as_str().unwrap_or("?").to_string();
        let dur = e["dur"].as_f64().unwrap_or(0.0);
        let entry = by_op.entry(op).or_default();
        entry.0 += dur;
        entry.1 += 1;
    }
    let mut v: Vec<(String, f64, usize)> = by_op.into_iter().map(|(k, (d, c))| (k, d, c)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(v)
}

struct Data {
    pool: Vec<f32>,
    rng: ChaCha8Rng,
}

impl Data {
    fn batch(&mut self, b: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
        let rows = self.pool.len() / d;
        let pick = Uniform::new(0, rows).map_err(|e| e.to_string());
        let (mut v1, mut v2) = (Vec::with_capacity(b * d), Vec::with_capacity(b * d));
        if let Ok(pick) = pick {
            for _ in 0..b {
                let r = pick.sample(&mut self.rng);
                for &x in &self.pool[r * d..(r + 1) * d] {
                    let n1: f32 = StandardNormal.sample(&mut self.rng);
                    let n2: f32 = StandardNormal.sample(&mut self.rng);
                    v1.push(x + 0.1 * n1);
                    v2.push(x + 0.1 * n2);
                }
            }
        }
        (v1, v2)
    }
}

fn main() -> BoxResult<()> {
    let args = parse_args()?;
    let rt = runtime::runtime(&LibrarySearch {
        explicit: args.ort_lib.clone(),
        project_root: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        ..LibrarySearch::default()
    })?;
    println!(
        "ONNX Runtime {} from {}",
        rt.version(),
        rt.library().display()
    );

    let (batch, d) = (256, 3072);
    let model = ContrastiveModel::new(&ModelConfig::study(d))?;
    let t0 = Instant::now();
    let step = build_train_step(
        &model,
        &if args.separate_views {
            StepConfig::new(batch, LossConfig::study(), OptimizerConfig::adam())
        } else {
            StepConfig::new(batch, LossConfig::study(), OptimizerConfig::adam()).stacked()
        },
    )?;
    println!(
        "step graph: {} bytes, built in {:.1} ms; {:.3} GFLOP of MatMul/Gemm per step",
        step.model_bytes.len(),
        t0.elapsed().as_secs_f64() * 1e3,
        step.matmul_flops as f64 / 1e9
    );
    let opts = SessionOptions {
        intra_threads: args.threads,
        optimization: args.optimization,
        ..SessionOptions::default()
    };
    let init = model.init_params(0)?;
    let mut trainer = Trainer::new(&rt, &step, &init, &opts)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let pool: Vec<f32> = (0..4096 * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let mut data = Data { pool, rng };

    let mut times = Vec::new();
    let mut last = 0.0;
    for i in 0..args.warmup + args.steps {
        let (v1, v2) = data.batch(batch, d);
        let t = Instant::now();
        last = trainer.step(&v1, &v2, 1e-3)?;
        let dt = t.elapsed().as_secs_f64();
        if i >= args.warmup {
            times.push(dt);
        }
    }
    let med = median(&mut times);
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let (peak, peak_best) = matmul_peak(&rt, args.threads)?;
    let achieved = step.matmul_flops as f64 / med;
    let achieved_best = step.matmul_flops as f64 / best;
    let views = if args.separate_views {
        "separate x1/x2 + Concat"
    } else {
        "stacked [2B, d]"
    };
    println!(
        "threads {}  batch {batch}  views {views}  steps {} (after {} warm-up)",
        args.threads, args.steps, args.warmup
    );
    println!(
        "median {:.2} ms/step  {:.0} samples/s  (best {:.2} ms/step)  final loss {last:.4}",
        med * 1e3,
        batch as f64 / med,
        best * 1e3
    );
    println!(
        "matmul peak (2048^3 MatMul via ORT, {} threads): median {:.1} GFLOP/s, best {:.1}",
        args.threads,
        peak / 1e9,
        peak_best / 1e9
    );
    println!(
        "step MatMul/Gemm throughput: median {:.1} GFLOP/s = {:.1}% of peak; best {:.1} GFLOP/s = {:.1}% of best peak",
        achieved / 1e9,
        100.0 * achieved / peak,
        achieved_best / 1e9,
        100.0 * achieved_best / peak_best
    );

    if args.profile {
        let dir = std::env::temp_dir().join(format!("cbound_bench_profile_{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let popts = SessionOptions {
            profiling: Some(dir.join("train_step")),
            ..opts.clone()
        };
        let mut prof = Trainer::new(&rt, &step, &init, &popts)?;
        let n_prof = 10;
        for _ in 0..n_prof {
            let (v1, v2) = data.batch(batch, d);
            prof.step(&v1, &v2, 1e-3)?;
        }
        let file = prof.end_profiling()?;
        let ops = summarise_profile(&file)?;
        let total: f64 = ops.iter().map(|o| o.1).sum();
        println!(
            "ONNX Runtime profile ({n_prof} steps, {}): kernel time per step by op type",
            file.display()
        );
        for (op, us, count) in ops.iter().take(12) {
            println!(
                "  {op:<22} {:>8.2} ms  {:>5.1}%  ({} nodes/step)",
                us / 1e3 / n_prof as f64,
                100.0 * us / total,
                count / n_prof
            );
        }
        println!(
            "  total kernel time {:.2} ms/step",
            total / 1e3 / n_prof as f64
        );
    }
    Ok(())
}
