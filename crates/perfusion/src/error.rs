//! Errors returned by map computation.

use thiserror::Error;

/// Failure to compute perfusion maps from a series.
#[derive(Debug, Error)]
pub enum PerfusionError {
    #[error("ctp volume has shape {shape:?} with an empty axis; pass a series with at least one voxel per frame")]
    EmptyVolume { shape: Vec<usize> },

    #[error("ctp volume has {frames} frames but {times} frame times; pass one acquisition time per frame")]
    FrameTimesMismatch { frames: usize, times: usize },

    #[error("ctp volume has {frames} frames, at least {min} are needed; use a dynamic series covering the bolus")]
    TooFewFrames { frames: usize, min: usize },

    #[error("frame time {time_s} s at frame {index} is not finite; check the acquisition times")]
    NonFiniteFrameTime { index: usize, time_s: f64 },

    #[error("frame time {time_s} s at frame {index} does not follow {previous_s} s; sort frames by acquisition time and drop duplicates")]
    FrameTimesNotIncreasing {
        index: usize,
        time_s: f64,
        previous_s: f64,
    },

    #[error("ctp volume has {frames} frames on the analysis grid, at most {max} are supported; pass only the dynamic perfusion frames")]
    TooManyFrames { frames: usize, max: usize },

    #[error("voxel spacing {spacing_mm:?} mm is invalid: every spacing must be finite and above 0; check PixelSpacing and slice positions")]
    InvalidSpacing { spacing_mm: [f64; 3] },

    #[error("invalid parameter {name} = {value}: expected {expected}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("no brain voxels found: no voxel has a baseline between {min_hu} and {max_hu} HU inside the skull; check that the series is a head CT in HU")]
    NoBrain { min_hu: f32, max_hu: f32 },

    #[error("no contrast bolus found: the mean enhancement of the head never rises above its first frame; check that the series is a perfusion acquisition")]
    NoBolus,

    #[error("no arterial input function found: no intracranial voxel enhances by at least {min_peak_hu} HU; check the bolus timing or lower aif.min_peak_hu")]
    NoArterialInput { min_peak_hu: f32 },

    #[error("the arterial input function has a non-positive area ({area_hu:.1} HU summed over frames) after baseline subtraction; the baseline frames may contain the bolus, or the AIF voxels are not arterial")]
    AifWithoutArea { area_hu: f64 },

    #[error("singular value decomposition of the arterial input matrix failed; the arterial curve contains non-finite values or is all zero")]
    DecompositionFailed,

    #[error("vendor map {name} has {frames} frames; pass a single-frame map volume")]
    VendorMapNotStatic { name: &'static str, frames: usize },

    #[error("vendor map {name} has shape {found:?} but the cbf map has {expected:?}; pass maps of the same series")]
    VendorShapeMismatch {
        name: &'static str,
        found: [usize; 3],
        expected: [usize; 3],
    },
}
