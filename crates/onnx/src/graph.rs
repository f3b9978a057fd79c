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

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::proto;

/// The ai.onnx opset version whose semantics the builder emits.
pub const OPSET: i64 = 18;
/// The newest opset whose semantics for every emitted op equal those of [`OPSET`].
pub const MAX_OPSET: i64 = 22;
/// ONNX IR version written into models (IR 8 is the first that covers opset 18).
pub const IR_VERSION: i64 = 8;

/// Element type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    I64,
    Bool,
}

impl DType {
    /// The `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => proto::data_type::FLOAT,
            DType::F64 => proto::data_type::DOUBLE,
            DType::I64 => proto::data_type::INT64,
            DType::Bool => proto::data_type::BOOL,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }
}

/// Handle of a value (tensor) inside one [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(usize);

impl ValueId {
    pub fn index(self) -> usize {
        self.0
    }
}

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Input,
    Initializer,
    Node(usize),
}

#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub kind: ValueKind,
}

impl ValueInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Constant tensor contents (initializers and constant attributes).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A float constant of the given dtype filled with `value` (f64 is narrowed for f32).
    pub fn filled(dtype: DType, len: usize, value: f64) -> Option<TensorData> {
        match dtype {
            DType::F32 => Some(TensorData::F32(vec![value as f32; len])),
            DType::F64 => Some(TensorData::F64(vec![value; len])),
            DType::I64 => Some(TensorData::I64(vec![value as i64; len])),
            DType::Bool => None,
        }
    }

    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn to_proto(&self, name: Option<String>, shape: &[usize]) -> proto::TensorProto {
        proto::TensorProto {
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: Some(self.dtype().onnx_code()),
            name,
            doc_string: None,
            raw_data: Some(self.to_le_bytes()),
        }
    }
}

/// `reduction` attribute of the scatter ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    None,
    Add,
}

impl Reduction {
    fn as_str(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Add => "add",
        }
    }
}

/// The operators the builder can emit, with their attributes in typed form.
///
/// Constant operands that opset 18 takes as inputs (reduce axes, reshape shape, split sizes,
/// expand shape, unsqueeze axes) are emitted as `int64` initializers; their values are repeated
/// here so that [`super::autodiff`] can read them without decoding initializers.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    Relu,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    Sign,
    Pow,
    /// 2-D matrix product.
    MatMul,
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    ReduceSum {
        axes: Vec<usize>,
        keepdims: bool,
    },
    ReduceMean {
        axes: Vec<usize>,
        keepdims: bool,
    },
    ReduceMax {
        axes: Vec<usize>,
        keepdims: bool,
    },
    Softmax {
        axis: usize,
    },
    LogSoftmax {
        axis: usize,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Reshape {
        shape: Vec<usize>,
    },
    Flatten {
        axis: usize,
    },
    /// 2-D convolution. `pads` = [top, left, bottom, right].
    Conv {
        strides: [usize; 2],
        pads: [usize; 4],
        dilations: [usize; 2],
        group: usize,
    },
    ConvTranspose {
        strides: [usize; 2],
        pads: [usize; 4],
        output_padding: [usize; 2],
        group: usize,
    },
    /// Average pooling with `count_include_pad = 1` (so the divisor is always kh*kw).
    AveragePool {
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    },
    /// Max pooling; the node has two outputs, values and flat `int64` indices.
    MaxPool {
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    },
    Identity,
    /// Serialised as `Identity`; [`super::autodiff`] treats its output as a constant.
    StopGradient,
    Concat {
        axis: usize,
    },
    Split {
        axis: usize,
        sizes: Vec<usize>,
    },
    Expand {
        shape: Vec<usize>,
    },
    Gather {
        axis: usize,
    },
    GatherElements {
        axis: usize,
    },
    ScatterElements {
        axis: usize,
        reduction: Reduction,
    },
    ScatterNd {
        reduction: Reduction,
    },
    Unsqueeze {
        axes: Vec<usize>,
    },
    /// Static slice with step 1 along the listed axes.
    Slice {
        starts: Vec<usize>,
        ends: Vec<usize>,
        axes: Vec<usize>,
    },
    /// Constant (zero) padding; `pads` = all begins then all ends, one per axis.
    Pad {
        pads: Vec<usize>,
    },
    Equal,
    Greater,
    Where,
    Cast {
        to: DType,
    },
    ConstantOfShape {
        value: TensorData,
    },
    Sum,
}

