//! Safe wrapper around the `gemm` crate: C = A·B (+ C), row-major with explicit
//! row strides, so callers can multiply sub-blocks without copying.

use gemm::Parallelism;

/// A row-major matrix view: `rows × cols`, element (i, j) at `data[i * ld + j]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
}

impl<'a> MatRef<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            ld: cols,
        }
    }
    fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.ld + self.cols <= self.data.len()
    }
}

/// `c[m×n] = a[m×k]·b[k×n]` (or `+=` when `accumulate`), `c` row-major with row stride `n`.
/// `threads > 1` lets the GEMM crate split the work; callers that already run
/// in parallel pass 1.
pub fn sgemm(a: MatRef, b: MatRef, c: &mut [f32], accumulate: bool, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // These are internal invariants: shapes are validated before we get here.
    assert!(b.rows == k && a.fits() && b.fits() && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
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
            n as isize,
            accumulate,
            a.data.as_ptr(),
            1,
            a.ld as isize,
            b.data.as_ptr(),
            1,
            b.ld as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
