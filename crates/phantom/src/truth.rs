//! Ground truth: parameter maps, tissue classes, clinical labels and volumes in mL.

use ndarray::Array3;
use penumbra_imaging::{Label, LabelVolume};
use serde::Serialize;

use crate::anatomy::{AnatomyClass, AnatomyMaps};
use crate::hemodynamics::{mtt_s, tmax_s, ParameterMaps};
use crate::lesion::{DesignMasks, Hemisphere};

/// Core threshold on CBF relative to the contralateral median (RAPID-style).
pub const CORE_RELATIVE_CBF: f64 = 0.30;
/// Hypoperfusion threshold on Tmax in seconds.
pub const HYPOPERFUSED_TMAX_S: f64 = 6.0;
/// Blood fraction above which a voxel counts as vessel.
pub const VESSEL_FRACTION: f32 = 0.5;

/// Tissue class of a voxel in the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum TissueClass {
    Background = 0,
    /// Parenchyma outside every lesion design mask.
    Normal = 1,
    /// Parenchyma in the oligemia design shell.
    Oligemia = 2,
    /// Parenchyma in the penumbra design blob, outside the core blob.
    Penumbra = 3,
    /// Parenchyma in the core design blob.
    Core = 4,
    /// Subarachnoid CSF and ventricles.
    Csf = 5,
    /// At least half of the voxel is blood of a large artery or sinus.
    Vessel = 6,
    /// Skull cortex and diploe.
    Bone = 7,
    /// Scalp and falx.
    SoftTissue = 8,
}

/// An input function sampled at the frame times and on the fine grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputFunctions {
    /// Frame times in seconds from the first frame.
    pub frame_times_s: Vec<f64>,
    /// AIF at the frame times, HU above baseline.
    pub aif_hu: Vec<f64>,
    /// VOF at the frame times, HU above baseline.
    pub vof_hu: Vec<f64>,
    pub fine_dt_s: f64,
    pub aif_fine_hu: Vec<f64>,
    pub vof_fine_hu: Vec<f64>,
}

/// Lesion volumes from the labels, in mL.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LesionVolumes {
    pub core_ml: f64,
    pub penumbra_ml: f64,
    /// Volume with true Tmax above 6 s.
    pub hypoperfused_ml: f64,
    /// Hypoperfused minus core volume.
    pub mismatch_ml: f64,
    /// Hypoperfused over core volume; `None` without core.
    pub mismatch_ratio: Option<f64>,
}

/// Ground truth of one study. Maps are `(z, y, x)`; CBF in mL/100 g/min, CBV in mL/100 g, MTT,
/// Tmax, delay and tau in s. Maps are 0 outside parenchyma and in vessel voxels.
#[derive(Debug, Clone)]
pub struct Truth {
    pub cbf: Array3<f32>,
    pub cbv: Array3<f32>,
    pub mtt: Array3<f32>,
    pub tmax: Array3<f32>,
    pub delay: Array3<f32>,
    pub tau: Array3<f32>,
    /// [`TissueClass`] codes.
    pub tissue: Array3<u8>,
    /// 0 background, 1 penumbra, 2 core, from the true maps with the clinical definitions.
    pub labels: LabelVolume,
    /// Design masks (1 inside) before blending: the labels can differ at blended edges.
    pub core_design: Array3<u8>,
    pub penumbra_design: Array3<u8>,
    pub oligemia_design: Array3<u8>,
    pub input_functions: InputFunctions,
    /// Contralateral median CBF (all parenchyma without a lesion), the rCBF reference.
    pub reference_cbf: f64,
    pub volumes: LesionVolumes,
}

/// Builds the truth from the blended parameter maps. `masks` is `None` without a lesion.
pub fn build(
    anatomy: &AnatomyMaps,
    maps: &ParameterMaps,
    masks: Option<&DesignMasks>,
    hemisphere: Option<Hemisphere>,
    input_functions: InputFunctions,
    voxel_ml: f64,
) -> Truth {
    let shape = anatomy.class.raw_dim();
    let tissue = tissue_classes(anatomy, masks);
    let in_domain = |index: (usize, usize, usize)| AnatomyClass::is_parenchyma(anatomy.class[index]) && tissue[index] != TissueClass::Vessel as u8;

    let mut truth = Truth {
        cbf: Array3::zeros(shape),
        cbv: Array3::zeros(shape),
        mtt: Array3::zeros(shape),
        tmax: Array3::zeros(shape),
        delay: Array3::zeros(shape),
        tau: Array3::zeros(shape),
        tissue: Array3::zeros(shape),
        labels: Array3::zeros(shape),
        core_design: masks.map_or_else(|| Array3::zeros(shape), |m| m.core.clone()),
        penumbra_design: masks.map_or_else(|| Array3::zeros(shape), |m| m.penumbra.clone()),
        oligemia_design: masks.map_or_else(|| Array3::zeros(shape), |m| m.oligemia.clone()),
        input_functions,
        reference_cbf: 0.0,
        volumes: LesionVolumes { core_ml: 0.0, penumbra_ml: 0.0, hypoperfused_ml: 0.0, mismatch_ml: 0.0, mismatch_ratio: None },
    };

    for (index, _) in anatomy.class.indexed_iter() {
        if !in_domain(index) {
            continue;
        }
        let (cbf, cbv) = (maps.cbf[index] as f64, maps.cbv[index] as f64);
        let (delay, tau) = (maps.delay_s[index] as f64, maps.tau_s[index] as f64);
        let mtt = mtt_s(cbf, cbv);

        truth.cbf[index] = cbf as f32;
        truth.cbv[index] = cbv as f32;
        truth.mtt[index] = mtt as f32;
        truth.tmax[index] = tmax_s(delay, tau, mtt) as f32;
        truth.delay[index] = delay as f32;
        truth.tau[index] = tau as f32;
    }

    truth.reference_cbf = contralateral_median_cbf(anatomy, &truth.cbf, &tissue, hemisphere);
    truth.tissue = tissue;
    truth.labels = clinical_labels(&truth.cbf, &truth.tmax, truth.reference_cbf);
    truth.volumes = volumes(&truth.labels, &truth.tmax, voxel_ml);
    truth
}

