//! Matrix products: `MatMul`, `Gemm` and the `nn.Linear`-style layer built on it. Under
//! [`Graph::set_autocast`] both run in the low dtype between Casts.

use super::{broadcast_shapes, invalid, DType, GemmAttrs, Graph, GraphResult, Op, ValueId};

impl Graph {
    // ----- linear algebra -----

    /// `[M, K] x [K, N] -> [M, N]`.
    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        if let Some(lo) = self.autocast_operands(&[a, b])? {
            let y = self.matmul(lo[0], lo[1])?;
            return self.cast(y, DType::F32);
        }
        let dt = self.same_dtype("MatMul", &[a, b])?;
        self.require_float("MatMul", a)?;
        let (sa, sb) = (self.shape(a), self.shape(b));
        if sa.len() != 2 || sb.len() != 2 || sa[1] != sb[0] {
            return Err(invalid(
                "MatMul",
                format!(
                    "expects [M,K] x [K,N], got {sa:?} x {sb:?} (only 2-D operands are supported)"
                ),
            ));
        }
        let shape = vec![sa[0], sb[1]];
        self.node1(Op::MatMul, vec![a, b], dt, shape)
    }

    /// `alpha * op(A) op(B) + beta * C` with `op` an optional transpose; `C` broadcasts to [M, N].
    pub fn gemm(
        &mut self,
        a: ValueId,
        b: ValueId,
        c: Option<ValueId>,
        attrs: GemmAttrs,
    ) -> GraphResult<ValueId> {
        let operands: Vec<ValueId> = [a, b].into_iter().chain(c).collect();
        if let Some(lo) = self.autocast_operands(&operands)? {
            let y = self.gemm(lo[0], lo[1], lo.get(2).copied(), attrs)?;
            return self.cast(y, DType::F32);
        }
        let GemmAttrs {
            alpha,
            beta,
            trans_a,
            trans_b,
        } = attrs;
        let dt = self.same_dtype("Gemm", &[a, b])?;
        self.require_float("Gemm", a)?;
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        if sa.len() != 2 || sb.len() != 2 {
            return Err(invalid(
                "Gemm",
                format!("operands must be 2-D, got {sa:?} and {sb:?}"),
            ));
        }
        let (m, ka) = if trans_a {
            (sa[1], sa[0])
        } else {
            (sa[0], sa[1])
        };
        let (kb, n) = if trans_b {
            (sb[1], sb[0])
        } else {
            (sb[0], sb[1])
        };
        if ka != kb {
            return Err(invalid(
                "Gemm",
                format!("inner dimensions differ: op(A) is [{m},{ka}], op(B) is [{kb},{n}]"),
            ));
        }
        let mut inputs = vec![a, b];
        if let Some(c) = c {
            self.same_dtype("Gemm", &[a, c])?;
            let sc = self.shape(c);
            if broadcast_shapes(sc, &[m, n]).as_deref() != Some(&[m, n][..]) {
                return Err(invalid(
                    "Gemm",
                    format!("C of shape {sc:?} does not broadcast to [{m},{n}]"),
                ));
            }
            inputs.push(c);
        }
        self.node1(
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            },
            inputs,
            dt,
            vec![m, n],
        )
    }

    /// `x W^T + b` with `W` stored as [out, in] (the PyTorch `nn.Linear` layout).
    pub fn linear(&mut self, x: ValueId, w: ValueId, b: Option<ValueId>) -> GraphResult<ValueId> {
        self.gemm(x, w, b, GemmAttrs::new(1.0, false, true))
    }
}
