//! The GPU backend's matrix-shaped ops (conv2d gradients, batched matmul,
//! softmax and its backward) against the CPU backend, on odd shapes that are not multiples
//! of the kernels' 8-wide tiles, plus the shape errors.
//!
//! Tolerance: every output compares max |gpu − cpu| against 1e-4 × max |cpu|
//! (the reductions run over up to ~10⁴ terms in different orders, in f32).

mod common;

use common::{assert_close, cpu, gpu, rand_vec};
use scoredd::backend::{Backend, Conv2dSpec, ConvEpilogue, ModuleOps};
use scoredd::error::Error;

const REL: f32 = 1e-4;

// (batch, Cin, H, W, Cout, k, stride, padding)
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

const CONV_CASES: [Case; 16] = [
    // every (k, s, p) ∈ {1, 3} × {1, 2} × {0, 1}, odd sizes, batch 1–3
    (1, 3, 7, 9, 5, 1, 1, 0),
    (2, 5, 9, 7, 3, 1, 1, 1),
    (3, 7, 5, 11, 9, 1, 2, 0),
    (2, 9, 11, 9, 7, 1, 2, 1),
    (1, 3, 9, 13, 5, 3, 1, 0),
    (3, 5, 7, 9, 11, 3, 1, 1),
    (2, 7, 13, 11, 3, 3, 2, 0),
    (3, 11, 9, 15, 13, 3, 2, 1),
    // long reductions: the weight gradient splits over rows
    (2, 13, 33, 31, 17, 3, 1, 1),
    (3, 17, 35, 29, 9, 3, 2, 1),
    (1, 19, 45, 43, 21, 1, 1, 0),
    // padding beyond k − 1 (the output grows; dx crops), even sizes, tiny
    (1, 2, 6, 5, 3, 3, 1, 3),
    (2, 3, 10, 12, 4, 3, 2, 2),
    (2, 4, 3, 5, 6, 1, 2, 1),
    (1, 1, 1, 1, 1, 3, 1, 1),
    (1, 8, 16, 16, 16, 3, 2, 1),
];

fn conv_grads<B: ModuleOps>(be: &B, case: Case, data: &[Vec<f32>; 3]) -> [Vec<f32>; 3] {
    let (b, ci, h, w, co, k, s, p) = case;
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (w + 2 * p - k) / s + 1;
    let x = be.upload(&data[0], &[b, ci, h, w]).unwrap();
    let wt = be.upload(&data[1], &[co, ci, k, k]).unwrap();
    let dy = be.upload(&data[2], &[b, co, ho, wo]).unwrap();
    let g = be
        .conv2d_backward(&x, &wt, &dy, Conv2dSpec::new(s, p))
        .unwrap_or_else(|e| panic!("conv2d_backward {case:?}: {e}"));
    [
        be.read(&g.dx).unwrap(),
        be.read(&g.dw).unwrap(),
        be.read(&g.db).unwrap(),
    ]
}

#[test]
fn gpu_conv2d_backward_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, &case) in CONV_CASES.iter().enumerate() {
        let (b, ci, h, w, co, k, s, p) = case;
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        let seed = 10 * i as u64;
        let data = [
            rand_vec(b * ci * h * w, seed),
            rand_vec(co * ci * k * k, seed + 1),
            rand_vec(b * co * ho * wo, seed + 2),
        ];
        let want = conv_grads(&c, case, &data);
        let got = conv_grads(&g, case, &data);
        for (j, what) in ["dx", "dw", "db"].iter().enumerate() {
            assert_close(
                &format!("conv2d_backward {what} {case:?}"),
                &got[j],
                &want[j],
                REL,
            );
        }
    }
}

