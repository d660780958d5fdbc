//! In-plane resampling between a series' native grid and the model's square 256x256 grid.
//!
//! The model grid has square pixels of `model_spacing_mm`, chosen so that the longer physical side
//! of the native field of view fills all 256 pixels. The shorter side is centred and padded with 0,
//! so the aspect ratio is preserved. A sampling direction that shrinks the image averages over
//! areas (each output pixel is the overlap-weighted mean of the input pixels it covers). A
//! direction that enlarges it interpolates bilinearly between input pixel centres. Both steps are
//! separable, applied along x and then along y. Slices are never mixed.

use ndarray::{Array3, Array4, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Side length in pixels of the square model grid.
pub const MODEL_SIZE: usize = 256;

/// The number of output classes (background, penumbra, core).
pub const CLASSES: usize = 3;

/// Mapping from one series' native grid onto the model grid, enough to map predictions back.
///
/// Native pixel edges along an axis sit at integer coordinates `0..=n`. The model pixel edge `j`
/// sits at native coordinate `(j - offset) * model_spacing_mm / native_spacing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridTransform {
    /// Native slice count `z`.
    pub slices: usize,
    /// Native in-plane shape `(y, x)` in pixels.
    pub native_shape_yx: [usize; 2],
    /// Native pixel spacing `(y, x)` in millimetres.
    pub native_spacing_yx: [f64; 2],
    /// Side length of one square model pixel in millimetres.
    pub model_spacing_mm: f64,
    /// Padding before the content along `(y, x)`, in model pixels (may be fractional).
    pub offset_yx: [f64; 2],
}

impl GridTransform {
    /// Builds the transform for a native grid, rejecting empty shapes and non-positive spacings.
    pub fn new(
        slices: usize,
        native_shape_yx: [usize; 2],
        native_spacing_yx: [f64; 2],
    ) -> Result<Self, ModelError> {
        if slices == 0 || native_shape_yx[0] == 0 || native_shape_yx[1] == 0 {
            return Err(ModelError::InvalidInput(format!(
                "native grid has an empty dimension: {slices} slices of {native_shape_yx:?} pixels"
            )));
        }
        for spacing in native_spacing_yx {
            if !(spacing.is_finite() && spacing > 0.0) {
                return Err(ModelError::InvalidInput(format!(
                    "pixel spacing {native_spacing_yx:?} mm must be finite and positive"
                )));
            }
        }

        let extent_y = native_shape_yx[0] as f64 * native_spacing_yx[0];
        let extent_x = native_shape_yx[1] as f64 * native_spacing_yx[1];
        let model_spacing_mm = extent_y.max(extent_x) / MODEL_SIZE as f64;
        let offset = |extent: f64| (MODEL_SIZE as f64 - extent / model_spacing_mm) / 2.0;

        Ok(GridTransform {
            slices,
            native_shape_yx,
            native_spacing_yx,
            model_spacing_mm,
            offset_yx: [offset(extent_y), offset(extent_x)],
        })
    }

    /// Returns the model-pixel interval `[start, end)` covered by the native content along `axis`
    /// (0 for y, 1 for x).
    fn content_in_model(&self, axis: usize) -> (f64, f64) {
        let start = self.offset_yx[axis];
        let length = self.native_shape_yx[axis] as f64 * self.native_spacing_yx[axis]
            / self.model_spacing_mm;
        (start, start + length)
    }

    /// Returns how native pixels along `axis` are computed from model pixels.
    fn model_to_native_axis(&self, axis: usize) -> AxisMap {
        let ratio = self.native_spacing_yx[axis] / self.model_spacing_mm;
        let (start, end) = self.content_in_model(axis);
        AxisMap::new(
            self.native_shape_yx[axis],
            MODEL_SIZE,
            ratio,
            start,
            (start, end),
        )
    }

    /// Returns how model pixels along `axis` are computed from native pixels.
    fn native_to_model_axis(&self, axis: usize) -> AxisMap {
        let ratio = self.model_spacing_mm / self.native_spacing_yx[axis];
        let n = self.native_shape_yx[axis];
        let first_edge = -self.offset_yx[axis] * ratio;
        AxisMap::new(MODEL_SIZE, n, ratio, first_edge, (0.0, n as f64))
    }
}

