//! One association of the C-STORE SCP: negotiation, the DIMSE message loop and the turn of each
//! received data set into a Part 10 file for the sink.

use std::net::{SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use dicom_ul::association::server::{AccessControl, DefaultNegotiation};
use dicom_ul::association::{Association, ServerAssociation};
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextResultReason,
    UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};

use super::dimse::{self, status, Command};
use super::pdu_stream::{read_fragment_into, skip_fragment, Fragment, Incoming, PduStream};
use super::placement::Placer;
use super::{sop, Completion, InstanceIds, InstanceSink, ScpConfig, SinkError, StoreOutcome};

/// Implementation Class UID written into the File Meta of every file the SCP builds.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.121697579399570276385947394069064363992";
/// Implementation Version Name written next to it (at most 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = "PENUMBRA_0_1";

/// State shared by every association of one SCP.
pub(super) struct AssociationContext {
    pub(super) config: ScpConfig,
    sink: Arc<dyn InstanceSink>,
    options: ServerAssociationOptions<'static, AeAccessControl, DefaultNegotiation>,
}

impl AssociationContext {
    pub(super) fn new(config: ScpConfig, sink: Arc<dyn InstanceSink>) -> Self {
        let access = AeAccessControl {
            allowed_calling_ae: config
                .allowed_calling_ae
                .iter()
                .map(|ae| ae.trim().to_string())
                .collect(),
        };

        // NOTE: promiscuous mode accepts every abstract syntax at negotiation, so that a storage
        // class the SCP does not keep gets the C-STORE status 0x0122 (SOP class not supported)
        // instead of a silent "no presentation context" on the sender's side.
        let mut options = ServerAssociationOptions::new()
            .ae_access_control(access)
            .ae_title(config.ae_title.trim().to_string())
            .with_abstract_syntax(dicom_dictionary_std::uids::VERIFICATION)
            .promiscuous(true)
            .max_pdu_length(config.max_pdu_length)
            .read_timeout(config.artim_timeout)
            .write_timeout(config.artim_timeout);
        for ts in sop::TRANSFER_SYNTAXES {
            options = options.with_transfer_syntax(*ts);
        }

        AssociationContext {
            config,
            sink,
            options,
        }
    }
}

/// Rejects a called AE title other than ours (reason 7) and, when the allow-list is not empty,
/// a calling AE title outside it (reason 3), both permanently (PS3.8 section 9.3.4).
struct AeAccessControl {
    allowed_calling_ae: Vec<String>,
}

