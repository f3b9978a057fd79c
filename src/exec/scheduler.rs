//! The run loop: decide per instance (cached, ready, blocked), hand ready jobs to the
//! executor in dependency order, record results as they arrive, and keep going past
//! failures unless told otherwise.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Executor, JobEvent, JobSpec};
use crate::artifact::store::Store;
use crate::artifact::InstanceMeta;
use crate::dag::plan::key_inputs;
use crate::dag::Dag;
use crate::report::{Reporter, RunEvent};
use crate::stages::{InputArtifact, Registry};

/// How one instance ended in this run.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done(Box<InstanceMeta>),
    Cached(Box<InstanceMeta>),
    Failed(String),
    /// Not run because an input failed or the run stopped.
    Skipped(String),
    /// Outside `--only`.
    NotSelected,
}

impl Outcome {
    pub fn meta(&self) -> Option<&InstanceMeta> {
        match self {
            Outcome::Done(m) | Outcome::Cached(m) => Some(m),
            _ => None,
        }
    }

    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Done(_) => "ok",
            Outcome::Cached(_) => "cached",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) => "skipped",
            Outcome::NotSelected => "not_selected",
        }
    }
}

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
    pub fn count(&self, status: &str) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.status() == status)
            .count()
    }
}

/// Bookkeeping for an instance whose outcome is known, shared by every executor: remember
/// its key (for `plan --why`), link it into the run directory, and tell the reporter.
pub fn record(
    dag: &Dag,
    store: &Store,
    run_dir: Option<&Path>,
    i: usize,
    outcome: &Outcome,
    reporter: &mut dyn Reporter,
) {
    if let Some(meta) = outcome.meta() {
        let stage = dag.stage_id(i);
        let remembered = store.remember(stage, &meta.instance, &meta.cache_key);
        let linked = run_dir
            .map(|dir| store.link_into_run(dir, stage, &meta.instance, &meta.cache_key))
            .unwrap_or(Ok(()));
        if let Err(e) = remembered.and(linked) {
            tracing::warn!("bookkeeping for {} failed: {e}", meta.instance);
        }
    }
    let (stage, instance) = (dag.stage_id(i), dag.instances[i].id.as_str());
    match outcome {
        Outcome::Done(m) => reporter.event(RunEvent::Finished {
            stage,
            instance,
            seconds: m.seconds,
        }),
        Outcome::Cached(_) => reporter.event(RunEvent::Cached { stage, instance }),
        Outcome::Failed(error) => reporter.event(RunEvent::Failed {
            stage,
            instance,
            error,
        }),
        Outcome::Skipped(reason) => reporter.event(RunEvent::Skipped {
            stage,
            instance,
            reason,
        }),
        Outcome::NotSelected => {}
    }
}

enum State {
    Pending,
    Queued,
    Running,
    Over(Outcome),
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
    let mut state: Vec<State> = (0..n)
        .map(|i| {
            if options.selected.contains(&i) {
                State::Pending
            } else {
                State::Over(Outcome::NotSelected)
            }
        })
        .collect();
    let mut ready: VecDeque<Box<JobSpec>> = VecDeque::new();
    // Cache keys of submitted jobs, to record failed attempts for `plan --why`.
    let mut keys: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
    let mut stopping = false;
    let mut interrupted = false;
    let stage_of = |i: usize| dag.stage_id(i).to_string();

