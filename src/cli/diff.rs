//! `cbound diff RUN_A RUN_B`: the parameters and metrics that differ between two runs (built
//! in `report::diff`), in the same formats as `show`.

use std::path::PathBuf;

use super::show::{resolve, show_error};
use crate::error::Error;
use crate::report::show::Format;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The first run: a run directory, a pipeline's output directory (its latest run) or a
    /// pipeline file (its latest run under --out).
    pub run_a: PathBuf,
    /// The second run, named the same ways.
    pub run_b: PathBuf,
    /// Root of all outputs, for a pipeline file.
    #[arg(long, default_value = "outputs")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Metric columns to compare, as glob patterns (as in `show`; default: show's columns).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
}

pub fn diff(args: DiffArgs) -> Result<(), Error> {
    let a = resolve(Some(&args.run_a), &args.out)?;
    let b = resolve(Some(&args.run_b), &args.out)?;
    let grid = crate::report::diff::diff(&a, &b, &args.columns).map_err(show_error)?;
    if grid.rows.is_empty() && args.format == Format::Table {
        eprintln!("no differences in parameters or the compared metrics");
        return Ok(());
    }
    print!("{}", grid.render(args.format));
    Ok(())
}
