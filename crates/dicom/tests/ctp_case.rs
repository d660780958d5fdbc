//! The g60 case: one series, 4 time points x 3 positions, with a conflicting duplicate.

use std::path::PathBuf;

use penumbra_dicom::pixels::decode_pixels;
use penumbra_dicom::{decode_study, read_file, ReadError, SeriesKind};

fn dir() -> PathBuf {
    shared_cases().join("g60_ctp_series")
}

fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn sorted_into_four_time_points_of_three_slices() {
    // Arrival order reversed, except that IM0005 still arrives before its conflicting copy.
    let mut paths = files();
    paths.reverse();
    let dup = paths.iter().position(|p| p.ends_with("IM0005_dup_uid.dcm")).unwrap();
    let orig = paths.iter().position(|p| p.ends_with("IM0005.dcm")).unwrap();
    paths.swap(dup, orig);

    let study = decode_study(&paths);
    assert!(study.rejected_series.is_empty(), "{:?}", study.rejected_series);
    assert_eq!(study.series.len(), 1);
    let series = &study.series[0];
    assert_eq!(series.volume.voxels.shape(), &[4, 3, 128, 128]);
    assert_eq!(series.info.kind, SeriesKind::DynamicCtp);
    assert_eq!(series.info.instance_count, 12);

    let g = &series.volume.geometry;
    assert!((g.spacing_mm[0] - 5.0).abs() < 1e-9, "{:?}", g.spacing_mm);
    assert!((g.spacing_mm[1] - 0.661468).abs() < 1e-9);
    assert_eq!(g.origin_mm, [-158.135803, -179.035797, -75.0]);
    assert_eq!(g.normal, [0.0, 0.0, 1.0]);

    // Per time point, the mean of 12:00:0T.0, .1 and .2 relative to the first.
    let times = &series.volume.frame_times_s;
    let expected = [0.0, 2.0, 4.0, 6.0];
    assert!(times.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{times:?}");

    // Voxel (t, z) comes from IM(3t + z + 1), decoded on its own.
    for t in 0..4 {
        for z in 0..3 {
            let file = dir().join(format!("IM{:04}.dcm", 3 * t + z + 1));
            let instance = read_file(&file).unwrap();
            let pixels = decode_pixels(&instance, &mut Vec::new()).unwrap();
            let slice = series.volume.voxels.slice(ndarray::s![t, z, .., ..]);
            assert_eq!(slice, pixels.slice(ndarray::s![0, .., ..]), "t={t} z={z}");
        }
    }
    assert_eq!(series.info.slice_sources.len(), 3);
    assert_eq!(series.info.slice_sources[0].sop_instance_uid, read_file(&dir().join("IM0001.dcm")).unwrap().sop_instance_uid().unwrap());
    assert_eq!(series.info.slice_sources[0].frame_number, None);

    // The conflicting copy is set aside and reported, never used.
    assert_eq!(study.rejected.len(), 1);
    let rejected = &study.rejected[0];
    assert!(rejected.path.ends_with("IM0005_dup_uid.dcm"));
    assert!(matches!(&rejected.error, ReadError::DuplicateInstance { kept, .. } if kept.ends_with("IM0005.dcm")));
}

#[test]
fn duplicate_copy_has_other_pixels() {
    // Guards the test above: the copy must really carry other pixels.
    let a = decode_pixels(&read_file(&dir().join("IM0005.dcm")).unwrap(), &mut Vec::new()).unwrap();
    let b = decode_pixels(&read_file(&dir().join("IM0005_dup_uid.dcm")).unwrap(), &mut Vec::new()).unwrap();
    assert_ne!(a, b);
}

#[test]
fn missing_slice_names_time_point() {
    let paths: Vec<PathBuf> = files().into_iter().filter(|p| !p.ends_with("IM0008.dcm") && !p.ends_with("IM0005_dup_uid.dcm")).collect();
    let study = decode_study(&paths);
    assert!(study.series.is_empty());
    assert_eq!(study.rejected_series.len(), 1);
    let message = study.rejected_series[0].error.to_string();
    assert!(message.contains("time point 3"), "{message}");
    assert!(message.contains("TemporalPositionIndex 3"), "{message}");
    assert!(message.contains("-70.00 mm"), "{message}");
    assert_eq!(study.rejected_series[0].files.len(), 11);
}

#[test]
fn truncated_instance_rejects_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for file in files().into_iter().filter(|p| !p.ends_with("IM0005_dup_uid.dcm")) {
        let target = dir.path().join(file.file_name().unwrap());
        let mut bytes = std::fs::read(&file).unwrap();
        if file.ends_with("IM0007.dcm") {
            bytes.truncate(bytes.len() / 2);
        }
        std::fs::write(&target, bytes).unwrap();
        paths.push(target);
    }
    let study = decode_study(&paths);
    assert!(study.series.is_empty());
    assert_eq!(study.rejected.len(), 1);
    assert_eq!(study.rejected[0].error.kind(), "truncated");
    assert!(study.rejected[0].series_instance_uid.is_some());
    let message = study.rejected_series[0].error.to_string();
    assert!(message.contains("IM0007.dcm"), "{message}");
    assert!(message.contains("truncated"), "{message}");
}

/// Returns the shared DICOM cases folder: `shared/cases/dicom` in the nearest folder above this
/// package that has one (the repository's sibling `shared/`).
fn shared_cases() -> std::path::PathBuf {
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("shared/cases/dicom");
        if candidate.is_dir() {
            return candidate;
        }
        assert!(dir.pop(), "no shared/cases/dicom beside the repository");
    }
}
