//! The JSON model card stored next to the safetensors weights.
//!
//! A model folder contains `card.json` and `model.safetensors`. The card records the architecture
//! (enough to rebuild every variable), the input channels in order, their normalization
//! statistics, how the model was trained, its validation metrics, and the name and shape of
//! every tensor so that a mismatched weights file is caught before inference.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::loss::LossKind;
use crate::schedule::LearningRateSchedule;
use crate::normalize::Normalization;
use crate::unet::UNetConfig;

/// File name of the card inside a model folder.
pub const CARD_FILE: &str = "card.json";

/// File name of the weights inside a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The card format this code writes and reads.
pub const CARD_FORMAT_VERSION: u32 = 1;

/// Everything needed to rebuild, check and describe a trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Card format; readers reject versions they do not know.
    pub format_version: u32,
    pub architecture: UNetConfig,
    /// Normalization statistics; their channel names are the input channels, in order.
    pub normalization: Normalization,
    pub training: TrainingInfo,
    /// Validation metrics, free-form so evaluation can grow without a format change.
    pub metrics: serde_json::Value,
    /// Creation time, UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created_utc: String,
    /// Version of `penumbra-model` that wrote the card.
    pub code_version: String,
    /// Name to shape of every tensor in the weights file.
    pub tensors: BTreeMap<String, Vec<usize>>,
}

/// Training provenance: data, seed, loss, epochs and the study split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingInfo {
    /// Free-text description of the training data, e.g. "phantom studies, generator v0.1.0".
    pub data: String,
    pub seed: u64,
    pub loss: LossKind,
    /// Learning rate of the first epoch. Cards written before it was recorded have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Learning-rate schedule. Cards written before it was recorded read as constant, the only
    /// schedule there was.
    #[serde(default)]
    pub schedule: LearningRateSchedule,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub training_studies: Vec<String>,
    pub validation_studies: Vec<String>,
}

impl ModelCard {
    /// Returns the input channel names in order.
    pub fn input_channels(&self) -> Vec<String> {
        self.normalization.names()
    }

    /// Checks the card on its own: format version, architecture and channel count.
    pub fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let invalid = |reason: String| ModelError::Card {
            path: path.to_path_buf(),
            reason,
        };
        if self.format_version != CARD_FORMAT_VERSION {
            return Err(invalid(format!(
                "format_version {} is not supported; this build reads version {CARD_FORMAT_VERSION}",
                self.format_version
            )));
        }
        self.architecture
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        if self.normalization.channels.len() != self.architecture.in_channels {
            return Err(invalid(format!(
                "normalization lists {} channels but architecture.in_channels is {}",
                self.normalization.channels.len(),
                self.architecture.in_channels
            )));
        }
        for stats in &self.normalization.channels {
            if !(stats.mean.is_finite() && stats.std.is_finite() && stats.std > 0.0) {
                return Err(invalid(format!(
                    "normalization of channel {} has mean {} and std {}; both must be finite and std positive",
                    stats.name, stats.mean, stats.std
                )));
            }
        }
        Ok(())
    }

    /// Reads and validates `card.json` from a model folder.
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join(CARD_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ModelError::io("reading model card", &path, e))?;
        let card: ModelCard = serde_json::from_str(&text).map_err(|e| ModelError::Card {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        card.validate(&path)?;
        Ok(card)
    }

    /// Writes `card.json` into a model folder, creating the folder if needed.
    pub fn write(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ModelError::io("creating model folder", dir, e))?;
        let path = dir.join(CARD_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| ModelError::Card {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(|e| ModelError::io("writing model card", &path, e))
    }
}

/// Returns the current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_utc(seconds)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian).
pub fn format_utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);

    // Civil-from-days conversion over 400-year eras of 146097 days, with years starting in March.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);

    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_utc_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 12:34:56 UTC is 951827696 seconds after the epoch.
        assert_eq!(format_utc(951_827_696), "2000-02-29T12:34:56Z");
        // 2026-12-04 00:00:00 UTC: 20791 days after the epoch.
        assert_eq!(format_utc(20_791 * 86_400), "2026-12-04T00:00:00Z");
    }
}
