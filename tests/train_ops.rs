//! [`TrainOps`]: the CPU backend against naive f64 formulas (and the DSM
//! gradient against central finite differences), then the GPU backend against
//! the CPU on odd sizes, plus bad shapes on both.
//!
//! Tolerances (max |a − b| ≤ rel × max |reference|):
//! - CPU vs naive f64: 1e-5 for the loss and pointwise results (Adam after
//!   several steps included); finite differences 1e-3 (f32 loss, h = 1e-2, the
//!   loss is quadratic so the only error is rounding).
//! - GPU vs CPU: 1e-5 for pointwise results (dout, Adam's param/m/v, EMA),
//!   1e-4 for reductions (loss, Σx²: f32 two-level sums vs f64).
//! - The skipped (non-finite) Adam step leaves param, m, v bit-identical.

mod common;

use common::{assert_close, cpu, gpu, rand_vec};
use scoredd::backend::{AdamStep, Backend, Reduce, TrainOps};
use scoredd::error::Error;

const POINTWISE: f32 = 1e-5;
const REDUCTION: f32 = 1e-4;

/// Naive DSM loss in f64: (loss, dout).
#[allow(clippy::needless_range_loop)]
fn naive_dsm(out: &[f32], z: &[f32], w: &[f32], sign: f32, reduce: Reduce) -> (f64, Vec<f64>) {
    let b = w.len();
    let d = out.len() / b;
    let mut loss = 0.0;
    let mut dout = vec![0.0; out.len()];
    for s in 0..b {
        let mut ss = 0.0;
        for j in 0..d {
            let i = s * d + j;
            let r = sign as f64 * out[i] as f64 + z[i] as f64;
            ss += r * r;
            let k = match reduce {
                Reduce::Mean => 2.0 / d as f64,
                Reduce::Sum => 1.0,
            };
            dout[i] = sign as f64 * w[s] as f64 * k * r / b as f64;
        }
        let term = match reduce {
            Reduce::Mean => ss / d as f64,
            Reduce::Sum => 0.5 * ss,
        };
        loss += w[s] as f64 * term;
    }
    (loss / b as f64, dout)
}

fn weights(b: usize, seed: u64) -> Vec<f32> {
    // Non-uniform, positive, in [0.25, 2.25).
    rand_vec(b, seed).iter().map(|x| 1.25 + x).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn cpu_dsm_loss_matches_the_formula_and_finite_differences() {
    let be = cpu();
    for (k, shape) in [&[3usize, 5][..], &[1, 7], &[4, 2, 3, 3], &[2, 1]]
        .iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let (o, z) = (rand_vec(n, 10 + k as u64), rand_vec(n, 20 + k as u64));
        let w = weights(shape[0], 30 + k as u64);
        for reduce in [Reduce::Mean, Reduce::Sum] {
            for sign in [1.0f32, -1.0] {
                let what = format!("{shape:?} {reduce:?} sign {sign}");
                let (ot, zt) = (be.upload(&o, shape).unwrap(), be.upload(&z, shape).unwrap());
                let (loss, dout) = be.dsm_loss(&ot, &zt, &w, sign, reduce).unwrap();
                assert_eq!(be.shape(&loss), &[1]);
                assert_eq!(be.shape(&dout), *shape);
                let (nl, nd) = naive_dsm(&o, &z, &w, sign, reduce);
                let loss = be.read(&loss).unwrap();
                let dout = be.read(&dout).unwrap();
                assert_close(&format!("{what} loss"), &loss, &[nl as f32], POINTWISE);
                assert_close(&format!("{what} dout"), &dout, &to_f32(&nd), POINTWISE);
                // Central finite differences of the backend's own loss.
                let h = 1e-2f32;
                let fd: Vec<f32> = (0..n)
                    .map(|i| {
                        let eval = |delta: f32| {
                            let mut p = o.clone();
                            p[i] += delta;
                            let t = be.upload(&p, shape).unwrap();
                            let (l, _) = be.dsm_loss(&t, &zt, &w, sign, reduce).unwrap();
                            be.read(&l).unwrap()[0] as f64
                        };
                        ((eval(h) - eval(-h)) / (2.0 * h as f64)) as f32
                    })
                    .collect();
                assert_close(&format!("{what} finite differences"), &fd, &dout, 1e-3);
            }
        }
    }
}

