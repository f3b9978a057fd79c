//! The command line: argument definitions (clap derive) and one file per subcommand.

mod dag;
mod data;
mod diff;
mod doctor;
mod estimators;
mod exec_instance;
mod gc;
mod mi;
mod plan;
mod report;
mod run;
mod schema;
mod show;
mod stages;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{exit, Error};
use cbound_engine::stage::Registry;
use cbound_engine::userkind::UserKinds;

#[derive(Debug, Parser)]
#[command(
    name = "cbound",
    version,
    about = "Declarative pipelines for information-theoretic bounds of contrastive learning"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline: every instance not already cached, in parallel.
    Run(run::RunArgs),
    /// Show every concrete job after sweep expansion and whether it would run, and why.
    Plan(plan::PlanArgs),
    /// Check pipeline files without running anything.
    Validate(validate::ValidateArgs),
    /// List stage kinds with their parameters, defaults and an example.
    Stages(stages::StagesArgs),
    /// List MI estimator kinds with their settings, inputs, direction and an example.
    Estimators(estimators::EstimatorsArgs),
    /// Regenerate (or check) the JSON Schema of the pipeline format.
    Schema(schema::SchemaArgs),
    /// Print the stage graph as Graphviz DOT or Mermaid.
    Dag(dag::DagArgs),
    /// Estimate mutual information between columns of a Parquet or CSV file.
    Mi(mi::MiArgs),
    /// Datasets: `cbound data fetch cifar10|cifar100|mnist|fashion-mnist`, `cbound data synth-cifar DIR`.
    Data(data::DataArgs),
    /// Show the ONNX Runtime library, its version and execution providers, and the GPU.
    Doctor(doctor::DoctorArgs),
    /// Plots (PNG, SVG) and a self-contained report.html from a finished run directory.
    Report(report::ReportArgs),
    /// A run's headline numbers: one row per configuration, replicates as mean ± sd (n).
    Show(show::ShowArgs),
    /// Parameters and metrics that differ between two runs.
    Diff(diff::DiffArgs),
    /// Remove results no kept run reaches (older runs with --keep-runs), and say how much.
    Gc(gc::GcArgs),
    /// Internal: compute one instance of a Slurm job array (what `--executor slurm` submits).
    #[command(hide = true)]
    ExecInstance(exec_instance::ExecInstanceArgs),
}

/// Arguments shared by commands that read a pipeline.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// The pipeline file (YAML).
    pub pipeline: PathBuf,
    /// Override a value of the file: `--set vars.epochs=2`,
    /// `--set stages.train.params.optimizer.lr=0.01`, a matrix axis:
    /// `--set 'stages.train.matrix.batch_size=[64, 256]'`. A stage or variable the file does
    /// not declare is an error unless added with `+`: `--set +vars.width=64`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Root of all outputs; results go to OUT/<pipeline name>/.
    #[arg(long, default_value = "outputs")]
    pub out: PathBuf,
    /// A directory of stage kinds declared in YAML, besides the pipeline's own `kinds:` and
    /// the `kinds/` directory beside it; repeatable.
    #[arg(long = "kinds", value_name = "DIR")]
    pub kinds: Vec<PathBuf>,
}

impl PipelineArgs {
    /// The stage kinds this pipeline can use: built-in ones and those declared in YAML.
    pub fn registry(&self) -> Result<(UserKinds, Registry), Error> {
        kinds_for(&self.pipeline, &self.set, &self.kinds)
    }
}

/// `--kinds DIR` must name directories: a typo would otherwise just leave kinds out.
fn check_kind_dirs(dirs: &[PathBuf]) -> Result<(), Error> {
    match dirs.iter().find(|d| !d.is_dir()) {
        Some(d) => Err(Error::Usage(format!(
            "--kinds {}: not a directory (it should hold stage kind definitions, *.yaml)",
            d.display()
        ))),
        None => Ok(()),
    }
}

/// The kinds a pipeline can use (its `kinds:`, `kinds/` beside it, `dirs`) and the registry
/// of them with the built-in kinds.
pub(crate) fn kinds_for(
    pipeline: &std::path::Path,
    set: &[String],
    dirs: &[PathBuf],
) -> Result<(UserKinds, Registry), Error> {
    check_kind_dirs(dirs)?;
    let builtin = cbound_stages::builtin();
    let kinds = UserKinds::for_pipeline(pipeline, set, dirs, &builtin.kinds())?;
    let registry = kinds.registry(builtin)?;
    Ok((kinds, registry))
}

/// The kinds declared in `dirs` only (commands without a pipeline).
pub(crate) fn kinds_in(dirs: &[PathBuf]) -> Result<(UserKinds, Registry), Error> {
    check_kind_dirs(dirs)?;
    let builtin = cbound_stages::builtin();
    let kinds = UserKinds::from_dirs(dirs, &builtin.kinds())?;
    let registry = kinds.registry(builtin)?;
    Ok((kinds, registry))
}

fn dispatch(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Plan(args) => plan::plan(args),
        Command::Validate(args) => validate::validate(args),
        Command::Stages(args) => stages::stages(args),
        Command::Estimators(args) => estimators::estimators(args),
        Command::Schema(args) => schema::schema(args),
        Command::Dag(args) => dag::dag(args),
        Command::Mi(args) => mi::mi(args),
        Command::Data(args) => data::data(args),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Report(args) => report::report(args),
        Command::Show(args) => show::show(args),
        Command::Diff(args) => diff::diff(args),
        Command::Gc(args) => gc::gc(args),
        Command::ExecInstance(args) => exec_instance::exec_instance(args),
    }
}

/// Entry point of the binary.
/// Rust ignores SIGPIPE, so printing into a closed pipe (`cbound plan p.yaml | head -1`) is an
/// error that `println!` turns into a panic. Commands that only print get the default action
/// back: they end quietly, as any Unix filter does. `run` keeps ignoring it, so a closed
/// terminal cannot kill a run between two commits.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default before any thread that could
    // rely on it starts; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::CONFIG
            } else {
                exit::OK
            });
        }
    };
    if !matches!(cli.command, Command::Run(_) | Command::ExecInstance(_)) {
        restore_sigpipe();
    }
    match dispatch(cli) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
