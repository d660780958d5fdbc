//! Small helpers for building DICOM data sets with dicom-object: element writers, code items,
//! decimal-string formatting, the shared patient and study modules, and UTC date and time.

use dicom_core::value::{DataSetSequence, PrimitiveValue, C};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use penumbra_dicom::{SourceInstance, StudyContext};
use std::time::{SystemTime, UNIX_EPOCH};

/// Manufacturer written into every object Penumbra creates.
pub(crate) const MANUFACTURER: &str = "Penumbra";

/// Private coding scheme for concepts with no standard code (declared in each object's
/// CodingSchemeIdentificationSequence by [`put_private_scheme`]).
pub(crate) const PRIVATE_SCHEME: &str = "99PENUMBRA";

/// A coded concept: code value, coding scheme designator and code meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Code {
    pub value: &'static str,
    pub scheme: &'static str,
    pub meaning: &'static str,
}

impl Code {
    pub(crate) const fn new(
        value: &'static str,
        scheme: &'static str,
        meaning: &'static str,
    ) -> Self {
        Code {
            value,
            scheme,
            meaning,
        }
    }

    /// Builds the sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning).
    pub(crate) fn item(&self) -> InMemDicomObject {
        let mut item = InMemDicomObject::new_empty();
        item.put_str(tags::CODE_VALUE, VR::SH, self.value);
        item.put_str(tags::CODING_SCHEME_DESIGNATOR, VR::SH, self.scheme);
        item.put_str(tags::CODE_MEANING, VR::LO, self.meaning);
        item
    }
}

/// DICOM CID 7202 "Source image for image processing operation".
const SOURCE_PURPOSE: Code = Code::new("121322", "DCM", "Source image for image processing operation");

/// Builds a SourceImageSequence item that references one source slice (and its frame, for a
/// multi-frame source) as the input of the image processing.
pub(crate) fn source_image_item(slice: &SourceInstance) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put_str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, slice.sop_class_uid.clone());
    item.put_str(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, slice.sop_instance_uid.clone());
    if let Some(frame_number) = slice.frame_number {
        item.put_str(tags::REFERENCED_FRAME_NUMBER, VR::IS, frame_number.to_string());
    }
    put_code_seq(&mut item, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, SOURCE_PURPOSE);
    item
}

pub(crate) fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

pub(crate) fn put_code_seq(obj: &mut InMemDicomObject, tag: Tag, code: Code) {
    put_seq(obj, tag, vec![code.item()]);
}

pub(crate) fn put_us(obj: &mut InMemDicomObject, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

pub(crate) fn put_ul_list(obj: &mut InMemDicomObject, tag: Tag, values: &[u32]) {
    let values: C<u32> = values.iter().copied().collect();
    obj.put(DataElement::new(tag, VR::UL, PrimitiveValue::U32(values)));
}

pub(crate) fn put_at(obj: &mut InMemDicomObject, tag: Tag, value: Tag) {
    obj.put(DataElement::new(tag, VR::AT, PrimitiveValue::from(value)));
}

/// Puts a decimal string (DS) attribute with one value per entry of `values`.
pub(crate) fn put_ds(obj: &mut InMemDicomObject, tag: Tag, values: &[f64]) {
    let text: Vec<String> = values.iter().map(|v| format_ds(*v)).collect();
    obj.put_str(tag, VR::DS, text.join("\\"));
}

/// Formats `value` as a DICOM decimal string of at most 16 characters, keeping as many
/// significant digits as fit. Non-finite values have no DS form and are written as 0.
pub(crate) fn format_ds(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_string();
    }
    for decimals in (0..=10).rev() {
        let text = trim_fraction(format!("{value:.decimals$}"));
        if text.len() <= 16 {
            return text;
        }
    }
    for digits in (1..=9).rev() {
        let text = format!("{value:.digits$E}");
        if text.len() <= 16 {
            return text;
        }
    }
    "0".to_string()
}

