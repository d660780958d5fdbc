//! CPU convolution kernels for the Penumbra U-Net, exposed as candle custom ops.
//!
//! The kernels cover the layer types the U-Net uses, all on NCHW `f32` tensors:
//! 3x3 convolution (stride 1, padding 1) and 1x1 convolution with fused bias and optional ReLU,
//! and 2x2 transposed convolution with stride 2 and fused bias. [`group_norm_inference`] fuses
//! group normalization, residual add and ReLU for inference, and [`max_pool2x2_inference`]
//! pools in parallel. Neither has a backward pass. [`group_norm`] normalizes with a backward
//! pass, for training. Each convolution has a `bwd`, so candle
//! autograd computes input, weight and bias gradients through it. Second derivatives are not
//! supported.
//!
//! On CPUs with AVX-512F the 3x3 forward pass and input gradient run a direct kernel over a
//! zero-padded band of input rows. Every other op feeds a blocked SIMD GEMM from im2col tiles
//! (3x3) or direct matrix views (1x1, 2x2 transposed). Tasks run over images and row tiles on the global rayon pool. Each GEMM is
//! single-threaded, so the two levels do not oversubscribe the cores. Set
//! `PENUMBRA_KERNELS_PORTABLE=1`, or pass `KernelPath::Portable`, to use plain loops instead.

mod conv1x1;
mod conv3x3;
#[cfg(target_arch = "x86_64")]
mod direct3x3;
mod error;
mod layout;
mod matmul;
mod norm;
mod norm_train;
mod ops;
mod pool;
mod reduce;
mod tiling;
mod transpose;

use candle_core::{DType, Result, Tensor};

pub use error::KernelError;
pub use matmul::{KernelPath, PORTABLE_ENV};
pub use norm::group_norm_inference;
pub use norm_train::group_norm;
pub use pool::max_pool2x2_inference;

use ops::{ConvKind, ConvOp};

/// Activation fused into a convolution's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    Identity,
    Relu,
}

/// Activation and implementation path of one convolution call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvOptions {
    pub activation: Activation,
    pub path: KernelPath,
}

impl Default for ConvOptions {
    /// No activation, and the path `KernelPath::from_env` selects.
    fn default() -> Self {
        Self {
            activation: Activation::Identity,
            path: KernelPath::from_env(),
        }
    }
}

/// 3x3 convolution, stride 1, zero padding 1: `x` is `(n, c_in, h, w)`, `w` is
/// `(c_out, c_in, 3, 3)`, `b` is `(c_out)`. Returns `(n, c_out, h, w)`.
pub fn conv3x3(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    conv3x3_with(x, w, b, ConvOptions::default())
}

/// Computes `conv3x3` followed by ReLU in one pass.
pub fn conv3x3_relu(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let options = ConvOptions {
        activation: Activation::Relu,
        ..ConvOptions::default()
    };
    conv3x3_with(x, w, b, options)
}

/// Computes `conv3x3` with an explicit activation and kernel path.
pub fn conv3x3_with(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    options: ConvOptions,
) -> Result<Tensor> {
    apply(ConvKind::Conv3x3, x, w, b, options)
}

/// 1x1 convolution: `x` is `(n, c_in, h, w)`, `w` is `(c_out, c_in, 1, 1)`, `b` is `(c_out)`.
/// Returns `(n, c_out, h, w)`.
pub fn conv1x1(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    conv1x1_with(x, w, b, ConvOptions::default())
}

/// Computes `conv1x1` followed by ReLU in one pass.
pub fn conv1x1_relu(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let options = ConvOptions {
        activation: Activation::Relu,
        ..ConvOptions::default()
    };
    conv1x1_with(x, w, b, options)
}

/// Computes `conv1x1` with an explicit activation and kernel path.
pub fn conv1x1_with(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    options: ConvOptions,
) -> Result<Tensor> {
    apply(ConvKind::Conv1x1, x, w, b, options)
}

/// 2x2 transposed convolution, stride 2, no padding, the layout of candle's
/// `conv_transpose2d`: `x` is `(n, c_in, h, w)`, `w` is `(c_in, c_out, 2, 2)`, `b` is
/// `(c_out)`. Returns `(n, c_out, 2h, 2w)`.
pub fn conv_transpose2x2(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    conv_transpose2x2_with(x, w, b, KernelPath::from_env())
}

/// Computes `conv_transpose2x2` with an explicit kernel path.
pub fn conv_transpose2x2_with(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    path: KernelPath,
) -> Result<Tensor> {
    let options = ConvOptions {
        activation: Activation::Identity,
        path,
    };
    apply(ConvKind::Transpose2x2, x, w, b, options)
}

/// Validates the operands, makes them contiguous and runs the forward op with autograd.
fn apply(
    kind: ConvKind,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    options: ConvOptions,
) -> Result<Tensor> {
    let c_out = validate(kind, x, w, b)?;

    let bias = match b {
        Some(bias) => bias.contiguous()?,
        None => Tensor::zeros(c_out, DType::F32, x.device())?,
    };
    let op = ConvOp {
        kind,
        activation: options.activation,
        path: options.path,
    };
    x.contiguous()?.apply_op3(&w.contiguous()?, &bias, op)
}

/// Checks dtype, device and shapes of every operand. Returns the output channel count.
fn validate(kind: ConvKind, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<usize> {
    let mut operands = vec![("input", x), ("weight", w)];
    operands.extend(b.map(|bias| ("bias", bias)));
    for (operand, tensor) in operands {
        if tensor.dtype() != DType::F32 {
            return Err(KernelError::UnsupportedDtype {
                operand,
                dtype: tensor.dtype(),
            }
            .into());
        }
        if !tensor.device().is_cpu() {
            return Err(KernelError::UnsupportedDevice { operand }.into());
        }
    }

    let (kernel, expected) = match kind {
        ConvKind::Conv3x3 => (3, "(c_out, c_in, 3, 3)"),
        ConvKind::Conv1x1 => (1, "(c_out, c_in, 1, 1)"),
        ConvKind::Transpose2x2 => (2, "(c_in, c_out, 2, 2)"),
    };
    let x_dims = x.dims().to_vec();
    if x_dims.len() != 4 {
        let expected = "(n, c_in, h, w)".to_string();
        return Err(KernelError::InvalidShape {
            operand: "input",
            dims: x_dims,
            expected,
        }
        .into());
    }
    let w_dims = w.dims().to_vec();
    if w_dims.len() != 4 || w_dims[2] != kernel || w_dims[3] != kernel {
        return Err(KernelError::InvalidShape {
            operand: "weight",
            dims: w_dims,
            expected: expected.to_string(),
        }
        .into());
    }

    let (weight_c_in, c_out) = match kind {
        ConvKind::Transpose2x2 => (w_dims[0], w_dims[1]),
        _ => (w_dims[1], w_dims[0]),
    };
    if weight_c_in != x_dims[1] {
        return Err(KernelError::ChannelMismatch {
            input: x_dims[1],
            weight: weight_c_in,
        }
        .into());
    }
    if let Some(bias) = b {
        if bias.dims() != [c_out] {
            let expected = format!("({c_out}), one value per output channel");
            return Err(KernelError::InvalidShape {
                operand: "bias",
                dims: bias.dims().to_vec(),
                expected,
            }
            .into());
        }
    }
    Ok(c_out)
}
