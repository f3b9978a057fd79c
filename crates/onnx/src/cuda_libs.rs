//! Finding and preloading the CUDA and cuDNN libraries that onnxruntime-gpu's CUDA provider
//! needs, the way the Python `onnxruntime` package does (`onnxruntime.preload_dlls`), so that
//! `device: cuda` works from a `.venv` made by `scripts/setup.sh --gpu` with no
//! `LD_LIBRARY_PATH`.
//!
//! pip's `nvidia-*` wheels put their libraries under `<site-packages>/nvidia/<package>/lib`:
//! CUDA 13 in one consolidated `nvidia/cu13/lib`, cuDNN in `nvidia/cudnn/lib` (CUDA 12 used one
//! folder per component, `nvidia/cublas/lib` and so on). ONNX Runtime's provider library
//! (`libonnxruntime_providers_cuda.so`, beside `libonnxruntime.so` in the same `capi` folder)
//! names cuBLAS, cuBLASLt, cuRAND and the CUDA runtime as ELF dependencies and `dlopen`s cuDNN
//! and cuFFT by soname; none of them is on the loader's path inside a venv. Opening each file
//! by its full path with `RTLD_GLOBAL` before the provider is registered makes the loader find
//! them already loaded under their sonames. Which files, in which order, is
//! [`CUDA13_LIBRARIES`]: what `readelf -d` lists as NEEDED for onnxruntime-gpu 1.31.1's
//! provider library plus what it opens itself, as in the package's own preload list.
//!
//! `libcuda.so.1` is the NVIDIA driver's and comes from the system, never from pip; it is
//! looked up by soname only. [`probe`] also asks the driver for the GPUs and their memory and
//! the libraries for their versions, for `cbound doctor`.

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

/// The ONNX Runtime provider library that holds the CUDA execution provider.
pub const CUDA_PROVIDER_LIBRARY: &str = "libonnxruntime_providers_cuda.so";
/// The NVIDIA driver's CUDA library (installed with the driver, not by pip).
pub const DRIVER_LIBRARY: &str = "libcuda.so.1";
/// What to do when a piece is missing; part of every "missing" message.
pub const GPU_INSTALL_HINT: &str =
    "run `scripts/setup.sh --gpu` (installs onnxruntime-gpu==1.31.1 with its CUDA and cuDNN wheels into .venv)";

/// One library the CUDA provider needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaLibrary {
    /// File name (the soname), e.g. `libcublas.so.13`.
    pub soname: &'static str,
    /// The pip package that ships it.
    pub package: &'static str,
    /// Whether every CUDA session needs it. The others are opened by ONNX Runtime only for
    /// some operators (cuFFT, NVRTC), so their absence is reported but does not stop a run,
    /// as in onnxruntime's own preload.
    pub required: bool,
}

/// onnxruntime-gpu 1.31.1 (CUDA 13.0, cuDNN 9): dependencies before their dependents.
pub const CUDA13_LIBRARIES: &[CudaLibrary] = &[
    CudaLibrary {
        soname: "libcudart.so.13",
        package: "nvidia-cuda-runtime",
        required: true,
    },
    CudaLibrary {
        soname: "libcublasLt.so.13",
        package: "nvidia-cublas",
        required: true,
    },
    CudaLibrary {
        soname: "libcublas.so.13",
        package: "nvidia-cublas",
        required: true,
    },
    CudaLibrary {
        soname: "libcurand.so.10",
        package: "nvidia-curand",
        required: true,
    },
    CudaLibrary {
        soname: "libcufft.so.12",
        package: "nvidia-cufft",
        required: false,
    },
    CudaLibrary {
        soname: "libnvrtc.so.13",
        package: "nvidia-cuda-nvrtc",
        required: false,
    },
    CudaLibrary {
        soname: "libcudnn.so.9",
        package: "nvidia-cudnn-cu13",
        required: true,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum CudaLibError {
    #[error("could not load `{}` ({soname}, from pip package {package}): {detail}; reinstall it with {hint}", path.display())]
    Load {
        path: PathBuf,
        soname: &'static str,
        package: &'static str,
        detail: String,
        hint: &'static str,
    },
}

/// Where one library was found, if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub library: CudaLibrary,
    pub path: Option<PathBuf>,
}

/// The result of looking for the CUDA libraries next to an ONNX Runtime installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The `site-packages` folder holding the `onnxruntime` package, when the library sits in
    /// one (`<site-packages>/onnxruntime/capi/`).
    pub site_packages: Option<PathBuf>,
    /// `<site-packages>/nvidia/*/lib` folders that exist, sorted.
    pub lib_dirs: Vec<PathBuf>,
    /// The provider library beside `libonnxruntime.so`, when present.
    pub provider: Option<PathBuf>,
    /// Every entry of [`CUDA13_LIBRARIES`], in order.
    pub libraries: Vec<Located>,
}

