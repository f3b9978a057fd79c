//! `cbound show`, `cbound diff` and the summary at the end of `cbound run`, through the real
//! binary on a small replicated pipeline; the aggregates are checked against numbers computed
//! from results.parquet with pyarrow, independently of cbound's reader.

mod common;
use common::{py, Project};

const REPS: &str = r#"name: reps
seed: 11
stages:
  data:
    kind: synthetic
    params: {task: bivariate, n: 200}
    matrix: {rho: [0.3, 0.8]}
    repeat: 3
  est:
    kind: estimate_mi
    inputs: data
    params:
      pairs: [{name: xy, x: {columns: "x*"}, y: {columns: "y*"}}]
      estimators: [{name: gaussian}, {name: ksg}]
"#;

fn project() -> Project {
    let p = Project::new();
    p.write("reps.yaml", REPS);
    let run = p.cbound(&["run", "reps.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    p
}

fn json(p: &Project, args: &[&str]) -> serde_json::Value {
    let run = p.cbound(args);
    assert_eq!(run.code, 0, "{}", run.all());
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// Per rho: mean, sample sd and n of `metric.<m>` over the `est` rows, by pyarrow and the
/// statistics module.
fn expected(p: &Project, metric: &str) -> serde_json::Value {
    let results = p.latest("reps").join("results.parquet");
    let text = py(
        r#"import json, sys, statistics, pyarrow.parquet as pq
rows = [r for r in pq.read_table(sys.argv[1]).to_pylist() if r["stage"] == "est"]
out = {}
for rho in sorted({r["sweep.rho"] for r in rows}):
    v = [r["metric." + sys.argv[2]] for r in rows if r["sweep.rho"] == rho]
    out[str(rho)] = {"mean": statistics.fmean(v), "sd": statistics.stdev(v), "n": len(v)}
print(json.dumps(out))"#,
        &[results.to_str().unwrap(), metric],
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn replicates_are_aggregated_as_mean_sd_and_n() {
    let p = project();
    let rows = json(&p, &["show", "outputs/reps", "--format", "json"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for metric in ["xy.ksg", "xy.gaussian"] {
        let want = expected(&p, metric);
        for row in rows {
            let rho = row["rho"].as_f64().unwrap().to_string();
            let got = &row[format!("est.{metric}")];
            let want = &want[&rho];
            assert_eq!(row["n"], 3);
            assert_eq!(got["n"], want["n"]);
            for k in ["mean", "sd"] {
                let (g, w) = (got[k].as_f64().unwrap(), want[k].as_f64().unwrap());
                assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "{metric} {k} {g} vs {w}"
                );
            }
            // The replicates differ (each has its own seed): a real spread, not zero.
            assert!(want["sd"].as_f64().unwrap() > 0.0);
        }
    }
    // The unswept truth is the same in every replicate: sd 0.
    assert_eq!(rows[0]["data.true_mi_nats"]["sd"], 0.0);
    assert_eq!(rows[0]["status"], "ok");
}

#[test]
fn every_format_says_the_same() {
    let p = project();
    let want = expected(&p, "xy.ksg");
    let w03 = &want["0.3"];

    let table = p.cbound(&["show", "outputs/reps"]);
    assert_eq!(table.code, 0, "{}", table.all());
    let lines: Vec<&str> = table.stdout.lines().collect();
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        head,
        [
            "rho",
            "n",
            "data.true_mi_nats",
            "est.xy.gaussian",
            "est.xy.ksg",
            "status"
        ]
    );
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(lines[2].starts_with("0.3000  3"), "{}", table.stdout);
    assert!(lines[2].contains(" ± "), "{}", table.stdout);

    let csv = p.cbound(&["show", "outputs/reps", "--format", "csv"]);
    let csv_lines: Vec<Vec<&str>> = csv.stdout.lines().map(|l| l.split(',').collect()).collect();
    let col = |name: &str| csv_lines[0].iter().position(|h| *h == name).unwrap();
    let row = &csv_lines[1];
    assert_eq!(row[col("rho")], "0.3");
    assert_eq!(row[col("est.xy.ksg.n")], "3");
    let mean: f64 = row[col("est.xy.ksg")].parse().unwrap();
    let sd: f64 = row[col("est.xy.ksg.sd")].parse().unwrap();
    assert!((mean - w03["mean"].as_f64().unwrap()).abs() < 1e-12);
    assert!((sd - w03["sd"].as_f64().unwrap()).abs() < 1e-12);

    let md = p.cbound(&["show", "outputs/reps", "--format", "markdown"]);
    let md_lines: Vec<&str> = md.stdout.lines().collect();
    assert_eq!(
        md_lines[0],
        "| rho | n | data.true_mi_nats | est.xy.gaussian | est.xy.ksg | status |"
    );
    assert_eq!(md_lines[1], "|---|---|---|---|---|---|");
    assert_eq!(md_lines.len(), 4);
    // The table and markdown show the same cells.
    let cells: Vec<&str> = md_lines[2].trim_matches('|').split(" | ").collect();
    assert_eq!(cells[0].trim(), "0.3000");
    assert!(
        lines[2].contains(cells[4].trim()),
        "{} vs {}",
        lines[2],
        cells[4]
    );
}

#[test]
fn columns_sort_and_the_ways_to_name_a_run() {
    let p = project();
    let desc = json(
        &p,
        &[
            "show",
            "reps.yaml",
            "--format",
            "json",
            "--columns",
            "est.*ksg,status",
            "--sort",
            "est.xy.ksg",
            "--desc",
        ],
    );
    let rows = desc.as_array().unwrap();
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["rho", "n", "est.xy.ksg", "status"]);
    let means: Vec<f64> = rows
        .iter()
        .map(|r| r["est.xy.ksg"]["mean"].as_f64().unwrap())
        .collect();
    assert!(means[0] > means[1], "{means:?}");
    let run_dir = p.latest("reps");
    let by_dir = json(
        &p,
        &[
            "show",
            run_dir.to_str().unwrap(),
            "--format",
            "json",
            "--columns",
            "est.*ksg,status",
        ],
    );
    let none = json(
        &p,
        &["show", "--format", "json", "--columns", "est.*ksg,status"],
    );
    assert_eq!(by_dir, none);
    let mut asc = by_dir.as_array().unwrap().clone();
    asc.sort_by(|a, b| {
        a["rho"]
            .as_f64()
            .unwrap()
            .total_cmp(&b["rho"].as_f64().unwrap())
    });
    assert_eq!(asc, *by_dir.as_array().unwrap());

    let bad = p.cbound(&["show", "outputs/reps", "--columns", "train.*"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.stderr.contains("--columns train.*: matches no column")
            && bad.stderr.contains("est.xy.ksg"),
        "{}",
        bad.all()
    );
    let bad = p.cbound(&["show", "outputs/reps", "--sort", "ksg"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.stderr.contains("--sort ksg: no such column"),
        "{}",
        bad.all()
    );
    let bad = p.cbound(&["show", "outputs"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("no results.parquet"), "{}", bad.all());
}

#[test]
fn diff_names_the_changed_parameters_and_metrics() {
    let p = project();
    let a = p.latest("reps");
    let run = p.cbound(&["run", "reps.yaml", "--set", "stages.data.params.n=400"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let b = p.latest("reps");
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let rows = json(&p, &["diff", sa, sb, "--format", "json"]);
    let rows = rows.as_array().unwrap();
    let of = |what: &str| -> Vec<&serde_json::Value> {
        rows.iter().filter(|r| r["what"] == what).collect()
    };
    let run_rows = of("run");
    assert_eq!(run_rows.len(), 1, "{rows:?}");
    assert_eq!(run_rows[0]["name"], "overrides");
    assert_eq!(run_rows[0]["b"], r#"["stages.data.params.n=400"]"#);
    // Every data instance's n, and nothing else among the parameters.
    let params = of("param");
    assert_eq!(params.len(), 6, "{params:?}");
    assert!(params
        .iter()
        .all(|r| r["name"] == "n" && r["a"] == 200 && r["b"] == 400));
    // Each estimate changed; delta is b - a of the means.
    let metrics = of("metric");
    assert!(!metrics.is_empty());
    for m in &metrics {
        let (x, y) = (
            m["a"]["mean"].as_f64().unwrap(),
            m["b"]["mean"].as_f64().unwrap(),
        );
        let d = m["delta"]["mean"].as_f64().unwrap();
        assert!((d - (y - x)).abs() < 1e-12, "{m}");
    }
    let ksg: Vec<&&serde_json::Value> = metrics
        .iter()
        .filter(|m| m["name"] == "est.xy.ksg")
        .collect();
    assert_eq!(ksg.len(), 2, "{metrics:?}");
    assert!(ksg.iter().any(|m| m["where"] == "rho=0.3"));

    // A run against itself: nothing.
    let same = json(&p, &["diff", sa, sa, "--format", "json"]);
    assert_eq!(same, serde_json::json!([]));
    let same = p.cbound(&["diff", sa, sa]);
    assert!(same.stderr.contains("no differences"), "{}", same.all());

    let table = p.cbound(&["diff", sa, sb, "--columns", "est.xy.ksg"]);
    assert_eq!(table.code, 0, "{}", table.all());
    let first: Vec<&str> = table
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(first, ["what", "where", "name", "a", "b", "delta"]);
    assert!(
        !table.stdout.contains("est.xy.gaussian"),
        "{}",
        table.stdout
    );
}

#[test]
fn a_run_ends_with_its_table_even_without_a_terminal() {
    let p = Project::new();
    // 20 configurations: more rows than the summary shows.
    let rhos: Vec<String> = (1..=20).map(|i| format!("{}", i as f64 / 25.0)).collect();
    p.write(
        "many.yaml",
        &format!(
            "name: many\nstages:\n  data:\n    kind: synthetic\n    params: {{task: bivariate, n: 50}}\n    matrix: {{rho: [{}]}}\n",
            rhos.join(", ")
        ),
    );
    let out = p
        .command(&["run", "many.yaml"])
        .env("COLUMNS", "30")
        .output()
        .unwrap();
    let run = common::Run::from(out);
    assert_eq!(run.code, 0, "{}", run.all());
    let run_dir = p.latest("many");
    let rel = format!(
        "outputs/many/{}",
        run_dir.file_name().unwrap().to_str().unwrap()
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    let head = lines
        .iter()
        .position(|l| l.trim_start().starts_with("rho  n"))
        .expect(&run.stderr);
    // At 30 characters the upstream number gives way; the keys and the status stay.
    assert_eq!(
        lines[head].split_whitespace().collect::<Vec<_>>(),
        ["rho", "n", "status"]
    );
    // Header, rule, 15 rows, then where the rest is.
    assert!(lines[head + 2].starts_with("0.04000  1"), "{}", run.stderr);
    assert_eq!(lines[head + 17], format!("... 5 more: cbound show {rel}"));
    assert!(
        lines[head + 18].starts_with("(1 more column(s) than fit in 30 characters"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("results: {rel}/results.parquet")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("report:  cbound report {rel}")),
        "{}",
        run.stderr
    );
    for l in &lines[head..head + 17] {
        assert!(l.chars().count() <= 30, "{l:?} is wider than COLUMNS=30");
    }
    // Wide enough, the same (cached) run shows every default column.
    let out = p
        .command(&["run", "many.yaml"])
        .env("COLUMNS", "200")
        .output()
        .unwrap();
    let run = common::Run::from(out);
    assert_eq!(run.code, 0, "{}", run.all());
    let head = run
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("rho  n"))
        .expect(&run.stderr);
    assert_eq!(
        head.split_whitespace().collect::<Vec<_>>(),
        ["rho", "n", "data.true_mi_nats", "status"]
    );
    assert!(!run.stderr.contains("more column(s)"), "{}", run.stderr);
}
