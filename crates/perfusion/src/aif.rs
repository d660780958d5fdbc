//! Automatic arterial input function (AIF) and venous output function (VOF) selection.
//!
//! Candidates are the intracranial voxels with the highest peak enhancement. Their first
//! moments (bolus centre times) are split into an early and a late cluster by 1-D 2-means. The
//! AIF averages the early voxels with the highest peak-to-width ratio (early, high, narrow).
//! The VOF averages the late voxels with the highest peaks, such as the sinus. Ranking the VOF
//! by area under the curve instead favours voxels whose baseline noise raised the whole curve.
//! That area is the numerator of the partial-volume scale, and at 20 mAs the bias inflated the
//! scale to 1.3-1.55 on phantoms whose scale is about 1.05.

use serde::{Deserialize, Serialize};

use crate::concentration::Series;
use crate::error::PerfusionError;
use crate::params::AifParams;

/// Voxels whose time to peak differs from the cluster's median by more frames than this are
/// dropped from the average.
const MAX_PEAK_SHIFT_FRAMES: usize = 1;

/// A late cluster whose centre is less than this many seconds after the early one is the same
/// vessel population, and no VOF is reported.
const MIN_VENOUS_DELAY_S: f64 = 1.0;

/// Late voxels must peak at least at this fraction of the AIF peak to form the VOF. Sinus
/// curves peak near or above arterial ones, while noisy tissue that passed the candidate
/// threshold peaks far lower.
const MIN_VOF_PEAK_FRACTION: f64 = 0.5;

/// An averaged input or output curve in ΔHU on the analysis time grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// Sample times in seconds from the first analysed frame.
    pub times_s: Vec<f64>,
    /// Enhancement over baseline in HU, one per sample time.
    pub values_hu: Vec<f64>,
    /// Voxels averaged into the curve, as `(z, y, x)` indices.
    pub voxels: Vec<[usize; 3]>,
    pub peak_hu: f64,
    pub time_to_peak_s: f64,
    /// Full width at half maximum in seconds.
    pub fwhm_s: f64,
    /// Area under the curve in HU·s.
    pub auc_hu_s: f64,
}

/// Shape descriptors of one curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurveFeatures {
    pub peak: f64,
    pub peak_index: usize,
    pub fwhm_s: f64,
    pub auc: f64,
    /// Centre of mass in time of the positive part of the curve, in seconds.
    pub first_moment_s: f64,
}

/// Computes the peak, FWHM, area and first moment of `values` sampled every `dt_s` seconds.
///
/// When the curve has not fallen to half its peak by the last sample, the FWHM ends there.
pub fn curve_features(values: &[f64], dt_s: f64) -> CurveFeatures {
    let (peak_index, peak) =
        values
            .iter()
            .copied()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (i, v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            });
    let half = peak / 2.0;

    let mut left = 0.0;
    for i in (0..peak_index).rev() {
        if values[i] < half {
            left = i as f64 + (half - values[i]) / (values[i + 1] - values[i]);
            break;
        }
    }
    let mut right = (values.len() - 1) as f64;
    for i in peak_index + 1..values.len() {
        if values[i] < half {
            right = (i - 1) as f64 + (values[i - 1] - half) / (values[i - 1] - values[i]);
            break;
        }
    }

    let positive_sum: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let moment: f64 = values
        .iter()
        .enumerate()
        .map(|(i, v)| i as f64 * v.max(0.0))
        .sum();
    let first_moment_s = if positive_sum > 0.0 {
        moment / positive_sum * dt_s
    } else {
        0.0
    };

    CurveFeatures {
        peak,
        peak_index,
        fwhm_s: (right - left) * dt_s,
        auc: values.iter().sum::<f64>() * dt_s,
        first_moment_s,
    }
}

/// The AIF and, when a distinct late cluster exists, the VOF.
#[derive(Debug, Clone)]
pub struct InputCurves {
    pub aif: Curve,
    pub vof: Option<Curve>,
}

