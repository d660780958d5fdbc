//! Fuzz target over network decoding: dicom-ul's PDU reader and the SCP's PDU stream, with the
//! maximum PDU length the SCP negotiates by default, and the SCP's DIMSE command set decoder.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// The SCP's command set codec, compiled here from its source because it depends only on the
/// dicom-rs crates.
#[path = "../../src/ingest/scp/dimse.rs"]
#[allow(dead_code)]
mod dimse;

/// The SCP's reader of PDUs and P-DATA fragments, compiled from its source likewise.
#[path = "../../src/ingest/scp/pdu_stream.rs"]
#[allow(dead_code)]
mod pdu_stream;

/// Maximum PDU length the SCP accepts by default, in bytes.
const MAX_PDU_LENGTH: u32 = 131_072;

fuzz_target!(|data: &[u8]| {
    let _ = dicom_ul::pdu::read_pdu(data, MAX_PDU_LENGTH, true);
    let _ = dicom_ul::pdu::read_pdu(data, MAX_PDU_LENGTH, false);
    let _ = dimse::decode_command(data);

    let mut stream = std::io::Cursor::new(data);
    let mut pdus = pdu_stream::PduStream::new(MAX_PDU_LENGTH);
    while let Ok(incoming) = pdus.next(&mut stream) {
        let pdu_stream::Incoming::Fragment(fragment) = incoming else {
            continue;
        };
        // The SCP keeps command fragments and, for a rejected data set, skips data fragments.
        let read = if fragment.is_command {
            pdu_stream::read_fragment_into(&mut stream, fragment.len, &mut Vec::new())
        } else {
            pdu_stream::skip_fragment(&mut stream, fragment.len)
        };
        if read.is_err() {
            break;
        }
    }
});
