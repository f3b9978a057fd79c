//! Following a submitted run: the loop that reads the queue and each task's files until every
//! task has ended, reports progress and outcomes as a local run would, and cancels the run's
//! jobs on Ctrl-C, SIGTERM or `--fail-fast`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::cluster::{scancel, Cluster, SlurmCli};
use super::queue::QueueEntry;
use super::submission::{submission, submit};
use super::{task_path, ProgressFile, SlurmError, SlurmSettings, TaskResult};
use crate::artifact::read_json;
use crate::artifact::store::Store;
use crate::dag::plan::plan;
use crate::dag::Dag;
use crate::exec::outcome::{Failure, Outcome, SkipReason};
use crate::exec::scheduler::{Recorder, RunOptions, RunSummary};
use crate::report::{Reporter, RunEvent};
use crate::stages::{Progress, Registry};

/// The last `n` lines of a file, or nothing.
fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// An instance submitted in this run, followed until it ends.
pub(super) struct Task {
    pub(super) instance: usize,
    pub(super) group: usize,
    pub(super) index: usize,
    pub(super) dir: PathBuf,
    started: bool,
    progress: Option<ProgressFile>,
    /// Polls since it was last seen in the queue without a result.
    gone: u32,
}

impl Task {
    /// Task `index` of group `group`'s array, computing `instance`, with its files in `dir`.
    pub(super) fn new(instance: usize, group: usize, index: usize, dir: PathBuf) -> Task {
        Task {
            instance,
            group,
            index,
            dir,
            started: false,
            progress: None,
            gone: 0,
        }
    }
}

/// Runs the plan on Slurm and follows it to the end; the counterpart of
/// [`scheduler::run`](crate::exec::scheduler::run).
#[allow(clippy::too_many_arguments)]
pub fn run(
    dag: &Dag,
    registry: &Registry,
    store: &Store,
    options: &RunOptions,
    settings: &SlurmSettings,
    run_id: &str,
    reporter: &mut dyn Reporter,
    interrupt: &AtomicBool,
) -> Result<RunSummary, SlurmError> {
    run_on(
        &mut SlurmCli,
        dag,
        registry,
        store,
        options,
        settings,
        run_id,
        reporter,
        interrupt,
    )
}

