//! The one error type of the data module. Every variant that comes from a file names that
//! file, and says what was expected and what was found, so a user can fix the input without
//! reading the reader's source.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: missing {}; expected {expected}", dir.display(), missing.join(", "))]
    MissingFiles {
        dir: PathBuf,
        missing: Vec<String>,
        expected: String,
    },

    #[error(
        "{}: size {size} bytes is not a multiple of the record size {record} bytes",
        path.display()
    )]
    RecordSize {
        path: PathBuf,
        size: u64,
        record: usize,
    },

    #[error(
        "{}: sample {index}: label {label} out of range, expected 0..{limit}",
        path.display()
    )]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: i64,
        limit: u64,
    },

    #[error("{}: bad magic number: expected {expected}, found {found}", path.display())]
    BadMagic {
        path: PathBuf,
        expected: String,
        found: String,
    },

    #[error("{}: truncated {what}: expected {expected} bytes, found {found}", path.display())]
    Truncated {
        path: PathBuf,
        what: &'static str,
        expected: u64,
        found: u64,
    },

    #[error("{}: {what}: expected {expected}, found {found}", path.display())]
    Format {
        path: PathBuf,
        what: String,
        expected: String,
        found: String,
    },

    #[error(
        "{} holds {images} samples but {} holds {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },

    #[error("{}: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },

    #[error("invalid {op}: {reason}")]
    InvalidOp { op: &'static str, reason: String },

    #[error("{0}")]
    InvalidArgument(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        DataError::Format {
            path: path.into(),
            what: what.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}
