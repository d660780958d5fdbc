//! Perfusion maps from a CTP series ([`compute_maps`]) or from a scanner ([`maps_from_vendor`]).
//!
//! CBF = (k_H / rho) * max k * 6000 (mL/100 g/min, k in 1/s); CBV = (k_H / rho) * 100 *
//! area(tissue) / area(AIF) (mL/100 g, the frame interval cancels in the ratio); MTT = 60 *
//! CBV / CBF (s); Tmax = argmax k, refined between samples, less the delay the regularisation
//! adds by itself (s, relative to the AIF, clamped to 0).

use std::time::Instant;

use ndarray::{Array3, Axis};
use rayon::prelude::*;
use tracing::{debug, info, warn};

use penumbra_imaging::{Geometry, Volume};

use crate::aif::{curve_from_values, select_input_curves, Curve};
use crate::baseline::{detect_baseline, BaselineWindow};
use crate::concentration::{self, Series};
use crate::deconvolution::Deconvolver;
use crate::denoise;
use crate::error::PerfusionError;
use crate::masks;
use crate::motion;
use crate::params::{MaskParams, PerfusionParams};
use crate::quality::{self, InputQuality};

/// Minimum frames of a series: a baseline, the bolus and some wash-out.
pub const MIN_FRAMES: usize = 8;

/// Voxels deconvolved per matrix product.
const BLOCK_VOXELS: usize = 2048;

/// AUC(VOF)/AUC(AIF) outside this range adds a warning: an arterial curve larger than the
/// venous one, or partial volume that halves the arterial area.
const MIN_PLAUSIBLE_PVE_SCALE: f64 = 0.9;
const MAX_PLAUSIBLE_PVE_SCALE: f64 = 2.0;

/// CBF (mL/100 g/min) below which MTT is undefined and set to 0.
const MIN_CBF_FOR_MTT: f32 = 1e-3;
/// Mean transit time of the noise-free reference curve that measures the Tmax offset, in s:
/// normal grey matter (CBV 4 mL/100 g at CBF 60 mL/100 g/min).
const OFFSET_REFERENCE_MTT_S: f64 = 4.0;
/// True MTTs in s of the noise-free curves that measure how much CBF the deconvolution
/// recovers: from fast flow to the long transit of ischemic core.
const RECOVERY_MTTS_S: [f64; 16] = [
    1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0, 24.0,
];

/// Perfusion maps on the input grid, `(z, y, x)`; voxels outside `brain_mask` are 0.
#[derive(Debug, Clone)]
pub struct PerfusionMaps {
    /// Cerebral blood flow, mL/100 g/min.
    pub cbf: Array3<f32>,
    /// Cerebral blood volume, mL/100 g.
    pub cbv: Array3<f32>,
    /// Mean transit time, s.
    pub mtt: Array3<f32>,
    /// Time to maximum of the residue function, s.
    pub tmax: Array3<f32>,
    /// Brain parenchyma: intracranial, not CSF, finite in every frame.
    pub brain_mask: Array3<bool>,
    /// How much of the true CBF the deconvolution recovers at each measured MTT: pairs
    /// `(MTT s, fraction)` sorted by MTT, from
    /// [`crate::deconvolution::Deconvolver::cbf_recovery`]. Empty for a scanner's maps and
    /// when the correction is off; relative CBF then uses the CBF as it is.
    pub cbf_recovery: Vec<(f64, f64)>,
    /// Brain voxels that are vessels (by peak enhancement or CBV); excluded from thresholds.
    pub vessel_mask: Array3<bool>,
    pub geometry: Geometry,
}

/// Maps with the input quality report and the curves they were computed from.
#[derive(Debug, Clone)]
pub struct PerfusionResult {
    pub maps: PerfusionMaps,
    pub quality: InputQuality,
    /// The AIF as used for deconvolution, partial-volume scaling included.
    pub aif: Curve,
    pub vof: Option<Curve>,
}

