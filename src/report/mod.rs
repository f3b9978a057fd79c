//! What a user sees of a run: live progress (bars on a terminal, log lines elsewhere) as a
//! consumer of [`RunEvent`]s, the tables a run leaves behind, and `cbound report`'s plots and
//! HTML page drawn from them afterwards.

pub mod figures;
pub mod generate;
pub mod html;
pub mod images;
pub mod load;
pub mod plots;
pub mod progress;
pub mod results;

use crate::stages::Progress;

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
