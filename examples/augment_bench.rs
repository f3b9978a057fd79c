//! Throughput of the view pipeline and cost of loading Fashion-MNIST.
//! Run with `cargo run --release --example augment_bench`.

use std::path::Path;
use std::time::Instant;

use cbound::data::augment::{
    make_views, make_views_into, ColorJitter, GaussianNoise, HorizontalFlip, Op, RandomResizedCrop,
};
use cbound::data::idx::load_idx_dir;
use cbound::data::{Dataset, Features, Normalisation, Split};

/// Peak resident memory so far, from the kernel's own accounting.
fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds used by this process so far (all threads). The machine is shared, so wall
/// time alone mixes in other people's load; CPU time shows what the pipeline itself costs.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // /proc reports in USER_HZ, which Linux fixes at 100.
    (ticks(11) + ticks(12)) / 100.0
}

struct Rate {
    wall: f64,
    per_cpu_second: f64,
}

fn synthetic_images(n: usize) -> Dataset {
    // A cheap xorshift fill: the pixel values do not matter for throughput, only that they
    // are not constant.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let data = (0..n * 3 * 32 * 32)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    Dataset::new(
        Features::Images {
            data,
            height: 32,
            width: 32,
            channels: 3,
        },
        vec![],
        None,
    )
    .expect("synthetic dataset is well formed")
}

/// `reuse`: keep the output buffers across batches (`make_views_into`), as a training loop
/// would, instead of allocating fresh ones per batch (`make_views`).
fn time_views(ds: &Dataset, views: &[Vec<Op>], batch: usize, epochs: u64, reuse: bool) -> Rate {
    let norm = Normalisation::Standardise {
        mean: vec![0.4914, 0.4822, 0.4465],
        std: vec![0.2470, 0.2435, 0.2616],
    };
    let idx: Vec<usize> = (0..ds.len()).collect();
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut checksum = 0.0f64;
    let mut out = Vec::new();
    for epoch in 0..epochs {
        for chunk in idx.chunks(batch) {
            if reuse {
                make_views_into(ds, chunk, views, 1, epoch, &norm, &mut out).expect("valid ops");
            } else {
                out = make_views(ds, chunk, views, 1, epoch, &norm).expect("valid ops");
            }
            checksum += f64::from(out[0][0]);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    std::hint::black_box(checksum);
    let images = (ds.len() as u64 * epochs) as f64;
    Rate {
        wall: images / secs,
        per_cpu_second: images / cpu,
    }
}

fn main() {
    println!("rayon threads: {}", rayon::current_num_threads());

    let fmnist = Path::new("/usr/share/datasets/fashion-mnist");
    if fmnist.join("train-images-idx3-ubyte.gz").is_file() {
        let before = vm_hwm_kib();
        let start = Instant::now();
        let loaded = load_idx_dir(fmnist, Split::Train);
        let secs = start.elapsed().as_secs_f64();
        let after = vm_hwm_kib();
        match loaded {
            Ok(ds) => println!(
                "Fashion-MNIST train: {} images, each an {}, loaded in {:.3} s; VmHWM {} -> {} \
                 MiB (payload {:.1} MiB)",
                ds.len(),
                ds.sample_shape(),
                secs,
                before.map_or("?".into(), |k| (k / 1024).to_string()),
                after.map_or("?".into(), |k| (k / 1024).to_string()),
                ds.len() as f64 * ds.dim() as f64 / (1024.0 * 1024.0),
            ),
            Err(e) => println!("Fashion-MNIST failed to load: {e}"),
        }
    } else {
        println!(
            "Fashion-MNIST not found under {}; skipped",
            fmnist.display()
        );
    }

    let ds = synthetic_images(10_000);
    let crop = Op::RandomResizedCrop(RandomResizedCrop::new(32));
    let flip = Op::HorizontalFlip(HorizontalFlip { p: 0.5 });
    let jitter = Op::ColorJitter(ColorJitter::new(0.4, 0.4, 0.4));
    let noise = Op::GaussianNoise(GaussianNoise { std: 0.1 });
    let full = vec![crop.clone(), flip.clone(), jitter.clone(), noise.clone()];
    let views = vec![full.clone(), full];

    // Warm the thread pool and the allocator before timing.
    time_views(&ds, &views, 256, 1, false);
    println!("ops: random_resized_crop(32) + horizontal_flip(0.5) + color_jitter(0.4,0.4,0.4) + gaussian_noise(0.1), 2 views, standardised");
    for (batch, reuse) in [(256, false), (256, true), (10_000, false)] {
        let r = time_views(&ds, &views, batch, 5, reuse);
        println!(
            "  batch {batch:>5}, {}: {:.0} images/s wall ({:.0} image-views/s); {:.0} images \
             per CPU-second",
            if reuse {
                "make_views_into (buffers reused)"
            } else {
                "make_views (fresh buffers)"
            },
            r.wall,
            r.wall * 2.0,
            r.per_cpu_second
        );
    }
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let r = one.install(|| time_views(&ds, &views, 256, 3, true));
    println!(
        "  same, 1 thread, batch 256, buffers reused: {:.0} images/s wall; {:.0} images per \
         CPU-second",
        r.wall, r.per_cpu_second
    );

    println!("single op, 1 view, batch 256, 1 thread (image-views per CPU-second):");
    for (name, ops) in [
        ("none (u8 -> f32 + normalise)", vec![]),
        ("random_resized_crop(32)", vec![crop]),
        ("horizontal_flip(0.5)", vec![flip]),
        ("color_jitter(0.4,0.4,0.4)", vec![jitter]),
        ("gaussian_noise(0.1)", vec![noise]),
    ] {
        let r = one.install(|| time_views(&ds, &[ops], 256, 5, true));
        println!(
            "  {name:<30} {:>10.0}  ({:.2} us CPU each)",
            r.per_cpu_second,
            1e6 / r.per_cpu_second
        );
    }
}
