//! Training and embedding through the real binary and ONNX Runtime (the repository's .venv):
//! a separable task learns, runs are bitwise reproducible, an interrupted training resumes
//! to the same parameters, LARS trains and parameter groups change what they should, and bad
//! input fails with the reason.

mod common;
use common::{read_rows, Project};

use std::time::{Duration, Instant};

fn pipeline(epochs: u64, extra: &str) -> String {
    format!(
        r#"name: t
seed: 3
stages:
  mix:
    kind: synthetic
    params: {{task: mixture, classes: 4, dim: 8, spread: 3.0, noise: 0.5, n: 2000, mc_samples: 10000}}
  data:
    kind: load
    inputs: mix
    params: {{format: parquet, feature_columns: "x*", label_column: z}}
  train:
    kind: train
    inputs: data
    params:
      model: {{encoder: {{kind: mlp, hidden: [32], output: 8}}, projector: [32, 8]}}
      epochs: {epochs}
      batch_size: 64
      holdout: 0.2
      views: [[{{op: gaussian_noise, std: 0.3}}], [{{op: gaussian_noise, std: 0.3}}]]
{extra}
  embed:
    kind: embed
    inputs: [train, data]
  estimate:
    kind: estimate_mi
    inputs: embed
    params:
      pairs: [{{name: uz, x: {{columns: u}}, y: {{columns: label}}, estimators: [{{name: probe}}]}}]
"#
    )
}

