//! `cbound validate`: check pipeline files, reporting every error of each.

use std::path::PathBuf;

use crate::config::{self, ConfigErrors};
use crate::dag::Dag;
use crate::error::Error;

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Pipeline files to check.
    #[arg(required = true)]
    pub pipelines: Vec<PathBuf>,
    /// Overrides, applied to every file.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

pub fn validate(args: ValidateArgs) -> Result<(), Error> {
    let registry = cbound_stages::builtin();
    let mut all = ConfigErrors::default();
    for path in &args.pipelines {
        match config::load(path, &args.set, &registry) {
            Ok(p) => {
                let stages = p.stages.len();
                let dag = Dag::build(p, &registry);
                println!(
                    "ok: {} ({stages} stages, {} instances)",
                    path.display(),
                    dag.instances.len()
                );
            }
            Err(e) => all.diagnostics.extend(e.diagnostics),
        }
    }
    if all.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(all))
    }
}
