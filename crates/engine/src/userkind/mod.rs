//! Stage kinds declared in YAML, without Rust: a command template, typed parameters, the
//! tables a kind reads and writes, its tracked files, resources and a version. They are
//! registered beside the built-in kinds, so the engine validates, wires, caches, schedules
//! (locally or on Slurm) and reports them exactly as it does the built-in ones.
//!
//! A pipeline can use the kinds declared
//! - in its own top-level `kinds:` mapping (name -> definition),
//! - in the `*.yaml` / `*.yml` files of the `kinds/` directory beside it (one kind per file,
//!   named after the file unless it says `name:`),
//! - in the files of every directory given with `--kinds DIR`.
//!
//! This module is part of the engine and uses only its API (config, stage, exec); it knows
//! no built-in kind: the caller says which names are taken ([`UserKinds::for_pipeline`]'s
//! `reserved`) and which registry to add the kinds to ([`UserKinds::registry`]). A run
//! writes the kinds it used to `kinds.json` in its run directory (and, on Slurm, beside the
//! task files), so that `cbound report` and the cluster nodes rebuild the same kinds without
//! the definition files.

pub mod definition;
pub mod run;
pub mod schema;
pub mod template;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::artifact::{self, ArtifactError};
use crate::config::diagnostics::{Collector, ConfigErrors};
use crate::config::load::MAX_PIPELINE_BYTES;
use crate::config::yaml::{self, Node, Span};
use crate::stage::Registry;
use definition::{parse_kind, KindDef, Origin};

/// The file a run leaves its kinds in: in the run directory, and beside Slurm task files.
pub const SNAPSHOT_FILE: &str = "kinds.json";

/// The directory beside a pipeline whose files declare kinds.
pub const KINDS_DIR: &str = "kinds";

/// More kind files than this in one directory is a mistake (a data directory named
/// `kinds`), not a library of kinds.
const MAX_KIND_FILES: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum UserKindError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{}: {message}", path.display())]
    Snapshot { path: PathBuf, message: String },
}

/// Kinds declared in YAML, in the order they were found.
#[derive(Debug, Clone, Default)]
pub struct UserKinds {
    kinds: Vec<Arc<KindDef>>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    /// Bumped if the layout changes, so an old snapshot is refused instead of misread.
    format: u32,
    kinds: Vec<KindDef>,
}

const SNAPSHOT_FORMAT: u32 = 1;

/// Reads a YAML file of at most [`MAX_PIPELINE_BYTES`] into a tree; problems go to `c`.
fn read_yaml(path: &Path, c: &mut Collector) -> Option<Node> {
    let at_start = Span { line: 1, col: 1 };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            c.error(at_start, "", format!("cannot read stage kind file: {e}"));
            return None;
        }
    };
    if bytes.len() > MAX_PIPELINE_BYTES {
        c.error(
            at_start,
            "",
            format!(
                "the stage kind file is {} bytes, over the limit of {MAX_PIPELINE_BYTES}",
                bytes.len()
            ),
        );
        return None;
    }
    let Ok(text) = String::from_utf8(bytes) else {
        c.error(at_start, "", "the stage kind file is not valid UTF-8");
        return None;
    };
    match yaml::parse(&text) {
        Ok((root, problems)) => {
            let fine = problems.is_empty();
            for p in problems {
                c.error(p.span, p.path, p.message);
            }
            fine.then_some(root)
        }
        Err(p) => {
            c.error(p.span, p.path, p.message);
            None
        }
    }
}

impl UserKinds {
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &KindDef> {
        self.kinds.iter().map(|k| k.as_ref())
    }

    pub fn get(&self, name: &str) -> Option<&KindDef> {
        self.iter().find(|k| k.name == name)
    }

    /// The kinds among these that `used` names (a run records only the kinds its stages use,
    /// not every kind of the directory beside it).
    pub fn only(&self, used: &[&str]) -> UserKinds {
        UserKinds {
            kinds: self
                .kinds
                .iter()
                .filter(|k| used.contains(&k.name.as_str()))
                .cloned()
                .collect(),
        }
    }

