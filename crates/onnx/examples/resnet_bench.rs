//! ResNet training-step benchmark, the cbound side of `bench/resnet_step.py` (which runs the
//! PyTorch twin and alternates rounds with this binary): ResNet-18 (CIFAR stem, BatchNorm in
//! training mode) + projector 512-512-128, both views as one `[2B, 3, H, W]` batch, NT-Xent
//! (t = 0.5), SGD momentum 0.9, weight decay 5e-4. Prints one JSON line: the median ms/step of
//! the timed steps (session creation and warm-up excluded) and, with `--profile`, the operator
//! types' share of an ONNX Runtime profile of the step.
//!
//! `cargo run --profile release -p cbound-onnx --example resnet_bench -- [--steps 10]
//!  [--warmup 2] [--threads 2] [--batch 32] [--width 1] [--size 32] [--depth 18] [--profile]
//!  [--no-spin] [--plain-convs]` (`--no-spin`: ONNX Runtime's idle threads sleep instead of
//!  spinning, which matters when other processes share the cores; `--plain-convs`: every
//!  convolution as the plain ai.onnx `Conv`, none through the NCHWc kernels, as before they
//!  were used)

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use cbound_onnx::loss::{LossConfig, LossKind};
use cbound_onnx::models::{
    Activation, ContrastiveModel, EncoderConfig, MlpConfig, ModelConfig, ResNetConfig, ResNetDepth,
    Stem,
};
use cbound_onnx::optim::OptimizerConfig;
use cbound_onnx::runtime::{self, LibrarySearch, SessionOptions};
use cbound_onnx::step::{build_train_step, StepConfig};
use cbound_onnx::Trainer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BoxResult<()> {
    let mut args: HashMap<String, String> = HashMap::new();
    let (mut profile, mut spinning, mut plain_convs) = (false, true, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--profile" => {
                profile = true;
                continue;
            }
            "--no-spin" => {
                spinning = false;
                continue;
            }
            "--plain-convs" => {
                plain_convs = true;
                continue;
            }
            _ => {}
        }
        let key = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {flag}"))?;
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        args.insert(key.to_string(), value);
    }
    let get = |k: &str, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_string());
    let steps: usize = get("steps", "10").parse()?;
    let warmup: usize = get("warmup", "2").parse()?;
    let threads: usize = get("threads", "2").parse()?;
    let batch: usize = get("batch", "32").parse()?;
    let width: f64 = get("width", "1").parse()?;
    let size: usize = get("size", "32").parse()?;
    let depth = match get("depth", "18").as_str() {
        "34" => ResNetDepth::R34,
        _ => ResNetDepth::R18,
    };
    if steps == 0 {
        return Err("--steps must be positive".into());
    }

    let rt = runtime::runtime(&LibrarySearch {
        project_root: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")),
        ..LibrarySearch::default()
    })?;
    let enc = ResNetConfig {
        input: [3, size, size],
        depth,
        stem: Stem::Cifar,
        width,
    };
    let feat = enc.widths()[3];
    let model = ContrastiveModel::new(&ModelConfig {
        encoder: EncoderConfig::ResNet(enc),
        projector: Some(MlpConfig {
            dims: vec![feat, 512, 128],
            activation: Activation::Relu,
        }),
    })?;
    let loss = LossConfig {
        kind: LossKind::NtXent,
        temperature: 0.5,
        eps: 1e-12,
    };
    let sgd = OptimizerConfig::Sgd {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    // As the train stage builds a CPU step: convolutions blocked where this CPU's NCHWc
    // kernels exist and gain.
    let block = if plain_convs { None } else { rt.conv_block() };
    let step = build_train_step(
        &model,
        &StepConfig::new(batch, loss, sgd)
            .stacked()
            .with_blocked_convs(block),
    )?;
    let opts = SessionOptions {
        intra_threads: threads,
        spinning,
        ..SessionOptions::default()
    };
    let init = model.init_params(0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = batch * 3 * size * size;
    let views: Vec<(Vec<f32>, Vec<f32>)> = (0..4)
        .map(|_| {
            let mut v =
                || -> Vec<f32> { (0..n).map(|_| StandardNormal.sample(&mut rng)).collect() };
            (v(), v())
        })
        .collect();
    let mut trainer = Trainer::new(&rt, &step, &init, &opts)?;
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let (a, b) = &views[i % views.len()];
        let t = Instant::now();
        trainer.step(a, b, 0.05)?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];

    let mut ops = Vec::new();
    if profile {
        let dir = tempfile_dir()?;
        let popts = SessionOptions {
            profiling: Some(dir.join("resnet_step")),
            ..opts.clone()
        };
        let mut prof = Trainer::new(&rt, &step, &init, &popts)?;
        for (a, b) in views.iter().cycle().take(PROFILE_WARM_RUNS + views.len()) {
            prof.step(a, b, 0.05)?;
        }
        let trace = prof.end_profiling()?;
        ops = op_shares(&std::fs::read_to_string(&trace)?)?;
        // `CBOUND_KEEP_PROFILE=1` keeps the trace (its path goes to stderr) for a closer look.
        if std::env::var_os("CBOUND_KEEP_PROFILE").is_some() {
            eprintln!("profile: {}", trace.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let ops_json: Vec<String> = ops
        .iter()
        .take(8)
        .map(|(k, v)| format!("[\"{k}\",{v:.3}]"))
        .collect();
    println!(
        "{{\"impl\":\"cbound\",\"ms_per_step\":{median:.2},\"steps\":{steps},\"batch\":{batch},\"width\":{width},\"size\":{size},\"threads\":{threads},\"conv_block\":{},\"matmul_gflop\":{:.3},\"ort\":\"{}\",\"ops\":[{}]}}",
        block.map_or("null".to_string(), |b| b.to_string()),
        step.matmul_flops as f64 / 1e9,
        rt.version(),
        ops_json.join(",")
    );
    Ok(())
}

fn tempfile_dir() -> BoxResult<PathBuf> {
    let dir = std::env::temp_dir().join(format!("cbound-resnet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Profiled runs left out of the operator shares: the profiled session is fresh, and in its
/// first two runs the memory arena still hands out buffers touched for the first time, which
/// made operators that allocate (the BatchNorm chain's `Sub` and `Add`) look up to 8x slower
/// than they run in steady state.
const PROFILE_WARM_RUNS: usize = 2;

/// Share of kernel time per operator type in an ONNX Runtime profile, largest first, over
/// the runs after the first [`PROFILE_WARM_RUNS`].
fn op_shares(trace: &str) -> BoxResult<Vec<(String, f64)>> {
    let events: serde_json::Value = serde_json::from_str(trace)?;
    let events = events.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut runs: Vec<(f64, f64)> = events
        .iter()
        .filter(|e| e["cat"] == "Session" && e["name"] == "model_run")
        .filter_map(|e| Some((e["ts"].as_f64()?, e["dur"].as_f64()?)))
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let first_run_end = match PROFILE_WARM_RUNS.checked_sub(1).and_then(|i| runs.get(i)) {
        Some((ts, dur)) => ts + dur,
        None => f64::NEG_INFINITY,
    };
    let mut per_op: HashMap<String, f64> = HashMap::new();
    for e in events {
        let is_kernel = e["cat"] == "Node"
            && e["ts"].as_f64().is_some_and(|ts| ts > first_run_end)
            && e["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_kernel_time"));
        if is_kernel {
            let op = e["args"]["op_name"].as_str().unwrap_or("?").to_string();
            *per_op.entry(op).or_default() += e["dur"].as_f64().unwrap_or(0.0);
        }
    }
    let total: f64 = per_op.values().sum();
    let mut v: Vec<(String, f64)> = per_op
        .into_iter()
        .map(|(k, d)| (k, d / total.max(1.0)))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(v)
}
