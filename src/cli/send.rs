//! `penumbra send`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("penumbra send: not built yet");
    ExitCode::FAILURE
}