#[test]
fn training_learns_embeds_and_is_bitwise_reproducible() {
    let a = Project::new();
    a.write("t.yaml", &pipeline(4, ""));
    let run = a.cbound(&["run", "t.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let train_dir = a.latest("t").join("train/train");
    let curve = read_rows(&train_dir.join("training_curve.parquet"));
    assert_eq!(curve.len(), 4);
    let first = &curve[0];
    let last = &curve[3];
    assert!(
        last["loss"].as_f64().unwrap() < first["loss"].as_f64().unwrap(),
        "{curve:?}"
    );
    assert!(
        last["heldout_infonce"].as_f64().unwrap() > first["heldout_infonce"].as_f64().unwrap(),
        "{curve:?}"
    );
    assert!(last["heldout_infonce"].as_f64().unwrap() <= 64f64.ln());
    for f in [
        "encoder.onnx",
        "train_step.onnx",
        "params.ckpt",
        "model.json",
    ] {
        assert!(train_dir.join(f).exists(), "{f}");
    }
    // The saved graphs are valid ONNX for an independent checker.
    common::py(
        "import onnx,sys\nfor p in sys.argv[1:]: onnx.checker.check_model(onnx.load(p), full_check=True)",
        &[train_dir.join("encoder.onnx").to_str().unwrap(), train_dir.join("train_step.onnx").to_str().unwrap()],
    );
    let emb = read_rows(&a.latest("t").join("embed/embed/embeddings.parquet"));
    assert_eq!(emb.len(), 2000);
    assert_eq!(emb[0]["u"].as_array().unwrap().len(), 8);
    let results = read_rows(&a.latest("t").join("results.parquet"));
    let est = results.iter().find(|r| r["stage"] == "estimate").unwrap();
    assert!(
        est["metric.uz.probe.accuracy"].as_f64().unwrap() > 0.5,
        "{est}"
    );

    let b = Project::new();
    b.write("t.yaml", &pipeline(4, ""));
    assert_eq!(b.cbound(&["run", "t.yaml", "--only", "train"]).code, 0);
    let pa = std::fs::read(train_dir.join("params.ckpt")).unwrap();
    let pb = std::fs::read(b.latest("t").join("train/train/params.ckpt")).unwrap();
    assert!(pa == pb, "same seed must give bitwise-identical parameters");
}

/// Making the next batch's views during the current step (automatic on a device) trains the
/// same bits as making them between steps; a bad setting of the switch is refused.
#[test]
fn views_made_ahead_of_the_step_train_the_same_bits() {
    let mut got = Vec::new();
    for setting in ["on", "off"] {
        let p = Project::new();
        p.write("t.yaml", &pipeline(2, ""));
        let run = p
            .command(&["run", "t.yaml", "--only", "train"])
            .env("CBOUND_VIEW_PREFETCH", setting)
            .output()
            .expect("run cbound");
        let run = common::Run::from(run);
        assert_eq!(run.code, 0, "{setting}: {}", run.all());
        let dir = p.latest("t").join("train/train");
        let files: Vec<Vec<u8>> = ["params.ckpt", "training_curve.parquet", "encoder.onnx"]
            .iter()
            .map(|f| std::fs::read(dir.join(f)).unwrap())
            .collect();
        got.push(files);
    }
    assert!(got[0] == got[1], "prefetched views changed the training");

    let p = Project::new();
    p.write("t.yaml", &pipeline(1, ""));
    let run = common::Run::from(
        p.command(&["run", "t.yaml", "--only", "train"])
            .env("CBOUND_VIEW_PREFETCH", "sometimes")
            .output()
            .expect("run cbound"),
    );
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all()
            .contains("CBOUND_VIEW_PREFETCH=\"sometimes\": expected `on` or `off`"),
        "{}",
        run.all()
    );
}

/// Trains the pipeline with `optimizer` for `epochs` epochs (train stage only) in a fresh
/// project; returns the final parameters' bytes, the curve and the project.
fn train_with(epochs: u64, optimizer: &str) -> (Vec<u8>, Vec<serde_json::Value>, Project) {
    let p = Project::new();
    p.write(
        "t.yaml",
        &pipeline(epochs, &format!("      optimizer: {optimizer}")),
    );
    let run = p.cbound(&["run", "t.yaml", "--only", "train"]);
    assert_eq!(run.code, 0, "{optimizer}: {}", run.all());
    let dir = p.latest("t").join("train/train");
    let params = std::fs::read(dir.join("params.ckpt")).unwrap();
    let curve = read_rows(&dir.join("training_curve.parquet"));
    (params, curve, p)
}

/// LARS (SimCLR's formulation, biases exempt by default) trains the MLP; exempting or not
/// changes the result, for LARS and for SGD's weight decay; and saying the default
/// (`exclude_bias_and_norm: false` on Adam) changes nothing, bit for bit.
#[test]
fn lars_trains_and_parameter_groups_matter() {
    let (lars, curve, p) = train_with(4, "{kind: lars, lr: 2.0, eta: 0.01}");
    let (first, last) = (&curve[0], &curve[3]);
    assert!(
        last["loss"].as_f64().unwrap() < first["loss"].as_f64().unwrap(),
        "{curve:?}"
    );
    assert!(
        last["heldout_infonce"].as_f64().unwrap() > first["heldout_infonce"].as_f64().unwrap(),
        "{curve:?}"
    );
    let step = p.latest("t").join("train/train/train_step.onnx");
    common::py(
        "import onnx,sys\nonnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)",
        &[step.to_str().unwrap()],
    );
    let (lars_all, _, _) = train_with(
        4,
        "{kind: lars, lr: 2.0, eta: 0.01, exclude_bias_and_norm: false}",
    );
    assert!(lars != lars_all, "LARS with and without exempt biases");
    let (sgd_all, _, _) = train_with(1, "{kind: sgd, lr: 0.05, weight_decay: 0.1}");
    let (sgd_exempt, _, _) = train_with(
        1,
        "{kind: sgd, lr: 0.05, weight_decay: 0.1, exclude_bias_and_norm: true}",
    );
    assert!(
        sgd_all != sgd_exempt,
        "SGD with and without decay on biases"
    );
    let (adam, _, _) = train_with(1, "{kind: adam}");
    let (adam_said, _, _) = train_with(1, "{kind: adam, exclude_bias_and_norm: false}");
    assert!(
        adam == adam_said,
        "the default must be the update as before"
    );
}

/// Runs `file`'s train stage twice: uninterrupted in one project, and in another interrupted
/// (SIGINT) after its first committed epoch and then resumed; both must end with the same
/// `params.ckpt` and the full curve of `epochs` rows. `setup` prepares each project.
fn assert_resume_matches(name: &str, yaml: &str, epochs: usize, setup: impl Fn(&Project)) {
    let reference = Project::new();
    setup(&reference);
    reference.write("t.yaml", yaml);
    assert_eq!(
        reference.cbound(&["run", "t.yaml", "--only", "train"]).code,
        0
    );
    let expected = std::fs::read(reference.latest(name).join("train/train/params.ckpt")).unwrap();

    let p = Project::new();
    setup(&p);
    p.write("t.yaml", yaml);
    let child = p
        .command(&["run", "t.yaml", "--only", "train", "--progress", "none"])
        .spawn()
        .unwrap();
    // Wait for the first committed epoch (the checkpoint manifest), then Ctrl-C.
    let staging = p.path().join(format!("outputs/{name}/.cbound/staging"));
    let start = Instant::now();
    let committed = |m: &std::path::Path| {
        std::fs::read(m)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["epochs_done"].as_u64())
            .is_some_and(|e| e >= 1)
    };
    let found = loop {
        let hit = std::fs::read_dir(&staging).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join(".checkpoint/manifest.json"))
                .find(|m| committed(m))
        });
        if hit.is_some() || start.elapsed() > Duration::from_secs(60) {
            break hit;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(found.is_some(), "no checkpoint appeared");
    if out.status.code() == Some(130) {
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(found.unwrap()).unwrap()).unwrap();
        let done = saved["epochs_done"].as_u64().unwrap();
        assert!((1..epochs as u64).contains(&done), "{saved}");
    }
    let resumed = p.cbound(&["run", "t.yaml", "--only", "train"]);
    assert_eq!(resumed.code, 0, "{}", resumed.all());
    let got = std::fs::read(p.latest(name).join("train/train/params.ckpt")).unwrap();
    assert!(
        got == expected,
        "resumed training must end with the uninterrupted run's parameters"
    );
    let curve = read_rows(&p.latest(name).join("train/train/training_curve.parquet"));
    assert_eq!(curve.len(), epochs);
}

