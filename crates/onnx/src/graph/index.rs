//! Indexing ops: `Gather`, `GatherElements`, `ScatterElements` and `ScatterND`.

use super::{invalid, DType, Graph, GraphResult, Op, Reduction, ValueId};

impl Graph {
    // ----- indexing -----

    pub fn gather(&mut self, data: ValueId, indices: ValueId, axis: usize) -> GraphResult<ValueId> {
        if self.dtype(indices) != DType::I64 {
            return Err(invalid("Gather", "indices must be i64"));
        }
        self.check_axes("Gather", data, &[axis])?;
        let ds = self.shape(data).to_vec();
        let mut out = ds[..axis].to_vec();
        out.extend_from_slice(self.shape(indices));
        out.extend_from_slice(&ds[axis + 1..]);
        let dt = self.dtype(data);
        self.node1(Op::Gather { axis }, vec![data, indices], dt, out)
    }

    pub fn gather_elements(
        &mut self,
        data: ValueId,
        indices: ValueId,
        axis: usize,
    ) -> GraphResult<ValueId> {
        if self.dtype(indices) != DType::I64 || self.shape(indices).len() != self.shape(data).len()
        {
            return Err(invalid(
                "GatherElements",
                "indices must be i64 with the rank of data",
            ));
        }
        self.check_axes("GatherElements", data, &[axis])?;
        let out = self.shape(indices).to_vec();
        let dt = self.dtype(data);
        self.node1(Op::GatherElements { axis }, vec![data, indices], dt, out)
    }

    pub fn scatter_elements(
        &mut self,
        data: ValueId,
        indices: ValueId,
        updates: ValueId,
        axis: usize,
        reduction: Reduction,
    ) -> GraphResult<ValueId> {
        let dt = self.same_dtype("ScatterElements", &[data, updates])?;
        if self.dtype(indices) != DType::I64 || self.shape(indices) != self.shape(updates) {
            return Err(invalid(
                "ScatterElements",
                "indices must be i64 with the shape of updates",
            ));
        }
        self.check_axes("ScatterElements", data, &[axis])?;
        let out = self.shape(data).to_vec();
        self.node1(
            Op::ScatterElements { axis, reduction },
            vec![data, indices, updates],
            dt,
            out,
        )
    }

    pub fn scatter_nd(
        &mut self,
        data: ValueId,
        indices: ValueId,
        updates: ValueId,
        reduction: Reduction,
    ) -> GraphResult<ValueId> {
        let dt = self.same_dtype("ScatterND", &[data, updates])?;
        let (ds, is, us) = (self.shape(data), self.shape(indices), self.shape(updates));
        let k = is.last().copied().unwrap_or(0);
        let mut expect = is[..is.len().saturating_sub(1)].to_vec();
        if k <= ds.len() {
            expect.extend_from_slice(&ds[k..]);
        }
        if self.dtype(indices) != DType::I64
            || is.is_empty()
            || k == 0
            || k > ds.len()
            || us != expect.as_slice()
        {
            return Err(invalid(
                "ScatterND",
                format!("inconsistent shapes data {ds:?}, indices {is:?}, updates {us:?}"),
            ));
        }
        let out = ds.to_vec();
        self.node1(
            Op::ScatterNd { reduction },
            vec![data, indices, updates],
            dt,
            out,
        )
    }
}
