//! What the engine's unit tests share: a tiny stage kind (`test_step`) instead of the built-in
//! ones, pipelines built from YAML text in a temporary store, a reporter that records events
//! as lines, and a fake [`Executor`] whose jobs finish one per poll, in an order the test
//! controls, so the scheduler's loop is tested without threads or clocks.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use super::outcome::{InstanceError, InstanceStatus};
use super::scheduler::{RunOptions, RunSummary};
use super::{execute, Executor, JobEvent, JobSpec};
use crate::artifact::store::Store;
use crate::dag::Dag;
use crate::events::{Reporter, RunEvent};
use crate::stage::{Progress, Registry, Stage, StageContext, StageError, StageOutput};

/// A stage that adds its `x` to the `value` of each input and writes the sum to `value.json`,
/// after reporting progress once; it can fail on request, and wait for others to run beside
/// it (to show how many instances an executor runs at once).
pub(crate) struct TestStep;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestStepParams {
    /// Swept by `matrix:` to get several instances.
    #[serde(default)]
    x: i64,
    /// Fail with this message instead of writing a value...
    #[serde(default)]
    fail: Option<String>,
    /// ...only when `x` is this.
    #[serde(default)]
    fail_if_x: Option<i64>,
    /// The name of a [`Meeting`] to enter while running.
    #[serde(default)]
    meet: Option<String>,
    /// How many instances of the meeting must be inside at once before each may leave.
    #[serde(default = "one")]
    parties: usize,
}

fn one() -> usize {
    1
}

impl Stage for TestStep {
    type Params = TestStepParams;
    const KIND: &'static str = "test_step";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "adds x to its inputs' values (tests only)";
    const EXAMPLE: &'static str = "kind: test_step\n";
    const WRITES: Option<&'static [&'static str]> = Some(&["value.json"]);

    fn run(params: &TestStepParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        ctx.progress(1, 2, "halfway");
        if let Some(name) = &params.meet {
            Meeting::named(name).attend(params.parties, ctx.threads)?;
        }
        if let Some(message) = &params.fail {
            if params.fail_if_x.is_none_or(|x| x == params.x) {
                return Err(StageError::Failed(message.clone()));
            }
        }
        let mut value = params.x;
        for input in ctx.inputs {
            let v: i64 = crate::artifact::read_json(&input.file("value.json")?)?;
            value += v;
        }
        crate::artifact::write_json(&ctx.out_dir.join("value.json"), &value)?;
        Ok(StageOutput::default().metric("value", value as f64))
    }
}

/// Instances that run at the same time meet here: each waits inside until `parties`
/// instances (of the same `parties`) have arrived since the last group left, and the meeting
/// remembers the most instances and threads ever inside together. Meetings are process-wide,
/// so each test names its own.
pub(crate) struct Meeting {
    state: Mutex<MeetingState>,
    changed: Condvar,
}

#[derive(Default, Clone, Debug)]
pub(crate) struct MeetingState {
    pub inside: usize,
    pub threads: usize,
    pub most_inside: usize,
    pub most_threads: usize,
    /// Per group size: arrivals in the forming group, and groups formed so far. Counting
    /// arrivals, not who is inside, keeps a member of the last group that has not left yet
    /// from counting towards the next one.
    groups: HashMap<usize, (usize, usize)>,
}

/// Only a guard against a test that would otherwise hang when too few instances run at once;
/// no assertion depends on it.
const MEETING_GUARD: Duration = Duration::from_secs(120);

impl Meeting {
    pub(crate) fn named(name: &str) -> Arc<Meeting> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Meeting>>>> = OnceLock::new();
        let all = ALL.get_or_init(Default::default);
        let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(all.entry(name.to_string()).or_insert_with(|| {
            Arc::new(Meeting {
                state: Mutex::new(MeetingState::default()),
                changed: Condvar::new(),
            })
        }))
    }

    pub(crate) fn state(&self) -> MeetingState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn attend(&self, parties: usize, threads: usize) -> Result<(), StageError> {
        let parties = parties.max(1);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.inside += 1;
        s.threads += threads;
        s.most_inside = s.most_inside.max(s.inside);
        s.most_threads = s.most_threads.max(s.threads);
        let (arrived, formed) = s.groups.entry(parties).or_default();
        let mine = *formed;
        *arrived += 1;
        if *arrived == parties {
            *arrived = 0;
            *formed += 1;
            self.changed.notify_all();
        }
        let formed_now = |s: &MeetingState| s.groups.get(&parties).map_or(0, |g| g.1);
        let mut met = true;
        while formed_now(&s) == mine {
            let (next, timeout) = self
                .changed
                .wait_timeout(s, MEETING_GUARD)
                .unwrap_or_else(|e| e.into_inner());
            s = next;
            if timeout.timed_out() && formed_now(&s) == mine {
                met = false;
                break;
            }
        }
        s.inside -= 1;
        s.threads -= threads;
        if met {
            Ok(())
        } else {
            Err(StageError::Failed(format!(
                "{parties} instances never ran at once"
            )))
        }
    }
}

