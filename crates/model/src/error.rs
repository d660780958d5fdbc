//! The error type shared by every module of this crate.

use std::path::PathBuf;

/// Everything that can fail while resampling, training, saving, loading or running the U-Net.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An input array or parameter is outside what the operation accepts.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A tensor operation inside candle failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// A file could not be read or written.
    #[error("{operation} {path} failed: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The model card is missing a field, contains an invalid value or cannot be parsed.
    #[error("invalid model card {path}: {reason}")]
    Card { path: PathBuf, reason: String },

    /// The decision thresholds file is invalid or cannot be parsed.
    #[error("invalid decision thresholds {path}: {reason}; refit them with `penumbra fit-thresholds` or remove the file to label by argmax")]
    Decision { path: PathBuf, reason: String },

    /// The weights file does not match the architecture described by the model card.
    #[error("weights {path} do not match the model card: {reason}; retrain or restore the matching card")]
    CardMismatch { path: PathBuf, reason: String },

    /// The caller's configured input channels are not the channels the model was trained on.
    #[error("configured input channels {configured:?} differ from the model card channels {card:?}; set the configured channels to the card's list or load a model trained on them")]
    ChannelMismatch {
        configured: Vec<String>,
        card: Vec<String>,
    },

    /// A dataset cannot be used for training.
    #[error("invalid dataset: {0}")]
    Dataset(String),

    /// Drawing or encoding the loss-curve image failed.
    #[error("writing loss-curve image {path} failed: {reason}")]
    Plot { path: PathBuf, reason: String },
}

impl ModelError {
    /// Wraps an I/O error with the operation and the path it concerned.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ModelError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
