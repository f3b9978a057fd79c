//! CIFAR-10 and CIFAR-100 in their "binary version" layout (the `*-binary.tar.gz`
//! downloads): fixed-size records of label byte(s) followed by 3072 pixel bytes, already
//! channel-major (1024 red, 1024 green, 1024 blue), so records copy straight into
//! [`Features::Images`].

use std::fs;
use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Features, Split};
use super::error::DataError;

pub const CIFAR_CHANNELS: usize = 3;
pub const CIFAR_SIDE: usize = 32;
pub const CIFAR_IMAGE_BYTES: usize = CIFAR_CHANNELS * CIFAR_SIDE * CIFAR_SIDE;

pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
pub const CIFAR10_META_FILE: &str = "batches.meta.txt";
/// The folder the official archive extracts to; accepted below the given directory too.
pub const CIFAR10_SUBDIR: &str = "cifar-10-batches-bin";

pub const CIFAR100_TRAIN_FILE: &str = "train.bin";
pub const CIFAR100_TEST_FILE: &str = "test.bin";
pub const CIFAR100_FINE_NAMES_FILE: &str = "fine_label_names.txt";
pub const CIFAR100_COARSE_NAMES_FILE: &str = "coarse_label_names.txt";
pub const CIFAR100_SUBDIR: &str = "cifar-100-binary";

/// Which of CIFAR-100's two labels (record bytes 0 and 1) becomes the class.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Cifar100Labels {
    /// The 100 classes.
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// Reads CIFAR-10 from `dir` (or from `dir/cifar-10-batches-bin`). Sample ids count across
/// the five training batches in order, so id 10000 is the first record of
/// `data_batch_2.bin`.
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let files: Vec<&str> = match split {
        Split::Train => CIFAR10_TRAIN_FILES.to_vec(),
        Split::Test => vec![CIFAR10_TEST_FILE],
    };
    let expected = format!(
        "CIFAR-10 binary {split} files ({}) in the directory or in its {CIFAR10_SUBDIR}/",
        files.join(", ")
    );
    let root = resolve_dir(dir, CIFAR10_SUBDIR, &files, &expected)?;
    let layout = RecordLayout {
        label_bytes: 1,
        label_offset: 0,
        classes: 10,
    };
    let mut ds = read_batches(&root, &files, layout)?;
    ds.label_names = read_label_names(&root.join(CIFAR10_META_FILE), 10)?;
    Ok(ds)
}

/// Reads CIFAR-100 from `dir` (or from `dir/cifar-100-binary`), labelled by its fine (100)
/// or coarse (20) classes.
pub fn load_cifar100(
    dir: &Path,
    split: Split,
    labels: Cifar100Labels,
) -> Result<Dataset, DataError> {
    let file = match split {
        Split::Train => CIFAR100_TRAIN_FILE,
        Split::Test => CIFAR100_TEST_FILE,
    };
    let expected = format!(
        "CIFAR-100 binary {split} file {file} in the directory or in its {CIFAR100_SUBDIR}/"
    );
    let root = resolve_dir(dir, CIFAR100_SUBDIR, &[file], &expected)?;
    let (label_offset, classes, names_file) = match labels {
        Cifar100Labels::Coarse => (0, 20, CIFAR100_COARSE_NAMES_FILE),
        Cifar100Labels::Fine => (1, 100, CIFAR100_FINE_NAMES_FILE),
    };
    let layout = RecordLayout {
        label_bytes: 2,
        label_offset,
        classes,
    };
    let mut ds = read_batches(&root, &[file], layout)?;
    ds.label_names = read_label_names(&root.join(names_file), classes)?;
    Ok(ds)
}

#[derive(Clone, Copy)]
struct RecordLayout {
    label_bytes: usize,
    /// Which of the label bytes is the class.
    label_offset: usize,
    classes: usize,
}

impl RecordLayout {
    fn record_bytes(self) -> usize {
        self.label_bytes + CIFAR_IMAGE_BYTES
    }
}

