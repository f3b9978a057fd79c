//! Reverse-mode differentiation of a [`Graph`]: for each op a vector-Jacobian product (VJP)
//! emitted as further ordinary ai.onnx nodes, so forward pass, backward pass and optimizer
//! update all run as one inference graph in ONNX Runtime.
//!
//! [`gradients`] walks the nodes that lie between the requested parameters and the scalar loss
//! in reverse topological order, sums the contributions each value receives, and returns one
//! gradient value per parameter. Values that do not depend on a parameter (the input batch,
//! constants, anything behind [`Graph::stop_gradient`]) get no backward nodes at all, so e.g.
//! the first layer's input gradient `dL/dX` is never computed.
//!
//! Broadcasting binary ops are un-broadcast with `ReduceSum(keepdims=1)` + `Reshape` over the
//! statically known broadcast axes. A convolution's input gradient is a `Conv` with the
//! flipped kernel (stride 1) or a `ConvTranspose` (strided); its weight gradient is a sum of
//! products of the input's patches (cbound's `Im2Col`) with dY over chunks of the batch. Conv gradients run on ONNX
//! Runtime's CPU provider in f32 (ORT has no f64 Conv kernels).

use std::collections::HashMap;

use super::graph::{DType, GemmAttrs, Graph, GraphError, Node, Op, Reduction, ValueId, ValueKind};

#[derive(Debug, thiserror::Error)]
pub enum AutodiffError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(
        "the loss `{name}` must be a float scalar (one element), has shape {shape:?} and dtype {dtype}"
    )]
    NotScalar {
        name: String,
        shape: Vec<usize>,
        dtype: &'static str,
    },
    #[error("cannot differentiate `{op}`: {detail}")]
    Unsupported { op: &'static str, detail: String },
}

pub type AdResult<T> = Result<T, AutodiffError>;

fn unsupported(op: &'static str, detail: impl Into<String>) -> AutodiffError {
    AutodiffError::Unsupported {
        op,
        detail: detail.into(),
    }
}

/// Appends the backward pass of `loss` to `g` and returns `d loss / d p` for every `p` in `wrt`
/// (same order, same shapes). A parameter the loss does not depend on gets an all-zero gradient.
pub fn gradients(g: &mut Graph, loss: ValueId, wrt: &[ValueId]) -> AdResult<Vec<ValueId>> {
    gradients_scaled(g, loss, wrt, 1.0)
}

/// As [`gradients`] but returns `scale * d loss / d p`. The backward pass is linear in its
/// seed, so a constant factor (e.g. Adam's `1 - beta1`) is folded in for free instead of
/// costing an elementwise pass over every parameter.
pub fn gradients_scaled(
    g: &mut Graph,
    loss: ValueId,
    wrt: &[ValueId],
    scale: f64,
) -> AdResult<Vec<ValueId>> {
    gradients_seeded(g, loss, wrt, Seed::Constant(scale))
}

/// The factor the backward pass starts from (`d loss / d loss`, 1 for plain gradients).
#[derive(Debug, Clone, Copy)]
pub enum Seed {
    /// A constant baked into the graph.
    Constant(f64),
    /// A value of the graph with the loss's shape and dtype, e.g. a loss scale that is an
    /// input of the step (dynamic loss scaling multiplies the seed by it).
    Value(ValueId),
}

/// As [`gradients_scaled`] with the seed given as a [`Seed`]: `seed * d loss / d p`.
pub fn gradients_seeded(
    g: &mut Graph,
    loss: ValueId,
    wrt: &[ValueId],
    seed: Seed,
) -> AdResult<Vec<ValueId>> {
    let info = g.value(loss);
    if !info.dtype.is_float() || info.numel() != 1 {
        return Err(AutodiffError::NotScalar {
            name: info.name.clone(),
            shape: info.shape.clone(),
            dtype: info.dtype.name(),
        });
    }

    // Forward sweep: which values depend on a parameter.
    let mut requires = vec![false; g.num_values()];
    for &p in wrt {
        requires[p.index()] = true;
    }
    for node in g.nodes() {
        if matches!(node.op, Op::StopGradient) {
            continue;
        }
        if node.inputs.iter().any(|v| requires[v.index()]) {
            for &o in &node.outputs {
                if g.dtype(o).is_float() {
                    requires[o.index()] = true;
                }
            }
        }
    }

    let mut contributions: HashMap<ValueId, Vec<ValueId>> = HashMap::new();
    if requires[loss.index()] {
        let shape = g.shape(loss).to_vec();
        let one = match (seed, shape.is_empty()) {
            (Seed::Constant(scale), true) => g.scalar_like(loss, scale)?,
            (Seed::Constant(scale), false) => {
                let data = super::graph::TensorData::filled(g.dtype(loss), 1, scale)
                    .ok_or_else(|| unsupported("seed", "loss dtype"))?;
                g.constant(data, &shape)?
            }
            (Seed::Value(v), _) => {
                if g.shape(v) != shape.as_slice() || g.dtype(v) != g.dtype(loss) {
                    return Err(unsupported(
                        "seed",
                        format!(
                            "the seed `{}` ({} {:?}) must have the loss's dtype and shape ({} {shape:?})",
                            g.name_of(v),
                            g.dtype(v).name(),
                            g.shape(v),
                            g.dtype(loss).name()
                        ),
                    ));
                }
                v
            }
        };
        contributions.insert(loss, vec![one]);
    }

    let num_forward_nodes = match g.value(loss).kind {
        ValueKind::Node(i) => i + 1,
        _ => 0,
    };
    for idx in (0..num_forward_nodes).rev() {
        let node = g.nodes()[idx].clone();
        if matches!(node.op, Op::StopGradient) {
            continue;
        }
        let needs: Vec<bool> = node.inputs.iter().map(|v| requires[v.index()]).collect();
        if !needs.iter().any(|&n| n) {
            continue;
        }
        let mut dys = Vec::with_capacity(node.outputs.len());
        let mut any = false;
        for o in &node.outputs {
            let dy = match contributions.remove(o) {
                Some(parts) => {
                    any = true;
                    Some(g.sum(&parts)?)
                }
                None => None,
            };
            dys.push(dy);
        }
        if !any {
            continue;
        }
        let dxs = vjp(g, &node, &dys, &needs)?;
        for ((input, dx), need) in node.inputs.iter().zip(dxs).zip(needs) {
            if let (Some(dx), true) = (dx, need) {
                contributions.entry(*input).or_default().push(dx);
            }
        }
    }

    let mut out = Vec::with_capacity(wrt.len());
    for &p in wrt {
        let grad = match contributions.remove(&p) {
            Some(parts) => g.sum(&parts)?,
            None => {
                let (dt, shape) = (g.dtype(p), g.shape(p).to_vec());
                g.filled(dt, &shape, 0.0)?
            }
        };
        out.push(grad);
    }
    Ok(out)
}

