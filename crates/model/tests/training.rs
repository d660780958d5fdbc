//! Training, saving, loading and predicting with a tiny U-Net on synthetic blob data.

use ndarray::{Array2, Array3};
use penumbra_model::card::{CARD_FILE, WEIGHTS_FILE};
use penumbra_model::train::{LOSS_CURVE_FILE, STATE_FILE};
use penumbra_model::{
    load, train, Dataset, LearningRateSchedule, LossKind, ModelError, TrainConfig, TrainingSample,
    UNetConfig,
};

const SIZE: usize = 32;

/// Builds a slice with a disc lesion (penumbra) around a smaller disc (core), or none for every
/// third slice. CBF falls and Tmax rises with the class, plus a little deterministic texture.
fn blob_sample(study: usize, slice: usize) -> TrainingSample {
    let centre_y = 10.0 + ((study * 7 + slice * 3) % 12) as f64;
    let centre_x = 10.0 + ((study * 5 + slice * 11) % 12) as f64;
    let radius = if slice % 3 == 2 {
        0.0
    } else {
        5.0 + (slice % 2) as f64 * 2.0
    };
    let mut input = Array3::<f32>::zeros((2, SIZE, SIZE));
    let mut label = Array2::<u8>::zeros((SIZE, SIZE));
    for y in 0..SIZE {
        for x in 0..SIZE {
            let distance = ((y as f64 - centre_y).powi(2) + (x as f64 - centre_x).powi(2)).sqrt();
            let texture = (((y * 31 + x * 17 + study) % 13) as f32) * 0.05;
            let class = if distance < radius * 0.5 {
                2
            } else if distance < radius {
                1
            } else {
                0
            };
            label[[y, x]] = class;
            input[[0, y, x]] = 50.0 - 20.0 * class as f32 + texture;
            input[[1, y, x]] = 2.0 + 4.0 * class as f32 - texture;
        }
    }
    TrainingSample {
        study_id: format!("study-{study}"),
        slice_index: slice,
        input,
        label,
    }
}

fn blob_dataset(studies: usize, slices: usize) -> Dataset {
    let mut dataset = Dataset::new(vec!["cbf".into(), "tmax".into()]).unwrap();
    for study in 0..studies {
        for slice in 0..slices {
            dataset.push(blob_sample(study, slice)).unwrap();
        }
    }
    dataset
}

fn tiny_architecture() -> UNetConfig {
    UNetConfig {
        in_channels: 2,
        base_width: 4,
        depth: 2,
        ..Default::default()
    }
}

fn quick_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 4,
        learning_rate: 1e-2,
        patience: 100,
        patch_size: 0,
        seed: 11,
        validation_fraction: 0.25,
        data_description: "synthetic blobs".into(),
        ..Default::default()
    }
}

#[test]
fn training_lowers_the_loss() {
    let dataset = blob_dataset(4, 4);
    let outcome = train(&tiny_architecture(), &dataset, &quick_config(6)).unwrap();
    let first = &outcome.history[0];
    let last = outcome.history.last().unwrap();
    assert_eq!(outcome.history.len(), 6);
    assert!(
        last.training_loss < first.training_loss * 0.9,
        "training loss {} -> {}",
        first.training_loss,
        last.training_loss
    );
    assert!(
        last.validation_loss < first.validation_loss,
        "validation loss {} -> {}",
        first.validation_loss,
        last.validation_loss
    );
}

