//! The training loop: by-study split, lesion-only augmentation, patches, AdamW with a
//! learning-rate schedule, early stopping on validation loss, per-epoch checkpoints with
//! resume, and a loss-curve PNG.
//!
//! Determinism: weights are initialized from `seed` (see [`crate::unet::init_weights`]) and
//! every epoch's shuffling, augmentation and cropping draw from a generator seeded by `seed`
//! and the epoch number, so on the CPU the same seed and data give the same weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use ndarray::{Array2, Array3, Array4, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{augment_if_lesion, crop_patch, AugmentConfig};
use crate::card::{utc_now, ModelCard, TrainingInfo, CARD_FORMAT_VERSION, WEIGHTS_FILE};
use crate::dataset::{Dataset, Split};
use crate::error::ModelError;
use crate::infer::{array_to_tensor, Segmenter};
use crate::loss::LossKind;
use crate::metrics::Confusion;
use crate::normalize::Normalization;
use crate::resample::{argmax_class, CLASSES};
use crate::schedule::LearningRateSchedule;
use crate::unet::{init_weights, UNet, UNetConfig};

/// File in the checkpoint folder that records progress for resuming.
pub const STATE_FILE: &str = "state.json";
/// File in the checkpoint folder holding the weights with the lowest validation loss so far.
pub const BEST_WEIGHTS_FILE: &str = "best.safetensors";
/// File in the checkpoint folder with the loss curves.
pub const LOSS_CURVE_FILE: &str = "loss-curve.png";

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Maximum number of passes over the training slices.
    pub epochs: usize,
    /// Slices (or patches) per optimizer step.
    pub batch_size: usize,
    /// Learning rate of the first epoch.
    pub learning_rate: f64,
    /// Rule for the learning rate of each epoch.
    pub schedule: LearningRateSchedule,
    /// Decoupled AdamW weight decay.
    pub weight_decay: f64,
    /// Epochs without a validation-loss improvement of more than `min_delta` before stopping.
    pub patience: usize,
    pub min_delta: f64,
    /// Side of the square training patches in pixels, a multiple of `2^depth`; 0 trains on whole
    /// slices. Validation and inference always use whole slices.
    pub patch_size: usize,
    pub loss: LossKind,
    pub seed: u64,
    /// Fraction of studies held out for validation.
    pub validation_fraction: f64,
    pub augment: AugmentConfig,
    /// Folder for per-epoch checkpoints, the progress state and the loss curve. `None` keeps
    /// everything in memory.
    pub checkpoint_dir: Option<PathBuf>,
    /// Whether to continue from the latest checkpoint in `checkpoint_dir`, if there is one.
    pub resume: bool,
    /// Description of the training data for the model card.
    pub data_description: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 100,
            batch_size: 8,
            learning_rate: 1e-3,
            schedule: LearningRateSchedule::Constant,
            weight_decay: 1e-4,
            patience: 10,
            min_delta: 1e-4,
            patch_size: 128,
            loss: LossKind::default(),
            seed: 42,
            validation_fraction: 0.2,
            augment: AugmentConfig::default(),
            checkpoint_dir: None,
            resume: true,
            data_description: String::new(),
        }
    }
}

