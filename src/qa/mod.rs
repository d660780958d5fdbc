//! The radiologist QA queue: a persistent store of cases, a web page and JSON API for review, and
//! the export of reviewed cases as training data.
//!
//! - [`store`]: the [`QaStore`](store::QaStore) trait, its SQLite implementation and the case types.
//! - [`files`]: the maps, masks and slice images of each case on disk.
//! - [`http`]: the axum router for the queue page, the case page and `/api/`.
//! - [`i18n`]: every UI string, in English and Czech.
//! - [`export`]: `penumbra qa export-labels`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::confidence::Confidence;

pub mod export;
pub mod files;
pub mod http;
pub mod i18n;
pub mod store;

/// QA settings, as the `qa` and `confidence` sections of `pipeline.yaml` will carry them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaConfig {
    /// Address of the QA web server. Keep it on loopback unless a TLS proxy sits in front.
    pub listen: SocketAddr,
    /// File whose first line is the bearer token for the page and API.
    pub token_file: PathBuf,
    /// UI languages offered, from `en` and `cs`. The first is the default.
    pub languages: Vec<String>,
    /// Cases whose confidence score is below this go to the queue.
    pub review_below: f64,
    /// Hold the export of a queued case until a reviewer decides.
    pub hold_until_reviewed: bool,
}

impl Default for QaConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_file: PathBuf::from("qa.token"),
            languages: vec!["en".to_owned(), "cs".to_owned()],
            review_below: 0.7,
            hold_until_reviewed: false,
        }
    }
}

impl QaConfig {
    /// Returns whether a study with this confidence needs a radiologist's review: its score is
    /// below `review_below` or its input is not assessable.
    pub fn needs_review(&self, confidence: &Confidence) -> bool {
        !confidence.assessable || confidence.score < self.review_below
    }
}

/// Errors of the QA store, its files and the export.
#[derive(Debug, thiserror::Error)]
pub enum QaError {
    #[error("qa case {0} not found")]
    NotFound(i64),
    #[error("qa case {id} is {from}: cannot {action}")]
    IllegalTransition { id: i64, from: store::CaseState, action: store::Action },
    #[error("qa case {0} has no saved mask correction: save the corrected slices before deciding 'correct'")]
    NoCorrection(i64),
    #[error("invalid qa case: {0}")]
    InvalidCase(String),
    #[error("invalid mask: {0}")]
    InvalidMask(String),
    #[error("qa database failed: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("qa file {path} failed: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("qa record is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid token file {path}: {reason}")]
    InvalidToken { path: PathBuf, reason: String },
}

impl QaError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}

/// Reads the bearer token: the first line of `path`, trimmed. Rejects an empty token.
pub fn read_token(path: &Path) -> Result<String, QaError> {
    let text = std::fs::read_to_string(path).map_err(|e| QaError::io(path, e))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(QaError::InvalidToken {
            path: path.to_owned(),
            reason: format!(
                "the token has {} characters: write at least 16 random characters on its first line",
                token.len()
            ),
        });
    }
    Ok(token)
}
