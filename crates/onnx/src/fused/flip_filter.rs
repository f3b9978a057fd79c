//! `FlipFilter`: a convolution weight as the weight of its stride-1 input gradient, channel
//! axes swapped and kernel flipped in space, in one pass (see [`crate::graph::Op::FlipFilter`]).

use ort::operator::{BoxedKernel, ComputeContext, KernelContext};

use super::{for_each_task, missing, weight_dims, SendPtr};

/// Output rows `c` (input channel `c` of `w`), `[M, kh * kw]` each: `out[m, t] = w[m, c,
/// taps - 1 - t]`, where reversing the flattened kernel offset `t = i * kw + j` flips both
/// spatial axes. `w` is the whole weight `[M, C, taps]`.
pub(crate) fn flip_filter_row(w: &[f32], [m, c, taps]: [usize; 3], ch: usize, out: &mut [f32]) {
    for (o, dst) in out.chunks_exact_mut(taps).take(m).enumerate() {
        let src = &w[(o * c + ch) * taps..][..taps];
        for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
            *d = v;
        }
    }
}

pub(super) struct FlipFilter;

f32_operator!(FlipFilter, inputs: 1, outputs: 1, flip_filter_kernel);

fn flip_filter_kernel<'attr>(_: &KernelContext<'attr>) -> ort::Result<BoxedKernel<'attr>> {
    Ok(Box::new(|ctx: &ComputeContext| {
        let input = ctx
            .input(0)?
            .ok_or_else(|| missing("FlipFilter", "an input"))?;
        let (shape, w) = input.try_extract_tensor::<f32>()?;
        let [m, c, kh, kw] = weight_dims("FlipFilter", shape, w.len())?;
        let taps = kh * kw;
        let mut output = ctx
            .output(0, vec![shape[1], shape[0], shape[2], shape[3]])?
            .ok_or_else(|| missing("FlipFilter", "an output"))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        let len = m * taps;
        if out.len() != c * len {
            return Err(ort::Error::new(
                "FlipFilter: output size differs from the weight's",
            ));
        }
        let base = SendPtr(out.as_mut_ptr());
        let run = |ch: usize| {
            // SAFETY: row `ch` writes `len` elements at `ch * len`, inside the output (`c *
            // len` long, checked above); distinct rows never overlap, and the buffer outlives
            // the tasks.
            let row = unsafe { std::slice::from_raw_parts_mut(base.get().add(ch * len), len) };
            flip_filter_row(w, [m, c, taps], ch, row);
        };
        for_each_task(ctx, c, run)
    }))
}

#[cfg(test)]
mod tests {
    use crate::fused::test_input as input;
    use crate::graph::{DType, Graph};
    use crate::testutil::{run_graph, Data};

    /// The kernel against the definition and against the ai.onnx `Transpose` + `Gather` form,
    /// bit for bit, through ONNX Runtime: square, rectangular and 1-wide kernels.
    #[test]
    fn flip_filter_matches_the_definition_and_the_onnx_form() {
        for [m, c, kh, kw] in [
            [8, 5, 3, 3],
            [4, 6, 2, 5],
            [3, 7, 1, 3],
            [6, 2, 4, 1],
            [2, 3, 1, 1],
        ] {
            let w = input([m, c, kh, kw]);
            let mut want = vec![0.0f64; w.len()];
            for o in 0..m {
                for ch in 0..c {
                    for i in 0..kh {
                        for j in 0..kw {
                            want[((ch * m + o) * kh + i) * kw + j] =
                                f64::from(w[((o * c + ch) * kh + kh - 1 - i) * kw + kw - 1 - j]);
                        }
                    }
                }
            }
            for custom in [true, false] {
                let mut g = Graph::new("flip_filter");
                g.set_custom_kernels(custom);
                let wv = g.input("w", DType::F32, &[m, c, kh, kw]).expect("input");
                let f = g.flip_filter(wv).expect("flip_filter");
                assert_eq!(g.shape(f), [c, m, kh, kw]);
                let ops: Vec<&str> = g.nodes().iter().map(|nd| nd.op.onnx_name()).collect();
                assert_eq!(ops.contains(&"FlipFilter"), custom, "{ops:?}");
                g.output(f, "f").expect("output");
                let got = run_graph(&g, &[(wv, Data::F32(w.clone()))])
                    .remove("f")
                    .expect("f");
                assert_eq!(got, want, "{:?} custom {custom}", [m, c, kh, kw]);
            }
        }
    }
}
