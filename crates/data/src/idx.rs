//! The IDX format of MNIST and Fashion-MNIST: a big-endian magic number (two zero bytes, a
//! type byte, a dimension count), the dimensions as big-endian u32, then the values. Files
//! may be gzip-compressed; compression is detected from the gzip magic bytes rather than the
//! file name, because downloads are often decompressed without being renamed (or the
//! reverse).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;

use super::dataset::{Dataset, Features, Split};
use super::error::DataError;

/// u8 values, three dimensions (count, rows, columns).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// u8 values, one dimension (count).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

pub const FASHION_MNIST_LABEL_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// MNIST and Fashion-MNIST both have ten classes; `load_idx_dir` enforces it.
const MNIST_CLASSES: usize = 10;

/// An IDX image file's pixels, row-major per image.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    pub data: Vec<u8>,
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
}

/// A possibly gzip-compressed file, positioned at its first byte.
struct Source {
    path: PathBuf,
    reader: Box<dyn Read>,
    /// Bytes left to read, when the file is uncompressed and so its size is known up front.
    raw_remaining: Option<u64>,
}

impl Source {
    fn open(path: &Path) -> Result<Source, DataError> {
        let io_err = |e| DataError::io(path, e);
        let file = File::open(path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        let mut buffered = BufReader::with_capacity(1 << 16, file);
        let head = buffered.fill_buf().map_err(io_err)?;
        let gzipped = head.starts_with(&[0x1f, 0x8b]);
        let (reader, raw_remaining): (Box<dyn Read>, _) = if gzipped {
            (Box::new(MultiGzDecoder::new(buffered)), None)
        } else {
            (Box::new(buffered), Some(size))
        };
        Ok(Source {
            path: path.to_path_buf(),
            reader,
            raw_remaining,
        })
    }

    /// Fills as much of `buf` as the file holds; returns how much that was.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, DataError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DataError::io(&self.path, e)),
            }
        }
        if let Some(r) = &mut self.raw_remaining {
            *r = r.saturating_sub(filled as u64);
        }
        Ok(filled)
    }

    fn read_exact_or_truncated(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), DataError> {
        let got = self.read_up_to(buf)?;
        if got < buf.len() {
            return Err(DataError::Truncated {
                path: self.path.clone(),
                what,
                expected: buf.len() as u64,
                found: got as u64,
            });
        }
        Ok(())
    }

    /// Reads the magic number and dimensions, checking the magic against `expected`.
    fn header(&mut self, expected: u32, kind: &str) -> Result<Vec<usize>, DataError> {
        let mut magic = [0u8; 4];
        self.read_exact_or_truncated(&mut magic, "header")?;
        let found = u32::from_be_bytes(magic);
        if found != expected {
            let hint = match found {
                IDX_IMAGES_MAGIC => " (an IDX images file)",
                IDX_LABELS_MAGIC => " (an IDX labels file)",
                _ if magic[..2] != [0, 0] => " (not an IDX file)",
                _ => " (an IDX file of another type or rank)",
            };
            return Err(DataError::BadMagic {
                path: self.path.clone(),
                expected: format!("0x{expected:08x} ({kind})"),
                found: format!("0x{found:08x}{hint}"),
            });
        }
        let ndims = usize::from(magic[3]);
        let mut raw = vec![0u8; ndims * 4];
        self.read_exact_or_truncated(&mut raw, "header")?;
        Ok(raw
            .chunks_exact(4)
            .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
            .collect())
    }

    /// Reads exactly `expected` value bytes, rejecting short files and trailing data alike
    /// since either means the header does not describe the file.
    fn payload(&mut self, expected: usize) -> Result<Vec<u8>, DataError> {
        let expected64 = expected as u64;
        if let Some(rem) = self.raw_remaining {
            if rem < expected64 {
                return Err(DataError::Truncated {
                    path: self.path.clone(),
                    what: "data",
                    expected: expected64,
                    found: rem,
                });
            }
        }
        let mut buf = Vec::new();
        // A corrupt header can claim terabytes; capping the up-front reservation keeps such a
        // file from aborting the process before the short read is noticed.
        buf.try_reserve_exact(expected.min(1 << 30)).map_err(|_| {
            DataError::format(
                &self.path,
                "data size",
                "an allocatable size",
                format!("{expected} bytes"),
            )
        })?;
        let read = (&mut self.reader).take(expected64).read_to_end(&mut buf);
        match read {
            Ok(_) => {}
            // A cut-off gzip stream surfaces as an error rather than a short read.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(DataError::io(&self.path, e)),
        }
        if buf.len() < expected {
            return Err(DataError::Truncated {
                path: self.path.clone(),
                what: "data",
                expected: expected64,
                found: buf.len() as u64,
            });
        }
        if let Some(r) = &mut self.raw_remaining {
            *r -= expected64;
        }
        let mut probe = [0u8; 1];
        if self.read_up_to(&mut probe)? > 0 {
            return Err(DataError::format(
                &self.path,
                "file length",
                format!("{expected} data bytes after the header, as its dimensions say"),
                "more data after them",
            ));
        }
        Ok(buf)
    }
}

