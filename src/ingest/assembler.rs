//! Study assembly: groups spooled instances by study and series and decides when a study is
//! complete enough to process.
//!
//! A study version is complete when either
//! - no instance has arrived for `study_quiet_s`, or
//! - every dynamic series (Number of Temporal Positions above 1) has Number of Temporal Positions
//!   times its distinct slice positions instances, and no instance has arrived for a short grace
//!   period. The grace keeps a series sent slice by slice (all time points of one slice, then
//!   the next) from counting as complete after its first slice.
//!
//! Instances that arrive after a study version was dispatched open the next version, which is
//! dispatched with every spooled instance of the study after its own quiet period.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::identify::InstanceIds;
use super::spool::{Spool, SpooledInstance};
use crate::pipeline::{Job, Runner, StateStore, StudyState};

/// Maximum grace after the last instance before a study with all its frames is dispatched.
const MAX_FRAME_GRACE: Duration = Duration::from_secs(2);

/// Image positions are compared after rounding to this many millimetres.
const POSITION_TOLERANCE_MM: f64 = 0.01;

/// A study version that is ready for the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteStudy {
    pub study_instance_uid: String,
    pub version: u32,
    /// True when all expected frames were present; false when the quiet period ran out.
    pub all_frames: bool,
}

#[derive(Debug, Default)]
struct SeriesProgress {
    sop_uids: HashSet<String>,
    temporal_positions: Option<u32>,
    positions: HashSet<[i64; 3]>,
}

impl SeriesProgress {
    fn is_dynamic(&self) -> bool {
        self.temporal_positions.is_some_and(|n| n > 1)
    }

    /// Expected instances of a dynamic series, from the positions seen so far.
    fn has_all_frames(&self) -> bool {
        match self.temporal_positions {
            Some(n) if !self.positions.is_empty() => self.sop_uids.len() >= n as usize * self.positions.len(),
            _ => false,
        }
    }
}

#[derive(Debug)]
struct StudyProgress {
    version: u32,
    /// False once the current version was dispatched; the next instance opens a new version.
    open: bool,
    /// Late instances of a reopened study complete only by quiet period.
    reopened: bool,
    series: HashMap<String, SeriesProgress>,
    last_instance_at: Instant,
}

/// The assembly rules, without threads or I/O, so they can be tested with chosen instants.
#[derive(Debug)]
pub struct StudyAssembler {
    quiet: Duration,
    grace: Duration,
    studies: HashMap<String, StudyProgress>,
}

impl StudyAssembler {
    pub fn new(quiet: Duration) -> Self {
        Self { quiet, grace: quiet.min(MAX_FRAME_GRACE), studies: HashMap::new() }
    }

    /// Records an instance. `first_version` gives the version to open when the study is new to
    /// this assembler (from its state record). Returns the version the instance belongs to, and
    /// whether that version was just opened.
    pub fn add(&mut self, ids: &InstanceIds, now: Instant, first_version: impl FnOnce() -> u32) -> (u32, bool) {
        let mut opened = false;
        let study = self.studies.entry(ids.study_instance_uid.clone()).or_insert_with(|| {
            opened = true;
            StudyProgress {
                version: first_version().max(1),
                open: true,
                reopened: false,
                series: HashMap::new(),
                last_instance_at: now,
            }
        });

        if !study.open {
            study.version += 1;
            study.open = true;
            study.reopened = true;
            study.series.clear();
            opened = true;
        }
        study.last_instance_at = now;

        let series = study.series.entry(ids.series_instance_uid.clone()).or_default();
        series.sop_uids.insert(ids.sop_instance_uid.clone());
        if ids.number_of_temporal_positions.is_some() {
            series.temporal_positions = ids.number_of_temporal_positions;
        }
        if let Some(position) = ids.image_position_patient {
            series.positions.insert(position.map(|mm| (mm / POSITION_TOLERANCE_MM).round() as i64));
        }
        (study.version, opened)
    }

    /// Returns the study versions that are complete at `now` and marks them dispatched.
    pub fn take_complete(&mut self, now: Instant) -> Vec<CompleteStudy> {
        let mut complete = Vec::new();
        for (uid, study) in &mut self.studies {
            if !study.open {
                continue;
            }
            let quiet_for = now.saturating_duration_since(study.last_instance_at);
            let all_frames = !study.reopened && Self::has_all_frames(study);
            if quiet_for >= self.quiet || (all_frames && quiet_for >= self.grace) {
                study.open = false;
                study.series.clear();
                complete.push(CompleteStudy { study_instance_uid: uid.clone(), version: study.version, all_frames });
            }
        }
        complete.sort_by(|a, b| a.study_instance_uid.cmp(&b.study_instance_uid));
        complete
    }

    fn has_all_frames(study: &StudyProgress) -> bool {
        let mut dynamic = study.series.values().filter(|s| s.is_dynamic()).peekable();
        dynamic.peek().is_some() && dynamic.all(SeriesProgress::has_all_frames)
    }

