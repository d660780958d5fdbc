//! Accuracy of the perfusion maps, the threshold labels and the U-Net against phantom truth, and
//! how well the confidence score flags poor segmentations.
//!
//! [`evaluate_perfusion_study`] scores one phantom's maps and threshold labels.
//! [`evaluate_model_study`] runs the daemon's own resample, infer (with test-time augmentation)
//! and confidence stages on a processed phantom and scores the U-Net, the thresholds and their
//! agreement. [`calibration`] turns the confidence scores of many studies into the AUROC of
//! `1 - score` for flagging a core Dice below [`POOR_CORE_DICE`].
//!
//! Brain voxels are the truth's parenchyma classes (normal, oligemia, penumbra, core) that the
//! perfusion crate also keeps in its brain mask outside its vessel mask.

use std::collections::BTreeMap;
use std::sync::Arc;

use penumbra_model::metrics::evaluate;
use penumbra_model::Segmenter;
use penumbra_perfusion::eval::pearson;
use penumbra_perfusion::{compute_maps, label, LabelParams, PerfusionMaps, PerfusionParams, PerfusionResult, ThresholdResult};
use penumbra_phantom::{generate, LesionSize, LesionVolumes, Matrix, Motion, Noise, PhantomParams, TissueClass, Truth};
use serde::Serialize;

use crate::confidence::Confidence;
use crate::pipeline::confidence::ConfidenceStage;
use crate::pipeline::infer::InferStage;
use crate::pipeline::perfusion::PerfusionArtifacts;
use crate::pipeline::resample::ResampleStage;
use crate::pipeline::{Job, Stage};
use crate::training::study_params;

/// Tversky weight of false positives.
pub const TVERSKY_ALPHA: f64 = 0.3;
/// Tversky weight of false negatives.
pub const TVERSKY_BETA: f64 = 0.7;
/// Core Dice below which a segmentation counts as poor for the calibration.
pub const POOR_CORE_DICE: f64 = 0.5;
/// Default of `confidence.review_below` in `pipeline.yaml`.
pub const DEFAULT_REVIEW_BELOW: f64 = 0.7;
/// In-plane side of the tiles for the tile correlation (one slice thick).
pub const TILE_YX: usize = 2;
/// Study count checked against a model card's training seed: more than `penumbra train` draws.
pub const MAX_TRAINING_STUDIES: u64 = 1000;

/// The tissue classes that the map accuracy reports, with their names.
const TISSUES: [(TissueClass, &str); 4] = [
    (TissueClass::Normal, "normal"),
    (TissueClass::Oligemia, "oligemia"),
    (TissueClass::Penumbra, "penumbra"),
    (TissueClass::Core, "core"),
];

/// Errors of an evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    #[error("phantom seed {seed} could not be generated: {message}")]
    Phantom { seed: u64, message: String },
    #[error("perfusion maps of phantom seed {seed} failed: {message}")]
    Perfusion { seed: u64, message: String },
    #[error("labels of phantom seed {seed} could not be scored: {message}")]
    Metrics { seed: u64, message: String },
    #[error("the {stage} stage failed on phantom seed {seed}: {message}")]
    Stage { stage: &'static str, seed: u64, message: String },
    #[error("evaluation seed {seed} draws phantom seed {phantom_seed}, which is in the training set of seed {training_seed}; pick another seed such as 1001")]
    TrainingOverlap { seed: u64, phantom_seed: u64, training_seed: u64 },
}

/// A study the evaluation could not score because the daemon's own processing rejected it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedStudy {
    pub phantom_seed: u64,
    pub noise_mas: Option<f64>,
    pub case: Option<Case>,
    pub message: String,
}

impl EvaluationError {
    /// Returns the study as a failure of the processing under test, or `None` when the error
    /// lies in the evaluation itself (phantom generation, scoring) and should stop the run.
    pub fn as_failed_study(&self, params: &PhantomParams, case: Option<Case>) -> Option<FailedStudy> {
        match self {
            EvaluationError::Perfusion { .. } | EvaluationError::Stage { .. } => Some(FailedStudy {
                phantom_seed: params.seed,
                noise_mas: match params.noise {
                    Noise::MilliAmpSeconds(mas) => Some(mas),
                    Noise::HuSd(_) => None,
                },
                case,
                message: self.to_string(),
            }),
            _ => None,
        }
    }
}

/// A phantom study after perfusion processing, with its truth.
#[derive(Clone)]
pub struct PhantomRun {
    pub params: PhantomParams,
    pub truth: Truth,
    pub result: PerfusionResult,
    pub threshold: ThresholdResult,
}

