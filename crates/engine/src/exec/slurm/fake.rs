//! An in-memory Slurm for the unit tests of the follow loop. It reads what `sbatch` is given
//! (array size, `afterok` dependencies, `--kill-on-invalid-dep`, the task directory) and
//! moves each task through PENDING, RUNNING and an end state, one step each time the loop
//! sleeps between polls. A task that runs computes its instance through the real node side
//! ([`run_task`]), so its result, progress and stderr files are in the task directory as a
//! node would leave them; what a task does instead can be scripted per instance.
//!
//! Nothing here sleeps: the clock the loop reads advances by what it asked to sleep.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::queue::QueueEntry;
use super::{run_task, task_path, SlurmError, TaskFile};
use crate::artifact::read_json;
use crate::stage::Registry;

/// What a task does once Slurm starts it.
#[derive(Debug, Clone)]
pub(super) enum Script {
    /// Computes its instance through `cbound exec-instance`'s code, in the poll it starts:
    /// its progress report is there while it runs, and its result file appears `late` polls
    /// after it leaves the queue (0: as it leaves; more: a slow shared filesystem).
    Run { late: usize },
    /// Like `Run`, and also prints these lines to its stderr before the instance's error.
    RunSaying(Vec<String>),
    /// Dies without a result after one poll of running, printing `stderr`. `state` is what
    /// `scontrol` then says, as (JobState, Reason, ExitCode); `None`: Slurm has forgotten
    /// the job.
    Die {
        state: Option<(&'static str, &'static str, &'static str)>,
        stderr: Vec<String>,
    },
    /// Runs until cancelled.
    Hang,
    /// Runs forever: even `scancel` leaves it in the queue.
    Unkillable,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending,
    /// `ends`: the state and exit code it leaves the queue with, once it has computed its
    /// instance (its result file hidden until then); `None` for a script that does not.
    Running {
        ends: Option<(String, String)>,
    },
    /// Out of the queue. `reveal` counts down the polls until its result file appears.
    Ended {
        state: String,
        reason: String,
        exit: String,
        reveal: Option<usize>,
    },
    /// Left the queue and forgotten by Slurm (as `scontrol` says after `MinJobAge`).
    Forgotten,
}

#[derive(Debug)]
struct FakeTask {
    instance: String,
    script: Script,
    state: State,
}

#[derive(Debug)]
struct FakeJob {
    id: String,
    dir: PathBuf,
    after: Vec<String>,
    kill_on_invalid_dep: bool,
    tasks: Vec<FakeTask>,
}

pub(super) struct FakeCluster {
    registry: Arc<Registry>,
    scripts: HashMap<String, Script>,
    jobs: Vec<FakeJob>,
    /// The stage whose array `sbatch` rejects.
    reject: Option<String>,
    /// How many reads of the queue fail before they work.
    queue_failures: usize,
    interrupt_when_stuck: Option<Arc<AtomicBool>>,
    start: Instant,
    slept: Duration,
    polls: usize,
    /// What happened, in order: `submit <job> <stage> <tasks> after=<ids>`,
    /// `start <job>_<i> <instance>`, `end <job>_<i> <state>`, `scancel <ids>`, ...
    pub log: Vec<String>,
    /// The arguments of every accepted `sbatch`.
    pub submitted: Vec<Vec<String>>,
}

/// Polls after which the fake concludes that the loop under test never ends.
const MAX_POLLS: usize = 10_000;

impl FakeCluster {
    pub(super) fn new(registry: &Arc<Registry>) -> FakeCluster {
        FakeCluster {
            registry: Arc::clone(registry),
            scripts: HashMap::new(),
            jobs: Vec::new(),
            reject: None,
            queue_failures: 0,
            interrupt_when_stuck: None,
            start: Instant::now(),
            slept: Duration::ZERO,
            polls: 0,
            log: Vec::new(),
            submitted: Vec::new(),
        }
    }

