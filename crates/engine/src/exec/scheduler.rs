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
    if inst.resources.gpus > options.gpus {
        return Decided::Settled(Outcome::Failed(Failure::Gpus {
            needs: inst.resources.gpus,
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
                        key: key.clone(),
                        key_inputs: ki,
                        inputs,
                        resources: inst.resources,
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
    use super::*;
    use crate::events::NullReporter;
    use crate::exec::local::LocalExecutor;
    use crate::exec::outcome::InstanceStatus;
    use std::sync::Arc;

    #[test]
    fn instances_outside_the_selection_stay_not_selected_down_a_chain() {
        let registry = Arc::new(crate::stage::testkinds::registry());
        let text = concat!(
            "name: c\n",
            "stages:\n",
            "  a: {kind: synthetic, params: {n: 20}, matrix: {rho: [0.1, 0.2]}}\n",
            "  b: {kind: synthetic, params: {n: 20}, inputs: a}\n",
            "  c: {kind: synthetic, params: {n: 20}, inputs: b}\n",
            "  d: {kind: synthetic, params: {n: 20}, inputs: [a, c]}\n",
        );
        let p = crate::config::load_str(text, Path::new("c.yaml"), &[], &registry).unwrap();
        let dag = Dag::build(p, &registry);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "c").unwrap();
        let selected: HashSet<usize> = dag.resolve(&["a".into()]).unwrap();
        let none = HashSet::new();
        let options = RunOptions {
            selected: &selected,
            forced: &none,
            fail_fast: false,
            gpus: 0,
            run_dir: None,
        };
        let mut executor = LocalExecutor::new(Arc::clone(&registry), 2, 0);
        let summary = run(
            &dag,
            &registry,
            &store,
            &mut executor,
            &options,
            &mut NullReporter,
            &AtomicBool::new(false),
        );
        for (i, outcome) in summary.outcomes.iter().enumerate() {
            let want = if dag.stage_id(i) == "a" {
                InstanceStatus::Ok
            } else {
                InstanceStatus::NotSelected
            };
            assert_eq!(outcome.status(), want, "{}", dag.instances[i].id);
        }
        assert_eq!(summary.count(InstanceStatus::Ok), 2);
    }
}
