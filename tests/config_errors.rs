//! Bad configuration, run through the real binary: every error with file:line:column, the
//! YAML path, a suggestion where one exists, all errors of a file at once, and exit code 2.

mod common;
use common::Project;

fn validate(text: &str) -> common::Run {
    let p = Project::new();
    p.write("p.yaml", text);
    let run = p.cbound(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    run
}

#[test]
fn malformed_yaml() {
    let run = validate("stages:\n  a: {kind: synthetic\n  b: 1\n");
    assert!(run.stderr.contains("YAML syntax error"), "{}", run.all());
    assert!(run.stderr.contains("p.yaml:3:"), "{}", run.all());
}

#[test]
fn unknown_stage_kind_with_suggestion() {
    let run = validate("stages:\n  data:\n    kind: synthtic\n");
    assert!(
        run.stderr.contains("unknown stage kind `synthtic`"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("p.yaml:3:11 (at `stages.data.kind`)"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("did you mean `synthetic`?"),
        "{}",
        run.all()
    );
}

#[test]
fn undefined_variable() {
    let run = validate(
        "vars: {n: 10}\nstages:\n  data:\n    kind: synthetic\n    params: {n: '${size}'}\n",
    );
    assert!(
        run.stderr.contains("unknown variable `size`"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr
            .contains("p.yaml:5:17 (at `stages.data.params.n`)"),
        "{}",
        run.all()
    );
}

#[test]
fn missing_input_stage() {
    let run = validate(
        "stages:\n  data: {kind: synthetic}\n  post:\n    kind: synthetic\n    inputs: [dta]\n",
    );
    assert!(
        run.stderr.contains("unknown input stage `dta`"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr
            .contains("p.yaml:5:14 (at `stages.post.inputs[0]`)"),
        "{}",
        run.all()
    );
    assert!(run.stderr.contains("did you mean `data`?"), "{}", run.all());
}

#[test]
fn cycle_prints_its_path() {
    let run = validate(
        "stages:\n  a: {kind: synthetic, inputs: [c]}\n  b: {kind: synthetic, inputs: [a]}\n  c: {kind: synthetic, inputs: [b]}\n",
    );
    assert!(
        run.stderr.contains("stages form a cycle: "),
        "{}",
        run.all()
    );
    let line = run.stderr.lines().find(|l| l.contains("cycle")).unwrap();
    let path: Vec<&str> = line
        .split("cycle: ")
        .nth(1)
        .unwrap()
        .split(" -> ")
        .collect();
    assert_eq!(path.len(), 4, "{line}");
    assert_eq!(path[0], path[3], "{line}");
    assert!(run.stderr.contains("p.yaml:2:3"), "{}", run.all());
}

#[test]
fn duplicate_stage_id() {
    let run =
        validate("stages:\n  a: {kind: synthetic}\n  b: {kind: synthetic}\n  a: {kind: command}\n");
    assert!(
        run.stderr
            .contains("duplicate key `a` (first defined at line 2, column 3)"),
        "{}",
        run.all()
    );
    assert!(run.stderr.contains("p.yaml:4:3"), "{}", run.all());
}

#[test]
fn unknown_keys_and_wrong_types_all_in_one_pass() {
    let run = validate(concat!(
        "name: demo\n",
        "seeed: 3\n",
        "stages:\n",
        "  data:\n",
        "    kind: synthetic\n",
        "    parms: {}\n",
        "    params: {n: lots, rhoo: 0.5}\n",
        "    matrix: {dim: [2, three]}\n",
    ));
    let e = &run.stderr;
    assert!(
        e.contains("unknown top-level key `seeed`")
            && e.contains("p.yaml:2:1")
            && e.contains("did you mean `seed`?"),
        "{e}"
    );
    assert!(
        e.contains("unknown stage key `parms`")
            && e.contains("p.yaml:6:5")
            && e.contains("did you mean `params`?"),
        "{e}"
    );
    assert!(e.contains("p.yaml:7:17 (at `stages.data.params.n`)"), "{e}");
    assert!(
        e.contains("unknown parameter `rhoo`") && e.contains("did you mean `rho`?"),
        "{e}"
    );
    assert!(
        e.contains("p.yaml:8:23 (at `stages.data.matrix.dim[1]`)"),
        "{e}"
    );
    assert!(e.contains("5 errors in pipeline configuration"), "{e}");
}

#[test]
fn errors_from_set_are_attributed_to_the_command_line() {
    let p = Project::new();
    p.write("p.yaml", "stages:\n  data: {kind: synthetic}\n");
    let run = p.cbound(&["validate", "p.yaml", "--set", "stages.data.params.n=abc"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("p.yaml (from --set) (at `stages.data.params.n`)"),
        "{}",
        run.all()
    );
    let ok = p.cbound(&["validate", "p.yaml", "--set", "stages.data.params.n=10"]);
    assert_eq!(ok.code, 0, "{}", ok.all());
}

#[test]
fn several_files_are_validated_together() {
    let p = Project::new();
    p.write(
        "good.yaml",
        "stages:\n  a: {kind: synthetic, matrix: {n: [1, 2, 3]}}\n",
    );
    p.write("bad.yaml", "stages:\n  a: {kind: nope}\n");
    let run = p.cbound(&["validate", "good.yaml", "bad.yaml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stdout.contains("ok: good.yaml (1 stages, 3 instances)"),
        "{}",
        run.all()
    );
    assert!(run.stderr.contains("bad.yaml:2:13"), "{}", run.all());
}

#[test]
fn usage_errors_exit_2_and_unknown_targets_suggest() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "stages:\n  data: {kind: synthetic, params: {n: 5}}\n",
    );
    let run = p.cbound(&["run", "p.yaml", "--only", "dat"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("did you mean `data`?"), "{}", run.all());
    assert_eq!(p.cbound(&["frobnicate"]).code, 2);
}