/// The conv backward with every variant forced (the stride-1 input gradient
/// runs either forward family), on the cases above plus tile-crossing ones.
#[test]
fn gpu_conv2d_backward_every_variant_matches_cpu() {
    use scoredd::backend::gpu::tune::Variant;
    let Some(g) = gpu() else { return };
    let c = cpu();
    let odd = [
        (1, 70, 9, 9, 5, 3, 1, 1),
        (2, 65, 5, 13, 3, 1, 1, 0),
        (1, 4, 6, 7, 9, 3, 1, 3),
        // The input gradient through the subgroup conv (dy 12 wide).
        (2, 11, 5, 12, 6, 3, 1, 1),
        (1, 9, 3, 8, 13, 1, 1, 0),
        // The subgroup weight gradient: ceil(Cin / 8) = 8, rows of 11 and 5
        // output columns (4-step chunks and a remainder).
        (2, 61, 6, 11, 10, 3, 1, 1),
        (1, 64, 9, 10, 3, 3, 2, 1),
        // The kernel-row weight gradient and its subgroup form
        // (ceil(Cin / 4) = 8): padding 0 and 2, where the sliding window
        // starts inside the row and reaches two columns past it.
        (1, 32, 7, 9, 5, 3, 1, 0),
        (2, 30, 5, 6, 9, 3, 1, 2),
    ];
    for v in Variant::ALL {
        g.tuner.forced.set(Some(v));
        for (i, &case) in CONV_CASES.iter().chain(&odd).enumerate() {
            let (b, ci, h, w, co, k, s, p) = case;
            let ho = (h + 2 * p - k) / s + 1;
            let wo = (w + 2 * p - k) / s + 1;
            let seed = 10 * i as u64;
            let data = [
                rand_vec(b * ci * h * w, seed),
                rand_vec(co * ci * k * k, seed + 1),
                rand_vec(b * co * ho * wo, seed + 2),
            ];
            let want = conv_grads(&c, case, &data);
            let got = conv_grads(&g, case, &data);
            for (j, what) in ["dx", "dw", "db"].iter().enumerate() {
                assert_close(
                    &format!("conv2d_backward {} {what} {case:?}", v.name()),
                    &got[j],
                    &want[j],
                    REL,
                );
            }
        }
    }
    g.tuner.forced.set(None);
}

/// The conv epilogues the U-net uses, as (per-sample bias, residual, scale).
const EPILOGUES: [(bool, bool, f32); 4] = [
    (true, false, 1.0),
    (false, true, std::f32::consts::FRAC_1_SQRT_2),
    (true, true, 0.5),
    (false, false, 2.0),
];

/// `conv2d_fused` on `be` and its composition (conv2d, add_sample_bias,
/// axpby) on the CPU, read back.
fn fused_and_composed<B: ModuleOps>(be: &B, case: Case, ep: (bool, bool, f32)) -> [Vec<f32>; 2] {
    let c = cpu();
    let (b, ci, h, w, co, k, s, p) = case;
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (w + 2 * p - k) / s + 1;
    let seed = 7 * (b + ci + h + w + co + k) as u64;
    let data = [
        (rand_vec(b * ci * h * w, seed), vec![b, ci, h, w]),
        (rand_vec(co * ci * k * k, seed + 1), vec![co, ci, k, k]),
        (rand_vec(co, seed + 2), vec![co]),
        (rand_vec(b * co, seed + 3), vec![b, co]),
        (rand_vec(b * co * ho * wo, seed + 4), vec![b, co, ho, wo]),
    ];
    let on = |t: &(Vec<f32>, Vec<usize>)| be.upload(&t.0, &t.1).unwrap();
    let (x, wt, bias, sb, res) = (
        on(&data[0]),
        on(&data[1]),
        on(&data[2]),
        on(&data[3]),
        on(&data[4]),
    );
    let spec = Conv2dSpec::new(s, p);
    let epilogue = ConvEpilogue {
        bias: &bias,
        sample_bias: ep.0.then_some(&sb),
        residual: ep.1.then_some(&res),
        scale: ep.2,
    };
    let fused = be
        .conv2d_fused(&x, &wt, epilogue, spec)
        .unwrap_or_else(|e| panic!("conv2d_fused {case:?}: {e}"));
    let on_c = |t: &(Vec<f32>, Vec<usize>)| c.upload(&t.0, &t.1).unwrap();
    let (xc, wc, bc) = (on_c(&data[0]), on_c(&data[1]), on_c(&data[2]));
    let mut want = c.conv2d(&xc, &wc, Some(&bc), spec).unwrap();
    if ep.0 {
        want = c.add_sample_bias(&want, &on_c(&data[3])).unwrap();
    }
    let r = if ep.1 {
        on_c(&data[4])
    } else {
        c.zeros(&[b, co, ho, wo]).unwrap()
    };
    want = c.axpby(ep.2, &r, ep.2, &want).unwrap();
    [be.read(&fused).unwrap(), c.read(&want).unwrap()]
}

