//! `cbound report` through the real binary: a small train → embed → estimate → bound run with
//! a temperature sweep and a failing stage, then the report of its directory.

mod common;
use cbound::report::figures::{legend_outside, Figure, Style, XAxis, MAX_LEGEND_INSIDE};
use cbound::report::generate::figures_of;
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
    // Bivariate Gaussian data has a known MI: the estimate goes against it, with y = x.
    assert!(dir.join("estimate_vs_truth.png").is_file());
    let (figs, _) = figures_of(&p.latest("m")).unwrap();
    let truth = figs.iter().find(|f| f.name == "estimate_vs_truth").unwrap();
    let series = &truth.panels[0].series;
    assert_eq!(series[0].style, Style::Reference);
    let (x, y) = series[1].points[0];
    assert!((x - 0.1438).abs() < 1e-3, "true MI of rho = 0.5: {x}");
    assert!((y - x).abs() < 0.1, "gaussian estimate {y} of {x}");
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

/// An ablation with snapshots, list-valued widths, a learning rate and replicates: the
/// figures' data (not their pixels) are checked for what makes them readable.
const SWEEP: &str = r#"name: s
seed: 3
stages:
  mixture:
    kind: synthetic
    params: {task: mixture, classes: 4, dim: 8, spread: 0.8, noise: 1.0, n: 800, mc_samples: 20000}
  data:
    kind: load
    inputs: mixture
    params: {format: parquet, feature_columns: "x*", label_column: z}
  train:
    kind: train
    inputs: data
    repeat: 2
    params:
      model: {encoder: {kind: mlp, hidden: [16], output: 8}, projector: [16, 8]}
      loss: {kind: infonce, temperature: 0.1}
      optimizer: {kind: adam, lr: 0.003}
      epochs: 2
      snapshot_every: 1
      batch_size: 128
      holdout: 0.2
      views: [[{op: gaussian_noise, std: 0.5}], [{op: gaussian_noise, std: 0.5}]]
    matrix:
      model.encoder.hidden: [[64, 64], [8, 8], [16, 16]]
      optimizer.lr: [0.0003, 0.01]
    matrix_mode: one_at_a_time
  embed:
    kind: embed
    inputs: [train, data]
    params: {snapshots: true}
  estimate:
    kind: estimate_mi
    inputs: embed
    params:
      pairs:
        - {name: uz, x: {columns: u}, y: {columns: label}, estimators: [{name: probe, steps: 50}]}
  bound:
    kind: bound
    inputs: [estimate, mixture]
    params:
      terms:
        i_uz: {pair: uz, estimator: probe}
        i_xz: {metric: true_i_xz, kind: exact}
        h_z: {metric: true_h_z, kind: exact}
      assumptions: {u_is_function_of_x: true}
      classes: 4
"#;

fn figure<'a>(figs: &'a [Figure], name: &str) -> &'a Figure {
    figs.iter().find(|f| f.name == name).unwrap_or_else(|| {
        panic!(
            "no {name} among {:?}",
            figs.iter().map(|f| &f.name).collect::<Vec<_>>()
        )
    })
}

#[test]
fn report_figures_of_an_ablation_are_readable() {
    let p = Project::new();
    p.write("s.yaml", SWEEP);
    let run = p.cbound(&["run", "s.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let (figs, notes) = figures_of(&p.latest("s")).unwrap();

    // List-valued widths in numeric order, labelled compactly.
    let widths = figure(&figs, "ablation_model_encoder_hidden");
    assert_eq!(
        widths.panels[0].x,
        XAxis::Categories(vec!["8×8".into(), "16×16".into(), "64×64".into()]),
        "{notes:?}"
    );
    // A learning rate spanning more than a decade goes on a log axis, ticked where run.
    let lr = figure(&figs, "ablation_optimizer_lr");
    assert_eq!(lr.panels[0].x, XAxis::Log);
    assert_eq!(lr.panels[0].x_ticks, vec![0.0003, 0.01]);
    // Replicates are drawn as a mean with bars, and the caption says what the bars are.
    let probe = lr.panels[0]
        .series
        .iter()
        .find(|s| s.label.starts_with("probe accuracy (measured)"))
        .unwrap();
    assert!(probe.label.contains("mean ± sd of 2"), "{}", probe.label);
    assert_eq!(probe.errors.len(), 2, "{probe:?}");
    assert!(lr.caption.contains("standard deviation"), "{}", lr.caption);
    // Chance accuracy (4 classes) and the untrained encoder are drawn to read against.
    let baselines: Vec<&str> = lr.panels[0]
        .series
        .iter()
        .filter(|s| s.style == Style::Baseline)
        .map(|s| s.label.as_str())
        .collect();
    assert!(baselines.contains(&"chance (1 / classes)"), "{baselines:?}");
    assert!(
        baselines.iter().any(|b| b.contains("untrained encoder")),
        "{baselines:?}"
    );
    let chance = lr.panels[0]
        .series
        .iter()
        .find(|s| s.label.starts_with("chance"))
        .unwrap();
    assert!(chance.points.iter().all(|p| p.1 == 0.25));

    for f in &figs {
        for panel in &f.panels {
            // No legend inside a panel has more than a handful of entries: longer ones
            // go beside the plot, or one legend serves all facets.
            let inside = !f.shared_legend && !legend_outside(panel);
            if inside {
                assert!(
                    cbound::report::figures::legend_entries(panel) <= MAX_LEGEND_INSIDE,
                    "{}: {}",
                    f.name,
                    panel.title
                );
            }
            // No lower bound at or below 0 is drawn as a value: it is vacuous, marked.
            for s in &panel.series {
                if s.label.contains("lower bound on I(") {
                    assert!(
                        s.points.iter().all(|p| p.1 > 0.0),
                        "{}: {} draws a vacuous bound as a value: {:?}",
                        f.name,
                        s.label,
                        s.points
                    );
                }
            }
        }
    }
    // Five configurations over epochs: one panel per quantity, one legend for them all.
    let epochs = figure(&figs, "mi_bounds_epochs");
    assert!(epochs.shared_legend);
    assert!(epochs.panels.iter().any(|p| p.title == "uz / probe"));
    for panel in &epochs.panels {
        assert!(
            panel.series.len() <= 5,
            "{}: {}",
            panel.title,
            panel.series.len()
        );
    }

    let report = p.cbound(&["report", "outputs/s"]);
    assert_eq!(report.code, 0, "{}", report.all());
    let dir = p.latest("s").join("report");
    for name in [
        "mi_bounds_epochs",
        "ablation_optimizer_lr",
        "training_curves",
    ] {
        let png = std::fs::read(dir.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
    }
}