#[test]
fn interrupted_training_resumes_to_the_same_parameters() {
    assert_resume_matches("t", &pipeline(12, ""), 12, |_| {});
}

#[test]
fn bad_training_input_fails_with_the_reason() {
    let p = Project::new();
    p.write("t.yaml", &pipeline(2, ""));
    let bad = p.cbound(&[
        "validate",
        "t.yaml",
        "--set",
        "stages.train.params.model.encoder.activation=swish",
    ]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("swish"), "{}", bad.all());
    let bad = p.cbound(&[
        "validate",
        "t.yaml",
        "--set",
        "stages.train.params.optimizer.kind=lion",
    ]);
    assert_eq!(bad.code, 2, "{}", bad.all());

    let nan = p.cbound(&[
        "run",
        "t.yaml",
        "--only",
        "train",
        "--set",
        "stages.train.params.optimizer.lr=1e30",
        "--progress",
        "lines",
    ]);
    assert_eq!(nan.code, 3, "{}", nan.all());
    assert!(
        nan.stderr.contains("at step") && nan.stderr.contains("lower optimizer.lr"),
        "{}",
        nan.all()
    );

    let big = p.cbound(&[
        "run",
        "t.yaml",
        "--only",
        "train",
        "--set",
        "stages.train.params.batch_size=5000",
        "--progress",
        "lines",
    ]);
    assert_eq!(big.code, 3);
    assert!(big.stderr.contains("batch_size 5000"), "{}", big.all());

    let missing = p.cbound(&[
        "run",
        "t.yaml",
        "--only",
        "train",
        "--ort-lib",
        "/nonexistent/libonnxruntime.so",
        "--progress",
        "lines",
    ]);
    assert_eq!(missing.code, 3, "{}", missing.all());
    assert!(
        missing.stderr.contains("scripts/setup.sh"),
        "{}",
        missing.all()
    );
}

