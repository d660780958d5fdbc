//! `penumbra bench infer` and `penumbra bench train-step`: time U-Net inference per slice, or
//! one AdamW training step, and print one JSON line.
//!
//! The input is fixed-seed standard normal noise of the card's channels at 256x256, which is
//! what normalized perfusion maps look like to the network. Only the forward pass to logits is
//! timed: no normalization, softmax or copies out of the tensor. `--dump-io` writes the input and
//! the logits as `.npy` files so that another runtime (see `benches/onnx/run.sh`) can check that
//! it computes the same function before its timing is compared.
//!
//! The training step is the one `penumbra train` runs: forward pass on a batch of patches,
//! softmax, the card's loss against one-hot labels, backward pass and AdamW update. Patches and
//! labels are seeded noise, and the weights are re-initialized from the seed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use clap::{Subcommand, ValueEnum};
use penumbra_model::random::write_random_model;
use penumbra_model::unet::init_weights;
use penumbra_model::{Kernels, ModelCard, Norm, Segmenter, UNet, UNetConfig, MODEL_SIZE};
use rand::SeedableRng;
use rand_distr::Distribution;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time the U-Net forward pass per slice and print one JSON line.
    Infer(InferArgs),
    /// Time one training step (forward, loss, backward, AdamW) and print one JSON line.
    TrainStep(TrainStepArgs),
}

/// Convolution kernels offered on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelChoice {
    /// penumbra-kernels: tiled GEMM convolutions with fused bias.
    Fast,
    /// candle's own `conv2d` and `conv_transpose2d`.
    Candle,
}

#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// Model folder with `card.json` and `model.safetensors`. With `--random-weights` the
    /// random model is written here first; the folder must not contain a card yet.
    #[arg(long)]
    pub model: PathBuf,
    /// Slices per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = KernelChoice::Fast)]
    pub kernels: KernelChoice,
    /// Timed forward passes, after the warm-up passes.
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Untimed forward passes before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Threads of the inference pool. candle's own matrix products also read
    /// `RAYON_NUM_THREADS`, which defaults to the number of CPUs.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seed of the input noise (and of the weights with `--random-weights`).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Folder to write `input.npy` (the input batch) and `output.npy` (its logits) into.
    #[arg(long)]
    pub dump_io: Option<PathBuf>,
    /// Write an untrained model with seeded random weights into `--model` first.
    #[arg(long)]
    pub random_weights: bool,
    /// Base width of the random model (channels of the first level).
    #[arg(long, default_value_t = 16, requires = "random_weights")]
    pub width: usize,
    /// Levels of the random model.
    #[arg(long, default_value_t = 4, requires = "random_weights")]
    pub depth: usize,
    /// Group-normalization groups of the random model.
    #[arg(long, default_value_t = 8, requires = "random_weights")]
    pub groups: usize,
}

impl From<KernelChoice> for Kernels {
    fn from(choice: KernelChoice) -> Self {
        match choice {
            KernelChoice::Fast => Kernels::Fast,
            KernelChoice::Candle => Kernels::Candle,
        }
    }
}

