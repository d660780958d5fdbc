//! End-to-end checks of the written outputs against third-party tools: dicom3tools `dciodvfy`
//! for every DICOM object and highdicom for reading the SEG back. The source CT series is written
//! by the test with dicom-object, so the SEG's references and positions are checked against files
//! produced independently of the SEG builder.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use ndarray::Array3;
use penumbra_dicom::{uid::new_uid, SeriesInfo, SeriesKind, SourceInstance, StudyContext};
use penumbra_export::report::{ModelInfo, QaStatus, Report, Thresholds};
use penumbra_export::{
    build_seg, build_sr, build_summary_sc, render_summary, summary_png, volumes_from_labels,
    write_outputs, AlgorithmInfo, ExportError, ExportFiles, SegInput, SegReference, SrInput,
    SummaryInput, VolumeFigures,
};
use penumbra_imaging::{Geometry, LabelVolume};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SLICES: usize = 6;
const ROWS: usize = 64;
const COLUMNS: usize = 64;
/// A made-up name with a non-ASCII letter, to check that names keep their characters.
const PATIENT_NAME: &str = "M\u{fc}ller^Anna";

/// A source CT series written to `dir/source`, with what the decoder would have made of it.
struct Source {
    dir: tempfile::TempDir,
    study: StudyContext,
    info: SeriesInfo,
    geometry: Geometry,
}

fn axial_geometry() -> Geometry {
    Geometry {
        origin_mm: [-25.6, -30.0, 40.0],
        row_dir: [1.0, 0.0, 0.0],
        col_dir: [0.0, 1.0, 0.0],
        normal: [0.0, 0.0, 1.0],
        spacing_mm: [5.0, 0.8, 0.8],
    }
}

/// Returns an oblique geometry: rows turned 30 degrees about the patient axis, tilted 20 degrees.
fn oblique_geometry() -> Geometry {
    let (a, b) = (30f64.to_radians(), 20f64.to_radians());
    let row = [a.cos(), a.sin(), 0.0];
    let col = [-a.sin() * b.cos(), a.cos() * b.cos(), -b.sin()];
    let normal = [
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    ];
    Geometry {
        origin_mm: [10.0, -20.0, 55.5],
        row_dir: row,
        col_dir: col,
        normal,
        spacing_mm: [4.0, 0.7, 0.9],
    }
}

fn write_source(geometry: Geometry) -> Source {
    let dir = tempfile::tempdir().unwrap();
    let source_dir = dir.path().join("source");
    std::fs::create_dir_all(&source_dir).unwrap();
    let study = StudyContext {
        study_instance_uid: new_uid(),
        patient_name: Some(PATIENT_NAME.to_string()),
        patient_id: Some("PHANTOM-001".to_string()),
        patient_birth_date: Some("19600101".to_string()),
        patient_sex: Some("F".to_string()),
        study_date: Some("20261204".to_string()),
        study_time: Some("031500".to_string()),
        study_id: Some("1".to_string()),
        accession_number: Some("ACC1".to_string()),
        referring_physician_name: None,
        study_description: Some("CT perfusion head".to_string()),
    };
    let series_uid = new_uid();
    let frame_of_reference = new_uid();
    let mut slice_sources = Vec::new();
    for z in 0..SLICES {
        let sop_uid = new_uid();
        let position = geometry.position_mm(z as f64, 0.0, 0.0);
        let obj = ct_slice(
            &study,
            &series_uid,
            &frame_of_reference,
            &sop_uid,
            &geometry,
            position,
            z,
        );
        let path = source_dir.join(format!("ct{z:02}.dcm"));
        obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .unwrap()
            .write_to_file(&path)
            .unwrap();
        slice_sources.push(SourceInstance {
            sop_class_uid: uids::CT_IMAGE_STORAGE.to_string(),
            sop_instance_uid: sop_uid,
            frame_number: None,
        });
    }
    let info = SeriesInfo {
        study_instance_uid: study.study_instance_uid.clone(),
        series_instance_uid: series_uid,
        frame_of_reference_uid: Some(frame_of_reference),
        modality: "CT".to_string(),
        series_description: Some("CTP".to_string()),
        series_number: Some(3),
        kind: SeriesKind::DynamicCtp,
        transfer_syntax_uid: uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
        slice_sources,
        instance_count: SLICES,
        warnings: Vec::new(),
    };
    Source {
        dir,
        study,
        info,
        geometry,
    }
}

