//! cbound's own ONNX Runtime kernels (domain [`CBOUND_DOMAIN`]), registered in every session
//! the [`crate::runtime`] creates.
//!
//! `AdamUpdate` ([`Op::AdamUpdate`](crate::graph::Op::AdamUpdate)) does a parameter's whole Adam
//! step in one pass over memory, where the ai.onnx node chain it replaces makes ten (two
//! multiply-adds, a square, a square root, an add, a divide, a scale and a subtraction, each
//! reading and writing the full tensor), about a quarter of the study's step. ONNX Runtime's
//! CPU build has no optimizer op (`ai.onnx.preview.training.Adam` and the `com.microsoft`
//! optimizers are training-build only). The kernel performs the chain's f32 operations in the
//! same order, one rounding each (no fused multiply-add), so its results are bitwise those of
//! the chain; a test in `optim.rs` checks that. It is split over ONNX Runtime's intra-op
//! threads in fixed chunks, and each element is computed the same way whatever the split, so
//! the result does not depend on the thread count.
//!
//! `Im2Col` ([`Op::Im2Col`](crate::graph::Op::Im2Col)) lays out a convolution's input patches
//! for its weight gradient in one pass, with the zero padding implicit; the ai.onnx version
//! (a `Pad`, a transpose, one strided `Slice` per kernel offset and a `Concat`) copies the
//! input about twelve times for a 3x3 kernel. It only moves elements, so its output is
//! bitwise that of the ai.onnx version.
//!
//! `BlockFilter` reorders a convolution weight to MLAS's blocked layout, so that convolutions
//! can run through ONNX Runtime's NCHWc kernels in a training step, where the weights are not
//! constants (ONNX Runtime reorders only constants).
//!
//! `BatchNormTrain` and `BatchNormTrainGrad` are training-mode batch normalisation and its
//! gradient, two passes over the activations each way where the node chain makes a dozen. Per
//! channel, sums run in f64 in a fixed order, so the result does not depend on the thread
//! count either; they are not bitwise the chain's (graphs without custom kernels keep the
//! chain).
//!
//! `ReluGrad` is a ReLU's backward pass (`dy * (y > 0)`) in one pass where the ai.onnx chain
//! makes three (`Greater`, `Cast`, `Mul`), with the chain's bits. `FlipFilter` lays out a
//! convolution weight for its stride-1 input gradient (channel axes swapped, kernel flipped)
//! in one pass, where ONNX Runtime's `Gather` copied the flipped axes a few elements at a time.
//!
//! One file per kernel; this one holds what they share and the domain that registers them.

/// What every cbound kernel's [`ort::operator::Operator`] has in common: all inputs and
/// outputs f32, the struct's name as the op type, a boxed kernel built by `$create`.
macro_rules! f32_operator {
    ($op:ident, inputs: $inputs:expr, outputs: $outputs:expr, $create:path) => {
        impl ort::operator::Operator for $op {
            type Kernel<'attr> = ort::operator::BoxedKernel<'attr>;

            fn name(&self) -> &str {
                stringify!($op)
            }

            fn inputs(&self) -> impl IntoIterator<Item = ort::operator::OperatorInput> {
                [const {
                    ort::operator::OperatorInput::required(
                        ort::value::TensorElementType::Float32,
                    )
                }; $inputs]
            }

            fn outputs(&self) -> impl IntoIterator<Item = ort::operator::OperatorOutput> {
                [const {
                    ort::operator::OperatorOutput::required(
                        ort::value::TensorElementType::Float32,
                    )
                }; $outputs]
            }

            fn create_kernel<'attr>(
                &self,
                kctx: &ort::operator::KernelContext<'attr>,
            ) -> ort::Result<Self::Kernel<'attr>> {
                $create(kctx)
            }
        }
    };
}

mod adam;
mod batch_norm;
mod block_filter;
mod flip_filter;
mod im2col;
mod relu_grad;

use ort::operator::OperatorDomain;

use super::graph::CBOUND_DOMAIN;

/// The error for an input or output ONNX Runtime did not hand a kernel.
fn missing(op: &str, what: &str) -> ort::Error {
    ort::Error::new(format!("{op}: missing {what}"))
}

/// The four dimensions `[M, C, kh, kw]` of a convolution weight handed to kernel `op`, checked
/// against the number of elements it holds. The product is checked so that a shape whose
/// element count overflows is an error, not a wrapped count or a panic.
fn weight_dims(op: &str, shape: &[i64], len: usize) -> ort::Result<[usize; 4]> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .collect();
    let count = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    match dims[..] {
        [m, c, kh, kw] if count == Some(len) => Ok([m, c, kh, kw]),
        _ => Err(ort::Error::new(format!(
            "{op}: the weight must be [M, C, kh, kw] holding that many elements, is {dims:?} with {len} elements"
        ))),
    }
}

/// An output pointer shared by parallel tasks that write disjoint ranges.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: only used to form disjoint slices per task (see each kernel's `create_kernel`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `run(0..n)` over ONNX Runtime's intra-op threads (inline for a single task).
fn for_each_task(
    ctx: &ort::operator::ComputeContext,
    n: usize,
    run: impl Fn(usize) + Sync + Send,
) -> ort::Result<()> {
    if n <= 1 {
        (0..n).for_each(run);
        Ok(())
    } else {
        ctx.par_for(n, n, run)
    }
}

/// The [`CBOUND_DOMAIN`] operator domain, for one session builder (ONNX Runtime keeps a
/// reference for the session's lifetime; `ort` holds it in the builder and session).
pub(crate) fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(CBOUND_DOMAIN)?
        .add(adam::AdamUpdate)?
        .add(im2col::Im2Col)?
        .add(block_filter::BlockFilter)?
        .add(batch_norm::BatchNormTrain)?
        .add(batch_norm::BatchNormTrainGrad)?
        .add(relu_grad::ReluGrad)?
        .add(flip_filter::FlipFilter)
}

/// Deterministic test data of `shape`'s size.
#[cfg(test)]
pub(crate) fn test_input(shape: [usize; 4]) -> Vec<f32> {
    (0..shape.iter().product::<usize>())
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::weight_dims;

    #[test]
    fn weight_dims_accepts_a_matching_shape_and_rejects_the_rest() {
        assert_eq!(weight_dims("T", &[4, 2, 3, 3], 72).ok(), Some([4, 2, 3, 3]));
        assert_eq!(weight_dims("T", &[0, 2, 3, 3], 0).ok(), Some([0, 2, 3, 3]));
        // Wrong rank, wrong element count, a negative dimension, and a shape whose count
        // overflows usize (it would wrap to 0 and match an empty buffer unchecked).
        for (shape, len) in [
            (&[4, 2, 9][..], 72),
            (&[4, 2, 3, 3][..], 71),
            (&[-4, 2, 3, 3][..], 72),
            (&[1 << 32, 1 << 32, 1, 1][..], 0),
        ] {
            let e = weight_dims("T", shape, len).expect_err("must be rejected");
            assert!(e.to_string().starts_with("T: the weight must be"), "{e}");
        }
    }
}
