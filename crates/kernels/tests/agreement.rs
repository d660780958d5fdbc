//! Agreement of the kernels with candle's own `conv2d` and `conv_transpose2d`, forward and
//! through autograd, on both kernel paths.
//!
//! Tolerance: every element must satisfy `|ours - candle| <= 1e-4 * max(1, max |candle|)`.
//! Both sides sum the same products in f32, only in a different order, so the expected
//! difference is a few ulps of the largest partial sum.

use candle_core::{DType, Device, Tensor, Var, D};
use penumbra_kernels::{
    conv1x1_with, conv3x3, conv3x3_with, conv_transpose2x2, conv_transpose2x2_with, Activation,
    ConvOptions, KernelPath,
};

const TOLERANCE: f32 = 1e-4;
const PATHS: [KernelPath; 3] = [KernelPath::Simd, KernelPath::Gemm, KernelPath::Portable];

/// Deterministic values in [-1, 1) from a 64-bit xorshift generator.
fn random_values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn random_tensor(dims: &[usize], seed: u64) -> Tensor {
    let count = dims.iter().product();
    Tensor::from_vec(random_values(count, seed), dims, &Device::Cpu).unwrap()
}

/// Asserts elementwise agreement within the stated tolerance.
fn assert_close(ours: &Tensor, reference: &Tensor, what: &str) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let reference = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert!(
            (a - b).abs() <= TOLERANCE * scale,
            "{what}: element {i} is {a}, candle gives {b} (scale {scale})"
        );
    }
}

/// Forward output and gradients of x, w, b for `loss = sum(out * probe)`.
struct Outcome {
    out: Tensor,
    grads: [Tensor; 3],
}

fn run_with_grads(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    probe_seed: u64,
    conv: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
) -> Outcome {
    let (x, w, b) = (
        Var::from_tensor(x).unwrap(),
        Var::from_tensor(w).unwrap(),
        Var::from_tensor(b).unwrap(),
    );
    let out = conv(x.as_tensor(), w.as_tensor(), b.as_tensor());
    let probe = random_tensor(out.dims(), probe_seed);
    let loss = out.mul(&probe).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let grad = |v: &Var| grads.get(v.as_tensor()).expect("missing gradient").clone();
    Outcome {
        grads: [grad(&x), grad(&w), grad(&b)],
        out,
    }
}

fn assert_outcomes_agree(ours: &Outcome, reference: &Outcome, case: &str) {
    assert_close(&ours.out, &reference.out, &format!("{case} output"));
    for (name, (a, b)) in ["input grad", "weight grad", "bias grad"]
        .iter()
        .zip(ours.grads.iter().zip(&reference.grads))
    {
        assert_close(a, b, &format!("{case} {name}"));
    }
}

fn candle_conv(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize, relu: bool) -> Tensor {
    let c_out = w.dim(0).unwrap();
    let out = x
        .conv2d(w, padding, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap())
        .unwrap();
    if relu {
        out.relu().unwrap()
    } else {
        out
    }
}

/// (batch, c_in, c_out, height, width): odd sizes, channel counts off the vector width, 1x1
/// images and a batch larger than the core count.
const SHAPES: [(usize, usize, usize, usize, usize); 6] = [
    (1, 3, 5, 7, 9),
    (2, 17, 5, 33, 31),
    (1, 5, 17, 1, 1),
    (3, 1, 1, 2, 3),
    (1, 16, 16, 16, 16),
    (5, 4, 3, 6, 1),
];

