//! Durable C-STORE forwarding of results to the configured destinations.
//!
//! Layout under the outbox folder, one folder per destination:
//!
//! ```text
//! <outbox>/<destination>/<SOPInstanceUID>.dcm          queued Part 10 file
//! <outbox>/<destination>/<SOPInstanceUID>.state.json   attempts so far and the next due time
//! <outbox>/<destination>/tmp/                          copies being written
//! <outbox>/<destination>/dead_letter/<SOPInstanceUID>/ the file and reason.json, given up on
//! ```
//!
//! An item leaves the queue only after the destination returned a success or warning status,
//! so each object is delivered at least once. The SOP Instance UID names the item, so an
//! instance enqueued twice while it waits is sent once.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub mod scu;

use scu::{Part10File, ScuTarget, SendOutcome};

/// A configured C-STORE destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Folder name under the outbox: letters, digits, `-` and `_` only.
    pub name: String,
    /// `host:port`.
    pub address: String,
    pub called_ae_title: String,
    pub calling_ae_title: String,
    /// Maximum PDU length this side receives, in bytes.
    pub max_pdu_length: u32,
    /// Limit for connecting and for each socket read or write.
    pub timeout: Duration,
}

impl Destination {
    fn target(&self) -> ScuTarget {
        ScuTarget {
            address: self.address.clone(),
            called_ae_title: self.called_ae_title.clone(),
            calling_ae_title: self.calling_ae_title.clone(),
            max_pdu_length: self.max_pdu_length,
            timeout: self.timeout,
        }
    }
}

/// When and how often delivery is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before an item is dead-lettered (at least 1).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; it doubles after each further failure.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between attempts.
    pub max_backoff: Duration,
    /// Maximum items sent in one association.
    pub batch_size: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
            batch_size: 64,
        }
    }
}

impl RetryPolicy {
    /// Returns the wait after `failures` failed attempts (1 for the first failure).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Failure of an outbox operation.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{op} {path} failed: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("destination {0:?} is not configured in the outbox")]
    UnknownDestination(String),
    #[error("invalid destination name {0:?}: use letters, digits, '-' and '_' only")]
    InvalidDestinationName(String),
    #[error("cannot queue {path}: {reason}")]
    InvalidFile { path: PathBuf, reason: String },
}

fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> OutboxError + 'a {
    move |source| OutboxError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Counter values for one destination, for export as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    /// Items waiting in the queue now.
    pub pending: u64,
    /// Items delivered since the outbox was opened.
    pub delivered: u64,
    /// Failed attempts that were scheduled again.
    pub retries: u64,
    /// Items moved to `dead_letter/` since the outbox was opened.
    pub dead_letters: u64,
    /// Associations that failed or were rejected.
    pub errors: u64,
}

/// Item counts of one call to [`Outbox::deliver_due`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub retried: usize,
    pub dead_lettered: usize,
}

/// Attempt history of a queued item, kept next to it as `<uid>.state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ItemState {
    attempts: u32,
    next_attempt_unix_ms: u64,
    last_error: Option<String>,
}

/// Contents of `dead_letter/<uid>/reason.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetterReason {
    pub sop_instance_uid: String,
    pub destination: String,
    pub attempts: u32,
    pub reason: String,
    /// DIMSE status of the last response, when there was one.
    pub status: Option<u16>,
    pub dead_lettered_unix_s: u64,
}

struct Queue {
    destination: Destination,
    dir: PathBuf,
    /// Serializes moves of item files between enqueue and delivery.
    files: Mutex<()>,
    /// Earliest time a queued item may be due; `None` when the queue is known to be empty.
    next_due_unix_ms: Mutex<Option<u64>>,
    pending: AtomicU64,
    delivered: AtomicU64,
    retries: AtomicU64,
    dead_letters: AtomicU64,
    errors: AtomicU64,
}