fn ds(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.6}"))
        .collect::<Vec<_>>()
        .join("\\")
}

fn ct_slice(
    study: &StudyContext,
    series_uid: &str,
    frame_of_reference: &str,
    sop_uid: &str,
    g: &Geometry,
    position: [f64; 3],
    z: usize,
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: &str| {
        obj.put_str(tag, vr, value);
    };
    put(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
    put(tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    put(tags::STUDY_INSTANCE_UID, VR::UI, &study.study_instance_uid);
    put(tags::SERIES_INSTANCE_UID, VR::UI, series_uid);
    put(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference);
    put(tags::MODALITY, VR::CS, "CT");
    put(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put(tags::PATIENT_NAME, VR::PN, PATIENT_NAME);
    put(tags::PATIENT_ID, VR::LO, "PHANTOM-001");
    put(tags::INSTANCE_NUMBER, VR::IS, &(z + 1).to_string());
    put(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL");

    put(tags::IMAGE_POSITION_PATIENT, VR::DS, &ds(&position));
    let [r, c] = [g.row_dir, g.col_dir];
    put(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        &ds(&[r[0], r[1], r[2], c[0], c[1], c[2]]),
    );
    put(
        tags::PIXEL_SPACING,
        VR::DS,
        &ds(&[g.spacing_mm[1], g.spacing_mm[2]]),
    );
    put(tags::SLICE_THICKNESS, VR::DS, &ds(&[g.spacing_mm[0]]));
    put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put(tags::RESCALE_INTERCEPT, VR::DS, "-1024");
    put(tags::RESCALE_SLOPE, VR::DS, "1");

    for (tag, value) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, ROWS as u16),
        (tags::COLUMNS, COLUMNS as u16),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 16),
        (tags::HIGH_BIT, 15),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    }

    let pixels: Vec<u8> = (0..ROWS * COLUMNS)
        .flat_map(|i| (1024u16 + (i % 80) as u16).to_le_bytes())
        .collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(pixels),
    ));
    obj
}

/// Labels with a core box of 2 x 10 x 12 = 240 voxels inside a penumbra box of 4 x 20 x 20
/// = 1600 voxels, so 1360 penumbra voxels, plus a lone 3-voxel penumbra line on slice 0.
fn blob_labels() -> LabelVolume {
    let mut labels = Array3::<u8>::zeros((SLICES, ROWS, COLUMNS));
    for z in 1..5 {
        for y in 20..40 {
            for x in 30..50 {
                labels[[z, y, x]] = 1;
            }
        }
    }
    for z in 2..4 {
        for y in 25..35 {
            for x in 34..46 {
                labels[[z, y, x]] = 2;
            }
        }
    }
    for x in 5..8 {
        labels[[0, 60, x]] = 1;
    }
    labels
}

fn algorithm() -> AlgorithmInfo {
    AlgorithmInfo {
        name: "penumbra-unet".to_string(),
        version: "0.1.0".to_string(),
        model_card_id: "PENUMBRA-UNET-CARD-1".to_string(),
    }
}

fn maps() -> (Array3<f32>, Array3<f32>) {
    let cbf = Array3::from_shape_fn((SLICES, ROWS, COLUMNS), |(_, y, x)| (x + y) as f32 * 0.5);
    let tmax = Array3::from_shape_fn((SLICES, ROWS, COLUMNS), |(_, y, _)| y as f32 * 0.2);
    (cbf, tmax)
}

