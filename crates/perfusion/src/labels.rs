//! Threshold labelling of core and penumbra, volumes, and trial eligibility criteria.
//!
//! Relative thresholds divide by a reference taken from healthy contralateral tissue: brain
//! voxels (no vessel) on the side opposite the lesion with Tmax below the healthy limit, whose
//! median is used. The midline is the brain mask's in-plane principal (anterior-posterior)
//! axis through its centroid. The lesion side is the one with more voxels above the Tmax limit.

use ndarray::{Array3, Zip};
use serde::{Deserialize, Serialize};
use tracing::info;

use penumbra_imaging::{Label, LabelVolume};

use crate::concentration::median_in_place;
use crate::deconvolution::recovered_fraction;
use crate::maps::PerfusionMaps;
use crate::masks::{remove_small_components, Connectivity};

/// Minimum healthy contralateral voxels for a reference. With fewer, the whole brain is used.
const MIN_REFERENCE_VOXELS: usize = 20;

/// In-plane eigenvalue ratio below which the brain is too round for a principal axis, and the
/// image x axis is taken as left-right.
const MIN_AXIS_ANISOTROPY: f64 = 1.05;

/// Rule for ischemic core voxels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum CoreRule {
    /// CBF below this fraction of the reference CBF.
    RelativeCbfBelow { fraction: f32 },
    /// Absolute CBV below this value in mL/100 g.
    CbvBelow { ml_100g: f32 },
}

/// Rule for hypoperfused voxels (core plus penumbra).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum HypoperfusionRule {
    /// Tmax above this many seconds.
    TmaxAbove { seconds: f32 },
    /// MTT above this fraction of the reference MTT (1.45 for 145 %).
    RelativeMttAbove { fraction: f32 },
}

/// Thresholds and clean-up for [`label`]; missing fields take the RAPID preset's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabelParams {
    /// Preset name, reported with the result.
    pub name: String,
    pub core: CoreRule,
    pub hypoperfusion: HypoperfusionRule,
    /// Core only where the hypoperfusion rule also holds.
    pub core_within_hypoperfusion: bool,
    /// Components (26-connected) smaller than this many mL are removed from core and from the
    /// hypoperfused region.
    pub min_component_ml: f64,
    /// Tmax (s) below which contralateral tissue counts as healthy for the reference.
    pub healthy_tmax_s: f32,
    /// Tmax (s) above which a voxel counts towards the lesion side.
    pub lesion_tmax_s: f32,
}

impl LabelParams {
    /// RAPID-like: core rCBF < 30 %, hypoperfused Tmax > 6 s.
    pub fn rapid() -> Self {
        Self {
            name: "rapid".to_string(),
            core: CoreRule::RelativeCbfBelow { fraction: 0.30 },
            hypoperfusion: HypoperfusionRule::TmaxAbove { seconds: 6.0 },
            core_within_hypoperfusion: false,
            min_component_ml: 0.5,
            healthy_tmax_s: 4.0,
            lesion_tmax_s: 6.0,
        }
    }

    /// Cereda 2016: core rCBF < 38 %, hypoperfused Tmax > 6 s.
    pub fn cereda() -> Self {
        Self {
            name: "cereda".to_string(),
            core: CoreRule::RelativeCbfBelow { fraction: 0.38 },
            ..Self::rapid()
        }
    }

    /// Wintermark 2006: at risk where relative MTT > 145 %, core where CBV < 2.0 mL/100 g within
    /// it (normal white matter has CBV near 2, so core is never taken outside the MTT region).
    pub fn wintermark() -> Self {
        Self {
            name: "wintermark".to_string(),
            core: CoreRule::CbvBelow { ml_100g: 2.0 },
            hypoperfusion: HypoperfusionRule::RelativeMttAbove { fraction: 1.45 },
            core_within_hypoperfusion: true,
            ..Self::rapid()
        }
    }

    /// Returns the preset called `name` (`rapid`, `cereda`, `wintermark`), if it exists.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "rapid" => Some(Self::rapid()),
            "cereda" => Some(Self::cereda()),
            "wintermark" => Some(Self::wintermark()),
            _ => None,
        }
    }
}

impl Default for LabelParams {
    fn default() -> Self {
        Self::rapid()
    }
}

