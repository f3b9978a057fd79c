//! The CUDA-facing parts that must hold on a machine without a GPU, through the real binary:
//! the `precision` option is refused where it cannot train (CPU) and where it is not built
//! yet (CUDA), with the file position, and `cbound doctor` says plainly that CUDA is absent.

mod common;
use common::validate_refuses;

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
