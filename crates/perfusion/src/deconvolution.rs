//! Block-circulant SVD deconvolution (bSVD and oSVD), vectorised over voxels.
//!
//! The tissue curve is modelled as `c = D k`, with `D` the `L x L` circulant (`L = 2N`, zero
//! padding for delay insensitivity) built from the AIF with Simpson weights and scaled by the
//! frame interval, so `k` (the flow-scaled residue function) is in 1/s. One pseudo-inverse is
//! computed per AIF and applied to blocks of voxel curves as a single matrix product.
//!
//! bSVD drops singular values below `lambda * sigma_max`. oSVD sweeps the truncation from 5 % to
//! 95 % of `sigma_max` in steps of 5 % and keeps, per voxel, the first (lowest) level whose
//! oscillation index `OI = sum_j |k_j - 2 k_(j-1) + k_(j-2)| / (L * max k)` is below the
//! threshold. When no level passes, the 95 % level is used. The 5 % solution comes from one
//! matrix product, and each higher level subtracts the components it drops.

use nalgebra::DMatrix;

use crate::error::PerfusionError;
use crate::params::DeconvolutionMethod;

/// oSVD truncation levels, as fractions of `sigma_max`, from the strongest regularisation down.
const OSVD_LEVELS: [f64; 19] = [
    0.95, 0.90, 0.85, 0.80, 0.75, 0.70, 0.65, 0.60, 0.55, 0.50, 0.45, 0.40, 0.35, 0.30, 0.25, 0.20,
    0.15, 0.10, 0.05,
];

/// Returns the first column of the Simpson-weighted circulant for AIF samples `aif` (length
/// N), padded to `2N`, not yet scaled by the frame interval.
pub fn circulant_column(aif: &[f64]) -> Vec<f64> {
    let n = aif.len();
    let mut column = vec![0.0; 2 * n];
    if n == 0 {
        return column;
    }
    column[0] = aif[0];
    for k in 1..n.saturating_sub(1) {
        column[k] = (aif[k - 1] + 4.0 * aif[k] + aif[k + 1]) / 6.0;
    }
    if n >= 2 {
        column[n - 1] = (aif[n - 2] + 4.0 * aif[n - 1]) / 6.0;
    }
    column[n] = aif[n - 1] / 6.0;
    column
}

/// Returns the `L x L` circulant `D_ij = dt * d_((i - j) mod L)`.
pub fn circulant_matrix(aif: &[f64], dt_s: f64) -> DMatrix<f64> {
    let column = circulant_column(aif);
    let len = column.len();
    DMatrix::from_fn(len, len, |i, j| dt_s * column[(i + len - j) % len])
}

/// Residue maximum, its index in `0..L`, and the weighted tissue area of one voxel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoxelResidue {
    /// Maximum of the residue in 1/s, clipped at 0.
    pub max_k: f32,
    pub argmax: usize,
    /// Sum of the temporally smoothed tissue curve (ΔHU, not multiplied by dt).
    pub area: f32,
}

/// A pseudo-inverse for one AIF, applied to blocks of tissue curves.
#[derive(Debug, Clone)]
pub struct Deconvolver {
    frames: usize,
    len: usize,
    dt_s: f64,
    kind: Kind,
    /// Column sums of the temporal smoothing matrix: `area = weights . c`.
    area_weights: Vec<f32>,
    /// Sum of the smoothed AIF samples.
    aif_area: f64,
}

#[derive(Debug, Clone)]
enum Kind {
    /// `L x N` row-major pseudo-inverse, temporal smoothing included.
    Truncated { pinv: Vec<f32> },
    /// `L x N` pseudo-inverse at the lowest level, `R x N` projection onto its components
    /// divided by their singular values, `R x L` right singular vectors (strongest first), and
    /// per level, from 5 % up, the number of components kept.
    Oscillation {
        pinv: Vec<f32>,
        projection: Vec<f32>,
        basis: Vec<f32>,
        components: usize,
        level_counts: Vec<usize>,
        threshold: f32,
    },
}

