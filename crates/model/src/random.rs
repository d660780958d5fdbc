//! Untrained model folders with seeded random weights, for benchmarks and format checks.
//!
//! The folder has the same `card.json` and `model.safetensors` as a trained model, so every
//! loader and exporter reads it unchanged. Convolution weights get He normal values (see
//! [`init_weights`]). Biases and normalization parameters are drawn too, not left at 0 and 1,
//! so that an exporter that drops or reorders them gives different outputs.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_distr::Distribution;

use crate::card::{utc_now, ModelCard, TrainingInfo, CARD_FILE, CARD_FORMAT_VERSION, WEIGHTS_FILE};
use crate::error::ModelError;
use crate::loss::LossKind;
use crate::normalize::{ChannelStats, Normalization};
use crate::unet::{init_weights, UNet, UNetConfig};

/// Standard deviation of the random biases and of the normalization scales around 1.
const PARAMETER_STD: f64 = 0.1;

/// Writes an untrained model with `architecture` and weights seeded by `seed` into `dir`.
///
/// The input channels are named `channel1` .. `channelN` with mean 0 and standard deviation 1,
/// so the model expects already normalized input. Fails when `dir` already contains a model
/// card, so a trained model is never overwritten.
pub fn write_random_model(
    dir: &Path,
    architecture: &UNetConfig,
    seed: u64,
) -> Result<ModelCard, ModelError> {
    architecture.validate()?;
    let card_path = dir.join(CARD_FILE);
    if card_path.exists() {
        return Err(ModelError::InvalidInput(format!(
            "{} already exists; choose an empty folder for the random model",
            card_path.display()
        )));
    }

    let varmap = VarMap::new();
    UNet::new(
        architecture,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    init_weights(&varmap, seed)?;
    randomize_parameters(&varmap, seed)?;

    std::fs::create_dir_all(dir).map_err(|e| ModelError::io("creating model folder", dir, e))?;
    let weights = dir.join(WEIGHTS_FILE);
    varmap.save(&weights).map_err(|e| ModelError::CardMismatch {
        path: weights.clone(),
        reason: format!("saving the weights failed: {e}"),
    })?;

    let card = random_card(architecture, seed, &varmap)?;
    card.write(dir)?;
    Ok(card)
}

/// Replaces every bias `b` by a draw of N(0, 0.1) and every normalization scale by 1 + N(0, 0.1).
fn randomize_parameters(varmap: &VarMap, seed: u64) -> Result<(), ModelError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(1));
    let normal = rand_distr::Normal::new(0.0, PARAMETER_STD)
        .map_err(|e| ModelError::InvalidInput(format!("invalid parameter distribution: {e}")))?;
    let data = varmap.data().lock().map_err(|_| {
        ModelError::InvalidInput("variable map lock is poisoned by an earlier panic".into())
    })?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();

    for name in names {
        let var = &data[name];
        if var.dims().len() != 1 {
            continue;
        }
        let offset = if name.ends_with(".bias") { 0.0 } else { 1.0 };
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| (offset + normal.sample(&mut rng)) as f32)
            .collect();
        var.set(&Tensor::from_vec(values, var.dims(), var.device())?)?;
    }
    Ok(())
}

fn random_card(
    architecture: &UNetConfig,
    seed: u64,
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
    let channels = (1..=architecture.in_channels)
        .map(|i| ChannelStats {
            name: format!("channel{i}"),
            mean: 0.0,
            std: 1.0,
        })
        .collect();

    Ok(ModelCard {
        format_version: CARD_FORMAT_VERSION,
        architecture: architecture.clone(),
        normalization: Normalization { channels },
        training: TrainingInfo {
            data: "none: random weights for benchmarks, never trained".into(),
            seed,
            loss: LossKind::default(),
            learning_rate: None,
            schedule: Default::default(),
            epochs_run: 0,
            best_epoch: 0,
            training_studies: Vec::new(),
            validation_studies: Vec::new(),
        },
        metrics: serde_json::json!({}),
        created_utc: utc_now(),
        code_version: env!("CARGO_PKG_VERSION").to_string(),
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> UNetConfig {
        UNetConfig {
            in_channels: 2,
            base_width: 4,
            depth: 2,
            ..Default::default()
        }
    }

    #[test]
    fn random_model_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let card = write_random_model(dir.path(), &small(), 3).unwrap();

        let segmenter = crate::load(dir.path()).unwrap();
        assert_eq!(segmenter.card().architecture, card.architecture);
        let x = Tensor::ones((1, 2, 16, 16), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(segmenter.logits(&x).unwrap().dims(), &[1, 3, 16, 16]);
    }

    #[test]
    fn random_model_biases_are_drawn() {
        let dir = tempfile::tempdir().unwrap();
        write_random_model(dir.path(), &small(), 3).unwrap();

        let tensors =
            candle_core::safetensors::load(dir.path().join(WEIGHTS_FILE), &Device::Cpu).unwrap();
        let bias: Vec<f32> = tensors["enc1.conv1.bias"].to_vec1().unwrap();
        assert!(bias.iter().all(|v| *v != 0.0), "{bias:?}");
        let scale: Vec<f32> = tensors["enc1.norm1.weight"].to_vec1().unwrap();
        assert!(scale.iter().all(|v| *v != 1.0), "{scale:?}");
    }

    #[test]
    fn random_model_keeps_existing_card() {
        let dir = tempfile::tempdir().unwrap();
        write_random_model(dir.path(), &small(), 3).unwrap();
        let before = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();

        let second = write_random_model(dir.path(), &small(), 4);
        assert!(second.is_err());
        assert_eq!(std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap(), before);
    }
}
