//! A run says what it was: its name (`--name`), the commit of the repository its pipeline
//! file is in and whether that repository had uncommitted changes, in run.json and in every
//! row of results.parquet.

mod common;

use common::{read_rows, Project};

const PIPELINE: &str =
    "name: ident\nstages:\n  data: {kind: synthetic, params: {task: bivariate, n: 50, rho: 0.5}}\n";

fn git(p: &Project, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args(args)
        .current_dir(p.path())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn run_json(p: &Project) -> serde_json::Value {
    let text = std::fs::read_to_string(p.latest("ident").join("run.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn runs_record_their_name_commit_and_dirty_state() {
    let p = Project::new();
    p.write("p.yaml", PIPELINE);
    // Outside a repository: no commit, and no error.
    let run = p.cbound(&["run", "p.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let record = run_json(&p);
    assert!(
        record["git"]["commit"].is_null() && record["name"].is_null(),
        "{record}"
    );

    git(&p, &["init", "-q"]);
    p.write(".gitignore", "outputs/\n");
    git(&p, &["add", "p.yaml", ".gitignore"]);
    git(&p, &["commit", "-q", "-m", "pipeline"]);
    let head = git(&p, &["rev-parse", "HEAD"]);
    let run = p.cbound(&["run", "p.yaml", "--progress", "none", "--name", "baseline"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let record = run_json(&p);
    assert_eq!(record["name"], "baseline", "{record}");
    assert_eq!(record["git"]["commit"], head.as_str(), "{record}");
    assert_eq!(record["git"]["dirty"], false, "{record}");
    let rows = read_rows(&p.latest("ident").join("results.parquet"));
    assert_eq!(rows[0]["run_name"], "baseline");
    assert_eq!(rows[0]["git_commit"], head.as_str());
    assert_eq!(rows[0]["git_dirty"], false);
    assert_eq!(
        rows[0]["cbound_version"], record["cbound_version"],
        "{record}"
    );

    // An uncommitted edit to the pipeline makes the next run dirty.
    p.write("p.yaml", &PIPELINE.replace("n: 50", "n: 60"));
    let run = p.cbound(&["run", "p.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let record = run_json(&p);
    assert_eq!(record["git"]["dirty"], true, "{record}");
    assert!(record["name"].is_null(), "{record}");
}

/// The stages that run on ONNX Runtime say, per instance, which execution provider they ran
/// on and which ONNX Runtime version (the one run.json names); other stages leave it empty.
#[test]
fn onnx_stages_record_their_execution_provider_per_instance() {
    let p = Project::new();
    p.write(
        "t.yaml",
        r#"name: ident
seed: 1
stages:
  mix:
    kind: synthetic
    params: {task: mixture, classes: 2, dim: 4, spread: 3.0, noise: 0.5, n: 400, mc_samples: 1000}
  data:
    kind: load
    inputs: mix
    params: {format: parquet, feature_columns: "x*", label_column: z}
  train:
    kind: train
    inputs: data
    params:
      model: {encoder: {kind: mlp, hidden: [8], output: 4}, projector: [8, 4]}
      epochs: 1
      batch_size: 32
      holdout: 0.2
      views: [[{op: gaussian_noise, std: 0.3}], [{op: gaussian_noise, std: 0.3}]]
  embed:
    kind: embed
    inputs: [train, data]
"#,
    );
    let run = p.cbound(&["run", "t.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let version = run_json(&p)["onnxruntime"]["version"].clone();
    assert!(version.is_string(), "{version}");
    let rows = read_rows(&p.latest("ident").join("results.parquet"));
    for row in &rows {
        match row["stage"].as_str() {
            Some("train" | "embed") => {
                assert_eq!(row["info.execution_provider"], "cpu", "{row}");
                assert_eq!(row["info.onnxruntime"], version, "{row}");
            }
            _ => assert!(row["info.execution_provider"].is_null(), "{row}"),
        }
    }
}
