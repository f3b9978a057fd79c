//! The local executor: one job per admitted instance, while their CPU and GPU weights fit in
//! the `--jobs` and `--gpus` budgets. Each job runs on a rayon pool of its CPU weight (see
//! [`super::pools`]), so the stage's own parallel work stays within what it was admitted with.
//! A job that asks for whole GPUs is given that many device ids out of `0..--gpus` that no
//! running job holds (its stage passes them to the CUDA provider, a program gets them as
//! `CUDA_VISIBLE_DEVICES`), so two instances never share a GPU unless the stage asks for a
//! share (`resources: {gpus: 0.5}`): shares run on one device together while they add up to
//! at most one, and never beside a job holding that device whole ([`GpuLoad`]).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use super::outcome::{Failure, InstanceError};
use super::pools::Pools;
use super::{execute_in, Executor, JobEvent, JobSpec};
use crate::config::{Gpus, Resources};
use crate::dag::Dag;
use crate::stage::Registry;

/// A started job and what it holds until it finishes.
struct Running {
    job: usize,
    cpus: usize,
    gpu_ids: Vec<usize>,
    /// Thousandths of each of `gpu_ids` it holds.
    gpu_milli: u32,
}

/// How much of each device running jobs hold, in thousandths ([`Gpus::PER_DEVICE`] is all of
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuLoad {
    milli: Vec<u32>,
}

impl GpuLoad {
    pub fn new(devices: usize) -> GpuLoad {
        GpuLoad {
            milli: vec![0; devices],
        }
    }

    /// The device ids `need` would get now, or `None` if it must wait. Whole devices are the
    /// lowest idle ones. A share goes to the most-used device it still fits on, so shares
    /// pack together and leave whole devices idle for jobs that need them; it starts an idle
    /// device only when no shared one has room.
    pub fn fit(&self, need: Gpus) -> Option<Vec<usize>> {
        if need.is_none() {
            return Some(Vec::new());
        }
        if need.is_share() {
            let share = need.milli_per_device();
            let shared = self
                .milli
                .iter()
                .enumerate()
                .filter(|(_, &m)| m > 0 && m + share <= Gpus::PER_DEVICE)
                .max_by_key(|(i, &m)| (m, std::cmp::Reverse(*i)))
                .map(|(i, _)| i);
            let idle = || self.milli.iter().position(|&m| m == 0);
            return shared.or_else(idle).map(|i| vec![i]);
        }
        let idle: Vec<usize> = (0..self.milli.len())
            .filter(|&i| self.milli[i] == 0)
            .take(need.devices())
            .collect();
        (idle.len() == need.devices()).then_some(idle)
    }

    fn take(&mut self, ids: &[usize], milli: u32) {
        for &i in ids {
            self.milli[i] += milli;
        }
    }

    fn give_back(&mut self, ids: &[usize], milli: u32) {
        for &i in ids {
            self.milli[i] = self.milli[i].saturating_sub(milli);
        }
    }
}

pub struct LocalExecutor {
    registry: Arc<Registry>,
    /// `--jobs`.
    cpus: usize,
    used_cpus: usize,
    gpus: GpuLoad,
    running: Vec<Running>,
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
            cpus: jobs.max(1),
            used_cpus: 0,
            gpus: GpuLoad::new(gpus),
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
            cpus: r.cpus.clamp(1, self.cpus),
            gpus: r.gpus,
        }
    }
}

