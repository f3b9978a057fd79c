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

use ort::operator::{
    BoxedKernel, ComputeContext, KernelContext, Operator, OperatorDomain, OperatorInput,
    OperatorOutput,
};
use ort::value::TensorElementType;

use super::graph::{conv_out, CBOUND_DOMAIN};

/// Elements per parallel chunk: large enough that a chunk's dispatch is negligible, small
/// enough that the study's largest tensor (1.5 M elements) splits over many threads.
const CHUNK: usize = 1 << 15;

/// The per-element update; see [`crate::graph::Op::AdamUpdate`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamAttrs {
    pub beta1: f32,
    pub beta2: f32,
    pub g2_scale: f32,
    pub l2: f32,
}

/// Scalars fed per step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamScalars {
    pub step_size: f32,
    pub eps_hat: f32,
    pub decay: f32,
}

/// Updates `p`, `m`, `v` (already holding the inputs) in place from the gradient `g`.
pub(crate) fn adam_chunk(
    a: AdamAttrs,
    s: AdamScalars,
    g: &[f32],
    (p_in, m_in, v_in): (&[f32], &[f32], &[f32]),
    (p_out, m_out, v_out): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let n = g.len();
    let (p_in, m_in, v_in) = (&p_in[..n], &m_in[..n], &v_in[..n]);
    let (p_out, m_out, v_out) = (&mut p_out[..n], &mut m_out[..n], &mut v_out[..n]);
    for i in 0..n {
        let p = p_in[i];
        let gs = if a.l2 != 0.0 { g[i] + p * a.l2 } else { g[i] };
        let m = m_in[i] * a.beta1 + gs;
        let gg = gs * gs;
        let g2 = if a.g2_scale != 1.0 {
            gg * a.g2_scale
        } else {
            gg
        };
        let v = v_in[i] * a.beta2 + g2;
        let upd = m / (v.sqrt() + s.eps_hat) * s.step_size;
        p_out[i] = p * s.decay - upd;
        m_out[i] = m;
        v_out[i] = v;
    }
}

struct AdamUpdate;

fn missing(op: &str, what: &str) -> ort::Error {
    ort::Error::new(format!("{op}: missing {what}"))
}

/// Raw output pointers shared by the parallel chunks, which write disjoint ranges.
struct Outs {
    p: *mut f32,
    m: *mut f32,
    v: *mut f32,
}

// SAFETY: the pointers are only dereferenced on disjoint chunk ranges (see `compute`), while the
// buffers they point into outlive the parallel loop.
unsafe impl Send for Outs {}
unsafe impl Sync for Outs {}

impl Outs {
    /// The three outputs' elements `lo..lo + len`.
    ///
    /// # Safety
    /// `lo + len` must not exceed the buffers' length, and no other live slice may overlap
    /// this range.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, lo: usize, len: usize) -> (&mut [f32], &mut [f32], &mut [f32]) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.p.add(lo), len),
                std::slice::from_raw_parts_mut(self.m.add(lo), len),
                std::slice::from_raw_parts_mut(self.v.add(lo), len),
            )
        }
    }
}

