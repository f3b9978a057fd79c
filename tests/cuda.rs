//! The CUDA-facing parts that must hold on a machine without a GPU, through the real binary:
//! the `precision` option is refused where it cannot train (CPU) and where it is not built
//! yet (CUDA), with the file position, and `cbound doctor` says plainly that CUDA is absent,
//! or, on a fake tree of pip's nvidia wheels, which library it found, failed to load or missed.

mod common;
use common::{validate_refuses, Project};
use std::path::Path;

/// Whether this machine has an NVIDIA driver loaded (doctor's answers differ then).
fn has_driver() -> bool {
    Path::new("/proc/driver/nvidia/version").exists()
}

#[test]
fn doctor_says_plainly_when_cuda_is_absent() {
    let p = Project::new();
    let run = p.cbound(&["doctor"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("execution providers: "),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains("CPUExecutionProvider"), "{}", run.all());
    if has_driver() {
        assert!(run.stdout.contains("nvidia driver: "), "{}", run.all());
    } else {
        // The repository's .venv has the CPU package: no provider and no driver.
        assert!(
            run.stdout.contains(
                "cuda: not available on this machine: no NVIDIA driver (libcuda.so.1 not found) and this ONNX Runtime has no CUDA provider"
            ) && run.stdout.contains("scripts/setup.sh --gpu"),
            "{}",
            run.all()
        );
        assert!(!run.stdout.contains("cuda: usable"), "{}", run.all());
    }
}

/// A venv whose onnxruntime package is the real library (linked) beside an empty CUDA
/// provider file, with empty stand-ins for the CUDA 13 wheels' libraries and no cuDNN: doctor
/// lists each one, the first as failing to load (an empty file is no ELF object), cuDNN as
/// missing with its pip package, and still exits 0.
#[test]
fn doctor_names_each_cuda_library_of_a_fake_wheel_tree() {
    let Some(real) = common::ort_lib() else {
        panic!("no ONNX Runtime in .venv: run scripts/setup.sh --no-build");
    };
    let p = Project::new();
    let sp = p.path().join("venv/lib/python3.11/site-packages");
    let capi = sp.join("onnxruntime/capi");
    std::fs::create_dir_all(&capi).unwrap();
    let ort = capi.join("libonnxruntime.so.1.31.1");
    std::os::unix::fs::symlink(&real, &ort).unwrap();
    std::fs::write(capi.join("libonnxruntime_providers_cuda.so"), b"").unwrap();
    let cu13 = sp.join("nvidia/cu13/lib");
    std::fs::create_dir_all(&cu13).unwrap();
    for f in [
        "libcudart.so.13",
        "libcublasLt.so.13",
        "libcublas.so.13",
        "libcurand.so.10",
    ] {
        std::fs::write(cu13.join(f), b"").unwrap();
    }
    let run = Project::new().cbound(&["doctor", "--ort-lib", ort.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all());
    let out = &run.stdout;
    let cudart = cu13.join("libcudart.so.13");
    assert!(
        out.contains(&format!(
            "cuda provider: {}",
            capi.join("libonnxruntime_providers_cuda.so").display()
        )),
        "{}",
        run.all()
    );
    assert!(
        out.contains(&format!(
            "  libcudart.so.13: found {} but failed to load: could not load `{}`",
            cudart.display(),
            cudart.display()
        )),
        "{}",
        run.all()
    );
    assert!(
        out.contains("  libcublas.so.13: found ") && out.contains("an earlier one failed"),
        "{}",
        run.all()
    );
    assert!(
        out.contains(&format!(
            "  libcudnn.so.9: missing (required; pip package nvidia-cudnn-cu13, expected in {}/nvidia/*/lib)",
            sp.display()
        )),
        "{}",
        run.all()
    );
    assert!(
        out.contains("  libcufft.so.12: missing (optional; pip package nvidia-cufft"),
        "{}",
        run.all()
    );
    // The probe session is refused with the file that would not load.
    assert!(
        out.contains("cuda: not usable: ") && out.contains("libcudart.so.13"),
        "{}",
        run.all()
    );
    if !has_driver() {
        assert!(
            out.contains("nvidia driver: missing: no NVIDIA driver"),
            "{}",
            run.all()
        );
    }
}

fn train_pipeline(device: &str, precision: &str) -> String {
    format!(
        "name: p\nstages:\n  mix:\n    kind: synthetic\n    params: {{task: mixture, n: 200}}\n  data:\n    kind: load\n    inputs: mix\n    params: {{format: parquet, feature_columns: \"x*\", label_column: z}}\n  train:\n    kind: train\n    inputs: data\n    params:\n      device: {device}\n      precision: {precision}\n"
    )
}

#[test]
fn mixed_precision_is_refused_on_cpu_with_its_position() {
    for precision in ["fp16_mixed", "bf16_mixed"] {
        validate_refuses(
            &train_pipeline("cpu", precision),
            "p.yaml:15:18 (at `stages.train.params.precision`)",
            &format!(
                "precision `{precision}` needs `device: cuda`; on CPU only `fp32` is supported"
            ),
        );
    }
}

#[test]
fn mixed_precision_on_cuda_says_it_is_not_implemented_yet() {
    for device in ["cuda", "auto"] {
        validate_refuses(
            &train_pipeline(device, "fp16_mixed"),
            "(at `stages.train.params.precision`)",
            "precision `fp16_mixed` is not implemented yet",
        );
    }
}

#[test]
fn fp32_is_the_default_and_accepted_everywhere() {
    let p = common::Project::new();
    for (device, precision) in [("cpu", "fp32"), ("cuda", "fp32")] {
        p.write("p.yaml", &train_pipeline(device, precision));
        let run = p.cbound(&["validate", "p.yaml"]);
        assert_eq!(run.code, 0, "{device}/{precision}: {}", run.all());
    }
    let run = p.cbound(&[
        "validate",
        "p.yaml",
        "--set",
        "stages.train.params.precision=fp64",
    ]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("fp64"), "{}", run.all());
}
