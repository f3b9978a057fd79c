//! The Slurm executor: a run handed to a cluster as job arrays, followed from this machine.
//!
//! Why it is not an [`Executor`](super::Executor): the local executor is given one job at a
//! time, once its inputs are finished, because only then is its cache key known. A cluster is
//! best given the whole plan at once, so that Slurm holds the dependency graph and a sweep is
//! one queue entry rather than hundreds. So each stage's instances that must run become one
//! `sbatch --array` ("sweep group") whose tasks each run `cbound exec-instance` for exactly
//! one instance, and a stage waits for its inputs' arrays with `--dependency=afterok:ID`.
//!
//! A cache key includes the output digests of the instance's inputs, so for an instance whose
//! inputs are computed in the same run the key is learnt on the node: its task file names
//! the result files of the upstream tasks, and the task computes the key there, reuses a
//! cached result if one has appeared (an upstream that reran with identical bytes), or runs
//! the stage through the same [`execute`] as the local executor. Instances cached before the
//! run are never submitted.
//!
//! The submitter follows the tasks through `squeue` (and `scontrol` for tasks that left the
//! queue without a result; `sacct` needs slurmdbd, which small clusters lack) and the files
//! each task writes next to its task file, and reports the same events and outcomes as a local
//! run, so progress display, `results.parquet` and `plan --why` work the same.
//!
//! ```text
//! .cbound/slurm/<run>/<stage>/task.sh            the batch script of the stage's array
//! .cbound/slurm/<run>/<stage>/<i>.json           what task i computes (a [`TaskFile`])
//! .cbound/slurm/<run>/<stage>/<i>.out|.err       its stdout and stderr
//! .cbound/slurm/<run>/<stage>/<i>.result.json    how it ended (a [`TaskResult`])
//! .cbound/slurm/<run>/<stage>/<i>.progress.json  the stage's latest progress report
//! ```
//!
//! Known limit: `afterok` on an array waits for all of its tasks, so one failed task skips
//! the whole downstream array (Slurm cancels it: `--kill-on-invalid-dep=yes`), not only its
//! own descendants as a local run would; running the same command again resumes.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::outcome::{Failure, Outcome, SkipReason};
use super::scheduler::{Recorder, RunOptions, RunSummary};
use super::{execute, JobSpec};
use crate::artifact::store::{dir_name, Store};
use crate::artifact::{read_json, write_atomic, write_json, InstanceMeta};
use crate::config::{ClusterResources, ExecutorDecl, Resources};
use crate::dag::plan::{key_inputs_of, plan, Decision, Reason};
use crate::dag::Dag;
use crate::report::{Reporter, RunEvent};
use crate::stages::{InputArtifact, Progress, Registry};

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("`{program}` not found: install slurm-client (Slurm's command-line tools) on this machine, or use --executor local")]
    NotInstalled { program: String },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("sbatch rejected the job array of stage `{stage}`: {message}")]
    Rejected { stage: String, message: String },
    #[error("sbatch printed `{output}` where a job id was expected")]
    BadJobId { output: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task file {path}: {message}")]
    TaskFile { path: PathBuf, message: String },
    /// On a node: the instance of the task failed (its error is also in the task's result).
    #[error("{instance} failed: {error}")]
    InstanceFailed { instance: String, error: String },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SlurmError {
    let context = context.into();
    move |source| SlurmError::Io { context, source }
}

/// How this run talks to Slurm: the pipeline's `executor:` block plus what only the
/// submitting process knows.
#[derive(Debug, Clone)]
pub struct SlurmSettings {
    pub max_parallel: Option<usize>,
    pub defaults: ClusterResources,
    /// The binary the tasks run.
    pub cbound: PathBuf,
    /// The tasks' working directory (`--chdir`): where the submitter runs, so relative paths
    /// in parameters mean the same on the nodes.
    pub workdir: PathBuf,
    /// How often the queue is read.
    pub poll: Duration,
}

impl SlurmSettings {
    pub fn new(decl: &ExecutorDecl) -> Result<SlurmSettings, SlurmError> {
        let cbound = match &decl.cbound {
            Some(path) => absolute(path),
            None => std::env::current_exe().map_err(io("locating the cbound binary"))?,
        };
        Ok(SlurmSettings {
            max_parallel: decl.max_parallel,
            defaults: decl.defaults.clone(),
            cbound,
            workdir: std::env::current_dir().map_err(io("reading the working directory"))?,
            poll: Duration::from_millis(500),
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The instances of one stage submitted as one job array, in task index order.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub stage: usize,
    pub instances: Vec<usize>,
    /// Earlier groups this one waits for (`afterok`).
    pub after: Vec<usize>,
}

/// What a run submits, and the instances settled without submitting anything.
#[derive(Debug)]
pub struct Submission {
    pub groups: Vec<Group>,
    pub settled: Vec<(usize, Outcome)>,
}

/// Splits the plan into job arrays: instances cached (with cached inputs) are settled, as are
/// those whose key cannot be computed and those downstream of them; the rest are grouped by
/// stage, each group waiting for the groups holding its instances' inputs.
pub fn submission(
    dag: &Dag,
    decisions: &[Decision],
    selected: &dyn Fn(usize) -> bool,
) -> Submission {
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    let mut group_of_stage: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut settled: Vec<(usize, Outcome)> = Vec::new();
    let mut settled_ok: HashMap<usize, bool> = HashMap::new();
    for (i, inst) in dag.instances.iter().enumerate() {
        if !selected(i) {
            settled.push((i, Outcome::NotSelected));
            settled_ok.insert(i, false);
            continue;
        }
        if let Some(&u) = inst
            .inputs
            .iter()
            .find(|u| settled_ok.get(u) == Some(&false))
        {
            let outcome =
                Outcome::Skipped(SkipReason::InputDidNotFinish(dag.instances[u].id.clone()));
            settled.push((i, outcome));
            settled_ok.insert(i, false);
            continue;
        }
        let waits = inst.inputs.iter().any(|u| group_of.contains_key(u));
        match &decisions[i] {
            Decision::Cached(meta) if !waits => {
                settled.push((i, Outcome::Cached(meta.clone())));
                settled_ok.insert(i, true);
            }
            Decision::Run(Reason::KeyError(e)) if !waits => {
                settled.push((i, Outcome::Failed(Failure::Key(e.clone()))));
                settled_ok.insert(i, false);
            }
            _ => {
                let g = *group_of_stage.entry(inst.stage).or_insert_with(|| {
                    groups.push(Group {
                        stage: inst.stage,
                        instances: Vec::new(),
                        after: Vec::new(),
                    });
                    groups.len() - 1
                });
                for u in &inst.inputs {
                    if let Some(&ug) = group_of.get(u) {
                        if ug != g && !groups[g].after.contains(&ug) {
                            groups[g].after.push(ug);
                        }
                    }
                }
                groups[g].instances.push(i);
                group_of.insert(i, g);
            }
        }
    }
    Submission { groups, settled }
}

/// One `sbatch` call, as data, so that `plan` can print it and tests can check it.
#[derive(Debug, Clone)]
pub struct ArraySpec<'a> {
    pub tasks: usize,
    pub max_parallel: Option<usize>,
    pub job_name: String,
    /// The largest need among the array's instances (an array has one resource request).
    pub resources: Resources,
    pub cluster: &'a ClusterResources,
    /// Job ids (or placeholders) of the arrays it waits for.
    pub after: Vec<String>,
    pub task_dir: &'a Path,
    pub workdir: &'a Path,
}

/// The arguments of `sbatch` for a job array; the batch script comes last.
pub fn sbatch_args(spec: &ArraySpec) -> Vec<String> {
    let mut args = vec![
        "--parsable".to_string(),
        format!(
            "--array=0-{}{}",
            spec.tasks.saturating_sub(1),
            spec.max_parallel
                .map(|k| format!("%{k}"))
                .unwrap_or_default()
        ),
        format!("--job-name={}", spec.job_name),
        format!("--chdir={}", spec.workdir.display()),
        // %a is the task index: one log pair per instance, read back when a task fails.
        format!("--output={}", spec.task_dir.join("%a.out").display()),
        format!("--error={}", spec.task_dir.join("%a.err").display()),
        format!("--cpus-per-task={}", spec.resources.cpus.max(1)),
    ];
    if spec.resources.gpus > 0 {
        args.push(format!("--gres=gpu:{}", spec.resources.gpus));
    }
    if let Some(m) = &spec.cluster.memory {
        args.push(format!("--mem={m}"));
    }
    if let Some(t) = &spec.cluster.time {
        args.push(format!("--time={t}"));
    }
    if let Some(p) = &spec.cluster.partition {
        args.push(format!("--partition={p}"));
    }
    if !spec.after.is_empty() {
        args.push(format!("--dependency=afterok:{}", spec.after.join(":")));
        // Without it, dependents of a failed task would wait in the queue forever.
        args.push("--kill-on-invalid-dep=yes".to_string());
    }
    args.extend(spec.cluster.sbatch.iter().cloned());
    args.push(spec.task_dir.join("task.sh").display().to_string());
    args
}

/// A command line as a shell would read it back (arguments quoted where needed; `$` kept
/// bare so placeholders like `$JOB_train` read as variables).
pub fn shell_line(program: &str, args: &[String]) -> String {
    let quote = |a: &str| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=/.,:%@+$".contains(c))
        {
            a.to_string()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    std::iter::once(program)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for `sh`, whatever it holds.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The shell variable `plan` uses for a stage's not-yet-known array job id.
fn job_var(stage: &str) -> String {
    let name: String = stage
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("JOB_{name}")
}

fn array_spec<'a>(
    dag: &Dag,
    group: &Group,
    settings: &'a SlurmSettings,
    cluster: &'a ClusterResources,
    after: Vec<String>,
    task_dir: &'a Path,
) -> ArraySpec<'a> {
    let resources = group
        .instances
        .iter()
        .map(|&i| dag.instances[i].resources)
        .fold(Resources { cpus: 1, gpus: 0 }, |a, r| Resources {
            cpus: a.cpus.max(r.cpus),
            gpus: a.gpus.max(r.gpus),
        });
    ArraySpec {
        tasks: group.instances.len(),
        max_parallel: settings.max_parallel,
        job_name: format!(
            "cbound:{}:{}",
            dag.pipeline.name,
            dag.stage_id(group.instances[0])
        ),
        resources,
        cluster,
        after,
        task_dir,
        workdir: &settings.workdir,
    }
}

/// The directory of a run's job arrays (`cbound run` also leaves the run's kinds declared in
/// YAML there, for `cbound exec-instance`).
pub fn slurm_dir(store_root: &Path, run_id: &str) -> PathBuf {
    absolute(store_root)
        .join(".cbound")
        .join("slurm")
        .join(run_id)
}

/// The `sbatch` command lines a run would submit, for `cbound plan --executor slurm`. Job ids
/// are known only once submitted, so dependencies read `$JOB_<stage>` and paths `$RUN`.
pub fn plan_lines(
    dag: &Dag,
    decisions: &[Decision],
    selected: &dyn Fn(usize) -> bool,
    settings: &SlurmSettings,
    store_root: &Path,
) -> Vec<String> {
    let sub = submission(dag, decisions, selected);
    let base = slurm_dir(store_root, "$RUN");
    let mut lines = Vec::new();
    for g in &sub.groups {
        let decl = &dag.pipeline.stages[g.stage];
        let cluster = decl.cluster.or(&settings.defaults);
        let task_dir = base.join(dir_name(&decl.id));
        let after = g
            .after
            .iter()
            .map(|&a| format!("${}", job_var(&dag.pipeline.stages[sub.groups[a].stage].id)))
            .collect();
        let spec = array_spec(dag, g, settings, &cluster, after, &task_dir);
        lines.push(format!(
            "{}=$({})",
            job_var(&decl.id),
            shell_line("sbatch", &sbatch_args(&spec))
        ));
    }
    lines
}

/// What a task computes: everything [`execute`] needs except what depends on upstream
/// results computed in the same run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskFile {
    pub pipeline: String,
    pub stage: String,
    pub instance: String,
    pub kind: String,
    pub params: serde_json::Value,
    pub seed: u64,
    pub labels: Vec<(String, serde_json::Value)>,
    pub resources: Resources,
    pub store_root: PathBuf,
    /// Recompute even if a result with the same key exists (`--force`).
    pub forced: bool,
    pub inputs: Vec<TaskInput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskInput {
    pub stage: String,
    pub instance: String,
    pub source: InputSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputSource {
    /// Finished before the run: the key of its result.
    Cached { cache_key: String },
    /// Computed by another task of this run: its result file.
    Task { result: PathBuf },
}

/// How a task ended, written by the task before it exits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskResult {
    /// The instance's cache key, when it could be computed.
    pub cache_key: Option<String>,
    /// The result existed already (an upstream reran and produced identical outputs).
    #[serde(default)]
    pub cached: bool,
    pub error: Option<String>,
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ProgressFile {
    done: u64,
    total: u64,
    message: String,
}

fn task_path(dir: &Path, index: usize, suffix: &str) -> PathBuf {
    dir.join(format!("{index}{suffix}"))
}

/// Runs one array task on a node: the instance of `<task_dir>/<index>.json`. Always leaves a
/// [`TaskResult`] behind unless the task file itself is unreadable; an `Err` is the
/// instance's error (the caller prints it and exits non-zero, so `afterok` holds back
/// dependents).
pub fn run_task(task_dir: &Path, index: usize, registry: &Registry) -> Result<(), SlurmError> {
    let path = task_path(task_dir, index, ".json");
    let task: TaskFile = read_json(&path).map_err(|e| SlurmError::TaskFile {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let result_path = task_path(task_dir, index, ".result.json");
    let mut result = TaskResult {
        host: crate::host_name(),
        ..TaskResult::default()
    };
    let outcome = compute_task(&task, task_dir, index, registry, &mut result);
    if let Err(e) = &outcome {
        result.error = Some(e.clone());
    }
    write_json(&result_path, &result).map_err(|e| SlurmError::TaskFile {
        path: result_path.clone(),
        message: e.to_string(),
    })?;
    outcome.map_err(|error| SlurmError::InstanceFailed {
        instance: task.instance.clone(),
        error,
    })
}

fn compute_task(
    task: &TaskFile,
    task_dir: &Path,
    index: usize,
    registry: &Registry,
    result: &mut TaskResult,
) -> Result<(), String> {
    let store = Store::at(task.store_root.clone());
    let mut upstream: Vec<InstanceMeta> = Vec::new();
    for input in &task.inputs {
        let key = match &input.source {
            InputSource::Cached { cache_key } => cache_key.clone(),
            InputSource::Task { result } => {
                let r: TaskResult = read_json(result).map_err(|e| {
                    format!(
                        "input {} has no result ({e}): did its task run?",
                        input.instance
                    )
                })?;
                match (r.cache_key, r.error) {
                    (Some(key), None) => key,
                    (_, error) => {
                        return Err(format!(
                            "input {} failed: {}",
                            input.instance,
                            error.unwrap_or_default()
                        ))
                    }
                }
            }
        };
        let meta = store.lookup(&key).ok_or_else(|| {
            format!(
                "input {}: result {key} is missing from the store",
                input.instance
            )
        })?;
        upstream.push(meta);
    }
    let refs: Vec<&InstanceMeta> = upstream.iter().collect();
    let key_inputs = key_inputs_of(&task.kind, &task.params, task.seed, registry, &refs)?;
    let key = key_inputs.key();
    result.cache_key = Some(key.clone());
    if !task.forced && store.lookup(&key).is_some() {
        result.cached = true;
        return Ok(());
    }
    let inputs = task
        .inputs
        .iter()
        .zip(upstream)
        .map(|(input, meta)| InputArtifact {
            stage: input.stage.clone(),
            instance: input.instance.clone(),
            dir: store.object_dir(&meta.cache_key),
            meta,
        })
        .collect();
    let spec = JobSpec {
        job: index,
        pipeline: task.pipeline.clone(),
        stage: task.stage.clone(),
        instance: task.instance.clone(),
        kind: task.kind.clone(),
        params: task.params.clone(),
        prepared: None,
        seed: task.seed,
        labels: task.labels.clone(),
        key,
        key_inputs,
        inputs,
        resources: task.resources,
        store_root: task.store_root.clone(),
    };
    // Progress goes to a file the submitter reads; at most once a second, to spare a shared
    // filesystem.
    let progress_path = task_path(task_dir, index, ".progress.json");
    let last = Mutex::new(None::<Instant>);
    let sink = move |p: Progress| {
        let Ok(mut last) = last.lock() else { return };
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) || p.done >= p.total;
        if due {
            *last = Some(Instant::now());
            let file = ProgressFile {
                done: p.done,
                total: p.total,
                message: p.message,
            };
            let _ = write_json(&progress_path, &file);
        }
    };
    // Slurm stops a cancelled task by signals; its staging directory survives for resume.
    let cancel = AtomicBool::new(false);
    execute(&spec, registry, &cancel, &sink)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One line of `squeue -o '%F|%K|%T|%r'`: a task of an array job (or a range of pending
/// tasks, when the queue did not expand it).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub job: String,
    pub tasks: Vec<usize>,
    pub state: String,
    pub reason: String,
}

/// Parses `squeue -h -r -o '%F|%K|%T|%r'`, expanding task ranges like `[3-5,7%2]`; lines it
/// cannot read are skipped (the queue is re-read every poll).
pub fn parse_squeue(text: &str) -> Vec<QueueEntry> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(4, '|');
            let job = parts.next()?.trim().to_string();
            let tasks = parse_task_ids(parts.next()?.trim())?;
            let state = parts.next()?.trim().to_string();
            let reason = parts.next().unwrap_or("").trim().to_string();
            (!job.is_empty()).then_some(QueueEntry {
                job,
                tasks,
                state,
                reason,
            })
        })
        .collect()
}

fn parse_task_ids(field: &str) -> Option<Vec<usize>> {
    if field == "N/A" || field == "(null)" {
        return Some(Vec::new());
    }
    let inner = field.trim_start_matches('[').trim_end_matches(']');
    let inner = inner.split('%').next().unwrap_or(inner);
    let mut ids = Vec::new();
    for part in inner.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                ids.extend(a..=b);
            }
            None => ids.push(part.parse().ok()?),
        }
    }
    Some(ids)
}

