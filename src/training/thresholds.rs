//! Fitting the U-Net's decision thresholds on phantom studies.
//!
//! Each study runs through the daemon's resample and infer stages (test-time augmentation on), so
//! the thresholds see the probabilities the daemon labels. Labels for a candidate pair of
//! thresholds are finished as the infer stage finishes them: zero outside the brain mask and
//! without lesions under the threshold labels' minimum size. The score of a class is its mean
//! Dice against truth over the studies in which the truth or the labels have that class, as
//! `penumbra eval` averages it.
//!
//! For each candidate smoothing across slices ([`Z_SIGMAS_MM`]) the fit runs two steps over
//! [`GRID`]. First it picks the hypoperfused threshold with the highest mean hypoperfused Dice,
//! which the core threshold cannot change. Then it picks the core threshold with the highest mean
//! of the core and penumbra Dice. The smoothing with the highest such mean wins. Last, with that
//! smoothing and those thresholds, it picks the smallest hypoperfused component to keep from
//! [`MIN_HYPOPERFUSED_ML`] by the same mean: false lesions in noisy studies without a lesion are
//! often a few mL.

use std::sync::Arc;

use ndarray::{Array3, Array4, Zip};
use penumbra_imaging::{Label, LabelVolume};
use penumbra_model::decision::{smooth_slices, threshold_labels, FitScores};
use penumbra_model::resample::argmax_labels;
use penumbra_model::Segmenter;
use rayon::prelude::*;

use crate::pipeline::infer::{finish_labels, InferStage};
use crate::pipeline::perfusion::PerfusionArtifacts;
use crate::pipeline::resample::ResampleStage;
use crate::pipeline::{Job, Stage};
use crate::evaluation::run_phantom;
use penumbra_phantom::PhantomParams;

/// Candidate thresholds: 0.10 to 0.99 in steps of 0.01, then 0.991 to 0.999 in steps of 0.001,
/// for models whose probabilities saturate.
pub const GRID: [f32; 99] = {
    let mut grid = [0.0; 99];
    let mut index = 0;
    while index < 90 {
        grid[index] = (10 + index) as f32 / 100.0;
        index += 1;
    }
    while index < grid.len() {
        grid[index] = (991 + index - 90) as f32 / 1000.0;
        index += 1;
    }
    grid
};

/// Candidate standard deviations, in mm, of the Gaussian that smooths the probabilities across
/// slices. At the phantom's 5 mm slices, 3.5 mm weighs a slice and its neighbours about
/// 0.58 / 0.21 / 0.21.
pub const Z_SIGMAS_MM: [f64; 5] = [0.0, 2.5, 3.5, 5.0, 7.5];

/// Candidate smallest hypoperfused components, in mL. Values under the labelling's own minimum
/// (0.5 mL by default) change nothing.
pub const MIN_HYPOPERFUSED_ML: [f64; 6] = [0.0, 1.0, 2.0, 3.0, 5.0, 8.0];

/// One study's probabilities, truth and geometry, as the fit reads them.
#[derive(Debug, Clone)]
pub struct FitStudy {
    /// Class probabilities `(3, z, y, x)` on the native grid.
    pub probabilities: Array4<f32>,
    /// True labels: 0 background, 1 penumbra, 2 core.
    pub truth: LabelVolume,
    pub brain_mask: Array3<bool>,
    /// Distance between slice centres in mm.
    pub slice_spacing_mm: f64,
    pub voxel_ml: f64,
    /// Smallest lesion component kept, in mL.
    pub min_component_ml: f64,
}

/// The thresholds fitted for one sigma, and the mean of the core and penumbra Dice they reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub z_sigma_mm: f64,
    pub hypoperfused: f32,
    pub core: f32,
    pub objective: f64,
}

/// Labelling rule: argmax, or smoothing and thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Argmax,
    Thresholds { z_sigma_mm: f64, hypoperfused: f32, core: f32, min_hypoperfused_ml: f64 },
}

/// The fitted thresholds and the scores of both rules on the fitted studies.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// The best thresholds and objective of every candidate sigma, in [`Z_SIGMAS_MM`] order.
    pub candidates: Vec<Candidate>,
    pub z_sigma_mm: f64,
    pub hypoperfused: f32,
    pub core: f32,
    pub min_hypoperfused_ml: f64,
    pub argmax: FitScores,
    pub fitted: FitScores,
}

