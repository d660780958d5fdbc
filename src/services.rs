//! The daemon's long-running services besides the pipeline: C-STORE receiver, outbox sender,
//! QA server, metrics and health server, and the gauges they report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::config::Settings;
use crate::ingest::scp::{spawn_scp, ScpConfig, ScpHandle};
use crate::ingest::scp_sink::SpoolSink;
use crate::ingest::spool::Spool;
use crate::outbox::{Destination, Outbox, RetryPolicy};
use crate::pipeline::review::ReexportHook;
use crate::qa::http::QaState;
use crate::qa::store::{CaseState, QaStore, SqliteQaStore};
use crate::qa::QaConfig;
use crate::telemetry::health::{Check, Readiness};
use crate::telemetry::metrics::metrics;

/// How often the gauges (spool size, free disk, outbox and QA queues) are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Maps `export.destinations` onto outbox destinations, named by their AE title.
pub fn destinations(settings: &Settings) -> Vec<Destination> {
    settings
        .export
        .destinations
        .iter()
        .map(|d| Destination {
            name: d.ae_title.clone(),
            address: format!("{}:{}", d.host, d.port),
            called_ae_title: d.ae_title.clone(),
            calling_ae_title: settings.ingest.scp.ae_title.clone(),
            max_pdu_length: settings.ingest.scp.max_pdu_length,
            timeout: Duration::from_secs(30),
        })
        .collect()
}

/// Opens the outbox under `<data_dir>/outbox` with the configured retry policy.
pub fn open_outbox(settings: &Settings) -> Result<Arc<Outbox>, String> {
    let policy = RetryPolicy {
        max_attempts: settings.export.outbox.max_attempts,
        initial_backoff: settings.export.outbox.initial_backoff,
        max_backoff: settings.export.outbox.max_backoff,
        ..RetryPolicy::default()
    };
    let root = settings.data_dir.join("outbox");
    Outbox::open(&root, destinations(settings), policy)
        .map(Arc::new)
        .map_err(|e| format!("cannot open the outbox in {}: {e}", root.display()))
}

/// Starts the C-STORE receiver on `ingest.scp`, storing into `spool`.
pub fn start_scp(settings: &Settings, spool: &Arc<Spool>, stop: Arc<AtomicBool>) -> Result<ScpHandle, String> {
    let scp = &settings.ingest.scp;
    let config = ScpConfig {
        ae_title: scp.ae_title.clone(),
        listen: scp.listen,
        allowed_calling_ae: scp.allowed_calling_ae.clone(),
        max_associations: scp.max_associations,
        max_pdu_length: scp.max_pdu_length,
        artim_timeout: scp.artim_timeout,
        idle_timeout: scp.idle_timeout,
        min_free_disk_bytes: scp.min_free_disk_bytes,
    };
    let sink = Arc::new(SpoolSink::new(Arc::clone(spool)));
    spawn_scp(config, sink, stop).map_err(|e| format!("cannot start the C-STORE receiver on {}: {e}", scp.listen))
}

/// Returns the QA token, creating `<data_dir>/qa.token` with a random token when no
/// `qa.token_file` is configured and none exists yet.
pub fn qa_token_file(settings: &Settings) -> Result<PathBuf, String> {
    if let Some(path) = &settings.qa.token_file {
        return Ok(path.clone());
    }
    let path = settings.data_dir.join("qa.token");
    if !path.exists() {
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        write_private(&path, token.as_bytes())
            .map_err(|e| format!("cannot create the QA token file {}: {e}", path.display()))?;
        info!(path = %path.display(), "Created a QA access token; give it to the reviewing radiologists");
    }
    Ok(path)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Opens the QA store.
pub fn open_qa_store(settings: &Settings) -> Result<Arc<dyn QaStore>, String> {
    let store = SqliteQaStore::open(&settings.data_dir).map_err(|e| format!("cannot open the QA store: {e}"))?;
    Ok(Arc::new(store))
}

/// Builds the QA server's state; each decision re-exports the study through `outbox`.
pub fn qa_state(settings: &Settings, store: &Arc<dyn QaStore>, outbox: &Arc<Outbox>) -> Result<QaState, String> {
    let config = QaConfig {
        listen: settings.qa.listen,
        token_file: qa_token_file(settings)?,
        languages: settings.qa.languages.clone(),
        review_below: settings.confidence.review_below,
        hold_until_reviewed: settings.confidence.hold_until_reviewed,
    };
    let hook = ReexportHook {
        exports_dir: settings.data_dir.join("exports"),
        store: Arc::clone(store),
        outbox: Some(Arc::clone(outbox)),
        destinations: destinations(settings),
        formats: settings.export.formats.clone(),
    };
    let state = QaState::from_config(&config, Arc::clone(store)).map_err(|e| format!("cannot start QA: {e}"))?;
    Ok(state.with_decision_hook(Arc::new(hook)))
}

/// The HTTP servers (metrics and health, QA) on their own small tokio runtime.
pub struct HttpServers {
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HttpServers {
    /// Binds `metrics.listen` and `qa.listen` and serves until [`HttpServers::stop`].
    pub fn start(settings: &Settings, readiness: Arc<Readiness>, qa: QaState) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("penumbra-http")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let shutdown = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|&stop| stop).await;
        };

        let metrics_listen = settings.metrics.listen;
        let qa_listen = settings.qa.listen;
        let (metrics_listener, qa_listener) = runtime.block_on(async {
            let metrics = tokio::net::TcpListener::bind(metrics_listen).await;
            let qa = tokio::net::TcpListener::bind(qa_listen).await;
            (metrics, qa)
        });
        let metrics_listener =
            metrics_listener.map_err(|e| format!("cannot listen on metrics.listen {metrics_listen}: {e}"))?;
        let qa_listener = qa_listener.map_err(|e| format!("cannot listen on qa.listen {qa_listen}: {e}"))?;
        info!(metrics = %metrics_listen, qa = %qa_listen, "HTTP servers listening");

        let health = crate::telemetry::health::router(readiness);
        let metrics_task = runtime.spawn({
            let done = shutdown(stopped.clone());
            async move {
                if let Err(error) = axum::serve(metrics_listener, health).with_graceful_shutdown(done).await {
                    warn!(%error, "Metrics server stopped on an error");
                }
            }
        });
        let qa_task = runtime.spawn({
            let done = shutdown(stopped);
            async move {
                if let Err(error) = crate::qa::http::serve(qa_listener, qa, done).await {
                    warn!(%error, "QA server stopped on an error");
                }
            }
        });
        Ok(Self { runtime, stop, tasks: vec![metrics_task, qa_task] })
    }

    /// Stops both servers, waiting up to two seconds for open requests.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let tasks = self.tasks;
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), async {
                for task in tasks {
                    let _ = task.await;
                }
            })
            .await
        });
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Refreshes the gauges every few seconds until `stop` is set: spool bytes, free disk, outbox
/// queues, QA cases by state and the age of the oldest pending case. Also re-checks that the
/// spool is writable for `/readyz`.
pub fn spawn_gauges(
    spool: Arc<Spool>,
    outbox: Arc<Outbox>,
    qa: Arc<dyn QaStore>,
    readiness: Arc<Readiness>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("gauges".into()).spawn(move || {
        let mut last_retries = std::collections::BTreeMap::new();
        let mut last_dead = std::collections::BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            update_spool(&spool, &readiness);
            update_outbox(&outbox, &mut last_retries, &mut last_dead);
            update_qa(qa.as_ref());
            pause_unless_stopped(GAUGE_INTERVAL, &stop);
        }
    })
}

