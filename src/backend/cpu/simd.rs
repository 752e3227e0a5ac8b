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

/// The instruction set [`vectorized`] and the GEMM run on this CPU, for
/// benchmark reports: AVX-512 only when the CPU has it and the build kept
/// the `avx512` feature (on by default).
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512") && std::is_x86_feature_detected!("avx512f") {
            "AVX-512"
        } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            "AVX2+FMA"
        } else {
            "SSE2"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "NEON"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "baseline"
    }
}
