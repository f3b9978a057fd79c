//! Malformed-data fuzzing: byte-mutated and truncated copies of a valid Parquet file are fed
//! to `cbound mi` and to the `load` stage. None may panic (exit 101, "panicked"), and every
//! error must name the file. CI runs 100 seeded mutations per reader; `CBOUND_FUZZ=full` 1,000.

mod common;
use common::Project;
use rand::{Rng, SeedableRng};

fn mutations(valid: &[u8], count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let mut bytes = valid.to_vec();
            match i % 4 {
                // Truncation anywhere.
                0 => bytes.truncate(rng.random_range(0..valid.len())),
                // A few random bytes overwritten.
                1 => {
                    for _ in 0..rng.random_range(1..8) {
                        let at = rng.random_range(0..bytes.len());
                        bytes[at] = rng.random();
                    }
                }
                // One bit flipped in the footer (metadata), where most decoders look first.
                2 => {
                    let at = bytes.len() - 1 - rng.random_range(0..valid.len().min(400));
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
                // A run of bytes zeroed in the data pages.
                _ => {
                    let start = rng.random_range(4..bytes.len() / 2);
                    let end = (start + rng.random_range(1..64)).min(bytes.len());
                    bytes[start..end].iter_mut().for_each(|b| *b = 0);
                }
            }
            bytes
        })
        .collect()
}

#[test]
fn mutated_parquet_never_panics_and_errors_name_the_file() {
    let p = Project::new();
    p.write(
        "g.yaml",
        "name: g\nstages:\n  d:\n    kind: synthetic\n    params: {task: dense, dim: 2, n: 300}\n",
    );
    let r = p.cbound(&["run", "g.yaml", "--progress", "none"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let valid = std::fs::read(p.latest("g").join("d/d/samples.parquet")).unwrap();
    let full = std::env::var("CBOUND_FUZZ").is_ok_and(|v| v == "full");
    let count = if full { 1000 } else { 100 };
    let (mut errors, mut accepted) = (0, 0);
    for (i, bytes) in mutations(&valid, count, 7).into_iter().enumerate() {
        let name = format!("m{i}.parquet");
        std::fs::write(p.path().join(&name), &bytes).unwrap();
        let mi = p.cbound(&["mi", &name, "--x", "x*", "--y", "y*", "-e", "gaussian"]);
        assert_ne!(mi.code, 101, "mutation {i}: {}", mi.all());
        assert!(!mi.all().contains("panicked"), "mutation {i}: {}", mi.all());
        // A mutation inside the data pages can leave a readable file with odd values, which
        // an estimator then declines (reported per estimator): that is not a read error.
        if mi.code == 0 || mi.stderr.contains("could not run on this input") {
            accepted += 1;
        } else {
            errors += 1;
            assert!(
                mi.stderr.contains(&name),
                "mutation {i}: error without the file: {}",
                mi.all()
            );
        }
    }
    eprintln!(
        "malformed Parquet: {count} files to `cbound mi`, {errors} read errors naming the file, {accepted} still readable, 0 panics"
    );
    assert!(errors > count / 2, "{errors} errors of {count}");
}

// ---- The other `load` formats: NPY, NPZ, IDX (raw and gz), CIFAR-10/100 binary, CSV. ----

fn fuzz_count() -> usize {
    if std::env::var("CBOUND_FUZZ").is_ok_and(|v| v == "full") {
        1000
    } else {
        100
    }
}

/// Mutations of one file: truncation, random bytes, bytes of the header (its first
/// `header` bytes) overwritten, a header field (offset, width) set to a huge or odd value,
/// and a run of zeroed bytes.
fn mutate(valid: &[u8], header: usize, fields: &[(usize, usize)], rng: &mut impl Rng) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    let header = header.clamp(1, valid.len());
    match rng.random_range(0..5) {
        0 => bytes.truncate(rng.random_range(0..valid.len())),
        1 => {
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
        }
        2 => {
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..header);
                bytes[at] = rng.random();
            }
        }
        3 if !fields.is_empty() => {
            let (at, width) = fields[rng.random_range(0..fields.len())];
            let value: u64 = match rng.random_range(0..5) {
                0 => u64::MAX,
                1 => 0,
                2 => 1 << rng.random_range(20..63),
                3 => rng.random(),
                _ => u64::from(u32::MAX),
            };
            let be = value.to_be_bytes();
            let le = value.to_le_bytes();
            let src = if rng.random() {
                &be[8 - width..]
            } else {
                &le[..width]
            };
            bytes[at..at + width].copy_from_slice(src);
        }
        _ => {
            let start = rng.random_range(0..bytes.len());
            let end = (start + rng.random_range(1..64)).min(bytes.len());
            bytes[start..end].iter_mut().for_each(|b| *b = 0);
        }
    }
    bytes
}

