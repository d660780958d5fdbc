//! Robust DICOM decoding into [`penumbra_imaging::Volume`]s, series classification, and the
//! helpers Penumbra uses to write its own DICOM objects.
//!
//! - [`series`]: what a decoded series carries besides its voxels ([`SeriesInfo`],
//!   [`StudyContext`], [`SeriesKind`]).

pub mod series;
pub mod uid;

pub use series::{DecodedSeries, SeriesInfo, SeriesKind, SourceInstance, StudyContext};
