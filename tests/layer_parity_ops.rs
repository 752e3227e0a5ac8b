//! Every layer op of the GPU backend ([`Backend`] primitives, [`ModuleOps`],
//! [`ScoreDdOps`]) against the CPU backend, forward and backward, on odd shapes (channel counts, heights and widths that are not
//! multiples of the kernels' 64-wide workgroups), plus bad shapes.
//!
//! Tolerance: max |gpu − cpu| ≤ 1e-4 × max |cpu| for every output (the GPU sums
//! in f32 with tree reductions, the CPU in f64); dropout masks bit-identical.
//! The GPU-only adjoint checks use 1e-5 relative to the inner products' scale.

mod common;

use common::{cpu, gpu, rand_vec};
use scoredd::backend::{Backend, ModuleOps, Pointwise, ScoreDdOps};
use scoredd::error::Error;
use scoredd::rng::RngStream;

const REL: f32 = 1e-4;

type Host = (Vec<f32>, Vec<usize>);

/// Uploads `$inputs` to the CPU and the GPU backend, binds them as `$t` with the
/// backend as `$be`, evaluates `$body` (a `Vec` of output tensors, `?` allowed)
/// on both and returns both sets of outputs read back, `(cpu, gpu)`.
macro_rules! on_both {
    ($c:expr, $g:expr, $inputs:expr, |$be:ident, $t:ident| $body:expr) => {{
        let inputs: &[Host] = $inputs;
        let cpu_out: Vec<Host> = {
            let $be = $c;
            let $t: Vec<_> = inputs
                .iter()
                .map(|(d, s)| $be.upload(d, s).unwrap())
                .collect();
            let outs =
                (|| -> scoredd::error::Result<Vec<_>> { Ok($body) })().expect("cpu op failed");
            outs.iter()
                .map(|o| ($be.read(o).unwrap(), $be.shape(o).to_vec()))
                .collect()
        };
        let gpu_out: Vec<Host> = {
            let $be = $g;
            let $t: Vec<_> = inputs
                .iter()
                .map(|(d, s)| $be.upload(d, s).unwrap())
                .collect();
            let outs =
                (|| -> scoredd::error::Result<Vec<_>> { Ok($body) })().expect("gpu op failed");
            outs.iter()
                .map(|o| ($be.read(o).unwrap(), $be.shape(o).to_vec()))
                .collect()
        };
        (cpu_out, gpu_out)
    }};
}

/// Random inputs of the given shapes, values in [-scale, scale) + offset.
fn inputs(shapes: &[&[usize]], seed: u64) -> Vec<Host> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = s.iter().product();
            (rand_vec(n, seed * 31 + i as u64), s.to_vec())
        })
        .collect()
}

/// Compares every output: same shape, max |diff| ≤ REL × max |cpu|.
fn check(what: &str, (cpu, gpu): (Vec<Host>, Vec<Host>)) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: output counts differ");
    for (k, ((c, cs), (g, gs))) in cpu.iter().zip(&gpu).enumerate() {
        assert_eq!(cs, gs, "{what} output {k}: shapes differ");
        assert_eq!(c.len(), g.len(), "{what} output {k}: lengths differ");
        let scale = c.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        let (mut worst, mut at) = (0.0f32, 0);
        for (i, (x, y)) in g.iter().zip(c).enumerate() {
            let d = (x - y).abs();
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            if !(d <= worst) {
                worst = d;
                at = i;
            }
        }
        eprintln!(
            "{what} output {k}: max |diff| / max |cpu| = {:.2e}",
            worst / scale
        );
        assert!(
            worst <= REL * scale,
            "{what} output {k} {cs:?}: max |diff| {worst:e} at {at} (gpu {} vs cpu {}) exceeds {REL:e} × {scale:e}",
            g[at],
            c[at]
        );
    }
}