impl AccessControl for AeAccessControl {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if dimse::trim_padding(called_ae_title) != dimse::trim_padding(this_ae_title) {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        let calling = dimse::trim_padding(calling_ae_title);
        if !self.allowed_calling_ae.is_empty()
            && !self.allowed_calling_ae.iter().any(|ae| ae == calling)
        {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Counts kept for the one INFO line that closes an association.
#[derive(Default)]
struct Tally {
    stored: usize,
    failed: usize,
    echoes: usize,
}

/// Serves one connection from negotiation to release, abort or timeout.
pub(super) fn serve(stream: TcpStream, peer: SocketAddr, context: &AssociationContext) {
    let span =
        tracing::info_span!("association", peer_addr = %peer, peer_ae = tracing::field::Empty);
    let _entered = span.enter();
    let started = Instant::now();

    let mut association = match context.options.establish(stream) {
        Ok(association) => association,
        Err(err) => {
            tracing::info!(error = %err, "Association rejected or failed during negotiation");
            return;
        }
    };
    span.record("peer_ae", association.peer_ae_title());
    log_negotiation(&association);

    let idle = Some(context.config.idle_timeout);
    if let Err(err) = association
        .inner_stream()
        .set_read_timeout(idle)
        .and_then(|()| association.inner_stream().set_write_timeout(idle))
    {
        tracing::warn!(error = %err, "Failed to set the idle timeout; closing the association");
        let _ = association.abort();
        return;
    }

    let mut receiver = Receiver::new(association.peer_ae_title().to_string());
    let ending = std::thread::scope(|scope| {
        let mut placer = Placer::start(scope);
        let ending = receive_loop(&mut association, &mut receiver, context, &placer);

        // Every acknowledged instance is in the spool before the association ends.
        placer.finish();
        ending
    });
    match ending {
        Ending::Released => {
            let _ = association.send(&Pdu::ReleaseRP);
        }
        Ending::AbortedByPeer => {}
        Ending::Failed(_) => {
            let _ = association.abort();
        }
    }

    let tally = &receiver.tally;
    let duration_s = started.elapsed().as_secs_f64();
    match ending {
        Ending::Failed(reason) => {
            tracing::info!(stored = tally.stored, failed = tally.failed, echoes = tally.echoes, duration_s, reason = %reason, "Association aborted")
        }
        Ending::AbortedByPeer => tracing::info!(
            stored = tally.stored,
            failed = tally.failed,
            echoes = tally.echoes,
            duration_s,
            "Association aborted by peer"
        ),
        Ending::Released => tracing::info!(
            stored = tally.stored,
            failed = tally.failed,
            echoes = tally.echoes,
            duration_s,
            "Association released"
        ),
    }
}

fn log_negotiation(association: &ServerAssociation<TcpStream>) {
    for context in association.presentation_contexts() {
        tracing::debug!(
            id = context.id,
            abstract_syntax = %context.abstract_syntax,
            transfer_syntax = %context.transfer_syntax,
            result = ?context.reason,
            "Presentation context negotiated"
        );
    }
}

enum Ending {
    Released,
    AbortedByPeer,
    /// The SCP aborts: timeout, dropped connection or a protocol violation.
    Failed(String),
}

fn receive_loop<'c>(
    association: &mut ServerAssociation<TcpStream>,
    receiver: &mut Receiver,
    context: &'c AssociationContext,
    placer: &Placer<'_, 'c>,
) -> Ending {
    let mut pdus = PduStream::new(context.config.max_pdu_length);
    loop {
        let incoming = match pdus.next(association.inner_stream()) {
            Ok(incoming) => incoming,
            Err(err) => return Ending::Failed(format!("receive failed: {err}")),
        };
        match incoming {
            Incoming::Fragment(fragment) => {
                if let Err(reason) = receiver.on_fragment(fragment, association, context, placer) {
                    return Ending::Failed(reason);
                }
            }
            Incoming::Pdu(Pdu::ReleaseRQ) => return Ending::Released,
            Incoming::Pdu(Pdu::AbortRQ { .. }) => return Ending::AbortedByPeer,
            Incoming::Pdu(other) => {
                return Ending::Failed(format!("unexpected pdu: {}", other.short_description()))
            }
        }
    }
}

/// A C-STORE (or other request with a data set) whose data set is still arriving.
struct Transfer {
    presentation_context_id: u8,
    command: Command,
    /// Transfer syntax accepted for the presentation context, without padding.
    transfer_syntax: String,
    /// The Part 10 file being built, from `file[lead..]`: preamble and File Meta (up to
    /// `data_start`), then the data set fragments as they arrive.
    file: Vec<u8>,
    /// Filler before the file, so that the file starts on a 4 KiB boundary in memory and the
    /// intake journal can write it without copying it.
    lead: usize,
    /// Offset of the data set in `file`; 0 when the File Meta could not be built from the
    /// command, so that it is built after the data set has been checked.
    data_start: usize,
    /// Status decided before the data set arrived; its fragments are then discarded.
    rejection: Option<(u16, String)>,
}

/// Maximum length of a command set, in bytes. A C-STORE-RQ takes about 200 bytes, so the limit
/// only stops a peer from growing the buffer without end.
const MAX_COMMAND_LEN: usize = 64 << 10;

/// Largest buffer capacity an association keeps for its next instance, in bytes. A larger one
/// (a big multi-frame instance) is freed once the instance is stored.
const MAX_KEPT_BUFFER: usize = 16 << 20;

/// Capacity a new instance buffer starts with, in bytes: a 512x512 CT image with its File
/// Meta fits, so that the buffer rarely moves (and loses its alignment) while data arrives.
const INITIAL_BUFFER: usize = 1 << 20;

/// Memory alignment of the file in an instance buffer, the block size of direct writes.
const FILE_ALIGNMENT: usize = 4096;

/// Reassembles command and data fragments (PS3.8 annex E) into DIMSE messages.
struct Receiver {
    calling_ae_title: String,
    command_bytes: Vec<u8>,
    transfer: Option<Transfer>,
    /// Buffer of the previous instance, reused so that each instance does not grow a new one.
    spare_buffer: Vec<u8>,
    tally: Tally,
}

impl Receiver {
    fn new(calling_ae_title: String) -> Self {
        Receiver {
            calling_ae_title,
            command_bytes: Vec::new(),
            transfer: None,
            spare_buffer: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Reads one PDV from the association's stream and acts on it. Returns a reason only for
    /// protocol violations and connection failures, which end the association.
    fn on_fragment<'c>(
        &mut self,
        fragment: Fragment,
        association: &mut ServerAssociation<TcpStream>,
        context: &'c AssociationContext,
        placer: &Placer<'_, 'c>,
    ) -> Result<(), String> {
        if fragment.is_command {
            self.on_command_fragment(fragment, association, context, placer)
        } else {
            self.on_data_fragment(fragment, association, context, placer)
        }
    }

    fn on_command_fragment(
        &mut self,
        fragment: Fragment,
        association: &mut ServerAssociation<TcpStream>,
        context: &AssociationContext,
        placer: &Placer<'_, '_>,
    ) -> Result<(), String> {
        if self.transfer.is_some() {
            return Err(
                "command fragment received while a data set was still arriving".to_string(),
            );
        }
        if self.command_bytes.len() + fragment.len > MAX_COMMAND_LEN {
            return Err(format!("command set longer than {MAX_COMMAND_LEN} bytes"));
        }
        read_fragment_into(association.inner_stream(), fragment.len, &mut self.command_bytes)
            .map_err(|err| format!("receive failed: {err}"))?;
        if !fragment.is_last {
            return Ok(());
        }

        let bytes = std::mem::take(&mut self.command_bytes);
        let command = dimse::decode_command(&bytes).map_err(|err| err.to_string())?;
        let pc_id = fragment.presentation_context_id;

        if command.has_data_set {
            if self.spare_buffer.capacity() == 0 {
                self.spare_buffer = placer.returned_buffer().unwrap_or_default();
            }
            self.transfer = Some(self.start_transfer(command, pc_id, association, context));
            return Ok(());
        }

        if command.command_field == dimse::C_ECHO_RQ {
            self.tally.echoes += 1;
            tracing::debug!(message_id = command.message_id, "C-ECHO received");
            return respond(association, pc_id, &command, status::SUCCESS, None);
        }
        tracing::debug!(
            command_field = command.command_field,
            "Unsupported DIMSE command"
        );
        respond(
            association,
            pc_id,
            &command,
            status::UNRECOGNIZED_OPERATION,
            Some("only C-ECHO and C-STORE are supported"),
        )
    }

    /// Prepares the reception of a data set: an early rejection status, or a buffer that starts
    /// with the preamble and File Meta built from the command, so that the data set is never
    /// copied after it arrived.
    fn start_transfer(
        &mut self,
        command: Command,
        pc_id: u8,
        association: &ServerAssociation<TcpStream>,
        context: &AssociationContext,
    ) -> Transfer {
        let transfer_syntax = accepted_transfer_syntax(association, pc_id);
        let mut rejection = reject_early(&command, context);
        if rejection.is_none() && transfer_syntax.is_none() {
            rejection = Some((
                status::CANNOT_UNDERSTAND,
                "data set sent on a presentation context that was not accepted".to_string(),
            ));
        }

        let mut file = std::mem::take(&mut self.spare_buffer);
        file.clear();
        let transfer_syntax = transfer_syntax.unwrap_or_default();
        let mut lead = 0;
        if rejection.is_some() {
            file = Vec::new();
        } else {
            file.reserve(INITIAL_BUFFER);
            lead = file.as_ptr().align_offset(FILE_ALIGNMENT);
            file.resize(lead, 0);
            if write_part10_header(&mut file, &command, &transfer_syntax, &self.calling_ae_title).is_err() {
                // The error is reported after the data set is checked, because a UID mismatch
                // (0xA900) is reported first.
                file.clear();
                lead = 0;
            }
        }
        Transfer {
            presentation_context_id: pc_id,
            command,
            transfer_syntax,
            data_start: file.len(),
            lead,
            file,
            rejection,
        }
    }

    fn on_data_fragment<'c>(
        &mut self,
        fragment: Fragment,
        association: &mut ServerAssociation<TcpStream>,
        context: &'c AssociationContext,
        placer: &Placer<'_, 'c>,
    ) -> Result<(), String> {
        let Some(transfer) = self.transfer.as_mut() else {
            return Err("data fragment received without a preceding command".to_string());
        };
        if transfer.presentation_context_id != fragment.presentation_context_id {
            return Err(format!(
                "data fragment on presentation context {} while the command used {}",
                fragment.presentation_context_id, transfer.presentation_context_id
            ));
        }
        let stream = association.inner_stream();
        let read = if transfer.rejection.is_none() {
            // NOTE: the whole data set is kept in memory until its last fragment arrives, so the
            // largest instance accepted is bounded only by available memory.
            read_fragment_into(stream, fragment.len, &mut transfer.file)
        } else {
            skip_fragment(stream, fragment.len)
        };
        read.map_err(|err| format!("receive failed: {err}"))?;
        if !fragment.is_last {
            return Ok(());
        }

        let Some(mut transfer) = self.transfer.take() else {
            return Err("data set state lost".to_string());
        };
        let file_len = transfer.file.len() - transfer.lead;
        if transfer.data_start > 0 {
            // Zeros up to the next block boundary let the journal write the file as it lies.
            let padded = file_len.div_ceil(FILE_ALIGNMENT) * FILE_ALIGNMENT;
            transfer.file.resize(transfer.lead + padded, 0);
        }
        let (code, comment, completion) = match &transfer.rejection {
            Some((code, comment)) => (*code, comment.clone(), None),
            None => store_instance(&transfer, file_len, &self.calling_ae_title, context),
        };

        if status::is_stored(code) {
            self.tally.stored += 1;
            tracing::debug!(sop_instance_uid = %transfer.command.affected_sop_instance_uid, "Instance stored");
        } else {
            self.tally.failed += 1;
            tracing::warn!(
                sop_instance_uid = %transfer.command.affected_sop_instance_uid,
                status = format_args!("0x{code:04X}"),
                reason = %comment,
                "C-STORE failed"
            );
        }
        let comment = (!status::is_stored(code)).then_some(comment);
        let sent = respond(
            association,
            transfer.presentation_context_id,
            &transfer.command,
            code,
            comment.as_deref(),
        );
        // The instance is durable already, so it is placed even when the response failed.
        let file = transfer.lead..transfer.lead + file_len;
        let reusable = match completion {
            Some(complete) => placer.place(complete, transfer.file, file),
            None => Some(transfer.file),
        };
        if let Some(buffer) = reusable.or_else(|| placer.returned_buffer()) {
            if buffer.capacity() <= MAX_KEPT_BUFFER {
                self.spare_buffer = buffer;
            }
        }
        sent
    }
}

/// Decides, from the command alone, a status that makes buffering the data set pointless.
fn reject_early(command: &Command, context: &AssociationContext) -> Option<(u16, String)> {
    if command.command_field != dimse::C_STORE_RQ {
        return Some((
            status::UNRECOGNIZED_OPERATION,
            "only C-ECHO and C-STORE are supported".to_string(),
        ));
    }
    if !sop::is_storage_class_supported(&command.affected_sop_class_uid) {
        return Some((
            status::SOP_CLASS_NOT_SUPPORTED,
            format!(
                "sop class {} is not accepted",
                command.affected_sop_class_uid
            ),
        ));
    }
    let free = context.sink.free_disk_bytes()?;
    if free < context.config.min_free_disk_bytes {
        return Some((
            status::OUT_OF_RESOURCES,
            format!(
                "free disk {free} bytes below the minimum {}",
                context.config.min_free_disk_bytes
            ),
        ));
    }
    None
}

fn accepted_transfer_syntax(association: &ServerAssociation<TcpStream>, id: u8) -> Option<String> {
    association
        .presentation_contexts()
        .iter()
        .find(|pc| pc.id == id && pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| dimse::trim_padding(&pc.transfer_syntax).to_string())
}

fn respond(
    association: &mut ServerAssociation<TcpStream>,
    pc_id: u8,
    command: &Command,
    code: u16,
    comment: Option<&str>,
) -> Result<(), String> {
    let bytes = dimse::encode_response(command, code, comment).map_err(|err| err.to_string())?;
    let pdu = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: bytes,
        }],
    };
    association
        .send(&pdu)
        .map_err(|err| format!("failed to send the response: {err}"))
}

