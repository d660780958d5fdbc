//! The confidence calibration commands keep fitted and held-out phantom seeds apart:
//! `penumbra calibrate-confidence` rejects an eval file of the held-out seed, and `penumbra eval`
//! rejects a seed that the model's calibration was fitted on. The daemon's stage list stops before
//! resampling when the model folder has an invalid calibration file.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use penumbra::pipeline::{build_stages, Stage, StageResources};

use serde_json::json;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn penumbra(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_penumbra")).args(args).output().expect("penumbra runs")
}

/// Writes an eval file of `seed` with four good and four poor assessable studies and one that is
/// not assessable.
fn write_eval(path: &Path, seed: u64) {
    let study = |dice_component: f64, core_dice: f64, assessable: bool| {
        json!({
            "core_dice": core_dice,
            "confidence": {
                "score": 0.5,
                "assessable": assessable,
                "reasons": [],
                "components": {
                    "entropy": 0.95,
                    "tta_agreement": 0.97,
                    "unet_vs_threshold_dice": dice_component,
                    "plausibility": 1.0,
                    "input_quality": if core_dice < 0.5 { 0.7 } else { 1.0 }
                }
            }
        })
    };
    let studies = vec![
        study(0.6, 0.8, true),
        study(0.5, 0.7, true),
        study(0.45, 0.6, true),
        study(0.3, 0.9, true),
        study(0.2, 0.1, true),
        study(0.15, 0.3, true),
        study(0.35, 0.2, true),
        study(0.25, 0.0, true),
        study(0.1, 0.4, false),
    ];
    let file = json!({"seed": seed, "studies": studies});
    std::fs::write(path, file.to_string()).expect("eval file writes");
}

fn copy_model(to: &Path) {
    let from = repo().join("models/ctp-resunet-v1");
    for name in ["card.json", "model.safetensors"] {
        std::fs::copy(from.join(name), to.join(name)).expect("model file copies");
    }
}

#[test]
fn calibrate_rejects_held_out_seed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let eval = dir.path().join("eval-1001.json");
    write_eval(&eval, 1001);
    let model = dir.path().to_str().expect("utf-8 path");

    let output = penumbra(&["calibrate-confidence", "--eval", eval.to_str().expect("utf-8 path"), "--model", model]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("held-out seed 1001"), "{stderr}");
    assert!(!dir.path().join("confidence-calibration.json").exists());
}

#[test]
fn eval_rejects_fitted_seed() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_model(dir.path());
    let eval = dir.path().join("eval-3001.json");
    write_eval(&eval, 3001);
    let model = dir.path().to_str().expect("utf-8 path");

    let fit = penumbra(&["calibrate-confidence", "--eval", eval.to_str().expect("utf-8 path"), "--model", model]);
    let stdout = String::from_utf8_lossy(&fit.stdout);
    assert!(fit.status.success(), "{}", String::from_utf8_lossy(&fit.stderr));
    assert!(stdout.contains("fitted on 8 assessable studies (4 poor; 1 not assessable left out)"), "{stdout}");

    let calibration: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("confidence-calibration.json")).expect("calibration file"),
    )
    .expect("calibration parses");
    assert_eq!(calibration["fitted_seeds"], json!([3001]));

    let rejected = penumbra(&["eval", "--model", model, "--studies", "1", "--seed", "3001", "--matrix", "128"]);
    assert!(!rejected.status.success());
    let stderr = String::from_utf8_lossy(&rejected.stderr);
    assert!(stderr.contains("the confidence calibration was fitted on"), "{stderr}");
}

#[test]
fn daemon_stages_follow_calibration_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model_dir = dir.path().join("model-dir");
    std::fs::create_dir(&model_dir).expect("model dir");
    copy_model(&model_dir);
    let raw = penumbra::config::parse_raw("model: { path: model-dir }").expect("config parses");
    let settings = raw.validate_in(dir.path()).expect("config is valid");
    let segmenter = penumbra::pipeline::load_segmenter(&settings).expect("model loads");
    let resources = StageResources { segmenter: Some(Arc::new(segmenter)), ..StageResources::default() };
    let names = |stages: Vec<Arc<dyn Stage>>| stages.iter().map(|s| s.name().to_string()).collect::<Vec<_>>();

    let fixed = names(build_stages(&settings, &resources));
    assert_eq!(fixed.len(), 6, "{fixed:?}");

    // An unreadable calibration stops the list before resampling, as a model input mismatch does.
    let file = model_dir.join("confidence-calibration.json");
    std::fs::write(&file, "{}").expect("calibration writes");
    let stopped = names(build_stages(&settings, &resources));
    assert_eq!(stopped, fixed[..2].to_vec());

    let eval = dir.path().join("eval-3001.json");
    write_eval(&eval, 3001);
    let model = model_dir.to_str().expect("utf-8 path");
    let fit = penumbra(&["calibrate-confidence", "--eval", eval.to_str().expect("utf-8 path"), "--model", model]);
    assert!(fit.status.success(), "{}", String::from_utf8_lossy(&fit.stderr));
    assert_eq!(names(build_stages(&settings, &resources)), fixed);
}
