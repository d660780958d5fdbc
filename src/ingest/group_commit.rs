//! Group commit: fsyncs requested by several threads at once run as one batch.
//!
//! A thread that needs a file or a folder on disk calls [`GroupCommit::sync_file`] or
//! [`GroupCommit::sync_folder`] and blocks until a batch that contains its request has been
//! synced. When no batch is running, the caller becomes the leader: it takes every request
//! queued so far, syncs them and wakes the other callers of that batch. Requests that arrive
//! while a batch runs wait for the next one, so the number of journal commits follows the
//! number of batches, not the number of instances.
//!
//! Invariant: a call returns `Ok` only after the fsync of its own file or folder has returned
//! `Ok`. A failed batch fails every request in it.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

/// One request waiting for a batch.
#[derive(Debug)]
pub enum SyncRequest {
    /// An open file whose data and metadata must reach the disk.
    File(File),
    /// A folder whose entries (new links) must reach the disk.
    Folder(PathBuf),
}

/// Function that makes a batch durable. Tests replace the default, [`sync_batch`].
pub type SyncFn = dyn Fn(&[SyncRequest]) -> io::Result<()> + Send + Sync;

/// Batches concurrent fsync requests. Safe to share between threads.
pub struct GroupCommit {
    state: Mutex<State>,
    batch_done: Condvar,
    sync: Box<SyncFn>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// Requests for the batch numbered `next_batch`.
    queued: Vec<SyncRequest>,
    next_batch: u64,
    /// Whether a leader is syncing a batch now.
    syncing: bool,
    /// Outcome of finished batches until every caller of the batch has read it.
    finished: HashMap<u64, Finished>,
}

struct Finished {
    callers_left: usize,
    error: Option<(io::ErrorKind, String)>,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self::with_sync(Box::new(sync_batch))
    }
}

impl GroupCommit {
    /// Creates a group commit that syncs batches with `sync` (tests count or delay batches).
    pub fn with_sync(sync: Box<SyncFn>) -> Self {
        Self { state: Mutex::new(State::default()), batch_done: Condvar::new(), sync }
    }

    /// Blocks until `file` (data and metadata) is on disk.
    ///
    /// # Errors
    ///
    /// The error of the fsync of the batch that contained this file.
    pub fn sync_file(&self, file: File) -> io::Result<()> {
        self.submit(SyncRequest::File(file))
    }

    /// Blocks until the entries of `folder` are on disk.
    ///
    /// # Errors
    ///
    /// The error of the fsync of the batch that contained this folder.
    pub fn sync_folder(&self, folder: &Path) -> io::Result<()> {
        self.submit(SyncRequest::Folder(folder.to_path_buf()))
    }

    fn submit(&self, request: SyncRequest) -> io::Result<()> {
        let mut state = self.lock();
        let batch = state.next_batch;
        state.queued.push(request);

        loop {
            if let Some(result) = take_result(&mut state, batch) {
                return result;
            }
            if state.syncing {
                state = self.batch_done.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            } else {
                state = self.lead_batch(state);
            }
        }
    }

    /// Takes every queued request, syncs them with the lock released and records the outcome
    /// for all of their callers.
    fn lead_batch<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let requests = std::mem::take(&mut state.queued);
        let number = state.next_batch;
        state.next_batch += 1;
        state.syncing = true;
        drop(state);

        // Every request of a batch comes from one waiting caller.
        let callers_left = requests.len();
        let result = (self.sync)(&requests);
        drop(requests);

        let mut state = self.lock();
        state.syncing = false;
        let error = result.err().map(|err| (err.kind(), err.to_string()));
        if let Some((_, message)) = &error {
            tracing::error!(error = %message, "fsync of a spool batch failed; its instances are not acknowledged");
        }
        state.finished.insert(number, Finished { callers_left, error });
        self.batch_done.notify_all();
        state
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn take_result(state: &mut State, batch: u64) -> Option<io::Result<()>> {
    let finished = state.finished.get_mut(&batch)?;
    let result = match &finished.error {
        None => Ok(()),
        Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
    };
    finished.callers_left = finished.callers_left.saturating_sub(1);
    if finished.callers_left == 0 {
        state.finished.remove(&batch);
    }
    Some(result)
}

/// Syncs a batch: starts writeback of every file, then fsyncs every file and every distinct
/// folder. Starting all writeback first lets the file system allocate the whole batch before
/// the first fsync, so that on a journaling file system (ext4) one journal commit can cover most
/// of the batch. The benchmark measures the gain; no test does.
///
/// # Errors
///
/// The first fsync that fails; the rest of the batch is not synced.
pub fn sync_batch(requests: &[SyncRequest]) -> io::Result<()> {
    let files = || requests.iter().filter_map(|r| match r {
        SyncRequest::File(file) => Some(file),
        SyncRequest::Folder(_) => None,
    });

    for file in files() {
        start_writeback(file);
    }
    for file in files() {
        file.sync_all()?;
    }

    let folders: BTreeSet<&Path> = requests
        .iter()
        .filter_map(|r| match r {
            SyncRequest::Folder(folder) => Some(folder.as_path()),
            SyncRequest::File(_) => None,
        })
        .collect();
    for folder in folders {
        File::open(folder)?.sync_all()?;
    }
    Ok(())
}

/// Asks the kernel to start writing `file`'s dirty pages without waiting. It is only a hint:
/// durability comes from the fsync that follows, which also reports any write error.
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;

