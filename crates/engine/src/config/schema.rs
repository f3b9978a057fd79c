//! The JSON Schema of the pipeline format, for editors (YAML language servers read it from
//! `# yaml-language-server: $schema=...`). Stage parameter schemas come from each kind's typed
//! parameter struct, so the schema cannot drift from what `cbound validate` accepts.
//!
//! The schema is looser than validation in two documented ways: any parameter may be a
//! `${...}` reference (resolved before typing), and `required` parameters are not enforced
//! because a `matrix:` may supply them.

use serde_json::{json, Map, Value};

use crate::stage::Registry;

pub fn pipeline_schema(registry: &Registry) -> Value {
    let mut defs = Map::new();
    let mut branches = Vec::new();
    for stage in registry.iter() {
        let def_name = format!("params_{}", stage.kind());
        defs.insert(def_name.clone(), loosen(stage.params_schema()));
        branches.push(json!({
            "if": {"properties": {"kind": {"const": stage.kind()}}, "required": ["kind"]},
            "then": {"properties": {
                "params": {"$ref": format!("#/$defs/{def_name}")},
                "matrix": {"$ref": "#/$defs/matrix"},
            }}
        }));
    }
    // What a kind declared in YAML looks like is the userkind module's to say; `cbound schema`
    // puts its schema here.
    defs.insert(
        "kinds".into(),
        json!({"type": "object", "description": "Stage kinds declared in this file, by name (docs/adding-a-stage.md)."}),
    );
    defs.insert(
        "interpolation".into(),
        json!({"type": "string", "pattern": "\\$\\{[^}]+\\}", "description": "a ${...} reference to a variable or ${env.NAME}"}),
    );
    defs.insert(
        "matrix".into(),
        json!({
            "description": "Sweep: each key is a (dotted) parameter path, each value a list; the stage runs once per combination.",
            "type": "object",
            "additionalProperties": {"anyOf": [{"type": "array", "minItems": 1}, {"$ref": "#/$defs/interpolation"}]}
        }),
    );
    defs.insert(
        "memory".into(),
        json!({"anyOf": [{"type": "string", "pattern": "^[0-9]+[KMGTkmgt]?$"}, {"type": "integer", "minimum": 1}], "description": "Memory per instance on a cluster (sbatch --mem), e.g. 4G; a number is megabytes."}),
    );
    defs.insert(
        "time".into(),
        json!({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 1}], "description": "Time limit per instance on a cluster (sbatch --time): minutes, H:M:S or D-H:M:S."}),
    );
    defs.insert(
        "sbatch".into(),
        json!({"type": "array", "items": {"type": "string", "pattern": "^-"}, "description": "Extra sbatch flags, each with its value joined: --qos=high."}),
    );
    defs.insert(
        "stage".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["kind"],
            "properties": {
                "kind": {"enum": registry.kinds(), "description": "The stage kind (`cbound stages` lists them)."},
                "description": {"type": "string"},
                "inputs": {
                    "description": "Upstream stage ids whose outputs this stage reads; it runs once per upstream instance.",
                    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
                },
                "gather": {"type": "boolean", "description": "Run once over all instances of the inputs instead of once per upstream instance."},
                "params": {"type": "object"},
                "matrix": {"$ref": "#/$defs/matrix"},
                "matrix_mode": {"enum": ["cross", "one_at_a_time"], "description": "`cross` (default): every combination of the matrix axes. `one_at_a_time`: each axis varies alone while the others keep their `params` values (an ablation)."},
                "repeat": {
                    "anyOf": [{"type": "integer", "minimum": 1}, {"$ref": "#/$defs/interpolation"}],
                    "description": "Replicates: every configuration of this stage (each matrix combination, also under one_at_a_time) runs N times with its own seed, as an extra sweep axis `replicate` = 0..N-1 (ids `train@lr=0.1,replicate=2`, results column sweep.replicate; not a parameter). Downstream stages fan out once per replicate. Overrides the pipeline's `repeat` (1 opts a root stage out)."
                },
                "resources": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "cpus": {"type": "integer", "minimum": 1, "description": "CPU threads per instance, counted against --jobs."},
                        "gpus": {"type": "number", "minimum": 0, "description": "GPUs per instance, counted against --gpus: a whole number gives each running instance its own device ids out of 0..--gpus (train and embed run on the first, a program sees them as CUDA_VISIBLE_DEVICES); a share below 1 (0.5, 0.25, to a thousandth) runs on one device beside other shares while they add up to at most 1, never beside an instance holding it whole, and train and embed cap ONNX Runtime's memory on it at that share (on Slurm: --gres=gpu:N, a share asks for a whole GPU)."},
                        "memory": {"$ref": "#/$defs/memory"},
                        "time": {"$ref": "#/$defs/time"},
                        "partition": {"type": "string", "description": "Slurm partition (--partition)."},
                        "sbatch": {"$ref": "#/$defs/sbatch"}
                    }
                }
            },
            "allOf": branches,
        }),
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://cbound.dev/schemas/pipeline.schema.json",
        "title": "cbound pipeline",
        "description": "A cbound pipeline: stages that load, augment, train, embed, estimate mutual information and compute bounds.",
        "type": "object",
        "additionalProperties": false,
        "required": ["stages"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "description": "Names the output directory outputs/<name>/. Defaults to the file name."},
            "description": {"type": "string"},
            "seed": {"anyOf": [{"type": "integer", "minimum": 0}, {"$ref": "#/$defs/interpolation"}], "description": "Pipeline seed; each instance's seed is derived from it and the instance id."},
            "repeat": {
                "anyOf": [{"type": "integer", "minimum": 1}, {"$ref": "#/$defs/interpolation"}],
                "description": "Replicates of the whole pipeline: every root stage (one without inputs) that has no `repeat` of its own runs N times, as replicate 0..N-1 of one shared axis with its own seeds; downstream stages inherit it through fan-out (a stage combining two roots pairs equal replicates) rather than multiplying again. Results column sweep.replicate."
            },
            "vars": {"type": "object", "description": "Variables for ${name} interpolation."},
            "kinds": {"$ref": "#/$defs/kinds"},
            "executor": {
                "type": "object",
                "additionalProperties": false,
                "description": "Where instances run; `cbound run --executor` overrides `kind`.",
                "properties": {
                    "kind": {"enum": ["local", "slurm"], "description": "local (threads here, the default) or slurm (one job array per stage)."},
                    "max_parallel": {"type": "integer", "minimum": 1, "description": "Running tasks per job array at most (sbatch --array=0-N%K)."},
                    "memory": {"$ref": "#/$defs/memory"},
                    "time": {"$ref": "#/$defs/time"},
                    "partition": {"type": "string", "description": "Default Slurm partition."},
                    "sbatch": {"$ref": "#/$defs/sbatch"},
                    "cbound": {"type": "string", "description": "The cbound binary on the cluster nodes (default: the submitting one, on a shared filesystem)."}
                }
            },
            "stages": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {"$ref": "#/$defs/stage"}
            }
        },
        "$defs": defs,
    })
}

