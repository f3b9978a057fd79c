//! The Beyond-Normal benchmark pipeline (pipelines/mi-benchmark.yaml), reduced to three tasks at
//! one small N and one seed, through the real binary: every instance runs, the table stage
//! writes its tables, the true MI of each task equals bmi's own (the fixture
//! tests/fixtures/bmi_v1_tasks.json, written by benchmark-mi; no JAX in CI), the samples carry
//! bmi's task id and name, and the table's means, errors and "solved" flags follow from the
//! estimates. Also the composable form of the same tasks (`task: student`, `transform: [...]`)
//! and the errors of bad ids. The full-size run and its table are in the README.

mod common;
use common::{py, python, read_rows, Project};

fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// bmi's true MI by task id.
fn bmi_truth(id: &str) -> f64 {
    let v: serde_json::Value =
        serde_json::from_str(&repo_file("tests/fixtures/bmi_v1_tasks.json")).unwrap();
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the fixture"))["mi"]
        .as_f64()
        .unwrap()
}

const TASKS: [&str; 3] = [
    "1v1-additive-0.1",
    "asinh-student-identity-2-2-1",
    "spiral-normal_cdf-multinormal-sparse-3-3-2-2.0",
];

#[test]
fn the_benchmark_pipeline_reduced_writes_its_table_against_bmi_truth() {
    let p = Project::new();
    p.write(
        "mi-benchmark.yaml",
        &repo_file("pipelines/mi-benchmark.yaml"),
    );
    p.write(
        "scripts/mi_benchmark_table.py",
        &repo_file("scripts/mi_benchmark_table.py"),
    );
    let check = p.cbound(&["validate", "mi-benchmark.yaml"]);
    assert_eq!(check.code, 0, "{}", check.all());
    let venv_bin = python().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tasks = format!("stages.tasks.matrix.bmi_task=[{}]", TASKS.join(", "));
    let out = p
        .command(&[
            "run",
            "mi-benchmark.yaml",
            "--set",
            &tasks,
            "--set",
            "stages.tasks.matrix.n=[400]",
            "--set",
            "repeat=1",
            "--progress",
            "none",
        ])
        .env("PATH", path)
        .output()
        .expect("run cbound");
    let run = common::Run::from(out);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("mi-benchmark");
    let results = read_rows(&dir.join("results.parquet"));
    // 3 tasks, 3 x 3 estimate stages, 1 table.
    assert_eq!(results.len(), 13, "{results:?}");
    assert!(results.iter().all(|r| r["status"] == "ok"), "{results:?}");
    for id in TASKS {
        let row = results
            .iter()
            .find(|r| r["stage"] == "tasks" && r["param.bmi_task"] == id)
            .unwrap_or_else(|| panic!("no task {id}: {results:?}"));
        let got = row["metric.true_mi_nats"].as_f64().unwrap();
        assert!((got - bmi_truth(id)).abs() < 1e-12, "{id}: {got}");
    }

    // The samples name their task as bmi does.
    let samples = dir
        .join("tasks")
        .join("tasks@bmi_task=1v1-additive-0.1,n=400")
        .join("samples.parquet");
    let meta = py(
        "import sys,pyarrow.parquet as pq\nm=pq.read_schema(sys.argv[1]).metadata\nprint(m[b'cbound.task_id'].decode()+'|'+m[b'cbound.task_name'].decode())",
        &[samples.to_str().unwrap()],
    );
    assert_eq!(
        meta.trim(),
        "1v1-additive-0.1|Uniform 1 × 1 (additive noise=0.1)"
    );
    let rows = read_rows(&samples);
    assert_eq!(rows.len(), 400);
    assert!(rows.iter().all(|r| {
        let (x, y) = (r["x0"].as_f64().unwrap(), r["y0"].as_f64().unwrap());
        (0.0..1.0).contains(&x) && (y - x).abs() <= 0.1
    }));

    // The table: one row per task and estimator, means and flags recomputable from the rows.
    let table = dir.join("table/table");
    let summary = py(
        "import csv,json,sys\nprint(json.dumps(list(csv.DictReader(open(sys.argv[1])))))",
        &[table.join("mi_benchmark.csv").to_str().unwrap()],
    );
    let summary: Vec<serde_json::Value> = serde_json::from_str(&summary).unwrap();
    let estimators = [
        "ksg1",
        "ksg2",
        "ksg1-euclid",
        "ksg2-euclid",
        "gaussian",
        "gaussian-bc",
        "histogram",
        "ksg2+asinh",
        "ksg2-euclid+asinh",
        "infonce_critic",
        "nwj_critic",
        "mine_critic",
    ];
    assert_eq!(summary.len(), TASKS.len() * estimators.len(), "{summary:?}");
    let num = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap().parse::<f64>().unwrap();
    for r in &summary {
        let id = r["task_id"].as_str().unwrap();
        assert!(TASKS.contains(&id), "{r}");
        assert!(
            estimators.contains(&r["estimator"].as_str().unwrap()),
            "{r}"
        );
        assert_eq!(r["n"], "400");
        assert_eq!(r["seeds"], "1");
        let (mean, truth) = (num(r, "mean"), num(r, "true"));
        assert!((truth - bmi_truth(id)).abs() < 1e-12, "{r}");
        if mean.is_nan() {
            assert_eq!(r["solved"], "False", "{r}");
            continue;
        }
        assert!((num(r, "error") - (mean - truth)).abs() < 1e-12, "{r}");
        let solved = mean > 0.0 && (mean / truth).ln().abs() < 1.5f64.ln();
        assert_eq!(r["solved"], if solved { "True" } else { "False" }, "{r}");
    }
    // Every estimate of the table is one of the stage's rows, mean of one seed.
    let est = read_rows(
        &dir.join("estimate")
            .join("estimate@bmi_task=1v1-additive-0.1,n=400")
            .join("mi_estimates.parquet"),
    );
    let ksg1 = est
        .iter()
        .find(|r| {
            r["estimator"] == "ksg"
                && r["params"].as_str().unwrap().contains("\"algorithm\":1")
                && !r["params"].as_str().unwrap().contains("euclidean")
        })
        .unwrap();
    let row = summary
        .iter()
        .find(|r| r["task_id"] == "1v1-additive-0.1" && r["estimator"] == "ksg1")
        .unwrap();
    assert!((num(row, "mean") - ksg1["nats"].as_f64().unwrap()).abs() < 1e-9);

    let md = std::fs::read_to_string(table.join("mi_benchmark.md")).unwrap();
    assert!(md.contains("N = 400, 1 seeds"), "{md}");
    assert!(
        md.contains("| Spiral @ Normal CDF @ Multinormal 3 × 3 (2-pair) | 3x3 | 1.022 |"),
        "{md}"
    );
    assert!(md.contains("| **solved** |"), "{md}");
    // Every task some estimator solves is either solved by more than three or listed with its
    // solvers; a task none solves is listed with "none".
    for r in &summary {
        let id = r["task_id"].as_str().unwrap();
        let solvers: Vec<&str> = summary
            .iter()
            .filter(|s| s["task_id"] == id && s["solved"] == "True")
            .map(|s| s["estimator"].as_str().unwrap())
            .collect();
        let name = r["task_name"].as_str().unwrap();
        let listed = md
            .lines()
            .any(|l| l.starts_with(&format!("| {name} |")) && l.matches('|').count() == 4);
        assert_eq!(listed, solvers.len() <= 3, "{id}: {solvers:?}\n{md}");
    }
    assert!(md.contains("| asinh @ Student-t | 1 |"), "{md}");
    let table_row = results.iter().find(|r| r["stage"] == "table").unwrap();
    assert_eq!(table_row["metric.tasks"].as_f64(), Some(3.0));
}

