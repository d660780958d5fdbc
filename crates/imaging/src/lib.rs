//! Volumes, patient-space geometry and the image operations shared by Penumbra's stages.
//!
//! - [`volume`]: [`Volume`] (voxels in physical units, `(t, z, y, x)`) and [`Geometry`] (LPS, mm).
//! - [`labels`]: the label values used by every segmentation (0 background, 1 penumbra, 2 core).
//!
//! This crate does no I/O: it only computes.

pub mod labels;
pub mod volume;

pub use labels::{Label, LabelVolume};
pub use volume::{Geometry, Volume};
