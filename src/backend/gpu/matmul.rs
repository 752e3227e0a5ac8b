//! The matmul family: which variant runs (forced, cached, or measured on
//! the spot by the tuner) and the workgroup-memory tiled variant; the
//! register-blocked one lives with the other primitives.

use super::context::Bind;
use super::kernels;
use super::launch::{grid_2d, u32_of};
use super::params::MatmulAnyParams;
use super::tune::{self, MatmulVariant};
use super::{GpuBackend, GpuTensor};
use crate::backend::plan::MatmulPlan;
use crate::error::Result;

/// Timed runs per candidate after a warm-up (which also compiles it).
#[cfg(not(target_arch = "wasm32"))]
const TUNE_REPS: usize = 3;

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
        match self.tuner.settled(&class) {
            Some(v) => self.matmul_variant(v, p, a, b, c),
            None => self.tune_matmul(&class, p, a, b, c).map(|_| ()),
        }
    }

    /// Runs one variant: what tests force and the tuner times.
    pub(super) fn matmul_variant(
        &self,
        v: MatmulVariant,
        p: &MatmulPlan,
        a: &GpuTensor,
        b: &GpuTensor,
        c: &GpuTensor,
    ) -> Result<()> {
        match v {
            MatmulVariant::RegisterBlocked => self.matmul_register_blocked(p, a, b, c),
            MatmulVariant::Tiled => self.matmul_tiled(p, a, b, c),
        }
    }

    /// Times every variant on these operands (each leaves C correct) and keeps
    /// the fastest for the shape class.
    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn tune_matmul(
        &self,
        class: &str,
        p: &MatmulPlan,
        a: &GpuTensor,
        b: &GpuTensor,
        c: &GpuTensor,
    ) -> Result<MatmulVariant> {
        // Work queued before us must not be billed to the first candidate.
        self.ctx.finish("autotune")?;
        let mut times = Vec::new();
        for v in MatmulVariant::ALL {
            self.matmul_variant(v, p, a, b, c)?;
            self.ctx.finish("autotune")?;
            let mut t = Vec::with_capacity(TUNE_REPS);
            for _ in 0..TUNE_REPS {
                let start = std::time::Instant::now();
                self.matmul_variant(v, p, a, b, c)?;
                self.ctx.finish("autotune")?;
                t.push(start.elapsed().as_secs_f64() * 1e3);
            }
            t.sort_by(f64::total_cmp);
            times.push((v, t[t.len() / 2]));
        }
        Ok(self.tuner.choose(class, times))
    }

    /// In the browser nothing may wait for the GPU: the default, never timed.
    #[cfg(target_arch = "wasm32")]
    pub(super) fn tune_matmul(
        &self,
        _class: &str,
        p: &MatmulPlan,
        a: &GpuTensor,
        b: &GpuTensor,
        c: &GpuTensor,
    ) -> Result<MatmulVariant> {
        self.matmul_variant(MatmulVariant::DEFAULT, p, a, b, c)?;
        Ok(MatmulVariant::DEFAULT)
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