fn dims_product(path: &Path, dims: &[usize]) -> Result<usize, DataError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            DataError::format(
                path,
                "dimensions",
                "a size that fits in memory",
                format!("{dims:?}"),
            )
        })
}

/// Reads an IDX images file (raw or gzip).
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let mut src = Source::open(path)?;
    let dims = src.header(IDX_IMAGES_MAGIC, "u8 images, 3 dimensions")?;
    let total = dims_product(path, &dims)?;
    let data = src.payload(total)?;
    Ok(IdxImages {
        data,
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
    })
}

/// Reads an IDX labels file (raw or gzip).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut src = Source::open(path)?;
    let dims = src.header(IDX_LABELS_MAGIC, "u8 labels, 1 dimension")?;
    src.payload(dims[0])
}

/// An images file and its labels file as one single-channel image dataset. The class count
/// is taken as one more than the largest label, since IDX does not record it.
pub fn load_idx_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: images.count,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    if images.rows == 0 || images.cols == 0 {
        return Err(DataError::format(
            images_path,
            "image size",
            "at least 1x1",
            format!("{}x{}", images.rows, images.cols),
        ));
    }
    let num_classes = labels.iter().max().map(|&m| usize::from(m) + 1);
    Dataset::new(
        Features::Images {
            data: images.data,
            height: images.rows,
            width: images.cols,
            channels: 1,
        },
        labels.into_iter().map(u32::from).collect(),
        num_classes,
    )
}

