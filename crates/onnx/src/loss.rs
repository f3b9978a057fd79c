//! Contrastive losses on projection pairs, emitted as graph nodes.
//!
//! * InfoNCE as in the source study: `z1`, `z2` are L2-normalised, `logits = z1 z2^T / T`, and
//!   the loss is the cross-entropy of each row against its diagonal entry, averaged over the
//!   batch. With `N` pairs, `ln N - L` is the InfoNCE lower bound on the mutual information.
//! * Symmetric NT-Xent (SimCLR): the `2N` normalised projections are compared with each other;
//!   each sample's positive is its other view and the remaining `2N - 2` samples are negatives;
//!   self-similarity is excluded by adding a large negative constant to the diagonal (its
//!   softmax weight underflows to exactly zero, so loss and gradient are unaffected). The loss
//!   is averaged over all `2N` rows.
//!
//! L2 normalisation is `x / sqrt(sum x^2 + eps)`, differentiated like any other subgraph.
//! Cross-entropy uses `LogSoftmax` (one fused, numerically stable kernel in ONNX Runtime) and a
//! constant 0/1 mask to pick the positives, which keeps the graph free of gathers.

use super::graph::{DType, GemmAttrs, Graph, GraphResult, TensorData, ValueId};

/// The contrastive loss; `infonce` or `nt_xent` in pipelines.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// The source study's InfoNCE: z1 z2^T / t, diagonal positives (N - 1 negatives).
    #[default]
    #[serde(rename = "infonce")]
    InfoNce,
    /// Symmetric NT-Xent (SimCLR): 2N samples, 2N - 2 negatives each.
    NtXent,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    pub kind: LossKind,
    pub temperature: f64,
    /// Added to the squared norm before the square root.
    pub eps: f64,
}

impl LossConfig {
    /// InfoNCE with the source study's temperature 0.1.
    pub fn study() -> LossConfig {
        LossConfig {
            kind: LossKind::InfoNce,
            temperature: 0.1,
            eps: 1e-12,
        }
    }
}

/// Large negative logit that masks self-similarity in NT-Xent; finite so that `0 * mask` stays 0.
const SELF_MASK: f64 = -1.0e9;

/// `x / sqrt(sum(x^2, axis 1) + eps)` for `x` of shape `[N, d]`.
pub fn l2_normalize(g: &mut Graph, x: ValueId, eps: f64) -> GraphResult<ValueId> {
    let sq = g.mul(x, x)?;
    let s = g.reduce_sum(sq, &[1], true)?;
    let s = g.add_scalar(s, eps)?;
    let n = g.sqrt(s)?;
    g.div(x, n)
}

fn check_pair(
    g: &Graph,
    z1: ValueId,
    z2: ValueId,
    cfg: &LossConfig,
) -> GraphResult<(usize, DType)> {
    let (s1, s2) = (g.shape(z1), g.shape(z2));
    if s1.len() != 2 || s1 != s2 || s1[0] == 0 {
        return Err(super::graph::GraphError::Invalid {
            op: "contrastive loss",
            detail: format!("projections must both be [N, d] with N > 0; got {s1:?} and {s2:?}"),
        });
    }
    let temperature_ok = cfg.temperature.is_finite() && cfg.temperature > 0.0;
    let eps_ok = cfg.eps.is_finite() && cfg.eps >= 0.0;
    if !temperature_ok || !eps_ok {
        return Err(super::graph::GraphError::Invalid {
            op: "contrastive loss",
            detail: format!(
                "temperature must be positive and eps non-negative; got {} and {}",
                cfg.temperature, cfg.eps
            ),
        });
    }
    Ok((s1[0], g.dtype(z1)))
}

fn mask_constant(
    g: &mut Graph,
    dtype: DType,
    n: usize,
    f: impl Fn(usize, usize) -> f64,
) -> GraphResult<ValueId> {
    let vals: Vec<f64> = (0..n * n).map(|k| f(k / n, k % n)).collect();
    let data = match dtype {
        DType::F64 => TensorData::F64(vals),
        _ => TensorData::F32(vals.into_iter().map(|v| v as f32).collect()),
    };
    g.constant(data, &[n, n])
}

