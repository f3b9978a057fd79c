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
use crate::events::{Reporter, RunEvent};
use crate::exec::outcome::{Failure, Outcome, SkipReason};
use crate::exec::scheduler::{Recorder, RunOptions, RunSummary};
use crate::stage::{Progress, Registry};

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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::config::ClusterResources;
    use crate::exec::outcome::InstanceStatus as Status;
    use crate::exec::slurm::fake::{FakeCluster, Script};
    use crate::exec::slurm::{InputSource, TaskFile};
    use crate::exec::testkit::{expect, Events, Fixture};

    const RUN: &str = "r1";

    fn settings() -> SlurmSettings {
        SlurmSettings {
            max_parallel: None,
            defaults: ClusterResources::default(),
            cbound: PathBuf::from("/opt/cbound"),
            workdir: PathBuf::from("/work"),
            poll: Duration::from_millis(500),
        }
    }

    fn follow_with(
        fx: &Fixture,
        cluster: &mut FakeCluster,
        options: &RunOptions,
        interrupt: &AtomicBool,
    ) -> (Result<RunSummary, SlurmError>, Events) {
        let mut events = Events::default();
        let summary = run_on(
            cluster,
            &fx.dag,
            &fx.registry,
            &fx.store,
            options,
            &settings(),
            RUN,
            &mut events,
            interrupt,
        );
        (summary, events)
    }

    /// Runs every instance of `fx` on `cluster` with `cbound run`'s defaults.
    fn follow(fx: &Fixture, cluster: &mut FakeCluster) -> (RunSummary, Events) {
        let (all, none) = (fx.all(), HashSet::new());
        let (summary, events) = follow_with(
            fx,
            cluster,
            &fx.options(&all, &none),
            &AtomicBool::new(false),
        );
        (
            summary.expect("the run follows its jobs to the end"),
            events,
        )
    }

    /// What the outcome of `id` says (its error, or why it was skipped).
    fn message(fx: &Fixture, summary: &RunSummary, id: &str) -> String {
        summary.outcomes[fx.index(id)].message().unwrap_or_default()
    }

    fn task_dir(fx: &Fixture, stage: &str) -> PathBuf {
        crate::exec::slurm::slurm_dir(fx.store.root(), RUN).join(stage)
    }

    #[test]
    fn every_task_succeeds_and_a_stage_waits_for_the_array_of_its_inputs() {
        let fx = Fixture::new(concat!(
            "  a: {kind: test_step, matrix: {x: [1, 2]}}\n",
            "  b: {kind: test_step, inputs: a, params: {x: 10}}\n",
        ));
        let mut cluster = FakeCluster::new(&fx.registry);
        let (summary, events) = follow(&fx, &mut cluster);
        assert!(!summary.interrupted);
        assert!(fx.statuses(&summary).values().all(|s| *s == Status::Ok));
        assert_eq!(fx.values(&summary)["b@x=2"], 12.0);
        assert_eq!(
            cluster.logged("submit "),
            ["100 a 2 after=", "101 b 2 after=100"]
        );
        let b_args = &cluster.submitted[1];
        for arg in ["--dependency=afterok:100", "--kill-on-invalid-dep=yes"] {
            assert!(b_args.contains(&arg.to_string()), "{b_args:?}");
        }
        // Slurm held b's tasks back until a's array completed.
        let at = |line: &str| cluster.log.iter().position(|l| l == line);
        let b_starts = at("start 101_0 b@x=1").unwrap();
        assert!(
            at("end 100_0 COMPLETED").unwrap() < b_starts,
            "{:?}",
            cluster.log
        );
        assert!(
            at("end 100_1 COMPLETED").unwrap() < b_starts,
            "{:?}",
            cluster.log
        );
        // b's task learns a's key on the node, from a's result file.
        let task: TaskFile = read_json(&task_dir(&fx, "b").join("1.json")).unwrap();
        match &task.inputs[0].source {
            InputSource::Task { result } => {
                assert_eq!(result, &task_dir(&fx, "a").join("1.result.json"));
            }
            other => panic!("{other:?}"),
        }
        // Each instance is reported started, with its progress, and finished, in that order.
        for id in ["a@x=1", "a@x=2", "b@x=1", "b@x=2"] {
            let mine: Vec<&str> = events
                .0
                .iter()
                .map(String::as_str)
                .filter(|e| e.split(' ').nth(1) == Some(id))
                .collect();
            let want = [
                format!("started {id}"),
                format!("progress {id} 1/2"),
                format!("finished {id}"),
            ];
            assert_eq!(mine, want, "{:?}", events.0);
        }
        assert!(cluster.queued().is_empty());
        assert!(cluster.logged("scancel").is_empty(), "{:?}", cluster.log);
    }

    #[test]
    fn instances_cached_before_the_run_are_not_submitted() {
        let fx = Fixture::new(concat!(
            "  a: {kind: test_step, matrix: {x: [1, 2]}}\n",
            "  b: {kind: test_step, inputs: a}\n",
        ));
        follow(&fx, &mut FakeCluster::new(&fx.registry));
        let mut again = FakeCluster::new(&fx.registry);
        let (summary, events) = follow(&fx, &mut again);
        assert_eq!(summary.count(Status::Cached), 4);
        assert!(again.log.is_empty(), "{:?}", again.log);
        assert_eq!(events.starting("cached ").len(), 4);
    }

    #[test]
    fn a_failed_task_is_reported_with_what_else_its_stderr_said() {
        let fx = Fixture::new(concat!(
            "  work: {kind: test_step, matrix: {x: [1, 2]}, params: {fail: 'kaboom: disk on fire', fail_if_x: 2}}\n",
            "  after: {kind: test_step, inputs: work}\n",
        ));
        let mut cluster = FakeCluster::new(&fx.registry).script(
            "work@x=2",
            Script::RunSaying(vec!["warning: disk almost full".into()]),
        );
        let (summary, events) = follow(&fx, &mut cluster);
        assert_eq!(
            fx.statuses(&summary),
            expect(&[
                ("work@x=1", Status::Ok),
                ("work@x=2", Status::Failed),
                ("after@x=1", Status::Skipped),
                ("after@x=2", Status::Skipped),
            ])
        );
        let error = message(&fx, &summary, "work@x=2");
        let log = task_dir(&fx, "work").join("1.err");
        assert!(error.starts_with("kaboom: disk on fire"), "{error}");
        assert!(
            error.contains(&format!("\n(Slurm job 100_1, log {})\n", log.display())),
            "{error}"
        );
        assert!(
            error.ends_with("\nlast lines of its stderr:\nwarning: disk almost full"),
            "{error}"
        );
        // The task printed its error to stderr too; it is not repeated.
        assert_eq!(error.matches("kaboom").count(), 1, "{error}");
        assert_eq!(events.starting("failed work@x=2: kaboom").len(), 1);
        // Slurm cancels the whole dependent array (afterok): the reader of the failed task
        // names it, the other one names the cancelled job.
        assert_eq!(
            message(&fx, &summary, "after@x=2"),
            "input work@x=2 did not finish"
        );
        assert_eq!(
            message(&fx, &summary, "after@x=1"),
            "Slurm cancelled job 101_0: a task of an array it waits for (afterok) failed"
        );
        assert!(cluster.queued().is_empty());
    }

    #[test]
    fn a_task_that_leaves_the_queue_without_a_result_is_a_failure() {
        let fx = Fixture::new("  lost: {kind: test_step, matrix: {x: [1, 2]}}\n");
        let node_fail = Script::Die {
            state: Some(("NODE_FAIL", "NodeDown", "0:9")),
            stderr: vec![
                "slurmstepd: error: *** JOB 100_0 CANCELLED DUE TO NODE FAILURE ***".into(),
            ],
        };
        let forgotten = Script::Die {
            state: None,
            stderr: vec![],
        };
        let mut cluster = FakeCluster::new(&fx.registry)
            .script("lost@x=1", node_fail)
            .script("lost@x=2", forgotten);
        let (summary, events) = follow(&fx, &mut cluster);
        assert_eq!(summary.count(Status::Failed), 2);
        let dir = task_dir(&fx, "lost");
        assert_eq!(
            message(&fx, &summary, "lost@x=1"),
            format!(
                "Slurm job 100_0 ended NODE_FAIL (NodeDown, exit code 0:9) without a result; \
                 last lines of its stderr ({}):\n\
                 slurmstepd: error: *** JOB 100_0 CANCELLED DUE TO NODE FAILURE ***",
                dir.join("0.err").display()
            )
        );
        assert_eq!(
            message(&fx, &summary, "lost@x=2"),
            format!(
                "Slurm job 100_1 left the Slurm queue without a result; its stderr ({}) is empty",
                dir.join("1.err").display()
            )
        );
        let lost: Vec<&str> = events
            .0
            .iter()
            .map(String::as_str)
            .filter(|e| e.contains("lost@x=1"))
            .collect();
        assert_eq!(lost.len(), 2, "{lost:?}");
        assert_eq!(lost[0], "started lost@x=1");
        assert!(lost[1].starts_with("failed lost@x=1: Slurm job 100_0 ended NODE_FAIL"));
    }

    #[test]
    fn a_result_that_shows_up_late_on_a_shared_filesystem_still_counts_for_a_while() {
        let fx = Fixture::new("  slow_fs: {kind: test_step, matrix: {x: [1, 2]}}\n");
        let mut cluster = FakeCluster::new(&fx.registry)
            .script("slow_fs@x=1", Script::Run { late: 5 })
            .script("slow_fs@x=2", Script::Run { late: 30 });
        let (summary, _) = follow(&fx, &mut cluster);
        // Five polls late: Slurm says it completed, so the loop waits for the file.
        assert_eq!(
            summary.outcomes[fx.index("slow_fs@x=1")].status(),
            Status::Ok
        );
        assert!(
            cluster.log.contains(&"scontrol 100_0".to_string()),
            "{:?}",
            cluster.log
        );
        // Thirty polls late is past what the loop allows a filesystem.
        assert!(
            message(&fx, &summary, "slow_fs@x=2").starts_with(
                "Slurm job 100_1 ended COMPLETED (None, exit code 0:0) without a result"
            ),
            "{}",
            message(&fx, &summary, "slow_fs@x=2")
        );
    }

    #[test]
    fn ctrl_c_cancels_every_submitted_job_and_leaves_none_in_the_queue() {
        let fx = Fixture::new(concat!(
            "  slow: {kind: test_step}\n",
            "  after: {kind: test_step, inputs: slow}\n",
        ));
        let interrupt = Arc::new(AtomicBool::new(false));
        let mut cluster = FakeCluster::new(&fx.registry)
            .script("slow", Script::Hang)
            .interrupt_when_stuck(&interrupt);
        let (all, none) = (fx.all(), HashSet::new());
        let (summary, events) =
            follow_with(&fx, &mut cluster, &fx.options(&all, &none), &interrupt);
        let summary = summary.unwrap();
        assert!(summary.interrupted);
        assert_eq!(
            fx.statuses(&summary),
            expect(&[("slow", Status::Cancelled), ("after", Status::Skipped)])
        );
        assert_eq!(
            message(&fx, &summary, "after"),
            "run stopped before it finished"
        );
        assert_eq!(cluster.logged("scancel "), ["100 101"]);
        assert!(cluster.queued().is_empty(), "{:?}", cluster.log);
        let stopping = events.starting("stopping: ");
        assert!(
            stopping.len() == 1 && stopping[0].ends_with("cancelling the submitted Slurm jobs"),
            "{:?}",
            events.0
        );
        assert!(events.0.contains(&"cancelled slow".into()));
    }

    #[test]
    fn fail_fast_cancels_the_other_jobs() {
        let fx = Fixture::new(concat!(
            "  bad: {kind: test_step, params: {fail: boom}}\n",
            "  slow: {kind: test_step}\n",
        ));
        let mut cluster = FakeCluster::new(&fx.registry).script("slow", Script::Hang);
        let (all, none) = (fx.all(), HashSet::new());
        let mut options = fx.options(&all, &none);
        options.fail_fast = true;
        let (summary, events) = follow_with(&fx, &mut cluster, &options, &AtomicBool::new(false));
        let summary = summary.unwrap();
        assert!(!summary.interrupted);
        assert_eq!(
            fx.statuses(&summary),
            expect(&[("bad", Status::Failed), ("slow", Status::Cancelled)])
        );
        assert_eq!(cluster.logged("scancel "), ["100 101"]);
        assert!(cluster.queued().is_empty());
        assert!(events.0.contains(
            &"stopping: --fail-fast: a job failed, cancelling the other Slurm jobs".into()
        ));
    }

    #[test]
    fn a_job_that_outlives_scancel_is_reported_still_queued_after_a_minute() {
        let fx = Fixture::new("  stubborn: {kind: test_step}\n");
        let interrupt = Arc::new(AtomicBool::new(false));
        let mut cluster = FakeCluster::new(&fx.registry)
            .script("stubborn", Script::Unkillable)
            .interrupt_when_stuck(&interrupt);
        let (all, none) = (fx.all(), HashSet::new());
        let (summary, _) = follow_with(&fx, &mut cluster, &fx.options(&all, &none), &interrupt);
        let summary = summary.unwrap();
        assert_eq!(
            message(&fx, &summary, "stubborn"),
            "run stopped; Slurm job 100_0 was cancelled but is still in the queue"
        );
        // The loop's clock (the fake's: nothing slept) passed the minute it gives Slurm.
        assert!(
            cluster.slept() > Duration::from_secs(60),
            "{:?}",
            cluster.slept()
        );
        // Cancelled once on Ctrl-C, and once more on the way out since it is still queued.
        assert_eq!(cluster.logged("scancel "), ["100", "100"]);
    }

    #[test]
    fn a_rejected_array_cancels_the_arrays_submitted_before_it() {
        let fx = Fixture::new(concat!(
            "  a: {kind: test_step}\n",
            "  b: {kind: test_step, inputs: a}\n",
        ));
        let mut cluster = FakeCluster::new(&fx.registry).reject("b");
        let (all, none) = (fx.all(), HashSet::new());
        let (summary, _) = follow_with(
            &fx,
            &mut cluster,
            &fx.options(&all, &none),
            &AtomicBool::new(false),
        );
        match summary {
            Err(SlurmError::Rejected { stage, message }) => {
                assert_eq!(stage, "b");
                assert!(message.contains("Invalid partition"), "{message}");
            }
            other => panic!("{:?}", other.map(|s| fx.statuses(&s))),
        }
        assert_eq!(cluster.logged("scancel "), ["100"]);
        assert!(cluster.queued().is_empty());
    }

    #[test]
    fn a_queue_that_cannot_be_read_for_a_while_only_delays_the_run() {
        let fx = Fixture::new("  a: {kind: test_step, matrix: {x: [1, 2]}}\n");
        let mut cluster = FakeCluster::new(&fx.registry).failing_queue(3);
        let (summary, _) = follow(&fx, &mut cluster);
        assert_eq!(summary.count(Status::Ok), 2);
    }
}
