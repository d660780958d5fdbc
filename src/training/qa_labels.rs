//! Reviewed QA cases as training data: reads the folder that `penumbra qa export-labels` writes
//! (layout in [`crate::qa::export`]) and adds each case to a [`Dataset`].
//!
//! A case goes through the same steps as a phantom study: its maps are stacked in the dataset's
//! channel order, resampled in-plane to the 256x256 model grid with the case's voxel spacing, and
//! its final mask is resampled with them. Normalization is fitted later by the training run over
//! all training slices, phantom and reviewed alike. Every case of one Study Instance UID gets the
//! same study id, so a split by study never puts one study on both sides.

use std::fs;
use std::path::{Path, PathBuf};

use ndarray::{Array3, Array4, Axis};
use penumbra_model::{labels_to_model_grid, to_model_grid, Dataset, ModelError};

use crate::pipeline::resample::{shift_slices, split_channel};
use crate::qa::export::{ExportMeta, EXPORT_FORMAT_VERSION, MASK_FILE, META_FILE};
use crate::qa::files::{map_file, read_npy_f32, read_npy_u8};

/// Errors of reading an exported QA labels folder.
#[derive(Debug, thiserror::Error)]
pub enum QaLabelsError {
    #[error("cannot read the QA labels folder {path}: {source}")]
    ReadFolder { path: PathBuf, source: std::io::Error },
    #[error("the QA labels folder {0} contains no case folders: write it with `penumbra qa export-labels`")]
    Empty(PathBuf),
    #[error("case folder {folder} has no {file}: export it again with `penumbra qa export-labels`")]
    MissingFile { folder: PathBuf, file: String },
    #[error("{path} is not a valid export meta file: {reason}")]
    InvalidMeta { path: PathBuf, reason: String },
    #[error("{path} has format version {found}, but this penumbra reads version {expected}: export the cases again")]
    UnsupportedVersion { path: PathBuf, found: u32, expected: u32 },
    #[error("case folder {folder} has no channel {channel:?} (it has {available:?}), but the model needs {needed:?}")]
    MissingChannel { folder: PathBuf, channel: String, available: Vec<String>, needed: Vec<String> },
    #[error("invalid array {path}: {reason}")]
    InvalidArray { path: PathBuf, reason: String },
    #[error("case folder {folder} cannot become a training sample: {source}")]
    Sample { folder: PathBuf, source: ModelError },
}

/// One exported case as read from its folder.
#[derive(Debug, Clone)]
pub struct QaLabelCase {
    pub folder: PathBuf,
    pub meta: ExportMeta,
    /// The maps `(z, y, x)` in the order of `meta.channels`.
    pub maps: Vec<Array3<f32>>,
    /// The final labels `(z, y, x)`.
    pub mask: Array3<u8>,
}

impl QaLabelCase {
    /// Returns the dataset study id: `qa-<StudyInstanceUID>`, shared by every case of the study.
    pub fn study_id(&self) -> String {
        format!("qa-{}", self.meta.study_uid)
    }

    /// Returns the model input `(z, c, 256, 256)` with the channels `names` in order, and the
    /// labels `(z, 256, 256)`.
    ///
    /// # Errors
    ///
    /// [`QaLabelsError::MissingChannel`] when the case lacks one of `names`, and
    /// [`QaLabelsError::Sample`] when the grid cannot be resampled (for example a zero spacing).
    pub fn model_grid(&self, names: &[String]) -> Result<(Array4<f32>, Array3<u8>), QaLabelsError> {
        let (depth, height, width) = self.mask.dim();
        let mut stack = Array4::<f32>::zeros((names.len(), depth, height, width));
        for (index, name) in names.iter().enumerate() {
            let missing = || QaLabelsError::MissingChannel {
                folder: self.folder.clone(),
                channel: name.clone(),
                available: self.meta.channels.clone(),
                needed: names.to_vec(),
            };
            let (map, offset) = split_channel(name).unwrap_or_else(|| (name.to_ascii_lowercase(), 0));
            let position = self.meta.channels.iter().position(|c| c.eq_ignore_ascii_case(&map)).ok_or_else(missing)?;
            stack.index_axis_mut(Axis(0), index).assign(&shift_slices(&self.maps[position], offset));
        }

        let spacing_yx = [self.meta.spacing_mm[1], self.meta.spacing_mm[2]];
        let sample_error = |source| QaLabelsError::Sample { folder: self.folder.clone(), source };
        let (input, _) = to_model_grid(&stack, spacing_yx).map_err(sample_error)?;
        let (labels, _) = labels_to_model_grid(&self.mask, spacing_yx).map_err(sample_error)?;
        Ok((input, labels))
    }
}