/// Linear weights that compute each output pixel along one axis from input pixels.
///
/// `None` marks an output pixel whose centre lies outside the input content (padding).
#[derive(Debug, Clone)]
struct AxisMap {
    taps: Vec<Option<Vec<(usize, f32)>>>,
}

impl AxisMap {
    /// Builds the weights for `n_out` output pixels, where output edge `j` sits at input
    /// coordinate `first_edge + j * ratio` and the input content spans `content` (input pixel
    /// coordinates, edges). `n_in` input pixels exist.
    fn new(n_out: usize, n_in: usize, ratio: f64, first_edge: f64, content: (f64, f64)) -> Self {
        // Input pixels count as content when their centre lies inside `content`, the same rule
        // that decides which output pixels are padding, so padding never leaks back in.
        let first_valid = ((content.0 - 0.5).ceil().max(0.0) as usize).min(n_in - 1);
        let last_valid = ((content.1 - 0.5).floor().max(0.0) as usize).clamp(first_valid, n_in - 1);
        let valid = (first_valid, last_valid);

        let taps = (0..n_out)
            .map(|j| {
                let lo = first_edge + j as f64 * ratio;
                let hi = lo + ratio;
                let centre = (lo + hi) / 2.0;
                if centre < content.0 || centre > content.1 {
                    return None;
                }
                if ratio > 1.0 {
                    Some(area_taps(lo, hi, valid))
                } else {
                    Some(bilinear_taps(centre, valid))
                }
            })
            .collect();
        AxisMap { taps }
    }
}

/// Returns overlap-weighted taps of the valid input pixels covering `[lo, hi)`, normalised to
/// sum to 1. `valid` is the inclusive range of input pixels that hold content.
fn area_taps(lo: f64, hi: f64, valid: (usize, usize)) -> Vec<(usize, f32)> {
    let first = (lo.floor().max(0.0) as usize).max(valid.0);
    let last = (hi.ceil().max(0.0) as usize).min(valid.1 + 1);
    let mut taps = Vec::new();
    let mut total = 0.0;
    for k in first..last {
        let overlap = (hi.min(k as f64 + 1.0) - lo.max(k as f64)).max(0.0);
        if overlap > 0.0 {
            taps.push((k, overlap));
            total += overlap;
        }
    }
    if total == 0.0 {
        // The interval only grazes the content: fall back to the nearest valid input pixel.
        let nearest = (((lo + hi) / 2.0).floor().max(0.0) as usize).clamp(valid.0, valid.1);
        return vec![(nearest, 1.0)];
    }
    taps.into_iter()
        .map(|(k, w)| (k, (w / total) as f32))
        .collect()
}

/// Returns bilinear taps at input coordinate `centre` (edges at integers, so pixel `k` has its
/// centre at `k + 0.5`), clamped to the centres of the valid input pixels.
fn bilinear_taps(centre: f64, valid: (usize, usize)) -> Vec<(usize, f32)> {
    let position = (centre - 0.5).clamp(valid.0 as f64, valid.1 as f64);
    let left = (position.floor() as usize).clamp(valid.0, valid.1);
    let right = (left + 1).min(valid.1);
    let fraction = (position - left as f64).clamp(0.0, 1.0) as f32;
    if right == left || fraction == 0.0 {
        vec![(left, 1.0)]
    } else {
        vec![(left, 1.0 - fraction), (right, fraction)]
    }
}

/// Resamples one 2-D image with separable maps, writing 0 wherever either axis is padding.
fn resample_plane(
    input: ArrayView2<f32>,
    map_y: &AxisMap,
    map_x: &AxisMap,
) -> ndarray::Array2<f32> {
    let (n_in_y, _) = input.dim();
    let n_out_x = map_x.taps.len();
    let mut along_x = ndarray::Array2::<f32>::zeros((n_in_y, n_out_x));
    for y in 0..n_in_y {
        for (x, taps) in map_x.taps.iter().enumerate() {
            if let Some(taps) = taps {
                along_x[[y, x]] = taps.iter().map(|&(k, w)| w * input[[y, k]]).sum();
            }
        }
    }

    let n_out_y = map_y.taps.len();
    let mut output = ndarray::Array2::<f32>::zeros((n_out_y, n_out_x));
    for (y, taps) in map_y.taps.iter().enumerate() {
        let Some(taps) = taps else { continue };
        for x in 0..n_out_x {
            if map_x.taps[x].is_some() {
                output[[y, x]] = taps.iter().map(|&(k, w)| w * along_x[[k, x]]).sum();
            }
        }
    }
    output
}

