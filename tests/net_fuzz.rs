//! Mutation fuzzing of the DIMSE command sets, PDUs and P-DATA fragments that arrive over the network, in a bounded
//! number of proptest cases so it runs in CI. Neither decoder may panic or allocate what the
//! bytes merely claim, so every input returns a value or an error.

use std::io::Cursor;

use penumbra::ingest::scp::dimse::{decode_command, encode_echo_request, encode_store_request};
use penumbra::ingest::scp::pdu_stream::{read_fragment_into, Incoming, PduStream};
use proptest::prelude::*;

/// Returns a valid C-STORE request command set, the seed the mutations start from.
fn store_command() -> Vec<u8> {
    encode_store_request(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5.6.7").unwrap()
}

/// Returns an A-ASSOCIATE-RQ with one presentation context, as DCMTK's echoscu sends it (abridged).
fn associate_rq() -> Vec<u8> {
    let mut variable = Vec::new();
    variable.extend_from_slice(&[0x00, 0x01, 0x00, 0x00]);
    variable.extend_from_slice(format!("{:<16}", "PENUMBRA").as_bytes());
    variable.extend_from_slice(format!("{:<16}", "ECHOSCU").as_bytes());
    variable.extend_from_slice(&[0u8; 32]);
    let application_context = b"1.2.840.10008.3.1.1.1";
    variable.extend_from_slice(&[0x10, 0x00, 0x00, application_context.len() as u8]);
    variable.extend_from_slice(application_context);
    let abstract_syntax = b"1.2.840.10008.1.1";
    let transfer_syntax = b"1.2.840.10008.1.2";
    let mut context = vec![0x01, 0x00, 0x00, 0x00];
    context.extend_from_slice(&[0x30, 0x00, 0x00, abstract_syntax.len() as u8]);
    context.extend_from_slice(abstract_syntax);
    context.extend_from_slice(&[0x40, 0x00, 0x00, transfer_syntax.len() as u8]);
    context.extend_from_slice(transfer_syntax);
    variable.extend_from_slice(&[0x20, 0x00]);
    variable.extend_from_slice(&(context.len() as u16).to_be_bytes());
    variable.extend_from_slice(&context);

    let mut pdu = vec![0x01, 0x00];
    pdu.extend_from_slice(&(variable.len() as u32).to_be_bytes());
    pdu.extend_from_slice(&variable);
    pdu
}

/// Returns a P-DATA-TF PDU with the seed command set in one fragment and a data set in two.
fn p_data() -> Vec<u8> {
    let mut body = Vec::new();
    for (control, data) in [(0x03u8, store_command()), (0x00, vec![0x08; 40]), (0x02, vec![0x10; 24])] {
        body.extend_from_slice(&(data.len() as u32 + 2).to_be_bytes());
        body.extend_from_slice(&[1, control]);
        body.extend_from_slice(&data);
    }
    let mut pdu = vec![0x04, 0x00];
    pdu.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pdu.extend_from_slice(&body);
    pdu
}

/// Reads PDUs and fragments from `bytes` as the SCP does, until the first error, and returns
/// the number of fragments read.
fn read_stream(bytes: &[u8]) -> usize {
    let mut stream = Cursor::new(bytes);
    let mut pdus = PduStream::new(16_384);
    let mut fragments = 0;
    while let Ok(incoming) = pdus.next(&mut stream) {
        if let Incoming::Fragment(fragment) = incoming {
            let mut buffer = Vec::new();
            if read_fragment_into(&mut stream, fragment.len, &mut buffer).is_err() {
                break;
            }
            fragments += 1;
        }
    }
    fragments
}

/// Applies byte flips, a truncation and an insertion drawn by proptest.
fn mutate(mut bytes: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>, insert: Option<(usize, Vec<u8>)>) -> Vec<u8> {
    for &(position, value) in flips {
        if !bytes.is_empty() {
            let index = position % bytes.len();
            bytes[index] ^= value;
        }
    }
    if let Some((position, extra)) = insert {
        let index = position % (bytes.len() + 1);
        bytes.splice(index..index, extra);
    }
    if let Some(length) = cut {
        bytes.truncate(length % (bytes.len() + 1));
    }
    bytes
}

#[test]
fn seeds_decode() {
    let command = decode_command(&store_command()).expect("the seed command set decodes");
    assert_eq!(command.message_id, 7);
    decode_command(&encode_echo_request(3).unwrap()).expect("an echo request decodes");
    let pdu = dicom_ul::pdu::read_pdu(&associate_rq()[..], 16384, false).expect("the seed PDU parses");
    assert!(matches!(pdu, Some(dicom_ul::Pdu::AssociationRQ(_))), "{pdu:?}");
    assert_eq!(read_stream(&p_data()), 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn command_decoding_never_panics(
        flips in prop::collection::vec((any::<usize>(), 1u8..=255), 0..8),
        cut in prop::option::of(any::<usize>()),
        insert in prop::option::of((any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))),
    ) {
        let bytes = mutate(store_command(), &flips, cut, insert);
        let _ = decode_command(&bytes);
    }

    #[test]
    fn pdu_reading_never_panics(
        flips in prop::collection::vec((any::<usize>(), 1u8..=255), 0..8),
        cut in prop::option::of(any::<usize>()),
        insert in prop::option::of((any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))),
    ) {
        let bytes = mutate(associate_rq(), &flips, cut, insert);
        let _ = dicom_ul::pdu::read_pdu(&bytes[..], 16384, false);
    }

    #[test]
    fn pdu_stream_never_panics(
        flips in prop::collection::vec((any::<usize>(), 1u8..=255), 0..8),
        cut in prop::option::of(any::<usize>()),
        insert in prop::option::of((any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))),
    ) {
        let bytes = mutate(p_data(), &flips, cut, insert);
        read_stream(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_command(&bytes);
        let _ = dicom_ul::pdu::read_pdu(&bytes[..], 16384, true);
        read_stream(&bytes);
    }
}
