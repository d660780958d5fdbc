//! Procedural head anatomy: nested superellipsoid layers, deep nuclei, ventricles, falx and
//! PSF-blurred vessels, evaluated on the image grid.
//!
//! Positions are in a head frame (mm) whose axes are patient left (u), posterior (v) and superior
//! (w), centred on the head; the pose maps it into DICOM LPS patient space.

use ndarray::Array3;
use penumbra_imaging::Geometry;
use rand::Rng;
use serde::Serialize;

/// Anatomical class of a voxel, before lesions and vessels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum AnatomyClass {
    Air = 0,
    Scalp = 1,
    SkullCortex = 2,
    Diploe = 3,
    Csf = 4,
    GreyMatter = 5,
    WhiteMatter = 6,
    DeepGreyMatter = 7,
    Ventricle = 8,
    Falx = 9,
}

impl AnatomyClass {
    /// Whether the class is perfused brain tissue.
    pub fn is_parenchyma(code: u8) -> bool {
        code == AnatomyClass::GreyMatter as u8
            || code == AnatomyClass::WhiteMatter as u8
            || code == AnatomyClass::DeepGreyMatter as u8
    }
}

/// Baseline (unenhanced) attenuation of each tissue in HU.
pub mod hu {
    pub const AIR: f64 = -1000.0;
    pub const SCALP: f64 = 40.0;
    pub const SKULL_CORTEX: f64 = 1250.0;
    pub const DIPLOE: f64 = 550.0;
    pub const CSF: f64 = 10.0;
    pub const VENTRICLE: f64 = 8.0;
    pub const GREY_MATTER: f64 = 37.0;
    pub const WHITE_MATTER: f64 = 28.0;
    pub const FALX: f64 = 60.0;
    pub const BLOOD: f64 = 40.0;
}

/// Outer scalp superellipsoid: semi-axes (u, v, w) in mm and exponent.
const HEAD_SEMI_AXES_MM: [f64; 3] = [72.0, 90.0, 80.0];
const HEAD_EXPONENT: f64 = 2.6;

/// Depth of each layer's inner boundary below the scalp surface in mm.
const SCALP_END_MM: f64 = 4.5;
const OUTER_TABLE_END_MM: f64 = 6.5;
const DIPLOE_END_MM: f64 = 10.0;
const INNER_TABLE_END_MM: f64 = 12.0;
const CSF_END_MM: f64 = 14.0;
/// Mean cortical ribbon thickness in mm; the texture varies it by +-0.5 mm.
const CORTEX_MM: f64 = 3.0;

/// Full width at half maximum of the in-plane point spread function in pixels.
pub const PSF_FWHM_PX: f64 = 1.25;

/// Rigid map from the head frame to patient space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeadFrame {
    /// Patient position (mm) of the head centre.
    pub centre_mm: [f64; 3],
    /// Columns are the head axes u, v, w in patient coordinates.
    pub rotation: [[f64; 3]; 3],
}

impl HeadFrame {
    /// Builds the frame for a yaw about the superior axis, then a roll about the anterior axis.
    pub fn new(centre_mm: [f64; 3], yaw_deg: f64, roll_deg: f64) -> HeadFrame {
        let (sy, cy) = yaw_deg.to_radians().sin_cos();
        let (sr, cr) = roll_deg.to_radians().sin_cos();
        // Yaw rotates u, v in the axial plane; roll then tilts u and w in the coronal plane.
        let yaw = [[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]];
        let roll = [[cr, 0.0, -sr], [0.0, 1.0, 0.0], [sr, 0.0, cr]];
        HeadFrame { centre_mm, rotation: matmul(&yaw, &roll) }
    }

