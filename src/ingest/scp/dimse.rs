//! DIMSE command sets (PS3.7 section 9 and annex E): decoding requests and encoding responses.
//!
//! Command sets always travel in Implicit VR Little Endian, whatever transfer syntax the
//! presentation context negotiated for the data set.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Command Field values (PS3.7 annex E).
pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;

/// Command Data Set Type value meaning that no data set follows the command.
pub const NO_DATA_SET: u16 = 0x0101;
/// Command Data Set Type value sent when a data set follows (any other value also means one does).
pub const DATA_SET_PRESENT: u16 = 0x0000;

/// DIMSE status codes used by the C-STORE and C-ECHO services (PS3.4 annex B.2.3, PS3.7 annex C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Refused: out of resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class.
    pub const DATA_SET_DOES_NOT_MATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;

    /// Returns whether a C-STORE status means the peer kept the instance
    /// (success, or one of the warnings 0xB000, 0xB006, 0xB007).
    pub fn is_stored(code: u16) -> bool {
        code == SUCCESS || code == 0xB000 || code == 0xB006 || code == 0xB007
    }

    /// Returns whether a failure status may clear up by itself, so that sending again later
    /// can succeed: the 0xA7xx "out of resources" family.
    pub fn is_transient_failure(code: u16) -> bool {
        (code & 0xFF00) == 0xA700
    }
}

/// The fields of a DIMSE request or response that this module reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub command_field: u16,
    pub message_id: u16,
    pub message_id_being_responded_to: Option<u16>,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub has_data_set: bool,
    pub status: Option<u16>,
    pub error_comment: Option<String>,
}

