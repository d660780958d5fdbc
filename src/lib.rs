//! Penumbra: a daemon that turns a stroke patient's CT perfusion study into ischemic core and
//! penumbra segmentations.
//!
//! - [`config`]: `pipeline.yaml` read into typed settings, with every validation error collected.
//! - [`ingest`]: C-STORE receiver, watched folders, the durable spool and study assembly.
//! - [`pipeline`]: the `Stage` contract, the staged runner and one module per stage.
//! - [`outbox`]: durable C-STORE forwarding of results to the configured destinations.
//! - [`telemetry`]: logging set-up and metrics.
//! - [`confidence`]: how far a study's segmentation can be trusted.
//! - [`qa`]: the radiologist review queue, its web page and the export of reviewed labels.
//! - [`cli`]: the `penumbra` subcommands.
//! - [`cpu_tuning`]: process-wide thread and allocator settings for the numeric code.

pub mod cli;
pub mod confidence;
pub mod config;
pub mod cpu_tuning;
pub mod evaluation;
pub mod ingest;
pub mod outbox;
pub mod pipeline;
pub mod qa;
pub mod services;
pub mod telemetry;
pub mod training;
