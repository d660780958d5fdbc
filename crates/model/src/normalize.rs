//! Per-channel intensity normalization: `(value - mean) / std` with statistics fitted on the
//! training slices and stored in the model card, so inference normalizes the same way.

use ndarray::{Array4, ArrayView3, Axis};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Standard deviations below this are treated as this, so a constant channel does not divide by 0.
const MIN_STD: f64 = 1e-6;

/// Mean and standard deviation of one input channel, in the channel's physical units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelStats {
    pub name: String,
    pub mean: f64,
    pub std: f64,
}

/// Statistics for every input channel, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub channels: Vec<ChannelStats>,
}

impl Normalization {
    /// Fits mean and standard deviation per channel over `(c, y, x)` slices, ignoring
    /// non-finite values.
    pub fn fit<'a>(
        names: &[String],
        slices: impl IntoIterator<Item = ArrayView3<'a, f32>>,
    ) -> Result<Self, ModelError> {
        let mut count = vec![0u64; names.len()];
        let mut sum = vec![0f64; names.len()];
        let mut sum_squares = vec![0f64; names.len()];
        for slice in slices {
            if slice.dim().0 != names.len() {
                return Err(ModelError::InvalidInput(format!(
                    "slice has {} channels but {} channel names were given",
                    slice.dim().0,
                    names.len()
                )));
            }
            for (c, channel) in slice.axis_iter(Axis(0)).enumerate() {
                for &v in channel.iter().filter(|v| v.is_finite()) {
                    count[c] += 1;
                    sum[c] += v as f64;
                    sum_squares[c] += (v as f64) * (v as f64);
                }
            }
        }

        let mut channels = Vec::with_capacity(names.len());
        for (c, name) in names.iter().enumerate() {
            if count[c] == 0 {
                return Err(ModelError::InvalidInput(format!(
                    "channel {name} has no finite values to fit normalization statistics on"
                )));
            }
            let mean = sum[c] / count[c] as f64;
            let variance = (sum_squares[c] / count[c] as f64 - mean * mean).max(0.0);
            channels.push(ChannelStats {
                name: name.clone(),
                mean,
                std: variance.sqrt().max(MIN_STD),
            });
        }
        Ok(Normalization { channels })
    }

    /// Returns the channel names in order.
    pub fn names(&self) -> Vec<String> {
        self.channels.iter().map(|c| c.name.clone()).collect()
    }

    /// Normalizes a `(c, y, x)` slice in place. Non-finite values become 0, the channel mean.
    pub fn apply_slice(&self, mut slice: ndarray::ArrayViewMut3<f32>) -> Result<(), ModelError> {
        if slice.dim().0 != self.channels.len() {
            return Err(ModelError::InvalidInput(format!(
                "input has {} channels; the normalization statistics cover {} ({:?})",
                slice.dim().0,
                self.channels.len(),
                self.names()
            )));
        }
        for (stats, mut channel) in self.channels.iter().zip(slice.axis_iter_mut(Axis(0))) {
            let std = stats.std.max(MIN_STD);
            channel.mapv_inplace(|v| {
                if v.is_finite() {
                    ((v as f64 - stats.mean) / std) as f32
                } else {
                    0.0
                }
            });
        }
        Ok(())
    }

    /// Normalizes a `(z, c, y, x)` stack in place.
    pub fn apply(&self, stack: &mut Array4<f32>) -> Result<(), ModelError> {
        for slice in stack.axis_iter_mut(Axis(0)) {
            self.apply_slice(slice)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn fit_and_apply_hand_values() {
        let names = vec!["cbf".to_string(), "tmax".to_string()];
        // Channel 0 contains 1, 2, 3, 4 (mean 2.5, population std sqrt(1.25)); channel 1 is
        // constant 7 with one NaN that must be ignored.
        let slice =
            Array3::from_shape_vec((2, 2, 2), vec![1.0, 2.0, 3.0, 4.0, 7.0, 7.0, f32::NAN, 7.0])
                .unwrap();
        let stats = Normalization::fit(&names, [slice.view()]).unwrap();
        assert!((stats.channels[0].mean - 2.5).abs() < 1e-12);
        assert!((stats.channels[0].std - 1.25f64.sqrt()).abs() < 1e-9);
        assert!((stats.channels[1].mean - 7.0).abs() < 1e-12);

        let mut stack = slice.insert_axis(Axis(0));
        stats.apply(&mut stack).unwrap();
        assert!((stack[[0, 0, 0, 0]] as f64 + 1.5 / 1.25f64.sqrt()).abs() < 1e-5);
        assert_eq!(stack[[0, 1, 0, 0]], 0.0);
        assert_eq!(stack[[0, 1, 1, 0]], 0.0, "NaN becomes the mean");
    }

    #[test]
    fn apply_rejects_wrong_channel_count() {
        let stats = Normalization {
            channels: vec![ChannelStats {
                name: "cbf".into(),
                mean: 0.0,
                std: 1.0,
            }],
        };
        let mut stack = Array4::<f32>::zeros((1, 2, 2, 2));
        assert!(stats.apply(&mut stack).is_err());
    }
}
