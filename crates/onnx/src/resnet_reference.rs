//! ResNet-18 through cbound's graphs against an independent PyTorch reference
//! (tests/fixtures/resnet_reference.json, written by scripts/resnet_fixture.py): parameter
//! names and layout against torchvision, the train-mode embedding, the NT-Xent loss, the
//! gradients of several parameters, the BatchNorm running statistics after one step (through
//! the trainer's ping-pong binding), and the inference-mode embedding of the exported encoder
//! after that step; plus the ImageNet stem's inference-mode embedding.

use serde_json::Value;

use crate::autodiff;
use crate::checkpoint::NamedTensor;
use crate::graph::{DType, Graph, Op, OPSET};
use crate::loss::{self, LossConfig, LossKind};
use crate::models::{
    BnMode, ContrastiveModel, EncoderConfig, ModelConfig, ResNetConfig, ResNetDepth, Stem,
};
use crate::optim::OptimizerConfig;
use crate::step::{build_encoder, build_train_step_graph, ParamSource, StepConfig, StepGraph};
use crate::testutil::{run_python, runtime, single_thread, Data, Runner};
use crate::trainer::{Embedder, Trainer};

const FIXTURE: &str = include_str!("../../../tests/fixtures/resnet_reference.json");
/// The issue's bar: 1e-4 relative (as the norm of the difference over the reference's norm).
const RTOL: f64 = 1e-4;

/// The fixture's deterministic tensor `k` (see the script's docstring).
fn det(k: usize, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    (0..n as u64)
        .map(|j| {
            let v = ((j + 1) * 2_654_435_761 + (k as u64 + 1) * 97_531) % (1u64 << 32);
            let u = v as f64 / 4_294_967_296.0;
            (lo + (hi - lo) * u) as f32
        })
        .collect()
}

/// The model's tensors (parameters then buffers, `init_params` order) filled as the script does.
fn fixture_params(model: &ContrastiveModel) -> Vec<NamedTensor> {
    let init = model.init_params(0).expect("init");
    init.iter()
        .enumerate()
        .map(|(k, t)| {
            let (lo, hi) = if t.shape.len() == 4 {
                let fan_out = t.shape[0] * t.shape[2] * t.shape[3];
                let b = (6.0 / fan_out as f64).sqrt();
                (-b, b)
            } else if t.name.ends_with("running_var") || t.name.ends_with(".weight") {
                (0.8, 1.2)
            } else {
                (-0.1, 0.1)
            };
            NamedTensor::new(t.name.clone(), t.shape.clone(), det(k, t.numel(), lo, hi))
        })
        .collect()
}

fn resnet(stem: Stem, width: f64, depth: ResNetDepth, hw: usize) -> ContrastiveModel {
    ContrastiveModel::new(&ModelConfig {
        encoder: EncoderConfig::ResNet(ResNetConfig {
            input: [3, hw, hw],
            depth,
            stem,
            width,
        }),
        projector: None,
    })
    .expect("model")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// `||got - want|| / ||want||` over the first `want.len()` entries.
fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert!(
        got.len() >= want.len(),
        "{what}: {} values, reference {}",
        got.len(),
        want.len()
    );
    let (mut d, mut n) = (0.0, 0.0);
    for (a, b) in got.iter().zip(want) {
        d += (a - b) * (a - b);
        n += b * b;
    }
    let rel = (d / n.max(f64::MIN_POSITIVE)).sqrt();
    assert!(n > 0.0, "{what}: the reference is all zeros");
    assert!(rel <= RTOL, "{what}: relative error {rel:.3e} > {RTOL:e}");
}

fn names_and_shapes(model: &ContrastiveModel) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = model
        .param_specs()
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    v.extend(model.buffer_specs().into_iter().map(|b| (b.name, b.shape)));
    v
}

fn fixture_names(v: &Value) -> Vec<(String, Vec<usize>)> {
    v.as_array()
        .expect("names")
        .iter()
        .map(|e| {
            let name = format!("enc.{}", e[0].as_str().expect("name"));
            let shape = e[1]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            (name, shape)
        })
        .collect()
}

