//! Tensor shapes shared by the kernels and the fused bias and activation step.

/// Shape of one convolution: batch size, channel counts and the input's spatial size.
///
/// For the transposed convolution `height` and `width` are the input's, and the output is twice
/// as tall and twice as wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvShape {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub height: usize,
    pub width: usize,
}

impl ConvShape {
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Returns this shape with input and output channels exchanged, the shape of the input
    /// gradient's convolution.
    pub fn swapped(&self) -> Self {
        Self {
            c_in: self.c_out,
            c_out: self.c_in,
            ..*self
        }
    }
}

/// Adds `bias[c]` to `len` consecutive values of each of `bias.len()` channels starting at `ptr`,
/// channels `stride` elements apart, then clamps negatives to zero when `relu` is set.
///
/// # Safety
///
/// `ptr` must be valid for writes at every touched element, and no other thread may access
/// those elements during the call.
pub(crate) unsafe fn add_bias_relu(
    ptr: *mut f32,
    (channels, stride, len): (usize, usize, usize),
    bias: Option<&[f32]>,
    relu: bool,
) {
    if bias.is_none() && !relu {
        return;
    }

    for channel in 0..channels {
        let values = std::slice::from_raw_parts_mut(ptr.add(channel * stride), len);
        if let Some(bias) = bias {
            let b = bias[channel];
            values.iter_mut().for_each(|v| *v += b);
        }
        if relu {
            values.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}
