//! Times max-norm KSG (k, algorithm 1) on one data file under each neighbour-search strategy
//! (`Auto`, always brute force, always the k-d tree; all give the same bits), alternating
//! within each round, to measure the tree/brute crossover. Driven by `bench/ksg_highdim.py
//! --strategies`, or by hand:
//!
//! `ksg_maxnorm_bench FILE N DX DY K ROUNDS [STRATEGIES [phases]]`: FILE holds N x DX then
//! N x DY little-endian f64, row-major; STRATEGIES is a comma list of `auto`, `brute`, `tree`
//! (default all three: the forced tree takes tens of seconds at 10,000 x 128); with `phases`,
//! each round also times the `Auto` estimate phase by phase (joint copy, joint k-nearest
//! search, x counts, y counts), to show where the time goes. Prints one JSON object per
//! measurement.

use std::time::Instant;

use cbound_mi::{Estimator, Ksg, KsgMetric, Matrix, NeighbourSearch};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    match args.get(i).and_then(|a| a.parse().ok()) {
        Some(v) => v,
        None => {
            eprintln!(
                "usage: ksg_maxnorm_bench FILE N DX DY K ROUNDS [STRATEGIES [phases]]; bad or missing {what}"
            );
            std::process::exit(2)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path: String = arg(&args, 1, "FILE");
    let (n, dx, dy, k): (usize, usize, usize, usize) = (
        arg(&args, 2, "N"),
        arg(&args, 3, "DX"),
        arg(&args, 4, "DY"),
        arg(&args, 5, "K"),
    );
    let rounds: usize = arg(&args, 6, "ROUNDS");
    let bytes = match std::fs::read(&path) {
        Ok(b) if b.len() == n * (dx + dy) * 8 => b,
        Ok(b) => {
            eprintln!("{path}: {} bytes, expected {}", b.len(), n * (dx + dy) * 8);
            std::process::exit(2)
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2)
        }
    };
    let vals: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let (xv, yv) = vals.split_at(n * dx);
    let (x, y) = match (
        Matrix::new(n, dx, xv.to_vec()),
        Matrix::new(n, dy, yv.to_vec()),
    ) {
        (Ok(x), Ok(y)) => (x, y),
        _ => {
            eprintln!("inconsistent shape");
            std::process::exit(2)
        }
    };
    let Ok(base) = Ksg::new(k).map(|e| e.with_metric(KsgMetric::Max)) else {
        eprintln!("k must be at least 1");
        std::process::exit(2)
    };
    let wanted: Vec<String> = args
        .get(7)
        .map_or("auto,brute,tree", String::as_str)
        .split(',')
        .map(str::to_owned)
        .collect();
    let phases = args.get(8).is_some_and(|a| a == "phases");
    let all = [
        ("auto", "cbound max-norm", NeighbourSearch::Auto),
        (
            "brute",
            "cbound max-norm, brute force",
            NeighbourSearch::BruteForce,
        ),
        ("tree", "cbound max-norm, k-d tree", NeighbourSearch::KdTree),
    ];
    if let Some(bad) = wanted
        .iter()
        .find(|w| !all.iter().any(|(name, _, _)| name == w))
    {
        eprintln!("unknown strategy {bad:?}: the strategies are auto, brute, tree");
        std::process::exit(2)
    }
    let strategies: Vec<_> = all
        .iter()
        .filter(|(name, _, _)| wanted.iter().any(|w| w == name))
        .map(|&(_, what, search)| (what, search))
        .collect();
    for round in 1..=rounds {
        if phases {
            match base.phase_seconds(&x, &y) {
                Ok((v, times)) => {
                    let parts: Vec<String> = times
                        .iter()
                        .map(|(name, secs)| format!("\"{name}\": {secs:.4}"))
                        .collect();
                    println!(
                        "{{\"what\": \"cbound max-norm phases\", \"round\": {round}, {}, \"nats\": {v:.17e}}}",
                        parts.join(", ")
                    );
                }
                Err(e) => println!(
                    "{{\"what\": \"cbound max-norm phases\", \"round\": {round}, \"error\": {:?}}}",
                    e.to_string()
                ),
            }
        }
        for &(what, search) in &strategies {
            let est = base.with_search(search);
            let t = Instant::now();
            let v = est.estimate(&x, &y).map(|e| e.nats);
            let secs = t.elapsed().as_secs_f64();
            match v {
                Ok(v) => println!(
                    "{{\"what\": \"{what}\", \"round\": {round}, \"seconds\": {secs:.4}, \"nats\": {v:.17e}}}"
                ),
                Err(e) => println!(
                    "{{\"what\": \"{what}\", \"round\": {round}, \"error\": {:?}}}",
                    e.to_string()
                ),
            }
        }
    }
}