/// Lets every parameter, at any depth (an augmentation op's `std`, an estimator's settings),
/// be a `${...}` reference and drops `required` (see module docs).
fn loosen(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
        map.remove("required");
        for (key, child) in map.iter_mut() {
            if key == "properties" {
                continue;
            }
            // Array elements may be references too (`scale: ['${crop_min}', 1.0]`), like
            // properties.
            let elements = key == "items" || key == "prefixItems";
            match child {
                Value::Object(_) => {
                    *child = loosen(std::mem::take(child));
                    if elements {
                        *child = or_interpolation(std::mem::take(child));
                    }
                }
                Value::Array(items) => {
                    for item in items.iter_mut() {
                        *item = loosen(std::mem::take(item));
                        if elements {
                            *item = or_interpolation(std::mem::take(item));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(Value::Object(props)) = map.get_mut("properties") {
            for (_, prop) in props.iter_mut() {
                let mut inner = loosen(std::mem::take(prop));
                let mut outer = Map::new();
                if let Value::Object(m) = &mut inner {
                    for key in ["description", "default", "title"] {
                        if let Some(v) = m.remove(key) {
                            outer.insert(key.into(), v);
                        }
                    }
                }
                outer.insert(
                    "anyOf".into(),
                    json!([inner, {"$ref": "#/$defs/interpolation"}]),
                );
                *prop = Value::Object(outer);
            }
        }
    }
    schema
}

/// `schema` or a `${...}` reference.
fn or_interpolation(schema: Value) -> Value {
    json!({"anyOf": [schema, {"$ref": "#/$defs/interpolation"}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_branch_with_its_params() {
        let registry = crate::stage::testkinds::registry();
        let schema = pipeline_schema(&registry);
        for kind in registry.kinds() {
            let def = &schema["$defs"][format!("params_{kind}")];
            assert_eq!(def["type"], "object", "{kind}");
            assert_eq!(
                def["additionalProperties"], false,
                "{kind} must reject unknown params"
            );
        }
    }
}
