//! `penumbra run`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("penumbra run: not built yet");
    ExitCode::FAILURE
}