    /// Returns the earliest instant at which an open study may become complete.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.studies
            .values()
            .filter(|s| s.open)
            .map(|s| s.last_instance_at + if Self::has_all_frames(s) && !s.reopened { self.grace } else { self.quiet })
            .min()
    }

    /// Returns the number of studies with an open version.
    pub fn open_studies(&self) -> usize {
        self.studies.values().filter(|s| s.open).count()
    }
}

/// The assembler thread: reads spooled-instance events, dispatches complete studies to the
/// runner, and stops when `stop` is set.
pub struct AssemblerThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl AssemblerThread {
    pub fn spawn(
        events: Receiver<SpooledInstance>,
        quiet: Duration,
        spool: Arc<Spool>,
        state: Arc<StateStore>,
        runner: Arc<Runner>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new().name("assembler".to_string()).spawn(move || {
            let mut assembler = StudyAssembler::new(quiet);
            while !stop_flag.load(Ordering::SeqCst) {
                let wait = assembler
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(200))
                    .min(Duration::from_millis(200));
                match events.recv_timeout(wait) {
                    Ok(event) => note_instance(&mut assembler, &event.ids, &state),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                for complete in assembler.take_complete(Instant::now()) {
                    dispatch(&complete, &spool, &runner, &stop_flag);
                }
            }
            if assembler.open_studies() > 0 {
                tracing::info!(open_studies = assembler.open_studies(), "Assembler stopped with studies still receiving; they resume at the next start");
            }
        })?;
        Ok(Self { stop, handle })
    }

    /// Stops the thread and waits for it. Studies still receiving stay in the spool.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.join();
    }
}

fn note_instance(assembler: &mut StudyAssembler, ids: &InstanceIds, state: &StateStore) {
    let study_uid = &ids.study_instance_uid;
    let (version, opened) = assembler.add(ids, Instant::now(), || first_version(state, study_uid));
    if !opened {
        return;
    }

    tracing::info!(study_uid = %study_uid, version, "Receiving study");
    let result = state.update(study_uid, |r| {
        r.state = StudyState::Receiving;
        r.version = version;
        r.waiting_for = None;
        r.stage_reached = None;
        r.error = None;
    });
    if let Err(err) = result {
        tracing::error!(study_uid = %study_uid, error = %err, "Could not write the study state record");
    }
}

/// Version for a study this process has not seen: the recorded one while it is still
/// receiving, the next one when the recorded version was already dispatched.
fn first_version(state: &StateStore, study_uid: &str) -> u32 {
    match state.get(study_uid) {
        Ok(Some(record)) if record.state == StudyState::Receiving => record.version.max(1),
        Ok(Some(record)) => record.version + 1,
        Ok(None) => 1,
        Err(err) => {
            tracing::warn!(study_uid, error = %err, "State record unreadable; starting at version 1");
            1
        }
    }
}

fn dispatch(complete: &CompleteStudy, spool: &Spool, runner: &Runner, stop: &AtomicBool) {
    let study_uid = &complete.study_instance_uid;
    let instances = match spool.study_instances(study_uid) {
        Ok(instances) => instances,
        Err(err) => {
            tracing::error!(study_uid = %study_uid, error = %err, "Could not list the study's instances; it stays in the spool");
            return;
        }
    };
    tracing::info!(study_uid = %study_uid, version = complete.version, instances = instances.len(),
        all_frames = complete.all_frames, "Study complete");

    if let Err(err) = runner.submit_unless(Job::new(study_uid.clone(), complete.version, instances), stop) {
        tracing::warn!(study_uid = %study_uid, error = %err, "Study not queued; it stays in the spool for the next start");
    }
}

/// Re-queues what a previous run left unfinished. Studies recorded as queued, processing or
/// waiting go straight to the runner. Studies still receiving, without a record, or with
/// instances added since their record are replayed through the assembler.
///
/// Returns the number of studies re-queued and replayed.
pub fn recover(spool: &Spool, state: &StateStore, runner: &Runner, assembler: &Sender<SpooledInstance>) -> (usize, usize) {
    let studies = match spool.studies() {
        Ok(studies) => studies,
        Err(err) => {
            tracing::error!(error = %err, "Could not list the spool; nothing recovered");
            return (0, 0);
        }
    };

    let (mut requeued, mut replayed) = (0, 0);
    for study_uid in studies {
        let Ok(instances) = spool.study_instances(&study_uid) else { continue };
        if instances.is_empty() {
            continue;
        }
        let record = state.get(&study_uid).ok().flatten();
        let unchanged = record.as_ref().is_some_and(|r| r.instance_count == instances.len());

        match record {
            Some(record) if unchanged && record.is_finished() => {}
            Some(record) if unchanged && record.state != StudyState::Receiving => {
                tracing::info!(study_uid = %study_uid, version = record.version, state = ?record.state, "Re-queueing study");
                if runner.submit(Job::new(study_uid.clone(), record.version, instances)).is_ok() {
                    requeued += 1;
                }
            }
            _ => {
                tracing::info!(study_uid = %study_uid, instances = instances.len(), "Replaying spooled study through assembly");
                for path in instances {
                    if let Some(ids) = ids_from_spool_path(&path) {
                        let _ = assembler.send(SpooledInstance { ids, path });
                    }
                }
                replayed += 1;
            }
        }
    }
    (requeued, replayed)
}

