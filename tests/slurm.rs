//! `--executor slurm` against a real one-node Slurm cluster (tests/slurm/start.sh starts one;
//! scripts/test.sh does so before `cargo test` where it can): the same results table as a
//! local run, caching across executors, a failed task reported with its stderr, Ctrl-C
//! leaving nothing in the queue, and the sbatch commands `plan` prints.
//!
//! Without a cluster the cluster tests are skipped with a message, unless
//! `CBOUND_SLURM=required` (set by scripts/test.sh when it started one), which turns a
//! missing cluster into a failure; `CBOUND_SLURM=off` skips them even where one runs.

mod common;
use common::{read_rows, Project};

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The config tests/slurm/start.sh renders, when the environment does not name one.
const DEFAULT_CONF: &str = "/tmp/cbound-slurm/slurm.conf";

fn slurm_conf() -> Option<String> {
    std::env::var("SLURM_CONF").ok().or_else(|| {
        Path::new(DEFAULT_CONF)
            .exists()
            .then(|| DEFAULT_CONF.into())
    })
}

/// Whether a node in this `sinfo %T` state runs jobs now or soon (a trailing `*` means the
/// node does not respond).
fn node_takes_jobs(state: &str) -> bool {
    let up = [
        "idle",
        "mixed",
        "allocated",
        "completing",
        "planned",
        "reserved",
    ];
    !state.ends_with('*') && up.iter().any(|u| state.starts_with(u))
}

/// Whether a cluster answers; panics if one is required and does not.
fn cluster() -> bool {
    if std::env::var("CBOUND_SLURM").as_deref() == Ok("off") {
        eprintln!("skipping Slurm test: CBOUND_SLURM=off");
        return false;
    }
    // A node between jobs shows `completing` for a moment, and another test's jobs keep it
    // `allocated`: any state that takes jobs counts (a single look for `idle`, `mixed` or
    // `allocated` once failed a full test run while the test cluster was busy).
    let answers = || {
        let mut sinfo = Command::new("sinfo");
        sinfo.args(["-h", "-o", "%T"]);
        if let Some(conf) = slurm_conf() {
            sinfo.env("SLURM_CONF", conf);
        }
        match sinfo.output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|s| node_takes_jobs(s.trim())),
            _ => false,
        }
    };
    // Where a cluster is required (CI) it gets 18 s to answer (a cluster just (re)started by
    // scripts/test.sh may still be registering its node); elsewhere one look decides.
    let required = std::env::var("CBOUND_SLURM").as_deref() == Ok("required");
    let looks = if required { 10 } else { 1 };
    let up = (0..looks).any(|attempt| {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        answers()
    });
    if !up {
        let why = "no Slurm cluster answers (sinfo); start one with tests/slurm/start.sh (as root)";
        assert!(!required, "CBOUND_SLURM=required: {why}");
        eprintln!("skipping Slurm test: {why}");
    }
    up
}

fn with_conf(mut cmd: Command) -> Command {
    if let Some(conf) = slurm_conf() {
        cmd.env("SLURM_CONF", conf);
    }
    cmd
}

fn cbound(p: &Project, args: &[&str]) -> common::Run {
    let out = with_conf(p.command(args)).output().expect("run cbound");
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Job ids in the queue whose name is one this pipeline's arrays get.
fn queued_jobs(pipeline: &str) -> Vec<String> {
    let out = with_conf({
        let mut c = Command::new("squeue");
        c.args(["-h", "-o", "%i|%j|%T"]);
        c
    })
    .output()
    .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("|cbound:{pipeline}:")))
        .map(String::from)
        .collect()
}