/// The fused conv epilogue against its composition: on the CPU (one pass,
/// the same sums in another order: 1e-5 relative) and on the GPU, every
/// conv kernel family forced in turn.
#[test]
fn conv2d_fused_matches_its_composition() {
    for &case in &CONV_CASES {
        for ep in EPILOGUES {
            let [got, want] = fused_and_composed(&cpu(), case, ep);
            assert_close(
                &format!("cpu conv2d_fused {case:?} {ep:?}"),
                &got,
                &want,
                1e-5,
            );
        }
    }
    // On the GPU the epilogue is in every conv kernel's stores: force each family.
    use scoredd::backend::gpu::tune::Variant;
    let Some(g) = gpu() else { return };
    for v in Variant::ALL {
        g.tuner.forced.set(Some(v));
        for &case in &CONV_CASES {
            for ep in EPILOGUES {
                let [got, want] = fused_and_composed(&g, case, ep);
                let what = format!("gpu conv2d_fused {} {case:?} {ep:?}", v.name());
                assert_close(&what, &got, &want, REL);
            }
        }
    }
    g.tuner.forced.set(None);
}

/// A per-sample bias or a residual of the wrong shape: the same shape error
/// from both backends.
#[test]
fn conv2d_fused_rejects_bad_epilogues() {
    fn check<B: ModuleOps>(be: &B) {
        let x = be.zeros(&[2, 3, 5, 5]).unwrap();
        let w = be.zeros(&[4, 3, 3, 3]).unwrap();
        let bias = be.zeros(&[4]).unwrap();
        let spec = Conv2dSpec::new(1, 1);
        for (sb, res) in [(vec![4], vec![2, 4, 5, 5]), (vec![2, 4], vec![2, 4, 5, 4])] {
            let sb = be.zeros(&sb).unwrap();
            let res = be.zeros(&res).unwrap();
            let ep = ConvEpilogue {
                bias: &bias,
                sample_bias: Some(&sb),
                residual: Some(&res),
                scale: 1.0,
            };
            assert_shape_error(be.conv2d_fused(&x, &w, ep, spec), "conv2d_fused");
        }
        let short_bias = be.zeros(&[3]).unwrap();
        let ep = ConvEpilogue {
            bias: &short_bias,
            sample_bias: None,
            residual: None,
            scale: 1.0,
        };
        assert_shape_error(be.conv2d_fused(&x, &w, ep, spec), "conv2d_fused");
    }
    check(&cpu());
    if let Some(g) = gpu() {
        check(&g);
    }
}

fn assert_shape_error<T>(r: scoredd::error::Result<T>, op: &str) {
    match r {
        Err(Error::Shape { op: o, .. }) if o == op => {}
        Err(e) => panic!("expected a shape error from {op}, got {e}"),
        Ok(_) => panic!("expected a shape error from {op}, got a result"),
    }
}

#[test]
fn conv2d_backward_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    let x = g.zeros(&[2, 3, 8, 8]).unwrap();
    let w = g.zeros(&[4, 3, 3, 3]).unwrap();
    let s1 = Conv2dSpec::new(1, 1);
    // dy not the output shape
    let dy = g.zeros(&[2, 4, 7, 8]).unwrap();
    assert_shape_error(g.conv2d_backward(&x, &w, &dy, s1), "conv2d_backward");
    // weight channels do not match
    let w_bad = g.zeros(&[4, 2, 3, 3]).unwrap();
    let dy = g.zeros(&[2, 4, 8, 8]).unwrap();
    assert_shape_error(g.conv2d_backward(&x, &w_bad, &dy, s1), "conv2d_backward");
    // kernel sizes and strides the kernels lack
    let w5 = g.zeros(&[4, 3, 5, 5]).unwrap();
    let dy5 = g.zeros(&[2, 4, 6, 6]).unwrap();
    assert_shape_error(g.conv2d_backward(&x, &w5, &dy5, s1), "conv2d_backward");
    let dy3 = g.zeros(&[2, 4, 3, 3]).unwrap();
    assert_shape_error(
        g.conv2d_backward(&x, &w, &dy3, Conv2dSpec::new(3, 1)),
        "conv2d_backward",
    );
}

