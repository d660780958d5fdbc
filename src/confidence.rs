//! Confidence scoring: how far a radiologist can trust one study's segmentation.
//!
//! [`score`] is a pure function of the U-Net output, the threshold labels, the lesion volumes and
//! the input-quality measures that the perfusion stage reports. Every component is in `[0, 1]`,
//! where 1 is best:
//!
//! | component | formula |
//! |---|---|
//! | `entropy` | `1 - mean(H(p) / ln 3)` over the region of interest (see below) |
//! | `tta_agreement` | `1 - mean(0.5 * sum_k abs(p_k - q_k))` over the region, `q` the flipped-input probabilities; left out without them |
//! | `unet_vs_threshold_dice` | mean of the Dice of lesion (label > 0) and of core (label 2) between U-Net and threshold labels; an empty pair counts as 1 |
//! | `plausibility` | `1 - 0.5 * [core > hypoperfused] - 0.5 * [hypoperfused > max_lesion_ml]` |
//! | `input_quality` | product of the AIF, noise, motion, baseline and truncation factors |
//!
//! The region of interest is every voxel that the U-Net or the thresholds label as lesion, dilated
//! in-plane by `margin_voxels` (a square neighbourhood on each slice), so that uncertainty just
//! outside a too-small lesion counts. When no voxel is lesion the whole volume is the region.
//!
//! The model score is the weighted mean of `entropy` (0.35), `tta_agreement` (0.15),
//! `unet_vs_threshold_dice` (0.30) and `plausibility` (0.20). When a component is missing, its
//! weight is dropped and the others are renormalised. The final score is `model_score * input_quality`. An input that
//! is not assessable (no usable AIF, severe bolus truncation, motion above `max_motion_mm`) gets
//! score 0, `assessable = false` and a reason for each failed check.
//!
//! A model folder may contain a fitted logistic combination of the same components, described in
//! [`calibration`]. The confidence stage then replaces the score of an assessable study with it.

use std::collections::BTreeMap;

use ndarray::{Array3, Array4, Axis, Zip};
use penumbra_imaging::LabelVolume;
use serde::{Deserialize, Serialize};

pub mod calibration;

/// Lesion volumes in millilitres, as the export reports them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LesionVolumes {
    /// Ischemic core volume.
    pub core_ml: f64,
    /// Hypoperfused volume (Tmax above threshold), core included.
    pub hypoperfused_ml: f64,
}

/// Input-quality measures from decoding and the perfusion stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputQuality {
    /// The tissue curves were still rising or high at the last frame.
    pub bolus_truncated: bool,
    /// Peak enhancement of the arterial input function above baseline (HU); `None` when no AIF was found.
    pub aif_peak_hu: Option<f64>,
    /// Time from the first frame to the AIF peak (s); `None` when the AIF has no peak inside the scan.
    pub aif_time_to_peak_s: Option<f64>,
    /// Standard deviation of the baseline frames in brain tissue (HU).
    pub noise_sd_hu: f64,
    /// Largest rigid displacement between frames (mm).
    pub motion_mm: f64,
    /// Number of frames before bolus arrival.
    pub baseline_frames: usize,
}

/// Limits that turn the input-quality measures into factors in `[0, 1]`.
///
/// Each factor is a linear ramp between a "bad" and a "good" value. The defaults follow common CTP
/// practice: arterial peaks of 200–500 HU above baseline, noise of 7–15 HU at clinical doses, a
/// baseline of at least 4–6 frames, and motion of a few millimetres being visible in the maps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceParams {
    /// AIF peak (HU above baseline) below which the AIF is not usable.
    pub min_aif_peak_hu: f64,
    /// AIF peak (HU above baseline) from which the AIF factor is 1.
    pub good_aif_peak_hu: f64,
    /// Noise SD (HU) up to which the noise factor is 1.
    pub good_noise_sd_hu: f64,
    /// Noise SD (HU) at which the noise factor reaches 0.
    pub max_noise_sd_hu: f64,
    /// Motion (mm) up to which the motion factor is 1.
    pub good_motion_mm: f64,
    /// Motion (mm) above which the study is not assessable.
    pub max_motion_mm: f64,
    /// Baseline frames from which the baseline factor is 1; fewer scale it down linearly from 0 frames.
    pub good_baseline_frames: usize,
    /// Factor applied when the bolus is truncated but the AIF still peaks inside the scan.
    pub truncation_factor: f64,
    /// Hypoperfused volume (mL) above which the lesion is implausible for one brain.
    pub max_lesion_ml: f64,
    /// In-plane dilation (voxels) of the lesion region for the entropy and TTA means.
    pub margin_voxels: usize,
}