impl TrainConfig {
    fn validate(
        &self,
        architecture: &UNetConfig,
        dataset: &Dataset,
    ) -> Result<[usize; 2], ModelError> {
        let invalid = |message: String| Err(ModelError::InvalidInput(message));
        if self.epochs == 0 || self.batch_size == 0 {
            return invalid(format!(
                "epochs ({}) and batch size ({}) must be at least 1",
                self.epochs, self.batch_size
            ));
        }
        let learning_rate_valid = self.learning_rate.is_finite() && self.learning_rate > 0.0;
        let weight_decay_valid = self.weight_decay.is_finite() && self.weight_decay >= 0.0;
        if !(learning_rate_valid && weight_decay_valid) {
            return invalid(format!(
                "learning rate {} must be positive and weight decay {} non-negative",
                self.learning_rate, self.weight_decay
            ));
        }
        let Some(shape) = dataset.shape_yx() else {
            return Err(ModelError::Dataset("the dataset has no slices".into()));
        };
        let multiple = architecture.size_multiple();
        if shape[0] % multiple != 0 || shape[1] % multiple != 0 || !self.patch_size.is_multiple_of(multiple) {
            return invalid(format!(
                "slice size {shape:?} and patch size {} must be multiples of {multiple} (2^depth)",
                self.patch_size
            ));
        }
        if architecture.in_channels != dataset.channel_names().len() {
            return invalid(format!(
                "architecture expects {} input channels, the dataset has {} ({:?})",
                architecture.in_channels,
                dataset.channel_names().len(),
                dataset.channel_names()
            ));
        }
        Ok(shape)
    }
}

/// Losses and timing of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Learning rate of the epoch. Progress files written before it was recorded have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    pub training_loss: f64,
    pub validation_loss: f64,
    pub seconds: f64,
}

/// Progress saved after every epoch, enough to resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainState {
    history: Vec<EpochRecord>,
    best_epoch: usize,
    best_validation_loss: f64,
    epochs_without_improvement: usize,
    stopped_early: bool,
}

/// The result of training: the best weights, their card and the history.
pub struct TrainOutcome {
    /// Variables holding the weights of the epoch with the lowest validation loss.
    pub varmap: VarMap,
    pub card: ModelCard,
    pub history: Vec<EpochRecord>,
    pub stopped_early: bool,
}

impl TrainOutcome {
    /// Writes `model.safetensors` and `card.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ModelError::io("creating model folder", dir, e))?;
        let path = dir.join(WEIGHTS_FILE);
        self.varmap
            .save(&path)
            .map_err(|e| ModelError::CardMismatch {
                path: path.clone(),
                reason: format!("saving the weights failed: {e}"),
            })?;
        self.card.write(dir)
    }

    /// Returns a [`Segmenter`] over the trained weights.
    pub fn segmenter(&self) -> Result<Segmenter, ModelError> {
        Segmenter::from_varmap(&self.varmap, self.card.clone())
    }
}