/// NPY: a well-formed header declaring a huge or odd shape (so the reader's shape checks,
/// not its header parser, meet it), else [`mutate`].
fn mutate_npy(valid: &[u8], header: usize, descr: &str, rng: &mut impl Rng) -> Vec<u8> {
    if rng.random_range(0..3) > 0 {
        return mutate(valid, header, &[], rng);
    }
    let huge = [
        "99999999999999999999",
        "4611686018427387904",
        "0",
        "18446744073709551615",
        "1000000000",
    ];
    let payload = &valid[header..];
    if rng.random_range(0..3) == 0 {
        // No samples, and a per-sample size that overflows: the whole shape's product is 0.
        return npy_with_shape(descr, "(0, 4611686018427387904, 4611686018427387904)", &[]);
    }
    let dims: Vec<&str> = (0..rng.random_range(1..4))
        .map(|_| huge[rng.random_range(0..huge.len())])
        .collect();
    let keep = rng.random_range(0..=payload.len());
    npy_with_shape(descr, &format!("({},)", dims.join(", ")), &payload[..keep])
}

fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    npy_with_shape(descr, &shape, data)
}

fn npy_with_shape(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn valid_npy_pair() -> (Vec<u8>, Vec<u8>) {
    let x: Vec<u8> = (0..40 * 3)
        .flat_map(|i| (i as f32 * 0.25 - 7.0).to_le_bytes())
        .collect();
    let y: Vec<u8> = (0..40u8).map(|i| i % 4).collect();
    (npy_bytes("<f4", &[40, 3], &x), npy_bytes("|u1", &[40], &y))
}

fn npz_bytes(members: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in members {
        w.start_file(*name, options).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn cifar_records(n: usize, label_bytes: usize, classes: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        for b in 0..label_bytes {
            out.push((i as u8 + b as u8) % classes);
        }
        out.extend((0..3072).map(|j| ((i * 7 + j) % 256) as u8));
    }
    out
}

/// One file of an input: its name, valid bytes, header length, header fields (offset,
/// width) to corrupt, and for an NPY file its dtype (its shape is mutated in the text header).
type InputFile = (
    String,
    Vec<u8>,
    usize,
    Vec<(usize, usize)>,
    Option<&'static str>,
);

/// One valid input: its files (relative names and bytes), the pipeline's `params` (with
/// `{P}` for the mutation's file or directory), and per file, how to mutate it.
struct Case {
    format: &'static str,
    /// Whether the input is a directory (`{P}` names it) or one file (`{P}` names the
    /// mutated file; other files keep fixed names).
    dir: bool,
    files: Vec<InputFile>,
    params: String,
}

fn cases() -> Vec<Case> {
    let (x, y) = valid_npy_pair();
    let x_header = x.len() - 40 * 3 * 4;
    let y_header = y.len() - 40;
    let idx_images = idx_bytes(
        0x803,
        &[30, 4, 4],
        &(0..30 * 16).map(|i| i as u8).collect::<Vec<_>>(),
    );
    let idx_labels = idx_bytes(0x801, &[30], &(0..30u8).map(|i| i % 3).collect::<Vec<_>>());
    let idx_fields = vec![(0, 4), (4, 4), (8, 4), (12, 4)];
    let names10 = (0..10).map(|i| format!("class{i}\n")).collect::<String>();
    let names100 = (0..100).map(|i| format!("fine{i}\n")).collect::<String>();
    let names20 = (0..20).map(|i| format!("coarse{i}\n")).collect::<String>();
    let mut cifar10: Vec<InputFile> = (1..=5)
        .map(|b| {
            (
                format!("data_batch_{b}.bin"),
                cifar_records(2, 1, 10),
                1,
                vec![(0, 1)],
                None,
            )
        })
        .collect();
    cifar10.push((
        "batches.meta.txt".into(),
        names10.into_bytes(),
        16,
        vec![],
        None,
    ));
    vec![
        Case {
            format: "npy",
            dir: false,
            files: vec![
                ("x.npy".into(), x.clone(), x_header, vec![], Some("<f4")),
                ("y.npy".into(), y.clone(), y_header, vec![], Some("|u1")),
            ],
            params: "{format: npy, path: {X}, labels_path: {Y}}".into(),
        },
        Case {
            format: "npz (stored)",
            dir: false,
            files: vec![(
                "a.npz".into(),
                npz_bytes(&[("x.npy", &x), ("y.npy", &y)], false),
                200,
                vec![],
                None,
            )],
            params: "{format: npz, path: {X}}".into(),
        },
        Case {
            format: "npz (deflated)",
            dir: false,
            files: vec![(
                "a.npz".into(),
                npz_bytes(&[("x.npy", &x), ("y.npy", &y)], true),
                200,
                vec![],
                None,
            )],
            params: "{format: npz, path: {X}}".into(),
        },
        Case {
            format: "idx (raw)",
            dir: true,
            files: vec![
                (
                    "train-images-idx3-ubyte".into(),
                    idx_images.clone(),
                    16,
                    idx_fields.clone(),
                    None,
                ),
                (
                    "train-labels-idx1-ubyte".into(),
                    idx_labels.clone(),
                    8,
                    idx_fields[..2].to_vec(),
                    None,
                ),
            ],
            params: "{format: idx, path: {P}}".into(),
        },
        Case {
            format: "idx (gz)",
            dir: true,
            files: vec![
                (
                    "train-images-idx3-ubyte.gz".into(),
                    gzip(&idx_images),
                    20,
                    vec![(4, 4)],
                    None,
                ),
                (
                    "train-labels-idx1-ubyte.gz".into(),
                    gzip(&idx_labels),
                    20,
                    vec![(4, 4)],
                    None,
                ),
            ],
            params: "{format: idx, path: {P}}".into(),
        },
        Case {
            format: "cifar10",
            dir: true,
            files: cifar10,
            params: "{format: cifar10, path: {P}}".into(),
        },
        Case {
            format: "cifar100",
            dir: true,
            files: vec![
                (
                    "train.bin".into(),
                    cifar_records(6, 2, 20),
                    2,
                    vec![(0, 2), (1, 1)],
                    None,
                ),
                (
                    "fine_label_names.txt".into(),
                    names100.into_bytes(),
                    16,
                    vec![],
                    None,
                ),
                (
                    "coarse_label_names.txt".into(),
                    names20.into_bytes(),
                    16,
                    vec![],
                    None,
                ),
            ],
            params: "{format: cifar100, path: {P}}".into(),
        },
        Case {
            format: "csv",
            dir: false,
            files: vec![(
                "t.csv".into(),
                (0..30)
                    .map(|i| format!("{},{}.5,{}\n", i, i * 2, ["a", "b", "c"][i % 3]))
                    .fold("x0,x1,label\n".to_string(), |a, l| a + &l)
                    .into_bytes(),
                12,
                vec![],
                None,
            )],
            params: "{format: parquet, path: {X}, feature_columns: 'x*', label_column: label}"
                .into(),
        },
    ]
}

#[test]
fn mutated_load_inputs_never_panic_and_errors_name_the_file() {
    let p = Project::new();
    let count = fuzz_count();
    let mut report = Vec::new();
    for (c, case) in cases().into_iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + c as u64);
        let (mut errors, mut accepted) = (0, 0);
        for i in 0..count {
            // Which file of the input to mutate; the others stay valid.
            let target = rng.random_range(0..case.files.len());
            let dir = format!("c{c}m{i}");
            std::fs::create_dir_all(p.path().join(&dir)).unwrap();
            let mut names = Vec::new();
            for (f, (name, bytes, header, fields, text)) in case.files.iter().enumerate() {
                let data = if f != target {
                    bytes.clone()
                } else if let Some(descr) = text {
                    mutate_npy(bytes, *header, descr, &mut rng)
                } else {
                    mutate(bytes, *header, fields, &mut rng)
                };
                let rel = format!("{dir}/{name}");
                std::fs::write(p.path().join(&rel), data).unwrap();
                names.push(rel);
            }
            let params = case
                .params
                .replace("{P}", &dir)
                .replace("{X}", &names[0])
                .replace("{Y}", names.get(1).unwrap_or(&names[0]));
            p.write(
                "l.yaml",
                &format!("name: l\nstages:\n  d:\n    kind: load\n    params: {params}\n"),
            );
            let r = p.cbound(&["run", "l.yaml", "--progress", "none"]);
            let what = format!("{} mutation {i} of {}", case.format, names[target]);
            assert_ne!(r.code, 101, "{what}: {}", r.all());
            assert!(!r.all().contains("panicked"), "{what}: {}", r.all());
            if r.code == 0 {
                accepted += 1;
            } else {
                errors += 1;
                let named = if case.dir { &dir } else { &names[target] };
                assert!(
                    r.stderr.contains(named.as_str()),
                    "{what}: error without the file: {}",
                    r.all()
                );
            }
            std::fs::remove_dir_all(p.path().join(&dir)).unwrap();
        }
        report.push(format!(
            "malformed {}: {count} files to the `load` stage, {errors} clean errors naming the file, {accepted} accepted, 0 panics",
            case.format
        ));
        assert!(errors > 0, "{}: no mutation was refused", case.format);
    }
    for line in report {
        eprintln!("{line}");
    }
}

