//! Tests of the staged runner with small test stages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::*;
use crate::config::{PipelineSettings, StageSettings};
use crate::ingest::quarantine::Quarantine;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A stage that counts its calls and fails, panics or blocks for chosen study UIDs.
struct TestStage {
    name: StageName,
    calls: AtomicUsize,
    behaviour: Behaviour,
}

enum Behaviour {
    Pass,
    RejectStudy(&'static str),
    PanicOnStudy(&'static str),
    Block(Receiver<()>),
    WriteReport,
}

impl TestStage {
    fn new(name: StageName, behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self { name, calls: AtomicUsize::new(0), behaviour })
    }
}

impl Stage for TestStage {
    fn name(&self) -> StageName {
        self.name
    }

    fn process(&self, mut job: Job) -> Result<Job, StageError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.behaviour {
            Behaviour::Pass => {}
            Behaviour::RejectStudy(uid) if job.study_instance_uid == *uid => {
                return Err(StageError::Rejected("no dynamic series in study".to_string()));
            }
            Behaviour::PanicOnStudy(uid) if job.study_instance_uid == *uid => panic!("index out of bounds"),
            Behaviour::Block(release) => {
                let _ = release.recv();
            }
            Behaviour::WriteReport => {
                job.artifacts.report = Some(serde_json::json!({ "study": job.study_instance_uid, "stages": job.timings.len() }));
            }
            _ => {}
        }
        Ok(job)
    }
}

fn pools(workers: usize, queue: usize) -> PipelineSettings {
    let pool = StageSettings { workers, queue };
    PipelineSettings { decode: pool, perfusion: pool, resample: pool, infer: pool, confidence: pool, export: pool }
}

struct Fixture {
    dir: tempfile::TempDir,
    state: Arc<StateStore>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(StateStore::open(dir.path()).unwrap());
        Self { dir, state }
    }

    fn start(&self, stages: Vec<Arc<dyn Stage>>, settings: &PipelineSettings) -> Runner {
        Runner::start(stages, settings, Arc::clone(&self.state), Quarantine::new(self.dir.path()))
    }
}

#[test]
fn no_stages_records_waiting_for_decode() {
    let fixture = Fixture::new();
    let runner = fixture.start(Vec::new(), &pools(1, 2));

    runner.submit(Job::new("1.2.3", 1, vec!["a.dcm".into()])).unwrap();

    match runner.outcomes().recv_timeout(TIMEOUT).unwrap() {
        JobOutcome::Waiting { stage, job } => {
            assert_eq!(stage, StageName::Decode);
            assert_eq!(job.study_instance_uid, "1.2.3");
        }
        other => panic!("expected waiting, got {other:?}"),
    }
    let record = fixture.state.get("1.2.3").unwrap().unwrap();
    assert_eq!(record.state, StudyState::Waiting);
    assert_eq!(record.waiting_for, Some(StageName::Decode));
    assert_eq!(record.instance_count, 1);
}

#[test]
fn gap_stops_before_missing_stage() {
    let fixture = Fixture::new();
    let decode = TestStage::new(StageName::Decode, Behaviour::Pass);
    let perfusion = TestStage::new(StageName::Perfusion, Behaviour::Pass);
    let infer = TestStage::new(StageName::Infer, Behaviour::Pass);
    let stages: Vec<Arc<dyn Stage>> = vec![infer.clone(), perfusion.clone(), decode.clone()];
    let runner = fixture.start(stages, &pools(1, 2));
    assert_eq!(runner.stops_before(), Some(StageName::Resample));

    runner.submit(Job::new("1.2.3", 1, Vec::new())).unwrap();

    let JobOutcome::Waiting { job, stage } = runner.outcomes().recv_timeout(TIMEOUT).unwrap() else {
        panic!("expected waiting");
    };
    assert_eq!(stage, StageName::Resample);
    let stages_run: Vec<StageName> = job.timings.iter().map(|t| t.stage).collect();
    assert_eq!(stages_run, vec![StageName::Decode, StageName::Perfusion]);
    assert_eq!(infer.calls.load(Ordering::SeqCst), 0);
    let record = fixture.state.get("1.2.3").unwrap().unwrap();
    assert_eq!(record.stage_reached, Some(StageName::Perfusion));
    assert_eq!(record.waiting_for, Some(StageName::Resample));
}

#[test]
fn all_stages_finish_with_report() {
    let fixture = Fixture::new();
    let mut stages: Vec<Arc<dyn Stage>> = StageName::ALL[..5]
        .iter()
        .map(|name| TestStage::new(*name, Behaviour::Pass) as Arc<dyn Stage>)
        .collect();
    stages.push(TestStage::new(StageName::Export, Behaviour::WriteReport));
    let runner = fixture.start(stages, &pools(2, 2));

    runner.submit(Job::new("1.2.3", 1, Vec::new())).unwrap();

    let JobOutcome::Done(job) = runner.outcomes().recv_timeout(TIMEOUT).unwrap() else {
        panic!("expected done");
    };
    assert_eq!(job.artifacts.report, Some(serde_json::json!({ "study": "1.2.3", "stages": 5 })));
    assert_eq!(job.timings.len(), 6);
    assert_eq!(fixture.state.get("1.2.3").unwrap().unwrap().state, StudyState::Done);
}

