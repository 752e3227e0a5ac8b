//! `scoredd synth`: a reproducible synthetic texture data set with defects and
//! exact masks, in MVTec layout.

use std::path::PathBuf;

use clap::Args;
use scoredd::synth::{self, SynthConfig, SynthSummary};
use scoredd::Error;

#[derive(Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output root; one MVTec-layout folder per category is written under it.
    #[arg(long, default_value = "scoredd-synth")]
    pub out: PathBuf,
    /// Texture families, comma-separated (stripes, weave, dots, grain; default: all).
    #[arg(long, value_delimiter = ',')]
    pub categories: Option<Vec<String>>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// train/good images per category.
    #[arg(long, default_value_t = 160)]
    pub train: usize,
    /// test/good images per category.
    #[arg(long, default_value_t = 20)]
    pub test_good: usize,
    /// Test images per defect kind per category.
    #[arg(long, default_value_t = 10)]
    pub test_per_defect: usize,
}

impl SynthArgs {
    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            seed: self.seed,
            size: self.size,
            train: self.train,
            test_good: self.test_good,
            test_per_defect: self.test_per_defect,
            categories: self
                .categories
                .clone()
                .unwrap_or_else(|| synth::CATEGORIES.iter().map(|s| s.to_string()).collect()),
        }
    }
}

pub fn run(args: &SynthArgs) -> Result<(), Error> {
    let s = synth::generate(&args.out, &args.config())?;
    print_summary(&s);
    Ok(())
}

/// What was written, in one line.
pub fn print_summary(s: &SynthSummary) {
    println!(
        "wrote {} images ({}; defects: {}) to {}",
        s.images_written,
        s.categories.join(", "),
        synth::DEFECTS.join(", "),
        s.root.display()
    );
}
