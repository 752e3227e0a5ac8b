//! Bad input gives a typed error naming the op — never a panic, never a wgpu
//! validation abort — on both backends, and the SAME error: every op's
//! shapes are validated once (`backend::plan`) for both.

mod common;

use scoredd::backend::{
    AdamStep, Backend, Conv2dSpec, Distribution, NnBackend, PairedState, PerturbCoef, Pointwise,
    Reduce, Sampler, StepCoef,
};
use scoredd::rng::RngStream;
use scoredd::Error;

fn expect_shape<T: std::fmt::Debug>(what: &str, r: scoredd::Result<T>, op: &str) {
    match r {
        Err(Error::Shape { op: o, .. }) => assert_eq!(o, op, "{what}"),
        other => panic!("{what}: expected a shape error from {op}, got {other:?}"),
    }
}

fn check_all<B: NnBackend>(b: &B) {
    let t = |shape: &[usize]| b.zeros(shape).unwrap();
    expect_shape(
        "upload count",
        b.upload(&[1.0, 2.0, 3.0], &[2, 2]),
        "upload",
    );
    expect_shape("matmul inner", b.matmul(&t(&[2, 3]), &t(&[4, 5])), "matmul");
    expect_shape(
        "matmul rank",
        b.matmul(&t(&[2, 3, 1]), &t(&[3, 5])),
        "matmul",
    );
    let x = t(&[1, 3, 8, 8]);
    expect_shape(
        "conv channels",
        b.conv2d(&x, &t(&[4, 2, 3, 3]), None, Conv2dSpec::new(1, 1)),
        "conv2d",
    );
    expect_shape(
        "conv rank",
        b.conv2d(
            &t(&[3, 8, 8]),
            &t(&[4, 3, 3, 3]),
            None,
            Conv2dSpec::new(1, 1),
        ),
        "conv2d",
    );
    expect_shape(
        "conv bias",
        b.conv2d(&x, &t(&[4, 3, 3, 3]), Some(&t(&[5])), Conv2dSpec::new(1, 1)),
        "conv2d",
    );
    expect_shape(
        "conv stride 0",
        b.conv2d(&x, &t(&[4, 3, 3, 3]), None, Conv2dSpec::new(0, 1)),
        "conv2d",
    );
    expect_shape(
        "conv kernel too big",
        b.conv2d(
            &t(&[1, 3, 2, 2]),
            &t(&[4, 3, 3, 3]),
            None,
            Conv2dSpec::new(1, 0),
        ),
        "conv2d",
    );
    let coef = PerturbCoef {
        mu: 1.0,
        sigma: 1.0,
        stream: 0,
    };
    expect_shape(
        "perturb coef count",
        b.perturb(&t(&[3, 4]), &[coef; 2], RngStream::new(0, 0)),
        "perturb",
    );
    let mut st = PairedState {
        x0: t(&[2, 4]),
        whole: t(&[2, 4]),
        own: t(&[2, 4]),
        z: t(&[2, 5]),
    };
    let step = StepCoef {
        f: 0.0,
        g: 1.0,
        sigma: 1.0,
        mu_next: 1.0,
        sigma_next: 1.0,
        dt: 0.01,
        stream: 0,
    };
    expect_shape(
        "paired z shape",
        b.paired_step(
            &mut st,
            &t(&[2, 4]),
            &[step; 2],
            Sampler::Ode,
            RngStream::new(0, 0),
        ),
        "paired_step",
    );
    // Element counts that overflow usize are shape errors, not panics.
    expect_shape("overflowing shape", b.zeros(&[usize::MAX, 2]), "zeros");
}

#[test]
fn cpu_rejects_bad_shapes() {
    check_all(&common::cpu());
}

#[test]
fn gpu_rejects_bad_shapes() {
    let Some(g) = common::gpu() else { return };
    check_all(&g);
}

/// The message of `r`'s error ("Ok" if there was none).
fn outcome<T>(r: scoredd::Result<T>) -> String {
    match r {
        Ok(_) => "Ok".to_string(),
        Err(e) => e.to_string(),
    }
}