/// Sums `dy` over the axes along which `target` was broadcast, giving `target`'s shape.
pub fn unbroadcast(g: &mut Graph, dy: ValueId, target: &[usize]) -> AdResult<ValueId> {
    let ys = g.shape(dy).to_vec();
    if ys == target {
        return Ok(dy);
    }
    if target.len() > ys.len() {
        return Err(unsupported(
            "unbroadcast",
            format!("{target:?} is not broadcast to {ys:?}"),
        ));
    }
    let lead = ys.len() - target.len();
    let leading_rows_only = ys.len() == 2
        && target.last() == Some(&ys[1])
        && target.iter().rev().skip(1).all(|&d| d == 1);
    if leading_rows_only && g.dtype(dy).is_float() {
        // Column sums of a matrix (bias gradients) as ones[1, N] x dY: ONNX Runtime's
        // ReduceSum over axis 0 is ~10x slower than this GEMV (0.68 vs 0.06 ms at 512x512).
        let ones = g.filled(g.dtype(dy), &[1, ys[0]], 1.0)?;
        let sums = g.gemm(ones, dy, None, GemmAttrs::new(1.0, false, false))?;
        return Ok(g.reshape(sums, target)?);
    }
    let mut axes: Vec<usize> = (0..lead).collect();
    for (i, &t) in target.iter().enumerate() {
        if t == 1 && ys[lead + i] != 1 {
            axes.push(lead + i);
        } else if t != ys[lead + i] {
            return Err(unsupported(
                "unbroadcast",
                format!("{target:?} is not broadcast to {ys:?}"),
            ));
        }
    }
    let reduced = if axes.is_empty() {
        dy
    } else {
        g.reduce_sum(dy, &axes, true)?
    };
    Ok(g.reshape(reduced, target)?)
}

fn zeros_like(g: &mut Graph, v: ValueId) -> AdResult<ValueId> {
    let (dt, shape) = (g.dtype(v), g.shape(v).to_vec());
    Ok(g.filled(dt, &shape, 0.0)?)
}

fn keep_shape(shape: &[usize], axes: &[usize], keepdims: bool, dy_shape: &[usize]) -> Vec<usize> {
    if keepdims {
        return dy_shape.to_vec();
    }
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect()
}

/// Padding that makes ConvTranspose/pool-backward reproduce the forward input size exactly.
fn output_padding(
    input_hw: &[usize],
    kernel_eff: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
    out_hw: &[usize],
) -> [usize; 2] {
    let mut op = [0; 2];
    for i in 0..2 {
        op[i] = input_hw[i] + pads[i] + pads[i + 2] - kernel_eff[i] - strides[i] * (out_hw[i] - 1);
    }
    op
}

/// dL/dX of a group-1, dilation-1 convolution. With stride 1 and pads smaller than the kernel
/// it is itself a convolution of dY with the kernel flipped in space and its two channel axes
/// swapped, padded by `k - 1 - pad`: ONNX Runtime runs that through the same im2col + GEMM path
/// as the forward pass, 1.6-2x faster than its `ConvTranspose` on ResNet-18's shapes (measured
/// in isolation on 2 threads). Strided convolutions keep `ConvTranspose`.
#[allow(clippy::too_many_arguments)]
fn conv_input_grad(
    g: &mut Graph,
    op_name: &'static str,
    dy: ValueId,
    w: ValueId,
    xs: &[usize],
    ws: &[usize],
    ys: &[usize],
    strides: [usize; 2],
    pads: [usize; 4],
) -> AdResult<ValueId> {
    let (kh, kw) = (ws[2], ws[3]);
    let flip_pads =
        strides == [1, 1] && pads[0] < kh && pads[2] < kh && pads[1] < kw && pads[3] < kw;
    let dx = if flip_pads {
        let wt = g.flip_filter(w)?;
        let p = [
            kh - 1 - pads[0],
            kw - 1 - pads[1],
            kh - 1 - pads[2],
            kw - 1 - pads[3],
        ];
        g.conv2d(dy, wt, None, [1, 1], p, 1)?
    } else {
        let op = output_padding(&xs[2..], [kh, kw], strides, pads, &ys[2..]);
        g.conv_transpose2d(dy, w, strides, pads, op, 1)?
    };
    if g.shape(dx) != xs {
        return Err(unsupported(
            op_name,
            format!("input gradient shape {:?} != {xs:?}", g.shape(dx)),
        ));
    }
    Ok(dx)
}

/// Columns of one weight-gradient product: the batch is cut into chunks of whole images with
/// at most this many output pixels, so a chunk's patches (2.3 MiB at 64 channels and a 3x3
/// kernel) are still in cache when its `Gemm` reads them. Measured on ResNet-18's shapes
/// (2 threads, AVX-512 Xeon): ONNX Runtime's `Gemm` over one whole batch of 64 images of
/// 32x32 (inner dimension 65,536) ran at 146-181 GFLOP/s, with an inner dimension of 1,024-4,096
/// at 300-330 in isolation; in the step, 1,024 and 4,096 gave the same step time.
const WEIGHT_GRAD_COLUMNS: usize = 1024;

/// The largest divisor of `n` that is at most `cap` (at least 1).
fn largest_divisor_at_most(n: usize, cap: usize) -> usize {
    (1..=cap.min(n))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1)
}

