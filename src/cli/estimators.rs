//! `cbound estimators`: every estimator kind with its settings (from the same schema
//! validation uses), what it reads, which way its value points, and an example.

use serde_json::Value;

use crate::error::Error;
use crate::mi::estimators::{kinds, Conditioning, KindInfo};
use crate::mi::spec::EstimatorSpec;

#[derive(Debug, clap::Args)]
pub struct EstimatorsArgs {
    /// Show only this kind.
    pub name: Option<String>,
}

/// What the kind reads and promises, for the settings of its example (both can depend on
/// settings: `ksg_cmi`'s `discrete_z`, `gaussian_channel`'s `feature_range`).
fn declared(kind: &KindInfo) -> String {
    let spec = crate::config::yaml::parse(kind.example)
        .map_err(|e| e.message)
        .and_then(|(node, _)| {
            serde_json::from_value::<EstimatorSpec>(node.to_json()).map_err(|e| e.to_string())
        });
    let spec = match spec {
        Ok(spec) => spec,
        Err(e) => return format!("  (its example does not parse: {e})\n"),
    };
    let inputs = spec.inputs();
    let z = match inputs.z {
        Conditioning::Unused => "not read".to_string(),
        Conditioning::Optional(i) => format!("{}, optional", i.describe()),
        Conditioning::Required(i) => format!("{}, required", i.describe()),
    };
    let direction = spec.direction().as_str();
    format!(
        "  x: {}\n  y: {}\n  z: {z}\n  value: {direction}\n",
        inputs.x.describe(),
        inputs.y.describe()
    )
}

fn describe(kind: &KindInfo) -> String {
    let mut out = format!("{}\n", kind.name);
    for line in kind.summary.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out.push_str(&format!(
        "\n  with the example's settings:\n{}",
        declared(kind)
    ));
    out.push_str("\n  settings:\n");
    let required: Vec<&str> = kind
        .schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match kind.schema.get("properties").and_then(Value::as_object) {
        Some(props) if !props.is_empty() => {
            for (name, prop) in props {
                let default = match prop.get("default") {
                    Some(Value::Null) | None if required.contains(&name.as_str()) => {
                        "required".to_string()
                    }
                    Some(Value::Null) | None => "optional".to_string(),
                    Some(v) => format!("default {v}"),
                };
                out.push_str(&format!(
                    "    {name}: {} ({default})\n",
                    super::stages::type_of(prop)
                ));
                if let Some(d) = prop.get("description").and_then(Value::as_str) {
                    for line in d.lines() {
                        out.push_str(&format!("        {line}\n"));
                    }
                }
            }
        }
        _ => out.push_str("    none\n"),
    }
    out.push_str(&format!("\n  example: {}\n", kind.example));
    out
}

pub fn estimators(args: EstimatorsArgs) -> Result<(), Error> {
    let all = kinds();
    let names: Vec<&str> = all.iter().map(|k| k.name).collect();
    super::stages::list_or_describe("estimator", args.name.as_deref(), &names, |i| {
        describe(&all[i])
    })
}
