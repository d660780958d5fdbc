//! The spool as the C-STORE receiver's [`InstanceSink`]. With `durability: fsync` a received
//! instance is acknowledged only once it is on disk: after its journal record's fdatasync, or
//! after the file's fsync without the journal.

use std::sync::Arc;

use super::identify::InstanceIds as SpoolIds;
use super::journal::RecordData;
use super::scp::{Completion, InstanceIds as ReceivedIds, InstanceSink, SinkError, StoreOutcome};
use super::spool::{Source, Spool, SpoolError, StoreOutcome as SpoolOutcome};
use crate::telemetry::metrics::metrics;

/// Stores received instances in the spool, which notifies the assembler.
pub struct SpoolSink {
    spool: Arc<Spool>,
}

impl SpoolSink {
    pub fn new(spool: Arc<Spool>) -> Self {
        Self { spool }
    }
}

impl InstanceSink for SpoolSink {
    fn store(&self, received: &ReceivedIds, bytes: &[u8]) -> Result<StoreOutcome, SinkError> {
        // The SCP has parsed the data set's header already, so its identifiers are used as they
        // are. The spool checks that each UID is valid as a file name.
        let ids = spool_ids(received)?;
        let source = Source::Scp { calling_ae: received.calling_ae_title.clone() };

        let outcome = self.spool.store(&ids, bytes, source).map_err(sink_error)?;
        Ok(count(outcome))
    }

    /// With the intake journal, returns once the instance's record is on disk and leaves the
    /// spool file to the completion, so that the sender prepares its next instance meanwhile.
    fn store_durable(&self, received: &ReceivedIds, buffer: &[u8], len: usize) -> Result<(StoreOutcome, Option<Completion<'_>>), SinkError> {
        let ids = spool_ids(received)?;
        let source = Source::Scp { calling_ae: received.calling_ae_title.clone() };

        let data = RecordData::padded(buffer, len);
        let (outcome, placement) = self.spool.store_durable(&ids, data, source).map_err(sink_error)?;
        let completion = placement.map(|placement| Box::new(move |bytes: &[u8]| placement.finish(bytes)) as Completion<'_>);
        Ok((count(outcome), completion))
    }

    fn free_disk_bytes(&self) -> Option<u64> {
        self.spool.free_disk_bytes().ok()
    }
}

fn sink_error(error: SpoolError) -> SinkError {
    match error {
        SpoolError::InvalidUid { .. } => SinkError::Invalid(error.to_string()),
        other => SinkError::Other(other.to_string()),
    }
}

/// Counts a new instance in the metrics and converts the outcome.
fn count(outcome: SpoolOutcome) -> StoreOutcome {
    match outcome {
        SpoolOutcome::Stored { .. } => {
            metrics().instances_received.with_label_values(&["scp"]).inc();
            StoreOutcome::Stored
        }
        SpoolOutcome::Duplicate { .. } => StoreOutcome::Duplicate,
        SpoolOutcome::Conflict { .. } => StoreOutcome::Conflict,
    }
}

/// Converts the received identifiers into the spool's, which need the study and series.
fn spool_ids(received: &ReceivedIds) -> Result<SpoolIds, SinkError> {
    let required = |value: &Option<String>, name: &str| {
        value.clone().ok_or_else(|| {
            SinkError::Invalid(format!("instance {} has no {name}", received.sop_instance_uid))
        })
    };
    Ok(SpoolIds {
        study_instance_uid: required(&received.study_instance_uid, "StudyInstanceUID")?,
        series_instance_uid: required(&received.series_instance_uid, "SeriesInstanceUID")?,
        sop_instance_uid: received.sop_instance_uid.clone(),
        sop_class_uid: received.sop_class_uid.clone(),
        number_of_temporal_positions: received.number_of_temporal_positions,
        image_position_patient: received.image_position_patient,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;

    fn received(study: Option<&str>, series: Option<&str>) -> ReceivedIds {
        ReceivedIds {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".to_string(),
            sop_instance_uid: "1.2.3.4".to_string(),
            study_instance_uid: study.map(str::to_string),
            series_instance_uid: series.map(str::to_string),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".to_string(),
            calling_ae_title: "SCANNER".to_string(),
            number_of_temporal_positions: None,
            image_position_patient: None,
        }
    }

    #[test]
    fn missing_study_uid_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let sink = SpoolSink::new(Arc::new(Spool::open_with(dir.path(), Durability::PageCache).unwrap()));

        let error = sink.store(&received(None, Some("1.2.3")), b"bytes").unwrap_err();

        assert!(matches!(error, SinkError::Invalid(_)), "{error}");
        assert!(error.to_string().contains("StudyInstanceUID"), "{error}");
    }

    #[test]
    fn unusable_series_uid_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let sink = SpoolSink::new(Arc::new(Spool::open_with(dir.path(), Durability::PageCache).unwrap()));

        let error = sink.store(&received(Some("1.2.3"), Some("../etc")), b"bytes").unwrap_err();

        assert!(matches!(error, SinkError::Invalid(_)), "{error}");
    }

    #[test]
    fn aligned_buffer_stored_and_replayed_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open_with(dir.path(), Durability::Fsync).unwrap());
        let sink = SpoolSink::new(Arc::clone(&spool));
        // A file of 10000 bytes at a 4 KiB boundary, followed by padding to 12288 bytes.
        let mut storage = vec![0u8; 5 * 4096];
        let start = storage.as_ptr().align_offset(4096);
        let buffer = &mut storage[start..start + 3 * 4096];
        for (i, byte) in buffer[..10_000].iter_mut().enumerate() {
            *byte = (i % 251) as u8;
        }
        buffer[10_000..].fill(0xEE);
        let file = buffer[..10_000].to_vec();

        let (outcome, completion) = sink.store_durable(&received(Some("1.2.3"), Some("1.2.3.4")), buffer, 10_000).unwrap();
        assert_eq!(outcome, StoreOutcome::Stored);
        completion.expect("the journal leaves the spool file to the completion")(&file);
        let path = dir.path().join("spool/1.2.3/1.2.3.4/1.2.3.4.dcm");
        assert_eq!(std::fs::read(&path).unwrap(), file);
        drop(sink);
        drop(spool);

        std::fs::remove_file(&path).unwrap();
        Spool::open_with(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), file, "the record replays the file without its padding");
    }
}
