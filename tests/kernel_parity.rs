//! Every WGSL kernel against the CPU backend, and the CPU backend against naive
//! f64 references, on odd shapes (not multiples of the kernels' tiles).
//!
//! Tolerances: GEMM-like ops compare max |diff| against 2e-5 × max |reference|
//! (f32 sums of up to ~600 products differ by a few ulps of the largest term);
//! elementwise ops against 1e-5 relative.

mod common;

use common::{assert_close, cpu, gpu, rand_vec};
use scoredd::backend::{
    Backend, Conv2dSpec, Distribution, ModuleOps, PairedState, PerturbCoef, Sampler, ScoreDdOps,
    StepCoef,
};
use scoredd::rng::RngStream;

fn naive_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|l| a[i * k + l] as f64 * b[l * n + j] as f64)
                .sum();
            c[i * n + j] = s as f32;
        }
    }
    c
}

#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    b: usize,
    ci: usize,
    h: usize,
    wd: usize,
    co: usize,
    k: usize,
    s: usize,
    p: usize,
) -> (Vec<f32>, usize, usize) {
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (wd + 2 * p - k) / s + 1;
    let mut out = vec![0.0f32; b * co * ho * wo];
    for n in 0..b {
        for o in 0..co {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias.map(|bb| bb[o] as f64).unwrap_or(0.0);
                    for c in 0..ci {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                acc += x[((n * ci + c) * h + iy as usize) * wd + ix as usize]
                                    as f64
                                    * w[((o * ci + c) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                    out[((n * co + o) * ho + oy) * wo + ox] = acc as f32;
                }
            }
        }
    }
    (out, ho, wo)
}

// (M, K, N): vec4 path (K, N multiples of 4, M and N/8 ragged) and the any-shape path.
const MATMUL_SHAPES: [(usize, usize, usize); 7] = [
    (1, 4, 4),
    (13, 20, 36),
    (67, 132, 100),
    (8, 8, 8),
    (5, 7, 3),
    (33, 17, 65),
    (64, 1, 9),
];

fn run_matmul<B: Backend>(
    be: &B,
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
) -> Vec<f32> {
    let (at, bt) = (
        be.upload(a, &[m, k]).unwrap(),
        be.upload(b, &[k, n]).unwrap(),
    );
    be.read(&be.matmul(&at, &bt).unwrap()).unwrap()
}

fn matmul_inputs(i: usize, (m, k, n): (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    (rand_vec(m * k, i as u64), rand_vec(k * n, 100 + i as u64))
}

#[test]
fn cpu_matmul_matches_naive() {
    let c = cpu();
    for (i, &shape) in MATMUL_SHAPES.iter().enumerate() {
        let (a, b) = matmul_inputs(i, shape);
        let (m, k, n) = shape;
        assert_close(
            &format!("cpu matmul {shape:?}"),
            &run_matmul(&c, &a, &b, shape),
            &naive_matmul(&a, &b, m, k, n),
            2e-5,
        );
    }
}

#[test]
fn gpu_matmul_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, &shape) in MATMUL_SHAPES.iter().enumerate() {
        let (a, b) = matmul_inputs(i, shape);
        assert_close(
            &format!("gpu matmul {shape:?}"),
            &run_matmul(&g, &a, &b, shape),
            &run_matmul(&c, &a, &b, shape),
            2e-5,
        );
    }
}

/// Shapes that cross the tiled variant's 64×64×16 tiles unevenly, and the
/// register-blocked one's 8×8 blocks and vec4 rows (N % 4 both ways).
const MATMUL_ODD_SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (65, 17, 67),
    (130, 33, 129),
    (64, 16, 64),
    (7, 100, 12),
    (70, 40, 4),
    (3, 0, 5),
];