/// Finds `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` in `dir` (the MNIST and
/// Fashion-MNIST naming) and loads it as a ten-class dataset.
pub fn load_idx_dir(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let stems = [
        format!("{prefix}-images-idx3-ubyte"),
        format!("{prefix}-labels-idx1-ubyte"),
    ];
    let found: Vec<Option<PathBuf>> = stems
        .iter()
        .map(|stem| {
            [stem.clone(), format!("{stem}.gz")]
                .into_iter()
                .map(|name| dir.join(name))
                .find(|p| p.is_file())
        })
        .collect();
    let (Some(images), Some(labels)) = (&found[0], &found[1]) else {
        return Err(DataError::MissingFiles {
            dir: dir.to_path_buf(),
            missing: stems
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(s, _)| format!("{s}[.gz]"))
                .collect(),
            expected: format!(
                "MNIST-style {split} files {}[.gz] and {}[.gz]",
                stems[0], stems[1]
            ),
        });
    };
    let mut ds = load_idx_pair(images, labels)?;
    if let Some((i, &l)) = ds
        .labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= MNIST_CLASSES)
    {
        return Err(DataError::LabelOutOfRange {
            path: labels.clone(),
            index: i,
            label: i64::from(l),
            limit: MNIST_CLASSES as u64,
        });
    }
    ds.num_classes = Some(MNIST_CLASSES);
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::fs;
    use std::io::Write;

    fn idx_bytes(magic: u32, dims: &[u32], values: &[u8]) -> Vec<u8> {
        let mut b = magic.to_be_bytes().to_vec();
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend_from_slice(values);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn pixels(n: usize) -> Vec<u8> {
        (0..n * 4 * 3).map(|i| (i * 37 % 256) as u8).collect()
    }

    fn write_pair(dir: &Path, prefix: &str, n: usize, compress: bool, labels: &[u8]) {
        let img = idx_bytes(IDX_IMAGES_MAGIC, &[n as u32, 4, 3], &pixels(n));
        let lab = idx_bytes(IDX_LABELS_MAGIC, &[labels.len() as u32], labels);
        let (img, lab, ext) = if compress {
            (gz(&img), gz(&lab), ".gz")
        } else {
            (img, lab, "")
        };
        fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
        fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lab).unwrap();
    }

    #[test]
    fn round_trip_raw_and_gz() {
        for compress in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            write_pair(tmp.path(), "train", 5, compress, &[0, 9, 3, 3, 1]);
            write_pair(tmp.path(), "t10k", 2, compress, &[4, 2]);
            let ds = load_idx_dir(tmp.path(), Split::Train).unwrap();
            assert_eq!(ds.len(), 5);
            assert_eq!(ds.dim(), 12);
            assert_eq!(ds.num_classes, Some(10));
            assert_eq!(ds.labels, vec![0, 9, 3, 3, 1]);
            assert_eq!(
                ds.features,
                Features::Images {
                    data: pixels(5),
                    height: 4,
                    width: 3,
                    channels: 1
                }
            );
            let test = load_idx_dir(tmp.path(), Split::Test).unwrap();
            assert_eq!(test.labels, vec![4, 2]);
        }
    }

    #[test]
    fn gzip_detected_by_content_not_name() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("images.bin");
        let lab = tmp.path().join("labels.gz");
        fs::write(
            &img,
            gz(&idx_bytes(IDX_IMAGES_MAGIC, &[2, 4, 3], &pixels(2))),
        )
        .unwrap();
        fs::write(&lab, idx_bytes(IDX_LABELS_MAGIC, &[2], &[1, 2])).unwrap();
        let ds = load_idx_pair(&img, &lab).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.num_classes, Some(3));
    }

    #[test]
    fn bad_inputs_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("imgs-idx3-ubyte");
        let lab = tmp.path().join("labs-idx1-ubyte");
        let good_img = idx_bytes(IDX_IMAGES_MAGIC, &[3, 4, 3], &pixels(3));
        fs::write(&img, &good_img).unwrap();

        // Wrong magic: a labels file where images are expected.
        fs::write(&lab, idx_bytes(IDX_LABELS_MAGIC, &[3], &[1, 2, 3])).unwrap();
        let err = load_idx_pair(&lab, &lab).unwrap_err();
        assert!(matches!(err, DataError::BadMagic { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("labs-idx1-ubyte")
                && msg.contains("0x00000803")
                && msg.contains("0x00000801"),
            "{msg}"
        );

        // Count mismatch names both files.
        fs::write(&lab, idx_bytes(IDX_LABELS_MAGIC, &[2], &[1, 2])).unwrap();
        let err = load_idx_pair(&img, &lab).unwrap_err();
        assert!(matches!(
            err,
            DataError::CountMismatch {
                images: 3,
                labels: 2,
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("imgs-idx3-ubyte") && msg.contains("labs-idx1-ubyte"));

        // Truncated raw and gz payloads.
        fs::write(&img, &good_img[..good_img.len() - 5]).unwrap();
        let err = read_idx_images(&img).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 36,
                    found: 31,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("imgs-idx3-ubyte"));
        fs::write(&img, gz(&good_img[..good_img.len() - 5])).unwrap();
        let err = read_idx_images(&img).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 36,
                    found: 31,
                    ..
                }
            ),
            "{err}"
        );
        // A gzip stream cut mid-way is reported against the file too.
        let whole = gz(&good_img);
        fs::write(&img, &whole[..whole.len() / 2]).unwrap();
        let err = read_idx_images(&img).unwrap_err();
        assert!(err.to_string().contains("imgs-idx3-ubyte"), "{err}");

        // Truncated header.
        fs::write(&img, &good_img[..6]).unwrap();
        let err = read_idx_images(&img).unwrap_err();
        assert!(matches!(err, DataError::Truncated { what: "header", .. }));

        // Trailing bytes (raw and gz).
        let mut long = good_img.clone();
        long.push(0);
        fs::write(&img, &long).unwrap();
        assert!(matches!(
            read_idx_images(&img),
            Err(DataError::Format { .. })
        ));
        fs::write(&img, gz(&long)).unwrap();
        assert!(matches!(
            read_idx_images(&img),
            Err(DataError::Format { .. })
        ));

        // Absurd dimensions fail cleanly rather than allocating.
        fs::write(
            &img,
            idx_bytes(IDX_IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[1]),
        )
        .unwrap();
        assert!(read_idx_images(&img).is_err());
        fs::write(
            &img,
            gz(&idx_bytes(IDX_IMAGES_MAGIC, &[60000, 280, 280], &[1])),
        )
        .unwrap();
        assert!(matches!(
            read_idx_images(&img),
            Err(DataError::Truncated { .. })
        ));

        // Zero-sized images pass the reader but cannot form a dataset.
        fs::write(&img, idx_bytes(IDX_IMAGES_MAGIC, &[3, 0, 28], &[])).unwrap();
        fs::write(&lab, idx_bytes(IDX_LABELS_MAGIC, &[3], &[1, 2, 3])).unwrap();
        let err = load_idx_pair(&img, &lab).unwrap_err();
        assert!(
            err.to_string().contains("imgs-idx3-ubyte") && err.to_string().contains("0x28"),
            "{err}"
        );

        // Missing file.
        let err = read_idx_images(&tmp.path().join("nope")).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }) && err.to_string().contains("nope"));
    }

    #[test]
    fn dir_loader_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load_idx_dir(tmp.path(), Split::Test).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("t10k-images-idx3-ubyte") && msg.contains("t10k-labels-idx1-ubyte"),
            "{msg}"
        );
        write_pair(tmp.path(), "t10k", 2, false, &[4, 12]);
        let err = load_idx_dir(tmp.path(), Split::Test).unwrap_err();
        assert!(matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 12,
                limit: 10,
                ..
            }
        ));
        assert!(err.to_string().contains("t10k-labels-idx1-ubyte"));
    }

    #[test]
    fn real_fashion_mnist_smoke() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if !dir.join("train-images-idx3-ubyte.gz").is_file() {
            eprintln!("skipped: {} not found", dir.display());
            return;
        }
        let ds = load_idx_dir(dir, Split::Train).unwrap();
        assert_eq!(ds.len(), 60_000);
        assert_eq!(ds.sample_shape().numel(), 28 * 28);
        assert!(matches!(
            ds.features,
            Features::Images {
                height: 28,
                width: 28,
                channels: 1,
                ..
            }
        ));
        assert!(ds.labels.iter().all(|&l| l < 10));
        // Fashion-MNIST is balanced: 6000 per class.
        assert_eq!(ds.class_counts(), vec![6000; 10]);
    }
}