impl Operator for AdamUpdate {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "AdamUpdate"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [const { OperatorInput::required(TensorElementType::Float32) }; 7]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [const { OperatorOutput::required(TensorElementType::Float32) }; 3]
    }

    fn create_kernel<'attr>(
        &self,
        kctx: &KernelContext<'attr>,
    ) -> ort::Result<Self::Kernel<'attr>> {
        let attr = |name: &str| -> ort::Result<f32> {
            kctx.get::<f32>(name)
                .ok_or_else(|| missing("AdamUpdate", &format!("attribute `{name}`")))
        };
        let a = AdamAttrs {
            beta1: attr("beta1")?,
            beta2: attr("beta2")?,
            g2_scale: attr("g2_scale")?,
            l2: attr("l2")?,
        };
        Ok(Box::new(move |ctx: &ComputeContext| {
            let input = |i: usize| {
                ctx.input(i)?
                    .ok_or_else(|| missing("AdamUpdate", "an input"))
            };
            let (p_in, g_in, m_in, v_in) = (input(0)?, input(1)?, input(2)?, input(3)?);
            let (shape, p) = p_in.try_extract_tensor::<f32>()?;
            let shape = shape.to_vec();
            let (_, g) = g_in.try_extract_tensor::<f32>()?;
            let (_, m) = m_in.try_extract_tensor::<f32>()?;
            let (_, v) = v_in.try_extract_tensor::<f32>()?;
            let scalar = |i: usize| -> ort::Result<f32> {
                let t = input(i)?;
                let (_, x) = t.try_extract_tensor::<f32>()?;
                x.first()
                    .copied()
                    .ok_or_else(|| missing("AdamUpdate", "a scalar"))
            };
            let s = AdamScalars {
                step_size: scalar(4)?,
                eps_hat: scalar(5)?,
                decay: scalar(6)?,
            };
            let n = p.len();
            if g.len() != n || m.len() != n || v.len() != n {
                return Err(ort::Error::new("AdamUpdate: p, g, m and v differ in size"));
            }
            let output = |i: usize| {
                ctx.output(i, shape.clone())?
                    .ok_or_else(|| missing("AdamUpdate", "an output"))
            };
            let (mut p_out, mut m_out, mut v_out) = (output(0)?, output(1)?, output(2)?);
            let (_, po) = p_out.try_extract_tensor_mut::<f32>()?;
            let (_, mo) = m_out.try_extract_tensor_mut::<f32>()?;
            let (_, vo) = v_out.try_extract_tensor_mut::<f32>()?;
            if po.len() != n || mo.len() != n || vo.len() != n {
                return Err(ort::Error::new("AdamUpdate: outputs differ in size from p"));
            }
            let outs = Outs {
                p: po.as_mut_ptr(),
                m: mo.as_mut_ptr(),
                v: vo.as_mut_ptr(),
            };
            let chunks = n.div_ceil(CHUNK);
            let run = |c: usize| {
                let lo = c * CHUNK;
                let hi = (lo + CHUNK).min(n);
                let len = hi - lo;
                // SAFETY: chunk `c` covers `lo..hi`, inside all three output buffers (each
                // `n` long, checked above), and distinct chunks never overlap, so no two
                // threads form a reference to the same element. The buffers outlive `par_for`.
                let (po, mo, vo) = unsafe { outs.range(lo, len) };
                adam_chunk(
                    a,
                    s,
                    &g[lo..hi],
                    (&p[lo..hi], &m[lo..hi], &v[lo..hi]),
                    (po, mo, vo),
                );
            };
            if chunks <= 1 {
                run(0);
                Ok(())
            } else {
                ctx.par_for(chunks, chunks, run)
            }
        }))
    }
}

/// The geometry of one `Im2Col` node ([`crate::graph::Op::Im2Col`]): input `[n, c, h, w]`,
/// kernel, strides, top/left pads, output size, and the chunk of `images` samples it covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Im2ColGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub top: usize,
    pub left: usize,
    pub out: [usize; 2],
    pub images: usize,
    pub chunk: usize,
}

impl Im2ColGeom {
    /// Checks the attributes against an input shape (the graph builder checked them too; a
    /// model file written elsewhere may not have been).
    pub fn new(
        shape: &[i64],
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        [images, chunk]: [usize; 2],
    ) -> Result<Im2ColGeom, String> {
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension in {shape:?}")))
            .collect::<Result<_, _>>()?;
        let [n, c, h, w] = dims[..] else {
            return Err(format!("expects a 4-D input, got {shape:?}"));
        };
        if kernel.contains(&0) || strides.contains(&0) {
            return Err("kernel and strides must be positive".into());
        }
        if images == 0 || (chunk + 1) * images > n {
            return Err(format!(
                "chunk {chunk} of {images} images lies outside the batch of {n}"
            ));
        }
        let out = conv_out(&[h, w], &kernel, strides, pads)
            .ok_or_else(|| format!("kernel {kernel:?} larger than the padded input {shape:?}"))?;
        Ok(Im2ColGeom {
            n,
            c,
            h,
            w,
            kernel,
            strides,
            top: pads[0],
            left: pads[1],
            out,
            images,
            chunk,
        })
    }

