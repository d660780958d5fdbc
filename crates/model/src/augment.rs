//! Random augmentation and patch cropping for training slices.
//!
//! Augmentation is applied only to slices whose label has a lesion pixel, so the many
//! lesion-free slices are seen as acquired. It runs on physical (not yet normalized) inputs:
//! pixels moved in from outside the slice become 0 in every channel and background in the label.

use ndarray::{Array2, Array3};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Ranges of the random transforms. Each transform is drawn independently per slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Whether to augment at all.
    pub enabled: bool,
    /// Maximum rotation about the slice centre, in degrees either way.
    pub max_rotation_deg: f64,
    /// Maximum translation along each axis, as a fraction of the slice size.
    pub max_translation: f64,
    /// Probability of a left-right flip.
    pub flip_lr: f64,
    /// Probability of an up-down flip.
    pub flip_ud: f64,
    /// Maximum relative brightness change: each channel is scaled by a factor drawn from
    /// `[1 - b, 1 + b]`.
    pub max_brightness: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            enabled: true,
            max_rotation_deg: 15.0,
            max_translation: 0.1,
            flip_lr: 0.5,
            flip_ud: 0.5,
            max_brightness: 0.1,
        }
    }
}

/// One drawn set of transform parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentParams {
    pub rotation_rad: f64,
    /// Shift `(y, x)` in pixels.
    pub shift_yx: [f64; 2],
    pub flip_lr: bool,
    pub flip_ud: bool,
    /// Half-width `b` of the per-channel brightness factor range `[1 - b, 1 + b]`.
    pub brightness: f64,
}

/// Draws transform parameters for a slice of `shape_yx` pixels.
pub fn draw_params(
    config: &AugmentConfig,
    shape_yx: [usize; 2],
    rng: &mut impl Rng,
) -> AugmentParams {
    let symmetric = |rng: &mut dyn rand::RngCore, limit: f64| {
        if limit > 0.0 {
            rng.random_range(-limit..=limit)
        } else {
            0.0
        }
    };
    AugmentParams {
        rotation_rad: symmetric(rng, config.max_rotation_deg).to_radians(),
        shift_yx: [
            symmetric(rng, config.max_translation * shape_yx[0] as f64),
            symmetric(rng, config.max_translation * shape_yx[1] as f64),
        ],
        flip_lr: rng.random_bool(config.flip_lr.clamp(0.0, 1.0)),
        flip_ud: rng.random_bool(config.flip_ud.clamp(0.0, 1.0)),
        brightness: config.max_brightness.max(0.0),
    }
}

/// Augments `(input, label)` in place if the label has a lesion pixel and augmentation is
/// enabled. Returns whether it did.
pub fn augment_if_lesion(
    input: &mut Array3<f32>,
    label: &mut Array2<u8>,
    config: &AugmentConfig,
    rng: &mut impl Rng,
) -> bool {
    if !config.enabled || label.iter().all(|&v| v == 0) {
        return false;
    }
    let (channels, ny, nx) = input.dim();
    let params = draw_params(config, [ny, nx], rng);
    let factors: Vec<f32> = (0..channels)
        .map(|_| {
            if params.brightness > 0.0 {
                rng.random_range(1.0 - params.brightness..=1.0 + params.brightness) as f32
            } else {
                1.0
            }
        })
        .collect();

    let (new_input, new_label) = warp(input, label, &params);
    *input = new_input;
    *label = new_label;
    for (c, factor) in factors.into_iter().enumerate() {
        input
            .index_axis_mut(ndarray::Axis(0), c)
            .mapv_inplace(|v| v * factor);
    }
    true
}

