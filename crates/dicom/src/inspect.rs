//! A JSON-ready report of the decoder's result for a file or folder.
//!
//! The report carries UIDs, dimensions and reasons but no patient attributes, so it can be
//! printed and attached to tickets.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decode::{decode_study, RejectedFile, RejectedSeries};
use crate::series::{DecodedSeries, SeriesKind};

/// One decoded series, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesSummary {
    pub series_instance_uid: String,
    pub series_description: Option<String>,
    pub modality: String,
    pub kind: SeriesKind,
    /// Volume shape `(t, z, y, x)`.
    pub shape: [usize; 4],
    /// Voxel spacing `(z, y, x)` in mm.
    pub spacing_mm: [f64; 3],
    /// Smallest and largest voxel value (HU for CT), `None` when every voxel is NaN.
    pub value_min: Option<f32>,
    pub value_max: Option<f32>,
    /// Seconds from the first frame, one per time point.
    pub frame_times_s: Vec<f64>,
    pub transfer_syntax_uid: String,
    pub instance_count: usize,
    pub warnings: Vec<String>,
}

/// Everything found under a path.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: PathBuf,
    pub files: usize,
    pub series: Vec<SeriesSummary>,
    pub rejected_files: Vec<RejectedFile>,
    pub rejected_series: Vec<RejectedSeries>,
}

/// Failure to inspect a path at all.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot list {path}: {source}; pass an existing file or folder")]
    List { path: PathBuf, source: std::io::Error },
}

/// Decodes every file at or under `path` and summarises the result.
pub fn inspect(path: &Path) -> Result<InspectReport, InspectError> {
    let files = collect_files(path).map_err(|source| InspectError::List { path: path.to_path_buf(), source })?;
    let decoded = decode_study(&files);
    Ok(InspectReport {
        path: path.to_path_buf(),
        files: files.len(),
        series: decoded.series.iter().map(summarise).collect(),
        rejected_files: decoded.rejected,
        rejected_series: decoded.rejected_series,
    })
}

/// Returns `path` itself if it is a file, else every file below it, sorted by path.
pub fn collect_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

fn summarise(series: &DecodedSeries) -> SeriesSummary {
    let shape = series.volume.voxels.shape();
    let finite = series.volume.voxels.iter().copied().filter(|v| !v.is_nan());
    let (min, max) = finite.fold((None, None), |(lo, hi): (Option<f32>, Option<f32>), v| {
        (Some(lo.map_or(v, |l| l.min(v))), Some(hi.map_or(v, |h| h.max(v))))
    });
    SeriesSummary {
        series_instance_uid: series.info.series_instance_uid.clone(),
        series_description: series.info.series_description.clone(),
        modality: series.info.modality.clone(),
        kind: series.info.kind,
        shape: [shape[0], shape[1], shape[2], shape[3]],
        spacing_mm: series.volume.geometry.spacing_mm,
        value_min: min,
        value_max: max,
        frame_times_s: series.volume.frame_times_s.clone(),
        transfer_syntax_uid: series.info.transfer_syntax_uid.clone(),
        instance_count: series.info.instance_count,
        warnings: series.info.warnings.clone(),
    }
}
