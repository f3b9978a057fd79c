//! The local executor: one job per admitted instance, while their CPU and GPU weights fit in
//! the `--jobs` and `--gpus` budgets. Each job runs on a rayon pool of its CPU weight (see
//! [`super::pools`]), so the stage's own parallel work stays within what it was admitted with.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use super::outcome::{Failure, InstanceError};
use super::pools::Pools;
use super::{execute_in, Executor, JobEvent, JobSpec};
use crate::config::Resources;
use crate::dag::Dag;
use crate::stages::Registry;

pub struct LocalExecutor {
    registry: Arc<Registry>,
    capacity: Resources,
    used: Resources,
    running: Vec<(usize, Resources)>,
    cancel: Arc<AtomicBool>,
    tx: Sender<JobEvent>,
    rx: Receiver<JobEvent>,
}

/// A stage whose instances ask for more CPUs than the run has (`--jobs`): they run alone,
/// with `jobs` threads. Said once per stage before the run, not applied silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clamped {
    pub stage: String,
    /// The most any of its selected instances asks for.
    pub cpus: usize,
    pub jobs: usize,
}

impl std::fmt::Display for Clamped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stage `{}` asks for {} CPUs (resources.cpus) but --jobs is {}: its instances run one at a time with {} thread(s) each",
            self.stage, self.cpus, self.jobs, self.jobs
        )
    }
}

/// The stages among `selected` instances that [`LocalExecutor`] will clamp to `jobs` CPUs, in
/// stage order.
pub fn clamped_stages(
    dag: &Dag,
    selected: &dyn Fn(usize) -> bool,
    jobs: usize,
) -> Vec<Clamped> {
    let jobs = jobs.max(1);
    let mut most: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, inst) in dag.instances.iter().enumerate() {
        if selected(i) && inst.resources.cpus > jobs {
            let m = most.entry(inst.stage).or_default();
            *m = (*m).max(inst.resources.cpus);
        }
    }
    dag.stage_order
        .iter()
        .filter_map(|s| {
            most.get(s).map(|&cpus| Clamped {
                stage: dag.pipeline.stages[*s].id.clone(),
                cpus,
                jobs,
            })
        })
        .collect()
}

impl LocalExecutor {
    pub fn new(registry: Arc<Registry>, jobs: usize, gpus: usize) -> LocalExecutor {
        let (tx, rx) = channel();
        LocalExecutor {
            registry,
            capacity: Resources {
                cpus: jobs.max(1),
                gpus,
            },
            used: Resources { cpus: 0, gpus: 0 },
            running: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            tx,
            rx,
        }
    }

    /// A job asking for more CPUs than the whole budget still runs, alone, with all of them
    /// ([`clamped_stages`] says so before the run); a job needing GPUs that do not exist is
    /// refused by the scheduler before it gets here.
    fn effective(&self, r: Resources) -> Resources {
        Resources {
            cpus: r.cpus.clamp(1, self.capacity.cpus),
            gpus: r.gpus.min(self.capacity.gpus),
        }
    }
}

impl Executor for LocalExecutor {
    fn try_submit(&mut self, mut job: Box<JobSpec>) -> Result<(), Box<JobSpec>> {
        let need = self.effective(job.resources);
        if self.used.cpus + need.cpus > self.capacity.cpus
            || self.used.gpus + need.gpus > self.capacity.gpus
        {
            return Err(job);
        }
        job.resources = need;
        self.used.cpus += need.cpus;
        self.used.gpus += need.gpus;
        self.running.push((job.job, need));
        let registry = Arc::clone(&self.registry);
        let cancel = Arc::clone(&self.cancel);
        let tx = self.tx.clone();
        let id = job.job;
        let _ = tx.send(JobEvent::Started { job: id });
        let lease = match Pools::shared().take(need.cpus) {
            Ok(lease) => lease,
            Err(e) => {
                let failure = Failure::ThreadPool {
                    threads: need.cpus,
                    message: e.to_string(),
                };
                let _ = tx.send(JobEvent::Finished {
                    job: id,
                    result: Err(failure.into()),
                });
                return Ok(());
            }
        };
        let progress_tx = tx.clone();
        lease.spawn(
            move |lease| {
                let sink = move |p| {
                    let _ = progress_tx.send(JobEvent::Progress {
                        job: id,
                        progress: p,
                    });
                };
                // The stage's panics are caught inside; this catches the engine's own, so a
                // bug fails one instance instead of leaving the run waiting for it forever.
                catch_unwind(AssertUnwindSafe(|| {
                    execute_in(lease, &job, &registry, &cancel, &sink)
                }))
                .unwrap_or_else(|_| {
                    Err(InstanceError::Failed(Failure::Panicked {
                        kind: job.kind.clone(),
                        message: "the engine panicked around the stage".into(),
                    }))
                })
            },
            move |result| {
                let _ = tx.send(JobEvent::Finished {
                    job: id,
                    result: result.map(Box::new),
                });
            },
        );
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Vec<JobEvent> {
        let mut events = Vec::new();
        match self.rx.recv_timeout(timeout) {
            Ok(e) => events.push(e),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return events,
        }
        events.extend(self.rx.try_iter());
        for e in &events {
            if let JobEvent::Finished { job, .. } = e {
                if let Some(pos) = self.running.iter().position(|(j, _)| j == job) {
                    let (_, r) = self.running.swap_remove(pos);
                    self.used.cpus -= r.cpus;
                    self.used.gpus -= r.gpus;
                }
            }
        }
        events
    }

    fn cancel(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    fn running(&self) -> usize {
        self.running.len()
    }
}