    /// Converts a patient position to head coordinates.
    pub fn to_head(&self, p: [f64; 3]) -> [f64; 3] {
        let d = [p[0] - self.centre_mm[0], p[1] - self.centre_mm[1], p[2] - self.centre_mm[2]];
        let r = &self.rotation;
        [
            r[0][0] * d[0] + r[1][0] * d[1] + r[2][0] * d[2],
            r[0][1] * d[0] + r[1][1] * d[1] + r[2][1] * d[2],
            r[0][2] * d[0] + r[1][2] * d[1] + r[2][2] * d[2],
        ]
    }
}

fn matmul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

/// Axial image grid centred on the patient origin, slices inferior to superior.
pub fn axial_geometry(size: usize, pixel_mm: f64, slices: usize, slice_mm: f64) -> Geometry {
    let half_plane = (size as f64 - 1.0) / 2.0 * pixel_mm;
    let half_slab = (slices as f64 - 1.0) / 2.0 * slice_mm;
    Geometry {
        origin_mm: [-half_plane, -half_plane, -half_slab],
        row_dir: [1.0, 0.0, 0.0],
        col_dir: [0.0, 1.0, 0.0],
        normal: [0.0, 0.0, 1.0],
        spacing_mm: [slice_mm, pixel_mm, pixel_mm],
    }
}

/// A smooth random field with zero mean and unit variance: a sum of plane waves with
/// wavelengths of 15 to 40 mm.
#[derive(Debug, Clone)]
pub struct SmoothField {
    waves: Vec<([f64; 3], f64)>,
}

impl SmoothField {
    pub fn new(rng: &mut impl Rng, waves: usize) -> SmoothField {
        Self::with_wavelengths(rng, waves, 15.0, 40.0)
    }

    pub fn with_wavelengths(rng: &mut impl Rng, waves: usize, shortest_mm: f64, longest_mm: f64) -> SmoothField {
        let waves = (0..waves)
            .map(|_| {
                let direction = random_unit_vector(rng);
                let wavenumber = std::f64::consts::TAU / rng.random_range(shortest_mm..longest_mm);
                let k = [direction[0] * wavenumber, direction[1] * wavenumber, direction[2] * wavenumber];
                (k, rng.random_range(0.0..std::f64::consts::TAU))
            })
            .collect();
        SmoothField { waves }
    }

    /// Returns the field value at head position `p` (mm).
    pub fn at(&self, p: [f64; 3]) -> f64 {
        let amplitude = (2.0 / self.waves.len().max(1) as f64).sqrt();
        let sum: f64 = self
            .waves
            .iter()
            .map(|(k, phase)| (k[0] * p[0] + k[1] * p[1] + k[2] * p[2] + phase).cos())
            .sum();
        amplitude * sum
    }
}

fn random_unit_vector(rng: &mut impl Rng) -> [f64; 3] {
    let z: f64 = rng.random_range(-1.0..1.0);
    let phi: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    let r = (1.0 - z * z).sqrt();
    [r * phi.cos(), r * phi.sin(), z]
}

/// Superellipsoid norm: 1 on the surface, homogeneous of degree 1.
fn superellipsoid_norm(p: [f64; 3], semi_axes: [f64; 3], exponent: f64) -> f64 {
    let sum: f64 = (0..3).map(|i| (p[i] / semi_axes[i]).abs().powf(exponent)).sum();
    sum.powf(1.0 / exponent)
}

/// Returns the depth of `p` below the scalp along the ray from the head centre (negative outside).
pub fn depth_below_scalp_mm(p: [f64; 3]) -> f64 {
    let r = superellipsoid_norm(p, HEAD_SEMI_AXES_MM, HEAD_EXPONENT);
    let length = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
    if r < 1e-9 {
        return HEAD_SEMI_AXES_MM[0];
    }
    length * (1.0 / r - 1.0)
}