/// Reads every case folder under `dir`, sorted by folder name. Files directly under `dir` are
/// ignored.
///
/// # Errors
///
/// The first malformed case folder fails the whole read, naming the folder and what is wrong, and
/// so does a folder with no case at all.
pub fn read_qa_labels(dir: &Path) -> Result<Vec<QaLabelCase>, QaLabelsError> {
    let read_error = |source| QaLabelsError::ReadFolder { path: dir.to_owned(), source };
    let mut folders = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        if entry.file_type().map_err(read_error)?.is_dir() {
            folders.push(entry.path());
        }
    }
    folders.sort();
    if folders.is_empty() {
        return Err(QaLabelsError::Empty(dir.to_owned()));
    }
    folders.iter().map(|folder| read_case(folder)).collect()
}

/// Reads one exported case folder and checks that every array has the grid of `meta.json`.
///
/// # Errors
///
/// A missing file, an unreadable or inconsistent `meta.json`, another format version, an array
/// that is not a 3-D `.npy` of the expected type, or an array whose shape differs from `meta.shape`.
pub fn read_case(folder: &Path) -> Result<QaLabelCase, QaLabelsError> {
    let meta = read_meta(folder)?;
    let mut maps = Vec::with_capacity(meta.channels.len());
    for channel in &meta.channels {
        let path = existing_file(folder, &map_file(channel))?;
        let map = read_npy_f32(&path).map_err(|e| invalid_array(&path, e.to_string()))?;
        check_shape(&path, map.dim(), meta.shape)?;
        maps.push(map);
    }

    let path = existing_file(folder, MASK_FILE)?;
    let mask = read_npy_u8(&path).map_err(|e| invalid_array(&path, e.to_string()))?;
    check_shape(&path, mask.dim(), meta.shape)?;
    if let Some(&bad) = mask.iter().find(|&&v| v > 2) {
        return Err(invalid_array(&path, format!("label value {bad} is invalid: expected 0, 1 or 2")));
    }
    Ok(QaLabelCase { folder: folder.to_owned(), meta, maps, mask })
}

/// Adds every slice of one case to `dataset` under [`QaLabelCase::study_id`], with the dataset's
/// channels.
///
/// # Errors
///
/// As [`QaLabelCase::model_grid`], and [`QaLabelsError::Sample`] when the dataset rejects a slice.
pub fn push_case(dataset: &mut Dataset, case: &QaLabelCase) -> Result<(), QaLabelsError> {
    let names = dataset.channel_names().to_vec();
    let (input, labels) = case.model_grid(&names)?;
    dataset
        .push_study(&case.study_id(), &input, &labels)
        .map_err(|source| QaLabelsError::Sample { folder: case.folder.clone(), source })
}

fn read_meta(folder: &Path) -> Result<ExportMeta, QaLabelsError> {
    let path = existing_file(folder, META_FILE)?;
    let invalid = |reason: String| QaLabelsError::InvalidMeta { path: path.clone(), reason };
    let text = fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;

    // Check the version before the fields, so that a newer layout gets the version error.
    let found = value.get("format_version").and_then(serde_json::Value::as_u64);
    match found {
        Some(version) if version == u64::from(EXPORT_FORMAT_VERSION) => {}
        Some(version) => {
            let found = u32::try_from(version).unwrap_or(u32::MAX);
            return Err(QaLabelsError::UnsupportedVersion { path, found, expected: EXPORT_FORMAT_VERSION });
        }
        None => return Err(invalid("format_version is missing or not a whole number".to_owned())),
    }

    let meta: ExportMeta = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    if meta.channels.is_empty() {
        return Err(invalid("channels is empty".to_owned()));
    }
    if let Some(bad) = meta.channels.iter().find(|c| c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
        return Err(invalid(format!("channel name {bad:?} is invalid: use letters, digits and underscores")));
    }
    if !meta.spacing_mm.iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(invalid(format!("spacing_mm {:?} must be finite and positive", meta.spacing_mm)));
    }
    if meta.shape.contains(&0) {
        return Err(invalid(format!("shape {:?} has an empty dimension", meta.shape)));
    }
    Ok(meta)
}

fn existing_file(folder: &Path, name: &str) -> Result<PathBuf, QaLabelsError> {
    let path = folder.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(QaLabelsError::MissingFile { folder: folder.to_owned(), file: name.to_owned() })
    }
}

fn check_shape(path: &Path, (z, y, x): (usize, usize, usize), expected: [usize; 3]) -> Result<(), QaLabelsError> {
    if [z, y, x] == expected {
        Ok(())
    } else {
        Err(invalid_array(path, format!("shape ({z}, {y}, {x}) differs from meta.json shape {expected:?}")))
    }
}

fn invalid_array(path: &Path, reason: String) -> QaLabelsError {
    QaLabelsError::InvalidArray { path: path.to_owned(), reason }
}
