//! `penumbra check-config`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("penumbra check-config: not built yet");
    ExitCode::FAILURE
}
