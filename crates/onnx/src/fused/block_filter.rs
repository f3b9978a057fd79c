//! `BlockFilter`: a convolution weight reordered to MLAS's blocked filter layout for ONNX
//! Runtime's NCHWc `Conv`, which a blocked [`crate::graph::Op::Conv`] is serialised with.

use ort::operator::{BoxedKernel, ComputeContext, KernelContext};

use super::{for_each_task, missing, weight_dims, SendPtr};

/// One output-channel block of MLAS's blocked filter layout (`OIHWBiBo`), which the NCHWc
/// `Conv` reads: the weight `[M, C, kh, kw]` as `[M/b, C/b, kh, kw, b (input), b (output)]`.
/// `out` is output block `mo`, `C * kh * kw * b` long; `w` is the whole weight. Element
/// `[co, t, ci, mi]` of the block is `w[mo*b + mi, co*b + ci, t]` (`t` the kernel offset).
/// Reads run along the weight's rows; the block (295 KiB for 512 channels and a 3x3 kernel)
/// stays in cache while it is written.
pub(crate) fn block_filter_rows(
    w: &[f32],
    [c, taps]: [usize; 2],
    b: usize,
    mo: usize,
    out: &mut [f32],
) {
    for mi in 0..b {
        let row = &w[(mo * b + mi) * c * taps..][..c * taps];
        for (ch, k) in row.chunks_exact(taps).enumerate() {
            let (co, ci) = (ch / b, ch % b);
            for (t, &v) in k.iter().enumerate() {
                out[((co * taps + t) * b + ci) * b + mi] = v;
            }
        }
    }
}

/// `BlockFilter`: a convolution weight reordered for the NCHWc `Conv` (see
/// [`block_filter_rows`]); a blocked [`Op::Conv`](crate::graph::Op::Conv) is serialised with
/// it. ONNX Runtime reorders a weight itself only when it is a constant, never in a training
/// step, and its `Transpose` took 12 ms on a 512x512x3x3 weight (2 threads).
pub(super) struct BlockFilter;

f32_operator!(BlockFilter, inputs: 1, outputs: 1, block_filter_kernel);

