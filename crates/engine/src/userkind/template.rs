//! The `command:` of a kind declared in YAML: an argument list with placeholders, parsed when
//! the definition is read (so a misspelt placeholder is an error at its place in the file,
//! before anything runs) and filled in for each instance.
//!
//! | placeholder | becomes |
//! |---|---|
//! | `{out}` | the instance's output directory (absolute) |
//! | `{seed}`, `{instance}`, `{threads}` | its seed, its id, its CPU threads |
//! | `{kind_dir}` | the directory of the kind's definition file (absolute), where its script lives |
//! | `{input}` | the directory of the stage's one input |
//! | `{needs.FILE}` | the path of `FILE`, declared in `needs`, in whichever input wrote it |
//! | `{params.NAME}` | the parameter's value (defaults applied); a list is spliced into separate arguments when it is the whole argument, JSON text inside a longer one |
//! | `{{`, `}}` | a literal `{`, `}` |

use serde_json::Value;

/// One piece of an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Out,
    Seed,
    Instance,
    Threads,
    KindDir,
    Input,
    Needs(String),
    Param(String),
}

/// The placeholders a user may write, for messages.
pub const PLACEHOLDERS: &[&str] = &[
    "out",
    "seed",
    "instance",
    "threads",
    "kind_dir",
    "input",
    "needs.FILE",
    "params.NAME",
];

/// Splits one argument into text and placeholders; the message says what is wrong.
pub fn parse_arg(arg: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = arg.char_indices().peekable();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let rest = &arg[i + 1..];
                let Some(end) = rest.find('}') else {
                    return Err(format!(
                        "unclosed placeholder in `{arg}` (write `{{{{` for a literal brace)"
                    ));
                };
                let name = &rest[..end];
                let piece = match name {
                    "out" => Piece::Out,
                    "seed" => Piece::Seed,
                    "instance" => Piece::Instance,
                    "threads" => Piece::Threads,
                    "kind_dir" => Piece::KindDir,
                    "input" => Piece::Input,
                    _ => match (name.strip_prefix("needs."), name.strip_prefix("params.")) {
                        (Some(file), _) if !file.is_empty() => Piece::Needs(file.to_string()),
                        (_, Some(param)) if !param.is_empty() => Piece::Param(param.to_string()),
                        _ => {
                            let known: Vec<String> =
                                PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
                            let hint = crate::config::diagnostics::did_you_mean(
                                name,
                                &["out", "seed", "instance", "threads", "kind_dir", "input"],
                            )
                            .map(|s| format!("did you mean `{{{s}}}`? "))
                            .unwrap_or_default();
                            return Err(format!(
                                "unknown placeholder `{{{name}}}` in `{arg}`; {hint}known: {} (`{{{{` for a literal brace)",
                                known.join(", ")
                            ));
                        }
                    },
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
                // Skip the placeholder's characters.
                for _ in 0..name.chars().count() + 1 {
                    chars.next();
                }
            }
            other => text.push(other),
        }
    }
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// What the placeholders of one instance stand for.
pub trait Values {
    fn out(&self) -> String;
    fn seed(&self) -> String;
    fn instance(&self) -> String;
    fn threads(&self) -> String;
    fn kind_dir(&self) -> String;
    fn input(&self) -> Result<String, String>;
    fn needs(&self, file: &str) -> Result<String, String>;
    fn param(&self, name: &str) -> Option<&Value>;
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Fills in one argument; a list parameter standing alone becomes one argument per element.
pub fn render_arg(pieces: &[Piece], values: &dyn Values) -> Result<Vec<String>, String> {
    if let [Piece::Param(name)] = pieces {
        if let Some(Value::Array(items)) = values.param(name) {
            return Ok(items.iter().map(scalar).collect());
        }
    }
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Out => out.push_str(&values.out()),
            Piece::Seed => out.push_str(&values.seed()),
            Piece::Instance => out.push_str(&values.instance()),
            Piece::Threads => out.push_str(&values.threads()),
            Piece::KindDir => out.push_str(&values.kind_dir()),
            Piece::Input => out.push_str(&values.input()?),
            Piece::Needs(file) => out.push_str(&values.needs(file)?),
            Piece::Param(name) => match values.param(name) {
                Some(v) => out.push_str(&scalar(v)),
                // The definition refuses placeholders of parameters that can be absent.
                None => return Err(format!("parameter `{name}` has no value")),
            },
        }
    }
    Ok(vec![out])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed(serde_json::Map<String, Value>);

    impl Values for Fixed {
        fn out(&self) -> String {
            "/o".into()
        }
        fn seed(&self) -> String {
            "7".into()
        }
        fn instance(&self) -> String {
            "pca@k=2".into()
        }
        fn threads(&self) -> String {
            "2".into()
        }
        fn kind_dir(&self) -> String {
            "/k".into()
        }
        fn input(&self) -> Result<String, String> {
            Err("two inputs".into())
        }
        fn needs(&self, file: &str) -> Result<String, String> {
            Ok(format!("/in/{file}"))
        }
        fn param(&self, name: &str) -> Option<&Value> {
            self.0.get(name)
        }
    }

    fn render(arg: &str) -> Result<Vec<String>, String> {
        let values = Fixed(
            json!({"k": 2, "name": "a b", "layers": [4, 8], "on": true})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        render_arg(&parse_arg(arg)?, &values)
    }

    #[test]
    fn placeholders_are_filled_in() {
        assert_eq!(render("{out}/x.parquet").unwrap(), ["/o/x.parquet"]);
        assert_eq!(render("--seed={seed}").unwrap(), ["--seed=7"]);
        assert_eq!(render("{kind_dir}/pca.py").unwrap(), ["/k/pca.py"]);
        assert_eq!(
            render("{needs.embeddings.parquet}").unwrap(),
            ["/in/embeddings.parquet"]
        );
        assert_eq!(render("{params.k}").unwrap(), ["2"]);
        assert_eq!(render("{params.name}").unwrap(), ["a b"]);
        assert_eq!(render("--on={params.on}").unwrap(), ["--on=true"]);
        assert_eq!(render("{instance}:{threads}").unwrap(), ["pca@k=2:2"]);
        assert_eq!(render("plain").unwrap(), ["plain"]);
        assert_eq!(render("").unwrap(), [""]);
    }

    #[test]
    fn a_list_alone_is_spliced_and_inside_text_is_json() {
        assert_eq!(render("{params.layers}").unwrap(), ["4", "8"]);
        assert_eq!(
            render("--layers={params.layers}").unwrap(),
            ["--layers=[4,8]"]
        );
    }

    #[test]
    fn braces_escape_and_mistakes_are_explained() {
        assert_eq!(
            render("print({{'a': 1}}['a'])").unwrap(),
            ["print({'a': 1}['a'])"]
        );
        let err = parse_arg("{outt}/x").unwrap_err();
        assert!(err.contains("unknown placeholder `{outt}`"), "{err}");
        assert!(err.contains("did you mean `{out}`?"), "{err}");
        let err = parse_arg("{out").unwrap_err();
        assert!(err.contains("unclosed placeholder"), "{err}");
        assert!(parse_arg("{params.}").is_err());
        assert_eq!(render("{input}").unwrap_err(), "two inputs");
    }
}