/// Checks a complete data set, builds its Part 10 file and hands it to the sink. `file_len` is
/// the length of the file in `transfer.file` after the lead. Returns the C-STORE status, a
/// reason for the log and Error Comment, and the sink's completion, which must run with the
/// file after the response.
fn store_instance<'a>(
    transfer: &Transfer,
    file_len: usize,
    calling_ae: &str,
    context: &'a AssociationContext,
) -> (u16, String, Option<Completion<'a>>) {
    let data = &transfer.file[transfer.data_start..transfer.lead + file_len];
    let ids = match identify(&transfer.command, data, &transfer.transfer_syntax, calling_ae) {
        Ok(ids) => ids,
        Err((code, comment)) => return (code, comment, None),
    };

    // The usual case: the buffer starts with the File Meta built from the command, so the sink
    // may finish the store from it after the response.
    let stored = if transfer.data_start > 0 {
        context.sink.store_durable(&ids, &transfer.file[transfer.lead..], file_len)
    } else {
        let mut file = Vec::with_capacity(data.len() + 512);
        if let Err(err) = write_part10_header(&mut file, &transfer.command, &ids.transfer_syntax_uid, calling_ae) {
            return (
                status::CANNOT_UNDERSTAND,
                format!("failed to build the file meta group: {err}"),
                None,
            );
        }
        file.extend_from_slice(data);
        context.sink.store(&ids, &file).map(|outcome| (outcome, None))
    };

    match stored {
        Ok((StoreOutcome::Stored | StoreOutcome::Duplicate, completion)) => (status::SUCCESS, String::new(), completion),
        Ok((StoreOutcome::Conflict, completion)) => {
            tracing::warn!(sop_instance_uid = %ids.sop_instance_uid, "Instance conflicts with a stored one of the same SOP Instance UID; kept apart");
            (status::SUCCESS, String::new(), completion)
        }
        Err(err @ SinkError::Invalid(_)) => (status::CANNOT_UNDERSTAND, err.to_string(), None),
        Err(err) => (status::OUT_OF_RESOURCES, err.to_string(), None),
    }
}

