//! The staged runner: each stage is a pool of worker threads reading a bounded channel.
//!
//! The runner owns the channels, the study spans, panic handling and error routing, so stages
//! only process. A full queue blocks [`Runner::submit`], which blocks the assembler and then the
//! spool's listener channel, so a slow pipeline slows ingest down instead of growing memory.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, SendTimeoutError, Sender};
use thiserror::Error;

use super::job::{Job, StageTiming};
use super::stage::{Stage, StageError, StageName};
use super::state::{StateStore, StudyState};
use crate::config::{PipelineSettings, StageSettings};
use crate::ingest::quarantine::{Quarantine, Reason};
use crate::telemetry::metrics::metrics;

/// How often a blocked [`Runner::submit_unless`] checks its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Outcome of one submitted study version.
#[derive(Debug)]
pub enum JobOutcome {
    /// Every stage finished.
    Done(Job),
    /// The study stopped before `stage`, which has no implementation registered.
    Waiting { job: Job, stage: StageName },
    /// `stage` failed; the study was quarantined.
    Failed { study_instance_uid: String, version: u32, stage: StageName, error: String },
}

#[derive(Debug, Error)]
pub enum RunnerError {
    #[error("the pipeline is shutting down and accepts no new studies")]
    ShuttingDown,
}

/// Studies still in flight when [`Runner::shutdown`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// (Study Instance UID, version) of studies that had not left the pipeline.
    pub unfinished: Vec<(String, u32)>,
}

/// Shared by all workers.
struct Context {
    state: Arc<StateStore>,
    quarantine: Quarantine,
    /// First stage of the pipeline order with no implementation, where studies stop.
    stop_before: Option<StageName>,
    in_flight: Mutex<BTreeSet<(String, u32)>>,
    outcomes: Sender<JobOutcome>,
}

/// The running pipeline.
pub struct Runner {
    input: Mutex<Option<Sender<Job>>>,
    context: Arc<Context>,
    workers: Vec<JoinHandle<()>>,
    outcomes: Receiver<JobOutcome>,
}

impl Runner {
    /// Starts worker pools for the registered stages, which run in [`StageName::ALL`] order. The
    /// chain ends at the first stage with no implementation, and studies that reach it are
    /// recorded as waiting for it. Registered stages after that gap are not run.
    pub fn start(
        stages: Vec<Arc<dyn Stage>>,
        settings: &PipelineSettings,
        state: Arc<StateStore>,
        quarantine: Quarantine,
    ) -> Self {
        let chain: Vec<Arc<dyn Stage>> = StageName::ALL
            .iter()
            .map_while(|name| stages.iter().find(|s| s.name() == *name).cloned())
            .collect();
        let stop_before = StageName::ALL.get(chain.len()).copied();
        if chain.len() < stages.len() {
            tracing::warn!(stop_before = ?stop_before, "Registered stages after a missing stage will not run");
        }

        let (outcome_sender, outcomes) = unbounded();
        let context = Arc::new(Context {
            state,
            quarantine,
            stop_before,
            in_flight: Mutex::new(BTreeSet::new()),
            outcomes: outcome_sender,
        });

        let (input, workers) = spawn_chain(&chain, settings, &context);
        tracing::info!(stages = chain.len(), waiting_before = ?stop_before, "Pipeline started");
        Self { input: Mutex::new(Some(input)), context, workers, outcomes }
    }

    /// Queues a study version for the first stage, waiting while that stage's queue is full.
    pub fn submit(&self, job: Job) -> Result<(), RunnerError> {
        self.submit_unless(job, &AtomicBool::new(false))
    }

    /// Like [`Runner::submit`], but gives up when `stop` is set while the queue is full. The
    /// study then stays in the spool, recorded as queued, and is re-queued at the next start.
    pub fn submit_unless(&self, job: Job, stop: &AtomicBool) -> Result<(), RunnerError> {
        let sender = self.input.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(sender) = sender else {
            return Err(RunnerError::ShuttingDown);
        };

        let key = (job.study_instance_uid.clone(), job.version);
        self.context.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone());
        record_state(&self.context, &job, |r| {
            r.state = StudyState::Queued;
            r.version = r.version.max(job.version);
            r.instance_count = job.instances.len();
            r.error = None;
        });