/// Returns every weight of a trained model, in name order.
fn flat_weights(outcome: &penumbra_model::TrainOutcome) -> Vec<f32> {
    let data = outcome.varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|name| data[name].flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn cosine_schedule_sets_each_epoch_rate() {
    let dataset = blob_dataset(4, 2);
    let cosine = TrainConfig { schedule: LearningRateSchedule::Cosine, ..quick_config(3) };

    let scheduled = train(&tiny_architecture(), &dataset, &cosine).unwrap();
    let constant = train(&tiny_architecture(), &dataset, &quick_config(3)).unwrap();

    // Epochs 1 to 3 of 3 at 1e-2: cos(0), cos(pi/2) and cos(pi) between 1e-2 and 5e-4.
    let rates: Vec<f64> = scheduled.history.iter().map(|epoch| epoch.learning_rate.unwrap()).collect();
    for (rate, expected) in rates.iter().zip([1e-2, 5.25e-3, 5e-4]) {
        assert!((rate - expected).abs() < 1e-12, "rates {rates:?}");
    }
    assert_eq!(scheduled.card.training.schedule, LearningRateSchedule::Cosine);
    assert_eq!(scheduled.card.training.learning_rate, Some(1e-2));
    assert_eq!(constant.history[2].learning_rate, Some(1e-2));
    assert_eq!(scheduled.history[0].training_loss, constant.history[0].training_loss);
    assert_ne!(scheduled.history[1].training_loss, constant.history[1].training_loss, "the schedule did not change the steps");
}

#[test]
fn same_seed_gives_same_weights() {
    let dataset = blob_dataset(4, 2);
    let weights = |seed: u64| {
        let config = TrainConfig {
            seed,
            patch_size: 16,
            ..quick_config(2)
        };
        flat_weights(&train(&tiny_architecture(), &dataset, &config).unwrap())
    };
    let first = weights(3);
    assert_eq!(first, weights(3));
    assert_ne!(first, weights(4));
}

#[test]
fn early_stopping_and_checkpoints() {
    let dataset = blob_dataset(4, 2);
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig {
        // At a learning rate of 1e-12 the validation loss moves far less than min_delta, so
        // epoch 1 sets the best loss, epochs 2 and 3 fail to beat it, and patience 2 stops there.
        learning_rate: 1e-12,
        patience: 2,
        checkpoint_dir: Some(dir.path().to_path_buf()),
        ..quick_config(10)
    };
    let outcome = train(&tiny_architecture(), &dataset, &config).unwrap();
    assert!(outcome.stopped_early);
    assert_eq!(outcome.history.len(), 3);
    assert_eq!(outcome.card.training.best_epoch, 1);
    for file in [
        "epoch-0001.safetensors",
        "epoch-0003.safetensors",
        "best.safetensors",
        STATE_FILE,
        LOSS_CURVE_FILE,
    ] {
        assert!(dir.path().join(file).exists(), "missing {file}");
    }

    // Resuming a finished run trains no further epochs.
    let resumed = train(&tiny_architecture(), &dataset, &config).unwrap();
    assert_eq!(resumed.history, outcome.history);
}

#[test]
fn resume_continues_from_latest_epoch() {
    let dataset = blob_dataset(4, 2);
    let dir = tempfile::tempdir().unwrap();
    let first = TrainConfig {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        ..quick_config(1)
    };
    train(&tiny_architecture(), &dataset, &first).unwrap();
    let second = TrainConfig { epochs: 2, ..first };
    let outcome = train(&tiny_architecture(), &dataset, &second).unwrap();
    assert_eq!(outcome.history.len(), 2);
    assert_eq!(outcome.history[0].epoch, 1);
    assert!(dir.path().join("epoch-0002.safetensors").exists());
}

#[test]
fn save_load_round_trip_predicts_the_same() {
    let dataset = blob_dataset(4, 2);
    let outcome = train(&tiny_architecture(), &dataset, &quick_config(2)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    outcome.save(dir.path()).unwrap();

    let loaded = load(dir.path()).unwrap();
    assert_eq!(loaded.card(), &outcome.card);
    loaded
        .require_channels(&["cbf".into(), "tmax".into()])
        .unwrap();

    let sample = &dataset.samples()[0];
    let input = sample.input.clone().insert_axis(ndarray::Axis(0));
    let fresh = outcome
        .segmenter()
        .unwrap()
        .predict(&input, 1, false)
        .unwrap();
    let reloaded = loaded.predict(&input, 1, false).unwrap();
    assert_eq!(fresh.dim(), (1, 3, SIZE, SIZE));
    assert_eq!(fresh, reloaded);
    let sums_ok = reloaded
        .sum_axis(ndarray::Axis(1))
        .iter()
        .all(|s| (s - 1.0).abs() < 1e-4);
    assert!(sums_ok, "softmax probabilities sum to 1");

    // Flip averaging of a left-right mirrored input mirrors the output.
    let mirrored = input.slice(ndarray::s![.., .., .., ..;-1]).to_owned();
    let tta = loaded.predict(&input, 2, true).unwrap();
    let tta_mirrored = loaded.predict(&mirrored, 2, true).unwrap();
    let back = tta_mirrored
        .slice(ndarray::s![.., .., .., ..;-1])
        .to_owned();
    assert!(tta
        .iter()
        .zip(back.iter())
        .all(|(a, b)| (a - b).abs() < 1e-5));
}

#[test]
fn mismatched_card_is_a_clear_error() {
    let dataset = blob_dataset(4, 2);
    let outcome = train(&tiny_architecture(), &dataset, &quick_config(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    outcome.save(dir.path()).unwrap();

    // A card claiming a wider network than the weights contain.
    let mut card = outcome.card.clone();
    card.architecture.base_width = 8;
    card.write(dir.path()).unwrap();
    let error = load(dir.path()).unwrap_err();
    assert!(matches!(error, ModelError::CardMismatch { .. }), "{error}");
    assert!(error.to_string().contains("shape"), "{error}");

    // A card with a different channel count than its normalization statistics.
    let mut card = outcome.card.clone();
    card.architecture.in_channels = 4;
    card.write(dir.path()).unwrap();
    assert!(matches!(
        load(dir.path()).unwrap_err(),
        ModelError::Card { .. }
    ));

    // The right card loads, but configured channels in another order are rejected.
    outcome.card.write(dir.path()).unwrap();
    let segmenter = load(dir.path()).unwrap();
    let error = segmenter
        .require_channels(&["tmax".into(), "cbf".into()])
        .unwrap_err();
    assert!(matches!(error, ModelError::ChannelMismatch { .. }));
    assert!(error.to_string().contains("tmax"), "{error}");

    // Missing weights name the file.
    std::fs::remove_file(dir.path().join(WEIGHTS_FILE)).unwrap();
    let error = load(dir.path()).unwrap_err().to_string();
    assert!(error.contains(WEIGHTS_FILE), "{error}");
    std::fs::remove_file(dir.path().join(CARD_FILE)).unwrap();
    assert!(matches!(
        load(dir.path()).unwrap_err(),
        ModelError::Io { .. }
    ));
}

#[test]
fn segment_returns_native_grid() {
    let dataset = blob_dataset(4, 3);
    let outcome = train(&tiny_architecture(), &dataset, &quick_config(1)).unwrap();
    let segmenter = outcome.segmenter().unwrap();

    // Three slices of a non-square 40x24 grid with 2 x 1 mm pixels, channels first.
    let channels = ndarray::Array4::from_shape_fn((2, 3, 40, 24), |(c, z, y, x)| {
        dataset.samples()[z].input[[c, y % SIZE, x]]
    });
    let segmentation = segmenter.segment(&channels, [5.0, 2.0, 1.0], 2, false).unwrap();
    assert_eq!(segmentation.probabilities.dim(), (3, 3, 40, 24));
    assert_eq!(segmentation.labels.dim(), (3, 40, 24));
    for lane in segmentation.probabilities.lanes(ndarray::Axis(0)) {
        assert!((lane.sum() - 1.0).abs() < 1e-4, "probabilities sum to 1");
    }
    let first = segmentation.probabilities.index_axis(ndarray::Axis(1), 0);
    let picked = first.index_axis(ndarray::Axis(1), 5);
    let label = segmentation.labels[[0, 5, 7]] as usize;
    assert!(
        picked.column(7).iter().all(|&p| p <= picked[[label, 7]]),
        "label is the argmax"
    );
}

#[test]
fn every_loss_kind_trains() {
    let dataset = blob_dataset(4, 2);
    let kinds = [
        LossKind::Tversky {
            alpha: 0.3,
            beta: 0.7,
        },
        LossKind::FocalTversky {
            alpha: 0.3,
            beta: 0.7,
            gamma: 0.75,
        },
        LossKind::Dice,
        LossKind::CrossEntropy,
    ];
    for loss in kinds {
        let config = TrainConfig {
            loss,
            ..quick_config(2)
        };
        let outcome = train(&tiny_architecture(), &dataset, &config).unwrap();
        let first = &outcome.history[0];
        let last = &outcome.history[1];
        assert!(first.training_loss.is_finite(), "{loss:?}: {first:?}");
        assert!(
            last.training_loss < first.training_loss,
            "{loss:?}: {first:?} then {last:?}"
        );
        assert_eq!(outcome.card.training.loss, loss);
    }
}

#[test]
fn thread_pool_gives_same_probabilities() {
    let dataset = blob_dataset(4, 2);
    let outcome = train(&tiny_architecture(), &dataset, &quick_config(1)).unwrap();
    let input = dataset.samples()[1]
        .input
        .clone()
        .insert_axis(ndarray::Axis(0));
    let default_pool = outcome
        .segmenter()
        .unwrap()
        .predict(&input, 1, true)
        .unwrap();

    let mut single = outcome.segmenter().unwrap();
    single.set_threads(1).unwrap();
    assert_eq!(single.predict(&input, 1, true).unwrap(), default_pool);
    assert!(single.set_threads(0).is_err());
}

#[test]
fn predict_rejects_wrong_input() {
    let dataset = blob_dataset(4, 1);
    let outcome = train(&tiny_architecture(), &dataset, &quick_config(1)).unwrap();
    let segmenter = outcome.segmenter().unwrap();
    assert!(segmenter
        .predict(&ndarray::Array4::zeros((1, 3, SIZE, SIZE)), 1, false)
        .is_err());
    assert!(segmenter
        .predict(&ndarray::Array4::zeros((1, 2, 30, 30)), 1, false)
        .is_err());
    assert!(segmenter
        .predict(&ndarray::Array4::zeros((1, 2, SIZE, SIZE)), 0, false)
        .is_err());
}

#[test]
fn decision_thresholds_in_the_folder_pick_the_labels() {
    use penumbra_model::decision::{DecisionThresholds, FitScores, DECISION_FORMAT_VERSION};

    let dataset = blob_dataset(4, 2);
    let outcome = train(&tiny_architecture(), &dataset, &quick_config(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    outcome.save(dir.path()).unwrap();
    assert!(load(dir.path()).unwrap().decision().is_none());

    let channels = ndarray::Array4::from_shape_fn((2, 2, SIZE, SIZE), |(c, z, y, x)| {
        dataset.samples()[z].input[[c, y, x]]
    });
    let argmax = load(dir.path()).unwrap().segment(&channels, [5.0, 1.0, 1.0], 2, false).unwrap();

    // A hypoperfused threshold above every probability leaves only background.
    let scores = FitScores { core: 0.0, penumbra: 0.0, hypoperfused: 0.0 };
    let thresholds = DecisionThresholds {
        format_version: DECISION_FORMAT_VERSION,
        z_sigma_mm: 0.0,
        min_hypoperfused_ml: 0.0,
        hypoperfused: 0.999_999,
        core: 0.5,
        fitted_seed: 4001,
        fitted_studies: 6,
        argmax_scores: scores.clone(),
        fitted_scores: scores,
        fitted_at: "2026-12-05T12:00:00Z".to_string(),
    };
    thresholds.write(dir.path()).unwrap();
    let segmenter = load(dir.path()).unwrap();
    assert_eq!(segmenter.decision(), Some(&thresholds));
    let thresholded = segmenter.segment(&channels, [5.0, 1.0, 1.0], 2, false).unwrap();
    assert_eq!(thresholded.probabilities, argmax.probabilities);
    assert!(argmax.labels.iter().any(|&label| label != 0), "the argmax labels have lesions");
    assert!(thresholded.labels.iter().all(|&label| label == 0));

    // An invalid file fails the load with its path.
    std::fs::write(dir.path().join(penumbra_model::DECISION_FILE), "{}").unwrap();
    let error = load(dir.path()).unwrap_err().to_string();
    assert!(error.contains(penumbra_model::DECISION_FILE), "{error}");
}
