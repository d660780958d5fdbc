//! Journal behaviour through the spool: replay after lost page-cache writes, torn and stale
//! records, rotation and checkpoints.

use std::fs;
use std::path::{Path, PathBuf};

use super::{folders_to_sync, legacy_record, JournalSettings, BLOCK};
use crate::config::Durability;
use crate::ingest::spool::tests::ids;
use crate::ingest::spool::{Source, Spool, StoreOutcome};

/// Three records of up to one block of instance bytes (a head block and a data block each) fit
/// into one segment after its header block.
const SMALL: JournalSettings = JournalSettings { segment_bytes: 7 * BLOCK, segments: 2 };

fn open(dir: &Path) -> Spool {
    Spool::open_with_journal(dir, Durability::Fsync, SMALL).unwrap()
}

fn store(spool: &Spool, sop: &str, bytes: &[u8]) -> PathBuf {
    match spool.store(&ids(sop), bytes, Source::Scp { calling_ae: "CT1".to_string() }).unwrap() {
        StoreOutcome::Stored { path } | StoreOutcome::Conflict { path, .. } => path,
        StoreOutcome::Duplicate { path } => panic!("unexpected duplicate at {}", path.display()),
    }
}

/// Stores instances 1.1, 1.2 and 1.3, which fill the first segment.
fn store_three(spool: &Spool) {
    for sop in ["1.1", "1.2", "1.3"] {
        store(spool, sop, &payload(sop));
    }
}

fn instance_path(dir: &Path, sop: &str) -> PathBuf {
    dir.join(format!("spool/1.2.3/1.2.3.4/{sop}.dcm"))
}

fn payload(sop: &str) -> Vec<u8> {
    format!("instance {sop} ").repeat(20).into_bytes()
}

/// Deletes every instance file, as a power loss before writeback would.
fn lose_spool_files(dir: &Path) {
    fs::remove_dir_all(dir.join("spool/1.2.3")).unwrap();
}

/// Overwrites one byte of the segment file at `offset`.
fn damage(dir: &Path, segment: u32, offset: u64, byte: u8) {
    use std::os::unix::fs::FileExt;

    let path = dir.join(format!("journal/segment-{segment:03}.wal"));
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&[byte], offset).unwrap();
}

/// Offset of the instance bytes of the `index`-th record of a segment holding records of one
/// data block: after the segment header, `index` records of two blocks and the record's head.
fn data_offset(index: u64) -> u64 {
    BLOCK * (1 + 2 * index) + BLOCK
}

#[test]
fn records_replay_missing_spool_files() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    store_three(&spool);
    drop(spool);
    lose_spool_files(dir.path());

    let reopened = open(dir.path());

    for sop in ["1.1", "1.2", "1.3"] {
        assert_eq!(fs::read(instance_path(dir.path(), sop)).unwrap(), payload(sop), "instance {sop}");
    }
    assert_eq!(reopened.study_instances("1.2.3").unwrap().len(), 3);
}

#[test]
fn replay_rewrites_truncated_or_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let short = store(&spool, "1.1", &payload("1.1"));
    let changed = store(&spool, "1.2", &payload("1.2"));
    drop(spool);
    fs::write(&short, &payload("1.1")[..10]).unwrap();
    let mut other = payload("1.2");
    other[3] ^= 0xff;
    fs::write(&changed, &other).unwrap();

    open(dir.path());

    assert_eq!(fs::read(&short).unwrap(), payload("1.1"));
    assert_eq!(fs::read(&changed).unwrap(), payload("1.2"));
}

#[test]
fn corrupt_record_stops_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    store_three(&spool);
    drop(spool);
    damage(dir.path(), 0, data_offset(1) + 5, b'#');
    lose_spool_files(dir.path());

    open(dir.path());

    assert!(instance_path(dir.path(), "1.1").exists(), "record before the damage is replayed");
    assert!(!instance_path(dir.path(), "1.2").exists(), "damaged record is replayed");
    assert!(!instance_path(dir.path(), "1.3").exists(), "record after the damage is replayed");
}