/// Generates a phantom and computes its maps and RAPID-style threshold labels with the daemon's
/// default parameters.
pub fn run_phantom(params: &PhantomParams) -> Result<PhantomRun, EvaluationError> {
    let seed = params.seed;
    let study = generate(params).map_err(|e| EvaluationError::Phantom { seed, message: e.to_string() })?;

    let result = compute_maps(&study.volume, &PerfusionParams::default())
        .map_err(|e| EvaluationError::Perfusion { seed, message: e.to_string() })?;
    let threshold = label(&result.maps, &LabelParams::rapid());
    Ok(PhantomRun { params: params.clone(), truth: study.truth, result, threshold })
}

/// Returns study `index` of the evaluation set drawn from `seed`: the training recipe of
/// [`study_params`] on the chosen matrix, with the tube current replaced when `noise_mas` is set.
pub fn evaluation_params(seed: u64, index: u64, matrix: Matrix, noise_mas: Option<f64>) -> PhantomParams {
    let mut params = study_params(seed, index);
    params.matrix = matrix;
    if let Some(mas) = noise_mas {
        params.noise = Noise::MilliAmpSeconds(mas);
    }
    params
}

/// Rejects an evaluation seed whose first `studies` phantoms share a phantom seed with the
/// training set `study_params(training_seed, 0..training_studies)`, so that held-out results
/// are never computed on training data.
pub fn check_held_out(seed: u64, studies: u64, training_seed: u64, training_studies: u64) -> Result<(), EvaluationError> {
    let training: Vec<u64> = (0..training_studies).map(|i| study_params(training_seed, i).seed).collect();
    for index in 0..studies {
        let phantom_seed = study_params(seed, index).seed;
        if training.contains(&phantom_seed) {
            return Err(EvaluationError::TrainingOverlap { seed, phantom_seed, training_seed });
        }
    }
    Ok(())
}

/// Correlations or biases of the three maps that have a truth of the same kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PerMap {
    pub cbf: Option<f64>,
    pub cbv: Option<f64>,
    pub mtt: Option<f64>,
}

/// Tmax error in one tissue class, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TmaxError {
    pub voxels: usize,
    /// Median of `estimate - truth`.
    pub median_error_s: Option<f64>,
    /// Median of `|estimate - truth|`.
    pub median_abs_error_s: Option<f64>,
}

/// Agreement of one study's maps with the truth over brain voxels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapAccuracy {
    pub brain_voxels: usize,
    /// Pearson r over brain voxels.
    pub pearson_voxel: PerMap,
    /// Pearson r over the means of [`TILE_YX`] x [`TILE_YX`] x 1 tiles at least half brain.
    pub pearson_tile: PerMap,
    /// Median of `(estimate - truth) / truth` per tissue class name.
    pub median_relative_bias: BTreeMap<String, PerMap>,
    pub tmax_error: BTreeMap<String, TmaxError>,
}

/// Estimated and true values of one brain voxel.
#[derive(Debug, Clone, Copy)]
struct VoxelPair {
    tissue: usize,
    estimate: [f64; 4],
    truth: [f64; 4],
}

/// Returns the index in [`TISSUES`] of a truth tissue code, `None` outside parenchyma.
fn tissue_index(code: u8) -> Option<usize> {
    TISSUES.iter().position(|(class, _)| *class as u8 == code)
}

/// Scores the maps against the truth. Fails when their shapes differ.
pub fn map_accuracy(maps: &PerfusionMaps, truth: &Truth) -> Result<MapAccuracy, String> {
    let shape = maps.cbf.dim();
    if truth.cbf.dim() != shape || truth.tissue.dim() != shape || maps.brain_mask.dim() != shape {
        return Err(format!("maps of shape {shape:?} and truth of shape {:?} differ", truth.cbf.dim()));
    }

    let (nz, ny, nx) = shape;
    let mut pairs = Vec::new();
    let mut grid: Vec<Option<VoxelPair>> = Vec::with_capacity(nz * ny * nx);
    for (index, &code) in truth.tissue.indexed_iter() {
        let pair = brain_pair(maps, truth, index, code);
        if let Some(pair) = pair {
            pairs.push(pair);
        }
        grid.push(pair);
    }

    let tiles = tile_means(&grid, shape);
    let median_relative_bias = TISSUES
        .iter()
        .enumerate()
        .map(|(t, (_, name))| (name.to_string(), relative_bias(pairs.iter().filter(|p| p.tissue == t))))
        .collect();
    let tmax_error = TISSUES
        .iter()
        .enumerate()
        .map(|(t, (_, name))| (name.to_string(), tmax_error(pairs.iter().filter(|p| p.tissue == t))))
        .collect();

    Ok(MapAccuracy {
        brain_voxels: pairs.len(),
        pearson_voxel: correlations(&pairs),
        pearson_tile: correlations(&tiles),
        median_relative_bias,
        tmax_error,
    })
}

