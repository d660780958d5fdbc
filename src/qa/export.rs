//! Export of reviewed cases as training data (`penumbra qa export-labels`).
//!
//! Each accepted, accepted_threshold or corrected case becomes a folder `<out>/<study_uid>_<case_id>/`
//! with `cbf.npy` and `tmax.npy` (the input maps, `float32` `(z, y, x)`), `mask.npy` (the final
//! labels, `uint8` `(z, y, x)`: 0 background, 1 penumbra, 2 core) and `meta.json`.

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::files;
use super::store::{final_mask, CaseRecord, CaseState, QaStore};
use super::QaError;

/// The contents of `meta.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ExportMeta {
    pub case_id: i64,
    pub study_uid: String,
    /// `accepted`, `accepted_threshold` or `corrected`.
    pub decision: CaseState,
    pub reviewer: String,
    /// When the decision was made, RFC 3339 UTC.
    pub decided_at: String,
    pub model_version: String,
    pub confidence_score: f64,
}

/// Writes every reviewed case of `store` under `out` and returns how many were written.
pub fn export_labels(store: &dyn QaStore, out: &Path) -> Result<usize, QaError> {
    let reviewed = [CaseState::Accepted, CaseState::AcceptedThreshold, CaseState::Corrected];
    let cases = store.list(&reviewed)?;
    fs::create_dir_all(out).map_err(|e| QaError::io(out, e))?;

    for case in &cases {
        export_case(store, case, out)?;
    }
    Ok(cases.len())
}

fn export_case(store: &dyn QaStore, case: &CaseRecord, out: &Path) -> Result<(), QaError> {
    let mask = final_mask(store, case)?.ok_or_else(|| {
        QaError::Corrupt(format!("case {} is {} but its mask file is missing in {}", case.id, case.state, case.dir.display()))
    })?;
    let folder = out.join(format!("{}_{}", case.study_uid, case.id));
    fs::create_dir_all(&folder).map_err(|e| QaError::io(&folder, e))?;

    for name in ["cbf.npy", "tmax.npy"] {
        let source = case.dir.join(name);
        fs::copy(&source, folder.join(name)).map_err(|e| QaError::io(&source, e))?;
    }
    files::write_npy_u8(&folder.join("mask.npy"), &mask)?;

    let decision = store
        .audit(case.id)?
        .into_iter()
        .rev()
        .find(|entry| entry.to_state == case.state && entry.from_state != Some(case.state))
        .ok_or_else(|| QaError::Corrupt(format!("case {} has no audit entry for its decision", case.id)))?;
    let meta = ExportMeta {
        case_id: case.id,
        study_uid: case.study_uid.clone(),
        decision: case.state,
        reviewer: decision.who,
        decided_at: decision.at,
        model_version: case.model_version.clone(),
        confidence_score: case.confidence.score,
    };
    let path = folder.join("meta.json");
    let text = serde_json::to_string_pretty(&meta).map_err(|e| QaError::Corrupt(e.to_string()))?;
    fs::write(&path, text).map_err(|e| QaError::io(&path, e))
}
