//! `cbound run`: plan, lock the output directory, execute, and leave the run's record:
//! `results.parquet`, `run.json`, the pipeline file as run, and links to every result.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::artifact::store::Store;
use crate::artifact::{write_atomic, write_json};
use crate::cli::PipelineArgs;
use crate::config::{self, ExecutorKind};
use crate::dag::Dag;
use crate::error::Error;
use crate::exec::local::{clamped_stages, LocalExecutor};
use crate::exec::outcome::{InstanceStatus, RunStatus};
use crate::exec::scheduler::{self, RunOptions};
use crate::exec::signal::{self, Signal};
use crate::exec::slurm::{self, SlurmSettings};
use crate::report::progress::{BarReporter, LineReporter, QuietReporter};
use crate::report::results::{write_results, RunIdentity};
use crate::report::show::{self, ShowTable};
use crate::report::{Reporter, RunEvent};
use cbound_engine::userkind::SNAPSHOT_FILE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    Auto,
    Bars,
    Lines,
    None,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Where instances run (default: the pipeline's `executor.kind`, else local). With
    /// `slurm`, every stage becomes a job array submitted from here; --jobs and --gpus do not
    /// apply (each stage's `resources:` are requested from Slurm).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// CPU slots shared by all running instances (default: all cores).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// GPU slots available to instances that ask for them.
    #[arg(long, default_value_t = 0)]
    pub gpus: usize,
    /// Run only these stages or instances, and what they need.
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
    /// Recompute these stages or instances and everything downstream, cached or not.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Stop at the first failure instead of running everything that does not depend on it.
    #[arg(long)]
    pub fail_fast: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// A name for this run, recorded in run.json and results.parquet (`run_name`), to tell
    /// runs apart later (`baseline`, `lr-sweep`).
    #[arg(long)]
    pub name: Option<String>,
    /// The ONNX Runtime library for train/embed stages (else CBOUND_ORT_LIB, ORT_DYLIB_PATH,
    /// ./.venv, an installed Python onnxruntime).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
}

/// Instances selected by `--only` (closed under inputs) and forced by `--force` (closed
/// downstream, within the selection).
pub fn selection(
    dag: &Dag,
    only: &[String],
    force: &[String],
) -> Result<(HashSet<usize>, HashSet<usize>), Error> {
    let usage = |e: crate::dag::UnknownTarget| Error::Usage(e.to_string());
    let selected = if only.is_empty() {
        (0..dag.instances.len()).collect()
    } else {
        dag.upstream_closure(&dag.resolve(only).map_err(usage)?)
    };
    let forced = dag
        .downstream_closure(&dag.resolve(force).map_err(usage)?)
        .intersection(&selected)
        .copied()
        .collect();
    Ok((selected, forced))
}