/// dL/dW of a group-1, dilation-1 convolution, accumulated over chunks of the batch:
/// `dW^T = sum_chunks P_c . dY_c^T`, one `Gemm` per chunk adding to the previous one's result,
/// where `P_c` (C*kh*kw x chunk pixels) holds the chunk's input patches ([`Op::Im2Col`]) and
/// `dY_c` (Co x chunk pixels) is dY with channels first. The patches come from cbound's
/// `Im2Col` kernel where the graph allows it (one pass, no padded copy), else from the same
/// tensor built with ai.onnx nodes; the products are the same nodes either way, so both
/// graphs give the same bits.
fn conv_weight_grad(
    g: &mut Graph,
    x: ValueId,
    dy: ValueId,
    ws: &[usize],
    ys: &[usize],
    strides: [usize; 2],
    pads: [usize; 4],
) -> AdResult<ValueId> {
    let (co, c, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let (n, oh, ow) = (ys[0], ys[2], ys[3]);
    let images = largest_divisor_at_most(n, (WEIGHT_GRAD_COLUMNS / (oh * ow)).max(1));
    let cols = images * oh * ow;
    let kernel_patches = g.custom_kernels() && g.dtype(x) == DType::F32;
    let dyt = g.transpose(dy, &[1, 0, 2, 3])?;
    let dyt = g.reshape(dyt, &[co, n * oh * ow])?;
    let mut acc: Option<ValueId> = None;
    for chunk in 0..n / images {
        let range = [images, chunk];
        let p = if kernel_patches {
            g.im2col(x, [kh, kw], strides, pads, range)?
        } else {
            g.im2col_onnx(x, [kh, kw], strides, pads, range)?
        };
        let d = if images == n {
            dyt
        } else {
            g.slice(dyt, &[chunk * cols], &[(chunk + 1) * cols], &[1])?
        };
        acc = Some(g.gemm(p, d, acc, GemmAttrs::new(1.0, false, true))?);
    }
    let dwt = acc.ok_or_else(|| unsupported("Conv", "empty batch"))?;
    let dw = g.transpose(dwt, &[1, 0])?;
    Ok(g.reshape(dw, &[co, c, kh, kw])?)
}

/// The VJP of one node: one optional gradient per input, `None` where `needs` is false or the
/// input is not differentiable (indices, shapes, conditions).
fn vjp(
    g: &mut Graph,
    node: &Node,
    dys: &[Option<ValueId>],
    needs: &[bool],
) -> AdResult<Vec<Option<ValueId>>> {
    let ins = &node.inputs;
    let n_in = ins.len();
    let mut out: Vec<Option<ValueId>> = vec![None; n_in];
    let op_name = node.op.onnx_name();
    if let Op::Split { axis, .. } = &node.op {
        // Outputs without a gradient contribute zeros to the concatenation.
        let mut parts = Vec::with_capacity(dys.len());
        for (o, d) in node.outputs.iter().zip(dys) {
            parts.push(match d {
                Some(d) => *d,
                None => zeros_like(g, *o)?,
            });
        }
        out[0] = Some(g.concat(&parts, *axis)?);
        return Ok(out);
    }
    let dy = match dys.first().copied().flatten() {
        Some(d) => d,
        None => return Ok(out),
    };
    let y = node.outputs.first().copied();
    let shape_of = |g: &Graph, v: ValueId| g.shape(v).to_vec();

    match &node.op {
        Op::Add => {
            if needs[0] {
                out[0] = Some(unbroadcast(g, dy, &shape_of(g, ins[0]))?);
            }
            if needs[1] {
                out[1] = Some(unbroadcast(g, dy, &shape_of(g, ins[1]))?);
            }
        }
        Op::Sub => {
            if needs[0] {
                out[0] = Some(unbroadcast(g, dy, &shape_of(g, ins[0]))?);
            }
            if needs[1] {
                let n = g.neg(dy)?;
                out[1] = Some(unbroadcast(g, n, &shape_of(g, ins[1]))?);
            }
        }
        Op::Mul => {
            if needs[0] {
                let t = g.mul(dy, ins[1])?;
                out[0] = Some(unbroadcast(g, t, &shape_of(g, ins[0]))?);
            }
            if needs[1] {
                let t = g.mul(dy, ins[0])?;
                out[1] = Some(unbroadcast(g, t, &shape_of(g, ins[1]))?);
            }
        }
        Op::Div => {
            let t = g.div(dy, ins[1])?;
            if needs[0] {
                out[0] = Some(unbroadcast(g, t, &shape_of(g, ins[0]))?);
            }
            if needs[1] {
                let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
                let ty = g.mul(t, y)?;
                let n = g.neg(ty)?;
                out[1] = Some(unbroadcast(g, n, &shape_of(g, ins[1]))?);
            }
        }
        Op::Neg => out[0] = Some(g.neg(dy)?),
        Op::Relu => {
            // dy * (y > 0) from the forward output (see `Graph::relu_grad` for the forms).
            let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
            out[0] = Some(g.relu_grad(dy, y)?);
        }
        Op::Exp => {
            let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
            out[0] = Some(g.mul(dy, y)?);
        }
        Op::Log => out[0] = Some(g.div(dy, ins[0])?),
        Op::Sqrt => {
            let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
            let t = g.div(dy, y)?;
            out[0] = Some(g.scale(t, 0.5)?);
        }
        Op::Tanh => {
            let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
            let yy = g.mul(y, y)?;
            let one = g.scalar_like(y, 1.0)?;
            let d = g.sub(one, yy)?;
            out[0] = Some(g.mul(dy, d)?);
        }
        Op::Sigmoid => {
            let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
            let one = g.scalar_like(y, 1.0)?;
            let om = g.sub(one, y)?;
            let d = g.mul(y, om)?;
            out[0] = Some(g.mul(dy, d)?);
        }
        Op::Pow => {
            // d/da = b a^(b-1); d/db = y ln a (only meaningful for a > 0).
            let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
            if needs[0] {
                let one = g.scalar_like(ins[1], 1.0)?;
                let bm1 = g.sub(ins[1], one)?;
                let p = g.pow(ins[0], bm1)?;
                let t = g.mul(p, ins[1])?;
                let t = g.mul(dy, t)?;
                out[0] = Some(unbroadcast(g, t, &shape_of(g, ins[0]))?);
            }
            if needs[1] {
                let la = g.log(ins[0])?;
                let t = g.mul(y, la)?;
                let t = g.mul(dy, t)?;
                out[1] = Some(unbroadcast(g, t, &shape_of(g, ins[1]))?);
            }
        }
        Op::MatMul => {
            if needs[0] {
                out[0] = Some(g.gemm(dy, ins[1], None, GemmAttrs::new(1.0, false, true))?);
            }
            if needs[1] {
                out[1] = Some(g.gemm(ins[0], dy, None, GemmAttrs::new(1.0, true, false))?);
            }
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let (a, b, alpha) = (ins[0], ins[1], *alpha);
            if needs[0] {
                // dA = alpha * dY op(B)^T, transposed back when A was used transposed.
                out[0] = Some(match (*trans_a, *trans_b) {
                    (false, false) => g.gemm(dy, b, None, GemmAttrs::new(alpha, false, true))?,
                    (false, true) => g.gemm(dy, b, None, GemmAttrs::new(alpha, false, false))?,
                    (true, false) => g.gemm(b, dy, None, GemmAttrs::new(alpha, false, true))?,
                    (true, true) => g.gemm(b, dy, None, GemmAttrs::new(alpha, true, true))?,
                });
            }
            if needs[1] {
                // dB = alpha * op(A)^T dY, transposed back when B was used transposed.
                out[1] = Some(match (*trans_a, *trans_b) {
                    (false, false) => g.gemm(a, dy, None, GemmAttrs::new(alpha, true, false))?,
                    (true, false) => g.gemm(a, dy, None, GemmAttrs::new(alpha, false, false))?,
                    (false, true) => g.gemm(dy, a, None, GemmAttrs::new(alpha, true, false))?,
                    (true, true) => g.gemm(dy, a, None, GemmAttrs::new(alpha, true, true))?,
                });
            }
            if n_in > 2 && needs[2] {
                let scaled = if *beta == 1.0 {
                    dy
                } else {
                    g.scale(dy, f64::from(*beta))?
                };
                out[2] = Some(unbroadcast(g, scaled, &shape_of(g, ins[2]))?);
            }
        }
        Op::ReduceSum { axes, keepdims } | Op::ReduceMean { axes, keepdims } => {
            let xs = shape_of(g, ins[0]);
            let ks = keep_shape(&xs, axes, *keepdims, g.shape(dy));
            let mut d = g.reshape(dy, &ks)?;
            if matches!(node.op, Op::ReduceMean { .. }) {
                let count: usize = axes.iter().map(|&a| xs[a]).product();
                d = g.scale(d, 1.0 / count as f64)?;
            }
            out[0] = Some(g.expand(d, &xs)?);
        }
        Op::ReduceMax { axes, keepdims } => {
            // Ties share the gradient equally.
            let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
            let xs = shape_of(g, ins[0]);
            let ks = keep_shape(&xs, axes, *keepdims, g.shape(dy));
            let yk = g.reshape(y, &ks)?;
            let dyk = g.reshape(dy, &ks)?;
            let eq = g.equal(ins[0], yk)?;
            let mask = g.cast(eq, g.dtype(dy))?;
            let count = g.reduce_sum(mask, axes, true)?;
            let share = g.div(dyk, count)?;
            out[0] = Some(g.mul(mask, share)?);
        }
        Op::Softmax { axis } => {
            let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
            let dyy = g.mul(dy, y)?;
            let s = g.reduce_sum(dyy, &[*axis], true)?;
            let t = g.sub(dy, s)?;
            out[0] = Some(g.mul(y, t)?);
        }
        Op::LogSoftmax { axis } => {
            let y = y.ok_or_else(|| unsupported(op_name, "missing output"))?;
            let s = g.reduce_sum(dy, &[*axis], true)?;
            let p = g.exp(y)?;
            let ps = g.mul(p, s)?;
            out[0] = Some(g.sub(dy, ps)?);
        }
        Op::Transpose { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            out[0] = Some(g.transpose(dy, &inv)?);
        }
        Op::Reshape { .. } | Op::Flatten { .. } | Op::Unsqueeze { .. } => {
            let xs = shape_of(g, ins[0]);
            out[0] = Some(g.reshape(dy, &xs)?);
        }
        Op::Identity => out[0] = Some(dy),
        Op::StopGradient => {}
        Op::Conv {
            strides,
            pads,
            dilations,
            group,
            ..
        } => {
            if *group != 1 || *dilations != [1, 1] {
                return Err(unsupported(
                    op_name,
                    "only group 1, dilation 1 convolutions are differentiable",
                ));
            }
            let (xs, ws, ys) = (shape_of(g, ins[0]), shape_of(g, ins[1]), shape_of(g, dy));
            if needs[0] {
                out[0] = Some(conv_input_grad(
                    g, op_name, dy, ins[1], &xs, &ws, &ys, *strides, *pads,
                )?);
            }
            if needs[1] {
                out[1] = Some(conv_weight_grad(g, ins[0], dy, &ws, &ys, *strides, *pads)?);
            }
            if n_in > 2 && needs[2] {
                out[2] = Some(g.reduce_sum(dy, &[0, 2, 3], false)?);
            }
        }
        Op::AveragePool {
            kernel,
            strides,
            pads,
        } => {
            // count_include_pad=1: every window divides by kh*kw, so the backward pass is a
            // depthwise ConvTranspose with a constant 1/(kh*kw) kernel.
            let (xs, ys) = (shape_of(g, ins[0]), shape_of(g, dy));
            let c = xs[1];
            let k = kernel[0] * kernel[1];
            let data = super::graph::TensorData::filled(g.dtype(dy), c * k, 1.0 / k as f64)
                .ok_or_else(|| unsupported(op_name, "dtype"))?;
            let w = g.constant(data, &[c, 1, kernel[0], kernel[1]])?;
            let op = output_padding(&xs[2..], *kernel, *strides, *pads, &ys[2..]);
            out[0] = Some(g.conv_transpose2d(dy, w, *strides, *pads, op, c)?);
        }
        Op::MaxPool { .. } => {
            let idx = node
                .outputs
                .get(1)
                .copied()
                .ok_or_else(|| unsupported(op_name, "missing indices output"))?;
            let xs = shape_of(g, ins[0]);
            let n_x: usize = xs.iter().product();
            let n_y = g.value(dy).numel();
            let flat_idx = g.reshape(idx, &[n_y])?;
            let flat_dy = g.reshape(dy, &[n_y])?;
            let zeros = g.filled(g.dtype(dy), &[n_x], 0.0)?;
            let sc = g.scatter_elements(zeros, flat_idx, flat_dy, 0, Reduction::Add)?;
            out[0] = Some(g.reshape(sc, &xs)?);
        }
        Op::Concat { axis } => {
            let sizes: Vec<usize> = ins.iter().map(|&v| g.shape(v)[*axis]).collect();
            let parts = g.split(dy, *axis, &sizes)?;
            for (i, p) in parts.into_iter().enumerate() {
                if needs[i] {
                    out[i] = Some(p);
                }
            }
        }
        Op::Split { .. } => {}
        Op::Expand { .. } => out[0] = Some(unbroadcast(g, dy, &shape_of(g, ins[0]))?),
        Op::Gather { axis } => {
            if *axis != 0 {
                return Err(unsupported(op_name, "only axis 0 is differentiable"));
            }
            let data_shape = shape_of(g, ins[0]);
            let rank_i = g.shape(ins[1]).len();
            let idx = g.unsqueeze(ins[1], &[rank_i])?;
            let zeros = g.filled(g.dtype(dy), &data_shape, 0.0)?;
            out[0] = Some(g.scatter_nd(zeros, idx, dy, Reduction::Add)?);
        }
        Op::GatherElements { axis } => {
            let zeros = zeros_like(g, ins[0])?;
            out[0] = Some(g.scatter_elements(zeros, ins[1], dy, *axis, Reduction::Add)?);
        }
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => {
            if steps.iter().any(|&s| s != 1) {
                return Err(unsupported(
                    op_name,
                    "only step-1 slices are differentiable",
                ));
            }
            let xs = shape_of(g, ins[0]);
            let r = xs.len();
            let mut pads = vec![0; 2 * r];
            for ((&a, &s), &e) in axes.iter().zip(starts).zip(ends) {
                pads[a] = s;
                pads[a + r] = xs[a] - e;
            }
            out[0] = Some(g.pad(dy, &pads)?);
        }
        Op::Pad { pads } => {
            let xs = shape_of(g, ins[0]);
            let r = xs.len();
            let axes: Vec<usize> = (0..r).collect();
            let starts: Vec<usize> = (0..r).map(|i| pads[i]).collect();
            let ends: Vec<usize> = (0..r).map(|i| pads[i] + xs[i]).collect();
            out[0] = Some(g.slice(dy, &starts, &ends, &axes)?);
        }
        Op::Where => {
            let zero = g.scalar_like(dy, 0.0)?;
            if needs[1] {
                let t = g.where_(ins[0], dy, zero)?;
                out[1] = Some(unbroadcast(g, t, &shape_of(g, ins[1]))?);
            }
            if needs[2] {
                let t = g.where_(ins[0], zero, dy)?;
                out[2] = Some(unbroadcast(g, t, &shape_of(g, ins[2]))?);
            }
        }
        Op::Cast { .. } => {
            let src = g.dtype(ins[0]);
            if src.is_float() {
                out[0] = Some(g.cast(dy, src)?);
            }
        }
        Op::Sum => {
            for i in 0..n_in {
                if needs[i] {
                    out[i] = Some(unbroadcast(g, dy, &shape_of(g, ins[i]))?);
                }
            }
        }
        // Piecewise constant: the derivative is zero almost everywhere.
        Op::Sign | Op::Equal | Op::Greater | Op::ConstantOfShape { .. } => {}
        Op::BatchNormalization { .. } => {
            return Err(unsupported(
                op_name,
                "inference-mode batch norm has no VJP; training graphs use Graph::batch_norm_train",
            ));
        }
        Op::BatchNormTrain { epsilon } => {
            // The batch statistics feed only the running-statistics update, behind a
            // stop-gradient; a gradient arriving through them has no VJP here.
            if dys.iter().skip(1).any(Option::is_some) {
                return Err(unsupported(
                    op_name,
                    "gradients through the batch mean and variance outputs are not implemented",
                ));
            }
            let stats = [node.outputs[1], node.outputs[2]];
            let [dx, dgamma, dbeta] =
                g.batch_norm_train_grad(dy, ins[0], ins[1], stats, *epsilon)?;
            out = vec![Some(dx), Some(dgamma), Some(dbeta)];
        }
        Op::ConvTranspose { .. }
        | Op::ScatterElements { .. }
        | Op::ScatterNd { .. }
        | Op::AdamUpdate { .. }
        | Op::Im2Col { .. }
        | Op::BatchNormTrainGrad { .. }
        | Op::ReluGrad
        | Op::FlipFilter => {
            return Err(unsupported(
                op_name,
                "no VJP is implemented (only used inside backward passes)",
            ));
        }
    }
    // Only differentiable floating inputs receive gradients.
    for (i, o) in out.iter_mut().enumerate() {
        if !needs[i] || g.dtype(ins[i]) == DType::I64 || g.dtype(ins[i]) == DType::Bool {
            *o = None;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Every VJP against central finite differences, both sides run through ONNX Runtime.
    //! f64 where ORT has f64 kernels (tight tolerances); Conv/pool cases in f32 (ORT has no f64
    //! Conv/AveragePool), where the loss is piecewise linear in the inputs so central
    //! differences are exact up to rounding.

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Uniform};

    use super::*;
    use crate::graph::{GraphResult, TensorData};
    use crate::testutil::{Data, Runner};

    struct Check {
        dtype: DType,
        eps: f64,
        atol: f64,
        rtol: f64,
    }

    const F64: Check = Check {
        dtype: DType::F64,
        eps: 1e-6,
        atol: 1e-7,
        rtol: 1e-6,
    };

    const F32_LINEAR: Check = Check {
        dtype: DType::F32,
        eps: 1e-2,
        atol: 2e-3,
        rtol: 1e-2,
    };

    fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        let d = Uniform::new(lo, hi).expect("valid range");
        (0..n).map(|_| d.sample(rng)).collect()
    }

    fn data(dtype: DType, v: &[f64]) -> Data {
        match dtype {
            DType::F32 => Data::F32(v.iter().map(|&x| x as f32).collect()),
            _ => Data::F64(v.to_vec()),
        }
    }

    /// Builds `loss = sum(f(x...) * r)` for a fixed random `r`, differentiates it, and compares
    /// every gradient entry with central differences.
    fn gradcheck(
        name: &str,
        c: &Check,
        shapes: &[&[usize]],
        inits: Vec<Vec<f64>>,
        f: impl Fn(&mut Graph, &[ValueId]) -> GraphResult<ValueId>,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut g = Graph::new(name);
        let xs: Vec<ValueId> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| g.input(&format!("x{i}"), c.dtype, s).expect("input"))
            .collect();
        let y = f(&mut g, &xs).expect("forward builds");
        let n_y = g.value(y).numel();
        let r = uniform(&mut rng, n_y, -1.0, 1.0);
        let r_data = match c.dtype {
            DType::F32 => TensorData::F32(r.iter().map(|&x| x as f32).collect()),
            _ => TensorData::F64(r),
        };
        let y_shape = g.shape(y).to_vec();
        let rv = g.constant(r_data, &y_shape).expect("constant");
        let prod = g.mul(y, rv).expect("mul");
        let loss = g.reduce_sum_all(prod).expect("sum");
        let grads = gradients(&mut g, loss, &xs).expect("gradients build");
        g.output(loss, "loss").expect("output");
        for (i, gr) in grads.iter().enumerate() {
            g.output(*gr, &format!("grad{i}")).expect("output");
        }
        let mut runner = Runner::new(&g);
        let feeds = |vals: &[Vec<f64>]| -> Vec<(ValueId, Data)> {
            xs.iter()
                .zip(vals)
                .map(|(&x, v)| (x, data(c.dtype, v)))
                .collect()
        };
        let base = runner.run(&feeds(&inits));
        for (i, x0) in inits.iter().enumerate() {
            let analytic = &base[&format!("grad{i}")];
            assert_eq!(
                analytic.len(),
                x0.len(),
                "{name}: gradient {i} has the wrong size"
            );
            for j in 0..x0.len() {
                let mut plus = inits.clone();
                plus[i][j] += c.eps;
                let mut minus = inits.clone();
                minus[i][j] -= c.eps;
                let lp = runner.run(&feeds(&plus))["loss"][0];
                let lm = runner.run(&feeds(&minus))["loss"][0];
                let numeric = (lp - lm) / (2.0 * c.eps);
                let a = analytic[j];
                assert!(
                    (a - numeric).abs() <= c.atol + c.rtol * numeric.abs(),
                    "{name}: d/dx{i}[{j}] analytic {a} vs numeric {numeric}"
                );
            }
        }
    }

    fn rand_inputs(shapes: &[&[usize]], lo: f64, hi: f64, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        shapes
            .iter()
            .map(|s| uniform(&mut rng, s.iter().product(), lo, hi))
            .collect()
    }

    /// Distinct, well-separated values (for max/relu kinks): a shuffled grid.
    fn separated(n: usize, seed: u64, offset: f64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v: Vec<f64> = (0..n)
            .map(|i| offset + 0.1 * i as f64 - 0.05 * n as f64)
            .collect();
        for i in (1..n).rev() {
            let j = Uniform::new_inclusive(0, i)
                .expect("range")
                .sample(&mut rng);
            v.swap(i, j);
        }
        v
    }

    fn binary_case(
        name: &str,
        a: &[usize],
        b: &[usize],
        lo: f64,
        hi: f64,
        op: fn(&mut Graph, ValueId, ValueId) -> GraphResult<ValueId>,
    ) {
        gradcheck(
            name,
            &F64,
            &[a, b],
            rand_inputs(&[a, b], lo, hi, 1),
            |g, x| op(g, x[0], x[1]),
        );
    }

    #[test]
    fn broadcasting_binary_ops() {
        for (a, b) in [
            (&[3, 4][..], &[4][..]),
            (&[3, 4], &[3, 1]),
            (&[1, 4], &[3, 1]),
            (&[2, 3], &[]),
        ] {
            binary_case("add", a, b, -1.0, 1.0, Graph::add);
            binary_case("sub", a, b, -1.0, 1.0, Graph::sub);
            binary_case("mul", a, b, -1.0, 1.0, Graph::mul);
            binary_case("div", a, b, 0.5, 2.0, Graph::div);
            binary_case("pow", a, b, 0.5, 2.0, Graph::pow);
        }
    }

    #[test]
    fn unary_ops() {
        let s: &[usize] = &[3, 4];
        type Unary = fn(&mut Graph, ValueId) -> GraphResult<ValueId>;
        let cases: [(&str, f64, f64, Unary); 8] = [
            ("neg", -1.0, 1.0, Graph::neg),
            ("exp", -1.0, 1.0, Graph::exp),
            ("log", 0.5, 2.0, Graph::log),
            ("sqrt", 0.5, 2.0, Graph::sqrt),
            ("tanh", -1.5, 1.5, Graph::tanh),
            ("sigmoid", -2.0, 2.0, Graph::sigmoid),
            ("identity", -1.0, 1.0, Graph::identity),
            ("relu", -1.0, 1.0, Graph::relu),
        ];
        gradcheck(
            "gelu",
            &F64,
            &[s],
            rand_inputs(&[s], -2.0, 2.0, 19),
            |g, x| crate::models::Activation::Gelu.apply(g, x[0]),
        );
        for (name, lo, hi, f) in cases {
            let init = if name == "relu" {
                vec![separated(12, 3, 0.03)]
            } else {
                rand_inputs(&[s], lo, hi, 2)
            };
            gradcheck(name, &F64, &[s], init, |g, x| f(g, x[0]));
        }
    }

    #[test]
    fn matmul_and_gemm() {
        gradcheck(
            "matmul",
            &F64,
            &[&[3, 4], &[4, 5]],
            rand_inputs(&[&[3, 4], &[4, 5]], -1.0, 1.0, 4),
            |g, x| g.matmul(x[0], x[1]),
        );
        for ta in [false, true] {
            for tb in [false, true] {
                let a: &[usize] = if ta { &[4, 3] } else { &[3, 4] };
                let b: &[usize] = if tb { &[5, 4] } else { &[4, 5] };
                let c: &[usize] = &[5];
                gradcheck(
                    "gemm",
                    &F64,
                    &[a, b, c],
                    rand_inputs(&[a, b, c], -1.0, 1.0, 5),
                    |g, x| {
                        g.gemm(
                            x[0],
                            x[1],
                            Some(x[2]),
                            GemmAttrs::new(0.7, ta, tb).with_beta(0.3),
                        )
                    },
                );
            }
        }
    }

    #[test]
    fn reductions_and_softmax() {
        let s: &[usize] = &[2, 3, 4];
        let init = || rand_inputs(&[s], -1.0, 1.0, 6);
        gradcheck("reduce_sum", &F64, &[s], init(), |g, x| {
            g.reduce_sum(x[0], &[1], false)
        });
        gradcheck("reduce_sum_keep", &F64, &[s], init(), |g, x| {
            g.reduce_sum(x[0], &[0, 2], true)
        });
        gradcheck("reduce_mean", &F64, &[s], init(), |g, x| {
            g.reduce_mean(x[0], &[2], false)
        });
        gradcheck(
            "reduce_max",
            &F64,
            &[s],
            vec![separated(24, 7, 0.0)],
            |g, x| g.reduce_max(x[0], &[1], true),
        );
        gradcheck("softmax", &F64, &[s], init(), |g, x| g.softmax(x[0], 1));
        gradcheck("log_softmax", &F64, &[s], init(), |g, x| {
            g.log_softmax(x[0], 2)
        });
        gradcheck("logsumexp", &F64, &[s], init(), |g, x| g.logsumexp(x[0], 2));
        gradcheck(
            "sum3",
            &F64,
            &[s, &[4], &[3, 1]],
            rand_inputs(&[s, &[4], &[3, 1]], -1.0, 1.0, 8),
            |g, x| g.sum(&[x[0], x[1], x[2]]),
        );
    }

    #[test]
    fn shape_ops() {
        let s: &[usize] = &[2, 3, 4];
        let init = || rand_inputs(&[s], -1.0, 1.0, 9);
        gradcheck("transpose", &F64, &[s], init(), |g, x| {
            g.transpose(x[0], &[2, 0, 1])
        });
        gradcheck("reshape", &F64, &[s], init(), |g, x| {
            g.reshape(x[0], &[6, 4])
        });
        gradcheck("flatten", &F64, &[s], init(), |g, x| g.flatten(x[0], 2));
        gradcheck("unsqueeze", &F64, &[s], init(), |g, x| {
            g.unsqueeze(x[0], &[0, 3])
        });
        gradcheck(
            "expand",
            &F64,
            &[&[3, 1]],
            rand_inputs(&[&[3, 1]], -1.0, 1.0, 10),
            |g, x| g.expand(x[0], &[2, 3, 4]),
        );
        gradcheck("slice", &F64, &[s], init(), |g, x| {
            g.slice(x[0], &[1, 1], &[3, 3], &[1, 2])
        });
        gradcheck("pad", &F64, &[s], init(), |g, x| {
            g.pad(x[0], &[0, 1, 0, 1, 0, 2])
        });
        gradcheck(
            "concat",
            &F64,
            &[&[2, 3], &[2, 2]],
            rand_inputs(&[&[2, 3], &[2, 2]], -1.0, 1.0, 11),
            |g, x| g.concat(&[x[0], x[1]], 1),
        );
        // Only one split output reaches the loss: the other half must get zeros.
        gradcheck(
            "split",
            &F64,
            &[&[5, 2]],
            rand_inputs(&[&[5, 2]], -1.0, 1.0, 12),
            |g, x| {
                let parts = g.split(x[0], 0, &[2, 3])?;
                g.exp(parts[1])
            },
        );
    }

    #[test]
    fn indexing_and_selection() {
        let init = rand_inputs(&[&[4, 3]], -1.0, 1.0, 13);
        gradcheck("gather", &F64, &[&[4, 3]], init.clone(), |g, x| {
            let idx = g.constant(TensorData::I64(vec![2, 0, 2, 3, 2]), &[5])?;
            g.gather(x[0], idx, 0)
        });
        gradcheck("gather_elements", &F64, &[&[4, 3]], init.clone(), |g, x| {
            let idx = g.constant(TensorData::I64(vec![0, 2, 2, 1, 0, 0, 1, 1]), &[4, 2])?;
            g.gather_elements(x[0], idx, 1)
        });
        gradcheck(
            "where",
            &F64,
            &[&[4, 3], &[3]],
            rand_inputs(&[&[4, 3], &[3]], -1.0, 1.0, 14),
            |g, x| {
                let zero = g.scalar(DType::F64, 0.0)?;
                let c = g.constant(
                    TensorData::F64((0..12).map(|i| f64::from(i % 3) - 1.0).collect()),
                    &[4, 3],
                )?;
                let cond = g.greater(c, zero)?;
                g.where_(cond, x[0], x[1])
            },
        );
    }

    #[test]
    fn cast_between_float_types() {
        // f64 -> f32 -> f64 rounds, so use a step far above f32 resolution.
        let c = Check {
            eps: 1e-3,
            atol: 1e-3,
            rtol: 1e-3,
            ..F64
        };
        gradcheck(
            "cast",
            &c,
            &[&[2, 3]],
            rand_inputs(&[&[2, 3]], -1.0, 1.0, 20),
            |g, x| {
                let lo = g.cast(x[0], DType::F32)?;
                let e = g.exp(lo)?;
                g.cast(e, DType::F64)
            },
        );
    }

    #[test]
    fn stop_gradient_blocks_its_branch() -> AdResult<()> {
        // d/dx sum(stop(x) * exp(x)) = x exp(x), not (1 + x) exp(x).
        let mut g = Graph::new("t");
        let x = g.input("x", DType::F64, &[3])?;
        let s = g.stop_gradient(x)?;
        let e = g.exp(x)?;
        let p = g.mul(s, e)?;
        let loss = g.reduce_sum_all(p)?;
        let grads = gradients(&mut g, loss, &[x])?;
        g.output(grads[0], "dx")?;
        let xv = vec![-0.5, 0.25, 1.5];
        let out = crate::testutil::run_graph(&g, &[(x, Data::F64(xv.clone()))]);
        for (d, x) in out["dx"].iter().zip(&xv) {
            assert!((d - x * x.exp()).abs() < 1e-12, "{d} vs {}", x * x.exp());
        }
        Ok(())
    }

    /// The weight gradient over several batch chunks (6 images of 30x30: one per chunk) equals
    /// a direct f64 sum over the batch, and the graph with cbound's Im2Col kernel and the
    /// ai.onnx one give the same bits.
    #[test]
    fn conv_weight_gradient_over_chunks_matches_a_direct_sum() {
        let (xs, ws) = ([6usize, 2, 30, 30], [3usize, 2, 3, 3]);
        let (strides, pads) = ([1, 1], [1, 0, 1, 2]);
        let x: Vec<f32> = (0..xs.iter().product::<usize>())
            .map(|i| ((i * 29 % 97) as f32 - 48.0) / 50.0)
            .collect();
        let w: Vec<f32> = (0..ws.iter().product::<usize>())
            .map(|i| ((i * 13 % 23) as f32 - 11.0) / 10.0)
            .collect();
        let run = |custom: bool| {
            let mut g = Graph::new("wgrad");
            g.set_custom_kernels(custom);
            let xv = g.input("x", DType::F32, &xs).expect("input");
            let wv = g.input("w", DType::F32, &ws).expect("input");
            let y = g.conv2d(xv, wv, None, strides, pads, 1).expect("conv");
            let ys = g.shape(y).to_vec();
            let r: Vec<f32> = (0..ys.iter().product::<usize>())
                .map(|i| ((i * 7 % 19) as f32 - 9.0) / 9.0)
                .collect();
            let rv = g.constant(TensorData::F32(r.clone()), &ys).expect("r");
            let prod = g.mul(y, rv).expect("mul");
            let loss = g.reduce_sum_all(prod).expect("sum");
            let dw = gradients(&mut g, loss, &[wv]).expect("gradients")[0];
            assert_eq!(
                g.nodes().iter().any(|n| matches!(n.op, Op::Im2Col { .. })),
                custom
            );
            g.output(dw, "dw").expect("output");
            let out = crate::testutil::run_graph(
                &g,
                &[(xv, Data::F32(x.clone())), (wv, Data::F32(w.clone()))],
            );
            (out["dw"].clone(), r, ys)
        };
        let (kernel, r, ys) = run(true);
        let (onnx, _, _) = run(false);
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&kernel), bits(&onnx));
        let (c, h, wd) = (xs[1], xs[2] as isize, xs[3] as isize);
        let (co, oh, ow) = (ys[1], ys[2], ys[3]);
        for o in 0..co {
            for ci in 0..c {
                for i in 0..3 {
                    for j in 0..3 {
                        let mut sum = 0.0f64;
                        for n in 0..xs[0] {
                            for a in 0..oh {
                                for b in 0..ow {
                                    let ih = (a + i) as isize - pads[0] as isize;
                                    let iw = (b + j) as isize - pads[1] as isize;
                                    if (0..h).contains(&ih) && (0..wd).contains(&iw) {
                                        let xi = ((n * c + ci) * xs[2] + ih as usize) * xs[3]
                                            + iw as usize;
                                        let ri = ((n * co + o) * oh + a) * ow + b;
                                        sum += f64::from(x[xi]) * f64::from(r[ri]);
                                    }
                                }
                            }
                        }
                        let got = kernel[((o * c + ci) * 3 + i) * 3 + j];
                        assert!(
                            (got - sum).abs() <= 1e-4 * sum.abs().max(1.0),
                            "dW[{o},{ci},{i},{j}] = {got}, direct sum {sum}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn conv_and_pool_f32() {
        let xs: &[usize] = &[2, 3, 7, 7];
        let ws: &[usize] = &[4, 3, 3, 3];
        let bs: &[usize] = &[4];
        let init = rand_inputs(&[xs, ws, bs], -1.0, 1.0, 15);
        gradcheck(
            "conv_s1",
            &F32_LINEAR,
            &[xs, ws, bs],
            init.clone(),
            |g, x| g.conv2d(x[0], x[1], Some(x[2]), [1, 1], [1, 1, 1, 1], 1),
        );
        // Stride 2 on an odd size leaves rows the kernel never reaches (output_padding/slice path).
        gradcheck(
            "conv_s2",
            &F32_LINEAR,
            &[xs, ws, bs],
            init.clone(),
            |g, x| g.conv2d(x[0], x[1], Some(x[2]), [2, 2], [1, 0, 0, 1], 1),
        );
        // Stride 1 with a non-square kernel and uneven pads (the flipped-kernel input gradient
        // and per-offset weight GEMMs on a rectangular grid), a 1x1 kernel without padding
        // (the unshifted single tap), and a pad as large as the kernel (ConvTranspose fallback).
        let wr: &[usize] = &[4, 3, 3, 2];
        gradcheck(
            "conv_s1_3x2_uneven",
            &F32_LINEAR,
            &[xs, wr],
            rand_inputs(&[xs, wr], -1.0, 1.0, 19),
            |g, x| g.conv2d(x[0], x[1], None, [1, 1], [0, 1, 2, 0], 1),
        );
        let w11: &[usize] = &[4, 3, 1, 1];
        gradcheck(
            "conv_1x1_s1",
            &F32_LINEAR,
            &[xs, w11],
            rand_inputs(&[xs, w11], -1.0, 1.0, 20),
            |g, x| g.conv2d(x[0], x[1], None, [1, 1], [0; 4], 1),
        );
        gradcheck(
            "conv_s1_pad_eq_kernel",
            &F32_LINEAR,
            &[xs, w11],
            rand_inputs(&[xs, w11], -1.0, 1.0, 26),
            |g, x| g.conv2d(x[0], x[1], None, [1, 1], [1, 0, 0, 1], 1),
        );
        let ps: &[usize] = &[1, 2, 6, 5];
        let pinit = rand_inputs(&[ps], -1.0, 1.0, 16);
        gradcheck("avgpool_2", &F32_LINEAR, &[ps], pinit.clone(), |g, x| {
            g.average_pool(x[0], [2, 2], [2, 2], [0; 4])
        });
        gradcheck("avgpool_3s2p1", &F32_LINEAR, &[ps], pinit, |g, x| {
            g.average_pool(x[0], [3, 3], [2, 2], [1, 1, 1, 1])
        });
        let sep = Check {
            eps: 1e-3,
            ..F32_LINEAR
        };
        gradcheck(
            "maxpool_2",
            &sep,
            &[ps],
            vec![separated(60, 17, 0.0)],
            |g, x| Ok(g.max_pool(x[0], [2, 2], [2, 2], [0; 4])?.0),
        );
        gradcheck(
            "maxpool_3s2p1",
            &sep,
            &[ps],
            vec![separated(60, 18, 0.0)],
            |g, x| Ok(g.max_pool(x[0], [3, 3], [2, 2], [1, 1, 1, 1])?.0),
        );
    }

    /// ResNet's pieces: training-mode batch norm (gradients through the batch statistics, for
    /// input, scale and shift), global average pooling, the stride-2 3x3 convolution on an even
    /// size and the stride-2 1x1 projection shortcut, and a residual addition.
    #[test]
    fn resnet_pieces() {
        let xs: &[usize] = &[3, 2, 3, 2];
        let cs: &[usize] = &[2];
        let init = rand_inputs(&[xs, cs, cs], -1.0, 1.0, 21);
        gradcheck("batch_norm_train", &F64, &[xs, cs, cs], init, |g, x| {
            let rm = g.filled(DType::F64, &[2], 0.0)?;
            let rv = g.filled(DType::F64, &[2], 1.0)?;
            Ok(g.batch_norm_train(x[0], x[1], x[2], rm, rv, 0.1, 1e-5)?.y)
        });
        // BN followed by a nonlinearity, so the loss is not just linear in the normalised batch.
        let init = rand_inputs(&[xs, cs, cs], -1.0, 1.0, 22);
        gradcheck("batch_norm_tanh", &F64, &[xs, cs, cs], init, |g, x| {
            let rm = g.filled(DType::F64, &[2], 0.0)?;
            let rv = g.filled(DType::F64, &[2], 1.0)?;
            let y = g.batch_norm_train(x[0], x[1], x[2], rm, rv, 0.1, 1e-5)?.y;
            g.tanh(y)
        });
        gradcheck(
            "global_average_pool",
            &F64,
            &[xs],
            rand_inputs(&[xs], -1.0, 1.0, 23),
            |g, x| g.global_average_pool(x[0]),
        );
        let x8: &[usize] = &[2, 3, 6, 6];
        let w3: &[usize] = &[4, 3, 3, 3];
        let w1: &[usize] = &[4, 3, 1, 1];
        gradcheck(
            "conv3x3_s2_even",
            &F32_LINEAR,
            &[x8, w3],
            rand_inputs(&[x8, w3], -1.0, 1.0, 24),
            |g, x| g.conv2d(x[0], x[1], None, [2, 2], [1, 1, 1, 1], 1),
        );
        gradcheck(
            "conv1x1_s2_projection",
            &F32_LINEAR,
            &[x8, w1],
            rand_inputs(&[x8, w1], -1.0, 1.0, 25),
            |g, x| g.conv2d(x[0], x[1], None, [2, 2], [0; 4], 1),
        );
        // out = conv_b(conv_a(x)) + proj(x): both branches reach x and the weights.
        let wb: &[usize] = &[4, 4, 3, 3];
        gradcheck(
            "residual_add",
            &F32_LINEAR,
            &[x8, w3, wb, w1],
            rand_inputs(&[x8, w3, wb, w1], -1.0, 1.0, 26),
            |g, x| {
                let a = g.conv2d(x[0], x[1], None, [2, 2], [1, 1, 1, 1], 1)?;
                let b = g.conv2d(a, x[2], None, [1, 1], [1, 1, 1, 1], 1)?;
                let s = g.conv2d(x[0], x[3], None, [2, 2], [0; 4], 1)?;
                g.add(b, s)
            },
        );
    }

    #[test]
    fn unreachable_parameter_gets_zero_gradient_and_input_gets_none() -> AdResult<()> {
        let mut g = Graph::new("t");
        let x = g.input("x", DType::F32, &[2, 3])?;
        let w = g.input("w", DType::F32, &[4, 3])?;
        let unused = g.input("unused", DType::F32, &[5])?;
        let y = g.linear(x, w, None)?;
        let loss = g.reduce_sum_all(y)?;
        let before = g.nodes().len();
        let grads = gradients(&mut g, loss, &[w, unused])?;
        // dL/dW = ones^T X needs one Gemm (plus the ReduceSum VJP); no node computes dL/dX.
        let gemms = g.nodes()[before..]
            .iter()
            .filter(|n| matches!(n.op, Op::Gemm { .. }))
            .count();
        assert_eq!(gemms, 1);
        assert!(matches!(
            g.nodes().last().map(|n| &n.op),
            Some(Op::ConstantOfShape { .. })
        ));
        assert_eq!(g.shape(grads[1]), &[5]);
        Ok(())
    }

    #[test]
    fn non_scalar_loss_is_rejected() -> AdResult<()> {
        let mut g = Graph::new("t");
        let x = g.input("x", DType::F32, &[2])?;
        let y = g.exp(x)?;
        assert!(matches!(
            gradients(&mut g, y, &[x]),
            Err(AutodiffError::NotScalar { .. })
        ));
        Ok(())
    }
}
