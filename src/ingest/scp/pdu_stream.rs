//! Reading of the PDUs that arrive after association negotiation (PS3.8 section 9.3), with the
//! fragments of P-DATA-TF PDUs left in the stream so that each one is read straight into the
//! buffer of the message it belongs to.
//!
//! dicom-ul 0.10 reads a PDU in 8 KiB pieces and copies its bytes three times before they reach
//! the caller. A 0.5 MB CT image then costs about 64 read calls and four copies. Here a data
//! fragment costs one copy, from the socket into the instance's buffer. Other PDUs (release,
//! abort, and anything unexpected) are small; they are read whole and parsed by dicom-ul.

use std::io::{self, Read};

use dicom_ul::pdu::{self, Pdu};

/// Type of a P-DATA-TF PDU.
const P_DATA_TF: u8 = 0x04;
/// PDU header: type, reserved byte and a 32-bit big-endian length.
const PDU_HEADER_LEN: usize = 6;
/// PDV item header: a 32-bit big-endian item length, then the presentation context ID and the
/// message control header, which the item length counts.
const PDV_HEADER_LEN: usize = 6;

/// The header of one presentation data value (PS3.8 section 9.3.5.1 and annex E.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub presentation_context_id: u8,
    /// Set for a command fragment (message control header bit 0), clear for a data set fragment.
    pub is_command: bool,
    /// Set on the last fragment of its command or data set (bit 1).
    pub is_last: bool,
    /// Bytes of the fragment that follow in the stream.
    pub len: usize,
}

/// The next item read from an association's stream.
#[derive(Debug)]
pub enum Incoming {
    /// The caller must read exactly `len` bytes from the stream before it calls
    /// [`PduStream::next`] again.
    Fragment(Fragment),
    /// Any PDU other than P-DATA-TF, read whole.
    Pdu(Pdu),
}

/// Failure to read the next PDU or fragment.
#[derive(Debug, thiserror::Error)]
pub enum PduStreamError {
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed in the middle of a PDU")]
    Truncated,
    #[error("PDU of {len} bytes is larger than the maximum {max} negotiated")]
    TooLarge { len: usize, max: usize },
    #[error("presentation data value item of {item_len} bytes does not fit the {remaining} bytes left in its PDU")]
    BadItemLength { item_len: usize, remaining: usize },
    #[error("invalid PDU: {0}")]
    Invalid(String),
}

/// Reads the PDUs of one established association in order.
pub struct PduStream {
    max_pdu_len: usize,
    /// Bytes of the current P-DATA-TF PDU not yet consumed by fragment headers and fragments.
    left_in_pdu: usize,
}

impl PduStream {
    /// Creates a reader for an association on which this node announced `max_pdu_len`. A longer
    /// PDU is an error.
    pub fn new(max_pdu_len: u32) -> Self {
        PduStream { max_pdu_len: max_pdu_len as usize, left_in_pdu: 0 }
    }

    /// Reads up to the next fragment header or the next whole PDU.
    ///
    /// # Errors
    ///
    /// An I/O error of the stream (a timeout included), a stream that ends inside a PDU, a PDU
    /// longer than the maximum, or a malformed P-DATA-TF PDU or other PDU.
    pub fn next<R: Read>(&mut self, stream: &mut R) -> Result<Incoming, PduStreamError> {
        if self.left_in_pdu == 0 {
            let mut header = [0u8; PDU_HEADER_LEN];
            read_exact(stream, &mut header)?;
            let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
            if len > self.max_pdu_len {
                return Err(PduStreamError::TooLarge { len, max: self.max_pdu_len });
            }
            if header[0] != P_DATA_TF {
                return read_other_pdu(stream, header, len, self.max_pdu_len);
            }
            if len < PDV_HEADER_LEN {
                return Err(PduStreamError::Invalid(format!(
                    "P-DATA-TF PDU of {len} bytes contains no presentation data value"
                )));
            }
            self.left_in_pdu = len;
        }

        let remaining = self.left_in_pdu;
        if remaining < PDV_HEADER_LEN {
            return Err(PduStreamError::BadItemLength { item_len: remaining, remaining });
        }
        let mut header = [0u8; PDV_HEADER_LEN];
        read_exact(stream, &mut header)?;
        let item_len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        // The item length counts the context ID and the control header, so it is at least 2.
        if item_len < 2 || item_len > remaining - 4 {
            return Err(PduStreamError::BadItemLength { item_len, remaining });
        }
        self.left_in_pdu = remaining - 4 - item_len;

        let control = header[5];
        Ok(Incoming::Fragment(Fragment {
            presentation_context_id: header[4],
            is_command: control & 0x01 != 0,
            is_last: control & 0x02 != 0,
            len: item_len - 2,
        }))
    }
}

