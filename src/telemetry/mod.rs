//! Logging set-up and metrics.

pub mod health;
pub mod metrics;
