//! Rigid registration of one projection to the reference projection.
//!
//! The cost is the mean squared difference over all reference pixels, where a moved position
//! outside the moving image reads as air. Scoring only the overlap would let a motion win by
//! pushing a difference (a vessel enhancing at the image's edge) out of the overlap. The search
//! runs coarse to fine:
//!
//! 1. every integer shift within [`MAX_SHIFT_MM`] on images of half the size, then the
//!    neighbourhood of the best one at full size;
//! 2. yaw angles in whole degrees within [`MAX_YAW_DEG`] at that shift;
//! 3. a pattern search over yaw and both shifts: each parameter is nudged up and down by its
//!    step, an improvement is kept, and the steps are halved when no nudge helps. It runs on
//!    the half-size images first, then at full size with smaller steps.
//!
//! A motion is kept only when it explains most of the difference between the two images: the
//! cost without motion must be at least [`SIGNIFICANCE_RATIO`] times the cost with it. Without
//! that test, an image with no edges (a test object with no air around it) lets the search fit
//! the noise, and a spurious yaw moves the grid's corners by millimetres.

use super::projection::{Projection, AIR_HU};
use super::FrameMotion;

/// Largest in-plane shift searched, in mm. A larger motion is reported as about this size.
pub const MAX_SHIFT_MM: f64 = 16.0;

/// Largest yaw searched, in degrees.
pub const MAX_YAW_DEG: f64 = 10.0;

/// Pixels searched around twice the coarse integer shift at full size.
const REFINE_RADIUS: isize = 2;

/// The pattern search stops when every step is below these, in degrees and in pixels.
const MIN_YAW_STEP_DEG: f64 = 0.01;
const MIN_SHIFT_STEP_PIXELS: f64 = 0.01;

/// How many times larger the cost without motion must be than the cost with the found motion
/// for the motion to be kept. Between two frames of a still head the two costs differ only by
/// noise. A head that moved leaves its 1000 HU edge misaligned, which dominates the cost.
pub const SIGNIFICANCE_RATIO: f64 = 2.0;

/// Upper bound on cost evaluations in one pattern search.
const MAX_EVALUATIONS: usize = 400;

/// Gaussian smoothing (pixels) of both images of a [`Pyramid`]. Bilinear interpolation
/// flattens a sharp edge more the further a sample falls from the pixel centres, which biases
/// an unsmoothed cost towards shifts of whole pixels and towards no rotation at all.
const SMOOTHING_PIXELS: f64 = 1.0;

/// The images of one frame at full and at half size, smoothed.
pub(super) struct Pyramid {
    pub full: Projection,
    pub half: Projection,
}

impl Pyramid {
    pub fn new(full: Projection) -> Self {
        let half = full.halve().smoothed(SMOOTHING_PIXELS);
        let full = full.smoothed(SMOOTHING_PIXELS);
        Self { full, half }
    }
}

/// Returns the rigid motion that best maps `reference` onto `moving`, rotating about
/// `centre_mm`.
pub(super) fn register(reference: &Pyramid, moving: &Pyramid, centre_mm: [f64; 2]) -> FrameMotion {
    let shift = integer_shift(reference, moving);
    let mut motion = FrameMotion {
        shift_mm: [
            shift[0] as f64 * reference.full.pixel_mm[0],
            shift[1] as f64 * reference.full.pixel_mm[1],
        ],
        yaw_deg: 0.0,
    };

    let steps = (2.0 * MAX_YAW_DEG) as usize;
    let scan = (0..=steps).map(|i| -MAX_YAW_DEG + i as f64);
    let mut best = f64::INFINITY;
    for yaw_deg in scan {
        let candidate = FrameMotion { yaw_deg, ..motion };
        let cost = rigid_cost(&reference.half, &moving.half, &candidate, centre_mm);
        if cost < best {
            best = cost;
            motion = candidate;
        }
    }

    let motion = pattern_search(&reference.half, &moving.half, motion, centre_mm, 0.5, 0.5);
    let motion = pattern_search(&reference.full, &moving.full, motion, centre_mm, 0.25, 0.25);

    let still = FrameMotion::default();
    let cost_still = rigid_cost(&reference.full, &moving.full, &still, centre_mm);
    let cost_moved = rigid_cost(&reference.full, &moving.full, &motion, centre_mm);
    if cost_still >= SIGNIFICANCE_RATIO * cost_moved {
        motion
    } else {
        still
    }
}

