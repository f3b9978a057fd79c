//! `cbound show [RUN]`: the run's headline numbers as one wide table, one row per
//! configuration, replicates aggregated (the table is built in `report::show`).

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::report::load::ReportError;
use crate::report::show::{Format, ShowError, ShowTable};

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// A run directory (outputs/<pipeline>/<run_id>), a pipeline's output directory
    /// (outputs/<pipeline>: its latest run), or a pipeline file (its latest run under --out)
    /// [default: the most recent run under --out].
    pub run: Option<PathBuf>,
    /// Root of all outputs, for a pipeline file or no RUN.
    #[arg(long, default_value = "outputs")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Columns to show, as glob patterns over their names (`train.*`, `*.certified`,
    /// `status`); comma-separated or repeated. Sweep axes and `n` are always shown.
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Sort rows by this column (numbers by their mean; empty cells last).
    #[arg(long, value_name = "COL")]
    pub sort: Option<String>,
    /// Sort in descending order.
    #[arg(long, requires = "sort")]
    pub desc: bool,
}

/// The run directory `run` names: itself (or its `latest`) for a directory; for a pipeline
/// file, `out/<its name>/latest`.
pub(crate) fn resolve(run: Option<&Path>, out: &Path) -> Result<PathBuf, Error> {
    let Some(run) = run else {
        return most_recent(out);
    };
    if run.is_file() {
        let (_, registry) = super::kinds_for(run, &[], &[])?;
        let pipeline = crate::config::load(run, &[], &registry)?;
        let dir = out.join(&pipeline.name);
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "{}: pipeline `{}` has no outputs in {} yet: run `cbound run {}` first (or \
                 give --out the directory it wrote to)",
                run.display(),
                pipeline.name,
                dir.display(),
                run.display()
            )));
        }
        return Ok(dir);
    }
    if !run.exists() {
        return Err(Error::Usage(format!(
            "{}: no such run directory, pipeline output directory or pipeline file",
            run.display()
        )));
    }
    Ok(run.to_path_buf())
}

/// The pipeline output directory under `out` whose latest run finished last.
fn most_recent(out: &Path) -> Result<PathBuf, Error> {
    let entries = std::fs::read_dir(out).map_err(|e| {
        Error::Usage(format!(
            "no RUN given and {} cannot be read ({e}): name a run directory, or run a pipeline first",
            out.display()
        ))
    })?;
    let newest = entries
        .flatten()
        .filter_map(|e| {
            let results = e.path().join("latest/results.parquet");
            let modified = std::fs::metadata(&results).ok()?.modified().ok()?;
            Some((modified, e.path()))
        })
        .max_by_key(|(t, _)| *t);
    newest.map(|(_, p)| p).ok_or_else(|| {
        Error::Usage(format!(
            "no RUN given and no finished run under {}: name a run directory, or run a pipeline first",
            out.display()
        ))
    })
}

/// `ShowError` as the command's error: a bad argument or a directory that is not a run is
/// the user's to fix (exit 2); an unreadable file is the environment's.
pub(crate) fn show_error(e: ShowError) -> Error {
    match e {
        ShowError::Run(ReportError::Artifact(a)) => Error::Artifact(a),
        ShowError::Run(ReportError::Io { .. }) => Error::Environment(e.to_string()),
        other => Error::Usage(other.to_string()),
    }
}

pub fn show(args: ShowArgs) -> Result<(), Error> {
    let dir = resolve(args.run.as_deref(), &args.out)?;
    let table = ShowTable::open(&dir).map_err(show_error)?;
    let grid = table
        .grid(&args.columns, args.sort.as_deref(), args.desc)
        .map_err(show_error)?;
    print!("{}", grid.render(args.format));
    Ok(())
}