/// Failure to decode or encode a command set.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("DIMSE command set is missing {0}")]
    Missing(&'static str),
    #[error("invalid DIMSE command set: {0}")]
    Layout(String),
    #[error("failed to encode DIMSE command set: {0}")]
    Encode(#[source] Box<dicom_object::WriteError>),
}

/// Trims the NUL and space padding that DICOM allows after UI and AE values.
pub fn trim_padding(value: &str) -> &str {
    value.trim_end_matches(['\0', ' ']).trim_start_matches(' ')
}

/// Decodes a command set received in one or more Command PDVs.
///
/// The decoder walks the Implicit VR Little Endian elements itself and only borrows value bytes
/// from `bytes`, so a length that a peer declares never sizes an allocation. Elements it does
/// not read are skipped by their length.
///
/// # Errors
///
/// [`CommandError::Layout`] when an element lies outside group 0000, declares more bytes than
/// follow, appears twice or has a value of the wrong width or character set, and
/// [`CommandError::Missing`] when Command Field is absent.
pub fn decode_command(bytes: &[u8]) -> Result<Command, CommandError> {
    let elements = split_elements(bytes).map_err(CommandError::Layout)?;
    let find = |tag: Tag| elements.iter().find(|(t, _)| *t == tag).map(|(_, value)| *value);
    let read_u16 = |tag: Tag| {
        let value = find(tag).map(|value| us_value(tag, value)).transpose();
        value.map_err(CommandError::Layout)
    };
    let read_text = |tag: Tag| {
        let value = find(tag).map(|value| text_value(tag, value)).transpose();
        value.map_err(CommandError::Layout)
    };

    let command_field = read_u16(tags::COMMAND_FIELD)?
        .ok_or(CommandError::Missing("command field (0000,0100)"))?;
    let data_set_type = read_u16(tags::COMMAND_DATA_SET_TYPE)?.unwrap_or(NO_DATA_SET);

    Ok(Command {
        command_field,
        message_id: read_u16(tags::MESSAGE_ID)?.unwrap_or(0),
        message_id_being_responded_to: read_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
        affected_sop_class_uid: read_text(tags::AFFECTED_SOP_CLASS_UID)?.unwrap_or_default(),
        affected_sop_instance_uid: read_text(tags::AFFECTED_SOP_INSTANCE_UID)?.unwrap_or_default(),
        has_data_set: data_set_type != NO_DATA_SET,
        status: read_u16(tags::STATUS)?,
        error_comment: read_text(tags::ERROR_COMMENT)?,
    })
}

/// Splits an Implicit VR Little Endian command set into (tag, value bytes) pairs, checking that
/// every element is in group 0000, appears once and has a defined length inside the buffer.
fn split_elements(bytes: &[u8]) -> Result<Vec<(Tag, &[u8])>, String> {
    let mut elements: Vec<(Tag, &[u8])> = Vec::with_capacity(12);
    let mut offset = 0usize;
    while offset < bytes.len() {
        let header = bytes
            .get(offset..offset + 8)
            .ok_or_else(|| format!("element header cut at byte {offset}"))?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if group != 0x0000 {
            return Err(format!(
                "element ({group:04X},{element:04X}) at byte {offset} is outside group 0000"
            ));
        }

        let available = bytes.len() - offset - 8;
        if length > available {
            return Err(format!(
                "element (0000,{element:04X}) declares {length} bytes, only {available} follow"
            ));
        }
        if let Some(width) = value_width(element) {
            if !length.is_multiple_of(width) {
                return Err(format!(
                    "element (0000,{element:04X}) has {length} bytes, not a multiple of its value width {width}"
                ));
            }
        }
        let tag = Tag(group, element);
        if elements.iter().any(|(seen, _)| *seen == tag) {
            return Err(format!("element (0000,{element:04X}) appears twice"));
        }
        elements.push((tag, &bytes[offset + 8..offset + 8 + length]));
        offset += 8 + length;
    }
    Ok(elements)
}

/// Returns the value width in bytes of the command elements with binary values (UL, US and AT
/// in PS3.7 annex E). A length that is not a multiple of it means the sender wrote a malformed
/// element, which is rejected even where this decoder does not read the value.
fn value_width(element: u16) -> Option<usize> {
    match element {
        0x0000 | 0x0001 | 0x0901 | 0x1005 => Some(4),
        0x0100 | 0x0110 | 0x0120 | 0x0700 | 0x0800 | 0x0900 | 0x0903 | 0x1002 | 0x1008
        | 0x1020..=0x1023 | 0x1031 => Some(2),
        _ => None,
    }
}

/// Reads the first value of a US element.
fn us_value(tag: Tag, value: &[u8]) -> Result<u16, String> {
    if value.len() < 2 {
        return Err(format!("element {tag} has {} bytes, too few for a US value", value.len()));
    }
    Ok(u16::from_le_bytes([value[0], value[1]]))
}

/// Reads a UI or LO value, which command sets write in the default character repertoire
/// (PS3.5 section 6.1.2), and trims its padding.
fn text_value(tag: Tag, value: &[u8]) -> Result<String, String> {
    if !value.is_ascii() {
        return Err(format!("element {tag} has bytes outside the default character repertoire"));
    }
    let text: String = value.iter().map(|&byte| char::from(byte)).collect();
    Ok(trim_padding(&text).to_string())
}

/// Encodes a C-STORE-RQ command set.
pub fn encode_store_request(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> Result<Vec<u8>, CommandError> {
    let mut object = InMemDicomObject::new_empty();
    put_uid(&mut object, tags::AFFECTED_SOP_CLASS_UID, sop_class_uid);
    put_u16(&mut object, tags::COMMAND_FIELD, C_STORE_RQ);
    put_u16(&mut object, tags::MESSAGE_ID, message_id);
    // Priority MEDIUM (0x0000).
    put_u16(&mut object, tags::PRIORITY, 0x0000);
    put_u16(&mut object, tags::COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT);
    put_uid(
        &mut object,
        tags::AFFECTED_SOP_INSTANCE_UID,
        sop_instance_uid,
    );
    encode_with_group_length(&object)
}

/// Encodes a C-ECHO-RQ command set.
pub fn encode_echo_request(message_id: u16) -> Result<Vec<u8>, CommandError> {
    let mut object = InMemDicomObject::new_empty();
    put_uid(
        &mut object,
        tags::AFFECTED_SOP_CLASS_UID,
        dicom_dictionary_std::uids::VERIFICATION,
    );
    put_u16(&mut object, tags::COMMAND_FIELD, C_ECHO_RQ);
    put_u16(&mut object, tags::MESSAGE_ID, message_id);
    put_u16(&mut object, tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
    encode_with_group_length(&object)
}

/// Encodes a response (C-STORE-RSP, C-ECHO-RSP or another `*-RSP`) to `request`.
///
/// `error_comment` goes into Error Comment (0000,0902), cut to its 64-character limit.
pub fn encode_response(
    request: &Command,
    status: u16,
    error_comment: Option<&str>,
) -> Result<Vec<u8>, CommandError> {
    let mut object = InMemDicomObject::new_empty();
    if !request.affected_sop_class_uid.is_empty() {
        put_uid(
            &mut object,
            tags::AFFECTED_SOP_CLASS_UID,
            &request.affected_sop_class_uid,
        );
    }
    put_u16(
        &mut object,
        tags::COMMAND_FIELD,
        request.command_field | 0x8000,
    );
    put_u16(
        &mut object,
        tags::MESSAGE_ID_BEING_RESPONDED_TO,
        request.message_id,
    );
    put_u16(&mut object, tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
    put_u16(&mut object, tags::STATUS, status);
    if let Some(comment) = error_comment {
        let mut text: String = comment
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(64)
            .collect();
        if text.len() % 2 == 1 {
            text.push(' ');
        }
        object.put(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(text),
        ));
    }
    if !request.affected_sop_instance_uid.is_empty() {
        put_uid(
            &mut object,
            tags::AFFECTED_SOP_INSTANCE_UID,
            &request.affected_sop_instance_uid,
        );
    }
    encode_with_group_length(&object)
}

fn put_u16(object: &mut InMemDicomObject, tag: Tag, value: u16) {
    object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

/// Stores a UI value padded with NUL to an even length, as PS3.5 section 9.1 requires.
fn put_uid(object: &mut InMemDicomObject, tag: Tag, uid: &str) {
    let mut value = uid.to_string();
    if value.len() % 2 == 1 {
        value.push('\0');
    }
    object.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(value)));
}

/// Writes the command elements, then prepends Command Group Length (0000,0000), the byte count
/// of everything after it.
fn encode_with_group_length(object: &InMemDicomObject) -> Result<Vec<u8>, CommandError> {
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut body = Vec::with_capacity(256);
    object
        .write_dataset_with_ts(&mut body, &ts)
        .map_err(|err| CommandError::Encode(Box::new(err)))?;

    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]);
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_round_trips() {
        let bytes = encode_store_request(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45").unwrap();
        let command = decode_command(&bytes).unwrap();
        assert_eq!(command.command_field, C_STORE_RQ);
        assert_eq!(command.message_id, 7);
        assert_eq!(command.affected_sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(command.affected_sop_instance_uid, "1.2.3.45");
        assert!(command.has_data_set);
    }

    #[test]
    fn odd_length_binary_value_is_rejected() {
        // (0000,0000) Command Group Length (UL) with 9 value bytes, then (0000,0100). The parser
        // reads two UL values, falls one byte out of step and once took a value byte for a
        // 4 GB length.
        let mut bytes = vec![0, 0, 0, 0, 9, 0, 0, 0];
        bytes.extend_from_slice(&[0; 9]);
        bytes.extend_from_slice(&[0, 0, 0, 1, 2, 0, 0, 0, 0x30, 0]);

        let error = decode_command(&bytes).unwrap_err();

        assert!(matches!(error, CommandError::Layout(_)), "{error}");
        assert!(error.to_string().contains("not a multiple"), "{error}");
    }

    #[test]
    fn odd_length_error_id_is_rejected() {
        // cargo-fuzz input from CI: (0000,0903) Error ID (US) with one value byte. A general data
        // set parser fell out of step after it and sized a buffer by a length read from value bytes.
        let bytes = [
            0, 0, 3, 9, 1, 0, 0, 0, 0, 0, 0, 0, 1, 49, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 56, 36, 0,
            0, 0, 0, 2, 64, 0, 0, 0, 0, 0, 0, 2, 0, 18, 0, 0, 0, 49, 46, 50, 46, 56, 52, 48, 2, 0,
            0, 0, 0, 8, 234, 0, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 0, 247, 1,
        ];

        let error = decode_command(&bytes).unwrap_err();

        assert!(error.to_string().contains("(0000,0903) has 1 bytes"), "{error}");
    }

    #[test]
    fn unread_elements_are_skipped_by_their_length() {
        // Move Destination (0000,0600, AE) is not read by this decoder; its bytes are skipped.
        let mut bytes = vec![0, 0, 0, 6, 16, 0, 0, 0];
        bytes.extend_from_slice(b"ANY_AE_TITLE    ");
        bytes.extend_from_slice(&encode_echo_request(5).unwrap());

        let command = decode_command(&bytes).unwrap();

        assert_eq!(command.command_field, C_ECHO_RQ);
        assert_eq!(command.message_id, 5);
    }

    #[test]
    fn repeated_element_is_rejected() {
        let mut bytes = encode_echo_request(1).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 1, 2, 0, 0, 0, 0x01, 0]);

        let error = decode_command(&bytes).unwrap_err();

        assert!(error.to_string().contains("(0000,0100) appears twice"), "{error}");
    }

    #[test]
    fn uid_outside_default_repertoire_is_rejected() {
        let mut bytes = vec![0, 0, 0, 1, 2, 0, 0, 0, 0x30, 0];
        bytes.extend_from_slice(&[0, 0, 2, 0, 4, 0, 0, 0, b'1', b'.', 0xC3, 0xA9]);

        let error = decode_command(&bytes).unwrap_err();

        assert!(error.to_string().contains("(0000,0002)"), "{error}");
        assert!(error.to_string().contains("default character repertoire"), "{error}");
    }

    #[test]
    fn empty_command_field_is_rejected() {
        let bytes = [0, 0, 0, 1, 0, 0, 0, 0];

        let error = decode_command(&bytes).unwrap_err();

        assert!(matches!(error, CommandError::Layout(_)), "{error}");
        assert!(error.to_string().contains("(0000,0100) has 0 bytes"), "{error}");
    }

    #[test]
    fn missing_command_field_is_reported() {
        let bytes = [0, 0, 0x10, 1, 2, 0, 0, 0, 7, 0];

        let error = decode_command(&bytes).unwrap_err();

        assert!(matches!(error, CommandError::Missing(_)), "{error}");
    }

    #[test]
    fn group_length_counts_following_bytes() {
        let bytes = encode_echo_request(1).unwrap();
        let length = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!(length, bytes.len() - 12);
    }

    #[test]
    fn response_carries_status_and_ids() {
        let request =
            decode_command(&encode_store_request(3, "1.2.840.10008.5.1.4.1.1.2", "1.2.3").unwrap())
                .unwrap();
        let bytes = encode_response(
            &request,
            status::DATA_SET_DOES_NOT_MATCH,
            Some("uid mismatch"),
        )
        .unwrap();
        let response = decode_command(&bytes).unwrap();
        assert_eq!(response.command_field, C_STORE_RSP);
        assert_eq!(response.message_id_being_responded_to, Some(3));
        assert_eq!(response.status, Some(0xA900));
        assert_eq!(response.affected_sop_instance_uid, "1.2.3");
        assert_eq!(response.error_comment.as_deref(), Some("uid mismatch"));
        assert!(!response.has_data_set);
    }

    #[test]
    fn status_classes() {
        assert!(status::is_stored(0x0000));
        assert!(status::is_stored(0xB007));
        assert!(!status::is_stored(0xA700));
        assert!(status::is_transient_failure(0xA702));
        assert!(!status::is_transient_failure(0xC000));
    }
}
