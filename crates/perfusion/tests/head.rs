//! A two-hemisphere head-like volume with a left MCA-like lesion, 8 HU noise per frame.
//!
//! 96 x 96 x 4 voxels of 2 x 2 x 5 mm, 60 frames at 1 s. Skull (1000 HU) around an elliptical
//! brain: grey matter shell (CBF 60, CBV 4) over white matter (CBF 25, CBV 2), two CSF
//! ventricles, arteries on both sides and a posterior sinus. In the left hemisphere: core
//! (CBF 4.5 / 2.5, delay 9 s) inside penumbra (45 % CBF, delay 7 s) inside a benign oligemia
//! shell (85 % CBF, delay 2.5 s). Truth follows the clinical definitions on the true maps:
//! core = CBF / median contralateral CBF < 0.30, hypoperfused = delay > 6 s (no dispersion).

mod common;

use common::{default_aif, tissue_curve, vof_curve, Builder};
use ndarray::Array3;
use penumbra_perfusion::eval::{dice, volume_error};
use penumbra_perfusion::{compute_maps, label, LabelParams, PerfusionParams, ReferenceMethod};

const FRAMES: usize = 60;
const SHAPE: [usize; 3] = [4, 96, 96];
const SPACING: [f64; 3] = [5.0, 2.0, 2.0];

#[derive(Clone, Copy, PartialEq)]
enum Tissue {
    Air,
    Bone,
    Csf,
    Artery,
    Sinus,
    Brain { grey: bool, zone: Zone },
}

#[derive(Clone, Copy, PartialEq)]
enum Zone {
    Normal,
    Oligemia,
    Penumbra,
    Core,
}

/// Position of voxel `(z, y, x)` in mm from the volume centre.
fn position(z: usize, y: usize, x: usize) -> (f64, f64, f64) {
    let c = |i: usize, n: usize, s: f64| (i as f64 - (n as f64 - 1.0) / 2.0) * s;
    (
        c(z, SHAPE[0], SPACING[0]),
        c(y, SHAPE[1], SPACING[1]),
        c(x, SHAPE[2], SPACING[2]),
    )
}

fn inside(p: (f64, f64, f64), centre: (f64, f64, f64), semi: (f64, f64, f64)) -> bool {
    ((p.0 - centre.0) / semi.0).powi(2)
        + ((p.1 - centre.1) / semi.1).powi(2)
        + ((p.2 - centre.2) / semi.2).powi(2)
        <= 1.0
}

fn tissue_at(z: usize, y: usize, x: usize) -> Tissue {
    let p = position(z, y, x);
    let (pz, py, px) = p;
    let brain_r = ((py / 70.0).powi(2) + (px / 58.0).powi(2)).sqrt();
    let skull_r = ((py / 77.0).powi(2) + (px / 65.0).powi(2)).sqrt();
    if brain_r > 1.0 {
        return if skull_r <= 1.0 {
            Tissue::Bone
        } else {
            Tissue::Air
        };
    }

    // Arteries: 2x2-voxel columns 12 mm anterior of centre, 16 mm either side; sinus: 3x3
    // voxels at the posterior midline just inside the skull.
    if (py + 12.0).abs() <= 2.0 && ((px - 16.0).abs() <= 2.0 || (px + 16.0).abs() <= 2.0) {
        return Tissue::Artery;
    }
    if (py - 64.0).abs() <= 2.0 && px.abs() <= 2.0 {
        return Tissue::Sinus;
    }
    if inside(p, (pz, 0.0, 9.0), (1.0, 16.0, 4.0)) || inside(p, (pz, 0.0, -9.0), (1.0, 16.0, 4.0)) {
        return Tissue::Csf;
    }

    let grey = brain_r > 0.86;
    let left = px < -4.0;
    let zone = if left && inside(p, (0.0, -6.0, -32.0), (14.0, 18.0, 13.0)) {
        Zone::Core
    } else if left && inside(p, (0.0, -6.0, -30.0), (22.0, 34.0, 22.0)) {
        Zone::Penumbra
    } else if left && inside(p, (0.0, -6.0, -30.0), (28.0, 44.0, 30.0)) {
        Zone::Oligemia
    } else {
        Zone::Normal
    };
    Tissue::Brain { grey, zone }
}

/// True CBF, CBV and delay of a brain voxel.
fn haemodynamics(grey: bool, zone: Zone) -> (f64, f64, f64) {
    let (cbf, cbv) = if grey { (60.0, 4.0) } else { (25.0, 2.0) };
    match zone {
        Zone::Normal => (cbf, cbv, 0.0),
        Zone::Oligemia => (0.85 * cbf, cbv, 2.5),
        Zone::Penumbra => (0.45 * cbf, cbv, 7.0),
        Zone::Core => (
            if grey { 4.5 } else { 2.5 },
            if grey { 1.2 } else { 0.6 },
            9.0,
        ),
    }
}