/// [`run`] on any [`Cluster`] (the unit tests use an in-memory one).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_on(
    cluster: &mut dyn Cluster,
    dag: &Dag,
    registry: &Registry,
    store: &Store,
    options: &RunOptions,
    settings: &SlurmSettings,
    run_id: &str,
    reporter: &mut dyn Reporter,
    interrupt: &AtomicBool,
) -> Result<RunSummary, SlurmError> {
    let decisions = plan(dag, store, registry, options.forced);
    let sub = submission(dag, &decisions, &|i| options.selected.contains(&i));
    if !sub.groups.is_empty() {
        // Fail before writing anything if the tools are missing.
        cluster.check()?;
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..dag.instances.len()).map(|_| None).collect();
    let mut recorder = Recorder::new(dag, store, options);
    for (i, outcome) in sub.settled {
        recorder.record(i, &outcome, None, reporter);
        outcomes[i] = Some(outcome);
    }

    let mut job_ids: Vec<String> = Vec::new();
    let mut tasks: Vec<Task> = Vec::new();
    let submitted = submit(
        cluster,
        dag,
        &sub.groups,
        &decisions,
        options,
        settings,
        store,
        run_id,
        interrupt,
        &mut job_ids,
        &mut tasks,
    );
    if let Err(e) = submitted {
        // Leave nothing behind in the queue that this run can no longer follow.
        scancel(cluster, &job_ids);
        return Err(e);
    }
    let submitted_all = job_ids.len() == sub.groups.len();

    let mut stopping = !submitted_all;
    let mut interrupted = !submitted_all;
    let mut cancelled = false;
    if stopping {
        reporter.event(RunEvent::Stopping {
            reason: crate::exec::signal::cancelling_slurm_jobs(),
        });
    }
    // Tasks still to hear from.
    let mut active: BTreeSet<usize> = (0..tasks.len())
        .filter(|&t| tasks[t].group < job_ids.len())
        .collect();
    for t in 0..tasks.len() {
        if !active.contains(&t) {
            outcomes[tasks[t].instance] = Some(Outcome::Skipped(SkipReason::StoppedBeforeStart));
        }
    }
    let mut stop_deadline: Option<Instant> = None;
    let mut queue_errors = 0;
    while !active.is_empty() {
        if interrupt.load(Ordering::Relaxed) && !interrupted {
            interrupted = true;
            if !stopping {
                stopping = true;
                reporter.event(RunEvent::Stopping {
                    reason: crate::exec::signal::cancelling_slurm_jobs(),
                });
            }
        }
        if stopping && !cancelled {
            scancel(cluster, &job_ids);
            cancelled = true;
            stop_deadline = Some(cluster.now() + Duration::from_secs(60));
        }
        let queue = match cluster.queue() {
            Ok(queue) => {
                queue_errors = 0;
                queue
            }
            Err(e) => {
                queue_errors += 1;
                if queue_errors == 1 || queue_errors % 20 == 0 {
                    tracing::warn!("reading the Slurm queue: {e}");
                }
                cluster.sleep(settings.poll, interrupt);
                continue;
            }
        };
        let mut in_queue: HashMap<(&str, usize), &QueueEntry> = HashMap::new();
        for entry in &queue {
            for &t in &entry.tasks {
                in_queue.insert((entry.job.as_str(), t), entry);
            }
        }
        let mut never_satisfied: BTreeSet<String> = BTreeSet::new();
        let mut newly_failed = false;
        for t in active.clone() {
            let task = &mut tasks[t];
            let i = task.instance;
            let job = job_ids[task.group].as_str();
            let (stage, instance) = (dag.stage_id(i), dag.instances[i].id.as_str());
            let result_path = task_path(&task.dir, task.index, ".result.json");
            let result: Option<TaskResult> = read_json(&result_path).ok();
            let queued = in_queue.get(&(job, task.index));
            let outcome = if let Some(result) = result {
                // A result is written last, just before the task exits: it is final.
                Some(task_outcome(store, result, task, job))
            } else if let Some(entry) = queued {
                task.gone = 0;
                if matches!(entry.state.as_str(), "RUNNING" | "COMPLETING") && !task.started {
                    task.started = true;
                    reporter.event(RunEvent::Started { stage, instance });
                }
                if entry.reason == "DependencyNeverSatisfied" {
                    never_satisfied.insert(job.to_string());
                }
                if task.started {
                    let p: Option<ProgressFile> =
                        read_json(&task_path(&task.dir, task.index, ".progress.json")).ok();
                    if p.is_some() && p != task.progress {
                        task.progress = p.clone();
                        if let Some(p) = p {
                            let progress = Progress {
                                done: p.done,
                                total: p.total,
                                message: p.message,
                            };
                            reporter.event(RunEvent::Progress {
                                stage,
                                instance,
                                progress: &progress,
                            });
                        }
                    }
                }
                None
            } else {
                // Out of the queue without a result: allow a shared filesystem a moment to
                // show the file, then ask Slurm how it ended.
                task.gone += 1;
                tracing::debug!(
                    instance,
                    gone = task.gone,
                    "not in the Slurm queue, no result yet"
                );
                if task.gone < 3 && !stopping {
                    None
                } else {
                    // `None` while Slurm still has it (squeue can miss a task for a moment).
                    vanished(cluster, dag, i, &outcomes, task, job, stopping)
                }
            };
            if let Some(outcome) = outcome {
                if !task.started && matches!(outcome, Outcome::Done(_) | Outcome::Failed(_)) {
                    reporter.event(RunEvent::Started { stage, instance });
                }
                let mut key = None;
                if matches!(outcome, Outcome::Failed(_) | Outcome::Cancelled { .. }) {
                    newly_failed |= matches!(outcome, Outcome::Failed(_));
                    let result: Option<TaskResult> = read_json(&result_path).ok();
                    key = result.and_then(|r| r.cache_key);
                }
                recorder.record(i, &outcome, key.as_deref(), reporter);
                outcomes[i] = Some(outcome);
                active.remove(&t);
            }
        }
        if !never_satisfied.is_empty() {
            // --kill-on-invalid-dep normally does this; an `sbatch:` flag may have turned it off.
            scancel(cluster, &never_satisfied.into_iter().collect::<Vec<_>>());
        }
        if newly_failed && options.fail_fast && !stopping {
            stopping = true;
            reporter.event(RunEvent::Stopping {
                reason: "--fail-fast: a job failed, cancelling the other Slurm jobs",
            });
            continue;
        }
        if stop_deadline.is_some_and(|d| cluster.now() > d) {
            for t in std::mem::take(&mut active) {
                let i = tasks[t].instance;
                let outcome = Outcome::Skipped(SkipReason::StillQueued {
                    job: format!("{}_{}", job_ids[tasks[t].group], tasks[t].index),
                });
                recorder.record(i, &outcome, None, reporter);
                outcomes[i] = Some(outcome);
            }
            break;
        }
        if !active.is_empty() {
            cluster.sleep(settings.poll, interrupt);
        }
    }
    // Every instance has its outcome: whatever of this run is still queued would run
    // unobserved (e.g. an array that was never cancelled after a failure upstream).
    if let Ok(queue) = cluster.queue() {
        let leftover: BTreeSet<String> = queue
            .into_iter()
            .filter(|e| {
                job_ids.contains(&e.job) && matches!(e.state.as_str(), "PENDING" | "RUNNING")
            })
            .map(|e| e.job)
            .collect();
        scancel(cluster, &leftover.into_iter().collect::<Vec<_>>());
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Skipped(SkipReason::NotReached)))
        .collect();
    recorder.close();
    Ok(RunSummary {
        outcomes,
        interrupted,
    })
}

