//! The shared malformed-DICOM cases: each decodes to the documented HU range or fails with
//! the documented kind of error.

use std::path::PathBuf;

use penumbra_dicom::pixels::decode_pixels;
use penumbra_dicom::{read_bytes, read_file, ReadError};

fn case(name: &str) -> PathBuf {
    shared_cases().join(name)
}

/// Reads a case and returns (HU minimum, HU maximum, warnings).
fn range(name: &str) -> (f32, f32, Vec<String>) {
    let instance = read_file(&case(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut warnings = instance.warnings.clone();
    let pixels = decode_pixels(&instance, &mut warnings).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(pixels.shape(), &[1, 128, 128], "{name}");
    let min = pixels.iter().copied().fold(f32::INFINITY, f32::min);
    let max = pixels.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (min, max, warnings)
}

fn assert_hu(name: &str) -> Vec<String> {
    let (min, max, warnings) = range(name);
    assert_eq!((min, max), (-896.0, 1167.0), "{name}");
    warnings
}

#[test]
fn clean_reference_reads() {
    let warnings = assert_hu("g00_base_ct_explicit.dcm");
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn bare_and_meta_less_data_sets_read() {
    for name in ["g04_no_preamble_no_meta_implicit.dcm", "g05_no_preamble_no_meta_explicit.dcm", "g06_dicm_but_no_meta.dcm"] {
        let warnings = assert_hu(name);
        assert!(warnings.iter().any(|w| w.contains("detected")), "{name}: {warnings:?}");
    }
}

#[test]
fn transfer_syntaxes_decode() {
    for name in [
        "g12_implicit_odd_total_length.dcm",
        "g20_empty_slicethickness.dcm",
        "g37_big_endian.dcm",
        "g38_deflated.dcm",
        "g42_jpeg_lossless_sv1.dcm",
        "g44_rle.dcm",
        "g23_signed_12in16_garbage_highbits.dcm",
    ] {
        assert_hu(name);
    }
}

#[test]
fn trailing_garbage_is_ignored_with_warning() {
    let warnings = assert_hu("g26_garbage_after_dataset.dcm");
    assert!(warnings.iter().any(|w| w.contains("37 trailing bytes")), "{warnings:?}");
}

#[test]
fn missing_rescale_is_identity_with_warning() {
    let (min, max, warnings) = range("g21_no_rescale.dcm");
    assert_eq!((min, max), (128.0, 2191.0));
    assert!(warnings.iter().any(|w| w.contains("assumed slope 1")), "{warnings:?}");
}

#[test]
fn fractional_rescale_is_exact() {
    let (min, max, _) = range("g22_fractional_rescale.dcm");
    assert_eq!((min, max), (-960.25, 71.25));
}

#[test]
fn empty_file_is_empty() {
    assert_eq!(read_file(&case("g01_zero_length.dcm")).unwrap_err(), ReadError::Empty);
}

#[test]
fn truncated_file_is_truncated() {
    let err = read_file(&case("g02_truncated_half.dcm")).unwrap_err();
    assert_eq!(err.kind(), "truncated", "{err}");
}

#[test]
fn short_pixel_data_is_rejected() {
    let err = read_file(&case("g27_pixeldata_short.dcm")).unwrap_err();
    assert_eq!(err, ReadError::PixelDataShort { expected: 32768, got: 30720 });
    assert!(err.to_string().contains("pixel data shorter than expected"));
}

#[test]
fn huge_declared_length_is_rejected() {
    let bytes = std::fs::read(case("g53_huge_declared_length.dcm")).unwrap();
    let err = read_bytes(&bytes).unwrap_err();
    assert_eq!(err.kind(), "declared_length_too_large", "{err}");
}

fn decode_one(name: &str) -> penumbra_dicom::StudyDecode {
    penumbra_dicom::decode_study(&[case(name)])
}

#[test]
fn comma_pixel_spacing_is_repaired_with_warning() {
    let study = decode_one("g18_pixelspacing_comma.dcm");
    let series = &study.series[0];
    assert_eq!(series.volume.geometry.spacing_mm[1..], [0.661468, 0.661468]);
    assert!(series.info.warnings.iter().any(|w| w.contains("PixelSpacing") && w.contains("commas")), "{:?}", series.info.warnings);
}

#[test]
fn empty_pixel_spacing_rejects_series() {
    assert!(read_file(&case("g17_empty_pixelspacing.dcm")).is_ok());
    let study = decode_one("g17_empty_pixelspacing.dcm");
    assert!(study.series.is_empty());
    assert!(study.rejected.is_empty());
    let message = study.rejected_series[0].error.to_string();
    assert!(message.starts_with("PixelSpacing is missing or empty"), "{message}");
}

#[test]
fn empty_slice_thickness_does_not_matter() {
    // A single slice: spacing comes from SpacingBetweenSlices (5 mm), never the empty thickness.
    let study = decode_one("g20_empty_slicethickness.dcm");
    let series = &study.series[0];
    assert_eq!(series.volume.geometry.spacing_mm[0], 5.0);
    assert_eq!(series.volume.voxels.shape(), &[1, 1, 128, 128]);
    assert_eq!(series.info.kind, penumbra_dicom::SeriesKind::PlainCt);
}

#[test]
fn identify_reads_ids_without_pixels() {
    let bytes = std::fs::read(case("g60_ctp_series/IM0004.dcm")).unwrap();
    let ids = penumbra_dicom::identify(&bytes).unwrap();
    assert_eq!(ids.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
    assert_eq!(ids.image_position_patient, Some([-158.135803, -179.035797, -75.0]));
    assert!(ids.sop_instance_uid.ends_with("38996379358121494710286183358516815420"));
    // Identification stops before PixelData, so a file cut inside it still identifies.
    let truncated = std::fs::read(case("g02_truncated_half.dcm")).unwrap();
    assert!(penumbra_dicom::identify(&truncated).is_ok());
    assert_eq!(penumbra_dicom::identify(&[]).unwrap_err(), ReadError::Empty);
}

#[test]
fn inspect_reports_series_and_rejections() {
    let report = penumbra_dicom::inspect::inspect(&case("g60_ctp_series")).unwrap();
    assert_eq!(report.files, 13);
    assert_eq!(report.series[0].shape, [4, 3, 128, 128]);
    assert_eq!(report.rejected_files.len(), 1);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["series"][0]["kind"], "dynamic_ctp");
    assert_eq!(json["rejected_files"][0]["error"]["kind"], "duplicate_instance");
    assert!(json["series"][0]["value_min"].as_f64().unwrap() >= -1024.0);
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