/// Regressions: defects of the `load` stage that did not need a mutation to show.
#[test]
fn load_refuses_empty_tables_and_non_finite_features_with_their_place() {
    let p = Project::new();
    let cases = [
        // A zero-row table said "no column matches x0 (columns: )".
        ("empty.csv", "x0,x1,label\n", "the table has no rows"),
        // Above the float32 range became inf silently.
        (
            "big.csv",
            "x0,x1,label\n1,2,a\n3,1e39,b\n",
            "column `x1` row 1 holds 1000000000000000000000000000000000000000",
        ),
        // NaN and inf passed `load`; the run exited 0 with NaN estimates later.
        (
            "nan.csv",
            "x0,x1,label\n1,2,a\nnan,3,b\n",
            "column `x0` row 1 holds NaN",
        ),
        (
            "inf.csv",
            "x0,x1,label\n1,2,a\n4,-inf,b\n",
            "column `x1` row 1 holds -inf",
        ),
    ];
    for (name, text, expected) in cases {
        p.write(name, text);
        p.write(
            "l.yaml",
            &format!("name: l\nstages:\n  d:\n    kind: load\n    params: {{format: parquet, path: {name}, feature_columns: 'x*', label_column: label}}\n"),
        );
        let r = p.cbound(&["run", "l.yaml", "--progress", "none"]);
        assert_ne!(r.code, 0, "{name}: {}", r.all());
        assert_ne!(r.code, 101, "{name}: {}", r.all());
        assert!(
            r.stderr.contains(name) && r.stderr.contains(expected),
            "{name}: expected `{expected}`: {}",
            r.all()
        );
    }
    // The same for NPY features.
    let x: Vec<u8> = [1.0f32, 2.0, f32::NAN, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(p.path().join("x.npy"), npy_bytes("<f4", &[2, 2], &x)).unwrap();
    p.write(
        "l.yaml",
        "name: l\nstages:\n  d:\n    kind: load\n    params: {format: npy, path: x.npy}\n",
    );
    let r = p.cbound(&["run", "l.yaml", "--progress", "none"]);
    assert!(
        r.code != 0
            && r.code != 101
            && r.stderr.contains("x.npy")
            && r.stderr.contains("sample 1, feature 0"),
        "{}",
        r.all()
    );
}
