//! Perfusion stage: CBF, CBV, MTT and Tmax maps, then threshold labels of core and penumbra.
//!
//! Maps come from the dynamic CTP series by deconvolution, or are taken as they are from a
//! scanner's map series when `perfusion.use_vendor_maps` is set and the study has them.

use penumbra_dicom::{DecodedSeries, SeriesKind};
use penumbra_perfusion::{
    compute_maps, label, maps_from_vendor, CoreRule, DeconvolutionMethod, HypoperfusionRule,
    InputQuality, LabelParams, PerfusionMaps, PerfusionParams, ThresholdResult,
};
use tracing::info;

use super::job::Job;
use super::stage::{Stage, StageError, StageName};
use crate::config::{LabellingPreset, LabellingSettings, PerfusionSettings};

/// The perfusion stage's artifacts.
#[derive(Debug)]
pub struct PerfusionArtifacts {
    /// Index in the decoded series of the series whose grid the maps are on.
    pub source_series: usize,
    pub maps: PerfusionMaps,
    /// Input quality of the dynamic acquisition; `None` for a scanner's maps.
    pub quality: Option<InputQuality>,
    pub threshold: ThresholdResult,
    /// `osvd`, `bsvd` or `vendor_maps`.
    pub method: String,
}

/// Computes maps and threshold labels with the configured parameters.
#[derive(Debug)]
pub struct PerfusionStage {
    params: PerfusionParams,
    labels: LabelParams,
    use_vendor_maps: bool,
}

impl PerfusionStage {
    pub fn new(perfusion: &PerfusionSettings, labelling: &LabellingSettings) -> Self {
        Self {
            params: perfusion_params(perfusion),
            labels: label_params(labelling),
            use_vendor_maps: perfusion.use_vendor_maps,
        }
    }
}

impl Stage for PerfusionStage {
    fn name(&self) -> StageName {
        StageName::Perfusion
    }

    fn process(&self, mut job: Job) -> Result<Job, StageError> {
        let decoded = job.artifacts.decoded.as_ref().ok_or_else(|| missing("decoded series"))?;
        let series = &decoded.series;

        let vendor = if self.use_vendor_maps { find_vendor_maps(series) } else { None };
        let ctp = series.iter().position(|s| s.info.kind == SeriesKind::DynamicCtp);
        let (source_series, maps, quality, method) = match (vendor, ctp) {
            (Some(found), _) => {
                let maps = maps_from_vendor(
                    &series[found.cbf].volume,
                    &series[found.cbv].volume,
                    found.mtt.map(|i| &series[i].volume),
                    &series[found.tmax].volume,
                )
                .map_err(|e| StageError::Rejected(format!("scanner perfusion maps unusable: {e}")))?;
                (found.cbf, maps, None, "vendor_maps".to_string())
            }
            (None, Some(index)) => {
                let result = compute_maps(&series[index].volume, &self.params).map_err(|e| {
                    StageError::Rejected(format!(
                        "perfusion maps failed for series {}: {e}",
                        series[index].info.series_instance_uid
                    ))
                })?;
                let method = method_name(self.params.method).to_string();
                (index, result.maps, Some(result.quality), method)
            }
            (None, None) => {
                return Err(StageError::Rejected(
                    "no dynamic CTP series and no complete set of scanner maps (CBF, CBV, Tmax)".into(),
                ))
            }
        };

        let threshold = label(&maps, &self.labels);
        info!(
            series_uid = %series[source_series].info.series_instance_uid,
            method = %method,
            core_ml = threshold.core_volume_ml,
            penumbra_ml = threshold.penumbra_volume_ml,
            "Threshold labels computed"
        );
        job.artifacts.perfusion = Some(PerfusionArtifacts { source_series, maps, quality, threshold, method });
        Ok(job)
    }
}

/// Indices of a scanner's map series in a study.
struct VendorMaps {
    cbf: usize,
    cbv: usize,
    mtt: Option<usize>,
    tmax: usize,
}

fn find_vendor_maps(series: &[DecodedSeries]) -> Option<VendorMaps> {
    let find = |kind| series.iter().position(|s| s.info.kind == kind);
    Some(VendorMaps {
        cbf: find(SeriesKind::MapCbf)?,
        cbv: find(SeriesKind::MapCbv)?,
        mtt: find(SeriesKind::MapMtt),
        tmax: find(SeriesKind::MapTmax)?,
    })
}

fn method_name(method: DeconvolutionMethod) -> &'static str {
    match method {
        DeconvolutionMethod::Osvd => "osvd",
        DeconvolutionMethod::Bsvd => "bsvd",
    }
}

/// Maps the `perfusion` settings onto the perfusion crate's parameters.
pub fn perfusion_params(settings: &PerfusionSettings) -> PerfusionParams {
    let method = match settings.method {
        crate::config::DeconvolutionMethod::Osvd => DeconvolutionMethod::Osvd,
        crate::config::DeconvolutionMethod::Bsvd => DeconvolutionMethod::Bsvd,
    };
    PerfusionParams {
        method,
        bsvd_lambda: settings.bsvd_lambda,
        osvd_oscillation_index: settings.osvd_oi,
        hematocrit_factor: settings.k_h,
        brain_density_g_per_ml: settings.density_g_per_ml,
        tmax_offset_correction: settings.tmax_offset_correction,
        cbf_recovery_correction: settings.cbf_recovery_correction,
        motion_correction: settings.motion_correction,
        ..PerfusionParams::default()
    }
}

/// Maps the `labelling` settings onto threshold rules: the preset picks the rules, the numeric
/// keys give their thresholds.
pub fn label_params(settings: &LabellingSettings) -> LabelParams {
    let rcbf = CoreRule::RelativeCbfBelow { fraction: settings.core_rcbf_below as f32 };
    let tmax = HypoperfusionRule::TmaxAbove { seconds: settings.penumbra_tmax_above_s as f32 };
    let rmtt = HypoperfusionRule::RelativeMttAbove { fraction: settings.penumbra_rmtt_above as f32 };
    let base = LabelParams { min_component_ml: settings.min_component_ml, ..LabelParams::rapid() };
    match settings.preset {
        LabellingPreset::Rapid => LabelParams { core: rcbf, hypoperfusion: tmax, ..base },
        LabellingPreset::Cbv => LabelParams {
            name: "cbv".into(),
            core: CoreRule::CbvBelow { ml_100g: settings.core_cbv_below as f32 },
            hypoperfusion: rmtt,
            core_within_hypoperfusion: true,
            ..base
        },
        LabellingPreset::Rmtt => LabelParams { name: "rmtt".into(), core: rcbf, hypoperfusion: rmtt, ..base },
        LabellingPreset::Rcbf38 => LabelParams {
            name: "rcbf38".into(),
            core: CoreRule::RelativeCbfBelow { fraction: 0.38 },
            hypoperfusion: tmax,
            ..base
        },
    }
}

fn missing(what: &str) -> StageError {
    StageError::Failed(format!("perfusion stage ran without {what}: the decode stage must run first").into())
}
