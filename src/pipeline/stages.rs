//! Builds the stage implementations from the settings and the shared resources.

use std::sync::Arc;

use penumbra_export::report::Thresholds;
use penumbra_export::AlgorithmInfo;
use penumbra_model::Segmenter;
use tracing::{error, info};

use super::confidence::ConfidenceStage;
use super::decode::DecodeStage;
use super::export::{ExportStage, ExportTargets};
use super::infer::InferStage;
use super::perfusion::PerfusionStage;
use super::resample::ResampleStage;
use super::stage::Stage;
use crate::confidence::calibration::ScoreCalibration;
use crate::config::{LabellingPreset, Settings};
use crate::outbox::{Destination, Outbox};
use crate::qa::store::QaStore;

/// Long-lived resources the stages share: loaded once at start-up.
#[derive(Default, Clone)]
pub struct StageResources {
    /// The U-Net; `None` when it failed to load, so studies wait before the resample stage.
    pub segmenter: Option<Arc<Segmenter>>,
    pub outbox: Option<Arc<Outbox>>,
    pub destinations: Vec<Destination>,
    pub qa: Option<Arc<dyn QaStore>>,
}

/// Loads the configured model and sets its thread count.
pub fn load_segmenter(settings: &Settings) -> Result<Segmenter, String> {
    let path = &settings.model.path;
    let mut segmenter = penumbra_model::load(path)
        .map_err(|e| format!("cannot load the model from {}: {e}", path.display()))?;
    segmenter.set_threads(settings.model.threads).map_err(|e| e.to_string())?;
    segmenter.set_kernels(match settings.model.kernels {
        crate::config::Kernels::Fast => penumbra_model::Kernels::Fast,
        crate::config::Kernels::Candle => penumbra_model::Kernels::Candle,
    });
    let labels = match segmenter.decision() {
        Some(decision) => format!(
            "sigma {} mm across slices, thresholds hypoperfused {} core {}",
            decision.z_sigma_mm, decision.hypoperfused, decision.core
        ),
        None => "argmax".to_string(),
    };
    info!(
        model = %path.display(),
        channels = ?segmenter.card().input_channels(),
        created = %segmenter.card().created_utc,
        %labels,
        "Model loaded"
    );
    Ok(segmenter)
}

/// Returns the stage implementations for these settings. Without a segmenter, or with one whose
/// inputs the maps cannot provide, the list ends after perfusion and studies wait there.
pub fn build_stages(settings: &Settings, resources: &StageResources) -> Vec<Arc<dyn Stage>> {
    let mut stages: Vec<Arc<dyn Stage>> = vec![
        Arc::new(DecodeStage),
        Arc::new(PerfusionStage::new(&settings.perfusion, &settings.labelling)),
    ];
    let Some(segmenter) = &resources.segmenter else {
        return stages;
    };
    let resample = match ResampleStage::new(segmenter) {
        Ok(stage) => stage,
        Err(reason) => {
            error!(%reason, "Model inputs do not match the perfusion maps; studies wait before resampling");
            return stages;
        }
    };

    let calibration = match ScoreCalibration::read(&settings.model.path) {
        Ok(calibration) => calibration.map(Arc::new),
        Err(reason) => {
            error!(%reason, "Confidence calibration is invalid; studies wait before resampling");
            return stages;
        }
    };
    if calibration.is_some() {
        info!(model = %settings.model.path.display(), "Confidence score uses the model's fitted calibration");
    }

    stages.push(Arc::new(resample));
    stages.push(Arc::new(InferStage::new(Arc::clone(segmenter), settings.model.batch, settings.model.tta)));
    stages.push(Arc::new(ConfidenceStage::new(calibration)));
    stages.push(Arc::new(ExportStage::new(ExportTargets {
        data_dir: settings.data_dir.clone(),
        outbox: resources.outbox.clone(),
        destinations: resources.destinations.clone(),
        formats: settings.export.formats.clone(),
        qa: resources.qa.clone(),
        review_below: settings.confidence.review_below,
        hold_until_reviewed: settings.confidence.hold_until_reviewed,
        algorithm: algorithm_info(settings, segmenter),
        thresholds: report_thresholds(settings),
    })));
    stages
}

/// Identifies the segmentation algorithm in the SEG, SR and report.
pub fn algorithm_info(settings: &Settings, segmenter: &Segmenter) -> AlgorithmInfo {
    let name = settings
        .model
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ctp-resunet".to_string());
    AlgorithmInfo {
        version: format!("{} ({})", segmenter.card().created_utc, env!("CARGO_PKG_VERSION")),
        model_card_id: format!("{name}@{}", segmenter.card().created_utc),
        name,
    }
}

fn report_thresholds(settings: &Settings) -> Thresholds {
    let core = match settings.labelling.preset {
        LabellingPreset::Rcbf38 => 0.38,
        _ => settings.labelling.core_rcbf_below,
    };
    Thresholds { core_relative_cbf_below: core, tmax_above_s: settings.labelling.penumbra_tmax_above_s }
}
