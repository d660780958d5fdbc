//! The `penumbra` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = penumbra::cli::Cli::parse();
    penumbra::cli::run(cli)
}
