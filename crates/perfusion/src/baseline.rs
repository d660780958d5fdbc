//! Bolus arrival and the pre-contrast baseline frames.

use serde::{Deserialize, Serialize};

use crate::params::BaselineParams;

/// Frames `start..end` (exclusive) form the baseline; contrast first shows at `arrival`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineWindow {
    pub start: usize,
    pub end: usize,
    pub arrival: usize,
}

impl BaselineWindow {
    /// Returns the number of baseline frames.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Returns true when the window contains no frame, which [`detect_baseline`] never returns one.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Returns the first frame whose enhancement over frame 0 reaches `fraction` of the peak
/// enhancement, or `None` when `curve` never rises above its first value.
pub fn detect_arrival(curve: &[f64], fraction: f64) -> Option<usize> {
    let first = *curve.first()?;
    let peak = curve.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let rise = peak - first;
    if !(rise > 1e-6) {
        return None;
    }

    curve
        .iter()
        .position(|&value| value - first >= fraction * rise)
}

/// Picks the baseline frames before the arrival detected on `mean_curve` (the mean HU of
/// head voxels per frame).
///
/// The frame just before arrival is left out because arterial enhancement starts earlier than
/// the mean. At least one frame is always kept, so a bolus at frame 0 or 1 yields a one-frame
/// baseline that [`crate::InputQuality`] flags.
pub fn detect_baseline(mean_curve: &[f64], params: &BaselineParams) -> Option<BaselineWindow> {
    let arrival = detect_arrival(mean_curve, params.arrival_fraction)?;

    let end = arrival
        .saturating_sub(1)
        .max(params.skip_frames + 1)
        .min(mean_curve.len());
    let start = params
        .skip_frames
        .min(end - 1)
        .max(end.saturating_sub(params.max_frames));
    Some(BaselineWindow {
        start,
        end,
        arrival,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_at_ten_percent_rise() {
        // Rise of 100 over frame 0; 10 % is reached at frame 4 (value 20 -> +10).
        let curve = [10.0, 10.0, 11.0, 15.0, 20.0, 60.0, 110.0, 80.0];
        assert_eq!(detect_arrival(&curve, 0.1), Some(4));
    }

    #[test]
    fn arrival_none_without_enhancement() {
        assert_eq!(detect_arrival(&[5.0, 5.0, 4.0, 3.0], 0.1), None);
        assert_eq!(detect_arrival(&[], 0.1), None);
    }

    #[test]
    fn baseline_ends_before_arrival() {
        let mut curve = vec![30.0; 8];
        curve.extend([31.0, 40.0, 60.0, 50.0, 40.0]);
        let window = detect_baseline(&curve, &BaselineParams::default()).unwrap();

        // Rise 30; 10 % = 3 HU first reached at frame 9 (40 HU); baseline is 0..8.
        assert_eq!(window.arrival, 9);
        assert_eq!(window.start, 0);
        assert_eq!(window.end, 8);
        assert_eq!(window.len(), 8);
    }

    #[test]
    fn baseline_capped_and_skipped() {
        let mut curve = vec![30.0; 20];
        curve.extend([60.0, 90.0, 60.0]);
        let params = BaselineParams {
            max_frames: 5,
            skip_frames: 2,
            ..BaselineParams::default()
        };
        let window = detect_baseline(&curve, &params).unwrap();

        assert_eq!(window.arrival, 20);
        assert_eq!((window.start, window.end), (14, 19));
    }

    #[test]
    fn baseline_keeps_one_frame_for_early_bolus() {
        let curve = [30.0, 80.0, 120.0, 90.0];
        let window = detect_baseline(&curve, &BaselineParams::default()).unwrap();

        assert_eq!(window.arrival, 1);
        assert_eq!((window.start, window.end), (0, 1));
    }
}
