//! The Slurm executor: a run handed to a cluster as job arrays, followed from this machine.
//!
//! Why it is not an [`Executor`](super::Executor): the local executor is given one job at a
//! time, once its inputs are finished, because only then is its cache key known. A cluster is
//! best given the whole plan at once, so that Slurm holds the dependency graph and a sweep is
//! one queue entry rather than hundreds. So each stage's instances that must run become one
//! `sbatch --array` ("sweep group") whose tasks each run `cbound exec-instance` for exactly
//! one instance, and a stage waits for its inputs' arrays with `--dependency=afterok:ID`.
//!
//! A cache key includes the output digests of the instance's inputs, so for an instance whose
//! inputs are computed in the same run the key is learnt on the node: its task file names
//! the result files of the upstream tasks, and the task computes the key there, reuses a
//! cached result if one has appeared (an upstream that reran with identical bytes), or runs
//! the stage through the same [`execute`](super::execute) as the local executor. Instances
//! cached before the run are never submitted.
//!
//! The submitter follows the tasks through `squeue` (and `scontrol` for tasks that left the
//! queue without a result; `sacct` needs slurmdbd, which small clusters lack) and the files
//! each task writes next to its task file, and reports the same events and outcomes as a local
//! run, so progress display, `results.parquet` and `plan --why` work the same.
//!
//! ```text
//! .cbound/slurm/<run>/<stage>/task.sh            the batch script of the stage's array
//! .cbound/slurm/<run>/<stage>/<i>.json           what task i computes (a [`TaskFile`])
//! .cbound/slurm/<run>/<stage>/<i>.out|.err       its stdout and stderr
//! .cbound/slurm/<run>/<stage>/<i>.result.json    how it ended (a [`TaskResult`])
//! .cbound/slurm/<run>/<stage>/<i>.progress.json  the stage's latest progress report
//! ```
//!
//! Known limit: `afterok` on an array waits for all of its tasks, so one failed task skips
//! the whole downstream array (Slurm cancels it: `--kill-on-invalid-dep=yes`), not only its
//! own descendants as a local run would; running the same command again resumes.
//!
//! The code is split by side: `submission` (which instances become which arrays, the sbatch
//! lines, task files and batch scripts), `node` (what `cbound exec-instance` runs on a node),
//! `queue` (reading what squeue, scontrol and sbatch print), `cluster` (running Slurm's
//! client commands) and `follow` (the loop that waits for the tasks, reads their files,
//! reports progress and outcomes, and cancels). This file holds what they share: errors,
//! settings, and the files tasks and the submitter exchange.

mod cluster;
#[cfg(test)]
mod fake;
mod follow;
mod node;
mod queue;
mod submission;

pub use follow::run;
pub use node::run_task;
pub use queue::{parse_scontrol, parse_squeue, QueueEntry};
pub use submission::{
    plan_lines, sbatch_args, shell_line, submission, ArraySpec, Group, Submission,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ClusterResources, ExecutorDecl, Resources};

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("`{program}` not found: install slurm-client (Slurm's command-line tools) on this machine, or use --executor local")]
    NotInstalled { program: String },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("sbatch rejected the job array of stage `{stage}`: {message}")]
    Rejected { stage: String, message: String },
    #[error("sbatch printed `{output}` where a job id was expected")]
    BadJobId { output: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task file {path}: {message}")]
    TaskFile { path: PathBuf, message: String },
    /// On a node: the instance of the task failed (its error is also in the task's result).
    #[error("{instance} failed: {error}")]
    InstanceFailed { instance: String, error: String },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SlurmError {
    let context = context.into();
    move |source| SlurmError::Io { context, source }
}

/// How this run talks to Slurm: the pipeline's `executor:` block plus what only the
/// submitting process knows.
#[derive(Debug, Clone)]
pub struct SlurmSettings {
    pub max_parallel: Option<usize>,
    pub defaults: ClusterResources,
    /// The binary the tasks run.
    pub cbound: PathBuf,
    /// The tasks' working directory (`--chdir`): where the submitter runs, so relative paths
    /// in parameters mean the same on the nodes.
    pub workdir: PathBuf,
    /// How often the queue is read.
    pub poll: Duration,
}

impl SlurmSettings {
    pub fn new(decl: &ExecutorDecl) -> Result<SlurmSettings, SlurmError> {
        let cbound = match &decl.cbound {
            Some(path) => absolute(path),
            None => std::env::current_exe().map_err(io("locating the cbound binary"))?,
        };
        Ok(SlurmSettings {
            max_parallel: decl.max_parallel,
            defaults: decl.defaults.clone(),
            cbound,
            workdir: std::env::current_dir().map_err(io("reading the working directory"))?,
            poll: Duration::from_millis(500),
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The directory of a run's job arrays (`cbound run` also leaves the run's kinds declared in
/// YAML there, for `cbound exec-instance`).
pub fn slurm_dir(store_root: &Path, run_id: &str) -> PathBuf {
    absolute(store_root)
        .join(".cbound")
        .join("slurm")
        .join(run_id)
}

/// What a task computes: everything [`execute`](super::execute) needs except what depends
/// on upstream results computed in the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskFile {
    pub pipeline: String,
    pub stage: String,
    pub instance: String,
    pub kind: String,
    pub params: serde_json::Value,
    pub seed: u64,
    pub labels: Vec<(String, serde_json::Value)>,
    #[serde(default)]
    pub sweep: Vec<(String, serde_json::Value)>,
    #[serde(default)]
    pub config_id: String,
    pub resources: Resources,
    pub store_root: PathBuf,
    /// Recompute even if a result with the same key exists (`--force`).
    pub forced: bool,
    pub inputs: Vec<TaskInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskInput {
    pub stage: String,
    pub instance: String,
    pub source: InputSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputSource {
    /// Finished before the run: the key of its result.
    Cached { cache_key: String },
    /// Computed by another task of this run: its result file.
    Task { result: PathBuf },
}

/// How a task ended, written by the task before it exits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskResult {
    /// The instance's cache key, when it could be computed.
    pub cache_key: Option<String>,
    /// The result existed already (an upstream reran and produced identical outputs).
    #[serde(default)]
    pub cached: bool,
    pub error: Option<String>,
    pub host: String,
}

/// A stage's latest progress report, which the node rewrites at most once a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ProgressFile {
    done: u64,
    total: u64,
    message: String,
}

fn task_path(dir: &Path, index: usize, suffix: &str) -> PathBuf {
    dir.join(format!("{index}{suffix}"))
}
