//! `penumbra phantom`: writes a synthetic acute-stroke CT perfusion study with its ground truth
//! and prints a JSON summary (files written, truth volumes in mL).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::ValueEnum;
use penumbra_phantom::{
    generate, generate_maps_only, write_maps, write_study, AifShape, LesionSize, Matrix, Noise, PhantomParams, PoseSpec, Side, VendorStyle,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory. DICOM files go to DIR/dicom and the truth to DIR/truth.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Random seed: the same seed and options give byte-identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Image noise as a tube current-time product in mAs (SD = 103 / sqrt(mAs) HU at 5 mm).
    #[arg(long, value_name = "MAS", conflicts_with = "noise_sd", default_value_t = 150.0)]
    pub noise_mas: f64,

    /// Image noise as a standard deviation in HU. 0 writes a noise-free study.
    #[arg(long, value_name = "HU")]
    pub noise_sd: Option<f64>,

    /// Number of slices.
    #[arg(long, default_value_t = 16)]
    pub slices: usize,

    /// Slice thickness and spacing in mm.
    #[arg(long, value_name = "MM", default_value_t = 5.0)]
    pub slice_mm: f64,

    /// Number of time points.
    #[arg(long, default_value_t = 60)]
    pub frames: usize,

    /// Time between frames in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,

    /// In-plane matrix: 256 (0.9 mm pixels) or 512 (0.45 mm), or 128 and 64 for quick tests.
    #[arg(long, default_value_t = 256)]
    pub matrix: usize,

    /// Write a study without a lesion.
    #[arg(long)]
    pub no_lesion: bool,

    /// Hemisphere of the lesion.
    #[arg(long, value_enum, default_value_t = SideArg::Random)]
    pub side: SideArg,

    /// Size class of the ischemic core: small 5-20 mL, medium 20-60 mL, large 60-120 mL.
    #[arg(long, value_enum, default_value_t = SizeArg::Medium)]
    pub lesion_size: SizeArg,

    /// Header style for time ordering.
    #[arg(long, value_enum, default_value_t = VendorArg::Ge)]
    pub vendor: VendorArg,

    /// Tilt and shift the head at random (yaw up to 10 degrees, roll up to 5, shift up to 10 px).
    #[arg(long)]
    pub random_pose: bool,

    /// Use the Erlangen phantom's clinical AIF instead of a gamma variate.
    #[arg(long)]
    pub erlangen_aif: bool,

    /// Start the bolus 22 s before the end of the scan, so the tissue curves are cut off.
    #[arg(long)]
    pub truncated_bolus: bool,

    /// Write the true CBF, CBV, MTT and Tmax as vendor-style map series instead of the dynamic series.
    #[arg(long)]
    pub maps_only: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SideArg {
    Left,
    Right,
    Random,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SizeArg {
    Small,
    Medium,
    Large,
    Random,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VendorArg {
    Ge,
    Siemens,
    Philips,
}

/// Builds the generator parameters, or returns the error message for an unsupported matrix.
fn params(args: &Args) -> Result<PhantomParams, String> {
    let matrix = Matrix::from_size(args.matrix).ok_or_else(|| format!("invalid --matrix {}: expected 256 or 512 (or 128, 64 for tests)", args.matrix))?;
    let noise = match args.noise_sd {
        Some(sd) => Noise::HuSd(sd),
        None => Noise::MilliAmpSeconds(args.noise_mas),
    };
    Ok(PhantomParams {
        seed: args.seed,
        matrix,
        slices: args.slices,
        slice_mm: args.slice_mm,
        frames: args.frames,
        frame_interval_s: args.interval,
        noise,
        lesion: !args.no_lesion,
        lesion_side: match args.side {
            SideArg::Left => Side::Left,
            SideArg::Right => Side::Right,
            SideArg::Random => Side::Random,
        },
        lesion_size: match args.lesion_size {
            SizeArg::Small => LesionSize::Small,
            SizeArg::Medium => LesionSize::Medium,
            SizeArg::Large => LesionSize::Large,
            SizeArg::Random => LesionSize::Random,
        },
        pose: if args.random_pose { PoseSpec::Random } else { PoseSpec::Straight },
        motion: None,
        bolus_truncated: args.truncated_bolus,
        aif_shape: if args.erlangen_aif { AifShape::Erlangen } else { AifShape::GammaVariate },
        vendor: match args.vendor {
            VendorArg::Ge => VendorStyle::GeLike,
            VendorArg::Siemens => VendorStyle::SiemensLike,
            VendorArg::Philips => VendorStyle::PhilipsLike,
        },
    })
}

pub fn run(args: Args) -> ExitCode {
    let params = match params(&args) {
        Ok(params) => params,
        Err(message) => {
            eprintln!("penumbra phantom: {message}");
            return ExitCode::from(2);
        }
    };

    let start = Instant::now();
    let result = if args.maps_only {
        generate_maps_only(&params).map(|maps| (write_maps(&maps, &args.out), maps.design.lesion.map(|l| l.hemisphere)))
    } else {
        generate(&params).map(|study| (write_study(&study, &args.out, params.vendor), study.design.lesion.map(|l| l.hemisphere)))
    };

    let (written, hemisphere) = match result {
        Ok((Ok(written), hemisphere)) => (written, hemisphere),
        Ok((Err(error), _)) => {
            eprintln!("penumbra phantom: {error}");
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("penumbra phantom: {error}");
            return ExitCode::from(2);
        }
    };

    let summary = serde_json::json!({
        "seed": params.seed,
        "maps_only": args.maps_only,
        "lesion_hemisphere": hemisphere,
        "written": written,
        "seconds": start.elapsed().as_secs_f64(),
    });
    match serde_json::to_string_pretty(&summary) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("penumbra phantom: could not format the summary: {error}");
            ExitCode::FAILURE
        }
    }
}