/// Applies rotation about the centre, translation and flips: bilinear for inputs, nearest for
/// labels.
pub fn warp(
    input: &Array3<f32>,
    label: &Array2<u8>,
    params: &AugmentParams,
) -> (Array3<f32>, Array2<u8>) {
    let (channels, ny, nx) = input.dim();
    let centre_y = (ny as f64 - 1.0) / 2.0;
    let centre_x = (nx as f64 - 1.0) / 2.0;
    let (sin, cos) = params.rotation_rad.sin_cos();

    // For each output pixel, find the source position: undo the flip, the shift and then the
    // rotation.
    let source = |y: usize, x: usize| -> (f64, f64) {
        let y = if params.flip_ud { ny - 1 - y } else { y } as f64;
        let x = if params.flip_lr { nx - 1 - x } else { x } as f64;
        let dy = y - params.shift_yx[0] - centre_y;
        let dx = x - params.shift_yx[1] - centre_x;
        (
            centre_y + cos * dy + sin * dx,
            centre_x - sin * dy + cos * dx,
        )
    };

    let mut out_input = Array3::<f32>::zeros((channels, ny, nx));
    let mut out_label = Array2::<u8>::zeros((ny, nx));
    for y in 0..ny {
        for x in 0..nx {
            let (sy, sx) = source(y, x);
            let (ry, rx) = (sy.round(), sx.round());
            if ry >= 0.0 && rx >= 0.0 && (ry as usize) < ny && (rx as usize) < nx {
                out_label[[y, x]] = label[[ry as usize, rx as usize]];
            }
            // The tolerance keeps exact rotations (e.g. 90 degrees) from losing edge pixels to
            // rounding in sin and cos.
            const TOLERANCE: f64 = 1e-9;
            if sy < -TOLERANCE
                || sx < -TOLERANCE
                || sy > (ny - 1) as f64 + TOLERANCE
                || sx > (nx - 1) as f64 + TOLERANCE
            {
                continue;
            }
            let (sy, sx) = (
                sy.clamp(0.0, (ny - 1) as f64),
                sx.clamp(0.0, (nx - 1) as f64),
            );
            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(ny - 1), (x0 + 1).min(nx - 1));
            let (fy, fx) = ((sy - y0 as f64) as f32, (sx - x0 as f64) as f32);
            for c in 0..channels {
                let top = input[[c, y0, x0]] * (1.0 - fx) + input[[c, y0, x1]] * fx;
                let bottom = input[[c, y1, x0]] * (1.0 - fx) + input[[c, y1, x1]] * fx;
                out_input[[c, y, x]] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    (out_input, out_label)
}

/// Crops a `size x size` patch. Slices with a lesion are cropped around a randomly chosen lesion
/// pixel, other slices at a random position. A `size` of 0 or at least the slice size returns
/// the whole slice.
pub fn crop_patch(
    input: &Array3<f32>,
    label: &Array2<u8>,
    size: usize,
    rng: &mut impl Rng,
) -> (Array3<f32>, Array2<u8>) {
    let (_, ny, nx) = input.dim();
    if size == 0 || size >= ny || size >= nx {
        return (input.clone(), label.clone());
    }

    let lesion: Vec<(usize, usize)> = label
        .indexed_iter()
        .filter(|(_, &v)| v != 0)
        .map(|(p, _)| p)
        .collect();
    let (top, left) = if lesion.is_empty() {
        (
            rng.random_range(0..=ny - size),
            rng.random_range(0..=nx - size),
        )
    } else {
        let (cy, cx) = lesion[rng.random_range(0..lesion.len())];
        // The lesion pixel lands within a quarter patch of the patch centre, so it is inside.
        let jitter = (size / 4) as i64;
        let place = |centre: usize, n: usize, rng: &mut dyn rand::RngCore| {
            let offset = rng.random_range(-jitter..=jitter);
            (centre as i64 - (size / 2) as i64 + offset).clamp(0, (n - size) as i64) as usize
        };
        (place(cy, ny, rng), place(cx, nx, rng))
    };

    let input_patch = input
        .slice(ndarray::s![.., top..top + size, left..left + size])
        .to_owned();
    let label_patch = label
        .slice(ndarray::s![top..top + size, left..left + size])
        .to_owned();
    (input_patch, label_patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn identity() -> AugmentParams {
        AugmentParams {
            rotation_rad: 0.0,
            shift_yx: [0.0, 0.0],
            flip_lr: false,
            flip_ud: false,
            brightness: 0.0,
        }
    }

    fn ramp() -> (Array3<f32>, Array2<u8>) {
        let input = Array3::from_shape_fn((1, 4, 5), |(_, y, x)| (10 * y + x) as f32);
        let mut label = Array2::zeros((4, 5));
        label[[1, 3]] = 2;
        (input, label)
    }

    #[test]
    fn identity_warp_changes_nothing() {
        let (input, label) = ramp();
        let (out_input, out_label) = warp(&input, &label, &identity());
        assert_eq!(out_input, input);
        assert_eq!(out_label, label);
    }

    #[test]
    fn flip_lr_mirrors_columns() {
        let (input, label) = ramp();
        let (out_input, out_label) = warp(
            &input,
            &label,
            &AugmentParams {
                flip_lr: true,
                ..identity()
            },
        );
        assert_eq!(out_input[[0, 2, 0]], 24.0);
        assert_eq!(out_label[[1, 1]], 2);
        assert_eq!(out_label[[1, 3]], 0);
    }

    #[test]
    fn shift_moves_content_and_pads_zero() {
        let (input, label) = ramp();
        let (out_input, out_label) = warp(
            &input,
            &label,
            &AugmentParams {
                shift_yx: [1.0, 0.0],
                ..identity()
            },
        );
        assert_eq!(out_input[[0, 2, 3]], 13.0);
        assert_eq!(out_input[[0, 0, 3]], 0.0);
        assert_eq!(out_label[[2, 3]], 2);
    }

    #[test]
    fn rotation_by_quarter_turn() {
        // A 90 degree rotation maps the square's corners onto each other.
        let input = Array3::from_shape_fn((1, 3, 3), |(_, y, x)| (3 * y + x) as f32);
        let label = Array2::zeros((3, 3));
        let params = AugmentParams {
            rotation_rad: std::f64::consts::FRAC_PI_2,
            ..identity()
        };
        let (out, _) = warp(&input, &label, &params);
        // Output (0, 0) is centre (1, 1) plus the offset (-1, -1) rotated to (-1, +1), so it
        // samples source pixel (0, 2), whose value is 2.
        assert!((out[[0, 0, 0]] - 2.0).abs() < 1e-5, "{out:?}");
        assert!((out[[0, 1, 1]] - 4.0).abs() < 1e-5);
    }

    #[test]
    fn lesion_free_slices_stay_untouched() {
        let input = Array3::from_elem((2, 8, 8), 3.0f32);
        let mut augmented = input.clone();
        let mut label = Array2::zeros((8, 8));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!(!augment_if_lesion(
            &mut augmented,
            &mut label,
            &AugmentConfig::default(),
            &mut rng
        ));
        assert_eq!(augmented, input);

        label[[4, 4]] = 1;
        assert!(augment_if_lesion(
            &mut augmented,
            &mut label,
            &AugmentConfig::default(),
            &mut rng
        ));
    }

    #[test]
    fn patch_contains_the_lesion() {
        let input = Array3::zeros((1, 64, 64));
        let mut label = Array2::zeros((64, 64));
        label[[50, 10]] = 2;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let (patch, patch_label) = crop_patch(&input, &label, 32, &mut rng);
            assert_eq!(patch.dim(), (1, 32, 32));
            assert_eq!(patch_label.iter().filter(|&&v| v == 2).count(), 1);
        }
    }
}
