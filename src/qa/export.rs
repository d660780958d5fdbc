//! Export of reviewed cases as training data (`penumbra qa export-labels`).
//!
//! Each accepted, accepted_threshold or corrected case becomes a folder `<out>/<study_uid>_<case_id>/`
//! with:
//!
//! - `cbf.npy`, `cbv.npy`, `mtt.npy`, `tmax.npy`: the perfusion maps, `float32` `(z, y, x)`, in the
//!   order and under the names that `meta.json` lists in `channels`;
//! - `mask.npy`: the final labels, `uint8` `(z, y, x)` (0 background, 1 penumbra, 2 core). A corrected
//!   case exports the reviewer's mask, an accepted one the U-Net labels and an accepted_threshold one
//!   the threshold labels;
//! - `meta.json`: an [`ExportMeta`].
//!
//! Rejected and undecided cases are left out. A case queued before the store kept CBV, MTT and the
//! voxel spacing cannot become a training sample: the export skips it and reports why.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files;
use super::store::{final_mask, CaseRecord, CaseState, QaStore};
use super::QaError;

/// Version of the folder layout and `meta.json`; readers reject other versions.
pub const EXPORT_FORMAT_VERSION: u32 = 1;

/// Name of the labels file in each exported case folder.
pub const MASK_FILE: &str = "mask.npy";

/// Name of the metadata file in each exported case folder.
pub const META_FILE: &str = "meta.json";

/// The contents of `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportMeta {
    /// [`EXPORT_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    pub case_id: i64,
    pub study_uid: String,
    /// `accepted`, `accepted_threshold` or `corrected`.
    pub decision: CaseState,
    pub reviewer: String,
    /// When the decision was made, RFC 3339 UTC.
    pub decided_at: String,
    /// Version of the U-Net weights that produced the labels the reviewer saw.
    pub model_version: String,
    pub confidence_score: f64,
    /// Grid shape `(z, y, x)` of every map and of the mask.
    pub shape: [usize; 3],
    /// Voxel spacing `(z, y, x)` in millimetres.
    pub spacing_mm: [f64; 3],
    /// Names of the map files without `.npy`, in model input order.
    pub channels: Vec<String>,
}

/// A reviewed case that the export left out, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedCase {
    pub case_id: i64,
    pub study_uid: String,
    pub reason: String,
}

/// Result of [`export_labels`]: the count of written cases and the skipped ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportSummary {
    /// Number of case folders written.
    pub exported: usize,
    /// Reviewed cases that cannot be used for training.
    pub skipped: Vec<SkippedCase>,
}

/// Writes every reviewed case of `store` under `out` and returns how many were written and which
/// were skipped.
///
/// # Errors
///
/// Fails on the first case whose files cannot be read or written, or whose audit log has no entry
/// for its decision. Cases that lack the maps or spacing for training are skipped, not errors.
pub fn export_labels(store: &dyn QaStore, out: &Path) -> Result<ExportSummary, QaError> {
    let reviewed = [CaseState::Accepted, CaseState::AcceptedThreshold, CaseState::Corrected];
    let cases = store.list(&reviewed)?;
    fs::create_dir_all(out).map_err(|e| QaError::io(out, e))?;

    let mut summary = ExportSummary::default();
    for case in &cases {
        let missing = files::missing_training_files(&case.dir);
        if !missing.is_empty() {
            let reason = format!(
                "the case folder {} lacks {}: it was queued before the store kept every model input, so it cannot be a training sample",
                case.dir.display(),
                missing.join(", ")
            );
            tracing::warn!(case_id = case.id, study_uid = %case.study_uid, %reason, "Reviewed case skipped");
            summary.skipped.push(SkippedCase { case_id: case.id, study_uid: case.study_uid.clone(), reason });
            continue;
        }
        export_case(store, case, out)?;
        summary.exported += 1;
    }
    Ok(summary)
}

fn export_case(store: &dyn QaStore, case: &CaseRecord, out: &Path) -> Result<(), QaError> {
    let mask = final_mask(store, case)?.ok_or_else(|| {
        QaError::Corrupt(format!("case {} is {} but its mask file is missing in {}", case.id, case.state, case.dir.display()))
    })?;
    let grid = files::read_grid(&case.dir)?
        .ok_or_else(|| QaError::Corrupt(format!("case {} has no {} in {}", case.id, files::GRID_FILE, case.dir.display())))?;
    let folder = out.join(format!("{}_{}", case.study_uid, case.id));
    fs::create_dir_all(&folder).map_err(|e| QaError::io(&folder, e))?;

    for name in files::MAP_NAMES {
        let source = case.dir.join(files::map_file(name));
        fs::copy(&source, folder.join(files::map_file(name))).map_err(|e| QaError::io(&source, e))?;
    }
    files::write_npy_u8(&folder.join(MASK_FILE), &mask)?;

    let decision = store
        .audit(case.id)?
        .into_iter()
        .rev()
        .find(|entry| entry.to_state == case.state && entry.from_state != Some(case.state))
        .ok_or_else(|| QaError::Corrupt(format!("case {} has no audit entry for its decision", case.id)))?;
    let (depth, height, width) = mask.dim();
    let meta = ExportMeta {
        format_version: EXPORT_FORMAT_VERSION,
        case_id: case.id,
        study_uid: case.study_uid.clone(),
        decision: case.state,
        reviewer: decision.who,
        decided_at: decision.at,
        model_version: case.model_version.clone(),
        confidence_score: case.confidence.score,
        shape: [depth, height, width],
        spacing_mm: grid.spacing_mm,
        channels: files::MAP_NAMES.iter().map(|c| c.to_string()).collect(),
    };
    let path = folder.join(META_FILE);
    let text = serde_json::to_string_pretty(&meta).map_err(|e| QaError::Corrupt(e.to_string()))?;
    fs::write(&path, text).map_err(|e| QaError::io(&path, e))
}
