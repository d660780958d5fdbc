//! Group normalization with its per-channel scale and shift, with a backward pass, for
//! training.
//!
//! candle-nn's `GroupNorm` builds the normalization from about ten generic tensor ops, and
//! autograd adds about twenty more for the gradients, each a pass over the feature map into a
//! new tensor. Here the forward pass reads the input twice and writes once. The backward pass
//! recomputes each group's mean and variance from the input, then needs two passes for the
//! input gradient and one for the scale and shift gradients.
//!
//! With `xhat = (x - mean) * inv_std` over a group of `m` values and `g = dy * scale`, the
//! gradients are `dshift = sum dy`, `dscale = sum dy * xhat` (per channel, over the batch and
//! the plane) and `dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))` (per group).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::norm::{group_stats, sum_blocks, validate};
use crate::ops::contiguous_f32;

/// Computes `group_norm(x) * scale + shift` over `(n, c, h, w)` input, with gradients for
/// `x`, `scale` and `shift` through candle autograd.
///
/// The mean and the biased variance are taken over each group of `c / groups` channels and the
/// whole plane, as candle-nn's `GroupNorm` does. Fails when `groups` does not divide `c` or
/// when `scale` or `shift` does not have one value per channel.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    eps: f64,
    scale: &Tensor,
    shift: &Tensor,
) -> Result<Tensor> {
    validate(x, groups, scale, shift)?;

    let op = GroupNormTrainOp { groups, eps };
    x.contiguous()?
        .apply_op3(&scale.contiguous()?, &shift.contiguous()?, op)
}

/// Group count and epsilon of one normalization.
#[derive(Debug, Clone, Copy)]
struct GroupNormTrainOp {
    groups: usize,
    eps: f64,
}

/// Sizes of one `(n, c, h, w)` tensor split into groups.
#[derive(Debug, Clone, Copy)]
struct Groups {
    /// Channels per group.
    per_group: usize,
    /// Values per channel plane.
    plane: usize,
    /// Groups per image.
    count: usize,
}

impl Groups {
    fn new(layout: &Layout, groups: usize) -> Result<Self> {
        let (_, channels, height, width) = layout.shape().dims4()?;
        Ok(Self {
            per_group: channels / groups,
            plane: height * width,
            count: groups,
        })
    }

    /// Values per group.
    fn len(&self) -> usize {
        self.per_group * self.plane
    }

    /// First channel of the group at `index` in the flat (image, group) order.
    fn first_channel(&self, index: usize) -> usize {
        (index % self.count) * self.per_group
    }
}

impl CustomOp3 for GroupNormTrainOp {
    fn name(&self) -> &'static str {
        "penumbra-group-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "input")?;
        let scale = contiguous_f32(s2, l2, "scale")?;
        let shift = contiguous_f32(s3, l3, "shift")?;
        let groups = Groups::new(l1, self.groups)?;
        if x.is_empty() || groups.len() == 0 {
            return Ok((CpuStorage::F32(vec![0.0; x.len()]), l1.shape().clone()));
        }

        let mut out: Vec<f32> = Vec::with_capacity(x.len());
        out.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(groups.len())
            .zip(x.par_chunks(groups.len()))
            .enumerate()
            .for_each(|(index, (out, x))| {
                let (mean, inv_std) = group_stats(x, self.eps);
                let first = groups.first_channel(index);
                for (k, (out, x)) in out
                    .chunks_exact_mut(groups.plane)
                    .zip(x.chunks_exact(groups.plane))
                    .enumerate()
                {
                    let gain = (scale[first + k] as f64 * inv_std) as f32;
                    let offset = (shift[first + k] as f64 - mean * gain as f64) as f32;
                    write_affine(out, x, gain, offset);
                }
            });
        // SAFETY: the groups cover all `x.len()` elements and each is written above.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad_res.contiguous()?;
        let grad_x = x
            .track_op()
            .then(|| {
                let op = InputGradOp {
                    groups: self.groups,
                    eps: self.eps,
                    scale: scale.to_vec1()?,
                };
                x.apply_op2_no_bwd(&grad, &op)
            })
            .transpose()?;

        let (grad_scale, grad_shift) = if scale.track_op() || shift.track_op() {
            let op = ParamGradOp {
                groups: self.groups,
                eps: self.eps,
            };
            let both = x.apply_op2_no_bwd(&grad, &op)?;
            (Some(both.get(0)?), Some(both.get(1)?))
        } else {
            (None, None)
        };
        Ok((grad_x, grad_scale, grad_shift))
    }
}

/// Writes `x * gain + offset` into `out`.
fn write_affine(out: &mut [MaybeUninit<f32>], x: &[f32], gain: f32, offset: f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        o.write(v * gain + offset);
    }
}

