//! The decision-threshold commands keep fitted and held-out phantom seeds apart:
//! `penumbra fit-thresholds` rejects the held-out and training seeds, and `penumbra eval` rejects
//! the seed the shipped model's thresholds were fitted on unless `--argmax` is given. Both reject
//! a tube current that is not positive, `penumbra eval` an unknown kind of study, and
//! `fit-thresholds` a fit on one kind of study that would be written to the model folder.

use std::path::PathBuf;
use std::process::Output;

fn shipped_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/ctp-resunet-v1")
}

/// Copies the shipped weights and card, without fitted thresholds, into a temporary folder.
fn model_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["card.json", "model.safetensors"] {
        std::fs::copy(shipped_model().join(name), dir.path().join(name)).expect("model file copies");
    }
    dir
}

fn penumbra(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_penumbra")).args(args).output().expect("penumbra runs")
}

#[test]
fn fit_rejects_held_out_and_training_seeds() {
    let dir = model_copy();
    let model = dir.path().to_str().expect("utf-8 path");

    let held_out = penumbra(&["fit-thresholds", "--model", model, "--seed", "1001", "--studies", "6"]);
    assert!(!held_out.status.success());
    let stderr = String::from_utf8_lossy(&held_out.stderr);
    assert!(stderr.contains("held-out seed 1001"), "{stderr}");

    // The shipped model was trained on seed 1.
    let training = penumbra(&["fit-thresholds", "--model", model, "--seed", "1", "--studies", "6"]);
    assert!(!training.status.success());
    let stderr = String::from_utf8_lossy(&training.stderr);
    assert!(stderr.contains("training"), "{stderr}");

    let too_few = penumbra(&["fit-thresholds", "--model", model, "--studies", "2"]);
    assert!(!too_few.status.success());
    assert!(String::from_utf8_lossy(&too_few.stderr).contains("at least 6"));
    assert!(!dir.path().join("decision-thresholds.json").exists());
}

#[test]
fn eval_rejects_the_fitted_seed() {
    let model = shipped_model();
    let model = model.to_str().expect("utf-8 path");
    let text = std::fs::read_to_string(shipped_model().join("decision-thresholds.json")).expect("shipped thresholds");
    let fitted: serde_json::Value = serde_json::from_str(&text).expect("thresholds are JSON");
    let seed = fitted["fitted_seed"].as_u64().expect("fitted seed").to_string();

    let output = penumbra(&["eval", "--model", model, "--seed", &seed, "--studies", "1", "--matrix", "128"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("decision thresholds were fitted on"), "{stderr}");
    assert!(stderr.contains("--argmax"), "{stderr}");
}

#[test]
fn eval_and_fit_reject_bad_study_sets() {
    let model = shipped_model();
    let model = model.to_str().expect("utf-8 path");

    let no_current = penumbra(&["eval", "--model", model, "--studies", "1", "--noise-mas", "0"]);
    assert!(!no_current.status.success());
    let stderr = String::from_utf8_lossy(&no_current.stderr);
    assert!(stderr.contains("invalid --noise-mas 0"), "{stderr}");

    let unknown_case = penumbra(&["eval", "--model", model, "--studies", "1", "--cases", "standard,noisy"]);
    assert!(!unknown_case.status.success());
    let stderr = String::from_utf8_lossy(&unknown_case.stderr);
    assert!(stderr.contains("noisy"), "{stderr}");
    assert!(stderr.contains("high_noise"), "the error lists the kinds: {stderr}");

    // A copy, so that a fit that wrongly runs cannot write into the shipped model folder.
    let dir = model_copy();
    let model = dir.path().to_str().expect("utf-8 path");

    let fit_current = penumbra(&["fit-thresholds", "--model", model, "--studies", "6", "--noise-mas=-5", "--dry-run"]);
    assert!(!fit_current.status.success());
    let stderr = String::from_utf8_lossy(&fit_current.stderr);
    assert!(stderr.contains("invalid --noise-mas -5"), "{stderr}");

    let written_subset = penumbra(&["fit-thresholds", "--model", model, "--studies", "6", "--mix", "standard"]);
    assert!(!written_subset.status.success());
    let stderr = String::from_utf8_lossy(&written_subset.stderr);
    assert!(stderr.contains("need --dry-run"), "{stderr}");
}
