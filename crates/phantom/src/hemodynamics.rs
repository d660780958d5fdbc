//! Normal haemodynamic parameters and the tissue concentration model
//! `C_t = (rho / k_H) (CBF / 6000) [C_a(t - delay) conv h_tau conv R](t)` with an exponential
//! residue `R = exp(-t / MTT)` and an exponential dispersion kernel `h = exp(-t / tau) / tau`.

use ndarray::Array3;
use rand::Rng;

use crate::anatomy::{AnatomyClass, AnatomyMaps, SmoothField};
use crate::input_function::Curve;

/// Brain tissue density in g/mL, the value the estimator uses.
pub const RHO: f64 = 1.04;
/// Large- to small-vessel haematocrit correction (1 - 0.45) / (1 - 0.25), rounded as the
/// estimator rounds it.
pub const K_H: f64 = 0.73;

/// Parameter maps of every voxel: CBF in mL/100 g/min, CBV in mL/100 g, delay and tau in s.
/// Non-parenchyma voxels are 0.
#[derive(Debug, Clone)]
pub struct ParameterMaps {
    pub cbf: Array3<f32>,
    pub cbv: Array3<f32>,
    pub delay_s: Array3<f32>,
    pub tau_s: Array3<f32>,
}

/// Fraction of cortical grey-matter voxels made vessel-rich (CBV 6 to 10 mL/100 g).
const VESSEL_RICH_FRACTION: f64 = 0.015;

/// Draws the normal-tissue maps with spatially smooth spread. GM has CBF N(60, 8) clipped to
/// 45..80 and CBV N(4.0, 0.4). WM has CBF N(25, 3) and CBV N(2.0, 0.25). Deep GM has CBF 55 and
/// CBV 3.8. Delays are 0 to 0.5 s anteriorly and 0.5 to 0.7 s in the posterior circulation.
pub fn normal_maps(anatomy: &AnatomyMaps, rng: &mut impl Rng) -> ParameterMaps {
    let flow_field = SmoothField::new(rng, 8);
    let volume_field = SmoothField::new(rng, 8);
    let delay_field = SmoothField::new(rng, 6);

    let shape = anatomy.class.raw_dim();
    let mut maps = ParameterMaps {
        cbf: Array3::zeros(shape),
        cbv: Array3::zeros(shape),
        delay_s: Array3::zeros(shape),
        tau_s: Array3::zeros(shape),
    };

    for ((index, &class), head) in anatomy.class.indexed_iter().zip(anatomy.head_mm.iter()) {
        if !AnatomyClass::is_parenchyma(class) {
            continue;
        }
        let p = [head[0] as f64, head[1] as f64, head[2] as f64];
        let flow = flow_field.at(p);
        let volume = volume_field.at(p);

        let (cbf, mut cbv) = if class == AnatomyClass::GreyMatter as u8 {
            ((60.0 + 8.0 * flow).clamp(45.0, 80.0), (4.0 + 0.4 * volume).clamp(3.0, 5.0))
        } else if class == AnatomyClass::WhiteMatter as u8 {
            ((25.0 + 3.0 * flow).clamp(18.0, 32.0), (2.0 + 0.25 * volume).clamp(1.4, 2.6))
        } else {
            (55.0 + 3.0 * flow, 3.8 + 0.2 * volume)
        };

        // Cortical voxels with many small vessels: the estimator must exclude them.
        if class == AnatomyClass::GreyMatter as u8 && rng.random::<f64>() < VESSEL_RICH_FRACTION {
            cbv = rng.random_range(6.0..10.0);
        }

        let anterior_delay = (0.25 + 0.12 * delay_field.at(p)).clamp(0.0, 0.5);
        let delay = if p[1] > 45.0 { 0.5 + 0.4 * anterior_delay } else { anterior_delay };

        maps.cbf[index] = cbf as f32;
        maps.cbv[index] = cbv as f32;
        maps.delay_s[index] = delay as f32;
    }
    maps
}

/// Returns MTT = 60 CBV / CBF in seconds, 0 where CBF is 0.
pub fn mtt_s(cbf: f64, cbv: f64) -> f64 {
    if cbf > 0.0 {
        60.0 * cbv / cbf
    } else {
        0.0
    }
}

/// Returns the true Tmax in seconds: the time of the maximum of
/// `delta(t - delay) conv h_tau conv R`. For tau > 0 that maximum is at
/// `ln(MTT / tau) tau MTT / (MTT - tau)` after the delay (at `tau` when MTT = tau).
pub fn tmax_s(delay_s: f64, tau_s: f64, mtt_s: f64) -> f64 {
    if tau_s <= 1e-9 || mtt_s <= 1e-9 {
        return delay_s;
    }
    let peak = if (mtt_s - tau_s).abs() < 1e-9 {
        tau_s
    } else {
        (mtt_s / tau_s).ln() * tau_s * mtt_s / (mtt_s - tau_s)
    };
    delay_s + peak
}

/// Coefficients of the exact update of `y = x conv exp(-t / T)` for a piecewise-linear input
/// sampled every `h`: `y[n+1] = e y[n] + c0 x[n] + c1 x[n+1]`.
#[derive(Debug, Clone, Copy)]
struct ExpFilter {
    e: f64,
    c0: f64,
    c1: f64,
}

