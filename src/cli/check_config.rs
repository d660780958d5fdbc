//! `penumbra check-config`: validates a config file and prints every error found.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, Settings};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file to check.
    #[arg(long, default_value = "pipeline.yaml")]
    pub config: PathBuf,
}

pub fn run(args: Args) -> ExitCode {
    match load_or_report(&args.config) {
        Ok(settings) => {
            println!("{}", summary(&args.config, &settings));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Loads a config file, or prints each error to stderr and returns exit code 78 (`EX_CONFIG`).
/// `serve` and `run` start with this too.
pub fn load_or_report(path: &std::path::Path) -> Result<Settings, ExitCode> {
    config::load(path).map_err(|errors| {
        eprintln!("{}: {} error(s)", path.display(), errors.len());
        for error in &errors {
            eprintln!("  {error}");
        }
        ExitCode::from(super::EXIT_CONFIG)
    })
}

fn summary(path: &std::path::Path, settings: &Settings) -> String {
    format!(
        "{}: valid; data_dir {}, {} watched folder(s), SCP {} on {}, {} export destination(s)",
        path.display(),
        settings.data_dir.display(),
        settings.ingest.watch.folders.len(),
        settings.ingest.scp.ae_title,
        settings.ingest.scp.listen,
        settings.export.destinations.len(),
    )
}
