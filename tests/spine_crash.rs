//! Crash safety: the daemon is killed with SIGKILL at pseudo-random moments during ingest 20
//! times and restarted. Every file that left the watched folder must be in the spool exactly
//! once, and every study must end up recorded as waiting for decode (the first stage this
//! build does not provide) with all its instances.

mod spine_common;

use std::collections::HashSet;
use std::time::Duration;

use spine_common::*;

const KILLS: usize = 20;
const STUDIES: usize = 3;
const INSTANCES_PER_STUDY: usize = 100;

/// Small deterministic generator (xorshift64), so a failing run can be repeated.
struct XorShift(u64);

impl XorShift {
    fn next_below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn study_uid(study: usize) -> String {
    format!("1.2.826.0.1.3680043.10.2.{study}")
}

#[test]
fn kill_9_during_ingest_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 100, 1);
    let incoming = dir.path().join("incoming");
    let data_dir = dir.path().join("var");

    // Every instance, as (file name, bytes); written in .part-then-rename steps while the
    // daemon is being killed and restarted.
    let mut expected = HashSet::new();
    let mut pending = Vec::new();
    for study in 0..STUDIES {
        let uid = study_uid(study);
        for n in 0..INSTANCES_PER_STUDY {
            let sop = format!("{uid}.1.{n}");
            let bytes = ct_instance(&uid, &format!("{uid}.1"), &sop, Some(10), (n % 10) as f64);
            pending.push((format!("s{study}-{n:04}.dcm"), bytes));
            expected.insert(sop);
        }
    }

    let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
    let batch = pending.len() / KILLS + 1;
    let mut files = pending.into_iter();
    for round in 0..KILLS {
        let mut daemon = start_daemon(&config, &format!("daemon-{round}.log"));
        for (name, bytes) in files.by_ref().take(batch) {
            let part = incoming.join(format!("{name}.part"));
            std::fs::write(&part, bytes).unwrap();
            std::fs::rename(&part, incoming.join(name)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100 + random.next_below(500)));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
    }

    let mut daemon = start_daemon(&config, "daemon-final.log");
    let emptied = wait_until(Duration::from_secs(60), || files_under(&incoming).is_empty());
    let settled = wait_until(Duration::from_secs(30), || {
        (0..STUDIES).all(|study| {
            study_record(&data_dir, &study_uid(study))
                .is_some_and(|r| reached_decode(&r) && r["instance_count"] == INSTANCES_PER_STUDY)
        })
    });
    terminate(&mut daemon, Duration::from_secs(10));

    assert!(emptied, "left in the watched folder: {:?}", files_under(&incoming));
    let counts = spooled_counts(&data_dir);
    let spooled: HashSet<String> = counts.keys().cloned().collect();
    assert_eq!(spooled.difference(&expected).count(), 0, "unexpected spool files: {:?}", spooled.difference(&expected));
    assert_eq!(expected.difference(&spooled).count(), 0, "lost: {:?}", expected.difference(&spooled));
    assert!(counts.values().all(|&c| c == 1), "an instance was spooled twice: {counts:?}");
    for study in 0..STUDIES {
        let record = study_record(&data_dir, &study_uid(study));
        assert!(settled, "study {study} record: {record:?}");
        let record = record.unwrap();
        assert!(reached_decode(&record), "study {study} did not reach decode: {record}");
        assert_eq!(record["instance_count"], INSTANCES_PER_STUDY);
    }
    assert!(
        files_under(&data_dir.join("spool")).iter().all(|p| !p.to_string_lossy().ends_with(".tmp")),
        "temporary files left in the spool"
    );
}
