//! 2x2 transposed convolution with stride 2 and no padding: each input pixel spreads into its
//! own 2x2 output block, so the output is exactly twice the input's height and width.
//!
//! With the weight (`c_in, c_out, 2, 2`) read as a `c_in x (c_out * 4)` matrix, the forward pass
//! is one GEMM per row tile into a `(c_out * 4) x pixels` scratch matrix, followed by a scatter
//! into the output blocks. The gradients gather the output gradient back into that layout.

use rayon::prelude::*;

use crate::conv3x3::add_into;
use crate::layout::ConvShape;
use crate::matmul::{sgemm, DstMat, KernelPath, MatRef};
use crate::tiling::{
    row_tiles, SharedOut, Tile, FORWARD_TASKS_PER_THREAD, REDUCTION_TASKS_PER_THREAD,
};

/// Computes the forward pass for `x` (NCHW) and adds `bias`. Returns `(n, c_out, 2h, 2w)`.
pub(crate) fn forward(
    path: KernelPath,
    shape: &ConvShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let plane = shape.plane();
    let outputs = shape.c_out * 4;
    let len = shape.batch * outputs * plane;
    // Every element is written by `scatter` before the length is set.
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }

    let shared = SharedOut::from_raw(out.as_mut_ptr(), len);
    let tiles = row_tiles(
        shape.batch,
        shape.height,
        outputs * shape.width,
        FORWARD_TASKS_PER_THREAD,
    );
    tiles
        .par_iter()
        .for_each_init(Vec::new, |scratch: &mut Vec<f32>, tile| {
            let pixels = tile.rows.len() * shape.width;
            scratch.resize(outputs * pixels, 0.0);
            let input = &x[tile.image * shape.c_in * plane + tile.rows.start * shape.width..];
            // SAFETY: `scratch` is owned by this task.
            unsafe {
                sgemm(
                    path,
                    (outputs, pixels, shape.c_in),
                    DstMat {
                        ptr: scratch.as_mut_ptr(),
                        len: scratch.len(),
                        row_stride: pixels,
                    },
                    false,
                    MatRef::new(weight, 1, outputs),
                    MatRef::new(input, plane, 1),
                );
            }
            // SAFETY: this tile writes output rows 2 * tile.rows of image `tile.image` only.
            unsafe { scatter(shape, tile, scratch, bias, shared) };
        });
    // SAFETY: the tiles cover every input row of every image, and `scatter` writes all output
    // pixels of a tile's rows in every channel, so all `len` elements are initialized.
    unsafe { out.set_len(len) };
    out
}

/// Writes `scratch[(co * 4 + dy * 2 + dx), r * w + x]` plus `bias[co]` to output pixel
/// `(2 * (rows.start + r) + dy, 2 * x + dx)` of channel `co`.
///
/// # Safety
///
/// No other thread may access output rows `2 * tile.rows` of image `tile.image` meanwhile.
unsafe fn scatter(
    shape: &ConvShape,
    tile: &Tile,
    scratch: &[f32],
    bias: Option<&[f32]>,
    out: SharedOut,
) {
    let (width, pixels) = (shape.width, tile.rows.len() * shape.width);
    let out_plane = 4 * shape.plane();

    for co in 0..shape.c_out {
        let b = bias.map_or(0.0, |bias| bias[co]);
        for (r, y) in tile.rows.clone().enumerate() {
            for dy in 0..2 {
                let offset = (tile.image * shape.c_out + co) * out_plane + (2 * y + dy) * 2 * width;
                let (row, len) = out.at(offset);
                assert!(len >= 2 * width, "output row exceeds its buffer");
                for dx in 0..2 {
                    let src = &scratch[(co * 4 + dy * 2 + dx) * pixels + r * width..][..width];
                    for (x, value) in src.iter().enumerate() {
                        // Raw writes, because the output may still be uninitialized.
                        row.add(2 * x + dx).write(value + b);
                    }
                }
            }
        }
    }
}

