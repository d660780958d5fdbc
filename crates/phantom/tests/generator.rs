//! Generator checks on small studies: determinism, truth consistency, signal levels and noise.

use ndarray::Axis;
use penumbra_imaging::Label;
use penumbra_phantom::truth::{CORE_RELATIVE_CBF, HYPOPERFUSED_TMAX_S};
use penumbra_phantom::{generate, Hemisphere, LesionSize, Matrix, Noise, PhantomParams, PhantomStudy, Side, TissueClass};

/// Returns parameters of a 64 x 64 x 16 study of 40 frames 1.5 s apart with a large left lesion.
fn small_params(seed: u64) -> PhantomParams {
    PhantomParams {
        seed,
        matrix: Matrix::M64,
        frames: 40,
        frame_interval_s: 1.5,
        lesion_side: Side::Left,
        lesion_size: LesionSize::Large,
        ..PhantomParams::default()
    }
}

fn small_study(seed: u64, noise: Noise) -> PhantomStudy {
    generate(&PhantomParams { noise, ..small_params(seed) }).expect("small parameters are valid")
}

#[test]
fn same_seed_same_study() {
    let a = small_study(7, Noise::MilliAmpSeconds(150.0));
    let b = small_study(7, Noise::MilliAmpSeconds(150.0));
    assert_eq!(a.volume.voxels, b.volume.voxels);
    assert_eq!(a.truth.cbf, b.truth.cbf);
    assert_eq!(a.truth.labels, b.truth.labels);
    assert_eq!(a.truth.volumes, b.truth.volumes);
}

#[test]
fn different_seed_differs() {
    let a = small_study(7, Noise::HuSd(0.0));
    let b = small_study(8, Noise::HuSd(0.0));
    assert_ne!(a.volume.voxels, b.volume.voxels);
    assert_ne!(a.truth.cbf, b.truth.cbf);
}

#[test]
fn central_volume_theorem_holds() {
    let study = small_study(11, Noise::HuSd(0.0));
    let t = &study.truth;
    let mut checked = 0;
    for ((cbf, cbv), mtt) in t.cbf.iter().zip(t.cbv.iter()).zip(t.mtt.iter()) {
        if *cbf > 0.0 {
            let derived = (*mtt as f64) * (*cbf as f64) / 60.0;
            assert!((derived - *cbv as f64).abs() < 1e-3, "cbf {cbf} cbv {cbv} mtt {mtt}");
            checked += 1;
        }
    }
    assert!(checked > 5000, "{checked}");
}

#[test]
fn labels_follow_clinical_definitions() {
    let study = small_study(12, Noise::HuSd(0.0));
    let t = &study.truth;
    for ((index, &label), &cbf) in t.labels.indexed_iter().zip(t.cbf.iter()) {
        let tmax = t.tmax[index] as f64;
        let relative = cbf as f64 / t.reference_cbf;
        let expected = if cbf <= 0.0 {
            Label::Background
        } else if relative < CORE_RELATIVE_CBF {
            Label::Core
        } else if tmax > HYPOPERFUSED_TMAX_S {
            Label::Penumbra
        } else {
            Label::Background
        };
        assert_eq!(label, expected as u8, "voxel {index:?}: rCBF {relative}, Tmax {tmax}");
    }
    assert!(t.volumes.core_ml > 0.0, "a large lesion must have core");
    assert!(t.volumes.penumbra_ml > 0.0, "a large lesion must have penumbra");
}

#[test]
fn core_lies_in_lesion_design() {
    let study = small_study(13, Noise::HuSd(0.0));
    let t = &study.truth;
    let mut core = 0;
    let mut in_penumbra_design = 0;
    for (index, &label) in t.labels.indexed_iter() {
        if label != Label::Core as u8 {
            continue;
        }
        core += 1;
        // The blend reaches a few mm past the penumbra blob, never past the oligemic shell.
        assert_eq!(t.oligemia_design[index], 1, "core voxel {index:?} outside the lesion design");
        if t.penumbra_design[index] == 1 {
            in_penumbra_design += 1;
        }
    }
    assert!(core > 0);
    assert!(in_penumbra_design as f64 >= 0.9 * core as f64, "{in_penumbra_design} of {core}");
}

#[test]
fn contralateral_hemisphere_is_normal() {
    let study = small_study(14, Noise::HuSd(0.0));
    let lesion = study.design.lesion.as_ref().expect("lesion requested");
    assert_eq!(lesion.hemisphere, Hemisphere::Left);

    // Straight pose: patient left is +x, the second half of the columns.
    let t = &study.truth;
    let columns = t.cbf.shape()[2];
    let mut checked = 0;
    for ((z, y, x), &cbf) in t.cbf.indexed_iter() {
        if cbf <= 0.0 || x >= columns / 2 - 1 {
            continue;
        }
        let index = (z, y, x);
        assert_eq!(t.labels[index], 0, "{index:?}");
        assert_eq!(t.tissue[index], TissueClass::Normal as u8, "{index:?}");
        assert!(t.delay[index] <= 0.7, "{index:?} delay {}", t.delay[index]);
        assert_eq!(t.tau[index], 0.0, "{index:?}");
        checked += 1;
    }
    assert!(checked > 2000, "{checked}");
}