/// Computes CBF, CBV, MTT and Tmax maps from a CTP series in HU.
///
/// The series is `(t, z, y, x)` with one acquisition time per frame; irregular sampling is
/// resampled onto a uniform grid. Non-finite voxels leave the brain mask.
pub fn compute_maps(
    ctp: &Volume,
    params: &PerfusionParams,
) -> Result<PerfusionResult, PerfusionError> {
    params.validate()?;
    check_shape(ctp)?;
    let started = Instant::now();
    let lap = |step: &str| {
        debug!(
            step,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "perfusion step done"
        )
    };
    let (dt_s, resampled) = concentration::uniform_step(&ctp.frame_times_s)?;
    let mut series = concentration::build_series(&ctp.voxels, &ctp.frame_times_s, dt_s, resampled);
    let mut warnings = Vec::new();
    if resampled {
        warnings.push(format!(
            "irregular frame times were resampled to a uniform {dt_s:.2} s grid"
        ));
    }

    lap("series");
    let motion = correct_motion(&mut series, ctp.geometry.spacing_mm, params.motion_correction);
    lap("motion");
    let finite = finite_mask(&series);
    let mean_hu = temporal_mean(&series, &finite);
    let window = find_baseline(&series, &mean_hu, params)?;
    let baseline = concentration::baseline_image(&series, &window);
    let intracranial = masks::intracranial_mask(&baseline, &params.masks) & &finite;
    // The CSF cut uses the temporal mean, not the baseline image that is subtracted below.
    // Cutting on the same noisy baseline keeps the voxels near CSF whose baseline noise is
    // positive, so their enhancement, spread by spatial smoothing, starts below zero: at
    // 20 mAs that took the median CBV of the cortical core to 0.
    let brain = masks::brain_mask(&intracranial, &mean_hu, &finite, &params.masks);
    let brain_flat = flat(&brain);
    if !brain_flat.iter().any(|&b| b) {
        let MaskParams {
            tissue_min_hu: min_hu,
            tissue_max_hu: max_hu,
            ..
        } = params.masks;
        return Err(PerfusionError::NoBrain { min_hu, max_hu });
    }

    lap("masks");
    let noise_sd_hu = concentration::baseline_noise_sd(&series, &window, &brain_flat);
    concentration::subtract_baseline(&mut series, &baseline);
    sanitize(&mut series, &finite);
    lap("concentration");

    let input_region = flat(&masks::away_from_bone(
        &intracranial,
        &baseline,
        params.masks.bone_min_hu,
        params.aif.bone_margin_mm,
        [ctp.geometry.spacing_mm[1], ctp.geometry.spacing_mm[2]],
    ));
    let inputs = select_input_curves(&series, &input_region, &params.aif)?;
    let (aif, scale, scale_applied) =
        scale_for_partial_volume(inputs.aif, inputs.vof.as_ref(), params, &mut warnings);
    let tissue_truncation_curve = series.mean_curve(&brain_flat);

    lap("input functions");
    let early_vessels = early_vessel_mask(&series, &brain_flat, params.masks.vessel_peak_hu);
    let weights: Vec<bool> = brain_flat
        .iter()
        .zip(&early_vessels)
        .map(|(&b, &v)| b && !v)
        .collect();
    let spacing = ctp.geometry.spacing_mm;
    let smoothing_sigma_mm = params.denoise.spatial_sigma_for(noise_sd_hu);
    denoise::smooth_in_plane(&mut series, &weights, smoothing_sigma_mm, [spacing[1], spacing[2]]);

    lap("spatial smoothing");
    let temporal = denoise::temporal_matrix(series.frames, params.denoise.temporal_sigma_frames);
    let deconvolver = Deconvolver::new(
        &aif.values_hu,
        dt_s,
        params.method,
        params.bsvd_lambda,
        params.osvd_oscillation_index,
        &temporal,
    )?;
    let tmax_offset_s = if params.tmax_offset_correction {
        deconvolver
            .intrinsic_tmax_offset_s(&aif.values_hu, OFFSET_REFERENCE_MTT_S)
            .max(0.0)
    } else {
        0.0
    };
    let recovery = if params.cbf_recovery_correction {
        deconvolver.cbf_recovery(&aif.values_hu, &RECOVERY_MTTS_S)
    } else {
        Vec::new()
    };
    debug!(tmax_offset_s, ?recovery, "Tmax offset and CBF recovery of the deconvolution");
    let mut maps = deconvolve_all(
        &series,
        &brain_flat,
        &deconvolver,
        params,
        tmax_offset_s,
        ctp.geometry.clone(),
    );
    maps.cbf_recovery = recovery;
    maps.vessel_mask = vessel_mask(&maps, &early_vessels, params.masks.vessel_cbv_ml_100g);
    lap("deconvolution");

    let truncation_curve = inputs
        .vof
        .as_ref()
        .map_or(tissue_truncation_curve, |v| v.values_hu.clone());
    let quality = assess_quality(QualityInputs {
        aif: &aif,
        window: &window,
        noise_sd_hu,
        motion,
        smoothing_sigma_mm,
        dt_s,
        tmax_offset_s,
        resampled,
        scale,
        scale_applied,
        truncation_curve: &truncation_curve,
        brain_voxels: brain_flat.iter().filter(|&&b| b).count(),
        geometry: &ctp.geometry,
        min_baseline_frames: params.baseline.min_frames,
        warnings,
    });
    info!(
        method = ?params.method,
        brain_ml = quality.brain_volume_ml,
        aif_peak_hu = quality.aif_peak_hu,
        warnings = quality.warnings.len(),
        "perfusion maps computed"
    );
    Ok(PerfusionResult {
        maps,
        quality,
        aif,
        vof: inputs.vof,
    })
}

