//! Values and their types: element types, value handles and where values come from, and the
//! constant tensor contents of initializers and attributes. Their ONNX encoding is in
//! `serialise.rs`.

use crate::proto;

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

/// Handle of a value (tensor) inside one [`Graph`](super::Graph). The index is private to the
/// graph module: only a graph hands out handles, so every handle indexes its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub(super) usize);

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
}

/// `reduction` attribute of the scatter ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    None,
    Add,
}