/// Generates phantom study `params`, computes its maps and threshold labels, and runs the
/// resample and infer stages on it.
pub fn fit_study(params: &PhantomParams, segmenter: &Arc<Segmenter>, batch: usize) -> Result<FitStudy, String> {
    let run = run_phantom(params).map_err(|e| e.to_string())?;
    let id = format!("phantom-{}", params.seed);
    let maps = run.result.maps;
    let brain_mask = maps.brain_mask.clone();
    let slice_spacing_mm = maps.geometry.spacing_mm[0];
    let voxel_ml = maps.geometry.voxel_volume_ml();
    let min_component_ml = run.threshold.thresholds.min_component_ml;

    let mut job = Job::new(id.clone(), 1, Vec::new());
    job.artifacts.perfusion = Some(PerfusionArtifacts {
        source_series: 0,
        maps,
        quality: Some(run.result.quality),
        threshold: run.threshold,
        method: "osvd".to_string(),
    });
    let job = ResampleStage::new(segmenter)?.process(job).map_err(|e| format!("{id}: resample: {e}"))?;
    let job = InferStage::new(Arc::clone(segmenter), batch, true)
        .process(job)
        .map_err(|e| format!("{id}: infer: {e}"))?;
    let unet = job.artifacts.unet.ok_or_else(|| format!("{id}: the infer stage left no probabilities"))?;
    Ok(FitStudy { probabilities: unet.probabilities, truth: run.truth.labels, brain_mask, slice_spacing_mm, voxel_ml, min_component_ml })
}

/// Returns the finished labels of `study` under `rule`.
pub fn labels(study: &FitStudy, rule: Rule) -> LabelVolume {
    let raw = match rule {
        Rule::Argmax => argmax_labels(&study.probabilities),
        Rule::Thresholds { z_sigma_mm, hypoperfused, core, .. } => {
            let smoothed = smooth_slices(&study.probabilities, z_sigma_mm, study.slice_spacing_mm)
                .expect("fit studies have a positive slice spacing");
            threshold_labels(&smoothed, hypoperfused, core).expect("fit studies hold three class probabilities")
        }
    };
    let min_hypoperfused_ml = match rule {
        Rule::Argmax => study.min_component_ml,
        Rule::Thresholds { min_hypoperfused_ml, .. } => min_hypoperfused_ml.max(study.min_component_ml),
    };
    finish_labels(raw, &study.brain_mask, study.min_component_ml, min_hypoperfused_ml, study.voxel_ml)
}

/// Dice of one class, `None` when both masks are empty.
fn dice(labels: &LabelVolume, truth: &LabelVolume, member: impl Fn(u8) -> bool) -> Option<f64> {
    let (mut both, mut predicted, mut reference) = (0usize, 0usize, 0usize);
    Zip::from(labels).and(truth).for_each(|&label, &true_label| {
        let (p, t) = (member(label), member(true_label));
        both += usize::from(p && t);
        predicted += usize::from(p);
        reference += usize::from(t);
    });
    (predicted + reference > 0).then(|| 2.0 * both as f64 / (predicted + reference) as f64)
}

/// Mean of the present values, 0 when none is present.
fn mean_present(values: impl Iterator<Item = Option<f64>>) -> f64 {
    let present: Vec<f64> = values.flatten().collect();
    if present.is_empty() {
        0.0
    } else {
        present.iter().sum::<f64>() / present.len() as f64
    }
}

/// Mean Dice per class of `rule` over `studies`.
pub fn scores(studies: &[FitStudy], rule: Rule) -> FitScores {
    let per_study: Vec<[Option<f64>; 3]> = studies
        .par_iter()
        .map(|study| {
            let labels = labels(study, rule);
            [
                dice(&labels, &study.truth, |l| l == Label::Core as u8),
                dice(&labels, &study.truth, |l| l == Label::Penumbra as u8),
                dice(&labels, &study.truth, |l| l != Label::Background as u8),
            ]
        })
        .collect();
    FitScores {
        core: mean_present(per_study.iter().map(|s| s[0])),
        penumbra: mean_present(per_study.iter().map(|s| s[1])),
        hypoperfused: mean_present(per_study.iter().map(|s| s[2])),
    }
}

