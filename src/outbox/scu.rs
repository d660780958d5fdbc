//! C-STORE and C-ECHO as a service class user: the client side shared by the outbox sender and
//! the `penumbra send` and `penumbra echo` subcommands.
//!
//! Data sets go out byte for byte as they sit in their Part 10 files, so each presentation
//! context proposes exactly the file's own transfer syntax and nothing is transcoded.

use std::collections::BTreeSet;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_object::FileMetaTable;
use dicom_ul::association::client::ClientAssociation;
use dicom_ul::pdu::{
    AssociationRJResult, PDataValue, PDataValueType, PresentationContextResultReason,
};
use dicom_ul::{ClientAssociationOptions, Pdu};

use crate::ingest::scp::dimse::{self, trim_padding};

/// Maximum presentation contexts in one association (odd context ids 1 to 255, PS3.8 9.3.2.2).
pub const MAX_PRESENTATION_CONTEXTS: usize = 128;

/// A remote DICOM node and how to reach it.
#[derive(Debug, Clone)]
pub struct ScuTarget {
    /// `host:port`.
    pub address: String,
    pub called_ae_title: String,
    pub calling_ae_title: String,
    /// Maximum PDU length this side receives, in bytes.
    pub max_pdu_length: u32,
    /// Limit for connecting and for each read or write on the socket.
    pub timeout: Duration,
}

/// A Part 10 file read into memory, with the identifiers needed to send it.
#[derive(Debug, Clone)]
pub struct Part10File {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    bytes: Vec<u8>,
    data_set_offset: usize,
}

impl Part10File {
    /// Reads a Part 10 file (with or without the 128-byte preamble).
    ///
    /// # Errors
    ///
    /// [`ScuError::Read`] when the file cannot be read and [`ScuError::NotPart10`] when it has
    /// no File Meta group or lacks one of the identifiers.
    pub fn read(path: &Path) -> Result<Part10File, ScuError> {
        let bytes = std::fs::read(path).map_err(|source| ScuError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Part10File::from_bytes(path, bytes)
    }

    fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Part10File, ScuError> {
        let not_part10 = |reason: String| ScuError::NotPart10 {
            path: path.to_path_buf(),
            reason,
        };

        let start = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
            128
        } else if bytes.starts_with(b"DICM") {
            0
        } else {
            return Err(not_part10("no DICM prefix at byte 128 or 0".to_string()));
        };

        let mut cursor = Cursor::new(&bytes[start..]);
        let meta =
            FileMetaTable::from_reader(&mut cursor).map_err(|err| not_part10(err.to_string()))?;
        let data_set_offset = start + cursor.position() as usize;

        let sop_class_uid = trim_padding(meta.media_storage_sop_class_uid()).to_string();
        let sop_instance_uid = trim_padding(meta.media_storage_sop_instance_uid()).to_string();
        let transfer_syntax_uid = trim_padding(meta.transfer_syntax()).to_string();
        if sop_class_uid.is_empty() || sop_instance_uid.is_empty() || transfer_syntax_uid.is_empty()
        {
            return Err(not_part10(
                "file meta lacks the sop class, sop instance or transfer syntax uid".to_string(),
            ));
        }

        Ok(Part10File {
            path: path.to_path_buf(),
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax_uid,
            bytes,
            data_set_offset,
        })
    }

    /// Returns the data set bytes, exactly as stored after the File Meta group.
    pub fn data_set(&self) -> &[u8] {
        &self.bytes[self.data_set_offset..]
    }
}

/// Failure to read a file, or to establish or use an association.
#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a DICOM Part 10 file: {reason}")]
    NotPart10 { path: PathBuf, reason: String },
    #[error("association with {address} rejected ({}): {reason}", if *.permanent { "permanent" } else { "transient" })]
    Rejected {
        address: String,
        permanent: bool,
        reason: String,
    },
    #[error("association with {address} failed: {message}")]
    Association { address: String, message: String },
    #[error("dimse exchange with {address} failed: {message}")]
    Exchange { address: String, message: String },
}

impl ScuError {
    /// Returns whether sending again later cannot help (a permanent A-ASSOCIATE-RJ).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ScuError::Rejected {
                permanent: true,
                ..
            }
        )
    }
}

/// Result of one C-STORE within an association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Status of the C-STORE-RSP (success, warning or failure).
    Status {
        code: u16,
        error_comment: Option<String>,
    },
    /// The peer accepted no presentation context for this file's SOP class and transfer syntax.
    NoPresentationContext,
    /// The association broke before the response arrived.
    NotSent { message: String },
    /// No association was established; `permanent` for an A-ASSOCIATE-RJ marked permanent.
    AssociationFailed { message: String, permanent: bool },
}