/// Bad inputs to every op with shape checks, and what each gave.
fn refusals<B: NnBackend>(b: &B) -> Vec<(&'static str, String)> {
    let t = |shape: &[usize]| b.zeros(shape).unwrap();
    let (x, x2, s1) = (t(&[2, 6, 4, 4]), t(&[2, 6, 4, 5]), Conv2dSpec::new(1, 1));
    let rng = RngStream::new(0, 0);
    let coef = PerturbCoef {
        mu: 1.0,
        sigma: 1.0,
        stream: 0,
    };
    let step = StepCoef {
        f: 0.0,
        g: 1.0,
        sigma: 1.0,
        mu_next: 1.0,
        sigma_next: 1.0,
        dt: 0.01,
        stream: 0,
    };
    let mut st = PairedState {
        x0: t(&[2, 4]),
        whole: t(&[2, 4]),
        own: t(&[2, 4]),
        z: t(&[2, 5]),
    };
    let (mut p, mut m, mut v) = (t(&[3]), t(&[3]), t(&[4]));
    let (mut ema, hp) = (t(&[3]), AdamStep::new(1e-3, 1));
    vec![
        ("upload", outcome(b.upload(&[1.0, 2.0, 3.0], &[2, 2]))),
        ("zeros", outcome(b.zeros(&[usize::MAX, 2]))),
        (
            "random",
            outcome(b.random(&[usize::MAX, 3], Distribution::Normal, rng)),
        ),
        ("reshape", outcome(b.reshape(&x, &[5]))),
        ("matmul inner", outcome(b.matmul(&t(&[2, 3]), &t(&[4, 5])))),
        (
            "matmul rank",
            outcome(b.matmul(&t(&[2, 3, 1]), &t(&[3, 5]))),
        ),
        (
            "bmm inner",
            outcome(b.bmm(&t(&[2, 3, 4]), &t(&[2, 5, 6]), false, false)),
        ),
        (
            "bmm inner ᵀ",
            outcome(b.bmm(&t(&[2, 3, 4]), &t(&[2, 4, 6]), true, false)),
        ),
        (
            "bmm batch",
            outcome(b.bmm(&t(&[2, 3, 4]), &t(&[3, 4, 6]), false, false)),
        ),
        (
            "bmm rank 4",
            outcome(b.bmm(&t(&[1, 2, 3, 4]), &t(&[4, 6]), false, false)),
        ),
        (
            "bmm rank 1",
            outcome(b.bmm(&t(&[4]), &t(&[4, 6]), false, false)),
        ),
        ("axpby", outcome(b.axpby(1.0, &x, 1.0, &x2))),
        ("mul", outcome(b.mul(&x, &t(&[2, 6, 16])))),
        ("silu_backward", outcome(b.silu_backward(&x, &x2))),
        (
            "pointwise arity",
            outcome(b.pointwise(Pointwise::Mul, &[&x], [0.0; 2])),
        ),
        ("sum_batch", outcome(b.sum_batch(&t(&[])))),
        (
            "concat batch",
            outcome(b.concat_channels(&x, &t(&[3, 6, 4, 4]))),
        ),
        ("concat space", outcome(b.concat_channels(&x, &x2))),
        ("split", outcome(b.split_channels(&x, 7))),
        (
            "conv channels",
            outcome(b.conv2d(&x, &t(&[4, 2, 3, 3]), None, s1)),
        ),
        (
            "conv rank",
            outcome(b.conv2d(&t(&[6, 4, 4]), &t(&[4, 6, 3, 3]), None, s1)),
        ),
        (
            "conv bias",
            outcome(b.conv2d(&x, &t(&[4, 6, 3, 3]), Some(&t(&[5])), s1)),
        ),
        (
            "conv stride",
            outcome(b.conv2d(&x, &t(&[4, 6, 3, 3]), None, Conv2dSpec::new(0, 1))),
        ),
        (
            "conv kernel",
            outcome(b.conv2d(&x, &t(&[4, 6, 7, 7]), None, Conv2dSpec::new(1, 0))),
        ),
        (
            "conv dy",
            outcome(b.conv2d_backward(&x, &t(&[4, 6, 3, 3]), &x2, s1)),
        ),
        (
            "conv weight",
            outcome(b.conv2d_backward(&x, &t(&[4, 2, 3, 3]), &x, s1)),
        ),
        (
            "group_norm groups",
            outcome(b.group_norm(&x, &t(&[6]), &t(&[6]), 4, 1e-5)),
        ),
        (
            "group_norm gamma",
            outcome(b.group_norm(&x, &t(&[3]), &t(&[6]), 3, 1e-5)),
        ),
        (
            "group_norm beta",
            outcome(b.group_norm(&x, &t(&[6]), &t(&[6, 1]), 3, 1e-5)),
        ),
        (
            "gn stats",
            outcome(b.group_norm_backward(&x, &t(&[6]), &t(&[2, 2, 2]), &x, 3)),
        ),
        (
            "gn dy",
            outcome(b.group_norm_backward(&x, &t(&[6]), &t(&[2, 3, 2]), &x2, 3)),
        ),
        ("softmax", outcome(b.softmax(&t(&[])))),
        (
            "softmax_backward",
            outcome(b.softmax_backward(&t(&[2, 3]), &t(&[3, 2]))),
        ),
        ("add_bias", outcome(b.add_bias(&x, &t(&[5])))),
        ("add_bias rank", outcome(b.add_bias(&t(&[6]), &t(&[6])))),
        (
            "add_sample_bias",
            outcome(b.add_sample_bias(&x, &t(&[6, 2]))),
        ),
        ("bias_grad", outcome(b.bias_grad(&t(&[6])))),
        ("sample_bias_grad", outcome(b.sample_bias_grad(&t(&[6])))),
        ("upsample2x", outcome(b.upsample2x(&t(&[2, 6, 4])))),
        ("avgpool2x", outcome(b.avgpool2x(&x2))),
        ("fir_up", outcome(b.fir_up(&t(&[6, 4, 4])))),
        ("fir_down", outcome(b.fir_down(&x2))),
        ("fir_up_backward", outcome(b.fir_up_backward(&x2))),
        (
            "fir_down_backward",
            outcome(b.fir_down_backward(&t(&[4, 4]))),
        ),
        ("dropout", outcome(b.dropout_mask(&[4], 1.0, rng))),
        ("perturb", outcome(b.perturb(&t(&[3, 4]), &[coef; 2], rng))),
        (
            "paired_step",
            outcome(b.paired_step(&mut st, &t(&[2, 4]), &[step; 2], Sampler::Ode, rng)),
        ),
        ("pair_distance", outcome(b.pair_distance(&t(&[3, 2, 4, 4])))),
        (
            "dsm_loss shapes",
            outcome(b.dsm_loss(&x, &x2, &[1.0; 2], -1.0, Reduce::Mean)),
        ),
        (
            "dsm_loss weights",
            outcome(b.dsm_loss(&x, &x, &[1.0; 3], -1.0, Reduce::Mean)),
        ),
        ("add_sum_squares", outcome(b.add_sum_squares(&t(&[2]), &x))),
        (
            "adam_step",
            outcome(b.adam_step(&mut p, &t(&[3]), &mut m, &mut v, &hp, &t(&[1]))),
        ),
        ("ema_update", outcome(b.ema_update(&mut ema, &t(&[4]), 0.9))),
    ]
}

