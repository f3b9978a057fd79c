//! The shipped SimCLR CIFAR-10 recipe (pipelines/simclr-cifar10.yaml) end to end at a tiny
//! size, through the real binary, on the synthetic CIFAR-format task (`cbound data
//! synth-cifar`): ResNet-18 (CIFAR stem, width 1/16) with BatchNorm trained by LARS on the
//! SimCLR views, the training and test images embedded at every snapshot, the kNN monitor and
//! the linear probe fitted on the training images' embeddings and scored on the test images',
//! and `bound` on every snapshot.
//!
//! This asserts the wiring only, at the smallest size that runs every stage (colour
//! textures, 8x8, 2 epochs), and makes no claim about learning. That the recipe learns is tests/simclr_learns.rs: on gray textures at
//! 16x16 for 8 epochs the final kNN accuracy beats chance and the epoch-0 encoder's by stated
//! margins (README, "The SimCLR CIFAR-10 recipe").

mod common;
use common::{read_rows, Project};

fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_simclr_recipe_runs_end_to_end_on_synthetic_cifar() {
    let p = Project::new();
    p.write("simclr.yaml", &repo_file("pipelines/simclr-cifar10.yaml"));
    let check = p.cbound(&["validate", "simclr.yaml"]);
    assert_eq!(check.code, 0, "{}", check.all());
    let data = p.cbound(&[
        "data",
        "synth-cifar",
        "data",
        "--train",
        "400",
        "--test",
        "300",
        "--seed",
        "1",
        "--classes",
        "4",
        "--min-period",
        "8",
        "--max-period",
        "12",
    ]);
    assert_eq!(data.code, 0, "{}", data.all());
    let sets = [
        "vars.data_dir=data",
        "vars.train_size=400",
        "vars.test_size=300",
        "vars.epochs=2",
        "vars.warmup_epochs=1",
        "vars.snapshot_every=1",
        "vars.batch=32",
        "vars.width=0.0625",
        "vars.size=8",
        "vars.lr=0.3",
        "vars.holdout=0.1",
        "vars.classes=4",
        "vars.knn_k=20",
    ];
    let mut args = vec!["run", "simclr.yaml", "--progress", "none"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let run = p.cbound(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("simclr-cifar10");
    let results = read_rows(&dir.join("results.parquet"));
    assert_eq!(results.len(), 6, "{results:?}");
    assert!(results.iter().all(|r| r["status"] == "ok"), "{results:?}");

    // The model is the recipe's: ResNet-18's parameter names with BatchNorm running statistics
    // among the step's state, trained by LARS.
    let train = dir.join("train/train");
    let step = std::fs::read(train.join("train_step.onnx")).unwrap();
    let has = |needle: &str| step.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has("enc.layer4.1.bn2.running_var"), "no BatchNorm state");
    assert!(has("Lars"), "the step graph's doc names its optimizer");

    // Every snapshot (epochs 0, 1, 2) gets a kNN and a probe accuracy, fitted on that
    // snapshot's training images and scored on its test images.
    let estimate = dir.join("estimate/estimate");
    let rows = read_rows(&estimate.join("mi_estimates.parquet"));
    for epoch in 0..=2u64 {
        for name in ["knn", "probe"] {
            let r = rows
                .iter()
                .find(|r| r["epoch"].as_u64() == Some(epoch) && r["estimator"] == name)
                .unwrap_or_else(|| panic!("no {name} at epoch {epoch}: {rows:?}"));
            let acc = r["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc), "{r}");
            let (n_train, n_test) = (
                r["n_train"].as_u64().unwrap(),
                r["n_test"].as_u64().unwrap(),
            );
            assert_eq!((n_train, n_test), (400, 300), "{r}");
            assert!(r["split_seed"].is_null(), "the data gave the split: {r}");
        }
    }
    // Each fitted row is a training image and each scored row a test image: the side in
    // the audit table is the embed table's `split` of that row.
    let embedded = read_rows(&dir.join("embed/embed/embeddings.parquet"));
    assert_eq!(embedded.len(), 3 * 700);
    let splits = read_rows(&estimate.join("mi_estimates.splits.parquet"));
    assert_eq!(
        splits.len(),
        3 * 2 * 700,
        "every row of every snapshot, for knn and probe"
    );
    let mut seen = std::collections::HashMap::new();
    for s in &splits {
        let key = format!("{}|{}", s["estimate"], s["row"]);
        let side = s["split"].as_str().unwrap_or_default().to_string();
        let row = s["row"].as_u64().unwrap() as usize;
        assert_eq!(embedded[row]["split"].as_str(), Some(side.as_str()), "{s}");
        assert_eq!(embedded[row]["epoch"], s["epoch"], "{s}");
        if let Some(prev) = seen.insert(key.clone(), side.clone()) {
            assert_eq!(prev, side, "row {key} is on both sides");
        }
    }

    // `bound` speaks of every snapshot.
    let bounds = read_rows(&dir.join("bound/bound/bounds.parquet"));
    for epoch in 0..=2u64 {
        assert!(
            bounds.iter().any(|b| b["epoch"].as_u64() == Some(epoch)),
            "no bound at epoch {epoch}: {bounds:?}"
        );
    }
}
