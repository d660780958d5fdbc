//! The U-Net: residual (or plain) blocks, max-pool down, transposed convolution up, skip
//! concatenation, and a 1x1 convolution to class logits.
//!
//! Variable paths mirror the structure: `enc1` .. `enc{depth}`, `bottleneck`, `up{depth}` ..
//! `up1` with `dec{depth}` .. `dec1`, and `head`. Inside a block: `conv1`, `norm1`, `conv2`,
//! `norm2` and, when the channel count changes in a residual block, `proj`.

use candle_core::{Module, Tensor};
use rayon::prelude::*;
use candle_nn::{
    Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, GroupNorm, VarBuilder,
};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Convolution kernels for the CPU forward and backward passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kernels {
    /// `penumbra-kernels`: cache-tiled GEMM convolutions with fused bias and ReLU.
    #[default]
    Fast,
    /// candle's own `conv2d` and `conv_transpose2d`.
    Candle,
}

/// The normalization layer after each 3x3 convolution.
///
/// Batch normalization is not offered: candle-nn 0.11.1 copies the running mean and variance
/// out of the `VarMap`, so their updates would never reach the saved weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Norm {
    /// Group normalization over `groups` channel groups (capped at the channel count).
    Group { groups: usize },
    /// Instance normalization: one group per channel.
    Instance,
    /// No normalization, for ablations.
    None,
}

/// The architecture: everything needed to rebuild the same variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Input channels, e.g. 4 for CBF, CBV, MTT and Tmax.
    pub in_channels: usize,
    /// Output classes: background, penumbra, core.
    pub classes: usize,
    /// Feature channels of the first encoder level. Each level below doubles them.
    pub base_width: usize,
    /// Encoder levels above the bottleneck. Input height and width must be multiples of
    /// `2^depth`.
    pub depth: usize,
    /// Whether blocks add their input back (residual U-Net) or not (plain U-Net).
    pub residual: bool,
    /// The normalization after each 3x3 convolution.
    pub norm: Norm,
}

impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig {
            in_channels: 4,
            classes: 3,
            base_width: 16,
            depth: 4,
            residual: true,
            norm: Norm::Group { groups: 8 },
        }
    }
}

impl UNetConfig {
    /// Checks that the numbers describe a network that can be built.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.in_channels == 0 || self.classes < 2 || self.base_width == 0 {
            return Err(ModelError::InvalidInput(format!(
                "U-Net needs at least 1 input channel, 2 classes and base width 1; got in_channels {}, classes {}, base_width {}",
                self.in_channels, self.classes, self.base_width
            )));
        }
        if self.depth == 0 || self.depth > 6 {
            return Err(ModelError::InvalidInput(format!(
                "U-Net depth {} must be between 1 and 6",
                self.depth
            )));
        }
        if let Norm::Group { groups: 0 } = self.norm {
            return Err(ModelError::InvalidInput(
                "group normalization needs at least 1 group".into(),
            ));
        }
        Ok(())
    }

    /// Returns the channel count of encoder level `level` (0-based), the bottleneck being
    /// level `depth`.
    pub fn width(&self, level: usize) -> usize {
        self.base_width << level
    }

    /// Returns the factor that input height and width must be multiples of.
    pub fn size_multiple(&self) -> usize {
        1 << self.depth
    }
}

/// Epsilon added to the variance of every normalization layer.
const NORM_EPS: f64 = 1e-5;

/// A group normalization layer with the parameters the fused inference kernel needs, which
/// candle-nn's `GroupNorm` keeps private.
#[derive(Debug, Clone)]
struct NormLayer {
    layer: GroupNorm,
    groups: usize,
    scale: Tensor,
    shift: Tensor,
}

/// Builds the normalization layer for `channels` feature maps.
fn norm_layer(
    norm: Norm,
    channels: usize,
    vb: VarBuilder,
) -> candle_core::Result<Option<NormLayer>> {
    let groups = match norm {
        Norm::None => return Ok(None),
        Norm::Instance => channels,
        // The largest divisor of `channels` not above the requested group count.
        Norm::Group { groups } => (1..=groups.min(channels))
            .rev()
            .find(|g| channels.is_multiple_of(*g))
            .unwrap_or(1),
    };
    let scale = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
    let shift = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
    let layer = GroupNorm::new(scale.clone(), shift.clone(), channels, groups, NORM_EPS)?;
    Ok(Some(NormLayer {
        layer,
        groups,
        scale,
        shift,
    }))
}

