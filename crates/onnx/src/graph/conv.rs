//! Convolution (plain, dilated, transposed) and pooling (average, max with indices) over
//! `[N, C, H, W]` tensors.

use super::{invalid, DType, Graph, GraphResult, Op, ValueId};

/// The fewest output pixels per image for which a convolution runs blocked. Measured on
/// ResNet-18's CIFAR shapes (batch 64, 2 threads, AVX-512 Xeon, ONNX Runtime 1.31.1; reorders
/// of input, output and weight included): the NCHWc kernel took 0.74-0.91x the plain `Conv`'s
/// time at 32x32, 16x16 and 8x8 outputs (3x3 kernels, 64-256 channels), but its kernel alone
/// took 1.06x at 4x4 outputs (512 channels), and for 1x1 kernels the reorders cost more than
/// it saves (1.6x).
pub const BLOCKED_CONV_MIN_PIXELS: usize = 64;

impl Graph {
    // ----- convolution and pooling -----

    /// 2-D convolution: x `[N,C,H,W]`, w `[M,C/group,kh,kw]`, optional bias `[M]`; dilation 1.
    pub fn conv2d(
        &mut self,
        x: ValueId,
        w: ValueId,
        b: Option<ValueId>,
        strides: [usize; 2],
        pads: [usize; 4],
        group: usize,
    ) -> GraphResult<ValueId> {
        self.conv2d_dilated(x, w, b, strides, pads, [1, 1], group)
    }

    /// 2-D convolution with dilation (used by the weight gradient of a strided convolution).
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_dilated(
        &mut self,
        x: ValueId,
        w: ValueId,
        b: Option<ValueId>,
        strides: [usize; 2],
        pads: [usize; 4],
        dilations: [usize; 2],
        group: usize,
    ) -> GraphResult<ValueId> {
        let operands: Vec<ValueId> = [x, w].into_iter().chain(b).collect();
        if let Some(lo) = self.autocast_operands(&operands)? {
            let y = self.conv2d_dilated(
                lo[0],
                lo[1],
                lo.get(2).copied(),
                strides,
                pads,
                dilations,
                group,
            )?;
            return self.cast(y, DType::F32);
        }
        let dt = self.same_dtype("Conv", &[x, w])?;
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        if xs.len() != 4
            || ws.len() != 4
            || group == 0
            || xs[1] != ws[1] * group
            || ws[0] % group != 0
        {
            return Err(invalid(
                "Conv",
                format!("incompatible input {xs:?} and weight {ws:?} (group {group})"),
            ));
        }
        if strides.contains(&0) || dilations.contains(&0) {
            return Err(invalid("Conv", "strides and dilations must be positive"));
        }
        let eff = [
            dilations[0] * (ws[2] - 1) + 1,
            dilations[1] * (ws[3] - 1) + 1,
        ];
        let out_hw = conv_out(&xs[2..], &eff, strides, pads).ok_or_else(|| {
            invalid(
                "Conv",
                format!("kernel {:?} larger than padded input {xs:?}", &ws[2..]),
            )
        })?;
        let mut inputs = vec![x, w];
        if let Some(b) = b {
            if self.shape(b) != [ws[0]] {
                return Err(invalid(
                    "Conv",
                    format!("bias must be [{}], is {:?}", ws[0], self.shape(b)),
                ));
            }
            inputs.push(b);
        }
        let blocked = self.conv_block(dt, &xs, &ws, dilations, group, out_hw);
        self.node1(
            Op::Conv {
                strides,
                pads,
                dilations,
                group,
                blocked,
            },
            inputs,
            dt,
            vec![xs[0], ws[0], out_hw[0], out_hw[1]],
        )
    }