impl Op {
    /// The ONNX `op_type`.
    pub fn onnx_name(&self) -> &'static str {
        match self {
            Op::Add => "Add",
            Op::Sub => "Sub",
            Op::Mul => "Mul",
            Op::Div => "Div",
            Op::Neg => "Neg",
            Op::Relu => "Relu",
            Op::Exp => "Exp",
            Op::Log => "Log",
            Op::Sqrt => "Sqrt",
            Op::Tanh => "Tanh",
            Op::Sigmoid => "Sigmoid",
            Op::Sign => "Sign",
            Op::Pow => "Pow",
            Op::MatMul => "MatMul",
            Op::Gemm { .. } => "Gemm",
            Op::ReduceSum { .. } => "ReduceSum",
            Op::ReduceMean { .. } => "ReduceMean",
            Op::ReduceMax { .. } => "ReduceMax",
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::Transpose { .. } => "Transpose",
            Op::Reshape { .. } => "Reshape",
            Op::Flatten { .. } => "Flatten",
            Op::Conv { .. } => "Conv",
            Op::ConvTranspose { .. } => "ConvTranspose",
            Op::AveragePool { .. } => "AveragePool",
            Op::MaxPool { .. } => "MaxPool",
            Op::Identity | Op::StopGradient => "Identity",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Expand { .. } => "Expand",
            Op::Gather { .. } => "Gather",
            Op::GatherElements { .. } => "GatherElements",
            Op::ScatterElements { .. } => "ScatterElements",
            Op::ScatterNd { .. } => "ScatterND",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Slice { .. } => "Slice",
            Op::Pad { .. } => "Pad",
            Op::Equal => "Equal",
            Op::Greater => "Greater",
            Op::Where => "Where",
            Op::Cast { .. } => "Cast",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Sum => "Sum",
        }
    }

    fn attributes(&self) -> Vec<proto::AttributeProto> {
        let ints = |name: &str, v: &[usize]| attr_ints(name, v.iter().map(|&x| x as i64).collect());
        match self {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => vec![
                attr_float("alpha", *alpha),
                attr_float("beta", *beta),
                attr_int("transA", i64::from(*trans_a)),
                attr_int("transB", i64::from(*trans_b)),
            ],
            Op::ReduceSum { keepdims, .. }
            | Op::ReduceMean { keepdims, .. }
            | Op::ReduceMax { keepdims, .. } => vec![attr_int("keepdims", i64::from(*keepdims))],
            Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Flatten { axis } => {
                vec![attr_int("axis", *axis as i64)]
            }
            Op::Concat { axis } | Op::Gather { axis } | Op::GatherElements { axis } => {
                vec![attr_int("axis", *axis as i64)]
            }
            Op::Split { axis, .. } => vec![attr_int("axis", *axis as i64)],
            Op::Transpose { perm } => vec![ints("perm", perm)],
            Op::Conv {
                strides,
                pads,
                dilations,
                group,
            } => vec![
                ints("strides", strides),
                ints("pads", pads),
                ints("dilations", dilations),
                attr_int("group", *group as i64),
            ],
            Op::ConvTranspose {
                strides,
                pads,
                output_padding,
                group,
            } => vec![
                ints("strides", strides),
                ints("pads", pads),
                ints("output_padding", output_padding),
                ints("dilations", &[1, 1]),
                attr_int("group", *group as i64),
            ],
            Op::AveragePool {
                kernel,
                strides,
                pads,
            } => vec![
                ints("kernel_shape", kernel),
                ints("strides", strides),
                ints("pads", pads),
                attr_int("count_include_pad", 1),
            ],
            Op::MaxPool {
                kernel,
                strides,
                pads,
            } => vec![
                ints("kernel_shape", kernel),
                ints("strides", strides),
                ints("pads", pads),
                attr_int("storage_order", 0),
            ],
            Op::ScatterElements { axis, reduction } => vec![
                attr_int("axis", *axis as i64),
                attr_string("reduction", reduction.as_str()),
            ],
            Op::ScatterNd { reduction } => vec![attr_string("reduction", reduction.as_str())],
            Op::Cast { to } => vec![attr_int("to", i64::from(to.onnx_code()))],
            Op::Pad { .. } => vec![attr_string("mode", "constant")],
            Op::ConstantOfShape { value } => vec![proto::AttributeProto {
                name: Some("value".into()),
                r#type: Some(proto::attribute_type::TENSOR),
                t: Some(value.to_proto(None, &[1])),
                ..Default::default()
            }],
            _ => Vec::new(),
        }
    }
}

fn attr_int(name: &str, i: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_type::INT),
        i: Some(i),
        ..Default::default()
    }
}

fn attr_float(name: &str, f: f32) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_type::FLOAT),
        f: Some(f),
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: Vec<i64>) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_type::INTS),
        ints,
        ..Default::default()
    }
}

