//! Label values shared by threshold labelling, the U-Net, export and QA.

use ndarray::Array3;

/// One voxel's class in every Penumbra segmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Label {
    Background = 0,
    /// Hypoperfused but salvageable tissue (Tmax above threshold, not core).
    Penumbra = 1,
    /// Ischemic core.
    Core = 2,
}

/// A `(z, y, x)` volume of [`Label`] values stored as `u8`.
pub type LabelVolume = Array3<u8>;

/// Returns how many voxels of `labels` carry `label`.
pub fn count(labels: &LabelVolume, label: Label) -> usize {
    labels.iter().filter(|&&v| v == label as u8).count()
}
