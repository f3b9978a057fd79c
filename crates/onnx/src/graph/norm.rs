//! Batch normalisation over `[N, C, H, W]` (per channel) and global average pooling.
//!
//! Training mode follows PyTorch's `nn.BatchNorm2d`: the batch is normalised with the batch
//! mean and the BIASED batch variance, and the running statistics are updated as
//! `running = (1 - momentum) running + momentum batch_stat` with the UNBIASED variance
//! (`var * n / (n - 1)`, `n = N H W`). It is built from differentiable primitives (ReduceMean,
//! Sub, Mul, Sqrt, Div, Add) so [`crate::autodiff`] differentiates it through the batch
//! statistics with no BN-specific VJP; the running-statistics update is behind a
//! stop-gradient. Inference mode is the ONNX `BatchNormalization` op on running statistics,
//! which ONNX Runtime folds into the preceding convolution.

use super::{invalid, Graph, GraphResult, Op, ValueId};

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
        let mean_c = self.stop_gradient(mean_c)?;
        let var_c = self.reshape(var, &[c])?;
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
}
