//! Infer stage: residual U-Net class probabilities and labels on the native grid.
//!
//! With test-time augmentation the slices also run mirrored left to right. The labels then come
//! from the mean of both predictions, and the mirrored one is kept for the confidence stage.
//! Labels are picked with the model's decision thresholds when its folder has them, else by
//! argmax.
//! Lesions smaller than the threshold labels' minimum component are removed from the labels the
//! same way, so that both label sets report lesions on the same terms.

use std::sync::Arc;
use std::time::Instant;

use ndarray::{s, Array3, Array4, Zip};
use penumbra_imaging::{Label, LabelVolume};
use penumbra_model::resample::probabilities_to_native;
use penumbra_model::Segmenter;
use penumbra_perfusion::drop_small_lesions_with;
use tracing::info;

use super::job::Job;
use super::stage::{Stage, StageError, StageName};
use crate::telemetry::metrics::metrics;

/// The infer stage's artifacts.
#[derive(Debug)]
pub struct UnetArtifacts {
    /// Class probabilities `(3, z, y, x)` on the native grid (mean of plain and mirrored runs
    /// with test-time augmentation).
    pub probabilities: Array4<f32>,
    /// Probabilities of the mirrored run alone, mirrored back, when test-time augmentation ran.
    pub tta_probabilities: Option<Array4<f32>>,
    /// Labels picked by the segmenter (its decision thresholds, else argmax), zero outside the
    /// brain mask, without core and hypoperfused components smaller than the threshold labels'
    /// minimum.
    pub labels: LabelVolume,
}

/// Runs the segmenter loaded once at start-up.
pub struct InferStage {
    segmenter: Arc<Segmenter>,
    batch: usize,
    tta: bool,
}

impl InferStage {
    pub fn new(segmenter: Arc<Segmenter>, batch: usize, tta: bool) -> Self {
        Self { segmenter, batch, tta }
    }
}

impl Stage for InferStage {
    fn name(&self) -> StageName {
        StageName::Infer
    }

    fn process(&self, mut job: Job) -> Result<Job, StageError> {
        let input = job.artifacts.model_input.as_ref().ok_or_else(|| {
            StageError::Failed("infer stage ran without model input: the resample stage must run first".into())
        })?;
        let perfusion = job.artifacts.perfusion.as_ref().ok_or_else(|| {
            StageError::Failed("infer stage ran without perfusion maps".into())
        })?;
        let started = Instant::now();

        let plain = self.predict(&input.input)?;
        let mirrored = if self.tta { Some(self.predict(&mirror_x(&input.input))?) } else { None };
        let to_native = |probs: &Array4<f32>| {
            probabilities_to_native(probs, &input.transform)
                .map_err(|e| StageError::Failed(format!("cannot map probabilities to the native grid: {e}").into()))
        };
        let plain = to_native(&plain)?;
        let tta_probabilities = match mirrored {
            Some(probs) => Some(to_native(&mirror_x(&probs))?),
            None => None,
        };
        let probabilities = match &tta_probabilities {
            Some(flipped) => (&plain + flipped) * 0.5,
            None => plain,
        };

        let slice_spacing_mm = perfusion.maps.geometry.spacing_mm[0];
        let labels = self
            .segmenter
            .labels(&probabilities, slice_spacing_mm)
            .map_err(|e| StageError::Failed(format!("cannot pick labels from the probabilities: {e}").into()))?;
        let voxel_ml = perfusion.maps.geometry.voxel_volume_ml();
        let min_ml = perfusion.threshold.thresholds.min_component_ml;
        let min_hypoperfused_ml = self.segmenter.decision().map_or(min_ml, |d| d.min_hypoperfused_ml.max(min_ml));
        let labels = finish_labels(labels, &perfusion.maps.brain_mask, min_ml, min_hypoperfused_ml, voxel_ml);

        let elapsed = started.elapsed();
        metrics().inference_duration.with_label_values::<&str>(&[]).observe(elapsed.as_secs_f64());
        info!(elapsed_ms = elapsed.as_millis() as u64, tta = self.tta, "U-Net inference done");
        job.artifacts.unet = Some(UnetArtifacts { probabilities, tta_probabilities, labels });
        Ok(job)
    }
}

