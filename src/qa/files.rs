//! The files of one QA case under `<data_dir>/qa/<study_uid>/<case_id>/`.
//!
//! - `cbf.npy`, `cbv.npy`, `mtt.npy`, `tmax.npy`: the perfusion maps the model reads, `float32`
//!   `(z, y, x)`. Cases queued before CBV and MTT were stored have only `cbf.npy` and `tmax.npy`.
//! - `grid.json`: the voxel spacing `(z, y, x)` in millimetres, needed to resample the maps to the
//!   model grid. Older cases lack it too.
//! - `unet.npy`, `threshold.npy`: the two label volumes, `uint8` `(z, y, x)`.
//! - `corrected.npy`: the reviewer's mask, written on the first saved slice.
//! - `cbf/NNN.png`, `tmax/NNN.png`: one 8-bit greyscale image per slice for the web page.
//!
//! The `.npy` files follow NumPy format version 1.0 with C order, so `numpy.load` reads them.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView2, Axis};
use penumbra_imaging::LabelVolume;
use serde::{Deserialize, Serialize};

use super::QaError;

/// CBF mapped to white in the slice images (mL/100 g/min).
pub const CBF_DISPLAY_MAX: f32 = 80.0;
/// Tmax mapped to white in the slice images (s).
pub const TMAX_DISPLAY_MAX: f32 = 16.0;

/// File with the voxel spacing of a case.
pub const GRID_FILE: &str = "grid.json";

/// The maps every case stores, so that a training run can stack any of the model's input
/// channels (`crate::pipeline::resample::MAP_CHANNELS`). Map `name` is stored as `<name>.npy`.
pub const MAP_NAMES: [&str; 6] = ["cbf", "cbv", "mtt", "tmax", "rcbf", "tissue"];

/// Returns the file name of map `name`.
pub fn map_file(name: &str) -> String {
    format!("{name}.npy")
}

/// The maps and labels a reviewer needs, all on the same `(z, y, x)` grid, and the maps a training
/// run needs to reuse the case.
#[derive(Debug, Clone)]
pub struct CaseMaps {
    /// Cerebral blood flow (mL/100 g/min).
    pub cbf: Array3<f32>,
    /// Cerebral blood volume (mL/100 g).
    pub cbv: Array3<f32>,
    /// Mean transit time (s).
    pub mtt: Array3<f32>,
    /// Tmax (s).
    pub tmax: Array3<f32>,
    /// CBF relative to the reference tissue, clipped as the model input is.
    pub rcbf: Array3<f32>,
    /// Tissue mask: 1 in brain voxels that are not vessels, 0 elsewhere.
    pub tissue: Array3<f32>,
    /// U-Net labels (0 background, 1 penumbra, 2 core).
    pub unet_labels: LabelVolume,
    /// Threshold labels, same values.
    pub threshold_labels: LabelVolume,
    /// Voxel spacing `(z, y, x)` in millimetres.
    pub spacing_mm: [f64; 3],
}

/// The contents of `grid.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CaseGrid {
    /// Voxel spacing `(z, y, x)` in millimetres.
    pub spacing_mm: [f64; 3],
}

impl CaseMaps {
    /// Returns the common shape `(z, y, x)`, or an error naming the array that differs.
    pub fn shape(&self) -> Result<[usize; 3], QaError> {
        let shape = dims(self.cbf.dim());
        let others = [
            ("cbv", dims(self.cbv.dim())),
            ("mtt", dims(self.mtt.dim())),
            ("tmax", dims(self.tmax.dim())),
            ("rcbf", dims(self.rcbf.dim())),
            ("tissue", dims(self.tissue.dim())),
            ("unet_labels", dims(self.unet_labels.dim())),
            ("threshold_labels", dims(self.threshold_labels.dim())),
        ];
        for (name, other) in others {
            if other != shape {
                return Err(QaError::InvalidCase(format!(
                    "{name} has shape {other:?} but cbf has {shape:?}; all maps must share one grid"
                )));
            }
        }
        if shape.contains(&0) {
            return Err(QaError::InvalidCase(format!("maps have an empty shape {shape:?}")));
        }
        if !self.spacing_mm.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(QaError::InvalidCase(format!(
                "voxel spacing {:?} mm must be finite and positive",
                self.spacing_mm
            )));
        }
        Ok(shape)
    }
}

