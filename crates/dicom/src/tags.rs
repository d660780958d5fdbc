//! The attribute tags this crate reads (PS3.6).

use dicom_core::Tag;

pub const TRANSFER_SYNTAX_UID: Tag = Tag(0x0002, 0x0010);
pub const MEDIA_STORAGE_SOP_CLASS_UID: Tag = Tag(0x0002, 0x0002);

pub const SPECIFIC_CHARACTER_SET: Tag = Tag(0x0008, 0x0005);
pub const IMAGE_TYPE: Tag = Tag(0x0008, 0x0008);
pub const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);
pub const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
pub const STUDY_DATE: Tag = Tag(0x0008, 0x0020);
pub const ACQUISITION_DATE: Tag = Tag(0x0008, 0x0022);
pub const CONTENT_DATE: Tag = Tag(0x0008, 0x0023);
pub const ACQUISITION_DATE_TIME: Tag = Tag(0x0008, 0x002A);
pub const STUDY_TIME: Tag = Tag(0x0008, 0x0030);
pub const ACQUISITION_TIME: Tag = Tag(0x0008, 0x0032);
pub const CONTENT_TIME: Tag = Tag(0x0008, 0x0033);
pub const ACCESSION_NUMBER: Tag = Tag(0x0008, 0x0050);
pub const MODALITY: Tag = Tag(0x0008, 0x0060);
pub const REFERRING_PHYSICIAN_NAME: Tag = Tag(0x0008, 0x0090);
pub const STUDY_DESCRIPTION: Tag = Tag(0x0008, 0x1030);
pub const SERIES_DESCRIPTION: Tag = Tag(0x0008, 0x103E);

pub const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
pub const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
pub const PATIENT_BIRTH_DATE: Tag = Tag(0x0010, 0x0030);
pub const PATIENT_SEX: Tag = Tag(0x0010, 0x0040);

pub const SLICE_THICKNESS: Tag = Tag(0x0018, 0x0050);
pub const SPACING_BETWEEN_SLICES: Tag = Tag(0x0018, 0x0088);
pub const TRIGGER_TIME: Tag = Tag(0x0018, 0x1060);
pub const FRAME_ACQUISITION_DATE_TIME: Tag = Tag(0x0018, 0x9074);

pub const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
pub const SERIES_INSTANCE_UID: Tag = Tag(0x0020, 0x000E);
pub const STUDY_ID: Tag = Tag(0x0020, 0x0010);
pub const SERIES_NUMBER: Tag = Tag(0x0020, 0x0011);
pub const ACQUISITION_NUMBER: Tag = Tag(0x0020, 0x0012);
pub const INSTANCE_NUMBER: Tag = Tag(0x0020, 0x0013);
pub const IMAGE_POSITION_PATIENT: Tag = Tag(0x0020, 0x0032);
pub const IMAGE_ORIENTATION_PATIENT: Tag = Tag(0x0020, 0x0037);
pub const FRAME_OF_REFERENCE_UID: Tag = Tag(0x0020, 0x0052);
pub const TEMPORAL_POSITION_IDENTIFIER: Tag = Tag(0x0020, 0x0100);
pub const NUMBER_OF_TEMPORAL_POSITIONS: Tag = Tag(0x0020, 0x0105);
pub const FRAME_CONTENT_SEQUENCE: Tag = Tag(0x0020, 0x9111);
pub const PLANE_POSITION_SEQUENCE: Tag = Tag(0x0020, 0x9113);
pub const PLANE_ORIENTATION_SEQUENCE: Tag = Tag(0x0020, 0x9116);
pub const TEMPORAL_POSITION_INDEX: Tag = Tag(0x0020, 0x9128);

pub const SAMPLES_PER_PIXEL: Tag = Tag(0x0028, 0x0002);
pub const PHOTOMETRIC_INTERPRETATION: Tag = Tag(0x0028, 0x0004);
pub const NUMBER_OF_FRAMES: Tag = Tag(0x0028, 0x0008);
pub const ROWS: Tag = Tag(0x0028, 0x0010);
pub const COLUMNS: Tag = Tag(0x0028, 0x0011);
pub const PIXEL_SPACING: Tag = Tag(0x0028, 0x0030);
pub const BITS_ALLOCATED: Tag = Tag(0x0028, 0x0100);
pub const BITS_STORED: Tag = Tag(0x0028, 0x0101);
pub const HIGH_BIT: Tag = Tag(0x0028, 0x0102);
pub const PIXEL_REPRESENTATION: Tag = Tag(0x0028, 0x0103);
pub const RESCALE_INTERCEPT: Tag = Tag(0x0028, 0x1052);
pub const RESCALE_SLOPE: Tag = Tag(0x0028, 0x1053);
pub const PIXEL_MEASURES_SEQUENCE: Tag = Tag(0x0028, 0x9110);
pub const PIXEL_VALUE_TRANSFORMATION_SEQUENCE: Tag = Tag(0x0028, 0x9145);

pub const SHARED_FUNCTIONAL_GROUPS: Tag = Tag(0x5200, 0x9229);
pub const PER_FRAME_FUNCTIONAL_GROUPS: Tag = Tag(0x5200, 0x9230);
