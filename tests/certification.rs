//! The certification audit, reduced (30 instances per family, fixed seeds): certified values
//! must stay on the right side of the exact truth at the stated rate, the point values they
//! replace must not (that is why certification exists), and certification must not be
//! vacuous everywhere. The full-size run and its numbers are in the README.
//! Also the bound stage's refusals: an assumption contradicting the data, a direction forced
//! onto a point estimator, `classes` that disagree with the probe.

mod common;
use common::{python, read_rows, Project};

fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn audit_certified_values_hold_and_point_values_do_not() {
    let p = Project::new();
    p.write(
        "certification-audit.yaml",
        &repo_file("pipelines/certification-audit.yaml"),
    );
    p.write(
        "scripts/audit_table.py",
        &repo_file("scripts/audit_table.py"),
    );
    // The audit's command stage runs `python3`: the project's environment has pyarrow.
    let venv_bin = python().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = p
        .command(&[
            "run",
            "certification-audit.yaml",
            "--set",
            "vars.replicates=15",
            "--set",
            "stages.discrete_ci_data.matrix.n=[300, 3000]",
            "--set",
            "stages.discrete_dep_data.matrix.n=[300, 3000]",
            "--set",
            "stages.mixture_data.matrix.n=[256, 2560]",
            "--set",
            "stages.mixture_data.params.mc_samples=100000",
            "--set",
            "stages.vmf_data.matrix.n=[256, 2560]",
            "--set",
            "stages.channel_data.matrix.n=[200, 2000]",
            "--progress",
            "none",
        ])
        .env("PATH", path)
        .output()
        .expect("run cbound");
    let run = common::Run::from(out);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("certification-audit");
    let audit: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("audit/audit/audit.json")).unwrap())
            .unwrap();
    let families = ["discrete_ci", "discrete_dep", "mixture", "vmf", "channel"];
    let mut point_failures = 0.0;
    for family in families {
        let rows: Vec<_> = audit.iter().filter(|r| r["family"] == family).collect();
        let total: u64 = rows.iter().map(|r| r["instances"].as_u64().unwrap()).sum();
        assert_eq!(total, 30, "{family}: {rows:?}");
        for r in &rows {
            assert_eq!(r["confidence"], 0.95, "{r}");
            // At most 1 - confidence in expectation; 3 of 15 would already be a failure.
            let rate = r["certified_above"].as_f64().unwrap();
            assert!(
                rate <= 2.0 / 15.0 + 1e-9,
                "{family}: certified above truth {r}"
            );
            point_failures += r["point_above"].as_f64().unwrap();
        }
    }
    assert!(
        point_failures > 0.5,
        "point values should cross the truth somewhere: {audit:?}"
    );
    // Not vacuous everywhere: the mixture probe certifies at n = 2560, the channel always.
    for (family, n) in [("mixture", 2560), ("channel", 2000)] {
        let r = audit
            .iter()
            .find(|r| r["family"] == family && r["n"] == n)
            .unwrap();
        assert!(r["nonvacuous"].as_f64().unwrap() >= 0.9, "{r}");
    }
    // The table is printed and written as markdown too.
    let md = std::fs::read_to_string(dir.join("audit/audit/audit.md")).unwrap();
    assert!(md.contains("| discrete_ci | 300 |"), "{md}");
    let stdout = std::fs::read_to_string(dir.join("audit/audit/stdout.txt")).unwrap();
    assert!(stdout.contains("certified above truth"), "{stdout}");
    // Replicates are visible in every bound row of results.parquet.
    let results = read_rows(&dir.join("results.parquet"));
    assert!(results
        .iter()
        .filter(|r| r["kind"] == "bound")
        .all(|r| r["sweep.replicate"].is_number()));
}

const MIXTURE: &str = r#"  mix:
    kind: synthetic
    params: {task: mixture, classes: 4, dim: 2, spread: 2.0, noise: 1.0, nuisance: NUISANCE, n: 2000, mc_samples: 20000}
  est:
    kind: estimate_mi
    inputs: mix
    params:
      pairs:
        - {name: xz, x: {columns: "x*"}, y: {columns: z}, estimators: [{name: probe}, {name: ksg}]}