/// Rebuilds the UIDs of a spooled instance from its path `<study>/<series>/<sop>.dcm`.
fn ids_from_spool_path(path: &Path) -> Option<InstanceIds> {
    let sop = path.file_stem()?.to_str()?;
    let series_dir = path.parent()?;
    let series = series_dir.file_name()?.to_str()?;
    let study = series_dir.parent()?.file_name()?.to_str()?;
    Some(InstanceIds {
        study_instance_uid: study.to_string(),
        series_instance_uid: series.to_string(),
        sop_instance_uid: sop.to_string(),
        sop_class_uid: String::new(),
        number_of_temporal_positions: None,
        image_position_patient: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(study: &str, sop: &str, times: Option<u32>, z: f64) -> InstanceIds {
        InstanceIds {
            study_instance_uid: study.to_string(),
            series_instance_uid: format!("{study}.1"),
            sop_instance_uid: sop.to_string(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".to_string(),
            number_of_temporal_positions: times,
            image_position_patient: Some([0.0, 0.0, z]),
        }
    }

    const QUIET: Duration = Duration::from_secs(20);

    #[test]
    fn quiet_period_completes_study() {
        let start = Instant::now();
        let mut assembler = StudyAssembler::new(QUIET);
        assembler.add(&frame("1.1", "1.1.1", None, 0.0), start, || 1);

        assert!(assembler.take_complete(start + Duration::from_secs(19)).is_empty());
        let complete = assembler.take_complete(start + QUIET);
        assert_eq!(complete, vec![CompleteStudy { study_instance_uid: "1.1".to_string(), version: 1, all_frames: false }]);
    }

    #[test]
    fn all_frames_complete_after_grace() {
        let start = Instant::now();
        let mut assembler = StudyAssembler::new(QUIET);
        // 2 time points x 3 positions, sent time point by time point.
        let mut n = 0;
        for _time in 0..2 {
            for z in [0.0, 5.0, 10.0] {
                n += 1;
                assembler.add(&frame("1.1", &format!("1.1.{n}"), Some(2), z), start, || 1);
            }
        }

        assert!(assembler.take_complete(start + Duration::from_secs(1)).is_empty());
        let complete = assembler.take_complete(start + MAX_FRAME_GRACE);
        assert_eq!(complete.len(), 1);
        assert!(complete[0].all_frames);
    }

    #[test]
    fn missing_frames_wait_for_quiet_period() {
        let start = Instant::now();
        let mut assembler = StudyAssembler::new(QUIET);
        for (n, z) in [0.0, 5.0, 10.0].into_iter().enumerate() {
            assembler.add(&frame("1.1", &format!("1.1.{n}"), Some(2), z), start, || 1);
        }

        assert!(assembler.take_complete(start + Duration::from_secs(5)).is_empty());
        assert_eq!(assembler.next_deadline(), Some(start + QUIET));
    }

    #[test]
    fn late_instance_opens_next_version() {
        let start = Instant::now();
        let mut assembler = StudyAssembler::new(QUIET);
        assembler.add(&frame("1.1", "1.1.1", None, 0.0), start, || 1);
        assert_eq!(assembler.take_complete(start + QUIET).len(), 1);

        let later = start + Duration::from_secs(60);
        let (version, opened) = assembler.add(&frame("1.1", "1.1.2", Some(1), 0.0), later, || unreachable!());

        assert_eq!((version, opened), (2, true));
        let complete = assembler.take_complete(later + QUIET);
        assert_eq!(complete[0].version, 2);
        assert!(assembler.take_complete(later + QUIET * 2).is_empty());
    }

    #[test]
    fn first_version_comes_from_record() {
        let start = Instant::now();
        let mut assembler = StudyAssembler::new(QUIET);
        let (version, opened) = assembler.add(&frame("1.1", "1.1.1", None, 0.0), start, || 3);
        assert_eq!((version, opened), (3, true));
        let (version, opened) = assembler.add(&frame("1.1", "1.1.2", None, 0.0), start, || unreachable!());
        assert_eq!((version, opened), (3, false));
    }

    #[test]
    fn spool_path_gives_uids() {
        let ids = ids_from_spool_path(Path::new("/var/spool/1.2/1.2.3/1.2.3.4.dcm")).unwrap();
        assert_eq!(ids.study_instance_uid, "1.2");
        assert_eq!(ids.series_instance_uid, "1.2.3");
        assert_eq!(ids.sop_instance_uid, "1.2.3.4");
    }
}
