//! Synthetic CTP inputs with known ground truth, shared by the integration tests.
//!
//! Curves follow the indicator-dilution model: tissue ΔHU = (rho / k_H) * (CBF / 6000) *
//! [AIF(t - delay) convolved with R](t), computed on a 0.05 s grid and point-sampled at the
//! frame times, with an exponential residue R(t) = exp(-t / MTT).

#![allow(dead_code)]

use ndarray::Array4;
use penumbra_imaging::{Geometry, Volume};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

pub const RHO: f64 = 1.04;
pub const K_H: f64 = 0.73;
/// Fine simulation step in seconds.
pub const FINE_STEP_S: f64 = 0.05;

/// Gamma-variate AIF in ΔHU: `peak * (s / (alpha beta))^alpha * exp(alpha - s / beta)` with
/// `s = t - t0`, peaking at `t0 + alpha * beta`.
pub fn gamma_aif(t: f64, t0: f64, alpha: f64, beta: f64, peak: f64) -> f64 {
    let s = t - t0;
    if s <= 0.0 {
        return 0.0;
    }
    peak * (s / (alpha * beta)).powf(alpha) * (alpha - s / beta).exp()
}

/// The default AIF: t0 8 s, alpha 3, beta 1.5 s, peak 400 HU.
pub fn default_aif(t: f64) -> f64 {
    gamma_aif(t, 8.0, 3.0, 1.5, 400.0)
}

/// Returns the tissue ΔHU sampled every `dt_s` for `frames` frames.
pub fn tissue_curve(
    aif: &dyn Fn(f64) -> f64,
    cbf: f64,
    mtt_s: f64,
    delay_s: f64,
    dt_s: f64,
    frames: usize,
) -> Vec<f64> {
    let scale = RHO / K_H * cbf / 6000.0;
    let decay = (-FINE_STEP_S / mtt_s).exp();
    let end = (frames - 1) as f64 * dt_s;
    let steps = (end / FINE_STEP_S).round() as usize;
    let per_frame = (dt_s / FINE_STEP_S).round() as usize;

    let mut sampled = Vec::with_capacity(frames);
    let mut running = 0.0;
    for i in 0..=steps {
        let t = i as f64 * FINE_STEP_S;
        running = running * decay + aif(t - delay_s) * FINE_STEP_S;
        if i % per_frame == 0 {
            sampled.push(scale * running);
        }
    }
    sampled.truncate(frames);
    sampled
}

/// Returns the VOF: the AIF convolved with a unit-area gamma transit kernel (shape 4, mean
/// `mean_s`), sampled every `dt_s`.
pub fn vof_curve(aif: &dyn Fn(f64) -> f64, mean_s: f64, dt_s: f64, frames: usize) -> Vec<f64> {
    let shape = 4.0;
    let scale = mean_s / shape;
    let kernel = |t: f64| {
        if t <= 0.0 {
            0.0
        } else {
            t.powf(shape - 1.0) * (-t / scale).exp() / (6.0 * scale.powf(shape))
        }
    };
    (0..frames)
        .map(|f| {
            let t = f as f64 * dt_s;
            let steps = (t / FINE_STEP_S).round() as usize;
            (0..=steps)
                .map(|i| {
                    let tau = i as f64 * FINE_STEP_S;
                    aif(tau) * kernel(t - tau) * FINE_STEP_S
                })
                .sum()
        })
        .collect()
}

/// Axial geometry with the given spacing `(z, y, x)` in mm.
pub fn geometry(spacing_mm: [f64; 3]) -> Geometry {
    Geometry {
        origin_mm: [0.0; 3],
        row_dir: [1.0, 0.0, 0.0],
        col_dir: [0.0, 1.0, 0.0],
        normal: [0.0, 0.0, 1.0],
        spacing_mm,
    }
}

/// A CTP volume being filled voxel by voxel: baseline HU plus a ΔHU curve plus noise.
pub struct Builder {
    pub voxels: Array4<f32>,
    frames: usize,
    noise: Option<(ChaCha8Rng, Normal<f64>)>,
}

impl Builder {
    /// Starts an air-filled `(frames, z, y, x)` series with white noise of `noise_sd_hu`.
    pub fn new(frames: usize, shape: [usize; 3], noise_sd_hu: f64, seed: u64) -> Self {
        let voxels = Array4::from_elem((frames, shape[0], shape[1], shape[2]), -1000.0);
        let noise = (noise_sd_hu > 0.0).then(|| {
            (
                ChaCha8Rng::seed_from_u64(seed),
                Normal::new(0.0, noise_sd_hu).unwrap(),
            )
        });
        Self {
            voxels,
            frames,
            noise,
        }
    }

    /// Sets voxel `(z, y, x)` to `baseline_hu + curve[t]` plus noise in every frame.
    pub fn set(&mut self, z: usize, y: usize, x: usize, baseline_hu: f64, curve: &[f64]) {
        for (t, &value) in curve.iter().enumerate().take(self.frames) {
            let noise = match &mut self.noise {
                Some((rng, normal)) => normal.sample(rng),
                None => 0.0,
            };
            self.voxels[(t, z, y, x)] = (baseline_hu + value + noise) as f32;
        }
    }

    /// Finishes the series with uniform frames every `dt_s`.
    pub fn build(self, spacing_mm: [f64; 3], dt_s: f64) -> Volume {
        let frames = self.frames;
        Volume {
            voxels: self.voxels,
            geometry: geometry(spacing_mm),
            frame_times_s: (0..frames).map(|t| t as f64 * dt_s).collect(),
        }
    }
}

/// Returns the median of `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}
