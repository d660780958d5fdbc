//! Training data: 2-D slices of input channels with their label slice and the study they came
//! from, so that training and validation can be split by study.

use std::collections::BTreeSet;

use ndarray::{Array2, Array3, Array4, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::ModelError;
use crate::resample::CLASSES;

/// One slice: input channels `(c, y, x)` in physical units and labels `(y, x)` (0 background,
/// 1 penumbra, 2 core).
#[derive(Debug, Clone)]
pub struct TrainingSample {
    /// Identifies the study, for splitting. Use a pseudonym or UID, never a patient name.
    pub study_id: String,
    /// Index of the slice within its study.
    pub slice_index: usize,
    /// Input channels `(c, y, x)`, not yet normalized. Normalization turns non-finite values into the
    /// channel mean.
    pub input: Array3<f32>,
    /// Labels `(y, x)`.
    pub label: Array2<u8>,
}

impl TrainingSample {
    /// Returns whether any pixel of the label is penumbra or core.
    pub fn has_lesion(&self) -> bool {
        self.label.iter().any(|&v| v != 0)
    }
}

/// Slices of one or more studies that all share the same channels and slice size.
#[derive(Debug, Clone)]
pub struct Dataset {
    channel_names: Vec<String>,
    shape_yx: Option<[usize; 2]>,
    samples: Vec<TrainingSample>,
}

impl Dataset {
    /// Creates an empty dataset whose inputs carry `channel_names`, in order (e.g. CBF, CBV,
    /// MTT, Tmax).
    pub fn new(channel_names: Vec<String>) -> Result<Self, ModelError> {
        if channel_names.is_empty() {
            return Err(ModelError::Dataset(
                "a dataset needs at least one input channel name".into(),
            ));
        }
        Ok(Dataset {
            channel_names,
            shape_yx: None,
            samples: Vec::new(),
        })
    }

    /// Returns the input channel names.
    pub fn channel_names(&self) -> &[String] {
        &self.channel_names
    }

    /// Returns all slices in insertion order.
    pub fn samples(&self) -> &[TrainingSample] {
        &self.samples
    }

    /// Returns the slice shape `(y, x)`, or `None` while the dataset is empty.
    pub fn shape_yx(&self) -> Option<[usize; 2]> {
        self.shape_yx
    }

    /// Adds one slice after checking its channel count, its shape and its label values.
    pub fn push(&mut self, sample: TrainingSample) -> Result<(), ModelError> {
        let (channels, ny, nx) = sample.input.dim();
        if channels != self.channel_names.len() {
            return Err(ModelError::Dataset(format!(
                "study {} slice {} has {channels} input channels; expected {} ({:?})",
                sample.study_id,
                sample.slice_index,
                self.channel_names.len(),
                self.channel_names
            )));
        }
        if sample.label.dim() != (ny, nx) {
            return Err(ModelError::Dataset(format!(
                "study {} slice {}: label shape {:?} differs from input shape ({ny}, {nx})",
                sample.study_id,
                sample.slice_index,
                sample.label.dim()
            )));
        }
        if ny == 0 || nx == 0 {
            return Err(ModelError::Dataset(format!(
                "study {} slice {} is empty ({ny}x{nx} pixels)",
                sample.study_id, sample.slice_index
            )));
        }
        let expected = *self.shape_yx.get_or_insert([ny, nx]);
        if expected != [ny, nx] {
            return Err(ModelError::Dataset(format!(
                "study {} slice {} is {ny}x{nx}; every slice must be {}x{} (resample to the model grid first)",
                sample.study_id, sample.slice_index, expected[0], expected[1]
            )));
        }
        if let Some(&bad) = sample.label.iter().find(|&&v| v as usize >= CLASSES) {
            return Err(ModelError::Dataset(format!(
                "study {} slice {} has label value {bad}; expected 0, 1 or 2",
                sample.study_id, sample.slice_index
            )));
        }
        self.samples.push(sample);
        Ok(())
    }

    /// Adds every slice of a study: `input` is `(z, c, y, x)` (the layout of the model grid) and
    /// `labels` is `(z, y, x)`.
    pub fn push_study(
        &mut self,
        study_id: &str,
        input: &Array4<f32>,
        labels: &Array3<u8>,
    ) -> Result<(), ModelError> {
        if input.dim().0 != labels.dim().0 {
            return Err(ModelError::Dataset(format!(
                "study {study_id} has {} input slices but {} label slices",
                input.dim().0,
                labels.dim().0
            )));
        }
        for (z, (slice, label)) in input
            .axis_iter(Axis(0))
            .zip(labels.axis_iter(Axis(0)))
            .enumerate()
        {
            self.push(TrainingSample {
                study_id: study_id.to_string(),
                slice_index: z,
                input: slice.to_owned(),
                label: label.to_owned(),
            })?;
        }
        Ok(())
    }

    /// Returns the distinct study ids, sorted.
    pub fn study_ids(&self) -> Vec<String> {
        let ids: BTreeSet<&str> = self.samples.iter().map(|s| s.study_id.as_str()).collect();
        ids.into_iter().map(str::to_string).collect()
    }

    /// Splits the slices by study into training and validation indices.
    ///
    /// The sorted study ids are shuffled with `seed` and the first
    /// `round(validation_fraction * studies)` (at least one) become validation studies, so no
    /// study contributes to both sets. Needs at least two studies.
    pub fn split_by_study(&self, validation_fraction: f64, seed: u64) -> Result<Split, ModelError> {
        let mut studies = self.study_ids();
        if studies.len() < 2 {
            return Err(ModelError::Dataset(format!(
                "splitting by study needs at least 2 studies, got {}",
                studies.len()
            )));
        }
        if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
            return Err(ModelError::Dataset(format!(
                "validation fraction {validation_fraction} must be in (0, 1)"
            )));
        }

        studies.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let count = ((validation_fraction * studies.len() as f64).round() as usize)
            .clamp(1, studies.len() - 1);
        let validation_studies: BTreeSet<String> = studies[..count].iter().cloned().collect();

        let mut split = Split::default();
        for (index, sample) in self.samples.iter().enumerate() {
            if validation_studies.contains(&sample.study_id) {
                split.validation.push(index);
            } else {
                split.training.push(index);
            }
        }
        split.validation_studies = validation_studies.into_iter().collect();
        split.training_studies = studies[count..].to_vec();
        split.training_studies.sort();
        Ok(split)
    }
}