/// Every matmul variant, forced, against the CPU op.
#[test]
fn gpu_matmul_every_variant_matches_cpu() {
    use scoredd::backend::gpu::tune::Variant;
    let Some(g) = gpu() else { return };
    let c = cpu();
    for v in Variant::ALL {
        g.tuner.forced.set(Some(v));
        for (i, &shape) in MATMUL_SHAPES.iter().chain(&MATMUL_ODD_SHAPES).enumerate() {
            let (a, b) = matmul_inputs(i, shape);
            assert_close(
                &format!("gpu matmul {} {shape:?}", v.name()),
                &run_matmul(&g, &a, &b, shape),
                &run_matmul(&c, &a, &b, shape),
                2e-5,
            );
        }
    }
    g.tuner.forced.set(None);
}

/// The tuner: `off` settles on the default without measuring; a choice is
/// saved to the cache file and a later tuner reads it back; `fresh` forgets
/// this adapter's choices but keeps others'.
#[test]
fn the_tune_cache_round_trips_and_off_picks_the_default() {
    use scoredd::backend::gpu::tune::{TuneCache, TuneMode, Tuner, Variant};
    assert_eq!(TuneMode::parse(Some("off")), TuneMode::Off);
    assert_eq!(TuneMode::parse(Some("fresh")), TuneMode::Fresh);
    assert_eq!(TuneMode::parse(None), TuneMode::On);
    let dir = std::env::temp_dir().join(format!("scoredd-tune-{}", std::process::id()));
    let path = dir.join("sub").join("gpu-tune.tsv");
    let _ = std::fs::remove_dir_all(&dir);

    let off = Tuner::with(TuneMode::Off, "A".into(), Some(path.clone()));
    assert_eq!(off.settled("matmul m64 k64 n64"), Some(Variant::DEFAULT));

    let on = Tuner::with(TuneMode::On, "A".into(), Some(path.clone()));
    assert_eq!(on.settled("c1"), None, "nothing measured yet");
    let times = vec![(Variant::RegisterBlocked, 2.0), (Variant::Tiled, 1.0)];
    assert_eq!(on.choose("c1", times), Variant::Tiled);
    let other = Tuner::with(TuneMode::On, "B".into(), Some(path.clone()));
    other.choose("c1", vec![(Variant::RegisterBlocked, 1.0)]);

    let cache = TuneCache::load(&path);
    assert_eq!(TuneCache::parse(&cache.render()), cache);
    assert_eq!(cache.entries.len(), 2, "{cache:?}");
    let again = Tuner::with(TuneMode::On, "A".into(), Some(path.clone()));
    assert_eq!(again.settled("c1"), Some(Variant::Tiled));
    let fresh = Tuner::with(TuneMode::Fresh, "A".into(), Some(path.clone()));
    assert_eq!(fresh.settled("c1"), None);
    let b = Tuner::with(TuneMode::Fresh, "A".into(), Some(path.clone()));
    b.choose("c2", vec![(Variant::RegisterBlocked, 1.0)]);
    let kept = TuneCache::load(&path);
    assert!(
        kept.entries
            .contains_key(&("B".to_string(), "c1".to_string())),
        "{kept:?}"
    );
    // A garbled line is skipped, not an error.
    assert!(TuneCache::parse("x\ty\tno such variant\nonly one field\n")
        .entries
        .is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tuning on a real shape (not forced, measured afresh) leaves a correct
/// result and settles the shape class.
#[test]
fn gpu_matmul_autotune_measures_and_settles() {
    use scoredd::backend::gpu::tune::{matmul_class, TuneMode, Tuner};
    let Some(mut g) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("scoredd-tune-gpu-{}", std::process::id()));
    g.tuner = Tuner::with(TuneMode::Fresh, "test".into(), Some(dir.join("t.tsv")));
    let c = cpu();
    let shape = (96, 80, 72);
    let (a, b) = matmul_inputs(3, shape);
    assert_eq!(g.tuner.settled(&matmul_class(96, 80, 72)), None);
    assert_close(
        "tuned gpu matmul",
        &run_matmul(&g, &a, &b, shape),
        &run_matmul(&c, &a, &b, shape),
        2e-5,
    );
    assert!(g.tuner.settled(&matmul_class(96, 80, 72)).is_some());
    assert_eq!(g.tuner.timings.borrow().len(), 1);
    let line = g.tuner.summary();
    assert!(
        line.contains("1 measured now: matmul m128 k128 n128 → "),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// (batch, Cin, H, W, Cout, k, stride, padding, bias)
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize, bool);

const CONV_CASES: [ConvCase; 9] = [
    (2, 3, 11, 13, 5, 3, 1, 1, true),
    (1, 1, 7, 9, 3, 3, 1, 1, false),
    (3, 4, 16, 16, 8, 3, 1, 1, true),
    (2, 5, 13, 10, 9, 3, 2, 1, true),
    (1, 6, 8, 8, 16, 3, 2, 1, false),
    (2, 7, 9, 11, 6, 1, 1, 0, true),
    (1, 8, 10, 10, 12, 1, 2, 0, false),
    (2, 3, 6, 5, 4, 3, 1, 0, true),
    (1, 2, 20, 3, 17, 3, 1, 1, true),
];

fn conv_inputs(i: usize, case: ConvCase) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (b, ci, h, w, co, k, ..) = case;
    let bias = case.8.then(|| rand_vec(co, 300 + i as u64));
    (
        rand_vec(b * ci * h * w, i as u64),
        rand_vec(co * ci * k * k, 200 + i as u64),
        bias,
    )
}

fn run_conv<B: ModuleOps>(
    be: &B,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    case: ConvCase,
) -> Vec<f32> {
    let (b, ci, h, wd, co, k, s, p, _) = case;
    let xt = be.upload(x, &[b, ci, h, wd]).unwrap();
    let wt = be.upload(w, &[co, ci, k, k]).unwrap();
    let bt = bias.map(|bb| be.upload(bb, &[co]).unwrap());
    be.read(
        &be.conv2d(&xt, &wt, bt.as_ref(), Conv2dSpec::new(s, p))
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn cpu_conv2d_matches_naive() {
    let c = cpu();
    for (i, &case) in CONV_CASES.iter().enumerate() {
        let (x, w, bias) = conv_inputs(i, case);
        let (b, ci, h, wd, co, k, s, p, _) = case;
        let (want, ..) = naive_conv(&x, &w, bias.as_deref(), b, ci, h, wd, co, k, s, p);
        assert_close(
            &format!("cpu conv {case:?}"),
            &run_conv(&c, &x, &w, bias.as_deref(), case),
            &want,
            2e-5,
        );
    }
}

/// Cases that cross the tiled conv's 64-channel and 64-position tiles and
/// its 16-row steps of Cin·K² unevenly; the last three fit the subgroup
/// conv (stride 1, 3×3 with padding 1 or 1×1 with padding 0, W % 4 == 0)
/// with a width that ends inside an 8-wide tile and channel counts that end
/// inside an 8-channel block.
const CONV_ODD_CASES: [ConvCase; 7] = [
    (1, 5, 9, 9, 70, 3, 1, 1, true),
    (2, 7, 12, 11, 13, 3, 2, 1, false),
    (1, 3, 15, 17, 65, 1, 1, 0, true),
    (1, 9, 10, 7, 3, 1, 2, 0, true),
    (2, 5, 7, 20, 13, 3, 1, 1, true),
    (3, 9, 5, 4, 6, 3, 1, 1, false),
    (2, 6, 5, 12, 11, 1, 1, 0, true),
];

/// Every conv-forward variant, forced, against the CPU op.
#[test]
fn gpu_conv2d_every_variant_matches_cpu() {
    use scoredd::backend::gpu::tune::Variant;
    let Some(g) = gpu() else { return };
    let c = cpu();
    for v in Variant::ALL {
        g.tuner.forced.set(Some(v));
        for (i, &case) in CONV_CASES.iter().chain(&CONV_ODD_CASES).enumerate() {
            let (x, w, bias) = conv_inputs(i, case);
            assert_close(
                &format!("gpu conv {} {case:?}", v.name()),
                &run_conv(&g, &x, &w, bias.as_deref(), case),
                &run_conv(&c, &x, &w, bias.as_deref(), case),
                2e-5,
            );
        }
    }
    g.tuner.forced.set(None);
}

#[test]
fn gpu_conv2d_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, &case) in CONV_CASES.iter().enumerate() {
        let (x, w, bias) = conv_inputs(i, case);
        let want = run_conv(&c, &x, &w, bias.as_deref(), case);
        assert_close(
            &format!("gpu conv {case:?}"),
            &run_conv(&g, &x, &w, bias.as_deref(), case),
            &want,
            2e-5,
        );
    }
}

#[test]
fn gpu_random_numbers_equal_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (n, rng) in [
        (1usize, RngStream::new(1, 2)),
        (1003, RngStream::new(u64::MAX, 12345)),
        (70_001, RngStream::new(42, 0)),
    ] {
        let gu = g
            .read(&g.random(&[n], Distribution::Uniform, rng).unwrap())
            .unwrap();
        let cu = c
            .read(&c.random(&[n], Distribution::Uniform, rng).unwrap())
            .unwrap();
        assert!(
            gu.iter().zip(&cu).all(|(a, b)| a.to_bits() == b.to_bits()),
            "uniforms must be bit-identical (n = {n})"
        );
        let gn = g
            .read(&g.random(&[n], Distribution::Normal, rng).unwrap())
            .unwrap();
        let cn = c
            .read(&c.random(&[n], Distribution::Normal, rng).unwrap())
            .unwrap();
        let worst = gn
            .iter()
            .zip(&cn)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "Gaussians differ by {worst:e} (n = {n}), allowed 1e-6"
        );
    }
}

