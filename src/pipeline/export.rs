//! Export stage: DICOM SEG, SR and summary image, the JSON report, forwarding and the QA queue.
//!
//! The SEG carries the U-Net labels on the source series' grid. An uncertain study is queued for
//! review; with `confidence.hold_until_reviewed` its DICOM outputs wait for the decision,
//! otherwise they go out at once marked unreviewed. A study whose input is not assessable gets a
//! report that states it, no segmentation, and a place at the front of the review queue.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dicom_object::InMemDicomObject;
use ndarray::Array3;
use penumbra_dicom::{DecodedSeries, SeriesInfo, StudyContext};
use penumbra_imaging::{Geometry, LabelVolume};
use serde::{Deserialize, Serialize};
use penumbra_export::report::{Confidence as ReportConfidence, ModelInfo, QaStatus, Report, Thresholds};
use penumbra_export::{
    build_seg, build_sr, build_summary_sc, render_summary, summary_png, volumes_from_labels,
    write_outputs, AlgorithmInfo, ExportFiles, SegInput, SegReference, SrInput, SummaryInput,
};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::job::Job;
use super::stage::{Stage, StageError, StageName};
use super::resample::{relative_cbf, tissue_channel};
use crate::config::ExportFormat;
use crate::confidence::{Confidence, LesionVolumes};
use crate::outbox::{Destination, Outbox};
use crate::qa::files::CaseMaps;
use crate::qa::store::{CaseVolumes, NewCase, QaStore};

/// Series numbers of Penumbra's own objects in the source study.
const SEG_SERIES_NUMBER: i32 = 901;
const SUMMARY_SERIES_NUMBER: i32 = 902;
const SR_SERIES_NUMBER: i32 = 903;

/// DICOM outputs that can be forwarded, with the `export.formats` value that selects each, in
/// sending order.
const FORWARDABLE: [(ExportFormat, &str); 3] =
    [(ExportFormat::Seg, "seg.dcm"), (ExportFormat::Sr, "sr.dcm"), (ExportFormat::SummaryImage, "summary.dcm")];

/// File in each export folder with what a re-export after review needs besides the QA case.
pub const EXPORT_INPUTS: &str = "export-inputs.json";

/// The source attributes an export is built from, kept for re-export after review.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportInputs {
    pub study: StudyContext,
    pub source: SeriesInfo,
    pub geometry: Geometry,
    pub algorithm: AlgorithmInfo,
    /// Confidence score shown on the summary image.
    pub confidence: Option<f64>,
}

/// The maps drawn on the summary image, on the label grid.
#[derive(Clone, Copy)]
pub struct MapsToShow<'a> {
    pub cbf: &'a Array3<f32>,
    pub tmax: &'a Array3<f32>,
}

/// SEG, SR and summary image of one set of labels.
pub struct Objects {
    pub seg: InMemDicomObject,
    pub sr: InMemDicomObject,
    pub summary: InMemDicomObject,
    pub summary_png: Vec<u8>,
}

impl Objects {
    /// Returns the files `write_outputs` writes, with `report` last.
    pub fn files<'a>(&'a self, report: &'a Report) -> ExportFiles<'a> {
        ExportFiles { seg: &self.seg, summary: &self.summary, summary_png: &self.summary_png, sr: &self.sr, report }
    }
}