/// The fields of `scontrol show job -o` (one line of `Key=Value` pairs).
pub fn parse_scontrol(text: &str) -> HashMap<String, String> {
    text.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// This user's jobs, one line per array task (`-r`); `%F` is the array's job id (what
/// sbatch returned) and `%K` the task index.
fn read_queue() -> Result<Vec<QueueEntry>, SlurmError> {
    let args = ["--me", "-h", "-r", "-o", "%F|%K|%T|%r"].map(String::from);
    slurm("squeue", &args).map(|text| parse_squeue(&text))
}

/// Runs a Slurm client command and returns its stdout.
fn slurm(program: &str, args: &[String]) -> Result<String, SlurmError> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SlurmError::NotInstalled {
                program: program.to_string(),
            }
        } else {
            SlurmError::Io {
                context: format!("running {program}"),
                source: e,
            }
        }
    })?;
    if !out.status.success() {
        return Err(SlurmError::Command {
            command: shell_line(program, args),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sbatch --parsable` prints `<id>` or `<id>;<cluster>`.
fn parse_job_id(output: &str) -> Result<String, SlurmError> {
    let id = output.trim().split(';').next().unwrap_or("").trim();
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(SlurmError::BadJobId {
            output: output.trim().to_string(),
        })
    }
}

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
struct Task {
    instance: usize,
    group: usize,
    index: usize,
    dir: PathBuf,
    started: bool,
    progress: Option<ProgressFile>,
    /// Polls since it was last seen in the queue without a result.
    gone: u32,
}

/// Runs the plan on Slurm and follows it to the end; the counterpart of
/// [`scheduler::run`](super::scheduler::run).
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
    let decisions = plan(dag, store, registry, options.forced);
    let sub = submission(dag, &decisions, &|i| options.selected.contains(&i));
    if !sub.groups.is_empty() {
        // Fail before writing anything if the tools are missing.
        slurm("sbatch", &["--version".to_string()])?;
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..dag.instances.len()).map(|_| None).collect();
    let mut recorder = Recorder::new(dag, store, options);
    for (i, outcome) in sub.settled {
        recorder.record(i, &outcome, None, reporter);
        outcomes[i] = Some(outcome);
    }

    let base = slurm_dir(store.root(), run_id);
    let store_root = absolute(store.root());
    let mut job_ids: Vec<String> = Vec::new();
    let mut tasks: Vec<Task> = Vec::new();
    let mut task_of: HashMap<usize, usize> = HashMap::new();
    let mut submit = || -> Result<(), SlurmError> {
        for (g, group) in sub.groups.iter().enumerate() {
            if interrupt.load(Ordering::Relaxed) {
                break;
            }
            let decl = &dag.pipeline.stages[group.stage];
            let dir = base.join(dir_name(&decl.id));
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            for (index, &i) in group.instances.iter().enumerate() {
                let task = task_file(dag, i, &decisions, &tasks, &task_of, &store_root, options);
                write_json(&task_path(&dir, index, ".json"), &task).map_err(|e| {
                    SlurmError::TaskFile {
                        path: task_path(&dir, index, ".json"),
                        message: e.to_string(),
                    }
                })?;
                task_of.insert(i, tasks.len());
                tasks.push(Task {
                    instance: i,
                    group: g,
                    index,
                    dir: dir.clone(),
                    started: false,
                    progress: None,
                    gone: 0,
                });
            }
            let script = format!(
            "#!/bin/sh\n# cbound: each task of this array computes one instance of stage `{}` (pipeline `{}`, run {run_id}).\nexec {} exec-instance --task-dir {}\n",
            decl.id,
            dag.pipeline.name,
            sh_quote(&settings.cbound.display().to_string()),
            sh_quote(&dir.display().to_string()),
        );
            let script_path = dir.join("task.sh");
            write_atomic(&script_path, script.as_bytes()).map_err(|e| SlurmError::TaskFile {
                path: script_path.clone(),
                message: e.to_string(),
            })?;
            let cluster = decl.cluster.or(&settings.defaults);
            let after = group.after.iter().map(|&a| job_ids[a].clone()).collect();
            let args = sbatch_args(&array_spec(dag, group, settings, &cluster, after, &dir));
            tracing::debug!("{}", shell_line("sbatch", &args));
            let id = slurm("sbatch", &args)
                .and_then(|out| parse_job_id(&out))
                .map_err(|e| match e {
                    SlurmError::Command { message, .. } => SlurmError::Rejected {
                        stage: decl.id.clone(),
                        message,
                    },
                    other => other,
                })?;
            job_ids.push(id);
        }
        Ok(())
    };
    if let Err(e) = submit() {
        // Leave nothing behind in the queue that this run can no longer follow.
        scancel(&job_ids);
        return Err(e);
    }
    let submitted_all = job_ids.len() == sub.groups.len();

    let mut stopping = !submitted_all;
    let mut interrupted = !submitted_all;
    let mut cancelled = false;
    if stopping {
        reporter.event(RunEvent::Stopping {
            reason: super::signal::cancelling_slurm_jobs(),
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
                    reason: super::signal::cancelling_slurm_jobs(),
                });
            }
        }
        if stopping && !cancelled {
            scancel(&job_ids);
            cancelled = true;
            stop_deadline = Some(Instant::now() + Duration::from_secs(60));
        }
        let queue = match read_queue() {
            Ok(queue) => {
                queue_errors = 0;
                queue
            }
            Err(e) => {
                queue_errors += 1;
                if queue_errors == 1 || queue_errors % 20 == 0 {
                    tracing::warn!("reading the Slurm queue: {e}");
                }
                sleep(settings.poll, interrupt);
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
                    vanished(dag, i, &outcomes, task, job, stopping)
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
            scancel(&never_satisfied.into_iter().collect::<Vec<_>>());
        }
        if newly_failed && options.fail_fast && !stopping {
            stopping = true;
            reporter.event(RunEvent::Stopping {
                reason: "--fail-fast: a job failed, cancelling the other Slurm jobs",
            });
            continue;
        }
        if stop_deadline.is_some_and(|d| Instant::now() > d) {
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
            sleep(settings.poll, interrupt);
        }
    }
    // Every instance has its outcome: whatever of this run is still queued would run
    // unobserved (e.g. an array that was never cancelled after a failure upstream).
    if let Ok(queue) = read_queue() {
        let leftover: BTreeSet<String> = queue
            .into_iter()
            .filter(|e| {
                job_ids.contains(&e.job) && matches!(e.state.as_str(), "PENDING" | "RUNNING")
            })
            .map(|e| e.job)
            .collect();
        scancel(&leftover.into_iter().collect::<Vec<_>>());
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

/// The task file of instance `i`: its inputs are either results cached before the run or
/// tasks of this run, named by their result files.
fn task_file(
    dag: &Dag,
    i: usize,
    decisions: &[Decision],
    tasks: &[Task],
    task_of: &HashMap<usize, usize>,
    store_root: &Path,
    options: &RunOptions,
) -> TaskFile {
    let inst = &dag.instances[i];
    let inputs = inst
        .inputs
        .iter()
        .map(|&u| {
            let source = match (task_of.get(&u), &decisions[u]) {
                (Some(&t), _) => InputSource::Task {
                    result: task_path(&tasks[t].dir, tasks[t].index, ".result.json"),
                },
                (None, Decision::Cached(meta)) => InputSource::Cached {
                    cache_key: meta.cache_key.clone(),
                },
                // Unreachable by construction (an input is either cached or submitted); the
                // task then reports the missing input by name.
                (None, Decision::Run(_)) => InputSource::Task {
                    result: PathBuf::from("/nonexistent"),
                },
            };
            TaskInput {
                stage: dag.stage_id(u).to_string(),
                instance: dag.instances[u].id.clone(),
                source,
            }
        })
        .collect();
    TaskFile {
        pipeline: dag.pipeline.name.clone(),
        stage: dag.stage_id(i).to_string(),
        instance: inst.id.clone(),
        kind: dag.kind(i).to_string(),
        params: inst.params.clone(),
        seed: inst.seed,
        labels: inst.labels.clone(),
        resources: inst.resources,
        store_root: store_root.to_path_buf(),
        forced: options.forced.contains(&i),
        inputs,
    }
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
    let info = slurm(
        "scontrol",
        &["show".into(), "job".into(), "-o".into(), id.clone()],
    )
    .map(|text| parse_scontrol(&text))
    .unwrap_or_default();
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

fn scancel(job_ids: &[String]) {
    if job_ids.is_empty() {
        return;
    }
    if let Err(e) = slurm("scancel", job_ids) {
        tracing::warn!("cancelling Slurm jobs {}: {e}", job_ids.join(" "));
    }
}

/// Sleeps, waking early on Ctrl-C or SIGTERM.
fn sleep(total: Duration, interrupt: &AtomicBool) {
    let until = Instant::now() + total;
    while Instant::now() < until && !interrupt.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterResources {
        ClusterResources {
            memory: Some("4G".into()),
            time: Some("1:00:00".into()),
            partition: Some("gpu".into()),
            sbatch: vec!["--qos=high".into()],
        }
    }

    #[test]
    fn sbatch_arguments_carry_every_resource_and_the_dependency() {
        let c = cluster();
        let spec = ArraySpec {
            tasks: 6,
            max_parallel: Some(3),
            job_name: "cbound:p:train".into(),
            resources: Resources { cpus: 4, gpus: 1 },
            cluster: &c,
            after: vec!["101".into(), "102".into()],
            task_dir: Path::new("/o/p/.cbound/slurm/r/train"),
            workdir: Path::new("/home/me/study"),
        };
        let line = shell_line("sbatch", &sbatch_args(&spec));
        assert_eq!(
            line,
            "sbatch --parsable --array=0-5%3 --job-name=cbound:p:train --chdir=/home/me/study \
             --output=/o/p/.cbound/slurm/r/train/%a.out --error=/o/p/.cbound/slurm/r/train/%a.err \
             --cpus-per-task=4 --gres=gpu:1 --mem=4G --time=1:00:00 --partition=gpu \
             --dependency=afterok:101:102 --kill-on-invalid-dep=yes --qos=high \
             /o/p/.cbound/slurm/r/train/task.sh"
        );
    }

    #[test]
    fn a_first_stage_has_no_dependency_and_no_gpu_request() {
        let c = ClusterResources::default();
        let spec = ArraySpec {
            tasks: 1,
            max_parallel: None,
            job_name: "j".into(),
            resources: Resources { cpus: 1, gpus: 0 },
            cluster: &c,
            after: vec![],
            task_dir: Path::new("/t"),
            workdir: Path::new("/w"),
        };
        let args = sbatch_args(&spec);
        assert!(args.contains(&"--array=0-0".to_string()), "{args:?}");
        assert!(!args.iter().any(|a| a.starts_with("--dependency")
            || a.starts_with("--gres")
            || a.starts_with("--mem")));
    }

    #[test]
    fn stage_settings_override_executor_defaults_and_flags_add_up() {
        let stage = ClusterResources {
            memory: Some("1G".into()),
            sbatch: vec!["--qos=low".into()],
            ..Default::default()
        };
        let merged = stage.or(&cluster());
        assert_eq!(merged.memory.as_deref(), Some("1G"));
        assert_eq!(merged.partition.as_deref(), Some("gpu"));
        assert_eq!(merged.sbatch, vec!["--qos=high", "--qos=low"]);
    }

    #[test]
    fn shell_lines_quote_what_a_shell_would_split() {
        assert_eq!(
            shell_line(
                "sbatch",
                &[
                    "--chdir=/my dir".into(),
                    "--dependency=afterok:$JOB_a".into()
                ]
            ),
            "sbatch '--chdir=/my dir' --dependency=afterok:$JOB_a"
        );
        assert_eq!(shell_line("x", &["it's".into()]), r"x 'it'\''s'");
        assert_eq!(job_var("my-stage"), "JOB_my_stage");
    }

    #[test]
    fn squeue_lines_expand_task_ranges() {
        let text = "12|3|RUNNING|None\n12|[4-6,9%2]|PENDING|JobArrayTaskLimit\n13|N/A|PENDING|Dependency\n\ngarbage\n";
        let entries = parse_squeue(text);
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert_eq!(
            entries[0],
            QueueEntry {
                job: "12".into(),
                tasks: vec![3],
                state: "RUNNING".into(),
                reason: "None".into()
            }
        );
        assert_eq!(entries[1].tasks, vec![4, 5, 6, 9]);
        assert_eq!(entries[1].reason, "JobArrayTaskLimit");
        assert!(entries[2].tasks.is_empty());
    }

    #[test]
    fn scontrol_fields_are_read() {
        let f = parse_scontrol(
            "JobId=14 ArrayJobId=12 ArrayTaskId=1 JobName=cbound:p:s JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0",
        );
        assert_eq!(f["JobState"], "FAILED");
        assert_eq!(f["Reason"], "NonZeroExitCode");
        assert_eq!(f["ExitCode"], "3:0");
    }

    #[test]
    fn job_ids_from_parsable_output() {
        assert_eq!(parse_job_id("123\n").unwrap(), "123");
        assert_eq!(parse_job_id("123;cluster\n").unwrap(), "123");
        assert!(parse_job_id("sbatch: error").is_err());
    }
}