struct Head {
    ctp: penumbra_imaging::Volume,
    truth_core: Array3<bool>,
    truth_hypoperfused: Array3<bool>,
}

fn head(noise_sd: f64, seed: u64) -> Head {
    let mut builder = Builder::new(FRAMES, SHAPE, noise_sd, seed);
    let aif: Vec<f64> = (0..FRAMES).map(|t| default_aif(t as f64)).collect();
    let vof = vof_curve(&default_aif, 6.0, 1.0, FRAMES);
    let flat = vec![0.0; FRAMES];
    let mut truth_cbf = Array3::<f64>::zeros((SHAPE[0], SHAPE[1], SHAPE[2]));
    let mut truth_delay = Array3::<f64>::zeros(truth_cbf.dim());
    let mut tissue_mask = Array3::from_elem(truth_cbf.dim(), false);

    for z in 0..SHAPE[0] {
        for y in 0..SHAPE[1] {
            for x in 0..SHAPE[2] {
                match tissue_at(z, y, x) {
                    Tissue::Air => builder.set(z, y, x, -1000.0, &flat),
                    Tissue::Bone => builder.set(z, y, x, 1000.0, &flat),
                    Tissue::Csf => builder.set(z, y, x, 8.0, &flat),
                    Tissue::Artery => builder.set(z, y, x, 40.0, &aif),
                    Tissue::Sinus => builder.set(z, y, x, 40.0, &vof),
                    Tissue::Brain { grey, zone } => {
                        let (cbf, cbv, delay) = haemodynamics(grey, zone);
                        let curve =
                            tissue_curve(&default_aif, cbf, 60.0 * cbv / cbf, delay, 1.0, FRAMES);
                        builder.set(z, y, x, if grey { 38.0 } else { 28.0 }, &curve);
                        truth_cbf[(z, y, x)] = cbf;
                        truth_delay[(z, y, x)] = delay;
                        tissue_mask[(z, y, x)] = true;
                    }
                }
            }
        }
    }

    // Reference: median true CBF of the right hemisphere's normal tissue.
    let mut right: Vec<f64> = Vec::new();
    for ((z, y, x), &t) in tissue_mask.indexed_iter() {
        if t && position(z, y, x).2 > 0.0 {
            right.push(truth_cbf[(z, y, x)]);
        }
    }
    let reference = common::median(&mut right);
    let truth_core = ndarray::Zip::from(&truth_cbf)
        .and(&tissue_mask)
        .map_collect(|&f, &t| t && f / reference < 0.30);
    let truth_hypoperfused = ndarray::Zip::from(&truth_delay)
        .and(&tissue_mask)
        .map_collect(|&d, &t| t && d > 6.0);
    Head {
        ctp: builder.build(SPACING, 1.0),
        truth_core,
        truth_hypoperfused,
    }
}

fn volume_ml(mask: &Array3<bool>) -> f64 {
    mask.iter().filter(|&&v| v).count() as f64 * SPACING.iter().product::<f64>() / 1000.0
}

#[test]
fn head_labels_match_truth() {
    let head = head(8.0, 11);
    let result = compute_maps(&head.ctp, &PerfusionParams::default()).unwrap();
    let labelled = label(&result.maps, &LabelParams::rapid());

    let core: Vec<bool> = labelled.labels.iter().map(|&l| l == 2).collect();
    let hypoperfused: Vec<bool> = labelled.labels.iter().map(|&l| l >= 1).collect();
    let core_dice = dice(&core, head.truth_core.iter()).unwrap();
    let hypo_dice = dice(&hypoperfused, head.truth_hypoperfused.iter()).unwrap();
    let core_error = volume_error(labelled.core_volume_ml, volume_ml(&head.truth_core));
    let hypo_error = volume_error(
        labelled.hypoperfused_volume_ml,
        volume_ml(&head.truth_hypoperfused),
    );
    println!(
        "core dice {core_dice:.3} ({:.1} mL, truth {:.1}); hypoperfused dice {hypo_dice:.3} ({:.1} mL, truth {:.1}); reference {:?} {:?}; noise {:?} HU",
        labelled.core_volume_ml,
        volume_ml(&head.truth_core),
        labelled.hypoperfused_volume_ml,
        volume_ml(&head.truth_hypoperfused),
        labelled.reference.method,
        labelled.reference.cbf_ml_100g_min,
        result.quality.noise_sd_hu,
    );
    println!(
        "quality {}",
        serde_json::to_string(&result.quality).unwrap()
    );

    assert_eq!(
        labelled.reference.method,
        ReferenceMethod::ContralateralHealthy
    );
    // The lesion is at negative x; the midline normal points to +x.
    assert_eq!(labelled.reference.lesion_side, -1);
    assert!(hypo_dice >= 0.85, "hypoperfused dice {hypo_dice}");
    assert!(core_dice >= 0.70, "core dice {core_dice}");
    assert!(hypo_error.relative.unwrap().abs() <= 0.10 || hypo_error.difference_ml.abs() <= 10.0);
    assert!(core_error.relative.unwrap().abs() <= 0.20 || core_error.difference_ml.abs() <= 10.0);
}

