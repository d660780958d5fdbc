//! The durable spool: every accepted instance as `<data_dir>/spool/<study>/<series>/<sop>.dcm`.
//!
//! A file is written without a name, or under a temporary one, in its final folder and linked to
//! its final name, so a reader never sees part of an instance ([`temp`]). Linking (not renaming)
//! never replaces an existing file: a second instance with the same SOP Instance UID and other
//! bytes is kept beside it as `<sop>.conflict-<n>.dcm`. Stores of one SOP Instance UID run one at a time.
//!
//! Durability, for [`Spool::store`] with [`Durability::Fsync`]: the instance is first appended to
//! the intake [`Journal`] and fdatasynced, then written through the page cache.
//! [`Spool::store_durable`] returns as soon as the record is on disk and leaves the file to a
//! [`Placement`], for the C-STORE receiver to finish after its response. The journal's
//! replay at the next open repairs what a crash lost. Instances too large for a journal segment,
//! and [`Spool::store_with`] with `fsync` (the folder watcher), take the direct path instead: the
//! temporary file is fsynced before it is linked and the folder after. The syncs of concurrent
//! stores (several associations) run in shared batches ([`GroupCommit`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::group_commit::GroupCommit;
use super::identify::is_valid_uid;
pub use super::identify::InstanceIds;
pub use deferred::Placement;

mod deferred;
mod temp;
use temp::TempFile;
use super::journal::{Journal, JournalError, JournalSettings, RecordData};
use crate::config::Durability;

/// Origin of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Source {
    /// Received by C-STORE from this calling AE title.
    Scp { calling_ae: String },
    /// Taken from a watched folder.
    Watch { path: PathBuf },
    /// Read by `penumbra run`.
    Cli { path: PathBuf },
    /// Found in the spool at start-up.
    Recovered,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Scp { calling_ae } => write!(f, "scp:{calling_ae}"),
            Self::Watch { path } | Self::Cli { path } => write!(f, "{}", path.display()),
            Self::Recovered => write!(f, "spool"),
        }
    }
}

/// Result of [`Spool::store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// New instance, now durable at `path`.
    Stored { path: PathBuf },
    /// The same bytes were already spooled at `path`; nothing was written.
    Duplicate { path: PathBuf },
    /// The SOP Instance UID was already spooled with other bytes at `existing`. The new bytes
    /// were kept at `path` and are not part of the study.
    Conflict { path: PathBuf, existing: PathBuf },
}

/// Event sent to the assembler for each newly stored instance.
#[derive(Debug, Clone)]
pub struct SpooledInstance {
    pub ids: InstanceIds,
    pub path: PathBuf,
}

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("{name} {value:?} is not a valid UID (digits and dots, at most 64 characters), so it cannot name a spool file")]
    InvalidUid { name: &'static str, value: String },
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("could not create spool folder {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The spool of one data directory. Safe to share between threads.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    durability: Durability,
    listener: Mutex<Option<Sender<SpooledInstance>>>,
    commits: GroupCommit,
    /// Present with [`Durability::Fsync`] unless the spool was opened without a journal.
    journal: Option<Journal>,
    claims: Claims,
    /// Whether files are written unnamed (`O_TMPFILE`) before they are linked.
    unnamed_temp: bool,
}

/// Final paths of the stores in progress, so that two stores of one SOP Instance UID never
/// choose a name at the same time.
#[derive(Debug, Default)]
struct Claims {
    paths: Mutex<HashSet<PathBuf>>,
    released: Condvar,
}

/// A claimed final path, released on drop.
struct Claim<'a> {
    claims: &'a Claims,
    path: PathBuf,
}

impl Claims {
    fn claim(&self, path: &Path) -> Claim<'_> {
        let mut paths = self.paths.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while paths.contains(path) {
            paths = self.released.wait(paths).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        paths.insert(path.to_path_buf());
        Claim { claims: self, path: path.to_path_buf() }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut paths = self.claims.paths.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        paths.remove(&self.path);
        self.claims.released.notify_all();
    }
}

