//! Data: ground-truth generators with known information quantities (and, later, dataset
//! loaders and augmentations).

pub mod ground_truth;
pub mod table;