    /// Columns of one output row: the chunk's output pixels.
    pub fn cols(&self) -> usize {
        self.images * self.out[0] * self.out[1]
    }

    /// `[c * kh * kw, cols]`.
    pub fn output_shape(&self) -> [usize; 2] {
        [self.c * self.kernel[0] * self.kernel[1], self.cols()]
    }

    /// The output positions `lo..hi` along one axis whose input coordinate
    /// `o * stride + offset - pad` lies inside `0..size`.
    fn valid(out: usize, stride: usize, offset: usize, pad: usize, size: usize) -> (usize, usize) {
        // o * stride + offset >= pad  <=>  o >= ceil((pad - offset) / stride)
        let lo = pad.saturating_sub(offset).div_ceil(stride).min(out);
        // o * stride + offset - pad <= size - 1  <=>  o <= (size - 1 + pad - offset) / stride
        let hi = match (size + pad).checked_sub(offset + 1) {
            Some(top) => (top / stride + 1).min(out),
            None => 0,
        };
        (lo, hi.max(lo))
    }
}

/// Writes the `kh * kw` output rows of channel `c` (`out` is those rows, `kh * kw * cols`
/// long); see [`crate::graph::Op::Im2Col`] for the layout.
pub(crate) fn im2col_rows(g: &Im2ColGeom, x: &[f32], c: usize, out: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.out;
    let cols = g.cols();
    let plane = g.h * g.w;
    for i in 0..kh {
        for j in 0..kw {
            let row = &mut out[(i * kw + j) * cols..][..cols];
            for m in 0..g.images {
                let n = g.chunk * g.images + m;
                let src = &x[(n * g.c + c) * plane..][..plane];
                let dst = &mut row[m * oh * ow..][..oh * ow];
                if g.strides == [1, 1] && ow == g.w {
                    shifted_plane(g, src, (i, j), dst);
                } else {
                    patch_lines(g, src, (i, j), dst);
                }
            }
        }
    }
}

/// Stride 1 with output rows as wide as input rows (ResNet's 3x3 "same" convolutions): the
/// patch of offset `(i, j)` is the whole plane shifted by one linear offset, so it is one
/// copy, plus zeros for the rows that fall outside and for the columns that wrap around.
fn shifted_plane(g: &Im2ColGeom, src: &[f32], (i, j): (usize, usize), dst: &mut [f32]) {
    let w = g.w as isize;
    let shift = j as isize - g.left as isize;
    let d = (i as isize - g.top as isize) * w + shift;
    let len = dst.len() as isize;
    let lo = (-d).clamp(0, len);
    let hi = (src.len() as isize - d).clamp(lo, len);
    let (lo, hi) = (lo as usize, hi as usize);
    dst[..lo].fill(0.0);
    dst[hi..].fill(0.0);
    if lo < hi {
        let s0 = (lo as isize + d) as usize;
        dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
    }
    // Columns whose input column `q + shift` lies outside the row read the neighbouring row.
    let wrapped = if shift < 0 {
        0..(-shift).min(w) as usize
    } else {
        (w - shift.min(w)) as usize..g.w
    };
    if !wrapped.is_empty() {
        for line in dst.chunks_exact_mut(g.w) {
            line[wrapped.clone()].fill(0.0);
        }
    }
}

