//! Our own hot loops (norms, activations, elementwise ops, col2im) compiled
//! for the best instruction set of the CPU at hand, chosen at run time: the
//! release binary targets the baseline x86-64 (SSE2), which would leave
//! AVX2/AVX-512 to the GEMM crate alone. Results do not depend on the choice:
//! Rust never fuses or reorders float operations, so each element is computed
//! by the same IEEE operations at any vector width.

/// Runs `f` compiled with the widest SIMD this CPU offers (AVX-512, AVX2+FMA,
/// NEON or the baseline). Only code inlined into `f` gets the wider
/// instructions: helpers it calls in its loops should be `#[inline(always)]`.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(not(target_arch = "wasm32"))]
    {
        pulp::Arch::new().dispatch(f)
    }
    #[cfg(target_arch = "wasm32")]
    {
        f()
    }
}