/// Two 3x3 convolutions with normalization, plus the input (projected by a 1x1 convolution when
/// the channel count changes) in the residual variant, and a ReLU at the end.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    conv1: Conv2d,
    norm1: Option<NormLayer>,
    conv2: Conv2d,
    norm2: Option<NormLayer>,
    skip: Skip,
    kernels: Kernels,
}

#[derive(Debug, Clone)]
enum Skip {
    None,
    Identity,
    Projection(Conv2d),
}

impl ConvBlock {
    /// Builds a block from `in_channels` to `out_channels` under `vb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        residual: bool,
        norm: Norm,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let same = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv1 = candle_nn::conv2d(in_channels, out_channels, 3, same, vb.pp("conv1"))?;
        let norm1 = norm_layer(norm, out_channels, vb.pp("norm1"))?;
        let conv2 = candle_nn::conv2d(out_channels, out_channels, 3, same, vb.pp("conv2"))?;
        let norm2 = norm_layer(norm, out_channels, vb.pp("norm2"))?;
        let skip = match (residual, in_channels == out_channels) {
            (false, _) => Skip::None,
            (true, true) => Skip::Identity,
            (true, false) => Skip::Projection(candle_nn::conv2d(
                in_channels,
                out_channels,
                1,
                Default::default(),
                vb.pp("proj"),
            )?),
        };
        Ok(ConvBlock {
            conv1,
            norm1,
            conv2,
            norm2,
            skip,
            kernels: Kernels::default(),
        })
    }
}

/// Applies `norm`, adds `residual` and applies ReLU. With the fast kernels, on CPU `f32`
/// tensors that track no gradient (inference), the three steps run as one fused pass. In
/// training the normalization runs as one op with its own backward pass.
fn norm_add_relu(
    norm: &Option<NormLayer>,
    x: Tensor,
    residual: Option<&Tensor>,
    kernels: Kernels,
) -> candle_core::Result<Tensor> {
    let inference = !x.track_op() && !residual.is_some_and(Tensor::track_op);
    let fast = kernels == Kernels::Fast && x.device().is_cpu() && x.dtype() == candle_core::DType::F32;
    if let (Some(norm), true, true) = (norm, fast, inference) {
        return penumbra_kernels::group_norm_inference(
            &x,
            norm.groups,
            NORM_EPS,
            &norm.scale,
            &norm.shift,
            residual,
            true,
        );
    }

    let mut h = match norm {
        Some(norm) if fast => penumbra_kernels::group_norm(
            &x,
            norm.groups,
            NORM_EPS,
            &norm.scale,
            &norm.shift,
        )?,
        Some(norm) => norm.layer.forward(&x)?,
        None => x,
    };
    if let Some(residual) = residual {
        h = (h + residual)?;
    }
    h.relu()
}

/// Applies a stride-1 convolution with `kernels`: 3x3 (padding 1) and 1x1 layers on CPU f32
/// tensors go to `penumbra-kernels`, anything else to candle.
fn conv(layer: &Conv2d, x: &Tensor, kernels: Kernels) -> candle_core::Result<Tensor> {
    let fast = kernels == Kernels::Fast && x.device().is_cpu() && x.dtype() == candle_core::DType::F32;
    if !fast {
        return layer.forward(x);
    }
    match layer.weight().dim(2)? {
        3 => penumbra_kernels::conv3x3(x, layer.weight(), layer.bias()),
        1 => penumbra_kernels::conv1x1(x, layer.weight(), layer.bias()),
        _ => layer.forward(x),
    }
}

/// Applies a 2x2 stride-2 transposed convolution with `kernels`.
fn conv_up(layer: &ConvTranspose2d, x: &Tensor, kernels: Kernels) -> candle_core::Result<Tensor> {
    if kernels == Kernels::Fast && x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        penumbra_kernels::conv_transpose2x2(x, layer.weight(), layer.bias())
    } else {
        layer.forward(x)
    }
}

/// Applies 2x2 max pooling. With the fast kernels, on CPU `f32` tensors that track no gradient
/// (inference), the parallel kernel of `penumbra-kernels` runs in place of candle's.
fn max_pool(x: &Tensor, kernels: Kernels) -> candle_core::Result<Tensor> {
    let fast = kernels == Kernels::Fast && x.device().is_cpu() && x.dtype() == candle_core::DType::F32;
    if fast && !x.track_op() {
        penumbra_kernels::max_pool2x2_inference(x)
    } else {
        x.max_pool2d(2)
    }
}