fn trim_fraction(text: String) -> String {
    if !text.contains('.') {
        return text;
    }
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    if trimmed == "-0" {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Puts the Patient and General Study modules copied from the source study, with SOP Common's
/// SpecificCharacterSet set to UTF-8 so that copied names keep their characters.
pub(crate) fn put_patient_and_study(obj: &mut InMemDicomObject, study: &StudyContext) {
    obj.put_str(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");

    let optional = |value: &Option<String>| value.clone().unwrap_or_default();
    obj.put_str(tags::PATIENT_NAME, VR::PN, optional(&study.patient_name));
    obj.put_str(tags::PATIENT_ID, VR::LO, optional(&study.patient_id));
    obj.put_str(
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        optional(&study.patient_birth_date),
    );
    obj.put_str(tags::PATIENT_SEX, VR::CS, optional(&study.patient_sex));

    obj.put_str(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        study.study_instance_uid.clone(),
    );
    obj.put_str(tags::STUDY_DATE, VR::DA, optional(&study.study_date));
    obj.put_str(tags::STUDY_TIME, VR::TM, optional(&study.study_time));
    obj.put_str(tags::STUDY_ID, VR::SH, optional(&study.study_id));
    obj.put_str(
        tags::ACCESSION_NUMBER,
        VR::SH,
        optional(&study.accession_number),
    );
    obj.put_str(
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        optional(&study.referring_physician_name),
    );
    if let Some(description) = &study.study_description {
        obj.put_str(tags::STUDY_DESCRIPTION, VR::LO, description.clone());
    }
}

/// Puts SOPClassUID, SOPInstanceUID, the instance's content, series and creation date and time
/// in UTC, and TimezoneOffsetFromUTC +0000.
pub(crate) fn put_sop_common(
    obj: &mut InMemDicomObject,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) {
    let (date, time) = utc_date_time(SystemTime::now());
    obj.put_str(tags::SOP_CLASS_UID, VR::UI, sop_class_uid);
    obj.put_str(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid);
    obj.put_str(tags::INSTANCE_CREATION_DATE, VR::DA, date.clone());
    obj.put_str(tags::INSTANCE_CREATION_TIME, VR::TM, time.clone());
    obj.put_str(tags::CONTENT_DATE, VR::DA, date.clone());
    obj.put_str(tags::CONTENT_TIME, VR::TM, time.clone());
    obj.put_str(tags::SERIES_DATE, VR::DA, date);
    obj.put_str(tags::SERIES_TIME, VR::TM, time);
    obj.put_str(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000");
}

/// Declares [`PRIVATE_SCHEME`] in CodingSchemeIdentificationSequence.
pub(crate) fn put_private_scheme(obj: &mut InMemDicomObject) {
    let mut item = InMemDicomObject::new_empty();
    item.put_str(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PRIVATE_SCHEME);
    item.put_str(tags::CODING_SCHEME_NAME, VR::ST, "Penumbra local codes");
    item.put_str(
        tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
        VR::ST,
        MANUFACTURER,
    );
    put_seq(obj, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, vec![item]);
}

/// Returns `time` as a DICOM date (`YYYYMMDD`) and time (`HHMMSS`) in UTC.
pub(crate) fn utc_date_time(time: SystemTime) -> (String, String) {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let date = format!("{year:04}{month:02}{day:02}");
    let time = format!(
        "{:02}{:02}{:02}",
        of_day / 3600,
        (of_day / 60) % 60,
        of_day % 60
    );
    (date, time)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day), counting in
/// 400-year eras of 146 097 days that start on 1 March.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Reads a string attribute, trimmed of DICOM padding.
pub(crate) fn read_str(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let element = obj.get(tag)?;
    let text = element.value().to_str().ok()?;
    let text = text.trim_end_matches(['\0', ' ']).to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn format_ds_fits_sixteen_characters() {
        assert_eq!(format_ds(0.5), "0.5");
        assert_eq!(format_ds(-2.0), "-2");
        assert_eq!(format_ds(123.456), "123.456");
        assert_eq!(format_ds(1.0 / 3.0), "0.3333333333");
        assert_eq!(format_ds(-1.0e-12), "0");
        assert_eq!(format_ds(f64::NAN), "0");
        let huge = format_ds(1.234_567_890_123e20);
        assert!(huge.len() <= 16, "{huge}");
        assert!((huge.parse::<f64>().unwrap() - 1.234_567_890_123e20).abs() < 1e12);
    }

    #[test]
    fn utc_date_time_known_instants() {
        // 2000-02-29T12:34:56Z is 951 827 696 s after the epoch.
        let leap = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(
            utc_date_time(leap),
            ("20000229".to_string(), "123456".to_string())
        );

        assert_eq!(
            utc_date_time(UNIX_EPOCH),
            ("19700101".to_string(), "000000".to_string())
        );

        // 2026-12-04T00:00:00Z is day 20 791 after the epoch.
        let day = UNIX_EPOCH + Duration::from_secs(20_791 * 86_400);
        assert_eq!(utc_date_time(day).0, "20261204");
    }
}
