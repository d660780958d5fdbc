//! The dynamic series as a frame-major matrix, its uniform time grid, and HU to ΔHU conversion.
//!
//! Iodine enhancement is linear in concentration with the same constant for artery and tissue,
//! so every map ratio works directly in ΔHU (HU minus the pre-contrast baseline).

use ndarray::Array3;
use rayon::prelude::*;

use crate::baseline::BaselineWindow;
use crate::error::PerfusionError;

/// Relative spread of frame intervals up to which the sampling counts as uniform.
const UNIFORM_TOLERANCE: f64 = 0.05;

/// Finest grid step used when resampling irregular acquisitions, in seconds.
const MIN_RESAMPLED_STEP_S: f64 = 0.5;

/// Most frames on the analysis grid; the circulant has twice as many rows and columns, and its
/// SVD grows with the cube of that.
pub const MAX_ANALYSIS_FRAMES: usize = 256;

/// A dynamic series stored frame-major: `data[t * voxels + v]`, voxels in `(z, y, x)` order.
#[derive(Debug, Clone)]
pub struct Series {
    pub data: Vec<f32>,
    pub frames: usize,
    pub shape: [usize; 3],
    /// Uniform frame interval in seconds.
    pub dt_s: f64,
}

impl Series {
    /// Returns the number of voxels per frame.
    pub fn voxels(&self) -> usize {
        self.shape.iter().product()
    }

    /// Returns frame `t` as a slice of `voxels()` values.
    pub fn frame(&self, t: usize) -> &[f32] {
        let n = self.voxels();
        &self.data[t * n..(t + 1) * n]
    }

    /// Returns the time curve of voxel `v`.
    pub fn curve(&self, v: usize) -> Vec<f64> {
        let n = self.voxels();
        (0..self.frames)
            .map(|t| self.data[t * n + v] as f64)
            .collect()
    }

    /// Returns the mean of each frame over the voxels where `select` is true.
    pub fn mean_curve(&self, select: &[bool]) -> Vec<f64> {
        let count = select.iter().filter(|&&s| s).count().max(1) as f64;
        (0..self.frames)
            .map(|t| {
                let frame = self.frame(t);
                let sum: f64 = frame
                    .iter()
                    .zip(select)
                    .filter(|(_, &s)| s)
                    .map(|(&value, _)| value as f64)
                    .sum();
                sum / count
            })
            .collect()
    }
}

/// Checks frame times and returns the uniform step to analyse on, and whether the series
/// must be resampled onto it.
pub fn uniform_step(times_s: &[f64]) -> Result<(f64, bool), PerfusionError> {
    for (index, &time_s) in times_s.iter().enumerate() {
        if !time_s.is_finite() {
            return Err(PerfusionError::NonFiniteFrameTime { index, time_s });
        }
        if index > 0 && time_s <= times_s[index - 1] {
            let previous_s = times_s[index - 1];
            return Err(PerfusionError::FrameTimesNotIncreasing {
                index,
                time_s,
                previous_s,
            });
        }
    }

    let steps: Vec<f64> = times_s.windows(2).map(|w| w[1] - w[0]).collect();
    let min = steps.iter().copied().fold(f64::INFINITY, f64::min);
    let max = steps.iter().copied().fold(0.0, f64::max);
    let mean = (times_s[times_s.len() - 1] - times_s[0]) / steps.len() as f64;

    if (max - min) <= UNIFORM_TOLERANCE * mean {
        Ok((mean, false))
    } else {
        let span = times_s[times_s.len() - 1] - times_s[0];
        let coarsest = span / (MAX_ANALYSIS_FRAMES - 1) as f64;
        Ok((min.max(MIN_RESAMPLED_STEP_S).max(coarsest), true))
    }
}

/// Builds the frame-major series from `(t, z, y, x)` voxels, resampled by linear interpolation
/// onto `t0 + k * dt_s` when `resample` is set.
pub fn build_series(
    voxels: &ndarray::Array4<f32>,
    times_s: &[f64],
    dt_s: f64,
    resample: bool,
) -> Series {
    let shape = voxels.shape();
    let spatial = [shape[1], shape[2], shape[3]];
    let source: Vec<f32> = match voxels.as_slice() {
        Some(contiguous) => contiguous.to_vec(),
        None => voxels.iter().copied().collect(),
    };
    let n = spatial.iter().product::<usize>();

    if !resample {
        return Series {
            data: source,
            frames: shape[0],
            shape: spatial,
            dt_s,
        };
    }

    let span = times_s[times_s.len() - 1] - times_s[0];
    let frames = (span / dt_s).floor() as usize + 1;
    let mut data = vec![0.0f32; frames * n];
    data.par_chunks_mut(n).enumerate().for_each(|(k, out)| {
        let t = times_s[0] + k as f64 * dt_s;
        let upper = times_s
            .partition_point(|&s| s < t)
            .clamp(1, times_s.len() - 1);
        let lower = upper - 1;
        let w = ((t - times_s[lower]) / (times_s[upper] - times_s[lower])).clamp(0.0, 1.0) as f32;
        let (a, b) = (
            &source[lower * n..(lower + 1) * n],
            &source[upper * n..(upper + 1) * n],
        );
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = x + w * (y - x);
        }
    });
    Series {
        data,
        frames,
        shape: spatial,
        dt_s,
    }
}

