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
        if let pdu_stream::Incoming::Fragment(fragment) = incoming {
            let mut buffer = Vec::new();
            if pdu_stream::read_fragment_into(&mut stream, fragment.len, &mut buffer).is_err() {
                break;
            }
        }
    }
});
