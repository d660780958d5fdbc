//! The attributes a decoded series carries besides its voxels.

use penumbra_imaging::Volume;
use serde::{Deserialize, Serialize};

/// Classification of a decoded series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// Dynamic CT perfusion acquisition: several time points at each slice position.
    DynamicCtp,
    /// A scanner's cerebral blood flow map (mL/100 g/min).
    MapCbf,
    /// A scanner's cerebral blood volume map (mL/100 g).
    MapCbv,
    /// A scanner's mean transit time map (s).
    MapMtt,
    /// A scanner's Tmax map (s).
    MapTmax,
    /// Plain (static) CT.
    PlainCt,
    /// Anything else: kept in the spool and logged, not used.
    Other,
}

/// One source instance that a slice of the decoded volume came from, for references in outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInstance {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// Frame number (1-based) for multi-frame instances, `None` for single-frame ones.
    pub frame_number: Option<u32>,
}

/// Identifying and descriptive attributes of a decoded series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesInfo {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: Option<String>,
    pub modality: String,
    pub series_description: Option<String>,
    pub series_number: Option<i32>,
    pub kind: SeriesKind,
    pub transfer_syntax_uid: String,
    /// For each slice position z, the source instance of the first time point at that position.
    pub slice_sources: Vec<SourceInstance>,
    /// Every source instance used, all time points included.
    pub instance_count: usize,
    /// Things the decoder repaired or assumed, one sentence each (never patient data).
    pub warnings: Vec<String>,
}

/// Patient and study attributes that Penumbra's own objects copy from the source study.
///
/// These are patient data: they go into DICOM outputs and never into logs, metrics or reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StudyContext {
    pub study_instance_uid: String,
    pub patient_name: Option<String>,
    pub patient_id: Option<String>,
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub study_id: Option<String>,
    pub accession_number: Option<String>,
    pub referring_physician_name: Option<String>,
    pub study_description: Option<String>,
}

/// A series decoded into physical values.
#[derive(Debug, Clone)]
pub struct DecodedSeries {
    pub info: SeriesInfo,
    pub study: StudyContext,
    pub volume: Volume,
}