/// Returns the point at `depth_mm` below the scalp on the ray from the head centre along `direction`.
fn point_below_scalp(direction: [f64; 3], depth_mm: f64) -> [f64; 3] {
    let surface = 1.0 / superellipsoid_norm(direction, HEAD_SEMI_AXES_MM, HEAD_EXPONENT);
    let length = (direction.iter().map(|d| d * d).sum::<f64>()).sqrt();
    let scale = (surface * length - depth_mm) / length;
    [direction[0] * scale, direction[1] * scale, direction[2] * scale]
}

/// Whether `p` lies inside the ellipsoid with `centre` and `semi_axes`.
fn in_ellipsoid(p: [f64; 3], centre: [f64; 3], semi_axes: [f64; 3]) -> bool {
    let sum: f64 = (0..3).map(|i| ((p[i] - centre[i]) / semi_axes[i]).powi(2)).sum();
    sum <= 1.0
}

/// Deep grey nuclei (lentiform, caudate head, thalamus) on the left; the right mirrors u.
const DEEP_NUCLEI: [([f64; 3], [f64; 3]); 3] = [
    ([22.0, -2.0, -8.0], [7.0, 14.0, 10.0]),
    ([12.0, -14.0, 4.0], [5.0, 8.0, 8.0]),
    ([10.0, 10.0, -2.0], [8.0, 12.0, 9.0]),
];

/// Lateral ventricle (body with frontal horn, then atrium) on the left, and the third ventricle.
const LATERAL_VENTRICLE: [([f64; 3], [f64; 3]); 2] = [([8.0, -5.0, 10.0], [5.0, 28.0, 9.0]), ([16.0, 26.0, 5.0], [5.0, 12.0, 8.0])];
const THIRD_VENTRICLE: ([f64; 3], [f64; 3]) = ([0.0, 2.0, -6.0], [1.5, 12.0, 8.0]);

/// Classifies head position `p` and returns its class with its baseline HU. `texture` is a unit
/// field that varies the cortical thickness and the GM/WM attenuation by +-3 HU.
pub fn classify(p: [f64; 3], texture: f64, half_pixel_mm: f64) -> (AnatomyClass, f64) {
    let depth = depth_below_scalp_mm(p);
    if depth < 0.0 {
        return (AnatomyClass::Air, hu::AIR);
    }
    if depth < SCALP_END_MM {
        return (AnatomyClass::Scalp, hu::SCALP);
    }
    if depth < OUTER_TABLE_END_MM {
        return (AnatomyClass::SkullCortex, hu::SKULL_CORTEX);
    }
    if depth < DIPLOE_END_MM {
        return (AnatomyClass::Diploe, hu::DIPLOE);
    }
    if depth < INNER_TABLE_END_MM {
        return (AnatomyClass::SkullCortex, hu::SKULL_CORTEX);
    }
    if depth < CSF_END_MM {
        return (AnatomyClass::Csf, hu::CSF);
    }

    let mirrored = [p[0].abs(), p[1], p[2]];
    let in_ventricle = LATERAL_VENTRICLE.iter().any(|(c, s)| in_ellipsoid(mirrored, *c, *s))
        || in_ellipsoid(p, THIRD_VENTRICLE.0, THIRD_VENTRICLE.1);
    if in_ventricle {
        return (AnatomyClass::Ventricle, hu::VENTRICLE);
    }
    if DEEP_NUCLEI.iter().any(|(c, s)| in_ellipsoid(mirrored, *c, *s)) {
        return (AnatomyClass::DeepGreyMatter, hu::GREY_MATTER + 2.0 * texture);
    }

    // Interhemispheric fissure with the falx in its middle, above the deep structures.
    let fissure = p[2] > 12.0 || p[1].abs() > 40.0;
    if fissure && p[0].abs() <= half_pixel_mm {
        return (AnatomyClass::Falx, hu::FALX);
    }
    if fissure && p[0].abs() <= half_pixel_mm + 1.5 {
        return (AnatomyClass::Csf, hu::CSF);
    }

    if depth < CSF_END_MM + CORTEX_MM + 0.5 * texture {
        return (AnatomyClass::GreyMatter, hu::GREY_MATTER + 3.0 * texture);
    }
    (AnatomyClass::WhiteMatter, hu::WHITE_MATTER + 3.0 * texture)
}