pub fn run(args: RunArgs) -> Result<(), Error> {
    if let Some(lib) = &args.ort_lib {
        // Read by the runtime loader when a stage first needs it; set before any thread starts.
        std::env::set_var("CBOUND_ORT_LIB", lib);
    }
    let (kinds, registry) = args.pipeline.registry()?;
    let registry = Arc::new(registry);
    let path = &args.pipeline.pipeline;
    let pipeline = config::load(path, &args.pipeline.set, &registry)?;
    let dag = Dag::build(pipeline, &registry);
    let (selected, forced) = selection(&dag, &args.only, &args.force)?;
    let used: Vec<&str> = dag
        .pipeline
        .stages
        .iter()
        .map(|s| s.kind.as_str())
        .collect();
    let kinds = kinds.only(&used);

    let store = Store::open(&args.pipeline.out, &dag.pipeline.name)?;
    let command_line: Vec<String> = std::env::args().collect();
    let _lock = store.lock(&command_line.join(" "))?;
    let (run_id, run_dir) = store.new_run()?;
    // The pipeline as run, so the run directory alone can reproduce it.
    if let Ok(text) = std::fs::read(path) {
        write_atomic(&run_dir.join("pipeline.yaml"), &text)?;
    }
    // The kinds declared in YAML that it used, for `cbound report` (and the Slurm nodes,
    // below) to rebuild without their definition files.
    if !kinds.is_empty() {
        kinds.write_snapshot(&run_dir.join(SNAPSHOT_FILE))?;
    }
    let started = SystemTime::now();
    let clock = Instant::now();
    let identity = RunIdentity::of(path, args.name.clone());
    let mut record = serde_json::json!({
        "run_id": run_id,
        "name": identity.name,
        "git": {"commit": identity.git_commit, "dirty": identity.git_dirty},
        "pipeline": dag.pipeline.name,
        "pipeline_file": path,
        "overrides": args.pipeline.set,
        "command": command_line,
        "cbound_version": crate::dag::plan::CBOUND_VERSION,
        "host": crate::host_name(),
        "started": humantime::format_rfc3339_millis(started).to_string(),
        "status": RunStatus::Running,
        "instances": dag.instances.len(),
        "executor": args.executor.unwrap_or(dag.pipeline.executor.kind).name(),
        "selected": selected.len(),
    });
    // SIGINT (Ctrl-C) and SIGTERM stop scheduling and cancel what runs; a second one exits
    // at once, for a stage that ignores cancellation. Installed before the run is recorded
    // as running, so no signal can leave it "running".
    if let Err(e) = signal::install() {
        tracing::warn!("cannot handle SIGINT and SIGTERM: {e}");
    }
    let interrupt: &AtomicBool = &signal::STOP;
    write_json(&run_dir.join("run.json"), &record)?;

    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let executor = args.executor.unwrap_or(dag.pipeline.executor.kind);
    if executor == ExecutorKind::Local {
        // Said before any progress display starts, so it is not drawn over.
        for clamped in clamped_stages(&dag, &|i| selected.contains(&i), jobs) {
            eprintln!("warning: {clamped}");
        }
    }

    let mode = match args.progress {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
        ProgressMode::Auto => ProgressMode::Lines,
        other => other,
    };
    let mut reporter: Box<dyn Reporter> = match mode {
        ProgressMode::Bars => Box::new(BarReporter::new()),
        ProgressMode::None => Box::new(QuietReporter),
        _ => Box::new(LineReporter::new()),
    };
    let stage_counts: Vec<(&str, usize)> = dag
        .stage_order
        .iter()
        .map(|&s| {
            let n = dag.by_stage[s]
                .iter()
                .filter(|i| selected.contains(i))
                .count();
            (dag.pipeline.stages[s].id.as_str(), n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let run_dir_text = run_dir.display().to_string();
    reporter.event(RunEvent::Begin {
        pipeline: &dag.pipeline.name,
        run_dir: &run_dir_text,
        stages: stage_counts,
    });

    let options = RunOptions {
        selected: &selected,
        forced: &forced,
        fail_fast: args.fail_fast,
        gpus: args.gpus,
        run_dir: Some(&run_dir),
    };
    let summary = match executor {
        ExecutorKind::Local => {
            let mut executor = LocalExecutor::new(Arc::clone(&registry), jobs, args.gpus);
            scheduler::run(
                &dag,
                &registry,
                &store,
                &mut executor,
                &options,
                reporter.as_mut(),
                interrupt,
            )
        }
        ExecutorKind::Slurm => {
            let settings = SlurmSettings::new(&dag.pipeline.executor)?;
            if !kinds.is_empty() {
                // `cbound exec-instance` reads it beside its task directory.
                let dir = slurm::slurm_dir(store.root(), &run_id);
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::Environment(format!("cannot create {}: {e}", dir.display()))
                })?;
                kinds.write_snapshot(&dir.join(SNAPSHOT_FILE))?;
            }
            let summary = slurm::run(
                &dag,
                &registry,
                &store,
                &options,
                &settings,
                &run_id,
                reporter.as_mut(),
                interrupt,
            );
            if let Err(e) = &summary {
                reporter.finish();
                record["status"] = serde_json::json!(RunStatus::Failed);
                record["error"] = serde_json::json!(e.to_string());
                write_json(&run_dir.join("run.json"), &record)?;
            }
            summary?
        }
    };
    reporter.finish();

    let results: PathBuf = run_dir.join("results.parquet");
    write_results(&results, &dag, &run_id, &identity, &summary)?;
    let (ok, cached, failed, cancelled, skipped) = (
        summary.count(InstanceStatus::Ok),
        summary.count(InstanceStatus::Cached),
        summary.count(InstanceStatus::Failed),
        summary.count(InstanceStatus::Cancelled),
        summary.count(InstanceStatus::Skipped),
    );
    // The signal that stopped the run; a stop flag without one counts as Ctrl-C.
    let stopped_by = summary
        .interrupted
        .then(|| Signal::received().unwrap_or(Signal::Interrupt));
    record["status"] = serde_json::json!(if let Some(sig) = stopped_by {
        sig.status()
    } else if failed > 0 {
        RunStatus::Failed
    } else {
        RunStatus::Ok
    });
    record["finished"] =
        serde_json::json!(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
    record["seconds"] = serde_json::json!(clock.elapsed().as_secs_f64());
    if let Some(sig) = stopped_by {
        record["signal"] = serde_json::json!(sig.name());
    }
    let mut counts = serde_json::Map::new();
    for (status, n) in [
        (InstanceStatus::Ok, ok),
        (InstanceStatus::Cached, cached),
        (InstanceStatus::Failed, failed),
        (InstanceStatus::Cancelled, cancelled),
        (InstanceStatus::Skipped, skipped),
    ] {
        counts.insert(status.as_str().to_string(), n.into());
    }
    record["counts"] = serde_json::Value::Object(counts);
    // The ONNX Runtime the train and embed stages ran on, where they ran in this process
    // (on Slurm they run on the nodes, and each instance's meta.json is the record).
    record["onnxruntime"] = match cbound_onnx::runtime::loaded() {
        Some(rt) => serde_json::json!({
            "version": rt.version(),
            "library": rt.library(),
            "available_providers": rt.available_providers().unwrap_or_default(),
        }),
        None => serde_json::Value::Null,
    };
    write_json(&run_dir.join("run.json"), &record)?;
    store.set_latest(&run_id)?;
    eprintln!(
        "{} instances: {ok} ran, {cached} cached, {failed} failed, {cancelled} cancelled, {skipped} skipped in {:.2}s",
        ok + cached + failed + cancelled + skipped,
        clock.elapsed().as_secs_f64()
    );
    // The headline numbers, so a run ends with its finding rather than only a path; read
    // back from the file just written, as `cbound show` would.
    match ShowTable::open(&run_dir) {
        Ok(table) => eprint!("{}", show::summary(&table, show::terminal_width(), 15)),
        Err(e) => tracing::warn!("no summary table: {e}"),
    }
    eprintln!("results: {}", results.display());
    eprintln!("report:  cbound report {}", run_dir.display());
    if stopped_by == Some(Signal::Terminate) {
        // Exit 143, as a shell reports a process SIGTERM ended; the run's record is complete
        // and nothing is left running (every job has reported back).
        drop(_lock);
        let _ = std::io::Write::flush(&mut std::io::stdout());
        eprintln!(
            "terminated (SIGTERM); finished instances are kept, run the same command again to resume"
        );
        std::process::exit(Signal::Terminate.exit_code());
    }
    let interrupted = summary.interrupted;
    // Every instance's record is written; freeing ten thousand of them one by one takes
    // longer than the process has left to live, and the OS reclaims them at exit.
    std::mem::forget(summary);
    std::mem::forget(dag);
    if interrupted {
        Err(Error::Interrupted)
    } else if failed > 0 || cancelled > 0 || skipped > 0 {
        Err(Error::StagesFailed {
            failed: failed.max(1),
            results: results.display().to_string(),
        })
    } else {
        Ok(())
    }
}
