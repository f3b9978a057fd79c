//! Running an external program as an instance's work, for every stage kind that does so (the
//! built-in `command`, kinds declared in YAML): the `inputs.json` manifest, the `CBOUND_*`
//! environment, stdout and stderr kept beside the outputs, the program in its own process
//! group so that cancelling the run or a timeout ends it and everything it started, and
//! `metrics.json` read back as metrics.
//!
//! Kept in one place so that both kinds promise exactly the same environment and the same
//! way of ending a program; the placeholders in their argument lists differ and stay with
//! each kind.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use super::signal;
use crate::artifact;
use crate::stage::{StageContext, StageError};

/// How long a cancelled or timed-out program has between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// The manifest of an instance's inputs every program gets (`$CBOUND_INPUTS`).
pub const INPUTS_FILE: &str = "inputs.json";
/// The program's standard output and error, kept among the instance's outputs.
pub const STDOUT_FILE: &str = "stdout.txt";
pub const STDERR_FILE: &str = "stderr.txt";
/// Name-to-number pairs a program may write; they become metrics in `results.parquet`.
pub const METRICS_FILE: &str = "metrics.json";

/// One program to run for an instance.
pub struct Program<'a> {
    /// The program: a name looked up on PATH, or a path.
    pub program: &'a str,
    /// Its arguments, placeholders already replaced.
    pub args: &'a [String],
    /// Extra environment variables, set before the `CBOUND_*` ones (which therefore win).
    pub env: Vec<(String, String)>,
    /// Names the program needs from cbound's environment (it inherits that environment
    /// anyway; this makes a missing one an error instead of a confusing failure).
    pub pass_env: &'a [String],
    /// Seconds before the program is killed.
    pub timeout_s: Option<f64>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StageError {
    move |source| StageError::Io { context, source }
}

/// `p` as an absolute path, so a program that changes directory still finds it.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Writes `inputs.json` into `out`: every input instance with its stage, directory, files,
/// metrics and sweep labels. Returns its path.
pub fn write_inputs_manifest(ctx: &StageContext, out: &Path) -> Result<PathBuf, StageError> {
    let manifest: Vec<serde_json::Value> = ctx
        .inputs
        .iter()
        .map(|i| {
            serde_json::json!({
                "stage": i.stage,
                "instance": i.instance,
                "dir": absolute(&i.dir),
                "files": i.meta.outputs.iter().map(|o| &o.name).collect::<Vec<_>>(),
                "metrics": i.meta.metrics,
                "labels": i.meta.labels,
            })
        })
        .collect();
    let path = out.join(INPUTS_FILE);
    artifact::write_json(&path, &manifest)?;
    Ok(path)
}

