//! The whole score U-net: architecture (parameter counts match the PyTorch
//! reference in ../shared/peer), GPU vs CPU forward and every parameter
//! gradient, a finite-difference check of the backward pass, per-sample t.

mod common;

use common::{assert_close, cpu, gpu, rand_vec};
use scoredd::backend::{Backend, NnBackend};
use scoredd::method::ScoreFn;
use scoredd::nn::score_model::ScoreModel;
use scoredd::nn::unet::{ForwardOpts, TimeEmbedding, UNetConfig};
use scoredd::sde::SdeConfig;

fn tiny_ve() -> (UNetConfig, SdeConfig) {
    (
        UNetConfig::tiny(1, TimeEmbedding::Fourier),
        SdeConfig::ve(50.0),
    )
}

fn trainable_count<B: NnBackend>(m: &ScoreModel<B>) -> usize {
    (0..m.params.len())
        .filter(|&i| m.net.is_trainable(i))
        .map(|i| m.params.shapes[i].iter().product::<usize>())
        .sum()
}

#[test]
fn parameter_counts_match_the_pytorch_reference() {
    // ../shared/peer/README.md: small (64 px, RGB) 2,249,859; tiny (32 px, gray) 160,721.
    let c = cpu();
    let small = ScoreModel::new(
        &c,
        UNetConfig::small(3, TimeEmbedding::Fourier),
        SdeConfig::ve(50.0),
        0,
    )
    .unwrap();
    assert_eq!(trainable_count(&small), 2_249_859);
    let tiny = ScoreModel::new(
        &c,
        UNetConfig::tiny(1, TimeEmbedding::Fourier),
        SdeConfig::ve(50.0),
        0,
    )
    .unwrap();
    assert_eq!(trainable_count(&tiny), 160_721);
    // Forward GFLOP per image, as counted by the reference: 2.886 and 0.120.
    assert!(
        (small.net.flops_per_image() / 1e9 - 2.8855).abs() < 2e-3,
        "{}",
        small.net.flops_per_image()
    );
    assert!(
        (tiny.net.flops_per_image() / 1e9 - 0.1198).abs() < 1e-3,
        "{}",
        tiny.net.flops_per_image()
    );
}

/// Loss = Σ w ⊙ out, so d loss / d out = w: a random linear probe of the output.
fn loss_and_grads<B: NnBackend>(
    be: &B,
    m: &ScoreModel<B>,
    x: &[f32],
    t: &[f64],
    w: &[f32],
) -> (f64, Vec<f32>, Vec<Vec<f32>>) {
    let shape = [
        t.len(),
        m.net.config.channels,
        m.net.config.image_size,
        m.net.config.image_size,
    ];
    let xt = be.upload(x, &shape).unwrap();
    let f = m
        .net
        .forward(
            be,
            &m.params,
            m.sde.as_ref(),
            &xt,
            t,
            &ForwardOpts {
                record: true,
                ..Default::default()
            },
        )
        .unwrap();
    let out = be.read(&f.out).unwrap();
    let loss = out.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum();
    let g = m
        .net
        .backward(
            be,
            &m.params,
            f.tape.as_ref().unwrap(),
            &be.upload(w, &shape).unwrap(),
        )
        .unwrap();
    let grads = g.values.iter().enumerate().map(|(i, v)| match v {
        Some(t) => be.read(t).unwrap(),
        None => {
            assert!(
                !m.net.is_trainable(i),
                "trainable parameter {} got no gradient",
                m.params.names[i]
            );
            vec![]
        }
    });
    (loss, out, grads.collect())
}

