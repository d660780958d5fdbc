//! Agreement of the fused inference group normalization, and of the trainable one with its
//! gradients, with the same steps written in candle's own tensor ops.
//!
//! Tolerance: every element must satisfy `|ours - candle| <= 1e-4 * max(1, max |candle|)`.
//! Our kernel sums in f32 lanes and f64 blocks while candle sums in f32, so both are a few
//! ulps from the exact value.

mod common;

use candle_core::{Device, Tensor, Var, D};
use common::random_tensor;
use penumbra_kernels::{group_norm, group_norm_inference};

const TOLERANCE: f32 = 1e-4;
const EPS: f64 = 1e-5;

/// Group normalization, scale, shift, residual add and ReLU in candle ops.
fn reference(
    x: &Tensor,
    groups: usize,
    scale: &Tensor,
    shift: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
) -> Tensor {
    let (n, c, h, w) = x.dims4().unwrap();
    let grouped = x.reshape((n, groups, (c / groups) * h * w)).unwrap();
    let mean = grouped.mean_keepdim(D::Minus1).unwrap();
    let centered = grouped.broadcast_sub(&mean).unwrap();
    let variance = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let normed = centered
        .broadcast_div(&(variance + EPS).unwrap().sqrt().unwrap())
        .unwrap()
        .reshape((n, c, h, w))
        .unwrap();
    let mut y = normed
        .broadcast_mul(&scale.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&shift.reshape((1, c, 1, 1)).unwrap())
        .unwrap();
    if let Some(residual) = residual {
        y = (y + residual).unwrap();
    }
    if relu {
        y = y.relu().unwrap();
    }
    y
}

fn assert_close(ours: &Tensor, reference: &Tensor, case: &str) {
    assert_eq!(ours.dims(), reference.dims(), "{case}: shape");
    let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let reference = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= TOLERANCE * scale, "{case}: max difference {worst}, scale {scale}");
}

#[test]
fn group_norm_matches_candle_ops() {
    // Odd planes exercise the remainder of the 16-lane sums, and a plane of 40x40 spans two
    // 1024-value blocks. The offset of 3 checks that a large mean does not swamp the variance.
    for (channels, groups, h, w) in [(8, 4, 17, 13), (8, 2, 40, 40), (6, 6, 5, 7), (4, 1, 3, 3)] {
        let x = random_tensor(&[2, channels, h, w], 1, 3.0);
        let scale = random_tensor(&[channels], 2, 1.0);
        let shift = random_tensor(&[channels], 3, 0.0);
        let residual = random_tensor(&[2, channels, h, w], 4, 0.0);

        for (with_residual, relu) in [(false, false), (false, true), (true, true), (true, false)] {
            let residual = with_residual.then_some(&residual);
            let case = format!("c {channels} groups {groups} {h}x{w} residual {with_residual} relu {relu}");
            let ours = group_norm_inference(&x, groups, EPS, &scale, &shift, residual, relu).unwrap();
            let expected = reference(&x, groups, &scale, &shift, residual, relu);
            assert_close(&ours, &expected, &case);
        }
    }
}

#[test]
fn group_norm_rejects_bad_operands() {
    let x = random_tensor(&[1, 6, 4, 4], 1, 0.0);
    let scale = random_tensor(&[6], 2, 1.0);
    let shift = random_tensor(&[6], 3, 0.0);

    let groups_not_dividing = group_norm_inference(&x, 4, EPS, &scale, &shift, None, true);
    assert!(groups_not_dividing.is_err());

    let short_scale = random_tensor(&[3], 2, 1.0);
    assert!(group_norm_inference(&x, 3, EPS, &short_scale, &shift, None, true).is_err());

    let wrong_residual = random_tensor(&[1, 6, 4, 2], 4, 0.0);
    assert!(group_norm_inference(&x, 3, EPS, &scale, &shift, Some(&wrong_residual), true).is_err());

    // A tensor that tracks a gradient needs a backward pass, which this op does not have.
    let variable = Var::from_tensor(&x).unwrap();
    let tracked = group_norm_inference(variable.as_tensor(), 3, EPS, &scale, &shift, None, true);
    assert!(tracked.is_err());
}

#[test]
fn group_norm_accepts_empty_plane() {
    let x = Tensor::zeros((1, 4, 0, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    let scale = random_tensor(&[4], 2, 1.0);
    let shift = random_tensor(&[4], 3, 0.0);
    let y = group_norm_inference(&x, 2, EPS, &scale, &shift, None, true).unwrap();
    assert_eq!(y.dims(), &[1, 4, 0, 3]);
}

#[test]
fn trainable_group_norm_matches_candle_gradients() {
    for (channels, groups, h, w) in [(8, 4, 17, 13), (8, 2, 40, 40), (6, 6, 5, 7), (4, 1, 3, 3)] {
        let x = Var::from_tensor(&random_tensor(&[2, channels, h, w], 11, 3.0)).unwrap();
        let scale = Var::from_tensor(&random_tensor(&[channels], 12, 1.0)).unwrap();
        let shift = Var::from_tensor(&random_tensor(&[channels], 13, 0.0)).unwrap();
        let probe = random_tensor(&[2, channels, h, w], 14, 0.0);
        let case = format!("c {channels} groups {groups} {h}x{w}");

        let ours = group_norm(x.as_tensor(), groups, EPS, scale.as_tensor(), shift.as_tensor()).unwrap();
        let expected = reference(x.as_tensor(), groups, scale.as_tensor(), shift.as_tensor(), None, false);
        assert_close(&ours, &expected, &format!("{case} output"));

        let ours_grads = ours.mul(&probe).unwrap().sum_all().unwrap().backward().unwrap();
        let expected_grads = expected.mul(&probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, var) in [("input", &x), ("scale", &scale), ("shift", &shift)] {
            let ours = ours_grads.get(var.as_tensor()).expect("missing gradient");
            let expected = expected_grads.get(var.as_tensor()).expect("missing reference gradient");
            assert_close(ours, expected, &format!("{case} {name} gradient"));
        }
    }
}

#[test]
fn trainable_group_norm_rejects_bad_operands() {
    let x = random_tensor(&[1, 6, 4, 4], 1, 0.0);
    let scale = random_tensor(&[6], 2, 1.0);
    let shift = random_tensor(&[6], 3, 0.0);
    assert!(group_norm(&x, 4, EPS, &scale, &shift).is_err());

    let short_shift = random_tensor(&[3], 3, 0.0);
    assert!(group_norm(&x, 3, EPS, &scale, &short_shift).is_err());
}
