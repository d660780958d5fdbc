//! In-plane head motion between frames, by rigid translation registration to the first frame.
//!
//! Each frame is reduced to one projection image: the mean over slices of HU clamped to
//! `[-1000, 100]`. The clamp keeps the air-to-scalp edge (about 1000 HU) as the dominant
//! structure and caps contrast enhancement, so the bolus passing through vessels barely changes
//! the image. The projections are block-averaged to pixels of about 2 mm. Every integer shift
//! within [`MAX_SHIFT_MM`] is first scored on images of half that size by the mean squared
//! difference over the overlap, then the neighbourhood of the best one at full size. A
//! parabola through the best score and its neighbours along each axis refines the shift to
//! sub-pixel precision.
//!
//! NOTE: rotation and through-plane (z) motion are not estimated. A yaw about the head centre
//! adds no translation, so it is missed, and only the translation part of a rigid motion is
//! reported.

use rayon::prelude::*;

use crate::concentration::Series;

/// Lower and upper clamp of the projected HU values.
const CLAMP_MIN_HU: f32 = -1000.0;
const CLAMP_MAX_HU: f32 = 100.0;

/// Target pixel size of the downsampled projections, in mm.
const TARGET_PIXEL_MM: f64 = 2.0;

/// Largest in-plane shift searched, in mm. A larger motion is reported as about this size.
pub const MAX_SHIFT_MM: f64 = 16.0;

/// Pixels searched around twice the coarse shift at full size.
const REFINE_RADIUS: isize = 2;

/// A downsampled projection image, row-major.
struct Projection {
    values: Vec<f32>,
    ny: usize,
    nx: usize,
}

/// Returns the largest in-plane displacement (mm) of any frame from the first frame.
///
/// `spacing_mm` is `(z, y, x)`. Non-finite samples count as air. A single frame returns 0.
pub fn estimate_motion_mm(series: &Series, spacing_mm: [f64; 3]) -> f64 {
    if series.frames < 2 {
        return 0.0;
    }
    let factor_y = downsample_factor(spacing_mm[1]);
    let factor_x = downsample_factor(spacing_mm[2]);
    let pixel_mm = [
        spacing_mm[1] * factor_y as f64,
        spacing_mm[2] * factor_x as f64,
    ];
    let radius = [
        (MAX_SHIFT_MM / pixel_mm[0]).ceil() as isize,
        (MAX_SHIFT_MM / pixel_mm[1]).ceil() as isize,
    ];

    let reference = project(series, 0, factor_y, factor_x);
    let coarse_reference = halve(&reference);
    let coarse_radius = [(radius[0] + 1) / 2, (radius[1] + 1) / 2];
    (1..series.frames)
        .into_par_iter()
        .map(|t| {
            let moving = project(series, t, factor_y, factor_x);

            // Coarse to fine: the whole range on images of half the size, then the
            // neighbourhood of that shift at full size.
            let coarse = best_shift(&coarse_reference, &halve(&moving), [0, 0], coarse_radius);
            let centre = [2 * coarse[0], 2 * coarse[1]];
            let [dy, dx] = register(&reference, &moving, centre, [REFINE_RADIUS; 2]);
            ((dy * pixel_mm[0]).powi(2) + (dx * pixel_mm[1]).powi(2)).sqrt()
        })
        .reduce(|| 0.0, f64::max)
}

/// Returns `projection` block-averaged by 2 along both axes.
fn halve(projection: &Projection) -> Projection {
    let (ny, nx) = (projection.ny, projection.nx);
    let (out_y, out_x) = (ny.div_ceil(2), nx.div_ceil(2));
    let mut sums = vec![0.0f32; out_y * out_x];
    let mut counts = vec![0u32; out_y * out_x];
    for y in 0..ny {
        for x in 0..nx {
            sums[(y / 2) * out_x + x / 2] += projection.values[y * nx + x];
            counts[(y / 2) * out_x + x / 2] += 1;
        }
    }
    let values = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &c)| s / c.max(1) as f32)
        .collect();
    Projection {
        values,
        ny: out_y,
        nx: out_x,
    }
}