/// Sample indices of a by-study split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    pub training: Vec<usize>,
    pub validation: Vec<usize>,
    pub training_studies: Vec<String>,
    pub validation_studies: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(study: &str, z: usize, label: u8) -> TrainingSample {
        TrainingSample {
            study_id: study.into(),
            slice_index: z,
            input: Array3::zeros((2, 4, 4)),
            label: Array2::from_elem((4, 4), label),
        }
    }

    #[test]
    fn split_keeps_studies_apart() {
        let mut dataset = Dataset::new(vec!["cbf".into(), "tmax".into()]).unwrap();
        for study in ["a", "b", "c", "d", "e"] {
            for z in 0..3 {
                dataset.push(sample(study, z, 0)).unwrap();
            }
        }
        let split = dataset.split_by_study(0.4, 7).unwrap();
        assert_eq!(split.validation_studies.len(), 2);
        assert_eq!(split.training_studies.len(), 3);
        assert_eq!(split.validation.len(), 6);
        assert_eq!(split.training.len(), 9);
        for &i in &split.validation {
            assert!(split
                .validation_studies
                .contains(&dataset.samples()[i].study_id));
        }
        for &i in &split.training {
            assert!(split
                .training_studies
                .contains(&dataset.samples()[i].study_id));
        }
        assert_eq!(split, dataset.split_by_study(0.4, 7).unwrap());
    }

    #[test]
    fn push_rejects_wrong_channels_and_labels() {
        let mut dataset = Dataset::new(vec!["cbf".into()]).unwrap();
        assert!(matches!(
            dataset.push(sample("a", 0, 0)),
            Err(ModelError::Dataset(_))
        ));

        let mut dataset = Dataset::new(vec!["cbf".into(), "tmax".into()]).unwrap();
        let error = dataset.push(sample("a", 0, 3)).unwrap_err().to_string();
        assert!(error.contains("label value 3"), "{error}");
    }

    #[test]
    fn split_needs_two_studies() {
        let mut dataset = Dataset::new(vec!["cbf".into(), "tmax".into()]).unwrap();
        dataset.push(sample("a", 0, 1)).unwrap();
        assert!(dataset.split_by_study(0.5, 1).is_err());
    }
}
