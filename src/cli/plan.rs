//! `cbound plan`: every concrete job after sweep expansion, whether it is cached, and with
//! `--why` what changed for the ones that would run.

use crate::artifact::store::Store;
use crate::cli::PipelineArgs;
use crate::config::{self, ExecutorKind};
use crate::dag::plan::{plan as decide, Decision};
use crate::dag::Dag;
use crate::error::Error;
use crate::exec::slurm::{plan_lines, SlurmSettings};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Say why each job would run: which input of its cache key changed.
    #[arg(long)]
    pub why: bool,
    /// Plan only these stages or instances (and what they need).
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
    /// With `slurm`, also print the sbatch commands a run would submit (default: the
    /// pipeline's `executor.kind`).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorKind>,
    /// Plan as if these stages or instances (and everything downstream) were forced.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
}

pub fn plan(args: PlanArgs) -> Result<(), Error> {
    let (_, registry) = args.pipeline.registry()?;
    let p = config::load(&args.pipeline.pipeline, &args.pipeline.set, &registry)?;
    let dag = Dag::build(p, &registry);
    let (selected, forced) = super::run::selection(&dag, &args.only, &args.force)?;
    let store = Store::open_read_only(&args.pipeline.out, &dag.pipeline.name);
    let decisions = decide(&dag, &store, &registry, &forced);
    let mut cached = 0;
    let mut to_run = 0;
    let width = dag.instances.iter().map(|i| i.id.len()).max().unwrap_or(0);
    for (i, decision) in decisions.iter().enumerate() {
        if !selected.contains(&i) {
            continue;
        }
        let id = &dag.instances[i].id;
        match decision {
            Decision::Cached(_) => {
                cached += 1;
                println!("cached  {id}");
            }
            Decision::Run(reason) => {
                to_run += 1;
                if args.why {
                    println!("run     {id:<width$}  {reason}");
                } else {
                    println!("run     {id}");
                }
            }
        }
    }
    println!(
        "{} jobs in `{}`: {cached} cached, {to_run} to run",
        cached + to_run,
        dag.pipeline.name
    );
    if args.executor.unwrap_or(dag.pipeline.executor.kind) == ExecutorKind::Slurm {
        let settings = SlurmSettings::new(&dag.pipeline.executor)?;
        let lines = plan_lines(
            &dag,
            &decisions,
            &|i| selected.contains(&i),
            &settings,
            store.root(),
        );
        if lines.is_empty() {
            println!("nothing to submit to Slurm");
        } else {
            println!(
                "sbatch commands, in order ($RUN is the run's id, $JOB_<stage> an array's job id, both known only when submitting):"
            );
            for line in lines {
                println!("{line}");
            }
        }
    }
    Ok(())
}
