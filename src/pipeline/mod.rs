//! The `Stage` contract, the staged runner and the per-study state records.
//!
//! A study flows decode -> perfusion -> resample -> infer -> confidence -> export. Stage
//! implementations live in their own crates and are registered with [`Runner::start`].

pub mod job;
pub mod runner;
pub mod stage;
pub mod state;

pub use job::{Artifacts, Job, StageTiming};
pub use runner::{JobOutcome, Runner, RunnerError, ShutdownReport};
pub use stage::{Stage, StageError, StageName};
pub use state::{StateStore, StudyRecord, StudyState};

#[cfg(test)]
mod tests;