impl Deconvolver {
    /// Decomposes the circulant of `aif` (ΔHU per frame) smoothed by `temporal` (N x N).
    pub fn new(
        aif: &[f64],
        dt_s: f64,
        method: DeconvolutionMethod,
        lambda: f64,
        oscillation_index: f64,
        temporal: &DMatrix<f64>,
    ) -> Result<Self, PerfusionError> {
        let frames = aif.len();
        let len = 2 * frames;
        let smoothed_aif = temporal * nalgebra::DVector::from_column_slice(aif);
        let aif_area: f64 = smoothed_aif.iter().sum();
        if !smoothed_aif.iter().all(|v| v.is_finite()) {
            return Err(PerfusionError::DecompositionFailed);
        }
        if !(aif_area > 0.0) {
            return Err(PerfusionError::AifWithoutArea { area_hu: aif_area });
        }

        let matrix = circulant_matrix(smoothed_aif.as_slice(), dt_s);
        let svd = matrix
            .try_svd(true, true, f64::EPSILON, 0)
            .ok_or(PerfusionError::DecompositionFailed)?;
        let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else {
            return Err(PerfusionError::DecompositionFailed);
        };
        let sigma = svd.singular_values;
        let mut order: Vec<usize> = (0..sigma.len()).collect();
        order.sort_by(|&a, &b| sigma[b].total_cmp(&sigma[a]));
        let sigma_max = sigma[order[0]];
        if !(sigma_max > 0.0) {
            return Err(PerfusionError::DecompositionFailed);
        }

        // Only the first N entries of the padded tissue curve are non-zero, so only the first
        // N columns of U^T matter. Multiplying by the smoothing matrix applies it to the raw curve.
        let project = |i: usize| -> Vec<f64> {
            (0..frames)
                .map(|t| {
                    (0..frames)
                        .map(|s| u[(s, i)] * temporal[(s, t)])
                        .sum::<f64>()
                        / sigma[i]
                })
                .collect()
        };

        let kind = match method {
            DeconvolutionMethod::Bsvd => {
                let kept: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&i| sigma[i] >= lambda * sigma_max)
                    .collect();
                let projection: Vec<f32> = kept
                    .iter()
                    .flat_map(|&i| project(i))
                    .map(|x| x as f32)
                    .collect();
                let v_t = &v_t;
                let basis: Vec<f32> = kept
                    .iter()
                    .flat_map(|&i| (0..len).map(move |l| v_t[(i, l)] as f32))
                    .collect();
                Kind::Truncated {
                    pinv: pseudo_inverse(&projection, &basis, kept.len(), len, frames),
                }
            }
            DeconvolutionMethod::Osvd => {
                let floor = OSVD_LEVELS[OSVD_LEVELS.len() - 1] * sigma_max;
                let kept: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&i| sigma[i] >= floor)
                    .collect();
                let projection: Vec<f32> = kept
                    .iter()
                    .flat_map(|&i| project(i))
                    .map(|x| x as f32)
                    .collect();
                let v_t = &v_t;
                let basis: Vec<f32> = kept
                    .iter()
                    .flat_map(|&i| (0..len).map(move |l| v_t[(i, l)] as f32))
                    .collect();
                let level_counts = OSVD_LEVELS
                    .iter()
                    .rev()
                    .map(|&p| kept.iter().filter(|&&i| sigma[i] >= p * sigma_max).count())
                    .collect();
                let (r, pinv) = (
                    kept.len(),
                    pseudo_inverse(&projection, &basis, kept.len(), len, frames),
                );
                Kind::Oscillation {
                    pinv,
                    projection,
                    basis,
                    components: r,
                    level_counts,
                    threshold: oscillation_index as f32,
                }
            }
        };

        let area_weights = (0..frames)
            .map(|t| (0..frames).map(|s| temporal[(s, t)]).sum::<f64>() as f32)
            .collect();
        Ok(Self {
            frames,
            len,
            dt_s,
            kind,
            area_weights,
            aif_area,
        })
    }

    /// Returns the number of frames N each tissue curve must have.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Returns the sum of the smoothed AIF samples (ΔHU), the denominator of the CBV area ratio.
    pub fn aif_area(&self) -> f64 {
        self.aif_area
    }

    /// Converts a residue index in `0..2N` to Tmax in seconds: indices of N and above are
    /// negative delays (tissue before the AIF) and give 0.
    pub fn tmax_s(&self, argmax: usize) -> f64 {
        if argmax < self.frames {
            argmax as f64 * self.dt_s
        } else {
            0.0
        }
    }

    /// Returns the full residue `k` (length 2N, 1/s) of one tissue curve.
    pub fn residue(&self, curve: &[f64]) -> Vec<f64> {
        let block: Vec<f32> = curve.iter().map(|&x| x as f32).collect();
        let mut k = vec![0.0f32; self.len];
        self.residues_into(&block, 1, |_, residue| k.copy_from_slice(residue));
        k.iter().map(|&x| x as f64).collect()
    }

    /// Deconvolves `count` curves stored frame-major in `block` (`block[t * count + j]`).
    pub fn deconvolve_block(&self, block: &[f32], count: usize) -> Vec<VoxelResidue> {
        let mut results = Vec::with_capacity(count);
        self.residues_into(block, count, |j, residue| {
            let (argmax, max_k) =
                residue
                    .iter()
                    .copied()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, v)| {
                        if v > best.1 {
                            (i, v)
                        } else {
                            best
                        }
                    });
            let area = (0..self.frames)
                .map(|t| self.area_weights[t] * block[t * count + j])
                .sum();
            results.push(VoxelResidue {
                max_k: max_k.max(0.0),
                argmax,
                area,
            });
        });
        results
    }

    /// Computes the residue of each curve of `block` and passes it to `visit` in order.
    fn residues_into(&self, block: &[f32], count: usize, mut visit: impl FnMut(usize, &[f32])) {
        let n = self.frames;
        match &self.kind {
            Kind::Truncated { pinv } => {
                let mut out = vec![0.0f32; self.len * count];
                multiply(pinv, self.len, n, block, count, &mut out);
                for j in 0..count {
                    visit(j, &out[j * self.len..(j + 1) * self.len]);
                }
            }
            Kind::Oscillation {
                pinv,
                projection,
                basis,
                components,
                level_counts,
                threshold,
            } => {
                let r = *components;
                let mut full = vec![0.0f32; self.len * count];
                multiply(pinv, self.len, n, block, count, &mut full);
                let mut weights = vec![0.0f32; r * count];
                multiply(projection, r, n, block, count, &mut weights);

                for j in 0..count {
                    let w = &weights[j * r..(j + 1) * r];
                    let k = &mut full[j * self.len..(j + 1) * self.len];
                    let mut kept = r;
                    for (level, &wanted) in level_counts.iter().enumerate() {
                        for c in wanted..kept {
                            let v = &basis[c * self.len..(c + 1) * self.len];
                            for (ki, &vi) in k.iter_mut().zip(v) {
                                *ki -= w[c] * vi;
                            }
                        }
                        kept = wanted;
                        if level + 1 == level_counts.len() || oscillation_index(k) < *threshold {
                            break;
                        }
                    }
                    visit(j, k);
                }
            }
        }
    }
}

