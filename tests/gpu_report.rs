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
    // Two levels × (forward, backward), a training step, one detection.
    assert_eq!(rows.len(), 6);
    for r in &rows {
        assert!(r.ms.is_finite() && r.ms > 0.0, "{}: {} ms", r.what, r.ms);
        if let Some(v) = r.gflops {
            assert!(v.is_finite() && v > 0.0, "{}: {v} GFLOP/s", r.what);
        }
    }
    let text = gpu_report::render(&g, &o, &rows);
    assert!(
        text.contains("train step b2") && text.contains("Score-DD"),
        "{text}"
    );
    println!("{text}");
}
