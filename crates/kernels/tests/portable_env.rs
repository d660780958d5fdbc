//! The `PENUMBRA_KERNELS_PORTABLE` switch, in its own test binary because the path is read once
//! per process.

use candle_core::{Device, Tensor};
use penumbra_kernels::{conv3x3, KernelPath, PORTABLE_ENV};

#[test]
fn env_switch_selects_portable_path() {
    std::env::set_var(PORTABLE_ENV, "1");
    assert_eq!(KernelPath::from_env(), KernelPath::Portable);

    // The default entry points now run the portable loops, which must still match candle.
    let values: Vec<f32> = (0..2 * 3 * 5 * 4).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
    let x = Tensor::from_vec(values, (2, 3, 5, 4), &Device::Cpu).unwrap();
    let weights: Vec<f32> = (0..4 * 3 * 9).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
    let w = Tensor::from_vec(weights, (4, 3, 3, 3), &Device::Cpu).unwrap();

    let ours = conv3x3(&x, &w, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let reference = x.conv2d(&w, 1, 1, 1, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    // Small integers make every partial sum exact in f32, so the results must be equal.
    assert_eq!(ours, reference);
}
