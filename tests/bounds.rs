//! The bounds pipeline end to end: `pipelines/verify-bounds.yaml` (shrunk with `--set`) must
//! reproduce the counterexamples to the study's general bound and Theorem 1 and show no
//! violation of the valid bounds; and the bound stage's bad-input errors.

mod common;
use common::{read_rows, Project};

fn repo_pipeline(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn verify_bounds_reproduces_the_counterexamples_and_no_valid_bound_fails() {
    let p = Project::new();
    p.write("verify-bounds.yaml", &repo_pipeline("verify-bounds.yaml"));
    let run = p.cbound(&[
        "run",
        "verify-bounds.yaml",
        "--set",
        "stages.random.matrix.table_seed=[0, 1, 2, 3]",
        "--set",
        "stages.mixture.matrix.noise=[1.0]",
        "--set",
        "stages.mixture.params.mc_samples=40000",
        "--progress",
        "none",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("verify-bounds");
    let bounds = |instance: &str| {
        let stage = instance.split('@').next().unwrap();
        read_rows(&dir.join(stage).join(instance).join("bounds.parquet"))
    };
    let violated = |rows: &[serde_json::Value], name: &str| {
        let row = rows
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {rows:?}"));
        row["violated"] == true
    };
    // U = X = Y = Z, one fair bit: the general bound claims 2 bits against 1.
    let general = bounds("counterexample_bounds@case=general_counterexample");
    assert!(violated(&general, "study_general"), "{general:?}");
    let row = general
        .iter()
        .find(|r| r["name"] == "study_general")
        .unwrap();
    assert!((row["value_nats"].as_f64().unwrap() - 2.0 * std::f64::consts::LN_2).abs() < 1e-9);
    assert!((row["truth_nats"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-9);
    // Both Theorem 1 counterexamples: 1 bit claimed, I(U;Z) = 0.
    for case in ["theorem1_z_constant", "theorem1_z_is_y"] {
        let rows = bounds(&format!("counterexample_bounds@case={case}"));
        assert!(violated(&rows, "study_theorem1"), "{case}: {rows:?}");
        for r in rows.iter().filter(|r| r["status"] == "as_stated") {
            assert_eq!(r["certified"], false, "{r}");
        }
    }
    // Z = Y, U = X is a deterministic encoder: the deterministic-encoder bound is computed.
    let z_is_y = bounds("counterexample_bounds@case=theorem1_z_is_y");
    assert!(z_is_y
        .iter()
        .any(|r| r["name"] == "valid_deterministic" && r["value_nats"].is_number()));
    let z_const = bounds("counterexample_bounds@case=theorem1_z_constant");
    // U = Y is not a function of X, so the deterministic bound must not be claimed: its row
    // keeps its name and validity, with no value and the reason.
    let det = z_const
        .iter()
        .find(|r| r["name"] == "valid_deterministic")
        .unwrap_or_else(|| panic!("no valid_deterministic row: {z_const:?}"));
    assert_eq!(det["certification"], "not_computed", "{det}");
    assert_eq!(det["status"], "valid", "{det}");
    assert!(
        det["value_nats"].is_null() && det["error"].is_string(),
        "{det}"
    );
    for rows in [&general, &z_is_y, &z_const] {
        for r in rows.iter() {
            assert!(
                r["name"].is_string() && r["status"].is_string(),
                "a row without a name: {r}"
            );
            assert!(r["certification"].is_string(), "{r}");
        }
    }

    let results = read_rows(&dir.join("results.parquet"));
    let bound_rows: Vec<_> = results.iter().filter(|r| r["kind"] == "bound").collect();
    assert_eq!(bound_rows.len(), 3 + 16 + 3, "{results:?}");
    let mut study = 0.0;
    for r in &bound_rows {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(
            r["metric.violations_valid"], 0.0,
            "a valid bound failed: {r}"
        );
        study += r["metric.violations"].as_f64().unwrap();
    }
    let random_study: f64 = bound_rows
        .iter()
        .filter(|r| r["stage"] == "random_bounds")
        .map(|r| r["metric.violations"].as_f64().unwrap())
        .sum();
    assert!(study >= 3.0, "{study}");
    assert!(
        random_study > 0.0,
        "random tables should also refute the study"
    );
}

#[test]
fn bound_refuses_mixed_units_and_names_missing_terms() {
    let p = Project::new();
    p.write(
        "u.yaml",
        r#"name: u
stages:
  data:
    kind: synthetic
    params: {task: bivariate, rho: 0.5, n: 100}
  mixed:
    kind: bound
    inputs: data
    params:
      terms:
        i_uz: {metric: true_mi_nats, kind: exact}
        i_uy: {metric: true_mi_bits, kind: exact}
        i_xy_given_z: {value: 0.0}
"#,
    );
    // Refused before anything runs (exit 2, a configuration error), at the terms.
    let run = p.cbound(&["run", "u.yaml", "--progress", "none"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.all().contains("terms mix units")
            && run.all().contains("I(U;Y)")
            && run
                .all()
                .contains("u.yaml:10:7 (at `stages.mixed.params.terms`)"),
        "{}",
        run.all()
    );

    p.write(
        "m.yaml",
        r#"name: m
stages:
  data:
    kind: synthetic
    params: {task: bivariate, rho: 0.5, n: 100}
  missing:
    kind: bound
    inputs: data
    params:
      terms:
        i_uy: {metric: true_mi_nats, kind: exact}
"#,
    );
    let run = p.cbound(&["run", "m.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let rows = read_rows(&p.latest("m").join("missing/missing/bounds.parquet"));
    let general = rows
        .iter()
        .find(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("I(X;Y|Z)") && e.contains("ksg_cmi"))
        })
        .unwrap_or_else(|| panic!("no row names the missing I(X;Y|Z): {rows:?}"));
    assert!(general["value_nats"].is_null());
}

#[test]
fn contradictory_terms_are_flagged_and_certify_no_accuracy() {
    let p = Project::new();
    p.write(
        "c.yaml",
        r#"name: c
stages:
  data:
    kind: synthetic
    params: {task: bivariate, rho: 0.5, n: 100}
  bound:
    kind: bound
    inputs: data
    params:
      terms:
        i_uz: {value: 0.5, kind: lower_bound}
        i_uy: {value: 2.0, kind: lower_bound}
        i_xy: {value: 1.0, kind: exact}
        i_xy_given_z: {value: 0.0}
      assumptions: {u_is_function_of_x: true}
      classes: 4
"#,
    );
    let run = p.cbound(&["run", "c.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let rows = read_rows(&p.latest("c").join("bound/bound/bounds.parquet"));
    let clash = rows
        .iter()
        .find(|r| r["status"] == "inconsistent")
        .unwrap_or_else(|| {
            panic!("I(U;Y) >= 2 against I(U;Y) <= I(X;Y) = 1 must be flagged: {rows:?}")
        });
    let text = clash["error"].as_str().unwrap();
    assert!(
        text.contains("I(U;Y)") && text.contains("data_processing_uy"),
        "{text}"
    );
    let results = read_rows(&p.latest("c").join("results.parquet"));
    let b = results.iter().find(|r| r["stage"] == "bound").unwrap();
    // Two contradictions: I(U;Y) >= 2 against I(U;Y) <= I(X;Y) = 1, and the deterministic
    // bound I(U;Z) >= 2 above H(Z) <= log 4.
    assert_eq!(b["metric.inconsistencies"], 2.0, "{b}");
    assert!(
        rows.iter().any(|r| r["status"] == "inconsistent"
            && r["error"].as_str().unwrap().contains("exceeds H(Z)")),
        "{rows:?}"
    );
    assert!(b["metric.accuracy_lower_bound"].is_null(), "{b}");
    assert!(b["metric.iuz_lower_nats"].is_null(), "{b}");
}

/// The README's main pipeline, shrunk: every stage runs, the conditional-independence bound
/// is certified from held-out pairs and consistent with the exact ceiling I(X;Z).
#[test]
fn quickstart_certifies_a_bound_consistent_with_the_truth() {
    let p = Project::new();
    p.write("quickstart.yaml", &repo_pipeline("quickstart.yaml"));
    let run = p.cbound(&[
        "run",
        "quickstart.yaml",
        "--set",
        "stages.train.params.epochs=3",
        "--set",
        "stages.mixture.params.n=2000",
        "--set",
        "stages.mixture.params.mc_samples=20000",
        "--set",
        "stages.test_mixture.params.n=1200",
        "--set",
        "stages.test_mixture.params.mc_samples=20000",
        "--progress",
        "none",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("quickstart");
    let results = read_rows(&dir.join("results.parquet"));
    for kind in [
        "synthetic",
        "load",
        "augment",
        "train",
        "embed",
        "estimate_mi",
        "bound",
    ] {
        assert!(
            results
                .iter()
                .any(|r| r["kind"] == kind && r["status"] == "ok"),
            "{kind} did not run: {results:?}"
        );
    }
    let truth_xz = results
        .iter()
        .find(|r| r["stage"] == "mixture")
        .and_then(|r| r["metric.true_i_xz"].as_f64())
        .unwrap();
    for b in results.iter().filter(|r| r["kind"] == "bound") {
        assert_eq!(b["metric.violations_valid"], 0.0, "{b}");
        assert_eq!(b["metric.inconsistencies"], 0.0, "{b}");
        assert_eq!(b["metric.confidence"], 0.95, "{b}");
        // The probe's certified lower bound on I(U;Z): below its point value and the ceiling.
        let lower = b["metric.iuz_lower_nats"].as_f64().unwrap();
        let point = b["metric.iuz_lower_point_nats"].as_f64().unwrap();
        assert!(0.0 < lower && lower < point, "{lower} vs point {point}");
        assert!(lower <= truth_xz, "{lower} > I(X;Z) = {truth_xz}");
        let (lo, hi) = (
            b["metric.accuracy_lower_bound"].as_f64().unwrap(),
            b["metric.accuracy_upper_bound"].as_f64().unwrap(),
        );
        let measured = b["metric.probe_accuracy"].as_f64().unwrap();
        assert!(
            0.25 <= lo && lo <= measured && measured <= hi && hi <= 1.0,
            "{lo} {measured} {hi}"
        );
        let instance = b["instance"].as_str().unwrap();
        let rows = read_rows(&dir.join("bound").join(instance).join("bounds.parquet"));
        let ci: Vec<_> = rows
            .iter()
            .filter(|r| r["name"] == "valid_conditional_independence")
            .collect();
        assert_eq!(ci.len(), 3, "snapshots at epochs 0, 2, 3: {rows:?}");
        // Few held-out batches for InfoNCE: its confidence bound is honest and vacuous here.
        for r in &ci {
            assert!(
                r["certification"] == "certified" || r["certification"] == "vacuous",
                "{r}"
            );
            assert!(r["certified_nats"].as_f64().unwrap() <= r["value_nats"].as_f64().unwrap());
        }
        let probe_terms: Vec<_> = rows
            .iter()
            .filter(|r| r["name"] == "term" && r["lhs"] == "I(U;Z)")
            .collect();
        assert_eq!(probe_terms.len(), 3, "{rows:?}");
        let cp = rows
            .iter()
            .find(|r| r["name"] == "accuracy_clopper_pearson")
            .unwrap_or_else(|| panic!("{rows:?}"));
        assert_eq!(cp["certification"], "certified", "{cp}");
    }
}

/// An accuracy bound that says no more than chance (a lower bound at or below 1/K) is
/// `vacuous` in bounds.parquet and no `accuracy_lower_bound` result; one above chance is
/// certified and reported.
#[test]
fn an_accuracy_lower_bound_at_chance_is_vacuous() {
    let p = Project::new();
    let pipeline = |iuz: &str| {
        format!(
            r#"name: v
stages:
  data:
    kind: synthetic
    params: {{task: bivariate, rho: 0.5, n: 100}}
  bound:
    kind: bound
    inputs: data
    params:
      terms:
        i_uz: {{value: {iuz}, kind: lower_bound}}
      classes: 4
"#
        )
    };
    let accuracy_row = |p: &Project| {
        let rows = read_rows(&p.latest("v").join("bound/bound/bounds.parquet"));
        rows.into_iter()
            .find(|r| r["name"] == "accuracy_feder_merhav")
            .expect("a Feder-Merhav row")
    };
    let bound_result = |p: &Project| {
        read_rows(&p.latest("v").join("results.parquet"))
            .into_iter()
            .find(|r| r["stage"] == "bound")
            .unwrap()
    };
    // I(U;Z) >= 0 gives accuracy >= 1/4 exactly: chance.
    p.write("v.yaml", &pipeline("0.0"));
    let run = p.cbound(&["run", "v.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let row = accuracy_row(&p);
    assert_eq!(row["certification"], "vacuous", "{row}");
    assert!(
        (row["certified_nats"].as_f64().unwrap() - 0.25).abs() < 1e-9,
        "{row}"
    );
    let b = bound_result(&p);
    assert!(b["metric.accuracy_lower_bound"].is_null(), "{b}");
    assert!(b["metric.vacuous"].as_f64().unwrap() >= 1.0, "{b}");

    // I(U;Z) >= 0.5 nats: above chance, certified and reported.
    p.write("v.yaml", &pipeline("0.5"));
    let run = p.cbound(&["run", "v.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let row = accuracy_row(&p);
    assert_eq!(row["certification"], "certified", "{row}");
    let b = bound_result(&p);
    let lower = b["metric.accuracy_lower_bound"].as_f64().unwrap();
    assert!(lower > 0.25 && lower < 1.0, "{b}");
}
