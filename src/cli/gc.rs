//! `cbound gc`: frees the space of results no kept run reaches (see
//! [`crate::artifact::gc`] for what is kept).

use std::path::PathBuf;

use crate::artifact::gc::{collect, GcOptions};
use crate::artifact::store::Store;
use crate::config;
use crate::error::Error;

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// A pipeline's output directory (outputs/<pipeline>), or its pipeline file (then the
    /// directory is OUT/<pipeline name>).
    pub target: PathBuf,
    /// Root of all outputs, when TARGET is a pipeline file.
    #[arg(long, default_value = "outputs")]
    pub out: PathBuf,
    /// Keep only the newest N run directories (and the one `latest` points at) and what they
    /// reach [default: keep every run, remove only what none of them reaches].
    #[arg(long, value_name = "N")]
    pub keep_runs: Option<usize>,
    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Sizes as people read them: 1023 B, 1.5 MB, 2.3 GB (powers of 1000, as `du --si`).
fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

pub fn gc(args: GcArgs) -> Result<(), Error> {
    let root = if args.target.is_dir() {
        args.target.clone()
    } else if args.target.is_file() {
        let registry = cbound_stages::builtin();
        let p = config::load(&args.target, &[], &registry)?;
        args.out.join(&p.name)
    } else {
        return Err(Error::Usage(format!(
            "{} is neither a pipeline file nor an output directory",
            args.target.display()
        )));
    };
    if !root.join(".cbound").is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a pipeline's output directory (it has no .cbound/); give outputs/<pipeline> or the pipeline file",
            root.display()
        )));
    }
    let store = Store::at(root.clone());
    let options = GcOptions {
        keep_runs: args.keep_runs,
        dry_run: args.dry_run,
    };
    let report = collect(&store, &options)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for run in &report.runs_removed {
        println!("{verb} run {run}");
    }
    println!(
        "{}: {verb} {} run(s), {} object(s) and {} tree(s), {}; kept {} run(s) and {} object(s), {}",
        root.display(),
        report.runs_removed.len(),
        report.objects_removed,
        report.trees_removed,
        human(report.bytes_freed),
        report.runs_kept,
        report.objects_kept,
        human(report.bytes_kept),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(super::human(999), "999 B");
        assert_eq!(super::human(1_500_000), "1.5 MB");
        assert_eq!(super::human(396_000_000), "396.0 MB");
    }
}
