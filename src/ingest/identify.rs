//! Reads the identifiers of a DICOM instance from its bytes, checking its structure first.
//!
//! A scan of the element headers runs before any parsing. It finds where the data set starts,
//! which encoding it uses and where Pixel Data begins. It rejects a file whose declared lengths
//! run past its end before anything is allocated for them. dicom-object then parses
//! only the bytes before Pixel Data.

use dicom_core::dictionary::{DataDictionary, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::{Deserialize, Serialize};
use thiserror::Error;

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";

/// Nesting limit of sequences with undefined length that the scan follows.
const MAX_SEQUENCE_DEPTH: usize = 16;

/// Identifiers and frame layout of one instance, as the spool and the assembler use them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceIds {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    /// Number of Temporal Positions (0020,0105), when the header has it.
    pub number_of_temporal_positions: Option<u32>,
    /// Image Position (Patient) (0020,0032) in mm, when the header has it.
    pub image_position_patient: Option<[f64; 3]>,
}

/// Failure to identify a file. [`IdentifyError::kind`] is the stable name written to quarantine
/// records.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum IdentifyError {
    #[error("empty file: it has zero bytes")]
    EmptyFile,
    #[error("not a DICOM file: {0}")]
    NotDicom(String),
    #[error("truncated file: pixel data declares {declared} bytes but only {remaining} remain; resend the instance")]
    Truncated { declared: u64, remaining: u64 },
    #[error(
        "element {tag} declares {declared} bytes but only {remaining} remain in the file; the file is truncated or corrupt"
    )]
    LengthExceedsFile { tag: String, declared: u64, remaining: u64 },
    #[error("malformed data set at byte {offset}: {detail}")]
    Malformed { offset: usize, detail: String },
    #[error("data set could not be parsed: {0}")]
    Unparseable(String),
    #[error("{name} is missing; the instance cannot be filed without it")]
    MissingUid { name: &'static str },
    #[error("{name} {value:?} is not a valid UID (digits and dots, at most 64 characters)")]
    InvalidUid { name: &'static str, value: String },
}

impl IdentifyError {
    /// Returns the short machine-readable name of the fault, e.g. `empty_file`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EmptyFile => "empty_file",
            Self::NotDicom(_) => "not_dicom",
            Self::Truncated { .. } => "truncated",
            Self::LengthExceedsFile { .. } => "length_exceeds_file",
            Self::Malformed { .. } => "malformed",
            Self::Unparseable(_) => "unparseable",
            Self::MissingUid { .. } => "missing_uid",
            Self::InvalidUid { .. } => "invalid_uid",
        }
    }
}

/// Returns true when `uid` is safe as a file name and valid as a DICOM UID: 1 to 64 characters,
/// only digits and dots, starting and ending with a digit.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && uid.starts_with(|c: char| c.is_ascii_digit())
        && uid.ends_with(|c: char| c.is_ascii_digit())
}

/// Identifies an instance from the bytes of a file (Part 10, or a bare data set).
pub fn identify(bytes: &[u8]) -> Result<InstanceIds, IdentifyError> {
    if bytes.is_empty() {
        return Err(IdentifyError::EmptyFile);
    }

    let layout = locate_data_set(bytes)?;
    let object = parse_data_set_header(&bytes[layout.data_set_start..], &layout.transfer_syntax)?;
    ids_from_object(&object, &layout)
}

/// Parses the elements before Pixel Data of a data set received without File Meta, encoded in
/// `transfer_syntax`. It runs the same length and nesting checks as [`identify`] first, so Pixel
/// Data is checked against the bytes but never decoded. The C-STORE receiver calls it on every
/// data set, because it stores the pixels as they arrived.
///
/// # Errors
///
/// [`IdentifyError::EmptyFile`] for no bytes, [`IdentifyError::Unparseable`] for a deflate
/// stream that is invalid or too large or a data set dicom-object cannot parse, and
/// the scan's errors ([`IdentifyError::LengthExceedsFile`], [`IdentifyError::Truncated`],
/// [`IdentifyError::Malformed`]).
/// A deflated data set is inflated first, to at most [`MAX_INFLATED_BYTES`].
pub fn parse_data_set_header(data: &[u8], transfer_syntax: &str) -> Result<InMemDicomObject, IdentifyError> {
    if data.is_empty() {
        return Err(IdentifyError::EmptyFile);
    }
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LE {
        let inflated = inflate(data)?;
        return parse_data_set_header(&inflated, EXPLICIT_VR_LE);
    }

    let encoding = Encoding::for_transfer_syntax(transfer_syntax);
    let scan = scan_top_level(data, 0, encoding)?;
    let cut = scan.pixel_data_at.unwrap_or(scan.end);
    parse_data_set(&data[..cut], transfer_syntax)
}

