//! A kind declared in YAML as the engine sees every kind: a [`DynStage`] whose parameters are
//! checked by the definition's schema, whose needs and writes come from `needs` and
//! `produces`, and whose run fills in the command template, runs the program the way the
//! built-in `command` does (src/exec/process.rs), and then holds it to its promises: every
//! declared output exists, and every declared Parquet table reads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};

use super::definition::KindDef;
use super::template::{self, Piece};
use crate::artifact;
use crate::config::{ClusterResources, Resources};
use crate::exec::process;
use crate::stage::{
    DynStage, Need, ParamError, PreparedStage, StageContext, StageError, StageOutput, Upstream,
    Wanted,
};

/// The resolved parameters every program gets (`$CBOUND_PARAMS`), defaults filled in.
pub const PARAMS_FILE: &str = "params.json";

/// The engine's [`DynStage`] hands out kind names, summaries and output lists as
/// `&'static str`, because plans, events and results hold them for the whole process; a kind
/// declared in YAML lives as long (its registry is built once per command). So its strings
/// are leaked, once per distinct text: loading the same kinds again (tests, `validate` of
/// several pipelines sharing a `kinds/` directory) adds nothing.
fn intern(s: &str) -> &'static str {
    static TEXTS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut texts = TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&known) = texts.get(s) {
        return known;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    texts.insert(leaked);
    leaked
}

fn intern_list(items: &[String]) -> &'static [&'static str] {
    static LISTS: OnceLock<Mutex<HashMap<Vec<String>, &'static [&'static str]>>> = OnceLock::new();
    let mut lists = LISTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&known) = lists.get(items) {
        return known;
    }
    let leaked: &'static [&'static str] = Box::leak(
        items
            .iter()
            .map(|s| intern(s))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    lists.insert(items.to_vec(), leaked);
    leaked
}

/// A pipeline snippet using the kind: its required parameters with values that pass.
fn example_of(def: &KindDef, reads_input: bool) -> String {
    if let Some(example) = &def.example {
        return example.clone();
    }
    let mut text = format!("{}:\n  kind: {}\n", def.name, def.name);
    if !def.needs.is_empty() || reads_input {
        text.push_str("  inputs: [upstream]\n");
    }
    let required: Map<String, Value> = def
        .params
        .0
        .iter()
        .filter(|(_, spec)| spec.required)
        .map(|(name, spec)| (name.clone(), spec.example_value()))
        .collect();
    if !required.is_empty() {
        text.push_str(&format!("  params: {}\n", Value::Object(required)));
    }
    text
}

/// A kind declared in YAML, registered with the engine.
pub struct UserStage {
    def: Arc<KindDef>,
    templates: Arc<Vec<Vec<Piece>>>,
    digest: String,
    kind: &'static str,
    summary: &'static str,
    example: &'static str,
    writes: Option<&'static [&'static str]>,
    /// The command names `{input}`: the stage must have exactly one input.
    reads_input: bool,
}

impl UserStage {
    /// Fails only for a definition whose command does not parse, which [`super::definition`]
    /// refuses when reading; a snapshot edited by hand could still have one.
    pub fn new(def: Arc<KindDef>) -> Result<UserStage, String> {
        let templates = def
            .templates()
            .map_err(|e| format!("stage kind `{}`: {e}", def.name))?;
        let reads_input = templates.iter().flatten().any(|p| *p == Piece::Input);
        Ok(UserStage {
            digest: def.digest(),
            kind: intern(&def.name),
            summary: intern(&def.summary),
            example: intern(&example_of(&def, reads_input)),
            writes: def.produces.as_deref().map(intern_list),
            templates: Arc::new(templates),
            reads_input,
            def,
        })
    }
}

impl DynStage for UserStage {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn version(&self) -> u32 {
        self.def.version
    }
    fn summary(&self) -> &'static str {
        self.summary
    }
    fn example(&self) -> &'static str {
        self.example
    }
    fn params_schema(&self) -> Value {
        self.def.params.json_schema()
    }
    fn check_params(&self, params: &Value) -> Result<Vec<ParamError>, ParamError> {
        self.def.params.check(params)
    }
    fn writes(&self) -> Option<&'static [&'static str]> {
        self.writes
    }
    fn needs(&self, _params: &Value) -> Vec<Need> {
        let mut needs: Vec<Need> = self.def.needs.iter().map(|f| Need::any(f)).collect();
        if self.reads_input {
            needs.push(Need {
                from: Upstream::Only,
                wanted: Wanted::Directory,
                at: Vec::new(),
            });
        }
        needs
    }
    fn resources(&self, _params: &Value) -> Resources {
        self.def.resources.unwrap_or_default()
    }
    fn tracked_files(&self, _params: &Value) -> Result<Vec<PathBuf>, String> {
        Ok(self.def.tracked_paths())
    }
    fn run(&self, params: &Value, ctx: &StageContext) -> Result<StageOutput, StageError> {
        self.prepare(params)
            .map_err(|e| StageError::Params(e.to_string()))?
            .run(ctx)
    }
    fn prepare(&self, params: &Value) -> Result<Arc<dyn PreparedStage>, ParamError> {
        let rules = self.def.params.check(params)?;
        Ok(Arc::new(Prepared {
            def: Arc::clone(&self.def),
            templates: Arc::clone(&self.templates),
            kind: self.kind,
            resolved: self.def.params.resolve(params),
            broken: rules.into_iter().next(),
        }))
    }
    fn definition_digest(&self) -> Option<String> {
        Some(self.digest.clone())
    }
    fn cluster_defaults(&self) -> ClusterResources {
        self.def.cluster.clone()
    }
}