impl Spool {
    /// Opens (creating if needed) `<data_dir>/spool` with fsync durability and the default
    /// journal.
    pub fn open(data_dir: &Path) -> Result<Self, SpoolError> {
        Self::open_with(data_dir, Durability::Fsync)
    }

    /// Opens the spool with `durability` and, for fsync, the default journal.
    pub fn open_with(data_dir: &Path, durability: Durability) -> Result<Self, SpoolError> {
        Self::open_with_journal(data_dir, durability, JournalSettings::default())
    }

    /// Opens the spool with `durability`. With [`Durability::Fsync`], the journal under
    /// `<data_dir>/journal` is opened with `journal` and replayed into the spool first.
    ///
    /// # Errors
    ///
    /// The spool folder cannot be created, or the journal cannot be opened or replayed.
    pub fn open_with_journal(data_dir: &Path, durability: Durability, journal: JournalSettings) -> Result<Self, SpoolError> {
        let journal = (durability == Durability::Fsync).then_some(journal);
        Self::open_inner(data_dir, durability, GroupCommit::default(), journal)
    }

    /// Opens the spool without a journal, so that with [`Durability::Fsync`] every instance is
    /// fsynced in the spool with its folder. The benchmark compares this path with the journal.
    ///
    /// # Errors
    ///
    /// The spool folder cannot be created.
    pub fn open_without_journal(data_dir: &Path, durability: Durability) -> Result<Self, SpoolError> {
        Self::open_inner(data_dir, durability, GroupCommit::default(), None)
    }

    fn open_inner(data_dir: &Path, durability: Durability, commits: GroupCommit, journal: Option<JournalSettings>) -> Result<Self, SpoolError> {
        let root = data_dir.join("spool");
        fs::create_dir_all(&root).map_err(|source| SpoolError::CreateDir { path: root.clone(), source })?;
        let unnamed_temp = temp::unnamed_files_work(&root);
        if !unnamed_temp {
            tracing::info!(spool = %root.display(), "The file system cannot link unnamed files (O_TMPFILE and /proc), so spool files are written under temporary names");
        }
        let mut spool = Self { root, durability, listener: Mutex::new(None), commits, journal: None, claims: Claims::default(), unnamed_temp };
        spool.remove_stale_temp_files();

        if let Some(settings) = journal {
            let (journal, recovery) = Journal::open(data_dir, &spool.root, settings)?;
            if recovery.records > 0 {
                tracing::info!(records = recovery.records, restored = recovery.restored, "Intake journal replayed into the spool");
            }
            if !recovery.direct_io {
                tracing::info!("The file system rejects O_DIRECT, so intake journal records go through the page cache");
            }
            spool.journal = Some(journal);
        }
        Ok(spool)
    }

    #[cfg(test)]
    pub(crate) fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Makes every instance stored so far durable in the spool itself and voids the journal.
    /// Call it before any file leaves the spool, so that a later replay cannot bring it back.
    ///
    /// # Errors
    ///
    /// The `syncfs` or a journal write failed.
    pub fn checkpoint(&self) -> Result<(), SpoolError> {
        match &self.journal {
            Some(journal) => Ok(journal.checkpoint()?),
            None => Ok(()),
        }
    }

