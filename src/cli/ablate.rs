//! `penumbra ablate`: compares U-Net variants, the open question of the residual U-Net paper
//! this model follows. It trains each variant (residual or plain blocks; Tversky, Dice,
//! cross-entropy or focal Tversky loss) on the same phantom studies with the same budget and
//! seed, scores each on the same held-out studies, and prints one table row per variant.
//!
//! The training set is generated once and shared, so the variants differ only in what the
//! table names. Each variant's model is written to `<out>/<variant>` for later inspection.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use penumbra_model::{train, Dataset, TrainConfig};
use penumbra_phantom::Matrix;
use serde::Serialize;

use super::eval_perfusion::{fmt, parse_matrix, write_json};
use super::train::{loss_kind, LossChoice};
use crate::evaluation::{
    check_held_out, evaluate_model_study, evaluation_params, run_phantom, summarize_classes, Case, ClassSummary,
    PhantomRun, MAX_TRAINING_STUDIES,
};
use crate::telemetry::{init_logging, LogFormat};
use crate::training::{add_phantom_studies, parse_channel, unet_architecture, TrainingMix, SLICE_CHANNELS};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to write one model folder per variant into.
    #[arg(long)]
    pub out: PathBuf,
    /// Variants to train, comma-separated, each `residual-LOSS` or `plain-LOSS` with LOSS one of
    /// tversky, focal-tversky, dice, cross-entropy.
    #[arg(long, value_delimiter = ',', default_value = "residual-tversky,plain-tversky,residual-dice,residual-cross-entropy")]
    pub variants: Vec<String>,
    /// Training phantom studies, shared by every variant (a fifth held out for validation).
    #[arg(long, default_value_t = 16)]
    pub studies: u64,
    /// Input channels in order, comma-separated: the maps cbf, cbv, mtt and tmax, rcbf (CBF
    /// relative to the reference tissue) and tissue (brain without vessels). A slice offset
    /// such as cbf[z-1] takes the map of a neighbouring slice.
    #[arg(long, value_delimiter = ',', value_parser = parse_channel, default_values_t = SLICE_CHANNELS.map(String::from))]
    pub channels: Vec<String>,
    /// Acquisitions of the phantom training studies: standard, or varied (also 20 mAs, truncated
    /// bolus and head motion).
    #[arg(long, value_enum, default_value_t = TrainingMix::Standard)]
    pub mix: TrainingMix,
    /// Seed of the training studies, the split, the initial weights and the augmentation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    #[arg(long, default_value_t = 8)]
    pub width: usize,
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
    #[arg(long, default_value_t = 128)]
    pub patch: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    /// Held-out studies (the training recipe with another seed), shared by every variant.
    #[arg(long, default_value_t = 8)]
    pub eval_studies: u64,
    /// Seed of the held-out studies. Their phantoms must not overlap the training studies.
    #[arg(long, default_value_t = 2001)]
    pub eval_seed: u64,
    /// In-plane matrix of the held-out phantoms: 128 or 256.
    #[arg(long, default_value_t = 256, value_parser = parse_matrix)]
    pub eval_matrix: usize,
    /// Slices per phantom study, training and held out.
    #[arg(long, default_value_t = 16)]
    pub slices: usize,
    /// File to write every variant's summary to, as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One variant: block kind and loss.
#[derive(Debug, Clone, Serialize)]
struct Variant {
    name: String,
    residual: bool,
    #[serde(skip)]
    loss: LossChoice,
}

/// Training record and held-out scores of one variant.
#[derive(Debug, Serialize)]
struct VariantResult {
    variant: Variant,
    epochs: usize,
    best_validation_loss: f64,
    training_seconds: f64,
    unet: Vec<ClassSummary>,
}

#[derive(Debug, Serialize)]
struct Report {
    training_studies: u64,
    seed: u64,
    epochs: usize,
    width: usize,
    depth: usize,
    eval_studies: usize,
    eval_seed: u64,
    threshold: Vec<ClassSummary>,
    variants: Vec<VariantResult>,
}

