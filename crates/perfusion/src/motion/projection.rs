//! Slice-averaged head images that motion registration compares.
//!
//! A frame is reduced to one image: the mean over slices of HU clamped to `[-1000, 100]`, then
//! block-averaged to pixels of about 2 mm. The clamp keeps the air-to-scalp edge (about
//! 1000 HU) as the dominant structure and caps contrast enhancement, so the bolus passing
//! through vessels barely changes the image.

use crate::concentration::Series;
use crate::denoise::gaussian_kernel;

/// Lower and upper clamp of the projected HU values. The lower one is also the value of
/// samples outside the image.
pub(super) const AIR_HU: f32 = -1000.0;
const CLAMP_MIN_HU: f32 = AIR_HU;
const CLAMP_MAX_HU: f32 = 100.0;

/// Target pixel size of the projections, in mm.
const TARGET_PIXEL_MM: f64 = 2.0;

/// Projected values above this are inside the head in most slices.
const HEAD_HU: f32 = -500.0;

/// A projection image, row-major, with pixel centres at `(i + 0.5) * pixel_mm` from the
/// grid's corner.
pub(super) struct Projection {
    pub values: Vec<f32>,
    pub ny: usize,
    pub nx: usize,
    /// Pixel size `(y, x)` in mm.
    pub pixel_mm: [f64; 2],
}

/// Returns how many pixels of `spacing_mm` are averaged into one projection pixel.
pub(super) fn downsample_factor(spacing_mm: f64) -> usize {
    ((TARGET_PIXEL_MM / spacing_mm).round() as usize).max(1)
}

impl Projection {
    /// Projects frame `t` of `series` over slices and block-averages it by `factors` `(y, x)`.
    /// `spacing_mm` is the in-plane spacing `(y, x)`. Non-finite samples count as air.
    pub fn of_frame(series: &Series, t: usize, factors: [usize; 2], spacing_mm: [f64; 2]) -> Self {
        let [nz, ny, nx] = series.shape;
        let (out_y, out_x) = (ny.div_ceil(factors[0]), nx.div_ceil(factors[1]));
        let mut sums = vec![0.0f32; out_y * out_x];
        let mut counts = vec![0u32; out_y * out_x];
        let frame = series.frame(t);

        for z in 0..nz {
            for y in 0..ny {
                let row = &frame[(z * ny + y) * nx..(z * ny + y + 1) * nx];
                let out_row = (y / factors[0]) * out_x;
                for (x, &value) in row.iter().enumerate() {
                    let clamped = if value.is_finite() {
                        value.clamp(CLAMP_MIN_HU, CLAMP_MAX_HU)
                    } else {
                        CLAMP_MIN_HU
                    };
                    sums[out_row + x / factors[1]] += clamped;
                    counts[out_row + x / factors[1]] += 1;
                }
            }
        }
        Self::from_sums(
            &sums,
            &counts,
            out_y,
            out_x,
            [spacing_mm[0] * factors[0] as f64, spacing_mm[1] * factors[1] as f64],
        )
    }

    /// Returns this image block-averaged by 2 along both axes.
    pub fn halve(&self) -> Self {
        let (ny, nx) = (self.ny, self.nx);
        let (out_y, out_x) = (ny.div_ceil(2), nx.div_ceil(2));
        let mut sums = vec![0.0f32; out_y * out_x];
        let mut counts = vec![0u32; out_y * out_x];
        for y in 0..ny {
            for x in 0..nx {
                sums[(y / 2) * out_x + x / 2] += self.values[y * nx + x];
                counts[(y / 2) * out_x + x / 2] += 1;
            }
        }
        Self::from_sums(
            &sums,
            &counts,
            out_y,
            out_x,
            [self.pixel_mm[0] * 2.0, self.pixel_mm[1] * 2.0],
        )
    }

    fn from_sums(sums: &[f32], counts: &[u32], ny: usize, nx: usize, pixel_mm: [f64; 2]) -> Self {
        let values = sums
            .iter()
            .zip(counts)
            .map(|(&s, &c)| s / c.max(1) as f32)
            .collect();
        Self {
            values,
            ny,
            nx,
            pixel_mm,
        }
    }

    /// Returns this image convolved with a Gaussian of `sigma` pixels along both axes, with
    /// edge values repeated beyond the border.
    pub fn smoothed(&self, sigma: f64) -> Self {
        let kernel = gaussian_kernel(sigma);
        let along_x = convolve_axis(&self.values, self.ny, self.nx, &kernel, [0, 1]);
        let values = convolve_axis(&along_x, self.ny, self.nx, &kernel, [1, 0]);
        Self {
            values,
            ny: self.ny,
            nx: self.nx,
            pixel_mm: self.pixel_mm,
        }
    }

    /// Returns the position in mm of pixel `(y, x)`'s centre.
    pub fn position_mm(&self, y: usize, x: usize) -> [f64; 2] {
        [
            (y as f64 + 0.5) * self.pixel_mm[0],
            (x as f64 + 0.5) * self.pixel_mm[1],
        ]
    }

    /// Returns the bilinear sample at `position_mm`, or `None` outside the pixel centres.
    pub fn sample_mm(&self, position_mm: [f64; 2]) -> Option<f32> {
        sample_bilinear(
            &self.values,
            self.ny,
            self.nx,
            position_mm[0] / self.pixel_mm[0] - 0.5,
            position_mm[1] / self.pixel_mm[1] - 0.5,
        )
    }

