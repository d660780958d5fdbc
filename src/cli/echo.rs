//! `penumbra echo`: sends a C-ECHO to a DICOM node and prints the result.

use std::process::ExitCode;
use std::time::Duration;

use crate::outbox::scu::{self, ScuTarget};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Calling AE title (this node).
    #[arg(long, default_value = "PENUMBRA")]
    pub ae_title: String,
    /// Called AE title (the remote node).
    #[arg(long, default_value = "ANY-SCP")]
    pub called_ae: String,
    /// Timeout for connecting and for each network read or write, in seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout_s: u64,
    /// Remote node as HOST:PORT.
    pub address: String,
}

/// Runs `penumbra echo`, which exits 0 only when the C-ECHO-RSP status is 0x0000.
pub fn run(args: Args) -> ExitCode {
    let target = ScuTarget {
        address: args.address.clone(),
        called_ae_title: args.called_ae,
        calling_ae_title: args.ae_title,
        max_pdu_length: 16_384,
        timeout: Duration::from_secs(args.timeout_s.max(1)),
    };
    match scu::echo(&target) {
        Ok(0) => {
            println!("C-ECHO to {} succeeded (status 0x0000)", args.address);
            ExitCode::SUCCESS
        }
        Ok(code) => {
            println!("C-ECHO to {} failed: status 0x{code:04X}", args.address);
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("C-ECHO to {} failed: {err}", args.address);
            ExitCode::FAILURE
        }
    }
}