/// Selection method of the reference tissue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceMethod {
    /// Contralateral brain with Tmax below the healthy limit.
    ContralateralHealthy,
    /// Too few contralateral voxels or no lesion side: whole brain with Tmax below the limit.
    WholeBrainHealthy,
    /// No healthy voxel at all: median of the whole brain (a fallback that flags the case).
    WholeBrain,
    /// No brain voxel: no reference, so relative thresholds find nothing.
    None,
}

/// The reference tissue and its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceTissue {
    pub method: ReferenceMethod,
    pub voxels: usize,
    /// CBF of the reference tissue, mL/100 g/min: its median CBF divided by the fraction the
    /// deconvolution recovers at its median MTT. Relative CBF divides by this.
    pub cbf_ml_100g_min: Option<f32>,
    /// Median CBF of the reference tissue as measured, before that division.
    #[serde(default)]
    pub measured_cbf_ml_100g_min: Option<f32>,
    /// The fraction of CBF the deconvolution recovers at the reference's median MTT (about
    /// 0.7 for normal tissue); 1 for a scanner's maps.
    #[serde(default = "full_recovery")]
    pub cbf_recovery: f64,
    /// Median MTT of the reference tissue, s.
    pub mtt_s: Option<f32>,
    /// Centroid of the brain mask in voxel units, `(z, y, x)`.
    pub midline_centroid: [f64; 3],
    /// In-plane unit normal of the midline plane in mm space, `(y, x)` components.
    pub midline_normal_yx: [f64; 2],
    /// Side of the lesion relative to the midline normal: +1, -1, or 0 when none was found.
    pub lesion_side: i8,
}

fn full_recovery() -> f64 {
    1.0
}

/// Trial eligibility criteria as computed; they make no treatment decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EligibilityCheck {
    pub core_ok: bool,
    pub mismatch_ratio_ok: bool,
    pub mismatch_volume_ok: bool,
    /// All three criteria hold.
    pub met: bool,
}

/// Labels, volumes and criteria from [`label`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// 0 background, 1 penumbra, 2 core; not serialised (it goes out as DICOM SEG).
    #[serde(skip)]
    pub labels: LabelVolume,
    pub reference: ReferenceTissue,
    pub core_volume_ml: f64,
    pub penumbra_volume_ml: f64,
    /// Volume of the hypoperfusion rule region (e.g. Tmax > 6 s), mL.
    pub hypoperfused_volume_ml: f64,
    /// Hypoperfused minus core volume, mL.
    pub mismatch_volume_ml: f64,
    /// Hypoperfused over core volume; `None` when the core is empty.
    pub mismatch_ratio: Option<f64>,
    /// DEFUSE 3: core < 70 mL, ratio >= 1.8, mismatch >= 15 mL.
    pub defuse3: EligibilityCheck,
    /// EXTEND: core < 70 mL, ratio > 1.2, mismatch > 10 mL.
    pub extend: EligibilityCheck,
    pub thresholds: LabelParams,
}