/// Fits the smoothing and both thresholds on `studies`: for each of [`Z_SIGMAS_MM`] the two
/// thresholds over [`GRID`], then the sigma whose thresholds give the highest mean of the core
/// and penumbra Dice. Ties keep the lower value.
pub fn fit(studies: &[FitStudy]) -> Fit {
    let best_of = |candidates: &mut dyn Iterator<Item = (f32, f64)>| {
        candidates.fold((GRID[0], f64::NEG_INFINITY), |best, candidate| if candidate.1 > best.1 { candidate } else { best })
    };
    let candidates: Vec<Candidate> = Z_SIGMAS_MM
        .iter()
        .map(|&z_sigma_mm| {
            let rule = |hypoperfused, core| Rule::Thresholds { z_sigma_mm, hypoperfused, core, min_hypoperfused_ml: 0.0 };
            let (hypoperfused, _) = best_of(&mut GRID.iter().map(|&t| (t, scores(studies, rule(t, 0.5)).hypoperfused)));
            let (core, objective) = best_of(&mut GRID.iter().map(|&t| {
                let s = scores(studies, rule(hypoperfused, t));
                (t, (s.core + s.penumbra) / 2.0)
            }));
            Candidate { z_sigma_mm, hypoperfused, core, objective }
        })
        .collect();
    let best = candidates
        .iter()
        .fold(&candidates[0], |best, candidate| if candidate.objective > best.objective { candidate } else { best })
        .clone();
    let rule = |min_hypoperfused_ml| Rule::Thresholds {
        z_sigma_mm: best.z_sigma_mm,
        hypoperfused: best.hypoperfused,
        core: best.core,
        min_hypoperfused_ml,
    };
    let min_hypoperfused_ml = MIN_HYPOPERFUSED_ML
        .iter()
        .map(|&ml| {
            let s = scores(studies, rule(ml));
            (ml, (s.core + s.penumbra) / 2.0)
        })
        .fold((0.0, f64::NEG_INFINITY), |best, candidate| if candidate.1 > best.1 { candidate } else { best })
        .0;
    let rule = rule(min_hypoperfused_ml);
    Fit {
        z_sigma_mm: best.z_sigma_mm,
        hypoperfused: best.hypoperfused,
        core: best.core,
        min_hypoperfused_ml,
        argmax: scores(studies, Rule::Argmax),
        fitted: scores(studies, rule),
        candidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a 1 x 8 x 8 study whose truth is a hypoperfused square with a core inside, and whose
    /// probabilities are too wide: the hypoperfused probability is 0.575 in a ring around it.
    fn study() -> FitStudy {
        let (nz, ny, nx) = (1, 8, 8);
        let mut truth = LabelVolume::zeros((nz, ny, nx));
        let mut probabilities = Array4::<f32>::zeros((3, nz, ny, nx));
        for y in 0..ny {
            for x in 0..nx {
                let (hypo, core) = if (3..5).contains(&y) && (3..5).contains(&x) {
                    truth[[0, y, x]] = 2;
                    (0.95, 0.8)
                } else if (2..6).contains(&y) && (2..6).contains(&x) {
                    truth[[0, y, x]] = 1;
                    (0.9, 0.285)
                } else if (1..7).contains(&y) && (1..7).contains(&x) {
                    (0.575, 0.1)
                } else {
                    (0.05, 0.0)
                };
                probabilities[[0, 0, y, x]] = 1.0 - hypo;
                probabilities[[1, 0, y, x]] = hypo - core;
                probabilities[[2, 0, y, x]] = core;
            }
        }
        FitStudy {
            probabilities,
            truth,
            brain_mask: Array3::from_elem((nz, ny, nx), true),
            slice_spacing_mm: 5.0,
            voxel_ml: 1.0,
            min_component_ml: 0.5,
        }
    }

    #[test]
    fn grid_spans_the_documented_range() {
        assert_eq!(GRID[0], 0.1);
        assert_eq!(GRID[50], 0.6);
        assert_eq!(GRID[89], 0.99);
        assert_eq!(GRID[90], 0.991);
        assert_eq!(GRID[98], 0.999);
    }

    #[test]
    fn argmax_keeps_the_ring_and_scores_by_hand() {
        // Argmax: the ring (P(penumbra) 0.475 against background 0.425) is penumbra. Penumbra: truth
        // 12 voxels, labels 12 + 20 = 32, overlap 12: Dice 24 / 44. Hypoperfused: 16 true, 36
        // labelled: Dice 32 / 52. Core is exact.
        let s = scores(&[study()], Rule::Argmax);
        assert!((s.penumbra - 24.0 / 44.0).abs() < 1e-9, "{s:?}");
        assert!((s.hypoperfused - 32.0 / 52.0).abs() < 1e-9, "{s:?}");
        assert!((s.core - 1.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn fit_drops_the_ring() {
        let fit = fit(&[study()]);
        // One slice: every sigma gives the same labels, so the first (none) is kept.
        assert_eq!(fit.z_sigma_mm, 0.0);
        assert_eq!(fit.min_hypoperfused_ml, 0.0);
        // The lowest grid value above the ring's 0.575.
        assert_eq!(fit.hypoperfused, 0.58, "{fit:?}");
        // Core 0.8 against 0.285 in the penumbra: the lowest grid value above 0.285.
        assert_eq!(fit.core, 0.29, "{fit:?}");
        assert_eq!(fit.fitted, FitScores { core: 1.0, penumbra: 1.0, hypoperfused: 1.0 });
        assert!(fit.argmax.penumbra < 0.6);
    }

    #[test]
    fn empty_classes_are_left_out_of_the_means() {
        let mut empty = study();
        empty.truth.fill(0);
        empty.probabilities.fill(0.0);
        empty.probabilities.index_axis_mut(ndarray::Axis(0), 0).fill(1.0);
        let s = scores(&[study(), empty], Rule::Thresholds { z_sigma_mm: 0.0, hypoperfused: 0.58, core: 0.29, min_hypoperfused_ml: 0.0 });
        assert_eq!(s, FitScores { core: 1.0, penumbra: 1.0, hypoperfused: 1.0 });
    }
}
