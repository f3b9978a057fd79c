//! The critic graphs against NumPy (tests/fixtures/critic_objectives.json, written by
//! scripts/critic_fixtures.py), training reproducibility, and the estimators on correlated
//! Gaussians, whose MI is known in closed form.

use super::*;
use cbound_mi::spec::{estimate_with, EstimatorSpec, Preprocess, Tools};
use cbound_mi::Direction;
use rand_distr::StandardNormal;

fn critic() -> OnnxCritic {
    OnnxCritic {
        threads: 1,
        search: LibrarySearch {
            project_root: Some(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")),
            ..LibrarySearch::default()
        },
    }
}

fn fixture() -> serde_json::Value {
    serde_json::from_str(include_str!(
        "../../../tests/fixtures/critic_objectives.json"
    ))
    .expect("fixture parses")
}

fn matrix(v: &serde_json::Value) -> Matrix {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).expect("rows");
    Matrix::from_rows(&rows).expect("matrix")
}

/// NumPy's layers (`[{weight, bias}]`) as the named tensors of `prefix` (nn.Sequential
/// indices: linear layers at 0, 2, 4, ...).
fn layers(prefix: &str, v: &serde_json::Value) -> Vec<NamedTensor> {
    let mut out = Vec::new();
    for (k, layer) in v.as_array().expect("layers").iter().enumerate() {
        let w = matrix(&layer["weight"]);
        let b: Vec<f64> = serde_json::from_value(layer["bias"].clone()).expect("bias");
        out.push(NamedTensor::new(
            format!("{prefix}.{}.weight", 2 * k),
            vec![w.rows(), w.cols()],
            w.as_slice().iter().map(|&v| v as f32).collect(),
        ));
        out.push(NamedTensor::new(
            format!("{prefix}.{}.bias", 2 * k),
            vec![b.len()],
            b.iter().map(|&v| v as f32).collect(),
        ));
    }
    out
}

fn config(
    objective: Objective,
    arch: CriticArch,
    hidden: Vec<usize>,
    embedding: usize,
) -> CriticConfig {
    CriticConfig {
        objective,
        arch,
        hidden,
        embedding,
        steps: 1,
        batch: 6,
        lr: 1e-3,
        score_bound: None,
        seed: 0,
    }
}

/// Fixed weights: the ONNX scoring graph gives NumPy's score matrices (to f32 precision), and
/// the objectives of those scores NumPy's values.
#[test]
fn fixed_critics_score_as_numpy_does() {
    let fx = fixture();
    let c = &fx["critics"];
    let (x, y) = (matrix(&c["x"]), matrix(&c["y"]));
    for (arch, key, params, hidden, embedding) in [
        (
            CriticArch::Separable,
            "separable",
            [
                layers("f", &c["separable"]["f"]),
                layers("g", &c["separable"]["g"]),
            ]
            .concat(),
            vec![5],
            4,
        ),
        (
            CriticArch::Concat,
            "concat",
            layers("h", &c["concat"]["h"]),
            vec![7],
            1,
        ),
    ] {
        let cfg = config(Objective::Infonce, arch, hidden, embedding);
        let mut fitted = critic()
            .with_params(&cfg, (x.cols(), y.cols()), params)
            .expect("scoring session");
        let got = fitted.score(&x, &y).expect("scores");
        let want = matrix(&c[key]["scores"]);
        for (a, b) in got.as_slice().iter().zip(want.as_slice()) {
            assert!((a - b).abs() < 1e-5, "{key}: {a} vs NumPy {b}");
        }
        for (objective, name) in [
            (Objective::Infonce, "infonce"),
            (Objective::Nwj, "nwj"),
            (Objective::Mine, "dv"),
        ] {
            let v = objective.value(&got).expect("value");
            let w = c[key][name].as_f64().expect("number");
            assert!((v - w).abs() < 1e-5, "{key} {name}: {v} vs NumPy {w}");
        }
    }
}

