//! The GPU report: what the GPU backend does on the adapter in use, on the
//! U-net's real shapes. `cargo bench --bench gpu` prints it in full; the
//! smoke test (tests/gpu_report.rs) runs a quick version on lavapipe in CI, so
//! the day a real GPU is at hand one command measures everything.

use std::time::Instant;

use scoredd::backend::gpu::tune::{self, Variant};
use scoredd::backend::gpu::GpuBackend;
use scoredd::backend::{Backend, Conv2dSpec, ConvGeometry, Distribution, ModuleOps};
use scoredd::config::TrainConfig;
use scoredd::detect::{self, DetectOptions};
use scoredd::method::ScoreFn;
use scoredd::nn::score_model::ScoreModel;
use scoredd::nn::unet::UNetConfig;
use scoredd::rng::RngStream;
use scoredd::sde::SdeConfig;
use scoredd::train::Trainer;
use scoredd::Result;

/// What to measure.
pub struct ReportOptions {
    /// The model whose shapes, training step and detection are timed.
    pub config: UNetConfig,
    /// Training batch (the detection batch is 1 and 8 images, or 1 if `quick`).
    pub batch: usize,
    /// Timed repetitions (median) after one warm-up.
    pub reps: usize,
    /// Fewer figures, for the CI smoke test.
    pub quick: bool,
    /// Also time an `ncsnpp256` forward of one 256 px image.
    pub ncsnpp256: bool,
}

/// One measured figure.
pub struct Row {
    pub what: String,
    pub ms: f64,
    /// GFLOP/s where the work is known.
    pub gflops: Option<f64>,
}

fn median_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// `run` timed with each of `variants` forced, then with the one the tuner
/// picks for `class` (measured now, or taken from its cache): one row more
/// than variants.
#[allow(clippy::too_many_arguments)]
fn variant_rows(
    g: &GpuBackend,
    o: &ReportOptions,
    what: &str,
    flops: f64,
    class: &str,
    variants: &[Variant],
    rows: &mut Vec<Row>,
    run: impl Fn() -> Result<()>,
) -> Result<()> {
    let time = |v: Option<Variant>| {
        g.tuner.forced.set(v);
        let ms = median_ms(o.reps, || {
            run()?;
            g.ctx.finish("report")
        });
        g.tuner.forced.set(None);
        ms
    };
    for &v in variants {
        let ms = time(Some(v))?;
        rows.push(Row {
            what: format!("{what} {}", v.name()),
            ms,
            gflops: Some(flops / ms / 1e6),
        });
    }
    // The first unforced run tunes the class (if not cached).
    let ms = time(None)?;
    let chosen = g.tuner.settled(class).map_or("?", |v| v.name());
    rows.push(Row {
        what: format!("{what} chosen: {chosen}"),
        ms,
        gflops: Some(flops / ms / 1e6),
    });
    Ok(())
}

/// Forward and backward of the 3×3 conv at every level of `c` (channels and
/// resolution as the U-net has them), the bulk of its FLOPs.
fn conv_rows(g: &GpuBackend, o: &ReportOptions, rows: &mut Vec<Row>) -> Result<()> {
    let c = &o.config;
    let spec = Conv2dSpec::new(1, 1);
    for (i, mult) in c.ch_mult.iter().enumerate() {
        let (ch, res) = (c.nf * mult, c.image_size >> i);
        let xs = [o.batch, ch, res, res];
        let ws = [ch, ch, 3, 3];
        let x = g.random(&xs, Distribution::Normal, RngStream::new(1, i as u64))?;
        let w = g.random(&ws, Distribution::Normal, RngStream::new(2, i as u64))?;
        let flops = ConvGeometry::new(&xs, &ws, None, spec)?.flops();
        let what = format!("conv 3×3 {ch}→{ch} {res}² b{}", o.batch);
        // The subgroup kernel is a candidate (and a row) where it fits.
        let sg = g.subgroup_conv_fits(3, 1, 1, res);
        let class = tune::with_subgroup(tune::conv_class(3, 1, ch, ch, o.batch * res * res), sg);
        let variants = tune::conv_forward_candidates(sg, 3);
        variant_rows(
            g,
            o,
            &format!("{what} forward"),
            flops,
            &class,
            variants,
            rows,
            || g.conv2d(&x, &w, None, spec).map(|_| ()),
        )?;
        let dy = g.conv2d(&x, &w, None, spec)?;
        let ms = median_ms(o.reps, || {
            g.conv2d_backward(&x, &w, &dy, spec)?;
            g.ctx.finish("report")
        })?;
        rows.push(Row {
            what: format!("{what} backward"),
            ms,
            gflops: Some(2.0 * flops / ms / 1e6),
        });
    }
    Ok(())
}

/// The matmul family on the U-net's GEMM shapes (each level's 3×3 conv as
/// im2col: [C, 9C] × [9C, B·res²]): every variant forced, then the variant
/// the tuner picks (measured now, or taken from its cache).
fn matmul_rows(g: &GpuBackend, o: &ReportOptions, rows: &mut Vec<Row>) -> Result<()> {
    let c = &o.config;
    for (i, mult) in c.ch_mult.iter().enumerate() {
        let (ch, res) = (c.nf * mult, c.image_size >> i);
        let (m, k, n) = (ch, 9 * ch, o.batch * res * res);
        let a = g.random(&[m, k], Distribution::Normal, RngStream::new(6, i as u64))?;
        let b = g.random(&[k, n], Distribution::Normal, RngStream::new(7, i as u64))?;
        let flops = 2.0 * (m * k * n) as f64;
        let shape = format!("matmul [{m}, {k}] × [{k}, {n}]");
        let class = tune::matmul_class(m, k, n);
        let variants = [Variant::RegisterBlocked, Variant::Tiled];
        variant_rows(g, o, &shape, flops, &class, &variants, rows, || {
            g.matmul(&a, &b).map(|_| ())
        })?;
    }
    Ok(())
}

