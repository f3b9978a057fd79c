//! ONNX training machinery: graph builder, reverse-mode gradients, models, losses, optimizers,
//! `.onnx` encoding and the ONNX Runtime driver.
//!
//! A training step is one ordinary ONNX inference graph (forward, backward and optimizer update
//! as standard ai.onnx ops, opset 18, plus cbound's fused Adam kernel, see [`fused`]) executed
//! by ONNX Runtime, because ONNX Runtime's training API is not available in any loadable build.

pub mod autodiff;
pub mod bench;
pub mod checkpoint;
pub mod cuda_libs;
pub mod fused;
pub mod graph;
pub mod loss;
pub mod models;
pub mod optim;
pub mod proto;
pub mod runtime;
pub mod step;
pub mod trainer;

#[cfg(test)]
mod resnet_reference;
#[cfg(test)]
pub(crate) mod testutil;

pub use checkpoint::{Checkpoint, NamedTensor};
pub use runtime::{Device, LibrarySearch, Precision, Runtime, RuntimeError, SessionOptions};
pub use trainer::{Embedder, Trainer};
