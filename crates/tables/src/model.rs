//! The files a `train` instance leaves for the stages after it (`embed`, the report):
//! `model.json` ([`ModelInfo`]) and the names of its encoder and projection snapshots.
//! Declared once here so the writer and its readers cannot disagree.

use std::path::Path;

use cbound_core::files::{read_json, ArtifactError};
use serde::{Deserialize, Serialize};

/// The model description's file name.
pub const MODEL_INFO: &str = "model.json";

/// What the embed stage needs to run the encoder, written as `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub view_shape: Vec<usize>,
    pub embedding_dim: usize,
    /// Size of the projector's output z = g(f(x)), written as `projection.onnx`.
    #[serde(default)]
    pub projection_dim: Option<usize>,
    pub params: usize,
    pub steps: u64,
}

/// File name of the `encoder` or `projection` snapshot after `epoch` epochs.
pub fn snapshot_file(graph: &str, epoch: u64) -> String {
    format!("{graph}_epoch{epoch}.onnx")
}

/// The snapshot epochs a train instance wrote, ascending.
pub fn snapshot_epochs(outputs: &[String]) -> Vec<u64> {
    let mut epochs: Vec<u64> = outputs
        .iter()
        .filter_map(|name| {
            name.strip_prefix("encoder_epoch")?
                .strip_suffix(".onnx")?
                .parse()
                .ok()
        })
        .collect();
    epochs.sort_unstable();
    epochs
}

/// Reads `model.json` of a train instance.
pub fn model_info(dir: &Path) -> Result<ModelInfo, ArtifactError> {
    read_json(&dir.join(MODEL_INFO))
}
