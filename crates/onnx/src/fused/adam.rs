//! `AdamUpdate`: a parameter's whole Adam step in one pass over memory (see the module docs
//! of [`super`] and [`crate::graph::Op::AdamUpdate`]).

use ort::operator::{BoxedKernel, ComputeContext, KernelContext};

use super::{for_each_task, missing};

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

pub(super) struct AdamUpdate;

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

f32_operator!(AdamUpdate, inputs: 7, outputs: 3, adam_update_kernel);

fn adam_update_kernel<'attr>(kctx: &KernelContext<'attr>) -> ort::Result<BoxedKernel<'attr>> {
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
            // threads form a reference to the same element. The buffers outlive the tasks.
            let (po, mo, vo) = unsafe { outs.range(lo, len) };
            adam_chunk(
                a,
                s,
                &g[lo..hi],
                (&p[lo..hi], &m[lo..hi], &v[lo..hi]),
                (po, mo, vo),
            );
        };
        for_each_task(ctx, chunks, run)
    }))
}
