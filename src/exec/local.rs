//! The local executor: one thread per running job, admitted while its CPU and GPU weights
//! fit in the `--jobs` and `--gpus` budgets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use super::{execute, Executor, JobEvent, JobSpec};
use crate::config::Resources;
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

    /// A job asking for more CPUs than the whole budget still runs, alone, with all of them;
    /// a job needing GPUs that do not exist is refused by the scheduler before it gets here.
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
        std::thread::spawn(move || {
            let progress_tx = tx.clone();
            let sink = move |p| {
                let _ = progress_tx.send(JobEvent::Progress {
                    job: id,
                    progress: p,
                });
            };
            let result = execute(&job, &registry, &cancel, &sink).map(Box::new);
            let _ = tx.send(JobEvent::Finished { job: id, result });
        });
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
