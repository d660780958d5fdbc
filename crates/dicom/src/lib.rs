//! Robust DICOM decoding into [`penumbra_imaging::Volume`]s, series classification, and the
//! helpers Penumbra uses to write its own DICOM objects.
//!
//! - [`read`]: one instance from a file or bytes, by kind of fault ([`read_file`], [`read_bytes`],
//!   [`identify`]).
//! - [`pixels`]: pixel data to physical values (masking, sign extension, rescale).
//! - [`decode`]: a study's files to decoded series ([`decode_study`]).
//! - [`classify`]: what a series is (dynamic CTP, perfusion map, plain CT, other).
//! - [`inspect`]: a JSON-ready summary of what the decoder makes of a file or folder.
//! - [`write`]: Part 10 files written atomically ([`write_part10`]).
//! - [`series`]: what a decoded series carries besides its voxels ([`SeriesInfo`],
//!   [`StudyContext`], [`SeriesKind`]).

pub mod classify;
pub mod dataset;
pub mod decode;
pub mod inspect;
pub mod pixels;
pub mod read;
pub mod series;
pub mod tags;
pub mod uid;
pub mod values;
pub mod volume;
pub mod write;

pub use decode::{decode_study, RejectedFile, RejectedSeries, StudyDecode};
pub use dataset::{DataSet, Element, Encoding, Value};
pub use read::{identify, read_bytes, read_file, Instance, InstanceIds, ReadError};
pub use volume::SeriesError;
pub use write::{write_part10, WriteError};
pub use series::{DecodedSeries, SeriesInfo, SeriesKind, SourceInstance, StudyContext};
