//! A fitted logistic model that turns the confidence components into the probability that the
//! U-Net's core segmentation is good (core Dice against truth of at least 0.5).
//!
//! When a model folder contains [`CALIBRATION_FILE`], the confidence stage uses that probability
//! as the score of an assessable study in place of the fixed-weight mean times `input_quality`.
//! A study that is not assessable still scores 0. `penumbra calibrate-confidence` fits the model on
//! `penumbra eval` results of phantom studies whose seeds must differ from the held-out evaluation
//! seed, and `penumbra eval` rejects a seed that the calibration was fitted on.
//!
//! The fit standardizes each component (mean and standard deviation over the fitted studies) and
//! minimizes the mean log loss plus `l2 / 2` times the squared weights, by gradient descent from
//! zero. The intercept is not penalized. A component that a study lacks counts as its fitted mean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Confidence;

/// File name of the calibration in a model folder, beside `card.json`.
pub const CALIBRATION_FILE: &str = "confidence-calibration.json";

/// Version of the calibration file layout.
pub const CALIBRATION_FORMAT_VERSION: u32 = 1;

/// Components the logistic model reads, in order.
pub const FEATURES: [&str; 5] = ["entropy", "tta_agreement", "unet_vs_threshold_dice", "plausibility", "input_quality"];

/// Penalty on the squared standardized weights, relative to the mean log loss.
pub const DEFAULT_L2: f64 = 0.1;

/// Minimum number of assessable studies, and of studies of each outcome, that a fit accepts.
const MIN_STUDIES: usize = 6;
const MIN_PER_CLASS: usize = 2;

/// Gradient-descent iterations and step. The step is below the inverse of the loss's Lipschitz
/// constant for standardized features, `0.25 * (features + 1) + l2`, for `l2` up to 1.
const ITERATIONS: usize = 20_000;
const STEP: f64 = 0.4;

/// Errors of reading, validating and fitting a calibration.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("invalid confidence calibration {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot fit the confidence calibration: {0}")]
    Fit(String),
}

/// Standardization of one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureScale {
    pub name: String,
    pub mean: f64,
    /// Standard deviation over the fitted studies; 1 for a component that was constant there.
    pub std: f64,
}

/// The contents of [`CALIBRATION_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreCalibration {
    pub format_version: u32,
    pub features: Vec<FeatureScale>,
    /// Weights of the standardized features, in the order of `features`.
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub l2: f64,
    /// Core Dice below which a fitted study counted as poor.
    pub poor_core_dice: f64,
    /// Phantom set seeds of the fitted studies; `penumbra eval` rejects them.
    pub fitted_seeds: Vec<u64>,
    /// Assessable studies the fit used, and how many of them were poor.
    pub fitted_studies: usize,
    pub fitted_poor: usize,
}

/// One study for the fit: its components and whether its segmentation was good.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationSample {
    pub components: BTreeMap<String, f64>,
    pub good: bool,
}

impl ScoreCalibration {
    /// Returns the fitted probability that a study with these components has a good segmentation.
    pub fn probability_good(&self, components: &BTreeMap<String, f64>) -> f64 {
        let mut logit = self.intercept;
        for (scale, weight) in self.features.iter().zip(&self.weights) {
            let value = components.get(&scale.name).copied().filter(|v| v.is_finite()).unwrap_or(scale.mean);
            logit += weight * (value - scale.mean) / scale.std;
        }
        sigmoid(logit)
    }

    /// Replaces the score of an assessable study with [`Self::probability_good`]. A study that is
    /// not assessable keeps its score of 0.
    pub fn apply(&self, confidence: &mut Confidence) {
        if confidence.assessable {
            confidence.score = self.probability_good(&confidence.components).clamp(0.0, 1.0);
        }
    }

    /// Fits the model on `samples`, recording `seeds` and `poor_core_dice` as provenance.
    ///
    /// # Errors
    ///
    /// [`CalibrationError::Fit`] with fewer than 6 studies, fewer than 2 good or 2 poor ones, or
    /// an `l2` outside `(0, 1]`.
    pub fn fit(samples: &[CalibrationSample], l2: f64, poor_core_dice: f64, seeds: Vec<u64>) -> Result<Self, CalibrationError> {
        check_fit_input(samples, l2)?;
        let features: Vec<FeatureScale> = FEATURES.iter().map(|name| feature_scale(samples, name)).collect();
        let rows: Vec<Vec<f64>> = samples.iter().map(|s| standardized(&features, &s.components)).collect();
        let targets: Vec<f64> = samples.iter().map(|s| if s.good { 1.0 } else { 0.0 }).collect();

        let mut weights = vec![0.0; features.len()];
        let mut intercept = 0.0;
        let n = samples.len() as f64;
        for _ in 0..ITERATIONS {
            let mut gradient = vec![0.0; weights.len()];
            let mut gradient_intercept = 0.0;
            for (row, target) in rows.iter().zip(&targets) {
                let error = sigmoid(intercept + dot(&weights, row)) - target;
                gradient_intercept += error / n;
                for (g, x) in gradient.iter_mut().zip(row) {
                    *g += error * x / n;
                }
            }
            intercept -= STEP * gradient_intercept;
            for (w, g) in weights.iter_mut().zip(&gradient) {
                *w -= STEP * (g + l2 * *w);
            }
        }

        let fitted_poor = samples.iter().filter(|s| !s.good).count();
        Ok(Self {
            format_version: CALIBRATION_FORMAT_VERSION,
            features,
            weights,
            intercept,
            l2,
            poor_core_dice,
            fitted_seeds: seeds,
            fitted_studies: samples.len(),
            fitted_poor,
        })
    }

