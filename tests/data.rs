//! Data stages through the real binary, on small files the tests write in each real format:
//! CIFAR-10 binary, IDX (gzip), Parquet; and the augment stage's views read back by pyarrow.

mod common;
use common::{read_rows, Project};

use std::io::Write;

/// Writes CIFAR-10 binary batches with `per_file` records each; pixel values encode the
/// record so the test can check what was read.
fn write_cifar10(p: &Project, per_file: usize) {
    let dir = p.path().join("cifar");
    std::fs::create_dir_all(&dir).unwrap();
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (f, name) in names.iter().enumerate() {
        let mut bytes = Vec::new();
        for r in 0..per_file {
            bytes.push(((f * per_file + r) % 10) as u8);
            bytes.extend(std::iter::repeat_n((f * 10 + r) as u8, 3072));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write_idx(p: &Project, n: usize, magic_override: Option<u32>) {
    let dir = p.path().join("idx");
    std::fs::create_dir_all(&dir).unwrap();
    let mut images = Vec::new();
    images.extend(magic_override.unwrap_or(0x0803).to_be_bytes());
    for v in [n as u32, 4, 4] {
        images.extend(v.to_be_bytes());
    }
    for i in 0..n {
        images.extend(std::iter::repeat_n((i * 20) as u8, 16));
    }
    let mut labels = Vec::new();
    labels.extend(0x0801u32.to_be_bytes());
    labels.extend((n as u32).to_be_bytes());
    labels.extend((0..n).map(|i| (i % 3) as u8));
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz(&images)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gz(&labels)).unwrap();
}

#[test]
fn cifar_load_and_augment_views() {
    let p = Project::new();
    write_cifar10(&p, 4);
    p.write(
        "c.yaml",
        r#"name: c
seed: 5
stages:
  data:
    kind: load
    params: {format: cifar10, path: cifar, split: train, classes: [0, 1, 2, 3], normalisation: scale01}
  views:
    kind: augment
    inputs: data
    params:
      epochs: 2
      views:
        - [{op: random_resized_crop, size: 16, scale: [0.5, 1.0]}, {op: horizontal_flip}, {op: color_jitter, brightness: 0.4, contrast: 0.4, saturation: 0.4}, {op: gaussian_noise, std: 0.1}]
        - [{op: random_resized_crop, size: 16}, {op: grayscale, p: 1.0}]
"#,
    );
    let run = p.cbound(&["run", "c.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let data = read_rows(&p.latest("c").join("data/data/dataset.parquet"));
    // 20 training records, labels (f*4+r) % 10: classes 0..3 keep 8 of them.
    assert_eq!(data.len(), 8);
    assert!(data.iter().all(|r| r["label"].as_u64().unwrap() < 4));
    assert_eq!(data[0]["image"].as_array().unwrap().len(), 3072);
    let views = read_rows(&p.latest("c").join("views/views/views.parquet"));
    assert_eq!(views.len(), 16, "two epochs of 8 samples");
    let v0 = views[0]["view_0"].as_array().unwrap();
    assert_eq!(v0.len(), 3 * 16 * 16);
    // Grayscale view: the three channels are equal.
    let v1: Vec<f64> = views[0]["view_1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(v1[..256], v1[256..512]);
    // Epochs draw fresh randomness.
    assert_ne!(views[0]["view_0"], views[8]["view_0"]);
    assert_eq!(views[0]["id"], views[8]["id"]);
}

#[test]
fn idx_gzip_and_parquet_loaders() {
    let p = Project::new();
    write_idx(&p, 30, None);
    p.write(
        "i.yaml",
        "name: i\nstages:\n  data: {kind: load, params: {format: idx, path: idx, subsample: 12}}\n  copy:\n    kind: load\n    params: {format: parquet, path: table.csv, feature_columns: 'f*', label_column: label}\n",
    );
    p.write(
        "table.csv",
        "f0,f1,label\n0.5,1.5,a\n2.5,3.5,b\n4.5,5.5,a\n",
    );
    let run = p.cbound(&["run", "i.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    // The table loader takes CSV as well as Parquet; string labels become class codes.
    let copy = read_rows(&p.latest("i").join("copy/copy/dataset.parquet"));
    assert_eq!(copy.len(), 3);
    assert_eq!(copy[1]["x"], serde_json::json!([2.5, 3.5]));
    assert_eq!(
        copy.iter()
            .map(|r| r["label"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 1, 0]
    );
    let rows = read_rows(&p.latest("i").join("data/data/dataset.parquet"));
    assert_eq!(rows.len(), 12);
    let mut per_class = [0; 3];
    for r in &rows {
        per_class[r["label"].as_u64().unwrap() as usize] += 1;
    }
    assert_eq!(per_class, [4, 4, 4], "stratified subsample");
}

#[test]
fn bad_data_files_are_named_with_what_was_expected() {
    let p = Project::new();
    write_cifar10(&p, 2);
    // Truncate one batch mid-record.
    let path = p.path().join("cifar/data_batch_3.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    write_idx(&p, 5, Some(0x0804));
    p.write(
        "bad.yaml",
        r#"name: bad
stages:
  cifar: {kind: load, params: {format: cifar10, path: cifar}}
  idx: {kind: load, params: {format: idx, path: idx}}
  empty: {kind: load, params: {format: cifar10, path: cifar, split: test, classes: [9]}}
  missing: {kind: load, params: {format: cifar10, path: nowhere}}
"#,
    );
    let run = p.cbound(&["run", "bad.yaml", "--progress", "lines"]);
    assert_eq!(run.code, 3, "{}", run.all());
    let e = &run.stderr;
    assert!(e.contains("data_batch_3.bin"), "{e}");
    assert!(
        e.contains("train-images-idx3-ubyte.gz") && e.to_lowercase().contains("magic"),
        "{e}"
    );
    assert!(e.contains("empty after selection"), "{e}");
    assert!(e.contains("nowhere"), "{e}");

    write_cifar10(&p, 2);
    p.write(
        "crop.yaml",
        "name: crop\nstages:\n  d: {kind: load, params: {format: cifar10, path: cifar}}\n  v: {kind: augment, inputs: d, params: {views: [[{op: random_resized_crop, size: 64}], []]}}\n",
    );
    let run = p.cbound(&["run", "crop.yaml", "--progress", "lines"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr.contains("64") && run.stderr.contains("32"),
        "{}",
        run.all()
    );
}

#[test]
fn real_fashion_mnist_when_installed() {
    let dir = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.join("train-images-idx3-ubyte.gz").exists() {
        eprintln!("skipped: Fashion-MNIST is not installed (scripts/setup.sh installs it)");
        return;
    }
    let p = Project::new();
    p.write("f.yaml", "name: f\nstages:\n  d: {kind: load, params: {format: fashion_mnist, split: test, limit: 500}}\n");
    let run = p.cbound(&["run", "f.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let rows = read_rows(&p.latest("f").join("results.parquet"));
    assert_eq!(rows[0]["metric.n"], 500.0);
    assert_eq!(rows[0]["metric.dim"], 784.0);
}

/// Serves `body` for every request on 127.0.0.1, at most `limit` requests, then stops.
fn serve(body: Vec<u8>, limit: usize) -> (String, std::thread::JoinHandle<usize>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        listener.set_nonblocking(false).unwrap();
        for stream in listener.incoming().take(limit) {
            let Ok(mut stream) = stream else { break };
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .ok();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            served += 1;
        }
        served
    });
    (url, handle)
}

#[test]
fn data_fetch_verifies_checksums_and_leaves_nothing_behind() {
    let p = Project::new();
    let unknown = p.cbound(&["data", "fetch", "imagenet"]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
    assert!(unknown.stderr.contains("cifar10"), "{}", unknown.all());
    // A mirror serving the wrong bytes: the MD5 check refuses them.
    let (url, server) = serve(b"not the CIFAR-10 archive".to_vec(), 1);
    let run = p.cbound(&["data", "fetch", "cifar10", "--dest", "ds", "--mirror", &url]);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stderr.to_lowercase().contains("md5") || run.stderr.contains("checksum"),
        "{}",
        run.all()
    );
    assert_eq!(server.join().unwrap(), 1);
    let left: Vec<_> = std::fs::read_dir(p.path().join("ds"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_missing_dataset_names_the_command_that_fetches_it() {
    let p = common::Project::new();
    p.write(
        "p.yaml",
        "name: m\nstages:\n  d: {kind: load, params: {format: cifar10, path: datasets/cifar-10-batches-bin}}\n",
    );
    let run = p.cbound(&["run", "p.yaml", "--progress", "none"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stderr
            .contains("run `cbound data fetch cifar10 --dest datasets`"),
        "{}",
        run.all()
    );
}

#[test]
fn fetching_an_installed_dataset_links_it_instead_of_downloading() {
    // Debian's dataset-fashion-mnist (scripts/setup.sh installs it where it can); no network
    // is needed, and a second fetch changes nothing.
    let installed = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    if !installed.join("train-images-idx3-ubyte.gz").is_file() {
        eprintln!("skipped: {} is not installed", installed.display());
        return;
    }
    let p = common::Project::new();
    for _ in 0..2 {
        let run = p.cbound(&[
            "data",
            "fetch",
            "fashion-mnist",
            "--dest",
            "ds",
            "--mirror",
            "http://127.0.0.1:9/",
        ]);
        // With a mirror asked for, the installed copy is not used: the dead mirror fails.
        assert_ne!(run.code, 0, "{}", run.all());
        let run = p.cbound(&["data", "fetch", "fashion-mnist", "--dest", "ds"]);
        assert_eq!(run.code, 0, "{}", run.all());
    }
    for name in ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        let link = p.path().join("ds/fashion-mnist").join(name);
        assert_eq!(std::fs::read_link(&link).unwrap(), installed.join(name));
    }
}

/// The `views:` block docs/augmentations.md gives for SimCLR, indented for `params:`.
fn simclr_views_from_docs(indent: &str) -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/augmentations.md"),
    )
    .unwrap();
    let block = doc
        .split("<!-- simclr-views:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- simclr-views:end -->").next())
        .expect("docs/augmentations.md marks its views block");
    block
        .lines()
        .filter(|l| !l.starts_with("```") && !l.trim().is_empty())
        .map(|l| format!("{indent}{l}\n"))
        .collect()
}

#[test]
fn synthetic_cifar_textures_load_and_take_simclr_views() {
    let p = Project::new();
    let make = |dir: &str, seed: &str| {
        p.cbound(&[
            "data",
            "synth-cifar",
            dir,
            "--train",
            "40",
            "--test",
            "10",
            "--seed",
            seed,
            "--classes",
            "4",
        ])
    };
    let out = make("tex", "3");
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("40 train"), "{}", out.all());
    // Same seed, same bytes; another seed, other bytes.
    assert_eq!(make("tex2", "3").code, 0);
    assert_eq!(make("tex3", "4").code, 0);
    let read = |d: &str| std::fs::read(p.path().join(d).join("data_batch_2.bin")).unwrap();
    assert_eq!(read("tex"), read("tex2"));
    assert_ne!(read("tex"), read("tex3"));
    // Too few images for the five training files is a usage error naming the rule.
    let bad = p.cbound(&["data", "synth-cifar", "few", "--train", "4", "--test", "1"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.all().contains("at least 5 training images"),
        "{}",
        bad.all()
    );

    p.write(
        "t.yaml",
        &format!(
            "name: t\nseed: 2\nstages:\n  data:\n    kind: load\n    params: {{format: cifar10, path: tex, split: train}}\n  test:\n    kind: load\n    params: {{format: cifar10, path: tex, split: test}}\n  views:\n    kind: augment\n    inputs: data\n    params:\n      epochs: 1\n{}",
            simclr_views_from_docs("      ")
        ),
    );
    let run = p.cbound(&["run", "t.yaml"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let data = read_rows(&p.latest("t").join("data/data/dataset.parquet"));
    assert_eq!(data.len(), 40);
    let mut counts = [0usize; 4];
    for r in &data {
        counts[r["label"].as_u64().unwrap() as usize] += 1;
    }
    assert_eq!(counts, [10; 4]);
    let test = read_rows(&p.latest("t").join("test/test/dataset.parquet"));
    assert_eq!(test.len(), 10);
    let views = read_rows(&p.latest("t").join("views/views/views.parquet"));
    assert_eq!(views.len(), 40);
    assert_eq!(views[0]["view_0"].as_array().unwrap().len(), 3072);
    assert_ne!(views[0]["view_0"], views[0]["view_1"]);
}
