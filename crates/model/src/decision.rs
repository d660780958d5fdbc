//! Decision thresholds: how labels are picked from the class probabilities.
//!
//! Without a [`DECISION_FILE`] in the model folder a voxel takes the class of highest
//! probability (argmax). With one, the probabilities are first smoothed across slices with a
//! Gaussian of [`DecisionThresholds::z_sigma_mm`], because the U-Net segments each slice alone
//! and its noise differs from slice to slice while lesions span several 5 mm slices. A voxel is
//! then hypoperfused when `P(penumbra) + P(core)` reaches [`DecisionThresholds::hypoperfused`],
//! and a hypoperfused voxel is core when `P(core)` reaches [`DecisionThresholds::core`]; every
//! other hypoperfused voxel is penumbra. The infer stage then removes hypoperfused components
//! under [`DecisionThresholds::min_hypoperfused_ml`].
//!
//! A model trained with the Tversky loss (beta 0.7 on false negatives) is tuned to over- rather
//! than under-segment, so argmax labels tend to be too large. `penumbra fit-thresholds` chooses
//! the smoothing and both thresholds on phantom studies that are neither in the training set nor
//! in the held-out evaluation set, and records the fitted seed so that `penumbra eval` can refuse
//! it.

use std::path::{Path, PathBuf};

use ndarray::{Array3, Array4, Axis, Zip};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::resample::CLASSES;

/// File name of the thresholds in a model folder, beside `card.json`.
pub const DECISION_FILE: &str = "decision-thresholds.json";

/// Version of the file layout.
pub const DECISION_FORMAT_VERSION: u32 = 1;

/// Mean Dice per class over the fitted studies, for one labelling rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitScores {
    pub core: f64,
    pub penumbra: f64,
    pub hypoperfused: f64,
}

/// Thresholds on the class probabilities, with the record of their fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionThresholds {
    pub format_version: u32,
    /// Standard deviation in mm of the Gaussian that smooths the probabilities across slices
    /// before the thresholds apply; 0 leaves them as they are.
    pub z_sigma_mm: f64,
    /// Minimum `P(penumbra) + P(core)` of a hypoperfused voxel.
    pub hypoperfused: f32,
    /// Minimum `P(core)` of a core voxel, among the hypoperfused ones.
    pub core: f32,
    /// Smallest hypoperfused component kept, in mL. Components under it are removed with the
    /// core inside them, after the labelling's own minimum for core and hypoperfused components.
    pub min_hypoperfused_ml: f64,
    /// Seed of the phantom set the thresholds were fitted on.
    pub fitted_seed: u64,
    /// Number of phantom studies in that set.
    pub fitted_studies: u64,
    /// Mean Dice on the fitted studies with argmax labels.
    pub argmax_scores: FitScores,
    /// Mean Dice on the fitted studies with these thresholds.
    pub fitted_scores: FitScores,
    /// UTC date and time of the fit.
    pub fitted_at: String,
}

impl DecisionThresholds {
    /// Reads the thresholds of model folder `dir`, `None` when it has no [`DECISION_FILE`].
    pub fn read(dir: &Path) -> Result<Option<Self>, ModelError> {
        let path = dir.join(DECISION_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(ModelError::io("reading", path, error)),
        };
        let invalid = |reason: String| ModelError::Decision { path: path.clone(), reason };
        let thresholds: Self = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        thresholds.validate().map_err(invalid)?;
        Ok(Some(thresholds))
    }

    /// Writes the thresholds into model folder `dir`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ModelError> {
        let path = dir.join(DECISION_FILE);
        self.validate().map_err(ModelError::InvalidInput)?;
        let text = serde_json::to_string_pretty(self).map_err(|e| ModelError::InvalidInput(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(|e| ModelError::io("writing", &path, e))?;
        Ok(path)
    }

    /// Checks the version and that both thresholds lie strictly between 0 and 1.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != DECISION_FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported; this build reads version {DECISION_FORMAT_VERSION}",
                self.format_version
            ));
        }
        if !(self.min_hypoperfused_ml >= 0.0 && self.min_hypoperfused_ml <= MAX_MIN_HYPOPERFUSED_ML) {
            return Err(format!(
                "min_hypoperfused_ml must lie between 0 and {MAX_MIN_HYPOPERFUSED_ML}, got {}",
                self.min_hypoperfused_ml
            ));
        }
        if !(self.z_sigma_mm >= 0.0 && self.z_sigma_mm <= MAX_Z_SIGMA_MM) {
            return Err(format!("z_sigma_mm must lie between 0 and {MAX_Z_SIGMA_MM}, got {}", self.z_sigma_mm));
        }
        for (name, value) in [("hypoperfused", self.hypoperfused), ("core", self.core)] {
            if !(value > 0.0 && value < 1.0) {
                return Err(format!("threshold {name} must lie between 0 and 1, got {value}"));
            }
        }
        Ok(())
    }

    /// Labels `(3, z, y, x)` probabilities whose slices lie `slice_spacing_mm` apart: 0
    /// background, 1 penumbra, 2 core.
    pub fn labels(&self, probabilities: &Array4<f32>, slice_spacing_mm: f64) -> Result<Array3<u8>, ModelError> {
        let smoothed = smooth_slices(probabilities, self.z_sigma_mm, slice_spacing_mm)?;
        threshold_labels(&smoothed, self.hypoperfused, self.core)
    }
}