    /// Reads the calibration of a model folder, or `Ok(None)` when it has none.
    ///
    /// # Errors
    ///
    /// An unreadable file, invalid JSON, another format version or inconsistent fields.
    pub fn read(model_dir: &Path) -> Result<Option<Self>, CalibrationError> {
        let path = model_dir.join(CALIBRATION_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|source| CalibrationError::Read { path: path.clone(), source })?;
        let invalid = |reason: String| CalibrationError::Invalid { path: path.clone(), reason };
        let calibration: Self = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        calibration.validate().map_err(invalid)?;
        Ok(Some(calibration))
    }

    /// Writes the calibration as pretty JSON to `path`.
    ///
    /// # Errors
    ///
    /// [`CalibrationError::Write`] when the file cannot be written.
    pub fn write(&self, path: &Path) -> Result<(), CalibrationError> {
        let write_error = |source| CalibrationError::Write { path: path.to_owned(), source };
        let text = serde_json::to_string_pretty(self).map_err(|e| write_error(std::io::Error::other(e)))?;
        std::fs::write(path, text).map_err(write_error)
    }

    fn validate(&self) -> Result<(), String> {
        if self.format_version != CALIBRATION_FORMAT_VERSION {
            return Err(format!("format version {} is not {CALIBRATION_FORMAT_VERSION}", self.format_version));
        }
        if self.weights.len() != self.features.len() {
            return Err(format!("{} weights for {} features", self.weights.len(), self.features.len()));
        }
        let numbers = self.features.iter().flat_map(|f| [f.mean, f.std]).chain(self.weights.iter().copied());
        if !numbers.chain([self.intercept]).all(f64::is_finite) {
            return Err("a mean, standard deviation, weight or the intercept is not finite".to_owned());
        }
        if let Some(feature) = self.features.iter().find(|f| f.std <= 0.0) {
            return Err(format!("feature {} has standard deviation {}; it must be positive", feature.name, feature.std));
        }
        Ok(())
    }
}

fn check_fit_input(samples: &[CalibrationSample], l2: f64) -> Result<(), CalibrationError> {
    let good = samples.iter().filter(|s| s.good).count();
    let poor = samples.len() - good;
    if samples.len() < MIN_STUDIES || good < MIN_PER_CLASS || poor < MIN_PER_CLASS {
        return Err(CalibrationError::Fit(format!(
            "{} assessable studies ({good} good, {poor} poor); the fit needs at least {MIN_STUDIES}, with {MIN_PER_CLASS} of each",
            samples.len()
        )));
    }
    if !(l2 > 0.0 && l2 <= 1.0) {
        return Err(CalibrationError::Fit(format!("l2 {l2} must be in (0, 1]")));
    }
    Ok(())
}

fn feature_scale(samples: &[CalibrationSample], name: &str) -> FeatureScale {
    let values: Vec<f64> = samples.iter().filter_map(|s| s.components.get(name).copied()).filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return FeatureScale { name: name.to_owned(), mean: 0.0, std: 1.0 };
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    let std = if variance.sqrt() > 1e-9 { variance.sqrt() } else { 1.0 };
    FeatureScale { name: name.to_owned(), mean, std }
}