#[test]
fn volumes_are_voxel_counts() {
    let study = small_study(15, Noise::HuSd(0.0));
    let t = &study.truth;
    let voxel_ml = study.volume.geometry.voxel_volume_ml();
    // 3.6 mm x 3.6 mm x 5 mm.
    assert!((voxel_ml - 0.0648).abs() < 1e-9);

    let count = |label: Label| t.labels.iter().filter(|&&v| v == label as u8).count() as f64;
    let hypoperfused = t.tmax.iter().filter(|&&v| v as f64 > HYPOPERFUSED_TMAX_S).count() as f64;
    assert_eq!(t.volumes.core_ml, count(Label::Core) * voxel_ml);
    assert_eq!(t.volumes.penumbra_ml, count(Label::Penumbra) * voxel_ml);
    assert_eq!(t.volumes.hypoperfused_ml, hypoperfused * voxel_ml);
    assert_eq!(t.volumes.mismatch_ml, t.volumes.hypoperfused_ml - t.volumes.core_ml);
    assert_eq!(t.volumes.mismatch_ratio, Some(t.volumes.hypoperfused_ml / t.volumes.core_ml));
}

#[test]
fn baseline_frames_at_tissue_hu() {
    let study = small_study(16, Noise::HuSd(0.0));
    let first = study.volume.frame(0);
    let t = &study.truth;

    let mut normal = Vec::new();
    let mut csf = Vec::new();
    for (index, &class) in t.tissue.indexed_iter() {
        match class {
            c if c == TissueClass::Normal as u8 => normal.push(first[index]),
            c if c == TissueClass::Csf as u8 => csf.push(first[index]),
            _ => {}
        }
    }
    let normal_median = penumbra_phantom::truth::median(&mut normal);
    let csf_median = penumbra_phantom::truth::median(&mut csf);
    // Parenchyma is mostly WM (28 HU) with GM (37 HU); CSF is 10 HU (ventricles 8 HU).
    assert!((26.0..=34.0).contains(&normal_median), "{normal_median}");
    assert!((8.0..=10.0).contains(&csf_median), "{csf_median}");

    // The bolus arrives after at least 6 s: frames before it equal the first frame in parenchyma.
    let arrival = study.design.aif.arrival_s;
    let before = study.volume.frame_times_s.iter().filter(|&&time| time < arrival).count();
    assert!(before >= 4, "{before}");
    for f in 1..before {
        assert_eq!(study.volume.frame(f), first, "frame {f} before arrival {arrival}");
    }
}

#[test]
fn arteries_peak_with_aif() {
    let study = small_study(17, Noise::HuSd(0.0));
    let voxels = &study.volume.voxels;
    let first = study.volume.frame(0);

    // The voxel with the largest enhancement anywhere is arterial.
    let mut best = (0.0f32, 0usize);
    for (f, frame) in voxels.axis_iter(Axis(0)).enumerate() {
        for (value, base) in frame.iter().zip(first.iter()) {
            if value - base > best.0 {
                best = (value - base, f);
            }
        }
    }
    let aif = &study.truth.input_functions;
    let aif_peak_frame = (0..aif.aif_hu.len()).max_by(|&a, &b| aif.aif_hu[a].total_cmp(&aif.aif_hu[b])).unwrap_or(0);
    assert!((best.1 as i64 - aif_peak_frame as i64).abs() <= 1, "voxel peak frame {} vs AIF {}", best.1, aif_peak_frame);
    // Partial volume keeps the voxel at or below the AIF peak, but it is a strong artery.
    let aif_peak = aif.aif_hu[aif_peak_frame];
    assert!(best.0 as f64 <= aif_peak + 1.0, "{} vs {aif_peak}", best.0);
    assert!(best.0 as f64 > 0.3 * aif_peak, "{} vs {aif_peak}", best.0);
}

