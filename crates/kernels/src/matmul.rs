//! Single-precision matrix multiply used by every kernel in this crate.
//!
//! Two paths compute the same product. `KernelPath::Simd` calls the `gemm` crate (0.19), whose
//! blocked kernels pick AVX-512, AVX2+FMA or SSE at run time from CPU feature detection.
//! `KernelPath::Portable` is a plain Rust loop with no explicit vector code, kept as a reference
//! and as a fallback that tests can force.

use std::sync::OnceLock;

/// Environment variable that forces the portable path when set to `1` or `true`.
pub const PORTABLE_ENV: &str = "PENUMBRA_KERNELS_PORTABLE";

/// Implementation used by the convolution kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    /// The fastest kernels this CPU runs: the direct AVX-512 3x3 convolution where the CPU has
    /// AVX-512F, and the `Gemm` path for everything else.
    Simd,
    /// Blocked SIMD GEMM from the `gemm` crate with run-time CPU feature detection, fed from
    /// im2col tiles for the 3x3 convolution.
    Gemm,
    /// Scalar loops with no explicit vector code.
    Portable,
}

impl KernelPath {
    /// Reads `PENUMBRA_KERNELS_PORTABLE` once per process and returns the path it selects.
    pub fn from_env() -> Self {
        static PATH: OnceLock<KernelPath> = OnceLock::new();
        *PATH.get_or_init(|| match std::env::var(PORTABLE_ENV) {
            Ok(value) if value == "1" || value.eq_ignore_ascii_case("true") => KernelPath::Portable,
            _ => KernelPath::Simd,
        })
    }
}

/// Read-only strided matrix view: element (r, c) is at `data[r * row_stride + c * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    pub fn new(data: &'a [f32], row_stride: usize, col_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            col_stride,
        }
    }

    /// Asserts that a `rows` x `cols` view fits in `data`.
    ///
    /// Callers validate tensor shapes before any kernel runs, so a failure here is a bug in this
    /// crate, never a consequence of user input.
    fn assert_fits(&self, rows: usize, cols: usize) {
        if rows == 0 || cols == 0 {
            return;
        }
        let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
        assert!(last < self.data.len(), "matrix view exceeds its buffer");
    }

    fn at(&self, row: usize, col: usize) -> f32 {
        self.data[row * self.row_stride + col * self.col_stride]
    }
}

/// Row-major destination matrix with unit column stride, given by raw pointer so that parallel
/// tasks can write disjoint rows or column ranges of one output tensor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DstMat {
    pub ptr: *mut f32,
    /// Number of `f32` elements readable and writable from `ptr`.
    pub len: usize,
    pub row_stride: usize,
}

/// Computes `dst = lhs * rhs`, or `dst += lhs * rhs` when `accumulate` is true, for an
/// `m` x `k` times `k` x `n` product.
///
/// # Safety
///
/// `dst.ptr` must be valid for reads and writes of `dst.len` elements, and no other thread may
/// access the `m` x `n` elements this call writes while it runs. The bounds themselves are
/// checked here.
pub(crate) unsafe fn sgemm(
    path: KernelPath,
    (m, n, k): (usize, usize, usize),
    dst: DstMat,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst.row_stride + n <= dst.len,
        "destination view exceeds its buffer"
    );
    lhs.assert_fits(m, k);
    rhs.assert_fits(k, n);

    if k == 0 {
        if !accumulate {
            for row in 0..m {
                std::ptr::write_bytes(dst.ptr.add(row * dst.row_stride), 0, n);
            }
        }
        return;
    }

    match path {
        KernelPath::Simd | KernelPath::Gemm => gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            1,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        ),
        KernelPath::Portable => sgemm_portable((m, n, k), dst, accumulate, lhs, rhs),
    }
}

/// Row-by-row product: each destination row accumulates `lhs[i, p] * rhs[p, ..]`.
unsafe fn sgemm_portable(
    (m, n, k): (usize, usize, usize),
    dst: DstMat,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
) {
    for i in 0..m {
        let row = std::slice::from_raw_parts_mut(dst.ptr.add(i * dst.row_stride), n);
        if !accumulate {
            row.fill(0.0);
        }

        for p in 0..k {
            let a = lhs.at(i, p);
            if rhs.col_stride == 1 {
                let start = p * rhs.row_stride;
                let rhs_row = &rhs.data[start..start + n];
                for (d, r) in row.iter_mut().zip(rhs_row) {
                    *d += a * r;
                }
            } else {
                for (j, d) in row.iter_mut().enumerate() {
                    *d += a * rhs.at(p, j);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(path: KernelPath, accumulate: bool) -> Vec<f32> {
        // lhs is 2x3 row-major, rhs is 3x2 stored transposed (column-major).
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs_t = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5];
        let mut dst = vec![10.0f32; 4];
        let view = DstMat {
            ptr: dst.as_mut_ptr(),
            len: dst.len(),
            row_stride: 2,
        };
        unsafe {
            sgemm(
                path,
                (2, 2, 3),
                view,
                accumulate,
                MatRef::new(&lhs, 3, 1),
                MatRef::new(&rhs_t, 1, 3),
            );
        }
        dst
    }

    #[test]
    fn sgemm_matches_hand_product() {
        // Row 0: [1 2 3] . [1 0 -1] = -2, [1 2 3] . [2 1 0.5] = 5.5.
        // Row 1: [4 5 6] . [1 0 -1] = -2, [4 5 6] . [2 1 0.5] = 16.
        let expected = [-2.0, 5.5, -2.0, 16.0];
        for path in [KernelPath::Simd, KernelPath::Gemm, KernelPath::Portable] {
            assert_eq!(product(path, false), expected, "{path:?}");
        }
    }

    #[test]
    fn sgemm_accumulates_into_destination() {
        let expected = [8.0, 15.5, 8.0, 26.0];
        for path in [KernelPath::Simd, KernelPath::Gemm, KernelPath::Portable] {
            assert_eq!(product(path, true), expected, "{path:?}");
        }
    }
}
