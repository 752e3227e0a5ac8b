//! The paper's exact-score experiment (Fig. 3 / Appendix B) through the real
//! detector loop, on both backends and with both samplers, 256 noise draws per
//! point: the anomalous point's mean whole-score difference is at least 3× each
//! normal point's for t ∈ {0.3, 0.6}, r ∈ {1, 5}, and a full reverse run from
//! t = 1 sends more than 5 % of normal draws to the other mode.

mod common;

use scoredd::backend::ScoreDdOps;
use scoredd::toy::{run, ToyConfig};

fn check<B: ScoreDdOps>(b: &B) -> Vec<f64> {
    let report = run(
        b,
        &ToyConfig {
            draws: 256,
            seed: 3,
        },
    )
    .unwrap();
    assert_eq!(report.differences.len(), 8, "2 samplers × 2 t × 2 r");
    let mut all = Vec::new();
    for row in &report.differences {
        let [r1, r2] = row.ratios();
        assert!(
            r1 >= 3.0 && r2 >= 3.0,
            "{} t={} r={}: ratios {r1:.2}, {r2:.2} (need ≥ 3)",
            b.describe(),
            row.t,
            row.r
        );
        all.extend(row.mean_difference);
    }
    for row in &report.reverse {
        let both = (row.switched[0] + row.switched[1]) / 2.0;
        assert!(
            both > 0.05,
            "{:?}: only {:.1} % of normal draws changed mode",
            row.sampler,
            100.0 * both
        );
        all.extend(row.switched);
    }
    all
}

#[test]
fn exact_score_experiment_on_cpu() {
    check(&common::cpu());
}

#[test]
fn exact_score_experiment_on_gpu_matches_cpu() {
    let Some(g) = common::gpu() else { return };
    let on_gpu = check(&g);
    let on_cpu = check(&common::cpu());
    // Same seed, same Philox streams: the two backends agree closely, not just statistically.
    for (a, b) in on_gpu.iter().zip(&on_cpu) {
        assert!(
            (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
            "gpu {a} vs cpu {b}"
        );
    }
}