/// Reads the rest of a PDU that is not P-DATA-TF and parses it with dicom-ul.
fn read_other_pdu<R: Read>(
    stream: &mut R,
    header: [u8; PDU_HEADER_LEN],
    len: usize,
    max_pdu_len: usize,
) -> Result<Incoming, PduStreamError> {
    let mut bytes = Vec::with_capacity(PDU_HEADER_LEN + len);
    bytes.extend_from_slice(&header);
    let read = stream.take(len as u64).read_to_end(&mut bytes)?;
    if read != len {
        return Err(PduStreamError::Truncated);
    }

    // dicom-ul checks the length once more, against a maximum that must lie within its own
    // bounds. The length was already checked against ours.
    let max = u32::try_from(max_pdu_len)
        .unwrap_or(u32::MAX)
        .clamp(pdu::MINIMUM_PDU_SIZE, pdu::MAXIMUM_PDU_SIZE);
    match pdu::read_pdu(&bytes[..], max, true) {
        Ok(Some(pdu)) => Ok(Incoming::Pdu(pdu)),
        Ok(None) => Err(PduStreamError::Truncated),
        Err(err) => Err(PduStreamError::Invalid(err.to_string())),
    }
}

/// Fills `buf`, reporting a stream that ends first as [`PduStreamError::Truncated`].
fn read_exact<R: Read>(stream: &mut R, buf: &mut [u8]) -> Result<(), PduStreamError> {
    stream.read_exact(buf).map_err(|err| match err.kind() {
        io::ErrorKind::UnexpectedEof => PduStreamError::Truncated,
        _ => PduStreamError::Io(err),
    })
}

/// Appends exactly `len` bytes from `stream` to `buf`.
///
/// The bytes are zeroed first and read with `read_exact`, so each read requests everything still
/// missing. `Read::read_to_end` would cap its reads at 8 KiB until one fills its buffer, which
/// a socket rarely does.
///
/// # Errors
///
/// An I/O error, or [`PduStreamError::Truncated`] when the stream ends first. `buf` then keeps
/// its old length.
pub fn read_fragment_into<R: Read>(stream: &mut R, len: usize, buf: &mut Vec<u8>) -> Result<(), PduStreamError> {
    let start = buf.len();
    buf.resize(start + len, 0);
    let read = read_exact(stream, &mut buf[start..]);
    if read.is_err() {
        buf.truncate(start);
    }
    read
}

