//! The operator vocabulary: every op the builder can emit with its attributes in typed form,
//! the attributes of `Gemm`, and a node of the graph. How each op is checked and its output
//! shape inferred is in the op family files; how it is encoded is in `serialise.rs`.

use super::{DType, Reduction, TensorData, ValueId};

/// The operators the builder can emit, with their attributes in typed form.
///
/// Constant operands that opset 18 takes as inputs (reduce axes, reshape shape, split sizes,
/// expand shape, unsqueeze axes) are emitted as `int64` initializers; their values are repeated
/// here so that [`crate::autodiff`] can read them without decoding initializers.
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
    /// `blocked: Some(b)`: the same convolution, run by ONNX Runtime's NCHWc kernels with
    /// channels in blocks of `b` (MLAS's block on this CPU): serialised as `ReorderInput`,
    /// cbound's `BlockFilter` on the weight, `com.microsoft.nchwc` `Conv` and `ReorderOutput`
    /// (see [`Graph::set_blocked_convs`]). Inputs, output and gradient are those of the plain
    /// convolution; only the kernel that computes it differs.
    ///
    /// [`Graph::set_blocked_convs`]: crate::graph::Graph::set_blocked_convs
    Conv {
        strides: [usize; 2],
        pads: [usize; 4],
        dilations: [usize; 2],
        group: usize,
        blocked: Option<usize>,
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
    /// Inference-mode batch normalisation from running statistics (inputs x, scale, bias,
    /// mean, var; `training_mode = 0`). Only used in forward-only graphs: training graphs build
    /// batch statistics from differentiable primitives (see `norm.rs`).
    BatchNormalization {
        epsilon: f32,
    },
    Identity,
    /// Serialised as `Identity`; [`crate::autodiff`] treats its output as a constant.
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
    /// Static slice along the listed axes with a positive step per axis (1 for a plain
    /// slice; the convolution weight gradient takes every `stride`-th element).
    Slice {
        starts: Vec<usize>,
        ends: Vec<usize>,
        axes: Vec<usize>,
        steps: Vec<usize>,
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
    /// cbound's fused Adam update, one pass per parameter (domain [`CBOUND_DOMAIN`], kernel in
    /// [`crate::fused`]). Inputs `p, g, m, v` and rank-0 `step_size, eps_hat, decay`; outputs
    /// `p', m', v'`. Per element, in f32 and in this order (the node chain it replaces, so the
    /// bits are the same): `gs = g + l2 * p` (skipped when `l2 = 0`), `m' = beta1 m + gs`,
    /// `v' = beta2 v + g2_scale gs^2`, `p' = decay p - step_size m' / (sqrt(v') + eps_hat)`.
    AdamUpdate {
        beta1: f32,
        beta2: f32,
        g2_scale: f32,
        l2: f32,
    },
    /// cbound's patch extraction for a convolution's weight gradient (domain
    /// [`CBOUND_DOMAIN`], kernel in [`crate::fused`], f32 only). Input `x` `[N, C, H, W]`;
    /// output `[C * kh * kw, images * OH * OW]` for the samples `chunk * images ..
    /// (chunk + 1) * images`: row `(c, i, j)` holds `x[n, c, oh * sh + i - top, ow * sw + j -
    /// left]` (zero outside the input) over `(n, oh, ow)` in that order. The zero padding is
    /// implicit, so no padded copy of `x` is made. [`Graph::im2col`] builds it;
    /// [`Graph::im2col_onnx`] builds the same tensor from ai.onnx nodes.
    ///
    /// [`Graph::im2col`]: crate::graph::Graph::im2col
    /// [`Graph::im2col_onnx`]: crate::graph::Graph::im2col_onnx
    Im2Col {
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
        images: usize,
        chunk: usize,
    },
    /// cbound's training-mode batch normalisation in one kernel (domain [`CBOUND_DOMAIN`],
    /// kernel in [`crate::fused`], f32 only). Inputs `x` `[N, C, H, W]`, `gamma`, `beta`
    /// `[C]`; outputs `y = (x - mean) * gamma / sqrt(var + epsilon) + beta` and the batch
    /// `mean` and BIASED `var` `[C]` (accumulated in f64). [`Graph::batch_norm_train`] uses
    /// it where custom kernels are allowed; its gradient is [`Op::BatchNormTrainGrad`].
    ///
    /// [`Graph::batch_norm_train`]: crate::graph::Graph::batch_norm_train
    BatchNormTrain {
        epsilon: f32,
    },
    /// The vector-Jacobian product of [`Op::BatchNormTrain`] through its batch statistics
    /// (domain [`CBOUND_DOMAIN`], f32 only). Inputs `dy`, `x`, `gamma`, and the forward's
    /// `mean` and `var`; outputs `dx`, `dgamma`, `dbeta`.
    BatchNormTrainGrad {
        epsilon: f32,
    },
    /// The gradient of `y = relu(x)` from its output (domain [`CBOUND_DOMAIN`], f32 only):
    /// inputs `dy`, `y` of one shape; output `dy * (y > 0 ? 1 : 0)`, per element the same f32
    /// product as the `Greater`, `Cast`, `Mul` chain it replaces, so the same bits, in one pass
    /// instead of three ([`Graph::relu_grad`]).
    ///
    /// [`Graph::relu_grad`]: crate::graph::Graph::relu_grad
    ReluGrad,
    /// A convolution weight `[M, C, kh, kw]` as the weight of its stride-1 input gradient
    /// (domain [`CBOUND_DOMAIN`], f32 only): output `[C, M, kh, kw]` with `out[c, m, i, j] =
    /// w[m, c, kh - 1 - i, kw - 1 - j]`, one pass where the ai.onnx version is a `Transpose`
    /// and two `Gather`s ([`Graph::flip_filter`]). It only moves elements.
    ///
    /// [`Graph::flip_filter`]: crate::graph::Graph::flip_filter
    FlipFilter,
}

/// The operator domain of cbound's own ops ([`Op::AdamUpdate`], [`Op::Im2Col`],
/// [`Op::BatchNormTrain`] and its gradient, [`Op::ReluGrad`], [`Op::FlipFilter`], the
/// `BlockFilter` of a blocked [`Op::Conv`]); every session cbound creates registers it (see
/// [`crate::runtime`]).
pub const CBOUND_DOMAIN: &str = "ai.cbound";

/// ONNX Runtime's domain of NCHWc (channel-blocked) CPU kernels, which a blocked [`Op::Conv`]
/// is serialised into.
pub const NCHWC_DOMAIN: &str = "com.microsoft.nchwc";

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
            Op::BatchNormalization { .. } => "BatchNormalization",
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
            Op::AdamUpdate { .. } => "AdamUpdate",
            Op::Im2Col { .. } => "Im2Col",
            Op::BatchNormTrain { .. } => "BatchNormTrain",
            Op::BatchNormTrainGrad { .. } => "BatchNormTrainGrad",
            Op::ReluGrad => "ReluGrad",
            Op::FlipFilter => "FlipFilter",
        }
    }

    /// The node's domain: `None` for ai.onnx, [`CBOUND_DOMAIN`] for cbound's own ops.
    pub fn domain(&self) -> Option<&'static str> {
        match self {
            Op::AdamUpdate { .. }
            | Op::Im2Col { .. }
            | Op::BatchNormTrain { .. }
            | Op::BatchNormTrainGrad { .. }
            | Op::ReluGrad
            | Op::FlipFilter => Some(CBOUND_DOMAIN),
            _ => None,
        }
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