/// Returns the integer shift within `radius` of `centre` with the lowest cost.
fn best_shift(
    reference: &Projection,
    moving: &Projection,
    centre: [isize; 2],
    radius: [isize; 2],
) -> [isize; 2] {
    let mut best = (f64::INFINITY, centre);
    for dy in centre[0] - radius[0]..=centre[0] + radius[0] {
        for dx in centre[1] - radius[1]..=centre[1] + radius[1] {
            let cost = mean_squared_difference(reference, moving, dy, dx);
            if cost < best.0 {
                best = (cost, [dy, dx]);
            }
        }
    }
    best.1
}

/// Returns how many pixels of `spacing_mm` are averaged into one projection pixel.
fn downsample_factor(spacing_mm: f64) -> usize {
    ((TARGET_PIXEL_MM / spacing_mm).round() as usize).max(1)
}

/// Projects frame `t` over slices and block-averages it by the given factors.
fn project(series: &Series, t: usize, factor_y: usize, factor_x: usize) -> Projection {
    let [nz, ny, nx] = series.shape;
    let (out_y, out_x) = (ny.div_ceil(factor_y), nx.div_ceil(factor_x));
    let mut sums = vec![0.0f32; out_y * out_x];
    let mut counts = vec![0u32; out_y * out_x];
    let frame = series.frame(t);

    for z in 0..nz {
        for y in 0..ny {
            let row = &frame[(z * ny + y) * nx..(z * ny + y + 1) * nx];
            let out_row = (y / factor_y) * out_x;
            for (x, &value) in row.iter().enumerate() {
                let clamped = if value.is_finite() {
                    value.clamp(CLAMP_MIN_HU, CLAMP_MAX_HU)
                } else {
                    CLAMP_MIN_HU
                };
                sums[out_row + x / factor_x] += clamped;
                counts[out_row + x / factor_x] += 1;
            }
        }
    }
    let values = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &c)| s / c.max(1) as f32)
        .collect();
    Projection {
        values,
        ny: out_y,
        nx: out_x,
    }
}

/// Returns the sub-pixel shift `(dy, dx)` that best maps `reference` onto `moving`
/// (`moving(y + dy, x + dx) ~ reference(y, x)`), searched within `radius` pixels of `centre`.
fn register(
    reference: &Projection,
    moving: &Projection,
    centre: [isize; 2],
    radius: [isize; 2],
) -> [f64; 2] {
    let best = best_shift(reference, moving, centre, radius);
    let cost = |dy: isize, dx: isize| mean_squared_difference(reference, moving, dy, dx);
    let centre_cost = cost(best[0], best[1]);
    let refine_y = parabola_vertex(
        cost(best[0] - 1, best[1]),
        centre_cost,
        cost(best[0] + 1, best[1]),
    );
    let refine_x = parabola_vertex(
        cost(best[0], best[1] - 1),
        centre_cost,
        cost(best[0], best[1] + 1),
    );
    [best[0] as f64 + refine_y, best[1] as f64 + refine_x]
}

/// Returns the mean of `(moving(y + dy, x + dx) - reference(y, x))^2` over the overlap, or
/// infinity when the images do not overlap.
fn mean_squared_difference(
    reference: &Projection,
    moving: &Projection,
    dy: isize,
    dx: isize,
) -> f64 {
    let (ny, nx) = (reference.ny as isize, reference.nx as isize);
    let (y0, y1) = ((-dy).max(0), (ny - dy).min(ny));
    let (x0, x1) = ((-dx).max(0), (nx - dx).min(nx));
    if y0 >= y1 || x0 >= x1 {
        return f64::INFINITY;
    }

    let mut total = 0.0f64;
    for y in y0..y1 {
        let reference_row = &reference.values[(y * nx + x0) as usize..(y * nx + x1) as usize];
        let start = ((y + dy) * nx + x0 + dx) as usize;
        let moving_row = &moving.values[start..start + (x1 - x0) as usize];
        let row: f32 = reference_row
            .iter()
            .zip(moving_row)
            .map(|(&a, &b)| (a - b) * (a - b))
            .sum();
        total += row as f64;
    }
    total / ((y1 - y0) * (x1 - x0)) as f64
}