/// Largest accepted [`DecisionThresholds::min_hypoperfused_ml`].
pub const MAX_MIN_HYPOPERFUSED_ML: f64 = 50.0;

/// Largest accepted [`DecisionThresholds::z_sigma_mm`].
pub const MAX_Z_SIGMA_MM: f64 = 20.0;

/// Smooths `(c, z, y, x)` values along z with a Gaussian of `sigma_mm`, sampled at the slice
/// spacing and cut at three standard deviations. Weights that fall outside the volume go to the
/// edge slice, so every output stays a weighted mean of inputs. A sigma of 0, or one shorter than
/// a third of the spacing, returns the values unchanged.
pub fn smooth_slices(values: &Array4<f32>, sigma_mm: f64, slice_spacing_mm: f64) -> Result<Array4<f32>, ModelError> {
    let valid = slice_spacing_mm.is_finite() && slice_spacing_mm > 0.0 && sigma_mm.is_finite() && sigma_mm >= 0.0;
    if !valid {
        return Err(ModelError::InvalidInput(format!(
            "cannot smooth across slices with sigma {sigma_mm} mm at a spacing of {slice_spacing_mm} mm"
        )));
    }
    let reach = (3.0 * sigma_mm / slice_spacing_mm).floor() as usize;
    if reach == 0 {
        return Ok(values.clone());
    }
    let weights: Vec<f64> = (0..=reach)
        .map(|k| (-0.5 * (k as f64 * slice_spacing_mm / sigma_mm).powi(2)).exp())
        .collect();
    let total = weights[0] + 2.0 * weights[1..].iter().sum::<f64>();

    let nz = values.len_of(Axis(1));
    let mut smoothed = Array4::zeros(values.raw_dim());
    for z in 0..nz {
        let mut out = smoothed.index_axis_mut(Axis(1), z);
        for offset in -(reach as isize)..=reach as isize {
            let source = (z as isize + offset).clamp(0, nz as isize - 1) as usize;
            let weight = (weights[offset.unsigned_abs()] / total) as f32;
            out.scaled_add(weight, &values.index_axis(Axis(1), source));
        }
    }
    Ok(smoothed)
}