impl Executor for LocalExecutor {
    fn try_submit(&mut self, mut job: Box<JobSpec>) -> Result<(), Box<JobSpec>> {
        let need = self.effective(job.resources);
        if self.used_cpus + need.cpus > self.cpus {
            return Err(job);
        }
        let Some(ids) = self.gpus.fit(need.gpus) else {
            return Err(job);
        };
        let gpu_milli = need.gpus.milli_per_device();
        self.gpus.take(&ids, gpu_milli);
        job.resources = need;
        job.gpu_ids = ids;
        self.used_cpus += need.cpus;
        self.running.push(Running {
            job: job.job,
            cpus: need.cpus,
            gpu_ids: job.gpu_ids.clone(),
            gpu_milli,
        });
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
                if let Some(pos) = self.running.iter().position(|r| r.job == *job) {
                    let done = self.running.swap_remove(pos);
                    self.used_cpus -= done.cpus;
                    self.gpus.give_back(&done.gpu_ids, done.gpu_milli);
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

    /// Holds its GPUs in a process-wide set while it runs (failing if another instance holds
    /// one of them), meeting the others that run with it so that instances do overlap.
    struct GpuProbe;

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct GpuProbeParams {
        #[allow(dead_code)]
        x: i64,
        parties: usize,
        /// A share of a GPU: other shares may hold its device too (not checked), and it meets
        /// them at a meeting of its own.
        #[serde(default)]
        shared: bool,
    }

    fn held() -> &'static std::sync::Mutex<HashSet<usize>> {
        static HELD: std::sync::OnceLock<std::sync::Mutex<HashSet<usize>>> =
            std::sync::OnceLock::new();
        HELD.get_or_init(Default::default)
    }

    impl Stage for GpuProbe {
        type Params = GpuProbeParams;
        const KIND: &'static str = "test_gpu_probe";
        const VERSION: u32 = 1;
        const SUMMARY: &'static str = "holds its GPU ids while it runs (tests only)";
        const EXAMPLE: &'static str = "kind: test_gpu_probe\n";
        const WRITES: Option<&'static [&'static str]> = Some(&[]);

        fn run(p: &GpuProbeParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
            if p.shared {
                crate::exec::testkit::Meeting::named("local-gpus-shared")
                    .attend(p.parties, ctx.threads)?;
                let out = StageOutput::default()
                    .metric("gpu0", ctx.gpus.first().map_or(-1.0, |&id| id as f64))
                    .metric("share", ctx.gpu_share.unwrap_or(0.0));
                return Ok(out);
            }
            {
                let mut held = held().lock().unwrap_or_else(|e| e.into_inner());
                for id in ctx.gpus {
                    if !held.insert(*id) {
                        return Err(StageError::Failed(format!("GPU {id} is already in use")));
                    }
                }
            }
            crate::exec::testkit::Meeting::named("local-gpus").attend(p.parties, ctx.threads)?;
            let mut held = held().lock().unwrap_or_else(|e| e.into_inner());
            for id in ctx.gpus {
                held.remove(id);
            }
            let mut out = StageOutput::default().metric("gpus", ctx.gpus.len() as f64);
            for (k, id) in ctx.gpus.iter().enumerate() {
                out = out.metric(&format!("gpu{k}"), *id as f64);
            }
            Ok(out)
        }
    }

