//! Agreement metrics between estimated and true maps or masks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Returns Pearson's correlation of paired samples, or `None` with fewer than two pairs, unequal
/// lengths or a constant input.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let n = a.len() as f64;
    let (mean_a, mean_b) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let mut cov = 0.0;
    let (mut var_a, mut var_b) = (0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        cov += (x - mean_a) * (y - mean_b);
        var_a += (x - mean_a).powi(2);
        var_b += (y - mean_b).powi(2);
    }
    let denominator = (var_a * var_b).sqrt();
    (denominator > 0.0).then(|| cov / denominator)
}

/// Bias of estimates against truth within one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassBias {
    pub count: usize,
    /// Mean of `estimate - truth`.
    pub mean_bias: f64,
    /// Median of `(estimate - truth) / truth` over voxels with non-zero truth.
    pub median_relative_bias: Option<f64>,
}

/// Returns the bias of `estimate` against `truth` for each class id in `classes`.
pub fn bias_by_class(estimate: &[f64], truth: &[f64], classes: &[u8]) -> BTreeMap<u8, ClassBias> {
    let mut grouped: BTreeMap<u8, Vec<(f64, f64)>> = BTreeMap::new();
    for ((&e, &t), &c) in estimate.iter().zip(truth).zip(classes) {
        grouped.entry(c).or_default().push((e, t));
    }
    grouped
        .into_iter()
        .map(|(class, pairs)| {
            let mean_bias = pairs.iter().map(|(e, t)| e - t).sum::<f64>() / pairs.len() as f64;
            let mut relative: Vec<f64> = pairs
                .iter()
                .filter(|(_, t)| *t != 0.0)
                .map(|(e, t)| (e - t) / t)
                .collect();
            let median_relative_bias = crate::concentration::median_in_place(&mut relative);
            (
                class,
                ClassBias {
                    count: pairs.len(),
                    mean_bias,
                    median_relative_bias,
                },
            )
        })
        .collect()
}

/// Returns the Dice coefficient 2|A∩B| / (|A| + |B|), or `None` when both masks are empty.
pub fn dice<'a>(
    a: impl IntoIterator<Item = &'a bool>,
    b: impl IntoIterator<Item = &'a bool>,
) -> Option<f64> {
    let (mut both, mut total) = (0usize, 0usize);
    for (&x, &y) in a.into_iter().zip(b) {
        both += (x && y) as usize;
        total += x as usize + y as usize;
    }
    (total > 0).then(|| 2.0 * both as f64 / total as f64)
}

/// Difference between an estimated and a true volume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VolumeError {
    /// `estimate - truth` in mL.
    pub difference_ml: f64,
    /// `difference / truth`, `None` when the truth is 0.
    pub relative: Option<f64>,
}

/// Returns the volume error of `estimate_ml` against `truth_ml`.
pub fn volume_error(estimate_ml: f64, truth_ml: f64) -> VolumeError {
    let difference_ml = estimate_ml - truth_ml;
    VolumeError {
        difference_ml,
        relative: (truth_ml != 0.0).then(|| difference_ml / truth_ml),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_of_known_pairs() {
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        // x = 1, 2, 3, 4 and y = 1, 3, 2, 4: co-deviation sum 4.0, squared sums 5.0 each, r = 0.8.
        assert!(
            (pearson(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap() - 0.8).abs() < 1e-12
        );
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(pearson(&[1.0], &[1.0]), None);
    }

    #[test]
    fn bias_per_class() {
        let bias = bias_by_class(&[12.0, 8.0, 5.0], &[10.0, 10.0, 0.0], &[1, 1, 2]);
        assert_eq!(bias[&1].count, 2);
        assert_eq!(bias[&1].mean_bias, 0.0);
        // Relative biases +0.2 and -0.2; the upper median is +0.2.
        assert!((bias[&1].median_relative_bias.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(bias[&2].mean_bias, 5.0);
        assert_eq!(bias[&2].median_relative_bias, None);
    }

    #[test]
    fn dice_of_masks() {
        let a = [true, true, false, false];
        let b = [true, false, true, false];
        assert_eq!(dice(&a, &b), Some(0.5));
        assert_eq!(dice(&[false], &[false]), None);
    }

    #[test]
    fn volume_errors() {
        let error = volume_error(55.0, 50.0);
        assert_eq!(error.difference_ml, 5.0);
        assert_eq!(error.relative, Some(0.1));
        assert_eq!(volume_error(3.0, 0.0).relative, None);
    }
}