impl SendOutcome {
    /// Returns whether the peer kept the instance (success or a storage warning status).
    pub fn is_stored(&self) -> bool {
        matches!(self, SendOutcome::Status { code, .. } if dimse::status::is_stored(*code))
    }
}

/// Sends a C-ECHO and returns the status of the C-ECHO-RSP.
///
/// # Errors
///
/// [`ScuError::Rejected`] or [`ScuError::Association`] when no association is established and
/// [`ScuError::Exchange`] when the exchange fails.
pub fn echo(target: &ScuTarget) -> Result<u16, ScuError> {
    let options = base_options(target).with_presentation_context(
        dicom_dictionary_std::uids::VERIFICATION,
        vec![
            dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN,
            dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN,
        ],
    );
    let mut association = establish(options, target)?;
    let pc_id = association
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| pc.id)
        .ok_or_else(|| ScuError::Association {
            address: target.address.clone(),
            message: "verification was not accepted".to_string(),
        })?;

    let exchange =
        |association: &mut ClientAssociation<std::net::TcpStream>| -> Result<u16, String> {
            let command = dimse::encode_echo_request(1).map_err(|err| err.to_string())?;
            send_command(association, pc_id, command)?;
            let response = receive_response(association)?;
            response
                .status
                .ok_or_else(|| "response has no status".to_string())
        };
    let result = exchange(&mut association);
    finish(association, result.is_ok());
    result.map_err(|message| ScuError::Exchange {
        address: target.address.clone(),
        message,
    })
}

/// Sends `files` by C-STORE, one association per group of at most
/// [`MAX_PRESENTATION_CONTEXTS`] distinct (SOP class, transfer syntax) pairs, and returns one
/// outcome per file in order. A group whose association fails gets
/// [`SendOutcome::AssociationFailed`] for each of its files, and later groups are still tried.
pub fn store(target: &ScuTarget, files: &[Part10File]) -> Vec<SendOutcome> {
    let mut outcomes = Vec::with_capacity(files.len());
    let mut start = 0;
    while start < files.len() {
        let end = group_end(files, start);
        match store_group(target, &files[start..end]) {
            Ok(group) => outcomes.extend(group),
            Err(err) => {
                let failed = SendOutcome::AssociationFailed {
                    message: err.to_string(),
                    permanent: err.is_permanent(),
                };
                outcomes.extend(std::iter::repeat_n(failed, end - start));
            }
        }
        start = end;
    }
    outcomes
}

/// Returns the end of the longest run from `start` that needs at most
/// [`MAX_PRESENTATION_CONTEXTS`] presentation contexts.
fn group_end(files: &[Part10File], start: usize) -> usize {
    let mut pairs = BTreeSet::new();
    for (index, file) in files.iter().enumerate().skip(start) {
        pairs.insert((
            file.sop_class_uid.as_str(),
            file.transfer_syntax_uid.as_str(),
        ));
        if pairs.len() > MAX_PRESENTATION_CONTEXTS {
            return index;
        }
    }
    files.len()
}

fn store_group(target: &ScuTarget, files: &[Part10File]) -> Result<Vec<SendOutcome>, ScuError> {
    let pairs: BTreeSet<(&str, &str)> = files
        .iter()
        .map(|f| (f.sop_class_uid.as_str(), f.transfer_syntax_uid.as_str()))
        .collect();
    let mut options = base_options(target);
    for (sop_class, ts) in &pairs {
        options = options.with_presentation_context(sop_class.to_string(), vec![ts.to_string()]);
    }
    let mut association = establish(options, target)?;

    let mut outcomes = Vec::with_capacity(files.len());
    let mut broken: Option<String> = None;
    for (index, file) in files.iter().enumerate() {
        if let Some(message) = &broken {
            outcomes.push(SendOutcome::NotSent {
                message: message.clone(),
            });
            continue;
        }
        let Some(pc_id) = find_context(&association, file) else {
            outcomes.push(SendOutcome::NoPresentationContext);
            continue;
        };
        let message_id = (index % usize::from(u16::MAX)) as u16 + 1;
        match store_one(&mut association, pc_id, message_id, file) {
            Ok(outcome) => outcomes.push(outcome),
            Err(message) => {
                outcomes.push(SendOutcome::NotSent {
                    message: message.clone(),
                });
                broken = Some(message);
            }
        }
    }
    finish(association, broken.is_none());
    Ok(outcomes)
}

