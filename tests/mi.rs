//! Mutual-information estimation through the real binary: the `estimate_mi` stage in a
//! pipeline and `cbound mi` on Parquet and CSV files, read back with pyarrow.

mod common;
use common::{read_rows, Project};

const PIPELINE: &str = r#"name: est
seed: 3
stages:
  data:
    kind: synthetic
    params: {task: bivariate, rho: 0.75, n: 2000}
  estimate:
    kind: estimate_mi
    inputs: data
    params:
      pairs:
        - {name: xy, x: {columns: x0}, y: {columns: y0}}
        - name: wide
          x: {columns: "x*, y*"}
          y: {columns: "y*, x*"}
          estimators: [{name: histogram, bins: 4000}]
      estimators: [{name: ksg, k: 3}, {name: gaussian}, {name: histogram, bins: 16}]
      interval: {reps: 10, level: 0.9}
"#;

#[test]
fn estimate_stage_writes_estimates_near_the_truth_and_explains_failures() {
    let p = Project::new();
    p.write("est.yaml", PIPELINE);
    let run = p.cbound(&["run", "est.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("est").join("estimate/estimate");
    let rows = read_rows(&dir.join("mi_estimates.parquet"));
    assert_eq!(rows.len(), 4);
    let truth = -0.5 * (1.0f64 - 0.75 * 0.75).ln();
    for r in &rows[..3] {
        let nats = r["nats"].as_f64().unwrap();
        assert!((nats - truth).abs() < 0.08, "{r}");
        assert_eq!(r["kind"], "estimate");
        assert!(
            r["ci_low"].as_f64().unwrap() <= nats && nats <= r["ci_high"].as_f64().unwrap(),
            "{r}"
        );
        assert_eq!(r["n"], 2000);
        assert!(r["error"].is_null());
    }
    // A histogram with 4000^4 cells is refused with the reason, not a silent number.
    let wide = &rows[3];
    assert_eq!(wide["pair"], "wide");
    assert!(wide["error"].as_str().unwrap().contains("cells"), "{wide}");
    let results = read_rows(&p.latest("est").join("results.parquet"));
    let est = results.iter().find(|r| r["stage"] == "estimate").unwrap();
    assert!(
        (est["metric.xy.ksg"].as_f64().unwrap() - truth).abs() < 0.08,
        "{est}"
    );
    assert!(est["metric.xy.gaussian"].as_f64().is_some());
}

#[test]
fn mi_command_on_parquet_and_csv() {
    let p = Project::new();
    p.write("est.yaml", PIPELINE);
    assert_eq!(p.cbound(&["run", "est.yaml", "--only", "data"]).code, 0);
    let samples = p.latest("est").join("data/data/samples.parquet");
    let samples = samples.to_str().unwrap();
    let run = p.cbound(&[
        "mi",
        samples,
        "--x",
        "x0",
        "--y",
        "y0",
        "-e",
        "ksg",
        "-e",
        "gaussian",
        "--output",
        "out.parquet",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("ksg") && run.stdout.contains("gaussian"),
        "{}",
        run.all()
    );
    let rows = read_rows(&p.path().join("out.parquet"));
    assert_eq!(rows.len(), 2);
    assert!(
        (rows[0]["nats"].as_f64().unwrap() - 0.4133).abs() < 0.08,
        "{:?}",
        rows[0]
    );

    let json = p.cbound(&[
        "mi",
        samples,
        "--x",
        "x*",
        "--y",
        "y*",
        "-e",
        "ksg:k=5,algorithm=2",
        "--json",
    ]);
    assert_eq!(json.code, 0, "{}", json.all());
    let line: serde_json::Value =
        serde_json::from_str(json.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["estimator"], "ksg");
    assert!(line["params"].as_str().unwrap().contains("\"k\":5"));

    // Labels in a CSV: discrete MI and a probe.
    let mut csv = String::from("u,label\n");
    for i in 0..400 {
        let c = i % 2;
        csv.push_str(&format!(
            "{},{}\n",
            c as f64 * 10.0 + (i % 7) as f64 * 0.1,
            if c == 0 { "cat" } else { "dog" }
        ));
    }
    p.write("labels.csv", &csv);
    let probe = p.cbound(&[
        "mi",
        "labels.csv",
        "--x",
        "u",
        "--y",
        "label",
        "-e",
        "probe",
        "--json",
    ]);
    // `label` is text: the probe needs numeric class indices, and says so.
    assert_eq!(probe.code, 2, "{}", probe.all());
    assert!(probe.stderr.contains("expected numbers"), "{}", probe.all());
}

#[test]
fn mi_command_bad_input() {
    let p = Project::new();
    p.write("t.csv", "a,b,c\n1,2,5\n2,1,5\n3,4,5\n");
    let few = p.cbound(&["mi", "t.csv", "--x", "a", "--y", "b", "-e", "ksg"]);
    assert_eq!(few.code, 2, "{}", few.all());
    assert!(
        few.stdout.contains("NaN error:") && few.stdout.contains("3"),
        "{}",
        few.all()
    );
    let constant = p.cbound(&["mi", "t.csv", "--x", "a", "--y", "c", "-e", "gaussian"]);
    assert_eq!(constant.code, 2, "{}", constant.all());
    assert!(
        constant.stdout.to_lowercase().contains("constant"),
        "{}",
        constant.all()
    );
    let missing = p.cbound(&["mi", "t.csv", "--x", "zz", "--y", "b"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("no column matches `zz`"),
        "{}",
        missing.all()
    );
    p.write("u.csv", "b\n1\n2\n");
    let mismatch = p.cbound(&[
        "mi", "t.csv", "--x", "a", "--y", "b", "--y-file", "u.csv", "-e", "gaussian",
    ]);
    assert_eq!(mismatch.code, 2);
    assert!(
        mismatch.stdout.contains("3") && mismatch.stdout.contains("2"),
        "{}",
        mismatch.all()
    );
    let bad_estimator = p.cbound(&["mi", "t.csv", "--x", "a", "--y", "b", "-e", "ksg:kk=2"]);
    assert_eq!(bad_estimator.code, 2);
    assert!(
        bad_estimator.stderr.contains("unknown field `kk`"),
        "{}",
        bad_estimator.all()
    );
}

/// `cbound mi` refuses, before reading any data, the estimator settings and flags that
/// `validate` refuses in a pipeline, naming the setting.
#[test]
fn mi_command_refuses_bad_settings_up_front() {
    let p = Project::new();
    p.write("t.csv", "a,b\n1,2\n2,1\n3,4\n4,4\n5,6\n");
    for (args, says) in [
        (
            vec!["-e", "ksg:k=0"],
            "estimator `ksg:k=0`: `k`: k must be at least 1, got 0",
        ),
        (
            vec!["-e", "ksg:algorithm=3"],
            "invalid value: integer `3`, expected 1 or 2",
        ),
        (
            vec!["-e", "histogram:bins=0"],
            "`bins`: bins must be at least 2 per dimension, got 0",
        ),
        (
            vec!["-e", "infonce:temperature=-1"],
            "`temperature`: temperature must be positive and finite, got -1",
        ),
        (
            vec!["--max-rows", "0"],
            "--max-rows: max_rows must be at least 1",
        ),
        (
            vec!["--interval-reps", "1"],
            "--interval-reps: reps must be at least 2 subsamples, got 1",
        ),
        (
            vec!["--interval-reps", "5", "--level", "1.5"],
            "--level: level (the central coverage) must lie strictly between 0 and 1",
        ),
    ] {
        let mut all = vec!["mi", "t.csv", "--x", "a", "--y", "b"];
        all.extend(&args);
        let run = p.cbound(&all);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(run.stderr.contains(says), "{args:?}: {}", run.all());
        // Refused as a usage error, not as a NaN row of the table.
        assert!(!run.stdout.contains("NaN"), "{args:?}: {}", run.all());
    }
}

const VALIDATE_HEAD: &str = "stages:\n  data:\n    kind: synthetic\n    params: {task: bivariate, rho: 0.5, n: 100}\n  mi:\n    kind: estimate_mi\n    inputs: data\n    params:\n      pairs: [{name: xy, x: {columns: x0}, y: {columns: y0}}]\n";

/// `cbound validate` on an estimate_mi stage with these `estimators:` lines refuses it with
/// `message` at `location` (`p.yaml:L:C (at \`path\`)`).
fn estimator_refused(estimators: &str, location: &str, message: &str) {
    common::validate_refuses(&format!("{VALIDATE_HEAD}{estimators}"), location, message);
}

#[test]
fn validate_refuses_ksg_with_no_neighbours() {
    estimator_refused(
        "      estimators: [{name: ksg, k: 0}]\n",
        "p.yaml:10:35 (at `stages.mi.params.estimators[0].k`)",
        "k must be at least 1, got 0",
    );
}

#[test]
fn validate_refuses_a_ksg_algorithm_other_than_1_or_2() {
    estimator_refused(
        "      estimators: [{name: gaussian}, {name: ksg, k: 2, algorithm: 3}]\n",
        "p.yaml:10:67 (at `stages.mi.params.estimators[1].algorithm`)",
        "invalid value: integer `3`, expected 1 or 2",
    );
}

#[test]
fn validate_refuses_a_histogram_without_bins() {
    estimator_refused(
        "      estimators: [{name: histogram, bins: 0}]\n",
        "p.yaml:10:44 (at `stages.mi.params.estimators[0].bins`)",
        "bins must be at least 2 per dimension, got 0",
    );
}

#[test]
fn validate_refuses_a_negative_infonce_temperature() {
    estimator_refused(
        "      estimators:\n        - name: infonce\n          temperature: -1\n",
        "p.yaml:12:24 (at `stages.mi.params.estimators[0].temperature`)",
        "temperature must be positive and finite, got -1",
    );
}

/// Every kind `cbound estimators` lists has an example, and all of them validate together
/// in one pipeline (its pair has a `z`, for the kinds that need one).
#[test]
fn every_listed_estimator_example_validates() {
    let p = Project::new();
    let listed = p.cbound(&["estimators"]);
    assert_eq!(listed.code, 0, "{}", listed.all());
    let examples: Vec<&str> = listed
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("example: "))
        .collect();
    for name in [
        "ksg",
        "ksg_cmi",
        "histogram",
        "gaussian",
        "discrete",
        "infonce",
        "infonce_cosine",
        "infonce_critic",
        "nwj_critic",
        "mine_critic",
        "gaussian_channel",
        "probe",
    ] {
        assert!(
            examples
                .iter()
                .any(|e| e.starts_with(&format!("{{name: {name},"))
                    || *e == format!("{{name: {name}}}")),
            "no example of {name} in:\n{}",
            listed.stdout
        );
    }
    p.write(
        "p.yaml",
        &format!(
            "stages:\n  data:\n    kind: synthetic\n    params: {{task: bivariate, rho: 0.5, n: 100}}\n  mi:\n    kind: estimate_mi\n    inputs: data\n    params:\n      pairs: [{{name: xy, x: {{columns: x0}}, y: {{columns: y0}}, z: {{columns: y0}}}}]\n      estimators: [{}]\n",
            examples.join(", ")
        ),
    );
    let run = p.cbound(&["validate", "p.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let one = p.cbound(&["estimators", "ksg"]);
    assert!(
        one.stdout.contains("algorithm: 1 | 2 (default 2)"),
        "{}",
        one.all()
    );
    assert_eq!(p.cbound(&["estimators", "ksgg"]).code, 2);
}

/// Rules of the pair-level lists, the interval and preprocessing, and a kind that needs `z`
/// on a pair without one, each at its own place.
#[test]
fn validate_refuses_pair_interval_and_preprocess_settings() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  data:\n    kind: synthetic\n    params: {task: bivariate, rho: 0.5, n: 100}\n  mi:\n    kind: estimate_mi\n    inputs: data\n    params:\n      pairs:\n        - {name: xy, x: {columns: x0}, y: {columns: y0}, estimators: [{name: probe, train_fraction: 1.0}, {name: ksg_cmi}]}\n      interval: {reps: 1, level: 0.9}\n      preprocess: {max_rows: 0}\n",
    );
    let run = p.cbound(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    for (location, message) in [
        (
            "p.yaml:10:101 (at `stages.mi.params.pairs[0].estimators[0].train_fraction`)",
            "train_fraction must lie strictly between 0 and 1, got 1",
        ),
        (
            "p.yaml:10:11 (at `stages.mi.params.pairs[0]`)",
            "pair `xy` has no `z`, but its estimators[1], `ksg_cmi`, estimates I(X;Y|Z)",
        ),
        (
            "p.yaml:11:24 (at `stages.mi.params.interval.reps`)",
            "reps must be at least 2 subsamples, got 1",
        ),
        (
            "p.yaml:12:30 (at `stages.mi.params.preprocess.max_rows`)",
            "max_rows must be at least 1",
        ),
    ] {
        let found = run
            .stderr
            .split("\n\n")
            .any(|e| e.contains(message) && e.contains(location));
        assert!(found, "no `{message}` at `{location}` in:\n{}", run.all());
    }
}

/// A pair's `split` (rows the data assigns to fitting and scoring) cannot follow
/// `interval`'s resampled rows, and must name a column: both refused at the pair's `split`.
#[test]
fn validate_refuses_a_pair_split_with_interval_or_no_column() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  data:\n    kind: synthetic\n    params: {task: bivariate, rho: 0.5, n: 100}\n  mi:\n    kind: estimate_mi\n    inputs: data\n    params:\n      pairs:\n        - {name: xy, x: {columns: x0}, y: {columns: y0}, split: split}\n        - {name: yx, x: {columns: y0}, y: {columns: x0}, split: ' '}\n      interval: {reps: 5, level: 0.9}\n",
    );
    let run = p.cbound(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    for (location, message) in [
        (
            "(at `stages.mi.params.pairs[0].split`)",
            "pair `xy` takes its held-out split from the data, which `interval`'s replicates (resampled rows) cannot follow",
        ),
        (
            "(at `stages.mi.params.pairs[1].split`)",
            "`split` names a column of x's table (e.g. `split`); it is empty",
        ),
    ] {
        let found = run
            .stderr
            .split("\n\n")
            .any(|e| e.contains(message) && e.contains(location) && e.contains("p.yaml:1"));
        assert!(found, "no `{message}` at `{location}` in:\n{}", run.all());
    }
}

#[test]
fn mixture_truth_and_estimates_agree_in_direction() {
    let p = Project::new();
    p.write(
        "mix.yaml",
        r#"name: mix
seed: 11
stages:
  data:
    kind: synthetic
    params: {task: mixture, classes: 4, dim: 2, spread: 3.0, noise: 1.0, n: 2000, mc_samples: 50000}
    matrix: {nuisance: [0.0, 1.0]}
  estimate:
    kind: estimate_mi
    inputs: data
    params:
      pairs:
        - {name: xz, x: {columns: "x*"}, y: {columns: z}, estimators: [{name: probe}]}
        - {name: xy_z, x: {columns: "x*"}, y: {columns: "y*"}, z: {columns: z}, estimators: [{name: ksg_cmi, discrete_z: true}]}
"#,
    );
    let run = p.cbound(&["run", "mix.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let rows = read_rows(&p.latest("mix").join("results.parquet"));
    let get = |id: &str, m: &str| {
        rows.iter().find(|r| r["instance"] == id).unwrap()[m]
            .as_f64()
            .unwrap()
    };
    let i_xz = get("data@nuisance=0.0", "metric.true_i_xz");
    assert!(i_xz > 0.3 && i_xz < 4f64.ln(), "{i_xz}");
    assert_eq!(get("data@nuisance=0.0", "metric.true_i_xy_given_z"), 0.0);
    assert!(get("data@nuisance=1.0", "metric.true_i_xy_given_z") > 0.1);
    // The probe is a lower bound: it must not exceed the truth beyond sampling error.
    let probe = get("estimate@nuisance=0.0", "metric.xz.probe");
    assert!(
        probe < i_xz + 0.05 && probe > 0.5 * i_xz,
        "probe {probe} vs truth {i_xz}"
    );
    let cmi0 = get("estimate@nuisance=0.0", "metric.xy_z.ksg_cmi");
    let cmi1 = get("estimate@nuisance=1.0", "metric.xy_z.ksg_cmi");
    let truth1 = get("data@nuisance=1.0", "metric.true_i_xy_given_z");
    assert!(cmi0.abs() < 0.05, "{cmi0}");
    assert!((cmi1 - truth1).abs() < 0.1, "{cmi1} vs {truth1}");
}

#[test]
fn bound_stage_certifies_checks_truth_and_names_missing_terms() {
    let p = Project::new();
    p.write(
        "b.yaml",
        r#"name: b
seed: 5
stages:
  data:
    kind: synthetic
    params: {task: mixture, classes: 4, dim: 2, spread: 3.0, noise: 1.0, n: 3000, mc_samples: 50000}
    matrix: {nuisance: [0.0, 1.0]}
  estimate:
    kind: estimate_mi
    inputs: data
    params:
      pairs:
        - {name: uz, x: {columns: "x*"}, y: {columns: z}, estimators: [{name: probe}]}
        - {name: uy, x: {columns: "x*"}, y: {columns: "y*"}, estimators: [{name: ksg}]}
  bound:
    kind: bound
    inputs: [estimate, data]
    params:
      terms:
        i_uz: {pair: uz, estimator: probe}
        i_uy: {pair: uy, estimator: ksg}
        i_xy_given_z: {metric: true_i_xy_given_z, kind: exact}
        i_xz: {metric: true_i_xz, kind: exact}
        i_yz: {metric: true_i_yz, kind: exact}
        i_xy: {metric: true_i_xy, kind: exact}
        h_z: {metric: true_h_z, kind: exact}
      truth: {i_uz: {metric: true_i_xz}, i_uy: {metric: true_i_xy}}
      assumptions: {u_is_function_of_x: true}
      classes: 4
      tolerance: 0.05
  full:
    kind: bound
    inputs: [estimate, data]
    params:
      terms:
        i_uz: {pair: uz, estimator: probe}
        i_uy: {pair: uy, estimator: ksg}
        i_xy_given_z: {metric: true_i_xy_given_z, kind: exact}
        i_uy_given_xz: {value: 0.0}
      truth: {i_uz: {metric: true_i_xz}}
      tolerance: 0.05
"#,
    );
    let run = p.cbound(&["run", "b.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for nuisance in ["0.0", "1.0"] {
        let dir = p
            .latest("b")
            .join(format!("bound/bound@nuisance={nuisance}"));
        let rows = read_rows(&dir.join("bounds.parquet"));
        let by_name = |n: &str| rows.iter().find(|r| r["name"] == n).cloned();
        // I(U;Y|X,Z) (0, since U = X) is not among the terms: the general valid bound says
        // what would provide it instead of inventing a number.
        assert!(
            rows.iter().any(|r| r["error"]
                .as_str()
                .is_some_and(|e| e.contains("I(U;Y|X,Z)") && e.contains("exact value 0"))),
            "{rows:?}"
        );
        for r in rows.iter().filter(|r| r["status"] == "valid") {
            assert_ne!(
                r["violated"], true,
                "a valid bound contradicted the truth: {r}"
            );
        }
        let dpi = rows
            .iter()
            .find(|r| r["side"] == "upper" && r["lhs"] == "I(U;Z)")
            .expect("data-processing row");
        assert_eq!(dpi["certified"], true, "{dpi}");
        let theorem = rows.iter().find(|r| {
            r["status"] == "as_stated" && r["statement"].as_str().unwrap_or("").contains("I(X;Z)")
        });
        assert!(theorem.is_some_and(|t| t["certified"] == false), "{rows:?}");
        let _ = by_name;
    }
    for nuisance in ["0.0", "1.0"] {
        let rows = read_rows(
            &p.latest("b")
                .join(format!("full/full@nuisance={nuisance}/bounds.parquet")),
        );
        let general = rows
            .iter()
            .find(|r| r["name"] == "valid_general")
            .expect("valid_general computed");
        assert_eq!(general["violated"], false, "{general}");
        assert_eq!(general["status"], "valid");
    }
    let results = read_rows(&p.latest("b").join("results.parquet"));
    let b0 = results
        .iter()
        .find(|r| r["instance"] == "bound@nuisance=0.0")
        .unwrap();
    assert_eq!(b0["metric.violations_valid"], 0.0, "{b0}");
    let lower = b0["metric.accuracy_lower_bound"].as_f64().unwrap();
    let measured = b0["metric.probe_accuracy"].as_f64().unwrap();
    assert!(lower > 0.25 && lower < 1.0, "{b0}");
    assert!(measured > 0.25, "{b0}");
}

/// KSG with Euclidean marginal norms against an independent implementation: brute-force
/// NumPy distances, and digamma of the integer arguments KSG uses as exact harmonic numbers.
#[test]
fn euclidean_ksg_matches_an_independent_numpy_reference() {
    let p = Project::new();
    let file = p.path().join("g.parquet");
    let reference = common::py(
        r#"
import sys, math
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
rng = np.random.default_rng(7)
n, k = 400, 3
x = rng.normal(size=(n, 3))
y = 0.6 * x[:, :2] + 0.8 * rng.normal(size=(n, 2))
cols = {f"x{i}": x[:, i] for i in range(3)}
cols.update({f"y{i}": y[:, i] for i in range(2)})
pq.write_table(pa.table(cols), sys.argv[1])
def psi(m):  # digamma at a positive integer: -gamma + H(m - 1)
    return -0.5772156649015329 + sum(1.0 / i for i in range(1, m))
dx = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
dy = np.sqrt(((y[:, None, :] - y[None, :, :]) ** 2).sum(-1))
dj = np.maximum(dx, dy)
np.fill_diagonal(dj, np.inf)
out = []
for alg in (1, 2):
    s = 0.0
    for i in range(n):
        nb = np.argsort(dj[i], kind="stable")[:k]
        mx, my = np.delete(dx[i], i), np.delete(dy[i], i)
        if alg == 1:
            e = dj[i, nb[-1]]
            s += psi(int((mx < e).sum()) + 1) + psi(int((my < e).sum()) + 1)
        else:
            s += psi(int((mx <= dx[i, nb].max()).sum())) + psi(int((my <= dy[i, nb].max()).sum()))
    v = psi(k) + psi(n) - s / n - (1.0 / k if alg == 2 else 0.0)
    out.append(v)
print(*out)
"#,
        &[file.to_str().unwrap()],
    );
    let want: Vec<f64> = reference
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    for (alg, want) in [(1, want[0]), (2, want[1])] {
        let run = p.cbound(&[
            "mi",
            "g.parquet",
            "--x",
            "x0,x1,x2",
            "--y",
            "y0,y1",
            "--no-standardise",
            "--no-jitter",
            "--json",
            "-e",
            &format!("ksg:metric=euclidean,algorithm={alg}"),
        ]);
        assert_eq!(run.code, 0, "{}", run.all());
        let row: serde_json::Value =
            serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
        let got = row["nats"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-9,
            "algorithm {alg}: cbound {got}, NumPy {want}"
        );
    }
}

/// One estimator of several that cannot run is not a failed command: the others' estimates
/// stand, the failing row says why, and the exit code is 0 (2 only when none could run).
/// Inputs that make estimates meaningless are warned about before estimating.
#[test]
fn partial_success_exits_zero_and_meaningless_inputs_are_warned_about() {
    let p = Project::new();
    p.write("t.csv", "a,b\n1,2\n2,1\n3,4\n");
    let run = p.cbound(&[
        "mi", "t.csv", "--x", "a", "--y", "b", "-e", "ksg", "-e", "gaussian", "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let rows: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("at least 4 samples")),
        "{rows:?}"
    );
    assert!(rows[1]["nats"].is_number(), "{rows:?}");
    assert!(
        run.stderr.contains("1 of 2 estimators could not run"),
        "{}",
        run.all()
    );
    let none = p.cbound(&["mi", "t.csv", "--x", "a", "--y", "b", "-e", "ksg"]);
    assert_eq!(none.code, 2, "{}", none.all());

    let mut csv = String::from("x,y\n");
    for i in 0..200 {
        let v = (i as f64 * 0.37).sin();
        csv.push_str(&format!("{v},{}\n", v * 0.5 + (i as f64 * 1.3).cos()));
    }
    p.write("c.csv", &csv);
    let same = p.cbound(&["mi", "c.csv", "--x", "x", "--y", "x", "-e", "ksg"]);
    assert_eq!(same.code, 0, "{}", same.all());
    assert!(
        same.stderr.contains("hold the same values"),
        "{}",
        same.all()
    );
    let discrete = p.cbound(&["mi", "c.csv", "--x", "x", "--y", "y", "-e", "discrete"]);
    assert!(
        discrete
            .stderr
            .contains("`discrete` reads x as class labels, but x looks continuous"),
        "{}",
        discrete.all()
    );
    // Integer labels draw no warning.
    p.write("l.csv", "a,b\n0,1\n1,1\n0,0\n1,0\n0,1\n1,1\n");
    let labels = p.cbound(&["mi", "l.csv", "--x", "a", "--y", "b", "-e", "discrete"]);
    assert_eq!(labels.code, 0, "{}", labels.all());
    assert!(!labels.stderr.contains("warning"), "{}", labels.all());
}

/// A table of several encoder snapshots (an `epoch` column) is not pooled: without
/// `--epoch` it is an error listing the epochs, and `--epoch E` estimates on that one.
#[test]
fn snapshots_are_chosen_with_epoch_never_pooled() {
    let p = Project::new();
    let mut csv = String::from("epoch,u,v\n");
    for epoch in [2, 4] {
        for i in 0..300 {
            let u = (i as f64 * 0.61).sin();
            // Epoch 4's v follows u closely, epoch 2's hardly.
            let w = if epoch == 4 { 0.95 } else { 0.05 };
            csv.push_str(&format!(
                "{epoch},{u},{}\n",
                w * u + (1.0 - w) * (i as f64 * 2.3).cos()
            ));
        }
    }
    p.write("s.csv", &csv);
    let pooled = p.cbound(&["mi", "s.csv", "--x", "u", "--y", "v", "-e", "ksg"]);
    assert_eq!(pooled.code, 2, "{}", pooled.all());
    assert!(
        pooled.stderr.contains("2 encoder snapshots (epochs 2, 4)")
            && pooled.stderr.contains("--epoch"),
        "{}",
        pooled.all()
    );
    let nats = |epoch: &str| {
        let run = p.cbound(&[
            "mi", "s.csv", "--x", "u", "--y", "v", "-e", "ksg", "--json", "--epoch", epoch,
        ]);
        assert_eq!(run.code, 0, "{}", run.all());
        let row: serde_json::Value =
            serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
        assert_eq!(row["n"], 300, "{row}");
        row["nats"].as_f64().unwrap()
    };
    assert!(nats("4") > nats("2") + 0.5);
    let missing = p.cbound(&["mi", "s.csv", "--x", "u", "--y", "v", "--epoch", "3"]);
    assert_eq!(missing.code, 2, "{}", missing.all());
    assert!(
        missing.stderr.contains("has epochs 2, 4"),
        "{}",
        missing.all()
    );
}

/// The trained-critic estimators through the binary: in an `estimate_mi` stage (rows with
/// their direction and cap in mi_estimates.parquet) and on `cbound mi` (JSON rows), both
/// fitting the critic with cbound-critic on ONNX Runtime; the old `infonce` name still runs
/// as the raw-cosine critic under its own name.
#[test]
fn trained_critics_in_the_stage_and_on_the_command_line() {
    let p = Project::new();
    p.write(
        "critic.yaml",
        r#"name: critic
seed: 5
stages:
  data:
    kind: synthetic
    params: {task: bivariate, rho: 0.8, n: 1200}
  estimate:
    kind: estimate_mi
    inputs: data
    params:
      pairs: [{name: xy, x: {columns: x0}, y: {columns: y0}}]
      estimators:
        - {name: infonce_critic, hidden: [16], embedding: 8, steps: 200, batch: 32, lr: 0.005}
        - {name: nwj_critic, hidden: [16], embedding: 8, steps: 200, batch: 32, lr: 0.005}
        - {name: mine_critic, critic: concat, hidden: [16], steps: 200, batch: 32, lr: 0.005}
        - {name: infonce, temperature: 0.5, batch: 32}
"#,
    );
    let run = p.cbound(&["run", "critic.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let rows = read_rows(
        &p.latest("critic")
            .join("estimate/estimate/mi_estimates.parquet"),
    );
    let truth = -0.5 * (1.0f64 - 0.8 * 0.8).ln();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["estimator"] == name)
            .unwrap_or_else(|| panic!("no {name} row in {rows:?}"))
    };
    let nce = row("infonce_critic");
    assert!(nce["error"].is_null(), "{nce}");
    assert_eq!(nce["kind"], "lower_bound");
    assert!(
        (nce["cap_nats"].as_f64().unwrap() - 32f64.ln()).abs() < 1e-9,
        "{nce}"
    );
    let v = nce["nats"].as_f64().unwrap();
    assert!(v < truth + 0.1 && v > truth - 0.3, "{nce} (truth {truth})");
    let nwj = row("nwj_critic");
    assert_eq!(nwj["kind"], "lower_bound");
    assert!(nwj["cap_nats"].is_null(), "{nwj}");
    let mine = row("mine_critic");
    assert_eq!(mine["kind"], "estimate");
    assert!(
        (mine["nats"].as_f64().unwrap() - truth).abs() < 0.3,
        "{mine}"
    );
    assert!(
        mine["params"]
            .as_str()
            .unwrap()
            .contains(r#""critic":"concat""#),
        "{mine}"
    );
    let cosine = row("infonce");
    assert_eq!(cosine["kind"], "lower_bound");
    assert!(cosine["params"]
        .as_str()
        .unwrap()
        .starts_with(r#"{"name":"infonce","#));

    let samples = p.latest("critic").join("data/data/samples.parquet");
    let json = p.cbound(&[
        "mi",
        samples.to_str().unwrap(),
        "--x",
        "x0",
        "--y",
        "y0",
        "-e",
        "infonce_critic:hidden=[16],embedding=8,steps=200,batch=32,lr=0.005",
        "-e",
        "infonce_cosine:temperature=0.5,batch=32",
        "--json",
    ]);
    assert_eq!(json.code, 0, "{}", json.all());
    let lines: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["estimator"], "infonce_critic");
    assert_eq!(lines[0]["kind"], "lower_bound");
    assert!((lines[0]["cap_nats"].as_f64().unwrap() - 32f64.ln()).abs() < 1e-9);
    assert!(lines[0]["nats"].as_f64().unwrap() < 32f64.ln());
    assert_eq!(lines[1]["estimator"], "infonce_cosine");
    // The same seed and settings give the same critic: the command line repeats itself.
    let again = p.cbound(&[
        "mi",
        samples.to_str().unwrap(),
        "--x",
        "x0",
        "--y",
        "y0",
        "-e",
        "infonce_critic:hidden=[16],embedding=8,steps=200,batch=32,lr=0.005",
        "--json",
    ]);
    let first: serde_json::Value =
        serde_json::from_str(again.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["nats"], lines[0]["nats"]);
}

/// A bounded trained critic enters `bound` through its confidence bound: the term row is
/// certified below the point value, which is below the truth.
#[test]
fn a_bounded_infonce_critic_is_certified_by_the_bound_stage() {
    let p = Project::new();
    p.write(
        "cb.yaml",
        r#"name: cb
seed: 5
stages:
  data:
    kind: synthetic
    params: {task: bivariate, rho: 0.8, n: 12000}
  estimate:
    kind: estimate_mi
    inputs: data
    params:
      pairs: [{name: uy, x: {columns: x0}, y: {columns: y0}}]
      estimators:
        - {name: infonce_critic, hidden: [16], embedding: 8, steps: 300, batch: 8, lr: 0.005, score_bound: 1.0, train_fraction: 0.25}
  bound:
    kind: bound
    inputs: [estimate]
    params:
      terms: {i_uy: {pair: uy, estimator: infonce_critic}}
"#,
    );
    let run = p.cbound(&["run", "cb.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let rows = read_rows(&p.latest("cb").join("bound/bound/bounds.parquet"));
    let term = rows
        .iter()
        .find(|r| r["name"] == "term")
        .unwrap_or_else(|| panic!("no term row in {rows:?}"));
    assert_eq!(term["certification"], "certified", "{term}");
    let (point, certified) = (
        term["value_nats"].as_f64().unwrap(),
        term["certified_nats"].as_f64().unwrap(),
    );
    let truth = -0.5 * (1.0f64 - 0.8 * 0.8).ln();
    assert!(
        0.0 < certified && certified < point && point < truth,
        "{term}"
    );
    assert!(
        term["statement"].as_str().unwrap().contains("score_bound"),
        "{term}"
    );
}

/// Without ONNX Runtime a stage with a trained-critic estimator fails (nothing is cached,
/// so installing ONNX Runtime and rerunning computes it) instead of recording the missing
/// library as the estimate's error.
#[test]
fn a_critic_without_onnx_runtime_fails_the_stage_and_caches_nothing() {
    let p = Project::new();
    p.write(
        "c.yaml",
        r#"name: c
seed: 5
stages:
  data:
    kind: synthetic
    params: {task: bivariate, rho: 0.8, n: 400}
  estimate:
    kind: estimate_mi
    inputs: data
    params:
      pairs: [{name: xy, x: {columns: x0}, y: {columns: y0}}]
      estimators: [{name: gaussian}, {name: infonce_critic, steps: 10, batch: 32}]
"#,
    );
    let missing = p.path().join("no-such-libonnxruntime.so");
    let mut cmd = p.command(&["run", "c.yaml", "--progress", "none"]);
    cmd.env("CBOUND_ORT_LIB", &missing);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("trained-critic estimators need it"),
        "{stderr}"
    );
    // With the library, the same command computes the stage: nothing stale was cached.
    let run = p.cbound(&["run", "c.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("1 ran, 1 cached"), "{}", run.all());
}

/// `knn` beside `probe` through the binary: both record their held-out split (sizes and seed
/// in mi_estimates, every row's side in mi_estimates.splits), the splits are disjoint, cover
/// the pair's rows and repeat on a second run; `bound` takes the kNN's certificate as it takes
/// the probe's (Clopper-Pearson on its held-out accuracy), and on well-separated classes the
/// kNN is nearly always right.
#[test]
fn knn_and_probe_record_disjoint_reproducible_splits_and_certify() {
    const KNN: &str = r#"name: knn
seed: 7
stages:
  data:
    kind: synthetic
    params: {task: mixture, classes: 4, dim: 8, spread: 6.0, noise: 1.0, n: 1000, mc_samples: 2000}
  estimate:
    kind: estimate_mi
    inputs: data
    params:
      pairs:
        - {name: xz, x: {columns: "x*"}, y: {columns: z}, estimators: [{name: probe, steps: 100}, {name: knn, k: 50}]}
  bound:
    kind: bound
    inputs: [estimate, data]
    params:
      terms: {i_uz: {pair: xz, estimator: knn}}
      classes: 4
"#;
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let p = Project::new();
            p.write("knn.yaml", KNN);
            let run = p.cbound(&["run", "knn.yaml"]);
            assert_eq!(run.code, 0, "{}", run.all());
            let dir = p.latest("knn");
            let est = read_rows(&dir.join("estimate/estimate/mi_estimates.parquet"));
            let splits = read_rows(&dir.join("estimate/estimate/mi_estimates.splits.parquet"));
            let bounds = read_rows(&dir.join("bound/bound/bounds.parquet"));
            (p, est, splits, bounds)
        })
        .collect();
    let (_, est, splits, bounds) = &runs[0];
    assert_eq!(est.len(), 2);
    for (i, r) in est.iter().enumerate() {
        assert!(r["error"].is_null(), "{r}");
        assert_eq!(r["kind"], "lower_bound", "{r}");
        assert_eq!(r["n_train"], 800, "{r}");
        assert_eq!(r["n_test"], 200, "{r}");
        assert!(r["split_seed"].as_u64().is_some(), "{r}");
        let side = |s: &str| -> Vec<u64> {
            splits
                .iter()
                .filter(|x| x["estimate"] == i as u64 && x["split"] == s)
                .map(|x| x["row"].as_u64().unwrap())
                .collect()
        };
        let (train, test) = (side("train"), side("test"));
        assert_eq!((train.len(), test.len()), (800, 200), "{r}");
        assert!(
            test.iter().all(|t| !train.contains(t)),
            "{}: a scored row was fitted on",
            r["estimator"]
        );
        let mut all: Vec<u64> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<u64>>());
    }
    let knn = est.iter().find(|r| r["estimator"] == "knn").unwrap();
    assert!(knn["accuracy"].as_f64().unwrap() > 0.97, "{knn}");
    assert!(
        knn["certificate"]
            .as_str()
            .unwrap()
            .contains("\"method\":\"probe\""),
        "{knn}"
    );
    let cp = bounds
        .iter()
        .find(|r| r["name"] == "accuracy_clopper_pearson")
        .unwrap_or_else(|| panic!("no Clopper-Pearson row in {bounds:?}"));
    let lower = cp["certified_nats"]
        .as_f64()
        .or(cp["value_nats"].as_f64())
        .unwrap();
    assert!(
        lower < knn["accuracy"].as_f64().unwrap() && lower > 0.9,
        "{cp} vs {knn}"
    );
    // The same seed gives the same rows on each side, in a fresh project.
    let (_, est2, splits2, _) = &runs[1];
    assert_eq!(splits, splits2);
    assert_eq!(est[1]["nats"], est2[1]["nats"]);
}

/// Rules of `knn` at their place in the file, and on the command line.
#[test]
fn validate_refuses_bad_knn_settings() {
    let p = Project::new();
    p.write(
        "k.yaml",
        "stages:\n  data:\n    kind: synthetic\n    params: {task: mixture, classes: 3, n: 100}\n  mi:\n    kind: estimate_mi\n    inputs: data\n    params:\n      pairs:\n        - {name: xz, x: {columns: \"x*\"}, y: {columns: z}}\n      estimators: [{name: knn, k: 0, temperature: 0.0, train_fraction: 1.5}]\n",
    );
    let run = p.cbound(&["validate", "k.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    for (location, message) in [
        (
            "k.yaml:11:35 (at `stages.mi.params.estimators[0].k`)",
            "k must be at least 1",
        ),
        (
            "k.yaml:11:51 (at `stages.mi.params.estimators[0].temperature`)",
            "temperature must be positive and finite, got 0",
        ),
        (
            "k.yaml:11:72 (at `stages.mi.params.estimators[0].train_fraction`)",
            "train_fraction must lie strictly between 0 and 1, got 1.5",
        ),
    ] {
        let found = run
            .stderr
            .split("\n\n")
            .any(|e| e.contains(message) && e.contains(location));
        assert!(found, "no `{message}` at `{location}` in:\n{}", run.all());
    }
    p.write("t.csv", "u0,u1,z\n1,0,0\n0,1,1\n1,0.1,0\n0.1,1,1\n");
    let cli = p.cbound(&[
        "mi",
        "t.csv",
        "--x",
        "u*",
        "--y",
        "z",
        "-e",
        "knn:temperature=-1",
    ]);
    assert_eq!(cli.code, 2, "{}", cli.all());
    assert!(
        cli.stderr.contains("temperature must be positive"),
        "{}",
        cli.all()
    );
}

/// With encoder snapshots the held-out classifiers run once per epoch, and each split names
/// rows of the embeddings table of its own epoch only: no snapshot is fitted on another's rows.
#[test]
fn snapshot_splits_name_rows_of_their_own_epoch() {
    let p = Project::new();
    p.write(
        "s.yaml",
        r#"name: s
seed: 5
stages:
  mix:
    kind: synthetic
    params: {task: mixture, classes: 3, dim: 4, spread: 3.0, noise: 0.5, n: 300, mc_samples: 2000}
  data:
    kind: load
    inputs: mix
    params: {format: parquet, feature_columns: "x*", label_column: z}
  train:
    kind: train
    inputs: data
    params:
      model: {encoder: {kind: mlp, hidden: [16], output: 4}, projector: [8, 4]}
      epochs: 2
      snapshot_every: 1
      batch_size: 32
      holdout: 0.2
      views: [[{op: gaussian_noise, std: 0.3}], [{op: gaussian_noise, std: 0.3}]]
  embed:
    kind: embed
    inputs: [train, data]
    params: {snapshots: true}
  estimate:
    kind: estimate_mi
    inputs: embed
    params:
      pairs:
        - {name: uz, x: {columns: u}, y: {columns: label}, estimators: [{name: probe, steps: 20}, {name: knn, k: 20}]}
"#,
    );
    let run = p.cbound(&["run", "s.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("s");
    let embeddings = read_rows(&dir.join("embed/embed/embeddings.parquet"));
    let est = read_rows(&dir.join("estimate/estimate/mi_estimates.parquet"));
    let splits = read_rows(&dir.join("estimate/estimate/mi_estimates.splits.parquet"));
    let epochs: std::collections::BTreeSet<i64> = embeddings
        .iter()
        .map(|r| r["epoch"].as_i64().unwrap())
        .collect();
    assert!(epochs.len() >= 2, "{epochs:?}");
    assert_eq!(est.len(), 2 * epochs.len());
    for (i, r) in est.iter().enumerate() {
        let epoch = r["epoch"].as_i64().unwrap();
        let rows: Vec<&serde_json::Value> = splits
            .iter()
            .filter(|s| s["estimate"] == i as u64)
            .collect();
        assert_eq!(rows.len(), 300, "{r}");
        for s in rows {
            assert_eq!(s["epoch"], epoch);
            let row = s["row"].as_u64().unwrap() as usize;
            assert_eq!(embeddings[row]["epoch"], epoch, "{s} of {r}");
        }
    }
}
