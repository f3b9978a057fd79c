//! Wiring checks at load time: what each stage reads from its inputs
//! ([`crate::stage::Stage::needs`]) against the stages wired in and the files their kinds
//! declare they write ([`crate::stage::Stage::WRITES`]), so that a `train` fed by a
//! `synthetic` stage or a `{input.typo}` placeholder fails `validate` at its place in the
//! file instead of an instance failing at run time.

use std::collections::HashMap;

use super::diagnostics::{did_you_mean, Collector};
use super::load::join;
use super::yaml::{render_path, Node, Span};
use super::StageDecl;
use crate::stage::{Need, Registry, Upstream, Wanted};

/// Checks what each stage reads from its inputs ([`crate::stage::Stage::needs`]) against the
/// stages wired in and what their kinds write ([`crate::stage::Stage::WRITES`]): a named
/// input that is not an input, a stage that reads one input but has several, a file that no
/// input writes. Parameters are taken at the first value of every matrix axis.
pub(super) fn check(
    stages: &[StageDecl],
    spans: &HashMap<String, (Span, Vec<Span>)>,
    param_nodes: &HashMap<String, Node>,
    registry: &Registry,
    c: &mut Collector,
) {
    let by_id: HashMap<&str, &StageDecl> = stages.iter().map(|s| (s.id.as_str(), s)).collect();
    // Output files of a stage, when its kind says them before running.
    let writes = |id: &str| {
        by_id
            .get(id)
            .and_then(|s| registry.get(&s.kind))
            .and_then(|k| k.writes())
    };
    let tables = |files: &[&str]| -> Vec<String> {
        files
            .iter()
            .filter(|f| f.ends_with(".parquet") && !crate::artifact::is_timing_output(f))
            .map(|f| f.to_string())
            .collect()
    };
    let writers_of = |file: &str| -> Vec<&'static str> {
        registry
            .iter()
            .filter(|k| k.writes().is_some_and(|w| w.contains(&file)))
            .map(|k| k.kind())
            .collect()
    };
    for s in stages {
        let Some(kind) = registry.get(&s.kind) else {
            continue;
        };
        let mut params = s.params.clone();
        for axis in &s.matrix {
            super::set_dotted(&mut params, &axis.key, axis.values[0].clone());
        }
        let (key_span, input_spans) = &spans[&s.id];
        let node = &param_nodes[&s.id];
        for need in kind.needs(&params) {
            let Need { from, wanted, at } = need;
            // Where to point: the parameter that says it, else the stage's inputs.
            let (span, yaml_path) = if at.is_empty() {
                (
                    input_spans.first().copied().unwrap_or(*key_span),
                    format!("stages.{}.inputs", s.id),
                )
            } else {
                (
                    node.span_at(&at),
                    join(&format!("stages.{}.params", s.id), &render_path(&at)),
                )
            };
            let what = match &wanted {
                Wanted::File(f) => format!("`{f}`"),
                Wanted::OnlyTable => "a table".to_string(),
                Wanted::Directory => "its outputs".to_string(),
            };
            let candidates: Vec<&str> = match &from {
                Upstream::Named(name) => {
                    if !s.inputs.contains(name) {
                        c.error_with_help(
                            span,
                            yaml_path,
                            match wanted {
                                Wanted::Directory => format!(
                                    "`{{input.{name}}}` names `{name}`, which is not an input of stage `{}`",
                                    s.id
                                ),
                                _ => format!(
                                    "stage `{}` reads {what} from `{name}`, which is not one of its inputs",
                                    s.id
                                ),
                            },
                            match did_you_mean(name, &s.inputs.iter().map(String::as_str).collect::<Vec<_>>()) {
                                Some(m) => format!("did you mean `{m}`? (inputs: {})", s.inputs.join(", ")),
                                None if s.inputs.is_empty() => format!("add `inputs: [{name}]` to stage `{}`", s.id),
                                None => format!("its inputs are: {}", s.inputs.join(", ")),
                            },
                        );
                        continue;
                    }
                    vec![name.as_str()]
                }
                Upstream::Only => {
                    if s.inputs.len() != 1 {
                        c.error_with_help(
                            span,
                            yaml_path,
                            format!(
                                "stage `{}` ({}) reads {what} from its one input, but it has {} inputs",
                                s.id,
                                s.kind,
                                s.inputs.len()
                            ),
                            if s.inputs.is_empty() {
                                "add `inputs: <stage>`".to_string()
                            } else {
                                "name the input stage in the parameters, or wire in only one".to_string()
                            },
                        );
                        continue;
                    }
                    vec![s.inputs[0].as_str()]
                }
                Upstream::Any => s.inputs.iter().map(String::as_str).collect(),
            };
            // Inputs whose outputs are unknown before running (a command) may have anything.
            let known: Vec<(&str, &[&str])> = candidates
                .iter()
                .filter_map(|id| writes(id).map(|w| (*id, w)))
                .collect();
            if known.len() < candidates.len() {
                continue;
            }
            let describe = |(id, files): &(&str, &[&str])| {
                format!(
                    "`{id}` ({}) writes {}",
                    by_id.get(id).map(|s| s.kind.as_str()).unwrap_or("?"),
                    files.join(", ")
                )
            };
            match &wanted {
                Wanted::File(file) => {
                    if known.iter().any(|(_, w)| w.contains(&file.as_str())) {
                        continue;
                    }
                    let writers = writers_of(file);
                    let from = match candidates.as_slice() {
                        [one] => format!("`{one}`"),
                        [] => "its inputs (it has none)".to_string(),
                        _ => format!("any of its inputs ({})", candidates.join(", ")),
                    };
                    c.error_with_help(
                        span,
                        yaml_path,
                        format!(
                            "stage `{}` ({}) reads `{file}` from {from}, but no such table is written: {}",
                            s.id,
                            s.kind,
                            if known.is_empty() {
                                "there is nothing upstream".to_string()
                            } else {
                                known.iter().map(describe).collect::<Vec<_>>().join("; ")
                            }
                        ),
                        if writers.is_empty() {
                            format!("no stage kind writes `{file}`")
                        } else {
                            format!("`{file}` is written by stage kind {}", writers.join(", "))
                        },
                    );
                }
                Wanted::OnlyTable => {
                    for (id, files) in &known {
                        let t = tables(files);
                        if t.len() != 1 {
                            c.error_with_help(
                                span,
                                yaml_path.clone(),
                                format!(
                                    "stage `{}` reads the one table of `{id}`, which writes {}",
                                    s.id,
                                    if t.is_empty() {
                                        "no table".to_string()
                                    } else {
                                        t.join(", ")
                                    }
                                ),
                                "name the table (`table:`), or wire in a stage that writes one",
                            );
                        }
                    }
                }
                Wanted::Directory => {}
            }
        }
    }
}