#[test]
fn conv3x3_matches_candle() {
    for (seed, &(n, c_in, c_out, h, w)) in SHAPES.iter().enumerate() {
        let seed = seed as u64 * 10;
        let x = random_tensor(&[n, c_in, h, w], seed + 1);
        let weight = random_tensor(&[c_out, c_in, 3, 3], seed + 2);
        let bias = random_tensor(&[c_out], seed + 3);

        for relu in [false, true] {
            let reference = run_with_grads(&x, &weight, &bias, seed + 4, |x, w, b| {
                candle_conv(x, w, b, 1, relu)
            });
            for path in PATHS {
                let activation = if relu {
                    Activation::Relu
                } else {
                    Activation::Identity
                };
                let options = ConvOptions { activation, path };
                let ours = run_with_grads(&x, &weight, &bias, seed + 4, |x, w, b| {
                    conv3x3_with(x, w, Some(b), options).unwrap()
                });
                assert_outcomes_agree(
                    &ours,
                    &reference,
                    &format!("conv3x3 {:?} relu={relu} {path:?}", (n, c_in, c_out, h, w)),
                );
            }
        }
    }
}

#[test]
fn conv1x1_matches_candle() {
    for (seed, &(n, c_in, c_out, h, w)) in SHAPES.iter().enumerate() {
        let seed = seed as u64 * 10 + 100;
        let x = random_tensor(&[n, c_in, h, w], seed + 1);
        let weight = random_tensor(&[c_out, c_in, 1, 1], seed + 2);
        let bias = random_tensor(&[c_out], seed + 3);

        for relu in [false, true] {
            let reference = run_with_grads(&x, &weight, &bias, seed + 4, |x, w, b| {
                candle_conv(x, w, b, 0, relu)
            });
            for path in PATHS {
                let activation = if relu {
                    Activation::Relu
                } else {
                    Activation::Identity
                };
                let options = ConvOptions { activation, path };
                let ours = run_with_grads(&x, &weight, &bias, seed + 4, |x, w, b| {
                    conv1x1_with(x, w, Some(b), options).unwrap()
                });
                assert_outcomes_agree(
                    &ours,
                    &reference,
                    &format!("conv1x1 {:?} relu={relu} {path:?}", (n, c_in, c_out, h, w)),
                );
            }
        }
    }
}

#[test]
fn conv_transpose2x2_matches_candle() {
    for (seed, &(n, c_in, c_out, h, w)) in SHAPES.iter().enumerate() {
        let seed = seed as u64 * 10 + 200;
        let x = random_tensor(&[n, c_in, h, w], seed + 1);
        let weight = random_tensor(&[c_in, c_out, 2, 2], seed + 2);
        let bias = random_tensor(&[c_out], seed + 3);

        let reference = run_with_grads(&x, &weight, &bias, seed + 4, |x, w, b| {
            let out = x.conv_transpose2d(w, 0, 0, 2, 1).unwrap();
            out.broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap()
        });
        for path in PATHS {
            let ours = run_with_grads(&x, &weight, &bias, seed + 4, |x, w, b| {
                conv_transpose2x2_with(x, w, Some(b), path).unwrap()
            });
            assert_outcomes_agree(
                &ours,
                &reference,
                &format!("transpose2x2 {:?} {path:?}", (n, c_in, c_out, h, w)),
            );
        }
    }
}

#[test]
fn conv3x3_without_bias_matches_candle() {
    let x = random_tensor(&[2, 3, 5, 4], 301);
    let weight = random_tensor(&[6, 3, 3, 3], 302);

    let ours = conv3x3(&x, &weight, None).unwrap();
    let reference = x.conv2d(&weight, 1, 1, 1, 1).unwrap();
    assert_close(&ours, &reference, "conv3x3 without bias");
}

#[test]
fn conv_transpose2x2_hand_example() {
    // One input channel with values [1, 2], one output channel, kernel [[1, 2], [3, 4]], bias 10:
    // each input pixel v becomes the block [[v + 10, 2v + 10], [3v + 10, 4v + 10]].
    let x = Tensor::new(&[[[[1.0f32, 2.0]]]], &Device::Cpu).unwrap();
    let weight = Tensor::new(&[[[[1.0f32, 2.0], [3.0, 4.0]]]], &Device::Cpu).unwrap();
    let bias = Tensor::new(&[10.0f32], &Device::Cpu).unwrap();

    let out = conv_transpose2x2(&x, &weight, Some(&bias)).unwrap();
    let rows = out
        .squeeze(0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![11.0, 12.0, 12.0, 14.0], vec![13.0, 14.0, 16.0, 18.0]]
    );
}

