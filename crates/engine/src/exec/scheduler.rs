//! The run loop: decide per instance (cached, ready, blocked), hand ready jobs to the
//! executor in dependency order, record results as they arrive, and keep going past
//! failures unless told otherwise.
//!
//! Its cost is linear in the number of instances: an instance is looked at when its last
//! input settles (a count per instance, not a scan of all of them per event), and every
//! settled instance costs the same bookkeeping however many there are.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::outcome::{Failure, InstanceStatus, Outcome, SkipReason};
use super::{Executor, JobEvent, JobSpec};
use crate::artifact::store::Store;
use crate::artifact::{InstanceMeta, KeyInputs};
use crate::dag::plan::key_inputs;
use crate::dag::Dag;
use crate::events::{Reporter, RunEvent};
use crate::stage::{InputArtifact, Registry};

pub struct RunOptions<'a> {
    /// Instances to consider; the rest are `NotSelected`. Must be closed under inputs.
    pub selected: &'a HashSet<usize>,
    /// Instances to recompute even when cached.
    pub forced: &'a HashSet<usize>,
    pub fail_fast: bool,
    /// GPU slots the executor has; an instance needing more can never run.
    pub gpus: usize,
    /// Where finished instances are linked as `<run>/<stage>/<instance>`.
    pub run_dir: Option<&'a Path>,
}

pub struct RunSummary {
    pub outcomes: Vec<Outcome>,
    pub interrupted: bool,
}

impl RunSummary {
    pub fn count(&self, status: InstanceStatus) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status() == status)
            .count()
    }
}

/// Bookkeeping for instances whose outcome is known, shared by every executor: remember
/// each result's key and every failed or cancelled attempt (for `plan --why`), tell the
/// reporter, and link each stage into the run directory once all its selected instances
/// have settled (see [`Store::link_stage`]).
pub struct Recorder<'a> {
    dag: &'a Dag,
    store: &'a Store,
    run_dir: Option<&'a Path>,
    /// Selected instances of each stage not settled yet.
    unsettled: Vec<usize>,
    /// Finished (instance, key) pairs of each stage.
    finished: Vec<Vec<(usize, String)>>,
    linked: Vec<bool>,
}

impl<'a> Recorder<'a> {
    pub fn new(dag: &'a Dag, store: &'a Store, options: &RunOptions<'a>) -> Recorder<'a> {
        let stages = dag.pipeline.stages.len();
        let mut unsettled = vec![0; stages];
        for &i in options.selected {
            if let Some(n) = dag
                .instances
                .get(i)
                .and_then(|inst| unsettled.get_mut(inst.stage))
            {
                *n += 1;
            }
        }
        Recorder {
            dag,
            store,
            run_dir: options.run_dir,
            unsettled,
            finished: vec![Vec::new(); stages],
            linked: vec![false; stages],
        }
    }

    /// Records how instance `i` ended. `key` is the cache key of the attempt, when there was
    /// one, for a failed or cancelled attempt.
    pub fn record(
        &mut self,
        i: usize,
        outcome: &Outcome,
        key: Option<&str>,
        reporter: &mut dyn Reporter,
    ) {
        let dag = self.dag;
        let (stage, instance) = (dag.stage_id(i), dag.instances[i].id.as_str());
        let s = dag.instances[i].stage;
        let remembered = match (outcome, key) {
            (Outcome::Done(meta) | Outcome::Cached(meta), _) => {
                self.finished[s].push((i, meta.cache_key.clone()));
                self.store.remember(stage, &meta.instance, &meta.cache_key)
            }
            (Outcome::Failed(failure), Some(key)) => self.store.remember_attempt(
                stage,
                instance,
                key,
                InstanceStatus::Failed,
                &failure.to_string(),
            ),
            (Outcome::Cancelled { .. }, Some(key)) => self.store.remember_attempt(
                stage,
                instance,
                key,
                InstanceStatus::Cancelled,
                "cancelled",
            ),
            _ => Ok(()),
        };
        if let Err(e) = remembered {
            tracing::warn!("recording the state of {instance} failed: {e}");
        }
        match outcome {
            Outcome::Done(m) => reporter.event(RunEvent::Finished {
                stage,
                instance,
                seconds: m.seconds,
            }),
            Outcome::Cached(_) => reporter.event(RunEvent::Cached { stage, instance }),
            Outcome::Failed(failure) => reporter.event(RunEvent::Failed {
                stage,
                instance,
                error: &failure.to_string(),
            }),
            Outcome::Cancelled { .. } => reporter.event(RunEvent::Cancelled { stage, instance }),
            Outcome::Skipped(reason) => reporter.event(RunEvent::Skipped {
                stage,
                instance,
                reason: &reason.to_string(),
            }),
            Outcome::NotSelected => return,
        }
        if let Some(n) = self.unsettled.get_mut(s) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.link(s);
            }
        }
    }

    fn link(&mut self, s: usize) {
        let (Some(run_dir), false) = (self.run_dir, self.linked[s]) else {
            return;
        };
        if self.finished[s].is_empty() {
            return;
        }
        self.linked[s] = true;
        let dag = self.dag;
        let pairs: Vec<(&str, &str)> = self.finished[s]
            .iter()
            .map(|(i, key)| (dag.instances[*i].id.as_str(), key.as_str()))
            .collect();
        let stage = dag.pipeline.stages[s].id.as_str();
        if let Err(e) = self.store.link_stage(run_dir, stage, &pairs) {
            tracing::warn!("linking stage {stage} into the run directory failed: {e}");
        }
    }

    /// Links the stages that have finished instances but did not settle completely (the run
    /// stopped), so the run directory shows everything it finished.
    pub fn close(mut self) {
        for s in 0..self.finished.len() {
            self.link(s);
        }
    }
}

