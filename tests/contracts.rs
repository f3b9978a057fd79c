//! Contracts checked before anything runs, through the real binary: parameter values a
//! stage kind's rules refuse (ranges, fields of another optimizer, view counts, term
//! sources), and wirings whose tables do not fit (a stage reading a table its input does not
//! write, a placeholder naming a stage that is not an input). Each must fail
//! `cbound validate` with exit code 2, file:line:column and the YAML path.

mod common;
use common::Project;

use common::validate_refuses as refused;

const DATA: &str = "stages:\n  data:\n    kind: load\n    params: {format: npy, path: x.npy}\n";

#[test]
fn train_holdout_outside_the_unit_interval() {
    refused(
        &format!(
            "{DATA}  train:\n    kind: train\n    inputs: data\n    params: {{holdout: 1.5}}\n"
        ),
        "p.yaml:8:23 (at `stages.train.params.holdout`)",
        "holdout must be in [0, 1), got 1.5",
    );
}

#[test]
fn train_batch_size_zero() {
    refused(
        &format!(
            "{DATA}  train:\n    kind: train\n    inputs: data\n    params: {{batch_size: 0}}\n"
        ),
        "p.yaml:8:26 (at `stages.train.params.batch_size`)",
        "batch_size must be at least 2",
    );
}

#[test]
fn train_with_three_views() {
    let v = "[{op: gaussian_noise, std: 0.1}]";
    refused(
        &format!(
            "{DATA}  train:\n    kind: train\n    inputs: data\n    params:\n      views: [{v}, {v}, {v}]\n"
        ),
        "p.yaml:9:7 (at `stages.train.params.views`)",
        "this stage uses exactly 2 views, got 3",
    );
}

#[test]
fn momentum_on_adam_is_an_unknown_key() {
    let run = refused(
        &format!(
            "{DATA}  train:\n    kind: train\n    inputs: data\n    params:\n      optimizer: {{kind: adam, lr: 0.01, momentum: 0.9}}\n"
        ),
        "(at `stages.train.params.optimizer.momentum`)",
        "unknown parameter `momentum`",
    );
    assert!(run.stderr.contains("p.yaml:9:"), "{}", run.all());
    // On SGD it is a setting, and the kind still defaults to Adam when omitted.
    let p = Project::new();
    p.write(
        "ok.yaml",
        &format!(
            "{DATA}  sgd:\n    kind: train\n    inputs: data\n    params: {{optimizer: {{kind: sgd, momentum: 0.5}}}}\n  adam:\n    kind: train\n    inputs: data\n    params: {{optimizer: {{lr: 0.01}}}}\n"
        ),
    );
    let ok = p.cbound(&["validate", "ok.yaml"]);
    assert_eq!(ok.code, 0, "{}", ok.all());
}

#[test]
fn lars_settings_are_checked() {
    let lars = |settings: &str| {
        format!(
            "{DATA}  train:\n    kind: train\n    inputs: data\n    params:\n      optimizer: {{kind: lars, {settings}}}\n"
        )
    };
    refused(
        &lars("lr: 1.2, eta: -0.001"),
        "(at `stages.train.params.optimizer.eta`)",
        "the LARS trust coefficient eta must be finite and > 0 (SimCLR: 0.001), got -0.001",
    );
    refused(
        &lars("lr: 1.2, momentum: 1.0"),
        "(at `stages.train.params.optimizer.momentum`)",
        "momentum must be in [0, 1), got 1",
    );
    refused(
        &lars("lr: 1.2, weight_decay: -1e-6"),
        "(at `stages.train.params.optimizer.weight_decay`)",
        "weight_decay must be finite and >= 0",
    );
    // Adam's settings are not LARS's, and LARS has no default learning rate.
    refused(
        &lars("lr: 1.2, beta1: 0.9"),
        "(at `stages.train.params.optimizer.beta1`)",
        "unknown parameter `beta1`",
    );
    refused(
        &lars("eta: 0.001"),
        "p.yaml:9:7 (at `stages.train.params.optimizer`)",
        "requires parameter `lr`",
    );
    // And `eta` is LARS's alone.
    refused(
        &format!(
            "{DATA}  train:\n    kind: train\n    inputs: data\n    params:\n      optimizer: {{kind: sgd, eta: 0.001}}\n"
        ),
        "(at `stages.train.params.optimizer.eta`)",
        "unknown parameter `eta`",
    );
    let p = Project::new();
    p.write(
        "ok.yaml",
        &format!(
            "{DATA}  lars:\n    kind: train\n    inputs: data\n    params: {{optimizer: {{kind: lars, lr: 1.2, exclude_bias_and_norm: false}}}}\n  adamw:\n    kind: train\n    inputs: data\n    params: {{optimizer: {{kind: adamw, weight_decay: 0.05, exclude_bias_and_norm: true}}}}\n"
        ),
    );
    let ok = p.cbound(&["validate", "ok.yaml"]);
    assert_eq!(ok.code, 0, "{}", ok.all());
}