/// Sleeps for `interval`, or less once `stop` is set, so that a shutdown does not wait for
/// the rest of the interval.
fn pause_unless_stopped(interval: Duration, stop: &AtomicBool) {
    const STEP: Duration = Duration::from_millis(100);

    let mut slept = Duration::ZERO;
    while slept < interval && !stop.load(Ordering::Relaxed) {
        let step = STEP.min(interval - slept);
        std::thread::sleep(step);
        slept += step;
    }
}

fn update_spool(spool: &Spool, readiness: &Readiness) {
    let m = metrics();
    m.spool_bytes.set(folder_bytes(spool.root()) as i64);
    match spool.free_disk_bytes() {
        Ok(free) => {
            m.disk_free_bytes.set(free as i64);
            readiness.pass(Check::Spool);
        }
        Err(error) => readiness.fail(Check::Spool, format!("cannot read free space of the spool: {error}")),
    }
}

fn update_outbox(
    outbox: &Outbox,
    last_retries: &mut std::collections::BTreeMap<String, u64>,
    last_dead: &mut std::collections::BTreeMap<String, u64>,
) {
    let m = metrics();
    let names: Vec<String> = outbox.destination_names().map(str::to_string).collect();
    for name in names {
        let Some(counters) = outbox.counters(&name) else { continue };
        m.outbox_pending.with_label_values(&[name.as_str()]).set(counters.pending as i64);
        let retries = last_retries.entry(name.clone()).or_insert(0);
        m.outbox_retries.with_label_values(&[name.as_str()]).inc_by(counters.retries.saturating_sub(*retries));
        *retries = counters.retries;
        let dead = last_dead.entry(name.clone()).or_insert(0);
        m.outbox_dead_letters.with_label_values(&[name.as_str()]).inc_by(counters.dead_letters.saturating_sub(*dead));
        *dead = counters.dead_letters;
    }
}

fn update_qa(store: &dyn QaStore) {
    let Ok(cases) = store.list(&[]) else { return };
    let m = metrics();
    for state in CaseState::ALL {
        let count = cases.iter().filter(|c| c.state == state).count();
        m.qa_cases.with_label_values(&[state.as_str()]).set(count as i64);
    }
    let now = SystemTime::now();
    let oldest = cases
        .iter()
        .filter(|c| c.state == CaseState::Pending)
        .filter_map(|c| time::OffsetDateTime::parse(&c.arrival, &time::format_description::well_known::Rfc3339).ok())
        .map(|arrival| {
            let arrived = SystemTime::UNIX_EPOCH + Duration::from_secs(arrival.unix_timestamp().max(0) as u64);
            now.duration_since(arrived).unwrap_or_default().as_secs()
        })
        .max()
        .unwrap_or(0);
    m.qa_oldest_pending_age.set(oldest as i64);
}

/// Returns the bytes of the regular files under `root`, following no links.
fn folder_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_ends_soon_after_stop() {
        let stop = Arc::new(AtomicBool::new(false));
        let setter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                stop.store(true, Ordering::Relaxed);
            })
        };

        let started = std::time::Instant::now();
        pause_unless_stopped(Duration::from_secs(30), &stop);
        setter.join().unwrap();

        assert!(started.elapsed() < Duration::from_secs(10), "paused {:?} after the stop", started.elapsed());
    }

    #[test]
    fn pause_lasts_its_interval() {
        let stop = AtomicBool::new(false);

        let started = std::time::Instant::now();
        pause_unless_stopped(Duration::from_millis(250), &stop);

        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}