fn shape_err<T>(what: &str, r: scoredd::error::Result<T>) {
    match r {
        Err(Error::Shape { .. }) => {}
        Err(e) => panic!("{what}: expected Error::Shape, got {e:?}"),
        Ok(_) => panic!("{what}: expected Error::Shape, got a result"),
    }
}

const IMAGES: [[usize; 4]; 4] = [[3, 6, 6, 10], [2, 5, 7, 9], [1, 3, 1, 1], [3, 64, 16, 16]];

#[test]
fn pointwise_ops_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, s) in IMAGES.iter().enumerate() {
        let inp = inputs(&[s, s], i as u64);
        let what = format!("{s:?}");
        check(
            &format!("axpby {what}"),
            on_both!(&c, &g, &inp, |be, t| vec![
                be.axpby(0.7, &t[0], -1.3, &t[1])?,
                be.axpby(2.5, &t[0], 0.0, &t[0])?
            ]),
        );
        check(
            &format!("mul {what}"),
            on_both!(&c, &g, &inp, |be, t| vec![
                be.mul(&t[0], &t[1])?,
                be.mul(&t[1], &t[1])?
            ]),
        );
        // Wider inputs reach silu's saturating tails.
        let wide: Vec<Host> = inp
            .iter()
            .map(|(d, s)| (d.iter().map(|v| v * 12.0).collect(), s.clone()))
            .collect();
        check(
            &format!("silu {what}"),
            on_both!(&c, &g, &wide, |be, t| vec![be.silu(&t[0])?]),
        );
        check(
            &format!("silu_backward {what}"),
            on_both!(&c, &g, &wide, |be, t| vec![be.silu_backward(&t[0], &t[1])?]),
        );
    }
}

/// Every op of the elementwise registry, generically: a new op is checked
/// here by being declared. Inputs span ±12, far enough to reach silu's
/// saturating tails; the scalars are ones no op should ignore by accident.
#[test]
fn every_pointwise_op_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for &op in Pointwise::ALL {
        for (i, s) in IMAGES.iter().enumerate() {
            let shapes = vec![&s[..]; op.arity()];
            let mut inp = inputs(&shapes, 90 + i as u64);
            inp.iter_mut()
                .for_each(|(d, _)| d.iter_mut().for_each(|v| *v *= 12.0));
            check(
                &format!("{} {s:?}", op.name()),
                on_both!(&c, &g, &inp, |be, t| {
                    let refs: Vec<_> = t.iter().collect();
                    vec![be.pointwise(op, &refs, [0.7, -1.3])?]
                }),
            );
        }
    }
}

#[test]
fn bias_ops_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let shapes: [&[usize]; 5] = [
        &[3, 6, 6, 10],
        &[3, 64, 16, 16],
        &[5, 70],
        &[2, 3, 5],
        &[4, 9, 1, 1],
    ];
    for (i, s) in shapes.iter().enumerate() {
        let (b, ch) = (s[0], s[1]);
        let inp = inputs(&[s, &[ch], &[b, ch]], 10 + i as u64);
        check(
            &format!("add_bias/add_sample_bias {s:?}"),
            on_both!(&c, &g, &inp, |be, t| vec![
                be.add_bias(&t[0], &t[1])?,
                be.add_sample_bias(&t[0], &t[2])?
            ]),
        );
        check(
            &format!("bias_grad/sample_bias_grad {s:?}"),
            on_both!(&c, &g, &inp, |be, t| vec![
                be.bias_grad(&t[0])?,
                be.sample_bias_grad(&t[0])?
            ]),
        );
    }
    // More rows than one grid dimension holds (65 535): the workgroups spill into y.
    let s: &[usize] = &[300, 257];
    let inp = inputs(&[s], 18);
    check(
        "bias_grad/sample_bias_grad [300, 257]",
        on_both!(&c, &g, &inp, |be, t| vec![
            be.bias_grad(&t[0])?,
            be.sample_bias_grad(&t[0])?
        ]),
    );
    // Long reductions: 2·4096 values per channel, 4096 per row.
    let s: &[usize] = &[2, 3, 64, 64];
    let inp = inputs(&[s], 19);
    check(
        "bias_grad/sample_bias_grad [2, 3, 64, 64]",
        on_both!(&c, &g, &inp, |be, t| vec![
            be.bias_grad(&t[0])?,
            be.sample_bias_grad(&t[0])?
        ]),
    );
}