/// Labels core and penumbra in `maps` with the rules of `params`.
///
/// Vessels and voxels outside the brain mask are never labelled. With an empty core the
/// mismatch ratio is `None`, and the ratio criteria count as met when any tissue is
/// hypoperfused (an unbounded ratio).
pub fn label(maps: &PerfusionMaps, params: &LabelParams) -> ThresholdResult {
    let tissue = Zip::from(&maps.brain_mask)
        .and(&maps.vessel_mask)
        .map_collect(|&b, &v| b && !v);
    let reference = reference_tissue(maps, &tissue, params);

    let hypoperfused = match params.hypoperfusion {
        HypoperfusionRule::TmaxAbove { seconds } => threshold(&tissue, &maps.tmax, |t| t > seconds),
        HypoperfusionRule::RelativeMttAbove { fraction } => match reference.mtt_s {
            Some(mtt) if mtt > 0.0 => threshold(&tissue, &maps.mtt, |m| m > fraction * mtt),
            _ => Array3::from_elem(tissue.dim(), false),
        },
    };
    let mut core = match params.core {
        CoreRule::RelativeCbfBelow { fraction } => match reference.cbf_ml_100g_min {
            Some(cbf) if cbf > 0.0 => threshold(&tissue, &maps.cbf, |f| f < fraction * cbf),
            _ => Array3::from_elem(tissue.dim(), false),
        },
        CoreRule::CbvBelow { ml_100g } => threshold(&tissue, &maps.cbv, |v| v < ml_100g),
    };
    if params.core_within_hypoperfusion {
        core &= &hypoperfused;
    }

    let voxel_ml = maps.geometry.voxel_volume_ml();
    let Lesions {
        core,
        hypoperfused,
        labels,
    } = drop_small_lesions(&core, &hypoperfused, params.min_component_ml, voxel_ml);

    let count = |mask: &Array3<bool>| mask.iter().filter(|&&v| v).count() as f64 * voxel_ml;
    let core_volume_ml = count(&core);
    let hypoperfused_volume_ml = count(&hypoperfused);
    let penumbra_volume_ml =
        penumbra_imaging::labels::count(&labels, Label::Penumbra) as f64 * voxel_ml;
    let mismatch_volume_ml = hypoperfused_volume_ml - core_volume_ml;
    let mismatch_ratio = (core_volume_ml > 0.0).then(|| hypoperfused_volume_ml / core_volume_ml);

    let ratio_at_least = |limit: f64, strict: bool| match mismatch_ratio {
        Some(r) if strict => r > limit,
        Some(r) => r >= limit,
        None => hypoperfused_volume_ml > 0.0,
    };
    let defuse3 = eligibility(
        core_volume_ml < 70.0,
        ratio_at_least(1.8, false),
        mismatch_volume_ml >= 15.0,
    );
    let extend = eligibility(
        core_volume_ml < 70.0,
        ratio_at_least(1.2, true),
        mismatch_volume_ml > 10.0,
    );

    info!(
        preset = %params.name,
        core_ml = core_volume_ml,
        hypoperfused_ml = hypoperfused_volume_ml,
        reference = ?reference.method,
        "threshold labelling done"
    );
    ThresholdResult {
        labels,
        reference,
        core_volume_ml,
        penumbra_volume_ml,
        hypoperfused_volume_ml,
        mismatch_volume_ml,
        mismatch_ratio,
        defuse3,
        extend,
        thresholds: params.clone(),
    }
}

fn eligibility(
    core_ok: bool,
    mismatch_ratio_ok: bool,
    mismatch_volume_ok: bool,
) -> EligibilityCheck {
    EligibilityCheck {
        core_ok,
        mismatch_ratio_ok,
        mismatch_volume_ok,
        met: core_ok && mismatch_ratio_ok && mismatch_volume_ok,
    }
}

fn threshold(tissue: &Array3<bool>, map: &Array3<f32>, rule: impl Fn(f32) -> bool) -> Array3<bool> {
    Zip::from(tissue)
        .and(map)
        .map_collect(|&inside, &value| inside && rule(value))
}

/// Returns the midline plane: centroid (voxel units) and in-plane unit normal in mm `(y, x)`.
fn midline(tissue: &Array3<bool>, spacing_mm: [f64; 3]) -> ([f64; 3], [f64; 2]) {
    let mut count = 0.0;
    let mut sum = [0.0f64; 3];
    for ((z, y, x), &inside) in tissue.indexed_iter() {
        if inside {
            count += 1.0;
            sum[0] += z as f64;
            sum[1] += y as f64;
            sum[2] += x as f64;
        }
    }
    if count == 0.0 {
        return ([0.0; 3], [0.0, 1.0]);
    }
    let centroid = sum.map(|s| s / count);

    let (mut syy, mut sxx, mut sxy) = (0.0, 0.0, 0.0);
    for ((_, y, x), &inside) in tissue.indexed_iter() {
        if inside {
            let dy = (y as f64 - centroid[1]) * spacing_mm[1];
            let dx = (x as f64 - centroid[2]) * spacing_mm[2];
            syy += dy * dy;
            sxx += dx * dx;
            sxy += dx * dy;
        }
    }

    // Eigenvalues of the symmetric 2x2 covariance; the normal is the minor axis.
    let mean = (syy + sxx) / 2.0;
    let spread = (((syy - sxx) / 2.0).powi(2) + sxy * sxy).sqrt();
    let (major, minor) = (mean + spread, mean - spread);
    if minor <= 0.0 || major / minor < MIN_AXIS_ANISOTROPY {
        return (centroid, [0.0, 1.0]);
    }
    // Eigenvector of `minor`: (minor - syy, sxy) in (x, y) order, from the y row of
    // (C - minor I) v = 0, or the axis when sxy is 0.
    let (nx, ny) = if sxy.abs() > 1e-12 {
        (minor - syy, sxy)
    } else if sxx < syy {
        (1.0, 0.0)
    } else {
        (0.0, 1.0)
    };
    let norm = (nx * nx + ny * ny).sqrt();
    let (mut nx, mut ny) = (nx / norm, ny / norm);
    // Orient the normal towards +x so sides keep a stable sign.
    if nx < 0.0 {
        nx = -nx;
        ny = -ny;
    }
    (centroid, [ny, nx])
}

