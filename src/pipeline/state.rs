//! A persistent record per study, from which a restart finds what is finished and what to re-queue.
//!
//! Records are small JSON files at `<data_dir>/state/<study uid>.json`, each replaced atomically
//! (temporary file, fsync, rename, fsync of the folder).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::stage::StageName;
use crate::ingest::identify::is_valid_uid;
use crate::ingest::spool::write_atomically;

/// Processing state of a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyState {
    /// Instances are arriving; the study is not complete yet.
    Receiving,
    /// Complete and queued for the first stage.
    Queued,
    /// In a stage (`stage_reached`).
    Processing,
    /// Stopped before a stage that has no implementation (`waiting_for`); resumed at a restart
    /// that provides it.
    Waiting,
    /// Every stage finished.
    Done,
    /// A stage failed and the study was quarantined (`error`).
    Failed,
}

/// The persistent record of one study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    pub study_instance_uid: String,
    pub state: StudyState,
    /// Latest version opened; see [`Job::version`](super::job::Job::version).
    pub version: u32,
    /// Instances of the study in the spool when this record was written.
    pub instance_count: usize,
    /// Last stage the study entered.
    pub stage_reached: Option<StageName>,
    /// Stage without an implementation that the study waits for.
    pub waiting_for: Option<StageName>,
    /// Error message of a failed stage.
    pub error: Option<String>,
    /// UTC time of the last change, RFC 3339.
    pub updated_at: String,
}

impl StudyRecord {
    pub fn new(study_instance_uid: &str) -> Self {
        Self {
            study_instance_uid: study_instance_uid.to_string(),
            state: StudyState::Receiving,
            version: 0,
            instance_count: 0,
            stage_reached: None,
            waiting_for: None,
            error: None,
            updated_at: String::new(),
        }
    }

    /// Returns true when nothing remains to do for the study as recorded.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, StudyState::Done | StudyState::Failed)
    }
}

#[derive(Debug, Error)]
pub enum StateError {
    #[error("study uid {0:?} is not a valid UID, so it cannot name a state record")]
    InvalidUid(String),
    #[error("could not write state record {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("could not read state record {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("state record {path} is not valid JSON: {source}; delete it to rebuild it from the spool")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The state records of one data directory. Updates within one process are serialized by a lock,
/// so concurrent stage workers do not lose each other's changes.
#[derive(Debug)]
pub struct StateStore {
    root: PathBuf,
    lock: Mutex<()>,
}

impl StateStore {
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        let root = data_dir.join("state");
        fs::create_dir_all(&root).map_err(|source| StateError::Write { path: root.clone(), source })?;
        Ok(Self { root, lock: Mutex::new(()) })
    }

    fn path(&self, study_uid: &str) -> Result<PathBuf, StateError> {
        if !is_valid_uid(study_uid) {
            return Err(StateError::InvalidUid(study_uid.to_string()));
        }
        Ok(self.root.join(format!("{study_uid}.json")))
    }

    /// Reads a study's record, `None` when it has none.
    pub fn get(&self, study_uid: &str) -> Result<Option<StudyRecord>, StateError> {
        let path = self.path(study_uid)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Applies `change` to a study's record (a new one when it has none, or when the stored one
    /// is unreadable) and writes it durably. Returns the record as written.
    pub fn update(&self, study_uid: &str, change: impl FnOnce(&mut StudyRecord)) -> Result<StudyRecord, StateError> {
        let _guard = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let path = self.path(study_uid)?;

        let mut record = match self.get(study_uid) {
            Ok(Some(record)) => record,
            Ok(None) => StudyRecord::new(study_uid),
            Err(err) => {
                tracing::warn!(study_uid, error = %err, "State record unreadable, starting a new one");
                StudyRecord::new(study_uid)
            }
        };
        change(&mut record);
        record.updated_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();

        let json = serde_json::to_vec_pretty(&record).map_err(|err| StateError::Write {
            path: path.clone(),
            source: io::Error::other(err),
        })?;
        write_atomically(&path, &json, true).map_err(|source| StateError::Write { path, source })?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store
            .update("1.2.3", |r| {
                r.state = StudyState::Waiting;
                r.waiting_for = Some(StageName::Decode);
                r.version = 2;
            })
            .unwrap();

        let reopened = StateStore::open(dir.path()).unwrap();
        let record = reopened.get("1.2.3").unwrap().unwrap();
        assert_eq!(record.state, StudyState::Waiting);
        assert_eq!(record.waiting_for, Some(StageName::Decode));
        assert_eq!(record.version, 2);
        assert!(!record.is_finished());
    }

    #[test]
    fn missing_record_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert!(store.get("1.2.3").unwrap().is_none());
    }

    #[test]
    fn corrupt_record_is_replaced_on_update() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("state/1.2.3.json"), b"{ not json").unwrap();

        assert!(matches!(store.get("1.2.3"), Err(StateError::Corrupt { .. })));
        let record = store.update("1.2.3", |r| r.instance_count = 4).unwrap();
        assert_eq!(record.instance_count, 4);
    }

    #[test]
    fn invalid_uid_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert!(matches!(store.update("../x", |_| {}), Err(StateError::InvalidUid(_))));
    }
}
