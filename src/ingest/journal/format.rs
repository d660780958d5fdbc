//! On-disk format of journal segments: segment header, record header, and the scan that finds
//! the valid records of a segment.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Records and segment headers start on multiples of this many bytes.
pub(super) const BLOCK: u64 = 4096;
pub(super) const RECORD_HEADER_LEN: usize = 48;
/// Maximum length in bytes of the spool-relative path a record may carry. Three UIDs of 64
/// characters, separators and a conflict suffix take under 250.
pub(super) const MAX_PATH_LEN: usize = 1024;
const SEGMENT_MAGIC: &[u8; 4] = b"PNJS";
const RECORD_MAGIC: &[u8; 4] = b"PNJR";
const SEGMENT_VERSION: u32 = 1;
/// Version of the records written now: the instance bytes start one block after the header.
const RECORD_VERSION: u32 = 2;
/// Records of version 1 put the instance bytes right after the path. A journal written before
/// the upgrade still replays them.
const LEGACY_RECORD_VERSION: u32 = 1;
const SEGMENT_HEADER_LEN: usize = 20;

/// A valid record found by a scan.
#[derive(Debug)]
pub(super) struct Found {
    pub sequence: u64,
    pub segment: PathBuf,
    /// Offset of the instance bytes in the segment.
    pub data_offset: u64,
    pub data_len: u64,
    pub relative_path: String,
}

/// Length of a record on disk: the head block (header and path), then the instance bytes
/// rounded up to a whole block.
pub(super) fn record_len(path_len: usize, data_len: usize) -> u64 {
    head_len(path_len) + (data_len as u64).div_ceil(BLOCK) * BLOCK
}

/// Length of a record's head (header and path) rounded up to a whole block: where the instance
/// bytes start.
pub(super) fn head_len(path_len: usize) -> u64 {
    ((RECORD_HEADER_LEN + path_len) as u64).div_ceil(BLOCK) * BLOCK
}

/// Length of a version 1 record: header, path and instance bytes back to back, rounded up.
fn legacy_record_len(path_len: usize, data_len: usize) -> u64 {
    let raw = (RECORD_HEADER_LEN + path_len) as u64 + data_len as u64;
    raw.div_ceil(BLOCK) * BLOCK
}

/// Builds the record's head block: the header, the path and zeros up to [`head_len`].
/// `data` is the CRC-32 state of the instance bytes alone, computed before the journal is locked.
pub(super) fn record_head(generation: u64, sequence: u64, path: &str, data: &crc32fast::Hasher, data_len: usize) -> Vec<u8> {
    record_head_of_version(RECORD_VERSION, generation, sequence, path, data, data_len)
}

fn record_head_of_version(version: u32, generation: u64, sequence: u64, path: &str, data: &crc32fast::Hasher, data_len: usize) -> Vec<u8> {
    let mut head = vec![0u8; RECORD_HEADER_LEN];
    head[0..4].copy_from_slice(RECORD_MAGIC);
    head[4..8].copy_from_slice(&version.to_le_bytes());
    head[8..16].copy_from_slice(&generation.to_le_bytes());
    head[16..24].copy_from_slice(&sequence.to_le_bytes());
    head[24..28].copy_from_slice(&(path.len() as u32).to_le_bytes());
    head[32..40].copy_from_slice(&(data_len as u64).to_le_bytes());

    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[0..40]);
    crc.update(path.as_bytes());
    crc.combine(data);
    head[40..44].copy_from_slice(&crc.finalize().to_le_bytes());
    head.extend_from_slice(path.as_bytes());
    if version == RECORD_VERSION {
        head.resize(head_len(path.len()) as usize, 0);
    }
    head
}

/// Builds a whole version 1 record, padded to its length, as an older build wrote it.
#[cfg(test)]
pub(super) fn legacy_record(generation: u64, sequence: u64, path: &str, data: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    let mut record = record_head_of_version(LEGACY_RECORD_VERSION, generation, sequence, path, &crc, data.len());
    record.extend_from_slice(data);
    record.resize(legacy_record_len(path.len(), data.len()) as usize, 0);
    record
}

pub(super) fn write_segment_header(file: &File, generation: u64) -> io::Result<()> {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..4].copy_from_slice(SEGMENT_MAGIC);
    header[4..8].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&header[0..16]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 0)
}

/// Reads a segment's generation; `None` for a header that is not valid (a segment never used).
pub(super) fn read_segment_header(file: &File) -> io::Result<Option<u64>> {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    if let Err(err) = file.read_exact_at(&mut header, 0) {
        return if err.kind() == io::ErrorKind::UnexpectedEof { Ok(None) } else { Err(err) };
    }
    let valid = &header[0..4] == SEGMENT_MAGIC && le_u32(&header[16..20]) == crc32fast::hash(&header[0..16]);
    Ok(valid.then(|| le_u64(&header[8..16])))
}

/// Adds the valid records of one segment, stopping at the first one that is torn, fails its
/// CRC or belongs to an older generation.
pub(super) fn scan_segment(file: &File, path: &Path, generation: u64, found: &mut Vec<Found>) -> io::Result<()> {
    let file_len = file.metadata()?.len();
    let mut offset = BLOCK;
    while offset + RECORD_HEADER_LEN as u64 <= file_len {
        let Some((record, len)) = read_record(file, path, offset, generation, file_len)? else { break };
        offset += len;
        found.push(record);
    }
    Ok(())
}

/// Returns the valid record at `offset` and its length on disk, or `None`.
fn read_record(file: &File, path: &Path, offset: u64, generation: u64, file_len: u64) -> io::Result<Option<(Found, u64)>> {
    let mut header = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut header, offset)?;
    let path_len = le_u32(&header[24..28]) as usize;
    let data_len = le_u64(&header[32..40]);
    let version = le_u32(&header[4..8]);
    let data_offset = match version {
        RECORD_VERSION => offset + head_len(path_len),
        LEGACY_RECORD_VERSION => offset + (RECORD_HEADER_LEN + path_len) as u64,
        _ => return Ok(None),
    };
    let plausible = &header[0..4] == RECORD_MAGIC
        && le_u64(&header[8..16]) == generation
        && path_len <= MAX_PATH_LEN
        && data_len <= file_len
        && data_offset + data_len <= file_len;
    if !plausible {
        return Ok(None);
    }

    let mut path_bytes = vec![0u8; path_len];
    file.read_exact_at(&mut path_bytes, offset + RECORD_HEADER_LEN as u64)?;
    let data = read_data(file, data_offset, data_len)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[0..40]);
    crc.update(&path_bytes);
    crc.update(&data);
    if crc.finalize() != le_u32(&header[40..44]) {
        return Ok(None);
    }
    let Ok(relative_path) = String::from_utf8(path_bytes) else { return Ok(None) };
    let len = match version {
        RECORD_VERSION => record_len(path_len, data_len as usize),
        _ => legacy_record_len(path_len, data_len as usize),
    };
    let found = Found { sequence: le_u64(&header[16..24]), segment: path.to_path_buf(), data_offset, data_len, relative_path };
    Ok(Some((found, len)))
}

pub(super) fn read_data(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, offset)?;
    Ok(data)
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut array = [0u8; 4];
    array.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(array)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(array)
}