fn dims((z, y, x): (usize, usize, usize)) -> [usize; 3] {
    [z, y, x]
}

/// A map with per-slice images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapKind {
    Cbf,
    Tmax,
}

impl MapKind {
    /// Parses `cbf` or `tmax`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "cbf" => Some(Self::Cbf),
            "tmax" => Some(Self::Tmax),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Cbf => "cbf",
            Self::Tmax => "tmax",
        }
    }
}

/// The label volumes of a case that a request can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    Unet,
    Threshold,
    Corrected,
}

impl MaskKind {
    fn file_name(self) -> &'static str {
        match self {
            Self::Unet => "unet.npy",
            Self::Threshold => "threshold.npy",
            Self::Corrected => "corrected.npy",
        }
    }
}

/// Checks that a Study Instance UID is a DICOM UID (digits and dots, at most 64 characters), so
/// that it is safe as a directory name.
pub fn validate_study_uid(uid: &str) -> Result<(), QaError> {
    let valid = !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !uid.starts_with('.')
        && !uid.ends_with('.')
        && !uid.contains("..");
    if valid {
        Ok(())
    } else {
        Err(QaError::InvalidCase(format!(
            "study uid {uid:?} is not a DICOM UID: use digits and single dots, at most 64 characters"
        )))
    }
}

/// Returns the directory of one case.
pub fn case_dir(data_dir: &Path, study_uid: &str, case_id: i64) -> PathBuf {
    data_dir.join("qa").join(study_uid).join(case_id.to_string())
}

/// Writes every file of a new case into `dir`, creating it.
pub fn write_case_files(dir: &Path, maps: &CaseMaps) -> Result<(), QaError> {
    let shape = maps.shape()?;
    fs::create_dir_all(dir.join("cbf")).map_err(|e| QaError::io(dir, e))?;
    fs::create_dir_all(dir.join("tmax")).map_err(|e| QaError::io(dir, e))?;

    let channels = [&maps.cbf, &maps.cbv, &maps.mtt, &maps.tmax, &maps.rcbf, &maps.tissue];
    for (name, map) in MAP_NAMES.into_iter().zip(channels) {
        write_npy_f32(&dir.join(map_file(name)), map)?;
    }
    write_grid(dir, &CaseGrid { spacing_mm: maps.spacing_mm })?;
    write_npy_u8(&dir.join("unet.npy"), &maps.unet_labels)?;
    write_npy_u8(&dir.join("threshold.npy"), &maps.threshold_labels)?;

    for z in 0..shape[0] {
        let cbf = maps.cbf.index_axis(Axis(0), z);
        write_slice_png(&slice_png_path(dir, MapKind::Cbf, z), cbf, CBF_DISPLAY_MAX)?;
        let tmax = maps.tmax.index_axis(Axis(0), z);
        write_slice_png(&slice_png_path(dir, MapKind::Tmax, z), tmax, TMAX_DISPLAY_MAX)?;
    }
    Ok(())
}

fn write_grid(dir: &Path, grid: &CaseGrid) -> Result<(), QaError> {
    let path = dir.join(GRID_FILE);
    let text = serde_json::to_string_pretty(grid).map_err(|e| QaError::InvalidCase(e.to_string()))?;
    fs::write(&path, text).map_err(|e| QaError::io(&path, e))
}

/// Reads `grid.json` of a case, or `Ok(None)` for a case queued before the spacing was stored.
pub fn read_grid(dir: &Path) -> Result<Option<CaseGrid>, QaError> {
    let path = dir.join(GRID_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).map_err(|e| QaError::io(&path, e))?;
    let grid = serde_json::from_str(&text)
        .map_err(|e| QaError::Corrupt(format!("{} is not a valid grid file: {e}", path.display())))?;
    Ok(Some(grid))
}