/// InfoNCE (see the module docs); returns a rank-0 loss.
pub fn info_nce(g: &mut Graph, z1: ValueId, z2: ValueId, cfg: &LossConfig) -> GraphResult<ValueId> {
    let (n, dt) = check_pair(g, z1, z2, cfg)?;
    let a = l2_normalize(g, z1, cfg.eps)?;
    let b = l2_normalize(g, z2, cfg.eps)?;
    let logits = g.gemm(
        a,
        b,
        None,
        GemmAttrs::new((1.0 / cfg.temperature) as f32, false, true),
    )?;
    let ls = g.log_softmax(logits, 1)?;
    let eye = mask_constant(g, dt, n, |i, j| f64::from(u8::from(i == j)))?;
    let picked = g.mul(ls, eye)?;
    let total = g.reduce_sum_all(picked)?;
    g.scale(total, -1.0 / n as f64)
}

/// Symmetric NT-Xent (see the module docs); returns a rank-0 loss.
pub fn nt_xent(g: &mut Graph, z1: ValueId, z2: ValueId, cfg: &LossConfig) -> GraphResult<ValueId> {
    let (n, dt) = check_pair(g, z1, z2, cfg)?;
    let a = l2_normalize(g, z1, cfg.eps)?;
    let b = l2_normalize(g, z2, cfg.eps)?;
    let z = g.concat(&[a, b], 0)?;
    let sim = g.gemm(
        z,
        z,
        None,
        GemmAttrs::new((1.0 / cfg.temperature) as f32, false, true),
    )?;
    let m = 2 * n;
    let self_mask = mask_constant(g, dt, m, |i, j| if i == j { SELF_MASK } else { 0.0 })?;
    let masked = g.add(sim, self_mask)?;
    let ls = g.log_softmax(masked, 1)?;
    let pos = mask_constant(g, dt, m, |i, j| f64::from(u8::from(j == (i + n) % m)))?;
    let picked = g.mul(ls, pos)?;
    let total = g.reduce_sum_all(picked)?;
    g.scale(total, -1.0 / m as f64)
}

pub fn contrastive_loss(
    g: &mut Graph,
    z1: ValueId,
    z2: ValueId,
    cfg: &LossConfig,
) -> GraphResult<ValueId> {
    match cfg.kind {
        LossKind::InfoNce => info_nce(g, z1, z2, cfg),
        LossKind::NtXent => nt_xent(g, z1, z2, cfg),
    }
}

/// The InfoNCE mutual-information estimate `ln N - L` (nats) for a held-out InfoNCE loss
/// computed on `n` pairs.
pub fn infonce_estimate(loss: f64, n: usize) -> f64 {
    (n as f64).ln() - loss
}

#[cfg(test)]
mod tests {
    //! Loss value and gradients w.r.t. the projections against an independent NumPy
    //! implementation (hand-derived backward pass, run by the test's Python interpreter).

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;
    use crate::autodiff::gradients;
    use crate::testutil::{run_graph, run_python, Data};

