//! cbound: declarative pipelines that train contrastive encoders, estimate mutual
//! information and compute information-theoretic bounds on downstream performance.
//!
//! This crate is the top of the workspace: the command line ([`cli`]) and what a user sees
//! of a run ([`report`]: progress, results.parquet, plots, report.html). Everything else is
//! a layer below, one crate each (Cargo.toml lists them; docs/architecture.md draws them):
//! the engine runs whatever kinds the registry holds, and [`cbound_stages::builtin`] is the
//! registry every command starts from.
//!
//! The layers are re-exported under their old module names, so `cbound::mi::Ksg` and
//! `cbound::engine::config` read the same from outside as the crates themselves.

pub mod cli;
pub mod error;
pub mod report;

pub use cbound_bounds as bounds;
pub use cbound_core as core;
pub use cbound_data as data;
pub use cbound_engine as engine;
pub use cbound_engine::{artifact, config, dag, exec, failpoint, host_name};
pub use cbound_mi as mi;
pub use cbound_onnx as onnx;
pub use cbound_stages as stages;
pub use cbound_tables as tables;
