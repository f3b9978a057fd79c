//! cbound-engine: runs pipelines of stages, whatever the stages are.
//!
//! Data flows one way: YAML ([`config`]) -> job graph with sweeps expanded ([`dag`]) -> plan
//! with cache decisions ([`dag::plan`]) -> execution, local or on Slurm ([`exec`]), of the
//! kinds in a [`stage::Registry`] -> outputs in the content-addressed store ([`artifact`]),
//! with [`events`] along the way. The engine never names a stage kind: the caller fills the
//! registry (the built-in kinds are the `cbound-stages` crate), and the compiler keeps it
//! that way, since this crate does not depend on them.

pub mod artifact;
pub mod config;
pub mod dag;
pub mod events;
pub mod exec;
pub mod stage;
pub mod userkind;

pub use cbound_core::{failpoint, host_name};
