//! In-plane head motion between frames: rigid registration of every frame to the first, and
//! correction by resampling the moved frames.
//!
//! Each frame is reduced to a slice-averaged head image ([`projection`]), and a translation and
//! a yaw about the grid's centre are searched that map the first frame's image onto it
//! ([`search`]). [`correct`] then resamples each moved frame bilinearly at the positions the
//! first frame's voxels moved to, so that every voxel's curve follows the same tissue. Samples
//! that fall outside the moved frame become NaN, which takes the voxel out of the brain mask.
//!
//! NOTE: through-plane (z) motion and tilts out of the slice plane are neither measured nor
//! corrected. With 5 mm slices they change which tissue a slice holds, and no in-plane
//! resampling can undo that.

mod projection;
mod search;

use rayon::prelude::*;

use crate::concentration::Series;
use projection::{downsample_factor, sample_bilinear, Projection};
use search::Pyramid;

pub use search::{MAX_SHIFT_MM, MAX_YAW_DEG};

/// Frames that move no point of the head further than this (mm) are left as they are: the
/// interpolation would blur them more than the motion does.
pub const MIN_CORRECTED_MM: f64 = 0.2;

/// Rigid in-plane motion of one frame relative to the first: the first frame's point `p` (mm
/// from the grid's corner, `(y, x)`) is found at `R(yaw) (p - c) + c + shift` in this frame,
/// where `c` is the grid's centre.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FrameMotion {
    pub shift_mm: [f64; 2],
    pub yaw_deg: f64,
}

impl FrameMotion {
    /// Returns the transform about `centre_mm`.
    pub(crate) fn transform(&self, centre_mm: [f64; 2]) -> Transform {
        let (sin, cos) = self.yaw_deg.to_radians().sin_cos();
        Transform {
            rotation: [[cos, -sin], [sin, cos]],
            offset: [
                centre_mm[0] + self.shift_mm[0] - cos * centre_mm[0] + sin * centre_mm[1],
                centre_mm[1] + self.shift_mm[1] - sin * centre_mm[0] - cos * centre_mm[1],
            ],
        }
    }

    /// Returns this motion with parameter `index` (yaw, y shift, x shift) changed by `delta`.
    fn nudged(&self, index: usize, delta: f64) -> Self {
        let mut moved = *self;
        match index {
            0 => moved.yaw_deg += delta,
            1 => moved.shift_mm[0] += delta,
            _ => moved.shift_mm[1] += delta,
        }
        moved
    }
}

/// An affine map `q = rotation p + offset` of in-plane positions in mm.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transform {
    rotation: [[f64; 2]; 2],
    offset: [f64; 2],
}

impl Transform {
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let r = &self.rotation;
        [
            r[0][0] * p[0] + r[0][1] * p[1] + self.offset[0],
            r[1][0] * p[0] + r[1][1] * p[1] + self.offset[1],
        ]
    }

    #[cfg(test)]
    pub fn inverse(&self) -> Self {
        // The rotation is orthonormal: its inverse is its transpose.
        let r = &self.rotation;
        let rotation = [[r[0][0], r[1][0]], [r[0][1], r[1][1]]];
        let o = self.offset;
        let offset = [
            -(rotation[0][0] * o[0] + rotation[0][1] * o[1]),
            -(rotation[1][0] * o[0] + rotation[1][1] * o[1]),
        ];
        Self { rotation, offset }
    }
}

/// The motion of every frame and how far it moved the head.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionEstimate {
    /// One entry per frame; the first is the identity.
    pub frames: Vec<FrameMotion>,
    /// Per frame, the largest distance (mm) any point of the head moved from the first frame.
    pub displacement_mm: Vec<f64>,
}

impl MotionEstimate {
    /// Returns the largest displacement of any frame, in mm; 0 without frames.
    pub fn max_displacement_mm(&self) -> f64 {
        self.displacement_mm.iter().copied().fold(0.0, f64::max)
    }

    /// Returns the largest yaw of any frame, in degrees, by magnitude.
    pub fn max_yaw_deg(&self) -> f64 {
        self.frames.iter().map(|m| m.yaw_deg.abs()).fold(0.0, f64::max)
    }

    /// Returns how many frames [`correct`] resamples.
    pub fn moved_frames(&self) -> usize {
        self.displacement_mm
            .iter()
            .filter(|&&d| d > MIN_CORRECTED_MM)
            .count()
    }
}

/// Returns the grid's centre `(y, x)` in mm from its corner.
fn centre_mm(series: &Series, spacing_mm: [f64; 3]) -> [f64; 2] {
    let [_, ny, nx] = series.shape;
    [ny as f64 * spacing_mm[1] / 2.0, nx as f64 * spacing_mm[2] / 2.0]
}