/// Copies the output gradient of one tile into `(c_out * 4) x pixels` layout, the inverse of
/// `scatter` without bias.
fn gather(shape: &ConvShape, tile: &Tile, grad_out: &[f32], gathered: &mut [f32]) {
    let (width, pixels) = (shape.width, tile.rows.len() * shape.width);
    let out_plane = 4 * shape.plane();

    for co in 0..shape.c_out {
        for (r, y) in tile.rows.clone().enumerate() {
            for dy in 0..2 {
                let offset = (tile.image * shape.c_out + co) * out_plane + (2 * y + dy) * 2 * width;
                let row = &grad_out[offset..offset + 2 * width];
                for dx in 0..2 {
                    let dst = &mut gathered[(co * 4 + dy * 2 + dx) * pixels + r * width..][..width];
                    for (x, value) in dst.iter_mut().enumerate() {
                        *value = row[2 * x + dx];
                    }
                }
            }
        }
    }
}

/// Computes the input gradient `grad_x[ci, p] = sum_m weight[ci, m] * gathered[m, p]`.
pub(crate) fn input_grad(
    path: KernelPath,
    shape: &ConvShape,
    weight: &[f32],
    grad_out: &[f32],
) -> Vec<f32> {
    let plane = shape.plane();
    let outputs = shape.c_out * 4;
    let mut grad_x = vec![0.0f32; shape.batch * shape.c_in * plane];
    if grad_x.is_empty() {
        return grad_x;
    }

    let shared = SharedOut::new(&mut grad_x);
    let tiles = row_tiles(
        shape.batch,
        shape.height,
        outputs * shape.width,
        FORWARD_TASKS_PER_THREAD,
    );
    tiles
        .par_iter()
        .for_each_init(Vec::new, |gathered: &mut Vec<f32>, tile| {
            let pixels = tile.rows.len() * shape.width;
            gathered.resize(outputs * pixels, 0.0);
            gather(shape, tile, grad_out, gathered);

            let (ptr, len) =
                shared.at(tile.image * shape.c_in * plane + tile.rows.start * shape.width);
            // SAFETY: this tile writes rows `tile.rows` of image `tile.image` in every channel only.
            unsafe {
                sgemm(
                    path,
                    (shape.c_in, pixels, outputs),
                    DstMat {
                        ptr,
                        len,
                        row_stride: plane,
                    },
                    false,
                    MatRef::new(weight, outputs, 1),
                    MatRef::new(gathered, pixels, 1),
                );
            }
        });
    grad_x
}

/// Computes the weight gradient `grad_w[ci, m] = sum_n sum_p x[ci, p] * gathered[m, p]`.
pub(crate) fn weight_grad(
    path: KernelPath,
    shape: &ConvShape,
    x: &[f32],
    grad_out: &[f32],
) -> Vec<f32> {
    let plane = shape.plane();
    let outputs = shape.c_out * 4;
    let size = shape.c_in * outputs;

    let tiles = row_tiles(
        shape.batch,
        shape.height,
        outputs * shape.width,
        REDUCTION_TASKS_PER_THREAD,
    );
    tiles
        .par_iter()
        .fold(
            || (vec![0.0f32; size], Vec::new()),
            |(mut acc, mut gathered), tile| {
                let pixels = tile.rows.len() * shape.width;
                gathered.resize(outputs * pixels, 0.0);
                gather(shape, tile, grad_out, &mut gathered);

                let input = &x[tile.image * shape.c_in * plane + tile.rows.start * shape.width..];
                // SAFETY: `acc` is owned by this fold task.
                unsafe {
                    sgemm(
                        path,
                        (shape.c_in, outputs, pixels),
                        DstMat {
                            ptr: acc.as_mut_ptr(),
                            len: size,
                            row_stride: outputs,
                        },
                        true,
                        MatRef::new(input, plane, 1),
                        MatRef::new(&gathered, 1, pixels),
                    );
                }
                (acc, gathered)
            },
        )
        .map(|(acc, _)| acc)
        .reduce(|| vec![0.0f32; size], add_into)
}
