//! `Im2Col`: a convolution's input patches for its weight gradient in one pass, zero padding
//! implicit ([`crate::graph::Op::Im2Col`]).

use ort::operator::{BoxedKernel, ComputeContext, KernelContext};

use super::{for_each_task, missing, SendPtr};
use crate::graph::conv_out;

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

pub(super) struct Im2Col;

f32_operator!(Im2Col, inputs: 1, outputs: 1, im2col_kernel);

fn im2col_kernel<'attr>(kctx: &KernelContext<'attr>) -> ort::Result<BoxedKernel<'attr>> {
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
            let rows = unsafe { std::slice::from_raw_parts_mut(base.get().add(c * block), block) };
            im2col_rows(&geo, x, c, rows);
        };
        for_each_task(ctx, geo.c, run)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::test_input as input;
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
}
