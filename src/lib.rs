//! cbound: declarative pipelines that train contrastive encoders, estimate mutual
//! information and compute information-theoretic bounds on downstream performance.
//!
//! Data flows one way: YAML ([`config`]) -> job graph with sweeps expanded ([`dag`]) ->
//! plan with cache decisions ([`dag::plan`]) -> execution ([`exec`]) of stage kinds
//! ([`stages`]) that write artifacts ([`artifact`]) -> run tables and progress ([`report`]).

pub mod artifact;
pub mod bounds;
pub mod cli;
pub mod config;
pub mod dag;
pub mod data;
pub mod direction;
pub mod error;
pub mod exec;
pub mod failpoint;
pub mod mi;
pub mod onnx;
pub mod report;
pub mod stages;
pub mod tables;
pub mod userkind;

/// This machine's name, for run records and lock files. Asked once per process: every
/// instance's `meta.json` records it, and a system call per instance adds up over a sweep.
pub fn host_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| gethostname::gethostname().to_string_lossy().into_owned())
        .clone()
}