/// A loaded pipeline of `test_step` stages with an empty store in a temporary directory.
pub(crate) struct Fixture {
    pub registry: Arc<Registry>,
    pub dag: Dag,
    pub store: Store,
    // Kept so the directory lives as long as the fixture.
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// `stages` is the YAML under `stages:` of a pipeline called `t`.
    pub(crate) fn new(stages: &str) -> Fixture {
        let registry = Arc::new(Registry::new().with::<TestStep>());
        let text = format!("name: t\nstages:\n{stages}");
        let pipeline = crate::config::load_str(&text, Path::new("t.yaml"), &[], &registry)
            .unwrap_or_else(|e| panic!("test pipeline does not load: {e:?}\n{text}"));
        let dag = Dag::build(pipeline, &registry);
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path(), "t").expect("store");
        Fixture {
            registry,
            dag,
            store,
            _dir: dir,
        }
    }

    /// Every instance.
    pub(crate) fn all(&self) -> HashSet<usize> {
        (0..self.dag.instances.len()).collect()
    }

    /// The index of the instance with this id.
    pub(crate) fn index(&self, id: &str) -> usize {
        self.dag
            .instances
            .iter()
            .position(|inst| inst.id == id)
            .unwrap_or_else(|| panic!("no instance {id}"))
    }

    /// Runs options over `selected`, forcing `forced`, otherwise the defaults of `cbound run`.
    pub(crate) fn options<'a>(
        &self,
        selected: &'a HashSet<usize>,
        forced: &'a HashSet<usize>,
    ) -> RunOptions<'a> {
        RunOptions {
            selected,
            forced,
            fail_fast: false,
            gpus: 0,
            run_dir: None,
        }
    }

    /// Each instance's status, by id.
    pub(crate) fn statuses(&self, summary: &RunSummary) -> BTreeMap<String, InstanceStatus> {
        summary
            .outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| (self.dag.instances[i].id.clone(), o.status()))
            .collect()
    }

    /// The `value` metric of each instance that ran or was cached, by id.
    pub(crate) fn values(&self, summary: &RunSummary) -> BTreeMap<String, f64> {
        summary
            .outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                let value = o.meta()?.metrics.get("value")?;
                Some((self.dag.instances[i].id.clone(), *value))
            })
            .collect()
    }
}

/// `(id, status)` pairs as a map, for comparing with [`Fixture::statuses`].
pub(crate) fn expect(pairs: &[(&str, InstanceStatus)]) -> BTreeMap<String, InstanceStatus> {
    pairs.iter().map(|(id, s)| (id.to_string(), *s)).collect()
}

/// Records every event as one line: `started a`, `progress a 1/2`, `finished a`,
/// `failed a: <error>`, `skipped a: <reason>`, `stopping: <reason>`...
#[derive(Default)]
pub(crate) struct Events(pub Vec<String>);

impl Reporter for Events {
    fn event(&mut self, event: RunEvent<'_>) {
        self.0.push(match event {
            RunEvent::Begin { pipeline, .. } => format!("begin {pipeline}"),
            RunEvent::Cached { instance, .. } => format!("cached {instance}"),
            RunEvent::Started { instance, .. } => format!("started {instance}"),
            RunEvent::Progress {
                instance, progress, ..
            } => format!("progress {instance} {}/{}", progress.done, progress.total),
            RunEvent::Finished { instance, .. } => format!("finished {instance}"),
            RunEvent::Failed {
                instance, error, ..
            } => format!("failed {instance}: {error}"),
            RunEvent::Cancelled { instance, .. } => format!("cancelled {instance}"),
            RunEvent::Skipped {
                instance, reason, ..
            } => format!("skipped {instance}: {reason}"),
            RunEvent::Stopping { reason } => format!("stopping: {reason}"),
        });
    }
}

impl Events {
    /// The lines that start with `prefix`.
    pub(crate) fn starting(&self, prefix: &str) -> Vec<&str> {
        self.0
            .iter()
            .map(String::as_str)
            .filter(|l| l.starts_with(prefix))
            .collect()
    }
}

