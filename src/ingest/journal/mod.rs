//! The intake journal: a write-ahead log in front of the spool for `durability: fsync`.
//!
//! A fsynced spool file costs two ext4 journal commits (the new file and its folder entry). The
//! journal instead appends each instance to a preallocated segment file and calls fdatasync,
//! which only writes the data blocks and flushes the disk cache, because the blocks already
//! exist. The spool file is written through the page cache and linked under its name once the
//! record is on disk: by the C-STORE receiver after its response (`Spool::store_durable`), and
//! by `Spool::store` before it returns.
//!
//! Layout under `<data_dir>/journal/`: `segment-<index>.wal`, each [`JournalSettings::segment_bytes`]
//! long and filled with zeros when created. Block 0 of a segment is its header (magic, generation,
//! CRC). Records follow, each starting on a 4 KiB boundary with a head block:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `PNJR` |
//! | 4..8 | record format version (2) |
//! | 8..16 | generation of the segment when the record was written |
//! | 16..24 | sequence number, increasing across segments |
//! | 24..28 | length of the spool-relative path |
//! | 28..32 | zero |
//! | 32..40 | length of the instance bytes |
//! | 40..44 | CRC-32 of bytes 0..40, the path and the instance bytes |
//! | 48.. | the path (UTF-8), then zeros to the end of the block |
//!
//! The instance bytes start at the next block, so a receive buffer that lies on a block
//! boundary in memory is written without a copy ([`RecordData`]). Version 1 records put the
//! instance bytes right after the path. Scans still read them, so a journal left by an older
//! build replays.
//!
//! A store reserves its record's place and sequence number under the journal's lock and writes
//! the record after releasing it, with `O_DIRECT` where the file system allows ([`direct`]), so
//! the writes of several associations overlap. The fdatasyncs run as group commits: a store that
//! waits for its record starts a sync round when none is running, and one round covers every
//! record below the first one still being written, so several associations share it.
//!
//! Invariants:
//! - A record is valid only while its generation equals its segment's. Places are reserved in
//!   offset order, and a scan stops at the first invalid record of a segment. A record is
//!   therefore acknowledged only when every record reserved before it is written and synced
//!   too, and a failed record write stops the journal like a failed fdatasync.
//! - A store links its spool file only after its record is on disk, so a spool file written
//!   through the page cache always has a durable record until the next checkpoint.
//! - Before a segment is reused, every spool file whose record is in the segment is fsynced
//!   with the folders above it, and only then is the segment's generation raised.
//!   [`Journal::checkpoint`] does the same for every segment with one `syncfs`. Replay
//!   therefore never restores a file that was removed after a checkpoint. Reuse syncs only the
//!   segment's own files, not the whole file system. The spool files of the newest records thus
//!   stay in the page cache and reach the disk once, by the kernel's writeback.
//! - With three or more segments, moving into a segment starts that checkpoint for the segment
//!   after it on a background thread, once every record there has its spool file. Its fsyncs
//!   then run while stores go on, so the next move rarely waits for them.
//! - At start-up, [`Journal::open`] restores each valid record whose spool file is missing or
//!   differs, then checkpoints and voids every segment.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use thiserror::Error;

use format::{record_head, record_len, write_segment_header, BLOCK, MAX_PATH_LEN};
#[cfg(test)]
use format::legacy_record;

mod direct;
mod format;
mod recovery;

/// Size and number of the journal's segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalSettings {
    /// Length of each segment file in bytes, a multiple of 4096. An instance whose record does
    /// not fit into one segment is stored with the direct fsync path instead.
    pub segment_bytes: u64,
    /// Number of segment files in the ring, at least 2.
    pub segments: u32,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self { segment_bytes: 64 * 1024 * 1024, segments: 4 }
    }
}

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("could not create journal segment {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("could not read journal segment {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("could not write journal segment {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the intake journal failed earlier ({0}); restart the daemon to replay the journal")]
    SyncFailed(String),
    #[error("could not make the spool durable at {path} (fsync or syncfs failed): {source}")]
    Checkpoint { path: PathBuf, source: io::Error },
    #[error("could not restore spool file {path} from the journal: {source}; the journal is kept for the next start")]
    Restore { path: PathBuf, source: io::Error },
    #[error("record for {path} ({bytes} bytes) does not fit into a journal segment")]
    TooLarge { path: String, bytes: usize },
    #[error("journal settings are invalid: {0}")]
    Settings(String),
}