    /// The channel block a convolution runs in ([`Graph::set_blocked_convs`]), or `None` to run
    /// it as the plain `Conv`. Blocked where ONNX Runtime's NCHWc kernel was measured faster,
    /// reorders of input, output and weight included: group-1 undilated f32 convolutions
    /// with both channel counts multiples of the block, a kernel larger than 1x1 and at least
    /// [`BLOCKED_CONV_MIN_PIXELS`] output pixels per image.
    fn conv_block(
        &self,
        dt: DType,
        xs: &[usize],
        ws: &[usize],
        dilations: [usize; 2],
        group: usize,
        out_hw: [usize; 2],
    ) -> Option<usize> {
        let b = self.blocked_convs()?;
        let fits = self.custom_kernels()
            && dt == DType::F32
            && group == 1
            && dilations == [1, 1]
            && xs[1].is_multiple_of(b)
            && ws[0].is_multiple_of(b)
            && ws[2] * ws[3] > 1
            && out_hw[0] * out_hw[1] >= BLOCKED_CONV_MIN_PIXELS;
        fits.then_some(b)
    }

    /// Transposed 2-D convolution: x `[N,C,H,W]`, w `[C, M/group, kh, kw]`; dilation 1.
    pub fn conv_transpose2d(
        &mut self,
        x: ValueId,
        w: ValueId,
        strides: [usize; 2],
        pads: [usize; 4],
        output_padding: [usize; 2],
        group: usize,
    ) -> GraphResult<ValueId> {
        let dt = self.same_dtype("ConvTranspose", &[x, w])?;
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        if xs.len() != 4 || ws.len() != 4 || group == 0 || xs[1] != ws[0] || xs[1] % group != 0 {
            return Err(invalid(
                "ConvTranspose",
                format!("incompatible input {xs:?} and weight {ws:?} (group {group})"),
            ));
        }
        let mut hw = [0usize; 2];
        for i in 0..2 {
            if output_padding[i] >= strides[i] {
                return Err(invalid(
                    "ConvTranspose",
                    "output_padding must be smaller than the stride",
                ));
            }
            let full = strides[i] * (xs[2 + i] - 1) + output_padding[i] + ws[2 + i];
            hw[i] = full
                .checked_sub(pads[i] + pads[i + 2])
                .ok_or_else(|| invalid("ConvTranspose", "pads larger than the output"))?;
        }
        self.node1(
            Op::ConvTranspose {
                strides,
                pads,
                output_padding,
                group,
            },
            vec![x, w],
            dt,
            vec![xs[0], ws[1] * group, hw[0], hw[1]],
        )
    }

    /// The output shape of [`Op::Im2Col`] for `x` and its output size, checking the operands.
    fn im2col_shape(
        &self,
        x: ValueId,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        [images, chunk]: [usize; 2],
    ) -> GraphResult<(Vec<usize>, [usize; 2])> {
        let xs = self.shape(x);
        if xs.len() != 4 || strides.contains(&0) || kernel.contains(&0) {
            return Err(invalid(
                "Im2Col",
                format!("expects a 4-D input and positive kernel/strides, got {xs:?}"),
            ));
        }
        if images == 0 || (chunk + 1) * images > xs[0] {
            return Err(invalid(
                "Im2Col",
                format!(
                    "chunk {chunk} of {images} images lies outside the batch of {}",
                    xs[0]
                ),
            ));
        }
        let hw = conv_out(&xs[2..], &kernel, strides, pads).ok_or_else(|| {
            invalid(
                "Im2Col",
                format!("kernel {kernel:?} larger than padded input {xs:?}"),
            )
        })?;
        let shape = vec![xs[1] * kernel[0] * kernel[1], images * hw[0] * hw[1]];
        Ok((shape, hw))
    }