/// An [`Executor`] that admits jobs while their CPU weights fit in `cpus` (as the local
/// executor does) and finishes one job per [`poll`](Executor::poll): the running job
/// submitted last, so that finishing in submission order is not what makes a test pass. A
/// job runs its stage for real (through [`execute`]) when it finishes, unless the test made
/// it hang; hanging jobs end only when cancelled. It never sleeps.
pub(crate) struct FakeExecutor {
    registry: Arc<Registry>,
    cpus: usize,
    busy: usize,
    /// Running jobs in submission order, with the CPUs each holds.
    running: Vec<(Box<JobSpec>, usize)>,
    /// Events reported at the next poll.
    pending: VecDeque<JobEvent>,
    hanging: HashSet<String>,
    cancelled: bool,
    /// Set at a poll where only hanging jobs are left, as a user pressing Ctrl-C then would.
    interrupt_when_stuck: Option<Arc<AtomicBool>>,
    idle_polls: usize,
    /// What happened, in order: `submit <id>`, `refuse <id>`, `finish <id>`, `cancel`.
    pub log: Vec<String>,
}

/// Polls in a row with nothing to report after which the fake concludes that the loop spins
/// on an executor that will never report anything (a bug in the loop under test).
const MAX_IDLE_POLLS: usize = 1000;

impl FakeExecutor {
    pub(crate) fn new(registry: &Arc<Registry>, cpus: usize) -> FakeExecutor {
        FakeExecutor {
            registry: Arc::clone(registry),
            cpus,
            busy: 0,
            running: Vec::new(),
            pending: VecDeque::new(),
            hanging: HashSet::new(),
            cancelled: false,
            interrupt_when_stuck: None,
            idle_polls: 0,
            log: Vec::new(),
        }
    }

    /// Jobs of these instances never finish unless cancelled.
    pub(crate) fn hang(mut self, ids: &[&str]) -> FakeExecutor {
        self.hanging.extend(ids.iter().map(|s| s.to_string()));
        self
    }

    /// Sets `interrupt` once only hanging jobs are running.
    pub(crate) fn interrupt_when_stuck(mut self, interrupt: &Arc<AtomicBool>) -> FakeExecutor {
        self.interrupt_when_stuck = Some(Arc::clone(interrupt));
        self
    }

    /// The log lines that start with `prefix`, without it.
    pub(crate) fn logged(&self, prefix: &str) -> Vec<&str> {
        self.log
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect()
    }

    fn finish(
        &mut self,
        at: usize,
        result: Result<Box<crate::artifact::InstanceMeta>, InstanceError>,
    ) {
        let (job, cpus) = self.running.remove(at);
        self.busy -= cpus;
        self.log.push(format!("finish {}", job.instance));
        self.pending.push_back(JobEvent::Finished {
            job: job.job,
            result,
        });
    }
}

impl Executor for FakeExecutor {
    fn try_submit(&mut self, job: Box<JobSpec>) -> Result<(), Box<JobSpec>> {
        let need = job.resources.cpus.clamp(1, self.cpus.max(1));
        if self.busy + need > self.cpus {
            self.log.push(format!("refuse {}", job.instance));
            return Err(job);
        }
        self.busy += need;
        self.log.push(format!("submit {}", job.instance));
        self.pending.push_back(JobEvent::Started { job: job.job });
        self.running.push((job, need));
        Ok(())
    }

    fn poll(&mut self, _timeout: Duration) -> Vec<JobEvent> {
        if self.cancelled {
            while let Some(at) = self.running.len().checked_sub(1) {
                let staging = self.running[at].0.store_root.join("staging");
                self.finish(at, Err(InstanceError::Cancelled { staging }));
            }
        } else if let Some(at) = self
            .running
            .iter()
            .rposition(|(job, _)| !self.hanging.contains(&job.instance))
        {
            let job = &self.running[at].0;
            let progress: Mutex<Vec<Progress>> = Mutex::new(Vec::new());
            let sink = |p: Progress| {
                if let Ok(mut seen) = progress.lock() {
                    seen.push(p);
                }
            };
            let result = execute(job, &self.registry, &AtomicBool::new(false), &sink);
            let id = job.job;
            for p in progress.into_inner().unwrap_or_default() {
                self.pending.push_back(JobEvent::Progress {
                    job: id,
                    progress: p,
                });
            }
            self.finish(at, result.map(Box::new));
        } else if let Some(interrupt) = &self.interrupt_when_stuck {
            interrupt.store(true, Ordering::Relaxed);
        }
        if self.pending.is_empty() {
            self.idle_polls += 1;
            assert!(
                self.idle_polls < MAX_IDLE_POLLS,
                "the loop keeps polling an executor that has nothing to report: {:?}",
                self.log
            );
        } else {
            self.idle_polls = 0;
        }
        self.pending.drain(..).collect()
    }

    fn cancel(&mut self) {
        self.cancelled = true;
        self.log.push("cancel".into());
    }

    fn running(&self) -> usize {
        self.running.len()
    }
}