pub fn run(args: Args) -> ExitCode {
    init_logging(LogFormat::Text);
    crate::cpu_tuning::keep_freed_memory_for_training();
    super::exit_code("ablate", ablate(&args))
}

fn ablate(args: &Args) -> Result<(), String> {
    let variants = args.variants.iter().map(|v| parse_variant(v)).collect::<Result<Vec<_>, _>>()?;
    let matrix = Matrix::from_size(args.eval_matrix).ok_or_else(|| format!("invalid --eval-matrix {}: expected 128 or 256", args.eval_matrix))?;
    if args.studies < 2 || args.eval_studies == 0 || args.slices == 0 {
        return Err("--studies must be at least 2, --eval-studies and --slices at least 1".to_string());
    }
    check_held_out(args.eval_seed, args.eval_studies, args.seed, MAX_TRAINING_STUDIES.max(args.studies)).map_err(|e| e.to_string())?;

    let dataset = training_set(args)?;
    let held_out = held_out_set(args, matrix)?;

    let mut results = Vec::new();
    for variant in variants {
        let result = run_variant(args, &variant, &dataset, &held_out)?;
        eprintln!("{}", row(&result));
        results.push(result);
    }

    let report = Report {
        training_studies: args.studies,
        seed: args.seed,
        epochs: args.epochs,
        width: args.width,
        depth: args.depth,
        eval_studies: held_out.len(),
        eval_seed: args.eval_seed,
        threshold: threshold_summary(&held_out)?,
        variants: results,
    };
    print!("{}", table(&report));
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

/// Parses `residual-tversky`, `plain-dice` and the like.
fn parse_variant(text: &str) -> Result<Variant, String> {
    let text = text.trim();
    let (blocks, loss) = text.split_once('-').ok_or_else(|| format!("invalid variant {text:?}: expected BLOCKS-LOSS"))?;
    let residual = match blocks {
        "residual" => true,
        "plain" => false,
        other => return Err(format!("invalid variant {text:?}: blocks {other:?} must be residual or plain")),
    };
    let loss = match loss {
        "tversky" => LossChoice::Tversky,
        "focal-tversky" => LossChoice::FocalTversky,
        "dice" => LossChoice::Dice,
        "cross-entropy" => LossChoice::CrossEntropy,
        other => return Err(format!("invalid variant {text:?}: unknown loss {other:?}")),
    };
    Ok(Variant { name: text.to_string(), residual, loss })
}

fn training_set(args: &Args) -> Result<Dataset, String> {
    let names = args.channels.clone();
    let mut dataset = Dataset::new(names).map_err(|e| e.to_string())?;
    add_phantom_studies(&mut dataset, args.mix, args.seed, args.studies, Matrix::M256, Some(args.slices))?;
    Ok(dataset)
}

/// Processes the held-out studies once; a study whose maps fail is reported and left out.
fn held_out_set(args: &Args, matrix: Matrix) -> Result<Vec<PhantomRun>, String> {
    let mut runs = Vec::new();
    for index in 0..args.eval_studies {
        let mut params = evaluation_params(args.eval_seed, index, matrix, None);
        params.slices = args.slices;
        match run_phantom(&params) {
            Ok(run) => runs.push(run),
            Err(error) => eprintln!("held-out study {}: phantom seed {} left out: {error}", index + 1, params.seed),
        }
    }
    if runs.is_empty() {
        return Err("every held-out study failed".to_string());
    }
    Ok(runs)
}

fn run_variant(args: &Args, variant: &Variant, dataset: &Dataset, held_out: &[PhantomRun]) -> Result<VariantResult, String> {
    let started = Instant::now();
    let architecture = unet_architecture(args.channels.len(), args.width, args.depth, variant.residual);
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        learning_rate: args.learning_rate,
        patience: args.patience,
        patch_size: args.patch,
        loss: loss_kind(variant.loss),
        seed: args.seed,
        checkpoint_dir: None,
        resume: false,
        data_description: format!(
            "ablation {}: {} phantom studies ({} mix), seed {}",
            variant.name,
            args.studies,
            args.mix.name(),
            args.seed
        ),
        ..TrainConfig::default()
    };
    let outcome = train(&architecture, dataset, &config).map_err(|e| format!("{}: {e}", variant.name))?;
    let training_seconds = started.elapsed().as_secs_f64();
    let dir = args.out.join(&variant.name);
    outcome.save(&dir).map_err(|e| format!("{}: {e}", variant.name))?;

    let segmenter = Arc::new(penumbra_model::load(&dir).map_err(|e| format!("{}: {e}", dir.display()))?);
    let mut scores = Vec::new();
    for run in held_out {
        let study = evaluate_model_study(Case::Standard, run.clone(), &segmenter, args.batch).map_err(|e| e.to_string())?;
        scores.push(study.unet);
    }
    Ok(VariantResult {
        variant: variant.clone(),
        epochs: outcome.history.len(),
        best_validation_loss: outcome.history.iter().map(|e| e.validation_loss).fold(f64::INFINITY, f64::min),
        training_seconds,
        unet: summarize_classes(scores.iter().map(|s| s.as_slice())),
    })
}

