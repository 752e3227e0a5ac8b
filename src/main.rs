//! The `scoredd` command line.

use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use scoredd::backend::BackendChoice;
use scoredd::Error;

#[derive(Parser)]
#[command(
    name = "scoredd",
    version,
    about = "Unsupervised visual defect detection with score-based diffusion models (Score-DD)"
)]
struct Cli {
    /// Where to compute: `auto` takes a hardware GPU if there is one, else the CPU.
    /// `WGPU_BACKEND` (vulkan, metal, dx12) and `WGPU_ADAPTER_NAME` narrow the GPU search.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, global = true)]
    backend: BackendChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The paper's exact-score experiment (2-D Gaussian mixture, Fig. 3): prints
    /// the whole-score differences and writes a trajectory plot.
    Toy {
        /// Noise draws per test point.
        #[arg(long, default_value_t = 256)]
        draws: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where to write the trajectory plot.
        #[arg(long, default_value = "scoredd-toy.png")]
        out: PathBuf,
    },
    /// Train a score model on a folder of good images (MVTec layout, plain folder or MNIST).
    Train(cli::train::TrainArgs),
    /// Draw images from a trained model and save them as a grid PNG.
    Sample(cli::sample::SampleArgs),
    /// Fit the detector to a trained model on held-out normal images: the verdict
    /// threshold and, with --auto, {t} and taps chosen on synthetic defects.
    Calibrate(cli::calibrate::CalibrateArgs),
    /// Heat maps, masks and verdicts for image files or folders (a JSON line per image).
    Detect(cli::detect::DetectArgs),
    /// Evaluate on an MVTec-layout test split: report.json, report.md, gallery.png.
    Eval(cli::eval::EvalArgs),
    /// Write a reproducible synthetic texture data set with defects (MVTec layout).
    Synth(cli::synth::SynthArgs),
    /// The whole thing in one go: synthesise data, train, calibrate, evaluate.
    Demo(cli::demo::DemoArgs),
    /// Benchmark table: train (time budget), calibrate --auto and evaluate every
    /// category under a root (or each MNIST digit one-class) → quality.md, quality.json.
    BenchQuality(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What a user can do about an error.
fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::NoAdapter(_) | Error::RequestDevice(_) => Some(
            "no usable GPU: run with --backend cpu, or install a Vulkan driver (on Debian: apt-get install mesa-vulkan-drivers for the software one)",
        ),
        Error::OutOfMemory(_) | Error::TooLarge { .. } => Some("use a smaller batch or image size, or --backend cpu"),
        Error::DeviceLost(_) => Some("the GPU driver reset; try again, or use --backend cpu"),
        Error::Gpu { .. } => Some("this is a bug in scoredd; please report it with the command you ran"),
        _ => None,
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Toy { draws, seed, out } => cli::toy::run(cli.backend, draws, seed, &out),
        Command::Train(args) => cli::train::run(cli.backend, args),
        Command::Sample(args) => cli::sample::run(cli.backend, args),
        Command::Calibrate(args) => cli::calibrate::run(cli.backend, args),
        Command::Detect(args) => cli::detect::run(cli.backend, args),
        Command::Eval(args) => cli::eval::run(cli.backend, args).map(|_| ()),
        Command::Synth(args) => cli::synth::run(&args),
        Command::Demo(args) => cli::demo::run(cli.backend, args),
        Command::BenchQuality(args) => cli::bench::run(cli.backend, args).map(|_| ()),
    }
}
