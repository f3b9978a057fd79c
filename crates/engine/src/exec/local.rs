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
use crate::stage::Registry;

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
pub fn clamped_stages(dag: &Dag, selected: &dyn Fn(usize) -> bool, jobs: usize) -> Vec<Clamped> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::store::Store;
    use crate::events::NullReporter;
    use crate::exec::outcome::Outcome;
    use crate::exec::scheduler::{self, RunOptions};
    use crate::stage::{Stage, StageContext, StageError, StageOutput};
    use std::collections::HashSet;
    use std::path::Path;

    /// Reports the rayon pool it runs in, and on how many distinct threads of that pool a
    /// parallel loop inside it ran.
    struct Threads;

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}

    impl Stage for Threads {
        type Params = NoParams;
        const KIND: &'static str = "test_threads";
        const VERSION: u32 = 1;
        const SUMMARY: &'static str = "reports rayon's thread count (tests only)";
        const EXAMPLE: &'static str = "kind: test_threads\n";
        const WRITES: Option<&'static [&'static str]> = Some(&[]);

        fn run(_: &NoParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
            use rayon::prelude::*;
            let names: HashSet<String> = (0..20_000)
                .into_par_iter()
                .map(|_| std::thread::current().name().unwrap_or("").to_string())
                .collect();
            let own = format!("cbound-{}t-", ctx.threads);
            let foreign = names.iter().filter(|n| !n.starts_with(&own)).count();
            Ok(StageOutput::default()
                .metric("rayon_threads", rayon::current_num_threads() as f64)
                .metric("ctx_threads", ctx.threads as f64)
                .metric("foreign_threads", foreign as f64))
        }
    }

    /// Runs stages `one`, `two`, `three` (cpus 1, 2, 3) with `--jobs jobs`; the metrics of
    /// each, by stage.
    fn run_with(jobs: usize, dir: &Path) -> Vec<(String, BTreeMap<String, f64>)> {
        let registry = Arc::new(crate::stage::testkinds::registry().with::<Threads>());
        let text = concat!(
            "name: t\n",
            "stages:\n",
            "  one: {kind: test_threads, resources: {cpus: 1}}\n",
            "  two: {kind: test_threads, resources: {cpus: 2}}\n",
            "  three: {kind: test_threads, resources: {cpus: 3}}\n",
        );
        let pipeline = crate::config::load_str(text, Path::new("t.yaml"), &[], &registry).unwrap();
        let dag = Dag::build(pipeline, &registry);
        let store = Store::open(dir, "t").unwrap();
        let all: HashSet<usize> = (0..dag.instances.len()).collect();
        let options = RunOptions {
            selected: &all,
            forced: &all,
            fail_fast: false,
            gpus: 0,
            run_dir: None,
        };
        let mut executor = LocalExecutor::new(Arc::clone(&registry), jobs, 0);
        let summary = scheduler::run(
            &dag,
            &registry,
            &store,
            &mut executor,
            &options,
            &mut NullReporter,
            &AtomicBool::new(false),
        );
        summary
            .outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| match o {
                Outcome::Done(meta) => (dag.stage_id(i).to_string(), meta.metrics.clone()),
                other => panic!("{} did not run: {other:?}", dag.instances[i].id),
            })
            .collect()
    }

    #[test]
    fn a_stage_runs_in_a_rayon_pool_of_its_cpus() {
        let dir = tempfile::tempdir().unwrap();
        for (stage, metrics) in run_with(4, dir.path()) {
            let cpus = match stage.as_str() {
                "one" => 1.0,
                "two" => 2.0,
                _ => 3.0,
            };
            assert_eq!(metrics["rayon_threads"], cpus, "{stage}: {metrics:?}");
            assert_eq!(metrics["ctx_threads"], cpus, "{stage}: {metrics:?}");
            // Not one piece of its parallel work went to rayon's global pool.
            assert_eq!(metrics["foreign_threads"], 0.0, "{stage}: {metrics:?}");
        }
    }

    #[test]
    fn fewer_jobs_than_cpus_runs_with_jobs_threads_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let got = run_with(2, dir.path());
        let three = &got.iter().find(|(s, _)| s == "three").unwrap().1;
        assert_eq!(three["rayon_threads"], 2.0, "{three:?}");
        let registry = crate::stage::testkinds::registry().with::<Threads>();
        let text = "name: t\nstages:\n  one: {kind: test_threads, resources: {cpus: 1}}\n  three: {kind: test_threads, resources: {cpus: 3}}\n";
        let pipeline = crate::config::load_str(text, Path::new("t.yaml"), &[], &registry).unwrap();
        let dag = Dag::build(pipeline, &registry);
        let clamped = clamped_stages(&dag, &|_| true, 2);
        assert_eq!(
            clamped,
            vec![Clamped {
                stage: "three".into(),
                cpus: 3,
                jobs: 2
            }]
        );
        assert_eq!(
            clamped[0].to_string(),
            "stage `three` asks for 3 CPUs (resources.cpus) but --jobs is 2: its instances run one at a time with 2 thread(s) each"
        );
        assert!(clamped_stages(&dag, &|_| true, 3).is_empty());
        // Only selected instances count.
        assert!(clamped_stages(&dag, &|i| i == 0, 2).is_empty());
    }
}
