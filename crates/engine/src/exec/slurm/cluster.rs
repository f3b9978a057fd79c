//! What the submitter asks of Slurm, behind [`Cluster`]: submitting an array, reading the
//! queue, asking how a task ended, cancelling, and the clock the loop waits by. [`SlurmCli`]
//! runs Slurm's client commands (`sbatch`, `squeue`, `scontrol`, `scancel`) on this machine;
//! the unit tests of the loop use an in-memory cluster instead.
//!
//! The files a task writes (its result, progress and stderr) are not part of the trait: they
//! live on the filesystem the submitter shares with the nodes, so the loop reads them the
//! same way whatever the cluster, and a fake cluster writes them there as a node would.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::queue::{parse_job_id, parse_scontrol, parse_squeue, QueueEntry};
use super::submission::shell_line;
use super::SlurmError;

/// The Slurm operations a run needs.
pub(crate) trait Cluster {
    /// Fails when Slurm's tools are missing, so a run can stop before writing anything.
    fn check(&mut self) -> Result<(), SlurmError>;
    /// Submits one job array (`sbatch` with these arguments, the batch script last) and
    /// returns its job id. An `sbatch` that refuses the array is a [`SlurmError::Command`].
    fn submit(&mut self, args: &[String]) -> Result<String, SlurmError>;
    /// This user's queue, one entry per array task (pending ranges may stay unexpanded).
    fn queue(&mut self) -> Result<Vec<QueueEntry>, SlurmError>;
    /// The `scontrol show job` fields of one task, `<job>_<index>` (an error once Slurm has
    /// forgotten it).
    fn job(&mut self, id: &str) -> Result<HashMap<String, String>, SlurmError>;
    /// Cancels these jobs.
    fn cancel(&mut self, job_ids: &[String]) -> Result<(), SlurmError>;
    /// Waits `total` between two reads of the queue, returning early once `interrupt` is set.
    fn sleep(&mut self, total: Duration, interrupt: &AtomicBool);
    /// The time by which the loop gives cancelled jobs a deadline to leave the queue.
    fn now(&self) -> Instant;
}

/// The cluster that Slurm's client commands on this machine talk to.
pub(crate) struct SlurmCli;

impl Cluster for SlurmCli {
    fn check(&mut self) -> Result<(), SlurmError> {
        slurm("sbatch", &["--version".to_string()]).map(|_| ())
    }

    fn submit(&mut self, args: &[String]) -> Result<String, SlurmError> {
        slurm("sbatch", args).and_then(|out| parse_job_id(&out))
    }

    /// `-r` lists one line per array task; `%F` is the array's job id (what sbatch returned)
    /// and `%K` the task index.
    fn queue(&mut self) -> Result<Vec<QueueEntry>, SlurmError> {
        let args = ["--me", "-h", "-r", "-o", "%F|%K|%T|%r"].map(String::from);
        slurm("squeue", &args).map(|text| parse_squeue(&text))
    }

    fn job(&mut self, id: &str) -> Result<HashMap<String, String>, SlurmError> {
        slurm(
            "scontrol",
            &["show".into(), "job".into(), "-o".into(), id.to_string()],
        )
        .map(|text| parse_scontrol(&text))
    }

    fn cancel(&mut self, job_ids: &[String]) -> Result<(), SlurmError> {
        slurm("scancel", job_ids).map(|_| ())
    }

    fn sleep(&mut self, total: Duration, interrupt: &AtomicBool) {
        let until = Instant::now() + total;
        while Instant::now() < until && !interrupt.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Runs a Slurm client command and returns its stdout.
fn slurm(program: &str, args: &[String]) -> Result<String, SlurmError> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SlurmError::NotInstalled {
                program: program.to_string(),
            }
        } else {
            SlurmError::Io {
                context: format!("running {program}"),
                source: e,
            }
        }
    })?;
    if !out.status.success() {
        return Err(SlurmError::Command {
            command: shell_line(program, args),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Cancels `job_ids`, if any; a failure is logged, not returned: cancelling is what a run
/// does on its way out, and the jobs it could not cancel are named in the warning.
pub(super) fn scancel(cluster: &mut dyn Cluster, job_ids: &[String]) {
    if job_ids.is_empty() {
        return;
    }
    if let Err(e) = cluster.cancel(job_ids) {
        tracing::warn!("cancelling Slurm jobs {}: {e}", job_ids.join(" "));
    }
}