impl KernelChoice {
    fn name(self) -> &'static str {
        match self {
            KernelChoice::Fast => "fast",
            KernelChoice::Candle => "candle",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct TrainStepArgs {
    /// Model folder whose card gives the architecture and the loss; its weights are not used.
    #[arg(long)]
    pub model: PathBuf,
    /// Patches per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Side of the square patches in pixels, as `penumbra train --patch`.
    #[arg(long, default_value_t = 128)]
    pub patch: usize,
    #[arg(long, value_enum, default_value_t = KernelChoice::Fast)]
    pub kernels: KernelChoice,
    /// Timed steps, after the warm-up steps.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Threads of the rayon pool the step runs in.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seed of the weights, patches and labels.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The JSON line printed after a training-step run.
#[derive(Debug, Serialize)]
struct TrainStepReport {
    model: PathBuf,
    base_width: usize,
    depth: usize,
    batch: usize,
    patch: usize,
    kernels: &'static str,
    threads: usize,
    /// Median time of one step.
    ms_per_step: f64,
    /// Fastest step.
    ms_per_step_min: f64,
    reps: usize,
}

/// The JSON line printed after the run.
#[derive(Debug, Serialize)]
struct InferReport {
    model: PathBuf,
    base_width: usize,
    depth: usize,
    batch: usize,
    size: usize,
    kernels: &'static str,
    threads: usize,
    /// Median over the timed passes of the pass time divided by the batch size.
    ms_per_slice: f64,
    /// Fastest timed pass divided by the batch size.
    ms_per_slice_min: f64,
    reps: usize,
}

pub fn run(args: Args) -> ExitCode {
    let result = match args.command {
        BenchCommand::Infer(infer_args) => bench_infer(&infer_args),
        BenchCommand::TrainStep(step_args) => bench_train_step(&step_args),
    };
    super::exit_code("bench", result)
}

fn bench_infer(args: &InferArgs) -> Result<(), String> {
    if args.batch == 0 || args.reps == 0 {
        return Err(format!(
            "--batch and --reps must be at least 1, got {} and {}",
            args.batch, args.reps
        ));
    }
    if args.random_weights {
        let architecture = UNetConfig {
            base_width: args.width,
            depth: args.depth,
            norm: Norm::Group {
                groups: args.groups,
            },
            ..UNetConfig::default()
        };
        write_random_model(&args.model, &architecture, args.seed)
            .map_err(|e| format!("writing the random model failed: {e}"))?;
    }

    let mut segmenter = penumbra_model::load(&args.model)
        .map_err(|e| format!("loading model {} failed: {e}", args.model.display()))?;
    segmenter.set_kernels(args.kernels.into());
    segmenter
        .set_threads(args.threads)
        .map_err(|e| e.to_string())?;

    let channels = segmenter.card().architecture.in_channels;
    let input = noise_input(args.batch, channels, MODEL_SIZE, args.seed)?;

    let mut output = forward(&segmenter, &input)?;
    for _ in 1..args.warmup {
        output = forward(&segmenter, &input)?;
    }
    if let Some(dir) = &args.dump_io {
        dump_io(dir, &input, &output)?;
    }

    let mut pass_ms = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        let start = Instant::now();
        forward(&segmenter, &input)?;
        pass_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }

    let report = report(args, &segmenter, &pass_ms);
    let line = serde_json::to_string(&report)
        .map_err(|e| format!("cannot print the report as JSON: {e}"))?;
    println!("{line}");
    Ok(())
}

fn forward(segmenter: &Segmenter, input: &Tensor) -> Result<Tensor, String> {
    segmenter
        .logits(input)
        .map_err(|e| format!("forward pass failed: {e}"))
}

/// Draws a `(batch, channels, size, size)` tensor of standard normal values seeded by `seed`.
fn noise_input(batch: usize, channels: usize, size: usize, seed: u64) -> Result<Tensor, String> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = rand_distr::StandardNormal;
    let count = batch * channels * size * size;
    let values: Vec<f32> = (0..count).map(|_| normal.sample(&mut rng)).collect();
    Tensor::from_vec(values, (batch, channels, size, size), &Device::Cpu)
        .map_err(|e| format!("building the input tensor failed: {e}"))
}

/// Draws one-hot labels `(batch, classes, size, size)` with a uniform class per pixel.
fn noise_labels(batch: usize, classes: usize, size: usize, seed: u64) -> Result<Tensor, String> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let plane = size * size;
    let mut values = vec![0f32; batch * classes * plane];
    for b in 0..batch {
        for pixel in 0..plane {
            let class = rand::Rng::random_range(&mut rng, 0..classes);
            values[(b * classes + class) * plane + pixel] = 1.0;
        }
    }
    Tensor::from_vec(values, (batch, classes, size, size), &Device::Cpu)
        .map_err(|e| format!("building the label tensor failed: {e}"))
}

/// Returns the median and the minimum of `values`, which must not be empty.
fn median_and_min(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    };
    (median, sorted[0])
}