fn report(study_uid: &str, figures: &VolumeFigures) -> Report {
    Report {
        study_instance_uid: study_uid.to_string(),
        unet: Some(figures.clone()),
        threshold: figures.clone(),
        thresholds: Thresholds {
            core_relative_cbf_below: 0.3,
            tmax_above_s: 6.0,
        },
        deconvolution_method: "oSVD".to_string(),
        model: ModelInfo {
            name: "penumbra-unet".to_string(),
            version: "0.1.0".to_string(),
        },
        confidence: None,
        qa_status: QaStatus::PendingReview,
        reviewed: None,
        assessable: true,
        notes: Vec::new(),
        input_quality: None,
        threshold_details: None,
        timings_s: BTreeMap::from([("export".to_string(), 0.1)]),
        outputs: Vec::new(),
    }
}

/// Builds every output for `labels` on `source` and writes them to `dir/exports`.
fn export_all(source: &Source, labels: &LabelVolume) -> (PathBuf, VolumeFigures) {
    let algorithm = algorithm();
    let figures = volumes_from_labels(labels, &source.geometry);
    let seg = build_seg(&SegInput {
        study: &source.study,
        source: &source.info,
        geometry: &source.geometry,
        labels,
        algorithm: &algorithm,
        series_number: 901,
        content_label: "PENUMBRA_UNET",
        reviewed: false,
    })
    .unwrap();
    let seg_ref = SegReference::from_seg(&seg).unwrap();
    let sr = build_sr(&SrInput {
        study: &source.study,
        source: &source.info,
        seg: &seg_ref,
        figures: &figures,
        algorithm: &algorithm,
        series_number: 903,
        reviewed: false,
    })
    .unwrap();
    let (cbf, tmax) = maps();
    let summary_input = SummaryInput {
        study: &source.study,
        source: &source.info,
        cbf: &cbf,
        tmax: &tmax,
        labels,
        figures: &figures,
        confidence: Some(0.87),
        reviewed: false,
        algorithm: &algorithm,
        series_number: 902,
    };
    let image = render_summary(&summary_input).unwrap();
    let summary = build_summary_sc(&summary_input, &image).unwrap();
    let png = summary_png(&image).unwrap();
    let report = report(&source.study.study_instance_uid, &figures);

    let out = source
        .dir
        .path()
        .join("exports")
        .join(&source.study.study_instance_uid);
    let files = ExportFiles {
        seg: &seg,
        summary: &summary,
        summary_png: &png,
        sr: &sr,
        report: &report,
    };
    let written = write_outputs(&out, &files).unwrap();
    assert_eq!(written.len(), 5);
    (out, figures)
}

fn python() -> PathBuf {
    let repo_venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if repo_venv.exists() {
        return repo_venv;
    }
    PathBuf::from("/work/main/.venv/bin/python")
}

/// Returns the lines of `dciodvfy` output that start with "Error".
fn dciodvfy_errors(path: &Path) -> Vec<String> {
    let output = Command::new("dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy is on PATH");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_string)
        .collect()
}

fn read_seg(seg: &Path, source: &Source) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_seg.py");
    let output = Command::new(python())
        .arg(script)
        .arg(seg)
        .arg(source.dir.path().join("source"))
        .output()
        .expect("python with highdicom is installed");
    assert!(
        output.status.success(),
        "read_seg.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn assert_valid_dicom(out: &Path) {
    for name in ["seg.dcm", "summary.dcm", "sr.dcm"] {
        let errors = dciodvfy_errors(&out.join(name));
        assert!(
            errors.is_empty(),
            "{name} has dciodvfy errors:\n{}",
            errors.join("\n")
        );
    }
}

