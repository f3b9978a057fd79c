//! A small typed builder for ONNX graphs with static shapes.
//!
//! Every value carries an element type and a fully static shape, and every op method checks its
//! operands and infers the output shape, so a malformed graph is reported where it is built
//! rather than as an opaque ONNX Runtime error at session creation. Static shapes are what let
//! [`super::autodiff`] emit exact un-broadcasting (`ReduceSum` over known axes) without shape
//! ops at run time; the price is one graph per batch size (the training step uses a fixed batch).
//! Graphs that are row-independent (MLP and conv encoders built with `Flatten`, never `Reshape`
//! on the batch axis) may mark input/output batch axes as symbolic when serialised.
//!
//! The op set is ai.onnx at opset [`OPSET`] (18): every `Reduce*` op takes its axes as an `int64`
//! input, `Split` takes its sizes as an input. Only standard ops are emitted.
//!
//! The builder is split by what each part does: value and type definitions (`value.rs`), the
//! operator vocabulary ([`Op`], in `op.rs`), this file (the [`Graph`] itself: sources,
//! outputs, node plumbing and operand checks), one file per op family (elementwise and
//! comparisons, matrix products, reductions and softmax, shape ops, indexing, convolution and
//! pooling, batch normalisation) and serialisation to ONNX protobuf (`serialise.rs`).

use std::collections::{HashMap, HashSet};

mod conv;
mod elementwise;
mod index;
mod linalg;
mod norm;
mod op;
mod reduce;
mod serialise;
mod shape;
mod value;

pub(crate) use conv::conv_out;
pub use norm::BatchNormTrain;
pub use op::{GemmAttrs, Node, Op, CBOUND_DOMAIN, NCHWC_DOMAIN};
pub use value::{bf16_bits, f16_bits, DType, Reduction, TensorData, ValueId, ValueInfo, ValueKind};

/// The ai.onnx opset version whose semantics the builder emits.
pub const OPSET: i64 = 18;
/// The newest opset whose semantics for every emitted op equal those of [`OPSET`].
pub const MAX_OPSET: i64 = 22;
/// ONNX IR version written into models (IR 8 is the first that covers opset 18).
pub const IR_VERSION: i64 = 8;

/// Errors raised while building or serialising a graph. They name the op and the offending
/// shapes: they indicate a bug in the model/loss code or an inconsistent configuration.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    #[error("value name `{0}` is used twice in one graph; choose distinct parameter/input names")]
    DuplicateName(String),
    #[error(
        "opset {requested} is not supported: the builder emits opset-18 semantics, valid for opsets {OPSET}..={MAX_OPSET}"
    )]
    Opset { requested: i64 },
}

fn invalid(op: &'static str, detail: impl Into<String>) -> GraphError {
    GraphError::Invalid {
        op,
        detail: detail.into(),
    }
}

pub type GraphResult<T> = Result<T, GraphError>;

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// A graph under construction. Nodes are appended in topological order (an op can only consume
/// values that already exist), which [`super::autodiff`] relies on.
#[derive(Debug, Clone)]
pub struct Graph {
    name: String,
    values: Vec<ValueInfo>,
    nodes: Vec<Node>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    initializers: Vec<(ValueId, TensorData)>,
    names: HashSet<String>,
    i64_consts: HashMap<Vec<i64>, ValueId>,
    scalar_consts: HashMap<(DType, u64), ValueId>,
    batch_dims: HashSet<ValueId>,
    counter: usize,
    doc: Option<String>,
    /// Whether builders may emit cbound's own operators ([`CBOUND_DOMAIN`]); see
    /// [`Graph::set_custom_kernels`].
    custom_kernels: bool,
    /// MLAS's channel block while convolutions may run blocked; see
    /// [`Graph::set_blocked_convs`].
    blocked_convs: Option<usize>,
    /// The dtype matrix products run in while set; see [`Graph::set_autocast`].
    autocast: Option<DType>,
    /// The `Cast` to the autocast dtype already made of a value, so a value feeding several
    /// products (the loss's embeddings) is converted once.
    autocast_casts: HashMap<ValueId, ValueId>,
}