/// Returns the offset in `[-0.5, 0.5]` of the minimum of the parabola through three equally
/// spaced costs whose middle one is the smallest.
fn parabola_vertex(before: f64, centre: f64, after: f64) -> f64 {
    let curvature = before - 2.0 * centre + after;
    if !(curvature > 0.0) {
        return 0.0;
    }
    (0.5 * (before - after) / curvature).clamp(-0.5, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds one 64 x 64 slice per entry of `shifts_mm`, with 1 mm pixels: a disc of 40 HU and
    /// radius 20 mm in air, its centre moved by `shifts_mm[t]` (y, x) in frame t. The edge is a
    /// 1 mm linear ramp, so sub-pixel shifts change the image.
    fn disc_series(shifts_mm: &[[f64; 2]]) -> Series {
        let n = 64;
        let mut data = Vec::with_capacity(shifts_mm.len() * n * n);
        for shift in shifts_mm {
            for y in 0..n {
                for x in 0..n {
                    let dy = y as f64 - 32.0 - shift[0];
                    let dx = x as f64 - 32.0 - shift[1];
                    let inside = (20.0 - (dy * dy + dx * dx).sqrt() + 0.5).clamp(0.0, 1.0);
                    data.push((-1000.0 + 1040.0 * inside) as f32);
                }
            }
        }
        Series {
            data,
            frames: shifts_mm.len(),
            shape: [1, n, n],
            dt_s: 1.0,
        }
    }

    #[test]
    fn still_series_has_no_motion() {
        let series = disc_series(&[[0.0, 0.0]; 4]);
        assert!(estimate_motion_mm(&series, [5.0, 1.0, 1.0]) < 1e-6);
    }

    #[test]
    fn integer_and_sub_pixel_shifts() {
        for (shift, expected) in [
            ([0.0, 3.0], 3.0),
            ([3.0, -2.0], 13f64.sqrt()),
            ([1.5, 0.0], 1.5),
        ] {
            let series = disc_series(&[[0.0, 0.0], shift, [0.0, 0.0]]);
            let found = estimate_motion_mm(&series, [5.0, 1.0, 1.0]);
            // 1 mm pixels are block-averaged by 2, so sub-pixel refinement does the last mm.
            assert!(
                (found - expected).abs() < 0.3,
                "shift {shift:?}: found {found} mm, expected {expected}"
            );
        }
    }

    #[test]
    fn largest_frame_shift_is_reported() {
        let series = disc_series(&[[0.0, 0.0], [0.0, 1.0], [0.0, 5.0], [0.0, 2.0]]);
        let found = estimate_motion_mm(&series, [5.0, 1.0, 1.0]);
        assert!((found - 5.0).abs() < 0.3, "found {found} mm");
    }

    #[test]
    fn enhancement_inside_the_head_is_not_motion() {
        // The disc's centre enhances by 300 HU in frame 1, as an artery would.
        let mut series = disc_series(&[[0.0, 0.0], [0.0, 0.0]]);
        let plane = 64 * 64;
        for y in 28..36 {
            for x in 20..24 {
                series.data[plane + y * 64 + x] += 300.0;
            }
        }
        assert!(estimate_motion_mm(&series, [5.0, 1.0, 1.0]) < 0.2);
    }

    #[test]
    fn parabola_vertex_of_symmetric_and_skewed_costs() {
        assert_eq!(parabola_vertex(1.0, 0.0, 1.0), 0.0);
        // Costs (x + 0.25)^2 at x = -1, 0, 1: the minimum is at -0.25.
        assert!((parabola_vertex(0.5625, 0.0625, 1.5625) + 0.25).abs() < 1e-12);
        assert_eq!(parabola_vertex(1.0, 1.0, 1.0), 0.0);
    }
}
