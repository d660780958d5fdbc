//! Input quality figures and warnings reported with every map computation.

use serde::{Deserialize, Serialize};

use rayon::prelude::*;

use crate::concentration::Series;

/// Baseline noise above this adds a warning, in HU.
pub(crate) const NOISE_WARNING_HU: f64 = 15.0;
/// Motion above this adds a warning, in mm.
pub(crate) const MOTION_WARNING_MM: f64 = 2.0;
/// AIF peaks below this add a warning, in ΔHU.
pub(crate) const LOW_AIF_PEAK_HU: f64 = 100.0;
/// A curve whose last sample is above this fraction of its peak has a truncated bolus.
pub(crate) const TRUNCATION_FRACTION: f64 = 0.35;
/// Voxels at least this dense (HU) are bone for the motion estimate.
const MOTION_BONE_HU: f32 = 300.0;
/// With fewer bone voxels than this per frame, motion is tracked on all voxels above -200 HU.
const MIN_BONE_VOXELS: usize = 50;

/// Input quality figures and the warnings raised while computing maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputQuality {
    /// The VOF (or, without one, the mean brain tissue curve) is still above 35 % of its peak
    /// at the last frame, so the bolus passage was not fully acquired.
    pub bolus_truncated: bool,
    pub aif_peak_hu: f64,
    /// AIF time to peak in seconds from the first analysed frame.
    pub aif_time_to_peak_s: f64,
    /// AIF full width at half maximum in seconds.
    pub aif_width_s: f64,
    pub baseline_frames: usize,
    /// Median over brain voxels of the temporal standard deviation across baseline frames,
    /// before denoising; `None` with fewer than two baseline frames.
    pub noise_sd_hu: Option<f64>,
    /// Largest displacement of the bone centroid from its position in the first frame, in mm.
    pub motion_mm: f64,
    /// Frame interval of the analysis grid in seconds.
    pub frame_interval_s: f64,
    /// The acquisition was irregular and was resampled onto the analysis grid.
    pub resampled: bool,
    /// AUC(VOF)/AUC(AIF), when a VOF was found.
    pub partial_volume_scale: Option<f64>,
    /// Whether that scale was applied to the AIF.
    pub partial_volume_scale_applied: bool,
    pub brain_volume_ml: f64,
    /// Human-readable problems, one sentence each.
    pub warnings: Vec<String>,
}

/// Returns the largest displacement (mm) of each frame's bone centroid from frame 0's.
///
/// Bone (at least 300 HU) does not enhance, so its centroid moves only with the head.
/// Voxels where `exclude` is true (the intracranial mask, whose vessels pass 300 HU during the
/// bolus) are ignored. Series without bone fall back to the centroid of all voxels above
/// -200 HU.
pub fn estimate_motion_mm(series: &Series, spacing_mm: [f64; 3], exclude: &[bool]) -> f64 {
    let bone_count = series
        .frame(0)
        .iter()
        .zip(exclude)
        .filter(|(&v, &e)| !e && v >= MOTION_BONE_HU)
        .count();
    let threshold = if bone_count >= MIN_BONE_VOXELS {
        MOTION_BONE_HU
    } else {
        -200.0
    };
    let [_, ny, nx] = series.shape;

    let centroid = |t: usize| -> Option<[f64; 3]> {
        let mut sum = [0.0f64; 3];
        let mut count = 0usize;
        for (v, (&value, &excluded)) in series.frame(t).iter().zip(exclude).enumerate() {
            if !excluded && value >= threshold {
                let index = [v / (ny * nx), (v / nx) % ny, v % nx];
                for axis in 0..3 {
                    sum[axis] += index[axis] as f64 * spacing_mm[axis];
                }
                count += 1;
            }
        }
        (count > 0).then(|| sum.map(|s| s / count as f64))
    };

    let Some(first) = centroid(0) else {
        return 0.0;
    };
    (1..series.frames)
        .into_par_iter()
        .filter_map(centroid)
        .map(|c| {
            (0..3)
                .map(|a| (c[a] - first[a]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .reduce(|| 0.0, f64::max)
}

/// Returns whether `curve` ends above [`TRUNCATION_FRACTION`] of its peak.
pub fn is_truncated(curve: &[f64]) -> bool {
    let peak = curve.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match curve.last() {
        Some(&last) if peak > 0.0 => last > TRUNCATION_FRACTION * peak,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn motion_of_shifted_bone() {
        // Two frames of 1x4x4 without bone, so voxels above -200 HU are tracked: one voxel
        // moves from x 0 to x 2.
        let mut data = vec![-1000.0f32; 2 * 16];
        data[0] = 40.0;
        data[16 + 2] = 40.0;
        let series = Series {
            data,
            frames: 2,
            shape: [1, 4, 4],
            dt_s: 1.0,
        };

        // 2 columns of 0.5 mm.
        assert!((estimate_motion_mm(&series, [5.0, 0.5, 0.5], &[false; 16]) - 1.0).abs() < 1e-12);

        // Excluding the moved voxel's destination leaves only frame 0 with a centroid.
        let mut exclude = [false; 16];
        exclude[2] = true;
        assert_eq!(estimate_motion_mm(&series, [5.0, 0.5, 0.5], &exclude), 0.0);
    }

    #[test]
    fn truncation_by_last_sample() {
        assert!(is_truncated(&[0.0, 10.0, 50.0, 40.0]));
        assert!(!is_truncated(&[0.0, 10.0, 50.0, 10.0]));
        assert!(!is_truncated(&[0.0, 0.0]));
    }
}
