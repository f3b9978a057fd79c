//! Optimizers as graph nodes, and learning-rate schedules computed on the host.
//!
//! The update takes, per parameter, the current value, its gradient and the optimizer state
//! (momentum buffer, or Adam's first and second moments), plus two scalar graph inputs: the
//! 1-based step count `t` (float, used for Adam's bias correction) and the learning rate (so a
//! schedule is just a different number fed each step). It yields the new parameter and state
//! values. Formulas follow PyTorch's `torch.optim.SGD`, `Adam` (L2 penalty added to the
//! gradient) and `AdamW` (decoupled decay `p *= 1 - lr * wd` before the Adam step), so results
//! can be compared one-to-one, and LARS follows the SimCLR reference (see
//! [`OptimizerConfig::Lars`]).
//!
//! Parameter groups: [`apply_update_grouped`] exempts chosen parameters (biases and
//! normalisation parameters, in the standard recipes) from weight decay and from LARS's
//! trust-ratio adaptation; [`apply_update`] treats every parameter alike.
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
    /// LARS (You, Gitman & Ginsburg 2017) as the SimCLR reference implements it
    /// (google-research/simclr `lars_optimizer.py`, classic momentum, no Nesterov). Per
    /// parameter tensor `w` with gradient `g`: `g' = g + wd w`, trust ratio
    /// `r = eta ||w|| / ||g'||` (1 where either norm is 0), `v = momentum v + lr r g'`,
    /// `w -= v`. The momentum buffer `v` holds the learning rate (as in SimCLR; PyTorch-style
    /// implementations such as solo-learn's apply `lr` after the buffer, which differs under a
    /// schedule). An exempt parameter (see [`apply_update_grouped`]) gets neither the decay
    /// nor the ratio: `v = momentum v + lr g`.
    Lars {
        momentum: f64,
        eta: f64,
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
            OptimizerConfig::Lars { momentum, .. } if *momentum == 0.0 => &[],
            OptimizerConfig::Lars { .. } => &["momentum"],
        }
    }

    /// The settings an exempt parameter gets: no weight decay (and, for LARS, no trust ratio,
    /// which [`apply_update_grouped`] handles per parameter).
    fn exempt(&self) -> OptimizerConfig {
        let mut cfg = *self;
        match &mut cfg {
            OptimizerConfig::Sgd { weight_decay, .. }
            | OptimizerConfig::Adam { weight_decay, .. }
            | OptimizerConfig::AdamW { weight_decay, .. }
            | OptimizerConfig::Lars { weight_decay, .. } => *weight_decay = 0.0,
        }
        cfg
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
            OptimizerConfig::Lars {
                momentum,
                eta,
                weight_decay,
            } => {
                let ok = (0.0..1.0).contains(&momentum)
                    && eta.is_finite()
                    && eta > 0.0
                    && weight_decay.is_finite()
                    && weight_decay >= 0.0;
                if !ok {
                    return bad(format!(
                        "LARS needs 0 <= momentum < 1, eta > 0 and weight_decay >= 0; got {momentum}, {eta}, {weight_decay}"
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
            OptimizerConfig::Sgd { .. } | OptimizerConfig::Lars { .. } => 1.0,
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
            OptimizerConfig::Sgd { .. } | OptimizerConfig::Lars { .. } => {
                vec![1.0; self.state_slots().len()]
            }
            OptimizerConfig::Adam { beta1, .. } | OptimizerConfig::AdamW { beta1, .. } => {
                vec![grad_scale / (1.0 - beta1), 1.0]
            }
        }
    }
}

/// The hyperparameters are valid and the inputs line up with the optimizer's state slots.
fn check_update(cfg: &OptimizerConfig, inp: &UpdateInputs<'_>) -> GraphResult<()> {
    cfg.validate()?;
    let UpdateInputs {
        params,
        grads,
        grad_scale,
        state,
        ..
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
    Ok(())
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
    check_update(cfg, inp)?;
    let UpdateInputs {
        params,
        grads,
        grad_scale,
        state,
        step,
        lr,
    } = *inp;
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
            let fuse = fuse && g.custom_kernels() && g.dtype(step) == DType::F32;
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
        OptimizerConfig::Lars { .. } => {
            return lars_update(g, cfg, inp, &[]);
        }
    }
    Ok(UpdateOutputs {
        params: new_params,
        state: new_state,
    })
}

/// Emits one optimizer step in which parameter `i` is exempt from weight decay and from
/// LARS's trust-ratio adaptation where `exempt[i]` (biases and normalisation parameters in
/// the standard recipes). With no parameter exempt (`exempt` empty or all false) this is
/// [`apply_update`], node for node.
pub fn apply_update_grouped(
    g: &mut Graph,
    cfg: &OptimizerConfig,
    inp: &UpdateInputs<'_>,
    exempt: &[bool],
) -> GraphResult<UpdateOutputs> {
    if !exempt.contains(&true) {
        return apply_update(g, cfg, inp);
    }
    check_update(cfg, inp)?;
    let n = inp.params.len();
    if exempt.len() != n {
        return Err(GraphError::Invalid {
            op: "optimizer",
            detail: format!("{} exemption flags for {n} parameters", exempt.len()),
        });
    }
    if let OptimizerConfig::Lars { .. } = cfg {
        return lars_update(g, cfg, inp, exempt);
    }
    // Two groups, each a plain update with its own settings (the exempt one without weight
    // decay), put back in input order. Adam's few rank-0 step-size nodes are emitted per group.
    let slots = cfg.state_slots().len();
    let mut params = vec![None; n];
    let mut state = vec![None; n * slots];
    for (is_exempt, group_cfg) in [(false, *cfg), (true, cfg.exempt())] {
        let idx: Vec<usize> = (0..n).filter(|&i| exempt[i] == is_exempt).collect();
        if idx.is_empty() {
            continue;
        }
        let pick = |all: &[ValueId]| -> Vec<ValueId> { idx.iter().map(|&i| all[i]).collect() };
        let group_state: Vec<ValueId> = idx
            .iter()
            .flat_map(|&i| inp.state[i * slots..(i + 1) * slots].iter().copied())
            .collect();
        let out = apply_update(
            g,
            &group_cfg,
            &UpdateInputs {
                params: &pick(inp.params),
                grads: &pick(inp.grads),
                state: &group_state,
                ..*inp
            },
        )?;
        for (k, &i) in idx.iter().enumerate() {
            params[i] = Some(out.params[k]);
            for s in 0..slots {
                state[i * slots + s] = Some(out.state[k * slots + s]);
            }
        }
    }
    let incomplete = || GraphError::Invalid {
        op: "optimizer",
        detail: "a parameter group left a parameter without its update".into(),
    };
    Ok(UpdateOutputs {
        params: params
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(incomplete)?,
        state: state
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(incomplete)?,
    })
}

/// LARS's update (see [`OptimizerConfig::Lars`]); `cfg` and `inp` are checked by the caller.
/// Per adapted tensor: two squared-norm reductions and a handful of rank-0 nodes for the
/// trust ratio, then 4 elementwise passes (decay, scaled gradient, momentum, parameter).
fn lars_update(
    g: &mut Graph,
    cfg: &OptimizerConfig,
    inp: &UpdateInputs<'_>,
    exempt: &[bool],
) -> GraphResult<UpdateOutputs> {
    let OptimizerConfig::Lars {
        momentum,
        eta,
        weight_decay,
    } = *cfg
    else {
        return Err(GraphError::Invalid {
            op: "optimizer",
            detail: format!("LARS's update called with {cfg:?}"),
        });
    };
    let UpdateInputs {
        params,
        grads,
        grad_scale,
        state,
        lr,
        ..
    } = *inp;
    let zero = g.scalar_like(lr, 0.0)?;
    let one = g.scalar_like(lr, 1.0)?;
    let mut new_params = Vec::with_capacity(params.len());
    let mut new_state = Vec::with_capacity(state.len());
    for (i, (&p, &gr)) in params.iter().zip(grads).enumerate() {
        let gr = if grad_scale == 1.0 {
            gr
        } else {
            g.scale(gr, 1.0 / grad_scale)?
        };
        let adapt = !exempt.get(i).copied().unwrap_or(false);
        let (gr, step_lr) = if adapt {
            let gr = if weight_decay > 0.0 {
                let d = g.scale(p, weight_decay)?;
                g.add(gr, d)?
            } else {
                gr
            };
            let norm = |g: &mut Graph, x: ValueId| -> GraphResult<ValueId> {
                let sq = g.mul(x, x)?;
                let s = g.reduce_sum_all(sq)?;
                g.sqrt(s)
            };
            let w_norm = norm(g, p)?;
            let g_norm = norm(g, gr)?;
            // SimCLR: where(||w|| > 0, where(||g'|| > 0, eta ||w|| / ||g'||, 1), 1); the
            // division's inf/NaN at a zero norm is never selected.
            let ratio = g.div(w_norm, g_norm)?;
            let ratio = g.scale(ratio, eta)?;
            let g_pos = g.greater(g_norm, zero)?;
            let ratio = g.where_(g_pos, ratio, one)?;
            let w_pos = g.greater(w_norm, zero)?;
            let ratio = g.where_(w_pos, ratio, one)?;
            (gr, g.mul(lr, ratio)?)
        } else {
            (gr, lr)
        };
        let upd = g.mul(gr, step_lr)?;
        let dir = if momentum > 0.0 {
            let bm = g.scale(state[i], momentum)?;
            let v = g.add(bm, upd)?;
            new_state.push(v);
            v
        } else {
            upd
        };
        new_params.push(g.sub(p, dir)?);
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

    /// `steps` optimizer steps of `cfg` on several tensors through ONNX Runtime in `dtype`,
    /// with `exempt` passed to [`apply_update_grouped`]. `grads[step][param]` are fed
    /// pre-multiplied by the optimizer's prescale. Returns the parameters after every step and
    /// the conventional state after the last, slot-major per parameter.
    fn run_grouped(
        cfg: &OptimizerConfig,
        dtype: DType,
        init: &[(Vec<usize>, Vec<f64>)],
        grads: &[Vec<Vec<f64>>],
        lrs: &[f64],
        exempt: &[bool],
    ) -> (Vec<Vec<Vec<f64>>>, Vec<Vec<f64>>) {
        let s = cfg.gradient_prescale();
        let slots = cfg.state_slots().len();
        let mut g = Graph::new("opt");
        let mut ps = Vec::new();
        let mut gs = Vec::new();
        let mut st = Vec::new();
        for (i, (shape, _)) in init.iter().enumerate() {
            ps.push(g.input(&format!("p{i}"), dtype, shape).expect("input"));
            gs.push(g.input(&format!("g{i}"), dtype, shape).expect("input"));
            for k in 0..slots {
                st.push(g.input(&format!("s{i}_{k}"), dtype, shape).expect("input"));
            }
        }
        let t = g.input("t", dtype, &[]).expect("input");
        let lr = g.input("lr", dtype, &[]).expect("input");
        let inputs = UpdateInputs {
            params: &ps,
            grads: &gs,
            grad_scale: s,
            state: &st,
            step: t,
            lr,
        };
        let out = apply_update_grouped(&mut g, cfg, &inputs, exempt).expect("update builds");
        for (i, v) in out.params.iter().enumerate() {
            g.output(*v, &format!("p{i}_next")).expect("output");
        }
        for (j, v) in out.state.iter().enumerate() {
            g.output(*v, &format!("s{j}_next")).expect("output");
        }
        let data = |x: &[f64]| match dtype {
            DType::F32 => Data::F32(x.iter().map(|&v| v as f32).collect()),
            _ => Data::F64(x.to_vec()),
        };
        let mut runner = crate::testutil::Runner::new(&g);
        let mut params: Vec<Vec<f64>> = init.iter().map(|(_, v)| v.clone()).collect();
        let mut state: Vec<Vec<f64>> = (0..st.len())
            .map(|j| vec![0.0; init[j / slots.max(1)].1.len()])
            .collect();
        let mut history = Vec::new();
        for (step, (grad, &l)) in grads.iter().zip(lrs).enumerate() {
            let mut feeds = vec![(t, data(&[(step + 1) as f64])), (lr, data(&[l]))];
            for i in 0..init.len() {
                feeds.push((ps[i], data(&params[i])));
                let scaled: Vec<f64> = grad[i].iter().map(|x| x * s).collect();
                feeds.push((gs[i], data(&scaled)));
            }
            for (j, v) in st.iter().enumerate() {
                feeds.push((*v, data(&state[j])));
            }
            let res = runner.run(&feeds);
            for (i, p) in params.iter_mut().enumerate() {
                *p = res[&format!("p{i}_next")].clone();
            }
            for (j, v) in state.iter_mut().enumerate() {
                *v = res[&format!("s{j}_next")].clone();
            }
            history.push(params.clone());
        }
        let scales = cfg.state_scales(s);
        for (j, v) in state.iter_mut().enumerate() {
            v.iter_mut().for_each(|x| *x /= scales[j % slots]);
        }
        (history, state)
    }

    #[derive(serde::Deserialize)]
    struct LarsFixture {
        cases: Vec<LarsCase>,
    }

    #[derive(serde::Deserialize)]
    struct LarsCase {
        name: String,
        momentum: f64,
        eta: f64,
        weight_decay: f64,
        exclude_bias_and_norm: bool,
        params: Vec<FixtureParam>,
        steps: Vec<FixtureStep>,
    }

    #[derive(serde::Deserialize)]
    struct FixtureParam {
        name: String,
        shape: Vec<usize>,
        role: String,
        init: Vec<f64>,
    }

    #[derive(serde::Deserialize)]
    struct FixtureStep {
        lr: f64,
        grads: Vec<Vec<f64>>,
        params_after: Vec<Vec<f64>>,
        momentum_after: Vec<Vec<f64>>,
    }

    /// Largest error of `got` against `want`, relative to the size of what the optimizer
    /// moved (`want - start`) or of `want`, whichever is larger, so that a wrong update is
    /// not hidden by parameters that barely move.
    fn rel_err(got: &[f64], want: &[f64], start: &[f64]) -> f64 {
        let moved = want
            .iter()
            .zip(start)
            .map(|(w, s)| (w - s).abs())
            .fold(0.0, f64::max);
        let size = want.iter().map(|w| w.abs()).fold(moved, f64::max);
        got.iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs() / size.max(f64::MIN_POSITIVE))
            .fold(0.0, f64::max)
    }

    /// LARS against the PyTorch implementation of the SimCLR reference in
    /// scripts/lars_fixture.py (tests/fixtures/lars_reference.json): 6 steps of a tiny MLP's
    /// four tensors, warm-up then cosine learning rates, biases exempt or adapted, one tensor
    /// starting at zero (trust ratio 1), with and without momentum. The graph carries its own
    /// parameters and state from step to step; only the gradients come from the fixture.
    #[test]
    fn lars_matches_the_pytorch_reference() {
        let text = include_str!("../../../tests/fixtures/lars_reference.json");
        let fixture: LarsFixture = serde_json::from_str(text).expect("fixture parses");
        assert_eq!(fixture.cases.len(), 3);
        for case in &fixture.cases {
            let cfg = OptimizerConfig::Lars {
                momentum: case.momentum,
                eta: case.eta,
                weight_decay: case.weight_decay,
            };
            let exempt: Vec<bool> = case
                .params
                .iter()
                .map(|p| case.exclude_bias_and_norm && p.role == "bias")
                .collect();
            let init: Vec<(Vec<usize>, Vec<f64>)> = case
                .params
                .iter()
                .map(|p| (p.shape.clone(), p.init.clone()))
                .collect();
            let grads: Vec<Vec<Vec<f64>>> = case.steps.iter().map(|s| s.grads.clone()).collect();
            let lrs: Vec<f64> = case.steps.iter().map(|s| s.lr).collect();
            // f64 shows the formula is the same; f32 is what training runs.
            for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-5)] {
                let (history, state) = run_grouped(&cfg, dtype, &init, &grads, &lrs, &exempt);
                for (k, step) in case.steps.iter().enumerate() {
                    for (i, p) in case.params.iter().enumerate() {
                        let err = rel_err(&history[k][i], &step.params_after[i], &p.init);
                        assert!(
                            err <= tol,
                            "{} {dtype:?} step {} {}: relative error {err:e}",
                            case.name,
                            k + 1,
                            p.name
                        );
                    }
                }
                let last = case.steps.last().expect("steps");
                if case.momentum > 0.0 {
                    for (i, p) in case.params.iter().enumerate() {
                        let zero = vec![0.0; p.init.len()];
                        let err = rel_err(&state[i], &last.momentum_after[i], &zero);
                        assert!(
                            err <= tol,
                            "{} {dtype:?} momentum of {}: {err:e}",
                            case.name,
                            p.name
                        );
                    }
                } else {
                    assert!(state.is_empty(), "LARS without momentum keeps no state");
                }
            }
        }
    }

    /// The exemption by hand: an exempt tensor moves by `lr * g` (no decay, no ratio), an
    /// adapted one by `lr * eta ||w|| / ||g + wd w|| * (g + wd w)`; a zero tensor and a zero
    /// gradient take ratio 1.
    #[test]
    fn lars_exempt_parameters_and_zero_norms_by_hand() {
        let (eta, wd, lr) = (0.1, 0.5, 0.2);
        let cfg = OptimizerConfig::Lars {
            momentum: 0.0,
            eta,
            weight_decay: wd,
        };
        let w = vec![3.0, 4.0];
        let gw = vec![1.0, -2.0];
        let init = vec![
            (vec![2], w.clone()),
            (vec![2], w.clone()),
            (vec![2], vec![0.0, 0.0]),
            (vec![2], w.clone()),
        ];
        // Parameter 3's gradient cancels its decay exactly: g + wd w = 0.
        let g3: Vec<f64> = w.iter().map(|x| -wd * x).collect();
        let grads = vec![vec![gw.clone(), gw.clone(), gw.clone(), g3]];
        let exempt = [false, true, false, false];
        let (history, _) = run_grouped(&cfg, DType::F64, &init, &grads, &[lr], &exempt);
        let gd: Vec<f64> = gw.iter().zip(&w).map(|(g, x)| g + wd * x).collect();
        let ratio = eta * 5.0 / (gd[0] * gd[0] + gd[1] * gd[1]).sqrt();
        let adapted: Vec<f64> = (0..2).map(|i| w[i] - lr * ratio * gd[i]).collect();
        let exempted: Vec<f64> = (0..2).map(|i| w[i] - lr * gw[i]).collect();
        let from_zero: Vec<f64> = gw.iter().map(|g| -lr * g).collect();
        close(&history[0][0], &adapted);
        close(&history[0][1], &exempted);
        close(&history[0][2], &from_zero);
        close(&history[0][3], &w);
    }

    /// SGD, Adam and AdamW with an exempt tensor: it follows the same optimizer without
    /// weight decay, the other tensor the optimizer with it, step for step and state included.
    #[test]
    fn exempt_parameters_get_no_weight_decay() {
        let lrs = [0.1, 0.05];
        let wd = 0.3;
        let cfgs = [
            OptimizerConfig::Sgd {
                momentum: 0.9,
                weight_decay: wd,
                nesterov: false,
            },
            OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
            },
            OptimizerConfig::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: wd,
            },
        ];
        let init = vec![(vec![3], P0.to_vec()), (vec![3], P0.to_vec())];
        let grads = vec![
            vec![G1.to_vec(), G1.to_vec()],
            vec![G2.to_vec(), G2.to_vec()],
        ];
        for cfg in cfgs {
            let (history, state) =
                run_grouped(&cfg, DType::F64, &init, &grads, &lrs, &[false, true]);
            let decayed = two_steps(&cfg, &P0, [&G1, &G2], lrs);
            let plain = two_steps(&cfg.exempt(), &P0, [&G1, &G2], lrs);
            assert_ne!(decayed[1], plain[1], "{cfg:?}: the decay must matter here");
            let slots = cfg.state_slots().len();
            for step in 0..2 {
                close(&history[step][0], &decayed[step]);
                close(&history[step][1], &plain[step]);
            }
            for k in 0..slots {
                close(&state[k], &decayed[2 + k]);
                close(&state[slots + k], &plain[2 + k]);
            }
        }
    }

    /// Without exemptions the grouped update is the plain one, node for node, so existing
    /// pipelines build byte-identical step graphs.
    #[test]
    fn no_exemption_is_the_plain_update_node_for_node() {
        for cfg in [
            OptimizerConfig::adam(),
            OptimizerConfig::adamw(),
            OptimizerConfig::Sgd {
                momentum: 0.9,
                weight_decay: 0.1,
                nesterov: false,
            },
        ] {
            let build = |exempt: Option<&[bool]>| {
                let mut g = Graph::new("opt");
                let slots = cfg.state_slots().len();
                let ps: Vec<ValueId> = (0..2)
                    .map(|i| g.input(&format!("p{i}"), DType::F32, &[4]).expect("input"))
                    .collect();
                let gs: Vec<ValueId> = (0..2)
                    .map(|i| g.input(&format!("g{i}"), DType::F32, &[4]).expect("input"))
                    .collect();
                let st: Vec<ValueId> = (0..2 * slots)
                    .map(|j| g.input(&format!("s{j}"), DType::F32, &[4]).expect("input"))
                    .collect();
                let t = g.input("t", DType::F32, &[]).expect("input");
                let lr = g.input("lr", DType::F32, &[]).expect("input");
                let inputs = UpdateInputs {
                    params: &ps,
                    grads: &gs,
                    grad_scale: cfg.gradient_prescale(),
                    state: &st,
                    step: t,
                    lr,
                };
                let out = match exempt {
                    Some(e) => apply_update_grouped(&mut g, &cfg, &inputs, e),
                    None => apply_update(&mut g, &cfg, &inputs),
                }
                .expect("update builds");
                for (i, v) in out.params.iter().chain(&out.state).enumerate() {
                    g.output(*v, &format!("o{i}")).expect("output");
                }
                g.to_model_bytes(crate::graph::OPSET).expect("serialises")
            };
            let plain = build(None);
            assert_eq!(build(Some(&[])), plain);
            assert_eq!(build(Some(&[false, false])), plain);
            assert_ne!(build(Some(&[false, true])), plain);
        }
    }

    #[test]
    fn invalid_lars_settings_are_rejected() {
        let mut g = Graph::new("opt");
        let p = g.input("p", DType::F32, &[2]).expect("input");
        let t = g.input("t", DType::F32, &[]).expect("input");
        for (momentum, eta, weight_decay) in [
            (1.0, 1e-3, 0.0),
            (-0.1, 1e-3, 0.0),
            (0.9, 0.0, 0.0),
            (0.9, -1e-3, 0.0),
            (0.9, f64::NAN, 0.0),
            (0.9, 1e-3, -1e-6),
        ] {
            let cfg = OptimizerConfig::Lars {
                momentum,
                eta,
                weight_decay,
            };
            let inputs = UpdateInputs {
                params: &[p],
                grads: &[p],
                grad_scale: 1.0,
                state: &[p][..cfg.state_slots().len()],
                step: t,
                lr: t,
            };
            assert!(
                apply_update(&mut g, &cfg, &inputs).is_err(),
                "{momentum}, {eta}, {weight_decay}"
            );
            assert!(apply_update_grouped(&mut g, &cfg, &inputs, &[true]).is_err());
        }
        // Exemption flags must match the parameters.
        let ok = OptimizerConfig::Lars {
            momentum: 0.9,
            eta: 1e-3,
            weight_decay: 0.0,
        };
        let inputs = UpdateInputs {
            params: &[p],
            grads: &[p],
            grad_scale: 1.0,
            state: &[p],
            step: t,
            lr: t,
        };
        assert!(apply_update_grouped(&mut g, &ok, &inputs, &[true, false]).is_err());
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