    /// The task of `instance` does `script` instead of running normally.
    pub(super) fn script(mut self, instance: &str, script: Script) -> FakeCluster {
        self.scripts.insert(instance.to_string(), script);
        self
    }

    pub(super) fn reject(mut self, stage: &str) -> FakeCluster {
        self.reject = Some(stage.to_string());
        self
    }

    pub(super) fn failing_queue(mut self, times: usize) -> FakeCluster {
        self.queue_failures = times;
        self
    }

    /// Sets `interrupt` at a poll where nothing moves and a task hangs, as a user pressing
    /// Ctrl-C then would.
    pub(super) fn interrupt_when_stuck(mut self, interrupt: &Arc<AtomicBool>) -> FakeCluster {
        self.interrupt_when_stuck = Some(Arc::clone(interrupt));
        self
    }

    /// Job ids with a task still pending or running.
    pub(super) fn queued(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|j| j.tasks.iter().any(|t| in_queue(&t.state)))
            .map(|j| j.id.clone())
            .collect()
    }

    /// The log lines that start with `prefix`, without it.
    pub(super) fn logged(&self, prefix: &str) -> Vec<&str> {
        self.log
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect()
    }

    /// The time slept so far, in the loop's clock.
    pub(super) fn slept(&self) -> Duration {
        self.slept
    }