/// Maximum size of an inflated data set, in bytes. The buffer grows with the bytes the stream
/// really produces, so a small file costs memory only as far as it inflates.
pub const MAX_INFLATED_BYTES: u64 = 1 << 30;

/// Inflates a Deflated Explicit VR Little Endian data set (a raw deflate stream, PS3.5 A.5).
fn inflate(data: &[u8]) -> Result<Vec<u8>, IdentifyError> {
    use std::io::Read;

    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut inflated)
        .map_err(|err| IdentifyError::Unparseable(format!("invalid deflate stream: {err}")))?;
    if inflated.len() as u64 > MAX_INFLATED_BYTES {
        return Err(IdentifyError::Unparseable(format!("data set inflates to more than {MAX_INFLATED_BYTES} bytes")));
    }
    Ok(inflated)
}

/// Start and encoding of the data set, with SOP UIDs from the File Meta group.
struct Layout {
    data_set_start: usize,
    transfer_syntax: String,
    meta_sop_class_uid: Option<String>,
    meta_sop_instance_uid: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Encoding {
    explicit: bool,
    big_endian: bool,
}

impl Encoding {
    fn for_transfer_syntax(uid: &str) -> Self {
        match uid {
            IMPLICIT_VR_LE => Self { explicit: false, big_endian: false },
            EXPLICIT_VR_BE => Self { explicit: true, big_endian: true },
            _ => Self { explicit: true, big_endian: false },
        }
    }

    fn u16_at(self, bytes: &[u8], at: usize) -> u16 {
        let pair = [bytes[at], bytes[at + 1]];
        if self.big_endian { u16::from_be_bytes(pair) } else { u16::from_le_bytes(pair) }
    }

    fn u32_at(self, bytes: &[u8], at: usize) -> u32 {
        let quad = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if self.big_endian { u32::from_be_bytes(quad) } else { u32::from_le_bytes(quad) }
    }
}

const LITTLE_EXPLICIT: Encoding = Encoding { explicit: true, big_endian: false };
const LITTLE_IMPLICIT: Encoding = Encoding { explicit: false, big_endian: false };

/// Finds the data set after the 128-byte preamble and "DICM" and after the File Meta group
/// (0002), each when present. Without File Meta, the encoding is detected from the first element.
fn locate_data_set(bytes: &[u8]) -> Result<Layout, IdentifyError> {
    let mut pos = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" { 132 } else { 0 };

    if bytes.len() >= pos + 8 && LITTLE_EXPLICIT.u16_at(bytes, pos) == 0x0002 {
        let meta = read_file_meta(bytes, pos)?;
        pos = meta.end;
        let transfer_syntax = meta.transfer_syntax.ok_or(IdentifyError::MissingUid { name: "TransferSyntaxUID" })?;
        return Ok(Layout {
            data_set_start: pos,
            transfer_syntax,
            meta_sop_class_uid: meta.sop_class_uid,
            meta_sop_instance_uid: meta.sop_instance_uid,
        });
    }

    let transfer_syntax = detect_bare_encoding(bytes, pos)?;
    Ok(Layout {
        data_set_start: pos,
        transfer_syntax: transfer_syntax.to_string(),
        meta_sop_class_uid: None,
        meta_sop_instance_uid: None,
    })
}

struct FileMeta {
    end: usize,
    transfer_syntax: Option<String>,
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
}

/// Reads the File Meta group, always Explicit VR Little Endian.
fn read_file_meta(bytes: &[u8], start: usize) -> Result<FileMeta, IdentifyError> {
    let mut meta = FileMeta { end: start, transfer_syntax: None, sop_class_uid: None, sop_instance_uid: None };
    let mut pos = start;

    while bytes.len() >= pos + 8 && LITTLE_EXPLICIT.u16_at(bytes, pos) == 0x0002 {
        let header = read_header(bytes, pos, LITTLE_EXPLICIT)?;
        let value_start = pos + header.header_len;
        let Some(length) = header.defined_length() else {
            return Err(malformed(pos, "file meta element with undefined length"));
        };
        check_fits(bytes, value_start, length, header.tag)?;

        let value = &bytes[value_start..value_start + length];
        let text = || Some(uid_text(value));
        match header.tag.element() {
            0x0002 => meta.sop_class_uid = text(),
            0x0003 => meta.sop_instance_uid = text(),
            0x0010 => meta.transfer_syntax = text(),
            _ => {}
        }
        pos = value_start + length;
    }

    meta.end = pos;
    Ok(meta)
}

/// Detects Implicit or Explicit VR Little Endian for a data set without File Meta. The first
/// element must be in groups 0008 to 0028, where every image data set starts.
fn detect_bare_encoding(bytes: &[u8], pos: usize) -> Result<&'static str, IdentifyError> {
    if bytes.len() < pos + 8 {
        return Err(IdentifyError::NotDicom(format!("only {} bytes, too short for one element", bytes.len())));
    }

