//! Core, penumbra and mismatch volumes as a Comprehensive SR measurement report in the style of
//! DICOM TID 1500, referencing the SEG segments and the source series.
//!
//! Tree: Imaging Measurement Report, with language, device observer and procedure reported, an
//! Image Library of the source slices, and Imaging Measurements holding one TID 1411 volumetric
//! group per segment (core, penumbra) and one TID 1501 group for the mismatch.

use crate::dcm::{self, Code};
use crate::report::VolumeFigures;
use crate::seg::{SegReference, CORE_SEGMENT, PENUMBRA_SEGMENT};
use crate::{AlgorithmInfo, ExportError};
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use penumbra_dicom::{uid::new_uid, SeriesInfo, StudyContext};

// Concept codes as listed in pydicom 3.0's DICOM concept dictionary, and en-US as highdicom 0.28
// writes it.
const MEASUREMENT_REPORT: Code = Code::new("126000", "DCM", "Imaging Measurement Report");
const LANGUAGE: Code = Code::new("121049", "DCM", "Language of Content Item and Descendants");
const ENGLISH_US: Code = Code::new("en-US", "RFC5646", "English (United States)");
const OBSERVER_TYPE: Code = Code::new("121005", "DCM", "Observer Type");
const DEVICE: Code = Code::new("121007", "DCM", "Device");
const DEVICE_OBSERVER_UID: Code = Code::new("121012", "DCM", "Device Observer UID");
const DEVICE_OBSERVER_NAME: Code = Code::new("121013", "DCM", "Device Observer Name");
const PROCEDURE_REPORTED: Code = Code::new("121058", "DCM", "Procedure reported");
const CT_PERFUSION_HEAD: Code = Code::new("39142-5", "LN", "CT perfusion head with contrast IV");
const IMAGE_LIBRARY: Code = Code::new("111028", "DCM", "Image Library");
const IMAGE_LIBRARY_GROUP: Code = Code::new("126200", "DCM", "Image Library Group");
const IMAGING_MEASUREMENTS: Code = Code::new("126010", "DCM", "Imaging Measurements");
const MEASUREMENT_GROUP: Code = Code::new("125007", "DCM", "Measurement Group");
const TRACKING_IDENTIFIER: Code = Code::new("112039", "DCM", "Tracking Identifier");
const TRACKING_UID: Code = Code::new("112040", "DCM", "Tracking Unique Identifier");
const FINDING: Code = Code::new("121071", "DCM", "Finding");
const REFERENCED_SEGMENT: Code = Code::new("121191", "DCM", "Referenced Segment");
const SOURCE_SERIES: Code = Code::new("121232", "DCM", "Source series for segmentation");
const VOLUME: Code = Code::new("118565006", "SCT", "Volume");
const MILLILITER: Code = Code::new("ml", "UCUM", "milliliter");
const NO_UNITS: Code = Code::new("1", "UCUM", "no units");

// Concepts with no standard code, in the private scheme declared by the object.
const CORE_FINDING: Code = Code::new("ISCHEMICCORE", dcm::PRIVATE_SCHEME, "Ischemic core");
const PENUMBRA_FINDING: Code = Code::new("PENUMBRA", dcm::PRIVATE_SCHEME, "Ischemic penumbra");
const MISMATCH_VOLUME: Code = Code::new("MISMATCHVOL", dcm::PRIVATE_SCHEME, "Mismatch volume");
const MISMATCH_RATIO: Code = Code::new("MISMATCHRATIO", dcm::PRIVATE_SCHEME, "Mismatch ratio");

/// Everything [`build_sr`] needs.
#[derive(Debug, Clone, Copy)]
pub struct SrInput<'a> {
    pub study: &'a StudyContext,
    /// The series the segmentation was computed on.
    pub source: &'a SeriesInfo,
    /// The SEG whose segments the measurements describe, from [`SegReference::from_seg`].
    pub seg: &'a SegReference,
    /// Figures of the same labels the SEG holds.
    pub figures: &'a VolumeFigures,
    pub algorithm: &'a AlgorithmInfo,
    pub series_number: i32,
    /// Unreviewed reports carry PreliminaryFlag PRELIMINARY, reviewed ones FINAL.
    pub reviewed: bool,
}

/// Builds a Comprehensive SR Storage object with the measurement report, in a new series of the
/// source study.
pub fn build_sr(input: &SrInput) -> Result<InMemDicomObject, ExportError> {
    if input.seg.sop_instance_uid.is_empty() {
        return Err(ExportError::InvalidInput(
            "SEG reference has an empty SOPInstanceUID; build it with SegReference::from_seg"
                .to_string(),
        ));
    }

    let mut obj = InMemDicomObject::new_empty();
    dcm::put_patient_and_study(&mut obj, input.study);
    dcm::put_sop_common(&mut obj, uids::COMPREHENSIVE_SR_STORAGE, &new_uid());
    dcm::put_private_scheme(&mut obj);
    put_series_and_document(&mut obj, input);
    put_evidence(&mut obj, input);
    put_content_tree(&mut obj, input);
    Ok(obj)
}

