//! Arterial and venous input functions on a fine time grid, in HU above baseline.

use rand::Rng;
use serde::Serialize;

use crate::params::AifShape;

/// Time step of every fine-grid curve in seconds.
pub const FINE_DT_S: f64 = 0.1;

/// A curve sampled every [`FINE_DT_S`] from t = 0 (the first frame).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    pub dt_s: f64,
    pub values: Vec<f64>,
}

impl Curve {
    /// Returns the value at `t_s` by linear interpolation; 0 before the start, the last value after
    /// the end.
    pub fn at(&self, t_s: f64) -> f64 {
        let position = t_s / self.dt_s;
        if position < 0.0 || self.values.is_empty() {
            return 0.0;
        }

        let index = position.floor() as usize;
        if index + 1 >= self.values.len() {
            return *self.values.last().unwrap_or(&0.0);
        }
        let fraction = position - index as f64;
        self.values[index] * (1.0 - fraction) + self.values[index + 1] * fraction
    }

    /// Returns the time of the maximum in seconds.
    pub fn peak_time_s(&self) -> f64 {
        let mut best = 0;
        for (i, &v) in self.values.iter().enumerate() {
            if v > self.values[best] {
                best = i;
            }
        }
        best as f64 * self.dt_s
    }

    /// Returns the maximum value.
    pub fn peak(&self) -> f64 {
        self.values.iter().copied().fold(0.0, f64::max)
    }

    /// Returns the area under the curve (trapezoid rule) in HU s.
    pub fn area(&self) -> f64 {
        let sum: f64 = self.values.windows(2).map(|w| 0.5 * (w[0] + w[1])).sum();
        sum * self.dt_s
    }
}

/// Design of the arterial input function, as drawn from the seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AifDesign {
    pub shape: AifShape,
    /// Bolus arrival after the first frame in seconds.
    pub arrival_s: f64,
    /// Peak enhancement in HU above baseline (gamma variate only).
    pub peak_hu: f64,
    /// Recirculation amplitude as a fraction of the peak.
    pub recirculation_fraction: f64,
    /// Recirculation delay after arrival in seconds.
    pub recirculation_delay_s: f64,
    /// Plateau level as a fraction of the peak.
    pub plateau_fraction: f64,
}

/// Gamma-variate shape parameters of the first pass (adult values of the `pct` toolbox).
const ALPHA: f64 = 3.0;
const BETA_S: f64 = 1.5;

/// Clinical AIF of the Erlangen phantom: HU above baseline every 2 s from t = 1 s to 49 s.
const ERLANGEN_AIF: [f64; 25] = [
    0.0, 0.0, 0.0, 0.0, 25.0, 105.0, 220.0, 350.0, 440.0, 485.0, 430.0, 300.0, 180.0, 110.0, 104.0, 108.0, 115.0,
    125.0, 115.0, 108.0, 98.0, 90.0, 98.0, 108.0, 112.0,
];

/// Draws the AIF design. A truncated bolus arrives 22 s before the end of the scan.
pub fn draw_aif(rng: &mut impl Rng, shape: AifShape, duration_s: f64, truncated: bool) -> AifDesign {
    let mut arrival_s = rng.random_range(6.0..10.0);
    if truncated {
        arrival_s = (duration_s - 22.0).max(arrival_s);
    }

    AifDesign {
        shape,
        arrival_s,
        peak_hu: rng.random_range(300.0..500.0),
        recirculation_fraction: rng.random_range(0.10..0.15),
        recirculation_delay_s: rng.random_range(8.0..12.0),
        plateau_fraction: rng.random_range(0.15..0.20),
    }
}

/// Returns the unit-peak gamma variate `(s / (alpha beta))^alpha e^(alpha - s / beta)` at `s`
/// seconds after arrival.
fn unit_gamma(s: f64, beta_s: f64) -> f64 {
    if s <= 0.0 {
        return 0.0;
    }
    let x = s / (ALPHA * beta_s);
    x.powf(ALPHA) * (ALPHA * (1.0 - x)).exp()
}

/// Builds the AIF from t = 0 to `end_s` on the fine grid.
pub fn arterial(design: &AifDesign, end_s: f64) -> Curve {
    let n = (end_s / FINE_DT_S).ceil() as usize + 1;
    let values = (0..n)
        .map(|i| {
            let t = i as f64 * FINE_DT_S;
            match design.shape {
                AifShape::GammaVariate => gamma_aif(design, t),
                AifShape::Erlangen => erlangen_aif(t - (design.arrival_s - 9.0)),
            }
        })
        .collect();
    Curve { dt_s: FINE_DT_S, values }
}

