//! `BatchNormTrain` and `BatchNormTrainGrad`: training-mode batch normalisation and its
//! gradient, one task per channel ([`crate::graph::Op::BatchNormTrain`]). Tested against the
//! node chain in `graph/norm.rs`.

use ort::operator::{BoxedKernel, ComputeContext, KernelContext};

use super::{for_each_task, missing, SendPtr};

/// Lanes of the f64 sums below: independent accumulators the compiler can keep in vector
/// registers (a single running sum would be one long dependency chain).
const LANES: usize = 8;

/// `sum(f(a_i, b_i))` in f64 over two equal-length planes, in [`LANES`] interleaved partial
/// sums combined in a fixed order (so the result does not depend on threads).
fn sum_f64(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += f(f64::from(xa[k]), f64::from(xb[k]));
        }
    }
    for (k, (&xa, &xb)) in ra.iter().zip(rb).enumerate() {
        acc[k] += f(f64::from(xa), f64::from(xb));
    }
    acc.iter().sum()
}

/// The geometry of a batch-normalised tensor `[N, C, H, W]`: channel `c`'s values are the
/// `n` planes of `hw` elements at `(i * c + ch) * hw`.
#[derive(Debug, Clone, Copy)]
struct BnGeom {
    n: usize,
    c: usize,
    hw: usize,
}

impl BnGeom {
    fn new(shape: &[i64]) -> Result<BnGeom, String> {
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension in {shape:?}")))
            .collect::<Result<_, _>>()?;
        match dims[..] {
            [n, c, h, w] if n * h * w > 0 => Ok(BnGeom { n, c, hw: h * w }),
            _ => Err(format!("expects a non-empty [N, C, H, W], got {shape:?}")),
        }
    }

    fn len(&self) -> usize {
        self.n * self.c * self.hw
    }

    /// Values per channel.
    fn count(&self) -> f64 {
        (self.n * self.hw) as f64
    }

    /// Channel `ch`'s planes of `t` (which holds the whole tensor).
    fn planes<'a>(&self, t: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (c, hw) = (self.c, self.hw);
        (0..self.n).map(move |i| &t[(i * c + ch) * hw..][..hw])
    }

    /// Channel `ch`'s planes of an output behind `base`.
    ///
    /// # Safety
    /// `base` must point to `self.len()` writable elements that outlive the slices, and no
    /// other live slice may cover channel `ch`'s planes.
    unsafe fn planes_mut<'a>(
        &self,
        base: SendPtr,
        ch: usize,
    ) -> impl Iterator<Item = &'a mut [f32]> + 'a {
        let (c, hw) = (self.c, self.hw);
        (0..self.n).map(move |i| {
            // SAFETY: plane (i, ch) lies inside the buffer (the caller's contract) and is
            // covered by no other slice.
            unsafe { std::slice::from_raw_parts_mut(base.get().add((i * c + ch) * hw), hw) }
        })
    }
}

/// One channel of [`Op::BatchNormTrain`](crate::graph::Op::BatchNormTrain): its mean and
/// biased variance (two passes, f64 sums), then `y = (x - mean) * (gamma / sd) + beta` in f32,
/// the node chain's order of operations. Returns `(mean, var)`.
fn bn_forward_channel<'a>(
    g: BnGeom,
    x: &[f32],
    ch: usize,
    (gamma, beta, eps): (f32, f32, f32),
    y: impl Iterator<Item = &'a mut [f32]>,
) -> (f32, f32) {
    let count = g.count();
    let mean: f64 = g
        .planes(x, ch)
        .map(|p| sum_f64(p, p, |a, _| a))
        .sum::<f64>()
        / count;
    let var: f64 = g
        .planes(x, ch)
        .map(|p| sum_f64(p, p, |a, _| (a - mean) * (a - mean)))
        .sum::<f64>()
        / count;
    let scale = (f64::from(gamma) / (var + f64::from(eps)).sqrt()) as f32;
    let m = mean as f32;
    for (src, dst) in g.planes(x, ch).zip(y) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = (v - m) * scale + beta;
        }
    }
    (m, var as f32)
}

