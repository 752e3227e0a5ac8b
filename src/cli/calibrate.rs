//! `scoredd calibrate`: fit the detector to a trained model with normal images
//! it has not seen — optionally choose {t} and taps on synthetic defects, then
//! set the verdict threshold — and store both in the model file.

use std::path::PathBuf;

use clap::Args;
use scoredd::backend::{open_backend, BackendChoice, NnBackend};
use scoredd::calibrate::{self, Objective};
use scoredd::data::{self, ImageSpec, Loaded};
use scoredd::model_file::{Calibration, ModelFile};
use scoredd::nn::score_model::ScoreModel;
use scoredd::pipeline::{
    augment_words, reading, verdict_choice_words, CalibratePlan, Calibrated, Pipeline,
    TiledNormals, TrainSource,
};
use scoredd::tiles::Tiling;
use scoredd::{with_backend, Error};

use super::console::Console;
use super::detect::DetectFlags;

#[derive(Args, Debug, Clone)]
pub struct CalibrateArgs {
    #[arg(long, default_value = "model.safetensors")]
    pub model: PathBuf,
    /// The training data (as given to `scoredd train`): its held-out images
    /// (`train --holdout`) are used.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long)]
    pub digit: Option<u8>,
    /// Instead of --data: a folder of good images the model was not trained on.
    #[arg(long)]
    pub normals: Option<PathBuf>,
    /// Also choose {t} and taps automatically (synthetic defects on the normals).
    #[arg(long)]
    pub auto: bool,
    /// Quantile of the normal images' scores used as the verdict threshold.
    #[arg(long, default_value_t = calibrate::QUANTILE)]
    pub quantile: f64,
    /// At most this many normal images for the automatic choice (each is
    /// also pasted with one synthetic defect). Fewer are used when the
    /// threshold would keep fewer than --quantile's guarantee needs (99 for
    /// 0.99), but at least 32 (or this many, if smaller) and at most half.
    #[arg(long, default_value_t = calibrate::SELECT_IMAGES_MAX)]
    pub select_images: usize,
    /// What --auto maximises on the synthetic defects: `both` (maps chosen
    /// for pixel AUROC, then the image score given its own taps, smoothing,
    /// profile and reading over the same runs, chosen for image AUROC: at
    /// the map's detection time), `pixel` (maps that outline defects; the
    /// score read from them), `image` (per-image verdicts on local defects)
    /// or `semantic` (per-image verdicts on whole-image anomalies: the wrong
    /// object or class, as in one-class MNIST).
    #[arg(long, value_enum, default_value_t = Objective::Both)]
    pub objective: Objective,
    /// With --auto: noise draws and flip may not make detection slower than
    /// this many ms per image (estimated on this backend). Without it a
    /// costlier setting must gain 0.002 AUROC per doubling of its time.
    #[arg(long)]
    pub budget_ms: Option<f64>,
    /// Set the threshold on tiled detection, as `detect --tile N` detects:
    /// the threshold normals are read at their own size (or --detect-size)
    /// and detected in N px tiles. The settings are still chosen at the
    /// model's size.
    #[arg(long)]
    pub tile: Option<usize>,
    /// Overlap between neighbouring tiles, px (default: a quarter tile), as
    /// `detect --tile-overlap`.
    #[arg(long)]
    pub tile_overlap: Option<usize>,
    /// Where to write the calibrated model (default: update --model in place).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub flags: DetectFlags,
}

pub fn run(choice: BackendChoice, args: CalibrateArgs) -> Result<(), Error> {
    let mut file = ModelFile::load(&args.model)?;
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    let calibrated = with_backend!(&backend, |b| calibrate_on(b, &file, &args))?;
    calibrated.apply(&mut file.meta);
    print_result(&calibrated, args.auto);
    let out = args.out.clone().unwrap_or_else(|| args.model.clone());
    file.save(&out)?;
    println!("calibrated model written to {}", out.display());
    Ok(())
}

/// The held-out normal images, as the flags describe.
fn normals(args: &CalibrateArgs, file: &ModelFile, spec: ImageSpec) -> Result<Loaded, Error> {
    if let Some(dir) = &args.normals {
        return data::folder(dir, spec);
    }
    let Some(data_dir) = &args.data else {
        return Err(Error::Invalid(
            "give --data (the training data; its held-out part is used) or --normals DIR (good images the model has not seen)".into(),
        ));
    };
    let holdout = file.meta.training.as_ref().map_or(0.0, |t| t.holdout);
    if holdout <= 0.0 {
        return Err(Error::Invalid(format!(
            "{} was trained on every image of its data (no --holdout), so none are left to calibrate on: pass --normals DIR with good images it has not seen",
            args.model.display()
        )));
    }
    let source = TrainSource {
        data: data_dir.clone(),
        category: args.category.clone(),
        digit: args.digit,
        mnist_train_half: false,
    };
    let (held, what) = source.held_out(holdout, spec)?;
    eprintln!("normal images: {what}");
    Ok(held)
}

