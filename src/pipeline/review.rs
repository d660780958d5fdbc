//! Re-export after a radiologist's decision.
//!
//! Accepting the U-Net labels, taking the threshold labels instead or saving a corrected mask
//! rebuilds the SEG, SR and summary image from the final labels. They are marked reviewed: final,
//! without the "not for diagnostic use without review" line. `report.json` gets the reviewed
//! figures and the QA status, and the DICOM outputs are forwarded again. A rejection only updates
//! the report.

use std::path::PathBuf;
use std::sync::Arc;

use penumbra_export::report::{QaStatus, Report};
use penumbra_export::{volumes_from_labels, write_outputs};
use tracing::{error, info};

use super::export::{build_objects, forwarded_files, write_json, ExportInputs, MapsToShow, EXPORT_INPUTS};
use crate::config::ExportFormat;
use crate::outbox::{Destination, Outbox};
use crate::qa::files::read_npy_f32;
use crate::qa::http::DecisionHook;
use crate::qa::store::{final_mask, CaseRecord, Decision, QaStore};

/// The QA server's decision hook: re-exports the study of each decided case.
pub struct ReexportHook {
    pub exports_dir: PathBuf,
    pub store: Arc<dyn QaStore>,
    pub outbox: Option<Arc<Outbox>>,
    pub destinations: Vec<Destination>,
    pub formats: Vec<ExportFormat>,
}

impl DecisionHook for ReexportHook {
    fn on_decision(&self, case: &CaseRecord, decision: &Decision) {
        let study_uid = case.study_uid.as_str();
        match self.reexport(case) {
            Ok(status) => info!(study_uid, case_id = %case.id, ?status, action = ?decision.action, "Study re-exported after review"),
            Err(message) => error!(study_uid, case_id = %case.id, error = %message, "Re-export after review failed"),
        }
    }
}

impl ReexportHook {
    fn reexport(&self, case: &CaseRecord) -> Result<QaStatus, String> {
        let dir = self.exports_dir.join(&case.study_uid);
        let report_path = dir.join("report.json");
        let mut report: Report = read_json(&report_path)?;

        let labels = final_mask(self.store.as_ref(), case).map_err(|e| format!("cannot read the final mask: {e}"))?;
        let Some(labels) = labels else {
            report.qa_status = QaStatus::Rejected;
            write_json(&report_path, &report)?;
            return Ok(QaStatus::Rejected);
        };

        let inputs: ExportInputs = read_json(&dir.join(EXPORT_INPUTS))?;
        let cbf = read_npy_f32(&case.dir.join("cbf.npy")).map_err(|e| e.to_string())?;
        let tmax = read_npy_f32(&case.dir.join("tmax.npy")).map_err(|e| e.to_string())?;
        let objects = build_objects(&inputs, &labels, MapsToShow { cbf: &cbf, tmax: &tmax }, true)?;

        report.qa_status = QaStatus::Approved;
        report.reviewed = Some(volumes_from_labels(&labels, &inputs.geometry));
        write_outputs(&dir, &objects.files(&report)).map_err(|e| format!("cannot write outputs: {e}"))?;
        self.forward(&forwarded_files(&dir, &self.formats))?;
        Ok(QaStatus::Approved)
    }

    fn forward(&self, files: &[PathBuf]) -> Result<(), String> {
        let Some(outbox) = &self.outbox else { return Ok(()) };
        for destination in &self.destinations {
            for file in files {
                outbox
                    .enqueue(destination, file)
                    .map_err(|e| format!("cannot queue {} for {}: {e}", file.display(), destination.name))?;
            }
        }
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("cannot parse {}: {e}", path.display()))
}