#[test]
fn rules_apply_to_every_matrix_value() {
    refused(
        &format!(
            "{DATA}  train:\n    kind: train\n    inputs: data\n    matrix: {{optimizer.lr: [0.001, -1.0]}}\n"
        ),
        "p.yaml:8:36 (at `stages.train.matrix.optimizer.lr[1]`)",
        "the learning rate must be finite and > 0, got -1",
    );
}

#[test]
fn augment_op_settings_are_checked_before_the_data() {
    refused(
        "stages:\n  data: {kind: synthetic}\n  v:\n    kind: augment\n    inputs: data\n    params:\n      views: [[{op: random_mask, p: 1.5}], [{op: gaussian_noise, std: -1}]]\n",
        "(at `stages.v.params.views[0][0]`)",
        "probability p = 1.5 is outside [0, 1]",
    );
}

const ESTIMATE: &str = "stages:\n  data: {kind: synthetic, params: {task: bivariate}}\n  est:\n    kind: estimate_mi\n    inputs: data\n    params: {pairs: [{name: xy, x: {columns: x}, y: {columns: y}}]}\n";

#[test]
fn bound_term_with_a_pair_but_no_estimator() {
    refused(
        &format!("{ESTIMATE}  b:\n    kind: bound\n    inputs: est\n    params:\n      terms: {{i_xy: {{pair: xy}}}}\n"),
        "p.yaml:11:15 (at `stages.b.params.terms.i_xy`)",
        "`pair` needs `estimator`",
    );
}

#[test]
fn bound_term_with_value_metric_and_pair_at_once() {
    refused(
        &format!(
            "{ESTIMATE}  b:\n    kind: bound\n    inputs: est\n    params:\n      terms: {{i_xy: {{pair: xy, estimator: ksg, value: 1.0, metric: m}}}}\n"
        ),
        "p.yaml:11:15 (at `stages.b.params.terms.i_xy`)",
        "give exactly one source",
    );
}

#[test]
fn bound_reading_estimates_needs_an_estimate_mi_input() {
    refused(
        "stages:\n  data: {kind: synthetic}\n  b:\n    kind: bound\n    inputs: data\n    params:\n      terms: {i_xy: {pair: xy, estimator: ksg}}\n",
        "(at `stages.b.params.terms.i_xy`)",
        "stage `b` (bound) reads `mi_estimates.parquet` from `data`, but no such table is written: `data` (synthetic) writes samples.parquet",
    );
}

#[test]
fn train_wired_to_a_synthetic_stage() {
    let run = refused(
        "stages:\n  data: {kind: synthetic}\n  train:\n    kind: train\n    inputs: data\n",
        "p.yaml:5:13 (at `stages.train.inputs`)",
        "stage `train` (train) reads `dataset.parquet` from `data`, but no such table is written: `data` (synthetic) writes samples.parquet",
    );
    assert!(
        run.stderr
            .contains("`dataset.parquet` is written by stage kind load"),
        "{}",
        run.all()
    );
}

#[test]
fn estimate_mi_table_that_its_input_does_not_write() {
    refused(
        "stages:\n  data: {kind: synthetic}\n  est:\n    kind: estimate_mi\n    inputs: data\n    params: {pairs: [{name: xy, x: {table: views, columns: x}, y: {columns: y}}]}\n",
        "(at `stages.est.params.pairs[0].x`)",
        "reads `views.parquet` from `data`",
    );
}

#[test]
fn a_placeholder_naming_a_stage_that_is_not_an_input() {
    let run = refused(
        "stages:\n  data: {kind: synthetic}\n  c:\n    kind: command\n    inputs: data\n    params: {argv: [echo, '{input.dta}/samples.parquet']}\n",
        "p.yaml:6:27 (at `stages.c.params.argv[1]`)",
        "`{input.dta}` names `dta`, which is not an input of stage `c`",
    );
    assert!(run.stderr.contains("did you mean `data`?"), "{}", run.all());
}

#[test]
fn the_shipped_pipelines_still_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).expect("pipelines/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = std::process::Command::new(common::bin())
            .arg("validate")
            .arg(&path)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cbound");
        let run = common::Run::from(out);
        assert_eq!(run.code, 0, "{}: {}", path.display(), run.all());
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} pipelines found");
}