enum State {
    Pending,
    /// Handed to the executor (or about to be), under this cache key.
    Queued(String),
    Over(Outcome),
}

/// What [`run`] keeps per instance and how instances become ready.
struct Book {
    state: Vec<State>,
    /// Inputs of each instance that have not settled.
    waiting_on: Vec<usize>,
    /// The instances that read each instance.
    readers: Vec<Vec<usize>>,
    /// Pending instances whose inputs have all settled, looked at in index (dependency) order.
    ready: BTreeSet<usize>,
}

impl Book {
    fn settle(&mut self, i: usize, outcome: Outcome) {
        self.state[i] = State::Over(outcome);
        for &r in &self.readers[i] {
            self.waiting_on[r] = self.waiting_on[r].saturating_sub(1);
            if self.waiting_on[r] == 0 && matches!(self.state[r], State::Pending) {
                self.ready.insert(r);
            }
        }
    }
}

/// Ready instances from which deciding them is spread over threads.
const PARALLEL_DECISIONS: usize = 64;

/// What is known about a ready instance before anything runs.
enum Decided {
    /// Settled without running: cached, or refused (an input did not finish, too many GPUs,
    /// no cache key).
    Settled(Outcome),
    /// To run, under this key.
    Run { ki: KeyInputs, key: String },
}

/// Decides instance `i`, whose inputs have all settled. Reads only: safe to call for many
/// instances at once.
fn decide(
    dag: &Dag,
    registry: &Registry,
    store: &Store,
    options: &RunOptions,
    state: &[State],
    i: usize,
) -> Decided {
    let inst = &dag.instances[i];
    let mut upstream: Vec<&InstanceMeta> = Vec::with_capacity(inst.inputs.len());
    let mut blocked = None;
    for &u in &inst.inputs {
        match &state[u] {
            State::Over(o) if o.meta().is_some() => upstream.extend(o.meta()),
            // Failed, cancelled, skipped (or, impossibly, not over); the last one is named.
            _ => blocked = Some(u),
        }
    }
    if let Some(u) = blocked {
        return Decided::Settled(Outcome::Skipped(SkipReason::InputDidNotFinish(
            dag.instances[u].id.clone(),
        )));
    }
    if inst.resources.gpus.devices() > options.gpus {
        return Decided::Settled(Outcome::Failed(Failure::Gpus {
            needs: inst.resources.gpus.devices(),
            has: options.gpus,
        }));
    }
    let ki = match key_inputs(dag, i, registry, &upstream) {
        Ok(ki) => ki,
        Err(e) => return Decided::Settled(Outcome::Failed(Failure::Key(e))),
    };
    let key = ki.key();
    if !options.forced.contains(&i) {
        if let Some(meta) = store.lookup(&key) {
            tracing::debug!(instance = %inst.id, %key, "cache hit");
            return Decided::Settled(Outcome::Cached(Box::new(meta)));
        }
    }
    Decided::Run { ki, key }
}

