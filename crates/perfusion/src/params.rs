//! Parameters of map computation, with defaults from the CT perfusion literature.

use serde::{Deserialize, Serialize};

use crate::error::PerfusionError;

/// Deconvolution algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeconvolutionMethod {
    /// Block-circulant truncated SVD with one truncation for every voxel (Wu et al. 2003).
    Bsvd,
    /// Block-circulant SVD whose truncation is chosen per voxel by the oscillation index.
    Osvd,
}

/// Every setting of [`crate::compute_maps`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerfusionParams {
    pub method: DeconvolutionMethod,
    /// bSVD truncation: singular values below `bsvd_lambda * sigma_max` are dropped.
    pub bsvd_lambda: f64,
    /// oSVD oscillation-index threshold; the Penn DSC-MRI toolbox default is 0.035.
    pub osvd_oscillation_index: f64,
    /// Hematocrit correction k_H = (1 - H_large_vessel) / (1 - H_small_vessel).
    pub hematocrit_factor: f64,
    /// Brain tissue density rho in g/mL.
    pub brain_density_g_per_ml: f64,
    /// Whether every Tmax loses the delay that truncated SVD adds to the residue maximum by
    /// itself, measured per study on a noise-free curve with no delay
    /// ([`crate::deconvolution::Deconvolver::intrinsic_tmax_offset_s`]). The delay is about 2 s
    /// at 1 s sampling. Left in, it pushes benign oligemia (true Tmax about 4 s) over 6 s.
    pub tmax_offset_correction: bool,
    /// Whether the maps carry the table of CBF recovered per MTT, found per study on noise-free
    /// curves ([`crate::deconvolution::Deconvolver::cbf_recovery`]), so that labelling divides
    /// the reference CBF by its recovery. Truncated SVD recovers about 65 % of normal grey
    /// matter's CBF (MTT 4 s) but 90 % or more of the long-MTT core's.
    pub cbf_recovery_correction: bool,
    /// Whether frames that moved in-plane are registered to the first frame and resampled
    /// before anything else ([`crate::motion`]). Off, motion is only measured.
    pub motion_correction: bool,
    pub denoise: DenoiseParams,
    pub baseline: BaselineParams,
    pub masks: MaskParams,
    pub aif: AifParams,
}

impl Default for PerfusionParams {
    fn default() -> Self {
        Self {
            method: DeconvolutionMethod::Osvd,
            bsvd_lambda: 0.1,
            osvd_oscillation_index: 0.035,
            hematocrit_factor: 0.73,
            brain_density_g_per_ml: 1.04,
            tmax_offset_correction: true,
            cbf_recovery_correction: true,
            motion_correction: true,
            denoise: DenoiseParams::default(),
            baseline: BaselineParams::default(),
            masks: MaskParams::default(),
            aif: AifParams::default(),
        }
    }
}

/// Spatial and temporal smoothing before deconvolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DenoiseParams {
    /// In-plane Gaussian sigma in mm, applied to tissue only (vessels and non-brain voxels get no
    /// weight); 0 disables it. The default of 3 mm is the top of the 2 to 3 mm range used for CT
    /// perfusion: CT noise is spatially correlated, so 2 mm left enough noise at 150 mAs for
    /// the per-voxel residue maximum to push oligemic Tmax past 6 s in about half the voxels.
    pub spatial_sigma_mm: f64,
    /// Baseline noise (HU) up to which `spatial_sigma_mm` applies as it is. A noisier study gets
    /// the sigma scaled by its noise over this, up to `max_spatial_sigma_mm`, so that about the
    /// same noise is left in its maps.
    pub noise_reference_hu: f64,
    /// Largest adapted sigma in mm; equal to `spatial_sigma_mm`, it turns adaptation off.
    pub max_spatial_sigma_mm: f64,
    /// Temporal Gaussian sigma in frames, applied identically to tissue curves and the AIF; 0
    /// disables it.
    pub temporal_sigma_frames: f64,
}

impl Default for DenoiseParams {
    fn default() -> Self {
        Self {
            spatial_sigma_mm: 3.0,
            noise_reference_hu: 10.0,
            max_spatial_sigma_mm: 6.0,
            temporal_sigma_frames: 0.5,
        }
    }
}

impl DenoiseParams {
    /// Returns the in-plane sigma (mm) for a study whose baseline noise is `noise_sd_hu`;
    /// unknown noise keeps `spatial_sigma_mm`.
    pub fn spatial_sigma_for(&self, noise_sd_hu: Option<f64>) -> f64 {
        let ratio = match noise_sd_hu {
            Some(noise) if noise > self.noise_reference_hu && self.noise_reference_hu > 0.0 => {
                noise / self.noise_reference_hu
            }
            _ => 1.0,
        };
        (self.spatial_sigma_mm * ratio).min(self.max_spatial_sigma_mm.max(self.spatial_sigma_mm))
    }
}

/// Detection of bolus arrival and of the pre-contrast baseline frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaselineParams {
    /// Arrival is the first frame whose mean enhancement reaches this fraction of the peak
    /// mean enhancement.
    pub arrival_fraction: f64,
    /// Frames skipped at the start (e.g. a first frame with a different dose).
    pub skip_frames: usize,
    /// At most this many frames, the last ones before arrival, form the baseline.
    pub max_frames: usize,
    /// Fewer baseline frames than this add a warning.
    pub min_frames: usize,
}

