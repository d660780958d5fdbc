//! Range checks and path resolution: [`RawConfig`] into [`Settings`].
//!
//! Every check runs even after an earlier one failed, so one pass reports every problem.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{
    DeconvolutionMethod, Durability, ExportFormat, Kernels, LabellingPreset, RawConfig, RawStage,
};
use super::ConfigError;
use crate::ingest::journal::JournalSettings;

/// The validated configuration that the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file these settings came from; `None` for built-in defaults.
    pub config_path: Option<PathBuf>,
    /// Absolute folder for the spool, quarantine, study state and outputs.
    pub data_dir: PathBuf,
    pub ingest: IngestSettings,
    pub pipeline: PipelineSettings,
    pub perfusion: PerfusionSettings,
    pub labelling: LabellingSettings,
    pub model: ModelSettings,
    pub confidence: ConfidenceSettings,
    pub export: ExportSettings,
    pub qa: QaSettings,
    pub metrics: MetricsSettings,
    pub shutdown: ShutdownSettings,
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub scp: ScpSettings,
    pub watch: WatchSettings,
    pub study_quiet: Duration,
}

#[derive(Debug, Clone)]
pub struct ScpSettings {
    pub listen: SocketAddr,
    pub ae_title: String,
    /// Calling AE titles accepted; empty accepts any.
    pub allowed_calling_ae: Vec<String>,
    pub max_associations: usize,
    pub max_pdu_length: u32,
    pub artim_timeout: Duration,
    pub idle_timeout: Duration,
    pub durability: Durability,
    /// Segment size and count of the intake journal used with [`Durability::Fsync`].
    pub journal: JournalSettings,
    /// Free space below which new instances are rejected, in bytes.
    pub min_free_disk_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Absolute folders, watched recursively.
    pub folders: Vec<PathBuf>,
    pub settle: Duration,
    pub rescan: Duration,
}