fn bench_train_step(args: &TrainStepArgs) -> Result<(), String> {
    // The step runs with the allocator setting of `penumbra train`.
    crate::cpu_tuning::keep_freed_memory_for_training();
    if args.batch == 0 || args.reps == 0 || args.threads == 0 {
        return Err(format!(
            "--batch, --reps and --threads must be at least 1, got {}, {} and {}",
            args.batch, args.reps, args.threads
        ));
    }
    let card = ModelCard::read(&args.model)
        .map_err(|e| format!("reading the model card in {} failed: {e}", args.model.display()))?;
    let architecture = &card.architecture;
    let multiple = architecture.size_multiple();
    if args.patch == 0 || !args.patch.is_multiple_of(multiple) {
        return Err(format!(
            "--patch {} must be a positive multiple of {multiple} for a depth-{} U-Net",
            args.patch, architecture.depth
        ));
    }

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut model = UNet::new(architecture, vb).map_err(|e| e.to_string())?;
    init_weights(&varmap, args.seed).map_err(|e| e.to_string())?;
    model.set_kernels(args.kernels.into());
    let mut optimizer = AdamW::new(varmap.all_vars(), ParamsAdamW::default())
        .map_err(|e| format!("creating the AdamW optimizer failed: {e}"))?;

    let x = noise_input(args.batch, architecture.in_channels, args.patch, args.seed)?;
    let target = noise_labels(args.batch, architecture.classes, args.patch, args.seed)?;
    let loss_kind = card.training.loss;
    let mut step = || -> Result<(), candle_core::Error> {
        let probs = candle_nn::ops::softmax(&model.forward(&x)?, 1)?;
        let loss = loss_kind.compute(&probs, &target)?;
        optimizer.backward_step(&loss)
    };

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .map_err(|e| format!("starting {} threads failed: {e}", args.threads))?;
    let step_ms = pool
        .install(|| -> Result<Vec<f64>, candle_core::Error> {
            for _ in 0..args.warmup {
                step()?;
            }
            let mut step_ms = Vec::with_capacity(args.reps);
            for _ in 0..args.reps {
                let start = Instant::now();
                step()?;
                step_ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
            Ok(step_ms)
        })
        .map_err(|e| format!("training step failed: {e}"))?;

    let (median, min) = median_and_min(&step_ms);
    let report = TrainStepReport {
        model: args.model.clone(),
        base_width: architecture.base_width,
        depth: architecture.depth,
        batch: args.batch,
        patch: args.patch,
        kernels: args.kernels.name(),
        threads: args.threads,
        ms_per_step: median,
        ms_per_step_min: min,
        reps: args.reps,
    };
    let line = serde_json::to_string(&report)
        .map_err(|e| format!("cannot print the report as JSON: {e}"))?;
    println!("{line}");
    Ok(())
}

fn report(args: &InferArgs, segmenter: &Segmenter, pass_ms: &[f64]) -> InferReport {
    let (median, min) = median_and_min(pass_ms);
    let batch = args.batch as f64;
    let architecture = &segmenter.card().architecture;

    InferReport {
        model: args.model.clone(),
        base_width: architecture.base_width,
        depth: architecture.depth,
        batch: args.batch,
        size: MODEL_SIZE,
        kernels: args.kernels.name(),
        threads: args.threads,
        ms_per_slice: median / batch,
        ms_per_slice_min: min / batch,
        reps: args.reps,
    }
}

fn dump_io(dir: &Path, input: &Tensor, output: &Tensor) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("creating folder {} failed: {e}", dir.display()))?;
    write_npy(&dir.join("input.npy"), input)?;
    write_npy(&dir.join("output.npy"), output)
}

/// Writes `tensor` as a little-endian `f32` NumPy `.npy` file (format version 1.0, C order).
fn write_npy(path: &Path, tensor: &Tensor) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("writing {} failed: {e}", path.display());
    let values: Vec<f32> = tensor
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(|e| failed(&e))?;
    let shape: Vec<String> = tensor.dims().iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        shape.join(", ")
    );

    // The magic string, version and header length take 10 bytes. Spaces pad the header so
    // that the data starts at a multiple of 64 bytes, and a newline ends it.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');

    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * values.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for value in values {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    let mut file = std::fs::File::create(path).map_err(|e| failed(&e))?;
    file.write_all(&bytes).map_err(|e| failed(&e))
}