/// Returns the voxel's values when it is a brain voxel with finite estimates.
fn brain_pair(maps: &PerfusionMaps, truth: &Truth, index: (usize, usize, usize), code: u8) -> Option<VoxelPair> {
    let tissue = tissue_index(code)?;
    if !maps.brain_mask[index] || maps.vessel_mask[index] {
        return None;
    }
    let estimate = [maps.cbf[index], maps.cbv[index], maps.mtt[index], maps.tmax[index]].map(f64::from);
    let truth = [truth.cbf[index], truth.cbv[index], truth.mtt[index], truth.tmax[index]].map(f64::from);
    estimate.iter().all(|v| v.is_finite()).then_some(VoxelPair { tissue, estimate, truth })
}

/// Averages the brain voxels of each tile; tiles with fewer than half brain voxels are left out.
fn tile_means(grid: &[Option<VoxelPair>], (nz, ny, nx): (usize, usize, usize)) -> Vec<VoxelPair> {
    let mut tiles = Vec::new();
    for z in 0..nz {
        for y0 in (0..ny).step_by(TILE_YX) {
            for x0 in (0..nx).step_by(TILE_YX) {
                let mut sum = VoxelPair { tissue: 0, estimate: [0.0; 4], truth: [0.0; 4] };
                let mut count = 0usize;
                for y in y0..(y0 + TILE_YX).min(ny) {
                    for x in x0..(x0 + TILE_YX).min(nx) {
                        if let Some(pair) = grid[(z * ny + y) * nx + x] {
                            for k in 0..4 {
                                sum.estimate[k] += pair.estimate[k];
                                sum.truth[k] += pair.truth[k];
                            }
                            count += 1;
                        }
                    }
                }
                if 2 * count >= TILE_YX * TILE_YX {
                    let n = count as f64;
                    tiles.push(VoxelPair { tissue: 0, estimate: sum.estimate.map(|v| v / n), truth: sum.truth.map(|v| v / n) });
                }
            }
        }
    }
    tiles
}

/// Pearson r of CBF, CBV and MTT.
fn correlations(pairs: &[VoxelPair]) -> PerMap {
    let r = |k: usize| {
        let estimate: Vec<f64> = pairs.iter().map(|p| p.estimate[k]).collect();
        let truth: Vec<f64> = pairs.iter().map(|p| p.truth[k]).collect();
        pearson(&estimate, &truth)
    };
    PerMap { cbf: r(0), cbv: r(1), mtt: r(2) }
}

/// Median relative bias of CBF, CBV and MTT over voxels with non-zero truth.
fn relative_bias<'a>(pairs: impl Iterator<Item = &'a VoxelPair> + Clone) -> PerMap {
    let bias = |k: usize| {
        let mut values: Vec<f64> = pairs
            .clone()
            .filter(|p| p.truth[k] != 0.0)
            .map(|p| (p.estimate[k] - p.truth[k]) / p.truth[k])
            .collect();
        median(&mut values)
    };
    PerMap { cbf: bias(0), cbv: bias(1), mtt: bias(2) }
}

fn tmax_error<'a>(pairs: impl Iterator<Item = &'a VoxelPair>) -> TmaxError {
    let mut errors: Vec<f64> = pairs.map(|p| p.estimate[3] - p.truth[3]).collect();
    let mut absolute: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
    TmaxError { voxels: errors.len(), median_error_s: median(&mut errors), median_abs_error_s: median(&mut absolute) }
}

/// Returns the median (mean of the two middle values for an even count), `None` for no values.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { 0.5 * (values[n / 2 - 1] + values[n / 2]) })
}

/// Returns the mean of the values that are present, `None` when none is.
pub fn mean_present(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let present: Vec<f64> = values.into_iter().flatten().collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
}

