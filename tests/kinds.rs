//! Stage kinds declared in YAML, through the real binary on real files: the shipped example
//! (`pca_embeddings`, pipelines/kinds/) runs in its shipped pipeline, is cached, reruns when
//! its script or version changes, is listed by `cbound stages`, is in the JSON Schema and in
//! the report; declared kinds are validated (types, ranges, enums, unknown parameters, with
//! file:line:column), wired against what kinds declare they write, hold their programs to
//! their declared outputs, and fill in the placeholders and environment the docs promise.

mod common;
use common::{python, read_rows, validate_refuses, Project};

use std::path::Path;

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The shipped example pipeline with its kinds directory, in a scratch project.
fn shipped() -> Project {
    let p = Project::new();
    p.write(
        "embedding-pca.yaml",
        &repo_file("pipelines/embedding-pca.yaml"),
    );
    for f in ["pca_embeddings.yaml", "pca_embeddings.py"] {
        p.write(
            &format!("kinds/{f}"),
            &repo_file(&format!("pipelines/kinds/{f}")),
        );
    }
    p
}

/// PATH with the project's Python environment (numpy, pyarrow) first: the example's command
/// runs `python3`.
fn venv_path() -> String {
    let venv_bin = python().parent().unwrap().to_path_buf();
    format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn cbound(p: &Project, args: &[&str]) -> common::Run {
    common::Run::from(
        p.command(args)
            .env("PATH", venv_path())
            .output()
            .expect("run cbound"),
    )
}

fn run(p: &Project, file: &str) -> common::Run {
    cbound(p, &["run", file, "--progress", "none"])
}

#[test]
fn the_shipped_example_runs_caches_and_reruns_when_its_script_or_version_changes() {
    let p = shipped();
    let first = run(&p, "embedding-pca.yaml");
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(first.stderr.contains("7 ran, 0 cached"), "{}", first.all());
    let dir = p.latest("embedding-pca");

    // The declared table, read by pyarrow: one PCA per encoder snapshot (epochs 0, 2, 4) of
    // the 2,000 test points, three components.
    let rows = read_rows(&dir.join("pca/pca/pca.parquet"));
    assert_eq!(rows.len(), 3 * 2000);
    let epochs: std::collections::BTreeSet<i64> =
        rows.iter().map(|r| r["epoch"].as_i64().unwrap()).collect();
    assert_eq!(epochs.into_iter().collect::<Vec<_>>(), [0, 2, 4]);
    assert!(rows.iter().all(|r| r["pc1"].is_f64() && r["pc3"].is_f64()));
    let png = std::fs::read(dir.join("pca/pca/pca.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let results = read_rows(&dir.join("results.parquet"));
    let pca = results.iter().find(|r| r["stage"] == "pca").unwrap();
    assert_eq!(pca["kind"], "pca_embeddings");
    assert_eq!(pca["param.components"], 3);
    let total = pca["metric.explained_variance_total"].as_f64().unwrap();
    assert!(total > 0.0 && total <= 1.0 + 1e-12, "{pca}");
    // Defaults reach the program (params.json) but not the parameters as written.
    let params: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pca/pca/params.json")).unwrap())
            .unwrap();
    assert_eq!(params["max_points"], 2000);
    assert_eq!(params["epoch"], "all");
    assert!(pca["param.max_points"].is_null(), "{pca}");

    let again = run(&p, "embedding-pca.yaml");
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stderr.contains("0 ran, 7 cached"), "{}", again.all());

    // The script is tracked: editing it reruns the kind's instance, nothing upstream.
    let script = p.path().join("kinds/pca_embeddings.py");
    let mut text = std::fs::read_to_string(&script).unwrap();
    text.push_str("\n# edited\n");
    std::fs::write(&script, text).unwrap();
    let why = cbound(&p, &["plan", "embedding-pca.yaml", "--why"]);
    assert!(
        why.stdout
            .contains("tracked file changed: kinds/pca_embeddings.py"),
        "{}",
        why.all()
    );
    let edited = run(&p, "embedding-pca.yaml");
    assert_eq!(edited.code, 0, "{}", edited.all());
    assert!(
        edited.stderr.contains("1 ran, 6 cached"),
        "{}",
        edited.all()
    );

    // So does a new version.
    let kind = p.path().join("kinds/pca_embeddings.yaml");
    let text = std::fs::read_to_string(&kind).unwrap();
    std::fs::write(&kind, text.replace("version: 1", "version: 2")).unwrap();
    let why = cbound(&p, &["plan", "embedding-pca.yaml", "--why"]);
    assert!(
        why.stdout.contains("stage kind version changed: 1 -> 2"),
        "{}",
        why.all()
    );
    let bumped = run(&p, "embedding-pca.yaml");
    assert!(
        bumped.stderr.contains("1 ran, 6 cached"),
        "{}",
        bumped.all()
    );
    // The run recorded its kinds, and the report embeds the declared plot.
    assert!(p.latest("embedding-pca").join("kinds.json").is_file());
    let report = cbound(&p, &["report", "outputs/embedding-pca"]);
    assert_eq!(report.code, 0, "{}", report.all());
    let html =
        std::fs::read_to_string(p.latest("embedding-pca").join("report/report.html")).unwrap();
    assert!(
        html.contains("<img src=\"data:image/png;base64,iVBORw0KGgo"),
        "no image"
    );
    assert!(html.contains("<code>pca.png</code>"));
}

/// The shipped kind beside a pipeline whose `pca` stage has the given params line.
fn with_pca_params(params: &str) -> Project {
    let p = shipped();
    p.write(
        "p.yaml",
        &format!(
            "stages:\n  emb: {{kind: command, params: {{argv: [\"true\"]}}}}\n  pca:\n    kind: pca_embeddings\n    inputs: emb\n    params: {params}\n"
        ),
    );
    p
}

fn refused(p: &Project, location: &str, message: &str) -> String {
    let run = p.cbound(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .split("\n\n")
            .any(|e| e.contains(message) && e.contains(location)),
        "no `{message}` at `{location}` in:\n{}",
        run.all()
    );
    run.stderr
}

#[test]
fn validate_refuses_bad_parameters_of_the_shipped_kind_at_their_place() {
    let p = with_pca_params("{components: three}");
    refused(
        &p,
        "p.yaml:6:26 (at `stages.pca.params.components`)",
        "invalid type: string \"three\", expected an integer",
    );
    let p = with_pca_params("{components: 0}");
    refused(
        &p,
        "p.yaml:6:26 (at `stages.pca.params.components`)",
        "`components` must be >= 1, got 0",
    );
    let p = with_pca_params("{componets: 2}");
    let e = refused(
        &p,
        "p.yaml:6:25 (at `stages.pca.params.componets`)",
        "unknown parameter `componets` for stage kind `pca_embeddings`",
    );
    assert!(e.contains("did you mean `components`?"), "{e}");
    let p = with_pca_params("{epoch: lst}");
    let e = refused(
        &p,
        "p.yaml:6:21 (at `stages.pca.params.epoch`)",
        "unknown value `lst` for stage kind `pca_embeddings`",
    );
    assert!(e.contains("did you mean `last`?"), "{e}");
    // A matrix value out of range is the value's fault, at its position.
    let p = shipped();
    p.write(
        "p.yaml",
        "stages:\n  emb: {kind: command, params: {argv: [\"true\"]}}\n  pca:\n    kind: pca_embeddings\n    inputs: emb\n    matrix: {max_points: [100, 5]}\n",
    );
    refused(
        &p,
        "p.yaml:6:32 (at `stages.pca.matrix.max_points[1]`)",
        "`max_points` must be >= 10, got 5",
    );
}

#[test]
fn declared_kinds_are_wired_against_what_kinds_declare_they_write() {
    let kinds = r#"kinds:
  table:
    version: 1
    produces: [t.parquet]
    command: [sh, -c, "true"]
  reader:
    version: 1
    needs: [x.parquet]
    command: [sh, -c, "cat {needs.x.parquet}"]
  one:
    version: 1
    command: [ls, "{input}"]
"#;
    // `reader` needs x.parquet; `table` writes t.parquet; `synthetic` writes samples.parquet.
    let run = validate_refuses(
        &format!("{kinds}stages:\n  a: {{kind: table}}\n  b: {{kind: reader, inputs: [a]}}\n"),
        "p.yaml:15:30 (at `stages.b.inputs`)",
        "stage `b` (reader) reads `x.parquet` from `a`, but no such table is written: `a` (table) writes t.parquet",
    );
    assert!(
        run.stderr.contains("no stage kind writes `x.parquet`"),
        "{}",
        run.all()
    );
    // A built-in kind reading a declared kind's table: train needs dataset.parquet.
    let run = validate_refuses(
        &format!("{kinds}stages:\n  a: {{kind: table}}\n  b: {{kind: train, inputs: a, params: {{views: [[], []]}}}}\n"),
        "p.yaml:15:28 (at `stages.b.inputs`)",
        "stage `b` (train) reads `dataset.parquet` from `a`, but no such table is written: `a` (table) writes t.parquet",
    );
    assert!(
        run.stderr.contains("written by stage kind load"),
        "{}",
        run.all()
    );
    validate_refuses(
        &format!("{kinds}stages:\n  a: {{kind: table}}\n  c: {{kind: table}}\n  b: {{kind: one, inputs: [a, c]}}\n"),
        "p.yaml:16:27 (at `stages.b.inputs`)",
        "stage `b` (one) reads its outputs from its one input, but it has 2 inputs",
    );
    // And what is declared fits.
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!("{kinds}stages:\n  a: {{kind: synthetic, params: {{n: 10}}}}\n  b: {{kind: one, inputs: a}}\n  t: {{kind: table}}\n"),
    );
    let ok = p.cbound(&["validate", "p.yaml"]);
    assert_eq!(ok.code, 0, "{}", ok.all());
}

#[test]
fn an_instance_fails_naming_a_declared_output_it_did_not_write() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"name: d
kinds:
  half:
    version: 1
    produces: [a.parquet, b.png]
    command: [sh, -c, 'echo not parquet > "$CBOUND_OUT/a.parquet"']
  garbled:
    version: 1
    produces: [a.parquet]
    command: [sh, -c, 'echo not parquet > "$CBOUND_OUT/a.parquet"']
stages:
  h: {kind: half}
  g: {kind: garbled}
"#,
    );
    let run = p.cbound(&["run", "p.yaml", "--progress", "none"]);
    assert_eq!(run.code, 3, "{}", run.all());
    let results = read_rows(&p.latest("d").join("results.parquet"));
    let error = |stage: &str| {
        results
            .iter()
            .find(|r| r["stage"] == stage)
            .map(|r| r["error"].as_str().unwrap_or_default().to_string())
            .unwrap()
    };
    let h = error("h");
    assert!(
        h.contains("stage kind `half` declares an output in `produces`, but the program did not write `b.png`"),
        "{h}"
    );
    assert!(
        h.contains("it wrote: a.parquet, inputs.json, params.json"),
        "{h}"
    );
    let g = error("g");
    assert!(
        g.contains("declared table `a.parquet` of stage kind `garbled` is not readable Parquet"),
        "{g}"
    );
}