/// The instance bytes of a record, with the room after them that a direct write may send too.
#[derive(Debug, Clone, Copy)]
pub struct RecordData<'a> {
    /// The instance bytes, then bytes whose values do not matter.
    buffer: &'a [u8],
    len: usize,
}

impl<'a> RecordData<'a> {
    /// Wraps instance bytes that are to be copied into an aligned buffer for a direct write.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { buffer: bytes, len: bytes.len() }
    }

    /// Wraps the first `len` bytes of `buffer` as the instance bytes. When `buffer` starts on a
    /// 4 KiB boundary and reaches the next one after them, a direct write sends it as it is,
    /// padding included.
    ///
    /// # Panics
    ///
    /// `len` is larger than `buffer`.
    pub fn padded(buffer: &'a [u8], len: usize) -> Self {
        assert!(len <= buffer.len(), "record data of {len} bytes in a buffer of {}", buffer.len());
        Self { buffer, len }
    }

    /// Returns the instance bytes.
    pub fn bytes(&self) -> &'a [u8] {
        &self.buffer[..self.len]
    }

    /// Returns the instance bytes and their padding up to a multiple of `block`, when they start
    /// at an address aligned to `block` and the buffer reaches that far.
    fn aligned(&self, block: usize) -> Option<&'a [u8]> {
        let padded_len = self.len.div_ceil(block) * block;
        let aligned = (self.buffer.as_ptr() as usize).is_multiple_of(block) && self.buffer.len() >= padded_len;
        aligned.then(|| &self.buffer[..padded_len])
    }
}

/// Counts of what [`Journal::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Valid records of the current generations.
    pub records: usize,
    /// Records whose spool file was missing or differed and was rewritten.
    pub restored: usize,
    /// Whether records are written with `O_DIRECT`. They go through the page cache when the file
    /// system rejects it.
    pub direct_io: bool,
}

/// The journal of one data directory. Safe to share between threads.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    spool_root: PathBuf,
    settings: JournalSettings,
    state: Mutex<State>,
    /// Wakes stores and checkpoints: a sync round finished or an in-flight count dropped.
    progress: Condvar,
}

#[derive(Debug)]
struct State {
    segments: Vec<Segment>,
    current: usize,
    /// Offset of the next record in the current segment.
    offset: u64,
    /// Sequence number of the next record. Every record below it has its place.
    next_sequence: u64,
    /// Every record below this sequence number has been written.
    written: u64,
    /// Records at or above `written` whose write has finished.
    written_ahead: BTreeSet<u64>,
    /// Every record below this sequence number is on disk.
    synced: u64,
    next_generation: u64,
    /// Error of a failed fdatasync, or of a spool file that could not be written after its
    /// record was acknowledged ([`Journal::fail`]). Once set, no record is acknowledged any
    /// more, because the kernel may have dropped the pages that failed to write, and no
    /// checkpoint voids a record.
    failed: Option<String>,
    /// Whether a store is running a sync round now.
    syncing: bool,
    /// Whether a background checkpoint is running now.
    checkpointing: bool,
    /// Segment whose background checkpoint a rotation asked for, not started yet.
    checkpoint_ahead: Option<usize>,
    /// Checkpoints run since open (rotations and explicit calls).
    checkpoints: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: Arc<File>,
    /// The same file opened with `O_DIRECT`, when the file system allows it.
    direct: Option<Arc<File>>,
    generation: u64,
    /// Stores whose record is in this segment and whose spool file is not linked yet.
    in_flight: usize,
    /// Whether records of the current generation were written since the last checkpoint.
    dirty: bool,
    /// Whether records were written since the last sync round took this segment.
    unsynced: bool,
    /// Spool-relative paths of the records of the current generation, for the checkpoint
    /// before reuse.
    records: Vec<String>,
}

/// A record that has been written; [`Pending::wait`] returns once it is on disk. Dropping it,
/// after the spool file is linked, allows a checkpoint of the record's segment.
#[derive(Debug)]
pub struct Pending<'a> {
    shared: &'a Shared,
    segment: usize,
    sequence: u64,
}

