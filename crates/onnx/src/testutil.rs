//! Test helpers: the ONNX Runtime from the workspace's `.venv` (a missing library FAILS the test
//! with the install hint), running small graphs, and the Python interpreter for cross-checks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ort::session::{SessionInputValue, SessionInputs};
use ort::value::Tensor;

use super::graph::{DType, Graph, ValueId, OPSET};
use super::runtime::{self, LibrarySearch, Runtime, SessionOptions};

/// The workspace root, where `scripts/setup.sh` puts `.venv` (this crate is crates/onnx).
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared runtime; panics (failing the test) with the typed error's install hint.
pub fn runtime() -> Arc<Runtime> {
    let search = LibrarySearch {
        project_root: Some(crate_root()),
        ..LibrarySearch::default()
    };
    match runtime::runtime(&search) {
        Ok(rt) => rt,
        Err(e) => panic!("ONNX Runtime is required for this test: {e}"),
    }
}

/// Interpreter for NumPy/onnx cross-checks: `$CBOUND_TEST_PYTHON` or `<workspace>/.venv/bin/python`.
pub fn python() -> PathBuf {
    match std::env::var_os("CBOUND_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => crate_root().join(".venv").join("bin").join("python"),
    }
}

/// Runs `script` with `args`; panics with stderr and a setup hint on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let py = python();
    let out = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); create it with `python3 -m venv .venv && .venv/bin/pip install onnxruntime==1.31.1 onnx==1.23.2 numpy==2.4.6` or set CBOUND_TEST_PYTHON",
                py.display()
            )
        });
    assert!(
        out.status.success(),
        "python failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn single_thread() -> SessionOptions {
    SessionOptions {
        intra_threads: 1,
        ..SessionOptions::default()
    }
}

/// Host data for a graph input.
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// A session over a graph, reusable for many runs (finite differences).
pub struct Runner<'g> {
    g: &'g Graph,
    session: ort::session::Session,
}

impl<'g> Runner<'g> {
    pub fn new(g: &'g Graph) -> Runner<'g> {
        let rt = runtime();
        let bytes = g.to_model_bytes(OPSET).expect("graph serialises");
        let h = rt
            .session(&bytes, &single_thread())
            .expect("session is created");
        Runner {
            g,
            session: h.session,
        }
    }

    pub fn run(&mut self, feeds: &[(ValueId, Data)]) -> HashMap<String, Vec<f64>> {
        let g = self.g;
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::new();
        for (v, d) in feeds {
            let shape: Vec<i64> = g.shape(*v).iter().map(|&x| x as i64).collect();
            let name = g.name_of(*v).to_string();
            let value: SessionInputValue<'_> = match d {
                Data::F32(x) => Tensor::from_array((shape, x.clone()))
                    .expect("tensor")
                    .into(),
                Data::F64(x) => Tensor::from_array((shape, x.clone()))
                    .expect("tensor")
                    .into(),
            };
            inputs.push((name, value));
        }
        let outputs = self
            .session
            .run(SessionInputs::from(inputs))
            .expect("graph runs");
        let mut res = HashMap::new();
        for &o in g.outputs() {
            let name = g.name_of(o).to_string();
            let v = &outputs[name.as_str()];
            let data: Vec<f64> = match g.dtype(o) {
                DType::F32 => v
                    .try_extract_tensor::<f32>()
                    .expect("f32")
                    .1
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect(),
                DType::F64 => v.try_extract_tensor::<f64>().expect("f64").1.to_vec(),
                DType::I64 => v
                    .try_extract_tensor::<i64>()
                    .expect("i64")
                    .1
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
                DType::F16 | DType::BF16 => panic!(
                    "output `{name}` is {}: test graphs return f32 (cast before the output)",
                    g.dtype(o).name()
                ),
                DType::Bool => v
                    .try_extract_tensor::<bool>()
                    .expect("bool")
                    .1
                    .iter()
                    .map(|&x| f64::from(u8::from(x)))
                    .collect(),
            };
            res.insert(name, data);
        }
        res
    }
}

/// Runs `g` once (outputs must already be declared) and returns every output as f64.
pub fn run_graph(g: &Graph, feeds: &[(ValueId, Data)]) -> HashMap<String, Vec<f64>> {
    Runner::new(g).run(feeds)
}
