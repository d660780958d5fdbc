//! Segmentation metrics per class: Dice, Tversky coefficient, HD95 and volume error.
//!
//! Classes are penumbra (label 1), core (label 2) and the hypoperfused lesion (label 1 or 2).
//! An overlap score is `None` when both masks are empty, because it is undefined there.

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Scores of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// `penumbra`, `core` or `lesion`.
    pub class: String,
    pub dice: Option<f64>,
    /// Tversky index with the evaluation's alpha (false positives) and beta (false negatives).
    pub tversky: Option<f64>,
    /// 95th percentile of surface distances in mm, `None` when either mask is empty.
    pub hd95_mm: Option<f64>,
    pub predicted_ml: f64,
    pub reference_ml: f64,
    /// `predicted_ml - reference_ml`.
    pub volume_error_ml: f64,
}

/// Scores of one predicted label volume against its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub alpha: f64,
    pub beta: f64,
    pub classes: Vec<ClassMetrics>,
}

/// Overlap counts of a predicted mask against a reference mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    pub true_positive: u64,
    pub false_positive: u64,
    pub false_negative: u64,
}

impl Confusion {
    /// Counts over two masks of the same length.
    pub fn from_masks(
        predicted: impl IntoIterator<Item = bool>,
        reference: impl IntoIterator<Item = bool>,
    ) -> Self {
        let mut counts = Confusion::default();
        for (p, r) in predicted.into_iter().zip(reference) {
            match (p, r) {
                (true, true) => counts.true_positive += 1,
                (true, false) => counts.false_positive += 1,
                (false, true) => counts.false_negative += 1,
                (false, false) => {}
            }
        }
        counts
    }

    /// Returns `2 TP / (2 TP + FP + FN)`, `None` when both masks are empty.
    pub fn dice(&self) -> Option<f64> {
        self.tversky(0.5, 0.5)
    }

    /// Returns `TP / (TP + alpha FP + beta FN)`, `None` when both masks are empty.
    pub fn tversky(&self, alpha: f64, beta: f64) -> Option<f64> {
        let tp = self.true_positive as f64;
        let denominator =
            tp + alpha * self.false_positive as f64 + beta * self.false_negative as f64;
        (denominator > 0.0).then(|| tp / denominator)
    }
}

/// A class name and the test for whether a label value belongs to it.
type ClassDefinition = (&'static str, fn(u8) -> bool);

/// Scores `predicted` against `reference` label volumes `(z, y, x)` with voxel spacing
/// `(z, y, x)` in mm.
pub fn evaluate(
    predicted: &Array3<u8>,
    reference: &Array3<u8>,
    spacing_mm: [f64; 3],
    alpha: f64,
    beta: f64,
) -> Result<Evaluation, ModelError> {
    if predicted.dim() != reference.dim() {
        return Err(ModelError::InvalidInput(format!(
            "predicted labels {:?} and reference labels {:?} differ in shape",
            predicted.dim(),
            reference.dim()
        )));
    }
    if spacing_mm.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(ModelError::InvalidInput(format!(
            "voxel spacing {spacing_mm:?} mm must be finite and positive"
        )));
    }
    let voxel_ml = spacing_mm.iter().product::<f64>() / 1000.0;

    let classes: [ClassDefinition; 3] = [
        ("penumbra", |v| v == 1),
        ("core", |v| v == 2),
        ("lesion", |v| v != 0),
    ];
    let mut results = Vec::with_capacity(classes.len());
    for (name, member) in classes {
        let predicted_mask = predicted.mapv(member);
        let reference_mask = reference.mapv(member);
        let counts = Confusion::from_masks(
            predicted_mask.iter().copied(),
            reference_mask.iter().copied(),
        );
        let predicted_ml = (counts.true_positive + counts.false_positive) as f64 * voxel_ml;
        let reference_ml = (counts.true_positive + counts.false_negative) as f64 * voxel_ml;
        results.push(ClassMetrics {
            class: name.to_string(),
            dice: counts.dice(),
            tversky: counts.tversky(alpha, beta),
            hd95_mm: hd95(&predicted_mask, &reference_mask, spacing_mm),
            predicted_ml,
            reference_ml,
            volume_error_ml: predicted_ml - reference_ml,
        });
    }
    Ok(Evaluation {
        alpha,
        beta,
        classes: results,
    })
}

