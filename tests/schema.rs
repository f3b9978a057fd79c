//! The checked-in JSON Schema is current, and every pipeline in `pipelines/` validates
//! against it (with Python's jsonschema, an independent implementation) and with cbound.

mod common;

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_schema_is_current() {
    let out = Command::new(common::bin())
        .args(["schema", "--check"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_pipeline_validates_against_the_schema_and_with_cbound() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let schema = root().join("schemas/pipeline.schema.json");
    // Pipelines using the kinds declared in pipelines/kinds are checked against the schema
    // `cbound schema --kinds` makes with them; the others against the checked-in one.
    let out = Command::new(common::bin())
        .args(["schema", "--kinds", "pipelines/kinds"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let with_kinds = dir.path().join("with-kinds.schema.json");
    std::fs::write(&with_kinds, &out.stdout).unwrap();
    let mut args = vec![schema.to_str().unwrap(), with_kinds.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let checked = common::py(
        r#"
import json, sys, yaml, jsonschema
builtin, declared = (json.load(open(p)) for p in sys.argv[1:3])
for schema in (builtin, declared):
    jsonschema.Draft202012Validator.check_schema(schema)
builtin_kinds = set(builtin["$defs"]["stage"]["properties"]["kind"]["enum"])
for path in sys.argv[3:]:
    pipeline = yaml.safe_load(open(path))
    kinds = {s.get("kind") for s in pipeline["stages"].values()}
    schema, which = (builtin, "built-in") if kinds <= builtin_kinds else (declared, "declared")
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(pipeline))
    if errors:
        sys.exit(f"{path}: " + "; ".join(e.message for e in errors))
    print(path, which)
"#,
        &args,
    );
    assert_eq!(checked.lines().count(), files.len());
    assert!(checked.contains("embedding-pca.yaml declared"), "{checked}");
    assert!(checked.contains("quickstart.yaml built-in"), "{checked}");
    // The schema must reject what cbound rejects, at least for unknown keys.
    let rejected = common::py(
        r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
bad = {"stages": {"a": {"kind": "synthetic", "params": {"nn": 3}}}}
print(len(list(jsonschema.Draft202012Validator(schema).iter_errors(bad))))
"#,
        &[schema.to_str().unwrap()],
    );
    assert_ne!(rejected.trim(), "0", "schema accepted an unknown parameter");
    let mut cmd = Command::new(common::bin());
    cmd.arg("validate").args(&files).current_dir(root());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
