//! The CPU network ops (`Backend` primitives, `ModuleOps`, `ScoreDdOps`):
//! every backward against central differences of its forward, every forward against naive f64 code written
//! here, on odd shapes (C = 6 in 3 groups, 6 × 10 images, batch 3).
//!
//! Directional checks: for random x, v, dy,
//! (⟨dy, f(x + hv)⟩ − ⟨dy, f(x − hv)⟩)/(2h) ≈ ⟨backward(dy), v⟩, dot products in
//! f64. The direction used on the right is the one actually taken,
//! ((x + hv) − (x − hv))/(2h) after f32 rounding of the two points, so input
//! rounding does not count as error. Tolerances, relative to the larger side:
//! - linear ops (conv, bmm, resampling, concat/split, biases, sum_batch),
//!   h = 0.5 (the difference quotient is exact for a linear map): 1e-4, the
//!   f32 rounding of the outputs being ~1e-6;
//! - nonlinear ops (silu, group_norm, softmax), h = 1e-2 or 1e-3: 1e-3, the
//!   O(h²) truncation plus f32 output rounding divided by 2h being ~1e-4.
//!
//! Forward references: max |diff| ≤ 2e-5 × max |reference| for sums of
//! products (GEMM-like), 1e-5 for pointwise ops and the FIR stencils.

mod common;

use common::{assert_close, cpu, rand_vec};
use scoredd::backend::cpu::{CpuBackend, CpuTensor};
use scoredd::backend::{Backend, Conv2dSpec, ConvEpilogue, ModuleOps, Pointwise, ScoreDdOps};
use scoredd::rng::RngStream;
use scoredd::Error;

const LINEAR_H: f32 = 0.5;
const LINEAR_TOL: f64 = 1e-4;
const NONLINEAR_TOL: f64 = 1e-3;

fn up(c: &CpuBackend, data: &[f32], shape: &[usize]) -> CpuTensor {
    c.upload(data, shape).unwrap()
}

fn rd(c: &CpuBackend, t: &CpuTensor) -> Vec<f32> {
    c.read(t).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn scaled(v: &[f32], s: f32) -> Vec<f32> {
    v.iter().map(|x| x * s).collect()
}

/// Relative error of the directional derivative of x ↦ ⟨dy, f(x)⟩ along a
/// random direction against ⟨grad, v⟩ (see the module docs).
fn dir_err(
    f: &dyn Fn(&[f32]) -> Vec<f32>,
    x: &[f32],
    grad: &[f32],
    dy: &[f32],
    h: f32,
    seed: u64,
) -> (f64, f64, f64) {
    assert_eq!(x.len(), grad.len(), "gradient has the input's length");
    let v = rand_vec(x.len(), seed);
    let xp: Vec<f32> = x.iter().zip(&v).map(|(&x, &v)| x + h * v).collect();
    let xm: Vec<f32> = x.iter().zip(&v).map(|(&x, &v)| x - h * v).collect();
    let (fp, fm) = (f(&xp), f(&xm));
    assert_eq!(fp.len(), dy.len(), "dy has the output's length");
    let fd = (dot(dy, &fp) - dot(dy, &fm)) / (2.0 * h as f64);
    let an: f64 = grad
        .iter()
        .zip(xp.iter().zip(&xm))
        .map(|(&g, (&p, &m))| g as f64 * (p as f64 - m as f64) / (2.0 * h as f64))
        .sum();
    let err = (fd - an).abs() / fd.abs().max(an.abs()).max(1e-30);
    (err, fd, an)
}

#[allow(clippy::too_many_arguments)]
fn dir_check(
    what: &str,
    f: &dyn Fn(&[f32]) -> Vec<f32>,
    x: &[f32],
    grad: &[f32],
    dy: &[f32],
    h: f32,
    tol: f64,
    seed: u64,
) {
    let (err, fd, an) = dir_err(f, x, grad, dy, h, seed);
    assert!(
        err <= tol,
        "{what}: finite difference {fd:.9e} vs backward {an:.9e}: relative error {err:e} > {tol:e}"
    );
}

fn expect_shape<T>(what: &str, r: scoredd::Result<T>, op: &str) {
    match r {
        Err(Error::Shape { op: o, .. }) => assert_eq!(o, op, "{what}"),
        Err(e) => panic!("{what}: expected a shape error from {op}, got {e}"),
        Ok(_) => panic!("{what}: expected a shape error from {op}, got Ok"),
    }
}

// ---------------------------------------------------------------- the checker

#[test]
fn directional_check_catches_a_wrong_gradient() {
    // The check itself must be able to fail: a gradient off by 1 % or with one
    // element wrong is rejected, the right one accepted.
    let c = cpu();
    let shape = [3, 6, 6, 10];
    let x = rand_vec(3 * 6 * 60, 1);
    let dy = rand_vec(x.len(), 2);
    let f = |xs: &[f32]| rd(&c, &c.silu(&up(&c, xs, &shape)).unwrap());
    let g = rd(
        &c,
        &c.silu_backward(&up(&c, &x, &shape), &up(&c, &dy, &shape))
            .unwrap(),
    );
    assert!(dir_err(&f, &x, &g, &dy, 1e-2, 3).0 <= NONLINEAR_TOL);
    assert!(dir_err(&f, &x, &scaled(&g, 1.01), &dy, 1e-2, 3).0 > NONLINEAR_TOL);
    let mut one_off = g.clone();
    let i = (0..g.len())
        .max_by(|&a, &b| (g[a] * dy[a]).abs().total_cmp(&(g[b] * dy[b]).abs()))
        .unwrap();
    one_off[i] += 2.0;
    assert!(dir_err(&f, &x, &one_off, &dy, 1e-2, 3).0 > NONLINEAR_TOL);
}

// ---------------------------------------------------------------- conv2d

// (batch, Cin, H, W, Cout, k, stride, padding)
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);

const CONV_CASES: [ConvCase; 9] = [
    (3, 6, 6, 10, 5, 3, 1, 1),
    (3, 6, 6, 10, 4, 3, 2, 1),
    (3, 4, 6, 10, 7, 3, 1, 0),
    (3, 5, 7, 9, 6, 3, 2, 0),
    (3, 6, 6, 10, 3, 1, 1, 0),
    (2, 3, 6, 10, 4, 1, 2, 0),
    (1, 6, 6, 10, 5, 3, 1, 1),
    (1, 3, 9, 7, 2, 1, 1, 1),
    // A 5×5 "same" conv: its dx runs as a conv of dy on the CPU.
    (3, 3, 7, 6, 4, 5, 1, 2),
];

#[test]
fn conv2d_backward_matches_finite_differences() {
    let c = cpu();
    for (i, &case) in CONV_CASES.iter().enumerate() {
        let (b, ci, h, w, co, k, s, p) = case;
        let spec = Conv2dSpec::new(s, p);
        let (xs, ws) = ([b, ci, h, w], [co, ci, k, k]);
        let seed = 10 * i as u64;
        let x = rand_vec(b * ci * h * w, seed);
        let wt = rand_vec(co * ci * k * k, seed + 1);
        let bias = rand_vec(co, seed + 2);
        let conv = |x: &[f32], wt: &[f32], bias: &[f32]| {
            let out = c
                .conv2d(
                    &up(&c, x, &xs),
                    &up(&c, wt, &ws),
                    Some(&up(&c, bias, &[co])),
                    spec,
                )
                .unwrap();
            (rd(&c, &out), out.shape.clone())
        };
        let (y, ys) = conv(&x, &wt, &bias);
        let dy = rand_vec(y.len(), seed + 3);
        let g = c
            .conv2d_backward(&up(&c, &x, &xs), &up(&c, &wt, &ws), &up(&c, &dy, &ys), spec)
            .unwrap();
        assert_eq!(g.dx.shape, xs);
        assert_eq!(g.dw.shape, ws);
        assert_eq!(g.db.shape, [co]);
        let what = format!("conv {case:?}");
        dir_check(
            &format!("{what} dx"),
            &|xv| conv(xv, &wt, &bias).0,
            &x,
            &rd(&c, &g.dx),
            &dy,
            LINEAR_H,
            LINEAR_TOL,
            seed + 4,
        );
        dir_check(
            &format!("{what} dw"),
            &|wv| conv(&x, wv, &bias).0,
            &wt,
            &rd(&c, &g.dw),
            &dy,
            LINEAR_H,
            LINEAR_TOL,
            seed + 5,
        );
        dir_check(
            &format!("{what} db"),
            &|bv| conv(&x, &wt, bv).0,
            &bias,
            &rd(&c, &g.db),
            &dy,
            LINEAR_H,
            LINEAR_TOL,
            seed + 6,
        );
    }
}