/// Any stride and width: one output line at a time.
fn patch_lines(g: &Im2ColGeom, src: &[f32], (i, j): (usize, usize), dst: &mut [f32]) {
    let [sh, sw] = g.strides;
    let [oh, ow] = g.out;
    let (h_lo, h_hi) = Im2ColGeom::valid(oh, sh, i, g.top, g.h);
    let (w_lo, w_hi) = Im2ColGeom::valid(ow, sw, j, g.left, g.w);
    for (r, line) in dst.chunks_exact_mut(ow).enumerate() {
        if r < h_lo || r >= h_hi {
            line.fill(0.0);
            continue;
        }
        let srow = &src[(r * sh + i - g.top) * g.w..][..g.w];
        line[..w_lo].fill(0.0);
        line[w_hi..].fill(0.0);
        if w_lo < w_hi {
            // First input column: w_lo * sw + j - left (>= 0 by `valid`).
            let iw0 = w_lo * sw + j - g.left;
            let body = &mut line[w_lo..w_hi];
            if sw == 1 {
                body.copy_from_slice(&srow[iw0..iw0 + body.len()]);
            } else {
                for (d, s) in body.iter_mut().zip(srow[iw0..].iter().step_by(sw)) {
                    *d = *s;
                }
            }
        }
    }
}

struct Im2Col;

impl Operator for Im2Col {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "Im2Col"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Float32)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(
        &self,
        kctx: &KernelContext<'attr>,
    ) -> ort::Result<Self::Kernel<'attr>> {
        let err = |what: String| ort::Error::new(format!("Im2Col: {what}"));
        let ints = |name: &str, len: usize| -> ort::Result<Vec<usize>> {
            let v = kctx
                .get::<Vec<i64>>(name)
                .ok_or_else(|| err(format!("missing attribute `{name}`")))?;
            if v.len() != len {
                return Err(err(format!("`{name}` must have {len} entries, has {v:?}")));
            }
            v.iter()
                .map(|&d| usize::try_from(d).map_err(|_| err(format!("negative `{name}`: {v:?}"))))
                .collect()
        };
        let int = |name: &str| -> ort::Result<usize> {
            kctx.get::<i64>(name)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| err(format!("missing or negative attribute `{name}`")))
        };
        let (k, s, p) = (
            ints("kernel_shape", 2)?,
            ints("strides", 2)?,
            ints("pads", 4)?,
        );
        let range = [int("images")?, int("chunk")?];
        let (kernel, strides, pads) = ([k[0], k[1]], [s[0], s[1]], [p[0], p[1], p[2], p[3]]);
        Ok(Box::new(move |ctx: &ComputeContext| {
            let input = ctx.input(0)?.ok_or_else(|| missing("Im2Col", "an input"))?;
            let (shape, x) = input.try_extract_tensor::<f32>()?;
            let geo = Im2ColGeom::new(shape, kernel, strides, pads, range).map_err(err)?;
            let out_shape = geo.output_shape();
            let mut output = ctx
                .output(0, out_shape.iter().map(|&d| d as i64).collect::<Vec<_>>())?
                .ok_or_else(|| missing("Im2Col", "an output"))?;
            let (_, out) = output.try_extract_tensor_mut::<f32>()?;
            let block = geo.kernel[0] * geo.kernel[1] * geo.cols();
            if out.len() != geo.c * block || x.len() != geo.n * geo.c * geo.h * geo.w {
                return Err(err("buffer sizes do not match the shapes".into()));
            }
            let base = SendPtr(out.as_mut_ptr());
            let run = |c: usize| {
                // SAFETY: channel `c` writes `block` elements at `c * block`, inside the output
                // (`c * block` long, checked above); distinct channels never overlap, and the
                // buffer outlives `par_for`.
                let rows =
                    unsafe { std::slice::from_raw_parts_mut(base.get().add(c * block), block) };
                im2col_rows(&geo, x, c, rows);
            };
            if geo.c <= 1 {
                (0..geo.c).for_each(run);
                Ok(())
            } else {
                ctx.par_for(geo.c, geo.c, run)
            }
        }))
    }
}

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
struct BlockFilter;

impl Operator for BlockFilter {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "BlockFilter"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Float32)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(
        &self,
        kctx: &KernelContext<'attr>,
    ) -> ort::Result<Self::Kernel<'attr>> {
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
            let dims: Vec<usize> = shape
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(0))
                .collect();
            let [m, c, kh, kw] = dims[..] else {
                return Err(err(format!(
                    "the weight must be [M, C, kh, kw], is {dims:?}"
                )));
            };
            if m % b != 0 || c % b != 0 || w.len() != m * c * kh * kw {
                return Err(err(format!(
                    "weight {dims:?}: both channel counts must be multiples of the block {b}"
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
            if m / b <= 1 {
                (0..m / b).for_each(run);
                Ok(())
            } else {
                ctx.par_for(m / b, m / b, run)
            }
        }))
    }
}

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