impl Pending<'_> {
    /// Blocks until the record is on disk, running a sync round when none is running.
    ///
    /// # Errors
    ///
    /// The fdatasync that should have covered it failed (or an earlier one did).
    pub fn wait(&self) -> Result<(), JournalError> {
        let mut state = self.shared.lock();
        loop {
            if let Some(error) = &state.failed {
                return Err(JournalError::SyncFailed(error.clone()));
            }
            if state.synced > self.sequence {
                return Ok(());
            }
            state = if state.syncing || state.written <= self.sequence {
                self.shared.progress.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner())
            } else {
                self.shared.sync_round(state)
            };
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let segment = &mut state.segments[self.segment];
        segment.in_flight = segment.in_flight.saturating_sub(1);
        self.shared.progress.notify_all();
    }
}

impl Journal {
    /// Opens `<data_dir>/journal`, restores the spool files of valid records under `spool_root`,
    /// checkpoints and (re)creates the segments to match `settings`.
    ///
    /// # Errors
    ///
    /// A segment that cannot be read or created, a spool file that cannot be restored, or a
    /// failed `syncfs`. Nothing is voided on error, so the next start replays again.
    pub fn open(data_dir: &Path, spool_root: &Path, settings: JournalSettings) -> Result<(Self, Recovery), JournalError> {
        check_settings(settings)?;
        let dir = data_dir.join("journal");
        std::fs::create_dir_all(&dir).map_err(|source| JournalError::Create { path: dir.clone(), source })?;

        let existing = recovery::list_segments(&dir)?;
        let scan = recovery::scan(&existing)?;
        let restored = recovery::restore(spool_root, &scan.records)?;
        syncfs(spool_root)?;
        let prepared = recovery::prepare_segments(&dir, &existing, settings, scan.max_generation)?;

        let next_sequence = scan.records.last().map_or(0, |record| record.sequence + 1);
        let next_generation = prepared.iter().map(|(_, _, generation)| *generation).max().unwrap_or(0) + 1;
        let segments = prepared
            .into_iter()
            .map(|(path, file, generation)| {
                let direct = direct::open_direct(&path).map(Arc::new);
                Segment { path, file: Arc::new(file), direct, generation, in_flight: 0, dirty: false, unsynced: false, records: Vec::new() }
            })
            .collect::<Vec<_>>();
        let direct_io = segments.iter().all(|segment| segment.direct.is_some());
        let state = State {
            segments,
            current: 0,
            offset: BLOCK,
            next_sequence,
            written: next_sequence,
            written_ahead: BTreeSet::new(),
            synced: next_sequence,
            next_generation,
            failed: None,
            syncing: false,
            checkpointing: false,
            checkpoint_ahead: None,
            checkpoints: 0,
        };
        let shared = Arc::new(Shared { spool_root: spool_root.to_path_buf(), settings, state: Mutex::new(state), progress: Condvar::new() });
        Ok((Self { shared }, Recovery { records: scan.records.len(), restored, direct_io }))
    }

    /// Returns whether an instance of `data_len` bytes fits into one segment, with any valid path.
    pub fn fits(&self, data_len: usize) -> bool {
        record_len(MAX_PATH_LEN, data_len) <= self.shared.settings.segment_bytes - BLOCK
    }

