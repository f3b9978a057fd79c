//! `cbound report` through the real binary: a small train → embed → estimate → bound run with
//! a temperature sweep and a failing stage, then the report of its directory.

mod common;
use common::Project;

const PIPELINE: &str = r#"name: r
seed: 2
stages:
  mixture:
    kind: synthetic
    params: {task: mixture, classes: 4, dim: 8, spread: 0.8, noise: 1.0, n: 1200, mc_samples: 20000}
  data:
    kind: load
    inputs: mixture
    params: {format: parquet, feature_columns: "x*", label_column: z}
  train:
    kind: train
    inputs: data
    params:
      model: {encoder: {kind: mlp, hidden: [32], output: 8}, projector: [16, 8]}
      loss: {kind: infonce, temperature: 0.1}
      optimizer: {kind: adam, lr: 0.003}
      epochs: 3
      batch_size: 128
      holdout: 0.2
      views: [[{op: gaussian_noise, std: 0.5}], [{op: gaussian_noise, std: 0.5}]]
    matrix: {loss.temperature: [0.1, 0.5]}
  embed:
    kind: embed
    inputs: [train, data]
  estimate:
    kind: estimate_mi
    inputs: embed
    params:
      pairs:
        - {name: uz, x: {columns: u}, y: {columns: label}, estimators: [{name: probe, steps: 100}]}
  bound:
    kind: bound
    inputs: [estimate, mixture]
    params:
      terms:
        i_uz: {pair: uz, estimator: probe}
        i_xz: {metric: true_i_xz, kind: exact}
        h_z: {metric: true_h_z, kind: exact}
      truth: {i_uz: {metric: true_i_xz}}
      assumptions: {u_is_function_of_x: true}
      classes: 4
      tolerance: 0.05
  broken:
    kind: bound
    inputs: [estimate]
    params:
      terms:
        i_uz: {metric: no_such_metric}
"#;

const PLOTS: [&str; 5] = [
    "training_curves",
    "mi_bounds_final",
    "bound_vs_accuracy",
    "ablation_loss_temperature",
    // listed last: checked absent below
    "mi_bounds_epochs",
];

#[test]
fn report_of_a_run_with_bounds_a_sweep_and_a_failure() {
    let p = Project::new();
    p.write("r.yaml", PIPELINE);
    let run = p.cbound(&["run", "r.yaml"]);
    // The broken stage fails; the run still leaves results.parquet, and a report.
    assert_eq!(run.code, 3, "{}", run.all());

    // Given the pipeline's output folder, the report uses its latest run.
    let report = p.cbound(&["report", "outputs/r"]);
    assert_eq!(report.code, 0, "{}", report.all());
    let dir = p.latest("r").join("report");
    for name in &PLOTS[..4] {
        let png = std::fs::read(dir.join(format!("{name}.png"))).unwrap_or_else(|e| {
            panic!("{name}.png: {e}\n{}", report.all());
        });
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
        assert!(png.len() > 5_000, "{name}.png is nearly empty");
        let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}.svg"
        );
        assert!(svg.contains("<text"), "{name}.svg has no labels");
        assert!(
            report.stdout.contains(&format!("{name}.png")),
            "{}",
            report.all()
        );
    }
    // No encoder snapshots in these tables: no curve over epochs.
    assert!(!dir.join("mi_bounds_epochs.png").exists());

    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4, "one inline SVG per plot");
    for id in [
        "train@loss.temperature=0.1",
        "estimate@loss.temperature=0.5",
        "bound@loss.temperature=0.1",
        "broken@loss.temperature=0.5",
    ] {
        assert!(html.contains(id), "report.html lacks {id}");
    }
    assert!(
        html.contains("<tr class=\"failed\">"),
        "failed rows are marked"
    );
    assert!(
        html.contains("no_such_metric"),
        "the failure's reason is shown"
    );
    assert!(html.contains("badge valid"), "bounds carry their status");
    // Bounds that could not be computed say what they need.
    assert!(html.contains("needs I(U;Y)"));
    assert!(html.contains("accuracy lower bound"));
    // Self-contained: nothing is fetched when the page opens.
    for external in [
        "src=\"http",
        "src='http",
        "href=\"http",
        "<script",
        "<link",
        "url(",
    ] {
        assert!(!html.contains(external), "report.html contains {external}");
    }

    // --out elsewhere, from the run directory itself.
    let run_dir = p.latest("r");
    let out = p.path().join("elsewhere");
    let again = p.cbound(&[
        "report",
        run_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(out.join("report.html").is_file());
    assert!(out.join("bound_vs_accuracy.svg").is_file());
}

#[test]
fn report_without_train_or_bound_stages_and_of_a_non_run() {
    let p = Project::new();
    p.write(
        "m.yaml",
        r#"name: m
seed: 1
stages:
  data:
    kind: synthetic
    params: {task: bivariate, rho: 0.5, n: 500}
  estimate:
    kind: estimate_mi
    inputs: data
    params:
      pairs: [{name: xy, x: {columns: x0}, y: {columns: y0}, estimators: [{name: gaussian}]}]
"#,
    );
    assert_eq!(p.cbound(&["run", "m.yaml"]).code, 0);
    let report = p.cbound(&["report", "outputs/m/latest"]);
    assert_eq!(report.code, 0, "{}", report.all());
    assert!(report.stderr.contains("no train stage"), "{}", report.all());
    let dir = p.latest("m").join("report");
    assert!(dir.join("mi_bounds_final.svg").is_file());
    assert!(!dir.join("training_curves.png").exists());
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("no train stage"),
        "skipped plots are explained"
    );

    let not_a_run = p.cbound(&["report", "."]);
    assert_eq!(not_a_run.code, 2, "{}", not_a_run.all());
    assert!(
        not_a_run.stderr.contains("outputs/<pipeline>/latest"),
        "{}",
        not_a_run.all()
    );
}