impl Module for ConvBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = conv(&self.conv1, x, self.kernels)?;
        let h = norm_add_relu(&self.norm1, h, None, self.kernels)?;
        let h = conv(&self.conv2, &h, self.kernels)?;

        let skip = match &self.skip {
            Skip::None => None,
            Skip::Identity => Some(x.clone()),
            Skip::Projection(proj) => Some(conv(proj, x, self.kernels)?),
        };
        norm_add_relu(&self.norm2, h, skip.as_ref(), self.kernels)
    }
}

/// The U-Net. Input `(batch, in_channels, h, w)`, output logits `(batch, classes, h, w)`.
#[derive(Debug, Clone)]
pub struct UNet {
    config: UNetConfig,
    encoders: Vec<ConvBlock>,
    bottleneck: ConvBlock,
    ups: Vec<ConvTranspose2d>,
    decoders: Vec<ConvBlock>,
    head: Conv2d,
    kernels: Kernels,
}

impl UNet {
    /// Builds the network, creating or loading its variables through `vb`.
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self, ModelError> {
        config.validate()?;
        let mut encoders = Vec::with_capacity(config.depth);
        let mut channels = config.in_channels;
        for level in 0..config.depth {
            let width = config.width(level);
            encoders.push(ConvBlock::new(
                channels,
                width,
                config.residual,
                config.norm,
                vb.pp(format!("enc{}", level + 1)),
            )?);
            channels = width;
        }
        let bottleneck = ConvBlock::new(
            channels,
            config.width(config.depth),
            config.residual,
            config.norm,
            vb.pp("bottleneck"),
        )?;

        // Decoder levels are numbered like the encoder level whose skip they consume; they are
        // stored deepest first, in the order the forward pass uses them.
        let up_config = ConvTranspose2dConfig {
            stride: 2,
            ..Default::default()
        };
        let mut ups = Vec::with_capacity(config.depth);
        let mut decoders = Vec::with_capacity(config.depth);
        for level in (0..config.depth).rev() {
            let below = config.width(level + 1);
            let width = config.width(level);
            ups.push(candle_nn::conv_transpose2d(
                below,
                width,
                2,
                up_config,
                vb.pp(format!("up{}", level + 1)),
            )?);
            decoders.push(ConvBlock::new(
                2 * width,
                width,
                config.residual,
                config.norm,
                vb.pp(format!("dec{}", level + 1)),
            )?);
        }
        let head = candle_nn::conv2d(
            config.width(0),
            config.classes,
            1,
            Default::default(),
            vb.pp("head"),
        )?;

        Ok(UNet {
            config: config.clone(),
            encoders,
            bottleneck,
            ups,
            decoders,
            head,
            kernels: Kernels::default(),
        })
    }

    /// Selects the convolution kernels of every layer; the weights stay the same.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
        for block in self.encoders.iter_mut().chain(self.decoders.iter_mut()) {
            block.kernels = kernels;
        }
        self.bottleneck.kernels = kernels;
    }

    /// Returns the convolution kernels in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Returns the architecture this network was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Checks that `(batch, channels, h, w)` fits the network before running it.
    pub fn check_input(&self, dims: &[usize]) -> Result<(), ModelError> {
        let multiple = self.config.size_multiple();
        match dims {
            &[batch, channels, h, w] if batch > 0 && channels == self.config.in_channels && h > 0 && w > 0 && h % multiple == 0 && w % multiple == 0 => Ok(()),
            _ => Err(ModelError::InvalidInput(format!(
                "input shape {dims:?} does not fit the U-Net; expected (batch, {}, h, w) with h and w positive multiples of {multiple}",
                self.config.in_channels
            ))),
        }
    }
}

impl UNet {
    /// Returns whether the head's weight tracks gradients, as it does when the weights are
    /// training variables.
    fn tracks_gradients(&self) -> bool {
        self.head.weight().track_op()
    }