/// Builds the SEG, the SR that references it and the summary image for `labels`; `reviewed`
/// marks them final and drops the "not for diagnostic use without review" line.
pub fn build_objects(
    inputs: &ExportInputs,
    labels: &LabelVolume,
    maps: MapsToShow,
    reviewed: bool,
) -> Result<Objects, String> {
    let info = &inputs.source;
    let figures = volumes_from_labels(labels, &inputs.geometry);
    let failed = |what: &str, e: penumbra_export::ExportError| {
        format!("cannot build the {what} for series {}: {e}", info.series_instance_uid)
    };

    let seg = build_seg(&SegInput {
        study: &inputs.study,
        source: info,
        geometry: &inputs.geometry,
        labels,
        algorithm: &inputs.algorithm,
        series_number: SEG_SERIES_NUMBER,
        content_label: "PENUMBRA",
        reviewed,
    })
    .map_err(|e| failed("SEG", e))?;
    let seg_reference = SegReference::from_seg(&seg).map_err(|e| failed("SEG reference", e))?;
    let sr = build_sr(&SrInput {
        study: &inputs.study,
        source: info,
        seg: &seg_reference,
        figures: &figures,
        algorithm: &inputs.algorithm,
        series_number: SR_SERIES_NUMBER,
        reviewed,
    })
    .map_err(|e| failed("SR", e))?;

    let summary_input = SummaryInput {
        study: &inputs.study,
        source: info,
        cbf: maps.cbf,
        tmax: maps.tmax,
        labels,
        figures: &figures,
        confidence: inputs.confidence,
        reviewed,
        algorithm: &inputs.algorithm,
        series_number: SUMMARY_SERIES_NUMBER,
    };
    let image = render_summary(&summary_input).map_err(|e| failed("summary image", e))?;
    let summary = build_summary_sc(&summary_input, &image).map_err(|e| failed("summary image", e))?;
    let summary_png = summary_png(&image).map_err(|e| failed("summary PNG", e))?;
    Ok(Objects { seg, sr, summary, summary_png })
}

/// Returns the DICOM files of an export folder that `formats` selects for forwarding.
pub fn forwarded_files(dir: &Path, formats: &[ExportFormat]) -> Vec<PathBuf> {
    let forwarded = FORWARDABLE.iter().filter(|(format, _)| formats.contains(format));
    forwarded.map(|(_, name)| dir.join(name)).collect()
}

/// Writes `value` as pretty JSON to `path` atomically: temporary file, fsync, rename, folder fsync.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let json = serde_json::to_vec_pretty(value).map_err(|e| format!("cannot encode {}: {e}", path.display()))?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, json).map_err(io)?;
    std::fs::File::open(&temporary).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Where results go and what decides review.
pub struct ExportStage {
    exports_dir: PathBuf,
    outbox: Option<Arc<Outbox>>,
    destinations: Vec<Destination>,
    formats: Vec<ExportFormat>,
    qa: Option<Arc<dyn QaStore>>,
    review_below: f64,
    hold_until_reviewed: bool,
    algorithm: AlgorithmInfo,
    thresholds: Thresholds,
}

/// Everything [`ExportStage::new`] needs.
pub struct ExportTargets {
    pub data_dir: PathBuf,
    pub outbox: Option<Arc<Outbox>>,
    pub destinations: Vec<Destination>,
    /// DICOM outputs sent to the destinations.
    pub formats: Vec<ExportFormat>,
    pub qa: Option<Arc<dyn QaStore>>,
    pub review_below: f64,
    pub hold_until_reviewed: bool,
    pub algorithm: AlgorithmInfo,
    pub thresholds: Thresholds,
}

impl ExportStage {
    pub fn new(targets: ExportTargets) -> Self {
        Self {
            exports_dir: targets.data_dir.join("exports"),
            outbox: targets.outbox,
            destinations: targets.destinations,
            formats: targets.formats,
            qa: targets.qa,
            review_below: targets.review_below,
            hold_until_reviewed: targets.hold_until_reviewed,
            algorithm: targets.algorithm,
            thresholds: targets.thresholds,
        }
    }
}

impl Stage for ExportStage {
    fn name(&self) -> StageName {
        StageName::Export
    }

