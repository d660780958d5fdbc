//! Phantom studies as model training and evaluation data.
//!
//! Each study runs through the same perfusion computation as the daemon, so the model learns
//! from maps with the noise and bias of real processing. The labels are the phantom's truth.
//! Reviewed QA cases join them through [`qa_labels`].

use ndarray::{Array3, Array4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use penumbra_model::{labels_to_model_grid, to_model_grid, Dataset, ModelError, Norm, UNetConfig};
use penumbra_perfusion::{compute_maps, label, LabelParams, PerfusionMaps, PerfusionParams, ThresholdResult};
use penumbra_phantom::{generate, LesionSize, Matrix, Motion, Noise, PhantomParams, PoseSpec, Side};

use crate::pipeline::resample::{map_channels, split_channel, MAP_CHANNELS, MAX_SLICE_OFFSET};

pub mod qa_labels;
pub mod thresholds;

/// The six inputs of one slice: the four maps, relative CBF and the tissue mask (see
/// [`crate::pipeline::resample::map_channels`]). `penumbra ablate` uses them by default.
pub const SLICE_CHANNELS: [&str; 6] = ["cbf", "cbv", "mtt", "tmax", "rcbf", "tissue"];

/// Input channels of the shipped model, in order: the [`SLICE_CHANNELS`] of the slice, then
/// those of the slice below and of the slice above.
pub const CHANNELS: [&str; 18] = [
    "cbf", "cbv", "mtt", "tmax", "rcbf", "tissue",
    "cbf[z-1]", "cbv[z-1]", "mtt[z-1]", "tmax[z-1]", "rcbf[z-1]", "tissue[z-1]",
    "cbf[z+1]", "cbv[z+1]", "mtt[z+1]", "tmax[z+1]", "rcbf[z+1]", "tissue[z+1]",
];

/// Parses one input channel name of the command line: one of
/// [`crate::pipeline::resample::MAP_CHANNELS`], optionally with a slice offset such as `[z-1]`.
pub fn parse_channel(text: &str) -> Result<String, String> {
    match split_channel(text) {
        Some((map, 0)) => Ok(map),
        Some((map, offset)) => Ok(format!("{map}[z{offset:+}]")),
        None => Err(format!(
            "unknown input channel {text:?}: expected one of {MAP_CHANNELS:?}, optionally with a slice offset of up to \
             {MAX_SLICE_OFFSET} such as cbf[z-1]"
        )),
    }
}

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

/// Set of acquisitions a training set draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TrainingMix {
    /// Well-timed scans at 50 to 190 mAs without motion ([`study_params`]).
    Standard,
    /// The standard scans with 20 mAs, truncated-bolus and head-motion studies among them
    /// ([`varied_study_params`]).
    #[default]
    Varied,
}

impl TrainingMix {
    /// Returns the parameters of study `index` of the set drawn from `seed`.
    pub fn params(self, seed: u64, index: u64) -> PhantomParams {
        match self {
            TrainingMix::Standard => study_params(seed, index),
            TrainingMix::Varied => varied_study_params(seed, index),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TrainingMix::Standard => "standard",
            TrainingMix::Varied => "varied",
        }
    }
}