#[test]
fn names_and_layout_match_torchvision() {
    let fx: Value = serde_json::from_str(FIXTURE).expect("fixture parses");
    for (depth, key) in [
        (ResNetDepth::R18, "torchvision_resnet18"),
        (ResNetDepth::R34, "torchvision_resnet34"),
    ] {
        let m = resnet(Stem::Imagenet, 1.0, depth, 32);
        assert_eq!(names_and_shapes(&m), fixture_names(&fx[key]), "{key}");
        assert_eq!(m.embedding_dim(), 512);
    }
    let m = resnet(Stem::Cifar, 0.125, ResNetDepth::R18, 16);
    assert_eq!(
        names_and_shapes(&m),
        fixture_names(&fx["cases"]["cifar"]["names"])
    );
    assert_eq!(m.embedding_dim(), 64);
}

#[test]
fn resnet18_matches_pytorch() {
    check_resnet18(None);
}

/// The same check with the convolutions that qualify run by ONNX Runtime's NCHWc kernels
/// (forward and input gradients; at width 0.125 those of `layer2`, 16 channels at 8x8),
/// in this machine's block.
#[test]
fn resnet18_with_blocked_convolutions_matches_pytorch() {
    let Some(block) = runtime().conv_block() else {
        assert!(
            !cfg!(target_arch = "x86_64") || !std::arch::is_x86_feature_detected!("avx2"),
            "an x86-64 CPU with AVX2 should have ONNX Runtime's NCHWc kernels"
        );
        eprintln!("no NCHWc convolutions in this ONNX Runtime on this CPU: nothing to check");
        return;
    };
    check_resnet18(Some(block));
}

