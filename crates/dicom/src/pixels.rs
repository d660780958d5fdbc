//! Pixel data to physical values.
//!
//! Native pixel data is read directly. Encapsulated pixel data (JPEG Lossless, RLE, JPEG 2000,
//! ...) is decoded one frame at a time by the dicom-rs transfer syntax adapters. Stored values are
//! masked to BitsStored, sign-extended when PixelRepresentation is 1, and rescaled in f64 before
//! narrowing to f32.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dicom_core::value::C;
use dicom_core::VR;
use dicom_encoding::adapters::{PixelDataObject, RawPixelData};
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use ndarray::Array3;

use crate::dataset::{DataSet, Value, PIXEL_DATA};
use crate::read::{pixel_value, Instance, ReadError, MAX_VALUE_LEN};
use crate::tags;

/// The layout of an instance's pixel data.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelFormat {
    pub rows: usize,
    pub columns: usize,
    pub frames: usize,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub high_bit: u16,
    /// PixelRepresentation 1: stored values are two's complement.
    pub signed: bool,
    pub photometric: String,
}

impl PixelFormat {
    /// Reads the Image Pixel module of `set`.
    pub fn from_data_set(set: &DataSet, warnings: &mut Vec<String>) -> Result<PixelFormat, ReadError> {
        let rows = set.u16(tags::ROWS).filter(|&v| v > 0).ok_or(ReadError::MissingAttribute { name: "Rows" })?;
        let columns = set.u16(tags::COLUMNS).filter(|&v| v > 0).ok_or(ReadError::MissingAttribute { name: "Columns" })?;
        let bits_allocated = set.u16(tags::BITS_ALLOCATED).ok_or(ReadError::MissingAttribute { name: "BitsAllocated" })?;
        if !matches!(bits_allocated, 8 | 16 | 32) {
            return Err(ReadError::UnsupportedPixels { reason: format!("BitsAllocated {bits_allocated}; only 8, 16 or 32 are read") });
        }
        let samples = set.u16(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
        if samples != 1 {
            return Err(ReadError::UnsupportedPixels { reason: format!("SamplesPerPixel {samples}; only grayscale (1) images are read") });
        }
        let bits_stored = set.u16(tags::BITS_STORED).filter(|&b| b > 0 && b <= bits_allocated).unwrap_or_else(|| {
            warnings.push(format!("BitsStored missing or invalid; assumed {bits_allocated} (BitsAllocated)"));
            bits_allocated
        });
        let high_bit = set
            .u16(tags::HIGH_BIT)
            .filter(|&h| h + 1 >= bits_stored && h < bits_allocated)
            .unwrap_or(bits_stored - 1);
        let frames = match set.get(tags::NUMBER_OF_FRAMES) {
            Some(_) => set.integer(tags::NUMBER_OF_FRAMES, "NumberOfFrames", warnings).filter(|&n| n > 0).unwrap_or(1),
            None => 1,
        } as usize;
        let photometric = set.string(tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| "MONOCHROME2".to_string());
        Ok(PixelFormat {
            rows: usize::from(rows),
            columns: usize::from(columns),
            frames,
            bits_allocated,
            bits_stored,
            high_bit,
            signed: set.u16(tags::PIXEL_REPRESENTATION) == Some(1),
            photometric,
        })
    }

    /// Bytes of one native frame.
    pub fn frame_bytes(&self) -> usize {
        self.rows * self.columns * usize::from(self.bits_allocated / 8)
    }

    /// Bytes of all native frames.
    pub fn total_bytes(&self) -> u64 {
        self.frame_bytes() as u64 * self.frames as u64
    }
}

/// A linear map from stored values to physical values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rescale {
    pub slope: f64,
    pub intercept: f64,
}

impl Rescale {
    pub const IDENTITY: Rescale = Rescale { slope: 1.0, intercept: 0.0 };
}

/// Checks that native pixel data contains every declared frame; other instances pass unchecked.
pub(crate) fn check_native_length(instance: &Instance) -> Result<(), ReadError> {
    let Some(Value::Bytes(bytes)) = pixel_value(instance) else {
        return Ok(());
    };
    let Ok(format) = PixelFormat::from_data_set(&instance.data_set, &mut Vec::new()) else {
        return Ok(());
    };
    let expected = format.total_bytes();
    if (bytes.len() as u64) < expected {
        return Err(ReadError::PixelDataShort { expected: expected as usize, got: bytes.len() });
    }
    Ok(())
}

