//! Safe wrapper around the `gemm` crate (in the browser: `matrixmultiply`, whose
//! wasm32 kernel uses simd128 when built with it): C = A·B (+ C), with explicit
//! row and column strides, so callers can multiply sub-blocks and transposes
//! without copying.

#[cfg(not(target_arch = "wasm32"))]
use gemm::Parallelism;

/// A strided matrix view: `rows × cols`, element (i, j) at `data[i * ld + j * cs]`
/// (`cs = 1` for a row-major matrix; [`MatRef::t`] swaps the strides).
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// row stride
    pub ld: usize,
    /// column stride
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            ld: cols,
            cs: 1,
        }
    }
    /// The transpose, as a view of the same data (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            ld: self.cs,
            cs: self.ld,
        }
    }
    fn fits(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        // Index of the last element, refusing overflow.
        let last = (self.rows - 1)
            .checked_mul(self.ld)
            .zip((self.cols - 1).checked_mul(self.cs))
            .and_then(|(a, b)| a.checked_add(b));
        matches!(last, Some(l) if l < self.data.len() && l <= isize::MAX as usize)
    }
}

/// `c[m×n] = a[m×k]·b[k×n]` (or `+=` when `accumulate`), `c` row-major with row stride `n`;
/// `a` and `b` may be any strided views (transposes included).
/// `threads > 1` lets the GEMM crate split the work; callers that already run
/// in parallel pass 1.
pub fn sgemm(a: MatRef, b: MatRef, c: &mut [f32], accumulate: bool, threads: usize) {
    sgemm_ld(a, b, c, b.cols, accumulate, 1.0, threads)
}

/// `c = scale·a·b (+ c)` into a `c` whose rows are `ldc ≥ n` apart (a column
/// block of a wider matrix).
pub fn sgemm_ld(
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    scale: f32,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // These are internal invariants: shapes are validated before we get here.
    assert!(b.rows == k && a.fits() && b.fits() && ldc >= n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n);
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|r| r[..n].fill(0.0));
        }
        return;
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let par = if threads > 1 {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };
        // SAFETY: the assert above proves every (row, col) the kernel touches lies
        // inside its slice; `c` is borrowed mutably, so it cannot alias `a` or `b`.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                ldc as isize,
                accumulate,
                a.data.as_ptr(),
                a.cs as isize,
                a.ld as isize,
                b.data.as_ptr(),
                b.cs as isize,
                b.ld as isize,
                1.0,
                scale,
                false,
                false,
                false,
                par,
            );
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = threads; // serial in the browser
                         // SAFETY: as above; with beta = 0 matrixmultiply never reads `c`.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                scale,
                a.data.as_ptr(),
                a.ld as isize,
                a.cs as isize,
                b.data.as_ptr(),
                b.ld as isize,
                b.cs as isize,
                if accumulate { 1.0 } else { 0.0 },
                c.as_mut_ptr(),
                ldc as isize,
                1,
            );
        }
    }
}
