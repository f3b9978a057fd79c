//! The `vmf` and `channel` synthetic tasks through the real binary: the columns of
//! samples.parquet (read back by pyarrow), that the samples obey the model (unit vectors,
//! labels in range, features inside the reported range), the exact metrics against
//! independently computed values, and the parameter errors.

mod common;
use common::{read_rows, Project};

use std::f64::consts::{E, LN_2, PI};

const PIPELINE: &str = r#"name: tasks
seed: 5
stages:
  sphere:
    kind: synthetic
    params: {task: vmf, n: 400}
  sphere5:
    kind: synthetic
    params: {task: vmf, n: 300, dim: 5, kappa: 10.0}
  channel:
    kind: synthetic
    params: {task: channel, n: 400, noise: 0.5}
"#;

fn metric(results: &[serde_json::Value], instance: &str, name: &str) -> f64 {
    let row = results
        .iter()
        .find(|r| r["instance"] == instance)
        .unwrap_or_else(|| panic!("no instance {instance}: {results:?}"));
    row[format!("metric.{name}").as_str()]
        .as_f64()
        .unwrap_or_else(|| panic!("{instance}: no metric {name}: {row}"))
}

fn column_names(row: &serde_json::Value) -> Vec<String> {
    row.as_object().unwrap().keys().cloned().collect()
}

fn f(row: &serde_json::Value, name: &str) -> f64 {
    row[name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name}: {row}"))
}

#[test]
fn vmf_and_channel_tasks_write_their_samples_and_exact_metrics() {
    let p = Project::new();
    p.write("tasks.yaml", PIPELINE);
    let check = p.cbound(&["validate", "tasks.yaml"]);
    assert_eq!(check.code, 0, "{}", check.all());
    let run = p.cbound(&["run", "tasks.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("tasks");
    let results = read_rows(&dir.join("results.parquet"));
    assert!(results.iter().all(|r| r["status"] == "ok"), "{results:?}");

    // vmf, d = 3, kappa = 4: closed form.
    let k: f64 = 4.0;
    let want_mi = (k / k.sinh()).ln() + k / k.tanh() - 1.0;
    let want_a = 1.0 / k.tanh() - 1.0 / k;
    let m = |name: &str| metric(&results, "sphere", name);
    assert!(
        (m("true_mi_nats") - want_mi).abs() < 1e-12,
        "{}",
        m("true_mi_nats")
    );
    assert!((m("true_mi_nats") - 1.0825).abs() < 1e-4);
    assert_eq!(m("true_i_xy"), m("true_mi_nats"));
    assert!((m("true_mi_bits") - want_mi / LN_2).abs() < 1e-12);
    assert!((m("true_mean_cosine") - want_a).abs() < 1e-12);
    assert_eq!(m("kappa"), 4.0);
    assert_eq!(m("optimal_temperature"), 0.25);
    assert_eq!((m("n"), m("dim_x"), m("dim_y")), (400.0, 3.0, 3.0));

    let rows = read_rows(&dir.join("sphere/sphere/samples.parquet"));
    assert_eq!(rows.len(), 400);
    assert_eq!(
        column_names(&rows[0]),
        ["id", "x0", "x1", "x2", "y0", "y1", "y2"]
    );
    let mut cos = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["id"], i as u64);
        let x: Vec<f64> = (0..3).map(|j| f(r, &format!("x{j}"))).collect();
        let y: Vec<f64> = (0..3).map(|j| f(r, &format!("y{j}"))).collect();
        let nx = x.iter().map(|v| v * v).sum::<f64>();
        let ny = y.iter().map(|v| v * v).sum::<f64>();
        assert!((nx - 1.0).abs() < 1e-12 && (ny - 1.0).abs() < 1e-12, "{r}");
        cos.push(x.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>());
    }
    // The mean cosine of 400 pairs against A_3(4) = 0.7507: its sd is
    // sqrt(1 - 2A/kappa - A^2) = 0.25, so the standard error is about 0.012.
    let mean = cos.iter().sum::<f64>() / cos.len() as f64;
    assert!((mean - want_a).abs() < 0.05, "{mean} vs {want_a}");

    // vmf, d = 5, kappa = 10: S = 3 (k cosh k - sinh k) / k^3, A = I_{5/2} / I_{3/2}.
    let k: f64 = 10.0;
    let log_s = 3f64.ln() + (k * k.cosh() - k.sinh()).ln() - 3.0 * k.ln();
    let th = k.tanh();
    let a5 = ((1.0 + 3.0 / (k * k)) * th - 3.0 / k) / (1.0 - th / k);
    let m5 = |name: &str| metric(&results, "sphere5", name);
    assert!((m5("true_mi_nats") - (k * a5 - log_s)).abs() < 1e-11);
    assert!((m5("true_mean_cosine") - a5).abs() < 1e-13);
    assert_eq!((m5("dim_x"), m5("optimal_temperature")), (5.0, 0.1));
    let rows5 = read_rows(&dir.join("sphere5/sphere5/samples.parquet"));
    assert_eq!(rows5.len(), 300);
    assert_eq!(column_names(&rows5[0]).len(), 1 + 2 * 5);

    // channel: 4 classes, 4 coordinates, a = 1, s = 0.5, so a/s = 2.
    let c = |name: &str| metric(&results, "channel", name);
    // 4 J(2), J(2) = 0.418694140698024 by an independent trapezoid rule (numpy, 4e6 points).
    assert!((c("true_i_xy_given_z") - 4.0 * 0.418694140698024).abs() < 1e-9);
    let gauss = 2.0 * (1.0f64 + 1.0 / (3.0 * 0.25)).ln();
    assert!((c("gaussian_channel_bound_nats") - gauss).abs() < 1e-12);
    let epi = 2.0 * (1.0f64 + 4.0 * 4.0 / (2.0 * PI * E)).ln();
    assert!(c("true_i_xy_given_z") < gauss && c("true_i_xy_given_z") > epi);
    assert_eq!(c("x_indep_y_given_z"), 0.0);
    assert!((c("true_h_z") - 4f64.ln()).abs() < 1e-15);
    assert!((c("true_trace_cov_x_given_z") - 4.0 / 3.0).abs() < 1e-15);
    assert_eq!(
        (c("half_width"), c("noise_std"), c("classes")),
        (1.0, 0.5, 4.0)
    );
    assert_eq!((c("n"), c("dim_x"), c("dim_y")), (400.0, 4.0, 4.0));
    let (low, high) = (c("feature_low"), c("feature_high"));
    assert!(low < high, "{low} {high}");

    let rows = read_rows(&dir.join("channel/channel/samples.parquet"));
    assert_eq!(rows.len(), 400);
    assert_eq!(
        column_names(&rows[0]),
        ["id", "z", "x0", "x1", "x2", "x3", "y0", "y1", "y2", "y3"]
    );
    let mut seen = [false; 4];
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut noise2 = 0.0;
    for r in &rows {
        let z = r["z"].as_u64().unwrap();
        assert!(z < 4, "{r}");
        seen[z as usize] = true;
        for j in 0..4 {
            let x = f(r, &format!("x{j}"));
            lo = lo.min(x);
            hi = hi.max(x);
            noise2 += (f(r, &format!("y{j}")) - x).powi(2);
        }
    }
    assert!(seen.iter().all(|&s| s), "every class drawn: {seen:?}");
    assert!(
        lo >= low && hi <= high,
        "samples [{lo}, {hi}] outside [{low}, {high}]"
    );
    // 400 samples of each class's extreme coordinates come within a few hundredths of
    // the range's ends (each coordinate is uniform on a width-2 interval).
    assert!(
        lo - low < 0.2 && high - hi < 0.2,
        "[{lo}, {hi}] vs [{low}, {high}]"
    );
    let sd = (noise2 / 1600.0).sqrt();
    assert!((sd - 0.5).abs() < 0.05, "noise sd {sd}");
}

