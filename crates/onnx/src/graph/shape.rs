//! Shape ops: transpose, reshape, flatten, concat, split, expand, unsqueeze, static slices
//! and zero padding. Constant operands (shapes, sizes, axes) become shared `int64`
//! initializers, as opset 18 takes them as inputs.

use super::{broadcast_shapes, invalid, Graph, GraphResult, Op, ValueId};

impl Graph {
    // ----- shape ops -----

    pub fn transpose(&mut self, x: ValueId, perm: &[usize]) -> GraphResult<ValueId> {
        let shape = self.shape(x).to_vec();
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..shape.len()).collect::<Vec<_>>() {
            return Err(invalid(
                "Transpose",
                format!("perm {perm:?} is not a permutation of rank {}", shape.len()),
            ));
        }
        let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let dt = self.dtype(x);
        self.node1(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            vec![x],
            dt,
            out,
        )
    }

    pub fn reshape(&mut self, x: ValueId, shape: &[usize]) -> GraphResult<ValueId> {
        let n: usize = shape.iter().product();
        if n != self.value(x).numel() {
            return Err(invalid(
                "Reshape",
                format!("cannot reshape {:?} to {shape:?}", self.shape(x)),
            ));
        }
        if shape == self.shape(x) {
            return Ok(x);
        }
        let s = self.const_usize(shape);
        let dt = self.dtype(x);
        self.node1(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            vec![x, s],
            dt,
            shape.to_vec(),
        )
    }

    /// Flattens to 2-D: dims before `axis` form the rows (batch-size independent, unlike Reshape).
    pub fn flatten(&mut self, x: ValueId, axis: usize) -> GraphResult<ValueId> {
        let shape = self.shape(x).to_vec();
        if axis > shape.len() {
            return Err(invalid(
                "Flatten",
                format!("axis {axis} > rank {}", shape.len()),
            ));
        }
        let rows: usize = shape[..axis].iter().product();
        let cols: usize = shape[axis..].iter().product();
        let dt = self.dtype(x);
        self.node1(Op::Flatten { axis }, vec![x], dt, vec![rows, cols])
    }

    pub fn concat(&mut self, xs: &[ValueId], axis: usize) -> GraphResult<ValueId> {
        if xs.is_empty() {
            return Err(invalid("Concat", "needs at least one operand"));
        }
        let dt = self.same_dtype("Concat", xs)?;
        self.check_axes("Concat", xs[0], &[axis])?;
        let mut shape = self.shape(xs[0]).to_vec();
        for &x in &xs[1..] {
            let s = self.shape(x);
            if s.len() != shape.len()
                || s.iter()
                    .enumerate()
                    .any(|(i, &d)| i != axis && d != shape[i])
            {
                return Err(invalid(
                    "Concat",
                    format!(
                        "shapes {:?} and {s:?} differ outside axis {axis}",
                        self.shape(xs[0])
                    ),
                ));
            }
            shape[axis] += s[axis];
        }
        self.node1(Op::Concat { axis }, xs.to_vec(), dt, shape)
    }

    pub fn split(&mut self, x: ValueId, axis: usize, sizes: &[usize]) -> GraphResult<Vec<ValueId>> {
        self.check_axes("Split", x, &[axis])?;
        let shape = self.shape(x).to_vec();
        if sizes.iter().sum::<usize>() != shape[axis] || sizes.contains(&0) {
            return Err(invalid(
                "Split",
                format!("sizes {sizes:?} do not partition dim {} of {shape:?}", axis),
            ));
        }
        let s = self.const_usize(sizes);
        let dt = self.dtype(x);
        let outs = sizes
            .iter()
            .map(|&n| {
                let mut sh = shape.clone();
                sh[axis] = n;
                (dt, sh)
            })
            .collect();
        Ok(self.node(
            Op::Split {
                axis,
                sizes: sizes.to_vec(),
            },
            vec![x, s],
            outs,
        ))
    }

    pub fn expand(&mut self, x: ValueId, shape: &[usize]) -> GraphResult<ValueId> {
        let out = broadcast_shapes(self.shape(x), shape).ok_or_else(|| {
            invalid(
                "Expand",
                format!("{:?} does not broadcast to {shape:?}", self.shape(x)),
            )
        })?;
        if out == self.shape(x) {
            return Ok(x);
        }
        let s = self.const_usize(shape);
        let dt = self.dtype(x);
        self.node1(
            Op::Expand {
                shape: shape.to_vec(),
            },
            vec![x, s],
            dt,
            out,
        )
    }

    pub fn unsqueeze(&mut self, x: ValueId, axes: &[usize]) -> GraphResult<ValueId> {
        let shape = self.shape(x).to_vec();
        let rank = shape.len() + axes.len();
        let mut out = Vec::with_capacity(rank);
        let mut it = shape.iter();
        for i in 0..rank {
            if axes.contains(&i) {
                out.push(1);
            } else {
                out.push(
                    *it.next()
                        .ok_or_else(|| invalid("Unsqueeze", format!("axes {axes:?} invalid")))?,
                );
            }
        }
        if it.next().is_some() || axes.iter().any(|&a| a >= rank) {
            return Err(invalid(
                "Unsqueeze",
                format!("axes {axes:?} invalid for rank {}", shape.len()),
            ));
        }
        let a = self.const_usize(axes);
        let dt = self.dtype(x);
        self.node1(
            Op::Unsqueeze {
                axes: axes.to_vec(),
            },
            vec![x, a],
            dt,
            out,
        )
    }

    /// `x[starts..ends]` along `axes` (step 1).
    pub fn slice(
        &mut self,
        x: ValueId,
        starts: &[usize],
        ends: &[usize],
        axes: &[usize],
    ) -> GraphResult<ValueId> {
        let steps = vec![1; axes.len()];
        self.slice_strided(x, starts, ends, axes, &steps)
    }

    /// `x[starts..ends:steps]` along `axes`: every `step`-th element from `start`, stopping
    /// before `end` (ONNX Slice with positive steps).
    pub fn slice_strided(
        &mut self,
        x: ValueId,
        starts: &[usize],
        ends: &[usize],
        axes: &[usize],
        steps: &[usize],
    ) -> GraphResult<ValueId> {
        self.check_axes("Slice", x, axes)?;
        let mut shape = self.shape(x).to_vec();
        if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
            return Err(invalid(
                "Slice",
                "starts, ends, axes and steps must have equal lengths",
            ));
        }
        for (((&a, &s0), &e), &st) in axes.iter().zip(starts).zip(ends).zip(steps) {
            if s0 >= e || e > shape[a] || st == 0 {
                return Err(invalid(
                    "Slice",
                    format!("range {s0}..{e} step {st} invalid for dim {a} of {shape:?}"),
                ));
            }
            shape[a] = (e - s0).div_ceil(st);
        }
        let mut inputs = vec![
            x,
            self.const_usize(starts),
            self.const_usize(ends),
            self.const_usize(axes),
        ];
        // The steps input is optional in ONNX; plain slices keep their four inputs so their
        // serialised graphs stay byte-identical.
        if steps.iter().any(|&s| s != 1) {
            inputs.push(self.const_usize(steps));
        }
        let dt = self.dtype(x);
        self.node1(
            Op::Slice {
                starts: starts.to_vec(),
                ends: ends.to_vec(),
                axes: axes.to_vec(),
                steps: steps.to_vec(),
            },
            inputs,
            dt,
            shape,
        )
    }

    /// Zero padding; `pads` lists all begins then all ends (ONNX order).
    pub fn pad(&mut self, x: ValueId, pads: &[usize]) -> GraphResult<ValueId> {
        let mut shape = self.shape(x).to_vec();
        let r = shape.len();
        if pads.len() != 2 * r {
            return Err(invalid("Pad", format!("needs {} pads for rank {r}", 2 * r)));
        }
        for i in 0..r {
            shape[i] += pads[i] + pads[i + r];
        }
        let p = self.const_usize(pads);
        let dt = self.dtype(x);
        self.node1(
            Op::Pad {
                pads: pads.to_vec(),
            },
            vec![x, p],
            dt,
            shape,
        )
    }
}