/// Reads and drops exactly `len` bytes of a fragment whose content is not needed.
///
/// # Errors
///
/// As for [`read_fragment_into`].
pub fn skip_fragment<R: Read>(stream: &mut R, len: usize) -> Result<(), PduStreamError> {
    let skipped = io::copy(&mut stream.take(len as u64), &mut io::sink())?;
    if skipped != len as u64 {
        return Err(PduStreamError::Truncated);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn p_data(items: &[(u8, u8, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (pc_id, control, data) in items {
            body.extend_from_slice(&(data.len() as u32 + 2).to_be_bytes());
            body.push(*pc_id);
            body.push(*control);
            body.extend_from_slice(data);
        }
        let mut pdu = vec![P_DATA_TF, 0];
        pdu.extend_from_slice(&(body.len() as u32).to_be_bytes());
        pdu.extend_from_slice(&body);
        pdu
    }

    fn fragment(incoming: Incoming) -> Fragment {
        match incoming {
            Incoming::Fragment(fragment) => fragment,
            Incoming::Pdu(pdu) => panic!("expected a fragment, got {}", pdu.short_description()),
        }
    }

    #[test]
    fn fragments_of_one_pdu_are_read_in_order() {
        let bytes = p_data(&[(1, 0x03, b"command!"), (1, 0x00, b"data"), (1, 0x02, b"more")]);
        let mut stream = Cursor::new(bytes);
        let mut pdus = PduStream::new(16_384);

        let first = fragment(pdus.next(&mut stream).unwrap());
        let mut command = Vec::new();
        read_fragment_into(&mut stream, first.len, &mut command).unwrap();
        let second = fragment(pdus.next(&mut stream).unwrap());
        skip_fragment(&mut stream, second.len).unwrap();
        let third = fragment(pdus.next(&mut stream).unwrap());
        let mut data = Vec::new();
        read_fragment_into(&mut stream, third.len, &mut data).unwrap();

        assert_eq!(first, Fragment { presentation_context_id: 1, is_command: true, is_last: true, len: 8 });
        assert_eq!(command, b"command!");
        assert_eq!((second.is_command, second.is_last, second.len), (false, false, 4));
        assert_eq!((third.is_command, third.is_last), (false, true));
        assert_eq!(data, b"more");
    }

    #[test]
    fn release_request_is_parsed_whole() {
        let mut stream = Cursor::new(vec![0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]);

        let incoming = PduStream::new(16_384).next(&mut stream).unwrap();

        assert!(matches!(incoming, Incoming::Pdu(Pdu::ReleaseRQ)), "{incoming:?}");
    }

    #[test]
    fn oversized_pdu_is_rejected() {
        // Only the header follows, so reading the body first would report a truncated stream.
        let mut stream = Cursor::new(vec![P_DATA_TF, 0, 0x7F, 0xFF, 0xFF, 0xFF]);

        let error = PduStream::new(16_384).next(&mut stream).unwrap_err();

        assert!(matches!(error, PduStreamError::TooLarge { len: 0x7FFF_FFFF, max: 16_384 }), "{error}");
    }

    #[test]
    fn item_longer_than_its_pdu_is_rejected() {
        let mut bytes = p_data(&[(1, 0x02, b"abcd")]);
        bytes[9] = 200;

        let error = PduStream::new(16_384).next(&mut Cursor::new(bytes)).unwrap_err();

        assert!(matches!(error, PduStreamError::BadItemLength { item_len: 200, remaining: 10 }), "{error}");
    }

    #[test]
    fn item_without_control_header_is_rejected() {
        let bytes = vec![P_DATA_TF, 0, 0, 0, 0, 6, 0, 0, 0, 1, 1, 0];

        let error = PduStream::new(16_384).next(&mut Cursor::new(bytes)).unwrap_err();

        assert!(matches!(error, PduStreamError::BadItemLength { item_len: 1, .. }), "{error}");
    }

    #[test]
    fn stream_ending_inside_a_fragment_is_truncated() {
        let mut bytes = p_data(&[(1, 0x02, b"abcdefgh")]);
        bytes.truncate(bytes.len() - 3);
        let mut stream = Cursor::new(bytes);
        let mut pdus = PduStream::new(16_384);

        let header = fragment(pdus.next(&mut stream).unwrap());
        let error = read_fragment_into(&mut stream, header.len, &mut Vec::new()).unwrap_err();

        assert!(matches!(error, PduStreamError::Truncated), "{error}");
    }

    #[test]
    fn stream_ending_inside_a_header_is_truncated() {
        let error = PduStream::new(16_384).next(&mut Cursor::new(vec![P_DATA_TF, 0, 0])).unwrap_err();

        assert!(matches!(error, PduStreamError::Truncated), "{error}");
    }

    #[test]
    fn unknown_pdu_type_is_returned() {
        let incoming = PduStream::new(16_384).next(&mut Cursor::new(vec![0x09, 0, 0, 0, 0, 2, 1, 2])).unwrap();

        assert!(matches!(incoming, Incoming::Pdu(Pdu::Unknown { pdu_type: 0x09, .. })), "{incoming:?}");
    }

    #[test]
    fn malformed_abort_is_invalid() {
        let error = PduStream::new(16_384).next(&mut Cursor::new(vec![0x07, 0, 0, 0, 0, 1, 0])).unwrap_err();

        assert!(matches!(error, PduStreamError::Invalid(_)), "{error}");
    }
}
