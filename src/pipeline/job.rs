//! A study travelling through the pipeline.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::stage::StageName;

/// One version of one study, with what the stages have produced so far.
#[derive(Debug)]
pub struct Job {
    pub study_instance_uid: String,
    /// Starts at 1; instances that arrive after a study was complete open the next version.
    pub version: u32,
    /// Spool paths of every instance of the study, sorted.
    pub instances: Vec<PathBuf>,
    /// Time each finished stage took, in pipeline order.
    pub timings: Vec<StageTiming>,
    pub artifacts: Artifacts,
}

impl Job {
    pub fn new(study_instance_uid: impl Into<String>, version: u32, instances: Vec<PathBuf>) -> Self {
        Self {
            study_instance_uid: study_instance_uid.into(),
            version,
            instances,
            timings: Vec::new(),
            artifacts: Artifacts::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StageTiming {
    pub stage: StageName,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// Outputs of the stages, each set by the stage named in its doc. The export stage fills
/// `report`, which `penumbra run` prints.
#[derive(Debug, Default)]
pub struct Artifacts {
    /// Decode: every series of the study in physical units, and the files and series set aside.
    pub decoded: Option<penumbra_dicom::StudyDecode>,
    /// Perfusion: the maps, input quality and threshold labels, with the series they came from.
    pub perfusion: Option<super::perfusion::PerfusionArtifacts>,
    /// Resample: the model input on the 256x256 grid and the way back to the native grid.
    pub model_input: Option<super::resample::ModelInput>,
    /// Infer: U-Net probabilities and labels on the native grid.
    pub unet: Option<super::infer::UnetArtifacts>,
    /// Confidence: the case score and its components.
    pub confidence: Option<crate::confidence::Confidence>,
    /// Export: the study report as JSON.
    pub report: Option<serde_json::Value>,
}
