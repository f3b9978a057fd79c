//! Running Slurm's client commands (`sbatch`, `squeue`, `scontrol`, `scancel`) on this
//! machine.

use std::process::Command;

use super::queue::{parse_squeue, QueueEntry};
use super::submission::shell_line;
use super::SlurmError;

/// This user's jobs, one line per array task (`-r`); `%F` is the array's job id (what
/// sbatch returned) and `%K` the task index.
pub(super) fn read_queue() -> Result<Vec<QueueEntry>, SlurmError> {
    let args = ["--me", "-h", "-r", "-o", "%F|%K|%T|%r"].map(String::from);
    slurm("squeue", &args).map(|text| parse_squeue(&text))
}

/// Runs a Slurm client command and returns its stdout.
pub(super) fn slurm(program: &str, args: &[String]) -> Result<String, SlurmError> {
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

pub(super) fn scancel(job_ids: &[String]) {
    if job_ids.is_empty() {
        return;
    }
    if let Err(e) = slurm("scancel", job_ids) {
        tracing::warn!("cancelling Slurm jobs {}: {e}", job_ids.join(" "));
    }
}
