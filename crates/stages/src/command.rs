//! `command`: runs an external program (a Python or R analysis, a plotting script) on the
//! upstream outputs.
//!
//! The program gets its inputs three ways, whichever is convenient: placeholders in `argv`
//! (`{out}`, `{seed}`, `{instance}`, `{input.STAGE}`), environment variables (`CBOUND_OUT`,
//! `CBOUND_SEED`, `CBOUND_INSTANCE`, `CBOUND_INPUTS`, `CBOUND_THREADS`) and `inputs.json` in
//! its output directory, which lists every input instance with its directory and files.
//! Whatever it writes into its output directory becomes the instance's outputs; a
//! `metrics.json` of name-to-number pairs becomes metrics in `results.parquet`. stdout and
//! stderr are kept as `stdout.txt` and `stderr.txt`. docs/adding-a-stage.md ("What the
//! program gets") documents the placeholders and variables, shared with kinds declared in
//! YAML (cbound_engine::exec::process).

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use cbound_engine::config::yaml::PathSeg;
use cbound_engine::exec::process;
use cbound_engine::stage::{
    Need, ParamError, Stage, StageContext, StageError, StageOutput, Upstream, Wanted,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// Program and arguments, e.g. `[python3, analysis.py, "{input.estimate}", "{out}"]`.
    /// Arguments naming existing files (such as the script), and the program when it is given
    /// as a path (`./prog.py`), are hashed into the cache key.
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// More files whose content the result depends on (modules the script imports, data).
    #[serde(default)]
    pub track: Vec<PathBuf>,
    /// Environment variables the program needs from cbound's environment, by name only: a
    /// token or password that must never be recorded. The program inherits them (it inherits
    /// cbound's whole environment); their values never enter the parameters, the cache key,
    /// meta.json, results.parquet or `plan --why`, unlike `${env.NAME}`, which is a parameter
    /// value like any other. A name missing from the environment fails the instance.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Seconds before the program is killed; none by default.
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

pub struct Command;

/// The stage ids of an argument's `{input.<stage>}` placeholders, in order; `None` for one
/// left unclosed.
fn input_placeholders(arg: &str) -> impl Iterator<Item = Option<&str>> {
    arg.match_indices("{input.").map(move |(start, _)| {
        let rest = &arg[start + "{input.".len()..];
        rest.find('}').map(|end| &rest[..end])
    })
}

impl Stage for Command {
    type Params = CommandParams;
    const KIND: &'static str = "command";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Run an external program on upstream outputs; its files become this stage's outputs.";
    const EXAMPLE: &'static str = r#"report:
  kind: command
  inputs: [data]
  params:
    argv: [python3, scripts/summarise.py, "{input.data}/samples.parquet", "{out}"]
"#;
    // Whatever the program writes.
    const WRITES: Option<&'static [&'static str]> = None;

    fn needs(p: &CommandParams) -> Vec<Need> {
        let mut out = Vec::new();
        for (i, arg) in p.argv.iter().enumerate() {
            for stage in input_placeholders(arg).flatten() {
                out.push(Need {
                    from: Upstream::Named(stage.to_string()),
                    wanted: Wanted::Directory,
                    at: vec![PathSeg::Key("argv".into()), PathSeg::Index(i)],
                });
            }
        }
        out
    }

    fn check(p: &CommandParams) -> Vec<ParamError> {
        let mut out = Vec::new();
        if p.argv.is_empty() {
            out.push(ParamError::at(
                &["argv"],
                "`argv` is empty: name a program to run",
            ));
        }
        for (i, arg) in p.argv.iter().enumerate() {
            if input_placeholders(arg).any(|s| s.is_none()) {
                out.push(ParamError::at(
                    &["argv", &i.to_string()],
                    format!("unclosed placeholder in `{arg}`"),
                ));
            }
        }
        if let Some(t) = p.timeout_s.filter(|t| !(t.is_finite() && *t > 0.0)) {
            out.push(ParamError::at(
                &["timeout_s"],
                format!("timeout_s must be a positive number of seconds, got {t}"),
            ));
        }
        out
    }

    fn tracked_files(params: &CommandParams) -> Result<Vec<PathBuf>, String> {
        // The program itself when it is given as a path (`./prog.py`, `scripts/x.sh`): its
        // content is the computation. A bare name (`python3`) is looked up on PATH and is
        // part of the environment, like the interpreter's version.
        let program = params
            .argv
            .first()
            .filter(|a| a.contains(std::path::MAIN_SEPARATOR) || a.contains('/'));
        let mut files: Vec<PathBuf> = program
            .into_iter()
            .chain(params.argv.iter().skip(1))
            .filter(|a| !a.contains('{'))
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .collect();
        files.extend(params.track.iter().cloned());
        Ok(files)
    }

    fn run(params: &CommandParams, ctx: &StageContext) -> Result<StageOutput, StageError> {
        let Some(program) = params.argv.first() else {
            return Err(StageError::Params(
                "`argv` is empty: name a program to run".into(),
            ));
        };
        let out_abs = process::absolute(ctx.out_dir);
        let out = out_abs.as_path();
        process::write_inputs_manifest(ctx, out)?;

        let substitute = |arg: &str| -> Result<String, StageError> {
            let mut s = arg
                .replace("{out}", &out.to_string_lossy())
                .replace("{seed}", &ctx.seed.to_string())
                .replace("{instance}", ctx.instance);
            while let Some(start) = s.find("{input.") {
                let end = s[start..].find('}').map(|e| start + e).ok_or_else(|| {
                    StageError::Params(format!("unclosed placeholder in `{arg}`"))
                })?;
                let stage = &s[start + 7..end];
                let dir = process::absolute(&ctx.input(stage)?.dir)
                    .to_string_lossy()
                    .into_owned();
                s.replace_range(start..=end, &dir);
            }
            Ok(s)
        };
        let args = params.argv[1..]
            .iter()
            .map(|a| substitute(a))
            .collect::<Result<Vec<_>, _>>()?;
        process::run(
            &process::Program {
                program,
                args: &args,
                env: params
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                pass_env: &params.pass_env,
                timeout_s: params.timeout_s,
            },
            ctx,
            out,
        )?;
        let mut output = StageOutput::default().metric("exit_code", 0.0);
        output.metrics.extend(process::read_metrics(out)?);
        Ok(output)
    }
}
