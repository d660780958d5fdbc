//! `penumbra serve`: the daemon. Starts the spool, assembler, runner and watched folders, then
//! runs until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Settings;
use crate::ingest::assembler::{self, AssemblerThread};
use crate::ingest::quarantine::Quarantine;
use crate::ingest::spool::Spool;
use crate::ingest::watch::FolderWatcher;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::pipeline::{load_segmenter, registered_stages, JobOutcome, Runner, StageResources, StateStore, StageName};
use crate::services::{self, HttpServers};
use crate::telemetry::health::{Check, Readiness};
use crate::telemetry::metrics::metrics;
use crate::telemetry::{init_logging, LogFormat};

/// Capacity of the spool-to-assembler channel, in instances. When it is full, `Spool::store`
/// waits, which slows the watchers and the C-STORE receiver down.
const ASSEMBLER_QUEUE: usize = 1024;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file.
    #[arg(long, default_value = "pipeline.yaml")]
    pub config: PathBuf,
    /// Write log lines as JSON objects.
    #[arg(long)]
    pub json_logs: bool,
    /// Seconds in-flight studies get on SIGINT/SIGTERM; overrides shutdown.drain_deadline_s.
    #[arg(long)]
    pub drain_deadline_s: Option<u64>,
}

pub fn run(args: Args) -> ExitCode {
    let settings = match super::check_config::load_or_report(&args.config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    init_logging(if args.json_logs { LogFormat::Json } else { LogFormat::Text });

    let deadline = args.drain_deadline_s.map(Duration::from_secs).unwrap_or(settings.shutdown.drain_deadline);
    match serve(&settings, deadline) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!(error = %message, "Daemon stopped on an error");
            eprintln!("penumbra serve: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: &Settings, deadline: Duration) -> Result<(), String> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|err| format!("could not install signal handlers: {err}"))?;

    let data_dir = &settings.data_dir;
    std::fs::create_dir_all(data_dir)
        .map_err(|err| format!("could not create data_dir {}: {err}; check data_dir in the config", data_dir.display()))?;
    let spool = Arc::new(Spool::open_with_journal(data_dir, settings.ingest.scp.durability, settings.ingest.scp.journal).map_err(|e| e.to_string())?);
    let state = Arc::new(StateStore::open(data_dir).map_err(|e| e.to_string())?);
    let quarantine = Quarantine::new(data_dir);
    let readiness = Arc::new(Readiness::new(&[Check::Config, Check::Model, Check::Spool, Check::Scp]));
    readiness.pass(Check::Config);
    let stop = Arc::new(AtomicBool::new(false));

    let segmenter = match load_segmenter(settings) {
        Ok(segmenter) => {
            readiness.pass(Check::Model);
            Some(Arc::new(segmenter))
        }
        Err(message) => {
            tracing::error!(error = %message, "Model not loaded: studies wait before the resample stage");
            readiness.fail(Check::Model, message);
            None
        }
    };
    let model_version = segmenter.as_ref().map(|s| s.card().created_utc.clone()).unwrap_or_else(|| "none".into());
    let destinations = services::destinations(settings);
    let names: Vec<String> = destinations.iter().map(|d| d.name.clone()).collect();
    let stage_names: Vec<&str> = StageName::ALL.iter().map(|s| s.as_str()).collect();
    metrics().initialize_labels(&stage_names, &names);
    metrics().build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), model_version.as_str()]).set(1.0);

    let outbox = services::open_outbox(settings)?;
    let sender = outbox.spawn_sender(Arc::clone(&stop)).map_err(|e| format!("cannot start the outbox sender: {e}"))?;
    let qa_store = services::open_qa_store(settings)?;
    let qa_state = services::qa_state(settings, &qa_store, &outbox)?;
    let http = HttpServers::start(settings, Arc::clone(&readiness), qa_state)?;
    let gauges = services::spawn_gauges(
        Arc::clone(&spool),
        Arc::clone(&outbox),
        Arc::clone(&qa_store),
        Arc::clone(&readiness),
        Arc::clone(&stop),
    )
    .map_err(|e| format!("cannot start the gauge thread: {e}"))?;
    let resources = StageResources { segmenter, outbox: Some(outbox), destinations, qa: Some(qa_store) };

    let runner = Arc::new(Runner::start(
        registered_stages(settings, &resources),
        &settings.pipeline,
        Arc::clone(&state),
        quarantine.clone(),
    ));
    let outcome_logger = spawn_outcome_logger(&runner);

    let (events, assembler_events) = crossbeam_channel::bounded(ASSEMBLER_QUEUE);
    spool.set_listener(events.clone());
    let assembler = AssemblerThread::spawn(
        assembler_events,
        settings.ingest.study_quiet,
        Arc::clone(&spool),
        Arc::clone(&state),
        Arc::clone(&runner),
    )
    .map_err(|err| format!("could not start the assembler thread: {err}"))?;

    let (requeued, replayed) = assembler::recover(&spool, &state, &runner, &events);
    drop(events);
    tracing::info!(requeued, replayed, "Recovered studies from the spool");

    let watcher = FolderWatcher::spawn(&settings.ingest.watch, Arc::clone(&spool), quarantine.clone())
        .map_err(|err| err.to_string())?;

    let scp = match services::start_scp(settings, &spool, Arc::clone(&stop)) {
        Ok(scp) => {
            readiness.pass(Check::Scp);
            tracing::info!(address = %scp.local_addr(), ae_title = %settings.ingest.scp.ae_title, "C-STORE receiver listening");
            scp
        }
        Err(message) => {
            readiness.fail(Check::Scp, message.clone());
            return Err(message);
        }
    };

    tracing::info!(data_dir = %data_dir.display(), "Daemon ready");
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "Shutting down: intake stopped, draining in-flight studies");
    }

    // Intake stops first: the C-STORE receiver finishes the transfers in progress, and the
    // outbox sender and gauges stop at their next check.
    stop.store(true, Ordering::Relaxed);
    let open = scp.shutdown(Duration::from_secs(5));
    if open > 0 {
        tracing::warn!(associations = open, "Associations still open at shutdown were cut");
    }

    // The assembler stops next: a watcher blocked on the assembler's full channel then fails
    // its send at once, and the instance it just spooled is replayed at the next start.
    assembler.stop();
    let counts = watcher.stop();
    tracing::info!(spooled = counts.spooled, duplicates = counts.duplicates, conflicts = counts.conflicts,
        quarantined = counts.quarantined, "Watched folders stopped");

    // Nothing is stored any more, so the spool can be made durable and the journal voided.
    if let Err(err) = spool.checkpoint() {
        tracing::error!(error = %err, "Journal checkpoint at shutdown failed; the next start replays the journal");
    }

    let runner = Arc::try_unwrap(runner).map_err(|_| "pipeline still in use at shutdown".to_string())?;
    let report = runner.shutdown(deadline);
    if report.unfinished.is_empty() {
        tracing::info!("All in-flight studies finished");
    } else {
        tracing::warn!(unfinished = report.unfinished.len(), "Shutdown deadline passed; unfinished studies resume at the next start");
    }
    // The logger thread ends when the last worker drops the outcome channel. A worker still
    // running past the deadline would keep it open, so the thread is not joined.
    drop(outcome_logger);
    http.stop();
    let _ = sender.join();
    let _ = gauges.join();
    tracing::info!("Daemon stopped");
    Ok(())
}

/// Drains the runner's outcomes; the runner has already logged and recorded each one.
fn spawn_outcome_logger(runner: &Runner) -> std::thread::JoinHandle<()> {
    let outcomes = runner.outcomes();
    std::thread::spawn(move || {
        for outcome in outcomes {
            if let JobOutcome::Done(job) = outcome {
                tracing::debug!(study_uid = %job.study_instance_uid, version = job.version, "Outcome collected");
            }
        }
    })
}