/// Returns the threshold labels' scores on the held-out studies, the table's baseline row.
fn threshold_summary(held_out: &[PhantomRun]) -> Result<Vec<ClassSummary>, String> {
    let mut scores = Vec::new();
    for run in held_out {
        let spacing = run.result.maps.geometry.spacing_mm;
        scores.push(crate::evaluation::label_scores(&run.threshold.labels, &run.truth.labels, spacing)?);
    }
    Ok(summarize_classes(scores.iter().map(|s| s.as_slice())))
}

const HEADER: &str = "| variant | epochs | best validation loss | core Dice | penumbra Dice | hypoperfused Dice | core HD95 mm | core abs. volume error mL | training s |\n|---|---|---|---|---|---|---|---|---|\n";

fn row(result: &VariantResult) -> String {
    let dice = |name: &str| fmt(class_summary(&result.unet, name).and_then(|c| c.dice), 3);
    let core = class_summary(&result.unet, "core");
    format!(
        "| {} | {} | {:.4} | {} | {} | {} | {} | {} | {:.0} |",
        result.variant.name,
        result.epochs,
        result.best_validation_loss,
        dice("core"),
        dice("penumbra"),
        dice("hypoperfused"),
        fmt(core.and_then(|c| c.hd95_mm), 1),
        fmt(core.and_then(|c| c.abs_volume_error_ml), 1),
        result.training_seconds
    )
}

fn class_summary<'a>(classes: &'a [ClassSummary], name: &str) -> Option<&'a ClassSummary> {
    classes.iter().find(|c| c.class == name)
}

fn table(report: &Report) -> String {
    let mut out = format!(
        "Ablation: {} training studies (seed {}), at most {} epochs, width {}, depth {}; means over {} held-out studies (seed {})\n\n",
        report.training_studies, report.seed, report.epochs, report.width, report.depth, report.eval_studies, report.eval_seed
    );
    out.push_str(HEADER);
    for result in &report.variants {
        out.push_str(&row(result));
        out.push('\n');
    }
    let dice = |name: &str| fmt(class_summary(&report.threshold, name).and_then(|c| c.dice), 3);
    let core = class_summary(&report.threshold, "core");
    out.push_str(&format!(
        "| threshold labels (baseline) | | | {} | {} | {} | {} | {} | |\n",
        dice("core"),
        dice("penumbra"),
        dice("hypoperfused"),
        fmt(core.and_then(|c| c.hd95_mm), 1),
        fmt(core.and_then(|c| c.abs_volume_error_ml), 1)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_parse() {
        let v = parse_variant("plain-cross-entropy").unwrap();
        assert!(!v.residual);
        assert_eq!(v.loss, LossChoice::CrossEntropy);
        let v = parse_variant(" residual-focal-tversky ").unwrap();
        assert!(v.residual);
        assert_eq!(v.loss, LossChoice::FocalTversky);
        assert!(parse_variant("residual").is_err());
        assert!(parse_variant("dense-dice").is_err());
        assert!(parse_variant("plain-l1").is_err());
    }
}
