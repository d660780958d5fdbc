//! Resample stage: the perfusion maps as model input channels on the 256x256 model grid.

use std::sync::Arc;

use ndarray::{Array4, Axis};
use penumbra_model::resample::{to_model_grid, GridTransform};
use penumbra_model::Segmenter;
use penumbra_perfusion::PerfusionMaps;

use super::job::Job;
use super::stage::{Stage, StageError, StageName};

/// Input channel names the maps can provide, in physical units.
pub const MAP_CHANNELS: [&str; 4] = ["cbf", "cbv", "mtt", "tmax"];

/// The resample stage's artifacts.
#[derive(Debug)]
pub struct ModelInput {
    /// Model input `(z, c, 256, 256)` in physical units; the segmenter normalizes it.
    pub input: Array4<f32>,
    /// The way from the model grid back to the native grid.
    pub transform: GridTransform,
}

/// Stacks the channels the model card names and resamples them to the model grid.
pub struct ResampleStage {
    channels: Vec<String>,
}

impl ResampleStage {
    /// Creates the stage for the input channels of `segmenter`'s card.
    pub fn new(segmenter: &Arc<Segmenter>) -> Result<Self, String> {
        let channels = segmenter.card().input_channels();
        for name in &channels {
            if !MAP_CHANNELS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "the model card asks for input channel {name:?}; the perfusion stage provides {MAP_CHANNELS:?}"
                ));
            }
        }
        Ok(Self { channels })
    }
}

impl Stage for ResampleStage {
    fn name(&self) -> StageName {
        StageName::Resample
    }

    fn process(&self, mut job: Job) -> Result<Job, StageError> {
        let perfusion = job.artifacts.perfusion.as_ref().ok_or_else(|| {
            StageError::Failed("resample stage ran without perfusion maps: the perfusion stage must run first".into())
        })?;
        let maps = &perfusion.maps;
        let stack = map_channels(maps, &self.channels);
        let spacing = maps.geometry.spacing_mm;

        let (input, transform) = to_model_grid(&stack, [spacing[1], spacing[2]])
            .map_err(|e| StageError::Rejected(format!("cannot resample the maps to the model grid: {e}")))?;
        job.artifacts.model_input = Some(ModelInput { input, transform });
        Ok(job)
    }
}

/// Stacks the named maps into `(c, z, y, x)`, in the order given. Unknown names give zeros;
/// [`ResampleStage::new`] rejects them first.
pub fn map_channels(maps: &PerfusionMaps, names: &[String]) -> Array4<f32> {
    let (nz, ny, nx) = maps.cbf.dim();
    let mut stack = Array4::<f32>::zeros((names.len(), nz, ny, nx));
    for (index, name) in names.iter().enumerate() {
        let source = match name.to_ascii_lowercase().as_str() {
            "cbf" => &maps.cbf,
            "cbv" => &maps.cbv,
            "mtt" => &maps.mtt,
            "tmax" => &maps.tmax,
            _ => continue,
        };
        stack.index_axis_mut(Axis(0), index).assign(source);
    }
    stack
}