pub fn run(
    dag: &Dag,
    registry: &Registry,
    store: &Store,
    executor: &mut dyn Executor,
    options: &RunOptions,
    reporter: &mut dyn Reporter,
    interrupt: &AtomicBool,
) -> RunSummary {
    let n = dag.instances.len();
    let mut readers = vec![Vec::new(); n];
    for (i, inst) in dag.instances.iter().enumerate() {
        for &u in &inst.inputs {
            readers[u].push(i);
        }
    }
    // Unselected instances are over before anything starts (and never become ready: the
    // selection is closed under inputs, so no selected instance waits for one).
    let state: Vec<State> = (0..n)
        .map(|i| {
            if options.selected.contains(&i) {
                State::Pending
            } else {
                State::Over(Outcome::NotSelected)
            }
        })
        .collect();
    let waiting_on: Vec<usize> = dag
        .instances
        .iter()
        .map(|inst| {
            inst.inputs
                .iter()
                .filter(|&&u| !matches!(state[u], State::Over(_)))
                .count()
        })
        .collect();
    let ready = (0..n)
        .filter(|&i| matches!(state[i], State::Pending) && waiting_on[i] == 0)
        .collect();
    let mut book = Book {
        state,
        waiting_on,
        readers,
        ready,
    };
    let mut recorder = Recorder::new(dag, store, options);
    let mut queue: VecDeque<Box<JobSpec>> = VecDeque::new();
    let mut stopping = false;
    let mut interrupted = false;

    loop {
        if interrupt.load(Ordering::Relaxed) && !interrupted {
            interrupted = true;
            if !stopping {
                stopping = true;
                executor.cancel();
                reporter.event(RunEvent::Stopping {
                    reason: super::signal::stopping_jobs(),
                });
            }
        }
        if !stopping {
            // Settling one instance can make its readers ready: they join the next batch,
            // so this loop settles whole cached chains before anything is submitted.
            while !book.ready.is_empty() {
                let batch: Vec<usize> = std::mem::take(&mut book.ready)
                    .into_iter()
                    .filter(|&i| matches!(book.state[i], State::Pending))
                    .collect();
                let decide = |&i: &usize| decide(dag, registry, store, options, &book.state, i);
                // Deciding reads each instance's cache entry and hashes its key inputs; a
                // sweep's thousands of them at once are worth rayon's threads (the decisions
                // come back in index order, as if made one by one).
                let decided: Vec<Decided> = if batch.len() >= PARALLEL_DECISIONS {
                    use rayon::prelude::*;
                    batch.par_iter().map(decide).collect()
                } else {
                    batch.iter().map(decide).collect()
                };
                for (i, decided) in batch.into_iter().zip(decided) {
                    let (ki, key) = match decided {
                        Decided::Settled(outcome) => {
                            recorder.record(i, &outcome, None, reporter);
                            book.settle(i, outcome);
                            continue;
                        }
                        Decided::Run { ki, key } => (ki, key),
                    };
                    let inst = &dag.instances[i];
                    let inputs = inst
                        .inputs
                        .iter()
                        .filter_map(|&u| match &book.state[u] {
                            State::Over(o) => o.meta().map(|meta| InputArtifact {
                                stage: dag.stage_id(u).to_string(),
                                instance: meta.instance.clone(),
                                dir: store.object_dir(&meta.cache_key),
                                meta: meta.clone(),
                            }),
                            _ => None,
                        })
                        .collect();
                    queue.push_back(Box::new(JobSpec {
                        job: i,
                        pipeline: dag.pipeline.name.clone(),
                        stage: dag.stage_id(i).to_string(),
                        instance: inst.id.clone(),
                        kind: dag.kind(i).to_string(),
                        params: inst.params.clone(),
                        prepared: inst.prepared.clone(),
                        seed: inst.seed,
                        labels: inst.labels.clone(),
                        sweep: inst.sweep.clone(),
                        config_id: inst.config_id.clone(),
                        key: key.clone(),
                        key_inputs: ki,
                        inputs,
                        resources: inst.resources,
                        gpu_ids: Vec::new(),
                        store_root: store.root().to_path_buf(),
                    }));
                    tracing::debug!(instance = %inst.id, forced = options.forced.contains(&i), "queued");
                    book.state[i] = State::Queued(key);
                }
            }
            while let Some(job) = queue.pop_front() {
                let i = job.job;
                match executor.try_submit(job) {
                    Ok(()) => tracing::debug!(instance = %dag.instances[i].id, "submitted"),
                    Err(job) => {
                        queue.push_front(job);
                        break;
                    }
                }
            }
        } else {
            for job in queue.drain(..) {
                let outcome = Outcome::Skipped(SkipReason::StoppedBeforeStart);
                recorder.record(job.job, &outcome, None, reporter);
                book.settle(job.job, outcome);
            }
        }
        if executor.running() == 0 && queue.is_empty() {
            if stopping || book.ready.is_empty() {
                break;
            }
            continue;
        }
        for event in executor.poll(Duration::from_millis(100)) {
            match event {
                JobEvent::Started { job } => reporter.event(RunEvent::Started {
                    stage: dag.stage_id(job),
                    instance: &dag.instances[job].id,
                }),
                JobEvent::Progress { job, progress } => reporter.event(RunEvent::Progress {
                    stage: dag.stage_id(job),
                    instance: &dag.instances[job].id,
                    progress: &progress,
                }),
                JobEvent::Finished { job, result } => {
                    let outcome = Outcome::of(result);
                    let key = match &book.state[job] {
                        State::Queued(key) => Some(key.as_str()),
                        _ => None,
                    };
                    recorder.record(job, &outcome, key, reporter);
                    let failed = matches!(outcome, Outcome::Failed(_));
                    book.settle(job, outcome);
                    if failed && options.fail_fast && !stopping {
                        stopping = true;
                        executor.cancel();
                        reporter.event(RunEvent::Stopping {
                            reason: "--fail-fast: a job failed, stopping the others",
                        });
                    }
                }
            }
        }
    }
    let reason = if stopping {
        SkipReason::StoppedBeforeStart
    } else {
        SkipReason::NotReached
    };
    let outcomes = book
        .state
        .into_iter()
        .map(|s| match s {
            State::Over(o) => o,
            // Never looked at: no event (there was nothing to watch), only the row.
            _ => Outcome::Skipped(reason.clone()),
        })
        .collect();
    recorder.close();
    RunSummary {
        outcomes,
        interrupted,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::exec::local::LocalExecutor;
    use crate::exec::outcome::InstanceStatus as Status;
    use crate::exec::testkit::{expect, Events, FakeExecutor, Fixture, Meeting};

    fn run_fake(
        fx: &Fixture,
        executor: &mut FakeExecutor,
        options: &RunOptions,
        interrupt: &AtomicBool,
    ) -> (RunSummary, Events) {
        let mut events = Events::default();
        let summary = run(
            &fx.dag,
            &fx.registry,
            &fx.store,
            executor,
            options,
            &mut events,
            interrupt,
        );
        (summary, events)
    }

    /// The ids of the inputs of instance `id`.
    fn inputs_of(fx: &Fixture, id: &str) -> Vec<String> {
        fx.dag.instances[fx.index(id)]
            .inputs
            .iter()
            .map(|&u| fx.dag.instances[u].id.clone())
            .collect()
    }

    #[test]
    fn an_instance_is_submitted_only_after_all_its_inputs_finished() {
        let fx = Fixture::new(concat!(
            "  a: {kind: test_step, matrix: {x: [1, 2]}}\n",
            "  b: {kind: test_step, inputs: a, params: {x: 10}}\n",
            "  c: {kind: test_step, inputs: b, params: {x: 100}}\n",
            "  d: {kind: test_step, inputs: [a, c], params: {x: 1000}}\n",
            "  lone: {kind: test_step}\n",
        ));
        let (all, none) = (fx.all(), HashSet::new());
        // Four slots: everything ready at once is submitted at once, and the fake finishes
        // the last one submitted first.
        let mut executor = FakeExecutor::new(&fx.registry, 4);
        let (summary, _) = run_fake(
            &fx,
            &mut executor,
            &fx.options(&all, &none),
            &AtomicBool::new(false),
        );
        assert!(fx.statuses(&summary).values().all(|s| *s == Status::Ok));
        for (at, id) in executor.log.iter().enumerate() {
            let Some(id) = id.strip_prefix("submit ") else {
                continue;
            };
            for input in inputs_of(&fx, id) {
                let finished = executor.log[..at].contains(&format!("finish {input}"));
                assert!(
                    finished,
                    "{id} submitted before {input} finished: {:?}",
                    executor.log
                );
            }
        }
        // Each value is x plus its inputs' values, so every instance read the right inputs.
        let values = fx.values(&summary);
        assert_eq!(values["c@x=1"], 111.0);
        assert_eq!(values["d@x=2"], 1000.0 + 2.0 + 112.0);
        // Independent instances did run side by side: `lone` and both `a` were submitted
        // before anything finished.
        let first_finish = executor
            .log
            .iter()
            .position(|l| l.starts_with("finish"))
            .unwrap();
        let early = &executor.log[..first_finish];
        for id in ["a@x=1", "a@x=2", "lone"] {
            assert!(
                early.contains(&format!("submit {id}")),
                "{:?}",
                executor.log
            );
        }
    }

    #[test]
    fn a_job_the_executor_refuses_waits_at_the_head_of_the_queue() {
        let fx = Fixture::new(concat!(
            "  one: {kind: test_step, matrix: {x: [1, 2, 3]}}\n",
            "  two: {kind: test_step, resources: {cpus: 2}}\n",
            "  three: {kind: test_step, matrix: {x: [4, 5]}}\n",
        ));
        let (all, none) = (fx.all(), HashSet::new());
        let mut executor = FakeExecutor::new(&fx.registry, 2);
        let (summary, _) = run_fake(
            &fx,
            &mut executor,
            &fx.options(&all, &none),
            &AtomicBool::new(false),
        );
        assert!(fx.statuses(&summary).values().all(|s| *s == Status::Ok));
        let refused = executor.logged("refuse ");
        assert!(
            !refused.is_empty(),
            "the budget never filled: {:?}",
            executor.log
        );
        // After a refusal nothing else is offered before the refused job is taken: instances
        // start in dependency (index) order, whatever their weights.
        for (at, line) in executor.log.iter().enumerate() {
            if let Some(id) = line.strip_prefix("refuse ") {
                let next = executor.log[at + 1..]
                    .iter()
                    .find_map(|l| l.strip_prefix("submit ").or(l.strip_prefix("refuse ")));
                assert_eq!(next, Some(id), "{:?}", executor.log);
            }
        }
        // Each instance was submitted once, in index order.
        let order: Vec<&str> = fx.dag.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(executor.logged("submit "), order);
    }

    #[test]
    fn a_failure_skips_what_reads_it_and_independent_branches_go_on() {
        let fx = Fixture::new(concat!(
            "  bad: {kind: test_step, params: {fail: boom}}\n",
            "  after_bad: {kind: test_step, inputs: bad}\n",
            "  after_after_bad: {kind: test_step, inputs: after_bad}\n",
            "  good: {kind: test_step, params: {x: 3}}\n",
            "  after_good: {kind: test_step, inputs: good}\n",
            "  gpu: {kind: test_step, resources: {gpus: 1}}\n",
            "  after_gpu: {kind: test_step, inputs: gpu}\n",
        ));
        let (all, none) = (fx.all(), HashSet::new());
        let mut executor = FakeExecutor::new(&fx.registry, 2);
        let (summary, events) = run_fake(
            &fx,
            &mut executor,
            &fx.options(&all, &none),
            &AtomicBool::new(false),
        );
        assert_eq!(
            fx.statuses(&summary),
            expect(&[
                ("bad", Status::Failed),
                ("after_bad", Status::Skipped),
                ("after_after_bad", Status::Skipped),
                ("good", Status::Ok),
                ("after_good", Status::Ok),
                ("gpu", Status::Failed),
                ("after_gpu", Status::Skipped),
            ])
        );
        assert_eq!(fx.values(&summary)["after_good"], 3.0);
        let failed = events.starting("failed bad: ");
        assert!(
            failed.len() == 1 && failed[0].contains("boom"),
            "{:?}",
            events.0
        );
        assert!(events
            .0
            .contains(&"skipped after_bad: input bad did not finish".into()));
        assert!(events
            .0
            .contains(&"skipped after_after_bad: input after_bad did not finish".into()));
        // An instance needing GPUs the run does not have fails without being submitted.
        let gpu = events.starting("failed gpu: ");
        assert!(gpu.len() == 1 && gpu[0].contains("needs 1 GPU slot(s) but this run has 0"));
        assert!(
            !executor.log.iter().any(|l| l.ends_with(" gpu")),
            "{:?}",
            executor.log
        );
        assert!(!executor.log.contains(&"cancel".to_string()));
    }

    #[test]
    fn fail_fast_cancels_running_jobs_and_starts_nothing_more() {
        let fx = Fixture::new(concat!(
            "  bad: {kind: test_step, params: {fail: boom}}\n",
            "  slow: {kind: test_step}\n",
            "  after_slow: {kind: test_step, inputs: slow}\n",
            "  waiting: {kind: test_step}\n",
        ));
        let (all, none) = (fx.all(), HashSet::new());
        let mut executor = FakeExecutor::new(&fx.registry, 2).hang(&["slow"]);
        let mut options = fx.options(&all, &none);
        options.fail_fast = true;
        let (summary, events) = run_fake(&fx, &mut executor, &options, &AtomicBool::new(false));
        assert_eq!(
            fx.statuses(&summary),
            expect(&[
                ("bad", Status::Failed),
                ("slow", Status::Cancelled),
                ("after_slow", Status::Skipped),
                ("waiting", Status::Skipped),
            ])
        );
        assert!(!summary.interrupted);
        assert_eq!(executor.logged("submit "), ["bad", "slow"]);
        assert_eq!(executor.logged("cancel"), [""]);
        assert!(events
            .0
            .contains(&"stopping: --fail-fast: a job failed, stopping the others".into()));
        assert!(events.0.contains(&"cancelled slow".into()));
        assert!(events
            .0
            .contains(&"skipped waiting: run stopped before it started".into()));
    }

    #[test]
    fn ctrl_c_cancels_running_jobs_and_starts_nothing_more() {
        let fx = Fixture::new(concat!(
            "  stuck: {kind: test_step}\n",
            "  queued: {kind: test_step}\n",
            "  after_stuck: {kind: test_step, inputs: stuck}\n",
        ));
        let (all, none) = (fx.all(), HashSet::new());
        let interrupt = Arc::new(AtomicBool::new(false));
        // One slot: `queued` waits behind `stuck`, which never finishes until cancelled; the
        // fake presses Ctrl-C when nothing else can happen.
        let mut executor = FakeExecutor::new(&fx.registry, 1)
            .hang(&["stuck"])
            .interrupt_when_stuck(&interrupt);
        let (summary, events) = run_fake(&fx, &mut executor, &fx.options(&all, &none), &interrupt);
        assert!(summary.interrupted);
        assert_eq!(
            fx.statuses(&summary),
            expect(&[
                ("stuck", Status::Cancelled),
                ("queued", Status::Skipped),
                ("after_stuck", Status::Skipped),
            ])
        );
        assert_eq!(executor.logged("submit "), ["stuck"]);
        assert_eq!(executor.logged("cancel"), [""]);
        let stopping = events.starting("stopping: ");
        assert!(
            stopping.len() == 1 && stopping[0].ends_with("stopping running jobs"),
            "{:?}",
            events.0
        );
        assert!(events.0.contains(&"cancelled stuck".into()));
        assert!(events
            .0
            .contains(&"skipped queued: run stopped before it started".into()));
        // Cancelled is its own outcome, not a failure.
        assert_eq!(summary.count(Status::Failed), 0);
    }

    #[test]
    fn cached_instances_are_not_run_again_and_forced_ones_are() {
        let fx = Fixture::new(concat!(
            "  a: {kind: test_step, matrix: {x: [1, 2]}}\n",
            "  b: {kind: test_step, inputs: a}\n",
        ));
        let (all, none) = (fx.all(), HashSet::new());
        let mut first = FakeExecutor::new(&fx.registry, 2);
        let (summary, _) = run_fake(
            &fx,
            &mut first,
            &fx.options(&all, &none),
            &AtomicBool::new(false),
        );
        assert_eq!(summary.count(Status::Ok), 4);
        assert_eq!(first.logged("submit ").len(), 4);

        let mut second = FakeExecutor::new(&fx.registry, 2);
        let (summary, events) = run_fake(
            &fx,
            &mut second,
            &fx.options(&all, &none),
            &AtomicBool::new(false),
        );
        assert_eq!(summary.count(Status::Cached), 4);
        assert!(second.log.is_empty(), "{:?}", second.log);
        let mut cached = events.starting("cached ");
        cached.sort();
        assert_eq!(
            cached,
            [
                "cached a@x=1",
                "cached a@x=2",
                "cached b@x=1",
                "cached b@x=2"
            ]
        );
        assert_eq!(fx.values(&summary)["b@x=2"], 2.0);

        let forced: HashSet<usize> = [fx.index("b@x=1")].into();
        let mut third = FakeExecutor::new(&fx.registry, 2);
        let (summary, _) = run_fake(
            &fx,
            &mut third,
            &fx.options(&all, &forced),
            &AtomicBool::new(false),
        );
        assert_eq!(third.logged("submit "), ["b@x=1"]);
        assert_eq!(summary.count(Status::Ok), 1);
        assert_eq!(summary.count(Status::Cached), 3);
    }

    #[test]
    fn events_follow_each_instance_from_start_to_finish() {
        let fx = Fixture::new(concat!(
            "  a: {kind: test_step}\n",
            "  b: {kind: test_step, inputs: a}\n",
        ));
        let (all, none) = (fx.all(), HashSet::new());
        let mut executor = FakeExecutor::new(&fx.registry, 2);
        let (_, events) = run_fake(
            &fx,
            &mut executor,
            &fx.options(&all, &none),
            &AtomicBool::new(false),
        );
        assert_eq!(
            events.0,
            [
                "started a",
                "progress a 1/2",
                "finished a",
                "started b",
                "progress b 1/2",
                "finished b"
            ]
        );
    }

    #[test]
    fn instances_outside_the_selection_stay_not_selected_down_a_chain() {
        let fx = Fixture::new(concat!(
            "  a: {kind: test_step, matrix: {x: [1, 2]}}\n",
            "  b: {kind: test_step, inputs: a}\n",
            "  c: {kind: test_step, inputs: b}\n",
            "  d: {kind: test_step, inputs: [a, c]}\n",
        ));
        let selected: HashSet<usize> = fx.dag.resolve(&["a".into()]).unwrap();
        let none = HashSet::new();
        let mut executor = FakeExecutor::new(&fx.registry, 2);
        let (summary, events) = run_fake(
            &fx,
            &mut executor,
            &fx.options(&selected, &none),
            &AtomicBool::new(false),
        );
        for (i, outcome) in summary.outcomes.iter().enumerate() {
            let want = if fx.dag.stage_id(i) == "a" {
                Status::Ok
            } else {
                Status::NotSelected
            };
            assert_eq!(outcome.status(), want, "{}", fx.dag.instances[i].id);
        }
        assert_eq!(summary.count(Status::Ok), 2);
        // Nothing is said about instances outside the selection.
        assert!(!events.0.is_empty());
        assert!(
            events.0.iter().all(|e| e.contains(" a@x=")),
            "{:?}",
            events.0
        );
    }

    #[test]
    fn the_local_executor_fills_its_cpu_budget_and_never_exceeds_it() {
        // `pairs` instances wait inside until two of them run at once, so the budget of two
        // CPUs is used; `wide` takes the whole budget, so it must run alone.
        let fx = Fixture::new(concat!(
            "  pairs: {kind: test_step, params: {meet: budget, parties: 2}, matrix: {x: [1, 2, 3, 4]}}\n",
            "  wide: {kind: test_step, params: {meet: budget}, resources: {cpus: 2}}\n",
        ));
        let (all, none) = (fx.all(), HashSet::new());
        let mut executor = LocalExecutor::new(Arc::clone(&fx.registry), 2, 0);
        let mut events = Events::default();
        let summary = run(
            &fx.dag,
            &fx.registry,
            &fx.store,
            &mut executor,
            &fx.options(&all, &none),
            &mut events,
            &AtomicBool::new(false),
        );
        assert!(
            fx.statuses(&summary).values().all(|s| *s == Status::Ok),
            "{:?}",
            events.0
        );
        let met = Meeting::named("budget").state();
        assert_eq!((met.most_inside, met.most_threads), (2, 2), "{met:?}");
        // The executor reports a job started when it admits it and finished when it frees
        // its CPUs, and admits the next one only after that, so counting CPUs along the
        // events is exactly what it held at each point.
        let (mut held, mut most) = (0, 0);
        for line in &events.0 {
            if let Some(id) = line.strip_prefix("started ") {
                held += fx.dag.instances[fx.index(id)].resources.cpus;
            } else if let Some(id) = line.strip_prefix("finished ") {
                held -= fx.dag.instances[fx.index(id)].resources.cpus;
            }
            most = most.max(held);
        }
        assert_eq!(most, 2, "{:?}", events.0);
    }
}