/// A training step (loss, backward, clip, Adam, EMA) at `o.batch`.
fn train_row(g: &GpuBackend, o: &ReportOptions) -> Result<Row> {
    let model = ScoreModel::new(g, o.config.clone(), SdeConfig::ve(50.0), 0)?;
    let mut t = Trainer::new(g, model, TrainConfig::recipe("ve", o.batch, 0))?;
    let c = &o.config;
    let shape = [o.batch, c.channels, c.image_size, c.image_size];
    let x = g.random(&shape, Distribution::Uniform, RngStream::new(3, 0))?;
    // Reading the loss back makes each step include all its device work.
    let ms = median_ms(o.reps, || t.train_step(g, &x, true).map(|_| ()))?;
    Ok(Row {
        what: format!("train step b{}", o.batch),
        ms,
        gflops: None,
    })
}

/// Score-DD (the model's default T5 r1) of `n` images, maps read back.
fn detect_row(g: &GpuBackend, o: &ReportOptions, n: usize) -> Result<Row> {
    let m = ScoreModel::new(g, o.config.clone(), SdeConfig::ve(50.0), 0)?;
    let c = &o.config;
    let numel = c.channels * c.image_size * c.image_size;
    let imgs: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let mut v = vec![0.0; numel];
            RngStream::new(4, i as u64).fill_uniform(0, &mut v);
            v
        })
        .collect();
    let refs: Vec<&[f32]> = imgs.iter().map(|v| v.as_slice()).collect();
    let opts = DetectOptions::from_settings(m.meta.detection.clone());
    let ids = vec![0; n];
    let ms = median_ms(o.reps, || {
        detect::anomaly_maps(g, &m, &refs, &ids, &opts).map(|_| ())
    })?;
    Ok(Row {
        what: format!("Score-DD T5 r1, {n} image(s)"),
        ms,
        gflops: None,
    })
}

/// The `ncsnpp256` forward of one 256 px image (minutes on a software adapter).
fn ncsnpp_row(g: &GpuBackend) -> Result<Row> {
    let cfg = UNetConfig::ncsnpp256(3, scoredd::nn::unet::TimeEmbedding::Fourier);
    let m = ScoreModel::new(g, cfg.clone(), SdeConfig::ve(348.0), 0)?;
    let x = g.random(
        &[1, 3, 256, 256],
        Distribution::Uniform,
        RngStream::new(5, 0),
    )?;
    let ms = median_ms(1, || {
        m.score(g, &x, &[0.5]).and_then(|s| g.read(&s)).map(|_| ())
    })?;
    Ok(Row {
        what: "ncsnpp256 forward, 1 image".into(),
        gflops: Some(m.net.flops_per_image() / ms / 1e6),
        ms,
    })
}

/// Every figure of the report, in print order.
pub fn measure(g: &GpuBackend, o: &ReportOptions) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    conv_rows(g, o, &mut rows)?;
    matmul_rows(g, o, &mut rows)?;
    rows.push(train_row(g, o)?);
    rows.push(detect_row(g, o, 1)?);
    if !o.quick {
        rows.push(detect_row(g, o, 8)?);
    }
    if o.ncsnpp256 {
        rows.push(ncsnpp_row(g)?);
    }
    Ok(rows)
}

/// The report as text: the adapter, which kernel family ran, the rows.
pub fn render(g: &GpuBackend, o: &ReportOptions, rows: &[Row]) -> String {
    let mut s = format!(
        "GPU report: {}\nmodel shapes: {} px, nf {}, ch_mult {:?}\n",
        g.describe(),
        o.config.image_size,
        o.config.nf,
        o.config.ch_mult
    );
    // The rows below say what was chosen for their shapes; the cache may hold
    // many more classes (every shape this adapter has run).
    let choices = g.tuner.choices();
    let count = |w: Variant| choices.iter().filter(|(_, v)| *v == w).count();
    let (tiled, subgroup) = (count(Variant::Tiled), count(Variant::Subgroup));
    let (rows2, rows4) = (count(Variant::SubgroupRows2), count(Variant::SubgroupRows4));
    let kernel_row = count(Variant::KernelRow) + count(Variant::KernelRowSubgroup);
    s.push_str(&format!(
        "autotune: {:?} (SCOREDD_TUNE); {} shape classes settled for this adapter, {tiled} of them tiled, {subgroup} subgroup, {rows2} subgroup 2 rows, {rows4} subgroup 4 rows, {kernel_row} kernel row (subgroups: {}); conv backward: stride-1 dx tuned like the forward, dw among register-blocked, subgroup and (3×3 stride 1) kernel row and its subgroup form where they fit, stride-2 dx register-blocked only\n",
        g.tuner.mode,
        choices.len(),
        if g.ctx.subgroups8 { "yes" } else { "no" },
    ));
    s.push_str(&format!("{:<64} {:>10} {:>9}\n", "figure", "ms", "GFLOP/s"));
    for r in rows {
        let rate = r.gflops.map_or("-".into(), |v| format!("{v:.1}"));
        s.push_str(&format!("{:<64} {:>10.2} {:>9}\n", r.what, r.ms, rate));
    }
    let m = g.memory_stats();
    s.push_str(&format!(
        "buffer pool: high-water {:.1} MiB, live {:.1} MiB, pooled {:.1} MiB; {} buffers created, {} reuses\n",
        m.peak_bytes as f64 / 1048576.0,
        m.live_bytes as f64 / 1048576.0,
        m.pooled_bytes as f64 / 1048576.0,
        m.allocations,
        m.reuses
    ));
    s
}