#[test]
fn cpu_random_is_element_i_of_the_stream() {
    let c = cpu();
    let rng = RngStream::new(9, 3);
    let v = c
        .read(&c.random(&[40_000], Distribution::Normal, rng).unwrap())
        .unwrap();
    for i in [0usize, 1, 5, 16_383, 16_384, 39_999] {
        assert_eq!(v[i].to_bits(), rng.normal(i as u64).to_bits());
    }
}

fn perturb_case() -> (Vec<f32>, Vec<usize>, Vec<PerturbCoef>) {
    // 5 samples of 3×7 = 21 elements: blocks straddle samples' ends.
    let shape = vec![5, 3, 7];
    let coef = (0..5)
        .map(|i| PerturbCoef {
            mu: 1.0 - 0.1 * i as f32,
            sigma: 0.3 + i as f32,
            stream: 10 + i as u64,
        })
        .collect();
    (rand_vec(5 * 21, 11), shape, coef)
}

#[test]
fn perturb_follows_the_marginal_and_the_stream() {
    let c = cpu();
    let (x0, shape, coef) = perturb_case();
    let rng = RngStream::new(5, 6);
    let (xt, z) = c
        .perturb(&c.upload(&x0, &shape).unwrap(), &coef, rng)
        .unwrap();
    let (xt, z) = (c.read(&xt).unwrap(), c.read(&z).unwrap());
    for (i, cf) in coef.iter().enumerate() {
        for j in 0..21 {
            let k = i * 21 + j;
            assert_eq!(
                z[k].to_bits(),
                rng.derive(cf.stream).normal(j as u64).to_bits()
            );
            assert!(
                (xt[k] - (cf.mu * x0[k] + cf.sigma * z[k])).abs() <= 1e-6 * (1.0 + xt[k].abs())
            );
        }
    }
}

