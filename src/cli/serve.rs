//! `penumbra serve`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("penumbra serve: not built yet");
    ExitCode::FAILURE
}