/// The step graph's loss is the negated objective (log N apart for InfoNCE) of NumPy's
/// scores, and the first Adam step moves every weight against the gradient of that loss as
/// central finite differences through the scoring graph find it.
#[test]
fn step_loss_and_gradient_match_the_objective() {
    let fx = fixture();
    let c = &fx["critics"];
    let (x, y) = (matrix(&c["x"]), matrix(&c["y"]));
    let params = [
        layers("f", &c["separable"]["f"]),
        layers("g", &c["separable"]["g"]),
    ]
    .concat();
    let rt = critic().runtime().expect("runtime");
    let n = x.rows();
    for (objective, key) in [
        (Objective::Infonce, "infonce"),
        (Objective::Nwj, "nwj"),
        (Objective::Mine, "dv"),
    ] {
        let cfg = config(objective, CriticArch::Separable, vec![5], 4);
        let nets = Networks::new(&cfg, x.cols(), y.cols()).expect("networks");
        let step = build_step(&nets, objective, n, (x.cols(), y.cols()), None).expect("step graph");
        let mut tr = Trainer::new(&rt, &step, &params, &critic().options()).expect("trainer");
        let rows: Vec<usize> = (0..n).collect();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        f32_rows(&x, &rows, &mut xs);
        f32_rows(&y, &rows, &mut ys);
        let lr = 1e-4;
        let l = f64::from(tr.step(&xs, &ys, lr).expect("step"));
        let value = c["separable"][key].as_f64().expect("number");
        let offset = if objective == Objective::Infonce {
            (n as f64).ln()
        } else {
            0.0
        };
        assert!(
            (l - (offset - value)).abs() < 1e-5,
            "{key}: loss {l} vs {}",
            offset - value
        );
        // Finite differences of the objective (f64 formulas of cbound-mi on f32 scores).
        let after = tr.params().expect("params");
        let scorer = critic();
        let objective_at = |p: Vec<NamedTensor>| -> f64 {
            let mut s = scorer
                .with_params(&cfg, (x.cols(), y.cols()), p)
                .expect("session");
            -objective
                .value(&s.score(&x, &y).expect("scores"))
                .expect("value")
        };
        let mut checked = 0;
        for (t, (before, moved)) in params.iter().zip(&after).enumerate() {
            for k in (0..before.data.len()).step_by(3) {
                let h = 1e-2f32;
                let mut up = params.clone();
                up[t].data[k] += h;
                let mut down = params.clone();
                down[t].data[k] -= h;
                let grad = (objective_at(up) - objective_at(down)) / (2.0 * f64::from(h));
                if grad.abs() < 1e-3 {
                    continue;
                }
                let delta = f64::from(moved.data[k] - before.data[k]);
                assert!(
                    delta * grad < 0.0 && (delta.abs() - f64::from(lr)).abs() < 0.2 * f64::from(lr),
                    "{key} {}[{k}]: moved {delta:e}, finite-difference gradient {grad:e}",
                    before.name
                );
                checked += 1;
            }
        }
        assert!(
            checked > 10,
            "{key}: only {checked} weights had a gradient to check"
        );
    }
}

fn gaussian(n: usize, d: usize, rho: f64, seed: u64) -> (Matrix, Matrix) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..n * d {
        let a: f64 = StandardNormal.sample(&mut rng);
        let e: f64 = StandardNormal.sample(&mut rng);
        x.push(a);
        y.push(rho * a + (1.0 - rho * rho).sqrt() * e);
    }
    (
        Matrix::new(n, d, x).expect("x"),
        Matrix::new(n, d, y).expect("y"),
    )
}

#[test]
fn training_is_reproducible_and_lowers_the_loss() {
    let (x, y) = gaussian(512, 2, 0.8, 1);
    let cfg = CriticConfig {
        objective: Objective::Infonce,
        arch: CriticArch::Separable,
        hidden: vec![16],
        embedding: 8,
        steps: 150,
        batch: 32,
        lr: 5e-3,
        score_bound: None,
        seed: 9,
    };
    let a = critic().fit(&cfg, &x, &y).expect("fit");
    let b = critic().fit(&cfg, &x, &y).expect("fit");
    assert_eq!(a.params(), b.params());
    assert_eq!(a.losses(), b.losses());
    let c = critic()
        .fit(
            &CriticConfig {
                seed: 10,
                ..cfg.clone()
            },
            &x,
            &y,
        )
        .expect("fit");
    assert_ne!(a.params(), c.params());
    let l = a.losses();
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(
        mean(&l[l.len() - 20..]) < mean(&l[..20]) - 0.3,
        "{}",
        a.summary()
    );
}

