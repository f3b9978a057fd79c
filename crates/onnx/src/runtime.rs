//! ONNX Runtime discovery, initialisation, sessions and execution providers.
//!
//! The C library is loaded at run time (`ort`'s `load-dynamic`), never linked, so a missing
//! library is an ordinary, typed error ([`RuntimeError::LibraryNotFound`]) with install
//! instructions instead of a panic. Search order ([`find_library`]):
//!
//! 1. an explicit path (the caller's `--ort-lib`),
//! 2. `$CBOUND_ORT_LIB`, 3. `$ORT_DYLIB_PATH`,
//! 4. `<project>/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`
//!    (project root given by the caller, else the current directory),
//! 5. the `onnxruntime` package of whatever `python3` is on `PATH`.
//!
//! An explicit path or environment variable that names a missing file is an error rather than
//! a silent fall-through, because the user asked for that file.
//!
//! ONNX Runtime allows one environment per process, and `ort` loads one library per process, so
//! the [`Runtime`] is a process-wide singleton handed out as `Arc`.
//!
//! The CUDA execution provider is registered through the C API directly (`ort::api()`), since
//! this crate builds `ort` without its `cuda` feature; the registration error ONNX Runtime
//! reports (e.g. "CUDA execution provider is not enabled in this build") is returned verbatim,
//! followed by what [`crate::cuda_libs`] found missing. Before the first CUDA session the CUDA
//! and cuDNN libraries of the pip wheels beside the ONNX Runtime package are preloaded
//! ([`crate::cuda_libs::ensure_preloaded`]), so no `LD_LIBRARY_PATH` is needed.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::AsPointer;

use super::cuda_libs::{self, CudaReport};
use super::graph::{DType, Graph, OPSET};

pub const ENV_CBOUND_ORT_LIB: &str = "CBOUND_ORT_LIB";
pub const ENV_ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
pub const ORT_VERSION: &str = "1.31.1";

/// How to obtain the library; part of every "not found" message.
pub const INSTALL_HINT: &str =
    "install it with `scripts/setup.sh` (creates .venv with onnxruntime==1.31.1), \
or run `pip install onnxruntime==1.31.1` and set CBOUND_ORT_LIB to the file \
`<site-packages>/onnxruntime/capi/libonnxruntime.so.1.31.1` (or pass --ort-lib PATH)";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found (looked at: {}); {hint}", tried.join("; "))]
    LibraryNotFound {
        tried: Vec<String>,
        hint: &'static str,
    },
    #[error("{origin} names `{path}`, which does not exist; {hint}")]
    NamedLibraryMissing {
        origin: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("failed to load ONNX Runtime from `{path}`: {detail}; {hint}")]
    Load {
        path: PathBuf,
        detail: String,
        hint: &'static str,
    },
    #[error(
        "ONNX Runtime is already loaded from `{loaded}` in this process; cannot switch to `{requested}`"
    )]
    AlreadyLoaded { loaded: PathBuf, requested: PathBuf },
    #[error("ONNX Runtime error while {context}: {message}")]
    Ort { context: String, message: String },
    #[error("CUDA execution provider unavailable: {detail}")]
    CudaUnavailable { detail: String },
    #[error("internal graph error: {0}")]
    Graph(#[from] super::graph::GraphError),
    #[error("{what}: expected {expected} values, got {got}")]
    Size {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error(
        "non-finite loss {loss} at step {step}; parameters and optimizer state are left as they were before this step (lower the learning rate or check the inputs)"
    )]
    NonFiniteLoss { step: u64, loss: f32 },
    #[error("tensor `{name}`: {detail}")]
    Tensor { name: String, detail: String },
}

pub(crate) fn ort_err(context: impl Into<String>) -> impl FnOnce(ort::Error) -> RuntimeError {
    let context = context.into();
    move |e| RuntimeError::Ort {
        context,
        message: e.to_string(),
    }
}

fn builder_err(context: &'static str) -> impl FnOnce(ort::Error<SessionBuilder>) -> RuntimeError {
    move |e| RuntimeError::Ort {
        context: context.to_string(),
        message: e.to_string(),
    }
}

