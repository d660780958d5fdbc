//! The SQLite QA store: persistence across restarts, the state machine, the audit log and the
//! case files.

mod qa_support;

use ndarray::{Array2, Axis};
use penumbra::qa::files::{self, MaskKind};
use penumbra::qa::store::{final_mask, Action, CaseState, Decision, QaStore, SqliteQaStore};
use penumbra::qa::QaError;
use qa_support::{new_case, synthetic_maps, DEPTH, HEIGHT, WIDTH};

fn decision(action: Action) -> Decision {
    Decision { action, reviewer: "dr-test".to_owned(), note: String::new() }
}

#[test]
fn restart_keeps_queue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second, third) = {
        let store = SqliteQaStore::open(dir.path()).expect("store opens");
        let first = store.enqueue(new_case("1.2.826.0.1.1", 1, 10)).expect("enqueue");
        let second = store.enqueue(new_case("1.2.826.0.1.2", 5, 20)).expect("enqueue");
        let third = store.enqueue(new_case("1.2.826.0.1.3", 1, 5)).expect("enqueue");
        store.decide(first, &decision(Action::Claim)).expect("claim");
        (first, second, third)
    };

    let store = SqliteQaStore::open(dir.path()).expect("store reopens");
    let queue = store.list(&[CaseState::Pending, CaseState::InReview]).expect("list");

    let ids: Vec<i64> = queue.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![second, third, first], "urgency first, then arrival");
    let reopened = store.get(first).expect("get");
    assert_eq!(reopened.state, CaseState::InReview);
    assert_eq!(reopened.study_uid, "1.2.826.0.1.1");
    assert_eq!(reopened.arrival, "2026-12-04T03:10:00Z");
    assert_eq!(reopened.shape, [DEPTH, HEIGHT, WIDTH]);
    assert_eq!(reopened.volumes.unet.core_ml, 12.5);
    assert_eq!(reopened.confidence.score, 0.42);
    assert_eq!(reopened.model_version, "unet-test-1");
    assert_eq!(store.audit(first).expect("audit").len(), 2);
}

#[test]
fn transition_table_is_exact() {
    use Action::*;
    use CaseState::*;
    let expected = [
        (Claim, Pending, Some(InReview)),
        (Release, InReview, Some(Pending)),
        (Accept, Pending, Some(Accepted)),
        (Accept, InReview, Some(Accepted)),
        (AcceptThreshold, Pending, Some(AcceptedThreshold)),
        (AcceptThreshold, InReview, Some(AcceptedThreshold)),
        (Correct, Pending, Some(Corrected)),
        (Correct, InReview, Some(Corrected)),
        (Reject, Pending, Some(Rejected)),
        (Reject, InReview, Some(Rejected)),
    ];
    for action in [Claim, Release, Accept, AcceptThreshold, Correct, Reject] {
        for from in CaseState::ALL {
            let want = expected.iter().find(|(a, f, _)| *a == action && *f == from).and_then(|(_, _, to)| *to);
            assert_eq!(action.target(from), want, "{action} from {from}");
        }
    }
}

#[test]
fn illegal_transition_leaves_case_unchanged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteQaStore::open(dir.path()).expect("store opens");
    let id = store.enqueue(new_case("1.2.3.4", 0, 0)).expect("enqueue");
    store.decide(id, &decision(Action::Reject)).expect("reject");

    let error = store.decide(id, &decision(Action::Accept)).expect_err("rejected is final");

    assert!(matches!(error, QaError::IllegalTransition { from: CaseState::Rejected, action: Action::Accept, .. }));
    assert_eq!(store.get(id).expect("get").state, CaseState::Rejected);
    let audit = store.audit(id).expect("audit");
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].who, "dr-test");
    assert_eq!(audit[1].from_state, Some(CaseState::Pending));
    assert_eq!(audit[1].to_state, CaseState::Rejected);
}

