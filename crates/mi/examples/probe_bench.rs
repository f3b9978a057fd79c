//! Times the linear probe (`Probe::fit`) against the scalar loops it had before
//! (`Probe::fit_scalar_reference`), alternating the two in one run, on the Fashion-MNIST
//! ablation's shape: 2,000 rows (1,600 fitted), 128 features, 10 classes, 300 steps.
//!
//! `cargo run --release -p cbound-mi --example probe_bench [ROUNDS] [DUMP_DIR]`; with
//! DUMP_DIR it also writes the data (`u.f64`, `z.f64`, little-endian, row-major) for
//! `bench/probe_numpy.py`.

use std::time::Instant;

use cbound_mi::{Matrix, Probe};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn data(n: usize, d: usize, k: usize) -> (Matrix, Matrix) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut u = Vec::with_capacity(n * d);
    let mut z = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % k;
        for j in 0..d {
            let e: f64 = rng.sample(StandardNormal);
            u.push(e + if j % k == c { 0.7 } else { 0.0 });
        }
        z.push(c as f64);
    }
    (
        Matrix::new(n, d, u).expect("consistent shape"),
        Matrix::new(n, 1, z).expect("consistent shape"),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let (n, d, k) = (2000, 128, 10);
    let (u, z) = data(n, d, k);
    if let Some(dir) = args.get(2) {
        let bytes =
            |m: &Matrix| -> Vec<u8> { m.as_slice().iter().flat_map(|v| v.to_le_bytes()).collect() };
        let dir = std::path::Path::new(dir);
        if let Err(e) = std::fs::write(dir.join("u.f64"), bytes(&u))
            .and_then(|()| std::fs::write(dir.join("z.f64"), bytes(&z)))
        {
            eprintln!("cannot write to {}: {e}", dir.display());
            std::process::exit(2);
        }
    }
    let probe = Probe::default();
    println!(
        "probe: n {n} ({} fitted), d {d}, k {k}, {} steps, {} threads",
        (n as f64 * probe.train_fraction).round(),
        probe.steps,
        rayon::current_num_threads()
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let t = Instant::now();
        let old = probe.fit_scalar_reference(&u, &z);
        let t_old = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let new = probe.fit(&u, &z);
        let t_new = t.elapsed().as_secs_f64();
        match (old, new) {
            (Ok(old), Ok(new)) => {
                ratios.push(t_old / t_new);
                println!(
                    "round {round}: scalar {t_old:.3} s, blocked {t_new:.3} s, {:.2}x; bound {:.15} nats, identical: {}",
                    t_old / t_new,
                    new.mi_lower_bound,
                    old == new
                );
            }
            (a, b) => println!("round {round}: error {:?} {:?}", a.err(), b.err()),
        }
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(m) = ratios.get(ratios.len() / 2) {
        println!("median ratio scalar / blocked: {m:.2}x");
    }
}