/// Returns `basis^T * projection` (`len x frames`, row-major) from `components` rows of each.
fn pseudo_inverse(
    projection: &[f32],
    basis: &[f32],
    components: usize,
    len: usize,
    frames: usize,
) -> Vec<f32> {
    let mut pinv = vec![0.0f64; len * frames];
    for c in 0..components {
        let row = &projection[c * frames..(c + 1) * frames];
        for l in 0..len {
            let v = basis[c * len + l] as f64;
            for t in 0..frames {
                pinv[l * frames + t] += v * row[t] as f64;
            }
        }
    }
    pinv.iter().map(|&x| x as f32).collect()
}

/// Returns the oscillation index of `k`; a residue with no positive value returns infinity.
pub fn oscillation_index(k: &[f32]) -> f32 {
    // Eight independent lanes let the compiler vectorise both reductions.
    let mut lanes_max = [f32::NEG_INFINITY; 8];
    let mut chunks = k.chunks_exact(8);
    for chunk in &mut chunks {
        for (m, &v) in lanes_max.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes_max)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    if !(max > 0.0) {
        return f32::INFINITY;
    }

    let len = k.len();
    if len < 3 {
        return 0.0;
    }
    let (a, b, c) = (&k[..len - 2], &k[1..len - 1], &k[2..]);
    let mut lanes_sum = [0.0f32; 8];
    for (i, ((&x, &y), &z)) in a.iter().zip(b).zip(c).enumerate() {
        lanes_sum[i % 8] += (z - 2.0 * y + x).abs();
    }
    lanes_sum.iter().sum::<f32>() / (len as f32 * max)
}

