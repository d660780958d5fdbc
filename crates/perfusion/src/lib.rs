//! CT perfusion maps (CBF, CBV, MTT, Tmax) by SVD deconvolution, and threshold labelling of
//! ischemic core and penumbra.
//!
//! The pipeline in [`compute_maps`] runs, in order: time-grid check, in-plane motion
//! measurement and correction ([`motion`]), baseline detection
//! ([`baseline`]), brain and vessel masks ([`masks`]), HU to concentration ([`concentration`]),
//! arterial and venous input functions ([`aif`]), spatial and temporal denoising ([`denoise`]),
//! block-circulant deconvolution ([`deconvolution`]) and the maps themselves ([`maps`]).
//! [`label`] then turns the maps into a [`penumbra_imaging::LabelVolume`] with volumes and
//! eligibility criteria, and [`eval`] contains the metrics used to check both against ground truth.
//!
//! Units: CBF in mL/100 g/min, CBV in mL/100 g, MTT and Tmax in seconds, curves in ΔHU.
//! The crate does no I/O.

// Negated comparisons such as `!(x > 0.0)` are deliberate: they also reject NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod aif;
pub mod baseline;
pub mod concentration;
pub mod deconvolution;
pub mod denoise;
mod error;
pub mod eval;
pub mod labels;
pub mod maps;
pub mod masks;
pub mod motion;
mod params;
mod quality;

pub use aif::Curve;
pub use error::PerfusionError;
pub use labels::{
    drop_small_lesions, drop_small_lesions_with, label, CoreRule, EligibilityCheck, HypoperfusionRule, LabelParams,
    Lesions, ReferenceMethod, ReferenceTissue, ThresholdResult,
};
pub use maps::{compute_maps, maps_from_vendor, PerfusionMaps, PerfusionResult};
pub use params::{
    AifParams, BaselineParams, DeconvolutionMethod, DenoiseParams, MaskParams, PerfusionParams,
};
pub use quality::InputQuality;