    let group = LITTLE_EXPLICIT.u16_at(bytes, pos);
    if !(0x0008..=0x0028).contains(&group) || group % 2 == 1 {
        return Err(IdentifyError::NotDicom(
            "no DICM marker and the first bytes are not a DICOM element of groups 0008 to 0028".to_string(),
        ));
    }

    if is_known_vr(&bytes[pos + 4..pos + 6]) {
        Ok(EXPLICIT_VR_LE)
    } else {
        Ok(IMPLICIT_VR_LE)
    }
}

fn is_known_vr(code: &[u8]) -> bool {
    const VRS: [&[u8; 2]; 34] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
        b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
        b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
    ];
    VRS.iter().any(|vr| vr.as_slice() == code)
}

fn has_long_length(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV"
    )
}

const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);

/// One element header as found in the bytes.
struct Header {
    tag: Tag,
    vr: Option<[u8; 2]>,
    length: u32,
    header_len: usize,
}

impl Header {
    fn defined_length(&self) -> Option<usize> {
        (self.length != UNDEFINED_LENGTH).then_some(self.length as usize)
    }
}

fn read_header(bytes: &[u8], pos: usize, encoding: Encoding) -> Result<Header, IdentifyError> {
    if bytes.len() < pos + 8 {
        return Err(malformed(pos, "element header cut short"));
    }
    let tag = Tag(encoding.u16_at(bytes, pos), encoding.u16_at(bytes, pos + 2));

    // Item and delimitation tags have no VR in any encoding.
    if tag.group() == 0xFFFE || !encoding.explicit {
        return Ok(Header { tag, vr: None, length: encoding.u32_at(bytes, pos + 4), header_len: 8 });
    }

    let vr = [bytes[pos + 4], bytes[pos + 5]];
    if !is_known_vr(&vr) {
        return Err(malformed(pos, &format!("unknown value representation {:?} for {tag}", String::from_utf8_lossy(&vr))));
    }
    if has_long_length(&vr) {
        if bytes.len() < pos + 12 {
            return Err(malformed(pos, "element header cut short"));
        }
        Ok(Header { tag, vr: Some(vr), length: encoding.u32_at(bytes, pos + 8), header_len: 12 })
    } else {
        Ok(Header { tag, vr: Some(vr), length: u32::from(encoding.u16_at(bytes, pos + 6)), header_len: 8 })
    }
}

fn check_fits(bytes: &[u8], value_start: usize, length: usize, tag: Tag) -> Result<(), IdentifyError> {
    let remaining = bytes.len().saturating_sub(value_start);
    if length <= remaining {
        return Ok(());
    }
    if tag == tags::PIXEL_DATA {
        Err(IdentifyError::Truncated { declared: length as u64, remaining: remaining as u64 })
    } else {
        Err(IdentifyError::LengthExceedsFile { tag: tag.to_string(), declared: length as u64, remaining: remaining as u64 })
    }
}

fn malformed(offset: usize, detail: &str) -> IdentifyError {
    IdentifyError::Malformed { offset, detail: detail.to_string() }
}

/// Result of scanning the top-level data set.
struct TopLevelScan {
    /// Offset of the Pixel Data element header, when present.
    pixel_data_at: Option<usize>,
    /// Offset just past the last well-formed element; bytes after it are ignored.
    end: usize,
}

