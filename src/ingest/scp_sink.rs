//! The spool as the C-STORE receiver's [`InstanceSink`]: a received instance is acknowledged
//! only after the spool returned, that is after its fsync.

use std::sync::Arc;

use super::identify::InstanceIds as SpoolIds;
use super::scp::{InstanceIds as ReceivedIds, InstanceSink, SinkError, StoreOutcome};
use super::spool::{Source, Spool, StoreOutcome as SpoolOutcome};
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

        let outcome = self.spool.store(&ids, bytes, source).map_err(|e| SinkError::Other(e.to_string()))?;
        Ok(match outcome {
            SpoolOutcome::Stored { .. } => {
                metrics().instances_received.with_label_values(&["scp"]).inc();
                StoreOutcome::Stored
            }
            SpoolOutcome::Duplicate { .. } => StoreOutcome::Duplicate,
            SpoolOutcome::Conflict { .. } => StoreOutcome::Conflict,
        })
    }

    fn free_disk_bytes(&self) -> Option<u64> {
        self.spool.free_disk_bytes().ok()
    }
}

/// Converts the received identifiers into the spool's, which need the study and series.
fn spool_ids(received: &ReceivedIds) -> Result<SpoolIds, SinkError> {
    let required = |value: &Option<String>, name: &str| {
        value.clone().ok_or_else(|| {
            SinkError::Other(format!("instance {} has no {name}", received.sop_instance_uid))
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