/// The fused conv epilogue's gradients as the ResBlock takes them:
/// conv2d_backward of scale·dy for x, w and bias, scale·dy for the residual
/// and its per-(sample, channel) sums for the per-sample bias.
#[test]
fn conv2d_fused_gradients_match_finite_differences() {
    let c = cpu();
    for (i, &case) in CONV_CASES.iter().enumerate() {
        let (b, ci, h, w, co, k, s, p) = case;
        let spec = Conv2dSpec::new(s, p);
        let (xs, ws) = ([b, ci, h, w], [co, ci, k, k]);
        let seed = 100 + 10 * i as u64;
        let scale = 0.7f32;
        let x = rand_vec(b * ci * h * w, seed);
        let wt = rand_vec(co * ci * k * k, seed + 1);
        let bias = rand_vec(co, seed + 2);
        let sb = rand_vec(b * co, seed + 3);
        let ys = c
            .conv2d(&up(&c, &x, &xs), &up(&c, &wt, &ws), None, spec)
            .unwrap()
            .shape;
        let res = rand_vec(ys.iter().product(), seed + 4);
        // Every operand in one list, so one closure perturbs any of them.
        let ops = [x.clone(), wt.clone(), bias.clone(), sb.clone(), res.clone()];
        let fused = |which: usize, v: &[f32]| {
            let mut o = ops.clone();
            o[which] = v.to_vec();
            let t = |j: usize, sh: &[usize]| up(&c, &o[j], sh);
            let (bt, sbt, rt) = (t(2, &[co]), t(3, &[b, co]), t(4, &ys));
            let ep = ConvEpilogue {
                bias: &bt,
                sample_bias: Some(&sbt),
                residual: Some(&rt),
                scale,
            };
            rd(
                &c,
                &c.conv2d_fused(&t(0, &xs), &t(1, &ws), ep, spec).unwrap(),
            )
        };
        let dy = rand_vec(res.len(), seed + 5);
        let sdy = up(&c, &scaled(&dy, scale), &ys);
        let g = c
            .conv2d_backward(&up(&c, &x, &xs), &up(&c, &wt, &ws), &sdy, spec)
            .unwrap();
        let dsb = rd(&c, &c.sample_bias_grad(&sdy).unwrap());
        let grads = [
            rd(&c, &g.dx),
            rd(&c, &g.dw),
            rd(&c, &g.db),
            dsb,
            scaled(&dy, scale),
        ];
        for (j, name) in ["dx", "dw", "dbias", "dsample_bias", "dresidual"]
            .iter()
            .enumerate()
        {
            let what = format!("conv2d_fused {case:?} {name}");
            let f = |v: &[f32]| fused(j, v);
            dir_check(
                &what,
                &f,
                &ops[j],
                &grads[j],
                &dy,
                LINEAR_H,
                LINEAR_TOL,
                seed + 6 + j as u64,
            );
        }
    }
}

#[test]
fn conv2d_backward_bad_shapes() {
    let c = cpu();
    let z = |s: &[usize]| c.zeros(s).unwrap();
    let spec = Conv2dSpec::new(1, 1);
    expect_shape(
        "dy of the wrong size",
        c.conv2d_backward(
            &z(&[2, 3, 8, 8]),
            &z(&[4, 3, 3, 3]),
            &z(&[2, 4, 7, 8]),
            spec,
        ),
        "conv2d_backward",
    );
    expect_shape(
        "weight channels",
        c.conv2d_backward(
            &z(&[2, 3, 8, 8]),
            &z(&[4, 2, 3, 3]),
            &z(&[2, 4, 8, 8]),
            spec,
        ),
        "conv2d_backward",
    );
    expect_shape(
        "3-D input",
        c.conv2d_backward(&z(&[3, 8, 8]), &z(&[4, 3, 3, 3]), &z(&[2, 4, 8, 8]), spec),
        "conv2d_backward",
    );
}

// ---------------------------------------------------------------- bmm

/// op(a[i])·op(b[i]) in f64; `None` batch = a 2-D operand, broadcast.
#[allow(clippy::too_many_arguments)]
fn naive_bmm(
    a: &[f32],
    a_batched: bool,
    b: &[f32],
    b_batched: bool,
    nb: usize,
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
) -> Vec<f32> {
    let mut c = vec![0.0f32; nb * m * n];
    for bi in 0..nb {
        let ao = if a_batched { bi * m * k } else { 0 };
        let bo = if b_batched { bi * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for l in 0..k {
                    let av = if ta {
                        a[ao + l * m + i]
                    } else {
                        a[ao + i * k + l]
                    };
                    let bv = if tb {
                        b[bo + j * k + l]
                    } else {
                        b[bo + l * n + j]
                    };
                    s += av as f64 * bv as f64;
                }
                c[(bi * m + i) * n + j] = s as f32;
            }
        }
    }
    c
}

fn operand_shape(batch: Option<usize>, rows: usize, cols: usize, t: bool) -> Vec<usize> {
    let (r, c) = if t { (cols, rows) } else { (rows, cols) };
    match batch {
        Some(b) => vec![b, r, c],
        None => vec![r, c],
    }
}

#[test]
fn bmm_matches_naive_for_every_transpose_and_broadcast() {
    let c = cpu();
    let (m, k, n) = (7, 13, 5);
    for nb in [1usize, 3, 4] {
        for (ab, bb) in [(true, true), (false, true), (true, false)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    let sa = operand_shape(ab.then_some(nb), m, k, ta);
                    let sb = operand_shape(bb.then_some(nb), k, n, tb);
                    let seed = (nb * 100) as u64 + 10 * ta as u64 + tb as u64;
                    let a = rand_vec(sa.iter().product(), seed);
                    let b = rand_vec(sb.iter().product(), seed + 1000);
                    let out = c.bmm(&up(&c, &a, &sa), &up(&c, &b, &sb), ta, tb).unwrap();
                    assert_eq!(out.shape, [nb, m, n], "{sa:?} {sb:?} {ta} {tb}");
                    assert_close(
                        &format!("bmm {sa:?}×{sb:?} ta={ta} tb={tb}"),
                        &rd(&c, &out),
                        &naive_bmm(&a, ab, &b, bb, nb, (m, k, n), ta, tb),
                        2e-5,
                    );
                }
            }
        }
    }
    // Two 2-D operands: a plain (transposed) matmul, [M, N].
    let (a, b) = (rand_vec(k * m, 1), rand_vec(n * k, 2));
    let out = c
        .bmm(&up(&c, &a, &[k, m]), &up(&c, &b, &[n, k]), true, true)
        .unwrap();
    assert_eq!(out.shape, [m, n]);
    assert_close(
        "bmm 2-D × 2-D",
        &rd(&c, &out),
        &naive_bmm(&a, false, &b, false, 1, (m, k, n), true, true),
        2e-5,
    );
    // Bigger than one GEMM tile, batch below and above the thread count.
    for nb in [1usize, 5] {
        let (m, k, n) = (67, 130, 41);
        let (a, b) = (rand_vec(nb * k * m, 7), rand_vec(nb * k * n, 8));
        let out = c
            .bmm(
                &up(&c, &a, &[nb, k, m]),
                &up(&c, &b, &[nb, k, n]),
                true,
                false,
            )
            .unwrap();
        assert_close(
            &format!("bmm large batch {nb}"),
            &rd(&c, &out),
            &naive_bmm(&a, true, &b, true, nb, (m, k, n), true, false),
            2e-5,
        );
    }
}