/// Resamples a `(c, z, y, x)` stack of input channels to the model grid, returning `(z, c, 256,
/// 256)` slices and the transform that maps them back.
///
/// `spacing_yx` is the native pixel spacing `(row spacing, column spacing)` in millimetres. Padding
/// is 0 in the channel's physical units, so resample before normalizing.
pub fn to_model_grid(
    volume: &Array4<f32>,
    spacing_yx: [f64; 2],
) -> Result<(Array4<f32>, GridTransform), ModelError> {
    let (channels, slices, ny, nx) = volume.dim();
    if channels == 0 {
        return Err(ModelError::InvalidInput("volume has no channels".into()));
    }
    let transform = GridTransform::new(slices, [ny, nx], spacing_yx)?;
    let map_y = transform.native_to_model_axis(0);
    let map_x = transform.native_to_model_axis(1);

    let mut output = Array4::<f32>::zeros((slices, channels, MODEL_SIZE, MODEL_SIZE));
    for c in 0..channels {
        for z in 0..slices {
            let plane = volume.index_axis(Axis(0), c);
            let plane = plane.index_axis(Axis(0), z);
            let resampled = resample_plane(plane, &map_y, &map_x);
            output
                .index_axis_mut(Axis(0), z)
                .index_axis_mut(Axis(0), c)
                .assign(&resampled);
        }
    }
    Ok((output, transform))
}

/// Resamples `(z, 3, 256, 256)` class probabilities back to the native grid as `(3, z, y, x)`.
///
/// Take the argmax over axis 0 of the result to get native labels: this keeps thin structures
/// better than nearest-neighbour label lookup when the native grid is finer than the model grid.
pub fn probabilities_to_native(
    probs: &Array4<f32>,
    t: &GridTransform,
) -> Result<Array4<f32>, ModelError> {
    let (slices, classes, ny, nx) = probs.dim();
    check_model_stack(slices, ny, nx, t, "probabilities")?;
    let map_y = t.model_to_native_axis(0);
    let map_x = t.model_to_native_axis(1);

    let [native_y, native_x] = t.native_shape_yx;
    let mut output = Array4::<f32>::zeros((classes, slices, native_y, native_x));
    for z in 0..slices {
        for c in 0..classes {
            let plane = probs.index_axis(Axis(0), z);
            let plane = plane.index_axis(Axis(0), c);
            let resampled = resample_plane(plane, &map_y, &map_x);
            output
                .index_axis_mut(Axis(0), c)
                .index_axis_mut(Axis(0), z)
                .assign(&resampled);
        }
    }
    Ok(output)
}

/// Maps `(z, 256, 256)` model-grid labels to the native grid by nearest neighbour.
pub fn labels_to_native(labels: &Array3<u8>, t: &GridTransform) -> Result<Array3<u8>, ModelError> {
    let (slices, ny, nx) = labels.dim();
    check_model_stack(slices, ny, nx, t, "labels")?;
    let nearest = |axis: usize, i: usize| {
        let native_centre =
            (i as f64 + 0.5) * t.native_spacing_yx[axis] / t.model_spacing_mm + t.offset_yx[axis];
        (native_centre.floor().max(0.0) as usize).min(MODEL_SIZE - 1)
    };
    let rows: Vec<usize> = (0..t.native_shape_yx[0]).map(|y| nearest(0, y)).collect();
    let columns: Vec<usize> = (0..t.native_shape_yx[1]).map(|x| nearest(1, x)).collect();

    let mut output = Array3::<u8>::zeros((slices, rows.len(), columns.len()));
    for ((z, y, x), value) in output.indexed_iter_mut() {
        *value = labels[[z, rows[y], columns[x]]];
    }
    Ok(output)
}