/// Scores of one class of one label volume against a reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    /// `core`, `penumbra` or `hypoperfused` (core or penumbra).
    pub class: String,
    /// `None` when both masks are empty.
    pub dice: Option<f64>,
    /// Tversky coefficient with [`TVERSKY_ALPHA`] and [`TVERSKY_BETA`].
    pub tversky: Option<f64>,
    /// `None` when either mask is empty.
    pub hd95_mm: Option<f64>,
    pub predicted_ml: f64,
    pub reference_ml: f64,
    /// `predicted_ml - reference_ml`.
    pub volume_error_ml: f64,
}

impl ClassScore {
    /// Returns the Dice with an empty prediction of an empty reference counted as 1.
    pub fn dice_or_one(&self) -> f64 {
        self.dice.unwrap_or(1.0)
    }
}

/// Scores `predicted` against `reference` labels per class, core first.
pub fn label_scores(
    predicted: &penumbra_imaging::LabelVolume,
    reference: &penumbra_imaging::LabelVolume,
    spacing_mm: [f64; 3],
) -> Result<Vec<ClassScore>, String> {
    let evaluation = evaluate(predicted, reference, spacing_mm, TVERSKY_ALPHA, TVERSKY_BETA).map_err(|e| e.to_string())?;
    let mut scores: Vec<ClassScore> = evaluation
        .classes
        .into_iter()
        .map(|c| ClassScore {
            class: if c.class == "lesion" { "hypoperfused".to_string() } else { c.class },
            dice: c.dice,
            tversky: c.tversky,
            hd95_mm: c.hd95_mm,
            predicted_ml: c.predicted_ml,
            reference_ml: c.reference_ml,
            volume_error_ml: c.volume_error_ml,
        })
        .collect();
    scores.sort_by_key(|s| class_order(&s.class));
    Ok(scores)
}

fn class_order(class: &str) -> usize {
    match class {
        "core" => 0,
        "penumbra" => 1,
        _ => 2,
    }
}

/// Returns the score of `class` in a list from [`label_scores`].
pub fn class<'a>(scores: &'a [ClassScore], class: &str) -> Option<&'a ClassScore> {
    scores.iter().find(|s| s.class == class)
}

/// Map and threshold-label accuracy of one phantom study.
#[derive(Debug, Clone, Serialize)]
pub struct PerfusionStudyEval {
    pub phantom_seed: u64,
    pub noise_mas: Option<f64>,
    pub matrix: usize,
    pub lesion: bool,
    pub maps: MapAccuracy,
    /// Threshold labels against the true labels.
    pub threshold: Vec<ClassScore>,
    pub truth_volumes: LesionVolumes,
}

/// Generates, processes and scores one phantom study.
pub fn evaluate_perfusion_study(params: &PhantomParams) -> Result<PerfusionStudyEval, EvaluationError> {
    let run = run_phantom(params)?;
    score_perfusion(&run)
}

/// Scores the maps and threshold labels of a processed phantom.
pub fn score_perfusion(run: &PhantomRun) -> Result<PerfusionStudyEval, EvaluationError> {
    let seed = run.params.seed;
    let metrics_error = |message| EvaluationError::Metrics { seed, message };
    let maps = map_accuracy(&run.result.maps, &run.truth).map_err(metrics_error)?;
    let spacing = run.result.maps.geometry.spacing_mm;
    let threshold = label_scores(&run.threshold.labels, &run.truth.labels, spacing).map_err(metrics_error)?;

    Ok(PerfusionStudyEval {
        phantom_seed: seed,
        noise_mas: match run.params.noise {
            Noise::MilliAmpSeconds(mas) => Some(mas),
            Noise::HuSd(_) => None,
        },
        matrix: run.params.matrix.size(),
        lesion: run.params.lesion,
        maps,
        threshold,
        truth_volumes: run.truth.volumes,
    })
}

/// Means over the studies of one noise level.
#[derive(Debug, Clone, Serialize)]
pub struct PerfusionSummary {
    pub noise_mas: Option<f64>,
    pub studies: usize,
    pub pearson_voxel: PerMap,
    pub pearson_tile: PerMap,
    /// Mean over studies of the per-study median relative bias, per tissue class.
    pub median_relative_bias: BTreeMap<String, PerMap>,
    /// Mean over studies of the per-study median Tmax error (s), per tissue class.
    pub tmax_median_error_s: BTreeMap<String, Option<f64>>,
    /// Mean over studies of the per-study median absolute Tmax error (s), per tissue class.
    pub tmax_median_abs_error_s: BTreeMap<String, Option<f64>>,
    pub labels: Vec<ClassSummary>,
}