    /// The kinds a pipeline can use: its own `kinds:`, the `kinds/` directory beside it and
    /// `dirs`. Problems in the pipeline file outside `kinds:` (even one that cannot be read)
    /// are left to the pipeline loader, which reports them.
    /// `reserved` are the names of the kinds already registered (the built-in ones), which
    /// a declared kind may not take.
    pub fn for_pipeline(
        pipeline: &Path,
        overrides: &[String],
        dirs: &[PathBuf],
        reserved: &[&str],
    ) -> Result<UserKinds, ConfigErrors> {
        let mut found = Found::new(reserved);
        let mut c = Collector::new(pipeline);
        // Kinds are read as written; silently ignoring `--set kinds.…` would be worse.
        for o in overrides {
            let key = o.split('=').next().unwrap_or_default().trim();
            if key == "kinds" || key.starts_with("kinds.") {
                c.error_with_help(
                    Span::COMMAND_LINE,
                    key,
                    format!("`--set {o}`: stage kinds cannot be overridden"),
                    "edit the kind's definition (and bump its version if its results change)",
                );
            }
        }
        let readable = std::fs::metadata(pipeline)
            .map(|m| m.len() as usize <= MAX_PIPELINE_BYTES)
            .unwrap_or(false);
        // The pipeline loader parses the file again; most pipelines declare no kinds, and a
        // file without the word cannot, so the second parse is skipped for them (it is most
        // of `validate`'s time on a large matrix).
        let root = std::fs::read_to_string(pipeline)
            .ok()
            .filter(|text| readable && text.contains("kinds"))
            .and_then(|text| yaml::parse(&text).ok())
            .map(|(root, _)| root);
        if let Some(entry) = root.as_ref().and_then(|r| r.get("kinds")) {
            match &entry.value.kind {
                yaml::NodeKind::Map(kinds) => {
                    for k in kinds {
                        let prefix = format!("kinds.{}", k.key);
                        let origin = Origin {
                            file: pipeline,
                            prefix: &prefix,
                            allow_name: false,
                        };
                        if let Some(def) = parse_kind(&k.key, k.key_span, &k.value, &origin, &mut c)
                        {
                            found.add(def, k.key_span, &prefix, &mut c);
                        }
                    }
                }
                yaml::NodeKind::Null => {}
                _ => c.error_with_help(
                    entry.value.span,
                    "kinds",
                    format!(
                        "`kinds` must map kind names to definitions, not {}",
                        entry.value.type_name()
                    ),
                    "e.g. `kinds: {summarise: {version: 1, command: [python3, summarise.py, \"{out}\"]}}`",
                ),
            }
        }
        let mut errors = c.errors;
        let beside = pipeline
            .parent()
            .map(|d| d.join(KINDS_DIR))
            .filter(|d| d.is_dir());
        let mut seen_dirs = HashSet::new();
        for dir in beside.iter().chain(dirs) {
            // The same directory twice (`--kinds` naming the one beside the pipeline) is one.
            let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            if seen_dirs.insert(canonical) {
                found.read_dir(dir, &mut errors);
            }
        }
        errors.diagnostics.extend(found.errors.diagnostics);
        if errors.is_empty() {
            Ok(UserKinds { kinds: found.kinds })
        } else {
            errors.normalise();
            Err(errors)
        }
    }

    /// The kinds declared in the files of `dirs` (no pipeline).
    pub fn from_dirs(dirs: &[PathBuf], reserved: &[&str]) -> Result<UserKinds, ConfigErrors> {
        let mut found = Found::new(reserved);
        let mut errors = ConfigErrors::default();
        for dir in dirs {
            found.read_dir(dir, &mut errors);
        }
        errors.diagnostics.extend(found.errors.diagnostics);
        if errors.is_empty() {
            Ok(UserKinds { kinds: found.kinds })
        } else {
            errors.normalise();
            Err(errors)
        }
    }

    /// `base` (the built-in kinds) and these.
    pub fn registry(&self, base: Registry) -> Result<Registry, UserKindError> {
        let mut registry = base;
        for def in &self.kinds {
            let stage = run::UserStage::new(Arc::clone(def)).map_err(|message| {
                UserKindError::Snapshot {
                    path: def.source.file.clone(),
                    message,
                }
            })?;
            registry.push(Box::new(stage));
        }
        Ok(registry)
    }