    // SAFETY: the descriptor is open for the lifetime of `file`; sync_file_range reads no memory.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &File) {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};

    use super::*;

    impl GroupCommit {
        fn queued_len(&self) -> usize {
            self.lock().queued.len()
        }
    }

    fn temp_file() -> File {
        tempfile::tempfile().unwrap()
    }

    /// A sync function that reports each batch size on `started`, then blocks until `release`
    /// sends a result for that batch.
    fn gated_sync(started: mpsc::Sender<usize>, release: mpsc::Receiver<io::Result<()>>) -> Box<SyncFn> {
        let release = Mutex::new(release);
        Box::new(move |requests: &[SyncRequest]| {
            started.send(requests.len()).unwrap();
            release.lock().unwrap().recv().unwrap()
        })
    }

    #[test]
    fn sync_file_returns_after_its_batch() {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let commit = Arc::new(GroupCommit::with_sync(gated_sync(started_tx, release_rx)));
        let returned = Arc::new(AtomicBool::new(false));

        let caller = {
            let (commit, returned) = (Arc::clone(&commit), Arc::clone(&returned));
            std::thread::spawn(move || {
                commit.sync_file(temp_file()).unwrap();
                returned.store(true, Ordering::SeqCst);
            })
        };
        assert_eq!(started.recv().unwrap(), 1);
        assert!(!returned.load(Ordering::SeqCst), "returned before its sync finished");

        release.send(Ok(())).unwrap();
        caller.join().unwrap();
        assert!(returned.load(Ordering::SeqCst));
    }

    #[test]
    fn requests_during_a_batch_share_the_next() {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let commit = Arc::new(GroupCommit::with_sync(gated_sync(started_tx, release_rx)));
        let spawn_caller = |folder: bool| {
            let commit = Arc::clone(&commit);
            std::thread::spawn(move || {
                if folder {
                    commit.sync_folder(Path::new("/tmp")).unwrap();
                } else {
                    commit.sync_file(temp_file()).unwrap();
                }
            })
        };

        let first = spawn_caller(false);
        assert_eq!(started.recv().unwrap(), 1);
        let later: Vec<_> = [false, true, false].into_iter().map(spawn_caller).collect();
        while commit.queued_len() < 3 {
            std::thread::yield_now();
        }

        release.send(Ok(())).unwrap();
        first.join().unwrap();
        assert_eq!(started.recv().unwrap(), 3, "the three waiting requests form one batch");
        release.send(Ok(())).unwrap();
        for caller in later {
            caller.join().unwrap();
        }
        assert!(started.try_recv().is_err(), "no third batch");
    }

    #[test]
    fn failed_batch_fails_every_caller() {
        let commit = Arc::new(GroupCommit::with_sync(Box::new(|_: &[SyncRequest]| {
            Err(io::Error::other("disk gone"))
        })));

        let callers: Vec<_> = (0..4)
            .map(|_| {
                let commit = Arc::clone(&commit);
                std::thread::spawn(move || commit.sync_file(temp_file()))
            })
            .collect();

        for caller in callers {
            let err = caller.join().unwrap().unwrap_err();
            assert_eq!(err.to_string(), "disk gone");
        }
        assert!(commit.lock().finished.is_empty(), "finished batches are forgotten once read");
    }

    #[test]
    fn default_sync_writes_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.dcm");
        std::fs::write(&path, b"bytes").unwrap();
        let commit = GroupCommit::default();

        commit.sync_file(File::open(&path).unwrap()).unwrap();
        commit.sync_folder(dir.path()).unwrap();

        let err = commit.sync_folder(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
