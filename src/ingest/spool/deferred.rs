//! Stores whose spool file is placed after the C-STORE response.
//!
//! With the intake journal an instance is durable once its record is on disk, so the C-STORE
//! receiver acknowledges it then and places the spool file afterwards, while the sender
//! prepares its next instance. [`Spool::store_durable`] returns at that point with a
//! [`Placement`], whose [`Placement::finish`] writes, links and reports the file.
//!
//! Until `finish` returns, the record stays in flight, so no checkpoint voids it, and the claim
//! on the final path stays held, so a second store of the same SOP Instance UID waits. When the
//! file cannot be placed, or the placement is dropped before `finish` ends, the journal is marked
//! failed: no further instance is acknowledged and no checkpoint voids a record until a restart,
//! whose replay writes the file.

use std::path::PathBuf;

use super::{check_ids, choose_name, Claim, InstanceIds, Source, Spool, SpoolError, StoreOutcome};
use crate::config::Durability;
use crate::ingest::journal::{Journal, Pending, RecordData};

/// The rest of a journaled store: writing, linking and reporting the spool file.
#[must_use = "the instance is placed and reported only by `finish`"]
pub struct Placement<'a> {
    spool: &'a Spool,
    journal: &'a Journal,
    _claim: Claim<'a>,
    /// The record's in-flight mark: no checkpoint voids the record until the placement is dropped.
    _pending: Pending<'a>,
    folder: PathBuf,
    /// Final name of the file: the SOP Instance UID, or a conflict name beside it.
    target: PathBuf,
    ids: InstanceIds,
    outcome: StoreOutcome,
    source: Source,
    /// Whether `finish` ran to its end.
    finished: bool,
}

impl Spool {
    /// Stores one instance and returns once it is durable. With the journal, that is once its
    /// record is on disk, and the returned [`Placement`] must then be finished with the same
    /// bytes. Without the journal, for instances too large for a segment and for duplicates,
    /// the store is complete on return and there is no placement.
    ///
    /// # Errors
    ///
    /// As for [`Spool::store`]. Nothing was acknowledged durable on error.
    pub fn store_durable(&self, ids: &InstanceIds, data: RecordData<'_>, source: Source) -> Result<(StoreOutcome, Option<Placement<'_>>), SpoolError> {
        let bytes = data.bytes();
        let fsync = self.durability == Durability::Fsync;
        let journal = match &self.journal {
            Some(journal) if fsync && journal.fits(bytes.len()) => journal,
            _ => return self.store_with(ids, bytes, source, fsync).map(|outcome| (outcome, None)),
        };
        check_ids(ids)?;
        let folder = self.series_folder(ids);
        self.create_folder(&folder, false)?;
        let final_path = folder.join(format!("{}.dcm", ids.sop_instance_uid));
        let claim = self.claims.claim(&final_path);

        let outcome = choose_name(&folder, &final_path, &ids.sop_instance_uid, bytes)?;
        let target = match &outcome {
            // The existing file was written by an earlier store, which journaled or synced it.
            StoreOutcome::Duplicate { .. } => {
                self.report(ids, &outcome, &source);
                return Ok((outcome, None));
            }
            StoreOutcome::Stored { path } | StoreOutcome::Conflict { path, .. } => path.clone(),
        };
        let relative = target.strip_prefix(&self.root).unwrap_or(&target).to_string_lossy().into_owned();
        let pending = journal.append(&relative, data)?;
        // NOTE: when the wait fails, the record may still reach the disk, and the next start
        // then restores an instance whose store returned an error. A sender that retries it
        // gets a duplicate of the same content.
        pending.wait()?;

        let placement = Placement { spool: self, journal, _claim: claim, _pending: pending, folder, target, ids: ids.clone(), outcome: outcome.clone(), source, finished: false };
        Ok((outcome, Some(placement)))
    }
}

impl Placement<'_> {
    /// Writes the spool file from `bytes`, the bytes given to [`Spool::store_durable`], links it
    /// under its final name and notifies the assembler.
    ///
    /// A failure is logged and marks the journal failed (see the module documentation). It is
    /// not returned, because the instance has been acknowledged and its record keeps it.
    pub fn finish(mut self, bytes: &[u8]) {
        let target = &self.target;
        let placed = self.spool.write_temp(&self.folder, &self.ids.sop_instance_uid, bytes, false).and_then(|temp| {
            temp.link(target).map_err(|source| SpoolError::Write { path: target.clone(), source })
        });

        match placed {
            Ok(()) => self.spool.report(&self.ids, &self.outcome, &self.source),
            Err(err) => {
                tracing::error!(study_uid = %self.ids.study_instance_uid, series_uid = %self.ids.series_instance_uid,
                    sop_uid = %self.ids.sop_instance_uid, error = %err,
                    "Spool file of an acknowledged instance could not be written; its journal record keeps it, and no further instance is accepted until a restart replays the journal");
                self.journal.fail(format!("spool file {} could not be written: {err}", target.display()));
            }
        }
        self.finished = true;
    }
}