/// Where to look for the library. `Default` = full search from the current directory.
#[derive(Debug, Clone, Default)]
pub struct LibrarySearch {
    /// The caller's `--ort-lib`.
    pub explicit: Option<PathBuf>,
    /// Project root holding `.venv`; the current directory when `None`.
    pub project_root: Option<PathBuf>,
    /// Ignore `CBOUND_ORT_LIB` and `ORT_DYLIB_PATH`.
    pub skip_env: bool,
    /// Do not ask `python3` where its onnxruntime package lives.
    pub skip_python: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibrarySource {
    Explicit,
    EnvCbound,
    EnvOrtDylib,
    ProjectVenv,
    Python,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLibrary {
    pub path: PathBuf,
    pub source: LibrarySource,
}

/// `libonnxruntime.so*` inside an onnxruntime package's `capi` folder (highest version first).
fn lib_in_capi(capi: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(capi)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || n == "libonnxruntime.dylib"
                    || n == "onnxruntime.dll"
            }) && p.is_file()
        })
        .collect();
    found.sort();
    found.pop()
}

fn venv_library(root: &Path) -> Option<PathBuf> {
    let lib = root.join(".venv").join("lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("python3"))
        })
        .collect();
    pythons.sort();
    pythons
        .iter()
        .rev()
        .find_map(|py| lib_in_capi(&py.join("site-packages").join("onnxruntime").join("capi")))
}

fn python_library() -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import onnxruntime,os;print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .map_err(|e| format!("python3 not runnable ({e})"))?;
    if !out.status.success() {
        return Err("python3 has no onnxruntime package".into());
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let capi = Path::new(&dir).join("capi");
    lib_in_capi(&capi).ok_or_else(|| format!("{} holds no libonnxruntime.so*", capi.display()))
}

/// Locates the library without loading it (see the module docs for the order).
pub fn find_library(search: &LibrarySearch) -> Result<FoundLibrary, RuntimeError> {
    let named = |origin: &'static str, path: PathBuf, source| {
        if path.is_file() {
            Ok(FoundLibrary { path, source })
        } else {
            Err(RuntimeError::NamedLibraryMissing {
                origin,
                path,
                hint: INSTALL_HINT,
            })
        }
    };
    if let Some(p) = &search.explicit {
        return named("--ort-lib", p.clone(), LibrarySource::Explicit);
    }
    let mut tried = Vec::new();
    if !search.skip_env {
        for (var, source) in [
            (ENV_CBOUND_ORT_LIB, LibrarySource::EnvCbound),
            (ENV_ORT_DYLIB_PATH, LibrarySource::EnvOrtDylib),
        ] {
            match std::env::var_os(var) {
                Some(v) if !v.is_empty() => return named(var, PathBuf::from(v), source),
                _ => tried.push(format!("${var} (unset)")),
            }
        }
    }
    let root = match &search.project_root {
        Some(r) => r.clone(),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    if let Some(path) = venv_library(&root) {
        return Ok(FoundLibrary {
            path,
            source: LibrarySource::ProjectVenv,
        });
    }
    tried.push(format!(
        "{}/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*",
        root.display()
    ));
    if !search.skip_python {
        match python_library() {
            Ok(path) => {
                return Ok(FoundLibrary {
                    path,
                    source: LibrarySource::Python,
                });
            }
            Err(why) => tried.push(format!("python3's onnxruntime: {why}")),
        }
    }
    Err(RuntimeError::LibraryNotFound {
        tried,
        hint: INSTALL_HINT,
    })
}

/// The loaded library and its (single, process-wide) ONNX Runtime environment.
#[derive(Debug)]
pub struct Runtime {
    env: Environment,
    library: PathBuf,
    /// The library's path as found, before resolving symlinks: the CUDA libraries are looked
    /// for in its site-packages (a venv reached through a link keeps its own).
    found_at: PathBuf,
    source: LibrarySource,
    version: String,
    /// [`Runtime::conv_block`], found out once.
    conv_block: OnceLock<Option<usize>>,
}

static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

/// Version from the library file name (`libonnxruntime.so.1.31.1`); the C API only exposes it
/// through `OrtApiBase`, which `ort` does not hand out.
fn version_from_path(path: &Path) -> String {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    resolved
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split_once(".so.").map(|(_, v)| v.to_string()))
        .filter(|v| v.split('.').all(|p| p.chars().all(|c| c.is_ascii_digit())))
        .unwrap_or_else(|| "unknown (>= 1.24: the library passed ort's API-24 check)".to_string())
}