/// The persistent outbox of all destinations.
pub struct Outbox {
    policy: RetryPolicy,
    queues: BTreeMap<String, Queue>,
}

impl Outbox {
    /// Opens (creating as needed) the outbox under `root` and resumes every queued item.
    ///
    /// # Errors
    ///
    /// [`OutboxError::InvalidDestinationName`] for a name unfit as a folder name and
    /// [`OutboxError::Io`] when the folders cannot be created or listed.
    pub fn open(
        root: &Path,
        destinations: Vec<Destination>,
        policy: RetryPolicy,
    ) -> Result<Outbox, OutboxError> {
        let mut queues = BTreeMap::new();
        for destination in destinations {
            let name = destination.name.clone();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(OutboxError::InvalidDestinationName(name));
            }
            let queue = Queue::open(root.join(&name), destination)?;
            queues.insert(name, queue);
        }
        let policy = RetryPolicy {
            max_attempts: policy.max_attempts.max(1),
            batch_size: policy.batch_size.max(1),
            ..policy
        };
        Ok(Outbox { policy, queues })
    }

    /// Copies the Part 10 `file` durably into the queue of `destination`. A file whose SOP
    /// Instance UID is already queued for that destination is not queued again.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownDestination`] for a destination not given to [`Outbox::open`],
    /// [`OutboxError::InvalidFile`] for a file that is not Part 10, and [`OutboxError::Io`] when
    /// the copy fails (nothing is then queued).
    pub fn enqueue(&self, destination: &Destination, file: &Path) -> Result<(), OutboxError> {
        let queue = self.queue(&destination.name)?;
        let part10 = Part10File::read(file).map_err(|err| OutboxError::InvalidFile {
            path: file.to_path_buf(),
            reason: err.to_string(),
        })?;
        let uid = part10.sop_instance_uid.clone();
        if !uid.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(OutboxError::InvalidFile {
                path: file.to_path_buf(),
                reason: format!("sop instance uid {uid:?} is not a valid uid"),
            });
        }

        let _files = lock(&queue.files);
        let target = queue.item_path(&uid);
        if target.exists() {
            tracing::debug!(destination = %destination.name, sop_instance_uid = %uid, "Instance already queued; not queued again");
            return Ok(());
        }
        queue.write_durably(&uid, &part10.path)?;
        queue.pending.fetch_add(1, Ordering::SeqCst);
        *lock(&queue.next_due_unix_ms) = Some(0);
        tracing::debug!(destination = %destination.name, sop_instance_uid = %uid, "Instance queued for forwarding");
        Ok(())
    }

    /// Returns the counters of destination `name`, or `None` when it is not configured.
    pub fn counters(&self, name: &str) -> Option<OutboxCounters> {
        let queue = self.queues.get(name)?;
        Some(OutboxCounters {
            pending: queue.pending.load(Ordering::SeqCst),
            delivered: queue.delivered.load(Ordering::SeqCst),
            retries: queue.retries.load(Ordering::SeqCst),
            dead_letters: queue.dead_letters.load(Ordering::SeqCst),
            errors: queue.errors.load(Ordering::SeqCst),
        })
    }

    /// Returns the names of the configured destinations.
    pub fn destination_names(&self) -> impl Iterator<Item = &str> {
        self.queues.keys().map(String::as_str)
    }

    /// Sends, in one association, up to `batch_size` items of destination `name` that are due
    /// at `now`, then removes, reschedules or dead-letters each one.
    ///
    /// # Errors
    ///
    /// [`OutboxError::UnknownDestination`] and [`OutboxError::Io`] for queue files that cannot
    /// be listed, moved or written. Network failures are not errors here: they reschedule items.
    pub fn deliver_due(&self, name: &str, now: SystemTime) -> Result<DeliveryReport, OutboxError> {
        let queue = self.queue(name)?;
        let now_ms = unix_ms(now);
        let mut report = DeliveryReport::default();

        let due = queue.due_items(now_ms, self.policy.batch_size)?;
        if due.is_empty() {
            queue.refresh_next_due()?;
            return Ok(report);
        }

        let mut files = Vec::with_capacity(due.len());
        for (uid, state) in due {
            match Part10File::read(&queue.item_path(&uid)) {
                Ok(file) => files.push((file, state)),
                Err(err) => {
                    queue.dead_letter(
                        &uid,
                        &state,
                        &format!("queued file unreadable: {err}"),
                        None,
                    )?;
                    report.dead_lettered += 1;
                }
            }
        }

        let parts: Vec<Part10File> = files.iter().map(|(file, _)| file.clone()).collect();
        let outcomes = scu::store(&queue.destination.target(), &parts);
        if let Some(SendOutcome::AssociationFailed { message, .. }) = outcomes
            .iter()
            .find(|o| matches!(o, SendOutcome::AssociationFailed { .. }))
        {
            queue.errors.fetch_add(1, Ordering::SeqCst);
            tracing::error!(destination = %name, error = %message, items = files.len(), "Forwarding association failed");
        }
        for ((file, state), outcome) in files.iter().zip(outcomes) {
            self.settle(
                queue,
                &file.sop_instance_uid,
                state,
                outcome,
                now_ms,
                &mut report,
            )?;
        }

        queue.refresh_next_due()?;
        Ok(report)
    }

    fn settle(
        &self,
        queue: &Queue,
        uid: &str,
        state: &ItemState,
        outcome: SendOutcome,
        now_ms: u64,
        report: &mut DeliveryReport,
    ) -> Result<(), OutboxError> {
        match outcome {
            SendOutcome::Status { code, .. }
                if crate::ingest::scp::dimse::status::is_stored(code) =>
            {
                queue.remove(uid)?;
                report.delivered += 1;
                tracing::debug!(destination = %queue.destination.name, sop_instance_uid = %uid, status = format_args!("0x{code:04X}"), "Instance delivered");
                Ok(())
            }
            SendOutcome::Status {
                code,
                error_comment,
            } => {
                let reason = format!(
                    "destination answered status 0x{code:04X}{}",
                    error_comment.map(|c| format!(": {c}")).unwrap_or_default()
                );
                if crate::ingest::scp::dimse::status::is_transient_failure(code) {
                    self.retry_or_give_up(queue, uid, state, &reason, Some(code), now_ms, report)
                } else {
                    queue.dead_letter(uid, state, &reason, Some(code))?;
                    report.dead_lettered += 1;
                    Ok(())
                }
            }
            SendOutcome::NoPresentationContext => {
                queue.dead_letter(uid, state, "destination accepted no presentation context for this sop class and transfer syntax", None)?;
                report.dead_lettered += 1;
                Ok(())
            }
            SendOutcome::NotSent { message }
            | SendOutcome::AssociationFailed {
                message,
                permanent: false,
            } => self.retry_or_give_up(queue, uid, state, &message, None, now_ms, report),
            SendOutcome::AssociationFailed {
                message,
                permanent: true,
            } => {
                queue.dead_letter(uid, state, &message, None)?;
                report.dead_lettered += 1;
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn retry_or_give_up(
        &self,
        queue: &Queue,
        uid: &str,
        state: &ItemState,
        reason: &str,
        status: Option<u16>,
        now_ms: u64,
        report: &mut DeliveryReport,
    ) -> Result<(), OutboxError> {
        let attempts = state.attempts + 1;
        if attempts >= self.policy.max_attempts {
            let updated = ItemState {
                attempts,
                ..state.clone()
            };
            queue.dead_letter(
                uid,
                &updated,
                &format!("gave up after {attempts} attempts: {reason}"),
                status,
            )?;
            report.dead_lettered += 1;
            return Ok(());
        }

        let wait = self.policy.backoff(attempts);
        let next = ItemState {
            attempts,
            next_attempt_unix_ms: now_ms.saturating_add(wait.as_millis() as u64),
            last_error: Some(reason.to_string()),
        };
        queue.write_state(uid, &next)?;
        queue.retries.fetch_add(1, Ordering::SeqCst);
        report.retried += 1;
        tracing::warn!(destination = %queue.destination.name, sop_instance_uid = %uid, attempts, retry_in_s = wait.as_secs_f64(), reason = %reason, "Forwarding failed; will retry");
        Ok(())
    }

    /// Starts a thread that delivers due items of every destination until `shutdown` is set.
    ///
    /// # Errors
    ///
    /// Returns the error of the thread spawn.
    pub fn spawn_sender(
        self: &Arc<Self>,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        let outbox = Arc::clone(self);
        std::thread::Builder::new()
            .name("outbox-sender".to_string())
            .spawn(move || outbox.run_sender(&shutdown))
    }

    fn run_sender(&self, shutdown: &AtomicBool) {
        while !shutdown.load(Ordering::SeqCst) {
            let now = SystemTime::now();
            for (name, queue) in &self.queues {
                let due = lock(&queue.next_due_unix_ms).is_some_and(|next| next <= unix_ms(now));
                if !due {
                    continue;
                }
                if let Err(err) = self.deliver_due(name, now) {
                    tracing::error!(destination = %name, error = %err, "Outbox delivery failed");
                    // Retry the folder operation later rather than in a tight loop.
                    *lock(&queue.next_due_unix_ms) = Some(unix_ms(now) + 5_000);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn queue(&self, name: &str) -> Result<&Queue, OutboxError> {
        self.queues
            .get(name)
            .ok_or_else(|| OutboxError::UnknownDestination(name.to_string()))
    }
}

impl Queue {
    fn open(dir: PathBuf, destination: Destination) -> Result<Queue, OutboxError> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_error("creating", &tmp))?;
        let dead = dir.join("dead_letter");
        fs::create_dir_all(&dead).map_err(io_error("creating", &dead))?;

        // Copies left half-written by a crash were never queued; drop them.
        for entry in fs::read_dir(&tmp).map_err(io_error("listing", &tmp))? {
            let entry = entry.map_err(io_error("listing", &tmp))?;
            let _ = fs::remove_file(entry.path());
        }

        let queue = Queue {
            destination,
            dir,
            files: Mutex::new(()),
            next_due_unix_ms: Mutex::new(None),
            pending: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        };
        let pending = queue.list_uids()?.len() as u64;
        queue.pending.store(pending, Ordering::SeqCst);
        queue.refresh_next_due()?;
        if pending > 0 {
            tracing::info!(destination = %queue.destination.name, pending, "Outbox resumed queued items");
        }
        Ok(queue)
    }

    fn item_path(&self, uid: &str) -> PathBuf {
        self.dir.join(format!("{uid}.dcm"))
    }

    fn state_path(&self, uid: &str) -> PathBuf {
        self.dir.join(format!("{uid}.state.json"))
    }

    fn list_uids(&self) -> Result<Vec<String>, OutboxError> {
        let mut uids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("listing", &self.dir))? {
            let entry = entry.map_err(io_error("listing", &self.dir))?;
            let name = entry.file_name();
            if let Some(uid) = name.to_str().and_then(|n| n.strip_suffix(".dcm")) {
                uids.push(uid.to_string());
            }
        }
        Ok(uids)
    }

    fn read_state(&self, uid: &str) -> ItemState {
        let path = self.state_path(uid);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(path = %path.display(), error = %err, "Invalid outbox state file; counting attempts from zero");
                ItemState::default()
            }),
            Err(_) => ItemState::default(),
        }
    }

    /// Returns up to `limit` items due at `now_ms`, those with fewer attempts first.
    fn due_items(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, ItemState)>, OutboxError> {
        let mut due: Vec<(String, ItemState)> = self
            .list_uids()?
            .into_iter()
            .map(|uid| {
                let state = self.read_state(&uid);
                (uid, state)
            })
            .filter(|(_, s)| s.next_attempt_unix_ms <= now_ms)
            .collect();
        due.sort_by(|a, b| a.1.attempts.cmp(&b.1.attempts).then_with(|| a.0.cmp(&b.0)));
        due.truncate(limit);
        Ok(due)
    }

    fn refresh_next_due(&self) -> Result<(), OutboxError> {
        let next = self
            .list_uids()?
            .iter()
            .map(|uid| self.read_state(uid).next_attempt_unix_ms)
            .min();
        *lock(&self.next_due_unix_ms) = next;
        Ok(())
    }

    /// Copies `source` to `tmp/`, fsyncs it, renames it into the queue and fsyncs the folder.
    fn write_durably(&self, uid: &str, source: &Path) -> Result<(), OutboxError> {
        let partial = self.dir.join("tmp").join(format!("{uid}.partial"));
        fs::copy(source, &partial).map_err(io_error("copying into", &partial))?;
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io_error("syncing", &partial))?;
        let target = self.item_path(uid);
        fs::rename(&partial, &target).map_err(io_error("renaming into", &target))?;
        sync_dir(&self.dir)
    }

    fn write_state(&self, uid: &str, state: &ItemState) -> Result<(), OutboxError> {
        let path = self.state_path(uid);
        let partial = self.dir.join("tmp").join(format!("{uid}.state.partial"));
        let json = serde_json::to_vec_pretty(state).unwrap_or_default();
        write_synced(&partial, &json)?;
        fs::rename(&partial, &path).map_err(io_error("renaming into", &path))
    }

    fn remove(&self, uid: &str) -> Result<(), OutboxError> {
        let _files = lock(&self.files);
        let item = self.item_path(uid);
        fs::remove_file(&item).map_err(io_error("removing", &item))?;
        let _ = fs::remove_file(self.state_path(uid));
        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.delivered.fetch_add(1, Ordering::SeqCst);
        sync_dir(&self.dir)
    }

    fn dead_letter(
        &self,
        uid: &str,
        state: &ItemState,
        reason: &str,
        status: Option<u16>,
    ) -> Result<(), OutboxError> {
        let _files = lock(&self.files);
        let folder = self.dir.join("dead_letter").join(uid);
        fs::create_dir_all(&folder).map_err(io_error("creating", &folder))?;

        let record = DeadLetterReason {
            sop_instance_uid: uid.to_string(),
            destination: self.destination.name.clone(),
            attempts: state.attempts.max(1),
            reason: reason.to_string(),
            status,
            dead_lettered_unix_s: unix_ms(SystemTime::now()) / 1000,
        };
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        write_synced(&folder.join("reason.json"), &json)?;

        let item = self.item_path(uid);
        let moved = folder.join(format!("{uid}.dcm"));
        fs::rename(&item, &moved).map_err(io_error("moving to dead letters", &item))?;
        let _ = fs::remove_file(self.state_path(uid));
        sync_dir(&folder)?;
        sync_dir(&self.dir)?;

        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.dead_letters.fetch_add(1, Ordering::SeqCst);
        tracing::error!(destination = %self.destination.name, sop_instance_uid = %uid, reason = %reason, "Instance moved to dead letters");
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    let mut file = File::create(path).map_err(io_error("creating", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", path))
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing", dir))
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Locks a mutex, recovering the data if another thread panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(10),
            batch_size: 8,
        };
        assert_eq!(policy.backoff(1), Duration::from_secs(2));
        assert_eq!(policy.backoff(2), Duration::from_secs(4));
        assert_eq!(policy.backoff(3), Duration::from_secs(8));
        assert_eq!(policy.backoff(4), Duration::from_secs(10));
        assert_eq!(policy.backoff(40), Duration::from_secs(10));
    }
}