    #[test]
    fn running_instances_get_distinct_gpus() {
        let registry = Arc::new(crate::stage::testkinds::registry().with::<GpuProbe>());
        // Four one-GPU instances on two GPUs with CPUs for all four: they run two at a time
        // (each pair meets inside), never more than one on a GPU; then a two-GPU instance,
        // and one that asks for none.
        let text = concat!(
            "name: t\n",
            "stages:\n",
            "  one: {kind: test_gpu_probe, matrix: {x: [1, 2, 3, 4]}, params: {parties: 2}, resources: {cpus: 1, gpus: 1}}\n",
            "  two: {kind: test_gpu_probe, inputs: one, params: {x: 0, parties: 1}, resources: {cpus: 1, gpus: 2}}\n",
            "  none: {kind: test_gpu_probe, inputs: two, params: {x: 0, parties: 1}, resources: {cpus: 1, gpus: 0}}\n",
        );
        let pipeline = crate::config::load_str(text, Path::new("t.yaml"), &[], &registry).unwrap();
        let dag = Dag::build(pipeline, &registry);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "t").unwrap();
        let all: HashSet<usize> = (0..dag.instances.len()).collect();
        let options = RunOptions {
            selected: &all,
            forced: &all,
            fail_fast: false,
            gpus: 2,
            run_dir: None,
        };
        let mut executor = LocalExecutor::new(Arc::clone(&registry), 4, 2);
        let summary = scheduler::run(
            &dag,
            &registry,
            &store,
            &mut executor,
            &options,
            &mut NullReporter,
            &AtomicBool::new(false),
        );
        let mut one_ids = Vec::new();
        for (i, o) in summary.outcomes.iter().enumerate() {
            let Outcome::Done(meta) = o else {
                panic!("{} did not run: {o:?}", dag.instances[i].id);
            };
            let m = &meta.metrics;
            match dag.stage_id(i) {
                "one" => {
                    assert_eq!(m["gpus"], 1.0, "{m:?}");
                    one_ids.push(m["gpu0"]);
                }
                "two" => assert_eq!((m["gpu0"], m["gpu1"]), (0.0, 1.0), "{m:?}"),
                _ => assert_eq!(m["gpus"], 0.0, "{m:?}"),
            }
        }
        one_ids.sort_by(f64::total_cmp);
        // Both GPUs were used, each by two of the four, never by two at once (else a probe
        // would have failed above).
        assert_eq!(one_ids, vec![0.0, 0.0, 1.0, 1.0]);
        let meeting = crate::exec::testkit::Meeting::named("local-gpus").state();
        assert_eq!(meeting.most_inside, 2, "{meeting:?}");
    }

    #[test]
    fn gpu_shares_pack_onto_one_device_and_never_beside_a_whole_holder() {
        let half = Gpus::parse(0.5).unwrap();
        let mut load = GpuLoad::new(2);
        // The first share starts device 0; the second joins it, leaving device 1 whole.
        let a = load.fit(half).unwrap();
        load.take(&a, half.milli_per_device());
        let b = load.fit(half).unwrap();
        load.take(&b, half.milli_per_device());
        assert_eq!((a.clone(), b.clone()), (vec![0], vec![0]));
        // A whole-GPU job gets the idle device; a third share then waits for room.
        let whole = load.fit(Gpus::whole(1)).unwrap();
        assert_eq!(whole, vec![1]);
        load.take(&whole, Gpus::whole(1).milli_per_device());
        assert_eq!(load.fit(half), None);
        assert_eq!(load.fit(Gpus::whole(1)), None);
        // When a share finishes, the next share fits beside the other, not beside the whole.
        load.give_back(&a, half.milli_per_device());
        assert_eq!(load.fit(half), Some(vec![0]));
        // Shares that do not add up to one device: 0.4 twice fits, a third does not.
        let mut load = GpuLoad::new(1);
        let share = Gpus::parse(0.4).unwrap();
        for _ in 0..2 {
            let ids = load.fit(share).unwrap();
            load.take(&ids, share.milli_per_device());
        }
        assert_eq!(load.fit(share), None);
        assert_eq!(load.fit(Gpus::parse(0.2).unwrap()), Some(vec![0]));
        assert_eq!(load.fit(Gpus::NONE), Some(vec![]));
    }

    #[test]
    fn half_gpu_instances_run_together_on_one_device() {
        let registry = Arc::new(crate::stage::testkinds::registry().with::<GpuProbe>());
        // Two half-GPU instances on one GPU meet inside (they run at once, both on device
        // 0); the probe's exclusivity check is per id, so each runs under its own name here.
        let text = concat!(
            "name: t\n",
            "stages:\n",
            "  a: {kind: test_gpu_probe, params: {x: 1, parties: 2, shared: true}, resources: {cpus: 1, gpus: 0.5}}\n",
            "  b: {kind: test_gpu_probe, params: {x: 2, parties: 2, shared: true}, resources: {cpus: 1, gpus: 0.5}}\n",
        );
        let pipeline = crate::config::load_str(text, Path::new("t.yaml"), &[], &registry).unwrap();
        let dag = Dag::build(pipeline, &registry);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "t").unwrap();
        let all: HashSet<usize> = (0..dag.instances.len()).collect();
        let options = RunOptions {
            selected: &all,
            forced: &all,
            fail_fast: false,
            gpus: 1,
            run_dir: None,
        };
        let mut executor = LocalExecutor::new(Arc::clone(&registry), 4, 1);
        let summary = scheduler::run(
            &dag,
            &registry,
            &store,
            &mut executor,
            &options,
            &mut NullReporter,
            &AtomicBool::new(false),
        );
        for (i, o) in summary.outcomes.iter().enumerate() {
            let Outcome::Done(meta) = o else {
                panic!("{} did not run: {o:?}", dag.instances[i].id);
            };
            assert_eq!(meta.metrics["gpu0"], 0.0, "{:?}", meta.metrics);
            assert_eq!(meta.metrics["share"], 0.5, "{:?}", meta.metrics);
        }
        let meeting = crate::exec::testkit::Meeting::named("local-gpus-shared").state();
        assert_eq!(meeting.most_inside, 2, "{meeting:?}");
    }
}
