//! Watched folders: files dropped in are identified, spooled durably, then deleted.
//!
//! File system events (notify, recursive) and a periodic full rescan both feed a candidate list.
//! A candidate is taken only once its size and modification time have not changed for
//! `settle_ms`. Names ending in `.part` or `.tmp`, and hidden names, are skipped until renamed.
//! An input file is deleted only after its spool copy is fsynced; a file that is not a usable
//! DICOM instance is moved to quarantine with its reason.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{unbounded, Receiver};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use thiserror::Error;

use super::identify::identify;
use super::quarantine::{Quarantine, Reason};
use super::spool::{Source, Spool, StoreOutcome};
use crate::config::WatchSettings;

/// File system events handled before each check for settled files.
const MAX_EVENTS_PER_TICK: usize = 10_000;

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("could not create watched folder {path}: {source}")]
    CreateFolder { path: PathBuf, source: std::io::Error },
    #[error("could not watch folder {path}: {source}; check that it exists and is readable")]
    Watch { path: PathBuf, source: notify::Error },
    #[error("could not start the watcher thread: {0}")]
    Thread(std::io::Error),
}

/// Counts of what the watcher did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WatchCounts {
    pub spooled: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub quarantined: u64,
}

/// A running watcher over all configured folders.
pub struct FolderWatcher {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<WatchCounts>,
    _notify: RecommendedWatcher,
}

impl FolderWatcher {
    /// Creates missing folders, starts watching them, and queues files already present.
    pub fn spawn(settings: &WatchSettings, spool: Arc<Spool>, quarantine: Quarantine) -> Result<Self, WatchError> {
        let (sender, events) = unbounded();
        let mut notify = notify::recommended_watcher(move |event| {
            let _ = sender.send(event);
        })
        .map_err(|source| WatchError::Watch { path: PathBuf::new(), source })?;

        for folder in &settings.folders {
            fs::create_dir_all(folder).map_err(|source| WatchError::CreateFolder { path: folder.clone(), source })?;
            notify
                .watch(folder, RecursiveMode::Recursive)
                .map_err(|source| WatchError::Watch { path: folder.clone(), source })?;
            tracing::info!(folder = %folder.display(), "Watching folder");
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut state = WatchLoop {
            folders: settings.folders.clone(),
            settle: settings.settle,
            rescan: settings.rescan,
            spool,
            quarantine,
            candidates: HashMap::new(),
            counts: WatchCounts::default(),
        };
        let stop_flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("watcher".to_string())
            .spawn(move || state.run(&events, &stop_flag))
            .map_err(WatchError::Thread)?;

        Ok(Self { stop, handle, _notify: notify })
    }

    /// Stops watching after the file in hand, and returns the counts.
    pub fn stop(self) -> WatchCounts {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_default()
    }
}

/// Last seen size and modification time of a file, and since when they have not changed.
struct Candidate {
    size: u64,
    modified: Option<SystemTime>,
    unchanged_since: Instant,
}

struct WatchLoop {
    folders: Vec<PathBuf>,
    settle: Duration,
    rescan: Duration,
    spool: Arc<Spool>,
    quarantine: Quarantine,
    candidates: HashMap<PathBuf, Candidate>,
    counts: WatchCounts,
}

impl WatchLoop {
    fn run(&mut self, events: &Receiver<notify::Result<notify::Event>>, stop: &AtomicBool) -> WatchCounts {
        let tick = (self.settle / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut next_rescan = Instant::now();

        while !stop.load(Ordering::SeqCst) {
            if Instant::now() >= next_rescan {
                self.rescan_all();
                next_rescan = Instant::now() + self.rescan;
            }

            // A timeout only means no event arrived during this tick.
            if let Ok(event) = events.recv_timeout(tick) {
                self.note_event(event, &mut next_rescan);
                // Bounded, so a flood of events cannot starve the settled-file check.
                for _ in 0..MAX_EVENTS_PER_TICK {
                    let Ok(event) = events.try_recv() else { break };
                    self.note_event(event, &mut next_rescan);
                }
            }

            self.take_settled(stop);
        }
        self.counts
    }

    fn note_event(&mut self, event: notify::Result<notify::Event>, next_rescan: &mut Instant) {
        match event {
            Ok(event) if event.need_rescan() => *next_rescan = Instant::now(),
            // Opening and reading files (the watcher's own scans included) raise access events,
            // which would otherwise feed back into more scans. Removals need no action.
            Ok(event) if matches!(event.kind, EventKind::Access(_) | EventKind::Remove(_)) => {}
            Ok(event) => {
                for path in event.paths {
                    if path.is_dir() {
                        self.scan(&path);
                    } else {
                        self.consider(path);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "File system event error; rescanning the watched folders");
                *next_rescan = Instant::now();
            }
        }
    }

    fn rescan_all(&mut self) {
        for folder in self.folders.clone() {
            self.scan(&folder);
        }
    }

    /// Adds every eligible file under `folder` to the candidates.
    fn scan(&mut self, folder: &Path) {
        let mut pending = vec![folder.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                    Ok(kind) if kind.is_file() => self.consider(entry.path()),
                    _ => {}
                }
            }
        }
    }