/// Input gradient of the normalization. Arguments are (forward input, output gradient).
#[derive(Debug, Clone)]
struct InputGradOp {
    groups: usize,
    eps: f64,
    scale: Vec<f32>,
}

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "penumbra-group-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "input")?;
        let grad = contiguous_f32(s2, l2, "output gradient")?;
        let groups = Groups::new(l1, self.groups)?;
        if x.is_empty() || groups.len() == 0 {
            return Ok((CpuStorage::F32(vec![0.0; x.len()]), l1.shape().clone()));
        }

        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(groups.len())
            .zip(x.par_chunks(groups.len()).zip(grad.par_chunks(groups.len())))
            .enumerate()
            .for_each(|(index, (out, (x, grad)))| {
                let scale = &self.scale[groups.first_channel(index)..][..groups.per_group];
                group_input_grad(x, grad, scale, groups.plane, self.eps, out);
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Computes `dx` of one group from its input `x`, output gradient `grad` and the scales of
/// its channels.
fn group_input_grad(
    x: &[f32],
    grad: &[f32],
    scale: &[f32],
    plane: usize,
    eps: f64,
    out: &mut [f32],
) {
    let (mean, inv_std) = group_stats(x, eps);
    let (mean_f32, inv_std_f32) = (mean as f32, inv_std as f32);

    // First pass: out contains g = dy * scale, and the sums of g and g * xhat.
    let (mut sum_g, mut sum_g_xhat) = (0f64, 0f64);
    for (k, ((out, grad), x)) in out
        .chunks_exact_mut(plane)
        .zip(grad.chunks_exact(plane))
        .zip(x.chunks_exact(plane))
        .enumerate()
    {
        let s = scale[k];
        for (o, &dy) in out.iter_mut().zip(grad) {
            *o = dy * s;
        }
        sum_g += sum_blocks(out, |g| g);
        sum_g_xhat += s as f64 * sum_products(grad, x, mean_f32, inv_std_f32);
    }

    let count = x.len() as f64;
    let mean_g = (sum_g / count) as f32;
    let mean_g_xhat = (sum_g_xhat / count) as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        let xhat = (v - mean_f32) * inv_std_f32;
        *o = inv_std_f32 * (*o - mean_g - xhat * mean_g_xhat);
    }
}

/// Returns `sum grad * (x - mean) * inv_std`, in f32 lanes within blocks and f64 across them.
fn sum_products(grad: &[f32], x: &[f32], mean: f32, inv_std: f32) -> f64 {
    const BLOCK: usize = 1024;
    let mut total = 0f64;
    for (grad, x) in grad.chunks(BLOCK).zip(x.chunks(BLOCK)) {
        let mut lanes = [0f32; 16];
        let mut grad_chunks = grad.chunks_exact(16);
        let mut x_chunks = x.chunks_exact(16);
        for (g, v) in (&mut grad_chunks).zip(&mut x_chunks) {
            for ((lane, &g), &v) in lanes.iter_mut().zip(g).zip(v) {
                *lane += g * ((v - mean) * inv_std);
            }
        }
        let rest: f32 = grad_chunks
            .remainder()
            .iter()
            .zip(x_chunks.remainder())
            .map(|(&g, &v)| g * ((v - mean) * inv_std))
            .sum();
        total += lanes.iter().map(|&v| v as f64).sum::<f64>() + rest as f64;
    }
    total
}

/// Scale and shift gradients, returned as a `(2, c)` tensor: row 0 the scale's, row 1 the
/// shift's. Arguments are (forward input, output gradient).
#[derive(Debug, Clone, Copy)]
struct ParamGradOp {
    groups: usize,
    eps: f64,
}

impl CustomOp2 for ParamGradOp {
    fn name(&self) -> &'static str {
        "penumbra-group-norm-param-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "input")?;
        let grad = contiguous_f32(s2, l2, "output gradient")?;
        let (batch, channels, _, _) = l1.shape().dims4()?;
        let groups = Groups::new(l1, self.groups)?;
        let shape = Shape::from((2, channels));
        if x.is_empty() || groups.len() == 0 {
            return Ok((CpuStorage::F32(vec![0.0; 2 * channels]), shape));
        }

        let stats: Vec<(f32, f32)> = x
            .par_chunks(groups.len())
            .map(|group| {
                let (mean, inv_std) = group_stats(group, self.eps);
                (mean as f32, inv_std as f32)
            })
            .collect();
        let sums: Vec<(f64, f64)> = (0..channels)
            .into_par_iter()
            .map(|channel| {
                let (mut scale_sum, mut shift_sum) = (0f64, 0f64);
                for image in 0..batch {
                    let start = (image * channels + channel) * groups.plane;
                    let (mean, inv_std) = stats[image * groups.count + channel / groups.per_group];
                    let grad = &grad[start..start + groups.plane];
                    let x = &x[start..start + groups.plane];
                    scale_sum += sum_products(grad, x, mean, inv_std);
                    shift_sum += sum_blocks(grad, |g| g);
                }
                (scale_sum, shift_sum)
            })
            .collect();

        let mut out = vec![0f32; 2 * channels];
        for (channel, (scale_sum, shift_sum)) in sums.into_iter().enumerate() {
            out[channel] = scale_sum as f32;
            out[channels + channel] = shift_sum as f32;
        }
        Ok((CpuStorage::F32(out), shape))
    }
}
