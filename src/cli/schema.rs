//! `cbound schema`: write the pipeline JSON Schema (schemas/pipeline.schema.json), or check
//! that the checked-in copy is current.

use std::path::PathBuf;

use crate::config::schema::pipeline_schema_text;
use crate::error::Error;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Where to write the schema; `-` for standard output.
    #[arg(long, default_value = "schemas/pipeline.schema.json")]
    pub output: PathBuf,
    /// Do not write; fail if the file differs from what would be written.
    #[arg(long)]
    pub check: bool,
}

pub fn schema(args: SchemaArgs) -> Result<(), Error> {
    let text = pipeline_schema_text(&cbound_stages::builtin());
    if args.output.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    if args.check {
        let current = std::fs::read_to_string(&args.output).unwrap_or_default();
        if current != text {
            return Err(Error::Stale(format!(
                "{} is out of date; run `cbound schema` to regenerate it",
                args.output.display()
            )));
        }
        println!("{} is up to date", args.output.display());
        return Ok(());
    }
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::Usage(format!("cannot create {}: {e}", parent.display())))?;
    }
    crate::artifact::write_atomic(&args.output, text.as_bytes())?;
    println!("wrote {}", args.output.display());
    Ok(())
}