/// The runtime this process loaded, if any stage has needed it so far (loads nothing).
pub fn loaded() -> Option<Arc<Runtime>> {
    RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Loads ONNX Runtime once per process (later calls return the same runtime).
pub fn runtime(search: &LibrarySearch) -> Result<Arc<Runtime>, RuntimeError> {
    let mut guard = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(rt) = guard.as_ref() {
        if let Some(requested) = &search.explicit {
            let same =
                std::fs::canonicalize(requested).ok() == std::fs::canonicalize(&rt.library).ok();
            if !same {
                return Err(RuntimeError::AlreadyLoaded {
                    loaded: rt.library.clone(),
                    requested: requested.clone(),
                });
            }
        }
        return Ok(Arc::clone(rt));
    }
    let found = find_library(search)?;
    let path = std::fs::canonicalize(&found.path).unwrap_or(found.path.clone());
    let load_err = |detail: String| RuntimeError::Load {
        path: path.clone(),
        detail,
        hint: INSTALL_HINT,
    };
    let builder = ort::init_from(&path).map_err(|e| load_err(e.to_string()))?;
    let env = builder
        .with_name("cbound")
        .with_telemetry(false)
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let rt = Arc::new(Runtime {
        env,
        version: version_from_path(&path),
        library: path,
        found_at: found.path,
        source: found.source,
        conv_block: OnceLock::new(),
    });
    *guard = Some(Arc::clone(&rt));
    Ok(rt)
}

/// Turns an `OrtStatus*` into a message, releasing it.
///
/// # Safety
/// `status` must be null or a status returned by the ONNX Runtime C API that was not released.
unsafe fn status_result(status: ort::sys::OrtStatusPtr) -> Result<(), String> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: non-null status from the C API; the message lives until ReleaseStatus.
    let msg = unsafe {
        let p = (api.GetErrorMessage)(status.0);
        let m = if p.is_null() {
            "unknown ONNX Runtime error".to_string()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        (api.ReleaseStatus)(status.0);
        m
    };
    Err(msg)
}

/// The CUDA provider's options for device `device_id`, its memory arena capped at
/// `memory_limit` bytes when given (ONNX Runtime's `gpu_mem_limit`; an instance sharing its
/// GPU keeps to its share of it).
fn cuda_provider_options(
    device_id: usize,
    memory_limit: Option<u64>,
) -> Vec<(&'static str, String)> {
    let mut options = vec![("device_id", device_id.to_string())];
    if let Some(bytes) = memory_limit {
        options.push(("gpu_mem_limit", bytes.to_string()));
    }
    options
}

/// `share` (in (0, 1]) of a device's `total` bytes, rounded down to whole MiB so that shares
/// adding up to one device never ask for more than it has.
pub fn share_of_memory(share: f64, total: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let bytes = (total as f64 * share.clamp(0.0, 1.0)) as u64;
    bytes / MIB * MIB
}

/// Total memory of visible device `device_id`, from the driver.
fn device_memory(device_id: usize) -> Result<u64, String> {
    let info = cuda_libs::driver_info()?;
    info.gpus
        .iter()
        .find(|g| g.index == device_id)
        .map(|g| g.memory_bytes)
        .ok_or_else(|| {
            format!(
                "the driver sees {} GPU(s), not device {device_id}",
                info.gpus.len()
            )
        })
}

/// Appends the CUDA execution provider with `options` ([`cuda_provider_options`]) to
/// `builder`.
fn register_cuda(
    builder: &mut SessionBuilder,
    options: &[(&'static str, String)],
) -> Result<(), String> {
    let api = ort::api();
    let mut opts: *mut ort::sys::OrtCUDAProviderOptionsV2 = std::ptr::null_mut();
    let mut keys = Vec::with_capacity(options.len());
    let mut values = Vec::with_capacity(options.len());
    for (k, v) in options {
        keys.push(CString::new(*k).map_err(|e| e.to_string())?);
        values.push(CString::new(v.as_str()).map_err(|e| e.to_string())?);
    }
    let key_ptrs: Vec<_> = keys.iter().map(|k| k.as_ptr()).collect();
    let value_ptrs: Vec<_> = values.iter().map(|v| v.as_ptr()).collect();
    // SAFETY: plain C API calls on pointers we own; `opts` is released on every path after a
    // successful create, and the option strings outlive the update call.
    unsafe {
        status_result((api.CreateCUDAProviderOptions)(&mut opts))?;
        if opts.is_null() {
            return Err("CreateCUDAProviderOptions returned no options".into());
        }
        let mut result = status_result((api.UpdateCUDAProviderOptions)(
            opts,
            key_ptrs.as_ptr(),
            value_ptrs.as_ptr(),
            key_ptrs.len(),
        ));
        if result.is_ok() {
            result = status_result((api.SessionOptionsAppendExecutionProvider_CUDA_V2)(
                builder.ptr_mut(),
                opts,
            ));
        }
        (api.ReleaseCUDAProviderOptions)(opts);
        result
    }
}

/// Which execution provider a session should use; `cpu`, `cuda` or `auto` in pipelines.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    #[default]
    Cpu,
    /// CUDA on `SessionOptions::device_id`; fails with ONNX Runtime's own error when unavailable.
    Cuda,
    /// CUDA when it works, else CPU with a warning returned to the caller.
    Auto,
}

/// Arithmetic precision of a training step; `precision` in the train stage.
///
/// The mixed choices build the mixed-precision step graph ([`crate::step::MixedPrecision`]):
/// f16 or bf16 matrix products and convolutions, f32 master weights and optimizer state. They
/// are for CUDA, whose tensor cores run half-precision products faster than f32; on CPU only
/// `fp32` is offered (the graph itself runs on the CPU provider, which is how the tests here
/// check it, but a pipeline asking for it there is refused).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in float32 (the only choice on CPU).
    #[default]
    Fp32,
    /// CUDA only: activations and matrix products in float16, float32 master weights and
    /// optimizer state, dynamic loss scaling (steps with non-finite gradients are skipped and
    /// counted in the training curve).
    Fp16Mixed,
    /// CUDA only: as `fp16_mixed` with bfloat16 and no loss scaling (MLP encoders: ONNX
    /// opset 18 has no bfloat16 convolution).
    Bf16Mixed,
}

impl Precision {
    /// The name pipelines use.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16Mixed => "fp16_mixed",
            Precision::Bf16Mixed => "bf16_mixed",
        }
    }

    /// Why this precision cannot train on `device`, if it cannot: the one place the rule
    /// lives, for the stage's validation and for anything that builds a trainer directly.
    /// `auto` passes here; [`Precision::refusal_on`] refuses it once it fell back to the CPU.
    pub fn refusal(self, device: Device) -> Option<String> {
        match (self, device) {
            (Precision::Fp32, _) | (_, Device::Cuda | Device::Auto) => None,
            (p, Device::Cpu) => Some(format!(
                "precision `{}` needs `device: cuda`; on CPU only `fp32` is supported",
                p.as_str()
            )),
        }
    }

    /// Why this precision cannot train on the provider a session actually got.
    pub fn refusal_on(self, device: ActiveDevice) -> Option<String> {
        match (self, device) {
            (Precision::Fp32, _) | (_, ActiveDevice::Cuda) => None,
            (p, ActiveDevice::Cpu) => Some(format!(
                "precision `{}` needs CUDA, but `device: auto` fell back to the CPU (see the warning above); use `device: cuda` to fail with the reason, or `precision: fp32`",
                p.as_str()
            )),
        }
    }
}