#[test]
fn bad_parameters_fail_with_clear_messages() {
    let p = Project::new();
    p.write(
        "bad.yaml",
        r#"name: bad
stages:
  flat:
    kind: synthetic
    params: {task: vmf, n: 10, kappa: -1.0}
  line:
    kind: synthetic
    params: {task: vmf, n: 10, dim: 1}
  wide:
    kind: synthetic
    params: {task: channel, n: 10, half_width: 0.0}
  quiet:
    kind: synthetic
    params: {task: channel, n: 10, noise: 0.0}
"#,
    );
    // Refused by validate, before anything runs, each at its stage's parameters.
    let run = p.cbound(&["run", "bad.yaml", "--progress", "none"]);
    assert_eq!(run.code, 2, "{}", run.all());
    for (instance, line, message) in [
        ("flat", 5, "vmf: kappa must be finite and > 0, got -1"),
        ("line", 8, "vmf: dim must be at least 2"),
        (
            "wide",
            11,
            "channel: half_width must be finite and > 0, got 0",
        ),
        ("quiet", 14, "channel: noise must be finite and > 0, got 0"),
    ] {
        let at = format!("bad.yaml:{line}:");
        let path = format!("(at `stages.{instance}.params.task`)");
        let found = run
            .stderr
            .split("\n\n")
            .any(|e| e.contains(message) && e.contains(&at) && e.contains(&path));
        assert!(found, "{instance}: {}", run.all());
    }
}
