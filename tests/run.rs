//! Running pipelines through the real binary: sweeps, caching, resume, --force, atomic
//! outputs, locks, interruption, and Parquet read back by pyarrow.

mod common;
use common::{read_rows, Project};

use std::path::Path;
use std::time::{Duration, Instant};

const SWEEP: &str = r#"name: sweep
seed: 7
stages:
  data:
    kind: synthetic
    params: {task: dense, n: 200}
    matrix: {dim: [1, 2], rho: [0.2, 0.4, 0.6]}
  post:
    kind: command
    inputs: [data]
    params:
      argv: [sh, -c, 'echo "{\"rows\": 200}" > "$CBOUND_OUT/metrics.json"; cp "{input.data}/samples.parquet" "{out}/copy.parquet"']
"#;

fn statuses(rows: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["instance"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn count(rows: &[serde_json::Value], status: &str) -> usize {
    rows.iter().filter(|r| r["status"] == status).count()
}

#[test]
fn sweep_expands_runs_in_parallel_and_reruns_nothing() {
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    let plan = p.cbound(&["plan", "sweep.yaml"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        plan.stdout.contains("run     data@dim=1,rho=0.2\n"),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout.contains("run     post@dim=2,rho=0.6\n"),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout
            .contains("12 jobs in `sweep`: 0 cached, 12 to run"),
        "{}",
        plan.all()
    );

    let first = p.cbound(&["run", "sweep.yaml", "--jobs", "2"]);
    assert_eq!(first.code, 0, "{}", first.all());
    let run_dir = p.latest("sweep");
    let rows = read_rows(&run_dir.join("results.parquet"));
    assert_eq!(rows.len(), 12);
    assert_eq!(count(&rows, "ok"), 12, "{rows:?}");
    let data_row = rows
        .iter()
        .find(|r| r["instance"] == "data@dim=2,rho=0.4")
        .unwrap();
    assert_eq!(data_row["sweep.dim"], 2);
    assert_eq!(data_row["sweep.rho"], 0.4);
    assert_eq!(data_row["param.n"], 200);
    assert!(data_row["metric.true_mi_nats"].as_f64().unwrap() > 0.0);
    let post_row = rows
        .iter()
        .find(|r| r["instance"] == "post@dim=2,rho=0.4")
        .unwrap();
    assert_eq!(post_row["metric.rows"], 200.0);

    // The instance directory holds its table and meta.json; pyarrow reads the table.
    let inst = run_dir.join("data").join("data@dim=2,rho=0.4");
    let samples = read_rows(&inst.join("samples.parquet"));
    assert_eq!(samples.len(), 200);
    assert!(samples[0].get("x1").is_some() && samples[0].get("y1").is_some());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(inst.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["instance"], "data@dim=2,rho=0.4");
    assert_eq!(meta["key_inputs"]["params"]["dim"], 2);
    assert_eq!(meta["outputs"][0]["name"], "samples.parquet");

    let second = p.cbound(&["run", "sweep.yaml"]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert!(
        second.stderr.contains("12 instances: 0 ran, 12 cached"),
        "{}",
        second.all()
    );
    let rows = read_rows(&p.latest("sweep").join("results.parquet"));
    assert_eq!(count(&rows, "cached"), 12);
    let plan = p.cbound(&["plan", "sweep.yaml"]);
    assert!(
        plan.stdout.contains("12 cached, 0 to run"),
        "{}",
        plan.all()
    );
}

#[test]
fn plan_why_names_the_changed_input_of_the_key() {
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    assert_eq!(p.cbound(&["run", "sweep.yaml"]).code, 0);
    let plan = p.cbound(&[
        "plan",
        "sweep.yaml",
        "--why",
        "--set",
        "stages.data.params.n=300",
    ]);
    assert!(
        plan.stdout
            .contains("data@dim=1,rho=0.2  params changed: n 200 -> 300"),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout
            .contains("waits for upstream: data@dim=1,rho=0.2"),
        "{}",
        plan.all()
    );
    let plan = p.cbound(&["plan", "sweep.yaml", "--why", "--set", "seed=8"]);
    assert!(plan.stdout.contains("seed changed"), "{}", plan.all());
}

#[test]
fn force_reruns_the_stage_and_everything_downstream() {
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    assert_eq!(p.cbound(&["run", "sweep.yaml"]).code, 0);
    let forced = p.cbound(&["run", "sweep.yaml", "--force", "data@dim=1,rho=0.2"]);
    assert_eq!(forced.code, 0, "{}", forced.all());
    let rows = read_rows(&p.latest("sweep").join("results.parquet"));
    let s = statuses(&rows);
    assert!(
        s.contains(&("data@dim=1,rho=0.2".into(), "ok".into())),
        "{s:?}"
    );
    assert!(
        s.contains(&("post@dim=1,rho=0.2".into(), "ok".into())),
        "{s:?}"
    );
    assert_eq!(count(&rows, "ok"), 2, "{s:?}");
    assert_eq!(count(&rows, "cached"), 10, "{s:?}");
    let plan = p.cbound(&["plan", "sweep.yaml", "--why", "--force", "data"]);
    assert!(
        plan.stdout
            .contains("12 jobs in `sweep`: 0 cached, 12 to run"),
        "{}",
        plan.all()
    );
}

#[test]
fn only_runs_a_stage_and_what_it_needs() {
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    let run = p.cbound(&["run", "sweep.yaml", "--only", "data"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let rows = read_rows(&p.latest("sweep").join("results.parquet"));
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["stage"] == "data"));
}

#[test]
fn failure_halfway_keeps_the_rest_and_resumes() {
    let p = Project::new();
    let marker = p.path().join("second-attempt");
    p.write(
        "flaky.yaml",
        &format!(
            r#"name: flaky
stages:
  data: {{kind: synthetic, params: {{n: 50}}, matrix: {{rho: [0.1, 0.2]}}}}
  step:
    kind: command
    inputs: data
    params:
      argv: [sh, -c, 'echo partial > "$CBOUND_OUT/partial.txt"; if [ "$CBOUND_INSTANCE" = "step@rho=0.2" ] && [ ! -e {m} ]; then touch {m}; echo "boom: simulated crash" >&2; exit 1; fi; echo done > "$CBOUND_OUT/done.txt"']
  after: {{kind: command, inputs: step, params: {{argv: ["true"]}}}}
"#,
            m = marker.display()
        ),
    );
    let first = p.cbound(&["run", "flaky.yaml", "--progress", "lines"]);
    assert_eq!(first.code, 3, "{}", first.all());
    assert!(
        first.stderr.contains("FAILED  step@rho=0.2")
            && first.stderr.contains("boom: simulated crash"),
        "{}",
        first.all()
    );
    assert!(
        first
            .stderr
            .contains("skipped after@rho=0.2: input step@rho=0.2 did not finish"),
        "{}",
        first.all()
    );
    let rows = read_rows(&p.latest("flaky").join("results.parquet"));
    let s = statuses(&rows);
    assert_eq!(
        s,
        vec![
            ("after@rho=0.1".into(), "ok".into()),
            ("after@rho=0.2".into(), "skipped".into()),
            ("data@rho=0.1".into(), "ok".into()),
            ("data@rho=0.2".into(), "ok".into()),
            ("step@rho=0.1".into(), "ok".into()),
            ("step@rho=0.2".into(), "failed".into()),
        ]
    );
    let failed = rows
        .iter()
        .find(|r| r["instance"] == "step@rho=0.2")
        .unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("boom"),
        "{failed}"
    );
    // Nothing of the failed instance is published as finished.
    let objects = p.path().join("outputs/flaky/.cbound/objects");
    for entry in std::fs::read_dir(&objects).unwrap() {
        assert!(entry.unwrap().path().join("meta.json").exists());
    }
    assert_eq!(std::fs::read_dir(&objects).unwrap().count(), 4);

    let why = p.cbound(&["plan", "flaky.yaml", "--why"]);
    assert!(
        why.stdout
            .contains("step@rho=0.2   last attempt failed: `sh` exited with exit status: 1"),
        "{}",
        why.all()
    );
    assert!(
        why.stdout
            .contains("after@rho=0.2  waits for upstream: step@rho=0.2"),
        "{}",
        why.all()
    );
    let second = p.cbound(&["run", "flaky.yaml", "--progress", "lines"]);
    assert_eq!(second.code, 0, "{}", second.all());
    let s = statuses(&read_rows(&p.latest("flaky").join("results.parquet")));
    assert_eq!(s.iter().filter(|(_, st)| st == "ok").count(), 2, "{s:?}");
    assert_eq!(
        s.iter().filter(|(_, st)| st == "cached").count(),
        4,
        "{s:?}"
    );
}

#[test]
fn fail_fast_stops_the_others() {
    let p = Project::new();
    p.write(
        "ff.yaml",
        "name: ff\nstages:\n  bad: {kind: command, params: {argv: [sh, -c, 'exit 1']}}\n  slow: {kind: command, params: {argv: [sleep, '1']}, matrix: {x: [1, 2, 3, 4]}}\n",
    );
    // `x` is not a command parameter: the matrix must name real parameters.
    let run = p.cbound(&["validate", "ff.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    p.write(
        "ff.yaml",
        "name: ff\nstages:\n  bad: {kind: command, params: {argv: [sh, -c, 'exit 1']}}\n  slow: {kind: command, params: {argv: [sleep, '2']}, matrix: {timeout_s: [100, 101, 102, 103]}}\n",
    );
    let run = p.cbound(&[
        "run",
        "ff.yaml",
        "--fail-fast",
        "--jobs",
        "2",
        "--progress",
        "lines",
    ]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(run.stderr.contains("--fail-fast"), "{}", run.all());
    let rows = read_rows(&p.latest("ff").join("results.parquet"));
    assert!(count(&rows, "skipped") >= 2, "{rows:?}");
}

fn wait_for(path: &Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SLOW: &str = r#"name: slow
stages:
  quick: {kind: synthetic, params: {n: 20}}
  wait:
    kind: command
    inputs: quick
    params:
      argv: [sh, -c, 'touch "$CBOUND_OUT/../../started"; sleep 30; echo late > "$CBOUND_OUT/late.txt"']
"#;

#[test]
fn second_run_on_the_same_outputs_names_the_lock_holder() {
    let p = Project::new();
    p.write("slow.yaml", SLOW);
    let mut first = p
        .command(&["run", "slow.yaml", "--progress", "none"])
        .spawn()
        .unwrap();
    wait_for(
        &p.path().join("outputs/slow/.cbound/started"),
        Duration::from_secs(30),
    );
    let second = p.cbound(&["run", "slow.yaml"]);
    first.kill().unwrap();
    let _ = first.wait();
    assert_eq!(second.code, 4, "{}", second.all());
    assert!(
        second.stderr.contains("is in use by another cbound run"),
        "{}",
        second.all()
    );
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.all()
    );
    // The lock dies with its holder: a later run gets it.
    let plan = p.cbound(&["plan", "slow.yaml"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
}

#[test]
fn killed_run_leaves_no_half_finished_result_and_resumes() {
    let p = Project::new();
    p.write("slow.yaml", SLOW);
    let mut child = p
        .command(&["run", "slow.yaml", "--progress", "none"])
        .spawn()
        .unwrap();
    wait_for(
        &p.path().join("outputs/slow/.cbound/started"),
        Duration::from_secs(30),
    );
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    let _ = child.wait();
    let objects = p.path().join("outputs/slow/.cbound/objects");
    let finished: Vec<_> = std::fs::read_dir(&objects)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(finished.len(), 1, "only `quick` finished: {finished:?}");
    assert!(finished[0].join("meta.json").exists() && finished[0].join("samples.parquet").exists());
    // No temporary file anywhere sits under a real table name.
    let plan = p.cbound(&["plan", "slow.yaml"]);
    assert!(
        plan.stdout.contains("cached  quick") && plan.stdout.contains("run     wait"),
        "{}",
        plan.all()
    );
}

#[test]
fn ctrl_c_stops_cleanly_with_exit_130() {
    let p = Project::new();
    p.write("slow.yaml", SLOW);
    let child = p
        .command(&["run", "slow.yaml", "--progress", "lines"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        &p.path().join("outputs/slow/.cbound/started"),
        Duration::from_secs(30),
    );
    let t0 = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "Ctrl-C did not stop the sleeping job"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    let run_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.latest("slow").join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["status"], "interrupted");
    let rows = read_rows(&p.latest("slow").join("results.parquet"));
    assert_eq!(
        statuses(&rows),
        vec![
            ("quick".into(), "ok".into()),
            ("wait".into(), "cancelled".into())
        ]
    );
}

#[test]
fn unwritable_output_directory_is_an_environment_error() {
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    p.write("blocker", "a file where a directory should be");
    let run = p.cbound(&["run", "sweep.yaml", "--out", "blocker/outputs"]);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stderr
            .contains("cannot use output directory blocker/outputs/sweep"),
        "{}",
        run.all()
    );
}

#[test]
fn same_seed_same_bytes_and_seed_changes_data() {
    let p = Project::new();
    p.write(
        "a.yaml",
        "name: a\nseed: 1\nstages:\n  d: {kind: synthetic, params: {n: 30}}\n",
    );
    p.write(
        "b.yaml",
        "name: b\nseed: 1\nstages:\n  d: {kind: synthetic, params: {n: 30}}\n",
    );
    p.write(
        "c.yaml",
        "name: c\nseed: 2\nstages:\n  d: {kind: synthetic, params: {n: 30}}\n",
    );
    for f in ["a.yaml", "b.yaml", "c.yaml"] {
        assert_eq!(p.cbound(&["run", f]).code, 0);
    }
    let table = |name: &str| read_rows(&p.latest(name).join("d/d/samples.parquet"));
    assert_eq!(table("a"), table("b"));
    assert_ne!(table("a"), table("c"));
}

#[test]
fn stages_schema_and_dag_commands() {
    let p = Project::new();
    let stages = p.cbound(&["stages"]);
    assert_eq!(stages.code, 0);
    assert!(
        stages.stdout.contains("synthetic (version 1)"),
        "{}",
        stages.all()
    );
    assert!(
        stages.stdout.contains("n: integer (default 5000)"),
        "{}",
        stages.all()
    );
    assert!(
        stages.stdout.contains("argv: list of string (required)"),
        "{}",
        stages.all()
    );
    assert!(stages.stdout.contains("example:"), "{}", stages.all());
    let one = p.cbound(&["stages", "synthetc"]);
    assert_eq!(one.code, 2);
    assert!(
        one.stderr.contains("did you mean `synthetic`"),
        "{}",
        one.all()
    );

    p.write("sweep.yaml", SWEEP);
    let dot = p.cbound(&["dag", "sweep.yaml"]);
    assert!(
        dot.stdout.contains("digraph \"sweep\"") && dot.stdout.contains("s0 -> s1;"),
        "{}",
        dot.all()
    );
    let mermaid = p.cbound(&["dag", "sweep.yaml", "--format", "mermaid"]);
    assert!(
        mermaid.stdout.contains("flowchart LR") && mermaid.stdout.contains("data (synthetic) x6"),
        "{}",
        mermaid.all()
    );

    let schema = p.cbound(&["schema", "--output", "s.json"]);
    assert_eq!(schema.code, 0, "{}", schema.all());
    assert_eq!(
        p.cbound(&["schema", "--output", "s.json", "--check"]).code,
        0
    );
    p.write("s.json", "{}");
    let stale = p.cbound(&["schema", "--output", "s.json", "--check"]);
    assert_eq!(stale.code, 1);
    assert!(stale.stderr.contains("out of date"), "{}", stale.all());
}

#[test]
fn jobs_below_a_stages_cpus_is_said_once_per_stage() {
    let p = Project::new();
    p.write(
        "cpus.yaml",
        "name: cpus\nstages:\n  wide:\n    kind: synthetic\n    params: {n: 50}\n    matrix: {rho: [0.1, 0.2, 0.3]}\n    resources: {cpus: 3}\n  narrow: {kind: synthetic, params: {n: 50}}\n",
    );
    let run = p.cbound(&["run", "cpus.yaml", "--jobs", "2", "--progress", "lines"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let said = "warning: stage `wide` asks for 3 CPUs (resources.cpus) but --jobs is 2";
    assert_eq!(run.stderr.matches(said).count(), 1, "{}", run.all());
    assert!(!run.stderr.contains("stage `narrow`"), "{}", run.all());
    // Each of its instances ran with the 2 threads it was given.
    for entry in std::fs::read_dir(p.latest("cpus").join("wide")).unwrap() {
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(entry.unwrap().path().join("meta.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["threads"], 2, "{meta}");
    }
    let enough = p.cbound(&["run", "cpus.yaml", "--jobs", "3", "--progress", "none"]);
    assert_eq!(enough.code, 0, "{}", enough.all());
    assert!(!enough.stderr.contains("warning"), "{}", enough.all());
}

/// An estimator that refuses (a histogram grid past its cell limit) leaves a NaN metric; the
/// instance is still a finished result, and a rerun finds it in the cache.
#[test]
fn a_result_with_a_refused_estimate_is_cached() {
    let p = Project::new();
    p.write(
        "h.yaml",
        r#"name: h
seed: 1
stages:
  data:
    kind: synthetic
    params: {task: dense, dim: 4, rho: 0.5, n: 300}
  est:
    kind: estimate_mi
    inputs: data
    params:
      pairs: [{name: xy, x: {columns: "x*"}, y: {columns: "y*"}}]
      estimators: [{name: histogram, bins: 16}, {name: gaussian}]
"#,
    );
    let first = p.cbound(&["run", "h.yaml", "--progress", "none"]);
    assert_eq!(first.code, 0, "{}", first.all());
    let rows = read_rows(&p.latest("h").join("results.parquet"));
    let est = rows.iter().find(|r| r["stage"] == "est").unwrap();
    assert!(est["metric.xy.histogram"].is_null(), "refused, NaN: {est}");
    let again = p.cbound(&["run", "h.yaml", "--progress", "none"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stderr.contains("0 ran, 2 cached"), "{}", again.all());
}