/// Core and hypoperfused masks without their small components, and the labels they make.
#[derive(Debug, Clone)]
pub struct Lesions {
    pub core: Array3<bool>,
    pub hypoperfused: Array3<bool>,
    /// Core voxels 2, other hypoperfused voxels 1, the rest 0.
    pub labels: LabelVolume,
}

/// Removes the core and hypoperfused components (26-connected) smaller than `min_ml` mL and
/// labels what is left. The threshold labels and the U-Net labels both go through it.
pub fn drop_small_lesions(
    core: &Array3<bool>,
    hypoperfused: &Array3<bool>,
    min_ml: f64,
    voxel_ml: f64,
) -> Lesions {
    drop_small_lesions_with(core, hypoperfused, min_ml, min_ml, voxel_ml)
}

/// Removes core components smaller than `core_min_ml` and hypoperfused components smaller than
/// `hypoperfused_min_ml` (26-connected), then core outside the hypoperfused voxels kept, and
/// labels what is left.
pub fn drop_small_lesions_with(
    core: &Array3<bool>,
    hypoperfused: &Array3<bool>,
    core_min_ml: f64,
    hypoperfused_min_ml: f64,
    voxel_ml: f64,
) -> Lesions {
    let min_voxels = |min_ml: f64| {
        if voxel_ml > 0.0 {
            (min_ml / voxel_ml).ceil() as usize
        } else {
            0
        }
    };
    let hypoperfused = remove_small_components(hypoperfused, min_voxels(hypoperfused_min_ml), Connectivity::TwentySix);
    let mut core = remove_small_components(core, min_voxels(core_min_ml), Connectivity::TwentySix);
    if hypoperfused_min_ml > core_min_ml {
        Zip::from(&mut core).and(&hypoperfused).for_each(|c, &h| *c &= h);
    }

    let labels = Zip::from(&core).and(&hypoperfused).map_collect(|&c, &h| {
        if c {
            Label::Core as u8
        } else if h {
            Label::Penumbra as u8
        } else {
            Label::Background as u8
        }
    });
    Lesions {
        core,
        hypoperfused,
        labels,
    }
}