    /// One step of every task: pending ones whose dependencies completed start (or are
    /// cancelled when a dependency can no longer complete), running ones end, and results
    /// of ended ones appear.
    fn step(&mut self) {
        let completed: HashMap<String, Option<bool>> = self
            .jobs
            .iter()
            .map(|j| (j.id.clone(), job_completed(j)))
            .collect();
        let mut moved = false;
        let mut stuck = false;
        let registry = Arc::clone(&self.registry);
        let mut log = Vec::new();
        for job in &mut self.jobs {
            let deps: Vec<Option<bool>> = job
                .after
                .iter()
                .map(|a| completed.get(a).copied().flatten())
                .collect();
            let never = deps.contains(&Some(false));
            let ready = deps.iter().all(|d| *d == Some(true));
            for (index, task) in job.tasks.iter_mut().enumerate() {
                let id = format!("{}_{index}", job.id);
                let next = match (&task.state, &task.script) {
                    (State::Pending, _) if never && job.kill_on_invalid_dep => {
                        Some(ended("CANCELLED", "DependencyNeverSatisfied", "0:0", None))
                    }
                    (State::Pending, _) if ready => {
                        log.push(format!("start {id} {}", task.instance));
                        Some(start(&registry, &job.dir, index, &task.script))
                    }
                    (
                        State::Running {
                            ends: Some((state, exit)),
                        },
                        _,
                    ) => {
                        let late = match task.script {
                            Script::Run { late } => late,
                            _ => 0,
                        };
                        Some(ended(state, "None", exit, Some(late)))
                    }
                    (State::Running { ends: None }, Script::Die { state, stderr }) => {
                        append(&task_path(&job.dir, index, ".err"), stderr);
                        Some(match state {
                            Some((state, reason, exit)) => ended(state, reason, exit, None),
                            None => State::Forgotten,
                        })
                    }
                    (State::Running { ends: None }, _) => {
                        stuck = true;
                        None
                    }
                    (
                        State::Ended {
                            reveal: Some(n), ..
                        },
                        _,
                    ) => {
                        if *n == 0 {
                            reveal(&job.dir, index);
                        }
                        let mut state = task.state.clone();
                        if let State::Ended { reveal, .. } = &mut state {
                            *reveal = n.checked_sub(1);
                        }
                        Some(state)
                    }
                    _ => None,
                };
                if let Some(next) = next {
                    if let State::Ended { state, .. } = &next {
                        if !matches!(task.state, State::Ended { .. }) {
                            log.push(format!("end {id} {state}"));
                        }
                    }
                    moved |= next != task.state;
                    task.state = next;
                }
            }
        }
        self.log.extend(log);
        if stuck && !moved {
            if let Some(interrupt) = &self.interrupt_when_stuck {
                interrupt.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Why the pending tasks of `job` wait, as `squeue` says.
    fn pending_reason(&self, job: &FakeJob) -> &'static str {
        let failed = |id: &String| {
            self.jobs
                .iter()
                .any(|j| &j.id == id && job_completed(j) == Some(false))
        };
        if job.after.iter().any(failed) {
            "DependencyNeverSatisfied"
        } else if job.after.is_empty() {
            "None"
        } else {
            "Dependency"
        }
    }

    fn task(&self, id: &str) -> Option<&FakeTask> {
        let (job, index) = id.split_once('_')?;
        let index: usize = index.parse().ok()?;
        self.jobs.iter().find(|j| j.id == job)?.tasks.get(index)
    }
}

fn in_queue(state: &State) -> bool {
    matches!(state, State::Pending | State::Running { .. })
}

/// Whether every task of `job` completed (`Some(true)`), one ended otherwise (`Some(false)`),
/// or it is not over.
fn job_completed(job: &FakeJob) -> Option<bool> {
    let mut all = true;
    for t in &job.tasks {
        match &t.state {
            State::Ended { state, .. } if state == "COMPLETED" => {}
            State::Ended { .. } | State::Forgotten => return Some(false),
            _ => all = false,
        }
    }
    all.then_some(true)
}

fn ended(state: &str, reason: &str, exit: &str, reveal: Option<usize>) -> State {
    State::Ended {
        state: state.to_string(),
        reason: reason.to_string(),
        exit: exit.to_string(),
        reveal,
    }
}

/// Starts task `index`: runs it now as `cbound exec-instance` would, hiding its result until
/// it leaves the queue.
fn start(registry: &Registry, dir: &Path, index: usize, script: &Script) -> State {
    let said = match script {
        Script::Run { .. } => &[][..],
        Script::RunSaying(lines) => lines.as_slice(),
        Script::Die { .. } | Script::Hang | Script::Unkillable => {
            return State::Running { ends: None };
        }
    };
    let err = task_path(dir, index, ".err");
    append(&err, said);
    let ends = match run_task(dir, index, registry) {
        Ok(()) => ("COMPLETED", "0:0"),
        Err(e) => {
            // What the binary prints before exiting with 3.
            append(&err, &[e.to_string()]);
            ("FAILED", "3:0")
        }
    };
    let result = task_path(dir, index, ".result.json");
    let _ = std::fs::rename(&result, hidden(&result));
    State::Running {
        ends: Some((ends.0.to_string(), ends.1.to_string())),
    }
}

fn hidden(result: &Path) -> PathBuf {
    result.with_extension("json.hidden")
}

fn reveal(dir: &Path, index: usize) {
    let result = task_path(dir, index, ".result.json");
    let _ = std::fs::rename(hidden(&result), &result);
}

fn append(path: &Path, lines: &[String]) {
    use std::io::Write;
    if lines.is_empty() {
        return;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut file) = file {
        for line in lines {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// The value of `--<flag>=` among `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("--{flag}=")))
}

impl Cluster for FakeCluster {
    fn check(&mut self) -> Result<(), SlurmError> {
        Ok(())
    }

    fn submit(&mut self, args: &[String]) -> Result<String, SlurmError> {
        let name = flag(args, "job-name").unwrap_or_default();
        let stage = name.rsplit(':').next().unwrap_or_default().to_string();
        if self.reject.as_deref() == Some(stage.as_str()) {
            return Err(SlurmError::Command {
                command: "sbatch".into(),
                message: "sbatch: error: Invalid partition name specified".into(),
            });
        }
        let tasks: usize = flag(args, "array")
            .and_then(|a| a.strip_prefix("0-"))
            .and_then(|a| a.split('%').next())
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(1, |last| last + 1);
        let after: Vec<String> = flag(args, "dependency")
            .and_then(|d| d.strip_prefix("afterok:"))
            .map(|d| d.split(':').map(String::from).collect())
            .unwrap_or_default();
        let dir = args
            .last()
            .and_then(|script| Path::new(script).parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let id = (100 + self.jobs.len()).to_string();
        let mut job = FakeJob {
            id: id.clone(),
            dir,
            after,
            kill_on_invalid_dep: args.iter().any(|a| a == "--kill-on-invalid-dep=yes"),
            tasks: Vec::new(),
        };
        for index in 0..tasks {
            let file: Option<TaskFile> = read_json(&task_path(&job.dir, index, ".json")).ok();
            let instance = file.map(|f| f.instance).unwrap_or_default();
            let script = self
                .scripts
                .get(&instance)
                .cloned()
                .unwrap_or(Script::Run { late: 0 });
            job.tasks.push(FakeTask {
                instance,
                script,
                state: State::Pending,
            });
        }
        self.log.push(format!(
            "submit {id} {stage} {tasks} after={}",
            job.after.join(":")
        ));
        self.jobs.push(job);
        self.submitted.push(args.to_vec());
        Ok(id)
    }

    fn queue(&mut self) -> Result<Vec<QueueEntry>, SlurmError> {
        if self.queue_failures > 0 {
            self.queue_failures -= 1;
            return Err(SlurmError::Command {
                command: "squeue".into(),
                message: "slurm_load_jobs error: Socket timed out".into(),
            });
        }
        let mut entries = Vec::new();
        for job in &self.jobs {
            let reason = self.pending_reason(job);
            for (index, task) in job.tasks.iter().enumerate() {
                let (state, reason) = match task.state {
                    State::Pending => ("PENDING", reason),
                    State::Running { .. } => ("RUNNING", "None"),
                    _ => continue,
                };
                entries.push(QueueEntry {
                    job: job.id.clone(),
                    tasks: vec![index],
                    state: state.into(),
                    reason: reason.into(),
                });
            }
        }
        Ok(entries)
    }

    fn job(&mut self, id: &str) -> Result<HashMap<String, String>, SlurmError> {
        self.log.push(format!("scontrol {id}"));
        let unknown = || SlurmError::Command {
            command: format!("scontrol show job -o {id}"),
            message: "slurm_load_jobs error: Invalid job id specified".into(),
        };
        let task = self.task(id).ok_or_else(unknown)?;
        let (state, reason, exit) = match &task.state {
            State::Pending => ("PENDING", "None", "0:0"),
            State::Running { .. } => ("RUNNING", "None", "0:0"),
            State::Ended {
                state,
                reason,
                exit,
                ..
            } => (state.as_str(), reason.as_str(), exit.as_str()),
            State::Forgotten => return Err(unknown()),
        };
        Ok(
            [("JobState", state), ("Reason", reason), ("ExitCode", exit)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn cancel(&mut self, job_ids: &[String]) -> Result<(), SlurmError> {
        self.log.push(format!("scancel {}", job_ids.join(" ")));
        let reasons: Vec<&'static str> = self.jobs.iter().map(|j| self.pending_reason(j)).collect();
        for (job, pending) in self.jobs.iter_mut().zip(reasons) {
            if !job_ids.contains(&job.id) {
                continue;
            }
            for task in &mut job.tasks {
                // Slurm keeps a pending job's reason when it is cancelled (`Dependency`
                // for one that waited on another array).
                let reason = match task.state {
                    State::Pending => pending,
                    _ => "None",
                };
                if in_queue(&task.state) && !matches!(task.script, Script::Unkillable) {
                    task.state = ended("CANCELLED", reason, "0:15", None);
                }
            }
        }
        Ok(())
    }

    fn sleep(&mut self, total: Duration, _interrupt: &AtomicBool) {
        self.polls += 1;
        assert!(
            self.polls < MAX_POLLS,
            "the loop never ends: {:?}",
            self.log
        );
        self.slept += total;
        // The cluster moves on whether or not the loop was interrupted.
        self.step();
    }

    fn now(&self) -> Instant {
        self.start + self.slept
    }
}