fn tissue_classes(anatomy: &AnatomyMaps, masks: Option<&DesignMasks>) -> Array3<u8> {
    let mut tissue = Array3::zeros(anatomy.class.raw_dim());
    for (index, &class) in anatomy.class.indexed_iter() {
        let blood = anatomy.artery_fraction[index] + anatomy.vein_fraction[index];
        let code = if blood >= VESSEL_FRACTION && class != AnatomyClass::Air as u8 {
            TissueClass::Vessel
        } else if AnatomyClass::is_parenchyma(class) {
            match masks {
                Some(m) if m.core[index] == 1 => TissueClass::Core,
                Some(m) if m.penumbra[index] == 1 => TissueClass::Penumbra,
                Some(m) if m.oligemia[index] == 1 => TissueClass::Oligemia,
                _ => TissueClass::Normal,
            }
        } else if class == AnatomyClass::Csf as u8 || class == AnatomyClass::Ventricle as u8 {
            TissueClass::Csf
        } else if class == AnatomyClass::SkullCortex as u8 || class == AnatomyClass::Diploe as u8 {
            TissueClass::Bone
        } else if class == AnatomyClass::Scalp as u8 || class == AnatomyClass::Falx as u8 {
            TissueClass::SoftTissue
        } else {
            TissueClass::Background
        };
        tissue[index] = code as u8;
    }
    tissue
}

/// Returns the median true CBF of non-vessel parenchyma in the hemisphere opposite the lesion,
/// or of all parenchyma without a lesion; 0 when there is none.
fn contralateral_median_cbf(anatomy: &AnatomyMaps, cbf: &Array3<f32>, tissue: &Array3<u8>, hemisphere: Option<Hemisphere>) -> f64 {
    let mut values: Vec<f32> = Vec::new();
    for (index, &value) in cbf.indexed_iter() {
        if value <= 0.0 || tissue[index] == TissueClass::Vessel as u8 {
            continue;
        }
        let contralateral = match hemisphere {
            Some(h) => h.sign() * (anatomy.head_mm[index][0] as f64) < 0.0,
            None => true,
        };
        if contralateral {
            values.push(value);
        }
    }
    median(&mut values)
}

/// Returns the median (mean of the two middle values for an even count), 0 for no values.
pub fn median(values: &mut [f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2] as f64
    } else {
        (values[n / 2 - 1] as f64 + values[n / 2] as f64) / 2.0
    }
}

/// Labels voxels with CBF > 0: core where CBF / reference < 0.30, penumbra where Tmax > 6 s and
/// not core.
pub fn clinical_labels(cbf: &Array3<f32>, tmax: &Array3<f32>, reference_cbf: f64) -> LabelVolume {
    let mut labels = Array3::zeros(cbf.raw_dim());
    if reference_cbf <= 0.0 {
        return labels;
    }
    for (index, &flow) in cbf.indexed_iter() {
        if flow <= 0.0 {
            continue;
        }
        labels[index] = if (flow as f64) / reference_cbf < CORE_RELATIVE_CBF {
            Label::Core as u8
        } else if tmax[index] as f64 > HYPOPERFUSED_TMAX_S {
            Label::Penumbra as u8
        } else {
            Label::Background as u8
        };
    }
    labels
}

/// Counts the labelled voxels and converts them to mL.
pub fn volumes(labels: &LabelVolume, tmax: &Array3<f32>, voxel_ml: f64) -> LesionVolumes {
    let core = penumbra_imaging::labels::count(labels, Label::Core) as f64 * voxel_ml;
    let penumbra = penumbra_imaging::labels::count(labels, Label::Penumbra) as f64 * voxel_ml;
    let hypoperfused = tmax.iter().filter(|&&t| t as f64 > HYPOPERFUSED_TMAX_S).count() as f64 * voxel_ml;
    LesionVolumes {
        core_ml: core,
        penumbra_ml: penumbra,
        hypoperfused_ml: hypoperfused,
        mismatch_ml: hypoperfused - core,
        mismatch_ratio: if core > 0.0 { Some(hypoperfused / core) } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_definitions() {
        let cbf = Array3::from_shape_vec([1, 1, 5], vec![0.0, 10.0, 14.0, 20.0, 20.0]).unwrap();
        let tmax = Array3::from_shape_vec([1, 1, 5], vec![0.0, 3.0, 9.0, 6.5, 6.0]).unwrap();
        // Reference 40: ratios 0.25, 0.35, 0.5, 0.5.
        let labels = clinical_labels(&cbf, &tmax, 40.0);
        assert_eq!(labels.as_slice().unwrap(), &[0, 2, 1, 1, 0]);

        let v = volumes(&labels, &tmax, 0.5);
        assert_eq!(v.core_ml, 0.5);
        assert_eq!(v.penumbra_ml, 1.0);
        // Tmax > 6 s in two voxels; the core voxel itself has a short Tmax.
        assert_eq!(v.hypoperfused_ml, 1.0);
        assert_eq!(v.mismatch_ml, 0.5);
        assert_eq!(v.mismatch_ratio, Some(2.0));
    }

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
