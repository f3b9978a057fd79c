//! Optimizers as graph nodes, and learning-rate schedules computed on the host.
//!
//! The update takes, per parameter, the current value, its gradient and the optimizer state
//! (momentum buffer, or Adam's first and second moments), plus two scalar graph inputs: the
//! 1-based step count `t` (float, used for Adam's bias correction) and the learning rate (so a
//! schedule is just a different number fed each step). It yields the new parameter and state
//! values. Formulas follow PyTorch's `torch.optim.SGD`, `Adam` (L2 penalty added to the
//! gradient) and `AdamW` (decoupled decay `p *= 1 - lr * wd` before the Adam step), so results
//! can be compared one-to-one.
//!
//! Cost matters here: the update is elementwise over every parameter and memory-bound, so
//! per-step scalars (bias corrections, step size) are computed once on rank-0 values and each
//! tensor sees the minimal chain of elementwise operations; for Adam/AdamW on f32 that chain
//! runs as one pass of cbound's fused kernel (see [`crate::fused`]).

use super::graph::{DType, Graph, GraphError, GraphResult, Op, ValueId};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerConfig {
    /// SGD; `momentum = 0` keeps no state. `nesterov` requires `momentum > 0`.
    Sgd {
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
    },
    /// Adam with optional L2 penalty (`g += wd * p`).
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay.
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// PyTorch's Adam defaults.
    pub fn adam() -> OptimizerConfig {
        OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// PyTorch's AdamW defaults (weight decay 0.01).
    pub fn adamw() -> OptimizerConfig {
        OptimizerConfig::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }

    /// Names of the per-parameter state slots, in the order the step graph expects them.
    pub fn state_slots(&self) -> &'static [&'static str] {
        match self {
            OptimizerConfig::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            OptimizerConfig::Sgd { .. } => &["momentum"],
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => &["m", "v"],
        }
    }

    /// Name of the state tensor `slot` of parameter `param`.
    pub fn state_name(slot: &str, param: &str) -> String {
        format!("opt.{slot}.{param}")
    }

    fn validate(&self) -> GraphResult<()> {
        let bad = |detail: String| {
            Err(GraphError::Invalid {
                op: "optimizer",
                detail,
            })
        };
        let beta_ok = |b: f64| (0.0..1.0).contains(&b);
        match *self {
            OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                nesterov,
            } => {
                if !(0.0..1.0).contains(&momentum)
                    || weight_decay < 0.0
                    || (nesterov && momentum == 0.0)
                {
                    return bad(format!(
                        "SGD needs 0 <= momentum < 1, weight_decay >= 0, and momentum > 0 for Nesterov; got {momentum}, {weight_decay}, {nesterov}"
                    ));
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            }
            | OptimizerConfig::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let eps_ok = eps.is_finite() && eps > 0.0;
                if !beta_ok(beta1) || !beta_ok(beta2) || !eps_ok || weight_decay < 0.0 {
                    return bad(format!(
                        "Adam needs betas in [0, 1), eps > 0 and weight_decay >= 0; got {beta1}, {beta2}, {eps}, {weight_decay}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// New parameter and state values, in the order of the inputs.
#[derive(Debug, Clone)]
pub struct UpdateOutputs {
    pub params: Vec<ValueId>,
    /// Slot-major per parameter: for Adam `[m_0, v_0, m_1, v_1, ...]`.
    pub state: Vec<ValueId>,
}

/// Graph values the update reads.
#[derive(Debug, Clone, Copy)]
pub struct UpdateInputs<'a> {
    pub params: &'a [ValueId],
    /// Gradients multiplied by `grad_scale` (see [`OptimizerConfig::gradient_prescale`]).
    pub grads: &'a [ValueId],
    pub grad_scale: f64,
    /// Laid out like [`UpdateOutputs::state`].
    pub state: &'a [ValueId],
    /// 1-based step count, rank 0, dtype of the parameters.
    pub step: ValueId,
    /// Learning rate, rank 0, dtype of the parameters.
    pub lr: ValueId,
}

impl OptimizerConfig {
    /// The factor the backward pass should fold into its seed (free there). For Adam it is
    /// `sqrt(1 - beta2)`, which makes the second-moment update `v' = b2 v + gs^2` need no
    /// scaling pass; see [`OptimizerConfig::state_scales`] for the first moment.
    pub fn gradient_prescale(&self) -> f64 {
        match *self {
            OptimizerConfig::Sgd { .. } => 1.0,
            OptimizerConfig::Adam { beta2, .. } | OptimizerConfig::AdamW { beta2, .. } => {
                (1.0 - beta2).sqrt()
            }
        }
    }

    /// Per state slot, the factor between the tensor the step graph keeps and the
    /// conventional (PyTorch) quantity, for gradients pre-multiplied by `grad_scale`.
    ///
    /// Adam keeps `m~ = k m` with `k = grad_scale / (1 - beta1)`, so that
    /// `m~' = beta1 m~ + grad_scale * g` is a single multiply-add with no scaling of the
    /// gradient (`k` is folded into the rank-0 step size). Checkpoints store `m~ / k`.
    pub fn state_scales(&self, grad_scale: f64) -> Vec<f64> {
        match *self {
            OptimizerConfig::Sgd { .. } => vec![1.0; self.state_slots().len()],
            OptimizerConfig::Adam { beta1, .. } | OptimizerConfig::AdamW { beta1, .. } => {
                vec![grad_scale / (1.0 - beta1), 1.0]
            }
        }
    }
}

/// Emits one optimizer step. Adam and AdamW on f32 parameters use cbound's fused kernel
/// ([`Op::AdamUpdate`], one pass per parameter); f64 graphs (the gradient tests) get the
/// equivalent ai.onnx node chain.
pub fn apply_update(
    g: &mut Graph,
    cfg: &OptimizerConfig,
    inp: &UpdateInputs<'_>,
) -> GraphResult<UpdateOutputs> {
    emit_update(g, cfg, inp, true)
}

fn emit_update(
    g: &mut Graph,
    cfg: &OptimizerConfig,
    inp: &UpdateInputs<'_>,
    fuse: bool,
) -> GraphResult<UpdateOutputs> {
    cfg.validate()?;
    let UpdateInputs {
        params,
        grads,
        grad_scale,
        state,
        step,
        lr,
    } = *inp;
    let slots = cfg.state_slots().len();
    if params.len() != grads.len() || state.len() != params.len() * slots {
        return Err(GraphError::Invalid {
            op: "optimizer",
            detail: format!(
                "{} params, {} grads and {} state tensors do not match ({} slots per parameter)",
                params.len(),
                grads.len(),
                state.len(),
                slots
            ),
        });
    }
    if !(grad_scale.is_finite() && grad_scale > 0.0) {
        return Err(GraphError::Invalid {
            op: "optimizer",
            detail: format!("gradient scale must be positive, is {grad_scale}"),
        });
    }
    // `x * c`, skipping the node when `c == 1`.
    let scale = |g: &mut Graph, x: ValueId, c: f64| if c == 1.0 { Ok(x) } else { g.scale(x, c) };
    let mut new_params = Vec::with_capacity(params.len());
    let mut new_state = Vec::with_capacity(state.len());
    match *cfg {
        OptimizerConfig::Sgd {
            momentum,
            weight_decay,
            nesterov,
        } => {
            for (i, (&p, &gr)) in params.iter().zip(grads).enumerate() {
                let gr = scale(g, gr, 1.0 / grad_scale)?;
                let gr = if weight_decay > 0.0 {
                    let d = g.scale(p, weight_decay)?;
                    g.add(gr, d)?
                } else {
                    gr
                };
                let dir = if momentum > 0.0 {
                    let bm = g.scale(state[i], momentum)?;
                    let buf = g.add(bm, gr)?;
                    new_state.push(buf);
                    if nesterov {
                        let mb = g.scale(buf, momentum)?;
                        g.add(gr, mb)?
                    } else {
                        buf
                    }
                } else {
                    gr
                };
                let upd = g.mul(dir, lr)?;
                new_params.push(g.sub(p, upd)?);
            }
        }
        OptimizerConfig::Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
        }
        | OptimizerConfig::AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
        } => {
            let decoupled = matches!(cfg, OptimizerConfig::AdamW { .. });
            // PyTorch: p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), rewritten as
            // p -= (lr sqrt(bc2)/(bc1 k)) * m~ / (sqrt(v) + eps sqrt(bc2)) with m~ = k m (see
            // `state_scales`), so only rank-0 values carry the bias corrections and scales.
            // As ai.onnx nodes, per tensor: 2 elementwise passes for m~, 3 for v (with the
            // default prescale), 5 for p; 10 in all. On f32 the fused kernel does the same
            // operations in one pass (no ai.onnx op set can do fewer than the 10).
            let b1 = g.scalar_like(step, beta1)?;
            let b2 = g.scalar_like(step, beta2)?;
            let one = g.scalar_like(step, 1.0)?;
            let b1t = g.pow(b1, step)?;
            let b2t = g.pow(b2, step)?;
            let bc1 = g.sub(one, b1t)?;
            let bc2 = g.sub(one, b2t)?;
            let sqrt_bc2 = g.sqrt(bc2)?;
            let lr_sqrt = g.mul(lr, sqrt_bc2)?;
            let k = grad_scale / (1.0 - beta1);
            let step_size = g.div(lr_sqrt, bc1)?;
            let step_size = g.scale(step_size, 1.0 / k)?;
            let eps_hat = g.scale(sqrt_bc2, eps)?;
            let decay = if decoupled && weight_decay > 0.0 {
                let lw = g.scale(lr, weight_decay)?;
                Some(g.sub(one, lw)?)
            } else {
                None
            };
            let s = grad_scale;
            let fused = Op::AdamUpdate {
                beta1: beta1 as f32,
                beta2: beta2 as f32,
                g2_scale: ((1.0 - beta2) / (s * s)) as f32,
                l2: if decoupled {
                    0.0
                } else {
                    (s * weight_decay) as f32
                },
            };
            let fuse = fuse && g.dtype(step) == DType::F32;
            let decay = match (fuse, decay) {
                (true, None) => Some(one),
                (_, d) => d,
            };
            for (i, (&p, &gr)) in params.iter().zip(grads).enumerate() {
                let (m, v) = (state[2 * i], state[2 * i + 1]);
                if fuse {
                    let d = decay.unwrap_or(one);
                    let [p_new, m_new, v_new] =
                        g.adam_update([p, gr, m, v], [step_size, eps_hat, d], fused.clone())?;
                    new_params.push(p_new);
                    new_state.push(m_new);
                    new_state.push(v_new);
                    continue;
                }
                // gs = s * (g + wd p) for the coupled L2 penalty.
                let gs = if !decoupled && weight_decay > 0.0 {
                    let d = g.scale(p, s * weight_decay)?;
                    g.add(gr, d)?
                } else {
                    gr
                };
                let m1 = g.scale(m, beta1)?;
                let m_new = g.add(m1, gs)?;
                let v1 = g.scale(v, beta2)?;
                let gg = g.mul(gs, gs)?;
                let g2 = scale(g, gg, (1.0 - beta2) / (s * s))?;
                let v_new = g.add(v1, g2)?;
                let sv = g.sqrt(v_new)?;
                let denom = g.add(sv, eps_hat)?;
                let ratio = g.div(m_new, denom)?;
                let upd = g.mul(ratio, step_size)?;
                let base = match decay {
                    Some(d) => g.mul(p, d)?,
                    None => p,
                };
                new_params.push(g.sub(base, upd)?);
                new_state.push(m_new);
                new_state.push(v_new);
            }
        }
    }
    Ok(UpdateOutputs {
        params: new_params,
        state: new_state,
    })
}

/// Learning-rate schedules, evaluated on the host for the 1-based step `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    Constant {
        lr: f64,
    },
    /// Linear ramp from `lr / warmup` to `lr` over the first `warmup` steps, then constant.
    LinearWarmup {
        lr: f64,
        warmup: u64,
    },
    /// Linear warm-up, then cosine decay from `lr` to `min_lr` at step `total`.
    WarmupCosine {
        lr: f64,
        warmup: u64,
        total: u64,
        min_lr: f64,
    },
}

impl LrSchedule {
    pub fn lr_at(&self, t: u64) -> f64 {
        let warm = |lr: f64, warmup: u64| {
            if warmup > 0 && t < warmup {
                lr * t.max(1) as f64 / warmup as f64
            } else {
                lr
            }
        };
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::LinearWarmup { lr, warmup } => warm(lr, warmup),
            LrSchedule::WarmupCosine {
                lr,
                warmup,
                total,
                min_lr,
            } => {
                if warmup > 0 && t < warmup {
                    return warm(lr, warmup);
                }
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = ((t.saturating_sub(warmup)) as f64 / span).clamp(0.0, 1.0);
                min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::DType;
    use crate::testutil::{run_graph, Data};

    /// Two steps of `cfg` on a 3-element tensor through ONNX Runtime (f64). Gradients are fed
    /// pre-multiplied by the optimizer's prescale, as the step graph produces them.
    fn two_steps(
        cfg: &OptimizerConfig,
        p0: &[f64],
        grads: [&[f64]; 2],
        lrs: [f64; 2],
    ) -> Vec<Vec<f64>> {
        let s = cfg.gradient_prescale();
        let n = p0.len();
        let slots = cfg.state_slots().len();
        let mut g = Graph::new("opt");
        let p = g.input("p", DType::F64, &[n]).expect("input");
        let gr = g.input("g", DType::F64, &[n]).expect("input");
        let state: Vec<ValueId> = (0..slots)
            .map(|k| g.input(&format!("s{k}"), DType::F64, &[n]).expect("input"))
            .collect();
        let t = g.input("t", DType::F64, &[]).expect("input");
        let lr = g.input("lr", DType::F64, &[]).expect("input");
        let out = apply_update(
            &mut g,
            cfg,
            &UpdateInputs {
                params: &[p],
                grads: &[gr],
                grad_scale: s,
                state: &state,
                step: t,
                lr,
            },
        )
        .expect("update builds");
        g.output(out.params[0], "p_next").expect("output");
        for (k, s) in out.state.iter().enumerate() {
            g.output(*s, &format!("s{k}_next")).expect("output");
        }
        let mut params = p0.to_vec();
        let mut st: Vec<Vec<f64>> = vec![vec![0.0; n]; slots];
        let mut history = Vec::new();
        for step in 0..2 {
            let mut feeds = vec![
                (p, Data::F64(params.clone())),
                (gr, Data::F64(grads[step].iter().map(|x| x * s).collect())),
                (t, Data::F64(vec![(step + 1) as f64])),
                (lr, Data::F64(vec![lrs[step]])),
            ];
            for (k, s) in state.iter().enumerate() {
                feeds.push((*s, Data::F64(st[k].clone())));
            }
            let res = run_graph(&g, &feeds);
            params = res["p_next"].clone();
            for (k, s) in st.iter_mut().enumerate() {
                *s = res[&format!("s{k}_next")].clone();
            }
            history.push(params.clone());
        }
        // Report the conventional state (PyTorch's buffers) after the second step.
        for (k, scale) in cfg.state_scales(s).iter().enumerate() {
            history.push(st[k].iter().map(|x| x / scale).collect());
        }
        history
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    const P0: [f64; 3] = [0.5, -1.0, 2.0];
    const G1: [f64; 3] = [0.1, -0.2, 0.3];
    const G2: [f64; 3] = [-0.4, 0.05, 0.2];

    #[test]
    fn sgd_momentum_and_nesterov_by_hand() {
        let (mu, wd, lrs) = (0.9, 0.1, [0.1, 0.05]);
        for nesterov in [false, true] {
            let cfg = OptimizerConfig::Sgd {
                momentum: mu,
                weight_decay: wd,
                nesterov,
            };
            let got = two_steps(&cfg, &P0, [&G1, &G2], lrs);
            let mut p = P0.to_vec();
            let mut buf = [0.0; 3];
            for (step, grad) in [G1, G2].iter().enumerate() {
                for i in 0..3 {
                    let gi = grad[i] + wd * p[i];
                    buf[i] = mu * buf[i] + gi;
                    let dir = if nesterov { gi + mu * buf[i] } else { buf[i] };
                    p[i] -= lrs[step] * dir;
                }
                close(&got[step], &p);
            }
            close(&got[2], &buf);
        }
        let plain = OptimizerConfig::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        };
        let got = two_steps(&plain, &P0, [&G1, &G2], [0.1, 0.1]);
        let expect: Vec<f64> = (0..3).map(|i| P0[i] - 0.1 * G1[i] - 0.1 * G2[i]).collect();
        close(&got[1], &expect);
    }

    #[test]
    fn adam_and_adamw_by_hand() {
        let (b1, b2, eps, wd, lrs) = (0.9, 0.999, 1e-8, 0.1, [1e-2, 5e-3]);
        for decoupled in [false, true] {
            let cfg = if decoupled {
                OptimizerConfig::AdamW {
                    beta1: b1,
                    beta2: b2,
                    eps,
                    weight_decay: wd,
                }
            } else {
                OptimizerConfig::Adam {
                    beta1: b1,
                    beta2: b2,
                    eps,
                    weight_decay: wd,
                }
            };
            let got = two_steps(&cfg, &P0, [&G1, &G2], lrs);
            let (mut p, mut m, mut v) = (P0.to_vec(), [0.0; 3], [0.0; 3]);
            for (step, grad) in [G1, G2].iter().enumerate() {
                let t = (step + 1) as i32;
                let lr = lrs[step];
                for i in 0..3 {
                    let gi = if decoupled {
                        grad[i]
                    } else {
                        grad[i] + wd * p[i]
                    };
                    if decoupled {
                        p[i] *= 1.0 - lr * wd;
                    }
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    let mhat = m[i] / (1.0 - b1.powi(t));
                    let vhat = v[i] / (1.0 - b2.powi(t));
                    // PyTorch: lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) == lr * mhat / (sqrt(vhat) + eps).
                    p[i] -= lr * mhat / (vhat.sqrt() + eps);
                }
                close(&got[step], &p);
            }
            close(&got[2], &m);
            close(&got[3], &v);
        }
    }

    /// One f32 step of `cfg` through the fused kernel or the node chain, on `n` elements with
    /// non-zero state; returns `[p', m', v']`.
    fn f32_step(cfg: &OptimizerConfig, n: usize, fuse: bool) -> Vec<Vec<f64>> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let s = cfg.gradient_prescale();
        let mut g = Graph::new("opt32");
        let names = ["p", "g", "m", "v"];
        let vals: Vec<ValueId> = names
            .iter()
            .map(|nm| g.input(nm, DType::F32, &[n]).expect("input"))
            .collect();
        let t = g.input("t", DType::F32, &[]).expect("input");
        let lr = g.input("lr", DType::F32, &[]).expect("input");
        let out = emit_update(
            &mut g,
            cfg,
            &UpdateInputs {
                params: &vals[..1],
                grads: &vals[1..2],
                grad_scale: s,
                state: &vals[2..],
                step: t,
                lr,
            },
            fuse,
        )
        .expect("update builds");
        let fused_nodes = g
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::AdamUpdate { .. }))
            .count();
        assert_eq!(fused_nodes, usize::from(fuse));
        g.output(out.params[0], "p_next").expect("output");
        g.output(out.state[0], "m_next").expect("output");
        g.output(out.state[1], "v_next").expect("output");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut normal = |scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    scale * z
                })
                .collect::<Vec<f32>>()
        };
        let v: Vec<f32> = normal(1e-3).iter().map(|x| x * x).collect();
        let feeds = vec![
            (vals[0], Data::F32(normal(1.0))),
            (vals[1], Data::F32(normal(0.05))),
            (vals[2], Data::F32(normal(0.01))),
            (vals[3], Data::F32(v)),
            (t, Data::F32(vec![3.0])),
            (lr, Data::F32(vec![1e-3])),
        ];
        let res = run_graph(&g, &feeds);
        ["p_next", "m_next", "v_next"]
            .iter()
            .map(|k| res[*k].clone())
            .collect()
    }

    /// The fused kernel does the chain's f32 operations in the chain's order: same bits, on a
    /// tensor of several parallel chunks.
    #[test]
    fn fused_adam_matches_the_node_chain_bitwise() {
        let n = 3 * (1 << 15) + 17;
        for cfg in [
            OptimizerConfig::adam(),
            OptimizerConfig::Adam {
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 0.1,
            },
            OptimizerConfig::adamw(),
        ] {
            let fused = f32_step(&cfg, n, true);
            let chain = f32_step(&cfg, n, false);
            for (k, (a, b)) in fused.iter().zip(&chain).enumerate() {
                let differing = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits());
                assert_eq!(differing.count(), 0, "{cfg:?}, output {k}");
            }
            // The step moved the parameters (the comparison is not between two no-ops).
            assert!(fused[1].iter().any(|&m| m != 0.0), "{cfg:?}");
        }
    }

    #[test]
    fn invalid_hyperparameters_are_rejected() {
        let mut g = Graph::new("opt");
        let p = g.input("p", DType::F32, &[2]).expect("input");
        let t = g.input("t", DType::F32, &[]).expect("input");
        let bad = OptimizerConfig::Adam {
            beta1: 1.0,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let inputs = UpdateInputs {
            params: &[p],
            grads: &[p],
            grad_scale: 1.0,
            state: &[p, p],
            step: t,
            lr: t,
        };
        assert!(apply_update(&mut g, &bad, &inputs).is_err());
    }

    #[test]
    fn schedules() {
        let c = LrSchedule::Constant { lr: 0.1 };
        assert_eq!(c.lr_at(1), 0.1);
        let w = LrSchedule::LinearWarmup { lr: 1.0, warmup: 4 };
        assert_eq!(
            [w.lr_at(1), w.lr_at(2), w.lr_at(4), w.lr_at(100)],
            [0.25, 0.5, 1.0, 1.0]
        );
        let cos = LrSchedule::WarmupCosine {
            lr: 1.0,
            warmup: 10,
            total: 110,
            min_lr: 0.0,
        };
        assert!((cos.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((cos.lr_at(60) - 0.5).abs() < 1e-12);
        assert!(cos.lr_at(110).abs() < 1e-12);
        assert!(cos.lr_at(500).abs() < 1e-12);
    }
}