/// The outcome of a task that wrote its result.
fn task_outcome(store: &Store, result: TaskResult, task: &Task, job: &str) -> Outcome {
    let err_path = task_path(&task.dir, task.index, ".err");
    if let Some(error) = result.error {
        // The task prints its error to stderr too; add only what else it said there
        // (warnings, a panic's backtrace).
        let first = error.lines().next().unwrap_or_default().trim();
        let extra: Vec<String> = tail(&err_path, 20)
            .into_iter()
            .filter(|l| {
                let repeats_error =
                    error.contains(l.trim()) || (!first.is_empty() && l.contains(first));
                !repeats_error
            })
            .collect();
        let mut message = format!(
            "{error}\n(Slurm job {job}_{}, log {})",
            task.index,
            err_path.display()
        );
        if !extra.is_empty() {
            message.push_str(&format!(
                "\nlast lines of its stderr:\n{}",
                extra.join("\n")
            ));
        }
        return Outcome::Failed(Failure::Slurm(message));
    }
    let Some(key) = result.cache_key else {
        return Outcome::Failed(Failure::Slurm(format!(
            "Slurm job {job}_{} wrote a result without a key: {}",
            task.index,
            err_path.display()
        )));
    };
    match store.lookup(&key) {
        Some(meta) if result.cached => Outcome::Cached(Box::new(meta)),
        Some(meta) => Outcome::Done(Box::new(meta)),
        None => Outcome::Failed(Failure::Slurm(format!(
            "Slurm job {job}_{} on {} finished, but its result {key} is not in {}: is the output directory on a filesystem the nodes share?",
            task.index,
            result.host,
            store.root().display(),
        ))),
    }
}

/// The outcome of a task that left the queue without writing a result; `None` while Slurm
/// says it is not over yet.
fn vanished(
    cluster: &mut dyn Cluster,
    dag: &Dag,
    i: usize,
    outcomes: &[Option<Outcome>],
    task: &Task,
    job: &str,
    stopping: bool,
) -> Option<Outcome> {
    if stopping {
        // A task that had started was stopped by the run (scancel): cancelled, like a local
        // instance; one still waiting in the queue never ran.
        return Some(if task.started {
            Outcome::Cancelled { staging: None }
        } else {
            Outcome::Skipped(SkipReason::StoppedBeforeFinish)
        });
    }
    let failed_input = dag.instances[i].inputs.iter().find(|&&u| {
        matches!(
            outcomes[u],
            Some(Outcome::Failed(_)) | Some(Outcome::Skipped(_)) | Some(Outcome::Cancelled { .. })
        )
    });
    if let Some(&u) = failed_input {
        return Some(Outcome::Skipped(SkipReason::InputDidNotFinish(
            dag.instances[u].id.clone(),
        )));
    }
    let id = format!("{job}_{}", task.index);
    // Slurm forgets a job some minutes after it ended: then nothing is known, as below.
    let info = cluster.job(&id).unwrap_or_default();
    let state = info.get("JobState").map(String::as_str).unwrap_or("");
    let reason = info.get("Reason").map(String::as_str).unwrap_or("");
    let ended = matches!(
        state,
        "" | "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "PREEMPTED"
    );
    // A task that completed wrote its result before exiting: give a shared filesystem's
    // caches up to ten seconds to show it.
    let waiting_for_file = state == "COMPLETED" && task.gone < 20;
    if !ended || waiting_for_file {
        return None;
    }
    if reason == "DependencyNeverSatisfied" || (state == "CANCELLED" && reason == "Dependency") {
        return Some(Outcome::Skipped(SkipReason::DependencyFailed { job: id }));
    }
    let err_path = task_path(&task.dir, task.index, ".err");
    let how = if state.is_empty() {
        "left the Slurm queue".to_string()
    } else {
        format!(
            "ended {state} ({reason}, exit code {})",
            info.get("ExitCode").map(String::as_str).unwrap_or("?")
        )
    };
    let lines = tail(&err_path, 10);
    let stderr = if lines.is_empty() {
        format!("its stderr ({}) is empty", err_path.display())
    } else {
        format!(
            "last lines of its stderr ({}):\n{}",
            err_path.display(),
            lines.join("\n")
        )
    };
    Some(Outcome::Failed(Failure::Slurm(format!(
        "Slurm job {id} {how} without a result; {stderr}"
    ))))
}