/// Walks the top-level elements, checking every declared length against the bytes left.
/// Stops at Pixel Data (after checking its length) or at trailing bytes that are not an element.
fn scan_top_level(bytes: &[u8], start: usize, encoding: Encoding) -> Result<TopLevelScan, IdentifyError> {
    let mut pos = start;

    while bytes.len() >= pos + 8 {
        let header = match read_header(bytes, pos, encoding) {
            Ok(header) => header,
            // Trailing garbage after at least one element is ignored, as readers do.
            Err(IdentifyError::Malformed { .. }) if pos > start => break,
            Err(err) => return Err(err),
        };
        if header.tag.group() == 0x0000 && header.length == 0 && pos > start {
            break;
        }

        let value_start = pos + header.header_len;
        if header.tag == tags::PIXEL_DATA {
            if let Some(length) = header.defined_length() {
                check_fits(bytes, value_start, length, header.tag)?;
            } else {
                skip_encapsulated(bytes, value_start, encoding)?;
            }
            return Ok(TopLevelScan { pixel_data_at: Some(pos), end: pos });
        }

        pos = skip_value(bytes, &header, value_start, encoding, 0)?;
    }

    Ok(TopLevelScan { pixel_data_at: None, end: pos })
}

/// Returns the offset just past an element's value. Sequences of either length form are walked
/// item by item, so that their nesting depth is checked before a parser recurses into them.
fn skip_value(bytes: &[u8], header: &Header, value_start: usize, encoding: Encoding, depth: usize) -> Result<usize, IdentifyError> {
    if let Some(length) = header.defined_length() {
        check_fits(bytes, value_start, length, header.tag)?;
        let end = value_start + length;
        if is_sequence(header) {
            skip_defined_sequence(&bytes[..end], value_start, encoding, depth + 1)?;
        }
        return Ok(end);
    }

    // An undefined-length UN element contains Implicit VR Little Endian items.
    let inner = if header.vr == Some(*b"UN") { LITTLE_IMPLICIT } else { encoding };
    skip_sequence(bytes, value_start, inner, depth + 1)
}

/// Returns whether an element with a defined length is a sequence: its VR is SQ, or, in Implicit
/// VR, the standard dictionary gives SQ for its tag (as dicom-object decides when it parses).
fn is_sequence(header: &Header) -> bool {
    match header.vr {
        Some(vr) => &vr == b"SQ",
        None => StandardDataDictionary
            .by_tag(header.tag)
            .is_some_and(|entry| entry.vr == VirtualVr::Exact(VR::SQ)),
    }
}

/// Walks the items of a defined-length sequence whose value is `bytes[pos..]`.
fn skip_defined_sequence(bytes: &[u8], mut pos: usize, encoding: Encoding, depth: usize) -> Result<(), IdentifyError> {
    if depth > MAX_SEQUENCE_DEPTH {
        return Err(malformed(pos, &format!("sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")));
    }

    while pos < bytes.len() {
        let header = read_header(bytes, pos, encoding).map_err(|_| truncated_sequence(bytes, pos))?;
        if header.tag != ITEM {
            return Err(malformed(pos, &format!("expected an item in a sequence, found {}", header.tag)));
        }
        let value_start = pos + 8;
        pos = match header.defined_length() {
            Some(length) => skip_defined_item(bytes, value_start, length, encoding, depth)?,
            None => skip_item(bytes, value_start, encoding, depth)?,
        };
    }
    Ok(())
}

/// Walks the elements of a defined-length item and returns the offset just past it.
fn skip_defined_item(bytes: &[u8], value_start: usize, length: usize, encoding: Encoding, depth: usize) -> Result<usize, IdentifyError> {
    check_fits(bytes, value_start, length, ITEM)?;
    let end = value_start + length;
    let content = &bytes[..end];

    let mut pos = value_start;
    while pos < end {
        let header = read_header(content, pos, encoding)?;
        pos = skip_value(content, &header, pos + header.header_len, encoding, depth)?;
    }
    Ok(end)
}

fn skip_sequence(bytes: &[u8], mut pos: usize, encoding: Encoding, depth: usize) -> Result<usize, IdentifyError> {
    if depth > MAX_SEQUENCE_DEPTH {
        return Err(malformed(pos, &format!("sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels")));
    }

    loop {
        let header = read_header(bytes, pos, encoding).map_err(|_| truncated_sequence(bytes, pos))?;
        let value_start = pos + 8;
        match header.tag {
            SEQUENCE_DELIMITATION => return Ok(value_start),
            ITEM => match header.defined_length() {
                Some(length) => pos = skip_defined_item(bytes, value_start, length, encoding, depth)?,
                None => pos = skip_item(bytes, value_start, encoding, depth)?,
            },
            other => return Err(malformed(pos, &format!("expected an item in a sequence, found {other}"))),
        }
    }
}