/// Thread pool and queue of each stage, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineSettings {
    pub decode: StageSettings,
    pub perfusion: StageSettings,
    pub resample: StageSettings,
    pub infer: StageSettings,
    pub confidence: StageSettings,
    pub export: StageSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSettings {
    pub workers: usize,
    /// Capacity of the stage's input queue, in studies.
    pub queue: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PerfusionSettings {
    pub method: DeconvolutionMethod,
    pub osvd_oi: f64,
    pub bsvd_lambda: f64,
    pub k_h: f64,
    pub density_g_per_ml: f64,
    pub use_vendor_maps: bool,
    pub tmax_offset_correction: bool,
    pub cbf_recovery_correction: bool,
    pub motion_correction: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabellingSettings {
    pub preset: LabellingPreset,
    pub core_rcbf_below: f64,
    pub core_cbv_below: f64,
    pub penumbra_tmax_above_s: f64,
    pub penumbra_rmtt_above: f64,
    pub min_component_ml: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// Absolute model folder. Its existence is checked by the inference stage, not here, so a
    /// daemon without a model can still ingest and spool.
    pub path: PathBuf,
    pub batch: usize,
    pub threads: usize,
    pub tta: bool,
    pub kernels: Kernels,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfidenceSettings {
    pub review_below: f64,
    pub hold_until_reviewed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    /// Requested outputs, sorted and without repeats.
    pub formats: Vec<ExportFormat>,
    pub destinations: Vec<Destination>,
    pub outbox: OutboxSettings,
}

/// A DICOM node that results are sent to by C-STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxSettings {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QaSettings {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    pub languages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownSettings {
    pub drain_deadline: Duration,
}

impl Default for Settings {
    /// Builds the built-in defaults, with relative paths resolved against the current folder.
    fn default() -> Self {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        match RawConfig::default().validate_in(&base) {
            Ok(settings) => settings,
            Err(errors) => unreachable!("built-in defaults are invalid: {errors:?}"),
        }
    }
}

impl RawConfig {
    /// Checks every value and resolves relative paths against the current folder.
    pub fn validate(&self) -> Result<Settings, Vec<ConfigError>> {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        self.validate_in(&base)
    }

    /// Checks every value and resolves relative paths against `base_dir` (the config file's
    /// folder), collecting every error.
    pub fn validate_in(&self, base_dir: &Path) -> Result<Settings, Vec<ConfigError>> {
        let mut check = Checker { base_dir, errors: Vec::new() };

        let data_dir = check.path("data_dir", &self.data_dir);
        let ingest = check.ingest(self);
        let pipeline = check.pipeline(self);
        let perfusion = check.perfusion(self);
        let labelling = check.labelling(self);
        let model = check.model(self);
        let confidence = check.confidence(self);
        let export = check.export(self);
        let qa = check.qa(self);
        let metrics = MetricsSettings { listen: check.socket("metrics.listen", &self.metrics.listen) };
        let shutdown = ShutdownSettings {
            drain_deadline: Duration::from_secs(check.range(
                "shutdown.drain_deadline_s",
                self.shutdown.drain_deadline_s,
                0,
                3600,
            )),
        };

        if !check.errors.is_empty() {
            return Err(check.errors);
        }

        Ok(Settings {
            config_path: None,
            data_dir,
            ingest,
            pipeline,
            perfusion,
            labelling,
            model,
            confidence,
            export,
            qa,
            metrics,
            shutdown,
        })
    }
}

/// Collects errors while turning raw values into checked ones. On an invalid value it records
/// the error and returns a placeholder that is never used, because `validate_in` returns the
/// errors instead of the settings.
struct Checker<'a> {
    base_dir: &'a Path,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn fail(&mut self, key: &str, message: String) {
        self.errors.push(ConfigError::new(key, message));
    }

    fn range<T: PartialOrd + Display + Copy>(&mut self, key: &str, value: T, min: T, max: T) -> T {
        if value < min {
            self.fail(key, format!("must be at least {min}, got {value}"));
        } else if value > max {
            self.fail(key, format!("must be at most {max}, got {value}"));
        }
        value
    }

    /// Checks a float in the open interval (min, max). NaN fails.
    fn open_range(&mut self, key: &str, value: f64, min: f64, max: f64) -> f64 {
        if !(value > min && value < max) {
            self.fail(key, format!("must be in ({min}, {max}), got {value}"));
        }
        value
    }

    /// Checks a float in the closed interval [min, max]. NaN fails.
    fn closed_range(&mut self, key: &str, value: f64, min: f64, max: f64) -> f64 {
        if !(value >= min && value <= max) {
            self.fail(key, format!("must be in [{min}, {max}], got {value}"));
        }
        value
    }

    fn path(&mut self, key: &str, value: &str) -> PathBuf {
        if value.trim().is_empty() {
            self.fail(key, "must be a path, got an empty string".to_string());
            return PathBuf::new();
        }
        let path: PathBuf = Path::new(value)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        }
    }

    fn socket(&mut self, key: &str, value: &str) -> SocketAddr {
        match value.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                self.fail(
                    key,
                    format!("must be an IP address and port such as 127.0.0.1:8080, got {value:?}"),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    fn ae_title(&mut self, key: &str, value: &str) -> String {
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed.len() > 16 {
            self.fail(key, format!("must be 1 to 16 characters, got {value:?}"));
        } else if trimmed.contains('\\') || !trimmed.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            self.fail(
                key,
                format!("must contain only printable ASCII characters and no backslash, got {value:?}"),
            );
        }
        trimmed.to_string()
    }

    fn stage(&mut self, name: &str, raw: RawStage) -> StageSettings {
        let workers = self.range(&format!("pipeline.stages.{name}.workers"), raw.workers, 1, 64);
        let queue = self.range(&format!("pipeline.stages.{name}.queue"), raw.queue, 1, 1024);
        StageSettings { workers: workers as usize, queue: queue as usize }
    }

    fn ingest(&mut self, raw: &RawConfig) -> IngestSettings {
        let scp = &raw.ingest.scp;
        let allowed_calling_ae = scp
            .allowed_calling_ae
            .iter()
            .enumerate()
            .map(|(i, ae)| self.ae_title(&format!("ingest.scp.allowed_calling_ae[{i}]"), ae))
            .collect();
        let scp = ScpSettings {
            listen: self.socket("ingest.scp.listen", &scp.listen),
            ae_title: self.ae_title("ingest.scp.ae_title", &scp.ae_title),
            allowed_calling_ae,
            max_associations: self.range("ingest.scp.max_associations", scp.max_associations, 1, 256)
                as usize,
            max_pdu_length: self.range("ingest.scp.max_pdu_length", scp.max_pdu_length, 16_384, 131_072),
            artim_timeout: Duration::from_secs(self.range("ingest.scp.artim_timeout_s", scp.artim_timeout_s, 1, 600)),
            idle_timeout: Duration::from_secs(self.range("ingest.scp.idle_timeout_s", scp.idle_timeout_s, 1, 3600)),
            durability: scp.durability,
            journal: JournalSettings {
                segment_bytes: self.range("ingest.scp.journal_segment_mb", scp.journal_segment_mb, 1, 4096).saturating_mul(1024 * 1024),
                segments: self.range("ingest.scp.journal_segments", scp.journal_segments, 2, 64),
            },
            min_free_disk_bytes: scp.min_free_disk_mb.saturating_mul(1024 * 1024),
        };

        let watch = &raw.ingest.watch;
        let folders = watch
            .folders
            .iter()
            .enumerate()
            .map(|(i, folder)| self.path(&format!("ingest.watch.folders[{i}]"), folder))
            .collect();
        let watch = WatchSettings {
            folders,
            settle: Duration::from_millis(self.range("ingest.watch.settle_ms", watch.settle_ms, 100, 600_000)),
            rescan: Duration::from_secs(self.range("ingest.watch.rescan_s", watch.rescan_s, 1, 3600)),
        };

        let quiet = self.range("ingest.study_quiet_s", raw.ingest.study_quiet_s, 1, 3600);
        IngestSettings { scp, watch, study_quiet: Duration::from_secs(quiet) }
    }

    fn pipeline(&mut self, raw: &RawConfig) -> PipelineSettings {
        let stages = &raw.pipeline.stages;
        PipelineSettings {
            decode: self.stage("decode", stages.decode),
            perfusion: self.stage("perfusion", stages.perfusion),
            resample: self.stage("resample", stages.resample),
            infer: self.stage("infer", stages.infer),
            confidence: self.stage("confidence", stages.confidence),
            export: self.stage("export", stages.export),
        }
    }

    fn perfusion(&mut self, raw: &RawConfig) -> PerfusionSettings {
        let p = &raw.perfusion;
        PerfusionSettings {
            method: p.method,
            osvd_oi: self.open_range("perfusion.osvd_oi", p.osvd_oi, 0.0, 1.0),
            bsvd_lambda: self.open_range("perfusion.bsvd_lambda", p.bsvd_lambda, 0.0, 1.0),
            k_h: self.open_range("perfusion.k_h", p.k_h, 0.0, 1.5),
            density_g_per_ml: self.open_range("perfusion.density_g_per_ml", p.density_g_per_ml, 0.5, 2.0),
            use_vendor_maps: p.use_vendor_maps,
            tmax_offset_correction: p.tmax_offset_correction,
            cbf_recovery_correction: p.cbf_recovery_correction,
            motion_correction: p.motion_correction,
        }
    }

    fn labelling(&mut self, raw: &RawConfig) -> LabellingSettings {
        let l = &raw.labelling;
        LabellingSettings {
            preset: l.preset,
            core_rcbf_below: self.open_range("labelling.core_rcbf_below", l.core_rcbf_below, 0.0, 1.0),
            core_cbv_below: self.open_range("labelling.core_cbv_below", l.core_cbv_below, 0.0, 10.0),
            penumbra_tmax_above_s: self.open_range(
                "labelling.penumbra_tmax_above_s",
                l.penumbra_tmax_above_s,
                0.0,
                30.0,
            ),
            penumbra_rmtt_above: self.open_range("labelling.penumbra_rmtt_above", l.penumbra_rmtt_above, 1.0, 5.0),
            min_component_ml: self.closed_range("labelling.min_component_ml", l.min_component_ml, 0.0, 100.0),
        }
    }

    fn model(&mut self, raw: &RawConfig) -> ModelSettings {
        let m = &raw.model;
        ModelSettings {
            path: self.path("model.path", &m.path),
            batch: self.range("model.batch", m.batch, 1, 256) as usize,
            threads: self.range("model.threads", m.threads, 1, 256) as usize,
            tta: m.tta,
            kernels: m.kernels,
        }
    }

    fn confidence(&mut self, raw: &RawConfig) -> ConfidenceSettings {
        ConfidenceSettings {
            review_below: self.closed_range("confidence.review_below", raw.confidence.review_below, 0.0, 1.0),
            hold_until_reviewed: raw.confidence.hold_until_reviewed,
        }
    }

    fn export(&mut self, raw: &RawConfig) -> ExportSettings {
        let e = &raw.export;
        let mut formats = e.formats.clone();
        formats.sort();
        formats.dedup();

        let destinations = e
            .destinations
            .iter()
            .enumerate()
            .map(|(i, d)| Destination {
                ae_title: self.ae_title(&format!("export.destinations[{i}].ae_title"), &d.ae_title),
                ..self.host_port(&format!("export.destinations[{i}].address"), &d.address)
            })
            .collect();

        let o = &e.outbox;
        let initial = self.open_range("export.outbox.initial_backoff_s", o.initial_backoff_s, 0.0, 86_400.0);
        let max = self.open_range("export.outbox.max_backoff_s", o.max_backoff_s, 0.0, 86_400.0);
        if max < initial {
            self.fail(
                "export.outbox.max_backoff_s",
                format!("must be at least export.outbox.initial_backoff_s ({initial}), got {max}"),
            );
        }
        let outbox = OutboxSettings {
            max_attempts: self.range("export.outbox.max_attempts", o.max_attempts, 1, 1000),
            initial_backoff: duration_or_zero(initial),
            max_backoff: duration_or_zero(max),
        };

        ExportSettings { formats, destinations, outbox }
    }

    /// Parses `host:port` without resolving the host name, so validation does no network I/O.
    fn host_port(&mut self, key: &str, value: &str) -> Destination {
        let parsed = value.rsplit_once(':').and_then(|(host, port)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
            (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_string(), port))
        });
        match parsed {
            Some((host, port)) => Destination { ae_title: String::new(), host, port },
            None => {
                self.fail(key, format!("must be host:port with a port from 1 to 65535, got {value:?}"));
                Destination { ae_title: String::new(), host: String::new(), port: 0 }
            }
        }
    }

    fn qa(&mut self, raw: &RawConfig) -> QaSettings {
        let q = &raw.qa;
        let token_file = q.token_file.as_ref().map(|t| self.path("qa.token_file", t));
        if q.languages.is_empty() {
            self.fail("qa.languages", "must list at least one language tag such as \"en\", got an empty list".to_string());
        }
        for (i, tag) in q.languages.iter().enumerate() {
            let valid = (2..=8).contains(&tag.len())
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && tag.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
            if !valid {
                self.fail(
                    &format!("qa.languages[{i}]"),
                    format!("must be a language tag such as \"en\" or \"pt-BR\", got {tag:?}"),
                );
            }
        }
        QaSettings { listen: self.socket("qa.listen", &q.listen), token_file, languages: q.languages.clone() }
    }
}

fn duration_or_zero(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
}