    /// Writes these kinds to `path` ([`SNAPSHOT_FILE`]), for the nodes of a Slurm run and for
    /// `cbound report`.
    pub fn write_snapshot(&self, path: &Path) -> Result<(), UserKindError> {
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            kinds: self.iter().cloned().collect(),
        };
        Ok(artifact::write_json(path, &snapshot)?)
    }

    /// The kinds of a snapshot; none when `path` does not exist (a run without kinds
    /// declared in YAML writes none).
    pub fn read_snapshot(path: &Path) -> Result<UserKinds, UserKindError> {
        if !path.exists() {
            return Ok(UserKinds::default());
        }
        let snapshot: Snapshot = artifact::read_json(path)?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(UserKindError::Snapshot {
                path: path.to_path_buf(),
                message: format!(
                    "written in format {}, this cbound reads format {SNAPSHOT_FORMAT}",
                    snapshot.format
                ),
            });
        }
        Ok(UserKinds {
            kinds: snapshot.kinds.into_iter().map(Arc::new).collect(),
        })
    }

    /// Lines for `cbound stages NAME` that only a declared kind has: where it is defined,
    /// its command, what it reads and tracks, and its parameters' rules.
    pub fn describe(&self, name: &str) -> Option<String> {
        let def = self.get(name)?;
        let mut out = format!("\n  defined in: {}\n", def.source);
        out.push_str(&format!("  command: {}\n", def.command.join(" ")));
        if !def.needs.is_empty() {
            out.push_str(&format!("  needs: {}\n", def.needs.join(", ")));
        }
        if !def.track.is_empty() {
            let tracked: Vec<String> = def
                .tracked_paths()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            out.push_str(&format!("  tracks: {}\n", tracked.join(", ")));
        }
        let rules: Vec<String> = def
            .params
            .0
            .iter()
            .filter_map(|(n, s)| s.rules_text().map(|r| format!("    {n}: {r}\n")))
            .collect();
        if !rules.is_empty() {
            out.push_str("  rules:\n");
            out.extend(rules);
        }
        Some(out)
    }
}

/// Kinds collected so far, with the place each name was first declared.
struct Found {
    kinds: Vec<Arc<KindDef>>,
    errors: ConfigErrors,
    /// Names of kinds registered before any declared one (the built-in kinds).
    reserved: Vec<String>,
}