#[test]
fn head_inputs_found() {
    let head = head(8.0, 12);
    let result = compute_maps(&head.ctp, &PerfusionParams::default()).unwrap();

    // The AIF comes from artery voxels (y 40..=43 around x 37..=40 and 55..=58 after
    // rounding), the VOF from the sinus.
    for voxel in &result.aif.voxels {
        assert!(
            matches!(tissue_at(voxel[0], voxel[1], voxel[2]), Tissue::Artery),
            "aif voxel {voxel:?}"
        );
    }
    let vof = result.vof.as_ref().expect("sinus gives a VOF");
    for voxel in &vof.voxels {
        assert!(
            matches!(tissue_at(voxel[0], voxel[1], voxel[2]), Tissue::Sinus),
            "vof voxel {voxel:?}"
        );
    }

    let quality = &result.quality;
    // The mean head curve is mostly tissue and reaches 10 % of its rise at frame 10, so the
    // baseline is frames 0..=8; the AIF starts after t0 = 8 s and leaves them clean. The
    // 8 HU noise SD is measured from them (the median sample SD of 9 frames is a little low).
    assert_eq!(quality.baseline_frames, 9);
    let noise = quality.noise_sd_hu.unwrap();
    assert!((noise - 8.0).abs() < 1.0, "noise {noise}");
    assert!(quality.motion_mm < 0.1);
    assert!(!quality.bolus_truncated);
    assert!((quality.aif_peak_hu - 400.0).abs() < 20.0);
    // Sampled peak of the gamma AIF is at 12 s (t0 8 + alpha beta 4.5, sampled).
    assert!((quality.aif_time_to_peak_s - 12.0).abs() <= 1.0);
    // The VOF has the AIF's area by construction, so the partial-volume scale is close to 1.
    let scale = quality.partial_volume_scale.unwrap();
    assert!((scale - 1.0).abs() < 0.05, "scale {scale}");

    // Vessels are masked out of the tissue that gets labelled.
    for voxel in &result.aif.voxels {
        assert!(result.maps.vessel_mask[(voxel[0], voxel[1], voxel[2])]);
    }
    // CSF leaves the brain mask.
    let (z, y, x) = (1, 47, 43);
    assert!(matches!(tissue_at(z, y, x), Tissue::Csf));
    assert!(!result.maps.brain_mask[(z, y, x)]);
}

#[test]
fn head_with_irregular_sampling() {
    // Canon-like timing: every 2 s up to 28 s, then every 5 s up to 58 s (21 frames). The
    // series is resampled onto a 2 s grid.
    let full = head(8.0, 13);
    let times: Vec<usize> = (0..=28).step_by(2).chain((33..=58).step_by(5)).collect();
    let voxels = full.ctp.voxels.select(ndarray::Axis(0), &times);
    let ctp = penumbra_imaging::Volume {
        voxels,
        geometry: full.ctp.geometry.clone(),
        frame_times_s: times.iter().map(|&t| t as f64).collect(),
    };

    let result = compute_maps(&ctp, &PerfusionParams::default()).unwrap();
    let labelled = label(&result.maps, &LabelParams::rapid());
    let hypoperfused: Vec<bool> = labelled.labels.iter().map(|&l| l >= 1).collect();
    let hypo_dice = dice(&hypoperfused, full.truth_hypoperfused.iter()).unwrap();
    println!(
        "irregular sampling: hypoperfused dice {hypo_dice:.3}, warnings {:?}",
        result.quality.warnings
    );

    assert!(result.quality.resampled);
    assert_eq!(result.quality.frame_interval_s, 2.0);
    assert_eq!(result.aif.values_hu.len(), 30);
    // Measured 0.747. Tmax is now refined between samples and corrected for the 3.1 s that
    // truncated SVD adds at 2 s sampling. Before, whole 2 s samples made "above 6 s" mean
    // "8 s or more", which happened to offset that delay, and the gate stood at 0.80. The
    // loss sits in the noisy core (CBF 2.5-4.5), whose residue maximum moves at random.
    assert!(hypo_dice >= 0.72, "hypoperfused dice {hypo_dice}");
}
