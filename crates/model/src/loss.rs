//! Segmentation losses on softmax probabilities against one-hot targets.
//!
//! Every loss takes `probs` and `targets` shaped `(batch, classes, h, w)`. The overlap losses sum
//! true positives, false positives and false negatives per class over the whole batch and compute
//! one index per class. They average the per-class losses with equal weight, so a small core
//! counts as much as the large background.

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

/// Added to numerator and denominator of the overlap indices so an empty class scores 1, not NaN.
pub const SMOOTH: f64 = 1e-6;

/// Smallest probability fed to the logarithm in cross-entropy.
const MIN_PROBABILITY: f64 = 1e-7;

/// The loss the training loop minimizes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LossKind {
    /// `1 - TP / (TP + alpha FP + beta FN)` per class. `beta > alpha` penalizes missed lesion
    /// more than over-segmentation.
    Tversky { alpha: f64, beta: f64 },
    /// `(1 - Tversky index)^gamma` per class; `gamma < 1` raises the loss of classes that are
    /// already segmented fairly well less than that of poorly segmented ones.
    FocalTversky { alpha: f64, beta: f64, gamma: f64 },
    /// `1 - 2 TP / (2 TP + FP + FN)` per class.
    Dice,
    /// Mean over pixels of `-sum_c target_c ln(prob_c)`.
    CrossEntropy,
}

impl Default for LossKind {
    /// Tversky with alpha 0.3 on false positives and beta 0.7 on false negatives.
    fn default() -> Self {
        LossKind::Tversky {
            alpha: 0.3,
            beta: 0.7,
        }
    }
}

impl LossKind {
    /// Computes this loss as a scalar tensor.
    pub fn compute(&self, probs: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
        match *self {
            LossKind::Tversky { alpha, beta } => tversky_loss(probs, targets, alpha, beta),
            LossKind::FocalTversky { alpha, beta, gamma } => {
                focal_tversky_loss(probs, targets, alpha, beta, gamma)
            }
            LossKind::Dice => dice_loss(probs, targets),
            LossKind::CrossEntropy => cross_entropy(probs, targets),
        }
    }
}

/// Returns the per-class Tversky index `(TP + s) / (TP + alpha FP + beta FN + s)` as a
/// `(classes,)` tensor.
pub fn tversky_index(
    probs: &Tensor,
    targets: &Tensor,
    alpha: f64,
    beta: f64,
) -> candle_core::Result<Tensor> {
    let per_class = |t: &Tensor| -> candle_core::Result<Tensor> {
        t.transpose(0, 1)?.flatten_from(1)?.sum(D::Minus1)
    };
    let true_positive = per_class(&(probs * targets)?)?;
    let false_positive = per_class(&probs.mul(&targets.affine(-1.0, 1.0)?)?)?;
    let false_negative = per_class(&probs.affine(-1.0, 1.0)?.mul(targets)?)?;

    let numerator = (&true_positive + SMOOTH)?;
    let denominator = ((true_positive + (false_positive * alpha)?)? + (false_negative * beta)?)?;
    numerator.div(&(denominator + SMOOTH)?)
}

/// Returns the mean over classes of `1 - Tversky index`.
pub fn tversky_loss(
    probs: &Tensor,
    targets: &Tensor,
    alpha: f64,
    beta: f64,
) -> candle_core::Result<Tensor> {
    tversky_index(probs, targets, alpha, beta)?
        .affine(-1.0, 1.0)?
        .mean_all()
}

/// Returns the mean over classes of `(1 - Tversky index)^gamma`.
pub fn focal_tversky_loss(
    probs: &Tensor,
    targets: &Tensor,
    alpha: f64,
    beta: f64,
    gamma: f64,
) -> candle_core::Result<Tensor> {
    // Clamping keeps the power's gradient finite when a class is segmented perfectly.
    let complement = tversky_index(probs, targets, alpha, beta)?
        .affine(-1.0, 1.0)?
        .clamp(1e-7, 1.0)?;
    complement.powf(gamma)?.mean_all()
}

/// Returns the mean over classes of `1 - soft Dice`, which is the Tversky loss with alpha and
/// beta both 0.5.
pub fn dice_loss(probs: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    tversky_loss(probs, targets, 0.5, 0.5)
}