/// Means of one class's scores over studies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassSummary {
    pub class: String,
    /// Mean over studies where at least one mask is non-empty.
    pub dice: Option<f64>,
    pub tversky: Option<f64>,
    pub hd95_mm: Option<f64>,
    /// Mean of `predicted - reference` in mL.
    pub volume_error_ml: Option<f64>,
    /// Mean of `|predicted - reference|` in mL.
    pub abs_volume_error_ml: Option<f64>,
}

/// Summarises per-class scores of several studies.
pub fn summarize_classes<'a>(studies: impl Iterator<Item = &'a [ClassScore]> + Clone) -> Vec<ClassSummary> {
    ["core", "penumbra", "hypoperfused"]
        .iter()
        .map(|name| {
            let scores: Vec<&ClassScore> = studies.clone().filter_map(|s| class(s, name)).collect();
            ClassSummary {
                class: name.to_string(),
                dice: mean_present(scores.iter().map(|s| s.dice)),
                tversky: mean_present(scores.iter().map(|s| s.tversky)),
                hd95_mm: mean_present(scores.iter().map(|s| s.hd95_mm)),
                volume_error_ml: mean_present(scores.iter().map(|s| Some(s.volume_error_ml))),
                abs_volume_error_ml: mean_present(scores.iter().map(|s| Some(s.volume_error_ml.abs()))),
            }
        })
        .collect()
}

/// Averages the studies of one noise level.
pub fn summarize_perfusion(noise_mas: Option<f64>, studies: &[PerfusionStudyEval]) -> PerfusionSummary {
    let mean_map = |get: &dyn Fn(&PerfusionStudyEval) -> PerMap| PerMap {
        cbf: mean_present(studies.iter().map(|s| get(s).cbf)),
        cbv: mean_present(studies.iter().map(|s| get(s).cbv)),
        mtt: mean_present(studies.iter().map(|s| get(s).mtt)),
    };

    let mut median_relative_bias = BTreeMap::new();
    let mut tmax_median_error_s = BTreeMap::new();
    let mut tmax_median_abs_error_s = BTreeMap::new();
    for (_, name) in TISSUES {
        let bias = mean_map(&|s| s.maps.median_relative_bias.get(name).copied().unwrap_or_default());
        median_relative_bias.insert(name.to_string(), bias);
        let tmax = |s: &PerfusionStudyEval| s.maps.tmax_error.get(name).copied();
        tmax_median_error_s.insert(name.to_string(), mean_present(studies.iter().map(|s| tmax(s).and_then(|t| t.median_error_s))));
        tmax_median_abs_error_s
            .insert(name.to_string(), mean_present(studies.iter().map(|s| tmax(s).and_then(|t| t.median_abs_error_s))));
    }

    PerfusionSummary {
        noise_mas,
        studies: studies.len(),
        pearson_voxel: mean_map(&|s| s.maps.pearson_voxel),
        pearson_tile: mean_map(&|s| s.maps.pearson_tile),
        median_relative_bias,
        tmax_median_error_s,
        tmax_median_abs_error_s,
        labels: summarize_classes(studies.iter().map(|s| s.threshold.as_slice())),
    }
}

/// Kinds of held-out study in the model evaluation, cycled by study index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Case {
    /// The training recipe unchanged.
    Standard,
    /// 20 mAs.
    HighNoise,
    /// The scan ends before the tissue curves return to baseline.
    TruncatedBolus,
    /// A 3.6 mm, 2 degree head movement for ten frames in mid-scan.
    Motion,
    /// A design core of 5 to 20 mL.
    SmallLesion,
    /// Both hemispheres normal.
    NoLesion,
}

/// The cases in the order study indices cycle through them.
pub const CASES: [Case; 6] =
    [Case::Standard, Case::HighNoise, Case::TruncatedBolus, Case::Motion, Case::SmallLesion, Case::NoLesion];

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::Standard => "standard",
            Case::HighNoise => "high_noise",
            Case::TruncatedBolus => "truncated_bolus",
            Case::Motion => "motion",
            Case::SmallLesion => "small_lesion",
            Case::NoLesion => "no_lesion",
        }
    }
}

/// Returns held-out study `index` of `seed`: [`evaluation_params`] changed into the case
/// `CASES[index % 6]`.
pub fn held_out_params(seed: u64, index: u64, matrix: Matrix) -> (Case, PhantomParams) {
    held_out_params_of(seed, index, matrix, &CASES, None)
}

