//! `ReluGrad`: the gradient of a ReLU from its output, `dy * (y > 0)`, in one pass (see
//! [`crate::graph::Op::ReluGrad`]).

use ort::operator::{BoxedKernel, ComputeContext, KernelContext};

use super::{for_each_task, missing, SendPtr};

/// Elements per parallel chunk, as for `AdamUpdate`: large enough that a chunk's dispatch is
/// negligible, small enough that a 512x512 activation splits over many threads.
const CHUNK: usize = 1 << 15;

/// `dx = dy * (y > 0 ? 1 : 0)` per element: the f32 product the `Greater`, `Cast`, `Mul`
/// chain computes, so the same bits (a negative `dy` against a closed unit gives -0, a NaN
/// stays NaN).
pub(crate) fn relu_grad_chunk(dy: &[f32], y: &[f32], dx: &mut [f32]) {
    for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(y) {
        *d = g * if v > 0.0 { 1.0 } else { 0.0 };
    }
}

pub(super) struct ReluGrad;

f32_operator!(ReluGrad, inputs: 2, outputs: 1, relu_grad_kernel);

fn relu_grad_kernel<'attr>(_: &KernelContext<'attr>) -> ort::Result<BoxedKernel<'attr>> {
    Ok(Box::new(|ctx: &ComputeContext| {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| missing("ReluGrad", "an input"));
        let (dy_in, y_in) = (input(0)?, input(1)?);
        let (shape, dy) = dy_in.try_extract_tensor::<f32>()?;
        let (y_shape, y) = y_in.try_extract_tensor::<f32>()?;
        if shape != y_shape {
            return Err(ort::Error::new(format!(
                "ReluGrad: dy {shape:?} and y {y_shape:?} differ in shape"
            )));
        }
        let mut output = ctx
            .output(0, shape.to_vec())?
            .ok_or_else(|| missing("ReluGrad", "an output"))?;
        let (_, dx) = output.try_extract_tensor_mut::<f32>()?;
        let n = dy.len();
        if y.len() != n || dx.len() != n {
            return Err(ort::Error::new(
                "ReluGrad: inputs and output differ in size",
            ));
        }
        let base = SendPtr(dx.as_mut_ptr());
        let run = |c: usize| {
            let lo = c * CHUNK;
            let hi = (lo + CHUNK).min(n);
            // SAFETY: chunk `c` covers `lo..hi`, inside the output (`n` long, checked above);
            // distinct chunks never overlap, and the buffer outlives the tasks.
            let dx = unsafe { std::slice::from_raw_parts_mut(base.get().add(lo), hi - lo) };
            relu_grad_chunk(&dy[lo..hi], &y[lo..hi], dx);
        };
        for_each_task(ctx, n.div_ceil(CHUNK), run)
    }))
}

#[cfg(test)]
mod tests {
    use crate::graph::{DType, Graph};
    use crate::testutil::{run_graph, Data};

    /// The kernel against the node chain it replaces, bit for bit, through ONNX Runtime:
    /// positive, negative, zero and signed-zero outputs, negative, infinite and NaN gradients,
    /// a size that is not a multiple of the chunk.
    #[test]
    fn relu_grad_matches_the_node_chain_bit_for_bit() {
        let n = (1 << 16) + 77;
        let special = [
            0.0f32,
            -0.0,
            1e-30,
            -1e-30,
            f32::NAN,
            f32::INFINITY,
            -1.0,
            2.5,
        ];
        let y: Vec<f32> = (0..n)
            .map(|i| match i % 11 {
                0..=7 => special[i % 8],
                _ => ((i * 37 % 101) as f32 - 50.0) / 7.0,
            })
            .collect();
        let dy: Vec<f32> = (0..n)
            .map(|i| match i % 13 {
                0 => f32::NAN,
                1 => -0.0,
                2 => f32::NEG_INFINITY,
                _ => ((i * 53 % 97) as f32 - 48.0) / 3.0,
            })
            .collect();
        let run = |custom: bool| {
            let mut g = Graph::new("relu_grad");
            g.set_custom_kernels(custom);
            let dyv = g.input("dy", DType::F32, &[n]).expect("input");
            let yv = g.input("y", DType::F32, &[n]).expect("input");
            let dx = g.relu_grad(dyv, yv).expect("relu_grad");
            let ops: Vec<&str> = g.nodes().iter().map(|nd| nd.op.onnx_name()).collect();
            assert_eq!(ops.contains(&"ReluGrad"), custom, "{ops:?}");
            g.output(dx, "dx").expect("output");
            let feeds = [(dyv, Data::F32(dy.clone())), (yv, Data::F32(y.clone()))];
            run_graph(&g, &feeds).remove("dx").expect("dx")
        };
        // f32 outputs arrive widened to f64, which keeps every bit but a NaN's payload.
        let bits = |v: &[f64]| -> Vec<Option<u64>> {
            v.iter()
                .map(|x| (!x.is_nan()).then(|| x.to_bits()))
                .collect()
        };
        let (kernel, chain) = (run(true), run(false));
        assert_eq!(bits(&kernel), bits(&chain));
        // Where y > 0 the gradient passes unchanged; elsewhere it is a signed zero or NaN.
        for ((&k, &g), &v) in kernel.iter().zip(&dy).zip(&y) {
            if v > 0.0 {
                assert!(k.to_bits() == f64::from(g).to_bits() || (k.is_nan() && g.is_nan()));
            } else {
                assert!(
                    k == 0.0 || (k.is_nan() && !g.is_finite()),
                    "{k} from {g}, y {v}"
                );
            }
        }
        assert!(kernel.iter().any(|x| x.to_bits() == (-0.0f64).to_bits()));
    }
}
