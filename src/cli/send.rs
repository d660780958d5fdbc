//! `penumbra send`: sends DICOM files, or every file under folders, by C-STORE and prints a
//! JSON summary with the status of each file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::outbox::scu::{self, Part10File, ScuTarget, SendOutcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Calling AE title (this node).
    #[arg(long, default_value = "PENUMBRA")]
    pub ae_title: String,
    /// Called AE title (the remote node).
    #[arg(long, default_value = "ANY-SCP")]
    pub called_ae: String,
    /// Timeout for connecting and for each network read or write, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
    /// Remote node as HOST:PORT.
    pub address: String,
    /// Files or folders (searched recursively) to send.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Serialize)]
struct FileResult {
    path: String,
    sop_instance_uid: Option<String>,
    /// DIMSE status as `0xHHHH`, absent when no response arrived.
    status: Option<String>,
    ok: bool,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    address: String,
    sent: usize,
    failed: usize,
    files: Vec<FileResult>,
}

/// Runs `penumbra send`; exits 0 only when every file was stored by the peer.
pub fn run(args: Args) -> ExitCode {
    let target = ScuTarget {
        address: args.address.clone(),
        called_ae_title: args.called_ae,
        calling_ae_title: args.ae_title,
        max_pdu_length: 131_072,
        timeout: Duration::from_secs(args.timeout_s.max(1)),
    };

    let mut results = Vec::new();
    let mut files = Vec::new();
    for path in collect_files(&args.paths, &mut results) {
        match Part10File::read(&path) {
            Ok(file) => files.push(file),
            Err(err) => results.push(failure(&path, None, err.to_string())),
        }
    }

    for (file, outcome) in files.iter().zip(scu::store(&target, &files)) {
        results.push(file_result(file, outcome));
    }

    let sent = results.iter().filter(|r| r.ok).count();
    let summary = Summary {
        address: args.address,
        sent,
        failed: results.len() - sent,
        files: results,
    };
    match serde_json::to_string_pretty(&summary) {
        Ok(json) => println!("{json}"),
        Err(err) => eprintln!("penumbra send: failed to print the summary: {err}"),
    }
    if summary.failed == 0 && summary.sent > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Expands folders recursively into their files, sorted by path. Unreadable paths become
/// failures in `results`.
fn collect_files(paths: &[PathBuf], results: &mut Vec<FileResult>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        walk(path, &mut files, results);
    }
    files.sort();
    files
}

fn walk(path: &Path, files: &mut Vec<PathBuf>, results: &mut Vec<FileResult>) {
    if path.is_file() {
        files.push(path.to_path_buf());
        return;
    }
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                walk(&entry.path(), files, results);
            }
        }
        Err(err) => results.push(failure(path, None, format!("cannot read: {err}"))),
    }
}

fn file_result(file: &Part10File, outcome: SendOutcome) -> FileResult {
    let ok = outcome.is_stored();
    let (status, error) = match outcome {
        SendOutcome::Status {
            code,
            error_comment,
        } => (
            Some(format!("0x{code:04X}")),
            if ok {
                None
            } else {
                error_comment.or(Some("failure status".to_string()))
            },
        ),
        SendOutcome::NoPresentationContext => (
            None,
            Some(
                "no presentation context accepted for this sop class and transfer syntax"
                    .to_string(),
            ),
        ),
        SendOutcome::NotSent { message } | SendOutcome::AssociationFailed { message, .. } => {
            (None, Some(message))
        }
    };
    FileResult {
        path: file.path.display().to_string(),
        sop_instance_uid: Some(file.sop_instance_uid.clone()),
        status,
        ok,
        error,
    }
}

fn failure(path: &Path, sop_instance_uid: Option<String>, error: String) -> FileResult {
    FileResult {
        path: path.display().to_string(),
        sop_instance_uid,
        status: None,
        ok: false,
        error: Some(error),
    }
}
