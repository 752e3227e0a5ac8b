//! Training: the DSM loss falls, both backends agree step by step, and a run
//! resumed from a checkpoint continues exactly as a straight run.

mod common;

use common::{cpu, gpu};
use scoredd::backend::cpu::CpuBackend;
use scoredd::backend::train_ops::TrainOps;
use scoredd::backend::{Backend, NnBackend};
use scoredd::data::{self, Augment, ImageSpec};
use scoredd::model_file::ModelFile;
use scoredd::nn::score_model::ScoreModel;
use scoredd::nn::unet::{TimeEmbedding, UNetConfig};
use scoredd::sde::SdeConfig;
use scoredd::train::{TrainConfig, Trainer};

/// `n` 32×32 gray images of a smooth horizontal gradient with a bright disc at
/// a varying place: a tiny, learnable distribution.
fn images(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * 1024);
    for i in 0..n {
        let (cx, cy) = (8.0 + (i * 5 % 16) as f32, 8.0 + (i * 3 % 16) as f32);
        for y in 0..32 {
            for x in 0..32 {
                let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
                v.push(0.2 + 0.3 * x as f32 / 31.0 + if d2 < 16.0 { 0.4 } else { 0.0 });
            }
        }
    }
    v
}

fn trainer<B: NnBackend + TrainOps>(be: &B, lr: f32) -> Trainer<B> {
    let model = ScoreModel::new(
        be,
        UNetConfig::tiny(1, TimeEmbedding::Fourier),
        SdeConfig::ve(50.0),
        11,
    )
    .unwrap();
    let cfg = TrainConfig {
        lr,
        warmup: 10,
        ..TrainConfig::recipe("ve", 8, 5)
    };
    Trainer::new(be, model, cfg).unwrap()
}

/// Runs `steps` steps on batch `k mod 4` of 32 images; returns every step's loss.
fn run<B: NnBackend + TrainOps>(be: &B, t: &mut Trainer<B>, steps: u64) -> Vec<f32> {
    let data = images(32);
    let mut losses = Vec::new();
    for _ in 0..steps {
        let k = (t.step % 4) as usize;
        let x = be
            .upload(&data[k * 8 * 1024..(k + 1) * 8 * 1024], &[8, 1, 32, 32])
            .unwrap();
        let r = t.train_step(be, &x, true).unwrap().unwrap();
        losses.push(r.loss);
    }
    losses
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn loss_falls_on_cpu() {
    let c = cpu();
    let mut t = trainer(&c, 2e-3);
    let l = run(&c, &mut t, 200);
    let (first, last) = (mean(&l[..10]), mean(&l[l.len() - 20..]));
    // At init the network outputs ~0, so the loss is E|z|² ≈ 1; a tiny model on
    // this data gets well below half of that within 200 steps.
    eprintln!("cpu loss: first 10 steps {first:.3}, last 20 {last:.3}");
    assert!(last < 0.5 * first, "loss fell only from {first} to {last}");
}

#[test]
fn gpu_matches_cpu_step_by_step_and_learns() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let (mut tc, mut tg) = (trainer(&c, 2e-3), trainer(&g, 2e-3));
    let (lc, lg) = (run(&c, &mut tc, 5), run(&g, &mut tg, 5));
    for (i, (a, b)) in lc.iter().zip(&lg).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "step {}: cpu loss {a} vs gpu {b}",
            i + 1
        );
    }
    let more = run(&g, &mut tg, 60);
    let (first, last) = (mean(&lg), mean(&more[more.len() - 10..]));
    eprintln!("gpu loss: first 5 steps {first:.3}, steps 56-65 {last:.3}");
    assert!(
        last < 0.8 * first,
        "GPU loss fell only from {first} to {last}"
    );
}

fn weights<B: NnBackend + TrainOps>(be: &B, t: &Trainer<B>) -> Vec<Vec<f32>> {
    t.model
        .params
        .values
        .iter()
        .chain(&t.ema)
        .map(|w| be.read(w).unwrap())
        .collect()
}

fn resume_equivalence<B: NnBackend + TrainOps>(be: &B, n: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut straight = trainer(be, 1e-3);
    run(be, &mut straight, 2 * n);
    let mut first = trainer(be, 1e-3);
    run(be, &mut first, n);
    let bytes = first.checkpoint(be).unwrap().to_bytes().unwrap();
    drop(first);
    let mut resumed = Trainer::resume(be, &ModelFile::from_bytes(&bytes, "ckpt").unwrap()).unwrap();
    assert_eq!(resumed.step, n);
    run(be, &mut resumed, n);
    (weights(be, &straight), weights(be, &resumed))
}