#[test]
fn sum_batch_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let shapes: [&[usize]; 4] = [&[3, 6, 6, 10], &[7, 129], &[5], &[1, 2, 3]];
    for (i, s) in shapes.iter().enumerate() {
        let inp = inputs(&[s], 20 + i as u64);
        check(
            &format!("sum_batch {s:?}"),
            on_both!(&c, &g, &inp, |be, t| vec![be.sum_batch(&t[0])?]),
        );
    }
}

#[test]
fn group_norm_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    // (shape, groups)
    let cases: [(&[usize], usize); 8] = [
        (&[3, 6, 6, 10], 3),
        (&[3, 6, 6, 10], 2),
        (&[3, 64, 16, 16], 16),
        (&[2, 6, 5, 7], 6),
        (&[4, 12], 4),
        (&[1, 32, 33, 31], 1),
        // S % 4 == 0, the vec4 kernels: fewer vec4 than invocations, and a
        // group that ends inside the last round of 64.
        (&[2, 10, 3, 4], 5),
        (&[1, 3, 20, 20], 1),
    ];
    for (i, &(s, groups)) in cases.iter().enumerate() {
        let ch = s[1];
        let mut inp = inputs(&[s, &[ch], &[ch], s], 30 + i as u64);
        // An offset well above the spread: the statistics must not cancel.
        inp[0].0.iter_mut().for_each(|v| *v = 3.0 + 2.0 * *v);
        let what = format!("{s:?} groups {groups}");
        check(
            &format!("group_norm {what}"),
            on_both!(&c, &g, &inp, |be, t| {
                let o = be.group_norm(&t[0], &t[1], &t[2], groups, 1e-5)?;
                vec![o.y, o.stats]
            }),
        );
        check(
            &format!("group_norm_backward {what}"),
            on_both!(&c, &g, &inp, |be, t| {
                let o = be.group_norm(&t[0], &t[1], &t[2], groups, 1e-6)?;
                let gr = be.group_norm_backward(&t[0], &t[1], &o.stats, &t[3], groups)?;
                vec![gr.dx, gr.dgamma, gr.dbeta]
            }),
        );
        check(
            &format!("group_norm_silu {what}"),
            on_both!(&c, &g, &inp, |be, t| {
                let o = be.group_norm_silu(&t[0], &t[1], &t[2], groups, 1e-5)?;
                let gr =
                    be.group_norm_silu_backward(&t[0], &t[1], &t[2], &o.stats, &t[3], groups)?;
                vec![o.y, o.stats, gr.dx, gr.dgamma, gr.dbeta]
            }),
        );
    }
}

