//! Training-step benchmark, cbound against PyTorch in one run, on the study's family: two views
//! `x + 0.1 * randn` of 3072-d inputs, MLP 3072-H-H-128 + projector 128-H-128 (ReLU), InfoNCE
//! (t = 0.1), Adam lr 1e-3, 2 intra-op threads, at every batch x hidden size asked for.
//!
//! Rounds alternate cbound and PyTorch (`bench/torch_reference.py`, both its variants: one pass
//! over both views + `Adam(fused=True)`, and two passes + default Adam) so that both see the
//! same machine load; the table gives medians over rounds and the ratios PyTorch / cbound
//! (above 1: cbound is faster). After the rounds, per size: an ONNX Runtime profile of cbound's
//! step summed per operator type, and the fp32 rate of the step's own products run on their own
//! against the rate they reach inside the step.
//!
//! ```text
//! cargo run --profile release --example train_bench -- [--torch PYTHON] [--rounds 4]
//!   [--sizes 64x512,256x512,...] [--steps 20] [--warmup 3] [--threads 2] [--input 3072]
//!   [--profile-steps 10] [--no-profile] [--opt disable|basic|extended|all] [--no-spin]
//!   [--ort-lib PATH]
//! ```
//!
//! Without `--torch` only cbound is timed. `--sizes` defaults to the grid batch 64, 256, 1024 x
//! hidden 128, 512, 1024.

use std::path::PathBuf;
use std::process::Command;

use cbound::onnx::bench::{
    gemm_ms, gemm_rate, parse_torch_line, product_spec, profile_steps, time_steps, PreparedCase,
    StepCase, TorchLine, ViewSource,
};
use cbound::onnx::optim::OptimizerConfig;
use cbound::onnx::runtime::{self, LibrarySearch, Optimization, SessionOptions};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    sizes: Vec<(usize, usize)>,
    rounds: usize,
    steps: usize,
    warmup: usize,
    threads: usize,
    input: usize,
    torch: Option<PathBuf>,
    profile_steps: usize,
    optimization: Optimization,
    spinning: bool,
    ort_lib: Option<PathBuf>,
}

fn parse_sizes(text: &str) -> BoxResult<Vec<(usize, usize)>> {
    text.split(',')
        .map(|s| {
            let (b, h) = s
                .split_once('x')
                .ok_or_else(|| format!("size `{s}` is not BATCHxHIDDEN"))?;
            Ok((b.trim().parse()?, h.trim().parse()?))
        })
        .collect()
}

fn parse_args() -> BoxResult<Args> {
    let mut grid = Vec::new();
    for b in [64, 256, 1024] {
        for h in [128, 512, 1024] {
            grid.push((b, h));
        }
    }
    let mut a = Args {
        sizes: grid,
        rounds: 4,
        steps: 20,
        warmup: 3,
        threads: 2,
        input: 3072,
        torch: None,
        profile_steps: 10,
        optimization: Optimization::All,
        spinning: true,
        ort_lib: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sizes" => a.sizes = parse_sizes(&value()?)?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--warmup" => a.warmup = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--input" => a.input = value()?.parse()?,
            "--torch" => a.torch = Some(PathBuf::from(value()?)),
            "--profile-steps" => a.profile_steps = value()?.parse()?,
            "--no-profile" => a.profile_steps = 0,
            "--no-spin" => a.spinning = false,
            "--ort-lib" => a.ort_lib = Some(PathBuf::from(value()?)),
            "--opt" => {
                a.optimization = match value()?.as_str() {
                    "disable" => Optimization::Disable,
                    "basic" => Optimization::Basic,
                    "extended" => Optimization::Extended,
                    "all" => Optimization::All,
                    other => return Err(format!("unknown --opt {other}").into()),
                }
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if a.steps == 0 || a.rounds == 0 || a.sizes.is_empty() {
        return Err("--steps, --rounds and --sizes must be positive / non-empty".into());
    }
    Ok(a)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `bench/torch_reference.py` with `args` and returns the result lines it printed.
fn torch_lines(python: &PathBuf, args: &[String]) -> BoxResult<Vec<TorchLine>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/torch_reference.py");
    let out = Command::new(python).arg(&script).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "{} {} {} failed: {}",
            python.display(),
            script.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_torch_line)
        .collect())
}

/// `--batch B --hidden H --threads T`, which every PyTorch run takes.
fn torch_size_args(a: &Args, batch: usize, hidden: usize) -> Vec<String> {
    [
        "--batch",
        &batch.to_string(),
        "--hidden",
        &hidden.to_string(),
    ]
    .into_iter()
    .chain(["--threads", &a.threads.to_string()])
    .map(String::from)
    .collect()
}