/// Parses the data set and checks its SOP Class and Instance UIDs against the command.
fn identify(
    command: &Command,
    data: &[u8],
    ts_uid: &str,
    calling_ae: &str,
) -> Result<InstanceIds, (u16, String)> {
    if TransferSyntaxRegistry.get(ts_uid).is_none() {
        return Err((
            status::CANNOT_UNDERSTAND,
            format!("transfer syntax {ts_uid} is unknown"),
        ));
    }

    // A decoder bug must not take the association down with it, so a panic counts as a parse
    // failure of this one data set.
    let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| parse_data_set(data, ts_uid)));
    let object = match parsed {
        Ok(Ok(object)) => object,
        Ok(Err(reason)) => {
            return Err((
                status::CANNOT_UNDERSTAND,
                format!("data set cannot be parsed: {reason}"),
            ))
        }
        Err(_) => {
            return Err((
                status::CANNOT_UNDERSTAND,
                "data set cannot be parsed: decoder panicked".to_string(),
            ))
        }
    };

    let sop_class_uid = read_uid(&object, tags::SOP_CLASS_UID);
    let sop_instance_uid = read_uid(&object, tags::SOP_INSTANCE_UID);
    if sop_class_uid.as_deref() != Some(command.affected_sop_class_uid.as_str()) {
        return Err((
            status::DATA_SET_DOES_NOT_MATCH,
            format!(
                "sop class {:?} in data set differs from command {}",
                sop_class_uid.unwrap_or_default(),
                command.affected_sop_class_uid
            ),
        ));
    }
    if sop_instance_uid.as_deref() != Some(command.affected_sop_instance_uid.as_str()) {
        return Err((
            status::DATA_SET_DOES_NOT_MATCH,
            format!(
                "sop instance {:?} in data set differs from command",
                sop_instance_uid.unwrap_or_default()
            ),
        ));
    }

    let (number_of_temporal_positions, image_position_patient) =
        crate::ingest::identify::frame_layout(&object);
    Ok(InstanceIds {
        sop_class_uid: command.affected_sop_class_uid.clone(),
        sop_instance_uid: command.affected_sop_instance_uid.clone(),
        study_instance_uid: read_uid(&object, tags::STUDY_INSTANCE_UID),
        series_instance_uid: read_uid(&object, tags::SERIES_INSTANCE_UID),
        transfer_syntax_uid: ts_uid.to_string(),
        calling_ae_title: calling_ae.to_string(),
        number_of_temporal_positions,
        image_position_patient,
    })
}