/// Returns held-out study `index` of `seed` for a set that cycles through `cases` only. It is
/// [`evaluation_params`] with the tube current `noise_mas` (when set), changed into the case
/// `cases[index % cases.len()]`. The high-noise case keeps its 20 mAs. Panics when `cases` is
/// empty.
pub fn held_out_params_of(
    seed: u64,
    index: u64,
    matrix: Matrix,
    cases: &[Case],
    noise_mas: Option<f64>,
) -> (Case, PhantomParams) {
    let case = cases[(index % cases.len() as u64) as usize];
    let mut params = evaluation_params(seed, index, matrix, noise_mas);
    match case {
        Case::Standard => {}
        Case::HighNoise => params.noise = Noise::MilliAmpSeconds(20.0),
        Case::TruncatedBolus => params.bolus_truncated = true,
        Case::Motion => {
            params.motion = Some(Motion {
                first_frame: params.frames / 3,
                frame_count: 10.min(params.frames - params.frames / 3),
                translation_mm: [3.0, -2.0, 0.0],
                yaw_deg: 2.0,
            })
        }
        Case::SmallLesion => {
            params.lesion = true;
            params.lesion_size = LesionSize::Small;
        }
        Case::NoLesion => params.lesion = false,
    }
    (case, params)
}

/// U-Net, threshold and confidence results of one held-out study.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStudyEval {
    pub case: Case,
    pub phantom_seed: u64,
    pub lesion: bool,
    /// U-Net labels against the true labels.
    pub unet: Vec<ClassScore>,
    /// Threshold labels against the true labels.
    pub threshold: Vec<ClassScore>,
    /// U-Net labels against the threshold labels.
    pub agreement: Vec<ClassScore>,
    pub confidence: Confidence,
    /// U-Net core Dice against truth, 1 when both are empty.
    pub core_dice: f64,
}

/// Runs the resample, infer (with test-time augmentation) and confidence stages on a processed
/// phantom, as the daemon does, and scores the results against the truth. The confidence stage
/// combines the components with the fixed weights.
pub fn evaluate_model_study(
    case: Case,
    run: PhantomRun,
    segmenter: &Arc<Segmenter>,
    batch: usize,
) -> Result<ModelStudyEval, EvaluationError> {
    evaluate_model_study_with(case, run, segmenter, batch, &ConfidenceStage::default())
}

/// Runs [`evaluate_model_study`] with the given confidence stage, for example one with a fitted
/// calibration.
pub fn evaluate_model_study_with(
    case: Case,
    run: PhantomRun,
    segmenter: &Arc<Segmenter>,
    batch: usize,
    confidence_stage: &ConfidenceStage,
) -> Result<ModelStudyEval, EvaluationError> {
    let seed = run.params.seed;
    let stage_error = |stage: &'static str| move |e: crate::pipeline::StageError| EvaluationError::Stage { stage, seed, message: e.to_string() };
    let metrics_error = |message| EvaluationError::Metrics { seed, message };
    let spacing = run.result.maps.geometry.spacing_mm;
    let threshold = label_scores(&run.threshold.labels, &run.truth.labels, spacing).map_err(metrics_error)?;

    let mut job = Job::new(format!("phantom-{seed}"), 1, Vec::new());
    job.artifacts.perfusion = Some(PerfusionArtifacts {
        source_series: 0,
        maps: run.result.maps,
        quality: Some(run.result.quality),
        threshold: run.threshold,
        method: "osvd".to_string(),
    });
    let resample = ResampleStage::new(segmenter).map_err(|message| EvaluationError::Stage { stage: "resample", seed, message })?;
    let job = resample.process(job).map_err(stage_error("resample"))?;
    let job = InferStage::new(Arc::clone(segmenter), batch, true).process(job).map_err(stage_error("infer"))?;
    let job = confidence_stage.process(job).map_err(stage_error("confidence"))?;

    let missing = |what: &str| EvaluationError::Stage { stage: "confidence", seed, message: format!("the stages left no {what}") };
    let unet_labels = &job.artifacts.unet.as_ref().ok_or_else(|| missing("U-Net labels"))?.labels;
    let threshold_labels = &job.artifacts.perfusion.as_ref().ok_or_else(|| missing("threshold labels"))?.threshold.labels;
    let unet = label_scores(unet_labels, &run.truth.labels, spacing).map_err(metrics_error)?;
    let agreement = label_scores(unet_labels, threshold_labels, spacing).map_err(metrics_error)?;
    let confidence = job.artifacts.confidence.clone().ok_or_else(|| missing("confidence"))?;
    let core_dice = class(&unet, "core").map_or(1.0, ClassScore::dice_or_one);

    Ok(ModelStudyEval { case, phantom_seed: seed, lesion: run.params.lesion, unet, threshold, agreement, confidence, core_dice })
}

