//! `scoredd toy`: the paper's exact-score experiment.

use std::path::Path;
use std::time::Instant;

use scoredd::backend::{open_backend, BackendChoice};
use scoredd::toy::{self, ToyConfig, POINTS};
use scoredd::{with_backend, Error};

use super::sampler_name;

pub fn run(choice: BackendChoice, draws: usize, seed: u64, out: &Path) -> Result<(), Error> {
    if draws == 0 {
        return Err(Error::Invalid("--draws must be at least 1".into()));
    }
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    let cfg = ToyConfig { draws, seed };
    let start = Instant::now();
    let report = with_backend!(&backend, |b| toy::run(b, &cfg))?;
    println!("Score-DD on the exact score of ⅕N((−5,−5),I) + ⅘N((5,5),I), VE σ 0.1–20, N = 100, {draws} draws per point");
    println!();
    println!(
        "mean ‖s(x'(t_r)) − s(x''(t_r))‖          {:>8} {:>8} {:>8}   anomalous ÷ normal",
        "(-6,5)", "(5.17,5.2)", "(-4.2,-4.3)"
    );
    for row in &report.differences {
        let [a, b, c] = row.mean_difference;
        let [r1, r2] = row.ratios();
        println!("  {:<4} t = {:.1}, r = {}                  {a:>8.3} {b:>10.3} {c:>11.3}   {r1:>5.1}× {r2:>5.1}×", sampler_name(row.sampler), row.t, row.r);
    }
    println!();
    println!("full reverse run from t = 1 (whole score): normal draws that end in the other mode");
    for row in &report.reverse {
        println!(
            "  {:<4} {}: {:5.1} %   {}: {:5.1} %",
            sampler_name(row.sampler),
            POINTS[1].1,
            100.0 * row.switched[0],
            POINTS[2].1,
            100.0 * row.switched[1]
        );
    }
    with_backend!(&backend, |b| toy::plot(b, &cfg, out))?;
    println!();
    println!("plot: {} (left: t = 0.6, r = 5 reverse-SDE runs; colour = whole score, grey = self score; right: full ODE runs from t = 1)", out.display());
    println!("      red = anomalous (-6,5), blue = (5.17,5.2), green = (-4.2,-4.3); squares mark the starting points");
    eprintln!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