/// Trains a U-Net of `architecture` on `dataset`.
pub fn train(
    architecture: &UNetConfig,
    dataset: &Dataset,
    config: &TrainConfig,
) -> Result<TrainOutcome, ModelError> {
    config.validate(architecture, dataset)?;
    let split = dataset.split_by_study(config.validation_fraction, config.seed)?;
    let samples = dataset.samples();
    let normalization = Normalization::fit(
        dataset.channel_names(),
        split.training.iter().map(|&i| samples[i].input.view()),
    )?;

    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = UNet::new(
        architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
    )?;
    init_weights(&varmap, config.seed)?;
    let params = ParamsAdamW {
        lr: config.learning_rate,
        weight_decay: config.weight_decay,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(varmap.all_vars(), params)?;

    let mut state = TrainState {
        history: Vec::new(),
        best_epoch: 0,
        best_validation_loss: f64::INFINITY,
        epochs_without_improvement: 0,
        stopped_early: false,
    };
    let mut best = snapshot(&varmap)?;
    if let (Some(dir), true) = (&config.checkpoint_dir, config.resume) {
        if let Some(resumed) = resume(dir, &varmap)? {
            best = load_weights(&dir.join(BEST_WEIGHTS_FILE))?;
            state = resumed;
        }
    }

    let context = EpochContext {
        model: &model,
        dataset,
        normalization: &normalization,
        config,
        device: &device,
    };
    while state.history.len() < config.epochs && !state.stopped_early {
        let epoch = state.history.len() + 1;
        let started = Instant::now();
        let learning_rate = config.schedule.rate(config.learning_rate, epoch, config.epochs);
        optimizer.set_learning_rate(learning_rate);
        let training_loss = context.train_epoch(&split, &mut optimizer, epoch)?;
        let validation_loss = context.validation_loss(&split.validation)?;
        let record = EpochRecord {
            epoch,
            learning_rate: Some(learning_rate),
            training_loss,
            validation_loss,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            epoch,
            epochs = config.epochs,
            learning_rate,
            training_loss,
            validation_loss,
            seconds = record.seconds,
            "Finished training epoch"
        );
        state.history.push(record);

        if validation_loss < state.best_validation_loss - config.min_delta {
            state.best_validation_loss = validation_loss;
            state.best_epoch = epoch;
            state.epochs_without_improvement = 0;
            best = snapshot(&varmap)?;
        } else {
            state.epochs_without_improvement += 1;
            if state.epochs_without_improvement >= config.patience {
                state.stopped_early = true;
                tracing::info!(
                    epoch,
                    best_epoch = state.best_epoch,
                    "Stopping early: validation loss stopped improving"
                );
            }
        }
        if let Some(dir) = &config.checkpoint_dir {
            write_checkpoint(dir, &varmap, &best, &state)?;
        }
    }

    restore(&varmap, &best)?;
    let validation_scores = context.validation_scores(&split.validation)?;
    let card = build_card(
        architecture,
        normalization,
        config,
        &split,
        &state,
        validation_scores,
        &varmap,
    )?;
    Ok(TrainOutcome {
        varmap,
        card,
        history: state.history,
        stopped_early: state.stopped_early,
    })
}

/// Model, data and settings that every epoch borrows for the whole run.
struct EpochContext<'a> {
    model: &'a UNet,
    dataset: &'a Dataset,
    normalization: &'a Normalization,
    config: &'a TrainConfig,
    device: &'a Device,
}

