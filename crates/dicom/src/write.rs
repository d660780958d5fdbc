//! Writing Part 10 files atomically, shared by the phantom and export crates.
//!
//! The file is written to a temporary name in the destination folder, flushed to disk, then
//! renamed over the destination, so no reader finds a half-written file at the destination, even after a crash.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dicom_core::{DataElement, VR};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;

use crate::read::EXPLICIT_VR_LE;
use crate::tags;

/// Identifies Penumbra as the implementation that wrote a file (a fixed UUID-derived UID).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.89622637555858784751673756562483554469";

/// Names the writing implementation in File Meta (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "PENUMBRA_0_1";

/// Failure to write a file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{name} {value:?} is not a valid UID (digits and dots, at most 64 characters); pass a UID such as uid::new_uid()")]
    InvalidUid { name: &'static str, value: String },
    #[error("destination {path} has no parent folder or file name; pass a file path")]
    BadPath { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot encode the data set for {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
}

/// Writes `obj` as a Part 10 file (Explicit VR Little Endian) at `path`, atomically.
///
/// SOPClassUID and SOPInstanceUID in `obj` are set to `sop_class` and `sop_instance`, and File
/// Meta repeats them. An existing file at `path` is replaced.
pub fn write_part10(mut obj: InMemDicomObject, sop_class: &str, sop_instance: &str, path: &Path) -> Result<(), WriteError> {
    check_uid("SOP Class UID", sop_class)?;
    check_uid("SOP Instance UID", sop_instance)?;
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (if dir.as_os_str().is_empty() { Path::new(".") } else { dir }, name),
        _ => return Err(WriteError::BadPath { path: path.to_path_buf() }),
    };
    obj.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, sop_class));
    obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop_instance));
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(EXPLICIT_VR_LE)
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| WriteError::Encode { path: path.to_path_buf(), reason: e.to_string() })?;
    let file_obj = obj.with_exact_meta(meta);

    let temp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), uuid::Uuid::new_v4().simple()));
    let result = write_and_sync(&temp, |w| file_obj.write_all(w).map_err(|e| e.to_string()));
    if let Err(err) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(match err {
            Failure::Io(source) => WriteError::Io { path: temp, source },
            Failure::Encode(reason) => WriteError::Encode { path: path.to_path_buf(), reason },
        });
    }
    if let Err(source) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(WriteError::Io { path: path.to_path_buf(), source });
    }
    // Persist the rename itself; a folder that cannot be opened for syncing is not an error.
    if let Ok(folder) = File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

enum Failure {
    Io(std::io::Error),
    Encode(String),
}

fn write_and_sync(path: &Path, write: impl FnOnce(&mut BufWriter<&File>) -> Result<(), String>) -> Result<(), Failure> {
    let file = File::create(path).map_err(Failure::Io)?;
    let mut writer = BufWriter::new(&file);
    write(&mut writer).map_err(Failure::Encode)?;
    writer.flush().map_err(Failure::Io)?;
    drop(writer);
    file.sync_all().map_err(Failure::Io)
}

/// Checks a UID's syntax (PS3.5 section 9.1): digits and dots, components without leading
/// zeros, at most 64 characters.
fn check_uid(name: &'static str, value: &str) -> Result<(), WriteError> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')));
    if valid {
        Ok(())
    } else {
        Err(WriteError::InvalidUid { name, value: value.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::read_file;

    #[test]
    fn written_file_reads_back_with_meta() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.dcm");
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(tags::MODALITY, VR::CS, "CT"));
        obj.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"));
        write_part10(obj, "1.2.840.10008.5.1.4.1.1.66.4", "1.2.3.4.5", &path).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[128..132], b"DICM");
        let instance = read_file(&path).unwrap();
        assert_eq!(instance.transfer_syntax_uid, EXPLICIT_VR_LE);
        assert_eq!(instance.sop_class_uid().as_deref(), Some("1.2.840.10008.5.1.4.1.1.66.4"));
        assert_eq!(instance.sop_instance_uid().as_deref(), Some("1.2.3.4.5"));
        assert_eq!(instance.data_set.string(tags::MODALITY).as_deref(), Some("CT"));
        assert!(instance.warnings.is_empty(), "{:?}", instance.warnings);
        // Only the destination is left: no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn invalid_uid_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.dcm");
        let err = write_part10(InMemDicomObject::new_empty(), "1.2.840.10008.5.1.4.1.1.2", "1.02.x", &path).unwrap_err();
        assert!(matches!(err, WriteError::InvalidUid { .. }), "{err}");
        assert!(!path.exists());
    }
}
