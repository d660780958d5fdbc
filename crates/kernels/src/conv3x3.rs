//! 3x3 convolution with stride 1 and zero padding 1, through im2col and GEMM.
//!
//! On CPUs with AVX-512F the `Simd` path computes the forward pass (and so the input gradient)
//! with the direct kernel in `direct3x3` instead.
//!
//! Each task unrolls a tile of input rows into a `(c_in * 9) x (rows * width)` column matrix that
//! stays under `SCRATCH_ELEMS`, then one GEMM with the `c_out x (c_in * 9)` weight matrix writes
//! the tile's output rows for every channel. The weight gradient uses the same columns, and the
//! input gradient is the forward pass of the gradient with the kernel flipped and transposed.

use std::ops::Range;

use rayon::prelude::*;

use crate::layout::{add_bias_relu, ConvShape};
use crate::matmul::{sgemm, DstMat, KernelPath, MatRef};
use crate::tiling::{row_tiles, SharedOut, FORWARD_TASKS_PER_THREAD, REDUCTION_TASKS_PER_THREAD};

/// Unrolls rows `rows` of one image (`c_in` planes of `height` x `width`) into `col`, laid out
/// as `(c_in * 9)` rows of `rows.len() * width` values, zero where the 3x3 window leaves the
/// image.
fn im2col(image: &[f32], shape: &ConvShape, rows: Range<usize>, col: &mut [f32]) {
    let (height, width) = (shape.height, shape.width);
    let pixels = rows.len() * width;

    for ci in 0..shape.c_in {
        let plane = &image[ci * height * width..(ci + 1) * height * width];
        for tap in 0..9 {
            let (ky, kx) = (tap / 3, tap % 3);
            let block = &mut col[(ci * 9 + tap) * pixels..(ci * 9 + tap + 1) * pixels];

            for (r, y) in rows.clone().enumerate() {
                let dst = &mut block[r * width..(r + 1) * width];
                // The source row is y + ky - 1, outside the image when y + ky is 0 or above height.
                let shifted = y + ky;
                if shifted == 0 || shifted > height {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[(shifted - 1) * width..shifted * width];
                copy_shifted_row(src, dst, kx);
            }
        }
    }
}

/// Copies `src` into `dst` shifted by `kx - 1` columns, filling the column that falls outside
/// the image with zero.
fn copy_shifted_row(src: &[f32], dst: &mut [f32], kx: usize) {
    let width = dst.len();
    match kx {
        0 => {
            dst[0] = 0.0;
            dst[1..].copy_from_slice(&src[..width - 1]);
        }
        1 => dst.copy_from_slice(src),
        _ => {
            dst[..width - 1].copy_from_slice(&src[1..]);
            dst[width - 1] = 0.0;
        }
    }
}

/// Computes the forward convolution of `x` (NCHW) with `weight` (`c_out, c_in, 3, 3`), then adds
/// `bias` and applies ReLU when asked. Returns the NCHW output, the same spatial size as `x`.
pub(crate) fn forward(
    path: KernelPath,
    shape: &ConvShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if path == KernelPath::Simd && crate::direct3x3::available() {
        return crate::direct3x3::forward(shape, x, weight, bias, relu);
    }

    let plane = shape.plane();
    let taps = shape.c_in * 9;
    let mut out = vec![0.0f32; shape.batch * shape.c_out * plane];
    if out.is_empty() {
        return out;
    }

    let shared = SharedOut::new(&mut out);
    let tiles = row_tiles(
        shape.batch,
        shape.height,
        taps * shape.width,
        FORWARD_TASKS_PER_THREAD,
    );
    tiles
        .par_iter()
        .for_each_init(Vec::new, |col: &mut Vec<f32>, tile| {
            let pixels = tile.rows.len() * shape.width;
            col.resize(taps * pixels, 0.0);
            let image = &x[tile.image * shape.c_in * plane..(tile.image + 1) * shape.c_in * plane];
            im2col(image, shape, tile.rows.clone(), col);

            let offset = tile.image * shape.c_out * plane + tile.rows.start * shape.width;
            let (ptr, len) = shared.at(offset);
            // SAFETY: this tile writes rows `tile.rows` of image `tile.image` in every channel, and
            // no other tile writes those elements.
            unsafe {
                sgemm(
                    path,
                    (shape.c_out, pixels, taps),
                    DstMat {
                        ptr,
                        len,
                        row_stride: plane,
                    },
                    false,
                    MatRef::new(weight, taps, 1),
                    MatRef::new(col, pixels, 1),
                );
                add_bias_relu(ptr, (shape.c_out, plane, pixels), bias, relu);
            }
        });
    out
}

/// Computes the gradient of the loss with respect to the weight, `c_out x c_in x 3 x 3`, from
/// the forward input `x` and the output gradient `grad_out`.
pub(crate) fn weight_grad(
    path: KernelPath,
    shape: &ConvShape,
    x: &[f32],
    grad_out: &[f32],
) -> Vec<f32> {
    let plane = shape.plane();
    let taps = shape.c_in * 9;
    let size = shape.c_out * taps;
    if shape.plane() == 0 {
        return vec![0.0f32; size];
    }

    let tiles = row_tiles(
        shape.batch,
        shape.height,
        taps * shape.width,
        REDUCTION_TASKS_PER_THREAD,
    );
    tiles
        .par_iter()
        .fold(
            || (vec![0.0f32; size], Vec::new()),
            |(mut acc, mut col), tile| {
                let pixels = tile.rows.len() * shape.width;
                col.resize(taps * pixels, 0.0);
                let image =
                    &x[tile.image * shape.c_in * plane..(tile.image + 1) * shape.c_in * plane];
                im2col(image, shape, tile.rows.clone(), &mut col);

                let offset = tile.image * shape.c_out * plane + tile.rows.start * shape.width;
                // SAFETY: `acc` is owned by this fold task.
                unsafe {
                    sgemm(
                        path,
                        (shape.c_out, taps, pixels),
                        DstMat {
                            ptr: acc.as_mut_ptr(),
                            len: size,
                            row_stride: taps,
                        },
                        true,
                        MatRef::new(&grad_out[offset..], plane, 1),
                        MatRef::new(&col, 1, pixels),
                    );
                }
                (acc, col)
            },
        )
        .map(|(acc, _)| acc)
        .reduce(|| vec![0.0f32; size], add_into)
}

/// Computes the gradient of the loss with respect to the input: a 3x3 convolution of
/// `grad_out` with the kernel flipped in both spatial axes and its channel axes exchanged.
pub(crate) fn input_grad(
    path: KernelPath,
    shape: &ConvShape,
    weight: &[f32],
    grad_out: &[f32],
) -> Vec<f32> {
    let flipped = flip_transpose(shape, weight);
    forward(path, &shape.swapped(), grad_out, &flipped, None, false)
}

/// Returns `w'[ci, co, ky, kx] = w[co, ci, 2 - ky, 2 - kx]`.
fn flip_transpose(shape: &ConvShape, weight: &[f32]) -> Vec<f32> {
    let mut flipped = vec![0.0f32; weight.len()];
    for co in 0..shape.c_out {
        for ci in 0..shape.c_in {
            for tap in 0..9 {
                flipped[(ci * shape.c_out + co) * 9 + (8 - tap)] =
                    weight[(co * shape.c_in + ci) * 9 + tap];
            }
        }
    }
    flipped
}

pub(crate) fn add_into(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}
