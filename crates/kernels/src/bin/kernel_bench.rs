//! Per-layer throughput of this crate's kernels beside candle's `conv2d` and
//! `conv_transpose2d`, for the layer shapes of a width-16 residual U-Net, plus one
//! forward+backward pass of a small encoder-decoder stack built from each.
//!
//! Usage: `kernel-bench [--size PIXELS] [--batch N] [--reps N]`. The defaults (256, 1, 3) keep a
//! run to about a minute on two idle cores. Each timing is the best of `--reps` runs after one
//! warm-up. Numbers are only meaningful on an otherwise idle machine.

use std::time::{Duration, Instant};

use candle_core::{Device, Result, Tensor, Var};
use penumbra_kernels::{conv1x1, conv3x3, conv3x3_relu, conv_transpose2x2};

/// Layer kinds the U-Net uses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Conv3x3,
    /// 3x3 convolution followed by ReLU, fused in this crate and two ops in candle.
    Conv3x3Relu,
    Conv1x1,
    Transpose2x2,
}

/// One layer: kind, input channels, output channels and input size as a fraction of `--size`.
struct Layer {
    kind: Kind,
    c_in: usize,
    c_out: usize,
    divisor: usize,
}

/// Layers of a width-16 U-Net (16-32-64-128-256): two 3x3 convolutions per level, a 2x2
/// transposed convolution per decoder level, 1x1 residual projections where the channel count
/// changes, and the final 1x1 head with three classes.
fn unet_layers() -> Vec<Layer> {
    let layer = |kind, c_in, c_out, divisor| Layer {
        kind,
        c_in,
        c_out,
        divisor,
    };
    let mut layers = vec![
        layer(Kind::Conv3x3, 4, 16, 1),
        layer(Kind::Conv3x3, 16, 16, 1),
        layer(Kind::Conv1x1, 4, 16, 1),
    ];
    for level in 1..5 {
        let (c_in, c_out, divisor) = (16 << (level - 1), 16 << level, 1 << level);
        layers.push(layer(Kind::Conv3x3, c_in, c_out, divisor));
        layers.push(layer(Kind::Conv3x3, c_out, c_out, divisor));
    }
    for level in (0..4).rev() {
        let (c_in, c_out, divisor) = (16 << (level + 1), 16 << level, 1 << (level + 1));
        layers.push(layer(Kind::Transpose2x2, c_in, c_out, divisor));
        layers.push(layer(Kind::Conv3x3, c_in, c_out, divisor / 2));
    }
    layers.push(layer(Kind::Conv1x1, 16, 3, 1));
    layers
}

struct Options {
    size: usize,
    batch: usize,
    reps: usize,
}

fn parse_options() -> std::result::Result<Options, String> {
    let mut options = Options {
        size: 256,
        batch: 1,
        reps: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("missing value after {flag}"))?;
        let number: usize = value
            .parse()
            .map_err(|_| format!("{flag} must be a positive integer, got {value}"))?;
        match flag.as_str() {
            "--size" if number >= 16 && number.is_multiple_of(16) => options.size = number,
            "--size" => {
                return Err(format!(
                    "--size must be a multiple of 16, at least 16, got {number}"
                ))
            }
            "--batch" if number > 0 => options.batch = number,
            "--reps" if number > 0 => options.reps = number,
            _ => {
                return Err(format!(
                    "unknown option {flag} or zero value; use --size, --batch, --reps"
                ))
            }
        }
    }
    Ok(options)
}

