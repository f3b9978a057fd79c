//! Values and their types: element types, value handles and where values come from, and the
//! constant tensor contents of initializers and attributes. Their ONNX encoding is in
//! `serialise.rs`.

use crate::proto;

/// Element type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    /// IEEE half precision: only the matrix products of a mixed-precision step graph.
    F16,
    /// bfloat16 (f32's exponent, 8 mantissa bits): as `F16`.
    BF16,
    I64,
    Bool,
}

impl DType {
    /// The `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => proto::data_type::FLOAT,
            DType::F64 => proto::data_type::DOUBLE,
            DType::F16 => proto::data_type::FLOAT16,
            DType::BF16 => proto::data_type::BFLOAT16,
            DType::I64 => proto::data_type::INT64,
            DType::Bool => proto::data_type::BOOL,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
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
    /// Bit patterns of IEEE half-precision values (see [`f16_bits`]).
    F16(Vec<u16>),
    /// Bit patterns of bfloat16 values (see [`bf16_bits`]).
    BF16(Vec<u16>),
    I64(Vec<i64>),
}

/// The half-precision value nearest to `x` (ties to even, as a hardware conversion rounds), as
/// its bit pattern; out of range gives infinity.
pub fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        // Infinity stays infinity; NaN stays a (quiet) NaN.
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    // The exponent re-biased for half precision (bias 15 instead of 127).
    let e = exp - 112;
    let (kept, shift) = if e >= 0x1f {
        return sign | 0x7c00;
    } else if e <= 0 {
        // Subnormal in half precision: the implicit bit becomes explicit, and the unit of the
        // last place is 2^-24.
        if e < -10 {
            return sign;
        }
        (man | 0x80_0000, (14 - e) as u32)
    } else {
        ((e as u32) << 23 | man, 13)
    };
    let mut h = (kept >> shift) as u16;
    let rem = kept & ((1 << shift) - 1);
    let halfway = 1 << (shift - 1);
    if rem > halfway || (rem == halfway && h & 1 == 1) {
        // A carry out of the mantissa moves into the exponent, up to infinity: still right.
        h += 1;
    }
    sign | h
}

/// The bfloat16 value nearest to `x` (ties to even), as its bit pattern.
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x40;
    }
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    (rounded >> 16) as u16
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I64(_) => DType::I64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::F16(v) | TensorData::BF16(v) => v.len(),
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
            DType::F16 => Some(TensorData::F16(vec![f16_bits(value as f32); len])),
            DType::BF16 => Some(TensorData::BF16(vec![bf16_bits(value as f32); len])),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_conversions_round_to_nearest_even() {
        // Normal values, the largest half, overflow, subnormals and ties.
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(0.5), 0x3800);
        assert_eq!(f16_bits(65504.0), 0x7bff);
        assert_eq!(f16_bits(65520.0), 0x7c00);
        assert_eq!(f16_bits(1e10), 0x7c00);
        assert_eq!(f16_bits(f32::NEG_INFINITY), 0xfc00);
        assert_eq!(f16_bits(f32::NAN) & 0x7c00, 0x7c00);
        assert_ne!(f16_bits(f32::NAN) & 0x3ff, 0);
        assert_eq!(f16_bits(2f32.powi(-24)), 0x0001);
        assert_eq!(f16_bits(2f32.powi(-14)), 0x0400);
        assert_eq!(f16_bits(2f32.powi(-25)), 0x0000);
        assert_eq!(f16_bits(-0.0), 0x8000);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: to the even one, 1.
        assert_eq!(f16_bits(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f16_bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f16_bits(0.1), 0x2e66);

        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_bits(-2.0), 0xc000);
        assert_eq!(bf16_bits(0.1), 0x3dcd);
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
        assert_eq!(bf16_bits(f32::NAN) & 0x7fc0, 0x7fc0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to the even one, 1.
        assert_eq!(bf16_bits(1.0 + 2f32.powi(-8)), 0x3f80);
    }
}