fn skip_item(bytes: &[u8], mut pos: usize, encoding: Encoding, depth: usize) -> Result<usize, IdentifyError> {
    loop {
        let header = read_header(bytes, pos, encoding).map_err(|_| truncated_sequence(bytes, pos))?;
        let value_start = pos + header.header_len;
        if header.tag == ITEM_DELIMITATION {
            return Ok(value_start);
        }
        pos = skip_value(bytes, &header, value_start, encoding, depth)?;
    }
}

/// Skips the fragments of encapsulated Pixel Data: items of defined length holding compressed
/// bytes, up to the sequence delimitation item. A cut fragment counts as truncated Pixel Data.
fn skip_encapsulated(bytes: &[u8], mut pos: usize, encoding: Encoding) -> Result<usize, IdentifyError> {
    let items = Encoding { explicit: false, ..encoding };
    loop {
        let header = read_header(bytes, pos, items).map_err(|_| truncated_sequence(bytes, pos))?;
        let value_start = pos + 8;
        match (header.tag, header.defined_length()) {
            (SEQUENCE_DELIMITATION, _) => return Ok(value_start),
            (ITEM, Some(length)) => {
                check_fits(bytes, value_start, length, tags::PIXEL_DATA)?;
                pos = value_start + length;
            }
            (other, _) => return Err(malformed(pos, &format!("expected a pixel data fragment, found {other}"))),
        }
    }
}

fn truncated_sequence(bytes: &[u8], pos: usize) -> IdentifyError {
    if bytes.len() < pos + 8 {
        IdentifyError::Truncated { declared: 8, remaining: bytes.len().saturating_sub(pos) as u64 }
    } else {
        malformed(pos, "invalid element inside a sequence")
    }
}

fn parse_data_set(bytes: &[u8], transfer_syntax: &str) -> Result<InMemDicomObject, IdentifyError> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or_else(|| IdentifyError::Unparseable(format!("unknown transfer syntax {transfer_syntax}")))?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|err| IdentifyError::Unparseable(err.to_string()))
}

fn uid_text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).trim().to_string()
}

fn string_attribute(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let element = object.get(tag)?;
    let text = element.to_str().ok()?;
    let text = text.trim_end_matches(['\0', ' ']).trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn required_uid(object: &InMemDicomObject, tag: Tag, name: &'static str, fallback: Option<&String>) -> Result<String, IdentifyError> {
    let uid = string_attribute(object, tag)
        .or_else(|| fallback.filter(|uid| !uid.is_empty()).cloned())
        .ok_or(IdentifyError::MissingUid { name })?;
    if is_valid_uid(&uid) {
        Ok(uid)
    } else {
        Err(IdentifyError::InvalidUid { name, value: uid })
    }
}

/// Reads Number of Temporal Positions (0020,0105), when positive, and Image Position (Patient)
/// (0020,0032), when it has three finite values: the frame layout the assembler sorts by.
pub fn frame_layout(object: &InMemDicomObject) -> (Option<u32>, Option<[f64; 3]>) {
    // `get` rather than `element_opt`, which captures a backtrace for each missing element.
    let temporal_positions = object
        .get(tags::NUMBER_OF_TEMPORAL_POSITIONS)
        .and_then(|e| e.to_int::<i64>().ok())
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0);
    let position = object
        .get(tags::IMAGE_POSITION_PATIENT)
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| v.len() == 3 && v.iter().all(|x| x.is_finite()))
        .map(|v| [v[0], v[1], v[2]]);
    (temporal_positions, position)
}

