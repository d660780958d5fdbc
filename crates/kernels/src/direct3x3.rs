//! Direct 3x3 convolution (stride 1, zero padding 1) with AVX-512, without im2col.
//!
//! Each task copies a band of input rows, one halo row above and below and one zero column on
//! each side, into a padded scratch buffer. Every 3x3 window then lies inside the buffer, so
//! the inner loop needs no bounds checks or masks. The output rows are cut into vectors of 16
//! pixels (the last one of a row shorter when the width is not a multiple of 16). A micro-tile
//! keeps `CHANNELS x VECTORS` sums in zmm registers: for each input channel and tap it loads
//! `VECTORS` input vectors once and multiplies each with `CHANNELS` broadcast weights. Bias and
//! ReLU are applied when the sums are stored.

use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_max_ps, _mm512_set1_ps, _mm512_setzero_ps,
};
use std::ops::Range;

use rayon::prelude::*;

use crate::layout::ConvShape;
use crate::tiling::{SharedOut, FORWARD_TASKS_PER_THREAD, SCRATCH_ELEMS};

/// Pixels per zmm register.
const LANES: usize = 16;

/// Output channels of one micro-tile.
const CHANNELS: usize = 8;

/// Output vectors of one micro-tile. `CHANNELS * VECTORS` sums plus `VECTORS` inputs and one
/// broadcast weight use 28 of the 32 zmm registers.
const VECTORS: usize = 3;

/// Minimum number of output vectors per task. Below it, tasks split the channels instead of
/// the rows, so that small planes still fill whole micro-tiles.
const MIN_TASK_VECTORS: usize = 4 * VECTORS;

/// Returns whether this CPU runs the AVX-512 kernel.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// One unit of parallel work: rows `rows` of image `image`, output channels `channels`.
#[derive(Debug, Clone)]
struct Task {
    image: usize,
    rows: Range<usize>,
    channels: Range<usize>,
}

/// Computes the forward convolution of `x` (NCHW) with `weight` (`c_out, c_in, 3, 3`), adds
/// `bias` and applies ReLU when asked. Returns the NCHW output, the same spatial size as `x`.
///
/// # Panics
///
/// Panics when the CPU lacks AVX-512F; callers check [`available`] first.
pub(crate) fn forward(
    shape: &ConvShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    assert!(available(), "direct 3x3 kernel called without AVX-512F");
    let len = shape.batch * shape.c_out * shape.plane();
    assert!(x.len() >= shape.batch * shape.c_in * shape.plane(), "input shorter than its shape");
    assert!(weight.len() >= shape.c_out * shape.c_in * 9, "weight shorter than its shape");
    assert!(bias.is_none_or(|b| b.len() >= shape.c_out), "bias shorter than c_out");

    // Every element is written by exactly one task below before the length is set.
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let shared = SharedOut::from_raw(out.as_mut_ptr(), len);

    tasks(shape)
        .par_iter()
        .for_each_init(Vec::new, |padded: &mut Vec<f32>, task| {
            pad_band(shape, x, task, padded);
            // SAFETY: AVX-512F is present (asserted above). The task writes rows `task.rows` of
            // channels `task.channels` of image `task.image`, and no other task writes them.
            unsafe { run_task(shape, padded, weight, bias, relu, task, shared) };
        });

    // SAFETY: the tasks cover every (image, channel, row) once, and each task writes every
    // pixel of its rows, so all `len` elements are initialized.
    unsafe { out.set_len(len) };
    out
}

/// Splits the work into tasks: row bands sized for the cache and the thread count, then
/// channel ranges when the bands alone give too few tasks.
fn tasks(shape: &ConvShape) -> Vec<Task> {
    let padded_width = shape.width + 2;
    let vectors_per_row = shape.width.div_ceil(LANES);
    let target_tasks = FORWARD_TASKS_PER_THREAD * rayon::current_num_threads();

    let by_cache = (SCRATCH_ELEMS / (shape.c_in * padded_width).max(1)).max(1);
    let by_balance = shape.height.div_ceil(target_tasks.div_ceil(shape.batch)).max(1);
    let min_rows = MIN_TASK_VECTORS.div_ceil(vectors_per_row.max(1));
    let band = by_cache.min(by_balance).max(min_rows).min(shape.height).max(1);
    let bands = shape.height.div_ceil(band);

    let blocks = shape.c_out.div_ceil(CHANNELS);
    let splits = target_tasks.div_ceil(shape.batch * bands).clamp(1, blocks);
    let per_split = blocks.div_ceil(splits) * CHANNELS;

    let mut tasks = Vec::new();
    for image in 0..shape.batch {
        for start in (0..shape.height).step_by(band) {
            let rows = start..(start + band).min(shape.height);
            for first in (0..shape.c_out).step_by(per_split) {
                tasks.push(Task {
                    image,
                    rows: rows.clone(),
                    channels: first..(first + per_split).min(shape.c_out),
                });
            }
        }
    }
    tasks
}