fn check_shape(ctp: &Volume) -> Result<(), PerfusionError> {
    let shape = ctp.voxels.shape().to_vec();
    if shape.contains(&0) {
        return Err(PerfusionError::EmptyVolume { shape });
    }
    if ctp.frame_times_s.len() != shape[0] {
        return Err(PerfusionError::FrameTimesMismatch {
            frames: shape[0],
            times: ctp.frame_times_s.len(),
        });
    }
    if shape[0] < MIN_FRAMES {
        return Err(PerfusionError::TooFewFrames {
            frames: shape[0],
            min: MIN_FRAMES,
        });
    }
    if shape[0] > concentration::MAX_ANALYSIS_FRAMES {
        return Err(PerfusionError::TooManyFrames {
            frames: shape[0],
            max: concentration::MAX_ANALYSIS_FRAMES,
        });
    }
    let spacing_mm = ctp.geometry.spacing_mm;
    if !spacing_mm.iter().all(|s| s.is_finite() && *s > 0.0) {
        return Err(PerfusionError::InvalidSpacing { spacing_mm });
    }
    Ok(())
}

/// Returns, per voxel, whether every frame contains a finite value.
fn finite_mask(series: &Series) -> Array3<bool> {
    let mut finite = vec![true; series.voxels()];
    for t in 0..series.frames {
        for (ok, value) in finite.iter_mut().zip(series.frame(t)) {
            *ok &= value.is_finite();
        }
    }
    Array3::from_shape_vec(series.shape, finite).expect("length is the product of the shape")
}

/// Sets non-finite voxels to 0 in every frame, so no NaN reaches the matrix products.
fn sanitize(series: &mut Series, finite: &Array3<bool>) {
    let n = series.voxels();
    let finite = finite.as_slice().expect("standard layout");
    series.data.par_chunks_mut(n).for_each(|frame| {
        for (value, &ok) in frame.iter_mut().zip(finite) {
            if !ok {
                *value = 0.0;
            }
        }
    });
}

fn flat(mask: &Array3<bool>) -> Vec<bool> {
    mask.iter().copied().collect()
}

/// Detects the baseline on the mean curve of finite voxels whose mean HU over all frames is in
/// the tissue window, which includes most partial-volume arteries and so reacts to the earliest
/// enhancement.
///
/// The selection uses the temporal mean, not frame 0. Selecting on one noisy frame keeps the
/// voxels whose noise in that frame happened to fall inside the window. That biases this frame
/// of the mean curve by about 1 HU at 20 mAs. The arrival threshold is 10 % of a tissue
/// enhancement of a few HU, so the bias moved the arrival late enough to put arterial frames
/// into the baseline.
fn find_baseline(
    series: &Series,
    mean_hu: &Array3<f32>,
    params: &PerfusionParams,
) -> Result<BaselineWindow, PerfusionError> {
    let select: Vec<bool> = mean_hu
        .iter()
        .map(|&hu| hu >= params.masks.tissue_min_hu && hu <= params.masks.tissue_max_hu)
        .collect();
    let curve = series.mean_curve(&select);
    let window = detect_baseline(&curve, &params.baseline).ok_or(PerfusionError::NoBolus)?;
    debug!(
        start = window.start,
        end = window.end,
        arrival = window.arrival,
        "baseline frames"
    );
    Ok(window)
}