impl Discovery {
    /// The required libraries not found, for error messages.
    pub fn missing_required(&self) -> Vec<&Located> {
        self.libraries
            .iter()
            .filter(|l| l.library.required && l.path.is_none())
            .collect()
    }

    /// One sentence on what is missing, or `None` when nothing required is.
    pub fn missing_summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.provider.is_none() {
            parts.push(format!(
                "this ONNX Runtime has no CUDA provider (`{CUDA_PROVIDER_LIBRARY}` is not beside it: the CPU package `onnxruntime` is installed, not `onnxruntime-gpu`)"
            ));
        }
        let missing = self.missing_required();
        if !missing.is_empty() {
            let names: Vec<String> = missing
                .iter()
                .map(|l| format!("{} ({})", l.library.soname, l.library.package))
                .collect();
            let place = match &self.site_packages {
                Some(sp) => format!("under {}/nvidia/*/lib", sp.display()),
                None => "beside this ONNX Runtime (it is not in a Python site-packages)".into(),
            };
            parts.push(format!("not found {place}: {}", names.join(", ")));
        }
        (!parts.is_empty()).then(|| format!("{}; {GPU_INSTALL_HINT}", parts.join("; ")))
    }
}

/// `<site-packages>` for a library at `<site-packages>/onnxruntime/capi/<file>`.
fn site_packages_of(ort_library: &Path) -> Option<PathBuf> {
    let capi = ort_library.parent()?;
    let package = capi.parent()?;
    let is_layout = capi.file_name().is_some_and(|n| n == "capi")
        && package.file_name().is_some_and(|n| n == "onnxruntime");
    is_layout.then(|| package.parent().map(Path::to_path_buf))?
}

/// Looks for the CUDA provider and the libraries of [`CUDA13_LIBRARIES`] beside the ONNX
/// Runtime library at `ort_library` (as given, not resolved: a venv reached through a symlink
/// keeps its own site-packages). Only looks at files; loads nothing.
pub fn discover(ort_library: &Path) -> Discovery {
    let provider = ort_library
        .parent()
        .map(|capi| capi.join(CUDA_PROVIDER_LIBRARY))
        .filter(|p| p.is_file());
    let site_packages = site_packages_of(ort_library);
    let mut lib_dirs: Vec<PathBuf> = site_packages
        .as_ref()
        .and_then(|sp| std::fs::read_dir(sp.join("nvidia")).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("lib"))
        .filter(|p| p.is_dir())
        .collect();
    lib_dirs.sort();
    let libraries = CUDA13_LIBRARIES
        .iter()
        .map(|&library| Located {
            library,
            path: lib_dirs
                .iter()
                .map(|d| d.join(library.soname))
                .find(|p| p.is_file()),
        })
        .collect();
    Discovery {
        site_packages,
        lib_dirs,
        provider,
        libraries,
    }
}

/// Handles of the preloaded libraries: kept open for the life of the process, since the
/// provider's symbols resolve into them.
static LOADED: Mutex<Vec<Library>> = Mutex::new(Vec::new());

fn open_global(path: &Path) -> Result<Library, String> {
    // SAFETY: loading a shared library runs its initialisers; these are NVIDIA's CUDA
    // libraries, which ONNX Runtime would load the same way moments later.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| e.to_string())
}