/// The provider a session actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveDevice {
    Cpu,
    Cuda,
}

impl ActiveDevice {
    /// `cpu` or `cuda`: what results.parquet's `info.execution_provider` says.
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveDevice::Cpu => "cpu",
            ActiveDevice::Cuda => "cuda",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Optimization {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub device: Device,
    /// The CUDA device (ONNX Runtime's `device_id`, counted among the devices this process
    /// sees) for `Cuda` and `Auto`; the engine gives each running instance its own.
    pub device_id: usize,
    /// Intra-op threads: the caller's CPU budget (>= 1). Inter-op threads are always 1.
    pub intra_threads: usize,
    pub optimization: Optimization,
    /// Let idle intra-op threads spin (ONNX Runtime's default). Faster for back-to-back steps,
    /// but burns CPU between them; turn off when other work shares the cores.
    pub spinning: bool,
    /// Write an ONNX Runtime profile (JSON trace) with this file prefix.
    pub profiling: Option<PathBuf>,
    /// Flush denormals to zero on the intra-op threads. Off by default (bitwise parity with
    /// IEEE arithmetic); worth turning on for long Adam runs, where second moments of rarely
    /// active weights decay into the denormal range and slow elementwise kernels down.
    pub flush_denormals: bool,
    /// The share of device `device_id` this session's instance was given (`resources: {gpus:
    /// 0.5}`): ONNX Runtime's CUDA memory arena is capped at that share of the device's memory,
    /// so instances sharing a GPU cannot starve each other. `None`: no cap.
    pub gpu_memory_share: Option<f64>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            device: Device::Cpu,
            device_id: 0,
            gpu_memory_share: None,
            intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            optimization: Optimization::All,
            spinning: true,
            profiling: None,
            flush_denormals: false,
        }
    }
}