#[test]
fn bmm_backward_matches_finite_differences() {
    // c = op(a)·op(b): da and db written with bmm itself, for all four (ta, tb).
    let c = cpu();
    let (nb, m, k, n) = (3, 6, 10, 7);
    for ta in [false, true] {
        for tb in [false, true] {
            let sa = operand_shape(Some(nb), m, k, ta);
            let sb = operand_shape(Some(nb), k, n, tb);
            let seed = 50 + 2 * ta as u64 + tb as u64;
            let a = rand_vec(nb * m * k, seed);
            let b = rand_vec(nb * k * n, seed + 10);
            let dy = rand_vec(nb * m * n, seed + 20);
            let (at, bt, dyt) = (up(&c, &a, &sa), up(&c, &b, &sb), up(&c, &dy, &[nb, m, n]));
            let da = if ta {
                c.bmm(&bt, &dyt, tb, true)
            } else {
                c.bmm(&dyt, &bt, false, !tb)
            }
            .unwrap();
            let db = if tb {
                c.bmm(&dyt, &at, true, ta)
            } else {
                c.bmm(&at, &dyt, !ta, false)
            }
            .unwrap();
            assert_eq!(da.shape, sa);
            assert_eq!(db.shape, sb);
            let f = |a: &[f32], b: &[f32]| {
                rd(
                    &c,
                    &c.bmm(&up(&c, a, &sa), &up(&c, b, &sb), ta, tb).unwrap(),
                )
            };
            dir_check(
                &format!("bmm da ta={ta} tb={tb}"),
                &|av| f(av, &b),
                &a,
                &rd(&c, &da),
                &dy,
                LINEAR_H,
                LINEAR_TOL,
                seed + 30,
            );
            dir_check(
                &format!("bmm db ta={ta} tb={tb}"),
                &|bv| f(&a, bv),
                &b,
                &rd(&c, &db),
                &dy,
                LINEAR_H,
                LINEAR_TOL,
                seed + 40,
            );
        }
    }
    // A broadcast 2-D weight: its gradient sums over the batch.
    let (a, w, dy) = (
        rand_vec(nb * m * k, 1),
        rand_vec(k * n, 2),
        rand_vec(nb * m * n, 3),
    );
    let dw = c
        .sum_batch(
            &c.bmm(
                &up(&c, &a, &[nb, m, k]),
                &up(&c, &dy, &[nb, m, n]),
                true,
                false,
            )
            .unwrap(),
        )
        .unwrap();
    dir_check(
        "bmm broadcast weight",
        &|wv| {
            rd(
                &c,
                &c.bmm(&up(&c, &a, &[nb, m, k]), &up(&c, wv, &[k, n]), false, false)
                    .unwrap(),
            )
        },
        &w,
        &rd(&c, &dw),
        &dy,
        LINEAR_H,
        LINEAR_TOL,
        4,
    );
}

#[test]
fn bmm_bad_shapes() {
    let c = cpu();
    let z = |s: &[usize]| c.zeros(s).unwrap();
    expect_shape(
        "inner",
        c.bmm(&z(&[2, 3, 4]), &z(&[2, 5, 6]), false, false),
        "bmm",
    );
    expect_shape(
        "inner ᵀ",
        c.bmm(&z(&[2, 3, 4]), &z(&[2, 4, 6]), true, false),
        "bmm",
    );
    expect_shape(
        "batch",
        c.bmm(&z(&[2, 3, 4]), &z(&[3, 4, 6]), false, false),
        "bmm",
    );
    expect_shape(
        "rank 4",
        c.bmm(&z(&[1, 2, 3, 4]), &z(&[4, 6]), false, false),
        "bmm",
    );
    expect_shape("rank 1", c.bmm(&z(&[4]), &z(&[4, 6]), false, false), "bmm");
}

// ---------------------------------------------------------------- softmax

#[test]
fn softmax_matches_exp_normalise() {
    let c = cpu();
    for shape in [vec![3, 6, 37], vec![5], vec![2, 1], vec![4, 3000]] {
        let mut x = scaled(&rand_vec(shape.iter().product(), 5), 4.0);
        x[0] = 80.0; // exp(80) overflows f32 unless the max is subtracted
        let y = rd(&c, &c.softmax(&up(&c, &x, &shape)).unwrap());
        let n = *shape.last().unwrap();
        let mut want = vec![0.0f32; x.len()];
        for (r, xr) in x.chunks(n).enumerate() {
            let e: Vec<f64> = xr.iter().map(|&v| (v as f64).exp()).collect();
            let s: f64 = e.iter().sum();
            for j in 0..n {
                want[r * n + j] = (e[j] / s) as f32;
            }
            let row_sum: f64 = y[r * n..(r + 1) * n].iter().map(|&v| v as f64).sum();
            assert!(
                (row_sum - 1.0).abs() < 1e-5,
                "{shape:?} row {r} sums to {row_sum}"
            );
        }
        assert_close(&format!("softmax {shape:?}"), &y, &want, 1e-5);
    }
    expect_shape("scalar", c.softmax(&c.zeros(&[]).unwrap()), "softmax");
    expect_shape(
        "backward shapes",
        c.softmax_backward(&c.zeros(&[2, 3]).unwrap(), &c.zeros(&[3, 2]).unwrap()),
        "softmax_backward",
    );
}

#[test]
fn softmax_backward_matches_finite_differences() {
    let c = cpu();
    let shape = [3, 6, 37];
    let x = scaled(&rand_vec(3 * 6 * 37, 6), 3.0);
    let dy = rand_vec(x.len(), 7);
    let y = c.softmax(&up(&c, &x, &shape)).unwrap();
    let dx = rd(&c, &c.softmax_backward(&y, &up(&c, &dy, &shape)).unwrap());
    dir_check(
        "softmax",
        &|xv| rd(&c, &c.softmax(&up(&c, xv, &shape)).unwrap()),
        &x,
        &dx,
        &dy,
        1e-2,
        NONLINEAR_TOL,
        8,
    );
}

// ---------------------------------------------------------------- pointwise

#[test]
fn pointwise_ops_match_naive() {
    let c = cpu();
    let shape = [3, 6, 6, 10];
    let n = 3 * 6 * 60;
    let (a, b) = (scaled(&rand_vec(n, 1), 6.0), rand_vec(n, 2));
    let (at, bt) = (up(&c, &a, &shape), up(&c, &b, &shape));
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 0.5 * x - 2.0 * y).collect();
    assert_close(
        "axpby",
        &rd(&c, &c.axpby(0.5, &at, -2.0, &bt).unwrap()),
        &want,
        1e-6,
    );
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    assert_close("mul", &rd(&c, &c.mul(&at, &bt).unwrap()), &want, 1e-6);
    let want: Vec<f32> = a
        .iter()
        .map(|&x| (x as f64 / (1.0 + (-x as f64).exp())) as f32)
        .collect();
    assert_close("silu", &rd(&c, &c.silu(&at).unwrap()), &want, 1e-6);
    // Far tails: no NaN, silu → 0 and x.
    let tails = up(&c, &[-200.0, -90.0, 90.0, 200.0], &[4]);
    let s = rd(&c, &c.silu(&tails).unwrap());
    assert!(s[0].abs() < 1e-30 && s[1].abs() < 1e-30, "{s:?}");
    assert!(s[2] == 90.0 && s[3] == 200.0, "{s:?}");
    let ds = rd(
        &c,
        &c.silu_backward(&tails, &up(&c, &[1.0; 4], &[4])).unwrap(),
    );
    assert!(ds.iter().all(|v| v.is_finite()), "{ds:?}");
    for op in ["axpby", "mul", "silu_backward"] {
        let z = c.zeros(&[3, 6, 6, 9]).unwrap();
        let r = match op {
            "axpby" => c.axpby(1.0, &at, 1.0, &z),
            "mul" => c.mul(&at, &z),
            _ => c.silu_backward(&at, &z),
        };
        expect_shape(op, r, op);
    }
}

