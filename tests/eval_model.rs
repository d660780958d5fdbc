//! The model evaluation end to end: a small U-Net trained for one epoch on two phantoms runs
//! through the daemon's resample, infer and confidence stages on held-out phantoms, and its
//! scores agree with one another.
//!
//! The model is far too small and short-trained to segment well, so these tests check the
//! bookkeeping of the evaluation (which labels are compared with which), not its accuracy.

use std::sync::Arc;

use penumbra::evaluation::{calibration, class, evaluate_model_study, held_out_params, run_phantom, Case};
use penumbra::training::{process_study, push_study, study_params, CHANNELS};
use penumbra_model::{train, Dataset, Norm, Segmenter, TrainConfig, UNetConfig};
use penumbra_phantom::Matrix;

/// Phantom slices in these tests, fewer than the 16 of the defaults to keep them fast.
const SLICES: usize = 4;

fn tiny_segmenter() -> Arc<Segmenter> {
    let names: Vec<String> = CHANNELS.iter().map(|c| c.to_string()).collect();
    let mut dataset = Dataset::new(names).unwrap();
    for index in 0..2 {
        let mut params = study_params(7, index);
        params.matrix = Matrix::M128;
        params.slices = SLICES;
        let study = process_study(&params).unwrap();
        push_study(&mut dataset, &study).unwrap();
    }

    let architecture = UNetConfig {
        in_channels: CHANNELS.len(),
        base_width: 4,
        depth: 2,
        residual: true,
        norm: Norm::Group { groups: 4 },
        ..UNetConfig::default()
    };
    let config = TrainConfig { epochs: 1, batch_size: 4, patch_size: 64, validation_fraction: 0.5, ..TrainConfig::default() };
    let outcome = train(&architecture, &dataset, &config).unwrap();
    Arc::new(outcome.segmenter().unwrap())
}

#[test]
fn model_evaluation_scores_agree() {
    let segmenter = tiny_segmenter();

    let mut studies = Vec::new();
    for index in [0, 5] {
        let (case, mut params) = held_out_params(1001, index, Matrix::M128);
        params.slices = SLICES;
        let run = run_phantom(&params).unwrap();
        let truth_core_ml = run.truth.labels.iter().filter(|&&v| v == 2).count() as f64
            * run.result.maps.geometry.voxel_volume_ml();
        let study = evaluate_model_study(case, run, &segmenter, 2).unwrap();

        for scores in [&study.unet, &study.threshold, &study.agreement] {
            let names: Vec<&str> = scores.iter().map(|s| s.class.as_str()).collect();
            assert_eq!(names, ["core", "penumbra", "hypoperfused"]);
        }

        // The agreement compares the U-Net with the thresholds, so its volumes are theirs.
        let unet_core = class(&study.unet, "core").unwrap();
        let threshold_core = class(&study.threshold, "core").unwrap();
        let agreement_core = class(&study.agreement, "core").unwrap();
        assert!((agreement_core.predicted_ml - unet_core.predicted_ml).abs() < 1e-9);
        assert!((agreement_core.reference_ml - threshold_core.predicted_ml).abs() < 1e-9);
        assert!((unet_core.reference_ml - truth_core_ml).abs() < 1e-9, "truth core {truth_core_ml} mL");

        assert_eq!(study.core_dice, unet_core.dice.unwrap_or(1.0));
        assert!((0.0..=1.0).contains(&study.confidence.score), "score {}", study.confidence.score);
        assert!(study.confidence.components.contains_key("tta_agreement"), "the infer stage ran with TTA");
        studies.push(study);
    }

    assert_eq!(studies[0].case, Case::Standard);
    assert_eq!(studies[1].case, Case::NoLesion);
    assert_eq!(class(&studies[1].unet, "core").unwrap().reference_ml, 0.0, "no true core without a lesion");

    let summary = calibration(&studies, 0.7);
    assert_eq!(summary.cases, 2);
    let flagged = studies.iter().filter(|s| s.confidence.score < 0.7).count();
    assert_eq!(summary.flagged_fraction, flagged as f64 / 2.0);
}

#[test]
fn ablation_trains_every_variant() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("ablation.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["ablate", "--studies", "2", "--epochs", "1", "--width", "4", "--depth", "2", "--patch", "64"])
        .args(["--eval-studies", "1", "--eval-matrix", "128", "--slices", "4"])
        .args(["--variants", "residual-tversky,plain-dice", "--out"])
        .arg(out.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| variant")).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows[0].starts_with("| residual-tversky |"), "{stdout}");
    assert!(rows[1].starts_with("| plain-dice |"), "{stdout}");
    assert!(rows[2].starts_with("| threshold labels"), "{stdout}");
    for variant in ["residual-tversky", "plain-dice"] {
        assert!(out.path().join(variant).join("model.safetensors").is_file(), "{variant} model missing");
    }

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let variants = report["variants"].as_array().unwrap();
    assert_eq!(variants[0]["variant"]["residual"], true);
    assert_eq!(variants[1]["variant"]["residual"], false);
    assert_ne!(variants[0]["best_validation_loss"], variants[1]["best_validation_loss"]);
}

#[test]
fn ablation_rejects_unknown_loss() {
    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_penumbra"))
        .args(["ablate", "--variants", "residual-l1", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown loss \"l1\""));
}
