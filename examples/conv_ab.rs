//! Times the conv forward with each subgroup variant forced on the `small`
//! model's big 3×3 shapes (min of REPS runs). A/B tool for kernel work.
use scoredd::backend::gpu::tune::Variant;
use scoredd::backend::gpu::GpuBackend;
use scoredd::backend::Backend;
use scoredd::backend::{Conv2dSpec, ModuleOps};

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let g = GpuBackend::new().unwrap();
    for &(b, ci, co, hw) in &[
        (8, 64, 64, 64),
        (8, 128, 32, 64),
        (8, 32, 32, 64),
        (8, 128, 64, 16),
    ] {
        let x = g
            .upload(&vec![0.5; b * ci * hw * hw], &[b, ci, hw, hw])
            .unwrap();
        let w = g.upload(&vec![0.01; co * ci * 9], &[co, ci, 3, 3]).unwrap();
        let mut line = format!("{b}x{ci}->{co} @{hw}:");
        for v in [
            Variant::Subgroup,
            Variant::SubgroupRows2,
            Variant::SubgroupRows4,
        ] {
            g.tuner.forced.set(Some(v));
            let _ = g
                .read(&g.conv2d(&x, &w, None, Conv2dSpec::new(1, 1)).unwrap())
                .unwrap();
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let t = std::time::Instant::now();
                let y = g.conv2d(&x, &w, None, Conv2dSpec::new(1, 1)).unwrap();
                let _ = g.read(&y).unwrap();
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            let gf = 2.0 * (b * ci * co * 9 * hw * hw) as f64 / best / 1e6;
            line += &format!("  {} {best:.2} ms ({gf:.1} GF/s)", v.name());
        }
        println!("{line}");
    }
}
