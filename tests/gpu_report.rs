//! The GPU report (`cargo bench --bench gpu`) runs end to end on the adapter
//! at hand — lavapipe in CI — in a quick form: no timing is asserted, only
//! that every figure is measured, finite and positive.

mod common;

#[path = "../benches/support/gpu_report.rs"]
mod gpu_report;

use scoredd::nn::unet::{TimeEmbedding, UNetConfig};

#[test]
fn the_gpu_report_runs_and_measures_every_figure() {
    let Some(g) = common::gpu() else { return };
    let o = gpu_report::ReportOptions {
        config: UNetConfig::tiny(1, TimeEmbedding::Fourier),
        batch: 2,
        reps: 1,
        quick: true,
        ncsnpp256: false,
    };
    let rows = gpu_report::measure(&g, &o).unwrap();
    // Two levels × (conv forward per variant and chosen, backward; matmul
    // per variant and chosen), a training step, one detection; the subgroup
    // conv and its two- and four-row forms add three rows per level where the
    // adapter has subgroups (the tiny model's 16² and 8² fit them).
    let conv_variants = if g.ctx.subgroups8 { 5 } else { 2 };
    assert_eq!(rows.len(), 2 * (conv_variants + 1 + 1 + 2 + 1) + 2);
    for r in &rows {
        assert!(r.ms.is_finite() && r.ms > 0.0, "{}: {} ms", r.what, r.ms);
        if let Some(v) = r.gflops {
            assert!(v.is_finite() && v > 0.0, "{}: {v} GFLOP/s", r.what);
        }
    }
    let text = gpu_report::render(&g, &o, &rows);
    assert!(
        text.contains("train step b2")
            && text.contains("Score-DD")
            && text.contains("chosen: ")
            && text.contains("tiled 64x64x16")
            && text.contains("buffer pool: high-water"),
        "{text}"
    );
    println!("{text}");
}

/// The buffer pool: after one forward has sized it, repeated forwards reuse
/// its buffers and its high-water mark does not grow.
#[test]
fn repeated_forwards_do_not_grow_the_pool() {
    use scoredd::backend::{Backend, Distribution};
    use scoredd::method::ScoreFn;
    use scoredd::nn::score_model::ScoreModel;
    use scoredd::rng::RngStream;
    use scoredd::sde::SdeConfig;

    let Some(g) = common::gpu() else { return };
    let cfg = UNetConfig::tiny(1, TimeEmbedding::Fourier);
    let m = ScoreModel::new(&g, cfg.clone(), SdeConfig::ve(50.0), 0).unwrap();
    let shape = [2, cfg.channels, cfg.image_size, cfg.image_size];
    let x = g
        .random(&shape, Distribution::Uniform, RngStream::new(7, 0))
        .unwrap();
    let first = g.read(&m.score(&g, &x, &[0.5, 0.25]).unwrap()).unwrap();
    let warm = g.memory_stats();
    for _ in 0..3 {
        let again = g.read(&m.score(&g, &x, &[0.5, 0.25]).unwrap()).unwrap();
        assert_eq!(again, first, "a recycled buffer changed a forward's result");
    }
    let after = g.memory_stats();
    assert!(warm.peak_bytes > 0, "{warm:?}");
    assert_eq!(after.peak_bytes, warm.peak_bytes, "{warm:?} → {after:?}");
    assert_eq!(after.allocations, warm.allocations, "{warm:?} → {after:?}");
    assert!(after.reuses > warm.reuses, "{after:?}");
    println!("pool after 4 forwards: {after:?}");
}
