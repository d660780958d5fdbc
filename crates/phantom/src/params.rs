//! Parameters of one synthetic study: grid, timing, noise, lesion, pose, motion and vendor style.

use serde::{Deserialize, Serialize};

use crate::PhantomError;

/// In-plane matrix and pixel size. The field of view is 230.4 mm either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Matrix {
    /// 256 x 256 pixels of 0.9 mm.
    M256,
    /// 512 x 512 pixels of 0.45 mm.
    M512,
    /// 128 x 128 pixels of 1.8 mm, for fast tests.
    M128,
    /// 64 x 64 pixels of 3.6 mm, for fast tests.
    M64,
}

impl Matrix {
    /// Returns the number of rows (and columns).
    pub fn size(self) -> usize {
        match self {
            Matrix::M512 => 512,
            Matrix::M256 => 256,
            Matrix::M128 => 128,
            Matrix::M64 => 64,
        }
    }

    /// Returns the pixel spacing in millimetres.
    pub fn pixel_mm(self) -> f64 {
        230.4 / self.size() as f64
    }

    /// Returns the matrix with `size` rows, or `None` for an unsupported size.
    pub fn from_size(size: usize) -> Option<Matrix> {
        match size {
            512 => Some(Matrix::M512),
            256 => Some(Matrix::M256),
            128 => Some(Matrix::M128),
            64 => Some(Matrix::M64),
            _ => None,
        }
    }
}

/// Target image noise of each frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Noise {
    /// Tube current-time product in mAs: SD = 103.09 / sqrt(mAs) HU at 5 mm, scaled by
    /// sqrt(5 mm / slice thickness). The constant is the one of the `pct` toolbox (`pct_mA2sigma`).
    MilliAmpSeconds(f64),
    /// Standard deviation in HU; 0 gives a noise-free study.
    HuSd(f64),
}

impl Noise {
    /// Returns the target standard deviation in HU for slices of `slice_mm`.
    pub fn sd_hu(self, slice_mm: f64) -> f64 {
        match self {
            Noise::MilliAmpSeconds(mas) => 103.09 / mas.sqrt() * (5.0 / slice_mm).sqrt(),
            Noise::HuSd(sd) => sd,
        }
    }
}

/// Hemisphere that carries the lesion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// Patient left (+x in DICOM LPS).
    Left,
    /// Patient right (-x in DICOM LPS).
    Right,
    /// Drawn from the seed.
    Random,
}

/// Size class of the ischemic core; the penumbra scales with a drawn mismatch ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LesionSize {
    /// Design core volume 5 to 20 mL.
    Small,
    /// Design core volume 20 to 60 mL.
    Medium,
    /// Design core volume 60 to 120 mL.
    Large,
    /// Any of the three, drawn from the seed.
    Random,
}

/// How the DICOM headers order time, after three scanner families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VendorStyle {
    /// TemporalPositionIdentifier and NumberOfTemporalPositions present.
    GeLike,
    /// No TemporalPositionIdentifier; slice z is acquired at `t_f + z * dt / n_z` (shuttle mode).
    SiemensLike,
    /// TemporalPositionIdentifier present but InstanceNumber shuffled.
    PhilipsLike,
}

/// Arterial input function shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AifShape {
    /// Gamma variate (alpha 3, beta 1.5 s) with recirculation and plateau.
    GammaVariate,
    /// The clinical AIF samples of the Erlangen digital brain perfusion phantom, interpolated.
    Erlangen,
}

/// Rigid head pose: rotations about the superior axis (yaw) and the anterior axis (roll), and a
/// left-right shift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    pub yaw_deg: f64,
    pub roll_deg: f64,
    pub shift_x_mm: f64,
}

/// How the pose is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PoseSpec {
    /// Head centred and straight.
    Straight,
    /// Yaw 0 to 10 degrees, roll 0 to 5 degrees, shift up to 10 pixels, each with a random sign.
    Random,
    /// The given pose.
    Fixed(Pose),
}

/// Rigid patient motion during a run of frames: a translation and a yaw about the head centre.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Motion {
    /// First moved frame (0-based).
    pub first_frame: usize,
    /// Number of moved frames.
    pub frame_count: usize,
    /// Translation in patient LPS millimetres.
    pub translation_mm: [f64; 3],
    /// Rotation about the superior axis in degrees.
    pub yaw_deg: f64,
}