impl Found {
    fn new(reserved: &[&str]) -> Found {
        Found {
            kinds: Vec::new(),
            errors: ConfigErrors::default(),
            reserved: reserved.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Adds `def` unless its name is taken (by a built-in kind or an earlier declaration).
    fn add(&mut self, def: KindDef, at: Span, path: &str, c: &mut Collector) {
        if self.reserved.contains(&def.name) {
            c.error_with_help(
                at,
                path,
                format!("`{}` is a built-in stage kind", def.name),
                "give the declared kind another name",
            );
        } else if let Some(first) = self.kinds.iter().find(|k| k.name == def.name) {
            c.error_with_help(
                at,
                path,
                format!("stage kind `{}` is declared twice", def.name),
                format!("it is first declared at {}", first.source),
            );
        } else {
            self.kinds.push(Arc::new(def));
        }
    }

    /// Reads every kind file of `dir`, in name order.
    fn read_dir(&mut self, dir: &Path, errors: &mut ConfigErrors) {
        let mut c = Collector::new(dir);
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                c.error(
                    Span { line: 1, col: 1 },
                    "",
                    format!("cannot read the stage kind directory: {e}"),
                );
                errors.diagnostics.extend(c.errors.diagnostics);
                return;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        if files.len() > MAX_KIND_FILES {
            c.error(
                Span { line: 1, col: 1 },
                "",
                format!(
                    "the stage kind directory has {} YAML files, over the limit of {MAX_KIND_FILES}",
                    files.len()
                ),
            );
            errors.diagnostics.extend(c.errors.diagnostics);
            return;
        }
        for file in files {
            let mut c = Collector::new(&file);
            if let Some(root) = read_yaml(&file, &mut c) {
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let origin = Origin {
                    file: &file,
                    prefix: "",
                    allow_name: true,
                };
                // Where the definition is: its `name`, else its first key.
                let at = match &root.kind {
                    yaml::NodeKind::Map(entries) => entries
                        .iter()
                        .find(|e| e.key == "name")
                        .map(|e| e.value.span)
                        .or_else(|| entries.first().map(|e| e.key_span))
                        .unwrap_or(root.span),
                    _ => root.span,
                };
                if let Some(def) = parse_kind(&stem, at, &root, &origin, &mut c) {
                    self.add(def, at, "", &mut c);
                }
            }
            self.errors.diagnostics.extend(c.errors.diagnostics);
        }
    }
}

/// The JSON Schema of a definition, for the pipeline schema's top-level `kinds:` (editors
/// complete and check definitions written inline).
pub fn definition_schema() -> serde_json::Value {
    use serde_json::json;
    let param = json!({
        "anyOf": [
            {"enum": schema::TYPE_NAMES},
            {
                "type": "object",
                "additionalProperties": false,
                "required": ["type"],
                "properties": {
                    "type": {"enum": schema::TYPE_NAMES},
                    "description": {"type": "string"},
                    "default": {},
                    "required": {"type": "boolean", "description": "The stage must set it (JSON Schema lists these on the object; here it is a flag)."},
                    "enum": {"type": "array", "minItems": 1},
                    "minimum": {"type": "number"},
                    "maximum": {"type": "number"},
                    "exclusiveMinimum": {"type": "number"},
                    "exclusiveMaximum": {"type": "number"},
                    "items": {"type": "object", "description": "The type of the elements of an array parameter, with the same keywords (no default, no required)."},
                    "minItems": {"type": "integer", "minimum": 0},
                    "maxItems": {"type": "integer", "minimum": 0}
                }
            }
        ]
    });
    let strings = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "type": "object",
        "description": "Stage kinds declared in this file, by name: a command template with typed parameters (docs/adding-a-stage.md).",
        "propertyNames": {"pattern": "^[A-Za-z][A-Za-z0-9_-]*$"},
        "additionalProperties": {
            "type": "object",
            "additionalProperties": false,
            "required": ["version", "command"],
            "properties": {
                "summary": {"type": "string", "description": "One line for `cbound stages`."},
                "version": {"type": "integer", "minimum": 1, "description": "Bump when the kind's results change for the same parameters: it joins every cache key."},
                "params": {"type": "object", "additionalProperties": param, "description": "Typed parameters: a JSON Schema subset."},
                "needs": {"allOf": [strings, {"description": "Files read from the inputs, from whichever input wrote each; `validate` checks that one does."}]},
                "produces": {"allOf": [strings, {"description": "Files every instance writes: checked after each run (Parquet tables must read); downstream stages are wired against them; declared PNG and SVG images appear in `cbound report`."}]},
                "track": {"allOf": [strings, {"description": "Files (relative to the definition) whose content joins the cache key, such as the script."}]},
                "command": {"type": "array", "minItems": 1, "items": {"type": "string"}, "description": "Program and arguments; placeholders {out} {seed} {instance} {threads} {kind_dir} {input} {needs.FILE} {params.NAME}, {{ and }} for braces."},
                "env": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                "pass_env": strings,
                "timeout_s": {"type": "number", "exclusiveMinimum": 0},
                "resources": {"$ref": "#/$defs/stage/properties/resources"},
                "example": {"type": "string", "description": "A pipeline snippet using the kind, for `cbound stages`."}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{Need, Registry, Upstream, Wanted};

    /// The kinds a declared one may not shadow: the engine's stand-ins for the built-in ones.
    fn reserved() -> Vec<&'static str> {
        crate::stage::testkinds::registry().kinds()
    }

    fn base() -> Registry {
        crate::stage::testkinds::registry()
    }

    const KIND: &str = r#"summary: Doubles a table.
version: 2
params:
  factor: {type: number, exclusiveMinimum: 0, default: 2}
  mode: {type: string, enum: [fast, exact], required: true}
needs: [samples.parquet]
produces: [doubled.parquet, plot.png]
track: [double.py]
command: [python3, "{kind_dir}/double.py", "{needs.samples.parquet}", "{out}", "{params.factor}", "{params.mode}"]
resources: {cpus: 2, memory: 2G}
"#;

    struct Project {
        dir: tempfile::TempDir,
    }

    impl Project {
        fn new() -> Project {
            Project {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }
        fn errors(&self, pipeline: &str, dirs: &[PathBuf]) -> String {
            UserKinds::for_pipeline(&self.dir.path().join(pipeline), &[], dirs, &reserved())
                .expect_err("kinds should be refused")
                .to_string()
        }
    }

    fn has(errors: &str, location: &str, message: &str) -> bool {
        errors
            .split("\n\n")
            .any(|e| e.contains(location) && e.contains(message))
    }

    #[test]
    fn kinds_come_from_the_pipeline_the_dir_beside_it_and_kind_dirs() {
        let p = Project::new();
        p.write("kinds/double.yaml", KIND);
        p.write("kinds/double.py", "print(1)\n");
        p.write("kinds/notes.txt", "not a kind");
        p.write(
            "lib/other.yml",
            "name: renamed\nversion: 1\ncommand: [\"true\"]\n",
        );
        let pipeline = p.write(
            "p.yaml",
            "kinds:\n  inline: {version: 1, command: [echo, \"{seed}\"]}\nstages:\n  a: {kind: inline}\n",
        );
        let kinds =
            UserKinds::for_pipeline(&pipeline, &[], &[p.dir.path().join("lib")], &reserved())
                .unwrap();
        let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["inline", "double", "renamed"]);
        let double = kinds.get("double").unwrap();
        assert_eq!(double.source.file, p.dir.path().join("kinds/double.yaml"));
        assert_eq!((double.source.line, double.source.col), (1, 1));
        assert_eq!(
            double.tracked_paths(),
            [p.dir.path().join("kinds/double.py")]
        );
        assert_eq!(double.cluster.memory.as_deref(), Some("2G"));
        assert_eq!(kinds.get("inline").unwrap().source.line, 2);

        let registry = kinds.registry(base()).unwrap();
        let stage = registry.get("double").unwrap();
        assert_eq!(stage.version(), 2);
        assert_eq!(stage.writes(), Some(&["doubled.parquet", "plot.png"][..]));
        assert_eq!(
            stage.needs(&serde_json::json!({})),
            vec![Need {
                from: Upstream::Any,
                wanted: Wanted::File("samples.parquet".into()),
                at: vec![],
            }]
        );
        assert_eq!(stage.resources(&serde_json::json!({})).cpus, 2);
        assert_eq!(stage.cluster_defaults().memory.as_deref(), Some("2G"));
        assert!(stage
            .check_params(&serde_json::json!({"mode": "fast", "factor": 0}))
            .is_ok_and(|rules| rules.len() == 1));
        // The generated example sets the required parameter to a valid value.
        assert!(
            stage.example().contains("params: {\"mode\":\"fast\"}"),
            "{}",
            stage.example()
        );
        assert!(stage.prepare(&serde_json::json!({"mode": "slow"})).is_err());

        // A snapshot gives the same kinds, so a node computes the same keys.
        let snapshot = p.dir.path().join(SNAPSHOT_FILE);
        kinds.write_snapshot(&snapshot).unwrap();
        let back = UserKinds::read_snapshot(&snapshot).unwrap();
        let digests = |k: &UserKinds| k.iter().map(KindDef::digest).collect::<Vec<_>>();
        assert_eq!(digests(&kinds), digests(&back));
        assert_eq!(
            back.registry(base())
                .unwrap()
                .get("double")
                .unwrap()
                .definition_digest(),
            stage.definition_digest()
        );
        assert!(UserKinds::read_snapshot(&p.dir.path().join("none.json"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_digest_follows_what_decides_results_only() {
        let p = Project::new();
        p.write("kinds/double.py", "");
        let digest = |text: &str| {
            p.write("kinds/double.yaml", text);
            let kinds = UserKinds::from_dirs(&[p.dir.path().join("kinds")], &reserved()).unwrap();
            kinds.get("double").unwrap().digest()
        };
        let base = digest(KIND);
        assert_eq!(
            base,
            digest(&KIND.replace("Doubles a table.", "Doubles it."))
        );
        assert_eq!(base, digest(&KIND.replace("cpus: 2", "cpus: 4")));
        assert_eq!(
            base,
            digest(&KIND.replace("default: 2}", "default: 2, description: how much}"))
        );
        // The version joins the key on its own.
        assert_eq!(base, digest(&KIND.replace("version: 2", "version: 3")));
        assert_ne!(base, digest(&KIND.replace("default: 2}", "default: 3}")));
        assert_ne!(
            base,
            digest(&KIND.replace("\"{out}\", ", "\"{out}\", --v, "))
        );
        assert_ne!(base, digest(&KIND.replace("plot.png]", "plot.svg]")));
    }

    #[test]
    fn definition_errors_point_into_their_file() {
        let p = Project::new();
        p.write("kinds/double.py", "");
        p.write("kinds/double.yaml", KIND);
        p.write(
            "kinds/broken.yaml",
            "version: 1\nproduce: [x.parquet]\nparams:\n  k: {type: integer}\n  mode: {type: string, default: a}\ncommand: [sh, \"{outt}\", \"{params.k}\", \"{params.mdoe}\", \"{needs.x.parquet}\"]\ntrack: [missing.py]\n",
        );
        p.write("kinds/command.yaml", "version: 1\ncommand: [\"true\"]\n");
        p.write("kinds/empty.yaml", "summary: nothing\n");
        p.write(
            "p.yaml",
            "kinds:\n  double: {version: 1, command: [\"true\"]}\nstages: {}\n",
        );
        let e = p.errors("p.yaml", &[]);
        let broken = "kinds/broken.yaml";
        for (location, message) in [
            (
                format!("{broken}:2:1 (at `produce`)"),
                "unknown stage kind key `produce`",
            ),
            (format!("{broken}:6:15"), "unknown placeholder `{outt}`"),
            (
                format!("{broken}:6:25"),
                "`{params.k}` has no value when the stage does not set `k`",
            ),
            (
                format!("{broken}:6:39"),
                "`{params.mdoe}` names no parameter of stage kind `broken`",
            ),
            (
                format!("{broken}:6:56"),
                "`{needs.x.parquet}` names a file that is not in `needs`",
            ),
            (
                format!("{broken}:7:9 (at `track[0]`)"),
                "tracked file `missing.py` does not exist",
            ),
            (
                "kinds/command.yaml:1:1".to_string(),
                "`command` is a built-in stage kind",
            ),
            (
                "kinds/empty.yaml:1:1 (at `version`)".to_string(),
                "stage kind `empty` has no `version`",
            ),
            // The pipeline's own kinds come first; the second declaration is the error.
            (
                "kinds/double.yaml:1:1".to_string(),
                "stage kind `double` is declared twice",
            ),
        ] {
            assert!(
                has(&e, &location, message),
                "no `{message}` at {location} in:\n{e}"
            );
        }
        assert!(e.contains("did you mean `produces`?"), "{e}");
        assert!(e.contains("did you mean `{out}`?"), "{e}");
        assert!(e.contains("did you mean `{params.mode}`?"), "{e}");
        assert!(
            e.contains("it is first declared at") && e.contains("p.yaml:2:3"),
            "{e}"
        );
    }

    #[test]
    fn kinds_cannot_be_overridden() {
        let p = Project::new();
        let pipeline = p.write("p.yaml", "stages: {}\n");
        let e = UserKinds::for_pipeline(&pipeline, &["kinds.x.version=2".into()], &[], &reserved())
            .unwrap_err()
            .to_string();
        assert!(e.contains("stage kinds cannot be overridden"), "{e}");
        assert!(e.contains("(from --set)"), "{e}");
    }
}