impl Default for ConfidenceParams {
    fn default() -> Self {
        Self {
            min_aif_peak_hu: 50.0,
            good_aif_peak_hu: 150.0,
            good_noise_sd_hu: 15.0,
            max_noise_sd_hu: 45.0,
            good_motion_mm: 1.0,
            max_motion_mm: 5.0,
            good_baseline_frames: 4,
            truncation_factor: 0.7,
            max_lesion_ml: 700.0,
            margin_voxels: 2,
        }
    }
}

/// Everything [`score`] reads.
#[derive(Debug, Clone, Copy)]
pub struct ConfidenceInputs<'a> {
    /// U-Net softmax probabilities, shape `(3, z, y, x)` on the native grid, classes in label order.
    pub probabilities: &'a Array4<f32>,
    /// Probabilities for the flipped input (test-time augmentation), flipped back; same shape.
    pub tta_probabilities: Option<&'a Array4<f32>>,
    /// U-Net labels, shape `(z, y, x)`.
    pub unet_labels: &'a LabelVolume,
    /// Threshold labels, shape `(z, y, x)`.
    pub threshold_labels: &'a LabelVolume,
    /// Lesion volumes of the U-Net labels.
    pub volumes: LesionVolumes,
    /// Input-quality measures.
    pub quality: InputQuality,
    /// Ramps and bounds.
    pub params: ConfidenceParams,
}

/// A study's confidence with the components it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    /// Overall score in `[0, 1]`; 0 when the input is not assessable.
    pub score: f64,
    /// Component name to value in `[0, 1]`, as in the module table.
    pub components: BTreeMap<String, f64>,
    /// False when the input cannot support any segmentation.
    pub assessable: bool,
    /// Plain-language reasons for every lowered component and every failed check.
    pub reasons: Vec<String>,
}

const WEIGHT_ENTROPY: f64 = 0.35;
const WEIGHT_TTA: f64 = 0.15;
const WEIGHT_DICE: f64 = 0.30;
const WEIGHT_PLAUSIBILITY: f64 = 0.20;

/// Scores one study.
///
/// Shapes that disagree (probabilities not `(3, z, y, x)` of the label grid) do not panic: the
/// model components are then 0 and a reason names the shapes.
pub fn score(inputs: &ConfidenceInputs) -> Confidence {
    let mut reasons = Vec::new();
    let mut components = BTreeMap::new();

    let (input_quality, assessable) = input_quality(&inputs.quality, &inputs.params, &mut reasons);
    components.insert("input_quality".to_owned(), input_quality);

    let plausibility = plausibility(&inputs.volumes, &inputs.params, &mut reasons);
    components.insert("plausibility".to_owned(), plausibility);

    match check_shapes(inputs) {
        Ok(()) => insert_model_components(inputs, &mut components, &mut reasons),
        Err(message) => {
            reasons.push(message);
            components.insert("entropy".to_owned(), 0.0);
            components.insert("unet_vs_threshold_dice".to_owned(), 0.0);
        }
    }

    let model_score = weighted_mean(&components);
    let score = if assessable { (model_score * input_quality).clamp(0.0, 1.0) } else { 0.0 };

    Confidence { score, components, assessable, reasons }
}

fn insert_model_components(
    inputs: &ConfidenceInputs,
    components: &mut BTreeMap<String, f64>,
    reasons: &mut Vec<String>,
) {
    let region = region_of_interest(inputs.unet_labels, inputs.threshold_labels, inputs.params.margin_voxels);

    let entropy = 1.0 - mean_normalised_entropy(inputs.probabilities, &region);
    if entropy < 0.7 {
        reasons.push(format!("the U-Net is uncertain in the lesion region (entropy component {entropy:.2})"));
    }
    components.insert("entropy".to_owned(), entropy);

    if let Some(tta) = inputs.tta_probabilities {
        let agreement = 1.0 - mean_total_variation(inputs.probabilities, tta, &region);
        if agreement < 0.8 {
            reasons.push(format!("the U-Net changes its answer on the flipped input (agreement {agreement:.2})"));
        }
        components.insert("tta_agreement".to_owned(), agreement);
    }

    let lesion_dice = dice(inputs.unet_labels, inputs.threshold_labels, |v| v > 0);
    let core_dice = dice(inputs.unet_labels, inputs.threshold_labels, |v| v == 2);
    let dice_component = 0.5 * (lesion_dice + core_dice);
    if dice_component < 0.5 {
        reasons.push(format!(
            "U-Net and threshold labels disagree (lesion Dice {lesion_dice:.2}, core Dice {core_dice:.2})"
        ));
    }
    components.insert("unet_vs_threshold_dice".to_owned(), dice_component);
}