    /// Writes a record of `bytes` for the spool file at `relative_path`; [`Pending::wait`] makes
    /// it durable.
    ///
    /// # Errors
    ///
    /// The record does not fit into a segment (see [`Journal::fits`]), the write failed, the
    /// checkpoint before reusing a segment failed, or an earlier fdatasync failed.
    pub fn append(&self, relative_path: &str, data: RecordData<'_>) -> Result<Pending<'_>, JournalError> {
        let shared = &*self.shared;
        let bytes = data.bytes();
        if !self.fits(bytes.len()) || relative_path.len() > MAX_PATH_LEN {
            return Err(JournalError::TooLarge { path: relative_path.to_string(), bytes: bytes.len() });
        }
        let len = record_len(relative_path.len(), bytes.len());
        let mut data_crc = crc32fast::Hasher::new();
        data_crc.update(bytes);

        let mut state = shared.lock();
        if let Some(error) = &state.failed {
            return Err(JournalError::SyncFailed(error.clone()));
        }
        while state.offset + len > shared.settings.segment_bytes {
            state = shared.rotate(state)?;
        }
        if let Some(index) = state.checkpoint_ahead.take() {
            let background = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("journal-checkpoint".into())
                .spawn(move || background.checkpoint_in_background(index));
            if let Err(error) = spawned {
                // The rotation that reaches the segment checkpoints it itself.
                tracing::warn!(%error, "could not start a background checkpoint of the intake journal");
                state.checkpointing = false;
            }
        }

        let (current, offset, sequence) = (state.current, state.offset, state.next_sequence);
        let segment = &mut state.segments[current];
        let head = record_head(segment.generation, sequence, relative_path, &data_crc, bytes.len());
        let (file, direct, path) = (Arc::clone(&segment.file), segment.direct.clone(), segment.path.clone());
        segment.in_flight += 1;
        segment.dirty = true;
        segment.records.push(relative_path.to_string());
        state.offset += len;
        state.next_sequence += 1;
        drop(state);
        let pending = Pending { shared, segment: current, sequence };

        let written = direct::write_record(&file, direct.as_deref(), offset, &head, data, len);

        let mut state = shared.lock();
        match &written {
            Ok(()) => state.record_written(current, sequence),
            Err(error) => {
                // The unwritten place would end the scan of its segment, so no later record
                // of the segment may be acknowledged.
                // NOTE: no test injects a failed record write, so this branch is checked by
                // reading only.
                tracing::error!(%error, segment = %path.display(), "write to the intake journal failed; no further instance is acknowledged until a restart");
                state.failed.get_or_insert_with(|| format!("{}: {error}", path.display()));
            }
        }
        shared.progress.notify_all();
        drop(state);
        written.map_err(|source| JournalError::Write { path, source })?;
        Ok(pending)
    }

    /// Marks the journal failed, as a failed fdatasync does: no further record is written or
    /// acknowledged and no checkpoint voids a record until a restart replays the journal. For a
    /// store that acknowledged its record but could not write the spool file.
    pub fn fail(&self, reason: String) {
        let mut state = self.shared.lock();
        state.failed.get_or_insert(reason);
        self.shared.progress.notify_all();
    }

    /// Makes every spool file written so far durable and voids every record, so that files may
    /// leave the spool without being restored by a later replay. Call it before removing or
    /// moving any file out of the spool.
    ///
    /// # Errors
    ///
    /// `syncfs` or a segment header write failed; the records stay valid.
    pub fn checkpoint(&self) -> Result<(), JournalError> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        while state.checkpointing || state.segments.iter().any(|segment| segment.in_flight > 0) {
            state = shared.progress.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if let Some(error) = &state.failed {
            return Err(JournalError::SyncFailed(error.clone()));
        }
        syncfs(&shared.spool_root)?;
        for index in 0..state.segments.len() {
            if state.segments[index].dirty {
                void_segment(&mut state, index)?;
            }
        }
        state.offset = BLOCK;
        state.checkpoints += 1;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn checkpoints(&self) -> u64 {
        self.shared.lock().checkpoints
    }
}

impl State {
    /// Notes that the record `sequence` in segment `segment` is written, and moves `written`
    /// past every record written without a gap.
    fn record_written(&mut self, segment: usize, sequence: u64) {
        self.segments[segment].unsynced = true;
        self.written_ahead.insert(sequence);
        while self.written_ahead.remove(&self.written) {
            self.written += 1;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves to the next segment, first making the spool files of its records durable and then
    /// voiding them. Returns early when another store rotated while this one waited.
    fn rotate<'a>(&'a self, mut state: MutexGuard<'a, State>) -> Result<MutexGuard<'a, State>, JournalError> {
        let from = state.current;
        let count = state.segments.len();
        let next = (from + 1) % count;
        while (state.segments[next].in_flight > 0 || state.checkpointing) && state.current == from {
            state = self.progress.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.current != from {
            return Ok(state);
        }

        if state.segments[next].dirty {
            sync_spool_files(&self.spool_root, &state.segments[next].records)?;
            void_segment(&mut state, next)?;
            state.checkpoints += 1;
        }
        state.current = next;
        state.offset = BLOCK;

        let ahead = (next + 1) % count;
        let idle = state.segments[ahead].dirty && state.segments[ahead].in_flight == 0;
        if count >= 3 && idle && state.failed.is_none() {
            state.checkpointing = true;
            state.checkpoint_ahead = Some(ahead);
        }
        Ok(state)
    }

    /// Makes the spool files of segment `index` durable and voids the segment, which no store
    /// may write into meanwhile: rotations wait while `checkpointing` is set. A failure is
    /// logged, and the segment stays dirty for the rotation that reaches it.
    fn checkpoint_in_background(&self, index: usize) {
        let records = self.lock().segments[index].records.clone();
        let synced = sync_spool_files(&self.spool_root, &records);

        let mut state = self.lock();
        let voided = synced.and_then(|()| {
            if state.failed.is_some() || !state.segments[index].dirty || state.segments[index].in_flight > 0 {
                return Ok(());
            }
            void_segment(&mut state, index)?;
            state.checkpoints += 1;
            Ok(())
        });
        if let Err(error) = voided {
            tracing::warn!(%error, "background checkpoint of the intake journal failed; the next rotation retries it");
        }
        state.checkpointing = false;
        self.progress.notify_all();
    }

    /// Runs one sync round with the lock released: fdatasyncs every segment written since the
    /// previous round, so the round covers every record below `written` when it started.
    fn sync_round<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let target = state.written;
        let mut files: Vec<(Arc<File>, PathBuf)> = Vec::new();
        for segment in state.segments.iter_mut().filter(|segment| segment.unsynced) {
            segment.unsynced = false;
            files.push((Arc::clone(&segment.file), segment.path.clone()));
        }
        state.syncing = true;
        drop(state);

        let result = files.iter().try_for_each(|(file, path)| file.sync_data().map_err(|err| format!("{}: {err}", path.display())));

        let mut state = self.lock();
        state.syncing = false;
        match result {
            Ok(()) => state.synced = state.synced.max(target),
            Err(error) => {
                tracing::error!(%error, "fdatasync of the intake journal failed; no further instance is acknowledged until a restart");
                state.failed = Some(error);
            }
        }
        self.progress.notify_all();
        state
    }
}

fn check_settings(settings: JournalSettings) -> Result<(), JournalError> {
    if settings.segments < 2 {
        return Err(JournalError::Settings(format!("at least 2 segments are needed, got {}", settings.segments)));
    }
    if settings.segment_bytes < 4 * BLOCK || !settings.segment_bytes.is_multiple_of(BLOCK) {
        return Err(JournalError::Settings(format!(
            "segment size must be a multiple of {BLOCK} bytes and at least {} bytes, got {}",
            4 * BLOCK,
            settings.segment_bytes
        )));
    }
    Ok(())
}

/// Gives the segment a new generation and writes its header, so its records are void.
fn void_segment(state: &mut State, index: usize) -> Result<(), JournalError> {
    let generation = state.next_generation;
    state.next_generation += 1;
    let segment = &mut state.segments[index];
    write_segment_header(&segment.file, generation)
        .and_then(|()| segment.file.sync_data())
        .map_err(|source| JournalError::Write { path: segment.path.clone(), source })?;
    segment.generation = generation;
    segment.dirty = false;
    segment.records.clear();
    Ok(())
}

/// Makes the spool files of a segment's records durable: each file's data, then once each folder
/// between the files and the spool root, for their new entries. A missing file is skipped,
/// because something removed it on purpose and its record must not bring it back.
fn sync_spool_files(spool_root: &Path, relative_paths: &[String]) -> Result<(), JournalError> {
    for relative in relative_paths {
        sync_if_present(&spool_root.join(relative), false)?;
    }

    for folder in folders_to_sync(spool_root, relative_paths) {
        sync_if_present(&folder, true)?;
    }
    Ok(())
}

/// Lists the folders from each file up to and including the spool root, each once and deepest
/// first, so that a folder is synced after the entries inside it.
fn folders_to_sync(spool_root: &Path, relative_paths: &[String]) -> Vec<PathBuf> {
    let mut folders = BTreeSet::new();
    for relative in relative_paths {
        let path = spool_root.join(relative);
        folders.extend(path.ancestors().skip(1).take_while(|folder| folder.starts_with(spool_root)).map(Path::to_path_buf));
    }
    folders.into_iter().rev().collect()
}

/// Fsyncs a file (data only) or a folder (entries and metadata). A missing one is skipped.
fn sync_if_present(path: &Path, folder: bool) -> Result<(), JournalError> {
    let error = |source| JournalError::Checkpoint { path: path.to_path_buf(), source };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(error(err)),
    };
    let synced = if folder { file.sync_all() } else { file.sync_data() };
    synced.map_err(error)
}

/// Flushes every dirty page and pending metadata change of the file system that contains `path`.
fn syncfs(path: &Path) -> Result<(), JournalError> {
    use std::os::fd::AsRawFd;

    let error = |source| JournalError::Checkpoint { path: path.to_path_buf(), source };
    let folder = File::open(path).map_err(error)?;
    // SAFETY: the descriptor is open for the lifetime of `folder`; syncfs reads no memory.
    let rc = unsafe { libc::syncfs(folder.as_raw_fd()) };
    if rc != 0 {
        return Err(error(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