fn put_series_and_document(obj: &mut InMemDicomObject, input: &SrInput) {
    obj.put_str(tags::MODALITY, VR::CS, "SR");
    obj.put_str(tags::SERIES_INSTANCE_UID, VR::UI, new_uid());
    obj.put_str(tags::SERIES_NUMBER, VR::IS, input.series_number.to_string());
    obj.put_str(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        "Penumbra perfusion measurements",
    );
    dcm::put_seq(
        obj,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    );
    obj.put_str(tags::MANUFACTURER, VR::LO, dcm::MANUFACTURER);
    obj.put_str(
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        crate::seg::software_versions(input.algorithm),
    );

    obj.put_str(tags::INSTANCE_NUMBER, VR::IS, "1");
    obj.put_str(tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    obj.put_str(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    let preliminary = if input.reviewed {
        "FINAL"
    } else {
        "PRELIMINARY"
    };
    obj.put_str(tags::PRELIMINARY_FLAG, VR::CS, preliminary);
    dcm::put_seq(obj, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new());
}

/// Puts CurrentRequestedProcedureEvidenceSequence: the source slices and the SEG.
fn put_evidence(obj: &mut InMemDicomObject, input: &SrInput) {
    let source_instances = input
        .source
        .slice_sources
        .iter()
        .map(|s| sop_reference(&s.sop_class_uid, &s.sop_instance_uid))
        .collect();
    let seg_instance = vec![sop_reference(
        &input.seg.sop_class_uid,
        &input.seg.sop_instance_uid,
    )];
    let series = vec![
        series_reference(&input.source.series_instance_uid, source_instances),
        series_reference(&input.seg.series_instance_uid, seg_instance),
    ];

    let mut study = InMemDicomObject::new_empty();
    study.put_str(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        input.study.study_instance_uid.clone(),
    );
    dcm::put_seq(&mut study, tags::REFERENCED_SERIES_SEQUENCE, series);
    dcm::put_seq(
        obj,
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![study],
    );
}

fn sop_reference(class_uid: &str, instance_uid: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put_str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class_uid);
    item.put_str(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance_uid);
    item
}

fn series_reference(series_uid: &str, instances: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put_str(tags::SERIES_INSTANCE_UID, VR::UI, series_uid);
    dcm::put_seq(&mut item, tags::REFERENCED_SOP_SEQUENCE, instances);
    item
}

fn put_content_tree(obj: &mut InMemDicomObject, input: &SrInput) {
    obj.put_str(tags::VALUE_TYPE, VR::CS, "CONTAINER");
    dcm::put_code_seq(obj, tags::CONCEPT_NAME_CODE_SEQUENCE, MEASUREMENT_REPORT);
    obj.put_str(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut template = InMemDicomObject::new_empty();
    template.put_str(tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    template.put_str(tags::TEMPLATE_IDENTIFIER, VR::CS, "1500");
    dcm::put_seq(obj, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template]);

    // NOTE: the device observer UID is new for every report because the daemon has no stored
    // device identity, so each report names a distinct device.
    let children = vec![
        code_item("HAS CONCEPT MOD", LANGUAGE, ENGLISH_US),
        code_item("HAS OBS CONTEXT", OBSERVER_TYPE, DEVICE),
        uid_item("HAS OBS CONTEXT", DEVICE_OBSERVER_UID, &new_uid()),
        text_item(
            "HAS OBS CONTEXT",
            DEVICE_OBSERVER_NAME,
            &input.algorithm.name,
        ),
        code_item("HAS CONCEPT MOD", PROCEDURE_REPORTED, CT_PERFUSION_HEAD),
        image_library(input.source),
        imaging_measurements(input),
    ];
    dcm::put_seq(obj, tags::CONTENT_SEQUENCE, children);
}

fn image_library(source: &SeriesInfo) -> InMemDicomObject {
    let images = source
        .slice_sources
        .iter()
        .map(|slice| {
            let mut item = content_item("CONTAINS", "IMAGE", None);
            let reference = sop_reference(&slice.sop_class_uid, &slice.sop_instance_uid);
            dcm::put_seq(&mut item, tags::REFERENCED_SOP_SEQUENCE, vec![reference]);
            item
        })
        .collect();
    let group = container("CONTAINS", IMAGE_LIBRARY_GROUP, images);
    container("CONTAINS", IMAGE_LIBRARY, vec![group])
}

fn imaging_measurements(input: &SrInput) -> InMemDicomObject {
    let f = input.figures;
    let groups = vec![
        segment_group(
            input,
            "Ischemic core",
            CORE_FINDING,
            CORE_SEGMENT,
            f.core_volume_ml,
        ),
        segment_group(
            input,
            "Penumbra",
            PENUMBRA_FINDING,
            PENUMBRA_SEGMENT,
            f.penumbra_volume_ml,
        ),
        mismatch_group(f),
    ];
    container("CONTAINS", IMAGING_MEASUREMENTS, groups)
}

/// Builds a TID 1411 volumetric measurement group for one SEG segment.
fn segment_group(
    input: &SrInput,
    tracking_id: &str,
    finding: Code,
    segment: u16,
    volume_ml: f64,
) -> InMemDicomObject {
    let mut segment_item = content_item("CONTAINS", "IMAGE", Some(REFERENCED_SEGMENT));
    let mut reference = sop_reference(&input.seg.sop_class_uid, &input.seg.sop_instance_uid);
    dcm::put_us(&mut reference, tags::REFERENCED_SEGMENT_NUMBER, segment);
    dcm::put_seq(
        &mut segment_item,
        tags::REFERENCED_SOP_SEQUENCE,
        vec![reference],
    );

    let children = vec![
        text_item("HAS OBS CONTEXT", TRACKING_IDENTIFIER, tracking_id),
        uid_item("HAS OBS CONTEXT", TRACKING_UID, &new_uid()),
        code_item("CONTAINS", FINDING, finding),
        segment_item,
        uid_item("CONTAINS", SOURCE_SERIES, &input.source.series_instance_uid),
        num_item(VOLUME, volume_ml, MILLILITER),
    ];
    container("CONTAINS", MEASUREMENT_GROUP, children)
}

/// Builds a TID 1501 measurement group with the mismatch volume and ratio. An empty core makes
/// the ratio undefined, and the ratio item is then left out. DICOM would allow a NUM item with
/// an empty MeasuredValueSequence and a qualifier, but highdicom 0.28 fails to read such items.
fn mismatch_group(figures: &VolumeFigures) -> InMemDicomObject {
    let mut children = vec![
        text_item(
            "HAS OBS CONTEXT",
            TRACKING_IDENTIFIER,
            "Core-penumbra mismatch",
        ),
        uid_item("HAS OBS CONTEXT", TRACKING_UID, &new_uid()),
        num_item(MISMATCH_VOLUME, figures.mismatch_volume_ml, MILLILITER),
    ];
    if let Some(ratio) = figures.mismatch_ratio {
        children.push(num_item(MISMATCH_RATIO, ratio, NO_UNITS));
    }
    container("CONTAINS", MEASUREMENT_GROUP, children)
}

fn content_item(relationship: &str, value_type: &str, concept: Option<Code>) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put_str(tags::RELATIONSHIP_TYPE, VR::CS, relationship);
    item.put_str(tags::VALUE_TYPE, VR::CS, value_type);
    if let Some(concept) = concept {
        dcm::put_code_seq(&mut item, tags::CONCEPT_NAME_CODE_SEQUENCE, concept);
    }
    item
}

fn container(
    relationship: &str,
    concept: Code,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut item = content_item(relationship, "CONTAINER", Some(concept));
    item.put_str(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    dcm::put_seq(&mut item, tags::CONTENT_SEQUENCE, children);
    item
}

fn code_item(relationship: &str, concept: Code, value: Code) -> InMemDicomObject {
    let mut item = content_item(relationship, "CODE", Some(concept));
    dcm::put_code_seq(&mut item, tags::CONCEPT_CODE_SEQUENCE, value);
    item
}

fn text_item(relationship: &str, concept: Code, text: &str) -> InMemDicomObject {
    let mut item = content_item(relationship, "TEXT", Some(concept));
    item.put_str(tags::TEXT_VALUE, VR::UT, text);
    item
}

fn uid_item(relationship: &str, concept: Code, uid: &str) -> InMemDicomObject {
    let mut item = content_item(relationship, "UIDREF", Some(concept));
    item.put_str(tags::UID, VR::UI, uid);
    item
}

fn num_item(concept: Code, value: f64, unit: Code) -> InMemDicomObject {
    let mut measured = InMemDicomObject::new_empty();
    dcm::put_code_seq(&mut measured, tags::MEASUREMENT_UNITS_CODE_SEQUENCE, unit);
    dcm::put_ds(&mut measured, tags::NUMERIC_VALUE, &[value]);

    let mut item = content_item("CONTAINS", "NUM", Some(concept));
    dcm::put_seq(&mut item, tags::MEASURED_VALUE_SEQUENCE, vec![measured]);
    item
}
