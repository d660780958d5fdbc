//! Ischemic lesion in an MCA-like territory: a core blob inside a penumbra blob inside a shell of
//! benign oligemia, each an ellipsoid deformed by smooth noise, blended into the parameter maps.

use ndarray::Array3;
use rand::Rng;
use serde::Serialize;

use crate::anatomy::{AnatomyClass, AnatomyMaps, SmoothField};
use crate::hemodynamics::ParameterMaps;
use crate::noise::gaussian_blur_axis;
use crate::params::{LesionSize, Side};

/// Resolved hemisphere of the lesion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Hemisphere {
    Left,
    Right,
}

impl Hemisphere {
    /// Sign of the head-frame u coordinate (patient left is +).
    pub fn sign(self) -> f64 {
        match self {
            Hemisphere::Left => 1.0,
            Hemisphere::Right => -1.0,
        }
    }
}

/// Parameters of one region: CBF and CBV as factors of the voxel's normal value, delay and
/// dispersion time constant in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegionParameters {
    pub cbf_factor: f64,
    pub cbv_factor: f64,
    pub delay_s: f64,
    pub tau_s: f64,
}

/// The drawn lesion design.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LesionDesign {
    pub hemisphere: Hemisphere,
    pub size: LesionSize,
    /// Volume of the undeformed core ellipsoid in mL, before clipping to brain and slab.
    pub core_ellipsoid_ml: f64,
    /// Ratio of the penumbra ellipsoid volume to the core ellipsoid volume.
    pub design_mismatch_ratio: f64,
    pub centre_mm: [f64; 3],
    pub core_semi_axes_mm: [f64; 3],
    pub penumbra_semi_axes_mm: [f64; 3],
    /// Extra semi-axis length of the oligemic shell beyond the penumbra in mm.
    pub oligemia_margin_mm: f64,
    pub core: RegionParameters,
    pub penumbra: RegionParameters,
    pub oligemia: RegionParameters,
    /// Standard deviation of the Gaussian that blends the regions' parameters, in mm.
    pub blend_sigma_mm: f64,
}

/// Hard design masks (1 inside), nested: core within penumbra within oligemia.
#[derive(Debug, Clone)]
pub struct DesignMasks {
    pub core: Array3<u8>,
    pub penumbra: Array3<u8>,
    pub oligemia: Array3<u8>,
}

/// Origin of the M1 segment on the lesion side, head frame (mm).
const M1_ORIGIN_MM: [f64; 3] = [19.0, -8.0, -25.0];
/// Half-angle of the territory sector around the lateral direction, in degrees.
const TERRITORY_HALF_ANGLE_DEG: f64 = 70.0;

