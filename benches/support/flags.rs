//! The benches' on/off switches (`BENCH_SKIP_GPU=1` and the like).

/// Whether the switch `name` is on: set to anything but empty or `0`
/// (so `BENCH_SKIP_GPU=0` runs the GPU rows, as it reads).
pub fn on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}