/// Selects the AIF and VOF among `region` voxels of a ΔHU series.
pub fn select_input_curves(
    series: &Series,
    region: &[bool],
    params: &AifParams,
) -> Result<InputCurves, PerfusionError> {
    let candidates = top_candidates(series, region, params);
    if candidates.is_empty() {
        return Err(PerfusionError::NoArterialInput {
            min_peak_hu: params.min_peak_hu,
        });
    }

    // Ranking on raw curves favours voxels whose noise happens to raise the peak or narrow the
    // bolus. The ranking features therefore come from lightly smoothed curves, while the
    // averaged AIF and VOF keep the raw samples.
    let features: Vec<(usize, CurveFeatures)> = candidates
        .iter()
        .map(|&v| {
            (
                v,
                curve_features(&smooth_binomial(&series.curve(v)), series.dt_s),
            )
        })
        .collect();
    let moments: Vec<f64> = features.iter().map(|(_, f)| f.first_moment_s).collect();
    let (early_centre, late_centre, is_late) = two_means(&moments);

    let early: Vec<(usize, CurveFeatures)> = features
        .iter()
        .zip(&is_late)
        .filter(|(_, &late)| !late)
        .map(|(f, _)| *f)
        .collect();
    let late: Vec<(usize, CurveFeatures)> = features
        .iter()
        .zip(&is_late)
        .filter(|(_, &late)| late)
        .map(|(f, _)| *f)
        .collect();

    let aif_voxels = best_by(&early, params.voxel_count, |f| {
        f.peak / f.fwhm_s.max(series.dt_s)
    });
    let aif = average_curve(series, &aif_voxels);

    let venous: Vec<(usize, CurveFeatures)> = late
        .into_iter()
        .filter(|(_, f)| f.peak >= MIN_VOF_PEAK_FRACTION * aif.peak_hu)
        .collect();
    let vof = if !venous.is_empty() && late_centre - early_centre >= MIN_VENOUS_DELAY_S {
        let vof_voxels = best_by(&venous, params.voxel_count, |f| f.peak);
        Some(average_curve(series, &vof_voxels))
    } else {
        None
    };
    Ok(InputCurves { aif, vof })
}

/// Returns `values` convolved with the binomial kernel `[1, 2, 1] / 4`, renormalised at the
/// ends.
fn smooth_binomial(values: &[f64]) -> Vec<f64> {
    let last = values.len().saturating_sub(1);
    (0..values.len())
        .map(|i| {
            let mut sum = 2.0 * values[i];
            let mut weight = 2.0;
            if i > 0 {
                sum += values[i - 1];
                weight += 1.0;
            }
            if i < last {
                sum += values[i + 1];
                weight += 1.0;
            }
            sum / weight
        })
        .collect()
}

/// Returns the region voxels with the highest peaks: at least `3 * voxel_count`, or the
/// candidate fraction of the region, all with a peak of at least `min_peak_hu`.
fn top_candidates(series: &Series, region: &[bool], params: &AifParams) -> Vec<usize> {
    let n = series.voxels();
    let mut peak = series.frame(0).to_vec();
    for t in 1..series.frames {
        for (p, &value) in peak.iter_mut().zip(series.frame(t)) {
            *p = p.max(value);
        }
    }

    let mut ranked: Vec<usize> = (0..n)
        .filter(|&v| region[v] && peak[v].is_finite() && peak[v] >= params.min_peak_hu)
        .collect();
    ranked.sort_by(|&a, &b| peak[b].total_cmp(&peak[a]));

    let region_count = region.iter().filter(|&&r| r).count();
    let wanted = ((params.candidate_fraction * region_count as f64).ceil() as usize)
        .max(3 * params.voxel_count);
    ranked.truncate(wanted);
    ranked
}

/// Splits `values` into two clusters by 1-D k-means; returns both centres and, per value,
/// whether it is in the later cluster.
fn two_means(values: &[f64]) -> (f64, f64, Vec<bool>) {
    let mut low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let mut high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut is_late = vec![false; values.len()];

    for _ in 0..50 {
        for (late, &v) in is_late.iter_mut().zip(values) {
            *late = (v - high).abs() < (v - low).abs();
        }
        let mean_of = |want: bool| {
            let chosen: Vec<f64> = values
                .iter()
                .zip(&is_late)
                .filter(|(_, &l)| l == want)
                .map(|(v, _)| *v)
                .collect();
            (!chosen.is_empty()).then(|| chosen.iter().sum::<f64>() / chosen.len() as f64)
        };
        let (new_low, new_high) = (mean_of(false).unwrap_or(low), mean_of(true).unwrap_or(high));
        if new_low == low && new_high == high {
            break;
        }
        (low, high) = (new_low, new_high);
    }
    (low, high, is_late)
}