/// Runs `work` once to warm up, then `reps` times, and returns the fastest run.
fn best_time(reps: usize, mut work: impl FnMut() -> Result<()>) -> Result<Duration> {
    work()?;
    let mut best = Duration::MAX;
    for _ in 0..reps {
        let start = Instant::now();
        work()?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

fn gflops(flops: f64, time: Duration) -> f64 {
    flops / time.as_secs_f64() / 1e9
}

fn ours(kind: Kind, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    match kind {
        Kind::Conv3x3 => conv3x3(x, w, Some(b)),
        Kind::Conv3x3Relu => conv3x3_relu(x, w, Some(b)),
        Kind::Conv1x1 => conv1x1(x, w, Some(b)),
        Kind::Transpose2x2 => conv_transpose2x2(x, w, Some(b)),
    }
}

fn candle(kind: Kind, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = match kind {
        Kind::Conv3x3 | Kind::Conv3x3Relu => x.conv2d(w, 1, 1, 1, 1)?,
        Kind::Conv1x1 => x.conv2d(w, 0, 1, 1, 1)?,
        Kind::Transpose2x2 => x.conv_transpose2d(w, 0, 0, 2, 1)?,
    };
    let out = out.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?;
    if kind == Kind::Conv3x3Relu {
        out.relu()
    } else {
        Ok(out)
    }
}

/// Forward time and forward+backward time of one layer through `conv`.
fn time_layer(
    reps: usize,
    (x, w, b): (&Var, &Var, &Var),
    kind: Kind,
    conv: fn(Kind, &Tensor, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<(Duration, Duration)> {
    let forward = best_time(reps, || {
        conv(kind, x.as_tensor(), w.as_tensor(), b.as_tensor()).map(drop)
    })?;
    let training = best_time(reps, || {
        let loss = conv(kind, x.as_tensor(), w.as_tensor(), b.as_tensor())?.sum_all()?;
        loss.backward().map(drop)
    })?;
    Ok((forward, training))
}

fn bench_layers(options: &Options) -> Result<()> {
    println!(
        "kind        c_in c_out  size | fwd GFLOP/s ours candle | fwd+bwd GFLOP/s ours candle"
    );
    let (mut ours_total, mut candle_total) = (Duration::ZERO, Duration::ZERO);

    for layer in unet_layers() {
        let side = options.size / layer.divisor;
        let (w_dims, taps) = match layer.kind {
            Kind::Conv3x3 | Kind::Conv3x3Relu => ((layer.c_out, layer.c_in, 3, 3), 9.0),
            Kind::Conv1x1 => ((layer.c_out, layer.c_in, 1, 1), 1.0),
            Kind::Transpose2x2 => ((layer.c_in, layer.c_out, 2, 2), 4.0),
        };
        let x = Var::randn(
            0f32,
            1f32,
            (options.batch, layer.c_in, side, side),
            &Device::Cpu,
        )?;
        let w = Var::randn(0f32, 0.1f32, w_dims, &Device::Cpu)?;
        let b = Var::randn(0f32, 0.1f32, layer.c_out, &Device::Cpu)?;
        let flops = 2.0 * (options.batch * side * side * layer.c_in * layer.c_out) as f64 * taps;

        let (ours_fwd, ours_train) = time_layer(options.reps, (&x, &w, &b), layer.kind, ours)?;
        let (candle_fwd, candle_train) =
            time_layer(options.reps, (&x, &w, &b), layer.kind, candle)?;
        ours_total += ours_fwd;
        candle_total += candle_fwd;

        println!(
            "{:<11} {:>4} {:>5} {:>5} | {:>16.1} {:>6.1} | {:>20.1} {:>6.1}",
            format!("{:?}", layer.kind),
            layer.c_in,
            layer.c_out,
            side,
            gflops(flops, ours_fwd),
            gflops(flops, candle_fwd),
            gflops(3.0 * flops, ours_train),
            gflops(3.0 * flops, candle_train),
        );
    }
    println!(
        "sum of layer forward times: ours {:.1} ms, candle {:.1} ms",
        ours_total.as_secs_f64() * 1e3,
        candle_total.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Runs a two-level encoder-decoder (conv-ReLU twice, pool, conv-ReLU twice, up, concat,
/// conv-ReLU, 1x1 head) and returns the sum of squared outputs as the loss.
fn stack_loss(
    params: &[Var],
    x: &Tensor,
    conv: fn(Kind, &Tensor, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let p = |i: usize| params[i].as_tensor();
    let skip = conv(Kind::Conv3x3Relu, x, p(0), p(1))?;
    let skip = conv(Kind::Conv3x3Relu, &skip, p(2), p(3))?;
    let down = skip.avg_pool2d(2)?;
    let down = conv(Kind::Conv3x3Relu, &down, p(4), p(5))?;
    let down = conv(Kind::Conv3x3Relu, &down, p(6), p(7))?;
    let up = conv(Kind::Transpose2x2, &down, p(8), p(9))?;
    let merged = Tensor::cat(&[&skip, &up], 1)?;
    let merged = conv(Kind::Conv3x3Relu, &merged, p(10), p(11))?;
    let head = conv(Kind::Conv1x1, &merged, p(12), p(13))?;
    head.sqr()?.sum_all()
}

fn bench_stack(options: &Options) -> Result<()> {
    let shapes: [(&[usize], usize); 7] = [
        (&[16, 4, 3, 3], 16),
        (&[16, 16, 3, 3], 16),
        (&[32, 16, 3, 3], 32),
        (&[32, 32, 3, 3], 32),
        (&[32, 16, 2, 2], 16),
        (&[16, 32, 3, 3], 16),
        (&[3, 16, 1, 1], 3),
    ];
    let mut params = Vec::new();
    for (w_dims, c_out) in shapes {
        params.push(Var::randn(0f32, 0.1f32, w_dims, &Device::Cpu)?);
        params.push(Var::randn(0f32, 0.1f32, c_out, &Device::Cpu)?);
    }
    let x = Tensor::randn(
        0f32,
        1f32,
        (options.batch, 4, options.size, options.size),
        &Device::Cpu,
    )?;

    let ours_time = best_time(options.reps, || {
        stack_loss(&params, &x, ours)?.backward().map(drop)
    })?;
    let candle_time = best_time(options.reps, || {
        stack_loss(&params, &x, candle)?.backward().map(drop)
    })?;
    println!(
        "small stack forward+backward, batch {} at {}x{}: ours {:.1} ms, candle {:.1} ms",
        options.batch,
        options.size,
        options.size,
        ours_time.as_secs_f64() * 1e3,
        candle_time.as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("kernel-bench: {message}");
            std::process::exit(2);
        }
    };
    println!(
        "kernel-bench: size {}, batch {}, best of {} runs, {} rayon threads",
        options.size,
        options.batch,
        options.reps,
        rayon::current_num_threads()
    );
    if let Err(error) = bench_layers(&options).and_then(|()| bench_stack(&options)) {
        eprintln!("kernel-bench: {error}");
        std::process::exit(1);
    }
}
