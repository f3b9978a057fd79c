//! `cbound stages`: every stage kind with its parameters (from the same schema validation
//! uses), their defaults and an example.

use std::path::PathBuf;

use serde_json::Value;

use crate::error::Error;
use cbound_engine::stage::DynStage;

#[derive(Debug, clap::Args)]
pub struct StagesArgs {
    /// Show only this kind.
    pub kind: Option<String>,
    /// Also the kinds declared in YAML in this directory; repeatable.
    #[arg(long = "kinds", value_name = "DIR")]
    pub kinds: Vec<PathBuf>,
    /// Also the kinds this pipeline can use: its `kinds:` and the `kinds/` directory beside it.
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
}

/// A short type description of a property schema: `integer`, `bivariate | dense`, ...
pub(super) fn type_of(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(crate::config::render_value)
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(c) = schema.get("const") {
        return crate::config::render_value(c);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = options
                .iter()
                .map(type_of)
                .filter(|t| t != "null")
                .collect();
            return parts.join(" | ");
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) if t == "array" => {
            format!(
                "list of {}",
                schema
                    .get("items")
                    .map(type_of)
                    .unwrap_or_else(|| "values".into())
            )
        }
        Some(Value::String(t)) if t == "object" => "mapping".into(),
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".into(),
    }
}

pub fn describe(stage: &dyn DynStage) -> String {
    let schema = stage.params_schema();
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = format!(
        "{} (version {})\n  {}\n\n  parameters:\n",
        stage.kind(),
        stage.version(),
        stage.summary()
    );
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let default = match prop.get("default") {
                Some(Value::Null) | None if required.contains(&name.as_str()) => {
                    "required".to_string()
                }
                Some(Value::Null) | None => "optional".to_string(),
                Some(v) => format!("default {v}"),
            };
            out.push_str(&format!("    {name}: {} ({default})\n", type_of(prop)));
            if let Some(d) = prop.get("description").and_then(Value::as_str) {
                for line in d.lines() {
                    out.push_str(&format!("        {line}\n"));
                }
            }
        }
    }
    out.push_str(&format!(
        "\n  writes: {}\n",
        match stage.writes() {
            Some(files) => files.join(", "),
            None => "whatever the program writes (not known before running)".into(),
        }
    ));
    out.push_str("\n  example:\n");
    for line in stage.example().lines() {
        out.push_str(&format!("    {line}\n"));
    }
    out
}

/// Prints the description of the item named `name` (of `what`: "stage kind", "estimator"),
/// or of every item when no name is given; an unknown name is a usage error with a
/// suggestion. Shared by `cbound stages` and `cbound estimators`.
pub(crate) fn list_or_describe(
    what: &str,
    name: Option<&str>,
    names: &[&str],
    describe: impl Fn(usize) -> String,
) -> Result<(), Error> {
    match name {
        Some(name) => match names.iter().position(|n| *n == name) {
            Some(i) => print!("{}", describe(i)),
            None => {
                let hint = crate::config::diagnostics::did_you_mean(name, names)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                return Err(Error::Usage(format!(
                    "unknown {what} `{name}`{hint} (known: {})",
                    names.join(", ")
                )));
            }
        },
        None => {
            for i in 0..names.len() {
                if i > 0 {
                    println!();
                }
                print!("{}", describe(i));
            }
        }
    }
    Ok(())
}

pub fn stages(args: StagesArgs) -> Result<(), Error> {
    let (declared, registry) = match &args.pipeline {
        Some(pipeline) => super::kinds_for(pipeline, &[], &args.kinds)?,
        None => super::kinds_in(&args.kinds)?,
    };
    let stages: Vec<&dyn DynStage> = registry.iter().collect();
    let kinds: Vec<&str> = stages.iter().map(|s| s.kind()).collect();
    list_or_describe("stage kind", args.kind.as_deref(), &kinds, |i| {
        // A kind declared in YAML also says where it is defined and what it runs.
        let mut text = describe(stages[i]);
        text.push_str(&declared.describe(stages[i].kind()).unwrap_or_default());
        text
    })
}