/// Returns the model-input files and `grid.json` that a case folder lacks; empty for a case that
/// can become a training sample.
pub fn missing_training_files(dir: &Path) -> Vec<String> {
    let names = MAP_NAMES.into_iter().map(map_file).chain([GRID_FILE.to_owned()]);
    names.filter(|name| !dir.join(name).exists()).collect()
}

/// Returns the path of one slice image.
pub fn slice_png_path(dir: &Path, kind: MapKind, slice: usize) -> PathBuf {
    dir.join(kind.name()).join(format!("{slice:03}.png"))
}

/// Reads one label volume of a case, or `Ok(None)` when the file does not exist (no correction yet).
pub fn read_mask(dir: &Path, kind: MaskKind) -> Result<Option<LabelVolume>, QaError> {
    let path = dir.join(kind.file_name());
    if !path.exists() {
        return Ok(None);
    }
    read_npy_u8(&path).map(Some)
}

/// Replaces one slice of the corrected mask, starting from the U-Net labels when no correction
/// exists yet. The file is replaced atomically.
pub fn write_corrected_slice(dir: &Path, slice: usize, values: ArrayView2<u8>) -> Result<(), QaError> {
    let mut mask = match read_mask(dir, MaskKind::Corrected)? {
        Some(mask) => mask,
        None => read_npy_u8(&dir.join(MaskKind::Unet.file_name()))?,
    };
    let (depth, height, width) = mask.dim();
    if slice >= depth {
        return Err(QaError::InvalidMask(format!("slice {slice} is out of range 0..{depth}")));
    }
    if values.dim() != (height, width) {
        return Err(QaError::InvalidMask(format!(
            "mask is {:?} (height, width) but the case slices are ({height}, {width})",
            values.dim()
        )));
    }
    mask.index_axis_mut(Axis(0), slice).assign(&values);

    let path = dir.join(MaskKind::Corrected.file_name());
    let temporary = dir.join("corrected.npy.tmp");
    write_npy_u8(&temporary, &mask)?;
    fs::rename(&temporary, &path).map_err(|e| QaError::io(&path, e))
}

/// A run-length encoded 2-D label slice in row-major order. `runs` lists `[value, count]` pairs
/// whose counts add up to `width * height`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RleMask {
    pub width: usize,
    pub height: usize,
    pub runs: Vec<[u32; 2]>,
}

impl RleMask {
    /// Encodes one slice.
    pub fn encode(slice: ArrayView2<u8>) -> Self {
        let (height, width) = slice.dim();
        let mut runs: Vec<[u32; 2]> = Vec::new();
        for &value in slice.iter() {
            match runs.last_mut() {
                Some(run) if run[0] == u32::from(value) => run[1] += 1,
                _ => runs.push([u32::from(value), 1]),
            }
        }
        Self { width, height, runs }
    }

    /// Decodes into a `(height, width)` array, checking label values and the total count.
    pub fn decode(&self) -> Result<ndarray::Array2<u8>, QaError> {
        let expected = self.width.checked_mul(self.height).filter(|&n| n <= 1 << 26).ok_or_else(|| {
            QaError::InvalidMask(format!("mask size {}x{} is too large", self.width, self.height))
        })?;
        let mut values = Vec::with_capacity(expected);
        for &[value, count] in &self.runs {
            if value > 2 {
                return Err(QaError::InvalidMask(format!(
                    "label value {value} is invalid: use 0 background, 1 penumbra or 2 core"
                )));
            }
            if values.len() + count as usize > expected {
                return Err(QaError::InvalidMask(format!("runs cover more than {expected} pixels")));
            }
            values.extend(std::iter::repeat_n(value as u8, count as usize));
        }
        if values.len() != expected {
            return Err(QaError::InvalidMask(format!(
                "runs cover {} pixels but width x height is {expected}",
                values.len()
            )));
        }
        ndarray::Array2::from_shape_vec((self.height, self.width), values)
            .map_err(|e| QaError::InvalidMask(format!("mask shape is invalid: {e}")))
    }
}