        let mut job = job;
        loop {
            match sender.send_timeout(job, STOP_POLL) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(unsent)) if !stop.load(Ordering::SeqCst) => job = unsent,
                Err(_) => {
                    self.context.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                    return Err(RunnerError::ShuttingDown);
                }
            }
        }
    }

    /// Outcomes of submitted studies, in completion order.
    pub fn outcomes(&self) -> Receiver<JobOutcome> {
        self.outcomes.clone()
    }

    /// Returns the stage that studies stop before, `None` when every stage is registered.
    pub fn stops_before(&self) -> Option<StageName> {
        self.context.stop_before
    }

    /// Stops accepting studies, lets queued and running ones finish until `deadline`, and
    /// returns what was left unfinished (it stays in the spool for the next start).
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        drop(self.input.lock().unwrap_or_else(|p| p.into_inner()).take());

        let until = Instant::now() + deadline;
        while Instant::now() < until && !self.workers.iter().all(JoinHandle::is_finished) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for handle in std::mem::take(&mut self.workers) {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }

        let unfinished: Vec<(String, u32)> =
            self.context.in_flight.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        for (study_uid, version) in &unfinished {
            tracing::warn!(study_uid, version, "Study unfinished at shutdown; it stays in the spool and is resumed at the next start");
        }
        ShutdownReport { unfinished }
    }
}

/// Creates one bounded channel and worker pool per stage, wired in order, and returns the
/// sender of the first queue. With no stage at all, a single forwarding thread records studies
/// as waiting.
fn spawn_chain(chain: &[Arc<dyn Stage>], settings: &PipelineSettings, context: &Arc<Context>) -> (Sender<Job>, Vec<JoinHandle<()>>) {
    let mut workers = Vec::new();
    let mut next: Option<Sender<Job>> = None;

    for stage in chain.iter().rev() {
        let pool = stage_settings(settings, stage.name());
        let (sender, receiver) = bounded::<Job>(pool.queue);
        for index in 0..pool.workers {
            let worker = Worker { stage: Arc::clone(stage), input: receiver.clone(), next: next.clone(), context: Arc::clone(context) };
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{index}", stage.name()))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(err) => tracing::error!(stage = %stage.name(), error = %err, "Could not start a worker thread"),
            }
        }
        next = Some(sender);
    }

    match next {
        Some(first) => (first, workers),
        None => {
            let (sender, receiver) = bounded::<Job>(settings.decode.queue);
            let context = Arc::clone(context);
            let handle = std::thread::Builder::new()
                .name("pipeline-end".to_string())
                .spawn(move || {
                    for job in receiver {
                        finish(&context, job);
                    }
                })
                .expect("spawning the pipeline's end thread at start-up");
            workers.push(handle);
            (sender, workers)
        }
    }
}

fn stage_settings(settings: &PipelineSettings, name: StageName) -> StageSettings {
    match name {
        StageName::Decode => settings.decode,
        StageName::Perfusion => settings.perfusion,
        StageName::Resample => settings.resample,
        StageName::Infer => settings.infer,
        StageName::Confidence => settings.confidence,
        StageName::Export => settings.export,
    }
}

struct Worker {
    stage: Arc<dyn Stage>,
    input: Receiver<Job>,
    next: Option<Sender<Job>>,
    context: Arc<Context>,
}

impl Worker {
    fn run(self) {
        let depth = metrics().queue_depth.with_label_values(&[self.stage.name().as_str()]);
        for job in self.input.iter() {
            depth.set(self.input.len() as i64);
            let span = tracing::info_span!("study", study_uid = %job.study_instance_uid, version = job.version);
            let _entered = span.enter();
            self.handle(job);
        }
    }

