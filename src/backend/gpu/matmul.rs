//! Which variant of a kernel family runs (forced, cached, or measured on the
//! spot by the tuner), and the matmul family's workgroup-memory tiled
//! variant; the register-blocked one lives with the other primitives.

use super::context::Bind;

use super::kernels;
use super::launch::{grid_2d, u32_of};
use super::params::MatmulAnyParams;
use super::tune::{self, Variant};
use super::{GpuBackend, GpuBuf, GpuTensor};
use crate::backend::plan::MatmulPlan;
use crate::error::Result;

/// Timed runs per candidate after a warm-up (which also compiles it); the
/// fastest counts. Not the median: on a shared machine (or a software
/// adapter sharing the CPU with other work) interference only ever adds
/// time, and a median of 3 let one busy stretch pick a kernel 5× slower
/// (lavapipe, 64→64 channels at 32², under load).
#[cfg(not(target_arch = "wasm32"))]
const TUNE_REPS: usize = 3;
/// A candidate whose warm-up takes this many times the best time so far
/// is dropped without timed runs.
#[cfg(not(target_arch = "wasm32"))]
const SKIP_FACTOR: f64 = 4.0;

/// The matmul family's variants.
const MATMUL_VARIANTS: [Variant; 2] = [Variant::RegisterBlocked, Variant::Tiled];

impl GpuBackend {
    /// C = A·B into `c` (M, N > 0) with the variant chosen for this shape class.
    pub(super) fn matmul_into(
        &self,
        p: &MatmulPlan,
        a: &GpuTensor,
        b: &GpuTensor,
        c: &GpuTensor,
    ) -> Result<()> {
        let class = tune::matmul_class(p.m, p.k, p.n);
        self.run_tuned(&class, &MATMUL_VARIANTS, &c.buf, &|v| match v {
            Variant::Tiled => self.matmul_tiled(p, a, b, c),
            _ => self.matmul_register_blocked(p, a, b, c),
        })
    }

    /// Runs `run` with the variant settled for `class`, or times every
    /// candidate (each run must leave the same, correct result in `out`;
    /// the first candidate is the reference the others are checked against)
    /// and keeps the fastest. A settled variant that is not a candidate here
    /// (forced by a test, or a shape the variant does not fit) runs as the
    /// default.
    pub(super) fn run_tuned(
        &self,
        class: &str,
        candidates: &[Variant],
        out: &GpuBuf,
        run: &dyn Fn(Variant) -> Result<()>,
    ) -> Result<()> {
        match self.tuner.settled(class) {
            Some(v) if candidates.contains(&v) => run(v),
            Some(_) => run(Variant::DEFAULT),
            None => self.tune(class, candidates, out, run).map(|_| ()),
        }
    }