#[test]
fn pointwise_backward_matches_finite_differences() {
    let c = cpu();
    let shape = [3, 6, 6, 10];
    let n = 3 * 6 * 60;
    let x = scaled(&rand_vec(n, 11), 5.0);
    let (o, dy) = (rand_vec(n, 12), rand_vec(n, 13));
    let dx = rd(
        &c,
        &c.silu_backward(&up(&c, &x, &shape), &up(&c, &dy, &shape))
            .unwrap(),
    );
    dir_check(
        "silu",
        &|xv| rd(&c, &c.silu(&up(&c, xv, &shape)).unwrap()),
        &x,
        &dx,
        &dy,
        1e-2,
        NONLINEAR_TOL,
        14,
    );
    let dmul = rd(
        &c,
        &c.mul(&up(&c, &dy, &shape), &up(&c, &o, &shape)).unwrap(),
    );
    dir_check(
        "mul",
        &|xv| {
            rd(
                &c,
                &c.mul(&up(&c, xv, &shape), &up(&c, &o, &shape)).unwrap(),
            )
        },
        &x,
        &dmul,
        &dy,
        LINEAR_H,
        LINEAR_TOL,
        15,
    );
    let dax = rd(
        &c,
        &c.axpby(0.7, &up(&c, &dy, &shape), 0.0, &up(&c, &dy, &shape))
            .unwrap(),
    );
    dir_check(
        "axpby",
        &|xv| {
            rd(
                &c,
                &c.axpby(0.7, &up(&c, xv, &shape), -1.3, &up(&c, &o, &shape))
                    .unwrap(),
            )
        },
        &x,
        &dax,
        &dy,
        LINEAR_H,
        LINEAR_TOL,
        16,
    );
}

/// Every backward op of the elementwise registry against central
/// differences of the forward it declares (`backward of`), generically: a new
/// op is checked here by being declared.
#[test]
fn every_pointwise_backward_matches_finite_differences() {
    let c = cpu();
    let shape = [3, 6, 6, 10];
    let n = 3 * 6 * 60;
    let mut checked = 0;
    for (k, &op) in Pointwise::ALL.iter().enumerate() {
        let Some(forward) = op.backward_of() else {
            continue;
        };
        assert_eq!(
            forward.arity(),
            1,
            "{}: a backward's forward is unary",
            op.name()
        );
        assert_eq!(op.arity(), 2, "{}: a backward takes (x, dy)", op.name());
        let seed = 20 + 3 * k as u64;
        let (x, dy) = (scaled(&rand_vec(n, seed), 5.0), rand_vec(n, seed + 1));
        let dx = rd(
            &c,
            &c.pointwise(
                op,
                &[&up(&c, &x, &shape), &up(&c, &dy, &shape)],
                [0.7, -1.3],
            )
            .unwrap(),
        );
        dir_check(
            op.name(),
            &|xv| {
                let t = up(&c, xv, &shape);
                rd(&c, &c.pointwise(forward, &[&t], [0.7, -1.3]).unwrap())
            },
            &x,
            &dx,
            &dy,
            1e-2,
            NONLINEAR_TOL,
            seed + 2,
        );
        checked += 1;
    }
    assert!(checked > 0, "the registry declares no backward op");
}

#[test]
fn reshape_shares_the_data() {
    let c = cpu();
    let x = up(&c, &rand_vec(60, 1), &[3, 4, 5]);
    let r = c.reshape(&x, &[12, 5]).unwrap();
    assert_eq!(r.shape, [12, 5]);
    assert!(std::sync::Arc::ptr_eq(&r.data, &x.data));
    expect_shape("count", c.reshape(&x, &[7, 9]), "reshape");
}

// ---------------------------------------------------------------- group norm

/// Naive GroupNorm in f64: (y, per-(b, g) mean and 1/std).
fn naive_group_norm(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    (b, ch, s): (usize, usize, usize),
    groups: usize,
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let cg = ch / groups;
    let mut y = vec![0.0f32; x.len()];
    let mut stats = vec![0.0f32; b * groups * 2];
    for bi in 0..b {
        for g in 0..groups {
            let idx = |c: usize, j: usize| (bi * ch + g * cg + c) * s + j;
            let vals: Vec<f64> = (0..cg)
                .flat_map(|c| (0..s).map(move |j| (c, j)))
                .map(|(c, j)| x[idx(c, j)] as f64)
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            stats[(bi * groups + g) * 2] = mean as f32;
            stats[(bi * groups + g) * 2 + 1] = rstd as f32;
            for c in 0..cg {
                for j in 0..s {
                    let ci = g * cg + c;
                    y[idx(c, j)] = ((x[idx(c, j)] as f64 - mean) * rstd * gamma[ci] as f64
                        + beta[ci] as f64) as f32;
                }
            }
        }
    }
    (y, stats)
}

#[test]
fn group_norm_matches_naive() {
    let c = cpu();
    let eps = 1e-6f32;
    for (shape, groups) in [
        (vec![3, 6, 6, 10], 3),
        (vec![2, 6, 7], 2),
        (vec![3, 6], 6),
        (vec![1, 8, 5, 5], 1),
    ] {
        let (b, ch) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        // Offset data: the mean is far from 0, which one-pass variances get wrong.
        let x: Vec<f32> = rand_vec(b * ch * s, 21)
            .iter()
            .map(|v| 3.0 * v + 20.0)
            .collect();
        let (gamma, beta) = (rand_vec(ch, 22), rand_vec(ch, 23));
        let out = c
            .group_norm(
                &up(&c, &x, &shape),
                &up(&c, &gamma, &[ch]),
                &up(&c, &beta, &[ch]),
                groups,
                eps,
            )
            .unwrap();
        assert_eq!(out.stats.shape, [b, groups, 2]);
        let (y, stats) = naive_group_norm(&x, &gamma, &beta, (b, ch, s), groups, eps as f64);
        // The output is O(1) but computed from x − mean with |x| ≈ 20: 2e-5.
        assert_close(
            &format!("group_norm y {shape:?}"),
            &rd(&c, &out.y),
            &y,
            2e-5,
        );
        assert_close(
            &format!("group_norm stats {shape:?}"),
            &rd(&c, &out.stats),
            &stats,
            1e-6,
        );
        if s == 1 && ch == groups {
            continue; // one value per group: the output is beta
        }
        // gamma = 1, beta = 0: every group has mean 0 and variance 1.
        let ones = vec![1.0f32; ch];
        let y = rd(
            &c,
            &c.group_norm(
                &up(&c, &x, &shape),
                &up(&c, &ones, &[ch]),
                &c.zeros(&[ch]).unwrap(),
                groups,
                eps,
            )
            .unwrap()
            .y,
        );
        for grp in y.chunks(ch / groups * s) {
            let n = grp.len() as f64;
            let mean = grp.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = grp.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "{shape:?}: {mean} {var}"
            );
        }
    }
}

#[test]
fn group_norm_backward_matches_finite_differences() {
    let c = cpu();
    let (shape, groups, eps) = ([3, 6, 6, 10], 3, 1e-5f32);
    let n = 3 * 6 * 60;
    let x: Vec<f32> = rand_vec(n, 31).iter().map(|v| 2.0 * v + 0.5).collect();
    let gamma: Vec<f32> = rand_vec(6, 32).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = rand_vec(6, 33);
    let gn = |x: &[f32], g: &[f32], b: &[f32]| {
        c.group_norm(
            &up(&c, x, &shape),
            &up(&c, g, &[6]),
            &up(&c, b, &[6]),
            groups,
            eps,
        )
        .unwrap()
    };
    let fwd = gn(&x, &gamma, &beta);
    // dy with a mean and correlated with y, so that every term of the
    // backward formula carries weight.
    let dy: Vec<f32> = rand_vec(n, 34)
        .iter()
        .zip(rd(&c, &fwd.y))
        .map(|(r, y)| r + 0.3 + 0.5 * y)
        .collect();
    let g = c
        .group_norm_backward(
            &up(&c, &x, &shape),
            &up(&c, &gamma, &[6]),
            &fwd.stats,
            &up(&c, &dy, &shape),
            groups,
        )
        .unwrap();
    assert_eq!(
        (g.dgamma.shape.as_slice(), g.dbeta.shape.as_slice()),
        (&[6][..], &[6][..])
    );
    dir_check(
        "group_norm dx",
        &|xv| rd(&c, &gn(xv, &gamma, &beta).y),
        &x,
        &rd(&c, &g.dx),
        &dy,
        1e-2,
        NONLINEAR_TOL,
        35,
    );
    dir_check(
        "group_norm dgamma",
        &|gv| rd(&c, &gn(&x, gv, &beta).y),
        &gamma,
        &rd(&c, &g.dgamma),
        &dy,
        1e-2,
        NONLINEAR_TOL,
        36,
    );
    dir_check(
        "group_norm dbeta",
        &|bv| rd(&c, &gn(&x, &gamma, bv).y),
        &beta,
        &rd(&c, &g.dbeta),
        &dy,
        1e-2,
        NONLINEAR_TOL,
        37,
    );
}

