//! Agreement of the inference max pooling with candle's `max_pool2d(2)`. Both pick one of the
//! input values, so the results must be equal.

mod common;

use candle_core::Var;
use penumbra_kernels::max_pool2x2_inference;

/// Returns a tensor of deterministic values in [-1, 1).
fn random_tensor(dims: &[usize], seed: u64) -> candle_core::Tensor {
    common::random_tensor(dims, seed, 0.0)
}

#[test]
fn max_pool_matches_candle() {
    // Odd heights and widths drop their last row or column in both implementations.
    for (seed, dims) in [[1, 1, 2, 2], [2, 3, 7, 9], [1, 16, 32, 32], [3, 5, 4, 11]]
        .iter()
        .enumerate()
    {
        let x = random_tensor(dims, seed as u64 + 1);
        let ours = max_pool2x2_inference(&x).unwrap();
        let reference = x.max_pool2d(2).unwrap();
        assert_eq!(ours.dims(), reference.dims(), "{dims:?}");
        let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let reference = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(ours, reference, "{dims:?}");
    }
}

#[test]
fn max_pool_of_non_contiguous_input() {
    let x = random_tensor(&[1, 4, 6, 8], 11).transpose(2, 3).unwrap();
    let ours = max_pool2x2_inference(&x).unwrap();
    let reference = x.contiguous().unwrap().max_pool2d(2).unwrap();
    let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let reference = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(ours, reference);
}

#[test]
fn max_pool_rejects_bad_operands() {
    let flat = random_tensor(&[4, 6, 8], 21);
    assert!(max_pool2x2_inference(&flat).is_err());

    // A tensor that tracks a gradient needs a backward pass, which this op does not have.
    let variable = Var::from_tensor(&random_tensor(&[1, 2, 4, 4], 22)).unwrap();
    assert!(max_pool2x2_inference(variable.as_tensor()).is_err());
}

#[test]
fn max_pool_of_single_row_is_empty() {
    let x = random_tensor(&[2, 3, 1, 6], 31);
    let y = max_pool2x2_inference(&x).unwrap();
    assert_eq!(y.dims(), &[2, 3, 0, 3]);
}