    fn process(&self, mut job: Job) -> Result<Job, StageError> {
        let outputs = Outputs::gather(&job)?;
        let dir = self.exports_dir.join(&job.study_instance_uid);
        let confidence = outputs.confidence;

        if !confidence.assessable {
            self.queue_for_review(&job, &outputs)?;
            let report = self.report(&job, &outputs, QaStatus::PendingReview);
            write_json(&dir.join("report.json"), &report).map_err(|e| StageError::Failed(e.into()))?;
            warn!(reasons = ?confidence.reasons, "Study not assessable: no segmentation exported");
            job.artifacts.report = Some(report_json(&report));
            return Ok(job);
        }

        let needs_review = confidence.score < self.review_below;
        if needs_review {
            self.queue_for_review(&job, &outputs)?;
        }
        let qa_status = if needs_review { QaStatus::PendingReview } else { QaStatus::NotRequired };
        let report = self.report(&job, &outputs, qa_status);
        let written = self.write_files(&dir, &outputs, &report)?;
        let held = needs_review && self.hold_until_reviewed;
        if held {
            info!("Outputs held until a radiologist reviews the case");
        } else {
            self.forward(&written)?;
        }

        info!(
            core_ml = report.unet.as_ref().map(|f| f.core_volume_ml),
            penumbra_ml = report.unet.as_ref().map(|f| f.penumbra_volume_ml),
            score = confidence.score,
            needs_review,
            held,
            "Study exported"
        );
        job.artifacts.report = Some(report_json(&report));
        Ok(job)
    }
}

/// References into the job that every output needs.
struct Outputs<'a> {
    series: &'a DecodedSeries,
    study: &'a StudyContext,
    perfusion: &'a super::perfusion::PerfusionArtifacts,
    unet: &'a super::infer::UnetArtifacts,
    confidence: &'a Confidence,
}

impl<'a> Outputs<'a> {
    fn gather(job: &'a Job) -> Result<Self, StageError> {
        let missing = |what: &str| StageError::Failed(format!("export stage ran without {what}").into());
        let decoded = job.artifacts.decoded.as_ref().ok_or_else(|| missing("decoded series"))?;
        let perfusion = job.artifacts.perfusion.as_ref().ok_or_else(|| missing("perfusion results"))?;
        let unet = job.artifacts.unet.as_ref().ok_or_else(|| missing("U-Net results"))?;
        let confidence = job.artifacts.confidence.as_ref().ok_or_else(|| missing("a confidence score"))?;
        let series = decoded.series.get(perfusion.source_series).ok_or_else(|| missing("the source series"))?;
        Ok(Self { series, study: &series.study, perfusion, unet, confidence })
    }
}

impl ExportStage {
    fn report(&self, job: &Job, outputs: &Outputs, qa_status: QaStatus) -> Report {
        let geometry = &outputs.perfusion.maps.geometry;
        let timings_s: BTreeMap<String, f64> =
            job.timings.iter().map(|t| (t.stage.to_string(), t.elapsed.as_secs_f64())).collect();
        Report {
            study_instance_uid: job.study_instance_uid.clone(),
            unet: outputs.confidence.assessable.then(|| volumes_from_labels(&outputs.unet.labels, geometry)),
            threshold: volumes_from_labels(&outputs.perfusion.threshold.labels, geometry),
            thresholds: self.thresholds.clone(),
            deconvolution_method: outputs.perfusion.method.clone(),
            model: ModelInfo { name: self.algorithm.name.clone(), version: self.algorithm.version.clone() },
            confidence: Some(ReportConfidence {
                score: outputs.confidence.score,
                components: outputs.confidence.components.clone(),
            }),
            qa_status,
            reviewed: None,
            assessable: outputs.confidence.assessable,
            notes: report_notes(job, outputs.confidence),
            input_quality: outputs.perfusion.quality.as_ref().and_then(|q| serde_json::to_value(q).ok()),
            threshold_details: serde_json::to_value(&outputs.perfusion.threshold).ok(),
            timings_s,
            outputs: Vec::new(),
        }
    }