    /// A convolution weight `[M, C, kh, kw]` as the weight of its stride-1 input gradient:
    /// `[C, M, kh, kw]` with `out[c, m, i, j] = w[m, c, kh - 1 - i, kw - 1 - j]` (the channel
    /// axes swapped, the kernel flipped in space). One [`Op::FlipFilter`] node where cbound's
    /// kernels are allowed and `w` is f32, else a `Transpose` and one `Gather` per spatial axis
    /// longer than 1 (the same values: both only move elements). ONNX Runtime's `Gather` copies
    /// one run of its inner axes at a time, here 3 elements or 1: on ResNet-18 the two took
    /// about 90 ms of a 1.5 s step (AMD EPYC, 2 threads), for 11 M weights.
    pub fn flip_filter(&mut self, w: ValueId) -> GraphResult<ValueId> {
        let ws = self.shape(w).to_vec();
        let [m, c, kh, kw] = ws[..] else {
            return Err(invalid(
                "FlipFilter",
                format!("the weight must be [M, C, kh, kw], is {ws:?}"),
            ));
        };
        let dt = self.require_float("FlipFilter", w)?;
        if self.custom_kernels() && dt == DType::F32 {
            return self.node1(Op::FlipFilter, vec![w], dt, vec![c, m, kh, kw]);
        }
        let mut wt = self.transpose(w, &[1, 0, 2, 3])?;
        for (axis, len) in [(2, kh), (3, kw)] {
            if len > 1 {
                let rev = self.const_i64(&(0..len as i64).rev().collect::<Vec<_>>());
                wt = self.gather(wt, rev, axis)?;
            }
        }
        Ok(wt)
    }

    /// The input patches of one chunk of the batch (`[images, chunk]`: the samples
    /// `chunk * images .. (chunk + 1) * images`) as [`Op::Im2Col`] lays them out: cbound's own
    /// kernel, f32 only, CPU only (refused while [`Graph::custom_kernels`] is off).
    pub fn im2col(
        &mut self,
        x: ValueId,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        range: [usize; 2],
    ) -> GraphResult<ValueId> {
        if !self.custom_kernels() {
            return Err(invalid(
                "Im2Col",
                "cbound's own kernels are off for this graph (use im2col_onnx)",
            ));
        }
        let dt = self.require_float("Im2Col", x)?;
        if dt != DType::F32 {
            return Err(invalid(
                "Im2Col",
                format!("the kernel is f32 only, got {}", dt.name()),
            ));
        }
        let (shape, _) = self.im2col_shape(x, kernel, strides, pads, range)?;
        let [images, chunk] = range;
        self.node1(
            Op::Im2Col {
                kernel,
                strides,
                pads,
                images,
                chunk,
            },
            vec![x],
            dt,
            shape,
        )
    }

    /// The tensor [`Graph::im2col`] makes, from ai.onnx nodes (for graphs without cbound's
    /// kernels, e.g. on CUDA): the chunk's samples, padded, channels first; one strided
    /// `Slice` per kernel offset; a `Concat` of the offsets. Same values, bit for bit: both
    /// only copy elements.
    pub fn im2col_onnx(
        &mut self,
        x: ValueId,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        range: [usize; 2],
    ) -> GraphResult<ValueId> {
        self.require_float("Im2Col", x)?;
        let (shape, [oh, ow]) = self.im2col_shape(x, kernel, strides, pads, range)?;
        let [images, chunk] = range;
        let n = self.shape(x)[0];
        let xc = if images == n {
            x
        } else {
            self.slice(x, &[chunk * images], &[(chunk + 1) * images], &[0])?
        };
        let xp = if pads.iter().any(|&p| p > 0) {
            self.pad(xc, &[0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])?
        } else {
            xc
        };
        let (hp, wp) = (self.shape(xp)[2], self.shape(xp)[3]);
        let xt = self.transpose(xp, &[1, 0, 2, 3])?;
        let mut taps = Vec::with_capacity(kernel[0] * kernel[1]);
        for i in 0..kernel[0] {
            for j in 0..kernel[1] {
                let ends = [i + strides[0] * (oh - 1) + 1, j + strides[1] * (ow - 1) + 1];
                let whole = i == 0 && j == 0 && ends == [hp, wp] && strides == [1, 1];
                let t = if whole {
                    xt
                } else {
                    self.slice_strided(xt, &[i, j], &ends, &[2, 3], &strides)?
                };
                taps.push(self.unsqueeze(t, &[1])?);
            }
        }
        let all = if taps.len() > 1 {
            self.concat(&taps, 1)?
        } else {
            taps[0]
        };
        self.reshape(all, &shape)
    }