#[test]
fn resuming_on_cpu_is_bit_exact() {
    let c = cpu();
    let (a, b) = resume_equivalence(&c, 6);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "tensor {i} differs after resume"
        );
    }
}

#[test]
fn resuming_on_gpu_matches_within_1e5() {
    let Some(g) = gpu() else { return };
    let (a, b) = resume_equivalence(&g, 3);
    for (x, y) in a.iter().zip(&b) {
        common::assert_close("resumed weights", y, x, 1e-5);
    }
}

#[test]
fn divergence_is_reported_and_never_writes_nan_weights() {
    let c = cpu();
    // An absurd learning rate: the weights run off until the loss is not finite.
    let mut t = trainer(&c, 1e6);
    let data = images(8);
    let x = c.upload(&data, &[8, 1, 32, 32]).unwrap();
    let mut diverged = None;
    for _ in 0..50 {
        match t.train_step(&c, &x, true) {
            Ok(_) => {}
            Err(scoredd::Error::Diverged { step, detail }) => {
                diverged = Some((step, detail));
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let (step, detail) = diverged.expect("a learning rate of 1e6 must diverge within 50 steps");
    eprintln!("diverged at step {step}: {detail}");
    assert!(!detail.is_empty());
    for w in t.model.params.values.iter().chain(&t.ema) {
        assert!(
            c.read(w).unwrap().iter().all(|v| v.is_finite()),
            "a non-finite value reached the weights"
        );
    }
}

/// One step of the CLI's loop in miniature: the batch for the next step from
/// `make_batch` with the trainer's loader seed, or NaNs if the step is listed
/// in `poison` and the run has not rolled back yet.
fn loader_step(c: &CpuBackend, t: &mut Trainer<CpuBackend>, poison: &[u64]) -> scoredd::Result<()> {
    let imgs: Vec<Vec<f32>> = images(16).chunks(1024).map(|v| v.to_vec()).collect();
    let mut b = data::make_batch(
        &imgs,
        ImageSpec::gray(32),
        8,
        &Augment::none(),
        t.config.loader_seed(),
        t.step,
    )
    .unwrap();
    if t.config.rollbacks == 0 && poison.contains(&(t.step + 1)) {
        b.data.iter_mut().for_each(|v| *v = f32::NAN);
    }
    let x = c.upload(&b.data, &b.shape).unwrap();
    t.train_step(c, &x, false).map(|_| ())
}

#[test]
fn non_finite_steps_are_skipped_then_roll_back_and_resume_exactly() {
    let c = cpu();
    let mut t = trainer(&c, 1e-3);
    let poison = [4, 5, 6];
    for _ in 0..3 {
        loader_step(&c, &mut t, &poison).unwrap();
    }
    let last = t.checkpoint(&c).unwrap();
    // Two non-finite steps are skipped; the third in a row is a divergence.
    loader_step(&c, &mut t, &poison).unwrap();
    loader_step(&c, &mut t, &poison).unwrap();
    assert_eq!(t.config.skipped_in_a_row, 2);
    let err = loader_step(&c, &mut t, &poison).unwrap_err();
    assert!(
        matches!(err, scoredd::Error::Diverged { step: 6, .. }),
        "{err}"
    );
    let mut t = t.rolled_back(&c, &last).unwrap();
    assert_eq!((t.step, t.config.rollbacks), (3, 1));
    assert_eq!(t.config.lr, 0.5e-3);
    // Killed at step 8, after the rollback; the straight run goes on to 12.
    for _ in 3..8 {
        loader_step(&c, &mut t, &poison).unwrap();
    }
    let killed = t.checkpoint(&c).unwrap().to_bytes().unwrap();
    for _ in 8..12 {
        loader_step(&c, &mut t, &poison).unwrap();
    }
    let mut r = Trainer::resume(&c, &ModelFile::from_bytes(&killed, "killed").unwrap()).unwrap();
    assert_eq!((r.step, r.config.rollbacks, r.config.lr), (8, 1, 0.5e-3));
    for _ in 8..12 {
        loader_step(&c, &mut r, &poison).unwrap();
    }
    let (a, b) = (t.checkpoint(&c).unwrap(), r.checkpoint(&c).unwrap());
    assert_eq!(a.weights, b.weights, "EMA weights differ after resuming");
    assert_eq!(
        a.extra, b.extra,
        "raw weights or Adam state differ after resuming"
    );
    assert_eq!(a.meta.training, b.meta.training);
}

#[test]
fn learning_rate_warms_up_linearly() {
    let cfg = TrainConfig {
        lr: 1e-3,
        warmup: 4,
        ..TrainConfig::recipe("ve", 8, 0)
    };
    let lrs: Vec<f32> = (1..=6).map(|s| cfg.learning_rate(s)).collect();
    assert_eq!(lrs, [0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3]);
}