/// Returns the integer pixel shift `(dy, dx)` at full size with the lowest cost:
/// `moving(y + dy, x + dx) ~ reference(y, x)`.
fn integer_shift(reference: &Pyramid, moving: &Pyramid) -> [isize; 2] {
    let radius = [
        (MAX_SHIFT_MM / reference.full.pixel_mm[0]).ceil() as isize,
        (MAX_SHIFT_MM / reference.full.pixel_mm[1]).ceil() as isize,
    ];
    let coarse_radius = [(radius[0] + 1) / 2, (radius[1] + 1) / 2];
    let coarse = best_shift(&reference.half, &moving.half, [0, 0], coarse_radius);
    best_shift(
        &reference.full,
        &moving.full,
        [2 * coarse[0], 2 * coarse[1]],
        [REFINE_RADIUS; 2],
    )
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
            let cost = shifted_cost(reference, moving, dy, dx);
            if cost < best.0 {
                best = (cost, [dy, dx]);
            }
        }
    }
    best.1
}

/// Returns the mean of `(moving(y + dy, x + dx) - reference(y, x))^2` over the overlap, or
/// infinity when the images do not overlap.
fn shifted_cost(reference: &Projection, moving: &Projection, dy: isize, dx: isize) -> f64 {
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

/// Returns the mean of `(moving(T(p)) - reference(p))^2` over the reference pixels `p`, with
/// air where `T(p)` lies outside `moving`.
fn rigid_cost(
    reference: &Projection,
    moving: &Projection,
    motion: &FrameMotion,
    centre_mm: [f64; 2],
) -> f64 {
    let transform = motion.transform(centre_mm);
    let mut total = 0.0f64;
    for y in 0..reference.ny {
        let mut row = 0.0f32;
        for x in 0..reference.nx {
            let p = reference.position_mm(y, x);
            let value = moving.sample_mm(transform.apply(p)).unwrap_or(AIR_HU);
            let difference = value - reference.values[y * reference.nx + x];
            row += difference * difference;
        }
        total += row as f64;
    }
    total / reference.values.len().max(1) as f64
}

/// Refines `start` by a pattern search over yaw (first step `yaw_step_deg`) and the shifts
/// (first step `shift_step_pixels` of this image's pixels).
fn pattern_search(
    reference: &Projection,
    moving: &Projection,
    start: FrameMotion,
    centre_mm: [f64; 2],
    yaw_step_deg: f64,
    shift_step_pixels: f64,
) -> FrameMotion {
    let cost = |m: &FrameMotion| rigid_cost(reference, moving, m, centre_mm);
    let mut best = start;
    let mut best_cost = cost(&best);
    let mut steps = [
        yaw_step_deg,
        shift_step_pixels * reference.pixel_mm[0],
        shift_step_pixels * reference.pixel_mm[1],
    ];
    let minimum = [
        MIN_YAW_STEP_DEG,
        MIN_SHIFT_STEP_PIXELS * reference.pixel_mm[0],
        MIN_SHIFT_STEP_PIXELS * reference.pixel_mm[1],
    ];
    let mut evaluations = 1;

    while evaluations < MAX_EVALUATIONS && steps.iter().zip(&minimum).any(|(s, m)| s >= m) {
        let mut improved = false;
        for (parameter, &step) in steps.iter().enumerate() {
            for sign in [1.0, -1.0] {
                let candidate = best.nudged(parameter, sign * step);
                let candidate_cost = cost(&candidate);
                evaluations += 1;
                if candidate_cost < best_cost {
                    best = candidate;
                    best_cost = candidate_cost;
                    improved = true;
                    break;
                }
            }
        }
        if !improved {
            steps.iter_mut().for_each(|s| *s *= 0.5);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns a 48 x 48 image of 2 mm pixels: an ellipse (semi-axes 30 and 20 mm) of 40 HU in air
    /// with a 100 HU square off its centre, so that a rotation changes the image. The edges are
    /// 2 mm linear ramps. `motion` moves the head: the image at `q` shows the head at
    /// `T^-1(q)`.
    fn head(motion: &FrameMotion) -> Projection {
        let n = 48;
        let pixel = 2.0;
        let centre = [n as f64, n as f64];
        let inverse = motion.transform(centre).inverse();
        let mut values = Vec::with_capacity(n * n);
        for y in 0..n {
            for x in 0..n {
                let q = [(y as f64 + 0.5) * pixel, (x as f64 + 0.5) * pixel];
                let [py, px] = inverse.apply(q);
                let (dy, dx) = (py - centre[0], px - centre[1]);
                let radius = ((dy / 20.0).powi(2) + (dx / 30.0).powi(2)).sqrt() * 25.0;
                let inside = ((25.0 - radius) / 2.0 + 0.5).clamp(0.0, 1.0);
                let square = ((6.0 - (dy - 8.0).abs()).min(6.0 - (dx - 12.0).abs()) / 2.0 + 0.5)
                    .clamp(0.0, 1.0);
                values.push((-1000.0 + 1040.0 * inside + 60.0 * square * inside) as f32);
            }
        }
        Projection {
            values,
            ny: n,
            nx: n,
            pixel_mm: [pixel, pixel],
        }
    }

    #[test]
    fn recovers_shift_and_yaw() {
        let reference = Pyramid::new(head(&FrameMotion::default()));
        for truth in [
            FrameMotion { shift_mm: [3.0, -2.0], yaw_deg: 0.0 },
            FrameMotion { shift_mm: [0.0, 0.0], yaw_deg: 3.0 },
            FrameMotion { shift_mm: [-4.5, 1.2], yaw_deg: -2.0 },
        ] {
            let moving = Pyramid::new(head(&truth));
            let found = register(&reference, &moving, [48.0, 48.0]);
            let message = format!("truth {truth:?}, found {found:?}");
            assert!((found.yaw_deg - truth.yaw_deg).abs() < 0.3, "{message}");
            assert!((found.shift_mm[0] - truth.shift_mm[0]).abs() < 0.3, "{message}");
            assert!((found.shift_mm[1] - truth.shift_mm[1]).abs() < 0.3, "{message}");
        }
    }

    #[test]
    fn noise_without_edges_is_not_motion() {
        // Two frames of the same flat 40 HU object filling the image, with different noise.
        let noise = |seed: u32| {
            let mut state = seed;
            let values = (0..48 * 48)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    40.0 + (state >> 16) as f32 / 65536.0 * 6.0 - 3.0
                })
                .collect();
            Projection {
                values,
                ny: 48,
                nx: 48,
                pixel_mm: [2.0, 2.0],
            }
        };
        let found = register(&Pyramid::new(noise(1)), &Pyramid::new(noise(2)), [48.0, 48.0]);
        assert_eq!(found, FrameMotion::default());
    }

    #[test]
    fn shifted_cost_zero_at_true_shift() {
        let reference = head(&FrameMotion::default());
        let moving = head(&FrameMotion { shift_mm: [4.0, -6.0], yaw_deg: 0.0 });
        assert!(shifted_cost(&reference, &moving, 2, -3) < 1e-6);
        assert!(shifted_cost(&reference, &moving, 0, 0) > 100.0);
    }
}
