//! `scoredd calibrate`: fit the detector to a trained model with normal images
//! it has not seen — optionally choose {t} and taps on synthetic defects, then
//! set the verdict threshold — and store both in the model file.

use std::path::PathBuf;

use clap::Args;
use indicatif::ProgressBar;
use scoredd::backend::{open_backend, BackendChoice, NnBackend};
use scoredd::calibrate::{self, Objective, SelectOptions};
use scoredd::data::{self, ImageSpec, Loaded};
use scoredd::detect;
use scoredd::model_file::{Calibration, DetectionSettings, ModelFile, Selection};
use scoredd::nn::score_model::ScoreModel;
use scoredd::{with_backend, Error};

use super::detect::{describe, image_bar, DetectFlags};

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
    /// also pasted with one synthetic defect).
    #[arg(long, default_value_t = calibrate::SELECT_IMAGES)]
    pub select_images: usize,
    /// What --auto maximises on the synthetic defects: `pixel` (maps that
    /// outline defects) or `image` (per-image verdicts).
    #[arg(long, value_enum, default_value_t = Objective::Pixel)]
    pub objective: Objective,
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
    with_backend!(&backend, |b| calibrate_on(b, &mut file, &args))?;
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
    let (all, what) =
        super::train::load_training_images(data_dir, args.category.as_deref(), args.digit, spec)?;
    let (_, held) = data::holdout_split(all.images.len(), holdout);
    eprintln!("normal images: {} held out of {what}", held.len());
    Ok(data::select(&all, &held))
}

fn calibrate_on<B: NnBackend>(
    be: &B,
    file: &mut ModelFile,
    args: &CalibrateArgs,
) -> Result<(), Error> {
    let c = file.meta.model.clone();
    let spec = ImageSpec {
        size: c.image_size,
        channels: c.channels,
    };
    let held = normals(args, file, spec)?;
    for s in &held.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    let model = ScoreModel::from_file(be, file)?;
    let mut opts = args.flags.options(&file.meta);
    detect::validate(&model, &opts)?;
    if opts.mode != detect::Mode::ScoreDd {
        return Err(Error::Invalid(
            "calibrate stores settings for Score-DD itself; the ablation modes are for `eval` only"
                .into(),
        ));
    }
    let (select_idx, threshold_idx) =
        split_normals(held.images.len(), args.auto, args.select_images)?;
    if args.auto {
        let normals: Vec<Vec<f32>> = select_idx.iter().map(|&i| held.images[i].clone()).collect();
        let (settings, sel) = choose_settings(be, &model, &normals, &opts, args)?;
        opts.settings = settings;
        file.meta.selection = Some(sel);
    }
    file.meta.detection = opts.settings.clone();
    eprintln!("{}", describe(&opts));
    let threshold_images: Vec<Vec<f32>> = threshold_idx
        .iter()
        .map(|&i| held.images[i].clone())
        .collect();
    let bar = image_bar(threshold_images.len(), "scoring normal images");
    let scores = calibrate::image_scores(
        be,
        &model,
        &threshold_images,
        &opts,
        args.flags.batch,
        &mut |d| bar.set_position(d as u64),
    )?;
    bar.finish_and_clear();
    let cal = calibrate::calibration_from_scores(&scores, args.quantile)?;
    report_threshold(&cal, &scores, args.auto);
    file.meta.calibration = Some(cal);
    Ok(())
}

/// Which held-out normals choose the settings and which set the threshold
/// (all of them without --auto).
fn split_normals(
    n: usize,
    auto: bool,
    select_max: usize,
) -> Result<(Vec<usize>, Vec<usize>), Error> {
    if !auto {
        return Ok((Vec::new(), (0..n).collect()));
    }
    if n < 4 {
        return Err(Error::Invalid(format!(
            "--auto needs at least 4 held-out normal images (2 to choose the settings, 2 for the threshold), got {n}"
        )));
    }
    Ok(calibrate::split_held_out(n, select_max.max(2)))
}

/// `calibrate --auto`: {t} and taps chosen on synthetic defects pasted onto `normals`.
fn choose_settings<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    normals: &[Vec<f32>],
    opts: &detect::DetectOptions,
    args: &CalibrateArgs,
) -> Result<(DetectionSettings, Selection), Error> {
    let bar = ProgressBar::new(1);
    let (settings, sel) = calibrate::select_settings(
        be,
        model,
        normals,
        &opts.settings,
        &SelectOptions {
            batch: args.flags.batch.clamp(1, 4),
            seed: args.flags.seed,
            objective: args.objective,
            ..Default::default()
        },
        &mut |what, done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(what.to_string());
        },
    )?;
    bar.finish_and_clear();
    println!(
        "automatic choice ({:?} AUROC first) on {} normal images + {} synthetic defects ({} combinations): t {:?}, taps {}, smoothing σ {} px → pixel AUROC {:.3}, image AUROC {:.3} (default t {:?}, taps {}: {:.3}, {:.3})",
        sel.objective,
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
    Ok((settings, sel))
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
