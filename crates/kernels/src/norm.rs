//! Group normalization fused with its per-channel scale and shift, an optional residual add
//! and an optional ReLU, for inference.
//!
//! candle-nn's `GroupNorm` followed by `+ residual` and `relu()` makes about ten passes over the
//! feature map, each into a freshly allocated tensor. This op reads the input twice (mean, then
//! variance) and writes the output once. It has no backward pass, so callers use it only on
//! tensors that track no gradient.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::error::KernelError;
use crate::ops::contiguous_f32;

/// Scale, shift and options of one fused group normalization.
#[derive(Debug, Clone)]
struct GroupNormOp {
    groups: usize,
    eps: f64,
    relu: bool,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// Computes `relu?(group_norm(x) * scale + shift + residual?)` over `(n, c, h, w)` input.
///
/// `scale` and `shift` have one value per channel. The mean and the biased variance are taken
/// over each group of `c / groups` channels and the whole plane, as candle-nn's `GroupNorm`
/// does. Fails when `groups` does not divide `c`, when a shape does not match, or when `x`
/// tracks a gradient, because this op has no backward pass.
pub fn group_norm_inference(
    x: &Tensor,
    groups: usize,
    eps: f64,
    scale: &Tensor,
    shift: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    validate(x, groups, scale, shift)?;
    if x.track_op() || residual.is_some_and(Tensor::track_op) {
        candle_core::bail!("group_norm_inference has no backward pass; use candle-nn's GroupNorm when training");
    }

    let op = GroupNormOp {
        groups,
        eps,
        relu,
        scale: scale.to_vec1()?,
        shift: shift.to_vec1()?,
    };
    let x = x.contiguous()?;
    match residual {
        None => x.apply_op1_no_bwd(&op),
        Some(residual) => {
            if residual.dims() != x.dims() {
                return Err(KernelError::InvalidShape {
                    operand: "residual",
                    dims: residual.dims().to_vec(),
                    expected: format!("{:?}, the input's shape", x.dims()),
                }
                .into());
            }
            x.apply_op2_no_bwd(&residual.contiguous()?, &op)
        }
    }
}

/// Checks that `x` is `(n, c, h, w)` with `c` a multiple of `groups`, and that `scale` and
/// `shift` have one value per channel.
pub(crate) fn validate(x: &Tensor, groups: usize, scale: &Tensor, shift: &Tensor) -> Result<()> {
    let dims = x.dims().to_vec();
    let channels = match dims.as_slice() {
        &[_, channels, _, _] if groups > 0 && channels.is_multiple_of(groups) => channels,
        _ => {
            return Err(KernelError::InvalidShape {
                operand: "input",
                dims,
                expected: format!("(n, c, h, w) with c a multiple of {groups} groups"),
            }
            .into())
        }
    };
    for (operand, tensor) in [("scale", scale), ("shift", shift)] {
        if tensor.dims() != [channels] {
            return Err(KernelError::InvalidShape {
                operand,
                dims: tensor.dims().to_vec(),
                expected: format!("({channels}), one value per channel"),
            }
            .into());
        }
    }
    Ok(())
}

impl GroupNormOp {
    fn run(&self, x: &[f32], residual: Option<&[f32]>, layout: &Layout) -> Result<CpuStorage> {
        let (_, channels, height, width) = layout.shape().dims4()?;
        let plane = height * width;
        let per_group = channels / self.groups;
        let group_len = per_group * plane;
        if x.is_empty() {
            return Ok(CpuStorage::F32(Vec::new()));
        }
        let mut out: Vec<f32> = Vec::with_capacity(x.len());

        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(group_len)
            .enumerate()
            .for_each(|(index, out_group)| {
                let start = index * group_len;
                let first_channel = (index % self.groups) * per_group;
                let input = &x[start..start + group_len];
                let residual = residual.map(|r| &r[start..start + group_len]);
                self.normalize_group(input, residual, out_group, first_channel, plane);
            });
        // SAFETY: the groups cover all `x.len()` elements, and `normalize_group` writes every
        // element of its group.
        unsafe { out.set_len(x.len()) };
        Ok(CpuStorage::F32(out))
    }

    /// Normalizes one group of channels starting at channel `first_channel`, writing every
    /// element of `out`.
    fn normalize_group(
        &self,
        input: &[f32],
        residual: Option<&[f32]>,
        out: &mut [MaybeUninit<f32>],
        first_channel: usize,
        plane: usize,
    ) {
        let (mean, inv_std) = group_stats(input, self.eps);

        for (k, out_channel) in out.chunks_exact_mut(plane).enumerate() {
            let channel = first_channel + k;
            let gain = (self.scale[channel] as f64 * inv_std) as f32;
            let offset = (self.shift[channel] as f64 - mean * self.scale[channel] as f64 * inv_std) as f32;
            let values = &input[k * plane..(k + 1) * plane];
            let residual = residual.map(|r| &r[k * plane..(k + 1) * plane]);
            if self.relu {
                scale_shift_channel::<true>(out_channel, values, residual, gain, offset);
            } else {
                scale_shift_channel::<false>(out_channel, values, residual, gain, offset);
            }
        }
    }
}

/// Writes `values * gain + offset + residual` into `out`, clamped at zero when `RELU` is set.
fn scale_shift_channel<const RELU: bool>(
    out: &mut [MaybeUninit<f32>],
    values: &[f32],
    residual: Option<&[f32]>,
    gain: f32,
    offset: f32,
) {
    let activate = |y: f32| if RELU { y.max(0.0) } else { y };
    match residual {
        Some(residual) => {
            for ((o, &v), &r) in out.iter_mut().zip(values).zip(residual) {
                o.write(activate(v * gain + offset + r));
            }
        }
        None => {
            for (o, &v) in out.iter_mut().zip(values) {
                o.write(activate(v * gain + offset));
            }
        }
    }
}

/// Returns the mean of `values` and `1 / sqrt(variance + eps)`, with the biased variance, in
/// two passes: the mean, then the mean squared deviation from it.
pub(crate) fn group_stats(values: &[f32], eps: f64) -> (f64, f64) {
    let count = values.len().max(1) as f64;
    let mean = sum_blocks(values, |v| v) / count;
    let mean_f32 = mean as f32;
    let variance = sum_blocks(values, |v| (v - mean_f32) * (v - mean_f32)) / count;
    (mean, 1.0 / (variance + eps).sqrt())
}

/// Lanes of the partial sums in [`sum_blocks`], enough for the compiler to vectorize the loop.
const LANES: usize = 16;

/// Elements summed in f32 lanes before the block's total joins the f64 sum.
const BLOCK: usize = 1024;

/// Sums `map(v)` over `values`: in f32 lanes within blocks of 1024 values, so the loop
/// vectorizes, and in f64 across blocks, so long planes lose no precision.
pub(crate) fn sum_blocks(values: &[f32], map: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for block in values.chunks(BLOCK) {
        let mut lanes = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += map(v);
            }
        }
        let rest: f32 = chunks.remainder().iter().map(|&v| map(v)).sum();
        total += lanes.iter().map(|&v| v as f64).sum::<f64>() + rest as f64;
    }
    total
}

impl CustomOp1 for GroupNormOp {
    fn name(&self) -> &'static str {
        "penumbra-group-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "input")?;
        Ok((self.run(x, None, layout)?, layout.shape().clone()))
    }
}

impl CustomOp2 for GroupNormOp {
    fn name(&self) -> &'static str {
        "penumbra-group-norm-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "input")?;
        let residual = contiguous_f32(s2, l2, "residual")?;
        Ok((self.run(x, Some(residual), l1)?, l1.shape().clone()))
    }
}