#[test]
fn torn_tail_record_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    store_three(&spool);
    drop(spool);
    // A write that stopped part-way leaves the segment's earlier zeros in the record's tail.
    for offset in 100..payload("1.3").len() as u64 {
        damage(dir.path(), 0, data_offset(2) + offset, 0);
    }
    lose_spool_files(dir.path());

    open(dir.path());

    assert!(instance_path(dir.path(), "1.1").exists());
    assert!(instance_path(dir.path(), "1.2").exists());
    assert!(!instance_path(dir.path(), "1.3").exists(), "torn record is replayed");
}

#[test]
fn old_generation_records_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    store_three(&spool);
    spool.checkpoint().unwrap();
    // Takes the first record's place; the two records after it are intact but void.
    store(&spool, "1.4", &payload("1.4"));
    drop(spool);
    lose_spool_files(dir.path());

    open(dir.path());

    assert!(instance_path(dir.path(), "1.4").exists());
    for sop in ["1.2", "1.3"] {
        assert!(!instance_path(dir.path(), sop).exists(), "void record {sop} is replayed");
    }
}

#[test]
fn full_ring_checkpoints_before_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let sops: Vec<String> = (1..=7).map(|i| format!("1.{i}")).collect();
    for sop in &sops[..6] {
        store(&spool, sop, &payload(sop));
    }
    let journal = spool.journal().unwrap();
    assert_eq!(journal.checkpoints(), 0, "both segments are new, so nothing needs a checkpoint yet");

    store(&spool, &sops[6], &payload(&sops[6]));

    assert_eq!(journal.checkpoints(), 1, "reusing the first segment checkpoints it");
    drop(spool);
    lose_spool_files(dir.path());
    open(dir.path());
    for sop in &sops[..3] {
        assert!(!instance_path(dir.path(), sop).exists(), "checkpointed record {sop} is replayed");
    }
    for sop in &sops[3..] {
        assert_eq!(fs::read(instance_path(dir.path(), sop)).unwrap(), payload(sop), "live record {sop}");
    }
}

#[test]
fn file_removed_after_checkpoint_stays_removed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let moved = store(&spool, "1.1", &payload("1.1"));
    spool.checkpoint().unwrap();
    fs::remove_file(&moved).unwrap();
    let stored_path = store(&spool, "1.2", &payload("1.2"));
    drop(spool);
    fs::remove_file(&stored_path).unwrap();

    open(dir.path());

    assert!(!moved.exists(), "file moved out after the checkpoint came back");
    assert!(stored_path.exists());
}

#[test]
fn conflict_copy_replays_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let original = store(&spool, "1.1", b"original bytes");
    let conflict = store(&spool, "1.1", b"other bytes");
    drop(spool);
    lose_spool_files(dir.path());

    open(dir.path());

    assert_eq!(conflict, dir.path().join("spool/1.2.3/1.2.3.4/1.1.conflict-1.dcm"));
    assert_eq!(fs::read(&original).unwrap(), b"original bytes");
    assert_eq!(fs::read(&conflict).unwrap(), b"other bytes");
}

#[test]
fn duplicate_writes_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    store(&spool, "1.1", &payload("1.1"));

    let repeat = spool.store(&ids("1.1"), &payload("1.1"), Source::Scp { calling_ae: "CT1".to_string() }).unwrap();

    assert!(matches!(repeat, StoreOutcome::Duplicate { .. }), "{repeat:?}");
    for i in 2..=6 {
        let sop = format!("1.{i}");
        store(&spool, &sop, &payload(&sop));
    }
    assert_eq!(spool.journal().unwrap().checkpoints(), 0, "six records fill both segments exactly");
}

#[test]
fn instance_larger_than_segment_is_fsynced_directly() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let large = vec![7u8; 6 * BLOCK as usize];

    let path = store(&spool, "1.1", &large);
    drop(spool);

    assert_eq!(fs::read(&path).unwrap(), large);
    fs::remove_file(&path).unwrap();
    open(dir.path());
    assert!(!path.exists(), "an instance stored without the journal has no record to replay");
}