/// Resamples `(z, y, x)` native labels to the model grid `(z, 256, 256)`.
///
/// Each class is resampled as a one-hot probability map and the most probable class wins, with
/// ties going to the lower label. Padding is background.
pub fn labels_to_model_grid(
    labels: &Array3<u8>,
    spacing_yx: [f64; 2],
) -> Result<(Array3<u8>, GridTransform), ModelError> {
    let (slices, ny, nx) = labels.dim();
    if let Some(&bad) = labels.iter().find(|&&v| v as usize >= CLASSES) {
        return Err(ModelError::InvalidInput(format!(
            "label value {bad} is not a class; expected 0 (background), 1 (penumbra) or 2 (core)"
        )));
    }
    let mut one_hot = Array4::<f32>::zeros((CLASSES, slices, ny, nx));
    for ((z, y, x), &label) in labels.indexed_iter() {
        one_hot[[label as usize, z, y, x]] = 1.0;
    }
    let (probs, transform) = to_model_grid(&one_hot, spacing_yx)?;
    let mut output = Array3::<u8>::zeros((slices, MODEL_SIZE, MODEL_SIZE));
    for ((z, y, x), value) in output.indexed_iter_mut() {
        *value = argmax_class(|c| probs[[z, c, y, x]], CLASSES);
    }
    Ok((output, transform))
}

/// Returns the index of the largest of `classes` values, the lowest index on ties.
pub(crate) fn argmax_class(value: impl Fn(usize) -> f32, classes: usize) -> u8 {
    let mut best = 0;
    for c in 1..classes {
        if value(c) > value(best) {
            best = c;
        }
    }
    best as u8
}

/// Converts `(3, z, y, x)` class probabilities to a `(z, y, x)` label volume by argmax.
pub fn argmax_labels(probs: &Array4<f32>) -> Array3<u8> {
    let (classes, slices, ny, nx) = probs.dim();
    Array3::from_shape_fn((slices, ny, nx), |(z, y, x)| {
        argmax_class(|c| probs[[c, z, y, x]], classes)
    })
}

