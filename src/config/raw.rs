//! `pipeline.yaml` as written: every section and key, with its default.
//!
//! Every struct rejects unknown keys and defaults every missing key, so an empty file is a valid
//! configuration. Values are checked later by [`RawConfig::validate`](super::RawConfig::validate).

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Folder for the spool, quarantine, study state and outputs; relative to the config file.
    pub data_dir: String,
    pub ingest: RawIngest,
    pub pipeline: RawPipeline,
    pub perfusion: RawPerfusion,
    pub labelling: RawLabelling,
    pub model: RawModel,
    pub confidence: RawConfidence,
    pub export: RawExport,
    pub qa: RawQa,
    pub metrics: RawMetrics,
    pub shutdown: RawShutdown,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            data_dir: "./var".to_string(),
            ingest: RawIngest::default(),
            pipeline: RawPipeline::default(),
            perfusion: RawPerfusion::default(),
            labelling: RawLabelling::default(),
            model: RawModel::default(),
            confidence: RawConfidence::default(),
            export: RawExport::default(),
            qa: RawQa::default(),
            metrics: RawMetrics::default(),
            shutdown: RawShutdown::default(),
        }
    }
}

/// `ingest`: how instances come in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawIngest {
    pub scp: RawScp,
    pub watch: RawWatch,
    /// Seconds without a new instance after which a study counts as complete.
    pub study_quiet_s: u64,
}

impl Default for RawIngest {
    fn default() -> Self {
        Self { scp: RawScp::default(), watch: RawWatch::default(), study_quiet_s: 20 }
    }
}

/// Whether the spool calls fsync before an instance is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Make the instance durable before acknowledging (through the intake journal, or an
    /// fsync of the file and its folder): survives power loss.
    Fsync,
    /// Leave the data in the page cache: survives a daemon crash, not a power loss.
    PageCache,
}

/// `ingest.scp`: the C-STORE receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawScp {
    /// Socket address to listen on, `host:port`.
    pub listen: String,
    pub ae_title: String,
    /// Calling AE titles accepted; empty accepts any.
    pub allowed_calling_ae: Vec<String>,
    pub max_associations: u32,
    /// Maximum PDU length in bytes offered to peers.
    pub max_pdu_length: u32,
    pub artim_timeout_s: u64,
    pub idle_timeout_s: u64,
    pub durability: Durability,
    /// Size of each intake journal segment, in MiB (`durability: fsync` only).
    pub journal_segment_mb: u64,
    /// Number of intake journal segments in the ring.
    pub journal_segments: u32,
    /// Free space below which new instances are rejected, in MiB.
    pub min_free_disk_mb: u64,
}

impl Default for RawScp {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:11112".to_string(),
            ae_title: "PENUMBRA".to_string(),
            allowed_calling_ae: Vec::new(),
            max_associations: 8,
            max_pdu_length: 116_794,
            artim_timeout_s: 30,
            idle_timeout_s: 60,
            durability: Durability::Fsync,
            journal_segment_mb: 64,
            journal_segments: 4,
            min_free_disk_mb: 1024,
        }
    }
}

/// `ingest.watch`: watched folders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWatch {
    pub folders: Vec<String>,
    /// Milliseconds a file's size and modification time must stay unchanged before it is taken.
    pub settle_ms: u64,
    /// Seconds between full rescans, the safety net for missed file system events.
    pub rescan_s: u64,
}

impl Default for RawWatch {
    fn default() -> Self {
        Self { folders: vec!["./var/incoming".to_string()], settle_ms: 1500, rescan_s: 30 }
    }
}

/// `pipeline`: per-stage thread pools and queues.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPipeline {
    pub stages: RawStages,
}

/// `pipeline.stages`: one entry per stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawStages {
    pub decode: RawStage,
    pub perfusion: RawStage,
    pub resample: RawStage,
    pub infer: RawStage,
    pub confidence: RawStage,
    pub export: RawStage,
}

impl Default for RawStages {
    fn default() -> Self {
        Self {
            decode: RawStage { workers: 2, queue: 4 },
            perfusion: RawStage { workers: 2, queue: 4 },
            resample: RawStage { workers: 1, queue: 4 },
            infer: RawStage { workers: 1, queue: 2 },
            confidence: RawStage { workers: 1, queue: 4 },
            export: RawStage { workers: 1, queue: 8 },
        }
    }
}

/// One stage's pool: worker threads and the capacity of its input queue, in studies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawStage {
    pub workers: u32,
    pub queue: u32,
}

impl Default for RawStage {
    fn default() -> Self {
        Self { workers: 1, queue: 4 }
    }
}

/// Deconvolution method for the residue function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeconvolutionMethod {
    /// Block-circulant SVD whose truncation is chosen per voxel by the oscillation index.
    Osvd,
    /// Block-circulant SVD with one truncation threshold for every voxel.
    Bsvd,
}

/// `perfusion`: map computation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPerfusion {
    pub method: DeconvolutionMethod,
    /// Oscillation-index threshold of oSVD.
    pub osvd_oi: f64,
    /// Regularisation weight of bSVD.
    pub bsvd_lambda: f64,
    /// Ratio of small-vessel to large-vessel haematocrit correction, (1 - Hct_large)/(1 - Hct_small).
    pub k_h: f64,
    /// Brain tissue density in g/mL.
    pub density_g_per_ml: f64,
    /// Use the scanner's own maps when the study carries them.
    pub use_vendor_maps: bool,
    /// Subtract the delay the deconvolution adds to every Tmax by itself.
    pub tmax_offset_correction: bool,
    /// Divide the reference tissue's CBF by the fraction the deconvolution recovers at its MTT.
    pub cbf_recovery_correction: bool,
    /// Register every frame to the first and resample the moved ones before the maps.
    pub motion_correction: bool,
}