#[test]
fn non_contiguous_input_gives_same_result() {
    let base = random_tensor(&[1, 4, 9, 7], 401);
    let transposed = base.transpose(2, 3).unwrap();
    assert!(!transposed.is_contiguous());
    let weight = random_tensor(&[5, 4, 3, 3], 402);

    let ours = conv3x3(&transposed, &weight, None).unwrap();
    let reference = conv3x3(&transposed.contiguous().unwrap(), &weight, None).unwrap();
    assert_close(&ours, &reference, "transposed view");
}

#[test]
fn wrong_dtype_is_rejected() {
    let x = random_tensor(&[1, 2, 4, 4], 501)
        .to_dtype(DType::F64)
        .unwrap();
    let weight = random_tensor(&[3, 2, 3, 3], 502)
        .to_dtype(DType::F64)
        .unwrap();
    let message = conv3x3(&x, &weight, None).unwrap_err().to_string();
    assert!(message.contains("convert it to f32"), "{message}");
}

#[test]
fn channel_mismatch_is_rejected() {
    let x = random_tensor(&[1, 2, 4, 4], 601);
    let weight = random_tensor(&[3, 5, 3, 3], 602);
    let message = conv3x3(&x, &weight, None).unwrap_err().to_string();
    assert!(
        message.contains("input has 2 channels but the weight expects 5"),
        "{message}"
    );
}

#[test]
fn wrong_kernel_size_is_rejected() {
    let x = random_tensor(&[1, 2, 4, 4], 701);
    let weight = random_tensor(&[3, 2, 5, 5], 702);
    let message = conv3x3(&x, &weight, None).unwrap_err().to_string();
    assert!(
        message.contains("weight has shape [3, 2, 5, 5]"),
        "{message}"
    );
}

#[test]
fn wrong_bias_length_is_rejected() {
    let x = random_tensor(&[1, 2, 4, 4], 801);
    let weight = random_tensor(&[2, 3, 2, 2], 802);
    let bias = random_tensor(&[4], 803);
    let message = conv_transpose2x2(&x, &weight, Some(&bias))
        .unwrap_err()
        .to_string();
    assert!(message.contains("bias has shape [4]"), "{message}");
}

#[test]
fn three_dimensional_input_is_rejected() {
    let x = random_tensor(&[2, 4, 4], 901);
    let weight = random_tensor(&[3, 2, 3, 3], 902);
    let message = conv3x3(&x, &weight, None).unwrap_err().to_string();
    assert!(message.contains("input has shape [2, 4, 4]"), "{message}");
}

