//! `penumbra eval-perfusion`: accuracy of the perfusion maps and threshold labels on phantom
//! studies at several tube currents, as a table on stdout and optionally as JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use penumbra_phantom::Matrix;
use serde::Serialize;

use crate::evaluation::{
    evaluate_perfusion_study, evaluation_params, summarize_perfusion, FailedStudy, PerfusionStudyEval, PerfusionSummary,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Phantom studies per noise level.
    #[arg(long, default_value_t = 4)]
    pub studies: u64,
    /// Seed of the phantom set; the default is held out from `penumbra train`'s seed 1.
    #[arg(long, default_value_t = 1001)]
    pub seed: u64,
    /// Tube current-time products in mAs (5 mm slices), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "190,150,100,50,20")]
    pub noise_mas: Vec<f64>,
    /// In-plane matrix of the phantoms: 128 (1.8 mm pixels) or 256 (0.9 mm).
    #[arg(long, default_value_t = 256, value_parser = parse_matrix)]
    pub matrix: usize,
    /// File to write every study's scores and the summaries to, as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Accepts the matrix sizes the phantom supports.
pub(super) fn parse_matrix(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(size @ (128 | 256)) => Ok(size),
        _ => Err(format!("invalid matrix {text:?}: expected 128 or 256")),
    }
}

/// Everything the JSON file holds.
#[derive(Debug, Serialize)]
struct Report {
    seed: u64,
    matrix: usize,
    summaries: Vec<PerfusionSummary>,
    studies: Vec<PerfusionStudyEval>,
    /// Studies whose perfusion maps failed; they are left out of the summaries.
    failed: Vec<FailedStudy>,
}

pub fn run(args: Args) -> ExitCode {
    super::exit_code("eval-perfusion", evaluate(&args))
}

fn evaluate(args: &Args) -> Result<(), String> {
    check_args(args)?;
    let matrix = Matrix::from_size(args.matrix).ok_or_else(|| format!("invalid matrix {}", args.matrix))?;
    let started = Instant::now();

    let mut studies = Vec::new();
    let mut summaries = Vec::new();
    let mut failed = Vec::new();
    for &mas in &args.noise_mas {
        let mut level = Vec::new();
        for index in 0..args.studies {
            let params = evaluation_params(args.seed, index, matrix, Some(mas));
            let progress = format!("{mas} mAs, study {}/{}: phantom seed {}", index + 1, args.studies, params.seed);
            match evaluate_perfusion_study(&params) {
                Ok(study) => {
                    eprintln!("{progress} scored");
                    level.push(study);
                }
                Err(error) => {
                    let failure = error.as_failed_study(&params, None).ok_or_else(|| error.to_string())?;
                    eprintln!("{progress} failed: {}", failure.message);
                    failed.push(failure);
                }
            }
        }
        summaries.push(summarize_perfusion(Some(mas), &level));
        studies.extend(level);
    }

    print!("{}", table(&summaries));
    for failure in &failed {
        println!("failed at {} mAs: {}", fmt(failure.noise_mas, 0), failure.message);
    }
    println!(
        "{} studies of {m}x{m} in {:.0} s",
        studies.len(),
        started.elapsed().as_secs_f64(),
        m = args.matrix
    );

    if let Some(path) = &args.json {
        let report = Report { seed: args.seed, matrix: args.matrix, summaries, studies, failed };
        write_json(path, &report)?;
    }
    Ok(())
}

fn check_args(args: &Args) -> Result<(), String> {
    if args.studies == 0 {
        return Err("--studies must be at least 1".to_string());
    }
    if args.noise_mas.is_empty() {
        return Err("--noise-mas needs at least one tube current in mAs".to_string());
    }
    if let Some(bad) = args.noise_mas.iter().find(|m| !(m.is_finite() && **m > 0.0)) {
        return Err(format!("invalid tube current {bad} mAs in --noise-mas: expected a positive number"));
    }
    Ok(())
}

/// Writes `value` as pretty JSON to `path`.
pub(crate) fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("cannot serialise the report: {e}"))?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Formats an optional number with `decimals` places, `-` when absent.
pub(crate) fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// Returns the summary table: map correlations, biases, Tmax errors and label scores per level.
fn table(summaries: &[PerfusionSummary]) -> String {
    let mut out = String::new();
    out.push_str("Map accuracy (Pearson r over brain voxels / over 2x2x1 tiles)\n");
    out.push_str(&format!("{:>8} {:>4} {:>13} {:>13} {:>13}\n", "mAs", "n", "CBF", "CBV", "MTT"));
    for s in summaries {
        let pair = |v: Option<f64>, t: Option<f64>| format!("{}/{}", fmt(v, 3), fmt(t, 3));
        out.push_str(&format!(
            "{:>8} {:>4} {:>13} {:>13} {:>13}\n",
            fmt(s.noise_mas, 0),
            s.studies,
            pair(s.pearson_voxel.cbf, s.pearson_tile.cbf),
            pair(s.pearson_voxel.cbv, s.pearson_tile.cbv),
            pair(s.pearson_voxel.mtt, s.pearson_tile.mtt),
        ));
    }

    out.push_str("\nMedian relative bias CBF/CBV/MTT (%) and median Tmax error (s) per tissue\n");
    out.push_str(&format!("{:>8} {:>9} {:>20} {:>9}\n", "mAs", "tissue", "CBF/CBV/MTT %", "Tmax s"));
    for s in summaries {
        for (tissue, bias) in &s.median_relative_bias {
            let percent = |v: Option<f64>| fmt(v.map(|b| 100.0 * b), 0);
            out.push_str(&format!(
                "{:>8} {:>9} {:>20} {:>9}\n",
                fmt(s.noise_mas, 0),
                tissue,
                format!("{}/{}/{}", percent(bias.cbf), percent(bias.cbv), percent(bias.mtt)),
                fmt(s.tmax_median_error_s.get(tissue).copied().flatten(), 2),
            ));
        }
    }

    out.push_str("\nThreshold labels against truth (means over studies)\n");
    out.push_str(&format!("{:>8} {:>13} {:>7} {:>8} {:>9} {:>11}\n", "mAs", "class", "Dice", "HD95 mm", "dV mL", "|dV| mL"));
    for s in summaries {
        for c in &s.labels {
            out.push_str(&format!(
                "{:>8} {:>13} {:>7} {:>8} {:>9} {:>11}\n",
                fmt(s.noise_mas, 0),
                c.class,
                fmt(c.dice, 3),
                fmt(c.hd95_mm, 1),
                fmt(c.volume_error_ml, 1),
                fmt(c.abs_volume_error_ml, 1),
            ));
        }
    }
    out
}
