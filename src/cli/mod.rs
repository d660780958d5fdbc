//! The `penumbra` command line: one module per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod ablate;
pub mod bench;
pub mod calibrate;
pub mod check_config;
pub mod echo;
pub mod eval;
pub mod eval_perfusion;
pub mod fit_thresholds;
pub mod inspect;
pub mod phantom;
pub mod qa;
pub mod run;
pub mod send;
pub mod serve;
pub mod train;

/// Exit code for an invalid configuration (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(name = "penumbra", version, about = "CT perfusion: ischemic core and penumbra segmentation daemon")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: receive studies, process them, export results.
    Serve(serve::Args),
    /// Validate a pipeline.yaml and print every error found.
    CheckConfig(check_config::Args),
    /// Process one study folder to the end without the daemon and print the report as JSON.
    Run(run::Args),
    /// Send a C-ECHO to a DICOM node.
    Echo(echo::Args),
    /// Send every DICOM file of a folder to a DICOM node by C-STORE.
    Send(send::Args),
    /// Print, as JSON, what the decoder makes of a file or folder.
    Inspect(inspect::Args),
    /// Write a synthetic acute-stroke CT perfusion study with its ground truth.
    Phantom(phantom::Args),
    /// Train the residual U-Net on phantom studies and exported QA cases.
    Train(train::Args),
    /// Score the perfusion maps and threshold labels against phantom truth at several noise levels.
    EvalPerfusion(eval_perfusion::Args),
    /// Score a trained U-Net, the threshold labels and the confidence score on held-out phantoms.
    Eval(eval::Args),
    /// Train U-Net variants on the same data and budget and compare them on held-out phantoms.
    Ablate(ablate::Args),
    /// Fit the confidence score's logistic combination on `penumbra eval --json` results.
    CalibrateConfidence(calibrate::Args),
    /// Fit the U-Net's decision thresholds on phantom studies and write them into the model folder.
    FitThresholds(fit_thresholds::Args),
    /// Serve the radiologist QA page on its own, or export reviewed labels as training data.
    Qa(qa::Args),
    /// Time U-Net inference per slice with our kernels or candle's and print one JSON line.
    Bench(bench::Args),
}

/// Returns the exit code of a subcommand's `result`, printing `penumbra COMMAND: message` to
/// standard error on failure.
pub(crate) fn exit_code(command: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("penumbra {command}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Run(args) => run::run(args),
        Command::Echo(args) => echo::run(args),
        Command::Send(args) => send::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Phantom(args) => phantom::run(args),
        Command::Qa(args) => qa::run(args),
        Command::Train(args) => train::run(args),
        Command::EvalPerfusion(args) => eval_perfusion::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Ablate(args) => ablate::run(args),
        Command::CalibrateConfidence(args) => calibrate::run(args),
        Command::FitThresholds(args) => fit_thresholds::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