#[test]
fn resampling_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    // Besides IMAGES: widths of whole vec4 (upsample2x's vec4 kernel; avgpool2x's
    // at widths % 8 == 0, here 24 and 8) with odd heights and plane counts.
    let more = [[2, 3, 5, 12], [1, 1, 3, 4]];
    for (i, s) in IMAGES.iter().chain(&more).enumerate() {
        let up = [s[0], s[1], 2 * s[2], 2 * s[3]];
        let inp = inputs(&[s, &up], 40 + i as u64);
        let what = format!("{s:?}");
        check(
            &format!("upsample2x/fir_up/fir_down_backward {what}"),
            on_both!(&c, &g, &inp, |be, t| vec![
                be.upsample2x(&t[0])?,
                be.fir_up(&t[0])?,
                be.fir_down_backward(&t[0])?
            ]),
        );
        check(
            &format!("avgpool2x/fir_down/fir_up_backward {up:?}"),
            on_both!(&c, &g, &inp, |be, t| vec![
                be.avgpool2x(&t[1])?,
                be.fir_down(&t[1])?,
                be.fir_up_backward(&t[1])?
            ]),
        );
        if s[2] % 2 == 0 && s[3] % 2 == 0 {
            check(
                &format!("avgpool2x/fir_down {what}"),
                on_both!(&c, &g, &inp, |be, t| vec![
                    be.avgpool2x(&t[0])?,
                    be.fir_down(&t[0])?,
                    be.fir_up_backward(&t[0])?
                ]),
            );
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ for the resampling ops and their stated adjoints, on
/// the GPU alone (independent of the CPU backend).
#[test]
fn gpu_resampling_adjoints() {
    let Some(g) = gpu() else { return };
    let s = [2, 3, 6, 10];
    let up = [2, 3, 12, 20];
    let x = rand_vec(s.iter().product(), 50);
    let y = rand_vec(up.iter().product(), 51);
    let (xt, yt) = (g.upload(&x, &s).unwrap(), g.upload(&y, &up).unwrap());
    let read = |t| g.read(&t).unwrap();
    type Op = fn(
        &scoredd::backend::gpu::GpuBackend,
        &scoredd::backend::gpu::GpuTensor,
    ) -> scoredd::error::Result<scoredd::backend::gpu::GpuTensor>;
    // (name, A: small → big, Aᵀ: big → small, factor with Aᵀ = factor · adjoint)
    let pairs: [(&str, Op, Op, f64); 3] = [
        (
            "fir_up",
            |b, t| b.fir_up(t),
            |b, t| b.fir_up_backward(t),
            1.0,
        ),
        (
            "fir_down_backward",
            |b, t| b.fir_down_backward(t),
            |b, t| b.fir_down(t),
            1.0,
        ),
        (
            "upsample2x",
            |b, t| b.upsample2x(t),
            |b, t| b.avgpool2x(t),
            0.25,
        ),
    ];
    for (name, a, at, f) in pairs {
        let ax = read(a(&g, &xt).unwrap());
        let aty = read(at(&g, &yt).unwrap());
        let (l, r) = (f * dot(&ax, &y), dot(&x, &aty));
        let scale = (x.len() as f64).sqrt();
        assert!(
            (l - r).abs() <= 1e-5 * scale,
            "{name}: ⟨Ax, y⟩ = {l} but ⟨x, Aᵀy⟩ = {r}"
        );
    }
}

#[test]
fn channel_ops_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    // Rows of whole vec4 (the vec4 kernels: rows of Ca·S, Cb·S and c0·S all
    // multiples of 4) in the first and the last two cases.
    let cases: [(&[usize], &[usize]); 6] = [
        (&[3, 6, 6, 10], &[3, 5, 6, 10]),
        (&[2, 1, 7, 9], &[2, 64, 7, 9]),
        (&[4, 3], &[4, 7]),
        (&[3, 2, 5], &[3, 0, 5]),
        (&[2, 3, 4], &[2, 5, 4]),
        (&[3, 3, 2, 6], &[3, 1, 2, 6]),
    ];
    for (i, &(sa, sb)) in cases.iter().enumerate() {
        let inp = inputs(&[sa, sb], 60 + i as u64);
        let ca = sa[1];
        check(
            &format!("concat_channels/split_channels {sa:?} ++ {sb:?}"),
            on_both!(&c, &g, &inp, |be, t| {
                let cat = be.concat_channels(&t[0], &t[1])?;
                let (a, b) = be.split_channels(&cat, ca)?;
                let (a1, b1) = be.split_channels(&t[0], 1)?;
                vec![cat, a, b, a1, b1]
            }),
        );
        // Round trip is exact.
        let cat = g
            .concat_channels(
                &g.upload(&inp[0].0, sa).unwrap(),
                &g.upload(&inp[1].0, sb).unwrap(),
            )
            .unwrap();
        let (a, b) = g.split_channels(&cat, ca).unwrap();
        assert_eq!(g.read(&a).unwrap(), inp[0].0);
        assert_eq!(g.read(&b).unwrap(), inp[1].0);
    }
}

#[test]
fn dropout_masks_are_bit_identical() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let cases: [(&[usize], f32, u64); 5] = [
        (&[3, 6, 6, 10], 0.1, 1),
        (&[7, 13], 0.5, 2),
        (&[1001], 0.0, 3),
        (&[2, 64, 16, 16], 0.9, 4),
        (&[3], 0.3, 5),
    ];
    for (shape, p, seed) in cases {
        let rng = RngStream::new(seed, 1234 + seed).derive(9);
        let want = c.read(&c.dropout_mask(shape, p, rng).unwrap()).unwrap();
        let got = g.read(&g.dropout_mask(shape, p, rng).unwrap()).unwrap();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "dropout mask {shape:?} p = {p} differs"
        );
        let kept = got.iter().filter(|&&v| v != 0.0).count() as f32 / got.len() as f32;
        assert!(
            got.len() < 100 || (kept - (1.0 - p)).abs() < 0.05,
            "dropout {shape:?} p = {p}: kept fraction {kept}"
        );
    }
    for p in [-0.1, 1.0, 1.5, f32::NAN] {
        match g.dropout_mask(&[4], p, RngStream::new(0, 0)) {
            Err(Error::Invalid(_)) => {}
            other => panic!("dropout p = {p}: expected Error::Invalid, got {other:?}"),
        }
    }
}