fn ids_from_object(object: &InMemDicomObject, layout: &Layout) -> Result<InstanceIds, IdentifyError> {
    let (temporal_positions, position) = frame_layout(object);

    Ok(InstanceIds {
        study_instance_uid: required_uid(object, tags::STUDY_INSTANCE_UID, "StudyInstanceUID", None)?,
        series_instance_uid: required_uid(object, tags::SERIES_INSTANCE_UID, "SeriesInstanceUID", None)?,
        sop_instance_uid: required_uid(object, tags::SOP_INSTANCE_UID, "SOPInstanceUID", layout.meta_sop_instance_uid.as_ref())?,
        sop_class_uid: required_uid(object, tags::SOP_CLASS_UID, "SOPClassUID", layout.meta_sop_class_uid.as_ref())?,
        number_of_temporal_positions: temporal_positions,
        image_position_patient: position,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const CASE_STUDY_UID_PREFIX: &str = "1.2.826.0.1.3680043.8.498.";

    /// Returns the shared DICOM cases folder: `shared/cases/dicom` in the nearest folder above this
    /// package that has one (the repository's sibling `shared/`).
    fn shared_cases() -> PathBuf {
        let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        loop {
            let candidate = dir.join("shared/cases/dicom");
            if candidate.is_dir() {
                return candidate;
            }
            assert!(dir.pop(), "no shared/cases/dicom beside the repository");
        }
    }

    fn case(name: &str) -> Vec<u8> {
        let path = shared_cases().join(name);
        std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    #[test]
    fn clean_cases_are_identified() {
        let names = [
            "g00_base_ct_explicit.dcm",
            "g04_no_preamble_no_meta_implicit.dcm",
            "g05_no_preamble_no_meta_explicit.dcm",
            "g06_dicm_but_no_meta.dcm",
            "g12_implicit_odd_total_length.dcm",
            "g17_empty_pixelspacing.dcm",
            "g26_garbage_after_dataset.dcm",
            "g27_pixeldata_short.dcm",
            "g37_big_endian.dcm",
            "g38_deflated.dcm",
            "g42_jpeg_lossless_sv1.dcm",
            "g44_rle.dcm",
        ];
        let reference = identify(&case("g00_base_ct_explicit.dcm")).unwrap();
        for name in names {
            let ids = identify(&case(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
            assert_eq!(ids.study_instance_uid, reference.study_instance_uid, "{name}");
            assert_eq!(ids.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2", "{name}");
        }
    }

    #[test]
    fn reference_case_ids_match_dcmdump() {
        let ids = identify(&case("g00_base_ct_explicit.dcm")).unwrap();
        assert!(ids.sop_instance_uid.starts_with(CASE_STUDY_UID_PREFIX), "{}", ids.sop_instance_uid);
        assert!(is_valid_uid(&ids.series_instance_uid));
        assert_ne!(ids.series_instance_uid, ids.study_instance_uid);
    }

    #[test]
    fn empty_file_is_rejected() {
        assert_eq!(identify(&case("g01_zero_length.dcm")).unwrap_err().kind(), "empty_file");
    }

    #[test]
    fn truncated_file_is_rejected() {
        let err = identify(&case("g02_truncated_half.dcm")).unwrap_err();
        assert_eq!(err.kind(), "truncated", "{err}");
    }

    #[test]
    fn huge_declared_length_is_rejected() {
        let err = identify(&case("g53_huge_declared_length.dcm")).unwrap_err();
        assert_eq!(
            err,
            IdentifyError::LengthExceedsFile { tag: "(0009,1001)".to_string(), declared: 4_294_967_280, remaining: 4 }
        );
    }

    #[test]
    fn text_file_is_not_dicom() {
        let err = identify(b"patient list\nnothing to see here\n").unwrap_err();
        assert_eq!(err.kind(), "not_dicom", "{err}");
    }

    #[test]
    fn every_truncation_is_handled() {
        let bytes = case("g00_base_ct_explicit.dcm");
        let layout = locate_data_set(&bytes).unwrap();
        let scan = scan_top_level(&bytes, layout.data_set_start, LITTLE_EXPLICIT).unwrap();
        let pixel_value_start = scan.pixel_data_at.unwrap() + 12;
        let pixel_value_end = pixel_value_start + 32_768;

        for cut in 0..bytes.len() - 1 {
            let result = identify(&bytes[..cut]);
            if cut > pixel_value_start && cut < pixel_value_end {
                assert_eq!(result.map_err(|e| e.kind()).err(), Some("truncated"), "cut at {cut}");
            }
        }
    }

    /// Builds an Explicit VR Little Endian data set: SOP Class UID, then `depth` Content Sequences
    /// of defined length, each the only element of the one item of its parent.
    fn nested_sequences(depth: usize) -> Vec<u8> {
        let mut inner: Vec<u8> = Vec::new();
        for _ in 0..depth {
            let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
            item.extend_from_slice(&(inner.len() as u32).to_le_bytes());
            item.extend_from_slice(&inner);
            let mut sequence = vec![0x40, 0x00, 0x30, 0xA7, b'S', b'Q', 0, 0];
            sequence.extend_from_slice(&(item.len() as u32).to_le_bytes());
            sequence.extend_from_slice(&item);
            inner = sequence;
        }
        let mut bytes = vec![0x08, 0x00, 0x16, 0x00, b'U', b'I', 26, 0];
        bytes.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.2\0");
        bytes.extend_from_slice(&inner);
        bytes
    }

    #[test]
    fn defined_length_nesting_within_limit_parses() {
        let object = parse_data_set_header(&nested_sequences(MAX_SEQUENCE_DEPTH), EXPLICIT_VR_LE).unwrap();
        assert!(object.element(tags::CONTENT_SEQUENCE).is_ok());
    }

    #[test]
    fn defined_length_nesting_past_limit_is_malformed() {
        let err = parse_data_set_header(&nested_sequences(MAX_SEQUENCE_DEPTH + 1), EXPLICIT_VR_LE).unwrap_err();
        assert_eq!(err.kind(), "malformed", "{err}");

        let err = parse_data_set_header(&nested_sequences(5_000), EXPLICIT_VR_LE).unwrap_err();
        assert_eq!(err.kind(), "malformed", "{err}");
    }

    #[test]
    fn data_set_header_stops_before_pixel_data() {
        let bytes = case("g00_base_ct_explicit.dcm");
        let layout = locate_data_set(&bytes).unwrap();

        let object = parse_data_set_header(&bytes[layout.data_set_start..], &layout.transfer_syntax).unwrap();

        assert!(object.element(tags::SOP_INSTANCE_UID).is_ok());
        assert!(object.element(tags::PIXEL_DATA).is_err());
    }

    #[test]
    fn data_set_header_rejects_truncated_pixel_data() {
        let bytes = case("g00_base_ct_explicit.dcm");
        let layout = locate_data_set(&bytes).unwrap();
        let scan = scan_top_level(&bytes, layout.data_set_start, LITTLE_EXPLICIT).unwrap();
        let pixel_value_start = scan.pixel_data_at.unwrap() + 12;
        let cut = &bytes[layout.data_set_start..pixel_value_start + 1_000];

        let err = parse_data_set_header(cut, &layout.transfer_syntax).unwrap_err();

        assert_eq!(err.kind(), "truncated", "{err}");
    }

    /// A fuzzer-found case: a deflated data set declaring a 3.6 GB element made dicom-object
    /// allocate that much before the inflated bytes were checked.
    #[test]
    fn deflated_huge_declared_length_is_rejected() {
        use std::io::Write;

        let mut data_set = vec![0x08, 0x00, 0x16, 0x00, b'U', b'I', 26, 0];
        data_set.extend_from_slice(b"1.2.840.10008.5.1.4.1.1.2\0");
        data_set.extend_from_slice(&[0x09, 0x00, 0x01, 0x10, b'O', b'B', 0, 0]);
        data_set.extend_from_slice(&3_600_000_000u32.to_le_bytes());
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&data_set).unwrap();
        let deflated = encoder.finish().unwrap();

        let err = parse_data_set_header(&deflated, DEFLATED_EXPLICIT_VR_LE).unwrap_err();

        assert_eq!(err.kind(), "length_exceeds_file", "{err}");
    }

    #[test]
    fn deflated_case_is_identified_from_inflated_bytes() {
        let ids = identify(&case("g38_deflated.dcm")).unwrap();
        assert_eq!(ids.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        assert!(is_valid_uid(&ids.series_instance_uid));
    }

    #[test]
    fn invalid_deflate_stream_is_unparseable() {
        let err = parse_data_set_header(b"\xff\xff\xff\xff not deflate", DEFLATED_EXPLICIT_VR_LE).unwrap_err();
        assert_eq!(err.kind(), "unparseable", "{err}");
    }

    #[test]
    fn uid_validation_rejects_path_components() {
        for bad in ["", "..", ".", "1.2/3", "../1.2", "1.2.", "a.1", &"1".repeat(65)] {
            assert!(!is_valid_uid(bad), "{bad:?}");
        }
        assert!(is_valid_uid("1.2.840.10008.5.1.4.1.1.2"));
    }
}
