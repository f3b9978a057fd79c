//! Fault injection: a small train -> embed -> estimate -> bound pipeline is killed (as by
//! `kill -9`: the process aborts) at the crash points of src/failpoint.rs that it passes —
//! every write-and-rename, every result commit, every training epoch's commit — then run again
//! to completion, and every result is compared with an uninterrupted run's.
//!
//! The kill points are not listed by hand: an uninterrupted run logs every point it passes
//! (`CBOUND_FAILPOINT_LOG`), and that list is what gets tried. CI tries a fixed sample of every
//! kind (first, middle and last pass of each point); `CBOUND_FAULTS=full` tries all of them.
//! The test prints the counts.

mod common;
use std::collections::BTreeMap;
use std::path::Path;

use common::{read_rows, Project};

/// Columns that measure time, not results: the only ones allowed to differ.
const WALL_CLOCK: &[&str] = &["seconds", "samples_per_s", "metric.samples_per_s"];
/// Columns that identify the run rather than its results (a resumed run reuses results, so
/// their status is `cached` where the uninterrupted run says `ok`).
const RUN_IDENTITY: &[&str] = &["run_id", "status"];

const PIPELINE: &str = r#"name: f
seed: 5
stages:
  mix:
    kind: synthetic
    params: {task: mixture, classes: 3, dim: 4, spread: 3.0, noise: 0.5, n: 400, mc_samples: 2000}
  data:
    kind: load
    inputs: mix
    params: {format: parquet, feature_columns: "x*", label_column: z}
  train:
    kind: train
    inputs: data
    params:
      model: {encoder: {kind: mlp, hidden: [16], output: 4}, projector: [8, 4]}
      epochs: 3
      snapshot_every: 1
      batch_size: 64
      holdout: 0.2
      views: [[{op: gaussian_noise, std: 0.3}], [{op: gaussian_noise, std: 0.3}]]
  embed:
    kind: embed
    inputs: [train, data]
    params: {second_view: [{op: gaussian_noise, std: 0.3}], snapshots: true}
  estimate:
    kind: estimate_mi
    inputs: embed
    params:
      pairs:
        - {name: uz, x: {columns: u}, y: {columns: label}, estimators: [{name: probe, steps: 50}]}
        - {name: uy, x: {columns: u}, y: {columns: u_view}, estimators: [{name: infonce, temperature: 0.5, batch: 32}]}
  bound:
    kind: bound
    inputs: [estimate, mix]
    params:
      terms: {i_uz: {pair: uz, estimator: probe}, i_uy: {pair: uy, estimator: infonce}}
      assumptions: {u_is_function_of_x: true}
      classes: 3
"#;

/// What a finished run produced: results.parquet without the excluded columns, and every
/// instance's output files (name -> BLAKE3) without the timing outputs.
#[derive(Debug, PartialEq)]
struct Outcome {
    results: Vec<BTreeMap<String, serde_json::Value>>,
    outputs: BTreeMap<String, Vec<(String, String)>>,
}

