//! Errors raised when a convolution's operands do not fit the kernels.

use candle_core::DType;

/// Invalid operand for one of this crate's convolutions.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{operand} has dtype {dtype:?}; convert it to f32 before calling the kernel")]
    UnsupportedDtype { operand: &'static str, dtype: DType },

    #[error("{operand} is on a non-CPU device; move it to the CPU or use candle's own conv2d")]
    UnsupportedDevice { operand: &'static str },

    #[error("{operand} has shape {dims:?}, expected {expected}")]
    InvalidShape {
        operand: &'static str,
        dims: Vec<usize>,
        expected: String,
    },

    #[error("input has {input} channels but the weight expects {weight}; pass a weight with {input} input channels")]
    ChannelMismatch { input: usize, weight: usize },

    #[error("{operand} storage is not contiguous; call .contiguous() on it first")]
    NotContiguous { operand: &'static str },
}

impl From<KernelError> for candle_core::Error {
    fn from(error: KernelError) -> Self {
        candle_core::Error::wrap(error)
    }
}
