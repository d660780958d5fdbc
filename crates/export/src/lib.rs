//! Penumbra's outputs: DICOM Segmentation, Secondary Capture summary image, Comprehensive SR
//! measurement report and a JSON report.
//!
//! - [`seg`]: the core and penumbra masks as a BINARY DICOM SEG on the source grid.
//! - [`summary`]: CBF and Tmax maps with outlines and figures, as Secondary Capture and PNG.
//! - [`sr`]: core, penumbra and mismatch volumes as a TID 1500 measurement report.
//! - [`report`]: volume figures from label counts, the JSON report and the atomic file writer.
//!
//! Every builder returns an [`InMemDicomObject`] without file meta; [`report::write_outputs`]
//! adds the meta group and writes the files. This crate logs nothing: callers log failures.

mod dcm;
mod font;
pub mod report;
pub mod seg;
pub mod sr;
pub mod summary;

pub use dicom_object::InMemDicomObject;
pub use report::{volumes_from_labels, write_outputs, ExportFiles, Report, VolumeFigures};
pub use seg::{build_seg, SegInput, SegReference};
pub use sr::{build_sr, SrInput};
pub use summary::{build_summary_sc, render_summary, summary_png, RgbImage, SummaryInput};

use std::path::PathBuf;

/// The algorithm that produced a segmentation, as written into DICOM outputs and the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlgorithmInfo {
    /// Algorithm name, e.g. `penumbra-unet` or `threshold rCBF<30% Tmax>6s`.
    pub name: String,
    /// Algorithm or model version.
    pub version: String,
    /// Identifier of the model card that documents the model's intended use and validation.
    pub model_card_id: String,
}

/// Errors raised while building or writing Penumbra's outputs.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An input did not satisfy a builder's contract; the message names the value and the fix.
    #[error("invalid export input: {0}")]
    InvalidInput(String),

    /// A label volume contained a value that is not a [`penumbra_imaging::Label`].
    #[error("invalid label value {value} at voxel (z {z}, y {y}, x {x}): expected 0 background, 1 penumbra or 2 core")]
    InvalidLabel {
        value: u8,
        z: usize,
        y: usize,
        x: usize,
    },

    /// A DICOM object lacked an attribute this crate needs to read back.
    #[error("missing or unreadable attribute {name} in {object}")]
    MissingAttribute {
        name: &'static str,
        object: &'static str,
    },

    /// Attaching the file meta group or encoding a DICOM file failed.
    #[error("failed to encode {file} as DICOM: {message}")]
    Encode { file: String, message: String },

    /// Encoding the PNG summary failed.
    #[error("failed to encode summary PNG: {0}")]
    Png(#[from] png::EncodingError),

    /// Serializing the JSON report failed.
    #[error("failed to serialize report.json: {0}")]
    Json(#[from] serde_json::Error),

    /// A file-system operation failed on `path`.
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