fn calibrate_on<B: NnBackend>(
    be: &B,
    file: &ModelFile,
    args: &CalibrateArgs,
) -> Result<Calibrated, Error> {
    let c = &file.meta.model;
    let spec = ImageSpec {
        size: c.image_size,
        channels: c.channels,
    };
    let held = normals(args, file, spec)?;
    for s in &held.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    let mut model = ScoreModel::from_file(be, file)?;
    let plan = CalibratePlan {
        auto: args.auto,
        quantile: args.quantile,
        select_images: args.select_images,
        objective: args.objective,
        batch: args.flags.batch,
        budget_ms: args.budget_ms,
    };
    let base = args.flags.options(&file.meta);
    let mut console = Console::new();
    let mut pipeline = Pipeline::new(be, &mut console);
    let calibrated = match args.tile {
        None => pipeline.calibrate(&mut model, &held.images, base, &plan)?,
        Some(tile) => {
            let tiling = Tiling::new(tile, args.flags.batch).with_overlap(args.tile_overlap);
            tiling.validate()?;
            let square = args.flags.detect_size;
            let sizes = own_sizes(&held, square)?;
            let read = |i: usize| -> scoredd::Result<Vec<f32>> {
                let path = std::path::Path::new(&held.paths[i]);
                let (pixels, _) = data::decode_file(path, c.channels, square)
                    .map_err(|why| Error::Invalid(format!("{}: {why}", path.display())))?;
                Ok(pixels)
            };
            let tiled = TiledNormals {
                sizes: &sizes,
                read: &read,
                tiling,
            };
            pipeline.calibrate_tiled(&mut model, &held.images, tiled, base, &plan)?
        }
    };
    console.end_bar();
    Ok(calibrated)
}

/// Each normal image's size as tiled calibration detects it: its own (or
/// `square` px). Only image files have one: MNIST's images are refused here,
/// before any work.
fn own_sizes(held: &Loaded, square: Option<usize>) -> Result<Vec<(usize, usize)>, Error> {
    if let Some(p) = held
        .paths
        .iter()
        .find(|p| !std::path::Path::new(p).is_file())
    {
        return Err(Error::Invalid(format!(
            "--tile reads each normal image at its own size from its file, but {p} is not an image file"
        )));
    }
    Ok(held
        .original_sizes
        .iter()
        .map(|&(w, h)| square.map_or((w as usize, h as usize), |s| (s, s)))
        .collect())
}

/// The automatic choice (with --auto) and the threshold, in words.
pub fn print_result(c: &Calibrated, auto: bool) {
    if let Some(sel) = &c.selection {
        let settings = &c.options.settings;
        println!(
            "automatic choice ({} first) on {} normal images + {} synthetic defects ({} combinations): t {:?}, taps {}, smoothing σ {} px → pixel AUROC {:.3}, image AUROC {:.3} (default t {:?}, taps {}: {:.3}, {:.3})",
            sel.objective.auroc_words(),
            sel.normals,
            sel.defects,
            sel.candidates,
            settings.ts,
            settings.taps.join("+"),
            settings.smooth,
            sel.chosen_pixel_auroc,
            sel.chosen_image_auroc,
            sel.default_ts,
            sel.default_taps.join("+"),
            sel.default_pixel_auroc,
            sel.default_image_auroc
        );
        if let Some([off, on]) = sel.profile_trial {
            let used = if settings.profile.is_some() {
                "used"
            } else {
                "not used"
            };
            println!(
                "normal profile (maps divided by their per-position mean on good images): {used}; {} {off:.3} without, {on:.3} with, on normals it was not measured on",
                sel.objective.auroc_words()
            );
        }
        if !sel.reading_trial.is_empty() {
            let tried: Vec<String> = sel
                .reading_trial
                .iter()
                .map(|[f, auc]| format!("{}: {auc:.3}", reading(*f as f32)))
                .collect();
            println!(
                "image score read as {} (image AUROC of each reading tried: {})",
                reading(settings.score_top),
                tried.join(", ")
            );
        }
        if let Some(words) = augment_words(sel, settings) {
            println!("{words}");
        }
        if let Some(v) = &sel.verdict {
            println!("{}", verdict_choice_words(v, settings));
        }
    }
    report_threshold(&c.calibration, &c.scores, auto);
    if let Some(t) = c.calibration.tiles {
        println!(
            "the threshold was set on tiled detection: each normal image at its own size in {} px tiles overlapping by {} px (detect --tile {} detects alike)",
            t.tile, t.overlap, t.tile
        );
    }
}

/// Says where the threshold sits and what it guarantees, warning when there
/// are too few normals for the asked false-alarm rate.
fn report_threshold(cal: &Calibration, scores: &[f64], auto: bool) {
    let bound = cal.false_alarm_bound.unwrap_or(f64::NAN);
    let asked = 1.0 - cal.quantile;
    println!(
        "threshold {:.4e} from {} normal images{} (median {:.4e}): at most {:.2} % false alarms on new good images (asked {:.2} %); scores map to [0, 1] with the threshold at 0.5",
        cal.threshold,
        cal.normals,
        if auto { " not used to choose the settings" } else { "" },
        calibrate::quantile(scores, 0.5),
        100.0 * bound,
        100.0 * asked
    );
    let needed = calibrate::normals_needed(cal.quantile);
    if cal.normals < needed {
        eprintln!(
            "warning: {} normal images can guarantee a false-alarm rate of {:.2} % at best, not the {:.2} % asked; the threshold is their largest score. Hold out more good images (train --holdout) or pass --normals with at least {needed}{}.",
            cal.normals,
            100.0 * bound,
            100.0 * asked,
            if auto { " besides those that choose the settings" } else { "" }
        );
    }
}
