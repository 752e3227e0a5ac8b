//! The `scoredd` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use scoredd::backend::{open_backend, BackendChoice, Sampler};
use scoredd::toy::{self, ToyConfig, POINTS};
use scoredd::{with_backend, Error};

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
        Command::Toy { draws, seed, out } => {
            if draws == 0 {
                return Err(Error::Invalid("--draws must be at least 1".into()));
            }
            let (backend, why) = open_backend(cli.backend)?;
            eprintln!("{why}");
            let cfg = ToyConfig { draws, seed };
            let start = Instant::now();
            let report = with_backend!(&backend, |b| toy::run(b, &cfg))?;
            println!("Score-DD on the exact score of ⅕N((−5,−5),I) + ⅘N((5,5),I), VE σ 0.1–20, N = 100, {draws} draws per point");
            println!();
            println!(
                "mean ‖s(x'(t_r)) − s(x''(t_r))‖          {:>8} {:>8} {:>8}   anomalous ÷ normal",
                "(-6,5)", "(5.17,5.2)", "(-4.2,-4.3)"
            );
            for row in &report.differences {
                let [a, b, c] = row.mean_difference;
                let [r1, r2] = row.ratios();
                println!(
                    "  {:<4} t = {:.1}, r = {}                  {a:>8.3} {b:>10.3} {c:>11.3}   {r1:>5.1}× {r2:>5.1}×",
                    sampler_name(row.sampler),
                    row.t,
                    row.r
                );
            }
            println!();
            println!("full reverse run from t = 1 (whole score): normal draws that end in the other mode");
            for row in &report.reverse {
                println!(
                    "  {:<4} {}: {:5.1} %   {}: {:5.1} %",
                    sampler_name(row.sampler),
                    POINTS[1].1,
                    100.0 * row.switched[0],
                    POINTS[2].1,
                    100.0 * row.switched[1]
                );
            }
            with_backend!(&backend, |b| toy::plot(b, &cfg, &out))?;
            println!();
            println!("plot: {} (left: t = 0.6, r = 5 reverse-SDE runs; colour = whole score, grey = self score; right: full ODE runs from t = 1)", out.display());
            println!("      red = anomalous (-6,5), blue = (5.17,5.2), green = (-4.2,-4.3); squares mark the starting points");
            eprintln!("done in {:.1} s", start.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

fn sampler_name(s: Sampler) -> &'static str {
    match s {
        Sampler::Ode => "ode",
        Sampler::Sde => "sde",
    }
}