    /// Runs the network on every image of `x` at once.
    fn forward_batch(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut skips = Vec::with_capacity(self.encoders.len());
        let mut h = x.clone();
        for encoder in &self.encoders {
            let features = encoder.forward(&h)?;
            h = max_pool(&features, self.kernels)?;
            skips.push(features);
        }
        h = self.bottleneck.forward(&h)?;

        for ((up, decoder), skip) in self.ups.iter().zip(&self.decoders).zip(skips.iter().rev()) {
            let upsampled = conv_up(up, &h, self.kernels)?;
            h = decoder.forward(&Tensor::cat(&[skip, &upsampled], 1)?)?;
        }
        conv(&self.head, &h, self.kernels)
    }
}

/// Images per forward pass in inference with the fast kernels. One image's largest feature
/// maps (16 channels of 256x256 at width 16, 4 MiB) stay in the L2 and L3 caches between
/// layers, where those of a batch of 8 would not. On a 2-core AVX-512 machine at load average
/// 5, batch 8 ran 1.05-1.5x faster per slice one image at a time than in one pass.
const INFERENCE_CHUNK: usize = 1;

impl Module for UNet {
    /// Runs the network. Without gradients and with the fast kernels, a batch runs in chunks
    /// of `INFERENCE_CHUNK` images, whose feature maps stay in the CPU caches between layers.
    /// The chunks are rayon tasks, so a thread that finishes its part of one layer takes up
    /// another image instead of waiting for the other thread.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let batch = x.dim(0)?;
        let chunk = INFERENCE_CHUNK;
        if self.kernels != Kernels::Fast || self.tracks_gradients() || batch <= chunk {
            return self.forward_batch(x);
        }
        let starts: Vec<usize> = (0..batch).step_by(chunk).collect();
        let parts = starts
            .into_par_iter()
            .map(|start| self.forward_batch(&x.narrow(0, start, chunk.min(batch - start))?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&parts, 0)
    }
}