#[test]
fn correct_needs_saved_mask() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteQaStore::open(dir.path()).expect("store opens");
    let id = store.enqueue(new_case("1.2.3.5", 0, 0)).expect("enqueue");

    let error = store.decide(id, &decision(Action::Correct)).expect_err("no mask yet");
    assert!(matches!(error, QaError::NoCorrection(_)));

    let mut slice = Array2::<u8>::zeros((HEIGHT, WIDTH));
    slice[(3, 4)] = 2;
    store.save_mask_slice(id, 1, slice.view(), "dr-test").expect("save mask");
    let case = store.decide(id, &decision(Action::Correct)).expect("correct");

    assert_eq!(case.state, CaseState::Corrected);
    let mask = final_mask(&store, &case).expect("read").expect("corrected mask exists");
    let unet = synthetic_maps().unet_labels;
    assert_eq!(mask.index_axis(Axis(0), 1), slice.view());
    assert_eq!(mask.index_axis(Axis(0), 0), unet.index_axis(Axis(0), 0), "untouched slices keep the U-Net labels");
}

#[test]
fn mask_on_decided_case_conflicts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteQaStore::open(dir.path()).expect("store opens");
    let id = store.enqueue(new_case("1.2.3.6", 0, 0)).expect("enqueue");
    store.decide(id, &decision(Action::Accept)).expect("accept");

    let slice = Array2::<u8>::zeros((HEIGHT, WIDTH));
    let error = store.save_mask_slice(id, 0, slice.view(), "dr-test").expect_err("accepted is final");

    assert!(matches!(error, QaError::IllegalTransition { .. }));
    assert!(store.mask(id, MaskKind::Corrected).expect("read").is_none());
}

#[test]
fn wrong_mask_shape_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteQaStore::open(dir.path()).expect("store opens");
    let id = store.enqueue(new_case("1.2.3.7", 0, 0)).expect("enqueue");

    let small = Array2::<u8>::zeros((HEIGHT - 1, WIDTH));
    let shape_error = store.save_mask_slice(id, 0, small.view(), "dr-test").expect_err("wrong shape");
    let full = Array2::<u8>::zeros((HEIGHT, WIDTH));
    let slice_error = store.save_mask_slice(id, DEPTH, full.view(), "dr-test").expect_err("slice out of range");

    assert!(matches!(shape_error, QaError::InvalidMask(_)), "{shape_error}");
    assert!(matches!(slice_error, QaError::InvalidMask(_)), "{slice_error}");
    assert!(!store.get(id).expect("get").has_correction);
}

#[test]
fn invalid_study_uid_is_rejected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteQaStore::open(dir.path()).expect("store opens");

    for uid in ["", "../etc", "1.2.3/4", "1..2", "1.2.a"] {
        let error = store.enqueue(new_case(uid, 0, 0)).expect_err("invalid uid");
        assert!(matches!(error, QaError::InvalidCase(_)), "{uid:?}: {error}");
    }
    assert!(store.list(&[]).expect("list").is_empty());
}

#[test]
fn enqueue_writes_case_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteQaStore::open(dir.path()).expect("store opens");
    let id = store.enqueue(new_case("1.2.3.8", 0, 0)).expect("enqueue");
    let case = store.get(id).expect("get");

    assert_eq!(case.dir, dir.path().join("qa").join("1.2.3.8").join(id.to_string()));
    let unet = files::read_npy_u8(&case.dir.join("unet.npy")).expect("unet.npy reads");
    assert_eq!(unet, synthetic_maps().unet_labels);

    let cbf = std::fs::read(case.dir.join("cbf.npy")).expect("cbf.npy exists");
    let header_len = u16::from_le_bytes([cbf[8], cbf[9]]) as usize;
    let header = std::str::from_utf8(&cbf[10..10 + header_len]).expect("ascii header");
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'shape': (3, 32, 40)"), "{header}");
    assert_eq!((10 + header_len) % 64, 0, "data starts on a 64-byte boundary");
    assert_eq!(cbf.len(), 10 + header_len + DEPTH * HEIGHT * WIDTH * 4);

    for z in 0..DEPTH {
        let png = std::fs::read(files::slice_png_path(&case.dir, files::MapKind::Tmax, z)).expect("slice png exists");
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().expect("png decodes");
        assert_eq!((reader.info().width, reader.info().height), (WIDTH as u32, HEIGHT as u32));
    }
}
