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
    /// A directory of stage kinds declared in YAML, for every file; repeatable.
    #[arg(long = "kinds", value_name = "DIR")]
    pub kinds: Vec<PathBuf>,
}

pub fn validate(args: ValidateArgs) -> Result<(), Error> {
    let mut all = ConfigErrors::default();
    for path in &args.pipelines {
        // Each file has its own kinds (its `kinds:`, the `kinds/` beside it).
        let registry = match super::kinds_for(path, &args.set, &args.kinds) {
            Ok((_, registry)) => registry,
            Err(Error::Config(e)) => {
                // Pipelines of one directory share its `kinds/`: say each problem once.
                for d in e.diagnostics {
                    if !all.diagnostics.contains(&d) {
                        all.diagnostics.push(d);
                    }
                }
                continue;
            }
            Err(e) => return Err(e),
        };
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