/// A session plus what was decided while creating it.
#[derive(Debug)]
pub struct SessionHandle {
    pub session: Session,
    pub device: ActiveDevice,
    /// Non-fatal problems (e.g. `Auto` fell back to CPU), for the caller to report.
    pub warnings: Vec<String>,
}

impl Runtime {
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The library's path as found (symlinks not resolved).
    pub fn found_at(&self) -> &Path {
        &self.found_at
    }

    pub fn source(&self) -> LibrarySource {
        self.source
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Execution providers compiled into the loaded library.
    pub fn available_providers(&self) -> Result<Vec<String>, RuntimeError> {
        let api = ort::api();
        let mut list: *mut *mut c_char = std::ptr::null_mut();
        let mut n: c_int = 0;
        // SAFETY: the runtime is initialised (self exists); the list is read before release.
        unsafe {
            status_result((api.GetAvailableProviders)(&mut list, &mut n)).map_err(|message| {
                RuntimeError::Ort {
                    context: "listing execution providers".into(),
                    message,
                }
            })?;
            let mut out = Vec::new();
            if !list.is_null() {
                for i in 0..usize::try_from(n).unwrap_or(0) {
                    let p = *list.add(i);
                    if !p.is_null() {
                        out.push(CStr::from_ptr(p).to_string_lossy().into_owned());
                    }
                }
                let _ = status_result((api.ReleaseAvailableProviders)(list, n));
            }
            Ok(out)
        }
    }

    fn builder(&self, opts: &SessionOptions) -> Result<SessionBuilder, RuntimeError> {
        let level = match opts.optimization {
            Optimization::Disable => GraphOptimizationLevel::Disable,
            Optimization::Basic => GraphOptimizationLevel::Level1,
            Optimization::Extended => GraphOptimizationLevel::Level2,
            Optimization::All => GraphOptimizationLevel::All,
        };
        let mut b = Session::builder(&self.env)
            .map_err(ort_err("creating session options"))?
            .with_intra_threads(opts.intra_threads.max(1))
            .map_err(builder_err("setting intra-op threads"))?
            .with_inter_threads(1)
            .map_err(builder_err("setting inter-op threads"))?
            .with_optimization_level(level)
            .map_err(builder_err("setting the optimisation level"))?
            .with_intra_op_spinning(opts.spinning)
            .map_err(builder_err("setting intra-op spinning"))?;
        // cbound's own kernels (the fused Adam update), which the step graphs use.
        let domain =
            super::fused::domain().map_err(ort_err("creating cbound's operator domain"))?;
        b = b
            .with_operators(domain)
            .map_err(builder_err("registering cbound's operators"))?;
        if opts.flush_denormals {
            b = b
                .with_flush_to_zero()
                .map_err(builder_err("enabling flush-to-zero"))?;
        }
        if let Some(prefix) = &opts.profiling {
            b = b
                .with_profiling(prefix)
                .map_err(builder_err("enabling profiling"))?;
        }
        Ok(b)
    }

    /// Creates a session for `model_bytes` on the requested device.
    pub fn session(
        &self,
        model_bytes: &[u8],
        opts: &SessionOptions,
    ) -> Result<SessionHandle, RuntimeError> {
        let cpu = |warnings: Vec<String>| -> Result<SessionHandle, RuntimeError> {
            let mut builder = self.builder(opts)?;
            let session = {
                let _one_at_a_time = session_creation_lock();
                builder.commit_from_memory(model_bytes)
            }
            .map_err(ort_err("creating a CPU session"))?;
            Ok(SessionHandle {
                session,
                device: ActiveDevice::Cpu,
                warnings,
            })
        };
        let cuda = || -> Result<Session, RuntimeError> {
            let (discovery, _) = cuda_libs::ensure_preloaded(&self.found_at)
                .map_err(|detail| RuntimeError::CudaUnavailable { detail })?;
            // ONNX Runtime's message, then what discovery found missing (often the cause).
            let with_missing = |detail: String| RuntimeError::CudaUnavailable {
                detail: match discovery.missing_summary() {
                    Some(missing) => format!("{detail}; {missing}"),
                    None => detail,
                },
            };
            let memory_limit = match opts.gpu_memory_share {
                Some(share) => Some(device_memory(opts.device_id).map(|total| share_of_memory(share, total)).map_err(|detail| RuntimeError::CudaUnavailable {
                    detail: format!("this instance asked for a share ({share}) of GPU {}, but its memory could not be read to keep to that share: {detail}", opts.device_id),
                })?),
                None => None,
            };
            let mut b = self.builder(opts)?;
            register_cuda(&mut b, &cuda_provider_options(opts.device_id, memory_limit))
                .map_err(with_missing)?;
            let _one_at_a_time = session_creation_lock();
            b.commit_from_memory(model_bytes)
                .map_err(|e| with_missing(format!("session creation failed: {e}")))
        };
        match opts.device {
            Device::Cpu => cpu(Vec::new()),
            Device::Cuda => Ok(SessionHandle {
                session: cuda()?,
                device: ActiveDevice::Cuda,
                warnings: Vec::new(),
            }),
            Device::Auto => match cuda() {
                Ok(session) => Ok(SessionHandle {
                    session,
                    device: ActiveDevice::Cuda,
                    warnings: Vec::new(),
                }),
                Err(e) => cpu(vec![format!("{e}; running on CPU instead")]),
            },
        }
    }
}

impl Runtime {
    /// The channel block of this library's NCHWc convolution kernels on this CPU (MLAS picks
    /// 16 with AVX-512, 8 with AVX2), or `None` where they are missing or give other numbers
    /// than the plain `Conv`. Found out once per process by running a small convolution
    /// blocked with each candidate block and keeping the one that matches the plain one: a
    /// wrong block does not fail, it silently mixes channels, so nothing is assumed from the
    /// CPU's features. What [`Graph::set_blocked_convs`] needs for a CPU step.
    pub fn conv_block(&self) -> Option<usize> {
        *self.conv_block.get_or_init(|| self.probe_conv_block())
    }

