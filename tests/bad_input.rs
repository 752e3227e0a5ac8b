//! Bad input gives a typed error naming the op — never a panic, never a wgpu
//! validation abort — on both backends.

mod common;

use scoredd::backend::{
    Backend, Conv2dSpec, Distribution, NnBackend, PairedState, PerturbCoef, Sampler, StepCoef,
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