/// One naive Adam step in f64 on flat vectors.
#[allow(clippy::needless_range_loop)]
fn naive_adam(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], hp: &AdamStep, total: f64) {
    if !total.is_finite() {
        return;
    }
    let scale = if hp.max_norm.is_finite() && hp.max_norm > 0.0 {
        (hp.max_norm as f64 / (total.sqrt() + 1e-6)).min(1.0)
    } else {
        1.0
    };
    let (b1, b2) = (hp.beta1 as f64, hp.beta2 as f64);
    let t = hp.step as i32;
    for i in 0..p.len() {
        let g = scale * g[i];
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        let mh = m[i] / (1.0 - b1.powi(t));
        let vh = v[i] / (1.0 - b2.powi(t));
        p[i] -= hp.lr as f64 * mh / (vh.sqrt() + hp.eps as f64);
    }
}

/// Runs `steps` Adam steps over two parameter tensors sharing one global norm
/// (Σ g² over both, on the device), on backend `be`; grads scaled by `gscale`.
/// Returns the final (param, m, v) of both tensors, flattened.
fn run_adam<B: TrainOps>(
    be: &B,
    sizes: &[usize],
    steps: u64,
    gscale: f32,
    max_norm: f32,
) -> Vec<Vec<f32>> {
    let mut state: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            (
                be.upload(&rand_vec(n, 100 + k as u64), &[n]).unwrap(),
                be.zeros(&[n]).unwrap(),
                be.zeros(&[n]).unwrap(),
            )
        })
        .collect();
    for t in 1..=steps {
        let grads: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                let g: Vec<f32> = rand_vec(n, 1000 * t + k as u64)
                    .iter()
                    .map(|x| gscale * x)
                    .collect();
                be.upload(&g, &[n]).unwrap()
            })
            .collect();
        let mut total = be.zeros(&[1]).unwrap();
        for g in &grads {
            total = be.add_sum_squares(&total, g).unwrap();
        }
        let hp = AdamStep {
            max_norm,
            ..AdamStep::new(1e-2, t)
        };
        for ((p, m, v), g) in state.iter_mut().zip(&grads) {
            be.adam_step(p, g, m, v, &hp, &total).unwrap();
        }
    }
    state
        .iter()
        .flat_map(|(p, m, v)| {
            [
                be.read(p).unwrap(),
                be.read(m).unwrap(),
                be.read(v).unwrap(),
            ]
        })
        .collect()
}

/// The same as [`run_adam`] in naive f64.
fn naive_run(sizes: &[usize], steps: u64, gscale: f32, max_norm: f32) -> Vec<Vec<f32>> {
    let mut state: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            (
                rand_vec(n, 100 + k as u64)
                    .iter()
                    .map(|&x| x as f64)
                    .collect(),
                vec![0.0; n],
                vec![0.0; n],
            )
        })
        .collect();
    for t in 1..=steps {
        let grads: Vec<Vec<f64>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                rand_vec(n, 1000 * t + k as u64)
                    .iter()
                    .map(|x| (gscale * x) as f64)
                    .collect()
            })
            .collect();
        let total: f64 = grads.iter().flatten().map(|g| g * g).sum();
        let hp = AdamStep {
            max_norm,
            ..AdamStep::new(1e-2, t)
        };
        for ((p, m, v), g) in state.iter_mut().zip(&grads) {
            naive_adam(p, m, v, g, &hp, total);
        }
    }
    state
        .iter()
        .flat_map(|(p, m, v)| [to_f32(p), to_f32(m), to_f32(v)])
        .collect()
}

/// (gradient scale, max_norm, what): clipping active, inactive, and off.
const ADAM_CASES: [(f32, f32, &str); 3] = [
    (3.0, 1.0, "clipping active"),
    (1e-3, 1.0, "clipping inactive"),
    (3.0, f32::INFINITY, "clipping off"),
];