impl Default for RawPerfusion {
    fn default() -> Self {
        Self {
            method: DeconvolutionMethod::Osvd,
            osvd_oi: 0.035,
            bsvd_lambda: 0.1,
            k_h: 0.73,
            density_g_per_ml: 1.04,
            use_vendor_maps: true,
            tmax_offset_correction: true,
            cbf_recovery_correction: true,
            motion_correction: true,
        }
    }
}

/// Threshold rule set for core and penumbra labelling. The thresholds themselves are the
/// `labelling` keys; a preset picks which of them apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabellingPreset {
    /// RAPID-style: core rCBF below `core_rcbf_below`, penumbra Tmax above `penumbra_tmax_above_s`.
    Rapid,
    /// Wintermark 2006: core CBV below `core_cbv_below`, penumbra rMTT above `penumbra_rmtt_above`.
    Cbv,
    /// Core rCBF below `core_rcbf_below`, penumbra rMTT above `penumbra_rmtt_above`.
    Rmtt,
    /// Cereda 2016: core rCBF below 0.38, penumbra Tmax above `penumbra_tmax_above_s`.
    Rcbf38,
}

/// `labelling`: thresholds that turn maps into labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLabelling {
    pub preset: LabellingPreset,
    /// Core: CBF relative to the healthy hemisphere below this fraction.
    pub core_rcbf_below: f64,
    /// Core: CBV below this value in mL/100 g.
    pub core_cbv_below: f64,
    /// Penumbra: Tmax above this value in seconds.
    pub penumbra_tmax_above_s: f64,
    /// Penumbra: MTT relative to the healthy hemisphere above this ratio.
    pub penumbra_rmtt_above: f64,
    /// Connected components smaller than this volume in mL are removed.
    pub min_component_ml: f64,
}

impl Default for RawLabelling {
    fn default() -> Self {
        Self {
            preset: LabellingPreset::Rapid,
            core_rcbf_below: 0.30,
            core_cbv_below: 2.0,
            penumbra_tmax_above_s: 6.0,
            penumbra_rmtt_above: 1.45,
            min_component_ml: 0.5,
        }
    }
}

/// Implementation of the network's convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kernels {
    /// The model crate's own CPU kernels.
    Fast,
    /// candle's kernels.
    Candle,
}

/// `model`: the residual U-Net.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawModel {
    /// Model folder (weights and metadata); relative to the config file.
    pub path: String,
    /// Slices per forward pass.
    pub batch: u32,
    pub threads: u32,
    /// Test-time augmentation (left-right flip averaged).
    pub tta: bool,
    pub kernels: Kernels,
}

impl Default for RawModel {
    fn default() -> Self {
        Self {
            path: "models/ctp-resunet-v1".to_string(),
            batch: 8,
            threads: 2,
            tta: false,
            kernels: Kernels::Fast,
        }
    }
}

/// `confidence`: when a result is flagged for review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfidence {
    /// Studies scoring below this value in [0, 1] are flagged for radiologist review.
    pub review_below: f64,
    /// Hold flagged results back from export until a radiologist has reviewed them.
    pub hold_until_reviewed: bool,
}

impl Default for RawConfidence {
    fn default() -> Self {
        Self { review_below: 0.7, hold_until_reviewed: false }
    }
}

/// An output the export stage writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Seg,
    Sr,
    SummaryImage,
    Json,
}

/// `export`: outputs and forwarding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawExport {
    pub formats: Vec<ExportFormat>,
    pub destinations: Vec<RawDestination>,
    pub outbox: RawOutbox,
}

impl Default for RawExport {
    fn default() -> Self {
        Self {
            formats: vec![
                ExportFormat::Seg,
                ExportFormat::Sr,
                ExportFormat::SummaryImage,
                ExportFormat::Json,
            ],
            destinations: Vec::new(),
            outbox: RawOutbox::default(),
        }
    }
}

/// A DICOM node that results are sent to by C-STORE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub ae_title: String,
    /// `host:port`.
    pub address: String,
}

/// `export.outbox`: retries of C-STORE forwarding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOutbox {
    pub max_attempts: u32,
    pub initial_backoff_s: f64,
    pub max_backoff_s: f64,
}

impl Default for RawOutbox {
    fn default() -> Self {
        Self { max_attempts: 10, initial_backoff_s: 5.0, max_backoff_s: 300.0 }
    }
}

/// `qa`: the radiologist QA page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawQa {
    pub listen: String,
    /// File holding the bearer token for review actions; `None` serves the page read-only.
    pub token_file: Option<String>,
    /// Language tags offered on the page, first one is the default.
    pub languages: Vec<String>,
}

impl Default for RawQa {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".to_string(), token_file: None, languages: vec!["en".to_string()] }
    }
}

/// `metrics`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9090".to_string() }
    }
}

/// `shutdown`: what happens on SIGINT or SIGTERM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawShutdown {
    /// Seconds in-flight studies get to finish before the daemon exits anyway.
    pub drain_deadline_s: u64,
}

impl Default for RawShutdown {
    fn default() -> Self {
        Self { drain_deadline_s: 30 }
    }
}
