//! The stage contract: one study in, the same study with more artifacts out.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::job::Job;

/// The stages in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    Decode,
    Perfusion,
    Resample,
    Infer,
    Confidence,
    Export,
}

impl StageName {
    /// Every stage, in the order a study passes through them.
    pub const ALL: [StageName; 6] = [
        StageName::Decode,
        StageName::Perfusion,
        StageName::Resample,
        StageName::Infer,
        StageName::Confidence,
        StageName::Export,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Perfusion => "perfusion",
            Self::Resample => "resample",
            Self::Infer => "infer",
            Self::Confidence => "confidence",
            Self::Export => "export",
        }
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Failure of a stage on one study. The runner quarantines the study with this message.
#[derive(Debug, Error)]
pub enum StageError {
    /// The study's data cannot be processed by this stage, e.g. no dynamic series.
    #[error("{0}")]
    Rejected(String),
    /// The stage failed for another reason (I/O, model loading, ...).
    #[error(transparent)]
    Failed(#[from] Box<dyn std::error::Error + Send + Sync>),
    /// The stage panicked; the runner caught it.
    #[error("stage panicked: {0}")]
    Panicked(String),
}

impl StageError {
    /// Returns the stable fault name written to quarantine records.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "stage_rejected",
            Self::Failed(_) => "stage_failed",
            Self::Panicked(_) => "stage_panicked",
        }
    }
}

/// One processing step. Implementations are called from several worker threads at once, so
/// they hold no per-study state between calls.
pub trait Stage: Send + Sync {
    fn name(&self) -> StageName;

    /// Processes one study, returning it with this stage's artifacts added.
    fn process(&self, job: Job) -> Result<Job, StageError>;
}