/// Tensors with a zero dimension: empty outputs, and zero (or, for GroupNorm's
/// statistics, mean 0 / rstd 1/√eps) where an output is not empty.
#[test]
fn empty_tensors_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let shapes: [&[usize]; 3] = [&[0, 4, 6, 6], &[2, 4, 0, 6], &[3, 4, 2, 0]];
    for (i, s) in shapes.iter().enumerate() {
        let inp = inputs(&[s, &[4], &[s[0], 4]], 80 + i as u64);
        check(
            &format!("empty {s:?}"),
            on_both!(&c, &g, &inp, |be, t| {
                let gn = be.group_norm(&t[0], &t[1], &t[1], 2, 1e-5)?;
                let gr = be.group_norm_backward(&t[0], &t[1], &gn.stats, &t[0], 2)?;
                let gs = be.group_norm_silu(&t[0], &t[1], &t[1], 2, 1e-5)?;
                let gsr = be.group_norm_silu_backward(&t[0], &t[1], &t[1], &gs.stats, &t[0], 2)?;
                let (a, b) = be.split_channels(&t[0], 1)?;
                vec![
                    be.axpby(1.0, &t[0], 2.0, &t[0])?,
                    be.silu(&t[0])?,
                    be.add_bias(&t[0], &t[1])?,
                    be.add_sample_bias(&t[0], &t[2])?,
                    be.bias_grad(&t[0])?,
                    be.sample_bias_grad(&t[0])?,
                    be.upsample2x(&t[0])?,
                    be.avgpool2x(&t[0])?,
                    be.fir_up(&t[0])?,
                    be.fir_down(&t[0])?,
                    be.concat_channels(&t[0], &t[0])?,
                    be.sum_batch(&t[0])?,
                    gn.y,
                    gn.stats,
                    gr.dx,
                    gr.dgamma,
                    gr.dbeta,
                    gs.y,
                    gsr.dx,
                    gsr.dgamma,
                    a,
                    b,
                ]
            }),
        );
    }
}

#[test]
fn reshape_shares_the_buffer() {
    let Some(g) = gpu() else { return };
    let x = g.upload(&rand_vec(60, 70), &[3, 4, 5]).unwrap();
    let y = g.reshape(&x, &[12, 5]).unwrap();
    assert!(std::sync::Arc::ptr_eq(&x.buf, &y.buf));
    assert_eq!(g.shape(&y), &[12, 5]);
    assert_eq!(g.read(&y).unwrap(), g.read(&x).unwrap());
    shape_err("reshape to 59 elements", g.reshape(&x, &[59]));
}