    fn consider(&mut self, path: PathBuf) {
        if !is_eligible(&path) || self.candidates.contains_key(&path) {
            return;
        }
        let Ok(metadata) = fs::metadata(&path) else { return };
        if !metadata.is_file() {
            return;
        }
        self.candidates.insert(
            path,
            Candidate { size: metadata.len(), modified: metadata.modified().ok(), unchanged_since: Instant::now() },
        );
    }

    /// Takes every candidate whose size and modification time have been stable for `settle`.
    fn take_settled(&mut self, stop: &AtomicBool) {
        let now = Instant::now();
        let mut settled = Vec::new();
        self.candidates.retain(|path, candidate| {
            let Ok(metadata) = fs::metadata(path) else { return false };
            let modified = metadata.modified().ok();
            if metadata.len() != candidate.size || modified != candidate.modified {
                candidate.size = metadata.len();
                candidate.modified = modified;
                candidate.unchanged_since = now;
                return true;
            }
            if now.duration_since(candidate.unchanged_since) >= self.settle {
                settled.push(path.clone());
                return false;
            }
            true
        });

        settled.sort();
        for path in settled {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            self.take(&path);
        }
    }

    /// Spools one settled file and deletes it, or moves it to quarantine.
    fn take(&mut self, path: &Path) {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "Could not read watched file; will retry at the next rescan");
                return;
            }
        };

        let ids = match identify(&bytes) {
            Ok(ids) => ids,
            Err(err) => {
                self.quarantine_file(path, err.kind(), &err.to_string());
                return;
            }
        };

        let source = Source::Watch { path: path.to_path_buf() };
        match self.spool.store_with(&ids, &bytes, source, true) {
            Ok(outcome) => {
                match outcome {
                    StoreOutcome::Stored { .. } => self.counts.spooled += 1,
                    StoreOutcome::Duplicate { .. } => self.counts.duplicates += 1,
                    StoreOutcome::Conflict { .. } => self.counts.conflicts += 1,
                }
                // The spool copy is fsynced, so the input can go.
                if let Err(err) = fs::remove_file(path) {
                    tracing::warn!(path = %path.display(), error = %err, "Spooled file could not be deleted; it will be seen again as a duplicate");
                }
            }
            Err(err) => {
                tracing::error!(path = %path.display(), study_uid = %ids.study_instance_uid, error = %err,
                    "Could not spool watched file; it stays in place and is retried at the next rescan");
            }
        }
    }

    fn quarantine_file(&mut self, path: &Path, kind: &str, message: &str) {
        let reason = Reason::new(kind, message, path.display().to_string());
        match self.quarantine.take_file(path, &reason) {
            Ok(entry) => {
                self.counts.quarantined += 1;
                tracing::warn!(path = %path.display(), kind, reason = message, entry = %entry.display(), "File quarantined");
            }
            Err(err) => {
                tracing::error!(path = %path.display(), kind, error = %err, "Could not quarantine file; it stays in place");
            }
        }
    }
}

/// Skips partial uploads (`*.part`, `*.tmp`) and hidden files (`.name`), which writers rename
/// when they are complete.
fn is_eligible(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !(name.starts_with('.') || name.ends_with(".part") || name.ends_with(".tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_and_hidden_names_are_skipped() {
        assert!(!is_eligible(Path::new("/in/IM0001.dcm.part")));
        assert!(!is_eligible(Path::new("/in/IM0001.tmp")));
        assert!(!is_eligible(Path::new("/in/.IM0001.dcm")));
        assert!(is_eligible(Path::new("/in/IM0001.dcm")));
        assert!(is_eligible(Path::new("/in/IM0001")));
    }
}