/// Opens every library `discovery` found, in order, with `RTLD_GLOBAL`; returns the files
/// loaded. Missing libraries are skipped (the system loader may still find them, e.g. a CUDA
/// toolkit on `LD_LIBRARY_PATH`); a file that is there but does not load is an error naming
/// it, since ONNX Runtime would then fail with a less precise one.
pub fn preload(discovery: &Discovery) -> Result<Vec<PathBuf>, CudaLibError> {
    let mut loaded = Vec::new();
    for l in &discovery.libraries {
        let Some(path) = &l.path else { continue };
        let lib = open_global(path).map_err(|detail| CudaLibError::Load {
            path: path.clone(),
            soname: l.library.soname,
            package: l.library.package,
            detail,
            hint: GPU_INSTALL_HINT,
        })?;
        LOADED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(lib);
        loaded.push(path.clone());
    }
    Ok(loaded)
}

/// [`discover`] and [`preload`] once per process (the runtime is a process-wide singleton
/// too); later calls return the first result.
pub fn ensure_preloaded(ort_library: &Path) -> Result<(Discovery, Vec<PathBuf>), String> {
    static ONCE: OnceLock<Result<(Discovery, Vec<PathBuf>), String>> = OnceLock::new();
    ONCE.get_or_init(|| {
        let d = discover(ort_library);
        preload(&d)
            .map(|loaded| (d, loaded))
            .map_err(|e| e.to_string())
    })
    .clone()
}

/// One GPU as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub index: usize,
    pub name: String,
    pub memory_bytes: u64,
}

/// What the NVIDIA driver says, or why it could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    /// The CUDA version the driver supports, e.g. `13.0`.
    pub cuda_version: String,
    pub gpus: Vec<Gpu>,
}

/// `12040` -> `12.4` (CUDA's `major * 1000 + minor * 10`).
fn cuda_version_string(v: c_int) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// `90100` -> `9.1.0` (cuDNN 9's `major * 10000 + minor * 100 + patch`).
fn cudnn_version_string(v: usize) -> String {
    format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
}

/// Asks the driver (`libcuda.so.1`, by soname) for its CUDA version and the GPUs.
pub fn driver_info() -> Result<DriverInfo, String> {
    type Int1 = unsafe extern "C" fn(*mut c_int) -> c_int;
    type Init = unsafe extern "C" fn(c_uint) -> c_int;
    type DeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type Name = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    type TotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
    // SAFETY: as in `open_global`; by soname, so the system's driver is the one found.
    let lib = unsafe { Library::open(Some(DRIVER_LIBRARY), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| format!("no NVIDIA driver: {DRIVER_LIBRARY} could not be loaded ({e})"))?;
    let call = |what: &str, r: c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(format!("the NVIDIA driver failed {what} (CUresult {r})"))
        }
    };
    // SAFETY: the symbols are the driver API's documented C functions with these signatures;
    // every out-pointer is a live local of the right type and the name buffer's length is
    // passed with it.
    unsafe {
        let sym = |name: &[u8]| -> Result<*const (), String> {
            lib.get::<*const ()>(name)
                .map(|s| *s)
                .map_err(|e| format!("{DRIVER_LIBRARY} lacks a driver API function ({e})"))
        };
        let init: Init = std::mem::transmute(sym(b"cuInit\0")?);
        let version: Int1 = std::mem::transmute(sym(b"cuDriverGetVersion\0")?);
        let count: Int1 = std::mem::transmute(sym(b"cuDeviceGetCount\0")?);
        let device_get: DeviceGet = std::mem::transmute(sym(b"cuDeviceGet\0")?);
        let name: Name = std::mem::transmute(sym(b"cuDeviceGetName\0")?);
        let total: TotalMem = std::mem::transmute(sym(b"cuDeviceTotalMem_v2\0")?);
        call("cuInit", init(0))?;
        let mut v: c_int = 0;
        call("cuDriverGetVersion", version(&mut v))?;
        let mut n: c_int = 0;
        call("cuDeviceGetCount", count(&mut n))?;
        let mut gpus = Vec::new();
        for i in 0..n.max(0) {
            let mut dev: c_int = 0;
            call("cuDeviceGet", device_get(&mut dev, i))?;
            let mut buf = [0 as c_char; 256];
            call("cuDeviceGetName", name(buf.as_mut_ptr(), 255, dev))?;
            let mut bytes: usize = 0;
            call("cuDeviceTotalMem", total(&mut bytes, dev))?;
            gpus.push(Gpu {
                index: i as usize,
                name: CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned(),
                memory_bytes: bytes as u64,
            });
        }
        Ok(DriverInfo {
            cuda_version: cuda_version_string(v),
            gpus,
        })
    }
}