fn block_filter_kernel<'attr>(kctx: &KernelContext<'attr>) -> ort::Result<BoxedKernel<'attr>> {
    let err = |what: String| ort::Error::new(format!("BlockFilter: {what}"));
    let b = kctx
        .get::<i64>("block")
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&b| b > 0)
        .ok_or_else(|| err("missing or non-positive attribute `block`".into()))?;
    Ok(Box::new(move |ctx: &ComputeContext| {
        let input = ctx
            .input(0)?
            .ok_or_else(|| missing("BlockFilter", "an input"))?;
        let (shape, w) = input.try_extract_tensor::<f32>()?;
        let [m, c, kh, kw] = weight_dims("BlockFilter", shape, w.len())?;
        if m % b != 0 || c % b != 0 {
            return Err(err(format!(
                "weight {:?}: both channel counts must be multiples of the block {b}",
                [m, c, kh, kw]
            )));
        }
        let mut output = ctx
            .output(0, shape.to_vec())?
            .ok_or_else(|| missing("BlockFilter", "an output"))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        let taps = kh * kw;
        let len = c * taps * b;
        let base = SendPtr(out.as_mut_ptr());
        let run = |mo: usize| {
            // SAFETY: block `mo` writes `len` elements at `mo * len`, inside the output
            // (`m * c * taps` = `(m / b) * len` long, checked above); distinct blocks never
            // overlap, and the buffer outlives `par_for`.
            let rows = unsafe { std::slice::from_raw_parts_mut(base.get().add(mo * len), len) };
            block_filter_rows(w, [c, taps], b, mo, rows);
        };
        for_each_task(ctx, m / b, run)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::test_input as input;
    use crate::graph::{DType, Graph};
    use crate::testutil::{run_graph, Data};

    /// `BlockFilter`'s layout, written as the 6-d index of the reordered weight.
    #[test]
    fn block_filter_rows_follow_the_oihwbibo_layout() {
        let (m, c, kh, kw, b) = (32, 48, 3, 2, 16);
        let w = input([m, c, kh, kw]);
        let mut out = vec![f32::NAN; w.len()];
        let len = c * kh * kw * b;
        for (mo, rows) in out.chunks_exact_mut(len).enumerate() {
            block_filter_rows(&w, [c, kh * kw], b, mo, rows);
        }
        let mut want = Vec::with_capacity(w.len());
        for mo in 0..m / b {
            for co in 0..c / b {
                for i in 0..kh {
                    for j in 0..kw {
                        for ci in 0..b {
                            for mi in 0..b {
                                let (o, ch) = (mo * b + mi, co * b + ci);
                                want.push(w[((o * c + ch) * kh + i) * kw + j]);
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(out, want);
    }

    /// The runtime's probe finds MLAS's block: 16 with AVX-512, 8 with AVX2 (x86-64).
    #[test]
    fn the_conv_block_probe_finds_mlas_block() {
        let block = crate::testutil::runtime().conv_block();
        #[cfg(target_arch = "x86_64")]
        {
            let want = if std::arch::is_x86_feature_detected!("avx512f") {
                Some(16)
            } else if std::arch::is_x86_feature_detected!("avx2") {
                Some(8)
            } else {
                block
            };
            assert_eq!(block, want);
        }
        assert!(block.is_none_or(|b| b > 1));
    }

    /// Which convolutions a graph runs blocked: the shapes where the NCHWc kernel was measured
    /// faster, f32, with custom kernels on.
    #[test]
    fn only_qualifying_convolutions_are_blocked() {
        let blocked = |custom: bool, dt: DType, x: [usize; 4], w: [usize; 4], s: usize| {
            let mut g = Graph::new("policy");
            g.set_custom_kernels(custom);
            g.set_blocked_convs(Some(16));
            let xv = g.input("x", dt, &x).expect("input");
            let wv = g.input("w", dt, &w).expect("input");
            let p = w[2] / 2;
            let y = g.conv2d(xv, wv, None, [s, s], [p; 4], 1).expect("conv");
            let node = g.nodes().iter().find(|n| n.outputs[0] == y).expect("node");
            matches!(
                node.op,
                crate::graph::Op::Conv {
                    blocked: Some(16),
                    ..
                }
            )
        };
        let f32_ = DType::F32;
        assert!(blocked(true, f32_, [2, 16, 8, 8], [32, 16, 3, 3], 1));
        assert!(blocked(true, f32_, [2, 32, 16, 16], [16, 32, 3, 3], 2));
        assert!(
            !blocked(true, f32_, [2, 16, 8, 8], [32, 16, 1, 1], 1),
            "1x1"
        );
        assert!(
            !blocked(true, f32_, [2, 16, 4, 4], [32, 16, 3, 3], 1),
            "4x4 output"
        );
        assert!(
            !blocked(true, f32_, [2, 8, 8, 8], [32, 8, 3, 3], 1),
            "8 channels in"
        );
        assert!(
            !blocked(true, f32_, [2, 16, 8, 8], [24, 16, 3, 3], 1),
            "24 channels out"
        );
        assert!(
            !blocked(false, f32_, [2, 16, 8, 8], [32, 16, 3, 3], 1),
            "no custom kernels"
        );
        assert!(
            !blocked(true, DType::F64, [2, 16, 8, 8], [32, 16, 3, 3], 1),
            "f64"
        );
        let mut g = Graph::new("off");
        let xv = g.input("x", f32_, &[2, 16, 8, 8]).expect("input");
        let wv = g.input("w", f32_, &[16, 16, 3, 3]).expect("input");
        g.conv2d(xv, wv, None, [1, 1], [1; 4], 1).expect("conv");
        assert!(g.nodes().iter().all(|n| !matches!(
            n.op,
            crate::graph::Op::Conv {
                blocked: Some(_),
                ..
            }
        )));
    }

    /// Blocked convolutions give the plain ones' results (other summation order: 1e-5 of
    /// the largest output) through ONNX Runtime, with and without bias, strided, with uneven
    /// pads and a 5x5 kernel.
    #[test]
    fn blocked_convolutions_match_plain_ones() {
        let Some(block) = crate::testutil::runtime().conv_block() else {
            eprintln!("no NCHWc convolutions in this ONNX Runtime on this CPU: nothing to check");
            return;
        };
        let (c, m) = (2 * block, 3 * block);
        type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 4], bool);
        let cases: &[Case] = &[
            ([2, c, 10, 10], [m, c, 3, 3], [1, 1], [1, 1, 1, 1], true),
            ([2, m, 18, 17], [c, m, 3, 3], [2, 2], [1, 0, 0, 1], false),
            ([1, c, 9, 12], [m, c, 5, 5], [1, 1], [2, 2, 2, 2], true),
        ];
        for &(xs, ws, strides, pads, bias) in cases {
            let mut outs = Vec::new();
            for blocked in [None, Some(block)] {
                let mut g = Graph::new("blocked");
                g.set_blocked_convs(blocked);
                let x = g.input("x", DType::F32, &xs).expect("input");
                let w = g.input("w", DType::F32, &ws).expect("input");
                let b = g.input("b", DType::F32, &[ws[0]]).expect("input");
                let y = g
                    .conv2d(x, w, bias.then_some(b), strides, pads, 1)
                    .expect("conv");
                let is_blocked = g.nodes().iter().any(|n| {
                    matches!(
                        n.op,
                        crate::graph::Op::Conv {
                            blocked: Some(_),
                            ..
                        }
                    )
                });
                assert_eq!(is_blocked, blocked.is_some(), "{xs:?} {ws:?}");
                g.output(y, "y").expect("output");
                let mut feeds = vec![
                    (x, Data::F32(input(xs))),
                    (w, Data::F32(input(ws).iter().map(|v| v / 50.0).collect())),
                ];
                if bias {
                    feeds.push((b, Data::F32((0..ws[0]).map(|i| i as f32 / 10.0).collect())));
                }
                outs.push(run_graph(&g, &feeds).remove("y").expect("y"));
            }
            let scale = outs[0].iter().fold(0f64, |a, v| a.max(v.abs()));
            let worst = outs[0]
                .iter()
                .zip(&outs[1])
                .fold(0f64, |a, (p, q)| a.max((p - q).abs()));
            assert!(
                worst <= 1e-5 * scale,
                "{xs:?} {ws:?}: {worst:e} of {scale:e}"
            );
        }
    }
}