/// Returns the rescale of each frame: per-frame functional groups, then shared ones, then the
/// top-level RescaleSlope/RescaleIntercept. A CT image without any gets the identity, with a
/// warning.
pub fn frame_rescales(instance: &Instance, frames: usize, warnings: &mut Vec<String>) -> Vec<Rescale> {
    let set = &instance.data_set;
    let shared = set.items(tags::SHARED_FUNCTIONAL_GROUPS).first();
    let per_frame = set.items(tags::PER_FRAME_FUNCTIONAL_GROUPS);
    let mut missing = false;
    let rescales = (0..frames)
        .map(|i| {
            let from_groups = [per_frame.get(i), shared]
                .into_iter()
                .flatten()
                .find_map(|group| group.items(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE).first())
                .and_then(|item| rescale_in(item, warnings));
            from_groups.or_else(|| rescale_in(set, warnings)).unwrap_or_else(|| {
                missing = true;
                Rescale::IDENTITY
            })
        })
        .collect();
    let is_ct = set.string(tags::MODALITY).as_deref() == Some("CT");
    if missing && is_ct {
        warnings.push("RescaleSlope/RescaleIntercept missing on a CT image; assumed slope 1, intercept 0".to_string());
    }
    rescales
}

/// Reads a rescale from `set`; both values must be present and the slope non-zero.
fn rescale_in(set: &DataSet, warnings: &mut Vec<String>) -> Option<Rescale> {
    if set.get(tags::RESCALE_SLOPE).is_none() && set.get(tags::RESCALE_INTERCEPT).is_none() {
        return None;
    }
    let slope = set.decimal(tags::RESCALE_SLOPE, "RescaleSlope", warnings);
    let intercept = set.decimal(tags::RESCALE_INTERCEPT, "RescaleIntercept", warnings);
    match (slope, intercept) {
        (Some(slope), Some(intercept)) if slope != 0.0 => Some(Rescale { slope, intercept }),
        (Some(0.0), _) => {
            warnings.push("RescaleSlope is 0; ignored".to_string());
            None
        }
        _ => None,
    }
}

/// Decodes every frame of `instance` into physical values, shape `(frames, rows, columns)`.
pub fn decode_pixels(instance: &Instance, warnings: &mut Vec<String>) -> Result<Array3<f32>, ReadError> {
    let format = PixelFormat::from_data_set(&instance.data_set, warnings)?;
    if format.total_bytes() > MAX_VALUE_LEN {
        return Err(ReadError::UnsupportedPixels { reason: format!("{} bytes of pixels exceed the {MAX_VALUE_LEN}-byte limit", format.total_bytes()) });
    }
    let rescales = frame_rescales(instance, format.frames, warnings);
    let (raw, big_endian) = native_bytes(instance, &format)?;
    let per_frame = format.rows * format.columns;
    let samples = stored_values(&raw, &format, big_endian);
    let physical: Vec<f32> = samples
        .take(per_frame * format.frames)
        .enumerate()
        .map(|(i, value)| {
            let rescale = rescales[i / per_frame];
            (value as f64 * rescale.slope + rescale.intercept) as f32
        })
        .collect();

    let shape = (format.frames, format.rows, format.columns);
    Array3::from_shape_vec(shape, physical).map_err(|e| ReadError::UnsupportedPixels { reason: format!("pixel array shape {shape:?}: {e}") })
}

/// Returns native pixel bytes of all frames and whether 16/32-bit samples are big endian.
fn native_bytes<'a>(instance: &'a Instance, format: &PixelFormat) -> Result<(Cow<'a, [u8]>, bool), ReadError> {
    let element = instance.data_set.get(PIXEL_DATA).ok_or(ReadError::NoPixelData)?;
    let expected = format.total_bytes() as usize;
    match &element.value {
        Value::Bytes(bytes) => {
            if bytes.len() < expected {
                return Err(ReadError::PixelDataShort { expected, got: bytes.len() });
            }
            let big = instance.data_set.is_big_endian() && element.vr != VR::OB;
            Ok((Cow::Borrowed(&bytes[..expected]), big))
        }
        Value::Fragments { offset_table, fragments } => {
            let decoded = decode_encapsulated(instance, format, offset_table, fragments)?;
            if decoded.len() < expected {
                return Err(ReadError::PixelDataShort { expected, got: decoded.len() });
            }
            Ok((Cow::Owned(decoded), false))
        }
        Value::Items(_) => Err(ReadError::Malformed { offset: 0, reason: "pixel data is a sequence".to_string() }),
    }
}