/// The CUDA runtime's and cuDNN's versions from the preloaded files (none needs a GPU).
fn library_versions(discovery: &Discovery) -> (Option<String>, Option<String>) {
    let path_of = |soname: &str| {
        discovery
            .libraries
            .iter()
            .find(|l| l.library.soname == soname)
            .and_then(|l| l.path.clone())
    };
    let cudart = path_of("libcudart.so.13").and_then(|p| {
        let lib = open_global(&p).ok()?;
        // SAFETY: `cudaRuntimeGetVersion(int*)` is the runtime API's; the pointer is a local.
        unsafe {
            let f = lib
                .get::<unsafe extern "C" fn(*mut c_int) -> c_int>(b"cudaRuntimeGetVersion\0")
                .ok()?;
            let mut v: c_int = 0;
            (f(&mut v) == 0).then(|| cuda_version_string(v))
        }
    });
    let cudnn = path_of("libcudnn.so.9").and_then(|p| {
        let lib = open_global(&p).ok()?;
        // SAFETY: `size_t cudnnGetVersion(void)` is cuDNN's.
        unsafe {
            let f = lib
                .get::<unsafe extern "C" fn() -> usize>(b"cudnnGetVersion\0")
                .ok()?;
            Some(cudnn_version_string(f()))
        }
    });
    (cudart, cudnn)
}

/// Everything `cbound doctor` says about CUDA.
#[derive(Debug, Clone)]
pub struct CudaReport {
    pub discovery: Discovery,
    /// The files preloaded, or the first that would not load.
    pub preload: Result<Vec<PathBuf>, String>,
    pub driver: Result<DriverInfo, String>,
    pub cudart_version: Option<String>,
    pub cudnn_version: Option<String>,
}

impl CudaReport {
    /// No driver and no CUDA provider: nothing of CUDA here at all.
    pub fn absent(&self) -> bool {
        self.driver.is_err() && self.discovery.provider.is_none()
    }

    /// The report as `cbound doctor` prints it, one line each.
    pub fn lines(&self) -> Vec<String> {
        let d = &self.discovery;
        let mut out = Vec::new();
        if self.absent() {
            out.push(format!(
                "cuda: not available on this machine: no NVIDIA driver ({DRIVER_LIBRARY} not found) and this ONNX Runtime has no CUDA provider; on a GPU machine, {GPU_INSTALL_HINT}"
            ));
            return out;
        }
        match &self.driver {
            Ok(info) => {
                out.push(format!(
                    "nvidia driver: {DRIVER_LIBRARY}, supports CUDA {}",
                    info.cuda_version
                ));
                if info.gpus.is_empty() {
                    out.push(
                        "gpus: none visible to the driver (check CUDA_VISIBLE_DEVICES)".into(),
                    );
                }
                for g in &info.gpus {
                    out.push(format!(
                        "gpu {}: {}, {:.1} GiB",
                        g.index,
                        g.name,
                        g.memory_bytes as f64 / (1u64 << 30) as f64
                    ));
                }
            }
            Err(why) => out.push(format!("nvidia driver: missing: {why}")),
        }
        match &d.provider {
            Some(p) => out.push(format!("cuda provider: {}", p.display())),
            None => out.push(format!(
                "cuda provider: missing: `{CUDA_PROVIDER_LIBRARY}` is not beside this ONNX Runtime (the CPU package `onnxruntime` is installed); {GPU_INSTALL_HINT}"
            )),
        }
        let loaded: &[PathBuf] = self.preload.as_deref().unwrap_or(&[]);
        for l in &d.libraries {
            let need = if l.library.required {
                "required"
            } else {
                "optional"
            };
            let line = match &l.path {
                Some(p) if loaded.contains(p) => format!("loaded {}", p.display()),
                Some(p) => match &self.preload {
                    Err(why) if why.contains(&*p.to_string_lossy()) => {
                        format!("found {} but failed to load: {why}", p.display())
                    }
                    _ => format!("found {} (not loaded: an earlier one failed)", p.display()),
                },
                None => format!(
                    "missing ({need}; pip package {}, expected in {})",
                    l.library.package,
                    d.site_packages.as_ref().map_or_else(
                        || "a site-packages/nvidia/*/lib folder".to_string(),
                        |sp| format!("{}/nvidia/*/lib", sp.display())
                    )
                ),
            };
            out.push(format!("  {}: {line}", l.library.soname));
        }
        out.push(format!(
            "cuda runtime: {}",
            self.cudart_version
                .as_deref()
                .unwrap_or("unknown (libcudart not loaded)")
        ));
        out.push(format!(
            "cudnn: {}",
            self.cudnn_version
                .as_deref()
                .unwrap_or("unknown (libcudnn not loaded)")
        ));
        out
    }
}