fn outcome(run_dir: &Path) -> Outcome {
    let mut results: Vec<BTreeMap<String, serde_json::Value>> =
        read_rows(&run_dir.join("results.parquet"))
            .into_iter()
            .map(|r| {
                r.as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| {
                        !WALL_CLOCK.contains(&k.as_str()) && !RUN_IDENTITY.contains(&k.as_str())
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .collect();
    results.sort_by_key(|r| r["instance"].to_string());
    let mut outputs = BTreeMap::new();
    for stage in std::fs::read_dir(run_dir).unwrap().flatten() {
        if !stage.path().is_dir() {
            continue;
        }
        for inst in std::fs::read_dir(stage.path()).unwrap().flatten() {
            let meta = inst.path().join("meta.json");
            let Ok(text) = std::fs::read_to_string(&meta) else {
                continue;
            };
            let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
            let files = meta["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o["name"].as_str().unwrap().to_string(),
                        o["blake3"].as_str().unwrap().to_string(),
                    )
                })
                .filter(|(name, _)| !cbound::artifact::is_timing_output(name))
                .collect();
            outputs.insert(meta["instance"].as_str().unwrap().to_string(), files);
        }
    }
    Outcome { results, outputs }
}

fn run(p: &Project, failpoints: Option<&str>, log: Option<&Path>) -> common::Run {
    let mut cmd = p.command(&["run", "f.yaml", "--jobs", "1", "--progress", "none"]);
    cmd.env_remove("CBOUND_FAILPOINTS")
        .env_remove("CBOUND_FAILPOINT_LOG");
    if let Some(f) = failpoints {
        cmd.env("CBOUND_FAILPOINTS", f);
    }
    if let Some(l) = log {
        cmd.env("CBOUND_FAILPOINT_LOG", l);
    }
    common::Run::from(cmd.output().expect("run cbound"))
}

/// The kill points to try: all of them, or for each point name its first, middle and last pass.
fn sample(points: &[(String, u64)], full: bool) -> Vec<(String, u64)> {
    if full {
        return points.to_vec();
    }
    let mut by_name: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (name, k) in points {
        by_name.entry(name).or_default().push(*k);
    }
    let mut out = Vec::new();
    for (name, ks) in by_name {
        let mut picks = vec![ks[0], ks[ks.len() / 2], ks[ks.len() - 1]];
        picks.dedup();
        out.extend(picks.into_iter().map(|k| (name.to_string(), k)));
    }
    out
}

#[test]
fn a_run_killed_at_any_write_or_commit_resumes_to_identical_results() {
    let reference = Project::new();
    reference.write("f.yaml", PIPELINE);
    let log = reference.path().join("failpoints.log");
    let r = run(&reference, None, Some(&log));
    assert_eq!(r.code, 0, "{}", r.all());
    let want = outcome(&reference.latest("f"));
    let points: Vec<(String, u64)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (name, k) = l.rsplit_once(' ')?;
            Some((name.to_string(), k.parse().ok()?))
        })
        .collect();
    let kinds: std::collections::BTreeSet<&str> = points.iter().map(|(n, _)| n.as_str()).collect();
    for kind in [
        "write.before_rename",
        "write.after_rename",
        "commit.before_rename",
        "commit.after_rename",
        "train.epoch_written",
        "train.epoch_committed",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} point was passed: {kinds:?}"
        );
    }
    let full = std::env::var("CBOUND_FAULTS").is_ok_and(|v| v == "full");
    let tried = sample(&points, full);
    let mut identical = 0;
    let mut differing = Vec::new();
    for (name, k) in &tried {
        let p = Project::new();
        p.write("f.yaml", PIPELINE);
        let killed = run(&p, Some(&format!("{name}:{k}")), None);
        assert_ne!(killed.code, 0, "{name}:{k} did not kill the run");
        let resumed = run(&p, None, None);
        assert_eq!(resumed.code, 0, "after {name}:{k}: {}", resumed.all());
        let got = outcome(&p.latest("f"));
        if got == want {
            identical += 1;
        } else {
            differing.push(format!("{name}:{k}"));
        }
    }
    eprintln!(
        "fault injection: {} kill points enumerated ({} kinds), {} tried, {} identical after resume",
        points.len(),
        kinds.len(),
        tried.len(),
        identical
    );
    assert!(
        differing.is_empty(),
        "resumed runs differ from the uninterrupted one after killing at {differing:?}"
    );
}

/// SIGINT and SIGTERM at seeded random moments of the same pipeline: the interrupted run
/// stops cleanly (exit 130 or 143, or 0 if it finished first) and a rerun ends with results
/// identical to an uninterrupted run's. `CBOUND_FAULTS=full` tries 40 moments instead of 6.
#[test]
fn a_run_interrupted_at_random_moments_resumes_to_identical_results() {
    use rand::{Rng, SeedableRng};
    let reference = Project::new();
    reference.write("f.yaml", PIPELINE);
    let start = std::time::Instant::now();
    assert_eq!(run(&reference, None, None).code, 0);
    let span = start.elapsed().as_millis().max(200) as u64;
    let want = outcome(&reference.latest("f"));
    let full = std::env::var("CBOUND_FAULTS").is_ok_and(|v| v == "full");
    let tries = if full { 40 } else { 6 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (mut stopped, mut identical) = (0, 0);
    for i in 0..tries {
        let signal = if i % 2 == 0 { "-INT" } else { "-TERM" };
        let delay = rng.random_range(0..span);
        let p = Project::new();
        p.write("f.yaml", PIPELINE);
        let mut cmd = p.command(&["run", "f.yaml", "--jobs", "1", "--progress", "none"]);
        let child = cmd
            .env_remove("CBOUND_FAILPOINTS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let out = child.wait_with_output().unwrap();
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(130) | Some(143)),
            "{signal} after {delay} ms: exit {code:?}"
        );
        stopped += usize::from(code != Some(0));
        let resumed = run(&p, None, None);
        assert_eq!(
            resumed.code,
            0,
            "after {signal} at {delay} ms: {}",
            resumed.all()
        );
        if outcome(&p.latest("f")) == want {
            identical += 1;
        } else {
            panic!("{signal} after {delay} ms: resumed results differ");
        }
    }
    eprintln!(
        "signals: {tries} runs sent SIGINT/SIGTERM at random moments, {stopped} stopped by it, {identical} identical after resume"
    );
}