#[test]
fn gpu_perturb_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let (x0, shape, coef) = perturb_case();
    let rng = RngStream::new(5, 6);
    let (cx, cz) = c
        .perturb(&c.upload(&x0, &shape).unwrap(), &coef, rng)
        .unwrap();
    let (gx, gz) = g
        .perturb(&g.upload(&x0, &shape).unwrap(), &coef, rng)
        .unwrap();
    assert_close(
        "perturb z",
        &g.read(&gz).unwrap(),
        &c.read(&cz).unwrap(),
        1e-6,
    );
    assert_close(
        "perturb x_t",
        &g.read(&gx).unwrap(),
        &c.read(&cx).unwrap(),
        1e-6,
    );
}

fn step_case() -> (Vec<usize>, [Vec<f32>; 5], Vec<StepCoef>) {
    let shape = vec![3, 2, 5];
    let n = 30;
    let coef = (0..3)
        .map(|i| StepCoef {
            f: -0.5 * i as f32,
            g: 1.0 + i as f32,
            sigma: 0.5 + 0.2 * i as f32,
            mu_next: 0.9,
            sigma_next: 0.45 + 0.2 * i as f32,
            dt: 0.01,
            stream: 3 * i as u64,
        })
        .collect();
    let v = [
        rand_vec(n, 1),
        rand_vec(n, 2),
        rand_vec(n, 3),
        rand_vec(n, 4),
        rand_vec(n, 5),
    ];
    (shape, v, coef)
}

