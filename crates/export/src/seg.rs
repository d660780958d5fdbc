//! The core and penumbra masks as a BINARY DICOM Segmentation (Segmentation Storage) on the
//! source series' grid, so that viewers overlay it on the source images without resampling.
//!
//! Frame layout: every segment gets one frame per source slice, empty segments included, so the
//! object always has `2 * slices` frames: segment 1 (ischemic core) for slices 0..n, then segment 2
//! (penumbra) for slices 0..n. Frame k therefore always belongs to the same segment and slice, even when a segment is empty.

use crate::dcm::{self, Code};
use crate::{AlgorithmInfo, ExportError};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use penumbra_dicom::{uid::new_uid, SeriesInfo, StudyContext};
use penumbra_imaging::{Geometry, Label, LabelVolume};

/// Segment number of the ischemic core in every Penumbra SEG.
pub const CORE_SEGMENT: u16 = 1;
/// Segment number of the penumbra in every Penumbra SEG.
pub const PENUMBRA_SEGMENT: u16 = 2;

/// SNOMED CT 49755003, a segmented property category of DICOM CID 7150. Older DICOM editions gave
/// its meaning as "Morphologically Altered Structure"; this is the current one in pydicom 3.0.
const CATEGORY: Code = Code::new("49755003", "SCT", "Morphologically Abnormal Structure");

// NOTE: no SNOMED CT concept for "ischemic core" or "ischemic penumbra" as defined by CT
// perfusion thresholds could be verified offline, so both types use the private scheme declared
// in CodingSchemeIdentificationSequence.
const CORE_TYPE: Code = Code::new("ISCHEMICCORE", dcm::PRIVATE_SCHEME, "Ischemic core");
const PENUMBRA_TYPE: Code = Code::new("PENUMBRA", dcm::PRIVATE_SCHEME, "Ischemic penumbra");

/// DICOM CID 7162 "Artificial Intelligence" algorithm family.
const ALGORITHM_FAMILY: Code = Code::new("123110", "DCM", "Artificial Intelligence");
/// DICOM CID 7203 "Segmentation" image derivation.
const DERIVATION: Code = Code::new("113076", "DCM", "Segmentation");

/// DICOM-encoded CIELab (L* 0..100 and a*, b* -128..127, each scaled to 0..65535) of sRGB pure
/// red under D65, L* 53.24 a* 80.09 b* 67.20, for the core.
const CORE_CIELAB: [u16; 3] = [34_891, 53_479, 50_166];
/// DICOM-encoded CIELab of sRGB pure green, L* 87.73 a* -86.18 b* 83.18, for the penumbra.
const PENUMBRA_CIELAB: [u16; 3] = [57_494, 10_748, 54_273];

/// Everything [`build_seg`] needs.
#[derive(Debug, Clone, Copy)]
pub struct SegInput<'a> {
    pub study: &'a StudyContext,
    /// The series the labels were computed on; its `slice_sources` give one instance per slice.
    pub source: &'a SeriesInfo,
    /// Geometry of the source grid, the grid of `labels`.
    pub geometry: &'a Geometry,
    /// Labels shaped `(z, y, x)` on the source grid: 0 background, 1 penumbra, 2 core.
    pub labels: &'a LabelVolume,
    pub algorithm: &'a AlgorithmInfo,
    pub series_number: i32,
    /// ContentLabel: a short upper-case code string such as `PENUMBRA_UNET`.
    pub content_label: &'a str,
    /// Whether a radiologist has reviewed the result. Unreviewed objects carry a warning in
    /// ContentDescription and SeriesDescription.
    pub reviewed: bool,
}

/// UIDs of a SEG written by [`build_seg`], for references from a measurement report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegReference {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
}