/// Returns up to `count` voxels with the highest `score`, without those whose time to peak is
/// off the group's median by more than [`MAX_PEAK_SHIFT_FRAMES`].
fn best_by(
    group: &[(usize, CurveFeatures)],
    count: usize,
    score: impl Fn(&CurveFeatures) -> f64,
) -> Vec<usize> {
    let mut ranked = group.to_vec();
    ranked.sort_by(|a, b| score(&b.1).total_cmp(&score(&a.1)));
    ranked.truncate(count);

    let mut peaks: Vec<usize> = ranked.iter().map(|(_, f)| f.peak_index).collect();
    peaks.sort_unstable();
    let median = peaks[peaks.len() / 2];
    ranked
        .iter()
        .filter(|(_, f)| f.peak_index.abs_diff(median) <= MAX_PEAK_SHIFT_FRAMES)
        .map(|(v, _)| *v)
        .collect()
}

/// Averages the curves of `voxels` (not empty) into a [`Curve`].
pub(crate) fn average_curve(series: &Series, voxels: &[usize]) -> Curve {
    let mut values = vec![0.0; series.frames];
    for &v in voxels {
        for (sum, x) in values.iter_mut().zip(series.curve(v)) {
            *sum += x;
        }
    }
    for value in &mut values {
        *value /= voxels.len().max(1) as f64;
    }
    curve_from_values(
        series.dt_s,
        values,
        voxels.iter().map(|&v| unravel(v, series.shape)).collect(),
    )
}

/// Builds a [`Curve`] with its descriptors from samples every `dt_s` seconds.
pub(crate) fn curve_from_values(dt_s: f64, values_hu: Vec<f64>, voxels: Vec<[usize; 3]>) -> Curve {
    let features = curve_features(&values_hu, dt_s);
    Curve {
        times_s: (0..values_hu.len()).map(|i| i as f64 * dt_s).collect(),
        peak_hu: features.peak,
        time_to_peak_s: features.peak_index as f64 * dt_s,
        fwhm_s: features.fwhm_s,
        auc_hu_s: features.auc,
        values_hu,
        voxels,
    }
}