/// Six `data` instances and six `post` instances, one array each, `post` after `data`.
const SWEEP: &str = r#"name: slurm-sweep
seed: 11
executor: {max_parallel: 3, memory: 100M, time: "5"}
stages:
  data:
    kind: synthetic
    params: {task: dense, n: 150}
    matrix: {dim: [1, 2], rho: [0.2, 0.4, 0.6]}
  post:
    kind: command
    inputs: [data]
    params:
      argv: [sh, -c, 'echo "{\"rows\": 150}" > "$CBOUND_OUT/metrics.json"; cp "{input.data}/samples.parquet" "{out}/copy.parquet"']
"#;

/// Rows keyed by instance, without what legitimately differs between two runs.
fn comparable(path: &Path) -> Vec<(String, serde_json::Value)> {
    let mut rows: Vec<(String, serde_json::Value)> = read_rows(path)
        .into_iter()
        .map(|mut r| {
            let obj = r.as_object_mut().expect("row object");
            obj.remove("run_id");
            obj.remove("seconds");
            (obj["instance"].as_str().unwrap_or_default().to_string(), r)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[test]
fn plan_prints_the_sbatch_commands_with_dependencies_and_gpus() {
    let p = Project::new();
    let gpu = SWEEP.replace(
        "  post:\n    kind: command\n",
        "  post:\n    kind: command\n    resources: {gpus: 1, cpus: 2, partition: gpu, sbatch: [--qos=high]}\n",
    );
    p.write("sweep.yaml", &gpu);
    // Needs no cluster: nothing is submitted.
    let plan = p.cbound(&["plan", "sweep.yaml", "--executor", "slurm"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let lines: Vec<&str> = plan
        .stdout
        .lines()
        .filter(|l| l.contains("=$(sbatch "))
        .collect();
    assert_eq!(lines.len(), 2, "{}", plan.all());
    assert!(
        lines[0].starts_with("JOB_data=$(sbatch --parsable --array=0-5%3 "),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("--mem=100M --time=5"), "{}", lines[0]);
    assert!(!lines[0].contains("--dependency"), "{}", lines[0]);
    for part in [
        "--array=0-5%3",
        "--cpus-per-task=2",
        "--gres=gpu:1",
        "--partition=gpu",
        "--dependency=afterok:$JOB_data",
        "--kill-on-invalid-dep=yes",
        "--qos=high",
        "/.cbound/slurm/$RUN/post/task.sh)",
    ] {
        assert!(lines[1].contains(part), "missing {part}: {}", lines[1]);
    }
    // The local executor's plan prints no sbatch lines.
    let local = p.cbound(&["plan", "sweep.yaml"]);
    assert!(!local.stdout.contains("sbatch"), "{}", local.all());
}

#[test]
fn slurm_results_equal_local_results_and_caching_spans_executors() {
    if !cluster() {
        return;
    }
    let p = Project::new();
    p.write("sweep.yaml", SWEEP);
    let local = cbound(&p, &["run", "sweep.yaml", "--out", "local"]);
    assert_eq!(local.code, 0, "{}", local.all());

    let clock = Instant::now();
    let slurm = cbound(
        &p,
        &["run", "sweep.yaml", "--out", "slurm", "--executor", "slurm"],
    );
    let seconds = clock.elapsed().as_secs_f64();
    assert_eq!(slurm.code, 0, "{}", slurm.all());
    eprintln!("12 instances through Slurm in {seconds:.1}s");
    assert!(
        slurm.stderr.contains("12 ran, 0 cached, 0 failed"),
        "{}",
        slurm.all()
    );
    let results = |out: &str| {
        let link = p.path().join(out).join("slurm-sweep").join("latest");
        let target = std::fs::read_link(&link).expect("latest link");
        link.parent().unwrap().join(target).join("results.parquet")
    };
    let (a, b) = (comparable(&results("local")), comparable(&results("slurm")));
    assert_eq!(a.len(), 12);
    // Same instances, statuses, cache keys (so the nodes computed the same keys), params,
    // sweep values and metrics.
    assert_eq!(a, b);
    assert!(b.iter().all(|(_, r)| r["status"] == "ok"), "{b:?}");
    assert!(b.iter().any(|(_, r)| r["metric.rows"] == 150.0), "{b:?}");

    // Finished locally means not submitted: only `post` goes to Slurm.
    let partial = cbound(
        &p,
        &["run", "sweep.yaml", "--out", "mixed", "--only", "data"],
    );
    assert_eq!(partial.code, 0, "{}", partial.all());
    let mixed = cbound(
        &p,
        &["run", "sweep.yaml", "--out", "mixed", "--executor", "slurm"],
    );
    assert_eq!(mixed.code, 0, "{}", mixed.all());
    assert!(
        mixed.stderr.contains("6 ran, 6 cached, 0 failed"),
        "{}",
        mixed.all()
    );
    let slurm_dir = p.path().join("mixed/slurm-sweep/.cbound/slurm");
    let run = std::fs::read_dir(&slurm_dir)
        .expect("task files")
        .flatten()
        .next()
        .expect("one run");
    assert!(!run.path().join("data").exists(), "data was submitted");
    assert!(run.path().join("post/5.json").exists());
    // And the other way round: all of it cached for the local executor.
    let again = cbound(&p, &["run", "sweep.yaml", "--out", "mixed"]);
    assert!(again.stderr.contains("0 ran, 12 cached"), "{}", again.all());
}

#[test]
fn a_failed_task_is_reported_with_its_stderr() {
    if !cluster() {
        return;
    }
    let p = Project::new();
    p.write(
        "fail.yaml",
        r#"name: slurm-fail
stages:
  work:
    kind: command
    matrix: {env.X: ["1", "2"]}
    params:
      argv: [sh, -c, 'if [ "$X" = 2 ]; then echo "kaboom: disk on fire" >&2; exit 4; fi']
  after:
    kind: command
    inputs: [work]
    params: {argv: ["true"]}
"#,
    );
    let run = cbound(
        &p,
        &[
            "run",
            "fail.yaml",
            "--executor",
            "slurm",
            "--progress",
            "lines",
        ],
    );
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("FAILED  work@env.X=2") && run.stderr.contains("kaboom: disk on fire"),
        "{}",
        run.all()
    );
    let rows = read_rows(&p.latest("slurm-fail").join("results.parquet"));
    let status = |id: &str| {
        rows.iter()
            .find(|r| r["instance"] == id)
            .map(|r| r["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(status("work@env.X=1").as_deref(), Some("ok"));
    assert_eq!(status("work@env.X=2").as_deref(), Some("failed"));
    assert_eq!(status("after@env.X=2").as_deref(), Some("skipped"));
    let error = rows
        .iter()
        .find(|r| r["instance"] == "work@env.X=2")
        .and_then(|r| r["error"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(error.contains("kaboom: disk on fire"), "{error}");
    // `plan --why` knows the last attempt failed, as after a local run.
    let why = p.cbound(&["plan", "fail.yaml", "--why"]);
    assert!(why.stdout.contains("last attempt failed"), "{}", why.all());
    assert!(queued_jobs("slurm-fail").is_empty());
}

#[test]
fn a_task_that_dies_without_a_result_is_reported_with_its_stderr() {
    if !cluster() {
        return;
    }
    let p = Project::new();
    // The nodes cannot run this `cbound`: the task's shell says so on its stderr.
    p.write(
        "broken.yaml",
        r#"name: slurm-broken
executor: {kind: slurm, cbound: /nonexistent/cbound}
stages:
  data: {kind: synthetic, params: {n: 10}}
"#,
    );
    let run = cbound(&p, &["run", "broken.yaml", "--progress", "lines"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("without a result") && run.stderr.contains("/nonexistent/cbound"),
        "{}",
        run.all()
    );
}

#[test]
fn ctrl_c_cancels_every_submitted_job() {
    if !cluster() {
        return;
    }
    let p = Project::new();
    p.write(
        "sleepy.yaml",
        r#"name: slurm-sleepy
stages:
  nap:
    kind: command
    matrix: {env.X: ["1", "2", "3", "4"]}
    params: {argv: [sleep, "120"]}
  after:
    kind: command
    inputs: [nap]
    params: {argv: ["true"]}
"#,
    );
    let child = with_conf(p.command(&[
        "run",
        "sleepy.yaml",
        "--executor",
        "slurm",
        "--progress",
        "lines",
    ]))
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start cbound");
    // Wait until a task runs, so cancelling has running and pending work to stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !queued_jobs("slurm-sleepy")
        .iter()
        .any(|l| l.ends_with("|RUNNING"))
    {
        assert!(Instant::now() < deadline, "no task started");
        std::thread::sleep(Duration::from_millis(200));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait cbound");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("cancelling the submitted Slurm jobs"),
        "{stderr}"
    );
    // The submitter waits for its jobs to leave the queue before exiting.
    assert_eq!(queued_jobs("slurm-sleepy"), Vec::<String>::new());
}

/// A stage kind declared in YAML (in `kinds/` beside the pipeline) after a small sweep.
const DECLARED: &str = r#"name: slurm-kinds
seed: 5
stages:
  data:
    kind: synthetic
    params: {task: dense, n: 120}
    matrix: {rho: [0.3, 0.6]}
  copy:
    kind: copy_samples
    inputs: [data]
    params: {scale: 3}
"#;

const COPY_KIND: &str = r#"summary: Copies the samples and reports a number.
version: 1
params:
  scale: {type: number, exclusiveMinimum: 0, default: 2}
needs: [samples.parquet]
produces: [copy.parquet]
track: [copy.sh]
command: [sh, "{kind_dir}/copy.sh", "{needs.samples.parquet}", "{out}", "{params.scale}"]
resources: {memory: 100M, time: "5"}
"#;

#[test]
fn declared_kinds_run_on_the_nodes_with_the_keys_of_a_local_run() {
    let p = Project::new();
    p.write("kinds.yaml", DECLARED);
    p.write("kinds/copy_samples.yaml", COPY_KIND);
    p.write(
        "kinds/copy.sh",
        "#!/bin/sh\ncp \"$1\" \"$2/copy.parquet\"\necho \"{\\\"scale\\\": $3}\" > \"$2/metrics.json\"\n",
    );
    // The kind's cluster settings reach sbatch (no cluster needed to plan).
    let plan = p.cbound(&["plan", "kinds.yaml", "--executor", "slurm"]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    let copy = plan
        .stdout
        .lines()
        .find(|l| l.starts_with("JOB_copy="))
        .unwrap_or_default();
    assert!(
        copy.contains("--mem=100M --time=5") && copy.contains("--dependency=afterok:$JOB_data"),
        "{}",
        plan.all()
    );
    if !cluster() {
        return;
    }
    let local = cbound(&p, &["run", "kinds.yaml", "--out", "local"]);
    assert_eq!(local.code, 0, "{}", local.all());
    let slurm = cbound(
        &p,
        &["run", "kinds.yaml", "--out", "slurm", "--executor", "slurm"],
    );
    assert_eq!(slurm.code, 0, "{}", slurm.all());
    assert!(
        slurm.stderr.contains("4 ran, 0 cached, 0 failed"),
        "{}",
        slurm.all()
    );
    let latest = |out: &str| {
        let link = p.path().join(out).join("slurm-kinds").join("latest");
        let target = std::fs::read_link(&link).expect("latest link");
        link.parent().unwrap().join(target)
    };
    // The nodes rebuilt the kind from the run's snapshot and computed the same keys, ran the
    // same program and checked its declared table.
    let run_dir = latest("slurm");
    let snapshots: Vec<_> = std::fs::read_dir(p.path().join("slurm/slurm-kinds/.cbound/slurm"))
        .unwrap()
        .flatten()
        .filter(|r| r.path().join("kinds.json").is_file())
        .collect();
    assert_eq!(snapshots.len(), 1);
    let (a, b) = (
        comparable(&latest("local").join("results.parquet")),
        comparable(&run_dir.join("results.parquet")),
    );
    assert_eq!(a.len(), 4);
    assert_eq!(a, b);
    let copy_row = b.iter().find(|(id, _)| id == "copy@rho=0.3").expect("row");
    assert_eq!(copy_row.1["kind"], "copy_samples");
    assert_eq!(copy_row.1["metric.scale"], 3.0);
    assert_eq!(
        read_rows(&run_dir.join("copy/copy@rho=0.3/copy.parquet")),
        read_rows(&run_dir.join("data/data@rho=0.3/samples.parquet"))
    );
    // Cached across executors, as for built-in kinds.
    let again = cbound(
        &p,
        &["run", "kinds.yaml", "--out", "local", "--executor", "slurm"],
    );
    assert!(again.stderr.contains("0 ran, 4 cached"), "{}", again.all());
}

/// The shipped example (pipelines/embedding-pca.yaml and its kinds/ directory) in a scratch
/// project.
fn shipped_example() -> Project {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = Project::new();
    for (from, to) in [
        ("pipelines/embedding-pca.yaml", "embedding-pca.yaml"),
        (
            "pipelines/kinds/pca_embeddings.yaml",
            "kinds/pca_embeddings.yaml",
        ),
        (
            "pipelines/kinds/pca_embeddings.py",
            "kinds/pca_embeddings.py",
        ),
    ] {
        p.write(
            to,
            &std::fs::read_to_string(root.join(from)).expect("shipped file"),
        );
    }
    p
}

#[test]
fn the_shipped_declared_kind_runs_on_slurm_as_it_does_locally() {
    if !cluster() {
        return;
    }
    let p = shipped_example();
    // The kind runs `python3`: the project's environment (numpy, pyarrow) first on PATH,
    // which sbatch hands to the tasks with the rest of the environment.
    let venv_bin = common::python().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        let out = with_conf(p.command(args))
            .env("PATH", &path)
            .output()
            .expect("run cbound");
        common::Run::from(out)
    };
    let local = run(&[
        "run",
        "embedding-pca.yaml",
        "--out",
        "local",
        "--progress",
        "none",
    ]);
    assert_eq!(local.code, 0, "{}", local.all());
    let slurm = run(&[
        "run",
        "embedding-pca.yaml",
        "--out",
        "slurm",
        "--executor",
        "slurm",
        "--progress",
        "none",
    ]);
    assert_eq!(slurm.code, 0, "{}", slurm.all());
    assert!(
        slurm.stderr.contains("7 ran, 0 cached, 0 failed"),
        "{}",
        slurm.all()
    );
    let results = |out: &str| {
        let link = p.path().join(out).join("embedding-pca").join("latest");
        let target = std::fs::read_link(&link).expect("latest link");
        link.parent().unwrap().join(target).join("results.parquet")
    };
    // Training is bitwise reproducible, so every instance, the declared kind's included, has
    // the same key, parameters and metrics on the nodes as here (but for training speed).
    let without_speed =
        |rows: Vec<(String, serde_json::Value)>| -> Vec<(String, serde_json::Value)> {
            rows.into_iter()
                .map(|(id, mut r)| {
                    if let Some(obj) = r.as_object_mut() {
                        obj.remove("metric.samples_per_s");
                    }
                    (id, r)
                })
                .collect()
        };
    let a = without_speed(comparable(&results("local")));
    let b = without_speed(comparable(&results("slurm")));
    assert_eq!((a.len(), b.len()), (7, 7));
    for ((id, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y, "{id} differs between the local and the Slurm run");
    }
    let pca = b.iter().find(|(id, _)| id == "pca").expect("pca row");
    assert_eq!(pca.1["kind"], "pca_embeddings");
    assert!(pca.1["metric.explained_variance_total"].as_f64().unwrap() > 0.0);
}