/// `dir` itself when it holds every file, else the archive's own folder below it; the error
/// lists what is missing from `dir` because that is where the user pointed.
fn resolve_dir(
    dir: &Path,
    subdir: &str,
    files: &[&str],
    expected: &str,
) -> Result<PathBuf, DataError> {
    let missing_in = |d: &Path| -> Vec<String> {
        files
            .iter()
            .filter(|f| !d.join(f).is_file())
            .map(|f| f.to_string())
            .collect()
    };
    let missing = missing_in(dir);
    if missing.is_empty() {
        return Ok(dir.to_path_buf());
    }
    let nested = dir.join(subdir);
    if nested.is_dir() {
        let nested_missing = missing_in(&nested);
        if nested_missing.is_empty() {
            return Ok(nested);
        }
        return Err(DataError::MissingFiles {
            dir: nested,
            missing: nested_missing,
            expected: expected.to_string(),
        });
    }
    Err(DataError::MissingFiles {
        dir: dir.to_path_buf(),
        missing,
        expected: expected.to_string(),
    })
}

fn read_batches(dir: &Path, files: &[&str], layout: RecordLayout) -> Result<Dataset, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in files {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        append_records(&path, &bytes, layout, &mut pixels, &mut labels)?;
    }
    Dataset::new(
        Features::Images {
            data: pixels,
            height: CIFAR_SIDE,
            width: CIFAR_SIDE,
            channels: CIFAR_CHANNELS,
        },
        labels,
        Some(layout.classes),
    )
}

fn append_records(
    path: &Path,
    bytes: &[u8],
    layout: RecordLayout,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<(), DataError> {
    let record = layout.record_bytes();
    if bytes.is_empty() {
        return Err(DataError::format(
            path,
            "record count",
            format!("at least one {record}-byte record"),
            "an empty file",
        ));
    }
    if !bytes.len().is_multiple_of(record) {
        return Err(DataError::RecordSize {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            record,
        });
    }
    let n = bytes.len() / record;
    pixels.reserve(n * CIFAR_IMAGE_BYTES);
    labels.reserve(n);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[layout.label_offset];
        if usize::from(label) >= layout.classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index: i,
                label: i64::from(label),
                limit: layout.classes as u64,
            });
        }
        labels.push(u32::from(label));
        pixels.extend_from_slice(&rec[layout.label_bytes..]);
    }
    Ok(())
}

