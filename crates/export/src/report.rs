//! Volume figures from label counts, the JSON report and the atomic writer for all outputs.
//!
//! The report is written to `<data_dir>/exports/<StudyInstanceUID>/report.json`. It carries UIDs
//! and figures only, never patient names or IDs.

use crate::ExportError;
use dicom_dictionary_std::uids;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use penumbra_imaging::{labels::count, Geometry, Label, LabelVolume};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// DEFUSE 3 trial imaging eligibility: core below 70 mL, mismatch ratio at least 1.8 and
/// mismatch volume at least 15 mL.
const DEFUSE3_MAX_CORE_ML: f64 = 70.0;
const DEFUSE3_MIN_RATIO: f64 = 1.8;
const DEFUSE3_MIN_MISMATCH_ML: f64 = 15.0;

/// EXTEND and EXTEND-IA trial imaging eligibility: core below 70 mL, mismatch ratio above 1.2
/// and mismatch volume above 10 mL.
const EXTEND_MAX_CORE_ML: f64 = 70.0;
const EXTEND_MIN_RATIO: f64 = 1.2;
const EXTEND_MIN_MISMATCH_ML: f64 = 10.0;

/// Core, penumbra and mismatch figures of one segmentation, with the trial criteria they meet.
///
/// The hypoperfused volume (Tmax above threshold) is core plus penumbra, so the mismatch volume
/// (hypoperfused minus core) equals the penumbra volume and the mismatch ratio is
/// hypoperfused / core. The criteria are reported for information and decide nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeFigures {
    pub core_volume_ml: f64,
    pub penumbra_volume_ml: f64,
    pub mismatch_volume_ml: f64,
    /// Hypoperfused volume over core volume; `None` (JSON null) when the core is empty.
    pub mismatch_ratio: Option<f64>,
    pub defuse3_met: bool,
    pub extend_met: bool,
    pub core_voxels: usize,
    pub penumbra_voxels: usize,
}

/// Computes the figures of `labels` from voxel counts times the voxel volume of `geometry`.
///
/// With an empty core the ratio is undefined (reported as `None`) but unbounded, so the ratio
/// criteria count as met and eligibility rests on the mismatch volume alone.
pub fn volumes_from_labels(labels: &LabelVolume, geometry: &Geometry) -> VolumeFigures {
    let voxel_ml = geometry.voxel_volume_ml();
    let core_voxels = count(labels, Label::Core);
    let penumbra_voxels = count(labels, Label::Penumbra);
    let core_volume_ml = core_voxels as f64 * voxel_ml;
    let penumbra_volume_ml = penumbra_voxels as f64 * voxel_ml;
    let mismatch_volume_ml = penumbra_volume_ml;
    let mismatch_ratio =
        (core_voxels > 0).then(|| (core_voxels + penumbra_voxels) as f64 / core_voxels as f64);

    let ratio_at_least = |min: f64| mismatch_ratio.is_none_or(|r| r >= min);
    let ratio_above = |min: f64| mismatch_ratio.is_none_or(|r| r > min);
    let defuse3_met = core_volume_ml < DEFUSE3_MAX_CORE_ML
        && ratio_at_least(DEFUSE3_MIN_RATIO)
        && mismatch_volume_ml >= DEFUSE3_MIN_MISMATCH_ML;
    let extend_met = core_volume_ml < EXTEND_MAX_CORE_ML
        && ratio_above(EXTEND_MIN_RATIO)
        && mismatch_volume_ml > EXTEND_MIN_MISMATCH_ML;

    VolumeFigures {
        core_volume_ml,
        penumbra_volume_ml,
        mismatch_volume_ml,
        mismatch_ratio,
        defuse3_met,
        extend_met,
        core_voxels,
        penumbra_voxels,
    }
}

/// Thresholds used by the threshold labelling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Core: relative CBF below this fraction of normal tissue (e.g. 0.30).
    pub core_relative_cbf_below: f64,
    /// Hypoperfused tissue: Tmax above this many seconds (e.g. 6.0).
    pub tmax_above_s: f64,
}