/// A straight vessel piece: a cylinder of blood around a segment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VesselSegment {
    pub start: [f64; 3],
    pub end: [f64; 3],
    pub radius_mm: f64,
    /// Arterial arrival delay after the AIF in seconds; `None` for a vein, which carries the VOF.
    pub arterial_delay_s: Option<f64>,
}

impl VesselSegment {
    fn distance_mm(&self, p: [f64; 3]) -> f64 {
        let d = sub(self.end, self.start);
        let w = sub(p, self.start);
        let length2 = dot(d, d);
        let s = if length2 > 0.0 { (dot(w, d) / length2).clamp(0.0, 1.0) } else { 0.0 };
        let closest = [self.start[0] + s * d[0], self.start[1] + s * d[1], self.start[2] + s * d[2]];
        let e = sub(p, closest);
        dot(e, e).sqrt()
    }

    fn bounds(&self, margin: f64) -> ([f64; 3], [f64; 3]) {
        let mut low = [0.0; 3];
        let mut high = [0.0; 3];
        for i in 0..3 {
            low[i] = self.start[i].min(self.end[i]) - self.radius_mm - margin;
            high[i] = self.start[i].max(self.end[i]) + self.radius_mm + margin;
        }
        (low, high)
    }
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Returns the arteries (ICA, M1, ACA A1 and A2 on both sides, basilar) and the dural sinuses
/// (superior sagittal, straight, transverse) in head coordinates.
pub fn vessel_tree() -> Vec<VesselSegment> {
    let mut vessels = Vec::new();
    let artery = |start, end, radius_mm, delay: f64| VesselSegment { start, end, radius_mm, arterial_delay_s: Some(delay) };

    for sign in [-1.0, 1.0] {
        let ica_top = [19.0 * sign, -8.0, -25.0];
        let a1_end = [2.5 * sign, -22.0, -22.0];
        vessels.push(artery([20.0 * sign, -8.0, -60.0], ica_top, 2.25, 0.0));
        vessels.push(artery(ica_top, [42.0 * sign, -4.0, -22.0], 1.5, 0.0));
        vessels.push(artery(ica_top, a1_end, 1.0, 0.0));
        vessels.push(artery(a1_end, [2.5 * sign, -50.0, 20.0], 1.0, 0.1));
    }
    vessels.push(artery([0.0, 18.0, -60.0], [0.0, 14.0, -28.0], 1.5, 0.5));

    let vein = |start, end, radius_mm| VesselSegment { start, end, radius_mm, arterial_delay_s: None };

    // Superior sagittal sinus along the inner table in the midsagittal plane, from anterior
    // (-50 degrees from vertical) over the vertex to the torcula (120 degrees).
    let sagittal = |degrees: f64| {
        let (s, c) = degrees.to_radians().sin_cos();
        point_below_scalp([0.0, s, c], INNER_TABLE_END_MM + 4.0)
    };
    let steps = 14;
    for i in 0..steps {
        let a = -50.0 + 170.0 * i as f64 / steps as f64;
        let b = -50.0 + 170.0 * (i + 1) as f64 / steps as f64;
        vessels.push(vein(sagittal(a), sagittal(b), 4.0));
    }

    let torcula = sagittal(120.0);
    vessels.push(vein([0.0, 15.0, 2.0], torcula, 2.5));

    for sign in [-1.0, 1.0] {
        let transverse = |degrees: f64| {
            let (s, c) = degrees.to_radians().sin_cos();
            let tilt = -0.35;
            point_below_scalp([sign * s, c, tilt], INNER_TABLE_END_MM + 3.5)
        };
        let mut previous = torcula;
        for degrees in [15.0, 35.0, 55.0, 75.0] {
            let next = transverse(degrees);
            vessels.push(vein(previous, next, 3.5));
            previous = next;
        }
    }
    vessels
}

/// Fraction of a voxel filled by arterial and by venous blood, with the arterial delay of the
/// dominant artery.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VesselFractions {
    pub artery: f64,
    pub artery_delay_s: f64,
    pub vein: f64,
}

