//! Helpers for integration tests: run the real `cbound` binary in a scratch directory, and
//! read its Parquet output with an independent reader (pyarrow in the project's .venv).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cbound validate` on `text` as `p.yaml` in a scratch project, asserts it is refused
/// (exit 2) and that one error says `message` at `location` (`p.yaml:L:C (at \`path\`)`).
pub fn validate_refuses(text: &str, location: &str, message: &str) -> Run {
    let p = Project::new();
    p.write("p.yaml", text);
    let run = p.cbound(&["validate", "p.yaml"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let found = run
        .stderr
        .split("\n\n")
        .any(|e| e.contains(message) && e.contains(location));
    assert!(found, "no `{message}` at `{location}` in:\n{}", run.all());
    run
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cbound")
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(self.path())
            .env_remove("RUST_LOG");
        // Scratch projects have no .venv of their own: use the repository's ONNX Runtime.
        if let Some(lib) = ort_lib() {
            cmd.env("CBOUND_ORT_LIB", lib);
        }
        cmd
    }

    pub fn cbound(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run cbound"))
    }

    /// The latest run directory of a pipeline.
    pub fn latest(&self, pipeline: &str) -> PathBuf {
        let link = self.path().join("outputs").join(pipeline).join("latest");
        let target = std::fs::read_link(&link).expect("latest link");
        link.parent().unwrap().join(target)
    }
}

/// The ONNX Runtime library in the repository's .venv (scripts/setup.sh installs it).
pub fn ort_lib() -> Option<PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let pythons = std::fs::read_dir(&lib).ok()?;
    for py in pythons.flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        if let Ok(entries) = std::fs::read_dir(&capi) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with("libonnxruntime.so.1")
                {
                    return Some(e.path());
                }
            }
        }
    }
    None
}

/// The Python interpreter of the project's environment (scripts/setup.sh makes it).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CBOUND_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "integration tests read Parquet with pyarrow from {}: run scripts/setup.sh --no-build first",
        venv.display()
    );
    venv
}

/// Runs a Python snippet with pyarrow available; returns its stdout, panicking with its
/// stderr if it fails.
pub fn py(code: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a Parquet file with pyarrow and returns it as JSON rows.
pub fn read_rows(path: &Path) -> Vec<serde_json::Value> {
    let text = py(
        // NaN has no JSON form: it arrives as null.
        "import json,math,sys,pyarrow.parquet as pq\nrows=[{k:(None if isinstance(v,float) and math.isnan(v) else v) for k,v in r.items()} for r in pq.read_table(sys.argv[1]).to_pylist()]\nprint(json.dumps(rows, default=str))",
        &[path.to_str().unwrap()],
    );
    serde_json::from_str(&text).expect("json rows")
}
