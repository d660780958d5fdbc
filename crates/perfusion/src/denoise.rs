//! Spatial (in-plane, mask-normalised Gaussian) and temporal (Gaussian) smoothing.
//!
//! Spatial smoothing is a normalised convolution: only voxels with weight 1 (brain tissue, no
//! vessel) contribute, and each output is divided by the smoothed weights, so bone, CSF and
//! arteries do not bleed into tissue curves. Temporal smoothing is a matrix that the
//! deconvolution folds into its pseudo-inverse, applied equally to the AIF and to tissue.

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::concentration::Series;

/// Returns a normalised Gaussian kernel of standard deviation `sigma` samples, truncated at
/// three sigma; `sigma <= 0` returns the identity kernel `[1]`.
pub fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    if !(sigma > 0.0) {
        return vec![1.0];
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let raw: Vec<f64> = (-radius..=radius)
        .map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    raw.iter().map(|w| (w / total) as f32).collect()
}

/// Convolves one `ny x nx` plane with separable kernels along y then x, ignoring samples outside
/// the plane (zero padding).
fn convolve_plane(
    plane: &[f32],
    ny: usize,
    nx: usize,
    ky: &[f32],
    kx: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let ry = (ky.len() / 2) as isize;
    let rx = (kx.len() / 2) as isize;

    for y in 0..ny {
        let row = &mut scratch[y * nx..(y + 1) * nx];
        row.fill(0.0);
        for (i, &w) in ky.iter().enumerate() {
            let sy = y as isize + i as isize - ry;
            if sy < 0 || sy >= ny as isize {
                continue;
            }
            let src = &plane[sy as usize * nx..(sy as usize + 1) * nx];
            for (r, &s) in row.iter_mut().zip(src) {
                *r += w * s;
            }
        }
    }

    // The x pass is written as shifted row updates, which vectorise.
    for y in 0..ny {
        let src = &scratch[y * nx..(y + 1) * nx];
        let dst = &mut out[y * nx..(y + 1) * nx];
        dst.fill(0.0);
        for (i, &w) in kx.iter().enumerate() {
            let shift = i as isize - rx;
            let magnitude = shift.unsigned_abs().min(nx);
            let len = nx - magnitude;
            let (d0, s0) = if shift >= 0 {
                (0, magnitude)
            } else {
                (magnitude, 0)
            };
            for (d, &s) in dst[d0..d0 + len].iter_mut().zip(&src[s0..s0 + len]) {
                *d += w * s;
            }
        }
    }
}

/// Smooths every frame in-plane with a Gaussian of `sigma_mm`, as a convolution normalised by
/// `weights` (1 for tissue that takes part, 0 otherwise). Only voxels with weight 1 change.
///
/// `spacing_yx_mm` is the in-plane pixel spacing (row spacing, column spacing).
pub fn smooth_in_plane(
    series: &mut Series,
    weights: &[bool],
    sigma_mm: f64,
    spacing_yx_mm: [f64; 2],
) {
    if !(sigma_mm > 0.0) {
        return;
    }
    let [nz, ny, nx] = series.shape;
    let plane = ny * nx;
    let ky = gaussian_kernel(sigma_mm / spacing_yx_mm[0]);
    let kx = gaussian_kernel(sigma_mm / spacing_yx_mm[1]);

    // Inputs outside the weighted pixels are zero, so convolving only the bounding box of the
    // weights (with zero padding) gives the same values inside it at a fraction of the cost.
    let boxes: Vec<Option<BoundingBox>> = (0..nz)
        .map(|z| BoundingBox::of(&weights[z * plane..(z + 1) * plane], ny, nx))
        .collect();
    let norms: Vec<Vec<f32>> = (0..nz)
        .into_par_iter()
        .map(|z| match &boxes[z] {
            Some(bounds) => {
                let w = &weights[z * plane..(z + 1) * plane];
                let ones = vec![1.0f32; plane];
                bounds.convolve(&ones, w, nx, &ky, &kx)
            }
            None => Vec::new(),
        })
        .collect();

    series
        .data
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(index, values)| {
            let z = index % nz;
            let Some(bounds) = &boxes[z] else {
                return;
            };
            let w = &weights[z * plane..(z + 1) * plane];
            let smoothed = bounds.convolve(values, w, nx, &ky, &kx);

            for y in bounds.y0..bounds.y1 {
                for x in bounds.x0..bounds.x1 {
                    let local = (y - bounds.y0) * bounds.width() + (x - bounds.x0);
                    let norm = norms[z][local];
                    if w[y * nx + x] && norm > 0.0 {
                        values[y * nx + x] = smoothed[local] / norm;
                    }
                }
            }
        });
}

/// Rows `y0..y1` and columns `x0..x1` of a plane.
struct BoundingBox {
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
}

impl BoundingBox {
    /// Returns the smallest box holding every true pixel of `mask`, or `None` when none is true.
    fn of(mask: &[bool], ny: usize, nx: usize) -> Option<Self> {
        let mut bounds: Option<Self> = None;
        for y in 0..ny {
            for x in 0..nx {
                if mask[y * nx + x] {
                    let b = bounds.get_or_insert(Self {
                        y0: y,
                        y1: y + 1,
                        x0: x,
                        x1: x + 1,
                    });
                    b.y0 = b.y0.min(y);
                    b.y1 = b.y1.max(y + 1);
                    b.x0 = b.x0.min(x);
                    b.x1 = b.x1.max(x + 1);
                }
            }
        }
        bounds
    }

