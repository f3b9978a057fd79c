//! Config errors that a user can act on: where (file:line:column and the YAML path), what,
//! and, where we can guess, what they probably meant.

use std::fmt;
use std::path::{Path, PathBuf};

use super::yaml::Span;

/// One problem in a pipeline file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub span: Span,
    /// Dotted YAML path of the offending node, e.g. `stages.train.params.lr`.
    pub path: String,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let location = if self.span.is_command_line() {
            format!("{} (from --set)", self.file.display())
        } else {
            format!(
                "{}:{}:{}",
                self.file.display(),
                self.span.line,
                self.span.col
            )
        };
        if self.path.is_empty() {
            write!(f, "  --> {location}")?;
        } else {
            write!(f, "  --> {location} (at `{}`)", self.path)?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in one pass over one or more files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigErrors {
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigErrors {
    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    pub fn len(&self) -> usize {
        self.diagnostics.len()
    }

    /// Orders errors by position and drops exact repeats (the same bad matrix value can be
    /// found through several instances).
    pub fn normalise(&mut self) {
        self.diagnostics.sort_by(|a, b| {
            (&a.file, a.span, &a.path, &a.message).cmp(&(&b.file, b.span, &b.path, &b.message))
        });
        self.diagnostics.dedup();
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{d}")?;
        }
        let n = self.diagnostics.len();
        write!(
            f,
            "{n} error{} in pipeline configuration",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects diagnostics for one file.
pub struct Collector {
    file: PathBuf,
    pub errors: ConfigErrors,
}

impl Collector {
    pub fn new(file: &Path) -> Collector {
        Collector {
            file: file.to_path_buf(),
            errors: ConfigErrors::default(),
        }
    }

    pub fn error(&mut self, span: Span, path: impl Into<String>, message: impl Into<String>) {
        self.push(span, path, message, None);
    }

    pub fn error_with_help(
        &mut self,
        span: Span,
        path: impl Into<String>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(span, path, message, Some(help.into()));
    }

    fn push(
        &mut self,
        span: Span,
        path: impl Into<String>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.errors.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            span,
            path: path.into(),
            message: message.into(),
            help,
        });
    }

    /// Reports an unknown name with a "did you mean" suggestion drawn from `known`.
    pub fn unknown(
        &mut self,
        span: Span,
        path: impl Into<String>,
        what: &str,
        name: &str,
        known: &[&str],
    ) {
        let message = format!("unknown {what} `{name}`");
        let help = match did_you_mean(name, known) {
            Some(s) => format!(
                "did you mean `{s}`? (expected one of: {})",
                known.join(", ")
            ),
            None if known.is_empty() => format!("no {what} is defined here"),
            None => format!("expected one of: {}", known.join(", ")),
        };
        self.push(span, path, message, Some(help));
    }
}

/// The closest known name to `name`, if any is close enough to be a plausible typo.
pub fn did_you_mean<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let known = ["temperature", "hidden", "epochs"];
        assert_eq!(did_you_mean("tempreature", &known), Some("temperature"));
        assert_eq!(did_you_mean("epoch", &known), Some("epochs"));
        assert_eq!(did_you_mean("zzz", &known), None);
    }

    #[test]
    fn display_has_location_path_and_help() {
        let mut c = Collector::new(Path::new("p.yaml"));
        c.unknown(
            Span { line: 3, col: 5 },
            "stages.a.kindd",
            "key",
            "kindd",
            &["kind"],
        );
        let text = c.errors.to_string();
        assert!(text.contains("p.yaml:3:5"), "{text}");
        assert!(text.contains("`stages.a.kindd`"), "{text}");
        assert!(text.contains("did you mean `kind`?"), "{text}");
        assert!(
            text.ends_with("1 error in pipeline configuration"),
            "{text}"
        );
    }
}
