//! Digital acute-stroke CT perfusion phantom with exact ground truth.
//!
//! [`generate`] builds a dynamic CT study in HU from a procedural head (superellipsoid layers,
//! deep nuclei, ventricles, falx, PSF-blurred arteries and sinuses), normal and ischemic
//! parameter maps, a gamma-variate AIF with its VOF, and the indicator-dilution tissue model.
//! [`write_study`] writes it as CT Image Storage files with the truth beside them.
//!
//! The same [`PhantomParams`] (seed included) always give the same voxels, truth and files.
//! Every random draw comes from a ChaCha8 stream keyed by the seed and the draw's purpose, so
//! changing the noise does not move the anatomy or the lesion.

pub mod acquisition;
pub mod anatomy;
pub mod dicom_out;
pub mod hemodynamics;
pub mod input_function;
pub mod lesion;
pub mod noise;
pub mod params;
pub mod truth;

use penumbra_imaging::{Geometry, Volume};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use dicom_out::{write_maps, write_study, WrittenStudy};
pub use lesion::{Hemisphere, LesionDesign};
pub use params::{AifShape, LesionSize, Matrix, Motion, Noise, PhantomParams, Pose, PoseSpec, Side, VendorStyle};
pub use truth::{LesionVolumes, TissueClass, Truth};

use acquisition::Timing;
use anatomy::{HeadFrame, SmoothField};
use input_function::AifDesign;
use truth::InputFunctions;

/// Errors of the phantom generator and writer.
#[derive(Debug, thiserror::Error)]
pub enum PhantomError {
    #[error("invalid phantom parameter {name} = {value}: expected {expected}")]
    InvalidParameter { name: &'static str, value: String, expected: &'static str },
    #[error("could not create directory {path}: {source}")]
    CreateDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("could not write {path}: {source}")]
    Write { path: std::path::PathBuf, source: std::io::Error },
    #[error("could not build the DICOM file meta group for {path}: {message}")]
    FileMeta { path: std::path::PathBuf, message: String },
    #[error("could not write DICOM file {path}: {message}")]
    WriteDicom { path: std::path::PathBuf, message: String },
    #[error("could not serialise {what} to JSON: {source}")]
    Json { what: &'static str, source: serde_json::Error },
}

/// Purposes of the random streams; each gets its own ChaCha8 stream.
#[derive(Clone, Copy)]
enum Stream {
    Pose = 1,
    Texture = 2,
    Hemodynamics = 3,
    Lesion = 4,
    LesionShape = 5,
    InputFunction = 6,
    Noise = 7,
    InstanceOrder = 8,
}

fn rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// One generated study: the dynamic series, its truth and how it was drawn.
#[derive(Debug, Clone)]
pub struct PhantomStudy {
    pub params: PhantomParams,
    /// HU, `(t, z, y, x)`, already rounded to the stored int16 values.
    pub volume: Volume,
    /// Per-slice acquisition offset from the frame start in seconds (shuttle mode only).
    pub slice_offsets_s: Vec<f64>,
    pub truth: Truth,
    pub design: Design,
}

/// The parameter maps and truth without the dynamic series, for vendor-style map series.
#[derive(Debug, Clone)]
pub struct PhantomMaps {
    pub params: PhantomParams,
    pub geometry: Geometry,
    pub truth: Truth,
    pub design: Design,
}

/// Everything drawn from the seed besides the voxels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Design {
    pub pose: Pose,
    pub head_frame: HeadFrame,
    pub aif: AifDesign,
    /// Mean transit time of the venous output function's transit kernel in seconds.
    pub vof_mean_transit_s: f64,
    pub lesion: Option<LesionDesign>,
    /// Target noise SD in HU.
    pub noise_sd_hu: f64,
}

/// Everything [`generate`] and [`generate_maps_only`] share.
struct Model {
    geometry: Geometry,
    anatomy: anatomy::AnatomyMaps,
    maps: hemodynamics::ParameterMaps,
    timing: Timing,
    aif: input_function::Curve,
    vof: input_function::Curve,
    truth: Truth,
    design: Design,
}