/// Labels `(3, z, y, x)` probabilities with a hypoperfused and a core threshold, as
/// [`DecisionThresholds::labels`] does.
pub fn threshold_labels(probabilities: &Array4<f32>, hypoperfused: f32, core: f32) -> Result<Array3<u8>, ModelError> {
    if probabilities.len_of(Axis(0)) != CLASSES {
        return Err(ModelError::InvalidInput(format!(
            "expected {CLASSES} class probabilities, got {}",
            probabilities.len_of(Axis(0))
        )));
    }
    let (_, nz, ny, nx) = probabilities.dim();
    let mut labels = Array3::zeros((nz, ny, nx));
    Zip::from(&mut labels)
        .and(probabilities.index_axis(Axis(0), 1))
        .and(probabilities.index_axis(Axis(0), 2))
        .for_each(|label, &penumbra, &core_p| {
            *label = if penumbra + core_p < hypoperfused {
                0
            } else if core_p >= core {
                2
            } else {
                1
            };
        });
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds(hypoperfused: f32, core: f32) -> DecisionThresholds {
        let scores = FitScores { core: 0.5, penumbra: 0.5, hypoperfused: 0.5 };
        DecisionThresholds {
            format_version: DECISION_FORMAT_VERSION,
            z_sigma_mm: 0.0,
            min_hypoperfused_ml: 0.0,
            hypoperfused,
            core,
            fitted_seed: 4001,
            fitted_studies: 12,
            argmax_scores: scores.clone(),
            fitted_scores: scores,
            fitted_at: "2026-12-05T12:00:00Z".to_string(),
        }
    }

    /// Four voxels of (background, penumbra, core) probabilities.
    fn probabilities() -> Array4<f32> {
        let voxels = [[0.6, 0.3, 0.1], [0.3, 0.3, 0.4], [0.5, 0.45, 0.05], [0.1, 0.5, 0.4]];
        Array4::from_shape_fn((3, 1, 1, 4), |(c, _, _, x)| voxels[x][c])
    }

    #[test]
    fn thresholds_split_hypoperfused_then_core() {
        // Hypoperfused sums: 0.4, 0.7, 0.5, 0.9.
        let labels = thresholds(0.5, 0.35).labels(&probabilities(), 5.0).unwrap();
        assert_eq!(labels.iter().copied().collect::<Vec<_>>(), vec![0, 2, 1, 2]);

        let labels = thresholds(0.75, 0.45).labels(&probabilities(), 5.0).unwrap();
        assert_eq!(labels.iter().copied().collect::<Vec<_>>(), vec![0, 0, 0, 1]);
    }

    #[test]
    fn file_round_trips_and_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DecisionThresholds::read(dir.path()).unwrap().is_none());

        let written = thresholds(0.6, 0.45);
        written.write(dir.path()).unwrap();
        assert_eq!(DecisionThresholds::read(dir.path()).unwrap(), Some(written));

        let text = std::fs::read_to_string(dir.path().join(DECISION_FILE)).unwrap();
        std::fs::write(dir.path().join(DECISION_FILE), text.replace("0.6", "1.5")).unwrap();
        let error = DecisionThresholds::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("hypoperfused must lie between 0 and 1"), "{error}");

        assert!(thresholds(0.0, 0.5).write(dir.path()).is_err());
        assert!(thresholds(0.5, f32::NAN).validate().is_err());
        let mut negative = thresholds(0.5, 0.5);
        negative.z_sigma_mm = -1.0;
        assert!(negative.validate().is_err());
        let mut too_large = thresholds(0.5, 0.5);
        too_large.min_hypoperfused_ml = 60.0;
        assert!(too_large.validate().is_err());
    }

    #[test]
    fn smoothing_weights_follow_the_gaussian() {
        // Sigma = spacing: weights e^-0.5 / 1 / e^-0.5 at ±1 slice, e^-2 at ±2, e^-4.5 at ±3.
        let mut values = Array4::<f32>::zeros((1, 7, 1, 1));
        values[[0, 3, 0, 0]] = 1.0;
        let smoothed = smooth_slices(&values, 5.0, 5.0).unwrap();
        let w: Vec<f64> = (0..=3).map(|k| (-0.5 * (k * k) as f64).exp()).collect();
        let total = w[0] + 2.0 * (w[1] + w[2] + w[3]);
        for (z, k) in [(3, 0), (2, 1), (4, 1), (1, 2), (5, 2), (0, 3), (6, 3)] {
            assert!((smoothed[[0, z, 0, 0]] as f64 - w[k] / total).abs() < 1e-6, "slice {z}");
        }

        // A constant stays constant up to the edges, and a short sigma changes nothing.
        let constant = Array4::<f32>::from_elem((3, 4, 2, 2), 0.25);
        let smoothed = smooth_slices(&constant, 5.0, 5.0).unwrap();
        assert!(smoothed.iter().all(|&v| (v - 0.25).abs() < 1e-6));
        assert_eq!(smooth_slices(&values, 1.0, 5.0).unwrap(), values);
        assert!(smooth_slices(&values, 3.0, 0.0).is_err());
    }

    #[test]
    fn smoothing_removes_a_single_slice_response() {
        // Hypoperfused probability 0.9 on one slice only: after smoothing with sigma 3.5 mm at
        // 5 mm it is about 0.9 * 0.58 = 0.52, under a 0.6 threshold; a three-slice lesion stays.
        let mut probabilities = Array4::<f32>::zeros((3, 5, 1, 2));
        probabilities.index_axis_mut(Axis(0), 0).fill(1.0);
        probabilities[[0, 1, 0, 0]] = 0.1;
        probabilities[[1, 1, 0, 0]] = 0.9;
        for z in 1..4 {
            probabilities[[0, z, 0, 1]] = 0.1;
            probabilities[[1, z, 0, 1]] = 0.9;
        }
        let mut decision = thresholds(0.6, 0.5);
        decision.z_sigma_mm = 3.5;
        let labels = decision.labels(&probabilities, 5.0).unwrap();
        assert_eq!(labels[[1, 0, 0]], 0);
        assert_eq!(labels[[2, 0, 1]], 1);
        decision.z_sigma_mm = 0.0;
        assert_eq!(decision.labels(&probabilities, 5.0).unwrap()[[1, 0, 0]], 1);
    }

    #[test]
    fn wrong_class_count_is_rejected() {
        let probs = Array4::<f32>::zeros((2, 1, 1, 1));
        assert!(threshold_labels(&probs, 0.5, 0.5).is_err());
    }
}