/// Yields stored values masked to BitsStored and sign-extended.
fn stored_values<'a>(raw: &'a [u8], format: &PixelFormat, big_endian: bool) -> impl Iterator<Item = i64> + 'a {
    let width = usize::from(format.bits_allocated / 8);
    let bits = u32::from(format.bits_stored);
    let shift = u32::from(format.high_bit) + 1 - bits;
    let mask: u64 = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let signed = format.signed;
    raw.chunks_exact(width).map(move |c| {
        let word: u64 = match (width, big_endian) {
            (1, _) => u64::from(c[0]),
            (2, false) => u64::from(u16::from_le_bytes([c[0], c[1]])),
            (2, true) => u64::from(u16::from_be_bytes([c[0], c[1]])),
            (_, false) => u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            (_, true) => u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
        };
        let value = (word >> shift) & mask;
        if signed && bits > 0 && value & (1 << (bits - 1)) != 0 {
            value as i64 - (1i64 << bits)
        } else {
            value as i64
        }
    })
}

/// Decodes encapsulated pixel data frame by frame with the registry's adapter.
fn decode_encapsulated(instance: &Instance, format: &PixelFormat, offset_table: &[u32], fragments: &[Vec<u8>]) -> Result<Vec<u8>, ReadError> {
    let ts = instance.transfer_syntax_uid.as_str();
    let error = |reason: String| ReadError::PixelDecode { transfer_syntax: ts.to_string(), reason };
    let reader = TransferSyntaxRegistry
        .get(ts)
        .and_then(|syntax| syntax.pixel_data_reader())
        .ok_or_else(|| error("no decoder for this transfer syntax".to_string()))?;
    let per_frame = split_frames(format.frames, offset_table, fragments).ok_or_else(|| {
        error(format!("cannot map {} fragments onto {} frames (offset table has {} entries)", fragments.len(), format.frames, offset_table.len()))
    })?;
    // No reservation up front: the declared size is not trusted until frames decode.
    let mut out = Vec::new();
    for (i, frame) in per_frame.into_iter().enumerate() {
        if ts == RLE_LOSSLESS {
            let first = frame.first().map_or(&[][..], Vec::as_slice);
            check_rle_header(first).map_err(|reason| error(format!("frame {}: {reason}", i + 1)))?;
        }
        let view = FrameView { ts, format, fragments: frame };
        let before = out.len();
        let decoded = catch_unwind(AssertUnwindSafe(|| reader.decode_frame(&view, 0, &mut out)));
        match decoded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(error(format!("frame {}: {e}", i + 1))),
            Err(_) => return Err(error(format!("frame {}: the decoder failed on corrupt data", i + 1))),
        }
        // Keep frames aligned even when a decoder writes more than one frame's worth.
        out.resize(before + format.frame_bytes().min(out.len() - before), 0);
    }
    Ok(out)
}

/// Transfer syntax UID of RLE Lossless.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Size of the RLE header: the segment count and 15 segment offsets, each a 32-bit integer.
const RLE_HEADER_BYTES: usize = 64;

/// Checks the RLE header of a frame's first fragment (DICOM PS3.5 annex G): 1 to 15 segments,
/// each starting after the header, inside the fragment and not before the previous one. The
/// codec trusts the segment count and sizes a buffer by it, so a corrupt count must stop here.
fn check_rle_header(fragment: &[u8]) -> Result<(), String> {
    if fragment.len() < RLE_HEADER_BYTES {
        return Err(format!("RLE fragment of {} bytes is shorter than its 64-byte header", fragment.len()));
    }
    let word = |i: usize| u32::from_le_bytes([fragment[4 * i], fragment[4 * i + 1], fragment[4 * i + 2], fragment[4 * i + 3]]);

    let segments = word(0) as usize;
    if !(1..=15).contains(&segments) {
        return Err(format!("RLE header declares {segments} segments, not 1 to 15"));
    }
    let mut previous = RLE_HEADER_BYTES;
    for segment in 1..=segments {
        let offset = word(segment) as usize;
        if offset < previous || offset > fragment.len() {
            return Err(format!(
                "RLE segment {segment} starts at byte {offset}, outside {previous}..={} of its fragment",
                fragment.len()
            ));
        }
        previous = offset;
    }
    Ok(())
}