/// Every op refuses bad shapes on the CPU, and the GPU refuses exactly the
/// same inputs with exactly the same messages.
#[test]
fn both_backends_refuse_alike() {
    let c = refusals(&common::cpu());
    for (case, msg) in &c {
        assert!(
            msg.contains("shape mismatch") || msg.starts_with("invalid argument"),
            "{case}: expected a shape or argument error, got {msg}"
        );
    }
    let Some(g) = common::gpu() else { return };
    for ((case, cm), (_, gm)) in c.iter().zip(refusals(&g)) {
        assert_eq!(*cm, gm, "{case}: the CPU and the GPU refuse differently");
    }
}

#[test]
fn absurd_sizes_are_too_large_errors() {
    let c = common::cpu();
    assert!(matches!(
        c.zeros(&[1 << 20, 1 << 20]),
        Err(Error::TooLarge { .. })
    ));
    let Some(g) = common::gpu() else { return };
    // 16 GiB: past lavapipe's (and most GPUs') storage-binding limit.
    match g.random(&[1 << 32], Distribution::Normal, RngStream::new(0, 0)) {
        Err(Error::TooLarge { op, .. }) => assert_eq!(op, "random"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    match g.zeros(&[1 << 16, 1 << 16]) {
        Err(Error::TooLarge { .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The device stays usable afterwards.
    let ok = g.upload(&[1.0, 2.0], &[2]).unwrap();
    assert_eq!(g.read(&ok).unwrap(), vec![1.0, 2.0]);
}

#[test]
fn sde_start_times_are_checked() {
    use scoredd::method::paired_reverse;
    use scoredd::toy::{paper_sde, GaussianMixture, MixtureScore};
    let c = common::cpu();
    let sde = paper_sde();
    let score = MixtureScore {
        mixture: GaussianMixture::paper(),
        sde: sde.clone(),
    };
    let x0 = c.zeros(&[1, 2]).unwrap();
    for bad in [0.0, -0.1, 1.5, f64::NAN] {
        let r = paired_reverse(
            &c,
            &sde,
            &score,
            &x0,
            &[bad],
            1,
            Sampler::Ode,
            RngStream::new(0, 0),
            &[0],
        );
        assert!(matches!(r, Err(Error::Invalid(_))), "t = {bad}");
    }
}