/// Label names, one per non-blank line; `None` when the optional file is absent. A present
/// file with the wrong number of names is an error rather than silently ignored, because it
/// means the directory mixes files from different datasets.
fn read_label_names(path: &Path, classes: usize) -> Result<Option<Vec<String>>, DataError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        DataError::format(
            path,
            "encoding",
            "UTF-8 text",
            format!("invalid byte at offset {}", e.utf8_error().valid_up_to()),
        )
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != classes {
        return Err(DataError::format(
            path,
            "label names",
            format!("{classes} non-blank lines"),
            names.len().to_string(),
        ));
    }
    Ok(Some(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose pixels encode (sample, position) so misplaced bytes are caught.
    fn record(label_bytes: &[u8], sample: usize) -> Vec<u8> {
        let mut r = label_bytes.to_vec();
        r.extend((0..CIFAR_IMAGE_BYTES).map(|p| ((sample * 7 + p * 13) % 251) as u8));
        r
    }

    fn write_cifar10(dir: &Path, per_file: usize) {
        let mut sample = 0;
        for name in CIFAR10_TRAIN_FILES.iter().chain([&CIFAR10_TEST_FILE]) {
            let mut bytes = Vec::new();
            for _ in 0..per_file {
                bytes.extend(record(&[(sample % 10) as u8], sample));
                sample += 1;
            }
            fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn cifar10_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar10(tmp.path(), 3);
        let names = [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ];
        fs::write(
            tmp.path().join(CIFAR10_META_FILE),
            names.join("\n") + "\n\n",
        )
        .unwrap();
        let train = load_cifar10(tmp.path(), Split::Train).unwrap();
        assert_eq!(train.len(), 15);
        assert_eq!(train.dim(), 3072);
        assert_eq!(train.num_classes, Some(10));
        assert_eq!(train.ids, (0..15).collect::<Vec<u64>>());
        assert_eq!(train.label_names.as_ref().unwrap()[9], "truck");
        for i in 0..15 {
            assert_eq!(train.labels[i], (i % 10) as u32);
            let Features::Images { data, .. } = &train.features else {
                panic!("images expected")
            };
            assert_eq!(&data[i * 3072..(i + 1) * 3072], &record(&[0], i)[1..]);
        }
        let test = load_cifar10(tmp.path(), Split::Test).unwrap();
        assert_eq!(test.len(), 3);
        assert_eq!(test.labels, vec![5, 6, 7]);
    }

    #[test]
    fn cifar10_nested_directory_and_missing_files() {
        let tmp = tempfile::tempdir().unwrap();
        let nested = tmp.path().join(CIFAR10_SUBDIR);
        fs::create_dir(&nested).unwrap();
        write_cifar10(&nested, 1);
        assert_eq!(load_cifar10(tmp.path(), Split::Train).unwrap().len(), 5);

        fs::remove_file(nested.join("data_batch_3.bin")).unwrap();
        let err = load_cifar10(tmp.path(), Split::Train).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingFiles { missing, .. } if missing == &["data_batch_3.bin"])
        );
        let msg = err.to_string();
        assert!(
            msg.contains("data_batch_3.bin") && msg.contains("data_batch_1.bin"),
            "{msg}"
        );

        let empty = tempfile::tempdir().unwrap();
        let msg = load_cifar10(empty.path(), Split::Test)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("test_batch.bin"), "{msg}");
    }

    #[test]
    fn cifar10_bad_size_and_label() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CIFAR10_TEST_FILE);
        let mut bytes = record(&[1], 0);
        bytes.extend(&record(&[2], 1)[..100]);
        fs::write(&path, &bytes).unwrap();
        let err = load_cifar10(tmp.path(), Split::Test).unwrap_err();
        assert!(matches!(
            err,
            DataError::RecordSize {
                size: 3173,
                record: 3073,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("test_batch.bin") && msg.contains("3173") && msg.contains("3073"));

        let mut bytes = record(&[1], 0);
        bytes.extend(record(&[10], 1));
        fs::write(&path, &bytes).unwrap();
        let err = load_cifar10(tmp.path(), Split::Test).unwrap_err();
        assert!(matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 10,
                limit: 10,
                ..
            }
        ));
        assert!(err.to_string().contains("test_batch.bin"));

        fs::write(&path, b"").unwrap();
        let err = load_cifar10(tmp.path(), Split::Test).unwrap_err();
        assert!(err.to_string().contains("test_batch.bin"), "{err}");

        fs::write(&path, record(&[1], 0)).unwrap();
        fs::write(tmp.path().join(CIFAR10_META_FILE), "cat\ndog\n").unwrap();
        let err = load_cifar10(tmp.path(), Split::Test).unwrap_err();
        assert!(err.to_string().contains(CIFAR10_META_FILE), "{err}");
    }

    #[test]
    fn cifar100_fine_and_coarse() {
        let tmp = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for i in 0..4 {
            bytes.extend(record(&[(i % 20) as u8, (i * 30 % 100) as u8], i));
        }
        fs::write(tmp.path().join(CIFAR100_TRAIN_FILE), &bytes).unwrap();
        let coarse: Vec<String> = (0..20).map(|i| format!("super{i}")).collect();
        fs::write(
            tmp.path().join(CIFAR100_COARSE_NAMES_FILE),
            coarse.join("\n"),
        )
        .unwrap();

        let fine = load_cifar100(tmp.path(), Split::Train, Cifar100Labels::Fine).unwrap();
        assert_eq!(fine.labels, vec![0, 30, 60, 90]);
        assert_eq!(fine.num_classes, Some(100));
        assert_eq!(fine.label_names, None);
        let Features::Images { data, .. } = &fine.features else {
            panic!("images expected")
        };
        assert_eq!(&data[3072..6144], &record(&[0, 0], 1)[2..]);

        let c = load_cifar100(tmp.path(), Split::Train, Cifar100Labels::Coarse).unwrap();
        assert_eq!(c.labels, vec![0, 1, 2, 3]);
        assert_eq!(c.num_classes, Some(20));
        assert_eq!(c.label_names.as_ref().unwrap()[3], "super3");

        let err = load_cifar100(tmp.path(), Split::Test, Cifar100Labels::Fine).unwrap_err();
        assert!(err.to_string().contains("test.bin"), "{err}");

        fs::write(tmp.path().join(CIFAR100_TRAIN_FILE), record(&[20, 5], 0)).unwrap();
        let err = load_cifar100(tmp.path(), Split::Train, Cifar100Labels::Coarse).unwrap_err();
        assert!(matches!(
            err,
            DataError::LabelOutOfRange {
                label: 20,
                limit: 20,
                ..
            }
        ));
        fs::write(
            tmp.path().join(CIFAR100_TRAIN_FILE),
            &record(&[0, 5], 0)[..3073],
        )
        .unwrap();
        let err = load_cifar100(tmp.path(), Split::Train, Cifar100Labels::Fine).unwrap_err();
        assert!(matches!(err, DataError::RecordSize { record: 3074, .. }));
        assert!(err.to_string().contains("train.bin"));
    }
}