impl EpochContext<'_> {
    /// Runs one pass over the training slices and returns the mean batch loss.
    fn train_epoch(
        &self,
        split: &Split,
        optimizer: &mut AdamW,
        epoch: usize,
    ) -> Result<f64, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.config.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut order = split.training.clone();
        order.shuffle(&mut rng);

        let mut total = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(self.config.batch_size) {
            let mut inputs = Vec::with_capacity(chunk.len());
            let mut labels = Vec::with_capacity(chunk.len());
            for &index in chunk {
                let sample = &self.dataset.samples()[index];
                let mut input = sample.input.clone();
                let mut label = sample.label.clone();
                augment_if_lesion(&mut input, &mut label, &self.config.augment, &mut rng);
                let (input, label) = crop_patch(&input, &label, self.config.patch_size, &mut rng);
                inputs.push(input);
                labels.push(label);
            }
            let (x, target) = self.batch_tensors(&inputs, &labels)?;
            let probs = candle_nn::ops::softmax(&self.model.forward(&x)?, 1)?;
            let loss = self.config.loss.compute(&probs, &target)?;
            optimizer.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        Ok(total / batches.max(1) as f64)
    }

    /// Returns the slice-weighted mean loss over whole validation slices.
    fn validation_loss(&self, indices: &[usize]) -> Result<f64, ModelError> {
        let mut total = 0.0;
        for chunk in indices.chunks(self.config.batch_size) {
            let (probs, target) = self.predict_chunk(chunk)?;
            let loss = self
                .config
                .loss
                .compute(&probs, &target)?
                .to_scalar::<f32>()? as f64;
            total += loss * chunk.len() as f64;
        }
        Ok(total / indices.len().max(1) as f64)
    }

    /// Returns Dice per class (penumbra, core) over all validation pixels, by argmax.
    fn validation_scores(&self, indices: &[usize]) -> Result<serde_json::Value, ModelError> {
        let mut confusion = [Confusion::default(); CLASSES];
        for chunk in indices.chunks(self.config.batch_size) {
            let (probs, _) = self.predict_chunk(chunk)?;
            let (batch, classes, ny, nx) = probs.dims4()?;
            let values = probs.flatten_all()?.to_vec1::<f32>()?;
            for (b, &index) in chunk.iter().enumerate().take(batch) {
                let label = &self.dataset.samples()[index].label;
                for ((y, x), &truth) in label.indexed_iter() {
                    let predicted =
                        argmax_class(|c| values[((b * classes + c) * ny + y) * nx + x], classes);
                    for (class, counts) in confusion.iter_mut().enumerate().skip(1) {
                        let counted = Confusion::from_masks(
                            [predicted as usize == class],
                            [truth as usize == class],
                        );
                        counts.true_positive += counted.true_positive;
                        counts.false_positive += counted.false_positive;
                        counts.false_negative += counted.false_negative;
                    }
                }
            }
        }
        Ok(serde_json::json!({
            "validation_dice_penumbra": confusion[1].dice(),
            "validation_dice_core": confusion[2].dice(),
            "validation_slices": indices.len(),
        }))
    }

    fn predict_chunk(&self, chunk: &[usize]) -> Result<(Tensor, Tensor), ModelError> {
        let samples = self.dataset.samples();
        let inputs: Vec<Array3<f32>> = chunk.iter().map(|&i| samples[i].input.clone()).collect();
        let labels: Vec<Array2<u8>> = chunk.iter().map(|&i| samples[i].label.clone()).collect();
        let (x, target) = self.batch_tensors(&inputs, &labels)?;
        let probs = candle_nn::ops::softmax(&self.model.forward(&x)?, 1)?;
        Ok((probs, target))
    }

    /// Normalizes and stacks slices into `(b, c, h, w)` inputs and `(b, 3, h, w)` one-hot
    /// targets.
    fn batch_tensors(
        &self,
        inputs: &[Array3<f32>],
        labels: &[Array2<u8>],
    ) -> Result<(Tensor, Tensor), ModelError> {
        let views: Vec<_> = inputs.iter().map(|a| a.view()).collect();
        let mut stack = ndarray::stack(Axis(0), &views).map_err(|e| {
            ModelError::Dataset(format!("slices in one batch differ in shape: {e}"))
        })?;
        self.normalization.apply(&mut stack)?;

        let (batch, _, ny, nx) = stack.dim();
        let mut one_hot = Array4::<f32>::zeros((batch, CLASSES, ny, nx));
        for (b, label) in labels.iter().enumerate() {
            for ((y, x), &value) in label.indexed_iter() {
                one_hot[[b, value as usize, y, x]] = 1.0;
            }
        }
        Ok((
            array_to_tensor(&stack, self.device)?,
            array_to_tensor(&one_hot, self.device)?,
        ))
    }
}

/// Copies every variable's current value.
fn snapshot(varmap: &VarMap) -> Result<HashMap<String, Tensor>, ModelError> {
    let data = varmap.data().lock().map_err(|_| {
        ModelError::InvalidInput("variable map lock is poisoned by an earlier panic".into())
    })?;
    let mut copy = HashMap::with_capacity(data.len());
    for (name, var) in data.iter() {
        copy.insert(name.clone(), var.as_tensor().copy()?);
    }
    Ok(copy)
}

/// Sets every variable to the value stored under its name.
fn restore(varmap: &VarMap, values: &HashMap<String, Tensor>) -> Result<(), ModelError> {
    let data = varmap.data().lock().map_err(|_| {
        ModelError::InvalidInput("variable map lock is poisoned by an earlier panic".into())
    })?;
    for (name, var) in data.iter() {
        let value = values
            .get(name)
            .ok_or_else(|| ModelError::InvalidInput(format!("saved weights lack tensor {name}")))?;
        var.set(value)?;
    }
    Ok(())
}

fn load_weights(path: &Path) -> Result<HashMap<String, Tensor>, ModelError> {
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| ModelError::CardMismatch {
        path: path.to_path_buf(),
        reason: format!("cannot read checkpoint weights: {e}"),
    })
}

