//! Running the plan: a scheduler that walks the job graph and an [`Executor`] that runs
//! ready jobs.
//!
//! The executor interface is deliberately narrow (try to submit, poll for events, cancel) and
//! jobs are plain data. The Slurm executor ([`slurm`]) does not go through this trait: it
//! hands the whole plan to the cluster as job arrays with dependencies, and shares the cache
//! decisions, the outcome bookkeeping and [`execute`] with the local path.

mod instance;
pub mod local;
pub mod outcome;
pub mod pools;
pub mod process;
pub mod scheduler;
pub mod signal;
pub mod slurm;
#[cfg(test)]
pub(crate) mod testkit;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use instance::{execute, execute_in};

use crate::artifact::{InstanceMeta, KeyInputs};
use crate::config::Resources;
use crate::stage::{InputArtifact, PreparedStage, Progress};
use outcome::InstanceError;

/// One instance to compute, with everything needed to do so on any machine that sees the
/// output directory.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Index of the instance in the DAG; events refer to it.
    pub job: usize,
    pub pipeline: String,
    pub stage: String,
    pub instance: String,
    pub kind: String,
    pub params: serde_json::Value,
    /// `params` parsed by the stage kind while planning; `None` where there is no plan (a
    /// cluster node), and then [`execute`] parses them.
    pub prepared: Option<Arc<dyn PreparedStage>>,
    pub seed: u64,
    pub labels: Vec<(String, serde_json::Value)>,
    /// Every matrix axis of the lineage ([`crate::dag::Instance::sweep`]) and its
    /// configuration id: what result tables carry on each row so they join.
    pub sweep: Vec<(String, serde_json::Value)>,
    pub config_id: String,
    pub key: String,
    pub key_inputs: KeyInputs,
    pub inputs: Vec<InputArtifact>,
    pub resources: Resources,
    /// The GPU device ids the instance runs on, `resources.gpus` of them, given by the
    /// executor when it starts the job (none before, and none for an instance without GPUs).
    pub gpu_ids: Vec<usize>,
    /// The pipeline's store root (outputs/<pipeline>).
    pub store_root: PathBuf,
}

#[derive(Debug)]
pub enum JobEvent {
    Started {
        job: usize,
    },
    Progress {
        job: usize,
        progress: Progress,
    },
    Finished {
        job: usize,
        result: Result<Box<InstanceMeta>, InstanceError>,
    },
}

pub trait Executor {
    /// Starts the job if resources allow, otherwise hands it back.
    fn try_submit(&mut self, job: Box<JobSpec>) -> Result<(), Box<JobSpec>>;
    /// Waits up to `timeout` for events from running jobs.
    fn poll(&mut self, timeout: Duration) -> Vec<JobEvent>;
    /// Asks every running job to stop; they still report `Finished` (cancelled, or with
    /// whatever result they reached first).
    fn cancel(&mut self);
    fn running(&self) -> usize;
}