/// Returns each voxel's mean HU over all frames; voxels with a non-finite sample get NaN, which
/// every HU window rejects.
fn temporal_mean(series: &Series, finite: &Array3<bool>) -> Array3<f32> {
    let mut mean_hu = vec![0.0f32; series.voxels()];
    for t in 0..series.frames {
        for (sum, &value) in mean_hu.iter_mut().zip(series.frame(t)) {
            *sum += value;
        }
    }
    let frames = series.frames as f32;
    for (value, &ok) in mean_hu.iter_mut().zip(finite.iter()) {
        *value = if ok { *value / frames } else { f32::NAN };
    }
    Array3::from_shape_vec(series.shape, mean_hu).expect("length is the product of the shape")
}

/// Applies AUC(VOF)/AUC(AIF) to the AIF when enabled and when the factor lies in
/// `1..=max_partial_volume_scale`; an AIF larger than the VOF is never scaled down.
fn scale_for_partial_volume(
    aif: Curve,
    vof: Option<&Curve>,
    params: &PerfusionParams,
    warnings: &mut Vec<String>,
) -> (Curve, Option<f64>, bool) {
    let Some(vof) = vof else {
        warnings.push(
            "no venous output function found; the AIF is not corrected for partial volume"
                .to_string(),
        );
        return (aif, None, false);
    };
    let scale = vof.auc_hu_s / aif.auc_hu_s;
    if !scale.is_finite() {
        return (aif, None, false);
    }
    // Sampling noise moves a true ratio of 1 by a few percent, so only clear departures warn.
    if !(MIN_PLAUSIBLE_PVE_SCALE..=MAX_PLAUSIBLE_PVE_SCALE).contains(&scale) {
        warnings.push(format!(
            "partial-volume scale AUC(VOF)/AUC(AIF) is {scale:.2}, outside {MIN_PLAUSIBLE_PVE_SCALE}..{MAX_PLAUSIBLE_PVE_SCALE}; check the AIF and VOF locations"
        ));
    }
    let apply = params.aif.partial_volume_correction
        && scale >= 1.0
        && scale <= params.aif.max_partial_volume_scale;
    if !apply {
        return (aif, Some(scale), false);
    }
    let values = aif.values_hu.iter().map(|v| v * scale).collect();
    let dt_s = aif.times_s.get(1).copied().unwrap_or(1.0);
    (
        curve_from_values(dt_s, values, aif.voxels),
        Some(scale),
        true,
    )
}

/// Returns brain voxels whose peak enhancement exceeds `peak_hu`: vessels, kept out of spatial
/// smoothing so they do not bleed into tissue.
fn early_vessel_mask(series: &Series, brain: &[bool], peak_hu: f32) -> Vec<bool> {
    let mut peak = vec![f32::NEG_INFINITY; series.voxels()];
    for t in 0..series.frames {
        for (p, &value) in peak.iter_mut().zip(series.frame(t)) {
            *p = p.max(value);
        }
    }
    peak.iter()
        .zip(brain)
        .map(|(&p, &b)| b && p > peak_hu)
        .collect()
}

/// Deconvolves every brain voxel, in parallel blocks. Tmax is the refined residue maximum less
/// `tmax_offset_s`, clamped at 0.
fn deconvolve_all(
    series: &Series,
    brain: &[bool],
    deconvolver: &Deconvolver,
    params: &PerfusionParams,
    tmax_offset_s: f64,
    geometry: Geometry,
) -> PerfusionMaps {
    let n = series.voxels();
    let frames = series.frames;
    let indices: Vec<usize> = (0..n).filter(|&v| brain[v]).collect();
    let ratio = params.hematocrit_factor / params.brain_density_g_per_ml;

    let results: Vec<(f32, f32, f32)> = indices
        .par_chunks(BLOCK_VOXELS)
        .flat_map_iter(|chunk| {
            let count = chunk.len();
            let mut block = vec![0.0f32; frames * count];
            for t in 0..frames {
                let frame = series.frame(t);
                for (j, &v) in chunk.iter().enumerate() {
                    block[t * count + j] = frame[v];
                }
            }
            deconvolver
                .deconvolve_block(&block, count)
                .into_iter()
                .map(|r| {
                    let cbf = (ratio * r.max_k as f64 * 6000.0) as f32;
                    let cbv =
                        ((ratio * 100.0 * r.area as f64 / deconvolver.aif_area()).max(0.0)) as f32;
                    let tmax = deconvolver.peak_time_s(r.peak as f64) - tmax_offset_s;
                    (cbf, cbv, tmax.max(0.0) as f32)
                })
        })
        .collect();

    let mut cbf = vec![0.0f32; n];
    let mut cbv = vec![0.0f32; n];
    let mut mtt = vec![0.0f32; n];
    let mut tmax = vec![0.0f32; n];
    for (&v, &(f, b, t)) in indices.iter().zip(&results) {
        cbf[v] = f;
        cbv[v] = b;
        tmax[v] = t;
        mtt[v] = if f > MIN_CBF_FOR_MTT {
            60.0 * b / f
        } else {
            0.0
        };
    }

    let shape = series.shape;
    let make = |values: Vec<f32>| {
        Array3::from_shape_vec(shape, values).expect("length is the product of the shape")
    };
    PerfusionMaps {
        cbf: make(cbf),
        cbv: make(cbv),
        mtt: make(mtt),
        tmax: make(tmax),
        brain_mask: Array3::from_shape_vec(shape, brain.to_vec())
            .expect("length is the product of the shape"),
        vessel_mask: Array3::from_elem(shape, false),
        cbf_recovery: Vec::new(),
        geometry,
    }
}

