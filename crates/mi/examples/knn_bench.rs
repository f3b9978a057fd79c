//! Times the `knn` estimator (`WeightedKnn::fit`: normalisation, the blocked similarity
//! product, top-k selection, the vote and its scoring) at the size the issue asks for: 10,000
//! embeddings of 512 dimensions, 10 classes, defaults k = 200, T = 0.1, 8,000 rows in the bank
//! and 2,000 scored.
//!
//! `cargo run --profile release -p cbound-mi --example knn_bench [ROUNDS] [ROWS]`
//! (ROWS 60000 is CIFAR-10's train + test size: a bank of 48,000).

use std::time::Instant;

use cbound_mi::{Matrix, WeightedKnn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let (d, k) = (512, 10);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut u = Vec::with_capacity(n * d);
    let mut z = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % k;
        for j in 0..d {
            let e: f64 = rng.sample(StandardNormal);
            u.push(e + if j % k == c { 0.3 } else { 0.0 });
        }
        z.push(c as f64);
    }
    let (u, z) = (
        Matrix::new(n, d, u).expect("consistent shape"),
        Matrix::new(n, 1, z).expect("consistent shape"),
    );
    let knn = WeightedKnn::default();
    println!(
        "knn: n {n} ({} in the bank), d {d}, {k} classes, k {}, T {}, {} threads",
        (n as f64 * knn.train_fraction).round(),
        knn.k,
        knn.temperature,
        rayon::current_num_threads()
    );
    for round in 1..=rounds {
        let t = Instant::now();
        match knn.fit(&u, &z) {
            Ok(r) => println!(
                "round {round}: {:.3} s, held-out accuracy {:.4}, {:.4} nats",
                t.elapsed().as_secs_f64(),
                r.accuracy,
                r.mi_lower_bound
            ),
            Err(e) => {
                eprintln!("knn failed: {e}");
                std::process::exit(1);
            }
        }
    }
}
