//! Reading one DICOM instance from a file or from bytes, by kind of fault.
//!
//! Accepted layouts: Part 10 files (preamble, "DICM", File Meta), files with preamble and "DICM"
//! but no File Meta, and bare data sets (Implicit VR LE, Explicit VR LE or Explicit VR BE,
//! detected from the first element). Every failure is a [`ReadError`] whose message is fit for a
//! quarantine `reason.json`; nothing here panics on input.

use std::io::Read;
use std::path::Path;

use dicom_core::Tag;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::Serialize;

use crate::dataset::{self, DataSet, Encoding, StopAt, Value, PIXEL_DATA};
use crate::tags;
use crate::values::canonical_charset;

/// The largest single value accepted (1 GiB); a larger declared length can only be corrupt.
pub const MAX_VALUE_LEN: u64 = 1 << 30;

/// The largest data set a Deflated transfer syntax may inflate to (1 GiB).
pub const MAX_INFLATED_LEN: u64 = 1 << 30;

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// Failure to read an instance. Messages name the fault and what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read file {path}: {message}; check the path and its permissions")]
    Io { path: String, message: String },
    #[error("empty file (0 bytes): the sender left no content; resend the instance")]
    Empty,
    #[error("not a DICOM file: {reason}")]
    NotDicom { reason: String },
    #[error("truncated at byte {offset} of the data set: {reason}; the file was cut short, resend it once the transfer is complete")]
    Truncated { offset: usize, reason: String },
    #[error(
        "element {tag} declares {declared} bytes but only {available} are present; the length is corrupt, the file cannot be read"
    )]
    DeclaredLengthTooLarge { tag: String, declared: u64, available: usize },
    #[error("malformed data set at byte {offset} of the data set: {reason}")]
    Malformed { offset: usize, reason: String },
    #[error("sequence {tag} nests deeper than {max} levels; the file is corrupt or hostile")]
    NestingTooDeep { tag: String, max: usize },
    #[error("deflated data set is corrupt: {reason}")]
    Deflate { reason: String },
    #[error("deflated data set inflates beyond {max} bytes; refusing to expand it")]
    InflatedTooLarge { max: u64 },
    #[error("required attribute {name} is missing or empty; the sender must fill it")]
    MissingAttribute { name: &'static str },
    #[error("no pixel data (7FE0,0010) in an image instance")]
    NoPixelData,
    #[error("pixel data shorter than expected: {got} bytes present, {expected} needed for the declared rows, columns, frames and bits; the file is incomplete")]
    PixelDataShort { expected: usize, got: usize },
    #[error("unsupported pixel data: {reason}")]
    UnsupportedPixels { reason: String },
    #[error("cannot decode {transfer_syntax} pixel data: {reason}")]
    PixelDecode { transfer_syntax: String, reason: String },
    #[error("SOP Instance UID {sop_instance_uid} repeats {kept} with different content; kept the first, this copy is set aside")]
    DuplicateInstance { sop_instance_uid: String, kept: String },
}

impl ReadError {
    /// Returns a short machine-readable name of the fault, for metrics and `reason.json`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::Io { .. } => "io",
            ReadError::Empty => "empty",
            ReadError::NotDicom { .. } => "not_dicom",
            ReadError::Truncated { .. } => "truncated",
            ReadError::DeclaredLengthTooLarge { .. } => "declared_length_too_large",
            ReadError::Malformed { .. } => "malformed",
            ReadError::NestingTooDeep { .. } => "nesting_too_deep",
            ReadError::Deflate { .. } => "deflate",
            ReadError::InflatedTooLarge { .. } => "inflated_too_large",
            ReadError::MissingAttribute { .. } => "missing_attribute",
            ReadError::NoPixelData => "no_pixel_data",
            ReadError::PixelDataShort { .. } => "pixel_data_short",
            ReadError::UnsupportedPixels { .. } => "unsupported_pixels",
            ReadError::PixelDecode { .. } => "pixel_decode",
            ReadError::DuplicateInstance { .. } => "duplicate_instance",
        }
    }
}

impl Serialize for ReadError {
    /// Serializes as `{"kind": ..., "message": ...}`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("ReadError", 2)?;
        s.serialize_field("kind", self.kind())?;
        s.serialize_field("message", &self.to_string())?;
        s.end()
    }
}

/// One instance read into memory.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The data set (File Meta excluded).
    pub data_set: DataSet,
    /// The transfer syntax from File Meta, or the detected one for files without it.
    pub transfer_syntax_uid: String,
    /// Element encoding of the data set.
    pub encoding: Encoding,
    /// Repairs and assumptions made while reading, one sentence each.
    pub warnings: Vec<String>,
    /// MediaStorageSOPClassUID from File Meta, if any.
    pub(crate) meta_sop_class_uid: Option<String>,
}

impl Instance {
    pub fn sop_instance_uid(&self) -> Option<String> {
        self.data_set.string(tags::SOP_INSTANCE_UID)
    }