#[test]
fn placeholders_and_environment_reach_the_program() {
    let p = Project::new();
    p.write("kinds/show.sh", "#!/bin/sh\n# Records what it was given.\n{\n  for a in \"$@\"; do echo \"arg $a\"; done\n  echo \"params $(cat \"$CBOUND_PARAMS\" | tr -d ' \\n')\"\n  echo \"kind_dir $CBOUND_KIND_DIR\"\n  echo \"seed $CBOUND_SEED\"\n  echo \"threads $CBOUND_THREADS\"\n  echo \"greeting $GREETING\"\n} > \"$CBOUND_OUT/seen.txt\"\necho '{\"args\": '$#'}' > \"$CBOUND_OUT/metrics.json\"\n");
    p.write(
        "kinds/show.yaml",
        r#"version: 1
params:
  sizes: {type: array, items: {type: integer, minimum: 1}, default: [3, 5]}
  label: {type: string, required: true}
  note: {type: string}
needs: [samples.parquet]
produces: [seen.txt]
track: [show.sh]
env: {GREETING: hello}
command: [sh, "{kind_dir}/show.sh", "{params.sizes}", "--label={params.label}", "{seed}", "{instance}", "{needs.samples.parquet}", "{input}", "{{literal}}", "--sizes={params.sizes}"]
"#,
    );
    p.write(
        "p.yaml",
        "name: e\nseed: 4\nstages:\n  data: {kind: synthetic, params: {n: 20}}\n  show:\n    kind: show\n    inputs: data\n    params: {label: a b}\n    resources: {cpus: 2}\n",
    );
    let run = p.cbound(&["run", "p.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("e");
    let seen = std::fs::read_to_string(dir.join("show/show/seen.txt")).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("show/show/meta.json")).unwrap())
            .unwrap();
    let seed = meta["key_inputs"]["seed"].as_u64().unwrap();
    let data_dir = std::fs::canonicalize(dir.join("data/data")).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    let kind_dir = std::fs::canonicalize(p.path().join("kinds")).unwrap();
    let canonical = |line: &str, prefix: &str| {
        std::fs::canonicalize(line.strip_prefix(prefix).unwrap()).unwrap()
    };
    assert_eq!(
        &lines[..4],
        ["arg 3", "arg 5", "arg --label=a b", &format!("arg {seed}")]
    );
    assert_eq!(lines[4], "arg show");
    assert_eq!(
        canonical(lines[5], "arg "),
        data_dir.join("samples.parquet")
    );
    assert_eq!(canonical(lines[6], "arg "), data_dir);
    assert_eq!(lines[7], "arg {literal}");
    assert_eq!(lines[8], "arg --sizes=[3,5]");
    // Defaults filled in; an optional parameter without one is absent.
    assert_eq!(lines[9], "params {\"sizes\":[3,5],\"label\":\"ab\"}");
    assert_eq!(canonical(lines[10], "kind_dir "), kind_dir);
    assert_eq!(lines[11], format!("seed {seed}"));
    assert_eq!(lines[12], "threads 2");
    assert_eq!(lines[13], "greeting hello");
    let results = read_rows(&dir.join("results.parquet"));
    let show = results.iter().find(|r| r["stage"] == "show").unwrap();
    assert_eq!(show["metric.args"], 9.0);
    // The definition's semantics join the key: a new default reruns, a new summary does not.
    let kind = p.path().join("kinds/show.yaml");
    let text = std::fs::read_to_string(&kind).unwrap();
    std::fs::write(&kind, format!("summary: Shows its inputs.\n{text}")).unwrap();
    let plan = p.cbound(&["plan", "p.yaml", "--why"]);
    assert!(plan.stdout.contains("cached  show"), "{}", plan.all());
    std::fs::write(&kind, text.replace("default: [3, 5]", "default: [3]")).unwrap();
    let plan = p.cbound(&["plan", "p.yaml", "--why"]);
    assert!(
        plan.stdout.contains("stage kind definition changed"),
        "{}",
        plan.all()
    );
}

