//! `penumbra eval`: scores a trained U-Net, the threshold labels and their agreement against the
//! truth of held-out phantom studies, and the calibration of the confidence score on them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use penumbra_model::{Segmenter, DECISION_FILE};
use penumbra_phantom::Matrix;
use serde::Serialize;

use super::eval_perfusion::{fmt, parse_matrix, write_json};
use crate::confidence::calibration::{ScoreCalibration, CALIBRATION_FILE};
use crate::evaluation::{
    calibration, check_held_out, evaluate_model_study_with, held_out_params_of, run_phantom, summarize_classes, Calibration,
    Case, ClassSummary, FailedStudy, ModelStudyEval, DEFAULT_REVIEW_BELOW, MAX_TRAINING_STUDIES, POOR_CORE_DICE, TVERSKY_ALPHA,
    TVERSKY_BETA,
};
use crate::pipeline::confidence::ConfidenceStage;
use crate::telemetry::{init_logging, LogFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folder with `model.safetensors` and `card.json`.
    #[arg(long)]
    pub model: PathBuf,
    /// Held-out phantom studies; their kinds cycle through `--cases`.
    #[arg(long, default_value_t = 12)]
    pub studies: u64,
    /// Kinds of held-out study, comma-separated, cycled in this order: standard, high_noise
    /// (20 mAs), truncated_bolus, motion, small_lesion, no_lesion.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "standard,high_noise,truncated_bolus,motion,small_lesion,no_lesion")]
    pub cases: Vec<Case>,
    /// Tube current-time product of every study, in mAs (the high_noise case keeps 20). Without
    /// it the studies cycle through 190, 150, 100 and 50 mAs as in training.
    #[arg(long)]
    pub noise_mas: Option<f64>,
    /// Seed of the held-out phantoms; it must differ from the training seed in the model card.
    #[arg(long, default_value_t = 1001)]
    pub seed: u64,
    /// In-plane matrix of the phantoms: 128 (1.8 mm pixels) or 256 (0.9 mm, as in training).
    #[arg(long, default_value_t = 256, value_parser = parse_matrix)]
    pub matrix: usize,
    /// Confidence below which a study is flagged for review, as `confidence.review_below`.
    #[arg(long, default_value_t = DEFAULT_REVIEW_BELOW)]
    pub review_below: f64,
    /// Slices per inference batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// File to write every study's scores, the summaries and the calibration to, as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Combine the confidence components with the fixed weights even when the model folder has a
    /// fitted `confidence-calibration.json`.
    #[arg(long)]
    pub no_calibration: bool,
    /// Pick labels by argmax even when the model folder has fitted `decision-thresholds.json`.
    #[arg(long)]
    pub argmax: bool,
}

/// Everything the JSON file holds.
#[derive(Debug, Serialize)]
struct Report {
    model: PathBuf,
    seed: u64,
    matrix: usize,
    /// Kinds of study the set cycled through.
    cases: Vec<Case>,
    /// Tube current-time product of every study but the high-noise ones, when it was fixed.
    noise_mas: Option<f64>,
    tversky_alpha: f64,
    tversky_beta: f64,
    /// `fixed weights`, or the path of the fitted calibration the scores came from.
    confidence_combination: String,
    /// `argmax`, or the fitted decision thresholds the U-Net labels came from.
    labels: String,
    unet: Vec<ClassSummary>,
    threshold: Vec<ClassSummary>,
    agreement: Vec<ClassSummary>,
    calibration: Calibration,
    studies: Vec<ModelStudyEval>,
    /// Studies that the perfusion or a model stage rejected; the calibration leaves them out.
    failed: Vec<FailedStudy>,
}

pub fn run(args: Args) -> ExitCode {
    init_logging(LogFormat::Text);
    super::exit_code("eval", evaluate(&args))
}