/// Returns the per-voxel mean HU over the baseline frames, shaped `(z, y, x)`.
pub fn baseline_image(series: &Series, window: &BaselineWindow) -> Array3<f32> {
    let n = series.voxels();
    let mut sum = vec![0.0f64; n];
    for t in window.start..window.end {
        for (s, &value) in sum.iter_mut().zip(series.frame(t)) {
            *s += value as f64;
        }
    }
    let count = window.len().max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
    Array3::from_shape_vec(series.shape, mean).expect("length is the product of the shape")
}

/// Returns the median over `select` of each voxel's standard deviation across the baseline
/// frames, in HU, or `None` with fewer than two baseline frames or no selected voxel.
pub fn baseline_noise_sd(series: &Series, window: &BaselineWindow, select: &[bool]) -> Option<f64> {
    if window.len() < 2 {
        return None;
    }
    let n = series.voxels();
    let mut sum = vec![0.0f64; n];
    let mut sum_sq = vec![0.0f64; n];
    for t in window.start..window.end {
        for ((s, q), &value) in sum.iter_mut().zip(sum_sq.iter_mut()).zip(series.frame(t)) {
            let value = value as f64;
            *s += value;
            *q += value * value;
        }
    }

    let count = window.len() as f64;
    let mut sds: Vec<f64> = (0..n)
        .filter(|&v| select[v])
        .map(|v| {
            let mean = sum[v] / count;
            let var = ((sum_sq[v] - count * mean * mean) / (count - 1.0)).max(0.0);
            var.sqrt()
        })
        .collect();
    median_in_place(&mut sds)
}

/// Subtracts the baseline image from every frame, turning HU into ΔHU in place.
pub fn subtract_baseline(series: &mut Series, baseline: &Array3<f32>) {
    let n = series.voxels();
    let base = baseline
        .as_slice()
        .expect("baseline image is in standard layout");
    series.data.par_chunks_mut(n).for_each(|frame| {
        for (value, &b) in frame.iter_mut().zip(base) {
            *value -= b;
        }
    });
}

/// Returns the median of `values` (NaN-free), reordering them.
pub(crate) fn median_in_place(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    Some(*m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn uniform_step_of_regular_times() {
        let (dt, resample) = uniform_step(&[0.0, 1.5, 3.0, 4.5]).unwrap();
        assert!((dt - 1.5).abs() < 1e-12);
        assert!(!resample);
    }

    #[test]
    fn uniform_step_resamples_irregular_times() {
        // 2 s then 5 s sampling: resample at the shortest interval.
        let (dt, resample) = uniform_step(&[0.0, 2.0, 4.0, 9.0, 14.0]).unwrap();
        assert_eq!(dt, 2.0);
        assert!(resample);
    }

    #[test]
    fn uniform_step_rejects_unsorted_times() {
        let err = uniform_step(&[0.0, 2.0, 2.0]).unwrap_err();
        assert!(matches!(
            err,
            PerfusionError::FrameTimesNotIncreasing { index: 2, .. }
        ));
        let err = uniform_step(&[0.0, f64::NAN]).unwrap_err();
        assert!(matches!(
            err,
            PerfusionError::NonFiniteFrameTime { index: 1, .. }
        ));
    }

    #[test]
    fn uniform_step_caps_grid_length() {
        // Irregular times over 1000 s: a 0.5 s grid would have 2001 frames.
        let (dt, resample) = uniform_step(&[0.0, 1.0, 3.0, 1000.0]).unwrap();
        assert!(resample);
        assert!((dt - 1000.0 / 255.0).abs() < 1e-12);
    }

    #[test]
    fn resampling_interpolates_linearly() {
        // One voxel with value equal to its time, sampled at 0, 2, 4, 9 s.
        let times = [0.0, 2.0, 4.0, 9.0];
        let voxels = Array4::from_shape_vec((4, 1, 1, 1), vec![0.0, 2.0, 4.0, 9.0]).unwrap();
        let series = build_series(&voxels, &times, 2.0, true);

        // Grid 0, 2, 4, 6, 8 s.
        assert_eq!(series.frames, 5);
        assert_eq!(series.curve(0), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn baseline_subtraction_and_noise() {
        // Two voxels, four frames; baseline frames 0..3.
        let voxels = Array4::from_shape_vec(
            (4, 1, 1, 2),
            vec![10.0, 0.0, 12.0, 0.0, 14.0, 0.0, 50.0, 5.0],
        )
        .unwrap();
        let mut series = build_series(&voxels, &[0.0, 1.0, 2.0, 3.0], 1.0, false);
        let window = BaselineWindow {
            start: 0,
            end: 3,
            arrival: 3,
        };
        let base = baseline_image(&series, &window);
        assert_eq!(base.as_slice().unwrap(), &[12.0, 0.0]);

        // SD of 10, 12, 14 is 2 (sample SD); of 0, 0, 0 is 0; median of two picks the upper.
        let noise = baseline_noise_sd(&series, &window, &[true, false]).unwrap();
        assert!((noise - 2.0).abs() < 1e-9);

        subtract_baseline(&mut series, &base);
        assert_eq!(series.curve(0), vec![-2.0, 0.0, 2.0, 38.0]);
        assert_eq!(series.curve(1), vec![0.0, 0.0, 0.0, 5.0]);
    }
}