/// One instance's parameters, checked and with defaults filled in.
struct Prepared {
    def: Arc<KindDef>,
    templates: Arc<Vec<Vec<Piece>>>,
    kind: &'static str,
    resolved: Map<String, Value>,
    /// The first rule the parameters break: `validate` reports it before any run, and the
    /// run refuses it, as for built-in kinds.
    broken: Option<ParamError>,
}

/// What the placeholders stand for in one instance.
struct Placeholders<'a> {
    ctx: &'a StageContext<'a>,
    out: &'a Path,
    kind_dir: PathBuf,
    params: &'a Map<String, Value>,
}

impl template::Values for Placeholders<'_> {
    fn out(&self) -> String {
        self.out.to_string_lossy().into_owned()
    }
    fn seed(&self) -> String {
        self.ctx.seed.to_string()
    }
    fn instance(&self) -> String {
        self.ctx.instance.to_string()
    }
    fn threads(&self) -> String {
        self.ctx.threads.to_string()
    }
    fn kind_dir(&self) -> String {
        self.kind_dir.to_string_lossy().into_owned()
    }
    fn input(&self) -> Result<String, String> {
        match self.ctx.inputs {
            [one] => Ok(process::absolute(&one.dir).to_string_lossy().into_owned()),
            inputs => Err(format!(
                "`{{input}}` stands for the one input, but this instance has {} (a gathering stage): read them from $CBOUND_INPUTS",
                inputs.len()
            )),
        }
    }
    fn needs(&self, file: &str) -> Result<String, String> {
        let having: Vec<_> = self
            .ctx
            .inputs
            .iter()
            .filter(|i| i.meta.outputs.iter().any(|o| o.name == file))
            .collect();
        match having.as_slice() {
            [one] => Ok(process::absolute(&one.dir.join(file))
                .to_string_lossy()
                .into_owned()),
            [] => Err(format!(
                "no input wrote `{file}` (inputs: {})",
                self.ctx
                    .inputs
                    .iter()
                    .map(|i| i.instance.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            many => Err(format!(
                "{} inputs wrote `{file}` ({}): `{{needs.{file}}}` needs exactly one; read them from $CBOUND_INPUTS",
                many.len(),
                many.iter()
                    .map(|i| i.instance.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    fn param(&self, name: &str) -> Option<&Value> {
        self.params.get(name)
    }
}

/// PNG files start with these bytes; a declared plot without them would be a broken image
/// in the report.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Holds the program to its declaration: every file in `produces` exists, Parquet tables
/// read, PNG images are PNG.
fn check_declared(def: &KindDef, out: &Path) -> Result<(), StageError> {
    let Some(declared) = &def.produces else {
        return Ok(());
    };
    let missing: Vec<&str> = declared
        .iter()
        .filter(|f| !out.join(f).is_file())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let wrote = artifact::collect_outputs(out)
            .map(|files| {
                files
                    .iter()
                    .map(|f| f.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Err(StageError::Failed(format!(
            "stage kind `{}` declares {} in `produces`, but the program did not write {}; it wrote: {wrote}",
            def.name,
            if missing.len() == 1 { "an output" } else { "outputs" },
            missing
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", "),
        )));
    }
    for file in declared {
        let path = out.join(file);
        if file.ends_with(".parquet") {
            artifact::read_parquet(&path).map_err(|e| {
                StageError::Failed(format!(
                    "declared table `{file}` of stage kind `{}` is not readable Parquet: {e}",
                    def.name
                ))
            })?;
        } else if file.ends_with(".png") {
            let mut head = [0u8; 8];
            let is_png = std::fs::File::open(&path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .is_ok()
                && head == PNG_SIGNATURE;
            if !is_png {
                return Err(StageError::Failed(format!(
                    "declared image `{file}` of stage kind `{}` is not a PNG file",
                    def.name
                )));
            }
        }
    }
    Ok(())
}

impl PreparedStage for Prepared {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn resources(&self) -> Resources {
        self.def.resources.unwrap_or_default()
    }
    fn tracked_files(&self) -> Result<Vec<PathBuf>, String> {
        Ok(self.def.tracked_paths())
    }
    fn run(&self, ctx: &StageContext) -> Result<StageOutput, StageError> {
        if let Some(problem) = &self.broken {
            return Err(StageError::Params(problem.to_string()));
        }
        let out_abs = process::absolute(ctx.out_dir);
        let out = out_abs.as_path();
        let params_path = out.join(PARAMS_FILE);
        artifact::write_json(&params_path, &Value::Object(self.resolved.clone()))?;
        process::write_inputs_manifest(ctx, out)?;
        let kind_dir = process::absolute(&self.def.dir);
        let values = Placeholders {
            ctx,
            out,
            kind_dir: kind_dir.clone(),
            params: &self.resolved,
        };
        let mut argv = Vec::new();
        for pieces in self.templates.iter() {
            argv.extend(template::render_arg(pieces, &values).map_err(StageError::Input)?);
        }
        let Some((program, args)) = argv.split_first() else {
            return Err(StageError::Params(format!(
                "stage kind `{}` has an empty command",
                self.def.name
            )));
        };
        let mut env: Vec<(String, String)> = self
            .def
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push((
            "CBOUND_PARAMS".into(),
            params_path.to_string_lossy().into_owned(),
        ));
        env.push((
            "CBOUND_KIND_DIR".into(),
            kind_dir.to_string_lossy().into_owned(),
        ));
        process::run(
            &process::Program {
                program,
                args,
                env,
                pass_env: &self.def.pass_env,
                timeout_s: self.def.timeout_s,
            },
            ctx,
            out,
        )?;
        check_declared(&self.def, out)?;
        Ok(StageOutput {
            metrics: process::read_metrics(out)?,
            facts: Default::default(),
        })
    }
}
