//! Reviewed QA cases as training data. A correction saved through the API reaches the exported
//! labels and a training `Dataset` on the model grid. `penumbra train` takes an exported folder
//! beside phantom studies. Malformed folders fail with typed errors, and old cases are skipped.

mod qa_support;

use std::path::Path;

use ndarray::{s, Array3};
use penumbra::pipeline::resample::{shift_slices, split_channel};
use penumbra::qa::export::{export_labels, ExportMeta};
use penumbra::qa::files::{self, MaskKind};
use penumbra::qa::store::{QaStore, SqliteQaStore};
use penumbra::training::qa_labels::{push_case, read_case, read_qa_labels, QaLabelsError};
use penumbra::training::CHANNELS;
use penumbra_model::{labels_to_model_grid, to_model_grid, Dataset, MODEL_SIZE};
use qa_support::{new_case, synthetic_maps, TestServer, DEPTH, HEIGHT, SPACING_MM, TOKEN, WIDTH};
use reqwest::blocking::Client;
use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;
use serde_json::json;

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Saves slice 1 of case `id` through the API as core in the first five rows and background
/// elsewhere, then decides `correct`.
fn correct_through_api(server: &TestServer, id: i64) {
    let client = Client::new();
    let runs = json!([[2, 5 * WIDTH], [0, WIDTH * (HEIGHT - 5)]]);
    let put = client
        .put(server.url(&format!("/api/cases/{id}/mask/1")))
        .header(AUTHORIZATION, bearer())
        .json(&json!({"width": WIDTH, "height": HEIGHT, "runs": runs}))
        .send()
        .expect("mask request sent");
    assert_eq!(put.status(), StatusCode::NO_CONTENT);

    let decision = client
        .post(server.url(&format!("/api/cases/{id}/decision")))
        .header(AUTHORIZATION, bearer())
        .json(&json!({"action": "correct", "reviewer": "dr-train", "note": "core redrawn"}))
        .send()
        .expect("decision request sent");
    assert_eq!(decision.status(), StatusCode::OK);
}

fn channel_names() -> Vec<String> {
    CHANNELS.iter().map(|c| c.to_string()).collect()
}

/// Exports one corrected case and one accepted case of `data_dir` into `out`.
fn export_two_cases(data_dir: &Path, out: &Path) -> (i64, i64) {
    let server = TestServer::start(data_dir, None);
    let corrected = server.store.enqueue(new_case("1.2.50.1", 0, 0)).expect("enqueue");
    correct_through_api(&server, corrected);
    let accepted = server.store.enqueue(new_case("1.2.50.2", 0, 1)).expect("enqueue");
    server.store.decide(accepted, &decision("accept")).expect("accept");
    drop(server);

    let store = SqliteQaStore::open(data_dir).expect("store opens");
    let summary = export_labels(&store, out).expect("export");
    assert_eq!(summary.exported, 2);
    assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);
    (corrected, accepted)
}

fn decision(action: &str) -> penumbra::qa::store::Decision {
    serde_json::from_value(json!({"action": action, "reviewer": "dr-store"})).expect("decision parses")
}

