//! Acquisition: frame timing, the noise-free dynamic series, rigid motion, noise and int16
//! quantisation.

use ndarray::{Array3, Array4, Axis};
use penumbra_imaging::Geometry;
use rand::Rng;

use crate::anatomy::{hu, AnatomyClass, AnatomyMaps};
use crate::hemodynamics::{tissue_curve, ParameterMaps};
use crate::input_function::Curve;
use crate::noise::correlated_noise;
use crate::params::{Motion, PhantomParams, VendorStyle};

/// RescaleIntercept of every written CT image: stored value = HU + 1024.
pub const RESCALE_INTERCEPT: f64 = -1024.0;

/// When each slice of each frame is acquired.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Start of each frame in seconds from the first frame.
    pub frame_starts_s: Vec<f64>,
    /// Offset of each slice from its frame start in seconds; all 0 except in shuttle mode.
    pub slice_offsets_s: Vec<f64>,
}

impl Timing {
    /// Builds the timing; Siemens-like studies acquire slice z at `t_f + z * dt / n_z`.
    pub fn new(params: &PhantomParams) -> Timing {
        let frame_starts_s = (0..params.frames).map(|f| f as f64 * params.frame_interval_s).collect();
        let slice_offsets_s = (0..params.slices)
            .map(|z| match params.vendor {
                VendorStyle::SiemensLike => z as f64 * params.frame_interval_s / params.slices as f64,
                _ => 0.0,
            })
            .collect();
        Timing { frame_starts_s, slice_offsets_s }
    }

    /// Returns each frame's time as the mean over its slices, as [`penumbra_imaging::Volume`]
    /// stores it.
    pub fn frame_times_s(&self) -> Vec<f64> {
        let mean_offset = self.slice_offsets_s.iter().sum::<f64>() / self.slice_offsets_s.len().max(1) as f64;
        self.frame_starts_s.iter().map(|t| t + mean_offset).collect()
    }

    /// Returns the time of the last acquired slice in seconds.
    pub fn end_s(&self) -> f64 {
        let last_frame = self.frame_starts_s.last().copied().unwrap_or(0.0);
        last_frame + self.slice_offsets_s.iter().copied().fold(0.0, f64::max)
    }
}

/// Builds the noise-free dynamic series in HU, shape `(t, z, y, x)`. Each voxel mixes its tissue
/// (baseline plus the tissue curve for parenchyma) with arterial blood carrying the delayed AIF and
/// venous blood carrying the VOF, by the anatomy's blood fractions.
pub fn dynamic_hu(anatomy: &AnatomyMaps, maps: &ParameterMaps, aif: &Curve, vof: &Curve, timing: &Timing) -> Array4<f32> {
    let shape = anatomy.class.shape();
    let [nz, ny, nx] = [shape[0], shape[1], shape[2]];
    let frames = timing.frame_starts_s.len();
    let frame_stride = nz * ny * nx;
    let mut voxels = vec![0f32; frames * frame_stride];
    let mut fine = Vec::new();

    // Acquisition time of every (slice, frame) pair.
    let times: Vec<Vec<f64>> = timing
        .slice_offsets_s
        .iter()
        .map(|offset| timing.frame_starts_s.iter().map(|start| start + offset).collect())
        .collect();

    for (flat, ((z, y, x), &class)) in anatomy.class.indexed_iter().enumerate() {
        let index = (z, y, x);
        let artery = anatomy.artery_fraction[index] as f64;
        let vein = anatomy.vein_fraction[index] as f64;
        let tissue = (1.0 - artery - vein).max(0.0);
        let baseline = tissue * anatomy.baseline_hu[index] as f64 + (artery + vein) * hu::BLOOD;

        let perfused = AnatomyClass::is_parenchyma(class) && maps.cbf[index] > 0.0;
        if perfused {
            let (cbf, cbv) = (maps.cbf[index] as f64, maps.cbv[index] as f64);
            tissue_curve(aif, cbf, cbv, maps.delay_s[index] as f64, maps.tau_s[index] as f64, &mut fine);
        }

        for (f, &t) in times[z].iter().enumerate() {
            let mut value = baseline;
            if perfused {
                value += tissue * sample(&fine, aif.dt_s, t);
            }
            if artery > 0.0 {
                value += artery * aif.at(t - anatomy.artery_delay_s[index] as f64);
            }
            if vein > 0.0 {
                value += vein * vof.at(t);
            }
            voxels[f * frame_stride + flat] = value as f32;
        }
    }
    Array4::from_shape_vec([frames, nz, ny, nx], voxels).unwrap_or_else(|_| Array4::zeros([frames, nz, ny, nx]))
}

/// Linear interpolation of `values` (step `dt_s`, from t = 0) at `t_s`, holding the ends.
fn sample(values: &[f64], dt_s: f64, t_s: f64) -> f64 {
    let position = (t_s / dt_s).max(0.0);
    let index = position.floor() as usize;
    match (values.get(index), values.get(index + 1)) {
        (Some(a), Some(b)) => {
            let fraction = position - index as f64;
            a * (1.0 - fraction) + b * fraction
        }
        (Some(a), None) => *a,
        _ => values.last().copied().unwrap_or(0.0),
    }
}