/// Returns brain voxels that enhanced like vessels or whose CBV is above `cbv_limit`.
fn vessel_mask(maps: &PerfusionMaps, early_vessels: &[bool], cbv_limit: f32) -> Array3<bool> {
    let early = Array3::from_shape_vec(maps.cbv.dim(), early_vessels.to_vec()).expect("same shape");
    ndarray::Zip::from(&maps.cbv)
        .and(&maps.brain_mask)
        .and(&early)
        .map_collect(|&cbv, &brain, &vessel| brain && (vessel || cbv > cbv_limit))
}

/// Head motion as found, and what is left of it after correction.
struct MotionFigures {
    detected_mm: f64,
    max_yaw_deg: f64,
    corrected_frames: usize,
    /// Equal to `detected_mm` when nothing was corrected.
    residual_mm: f64,
}

/// Measures in-plane head motion and, when `enabled`, resamples the moved frames onto the first
/// frame's grid and measures again what is left.
fn correct_motion(series: &mut Series, spacing_mm: [f64; 3], enabled: bool) -> MotionFigures {
    let estimate = motion::estimate(series, spacing_mm);
    let detected_mm = estimate.max_displacement_mm();
    let corrected_frames = if enabled {
        motion::correct(series, &estimate, spacing_mm)
    } else {
        0
    };
    let residual_mm = if corrected_frames > 0 {
        motion::estimate_motion_mm(series, spacing_mm)
    } else {
        detected_mm
    };
    debug!(detected_mm, corrected_frames, residual_mm, "head motion");
    MotionFigures {
        detected_mm,
        max_yaw_deg: estimate.max_yaw_deg(),
        corrected_frames,
        residual_mm,
    }
}

struct QualityInputs<'a> {
    aif: &'a Curve,
    window: &'a BaselineWindow,
    noise_sd_hu: Option<f64>,
    motion: MotionFigures,
    smoothing_sigma_mm: f64,
    dt_s: f64,
    tmax_offset_s: f64,
    resampled: bool,
    scale: Option<f64>,
    scale_applied: bool,
    truncation_curve: &'a [f64],
    brain_voxels: usize,
    geometry: &'a Geometry,
    min_baseline_frames: usize,
    warnings: Vec<String>,
}

