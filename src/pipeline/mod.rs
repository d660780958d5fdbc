//! The `Stage` contract, the staged runner and the per-study state records.
//!
//! A study flows decode -> perfusion -> resample -> infer -> confidence -> export. Stage
//! implementations live in their own crates and are registered with [`Runner::start`].

pub mod confidence;
pub mod decode;
pub mod export;
pub mod infer;
pub mod job;
pub mod perfusion;
pub mod resample;
pub mod review;
pub mod runner;
pub mod stage;
pub mod stages;
pub mod state;

pub use job::{Artifacts, Job, StageTiming};
pub use runner::{JobOutcome, Runner, RunnerError, ShutdownReport};
pub use stage::{Stage, StageError, StageName};
pub use state::{StateStore, StudyRecord, StudyState};

pub use stages::{build_stages, load_segmenter, StageResources};

/// Returns the stage implementations for `settings` and the loaded `resources`, in pipeline order.
///
/// `serve` and `run` build their runner from this list. A stage missing here (no model loaded)
/// makes studies stop before it, recorded as waiting for it, and resume at a restart that has it.
pub fn registered_stages(settings: &crate::config::Settings, resources: &StageResources) -> Vec<std::sync::Arc<dyn Stage>> {
    build_stages(settings, resources)
}

#[cfg(test)]
mod tests;
