//! Confidence stage: one case score in [0, 1] from the U-Net's uncertainty, its agreement with the
//! threshold labels, volume plausibility and the input quality.

use std::sync::Arc;

use penumbra_perfusion::InputQuality as PerfusionQuality;
use penumbra_imaging::Geometry;
use tracing::info;

use super::job::Job;
use super::stage::{Stage, StageError, StageName};
use crate::confidence::calibration::ScoreCalibration;
use crate::confidence::{score, ConfidenceInputs, ConfidenceParams, InputQuality, LesionVolumes};

/// Scores each study with [`crate::confidence::score`], then with the model's fitted calibration
/// when it has one.
#[derive(Debug, Default)]
pub struct ConfidenceStage {
    params: ConfidenceParams,
    calibration: Option<Arc<ScoreCalibration>>,
}

impl ConfidenceStage {
    /// Creates the stage with the default parameters and an optional fitted calibration.
    pub fn new(calibration: Option<Arc<ScoreCalibration>>) -> Self {
        Self { params: ConfidenceParams::default(), calibration }
    }
}

impl Stage for ConfidenceStage {
    fn name(&self) -> StageName {
        StageName::Confidence
    }

    fn process(&self, mut job: Job) -> Result<Job, StageError> {
        let perfusion = job.artifacts.perfusion.as_ref().ok_or_else(|| {
            StageError::Failed("confidence stage ran without perfusion results".into())
        })?;
        let unet = job.artifacts.unet.as_ref().ok_or_else(|| {
            StageError::Failed("confidence stage ran without U-Net results: the infer stage must run first".into())
        })?;

        let (quality, mut notes) = input_quality(perfusion.quality.as_ref());
        let inputs = ConfidenceInputs {
            probabilities: &unet.probabilities,
            tta_probabilities: unet.tta_probabilities.as_ref(),
            unet_labels: &unet.labels,
            threshold_labels: &perfusion.threshold.labels,
            volumes: lesion_volumes(&unet.labels, &perfusion.maps.geometry),
            quality,
            params: self.params,
        };
        let mut confidence = score(&inputs);
        confidence.reasons.append(&mut notes);
        if let Some(calibration) = &self.calibration {
            calibration.apply(&mut confidence);
        }

        info!(score = confidence.score, assessable = confidence.assessable, "Confidence scored");
        job.artifacts.confidence = Some(confidence);
        Ok(job)
    }
}

/// Returns the U-Net lesion volumes the plausibility check reads.
fn lesion_volumes(labels: &penumbra_imaging::LabelVolume, geometry: &Geometry) -> LesionVolumes {
    let voxel_ml = geometry.voxel_volume_ml();
    let core = labels.iter().filter(|&&v| v == 2).count() as f64;
    let penumbra = labels.iter().filter(|&&v| v == 1).count() as f64;
    LesionVolumes { core_ml: core * voxel_ml, hypoperfused_ml: (core + penumbra) * voxel_ml }
}

/// Converts the perfusion stage's measures. A scanner's maps come without them: the score then
/// rests on the model components alone, and a note states it.
fn input_quality(measured: Option<&PerfusionQuality>) -> (InputQuality, Vec<String>) {
    match measured {
        Some(q) => (
            InputQuality {
                bolus_truncated: q.bolus_truncated,
                aif_peak_hu: (q.aif_peak_hu > 0.0).then_some(q.aif_peak_hu),
                aif_time_to_peak_s: Some(q.aif_time_to_peak_s),
                noise_sd_hu: q.noise_sd_hu.unwrap_or(0.0),
                motion_mm: q.residual_motion_mm.unwrap_or(q.motion_mm),
                baseline_frames: q.baseline_frames,
            },
            Vec::new(),
        ),
        None => (
            InputQuality {
                bolus_truncated: false,
                aif_peak_hu: None,
                aif_time_to_peak_s: None,
                noise_sd_hu: 0.0,
                motion_mm: 0.0,
                baseline_frames: 0,
            },
            vec!["input quality unknown: the maps came from the scanner, not from the dynamic series".to_string()],
        ),
    }
}
