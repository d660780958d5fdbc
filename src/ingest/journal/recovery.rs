//! Start-up work of the journal: find the valid records, restore their spool files, and
//! (re)create the segments for the configured size and count.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{read_data, read_segment_header, scan_segment, write_segment_header, Found};
use super::{JournalError, JournalSettings};
use crate::ingest::identify::is_valid_uid;
use crate::ingest::spool::{sync_dir, write_atomically};

/// The valid records of every segment, by sequence number, and the highest generation seen.
pub(super) struct Scan {
    pub records: Vec<Found>,
    pub max_generation: u64,
}

/// Lists the existing segment files by index.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u32, PathBuf)>, JournalError> {
    let entries = fs::read_dir(dir).map_err(|source| JournalError::Read { path: dir.to_path_buf(), source })?;
    let mut segments: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let index = name.strip_prefix("segment-")?.strip_suffix(".wal")?.parse().ok()?;
            Some((index, entry.path()))
        })
        .collect();
    segments.sort();
    Ok(segments)
}

pub(super) fn scan(segments: &[(u32, PathBuf)]) -> Result<Scan, JournalError> {
    let mut records = Vec::new();
    let mut max_generation = 0;
    for (_, path) in segments {
        let read_error = |source| JournalError::Read { path: path.clone(), source };
        let file = File::open(path).map_err(read_error)?;
        let Some(generation) = read_segment_header(&file).map_err(read_error)? else { continue };
        max_generation = max_generation.max(generation);
        scan_segment(&file, path, generation, &mut records).map_err(read_error)?;
    }
    records.sort_by_key(|record| record.sequence);
    Ok(Scan { records, max_generation })
}

/// Rewrites the spool file of each record whose file is missing or differs. Returns how many
/// were rewritten.
pub(super) fn restore(spool_root: &Path, records: &[Found]) -> Result<usize, JournalError> {
    let mut restored = 0;
    for record in records {
        let Some(target) = spool_path(spool_root, &record.relative_path) else {
            tracing::warn!(path = %record.relative_path, "Journal record names no valid spool file; skipped");
            continue;
        };
        let read_error = |source| JournalError::Read { path: record.segment.clone(), source };
        let file = File::open(&record.segment).map_err(read_error)?;
        let data = read_data(&file, record.data_offset, record.data_len).map_err(read_error)?;
        if fs::read(&target).is_ok_and(|existing| existing == data) {
            continue;
        }

        write_atomically(&target, &data, false).map_err(|source| JournalError::Restore { path: target.clone(), source })?;
        tracing::warn!(path = %record.relative_path, bytes = data.len(), "Spool file restored from the journal");
        restored += 1;
    }
    Ok(restored)
}

/// Resolves `<study uid>/<series uid>/<file>` under the spool, where the file is `<sop uid>.dcm`
/// or `<sop uid>.conflict-<n>.dcm`. Anything else gives `None`, so a damaged record cannot name
/// a path outside the spool.
fn spool_path(spool_root: &Path, relative_path: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = relative_path.split('/').collect();
    let [study, series, file] = parts.as_slice() else { return None };
    let stem = file.strip_suffix(".dcm")?;
    let sop = match stem.split_once(".conflict-") {
        Some((sop, n)) if n.parse::<u32>().is_ok() => sop,
        Some(_) => return None,
        None => stem,
    };
    [study, series, &sop].iter().all(|uid| is_valid_uid(uid)).then(|| spool_root.join(study).join(series).join(file))
}

/// Creates (or recreates with the configured length) every segment and gives each a new
/// generation, starting after `max_generation`, so the journal starts empty. Segments beyond
/// the configured count are deleted. Returns the open files with their generations.
pub(super) fn prepare_segments(
    dir: &Path,
    existing: &[(u32, PathBuf)],
    settings: JournalSettings,
    max_generation: u64,
) -> Result<Vec<(PathBuf, File, u64)>, JournalError> {
    for (index, path) in existing {
        if *index >= settings.segments {
            fs::remove_file(path).map_err(|source| JournalError::Create { path: path.clone(), source })?;
        }
    }

    let mut segments = Vec::new();
    for (generation, index) in (max_generation + 1..).zip(0..settings.segments) {
        let path = dir.join(format!("segment-{index:03}.wal"));
        let create_error = |source| JournalError::Create { path: path.clone(), source };
        let file = open_segment(&path, settings.segment_bytes).map_err(create_error)?;
        write_segment_header(&file, generation).and_then(|()| file.sync_data()).map_err(create_error)?;
        segments.push((path, file, generation));
    }
    sync_dir(dir).map_err(|source| JournalError::Create { path: dir.to_path_buf(), source })?;
    Ok(segments)
}

/// Opens a segment, filling it with zeros first when it is new or has another length. Written
/// zeros (not `fallocate`, which leaves unwritten extents) let later writes overwrite allocated
/// blocks, so fdatasync needs no file system journal commit.
fn open_segment(path: &Path, len: u64) -> io::Result<File> {
    let file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    if file.metadata()?.len() == len {
        return Ok(file);
    }

    file.set_len(0)?;
    let zeros = vec![0u8; 1024 * 1024];
    let mut offset = 0;
    while offset < len {
        let chunk = zeros.len().min((len - offset) as usize);
        file.write_all_at(&zeros[..chunk], offset)?;
        offset += chunk as u64;
    }
    file.sync_all()?;
    Ok(file)
}