impl Graph {
    /// cbound's own operators (the fused Adam update) exist only as CPU kernels. A graph for
    /// the CUDA provider turns them off: ONNX Runtime would run them on the CPU and copy
    /// every parameter and optimizer state to the host and back each step. Builders then
    /// emit the equivalent ai.onnx nodes, whose f32 results are bitwise the same.
    pub fn set_custom_kernels(&mut self, allowed: bool) {
        self.custom_kernels = allowed;
    }

    pub fn custom_kernels(&self) -> bool {
        self.custom_kernels
    }

    /// While `Some(b)` (and custom kernels are allowed), the convolutions built from then on
    /// that ONNX Runtime's NCHWc kernels run faster are marked to run blocked
    /// ([`Op::Conv`]'s `blocked`). `b` must be the block MLAS uses on this CPU (16 with
    /// AVX-512, 8 with AVX2), which [`crate::runtime::Runtime::conv_block`] finds out; a wrong
    /// block gives wrong numbers, not an error. `None` (the default): every convolution is the
    /// plain ai.onnx `Conv`.
    pub fn set_blocked_convs(&mut self, block: Option<usize>) {
        self.blocked_convs = block.filter(|&b| b > 1);
    }

    pub fn blocked_convs(&self) -> Option<usize> {
        self.blocked_convs
    }

    /// While `Some(F16 | BF16)`, every `MatMul`, `Gemm` and `Conv` built with f32 operands
    /// casts them to that dtype, runs in it and casts its result back to f32 (PyTorch's
    /// autocast for the products tensor cores speed up). Everything else (activations,
    /// softmax and log-sum-exp, reductions, BatchNorm statistics, the loss) stays in f32, as
    /// the range of half precision needs. The backward pass needs no switch: the VJP of a Cast
    /// is the Cast back, so the products' gradients run in the low dtype too and arrive at
    /// the f32 parameters as f32. A mixed-precision step turns it on for the forward pass
    /// only; off (`None`, the default) the builder is exactly as before.
    pub fn set_autocast(&mut self, dtype: Option<DType>) -> GraphResult<()> {
        if let Some(dt) = dtype {
            if !matches!(dt, DType::F16 | DType::BF16) {
                return Err(invalid(
                    "autocast",
                    format!("products run in f16 or bf16, not {}", dt.name()),
                ));
            }
        }
        if dtype != self.autocast {
            self.autocast_casts.clear();
        }
        self.autocast = dtype;
        Ok(())
    }

    pub fn autocast(&self) -> Option<DType> {
        self.autocast
    }

