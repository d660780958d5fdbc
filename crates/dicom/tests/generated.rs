//! Files the tests generate for each kind of fault or layout, with hand-derived expected values.

mod common;

use std::path::PathBuf;

use common::{ct_slice, default_slice, Builder, CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE};
use dicom_core::Tag;
use penumbra_dicom::pixels::decode_pixels;
use penumbra_dicom::{decode_study, read_bytes, ReadError, SeriesKind};

const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Stored values of signed 16-bit pixels and their HU with intercept -1024.
fn signed(values: &[i16]) -> Vec<u16> {
    values.iter().map(|&v| v as u16).collect()
}

fn hu(bytes: &[u8]) -> (Vec<f32>, Vec<String>) {
    let instance = read_bytes(bytes).unwrap();
    let mut warnings = instance.warnings.clone();
    let pixels = decode_pixels(&instance, &mut warnings).unwrap();
    (pixels.iter().copied().collect(), warnings)
}

#[test]
fn big_endian_part10_and_bare_decode() {
    let mut b = Builder::explicit_be();
    ct_slice(&mut b, &default_slice("1.2.3.1", "1.2.3.9", signed(&[1024, 2048, 0, -100])));
    let (values, _) = hu(&b.part10(EXPLICIT_BE, CT_IMAGE_STORAGE, "1.2.3.1"));
    assert_eq!(values, vec![0.0, 1024.0, -1024.0, -1124.0]);

    let (bare, warnings) = hu(&b.bytes);
    assert_eq!(bare, vec![0.0, 1024.0, -1024.0, -1124.0]);
    assert!(warnings.iter().any(|w| w.contains(EXPLICIT_BE)), "{warnings:?}");
}

#[test]
fn rescale_slope_in_un_uses_the_dictionary_vr() {
    let mut slice = default_slice("1.2.3.1", "1.2.3.9", signed(&[1000, 0, 1, 2]));
    slice.slope_as_un = true;
    let mut b = Builder::explicit_le();
    ct_slice(&mut b, &slice);
    // Slope "2 " read as DS, not as the bytes 0x32 0x20: HU = 2 v - 1024.
    let (values, warnings) = hu(&b.part10(EXPLICIT_LE, CT_IMAGE_STORAGE, "1.2.3.1"));
    assert_eq!(values, vec![976.0, -1024.0, -1022.0, -1020.0]);
    assert!(warnings.iter().any(|w| w.contains("(0028,1053) arrived with VR UN")), "{warnings:?}");
}

/// Builds an Implicit VR LE item containing one UI element, with undefined length and its delimiter.
fn implicit_item(element: u16, uid: &str) -> Vec<u8> {
    let mut content = Builder::implicit_le();
    content.text(0x0008, element, "UI", uid);
    let mut item = vec![0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF];
    item.extend_from_slice(&content.bytes);
    item.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
    item
}

