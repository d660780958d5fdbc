//! Learning-rate schedules over the epochs of a training run.
//!
//! With a constant rate, AdamW keeps taking steps of the same size until early stopping, and the
//! validation loss of the later epochs stays noisy. A cosine schedule lowers the rate from the
//! configured value to [`COSINE_FLOOR`] times it over the planned epochs, so that the steps of
//! the later epochs are small. The rate depends only on the epoch number, so a resumed run
//! continues the same curve.

use serde::{Deserialize, Serialize};

/// Fraction of the configured rate that the cosine schedule reaches in the last epoch.
pub const COSINE_FLOOR: f64 = 0.05;

/// Rule for the learning rate of each epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearningRateSchedule {
    /// The configured rate in every epoch.
    #[default]
    Constant,
    /// Half a cosine from the configured rate in the first epoch down to [`COSINE_FLOOR`] times
    /// it in the last planned epoch.
    Cosine,
}

impl LearningRateSchedule {
    /// Returns the learning rate of `epoch` (1-based) in a run of `epochs` planned epochs.
    pub fn rate(self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            LearningRateSchedule::Constant => base,
            LearningRateSchedule::Cosine => {
                if epochs <= 1 {
                    return base;
                }
                let progress = (epoch.clamp(1, epochs) - 1) as f64 / (epochs - 1) as f64;
                let floor = base * COSINE_FLOOR;
                floor + 0.5 * (base - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_keeps_the_rate() {
        assert_eq!(LearningRateSchedule::Constant.rate(1e-3, 1, 20), 1e-3);
        assert_eq!(LearningRateSchedule::Constant.rate(1e-3, 20, 20), 1e-3);
    }

    #[test]
    fn cosine_runs_from_base_to_floor() {
        let schedule = LearningRateSchedule::Cosine;

        // Epochs 1, 3 and 5 of 5 are progress 0, 0.5 and 1: cos gives 1, 0 and -1.
        assert!((schedule.rate(1e-3, 1, 5) - 1e-3).abs() < 1e-15);
        assert!((schedule.rate(1e-3, 3, 5) - 0.525e-3).abs() < 1e-15);
        assert!((schedule.rate(1e-3, 5, 5) - 0.05e-3).abs() < 1e-15);
    }

    #[test]
    fn cosine_falls_every_epoch() {
        let rates: Vec<f64> = (1..=20).map(|epoch| LearningRateSchedule::Cosine.rate(2e-3, epoch, 20)).collect();

        assert!(rates.windows(2).all(|pair| pair[1] < pair[0]), "{rates:?}");
    }

    #[test]
    fn cosine_of_one_epoch_is_the_base() {
        assert_eq!(LearningRateSchedule::Cosine.rate(1e-3, 1, 1), 1e-3);
    }
}