#[test]
fn cpu_adam_matches_naive_over_several_steps() {
    let be = cpu();
    let sizes = [7, 300];
    for (gscale, max_norm, what) in ADAM_CASES {
        let got = run_adam(&be, &sizes, 5, gscale, max_norm);
        let want = naive_run(&sizes, 5, gscale, max_norm);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(&format!("{what} tensor {k}"), g, w, POINTWISE);
        }
    }
    // Clipping active really changes the result (the test is not vacuous).
    let clipped = naive_run(&sizes, 1, 3.0, 1.0);
    let free = naive_run(&sizes, 1, 3.0, f32::INFINITY);
    assert_ne!(clipped[1], free[1]);
}

/// A non-finite global norm skips the step; value semantics keep clones intact.
fn adam_skip_and_value_semantics<B: TrainOps>(be: &B) {
    let n = 1000;
    let p0 = rand_vec(n, 1);
    let m0 = rand_vec(n, 2);
    let v0: Vec<f32> = rand_vec(n, 3).iter().map(|x| x.abs()).collect();
    let mut g = rand_vec(n, 4);
    g[17] = f32::NAN;
    let gt = be.upload(&g, &[n]).unwrap();
    let nan_total = be.sum_squares(&gt).unwrap();
    assert!(!be.is_finite(&nan_total).unwrap());
    let hp = AdamStep::new(1e-2, 3);
    for total in [
        nan_total,
        be.upload(&[f32::INFINITY], &[1]).unwrap(),
        be.upload(&[f32::NEG_INFINITY], &[1]).unwrap(),
        be.upload(&[f32::NAN], &[1]).unwrap(),
    ] {
        let mut p = be.upload(&p0, &[n]).unwrap();
        let mut m = be.upload(&m0, &[n]).unwrap();
        let mut v = be.upload(&v0, &[n]).unwrap();
        be.adam_step(&mut p, &gt, &mut m, &mut v, &hp, &total)
            .unwrap();
        for (what, t, want) in [("param", &p, &p0), ("m", &m, &m0), ("v", &v, &v0)] {
            let got = be.read(t).unwrap();
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what} changed by a skipped step"
            );
        }
    }
    // A real step updates in place but leaves clones of the inputs alone.
    let g = rand_vec(n, 5);
    let gt = be.upload(&g, &[n]).unwrap();
    let total = be.sum_squares(&gt).unwrap();
    assert!(be.is_finite(&total).unwrap());
    let mut p = be.upload(&p0, &[n]).unwrap();
    let mut m = be.upload(&m0, &[n]).unwrap();
    let mut v = be.upload(&v0, &[n]).unwrap();
    let (pc, mc, vc) = (p.clone(), m.clone(), v.clone());
    be.adam_step(&mut p, &gt, &mut m, &mut v, &hp, &total)
        .unwrap();
    assert_ne!(be.read(&p).unwrap(), p0);
    assert_eq!(be.read(&pc).unwrap(), p0);
    assert_eq!(be.read(&mc).unwrap(), m0);
    assert_eq!(be.read(&vc).unwrap(), v0);
    // EMA too.
    let mut e = be.upload(&m0, &[n]).unwrap();
    let ec = e.clone();
    be.ema_update(&mut e, &pc, 0.9).unwrap();
    assert_eq!(be.read(&ec).unwrap(), m0);
    // An EMA of a clone of itself: the update must see the old value.
    let mut e2 = be.upload(&p0, &[n]).unwrap();
    let same = e2.clone();
    be.ema_update(&mut e2, &same, 0.5).unwrap();
    assert_close("ema of itself", &be.read(&e2).unwrap(), &p0, POINTWISE);
}

#[test]
fn cpu_adam_skips_non_finite_and_keeps_value_semantics() {
    adam_skip_and_value_semantics(&cpu());
}