fn attr_string(name: &str, s: &str) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_type::STRING),
        s: Some(s.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// Attributes of a `Gemm` node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl GemmAttrs {
    /// `alpha * op(A) op(B) (+ C)`, i.e. `beta = 1`.
    pub fn new(alpha: f32, trans_a: bool, trans_b: bool) -> GemmAttrs {
        GemmAttrs {
            alpha,
            beta: 1.0,
            trans_a,
            trans_b,
        }
    }

    pub fn with_beta(self, beta: f32) -> GemmAttrs {
        GemmAttrs { beta, ..self }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

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
}

impl Graph {
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
                format!("`{}` must be f32 or f64, is {}", self.name_of(v), dt.name()),
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

    // ----- elementwise -----

    fn binary(&mut self, op: Op, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        let name = op.onnx_name();
        let dt = self.same_dtype(name, &[a, b])?;
        let shape = broadcast_shapes(self.shape(a), self.shape(b)).ok_or_else(|| {
            invalid(
                name,
                format!(
                    "shapes {:?} and {:?} do not broadcast",
                    self.shape(a),
                    self.shape(b)
                ),
            )
        })?;
        self.node1(op, vec![a, b], dt, shape)
    }

    pub fn add(&mut self, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        self.binary(Op::Add, a, b)
    }

    pub fn sub(&mut self, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        self.binary(Op::Sub, a, b)
    }

    pub fn mul(&mut self, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        self.binary(Op::Mul, a, b)
    }

    pub fn div(&mut self, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        self.binary(Op::Div, a, b)
    }

    /// `a ^ b` elementwise (numpy broadcasting, same float dtype).
    pub fn pow(&mut self, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        self.require_float("Pow", a)?;
        self.binary(Op::Pow, a, b)
    }

    /// `x * c` for a host constant `c`.
    pub fn scale(&mut self, x: ValueId, c: f64) -> GraphResult<ValueId> {
        let s = self.scalar_like(x, c)?;
        self.mul(x, s)
    }

    /// `x + c` for a host constant `c`.
    pub fn add_scalar(&mut self, x: ValueId, c: f64) -> GraphResult<ValueId> {
        let s = self.scalar_like(x, c)?;
        self.add(x, s)
    }

    fn unary_float(&mut self, op: Op, x: ValueId) -> GraphResult<ValueId> {
        let dt = self.require_float(op.onnx_name(), x)?;
        let shape = self.shape(x).to_vec();
        self.node1(op, vec![x], dt, shape)
    }

    pub fn neg(&mut self, x: ValueId) -> GraphResult<ValueId> {
        self.unary_float(Op::Neg, x)
    }

    pub fn relu(&mut self, x: ValueId) -> GraphResult<ValueId> {
        self.unary_float(Op::Relu, x)
    }

    pub fn exp(&mut self, x: ValueId) -> GraphResult<ValueId> {
        self.unary_float(Op::Exp, x)
    }

    pub fn log(&mut self, x: ValueId) -> GraphResult<ValueId> {
        self.unary_float(Op::Log, x)
    }

    pub fn sqrt(&mut self, x: ValueId) -> GraphResult<ValueId> {
        self.unary_float(Op::Sqrt, x)
    }

    pub fn tanh(&mut self, x: ValueId) -> GraphResult<ValueId> {
        self.unary_float(Op::Tanh, x)
    }

    pub fn sigmoid(&mut self, x: ValueId) -> GraphResult<ValueId> {
        self.unary_float(Op::Sigmoid, x)
    }

    pub fn sign(&mut self, x: ValueId) -> GraphResult<ValueId> {
        self.unary_float(Op::Sign, x)
    }

    pub fn identity(&mut self, x: ValueId) -> GraphResult<ValueId> {
        let (dt, shape) = (self.dtype(x), self.shape(x).to_vec());
        self.node1(Op::Identity, vec![x], dt, shape)
    }

    /// Identity whose output autodiff treats as a constant (e.g. the max in log-sum-exp).
    pub fn stop_gradient(&mut self, x: ValueId) -> GraphResult<ValueId> {
        let (dt, shape) = (self.dtype(x), self.shape(x).to_vec());
        self.node1(Op::StopGradient, vec![x], dt, shape)
    }

    /// Sum of one or more tensors (numpy broadcasting).
    pub fn sum(&mut self, xs: &[ValueId]) -> GraphResult<ValueId> {
        match xs {
            [] => Err(invalid("Sum", "needs at least one operand")),
            [x] => Ok(*x),
            [a, b] => self.add(*a, *b),
            _ => {
                let dt = self.same_dtype("Sum", xs)?;
                let mut shape = self.shape(xs[0]).to_vec();
                for &x in &xs[1..] {
                    shape = broadcast_shapes(&shape, self.shape(x))
                        .ok_or_else(|| invalid("Sum", "operand shapes do not broadcast"))?;
                }
                self.node1(Op::Sum, xs.to_vec(), dt, shape)
            }
        }
    }

    // ----- linear algebra -----

    /// `[M, K] x [K, N] -> [M, N]`.
    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
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

    // ----- reductions -----

    fn reduced_shape(&self, x: ValueId, axes: &[usize], keepdims: bool) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, &d) in self.shape(x).iter().enumerate() {
            if axes.contains(&i) {
                if keepdims {
                    out.push(1);
                }
            } else {
                out.push(d);
            }
        }
        out
    }

    fn reduce(
        &mut self,
        op: Op,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> GraphResult<ValueId> {
        let name = op.onnx_name();
        let dt = self.require_float(name, x)?;
        if axes.is_empty() {
            return Err(invalid(
                name,
                "empty axes list (would mean `all axes` or a no-op); list the axes",
            ));
        }
        self.check_axes(name, x, axes)?;
        let shape = self.reduced_shape(x, axes, keepdims);
        let axes_v = self.const_usize(axes);
        self.node1(op, vec![x, axes_v], dt, shape)
    }

    pub fn reduce_sum(
        &mut self,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> GraphResult<ValueId> {
        let op = Op::ReduceSum {
            axes: axes.to_vec(),
            keepdims,
        };
        self.reduce(op, x, axes, keepdims)
    }

    pub fn reduce_mean(
        &mut self,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> GraphResult<ValueId> {
        let op = Op::ReduceMean {
            axes: axes.to_vec(),
            keepdims,
        };
        self.reduce(op, x, axes, keepdims)
    }

    pub fn reduce_max(
        &mut self,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> GraphResult<ValueId> {
        let op = Op::ReduceMax {
            axes: axes.to_vec(),
            keepdims,
        };
        self.reduce(op, x, axes, keepdims)
    }

    /// Sum over every axis, giving a rank-0 value.
    pub fn reduce_sum_all(&mut self, x: ValueId) -> GraphResult<ValueId> {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        if axes.is_empty() {
            return Ok(x);
        }
        self.reduce_sum(x, &axes, false)
    }

    /// Mean over every axis, giving a rank-0 value.
    pub fn reduce_mean_all(&mut self, x: ValueId) -> GraphResult<ValueId> {
        let axes: Vec<usize> = (0..self.shape(x).len()).collect();
        if axes.is_empty() {
            return Ok(x);
        }
        self.reduce_mean(x, &axes, false)
    }

    pub fn softmax(&mut self, x: ValueId, axis: usize) -> GraphResult<ValueId> {
        self.check_axes("Softmax", x, &[axis])?;
        self.unary_float(Op::Softmax { axis }, x)
    }

    pub fn log_softmax(&mut self, x: ValueId, axis: usize) -> GraphResult<ValueId> {
        self.check_axes("LogSoftmax", x, &[axis])?;
        self.unary_float(Op::LogSoftmax { axis }, x)
    }

    /// Numerically stable `log(sum(exp(x), axis))` with keepdims: `m + log(sum(exp(x - m)))`
    /// with the max `m` detached, which leaves the gradient exact (softmax).
    pub fn logsumexp(&mut self, x: ValueId, axis: usize) -> GraphResult<ValueId> {
        let m = self.reduce_max(x, &[axis], true)?;
        let m = self.stop_gradient(m)?;
        let shifted = self.sub(x, m)?;
        let e = self.exp(shifted)?;
        let s = self.reduce_sum(e, &[axis], true)?;
        let l = self.log(s)?;
        self.add(l, m)
    }

    // ----- shape ops -----

    pub fn transpose(&mut self, x: ValueId, perm: &[usize]) -> GraphResult<ValueId> {
        let shape = self.shape(x).to_vec();
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..shape.len()).collect::<Vec<_>>() {
            return Err(invalid(
                "Transpose",
                format!("perm {perm:?} is not a permutation of rank {}", shape.len()),
            ));
        }
        let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let dt = self.dtype(x);
        self.node1(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            vec![x],
            dt,
            out,
        )
    }

    pub fn reshape(&mut self, x: ValueId, shape: &[usize]) -> GraphResult<ValueId> {
        let n: usize = shape.iter().product();
        if n != self.value(x).numel() {
            return Err(invalid(
                "Reshape",
                format!("cannot reshape {:?} to {shape:?}", self.shape(x)),
            ));
        }
        if shape == self.shape(x) {
            return Ok(x);
        }
        let s = self.const_usize(shape);
        let dt = self.dtype(x);
        self.node1(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            vec![x, s],
            dt,
            shape.to_vec(),
        )
    }

    /// Flattens to 2-D: dims before `axis` form the rows (batch-size independent, unlike Reshape).
    pub fn flatten(&mut self, x: ValueId, axis: usize) -> GraphResult<ValueId> {
        let shape = self.shape(x).to_vec();
        if axis > shape.len() {
            return Err(invalid(
                "Flatten",
                format!("axis {axis} > rank {}", shape.len()),
            ));
        }
        let rows: usize = shape[..axis].iter().product();
        let cols: usize = shape[axis..].iter().product();
        let dt = self.dtype(x);
        self.node1(Op::Flatten { axis }, vec![x], dt, vec![rows, cols])
    }

    pub fn concat(&mut self, xs: &[ValueId], axis: usize) -> GraphResult<ValueId> {
        if xs.is_empty() {
            return Err(invalid("Concat", "needs at least one operand"));
        }
        let dt = self.same_dtype("Concat", xs)?;
        self.check_axes("Concat", xs[0], &[axis])?;
        let mut shape = self.shape(xs[0]).to_vec();
        for &x in &xs[1..] {
            let s = self.shape(x);
            if s.len() != shape.len()
                || s.iter()
                    .enumerate()
                    .any(|(i, &d)| i != axis && d != shape[i])
            {
                return Err(invalid(
                    "Concat",
                    format!(
                        "shapes {:?} and {s:?} differ outside axis {axis}",
                        self.shape(xs[0])
                    ),
                ));
            }
            shape[axis] += s[axis];
        }
        self.node1(Op::Concat { axis }, xs.to_vec(), dt, shape)
    }

    pub fn split(&mut self, x: ValueId, axis: usize, sizes: &[usize]) -> GraphResult<Vec<ValueId>> {
        self.check_axes("Split", x, &[axis])?;
        let shape = self.shape(x).to_vec();
        if sizes.iter().sum::<usize>() != shape[axis] || sizes.contains(&0) {
            return Err(invalid(
                "Split",
                format!("sizes {sizes:?} do not partition dim {} of {shape:?}", axis),
            ));
        }
        let s = self.const_usize(sizes);
        let dt = self.dtype(x);
        let outs = sizes
            .iter()
            .map(|&n| {
                let mut sh = shape.clone();
                sh[axis] = n;
                (dt, sh)
            })
            .collect();
        Ok(self.node(
            Op::Split {
                axis,
                sizes: sizes.to_vec(),
            },
            vec![x, s],
            outs,
        ))
    }

    pub fn expand(&mut self, x: ValueId, shape: &[usize]) -> GraphResult<ValueId> {
        let out = broadcast_shapes(self.shape(x), shape).ok_or_else(|| {
            invalid(
                "Expand",
                format!("{:?} does not broadcast to {shape:?}", self.shape(x)),
            )
        })?;
        if out == self.shape(x) {
            return Ok(x);
        }
        let s = self.const_usize(shape);
        let dt = self.dtype(x);
        self.node1(
            Op::Expand {
                shape: shape.to_vec(),
            },
            vec![x, s],
            dt,
            out,
        )
    }

    pub fn unsqueeze(&mut self, x: ValueId, axes: &[usize]) -> GraphResult<ValueId> {
        let shape = self.shape(x).to_vec();
        let rank = shape.len() + axes.len();
        let mut out = Vec::with_capacity(rank);
        let mut it = shape.iter();
        for i in 0..rank {
            if axes.contains(&i) {
                out.push(1);
            } else {
                out.push(
                    *it.next()
                        .ok_or_else(|| invalid("Unsqueeze", format!("axes {axes:?} invalid")))?,
                );
            }
        }
        if it.next().is_some() || axes.iter().any(|&a| a >= rank) {
            return Err(invalid(
                "Unsqueeze",
                format!("axes {axes:?} invalid for rank {}", shape.len()),
            ));
        }
        let a = self.const_usize(axes);
        let dt = self.dtype(x);
        self.node1(
            Op::Unsqueeze {
                axes: axes.to_vec(),
            },
            vec![x, a],
            dt,
            out,
        )
    }

    /// `x[starts..ends]` along `axes` (step 1).
    pub fn slice(
        &mut self,
        x: ValueId,
        starts: &[usize],
        ends: &[usize],
        axes: &[usize],
    ) -> GraphResult<ValueId> {
        self.check_axes("Slice", x, axes)?;
        let mut shape = self.shape(x).to_vec();
        if starts.len() != axes.len() || ends.len() != axes.len() {
            return Err(invalid(
                "Slice",
                "starts, ends and axes must have equal lengths",
            ));
        }
        for ((&a, &s0), &e) in axes.iter().zip(starts).zip(ends) {
            if s0 >= e || e > shape[a] {
                return Err(invalid(
                    "Slice",
                    format!("range {s0}..{e} invalid for dim {a} of {shape:?}"),
                ));
            }
            shape[a] = e - s0;
        }
        let (sv, ev, av) = (
            self.const_usize(starts),
            self.const_usize(ends),
            self.const_usize(axes),
        );
        let dt = self.dtype(x);
        self.node1(
            Op::Slice {
                starts: starts.to_vec(),
                ends: ends.to_vec(),
                axes: axes.to_vec(),
            },
            vec![x, sv, ev, av],
            dt,
            shape,
        )
    }

    /// Zero padding; `pads` lists all begins then all ends (ONNX order).
    pub fn pad(&mut self, x: ValueId, pads: &[usize]) -> GraphResult<ValueId> {
        let mut shape = self.shape(x).to_vec();
        let r = shape.len();
        if pads.len() != 2 * r {
            return Err(invalid("Pad", format!("needs {} pads for rank {r}", 2 * r)));
        }
        for i in 0..r {
            shape[i] += pads[i] + pads[i + r];
        }
        let p = self.const_usize(pads);
        let dt = self.dtype(x);
        self.node1(
            Op::Pad {
                pads: pads.to_vec(),
            },
            vec![x, p],
            dt,
            shape,
        )
    }

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

    // ----- comparisons and selection -----

    pub fn equal(&mut self, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        let v = self.binary(Op::Equal, a, b)?;
        self.values[v.0].dtype = DType::Bool;
        Ok(v)
    }

    pub fn greater(&mut self, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        let v = self.binary(Op::Greater, a, b)?;
        self.values[v.0].dtype = DType::Bool;
        Ok(v)
    }

    pub fn where_(&mut self, cond: ValueId, a: ValueId, b: ValueId) -> GraphResult<ValueId> {
        if self.dtype(cond) != DType::Bool {
            return Err(invalid("Where", "condition must be bool"));
        }
        let dt = self.same_dtype("Where", &[a, b])?;
        let s = broadcast_shapes(self.shape(a), self.shape(b))
            .and_then(|s| broadcast_shapes(&s, self.shape(cond)))
            .ok_or_else(|| invalid("Where", "operand shapes do not broadcast"))?;
        self.node1(Op::Where, vec![cond, a, b], dt, s)
    }

    pub fn cast(&mut self, x: ValueId, to: DType) -> GraphResult<ValueId> {
        if self.dtype(x) == to {
            return Ok(x);
        }
        let shape = self.shape(x).to_vec();
        self.node1(Op::Cast { to }, vec![x], to, shape)
    }

    /// A tensor of the given shape filled with `value`, built at run time (no initializer bytes).
    pub fn filled(&mut self, dtype: DType, shape: &[usize], value: f64) -> GraphResult<ValueId> {
        let v = TensorData::filled(dtype, 1, value)
            .ok_or_else(|| invalid("ConstantOfShape", "unsupported dtype"))?;
        if shape.is_empty() {
            return self.scalar(dtype, value);
        }
        let s = self.const_usize(shape);
        self.node1(
            Op::ConstantOfShape { value: v },
            vec![s],
            dtype,
            shape.to_vec(),
        )
    }

    // ----- convolution and pooling -----

    /// 2-D convolution: x `[N,C,H,W]`, w `[M,C/group,kh,kw]`, optional bias `[M]`; dilation 1.
    pub fn conv2d(
        &mut self,
        x: ValueId,
        w: ValueId,
        b: Option<ValueId>,
        strides: [usize; 2],
        pads: [usize; 4],
        group: usize,
    ) -> GraphResult<ValueId> {
        self.conv2d_dilated(x, w, b, strides, pads, [1, 1], group)
    }

    /// 2-D convolution with dilation (used by the weight gradient of a strided convolution).
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_dilated(
        &mut self,
        x: ValueId,
        w: ValueId,
        b: Option<ValueId>,
        strides: [usize; 2],
        pads: [usize; 4],
        dilations: [usize; 2],
        group: usize,
    ) -> GraphResult<ValueId> {
        let dt = self.same_dtype("Conv", &[x, w])?;
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        if xs.len() != 4
            || ws.len() != 4
            || group == 0
            || xs[1] != ws[1] * group
            || ws[0] % group != 0
        {
            return Err(invalid(
                "Conv",
                format!("incompatible input {xs:?} and weight {ws:?} (group {group})"),
            ));
        }
        if strides.contains(&0) || dilations.contains(&0) {
            return Err(invalid("Conv", "strides and dilations must be positive"));
        }
        let eff = [
            dilations[0] * (ws[2] - 1) + 1,
            dilations[1] * (ws[3] - 1) + 1,
        ];
        let out_hw = conv_out(&xs[2..], &eff, strides, pads).ok_or_else(|| {
            invalid(
                "Conv",
                format!("kernel {:?} larger than padded input {xs:?}", &ws[2..]),
            )
        })?;
        let mut inputs = vec![x, w];
        if let Some(b) = b {
            if self.shape(b) != [ws[0]] {
                return Err(invalid(
                    "Conv",
                    format!("bias must be [{}], is {:?}", ws[0], self.shape(b)),
                ));
            }
            inputs.push(b);
        }
        self.node1(
            Op::Conv {
                strides,
                pads,
                dilations,
                group,
            },
            inputs,
            dt,
            vec![xs[0], ws[0], out_hw[0], out_hw[1]],
        )
    }

    /// Transposed 2-D convolution: x `[N,C,H,W]`, w `[C, M/group, kh, kw]`; dilation 1.
    pub fn conv_transpose2d(
        &mut self,
        x: ValueId,
        w: ValueId,
        strides: [usize; 2],
        pads: [usize; 4],
        output_padding: [usize; 2],
        group: usize,
    ) -> GraphResult<ValueId> {
        let dt = self.same_dtype("ConvTranspose", &[x, w])?;
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        if xs.len() != 4 || ws.len() != 4 || group == 0 || xs[1] != ws[0] || xs[1] % group != 0 {
            return Err(invalid(
                "ConvTranspose",
                format!("incompatible input {xs:?} and weight {ws:?} (group {group})"),
            ));
        }
        let mut hw = [0usize; 2];
        for i in 0..2 {
            if output_padding[i] >= strides[i] {
                return Err(invalid(
                    "ConvTranspose",
                    "output_padding must be smaller than the stride",
                ));
            }
            let full = strides[i] * (xs[2 + i] - 1) + output_padding[i] + ws[2 + i];
            hw[i] = full
                .checked_sub(pads[i] + pads[i + 2])
                .ok_or_else(|| invalid("ConvTranspose", "pads larger than the output"))?;
        }
        self.node1(
            Op::ConvTranspose {
                strides,
                pads,
                output_padding,
                group,
            },
            vec![x, w],
            dt,
            vec![xs[0], ws[1] * group, hw[0], hw[1]],
        )
    }

    fn pool_shape(
        &self,
        op: &'static str,
        x: ValueId,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    ) -> GraphResult<Vec<usize>> {
        let xs = self.shape(x);
        if xs.len() != 4 || strides.contains(&0) || kernel.contains(&0) {
            return Err(invalid(
                op,
                format!("expects a 4-D input and positive kernel/strides, got {xs:?}"),
            ));
        }
        if pads[0] >= kernel[0]
            || pads[1] >= kernel[1]
            || pads[2] >= kernel[0]
            || pads[3] >= kernel[1]
        {
            return Err(invalid(op, "pads must be smaller than the kernel"));
        }
        let hw = conv_out(&xs[2..], &kernel, strides, pads).ok_or_else(|| {
            invalid(
                op,
                format!("kernel {kernel:?} larger than padded input {xs:?}"),
            )
        })?;
        Ok(vec![xs[0], xs[1], hw[0], hw[1]])
    }

    pub fn average_pool(
        &mut self,
        x: ValueId,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    ) -> GraphResult<ValueId> {
        let dt = self.require_float("AveragePool", x)?;
        let shape = self.pool_shape("AveragePool", x, kernel, strides, pads)?;
        self.node1(
            Op::AveragePool {
                kernel,
                strides,
                pads,
            },
            vec![x],
            dt,
            shape,
        )
    }

    /// Returns (values, flat int64 indices into the input).
    pub fn max_pool(
        &mut self,
        x: ValueId,
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    ) -> GraphResult<(ValueId, ValueId)> {
        let dt = self.require_float("MaxPool", x)?;
        let shape = self.pool_shape("MaxPool", x, kernel, strides, pads)?;
        let outs = self.node(
            Op::MaxPool {
                kernel,
                strides,
                pads,
            },
            vec![x],
            vec![(dt, shape.clone()), (DType::I64, shape)],
        );
        match outs.as_slice() {
            [y, i] => Ok((*y, *i)),
            _ => Err(invalid("MaxPool", "internal: expected two outputs")),
        }
    }

    // ----- serialisation -----

    fn value_info(&self, v: ValueId) -> proto::ValueInfoProto {
        let info = &self.values[v.0];
        let symbolic = self.batch_dims.contains(&v);
        let dim = info
            .shape
            .iter()
            .enumerate()
            .map(|(i, &d)| proto::tensor_shape_proto::Dimension {
                value: Some(if i == 0 && symbolic {
                    proto::tensor_shape_proto::dimension::Value::DimParam("batch".into())
                } else {
                    proto::tensor_shape_proto::dimension::Value::DimValue(d as i64)
                }),
                denotation: None,
            })
            .collect();
        proto::ValueInfoProto {
            name: Some(info.name.clone()),
            r#type: Some(proto::TypeProto {
                value: Some(proto::type_proto::Value::TensorType(
                    proto::type_proto::Tensor {
                        elem_type: Some(info.dtype.onnx_code()),
                        shape: Some(proto::TensorShapeProto { dim }),
                    },
                )),
                denotation: None,
            }),
            doc_string: None,
        }
    }

    /// Builds the `ModelProto` (ai.onnx domain only).
    pub fn to_model(&self, opset: i64) -> GraphResult<proto::ModelProto> {
        if !(OPSET..=MAX_OPSET).contains(&opset) {
            return Err(GraphError::Opset { requested: opset });
        }
        if self.outputs.is_empty() {
            return Err(invalid(
                "graph",
                format!("graph `{}` has no outputs", self.name),
            ));
        }
        let node = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| proto::NodeProto {
                input: n
                    .inputs
                    .iter()
                    .map(|v| self.values[v.0].name.clone())
                    .collect(),
                output: n
                    .outputs
                    .iter()
                    .map(|v| self.values[v.0].name.clone())
                    .collect(),
                name: Some(format!("n{i}_{}", n.op.onnx_name())),
                op_type: Some(n.op.onnx_name().to_string()),
                domain: None,
                attribute: n.op.attributes(),
                doc_string: None,
            })
            .collect();
        let initializer = self
            .initializers
            .iter()
            .map(|(v, data)| {
                data.to_proto(Some(self.values[v.0].name.clone()), &self.values[v.0].shape)
            })
            .collect();
        let graph = proto::GraphProto {
            node,
            name: Some(self.name.clone()),
            initializer,
            doc_string: self.doc.clone(),
            input: self.inputs.iter().map(|&v| self.value_info(v)).collect(),
            output: self.outputs.iter().map(|&v| self.value_info(v)).collect(),
            value_info: Vec::new(),
        };
        Ok(proto::ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: vec![proto::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(opset),
            }],
            producer_name: Some("cbound".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            domain: None,
            model_version: None,
            doc_string: None,
            graph: Some(graph),
            metadata_props: Vec::new(),
        })
    }

    /// Serialises the graph as an ONNX model (`.onnx` bytes).
    pub fn to_model_bytes(&self, opset: i64) -> GraphResult<Vec<u8>> {
        Ok(self.to_model(opset)?.encode_to_vec())
    }

    /// Number of nodes of each op type, for diagnostics.
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        for n in &self.nodes {
            *counts.entry(n.op.onnx_name()).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
}

