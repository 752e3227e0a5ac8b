//! `scoredd sample`: draw images from a trained model into a grid PNG.

use std::path::PathBuf;

use clap::Args;
use indicatif::ProgressBar;
use scoredd::backend::{open_backend, BackendChoice, NnBackend, Sampler};
use scoredd::model_file::ModelFile;
use scoredd::nn::score_model::ScoreModel;
use scoredd::{plot, sample, with_backend, Error};

#[derive(Args, Debug)]
pub struct SampleArgs {
    #[arg(long, default_value = "model.safetensors")]
    pub model: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Reverse steps from t = 1 (more is slower and sharper).
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Reverse SDE (Euler–Maruyama) or the probability-flow ODE.
    #[arg(long, value_enum, default_value_t = Sampler::Sde)]
    pub sampler: Sampler,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
}

pub fn run(choice: BackendChoice, args: SampleArgs) -> Result<(), Error> {
    let file = ModelFile::load(&args.model)?;
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    with_backend!(&backend, |b| sample_on(b, &file, &args))
}

fn sample_on<B: NnBackend>(be: &B, file: &ModelFile, args: &SampleArgs) -> Result<(), Error> {
    let model = ScoreModel::from_file(be, file)?;
    let sampler = args.sampler;
    let bar = ProgressBar::new(args.steps as u64);
    let x = sample::sample(
        be,
        &model,
        args.n,
        args.steps,
        sampler,
        args.seed,
        &mut |_| bar.inc(1),
    )?;
    bar.finish_and_clear();
    let c = &model.net.config;
    plot::save_png(
        &sample::grid(&be.read(&x)?, args.n, c.channels, c.image_size),
        &args.out,
    )?;
    println!(
        "{} samples ({} steps, {}) from {} (trained {} steps): {}",
        args.n,
        args.steps,
        super::sampler_name(sampler),
        args.model.display(),
        file.meta.step,
        args.out.display()
    );
    Ok(())
}
