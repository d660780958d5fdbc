//! Test inputs shared by the agreement tests of the normalization and pooling ops.

use candle_core::{Device, Tensor};

/// Returns a tensor of deterministic values in [-1, 1) from a 64-bit xorshift generator,
/// shifted by `offset`.
pub fn random_tensor(dims: &[usize], seed: u64, offset: f32) -> Tensor {
    let count: usize = dims.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0 + offset
        })
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
}
