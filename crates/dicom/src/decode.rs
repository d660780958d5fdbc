//! A study's files to decoded series.
//!
//! Files are read twice: once for headers (pixel data dropped at once, so memory keeps one file
//! at a time), then per series to fill the volume. A series with any rejected instance is
//! rejected whole with the reason, so it is never half-used. An instance that repeats an earlier
//! SOP Instance UID with different content is set aside and reported. An identical copy is
//! dropped with a warning.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::classify::{classify, ClassifyInput};
use crate::dataset::PIXEL_DATA;
use crate::read::{identify, read_bytes, Instance, ReadError};
use crate::series::{DecodedSeries, SeriesInfo, StudyContext};
use crate::tags;
use crate::volume::{self, SeriesError, SeriesHeaders};

/// A file that could not be used, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedFile {
    pub path: PathBuf,
    /// The series the file claims to belong to, when its header could be read.
    pub series_instance_uid: Option<String>,
    pub error: ReadError,
}

/// A series that could not be decoded into a volume, with the reason and its files.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedSeries {
    pub series_instance_uid: String,
    pub series_description: Option<String>,
    pub modality: Option<String>,
    pub files: Vec<PathBuf>,
    #[serde(serialize_with = "display")]
    pub error: SeriesError,
}

fn display<S: serde::Serializer>(error: &SeriesError, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&error.to_string())
}

/// Everything the decoder made of a study's files.
#[derive(Debug, Clone, Default)]
pub struct StudyDecode {
    pub series: Vec<DecodedSeries>,
    /// Every file that could not be used, with its reason.
    pub rejected: Vec<RejectedFile>,
    /// Series that could not be decoded whole, with their reason.
    pub rejected_series: Vec<RejectedSeries>,
}

/// The headers of one series, in arrival order.
#[derive(Default)]
struct SeriesGroup {
    series_uid: String,
    headers: Vec<Header>,
    warnings: Vec<String>,
    /// Index in `headers` of each SOP Instance UID seen.
    seen: HashMap<String, usize>,
}

/// One readable file's header.
struct Header {
    path: PathBuf,
    instance: Instance,
    digest: (u64, usize),
    has_pixels: bool,
}

/// Decodes every series found in `paths` (files of one study, in arrival order).
pub fn decode_study(paths: &[PathBuf]) -> StudyDecode {
    let mut out = StudyDecode::default();
    let mut groups: Vec<SeriesGroup> = Vec::new();
    for path in paths {
        match read_header(path) {
            Ok(header) => add_header(header, &mut groups, &mut out.rejected),
            Err(rejected) => out.rejected.push(rejected),
        }
    }
    for SeriesGroup { series_uid, headers, warnings, .. } in groups {
        let tainted = out.rejected.iter().find(|r| {
            r.series_instance_uid.as_deref() == Some(series_uid.as_str()) && !matches!(r.error, ReadError::DuplicateInstance { .. })
        });
        let result = match tainted {
            Some(bad) => Err(SeriesError::RejectedInstance { file: bad.path.display().to_string(), reason: bad.error.clone() }),
            None => decode_series(&headers, warnings),
        };
        match result {
            Ok(series) => out.series.push(series),
            Err(error) => {
                tracing::warn!(series_instance_uid = %series_uid, %error, "series rejected");
                let set = &headers[0].instance.data_set;
                out.rejected_series.push(RejectedSeries {
                    series_instance_uid: series_uid,
                    series_description: set.string(tags::SERIES_DESCRIPTION),
                    modality: set.string(tags::MODALITY),
                    files: headers.iter().map(|h| h.path.clone()).collect(),
                    error,
                });
            }
        }
    }
    out
}

/// Reads a file's header, keeping a digest of its bytes and dropping its pixel data.
fn read_header(path: &Path) -> Result<Header, RejectedFile> {
    let reject = |error: ReadError, series: Option<String>| RejectedFile { path: path.to_path_buf(), series_instance_uid: series, error };
    let bytes = std::fs::read(path).map_err(|e| reject(ReadError::Io { path: path.display().to_string(), message: e.to_string() }, None))?;
    let mut instance = match read_bytes(&bytes) {
        Ok(instance) => instance,
        Err(error) => {
            let series = identify(&bytes).ok().map(|ids| ids.series_instance_uid);
            tracing::warn!(series_instance_uid = series.as_deref().unwrap_or("unknown"), %error, "instance rejected");
            return Err(reject(error, series));
        }
    };
    for (name, value) in [("SOPInstanceUID", instance.sop_instance_uid()), ("SeriesInstanceUID", instance.series_instance_uid())] {
        if value.is_none() {
            return Err(reject(ReadError::MissingAttribute { name }, instance.series_instance_uid()));
        }
    }
    let has_pixels = instance.data_set.elements.remove(&PIXEL_DATA).is_some();
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Ok(Header { path: path.to_path_buf(), instance, digest: (hasher.finish(), bytes.len()), has_pixels })
}