fn write_slice_png(path: &Path, slice: ArrayView2<f32>, display_max: f32) -> Result<(), QaError> {
    let (height, width) = slice.dim();
    let pixels: Vec<u8> = slice
        .iter()
        .map(|&v| if v.is_finite() { (v / display_max * 255.0).clamp(0.0, 255.0).round() as u8 } else { 0 })
        .collect();

    let file = fs::File::create(path).map_err(|e| QaError::io(path, e))?;
    let mut encoder = png::Encoder::new(io::BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let png_error = |e: png::EncodingError| QaError::io(path, io::Error::other(e));
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(&pixels).map_err(png_error)?;
    writer.finish().map_err(png_error)
}

/// Writes a `float32` array as `.npy` (little-endian, C order).
pub fn write_npy_f32(path: &Path, array: &Array3<f32>) -> Result<(), QaError> {
    let mut bytes = npy_header("<f4", array.dim());
    for value in array.iter() {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    fs::write(path, bytes).map_err(|e| QaError::io(path, e))
}

/// Writes a `uint8` array as `.npy` (C order).
pub fn write_npy_u8(path: &Path, array: &Array3<u8>) -> Result<(), QaError> {
    let mut bytes = npy_header("|u1", array.dim());
    bytes.extend(array.iter().copied());
    let mut file = fs::File::create(path).map_err(|e| QaError::io(path, e))?;
    file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(|e| QaError::io(path, e))
}

/// Builds a version 1.0 header padded so that the data starts on a 64-byte boundary.
fn npy_header(descr: &str, (z, y, x): (usize, usize, usize)) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({z}, {y}, {x}), }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');

    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    bytes
}

/// Reads a `uint8` `(z, y, x)` `.npy` file as written by [`write_npy_u8`].
pub fn read_npy_u8(path: &Path) -> Result<Array3<u8>, QaError> {
    let (shape, data) = read_npy(path, "|u1")?;
    Array3::from_shape_vec(shape, data).map_err(|_| invalid_npy(path, "data size does not match shape"))
}

/// Reads a `float32` `(z, y, x)` `.npy` file as written by [`write_npy_f32`].
pub fn read_npy_f32(path: &Path) -> Result<Array3<f32>, QaError> {
    let (shape, data) = read_npy(path, "<f4")?;
    let values = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Array3::from_shape_vec(shape, values).map_err(|_| invalid_npy(path, "data size does not match shape"))
}

fn invalid_npy(path: &Path, what: &str) -> QaError {
    QaError::io(path, io::Error::new(io::ErrorKind::InvalidData, format!("invalid npy file: {what}")))
}

/// Shape `(z, y, x)` and raw element bytes of a `.npy` file.
type NpyContents = ((usize, usize, usize), Vec<u8>);

/// Reads a version 1 `.npy` file of three dimensions in C order with element type `descr`.
fn read_npy(path: &Path, descr: &str) -> Result<NpyContents, QaError> {
    let bytes = fs::read(path).map_err(|e| QaError::io(path, e))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" || bytes[6] != 1 {
        return Err(invalid_npy(path, "missing version 1 magic"));
    }
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = bytes
        .get(10..10 + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| invalid_npy(path, "truncated header"))?;
    if !header.contains(&format!("'descr': '{descr}'")) || !header.contains("'fortran_order': False") {
        return Err(invalid_npy(path, &format!("expected {descr} in C order")));
    }
    let shape = parse_shape(header).ok_or_else(|| invalid_npy(path, "unreadable shape"))?;
    Ok(((shape[0], shape[1], shape[2]), bytes[10 + header_len..].to_vec()))
}

fn parse_shape(header: &str) -> Option<[usize; 3]> {
    let start = header.find("'shape': (")? + "'shape': (".len();
    let end = start + header[start..].find(')')?;
    let numbers: Vec<usize> = header[start..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    <[usize; 3]>::try_from(numbers).ok()
}