#[test]
fn noise_sd_in_air_matches_target() {
    for (noise, target) in [(Noise::HuSd(8.4), 8.4), (Noise::MilliAmpSeconds(50.0), 103.09 / 50f64.sqrt())] {
        let params = PhantomParams { noise, matrix: Matrix::M128, slices: 4, frames: 6, ..small_params(18) };
        let study = generate(&params).expect("valid parameters");
        let t = &study.truth;

        // Air is flat at -1000 HU; skip the 4 pixels next to the image edge (zero-padded blur).
        let mut values = Vec::new();
        for (f, frame) in study.volume.voxels.axis_iter(Axis(0)).enumerate() {
            for ((z, y, x), &value) in frame.indexed_iter() {
                let interior = (4..124).contains(&y) && (4..124).contains(&x);
                if interior && t.tissue[(z, y, x)] == TissueClass::Background as u8 && f < 6 {
                    values.push(value as f64);
                }
            }
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(n > 10_000.0, "{n}");
        assert!((mean + 1000.0).abs() < 0.5, "{mean}");
        assert!((sd / target - 1.0).abs() < 0.10, "measured {sd} vs target {target}");
    }
}

#[test]
fn invalid_parameters_are_rejected() {
    let params = PhantomParams { slices: 0, ..small_params(1) };
    let error = generate(&params).expect_err("0 slices is invalid");
    assert!(error.to_string().contains("slices"), "{error}");

    let params = PhantomParams { frame_interval_s: f64::NAN, ..small_params(1) };
    assert!(generate(&params).is_err());
}

#[test]
fn no_lesion_has_no_labels() {
    let study = generate(&PhantomParams { lesion: false, noise: Noise::HuSd(0.0), ..small_params(19) }).expect("valid");
    assert!(study.truth.labels.iter().all(|&v| v == 0));
    assert_eq!(study.truth.volumes.core_ml, 0.0);
    assert_eq!(study.truth.volumes.mismatch_ratio, None);
}

#[test]
fn tissue_enhancement_matches_reference_levels() {
    let study = small_study(20, Noise::HuSd(0.0));
    let t = &study.truth;
    let first = study.volume.frame(0);
    let mut grey = Vec::new();
    let mut white = Vec::new();
    for (index, &cbf) in t.cbf.indexed_iter() {
        if t.tissue[index] != TissueClass::Normal as u8 {
            continue;
        }
        let (z, y, x) = index;
        let peak = (0..study.volume.frames()).map(|f| study.volume.voxels[[f, z, y, x]] - first[index]).fold(f32::MIN, f32::max);
        if cbf >= 45.0 {
            grey.push(peak);
        } else if cbf <= 32.0 {
            white.push(peak);
        }
    }
    // A 300-500 HU gamma-variate AIF gives normal GM about 15 HU and WM about 7 HU of peak
    // enhancement; the 1.5 s sampling here trims the peaks slightly.
    let grey_median = penumbra_phantom::truth::median(&mut grey);
    let white_median = penumbra_phantom::truth::median(&mut white);
    assert!((9.0..=22.0).contains(&grey_median), "{grey_median}");
    assert!((4.0..=10.0).contains(&white_median), "{white_median}");
}

#[test]
fn lesion_regions_have_design_tmax() {
    let study = small_study(21, Noise::HuSd(0.0));
    let t = &study.truth;
    let median_tmax = |class: TissueClass| {
        let mut values: Vec<f32> = t.tmax.iter().zip(t.tissue.iter()).filter(|(_, &c)| c == class as u8).map(|(&v, _)| v).collect();
        penumbra_phantom::truth::median(&mut values)
    };
    // Oligemia: delay 2-3 s plus dispersion gives about 3-5 s, under the 6 s threshold.
    let oligemia = median_tmax(TissueClass::Oligemia);
    assert!((3.0..6.0).contains(&oligemia), "{oligemia}");
    let penumbra = median_tmax(TissueClass::Penumbra);
    assert!(penumbra > 6.0, "{penumbra}");
    let core = median_tmax(TissueClass::Core);
    assert!(core > penumbra, "{core} vs {penumbra}");
}

#[test]
fn pose_motion_and_aif_options() {
    use penumbra_phantom::{AifShape, Motion, Pose, PoseSpec};

    let still = PhantomParams { noise: Noise::HuSd(0.0), ..small_params(22) };
    let motion = Motion { first_frame: 10, frame_count: 2, translation_mm: [3.0, 0.0, 0.0], yaw_deg: 1.0 };
    let moved = generate(&PhantomParams { motion: Some(motion), ..still.clone() }).expect("valid");
    let reference = generate(&still).expect("valid");
    assert_eq!(moved.volume.frame(9), reference.volume.frame(9));
    assert_ne!(moved.volume.frame(10), reference.volume.frame(10));
    assert_eq!(moved.volume.frame(12), reference.volume.frame(12));
    assert_eq!(moved.truth.cbf, reference.truth.cbf);

    let pose = Pose { yaw_deg: 8.0, roll_deg: 3.0, shift_x_mm: 7.2 };
    let posed = generate(&PhantomParams { pose: PoseSpec::Fixed(pose), ..still.clone() }).expect("valid");
    assert_eq!(posed.design.pose, pose);
    assert_ne!(posed.truth.tissue, reference.truth.tissue);

    let erlangen = generate(&PhantomParams { aif_shape: AifShape::Erlangen, ..still.clone() }).expect("valid");
    let peak = erlangen.truth.input_functions.aif_fine_hu.iter().copied().fold(0.0, f64::max);
    assert!((peak - 485.0).abs() < 15.0, "{peak}");

    let truncated = generate(&PhantomParams { bolus_truncated: true, ..still }).expect("valid");
    let scan_end = truncated.volume.frame_times_s.last().copied().unwrap_or(0.0);
    assert!((truncated.design.aif.arrival_s - (scan_end - 22.0)).abs() < 1e-9);
}