/// Overwrites every variable in `varmap` with values drawn from a generator seeded by `seed`.
///
/// candle cannot seed its CPU random generator, so this replaces its initialization to make
/// training reproducible. Variables are visited in name order. Convolution weights get He
/// (Kaiming) normal values with standard deviation `sqrt(2 / fan_in)`, transposed convolution
/// weights (`up*`) use the fan-in of their input channels, normalization scales are 1 and every
/// bias is 0.
pub fn init_weights(varmap: &candle_nn::VarMap, seed: u64) -> Result<(), ModelError> {
    use rand::SeedableRng;
    use rand_distr::Distribution;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let data = varmap.data().lock().map_err(|_| {
        ModelError::InvalidInput("variable map lock is poisoned by an earlier panic".into())
    })?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();

    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let count: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; count]
        } else if dims.len() == 1 {
            vec![1.0; count]
        } else {
            let is_transposed = name.split('.').any(|part| part.starts_with("up"));
            let receptive: usize = dims[2..].iter().product();
            let fan_in = if is_transposed {
                dims[0] * receptive
            } else {
                dims[1] * receptive
            };
            let std = (2.0 / fan_in.max(1) as f64).sqrt();
            let normal = rand_distr::Normal::new(0.0, std).map_err(|e| {
                ModelError::InvalidInput(format!("invalid weight standard deviation {std}: {e}"))
            })?;
            (0..count).map(|_| normal.sample(&mut rng) as f32).collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn set(varmap: &VarMap, name: &str, values: Vec<f32>) {
        let data = varmap.data().lock().unwrap();
        let var = &data[name];
        let t = Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap();
        var.set(&t).unwrap();
    }

    #[test]
    fn one_by_one_conv_known_weights() {
        // A 1x1 convolution from 2 channels to 1 with weights (2, -1) and bias 0.5 computes
        // 2 a - b + 0.5 per pixel.
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let conv = candle_nn::conv2d(2, 1, 1, Default::default(), vb.pp("c")).unwrap();
        set(&varmap, "c.weight", vec![2.0, -1.0]);
        set(&varmap, "c.bias", vec![0.5]);
        let x = Tensor::from_vec(
            vec![1f32, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0, 8.0],
            (1, 2, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let y: Vec<f32> = conv
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![2.5, 3.5, 5.5, 0.5]);
    }

    #[test]
    fn zero_weight_residual_block_is_relu() {
        // With every convolution weight and bias zero and no normalization, the block's branch
        // is 0 and the output is ReLU(input).
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let block = ConvBlock::new(2, 2, true, Norm::None, vb).unwrap();
        for var in varmap.all_vars() {
            var.set(&var.zeros_like().unwrap()).unwrap();
        }
        let input = vec![1f32, -2.0, 3.0, -4.0, 0.5, -0.5, 2.0, 0.0];
        let x = Tensor::from_vec(input.clone(), (1, 2, 2, 2), &Device::Cpu).unwrap();
        let y: Vec<f32> = block
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let expected: Vec<f32> = input.iter().map(|v| v.max(0.0)).collect();
        assert_eq!(y, expected);

        // The plain block with the same zero weights outputs 0.
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let plain = ConvBlock::new(2, 2, false, Norm::None, vb).unwrap();
        for var in varmap.all_vars() {
            var.set(&var.zeros_like().unwrap()).unwrap();
        }
        let y: Vec<f32> = plain
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![0.0; 8]);
    }

    #[test]
    fn projection_skip_when_channels_change() {
        // Zero 3x3 weights and a 1x1 projection of ones: output is ReLU(sum over input channels).
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let block = ConvBlock::new(2, 1, true, Norm::None, vb).unwrap();
        for var in varmap.all_vars() {
            var.set(&var.zeros_like().unwrap()).unwrap();
        }
        set(&varmap, "proj.weight", vec![1.0, 1.0]);
        let x = Tensor::from_vec(
            vec![1f32, -2.0, 3.0, -4.0, 0.5, -0.5, 2.0, 5.0],
            (1, 2, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let y: Vec<f32> = block
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![1.5, 0.0, 5.0, 1.0]);
    }

    #[test]
    fn unet_output_shape_and_paths() {
        let config = UNetConfig {
            in_channels: 4,
            base_width: 4,
            depth: 2,
            ..Default::default()
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let unet = UNet::new(&config, vb).unwrap();
        let x = Tensor::zeros((2, 4, 16, 16), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(unet.forward(&x).unwrap().dims(), &[2, 3, 16, 16]);

        let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        for expected in [
            "enc1.conv1.weight",
            "enc2.proj.weight",
            "bottleneck.norm2.weight",
            "up2.weight",
            "up1.bias",
            "dec1.conv2.weight",
            "dec2.proj.weight",
            "head.weight",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "missing {expected} in {names:?}"
            );
        }
        assert!(unet.check_input(&[1, 4, 18, 16]).is_err());
        assert!(unet.check_input(&[1, 3, 16, 16]).is_err());
    }

    #[test]
    fn plain_variant_has_no_projections() {
        let config = UNetConfig {
            in_channels: 3,
            base_width: 2,
            depth: 1,
            residual: false,
            norm: Norm::Instance,
            ..Default::default()
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let unet = UNet::new(&config, vb).unwrap();
        let x = Tensor::ones((1, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(unet.forward(&x).unwrap().dims(), &[1, 3, 8, 8]);
        let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        assert!(names.iter().all(|n| !n.contains("proj")), "{names:?}");
        assert!(names.iter().any(|n| n == "enc1.norm1.weight"));
    }

    #[test]
    fn chunked_inference_matches_candle() {
        // Weights loaded as plain tensors track no gradient, so the fast kernels run the batch of
        // three one image at a time. candle's kernels run it in one pass.
        let config = UNetConfig {
            in_channels: 2,
            base_width: 4,
            depth: 2,
            ..Default::default()
        };
        let varmap = VarMap::new();
        UNet::new(
            &config,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )
        .unwrap();
        init_weights(&varmap, 3).unwrap();
        let tensors: std::collections::HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let mut unet = UNet::new(&config, vb).unwrap();
        assert!(!unet.tracks_gradients());

        let x = Tensor::randn(0f32, 1.0, (3, 2, 16, 12), &Device::Cpu).unwrap();
        let fast: Vec<f32> = unet.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        unet.set_kernels(Kernels::Candle);
        let reference: Vec<f32> = unet.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(fast.len(), 3 * 3 * 16 * 12);
        let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
            assert!((a - b).abs() <= 1e-4 * scale, "element {i}: {a} against {b}");
        }
    }

    #[test]
    fn init_weights_is_seeded() {
        let config = UNetConfig {
            in_channels: 1,
            base_width: 2,
            depth: 1,
            ..Default::default()
        };
        let weights = |seed: u64| {
            let varmap = VarMap::new();
            UNet::new(
                &config,
                VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
            )
            .unwrap();
            init_weights(&varmap, seed).unwrap();
            let data = varmap.data().lock().unwrap();
            data["enc1.conv1.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(weights(5), weights(5));
        assert_ne!(weights(5), weights(6));
    }
}
