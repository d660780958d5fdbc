//! `penumbra train`: trains the residual U-Net on phantom studies, and on reviewed QA cases
//! exported by `penumbra qa export-labels`, and writes the model folder.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::ValueEnum;
use penumbra_model::{train, Dataset, LearningRateSchedule, LossKind, TrainConfig};
use penumbra_phantom::Matrix;

use super::eval_perfusion::parse_matrix;
use crate::telemetry::{init_logging, LogFormat};
use crate::training::qa_labels::{push_case, read_qa_labels, QaLabelCase};
use crate::training::{add_phantom_studies, parse_channel, unet_architecture, TrainingMix, CHANNELS};

/// Learning-rate schedules offered on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleChoice {
    Constant,
    Cosine,
}

/// Loss functions offered on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LossChoice {
    /// Tversky with alpha 0.3 (false positives) and beta 0.7 (false negatives).
    Tversky,
    /// Focal Tversky, gamma 0.75.
    FocalTversky,
    Dice,
    CrossEntropy,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to write `model.safetensors`, `card.json`, checkpoints and the loss curve into.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of phantom studies to generate. A fifth of all studies, phantom and reviewed, is held
    /// out by study for validation.
    #[arg(long, default_value_t = 24)]
    pub studies: u64,
    /// Folder written by `penumbra qa export-labels`; its reviewed cases join the phantom studies.
    /// Repeat the option for several folders.
    #[arg(long, value_name = "DIR")]
    pub qa_labels: Vec<PathBuf>,
    /// In-plane matrix of the phantom studies: 128 (1.8 mm pixels) or 256 (0.9 mm).
    #[arg(long, default_value_t = 256, value_parser = parse_matrix)]
    pub matrix: usize,
    /// Slices per phantom study (the phantom's own default when not given).
    #[arg(long)]
    pub slices: Option<usize>,
    /// Input channels in order, comma-separated: the maps cbf, cbv, mtt and tmax, rcbf (CBF
    /// relative to the reference tissue) and tissue (brain without vessels). A slice offset
    /// such as cbf[z-1] takes the map of a neighbouring slice.
    #[arg(long, value_delimiter = ',', value_parser = parse_channel, default_values_t = CHANNELS.map(String::from))]
    pub channels: Vec<String>,
    /// Acquisitions of the phantom training studies: standard, or varied (also 20 mAs, truncated
    /// bolus and head motion).
    #[arg(long, value_enum, default_value_t = TrainingMix::Varied)]
    pub mix: TrainingMix,
    /// Seed of the phantom studies, the split, the initial weights and the augmentation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Epochs without validation improvement before early stopping.
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Base width (channels of the first level); each level below doubles it.
    #[arg(long, default_value_t = 8)]
    pub width: usize,
    /// Number of resolution levels.
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
    /// Side of the square training patches in pixels (0 for whole 256x256 slices).
    #[arg(long, default_value_t = 128)]
    pub patch: usize,
    /// Patches per optimizer step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Learning rate of the first epoch.
    #[arg(long, default_value_t = 2e-3)]
    pub learning_rate: f64,
    /// Learning-rate schedule: constant, or cosine (down to 5 % of the first rate in the last of
    /// `--epochs`).
    #[arg(long, value_enum, default_value_t = ScheduleChoice::Constant)]
    pub schedule: ScheduleChoice,
    #[arg(long, value_enum, default_value_t = LossChoice::Tversky)]
    pub loss: LossChoice,
    /// Plain convolution blocks instead of residual ones (for the ablation).
    #[arg(long)]
    pub plain: bool,
    /// Start afresh even when the checkpoint folder contains an earlier run.
    #[arg(long)]
    pub no_resume: bool,
}

pub fn run(args: Args) -> ExitCode {
    init_logging(LogFormat::Text);
    crate::cpu_tuning::keep_freed_memory_for_training();
    super::exit_code("train", train_model(&args))
}

fn train_model(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let names = args.channels.clone();
    let mut dataset = Dataset::new(names).map_err(|e| e.to_string())?;

    // Read the exported cases before the slow phantom studies, so that a malformed folder fails
    // at once.
    let mut qa_cases = Vec::new();
    for dir in &args.qa_labels {
        qa_cases.extend(read_qa_labels(dir).map_err(|e| e.to_string())?);
    }
    let matrix = Matrix::from_size(args.matrix).ok_or_else(|| format!("invalid matrix {}", args.matrix))?;
    add_phantom_studies(&mut dataset, args.mix, args.seed, args.studies, matrix, args.slices)?;
    add_qa_cases(&mut dataset, &qa_cases)?;
    let qa_description = if args.qa_labels.is_empty() {
        String::new()
    } else {
        format!(" and {} reviewed QA cases (final masks as labels)", qa_cases.len())
    };

    let architecture = unet_architecture(args.channels.len(), args.width, args.depth, !args.plain);
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        learning_rate: args.learning_rate,
        schedule: match args.schedule {
            ScheduleChoice::Constant => LearningRateSchedule::Constant,
            ScheduleChoice::Cosine => LearningRateSchedule::Cosine,
        },
        patience: args.patience,
        patch_size: args.patch,
        loss: loss_kind(args.loss),
        seed: args.seed,
        checkpoint_dir: Some(args.out.join("checkpoints")),
        resume: !args.no_resume,
        data_description: format!(
            "{} phantom studies ({} mix, penumbra-phantom {}, seed {}), maps by oSVD, truth labels{qa_description}",
            args.studies,
            args.mix.name(),
            env!("CARGO_PKG_VERSION"),
            args.seed
        ),
        ..TrainConfig::default()
    };
    let outcome = train(&architecture, &dataset, &config).map_err(|e| e.to_string())?;
    outcome.save(&args.out).map_err(|e| e.to_string())?;

    let best = outcome.history.iter().map(|e| e.validation_loss).fold(f64::INFINITY, f64::min);
    eprintln!(
        "trained {} epochs in {:.0} s, best validation loss {best:.4}; model written to {}",
        outcome.history.len(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// Adds the reviewed cases read from the exported folders.
fn add_qa_cases(dataset: &mut Dataset, cases: &[QaLabelCase]) -> Result<(), String> {
    for case in cases {
        push_case(dataset, case).map_err(|e| e.to_string())?;
        eprintln!(
            "qa case {} of study {}: {}, {} slices",
            case.meta.case_id,
            case.meta.study_uid,
            case.meta.decision,
            case.meta.shape[0]
        );
    }
    Ok(())
}

pub(super) fn loss_kind(choice: LossChoice) -> LossKind {
    match choice {
        LossChoice::Tversky => LossKind::default(),
        LossChoice::FocalTversky => LossKind::FocalTversky { alpha: 0.3, beta: 0.7, gamma: 0.75 },
        LossChoice::Dice => LossKind::Dice,
        LossChoice::CrossEntropy => LossKind::CrossEntropy,
    }
}
