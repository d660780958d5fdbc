//! Loading a trained model folder and predicting class probabilities.
//!
//! Threads: candle's CPU kernels run on rayon. By default they use the global rayon pool, whose
//! size comes from the `RAYON_NUM_THREADS` environment variable or else the number of CPUs, and
//! candle's matrix multiplication reads the same variable. To bound one [`Segmenter`], call
//! [`Segmenter::set_threads`]: predictions then run inside a dedicated pool of that size.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ndarray::{s, Array4};

use crate::card::{ModelCard, WEIGHTS_FILE};
use crate::decision::DecisionThresholds;
use crate::error::ModelError;
use crate::resample::{argmax_labels, probabilities_to_native, to_model_grid};
use crate::unet::UNet;

/// A native-grid segmentation: class probabilities and the labels picked from them.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// Softmax probabilities `(3, z, y, x)` resampled to the native grid.
    pub probabilities: Array4<f32>,
    /// Labels picked from `probabilities` ([`Segmenter::labels`]): 0 background, 1 penumbra,
    /// 2 core.
    pub labels: penumbra_imaging::LabelVolume,
}

/// A trained U-Net with its model card, ready to predict.
pub struct Segmenter {
    model: UNet,
    card: ModelCard,
    decision: Option<DecisionThresholds>,
    device: Device,
    pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("architecture", &self.card.architecture)
            .field("channels", &self.card.input_channels())
            .field("decision", &self.decision.as_ref().map(|d| (d.hypoperfused, d.core)))
            .finish()
    }
}

