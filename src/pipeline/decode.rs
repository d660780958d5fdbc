//! Decode stage: a study's spooled files to volumes in physical units.
//!
//! Files or series the decoder cannot use are logged with their reason and listed in the report.
//! The study goes on only when it has a dynamic CTP series or a complete set of perfusion maps.

use penumbra_dicom::{decode_study, SeriesKind, StudyDecode};
use tracing::{info, warn};

use super::job::Job;
use super::stage::{Stage, StageError, StageName};

/// Decodes every series of a study with `penumbra_dicom::decode_study`.
#[derive(Debug, Default)]
pub struct DecodeStage;

impl Stage for DecodeStage {
    fn name(&self) -> StageName {
        StageName::Decode
    }

    fn process(&self, mut job: Job) -> Result<Job, StageError> {
        let decoded = decode_study(&job.instances);
        log_set_aside(&decoded);

        let kinds: Vec<SeriesKind> = decoded.series.iter().map(|s| s.info.kind).collect();
        info!(
            series = decoded.series.len(),
            rejected_files = decoded.rejected.len(),
            rejected_series = decoded.rejected_series.len(),
            ?kinds,
            "Decoded study"
        );
        if !has_perfusion_input(&kinds) {
            return Err(StageError::Rejected(no_input_reason(&decoded)));
        }

        job.artifacts.decoded = Some(decoded);
        Ok(job)
    }
}

/// Returns whether the series include a dynamic CTP acquisition or CBF and Tmax maps.
pub fn has_perfusion_input(kinds: &[SeriesKind]) -> bool {
    let has = |kind: SeriesKind| kinds.contains(&kind);
    has(SeriesKind::DynamicCtp) || (has(SeriesKind::MapCbf) && has(SeriesKind::MapTmax))
}

fn log_set_aside(decoded: &StudyDecode) {
    for file in &decoded.rejected {
        warn!(
            series_uid = file.series_instance_uid.as_deref().unwrap_or("unknown"),
            file = %file.path.display(),
            error = %file.error,
            "File set aside by the decoder"
        );
    }
    for series in &decoded.rejected_series {
        warn!(series_uid = %series.series_instance_uid, error = %series.error, "Series set aside by the decoder");
    }
}

fn no_input_reason(decoded: &StudyDecode) -> String {
    let mut reason = format!(
        "no dynamic CTP series and no CBF plus Tmax maps among {} decoded series",
        decoded.series.len()
    );
    for series in &decoded.rejected_series {
        reason.push_str(&format!("; series {} rejected: {}", series.series_instance_uid, series.error));
    }
    if !decoded.rejected.is_empty() {
        reason.push_str(&format!("; {} files rejected, first: {}", decoded.rejected.len(), decoded.rejected[0].error));
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfusion_input_needs_ctp_or_maps() {
        assert!(has_perfusion_input(&[SeriesKind::PlainCt, SeriesKind::DynamicCtp]));
        assert!(has_perfusion_input(&[SeriesKind::MapCbf, SeriesKind::MapTmax]));
        assert!(!has_perfusion_input(&[SeriesKind::MapCbf]));
        assert!(!has_perfusion_input(&[SeriesKind::PlainCt, SeriesKind::Other]));
    }
}