/// A model whose "identity at init" convs are perturbed, so every gradient path is exercised.
fn random_model<B: NnBackend>(be: &B, cfg: UNetConfig, sde: SdeConfig) -> ScoreModel<B> {
    let mut m = ScoreModel::new(be, cfg, sde, 7).unwrap();
    let values: Vec<Vec<f32>> = (0..m.params.len())
        .map(|i| {
            let n: usize = m.params.shapes[i].iter().product();
            let v = be.read(&m.params.values[i]).unwrap();
            if m.net.is_trainable(i) {
                let r = rand_vec(n, 1000 + i as u64);
                v.iter().zip(r).map(|(a, b)| a + 0.05 * b).collect()
            } else {
                v
            }
        })
        .collect();
    m.params = m.net.spec.store(be, &values).unwrap();
    m
}

#[test]
fn gpu_forward_and_gradients_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for (cfg, sde) in [
        tiny_ve(),
        (
            UNetConfig::tiny(3, TimeEmbedding::Sinusoidal),
            SdeConfig::vp(),
        ),
    ] {
        let mc = random_model(&c, cfg.clone(), sde.clone());
        let mg = random_model(&g, cfg.clone(), sde.clone());
        let n = 2 * cfg.channels * 32 * 32;
        let (x, w) = (rand_vec(n, 1), rand_vec(n, 2));
        let t = [0.3, 0.8];
        let (lc, oc, gc) = loss_and_grads(&c, &mc, &x, &t, &w);
        let (lg, og, gg) = loss_and_grads(&g, &mg, &x, &t, &w);
        assert_close("network output", &og, &oc, 1e-3);
        // The score (per-sample output scaling) through the ScoreFn seam.
        let shape = [2, cfg.channels, 32, 32];
        let sc = c
            .read(&mc.score(&c, &c.upload(&x, &shape).unwrap(), &t).unwrap())
            .unwrap();
        let sg = g
            .read(&mg.score(&g, &g.upload(&x, &shape).unwrap(), &t).unwrap())
            .unwrap();
        assert_close("score", &sg, &sc, 1e-3);
        assert!(
            (lc - lg).abs() <= 1e-3 * lc.abs().max(1.0),
            "loss {lc} vs {lg}"
        );
        for (i, (a, b)) in gg.iter().zip(&gc).enumerate() {
            assert_close(&format!("gradient of {}", mc.params.names[i]), a, b, 1e-3);
        }
    }
}

/// The backward's derivative of the loss along random directions in
/// parameter space against a central finite difference: all trainable
/// parameters at once, then only the attention blocks' and only the residual
/// blocks' 1×1 skip convs (whose gradients carry the blocks' 1/√2 output
/// scale as a factor, `Grads::scaled`), so a wrong factor on one group
/// cannot hide in the sum.
#[test]
fn backward_matches_a_finite_difference_directional_derivative() {
    let c = cpu();
    let (tiny, sde) = tiny_ve();
    // tiny has no attention: add it at 16 px (and so in the middle) for this test.
    let cfg = UNetConfig {
        attn_resolutions: vec![16],
        ..tiny
    };
    let m = random_model(&c, cfg, sde);
    let n = 2 * 32 * 32;
    let (x, w) = (rand_vec(n, 3), rand_vec(n, 4));
    let t = [0.2, 0.6];
    let (_, _, grads) = loss_and_grads(&c, &m, &x, &t, &w);
    let base: Vec<Vec<f32>> = m.params.values.iter().map(|v| c.read(v).unwrap()).collect();
    let loss_at = |dir: &[Vec<f32>], h: f32| {
        let vals: Vec<Vec<f32>> = base
            .iter()
            .zip(dir)
            .map(|(b, d)| b.iter().zip(d).map(|(x, y)| x + h * y).collect())
            .collect();
        let mut mm = random_model(&c, m.net.config.clone(), m.meta.sde.clone());
        mm.params = m.net.spec.store(&c, &vals).unwrap();
        loss_and_grads(&c, &mm, &x, &t, &w).0
    };
    for group in ["", "attn", ".skip."] {
        let in_group = |i: usize| m.net.is_trainable(i) && m.params.names[i].contains(group);
        assert!(
            (0..base.len()).any(in_group),
            "no trainable parameter matches {group:?}"
        );
        let dir: Vec<Vec<f32>> = base
            .iter()
            .enumerate()
            .map(|(i, v)| match in_group(i) {
                true => rand_vec(v.len(), 500 + i as u64),
                false => vec![0.0; v.len()],
            })
            .collect();
        let analytic: f64 = grads
            .iter()
            .zip(&dir)
            .filter(|(g, _)| !g.is_empty())
            .map(|(g, d)| {
                g.iter()
                    .zip(d)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
            })
            .sum();
        // Central difference in f32 arithmetic, with a parameter step of length
        // 0.02 along every direction (h = 1e-4 for the full one, norm ~230):
        // truncation (O(h²)) and the loss's f32 rounding (~1e-7 of it, over 2h)
        // gave 1.6e-4, 1.2e-4 and 3.9e-4 relative for the three groups; a wrong
        // 1/√2 factor would be 0.4. A step of 0.2 gives 5e-4 from curvature
        // alone, and a fixed h lets rounding dominate on the smaller groups.
        let norm = dir
            .iter()
            .flatten()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let h = (0.02 / norm) as f32;
        let numeric = (loss_at(&dir, h) - loss_at(&dir, -h)) / (2.0 * h as f64);
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-6);
        eprintln!("directional derivative {group:?}: fd {numeric:.6e} backward {analytic:.6e} rel {rel:.2e}");
        assert!(
            rel < 1e-3,
            "directional derivative {group:?}: finite difference {numeric} vs backward {analytic} (rel {rel:e})"
        );
    }
}

