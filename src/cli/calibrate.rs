//! `penumbra calibrate-confidence`: fits the logistic combination of the confidence components on
//! the studies of one or more `penumbra eval --json` files and writes it for a model folder.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Deserialize;

use crate::confidence::calibration::{CalibrationSample, ScoreCalibration, CALIBRATION_FILE, DEFAULT_L2};
use crate::evaluation::POOR_CORE_DICE;

/// The documented held-out seed of `penumbra eval`, which a fit must never see.
pub(super) const HELD_OUT_SEED: u64 = 1001;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON file written by `penumbra eval --json`; repeat for several seeds.
    #[arg(long = "eval", value_name = "FILE", required = true)]
    pub eval_files: Vec<PathBuf>,
    /// Model folder to write `confidence-calibration.json` into.
    #[arg(long)]
    pub model: PathBuf,
    /// Seed of the held-out evaluation set; eval files of this seed are rejected.
    #[arg(long, default_value_t = HELD_OUT_SEED)]
    pub held_out_seed: u64,
    /// Penalty on the squared standardized weights, relative to the mean log loss, in (0, 1].
    #[arg(long, default_value_t = DEFAULT_L2)]
    pub l2: f64,
}

/// The parts of a `penumbra eval` JSON file the fit reads.
#[derive(Debug, Deserialize)]
struct EvalFile {
    seed: u64,
    studies: Vec<EvalStudy>,
}

#[derive(Debug, Deserialize)]
struct EvalStudy {
    core_dice: f64,
    confidence: EvalConfidence,
}

#[derive(Debug, Deserialize)]
struct EvalConfidence {
    components: BTreeMap<String, f64>,
    assessable: bool,
}

pub fn run(args: Args) -> ExitCode {
    match calibrate(&args) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("penumbra calibrate-confidence: {message}");
            ExitCode::FAILURE
        }
    }
}

fn calibrate(args: &Args) -> Result<String, String> {
    let mut samples = Vec::new();
    let mut seeds = Vec::new();
    let mut unassessable = 0;
    for path in &args.eval_files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let eval: EvalFile = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a `penumbra eval --json` file: {e}", path.display()))?;
        if eval.seed == args.held_out_seed {
            return Err(format!(
                "{} was evaluated on the held-out seed {}: fit on other seeds so the held-out AUROC stays honest",
                path.display(),
                eval.seed
            ));
        }
        seeds.push(eval.seed);

        // A study that is not assessable scores 0 whatever the combination, so it carries no
        // information for the fit.
        for study in eval.studies {
            if !study.confidence.assessable {
                unassessable += 1;
                continue;
            }
            samples.push(CalibrationSample { components: study.confidence.components, good: study.core_dice >= POOR_CORE_DICE });
        }
    }

    let calibration = ScoreCalibration::fit(&samples, args.l2, POOR_CORE_DICE, seeds).map_err(|e| e.to_string())?;
    let path = args.model.join(CALIBRATION_FILE);
    calibration.write(&path).map_err(|e| e.to_string())?;
    Ok(format!(
        "fitted on {} assessable studies ({} poor; {unassessable} not assessable left out), written to {}",
        calibration.fitted_studies,
        calibration.fitted_poor,
        path.display()
    ))
}
