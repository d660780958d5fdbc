//! Spatially correlated Gaussian image noise and the separable Gaussian blur it uses.

use ndarray::{Array3, ArrayViewMut3, Axis};
use rand::Rng;
use rand_distr::StandardNormal;

/// In-plane standard deviation of the noise correlation kernel in pixels.
pub const NOISE_CORRELATION_PX: f64 = 0.85;

/// Returns the normalised 1-D Gaussian kernel of `sigma` samples, truncated at 3 sigma.
pub fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    if sigma <= 1e-6 {
        return vec![1.0];
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let mut kernel: Vec<f64> = (-radius..=radius).map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp()).collect();
    let sum: f64 = kernel.iter().sum();
    for k in &mut kernel {
        *k /= sum;
    }
    kernel
}

/// Blurs `volume` along `axis` with a Gaussian of `sigma` samples; values beyond the edges count
/// as 0.
pub fn gaussian_blur_axis(volume: &mut Array3<f32>, axis: usize, sigma: f64) {
    blur_view(volume.view_mut(), axis, &gaussian_kernel(sigma));
}

fn blur_view(mut volume: ArrayViewMut3<f32>, axis: usize, kernel: &[f64]) {
    if kernel.len() == 1 {
        return;
    }
    let radius = (kernel.len() / 2) as isize;
    let mut line = Vec::new();
    for mut lane in volume.lanes_mut(Axis(axis)) {
        line.clear();
        line.extend(lane.iter().map(|&v| v as f64));
        let n = line.len() as isize;
        for (i, out) in lane.iter_mut().enumerate() {
            let mut sum = 0.0;
            for (k, weight) in kernel.iter().enumerate() {
                let j = i as isize + k as isize - radius;
                if (0..n).contains(&j) {
                    sum += weight * line[j as usize];
                }
            }
            *out = sum as f32;
        }
    }
}

/// Returns one frame `(z, y, x)` of noise with standard deviation `sd_hu`: white Gaussian noise
/// blurred in plane by [`NOISE_CORRELATION_PX`] and rescaled by the kernel's norm. Slices are
/// independent, as for 5 mm reconstructions.
pub fn correlated_noise(shape: [usize; 3], sd_hu: f64, rng: &mut impl Rng) -> Array3<f32> {
    let kernel = gaussian_kernel(NOISE_CORRELATION_PX);

    // A 2-D separable kernel's sum of squares is the square of the 1-D sum of squares.
    let norm = kernel.iter().map(|k| k * k).sum::<f64>();
    let scaled: Vec<f32> = kernel.iter().map(|k| (k * (sd_hu / norm).sqrt()) as f32).collect();

    let [nz, ny, nx] = shape;
    let mut noise = vec![0f32; nz * ny * nx];
    let mut scratch = vec![0f32; ny * nx];
    for plane in noise.chunks_exact_mut(ny * nx) {
        for value in scratch.iter_mut() {
            *value = rng.sample(StandardNormal);
        }
        blur_rows(&scratch, plane, nx, &scaled);
        scratch.copy_from_slice(plane);
        blur_columns(&scratch, plane, nx, &scaled);
    }
    Array3::from_shape_vec(shape, noise).unwrap_or_else(|_| Array3::zeros(shape))
}

/// Convolves each row of the row-major plane `input` (rows of `width`) with `kernel`, zero
/// padded, into `output`.
fn blur_rows(input: &[f32], output: &mut [f32], width: usize, kernel: &[f32]) {
    let radius = kernel.len() / 2;
    for (row_in, row_out) in input.chunks_exact(width).zip(output.chunks_exact_mut(width)) {
        for (x, out) in row_out.iter_mut().enumerate() {
            let mut sum = 0.0;
            if x >= radius && x + radius < width {
                for (k, weight) in kernel.iter().enumerate() {
                    sum += weight * row_in[x + k - radius];
                }
            } else {
                for (k, weight) in kernel.iter().enumerate() {
                    if let Some(&v) = (x + k).checked_sub(radius).and_then(|j| row_in.get(j)) {
                        sum += weight * v;
                    }
                }
            }
            *out = sum;
        }
    }
}

/// Convolves each column of the row-major plane `input` with `kernel`, zero padded.
fn blur_columns(input: &[f32], output: &mut [f32], width: usize, kernel: &[f32]) {
    let height = input.len() / width;
    let radius = kernel.len() / 2;
    output.fill(0.0);
    for (k, &weight) in kernel.iter().enumerate() {
        // Output row y takes input row y + k - radius.
        for y in 0..height {
            let Some(source) = (y + k).checked_sub(radius).filter(|&j| j < height) else {
                continue;
            };
            let row_in = &input[source * width..(source + 1) * width];
            let row_out = &mut output[y * width..(y + 1) * width];
            for (out, &v) in row_out.iter_mut().zip(row_in) {
                *out += weight * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn blur_keeps_mass_inside() {
        let mut volume = Array3::zeros([1, 1, 41]);
        volume[[0, 0, 20]] = 1.0;
        gaussian_blur_axis(&mut volume, 2, 2.0);
        let sum: f32 = volume.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        assert!(volume[[0, 0, 20]] > volume[[0, 0, 22]]);
    }

    #[test]
    fn noise_sd_matches_target() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noise = correlated_noise([4, 96, 96], 8.4, &mut rng);
        // Interior only: the zero padding lowers the SD within 3 pixels of the edge.
        let interior = noise.slice(ndarray::s![.., 4..92, 4..92]);
        let n = interior.len() as f64;
        let mean = interior.iter().map(|&v| v as f64).sum::<f64>() / n;
        let sd = (interior.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((sd / 8.4 - 1.0).abs() < 0.05, "{sd}");
        assert!(mean.abs() < 0.5, "{mean}");
    }

    #[test]
    fn noise_is_correlated_between_neighbours() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let noise = correlated_noise([1, 64, 64], 1.0, &mut rng);
        let mut product = 0.0;
        let mut count = 0.0;
        for y in 4..60 {
            for x in 4..59 {
                product += (noise[[0, y, x]] * noise[[0, y, x + 1]]) as f64;
                count += 1.0;
            }
        }
        // Gaussian correlation of sigma 0.85 px: neighbour correlation exp(-1 / (4 sigma^2)) = 0.71.
        let correlation = product / count;
        assert!((correlation - 0.71).abs() < 0.08, "{correlation}");
    }
}