/// Checks the SEG read back by highdicom against the labels' own figures and the source files.
fn assert_seg_matches(seg: &Value, figures: &VolumeFigures, labels: &LabelVolume, source: &Source) {
    let segments = seg["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0]["number"], 1);
    assert_eq!(segments[0]["label"], "Ischemic core");
    assert_eq!(segments[0]["type"], "ISCHEMICCORE");
    assert_eq!(segments[1]["number"], 2);
    assert_eq!(segments[1]["type"], "PENUMBRA");
    for segment in segments {
        assert_eq!(segment["category"], "49755003");
        assert_eq!(segment["algorithm_type"], "AUTOMATIC");
    }

    assert_eq!(
        seg["counts"]["1"].as_u64().unwrap() as usize,
        figures.core_voxels
    );
    assert_eq!(
        seg["counts"]["2"].as_u64().unwrap() as usize,
        figures.penumbra_voxels
    );
    for z in 0..SLICES {
        let slice = labels.index_axis(ndarray::Axis(0), z);
        let core = slice.iter().filter(|&&v| v == 2).count() as u64;
        let penumbra = slice.iter().filter(|&&v| v == 1).count() as u64;
        assert_eq!(seg["per_slice"]["1"][z], core, "core voxels on slice {z}");
        assert_eq!(
            seg["per_slice"]["2"][z], penumbra,
            "penumbra voxels on slice {z}"
        );
    }
    for (segment, label) in [("1", 2u8), ("2", 1u8)] {
        let expected: u64 = labels
            .iter()
            .enumerate()
            .filter(|(_, &v)| v == label)
            .map(|(i, _)| i as u64)
            .sum();
        assert_eq!(
            seg["index_sums"][segment], expected,
            "pixel positions of segment {segment}"
        );
    }
    let volume_counts: Vec<u64> = seg["volume_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(
        volume_counts,
        vec![figures.core_voxels as u64, figures.penumbra_voxels as u64]
    );
    assert_eq!(seg["volume_shape"][0], SLICES);

    assert_eq!(seg["number_of_frames"], 2 * SLICES);
    let frames = seg["frames"].as_array().unwrap();
    for (i, frame) in frames.iter().enumerate() {
        let (segment, z) = (i / SLICES + 1, i % SLICES);
        assert_eq!(frame["segment"], segment);
        assert_eq!(
            frame["dimension_index"],
            serde_json::json!([segment, z + 1])
        );
        let source_uid = frame["source_uid"].as_str().unwrap();
        assert_eq!(source_uid, source.info.slice_sources[z].sop_instance_uid);
        let expected = seg["source_positions"][source_uid].as_array().unwrap();
        for axis in 0..3 {
            let got = frame["position"][axis].as_f64().unwrap();
            let want = expected[axis].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-3,
                "frame {i} axis {axis}: {got} vs source {want}"
            );
        }
    }
    assert_eq!(seg["patient_name"], PATIENT_NAME);
    assert_eq!(seg["study_uid_matches"], true);
    assert_eq!(seg["frame_of_reference_matches"], true);
}

fn assert_report_matches_seg(out: &Path, seg: &Value) {
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let voxel_ml = seg["voxel_volume_ml"].as_f64().unwrap();
    let core = seg["counts"]["1"].as_f64().unwrap() * voxel_ml;
    let penumbra = seg["counts"]["2"].as_f64().unwrap() * voxel_ml;
    let reported_core = report["unet"]["core_volume_ml"].as_f64().unwrap();
    let reported_penumbra = report["unet"]["penumbra_volume_ml"].as_f64().unwrap();
    assert!(
        (reported_core - core).abs() < 1e-6,
        "report core {reported_core} vs SEG {core}"
    );
    assert!(
        (reported_penumbra - penumbra).abs() < 1e-6,
        "report penumbra {reported_penumbra} vs SEG {penumbra}"
    );
    assert_eq!(
        report["outputs"],
        serde_json::json!([
            "seg.dcm",
            "summary.dcm",
            "summary.png",
            "sr.dcm",
            "report.json"
        ])
    );
    assert_eq!(report["qa_status"], "pending_review");
}