/// Returns the area under the ROC curve of `scores` for telling `positive` cases from the others:
/// the probability that a random positive scores above a random negative, ties counting one
/// half (the Mann-Whitney U over the number of pairs).
///
/// `None` when the lengths differ, a score is NaN, or either group is empty.
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    if scores.len() != positive.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let positives: Vec<f64> = scores.iter().zip(positive).filter(|(_, &p)| p).map(|(&s, _)| s).collect();
    let negatives: Vec<f64> = scores.iter().zip(positive).filter(|(_, &p)| !p).map(|(&s, _)| s).collect();
    if positives.is_empty() || negatives.is_empty() {
        return None;
    }

    let mut wins = 0.0;
    for &p in &positives {
        for &n in &negatives {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (positives.len() * negatives.len()) as f64)
}

/// How well the confidence score flags poor U-Net segmentations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub cases: usize,
    /// Cases with U-Net core Dice below [`POOR_CORE_DICE`].
    pub poor_cases: usize,
    /// AUROC of `1 - score` for flagging the poor cases; `None` without both kinds of case.
    pub auroc: Option<f64>,
    pub review_below: f64,
    /// Fraction of cases scoring below `review_below`.
    pub flagged_fraction: f64,
    /// Poor cases that scored below `review_below`.
    pub flagged_poor: usize,
    pub mean_score_poor: Option<f64>,
    pub mean_score_good: Option<f64>,
}

