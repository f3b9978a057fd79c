//! The split a dataset gives (`load`'s train/test halves) carried through `embed` to the
//! held-out estimators, through the real binary on a small synthetic CIFAR-format task: with
//! a pair's `split: split` the kNN bank and the probe are fitted on exactly the training
//! images and scored on exactly the test images; without it they draw their seeded split as
//! before; and the wirings that cannot give a meaningful split fail with a message that says
//! what to change.

mod common;
use common::{read_rows, Project};

/// 60 training and 40 test images, a small MLP trained for one epoch, every image embedded.
const PIPELINE: &str = r#"name: split
seed: 3
stages:
  train_data:
    kind: load
    params: {format: cifar10, path: data, split: train, normalisation: scale01}
  test_data:
    kind: load
    params: {format: cifar10, path: data, split: test, normalisation: scale01}
  more_train:
    kind: load
    params: {format: cifar10, path: data, split: train, limit: 20, normalisation: scale01}
  train:
    kind: train
    inputs: train_data
    params:
      model: {encoder: {kind: mlp, hidden: [32], output: 8}, projector: [16, 8]}
      loss: {kind: infonce, temperature: 0.1}
      optimizer: {kind: adam, lr: 0.001}
      epochs: 1
      batch_size: 16
      holdout: 0.3
      views: [[{op: horizontal_flip, p: 0.5}], [{op: horizontal_flip, p: 0.5}]]
  embed:
    kind: embed
    inputs: [train, train_data, test_data]
  estimate:
    kind: estimate_mi
    inputs: embed
    params:
      pairs:
        - {name: given, x: {columns: u}, y: {columns: label}, split: split, estimators: [{name: knn, k: 5}, {name: probe, steps: 50}]}
        - {name: drawn, x: {columns: u}, y: {columns: label}, estimators: [{name: knn, k: 5}]}
"#;

fn project() -> Project {
    let p = Project::new();
    let data = p.cbound(&[
        "data",
        "synth-cifar",
        "data",
        "--train",
        "60",
        "--test",
        "40",
        "--seed",
        "2",
        "--classes",
        "4",
    ]);
    assert_eq!(data.code, 0, "{}", data.all());
    p
}

#[test]
fn held_out_estimators_fit_on_the_training_images_and_score_the_test_images() {
    let p = project();
    p.write("split.yaml", PIPELINE);
    let run = p.cbound(&["run", "split.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("split");

    // embed writes the training images' block, then the test images', each row labelled.
    let embedded = read_rows(&dir.join("embed/embed/embeddings.parquet"));
    assert_eq!(embedded.len(), 100);
    let sides: Vec<&str> = embedded
        .iter()
        .map(|r| {
            r["split"]
                .as_str()
                .unwrap_or_else(|| panic!("no split in {r}"))
        })
        .collect();
    assert!(sides[..60].iter().all(|s| *s == "train"), "{sides:?}");
    assert!(sides[60..].iter().all(|s| *s == "test"), "{sides:?}");

    let est_dir = dir.join("estimate/estimate");
    let est = read_rows(&est_dir.join("mi_estimates.parquet"));
    let splits = read_rows(&est_dir.join("mi_estimates.splits.parquet"));
    for (i, r) in est.iter().enumerate() {
        assert!(r["error"].is_null(), "{r}");
        let mine: Vec<_> = splits
            .iter()
            .filter(|s| s["estimate"] == i as u64)
            .collect();
        if r["pair"] == "given" {
            assert_eq!(
                (r["n_train"].as_u64(), r["n_test"].as_u64()),
                (Some(60), Some(40)),
                "{r}"
            );
            assert!(r["split_seed"].is_null(), "the data gave the split: {r}");
            // Every row on the side embed gave it: fitted on train, scored on test.
            assert_eq!(mine.len(), 100, "{r}");
            for s in mine {
                let row = s["row"].as_u64().unwrap() as usize;
                assert_eq!(s["split"].as_str(), Some(sides[row]), "{s}");
            }
        } else {
            // Without `split` the seeded split of every row, blind to embed's column.
            assert_eq!(
                r["n_train"].as_u64().unwrap() + r["n_test"].as_u64().unwrap(),
                100
            );
            assert!(r["split_seed"].as_u64().is_some(), "{r}");
            let crossed = mine.iter().any(|s| {
                let row = s["row"].as_u64().unwrap() as usize;
                s["split"].as_str() != Some(sides[row])
            });
            assert!(
                crossed,
                "a seeded split of 100 rows matched the data's by chance"
            );
        }
    }
    assert_eq!(est.len(), 3);
}

/// Runs `text`, which must fail with `message` in its output.
fn fails_with(text: &str, message: &str) {
    let p = project();
    p.write("split.yaml", text);
    let run = p.cbound(&["run", "split.yaml", "--progress", "none"]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all().contains(message),
        "wanted `{message}` in:\n{}",
        run.all()
    );
}

#[test]
fn embed_refuses_two_datasets_of_one_half() {
    fails_with(
        &PIPELINE.replace(
            "inputs: [train, train_data, test_data]",
            "inputs: [train, train_data, more_train]",
        ),
        "are both the train split: give it one dataset per split",
    );
}

#[test]
fn a_split_column_must_exist_and_hold_train_and_test() {
    // One dataset: embed writes no `split` column.
    fails_with(
        &PIPELINE.replace(
            "inputs: [train, train_data, test_data]",
            "inputs: [train, test_data]",
        ),
        "x's table has no column `split` for `split`",
    );
    // A column that is not a split.
    fails_with(
        &PIPELINE.replace("split: split,", "split: label,"),
        "pair `given`: the `label` column holds `0`; a split column's values must be `train`",
    );
}