/// One channel of [`Op::BatchNormTrainGrad`](crate::graph::Op::BatchNormTrainGrad), with
/// `xhat = (x - mean) / sd`: `dbeta = sum(dy)`, `dgamma = sum(dy xhat)` (f64 sums) and
/// `dx = gamma / sd * (dy - dbeta / n - xhat * dgamma / n)`. Returns `(dgamma, dbeta)`.
fn bn_backward_channel<'a>(
    g: BnGeom,
    (dy, x): (&[f32], &[f32]),
    ch: usize,
    (gamma, mean, var, eps): (f32, f32, f32, f32),
    dx: impl Iterator<Item = &'a mut [f32]>,
) -> (f32, f32) {
    let count = g.count();
    let m = f64::from(mean);
    let inv_sd = 1.0 / (f64::from(var) + f64::from(eps)).sqrt();
    let (mut sum_dy, mut sum_dy_xc) = (0f64, 0f64);
    for (pd, px) in g.planes(dy, ch).zip(g.planes(x, ch)) {
        sum_dy += sum_f64(pd, pd, |a, _| a);
        sum_dy_xc += sum_f64(pd, px, |d, v| d * (v - m));
    }
    let k = (f64::from(gamma) * inv_sd) as f32;
    let a = (sum_dy / count) as f32;
    let b = (sum_dy_xc / count * inv_sd * inv_sd) as f32;
    for ((pd, px), out) in g.planes(dy, ch).zip(g.planes(x, ch)).zip(dx) {
        for ((o, &d), &v) in out.iter_mut().zip(pd).zip(px) {
            *o = k * (d - a - (v - mean) * b);
        }
    }
    ((sum_dy_xc * inv_sd) as f32, sum_dy as f32)
}

/// `epsilon` of a batch-norm kernel.
fn epsilon_attr(kctx: &KernelContext<'_>, op: &str) -> ort::Result<f32> {
    kctx.get::<f32>("epsilon")
        .filter(|e| e.is_finite() && *e >= 0.0)
        .ok_or_else(|| ort::Error::new(format!("{op}: missing or invalid attribute `epsilon`")))
}

/// A `[C]` input of a batch-norm kernel.
fn per_channel<'a>(
    ctx: &'a ComputeContext,
    i: usize,
    c: usize,
    op: &str,
) -> ort::Result<ort::value::ValueRef<'a>> {
    let v = ctx.input(i)?.ok_or_else(|| missing(op, "an input"))?;
    let (shape, _) = v.try_extract_tensor::<f32>()?;
    if shape.iter().product::<i64>() != c as i64 {
        return Err(ort::Error::new(format!(
            "{op}: input {i} must have {c} values (one per channel), has shape {shape:?}"
        )));
    }
    Ok(v)
}

/// The outputs both kernels write, a tensor shaped like the input and two `[C]` vectors,
/// filled one task per channel: `f(ch, planes)` writes channel `ch`'s planes of the tensor
/// and returns its two values.
fn per_channel_outputs(
    ctx: &ComputeContext,
    op: &str,
    shape: &[i64],
    g: BnGeom,
    f: impl Fn(usize, &mut dyn Iterator<Item = &mut [f32]>) -> (f32, f32) + Sync + Send,
) -> ort::Result<()> {
    let out =
        |i: usize, dims: Vec<i64>| ctx.output(i, dims)?.ok_or_else(|| missing(op, "an output"));
    let c = i64::try_from(g.c).unwrap_or(i64::MAX);
    let (mut full, mut first, mut second) =
        (out(0, shape.to_vec())?, out(1, vec![c])?, out(2, vec![c])?);
    let (_, full) = full.try_extract_tensor_mut::<f32>()?;
    let (_, first) = first.try_extract_tensor_mut::<f32>()?;
    let (_, second) = second.try_extract_tensor_mut::<f32>()?;
    if full.len() != g.len() || first.len() != g.c || second.len() != g.c {
        return Err(ort::Error::new(format!(
            "{op}: output sizes do not match {shape:?}"
        )));
    }
    let (tp, ap, bp) = (
        SendPtr(full.as_mut_ptr()),
        SendPtr(first.as_mut_ptr()),
        SendPtr(second.as_mut_ptr()),
    );
    for_each_task(ctx, g.c, |ch| {
        // SAFETY: task `ch` alone writes channel `ch`'s planes of the tensor (inside it: its
        // length is checked above) and element `ch` of the two vectors; the buffers outlive
        // the tasks.
        let mut planes = unsafe { g.planes_mut(tp, ch) };
        let (a, b) = f(ch, &mut planes);
        unsafe {
            *ap.get().add(ch) = a;
            *bp.get().add(ch) = b;
        }
    })
}