/// The CIFAR-stem case of the fixture, its convolutions blocked by `block` or plain.
fn check_resnet18(block: Option<usize>) {
    let fx: Value = serde_json::from_str(FIXTURE).expect("fixture parses");
    let case = &fx["cases"]["cifar"];
    let model = resnet(Stem::Cifar, 0.125, ResNetDepth::R18, 16);
    let tensors = fixture_params(&model);
    let x = det(1000, 8 * 3 * 16 * 16, -1.0, 1.0);
    let loss_cfg = LossConfig {
        kind: LossKind::NtXent,
        temperature: 0.5,
        eps: 1e-12,
    };

    // Forward (train mode) and backward as plain graphs, in f32 as the step runs them.
    let mut g = Graph::new("resnet_reference");
    g.set_blocked_convs(block);
    let params: Vec<_> = model
        .param_specs()
        .iter()
        .map(|p| g.input(&p.name, DType::F32, &p.shape).expect("input"))
        .collect();
    let buffers: Vec<_> = model
        .buffer_specs()
        .iter()
        .map(|b| g.input(&b.name, DType::F32, &b.shape).expect("input"))
        .collect();
    let xv = g.input("x", DType::F32, &[8, 3, 16, 16]).expect("input");
    let (h, _, next) = model
        .forward_mode(&mut g, xv, &params, &buffers, BnMode::Train)
        .expect("forward");
    let halves = g.split(h, 0, &[4, 4]).expect("split");
    let loss = loss::contrastive_loss(&mut g, halves[0], halves[1], &loss_cfg).expect("loss");
    let grads = autodiff::gradients(&mut g, loss, &params).expect("gradients");
    g.output(h, "h").expect("output");
    g.output(loss, "loss").expect("output");
    let specs = model.param_specs();
    for (spec, gr) in specs.iter().zip(&grads) {
        g.output(*gr, &format!("grad.{}", spec.name))
            .expect("output");
    }
    for (spec, v) in model.buffer_specs().iter().zip(&next) {
        g.output(*v, &format!("next.{}", spec.name))
            .expect("output");
    }
    let mut feeds = vec![(xv, Data::F32(x.clone()))];
    for (v, t) in params.iter().chain(&buffers).zip(&tensors) {
        feeds.push((*v, Data::F32(t.data.clone())));
    }
    let out = Runner::new(&g).run(&feeds);
    assert_close("embedding", &out["h"], &floats(&case["embedding"]));
    let want_loss = case["loss"].as_f64().expect("loss");
    assert_close("loss", &out["loss"], &[want_loss]);
    let grads_fx = case["grads"].as_object().expect("grads");
    assert!(grads_fx.len() >= 5);
    for (name, want) in grads_fx {
        assert_close(
            &format!("grad {name}"),
            &out[&format!("grad.enc.{name}")],
            &floats(want),
        );
    }
    let buffers_fx = case["buffers"].as_object().expect("buffers");
    assert_eq!(buffers_fx.len(), model.buffer_specs().len());
    for (name, want) in buffers_fx {
        assert_close(name, &out[&format!("next.enc.{name}")], &floats(want));
    }

    // The same step through the trainer (SGD, lr 0.1): the loss, the running statistics it
    // ping-pongs, and the exported inference-mode encoder after the update.
    let sgd = OptimizerConfig::Sgd {
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    let (step_graph, step) = build_train_step_graph(
        &model,
        &StepConfig::new(4, loss_cfg, sgd).with_blocked_convs(block),
        DType::F32,
    )
    .expect("step graph");
    let step = StepGraph {
        model_bytes: step_graph.to_model_bytes(OPSET).expect("serialises"),
        ..step
    };
    let blocked_nodes = |g: &Graph| {
        g.nodes()
            .iter()
            .filter(|n| {
                matches!(
                    n.op,
                    Op::Conv {
                        blocked: Some(_),
                        ..
                    }
                )
            })
            .count()
    };
    if block.is_some() {
        // layer2's three stride-1 convolutions, forward and input gradient, in both graphs.
        assert_eq!(blocked_nodes(&g), 6);
        assert_eq!(blocked_nodes(&step_graph), 6);
    }
    assert_eq!(step.buffers.len(), model.buffer_specs().len());
    let rt = runtime();
    let enc_inputs = build_encoder(&model, ParamSource::Inputs).expect("encoder");
    let mut tr = Trainer::new(&rt, &step, &tensors, &single_thread())
        .expect("trainer")
        .with_encoder(&rt, &enc_inputs)
        .expect("encoder session");
    let half = 4 * 3 * 16 * 16;
    let l = tr.step(&x[..half], &x[half..], 0.1).expect("step");
    assert_close("trainer loss", &[f64::from(l)], &[want_loss]);
    let after = tr.params().expect("params");
    for (name, want) in buffers_fx {
        let t = after
            .iter()
            .find(|t| t.name == format!("enc.{name}"))
            .expect("buffer in params()");
        let got: Vec<f64> = t.data.iter().map(|&v| f64::from(v)).collect();
        assert_close(&format!("trainer {name}"), &got, &floats(want));
    }
    let want_eval = floats(&case["eval_embedding"]);
    let live = tr.embed(&x[..half], 4).expect("embed");
    let live: Vec<f64> = live.iter().map(|&v| f64::from(v)).collect();
    assert_close("live encoder after one step", &live, &want_eval);
    let baked = build_encoder(&model, ParamSource::Baked(&after)).expect("baked encoder");
    let mut emb = Embedder::new(&rt, &baked, &single_thread()).expect("embedder");
    let u = emb.embed(&x[..half], 3).expect("embed");
    let u: Vec<f64> = u.iter().map(|&v| f64::from(v)).collect();
    assert_close("exported encoder after one step", &u, &want_eval);

    // Both graphs pass the ONNX checker; the exported one runs BatchNorm in inference mode.
    let dir = tempfile::tempdir().expect("tempdir");
    let (sp, ep) = (
        dir.path().join("step.onnx"),
        dir.path().join("encoder.onnx"),
    );
    std::fs::write(&sp, &step.model_bytes).expect("write");
    std::fs::write(&ep, &baked.model_bytes).expect("write");
    let report = run_python(
        r#"
import sys, onnx
for path in sys.argv[1:]:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    ops = {n.op_type for n in m.graph.node}
    print(path.rsplit('/', 1)[-1], 'BatchNormalization' in ops, 'ok')
"#,
        &[&sp.to_string_lossy(), &ep.to_string_lossy()],
    );
    assert!(report.contains("step.onnx False ok"), "{report}");
    assert!(report.contains("encoder.onnx True ok"), "{report}");
}

#[test]
fn imagenet_stem_matches_pytorch() {
    let fx: Value = serde_json::from_str(FIXTURE).expect("fixture parses");
    let case = &fx["cases"]["imagenet"];
    let model = resnet(Stem::Imagenet, 0.125, ResNetDepth::R18, 16);
    assert_eq!(names_and_shapes(&model), fixture_names(&case["names"]));
    let tensors = fixture_params(&model);
    let x = det(1000, 4 * 3 * 16 * 16, -1.0, 1.0);
    let enc = build_encoder(&model, ParamSource::Baked(&tensors)).expect("encoder");
    let mut emb = Embedder::new(&runtime(), &enc, &single_thread()).expect("embedder");
    let u: Vec<f64> = emb
        .embed(&x, 4)
        .expect("embed")
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    assert_close(
        "imagenet-stem embedding",
        &u,
        &floats(&case["eval_embedding"]),
    );
}