fn assess_quality(inputs: QualityInputs) -> InputQuality {
    let mut warnings = inputs.warnings;
    let bolus_truncated = quality::is_truncated(inputs.truncation_curve);
    if bolus_truncated {
        warnings.push("bolus truncated: enhancement has not returned towards baseline by the last frame, so CBV and CBF are underestimated".to_string());
    }
    if inputs.window.len() < inputs.min_baseline_frames {
        warnings.push(format!(
            "only {} baseline frames before bolus arrival, {} recommended; baseline noise is high",
            inputs.window.len(),
            inputs.min_baseline_frames
        ));
    }
    if inputs.aif.peak_hu < quality::LOW_AIF_PEAK_HU {
        warnings.push(format!(
            "AIF peak is {:.0} HU, below {:.0} HU; the maps are noisy",
            inputs.aif.peak_hu,
            quality::LOW_AIF_PEAK_HU
        ));
    }
    if let Some(sd) = inputs
        .noise_sd_hu
        .filter(|&sd| sd > quality::NOISE_WARNING_HU)
    {
        warnings.push(format!(
            "baseline noise is {sd:.1} HU, above {:.0} HU",
            quality::NOISE_WARNING_HU
        ));
    }
    let motion = &inputs.motion;
    if motion.corrected_frames > 0 && motion.detected_mm > quality::MOTION_WARNING_MM {
        let left = if motion.residual_mm > 0.0 {
            format!("{:.1} mm of motion remains", motion.residual_mm)
        } else {
            "no motion is measurable afterwards".to_string()
        };
        warnings.push(format!(
            "head moved up to {:.1} mm between frames (yaw up to {:.1} degrees); {} frames were registered to the first in-plane, and {left}",
            motion.detected_mm, motion.max_yaw_deg, motion.corrected_frames
        ));
    }
    if motion.residual_mm > quality::MOTION_WARNING_MM {
        warnings.push(format!(
            "head moved {:.1} mm between frames, above {:.0} mm; maps may be blurred",
            motion.residual_mm,
            quality::MOTION_WARNING_MM
        ));
    }
    for message in &warnings {
        warn!(%message, "perfusion input quality");
    }

    InputQuality {
        bolus_truncated,
        aif_peak_hu: inputs.aif.peak_hu,
        aif_time_to_peak_s: inputs.aif.time_to_peak_s,
        aif_width_s: inputs.aif.fwhm_s,
        baseline_frames: inputs.window.len(),
        noise_sd_hu: inputs.noise_sd_hu,
        smoothing_sigma_mm: inputs.smoothing_sigma_mm,
        motion_mm: motion.detected_mm,
        motion_corrected_frames: motion.corrected_frames,
        residual_motion_mm: (motion.corrected_frames > 0).then_some(motion.residual_mm),
        frame_interval_s: inputs.dt_s,
        tmax_offset_s: inputs.tmax_offset_s,
        resampled: inputs.resampled,
        partial_volume_scale: inputs.scale,
        partial_volume_scale_applied: inputs.scale_applied,
        brain_volume_ml: inputs.brain_voxels as f64 * inputs.geometry.voxel_volume_ml(),
        warnings,
    }
}

/// Builds [`PerfusionMaps`] from a scanner's single-frame maps, taken as they are (units as
/// above). A missing MTT is derived as 60 * CBV / CBF.
///
/// The brain mask is every voxel where all maps are finite and CBF, CBV or Tmax is positive;
/// non-finite values become 0. Vessels are voxels with CBV above the default vessel limit.
pub fn maps_from_vendor(
    cbf: &Volume,
    cbv: &Volume,
    mtt: Option<&Volume>,
    tmax: &Volume,
) -> Result<PerfusionMaps, PerfusionError> {
    let expected = cbf.spatial_shape();
    let cbf_map = static_map("cbf", cbf, expected)?;
    let cbv_map = static_map("cbv", cbv, expected)?;
    let tmax_map = static_map("tmax", tmax, expected)?;
    let mtt_map = match mtt {
        Some(volume) => Some(static_map("mtt", volume, expected)?),
        None => None,
    };

    let mut brain_mask = Array3::from_elem(cbf_map.dim(), false);
    ndarray::Zip::from(&mut brain_mask)
        .and(&cbf_map)
        .and(&cbv_map)
        .and(&tmax_map)
        .for_each(|inside, &f, &v, &t| {
            *inside =
                f.is_finite() && v.is_finite() && t.is_finite() && (f > 0.0 || v > 0.0 || t > 0.0);
        });
    let clean = |map: &Array3<f32>| {
        ndarray::Zip::from(map)
            .and(&brain_mask)
            .map_collect(|&value, &inside| if inside { value } else { 0.0 })
    };

    let cbf_clean = clean(&cbf_map);
    let cbv_clean = clean(&cbv_map);
    let mtt_clean = match mtt_map {
        Some(map) => clean(&map).mapv(|v| if v.is_finite() { v } else { 0.0 }),
        None => ndarray::Zip::from(&cbf_clean)
            .and(&cbv_clean)
            .map_collect(|&f, &v| {
                if f > MIN_CBF_FOR_MTT {
                    60.0 * v / f
                } else {
                    0.0
                }
            }),
    };
    let limit = MaskParams::default().vessel_cbv_ml_100g;
    let vessel_mask = ndarray::Zip::from(&cbv_clean)
        .and(&brain_mask)
        .map_collect(|&v, &inside| inside && v > limit);

    Ok(PerfusionMaps {
        tmax: clean(&tmax_map),
        cbf: cbf_clean,
        cbv: cbv_clean,
        mtt: mtt_clean,
        brain_mask,
        vessel_mask,
        cbf_recovery: Vec::new(),
        geometry: cbf.geometry.clone(),
    })
}

