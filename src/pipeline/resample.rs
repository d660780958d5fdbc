//! Resample stage: the perfusion maps as model input channels on the 256x256 model grid.
//!
//! Besides the four maps in physical units, two derived channels are offered. `rcbf` is the CBF
//! relative to the reference tissue of the threshold labels, the quantity the core rule reads.
//! `tissue` is the mask of brain voxels that are not vessels, the only voxels ever labelled.
//!
//! A channel name may end in a slice offset, `cbf[z-1]` or `tmax[z+1]`: the channel of the
//! neighbouring slice, the edge slice repeated beyond the volume. With them the U-Net segments
//! each slice with its neighbours' maps beside it.

use std::sync::Arc;

use ndarray::{Array4, Axis};
use penumbra_model::resample::{to_model_grid, GridTransform};
use penumbra_model::Segmenter;
use ndarray::{Array3, Zip};
use penumbra_perfusion::{PerfusionMaps, ReferenceTissue};

use super::job::Job;
use super::stage::{Stage, StageError, StageName};

/// Input channel names the perfusion stage can provide: the maps in physical units, then the
/// derived channels.
pub const MAP_CHANNELS: [&str; 6] = ["cbf", "cbv", "mtt", "tmax", "rcbf", "tissue"];

/// Largest slice offset a channel name may carry.
pub const MAX_SLICE_OFFSET: isize = 2;

/// Splits a channel name into its map (lower case) and slice offset: `cbf` is `("cbf", 0)` and
/// `Tmax[z-1]` is `("tmax", -1)`. Returns `None` for a map the perfusion stage does not provide
/// or an offset outside `-MAX_SLICE_OFFSET..=MAX_SLICE_OFFSET`.
pub fn split_channel(name: &str) -> Option<(String, isize)> {
    let name = name.trim().to_ascii_lowercase();
    let (map, offset) = match name.split_once('[') {
        None => (name.as_str(), 0),
        Some((map, rest)) => {
            let offset = rest.strip_prefix('z')?.strip_suffix(']')?;
            if !offset.starts_with(['+', '-']) {
                return None;
            }
            let offset: isize = offset.parse().ok()?;
            if offset == 0 {
                return None;
            }
            (map, offset)
        }
    };
    if !MAP_CHANNELS.contains(&map) || offset.abs() > MAX_SLICE_OFFSET {
        return None;
    }
    Some((map.to_string(), offset))
}