#[test]
fn bad_shapes_are_shape_errors() {
    let Some(g) = gpu() else { return };
    let t = |s: &[usize]| g.zeros(s).unwrap();
    let (x, x2) = (t(&[2, 6, 4, 4]), t(&[2, 6, 4, 5]));
    shape_err("axpby", g.axpby(1.0, &x, 1.0, &x2));
    shape_err("mul", g.mul(&x, &t(&[2, 6, 16])));
    shape_err("silu_backward", g.silu_backward(&x, &x2));
    shape_err("add_bias", g.add_bias(&x, &t(&[5])));
    shape_err("add_bias rank 1", g.add_bias(&t(&[6]), &t(&[6])));
    shape_err("add_sample_bias", g.add_sample_bias(&x, &t(&[6, 2])));
    shape_err("bias_grad rank 1", g.bias_grad(&t(&[6])));
    shape_err("sample_bias_grad rank 1", g.sample_bias_grad(&t(&[6])));
    shape_err(
        "group_norm groups",
        g.group_norm(&x, &t(&[6]), &t(&[6]), 4, 1e-5),
    );
    shape_err(
        "group_norm 0 groups",
        g.group_norm(&x, &t(&[6]), &t(&[6]), 0, 1e-5),
    );
    shape_err(
        "group_norm gamma",
        g.group_norm(&x, &t(&[3]), &t(&[6]), 3, 1e-5),
    );
    shape_err(
        "group_norm beta",
        g.group_norm(&x, &t(&[6]), &t(&[6, 1]), 3, 1e-5),
    );
    shape_err(
        "group_norm_backward stats",
        g.group_norm_backward(&x, &t(&[6]), &t(&[2, 2, 2]), &x, 3),
    );
    shape_err(
        "group_norm_backward dy",
        g.group_norm_backward(&x, &t(&[6]), &t(&[2, 3, 2]), &x2, 3),
    );
    shape_err("upsample2x rank", g.upsample2x(&t(&[2, 6, 4])));
    shape_err("avgpool2x odd", g.avgpool2x(&x2));
    shape_err("fir_up rank", g.fir_up(&t(&[6, 4, 4])));
    shape_err("fir_down odd", g.fir_down(&x2));
    shape_err("fir_up_backward odd", g.fir_up_backward(&x2));
    shape_err("fir_down_backward rank", g.fir_down_backward(&t(&[4, 4])));
    shape_err("concat batch", g.concat_channels(&x, &t(&[3, 6, 4, 4])));
    shape_err("concat space", g.concat_channels(&x, &x2));
    shape_err("concat rank", g.concat_channels(&x, &t(&[2, 6, 16])));
    shape_err("split too many", g.split_channels(&x, 7));
    shape_err("sum_batch scalar", g.sum_batch(&t(&[])));
}

#[test]
fn pair_distance_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let shapes: [&[usize]; 3] = [&[6, 5, 7, 9], &[2, 64, 16, 16], &[10, 1, 3, 3]];
    for (i, s) in shapes.iter().enumerate() {
        let inp = inputs(&[s], 40 + i as u64);
        check(
            &format!("pair_distance {s:?}"),
            on_both!(&c, &g, &inp, |be, t| vec![be.pair_distance(&t[0])?]),
        );
        check(
            &format!("pair_relative_distance {s:?}"),
            on_both!(
                &c,
                &g,
                &inp,
                |be, t| vec![be.pair_relative_distance(&t[0])?]
            ),
        );
    }
    let odd = g.zeros(&[3, 2, 4, 4]).unwrap();
    assert!(matches!(g.pair_distance(&odd), Err(Error::Shape { .. })));
}
