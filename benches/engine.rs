//! Engine overhead: plan and execute a pipeline of 1,000 trivial instances, then rerun it
//! fully cached. Run with `cargo bench --bench engine`. Prints wall times next to the targets
//! from the core issue (2 s and 0.5 s on a 2-core machine) as ratios; it asserts nothing,
//! because this machine is shared and absolute times drift.

use std::process::Command;
use std::time::Instant;

fn main() {
    let instances: usize = std::env::var("CBOUND_BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let values: Vec<String> = (0..instances).map(|i| (10 + i).to_string()).collect();
    let pipeline = format!(
        "name: bench\nseed: 1\nstages:\n  tiny:\n    kind: synthetic\n    params: {{task: bivariate}}\n    matrix:\n      n: [{}]\n",
        values.join(", ")
    );
    std::fs::write(dir.path().join("bench.yaml"), pipeline).expect("write pipeline");
    let cbound = env!("CARGO_BIN_EXE_cbound");
    let time = |args: &[&str]| {
        let start = Instant::now();
        let out = Command::new(cbound)
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run cbound");
        let secs = start.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        secs
    };
    let plan = time(&["plan", "bench.yaml"]);
    let first = time(&["run", "bench.yaml", "--progress", "none"]);
    let cached = time(&["run", "bench.yaml", "--progress", "none"]);
    println!(
        "engine benchmark: {instances} trivial instances (synthetic, n = 10..{}), {} cores",
        10 + instances - 1,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("  plan                 {plan:>7.3} s");
    println!(
        "  run (all computed)   {first:>7.3} s   target 2.0 s  -> {:.2}x of target",
        first / 2.0
    );
    println!(
        "  run (all cached)     {cached:>7.3} s   target 0.5 s  -> {:.2}x of target",
        cached / 0.5
    );
}