impl SegReference {
    /// Reads the SOP Class, SOP Instance and Series Instance UIDs back from a built SEG.
    pub fn from_seg(seg: &InMemDicomObject) -> Result<Self, ExportError> {
        let read = |tag, name| {
            dcm::read_str(seg, tag).ok_or(ExportError::MissingAttribute {
                name,
                object: "SEG",
            })
        };
        Ok(SegReference {
            sop_class_uid: read(tags::SOP_CLASS_UID, "SOPClassUID")?,
            sop_instance_uid: read(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
            series_instance_uid: read(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
        })
    }
}

/// Builds a BINARY Segmentation Storage object with segment 1 (ischemic core) and segment 2
/// (penumbra) in the source study and frame of reference, with new series and instance UIDs.
///
/// Errors when the label shape disagrees with the source slices, a label value is not 0, 1 or 2,
/// the geometry is not finite with positive spacing, the source has no FrameOfReferenceUID, or a
/// slice is larger than 65535 pixels on a side.
pub fn build_seg(input: &SegInput) -> Result<InMemDicomObject, ExportError> {
    let (slices, rows, columns) = check_grid(input)?;
    let frame_of_reference = input.source.frame_of_reference_uid.clone().ok_or_else(|| {
        ExportError::InvalidInput(format!(
            "source series {} has no FrameOfReferenceUID; a SEG must share the source frame of reference",
            input.source.series_instance_uid
        ))
    })?;

    let mut obj = InMemDicomObject::new_empty();
    dcm::put_patient_and_study(&mut obj, input.study);
    dcm::put_sop_common(&mut obj, uids::SEGMENTATION_STORAGE, &new_uid());
    dcm::put_private_scheme(&mut obj);
    put_series_and_equipment(&mut obj, input, &frame_of_reference);
    put_image_pixel(&mut obj, rows, columns, 2 * slices);
    put_segmentation_image(&mut obj, input);
    put_dimensions(&mut obj);
    put_references(&mut obj, input.source);
    put_shared_groups(&mut obj, input.geometry);
    put_per_frame_groups(&mut obj, input, slices);
    put_pixel_data(&mut obj, input.labels);
    Ok(obj)
}

/// Checks the label grid against the source series and returns `(slices, rows, columns)`.
fn check_grid(input: &SegInput) -> Result<(usize, u16, u16), ExportError> {
    let (slices, rows, columns) = input.labels.dim();
    if slices == 0 || rows == 0 || columns == 0 {
        return Err(ExportError::InvalidInput(format!(
            "label volume shape ({slices}, {rows}, {columns}) is empty; pass the (z, y, x) labels of the source grid"
        )));
    }
    if input.source.slice_sources.len() != slices {
        return Err(ExportError::InvalidInput(format!(
            "label volume has {slices} slices but source series {} lists {} slice sources; labels must be on the source grid",
            input.source.series_instance_uid,
            input.source.slice_sources.len()
        )));
    }
    let too_large = |n: usize| {
        u16::try_from(n).map_err(|_| {
            ExportError::InvalidInput(format!(
                "slice dimension {n} exceeds 65535 pixels, the DICOM Rows/Columns limit"
            ))
        })
    };
    let rows = too_large(rows)?;
    let columns = too_large(columns)?;
    check_geometry(input.geometry)?;
    check_label_values(input.labels)?;
    Ok((slices, rows, columns))
}

fn check_geometry(geometry: &Geometry) -> Result<(), ExportError> {
    let all = geometry
        .origin_mm
        .iter()
        .chain(&geometry.row_dir)
        .chain(&geometry.col_dir)
        .chain(&geometry.normal)
        .chain(&geometry.spacing_mm);
    if all.clone().any(|v| !v.is_finite()) || geometry.spacing_mm.iter().any(|&s| s <= 0.0) {
        return Err(ExportError::InvalidInput(format!(
            "geometry must be finite with positive spacing, got spacing_mm {:?}",
            geometry.spacing_mm
        )));
    }
    Ok(())
}

/// Rejects label values other than 0, 1 and 2, naming the first offending voxel.
pub(crate) fn check_label_values(labels: &LabelVolume) -> Result<(), ExportError> {
    match labels.indexed_iter().find(|(_, &v)| v > Label::Core as u8) {
        Some(((z, y, x), &value)) => Err(ExportError::InvalidLabel { value, z, y, x }),
        None => Ok(()),
    }
}

fn put_series_and_equipment(
    obj: &mut InMemDicomObject,
    input: &SegInput,
    frame_of_reference: &str,
) {
    obj.put_str(tags::MODALITY, VR::CS, "SEG");
    obj.put_str(tags::SERIES_INSTANCE_UID, VR::UI, new_uid());
    obj.put_str(tags::SERIES_NUMBER, VR::IS, input.series_number.to_string());
    obj.put_str(tags::INSTANCE_NUMBER, VR::IS, "1");
    obj.put_str(tags::SERIES_DESCRIPTION, VR::LO, series_description(input));
    obj.put_str(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference);
    obj.put_str(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");

    obj.put_str(tags::MANUFACTURER, VR::LO, dcm::MANUFACTURER);
    obj.put_str(
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        input.algorithm.name.clone(),
    );
    // The model card id identifies the deployed model, which is the "device" that produced this.
    obj.put_str(
        tags::DEVICE_SERIAL_NUMBER,
        VR::LO,
        input.algorithm.model_card_id.clone(),
    );
    obj.put_str(
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        software_versions(input.algorithm),
    );
}

fn series_description(input: &SegInput) -> String {
    let review = if input.reviewed { "" } else { " UNREVIEWED" };
    format!("Penumbra core and penumbra SEG{review}")
}

/// Returns SoftwareVersions: this crate's version, then the algorithm version.
pub(crate) fn software_versions(algorithm: &AlgorithmInfo) -> String {
    format!(
        "penumbra {}\\{}",
        env!("CARGO_PKG_VERSION"),
        algorithm.version
    )
}

fn put_image_pixel(obj: &mut InMemDicomObject, rows: u16, columns: u16, frames: usize) {
    dcm::put_us(obj, tags::SAMPLES_PER_PIXEL, 1);
    obj.put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    dcm::put_us(obj, tags::ROWS, rows);
    dcm::put_us(obj, tags::COLUMNS, columns);
    dcm::put_us(obj, tags::BITS_ALLOCATED, 1);
    dcm::put_us(obj, tags::BITS_STORED, 1);
    dcm::put_us(obj, tags::HIGH_BIT, 0);
    dcm::put_us(obj, tags::PIXEL_REPRESENTATION, 0);
    obj.put_str(tags::NUMBER_OF_FRAMES, VR::IS, frames.to_string());
    obj.put_str(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
}

fn put_segmentation_image(obj: &mut InMemDicomObject, input: &SegInput) {
    obj.put_str(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY");
    obj.put_str(tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    obj.put_str(
        tags::CONTENT_LABEL,
        VR::CS,
        content_label(input.content_label),
    );
    let review = if input.reviewed {
        "reviewed"
    } else {
        "NOT FOR DIAGNOSTIC USE WITHOUT REVIEW"
    };
    obj.put_str(
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        format!("Core and penumbra, {review}"),
    );
    obj.put_str(tags::CONTENT_CREATOR_NAME, VR::PN, "Penumbra^Automatic");

    let segments = vec![
        segment_item(
            CORE_SEGMENT,
            "Ischemic core",
            CORE_TYPE,
            CORE_CIELAB,
            input.algorithm,
        ),
        segment_item(
            PENUMBRA_SEGMENT,
            "Penumbra",
            PENUMBRA_TYPE,
            PENUMBRA_CIELAB,
            input.algorithm,
        ),
    ];
    dcm::put_seq(obj, tags::SEGMENT_SEQUENCE, segments);
}

/// Makes `label` a valid CS value: upper case, digits, space and underscore, at most 16 characters.
fn content_label(label: &str) -> String {
    let cleaned: String = label
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .map(|c| {
            if c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(16)
        .collect();
    if cleaned.trim().is_empty() {
        "PENUMBRA".to_string()
    } else {
        cleaned
    }
}

fn segment_item(
    number: u16,
    label: &str,
    property_type: Code,
    cielab: [u16; 3],
    algorithm: &AlgorithmInfo,
) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    dcm::put_us(&mut item, tags::SEGMENT_NUMBER, number);
    item.put_str(tags::SEGMENT_LABEL, VR::LO, label);
    dcm::put_code_seq(
        &mut item,
        tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
        CATEGORY,
    );
    dcm::put_code_seq(
        &mut item,
        tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
        property_type,
    );
    item.put_str(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
    item.put_str(tags::SEGMENT_ALGORITHM_NAME, VR::LO, algorithm.name.clone());
    dcm::put_seq(
        &mut item,
        tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
        vec![algorithm_identification(algorithm)],
    );
    let cielab: dicom_core::value::C<u16> = cielab.into_iter().collect();
    item.put(DataElement::new(
        tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
        VR::US,
        PrimitiveValue::U16(cielab),
    ));
    item
}

fn algorithm_identification(algorithm: &AlgorithmInfo) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    dcm::put_code_seq(
        &mut item,
        tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
        ALGORITHM_FAMILY,
    );
    item.put_str(tags::ALGORITHM_NAME, VR::LO, algorithm.name.clone());
    item.put_str(tags::ALGORITHM_VERSION, VR::LO, algorithm.version.clone());
    item.put_str(
        tags::ALGORITHM_PARAMETERS,
        VR::LT,
        format!("model_card_id={}", algorithm.model_card_id),
    );
    item
}

/// Puts the dimension organization: frames are indexed by (segment number, image position).
fn put_dimensions(obj: &mut InMemDicomObject) {
    let organization_uid = new_uid();
    let mut organization = InMemDicomObject::new_empty();
    organization.put_str(
        tags::DIMENSION_ORGANIZATION_UID,
        VR::UI,
        organization_uid.clone(),
    );
    dcm::put_seq(
        obj,
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![organization],
    );
    obj.put_str(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");

    let index = |pointer, group, description: &str| {
        let mut item = InMemDicomObject::new_empty();
        item.put_str(
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            organization_uid.clone(),
        );
        dcm::put_at(&mut item, tags::DIMENSION_INDEX_POINTER, pointer);
        dcm::put_at(&mut item, tags::FUNCTIONAL_GROUP_POINTER, group);
        item.put_str(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, description);
        item
    };
    let indices = vec![
        index(
            tags::REFERENCED_SEGMENT_NUMBER,
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            "Segment Number",
        ),
        index(
            tags::IMAGE_POSITION_PATIENT,
            tags::PLANE_POSITION_SEQUENCE,
            "Image Position Patient",
        ),
    ];
    dcm::put_seq(obj, tags::DIMENSION_INDEX_SEQUENCE, indices);
}

/// Puts the Common Instance Reference module: every slice source of the source series.
fn put_references(obj: &mut InMemDicomObject, source: &SeriesInfo) {
    let mut instances = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for slice in &source.slice_sources {
        if !seen.insert(slice.sop_instance_uid.as_str()) {
            continue;
        }
        let mut item = InMemDicomObject::new_empty();
        item.put_str(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            slice.sop_class_uid.clone(),
        );
        item.put_str(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            slice.sop_instance_uid.clone(),
        );
        instances.push(item);
    }
    let mut series = InMemDicomObject::new_empty();
    series.put_str(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        source.series_instance_uid.clone(),
    );
    dcm::put_seq(&mut series, tags::REFERENCED_INSTANCE_SEQUENCE, instances);
    dcm::put_seq(obj, tags::REFERENCED_SERIES_SEQUENCE, vec![series]);
}

fn put_shared_groups(obj: &mut InMemDicomObject, geometry: &Geometry) {
    let mut measures = InMemDicomObject::new_empty();
    dcm::put_ds(
        &mut measures,
        tags::PIXEL_SPACING,
        &[geometry.spacing_mm[1], geometry.spacing_mm[2]],
    );
    // NOTE: Geometry carries no slice thickness, so SliceThickness is set to the slice spacing.
    dcm::put_ds(
        &mut measures,
        tags::SLICE_THICKNESS,
        &[geometry.spacing_mm[0]],
    );
    dcm::put_ds(
        &mut measures,
        tags::SPACING_BETWEEN_SLICES,
        &[geometry.spacing_mm[0]],
    );

    let mut orientation = InMemDicomObject::new_empty();
    let [r, c] = [geometry.row_dir, geometry.col_dir];
    dcm::put_ds(
        &mut orientation,
        tags::IMAGE_ORIENTATION_PATIENT,
        &[r[0], r[1], r[2], c[0], c[1], c[2]],
    );

    let mut shared = InMemDicomObject::new_empty();
    dcm::put_seq(&mut shared, tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    dcm::put_seq(
        &mut shared,
        tags::PLANE_ORIENTATION_SEQUENCE,
        vec![orientation],
    );
    dcm::put_seq(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]);
}

fn put_per_frame_groups(obj: &mut InMemDicomObject, input: &SegInput, slices: usize) {
    let mut frames = Vec::with_capacity(2 * slices);
    for segment in [CORE_SEGMENT, PENUMBRA_SEGMENT] {
        for z in 0..slices {
            frames.push(frame_item(input, segment, z));
        }
    }
    dcm::put_seq(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames);
}

fn frame_item(input: &SegInput, segment: u16, z: usize) -> InMemDicomObject {
    let mut content = InMemDicomObject::new_empty();
    dcm::put_ul_list(
        &mut content,
        tags::DIMENSION_INDEX_VALUES,
        &[u32::from(segment), z as u32 + 1],
    );

    let mut position = InMemDicomObject::new_empty();
    dcm::put_ds(
        &mut position,
        tags::IMAGE_POSITION_PATIENT,
        &input.geometry.position_mm(z as f64, 0.0, 0.0),
    );

    let mut identification = InMemDicomObject::new_empty();
    dcm::put_us(
        &mut identification,
        tags::REFERENCED_SEGMENT_NUMBER,
        segment,
    );

    let mut frame = InMemDicomObject::new_empty();
    dcm::put_seq(
        &mut frame,
        tags::DERIVATION_IMAGE_SEQUENCE,
        vec![derivation_item(input.source, z)],
    );
    dcm::put_seq(&mut frame, tags::FRAME_CONTENT_SEQUENCE, vec![content]);
    dcm::put_seq(&mut frame, tags::PLANE_POSITION_SEQUENCE, vec![position]);
    dcm::put_seq(
        &mut frame,
        tags::SEGMENT_IDENTIFICATION_SEQUENCE,
        vec![identification],
    );
    frame
}

/// Builds the DerivationImageSequence item that points frame `z` at its source slice.
fn derivation_item(source: &SeriesInfo, z: usize) -> InMemDicomObject {
    let mut image = dcm::source_image_item(&source.slice_sources[z]);
    // The SEG is on the source grid, so each frame covers its source slice pixel for pixel.
    image.put_str(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");

    let mut derivation = InMemDicomObject::new_empty();
    dcm::put_code_seq(&mut derivation, tags::DERIVATION_CODE_SEQUENCE, DERIVATION);
    dcm::put_seq(&mut derivation, tags::SOURCE_IMAGE_SEQUENCE, vec![image]);
    derivation
}

/// Puts PixelData: the core frames then the penumbra frames, one bit per pixel, least significant
/// bit first, frames packed back to back without padding and the total padded to an even length.
fn put_pixel_data(obj: &mut InMemDicomObject, labels: &LabelVolume) {
    let bits = [Label::Core, Label::Penumbra]
        .into_iter()
        .flat_map(|label| labels.iter().map(move |&v| v == label as u8));
    let bytes = pack_bits(bits);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(bytes),
    ));
}

/// Packs booleans eight to a byte, first value in the least significant bit, padded to even length.
pub(crate) fn pack_bits(bits: impl Iterator<Item = bool>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (i, bit) in bits.enumerate() {
        if i % 8 == 0 {
            bytes.push(0u8);
        }
        if bit {
            if let Some(last) = bytes.last_mut() {
                *last |= 1 << (i % 8);
            }
        }
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_bits_lsb_first_even_length() {
        let bits = [true, false, false, false, false, false, false, true, true];
        assert_eq!(pack_bits(bits.into_iter()), vec![0b1000_0001, 0b0000_0001]);
        assert_eq!(pack_bits([false; 3].into_iter()), vec![0, 0]);
        assert!(pack_bits(std::iter::empty()).is_empty());
    }

    #[test]
    fn content_label_is_valid_cs() {
        assert_eq!(content_label("penumbra-unet v2"), "PENUMBRA_UNET V2");
        assert_eq!(
            content_label("a very long content label"),
            "A VERY LONG CONT"
        );
        assert_eq!(content_label(""), "PENUMBRA");
    }
}