/// Computes the blood fractions of the voxel centred at head position `centre`, averaging five
/// points across the slice thickness (along `slice_axis`, a head-frame unit vector) and blurring
/// in plane with a Gaussian PSF of standard deviation `psf_sigma_mm`.
pub fn vessel_fractions(
    vessels: &[VesselSegment],
    centre: [f64; 3],
    slice_axis: [f64; 3],
    slice_mm: f64,
    psf_sigma_mm: f64,
) -> VesselFractions {
    let margin = 0.5 * slice_mm + 4.0 * psf_sigma_mm;
    let near: Vec<&VesselSegment> = vessels
        .iter()
        .filter(|v| {
            let (low, high) = v.bounds(margin);
            (0..3).all(|i| centre[i] >= low[i] && centre[i] <= high[i])
        })
        .collect();
    if near.is_empty() {
        return VesselFractions::default();
    }

    let samples = 5;
    let mut out = VesselFractions::default();
    let mut best_artery = 0.0;
    for k in 0..samples {
        let offset = ((k as f64 + 0.5) / samples as f64 - 0.5) * slice_mm;
        let p = [
            centre[0] + offset * slice_axis[0],
            centre[1] + offset * slice_axis[1],
            centre[2] + offset * slice_axis[2],
        ];

        let mut artery: f64 = 0.0;
        let mut vein: f64 = 0.0;
        for v in &near {
            let fraction = normal_cdf((v.radius_mm - v.distance_mm(p)) / psf_sigma_mm);
            match v.arterial_delay_s {
                Some(delay) => {
                    if fraction > artery {
                        artery = fraction;
                        if fraction > best_artery {
                            best_artery = fraction;
                            out.artery_delay_s = delay;
                        }
                    }
                }
                None => vein = vein.max(fraction),
            }
        }
        out.artery += artery / samples as f64;
        out.vein += vein / samples as f64;
    }

    // Overlapping arteries and veins cannot fill more than the voxel.
    let total = out.artery + out.vein;
    if total > 1.0 {
        out.artery /= total;
        out.vein /= total;
    }
    out
}

/// Standard normal cumulative distribution function, through the Abramowitz and Stegun 7.1.26
/// approximation of erf (absolute error below 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Anatomy evaluated on the image grid.
#[derive(Debug, Clone)]
pub struct AnatomyMaps {
    /// [`AnatomyClass`] codes, `(z, y, x)`.
    pub class: Array3<u8>,
    /// Unenhanced attenuation of the tissue part in HU.
    pub baseline_hu: Array3<f32>,
    pub artery_fraction: Array3<f32>,
    pub artery_delay_s: Array3<f32>,
    pub vein_fraction: Array3<f32>,
    /// Head-frame position of each voxel centre in mm.
    pub head_mm: Array3<[f32; 3]>,
}