#[test]
fn cpu_ema_and_sum_squares_match_naive() {
    let be = cpu();
    let n = 1001;
    let (e0, p0) = (rand_vec(n, 1), rand_vec(n, 2));
    let mut e = be.upload(&e0, &[n]).unwrap();
    let p = be.upload(&p0, &[n]).unwrap();
    be.ema_update(&mut e, &p, 0.999).unwrap();
    let want: Vec<f32> = e0
        .iter()
        .zip(&p0)
        .map(|(&e, &p)| (0.999 * e as f64 + 0.001 * p as f64) as f32)
        .collect();
    assert_close("ema", &be.read(&e).unwrap(), &want, POINTWISE);

    let ss = be.sum_squares(&p).unwrap();
    let want: f64 = p0.iter().map(|&x| x as f64 * x as f64).sum();
    assert_close("sum_squares", &be.read(&ss).unwrap(), &[want as f32], 1e-6);
    let acc = be.upload(&[2.5], &[1]).unwrap();
    let ss = be.add_sum_squares(&acc, &p).unwrap();
    assert_close(
        "add_sum_squares",
        &be.read(&ss).unwrap(),
        &[(want + 2.5) as f32],
        1e-6,
    );
    let empty = be.zeros(&[0, 3]).unwrap();
    assert_eq!(be.read(&be.sum_squares(&empty).unwrap()).unwrap(), [0.0]);
}

/// Element counts that are not multiples of the kernels' workgroups, and one
/// past the first-level partials cap (64·16·4096).
const SIZES: [usize; 5] = [1, 7, 1000, 65537, 4_200_001];

#[test]
fn gpu_sum_squares_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (k, n) in SIZES.into_iter().chain([0]).enumerate() {
        let x = rand_vec(n, 50 + k as u64);
        let (xc, xg) = (c.upload(&x, &[n]).unwrap(), g.upload(&x, &[n]).unwrap());
        let (sc, sg) = (c.sum_squares(&xc).unwrap(), g.sum_squares(&xg).unwrap());
        assert_eq!(g.shape(&sg), &[1]);
        assert_close(
            &format!("sum_squares n = {n}"),
            &g.read(&sg).unwrap(),
            &c.read(&sc).unwrap(),
            REDUCTION,
        );
        let (ac, ag) = (
            c.upload(&[0.75], &[1]).unwrap(),
            g.upload(&[0.75], &[1]).unwrap(),
        );
        assert_close(
            &format!("add_sum_squares n = {n}"),
            &g.read(&g.add_sum_squares(&ag, &xg).unwrap()).unwrap(),
            &c.read(&c.add_sum_squares(&ac, &xc).unwrap()).unwrap(),
            REDUCTION,
        );
    }
}

#[test]
fn gpu_dsm_loss_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let shapes: [&[usize]; 7] = [
        &[1, 1],
        &[7, 1],
        &[1, 7],
        &[8, 125],
        &[1, 65537],
        &[3, 1, 5, 4369],
        &[5, 840_001],
    ];
    for (k, shape) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let (o, z) = (rand_vec(n, 60 + k as u64), rand_vec(n, 70 + k as u64));
        let w = weights(shape[0], 80 + k as u64);
        for reduce in [Reduce::Mean, Reduce::Sum] {
            for sign in [1.0f32, -1.0] {
                let what = format!("{shape:?} {reduce:?} sign {sign}");
                let (lc, dc) = c
                    .dsm_loss(
                        &c.upload(&o, shape).unwrap(),
                        &c.upload(&z, shape).unwrap(),
                        &w,
                        sign,
                        reduce,
                    )
                    .unwrap();
                let (lg, dg) = g
                    .dsm_loss(
                        &g.upload(&o, shape).unwrap(),
                        &g.upload(&z, shape).unwrap(),
                        &w,
                        sign,
                        reduce,
                    )
                    .unwrap();
                assert_eq!(g.shape(&lg), &[1]);
                assert_eq!(g.shape(&dg), *shape);
                assert_close(
                    &format!("{what} loss"),
                    &g.read(&lg).unwrap(),
                    &c.read(&lc).unwrap(),
                    REDUCTION,
                );
                assert_close(
                    &format!("{what} dout"),
                    &g.read(&dg).unwrap(),
                    &c.read(&dc).unwrap(),
                    POINTWISE,
                );
            }
        }
    }
    // out and z may be one tensor (two read-only bindings of one buffer).
    let x = rand_vec(1000, 9);
    let w = weights(4, 9);
    let xc = c.upload(&x, &[4, 250]).unwrap();
    let xg = g.upload(&x, &[4, 250]).unwrap();
    let (lc, _) = c.dsm_loss(&xc, &xc, &w, 1.0, Reduce::Mean).unwrap();
    let (lg, _) = g.dsm_loss(&xg, &xg, &w, 1.0, Reduce::Mean).unwrap();
    assert_close(
        "aliased loss",
        &g.read(&lg).unwrap(),
        &c.read(&lc).unwrap(),
        REDUCTION,
    );
}