/// `BatchNormTrain`: see [`bn_forward_channel`]; one task per channel.
struct BatchNormTrain;

impl Operator for BatchNormTrain {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "BatchNormTrain"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [const { OperatorInput::required(TensorElementType::Float32) }; 3]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [const { OperatorOutput::required(TensorElementType::Float32) }; 3]
    }

    fn create_kernel<'attr>(
        &self,
        kctx: &KernelContext<'attr>,
    ) -> ort::Result<Self::Kernel<'attr>> {
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
            let mut y = ctx
                .output(0, shape.to_vec())?
                .ok_or_else(|| missing(OP, "an output"))?;
            let c = i64::try_from(g.c).unwrap_or(i64::MAX);
            let mut mean = ctx
                .output(1, vec![c])?
                .ok_or_else(|| missing(OP, "an output"))?;
            let mut var = ctx
                .output(2, vec![c])?
                .ok_or_else(|| missing(OP, "an output"))?;
            let (_, y) = y.try_extract_tensor_mut::<f32>()?;
            let (_, mean) = mean.try_extract_tensor_mut::<f32>()?;
            let (_, var) = var.try_extract_tensor_mut::<f32>()?;
            if y.len() != g.len() || mean.len() != g.c || var.len() != g.c {
                return Err(ort::Error::new(format!(
                    "{OP}: output sizes do not match {shape:?}"
                )));
            }
            let (yp, mp, vp) = (
                SendPtr(y.as_mut_ptr()),
                SendPtr(mean.as_mut_ptr()),
                SendPtr(var.as_mut_ptr()),
            );
            let run = |ch: usize| {
                // SAFETY: task `ch` alone writes channel `ch`'s planes of `y` (inside it: its
                // length is checked above) and element `ch` of `mean` and `var`; the buffers
                // outlive `par_for`.
                let planes = unsafe { g.planes_mut(yp, ch) };
                let (m, v) = bn_forward_channel(g, x, ch, (gamma[ch], beta[ch], eps), planes);
                unsafe {
                    *mp.get().add(ch) = m;
                    *vp.get().add(ch) = v;
                }
            };
            if g.c <= 1 {
                (0..g.c).for_each(run);
                Ok(())
            } else {
                ctx.par_for(g.c, g.c, run)
            }
        }))
    }
}

/// `BatchNormTrainGrad`: see [`bn_backward_channel`]; one task per channel.
struct BatchNormTrainGrad;

impl Operator for BatchNormTrainGrad {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "BatchNormTrainGrad"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [const { OperatorInput::required(TensorElementType::Float32) }; 5]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [const { OperatorOutput::required(TensorElementType::Float32) }; 3]
    }

    fn create_kernel<'attr>(
        &self,
        kctx: &KernelContext<'attr>,
    ) -> ort::Result<Self::Kernel<'attr>> {
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
            let mut dx = ctx
                .output(0, shape.to_vec())?
                .ok_or_else(|| missing(OP, "an output"))?;
            let c = i64::try_from(g.c).unwrap_or(i64::MAX);
            let mut dg = ctx
                .output(1, vec![c])?
                .ok_or_else(|| missing(OP, "an output"))?;
            let mut db = ctx
                .output(2, vec![c])?
                .ok_or_else(|| missing(OP, "an output"))?;
            let (_, dx) = dx.try_extract_tensor_mut::<f32>()?;
            let (_, dg) = dg.try_extract_tensor_mut::<f32>()?;
            let (_, db) = db.try_extract_tensor_mut::<f32>()?;
            if dx.len() != g.len() || dg.len() != g.c || db.len() != g.c {
                return Err(ort::Error::new(format!(
                    "{OP}: output sizes do not match {shape:?}"
                )));
            }
            let (xp, gp, bp) = (
                SendPtr(dx.as_mut_ptr()),
                SendPtr(dg.as_mut_ptr()),
                SendPtr(db.as_mut_ptr()),
            );
            let run = |ch: usize| {
                // SAFETY: task `ch` alone writes channel `ch`'s planes of `dx` (inside it: its
                // length is checked above) and element `ch` of `dgamma` and `dbeta`; the
                // buffers outlive `par_for`.
                let planes = unsafe { g.planes_mut(xp, ch) };
                let (dgv, dbv) = bn_backward_channel(
                    g,
                    (dy, x),
                    ch,
                    (gamma[ch], mean[ch], var[ch], eps),
                    planes,
                );
                unsafe {
                    *gp.get().add(ch) = dgv;
                    *bp.get().add(ch) = dbv;
                }
            };
            if g.c <= 1 {
                (0..g.c).for_each(run);
                Ok(())
            } else {
                ctx.par_for(g.c, g.c, run)
            }
        }))
    }
}