    /// The operands of a product converted to the autocast dtype, or `None` where the
    /// product runs as built (autocast off, or an operand that is not f32).
    fn autocast_operands(&mut self, xs: &[ValueId]) -> GraphResult<Option<Vec<ValueId>>> {
        let Some(lo) = self.autocast else {
            return Ok(None);
        };
        if xs.iter().any(|&x| self.dtype(x) != DType::F32) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(xs.len());
        for &x in xs {
            let c = match self.autocast_casts.get(&x) {
                Some(&c) => c,
                None => {
                    let c = self.cast(x, lo)?;
                    self.autocast_casts.insert(x, c);
                    c
                }
            };
            out.push(c);
        }
        Ok(Some(out))
    }

    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            values: Vec::new(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            initializers: Vec::new(),
            names: HashSet::new(),
            i64_consts: HashMap::new(),
            scalar_consts: HashMap::new(),
            batch_dims: HashSet::new(),
            counter: 0,
            custom_kernels: true,
            blocked_convs: None,
            autocast: None,
            autocast_casts: HashMap::new(),
            doc: None,
        }
    }

    pub fn set_doc(&mut self, doc: impl Into<String>) {
        self.doc = Some(doc.into());
    }

    // ----- inspection -----

    pub fn value(&self, v: ValueId) -> &ValueInfo {
        &self.values[v.0]
    }

    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.values[v.0].shape
    }

    pub fn dtype(&self, v: ValueId) -> DType {
        self.values[v.0].dtype
    }

    pub fn name_of(&self, v: ValueId) -> &str {
        &self.values[v.0].name
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn num_values(&self) -> usize {
        self.values.len()
    }

    /// Looks a value up by its current name.
    pub fn find(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name).map(ValueId)
    }

    // ----- sources -----

    fn fresh_name(&mut self, stem: &str) -> String {
        loop {
            self.counter += 1;
            let name = format!("{stem}_{}", self.counter);
            if !self.names.contains(&name) {
                return name;
            }
        }
    }

    fn claim(&mut self, name: &str) -> GraphResult<()> {
        if !self.names.insert(name.to_string()) {
            return Err(GraphError::DuplicateName(name.to_string()));
        }
        Ok(())
    }

    fn push_value(
        &mut self,
        name: String,
        dtype: DType,
        shape: Vec<usize>,
        kind: ValueKind,
    ) -> ValueId {
        self.values.push(ValueInfo {
            name,
            dtype,
            shape,
            kind,
        });
        ValueId(self.values.len() - 1)
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> GraphResult<ValueId> {
        self.claim(name)?;
        let v = self.push_value(name.to_string(), dtype, shape.to_vec(), ValueKind::Input);
        self.inputs.push(v);
        Ok(v)
    }

    /// Marks dimension 0 of an input or output as symbolic (`batch`) in the serialised model.
    /// Only valid for row-independent graphs; see the module docs.
    pub fn mark_batch_dim(&mut self, v: ValueId) {
        self.batch_dims.insert(v);
    }

    /// Adds a named initializer (a constant baked into the model).
    pub fn initializer(
        &mut self,
        name: &str,
        data: TensorData,
        shape: &[usize],
    ) -> GraphResult<ValueId> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(invalid(
                "initializer",
                format!(
                    "`{name}` has shape {shape:?} ({numel} elements) but {} values",
                    data.len()
                ),
            ));
        }
        self.claim(name)?;
        let v = self.push_value(
            name.to_string(),
            data.dtype(),
            shape.to_vec(),
            ValueKind::Initializer,
        );
        self.initializers.push((v, data));
        Ok(v)
    }

    /// An anonymous constant tensor.
    pub fn constant(&mut self, data: TensorData, shape: &[usize]) -> GraphResult<ValueId> {
        let name = self.fresh_name("const");
        self.initializer(&name, data, shape)
    }

    /// A 1-D `int64` constant, shared between all users of the same contents.
    pub fn const_i64(&mut self, values: &[i64]) -> ValueId {
        if let Some(&v) = self.i64_consts.get(values) {
            return v;
        }
        let name = self.fresh_name("i64");
        self.names.insert(name.clone());
        let v = self.push_value(name, DType::I64, vec![values.len()], ValueKind::Initializer);
        self.initializers
            .push((v, TensorData::I64(values.to_vec())));
        self.i64_consts.insert(values.to_vec(), v);
        v
    }

    fn const_usize(&mut self, values: &[usize]) -> ValueId {
        let v: Vec<i64> = values.iter().map(|&x| x as i64).collect();
        self.const_i64(&v)
    }

    /// A rank-0 float constant of the given dtype, shared between users of the same value.
    pub fn scalar(&mut self, dtype: DType, value: f64) -> GraphResult<ValueId> {
        let key_bits = match dtype {
            DType::F32 => u64::from((value as f32).to_bits()),
            DType::F64 => value.to_bits(),
            DType::F16 => u64::from(value::f16_bits(value as f32)),
            DType::BF16 => u64::from(value::bf16_bits(value as f32)),
            DType::I64 => value as i64 as u64,
            DType::Bool => return Err(invalid("scalar", "bool scalars are not supported")),
        };
        if let Some(&v) = self.scalar_consts.get(&(dtype, key_bits)) {
            return Ok(v);
        }
        let data = TensorData::filled(dtype, 1, value)
            .ok_or_else(|| invalid("scalar", "unsupported dtype"))?;
        let name = self.fresh_name("scalar");
        self.names.insert(name.clone());
        let v = self.push_value(name, dtype, Vec::new(), ValueKind::Initializer);
        self.initializers.push((v, data));
        self.scalar_consts.insert((dtype, key_bits), v);
        Ok(v)
    }

    /// A scalar constant with the dtype of `like`.
    pub fn scalar_like(&mut self, like: ValueId, value: f64) -> GraphResult<ValueId> {
        let dtype = self.dtype(like);
        self.scalar(dtype, value)
    }

    // ----- outputs and names -----

    /// Renames a node-produced value (names are resolved at serialisation time).
    pub fn rename(&mut self, v: ValueId, name: &str) -> GraphResult<()> {
        if self.values[v.0].name == name {
            return Ok(());
        }
        if !matches!(self.values[v.0].kind, ValueKind::Node(_)) {
            return Err(invalid(
                "rename",
                format!(
                    "`{}` is an input or initializer; its name is fixed",
                    self.values[v.0].name
                ),
            ));
        }
        self.claim(name)?;
        let old = std::mem::replace(&mut self.values[v.0].name, name.to_string());
        self.names.remove(&old);
        Ok(())
    }

    /// Declares `v` a graph output called `name`, renaming it when possible and inserting an
    /// `Identity` when `v` is an input, an initializer or already an output under another name.
    pub fn output(&mut self, v: ValueId, name: &str) -> GraphResult<ValueId> {
        let renamable =
            matches!(self.values[v.0].kind, ValueKind::Node(_)) && !self.outputs.contains(&v);
        let out = if renamable {
            self.rename(v, name)?;
            v
        } else {
            let out = self.node1(Op::Identity, vec![v], self.dtype(v), self.shape(v).to_vec())?;
            self.rename(out, name)?;
            out
        };
        self.outputs.push(out);
        Ok(out)
    }

    // ----- node plumbing -----

    fn node(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        outs: Vec<(DType, Vec<usize>)>,
    ) -> Vec<ValueId> {
        let idx = self.nodes.len();
        let stem = op.onnx_name().to_ascii_lowercase();
        let mut outputs = Vec::with_capacity(outs.len());
        for (dtype, shape) in outs {
            let name = self.fresh_name(&stem);
            self.names.insert(name.clone());
            outputs.push(self.push_value(name, dtype, shape, ValueKind::Node(idx)));
        }
        self.nodes.push(Node {
            op,
            inputs,
            outputs: outputs.clone(),
        });
        outputs
    }

    fn node1(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        dtype: DType,
        shape: Vec<usize>,
    ) -> GraphResult<ValueId> {
        let outs = self.node(op, inputs, vec![(dtype, shape)]);
        outs.into_iter()
            .next()
            .ok_or_else(|| invalid("node", "internal: node without outputs"))
    }

    fn require_float(&self, op: &'static str, v: ValueId) -> GraphResult<DType> {
        let dt = self.dtype(v);
        if dt.is_float() {
            Ok(dt)
        } else {
            Err(invalid(
                op,
                format!("`{}` must be a float, is {}", self.name_of(v), dt.name()),
            ))
        }
    }

    fn same_dtype(&self, op: &'static str, vs: &[ValueId]) -> GraphResult<DType> {
        let dt = self.dtype(vs[0]);
        for &v in &vs[1..] {
            if self.dtype(v) != dt {
                return Err(invalid(
                    op,
                    format!(
                        "operand dtypes differ: `{}` is {}, `{}` is {}",
                        self.name_of(vs[0]),
                        dt.name(),
                        self.name_of(v),
                        self.dtype(v).name()
                    ),
                ));
            }
        }
        Ok(dt)
    }

    fn check_axes(&self, op: &'static str, v: ValueId, axes: &[usize]) -> GraphResult<()> {
        let rank = self.shape(v).len();
        let mut seen = HashSet::new();
        for &a in axes {
            if a >= rank || !seen.insert(a) {
                return Err(invalid(
                    op,
                    format!("axes {axes:?} invalid for rank {rank}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shapes(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[2, 1], &[1, 4]), Some(vec![2, 4]));
        assert_eq!(broadcast_shapes(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shapes(&[2, 3], &[2]), None);
    }
}