fn static_map(
    name: &'static str,
    volume: &Volume,
    expected: [usize; 3],
) -> Result<Array3<f32>, PerfusionError> {
    if volume.frames() != 1 {
        return Err(PerfusionError::VendorMapNotStatic {
            name,
            frames: volume.frames(),
        });
    }
    let found = volume.spatial_shape();
    if found != expected {
        return Err(PerfusionError::VendorShapeMismatch {
            name,
            found,
            expected,
        });
    }
    Ok(volume.voxels.index_axis(Axis(0), 0).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn geometry() -> Geometry {
        Geometry {
            origin_mm: [0.0; 3],
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            normal: [0.0, 0.0, 1.0],
            spacing_mm: [5.0, 1.0, 1.0],
        }
    }

    fn map(values: Vec<f32>) -> Volume {
        Volume {
            voxels: Array4::from_shape_vec((1, 1, 1, values.len()), values).unwrap(),
            geometry: geometry(),
            frame_times_s: vec![0.0],
        }
    }

    #[test]
    fn vendor_maps_derive_mtt_and_mask() {
        let cbf = map(vec![60.0, 0.0, f32::NAN, 20.0]);
        let cbv = map(vec![4.0, 0.0, 3.0, 10.0]);
        let tmax = map(vec![1.0, 0.0, 2.0, 8.0]);
        let maps = maps_from_vendor(&cbf, &cbv, None, &tmax).unwrap();

        assert_eq!(
            maps.brain_mask.iter().copied().collect::<Vec<_>>(),
            vec![true, false, false, true]
        );
        assert_eq!(maps.mtt[(0, 0, 0)], 4.0);
        assert_eq!(maps.mtt[(0, 0, 3)], 30.0);
        assert_eq!(maps.cbv[(0, 0, 2)], 0.0);
        assert!(maps.vessel_mask[(0, 0, 3)]);
        assert!(!maps.vessel_mask[(0, 0, 0)]);
    }

    #[test]
    fn vendor_maps_reject_mismatched_shapes() {
        let cbf = map(vec![60.0, 50.0]);
        let cbv = map(vec![4.0, 4.0, 4.0]);
        let err = maps_from_vendor(&cbf, &cbv, None, &cbf).unwrap_err();
        assert!(matches!(
            err,
            PerfusionError::VendorShapeMismatch { name: "cbv", .. }
        ));
    }

    #[test]
    fn compute_maps_rejects_bad_frame_times() {
        let voxels = Array4::<f32>::zeros((10, 1, 2, 2));
        let ctp = Volume {
            voxels: voxels.clone(),
            geometry: geometry(),
            frame_times_s: vec![0.0; 9],
        };
        let err = compute_maps(&ctp, &PerfusionParams::default()).unwrap_err();
        assert!(matches!(
            err,
            PerfusionError::FrameTimesMismatch {
                frames: 10,
                times: 9
            }
        ));

        let short = Volume {
            voxels: Array4::zeros((3, 1, 2, 2)),
            geometry: geometry(),
            frame_times_s: vec![0.0, 1.0, 2.0],
        };
        assert!(matches!(
            compute_maps(&short, &PerfusionParams::default()),
            Err(PerfusionError::TooFewFrames { .. })
        ));

        let flat = Volume {
            voxels: Array4::from_elem((10, 1, 2, 2), 30.0),
            geometry: geometry(),
            frame_times_s: (0..10).map(f64::from).collect(),
        };
        assert!(matches!(
            compute_maps(&flat, &PerfusionParams::default()),
            Err(PerfusionError::NoBolus)
        ));

        let mut bad_spacing = flat.clone();
        bad_spacing.geometry.spacing_mm[1] = f64::NAN;
        assert!(matches!(
            compute_maps(&bad_spacing, &PerfusionParams::default()),
            Err(PerfusionError::InvalidSpacing { .. })
        ));

        let nan = Volume {
            voxels: Array4::from_elem((10, 1, 2, 2), f32::NAN),
            ..flat
        };
        assert!(matches!(
            compute_maps(&nan, &PerfusionParams::default()),
            Err(PerfusionError::NoBolus)
        ));
    }
}
