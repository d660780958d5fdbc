//! 1x1 convolution: per image, one GEMM of the `c_out x c_in` weight with the `c_in x pixels`
//! input, split into row tiles for parallelism. No scratch buffer is needed.

use rayon::prelude::*;

use crate::conv3x3::add_into;
use crate::layout::{add_bias_relu, ConvShape};
use crate::matmul::{sgemm, DstMat, KernelPath, MatRef};
use crate::tiling::{row_tiles, SharedOut, FORWARD_TASKS_PER_THREAD, REDUCTION_TASKS_PER_THREAD};

/// Computes `out[co, p] = sum_ci weight[co, ci] * x[ci, p]` for each image, then adds `bias`
/// and applies ReLU when asked. `weight` is any strided `c_out x c_in` view, which lets the
/// input gradient pass the transposed weight without copying it.
pub(crate) fn forward(
    path: KernelPath,
    shape: &ConvShape,
    x: &[f32],
    weight: MatRef<'_>,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let plane = shape.plane();
    let len = shape.batch * shape.c_out * plane;
    let mut out = output_buffer(path, len);
    if len == 0 {
        return out;
    }

    let shared = SharedOut::from_raw(out.as_mut_ptr(), len);
    let tiles = row_tiles(
        shape.batch,
        shape.height,
        shape.c_in * shape.width,
        FORWARD_TASKS_PER_THREAD,
    );
    tiles.par_iter().for_each(|tile| {
        let pixels = tile.rows.len() * shape.width;
        let start = tile.rows.start * shape.width;
        let input = &x[tile.image * shape.c_in * plane + start..];

        let (ptr, len) = shared.at(tile.image * shape.c_out * plane + start);
        // SAFETY: this tile writes pixels `start..start + pixels` of image `tile.image` in every
        // channel, and no other tile writes those elements.
        unsafe {
            sgemm(
                path,
                (shape.c_out, pixels, shape.c_in),
                DstMat {
                    ptr,
                    len,
                    row_stride: plane,
                },
                false,
                weight,
                MatRef::new(input, plane, 1),
            );
            add_bias_relu(ptr, (shape.c_out, plane, pixels), bias, relu);
        }
    });
    // SAFETY: the tiles cover every pixel of every image, and each GEMM writes all `c_out`
    // channels of its tile, so all `len` elements are initialized.
    unsafe { out.set_len(len) };
    out
}

/// Allocates room for `len` outputs. The GEMM crate writes its destination through raw
/// pointers without reading it, so the `Simd` and `Gemm` paths skip the zero fill. The
/// portable loops take slices of the destination, which must be initialized first.
pub(crate) fn output_buffer(path: KernelPath, len: usize) -> Vec<f32> {
    match path {
        KernelPath::Portable => vec![0.0f32; len],
        KernelPath::Simd | KernelPath::Gemm => Vec::with_capacity(len),
    }
}

/// Computes the input gradient `grad_x[ci, p] = sum_co weight[co, ci] * grad_out[co, p]`.
pub(crate) fn input_grad(
    path: KernelPath,
    shape: &ConvShape,
    weight: &[f32],
    grad_out: &[f32],
) -> Vec<f32> {
    let transposed = MatRef::new(weight, 1, shape.c_in);
    forward(path, &shape.swapped(), grad_out, transposed, None, false)
}

/// Computes the weight gradient `grad_w[co, ci] = sum_n sum_p grad_out[co, p] * x[ci, p]`.
pub(crate) fn weight_grad(
    path: KernelPath,
    shape: &ConvShape,
    x: &[f32],
    grad_out: &[f32],
) -> Vec<f32> {
    let plane = shape.plane();
    let size = shape.c_out * shape.c_in;

    let tiles = row_tiles(
        shape.batch,
        shape.height,
        shape.c_in * shape.width,
        REDUCTION_TASKS_PER_THREAD,
    );
    tiles
        .par_iter()
        .fold(
            || vec![0.0f32; size],
            |mut acc, tile| {
                let pixels = tile.rows.len() * shape.width;
                let start = tile.rows.start * shape.width;
                let grad = &grad_out[tile.image * shape.c_out * plane + start..];
                let input = &x[tile.image * shape.c_in * plane + start..];
                // SAFETY: `acc` is owned by this fold task.
                unsafe {
                    sgemm(
                        path,
                        (shape.c_out, shape.c_in, pixels),
                        DstMat {
                            ptr: acc.as_mut_ptr(),
                            len: size,
                            row_stride: shape.c_in,
                        },
                        true,
                        MatRef::new(grad, plane, 1),
                        MatRef::new(input, 1, plane),
                    );
                }
                acc
            },
        )
        .reduce(|| vec![0.0f32; size], add_into)
}
