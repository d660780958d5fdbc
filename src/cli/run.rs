//! `penumbra run`: processes one study folder through the same spool and stages as the daemon,
//! without the daemon, and prints the report JSON.
//!
//! Exit codes: 0 with the report on stdout; 1 when a stage failed or nothing could be read;
//! 69 (`EX_UNAVAILABLE`) when the study waits for a stage this build does not have; 78 on an
//! invalid config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::ingest::identify::identify;
use crate::ingest::quarantine::{Quarantine, Reason};
use crate::ingest::spool::{Source, Spool};
use crate::pipeline::{load_segmenter, registered_stages, Job, JobOutcome, Runner, StageResources, StateStore, StudyState};
use crate::telemetry::{init_logging, LogFormat};

/// Exit code when a study waits for a missing stage (`EX_UNAVAILABLE` from sysexits.h).
pub const EXIT_STAGE_MISSING: u8 = 69;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file.
    #[arg(long, default_value = "pipeline.yaml")]
    pub config: PathBuf,
    /// Folder with the study's DICOM files (searched recursively; files are not modified).
    pub dir: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    let settings = match super::check_config::load_or_report(&args.config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    init_logging(LogFormat::Text);

    match run_folder(&settings, &args.dir) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("penumbra run: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_folder(settings: &Settings, dir: &Path) -> Result<ExitCode, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a folder; pass the folder that contains the study", dir.display()));
    }
    let data_dir = &settings.data_dir;
    let spool = Spool::open_with_journal(data_dir, settings.ingest.scp.durability, settings.ingest.scp.journal).map_err(|e| e.to_string())?;
    let state = Arc::new(StateStore::open(data_dir).map_err(|e| e.to_string())?);
    let quarantine = Quarantine::new(data_dir);

    let studies = spool_folder(&spool, &quarantine, dir)?;
    if studies.is_empty() {
        return Err(format!("no readable DICOM instance found in {}", dir.display()));
    }

    let resources = StageResources {
        segmenter: match load_segmenter(settings) {
            Ok(segmenter) => Some(Arc::new(segmenter)),
            Err(message) => {
                eprintln!("penumbra run: {message}");
                None
            }
        },
        ..StageResources::default()
    };
    let stages = registered_stages(settings, &resources);
    let runner = Runner::start(stages, &settings.pipeline, Arc::clone(&state), quarantine);
    for study_uid in &studies {
        let instances = spool.study_instances(study_uid).map_err(|e| e.to_string())?;
        let version = next_version(&state, study_uid);
        runner.submit(Job::new(study_uid.clone(), version, instances)).map_err(|e| e.to_string())?;
    }

    let mut code = ExitCode::SUCCESS;
    let outcomes = runner.outcomes();
    for _ in &studies {
        let Ok(outcome) = outcomes.recv() else {
            return Err("the pipeline stopped before every study finished".to_string());
        };
        code = report_outcome(outcome).min_by_severity(code);
    }
    let _ = runner.shutdown(Duration::from_secs(1));
    Ok(code)
}

/// Identifies and spools every file under `dir`, copying bad files into quarantine. Returns the
/// Study Instance UIDs found, sorted.
fn spool_folder(spool: &Spool, quarantine: &Quarantine, dir: &Path) -> Result<Vec<String>, String> {
    let mut studies = std::collections::BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|err| format!("could not read {}: {err}", folder.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|err| format!("could not read {}: {err}", path.display()))?;
            match identify(&bytes) {
                Ok(ids) => {
                    spool
                        .store(&ids, &bytes, Source::Cli { path: path.clone() })
                        .map_err(|err| format!("could not spool {}: {err}", path.display()))?;
                    studies.insert(ids.study_instance_uid);
                }
                Err(err) => {
                    eprintln!("penumbra run: skipped {}: {err}", path.display());
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let reason = Reason::new(err.kind(), err.to_string(), path.display().to_string());
                    if let Err(quarantine_err) = quarantine.keep_bytes(&name, &bytes, &reason) {
                        eprintln!("penumbra run: could not quarantine {}: {quarantine_err}", path.display());
                    }
                }
            }
        }
    }
    Ok(studies.into_iter().collect())
}

/// Returns the version to process: 1 for a new study, the next one after a dispatched version.
fn next_version(state: &StateStore, study_uid: &str) -> u32 {
    match state.get(study_uid) {
        Ok(Some(record)) if record.state == StudyState::Receiving => record.version.max(1),
        Ok(Some(record)) => record.version + 1,
        _ => 1,
    }
}

/// Exit status of one study, ordered by severity so the worst one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    Done,
    Waiting,
    Failed,
}

impl Severity {
    fn min_by_severity(self, code: ExitCode) -> ExitCode {
        let current = if code == ExitCode::SUCCESS {
            Severity::Done
        } else if code == ExitCode::from(EXIT_STAGE_MISSING) {
            Severity::Waiting
        } else {
            Severity::Failed
        };
        match self.max(current) {
            Severity::Done => ExitCode::SUCCESS,
            Severity::Waiting => ExitCode::from(EXIT_STAGE_MISSING),
            Severity::Failed => ExitCode::FAILURE,
        }
    }
}

fn report_outcome(outcome: JobOutcome) -> Severity {
    match outcome {
        JobOutcome::Done(job) => match job.artifacts.report {
            Some(report) => {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                Severity::Done
            }
            None => {
                eprintln!("penumbra run: study {} finished every stage but export produced no report", job.study_instance_uid);
                Severity::Failed
            }
        },
        JobOutcome::Waiting { job, stage } => {
            eprintln!(
                "penumbra run: study {} (version {}) waits for stage {stage}, which this build does not provide; \
                 it stays in the spool and no report was produced",
                job.study_instance_uid, job.version
            );
            Severity::Waiting
        }
        JobOutcome::Failed { study_instance_uid, stage, error, .. } => {
            eprintln!("penumbra run: study {study_instance_uid} failed in stage {stage}: {error}; see the quarantine folder");
            Severity::Failed
        }
    }
}
