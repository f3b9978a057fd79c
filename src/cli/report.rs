//! `cbound report RUN_DIR`: plots and an HTML page from a finished run.

use std::path::PathBuf;
use std::time::Instant;

use crate::error::Error;
use crate::report::generate::generate;
use crate::report::load::ReportError;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A run directory (outputs/<pipeline>/<run_id>, or outputs/<pipeline> for its latest run).
    pub run_dir: PathBuf,
    /// Where to write the plots and report.html [default: RUN_DIR/report].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn report(args: ReportArgs) -> Result<(), Error> {
    let start = Instant::now();
    let written = generate(&args.run_dir, args.out.as_deref()).map_err(|e| match e {
        ReportError::NotARunDir(_) => Error::Usage(e.to_string()),
        ReportError::Artifact(a) => Error::Artifact(a),
        ReportError::Io { .. } => Error::Environment(e.to_string()),
        ReportError::Plot { .. } => Error::Internal(e.to_string()),
    })?;
    for note in &written.notes {
        eprintln!("note: {note}");
    }
    for f in &written.files {
        println!("{}", f.display());
    }
    eprintln!(
        "report of {} in {:.1}s: {}",
        written.run_dir.display(),
        start.elapsed().as_secs_f64(),
        written.out_dir.join("report.html").display()
    );
    Ok(())
}