/// Parses the attributes of a data set that the SCP reads. Pixel Data is stored as received and
/// never decoded, so only its declared length is checked and parsing stops before it. The check
/// of every declared length and of the sequence depth runs before dicom-object parses, because
/// dicom-object allocates declared lengths before reading them and recurses once per sequence.
/// A deflated data set is inflated (up to 1 GiB) and checked the same way.
fn parse_data_set(data: &[u8], ts_uid: &str) -> Result<InMemDicomObject, String> {
    use crate::ingest::identify::{parse_data_set_header, IdentifyError};

    parse_data_set_header(data, ts_uid).map_err(|err| match err {
        IdentifyError::Unparseable(reason) => reason,
        other => other.to_string(),
    })
}

fn read_uid(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = object.get(tag)?.to_str().ok()?;
    let trimmed = dimse::trim_padding(&value);
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

/// Appends the start of a Part 10 file to `file`: 128-byte preamble, "DICM" and the File Meta
/// group, with the SOP UIDs of the command. The data set bytes follow exactly as received,
/// still deflated for Deflated Explicit VR Little Endian. The file is stored only once the data
/// set's UIDs agree with the command's.
fn write_part10_header(
    file: &mut Vec<u8>,
    command: &Command,
    transfer_syntax: &str,
    calling_ae: &str,
) -> Result<(), dicom_object::meta::Error> {
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(command.affected_sop_class_uid.as_str())
        .media_storage_sop_instance_uid(command.affected_sop_instance_uid.as_str())
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    if !calling_ae.is_empty() {
        builder = builder.source_application_entity_title(calling_ae);
    }
    let meta = builder.build()?;

    file.extend_from_slice(&[0u8; 128]);
    file.extend_from_slice(b"DICM");
    meta.write(file)
}