fn epoch_weights_path(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch:04}.safetensors"))
}

/// Writes this epoch's weights, the best weights, the state (last, so a crash mid-way leaves
/// the previous state pointing at complete files) and the loss curve.
fn write_checkpoint(
    dir: &Path,
    varmap: &VarMap,
    best: &HashMap<String, Tensor>,
    state: &TrainState,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ModelError::io("creating checkpoint folder", dir, e))?;
    let epoch = state.history.len();
    let weights = epoch_weights_path(dir, epoch);
    varmap.save(&weights).map_err(|e| {
        ModelError::InvalidInput(format!(
            "saving checkpoint {} failed: {e}",
            weights.display()
        ))
    })?;
    let best_path = dir.join(BEST_WEIGHTS_FILE);
    candle_core::safetensors::save(best, &best_path)?;

    let state_path = dir.join(STATE_FILE);
    let temporary = dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| ModelError::InvalidInput(format!("encoding training state failed: {e}")))?;
    std::fs::write(&temporary, text)
        .map_err(|e| ModelError::io("writing training state", &temporary, e))?;
    std::fs::rename(&temporary, &state_path)
        .map_err(|e| ModelError::io("replacing training state", &state_path, e))?;

    let training: Vec<f64> = state.history.iter().map(|r| r.training_loss).collect();
    let validation: Vec<f64> = state.history.iter().map(|r| r.validation_loss).collect();
    crate::plot::write_loss_curve(&dir.join(LOSS_CURVE_FILE), &training, &validation)
}

/// Loads the latest checkpoint into `varmap` and returns its state, or `None` if there is none.
///
/// NOTE: candle-nn's AdamW keeps its moment estimates private, so a resumed run restarts them
/// and its weights differ slightly from an uninterrupted run with the same seed.
fn resume(dir: &Path, varmap: &VarMap) -> Result<Option<TrainState>, ModelError> {
    let state_path = dir.join(STATE_FILE);
    if !state_path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| ModelError::io("reading training state", &state_path, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| {
        ModelError::InvalidInput(format!(
            "training state {} is not valid ({e}); delete the checkpoint folder to start over",
            state_path.display()
        ))
    })?;
    let weights = epoch_weights_path(dir, state.history.len());
    restore(varmap, &load_weights(&weights)?)?;
    tracing::info!(epoch = state.history.len(), checkpoint = %weights.display(), "Resuming training from checkpoint");
    Ok(Some(state))
}

fn build_card(
    architecture: &UNetConfig,
    normalization: Normalization,
    config: &TrainConfig,
    split: &Split,
    state: &TrainState,
    validation_scores: serde_json::Value,
    varmap: &VarMap,
) -> Result<ModelCard, ModelError> {
    let tensors = {
        let data = varmap.data().lock().map_err(|_| {
            ModelError::InvalidInput("variable map lock is poisoned by an earlier panic".into())
        })?;
        data.iter()
            .map(|(name, var)| (name.clone(), var.dims().to_vec()))
            .collect()
    };
    let mut metrics = validation_scores;
    metrics["best_validation_loss"] = serde_json::json!(state.best_validation_loss);
    metrics["history"] = serde_json::to_value(&state.history).unwrap_or_default();

    Ok(ModelCard {
        format_version: CARD_FORMAT_VERSION,
        architecture: architecture.clone(),
        normalization,
        training: TrainingInfo {
            data: config.data_description.clone(),
            seed: config.seed,
            loss: config.loss,
            learning_rate: Some(config.learning_rate),
            schedule: config.schedule,
            epochs_run: state.history.len(),
            best_epoch: state.best_epoch,
            training_studies: split.training_studies.clone(),
            validation_studies: split.validation_studies.clone(),
        },
        metrics,
        created_utc: utc_now(),
        code_version: env!("CARGO_PKG_VERSION").to_string(),
        tensors,
    })
}
