//! Engine overhead and how it scales: plan, run and rerun fully cached a pipeline of 1,000 and
//! of 10,000 fixed-size synthetic instances, and `validate` one matrix axis of 40,000 values,
//! all in one run. Every instance does the same work (n = 100 samples of the bivariate task;
//! the matrix varies only `rho`), so the 10,000 / 1,000 time ratios measure the engine alone:
//! 10 is linear, the goal is at most 11 (issue 13). Run with `cargo bench --bench engine`;
//! `CBOUND_BENCH_QUICK=1` runs a tenth of each size, to check the benchmark itself works;
//! `CBOUND_BENCH_BIN=path/to/cbound` times another build (an older one, to compare).
//! It asserts nothing about times, because this machine is shared and absolute times drift.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// A pipeline of `instances` synthetic instances that differ only in `rho`.
fn pipeline(instances: usize) -> String {
    // 0.5 + i / (10 * instances) written out in decimal: distinct values, all in (0, 1), the
    // same rendering width for every instance id.
    let digits = (10 * instances).to_string().len();
    let values: Vec<String> = (0..instances)
        .map(|i| format!("0.{}{:0digits$}", 5, i, digits = digits - 1))
        .collect();
    format!(
        "name: bench\nseed: 1\nstages:\n  tiny:\n    kind: synthetic\n    params: {{task: bivariate, n: 100}}\n    matrix:\n      rho: [{}]\n",
        values.join(", ")
    )
}

/// The cbound to time: this build's, or `CBOUND_BENCH_BIN` (an older build, to compare).
fn binary() -> String {
    std::env::var("CBOUND_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cbound").to_string())
}

/// Seconds `cbound args...` took in `dir`; panics (this is a benchmark) if it failed.
fn time(dir: &Path, args: &[&str]) -> f64 {
    let start = Instant::now();
    let out = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run cbound");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "cbound {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

struct Times {
    plan: f64,
    run: f64,
    cached: f64,
}

/// Times of `instances` instances in a fresh directory under `base`. Directories are all
/// deleted at the end, not between sizes: freeing one size's ten thousand files right before
/// the next size creates its own would time the filesystem's reuse of them, not cbound.
fn measure(base: &Path, instances: usize) -> Times {
    let dir = base.join(format!("size-{instances}"));
    std::fs::create_dir_all(&dir).expect("bench directory");
    std::fs::write(dir.join("bench.yaml"), pipeline(instances)).expect("write pipeline");
    let plan = time(&dir, &["plan", "bench.yaml"]);
    let run = time(&dir, &["run", "bench.yaml", "--progress", "none"]);
    let cached = time(&dir, &["run", "bench.yaml", "--progress", "none"]);
    Times { plan, run, cached }
}

fn main() {
    let quick = std::env::var("CBOUND_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let scale = if quick { 10 } else { 1 };
    let (small, large, axis) = (1_000 / scale, 10_000 / scale, 40_000 / scale);
    println!(
        "engine benchmark: synthetic bivariate n = 100, matrix over rho, {} cores{}; {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        if quick {
            " (CBOUND_BENCH_QUICK: a tenth of each size)"
        } else {
            ""
        },
        binary()
    );
    let base = tempfile::tempdir().expect("tempdir");
    let a = measure(base.path(), small);
    let b = measure(base.path(), large);
    println!("  {:<22} {:>9} {:>9} {:>7}", "", small, large, "ratio");
    for (what, x, y, goal) in [
        ("plan", a.plan, b.plan, ""),
        (
            "run (all computed)",
            a.run,
            b.run,
            "   goal: ratio <= 11, 10k under ~4 s",
        ),
        (
            "run (all cached)",
            a.cached,
            b.cached,
            "   goal: ratio <= 11, 10k under ~0.4 s",
        ),
    ] {
        println!("  {what:<22} {x:>7.3} s {y:>7.3} s {:>6.1}x{goal}", y / x);
    }
    std::fs::write(base.path().join("axis.yaml"), pipeline(axis)).expect("write pipeline");
    let validate = time(base.path(), &["validate", "axis.yaml"]);
    println!("  validate, one matrix axis of {axis} values: {validate:.3} s");
}
