//! Replicates (`repeat:`), through the real binary: instance ids, seeds and data per
//! replicate, `sweep.replicate` in results.parquet, fan-out once per replicate, the
//! pipeline-wide `repeat`, `--set`, unchanged cache keys without replicates, and config errors.

mod common;
use common::{read_rows, Project};

use std::collections::{BTreeMap, BTreeSet};

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
      estimators: [{name: gaussian}]
"#;

fn rows_of<'a>(rows: &'a [serde_json::Value], stage: &str) -> Vec<&'a serde_json::Value> {
    rows.iter().filter(|r| r["stage"] == stage).collect()
}

fn meta(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap()
}

#[test]
fn replicates_get_their_own_ids_seeds_data_and_sweep_column() {
    let p = Project::new();
    p.write("reps.yaml", REPS);
    let validate = p.cbound(&["validate", "reps.yaml"]);
    assert_eq!(validate.code, 0, "{}", validate.all());
    assert!(
        validate
            .stdout
            .contains("ok: reps.yaml (2 stages, 12 instances)"),
        "{}",
        validate.all()
    );
    let plan = p.cbound(&["plan", "reps.yaml"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let planned: Vec<&str> = plan
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("run     "))
        .collect();
    let mut expected = Vec::new();
    for stage in ["data", "est"] {
        for rho in ["0.3", "0.8"] {
            for r in 0..3 {
                expected.push(format!("{stage}@rho={rho},replicate={r}"));
            }
        }
    }
    assert_eq!(planned, expected, "{}", plan.all());
    assert!(
        plan.stdout
            .contains("12 jobs in `reps`: 0 cached, 12 to run"),
        "{}",
        plan.all()
    );

    let run = p.cbound(&["run", "reps.yaml", "--jobs", "2"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let run_dir = p.latest("reps");
    let rows = read_rows(&run_dir.join("results.parquet"));
    assert_eq!(rows.len(), 12, "{rows:?}");
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{rows:?}");
    for r in &rows {
        // An integer sweep column, and not a parameter.
        assert!(r["sweep.replicate"].is_i64(), "{r}");
        assert!(r.get("param.replicate").is_none(), "{r}");
        let id = r["instance"].as_str().unwrap();
        assert_eq!(
            r["seed"].as_u64().unwrap(),
            cbound::dag::instance_seed(11, id),
            "{id}"
        );
        assert!(id.ends_with(&format!(",replicate={}", r["sweep.replicate"])));
    }
    let data = rows_of(&rows, "data");
    let seeds: BTreeSet<u64> = data.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds.len(), 6, "every replicate has its own seed");

    // Same configuration, different replicate: same parameters, different samples.
    let samples = |id: &str| read_rows(&run_dir.join("data").join(id).join("samples.parquet"));
    let r0 = samples("data@rho=0.8,replicate=0");
    let r1 = samples("data@rho=0.8,replicate=1");
    assert_eq!((r0.len(), r1.len()), (200, 200));
    assert_ne!(r0, r1);
    let m0 = meta(&run_dir.join("data").join("data@rho=0.8,replicate=0"));
    let m1 = meta(&run_dir.join("data").join("data@rho=0.8,replicate=1"));
    assert_eq!(m0["key_inputs"]["params"], m1["key_inputs"]["params"]);
    assert!(m0["key_inputs"]["params"].get("replicate").is_none());
    assert_ne!(m0["key_inputs"]["seed"], m1["key_inputs"]["seed"]);

    // Downstream: once per replicate (6, not 18), each reading its own replicate.
    let est = rows_of(&rows, "est");
    assert_eq!(est.len(), 6);
    for r in &est {
        let id = r["instance"].as_str().unwrap();
        let m = meta(&run_dir.join("est").join(id));
        assert_eq!(
            m["key_inputs"]["inputs"][0]["instance"],
            id.replacen("est@", "data@", 1),
            "{id}"
        );
    }
    // Grouping by the other sweep columns gives the spread across seeds.
    let mut by_rho: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &est {
        by_rho
            .entry(r["sweep.rho"].to_string())
            .or_default()
            .push(r["metric.xy.gaussian"].as_f64().unwrap());
    }
    assert_eq!(by_rho.len(), 2);
    for (rho, values) in &by_rho {
        assert_eq!(values.len(), 3, "{rho}");
        let distinct: BTreeSet<u64> = values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            distinct.len(),
            3,
            "replicates of rho={rho} all agree: {values:?}"
        );
    }

    // A second run reuses every replicate.
    let again = p.cbound(&["plan", "reps.yaml"]);
    assert!(
        again.stdout.contains("12 cached, 0 to run"),
        "{}",
        again.all()
    );
}

#[test]
fn repeat_one_keeps_ids_and_cache_keys() {
    let p = Project::new();
    let plain = REPS.replace("    repeat: 3\n", "");
    p.write("plain.yaml", &plain);
    p.write(
        "once.yaml",
        &plain
            .replace("seed: 11\n", "seed: 11\nrepeat: 1\n")
            .replace(
                "    matrix: {rho: [0.3, 0.8]}\n",
                "    matrix: {rho: [0.3, 0.8]}\n    repeat: 1\n",
            ),
    );
    let run = p.cbound(&["run", "plain.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    // Same pipeline name, same outputs: every result is found under the same key.
    let plan = p.cbound(&["plan", "once.yaml"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        plan.stdout.contains("cached  data@rho=0.3\n")
            && plan.stdout.contains("cached  est@rho=0.8\n")
            && plan.stdout.contains("4 jobs in `reps`: 4 cached, 0 to run"),
        "{}",
        plan.all()
    );
    let rows = read_rows(&p.latest("reps").join("results.parquet"));
    assert!(rows.iter().all(|r| r.get("sweep.replicate").is_none()));
}

#[test]
fn set_overrides_and_the_pipeline_repeat_on_joined_roots() {
    let p = Project::new();
    p.write("reps.yaml", REPS);
    let plan = p.cbound(&["plan", "reps.yaml", "--set", "stages.data.repeat=2"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        plan.stdout.contains("run     est@rho=0.8,replicate=1\n")
            && !plan.stdout.contains("replicate=2")
            && plan.stdout.contains("8 jobs"),
        "{}",
        plan.all()
    );

    // Two roots, one stage reading both: the pipeline's repeat pairs replicate r with r.
    p.write(
        "joined.yaml",
        r#"name: joined
seed: 5
stages:
  train: {kind: synthetic, params: {task: bivariate, n: 100, rho: 0.5}}
  test: {kind: synthetic, params: {task: bivariate, n: 100, rho: 0.5}}
  both:
    kind: command
    inputs: [train, test]
    params:
      argv: [sh, -c, 'cp "{input.train}/samples.parquet" "{out}/train.parquet"; cp "{input.test}/samples.parquet" "{out}/test.parquet"']
"#,
    );
    let plan = p.cbound(&["plan", "joined.yaml", "--set", "repeat=3"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        plan.stdout.contains("9 jobs in `joined`"),
        "3 train + 3 test + 3 (not 9) both:\n{}",
        plan.all()
    );
    let run = p.cbound(&["run", "joined.yaml", "--set", "repeat=3"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let run_dir = p.latest("joined");
    let rows = read_rows(&run_dir.join("results.parquet"));
    let both = rows_of(&rows, "both");
    assert_eq!(both.len(), 3, "{rows:?}");
    for r in 0..3 {
        let dir = run_dir.join("both").join(format!("both@replicate={r}"));
        let inputs: Vec<String> = meta(&dir)["key_inputs"]["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["instance"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            inputs,
            vec![
                format!("train@replicate={r}"),
                format!("test@replicate={r}")
            ]
        );
        let copied = read_rows(&dir.join("train.parquet"));
        let own = read_rows(
            &run_dir
                .join("train")
                .join(format!("train@replicate={r}"))
                .join("samples.parquet"),
        );
        assert_eq!(copied, own);
    }
    assert!(both.iter().all(|r| r["sweep.replicate"].is_i64()));
}

#[test]
fn bad_repeat_is_a_config_error_with_position() {
    let p = Project::new();
    p.write(
        "bad.yaml",
        "repeat: 1.5\nstages:\n  data:\n    kind: synthetic\n    repeat: 0\n  post:\n    kind: synthetic\n    inputs: data\n    repeat: 2\n    matrix: {replicate: [0, 1]}\n",
    );
    let run = p.cbound(&["validate", "bad.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    for part in [
        "`repeat` must be an integer of at least 1, not a number\n  --> bad.yaml:1:9 (at `repeat`)",
        "`repeat` must be an integer of at least 1, not 0\n  --> bad.yaml:5:13 (at `stages.data.repeat`)",
        "matrix axis `replicate` clashes with this stage's `repeat`\n  --> bad.yaml:10:14 (at `stages.post.matrix.replicate`)",
    ] {
        assert!(run.stderr.contains(part), "missing {part:?}:\n{}", run.all());
    }
    p.write("reps.yaml", REPS);
    let run = p.cbound(&["plan", "reps.yaml", "--set", "repeat=-1"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("not -1\n  --> reps.yaml (from --set) (at `repeat`)"),
        "{}",
        run.all()
    );
}

#[test]
fn the_schema_accepts_repeat_and_rejects_zero() {
    let schema =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/pipeline.schema.json");
    let out = common::py(
        r#"
import json, sys, yaml, jsonschema
v = jsonschema.Draft202012Validator(json.load(open(sys.argv[1])))
ok = yaml.safe_load(sys.argv[2])
print(len(list(v.iter_errors(ok))))
for bad in ({"repeat": 0, "stages": {"a": {"kind": "synthetic"}}},
            {"stages": {"a": {"kind": "synthetic", "repeat": 2.5}}}):
    print(len(list(v.iter_errors(bad))) > 0)
"#,
        &[
            schema.to_str().unwrap(),
            &REPS.replace("seed: 11\n", "seed: 11\nrepeat: 2\n"),
        ],
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "True", "True"]
    );
}
