//! `cbound dag`: the stage graph for Graphviz or Mermaid.

use crate::cli::PipelineArgs;
use crate::config;
use crate::dag::render::{render, Format};
use crate::dag::Dag;
use crate::error::Error;

#[derive(Debug, clap::Args)]
pub struct DagArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[arg(long, value_enum, default_value = "dot")]
    pub format: Format,
    /// One node per instance instead of per stage.
    #[arg(long)]
    pub instances: bool,
}

pub fn dag(args: DagArgs) -> Result<(), Error> {
    let (_, registry) = args.pipeline.registry()?;
    let p = config::load(&args.pipeline.pipeline, &args.pipeline.set, &registry)?;
    let dag = Dag::build(p, &registry);
    print!("{}", render(&dag, args.format, args.instances));
    Ok(())
}