/// Computes the calibration of the confidence scores of `studies`.
pub fn calibration(studies: &[ModelStudyEval], review_below: f64) -> Calibration {
    let risk: Vec<f64> = studies.iter().map(|s| 1.0 - s.confidence.score).collect();
    let poor: Vec<bool> = studies.iter().map(|s| s.core_dice < POOR_CORE_DICE).collect();
    let flagged: Vec<bool> = studies.iter().map(|s| s.confidence.score < review_below).collect();
    let score_of = |want_poor: bool| {
        mean_present(studies.iter().zip(&poor).filter(|(_, &p)| p == want_poor).map(|(s, _)| Some(s.confidence.score)))
    };

    Calibration {
        cases: studies.len(),
        poor_cases: poor.iter().filter(|&&p| p).count(),
        auroc: auroc(&risk, &poor),
        review_below,
        flagged_fraction: if studies.is_empty() {
            0.0
        } else {
            flagged.iter().filter(|&&f| f).count() as f64 / studies.len() as f64
        },
        flagged_poor: poor.iter().zip(&flagged).filter(|(&p, &f)| p && f).count(),
        mean_score_poor: score_of(true),
        mean_score_good: score_of(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_perfect_and_reversed() {
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]), Some(1.0));
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &[true, true, false, false]), Some(0.0));
    }

    #[test]
    fn auroc_with_ties() {
        // Positives 0.8, 0.5; negatives 0.5, 0.2, 0.2. Pairs: 0.8 beats all three (3); 0.5 ties
        // 0.5 (0.5) and beats both 0.2 (2). 5.5 of 6 pairs.
        let got = auroc(&[0.8, 0.5, 0.5, 0.2, 0.2], &[true, true, false, false, false]).unwrap();
        assert!((got - 5.5 / 6.0).abs() < 1e-12, "got {got}");

        // Every score equal: each pair is a tie.
        assert_eq!(auroc(&[0.3, 0.3, 0.3], &[true, false, false]), Some(0.5));
    }

    #[test]
    fn auroc_mixed_order() {
        // Positives 0.7, 0.3; negatives 0.6, 0.4, 0.1. 0.7 beats 3, 0.3 beats only 0.1: 4 of 6.
        let got = auroc(&[0.7, 0.6, 0.4, 0.3, 0.1], &[true, false, false, true, false]).unwrap();
        assert!((got - 4.0 / 6.0).abs() < 1e-12, "got {got}");
    }

    #[test]
    fn auroc_undefined_cases() {
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auroc(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(auroc(&[0.1], &[true, false]), None);
        assert_eq!(auroc(&[f64::NAN, 0.2], &[true, false]), None);
        assert_eq!(auroc(&[], &[]), None);
    }

    #[test]
    fn median_and_mean_present() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        assert_eq!(mean_present([Some(1.0), None, Some(3.0)]), Some(2.0));
        assert_eq!(mean_present([None]), None);
    }

    #[test]
    fn tile_means_need_half_brain() {
        // One slice of 2 x 4 voxels: the left tile has 2 brain voxels (kept), the right 1 (left out).
        let pair = |v: f64| Some(VoxelPair { tissue: 0, estimate: [v; 4], truth: [2.0 * v; 4] });
        let grid = vec![pair(1.0), pair(3.0), pair(5.0), None, None, None, None, None];
        let tiles = tile_means(&grid, (1, 2, 4));
        assert_eq!(tiles.len(), 1);
        assert_eq!(tiles[0].estimate[0], 2.0);
        assert_eq!(tiles[0].truth[0], 4.0);
    }

    #[test]
    fn held_out_cases_cycle() {
        let (case, params) = held_out_params(1001, 1, Matrix::M128);
        assert_eq!(case, Case::HighNoise);
        assert_eq!(params.noise, Noise::MilliAmpSeconds(20.0));
        assert_eq!(params.matrix, Matrix::M128);
        let (case, params) = held_out_params(1001, 3, Matrix::M128);
        assert_eq!(case, Case::Motion);
        assert!(params.validate().is_ok());
        let (case, params) = held_out_params(1001, 5, Matrix::M128);
        assert_eq!(case, Case::NoLesion);
        assert!(!params.lesion);
        let (_, params) = held_out_params(1001, 7 * 6 + 4, Matrix::M128);
        assert!(params.lesion, "the small-lesion case keeps its lesion on a no-lesion index");
    }

    #[test]
    fn held_out_subset_keeps_phantoms() {
        for index in 0..16 {
            let (case, params) = held_out_params_of(1001, index, Matrix::M128, &[Case::Standard], Some(150.0));
            assert_eq!(case, Case::Standard);
            assert_eq!(params.noise, Noise::MilliAmpSeconds(150.0));
            assert_eq!(params.lesion, index % 8 != 7, "study {index}");
            let full = evaluation_params(1001, index, Matrix::M128, None);
            assert_eq!(params.seed, full.seed);
            assert_eq!(params.lesion_size, full.lesion_size);
            assert!(params.motion.is_none());
            assert!(!params.bolus_truncated);
        }

        let cases = [Case::Motion, Case::HighNoise];
        let (case, params) = held_out_params_of(1001, 2, Matrix::M128, &cases, Some(150.0));
        assert_eq!(case, Case::Motion);
        assert!(params.motion.is_some());
        assert_eq!(params.noise, Noise::MilliAmpSeconds(150.0));
        let (case, params) = held_out_params_of(1001, 3, Matrix::M128, &cases, Some(150.0));
        assert_eq!(case, Case::HighNoise);
        assert_eq!(params.noise, Noise::MilliAmpSeconds(20.0));
        assert_eq!(held_out_params_of(1001, 4, Matrix::M128, &CASES, None), held_out_params(1001, 4, Matrix::M128));
    }

    #[test]
    fn held_out_seed_check() {
        assert!(check_held_out(1001, 64, 1, 16).is_ok());
        assert!(matches!(check_held_out(1, 1, 1, 16), Err(EvaluationError::TrainingOverlap { .. })));
        // Seed 2 starts 1_000_003 phantom seeds after seed 1, so only a larger set overlaps.
        assert!(check_held_out(2, 4, 1, 16).is_ok());
        assert!(check_held_out(2, 1, 1, 1_000_004).is_err());
    }

    fn study(score: f64, core_dice: f64) -> ModelStudyEval {
        ModelStudyEval {
            case: Case::Standard,
            phantom_seed: 0,
            lesion: true,
            unet: Vec::new(),
            threshold: Vec::new(),
            agreement: Vec::new(),
            confidence: Confidence { score, components: BTreeMap::new(), assessable: true, reasons: Vec::new() },
            core_dice,
        }
    }

    #[test]
    fn calibration_counts() {
        // Poor (Dice < 0.5): scores 0.4 and 0.75; good: 0.9 and 0.6. Risks 0.6, 0.25 vs 0.1, 0.4:
        // 0.6 beats both, 0.25 beats 0.1 only, so AUROC 3/4.
        let studies = [study(0.4, 0.2), study(0.75, 0.45), study(0.9, 0.8), study(0.6, 1.0)];
        let c = calibration(&studies, 0.7);
        assert_eq!(c.poor_cases, 2);
        assert_eq!(c.auroc, Some(0.75));
        assert_eq!(c.flagged_fraction, 0.5);
        assert_eq!(c.flagged_poor, 1);
        assert!((c.mean_score_poor.unwrap() - 0.575).abs() < 1e-12);
    }
}