#[test]
fn corrected_mask_reaches_dataset() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let out = tempfile::tempdir().expect("temp dir");
    let (corrected, _) = export_two_cases(data_dir.path(), out.path());

    let mut expected = synthetic_maps().unet_labels;
    expected.slice_mut(s![1, ..5, ..]).fill(2);
    expected.slice_mut(s![1, 5.., ..]).fill(0);

    let folder = out.path().join(format!("1.2.50.1_{corrected}"));
    let case = read_case(&folder).expect("exported case reads");
    assert_eq!(case.mask, expected, "the export carries the corrected mask");
    assert_eq!(case.meta.decision.as_str(), "corrected");
    assert_eq!(case.meta.reviewer, "dr-train");
    assert_eq!(case.meta.model_version, "unet-test-1");
    assert_eq!(case.meta.spacing_mm, SPACING_MM);
    assert_eq!(case.meta.channels, files::MAP_NAMES.map(String::from).to_vec());
    assert_eq!(case.meta.shape, [DEPTH, HEIGHT, WIDTH]);

    let mut dataset = Dataset::new(channel_names()).expect("dataset");
    push_case(&mut dataset, &case).expect("case joins the dataset");
    assert_eq!(dataset.samples().len(), DEPTH);
    assert_eq!(dataset.shape_yx(), Some([MODEL_SIZE, MODEL_SIZE]));
    assert_eq!(dataset.study_ids(), vec!["qa-1.2.50.1".to_owned()]);

    // The labels on the model grid are the corrected mask resampled as a phantom's truth is.
    let spacing_yx = [SPACING_MM[1], SPACING_MM[2]];
    let (expected_grid, _) = labels_to_model_grid(&expected, spacing_yx).expect("labels resample");
    let (unet_grid, _) = labels_to_model_grid(&synthetic_maps().unet_labels, spacing_yx).expect("labels resample");
    for (z, sample) in dataset.samples().iter().enumerate() {
        assert_eq!(sample.slice_index, z);
        assert_eq!(sample.label, expected_grid.index_axis(ndarray::Axis(0), z), "slice {z} labels");
    }
    assert_ne!(expected_grid.index_axis(ndarray::Axis(0), 1), unet_grid.index_axis(ndarray::Axis(0), 1));

    // The inputs are the stored maps in the model's channel order on the same grid, those of
    // the neighbouring slices included.
    let maps = synthetic_maps();
    let mut stack = ndarray::Array4::<f32>::zeros((CHANNELS.len(), DEPTH, HEIGHT, WIDTH));
    for (index, name) in CHANNELS.iter().enumerate() {
        let (map, offset) = split_channel(name).expect("shipped channel names parse");
        let values = match map.as_str() {
            "cbf" => &maps.cbf,
            "cbv" => &maps.cbv,
            "mtt" => &maps.mtt,
            "tmax" => &maps.tmax,
            "rcbf" => &maps.rcbf,
            "tissue" => &maps.tissue,
            other => panic!("unexpected map {other}"),
        };
        stack.index_axis_mut(ndarray::Axis(0), index).assign(&shift_slices(values, offset));
    }
    let (input_grid, _) = to_model_grid(&stack, spacing_yx).expect("maps resample");
    assert_eq!(dataset.samples()[2].input, input_grid.index_axis(ndarray::Axis(0), 2));
}

#[test]
fn old_case_is_skipped_with_reason() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let out = tempfile::tempdir().expect("temp dir");
    let store = SqliteQaStore::open(data_dir.path()).expect("store opens");
    let old = store.enqueue(new_case("1.2.50.3", 0, 0)).expect("enqueue");
    let current = store.enqueue(new_case("1.2.50.4", 0, 1)).expect("enqueue");

    // A case from before the store kept CBV, MTT and the spacing has only CBF and Tmax.
    let old_dir = store.get(old).expect("get").dir;
    for name in ["cbv.npy", "mtt.npy", files::GRID_FILE] {
        std::fs::remove_file(old_dir.join(name)).expect("file removed");
    }
    store.decide(old, &decision("accept")).expect("accept");
    store.decide(current, &decision("accept_threshold")).expect("accept threshold");
    assert!(store.mask(old, MaskKind::Unet).expect("mask reads").is_some(), "old cases still load");

    let summary = export_labels(&store, out.path()).expect("export");
    assert_eq!(summary.exported, 1);
    assert_eq!(summary.skipped.len(), 1);
    assert_eq!(summary.skipped[0].case_id, old);
    let reason = &summary.skipped[0].reason;
    assert!(reason.contains("cbv.npy, mtt.npy, grid.json"), "{reason}");
    assert!(reason.contains("training"), "{reason}");
    assert!(!out.path().join(format!("1.2.50.3_{old}")).exists());

    let cases = read_qa_labels(out.path()).expect("exported folder reads");
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].mask, synthetic_maps().threshold_labels, "accepted_threshold exports the threshold labels");
}

/// Returns the only case folder under `out`.
fn only_folder(out: &Path) -> std::path::PathBuf {
    let mut folders: Vec<_> = std::fs::read_dir(out).expect("out dir").map(|e| e.expect("entry").path()).collect();
    assert_eq!(folders.len(), 1);
    folders.remove(0)
}

fn export_one_case(data_dir: &Path, out: &Path) -> std::path::PathBuf {
    let store = SqliteQaStore::open(data_dir).expect("store opens");
    let id = store.enqueue(new_case("1.2.50.5", 0, 0)).expect("enqueue");
    store.decide(id, &decision("accept")).expect("accept");
    assert_eq!(export_labels(&store, out).expect("export").exported, 1);
    only_folder(out)
}

fn rewrite_meta(folder: &Path, change: impl FnOnce(&mut serde_json::Value)) {
    let path = folder.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("meta reads")).expect("meta parses");
    change(&mut meta);
    std::fs::write(&path, meta.to_string()).expect("meta writes");
}