#[test]
fn relu_output_is_never_negative() {
    let x = random_tensor(&[1, 3, 8, 8], 1001);
    let weight = random_tensor(&[4, 3, 3, 3], 1002);
    let out = penumbra_kernels::conv3x3_relu(&x, &weight, None).unwrap();
    let min = out
        .flatten_all()
        .unwrap()
        .min(D::Minus1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(min, 0.0);
}

#[test]
fn zero_width_input_empty_output() {
    let x =
        Var::from_tensor(&Tensor::zeros((1, 2, 3, 0), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let weight = Var::from_tensor(&random_tensor(&[4, 2, 3, 3], 1101)).unwrap();

    let out = conv3x3(x.as_tensor(), weight.as_tensor(), None).unwrap();
    assert_eq!(out.dims(), [1, 4, 3, 0]);

    let grads = out.sum_all().unwrap().backward().unwrap();
    let grad_w = grads.get(weight.as_tensor()).unwrap();
    let max = grad_w
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(max, 0.0);
}

#[test]
fn conv3x3_cache_split_matches_candle() {
    // 64 input channels over 64 columns make 36,864 im2col values per row, so the 1 MiB scratch
    // limit splits each 40-row image into several tiles.
    let x = random_tensor(&[2, 64, 40, 64], 1201);
    let weight = random_tensor(&[8, 64, 3, 3], 1202);
    let bias = random_tensor(&[8], 1203);

    let reference = run_with_grads(&x, &weight, &bias, 1204, |x, w, b| {
        candle_conv(x, w, b, 1, true)
    });
    for path in PATHS {
        let options = ConvOptions {
            activation: Activation::Relu,
            path,
        };
        let ours = run_with_grads(&x, &weight, &bias, 1204, |x, w, b| {
            conv3x3_with(x, w, Some(b), options).unwrap()
        });
        assert_outcomes_agree(&ours, &reference, &format!("conv3x3 cache split {path:?}"));
    }
}

#[test]
fn constant_input_gets_no_gradient() {
    let x = random_tensor(&[1, 3, 6, 5], 1301);
    let weight = Var::from_tensor(&random_tensor(&[4, 3, 3, 3], 1302)).unwrap();

    let out = conv3x3(&x, weight.as_tensor(), None).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());

    let reference = x.conv2d(weight.as_tensor(), 1, 1, 1, 1).unwrap();
    let reference_grads = reference.sum_all().unwrap().backward().unwrap();
    let grad_w = grads
        .get(weight.as_tensor())
        .expect("missing weight gradient");
    assert_close(
        grad_w,
        reference_grads.get(weight.as_tensor()).unwrap(),
        "weight grad",
    );
}

#[test]
fn random_shapes_match_candle() {
    // Draws 8 shapes per kind: batch 1-3, channels 1-20, sides 1-24.
    let draws = random_values(8 * 5, 1401);
    for (case, draw) in draws.chunks(5).enumerate() {
        let pick = |value: f32, max: usize| 1 + (((value + 1.0) / 2.0) * max as f32) as usize % max;
        let (n, c_in, c_out) = (pick(draw[0], 3), pick(draw[1], 20), pick(draw[2], 20));
        let (h, w) = (pick(draw[3], 24), pick(draw[4], 24));
        let seed = 1500 + case as u64 * 10;
        let x = random_tensor(&[n, c_in, h, w], seed);
        let bias = random_tensor(&[c_out], seed + 1);
        let shape = (n, c_in, c_out, h, w);

        let weight3 = random_tensor(&[c_out, c_in, 3, 3], seed + 2);
        let reference = run_with_grads(&x, &weight3, &bias, seed + 3, |x, w, b| {
            candle_conv(x, w, b, 1, true)
        });
        let options = ConvOptions {
            activation: Activation::Relu,
            path: KernelPath::Simd,
        };
        let ours = run_with_grads(&x, &weight3, &bias, seed + 3, |x, w, b| {
            conv3x3_with(x, w, Some(b), options).unwrap()
        });
        assert_outcomes_agree(&ours, &reference, &format!("conv3x3 {shape:?}"));

        let weight1 = random_tensor(&[c_out, c_in, 1, 1], seed + 4);
        let reference = run_with_grads(&x, &weight1, &bias, seed + 5, |x, w, b| {
            candle_conv(x, w, b, 0, false)
        });
        let options = ConvOptions {
            activation: Activation::Identity,
            path: KernelPath::Simd,
        };
        let ours = run_with_grads(&x, &weight1, &bias, seed + 5, |x, w, b| {
            conv1x1_with(x, w, Some(b), options).unwrap()
        });
        assert_outcomes_agree(&ours, &reference, &format!("conv1x1 {shape:?}"));

        let weight2 = random_tensor(&[c_in, c_out, 2, 2], seed + 6);
        let reference = run_with_grads(&x, &weight2, &bias, seed + 7, |x, w, b| {
            let out = x.conv_transpose2d(w, 0, 0, 2, 1).unwrap();
            out.broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap()
        });
        let ours = run_with_grads(&x, &weight2, &bias, seed + 7, |x, w, b| {
            conv_transpose2x2_with(x, w, Some(b), KernelPath::Simd).unwrap()
        });
        assert_outcomes_agree(&ours, &reference, &format!("transpose2x2 {shape:?}"));
    }
}
