//! Input quality figures and warnings reported with every map computation.

use serde::{Deserialize, Serialize};

/// Baseline noise above this adds a warning, in HU.
pub(crate) const NOISE_WARNING_HU: f64 = 15.0;
/// Motion above this adds a warning, in mm.
pub(crate) const MOTION_WARNING_MM: f64 = 2.0;
/// AIF peaks below this add a warning, in ΔHU.
pub(crate) const LOW_AIF_PEAK_HU: f64 = 100.0;
/// A curve whose last sample is above this fraction of its peak has a truncated bolus.
pub(crate) const TRUNCATION_FRACTION: f64 = 0.35;

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
    /// Largest in-plane distance any point of the head moved from the first frame, in mm,
    /// found by registering slice-averaged head images ([`crate::motion`]) before any
    /// correction.
    pub motion_mm: f64,
    /// In-plane smoothing sigma applied to the tissue curves, in mm: the configured one, or
    /// more for a noisy study ([`crate::DenoiseParams::spatial_sigma_for`]).
    #[serde(default)]
    pub smoothing_sigma_mm: f64,
    /// Frames resampled onto the first frame's grid by motion correction.
    #[serde(default)]
    pub motion_corrected_frames: usize,
    /// The motion measured again after correction, in mm; `None` when no frame was corrected.
    #[serde(default)]
    pub residual_motion_mm: Option<f64>,
    /// Delay in seconds that the deconvolution adds to the residue maximum by itself, as
    /// subtracted from every Tmax; 0 when the correction is off.
    #[serde(default)]
    pub tmax_offset_s: f64,
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
    fn truncation_by_last_sample() {
        assert!(is_truncated(&[0.0, 10.0, 50.0, 40.0]));
        assert!(!is_truncated(&[0.0, 10.0, 50.0, 10.0]));
        assert!(!is_truncated(&[0.0, 0.0]));
    }
}