/// First pass, a wider recirculation pass and a plateau that rises from the first-pass peak.
fn gamma_aif(design: &AifDesign, t: f64) -> f64 {
    let s = t - design.arrival_s;
    let first_pass = unit_gamma(s, BETA_S);
    let recirculation = design.recirculation_fraction * unit_gamma(s - design.recirculation_delay_s, 2.0);

    let since_peak = s - ALPHA * BETA_S;
    let plateau = if since_peak > 0.0 {
        design.plateau_fraction * (1.0 - (-since_peak / 6.0).exp())
    } else {
        0.0
    };
    design.peak_hu * (first_pass + recirculation + plateau)
}

/// Erlangen samples with Catmull-Rom interpolation; `t` is in the samples' own time base, where
/// the bolus arrives near 9 s. The last sample is held after 49 s.
fn erlangen_aif(t: f64) -> f64 {
    let position = (t - 1.0) / 2.0;
    if position <= 0.0 {
        return 0.0;
    }
    let last = ERLANGEN_AIF.len() - 1;
    if position >= last as f64 {
        return ERLANGEN_AIF[last];
    }

    let i = position.floor() as usize;
    let u = position - i as f64;
    let p = |k: isize| ERLANGEN_AIF[(i as isize + k).clamp(0, last as isize) as usize];
    let (p0, p1, p2, p3) = (p(-1), p(0), p(1), p(2));
    let value = 0.5
        * (2.0 * p1
            + (-p0 + p2) * u
            + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * u * u
            + (-p0 + 3.0 * p1 - 3.0 * p2 + p3) * u * u * u);
    value.max(0.0)
}

/// Builds the VOF: the AIF convolved with a unit-area gamma transit kernel (shape 4, mean
/// `mean_transit_s`), so the VOF has the AIF's area when the window contains the whole passage.
pub fn venous(aif: &Curve, mean_transit_s: f64) -> Curve {
    let shape = 4.0;
    let scale = mean_transit_s / shape;
    let kernel_len = ((mean_transit_s * 6.0) / aif.dt_s).ceil() as usize;

    let mut kernel: Vec<f64> = (0..kernel_len)
        .map(|i| {
            let t = (i as f64 + 0.5) * aif.dt_s;
            t.powf(shape - 1.0) * (-t / scale).exp()
        })
        .collect();
    let sum: f64 = kernel.iter().sum::<f64>() * aif.dt_s;
    for k in &mut kernel {
        *k /= sum;
    }

    let values = (0..aif.values.len())
        .map(|i| {
            let taps = kernel_len.min(i + 1);
            (0..taps).map(|j| aif.values[i - j] * kernel[j]).sum::<f64>() * aif.dt_s
        })
        .collect();
    Curve { dt_s: aif.dt_s, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn design() -> AifDesign {
        AifDesign {
            shape: AifShape::GammaVariate,
            arrival_s: 8.0,
            peak_hu: 400.0,
            recirculation_fraction: 0.12,
            recirculation_delay_s: 10.0,
            plateau_fraction: 0.18,
        }
    }

    #[test]
    fn gamma_aif_peaks_at_alpha_beta() {
        let aif = arterial(&design(), 60.0);
        // The first pass peaks at alpha * beta = 4.5 s after arrival, at 400 HU. The plateau
        // starts rising there, which moves the maximum up to 0.3 s later and 3 HU higher.
        let peak_time = aif.peak_time_s();
        assert!((12.5..=12.8).contains(&peak_time), "{peak_time}");
        assert!((400.0..403.0).contains(&aif.peak()), "{}", aif.peak());
        assert!((aif.at(12.5) - 400.0).abs() < 1e-9, "{}", aif.at(12.5));
        assert_eq!(aif.at(7.9), 0.0);
    }

    #[test]
    fn gamma_aif_plateau_level() {
        let aif = arterial(&design(), 60.0);
        // At 55 s the first pass has decayed and the plateau is within 0.1 % of 0.18 * 400 HU.
        let late = aif.at(55.0);
        assert!((late - 72.0).abs() < 1.0, "{late}");
    }

    #[test]
    fn erlangen_aif_hits_samples() {
        assert_eq!(erlangen_aif(19.0), 485.0);
        assert_eq!(erlangen_aif(9.0), 25.0);
        assert_eq!(erlangen_aif(60.0), 112.0);
        assert_eq!(erlangen_aif(0.5), 0.0);
    }

    #[test]
    fn vof_keeps_area_and_lags() {
        let aif = arterial(&design(), 200.0);
        let vof = venous(&aif, 6.0);
        assert!(vof.peak_time_s() > aif.peak_time_s() + 3.0);
        // The plateau never ends, so compare areas up to 150 s, where the VOF has caught up
        // with all but the last mean transit time (6 s) of the plateau: 6 s x 72 HU = 432 HU s.
        let lag = aif.area() - vof.area();
        assert!((lag - 432.0).abs() < 20.0, "{lag}");
    }
}