fn check_shapes(inputs: &ConfidenceInputs) -> Result<(), String> {
    let labels = inputs.unet_labels.shape();
    let expected = [3, labels[0], labels[1], labels[2]];
    if inputs.threshold_labels.shape() != labels {
        return Err(format!(
            "threshold labels have shape {:?} but U-Net labels have {:?}",
            inputs.threshold_labels.shape(),
            labels
        ));
    }
    if inputs.probabilities.shape() != expected {
        return Err(format!("probabilities have shape {:?}, expected {:?}", inputs.probabilities.shape(), expected));
    }
    if let Some(tta) = inputs.tta_probabilities {
        if tta.shape() != expected {
            return Err(format!("flipped-input probabilities have shape {:?}, expected {:?}", tta.shape(), expected));
        }
    }
    Ok(())
}

/// Returns the input-quality factor and whether the input is assessable at all.
fn input_quality(quality: &InputQuality, params: &ConfidenceParams, reasons: &mut Vec<String>) -> (f64, bool) {
    let mut assessable = true;

    let aif_factor = match quality.aif_peak_hu {
        Some(peak) if peak.is_finite() && peak >= params.min_aif_peak_hu => {
            let factor = ramp_up(peak, params.min_aif_peak_hu, params.good_aif_peak_hu);
            if factor < 1.0 {
                reasons.push(format!("the arterial input peak is low ({peak:.0} HU above baseline)"));
            }
            factor
        }
        Some(peak) => {
            reasons.push(format!(
                "no usable arterial input: peak {peak:.0} HU is below {:.0} HU",
                params.min_aif_peak_hu
            ));
            assessable = false;
            0.0
        }
        None => {
            reasons.push("no arterial input function was found".to_owned());
            assessable = false;
            0.0
        }
    };

    let truncation_factor = match (quality.bolus_truncated, quality.aif_time_to_peak_s) {
        (false, _) => 1.0,
        (true, Some(_)) => {
            reasons.push("the bolus is truncated: the scan ended before the tissue curves returned".to_owned());
            params.truncation_factor
        }
        (true, None) => {
            reasons.push("severe bolus truncation: the arterial input has no peak inside the scan".to_owned());
            assessable = false;
            0.0
        }
    };

    let noise_factor = ramp_down(quality.noise_sd_hu, params.good_noise_sd_hu, params.max_noise_sd_hu);
    if noise_factor < 1.0 {
        reasons.push(format!("image noise is high ({:.1} HU)", quality.noise_sd_hu));
    }

    let motion_factor = ramp_down(quality.motion_mm, params.good_motion_mm, params.max_motion_mm);
    if quality.motion_mm.is_nan() {
        reasons.push("patient motion was not measured (NaN)".to_owned());
        assessable = false;
    } else if quality.motion_mm > params.max_motion_mm {
        reasons.push(format!(
            "patient motion of {:.1} mm exceeds {:.1} mm",
            quality.motion_mm, params.max_motion_mm
        ));
        assessable = false;
    } else if motion_factor < 1.0 {
        reasons.push(format!("patient motion of {:.1} mm", quality.motion_mm));
    }

    let good_baseline = params.good_baseline_frames.max(1) as f64;
    let baseline_factor = (quality.baseline_frames as f64 / good_baseline).min(1.0);
    if baseline_factor < 1.0 {
        reasons.push(format!(
            "only {} baseline frames before bolus arrival (want {})",
            quality.baseline_frames, params.good_baseline_frames
        ));
    }

    let factor = aif_factor * truncation_factor * noise_factor * motion_factor * baseline_factor;
    (factor, assessable)
}

fn plausibility(volumes: &LesionVolumes, params: &ConfidenceParams, reasons: &mut Vec<String>) -> f64 {
    let mut value = 1.0;
    if volumes.core_ml > volumes.hypoperfused_ml {
        reasons.push(format!(
            "core ({:.1} mL) is larger than the hypoperfused volume ({:.1} mL)",
            volumes.core_ml, volumes.hypoperfused_ml
        ));
        value -= 0.5;
    }
    if volumes.hypoperfused_ml > params.max_lesion_ml {
        reasons.push(format!(
            "hypoperfused volume {:.0} mL exceeds the plausible maximum of {:.0} mL",
            volumes.hypoperfused_ml, params.max_lesion_ml
        ));
        value -= 0.5;
    }
    value
}