#[test]
fn changed_settings_recreate_segments_after_replay() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    store(&spool, "1.1", &payload("1.1"));
    drop(spool);
    lose_spool_files(dir.path());
    let larger = JournalSettings { segment_bytes: 8 * BLOCK, segments: 3 };

    let reopened = Spool::open_with_journal(dir.path(), Durability::Fsync, larger).unwrap();

    assert!(instance_path(dir.path(), "1.1").exists());
    for index in 0..3 {
        let len = fs::metadata(dir.path().join(format!("journal/segment-{index:03}.wal"))).unwrap().len();
        assert_eq!(len, 8 * BLOCK, "segment {index}");
    }
    store(&reopened, "1.2", &payload("1.2"));
}

#[test]
fn page_cache_durability_opens_no_journal() {
    let dir = tempfile::tempdir().unwrap();

    let spool = Spool::open_with_journal(dir.path(), Durability::PageCache, SMALL).unwrap();

    assert!(spool.journal().is_none());
    assert!(!dir.path().join("journal").exists());
}

#[test]
fn invalid_settings_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for settings in [
        JournalSettings { segment_bytes: 4 * BLOCK, segments: 1 },
        JournalSettings { segment_bytes: 4 * BLOCK + 1, segments: 2 },
        JournalSettings { segment_bytes: BLOCK, segments: 2 },
    ] {
        let result = Spool::open_with_journal(dir.path(), Durability::Fsync, settings);
        assert!(result.is_err(), "{settings:?}");
    }
}

#[test]
fn concurrent_stores_all_replay() {
    let dir = tempfile::tempdir().unwrap();
    let settings = JournalSettings { segment_bytes: 64 * BLOCK, segments: 4 };
    let spool = Spool::open_with_journal(dir.path(), Durability::Fsync, settings).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let spool = &spool;
            scope.spawn(move || {
                for i in 0..20 {
                    let sop = format!("1.{thread}.{i}");
                    store(spool, &sop, &payload(&sop));
                }
            });
        }
    });
    drop(spool);
    lose_spool_files(dir.path());

    Spool::open_with_journal(dir.path(), Durability::Fsync, settings).unwrap();

    for thread in 0..4 {
        for i in 0..20 {
            let sop = format!("1.{thread}.{i}");
            assert_eq!(fs::read(instance_path(dir.path(), &sop)).unwrap(), payload(&sop), "instance {sop}");
        }
    }
}

#[test]
fn concurrent_stores_rotate_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let settings = JournalSettings { segment_bytes: 7 * BLOCK, segments: 3 };
    let spool = Spool::open_with_journal(dir.path(), Durability::Fsync, settings).unwrap();
    let sops: Vec<String> = (0..4).flat_map(|thread| (0..15).map(move |i| format!("1.{thread}.{i}"))).collect();
    std::thread::scope(|scope| {
        for chunk in sops.chunks(15) {
            let spool = &spool;
            scope.spawn(move || {
                for sop in chunk {
                    store(spool, sop, &payload(sop));
                }
            });
        }
    });
    assert!(spool.journal().unwrap().checkpoints() > 0, "60 records must wrap a ring of 9");
    drop(spool);
    lose_spool_files(dir.path());

    Spool::open_with_journal(dir.path(), Durability::Fsync, settings).unwrap();

    let restored: Vec<&String> = sops.iter().filter(|sop| instance_path(dir.path(), sop).exists()).collect();
    assert!(!restored.is_empty(), "the live records are replayed");
    assert!(restored.len() <= 9, "at most one ring of records is live, got {}", restored.len());
    for sop in restored {
        assert_eq!(fs::read(instance_path(dir.path(), sop)).unwrap(), payload(sop), "instance {sop}");
    }
}