/// Snapshots every 2 epochs flow through embed (one block per snapshot, with the second view),
/// estimate_mi (one estimate per snapshot) and bound (one set of rows per snapshot; metrics of
/// the final encoder), so I(U;Y) and the bounds can be followed over training.
#[test]
fn snapshots_follow_estimates_and_bounds_over_epochs() {
    let p = Project::new();
    p.write(
        "s.yaml",
        r#"name: s
seed: 4
stages:
  mix:
    kind: synthetic
    params: {task: mixture, classes: 4, dim: 4, spread: 3.0, noise: 0.5, n: 1200, mc_samples: 10000}
  data:
    kind: load
    inputs: mix
    params: {format: parquet, feature_columns: "x*", label_column: z}
  views:
    kind: augment
    inputs: data
    params: {views: [[], [{op: gaussian_noise, std: 0.3}]], epochs: 1}
  channel:
    kind: estimate_mi
    inputs: views
    params:
      pairs:
        - {name: xy_given_z, x: {columns: view_0}, y: {columns: view_1}, z: {columns: label},
           estimators: [{name: gaussian_channel, noise_std: 0.3, feature_range: [-50.0, 50.0]}]}
  train:
    kind: train
    inputs: data
    params:
      model: {encoder: {kind: mlp, hidden: [16], output: 8}, projector: [16, 8]}
      epochs: 5
      snapshot_every: 2
      batch_size: 64
      holdout: 0.2
      views: [[{op: gaussian_noise, std: 0.3}], [{op: gaussian_noise, std: 0.3}]]
  embed:
    kind: embed
    inputs: [train, data]
    params: {second_view: [{op: gaussian_noise, std: 0.3}], snapshots: true, include_input: true}
  estimate:
    kind: estimate_mi
    inputs: embed
    params:
      pairs:
        - {name: uz, x: {columns: u}, y: {columns: label}, estimators: [{name: probe, steps: 50}]}
        - {name: uy, x: {columns: u}, y: {columns: u_view}, estimators: [{name: infonce, temperature: 0.1, batch: 64}]}
  bound:
    kind: bound
    inputs: [estimate, channel]
    params:
      terms:
        i_uz: {pair: uz, estimator: probe}
        i_uy: {pair: uy, estimator: infonce}
        i_xy_given_z: {pair: xy_given_z, estimator: gaussian_channel}
      assumptions: {u_is_function_of_x: true}
      classes: 4
"#,
    );
    let run = p.cbound(&["run", "s.yaml", "--progress", "none"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("s");
    let curve = read_rows(&dir.join("train/train/training_curve.parquet"));
    let epochs: Vec<u64> = curve.iter().map(|r| r["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![1, 2, 3, 4, 5], "epochs completed, 1-based");
    for e in [0, 2, 4, 5] {
        assert!(
            dir.join(format!("train/train/encoder_epoch{e}.onnx"))
                .exists(),
            "snapshot {e}"
        );
    }
    let emb = read_rows(&dir.join("embed/embed/embeddings.parquet"));
    assert_eq!(emb.len(), 4 * 1200);
    let mut seen: Vec<i64> = emb.iter().map(|r| r["epoch"].as_i64().unwrap()).collect();
    seen.dedup();
    assert_eq!(seen, vec![0, 2, 4, 5]);
    // The views are the same for every snapshot: only the encoder changes.
    assert_eq!(emb[0]["y"], emb[1200]["y"]);
    assert_ne!(emb[0]["u"], emb[3 * 1200]["u"]);
    assert_eq!(emb[0]["u_view"].as_array().unwrap().len(), 8);

    let est = read_rows(&dir.join("estimate/estimate/mi_estimates.parquet"));
    assert_eq!(est.len(), 2 * 4, "{est:?}");
    let infonce = |e: i64| {
        est.iter()
            .find(|r| r["pair"] == "uy" && r["epoch"] == e)
            .and_then(|r| r["nats"].as_f64())
            .unwrap()
    };
    for e in [0, 2, 4, 5] {
        let v = infonce(e);
        assert!(v.is_finite() && v <= (64f64).ln() + 1e-9, "epoch {e}: {v}");
    }
    assert_ne!(
        infonce(0),
        infonce(5),
        "each snapshot is estimated on its own rows"
    );
    let channel = read_rows(&dir.join("channel/channel/mi_estimates.parquet"));
    assert_eq!(channel[0]["kind"], "upper_bound");
    assert!(
        channel[0]["epoch"].is_null(),
        "augment epochs are not snapshots"
    );

    let bounds = read_rows(&dir.join("bound/bound/bounds.parquet"));
    let det: Vec<&serde_json::Value> = bounds
        .iter()
        .filter(|r| r["name"] == "valid_deterministic")
        .collect();
    assert_eq!(det.len(), 4);
    // Every term has a confidence bound, so every row is certified; with 18 held-out InfoNCE
    // batches and a wide declared feature range the certified values are vacuous.
    for r in &det {
        assert!(
            r["certification"] == "certified" || r["certification"] == "vacuous",
            "{r}"
        );
        assert!(r["certified_nats"].as_f64().unwrap() < r["value_nats"].as_f64().unwrap());
    }
    let results = read_rows(&dir.join("results.parquet"));
    let bound = results.iter().find(|r| r["stage"] == "bound").unwrap();
    let uz5 = est
        .iter()
        .find(|r| r["pair"] == "uz" && r["epoch"] == 5)
        .unwrap();
    assert_eq!(bound["metric.probe_accuracy"], uz5["accuracy"]);
    let lower = bound["metric.accuracy_lower_bound"].as_f64().unwrap();
    assert!(lower > 0.25 && lower <= bound["metric.probe_accuracy"].as_f64().unwrap() + 0.05);
}

/// A tiny ResNet-18 (CIFAR stem, BatchNorm) on 8x8 RGB images through the real binary: it
/// trains, its snapshots and `encoder.onnx` run BatchNorm in inference mode and pass the ONNX
/// checker, the checkpoint carries the running statistics, and a bad width is refused at
/// validate time with its YAML location.
#[test]
fn resnet18_trains_on_images_and_exports_an_inference_encoder() {
    let p = Project::new();
    write_images(&p);
    let yaml = |width: &str| resnet_pipeline(width, 2);
    p.write("r.yaml", &yaml("0"));
    let bad = p.cbound(&["validate", "r.yaml"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(
        bad.stderr
            .contains("stages.train.params.model.encoder.width"),
        "{}",
        bad.all()
    );

    p.write("r.yaml", &yaml("0.0625"));
    let run = p.cbound(&["run", "r.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dir = p.latest("r").join("train/train");
    let report = common::py(
        r#"
import sys, onnx
for path in sys.argv[1:]:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    ops = {n.op_type for n in m.graph.node}
    print(path.rsplit('/', 1)[-1], 'BatchNormalization' in ops)
"#,
        &[
            dir.join("encoder.onnx").to_str().unwrap(),
            dir.join("encoder_epoch1.onnx").to_str().unwrap(),
        ],
    );
    assert!(report.contains("encoder.onnx True"), "{report}");
    assert!(report.contains("encoder_epoch1.onnx True"), "{report}");
    let ckpt = std::fs::read(dir.join("params.ckpt")).unwrap();
    let has = |s: &str| ckpt.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("enc.layer4.1.bn2.running_var"));
    assert!(has("enc.layer2.0.downsample.0.weight"));
    let curve = read_rows(&dir.join("training_curve.parquet"));
    assert_eq!(curve.len(), 2);
    assert!(curve[1]["loss"].as_f64().unwrap().is_finite());
}

/// 48 RGB 8x8 images in two brightness classes, as a Parquet `img` column (fixed-size lists
/// of bytes) with `label`.
fn write_images(p: &Project) {
    common::py(
        r#"
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
rng = np.random.default_rng(0)
n = 48
labels = rng.integers(0, 2, n)
imgs = rng.integers(0, 80, (n, 3, 8, 8)) + 150 * labels[:, None, None, None]
col = pa.array([list(r) for r in imgs.reshape(n, -1).astype(np.uint8)], pa.list_(pa.uint8(), 192))
pq.write_table(pa.table({"img": col, "label": labels}), sys.argv[1])
"#,
        &[p.path().join("imgs.parquet").to_str().unwrap()],
    );
}

/// A tiny ResNet-18 (CIFAR stem) pipeline on [`write_images`]'s data.
fn resnet_pipeline(width: &str, epochs: u64) -> String {
    format!(
        r#"name: r
seed: 1
stages:
  data:
    kind: load
    params: {{format: parquet, path: imgs.parquet, image_column: img, image_shape: [3, 8, 8], label_column: label}}
  train:
    kind: train
    inputs: data
    params:
      model: {{encoder: {{kind: resnet18, stem: cifar, width: {width}}}, projector: [16, 8]}}
      loss: {{kind: nt_xent, temperature: 0.5}}
      epochs: {epochs}
      batch_size: 8
      holdout: 0.2
      snapshot_every: 1
"#
    )
}

/// The BatchNorm running statistics and the optimizer state survive a kill: the resumed
/// ResNet ends bitwise where the uninterrupted one does.
#[test]
fn interrupted_resnet_training_resumes_to_the_same_parameters() {
    assert_resume_matches("r", &resnet_pipeline("0.0625", 8), 8, write_images);
}