/// Relative CBF is clipped to `0..=RCBF_MAX`. Vessels and noise spikes reach many times the
/// reference, and unclipped they would set the channel's normalization.
pub const RCBF_MAX: f32 = 3.0;

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
            if split_channel(name).is_none() {
                return Err(format!(
                    "the model card asks for input channel {name:?}; the perfusion stage provides {MAP_CHANNELS:?}, \
                     each also with a slice offset of up to {MAX_SLICE_OFFSET} such as cbf[z-1]"
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
        let stack = map_channels(maps, &perfusion.threshold.reference, &self.channels);
        let spacing = maps.geometry.spacing_mm;

        let (input, transform) = to_model_grid(&stack, [spacing[1], spacing[2]])
            .map_err(|e| StageError::Rejected(format!("cannot resample the maps to the model grid: {e}")))?;
        job.artifacts.model_input = Some(ModelInput { input, transform });
        Ok(job)
    }
}

/// Stacks the named channels into `(c, z, y, x)`, in the order given. Unknown names give zeros,
/// but [`ResampleStage::new`] rejects them first.
pub fn map_channels(maps: &PerfusionMaps, reference: &ReferenceTissue, names: &[String]) -> Array4<f32> {
    let (nz, ny, nx) = maps.cbf.dim();
    let mut stack = Array4::<f32>::zeros((names.len(), nz, ny, nx));
    for (index, name) in names.iter().enumerate() {
        let Some((map, offset)) = split_channel(name) else {
            continue;
        };
        let values = match map.as_str() {
            "cbf" => maps.cbf.clone(),
            "cbv" => maps.cbv.clone(),
            "mtt" => maps.mtt.clone(),
            "tmax" => maps.tmax.clone(),
            "rcbf" => relative_cbf(maps, reference),
            "tissue" => tissue_channel(maps),
            _ => continue,
        };
        stack.index_axis_mut(Axis(0), index).assign(&shift_slices(&values, offset));
    }
    stack
}

/// Returns `values` with slice `z` taken from slice `z + offset`, the edge slice repeated where
/// that lies outside the volume.
pub fn shift_slices(values: &Array3<f32>, offset: isize) -> Array3<f32> {
    if offset == 0 {
        return values.clone();
    }
    let nz = values.len_of(Axis(0));
    let mut shifted = Array3::zeros(values.raw_dim());
    for z in 0..nz {
        let source = (z as isize + offset).clamp(0, nz as isize - 1) as usize;
        shifted.index_axis_mut(Axis(0), z).assign(&values.index_axis(Axis(0), source));
    }
    shifted
}

/// Returns CBF divided by the reference tissue's CBF, clipped to `0..=RCBF_MAX`, in tissue
/// voxels, and 0 elsewhere. Without a reference (no tissue at all) every voxel is 0.
pub fn relative_cbf(maps: &PerfusionMaps, reference: &ReferenceTissue) -> Array3<f32> {
    let reference_cbf = reference.cbf_ml_100g_min.filter(|cbf| cbf.is_finite() && *cbf > 0.0);
    Zip::from(&maps.cbf)
        .and(&maps.brain_mask)
        .and(&maps.vessel_mask)
        .map_collect(|&cbf, &brain, &vessel| match reference_cbf {
            Some(reference_cbf) if brain && !vessel && cbf.is_finite() => (cbf / reference_cbf).clamp(0.0, RCBF_MAX),
            _ => 0.0,
        })
}

/// Returns 1 in brain voxels that are not vessels and 0 elsewhere.
pub fn tissue_channel(maps: &PerfusionMaps) -> Array3<f32> {
    Zip::from(&maps.brain_mask)
        .and(&maps.vessel_mask)
        .map_collect(|&brain, &vessel| if brain && !vessel { 1.0 } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use penumbra_imaging::Geometry;
    use penumbra_perfusion::ReferenceMethod;

    /// Builds one slice of 1 x 4 voxels: tissue with CBF 25 and 250, a vessel, and a voxel
    /// outside the brain.
    fn maps() -> PerfusionMaps {
        let shape = (1, 1, 4);
        let cbf = Array3::from_shape_vec(shape, vec![25.0, 250.0, 80.0, 40.0]).unwrap();
        PerfusionMaps {
            cbv: cbf.mapv(|v| v / 10.0),
            mtt: Array3::from_elem(shape, 4.0),
            tmax: Array3::from_elem(shape, 1.0),
            cbf,
            brain_mask: Array3::from_shape_vec(shape, vec![true, true, true, false]).unwrap(),
            vessel_mask: Array3::from_shape_vec(shape, vec![false, false, true, false]).unwrap(),
            cbf_recovery: Vec::new(),
            geometry: Geometry {
                origin_mm: [0.0; 3],
                row_dir: [1.0, 0.0, 0.0],
                col_dir: [0.0, 1.0, 0.0],
                normal: [0.0, 0.0, 1.0],
                spacing_mm: [5.0, 1.0, 1.0],
            },
        }
    }

    fn reference(cbf: Option<f32>) -> ReferenceTissue {
        ReferenceTissue {
            method: ReferenceMethod::ContralateralHealthy,
            voxels: 100,
            cbf_ml_100g_min: cbf,
            measured_cbf_ml_100g_min: cbf,
            cbf_recovery: 1.0,
            mtt_s: Some(4.0),
            midline_centroid: [0.0; 3],
            midline_normal_yx: [0.0, 1.0],
            lesion_side: 1,
        }
    }

    #[test]
    fn relative_cbf_clipped_and_masked() {
        let rcbf = relative_cbf(&maps(), &reference(Some(50.0)));
        assert_eq!(rcbf.as_slice().unwrap(), &[0.5, RCBF_MAX, 0.0, 0.0]);

        let none = relative_cbf(&maps(), &reference(None));
        assert!(none.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn channels_stack_in_given_order() {
        let names: Vec<String> = ["tissue", "cbf", "rcbf"].iter().map(|n| n.to_string()).collect();
        let stack = map_channels(&maps(), &reference(Some(50.0)), &names);
        assert_eq!(stack.dim(), (3, 1, 1, 4));
        let channel = |c: usize| stack.index_axis(Axis(0), c).iter().copied().collect::<Vec<f32>>();
        assert_eq!(channel(0), vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(channel(1), vec![25.0, 250.0, 80.0, 40.0]);
        assert_eq!(channel(2), vec![0.5, 3.0, 0.0, 0.0]);
    }

    #[test]
    fn channel_names_split_into_map_and_offset() {
        assert_eq!(split_channel("cbf"), Some(("cbf".to_string(), 0)));
        assert_eq!(split_channel(" Tmax[z-1]"), Some(("tmax".to_string(), -1)));
        assert_eq!(split_channel("rcbf[z+2]"), Some(("rcbf".to_string(), 2)));
        for bad in ["adc", "cbf[z-3]", "cbf[z0]", "cbf[z+0]", "cbf[1]", "cbf[z-1", "adc[z+1]", "cbf[z+x]"] {
            assert_eq!(split_channel(bad), None, "{bad}");
        }
    }

    #[test]
    fn slice_offsets_repeat_the_edge() {
        let values = Array3::from_shape_fn((3, 1, 2), |(z, _, x)| (10 * z + x) as f32);
        let below = shift_slices(&values, -1);
        assert_eq!(below.iter().copied().collect::<Vec<f32>>(), vec![0.0, 1.0, 0.0, 1.0, 10.0, 11.0]);
        let above = shift_slices(&values, 2);
        assert_eq!(above.iter().copied().collect::<Vec<f32>>(), vec![20.0, 21.0, 20.0, 21.0, 20.0, 21.0]);
    }
}
