//! Batch normalisation over `[N, C, H, W]` (per channel) and global average pooling.
//!
//! Training mode follows PyTorch's `nn.BatchNorm2d`: the batch is normalised with the batch
//! mean and the BIASED batch variance, and the running statistics are updated as
//! `running = (1 - momentum) running + momentum batch_stat` with the UNBIASED variance
//! (`var * n / (n - 1)`, `n = N H W`). Where custom kernels are allowed (f32 CPU graphs) it
//! is cbound's one-kernel [`Op::BatchNormTrain`], whose gradient is one
//! [`Op::BatchNormTrainGrad`] node: two passes over the activations each way instead of the
//! node chain's dozen (ResNet-18's step spent ~15% of its time in that chain). Elsewhere
//! (f64 gradient tests, CUDA) it is built from differentiable primitives (ReduceMean, Sub,
//! Mul, Sqrt, Div, Add), which [`crate::autodiff`] differentiates through the batch
//! statistics with no BN-specific VJP. The running-statistics update is behind a
//! stop-gradient either way. Inference mode is the ONNX `BatchNormalization` op on running statistics,
//! which ONNX Runtime folds into the preceding convolution.

use super::{invalid, DType, Graph, GraphResult, Op, ValueId};

/// Values produced by [`Graph::batch_norm_train`].
#[derive(Debug, Clone, Copy)]
pub struct BatchNormTrain {
    /// The normalised, scaled and shifted batch, shaped like the input.
    pub y: ValueId,
    /// Updated running mean `[C]` (no gradient flows through it).
    pub running_mean: ValueId,
    /// Updated running variance `[C]` (from the unbiased batch variance).
    pub running_var: ValueId,
}

impl Graph {
    fn check_bn(
        &self,
        op: &'static str,
        x: ValueId,
        per_channel: &[ValueId],
    ) -> GraphResult<usize> {
        let xs = self.shape(x);
        if xs.len() != 4 {
            return Err(invalid(op, format!("expects [N, C, H, W], got {xs:?}")));
        }
        let c = xs[1];
        for &v in per_channel {
            if self.shape(v) != [c] {
                return Err(invalid(
                    op,
                    format!(
                        "`{}` must be [{c}] for input {xs:?}, is {:?}",
                        self.name_of(v),
                        self.shape(v)
                    ),
                ));
            }
        }
        let mut all = vec![x];
        all.extend_from_slice(per_channel);
        self.same_dtype(op, &all)?;
        self.require_float(op, x)?;
        Ok(c)
    }

    /// Training-mode batch normalisation of `x` `[N, C, H, W]` with scale `gamma` and shift
    /// `beta` `[C]`; returns the output and the running statistics updated from `running_mean`
    /// and `running_var` (see the module docs).
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train(
        &mut self,
        x: ValueId,
        gamma: ValueId,
        beta: ValueId,
        running_mean: ValueId,
        running_var: ValueId,
        momentum: f64,
        eps: f64,
    ) -> GraphResult<BatchNormTrain> {
        let c = self.check_bn(
            "BatchNorm(train)",
            x,
            &[gamma, beta, running_mean, running_var],
        )?;
        let xs = self.shape(x).to_vec();
        let n = xs[0] * xs[2] * xs[3];
        if n < 2 {
            // PyTorch refuses this too: the unbiased variance needs two values per channel.
            return Err(invalid(
                "BatchNorm(train)",
                format!("needs more than one value per channel, input is {xs:?}"),
            ));
        }
        if self.custom_kernels() && self.dtype(x) == DType::F32 {
            let outs = self.node(
                Op::BatchNormTrain {
                    epsilon: eps as f32,
                },
                vec![x, gamma, beta],
                vec![
                    (DType::F32, xs.clone()),
                    (DType::F32, vec![c]),
                    (DType::F32, vec![c]),
                ],
            );
            let [y, mean, var] = outs[..] else {
                return Err(invalid(
                    "BatchNormTrain",
                    "internal: expected three outputs",
                ));
            };
            return self.update_running_stats(
                y,
                [mean, var],
                [running_mean, running_var],
                momentum,
                n,
            );
        }
        let axes = [0, 2, 3];
        let mean = self.reduce_mean(x, &axes, true)?;
        let xc = self.sub(x, mean)?;
        let sq = self.mul(xc, xc)?;
        let var = self.reduce_mean(sq, &axes, true)?;
        let ve = self.add_scalar(var, eps)?;
        let sd = self.sqrt(ve)?;
        let g4 = self.reshape(gamma, &[1, c, 1, 1])?;
        let b4 = self.reshape(beta, &[1, c, 1, 1])?;
        // One [1,C,1,1] division instead of a full-size one: y = xc * (gamma / sd) + beta.
        let scale = self.div(g4, sd)?;
        let scaled = self.mul(xc, scale)?;
        let y = self.add(scaled, b4)?;

        let mean_c = self.reshape(mean, &[c])?;
        let var_c = self.reshape(var, &[c])?;
        self.update_running_stats(y, [mean_c, var_c], [running_mean, running_var], momentum, n)
    }