/// Spatial output size of a convolution / pooling window (floor mode, dilation 1).
fn conv_out(
    input: &[usize],
    kernel: &[usize],
    strides: [usize; 2],
    pads: [usize; 4],
) -> Option<[usize; 2]> {
    let mut out = [0; 2];
    for i in 0..2 {
        let padded = input[i] + pads[i] + pads[i + 2];
        if padded < kernel[i] || strides[i] == 0 {
            return None;
        }
        out[i] = (padded - kernel[i]) / strides[i] + 1;
    }
    Some(out)
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

    #[test]
    fn shape_inference_and_errors() -> GraphResult<()> {
        let mut g = Graph::new("t");
        let x = g.input("x", DType::F32, &[4, 3, 8, 8])?;
        let w = g.input("w", DType::F32, &[5, 3, 3, 3])?;
        let y = g.conv2d(x, w, None, [2, 2], [1, 1, 1, 1], 1)?;
        assert_eq!(g.shape(y), &[4, 5, 4, 4]);
        let (p, i) = g.max_pool(y, [2, 2], [2, 2], [0, 0, 0, 0])?;
        assert_eq!(g.shape(p), &[4, 5, 2, 2]);
        assert_eq!(g.dtype(i), DType::I64);
        let f = g.flatten(p, 1)?;
        assert_eq!(g.shape(f), &[4, 20]);
        let bad = g.input("bad", DType::F32, &[3, 7])?;
        assert!(g.matmul(f, bad).is_err());
        assert!(matches!(
            g.input("x", DType::F32, &[1]),
            Err(GraphError::DuplicateName(_))
        ));
        // ConvTranspose with the conv's own weight maps y back to x's shape.
        let ct = g.conv_transpose2d(y, w, [2, 2], [1, 1, 1, 1], [1, 1], 1)?;
        assert_eq!(g.shape(ct), &[4, 3, 8, 8]);
        Ok(())
    }

    #[test]
    fn opset_range_is_checked() -> GraphResult<()> {
        let mut g = Graph::new("t");
        let x = g.input("x", DType::F32, &[2])?;
        let y = g.relu(x)?;
        g.output(y, "y")?;
        assert!(matches!(
            g.to_model_bytes(17),
            Err(GraphError::Opset { .. })
        ));
        assert!(!g.to_model_bytes(OPSET)?.is_empty());
        Ok(())
    }
}
