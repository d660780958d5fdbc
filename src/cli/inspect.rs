//! `penumbra inspect PATH`: prints, as JSON, what the decoder makes of a file or folder.
//!
//! The output lists each series found (classification, shape `(t, z, y, x)`, spacing, value
//! range, transfer syntax, instance count, warnings) and every rejected file or series with its
//! reason. It carries UIDs but no patient attributes.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A DICOM file, or a folder searched recursively.
    pub path: PathBuf,
    /// Print compact JSON on one line instead of indented JSON.
    #[arg(long)]
    pub compact: bool,
}

/// Prints the report; exits 0 when the path could be inspected (even if files were rejected),
/// 1 when it could not be listed.
pub fn run(args: Args) -> ExitCode {
    let report = match penumbra_dicom::inspect::inspect(&args.path) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("penumbra inspect: {err}");
            return ExitCode::FAILURE;
        }
    };
    let json = if args.compact { serde_json::to_string(&report) } else { serde_json::to_string_pretty(&report) };
    match json {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("penumbra inspect: cannot print the report as JSON: {err}");
            ExitCode::FAILURE
        }
    }
}