fn build_model(params: &PhantomParams) -> Model {
    let size = params.matrix.size();
    let geometry = anatomy::axial_geometry(size, params.matrix.pixel_mm(), params.slices, params.slice_mm);
    let shape = [params.slices, size, size];

    let pose = draw_pose(params);
    let head_frame = HeadFrame::new([pose.shift_x_mm, 0.0, 0.0], pose.yaw_deg, pose.roll_deg);
    let texture = SmoothField::new(&mut rng(params.seed, Stream::Texture), 8);
    let anatomy = anatomy::build(&geometry, shape, &head_frame, &texture);

    let mut maps = hemodynamics::normal_maps(&anatomy, &mut rng(params.seed, Stream::Hemodynamics));
    let mut lesion_design = None;
    let mut masks = None;
    if params.lesion {
        let design = lesion::draw(&mut rng(params.seed, Stream::Lesion), params.lesion_side, params.lesion_size);
        let design_masks = lesion::design_masks(&design, &anatomy, &mut rng(params.seed, Stream::LesionShape));
        lesion::apply(&design, &design_masks, &anatomy, geometry.spacing_mm, &mut maps);
        lesion_design = Some(design);
        masks = Some(design_masks);
    }

    let timing = Timing::new(params);
    let mut input_rng = rng(params.seed, Stream::InputFunction);
    let aif_design = input_function::draw_aif(&mut input_rng, params.aif_shape, params.duration_s(), params.bolus_truncated);
    let vof_mean_transit_s = rand::Rng::random_range(&mut input_rng, 5.0..7.0);
    let aif = input_function::arterial(&aif_design, timing.end_s() + 1.0);
    let vof = input_function::venous(&aif, vof_mean_transit_s);

    let frame_times_s = timing.frame_times_s();
    let input_functions = InputFunctions {
        aif_hu: frame_times_s.iter().map(|&t| aif.at(t)).collect(),
        vof_hu: frame_times_s.iter().map(|&t| vof.at(t)).collect(),
        frame_times_s,
        fine_dt_s: aif.dt_s,
        aif_fine_hu: aif.values.clone(),
        vof_fine_hu: vof.values.clone(),
    };

    let hemisphere = lesion_design.as_ref().map(|d| d.hemisphere);
    let truth = truth::build(&anatomy, &maps, masks.as_ref(), hemisphere, input_functions, geometry.voxel_volume_ml());
    let design = Design {
        pose,
        head_frame,
        aif: aif_design,
        vof_mean_transit_s,
        lesion: lesion_design,
        noise_sd_hu: params.noise.sd_hu(params.slice_mm),
    };
    Model { geometry, anatomy, maps, timing, aif, vof, truth, design }
}

fn draw_pose(params: &PhantomParams) -> Pose {
    match params.pose {
        PoseSpec::Straight => Pose { yaw_deg: 0.0, roll_deg: 0.0, shift_x_mm: 0.0 },
        PoseSpec::Fixed(pose) => pose,
        PoseSpec::Random => {
            let mut rng = rng(params.seed, Stream::Pose);
            let mut signed = |limit: f64| {
                let magnitude = rand::Rng::random_range(&mut rng, 0.0..limit);
                if rand::Rng::random::<bool>(&mut rng) {
                    magnitude
                } else {
                    -magnitude
                }
            };
            Pose { yaw_deg: signed(10.0), roll_deg: signed(5.0), shift_x_mm: signed(10.0 * params.matrix.pixel_mm()) }
        }
    }
}

/// Generates the dynamic study and its truth. Invalid parameters give
/// [`PhantomError::InvalidParameter`]; nothing else fails.
pub fn generate(params: &PhantomParams) -> Result<PhantomStudy, PhantomError> {
    params.validate()?;
    let model = build_model(params);

    let mut voxels = acquisition::dynamic_hu(&model.anatomy, &model.maps, &model.aif, &model.vof, &model.timing);
    if let Some(motion) = &params.motion {
        acquisition::apply_motion(&mut voxels, &model.geometry, model.design.head_frame.centre_mm, motion);
    }
    acquisition::add_noise_and_quantise(&mut voxels, model.design.noise_sd_hu, &mut rng(params.seed, Stream::Noise));

    let volume = Volume { voxels, geometry: model.geometry, frame_times_s: model.timing.frame_times_s() };
    Ok(PhantomStudy {
        params: params.clone(),
        volume,
        slice_offsets_s: model.timing.slice_offsets_s,
        truth: model.truth,
        design: model.design,
    })
}

/// Generates only the parameter maps and truth (no dynamic series), for writing vendor-style
/// CBF, CBV, MTT and Tmax series with [`write_maps`].
pub fn generate_maps_only(params: &PhantomParams) -> Result<PhantomMaps, PhantomError> {
    params.validate()?;
    let model = build_model(params);
    Ok(PhantomMaps { params: params.clone(), geometry: model.geometry, truth: model.truth, design: model.design })
}

/// Returns a seeded generator for the InstanceNumber shuffle of Philips-like studies.
pub(crate) fn instance_order_rng(seed: u64) -> ChaCha8Rng {
    rng(seed, Stream::InstanceOrder)
}