/// Moves the frames of `motion` rigidly: a yaw about the superior axis through `centre_mm`, then
/// a translation. Frames are resampled trilinearly; samples from outside the grid are air.
pub fn apply_motion(volume: &mut Array4<f32>, geometry: &Geometry, centre_mm: [f64; 3], motion: &Motion) {
    let (sin, cos) = motion.yaw_deg.to_radians().sin_cos();
    let last = (motion.first_frame + motion.frame_count).min(volume.shape()[0]);

    for f in motion.first_frame..last {
        let source = volume.index_axis(Axis(0), f).to_owned();
        let mut target = volume.index_axis_mut(Axis(0), f);
        for ((z, y, x), value) in target.indexed_iter_mut() {
            let p = geometry.position_mm(z as f64, y as f64, x as f64);
            // Invert the motion: undo the translation, then rotate back by -yaw.
            let d = [
                p[0] - motion.translation_mm[0] - centre_mm[0],
                p[1] - motion.translation_mm[1] - centre_mm[1],
                p[2] - motion.translation_mm[2] - centre_mm[2],
            ];
            let q = [centre_mm[0] + cos * d[0] + sin * d[1], centre_mm[1] - sin * d[0] + cos * d[1], centre_mm[2] + d[2]];
            *value = sample_trilinear(&source, geometry, q).unwrap_or(hu::AIR as f32);
        }
    }
}

/// Samples `frame` at patient position `p`, or `None` outside the grid.
fn sample_trilinear(frame: &Array3<f32>, geometry: &Geometry, p: [f64; 3]) -> Option<f32> {
    let d = [p[0] - geometry.origin_mm[0], p[1] - geometry.origin_mm[1], p[2] - geometry.origin_mm[2]];
    let along = |axis: [f64; 3], spacing: f64| (d[0] * axis[0] + d[1] * axis[1] + d[2] * axis[2]) / spacing;
    let position = [
        along(geometry.normal, geometry.spacing_mm[0]),
        along(geometry.col_dir, geometry.spacing_mm[1]),
        along(geometry.row_dir, geometry.spacing_mm[2]),
    ];

    let shape = frame.shape();
    let mut base = [0usize; 3];
    let mut fraction = [0.0; 3];
    for axis in 0..3 {
        let limit = (shape[axis] - 1) as f64;
        if !(0.0..=limit).contains(&position[axis]) {
            return None;
        }
        let floor = position[axis].floor().min((shape[axis] as f64 - 2.0).max(0.0));
        base[axis] = floor as usize;
        fraction[axis] = position[axis] - floor;
    }

    let mut sum = 0.0;
    for corner in 0..8 {
        let mut weight = 1.0;
        let mut index = [0usize; 3];
        for axis in 0..3 {
            let upper = (corner >> axis) & 1 == 1;
            index[axis] = (base[axis] + upper as usize).min(shape[axis] - 1);
            weight *= if upper { fraction[axis] } else { 1.0 - fraction[axis] };
        }
        sum += weight * frame[index] as f64;
    }
    Some(sum as f32)
}

/// Adds independent correlated noise of `sd_hu` to every frame (none for 0), then rounds each
/// voxel to the int16 value it is stored as, so the volume equals what the DICOM files hold.
pub fn add_noise_and_quantise(volume: &mut Array4<f32>, sd_hu: f64, rng: &mut impl Rng) {
    let shape = [volume.shape()[1], volume.shape()[2], volume.shape()[3]];
    for mut frame in volume.axis_iter_mut(Axis(0)) {
        if sd_hu > 0.0 {
            let noise = correlated_noise(shape, sd_hu, rng);
            frame += &noise;
        }
        frame.mapv_inplace(|v| stored_value(v) as f32 + RESCALE_INTERCEPT as f32);
    }
}

/// Returns the int16 pixel value that stores `hu` with RescaleSlope 1 and RescaleIntercept -1024.
pub fn stored_value(hu: f32) -> i16 {
    let stored = (hu as f64 - RESCALE_INTERCEPT).round();
    stored.clamp(i16::MIN as f64, i16::MAX as f64) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anatomy::axial_geometry;

    #[test]
    fn stored_value_rounds_and_clamps() {
        assert_eq!(stored_value(-1000.0), 24);
        assert_eq!(stored_value(40.4), 1064);
        assert_eq!(stored_value(40.6), 1065);
        assert_eq!(stored_value(1.0e6), i16::MAX);
    }

    #[test]
    fn siemens_timing_offsets_slices() {
        let params = PhantomParams { slices: 4, frames: 3, frame_interval_s: 2.0, vendor: VendorStyle::SiemensLike, ..Default::default() };
        let timing = Timing::new(&params);
        assert_eq!(timing.slice_offsets_s, vec![0.0, 0.5, 1.0, 1.5]);
        assert_eq!(timing.frame_times_s(), vec![0.75, 2.75, 4.75]);
        assert_eq!(timing.end_s(), 5.5);
    }

    #[test]
    fn motion_translates_frame() {
        let geometry = axial_geometry(8, 1.0, 2, 5.0);
        let mut volume = Array4::zeros([2, 2, 8, 8]);
        volume[[1, 0, 3, 3]] = 100.0;
        let motion = Motion { first_frame: 1, frame_count: 1, translation_mm: [2.0, 0.0, 0.0], yaw_deg: 0.0 };
        apply_motion(&mut volume, &geometry, [0.0; 3], &motion);
        // The bright voxel moves 2 mm (2 columns) towards +x; the edge columns become air.
        assert_eq!(volume[[1, 0, 3, 5]], 100.0);
        assert_eq!(volume[[1, 0, 3, 3]], 0.0);
        assert_eq!(volume[[1, 0, 3, 0]], -1000.0);
    }
}
