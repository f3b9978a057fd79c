//! Data: dataset readers (CIFAR binary, IDX, NPY/NPZ), the in-memory [`Dataset`] they all
//! produce, downloads of the official archives, the per-view augmentations that turn a dataset into contrastive batches,
//! ground-truth generators with known information quantities, and numeric column selection
//! from tables.
//!
//! Readers validate everything a file's content controls and report failures as
//! [`DataError`] values naming the file, because datasets arrive from downloads that can be
//! truncated, mislabelled or in a neighbouring format.

pub mod augment;
pub mod beyond_normal;
pub mod channel_task;
pub mod cifar;
pub mod dataset;
pub mod error;
pub mod fetch;
pub mod ground_truth;
pub mod idx;
pub mod mixture;
pub mod npy;
pub mod parquet_io;
pub mod table;
pub mod textures;
pub mod views;
pub mod vmf;

pub use dataset::{compute_mean_std, Dataset, Features, Normalisation, SampleShape, Split};
pub use error::DataError;