    /// Returns the centres (mm) of the pixels inside the head, or of every pixel when none is.
    pub fn head_points_mm(&self) -> Vec<[f64; 2]> {
        let inside: Vec<[f64; 2]> = (0..self.ny)
            .flat_map(|y| (0..self.nx).map(move |x| (y, x)))
            .filter(|&(y, x)| self.values[y * self.nx + x] > HEAD_HU)
            .map(|(y, x)| self.position_mm(y, x))
            .collect();
        if inside.is_empty() {
            (0..self.ny)
                .flat_map(|y| (0..self.nx).map(move |x| (y, x)))
                .map(|(y, x)| self.position_mm(y, x))
                .collect()
        } else {
            inside
        }
    }
}

/// Convolves the row-major `ny x nx` plane with `kernel` along the axis `step` `(y, x)` points
/// at, repeating edge values beyond the border.
fn convolve_axis(plane: &[f32], ny: usize, nx: usize, kernel: &[f32], step: [isize; 2]) -> Vec<f32> {
    let radius = (kernel.len() / 2) as isize;
    let (ny, nx) = (ny as isize, nx as isize);
    let mut out = vec![0.0f32; plane.len()];

    for y in 0..ny {
        for x in 0..nx {
            let mut sum = 0.0f32;
            for (i, &weight) in kernel.iter().enumerate() {
                let offset = i as isize - radius;
                let sy = (y + offset * step[0]).clamp(0, ny - 1);
                let sx = (x + offset * step[1]).clamp(0, nx - 1);
                sum += weight * plane[(sy * nx + sx) as usize];
            }
            out[(y * nx + x) as usize] = sum;
        }
    }
    out
}

/// Samples the row-major `ny x nx` plane bilinearly at pixel coordinates `(y, x)` (pixel
/// centres at integers), or returns `None` outside `[0, n - 1]` along either axis.
pub(super) fn sample_bilinear(plane: &[f32], ny: usize, nx: usize, y: f64, x: f64) -> Option<f32> {
    if ny == 0 || nx == 0 {
        return None;
    }
    let (limit_y, limit_x) = ((ny - 1) as f64, (nx - 1) as f64);
    if !(0.0..=limit_y).contains(&y) || !(0.0..=limit_x).contains(&x) {
        return None;
    }
    let y0 = (y.floor() as usize).min(ny.saturating_sub(2));
    let x0 = (x.floor() as usize).min(nx.saturating_sub(2));
    let (y1, x1) = ((y0 + 1).min(ny - 1), (x0 + 1).min(nx - 1));
    let (fy, fx) = ((y - y0 as f64) as f32, (x - x0 as f64) as f32);

    let top = plane[y0 * nx + x0] * (1.0 - fx) + plane[y0 * nx + x1] * fx;
    let bottom = plane[y1 * nx + x0] * (1.0 - fx) + plane[y1 * nx + x1] * fx;
    Some(top * (1.0 - fy) + bottom * fy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_sample_between_pixels_and_outside() {
        // 2 x 3 plane: rows [0, 1, 2] and [10, 11, 12].
        let plane = [0.0, 1.0, 2.0, 10.0, 11.0, 12.0];
        assert_eq!(sample_bilinear(&plane, 2, 3, 0.0, 0.0), Some(0.0));
        assert_eq!(sample_bilinear(&plane, 2, 3, 1.0, 2.0), Some(12.0));
        assert_eq!(sample_bilinear(&plane, 2, 3, 0.5, 1.5), Some(6.5));
        assert_eq!(sample_bilinear(&plane, 2, 3, -0.1, 1.0), None);
        assert_eq!(sample_bilinear(&plane, 2, 3, 0.0, 2.01), None);
    }

    #[test]
    fn smoothing_keeps_flat_images_and_spreads_a_spike() {
        let flat = Projection {
            values: vec![40.0; 25],
            ny: 5,
            nx: 5,
            pixel_mm: [2.0, 2.0],
        };
        assert!(flat.smoothed(1.0).values.iter().all(|&v| (v - 40.0).abs() < 1e-4));

        // A spike of 1 in the centre. Sigma 0.5 gives the taps 0.0003, 0.1065, 0.7866, 0.1065,
        // 0.0003, so the centre keeps 0.7866 squared and the image still sums to 1.
        let mut values = vec![0.0; 25];
        values[12] = 1.0;
        let spike = Projection {
            values,
            ny: 5,
            nx: 5,
            pixel_mm: [2.0, 2.0],
        };
        let smoothed = spike.smoothed(0.5);
        assert!((smoothed.values[12] - 0.6187).abs() < 1e-4);
        assert!((smoothed.values.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn empty_plane_has_no_sample() {
        assert_eq!(sample_bilinear(&[], 0, 0, 0.0, 0.0), None);
    }

    #[test]
    fn halving_keeps_pixel_centres_in_mm() {
        let projection = Projection {
            values: vec![0.0; 16],
            ny: 4,
            nx: 4,
            pixel_mm: [1.0, 2.0],
        };
        let half = projection.halve();
        // Pixels 0 and 1 (centres 0.5 and 1.5 mm) average into one centred at 1 mm.
        assert_eq!(half.position_mm(0, 0), [1.0, 2.0]);
        assert_eq!(half.pixel_mm, [2.0, 4.0]);
    }
}
