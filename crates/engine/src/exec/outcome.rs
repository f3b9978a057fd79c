//! The one vocabulary for how things end: an instance ([`Outcome`], named by
//! [`InstanceStatus`]) and a whole run ([`RunStatus`]). `results.parquet`, `run.json`, the
//! terminal reporters, the state `plan --why` reads and both executors (local and Slurm) use
//! these names and nothing else, so a status is spelled once, here.
//!
//! A cancelled instance (Ctrl-C, SIGTERM, `--fail-fast` stopping the others) is its own
//! outcome, not a failure: it is not counted as failed, and `plan --why` says the last
//! attempt was cancelled rather than that it failed.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::artifact::{ArtifactError, InstanceMeta};
use crate::stage::StageError;

/// How one instance ended in a run, by name. The serde name is the `as_str` name (a unit
/// test holds them together); they are on disk in results.parquet's `status` column, in
/// run.json's `counts` and in the store's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Computed in this run. Named `ok` on disk since the first release.
    Ok,
    /// Reused from the store.
    Cached,
    Failed,
    /// Stopped before it finished because the run was stopped: not a failure.
    Cancelled,
    /// Not run: an input did not finish, or the run stopped first.
    Skipped,
    /// Outside `--only`; never written to results.parquet.
    NotSelected,
}

impl InstanceStatus {
    /// Every status, in the order counts are reported.
    pub const ALL: [InstanceStatus; 6] = [
        InstanceStatus::Ok,
        InstanceStatus::Cached,
        InstanceStatus::Failed,
        InstanceStatus::Cancelled,
        InstanceStatus::Skipped,
        InstanceStatus::NotSelected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Ok => "ok",
            InstanceStatus::Cached => "cached",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Cancelled => "cancelled",
            InstanceStatus::Skipped => "skipped",
            InstanceStatus::NotSelected => "not_selected",
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a whole run ended, as `status` in its run.json. `running` is what a run records while
/// it runs; a run found still `running` by the next one died unrecorded and becomes `killed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Every selected instance computed or cached.
    Ok,
    /// At least one instance failed or was skipped (and no signal stopped the run).
    Failed,
    /// Stopped by SIGINT (Ctrl-C).
    Interrupted,
    /// Stopped by SIGTERM.
    Terminated,
    /// Died without recording its end (SIGKILL, power loss, a second signal).
    Killed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Running,
        RunStatus::Ok,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::Terminated,
        RunStatus::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Terminated => "terminated",
            RunStatus::Killed => "killed",
        }
    }

    /// The status of a `status` string read from a run.json (`None` for anything else).
    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an instance failed. The messages are the ones users saw before these were typed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("unknown stage kind `{0}`")]
    UnknownKind(String),
    /// The stage returned an error; its staging directory is kept for inspection and resume.
    #[error("{error} (partial outputs kept in {})", staging.display())]
    Stage {
        #[source]
        error: StageError,
        staging: PathBuf,
    },
    #[error("internal error: stage `{kind}` panicked: {message}")]
    Panicked { kind: String, message: String },
    /// Preparing or publishing the instance in the store.
    #[error(transparent)]
    Store(#[from] ArtifactError),
    #[error("cannot start a pool of {threads} thread(s) for the stage: {message}")]
    ThreadPool { threads: usize, message: String },
    /// The cache key could not be computed (a tracked file is missing, too large...).
    #[error("{0}")]
    Key(String),
    #[error(
        "needs {needs} GPU slot(s) but this run has {has} (use --gpus, or set resources.gpus)"
    )]
    Gpus { needs: usize, has: usize },
    /// What a Slurm task reported, or how it left the queue without reporting.
    #[error("{0}")]
    Slurm(String),
}

/// Why [`execute`](super::execute) produced no result: cancelled on request, or failed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("cancelled (partial outputs kept in {})", staging.display())]
    Cancelled { staging: PathBuf },
    #[error(transparent)]
    Failed(#[from] Failure),
}

impl From<ArtifactError> for InstanceError {
    fn from(e: ArtifactError) -> InstanceError {
        InstanceError::Failed(Failure::Store(e))
    }
}

