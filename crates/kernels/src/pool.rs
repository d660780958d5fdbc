//! 2x2 max pooling with stride 2 for inference, parallel over channel planes.
//!
//! candle 0.11's `max_pool2d` walks every window on one thread with a generic index
//! computation. This op has no backward pass, so callers use it only on tensors that track no
//! gradient.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::error::KernelError;
use crate::ops::contiguous_f32;

/// Computes the maximum of each 2x2 block of `(n, c, h, w)` input. Returns
/// `(n, c, h / 2, w / 2)`; an odd last row or column is dropped, as in candle's `max_pool2d`.
///
/// A NaN loses against any number here, where candle's comparison keeps or drops it depending
/// on its position in the window. Fails when the input is not 4-dimensional or tracks a
/// gradient, because this op has no backward pass.
pub fn max_pool2x2_inference(x: &Tensor) -> Result<Tensor> {
    if x.dims().len() != 4 {
        return Err(KernelError::InvalidShape {
            operand: "input",
            dims: x.dims().to_vec(),
            expected: "(n, c, h, w)".to_string(),
        }
        .into());
    }
    if x.track_op() {
        candle_core::bail!(
            "max_pool2x2_inference has no backward pass; use candle's max_pool2d when training"
        );
    }
    x.contiguous()?.apply_op1_no_bwd(&MaxPool2x2)
}

/// The pooling op over a contiguous `f32` tensor.
#[derive(Debug, Clone, Copy)]
struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "penumbra-max-pool2x2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "input")?;
        let (batch, channels, height, width) = layout.shape().dims4()?;
        let (out_height, out_width) = (height / 2, width / 2);
        let out_shape = Shape::from((batch, channels, out_height, out_width));
        let out_plane = out_height * out_width;
        if out_plane == 0 || batch * channels == 0 {
            return Ok((CpuStorage::F32(Vec::new()), out_shape));
        }

        let mut out = vec![0f32; batch * channels * out_plane];
        out.par_chunks_mut(out_plane)
            .zip(x.par_chunks(height * width))
            .for_each(|(dst, src)| pool_plane(src, width, dst, out_width));
        Ok((CpuStorage::F32(out), out_shape))
    }
}

/// Pools one plane of rows `width` long into `dst`, whose rows are `out_width` long.
fn pool_plane(src: &[f32], width: usize, dst: &mut [f32], out_width: usize) {
    for (oy, dst_row) in dst.chunks_exact_mut(out_width).enumerate() {
        let top = &src[2 * oy * width..][..2 * out_width];
        let bottom = &src[(2 * oy + 1) * width..][..2 * out_width];
        for ((d, t), b) in dst_row
            .iter_mut()
            .zip(top.chunks_exact(2))
            .zip(bottom.chunks_exact(2))
        {
            *d = t[0].max(t[1]).max(b[0].max(b[1]));
        }
    }
}