    /// The running statistics after a training-mode batch (see the module docs) from the
    /// batch's `[mean, biased var]` `[C]` over `n` values per channel; no gradient flows
    /// through them.
    fn update_running_stats(
        &mut self,
        y: ValueId,
        [mean_c, var_c]: [ValueId; 2],
        [running_mean, running_var]: [ValueId; 2],
        momentum: f64,
        n: usize,
    ) -> GraphResult<BatchNormTrain> {
        let mean_c = self.stop_gradient(mean_c)?;
        let var_c = self.stop_gradient(var_c)?;
        let keep = 1.0 - momentum;
        let old_m = self.scale(running_mean, keep)?;
        let new_m = self.scale(mean_c, momentum)?;
        let rm = self.add(old_m, new_m)?;
        let old_v = self.scale(running_var, keep)?;
        let new_v = self.scale(var_c, momentum * n as f64 / (n - 1) as f64)?;
        let rv = self.add(old_v, new_v)?;
        Ok(BatchNormTrain {
            y,
            running_mean: rm,
            running_var: rv,
        })
    }

    /// The gradients `[dx, dgamma, dbeta]` of an [`Op::BatchNormTrain`] node from `dy`, its
    /// inputs `x`, `gamma` and its `mean`, `var` outputs ([`Op::BatchNormTrainGrad`]).
    pub fn batch_norm_train_grad(
        &mut self,
        dy: ValueId,
        x: ValueId,
        gamma: ValueId,
        [mean, var]: [ValueId; 2],
        epsilon: f32,
    ) -> GraphResult<[ValueId; 3]> {
        let c = self.check_bn("BatchNormTrainGrad", x, &[gamma, mean, var])?;
        if self.shape(dy) != self.shape(x) || self.dtype(x) != DType::F32 || !self.custom_kernels()
        {
            return Err(invalid(
                "BatchNormTrainGrad",
                format!(
                    "needs f32, custom kernels and dy shaped like x {:?}, got {:?}",
                    self.shape(x),
                    self.shape(dy)
                ),
            ));
        }
        let xs = self.shape(x).to_vec();
        let outs = self.node(
            Op::BatchNormTrainGrad { epsilon },
            vec![dy, x, gamma, mean, var],
            vec![
                (DType::F32, xs),
                (DType::F32, vec![c]),
                (DType::F32, vec![c]),
            ],
        );
        match outs[..] {
            [dx, dg, db] => Ok([dx, dg, db]),
            _ => Err(invalid(
                "BatchNormTrainGrad",
                "internal: expected three outputs",
            )),
        }
    }

    /// Inference-mode batch normalisation from running statistics (ONNX `BatchNormalization`).
    pub fn batch_norm_inference(
        &mut self,
        x: ValueId,
        gamma: ValueId,
        beta: ValueId,
        running_mean: ValueId,
        running_var: ValueId,
        eps: f64,
    ) -> GraphResult<ValueId> {
        self.check_bn(
            "BatchNormalization",
            x,
            &[gamma, beta, running_mean, running_var],
        )?;
        let (dt, shape) = (self.dtype(x), self.shape(x).to_vec());
        self.node1(
            Op::BatchNormalization {
                epsilon: eps as f32,
            },
            vec![x, gamma, beta, running_mean, running_var],
            dt,
            shape,
        )
    }