    /// `out` as floats, for the tuner's check.
    #[cfg(not(target_arch = "wasm32"))]
    fn read_floats(&self, out: &GpuBuf) -> Result<Vec<f32>> {
        let bytes = self.ctx.read_bytes(out, out.len())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn tune(
        &self,
        class: &str,
        candidates: &[Variant],
        out: &GpuBuf,
        run: &dyn Fn(Variant) -> Result<()>,
    ) -> Result<Variant> {
        // Work queued before us must not be billed to the first candidate.
        self.ctx.finish("autotune")?;
        let mut times = Vec::new();
        let mut reference = None;
        let mut rejected = false;
        for &v in candidates {
            // The warm-up also compiles the candidate's pipeline. A candidate
            // whose warm-up is already far slower than the best so far is not
            // timed again: on a software adapter a slow variant of a big conv
            // costs seconds a run.
            let start = std::time::Instant::now();
            run(v)?;
            self.ctx.finish("autotune")?;
            let warm = start.elapsed().as_secs_f64() * 1e3;
            // A variant must agree with the first (the portable default) on
            // this adapter before it may be chosen: the subgroup kernels rely
            // on lanes following the invocation index, which holds on the
            // drivers we know of but which Vulkan does not promise.
            let result = self.read_floats(out)?;
            match &reference {
                None => reference = Some(result),
                Some(r) if !tune::agrees(r, &result) => {
                    log::warn!(
                        "autotune {class}: {} disagrees with {} on this adapter; not used",
                        v.name(),
                        candidates[0].name()
                    );
                    times.push((v, f64::INFINITY));
                    rejected = true;
                    continue;
                }
                Some(_) => {}
            }
            let best = times
                .iter()
                .map(|t: &(Variant, f64)| t.1)
                .fold(f64::INFINITY, f64::min);
            if warm > SKIP_FACTOR * best {
                times.push((v, warm));
                continue;
            }
            let mut fastest = f64::INFINITY;
            for _ in 0..TUNE_REPS {
                let start = std::time::Instant::now();
                run(v)?;
                self.ctx.finish("autotune")?;
                fastest = fastest.min(start.elapsed().as_secs_f64() * 1e3);
            }
            times.push((v, fastest));
        }
        let chosen = self.tuner.choose(class, times);
        if rejected {
            // A rejected candidate may have left its wrong result in `out`.
            run(chosen)?;
        }
        Ok(chosen)
    }

    /// In the browser nothing may wait for the GPU: the default, never timed.
    #[cfg(target_arch = "wasm32")]
    fn tune(
        &self,
        _class: &str,
        _candidates: &[Variant],
        _out: &GpuBuf,
        run: &dyn Fn(Variant) -> Result<()>,
    ) -> Result<Variant> {
        run(Variant::DEFAULT)?;
        Ok(Variant::DEFAULT)
    }

    /// The tiled variant: any shape, operands read as given.
    fn matmul_tiled(
        &self,
        p: &MatmulPlan,
        a: &GpuTensor,
        b: &GpuTensor,
        c: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "matmul";
        let &MatmulPlan { m, k, n } = p;
        for (what, v) in [("M", m), ("N", n), ("K", k)] {
            u32_of(OP, what, v)?;
        }
        let params = MatmulAnyParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            ..Default::default()
        };
        let groups = grid_2d(
            OP,
            n.div_ceil(64) as u64,
            m.div_ceil(64) as u64,
            self.max_groups(),
            &|| format!("[{m}, {k}] × [{k}, {n}]"),
        )?;
        let binds = [
            Bind::Storage(&a.buf),
            Bind::Storage(&b.buf),
            Bind::Storage(&c.buf),
        ];
        self.ctx
            .dispatch(kernels::MATMUL_TILED, &[], &params, &binds, groups)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// The tuner never picks a variant whose result disagrees with the
    /// default's, however fast, and leaves the default's result in place.
    #[test]
    fn the_tuner_rejects_a_variant_with_a_wrong_result() {
        let Some(g) = super::super::test_backend() else {
            return;
        };
        let out = g.ctx.storage_output("test", 16).unwrap();
        let write = |v: &[f32]| g.ctx.queue.write_buffer(&out, 0, bytemuck::cast_slice(v));
        let run = |v: Variant| {
            match v {
                Variant::Tiled => write(&[1.0, 2.0, 3.0, 5.0]),
                _ => write(&[1.0, 2.0, 3.0, 4.0]),
            }
            Ok(())
        };
        let class = format!("test-reject-{}", std::process::id());
        let chosen = g.tune(&class, &MATMUL_VARIANTS, &out, &run).unwrap();
        assert_eq!(chosen, Variant::RegisterBlocked);
        assert_eq!(g.read_floats(&out).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        // Within the tolerance (summation order), a variant stays a candidate.
        assert!(tune::agrees(&[1.0, -400.0], &[1.0003, -400.1]));
        assert!(!tune::agrees(&[1.0, -400.0], &[1.5, -400.0]));
        assert!(tune::agrees(&[f32::NAN, 1.0], &[f32::NAN, 1.0]));
    }
}
