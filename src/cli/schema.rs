//! `cbound schema`: write the pipeline JSON Schema (schemas/pipeline.schema.json), or check
//! that the checked-in copy is current.

use std::path::PathBuf;

use crate::config::schema::pipeline_schema;
use crate::error::Error;
use cbound_engine::userkind::definition_schema;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Where to write the schema; `-` for standard output [default:
    /// schemas/pipeline.schema.json for the built-in kinds, `-` with --kinds or --pipeline].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Do not write; fail if the file differs from what would be written.
    #[arg(long)]
    pub check: bool,
    /// Include the kinds declared in YAML in this directory; repeatable.
    #[arg(long = "kinds", value_name = "DIR")]
    pub kinds: Vec<PathBuf>,
    /// Include the kinds this pipeline can use (its `kinds:`, the `kinds/` directory beside
    /// it): the schema for editing that pipeline.
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
}

/// The committed schema: built-in kinds only.
const BUILTIN_SCHEMA: &str = "schemas/pipeline.schema.json";

pub fn schema(args: SchemaArgs) -> Result<(), Error> {
    let with_kinds = args.pipeline.is_some() || !args.kinds.is_empty();
    let registry = match &args.pipeline {
        Some(pipeline) => super::kinds_for(pipeline, &[], &args.kinds)?.1,
        None => super::kinds_in(&args.kinds)?.1,
    };
    let mut schema = pipeline_schema(&registry);
    // How kinds are declared is the userkind module's to say.
    schema["$defs"]["kinds"] = definition_schema();
    let mut text = serde_json::to_string_pretty(&schema)
        .map_err(|e| Error::Internal(format!("serialising the schema: {e}")))?;
    text.push('\n');
    // Writing a pipeline's schema over the committed one would be a surprise.
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(if with_kinds { "-" } else { BUILTIN_SCHEMA }));
    if output.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    if args.check {
        let current = std::fs::read_to_string(&output).unwrap_or_default();
        if current != text {
            return Err(Error::Stale(format!(
                "{} is out of date; run `cbound schema` to regenerate it",
                output.display()
            )));
        }
        println!("{} is up to date", output.display());
        return Ok(());
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::Usage(format!("cannot create {}: {e}", parent.display())))?;
    }
    crate::artifact::write_atomic(&output, text.as_bytes())?;
    println!("wrote {}", output.display());
    Ok(())
}
