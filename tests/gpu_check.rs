//! `scripts/gpu-check.sh --preflight` on this machine: it checks everything the GPU check
//! needs without a GPU or network, names each missing piece (the onnxruntime-gpu wheel with
//! its size), and accepts the wheel from a local directory (`CBOUND_WHEELS`).

use std::path::Path;
use std::process::Command;

fn preflight(wheels: &Path) -> (i32, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/gpu-check.sh"))
        .arg("--preflight")
        .env("CBOUND_WHEELS", wheels)
        // The check's own PyTorch lookup, kept to the repository's .venv.
        .env_remove("TORCH_PYTHON")
        .current_dir(root)
        .output()
        .expect("run gpu-check.sh");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn preflight_lists_what_is_missing_and_takes_wheels_from_a_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gpu_venv = root
        .join(".venv/lib")
        .read_dir()
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .is_some_and(|py| {
            py.path()
                .join("site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so")
                .is_file()
        });
    let empty = tempfile::tempdir().expect("tempdir");
    let (code, text) = preflight(empty.path());
    assert!(text.contains("preflight: "), "{text}");
    let has_driver = Path::new("/proc/driver/nvidia/version").exists();
    if !has_driver {
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains("preflight: missing: NVIDIA driver (no /proc/driver/nvidia/version)"),
            "{text}"
        );
    }
    if gpu_venv {
        return;
    }
    // The CPU package is installed: the onnxruntime-gpu wheel is named, with where to get it.
    let line = text
        .lines()
        .find(|l| l.starts_with("preflight: missing: onnxruntime-gpu in .venv; file: "))
        .unwrap_or_else(|| panic!("no onnxruntime-gpu line in:\n{text}"));
    assert!(
        line.contains("pip download onnxruntime-gpu==1.31.1 --no-deps")
            && line.contains("CBOUND_WHEELS"),
        "{line}"
    );
    if line.contains("-cp311-") {
        assert!(line.contains("(255560985 bytes, 243 MiB;"), "{line}");
    }
    assert!(text.contains("nvidia/cudnn/lib/libcudnn.so.9"), "{text}");
    assert!(text.contains("nvidia-cudnn-cu13~=9.0"), "{text}");
    let wheel = line
        .split("file: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no wheel name in {line}"));
    // With that file in CBOUND_WHEELS, it is found there instead of missing.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(wheel), b"").expect("fake wheel");
    let (_, with) = preflight(dir.path());
    assert!(
        with.contains(&format!("ok: {wheel} found in CBOUND_WHEELS=")),
        "{with}"
    );
    assert!(
        !with.contains("missing: onnxruntime-gpu in .venv"),
        "{with}"
    );
}