/// The estimators through cbound-mi's driver on correlated Gaussians (2 + 2 dimensions,
/// rho = 0.8: I = -log(1 - rho^2) = 1.0217 nats), over seeds: InfoNCE below the truth and
/// below log N, NWJ below the truth (within the noise of its held-out batches), MINE near it.
#[test]
fn trained_critics_on_correlated_gaussians() {
    let rho: f64 = 0.8;
    let d = 2;
    let truth = -(d as f64) / 2.0 * (1.0 - rho * rho).ln();
    let trainer = critic();
    let tools = Tools {
        critic: Some(&trainer),
        ..Tools::default()
    };
    let pre = Preprocess::default();
    let mut report = Vec::new();
    for (name, arch) in [
        ("infonce_critic", "separable"),
        ("infonce_critic", "concat"),
        ("nwj_critic", "separable"),
        ("mine_critic", "separable"),
    ] {
        let spec = EstimatorSpec::parse_cli(&format!(
            "{name}:critic={arch},hidden=[32],embedding=16,steps=400,batch=64,lr=0.003"
        ))
        .expect("spec");
        let mut values = Vec::new();
        for seed in 0..3 {
            let (x, y) = gaussian(2048, d, rho, 100 + seed);
            let row =
                estimate_with(&spec, &x, &y, None, &pre, None, seed, tools).expect("estimate");
            assert_eq!(row.kind, spec.direction());
            values.push(row.nats);
            if name == "infonce_critic" {
                let cap = row.cap_nats.expect("InfoNCE has a cap");
                assert!((cap - 64f64.ln()).abs() < 1e-12);
                assert!(row.nats < cap);
            } else {
                assert_eq!(row.cap_nats, None);
            }
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        report.push(format!(
            "{name} {arch}: {values:.3?} mean {mean:.3} (truth {truth:.4})"
        ));
        match name {
            "infonce_critic" => {
                assert!(values.iter().all(|&v| v < truth + 0.05), "{report:?}");
                assert!(mean > truth - 0.2, "{report:?}");
            }
            "nwj_critic" => {
                assert!(spec.direction() == Direction::LowerBound);
                assert!(values.iter().all(|&v| v < truth + 0.1), "{report:?}");
                assert!(mean > truth - 0.25, "{report:?}");
            }
            _ => {
                assert!(spec.direction() == Direction::Estimate);
                assert!((mean - truth).abs() < 0.2, "{report:?}");
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// Where the truth is above log N, the cap binds: the estimate stays below log N (rho = 0.95
/// in 2 + 2 dimensions: I = 2.33 nats; N = 8: log N = 2.08; 1.43 at seed 0), well
/// above zero.
#[test]
fn infonce_critic_stays_below_its_cap() {
    let rho: f64 = 0.95;
    let truth = -(1.0 - rho * rho).ln();
    let trainer = critic();
    let spec = EstimatorSpec::parse_cli(
        "infonce_critic:hidden=[32],embedding=16,steps=400,batch=8,lr=0.003",
    )
    .expect("spec");
    for seed in 0..2 {
        let (x, y) = gaussian(1024, 2, rho, 200 + seed);
        let row = estimate_with(
            &spec,
            &x,
            &y,
            None,
            &Preprocess::default(),
            None,
            seed,
            Tools {
                critic: Some(&trainer),
                ..Tools::default()
            },
        )
        .expect("estimate");
        let cap = 8f64.ln();
        assert_eq!(row.cap_nats, Some(cap));
        assert!(cap < truth);
        assert!(
            row.nats < cap && row.nats > 1.0,
            "{} vs cap {cap}",
            row.nats
        );
    }
}

/// With `score_bound` the InfoNCE critic records a certificate, whose empirical-Bernstein
/// lower bound lies below the point value (and the truth), and every score is within bound.
/// The range [-2c, log N] enters the bound's 7 R ln(2/delta) / (3 (n - 1)) term, so a useful
/// certificate needs many held-out batches: small N and c, 1125 batches here (with N = 64,
/// c = 4 and 32 batches it is vacuous, about -2.5 nats).
#[test]
fn a_bounded_infonce_critic_is_certified() {
    let rho: f64 = 0.8;
    let truth = -(1.0 - rho * rho).ln();
    let trainer = critic();
    let spec = EstimatorSpec::parse_cli(
        "infonce_critic:hidden=[32],embedding=16,steps=400,batch=16,lr=0.003,score_bound=1.5,train_fraction=0.25",
    )
    .expect("spec");
    let (x, y) = gaussian(24000, 2, rho, 300);
    let row = estimate_with(
        &spec,
        &x,
        &y,
        None,
        &Preprocess::default(),
        None,
        1,
        Tools {
            critic: Some(&trainer),
            ..Tools::default()
        },
    )
    .expect("estimate");
    let cert = row
        .certificate
        .expect("a bounded InfoNCE critic has a certificate");
    let c = cert.bound(0.05, None).expect("confidence bound");
    eprintln!("point {:.4}, certified {:.4}: {}", row.nats, c.nats, c.how);
    assert!(
        c.nats < row.nats && row.nats < truth + 0.05,
        "{} {}",
        c.nats,
        row.nats
    );
    assert!(c.nats > row.nats - 0.2, "{}", c.how);
    let mut fitted = trainer
        .fit(
            &CriticConfig {
                objective: Objective::Infonce,
                arch: CriticArch::Concat,
                hidden: vec![8],
                embedding: 1,
                steps: 50,
                batch: 16,
                lr: 0.05,
                score_bound: Some(0.5),
                seed: 0,
            },
            &x,
            &y,
        )
        .expect("fit");
    let rows: Vec<usize> = (0..16).collect();
    let s = fitted
        .score(
            &x.select_rows(&rows).unwrap(),
            &y.select_rows(&rows).unwrap(),
        )
        .expect("scores");
    // Within f32 rounding of the bound (cbound-mi clamps before it certifies).
    let most = s.as_slice().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(most <= 0.5 * (1.0 + 1e-6) && most > 0.49, "{most}");
}

/// Training against an independent reference: NumPy runs 25 Adam steps (PyTorch's update) of
/// a separable and a concatenated critic on each objective, from the same initial weights on
/// the same batches, with the gradients written out by hand. cbound's step graph (autodiff +
/// its Adam) must give every step's loss and the held-out estimate after training.
#[test]
fn training_matches_a_numpy_reference() {
    let fx = fixture();
    let t = &fx["training"];
    let (x_train, y_train) = (matrix(&t["x_train"]), matrix(&t["y_train"]));
    let (x_test, y_test) = (matrix(&t["x_test"]), matrix(&t["y_test"]));
    let batches: Vec<Vec<usize>> = serde_json::from_value(t["batches"].clone()).expect("batches");
    let batch = t["batch"].as_u64().expect("batch") as usize;
    let lr = t["lr"].as_f64().expect("lr") as f32;
    let dims = (x_train.cols(), y_train.cols());
    let rt = critic().runtime().expect("runtime");
    let runs = t["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 6);
    let (mut worst_loss, mut worst_estimate) = (0.0f64, 0.0f64);
    for run in runs {
        let (arch, objective) = match (run["arch"].as_str(), run["objective"].as_str()) {
            (Some("separable"), Some(o)) => (CriticArch::Separable, o),
            (Some("concat"), Some(o)) => (CriticArch::Concat, o),
            other => panic!("unexpected run {other:?}"),
        };
        let objective_kind = match objective {
            "infonce" => Objective::Infonce,
            "nwj" => Objective::Nwj,
            _ => Objective::Mine,
        };
        let (init, hidden, embedding) = match arch {
            CriticArch::Separable => (
                [
                    layers("f", &t["init"]["separable"]["f"]),
                    layers("g", &t["init"]["separable"]["g"]),
                ]
                .concat(),
                vec![6],
                4,
            ),
            CriticArch::Concat => (layers("h", &t["init"]["concat"]["h"]), vec![6], 1),
        };
        let cfg = CriticConfig {
            batch,
            ..config(objective_kind, arch, hidden, embedding)
        };
        let nets = Networks::new(&cfg, dims.0, dims.1).expect("networks");
        let step = build_step(&nets, objective_kind, batch, dims, None).expect("step graph");
        let mut tr = Trainer::new(&rt, &step, &init, &critic().options()).expect("trainer");
        let want: Vec<f64> = serde_json::from_value(run["losses"].clone()).expect("losses");
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (k, rows) in batches.iter().enumerate() {
            f32_rows(&x_train, rows, &mut xs);
            f32_rows(&y_train, rows, &mut ys);
            let got = f64::from(tr.step(&xs, &ys, lr).expect("step"));
            worst_loss = worst_loss.max((got - want[k]).abs());
            assert!(
                (got - want[k]).abs() < 5e-4 * want[k].abs().max(1.0),
                "{arch:?} {objective} step {}: loss {got} vs NumPy {}",
                k + 1,
                want[k]
            );
        }
        let mut fitted = critic()
            .with_params(&cfg, dims, tr.params().expect("params"))
            .expect("scorer");
        let mut held = Vec::new();
        for k in 0..x_test.rows() / batch {
            let rows: Vec<usize> = (k * batch..(k + 1) * batch).collect();
            let s = fitted
                .score(
                    &x_test.select_rows(&rows).unwrap(),
                    &y_test.select_rows(&rows).unwrap(),
                )
                .expect("scores");
            held.push(objective_kind.value(&s).expect("value"));
        }
        let got = held.iter().sum::<f64>() / held.len() as f64;
        let want = run["estimate"].as_f64().expect("estimate");
        worst_estimate = worst_estimate.max((got - want).abs());
        assert!(
            (got - want).abs() < 5e-4,
            "{arch:?} {objective}: held-out estimate {got} vs NumPy {want}"
        );
    }
    eprintln!(
        "largest difference from NumPy: loss {worst_loss:.2e}, estimate {worst_estimate:.2e}"
    );
}