/// An output pointer shared by parallel tasks that write disjoint ranges.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: only used to form disjoint slices per task (see `Im2Col::create_kernel`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The [`CBOUND_DOMAIN`] operator domain, for one session builder (ONNX Runtime keeps a
/// reference for the session's lifetime; `ort` holds it in the builder and session).
pub(crate) fn domain() -> ort::Result<OperatorDomain> {
    OperatorDomain::new(CBOUND_DOMAIN)?
        .add(AdamUpdate)?
        .add(Im2Col)?
        .add(BlockFilter)?
        .add(BatchNormTrain)?
        .add(BatchNormTrainGrad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{DType, Graph};
    use crate::testutil::{run_graph, Data};

    /// The definition: element `[(c, i, j), (m, oh, ow)]` of the chunk.
    fn naive(g: &Im2ColGeom, x: &[f32]) -> Vec<f32> {
        let [kh, kw] = g.kernel;
        let [oh, ow] = g.out;
        let mut out = Vec::new();
        for c in 0..g.c {
            for i in 0..kh {
                for j in 0..kw {
                    for m in 0..g.images {
                        let n = g.chunk * g.images + m;
                        for r in 0..oh {
                            for q in 0..ow {
                                let ih = (r * g.strides[0] + i) as isize - g.top as isize;
                                let iw = (q * g.strides[1] + j) as isize - g.left as isize;
                                let inside = (0..g.h as isize).contains(&ih)
                                    && (0..g.w as isize).contains(&iw);
                                out.push(if inside {
                                    x[((n * g.c + c) * g.h + ih as usize) * g.w + iw as usize]
                                } else {
                                    0.0
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Shapes, kernels, strides and pads the ResNets use, and harder ones: uneven pads, pads
    /// as large as (or larger than) the kernel, rectangular kernels, stride 3, 1x1, and
    /// "same" shapes whose shifts are wider than the input (the shifted-plane path).
    type Case = ([usize; 4], [usize; 2], [usize; 2], [usize; 4], usize);
    const CASES: &[Case] = &[
        ([4, 3, 8, 8], [3, 3], [1, 1], [1, 1, 1, 1], 2),
        ([4, 2, 9, 7], [3, 3], [2, 2], [1, 1, 1, 1], 4),
        ([2, 3, 7, 7], [3, 2], [1, 1], [0, 1, 2, 0], 1),
        ([2, 3, 6, 5], [1, 1], [2, 2], [0, 0, 0, 0], 2),
        ([3, 1, 5, 6], [2, 3], [3, 2], [3, 4, 2, 3], 3),
        ([2, 2, 4, 4], [1, 1], [1, 1], [1, 0, 0, 1], 1),
        ([2, 2, 3, 2], [5, 5], [1, 1], [3, 3, 1, 1], 1),
        ([2, 2, 4, 3], [3, 5], [1, 1], [0, 4, 1, 0], 2),
        ([2, 1, 1, 1], [3, 3], [1, 1], [1, 1, 1, 1], 1),
    ];

    fn input(shape: [usize; 4]) -> Vec<f32> {
        (0..shape.iter().product::<usize>())
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect()
    }

    #[test]
    fn im2col_rows_equal_the_definition() {
        for &(shape, kernel, strides, pads, images) in CASES {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let x = input(shape);
            for chunk in 0..shape[0] / images {
                let g = Im2ColGeom::new(&dims, kernel, strides, pads, [images, chunk])
                    .expect("geometry");
                let block = kernel[0] * kernel[1] * g.cols();
                let mut out = vec![f32::NAN; g.output_shape().iter().product()];
                for (c, rows) in out.chunks_exact_mut(block).enumerate() {
                    im2col_rows(&g, &x, c, rows);
                }
                let case = format!("{shape:?} k {kernel:?} s {strides:?} p {pads:?} chunk {chunk}");
                assert_eq!(out, naive(&g, &x), "{case}");
            }
        }
    }

    #[test]
    fn im2col_geometry_refuses_bad_attributes() {
        let geo = |shape: &[i64], k, s, range| Im2ColGeom::new(shape, k, s, [0; 4], range);
        assert!(geo(&[4, 3, 8, 8], [3, 3], [1, 1], [3, 1]).is_err());
        assert!(geo(&[4, 3, 8, 8], [3, 3], [1, 1], [0, 0]).is_err());
        assert!(geo(&[4, 3, 2, 8], [3, 3], [1, 1], [1, 0]).is_err());
        assert!(geo(&[4, 3, 8], [3, 3], [1, 1], [1, 0]).is_err());
        assert!(geo(&[4, 3, 8, 8], [0, 3], [1, 1], [1, 0]).is_err());
        assert!(geo(&[4, 3, 8, 8], [3, 3], [1, 0], [1, 0]).is_err());
        assert!(geo(&[4, -3, 8, 8], [3, 3], [1, 1], [1, 0]).is_err());
        assert!(geo(&[4, 3, 8, 8], [3, 3], [1, 1], [2, 1]).is_ok());
    }

    /// cbound's kernel and the ai.onnx nodes give the same bits through ONNX Runtime.
    #[test]
    fn im2col_kernel_equals_its_onnx_twin() {
        for &(shape, kernel, strides, pads, images) in CASES {
            let mut g = Graph::new("im2col");
            let x = g.input("x", DType::F32, &shape).expect("input");
            for chunk in 0..shape[0] / images {
                let a = g
                    .im2col(x, kernel, strides, pads, [images, chunk])
                    .expect("kernel");
                let b = g
                    .im2col_onnx(x, kernel, strides, pads, [images, chunk])
                    .expect("onnx");
                assert_eq!(g.shape(a), g.shape(b));
                g.output(a, &format!("kernel{chunk}")).expect("output");
                g.output(b, &format!("onnx{chunk}")).expect("output");
            }
            let out = run_graph(&g, &[(x, Data::F32(input(shape)))]);
            let bits = |k: &str| out[k].iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for chunk in 0..shape[0] / images {
                let (a, b) = (format!("kernel{chunk}"), format!("onnx{chunk}"));
                assert_eq!(bits(&a), bits(&b), "{shape:?} k {kernel:?} s {strides:?}");
            }
        }
    }

    #[test]
    fn im2col_is_refused_without_custom_kernels_and_for_f64() {
        let mut g = Graph::new("im2col");
        let x = g.input("x", DType::F64, &[2, 1, 4, 4]).expect("input");
        assert!(g.im2col(x, [3, 3], [1, 1], [1; 4], [1, 0]).is_err());
        let y = g.input("y", DType::F32, &[2, 1, 4, 4]).expect("input");
        assert!(g.im2col(y, [3, 3], [1, 1], [1; 4], [1, 2]).is_err());
        g.set_custom_kernels(false);
        assert!(g.im2col(y, [3, 3], [1, 1], [1; 4], [1, 0]).is_err());
        assert!(g.im2col_onnx(y, [3, 3], [1, 1], [1; 4], [1, 0]).is_ok());
    }

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