impl Drop for Placement<'_> {
    /// Marks the journal failed when `finish` did not end, for example after a panic, so that no
    /// checkpoint voids the record and the next start restores the file.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        tracing::error!(study_uid = %self.ids.study_instance_uid, series_uid = %self.ids.series_instance_uid,
            sop_uid = %self.ids.sop_instance_uid,
            "Spool file of an acknowledged instance was never written; its journal record keeps it, and no further instance is accepted until a restart replays the journal");
        self.journal.fail(format!("spool file {} was never written", self.target.display()));
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::ingest::spool::tests::ids;

    #[test]
    fn file_appears_only_after_finish() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let (listener, events) = crossbeam_channel::unbounded();
        spool.set_listener(listener);

        let (outcome, placement) = spool.store_durable(&ids("1.2.3.1"), RecordData::new(b"instance 1"), Source::Recovered).unwrap();
        let StoreOutcome::Stored { path } = outcome else { panic!("expected a new instance, got {outcome:?}") };
        let placement = placement.expect("a journaled store leaves the placement to the caller");
        let file_before = path.exists();
        let event_before = events.try_recv().is_ok();
        placement.finish(b"instance 1");

        assert!(!file_before, "the file exists before finish");
        assert!(!event_before, "the assembler was notified before finish");
        assert_eq!(fs::read(&path).unwrap(), b"instance 1");
        assert_eq!(events.try_recv().unwrap().path, path);
    }

    #[test]
    fn failed_placement_is_restored_at_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let spool = Spool::open(dir.path()).unwrap();
            let (outcome, placement) = spool.store_durable(&ids("1.2.3.2"), RecordData::new(b"instance 2"), Source::Recovered).unwrap();
            let StoreOutcome::Stored { path } = outcome else { panic!("expected a new instance, got {outcome:?}") };
            // The series folder disappears between the acknowledgement and the placement.
            fs::remove_dir_all(path.parent().unwrap()).unwrap();
            placement.unwrap().finish(b"instance 2");

            let next = spool.store_durable(&ids("1.2.3.3"), RecordData::new(b"instance 3"), Source::Recovered);
            assert!(matches!(next, Err(SpoolError::Journal(_))), "{:?}", next.map(|(outcome, _)| outcome));
            assert!(spool.checkpoint().is_err(), "a checkpoint voided the record of the unplaced instance");
            path
        };

        let _reopened = Spool::open(dir.path()).unwrap();

        assert_eq!(fs::read(&path).unwrap(), b"instance 2");
    }

    #[test]
    fn unfinished_placement_is_restored_at_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let spool = Spool::open(dir.path()).unwrap();
            let (outcome, placement) = spool.store_durable(&ids("1.2.3.5"), RecordData::new(b"instance 5"), Source::Recovered).unwrap();
            let StoreOutcome::Stored { path } = outcome else { panic!("expected a new instance, got {outcome:?}") };
            drop(placement);

            let next = spool.store_durable(&ids("1.2.3.6"), RecordData::new(b"instance 6"), Source::Recovered);
            assert!(matches!(next, Err(SpoolError::Journal(_))), "{:?}", next.map(|(outcome, _)| outcome));
            assert!(spool.checkpoint().is_err(), "a checkpoint voided the record of the unplaced instance");
            assert!(!path.exists());
            path
        };

        let _reopened = Spool::open(dir.path()).unwrap();

        assert_eq!(fs::read(&path).unwrap(), b"instance 5");
    }

    #[test]
    fn duplicate_needs_no_placement() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.store(&ids("1.2.3.4"), b"instance 4", Source::Recovered).unwrap();

        let (outcome, placement) = spool.store_durable(&ids("1.2.3.4"), RecordData::new(b"instance 4"), Source::Recovered).unwrap();

        assert!(matches!(outcome, StoreOutcome::Duplicate { .. }), "{outcome:?}");
        assert!(placement.is_none());
    }
}
