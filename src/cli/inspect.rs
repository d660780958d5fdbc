//! `penumbra inspect`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("penumbra inspect: not built yet");
    ExitCode::FAILURE
}
