//! Fuzz target over file decoding: every reader of a DICOM file's bytes must return a value or
//! an error for any input, without panicking or allocating what the bytes merely declare.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// The spool's identification of received and watched files, compiled here from its source
/// because it depends only on the dicom-rs crates.
#[path = "../../src/ingest/identify.rs"]
#[allow(dead_code)]
mod identify;

/// Transfer syntaxes tried for the bare data set that a C-STORE delivers.
const DATA_SET_SYNTAXES: [&str; 3] = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"];

fuzz_target!(|data: &[u8]| {
    let _ = penumbra_dicom::read_bytes(data);
    let _ = penumbra_dicom::identify(data);
    let _ = identify::identify(data);
    for syntax in DATA_SET_SYNTAXES {
        let _ = identify::parse_data_set_header(data, syntax);
    }
});
