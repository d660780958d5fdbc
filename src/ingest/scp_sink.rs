//! The spool as the C-STORE receiver's [`InstanceSink`]: a received instance is acknowledged
//! only after the spool returned, that is after its fsync.

use std::sync::Arc;

use super::identify::identify;
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
        // The spool needs the temporal and position attributes the assembler reads, so the file
        // is identified again from its own header.
        let ids = identify(bytes).map_err(|e| {
            SinkError::Other(format!("instance {} not usable: {e}", received.sop_instance_uid))
        })?;
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
