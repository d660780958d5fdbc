//! The SOP classes and transfer syntaxes the C-STORE SCP accepts.

use dicom_dictionary_std::uids;

/// SOP classes whose instances the SCP stores; a C-STORE of any other class gets status 0x0122.
pub const STORAGE_SOP_CLASSES: &[&str] = &[
    uids::CT_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_SINGLE_BIT_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_BYTE_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MULTI_FRAME_TRUE_COLOR_SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_IMAGE_STORAGE,
    uids::SEGMENTATION_STORAGE,
];

/// Transfer syntaxes accepted for data sets, in the SCP's order of preference.
///
/// The SCP picks the first syntax of each proposed presentation context that is in this list,
/// in the order the requestor proposed them.
pub const TRANSFER_SYNTAXES: &[&str] = &[
    uids::EXPLICIT_VR_LITTLE_ENDIAN,
    uids::IMPLICIT_VR_LITTLE_ENDIAN,
    // Explicit VR Big Endian, retired but still sent by older modalities.
    "1.2.840.10008.1.2.2",
    uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::RLE_LOSSLESS,
];

/// Returns whether the SCP stores instances of `sop_class_uid`.
pub fn is_storage_class_supported(sop_class_uid: &str) -> bool {
    STORAGE_SOP_CLASSES.contains(&sop_class_uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_supported_ultrasound_not() {
        assert!(is_storage_class_supported("1.2.840.10008.5.1.4.1.1.2"));
        assert!(is_storage_class_supported("1.2.840.10008.5.1.4.1.1.66.4"));
        assert!(!is_storage_class_supported("1.2.840.10008.5.1.4.1.1.6.1"));
    }
}