fn read_sr(sr: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_sr.py");
    let output = Command::new(python())
        .arg(script)
        .arg(sr)
        .output()
        .expect("python with highdicom is installed");
    assert!(
        output.status.success(),
        "read_sr.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Checks the measurement report read back by highdicom against the figures and the SEG.
fn assert_sr_matches(out: &Path, seg: &Value, figures: &VolumeFigures, source: &Source) {
    let sr = read_sr(&out.join("sr.dcm"));
    assert_eq!(sr["template"], "1500");
    assert_eq!(sr["preliminary_flag"], "PRELIMINARY");

    let volumetric = sr["volumetric"].as_array().unwrap();
    assert_eq!(volumetric.len(), 2);
    let expected = [
        ("Ischemic core", 1, "ISCHEMICCORE", figures.core_volume_ml),
        ("Penumbra", 2, "PENUMBRA", figures.penumbra_volume_ml),
    ];
    for (group, (tracking, segment, finding, volume)) in volumetric.iter().zip(expected) {
        assert_eq!(group["tracking_identifier"], tracking);
        assert_eq!(group["segment_numbers"], serde_json::json!([segment]));
        assert_eq!(group["seg_sop_instance_uid"], seg["sop_instance_uid"]);
        assert_eq!(
            group["source_series_uid"],
            source.info.series_instance_uid.as_str()
        );
        assert_eq!(group["finding"], finding);
        let measurement = &group["measurements"][0];
        assert_eq!(measurement["name"], "Volume");
        assert_eq!(measurement["unit"], "ml");
        let value = measurement["value"].as_f64().unwrap();
        assert!(
            (value - volume).abs() < 1e-6,
            "{tracking}: SR {value} vs {volume}"
        );
    }

    let mismatch = &sr["other"][0]["measurements"];
    assert_eq!(mismatch[0]["name"], "Mismatch volume");
    let mismatch_ml = mismatch[0]["value"].as_f64().unwrap();
    assert!((mismatch_ml - figures.mismatch_volume_ml).abs() < 1e-6);
    match figures.mismatch_ratio {
        Some(ratio) => {
            assert_eq!(mismatch[1]["name"], "Mismatch ratio");
            assert_eq!(mismatch[1]["unit"], "1");
            let value = mismatch[1]["value"].as_f64().unwrap();
            assert!((value - ratio).abs() < 1e-6, "SR ratio {value} vs {ratio}");
        }
        None => assert_eq!(
            mismatch.as_array().unwrap().len(),
            1,
            "no ratio item without a core"
        ),
    }
}

#[test]
fn axial_outputs_validate_and_read_back() {
    let source = write_source(axial_geometry());
    let labels = blob_labels();
    let (out, figures) = export_all(&source, &labels);

    // 240 core and 1363 penumbra voxels of 5 x 0.8 x 0.8 mm = 3.2 mm^3.
    assert_eq!(figures.core_voxels, 240);
    assert_eq!(figures.penumbra_voxels, 1363);
    assert!((figures.core_volume_ml - 0.768).abs() < 1e-9);
    assert!((figures.penumbra_volume_ml - 4.3616).abs() < 1e-9);

    assert_valid_dicom(&out);
    let seg = read_seg(&out.join("seg.dcm"), &source);
    assert_seg_matches(&seg, &figures, &labels, &source);
    assert_report_matches_seg(&out, &seg);
    assert_sr_matches(&out, &seg, &figures, &source);
}

#[test]
fn oblique_outputs_validate_and_read_back() {
    let source = write_source(oblique_geometry());
    let labels = blob_labels();
    let (out, figures) = export_all(&source, &labels);

    assert_valid_dicom(&out);
    let seg = read_seg(&out.join("seg.dcm"), &source);
    assert_seg_matches(&seg, &figures, &labels, &source);
    assert_report_matches_seg(&out, &seg);
    assert_sr_matches(&out, &seg, &figures, &source);
}

#[test]
fn empty_segmentation_is_valid() {
    let source = write_source(axial_geometry());
    let labels = Array3::<u8>::zeros((SLICES, ROWS, COLUMNS));
    let (out, figures) = export_all(&source, &labels);

    assert_eq!(figures.core_voxels, 0);
    assert_eq!(figures.mismatch_ratio, None);
    assert_valid_dicom(&out);
    let seg = read_seg(&out.join("seg.dcm"), &source);
    assert_seg_matches(&seg, &figures, &labels, &source);
    assert_report_matches_seg(&out, &seg);
    assert_sr_matches(&out, &seg, &figures, &source);

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(report["threshold"]["mismatch_ratio"].is_null());
}

#[test]
fn seg_rejects_bad_labels() {
    let source = write_source(axial_geometry());
    let algorithm = algorithm();
    let mut labels = blob_labels();
    labels[[3, 4, 5]] = 7;
    let input = SegInput {
        study: &source.study,
        source: &source.info,
        geometry: &source.geometry,
        labels: &labels,
        algorithm: &algorithm,
        series_number: 901,
        content_label: "PENUMBRA",
        reviewed: false,
    };
    match build_seg(&input) {
        Err(ExportError::InvalidLabel {
            value: 7,
            z: 3,
            y: 4,
            x: 5,
        }) => {}
        other => panic!("expected InvalidLabel at (3, 4, 5), got {other:?}"),
    }

    let short = Array3::<u8>::zeros((SLICES - 1, ROWS, COLUMNS));
    let result = build_seg(&SegInput {
        labels: &short,
        ..input
    });
    assert!(
        matches!(result, Err(ExportError::InvalidInput(_))),
        "{result:?}"
    );

    let mut no_frame_of_reference = source.info.clone();
    no_frame_of_reference.frame_of_reference_uid = None;
    let labels = blob_labels();
    let result = build_seg(&SegInput {
        labels: &labels,
        source: &no_frame_of_reference,
        ..input
    });
    assert!(
        matches!(result, Err(ExportError::InvalidInput(_))),
        "{result:?}"
    );
}

#[test]
fn seg_references_multiframe_source_frames() {
    let mut source = write_source(axial_geometry());
    let enhanced_uid = new_uid();
    for (z, slice) in source.info.slice_sources.iter_mut().enumerate() {
        slice.sop_class_uid = uids::ENHANCED_CT_IMAGE_STORAGE.to_string();
        slice.sop_instance_uid = enhanced_uid.clone();
        slice.frame_number = Some(z as u32 + 1);
    }
    let algorithm = algorithm();
    let labels = blob_labels();
    let seg = build_seg(&SegInput {
        study: &source.study,
        source: &source.info,
        geometry: &source.geometry,
        labels: &labels,
        algorithm: &algorithm,
        series_number: 901,
        content_label: "PENUMBRA",
        reviewed: true,
    })
    .unwrap();

    // One referenced instance, however many slices point into it.
    let series = &seg
        .get(tags::REFERENCED_SERIES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    let instances = series
        .get(tags::REFERENCED_INSTANCE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    assert_eq!(instances.len(), 1);

    let frames = seg
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    assert_eq!(frames.len(), 2 * SLICES);
    for (i, frame) in frames.iter().enumerate() {
        let derivation = &frame
            .get(tags::DERIVATION_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let image = &derivation
            .get(tags::SOURCE_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let frame_number: i32 = image
            .get(tags::REFERENCED_FRAME_NUMBER)
            .unwrap()
            .to_int()
            .unwrap();
        assert_eq!(frame_number, (i % SLICES) as i32 + 1, "frame {i}");
    }

    let path = source.dir.path().join("seg-multiframe.dcm");
    std::fs::write(
        &path,
        penumbra_export::report::encode_dicom(&seg, "seg.dcm").unwrap(),
    )
    .unwrap();
    let errors = dciodvfy_errors(&path);
    assert!(errors.is_empty(), "dciodvfy errors:\n{}", errors.join("\n"));
}