/// Computes `out = a (rows x inner, row-major) * b (inner x cols, row-major)` and stores the
/// result column by column: `out[j * rows + i]`.
fn multiply(a: &[f32], rows: usize, inner: usize, b: &[f32], cols: usize, out: &mut [f32]) {
    assert!(a.len() >= rows * inner);
    assert!(b.len() >= inner * cols);
    assert!(out.len() >= rows * cols);
    // SAFETY: the asserts above bound every index sgemm touches with these strides:
    // a[i * inner + t], b[t * cols + j] and out[i + j * rows] for i < rows, t < inner, j < cols.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            inner,
            cols,
            1.0,
            a.as_ptr(),
            inner as isize,
            1,
            b.as_ptr(),
            cols as isize,
            1,
            0.0,
            out.as_mut_ptr(),
            1,
            rows as isize,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gamma_aif(frames: usize) -> Vec<f64> {
        (0..frames)
            .map(|i| {
                let s = i as f64 - 4.0;
                if s <= 0.0 {
                    0.0
                } else {
                    400.0 * (s / 4.5).powi(3) * (3.0 - s / 1.5).exp()
                }
            })
            .collect()
    }

    #[test]
    fn circulant_column_uses_simpson_weights() {
        let column = circulant_column(&[6.0, 12.0, 18.0]);
        // d0 = 6; d1 = (6 + 48 + 18) / 6 = 12; d2 = (12 + 72) / 6 = 14; d3 = 18 / 6 = 3.
        assert_eq!(column, vec![6.0, 12.0, 14.0, 3.0, 0.0, 0.0]);
        let matrix = circulant_matrix(&[6.0, 12.0, 18.0], 2.0);
        assert_eq!(matrix[(0, 0)], 12.0);
        assert_eq!(matrix[(1, 0)], 24.0);
        assert_eq!(matrix[(0, 1)], 0.0);
        // (0 - 3) mod 6 = 3, so the entry is dt * d3.
        assert_eq!(matrix[(0, 3)], 6.0);
    }

    #[test]
    fn bsvd_recovers_smooth_residue() {
        // Tissue = D k for a known exponential k; with light truncation k comes back.
        let aif = gamma_aif(40);
        let dt = 1.0;
        let truth: Vec<f64> = (0..80)
            .map(|i| {
                if i < 40 {
                    0.01 * (-(i as f64) / 8.0).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let d = circulant_matrix(&aif, dt);
        let tissue = &d * nalgebra::DVector::from_vec(truth.clone());
        let curve: Vec<f64> = tissue.iter().take(40).copied().collect();

        let identity = DMatrix::identity(40, 40);
        let deconvolver =
            Deconvolver::new(&aif, dt, DeconvolutionMethod::Bsvd, 0.02, 0.035, &identity).unwrap();
        let k = deconvolver.residue(&curve);

        // Truncation smooths the peak at t = 0 a little, so the maximum is slightly low.
        let max = k.iter().copied().fold(f64::MIN, f64::max);
        assert!(max / 0.01 > 0.85, "max k {max}");
        assert!(max / 0.01 < 1.02, "max k {max}");
    }

    #[test]
    fn bsvd_matches_explicit_pseudo_inverse() {
        let aif = gamma_aif(20);
        let curve: Vec<f64> = (0..20)
            .map(|i| (i as f64 * 0.3).sin().abs() * 10.0)
            .collect();
        let identity = DMatrix::identity(20, 20);
        let deconvolver =
            Deconvolver::new(&aif, 1.5, DeconvolutionMethod::Bsvd, 0.1, 0.035, &identity).unwrap();
        let k = deconvolver.residue(&curve);

        let d = circulant_matrix(&aif, 1.5);
        let pinv = d
            .clone()
            .pseudo_inverse(0.1 * d.clone().singular_values().max())
            .unwrap();
        let mut padded = curve.clone();
        padded.resize(40, 0.0);
        let expected = pinv * nalgebra::DVector::from_vec(padded);
        for (i, (&a, &b)) in k.iter().zip(expected.iter()).enumerate() {
            assert!(
                (a - b).abs() < 1e-4 * expected.amax().max(1e-9),
                "index {i}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn block_results_match_single_curves() {
        let aif = gamma_aif(30);
        let identity = DMatrix::identity(30, 30);
        let smoothing = crate::denoise::temporal_matrix(30, 0.5);
        for (method, matrix) in [
            (DeconvolutionMethod::Bsvd, &identity),
            (DeconvolutionMethod::Osvd, &smoothing),
        ] {
            let deconvolver = Deconvolver::new(&aif, 1.0, method, 0.1, 0.035, matrix).unwrap();
            let curves: Vec<Vec<f64>> = (0..3)
                .map(|j| aif.iter().map(|a| a * 0.02 * (j + 1) as f64).collect())
                .collect();
            let mut block = vec![0.0f32; 30 * 3];
            for (j, curve) in curves.iter().enumerate() {
                for t in 0..30 {
                    block[t * 3 + j] = curve[t] as f32;
                }
            }
            let results = deconvolver.deconvolve_block(&block, 3);
            for (j, curve) in curves.iter().enumerate() {
                let k = deconvolver.residue(curve);
                let max = k.iter().copied().fold(f64::MIN, f64::max);
                assert!((results[j].max_k as f64 - max).abs() < 1e-6);
            }
            // Linear in the curve scale: voxel 3 has three times the residue of voxel 1.
            assert!((results[2].max_k / results[0].max_k - 3.0).abs() < 1e-3);
        }
    }

    #[test]
    fn oscillation_index_of_line_and_zigzag() {
        assert_eq!(oscillation_index(&[1.0, 2.0, 3.0, 4.0]), 0.0);
        // Second differences of 0, 1, 0, 1: |0 - 2 + 0| = 2 and |1 - 0 + 1| = 2; OI = 4 / (4 * 1).
        assert_eq!(oscillation_index(&[0.0, 1.0, 0.0, 1.0]), 1.0);
        assert_eq!(oscillation_index(&[0.0, -1.0]), f32::INFINITY);
    }

    #[test]
    fn negative_aif_area_is_reported() {
        // An AIF whose baseline was taken during the bolus sits below zero on average.
        let aif: Vec<f64> = gamma_aif(20).iter().map(|a| a - 300.0).collect();
        let identity = DMatrix::identity(20, 20);
        let result = Deconvolver::new(&aif, 1.0, DeconvolutionMethod::Osvd, 0.1, 0.035, &identity);
        assert!(
            matches!(result, Err(PerfusionError::AifWithoutArea { area_hu }) if area_hu < 0.0),
            "{result:?}"
        );
    }

    #[test]
    fn tmax_wraps_negative_delays() {
        let identity = DMatrix::identity(10, 10);
        let deconvolver = Deconvolver::new(
            &gamma_aif(10),
            2.0,
            DeconvolutionMethod::Bsvd,
            0.1,
            0.035,
            &identity,
        )
        .unwrap();
        assert_eq!(deconvolver.tmax_s(3), 6.0);
        assert_eq!(deconvolver.tmax_s(15), 0.0);
    }
}