    fn pool_shape(
        &self,
        op: &'static str,
        x: ValueId,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    ) -> GraphResult<Vec<usize>> {
        let xs = self.shape(x);
        if xs.len() != 4 || strides.contains(&0) || kernel.contains(&0) {
            return Err(invalid(
                op,
                format!("expects a 4-D input and positive kernel/strides, got {xs:?}"),
            ));
        }
        if pads[0] >= kernel[0]
            || pads[1] >= kernel[1]
            || pads[2] >= kernel[0]
            || pads[3] >= kernel[1]
        {
            return Err(invalid(op, "pads must be smaller than the kernel"));
        }
        let hw = conv_out(&xs[2..], &kernel, strides, pads).ok_or_else(|| {
            invalid(
                op,
                format!("kernel {kernel:?} larger than padded input {xs:?}"),
            )
        })?;
        Ok(vec![xs[0], xs[1], hw[0], hw[1]])
    }

    pub fn average_pool(
        &mut self,
        x: ValueId,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    ) -> GraphResult<ValueId> {
        let dt = self.require_float("AveragePool", x)?;
        let shape = self.pool_shape("AveragePool", x, kernel, strides, pads)?;
        self.node1(
            Op::AveragePool {
                kernel,
                strides,
                pads,
            },
            vec![x],
            dt,
            shape,
        )
    }

    /// Returns (values, flat int64 indices into the input).
    pub fn max_pool(
        &mut self,
        x: ValueId,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    ) -> GraphResult<(ValueId, ValueId)> {
        let dt = self.require_float("MaxPool", x)?;
        let shape = self.pool_shape("MaxPool", x, kernel, strides, pads)?;
        let outs = self.node(
            Op::MaxPool {
                kernel,
                strides,
                pads,
            },
            vec![x],
            vec![(dt, shape.clone()), (DType::I64, shape)],
        );
        match outs.as_slice() {
            [y, i] => Ok((*y, *i)),
            _ => Err(invalid("MaxPool", "internal: expected two outputs")),
        }
    }
}

/// Spatial output size of a convolution / pooling window (floor mode, dilation 1) over
/// `input` (height, width); `None` where the kernel is larger than the padded input or a
/// stride is zero. Shared by the graph builders and cbound's own kernels.
pub(crate) fn conv_out(
    input: &[usize],
    kernel: &[usize],
    strides: [usize; 2],
    pads: [usize; 4],
) -> Option<[usize; 2]> {
    let mut out = [0; 2];
    for i in 0..2 {
        let padded = input[i] + pads[i] + pads[i + 2];
        if padded < kernel[i] || strides[i] == 0 {
            return None;
        }
        out[i] = (padded - kernel[i]) / strides[i] + 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use crate::graph::{DType, Graph, GraphError, GraphResult};

    #[test]
    fn shape_inference_and_errors() -> GraphResult<()> {
        let mut g = Graph::new("t");
        let x = g.input("x", DType::F32, &[4, 3, 8, 8])?;
        let w = g.input("w", DType::F32, &[5, 3, 3, 3])?;
        let y = g.conv2d(x, w, None, [2, 2], [1, 1, 1, 1], 1)?;
        assert_eq!(g.shape(y), &[4, 5, 4, 4]);
        let (p, i) = g.max_pool(y, [2, 2], [2, 2], [0, 0, 0, 0])?;
        assert_eq!(g.shape(p), &[4, 5, 2, 2]);
        assert_eq!(g.dtype(i), DType::I64);
        let f = g.flatten(p, 1)?;
        assert_eq!(g.shape(f), &[4, 20]);
        let bad = g.input("bad", DType::F32, &[3, 7])?;
        assert!(g.matmul(f, bad).is_err());
        assert!(matches!(
            g.input("x", DType::F32, &[1]),
            Err(GraphError::DuplicateName(_))
        ));
        // ConvTranspose with the conv's own weight maps y back to x's shape.
        let ct = g.conv_transpose2d(y, w, [2, 2], [1, 1, 1, 1], [1, 1], 1)?;
        assert_eq!(g.shape(ct), &[4, 3, 8, 8]);
        Ok(())
    }
}