    pub fn sop_class_uid(&self) -> Option<String> {
        self.data_set.string(tags::SOP_CLASS_UID).or_else(|| self.meta_sop_class_uid.clone())
    }

    pub fn study_instance_uid(&self) -> Option<String> {
        self.data_set.string(tags::STUDY_INSTANCE_UID)
    }

    pub fn series_instance_uid(&self) -> Option<String> {
        self.data_set.string(tags::SERIES_INSTANCE_UID)
    }
}

/// The identifiers the spool and assembler need, read without the pixel data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceIds {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub number_of_temporal_positions: Option<i64>,
    /// ImagePositionPatient (mm, LPS) of a single-frame instance.
    pub image_position_patient: Option<[f64; 3]>,
}

/// Reads the instance in the file at `path`.
pub fn read_file(path: &Path) -> Result<Instance, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::Io { path: path.display().to_string(), message: e.to_string() })?;
    read_bytes(&bytes)
}

/// Reads an instance from its bytes, checking that native pixel data is complete.
pub fn read_bytes(bytes: &[u8]) -> Result<Instance, ReadError> {
    let instance = read_until(bytes, StopAt::End)?;
    crate::pixels::check_native_length(&instance)?;
    Ok(instance)
}

/// Reads only up to PixelData and returns the identifiers of the instance.
pub fn identify(bytes: &[u8]) -> Result<InstanceIds, ReadError> {
    let instance = read_until(bytes, StopAt::Before(PIXEL_DATA))?;
    let mut ignored = Vec::new();
    let set = &instance.data_set;
    let required = |tag: Tag, name: &'static str| set.string(tag).ok_or(ReadError::MissingAttribute { name });
    Ok(InstanceIds {
        study_instance_uid: required(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
        series_instance_uid: required(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
        sop_instance_uid: required(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
        sop_class_uid: instance.sop_class_uid().ok_or(ReadError::MissingAttribute { name: "SOPClassUID" })?,
        number_of_temporal_positions: set
            .get(tags::NUMBER_OF_TEMPORAL_POSITIONS)
            .and_then(|_| set.integer(tags::NUMBER_OF_TEMPORAL_POSITIONS, "NumberOfTemporalPositions", &mut ignored)),
        image_position_patient: set
            .decimals(tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient", 3, &mut ignored)
            .map(|v| [v[0], v[1], v[2]]),
    })
}

/// Data set start and the File Meta attributes that matter.
struct Layout {
    body_start: usize,
    transfer_syntax: Option<String>,
    meta_sop_class_uid: Option<String>,
    has_magic: bool,
}

fn read_until(bytes: &[u8], stop: StopAt) -> Result<Instance, ReadError> {
    if bytes.is_empty() {
        return Err(ReadError::Empty);
    }
    let mut warnings = Vec::new();
    let layout = layout(bytes)?;
    let body = &bytes[layout.body_start..];
    let (encoding, ts, deflated) = choose_encoding(body, &layout, &mut warnings)?;
    let inflated;
    let body = if deflated {
        inflated = inflate(body)?;
        &inflated[..]
    } else {
        body
    };
    let parsed = dataset::parse(body, encoding, stop)?;
    warnings.extend(parsed.warnings);
    if parsed.data_set.elements.is_empty() {
        return Err(ReadError::NotDicom { reason: "the data set has no elements".to_string() });
    }
    check_charset(&parsed.data_set, &mut warnings);
    Ok(Instance {
        data_set: parsed.data_set,
        transfer_syntax_uid: ts,
        encoding,
        warnings,
        meta_sop_class_uid: layout.meta_sop_class_uid,
    })
}

/// Finds the preamble and magic, and parses File Meta when present.
fn layout(bytes: &[u8]) -> Result<Layout, ReadError> {
    let magic_end = if bytes.get(128..132) == Some(b"DICM") {
        Some(132)
    } else if bytes.starts_with(b"DICM") {
        Some(4)
    } else {
        None
    };
    let start = magic_end.unwrap_or(0);
    let has_magic = magic_end.is_some();
    let rest = &bytes[start..];
    let meta_follows = rest.len() >= 8 && rest[0..2] == [0x02, 0x00] && rest[4..6].iter().all(u8::is_ascii_uppercase);
    if !meta_follows {
        if !has_magic && bytes.len() < 8 {
            return Err(ReadError::NotDicom { reason: format!("only {} bytes, fewer than one element header", bytes.len()) });
        }
        return Ok(Layout { body_start: start, transfer_syntax: None, meta_sop_class_uid: None, has_magic });
    }
    let meta = dataset::parse(rest, Encoding::EXPLICIT_LE, StopAt::EndOfMetaGroup)?;
    Ok(Layout {
        body_start: start + meta.end,
        transfer_syntax: meta.data_set.string(tags::TRANSFER_SYNTAX_UID),
        meta_sop_class_uid: meta.data_set.string(tags::MEDIA_STORAGE_SOP_CLASS_UID),
        has_magic,
    })
}

/// Picks the data set encoding from File Meta, checked against the bytes; returns the
/// encoding, the transfer syntax UID to report, and whether the body is deflated.
fn choose_encoding(body: &[u8], layout: &Layout, warnings: &mut Vec<String>) -> Result<(Encoding, String, bool), ReadError> {
    let Some(ts) = layout.transfer_syntax.clone() else {
        let detected = detect_encoding(body, layout.has_magic)?;
        let uid = native_uid(detected);
        warnings.push(format!("no File Meta transfer syntax; detected {uid} from the data set"));
        return Ok((detected, uid.to_string(), false));
    };
    let declared = match ts.as_str() {
        IMPLICIT_VR_LE => Encoding::IMPLICIT_LE,
        EXPLICIT_VR_BE => Encoding::EXPLICIT_BE,
        DEFLATED_EXPLICIT_VR_LE => return Ok((Encoding::EXPLICIT_LE, ts, true)),
        _ if TransferSyntaxRegistry.get(&ts).is_some() => Encoding::EXPLICIT_LE,
        _ => {
            let detected = detect_encoding(body, true)?;
            warnings.push(format!("unknown transfer syntax {ts:?}; data set read as {}", native_uid(detected)));
            return Ok((detected, ts, false));
        }
    };
    match detect_encoding(body, true) {
        Ok(detected) if detected != declared => {
            warnings.push(format!(
                "File Meta declares {ts} but the data set is encoded as {}; read as encoded",
                native_uid(detected)
            ));
            Ok((detected, ts, false))
        }
        _ => Ok((declared, ts, false)),
    }
}

fn native_uid(encoding: Encoding) -> &'static str {
    match (encoding.explicit_vr, encoding.big_endian) {
        (false, _) => IMPLICIT_VR_LE,
        (true, false) => EXPLICIT_VR_LE,
        (true, true) => EXPLICIT_VR_BE,
    }
}

/// Detects the encoding of a data set from its first element.
///
/// The first tag's group is small (0002..0028 in any image data set), so whichever byte order
/// gives the smaller group is the right one; an explicit VR shows as two uppercase letters
/// after the tag. `lenient` (after a "DICM" magic) accepts any first group.
pub(crate) fn detect_encoding(body: &[u8], lenient: bool) -> Result<Encoding, ReadError> {
    if body.len() < 8 {
        return Err(ReadError::NotDicom { reason: format!("data set of {} bytes is shorter than one element header", body.len()) });
    }
    let le = u16::from_le_bytes([body[0], body[1]]);
    let be = u16::from_be_bytes([body[0], body[1]]);
    let big = be < le;
    let group = le.min(be);
    let explicit = dicom_core::VR::from_binary([body[4], body[5]]).is_some();
    let plausible = if lenient { group != 0 && group <= 0x7FE0 } else { (0x0002..=0x0028).contains(&group) };
    if !plausible {
        return Err(ReadError::NotDicom { reason: format!("first bytes do not start a DICOM element (group {group:04X})") });
    }
    match (explicit, big) {
        (true, false) => Ok(Encoding::EXPLICIT_LE),
        (true, true) => Ok(Encoding::EXPLICIT_BE),
        (false, false) => Ok(Encoding::IMPLICIT_LE),
        (false, true) => Err(ReadError::NotDicom { reason: "big-endian data without explicit VRs".to_string() }),
    }
}

/// Inflates a Deflated Explicit VR Little Endian data set, refusing to exceed [`MAX_INFLATED_LEN`].
fn inflate(body: &[u8]) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let decoder = flate2::read::DeflateDecoder::new(body);
    decoder
        .take(MAX_INFLATED_LEN + 1)
        .read_to_end(&mut out)
        .map_err(|e| ReadError::Deflate { reason: e.to_string() })?;
    if out.len() as u64 > MAX_INFLATED_LEN {
        return Err(ReadError::InflatedTooLarge { max: MAX_INFLATED_LEN });
    }
    Ok(out)
}

/// Warns about misspelt or unknown SpecificCharacterSet values.
///
/// Text is decoded as UTF-8 when valid, else as ISO 8859-1, which reads the character sets CT
/// scanners use; other repertoires only affect patient names, which Penumbra copies as read.
fn check_charset(set: &DataSet, warnings: &mut Vec<String>) {
    for value in set.strings(tags::SPECIFIC_CHARACTER_SET) {
        if value.is_empty() {
            continue;
        }
        match canonical_charset(&value) {
            Some(canonical) if canonical == value => {}
            Some(canonical) => warnings.push(format!("SpecificCharacterSet {value:?} is misspelt; read as {canonical:?}")),
            None => warnings.push(format!("SpecificCharacterSet {value:?} is not known; text read as UTF-8 or ISO 8859-1")),
        }
    }
}

/// Returns the pixel data element's value, if any.
pub(crate) fn pixel_value(instance: &Instance) -> Option<&Value> {
    instance.data_set.get(PIXEL_DATA).map(|e| &e.value)
}