/// GroupNorm's backward in f64 from the textbook formula:
/// dx = rstd·(γ·dy − mean(γ·dy) − x̂·mean(γ·dy·x̂)), dγ = Σ dy·x̂, dβ = Σ dy.
fn naive_group_norm_backward(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    (b, ch, s): (usize, usize, usize),
    groups: usize,
    eps: f64,
) -> [Vec<f32>; 3] {
    let cg = ch / groups;
    let (mut dx, mut dg, mut db) = (vec![0.0f32; x.len()], vec![0.0f64; ch], vec![0.0f64; ch]);
    for bi in 0..b {
        for g in 0..groups {
            let idx: Vec<(usize, usize)> = (0..cg)
                .flat_map(|c| (0..s).map(move |j| (g * cg + c, (bi * ch + g * cg + c) * s + j)))
                .collect();
            let n = idx.len() as f64;
            let mean = idx.iter().map(|&(_, i)| x[i] as f64).sum::<f64>() / n;
            let var = idx
                .iter()
                .map(|&(_, i)| (x[i] as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let rstd = 1.0 / (var + eps).sqrt();
            let xh = |i: usize| (x[i] as f64 - mean) * rstd;
            let gdy = |c: usize, i: usize| gamma[c] as f64 * dy[i] as f64;
            let m1 = idx.iter().map(|&(c, i)| gdy(c, i)).sum::<f64>() / n;
            let m2 = idx.iter().map(|&(c, i)| gdy(c, i) * xh(i)).sum::<f64>() / n;
            for &(c, i) in &idx {
                dx[i] = (rstd * (gdy(c, i) - m1 - xh(i) * m2)) as f32;
                dg[c] += dy[i] as f64 * xh(i);
                db[c] += dy[i] as f64;
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    [dx, f(dg), f(db)]
}

#[test]
fn group_norm_backward_matches_naive() {
    // Max |diff| ≤ 1e-5 × max |reference|: f64 sums on both sides, the f32
    // saved statistics and the f32 output dominate.
    let c = cpu();
    let eps = 1e-5f32;
    for (shape, groups) in [(vec![3, 6, 6, 10], 3), (vec![2, 8, 7], 4), (vec![4, 6], 2)] {
        let (b, ch) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        let n = b * ch * s;
        let x: Vec<f32> = rand_vec(n, 38).iter().map(|v| 2.0 * v - 0.7).collect();
        let gamma: Vec<f32> = rand_vec(ch, 39).iter().map(|v| 1.0 + 0.5 * v).collect();
        let dy: Vec<f32> = rand_vec(n, 40)
            .iter()
            .zip(&x)
            .map(|(r, x)| r + 0.3 + 0.5 * x)
            .collect();
        let (xt, gt) = (up(&c, &x, &shape), up(&c, &gamma, &[ch]));
        let fwd = c
            .group_norm(&xt, &gt, &c.zeros(&[ch]).unwrap(), groups, eps)
            .unwrap();
        let g = c
            .group_norm_backward(&xt, &gt, &fwd.stats, &up(&c, &dy, &shape), groups)
            .unwrap();
        let [dx, dg, db] =
            naive_group_norm_backward(&x, &gamma, &dy, (b, ch, s), groups, eps as f64);
        assert_close(
            &format!("group_norm dx {shape:?}"),
            &rd(&c, &g.dx),
            &dx,
            1e-5,
        );
        assert_close(
            &format!("group_norm dgamma {shape:?}"),
            &rd(&c, &g.dgamma),
            &dg,
            1e-5,
        );
        assert_close(
            &format!("group_norm dbeta {shape:?}"),
            &rd(&c, &g.dbeta),
            &db,
            1e-5,
        );
    }
}

fn silu_f64(h: f64) -> f64 {
    h / (1.0 + (-h).exp())
}

/// The fused GroupNorm + SiLU: forward = SiLU of the naive GroupNorm (same
/// statistics), backward = the naive GroupNorm backward of dy·silu'(h), all
/// in f64; and its backward against central differences of its forward.
#[test]
fn group_norm_silu_matches_naive_and_finite_differences() {
    let c = cpu();
    let eps = 1e-5f32;
    for (shape, groups) in [(vec![3, 6, 6, 10], 3), (vec![2, 8, 7], 4), (vec![4, 6], 2)] {
        let (b, ch) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        let n = b * ch * s;
        let x: Vec<f32> = rand_vec(n, 41).iter().map(|v| 2.0 * v + 0.5).collect();
        let gamma: Vec<f32> = rand_vec(ch, 42).iter().map(|v| 1.0 + 0.5 * v).collect();
        let beta = rand_vec(ch, 43);
        let dy: Vec<f32> = rand_vec(n, 44).iter().map(|r| r + 0.3).collect();
        let (xt, gt, bt) = (
            up(&c, &x, &shape),
            up(&c, &gamma, &[ch]),
            up(&c, &beta, &[ch]),
        );
        let fwd = c.group_norm_silu(&xt, &gt, &bt, groups, eps).unwrap();
        let (h, stats) = naive_group_norm(&x, &gamma, &beta, (b, ch, s), groups, eps as f64);
        let y: Vec<f32> = h.iter().map(|&h| silu_f64(h as f64) as f32).collect();
        let what = format!("{shape:?}");
        assert_close(
            &format!("group_norm_silu y {what}"),
            &rd(&c, &fwd.y),
            &y,
            2e-5,
        );
        assert_close(
            &format!("group_norm_silu stats {what}"),
            &rd(&c, &fwd.stats),
            &stats,
            1e-6,
        );
        let g = c
            .group_norm_silu_backward(&xt, &gt, &bt, &fwd.stats, &up(&c, &dy, &shape), groups)
            .unwrap();
        let dh: Vec<f32> = h
            .iter()
            .zip(&dy)
            .map(|(&h, &d)| {
                let sg = 1.0 / (1.0 + (-(h as f64)).exp());
                (d as f64 * sg * (1.0 + h as f64 * (1.0 - sg))) as f32
            })
            .collect();
        let [dx, dg, db] =
            naive_group_norm_backward(&x, &gamma, &dh, (b, ch, s), groups, eps as f64);
        assert_close(
            &format!("group_norm_silu dx {what}"),
            &rd(&c, &g.dx),
            &dx,
            1e-5,
        );
        assert_close(
            &format!("group_norm_silu dgamma {what}"),
            &rd(&c, &g.dgamma),
            &dg,
            1e-5,
        );
        assert_close(
            &format!("group_norm_silu dbeta {what}"),
            &rd(&c, &g.dbeta),
            &db,
            1e-5,
        );
        let f = |xv: &[f32], gv: &[f32], bv: &[f32]| {
            let o = c.group_norm_silu(
                &up(&c, xv, &shape),
                &up(&c, gv, &[ch]),
                &up(&c, bv, &[ch]),
                groups,
                eps,
            );
            rd(&c, &o.unwrap().y)
        };
        let (gx, gg, gb) = (rd(&c, &g.dx), rd(&c, &g.dgamma), rd(&c, &g.dbeta));
        dir_check(
            "gn_silu dx",
            &|v| f(v, &gamma, &beta),
            &x,
            &gx,
            &dy,
            1e-2,
            NONLINEAR_TOL,
            45,
        );
        dir_check(
            "gn_silu dgamma",
            &|v| f(&x, v, &beta),
            &gamma,
            &gg,
            &dy,
            1e-2,
            NONLINEAR_TOL,
            46,
        );
        dir_check(
            "gn_silu dbeta",
            &|v| f(&x, &gamma, v),
            &beta,
            &gb,
            &dy,
            1e-2,
            NONLINEAR_TOL,
            47,
        );
    }
}

#[test]
fn group_norm_bad_shapes() {
    let c = cpu();
    let z = |s: &[usize]| c.zeros(s).unwrap();
    let x = z(&[2, 6, 4, 4]);
    expect_shape(
        "groups",
        c.group_norm(&x, &z(&[6]), &z(&[6]), 4, 1e-5),
        "group_norm",
    );
    expect_shape(
        "zero groups",
        c.group_norm(&x, &z(&[6]), &z(&[6]), 0, 1e-5),
        "group_norm",
    );
    expect_shape(
        "gamma",
        c.group_norm(&x, &z(&[5]), &z(&[6]), 3, 1e-5),
        "group_norm",
    );
    expect_shape(
        "rank 1",
        c.group_norm(&z(&[6]), &z(&[6]), &z(&[6]), 3, 1e-5),
        "group_norm",
    );
    expect_shape(
        "stats",
        c.group_norm_backward(&x, &z(&[6]), &z(&[2, 2, 2]), &x, 3),
        "group_norm_backward",
    );
    expect_shape(
        "dy",
        c.group_norm_backward(&x, &z(&[6]), &z(&[2, 3, 2]), &z(&[2, 6, 4, 3]), 3),
        "group_norm_backward",
    );
}

// ---------------------------------------------------------------- biases, sums

#[test]
fn bias_ops_match_naive_and_their_gradients() {
    let c = cpu();
    for shape in [vec![3, 6, 6, 10], vec![3, 6]] {
        let (b, ch) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        let x = rand_vec(b * ch * s, 41);
        let (bias, t) = (rand_vec(ch, 42), rand_vec(b * ch, 43));
        let dy = rand_vec(x.len(), 44);
        let (xt, dyt) = (up(&c, &x, &shape), up(&c, &dy, &shape));
        let plane = |i: usize| i / s; // (b, c) plane of element i
        let want: Vec<f32> = (0..x.len()).map(|i| x[i] + bias[plane(i) % ch]).collect();
        let got = c.add_bias(&xt, &up(&c, &bias, &[ch])).unwrap();
        assert_close(&format!("add_bias {shape:?}"), &rd(&c, &got), &want, 1e-6);
        let want: Vec<f32> = (0..x.len()).map(|i| x[i] + t[plane(i)]).collect();
        let got = c.add_sample_bias(&xt, &up(&c, &t, &[b, ch])).unwrap();
        assert_close(
            &format!("add_sample_bias {shape:?}"),
            &rd(&c, &got),
            &want,
            1e-6,
        );

        let mut per_plane = vec![0.0f64; b * ch];
        for (i, &d) in dy.iter().enumerate() {
            per_plane[plane(i)] += d as f64;
        }
        let mut per_chan = vec![0.0f64; ch];
        for (i, &p) in per_plane.iter().enumerate() {
            per_chan[i % ch] += p;
        }
        let bg = c.bias_grad(&dyt).unwrap();
        assert_eq!(bg.shape, [ch]);
        let f64s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        assert_close("bias_grad", &rd(&c, &bg), &f64s(&per_chan), 1e-6);
        let sg = c.sample_bias_grad(&dyt).unwrap();
        assert_eq!(sg.shape, [b, ch]);
        assert_close("sample_bias_grad", &rd(&c, &sg), &f64s(&per_plane), 1e-6);

        dir_check(
            &format!("add_bias {shape:?}"),
            &|bv| rd(&c, &c.add_bias(&xt, &up(&c, bv, &[ch])).unwrap()),
            &bias,
            &rd(&c, &bg),
            &dy,
            LINEAR_H,
            LINEAR_TOL,
            45,
        );
        dir_check(
            &format!("add_sample_bias {shape:?}"),
            &|tv| rd(&c, &c.add_sample_bias(&xt, &up(&c, tv, &[b, ch])).unwrap()),
            &t,
            &rd(&c, &sg),
            &dy,
            LINEAR_H,
            LINEAR_TOL,
            46,
        );
        dir_check(
            &format!("add_bias dx {shape:?}"),
            &|xv| {
                rd(
                    &c,
                    &c.add_bias(&up(&c, xv, &shape), &up(&c, &bias, &[ch]))
                        .unwrap(),
                )
            },
            &x,
            &dy,
            &dy,
            LINEAR_H,
            LINEAR_TOL,
            47,
        );
    }
    let z = |s: &[usize]| c.zeros(s).unwrap();
    expect_shape("bias", c.add_bias(&z(&[2, 3, 4]), &z(&[4])), "add_bias");
    expect_shape("rank", c.add_bias(&z(&[3]), &z(&[3])), "add_bias");
    expect_shape(
        "t",
        c.add_sample_bias(&z(&[2, 3, 4]), &z(&[3, 2])),
        "add_sample_bias",
    );
    expect_shape("rank", c.bias_grad(&z(&[3])), "bias_grad");
    expect_shape("rank", c.sample_bias_grad(&z(&[3])), "sample_bias_grad");
}

#[test]
fn sum_batch_matches_naive_and_is_the_broadcast_gradient() {
    let c = cpu();
    let (b, rest) = (3usize, [6usize, 6, 10]);
    let d: usize = rest.iter().product();
    let x = rand_vec(b * d, 51);
    let mut shape = vec![b];
    shape.extend(rest);
    let got = c.sum_batch(&up(&c, &x, &shape)).unwrap();
    assert_eq!(got.shape, rest);
    let want: Vec<f32> = (0..d)
        .map(|j| (0..b).map(|i| x[i * d + j] as f64).sum::<f64>() as f32)
        .collect();
    assert_close("sum_batch", &rd(&c, &got), &want, 1e-6);
    // Bigger than one parallel chunk.
    let big = rand_vec(5 * 40_000, 52);
    let got = rd(&c, &c.sum_batch(&up(&c, &big, &[5, 40_000])).unwrap());
    let want: Vec<f32> = (0..40_000)
        .map(|j| (0..5).map(|i| big[i * 40_000 + j] as f64).sum::<f64>() as f32)
        .collect();
    assert_close("sum_batch large", &got, &want, 1e-6);
    // sum_batch is the gradient of broadcasting p: […] → [B, …].
    let p = rand_vec(d, 53);
    let dy = rand_vec(b * d, 54);
    let grad = rd(&c, &c.sum_batch(&up(&c, &dy, &shape)).unwrap());
    dir_check(
        "sum_batch",
        &|pv| pv.repeat(b),
        &p,
        &grad,
        &dy,
        LINEAR_H,
        LINEAR_TOL,
        55,
    );
    expect_shape("scalar", c.sum_batch(&c.zeros(&[]).unwrap()), "sum_batch");
}

// ---------------------------------------------------------------- resampling

#[test]
fn upsample_and_avgpool_match_naive_and_are_adjoint() {
    let c = cpu();
    let (b, ch, h, w) = (3, 6, 6, 10);
    let x = rand_vec(b * ch * h * w, 61);
    let y = rand_vec(b * ch * 4 * h * w, 62);
    let xt = up(&c, &x, &[b, ch, h, w]);
    let yt = up(&c, &y, &[b, ch, 2 * h, 2 * w]);
    let u = c.upsample2x(&xt).unwrap();
    assert_eq!(u.shape, [b, ch, 2 * h, 2 * w]);
    let p = c.avgpool2x(&yt).unwrap();
    assert_eq!(p.shape, [b, ch, h, w]);
    let (u, p) = (rd(&c, &u), rd(&c, &p));
    for pl in 0..b * ch {
        for i in 0..2 * h {
            for j in 0..2 * w {
                assert_eq!(
                    u[(pl * 2 * h + i) * 2 * w + j],
                    x[(pl * h + i / 2) * w + j / 2]
                );
            }
        }
        for i in 0..h {
            for j in 0..w {
                let at = |di: usize, dj: usize| y[(pl * 2 * h + 2 * i + di) * 2 * w + 2 * j + dj];
                let want = 0.25 * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1));
                assert!((p[(pl * h + i) * w + j] - want).abs() <= 1e-6);
            }
        }
    }
    // ⟨up(x), y⟩ = 4⟨x, avgpool(y)⟩
    let (l, r) = (dot(&u, &y), 4.0 * dot(&x, &p));
    assert!((l - r).abs() <= 1e-5 * l.abs().max(r.abs()), "{l} vs {r}");
    // The same relations as directional checks.
    let dy_up = rand_vec(u.len(), 63);
    let g_up = scaled(
        &rd(
            &c,
            &c.avgpool2x(&up(&c, &dy_up, &[b, ch, 2 * h, 2 * w]))
                .unwrap(),
        ),
        4.0,
    );
    dir_check(
        "upsample2x",
        &|xv| rd(&c, &c.upsample2x(&up(&c, xv, &[b, ch, h, w])).unwrap()),
        &x,
        &g_up,
        &dy_up,
        LINEAR_H,
        LINEAR_TOL,
        64,
    );
    let dy_p = rand_vec(p.len(), 65);
    let g_p = scaled(
        &rd(&c, &c.upsample2x(&up(&c, &dy_p, &[b, ch, h, w])).unwrap()),
        0.25,
    );
    dir_check(
        "avgpool2x",
        &|yv| {
            rd(
                &c,
                &c.avgpool2x(&up(&c, yv, &[b, ch, 2 * h, 2 * w])).unwrap(),
            )
        },
        &y,
        &g_p,
        &dy_p,
        LINEAR_H,
        LINEAR_TOL,
        66,
    );
    let z = |s: &[usize]| c.zeros(s).unwrap();
    expect_shape("odd", c.avgpool2x(&z(&[1, 2, 5, 4])), "avgpool2x");
    expect_shape("rank", c.avgpool2x(&z(&[2, 4, 4])), "avgpool2x");
    expect_shape("rank", c.upsample2x(&z(&[2, 4, 4])), "upsample2x");
}

/// upfirdn2d as in NCSN++/StyleGAN2, in f64: zero-insert (`up`), pad by
/// (p0, p1) on each axis, true convolution with the 4×4 kernel `k`, keep every
/// `down`-th sample starting at 0.
#[allow(clippy::too_many_arguments)]
fn naive_upfirdn2d(
    x: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    k: &[[f64; 4]; 4],
    up: usize,
    down: usize,
    (p0, p1): (usize, usize),
) -> (Vec<f32>, usize, usize) {
    let (hp, wp) = (h * up + p0 + p1, w * up + p0 + p1);
    let (ho, wo) = ((hp - 4) / down + 1, (wp - 4) / down + 1);
    let mut out = vec![0.0f32; planes * ho * wo];
    for pl in 0..planes {
        // the upsampled, padded plane
        let mut xp = vec![0.0f64; hp * wp];
        for i in 0..h {
            for j in 0..w {
                xp[(i * up + p0) * wp + j * up + p0] = x[(pl * h + i) * w + j] as f64;
            }
        }
        for oi in 0..ho {
            for oj in 0..wo {
                let (fi, fj) = (oi * down, oj * down);
                let mut s = 0.0;
                for a in 0..4 {
                    for b in 0..4 {
                        // true convolution: the flipped kernel
                        s += k[3 - a][3 - b] * xp[(fi + a) * wp + fj + b];
                    }
                }
                out[(pl * ho + oi) * wo + oj] = s as f32;
            }
        }
    }
    (out, ho, wo)
}

/// k⊗k / Σ with k = [1, 3, 3, 1], times `gain`.
fn fir_kernel(gain: f64) -> [[f64; 4]; 4] {
    let k = [1.0, 3.0, 3.0, 1.0];
    let mut m = [[0.0; 4]; 4];
    for a in 0..4 {
        for b in 0..4 {
            m[a][b] = k[a] * k[b] / 64.0 * gain;
        }
    }
    m
}

#[test]
fn fir_resampling_matches_upfirdn2d() {
    let c = cpu();
    for (b, ch, h, w) in [(3, 6, 6, 10), (1, 2, 2, 4), (2, 1, 8, 2)] {
        let x = rand_vec(b * ch * h * w, 71);
        let xt = up(&c, &x, &[b, ch, h, w]);
        let got = c.fir_up(&xt).unwrap();
        assert_eq!(got.shape, [b, ch, 2 * h, 2 * w]);
        let (want, ho, wo) = naive_upfirdn2d(&x, b * ch, (h, w), &fir_kernel(4.0), 2, 1, (2, 1));
        assert_eq!((ho, wo), (2 * h, 2 * w));
        assert_close(&format!("fir_up {h}x{w}"), &rd(&c, &got), &want, 1e-5);

        let got = c.fir_down(&xt).unwrap();
        assert_eq!(got.shape, [b, ch, h / 2, w / 2]);
        let (want, ho, wo) = naive_upfirdn2d(&x, b * ch, (h, w), &fir_kernel(1.0), 1, 2, (1, 1));
        assert_eq!((ho, wo), (h / 2, w / 2));
        assert_close(&format!("fir_down {h}x{w}"), &rd(&c, &got), &want, 1e-5);
    }
    // fir_up of odd sizes is defined too.
    let x = rand_vec(2 * 3 * 5 * 7, 72);
    let got = c.fir_up(&up(&c, &x, &[2, 3, 5, 7])).unwrap();
    let (want, ..) = naive_upfirdn2d(&x, 6, (5, 7), &fir_kernel(4.0), 2, 1, (2, 1));
    assert_close("fir_up 5x7", &rd(&c, &got), &want, 1e-5);
    // A constant image away from the border stays constant (gain 4 for up).
    let ones = up(&c, &[1.0; 64], &[1, 1, 8, 8]);
    let u = rd(&c, &c.fir_up(&ones).unwrap());
    assert!((u[5 * 16 + 7] - 1.0).abs() < 1e-6);
    let d = rd(&c, &c.fir_down(&ones).unwrap());
    assert!((d[4 + 1] - 1.0).abs() < 1e-6);
}

#[test]
fn fir_backward_matches_finite_differences() {
    let c = cpu();
    for (b, ch, h, w) in [(3, 6, 6, 10), (2, 3, 5, 7)] {
        let x = rand_vec(b * ch * h * w, 81);
        let dy = rand_vec(4 * x.len(), 82);
        let g = rd(
            &c,
            &c.fir_up_backward(&up(&c, &dy, &[b, ch, 2 * h, 2 * w]))
                .unwrap(),
        );
        dir_check(
            &format!("fir_up {h}x{w}"),
            &|xv| rd(&c, &c.fir_up(&up(&c, xv, &[b, ch, h, w])).unwrap()),
            &x,
            &g,
            &dy,
            LINEAR_H,
            LINEAR_TOL,
            83,
        );
    }
    let (b, ch, h, w) = (3, 6, 6, 10);
    let x = rand_vec(b * ch * h * w, 84);
    let dy = rand_vec(x.len() / 4, 85);
    let g = c
        .fir_down_backward(&up(&c, &dy, &[b, ch, h / 2, w / 2]))
        .unwrap();
    assert_eq!(g.shape, [b, ch, h, w]);
    dir_check(
        "fir_down",
        &|xv| rd(&c, &c.fir_down(&up(&c, xv, &[b, ch, h, w])).unwrap()),
        &x,
        &rd(&c, &g),
        &dy,
        LINEAR_H,
        LINEAR_TOL,
        86,
    );
    let z = |s: &[usize]| c.zeros(s).unwrap();
    expect_shape("odd", c.fir_down(&z(&[1, 2, 6, 5])), "fir_down");
    expect_shape(
        "odd",
        c.fir_up_backward(&z(&[1, 2, 7, 6])),
        "fir_up_backward",
    );
    expect_shape("rank", c.fir_up(&z(&[2, 6, 5])), "fir_up");
    expect_shape(
        "rank",
        c.fir_down_backward(&z(&[6, 5])),
        "fir_down_backward",
    );
}

// ---------------------------------------------------------------- channels, dropout

#[test]
fn concat_and_split_are_inverse_and_adjoint() {
    let c = cpu();
    let (b, ca, cb, h, w) = (3, 2, 4, 6, 10);
    let s = h * w;
    let a = rand_vec(b * ca * s, 91);
    let bb = rand_vec(b * cb * s, 92);
    let (at, bt) = (up(&c, &a, &[b, ca, h, w]), up(&c, &bb, &[b, cb, h, w]));
    let cat = c.concat_channels(&at, &bt).unwrap();
    assert_eq!(cat.shape, [b, ca + cb, h, w]);
    let cv = rd(&c, &cat);
    for i in 0..b {
        let row = &cv[i * (ca + cb) * s..(i + 1) * (ca + cb) * s];
        assert_eq!(&row[..ca * s], &a[i * ca * s..(i + 1) * ca * s]);
        assert_eq!(&row[ca * s..], &bb[i * cb * s..(i + 1) * cb * s]);
    }
    let (sa, sb) = c.split_channels(&cat, ca).unwrap();
    assert_eq!(
        (sa.shape.as_slice(), sb.shape.as_slice()),
        (&[b, ca, h, w][..], &[b, cb, h, w][..])
    );
    assert_eq!(rd(&c, &sa), a);
    assert_eq!(rd(&c, &sb), bb);
    // Edge splits and 2-D tensors.
    let (e0, e1) = c.split_channels(&cat, 0).unwrap();
    assert_eq!((e0.shape[1], e1.shape[1]), (0, ca + cb));
    assert_eq!(rd(&c, &e1), cv);
    let two = c
        .concat_channels(
            &up(&c, &[1.0, 2.0], &[2, 1]),
            &up(&c, &[3.0, 4.0, 5.0, 6.0], &[2, 2]),
        )
        .unwrap();
    assert_eq!(rd(&c, &two), [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);

    // Gradients: concat's is split(dy), split's is concat(dya, dyb).
    let dy = rand_vec(cv.len(), 93);
    let (ga, gb) = c.split_channels(&up(&c, &dy, &cat.shape), ca).unwrap();
    dir_check(
        "concat da",
        &|av| {
            rd(
                &c,
                &c.concat_channels(&up(&c, av, &[b, ca, h, w]), &bt).unwrap(),
            )
        },
        &a,
        &rd(&c, &ga),
        &dy,
        LINEAR_H,
        LINEAR_TOL,
        94,
    );
    dir_check(
        "concat db",
        &|bv| {
            rd(
                &c,
                &c.concat_channels(&at, &up(&c, bv, &[b, cb, h, w])).unwrap(),
            )
        },
        &bb,
        &rd(&c, &gb),
        &dy,
        LINEAR_H,
        LINEAR_TOL,
        95,
    );
    let (dya, dyb) = (rand_vec(a.len(), 96), rand_vec(bb.len(), 97));
    let gx = c
        .concat_channels(&up(&c, &dya, &[b, ca, h, w]), &up(&c, &dyb, &[b, cb, h, w]))
        .unwrap();
    let dy_split: Vec<f32> = dya.iter().chain(&dyb).copied().collect();
    dir_check(
        "split",
        &|xv| {
            let (p, q) = c
                .split_channels(&up(&c, xv, &[b, ca + cb, h, w]), ca)
                .unwrap();
            let mut v = rd(&c, &p);
            v.extend(rd(&c, &q));
            v
        },
        &cv,
        &rd(&c, &gx),
        &dy_split,
        LINEAR_H,
        LINEAR_TOL,
        98,
    );
    let z = |s: &[usize]| c.zeros(s).unwrap();
    expect_shape(
        "spatial",
        c.concat_channels(&z(&[2, 1, 4, 4]), &z(&[2, 1, 4, 5])),
        "concat_channels",
    );
    expect_shape(
        "batch",
        c.concat_channels(&z(&[2, 1, 4]), &z(&[3, 1, 4])),
        "concat_channels",
    );
    expect_shape(
        "rank",
        c.concat_channels(&z(&[2, 1, 4]), &z(&[2, 1])),
        "concat_channels",
    );
    expect_shape(
        "too many",
        c.split_channels(&z(&[2, 3, 4]), 4),
        "split_channels",
    );
    expect_shape("rank", c.split_channels(&z(&[3]), 1), "split_channels");
}

#[test]
fn dropout_mask_follows_the_stream() {
    let c = cpu();
    let rng = RngStream::new(123, 4);
    for p in [0.0f32, 0.1, 0.3, 0.75] {
        let shape = [5, 7, 1001]; // 35 035 elements: several chunks, a ragged end
        let m = c.dropout_mask(&shape, p, rng).unwrap();
        assert_eq!(m.shape, shape);
        let m = rd(&c, &m);
        let keep = 1.0 / (1.0 - p);
        for (i, &v) in m.iter().enumerate() {
            let want = if rng.uniform(i as u64) >= p {
                keep
            } else {
                0.0
            };
            assert_eq!(v.to_bits(), want.to_bits(), "p = {p}, element {i}");
        }
        let zeroed = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        // Binomial: σ = sqrt(p(1 − p)/n) ≤ 0.0027; allow 0.01 (> 3.7σ).
        assert!((zeroed - p as f64).abs() < 0.01, "p = {p}: {zeroed} zeroed");
    }
    for p in [1.0f32, -0.1, 1.5, f32::NAN] {
        match c.dropout_mask(&[10], p, rng) {
            Err(Error::Invalid(_)) => {}
            other => panic!("p = {p}: expected Error::Invalid, got {other:?}"),
        }
    }
}

#[test]
fn pair_relative_distance_is_the_distance_over_the_norms_and_ignores_scale() {
    let c = cpu();
    let (n, ch, h, w) = (2usize, 4usize, 3usize, 5usize);
    let s = h * w;
    let x = rand_vec(2 * n * ch * s, 62);
    let shape = [2 * n, ch, h, w];
    let plain = rd(&c, &c.pair_distance(&up(&c, &x, &shape)).unwrap());
    let rel = rd(&c, &c.pair_relative_distance(&up(&c, &x, &shape)).unwrap());
    let norm = |k: usize, p: usize| {
        (0..ch)
            .map(|q| (x[(k * ch + q) * s + p] as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let want: Vec<f32> = (0..n * s)
        .map(|i| {
            let (k, p) = (i / s, i % s);
            (plain[i] as f64 / (norm(k, p) + norm(n + k, p) + 1e-6)) as f32
        })
        .collect();
    assert_close("pair_relative_distance", &rel, &want, 1e-5);
    assert!(rel.iter().all(|&v| (0.0..=1.0).contains(&v)));
    // Ten times the features: ten times the distance, the same ratio.
    let big: Vec<f32> = x.iter().map(|v| v * 10.0).collect();
    let plain10 = rd(&c, &c.pair_distance(&up(&c, &big, &shape)).unwrap());
    let rel10 = rd(
        &c,
        &c.pair_relative_distance(&up(&c, &big, &shape)).unwrap(),
    );
    let tenfold: Vec<f32> = plain.iter().map(|v| v * 10.0).collect();
    assert_close("plain ×10", &plain10, &tenfold, 1e-5);
    assert_close("relative ×10", &rel10, &rel, 1e-5);
}

#[test]
fn pair_distance_matches_naive() {
    let c = cpu();
    let (n, ch, h, w) = (3usize, 5usize, 4usize, 6usize);
    let s = h * w;
    let x = rand_vec(2 * n * ch * s, 61);
    let got = c.pair_distance(&up(&c, &x, &[2 * n, ch, h, w])).unwrap();
    assert_eq!(got.shape, [n, h, w]);
    let want: Vec<f32> = (0..n * s)
        .map(|i| {
            let (k, p) = (i / s, i % s);
            (0..ch)
                .map(|q| {
                    let d = x[(k * ch + q) * s + p] as f64 - x[((n + k) * ch + q) * s + p] as f64;
                    d * d
                })
                .sum::<f64>()
                .sqrt() as f32
        })
        .collect();
    assert_close("pair_distance", &rd(&c, &got), &want, 1e-6);
    // Identical halves are at distance zero; an odd batch is refused.
    let same = [x[..n * ch * s].to_vec(), x[..n * ch * s].to_vec()].concat();
    let zero = rd(
        &c,
        &c.pair_distance(&up(&c, &same, &[2 * n, ch, h, w])).unwrap(),
    );
    assert!(zero.iter().all(|&v| v == 0.0));
    expect_shape(
        "pairs",
        c.pair_distance(&up(&c, &x[..ch * s * 3], &[3, ch, h, w])),
        "pair_distance",
    );
}
