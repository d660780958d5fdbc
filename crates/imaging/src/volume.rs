//! A stack of slices in patient space, static or dynamic.

use ndarray::{Array3, Array4};
use serde::{Deserialize, Serialize};

/// Position and orientation of a slice stack in the patient coordinate system (DICOM LPS, mm).
///
/// Voxel `(z, y, x)` is at `origin_mm + x * spacing_mm[2] * row_dir + y * spacing_mm[1] * col_dir
/// + z * spacing_mm[0] * normal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// ImagePositionPatient of the first slice (z index 0), centre of its first pixel.
    pub origin_mm: [f64; 3],
    /// Direction of increasing column index x (first triplet of ImageOrientationPatient).
    pub row_dir: [f64; 3],
    /// Direction of increasing row index y (second triplet of ImageOrientationPatient).
    pub col_dir: [f64; 3],
    /// Direction of increasing slice index z: the unit slice normal, oriented along the sorted slices.
    pub normal: [f64; 3],
    /// Voxel spacing `(z, y, x)`: slice spacing from ImagePositionPatient differences, then
    /// PixelSpacing row spacing and column spacing.
    pub spacing_mm: [f64; 3],
}

impl Geometry {
    /// Returns the volume of one voxel in millilitres.
    pub fn voxel_volume_ml(&self) -> f64 {
        self.spacing_mm.iter().product::<f64>() / 1000.0
    }

    /// Returns the patient-space position (mm) of the centre of voxel `(z, y, x)`.
    pub fn position_mm(&self, z: f64, y: f64, x: f64) -> [f64; 3] {
        let mut p = self.origin_mm;
        for (i, value) in p.iter_mut().enumerate() {
            *value += x * self.spacing_mm[2] * self.row_dir[i]
                + y * self.spacing_mm[1] * self.col_dir[i]
                + z * self.spacing_mm[0] * self.normal[i];
        }
        p
    }
}

/// Voxels in physical units (HU for CT, map units for perfusion maps) with their geometry.
///
/// Static data has one frame (`t = 1`) and an empty or single-entry `frame_times_s`.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Voxel values, shape `(t, z, y, x)`.
    pub voxels: Array4<f32>,
    /// Position of the slices in patient space.
    pub geometry: Geometry,
    /// Acquisition time of each frame in seconds from the first frame, one per `t`.
    /// Shuttle-mode data with per-slice offsets keeps the frame mean here.
    pub frame_times_s: Vec<f64>,
}

impl Volume {
    /// Returns the number of frames (time points).
    pub fn frames(&self) -> usize {
        self.voxels.shape()[0]
    }

    /// Returns the spatial shape `(z, y, x)`.
    pub fn spatial_shape(&self) -> [usize; 3] {
        let s = self.voxels.shape();
        [s[1], s[2], s[3]]
    }

    /// Returns frame `t` as an owned `(z, y, x)` array.
    pub fn frame(&self, t: usize) -> Array3<f32> {
        self.voxels.index_axis(ndarray::Axis(0), t).to_owned()
    }
}