/// Runs `program` with `out` (absolute) as its output directory and waits for it. The
/// environment gets `CBOUND_OUT`, `CBOUND_SEED`, `CBOUND_INSTANCE`, `CBOUND_INPUTS` (the
/// manifest, which must already be written) and `CBOUND_THREADS`, and an instance with GPUs
/// `CUDA_VISIBLE_DEVICES` ([`visible_devices`]). A non-zero exit is an error
/// with the last lines of stderr; cancellation is [`StageError::Cancelled`].
pub fn run(program: &Program, ctx: &StageContext, out: &Path) -> Result<(), StageError> {
    let name = program.program;
    let stdout =
        File::create(out.join(STDOUT_FILE)).map_err(io(format!("creating {STDOUT_FILE}")))?;
    let stderr_path = out.join(STDERR_FILE);
    let stderr = File::create(&stderr_path).map_err(io(format!("creating {STDERR_FILE}")))?;
    if let Some(missing) = program
        .pass_env
        .iter()
        .find(|name| std::env::var_os(name.as_str()).is_none())
    {
        return Err(StageError::Params(format!(
            "`pass_env` names `{missing}`, which is not set in cbound's environment"
        )));
    }
    // Programs of an earlier, SIGKILLed attempt may still write into this directory.
    let leftovers = signal::kill_leftovers(out);
    if leftovers > 0 {
        tracing::warn!(
            "{}: killed {leftovers} process(es) left by an earlier attempt",
            ctx.instance
        );
    }
    let mut process = Process::new(name);
    // Its own process group, so cancelling ends the program and all it started.
    signal::own_group(&mut process);
    if !ctx.gpus.is_empty() {
        // Only the instance's own GPUs are visible to the program; without GPUs it keeps
        // cbound's environment as it is.
        let visible = visible_devices(ctx.gpus, std::env::var("CUDA_VISIBLE_DEVICES").ok());
        process.env("CUDA_VISIBLE_DEVICES", visible);
    }
    let mut child = process
        .args(program.args)
        .envs(program.env.iter().map(|(k, v)| (k, v)))
        .env("CBOUND_OUT", out)
        .env("CBOUND_SEED", ctx.seed.to_string())
        .env("CBOUND_INSTANCE", ctx.instance)
        .env("CBOUND_INPUTS", out.join(INPUTS_FILE))
        .env("CBOUND_THREADS", ctx.threads.to_string())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(io(format!("cannot start `{name}`")))?;
    let group = signal::Group::register(child.id());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io(format!("waiting for `{name}`")))?
        {
            break status;
        }
        let timed_out = program
            .timeout_s
            .is_some_and(|t| started.elapsed().as_secs_f64() > t);
        if ctx.is_cancelled() || timed_out {
            group.terminate(&mut child, KILL_GRACE);
            return Err(if timed_out {
                StageError::Failed(format!(
                    "`{name}` killed after the {}s timeout",
                    program.timeout_s.unwrap_or(0.0)
                ))
            } else {
                StageError::Cancelled
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(StageError::Failed(format!(
            "`{name}` exited with {status}; last lines of stderr:\n{}",
            tail.join("\n")
        )));
    }
    Ok(())
}

/// `CUDA_VISIBLE_DEVICES` for a program given the device ids `gpus`. The ids count the
/// devices cbound itself sees, so where cbound runs under a `CUDA_VISIBLE_DEVICES` of its own
/// (`parent`, e.g. `2,3` from a cluster scheduler) id 1 is that list's second entry, `3`. An
/// id beyond that list (more `--gpus` than cbound was given) is left out rather than exposing
/// a device outside cbound's own, so the program finds fewer GPUs than it asked for.
pub fn visible_devices(gpus: &[usize], parent: Option<String>) -> String {
    let parent: Vec<String> = parent
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split(',').map(|d| d.trim().to_string()).collect())
        .unwrap_or_default();
    gpus.iter()
        .filter_map(|&id| {
            if parent.is_empty() {
                Some(id.to_string())
            } else {
                parent.get(id).cloned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The metrics of `out/metrics.json`, if the program wrote one.
pub fn read_metrics(out: &Path) -> Result<BTreeMap<String, f64>, StageError> {
    let path = out.join(METRICS_FILE);
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    artifact::read_json(&path)
        .map_err(|e| StageError::Failed(format!("{METRICS_FILE} must map names to numbers: {e}")))
}

#[cfg(test)]
mod tests {
    use super::visible_devices;

    #[test]
    fn visible_devices_count_the_devices_cbound_sees() {
        assert_eq!(visible_devices(&[1], None), "1");
        assert_eq!(visible_devices(&[0, 2], None), "0,2");
        // An empty parent list is the same as none (the ids count every device).
        assert_eq!(visible_devices(&[1], Some(" ".into())), "1");
        // Under a CUDA_VISIBLE_DEVICES of its own, id k is that list's k-th entry.
        assert_eq!(visible_devices(&[1], Some("2,3".into())), "3");
        assert_eq!(
            visible_devices(&[0, 1], Some("GPU-a1, GPU-b2".into())),
            "GPU-a1,GPU-b2"
        );
        // Beyond it: left out, never a device cbound was not given.
        assert_eq!(visible_devices(&[0, 2], Some("5,6".into())), "5");
    }
}