#[test]
fn composable_tasks_equal_their_bmi_ids() {
    let p = Project::new();
    p.write(
        "t.yaml",
        r#"name: t
seed: 1
stages:
  student:
    kind: synthetic
    params: {task: student, dim: 3, df: 2, n: 300}
  asinh_student:
    kind: synthetic
    params: {task: student, dim: 2, df: 1, n: 300, transform: [asinh]}
  noise:
    kind: synthetic
    params: {task: additive_noise, epsilon: 0.75, n: 300}
  spiral:
    kind: synthetic
    params: {task: two_pair, dim: 5, rho: 0.8, n: 300, cdf_transform: true, transform: [spiral]}
  roll:
    kind: synthetic
    params: {task: bivariate, rho: 0.75, n: 300, transform: [normal_cdf, swiss_roll]}
  dense:
    kind: synthetic
    params: {task: beyond_normal, bmi_task: multinormal-dense-50-50-0.5, n: 300}
"#,
    );
    let run = p.cbound(&["run", "t.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let results = read_rows(&p.latest("t").join("results.parquet"));
    for (stage, id, dims) in [
        ("student", "student-identity-3-3-2", (3.0, 3.0)),
        ("asinh_student", "asinh-student-identity-2-2-1", (2.0, 2.0)),
        ("noise", "1v1-additive-0.75", (1.0, 1.0)),
        (
            "spiral",
            "spiral-normal_cdf-multinormal-sparse-5-5-2-2.0",
            (5.0, 5.0),
        ),
        ("roll", "swissroll_x-normal_cdf-1v1-normal-0.75", (2.0, 1.0)),
        ("dense", "multinormal-dense-50-50-0.5", (50.0, 50.0)),
    ] {
        let r = results.iter().find(|r| r["stage"] == stage).unwrap();
        let got = r["metric.true_mi_nats"].as_f64().unwrap();
        assert!((got - bmi_truth(id)).abs() < 1e-12, "{stage}: {got}");
        assert_eq!(
            (
                r["metric.dim_x"].as_f64().unwrap(),
                r["metric.dim_y"].as_f64().unwrap()
            ),
            dims,
            "{stage}"
        );
        let samples = p
            .latest("t")
            .join(stage)
            .join(stage)
            .join("samples.parquet");
        let meta = py(
            "import sys,pyarrow.parquet as pq\nprint(pq.read_schema(sys.argv[1]).metadata[b'cbound.task_id'].decode())",
            &[samples.to_str().unwrap()],
        );
        assert_eq!(meta.trim(), id, "{stage}");
    }
}

#[test]
fn bad_tasks_are_located_errors() {
    for (params, location, message) in [
        (
            "{task: beyond_normal, bmi_task: multinormal-dense-2-3-0.5}",
            "stages.a.params.bmi_task",
            "dense tasks need dim_x = dim_y",
        ),
        (
            "{task: beyond_normal, bmi_task: nonsense-1}",
            "stages.a.params.bmi_task",
            "unknown Beyond-Normal task id `nonsense-1`",
        ),
        (
            "{task: beyond_normal}",
            "stages.a.params.task",
            "needs `bmi_task`",
        ),
        (
            "{task: student, df: 0}",
            "stages.a.params.task",
            "degrees of freedom must be finite and > 0",
        ),
        (
            "{task: bivariate, transform: [spiral]}",
            "stages.a.params.transform",
            "needs dim_x >= 2 and dim_y >= 3",
        ),
        (
            "{task: bivariate, transform: [swiss_roll]}",
            "stages.a.params.transform",
            "must follow `normal_cdf`",
        ),
    ] {
        common::validate_refuses(
            &format!("name: e\nstages:\n  a:\n    kind: synthetic\n    params: {params}\n"),
            location,
            message,
        );
    }
}
