//! Logging set-up (`tracing` events to stderr, filtered by `RUST_LOG`, default `info`), metrics
//! and the health endpoints.
//!
//! Level policy: one INFO line per study and stage outcome, per-instance detail at DEBUG,
//! problems the daemon handled at WARN, failures that need an operator at ERROR. Events carry
//! Study and Series Instance UIDs, never patient names or IDs.

pub mod health;
pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. A second call leaves the first subscriber in place.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if result.is_err() {
        tracing::debug!("Logging was already initialised");
    }
}