/// Copies rows `task.rows` of image `task.image`, with one halo row on each side, into the
/// start of `padded` as `c_in` planes of `rows + 2` rows of `width + 2` values. Values outside
/// the image are zero. `LANES` zeros follow, because the last row's last vector may read past
/// its end. Elements after those keep stale values from earlier tasks.
fn pad_band(shape: &ConvShape, x: &[f32], task: &Task, padded: &mut Vec<f32>) {
    let (height, width) = (shape.height, shape.width);
    let padded_width = width + 2;
    let padded_plane = (task.rows.len() + 2) * padded_width;
    let used = shape.c_in * padded_plane;
    // Growing zero-fills new space; every element below `used` is written again below.
    if padded.len() < used + LANES {
        padded.resize(used + LANES, 0.0);
    }
    padded[used..used + LANES].fill(0.0);

    let image = &x[task.image * shape.c_in * height * width..][..shape.c_in * height * width];
    for (ci, plane) in image.chunks_exact(height * width).enumerate() {
        let dst_plane = &mut padded[ci * padded_plane..(ci + 1) * padded_plane];
        for (r, dst) in dst_plane.chunks_exact_mut(padded_width).enumerate() {
            // Padded row r contains image row task.rows.start + r - 1.
            let y = task.rows.start + r;
            if y == 0 || y > height {
                dst.fill(0.0);
                continue;
            }
            dst[0] = 0.0;
            dst[1..=width].copy_from_slice(&plane[(y - 1) * width..y * width]);
            dst[width + 1] = 0.0;
        }
    }
}

/// Output position of one vector of a task: its row within the task's band and first column.
#[derive(Debug, Clone, Copy)]
struct VectorPos {
    row: usize,
    column: usize,
    lanes: usize,
}

/// Computes every micro-tile of `task` from its padded band.
///
/// # Safety
///
/// The CPU must support AVX-512F, `padded` must come from [`pad_band`] for this task, and no
/// other thread may access the output elements of this task meanwhile.
#[target_feature(enable = "avx512f")]
unsafe fn run_task(
    shape: &ConvShape,
    padded: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    task: &Task,
    out: SharedOut,
) {
    let (c_in, width) = (shape.c_in, shape.width);
    let padded_width = width + 2;
    let padded_plane = (task.rows.len() + 2) * padded_width;
    let vectors_per_row = width.div_ceil(LANES);
    let positions: Vec<VectorPos> = (0..task.rows.len() * vectors_per_row)
        .map(|q| {
            let column = (q % vectors_per_row) * LANES;
            VectorPos {
                row: q / vectors_per_row,
                column,
                lanes: (width - column).min(LANES),
            }
        })
        .collect();
    let geometry = TileGeometry {
        c_in,
        padded_width,
        padded_plane,
    };

    for first in task.channels.clone().step_by(CHANNELS) {
        let channels = (task.channels.end - first).min(CHANNELS);
        // A partial block repeats its last channel's weights; those sums are never stored.
        let weights: [*const f32; CHANNELS] = std::array::from_fn(|r| {
            weight.as_ptr().add((first + r.min(channels - 1)) * c_in * 9)
        });

        for tile in positions.chunks(VECTORS) {
            // A partial tile repeats its last vector; those sums are never stored.
            let inputs: [*const f32; VECTORS] = std::array::from_fn(|v| {
                let pos = tile[v.min(tile.len() - 1)];
                padded.as_ptr().add(pos.row * padded_width + pos.column)
            });
            let sums = micro_tile(&geometry, &weights, &inputs);

            for (r, channel_sums) in sums.iter().take(channels).enumerate() {
                let channel = first + r;
                let b = bias.map_or(0.0, |b| b[channel]);
                let plane_start =
                    (task.image * shape.c_out + channel) * shape.plane() + task.rows.start * width;
                for (v, pos) in tile.iter().enumerate() {
                    let (ptr, len) = out.at(plane_start + pos.row * width + pos.column);
                    debug_assert!(len >= pos.lanes);
                    store(ptr, channel_sums[v], b, relu, pos.lanes);
                }
            }
        }
    }
}

