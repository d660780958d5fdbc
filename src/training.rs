//! Phantom studies as model training and evaluation data.
//!
//! Each study runs through the same perfusion computation as the daemon, so the model learns
//! from maps with the noise and bias of real processing. The labels are the phantom's truth.
//! Reviewed QA cases join them through [`qa_labels`].

use ndarray::{Array3, Array4};
use penumbra_model::{labels_to_model_grid, to_model_grid, Dataset, ModelError, Norm, UNetConfig};
use penumbra_perfusion::{compute_maps, label, LabelParams, PerfusionMaps, PerfusionParams, ThresholdResult};
use penumbra_phantom::{generate, LesionSize, Matrix, Noise, PhantomParams, PoseSpec, Side};

use crate::pipeline::resample::map_channels;

pub mod qa_labels;

/// Input channels of the shipped model, in order.
pub const CHANNELS: [&str; 4] = ["cbf", "cbv", "mtt", "tmax"];

/// Tube currents the training and evaluation studies are drawn from (mAs, 5 mm slices).
const NOISE_MAS: [f64; 4] = [190.0, 150.0, 100.0, 50.0];

/// One phantom study after perfusion processing.
pub struct ProcessedStudy {
    pub id: String,
    pub params: PhantomParams,
    pub maps: PerfusionMaps,
    pub threshold: ThresholdResult,
    /// True labels on the native grid.
    pub truth: Array3<u8>,
}

/// Returns the phantom parameters of study `index` of a set drawn from `seed`. Noise, lesion
/// size, side and pose vary, and every eighth study has no lesion.
pub fn study_params(seed: u64, index: u64) -> PhantomParams {
    let study_seed = seed.wrapping_mul(1_000_003).wrapping_add(index);
    let sizes = [LesionSize::Small, LesionSize::Medium, LesionSize::Large];
    PhantomParams {
        seed: study_seed,
        noise: Noise::MilliAmpSeconds(NOISE_MAS[(index % 4) as usize]),
        lesion: index % 8 != 7,
        lesion_side: Side::Random,
        lesion_size: sizes[(index / 2 % 3) as usize],
        pose: PoseSpec::Random,
        ..PhantomParams::default()
    }
}

/// Generates and processes one phantom study.
pub fn process_study(params: &PhantomParams) -> Result<ProcessedStudy, String> {
    let study = generate(params).map_err(|e| format!("phantom seed {}: {e}", params.seed))?;
    let result = compute_maps(&study.volume, &PerfusionParams::default())
        .map_err(|e| format!("perfusion maps for phantom seed {}: {e}", params.seed))?;
    let threshold = label(&result.maps, &LabelParams::rapid());
    Ok(ProcessedStudy {
        id: format!("phantom-{}", params.seed),
        params: params.clone(),
        maps: result.maps,
        threshold,
        truth: study.truth.labels,
    })
}

/// Returns the model input `(z, c, 256, 256)` and labels `(z, 256, 256)` of a processed study.
pub fn model_grid(study: &ProcessedStudy) -> Result<(Array4<f32>, Array3<u8>), ModelError> {
    let names: Vec<String> = CHANNELS.iter().map(|c| c.to_string()).collect();
    let stack = map_channels(&study.maps, &names);
    let spacing = study.maps.geometry.spacing_mm;
    let (input, _) = to_model_grid(&stack, [spacing[1], spacing[2]])?;
    let (labels, _) = labels_to_model_grid(&study.truth, [spacing[1], spacing[2]])?;
    Ok((input, labels))
}

/// Adds a processed study to a dataset.
pub fn push_study(dataset: &mut Dataset, study: &ProcessedStudy) -> Result<(), ModelError> {
    let (input, labels) = model_grid(study)?;
    dataset.push_study(&study.id, &input, &labels)
}

/// Returns the U-Net architecture of the shipped model family over [`CHANNELS`]: `depth`
/// levels from `width` channels, residual or plain blocks, group normalization.
pub fn unet_architecture(width: usize, depth: usize, residual: bool) -> UNetConfig {
    UNetConfig {
        in_channels: CHANNELS.len(),
        base_width: width,
        depth,
        residual,
        norm: Norm::Group { groups: 4 },
        ..UNetConfig::default()
    }
}

/// Generates and processes studies `0..studies` of the set drawn from `seed` on `matrix`
/// (with `slices` slices where given) and adds them to `dataset`, printing one progress line
/// per study to standard error.
pub fn add_phantom_studies(
    dataset: &mut Dataset,
    seed: u64,
    studies: u64,
    matrix: Matrix,
    slices: Option<usize>,
) -> Result<(), String> {
    for index in 0..studies {
        let mut params = study_params(seed, index);
        params.matrix = matrix;
        if let Some(slices) = slices {
            params.slices = slices;
        }
        let study = process_study(&params)?;
        push_study(dataset, &study).map_err(|e| e.to_string())?;
        eprintln!(
            "study {}/{studies}: {} (truth core {} voxels)",
            index + 1,
            study.id,
            study.truth.iter().filter(|&&v| v == 2).count()
        );
    }
    Ok(())
}