#[test]
fn malformed_folders_are_rejected() {
    let empty = tempfile::tempdir().expect("temp dir");
    assert!(matches!(read_qa_labels(empty.path()), Err(QaLabelsError::Empty(_))));
    let absent = empty.path().join("absent");
    assert!(matches!(read_qa_labels(&absent), Err(QaLabelsError::ReadFolder { .. })));

    let data_dir = tempfile::tempdir().expect("temp dir");
    let out = tempfile::tempdir().expect("temp dir");
    let folder = export_one_case(data_dir.path(), out.path());
    let meta: ExportMeta =
        serde_json::from_str(&std::fs::read_to_string(folder.join("meta.json")).expect("meta")).expect("meta parses");
    assert_eq!(meta.format_version, 1);
    read_qa_labels(out.path()).expect("a fresh export reads");

    rewrite_meta(&folder, |m| m["format_version"] = json!(2));
    let error = read_qa_labels(out.path()).expect_err("version 2");
    assert!(matches!(error, QaLabelsError::UnsupportedVersion { found: 2, expected: 1, .. }), "{error}");

    rewrite_meta(&folder, |m| {
        m["format_version"] = json!(1);
        m["spacing_mm"] = json!([5.0, 0.0, 0.9]);
    });
    let error = read_qa_labels(out.path()).expect_err("zero spacing");
    assert!(matches!(error, QaLabelsError::InvalidMeta { .. }), "{error}");
    assert!(error.to_string().contains("spacing_mm"), "{error}");

    rewrite_meta(&folder, |m| {
        m["spacing_mm"] = json!(SPACING_MM);
        m["channels"] = json!(["cbf", "tmax"]);
    });
    let case = read_case(&folder).expect("a two-channel case reads");
    let mut dataset = Dataset::new(channel_names()).expect("dataset");
    let error = push_case(&mut dataset, &case).expect_err("cbv is not listed");
    assert!(matches!(&error, QaLabelsError::MissingChannel { channel, .. } if channel == "cbv"), "{error}");

    rewrite_meta(&folder, |m| m["channels"] = json!(["cbf", "cbv", "mtt", "tmax"]));
    files::write_npy_u8(&folder.join("mask.npy"), &Array3::zeros((DEPTH, HEIGHT, WIDTH + 1))).expect("mask writes");
    let error = read_qa_labels(out.path()).expect_err("mask shape");
    assert!(matches!(error, QaLabelsError::InvalidArray { .. }), "{error}");
    assert!(error.to_string().contains("differs from meta.json shape"), "{error}");

    files::write_npy_u8(&folder.join("mask.npy"), &Array3::from_elem((DEPTH, HEIGHT, WIDTH), 3)).expect("mask writes");
    let error = read_qa_labels(out.path()).expect_err("label 3");
    assert!(error.to_string().contains("label value 3"), "{error}");

    std::fs::remove_file(folder.join("mtt.npy")).expect("mtt removed");
    let error = read_qa_labels(out.path()).expect_err("missing map");
    assert!(matches!(&error, QaLabelsError::MissingFile { file, .. } if file == "mtt.npy"), "{error}");
}

#[test]
fn train_takes_exported_cases() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let labels = tempfile::tempdir().expect("temp dir");
    let model = tempfile::tempdir().expect("temp dir");
    export_two_cases(data_dir.path(), labels.path());

    // The sizes of the in-memory training in the model evaluation test: two 128x128x4 phantoms,
    // a width-4, depth-2 U-Net and one epoch of 64-pixel patches.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["train", "--studies", "2", "--matrix", "128", "--slices", "4", "--epochs", "1"])
        .args(["--width", "4", "--depth", "2", "--patch", "64", "--batch", "4", "--no-resume"])
        .arg("--qa-labels")
        .arg(labels.path())
        .arg("--out")
        .arg(model.path())
        .output()
        .expect("penumbra runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "penumbra train failed: {stderr}");
    assert!(stderr.contains("qa case"), "{stderr}");

    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.path().join("card.json")).expect("card.json")).expect("card parses");
    let training = &card["training"];
    assert!(training["data"].as_str().is_some_and(|d| d.contains("2 reviewed QA cases")), "{training}");
    let studies: Vec<&str> = ["training_studies", "validation_studies"]
        .iter()
        .flat_map(|key| training[key].as_array().expect("study list").iter().filter_map(|v| v.as_str()))
        .collect();
    assert!(studies.contains(&"qa-1.2.50.1"), "{studies:?}");
    assert!(studies.contains(&"qa-1.2.50.2"), "{studies:?}");
    assert_eq!(studies.len(), 4, "two phantom and two reviewed studies: {studies:?}");
    assert!(model.path().join("model.safetensors").exists());

    let missing = tempfile::tempdir().expect("temp dir");
    let failed = std::process::Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["train", "--studies", "0", "--qa-labels"])
        .arg(missing.path())
        .arg("--out")
        .arg(model.path().join("never"))
        .output()
        .expect("penumbra runs");
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("contains no case folders"), "{stderr}");
}