/// The segmentation model that produced the `unet` figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
}

/// Confidence in the U-Net result: an overall score in [0, 1] and its named components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    pub score: f64,
    pub components: BTreeMap<String, f64>,
}

/// Radiologist review state of a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QaStatus {
    /// Not yet reviewed: outputs carry "NOT FOR DIAGNOSTIC USE WITHOUT REVIEW".
    PendingReview,
    /// Confident enough to be released without review; still marked unreviewed.
    NotRequired,
    Approved,
    Rejected,
}

/// The JSON report, `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub study_instance_uid: String,
    /// Figures of the U-Net segmentation; `None` when inference did not run.
    pub unet: Option<VolumeFigures>,
    /// Figures of the threshold segmentation.
    pub threshold: VolumeFigures,
    pub thresholds: Thresholds,
    /// Deconvolution used for the maps, e.g. `oSVD`.
    pub deconvolution_method: String,
    pub model: ModelInfo,
    pub confidence: Option<Confidence>,
    pub qa_status: QaStatus,
    /// Figures of the labels a radiologist accepted or corrected, once reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed: Option<VolumeFigures>,
    /// False when the input cannot support a segmentation; `unet` is then `None`.
    pub assessable: bool,
    /// Plain-language reasons behind a lowered confidence or a study that is not assessable.
    pub notes: Vec<String>,
    /// Input-quality measures of the dynamic acquisition (bolus, AIF, noise, motion), when measured.
    pub input_quality: Option<serde_json::Value>,
    /// Threshold rules and the reference tissue they were measured against.
    pub threshold_details: Option<serde_json::Value>,
    /// Wall time per stage in seconds, keyed by stage name.
    pub timings_s: BTreeMap<String, f64>,
    /// Names of the files written next to the report; [`write_outputs`] fills this in.
    pub outputs: Vec<String>,
}

/// The objects [`write_outputs`] writes into one study's export folder.
#[derive(Debug, Clone, Copy)]
pub struct ExportFiles<'a> {
    pub seg: &'a InMemDicomObject,
    pub summary: &'a InMemDicomObject,
    pub summary_png: &'a [u8],
    pub sr: &'a InMemDicomObject,
    pub report: &'a Report,
}

/// File names written by [`write_outputs`], in writing order; `report.json` comes last so that
/// its presence means every other output is complete.
pub const OUTPUT_FILES: [&str; 5] = [
    "seg.dcm",
    "summary.dcm",
    "summary.png",
    "sr.dcm",
    "report.json",
];

/// Writes `seg.dcm`, `summary.dcm`, `summary.png`, `sr.dcm` and `report.json` into `dir`
/// (created if missing), each atomically: a temporary file in `dir`, fsync, rename, then fsync of
/// `dir`. DICOM files use Explicit VR Little Endian. Returns the written paths.
pub fn write_outputs(dir: &Path, files: &ExportFiles) -> Result<Vec<PathBuf>, ExportError> {
    fs::create_dir_all(dir).map_err(|source| io_error("create directory", dir, source))?;

    let [seg, summary, png, sr, report] = OUTPUT_FILES;
    let mut written = Vec::with_capacity(OUTPUT_FILES.len());
    written.push(write_atomic(dir, seg, &encode_dicom(files.seg, seg)?)?);
    written.push(write_atomic(
        dir,
        summary,
        &encode_dicom(files.summary, summary)?,
    )?);
    written.push(write_atomic(dir, png, files.summary_png)?);
    written.push(write_atomic(dir, sr, &encode_dicom(files.sr, sr)?)?);

    let mut report_out = files.report.clone();
    report_out.outputs = OUTPUT_FILES.iter().map(|name| name.to_string()).collect();
    let json = serde_json::to_vec_pretty(&report_out)?;
    written.push(write_atomic(dir, report, &json)?);

    sync_dir(dir)?;
    Ok(written)
}