/// Loads `card.json` and `model.safetensors` from `dir` onto the CPU, with the decision
/// thresholds of `decision-thresholds.json` when the folder has that file.
///
/// Fails with [`ModelError::CardMismatch`] when the weights lack a tensor the card's
/// architecture needs, hold an extra one, or hold one of a different shape, or when the card's
/// tensor list disagrees with the file.
pub fn load(dir: &Path) -> Result<Segmenter, ModelError> {
    let card = ModelCard::read(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let device = Device::Cpu;
    let tensors =
        candle_core::safetensors::load(&path, &device).map_err(|e| ModelError::CardMismatch {
            path: path.clone(),
            reason: format!("cannot read the safetensors file: {e}"),
        })?;
    check_tensors(&card, &tensors, &path)?;

    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    let model = UNet::new(&card.architecture, vb).map_err(|e| ModelError::CardMismatch {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let decision = DecisionThresholds::read(dir)?;
    Ok(Segmenter {
        model,
        card,
        decision,
        device,
        pool: None,
    })
}

/// Returns the name and shape of every variable the architecture in `card` creates.
pub(crate) fn expected_shapes(card: &ModelCard) -> Result<HashMap<String, Vec<usize>>, ModelError> {
    let varmap = VarMap::new();
    UNet::new(
        &card.architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let data = varmap.data().lock().map_err(|_| {
        ModelError::InvalidInput("variable map lock is poisoned by an earlier panic".into())
    })?;
    Ok(data
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect())
}

fn check_tensors(
    card: &ModelCard,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), ModelError> {
    let mismatch = |reason: String| ModelError::CardMismatch {
        path: path.to_path_buf(),
        reason,
    };
    let expected = expected_shapes(card)?;

    let mut missing: Vec<&String> = expected
        .keys()
        .filter(|name| !tensors.contains_key(*name))
        .collect();
    missing.sort();
    if let Some(name) = missing.first() {
        return Err(mismatch(format!(
            "tensor {name} required by the card's architecture is missing ({} missing in all)",
            missing.len()
        )));
    }
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|name| !expected.contains_key(*name))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(mismatch(format!(
            "tensor {name} is not part of the card's architecture"
        )));
    }
    for (name, shape) in &expected {
        let found = tensors[name].dims();
        if found != shape.as_slice() {
            return Err(mismatch(format!(
                "tensor {name} has shape {found:?}; the card's architecture needs {shape:?}"
            )));
        }
        if card.tensors.get(name) != Some(shape) {
            return Err(mismatch(format!(
                "the card lists tensor {name} as {:?}, the architecture needs {shape:?}",
                card.tensors.get(name)
            )));
        }
    }
    if card.tensors.len() != expected.len() {
        return Err(mismatch(format!(
            "the card lists {} tensors, the architecture has {}",
            card.tensors.len(),
            expected.len()
        )));
    }
    Ok(())
}

impl Segmenter {
    /// Segments native `(c, z, y, x)` channels with voxel spacing `spacing_zyx` (mm): resamples
    /// to the model grid, predicts, and maps the probabilities back before picking the labels.
    pub fn segment(
        &self,
        channels: &Array4<f32>,
        spacing_zyx: [f64; 3],
        batch: usize,
        tta_flip: bool,
    ) -> Result<Segmentation, ModelError> {
        let (model_input, transform) = to_model_grid(channels, [spacing_zyx[1], spacing_zyx[2]])?;
        let model_probabilities = self.predict(&model_input, batch, tta_flip)?;
        let probabilities = probabilities_to_native(&model_probabilities, &transform)?;
        let labels = self.labels(&probabilities, spacing_zyx[0])?;
        Ok(Segmentation {
            probabilities,
            labels,
        })
    }

    /// Wraps a freshly trained model held in `varmap`.
    pub fn from_varmap(varmap: &VarMap, card: ModelCard) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        // Detached copies track no gradient, so inference takes the same kernels as a model
        // loaded from disk and predicts the same values.
        let tensors: HashMap<String, Tensor> = {
            let vars = varmap
                .data()
                .lock()
                .map_err(|_| ModelError::InvalidInput("the training variables are poisoned by a panic".to_string()))?;
            vars.iter()
                .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
                .collect()
        };
        let model = UNet::new(
            &card.architecture,
            VarBuilder::from_tensors(tensors, DType::F32, &device),
        )?;
        Ok(Segmenter {
            model,
            card,
            decision: None,
            device,
            pool: None,
        })
    }

    /// Returns the model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Returns the decision thresholds, `None` when labels are picked by argmax.
    pub fn decision(&self) -> Option<&DecisionThresholds> {
        self.decision.as_ref()
    }

    /// Replaces the decision thresholds; `None` picks labels by argmax.
    pub fn set_decision(&mut self, decision: Option<DecisionThresholds>) {
        self.decision = decision;
    }

    /// Picks labels from `(3, z, y, x)` probabilities whose slices lie `slice_spacing_mm`
    /// apart: with the decision thresholds when the model has them, else by argmax.
    pub fn labels(&self, probabilities: &Array4<f32>, slice_spacing_mm: f64) -> Result<penumbra_imaging::LabelVolume, ModelError> {
        match &self.decision {
            Some(decision) => decision.labels(probabilities, slice_spacing_mm),
            None => Ok(argmax_labels(probabilities)),
        }
    }

    /// Checks that the configured input channels are the card's channels, in the same order.
    /// Names are compared ignoring ASCII case, so `Tmax` matches `tmax`.
    pub fn require_channels(&self, configured: &[String]) -> Result<(), ModelError> {
        let card = self.card.input_channels();
        if card.len() != configured.len()
            || card
                .iter()
                .zip(configured)
                .any(|(a, b)| !a.eq_ignore_ascii_case(b))
        {
            return Err(ModelError::ChannelMismatch {
                configured: configured.to_vec(),
                card,
            });
        }
        Ok(())
    }

    /// Selects the convolution kernels for later predictions.
    pub fn set_kernels(&mut self, kernels: crate::unet::Kernels) {
        self.model.set_kernels(kernels);
    }

    /// Runs later predictions in a dedicated rayon pool of `threads` threads.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), ModelError> {
        if threads == 0 {
            return Err(ModelError::InvalidInput(
                "thread count must be at least 1".into(),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("penumbra-model-{i}"))
            .build()
            .map_err(|e| {
                ModelError::InvalidInput(format!(
                    "starting {threads} inference threads failed: {e}"
                ))
            })?;
        self.pool = Some(pool);
        Ok(())
    }

    /// Runs the network on an already normalized `(b, c, h, w)` tensor and returns the logits
    /// `(b, classes, h, w)`, inside the dedicated pool when [`Segmenter::set_threads`] set one.
    pub fn logits(&self, normalized: &Tensor) -> Result<Tensor, ModelError> {
        self.model.check_input(normalized.dims())?;
        let run = || self.model.forward(normalized);
        let logits = match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        };
        Ok(logits?)
    }

    /// Predicts softmax class probabilities `(z, 3, h, w)` for `(z, c, h, w)` input slices.
    ///
    /// `input` contains the card's channels in physical units on the model grid (see
    /// [`crate::resample::to_model_grid`]); this method applies the card's normalization. Slices
    /// run `batch` at a time. With `tta_flip`, each batch also runs mirrored left to right and
    /// the two probability maps are averaged, which doubles the run time.
    pub fn predict(
        &self,
        input: &Array4<f32>,
        batch: usize,
        tta_flip: bool,
    ) -> Result<Array4<f32>, ModelError> {
        let (slices, channels, ny, nx) = input.dim();
        self.model.check_input(&[slices.max(1), channels, ny, nx])?;
        if batch == 0 {
            return Err(ModelError::InvalidInput(
                "batch size must be at least 1".into(),
            ));
        }

        let mut normalized = input.to_owned();
        self.card.normalization.apply(&mut normalized)?;

        let run = || self.predict_normalized(&normalized, batch, tta_flip);
        match &self.pool {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }

    fn predict_normalized(
        &self,
        input: &Array4<f32>,
        batch: usize,
        tta_flip: bool,
    ) -> Result<Array4<f32>, ModelError> {
        let (slices, _, ny, nx) = input.dim();
        let classes = self.card.architecture.classes;
        let mut output = Array4::<f32>::zeros((slices, classes, ny, nx));

        for start in (0..slices).step_by(batch) {
            let end = (start + batch).min(slices);
            let chunk = input.slice(s![start..end, .., .., ..]);
            let x = array_to_tensor(&chunk.to_owned(), &self.device)?;
            let mut probs = candle_nn::ops::softmax(&self.model.forward(&x)?, 1)?;
            if tta_flip {
                let flipped =
                    candle_nn::ops::softmax(&self.model.forward(&x.flip(&[3])?)?, 1)?.flip(&[3])?;
                probs = ((probs + flipped)? * 0.5)?;
            }
            let values = probs.flatten_all()?.to_vec1::<f32>()?;
            let block =
                Array4::from_shape_vec((end - start, classes, ny, nx), values).map_err(|e| {
                    ModelError::InvalidInput(format!("model output has an unexpected shape: {e}"))
                })?;
            output.slice_mut(s![start..end, .., .., ..]).assign(&block);
        }
        Ok(output)
    }
}

/// Copies a `(b, c, h, w)` array into a CPU tensor.
pub(crate) fn array_to_tensor(array: &Array4<f32>, device: &Device) -> Result<Tensor, ModelError> {
    let dims = array.dim();
    let values: Vec<f32> = array.iter().copied().collect();
    Ok(Tensor::from_vec(values, dims, device)?)
}
