//! Reductions over listed axes (sum, mean, max, and over every axis), softmax, log-softmax
//! and a numerically stable log-sum-exp.

use super::{invalid, Graph, GraphResult, Op, ValueId};

impl Graph {
    // ----- reductions -----

    fn reduced_shape(&self, x: ValueId, axes: &[usize], keepdims: bool) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, &d) in self.shape(x).iter().enumerate() {
            if axes.contains(&i) {
                if keepdims {
                    out.push(1);
                }
            } else {
                out.push(d);
            }
        }
        out
    }

    fn reduce(
        &mut self,
        op: Op,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> GraphResult<ValueId> {
        let name = op.onnx_name();
        let dt = self.require_float(name, x)?;
        if axes.is_empty() {
            return Err(invalid(
                name,
                "empty axes list (would mean `all axes` or a no-op); list the axes",
            ));
        }
        self.check_axes(name, x, axes)?;
        let shape = self.reduced_shape(x, axes, keepdims);
        let axes_v = self.const_usize(axes);
        self.node1(op, vec![x, axes_v], dt, shape)
    }

    pub fn reduce_sum(
        &mut self,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> GraphResult<ValueId> {
        let op = Op::ReduceSum {
            axes: axes.to_vec(),
            keepdims,
        };
        self.reduce(op, x, axes, keepdims)
    }

    pub fn reduce_mean(
        &mut self,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> GraphResult<ValueId> {
        let op = Op::ReduceMean {
            axes: axes.to_vec(),
            keepdims,
        };
        self.reduce(op, x, axes, keepdims)
    }

    pub fn reduce_max(
        &mut self,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> GraphResult<ValueId> {
        let op = Op::ReduceMax {
            axes: axes.to_vec(),
            keepdims,
        };
        self.reduce(op, x, axes, keepdims)
    }

    /// Sum over every axis, giving a rank-0 value.
    pub fn reduce_sum_all(&mut self, x: ValueId) -> GraphResult<ValueId> {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        if axes.is_empty() {
            return Ok(x);
        }
        self.reduce_sum(x, &axes, false)
    }

    /// Mean over every axis, giving a rank-0 value.
    pub fn reduce_mean_all(&mut self, x: ValueId) -> GraphResult<ValueId> {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        if axes.is_empty() {
            return Ok(x);
        }
        self.reduce_mean(x, &axes, false)
    }

    pub fn softmax(&mut self, x: ValueId, axis: usize) -> GraphResult<ValueId> {
        self.check_axes("Softmax", x, &[axis])?;
        self.unary_float(Op::Softmax { axis }, x)
    }

    pub fn log_softmax(&mut self, x: ValueId, axis: usize) -> GraphResult<ValueId> {
        self.check_axes("LogSoftmax", x, &[axis])?;
        self.unary_float(Op::LogSoftmax { axis }, x)
    }

    /// Numerically stable `log(sum(exp(x), axis))` with keepdims: `m + log(sum(exp(x - m)))`
    /// with the max `m` detached, which leaves the gradient exact (softmax).
    pub fn logsumexp(&mut self, x: ValueId, axis: usize) -> GraphResult<ValueId> {
        let m = self.reduce_max(x, &[axis], true)?;
        let m = self.stop_gradient(m)?;
        let shifted = self.sub(x, m)?;
        let e = self.exp(shifted)?;
        let s = self.reduce_sum(e, &[axis], true)?;
        let l = self.log(s)?;
        self.add(l, m)
    }
}
