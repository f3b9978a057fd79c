//! The CUDA-facing parts that must hold on a machine without a GPU, through the real binary:
//! the `precision` option is refused where it cannot train (CPU, or `auto` fallen back to
//! it, and bf16 for convolutions), with the file position, and `cbound doctor` says plainly that CUDA is absent,
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
    assert!(run.stdout.contains("cpu convolutions: "), "{}", run.all());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // MLAS has NCHWc kernels on every AVX2 CPU (blocks of 8, or 16 with AVX-512).
        assert!(
            run.stdout.contains("NCHWc kernels in channel blocks of "),
            "{}",
            run.all()
        );
    }
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
fn mixed_precision_validates_on_cuda_and_auto() {
    let p = common::Project::new();
    for device in ["cuda", "auto"] {
        for precision in ["fp16_mixed", "bf16_mixed"] {
            p.write("p.yaml", &train_pipeline(device, precision));
            let run = p.cbound(&["validate", "p.yaml"]);
            assert_eq!(run.code, 0, "{device}/{precision}: {}", run.all());
        }
    }
}

#[test]
fn bf16_mixed_is_refused_for_convolutional_encoders() {
    let yaml = train_pipeline("cuda", "bf16_mixed").replace(
        "      device: cuda\n",
        "      device: cuda\n      model: {encoder: {kind: conv, channels: [4]}}\n",
    );
    validate_refuses(
        &yaml,
        "(at `stages.train.params.precision`)",
        "bf16_mixed is for MLP encoders",
    );
}

/// `device: auto` may fall back to the CPU, where mixed precision is not offered: the run
/// fails with the reason instead of training in fp32 (here the CPU build of ONNX Runtime
/// makes the fallback certain).
#[test]
fn mixed_precision_on_auto_fails_when_it_falls_back_to_the_cpu() {
    if has_driver() {
        eprintln!("skipped: this machine has an NVIDIA driver, so auto may not fall back");
        return;
    }
    let p = common::Project::new();
    p.write("p.yaml", &train_pipeline("auto", "fp16_mixed"));
    let run = p.cbound(&[
        "run",
        "p.yaml",
        "--set",
        "stages.train.params.batch_size=16",
    ]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.all()
            .contains("precision `fp16_mixed` needs CUDA, but `device: auto` fell back to the CPU"),
        "{}",
        run.all()
    );
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

/// A `command` script that records its CUDA_VISIBLE_DEVICES and waits until two instances
/// have started (so that the two must overlap).
fn meeting_probe(p: &Project) -> std::path::PathBuf {
    let meet = p.path().join("meet");
    std::fs::create_dir_all(&meet).unwrap();
    // The wait is only a guard against a hang when the two do not overlap; nothing asserts
    // on time.
    let script = format!(
        "echo \"$CUDA_VISIBLE_DEVICES\" > \"$CBOUND_OUT/cvd.txt\"\n\
         touch '{m}'/\"$CBOUND_INSTANCE\"\n\
         for i in $(seq 1200); do [ $(ls '{m}' | wc -l) -ge 2 ] && exit 0; sleep 0.1; done\n\
         echo never met >&2; exit 1\n",
        m = meet.display()
    );
    p.write("probe.sh", &script)
}

/// The CUDA_VISIBLE_DEVICES every instance under `stage_dir` recorded, sorted.
fn visible_devices_seen(stage_dir: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    let mut dirs = vec![stage_dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "cvd.txt") {
                seen.push(std::fs::read_to_string(&path).unwrap().trim().to_string());
            }
        }
    }
    seen.sort();
    seen
}

/// Runs two one-GPU `command` instances that must overlap (each waits until both have
/// started) and a GPU-less one with `--gpus 2`, under the given CUDA_VISIBLE_DEVICES of
/// cbound's own; returns the CUDA_VISIBLE_DEVICES each GPU instance saw, sorted, and the
/// GPU-less one's.
fn visible_devices_of_instances(parent: Option<&str>) -> (Vec<String>, String) {
    let p = Project::new();
    let probe = meeting_probe(&p);
    let cpu = p.write(
        "cpu.sh",
        "echo \"${CUDA_VISIBLE_DEVICES-unset}\" > \"$CBOUND_OUT/cvd.txt\"\n",
    );
    p.write(
        "p.yaml",
        &format!(
            "name: pin\nstages:\n  gpu:\n    kind: command\n    resources: {{gpus: 1}}\n    matrix: {{timeout_s: [1000, 1001]}}\n    params: {{argv: [sh, '{}']}}\n  cpu:\n    kind: command\n    params: {{argv: [sh, '{}']}}\n",
            probe.display(),
            cpu.display()
        ),
    );
    let mut cmd = p.command(&["run", "p.yaml", "--gpus", "2", "--jobs", "4"]);
    match parent {
        Some(v) => cmd.env("CUDA_VISIBLE_DEVICES", v),
        None => cmd.env_remove("CUDA_VISIBLE_DEVICES"),
    };
    let run = common::Run::from(cmd.output().expect("run cbound"));
    assert_eq!(run.code, 0, "{}", run.all());
    let read = |stage: &str| visible_devices_seen(&p.latest("pin").join(stage));
    let cpu = read("cpu");
    assert_eq!(cpu.len(), 1, "{cpu:?}");
    (read("gpu"), cpu[0].clone())
}

#[test]
fn concurrent_command_instances_get_their_own_gpu() {
    let (gpu, cpu) = visible_devices_of_instances(None);
    assert_eq!(gpu, vec!["0", "1"]);
    // An instance without GPUs keeps cbound's environment.
    assert_eq!(cpu, "unset");
    // Under cbound's own CUDA_VISIBLE_DEVICES the ids are positions in that list.
    let (gpu, cpu) = visible_devices_of_instances(Some("7,9"));
    assert_eq!(gpu, vec!["7", "9"]);
    assert_eq!(cpu, "7,9");
}

/// Two instances that ask for half a GPU each run at once on the one GPU there is (each waits
/// until the other has started, so they must overlap), and both see it as their device.
#[test]
fn half_gpu_command_instances_share_one_device() {
    let p = Project::new();
    let probe = meeting_probe(&p);
    p.write(
        "p.yaml",
        &format!(
            "name: share\nstages:\n  gpu:\n    kind: command\n    resources: {{gpus: 0.5}}\n    matrix: {{timeout_s: [1000, 1001]}}\n    params: {{argv: [sh, '{}']}}\n",
            probe.display()
        ),
    );
    let mut cmd = p.command(&["run", "p.yaml", "--gpus", "1", "--jobs", "4"]);
    cmd.env_remove("CUDA_VISIBLE_DEVICES");
    let run = common::Run::from(cmd.output().expect("run cbound"));
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        visible_devices_seen(&p.latest("share").join("gpu")),
        vec!["0", "0"]
    );
}