impl InferStage {
    fn predict(&self, input: &Array4<f32>) -> Result<Array4<f32>, StageError> {
        self.segmenter
            .predict(input, self.batch, false)
            .map_err(|e| StageError::Failed(format!("U-Net inference failed: {e}").into()))
    }
}

/// Sets `labels` to background outside `brain_mask`, then removes core components under `min_ml`
/// mL and hypoperfused components under `min_hypoperfused_ml` mL, as the threshold labelling
/// removes its small lesions. A removed core inside a kept hypoperfused component becomes
/// penumbra.
pub(crate) fn finish_labels(
    mut labels: LabelVolume,
    brain_mask: &Array3<bool>,
    min_ml: f64,
    min_hypoperfused_ml: f64,
    voxel_ml: f64,
) -> LabelVolume {
    Zip::from(&mut labels).and(brain_mask).for_each(|label, &inside| {
        if !inside {
            *label = Label::Background as u8;
        }
    });
    let core = labels.mapv(|label| label == Label::Core as u8);
    let hypoperfused = labels.mapv(|label| label != Label::Background as u8);
    drop_small_lesions_with(&core, &hypoperfused, min_ml, min_hypoperfused_ml, voxel_ml).labels
}

/// Mirrors a `(.., .., y, x)` array along x.
fn mirror_x(array: &Array4<f32>) -> Array4<f32> {
    array.slice(s![.., .., .., ..;-1]).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_x_reverses_columns_only() {
        let a = Array4::from_shape_fn((1, 2, 2, 3), |(_, c, y, x)| (c * 100 + y * 10 + x) as f32);
        let m = mirror_x(&a);
        assert_eq!(m[[0, 1, 1, 0]], a[[0, 1, 1, 2]]);
        assert_eq!(m[[0, 0, 0, 2]], a[[0, 0, 0, 0]]);
        assert_eq!(mirror_x(&m), a);
    }

    #[test]
    fn small_lesions_are_removed() {
        // A 3-voxel core in a 6-voxel hypoperfused region, a lone penumbra voxel apart, and a
        // voxel outside the brain.
        let mut labels = LabelVolume::zeros((1, 3, 8));
        for x in 0..3 {
            labels[[0, 0, x]] = 1;
            labels[[0, 1, x]] = 2;
        }
        labels[[0, 0, 7]] = 1;
        labels[[0, 2, 5]] = 2;
        let mut brain = Array3::from_elem((1, 3, 8), true);
        brain[[0, 2, 5]] = false;

        let min_four = finish_labels(labels.clone(), &brain, 4.0, 4.0, 1.0);
        assert_eq!(min_four[[0, 0, 0]], 1, "the 6-voxel region stays");
        assert_eq!(min_four[[0, 1, 1]], 1, "the 3-voxel core becomes penumbra");
        assert_eq!(min_four[[0, 0, 7]], 0, "the lone voxel goes");
        assert_eq!(min_four[[0, 2, 5]], 0, "outside the brain");

        let min_three = finish_labels(labels.clone(), &brain, 3.0, 3.0, 1.0);
        assert_eq!(min_three[[0, 1, 1]], 2, "a core of the minimum size stays");
        assert_eq!(min_three[[0, 0, 7]], 0);
    }

    #[test]
    fn hypoperfused_minimum_removes_core_inside() {
        // The same 6-voxel region: a hypoperfused minimum of 7 voxels removes it, core and all,
        // while a core minimum of 3 alone would keep the core.
        let mut labels = LabelVolume::zeros((1, 2, 4));
        for x in 0..3 {
            labels[[0, 0, x]] = 1;
            labels[[0, 1, x]] = 2;
        }
        let brain = Array3::from_elem((1, 2, 4), true);

        let at_minimum = finish_labels(labels.clone(), &brain, 3.0, 6.0, 1.0);
        assert_eq!(at_minimum, labels);
        let removed = finish_labels(labels, &brain, 3.0, 7.0, 1.0);
        assert!(removed.iter().all(|&label| label == 0));
    }
}