    fn probe_conv_block(&self) -> Option<usize> {
        const C: usize = 16;
        let x: Vec<f32> = (0..C * 64)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let w: Vec<f32> = (0..C * C * 9)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 480.0)
            .collect();
        let reference = self.run_probe_conv(None, &x, &w).ok()?;
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        [16, 8, 4].into_iter().find(|&b| {
            self.run_probe_conv(Some(b), &x, &w).is_ok_and(|y| {
                y.len() == reference.len()
                    && y.iter()
                        .zip(&reference)
                        .all(|(a, r)| (a - r).abs() <= 1e-4 * scale)
            })
        })
    }

    /// A 3x3 "same" convolution of 16 channels at 8x8, blocked by `block` or plain.
    fn run_probe_conv(
        &self,
        block: Option<usize>,
        x: &[f32],
        w: &[f32],
    ) -> Result<Vec<f32>, String> {
        let mut g = Graph::new("cbound_conv_block_probe");
        g.set_blocked_convs(block);
        let build = |g: &mut Graph| -> Result<(), super::graph::GraphError> {
            let xv = g.input("x", DType::F32, &[1, 16, 8, 8])?;
            let wv = g.input("w", DType::F32, &[16, 16, 3, 3])?;
            let y = g.conv2d(xv, wv, None, [1, 1], [1, 1, 1, 1], 1)?;
            g.output(y, "y")?;
            Ok(())
        };
        build(&mut g).map_err(|e| e.to_string())?;
        let blocked = g.nodes().iter().any(|n| {
            matches!(
                n.op,
                super::graph::Op::Conv {
                    blocked: Some(_),
                    ..
                }
            )
        });
        if blocked != block.is_some() {
            return Err("the probe convolution was not blocked as asked".into());
        }
        let bytes = g.to_model_bytes(OPSET).map_err(|e| e.to_string())?;
        let opts = SessionOptions {
            intra_threads: 1,
            ..SessionOptions::default()
        };
        let mut h = self.session(&bytes, &opts).map_err(|e| e.to_string())?;
        let tensor = |shape: Vec<i64>, data: &[f32]| {
            ort::value::Tensor::from_array((shape, data.to_vec())).map_err(|e| e.to_string())
        };
        let outputs = h
            .session
            .run(ort::inputs![
                "x" => tensor(vec![1, 16, 8, 8], x)?,
                "w" => tensor(vec![16, 16, 3, 3], w)?
            ])
            .map_err(|e| e.to_string())?;
        let (_, y) = outputs["y"]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        Ok(y.to_vec())
    }
}

