//! Where the GPU backend's time goes on the `small` model: runs a train step
//! (batch 8) or Score-DD detection of 8 images `REPS` times and prints each
//! run's wall-clock and process CPU time (on a shared machine, and on a
//! software adapter whose work is this process's threads, the CPU time is
//! the steadier figure), then the tuner's measurements made in this run.
//!
//! ```sh
//! SCOREDD_GPU_PROFILE=1 cargo run --release --example gpu_profile -- detect 1
//! SCOREDD_TUNE=fresh cargo run --release --example gpu_profile -- train 1
//! ```
//!
//! `SCOREDD_GPU_PROFILE=1` adds the per-kernel totals (`gpu/profile.rs`);
//! run once without it first so the tuner's measurements are not counted.
use scoredd::backend::gpu::GpuBackend;
use scoredd::backend::Backend;
use scoredd::config::TrainConfig;
use scoredd::detect::{self, DetectOptions};
use scoredd::nn::score_model::ScoreModel;
use scoredd::nn::unet::{TimeEmbedding, UNetConfig};
use scoredd::rng::RngStream;
use scoredd::sde::SdeConfig;
use scoredd::train::Trainer;

/// Process CPU time in seconds (Linux; 0 elsewhere), at 10 ms resolution.
fn cpu_s() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or("detect".into());
    let reps: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let g = GpuBackend::new().unwrap();
    let cfg = UNetConfig::small(3, TimeEmbedding::Fourier);
    let m = ScoreModel::new(&g, cfg.clone(), SdeConfig::ve(50.0), 0).unwrap();
    let mut run: Box<dyn FnMut()> = if what == "train" {
        let mut t = Trainer::new(&g, m, TrainConfig::recipe("ve", 8, 0)).unwrap();
        let mut v = vec![0.0; 8 * 3 * 64 * 64];
        RngStream::new(1, 0).fill_uniform(0, &mut v);
        let x = g.upload(&v, &[8, 3, 64, 64]).unwrap();
        let g = &g;
        Box::new(move || {
            t.train_step(g, &x, true).unwrap();
        })
    } else {
        let imgs: Vec<Vec<f32>> = (0..8)
            .map(|i| {
                let mut v = vec![0.0; 3 * 64 * 64];
                RngStream::new(1, i as u64).fill_uniform(0, &mut v);
                v
            })
            .collect();
        let opts = DetectOptions::from_settings(m.meta.detection.clone());
        let g = &g;
        Box::new(move || {
            let refs: Vec<&[f32]> = imgs.iter().map(|v| v.as_slice()).collect();
            detect::anomaly_maps(g, &m, &refs, &[0; 8], &opts).unwrap();
        })
    };
    let g2 = &g;
    for i in 0..reps {
        let (c, w) = (cpu_s(), std::time::Instant::now());
        run();
        println!(
            "{what} rep {i}: wall {:.2} s, process cpu {:.2} s",
            w.elapsed().as_secs_f64(),
            cpu_s() - c
        );
    }
    for (class, times) in g2.tuner.timings.borrow().iter() {
        let t: Vec<String> = times
            .iter()
            .map(|(v, ms)| format!("{} {ms:.2}", v.name()))
            .collect();
        println!("tuned {class}: {}", t.join(", "));
    }
}