/// Returns the surface voxels of a mask: mask voxels with a 6-neighbour outside the mask or
/// outside the volume.
fn surface(mask: &Array3<bool>) -> Vec<[usize; 3]> {
    let (nz, ny, nx) = mask.dim();
    let inside = |z: i64, y: i64, x: i64| {
        z >= 0
            && y >= 0
            && x >= 0
            && (z as usize) < nz
            && (y as usize) < ny
            && (x as usize) < nx
            && mask[[z as usize, y as usize, x as usize]]
    };
    let mut points = Vec::new();
    for ((z, y, x), &value) in mask.indexed_iter() {
        if !value {
            continue;
        }
        let (z, y, x) = (z as i64, y as i64, x as i64);
        let neighbours = [
            (z - 1, y, x),
            (z + 1, y, x),
            (z, y - 1, x),
            (z, y + 1, x),
            (z, y, x - 1),
            (z, y, x + 1),
        ];
        if neighbours.iter().any(|&(a, b, c)| !inside(a, b, c)) {
            points.push([z as usize, y as usize, x as usize]);
        }
    }
    points
}

/// Returns the 95th percentile (linear interpolation) of the pooled distances from each
/// surface voxel of one mask to the nearest surface voxel of the other, in both directions.
///
/// `None` when either mask is empty. Cost grows with the product of the two surface sizes.
pub fn hd95(
    predicted: &Array3<bool>,
    reference: &Array3<bool>,
    spacing_mm: [f64; 3],
) -> Option<f64> {
    let a = surface(predicted);
    let b = surface(reference);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let nearest = |p: &[usize; 3], others: &[[usize; 3]]| {
        others
            .iter()
            .map(|q| {
                (0..3)
                    .map(|i| ((p[i] as f64 - q[i] as f64) * spacing_mm[i]).powi(2))
                    .sum::<f64>()
            })
            .fold(f64::INFINITY, f64::min)
            .sqrt()
    };
    let mut distances: Vec<f64> = a
        .iter()
        .map(|p| nearest(p, &b))
        .chain(b.iter().map(|p| nearest(p, &a)))
        .collect();
    distances.sort_by(f64::total_cmp);
    Some(percentile_sorted(&distances, 0.95))
}

/// Returns the `q` quantile of sorted values with linear interpolation between ranks.
fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let rank = q * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(range: std::ops::Range<usize>, length: usize, label: u8) -> Array3<u8> {
        Array3::from_shape_fn(
            (1, 1, length),
            |(_, _, x)| if range.contains(&x) { label } else { 0 },
        )
    }

    #[test]
    fn confusion_hand_values() {
        let counts = Confusion::from_masks(
            [true, true, true, false, false],
            [true, false, false, true, false],
        );
        assert_eq!(
            counts,
            Confusion {
                true_positive: 1,
                false_positive: 2,
                false_negative: 1
            }
        );
        assert_eq!(counts.dice(), Some(2.0 / 5.0));
        assert_eq!(counts.tversky(0.3, 0.7), Some(1.0 / (1.0 + 0.6 + 0.7)));
        assert_eq!(Confusion::default().dice(), None);
    }

    #[test]
    fn hd95_on_a_line() {
        // Every voxel of a 1x1xN line is a surface voxel. Prediction x in 0..4, reference x = 3:
        // distances 3, 2, 1, 0 and 0 in voxels, 95th percentile at rank 3.8 -> 2.8 voxels.
        let predicted = line(0..4, 8, 2).mapv(|v| v == 2);
        let reference = line(3..4, 8, 2).mapv(|v| v == 2);
        let got = hd95(&predicted, &reference, [1.0, 1.0, 0.5]).unwrap();
        assert!((got - 1.4).abs() < 1e-12, "got {got}");
        assert_eq!(
            hd95(&predicted, &Array3::from_elem((1, 1, 8), false), [1.0; 3]),
            None
        );
    }

    #[test]
    fn evaluate_volumes_and_classes() {
        let predicted = line(0..4, 8, 2);
        let reference = line(3..4, 8, 2);
        let evaluation = evaluate(&predicted, &reference, [2.0, 1.0, 0.5], 0.3, 0.7).unwrap();
        let core = &evaluation.classes[1];
        assert_eq!(core.class, "core");
        assert_eq!(core.dice, Some(2.0 / 5.0));
        // Voxel volume 1 mm^3 = 0.001 ml.
        assert!((core.predicted_ml - 0.004).abs() < 1e-12);
        assert!((core.volume_error_ml - 0.003).abs() < 1e-12);
        assert_eq!(evaluation.classes[0].dice, None, "no penumbra anywhere");
        assert_eq!(evaluation.classes[2].dice, core.dice);
        assert!(serde_json::to_string(&evaluation)
            .unwrap()
            .contains("\"hd95_mm\""));
    }

    #[test]
    fn evaluate_rejects_shape_mismatch() {
        assert!(evaluate(&line(0..1, 4, 1), &line(0..1, 5, 1), [1.0; 3], 0.3, 0.7).is_err());
    }
}
