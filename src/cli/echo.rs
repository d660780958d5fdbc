//! `penumbra echo`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("penumbra echo: not built yet");
    ExitCode::FAILURE
}