fn standardized(features: &[FeatureScale], components: &BTreeMap<String, f64>) -> Vec<f64> {
    let value = |f: &FeatureScale| components.get(&f.name).copied().filter(|v| v.is_finite()).unwrap_or(f.mean);
    features.iter().map(|f| (value(f) - f.mean) / f.std).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dice_component: f64, input_quality: f64, good: bool) -> CalibrationSample {
        let components = [
            ("entropy", 0.95),
            ("tta_agreement", 0.97),
            ("unet_vs_threshold_dice", dice_component),
            ("plausibility", 1.0),
            ("input_quality", input_quality),
        ];
        let components = components.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        CalibrationSample { components, good }
    }

    fn samples() -> Vec<CalibrationSample> {
        vec![
            sample(0.6, 1.0, true),
            sample(0.5, 1.0, true),
            sample(0.4, 1.0, true),
            sample(0.2, 0.75, false),
            sample(0.15, 0.7, false),
            sample(0.3, 0.7, false),
            sample(0.45, 1.0, false),
            sample(0.25, 0.75, true),
        ]
    }

    #[test]
    fn fit_ranks_good_above_poor() {
        let calibration = ScoreCalibration::fit(&samples(), DEFAULT_L2, 0.5, vec![2001]).unwrap();
        let good = calibration.probability_good(&sample(0.6, 1.0, true).components);
        let poor = calibration.probability_good(&sample(0.15, 0.7, false).components);
        assert!(good > 0.5, "good study {good}");
        assert!(poor < 0.5, "poor study {poor}");
        assert_eq!(calibration.fitted_studies, 8);
        assert_eq!(calibration.fitted_poor, 4);

        // Plausibility is 1 in every study, so it keeps a zero weight and a unit scale.
        let index = FEATURES.iter().position(|f| *f == "plausibility").unwrap();
        assert_eq!(calibration.weights[index], 0.0);
        assert_eq!(calibration.features[index].std, 1.0);
    }

    #[test]
    fn fit_matches_gradient_zero() {
        // At the optimum the gradient of the penalized loss vanishes: the mean residual is 0 and
        // each feature's mean residual times value equals -l2 times its weight.
        let samples = samples();
        let calibration = ScoreCalibration::fit(&samples, DEFAULT_L2, 0.5, vec![2001]).unwrap();
        let rows: Vec<Vec<f64>> = samples.iter().map(|s| standardized(&calibration.features, &s.components)).collect();
        let residuals: Vec<f64> = samples
            .iter()
            .zip(&rows)
            .map(|(s, row)| sigmoid(calibration.intercept + dot(&calibration.weights, row)) - f64::from(u8::from(s.good)))
            .collect();
        let n = samples.len() as f64;
        assert!((residuals.iter().sum::<f64>() / n).abs() < 1e-6);
        for (j, weight) in calibration.weights.iter().enumerate() {
            let gradient = residuals.iter().zip(&rows).map(|(r, row)| r * row[j]).sum::<f64>() / n + DEFAULT_L2 * weight;
            assert!(gradient.abs() < 1e-6, "feature {j}: gradient {gradient}");
        }
    }

    #[test]
    fn fit_needs_both_outcomes() {
        let all_good: Vec<_> = samples().into_iter().map(|mut s| {
            s.good = true;
            s
        }).collect();
        let error = ScoreCalibration::fit(&all_good, DEFAULT_L2, 0.5, vec![2001]).unwrap_err();
        assert!(error.to_string().contains("0 poor"), "{error}");
        assert!(ScoreCalibration::fit(&samples()[..4], DEFAULT_L2, 0.5, vec![]).is_err());
        assert!(ScoreCalibration::fit(&samples(), 0.0, 0.5, vec![]).is_err());
    }

    #[test]
    fn unassessable_score_stays_zero() {
        let calibration = ScoreCalibration::fit(&samples(), DEFAULT_L2, 0.5, vec![2001]).unwrap();
        let mut confidence = Confidence {
            score: 0.0,
            components: sample(0.6, 1.0, true).components,
            assessable: false,
            reasons: vec!["patient motion of 13.0 mm exceeds 5.0 mm".to_owned()],
        };
        calibration.apply(&mut confidence);
        assert_eq!(confidence.score, 0.0);
        confidence.assessable = true;
        calibration.apply(&mut confidence);
        assert!(confidence.score > 0.5, "{}", confidence.score);
    }

    #[test]
    fn file_round_trips_and_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ScoreCalibration::read(dir.path()).unwrap().is_none());
        let calibration = ScoreCalibration::fit(&samples(), DEFAULT_L2, 0.5, vec![2001, 2002]).unwrap();
        calibration.write(&dir.path().join(CALIBRATION_FILE)).unwrap();
        let read = ScoreCalibration::read(dir.path()).unwrap().unwrap();
        assert_eq!(read.fitted_seeds, vec![2001, 2002]);
        assert_eq!(read.features.len(), FEATURES.len());
        // JSON keeps about 16 significant digits, so compare the scores it gives.
        for sample in samples() {
            let difference = read.probability_good(&sample.components) - calibration.probability_good(&sample.components);
            assert!(difference.abs() < 1e-12, "{difference}");
        }

        let mut broken = calibration;
        broken.weights.pop();
        broken.write(&dir.path().join(CALIBRATION_FILE)).unwrap();
        let error = ScoreCalibration::read(dir.path()).unwrap_err();
        assert!(error.to_string().contains("4 weights for 5 features"), "{error}");
    }
}
