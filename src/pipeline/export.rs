//! Export stage: DICOM SEG, SR and summary image, the JSON report, forwarding and the QA queue.
//!
//! The SEG carries the U-Net labels on the source series' grid. An uncertain study is queued for
//! review; with `confidence.hold_until_reviewed` its DICOM outputs wait for the decision,
//! otherwise they go out at once marked unreviewed. A study whose input is not assessable gets a
//! report that says so, no segmentation, and a place at the front of the review queue.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use penumbra_dicom::{DecodedSeries, StudyContext};
use penumbra_export::report::{Confidence as ReportConfidence, ModelInfo, QaStatus, Report, Thresholds};
use penumbra_export::{
    build_seg, build_sr, build_summary_sc, render_summary, summary_png, volumes_from_labels,
    write_outputs, AlgorithmInfo, ExportFiles, SegInput, SegReference, SrInput, SummaryInput,
};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::job::Job;
use super::stage::{Stage, StageError, StageName};
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
    /// Which DICOM outputs go to the destinations.
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
            write_report_only(&dir, &report)?;
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
            assessable: outputs.confidence.assessable,
            notes: outputs.confidence.reasons.clone(),
            input_quality: outputs.perfusion.quality.as_ref().and_then(|q| serde_json::to_value(q).ok()),
            threshold_details: serde_json::to_value(&outputs.perfusion.threshold).ok(),
            timings_s,
            outputs: Vec::new(),
        }
    }

    fn write_files(&self, dir: &Path, outputs: &Outputs, report: &Report) -> Result<Vec<PathBuf>, StageError> {
        let info = &outputs.series.info;
        let geometry = &outputs.perfusion.maps.geometry;
        let figures = report.unet.clone().unwrap_or_else(|| volumes_from_labels(&outputs.unet.labels, geometry));
        let failed = |what: &str, e: penumbra_export::ExportError| {
            StageError::Failed(format!("cannot build the {what} for series {}: {e}", info.series_instance_uid).into())
        };

        let seg = build_seg(&SegInput {
            study: outputs.study,
            source: info,
            geometry,
            labels: &outputs.unet.labels,
            algorithm: &self.algorithm,
            series_number: SEG_SERIES_NUMBER,
            content_label: "PENUMBRA",
            reviewed: false,
        })
        .map_err(|e| failed("SEG", e))?;
        let seg_reference = SegReference::from_seg(&seg).map_err(|e| failed("SEG reference", e))?;
        let sr = build_sr(&SrInput {
            study: outputs.study,
            source: info,
            seg: &seg_reference,
            figures: &figures,
            algorithm: &self.algorithm,
            series_number: SR_SERIES_NUMBER,
            reviewed: false,
        })
        .map_err(|e| failed("SR", e))?;

        let summary_input = SummaryInput {
            study: outputs.study,
            source: info,
            cbf: &outputs.perfusion.maps.cbf,
            tmax: &outputs.perfusion.maps.tmax,
            labels: &outputs.unet.labels,
            figures: &figures,
            confidence: Some(outputs.confidence.score),
            reviewed: false,
            algorithm: &self.algorithm,
            series_number: SUMMARY_SERIES_NUMBER,
        };
        let image = render_summary(&summary_input).map_err(|e| failed("summary image", e))?;
        let summary = build_summary_sc(&summary_input, &image).map_err(|e| failed("summary image", e))?;
        let png = summary_png(&image).map_err(|e| failed("summary PNG", e))?;

        let files = ExportFiles { seg: &seg, summary: &summary, summary_png: &png, sr: &sr, report };
        write_outputs(dir, &files).map_err(|e| StageError::Failed(format!("cannot write outputs: {e}").into()))?;
        let forwarded = FORWARDABLE.iter().filter(|(format, _)| self.formats.contains(format));
        Ok(forwarded.map(|(_, name)| dir.join(name)).collect())
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
                tmax: outputs.perfusion.maps.tmax.clone(),
                unet_labels: outputs.unet.labels.clone(),
                threshold_labels: outputs.perfusion.threshold.labels.clone(),
            },
        };
        let id = store
            .enqueue(case)
            .map_err(|e| StageError::Failed(format!("cannot queue the study for review: {e}").into()))?;
        info!(case_id = %id, score = outputs.confidence.score, "Study queued for radiologist review");
        Ok(())
    }
}

/// Writes `report.json` alone, atomically, for a study whose input is not assessable.
fn write_report_only(dir: &Path, report: &Report) -> Result<(), StageError> {
    let io = |e: std::io::Error| StageError::Failed(format!("cannot write report.json in {}: {e}", dir.display()).into());
    let json = serde_json::to_vec_pretty(report).map_err(|e| StageError::Failed(Box::new(e)))?;
    std::fs::create_dir_all(dir).map_err(io)?;
    let temporary = dir.join(".report.json.tmp");
    std::fs::write(&temporary, json).map_err(io)?;
    std::fs::File::open(&temporary).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&temporary, dir.join("report.json")).map_err(io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn report_json(report: &Report) -> serde_json::Value {
    serde_json::to_value(report).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}
