//! Times KSG (k = 3, algorithm 1) on correlated 128-d Gaussian views.
//!
//! Run with `cargo run --release --example ksg_bench`. X is standard normal;
//! Y = rho X + sqrt(1 - rho^2) E coordinate-wise, so the true MI is
//! -d/2 log(1 - rho^2), printed next to the estimate (KSG is expected to
//! fall far below it at this dimension: the point is the timing). Two
//! correlations are timed because the pruning, and so the run time, depends
//! on how concentrated the neighbour distances are.

use std::time::Instant;

use cbound::mi::{Estimator, Ksg, Matrix};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn views(n: usize, d: usize, rho: f64, seed: u64) -> (Matrix, Matrix) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s = (1.0 - rho * rho).sqrt();
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n * d);
    for _ in 0..n * d {
        let a: f64 = rng.sample(StandardNormal);
        let e: f64 = rng.sample(StandardNormal);
        x.push(a);
        y.push(rho * a + s * e);
    }
    (
        Matrix::new(n, d, x).expect("consistent shape"),
        Matrix::new(n, d, y).expect("consistent shape"),
    )
}

fn main() {
    let d = 128;
    for rho in [0.1f64, 0.7] {
        run(d, rho);
    }
}

fn run(d: usize, rho: f64) {
    let truth = -(d as f64) / 2.0 * (1.0 - rho * rho).ln();
    println!(
        "KSG k=3 alg 1, X and Y {d}-d, per-coordinate rho = {rho}, true MI = {truth:.4} nats, {} threads",
        rayon::current_num_threads()
    );
    for n in [2000usize, 5000, 10000] {
        let (x, y) = views(n, d, rho, 42);
        let est = Ksg::default();
        let t = Instant::now();
        let r = est.estimate(&x, &y);
        let secs = t.elapsed().as_secs_f64();
        match r {
            Ok(e) => println!("N = {n:>6}: {secs:>8.3} s   MI = {:.4} nats", e.nats),
            Err(e) => println!("N = {n:>6}: error {e}"),
        }
    }
}