impl ExpFilter {
    fn new(time_constant_s: f64, h: f64) -> ExpFilter {
        let t = time_constant_s;
        let e = (-h / t).exp();
        let c1 = t * (1.0 - e) - t * t * (1.0 - e) / h + t * e;
        let c0 = t * t * (1.0 - e) / h - t * e;
        ExpFilter { e, c0, c1 }
    }

    /// Filters `signal` in place.
    fn apply(&self, signal: &mut [f64]) {
        let mut previous_in = 0.0;
        let mut previous_out = 0.0;
        for value in signal.iter_mut() {
            let input = *value;
            let output = self.e * previous_out + self.c0 * previous_in + self.c1 * input;
            previous_in = input;
            previous_out = output;
            *value = output;
        }
    }
}

/// Computes one voxel's tissue enhancement (HU above baseline) on the AIF's fine grid, into
/// `buffer`, which is resized to the AIF length.
pub fn tissue_curve(aif: &Curve, cbf: f64, cbv: f64, delay_s: f64, tau_s: f64, buffer: &mut Vec<f64>) {
    let n = aif.values.len();
    buffer.clear();
    buffer.resize(n, 0.0);
    if cbf <= 0.0 || cbv <= 0.0 {
        return;
    }

    // Delay by linear interpolation of the AIF: sample i takes the AIF at i - shift, with
    // shift = whole + fraction grid steps.
    let shift = delay_s.max(0.0) / aif.dt_s;
    let whole = shift.floor() as usize;
    let fraction = shift - whole as f64;
    for (j, value) in buffer.iter_mut().skip(whole).enumerate() {
        let previous = if j > 0 { aif.values[j - 1] } else { 0.0 };
        *value = (1.0 - fraction) * aif.values[j] + fraction * previous;
    }

    if tau_s > 1e-6 {
        let dispersion = ExpFilter::new(tau_s, aif.dt_s);
        dispersion.apply(buffer);
        for value in buffer.iter_mut() {
            *value /= tau_s;
        }
    }

    let residue = ExpFilter::new(mtt_s(cbf, cbv), aif.dt_s);
    residue.apply(buffer);

    let scale = RHO / K_H * cbf / 6000.0;
    for value in buffer.iter_mut() {
        *value *= scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp_aif() -> Curve {
        // A triangle bolus from 5 s to 15 s peaking at 100 HU at 10 s; area 500 HU s.
        let values = (0..=900)
            .map(|i| {
                let t = i as f64 * 0.1;
                if !(5.0..=15.0).contains(&t) {
                    0.0
                } else {
                    100.0 - 20.0 * (t - 10.0).abs()
                }
            })
            .collect();
        Curve { dt_s: 0.1, values }
    }

    #[test]
    fn tissue_area_matches_cbv() {
        // Area ratio C_t / C_a = (rho / k_H) CBV / 100: the central volume theorem.
        let aif = ramp_aif();
        let mut curve = Vec::new();
        tissue_curve(&aif, 60.0, 4.0, 1.0, 1.5, &mut curve);
        let area: f64 = curve.iter().sum::<f64>() * 0.1;
        let expected = RHO / K_H * 4.0 / 100.0 * 500.0;
        assert!((area / expected - 1.0).abs() < 0.002, "{area} vs {expected}");
    }

    #[test]
    fn exp_filter_exact_on_step() {
        // Input: 0 at t = 0, a linear ramp to 1 at t = 0.1 s, then 1. Time constant 2 s.
        let filter = ExpFilter::new(2.0, 0.1);
        let mut signal = vec![1.0; 400];
        signal[0] = 0.0;
        filter.apply(&mut signal);
        // Long after the ramp the output settles at the kernel area, 2 s.
        assert!((signal[399] - 2.0).abs() < 1e-6, "{}", signal[399]);
        // At t = 2 s: the ramp part integrated numerically plus the step part in closed form.
        let ramp: f64 = (0..10000)
            .map(|k| {
                let s = (k as f64 + 0.5) * 1e-5;
                s / 0.1 * (-(2.0 - s) / 2.0).exp() * 1e-5
            })
            .sum();
        let exact = ramp + 2.0 * (1.0 - (-(2.0 - 0.1) / 2.0_f64).exp());
        assert!((signal[20] - exact).abs() < 1e-6, "{} vs {exact}", signal[20]);
    }

    #[test]
    fn tmax_without_dispersion_is_delay() {
        assert_eq!(tmax_s(0.4, 0.0, 4.0), 0.4);
    }

    #[test]
    fn tmax_matches_fine_grid_argmax() {
        // Penumbra-like voxel: delay 6 s, tau 1.5 s, MTT 9 s.
        let (delay, tau, mtt) = (6.0, 1.5, 9.0);
        let mut best = (0.0, f64::MIN);
        for i in 0..4000 {
            let t = i as f64 * 0.005;
            let value = ((-t / mtt).exp() - (-t / tau).exp()) / (mtt - tau);
            if value > best.1 {
                best = (t, value);
            }
        }
        assert!((tmax_s(delay, tau, mtt) - (delay + best.0)).abs() < 0.01);
        assert!((tmax_s(delay, 2.0, 2.0) - 8.0).abs() < 1e-12);
    }
}