#[test]
fn conv2d_backward_of_an_empty_batch_is_zero() {
    let Some(g) = gpu() else { return };
    let x = g.zeros(&[0, 3, 8, 8]).unwrap();
    let w = g.upload(&rand_vec(108, 1), &[4, 3, 3, 3]).unwrap();
    let dy = g.zeros(&[0, 4, 8, 8]).unwrap();
    let gr = g
        .conv2d_backward(&x, &w, &dy, Conv2dSpec::new(1, 1))
        .unwrap();
    assert_eq!(g.shape(&gr.dx), [0, 3, 8, 8]);
    assert_eq!(g.read(&gr.dw).unwrap(), vec![0.0; 108]);
    assert_eq!(g.read(&gr.db).unwrap(), vec![0.0; 4]);
}

fn run_bmm<B: Backend>(
    be: &B,
    a: (&[f32], &[usize]),
    b: (&[f32], &[usize]),
    ta: bool,
    tb: bool,
) -> (Vec<f32>, Vec<usize>) {
    let at = be.upload(a.0, a.1).unwrap();
    let bt = be.upload(b.0, b.1).unwrap();
    let c = be
        .bmm(&at, &bt, ta, tb)
        .unwrap_or_else(|e| panic!("bmm {:?} {:?} ta={ta} tb={tb}: {e}", a.1, b.1));
    (be.read(&c).unwrap(), be.shape(&c).to_vec())
}

/// Operand shape of `rows × cols` (swapped when transposed), with or without a batch.
fn operand(batch: Option<usize>, rows: usize, cols: usize, t: bool) -> Vec<usize> {
    let (r, c) = if t { (cols, rows) } else { (rows, cols) };
    match batch {
        Some(b) => vec![b, r, c],
        None => vec![r, c],
    }
}

#[test]
fn gpu_bmm_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    // (batch, M, K, N): odd, the aligned no-pack path (M, N multiples of 8),
    // K = 1, and attention at 16×16 (HW = 256).
    let shapes = [
        (3, 13, 7, 19),
        (2, 16, 9, 24),
        (1, 5, 1, 3),
        (2, 33, 65, 17),
        (2, 256, 40, 256),
    ];
    let mut seed = 0;
    for &(bt, m, k, n) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // both batched, A broadcast, B broadcast
            for (a_b, b_b) in [(Some(bt), Some(bt)), (None, Some(bt)), (Some(bt), None)] {
                if (m, n) == (256, 256)
                    && a_b.is_none() != b_b.is_none()
                    && (ta, tb) != (false, false)
                {
                    continue; // keep the big case cheap
                }
                seed += 2;
                let sa = operand(a_b, m, k, ta);
                let sb = operand(b_b, k, n, tb);
                let da = rand_vec(sa.iter().product(), seed);
                let db = rand_vec(sb.iter().product(), seed + 1);
                let (want, want_shape) = run_bmm(&c, (&da, &sa), (&db, &sb), ta, tb);
                let (got, got_shape) = run_bmm(&g, (&da, &sa), (&db, &sb), ta, tb);
                assert_eq!(got_shape, vec![bt, m, n]);
                assert_eq!(got_shape, want_shape);
                assert_close(
                    &format!("bmm {sa:?} × {sb:?} ta={ta} tb={tb}"),
                    &got,
                    &want,
                    REL,
                );
            }
        }
    }
}