/// Encodes `obj` as a DICOM file (preamble, file meta, Explicit VR Little Endian data set).
pub fn encode_dicom(obj: &InMemDicomObject, name: &str) -> Result<Vec<u8>, ExportError> {
    let encode_error = |message: String| ExportError::Encode {
        file: name.to_string(),
        message,
    };
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_version_name(format!("PENUMBRA_{}", env!("CARGO_PKG_VERSION")));
    let file = obj
        .clone()
        .with_meta(meta)
        .map_err(|e| encode_error(e.to_string()))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| encode_error(e.to_string()))?;
    Ok(bytes)
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, ExportError> {
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&temp).map_err(|source| io_error("create", &temp, source))?;
    file.write_all(bytes)
        .map_err(|source| io_error("write", &temp, source))?;
    file.sync_all()
        .map_err(|source| io_error("fsync", &temp, source))?;
    drop(file);
    fs::rename(&temp, &target).map_err(|source| io_error("rename into place", &target, source))?;
    Ok(target)
}

fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    let handle = File::open(dir).map_err(|source| io_error("open directory", dir, source))?;
    handle
        .sync_all()
        .map_err(|source| io_error("fsync directory", dir, source))
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> ExportError {
    ExportError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn geometry(spacing_mm: [f64; 3]) -> Geometry {
        Geometry {
            origin_mm: [0.0; 3],
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing_mm,
        }
    }

    /// Computes the figures of 1 mL voxels (10 x 10 x 10 mm): `core` core and `penumbra` penumbra voxels.
    fn figures(core: usize, penumbra: usize) -> VolumeFigures {
        let mut labels = Array3::<u8>::zeros((1, 10, 20));
        let mut cells = labels.iter_mut();
        cells
            .by_ref()
            .take(core)
            .for_each(|v| *v = Label::Core as u8);
        cells
            .take(penumbra)
            .for_each(|v| *v = Label::Penumbra as u8);
        volumes_from_labels(&labels, &geometry([10.0, 10.0, 10.0]))
    }

    #[test]
    fn volumes_count_times_voxel_volume() {
        let mut labels = Array3::<u8>::zeros((2, 4, 4));
        labels[[0, 1, 1]] = 2;
        labels[[1, 2, 2]] = 2;
        labels[[1, 0, 0]] = 1;
        labels[[1, 0, 1]] = 1;
        labels[[1, 0, 2]] = 1;
        // 5 mm x 0.5 mm x 0.4 mm = 1 mm^3 = 0.001 mL per voxel.
        let f = volumes_from_labels(&labels, &geometry([5.0, 0.5, 0.4]));
        assert_eq!(f.core_voxels, 2);
        assert_eq!(f.penumbra_voxels, 3);
        assert!((f.core_volume_ml - 0.002).abs() < 1e-12);
        assert!((f.penumbra_volume_ml - 0.003).abs() < 1e-12);
        assert!((f.mismatch_volume_ml - 0.003).abs() < 1e-12);
        assert!((f.mismatch_ratio.unwrap() - 2.5).abs() < 1e-12);
    }

    #[test]
    fn defuse3_boundaries() {
        // Ratio exactly 1.8 (core 20, hypoperfused 36) with mismatch 16 mL meets DEFUSE 3.
        assert!(figures(20, 16).defuse3_met);
        // Mismatch 14 mL (core 10, ratio 2.4) misses the 15 mL floor.
        assert!(!figures(10, 14).defuse3_met);
        // Mismatch exactly 15 mL meets it.
        assert!(figures(10, 15).defuse3_met);
        // Ratio 1.75 (core 20, penumbra 15) misses 1.8.
        assert!(!figures(20, 15).defuse3_met);
        // Core 70 mL is not below 70.
        assert!(!figures(70, 100).defuse3_met);
    }

    #[test]
    fn extend_boundaries() {
        // Mismatch exactly 10 mL is not above 10.
        assert!(!figures(5, 10).extend_met);
        assert!(figures(5, 11).extend_met);
        // Ratio exactly 1.2 (core 60, penumbra 12) is not above 1.2.
        assert!(!figures(60, 12).extend_met);
        assert!(figures(60, 13).extend_met);
        assert!(!figures(70, 50).extend_met);
    }

    #[test]
    fn empty_core_has_null_ratio() {
        let f = figures(0, 20);
        assert_eq!(f.mismatch_ratio, None);
        assert!(f.defuse3_met);
        assert!(f.extend_met);
        let json = serde_json::to_value(&f).unwrap();
        assert!(json["mismatch_ratio"].is_null());

        let nothing = figures(0, 0);
        assert!(!nothing.defuse3_met);
        assert!(!nothing.extend_met);
    }

    #[test]
    fn write_outputs_replaces_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("exports").join("1.2.3");
        let object = InMemDicomObject::from_element_iter([
            dicom_core::DataElement::new(
                dicom_dictionary_std::tags::SOP_CLASS_UID,
                dicom_core::VR::UI,
                uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            ),
            dicom_core::DataElement::new(
                dicom_dictionary_std::tags::SOP_INSTANCE_UID,
                dicom_core::VR::UI,
                "1.2.3.4",
            ),
        ]);
        let report = Report {
            study_instance_uid: "1.2.3".to_string(),
            unet: None,
            threshold: figures(1, 2),
            thresholds: Thresholds {
                core_relative_cbf_below: 0.3,
                tmax_above_s: 6.0,
            },
            deconvolution_method: "oSVD".to_string(),
            model: ModelInfo {
                name: "unet".to_string(),
                version: "1".to_string(),
            },
            confidence: None,
            qa_status: QaStatus::PendingReview,
            reviewed: None,
            assessable: true,
            notes: Vec::new(),
            input_quality: None,
            threshold_details: None,
            timings_s: BTreeMap::new(),
            outputs: Vec::new(),
        };
        let files = ExportFiles {
            seg: &object,
            summary: &object,
            summary_png: b"not checked here",
            sr: &object,
            report: &report,
        };

        write_outputs(&out, &files).unwrap();
        let written = write_outputs(&out, &files).unwrap();

        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, OUTPUT_FILES);
        let mut entries: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [
                "report.json",
                "seg.dcm",
                "sr.dcm",
                "summary.dcm",
                "summary.png"
            ]
        );

        let seg = fs::read(out.join("seg.dcm")).unwrap();
        assert_eq!(&seg[128..132], b"DICM");
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("report.json")).unwrap()).unwrap();
        assert!(json["unet"].is_null());
        assert_eq!(json["outputs"][4], "report.json");
        assert_eq!(json["qa_status"], "pending_review");
    }

    #[test]
    fn write_outputs_reports_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("exports");
        fs::write(&blocker, b"a file where the directory should be").unwrap();
        let object = InMemDicomObject::new_empty();
        let report = Report {
            study_instance_uid: "1.2.3".to_string(),
            unet: None,
            threshold: figures(0, 0),
            thresholds: Thresholds {
                core_relative_cbf_below: 0.3,
                tmax_above_s: 6.0,
            },
            deconvolution_method: "oSVD".to_string(),
            model: ModelInfo {
                name: "unet".to_string(),
                version: "1".to_string(),
            },
            confidence: None,
            qa_status: QaStatus::Approved,
            reviewed: None,
            assessable: true,
            notes: Vec::new(),
            input_quality: None,
            threshold_details: None,
            timings_s: BTreeMap::new(),
            outputs: Vec::new(),
        };
        let files = ExportFiles {
            seg: &object,
            summary: &object,
            summary_png: &[],
            sr: &object,
            report: &report,
        };
        let result = write_outputs(&blocker.join("1.2.3"), &files);
        match result {
            Err(ExportError::Io {
                action: "create directory",
                ..
            }) => {}
            other => panic!("expected an I/O error creating the directory, got {other:?}"),
        }
    }
}