    /// Mean over the spatial axes: `[N, C, H, W]` -> `[N, C]`.
    pub fn global_average_pool(&mut self, x: ValueId) -> GraphResult<ValueId> {
        if self.shape(x).len() != 4 {
            return Err(invalid(
                "GlobalAveragePool",
                format!("expects [N, C, H, W], got {:?}", self.shape(x)),
            ));
        }
        self.reduce_mean(x, &[2, 3], false)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::graph::{DType, Graph, GraphResult, TensorData};
    use crate::testutil::{run_graph, Data};

    /// Training and inference BN against a direct computation of PyTorch's formulas.
    #[test]
    fn batch_norm_matches_the_definition() -> GraphResult<()> {
        let (n, c, h, w) = (3usize, 2usize, 2usize, 3usize);
        let xv: Vec<f64> = (0..n * c * h * w)
            .map(|i| ((i * 7 % 11) as f64) * 0.3 - 1.0)
            .collect();
        let (gv, bv, rmv, rvv) = (
            vec![1.5, -0.5],
            vec![0.25, 0.1],
            vec![0.2, -0.1],
            vec![2.0, 0.5],
        );
        let mut g = Graph::new("bn");
        let x = g.input("x", DType::F64, &[n, c, h, w])?;
        let gamma = g.input("g", DType::F64, &[c])?;
        let beta = g.input("b", DType::F64, &[c])?;
        let rm = g.input("rm", DType::F64, &[c])?;
        let rv = g.input("rv", DType::F64, &[c])?;
        let t = g.batch_norm_train(x, gamma, beta, rm, rv, 0.1, 1e-5)?;
        g.output(t.y, "y")?;
        g.output(t.running_mean, "rm_next")?;
        g.output(t.running_var, "rv_next")?;
        let out = run_graph(
            &g,
            &[
                (x, Data::F64(xv.clone())),
                (gamma, Data::F64(gv.clone())),
                (beta, Data::F64(bv.clone())),
                (rm, Data::F64(rmv.clone())),
                (rv, Data::F64(rvv.clone())),
            ],
        );
        let cnt = (n * h * w) as f64;
        for ch in 0..c {
            let vals: Vec<(usize, f64)> = (0..n * c * h * w)
                .filter(|i| (i / (h * w)) % c == ch)
                .map(|i| (i, xv[i]))
                .collect();
            let mean = vals.iter().map(|v| v.1).sum::<f64>() / cnt;
            let var = vals.iter().map(|v| (v.1 - mean).powi(2)).sum::<f64>() / cnt;
            for &(i, v) in &vals {
                let want = (v - mean) / (var + 1e-5).sqrt() * gv[ch] + bv[ch];
                assert!((out["y"][i] - want).abs() < 1e-12);
            }
            let want_m = 0.9 * rmv[ch] + 0.1 * mean;
            let want_v = 0.9 * rvv[ch] + 0.1 * var * cnt / (cnt - 1.0);
            assert!((out["rm_next"][ch] - want_m).abs() < 1e-12);
            assert!((out["rv_next"][ch] - want_v).abs() < 1e-12);
        }

        // Inference mode (ORT's BatchNormalization kernel is f32) on running statistics.
        let mut g = Graph::new("bn_inf");
        let x = g.input("x", DType::F32, &[n, c, h, w])?;
        let consts: Vec<_> = [&gv, &bv, &rmv, &rvv]
            .iter()
            .map(|v| g.constant(TensorData::F32(v.iter().map(|&a| a as f32).collect()), &[c]))
            .collect::<GraphResult<_>>()?;
        let y = g.batch_norm_inference(x, consts[0], consts[1], consts[2], consts[3], 1e-5)?;
        g.output(y, "y")?;
        let out = run_graph(
            &g,
            &[(x, Data::F32(xv.iter().map(|&a| a as f32).collect()))],
        );
        for (i, &v) in xv.iter().enumerate() {
            let ch = (i / (h * w)) % c;
            let want = (v - rmv[ch]) / (rvv[ch] + 1e-5).sqrt() * gv[ch] + bv[ch];
            assert!(
                (out["y"][i] - want).abs() < 1e-5,
                "{} vs {want}",
                out["y"][i]
            );
        }
        // Shape errors are reported where the graph is built.
        let bad = g.input("bad", DType::F32, &[3])?;
        assert!(g.batch_norm_inference(x, bad, bad, bad, bad, 1e-5).is_err());
        Ok(())
    }

    /// cbound's one-kernel batch norm (f32) against the node chain run in f64: output,
    /// running statistics and the gradients of `sum(y * r)` with respect to `x`, `gamma`
    /// and `beta`, on data whose mean is large next to its spread (the centred sums matter).
    #[test]
    fn the_batch_norm_kernel_matches_the_f64_node_chain() {
        let (n, c, h, w) = (4usize, 24usize, 5usize, 7usize);
        let len = n * c * h * w;
        let xv: Vec<f64> = (0..len)
            .map(|i| {
                3.0 + ((i * 37 % 101) as f64 - 50.0) / 25.0 * (1.0 + (i / 35 % 24) as f64 / 8.0)
            })
            .collect();
        let rv: Vec<f64> = (0..len)
            .map(|i| ((i * 53 % 97) as f64 - 48.0) / 48.0)
            .collect();
        let per = |k: usize, lo: f64| -> Vec<f64> {
            (0..c).map(|i| lo + ((i * k % 17) as f64) / 17.0).collect()
        };
        let (gv, bv, rmv, rvv) = (per(5, 0.5), per(7, -0.5), per(3, -0.2), per(11, 0.6));
        let run = |dt: DType| -> (HashMap<String, Vec<f64>>, Vec<&'static str>) {
            let mut g = Graph::new("bn_kernel");
            let x = g.input("x", dt, &[n, c, h, w]).expect("input");
            let r = g.input("r", dt, &[n, c, h, w]).expect("input");
            let ins: Vec<_> = ["g", "b", "rm", "rv"]
                .iter()
                .map(|name| g.input(name, dt, &[c]).expect("input"))
                .collect();
            let t = g
                .batch_norm_train(x, ins[0], ins[1], ins[2], ins[3], 0.1, 1e-5)
                .expect("bn");
            let yr = g.mul(t.y, r).expect("mul");
            let loss = g.reduce_sum_all(yr).expect("sum");
            let grads =
                crate::autodiff::gradients(&mut g, loss, &[x, ins[0], ins[1]]).expect("gradients");
            for (v, name) in [
                (t.y, "y"),
                (t.running_mean, "rm_next"),
                (t.running_var, "rv_next"),
            ]
            .into_iter()
            .chain(grads.into_iter().zip(["dx", "dgamma", "dbeta"]))
            {
                g.output(v, name).expect("output");
            }
            let ops = g.nodes().iter().map(|n| n.op.onnx_name()).collect();
            let data = |v: &[f64]| match dt {
                DType::F32 => Data::F32(v.iter().map(|&a| a as f32).collect()),
                _ => Data::F64(v.to_vec()),
            };
            let feeds = vec![
                (x, data(&xv)),
                (r, data(&rv)),
                (ins[0], data(&gv)),
                (ins[1], data(&bv)),
                (ins[2], data(&rmv)),
                (ins[3], data(&rvv)),
            ];
            (run_graph(&g, &feeds), ops)
        };
        let (kernel, kernel_ops) = run(DType::F32);
        let (chain, chain_ops) = run(DType::F64);
        assert!(
            kernel_ops.contains(&"BatchNormTrain") && kernel_ops.contains(&"BatchNormTrainGrad")
        );
        assert!(!chain_ops.contains(&"BatchNormTrain"));
        for name in ["y", "rm_next", "rv_next", "dx", "dgamma", "dbeta"] {
            let (a, b) = (&kernel[name], &chain[name]);
            let d: f64 = a
                .iter()
                .zip(b)
                .map(|(p, q)| (p - q) * (p - q))
                .sum::<f64>()
                .sqrt();
            let norm: f64 = b.iter().map(|q| q * q).sum::<f64>().sqrt();
            assert!(
                d <= 1e-6 * norm,
                "{name}: |kernel - chain| = {d:e}, |chain| = {norm:e}"
            );
        }
    }
}
