//! Quarantine: inputs and studies that could not be processed, each kept with a `reason.json`.
//!
//! Layout under `<data_dir>/quarantine/`:
//! - `<timestamp>-<file name>/` for a rejected input file, with the file and `reason.json`;
//! - `<study uid>/reason.json` for a study that failed in a stage (its instances stay in the
//!   spool, listed in the record).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::spool::write_atomically;

/// Contents of `reason.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Full error message.
    pub reason: String,
    /// Stable fault name such as `empty_file`, `not_dicom`, `truncated` or `stage_failed`.
    pub kind: String,
    /// Origin of the input: a file path, `scp:<calling AE>`, or a stage name.
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_instance_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_instance_uid: Option<String>,
    /// Spool paths of the study's instances, for a study quarantined by a stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<PathBuf>,
    /// UTC time of quarantining, RFC 3339.
    pub quarantined_at: String,
}

impl Reason {
    pub fn new(kind: &str, reason: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            kind: kind.to_string(),
            source: source.into(),
            study_instance_uid: None,
            series_instance_uid: None,
            instances: Vec::new(),
            quarantined_at: now_rfc3339(),
        }
    }
}

#[derive(Debug, Error)]
pub enum QuarantineError {
    #[error("could not write quarantine entry {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("could not move {from} into quarantine at {to}: {source}")]
    Move { from: PathBuf, to: PathBuf, source: io::Error },
    #[error("study uid {0:?} is not a valid UID, so it cannot name a quarantine folder")]
    InvalidStudyUid(String),
}

/// The quarantine folder of one data directory.
#[derive(Debug, Clone)]
pub struct Quarantine {
    root: PathBuf,
}

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Quarantine {
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.join("quarantine") }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Moves an input file into a new quarantine entry and writes its `reason.json`. Returns the
    /// entry folder. The file is renamed when possible, or copied, synced and then removed.
    pub fn take_file(&self, input: &Path, reason: &Reason) -> Result<PathBuf, QuarantineError> {
        let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "input".to_string());
        let entry = self.new_entry(&name)?;
        let target = entry.join(safe_name(&name));

        self.write_reason(&entry, reason)?;
        move_file(input, &target).map_err(|source| QuarantineError::Move {
            from: input.to_path_buf(),
            to: target.clone(),
            source,
        })?;
        crate::telemetry::metrics::metrics().quarantined_files.with_label_values(&[reason.kind.as_str()]).inc();
        Ok(entry)
    }

    /// Writes received bytes (from the C-STORE receiver) into a new quarantine entry.
    pub fn keep_bytes(&self, name: &str, bytes: &[u8], reason: &Reason) -> Result<PathBuf, QuarantineError> {
        let entry = self.new_entry(name)?;
        let target = entry.join(safe_name(name));
        write_atomically(&target, bytes, true).map_err(|source| QuarantineError::Write { path: target, source })?;
        self.write_reason(&entry, reason)?;
        crate::telemetry::metrics::metrics().quarantined_files.with_label_values(&[reason.kind.as_str()]).inc();
        Ok(entry)
    }

    /// Records a study that failed in a stage at `<root>/<study uid>/reason.json`, replacing an
    /// earlier record of the same study.
    pub fn record_study(&self, study_uid: &str, reason: &Reason) -> Result<PathBuf, QuarantineError> {
        if !super::identify::is_valid_uid(study_uid) {
            return Err(QuarantineError::InvalidStudyUid(study_uid.to_string()));
        }
        let entry = self.root.join(study_uid);
        fs::create_dir_all(&entry).map_err(|source| QuarantineError::Write { path: entry.clone(), source })?;
        self.write_reason(&entry, reason)?;
        Ok(entry)
    }

    fn new_entry(&self, name: &str) -> Result<PathBuf, QuarantineError> {
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"))
            .unwrap_or_else(|_| "unknown-time".to_string());
        let counter = ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let entry = self.root.join(format!("{stamp}-{}-{counter}-{}", std::process::id(), safe_name(name)));
        fs::create_dir_all(&entry).map_err(|source| QuarantineError::Write { path: entry.clone(), source })?;
        Ok(entry)
    }

    fn write_reason(&self, entry: &Path, reason: &Reason) -> Result<(), QuarantineError> {
        let path = entry.join("reason.json");
        let json = serde_json::to_vec_pretty(reason).map_err(|err| QuarantineError::Write {
            path: path.clone(),
            source: io::Error::other(err),
        })?;
        write_atomically(&path, &json, true).map_err(|source| QuarantineError::Write { path, source })
    }
}

/// Keeps letters, digits, dots, dashes and underscores of a file name, so it is safe as one path
/// component; at most 100 bytes.
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .take(100)
        .collect();
    match cleaned.trim_start_matches('.') {
        "" => "input".to_string(),
        rest => rest.to_string(),
    }
}

fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Ok(()) => sync_parent(to),
        Err(err) if err.raw_os_error() == Some(libc::EXDEV) => {
            let bytes = fs::read(from)?;
            write_atomically(to, &bytes, true)?;
            fs::remove_file(from)
        }
        Err(err) => Err(err),
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_moves_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("scan 01.dcm");
        fs::write(&input, b"").unwrap();
        let quarantine = Quarantine::new(&dir.path().join("data"));

        let reason = Reason::new("empty_file", "empty file: it has zero bytes", input.display().to_string());
        let entry = quarantine.take_file(&input, &reason).unwrap();

        assert!(!input.exists());
        assert!(entry.join("scan_01.dcm").exists());
        let record: Reason = serde_json::from_slice(&fs::read(entry.join("reason.json")).unwrap()).unwrap();
        assert_eq!(record, reason);
        assert!(entry.file_name().unwrap().to_string_lossy().ends_with("scan_01.dcm"));
    }

    #[test]
    fn study_record_rejects_path_traversal() {
        let dir = tempfile::tempdir().unwrap();
        let quarantine = Quarantine::new(dir.path());
        let reason = Reason::new("stage_failed", "decode failed", "decode");
        assert!(quarantine.record_study("../../etc", &reason).is_err());
        let entry = quarantine.record_study("1.2.3", &reason).unwrap();
        assert_eq!(entry, dir.path().join("quarantine/1.2.3"));
    }

    #[test]
    fn safe_name_strips_separators() {
        assert_eq!(safe_name("../a/b.dcm"), "_a_b.dcm");
        assert_eq!(safe_name(".."), "input");
    }
}