/// Groups fragments by frame: one fragment per frame, one frame in all fragments, or by the
/// basic offset table (byte offsets of each frame's first fragment item).
fn split_frames(frames: usize, offset_table: &[u32], fragments: &[Vec<u8>]) -> Option<Vec<Vec<Vec<u8>>>> {
    if fragments.is_empty() {
        return None;
    }
    if frames == fragments.len() {
        return Some(fragments.iter().map(|f| vec![f.clone()]).collect());
    }
    if frames == 1 {
        return Some(vec![fragments.to_vec()]);
    }
    if offset_table.len() != frames {
        return None;
    }
    let mut groups: Vec<Vec<Vec<u8>>> = vec![Vec::new(); frames];
    let mut offset = 0u64;
    for fragment in fragments {
        let frame = offset_table.iter().rposition(|&o| u64::from(o) <= offset)?;
        groups[frame].push(fragment.clone());
        offset += fragment.len() as u64 + 8;
    }
    groups.iter().all(|g| !g.is_empty()).then_some(groups)
}

/// One frame's fragments presented to a dicom-rs pixel data adapter as a single-frame object.
struct FrameView<'a> {
    ts: &'a str,
    format: &'a PixelFormat,
    fragments: Vec<Vec<u8>>,
}

impl PixelDataObject for FrameView<'_> {
    fn transfer_syntax_uid(&self) -> &str {
        self.ts
    }

    fn rows(&self) -> Option<u16> {
        u16::try_from(self.format.rows).ok()
    }

    fn cols(&self) -> Option<u16> {
        u16::try_from(self.format.columns).ok()
    }

    fn samples_per_pixel(&self) -> Option<u16> {
        Some(1)
    }

    fn bits_allocated(&self) -> Option<u16> {
        Some(self.format.bits_allocated)
    }

    fn bits_stored(&self) -> Option<u16> {
        Some(self.format.bits_stored)
    }

    fn photometric_interpretation(&self) -> Option<&str> {
        Some(&self.format.photometric)
    }

    fn number_of_frames(&self) -> Option<u32> {
        Some(1)
    }

    fn number_of_fragments(&self) -> Option<u32> {
        u32::try_from(self.fragments.len()).ok()
    }

    fn fragment(&self, fragment: usize) -> Option<Cow<'_, [u8]>> {
        self.fragments.get(fragment).map(|f| Cow::Borrowed(f.as_slice()))
    }

    fn offset_table(&self) -> Option<Cow<'_, [u32]>> {
        Some(Cow::Owned(vec![0]))
    }

    fn raw_pixel_data(&self) -> Option<RawPixelData> {
        // A single frame split over several fragments is joined so adapters that expect one
        // fragment per frame see the whole codestream.
        let joined: Vec<u8> = self.fragments.concat();
        Some(RawPixelData { fragments: C::from_vec(vec![joined]), offset_table: C::from_vec(vec![0]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rle_header(words: &[u32], fragment_len: usize) -> Vec<u8> {
        let mut fragment = vec![0u8; fragment_len];
        for (i, word) in words.iter().enumerate() {
            fragment[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
        }
        fragment
    }

    #[test]
    fn rle_header_accepts_ordered_segments() {
        assert_eq!(check_rle_header(&rle_header(&[2, 64, 100], 200)), Ok(()));
    }

    #[test]
    fn rle_header_rejects_bad_counts_and_offsets() {
        let huge_count = check_rle_header(&rle_header(&[16_777_216], 200)).unwrap_err();
        assert!(huge_count.contains("16777216 segments"), "{huge_count}");

        let no_segments = check_rle_header(&rle_header(&[0], 200));
        assert!(no_segments.is_err());

        let inside_header = check_rle_header(&rle_header(&[1, 8], 200));
        assert!(inside_header.is_err());

        let past_end = check_rle_header(&rle_header(&[1, 300], 200));
        assert!(past_end.is_err());

        let backwards = check_rle_header(&rle_header(&[2, 120, 100], 200));
        assert!(backwards.is_err());

        let short = check_rle_header(&[1, 0, 0, 0]);
        assert!(short.is_err());
    }
}