/// Strides of the padded band and the weights that a micro-tile walks.
#[derive(Debug, Clone, Copy)]
struct TileGeometry {
    c_in: usize,
    padded_width: usize,
    padded_plane: usize,
}

/// Returns the sums of `CHANNELS` output channels (weights from `weights[r]`, laid out
/// `c_in x 9`) over the 3x3 windows whose top-left corners are `inputs[v]` in channel 0 of the
/// padded band.
///
/// # Safety
///
/// The CPU must support AVX-512F, and every window of 16 consecutive pixels read from
/// `inputs[v]` for each channel and tap must lie inside the padded band.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn micro_tile(
    geometry: &TileGeometry,
    weights: &[*const f32; CHANNELS],
    inputs: &[*const f32; VECTORS],
) -> [[__m512; VECTORS]; CHANNELS] {
    let mut sums = [[_mm512_setzero_ps(); VECTORS]; CHANNELS];
    let taps: [usize; 9] = std::array::from_fn(|t| (t / 3) * geometry.padded_width + t % 3);

    for ci in 0..geometry.c_in {
        let input_offset = ci * geometry.padded_plane;
        let weight_offset = ci * 9;
        for (t, &tap) in taps.iter().enumerate() {
            let values: [__m512; VECTORS] =
                std::array::from_fn(|v| _mm512_loadu_ps(inputs[v].add(input_offset + tap)));
            for r in 0..CHANNELS {
                let w = _mm512_set1_ps(*weights[r].add(weight_offset + t));
                for v in 0..VECTORS {
                    sums[r][v] = _mm512_fmadd_ps(w, values[v], sums[r][v]);
                }
            }
        }
    }
    sums
}

/// Stores the first `lanes` values of `sums + bias`, clamped at zero when `relu` is set.
///
/// # Safety
///
/// The CPU must support AVX-512F and `ptr` must be valid for writes of `lanes` values.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store(ptr: *mut f32, sums: __m512, bias: f32, relu: bool, lanes: usize) {
    let mut value = _mm512_add_ps(sums, _mm512_set1_ps(bias));
    if relu {
        value = _mm512_max_ps(value, _mm512_setzero_ps());
    }
    let mask = if lanes >= LANES {
        u16::MAX
    } else {
        (1u16 << lanes) - 1
    };
    _mm512_mask_storeu_ps(ptr, mask, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(batch: usize, c_in: usize, c_out: usize, height: usize, width: usize) -> ConvShape {
        ConvShape {
            batch,
            c_in,
            c_out,
            height,
            width,
        }
    }

    #[test]
    fn tasks_cover_every_row_and_channel_once() {
        for s in [shape(1, 16, 16, 256, 256), shape(3, 5, 19, 7, 33), shape(1, 256, 256, 16, 16)] {
            let mut covered = vec![0u32; s.batch * s.c_out * s.height];
            for task in tasks(&s) {
                for channel in task.channels.clone() {
                    for row in task.rows.clone() {
                        covered[(task.image * s.c_out + channel) * s.height + row] += 1;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{s:?}");
        }
    }

    #[test]
    fn padded_band_has_zero_border() {
        let s = shape(1, 1, 1, 3, 2);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let task = Task {
            image: 0,
            rows: 0..2,
            channels: 0..1,
        };
        let mut padded = Vec::new();
        pad_band(&s, &x, &task, &mut padded);
        // Rows -1, 0, 1, 2 of the image, each with a zero column on both sides.
        let expected = [
            0.0, 0.0, 0.0, 0.0, //
            0.0, 1.0, 2.0, 0.0, //
            0.0, 3.0, 4.0, 0.0, //
            0.0, 5.0, 6.0, 0.0,
        ];
        assert_eq!(&padded[..16], &expected);
        assert!(padded[16..32].iter().all(|&v| v == 0.0));
    }
}
