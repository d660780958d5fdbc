//! Confidence scoring on small volumes whose expected values were worked out by hand.

use ndarray::{Array3, Array4};
use penumbra::confidence::{score, ConfidenceInputs, ConfidenceParams, InputQuality, LesionVolumes};

const TOLERANCE: f64 = 1e-6;

fn good_quality() -> InputQuality {
    InputQuality {
        bolus_truncated: false,
        aif_peak_hu: Some(300.0),
        aif_time_to_peak_s: Some(18.0),
        noise_sd_hu: 8.0,
        motion_mm: 0.5,
        baseline_frames: 6,
    }
}

fn plausible_volumes() -> LesionVolumes {
    LesionVolumes { core_ml: 10.0, hypoperfused_ml: 30.0 }
}

/// Builds `(3, 1, 1, n)` probabilities from one class distribution per voxel along x.
fn probabilities(voxels: &[[f32; 3]]) -> Array4<f32> {
    Array4::from_shape_fn((3, 1, 1, voxels.len()), |(class, _, _, x)| voxels[x][class])
}

fn labels(values: &[u8]) -> Array3<u8> {
    Array3::from_shape_vec((1, 1, values.len()), values.to_vec()).expect("shape matches length")
}

fn params(margin_voxels: usize) -> ConfidenceParams {
    ConfidenceParams { margin_voxels, ..ConfidenceParams::default() }
}

const CERTAIN_CORE: [f32; 3] = [0.0, 0.0, 1.0];
const UNIFORM: [f32; 3] = [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0];

#[test]
fn components_without_tta_match_hand_values() {
    // Region = voxels 0 and 1 (margin 0). Entropy: 0 at voxel 0, ln 3 at voxel 1, so the mean
    // normalised entropy is 0.5 and the component 0.5. Lesion Dice: U-Net {0, 1}, thresholds {0}
    // gives 2/3; core Dice: {0} and {0} gives 1; mean 5/6. Weighted model score without TTA:
    // (0.35 * 0.5 + 0.30 * 5/6 + 0.20 * 1) / 0.85 = 0.625 / 0.85.
    let p = probabilities(&[CERTAIN_CORE, UNIFORM, CERTAIN_CORE, CERTAIN_CORE]);
    let unet = labels(&[2, 1, 0, 0]);
    let threshold = labels(&[2, 0, 0, 0]);
    let inputs = ConfidenceInputs {
        probabilities: &p,
        tta_probabilities: None,
        unet_labels: &unet,
        threshold_labels: &threshold,
        volumes: plausible_volumes(),
        quality: good_quality(),
        params: params(0),
    };

    let confidence = score(&inputs);

    assert!((confidence.components["entropy"] - 0.5).abs() < TOLERANCE);
    assert!((confidence.components["unet_vs_threshold_dice"] - 5.0 / 6.0).abs() < TOLERANCE);
    assert!((confidence.components["plausibility"] - 1.0).abs() < TOLERANCE);
    assert!((confidence.components["input_quality"] - 1.0).abs() < TOLERANCE);
    assert!(!confidence.components.contains_key("tta_agreement"));
    assert!((confidence.score - 0.625 / 0.85).abs() < TOLERANCE, "score {}", confidence.score);
    assert!(confidence.assessable);
}

