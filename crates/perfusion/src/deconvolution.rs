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
    /// Position of the maximum in samples, refined between samples by a parabola through the
    /// maximum and its two neighbours; in `[-0.5, L - 0.5)`.
    pub peak: f32,
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
        self.peak_time_s(argmax as f64).max(0.0)
    }

    /// Converts a refined peak position (samples, `-0.5..L`) to seconds relative to the AIF.
    /// Positions of N and above wrap to negative delays.
    pub fn peak_time_s(&self, peak: f64) -> f64 {
        if peak < self.frames as f64 {
            peak * self.dt_s
        } else {
            (peak - self.len as f64) * self.dt_s
        }
    }

    /// Returns the delay the regularisation itself adds to the residue maximum, in seconds.
    ///
    /// Truncating the SVD smooths the residue, and a smoothed residue that jumps up at its
    /// onset peaks after the onset: 1.5 to 2 s at 1 s sampling, with no noise at all. The
    /// reference is a voxel with no delay: `aif` (unsmoothed, linear between frames) convolved
    /// with an exponential residue of mean transit time `mtt_s` and sampled at the frames. It
    /// is deconvolved like a measured curve, and the time of its maximum is the offset.
    pub fn intrinsic_tmax_offset_s(&self, aif: &[f64], mtt_s: f64) -> f64 {
        let curve = reference_tissue_curve(aif, self.dt_s, mtt_s);

        let mut offset = 0.0;
        self.residues_into(&curve, 1, |_, k| {
            let (argmax, _) = maximum(k);
            offset = self.peak_time_s(refine_peak(k, argmax) as f64);
        });
        offset
    }

    /// Returns how much of the true CBF the deconvolution recovers, as a function of the MTT
    /// it then reports: pairs `(measured MTT in s, measured / true CBF)` sorted by measured MTT.
    ///
    /// Truncated SVD underestimates the residue maximum the more, the shorter the true MTT:
    /// about 0.65 at 4 s and 0.95 at 24 s with an exponential residue. Each pair comes from a
    /// noise-free curve of one true MTT from `mtts_s`, built like in
    /// [`Self::intrinsic_tmax_offset_s`] and measured like a voxel (CBV from the area ratio).
    pub fn cbf_recovery(&self, aif: &[f64], mtts_s: &[f64]) -> Vec<(f64, f64)> {
        let mut table: Vec<(f64, f64)> = mtts_s
            .iter()
            .filter_map(|&mtt| {
                let curve = reference_tissue_curve(aif, self.dt_s, mtt);
                let residue = self.deconvolve_block(&curve, 1)[0];
                // The curve is the convolution with a flow of 1, so the true maximum is 1/s.
                let recovered = residue.max_k as f64;
                let measured_mtt = residue.area as f64 / self.aif_area / residue.max_k as f64;
                (recovered > 0.0 && measured_mtt.is_finite()).then_some((measured_mtt, recovered))
            })
            .collect();
        table.sort_by(|a, b| a.0.total_cmp(&b.0));
        table
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
            let (argmax, max_k) = maximum(residue);
            let area = (0..self.frames)
                .map(|t| self.area_weights[t] * block[t * count + j])
                .sum();
            results.push(VoxelResidue {
                max_k: max_k.max(0.0),
                argmax,
                peak: refine_peak(residue, argmax),
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

/// Returns the fraction of CBF recovered at measured MTT `mtt_s` from a table of
/// [`Deconvolver::cbf_recovery`], interpolated linearly and held at its ends; 1 for an empty
/// table.
pub fn recovered_fraction(table: &[(f64, f64)], mtt_s: f64) -> f64 {
    let (Some(first), Some(last)) = (table.first(), table.last()) else {
        return 1.0;
    };
    if !(mtt_s > first.0) {
        return first.1;
    }
    if mtt_s >= last.0 {
        return last.1;
    }
    let upper = table.partition_point(|&(mtt, _)| mtt < mtt_s);
    let (low, high) = (table[upper - 1], table[upper]);
    let weight = (mtt_s - low.0) / (high.0 - low.0);
    low.1 + weight * (high.1 - low.1)
}

/// Sub-steps per frame of [`reference_tissue_curve`]'s convolution.
const REFERENCE_SUBSTEPS: usize = 20;

/// Returns `(aif * exp(-t / mtt_s))(t)` at the frames, with `aif` interpolated linearly between
/// its samples and the convolution integrated in [`REFERENCE_SUBSTEPS`] steps per frame.
fn reference_tissue_curve(aif: &[f64], dt_s: f64, mtt_s: f64) -> Vec<f32> {
    let step = dt_s / REFERENCE_SUBSTEPS as f64;
    let decay = (-step / mtt_s).exp();
    let mut curve = Vec::with_capacity(aif.len());
    let mut running = 0.0;
    for (t, &value) in aif.iter().enumerate() {
        if t > 0 {
            let previous = aif[t - 1];
            for s in 1..=REFERENCE_SUBSTEPS {
                let fraction = s as f64 / REFERENCE_SUBSTEPS as f64;
                running = running * decay + (previous + fraction * (value - previous)) * step;
            }
        } else {
            running = value * step;
        }
        curve.push(running as f32);
    }
    curve
}

/// Returns the index and value of the first maximum of `k`.
fn maximum(k: &[f32]) -> (usize, f32) {
    k.iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, v)| if v > best.1 { (i, v) } else { best })
}

/// Refines the maximum at `argmax` of the circular sequence `k` to a position between samples:
/// the vertex of the parabola through it and its two neighbours, at most half a sample away.
/// A flat neighbourhood keeps the sample position. Positions just below 0 wrap to below `L`.
pub fn refine_peak(k: &[f32], argmax: usize) -> f32 {
    let len = k.len();
    if len < 3 {
        return argmax as f32;
    }
    let before = k[(argmax + len - 1) % len];
    let after = k[(argmax + 1) % len];
    let centre = k[argmax];
    let curvature = before - 2.0 * centre + after;
    let shift = if curvature < 0.0 {
        (0.5 * (before - after) / curvature).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    let peak = argmax as f32 + shift;
    if peak < 0.0 {
        peak + len as f32
    } else {
        peak
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

    /// Returns a gamma-variate AIF (alpha 3, beta 1.5 s, peak 400 HU) starting at `onset_s`,
    /// sampled every second.
    fn gamma_aif_from(onset_s: f64, frames: usize) -> Vec<f64> {
        (0..frames)
            .map(|i| {
                let s = i as f64 - onset_s;
                if s <= 0.0 {
                    0.0
                } else {
                    400.0 * (s / 4.5).powi(3) * (3.0 - s / 1.5).exp()
                }
            })
            .collect()
    }

    fn gamma_aif(frames: usize) -> Vec<f64> {
        gamma_aif_from(4.0, frames)
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

    /// Returns the reference simulation's gamma AIF: onset 8 s, 60 frames at 1 s.
    fn reference_aif() -> Vec<f64> {
        gamma_aif_from(8.0, 60)
    }

    #[test]
    fn refined_peak_is_the_parabola_vertex() {
        // Samples of 10 - (i - 4.3)^2: the vertex is at 4.3.
        let k: Vec<f32> = (0..8).map(|i| 10.0 - (i as f32 - 4.3).powi(2)).collect();
        assert!((refine_peak(&k, 4) - 4.3).abs() < 1e-4);

        // A maximum at index 0 whose left neighbour (the last sample) is higher than its right
        // one lies just before 0, which wraps to just below L.
        let wrapped = [5.0f32, 2.0, 0.0, 0.0, 0.0, 4.0];
        let peak = refine_peak(&wrapped, 0);
        assert!(peak > 5.5, "{peak}");
        assert!(peak < 6.0, "{peak}");

        // A plateau keeps the sample position.
        assert_eq!(refine_peak(&[1.0, 1.0, 1.0, 0.0], 1), 1.0);
    }

    #[test]
    fn intrinsic_offset_cancels_the_late_maximum() {
        let aif = reference_aif();
        let identity = DMatrix::identity(60, 60);
        let deconvolver =
            Deconvolver::new(&aif, 1.0, DeconvolutionMethod::Bsvd, 0.1, 0.035, &identity).unwrap();
        let offset = deconvolver.intrinsic_tmax_offset_s(&aif, 4.0);
        // Truncation puts the maximum of an undelayed residue 1.5 to 2.5 s late.
        assert!((1.5..=2.5).contains(&offset), "offset {offset}");

        // A curve delayed by 5 s, built the same way, peaks at 5 s + offset.
        let mut delayed = vec![0.0; 5];
        delayed.extend_from_slice(&aif[..55]);
        let curve: Vec<f64> = reference_tissue_curve(&delayed, 1.0, 4.0).iter().map(|&v| v as f64).collect();
        let k: Vec<f32> = deconvolver.residue(&curve).iter().map(|&v| v as f32).collect();
        let (argmax, _) = maximum(&k);
        let tmax = deconvolver.peak_time_s(refine_peak(&k, argmax) as f64) - offset;
        assert!((tmax - 5.0).abs() < 0.1, "corrected Tmax {tmax}");
    }

    #[test]
    fn cbf_recovery_matches_the_reference_fingerprint() {
        // ctp-reference.md section 3.2: bSVD lambda 0.1, exponential residue, gamma AIF, 1 s.
        let aif = reference_aif();
        let identity = DMatrix::identity(60, 60);
        let deconvolver =
            Deconvolver::new(&aif, 1.0, DeconvolutionMethod::Bsvd, 0.1, 0.035, &identity).unwrap();
        for (mtt, expected) in [(3.4, 0.60), (4.0, 0.645), (6.0, 0.75), (8.0, 0.81), (12.0, 0.885), (24.0, 0.985)] {
            let table = deconvolver.cbf_recovery(&aif, &[mtt]);
            let (_, recovered) = table[0];
            assert!((recovered - expected).abs() <= 0.05, "MTT {mtt}: {recovered} against {expected}");
        }

        // The table is sorted by the MTT the deconvolution reports, which is longer than the
        // true one because the CBF is low.
        let table = deconvolver.cbf_recovery(&aif, &[8.0, 4.0]);
        assert!(table[0].0 < table[1].0);
        assert!(table[0].0 > 4.0, "{table:?}");
    }

    #[test]
    fn recovered_fraction_interpolates_and_holds_its_ends() {
        let table = [(4.0, 0.5), (8.0, 0.9)];
        assert_eq!(recovered_fraction(&table, 2.0), 0.5);
        assert!((recovered_fraction(&table, 5.0) - 0.6).abs() < 1e-12);
        assert_eq!(recovered_fraction(&table, 30.0), 0.9);
        assert_eq!(recovered_fraction(&table, f64::NAN), 0.5);
        assert_eq!(recovered_fraction(&[], 5.0), 1.0);
    }
}