fn check_model_stack(
    slices: usize,
    ny: usize,
    nx: usize,
    t: &GridTransform,
    what: &str,
) -> Result<(), ModelError> {
    // A transform deserialized or built by hand gets the same checks as one from `new`.
    let rebuilt = GridTransform::new(t.slices, t.native_shape_yx, t.native_spacing_yx)?;
    let offsets_finite = t.offset_yx.iter().all(|o| o.is_finite());
    if !(t.model_spacing_mm.is_finite() && t.model_spacing_mm > 0.0 && offsets_finite) {
        return Err(ModelError::InvalidInput(format!(
            "grid transform has model spacing {} mm and offsets {:?}; expected {} mm and {:?} from GridTransform::new",
            t.model_spacing_mm, t.offset_yx, rebuilt.model_spacing_mm, rebuilt.offset_yx
        )));
    }
    if ny != MODEL_SIZE || nx != MODEL_SIZE {
        return Err(ModelError::InvalidInput(format!(
            "{what} have {ny}x{nx} pixels per slice; expected {MODEL_SIZE}x{MODEL_SIZE}"
        )));
    }
    if slices != t.slices {
        return Err(ModelError::InvalidInput(format!(
            "{what} have {slices} slices but the grid transform was made for {}",
            t.slices
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels made of 2x2-aligned blocks: a penumbra rectangle with a core rectangle inside.
    fn blocky_labels(slices: usize, ny: usize, nx: usize) -> Array3<u8> {
        Array3::from_shape_fn((slices, ny, nx), |(z, y, x)| {
            let (by, bx) = (y / 2, x / 2);
            if (40 + z * 2..60 + z * 2).contains(&by) && (30..50).contains(&bx) {
                2
            } else if (20..90).contains(&by) && (20..100).contains(&bx) {
                1
            } else {
                0
            }
        })
    }

    fn one_hot(labels: &Array3<u8>) -> Array4<f32> {
        let (nz, ny, nx) = labels.dim();
        let mut probs = Array4::zeros((nz, CLASSES, ny, nx));
        for ((z, y, x), &v) in labels.indexed_iter() {
            probs[[z, v as usize, y, x]] = 1.0;
        }
        probs
    }

    #[test]
    fn transform_for_square_and_non_square_grids() {
        let square = GridTransform::new(1, [512, 512], [0.5, 0.5]).unwrap();
        assert!((square.model_spacing_mm - 1.0).abs() < 1e-12);
        assert_eq!(square.offset_yx, [0.0, 0.0]);

        // 200 rows by 180 columns at 1 mm: the 200 mm side fills 256 pixels of 0.78125 mm and
        // the 180 mm side covers 230.4 pixels, centred with 12.8 pixels of padding each side.
        let tall = GridTransform::new(1, [200, 180], [1.0, 1.0]).unwrap();
        assert!((tall.model_spacing_mm - 0.78125).abs() < 1e-12);
        assert!((tall.offset_yx[0]).abs() < 1e-12);
        assert!((tall.offset_yx[1] - 12.8).abs() < 1e-9);

        assert!(GridTransform::new(1, [10, 10], [0.0, 1.0]).is_err());
        assert!(GridTransform::new(0, [10, 10], [1.0, 1.0]).is_err());
    }

    #[test]
    fn shrinking_averages_areas() {
        // 512x512 at 0.5 mm to 256x256 at 1 mm: each model pixel is the mean of a 2x2 block.
        let volume =
            Array4::from_shape_fn((1, 1, 512, 512), |(_, _, y, x)| (y % 2 * 2 + x % 2) as f32);
        let (grid, _) = to_model_grid(&volume, [0.5, 0.5]).unwrap();
        assert_eq!(grid.dim(), (1, 1, 256, 256));
        assert!(grid.iter().all(|&v| (v - 1.5).abs() < 1e-6));
    }

    #[test]
    fn enlarging_interpolates_and_pads() {
        // A horizontal ramp 0..180 over 180 columns; inside the content the model grid must
        // still be a ramp and outside it must be padding 0.
        let volume = Array4::from_shape_fn((1, 1, 200, 180), |(_, _, _, x)| x as f32 + 10.0);
        let (grid, t) = to_model_grid(&volume, [1.0, 1.0]).unwrap();
        assert_eq!(grid[[0, 0, 100, 5]], 0.0, "left padding");
        assert_eq!(grid[[0, 0, 100, 250]], 0.0, "right padding");
        // Model column 128 has its centre at native coordinate (128.5 - 12.8) * 0.78125 = 90.39,
        // so the ramp value there is 10 + 90.39 - 0.5.
        let expected = 10.0 + (128.5 - t.offset_yx[1]) * 0.78125 - 0.5;
        assert!(
            (grid[[0, 0, 100, 128]] as f64 - expected).abs() < 1e-4,
            "{}",
            grid[[0, 0, 100, 128]]
        );
    }

    #[test]
    fn labels_round_trip_512() {
        let labels = blocky_labels(2, 512, 512);
        let (model_labels, t) = labels_to_model_grid(&labels, [0.5, 0.5]).unwrap();
        assert_eq!(labels_to_native(&model_labels, &t).unwrap(), labels);

        let probs = to_model_grid(
            &one_hot(&labels).permuted_axes([1, 0, 2, 3]).to_owned(),
            [0.5, 0.5],
        )
        .unwrap()
        .0;
        let native = probabilities_to_native(&probs, &t).unwrap();
        assert_eq!(native.dim(), (3, 2, 512, 512));
        assert_eq!(argmax_labels(&native), labels);
    }

    #[test]
    fn labels_round_trip_200_by_180() {
        let labels = blocky_labels(1, 200, 180);
        let spacing = [1.0, 1.0];
        let (model_labels, t) = labels_to_model_grid(&labels, spacing).unwrap();
        assert_eq!(
            labels_to_native(&model_labels, &t).unwrap(),
            labels,
            "nearest-neighbour round trip"
        );

        let channels_first = one_hot(&labels).permuted_axes([1, 0, 2, 3]).to_owned();
        let probs = to_model_grid(&channels_first, spacing).unwrap().0;
        let native = probabilities_to_native(&probs, &t).unwrap();
        assert_eq!(argmax_labels(&native), labels, "probability round trip");
        for column in native.index_axis(Axis(1), 0).lanes(Axis(0)) {
            assert!(
                (column.sum() - 1.0).abs() < 1e-4,
                "probabilities still sum to 1"
            );
        }
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let t = GridTransform::new(2, [100, 100], [1.0, 1.0]).unwrap();
        assert!(probabilities_to_native(&Array4::zeros((2, 3, 128, 128)), &t).is_err());
        assert!(probabilities_to_native(&Array4::zeros((1, 3, 256, 256)), &t).is_err());
        assert!(labels_to_model_grid(&Array3::from_elem((1, 4, 4), 7), [1.0, 1.0]).is_err());
        assert!(to_model_grid(&Array4::zeros((0, 1, 4, 4)), [1.0, 1.0]).is_err());
    }
}