fn reference_tissue(
    maps: &PerfusionMaps,
    tissue: &Array3<bool>,
    params: &LabelParams,
) -> ReferenceTissue {
    let spacing = maps.geometry.spacing_mm;
    let (centroid, normal) = midline(tissue, spacing);
    let side = |y: usize, x: usize| -> i8 {
        let d = (y as f64 - centroid[1]) * spacing[1] * normal[0]
            + (x as f64 - centroid[2]) * spacing[2] * normal[1];
        if d >= 0.0 {
            1
        } else {
            -1
        }
    };

    let (mut positive, mut negative) = (0usize, 0usize);
    for (((_, y, x), &inside), &tmax) in tissue.indexed_iter().zip(maps.tmax.iter()) {
        if inside && tmax > params.lesion_tmax_s {
            if side(y, x) > 0 {
                positive += 1
            } else {
                negative += 1
            }
        }
    }
    let lesion_side: i8 = match positive.cmp(&negative) {
        std::cmp::Ordering::Greater => 1,
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
    };

    let healthy = |contralateral_only: bool| -> Vec<usize> {
        let plane = tissue.dim().1 * tissue.dim().2;
        let nx = tissue.dim().2;
        tissue
            .iter()
            .zip(maps.tmax.iter())
            .enumerate()
            .filter(|(i, (&inside, &tmax))| {
                let (y, x) = ((i % plane) / nx, i % nx);
                inside
                    && tmax < params.healthy_tmax_s
                    && (!contralateral_only || side(y, x) != lesion_side)
            })
            .map(|(i, _)| i)
            .collect()
    };

    let mut method = ReferenceMethod::ContralateralHealthy;
    let mut voxels = if lesion_side != 0 {
        healthy(true)
    } else {
        Vec::new()
    };
    if voxels.len() < MIN_REFERENCE_VOXELS {
        method = ReferenceMethod::WholeBrainHealthy;
        voxels = healthy(false);
    }
    if voxels.is_empty() {
        method = ReferenceMethod::WholeBrain;
        voxels = tissue
            .iter()
            .enumerate()
            .filter(|(_, &inside)| inside)
            .map(|(i, _)| i)
            .collect();
    }
    if voxels.is_empty() {
        method = ReferenceMethod::None;
    }

    let median_of = |map: &Array3<f32>| {
        let flat = map.as_slice().expect("maps are in standard layout");
        let mut values: Vec<f64> = voxels.iter().map(|&i| flat[i] as f64).collect();
        median_in_place(&mut values).map(|m| m as f32)
    };
    // Truncated SVD recovers less of the CBF the shorter the MTT: about 70 % in normal
    // tissue, over 90 % in the long-MTT core. Dividing the reference by its own recovery
    // compares the lesion, whose CBF is nearly fully recovered, with the reference's true CBF.
    // Only the reference is corrected: its median MTT is precise, while a noisy lesion voxel's
    // MTT is not.
    let measured_cbf = median_of(&maps.cbf);
    let mtt_s = median_of(&maps.mtt);
    let cbf_recovery = mtt_s.map_or(1.0, |mtt| recovered_fraction(&maps.cbf_recovery, mtt as f64));
    ReferenceTissue {
        method,
        voxels: voxels.len(),
        cbf_ml_100g_min: measured_cbf.map(|cbf| (cbf as f64 / cbf_recovery) as f32),
        measured_cbf_ml_100g_min: measured_cbf,
        cbf_recovery,
        mtt_s,
        midline_centroid: centroid,
        midline_normal_yx: normal,
        lesion_side,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use penumbra_imaging::Geometry;

    /// Builds a 1-slice 20x10 brain (y long axis) of 1 mL voxels: left half x < 5, right x >= 5.
    fn maps_with(
        cbf: impl Fn(usize, usize) -> f32,
        tmax: impl Fn(usize, usize) -> f32,
    ) -> PerfusionMaps {
        let shape = (1, 20, 10);
        let cbf = Array3::from_shape_fn(shape, |(_, y, x)| cbf(y, x));
        let tmax = Array3::from_shape_fn(shape, |(_, y, x)| tmax(y, x));
        let cbv = Array3::from_elem(shape, 4.0f32);
        let mtt = Zip::from(&cbv).and(&cbf).map_collect(|&v, &f| 60.0 * v / f);
        PerfusionMaps {
            cbf,
            cbv,
            mtt,
            tmax,
            brain_mask: Array3::from_elem(shape, true),
            vessel_mask: Array3::from_elem(shape, false),
            cbf_recovery: Vec::new(),
            geometry: Geometry {
                origin_mm: [0.0; 3],
                row_dir: [1.0, 0.0, 0.0],
                col_dir: [0.0, 1.0, 0.0],
                normal: [0.0, 0.0, 1.0],
                spacing_mm: [10.0, 10.0, 10.0],
            },
        }
    }

    #[test]
    fn rapid_core_and_penumbra_volumes() {
        // Left half: rows 0..4 core (CBF 10, Tmax 9), rows 4..12 penumbra (CBF 30, Tmax 8).
        // Right half healthy: CBF 50, Tmax 1. Reference median 50, core limit 15.
        let maps = maps_with(
            |y, x| {
                if x < 5 && y < 4 {
                    10.0
                } else if x < 5 && y < 12 {
                    30.0
                } else {
                    50.0
                }
            },
            |y, x| {
                if x < 5 && y < 4 {
                    9.0
                } else if x < 5 && y < 12 {
                    8.0
                } else {
                    1.0
                }
            },
        );
        let result = label(&maps, &LabelParams::rapid());

        assert_eq!(
            result.reference.method,
            ReferenceMethod::ContralateralHealthy
        );
        assert_eq!(result.reference.cbf_ml_100g_min, Some(50.0));
        assert_eq!(result.reference.voxels, 100);
        assert_eq!(result.core_volume_ml, 20.0);
        assert_eq!(result.hypoperfused_volume_ml, 60.0);
        assert_eq!(result.penumbra_volume_ml, 40.0);
        assert_eq!(result.mismatch_volume_ml, 40.0);
        assert_eq!(result.mismatch_ratio, Some(3.0));
        assert!(result.defuse3.met);
        assert!(result.extend.met);
        assert_eq!(result.labels[(0, 0, 0)], 2);
        assert_eq!(result.labels[(0, 5, 0)], 1);
        assert_eq!(result.labels[(0, 5, 9)], 0);
    }

    #[test]
    fn reference_cbf_is_divided_by_its_recovery() {
        // Left half: rows 0..4 CBF 10, rows 4..12 CBF 25, all Tmax 8; right half CBF 50, Tmax 1.
        let mut maps = maps_with(
            |y, x| {
                if x < 5 && y < 4 {
                    10.0
                } else if x < 5 && y < 12 {
                    25.0
                } else {
                    50.0
                }
            },
            |y, x| if x < 5 && y < 12 { 8.0 } else { 1.0 },
        );
        let plain = label(&maps, &LabelParams::rapid());
        assert_eq!(plain.reference.cbf_recovery, 1.0);
        assert_eq!(plain.core_volume_ml, 20.0);

        // The reference's MTT is 60 * 4 / 50 = 4.8 s; half its CBF was recovered, so its true CBF
        // is 100 and the core limit 30 takes the CBF-25 rows too.
        maps.cbf_recovery = vec![(3.0, 0.4), (6.6, 0.6)];
        let corrected = label(&maps, &LabelParams::rapid());
        assert!((corrected.reference.cbf_recovery - 0.5).abs() < 1e-6);
        assert_eq!(corrected.reference.measured_cbf_ml_100g_min, Some(50.0));
        let reference = corrected.reference.cbf_ml_100g_min.unwrap();
        assert!((reference - 100.0).abs() < 1e-3, "{reference}");
        assert_eq!(corrected.core_volume_ml, 60.0);
    }

    #[test]
    fn midline_normal_is_minor_axis_of_tilted_ellipse() {
        // An ellipse with semi-axes 30 (along y) and 20 (along x) voxels of 1 mm, turned by
        // 10 degrees: the normal is the turned x axis.
        let (sin, cos) = 10f64.to_radians().sin_cos();
        let tissue = Array3::from_shape_fn((1, 101, 101), |(_, y, x)| {
            let (dy, dx) = (y as f64 - 50.0, x as f64 - 50.0);
            let along_x = cos * dx + sin * dy;
            let along_y = -sin * dx + cos * dy;
            (along_x / 20.0).powi(2) + (along_y / 30.0).powi(2) <= 1.0
        });
        let (_, normal) = midline(&tissue, [5.0, 1.0, 1.0]);
        assert!((normal[1] - cos).abs() < 0.02, "normal (y, x) {normal:?}");
        assert!((normal[0] - sin).abs() < 0.02, "normal (y, x) {normal:?}");
    }

    #[test]
    fn reference_ignores_lesion_hemisphere() {
        // The left half is entirely hypoperfused (Tmax 8, CBF 20); the right healthy half
        // has CBF 40 in rows < 10 and 60 elsewhere, so its median is the upper middle, 60.
        // A whole-brain median would be 40 and would miss the core limit of 18 vs 12.
        let maps = maps_with(
            |y, x| {
                if x < 5 {
                    20.0
                } else if y < 10 {
                    40.0
                } else {
                    60.0
                }
            },
            |_, x| if x < 5 { 8.0 } else { 1.0 },
        );
        let result = label(&maps, &LabelParams::rapid());

        assert_eq!(result.reference.lesion_side, -1);
        assert_eq!(result.reference.cbf_ml_100g_min, Some(60.0));
        // 20 < 0.3 * 60 = 18 is false: no core.
        assert_eq!(result.core_volume_ml, 0.0);
        assert_eq!(result.mismatch_ratio, None);
        assert!(result.defuse3.mismatch_ratio_ok);
        assert!(result.defuse3.met);
    }

    #[test]
    fn small_components_dropped() {
        // A single hypoperfused voxel (1 mL) with min_component_ml 1.5 disappears.
        let maps = maps_with(|_, _| 50.0, |y, x| if y == 3 && x == 2 { 8.0 } else { 1.0 });
        let params = LabelParams {
            min_component_ml: 1.5,
            ..LabelParams::rapid()
        };
        let result = label(&maps, &params);
        assert_eq!(result.hypoperfused_volume_ml, 0.0);
        let kept = label(
            &maps,
            &LabelParams {
                min_component_ml: 0.5,
                ..LabelParams::rapid()
            },
        );
        assert_eq!(kept.hypoperfused_volume_ml, 1.0);
    }

    #[test]
    fn eligibility_boundaries() {
        // DEFUSE 3 needs ratio >= 1.8 and mismatch >= 15; EXTEND needs ratio > 1.2 and > 10.
        let defuse = eligibility(true, true, false);
        assert!(!defuse.met);
        // Core 12 mL and hypoperfused 24 mL: ratio 2.0, mismatch 12 mL.
        let maps = maps_with(
            |y, x| {
                if x < 5 && y < 2 || x == 0 && y < 4 {
                    5.0
                } else {
                    50.0
                }
            },
            |y, x| {
                if x < 5 && y < 4 || x == 0 && y < 8 {
                    8.0
                } else {
                    1.0
                }
            },
        );
        let result = label(&maps, &LabelParams::rapid());
        assert_eq!(result.core_volume_ml, 12.0);
        assert_eq!(result.hypoperfused_volume_ml, 24.0);
        assert_eq!(result.mismatch_ratio, Some(2.0));
        assert!(result.defuse3.core_ok);
        assert!(result.defuse3.mismatch_ratio_ok);
        assert!(!result.defuse3.mismatch_volume_ok);
        assert!(!result.defuse3.met);
        assert!(result.extend.met);
    }

    #[test]
    fn wintermark_core_inside_mtt_region() {
        // CBV is 4 everywhere except 1.5 in rows < 4 (both halves). MTT = 240 / CBF:
        // left half CBF 20 -> MTT 12 s, right half CBF 60 -> MTT 4 s (reference 4, limit 5.8).
        let mut maps = maps_with(
            |_, x| if x < 5 { 20.0 } else { 60.0 },
            |_, x| if x < 5 { 8.0 } else { 1.0 },
        );
        maps.cbv.indexed_iter_mut().for_each(|((_, y, _), v)| {
            if y < 4 {
                *v = 1.5
            }
        });
        let result = label(&maps, &LabelParams::wintermark());

        assert_eq!(result.reference.mtt_s, Some(4.0));
        assert_eq!(result.hypoperfused_volume_ml, 100.0);
        // Low CBV on the healthy side is not core because it is outside the MTT region.
        assert_eq!(result.core_volume_ml, 20.0);
    }

    #[test]
    fn presets_by_name() {
        assert_eq!(
            LabelParams::preset("cereda").unwrap().core,
            CoreRule::RelativeCbfBelow { fraction: 0.38 }
        );
        assert!(LabelParams::preset("rapid2").is_none());
        let json = serde_json::to_value(LabelParams::rapid()).unwrap();
        assert_eq!(json["core"]["rule"], "relative_cbf_below");
        assert_eq!(json["hypoperfusion"]["seconds"], 6.0);
    }

    #[test]
    fn result_serializes_volume_keys() {
        let maps = maps_with(|_, _| 50.0, |_, _| 1.0);
        let json = serde_json::to_value(label(&maps, &LabelParams::rapid())).unwrap();
        for key in [
            "core_volume_ml",
            "penumbra_volume_ml",
            "mismatch_volume_ml",
            "mismatch_ratio",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert!(json["mismatch_ratio"].is_null());
        assert!(json.get("labels").is_none());
    }
}
