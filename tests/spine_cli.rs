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
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 200, 1);
    let study = dir.path().join("study");
    std::fs::create_dir(&study).unwrap();
    for n in 1..=3 {
        let bytes = ct_instance("1.2.3", "1.2.3.1", &format!("1.2.3.1.{n}"), Some(1), n as f64);
        std::fs::write(study.join(format!("IM{n}.dcm")), bytes).unwrap();
    }

    let output = penumbra().args(["run", "--config"]).arg(&config).arg(&study).output().unwrap();

    assert_eq!(output.status.code(), Some(69), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty(), "a report was printed without the stages");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("waits for stage decode"), "{stderr}");
    let record = study_record(&dir.path().join("var"), "1.2.3").unwrap();
    assert_eq!(record["waiting_for"], "decode");
    assert_eq!(record["instance_count"], 3);
    assert_eq!(std::fs::read_dir(&study).unwrap().count(), 3, "run must leave its input folder alone");
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