#[test]
fn gpu_adam_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (gscale, max_norm, what) in ADAM_CASES {
        for sizes in [&[1usize, 7][..], &[1000, 65537]] {
            let got = run_adam(&g, sizes, 3, gscale, max_norm);
            let want = run_adam(&c, sizes, 3, gscale, max_norm);
            for (k, (gv, cv)) in got.iter().zip(&want).enumerate() {
                assert_close(&format!("{what} {sizes:?} tensor {k}"), gv, cv, POINTWISE);
            }
        }
    }
}

#[test]
fn gpu_adam_skips_non_finite_and_keeps_value_semantics() {
    let Some(g) = gpu() else { return };
    adam_skip_and_value_semantics(&g);
}

#[test]
fn gpu_ema_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (k, n) in SIZES.into_iter().take(4).enumerate() {
        let (e0, p0) = (rand_vec(n, 90 + k as u64), rand_vec(n, 95 + k as u64));
        let mut ec = c.upload(&e0, &[n]).unwrap();
        let mut eg = g.upload(&e0, &[n]).unwrap();
        for step in 0..3 {
            let rate = 0.9 + 0.03 * step as f32;
            c.ema_update(&mut ec, &c.upload(&p0, &[n]).unwrap(), rate)
                .unwrap();
            g.ema_update(&mut eg, &g.upload(&p0, &[n]).unwrap(), rate)
                .unwrap();
        }
        assert_close(
            &format!("ema n = {n}"),
            &g.read(&eg).unwrap(),
            &c.read(&ec).unwrap(),
            POINTWISE,
        );
    }
}

/// The fused optimizer calls give what the separate ones give: the norm of
/// many tensors as chained accumulating sums (up to f32 rounding: the GPU
/// adds all partial sums in one pass), and Adam + EMA bit for bit, a
/// skipped (non-finite) step included.
fn fused_steps_match_separate<B: TrainOps>(be: &B) {
    let sizes = [1usize, 7, 0, 1000, 65537];
    let xs: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| be.upload(&rand_vec(n, 300 + k as u64), &[n]).unwrap())
        .collect();
    let refs: Vec<&B::Tensor> = xs.iter().collect();
    let mut chained = be.zeros(&[1]).unwrap();
    for x in &xs {
        chained = be.add_sum_squares(&chained, x).unwrap();
    }
    let all = be.sum_squares_all(&refs).unwrap();
    assert_eq!(be.shape(&all), &[1]);
    assert_close(
        "sum_squares_all",
        &be.read(&all).unwrap(),
        &be.read(&chained).unwrap(),
        REDUCTION,
    );
    assert_eq!(be.read(&be.sum_squares_all(&[]).unwrap()).unwrap(), [0.0]);
    assert_eq!(
        be.read(&be.sum_squares_all(&refs[2..3]).unwrap()).unwrap(),
        [0.0]
    );

    let n = 1000;
    let hp = AdamStep::new(1e-2, 3);
    let start = |seed: u64| {
        let v: Vec<f32> = rand_vec(n, seed).iter().map(|x| x.abs()).collect();
        be.upload(&v, &[n]).unwrap()
    };
    let g = be.upload(&rand_vec(n, 9), &[n]).unwrap();
    for total in [all, be.upload(&[f32::NAN], &[1]).unwrap()] {
        let [mut p1, mut m1, mut v1, mut e1] = [11, 12, 13, 14].map(start);
        let [mut p2, mut m2, mut v2, mut e2] = [11, 12, 13, 14].map(start);
        be.adam_step(&mut p1, &g, &mut m1, &mut v1, &hp, &total)
            .unwrap();
        be.ema_update(&mut e1, &p1, 0.95).unwrap();
        be.adam_ema_step(&mut p2, &g, &mut m2, &mut v2, &hp, &total, &mut e2, 0.95)
            .unwrap();
        for (what, a, b) in [
            ("param", &p1, &p2),
            ("m", &m1, &m2),
            ("v", &v1, &v2),
            ("ema", &e1, &e2),
        ] {
            let (a, b) = (be.read(a).unwrap(), be.read(b).unwrap());
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "adam_ema_step {what} differs from adam_step + ema_update"
            );
        }
        assert_ne!(
            be.read(&e2).unwrap(),
            be.read(&start(14)).unwrap(),
            "the EMA moved"
        );
    }
}