fn unravel(index: usize, shape: [usize; 3]) -> [usize; 3] {
    let plane = shape[1] * shape[2];
    [index / plane, (index % plane) / shape[2], index % shape[2]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bolus(t0: f64, scale: f64, width: f64, frames: usize) -> Vec<f32> {
        // Gamma variate with alpha 3 and beta `width`, normalised to peak `scale`.
        (0..frames)
            .map(|i| {
                let s = i as f64 - t0;
                if s <= 0.0 {
                    0.0
                } else {
                    let x = s / (3.0 * width);
                    (scale * (x * (1.0 - x).exp()).powi(3)) as f32
                }
            })
            .collect()
    }

    #[test]
    fn binomial_smoothing_keeps_constants() {
        assert_eq!(smooth_binomial(&[3.0, 3.0, 3.0, 3.0]), vec![3.0; 4]);
        // Ends use the weights [2, 1] / 3 and [1, 2] / 3.
        let spike = smooth_binomial(&[0.0, 4.0, 0.0]);
        assert!((spike[0] - 4.0 / 3.0).abs() < 1e-12);
        assert!((spike[1] - 2.0).abs() < 1e-12);
        assert!((spike[2] - 4.0 / 3.0).abs() < 1e-12);
        assert!(smooth_binomial(&[]).is_empty());
    }

    #[test]
    fn features_of_triangle() {
        // Triangle 0, 2, 4, 2, 0 at dt 2 s: peak 4 at 4 s, half max crossed at index 1 and 3.
        let features = curve_features(&[0.0, 2.0, 4.0, 2.0, 0.0], 2.0);
        assert_eq!(features.peak, 4.0);
        assert_eq!(features.peak_index, 2);
        assert!((features.fwhm_s - 4.0).abs() < 1e-12);
        assert!((features.auc - 16.0).abs() < 1e-12);
        assert!((features.first_moment_s - 4.0).abs() < 1e-12);
    }

    #[test]
    fn aif_and_vof_picked_from_vessels() {
        // 1 slice of 10x10, 40 frames. Tissue enhances 20 HU late and wide. Artery voxels
        // (row 0, x 0..4) peak 400 HU early and narrow. A partial-volume artery voxel
        // (row 0, x 4) peaks 120 HU. Vein voxels (row 9, x 0..4) peak 300 HU late.
        let frames = 40;
        let n = 100;
        let mut data = vec![0.0f32; frames * n];
        let mut put = |v: usize, curve: &[f32]| {
            for t in 0..frames {
                data[t * n + v] = curve[t];
            }
        };
        for v in 0..n {
            put(v, &bolus(10.0, 20.0, 3.0, frames));
        }
        for x in 0..4 {
            put(x, &bolus(6.0, 400.0, 1.5, frames));
            put(90 + x, &bolus(11.0, 300.0, 2.0, frames));
        }
        put(4, &bolus(6.0, 120.0, 1.5, frames));

        let series = Series {
            data,
            frames,
            shape: [1, 10, 10],
            dt_s: 1.0,
        };
        let params = AifParams {
            voxel_count: 4,
            ..AifParams::default()
        };
        let curves = select_input_curves(&series, &vec![true; n], &params).unwrap();

        let mut aif_voxels = curves.aif.voxels.clone();
        aif_voxels.sort();
        assert_eq!(aif_voxels, vec![[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3]]);
        // The curve s^3 exp(-s / 1.5) peaks at s = 4.5 (t = 10.5 s), between samples: at
        // t = 10 it is 0.9802 of the peak and at t = 11 it is 0.9829, so the sampled peak is
        // 393.2 HU at 11 s.
        assert!(
            (curves.aif.peak_hu - 393.16).abs() < 0.1,
            "{}",
            curves.aif.peak_hu
        );
        assert_eq!(curves.aif.time_to_peak_s, 11.0);

        let vof = curves.vof.expect("vein voxels form a late cluster");
        let mut vof_voxels = vof.voxels.clone();
        vof_voxels.sort();
        assert_eq!(vof_voxels, vec![[0, 9, 0], [0, 9, 1], [0, 9, 2], [0, 9, 3]]);
        assert_eq!(vof.time_to_peak_s, 17.0);
    }

    #[test]
    fn vof_absent_without_high_late_peaks() {
        // Arteries peak 400 HU early; the only late candidates peak 60 HU, below half the
        // AIF peak, so no VOF is reported.
        let frames = 40;
        let n = 16;
        let mut data = vec![0.0f32; frames * n];
        let arterial = bolus(6.0, 400.0, 1.5, frames);
        let late = bolus(14.0, 60.0, 3.0, frames);
        for t in 0..frames {
            for v in 0..4 {
                data[t * n + v] = arterial[t];
            }
            for v in 4..8 {
                data[t * n + v] = late[t];
            }
        }
        let series = Series {
            data,
            frames,
            shape: [1, 4, 4],
            dt_s: 1.0,
        };
        let params = AifParams {
            voxel_count: 4,
            ..AifParams::default()
        };
        let curves = select_input_curves(&series, &[true; 16], &params).unwrap();

        assert_eq!(curves.aif.voxels.len(), 4);
        assert!(curves.vof.is_none());
    }

    #[test]
    fn aif_missing_without_enhancement() {
        let series = Series {
            data: vec![3.0; 20 * 4],
            frames: 20,
            shape: [1, 2, 2],
            dt_s: 1.0,
        };
        let err = select_input_curves(&series, &[true; 4], &AifParams::default()).unwrap_err();
        assert!(matches!(err, PerfusionError::NoArterialInput { .. }));
    }
}