impl Default for BaselineParams {
    fn default() -> Self {
        Self {
            arrival_fraction: 0.1,
            skip_frames: 0,
            max_frames: 12,
            min_frames: 3,
        }
    }
}

/// HU windows and limits for the brain and vessel masks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaskParams {
    /// Baseline HU window of analysable tissue.
    pub tissue_min_hu: f32,
    pub tissue_max_hu: f32,
    /// Baseline HU above which a voxel is bone.
    pub bone_min_hu: f32,
    /// Baseline HU below which an intracranial voxel is CSF and leaves the brain mask.
    pub csf_max_hu: f32,
    /// Peak enhancement (ΔHU) above which a voxel is a vessel before deconvolution.
    pub vessel_peak_hu: f32,
    /// CBV (mL/100 g) above which a brain voxel is a vessel after deconvolution.
    pub vessel_cbv_ml_100g: f32,
}

impl Default for MaskParams {
    fn default() -> Self {
        Self {
            tissue_min_hu: 0.0,
            tissue_max_hu: 120.0,
            bone_min_hu: 300.0,
            csf_max_hu: 15.0,
            vessel_peak_hu: 100.0,
            vessel_cbv_ml_100g: 8.0,
        }
    }
}

/// Automatic arterial (AIF) and venous (VOF) output function selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AifParams {
    /// Voxels averaged into the AIF and into the VOF.
    pub voxel_count: usize,
    /// Fraction of intracranial voxels, highest peak first, that are candidates.
    pub candidate_fraction: f64,
    /// Minimum peak enhancement (ΔHU) of a candidate.
    pub min_peak_hu: f32,
    /// Scale the AIF by AUC(VOF)/AUC(AIF) to correct arterial partial volume.
    pub partial_volume_correction: bool,
    /// Scale factors above this are not applied and add a warning.
    pub max_partial_volume_scale: f64,
    /// Candidates keep this in-plane distance (mm) from bone ([`crate::masks::away_from_bone`]).
    pub bone_margin_mm: f64,
}

impl Default for AifParams {
    fn default() -> Self {
        Self {
            voxel_count: 8,
            candidate_fraction: 0.01,
            min_peak_hu: 50.0,
            partial_volume_correction: true,
            max_partial_volume_scale: 3.0,
            bone_margin_mm: 3.0,
        }
    }
}

impl PerfusionParams {
    /// Checks every value against its valid range.
    pub fn validate(&self) -> Result<(), PerfusionError> {
        positive("hematocrit_factor", self.hematocrit_factor)?;
        positive("brain_density_g_per_ml", self.brain_density_g_per_ml)?;
        fraction("bsvd_lambda", self.bsvd_lambda)?;
        positive("osvd_oscillation_index", self.osvd_oscillation_index)?;
        non_negative("denoise.spatial_sigma_mm", self.denoise.spatial_sigma_mm)?;
        non_negative(
            "denoise.temporal_sigma_frames",
            self.denoise.temporal_sigma_frames,
        )?;
        fraction("baseline.arrival_fraction", self.baseline.arrival_fraction)?;
        fraction("aif.candidate_fraction", self.aif.candidate_fraction)?;
        positive(
            "aif.max_partial_volume_scale",
            self.aif.max_partial_volume_scale,
        )?;
        non_negative("aif.bone_margin_mm", self.aif.bone_margin_mm)?;
        if self.aif.voxel_count == 0 {
            return Err(invalid("aif.voxel_count", "0", "at least 1"));
        }
        if self.baseline.max_frames == 0 {
            return Err(invalid("baseline.max_frames", "0", "at least 1"));
        }
        if !(self.masks.tissue_min_hu < self.masks.tissue_max_hu) {
            let value = format!("{}..{}", self.masks.tissue_min_hu, self.masks.tissue_max_hu);
            return Err(invalid(
                "masks.tissue_min_hu..tissue_max_hu",
                &value,
                "min below max",
            ));
        }
        Ok(())
    }
}

fn invalid(name: &'static str, value: &str, expected: &'static str) -> PerfusionError {
    PerfusionError::InvalidParameter {
        name,
        value: value.to_string(),
        expected,
    }
}

fn positive(name: &'static str, value: f64) -> Result<(), PerfusionError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(name, &value.to_string(), "a finite value above 0"))
    }
}

fn non_negative(name: &'static str, value: f64) -> Result<(), PerfusionError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            name,
            &value.to_string(),
            "a finite value of at least 0",
        ))
    }
}

fn fraction(name: &'static str, value: f64) -> Result<(), PerfusionError> {
    if value.is_finite() && value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(invalid(
            name,
            &value.to_string(),
            "a value between 0 and 1, exclusive",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spatial_sigma_scales_with_noise() {
        let denoise = DenoiseParams::default();
        assert_eq!(denoise.spatial_sigma_for(None), 3.0);
        assert_eq!(denoise.spatial_sigma_for(Some(8.4)), 3.0);
        assert!((denoise.spatial_sigma_for(Some(14.6)) - 4.38).abs() < 1e-9);
        assert_eq!(denoise.spatial_sigma_for(Some(23.0)), 6.0);
    }

    #[test]
    fn spatial_sigma_fixed_without_adaptation() {
        let denoise = DenoiseParams {
            max_spatial_sigma_mm: 3.0,
            ..DenoiseParams::default()
        };
        assert_eq!(denoise.spatial_sigma_for(Some(23.0)), 3.0);
    }
}