#[test]
fn stage_error_quarantines_and_continues() {
    let fixture = Fixture::new();
    let decode = TestStage::new(StageName::Decode, Behaviour::RejectStudy("1.1"));
    let runner = fixture.start(vec![decode], &pools(1, 2));

    runner.submit(Job::new("1.1", 1, Vec::new())).unwrap();
    runner.submit(Job::new("2.2", 1, Vec::new())).unwrap();

    let mut failed = 0;
    let mut waiting = 0;
    for _ in 0..2 {
        match runner.outcomes().recv_timeout(TIMEOUT).unwrap() {
            JobOutcome::Failed { study_instance_uid, stage, .. } => {
                assert_eq!(study_instance_uid, "1.1");
                assert_eq!(stage, StageName::Decode);
                failed += 1;
            }
            JobOutcome::Waiting { job, stage } => {
                assert_eq!(job.study_instance_uid, "2.2");
                assert_eq!(stage, StageName::Perfusion);
                waiting += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((failed, waiting), (1, 1));

    let reason: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.dir.path().join("quarantine/1.1/reason.json")).unwrap()).unwrap();
    assert_eq!(reason["kind"], "stage_rejected");
    assert_eq!(reason["reason"], "decode failed: no dynamic series in study");
    let record = fixture.state.get("1.1").unwrap().unwrap();
    assert_eq!(record.state, StudyState::Failed);
    assert!(record.is_finished());
}

#[test]
fn stage_panic_becomes_study_error() {
    let fixture = Fixture::new();
    let decode = TestStage::new(StageName::Decode, Behaviour::PanicOnStudy("1.1"));
    let runner = fixture.start(vec![decode.clone()], &pools(1, 2));

    runner.submit(Job::new("1.1", 1, Vec::new())).unwrap();
    let JobOutcome::Failed { error, .. } = runner.outcomes().recv_timeout(TIMEOUT).unwrap() else {
        panic!("expected failure");
    };
    assert_eq!(error, "stage panicked: index out of bounds");

    runner.submit(Job::new("2.2", 1, Vec::new())).unwrap();
    assert!(matches!(runner.outcomes().recv_timeout(TIMEOUT).unwrap(), JobOutcome::Waiting { .. }));
    assert_eq!(decode.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn full_queue_blocks_submit() {
    let fixture = Fixture::new();
    let (release, released) = crossbeam_channel::unbounded();
    let decode = TestStage::new(StageName::Decode, Behaviour::Block(released));
    let runner = Arc::new(fixture.start(vec![decode], &pools(1, 1)));

    // One study in the worker and one in the queue fill the stage.
    runner.submit(Job::new("1.1", 1, Vec::new())).unwrap();
    runner.submit(Job::new("1.2", 1, Vec::new())).unwrap();

    let (done, submitted) = crossbeam_channel::bounded(1);
    let blocked_runner = Arc::clone(&runner);
    std::thread::spawn(move || {
        blocked_runner.submit(Job::new("1.3", 1, Vec::new())).unwrap();
        done.send(()).unwrap();
    });
    std::thread::sleep(Duration::from_millis(50));
    // Let the worker take "1.2" off the queue while still blocked on "1.1".
    assert!(submitted.recv_timeout(Duration::from_millis(300)).is_err(), "submit returned while the stage was full");

    for _ in 0..3 {
        release.send(()).unwrap();
    }
    submitted.recv_timeout(TIMEOUT).unwrap();
    for _ in 0..3 {
        runner.outcomes().recv_timeout(TIMEOUT).unwrap();
    }
}

#[test]
fn blocked_submit_gives_up_on_stop() {
    let fixture = Fixture::new();
    let (_release, released) = crossbeam_channel::unbounded::<()>();
    let decode = TestStage::new(StageName::Decode, Behaviour::Block(released));
    let runner = fixture.start(vec![decode], &pools(1, 1));
    runner.submit(Job::new("1.1", 1, Vec::new())).unwrap();
    // "1.1" blocks the only worker and "1.2" fills the queue of one.
    runner.submit(Job::new("1.2", 1, Vec::new())).unwrap();

    let stop = std::sync::atomic::AtomicBool::new(true);
    let result = runner.submit_unless(Job::new("1.4", 1, Vec::new()), &stop);

    assert!(matches!(result, Err(RunnerError::ShuttingDown)), "{result:?}");
    assert_eq!(fixture.state.get("1.4").unwrap().unwrap().state, StudyState::Queued);
}

#[test]
fn shutdown_reports_unfinished_studies() {
    let fixture = Fixture::new();
    let (_release, released) = crossbeam_channel::unbounded::<()>();
    let decode = TestStage::new(StageName::Decode, Behaviour::Block(released));
    let runner = fixture.start(vec![decode], &pools(1, 2));
    runner.submit(Job::new("1.1", 1, Vec::new())).unwrap();

    let report = runner.shutdown(Duration::from_millis(100));

    assert_eq!(report.unfinished, vec![("1.1".to_string(), 1)]);
}
