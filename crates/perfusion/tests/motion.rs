//! Motion measurement and correction against known rigid motion of the phantom head.
//!
//! The phantom moves a block of frames by a translation (and optionally a yaw about the head
//! centre) and resamples them trilinearly. [`InputQuality::motion_mm`] must report how far the
//! head moved, the correction must leave little of it, and the corrected maps must come close
//! to the maps of the same study without motion. The noise is drawn from its own stream, so a
//! moved study and its still twin differ only by the motion.

use penumbra_perfusion::{compute_maps, PerfusionParams, PerfusionResult};
use penumbra_phantom::{generate, Matrix, Motion, Noise, PhantomParams};

/// Returns the maps of a 4-slice phantom moved by `translation_mm` and `yaw_deg` in frames 20
/// to 29, with motion correction on or off.
fn maps(matrix: Matrix, translation_mm: [f64; 3], yaw_deg: f64, correction: bool) -> PerfusionResult {
    let moved = translation_mm.iter().any(|&v| v != 0.0) || yaw_deg != 0.0;
    let params = PhantomParams {
        seed: 5,
        matrix,
        slices: 4,
        noise: Noise::MilliAmpSeconds(150.0),
        motion: moved.then_some(Motion {
            first_frame: 20,
            frame_count: 10,
            translation_mm,
            yaw_deg,
        }),
        ..PhantomParams::default()
    };
    let study = generate(&params).unwrap();
    let perfusion = PerfusionParams {
        motion_correction: correction,
        ..PerfusionParams::default()
    };
    let result = compute_maps(&study.volume, &perfusion).unwrap();
    let quality = &result.quality;
    eprintln!(
        "translation {translation_mm:?} mm, yaw {yaw_deg} degrees, correction {correction}: motion {:.2} mm, {} frames corrected, residual {:?} mm",
        quality.motion_mm, quality.motion_corrected_frames, quality.residual_motion_mm
    );
    result
}

#[test]
fn still_head_has_no_motion() {
    let quality = maps(Matrix::M128, [0.0; 3], 0.0, true).quality;
    assert!(quality.motion_mm < 0.5, "motion {} mm", quality.motion_mm);
    assert_eq!(quality.motion_corrected_frames, 0);
    assert_eq!(quality.residual_motion_mm, None);
}

#[test]
fn translation_is_measured_and_corrected() {
    for (translation, expected) in [
        ([3.0, -2.0, 0.0], 13f64.sqrt()),
        ([0.0, 5.0, 0.0], 5.0),
        ([1.0, 0.0, 0.0], 1.0),
    ] {
        let quality = maps(Matrix::M128, translation, 0.0, true).quality;
        assert!(
            (quality.motion_mm - expected).abs() < 0.5,
            "translation {translation:?}: {} mm, expected {expected}",
            quality.motion_mm
        );
        assert_eq!(quality.motion_corrected_frames, 10);
        let residual = quality.residual_motion_mm.expect("frames were corrected");
        assert!(residual < 0.5, "translation {translation:?}: {residual} mm left");
    }
}

#[test]
fn translation_with_yaw_on_fine_grid() {
    // The evaluation's motion case: 3.6 mm of translation and a 2 degree yaw about the head
    // centre. The yaw moves the rim of a head of about 85 mm radius by a further 3 mm.
    let quality = maps(Matrix::M256, [3.0, -2.0, 0.0], 2.0, true).quality;
    assert!(
        (4.6..7.5).contains(&quality.motion_mm),
        "motion {} mm",
        quality.motion_mm
    );
    let residual = quality.residual_motion_mm.expect("frames were corrected");
    assert!(residual < 0.6, "{residual} mm left");
}

#[test]
fn corrected_maps_match_the_still_study() {
    // Dice of the voxels with Tmax above 6 s against the still study's, over the voxels in both
    // brain masks: how much of the hypoperfused region survives the motion.
    let still = maps(Matrix::M128, [0.0; 3], 0.0, true).maps;
    let agreement = |result: PerfusionResult| {
        let (mut both, mut total) = (0usize, 0usize);
        for ((&a, &b), (&in_a, &in_b)) in still
            .tmax
            .iter()
            .zip(&result.maps.tmax)
            .zip(still.brain_mask.iter().zip(&result.maps.brain_mask))
        {
            if in_a && in_b {
                let (late_a, late_b) = (a > 6.0, b > 6.0);
                both += (late_a && late_b) as usize;
                total += late_a as usize + late_b as usize;
            }
        }
        2.0 * both as f64 / total as f64
    };
    let uncorrected = agreement(maps(Matrix::M128, [3.0, -2.0, 0.0], 2.0, false));
    let corrected = agreement(maps(Matrix::M128, [3.0, -2.0, 0.0], 2.0, true));
    eprintln!("Tmax > 6 s Dice against the still study: {uncorrected:.3} uncorrected, {corrected:.3} corrected");
    assert!(
        corrected > 0.74 && corrected > uncorrected + 0.07,
        "Dice {corrected:.3} corrected, {uncorrected:.3} uncorrected"
    );
}