/// Returns the pixel-averaged cross-entropy `-sum_c target_c ln(max(prob_c, 1e-7))`.
pub fn cross_entropy(probs: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let log_probs = probs.clamp(MIN_PROBABILITY, 1.0)?.log()?;
    let per_pixel = (targets * log_probs)?.sum(1)?;
    per_pixel.mean_all()?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two classes on a 1x2x2x2 tensor; class 0 probabilities 0.8, 0.6, 0.3, 0.1 with targets
    /// 1, 1, 0, 0; class 1 the complement.
    fn tiny() -> (Tensor, Tensor) {
        let p0 = [0.8f32, 0.6, 0.3, 0.1];
        let g0 = [1f32, 1.0, 0.0, 0.0];
        let probs: Vec<f32> = p0
            .iter()
            .copied()
            .chain(p0.iter().map(|p| 1.0 - p))
            .collect();
        let targets: Vec<f32> = g0
            .iter()
            .copied()
            .chain(g0.iter().map(|g| 1.0 - g))
            .collect();
        let probs = Tensor::from_vec(probs, (1, 2, 2, 2), &Device::Cpu).unwrap();
        let targets = Tensor::from_vec(targets, (1, 2, 2, 2), &Device::Cpu).unwrap();
        (probs, targets)
    }

    fn scalar(t: Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    // By hand: class 0 has TP 1.4, FP 0.4, FN 0.6; class 1 has TP 1.6, FP 0.6, FN 0.4.

    #[test]
    fn tversky_index_hand_values() {
        let (p, g) = tiny();
        let index: Vec<f32> = tversky_index(&p, &g, 0.3, 0.7).unwrap().to_vec1().unwrap();
        // 1.4 / (1.4 + 0.12 + 0.42) = 0.721649; 1.6 / (1.6 + 0.18 + 0.28) = 0.776699.
        assert!((index[0] as f64 - 1.4 / 1.94).abs() < 1e-5, "{index:?}");
        assert!((index[1] as f64 - 1.6 / 2.06).abs() < 1e-5, "{index:?}");
    }

    #[test]
    fn tversky_loss_hand_value() {
        let (p, g) = tiny();
        let expected = 1.0 - (1.4 / 1.94 + 1.6 / 2.06) / 2.0;
        assert!((scalar(tversky_loss(&p, &g, 0.3, 0.7).unwrap()) - expected).abs() < 1e-5);
        assert!((scalar(LossKind::default().compute(&p, &g).unwrap()) - expected).abs() < 1e-5);
    }

    #[test]
    fn focal_tversky_hand_value() {
        let (p, g) = tiny();
        let expected = ((1.0 - 1.4 / 1.94f64).powf(0.75) + (1.0 - 1.6 / 2.06f64).powf(0.75)) / 2.0;
        let got = scalar(focal_tversky_loss(&p, &g, 0.3, 0.7, 0.75).unwrap());
        assert!(
            (got - expected).abs() < 1e-5,
            "got {got}, expected {expected}"
        );
    }

    #[test]
    fn dice_hand_value() {
        let (p, g) = tiny();
        // Class 0: 2.8 / (2.8 + 1.0) ; class 1: 3.2 / (3.2 + 1.0).
        let expected = 1.0 - (2.8 / 3.8 + 3.2 / 4.2) / 2.0;
        let got = scalar(dice_loss(&p, &g).unwrap());
        assert!(
            (got - expected).abs() < 1e-5,
            "got {got}, expected {expected}"
        );
    }

    #[test]
    fn cross_entropy_hand_value() {
        let (p, g) = tiny();
        // Pixels: -ln 0.8, -ln 0.6, -ln 0.7, -ln 0.9, averaged.
        let expected = -(0.8f64.ln() + 0.6f64.ln() + 0.7f64.ln() + 0.9f64.ln()) / 4.0;
        let got = scalar(cross_entropy(&p, &g).unwrap());
        assert!(
            (got - expected).abs() < 1e-5,
            "got {got}, expected {expected}"
        );
    }

    #[test]
    fn perfect_prediction_has_zero_overlap_loss() {
        let (_, g) = tiny();
        assert!(scalar(tversky_loss(&g, &g, 0.3, 0.7).unwrap()).abs() < 1e-5);
        assert!(scalar(dice_loss(&g, &g).unwrap()).abs() < 1e-5);
    }

    #[test]
    fn beta_weights_false_negatives() {
        // Class 0 misses more (FN 0.6) than it over-segments (FP 0.4), so raising beta above
        // alpha must raise the loss.
        let (p, g) = tiny();
        let index_fn_heavy: Vec<f32> = tversky_index(&p, &g, 0.3, 0.7).unwrap().to_vec1().unwrap();
        let index_fp_heavy: Vec<f32> = tversky_index(&p, &g, 0.7, 0.3).unwrap().to_vec1().unwrap();
        assert!(index_fn_heavy[0] < index_fp_heavy[0]);
    }
}