fn evaluate(args: &Args) -> Result<(), String> {
    check_args(args)?;
    let matrix = Matrix::from_size(args.matrix).ok_or_else(|| format!("invalid matrix {}", args.matrix))?;
    let (segmenter, labels) = load_model(args)?;
    let (confidence_stage, combination) = confidence_stage(args)?;
    eprintln!("U-Net labels: {labels}");
    eprintln!("confidence combination: {combination}");
    let names: Vec<&str> = args.cases.iter().map(|c| c.name()).collect();
    let noise = args.noise_mas.map_or("190, 150, 100 and 50 mAs in turn".to_owned(), |mas| format!("{mas} mAs"));
    eprintln!("held-out studies: {} ({noise})", names.join(", "));
    let started = Instant::now();

    let mut studies = Vec::new();
    let mut failed = Vec::new();
    for index in 0..args.studies {
        let (case, params) = held_out_params_of(args.seed, index, matrix, &args.cases, args.noise_mas);
        let outcome = run_phantom(&params)
            .and_then(|run| evaluate_model_study_with(case, run, &segmenter, args.batch, &confidence_stage));
        let study = match outcome {
            Ok(study) => study,
            Err(error) => {
                let failure = error.as_failed_study(&params, Some(case)).ok_or_else(|| error.to_string())?;
                eprintln!("study {}/{}: phantom seed {} ({}) failed: {}", index + 1, args.studies, params.seed, case.name(), failure.message);
                failed.push(failure);
                continue;
            }
        };
        eprintln!(
            "study {}/{}: phantom seed {} ({}), core Dice {:.3}, confidence {:.3}",
            index + 1,
            args.studies,
            params.seed,
            case.name(),
            study.core_dice,
            study.confidence.score
        );
        studies.push(study);
    }

    let report = Report {
        model: args.model.clone(),
        seed: args.seed,
        matrix: args.matrix,
        cases: args.cases.clone(),
        noise_mas: args.noise_mas,
        tversky_alpha: TVERSKY_ALPHA,
        tversky_beta: TVERSKY_BETA,
        confidence_combination: combination,
        labels,
        unet: summarize_classes(studies.iter().map(|s| s.unet.as_slice())),
        threshold: summarize_classes(studies.iter().map(|s| s.threshold.as_slice())),
        agreement: summarize_classes(studies.iter().map(|s| s.agreement.as_slice())),
        calibration: calibration(&studies, args.review_below),
        studies,
        failed,
    };
    print!("{}", table(&report));
    println!("{} studies of {m}x{m} in {:.0} s", report.studies.len(), started.elapsed().as_secs_f64(), m = args.matrix);

    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn check_args(args: &Args) -> Result<(), String> {
    if args.studies == 0 {
        return Err("--studies must be at least 1".to_string());
    }
    if args.batch == 0 {
        return Err("--batch must be at least 1".to_string());
    }
    if args.cases.is_empty() {
        return Err("--cases needs at least one kind of study".to_string());
    }
    if let Some(mas) = args.noise_mas {
        if !(mas.is_finite() && mas > 0.0) {
            return Err(format!("invalid --noise-mas {mas}: expected a positive number"));
        }
    }
    if !(0.0..=1.0).contains(&args.review_below) {
        return Err(format!("invalid --review-below {}: expected a number from 0 to 1", args.review_below));
    }
    Ok(())
}

/// Loads the model and checks that the held-out seed is neither its training seed nor the seed
/// its decision thresholds were fitted on. Returns it with a description of how it picks labels.
fn load_model(args: &Args) -> Result<(Arc<Segmenter>, String), String> {
    let mut segmenter = penumbra_model::load(&args.model)
        .map_err(|e| format!("cannot load the model from {}: {e}", args.model.display()))?;
    check_held_out(args.seed, args.studies, segmenter.card().training.seed, MAX_TRAINING_STUDIES).map_err(|e| e.to_string())?;
    if args.argmax {
        segmenter.set_decision(None);
    }
    let labels = match segmenter.decision() {
        Some(decision) => {
            if check_held_out(args.seed, args.studies, decision.fitted_seed, MAX_TRAINING_STUDIES).is_err() {
                return Err(format!(
                    "seed {} shares phantom studies with seed {}, which the decision thresholds were fitted on: \
                     choose another --seed, or pass --argmax",
                    args.seed, decision.fitted_seed
                ));
            }
            format!(
                "smoothed across slices (sigma {} mm), thresholds hypoperfused {} core {} ({})",
                decision.z_sigma_mm,
                decision.hypoperfused,
                decision.core,
                args.model.join(DECISION_FILE).display()
            )
        }
        None => "argmax".to_string(),
    };
    Ok((Arc::new(segmenter), labels))
}

/// Returns the confidence stage and its description: with the model folder's fitted calibration
/// unless `--no-calibration` is given or there is none.
fn confidence_stage(args: &Args) -> Result<(ConfidenceStage, String), String> {
    let fixed = || (ConfidenceStage::default(), "fixed weights".to_owned());
    if args.no_calibration {
        return Ok(fixed());
    }
    let Some(calibration) = ScoreCalibration::read(&args.model).map_err(|e| e.to_string())? else {
        return Ok(fixed());
    };

    for &fitted_seed in &calibration.fitted_seeds {
        if check_held_out(args.seed, args.studies, fitted_seed, MAX_TRAINING_STUDIES).is_err() {
            return Err(format!(
                "seed {} shares phantom studies with seed {fitted_seed}, which the confidence calibration was fitted on: \
                 choose another --seed, or pass --no-calibration",
                args.seed
            ));
        }
    }
    let description = args.model.join(CALIBRATION_FILE).display().to_string();
    Ok((ConfidenceStage::new(Some(Arc::new(calibration))), description))
}

/// Returns the per-class tables of the three comparisons and the calibration lines.
fn table(report: &Report) -> String {
    let mut out = format!(
        "Per-class scores, means over {} studies (Tversky alpha {}, beta {})\n",
        report.studies.len(),
        TVERSKY_ALPHA,
        TVERSKY_BETA
    );
    out.push_str(&format!(
        "{:>22} {:>13} {:>7} {:>8} {:>8} {:>8} {:>8}\n",
        "comparison", "class", "Dice", "Tversky", "HD95 mm", "dV mL", "|dV| mL"
    ));
    let groups = [
        ("U-Net vs truth", &report.unet),
        ("threshold vs truth", &report.threshold),
        ("U-Net vs threshold", &report.agreement),
    ];
    for (name, classes) in groups {
        for c in classes.iter() {
            out.push_str(&format!(
                "{:>22} {:>13} {:>7} {:>8} {:>8} {:>8} {:>8}\n",
                name,
                c.class,
                fmt(c.dice, 3),
                fmt(c.tversky, 3),
                fmt(c.hd95_mm, 1),
                fmt(c.volume_error_ml, 1),
                fmt(c.abs_volume_error_ml, 1)
            ));
        }
    }

    out.push_str("\nPer study\n");
    out.push_str(&format!("{:>16} {:>12} {:>10} {:>10} {:>10}\n", "case", "phantom", "core Dice", "confidence", "flagged"));
    for s in &report.studies {
        out.push_str(&format!(
            "{:>16} {:>12} {:>10.3} {:>10.3} {:>10}\n",
            s.case.name(),
            s.phantom_seed,
            s.core_dice,
            s.confidence.score,
            if s.confidence.score < report.calibration.review_below { "yes" } else { "no" }
        ));
    }

    for failure in &report.failed {
        let case = failure.case.map_or("", |c| c.name());
        out.push_str(&format!("{case:>16} {:>12} failed: {}\n", failure.phantom_seed, failure.message));
    }

    let c = &report.calibration;
    out.push_str(&format!(
        "\nConfidence calibration: AUROC of (1 - score) for core Dice < {POOR_CORE_DICE}: {} ({} poor of {} cases)\n",
        fmt(c.auroc, 3),
        c.poor_cases,
        c.cases
    ));
    out.push_str(&format!(
        "Below review_below {}: {:.0} % of cases, {} of {} poor cases; mean score poor {} / good {}\n",
        c.review_below,
        100.0 * c.flagged_fraction,
        c.flagged_poor,
        c.poor_cases,
        fmt(c.mean_score_poor, 3),
        fmt(c.mean_score_good, 3)
    ));
    out
}