#[test]
fn undefined_length_un_sequences_are_read() {
    let mut b = Builder::explicit_le();
    b.text(0x0008, 0x0016, "UI", CT_IMAGE_STORAGE).text(0x0008, 0x0018, "UI", "1.2.3.1");
    // ReferencedImageSequence and a private sequence, both as UN of undefined length.
    for (group, element) in [(0x0008u16, 0x1140u16), (0x0009, 0x1010)] {
        b.header(group, element, "UN", 0xFFFF_FFFF);
        b.bytes.extend_from_slice(&implicit_item(0x1155, "1.2.3.77"));
        b.bytes.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    b.text(0x0020, 0x000D, "UI", "1.2.3.4").text(0x0020, 0x000E, "UI", "1.2.3.9");
    let instance = read_bytes(&b.part10(EXPLICIT_LE, CT_IMAGE_STORAGE, "1.2.3.1")).unwrap();
    for tag in [Tag(0x0008, 0x1140), Tag(0x0009, 0x1010)] {
        let items = instance.data_set.items(tag);
        assert_eq!(items.len(), 1, "{tag}");
        assert_eq!(items[0].string(Tag(0x0008, 0x1155)).as_deref(), Some("1.2.3.77"));
    }
    assert_eq!(instance.series_instance_uid().as_deref(), Some("1.2.3.9"));
}

/// Builds `depth` sequences nested inside each other around one UI element.
fn nested(depth: usize) -> Vec<u8> {
    let mut inner = Builder::explicit_le();
    inner.text(0x0008, 0x1155, "UI", "1.2.3");
    let mut content = inner.bytes;
    for _ in 0..depth {
        let mut level = Builder::explicit_le();
        level.sequence(0x0008, 0x1140, &[content]);
        content = level.bytes;
    }
    let mut b = Builder::explicit_le();
    b.text(0x0008, 0x0016, "UI", CT_IMAGE_STORAGE);
    b.bytes.extend_from_slice(&content);
    b.part10(EXPLICIT_LE, CT_IMAGE_STORAGE, "1.2.3.1")
}

#[test]
fn sequence_nesting_is_bounded() {
    assert!(read_bytes(&nested(8)).is_ok());
    let err = read_bytes(&nested(40)).unwrap_err();
    assert_eq!(err.kind(), "nesting_too_deep", "{err}");
}

#[test]
fn misspelt_character_set_is_read_with_a_warning() {
    let mut b = Builder::explicit_le();
    b.text(0x0008, 0x0005, "CS", "ISO-IR 192").text(0x0008, 0x0016, "UI", CT_IMAGE_STORAGE);
    b.text(0x0010, 0x0010, "PN", "Müller^Jörg");
    let instance = read_bytes(&b.part10(EXPLICIT_LE, CT_IMAGE_STORAGE, "1.2.3.1")).unwrap();
    assert_eq!(instance.data_set.string(Tag(0x0010, 0x0010)).as_deref(), Some("Müller^Jörg"));
    assert!(instance.warnings.iter().any(|w| w.contains("\"ISO-IR 192\" is misspelt")), "{:?}", instance.warnings);
}

fn write_files(dir: &tempfile::TempDir, files: Vec<(String, Vec<u8>)>) -> Vec<PathBuf> {
    files
        .into_iter()
        .map(|(name, bytes)| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

#[test]
fn shuffled_rotated_slices_sort_along_the_normal() {
    // Rows along x; columns tilted 20 degrees: normal = row x col = (0, sin 20, cos 20).
    let (s, c) = (20f64.to_radians().sin(), 20f64.to_radians().cos());
    let orientation = [1.0, 0.0, 0.0, 0.0, c, -s];
    let normal = [0.0, s, c];
    let origin = [-10.0, 5.0, 30.0];
    let order = [2usize, 0, 3, 1];
    let uids: Vec<String> = (0..4).map(|k| format!("1.2.3.1{k}")).collect();
    let mut files = Vec::new();
    for (n, &k) in order.iter().enumerate() {
        let position = [origin[0], origin[1] + 2.5 * k as f64 * normal[1], origin[2] + 2.5 * k as f64 * normal[2]];
        let mut slice = default_slice(&uids[k], "1.2.3.9", signed(&[k as i16 * 10 + 1024; 4]));
        slice.position = position;
        slice.orientation = orientation;
        slice.instance_number = 10 - n as i32;
        let mut b = Builder::explicit_le();
        ct_slice(&mut b, &slice);
        files.push((format!("f{n}.dcm"), b.part10(EXPLICIT_LE, CT_IMAGE_STORAGE, &uids[k])));
    }
    let dir = tempfile::tempdir().unwrap();
    let study = decode_study(&write_files(&dir, files));
    assert!(study.rejected_series.is_empty(), "{:?}", study.rejected_series);
    let series = &study.series[0];
    assert_eq!(series.volume.voxels.shape(), &[1, 4, 2, 2]);
    assert_eq!(series.info.kind, SeriesKind::PlainCt);
    let g = &series.volume.geometry;
    assert!((g.spacing_mm[0] - 2.5).abs() < 1e-6, "{:?}", g.spacing_mm);
    assert!(g.normal.iter().zip(normal).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", g.normal);
    assert!(g.origin_mm.iter().zip(origin).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", g.origin_mm);
    for z in 0..4 {
        assert_eq!(series.volume.voxels[[0, z, 1, 1]], z as f32 * 10.0, "z={z}");
    }
    assert_eq!(series.info.slice_sources[0].sop_instance_uid, "1.2.3.10");
}

#[test]
fn dynamic_series_splits_by_acquisition_time_alone() {
    // Two positions, two time points 3 s apart; no TemporalPositionIndex or AcquisitionNumber.
    let mut files = Vec::new();
    for (t, time) in ["120000", "120003"].iter().enumerate() {
        for z in 0..2 {
            let uid = format!("1.2.3.2{t}{z}");
            let mut slice = default_slice(&uid, "1.2.3.9", signed(&[(100 * t + z) as i16 + 1024; 4]));
            slice.position = [0.0, 0.0, 5.0 * z as f64];
            slice.acquisition_time = time;
            let mut b = Builder::explicit_le();
            ct_slice(&mut b, &slice);
            files.push((format!("t{t}z{z}.dcm"), b.part10(EXPLICIT_LE, CT_IMAGE_STORAGE, &uid)));
        }
    }
    files.reverse();
    let dir = tempfile::tempdir().unwrap();
    let study = decode_study(&write_files(&dir, files));
    let series = &study.series[0];
    assert_eq!(series.volume.voxels.shape(), &[2, 2, 2, 2]);
    assert_eq!(series.volume.frame_times_s, vec![0.0, 3.0]);
    assert_eq!(series.info.kind, SeriesKind::DynamicCtp);
    assert_eq!(series.volume.voxels[[1, 0, 0, 0]], 100.0);
    assert_eq!(series.volume.voxels[[0, 1, 0, 0]], 1.0);
}

/// Builds an item (explicit LE) holding one sequence with one item of `content`.
fn group_item(sequences: &[(u16, u16, Vec<u8>)]) -> Vec<u8> {
    let mut b = Builder::explicit_le();
    for (group, element, content) in sequences {
        b.sequence(*group, *element, std::slice::from_ref(content));
    }
    b.bytes
}

#[test]
fn enhanced_ct_multiframe_two_time_points_three_positions() {
    let (rows, cols) = (2u16, 3u16);
    // Frames stored shuffled: (t, z) for frame 1..6.
    let order = [(1, 2), (0, 0), (1, 0), (0, 2), (0, 1), (1, 1)];
    let mut per_frame = Vec::new();
    let mut pixels = Vec::new();
    for &(t, z) in &order {
        let mut position = Builder::explicit_le();
        position.text(0x0020, 0x0032, "DS", &format!("-50\\-60\\{}", 10.0 + 4.0 * z as f64));
        let mut content = Builder::explicit_le();
        content.text(0x0018, 0x9074, "DT", &format!("2024010112000{}", 4 * t));
        content.ul(0x0020, 0x9128, t as u32 + 1);
        per_frame.push(group_item(&[(0x0020, 0x9111, content.bytes), (0x0020, 0x9113, position.bytes)]));
        pixels.extend(std::iter::repeat_n((10 * t + z) as u16, usize::from(rows * cols)));
    }
    let mut orientation = Builder::explicit_le();
    orientation.text(0x0020, 0x0037, "DS", "1\\0\\0\\0\\1\\0");
    let mut measures = Builder::explicit_le();
    measures.text(0x0028, 0x0030, "DS", "0.8\\0.7");
    let mut transform = Builder::explicit_le();
    transform.text(0x0028, 0x1052, "DS", "-100").text(0x0028, 0x1053, "DS", "2");
    let shared = group_item(&[(0x0020, 0x9116, orientation.bytes), (0x0028, 0x9110, measures.bytes), (0x0028, 0x9145, transform.bytes)]);

    let mut b = Builder::explicit_le();
    b.text(0x0008, 0x0008, "CS", "ORIGINAL\\PRIMARY\\AXIAL")
        .text(0x0008, 0x0016, "UI", ENHANCED_CT_IMAGE_STORAGE)
        .text(0x0008, 0x0018, "UI", "1.2.3.50")
        .text(0x0008, 0x0060, "CS", "CT")
        .text(0x0020, 0x000D, "UI", "1.2.3.4")
        .text(0x0020, 0x000E, "UI", "1.2.3.5")
        .us(0x0028, 0x0002, 1)
        .text(0x0028, 0x0004, "CS", "MONOCHROME2")
        .text(0x0028, 0x0008, "IS", "6")
        .us(0x0028, 0x0010, rows)
        .us(0x0028, 0x0011, cols)
        .us(0x0028, 0x0100, 16)
        .us(0x0028, 0x0101, 16)
        .us(0x0028, 0x0102, 15)
        .us(0x0028, 0x0103, 0)
        .sequence(0x5200, 0x9229, &[shared])
        .sequence(0x5200, 0x9230, &per_frame)
        .pixels_u16(&pixels);
    let dir = tempfile::tempdir().unwrap();
    let paths = write_files(&dir, vec![("mf.dcm".into(), b.part10(EXPLICIT_LE, ENHANCED_CT_IMAGE_STORAGE, "1.2.3.50"))]);
    let study = decode_study(&paths);
    assert!(study.rejected_series.is_empty(), "{:?}", study.rejected_series);
    let series = &study.series[0];
    assert_eq!(series.volume.voxels.shape(), &[2, 3, 2, 3]);
    assert_eq!(series.info.kind, SeriesKind::DynamicCtp);
    for t in 0..2 {
        for z in 0..3 {
            // HU = 2 * stored - 100.
            assert_eq!(series.volume.voxels[[t, z, 1, 2]], 2.0 * (10 * t + z) as f32 - 100.0, "t={t} z={z}");
        }
    }
    let g = &series.volume.geometry;
    assert_eq!(g.spacing_mm, [4.0, 0.8, 0.7]);
    assert_eq!(g.origin_mm, [-50.0, -60.0, 10.0]);
    assert_eq!(series.volume.frame_times_s, vec![0.0, 4.0]);
    // z = 0 at t = 0 is stored as frame 2.
    assert_eq!(series.info.slice_sources[0].frame_number, Some(2));
    assert_eq!(series.info.slice_sources[0].sop_instance_uid, "1.2.3.50");
}

#[test]
fn garbage_number_is_never_zero() {
    let mut slice = default_slice("1.2.3.1", "1.2.3.9", signed(&[0; 4]));
    slice.position = [0.0, 0.0, 0.0];
    let mut b = Builder::explicit_le();
    ct_slice(&mut b, &slice);
    let bytes = b.part10(EXPLICIT_LE, CT_IMAGE_STORAGE, "1.2.3.1");
    // Replace PixelSpacing "0.5\0.5" with garbage of the same length.
    let at = bytes.windows(7).position(|w| w == b"0.5\\0.5").unwrap();
    let mut bad = bytes.clone();
    bad[at..at + 7].copy_from_slice(b"abc\\def");
    let dir = tempfile::tempdir().unwrap();
    let study = decode_study(&write_files(&dir, vec![("bad.dcm".into(), bad)]));
    assert!(study.series.is_empty());
    let message = study.rejected_series[0].error.to_string();
    assert!(message.contains("PixelSpacing"), "{message}");
    assert!(read_bytes(&bytes).is_ok());
    assert_ne!(read_bytes(&[0u8; 3]).unwrap_err(), ReadError::Empty);
}

#[test]
fn per_image_temporal_index_falls_back_to_time() {
    // TemporalPositionIndex numbers every image (1..4), so it cannot fill a time point; the
    // acquisition time (two values, 2 s apart) does.
    let mut files = Vec::new();
    for (t, time) in ["083000", "083002"].iter().enumerate() {
        for z in 0..2 {
            let uid = format!("1.2.3.3{t}{z}");
            let mut slice = default_slice(&uid, "1.2.3.9", signed(&[(10 * t + z) as i16 + 1024; 4]));
            slice.position = [0.0, 0.0, -3.0 * z as f64];
            slice.acquisition_time = time;
            slice.temporal_index = Some((2 * t + z + 1) as u32);
            let mut b = Builder::explicit_le();
            ct_slice(&mut b, &slice);
            files.push((format!("t{t}z{z}.dcm"), b.part10(EXPLICIT_LE, CT_IMAGE_STORAGE, &uid)));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let study = decode_study(&write_files(&dir, files));
    assert!(study.rejected_series.is_empty(), "{:?}", study.rejected_series);
    let series = &study.series[0];
    assert_eq!(series.volume.frame_times_s, vec![0.0, 2.0]);
    // Positions descend with z in the files, so sorted index 0 is the slice at -3 mm (z = 1).
    assert_eq!(series.volume.geometry.origin_mm, [0.0, 0.0, -3.0]);
    assert_eq!(series.volume.voxels[[1, 0, 0, 0]], 11.0);
    assert_eq!(series.volume.voxels[[0, 1, 0, 0]], 0.0);
}