/// Runs the PyTorch twin once for one size; both variants, in one process.
fn run_torch(python: &PathBuf, a: &Args, batch: usize, hidden: usize) -> BoxResult<Vec<TorchLine>> {
    let mut args = torch_size_args(a, batch, hidden);
    for (flag, value) in [
        ("--input", a.input),
        ("--steps", a.steps),
        ("--warmup", a.warmup),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    let lines = torch_lines(python, &args)?;
    if lines.len() != 2 {
        return Err("expected 2 result lines from bench/torch_reference.py".into());
    }
    Ok(lines)
}

/// PyTorch's time for one pass over the step's products on their own (`--products`), ms.
fn run_torch_products(
    python: &PathBuf,
    a: &Args,
    batch: usize,
    hidden: usize,
    spec: &str,
) -> BoxResult<f64> {
    let mut args = torch_size_args(a, batch, hidden);
    args.extend(["--products", spec, "--steps", "10", "--warmup", "2"].map(String::from));
    torch_lines(python, &args)?
        .into_iter()
        .find(|l| l.variant == "products")
        .map(|l| l.median_ms)
        .ok_or_else(|| "no `torch products` line from bench/torch_reference.py".into())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> BoxResult<()> {
    let a = parse_args()?;
    let rt = runtime::runtime(&LibrarySearch {
        explicit: a.ort_lib.clone(),
        project_root: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        ..LibrarySearch::default()
    })?;
    let opts = SessionOptions {
        intra_threads: a.threads,
        optimization: a.optimization,
        spinning: a.spinning,
        ..SessionOptions::default()
    };
    println!(
        "ONNX Runtime {} from {}; {} threads, {} rounds of {} steps (after {} warm-up) per size",
        rt.version(),
        rt.library().display(),
        a.threads,
        a.rounds,
        a.steps,
        a.warmup
    );
    let mut data = ViewSource::new(4096, a.input, 1);
    // Per size: cbound, torch fused, torch eager medians, one per round.
    let mut results: Vec<[Vec<f64>; 3]> = vec![Default::default(); a.sizes.len()];
    for round in 1..=a.rounds {
        println!("== round {round} (load {})", load());
        for (k, &(batch, hidden)) in a.sizes.iter().enumerate() {
            let prepared = PreparedCase::new(StepCase {
                input: a.input,
                hidden,
                batch,
                optimizer: OptimizerConfig::adam(),
            })?;
            let t = time_steps(&rt, &prepared, &opts, &mut data, (a.warmup, a.steps))?;
            results[k][0].push(t.median_s * 1e3);
            let mut line = format!(
                "  batch {batch:>5} hidden {hidden:>5}: cbound {:>8.2} ms/step (best {:.2}, loss {:.4})",
                t.median_s * 1e3,
                t.best_s * 1e3,
                t.final_loss
            );
            if let Some(py) = &a.torch {
                for l in run_torch(py, &a, batch, hidden)? {
                    let slot = if l.variant == "fused" { 1 } else { 2 };
                    results[k][slot].push(l.median_ms);
                    line += &format!("  torch {} {:>8.2}", l.variant, l.median_ms);
                }
            }
            println!("{line}");
        }
    }

    println!();
    println!(
        "medians over {} rounds (ms/step; ratio = PyTorch / cbound, > 1: cbound faster)",
        a.rounds
    );
    println!(
        "| batch | hidden | cbound | torch one pass + fused Adam | ratio | torch two passes | ratio | ratio per round (fused) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (k, &(batch, hidden)) in a.sizes.iter().enumerate() {
        let [c, f, e] = &results[k];
        let cb = median(c);
        if f.is_empty() {
            println!("| {batch} | {hidden} | {cb:.2} | - | - | - | - | - |");
            continue;
        }
        let per_round: Vec<String> = c
            .iter()
            .zip(f)
            .map(|(c, f)| format!("{:.2}", f / c))
            .collect();
        println!(
            "| {batch} | {hidden} | {cb:.2} | {:.2} | {:.2}x | {:.2} | {:.2}x | {} |",
            median(f),
            median(f) / cb,
            median(e),
            median(e) / cb,
            per_round.join(" ")
        );
    }

    if a.profile_steps == 0 {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("cbound_bench_profile_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for &(batch, hidden) in &a.sizes {
        let prepared = PreparedCase::new(StepCase {
            input: a.input,
            hidden,
            batch,
            optimizer: OptimizerConfig::adam(),
        })?;
        let ops = profile_steps(&rt, &prepared, &opts, &mut data, a.profile_steps, &dir)?;
        let total: f64 = ops.iter().map(|o| o.ms_per_run).sum();
        let flops = prepared.step.matmul_flops as f64;
        let in_step = flops / (gemm_ms(&ops) / 1e3);
        let alone = gemm_rate(&rt, &prepared.gemms, &opts, 10)?;
        println!();
        println!(
            "profile, batch {batch} hidden {hidden} ({} steps, load {}): kernel time {total:.2} ms/step; {:.3} GFLOP of products per step at {:.1} GFLOP/s in the step, {:.1} GFLOP/s on their own ({:.0}%)",
            a.profile_steps,
            load(),
            flops / 1e9,
            in_step / 1e9,
            alone / 1e9,
            100.0 * in_step / alone
        );
        // The ceiling on any speed-up that comes from outside the products: PyTorch's fastest
        // step against the time of the step's products alone, in ONNX Runtime and in PyTorch.
        if let Some(py) = &a.torch {
            let k = a
                .sizes
                .iter()
                .position(|&s| s == (batch, hidden))
                .unwrap_or(0);
            let fused = median(&results[k][1]);
            let ort_alone = 1e3 * flops / alone;
            let torch_alone =
                run_torch_products(py, &a, batch, hidden, &product_spec(&prepared.gemms))?;
            println!(
                "  products alone: ONNX Runtime {ort_alone:.2} ms, PyTorch {torch_alone:.2} ms ({:.2}x); PyTorch's fastest step {fused:.2} ms, so a cbound step made of ONNX Runtime's products and nothing else would be at most {:.2}x PyTorch's",
                ort_alone / torch_alone,
                fused / ort_alone
            );
        }
        for o in ops.iter().take(10) {
            println!(
                "  {:<22} {:>8.2} ms  {:>5.1}%  ({} nodes/step)",
                o.op,
                o.ms_per_run,
                100.0 * o.ms_per_run / total,
                o.nodes_per_run
            );
        }
    }
    Ok(())
}
