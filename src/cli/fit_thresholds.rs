//! `penumbra fit-thresholds`: fits the U-Net's decision thresholds on phantom studies of the
//! training mix that are neither training nor held-out data, and writes them into the model
//! folder as `decision-thresholds.json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use penumbra_model::card::utc_now;
use penumbra_model::decision::{DecisionThresholds, FitScores, DECISION_FORMAT_VERSION};
use penumbra_phantom::{Matrix, Noise};

use super::calibrate::HELD_OUT_SEED;
use super::eval_perfusion::parse_matrix;
use crate::evaluation::{check_held_out, MAX_TRAINING_STUDIES};
use crate::telemetry::{init_logging, LogFormat};
use crate::training::thresholds::{fit, fit_study, GRID};
use crate::training::TrainingMix;

/// Minimum number of studies a fit accepts.
const MIN_STUDIES: u64 = 6;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model folder with `model.safetensors` and `card.json`; the thresholds are written into it.
    #[arg(long)]
    pub model: PathBuf,
    /// Phantom studies to fit on, drawn like the training set.
    #[arg(long, default_value_t = 12)]
    pub studies: u64,
    /// Acquisitions of the fitting studies, as in `penumbra train`. `standard` needs `--dry-run`.
    #[arg(long, value_enum, default_value_t = TrainingMix::Varied)]
    pub mix: TrainingMix,
    /// Tube current-time product of every fitting study, in mAs, in place of the mix's own. It needs
    /// `--dry-run`.
    #[arg(long)]
    pub noise_mas: Option<f64>,
    /// Seed of the fitting phantoms; it must share no study with the training set or with the
    /// held-out evaluation seed.
    #[arg(long, default_value_t = 4001)]
    pub seed: u64,
    /// Seed of the held-out evaluation set, which the fit must not overlap.
    #[arg(long, default_value_t = HELD_OUT_SEED)]
    pub held_out_seed: u64,
    /// In-plane matrix of the phantoms: 128 or 256 (as in training).
    #[arg(long, default_value_t = 256, value_parser = parse_matrix)]
    pub matrix: usize,
    /// Slices per inference batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Print the fit without writing the file.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: Args) -> ExitCode {
    init_logging(LogFormat::Text);
    super::exit_code("fit-thresholds", fit_thresholds(&args))
}

fn fit_thresholds(args: &Args) -> Result<(), String> {
    if args.studies < MIN_STUDIES {
        return Err(format!("--studies must be at least {MIN_STUDIES}, got {}", args.studies));
    }
    if args.batch == 0 {
        return Err("--batch must be at least 1".to_string());
    }
    if let Some(mas) = args.noise_mas {
        if !(mas.is_finite() && mas > 0.0) {
            return Err(format!("invalid --noise-mas {mas}: expected a positive number"));
        }
    }
    if (args.mix != TrainingMix::Varied || args.noise_mas.is_some()) && !args.dry_run {
        return Err("--mix standard and --noise-mas need --dry-run: decision-thresholds.json does not record them".to_string());
    }
    let matrix = Matrix::from_size(args.matrix).ok_or_else(|| format!("invalid matrix {}", args.matrix))?;
    let mut segmenter = penumbra_model::load(&args.model)
        .map_err(|e| format!("cannot load the model from {}: {e}", args.model.display()))?;
    check_held_out(args.seed, args.studies, segmenter.card().training.seed, MAX_TRAINING_STUDIES).map_err(|e| e.to_string())?;
    if check_held_out(args.seed, args.studies, args.held_out_seed, MAX_TRAINING_STUDIES).is_err() {
        return Err(format!(
            "seed {} shares phantom studies with the held-out seed {}: choose another --seed",
            args.seed, args.held_out_seed
        ));
    }
    // The fit reads probabilities only; labels from an earlier fit would not change them.
    segmenter.set_decision(None);
    let segmenter = Arc::new(segmenter);
    let started = Instant::now();

    let mut studies = Vec::new();
    for index in 0..args.studies {
        let mut params = args.mix.params(args.seed, index);
        params.matrix = matrix;
        if let Some(mas) = args.noise_mas {
            params.noise = Noise::MilliAmpSeconds(mas);
        }
        let study = fit_study(&params, &segmenter, args.batch).map_err(|e| format!("study {}: {e}", index + 1))?;
        eprintln!("study {}/{}: phantom seed {}", index + 1, args.studies, params.seed);
        studies.push(study);
    }

    let fit = fit(&studies);
    println!("sigma mm  hypoperfused  core   mean of core and penumbra Dice");
    for candidate in &fit.candidates {
        println!(
            "{:>8.1}  {:>12.3}  {:.3}  {:.3}",
            candidate.z_sigma_mm, candidate.hypoperfused, candidate.core, candidate.objective
        );
    }
    println!("labels                  core  penumbra  hypoperfused  (mean Dice over {} studies)", studies.len());
    println!("{}", row("argmax", &fit.argmax));
    println!(
        "{}",
        row(&format!("z {:.1} mm, {:.3}/{:.3}", fit.z_sigma_mm, fit.hypoperfused, fit.core), &fit.fitted)
    );
    println!("smallest hypoperfused component kept: {} mL", fit.min_hypoperfused_ml);
    println!(
        "grid {:.3} to {:.3}; fitted in {:.0} s",
        GRID[0],
        GRID[GRID.len() - 1],
        started.elapsed().as_secs_f64()
    );
    if args.dry_run {
        return Ok(());
    }

    let thresholds = DecisionThresholds {
        format_version: DECISION_FORMAT_VERSION,
        z_sigma_mm: fit.z_sigma_mm,
        min_hypoperfused_ml: fit.min_hypoperfused_ml,
        hypoperfused: fit.hypoperfused,
        core: fit.core,
        fitted_seed: args.seed,
        fitted_studies: args.studies,
        argmax_scores: fit.argmax,
        fitted_scores: fit.fitted,
        fitted_at: utc_now(),
    };
    let path = thresholds.write(&args.model).map_err(|e| e.to_string())?;
    println!("written to {}", path.display());
    Ok(())
}

fn row(name: &str, scores: &FitScores) -> String {
    format!("{name:<23} {:.3}  {:.3}     {:.3}", scores.core, scores.penumbra, scores.hypoperfused)
}