#[test]
fn stages_and_schema_know_the_declared_kinds() {
    let p = shipped();
    let list = p.cbound(&["stages", "--kinds", "kinds"]);
    assert_eq!(list.code, 0, "{}", list.all());
    assert!(
        list.stdout.contains("synthetic (version 1)"),
        "{}",
        list.all()
    );
    assert!(
        list.stdout.contains("pca_embeddings (version 1)"),
        "{}",
        list.all()
    );
    let one = p.cbound(&[
        "stages",
        "pca_embeddings",
        "--pipeline",
        "embedding-pca.yaml",
    ]);
    assert_eq!(one.code, 0, "{}", one.all());
    for part in [
        "components: integer (default 2)",
        "epoch: last | all (default \"last\")",
        "writes: pca.parquet, pca.png",
        "defined in: kinds/pca_embeddings.yaml:5:1",
        "tracks: kinds/pca_embeddings.py",
        "components: >= 1, <= 64",
    ] {
        assert!(one.stdout.contains(part), "no `{part}` in:\n{}", one.all());
    }
    let typo = p.cbound(&["stages", "pca_embedding", "--kinds", "kinds"]);
    assert_eq!(typo.code, 2);
    assert!(
        typo.stderr.contains("did you mean `pca_embeddings`?"),
        "{}",
        typo.all()
    );
    // Without the directory, the kind is unknown to `stages`.
    assert!(!p.cbound(&["stages"]).stdout.contains("pca_embeddings"));
    let missing = p.cbound(&["stages", "--kinds", "nowhere"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("--kinds nowhere: not a directory"),
        "{}",
        missing.all()
    );

    // The pipeline's schema has the kind; the pipeline passes it (Python's jsonschema) and a
    // wrong type does not.
    let schema = p.cbound(&["schema", "--pipeline", "embedding-pca.yaml"]);
    assert_eq!(schema.code, 0, "{}", schema.all());
    let value: serde_json::Value = serde_json::from_str(&schema.stdout).unwrap();
    let kinds = value["$defs"]["stage"]["properties"]["kind"]["enum"]
        .as_array()
        .unwrap();
    assert!(kinds.iter().any(|k| k == "pca_embeddings"));
    assert!(kinds.iter().any(|k| k == "train"));
    p.write("schema.json", &schema.stdout);
    let checked = common::py(
        r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
good = yaml.safe_load(open(sys.argv[2]))
print(len(list(v.iter_errors(good))))
good["stages"]["pca"]["params"]["components"] = [3]
print(len(list(v.iter_errors(good))) > 0)
inline = {"kinds": {"k": {"version": 1, "command": ["true"], "params": {"n": {"type": "integer", "minimum": 1}}}}, "stages": {"a": {"kind": "command", "params": {"argv": ["true"]}}}}
print(len(list(v.iter_errors(inline))))
inline["kinds"]["k"]["comand"] = []
print(len(list(v.iter_errors(inline))) > 0)
"#,
        &[
            p.path().join("schema.json").to_str().unwrap(),
            p.path().join("embedding-pca.yaml").to_str().unwrap(),
        ],
    );
    assert_eq!(
        checked.split_whitespace().collect::<Vec<_>>(),
        ["0", "True", "0", "True"]
    );
    // The checked-in schema stays the built-in one.
    let builtin = p.cbound(&["schema", "--output", "-"]);
    assert!(!builtin.stdout.contains("pca_embeddings"));
}

#[test]
fn a_broken_kind_file_is_reported_once_for_the_pipelines_beside_it() {
    let p = Project::new();
    p.write("kinds/bad.yaml", "version: 0\ncommand: [\"true\"]\n");
    let stages = "stages:\n  a: {kind: synthetic, params: {n: 10}}\n";
    p.write("a.yaml", stages);
    p.write("b.yaml", stages);
    let run = p.cbound(&["validate", "a.yaml", "b.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert_eq!(
        run.stderr
            .matches("kinds/bad.yaml:1:10 (at `version`)")
            .count(),
        1,
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("`version` must be a positive integer"),
        "{}",
        run.all()
    );
}
