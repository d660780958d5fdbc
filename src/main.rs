//! The `penumbra` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    penumbra::cpu_tuning::apply();
    let cli = penumbra::cli::Cli::parse();
    penumbra::cli::run(cli)
}