    const NUMPY_REFERENCE: &str = r#"
import sys, numpy as np
path, kind, n, d, t, eps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
raw = np.fromfile(path, dtype='<f8')
z1, z2 = raw[:n*d].reshape(n, d), raw[n*d:].reshape(n, d)
def norm(z):
    s = np.sqrt((z * z).sum(1, keepdims=True) + eps)
    return z / s, s
def norm_back(z, s, dn):
    return dn / s - z * ((dn * z).sum(1, keepdims=True) / s**3)
def softmax(a):
    e = np.exp(a - a.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
n1, s1 = norm(z1); n2, s2 = norm(z2)
if kind == 'infonce':
    L = n1 @ n2.T / t
    lse = np.log(np.exp(L - L.max(1, keepdims=True)).sum(1)) + L.max(1)
    loss = np.mean(lse - np.diag(L))
    G = (softmax(L) - np.eye(n)) / n
    dn1 = G @ n2 / t
    dn2 = G.T @ n1 / t
else:
    Z = np.concatenate([n1, n2]); m = 2 * n
    S = Z @ Z.T / t
    Sm = S.copy(); np.fill_diagonal(Sm, -np.inf)
    P = np.zeros((m, m)); P[np.arange(m), (np.arange(m) + n) % m] = 1
    lse = np.log(np.exp(Sm - Sm.max(1, keepdims=True)).sum(1)) + Sm.max(1)
    loss = np.mean(lse - (S * P).sum(1))
    G = (softmax(Sm) - P) / m
    dZ = (G + G.T) @ Z / t
    dn1, dn2 = dZ[:n], dZ[n:]
g1 = norm_back(z1, s1, dn1); g2 = norm_back(z2, s2, dn2)
print(' '.join(repr(float(x)) for x in np.concatenate([[loss], g1.ravel(), g2.ravel()])))
"#;

    fn check_against_numpy(kind: LossKind, dtype: DType, rtol: f64) {
        let (n, d) = (6, 5);
        let cfg = LossConfig {
            kind,
            temperature: 0.1,
            eps: 1e-12,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let zs: Vec<f64> = (0..2 * n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let mut g = Graph::new("loss_test");
        let z1 = g.input("z1", dtype, &[n, d]).expect("input");
        let z2 = g.input("z2", dtype, &[n, d]).expect("input");
        let loss = contrastive_loss(&mut g, z1, z2, &cfg).expect("loss builds");
        let grads = gradients(&mut g, loss, &[z1, z2]).expect("gradients build");
        g.output(loss, "loss").expect("output");
        g.output(grads[0], "g1").expect("output");
        g.output(grads[1], "g2").expect("output");
        let feed = |v: &[f64]| match dtype {
            DType::F32 => Data::F32(v.iter().map(|&x| x as f32).collect()),
            _ => Data::F64(v.to_vec()),
        };
        let out = run_graph(&g, &[(z1, feed(&zs[..n * d])), (z2, feed(&zs[n * d..]))]);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("z.f64");
        let bytes: Vec<u8> = zs.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(&path, bytes).expect("write inputs");
        let kind_s = match kind {
            LossKind::InfoNce => "infonce",
            LossKind::NtXent => "ntxent",
        };
        let reference: Vec<f64> = run_python(
            NUMPY_REFERENCE,
            &[
                path.to_str().expect("utf-8 temp path"),
                kind_s,
                &n.to_string(),
                &d.to_string(),
                "0.1",
                "1e-12",
            ],
        )
        .split_whitespace()
        .map(|s| s.parse().expect("python prints floats"))
        .collect();
        assert_eq!(reference.len(), 1 + 2 * n * d);
        let ours: Vec<f64> = out["loss"]
            .iter()
            .chain(&out["g1"])
            .chain(&out["g2"])
            .copied()
            .collect();
        let scale = reference.iter().map(|x| x.abs()).fold(0.0, f64::max);
        for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
            assert!(
                (a - b).abs() <= rtol * b.abs().max(1e-3 * scale),
                "{kind_s} {dtype:?} entry {i}: ours {a} vs numpy {b}"
            );
        }
    }

    #[test]
    fn infonce_matches_numpy() {
        check_against_numpy(LossKind::InfoNce, DType::F64, 1e-9);
        check_against_numpy(LossKind::InfoNce, DType::F32, 1e-4);
    }

    #[test]
    fn nt_xent_matches_numpy() {
        check_against_numpy(LossKind::NtXent, DType::F64, 1e-9);
        check_against_numpy(LossKind::NtXent, DType::F32, 1e-4);
    }

    #[test]
    fn estimate_is_log_n_minus_loss() {
        assert!((infonce_estimate(1.0, 256) - (256f64.ln() - 1.0)).abs() < 1e-12);
    }
}
