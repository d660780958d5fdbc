//! The residual U-Net that segments ischemic core and penumbra from perfusion maps, in candle.
//!
//! - [`resample`]: native slices to the square 256x256 model grid and back.
//! - [`normalize`]: per-channel intensity normalization with statistics kept in the model card.
//! - [`unet`]: the residual (or plain) U-Net, built from a [`candle_nn::VarBuilder`].
//! - [`loss`]: Tversky, focal Tversky, soft Dice and cross-entropy on softmax probabilities.
//! - [`dataset`], [`augment`], [`train`]: training slices, lesion-only augmentation, the
//!   AdamW training loop with early stopping, checkpoints and a loss-curve PNG ([`plot`]).
//! - [`decision`]: thresholds on the class probabilities that replace the argmax when a model
//!   folder has them.
//! - [`metrics`]: Dice, Tversky coefficient, HD95 and volume error per class.
//! - [`card`], [`infer`]: the JSON model card next to the safetensors weights, and the
//!   [`Segmenter`] that loads both and predicts class probabilities.
//! - [`random`]: untrained model folders with seeded random weights, for benchmarks.
//!
//! This crate does no network I/O. It reads and writes only the model and checkpoint folders
//! its callers name.

pub mod augment;
pub mod card;
pub mod dataset;
pub mod decision;
pub mod error;
pub mod infer;
pub mod loss;
pub mod metrics;
pub mod normalize;
pub mod plot;
pub mod random;
pub mod resample;
pub mod schedule;
pub mod train;
pub mod unet;

pub use card::ModelCard;
pub use dataset::{Dataset, TrainingSample};
pub use decision::{DecisionThresholds, DECISION_FILE};
pub use error::ModelError;
pub use infer::{load, Segmentation, Segmenter};
pub use loss::LossKind;
pub use normalize::Normalization;
pub use resample::{
    labels_to_model_grid, labels_to_native, probabilities_to_native, to_model_grid, GridTransform,
    CLASSES, MODEL_SIZE,
};
pub use schedule::LearningRateSchedule;
pub use train::{train, TrainConfig, TrainOutcome};
pub use unet::{Kernels, Norm, UNet, UNetConfig};
