//! `cbound exec-instance` (hidden): what each task of a Slurm job array runs on its node. It
//! computes the one instance its task file describes and commits it to the shared store; see
//! [`crate::exec::slurm`].

use std::path::PathBuf;

use crate::error::Error;
use crate::exec::slurm::run_task;
use cbound_engine::userkind::{UserKinds, SNAPSHOT_FILE};

#[derive(Debug, clap::Args)]
pub struct ExecInstanceArgs {
    /// The job array's directory of task files (`.cbound/slurm/<run>/<stage>`).
    #[arg(long)]
    pub task_dir: PathBuf,
    /// Which task to run; by default `$SLURM_ARRAY_TASK_ID`.
    #[arg(long)]
    pub index: Option<usize>,
}

pub fn exec_instance(args: ExecInstanceArgs) -> Result<(), Error> {
    let index = match args.index {
        Some(i) => i,
        None => std::env::var("SLURM_ARRAY_TASK_ID")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                Error::Usage(
                    "no task index: pass --index, or run inside a Slurm job array (SLURM_ARRAY_TASK_ID)"
                        .into(),
                )
            })?,
    };
    // Kinds declared in YAML travel as the snapshot `cbound run` wrote beside the task
    // directories (.cbound/slurm/<run>/kinds.json): the node has no pipeline to read them from.
    let snapshot = args
        .task_dir
        .parent()
        .map(|run| run.join(SNAPSHOT_FILE))
        .unwrap_or_else(|| PathBuf::from(SNAPSHOT_FILE));
    let registry = UserKinds::read_snapshot(&snapshot)?.registry(cbound_stages::builtin())?;
    // A failed instance ends the task non-zero (exit 3), so `afterok` holds dependents back;
    // its message goes to the task's stderr log as well as its result file.
    Ok(run_task(&args.task_dir, index, &registry)?)
}