#[test]
fn out_of_order_write_waits_for_gap() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let journal = spool.journal().unwrap();
    let mut state = journal.shared.lock();
    let first = state.written;
    state.next_sequence += 3;

    state.record_written(0, first + 2);
    assert_eq!(state.written, first, "a later record alone acknowledges nothing");
    state.record_written(0, first);
    assert_eq!(state.written, first + 1);
    state.record_written(0, first + 1);
    assert_eq!(state.written, first + 3, "the gap closed");
    assert!(state.written_ahead.is_empty());
    assert!(state.segments[0].unsynced);
}

#[test]
fn segment_ahead_is_checkpointed_in_background() {
    let dir = tempfile::tempdir().unwrap();
    let settings = JournalSettings { segment_bytes: 7 * BLOCK, segments: 3 };
    let spool = Spool::open_with_journal(dir.path(), Durability::Fsync, settings).unwrap();
    let sops: Vec<String> = (1..=7).map(|i| format!("1.{i}")).collect();

    // The seventh record moves into the last segment, which starts the checkpoint of the first.
    for sop in &sops {
        store(&spool, sop, &payload(sop));
    }
    let journal = spool.journal().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while journal.checkpoints() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(journal.checkpoints(), 1, "the first segment is checkpointed without a store waiting");
    drop(spool);
    lose_spool_files(dir.path());

    Spool::open_with_journal(dir.path(), Durability::Fsync, settings).unwrap();

    for sop in &sops[..3] {
        assert!(!instance_path(dir.path(), sop).exists(), "checkpointed record {sop} is replayed");
    }
    for sop in &sops[3..] {
        assert_eq!(fs::read(instance_path(dir.path(), sop)).unwrap(), payload(sop), "live record {sop}");
    }
}

#[test]
fn reuse_skips_removed_spool_files() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let sops: Vec<String> = (1..=7).map(|i| format!("1.{i}")).collect();
    for sop in &sops[..6] {
        store(&spool, sop, &payload(sop));
    }
    fs::remove_file(instance_path(dir.path(), "1.1")).unwrap();

    store(&spool, &sops[6], &payload(&sops[6]));
    drop(spool);
    open(dir.path());

    assert!(!instance_path(dir.path(), "1.1").exists(), "a file removed before the segment was reused came back");
    assert_eq!(fs::read(instance_path(dir.path(), "1.2")).unwrap(), payload("1.2"));
}

#[test]
fn folders_synced_once_deepest_first() {
    let root = Path::new("/data/spool");
    let paths = ["1.2/1.2.3/1.1.dcm", "1.2/1.2.3/1.2.dcm", "1.2/1.2.4/1.3.dcm", "1.5/1.5.6/1.4.conflict-1.dcm"].map(String::from);

    let folders = folders_to_sync(root, &paths);

    let expected = ["1.5/1.5.6", "1.5", "1.2/1.2.4", "1.2/1.2.3", "1.2", ""].map(|folder| root.join(folder));
    assert_eq!(folders, expected);
}

#[test]
fn legacy_record_still_replays() {
    use std::os::unix::fs::FileExt;

    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    store(&spool, "1.1", &payload("1.1"));
    drop(spool);
    lose_spool_files(dir.path());
    // A version 1 record of the segment's generation replaces the first record, as a journal
    // written before the upgrade would hold it.
    let segment = dir.path().join("journal/segment-000.wal");
    let file = fs::OpenOptions::new().read(true).write(true).open(&segment).unwrap();
    let mut header = [0u8; 16];
    file.read_exact_at(&mut header, BLOCK).unwrap();
    let generation = u64::from_le_bytes(header[8..16].try_into().unwrap());
    let record = legacy_record(generation, 0, "1.2.3/1.2.3.4/1.9.dcm", &payload("1.9"));
    file.write_all_at(&record, BLOCK).unwrap();
    file.write_all_at(&vec![0u8; BLOCK as usize], BLOCK + record.len() as u64).unwrap();
    drop(file);

    open(dir.path());

    assert_eq!(fs::read(instance_path(dir.path(), "1.9")).unwrap(), payload("1.9"));
    assert!(!instance_path(dir.path(), "1.1").exists(), "the overwritten record came back");
}