#[test]
fn tta_disagreement_enters_score() {
    // Flipped probabilities differ at voxel 0 only: TV distance 0.5 * (0 + 0.5 + 0.5) = 0.5, and
    // 0 at voxel 1, so the mean is 0.25 and the agreement 0.75. With all four weights:
    // 0.35 * 0.5 + 0.15 * 0.75 + 0.30 * 5/6 + 0.20 * 1 = 0.7375.
    let p = probabilities(&[CERTAIN_CORE, UNIFORM, CERTAIN_CORE, CERTAIN_CORE]);
    let tta = probabilities(&[[0.0, 0.5, 0.5], UNIFORM, [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]);
    let unet = labels(&[2, 1, 0, 0]);
    let threshold = labels(&[2, 0, 0, 0]);
    let inputs = ConfidenceInputs {
        probabilities: &p,
        tta_probabilities: Some(&tta),
        unet_labels: &unet,
        threshold_labels: &threshold,
        volumes: plausible_volumes(),
        quality: good_quality(),
        params: params(0),
    };

    let confidence = score(&inputs);

    assert!((confidence.components["tta_agreement"] - 0.75).abs() < TOLERANCE);
    assert!((confidence.score - 0.7375).abs() < TOLERANCE, "score {}", confidence.score);
}

#[test]
fn margin_widens_entropy_region() {
    // Lesion at voxel 2 only. Margin 1 takes voxels 1..=3: uniform, certain, uniform, so the mean
    // normalised entropy is 2/3 and the component 1/3. Voxels 0 and 4 (uniform) stay outside.
    let p = probabilities(&[UNIFORM, UNIFORM, CERTAIN_CORE, UNIFORM, UNIFORM]);
    let unet = labels(&[0, 0, 2, 0, 0]);
    let inputs = ConfidenceInputs {
        probabilities: &p,
        tta_probabilities: None,
        unet_labels: &unet,
        threshold_labels: &unet,
        volumes: plausible_volumes(),
        quality: good_quality(),
        params: params(1),
    };

    let confidence = score(&inputs);

    assert!((confidence.components["entropy"] - 1.0 / 3.0).abs() < TOLERANCE);
    assert!((confidence.components["unet_vs_threshold_dice"] - 1.0).abs() < TOLERANCE);
}

#[test]
fn input_quality_multiplies_ramps() {
    // AIF 100 HU: (100 - 50) / 100 = 0.5. Noise 30 HU: 1 - (30 - 15) / 30 = 0.5. Motion 3 mm:
    // 1 - (3 - 1) / 4 = 0.5. Two baseline frames of four: 0.5. Truncated with a peak: 0.7.
    // Product 0.04375; the model score is 1 (certain, identical labels), so the score is 0.04375.
    let p = probabilities(&[CERTAIN_CORE, CERTAIN_CORE]);
    let unet = labels(&[2, 2]);
    let quality = InputQuality {
        bolus_truncated: true,
        aif_peak_hu: Some(100.0),
        aif_time_to_peak_s: Some(40.0),
        noise_sd_hu: 30.0,
        motion_mm: 3.0,
        baseline_frames: 2,
    };
    let inputs = ConfidenceInputs {
        probabilities: &p,
        tta_probabilities: None,
        unet_labels: &unet,
        threshold_labels: &unet,
        volumes: plausible_volumes(),
        quality,
        params: params(0),
    };

    let confidence = score(&inputs);

    assert!((confidence.components["input_quality"] - 0.04375).abs() < TOLERANCE);
    assert!((confidence.score - 0.04375).abs() < TOLERANCE, "score {}", confidence.score);
    assert!(confidence.assessable);
    assert_eq!(confidence.reasons.len(), 5, "reasons: {:?}", confidence.reasons);
}

#[test]
fn implausible_volumes_lower_plausibility() {
    let cases = [
        (LesionVolumes { core_ml: 50.0, hypoperfused_ml: 40.0 }, 0.5),
        (LesionVolumes { core_ml: 10.0, hypoperfused_ml: 800.0 }, 0.5),
        (LesionVolumes { core_ml: 900.0, hypoperfused_ml: 800.0 }, 0.0),
        (LesionVolumes { core_ml: 0.0, hypoperfused_ml: 0.0 }, 1.0),
    ];
    let p = probabilities(&[CERTAIN_CORE]);
    let unet = labels(&[2]);
    for (volumes, expected) in cases {
        let inputs = ConfidenceInputs {
            probabilities: &p,
            tta_probabilities: None,
            unet_labels: &unet,
            threshold_labels: &unet,
            volumes,
            quality: good_quality(),
            params: params(0),
        };
        let confidence = score(&inputs);
        assert!(
            (confidence.components["plausibility"] - expected).abs() < TOLERANCE,
            "{volumes:?}: {}",
            confidence.components["plausibility"]
        );
    }
}

#[test]
fn unusable_input_is_not_assessable() {
    let p = probabilities(&[CERTAIN_CORE]);
    let unet = labels(&[2]);
    let no_aif = InputQuality { aif_peak_hu: None, ..good_quality() };
    let weak_aif = InputQuality { aif_peak_hu: Some(20.0), ..good_quality() };
    let severe_truncation = InputQuality { bolus_truncated: true, aif_time_to_peak_s: None, ..good_quality() };
    let motion = InputQuality { motion_mm: 6.0, ..good_quality() };

    for (quality, reason_word) in
        [(no_aif, "arterial"), (weak_aif, "arterial"), (severe_truncation, "truncation"), (motion, "motion")]
    {
        let inputs = ConfidenceInputs {
            probabilities: &p,
            tta_probabilities: None,
            unet_labels: &unet,
            threshold_labels: &unet,
            volumes: plausible_volumes(),
            quality,
            params: params(0),
        };
        let confidence = score(&inputs);
        assert!(!confidence.assessable, "{quality:?}");
        assert_eq!(confidence.score, 0.0, "{quality:?}");
        assert!(
            confidence.reasons.iter().any(|r| r.contains(reason_word)),
            "{quality:?}: reasons {:?}",
            confidence.reasons
        );
    }
}

#[test]
fn empty_labels_use_whole_volume() {
    // No lesion anywhere: Dice counts as 1, and the entropy mean covers all voxels
    // (certain, uniform), so the component is 0.5.
    let p = probabilities(&[[1.0, 0.0, 0.0], UNIFORM]);
    let empty = labels(&[0, 0]);
    let inputs = ConfidenceInputs {
        probabilities: &p,
        tta_probabilities: None,
        unet_labels: &empty,
        threshold_labels: &empty,
        volumes: LesionVolumes { core_ml: 0.0, hypoperfused_ml: 0.0 },
        quality: good_quality(),
        params: params(2),
    };

    let confidence = score(&inputs);

    assert!((confidence.components["entropy"] - 0.5).abs() < TOLERANCE);
    assert!((confidence.components["unet_vs_threshold_dice"] - 1.0).abs() < TOLERANCE);
}

#[test]
fn mismatched_shapes_do_not_panic() {
    let p = probabilities(&[CERTAIN_CORE, CERTAIN_CORE, CERTAIN_CORE]);
    let unet = labels(&[2, 2]);
    let inputs = ConfidenceInputs {
        probabilities: &p,
        tta_probabilities: None,
        unet_labels: &unet,
        threshold_labels: &unet,
        volumes: plausible_volumes(),
        quality: good_quality(),
        params: params(0),
    };

    let confidence = score(&inputs);

    assert_eq!(confidence.components["entropy"], 0.0);
    assert!(confidence.reasons.iter().any(|r| r.contains("shape")), "{:?}", confidence.reasons);
    // Only plausibility (weight 0.2, value 1) is above zero: 0.2 / 0.85.
    assert!((confidence.score - 0.2 / 0.85).abs() < TOLERANCE, "score {}", confidence.score);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn any_probability() -> impl Strategy<Value = f32> {
        prop_oneof![4 => 0.0f32..=1.0, 1 => Just(f32::NAN), 1 => Just(-0.5f32), 1 => Just(2.0f32)]
    }

    proptest! {
        #[test]
        fn score_stays_in_unit_interval(
            values in proptest::collection::vec(any_probability(), 3 * 2 * 3 * 3),
            flipped in proptest::collection::vec(any_probability(), 3 * 2 * 3 * 3),
            unet in proptest::collection::vec(0u8..=2, 2 * 3 * 3),
            threshold in proptest::collection::vec(0u8..=2, 2 * 3 * 3),
            core_ml in -10.0f64..2000.0,
            hypoperfused_ml in -10.0f64..2000.0,
            aif_peak_hu in proptest::option::of(-100.0f64..600.0),
            noise_sd_hu in prop_oneof![0.0f64..80.0, Just(f64::NAN), Just(f64::INFINITY)],
            motion_mm in prop_oneof![0.0f64..10.0, Just(f64::NAN)],
            baseline_frames in 0usize..10,
            bolus_truncated in any::<bool>(),
            margin_voxels in 0usize..4,
        ) {
            let p = Array4::from_shape_vec((3, 2, 3, 3), values).expect("shape");
            let q = Array4::from_shape_vec((3, 2, 3, 3), flipped).expect("shape");
            let unet = Array3::from_shape_vec((2, 3, 3), unet).expect("shape");
            let threshold = Array3::from_shape_vec((2, 3, 3), threshold).expect("shape");
            let inputs = ConfidenceInputs {
                probabilities: &p,
                tta_probabilities: Some(&q),
                unet_labels: &unet,
                threshold_labels: &threshold,
                volumes: LesionVolumes { core_ml, hypoperfused_ml },
                quality: InputQuality {
                    bolus_truncated,
                    aif_peak_hu,
                    aif_time_to_peak_s: Some(20.0),
                    noise_sd_hu,
                    motion_mm,
                    baseline_frames,
                },
                params: params(margin_voxels),
            };

            let confidence = score(&inputs);

            prop_assert!((0.0..=1.0).contains(&confidence.score), "score {}", confidence.score);
            for (name, value) in &confidence.components {
                prop_assert!((0.0..=1.0).contains(value), "{name} = {value}");
            }
            if !confidence.assessable {
                prop_assert_eq!(confidence.score, 0.0);
                prop_assert!(!confidence.reasons.is_empty());
            }
        }
    }
}