/// Registers every frame of `series` to the first. `spacing_mm` is `(z, y, x)`.
pub fn estimate(series: &Series, spacing_mm: [f64; 3]) -> MotionEstimate {
    if series.frames == 0 {
        return MotionEstimate {
            frames: Vec::new(),
            displacement_mm: Vec::new(),
        };
    }
    let factors = [downsample_factor(spacing_mm[1]), downsample_factor(spacing_mm[2])];
    let in_plane = [spacing_mm[1], spacing_mm[2]];
    let centre = centre_mm(series, spacing_mm);
    let reference = Pyramid::new(Projection::of_frame(series, 0, factors, in_plane));
    let head = reference.half.head_points_mm();

    let frames: Vec<FrameMotion> = (0..series.frames)
        .into_par_iter()
        .map(|t| {
            if t == 0 {
                return FrameMotion::default();
            }
            let moving = Pyramid::new(Projection::of_frame(series, t, factors, in_plane));
            search::register(&reference, &moving, centre)
        })
        .collect();
    let displacement_mm = frames
        .iter()
        .map(|motion| largest_displacement(motion, centre, &head))
        .collect();
    MotionEstimate {
        frames,
        displacement_mm,
    }
}

/// Returns the largest distance by which `motion` moves any of `points` (mm).
fn largest_displacement(motion: &FrameMotion, centre_mm: [f64; 2], points: &[[f64; 2]]) -> f64 {
    let transform = motion.transform(centre_mm);
    points
        .iter()
        .map(|&p| {
            let q = transform.apply(p);
            (q[0] - p[0]).hypot(q[1] - p[1])
        })
        .fold(0.0, f64::max)
}

/// Returns the largest in-plane displacement (mm) of any point of the head in any frame from
/// the first frame. A single frame returns 0.
pub fn estimate_motion_mm(series: &Series, spacing_mm: [f64; 3]) -> f64 {
    estimate(series, spacing_mm).max_displacement_mm()
}