#[test]
fn gpu_bmm_of_two_matrices_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let (m, k, n) = (11, 6, 21);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (sa, sb) = (operand(None, m, k, ta), operand(None, k, n, tb));
        let da = rand_vec(m * k, 900);
        let db = rand_vec(k * n, 901);
        let (want, want_shape) = run_bmm(&c, (&da, &sa), (&db, &sb), ta, tb);
        let (got, got_shape) = run_bmm(&g, (&da, &sa), (&db, &sb), ta, tb);
        assert_eq!(got_shape, vec![m, n]);
        assert_eq!(got_shape, want_shape);
        assert_close(
            &format!("bmm {sa:?} × {sb:?} ta={ta} tb={tb}"),
            &got,
            &want,
            REL,
        );
    }
}

#[test]
fn bmm_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    let z = |s: &[usize]| g.zeros(s).unwrap();
    // inner dimensions differ
    assert_shape_error(g.bmm(&z(&[2, 3, 4]), &z(&[2, 5, 6]), false, false), "bmm");
    assert_shape_error(g.bmm(&z(&[2, 3, 4]), &z(&[2, 4, 6]), true, false), "bmm");
    // batch sizes differ
    assert_shape_error(g.bmm(&z(&[2, 3, 4]), &z(&[3, 4, 6]), false, false), "bmm");
    // ranks other than 2 or 3
    assert_shape_error(g.bmm(&z(&[1, 2, 3, 4]), &z(&[4, 6]), false, false), "bmm");
    assert_shape_error(g.bmm(&z(&[4]), &z(&[4, 6]), false, false), "bmm");
}

const SOFTMAX_SHAPES: [&[usize]; 6] = [
    &[5, 37],
    &[3, 2, 1000],
    &[7],
    &[4, 1],
    &[2, 3001],
    &[2, 256, 256],
];

/// Row-varying offsets and scales, some large: the max subtraction matters.
fn softmax_input(n: usize, seed: u64) -> Vec<f32> {
    rand_vec(n, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 12.0 + ((i / 3) % 5) as f32 * 40.0)
        .collect()
}

#[test]
fn gpu_softmax_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (i, shape) in SOFTMAX_SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = softmax_input(n, 500 + i as u64);
        let cy = c.softmax(&c.upload(&x, shape).unwrap()).unwrap();
        let gy = g.softmax(&g.upload(&x, shape).unwrap()).unwrap();
        assert_eq!(g.shape(&gy), *shape);
        let y = c.read(&cy).unwrap();
        assert_close(
            &format!("softmax {shape:?}"),
            &g.read(&gy).unwrap(),
            &y,
            REL,
        );

        let dy = rand_vec(n, 600 + i as u64);
        let want = c
            .read(
                &c.softmax_backward(&cy, &c.upload(&dy, shape).unwrap())
                    .unwrap(),
            )
            .unwrap();
        let got = g
            .read(
                &g.softmax_backward(
                    &g.upload(&y, shape).unwrap(),
                    &g.upload(&dy, shape).unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
        assert_close(&format!("softmax_backward {shape:?}"), &got, &want, REL);

        // Both row mappings (ModuleOps picks one by device and row length).
        for per_workgroup in [false, true] {
            let how = if per_workgroup {
                "workgroup"
            } else {
                "invocation"
            };
            let gy = g
                .softmax_mapped(&g.upload(&x, shape).unwrap(), per_workgroup)
                .unwrap();
            assert_close(
                &format!("softmax {shape:?}, a {how} per row"),
                &g.read(&gy).unwrap(),
                &y,
                REL,
            );
            let got = g
                .softmax_backward_mapped(
                    &g.upload(&y, shape).unwrap(),
                    &g.upload(&dy, shape).unwrap(),
                    per_workgroup,
                )
                .unwrap();
            assert_close(
                &format!("softmax_backward {shape:?}, a {how} per row"),
                &g.read(&got).unwrap(),
                &want,
                REL,
            );
        }
    }
}

#[test]
fn softmax_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    let scalar = g.upload(&[1.0], &[]).unwrap();
    assert_shape_error(g.softmax(&scalar), "softmax");
    let (a, b) = (g.zeros(&[2, 3]).unwrap(), g.zeros(&[3, 2]).unwrap());
    assert_shape_error(g.softmax_backward(&a, &b), "softmax_backward");
}