/// Everything that defines one synthetic study. The same parameters give the same study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhantomParams {
    pub seed: u64,
    pub matrix: Matrix,
    pub slices: usize,
    pub slice_mm: f64,
    pub frames: usize,
    pub frame_interval_s: f64,
    pub noise: Noise,
    /// Whether the study has a lesion; without one both hemispheres are normal.
    pub lesion: bool,
    pub lesion_side: Side,
    pub lesion_size: LesionSize,
    pub pose: PoseSpec,
    pub motion: Option<Motion>,
    /// Whether the bolus arrives so late that the scan ends before the tissue curves return to
    /// baseline.
    pub bolus_truncated: bool,
    pub aif_shape: AifShape,
    pub vendor: VendorStyle,
}

impl Default for PhantomParams {
    /// A 256 x 256 x 16 x 5 mm study of 60 frames 1 s apart at 150 mAs, with a random-side
    /// medium lesion, straight pose and GE-like headers.
    fn default() -> Self {
        PhantomParams {
            seed: 42,
            matrix: Matrix::M256,
            slices: 16,
            slice_mm: 5.0,
            frames: 60,
            frame_interval_s: 1.0,
            noise: Noise::MilliAmpSeconds(150.0),
            lesion: true,
            lesion_side: Side::Random,
            lesion_size: LesionSize::Medium,
            pose: PoseSpec::Straight,
            motion: None,
            bolus_truncated: false,
            aif_shape: AifShape::GammaVariate,
            vendor: VendorStyle::GeLike,
        }
    }
}

impl PhantomParams {
    /// Checks every parameter and returns the first one out of range.
    pub fn validate(&self) -> Result<(), PhantomError> {
        let invalid = |name: &'static str, value: String, expected: &'static str| PhantomError::InvalidParameter {
            name,
            value,
            expected,
        };

        if !(1..=64).contains(&self.slices) {
            return Err(invalid("slices", self.slices.to_string(), "1 to 64"));
        }
        if !(self.slice_mm.is_finite() && (0.5..=20.0).contains(&self.slice_mm)) {
            return Err(invalid("slice_mm", self.slice_mm.to_string(), "0.5 to 20 mm"));
        }
        if !(2..=200).contains(&self.frames) {
            return Err(invalid("frames", self.frames.to_string(), "2 to 200"));
        }
        if !(self.frame_interval_s.is_finite() && (0.25..=10.0).contains(&self.frame_interval_s)) {
            return Err(invalid("frame_interval_s", self.frame_interval_s.to_string(), "0.25 to 10 s"));
        }

        let sd = self.noise.sd_hu(self.slice_mm);
        if !(sd.is_finite() && (0.0..=200.0).contains(&sd)) {
            return Err(invalid("noise", format!("{:?}", self.noise), "an SD of 0 to 200 HU or a positive mAs"));
        }

        if let PoseSpec::Fixed(pose) = self.pose {
            let finite = pose.yaw_deg.is_finite() && pose.roll_deg.is_finite() && pose.shift_x_mm.is_finite();
            if !finite || pose.yaw_deg.abs() > 30.0 || pose.roll_deg.abs() > 30.0 || pose.shift_x_mm.abs() > 40.0 {
                return Err(invalid("pose", format!("{pose:?}"), "|yaw|, |roll| <= 30 degrees and |shift| <= 40 mm"));
            }
        }

        if let Some(motion) = self.motion {
            let finite = motion.translation_mm.iter().all(|v| v.is_finite()) && motion.yaw_deg.is_finite();
            let in_range = motion.translation_mm.iter().all(|v| v.abs() <= 20.0) && motion.yaw_deg.abs() <= 10.0;
            if !finite || !in_range || motion.first_frame + motion.frame_count > self.frames {
                return Err(invalid(
                    "motion",
                    format!("{motion:?}"),
                    "frames inside the scan, |translation| <= 20 mm, |yaw| <= 10 degrees",
                ));
            }
        }
        Ok(())
    }

    /// Returns the scan duration from the first to the last frame in seconds.
    pub fn duration_s(&self) -> f64 {
        (self.frames - 1) as f64 * self.frame_interval_s
    }
}