/// Why an instance was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// An input failed, was cancelled or was itself skipped.
    InputDidNotFinish(String),
    /// The run stopped (signal, `--fail-fast`) before the instance started.
    StoppedBeforeStart,
    /// The run stopped while the instance was submitted but had not started (Slurm).
    StoppedBeforeFinish,
    /// The run ended without ever getting to it.
    NotReached,
    /// Slurm dropped the job because a job it waits for (afterok) failed.
    DependencyFailed { job: String },
    /// The run stopped and Slurm has not removed the cancelled job yet.
    StillQueued { job: String },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::InputDidNotFinish(input) => write!(f, "input {input} did not finish"),
            SkipReason::StoppedBeforeStart => write!(f, "run stopped before it started"),
            SkipReason::StoppedBeforeFinish => write!(f, "run stopped before it finished"),
            SkipReason::NotReached => write!(f, "not reached"),
            SkipReason::DependencyFailed { job } => write!(
                f,
                "Slurm cancelled job {job}: a task of an array it waits for (afterok) failed"
            ),
            SkipReason::StillQueued { job } => write!(
                f,
                "run stopped; Slurm job {job} was cancelled but is still in the queue"
            ),
        }
    }
}

/// How one instance ended in this run.
#[derive(Debug)]
pub enum Outcome {
    Done(Box<InstanceMeta>),
    Cached(Box<InstanceMeta>),
    Failed(Failure),
    /// Stopped on request; `staging` keeps its partial work, when it had started.
    Cancelled {
        staging: Option<PathBuf>,
    },
    Skipped(SkipReason),
    NotSelected,
}

impl Outcome {
    /// The outcome of an attempt to compute an instance.
    pub fn of(result: Result<Box<InstanceMeta>, InstanceError>) -> Outcome {
        match result {
            Ok(meta) => Outcome::Done(meta),
            Err(InstanceError::Cancelled { staging }) => Outcome::Cancelled {
                staging: Some(staging),
            },
            Err(InstanceError::Failed(failure)) => Outcome::Failed(failure),
        }
    }

    pub fn meta(&self) -> Option<&InstanceMeta> {
        match self {
            Outcome::Done(m) | Outcome::Cached(m) => Some(m),
            _ => None,
        }
    }

    pub fn status(&self) -> InstanceStatus {
        match self {
            Outcome::Done(_) => InstanceStatus::Ok,
            Outcome::Cached(_) => InstanceStatus::Cached,
            Outcome::Failed(_) => InstanceStatus::Failed,
            Outcome::Cancelled { .. } => InstanceStatus::Cancelled,
            Outcome::Skipped(_) => InstanceStatus::Skipped,
            Outcome::NotSelected => InstanceStatus::NotSelected,
        }
    }

    /// What results.parquet's `error` column says: why it failed, was cancelled or skipped.
    pub fn message(&self) -> Option<String> {
        match self {
            Outcome::Failed(failure) => Some(failure.to_string()),
            Outcome::Cancelled { staging: Some(dir) } => Some(format!(
                "cancelled: the run was stopped (partial outputs kept in {})",
                dir.display()
            )),
            Outcome::Cancelled { staging: None } => Some("cancelled: the run was stopped".into()),
            Outcome::Skipped(reason) => Some(reason.to_string()),
            Outcome::Done(_) | Outcome::Cached(_) | Outcome::NotSelected => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_the_as_str_names() {
        for s in InstanceStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            let back: InstanceStatus = serde_json::from_value(s.as_str().into()).unwrap();
            assert_eq!(back, s);
        }
        for s in RunStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        // The names already on disk before they were typed.
        let run: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            run,
            [
                "running",
                "ok",
                "failed",
                "interrupted",
                "terminated",
                "killed"
            ]
        );
        assert_eq!(InstanceStatus::Ok.as_str(), "ok");
    }

    #[test]
    fn a_cancelled_attempt_is_not_a_failure() {
        let outcome = Outcome::of(Err(InstanceError::Cancelled {
            staging: PathBuf::from("/s/k"),
        }));
        assert_eq!(outcome.status(), InstanceStatus::Cancelled);
        assert!(outcome.meta().is_none());
        assert_eq!(
            outcome.message().as_deref(),
            Some("cancelled: the run was stopped (partial outputs kept in /s/k)")
        );
        let failed = Outcome::of(Err(Failure::Gpus { needs: 2, has: 0 }.into()));
        assert_eq!(failed.status(), InstanceStatus::Failed);
        assert!(failed.message().unwrap().starts_with("needs 2 GPU slot(s)"));
    }
}