/// Draws a lesion design from the seed.
pub fn draw(rng: &mut impl Rng, side: Side, size: LesionSize) -> LesionDesign {
    let hemisphere = match side {
        Side::Left => Hemisphere::Left,
        Side::Right => Hemisphere::Right,
        Side::Random => {
            if rng.random::<bool>() {
                Hemisphere::Left
            } else {
                Hemisphere::Right
            }
        }
    };
    let size = match size {
        LesionSize::Random => [LesionSize::Small, LesionSize::Medium, LesionSize::Large][rng.random_range(0..3)],
        fixed => fixed,
    };
    let core_ml = match size {
        LesionSize::Small => rng.random_range(5.0..20.0),
        LesionSize::Medium => rng.random_range(20.0..60.0),
        _ => rng.random_range(60.0..120.0),
    };

    // Total hypoperfused volume stays within 250 mL.
    let ratio = rng.random_range(1.2..4.0_f64).min(250.0 / core_ml);
    let radius = (3.0 * core_ml * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt();
    let aspect = [0.8, 1.2, 1.0 / 0.96];
    let core_semi_axes_mm = [radius * aspect[0], radius * aspect[1], radius * aspect[2]];
    let scale = ratio.cbrt();
    let penumbra_semi_axes_mm = core_semi_axes_mm.map(|a| a * scale);

    let sign = hemisphere.sign();
    let centre_mm = [sign * rng.random_range(38.0..46.0), rng.random_range(-15.0..15.0), rng.random_range(-5.0..12.0)];

    LesionDesign {
        hemisphere,
        size,
        core_ellipsoid_ml: core_ml,
        design_mismatch_ratio: ratio,
        centre_mm,
        core_semi_axes_mm,
        penumbra_semi_axes_mm,
        oligemia_margin_mm: rng.random_range(8.0..14.0),
        core: RegionParameters {
            cbf_factor: rng.random_range(0.10..0.25),
            cbv_factor: rng.random_range(0.20..0.45),
            delay_s: rng.random_range(7.0..10.0),
            tau_s: rng.random_range(2.0..3.0),
        },
        penumbra: RegionParameters {
            cbf_factor: rng.random_range(0.35..0.60),
            cbv_factor: rng.random_range(0.95..1.20),
            delay_s: rng.random_range(5.0..8.0),
            tau_s: rng.random_range(1.0..2.0),
        },
        oligemia: RegionParameters {
            cbf_factor: rng.random_range(0.70..0.90),
            cbv_factor: rng.random_range(1.00..1.10),
            delay_s: rng.random_range(2.0..3.0),
            tau_s: 1.0,
        },
        blend_sigma_mm: 2.0,
    }
}

/// Whether head position `p` lies in the MCA-like territory of the lesion hemisphere: lateral to
/// the M1 origin, within the sector around the lateral direction, and at least 3 mm off midline.
pub fn in_territory(p: [f64; 3], hemisphere: Hemisphere) -> bool {
    let sign = hemisphere.sign();
    let lateral = sign * p[0] - M1_ORIGIN_MM[0] + 10.0;
    let anteroposterior = p[1] - M1_ORIGIN_MM[1];
    if sign * p[0] < 3.0 || lateral <= 0.0 {
        return false;
    }
    anteroposterior.abs().atan2(lateral).to_degrees() <= TERRITORY_HALF_ANGLE_DEG
}

fn ellipsoid_radius(p: [f64; 3], centre: [f64; 3], semi_axes: [f64; 3]) -> f64 {
    (0..3).map(|i| ((p[i] - centre[i]) / semi_axes[i]).powi(2)).sum::<f64>().sqrt()
}

/// Rasterises the design masks over parenchyma voxels of the territory.
pub fn design_masks(design: &LesionDesign, anatomy: &AnatomyMaps, rng: &mut impl Rng) -> DesignMasks {
    let core_shape = SmoothField::with_wavelengths(rng, 6, 20.0, 45.0);
    let penumbra_shape = SmoothField::with_wavelengths(rng, 6, 25.0, 60.0);
    let deformation = 0.15;
    let oligemia_axes = design.penumbra_semi_axes_mm.map(|a| a + design.oligemia_margin_mm);

    let shape = anatomy.class.raw_dim();
    let mut masks = DesignMasks { core: Array3::zeros(shape), penumbra: Array3::zeros(shape), oligemia: Array3::zeros(shape) };

    for ((index, &class), head) in anatomy.class.indexed_iter().zip(anatomy.head_mm.iter()) {
        if !AnatomyClass::is_parenchyma(class) {
            continue;
        }
        let p = [head[0] as f64, head[1] as f64, head[2] as f64];
        if !in_territory(p, design.hemisphere) {
            continue;
        }

        let core = ellipsoid_radius(p, design.centre_mm, design.core_semi_axes_mm) + deformation * core_shape.at(p) < 1.0;
        let penumbra_noise = deformation * penumbra_shape.at(p);
        let penumbra = core || ellipsoid_radius(p, design.centre_mm, design.penumbra_semi_axes_mm) + penumbra_noise < 1.0;
        let oligemia = penumbra || ellipsoid_radius(p, design.centre_mm, oligemia_axes) + penumbra_noise < 1.0;

        masks.core[index] = core as u8;
        masks.penumbra[index] = penumbra as u8;
        masks.oligemia[index] = oligemia as u8;
    }
    masks
}

/// Blends the lesion into `maps`: each mask is blurred by a Gaussian of `blend_sigma_mm`, and the
/// nested weights mix the regions' parameters with the normal ones. Voxels of the other
/// hemisphere and non-parenchyma voxels stay as they are.
pub fn apply(design: &LesionDesign, masks: &DesignMasks, anatomy: &AnatomyMaps, spacing_mm: [f64; 3], maps: &mut ParameterMaps) {
    let blur = |mask: &Array3<u8>| {
        let mut weights = mask.mapv(f32::from);
        for (axis, spacing) in spacing_mm.iter().enumerate() {
            gaussian_blur_axis(&mut weights, axis, design.blend_sigma_mm / spacing);
        }
        weights
    };
    let core = blur(&masks.core);
    let penumbra = blur(&masks.penumbra);
    let oligemia = blur(&masks.oligemia);
    let sign = design.hemisphere.sign();

    for (index, &class) in anatomy.class.indexed_iter() {
        let head = anatomy.head_mm[index];
        if !AnatomyClass::is_parenchyma(class) || sign * head[0] as f64 <= 0.0 {
            continue;
        }
        let w_core = core[index].clamp(0.0, 1.0) as f64;
        let w_penumbra = (penumbra[index].clamp(0.0, 1.0) as f64).max(w_core);
        let w_oligemia = (oligemia[index].clamp(0.0, 1.0) as f64).max(w_penumbra);
        if w_oligemia <= 0.0 {
            continue;
        }

        let weights = [w_core, w_penumbra - w_core, w_oligemia - w_penumbra, 1.0 - w_oligemia];
        let mix = |values: [f64; 4]| -> f64 { weights.iter().zip(values).map(|(w, v)| w * v).sum() };
        let (c, p, o) = (design.core, design.penumbra, design.oligemia);

        maps.cbf[index] *= mix([c.cbf_factor, p.cbf_factor, o.cbf_factor, 1.0]) as f32;
        maps.cbv[index] *= mix([c.cbv_factor, p.cbv_factor, o.cbv_factor, 1.0]) as f32;
        maps.delay_s[index] = mix([c.delay_s, p.delay_s, o.delay_s, maps.delay_s[index] as f64]) as f32;
        maps.tau_s[index] = mix([c.tau_s, p.tau_s, o.tau_s, maps.tau_s[index] as f64]) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn territory_is_lateral_and_one_sided() {
        assert!(in_territory([45.0, 0.0, 0.0], Hemisphere::Left));
        assert!(!in_territory([-45.0, 0.0, 0.0], Hemisphere::Left));
        assert!(in_territory([-45.0, 0.0, 0.0], Hemisphere::Right));
        // Far anterior near the midline belongs to the ACA territory.
        assert!(!in_territory([10.0, -70.0, 0.0], Hemisphere::Left));
    }
}