/// Files a header under its series, setting aside repeated SOP Instance UIDs.
fn add_header(header: Header, groups: &mut Vec<SeriesGroup>, rejected: &mut Vec<RejectedFile>) {
    let series_uid = header.instance.series_instance_uid().unwrap_or_default();
    let sop_uid = header.instance.sop_instance_uid().unwrap_or_default();
    let index = match groups.iter().position(|g| g.series_uid == series_uid) {
        Some(i) => i,
        None => {
            groups.push(SeriesGroup { series_uid: series_uid.clone(), ..SeriesGroup::default() });
            groups.len() - 1
        }
    };
    let group = &mut groups[index];

    match group.seen.get(&sop_uid).map(|&i| &group.headers[i]) {
        Some(first) if first.digest == header.digest => {
            group.warnings.push(format!("identical copy of SOP Instance {sop_uid} ignored"));
        }
        Some(first) => {
            let error = ReadError::DuplicateInstance { sop_instance_uid: sop_uid, kept: first.path.display().to_string() };
            tracing::warn!(series_instance_uid = %series_uid, %error, "duplicate instance set aside");
            rejected.push(RejectedFile { path: header.path, series_instance_uid: Some(series_uid), error });
        }
        None => {
            group.seen.insert(sop_uid, group.headers.len());
            group.headers.push(header);
        }
    }
}

/// Assembles one series and reads its pixels.
fn decode_series(headers: &[Header], mut warnings: Vec<String>) -> Result<DecodedSeries, SeriesError> {
    if !headers.iter().any(|h| h.has_pixels) {
        return Err(SeriesError::NoImages);
    }
    let instances: Vec<Instance> = headers.iter().map(|h| h.instance.clone()).collect();
    let names: Vec<String> = headers.iter().map(|h| h.path.display().to_string()).collect();
    let view = SeriesHeaders { instances: &instances, names: &names };

    for instance in &instances {
        for warning in &instance.warnings {
            if !warnings.contains(warning) {
                warnings.push(warning.clone());
            }
        }
    }

    let slices = volume::slices(&view, &mut warnings)?;
    let layout = volume::layout(slices, &view)?;
    let (volume, slice_sources, fill_warnings) = volume::fill(layout, &view, |i| {
        let bytes = std::fs::read(&headers[i].path).map_err(|e| ReadError::Io { path: names[i].clone(), message: e.to_string() })?;
        read_bytes(&bytes)
    })?;
    for warning in fill_warnings {
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }

    let set = &instances[0].data_set;
    let modality = set.string(tags::MODALITY).unwrap_or_default();
    let image_type = set.strings(tags::IMAGE_TYPE);
    let description = set.string(tags::SERIES_DESCRIPTION);
    let kind = classify(&ClassifyInput {
        modality: &modality,
        image_type: &image_type,
        series_description: description.as_deref(),
        time_points: volume.frames(),
    });

    let info = SeriesInfo {
        study_instance_uid: instances[0].study_instance_uid().unwrap_or_default(),
        series_instance_uid: instances[0].series_instance_uid().unwrap_or_default(),
        frame_of_reference_uid: set.string(tags::FRAME_OF_REFERENCE_UID),
        modality,
        series_description: description,
        series_number: set.integer(tags::SERIES_NUMBER, "SeriesNumber", &mut Vec::new()).and_then(|n| i32::try_from(n).ok()),
        kind,
        transfer_syntax_uid: instances[0].transfer_syntax_uid.clone(),
        slice_sources,
        instance_count: instances.len(),
        warnings,
    };
    let kind_name = format!("{kind:?}");
    tracing::info!(series_instance_uid = %info.series_instance_uid, kind = %kind_name, shape = ?volume.voxels.shape(), "series decoded");
    Ok(DecodedSeries { study: study_context(&instances[0]), info, volume })
}

/// Copies the patient and study attributes Penumbra's outputs repeat.
pub fn study_context(instance: &Instance) -> StudyContext {
    let set = &instance.data_set;
    StudyContext {
        study_instance_uid: instance.study_instance_uid().unwrap_or_default(),
        patient_name: set.string(tags::PATIENT_NAME),
        patient_id: set.string(tags::PATIENT_ID),
        patient_birth_date: set.string(tags::PATIENT_BIRTH_DATE),
        patient_sex: set.string(tags::PATIENT_SEX),
        study_date: set.string(tags::STUDY_DATE),
        study_time: set.string(tags::STUDY_TIME),
        study_id: set.string(tags::STUDY_ID),
        accession_number: set.string(tags::ACCESSION_NUMBER),
        referring_physician_name: set.string(tags::REFERRING_PHYSICIAN_NAME),
        study_description: set.string(tags::STUDY_DESCRIPTION),
    }
}