/// Resamples every frame that `estimate` found moved by more than [`MIN_CORRECTED_MM`] onto the
/// first frame's grid, and returns how many frames it resampled.
pub fn correct(series: &mut Series, estimate: &MotionEstimate, spacing_mm: [f64; 3]) -> usize {
    let centre = centre_mm(series, spacing_mm);
    let [nz, ny, nx] = series.shape;
    let voxels = series.voxels();
    let plane = ny * nx;
    let moved = estimate.moved_frames();
    if moved == 0 || voxels == 0 {
        return 0;
    }

    series
        .data
        .par_chunks_mut(voxels)
        .zip(&estimate.frames)
        .zip(&estimate.displacement_mm)
        .filter(|(_, &displacement)| displacement > MIN_CORRECTED_MM)
        .for_each(|((frame, motion), _)| {
            let transform = motion.transform(centre);
            for z in 0..nz {
                let slice = &mut frame[z * plane..(z + 1) * plane];
                let source = slice.to_vec();
                for y in 0..ny {
                    for x in 0..nx {
                        let p = [
                            (y as f64 + 0.5) * spacing_mm[1],
                            (x as f64 + 0.5) * spacing_mm[2],
                        ];
                        let q = transform.apply(p);
                        slice[y * nx + x] = sample_bilinear(
                            &source,
                            ny,
                            nx,
                            q[0] / spacing_mm[1] - 0.5,
                            q[1] / spacing_mm[2] - 0.5,
                        )
                        .unwrap_or(f32::NAN);
                    }
                }
            }
        });
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds one 64 x 64 slice per entry of `motions`, with 1 mm pixels: an ellipse of 40 HU
    /// (semi-axes 20 and 14 mm) in air with a 140 HU block off its centre, moved by the entry.
    /// Edges are 1 mm linear ramps, so sub-pixel motion changes the image.
    fn head_series(motions: &[FrameMotion]) -> Series {
        let n = 64;
        let centre = [32.0, 32.0];
        let mut data = Vec::with_capacity(motions.len() * n * n);
        for motion in motions {
            let inverse = motion.transform(centre).inverse();
            for y in 0..n {
                for x in 0..n {
                    let [py, px] = inverse.apply([y as f64 + 0.5, x as f64 + 0.5]);
                    data.push(head_value(py - centre[0], px - centre[1]));
                }
            }
        }
        Series {
            data,
            frames: motions.len(),
            shape: [1, n, n],
            dt_s: 1.0,
        }
    }

    /// Returns the test head's HU at `(dy, dx)` mm from its centre.
    fn head_value(dy: f64, dx: f64) -> f32 {
        let radius = ((dy / 14.0).powi(2) + (dx / 20.0).powi(2)).sqrt() * 17.0;
        let inside = (17.0 - radius + 0.5).clamp(0.0, 1.0);
        let block = (4.0 - (dy - 5.0).abs()).min(4.0 - (dx - 8.0).abs()) + 0.5;
        (-1000.0 + 1040.0 * inside + 100.0 * block.clamp(0.0, 1.0) * inside) as f32
    }

    fn shift(dy: f64, dx: f64) -> FrameMotion {
        FrameMotion {
            shift_mm: [dy, dx],
            yaw_deg: 0.0,
        }
    }

    #[test]
    fn still_series_has_no_motion() {
        let series = head_series(&[FrameMotion::default(); 4]);
        assert!(estimate_motion_mm(&series, [5.0, 1.0, 1.0]) < 1e-6);
    }

    #[test]
    fn integer_and_sub_pixel_shifts() {
        for (dy, dx) in [(0.0, 3.0), (3.0, -2.0), (1.5, 0.0)] {
            let series = head_series(&[FrameMotion::default(), shift(dy, dx), FrameMotion::default()]);
            let found = estimate_motion_mm(&series, [5.0, 1.0, 1.0]);
            let expected = f64::hypot(dy, dx);
            assert!(
                (found - expected).abs() < 0.3,
                "shift ({dy}, {dx}): found {found} mm, expected {expected}"
            );
        }
    }

    #[test]
    fn yaw_displaces_head_rim() {
        let turned = FrameMotion {
            shift_mm: [0.0, 0.0],
            yaw_deg: 4.0,
        };
        let series = head_series(&[FrameMotion::default(), turned]);
        let estimate = estimate(&series, [5.0, 1.0, 1.0]);
        assert!((estimate.frames[1].yaw_deg - 4.0).abs() < 0.5, "{:?}", estimate.frames[1]);
        // The projection's head pixels reach about 20 mm from the centre.
        let rim = 20.0 * 4f64.to_radians();
        let found = estimate.max_displacement_mm();
        assert!((found - rim).abs() < 0.5, "displacement {found} mm, rim {rim} mm");
    }

    #[test]
    fn largest_frame_motion_is_reported() {
        let series = head_series(&[
            FrameMotion::default(),
            shift(0.0, 1.0),
            shift(0.0, 5.0),
            shift(0.0, 2.0),
        ]);
        let found = estimate_motion_mm(&series, [5.0, 1.0, 1.0]);
        assert!((found - 5.0).abs() < 0.3, "found {found} mm");
    }

    #[test]
    fn enhancement_inside_the_head_is_not_motion() {
        // The head's centre enhances by 300 HU in frame 1, as an artery would.
        let mut series = head_series(&[FrameMotion::default(); 2]);
        let plane = 64 * 64;
        for y in 28..36 {
            for x in 20..24 {
                series.data[plane + y * 64 + x] += 300.0;
            }
        }
        assert!(estimate_motion_mm(&series, [5.0, 1.0, 1.0]) < 0.2);
    }

    #[test]
    fn correction_undoes_shift_and_yaw() {
        let moved = FrameMotion {
            shift_mm: [2.5, -1.5],
            yaw_deg: 3.0,
        };
        let mut series = head_series(&[FrameMotion::default(), moved, shift(0.05, 0.0)]);
        let still = series.frame(0).to_vec();
        let before = mean_absolute_difference(&still, series.frame(1));

        let estimate = estimate(&series, [5.0, 1.0, 1.0]);
        let corrected = correct(&mut series, &estimate, [5.0, 1.0, 1.0]);

        // The 0.05 mm frame is under the correction limit and stays as it was.
        assert_eq!(corrected, 1);
        let after = mean_absolute_difference(&still, series.frame(1));
        assert!(after < before / 5.0, "mean |difference| {before} HU before, {after} HU after");
    }

    /// Mean absolute difference over the voxels finite in both.
    fn mean_absolute_difference(a: &[f32], b: &[f32]) -> f64 {
        let pairs: Vec<f64> = a
            .iter()
            .zip(b)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (x - y).abs() as f64)
            .collect();
        pairs.iter().sum::<f64>() / pairs.len() as f64
    }

    #[test]
    fn transform_and_inverse_round_trip() {
        let motion = FrameMotion {
            shift_mm: [1.0, -2.0],
            yaw_deg: 7.0,
        };
        let transform = motion.transform([10.0, 20.0]);
        let back = transform.inverse().apply(transform.apply([3.0, 4.0]));
        assert!((back[0] - 3.0).abs() < 1e-12);
        assert!((back[1] - 4.0).abs() < 1e-12);
        // The centre only moves by the shift.
        let centre = transform.apply([10.0, 20.0]);
        assert!((centre[0] - 11.0).abs() < 1e-12);
        assert!((centre[1] - 18.0).abs() < 1e-12);
    }
}