    /// Deletes temporary files that a crash left behind. They were never linked into place, so
    /// no instance they held was acknowledged.
    fn remove_stale_temp_files(&self) {
        for study in list_dirs(&self.root).unwrap_or_default() {
            let study_dir = self.root.join(study);
            for series in list_dirs(&study_dir).unwrap_or_default() {
                let Ok(entries) = fs::read_dir(study_dir.join(series)) else { continue };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') && name.ends_with(".tmp") {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Sends every newly stored instance to `listener` (the assembler). A bounded channel makes
    /// `store` wait while the assembler is behind, so ingest slows down instead of queueing
    /// without limit.
    pub fn set_listener(&self, listener: Sender<SpooledInstance>) {
        *self.listener.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(listener);
    }

    /// Stores one instance with the spool's durability setting: through the journal for
    /// [`Durability::Fsync`].
    pub fn store(&self, ids: &InstanceIds, bytes: &[u8], source: Source) -> Result<StoreOutcome, SpoolError> {
        match &self.journal {
            Some(journal) if self.durability == Durability::Fsync => self.store_journaled(journal, ids, bytes, source),
            _ => self.store_with(ids, bytes, source, self.durability == Durability::Fsync),
        }
    }

    /// Stores one instance through the journal: [`Spool::store_durable`], then the placement of
    /// the spool file at once. An instance too large for a segment is fsynced directly.
    fn store_journaled(&self, journal: &Journal, ids: &InstanceIds, bytes: &[u8], source: Source) -> Result<StoreOutcome, SpoolError> {
        if !journal.fits(bytes.len()) {
            return self.store_with(ids, bytes, source, true);
        }
        let (outcome, placement) = self.store_durable(ids, RecordData::new(bytes), source)?;
        if let Some(placement) = placement {
            placement.finish(bytes);
        }
        Ok(outcome)
    }

    /// Stores one instance, syncing to disk before returning when `fsync` is set. The watcher
    /// always syncs, because it deletes the input file afterwards.
    pub fn store_with(&self, ids: &InstanceIds, bytes: &[u8], source: Source, fsync: bool) -> Result<StoreOutcome, SpoolError> {
        check_ids(ids)?;
        let folder = self.series_folder(ids);
        self.create_folder(&folder, fsync)?;

        let final_path = folder.join(format!("{}.dcm", ids.sop_instance_uid));
        let _claim = self.claims.claim(&final_path);
        let outcome = self.place(&folder, &final_path, &ids.sop_instance_uid, bytes, fsync)?;
        self.report(ids, &outcome, &source);
        Ok(outcome)
    }

    fn series_folder(&self, ids: &InstanceIds) -> PathBuf {
        self.root.join(&ids.study_instance_uid).join(&ids.series_instance_uid)
    }

    /// Creates the series folder and, when it is new, syncs its parents so the folder itself
    /// survives a power loss.
    fn create_folder(&self, folder: &Path, fsync: bool) -> Result<(), SpoolError> {
        if folder.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(folder).map_err(|source| SpoolError::CreateDir { path: folder.to_path_buf(), source })?;
        if fsync {
            let study = folder.parent().unwrap_or(&self.root);
            for dir in [study, self.root.as_path()] {
                sync_dir(dir).map_err(|source| SpoolError::Write { path: dir.to_path_buf(), source })?;
            }
        }
        Ok(())
    }

    fn report(&self, ids: &InstanceIds, outcome: &StoreOutcome, source: &Source) {
        match outcome {
            StoreOutcome::Stored { path } => {
                tracing::debug!(study_uid = %ids.study_instance_uid, series_uid = %ids.series_instance_uid,
                    sop_uid = %ids.sop_instance_uid, %source, "Instance spooled");
                let listener = self.listener.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
                if let Some(listener) = listener {
                    if listener.send(SpooledInstance { ids: ids.clone(), path: path.clone() }).is_err() {
                        tracing::debug!(study_uid = %ids.study_instance_uid, "Assembler stopped; instance stays in the spool for the next start");
                    }
                }
            }
            StoreOutcome::Duplicate { .. } => {
                tracing::debug!(study_uid = %ids.study_instance_uid, sop_uid = %ids.sop_instance_uid, %source,
                    "Duplicate instance ignored");
            }
            StoreOutcome::Conflict { path, .. } => {
                tracing::warn!(study_uid = %ids.study_instance_uid, series_uid = %ids.series_instance_uid,
                    sop_uid = %ids.sop_instance_uid, %source, conflict_path = %path.display(),
                    "Instance with a known SOP Instance UID but different content kept apart");
            }
        }
    }

    /// Lists the Study Instance UIDs that have a folder in the spool.
    pub fn studies(&self) -> Result<Vec<String>, SpoolError> {
        let mut studies = list_dirs(&self.root)?;
        studies.retain(|name| is_valid_uid(name));
        studies.sort();
        Ok(studies)
    }

    /// Lists the instance files of a study (conflict copies and temporary files excluded),
    /// sorted by path.
    pub fn study_instances(&self, study_uid: &str) -> Result<Vec<PathBuf>, SpoolError> {
        let study = self.root.join(study_uid);
        let mut files = Vec::new();
        for series in list_dirs(&study)? {
            let folder = study.join(&series);
            let entries = fs::read_dir(&folder).map_err(|source| SpoolError::Read { path: folder.clone(), source })?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_instance = name.strip_suffix(".dcm").is_some_and(is_valid_uid);
                if is_instance {
                    files.push(entry.path());
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// Returns the free space of the file system that contains the spool, in bytes available to
    /// unprivileged users.
    pub fn free_disk_bytes(&self) -> io::Result<u64> {
        free_disk_bytes(&self.root)
    }
}

fn check_ids(ids: &InstanceIds) -> Result<(), SpoolError> {
    check_uid("StudyInstanceUID", &ids.study_instance_uid)?;
    check_uid("SeriesInstanceUID", &ids.series_instance_uid)?;
    check_uid("SOPInstanceUID", &ids.sop_instance_uid)
}

fn check_uid(name: &'static str, value: &str) -> Result<(), SpoolError> {
    if is_valid_uid(value) {
        Ok(())
    } else {
        Err(SpoolError::InvalidUid { name, value: value.to_string() })
    }
}

impl Spool {
    /// Puts `bytes` at `final_path` unless that name (or a conflict copy) already contains them.
    /// With `fsync`, the data is on disk before it is linked, and the link before this returns.
    fn place(&self, folder: &Path, final_path: &Path, sop: &str, bytes: &[u8], fsync: bool) -> Result<StoreOutcome, SpoolError> {
        let temp = self.write_temp(folder, sop, bytes, fsync)?;
        let outcome = link_first_free(folder, final_path, sop, &temp, bytes)?;
        drop(temp);

        if fsync {
            self.sync_outcome(&outcome, folder)?;
        }
        Ok(outcome)
    }

    /// Writes `bytes` into a new file in `folder` that has no final name yet.
    ///
    /// With `fsync` the file gets a temporary name. An unnamed file synced before its link would
    /// still be an orphan with no links in its synced inode, which only the next sync of the
    /// file itself corrects. A named file's synced inode already has its one remaining link.
    fn write_temp(&self, folder: &Path, sop: &str, bytes: &[u8], fsync: bool) -> Result<TempFile, SpoolError> {
        let temp = TempFile::create(folder, sop, self.unnamed_temp && !fsync)
            .map_err(|source| SpoolError::Write { path: folder.join(format!("{sop}.dcm")), source })?;

        let write = || -> io::Result<()> {
            temp.file().write_all(bytes)?;
            // A journaled store leaves the file to the page cache, which the checkpoint flushes.
            // Starting its writeback here made the records' fdatasyncs wait behind it: a loop of
            // 300 stores of 0.5 MB took 0.95 to 1.04 ms per store without it, 1.08 to 2.6 with it.
            if fsync {
                self.commits.sync_file(temp.file().try_clone()?)?;
            }
            Ok(())
        };
        write().map_err(|source| SpoolError::Write { path: temp.describe(folder), source })?;
        Ok(temp)
    }

    /// Syncs the folder that links the instance. A duplicate may have been linked by a
    /// concurrent store that has not synced yet, or in page-cache mode before a restart, so its
    /// file is synced too before it is reported as stored.
    fn sync_outcome(&self, outcome: &StoreOutcome, folder: &Path) -> Result<(), SpoolError> {
        if let StoreOutcome::Duplicate { path } = outcome {
            let file = fs::File::open(path).map_err(|source| SpoolError::Read { path: path.clone(), source })?;
            self.commits.sync_file(file).map_err(|source| SpoolError::Write { path: path.clone(), source })?;
        }
        self.commits.sync_folder(folder).map_err(|source| SpoolError::Write { path: folder.to_path_buf(), source })
    }
}

fn link_first_free(folder: &Path, final_path: &Path, sop: &str, temp: &TempFile, bytes: &[u8]) -> Result<StoreOutcome, SpoolError> {
    for n in 0u32.. {
        let candidate = candidate_name(folder, final_path, sop, n);

        match temp.link(&candidate) {
            Ok(()) => return Ok(new_file_outcome(n, candidate, final_path)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                if same_content(&candidate, bytes)? {
                    return Ok(StoreOutcome::Duplicate { path: candidate });
                }
            }
            Err(source) => return Err(SpoolError::Write { path: candidate, source }),
        }
    }
    unreachable!("u32 conflict counter exhausted")
}

/// Returns `<sop>.dcm` for `n` = 0 and the `n`-th conflict copy otherwise.
fn candidate_name(folder: &Path, final_path: &Path, sop: &str, n: u32) -> PathBuf {
    if n == 0 {
        final_path.to_path_buf()
    } else {
        folder.join(format!("{sop}.conflict-{n}.dcm"))
    }
}

fn new_file_outcome(n: u32, path: PathBuf, final_path: &Path) -> StoreOutcome {
    if n == 0 {
        StoreOutcome::Stored { path }
    } else {
        StoreOutcome::Conflict { path, existing: final_path.to_path_buf() }
    }
}

/// Chooses where `bytes` go without writing anything, with the rules of [`link_first_free`]:
/// the first free name among `<sop>.dcm` and its conflict copies, or the name that already
/// contains these bytes. Only correct while the caller has the claim of `final_path`.
fn choose_name(folder: &Path, final_path: &Path, sop: &str, bytes: &[u8]) -> Result<StoreOutcome, SpoolError> {
    for n in 0u32.. {
        let candidate = candidate_name(folder, final_path, sop, n);

        match fs::symlink_metadata(&candidate) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(new_file_outcome(n, candidate, final_path)),
            Err(source) => return Err(SpoolError::Read { path: candidate, source }),
            Ok(_) => {
                if same_content(&candidate, bytes)? {
                    return Ok(StoreOutcome::Duplicate { path: candidate });
                }
            }
        }
    }
    unreachable!("u32 conflict counter exhausted")
}

fn same_content(path: &Path, bytes: &[u8]) -> Result<bool, SpoolError> {
    let metadata = fs::metadata(path).map_err(|source| SpoolError::Read { path: path.to_path_buf(), source })?;
    if metadata.len() != bytes.len() as u64 {
        return Ok(false);
    }
    let existing = fs::read(path).map_err(|source| SpoolError::Read { path: path.to_path_buf(), source })?;
    Ok(existing == bytes)
}

fn list_dirs(path: &Path) -> Result<Vec<String>, SpoolError> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SpoolError::Read { path: path.to_path_buf(), source }),
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

/// Writes a small file atomically: temporary file in the same folder, optional fsync, rename,
/// optional fsync of the folder. Used for state records and quarantine reasons.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let folder = path.parent().ok_or_else(|| io::Error::other("path has no parent folder"))?;
    fs::create_dir_all(folder)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = temp::temp_name(folder, &name);

    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        if fsync {
            file.sync_all()?;
        }
        fs::rename(&temp, path)?;
        if fsync {
            sync_dir(folder)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Returns the bytes available to unprivileged users on the file system holding `path`.
pub fn free_disk_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;

    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stats` points to writable memory of
    // the right type; statvfs fills it on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stats = unsafe { stats.assume_init() };
    // The field types differ between platforms, so the casts are not redundant everywhere.
    #[allow(clippy::unnecessary_cast)]
    let free = (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64);
    Ok(free)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Identifiers of an instance in study 1.2.3, series 1.2.3.4.
    pub(crate) fn ids(sop: &str) -> InstanceIds {
        InstanceIds {
            study_instance_uid: "1.2.3".to_string(),
            series_instance_uid: "1.2.3.4".to_string(),
            sop_instance_uid: sop.to_string(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".to_string(),
            number_of_temporal_positions: None,
            image_position_patient: None,
        }
    }

    fn source() -> Source {
        Source::Scp { calling_ae: "CT1".to_string() }
    }

    #[test]
    fn store_writes_instance_path() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();

        let outcome = spool.store(&ids("1.2.3.4.5"), b"first", source()).unwrap();

        let expected = dir.path().join("spool/1.2.3/1.2.3.4/1.2.3.4.5.dcm");
        assert_eq!(outcome, StoreOutcome::Stored { path: expected.clone() });
        assert_eq!(fs::read(&expected).unwrap(), b"first");
    }

    #[test]
    fn store_same_bytes_is_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.store(&ids("1.5"), b"same", source()).unwrap();

        let outcome = spool.store(&ids("1.5"), b"same", source()).unwrap();

        assert!(matches!(outcome, StoreOutcome::Duplicate { .. }), "{outcome:?}");
        assert_eq!(spool.study_instances("1.2.3").unwrap().len(), 1);
    }

    #[test]
    fn store_other_bytes_is_conflict_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.store(&ids("1.5"), b"original", source()).unwrap();

        let first = spool.store(&ids("1.5"), b"changed", source()).unwrap();
        let second = spool.store(&ids("1.5"), b"changed again", source()).unwrap();
        let repeat = spool.store(&ids("1.5"), b"changed", source()).unwrap();

        let folder = dir.path().join("spool/1.2.3/1.2.3.4");
        assert_eq!(first, StoreOutcome::Conflict { path: folder.join("1.5.conflict-1.dcm"), existing: folder.join("1.5.dcm") });
        assert_eq!(second, StoreOutcome::Conflict { path: folder.join("1.5.conflict-2.dcm"), existing: folder.join("1.5.dcm") });
        assert_eq!(repeat, StoreOutcome::Duplicate { path: folder.join("1.5.conflict-1.dcm") });
        assert_eq!(fs::read(folder.join("1.5.dcm")).unwrap(), b"original");
        assert_eq!(spool.study_instances("1.2.3").unwrap(), vec![folder.join("1.5.dcm")]);
    }

    #[test]
    fn store_rejects_path_traversal_uids() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut bad = ids("1.5");
        bad.series_instance_uid = "../../escape".to_string();

        let err = spool.store(&bad, b"x", source()).unwrap_err();

        assert!(matches!(err, SpoolError::InvalidUid { name: "SeriesInstanceUID", .. }), "{err}");
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn store_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open_with(dir.path(), Durability::PageCache).unwrap();
        spool.store(&ids("1.5"), b"a", source()).unwrap();
        spool.store(&ids("1.5"), b"b", source()).unwrap();

        let names: Vec<String> = fs::read_dir(dir.path().join("spool/1.2.3/1.2.3.4"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn named_temp_files_store_the_same_way() {
        for durability in [Durability::Fsync, Durability::PageCache] {
            let dir = tempfile::tempdir().unwrap();
            let mut spool = Spool::open_with(dir.path(), durability).unwrap();
            // As on a file system without O_TMPFILE.
            spool.unnamed_temp = false;

            let stored = spool.store(&ids("1.5"), b"original", source()).unwrap();
            let duplicate = spool.store(&ids("1.5"), b"original", source()).unwrap();
            let conflict = spool.store(&ids("1.5"), b"changed", source()).unwrap();

            let folder = dir.path().join("spool/1.2.3/1.2.3.4");
            assert_eq!(stored, StoreOutcome::Stored { path: folder.join("1.5.dcm") });
            assert_eq!(duplicate, StoreOutcome::Duplicate { path: folder.join("1.5.dcm") });
            assert_eq!(conflict, StoreOutcome::Conflict { path: folder.join("1.5.conflict-1.dcm"), existing: folder.join("1.5.dcm") });
            let mut names: Vec<String> = fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            assert_eq!(names, ["1.5.conflict-1.dcm", "1.5.dcm"], "{durability:?}");
        }
    }

    #[test]
    fn store_notifies_listener_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let (sender, receiver) = crossbeam_channel::bounded(4);
        spool.set_listener(sender);

        spool.store(&ids("1.5"), b"a", source()).unwrap();
        spool.store(&ids("1.5"), b"a", source()).unwrap();

        assert_eq!(receiver.try_recv().unwrap().ids.sop_instance_uid, "1.5");
        assert!(receiver.try_recv().is_err());
    }

    #[test]
    fn concurrent_stores_of_one_uid_keep_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| spool.store(&ids("1.9"), b"same bytes", source()).unwrap());
            }
        });
        assert_eq!(spool.study_instances("1.2.3").unwrap().len(), 1);
    }

    #[test]
    fn open_removes_stale_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.store(&ids("1.5"), b"a", source()).unwrap();
        let stale = dir.path().join("spool/1.2.3/1.2.3.4/.1.6.99-0.tmp");
        fs::write(&stale, b"half").unwrap();

        let reopened = Spool::open(dir.path()).unwrap();

        assert!(!stale.exists());
        assert_eq!(reopened.study_instances("1.2.3").unwrap().len(), 1);
    }

    #[test]
    fn fsync_store_orders_syncs_and_link() {
        use crate::ingest::group_commit::{SyncFn, SyncRequest};
        use std::sync::mpsc;

        let dir = tempfile::tempdir().unwrap();
        let final_path = dir.path().join("spool/1.2.3/1.2.3.4/1.7.dcm");
        let (started_tx, started) = mpsc::channel::<&'static str>();
        let (release, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let sync: Box<SyncFn> = Box::new(move |requests: &[SyncRequest]| {
            let kind = match requests {
                [SyncRequest::File(_)] => "file",
                [SyncRequest::Folder(_)] => "folder",
                _ => "other",
            };
            started_tx.send(kind).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
            Ok(())
        });
        let spool = Spool::open_inner(dir.path(), Durability::Fsync, GroupCommit::with_sync(sync), None).unwrap();
        let (done_tx, done) = mpsc::channel();

        std::thread::scope(|scope| {
            scope.spawn(|| done_tx.send(spool.store(&ids("1.7"), b"pixels", source()).unwrap()).unwrap());

            assert_eq!(started.recv().unwrap(), "file");
            assert!(!final_path.exists(), "linked before its data was synced");
            release.send(()).unwrap();

            assert_eq!(started.recv().unwrap(), "folder");
            assert!(final_path.exists());
            assert!(done.try_recv().is_err(), "returned before the folder was synced");
            release.send(()).unwrap();

            assert_eq!(done.recv().unwrap(), StoreOutcome::Stored { path: final_path.clone() });
        });
    }

    #[test]
    fn page_cache_store_skips_sync() {
        use crate::ingest::group_commit::SyncRequest;

        let dir = tempfile::tempdir().unwrap();
        let sync = GroupCommit::with_sync(Box::new(|_: &[SyncRequest]| Err(io::Error::other("sync called"))));
        let spool = Spool::open_inner(dir.path(), Durability::PageCache, sync, None).unwrap();

        assert!(matches!(spool.store(&ids("1.8"), b"a", source()).unwrap(), StoreOutcome::Stored { .. }));
    }

    #[test]
    fn failed_sync_is_a_write_error() {
        use crate::ingest::group_commit::SyncRequest;

        let dir = tempfile::tempdir().unwrap();
        let sync = GroupCommit::with_sync(Box::new(|_: &[SyncRequest]| Err(io::Error::other("disk gone"))));
        let spool = Spool::open_inner(dir.path(), Durability::Fsync, sync, None).unwrap();

        let err = spool.store(&ids("1.8"), b"a", source()).unwrap_err();

        assert!(matches!(err, SpoolError::Write { .. }), "{err}");
        assert!(spool.study_instances("1.2.3").unwrap().is_empty());
    }

    #[test]
    fn free_disk_bytes_is_positive() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert!(spool.free_disk_bytes().unwrap() > 0);
    }
}