/// Returns [`study_params`] with the acquisition varied the way real scans vary. Of every 20
/// studies, 4 are at 20 mAs, 4 end before the bolus has passed, 4 have head motion in mid-scan
/// and 8 are unchanged. The motion is drawn from the study's seed: a translation of 1 to 5 mm
/// and a yaw of up to 3 degrees for 5 to 14 frames. The variation cycles with `index / 4`, so it is spread over
/// the noise levels, lesion sizes and lesion-free studies of [`study_params`].
pub fn varied_study_params(seed: u64, index: u64) -> PhantomParams {
    let mut params = study_params(seed, index);
    match (index / 4) % 5 {
        2 => params.noise = Noise::MilliAmpSeconds(20.0),
        3 => params.bolus_truncated = true,
        4 => {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            let distance = rng.random_range(1.0..5.0);
            let angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
            let first_frame = rng.random_range(params.frames / 4..=params.frames / 2);
            let frame_count: usize = rng.random_range(5..15);
            params.motion = Some(Motion {
                first_frame,
                frame_count: frame_count.min(params.frames - first_frame),
                translation_mm: [distance * angle.cos(), distance * angle.sin(), 0.0],
                yaw_deg: rng.random_range(-3.0..3.0),
            });
        }
        _ => {}
    }
    params
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

/// Returns the model input `(z, c, 256, 256)` with the channels `names` and the labels
/// `(z, 256, 256)` of a processed study.
pub fn model_grid(study: &ProcessedStudy, names: &[String]) -> Result<(Array4<f32>, Array3<u8>), ModelError> {
    let stack = map_channels(&study.maps, &study.threshold.reference, names);
    let spacing = study.maps.geometry.spacing_mm;
    let (input, _) = to_model_grid(&stack, [spacing[1], spacing[2]])?;
    let (labels, _) = labels_to_model_grid(&study.truth, [spacing[1], spacing[2]])?;
    Ok((input, labels))
}

/// Adds a processed study to a dataset, with the dataset's channels.
pub fn push_study(dataset: &mut Dataset, study: &ProcessedStudy) -> Result<(), ModelError> {
    let (input, labels) = model_grid(study, dataset.channel_names())?;
    dataset.push_study(&study.id, &input, &labels)
}

/// Returns the U-Net architecture of the shipped model family over `in_channels` inputs: `depth`
/// levels from `width` channels, residual or plain blocks, group normalization.
pub fn unet_architecture(in_channels: usize, width: usize, depth: usize, residual: bool) -> UNetConfig {
    UNetConfig {
        in_channels,
        base_width: width,
        depth,
        residual,
        norm: Norm::Group { groups: 4 },
        ..UNetConfig::default()
    }
}

/// Generates and processes studies `0..studies` of the `mix` set drawn from `seed` on `matrix`
/// (with `slices` slices where given) and adds them to `dataset`, printing one progress line
/// per study to standard error.
pub fn add_phantom_studies(
    dataset: &mut Dataset,
    mix: TrainingMix,
    seed: u64,
    studies: u64,
    matrix: Matrix,
    slices: Option<usize>,
) -> Result<(), String> {
    for index in 0..studies {
        let mut params = mix.params(seed, index);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varied_mix_cycles_through_the_acquisitions() {
        for index in 0..40 {
            let standard = study_params(5, index);
            let varied = varied_study_params(5, index);
            assert_eq!(varied.seed, standard.seed, "the same phantom");
            assert_eq!(varied.lesion, standard.lesion);
            match (index / 4) % 5 {
                2 => assert_eq!(varied.noise, Noise::MilliAmpSeconds(20.0)),
                3 => assert!(varied.bolus_truncated),
                4 => {
                    let motion = varied.motion.expect("a motion study");
                    let distance = motion.translation_mm[0].hypot(motion.translation_mm[1]);
                    assert!((1.0..5.0).contains(&distance), "{distance} mm");
                    assert!((-3.0..3.0).contains(&motion.yaw_deg));
                    assert!((5..15).contains(&motion.frame_count));
                    assert!(motion.first_frame >= varied.frames / 4);
                    assert!(motion.first_frame <= varied.frames / 2);
                    assert_eq!(Some(motion), varied_study_params(5, index).motion, "drawn from the seed");
                }
                _ => assert_eq!(varied, standard),
            }
        }
    }

    #[test]
    fn channel_names_are_checked() {
        assert_eq!(parse_channel(" RCBF").unwrap(), "rcbf");
        assert!(parse_channel("adc").unwrap_err().contains("unknown input channel"));
        assert_eq!(parse_channel("Tmax[z+1]").unwrap(), "tmax[z+1]");
        assert_eq!(parse_channel("cbf[z-2]").unwrap(), "cbf[z-2]");
        assert!(parse_channel("cbf[z-3]").is_err());
        for name in CHANNELS {
            assert_eq!(parse_channel(name).unwrap(), name);
        }
    }
}