    fn write_files(&self, dir: &Path, outputs: &Outputs, report: &Report) -> Result<Vec<PathBuf>, StageError> {
        let geometry = &outputs.perfusion.maps.geometry;
        let inputs = ExportInputs {
            study: outputs.study.clone(),
            source: outputs.series.info.clone(),
            geometry: geometry.clone(),
            algorithm: self.algorithm.clone(),
            confidence: Some(outputs.confidence.score),
        };
        let maps = MapsToShow { cbf: &outputs.perfusion.maps.cbf, tmax: &outputs.perfusion.maps.tmax };
        let objects = build_objects(&inputs, &outputs.unet.labels, maps, false).map_err(|e| StageError::Failed(e.into()))?;

        write_outputs(dir, &objects.files(report)).map_err(|e| StageError::Failed(format!("cannot write outputs: {e}").into()))?;
        write_json(&dir.join(EXPORT_INPUTS), &inputs).map_err(|e| StageError::Failed(e.into()))?;
        Ok(forwarded_files(dir, &self.formats))
    }

    fn forward(&self, files: &[PathBuf]) -> Result<(), StageError> {
        let Some(outbox) = &self.outbox else { return Ok(()) };
        for destination in &self.destinations {
            for file in files {
                outbox.enqueue(destination, file).map_err(|e| {
                    StageError::Failed(format!("cannot queue {} for {}: {e}", file.display(), destination.name).into())
                })?;
            }
        }
        Ok(())
    }

    fn queue_for_review(&self, job: &Job, outputs: &Outputs) -> Result<(), StageError> {
        let Some(store) = &self.qa else {
            warn!("Study needs review but no QA store is configured");
            return Ok(());
        };
        let geometry = &outputs.perfusion.maps.geometry;
        let lesion = |labels| {
            let f = volumes_from_labels(labels, geometry);
            LesionVolumes { core_ml: f.core_volume_ml, hypoperfused_ml: f.core_volume_ml + f.penumbra_volume_ml }
        };
        let case = NewCase {
            study_uid: job.study_instance_uid.clone(),
            arrival: OffsetDateTime::now_utc(),
            // A study that cannot be assessed is reviewed first: it has no segmentation at all.
            urgency: if outputs.confidence.assessable { 0 } else { 1 },
            confidence: outputs.confidence.clone(),
            volumes: CaseVolumes {
                unet: lesion(&outputs.unet.labels),
                threshold: lesion(&outputs.perfusion.threshold.labels),
            },
            model_version: self.algorithm.version.clone(),
            maps: CaseMaps {
                cbf: outputs.perfusion.maps.cbf.clone(),
                cbv: outputs.perfusion.maps.cbv.clone(),
                mtt: outputs.perfusion.maps.mtt.clone(),
                tmax: outputs.perfusion.maps.tmax.clone(),
                rcbf: relative_cbf(&outputs.perfusion.maps, &outputs.perfusion.threshold.reference),
                tissue: tissue_channel(&outputs.perfusion.maps),
                unet_labels: outputs.unet.labels.clone(),
                threshold_labels: outputs.perfusion.threshold.labels.clone(),
                spacing_mm: geometry.spacing_mm,
            },
        };
        let id = store
            .enqueue(case)
            .map_err(|e| StageError::Failed(format!("cannot queue the study for review: {e}").into()))?;
        info!(case_id = %id, score = outputs.confidence.score, "Study queued for radiologist review");
        Ok(())
    }
}

/// Returns the confidence reasons followed by every file and series the decoder set aside.
fn report_notes(job: &Job, confidence: &Confidence) -> Vec<String> {
    let mut notes = confidence.reasons.clone();
    if let Some(decoded) = &job.artifacts.decoded {
        for file in &decoded.rejected {
            notes.push(format!("file {} set aside: {}", file.path.display(), file.error));
        }
        for series in &decoded.rejected_series {
            notes.push(format!("series {} set aside: {}", series.series_instance_uid, series.error));
        }
    }
    notes
}

fn report_json(report: &Report) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}
