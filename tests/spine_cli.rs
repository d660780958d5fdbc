//! The `check-config`, `run` and `serve` commands against the real binary.

mod spine_common;

use std::time::Duration;

use spine_common::*;

#[test]
fn check_config_accepts_shipped_file() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.yaml");
    let output = penumbra().args(["check-config", "--config"]).arg(&shipped).output().unwrap();

    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("valid"), "{stdout}");
}

#[test]
fn check_config_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "ingest:\n  watch:\n    settle_ms: 0\n  scp:\n    max_associations: 0\nmodel:\n  batch: 0\n").unwrap();

    let output = penumbra().args(["check-config", "--config"]).arg(&config).output().unwrap();

    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ingest.watch.settle_ms must be at least 100, got 0"), "{stderr}");
    assert!(stderr.contains("ingest.scp.max_associations must be at least 1, got 0"), "{stderr}");
    assert!(stderr.contains("model.batch must be at least 1, got 0"), "{stderr}");
}

#[test]
fn serve_and_run_reject_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "ingest:\n  watch:\n    setle_ms: 200\n").unwrap();

    let serve = penumbra().args(["serve", "--config"]).arg(&config).output().unwrap();
    let run = penumbra().args(["run", "--config"]).arg(&config).arg(dir.path()).output().unwrap();

    assert_eq!(serve.status.code(), Some(78));
    assert_eq!(run.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&serve.stderr).contains("ingest.watch.setle_ms"));
}

#[test]
fn run_reports_missing_stage() {
    // Without a model the pipeline ends after perfusion, so a real CTP study waits for resample.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 200, 1);
    let study = dir.path().join("study");
    let phantom = penumbra()
        .args(["phantom", "--out"])
        .arg(&study)
        .args(["--seed", "3", "--matrix", "64", "--slices", "4", "--frames", "30"])
        .output()
        .unwrap();
    assert!(phantom.status.success(), "{}", String::from_utf8_lossy(&phantom.stderr));
    let dicom = study.join("dicom");
    let instances = std::fs::read_dir(&dicom).unwrap().count();

    let output = penumbra().args(["run", "--config"]).arg(&config).arg(&dicom).output().unwrap();

    assert_eq!(output.status.code(), Some(69), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty(), "a report was printed without the stages");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("waits for stage resample"), "{stderr}");
    assert!(stderr.contains("cannot load the model"), "{stderr}");
    let spool = dir.path().join("var/spool");
    let study_uid = std::fs::read_dir(&spool).unwrap().next().unwrap().unwrap().file_name();
    let record = study_record(&dir.path().join("var"), &study_uid.to_string_lossy()).unwrap();
    assert_eq!(record["waiting_for"], "resample");
    assert_eq!(record["instance_count"], instances);
    assert_eq!(std::fs::read_dir(&dicom).unwrap().count(), instances, "run must leave its input folder alone");
}

#[test]
fn serve_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 200, 1);
    let mut daemon = start_daemon(&config, "daemon.log");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(dir.path().join("daemon.log")).is_ok_and(|log| log.contains("Daemon ready"))
    }));

    let status = terminate(&mut daemon, Duration::from_secs(10));

    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