    fn handle(&self, job: Job) {
        let name = self.stage.name();
        let study_uid = job.study_instance_uid.clone();
        let version = job.version;
        record_state(&self.context, &job, |r| {
            r.state = StudyState::Processing;
            r.stage_reached = Some(name);
            r.waiting_for = None;
        });

        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| self.stage.process(job)))
            .unwrap_or_else(|payload| Err(StageError::Panicked(panic_message(payload.as_ref()))));
        let elapsed = started.elapsed();
        metrics().stage_duration.with_label_values(&[name.as_str()]).observe(elapsed.as_secs_f64());

        match result {
            Ok(mut job) => {
                tracing::info!(stage = %name, elapsed_ms = elapsed.as_millis() as u64, "Stage finished");
                job.timings.push(StageTiming { stage: name, elapsed });
                match &self.next {
                    Some(next) => {
                        if let Err(unsent) = next.send(job) {
                            tracing::error!(stage = %name, "Next stage stopped; study left in the spool");
                            forget(&self.context, &unsent.0.study_instance_uid, unsent.0.version);
                        }
                    }
                    None => finish(&self.context, job),
                }
            }
            Err(err) => fail(&self.context, &study_uid, version, name, &err),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Records a study that left the last registered stage: done, or waiting for a missing stage.
fn finish(context: &Context, job: Job) {
    forget(context, &job.study_instance_uid, job.version);
    match context.stop_before {
        Some(stage) => {
            record_state(context, &job, |r| {
                r.state = StudyState::Waiting;
                r.waiting_for = Some(stage);
            });
            tracing::info!(study_uid = %job.study_instance_uid, version = job.version, waiting_for = %stage,
                "Study waits for a stage that is not available");
            let _ = context.outcomes.send(JobOutcome::Waiting { job, stage });
        }
        None => {
            record_state(context, &job, |r| {
                r.state = StudyState::Done;
                r.waiting_for = None;
            });
            tracing::info!(study_uid = %job.study_instance_uid, version = job.version, "Study finished");
            record_finished(&job);
            let _ = context.outcomes.send(JobOutcome::Done(job));
        }
    }
}

/// Quarantines a study after a stage error and records it as failed; the daemon carries on.
fn fail(context: &Context, study_uid: &str, version: u32, stage: StageName, err: &StageError) {
    forget(context, study_uid, version);
    tracing::error!(study_uid, version, stage = %stage, error = %err, "Stage failed; study quarantined");
    metrics().stage_errors.with_label_values(&[stage.as_str(), err.kind()]).inc();
    metrics().studies.with_label_values(&["failed"]).inc();

    let mut reason = Reason::new(err.kind(), format!("{stage} failed: {err}"), stage.as_str());
    reason.study_instance_uid = Some(study_uid.to_string());
    if let Err(quarantine_err) = context.quarantine.record_study(study_uid, &reason) {
        tracing::error!(study_uid, error = %quarantine_err, "Could not write the quarantine record");
    }

    let update = context.state.update(study_uid, |r| {
        r.state = StudyState::Failed;
        r.stage_reached = Some(stage);
        r.error = Some(format!("{stage} failed: {err}"));
    });
    if let Err(state_err) = update {
        tracing::error!(study_uid, error = %state_err, "Could not write the study state record");
    }

    let _ = context.outcomes.send(JobOutcome::Failed {
        study_instance_uid: study_uid.to_string(),
        version,
        stage,
        error: err.to_string(),
    });
}

/// Counts a study that went through every stage, and the time from its last spooled instance
/// (the newest spool file's modification time) to now.
fn record_finished(job: &Job) {
    let assessable = job.artifacts.report.as_ref().and_then(|r| r.get("assessable")).and_then(|v| v.as_bool());
    let outcome = if assessable == Some(false) { "not_assessable" } else { "exported" };
    metrics().studies.with_label_values(&[outcome]).inc();

    let newest = job.instances.iter().filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).max();
    if let Some(latency) = newest.and_then(|t| std::time::SystemTime::now().duration_since(t).ok()) {
        metrics().end_to_end_latency.with_label_values::<&str>(&[]).observe(latency.as_secs_f64());
    }
}

fn forget(context: &Context, study_uid: &str, version: u32) {
    context.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&(study_uid.to_string(), version));
}

/// Updates a study's state record unless a newer version has been opened since this job.
fn record_state(context: &Context, job: &Job, change: impl FnOnce(&mut super::state::StudyRecord)) {
    let result = context.state.update(&job.study_instance_uid, |record| {
        if record.version <= job.version {
            change(record);
        }
    });
    if let Err(err) = result {
        tracing::error!(study_uid = %job.study_instance_uid, error = %err, "Could not write the study state record");
    }
}