/// Held while a session is created. Each session registers cbound's operator domain, and ONNX
/// Runtime adds a new domain to a process-wide table with a check-then-insert that is not
/// locked: two sessions created at once in a fresh process can both find `ai.cbound` absent,
/// and the second fails with "the domain is already exist". Creation is a small share of a
/// run; serialising it costs little.
fn session_creation_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A panic while creating a session leaves nothing half-done that the lock protects.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `cbound doctor` prints about ONNX Runtime.
#[derive(Debug, Clone)]
pub struct DoctorReport {
    pub library: PathBuf,
    pub source: LibrarySource,
    pub version: String,
    pub providers: Vec<String>,
    /// The CPU's NCHWc channel block that CPU steps' convolutions use ([`Runtime::conv_block`]).
    pub conv_block: Option<usize>,
    pub cuda_usable: bool,
    /// Why CUDA is not usable (ONNX Runtime's own message), when it is not.
    pub cuda_detail: Option<String>,
    /// The CUDA libraries, driver and GPUs ([`cuda_libs::probe`]).
    pub cuda: CudaReport,
}

/// Loads the runtime and probes it: providers, and whether a CUDA session can be created.
pub fn doctor(search: &LibrarySearch) -> Result<DoctorReport, RuntimeError> {
    let rt = runtime(search)?;
    let providers = rt.available_providers()?;
    // Before the probe session, which would preload the same way (once per process).
    let cuda = cuda_libs::probe(rt.found_at());
    let mut g = Graph::new("cbound_doctor_probe");
    let x = g.input("x", DType::F32, &[1])?;
    let y = g.relu(x)?;
    g.output(y, "y")?;
    let bytes = g.to_model_bytes(OPSET)?;
    let opts = SessionOptions {
        device: Device::Cuda,
        intra_threads: 1,
        ..SessionOptions::default()
    };
    let (cuda_usable, cuda_detail) = match rt.session(&bytes, &opts) {
        Ok(_) => (true, None),
        Err(e) => (false, Some(e.to_string())),
    };
    Ok(DoctorReport {
        library: rt.library().to_path_buf(),
        source: rt.source(),
        version: rt.version().to_string(),
        providers,
        conv_block: rt.conv_block(),
        cuda_usable,
        cuda_detail,
        cuda,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions created from many threads at once, as parallel instances and parallel tests
    /// do: every one registers cbound's operator domain, which ONNX Runtime records in a
    /// process-wide table without a lock ("domain already exists" under a race).
    #[test]
    fn a_gpu_share_caps_the_cuda_arena_at_its_share_in_whole_mib() {
        assert_eq!(
            cuda_provider_options(1, None),
            vec![("device_id", "1".to_string())]
        );
        let limit = share_of_memory(0.5, 80 * (1 << 30) + 12345);
        assert_eq!(limit, 40 * (1 << 30));
        assert_eq!(
            cuda_provider_options(0, Some(limit)),
            vec![
                ("device_id", "0".to_string()),
                ("gpu_mem_limit", limit.to_string())
            ]
        );
        // Shares that add up to one device never ask for more than it has.
        let total = 24_000_000_001u64;
        let thirds: u64 = (0..3).map(|_| share_of_memory(0.333, total)).sum();
        assert!(thirds <= total);
        assert_eq!(
            share_of_memory(0.25, 1 << 20),
            0,
            "rounded down to whole MiB"
        );
    }

    #[test]
    fn sessions_are_created_concurrently_without_a_registration_race() {
        let rt = crate::testutil::runtime();
        let mut g = Graph::new("concurrent");
        let x = g.input("x", DType::F32, &[2]).unwrap();
        let y = g.relu(x).unwrap();
        g.output(y, "y").unwrap();
        let bytes = g.to_model_bytes(OPSET).unwrap();
        let opts = SessionOptions {
            intra_threads: 1,
            ..SessionOptions::default()
        };
        let failures: Vec<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        (0..30)
                            .filter_map(|_| rt.session(&bytes, &opts).err().map(|e| e.to_string()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|_| vec!["panicked".into()]))
                .collect()
        });
        assert!(
            failures.is_empty(),
            "{} failed, e.g. {:?}",
            failures.len(),
            failures.first()
        );
    }

    #[test]
    fn explicit_missing_library_is_a_typed_error_with_hint() {
        let search = LibrarySearch {
            explicit: Some(PathBuf::from("/nonexistent/libonnxruntime.so.1.31.1")),
            ..LibrarySearch::default()
        };
        let err = find_library(&search).expect_err("a nonexistent path must not be found");
        assert!(matches!(err, RuntimeError::NamedLibraryMissing { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("scripts/setup.sh") && msg.contains("pip install onnxruntime==1.31.1"),
            "{msg}"
        );
        assert!(msg.contains("CBOUND_ORT_LIB"), "{msg}");
    }

    #[test]
    fn empty_search_reports_everything_it_tried() -> Result<(), std::io::Error> {
        let dir = tempfile::tempdir()?;
        let search = LibrarySearch {
            explicit: None,
            project_root: Some(dir.path().to_path_buf()),
            skip_env: true,
            skip_python: true,
        };
        match find_library(&search) {
            Err(RuntimeError::LibraryNotFound { tried, .. }) => {
                assert!(
                    tried.iter().any(|t| t.contains(".venv/lib/python3*")),
                    "{tried:?}"
                );
            }
            other => panic!("expected LibraryNotFound, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn mixed_precision_is_refused_on_cpu_only_and_the_refusal_names_the_device() {
        for d in [Device::Cpu, Device::Cuda, Device::Auto] {
            assert_eq!(Precision::Fp32.refusal(d), None);
        }
        assert_eq!(Precision::Fp32.refusal_on(ActiveDevice::Cpu), None);
        for p in [Precision::Fp16Mixed, Precision::Bf16Mixed] {
            let cpu = p.refusal(Device::Cpu).unwrap_or_default();
            assert!(
                cpu.contains("needs `device: cuda`") && cpu.contains(p.as_str()),
                "{cpu}"
            );
            for d in [Device::Cuda, Device::Auto] {
                assert_eq!(p.refusal(d), None);
            }
            assert_eq!(p.refusal_on(ActiveDevice::Cuda), None);
            let fell_back = p.refusal_on(ActiveDevice::Cpu).unwrap_or_default();
            assert!(fell_back.contains("fell back to the CPU"), "{fell_back}");
        }
    }

    #[test]
    fn version_is_read_from_the_file_name() {
        assert_eq!(
            version_from_path(Path::new("/x/libonnxruntime.so.1.31.1")),
            "1.31.1"
        );
        assert!(version_from_path(Path::new("/x/libonnxruntime.so")).starts_with("unknown"));
    }

    #[test]
    fn doctor_reports_cpu_and_cuda_status() -> Result<(), RuntimeError> {
        let rt = super::super::testutil::runtime();
        let report = doctor(&LibrarySearch {
            explicit: Some(rt.library().to_path_buf()),
            ..LibrarySearch::default()
        })?;
        assert!(
            report.providers.iter().any(|p| p == "CPUExecutionProvider"),
            "{report:?}"
        );
        assert_eq!(report.version, ORT_VERSION);
        eprintln!("doctor: {report:?}");
        if !report.cuda_usable {
            assert!(report.cuda_detail.is_some());
        }
        // Auto falls back with a warning instead of failing.
        let mut g = Graph::new("t");
        let x = g.input("x", DType::F32, &[1])?;
        let y = g.relu(x)?;
        g.output(y, "y")?;
        let h = rt.session(
            &g.to_model_bytes(OPSET)?,
            &SessionOptions {
                device: Device::Auto,
                intra_threads: 1,
                ..SessionOptions::default()
            },
        )?;
        if h.device == ActiveDevice::Cpu {
            assert_eq!(h.warnings.len(), 1, "{:?}", h.warnings);
        }
        Ok(())
    }
}