/// Evaluates the anatomy on `geometry` with `shape (z, y, x)` for the head placed by `frame`.
pub fn build(geometry: &Geometry, shape: [usize; 3], frame: &HeadFrame, texture: &SmoothField) -> AnatomyMaps {
    let [nz, ny, nx] = shape;
    let pixel_mm = geometry.spacing_mm[2];
    let slice_mm = geometry.spacing_mm[0];
    let psf_sigma_mm = PSF_FWHM_PX * pixel_mm / 2.354_820_045;
    let vessels = vessel_tree();

    let origin = frame.to_head([0.0; 3]);
    let tip = frame.to_head(geometry.normal);
    let slice_axis = sub(tip, origin);

    let mut maps = AnatomyMaps {
        class: Array3::zeros(shape),
        baseline_hu: Array3::zeros(shape),
        artery_fraction: Array3::zeros(shape),
        artery_delay_s: Array3::zeros(shape),
        vein_fraction: Array3::zeros(shape),
        head_mm: Array3::from_elem(shape, [0.0; 3]),
    };

    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let p = frame.to_head(geometry.position_mm(z as f64, y as f64, x as f64));
                let (class, baseline) = classify(p, texture.at(p), 0.5 * pixel_mm);
                let fractions = vessel_fractions(&vessels, p, slice_axis, slice_mm, psf_sigma_mm);

                maps.class[[z, y, x]] = class as u8;
                maps.baseline_hu[[z, y, x]] = baseline as f32;
                maps.artery_fraction[[z, y, x]] = fractions.artery as f32;
                maps.artery_delay_s[[z, y, x]] = fractions.artery_delay_s as f32;
                maps.vein_fraction[[z, y, x]] = fractions.vein as f32;
                maps.head_mm[[z, y, x]] = [p[0] as f32, p[1] as f32, p[2] as f32];
            }
        }
    }
    maps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_from_outside_in() {
        // Along +u the scalp surface is at 72 mm.
        let at = |u: f64| classify([u, 0.0, 0.0], 0.0, 0.45).0;
        assert_eq!(at(73.0), AnatomyClass::Air);
        assert_eq!(at(70.0), AnatomyClass::Scalp);
        assert_eq!(at(66.0), AnatomyClass::SkullCortex);
        assert_eq!(at(64.0), AnatomyClass::Diploe);
        assert_eq!(at(61.0), AnatomyClass::SkullCortex);
        assert_eq!(at(59.0), AnatomyClass::Csf);
        assert_eq!(at(56.0), AnatomyClass::GreyMatter);
        assert_eq!(at(45.0), AnatomyClass::WhiteMatter);
        assert_eq!(at(22.0), AnatomyClass::DeepGreyMatter);
        assert_eq!(classify([8.0, -5.0, 10.0], 0.0, 0.45).0, AnatomyClass::Ventricle);
        assert_eq!(classify([0.0, -60.0, 20.0], 0.0, 0.45).0, AnatomyClass::Falx);
    }

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.0) - 0.841_344_746).abs() < 2e-7);
        assert!((normal_cdf(-1.96) - 0.024_997_895).abs() < 2e-7);
    }

    #[test]
    fn thin_artery_loses_peak_in_thick_slice() {
        // A 3 mm M1 running in plane through a 5 mm slice fills at most about 3/5 of a voxel.
        let m1 = VesselSegment { start: [0.0, 0.0, 0.0], end: [30.0, 0.0, 0.0], radius_mm: 1.5, arterial_delay_s: Some(0.0) };
        let f = vessel_fractions(&[m1], [15.0, 0.0, 0.0], [0.0, 0.0, 1.0], 5.0, 0.48);
        assert!(f.artery > 0.45 && f.artery < 0.65, "{}", f.artery);

        // The 4.5 mm ICA crossing the slice fills its centre voxel.
        let ica = VesselSegment { start: [0.0, 0.0, -20.0], end: [0.0, 0.0, 20.0], radius_mm: 2.25, arterial_delay_s: Some(0.0) };
        let f = vessel_fractions(&[ica], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], 5.0, 0.48);
        assert!(f.artery > 0.99, "{}", f.artery);
    }

    #[test]
    fn head_frame_round_trip_yaw() {
        let frame = HeadFrame::new([5.0, 0.0, 0.0], 90.0, 0.0);
        // With a 90 degree yaw the head's left axis points to patient posterior.
        let h = frame.to_head([5.0, 10.0, 0.0]);
        assert!((h[0] - 10.0).abs() < 1e-9 && h[1].abs() < 1e-9, "{h:?}");
    }
}