    let finish = |i: usize, outcome: &Outcome, reporter: &mut dyn Reporter| {
        record(dag, store, options.run_dir, i, outcome, reporter)
    };

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
            // Instances are in dependency order, so one pass settles whole cached chains.
            for i in 0..n {
                if !matches!(state[i], State::Pending) {
                    continue;
                }
                let inst = &dag.instances[i];
                let mut upstream: Vec<&InstanceMeta> = Vec::new();
                let mut blocked = None;
                let mut waiting = false;
                for &u in &inst.inputs {
                    match &state[u] {
                        State::Over(o) => match o.meta() {
                            Some(m) => upstream.push(m),
                            None => blocked = Some(dag.instances[u].id.clone()),
                        },
                        _ => waiting = true,
                    }
                }
                if let Some(failed) = blocked {
                    let outcome = Outcome::Skipped(format!("input {failed} did not finish"));
                    finish(i, &outcome, reporter);
                    state[i] = State::Over(outcome);
                    continue;
                }
                if waiting {
                    continue;
                }
                if inst.resources.gpus > options.gpus {
                    let outcome = Outcome::Failed(format!(
                        "needs {} GPU slot(s) but this run has {} (use --gpus, or set resources.gpus)",
                        inst.resources.gpus, options.gpus
                    ));
                    finish(i, &outcome, reporter);
                    state[i] = State::Over(outcome);
                    continue;
                }
                let ki = match key_inputs(dag, i, registry, &upstream) {
                    Ok(ki) => ki,
                    Err(e) => {
                        let outcome = Outcome::Failed(e);
                        finish(i, &outcome, reporter);
                        state[i] = State::Over(outcome);
                        continue;
                    }
                };
                let key = ki.key();
                if !options.forced.contains(&i) {
                    if let Some(meta) = store.lookup(&key) {
                        tracing::debug!(instance = %inst.id, %key, "cache hit");
                        let outcome = Outcome::Cached(Box::new(meta));
                        finish(i, &outcome, reporter);
                        state[i] = State::Over(outcome);
                        continue;
                    }
                }
                let inputs = inst
                    .inputs
                    .iter()
                    .zip(&upstream)
                    .map(|(&u, meta)| InputArtifact {
                        stage: stage_of(u),
                        instance: meta.instance.clone(),
                        dir: store.object_dir(&meta.cache_key),
                        meta: (*meta).clone(),
                    })
                    .collect();
                keys.insert(i, key.clone());
                ready.push_back(Box::new(JobSpec {
                    job: i,
                    pipeline: dag.pipeline.name.clone(),
                    stage: stage_of(i),
                    instance: inst.id.clone(),
                    kind: dag.kind(i).to_string(),
                    params: inst.params.clone(),
                    seed: inst.seed,
                    labels: inst.labels.clone(),
                    key,
                    key_inputs: ki,
                    inputs,
                    resources: inst.resources,
                    store_root: store.root().to_path_buf(),
                }));
                tracing::debug!(instance = %inst.id, forced = options.forced.contains(&i), "queued");
                state[i] = State::Queued;
            }
            while let Some(job) = ready.pop_front() {
                let i = job.job;
                match executor.try_submit(job) {
                    Ok(()) => {
                        tracing::debug!(instance = %dag.instances[i].id, "submitted");
                        state[i] = State::Running
                    }
                    Err(job) => {
                        ready.push_front(job);
                        break;
                    }
                }
            }
        } else {
            for job in ready.drain(..) {
                let outcome = Outcome::Skipped("run stopped before it started".into());
                finish(job.job, &outcome, reporter);
                state[job.job] = State::Over(outcome);
            }
        }
        if executor.running() == 0 && ready.is_empty() {
            let progress_possible = !stopping
                && state.iter().enumerate().any(|(i, s)| {
                    matches!(s, State::Pending)
                        && dag.instances[i]
                            .inputs
                            .iter()
                            .all(|&u| matches!(state[u], State::Over(_)))
                });
            if !progress_possible {
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
                    let outcome = match result {
                        Ok(meta) => Outcome::Done(meta),
                        Err(e) => {
                            if let Some(key) = keys.get(&job) {
                                let (stage, id) = (dag.stage_id(job), &dag.instances[job].id);
                                if let Err(err) = store.remember_failure(stage, id, key, &e) {
                                    tracing::warn!("recording the failure of {id}: {err}");
                                }
                            }
                            Outcome::Failed(e)
                        }
                    };
                    finish(job, &outcome, reporter);
                    if matches!(outcome, Outcome::Failed(_)) && options.fail_fast && !stopping {
                        stopping = true;
                        executor.cancel();
                        reporter.event(RunEvent::Stopping {
                            reason: "--fail-fast: a job failed, stopping the others",
                        });
                    }
                    state[job] = State::Over(outcome);
                }
            }
        }
    }
    let outcomes = state
        .into_iter()
        .map(|s| match s {
            State::Over(o) => o,
            _ => Outcome::Skipped(if stopping {
                "run stopped before it started".into()
            } else {
                "not reached".into()
            }),
        })
        .collect();
    RunSummary {
        outcomes,
        interrupted,
    }
}
