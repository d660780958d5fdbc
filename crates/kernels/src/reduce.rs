//! Element-wise and reduction steps of the backward pass, done on slices because candle 0.11's
//! generic `sum((0, 2, 3))` and compare-multiply chain cost more than the convolution itself on
//! the U-Net's first level.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

use crate::ops::contiguous_f32;

/// Elements per parallel chunk of the ReLU mask step.
const CHUNK: usize = 64 * 1024;

/// Per-channel sum of an NCHW tensor, the bias gradient. Returns shape `(c)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "penumbra-channel-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let data = contiguous_f32(storage, layout, "output gradient")?;
        let (batch, channels, height, width) = layout.shape().dims4()?;
        let plane = height * width;

        // Accumulate in f64 so that a 256x256 plane does not lose low-order bits.
        let sums: Vec<f32> = (0..channels)
            .into_par_iter()
            .map(|channel| {
                let mut total = 0.0f64;
                for image in 0..batch {
                    let start = (image * channels + channel) * plane;
                    total += data[start..start + plane]
                        .iter()
                        .map(|&v| v as f64)
                        .sum::<f64>();
                }
                total as f32
            })
            .collect();
        Ok((CpuStorage::F32(sums), Shape::from(channels)))
    }
}

/// ReLU backward: keeps the output gradient where the forward output is positive and zeroes it
/// elsewhere. Arguments are (output gradient, forward output) of the same shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "penumbra-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let grad = contiguous_f32(s1, l1, "output gradient")?;
        let output = contiguous_f32(s2, l2, "forward output")?;
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "relu mask: gradient shape {:?} differs from output shape {:?}",
                l1.shape(),
                l2.shape()
            );
        }

        let mut masked = vec![0.0f32; grad.len()];
        masked
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK).zip(output.par_chunks(CHUNK)))
            .for_each(|(dst, (grad, output))| {
                for ((d, &g), &o) in dst.iter_mut().zip(grad).zip(output) {
                    *d = if o > 0.0 { g } else { 0.0 };
                }
            });
        Ok((CpuStorage::F32(masked), l1.shape().clone()))
    }
}