fn run_step<B: ScoreDdOps>(be: &B, sampler: Sampler) -> Vec<Vec<f32>> {
    let (shape, v, coef) = step_case();
    let up = |d: &Vec<f32>| be.upload(d, &shape).unwrap();
    let mut st = PairedState {
        x0: up(&v[0]),
        whole: up(&v[1]),
        own: up(&v[2]),
        z: up(&v[3]),
    };
    let keep = st.whole.clone();
    be.paired_step(&mut st, &up(&v[4]), &coef, sampler, RngStream::new(77, 1))
        .unwrap();
    // Tensors are values: the clone taken before the step is unchanged.
    assert_eq!(be.read(&keep).unwrap(), v[1]);
    vec![
        be.read(&st.whole).unwrap(),
        be.read(&st.own).unwrap(),
        be.read(&st.z).unwrap(),
    ]
}

#[test]
fn cpu_paired_step_matches_the_formulas() {
    let c = cpu();
    let (_, v, coef) = step_case();
    for sampler in [Sampler::Ode, Sampler::Sde] {
        let out = run_step(&c, sampler);
        for k in 0..30 {
            let cf = &coef[k / 10];
            let n = if sampler == Sampler::Sde {
                RngStream::new(77, 1)
                    .derive(cf.stream)
                    .normal((k % 10) as u64)
            } else {
                0.0
            };
            let w2 = if sampler == Sampler::Ode { 0.5 } else { 1.0 } * cf.g * cf.g;
            let noise = cf.g * cf.dt.sqrt() * n;
            let whole = v[1][k] + (-cf.f * v[1][k] + w2 * v[4][k]) * cf.dt + noise;
            let own = v[2][k] + (-cf.f * v[2][k] + w2 * (-v[3][k] / cf.sigma)) * cf.dt + noise;
            let z = (own - cf.mu_next * v[0][k]) / cf.sigma_next;
            for (what, got, want) in [
                ("whole", out[0][k], whole),
                ("own", out[1][k], own),
                ("z", out[2][k], z),
            ] {
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{sampler:?} {what}[{k}]: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn gpu_paired_step_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for sampler in [Sampler::Ode, Sampler::Sde] {
        let (want, got) = (run_step(&c, sampler), run_step(&g, sampler));
        for (i, what) in ["whole", "own", "z"].iter().enumerate() {
            assert_close(&format!("{sampler:?} {what}"), &got[i], &want[i], 1e-5);
        }
    }
}