#[test]
fn cpu_fused_optimizer_steps_match_separate() {
    fused_steps_match_separate(&cpu());
}

#[test]
fn gpu_fused_optimizer_steps_match_separate() {
    let Some(g) = gpu() else { return };
    fused_steps_match_separate(&g);
}

fn is_shape<T: std::fmt::Debug>(what: &str, r: scoredd::error::Result<T>) {
    match r {
        Err(Error::Shape { .. }) => {}
        other => panic!("{what}: expected Error::Shape, got {other:?}"),
    }
}

fn bad_shapes<B: TrainOps>(be: &B) {
    let t = |shape: &[usize]| be.zeros(shape).unwrap();
    let w2 = [1.0f32, 1.0];
    // dsm_loss
    is_shape(
        "dsm out/z",
        be.dsm_loss(&t(&[2, 3]), &t(&[2, 4]), &w2, 1.0, Reduce::Mean),
    );
    is_shape(
        "dsm weights",
        be.dsm_loss(&t(&[3, 3]), &t(&[3, 3]), &w2, 1.0, Reduce::Sum),
    );
    is_shape(
        "dsm empty batch",
        be.dsm_loss(&t(&[0, 3]), &t(&[0, 3]), &[], 1.0, Reduce::Mean),
    );
    is_shape(
        "dsm empty sample",
        be.dsm_loss(&t(&[2, 0]), &t(&[2, 0]), &w2, 1.0, Reduce::Mean),
    );
    is_shape(
        "dsm rank 0",
        be.dsm_loss(&t(&[]), &t(&[]), &[1.0], 1.0, Reduce::Mean),
    );
    // add_sum_squares
    is_shape("acc [2]", be.add_sum_squares(&t(&[2]), &t(&[5])));
    // adam_step
    let hp = AdamStep::new(1e-3, 1);
    let one = be.upload(&[1.0], &[1]).unwrap();
    let (mut p, mut m, mut v) = (t(&[4]), t(&[4]), t(&[4]));
    is_shape(
        "adam grad",
        be.adam_step(&mut p, &t(&[5]), &mut m, &mut v, &hp, &one),
    );
    let mut m5 = t(&[5]);
    is_shape(
        "adam m",
        be.adam_step(&mut p, &t(&[4]), &mut m5, &mut v, &hp, &one),
    );
    let mut v22 = t(&[2, 2]);
    is_shape(
        "adam v",
        be.adam_step(&mut p, &t(&[4]), &mut m, &mut v22, &hp, &one),
    );
    is_shape(
        "adam total",
        be.adam_step(&mut p, &t(&[4]), &mut m, &mut v, &hp, &t(&[2])),
    );
    // Step 0 has no bias correction: a typed error, not a panic.
    let zero = AdamStep::new(1e-3, 0);
    assert!(matches!(
        be.adam_step(&mut p, &t(&[4]), &mut m, &mut v, &zero, &one),
        Err(Error::Invalid(_))
    ));
    // ema_update
    let mut e = t(&[3]);
    is_shape("ema", be.ema_update(&mut e, &t(&[1, 3]), 0.9));
}

#[test]
fn bad_shapes_are_typed_errors() {
    bad_shapes(&cpu());
    if let Some(g) = gpu() {
        bad_shapes(&g);
    }
}

#[test]
fn reduce_is_a_lowercase_serde_enum() {
    assert_eq!(serde_json::to_string(&Reduce::Sum).unwrap(), "\"sum\"");
    assert_eq!(
        serde_json::from_str::<Reduce>("\"mean\"").unwrap(),
        Reduce::Mean
    );
    assert_eq!(Reduce::default(), Reduce::Mean);
}
