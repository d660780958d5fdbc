//! `pipeline.yaml` read into typed settings, with every validation error collected.
//!
//! Loading has two phases: [`raw`] deserializes the file (unknown keys are errors, missing keys
//! take defaults) and [`validate`] checks ranges and resolves paths into [`Settings`]. Relative
//! paths resolve against the folder that contains the config file.

pub mod raw;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use raw::{DeconvolutionMethod, Durability, ExportFormat, Kernels, LabellingPreset, RawConfig};
pub use validate::{
    ConfidenceSettings, Destination, ExportSettings, IngestSettings, LabellingSettings,
    MetricsSettings, ModelSettings, OutboxSettings, PerfusionSettings, PipelineSettings,
    QaSettings, ScpSettings, Settings, ShutdownSettings, StageSettings, WatchSettings,
};

/// One problem in a configuration: the key path and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path such as `ingest.watch.settle_ms`, or `(file)` for file-level problems.
    pub key: String,
    /// Problem and fix, e.g. `must be at least 100, got 0`.
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parses YAML text into a [`RawConfig`]. Empty text (or only comments) is the default config.
///
/// A parse error names the key path where it happened, as reported by `serde_path_to_error`.
pub fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() || is_only_comments(text) {
        return Ok(RawConfig::default());
    }

    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let key = if path == "." { "(file)".to_string() } else { path };
        ConfigError::new(key, format!("is invalid: {}", err.inner()))
    })
}

fn is_only_comments(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    })
}

/// Reads, parses and validates a config file, returning every error found.
pub fn load(path: &Path) -> Result<Settings, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        vec![ConfigError::new(
            "(file)",
            format!("could not be read from {}: {err}; pass an existing file with --config", path.display()),
        )]
    })?;

    let raw = parse_raw(&text).map_err(|err| vec![err])?;
    let base_dir = config_folder(path);
    raw.validate_in(&base_dir).map(|mut settings| {
        settings.config_path = Some(path.to_path_buf());
        settings
    })
}

/// Returns the folder that relative paths in the config file resolve against.
fn config_folder(path: &Path) -> PathBuf {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

#[cfg(test)]
mod tests;