fn base_options(target: &ScuTarget) -> ClientAssociationOptions<'static> {
    ClientAssociationOptions::new()
        .calling_ae_title(target.calling_ae_title.clone())
        .called_ae_title(target.called_ae_title.clone())
        .max_pdu_length(target.max_pdu_length)
        .connection_timeout(target.timeout)
        .read_timeout(target.timeout)
        .write_timeout(target.timeout)
}

fn establish(
    options: ClientAssociationOptions<'static>,
    target: &ScuTarget,
) -> Result<ClientAssociation<std::net::TcpStream>, ScuError> {
    let mut association = options
        .establish(target.address.as_str())
        .map_err(|err| match err {
            dicom_ul::association::Error::Rejected { association_rj, .. } => ScuError::Rejected {
                address: target.address.clone(),
                permanent: association_rj.result == AssociationRJResult::Permanent,
                reason: association_rj.source.to_string(),
            },
            other => ScuError::Association {
                address: target.address.clone(),
                message: other.to_string(),
            },
        })?;
    // dicom-ul opens the socket itself, so Nagle's algorithm can only be turned off once the
    // association is up. Without it a C-STORE stream slows down but stays correct.
    if let Err(err) = association.inner_stream().set_nodelay(true) {
        tracing::warn!(address = %target.address, error = %err, "Could not set TCP_NODELAY on the association; sending goes on slower");
    }
    Ok(association)
}

fn find_context(
    association: &ClientAssociation<std::net::TcpStream>,
    file: &Part10File,
) -> Option<u8> {
    association
        .presentation_contexts()
        .iter()
        .find(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && trim_padding(&pc.abstract_syntax) == file.sop_class_uid
                && trim_padding(&pc.transfer_syntax) == file.transfer_syntax_uid
        })
        .map(|pc| pc.id)
}

/// Sends one C-STORE-RQ and its data set, then waits for the C-STORE-RSP. An error means the
/// association can no longer be used.
fn store_one(
    association: &mut ClientAssociation<std::net::TcpStream>,
    pc_id: u8,
    message_id: u16,
    file: &Part10File,
) -> Result<SendOutcome, String> {
    let command =
        dimse::encode_store_request(message_id, &file.sop_class_uid, &file.sop_instance_uid)
            .map_err(|err| err.to_string())?;
    send_command(association, pc_id, command)?;

    let mut writer = association.send_pdata(pc_id);
    writer
        .write_all(file.data_set())
        .map_err(|err| format!("failed to send the data set: {err}"))?;
    writer
        .finish()
        .map_err(|err| format!("failed to send the data set: {err}"))?;

    let response = receive_response(association)?;
    if response.message_id_being_responded_to != Some(message_id) {
        return Err(format!(
            "response to message {:?}, expected {message_id}",
            response.message_id_being_responded_to
        ));
    }
    let code = response
        .status
        .ok_or_else(|| "response has no status".to_string())?;
    Ok(SendOutcome::Status {
        code,
        error_comment: response.error_comment.filter(|c| !c.is_empty()),
    })
}

fn send_command(
    association: &mut ClientAssociation<std::net::TcpStream>,
    pc_id: u8,
    command: Vec<u8>,
) -> Result<(), String> {
    let pdu = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: command,
        }],
    };
    association
        .send(&pdu)
        .map_err(|err| format!("failed to send the command: {err}"))
}

/// Collects Command PDVs until the last fragment and decodes the response.
fn receive_response(
    association: &mut ClientAssociation<std::net::TcpStream>,
) -> Result<dimse::Command, String> {
    let mut bytes = Vec::new();
    loop {
        let pdu = association
            .receive()
            .map_err(|err| format!("failed to receive the response: {err}"))?;
        let Pdu::PData { data } = pdu else {
            return Err(format!(
                "expected a response, got {}",
                pdu.short_description()
            ));
        };
        for value in data {
            if value.value_type != PDataValueType::Command {
                return Err("unexpected data fragment in a response".to_string());
            }
            bytes.extend_from_slice(&value.data);
            if value.is_last {
                return dimse::decode_command(&bytes).map_err(|err| err.to_string());
            }
        }
    }
}

/// Releases the association after a clean exchange, aborts it otherwise.
fn finish(association: ClientAssociation<std::net::TcpStream>, clean: bool) {
    let result = if clean {
        association.release()
    } else {
        association.abort()
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "Association did not end cleanly");
    }
}