#[test]
fn mixed_times_in_a_batch_equal_one_by_one() {
    let c = cpu();
    let (cfg, sde) = tiny_ve();
    let m = random_model(&c, cfg, sde);
    let d = 32 * 32;
    let x = rand_vec(3 * d, 9);
    let t = [0.05, 0.5, 0.95];
    let batch = m
        .net
        .forward(
            &c,
            &m.params,
            m.sde.as_ref(),
            &c.upload(&x, &[3, 1, 32, 32]).unwrap(),
            &t,
            &ForwardOpts::default(),
        )
        .unwrap();
    let batch = c.read(&batch.out).unwrap();
    for i in 0..3 {
        let one = m
            .net
            .forward(
                &c,
                &m.params,
                m.sde.as_ref(),
                &c.upload(&x[i * d..(i + 1) * d], &[1, 1, 32, 32]).unwrap(),
                &t[i..i + 1],
                &ForwardOpts::default(),
            )
            .unwrap();
        assert_close(
            &format!("sample {i}"),
            &c.read(&one.out).unwrap(),
            &batch[i * d..(i + 1) * d],
            1e-5,
        );
    }
}

#[test]
fn taps_are_returned_by_name_and_unknown_names_rejected() {
    let c = cpu();
    let (cfg, sde) = tiny_ve();
    let m = random_model(&c, cfg, sde);
    let names = m.net.tap_names();
    assert!(
        names.contains(&"up.0".to_string()) && names.contains(&"up.1".to_string()),
        "{names:?}"
    );
    let x = c.upload(&rand_vec(2 * 1024, 1), &[2, 1, 32, 32]).unwrap();
    let want = vec!["up.0".to_string(), "up.1".to_string()];
    let f = m
        .net
        .forward(
            &c,
            &m.params,
            m.sde.as_ref(),
            &x,
            &[0.1, 0.1],
            &ForwardOpts {
                taps: &want,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(c.shape(&f.taps["up.0"]), &[2, 16, 32, 32]);
    assert_eq!(c.shape(&f.taps["up.1"]), &[2, 32, 16, 16]);
    let bad = vec!["up.9".to_string()];
    assert!(m
        .net
        .forward(
            &c,
            &m.params,
            m.sde.as_ref(),
            &x,
            &[0.1, 0.1],
            &ForwardOpts {
                taps: &bad,
                ..Default::default()
            }
        )
        .is_err());
    let wrong = c
        .upload(&rand_vec(2 * 3 * 1024, 1), &[2, 3, 32, 32])
        .unwrap();
    assert!(m
        .net
        .forward(
            &c,
            &m.params,
            m.sde.as_ref(),
            &wrong,
            &[0.1, 0.1],
            &ForwardOpts::default()
        )
        .is_err());
}

#[test]
fn output_parametrisation_follows_the_sde() {
    // VE: s = out/σ(t); VP and sub-VP: s = −out/σ(t) (DESIGN.md).
    let c = cpu();
    for (sde, sign) in [
        (SdeConfig::ve(50.0), 1.0f32),
        (SdeConfig::vp(), -1.0),
        (SdeConfig::subvp(), -1.0),
    ] {
        let m = ScoreModel::new(&c, UNetConfig::tiny(1, TimeEmbedding::Fourier), sde, 0).unwrap();
        let out = c.upload(&[2.0; 2 * 1024], &[2, 1, 32, 32]).unwrap();
        let t = [0.1, 0.9];
        let s = c.read(&m.output_to_score(&c, &out, &t).unwrap()).unwrap();
        for (i, &ti) in t.iter().enumerate() {
            let want = sign * 2.0 / m.sde.std(ti) as f32;
            assert!(
                (s[i * 1024] - want).abs() <= 1e-5 * want.abs(),
                "{}: {} vs {want}",
                m.sde.name(),
                s[i * 1024]
            );
        }
    }
}

/// Inference in memory-sized chunks gives what one forward over the whole
/// batch gives (outputs and taps, in order), on both backends; and the chunk
/// size follows the activation budget.
fn chunked_forward_matches_whole<B: NnBackend>(be: &B, what: &str) {
    let (cfg, sde) = tiny_ve();
    let m = random_model(be, cfg, sde);
    let n = 7;
    let x = be
        .upload(&rand_vec(n * 32 * 32, 3), &[n, 1, 32, 32])
        .unwrap();
    let t: Vec<f64> = (0..n).map(|i| 0.1 + 0.1 * i as f64).collect();
    let taps = vec!["up.0".to_string(), "down.1.block.0".to_string()];
    let opts = ForwardOpts {
        taps: &taps,
        ..Default::default()
    };
    let whole = m
        .net
        .forward(be, &m.params, m.sde.as_ref(), &x, &t, &opts)
        .unwrap();
    // Whole: the tiny net's memory budget takes all 7 at once.
    let chunked = ForwardOpts {
        max_batch: Some(3),
        taps: &taps,
        ..Default::default()
    };
    let parts = m
        .net
        .forward(be, &m.params, m.sde.as_ref(), &x, &t, &chunked)
        .unwrap();
    assert_eq!(be.shape(&parts.out), be.shape(&whole.out));
    let read = |v: &B::Tensor| be.read(v).unwrap();
    // Per-sample work is the same; only the GEMM blocking may differ.
    assert_close(
        &format!("{what} output"),
        &read(&parts.out),
        &read(&whole.out),
        1e-5,
    );
    for name in &taps {
        assert_close(
            &format!("{what} tap {name}"),
            &read(&parts.taps[name]),
            &read(&whole.taps[name]),
            1e-5,
        );
    }
}

#[test]
fn inference_in_chunks_matches_one_forward() {
    chunked_forward_matches_whole(&cpu(), "cpu");
    if let Some(g) = gpu() {
        chunked_forward_matches_whole(&g, "gpu");
    }
    let small = scoredd::nn::unet::UNet::new(UNetConfig::small(3, TimeEmbedding::Fourier)).unwrap();
    let big =
        scoredd::nn::unet::UNet::new(UNetConfig::ncsnpp256(3, TimeEmbedding::Fourier)).unwrap();
    assert_eq!(small.inference_batch_limit(64, 64), 16);
    assert_eq!(big.inference_batch_limit(256, 256), 1);
}

/// `features` returns exactly the taps a whole forward returns, whole or in
/// chunks; and it stops at the last tap asked for: with a decoder weight
/// broken (a wrong shape, which any conv over it rejects), encoder and
/// middle taps still come back while a decoder tap or the whole forward fails.
fn features_match_forward_and_stop_at_the_last_tap<B: NnBackend>(be: &B, what: &str) {
    let (cfg, sde) = tiny_ve();
    let mut m = random_model(be, cfg, sde);
    let n = 5;
    let x = be
        .upload(&rand_vec(n * 32 * 32, 9), &[n, 1, 32, 32])
        .unwrap();
    let t: Vec<f64> = (0..n).map(|i| 0.05 + 0.15 * i as f64).collect();
    let read = |v: &B::Tensor| be.read(v).unwrap();
    let tap_sets: [&[&str]; 4] = [
        &["down.0.block.0"],
        &["mid", "down.1.block.0"],
        &["up.1.block.0"],
        &["up.0", "down.0.block.0"],
    ];
    for set in tap_sets {
        let taps: Vec<String> = set.iter().map(|s| s.to_string()).collect();
        let opts = ForwardOpts {
            taps: &taps,
            ..Default::default()
        };
        let whole = m
            .net
            .forward(be, &m.params, m.sde.as_ref(), &x, &t, &opts)
            .unwrap();
        for max_batch in [None, Some(2)] {
            let fo = ForwardOpts { max_batch, ..opts };
            let f = m
                .net
                .features(be, &m.params, m.sde.as_ref(), &x, &t, &fo)
                .unwrap();
            assert_eq!(f.len(), taps.len(), "{what} {set:?}");
            for name in &taps {
                assert_eq!(be.shape(&f[name]), be.shape(&whole.taps[name]));
                assert_close(
                    &format!("{what} features {name} (max_batch {max_batch:?})"),
                    &read(&f[name]),
                    &read(&whole.taps[name]),
                    1e-6,
                );
            }
        }
    }
    // Break the last decoder level's first conv.
    let broken = m
        .params
        .names
        .iter()
        .position(|n| n.starts_with("up.0.block.0.") && n.ends_with("conv0.weight"))
        .expect("tiny has up.0.block.0.conv0.weight");
    m.params.values[broken] = be.upload(&[0.5], &[1, 1, 1, 1]).unwrap();
    let run = |taps: &[&str]| {
        let taps: Vec<String> = taps.iter().map(|s| s.to_string()).collect();
        let opts = ForwardOpts {
            taps: &taps,
            ..Default::default()
        };
        m.net
            .features(be, &m.params, m.sde.as_ref(), &x, &t, &opts)
            .map(|f| f.len())
    };
    assert_eq!(run(&["down.1.block.0", "mid"]).ok(), Some(2), "{what}");
    assert_eq!(run(&["up.1"]).ok(), Some(1), "{what}");
    assert!(
        run(&["up.0"]).is_err(),
        "{what}: the broken conv did not run"
    );
    let opts = ForwardOpts::default();
    assert!(m
        .net
        .forward(be, &m.params, m.sde.as_ref(), &x, &t, &opts)
        .is_err());
    let record = ForwardOpts {
        record: true,
        ..ForwardOpts::default()
    };
    assert!(m
        .net
        .features(be, &m.params, m.sde.as_ref(), &x, &t, &record)
        .is_err());
}

#[test]
fn features_match_forward_taps_and_skip_the_layers_after_the_last() {
    features_match_forward_and_stop_at_the_last_tap(&cpu(), "cpu");
    if let Some(g) = gpu() {
        features_match_forward_and_stop_at_the_last_tap(&g, "gpu");
    }
}
