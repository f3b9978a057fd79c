//! Times KSG (k, algorithm 1) on one data file: the tiled Euclidean search, the scalar scan it
//! replaced (same bits), and the max-norm search, alternating within each round. Driven by
//! `bench/ksg_highdim.py`, which writes the file and times the Python references beside it.
//!
//! `ksg_euclid_bench FILE N DX DY K ROUNDS SCALAR(0|1)`: FILE holds N x DX then N x DY
//! little-endian f64, row-major. Prints one JSON object per measurement.

use std::time::Instant;

use cbound_mi::{Estimator, Ksg, KsgMetric, Matrix};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    match args.get(i).and_then(|a| a.parse().ok()) {
        Some(v) => v,
        None => {
            eprintln!(
                "usage: ksg_euclid_bench FILE N DX DY K ROUNDS SCALAR; bad or missing {what}"
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
    let scalar: u8 = arg(&args, 7, "SCALAR");
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
    let euclid = Ksg::new(k).map(|e| e.with_metric(KsgMetric::Euclidean));
    let Ok(euclid) = euclid else {
        eprintln!("k must be at least 1");
        std::process::exit(2)
    };
    let max = euclid.with_metric(KsgMetric::Max);
    let report = |what: &str, round: usize, secs: f64, nats: Result<f64, String>| {
        match nats {
        Ok(v) => println!(
            "{{\"what\": \"{what}\", \"round\": {round}, \"seconds\": {secs:.4}, \"nats\": {v:.17e}}}"
        ),
        Err(e) => println!("{{\"what\": \"{what}\", \"round\": {round}, \"error\": {e:?}}}"),
    }
    };
    for round in 1..=rounds {
        let t = Instant::now();
        let v = euclid.estimate(&x, &y).map(|e| e.nats);
        report(
            "cbound euclidean",
            round,
            t.elapsed().as_secs_f64(),
            v.map_err(|e| e.to_string()),
        );
        if scalar == 1 {
            let t = Instant::now();
            let v = euclid.euclidean_scalar_reference(&x, &y);
            report(
                "cbound euclidean, scalar scan before",
                round,
                t.elapsed().as_secs_f64(),
                v.map_err(|e| e.to_string()),
            );
        }
        let t = Instant::now();
        let v = max.estimate(&x, &y).map(|e| e.nats);
        report(
            "cbound max-norm",
            round,
            t.elapsed().as_secs_f64(),
            v.map_err(|e| e.to_string()),
        );
    }
}