/// Finds, preloads (once per process) and asks the driver and libraries about themselves.
pub fn probe(ort_library: &Path) -> CudaReport {
    let discovery = discover(ort_library);
    let preload = ensure_preloaded(ort_library).map(|(_, loaded)| loaded);
    let (cudart_version, cudnn_version) = if preload.is_ok() {
        library_versions(&discovery)
    } else {
        (None, None)
    };
    CudaReport {
        discovery,
        preload,
        driver: driver_info(),
        cudart_version,
        cudnn_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A venv-like tree: `<sp>/onnxruntime/capi/libonnxruntime.so.1.31.1` and the `nvidia`
    /// folders named, each holding the given (empty) files.
    fn fake_tree(dirs: &[(&str, &[&str])], provider: bool) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().expect("tempdir");
        let sp = root.path().join("lib/python3.11/site-packages");
        let capi = sp.join("onnxruntime/capi");
        std::fs::create_dir_all(&capi).expect("capi");
        let ort = capi.join("libonnxruntime.so.1.31.1");
        std::fs::write(&ort, b"").expect("ort");
        if provider {
            std::fs::write(capi.join(CUDA_PROVIDER_LIBRARY), b"").expect("provider");
        }
        for (dir, files) in dirs {
            let d = sp.join("nvidia").join(dir).join("lib");
            std::fs::create_dir_all(&d).expect("lib dir");
            for f in *files {
                std::fs::write(d.join(f), b"").expect("lib");
            }
        }
        (root, ort)
    }

    const CU13: &[&str] = &[
        "libcudart.so.13",
        "libcublasLt.so.13",
        "libcublas.so.13",
        "libcurand.so.10",
        "libcufft.so.12",
        "libnvrtc.so.13",
    ];

    #[test]
    fn finds_the_cuda13_layout_of_the_pip_wheels() {
        let (root, ort) = fake_tree(&[("cu13", CU13), ("cudnn", &["libcudnn.so.9"])], true);
        let d = discover(&ort);
        let sp = root.path().join("lib/python3.11/site-packages");
        assert_eq!(d.site_packages.as_deref(), Some(sp.as_path()));
        assert_eq!(
            d.lib_dirs,
            vec![sp.join("nvidia/cu13/lib"), sp.join("nvidia/cudnn/lib")]
        );
        assert_eq!(
            d.provider,
            Some(sp.join("onnxruntime/capi").join(CUDA_PROVIDER_LIBRARY))
        );
        for l in &d.libraries {
            let dir = if l.library.soname.starts_with("libcudnn") {
                "cudnn"
            } else {
                "cu13"
            };
            assert_eq!(
                l.path,
                Some(
                    sp.join("nvidia")
                        .join(dir)
                        .join("lib")
                        .join(l.library.soname)
                ),
                "{l:?}"
            );
        }
        assert_eq!(d.missing_summary(), None);
    }

    #[test]
    fn finds_one_folder_per_component_too() {
        // The CUDA 12 wheels' layout: nvidia/cublas/lib, nvidia/cuda_runtime/lib, ...
        let (_root, ort) = fake_tree(
            &[
                ("cublas", &["libcublas.so.13", "libcublasLt.so.13"]),
                ("cuda_runtime", &["libcudart.so.13"]),
                ("curand", &["libcurand.so.10"]),
            ],
            true,
        );
        let d = discover(&ort);
        assert_eq!(d.lib_dirs.len(), 3);
        let missing: Vec<&str> = d
            .missing_required()
            .iter()
            .map(|l| l.library.soname)
            .collect();
        assert_eq!(missing, vec!["libcudnn.so.9"]);
        let summary = d.missing_summary().unwrap_or_default();
        assert!(
            summary.contains("libcudnn.so.9 (nvidia-cudnn-cu13)")
                && summary.contains("nvidia/*/lib")
                && summary.contains("scripts/setup.sh --gpu"),
            "{summary}"
        );
        // Optional ones (cuFFT, NVRTC) are not in the summary.
        assert!(!summary.contains("cufft"), "{summary}");
    }

    #[test]
    fn a_cpu_package_reports_the_missing_provider_and_every_library() {
        let (_root, ort) = fake_tree(&[], false);
        let d = discover(&ort);
        assert!(d.lib_dirs.is_empty() && d.provider.is_none());
        assert!(d.libraries.iter().all(|l| l.path.is_none()));
        let summary = d.missing_summary().unwrap_or_default();
        assert!(summary.contains(CUDA_PROVIDER_LIBRARY), "{summary}");
        assert!(
            summary.contains("libcudart.so.13 (nvidia-cuda-runtime)"),
            "{summary}"
        );
        // Nothing found: nothing to preload, and that is not an error.
        assert_eq!(preload(&d).ok(), Some(Vec::new()));
    }

    #[test]
    fn a_library_outside_site_packages_has_no_nvidia_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ort = dir.path().join("libonnxruntime.so.1.31.1");
        let d = discover(&ort);
        assert_eq!(d.site_packages, None);
        assert!(d
            .missing_summary()
            .unwrap_or_default()
            .contains("not in a Python site-packages"));
    }

    #[test]
    fn a_file_that_does_not_load_is_a_typed_error_naming_it() {
        let (root, ort) = fake_tree(&[("cu13", CU13)], true);
        let d = discover(&ort);
        let first = root
            .path()
            .join("lib/python3.11/site-packages/nvidia/cu13/lib/libcudart.so.13");
        match preload(&d) {
            Err(e @ CudaLibError::Load { .. }) => {
                let CudaLibError::Load { path, soname, .. } = &e;
                assert_eq!(path, &first);
                assert_eq!(*soname, "libcudart.so.13");
                let msg = e.to_string();
                assert!(
                    msg.contains(&*first.to_string_lossy())
                        && msg.contains("nvidia-cuda-runtime")
                        && msg.contains("scripts/setup.sh --gpu"),
                    "{msg}"
                );
            }
            other => panic!("an empty file must not load: {other:?}"),
        }
    }

    #[test]
    fn the_report_names_each_library_and_what_is_missing() {
        let (_root, ort) = fake_tree(&[("cu13", CU13)], true);
        let discovery = discover(&ort);
        let preload = preload(&discovery).map_err(|e| e.to_string());
        let report = CudaReport {
            discovery,
            preload,
            driver: Err("no NVIDIA driver: libcuda.so.1 could not be loaded (x)".into()),
            cudart_version: None,
            cudnn_version: None,
        };
        assert!(!report.absent());
        let text = report.lines().join("\n");
        assert!(
            text.contains("nvidia driver: missing: no NVIDIA driver"),
            "{text}"
        );
        assert!(text.contains("cuda provider: /"), "{text}");
        assert!(
            text.contains("libcudart.so.13: found ") && text.contains("but failed to load"),
            "{text}"
        );
        assert!(
            text.contains("libcublas.so.13: found ") && text.contains("an earlier one failed"),
            "{text}"
        );
        assert!(
            text.contains("libcudnn.so.9: missing (required; pip package nvidia-cudnn-cu13"),
            "{text}"
        );
        assert!(text.contains("cudnn: unknown"), "{text}");
    }

    #[test]
    fn with_no_driver_and_no_provider_the_report_is_one_plain_line() {
        let (_root, ort) = fake_tree(&[], false);
        let report = CudaReport {
            discovery: discover(&ort),
            preload: Ok(Vec::new()),
            driver: Err("no NVIDIA driver".into()),
            cudart_version: None,
            cudnn_version: None,
        };
        assert!(report.absent());
        let lines = report.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("cuda: not available on this machine"),
            "{lines:?}"
        );
    }

    #[test]
    fn versions_are_decoded_as_cuda_and_cudnn_encode_them() {
        assert_eq!(cuda_version_string(13000), "13.0");
        assert_eq!(cuda_version_string(12040), "12.4");
        assert_eq!(cudnn_version_string(91300), "9.13.0");
    }
}