/// `BatchNormTrain`: see [`bn_forward_channel`]; one task per channel.
pub(super) struct BatchNormTrain;

f32_operator!(BatchNormTrain, inputs: 3, outputs: 3, batch_norm_train_kernel);

fn batch_norm_train_kernel<'attr>(kctx: &KernelContext<'attr>) -> ort::Result<BoxedKernel<'attr>> {
    const OP: &str = "BatchNormTrain";
    let eps = epsilon_attr(kctx, OP)?;
    Ok(Box::new(move |ctx: &ComputeContext| {
        let input = ctx.input(0)?.ok_or_else(|| missing(OP, "an input"))?;
        let (shape, x) = input.try_extract_tensor::<f32>()?;
        let g = BnGeom::new(shape).map_err(|e| ort::Error::new(format!("{OP}: {e}")))?;
        let (gamma, beta) = (per_channel(ctx, 1, g.c, OP)?, per_channel(ctx, 2, g.c, OP)?);
        let (gamma, beta) = (
            gamma.try_extract_tensor::<f32>()?.1,
            beta.try_extract_tensor::<f32>()?.1,
        );
        if x.len() != g.len() {
            return Err(ort::Error::new(format!(
                "{OP}: buffer size does not match {shape:?}"
            )));
        }
        per_channel_outputs(ctx, OP, shape, g, |ch, planes| {
            bn_forward_channel(g, x, ch, (gamma[ch], beta[ch], eps), planes)
        })
    }))
}

/// `BatchNormTrainGrad`: see [`bn_backward_channel`]; one task per channel.
pub(super) struct BatchNormTrainGrad;

f32_operator!(BatchNormTrainGrad, inputs: 5, outputs: 3, batch_norm_train_grad_kernel);

fn batch_norm_train_grad_kernel<'attr>(
    kctx: &KernelContext<'attr>,
) -> ort::Result<BoxedKernel<'attr>> {
    const OP: &str = "BatchNormTrainGrad";
    let eps = epsilon_attr(kctx, OP)?;
    Ok(Box::new(move |ctx: &ComputeContext| {
        let dy_in = ctx.input(0)?.ok_or_else(|| missing(OP, "an input"))?;
        let x_in = ctx.input(1)?.ok_or_else(|| missing(OP, "an input"))?;
        let (shape, dy) = dy_in.try_extract_tensor::<f32>()?;
        let (x_shape, x) = x_in.try_extract_tensor::<f32>()?;
        if shape != x_shape {
            return Err(ort::Error::new(format!(
                "{OP}: dy {shape:?} and x {x_shape:?} differ"
            )));
        }
        let g = BnGeom::new(shape).map_err(|e| ort::Error::new(format!("{OP}: {e}")))?;
        let stats = [
            per_channel(ctx, 2, g.c, OP)?,
            per_channel(ctx, 3, g.c, OP)?,
            per_channel(ctx, 4, g.c, OP)?,
        ];
        let gamma = stats[0].try_extract_tensor::<f32>()?.1;
        let mean = stats[1].try_extract_tensor::<f32>()?.1;
        let var = stats[2].try_extract_tensor::<f32>()?.1;
        if x.len() != g.len() || dy.len() != g.len() {
            return Err(ort::Error::new(format!(
                "{OP}: buffer sizes do not match {shape:?}"
            )));
        }
        per_channel_outputs(ctx, OP, shape, g, |ch, planes| {
            bn_backward_channel(g, (dy, x), ch, (gamma[ch], mean[ch], var[ch], eps), planes)
        })
    }))
}