    fn width(&self) -> usize {
        self.x1 - self.x0
    }

    /// Convolves the pixels of `values` where `mask` is true (others count as 0) inside the
    /// box, with zero padding at its edges. The result covers the box, row-major.
    fn convolve(
        &self,
        values: &[f32],
        mask: &[bool],
        nx: usize,
        ky: &[f32],
        kx: &[f32],
    ) -> Vec<f32> {
        let (h, w) = (self.y1 - self.y0, self.width());
        let mut local = vec![0.0f32; h * w];
        for y in self.y0..self.y1 {
            let row = &mut local[(y - self.y0) * w..(y - self.y0 + 1) * w];
            let source = &values[y * nx + self.x0..y * nx + self.x1];
            let inside = &mask[y * nx + self.x0..y * nx + self.x1];
            for ((l, &v), &m) in row.iter_mut().zip(source).zip(inside) {
                *l = if m { v } else { 0.0 };
            }
        }
        let mut scratch = vec![0.0f32; h * w];
        let mut out = vec![0.0f32; h * w];
        convolve_plane(&local, h, w, ky, kx, &mut scratch, &mut out);
        out
    }
}

/// Returns the `frames x frames` temporal smoothing matrix for a Gaussian of `sigma_frames`;
/// rows near the ends are renormalised over the frames that exist.
pub fn temporal_matrix(frames: usize, sigma_frames: f64) -> DMatrix<f64> {
    let kernel = gaussian_kernel(sigma_frames);
    let radius = (kernel.len() / 2) as isize;
    let mut matrix = DMatrix::<f64>::zeros(frames, frames);

    for t in 0..frames {
        let mut total = 0.0;
        for (i, &w) in kernel.iter().enumerate() {
            let s = t as isize + i as isize - radius;
            if s >= 0 && (s as usize) < frames {
                matrix[(t, s as usize)] = w as f64;
                total += w as f64;
            }
        }
        for s in 0..frames {
            matrix[(t, s)] /= total;
        }
    }
    matrix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sums_to_one() {
        let kernel = gaussian_kernel(1.0);
        assert_eq!(kernel.len(), 7);
        assert!((kernel.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // exp(-0.5) / (1 + 2 (e^-0.5 + e^-2 + e^-4.5)) = 0.2420
        assert!((kernel[4] - 0.2420).abs() < 1e-3);
        assert_eq!(gaussian_kernel(0.0), vec![1.0]);
    }

    #[test]
    fn in_plane_smoothing_ignores_masked_voxels() {
        // One frame, one slice 1x5: tissue 10, 20, 30 then a vessel of 500 and bone of 1000,
        // the last two with weight 0.
        let mut series = Series {
            data: vec![10.0, 20.0, 30.0, 500.0, 1000.0],
            frames: 1,
            shape: [1, 1, 5],
            dt_s: 1.0,
        };
        let weights = [true, true, true, false, false];
        smooth_in_plane(&mut series, &weights, 1.0, [1.0, 1.0]);

        // Masked voxels keep their values.
        assert_eq!(series.data[3], 500.0);
        assert_eq!(series.data[4], 1000.0);
        // The middle tissue voxel is symmetric: stays 20. The others are pulled towards 20.
        assert!((series.data[1] - 20.0).abs() < 1e-4);
        assert!(series.data[0] > 10.0);
        assert!(series.data[0] < 20.0);
        assert!(series.data[2] > 20.0);
        assert!(series.data[2] < 30.0);
    }

    #[test]
    fn constant_tissue_stays_constant() {
        let mut series = Series {
            data: vec![7.0; 2 * 16],
            frames: 2,
            shape: [1, 4, 4],
            dt_s: 1.0,
        };
        let mut weights = vec![true; 16];
        weights[5] = false;
        series.data[5] = 900.0;
        series.data[16 + 5] = 900.0;
        smooth_in_plane(&mut series, &weights, 1.5, [1.0, 1.0]);
        for (i, &v) in series.data.iter().enumerate() {
            let expected = if i % 16 == 5 { 900.0 } else { 7.0 };
            assert!((v - expected).abs() < 1e-4, "voxel {i}: {v}");
        }
    }

    #[test]
    fn temporal_matrix_rows_sum_to_one() {
        let matrix = temporal_matrix(5, 0.5);
        for t in 0..5 {
            let row: f64 = (0..5).map(|s| matrix[(t, s)]).sum();
            assert!((row - 1.0).abs() < 1e-6);
        }
        // Interior row of sigma 0.5 (radius 2): centre weight 1 / (1 + 2 e^-2 + 2 e^-8).
        assert!((matrix[(2, 2)] - 0.7866).abs() < 1e-3);
        assert_eq!(temporal_matrix(3, 0.0), DMatrix::identity(3, 3));
    }
}
