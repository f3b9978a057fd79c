//! Run events: what the executors say happened, in the order it happened. The engine emits
//! them through a [`Reporter`]; what a user sees of them (bars, log lines) is the caller's
//! business (the `cbound` crate's report module).

use crate::stage::Progress;

/// Something that happened during a run, in the order it happened.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// Before anything runs: the stages with how many instances each will consider.
    Begin {
        pipeline: &'a str,
        run_dir: &'a str,
        stages: Vec<(&'a str, usize)>,
    },
    Cached {
        stage: &'a str,
        instance: &'a str,
    },
    Started {
        stage: &'a str,
        instance: &'a str,
    },
    Progress {
        stage: &'a str,
        instance: &'a str,
        progress: &'a Progress,
    },
    Finished {
        stage: &'a str,
        instance: &'a str,
        seconds: f64,
    },
    Failed {
        stage: &'a str,
        instance: &'a str,
        error: &'a str,
    },
    /// Stopped before it finished because the run was stopped: not a failure.
    Cancelled {
        stage: &'a str,
        instance: &'a str,
    },
    Skipped {
        stage: &'a str,
        instance: &'a str,
        reason: &'a str,
    },
    Stopping {
        reason: &'a str,
    },
}

pub trait Reporter {
    fn event(&mut self, event: RunEvent<'_>);
    /// Called once at the end, before the summary is printed.
    fn finish(&mut self) {}
}

/// Reports nothing at all: for tests and for callers that only want the run's results.
pub struct NullReporter;

impl Reporter for NullReporter {
    fn event(&mut self, _event: RunEvent<'_>) {}
}