"#;

fn pipeline(nuisance: f64, bound: &str) -> String {
    format!(
        "name: b\nstages:\n{}  bound:\n    kind: bound\n    inputs: [est, mix]\n    params:\n{bound}",
        MIXTURE.replace("NUISANCE", &nuisance.to_string())
    )
}

#[test]
fn an_assumption_the_data_contradict_is_an_error_naming_both() {
    let p = Project::new();
    p.write(
        "b.yaml",
        &pipeline(
            0.5,
            "      terms: {i_uz: {pair: xz, estimator: probe}, i_uy: {pair: xz, estimator: probe}}\n      assumptions: {u_is_function_of_x: true, x_indep_y_given_z: true}\n",
        ),
    );
    let run = p.cbound(&["run", "b.yaml", "--progress", "none"]);
    assert_eq!(run.code, 3, "{}", run.all());
    let all = run.all();
    assert!(
        all.contains(
            "assumptions.x_indep_y_given_z: true contradicts metric `x_indep_y_given_z` = 0"
        ) && all.contains("mix"),
        "{all}"
    );
    // Read from the metric instead, the same run goes through (and the bound is not claimed).
    p.write(
        "b.yaml",
        &pipeline(
            0.5,
            "      terms: {i_uz: {pair: xz, estimator: probe}, i_uy: {pair: xz, estimator: probe}}\n      assumptions: {u_is_function_of_x: true, x_indep_y_given_z: {metric: x_indep_y_given_z}}\n",
        ),
    );
    let run = p.cbound(&["run", "b.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
}

#[test]
fn a_direction_cannot_be_forced_onto_a_point_estimator() {
    let p = Project::new();
    p.write(
        "b.yaml",
        &pipeline(
            0.0,
            "      terms: {i_uz: {pair: xz, estimator: ksg, kind: lower_bound}}\n",
        ),
    );
    let run = p.cbound(&["run", "b.yaml", "--progress", "none"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.all()
            .contains("`kind: lower_bound` on `xz`/`ksg`, which records `estimate`"),
        "{}",
        run.all()
    );
    // On a metric the refusal comes at validate time, with the position in the file.
    p.write(
        "m.yaml",
        &pipeline(
            0.0,
            "      terms: {i_uz: {metric: xz.ksg, kind: lower_bound}}\n",
        ),
    );
    let v = p.cbound(&["validate", "m.yaml"]);
    assert_eq!(v.code, 2, "{}", v.all());
    assert!(
        v.all().contains("m.yaml:") && v.all().contains("cannot be a lower_bound"),
        "{}",
        v.all()
    );
}

#[test]
fn classes_must_agree_with_the_probe() {
    let p = Project::new();
    p.write(
        "b.yaml",
        &pipeline(
            0.0,
            "      terms: {i_uz: {pair: xz, estimator: probe}}\n      classes: 2\n",
        ),
    );
    let run = p.cbound(&["run", "b.yaml", "--progress", "none"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.all()
            .contains("`classes: 2` but the probe of I(U;Z) predicts 4 label values"),
        "{}",
        run.all()
    );
    p.write(
        "b.yaml",
        &pipeline(
            0.0,
            "      terms: {i_uz: {pair: xz, estimator: probe}}\n      classes: 4\n",
        ),
    );
    let run = p.cbound(&["run", "b.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let results = read_rows(&p.latest("b").join("results.parquet"));
    let b = results.iter().find(|r| r["stage"] == "bound").unwrap();
    let (lo, measured) = (
        b["metric.accuracy_lower_bound"].as_f64().unwrap(),
        b["metric.probe_accuracy"].as_f64().unwrap(),
    );
    assert!(lo < measured && lo > measured - 0.15, "{lo} vs {measured}");
    // No upper bound on I(U;Z) was given, so no Fano bound is claimed.
    assert!(b["metric.accuracy_upper_bound"].is_null(), "{b}");
}
