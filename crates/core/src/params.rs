//! The vocabulary of parameter problems every layer reports in: a path into a
//! configuration (`stages.train.params.layers[2]`) and a message. The config loader turns a
//! path into file:line:column; estimators, stage kinds and user-declared kinds produce them
//! without knowing there is a file at all.

/// One step of a path into the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Renders a path the way users write it: `stages.train.params.layers[2]`.
pub fn render_path(path: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A stage parameter that failed to deserialise: where inside `params`, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub path: Vec<PathSeg>,
    pub message: String,
}

impl ParamError {
    /// A problem at `path` (keys and indices below `params`).
    pub fn at(path: &[&str], message: impl Into<String>) -> ParamError {
        ParamError {
            path: path
                .iter()
                .map(|seg| match seg.parse::<usize>() {
                    Ok(i) => PathSeg::Index(i),
                    Err(_) => PathSeg::Key(seg.to_string()),
                })
                .collect(),
            message: message.into(),
        }
    }

    /// The same problem one level down, under `seg` (a check of a nested spec reported
    /// from its parent).
    pub fn under(mut self, seg: PathSeg) -> ParamError {
        self.path.insert(0, seg);
        self
    }
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", render_path(&self.path), self.message)
        }
    }
}

/// Schema settings shared by `cbound schema` and `cbound stages`: subschemas inlined so a
/// stage's parameter schema can be embedded anywhere without dangling `$ref`s.
pub fn schema_settings() -> schemars::generate::SchemaSettings {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    settings
}