/// Marks every voxel within `margin` in-plane voxels of a lesion voxel of either label volume.
/// Returns an all-true mask when neither volume has a lesion voxel.
fn region_of_interest(unet: &LabelVolume, threshold: &LabelVolume, margin: usize) -> Array3<bool> {
    let lesion = Zip::from(unet).and(threshold).map_collect(|&a, &b| a > 0 || b > 0);
    if !lesion.iter().any(|&v| v) {
        return Array3::from_elem(lesion.raw_dim(), true);
    }

    let (_, height, width) = lesion.dim();
    let mut region = Array3::from_elem(lesion.raw_dim(), false);
    for ((z, y, x), _) in lesion.indexed_iter().filter(|(_, &v)| v) {
        let y_range = y.saturating_sub(margin)..=(y + margin).min(height - 1);
        for yy in y_range {
            let x_range = x.saturating_sub(margin)..=(x + margin).min(width - 1);
            for xx in x_range {
                region[(z, yy, xx)] = true;
            }
        }
    }
    region
}

/// Returns the mean of the softmax entropy divided by `ln 3` over the region, in `[0, 1]`.
fn mean_normalised_entropy(probabilities: &Array4<f32>, region: &Array3<bool>) -> f64 {
    let norm = 3f64.ln();
    let mut sum = 0.0;
    let mut count = 0usize;
    for ((z, y, x), _) in region.indexed_iter().filter(|(_, &v)| v) {
        let mut entropy = 0.0;
        for class in 0..3 {
            let p = f64::from(probabilities[(class, z, y, x)]);
            if p.is_finite() && p > 0.0 {
                entropy -= p * p.ln();
            }
        }
        sum += (entropy / norm).clamp(0.0, 1.0);
        count += 1;
    }
    if count == 0 { 1.0 } else { sum / count as f64 }
}

/// Returns the mean total-variation distance between two class distributions over the region.
fn mean_total_variation(a: &Array4<f32>, b: &Array4<f32>, region: &Array3<bool>) -> f64 {
    let mut sum = 0.0;
    let mut count = 0usize;
    for ((z, y, x), _) in region.indexed_iter().filter(|(_, &v)| v) {
        let mut distance = 0.0;
        for class in 0..a.len_of(Axis(0)) {
            distance += (f64::from(a[(class, z, y, x)]) - f64::from(b[(class, z, y, x)])).abs();
        }
        let distance = 0.5 * distance;
        sum += if distance.is_finite() { distance.clamp(0.0, 1.0) } else { 1.0 };
        count += 1;
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Returns the Dice coefficient of the voxels selected by `member` in two label volumes; 1 when
/// both are empty.
fn dice(a: &LabelVolume, b: &LabelVolume, member: impl Fn(u8) -> bool) -> f64 {
    let mut both = 0usize;
    let mut in_a = 0usize;
    let mut in_b = 0usize;
    Zip::from(a).and(b).for_each(|&va, &vb| {
        let (ma, mb) = (member(va), member(vb));
        in_a += usize::from(ma);
        in_b += usize::from(mb);
        both += usize::from(ma && mb);
    });
    if in_a + in_b == 0 { 1.0 } else { 2.0 * both as f64 / (in_a + in_b) as f64 }
}

fn weighted_mean(components: &BTreeMap<String, f64>) -> f64 {
    let weights = [
        ("entropy", WEIGHT_ENTROPY),
        ("tta_agreement", WEIGHT_TTA),
        ("unet_vs_threshold_dice", WEIGHT_DICE),
        ("plausibility", WEIGHT_PLAUSIBILITY),
    ];
    let mut total = 0.0;
    let mut weight_sum = 0.0;
    for (name, weight) in weights {
        if let Some(value) = components.get(name) {
            total += weight * value;
            weight_sum += weight;
        }
    }
    if weight_sum == 0.0 { 0.0 } else { total / weight_sum }
}

/// Returns 0 at or below `low`, 1 at or above `high`, linear between. NaN gives 0.
fn ramp_up(value: f64, low: f64, high: f64) -> f64 {
    if value.is_nan() {
        return 0.0;
    }
    if high <= low {
        return if value >= low { 1.0 } else { 0.0 };
    }
    ((value - low) / (high - low)).clamp(0.0, 1.0)
}

/// Returns 1 at or below `good`, 0 at or above `bad`, linear between. NaN gives 0.
fn ramp_down(value: f64, good: f64, bad: f64) -> f64 {
    if value.is_nan() {
        return 0.0;
    }
    1.0 - ramp_up(value, good, bad)
}
