//! Watched-folder ingest against the real daemon: slow writes, renames from `.part`, a burst of
//! 2,000 files, and broken files that must land in quarantine.

mod spine_common;

use std::io::Write;
use std::time::{Duration, Instant};

use spine_common::*;

const STUDY: &str = "1.2.826.0.1.3680043.10.1";

fn sop(n: usize) -> String {
    format!("{STUDY}.1.{n}")
}

#[test]
fn slow_and_renamed_files_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 800, 1);
    let incoming = dir.path().join("incoming");
    let data_dir = dir.path().join("var");

    // Present before the daemon starts.
    std::fs::write(incoming.join("early.dcm"), ct_instance(STUDY, &format!("{STUDY}.1"), &sop(1), None, 0.0)).unwrap();
    let mut daemon = start_daemon(&config, "daemon.log");

    // Written in three parts with pauses shorter than settle_ms, inside a new subfolder.
    std::fs::create_dir(incoming.join("sub")).unwrap();
    let slow = ct_instance(STUDY, &format!("{STUDY}.1"), &sop(2), None, 5.0);
    let mut file = std::fs::File::create(incoming.join("sub/slow.dcm")).unwrap();
    for part in slow.chunks(slow.len() / 3 + 1) {
        file.write_all(part).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(file);

    // Uploaded under a .part name, renamed when complete.
    let renamed = incoming.join("renamed.dcm");
    let part = incoming.join("renamed.dcm.part");
    std::fs::write(&part, ct_instance(STUDY, &format!("{STUDY}.1"), &sop(3), None, 10.0)).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(part.exists(), "a .part file was taken before its rename");
    std::fs::rename(&part, &renamed).unwrap();

    let arrived = wait_until(Duration::from_secs(20), || files_under(&incoming).is_empty());
    let counts = spooled_counts(&data_dir);
    let waiting = wait_until(Duration::from_secs(20), || {
        study_record(&data_dir, STUDY).is_some_and(|r| reached_decode(&r))
    });
    terminate(&mut daemon, Duration::from_secs(10));

    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(arrived, "left in the watched folder: {:?}\n{log}", files_under(&incoming));
    for n in 1..=3 {
        assert_eq!(counts.get(&sop(n)), Some(&1), "instance {n} in {counts:?}");
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(waiting, "study record: {:?}", study_record(&data_dir, STUDY));
    assert_eq!(study_record(&data_dir, STUDY).unwrap()["instance_count"], 3);
}

#[test]
fn burst_of_2000_files_arrives_once() {
    const FILES: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 200, 2);
    let incoming = dir.path().join("incoming");
    let data_dir = dir.path().join("var");
    let mut daemon = start_daemon(&config, "daemon.log");

    // 20 time points x 100 slice positions, in one dynamic series.
    let series = format!("{STUDY}.2");
    let started = Instant::now();
    for n in 0..FILES {
        let bytes = ct_instance(STUDY, &series, &sop(n), Some(20), (n % 100) as f64 * 2.5);
        std::fs::write(incoming.join(format!("IM{n:05}.dcm")), bytes).unwrap();
    }

    let arrived = wait_until(Duration::from_secs(90), || spooled_counts(&data_dir).len() == FILES);
    let elapsed = started.elapsed();
    let emptied = wait_until(Duration::from_secs(10), || files_under(&incoming).is_empty());
    let waiting = wait_until(Duration::from_secs(20), || {
        study_record(&data_dir, STUDY).is_some_and(|r| reached_decode(&r) && r["instance_count"] == FILES)
    });
    terminate(&mut daemon, Duration::from_secs(10));

    let counts = spooled_counts(&data_dir);
    assert!(arrived, "{} of {FILES} spooled", counts.len());
    assert!(emptied, "{} files left in the watched folder", files_under(&incoming).len());
    assert!(counts.values().all(|&c| c == 1), "some instance was spooled twice");
    assert!(waiting, "study record: {:?}", study_record(&data_dir, STUDY));
    eprintln!("burst of {FILES} files spooled in {elapsed:?}");
}

#[test]
fn broken_files_land_in_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 300, 1);
    let incoming = dir.path().join("incoming");
    let data_dir = dir.path().join("var");
    let mut daemon = start_daemon(&config, "daemon.log");

    for name in ["g01_zero_length.dcm", "g02_truncated_half.dcm", "g53_huge_declared_length.dcm", "g00_base_ct_explicit.dcm"] {
        std::fs::copy(shared_cases().join(name), incoming.join(name)).unwrap();
    }
    std::fs::write(incoming.join("notes.txt"), "not an image\n").unwrap();

    let emptied = wait_until(Duration::from_secs(20), || files_under(&incoming).is_empty());
    terminate(&mut daemon, Duration::from_secs(10));
    assert!(emptied, "left in the watched folder: {:?}", files_under(&incoming));

    let reasons = quarantine_reasons(&data_dir);
    let kind_of = |file: &str| {
        reasons
            .iter()
            .find(|r| r["source"].as_str().is_some_and(|s| s.ends_with(file)))
            .map(|r| r["kind"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(kind_of("g01_zero_length.dcm").as_deref(), Some("empty_file"), "{reasons:?}");
    assert_eq!(kind_of("g02_truncated_half.dcm").as_deref(), Some("truncated"), "{reasons:?}");
    assert_eq!(kind_of("g53_huge_declared_length.dcm").as_deref(), Some("length_exceeds_file"), "{reasons:?}");
    assert_eq!(kind_of("notes.txt").as_deref(), Some("not_dicom"), "{reasons:?}");
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for reason in &reasons {
        assert!(!reason["reason"].as_str().unwrap_or_default().is_empty(), "{reason}");
    }
    assert_eq!(spooled_counts(&data_dir).len(), 1, "the clean file must be spooled");
}
