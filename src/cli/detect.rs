//! `scoredd detect`: images in, heat maps, masks and verdicts out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use scoredd::backend::{open_backend, BackendChoice, NnBackend, Sampler};
use scoredd::data::{self, ImageSpec};
use scoredd::detect::{self, DetectOptions, Mode};
use scoredd::model_file::{Calibration, ModelFile, ModelMeta};
use scoredd::nn::score_model::ScoreModel;
use scoredd::pipeline::{defect_mask, describe, judge};
use scoredd::tiles::{self, Tiling};
use scoredd::{plot, viz, with_backend, Error};

use super::console::{count_bar, image_bar, print_tuner_choices};

/// Detection settings shared by `detect`, `eval` and `calibrate`; each one
/// left out comes from the model file.
#[derive(Args, Debug, Clone, Default)]
pub struct DetectFlags {
    /// Start times {t} as fractions of [0, 1], comma-separated
    /// (the paper's {250,200,150,100,50}/2000 is 0.125,0.1,0.075,0.05,0.025).
    #[arg(long, value_delimiter = ',')]
    pub ts: Option<Vec<f64>>,
    /// Reverse steps per start time.
    #[arg(long)]
    pub r: Option<usize>,
    #[arg(long, value_enum)]
    pub sampler: Option<Sampler>,
    /// Feature maps compared, comma-separated (e.g. up.1,up.2); NAME~rel compares NAME by
    /// relative distance ‖a − b‖ / (‖a‖ + ‖b‖).
    #[arg(long, value_delimiter = ',')]
    pub taps: Option<Vec<String>>,
    /// score-dd (the method) or an ablation: reconstruction, no-scales.
    #[arg(long, value_enum, default_value_t = Mode::ScoreDd)]
    pub mode: Mode,
    /// Gaussian smoothing of the map, σ in model pixels (0 = off).
    #[arg(long)]
    pub smooth: Option<f32>,
    /// Image score = mean of this fraction of the map's highest pixels
    /// (0 = the map's maximum; e.g. 0.01 for the top 1 %); replaces a
    /// stored verdict reading (`calibrate --objective both`).
    #[arg(long)]
    pub score_top: Option<f32>,
    /// Average the maps of this many independent noise draws (1 to 16;
    /// each costs a full run).
    #[arg(long)]
    pub draws: Option<usize>,
    /// Also detect on the mirrored image and average its map, mirrored back
    /// (twice the time); `--flip=false` turns a stored flip off.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub flip: Option<bool>,
    /// Noise seed: the same seed gives the same map for the same image.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per network batch (each image is T·(r+2) network evaluations).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Detect at this size (px, square; a multiple of the model's total
    /// downsampling) instead of the model's training size: the network is
    /// fully convolutional, so a model trained on small images or crops can
    /// look at a larger image in one pass.
    #[arg(long)]
    pub detect_size: Option<usize>,
}

impl DetectFlags {
    /// The model's stored settings with these flags applied.
    pub fn options(&self, meta: &ModelMeta) -> DetectOptions {
        let mut s = meta.detection.clone();
        if let Some(ts) = &self.ts {
            s.ts = ts.clone();
        }
        if let Some(r) = self.r {
            s.r = r;
        }
        if let Some(sm) = self.sampler {
            s.sampler = sm;
        }
        if let Some(t) = &self.taps {
            s.taps = t.clone();
        }
        if let Some(v) = self.smooth {
            s.smooth = v;
        }
        if let Some(v) = self.score_top {
            // Asked to read the score from the map: a stored verdict
            // reading would otherwise read it elsewhere.
            s.score_top = v;
            s.verdict = None;
        }
        if let Some(v) = self.draws {
            s.draws = v;
        }
        if let Some(v) = self.flip {
            s.flip = v;
        }
        DetectOptions {
            settings: s,
            mode: self.mode,
            seed: self.seed,
            size: self.detect_size,
        }
    }
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Image files and/or folders of images.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[arg(long, default_value = "model.safetensors")]
    pub model: PathBuf,
    /// Folder for the overlays and masks.
    #[arg(long, default_value = "scoredd-detect")]
    pub out: PathBuf,
    #[command(flatten)]
    pub flags: DetectFlags,
    /// Detect each image at its own resolution (or at --detect-size) in
    /// overlapping square tiles of this many px (a multiple of the model's
    /// total downsampling), blended into one map: for images too large for
    /// one pass, or a model trained on crops. Memory grows with --batch
    /// tiles, not with the image.
    #[arg(long)]
    pub tile: Option<usize>,
    /// Overlap between neighbouring tiles, px (default a quarter of a tile).
    #[arg(long, requires = "tile")]
    pub tile_overlap: Option<usize>,
    /// Also print, on the GPU backend, the kernel variant the autotuner
    /// picked per tuned kernel family (one line each).
    #[arg(long)]
    pub verbose: bool,
}

pub fn run(choice: BackendChoice, args: DetectArgs) -> Result<(), Error> {
    let file = ModelFile::load(&args.model)?;
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    with_backend!(&backend, |b| detect_on(b, &file, &args))?;
    if args.verbose {
        print_tuner_choices(&backend);
    }
    Ok(())
}

/// Creates a folder, explaining failures.
pub fn make_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// A binary `width × height` mask (0/1) as a black/white PNG.
fn save_mask(mask: &[u8], width: usize, height: usize, path: &Path) -> Result<(), Error> {
    let img = image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let v = if mask[y as usize * width + x as usize] != 0 {
            255
        } else {
            0
        };
        image::Rgb([v, v, v])
    });
    plot::save_png(&img, path)
}

/// Display range of maps: the calibration's [low, high] of the map's scale
/// when there is one (so colours mean the same thing on every image), else
/// the maps' own range.
pub fn map_range<'a>(meta: &ModelMeta, maps: impl IntoIterator<Item = &'a [f32]>) -> (f32, f32) {
    match meta.calibration.as_ref().map(|c| c.map_scale()) {
        Some(c) => (c.low as f32, c.high as f32),
        None => viz::finite_range(maps),
    }
}

/// Upscale factor that makes a `size` px map about 256 px.
pub fn zoom(size: usize) -> u32 {
    (256 / size.max(1)).max(1) as u32
}

/// A file name stem for input `i` not in `used` yet: its own stem, or, when
/// two inputs share one (a.png and a.jpg, or 000.png in two folders), the
/// folder name in front, then the index.
fn unique_stem(path: &str, i: usize, used: &mut std::collections::HashSet<String>) -> String {
    let stem = Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("image{i}"));
    let parent = Path::new(path)
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    [
        stem.clone(),
        format!("{parent}-{stem}"),
        format!("{parent}-{stem}-{i}"),
    ]
    .into_iter()
    .find(|s| used.insert(s.clone()))
    .unwrap_or_else(|| format!("image{i}"))
}

/// Where and how one image's overlay and mask are written.
struct Pictures<'a> {
    out: &'a Path,
    stem: &'a str,
    /// The map's (and image's) width and height.
    dims: (usize, usize),
    /// The heat map's display range.
    range: (f32, f32),
}

impl Pictures<'_> {
    /// Writes `<stem>.overlay.png` (and, for a calibrated model,
    /// `<stem>.mask.png`); returns the image's JSON line without its path.
    fn write(
        &self,
        rgb: &image::RgbImage,
        (map, score): (&[f32], f32),
        cal: Option<&Calibration>,
    ) -> Result<serde_json::Value, Error> {
        let verdict = judge(score, cal);
        let overlay_path = self.out.join(format!("{}.overlay.png", self.stem));
        let mut pic = viz::overlay(rgb, map, self.range)?;
        let mask = cal.map(|cal| defect_mask(map, cal.map_scale().threshold));
        if let Some(m) = &mask {
            viz::draw_outline(&mut pic, m, [255, 255, 255]);
        }
        let (w, h) = self.dims;
        plot::save_png(&viz::upscale(&pic, zoom(w.max(h))), &overlay_path)?;
        let mut line = serde_json::json!({
            "path": "",
            "score": verdict.score,
            "overlay": overlay_path.display().to_string(),
        });
        if let (Some(normalised), Some(defect), Some(m)) =
            (verdict.normalised, verdict.defect, &mask)
        {
            let mask_path = self.out.join(format!("{}.mask.png", self.stem));
            save_mask(m, w, h, &mask_path)?;
            line["normalized"] = normalised.into();
            line["verdict"] = if defect { "defect" } else { "good" }.into();
            line["mask"] = mask_path.display().to_string().into();
        }
        Ok(line)
    }
}

fn detect_on<B: NnBackend>(be: &B, file: &ModelFile, args: &DetectArgs) -> Result<(), Error> {
    let model = ScoreModel::from_file(be, file)?;
    let opts = args.flags.options(&file.meta);
    make_dir(&args.out)?;
    if file.meta.calibration.is_none() {
        eprintln!(
            "note: the model is not calibrated, so there is no verdict or mask; run `scoredd calibrate --model {}` first",
            args.model.display()
        );
    }
    let t0 = Instant::now();
    let (done, skipped) = match args.tile {
        None => whole_images(be, &model, &opts, args)?,
        Some(tile) => tiled_images(be, &model, &opts, args, tile)?,
    };
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{done} image(s) in {secs:.2} s ({:.3} s per image); overlays in {}{}",
        secs / done.max(1) as f64,
        args.out.display(),
        if skipped == 0 {
            String::new()
        } else {
            format!("; {skipped} input(s) skipped (listed above)")
        }
    );
    Ok(())
}

/// Writes one image's pictures and prints its JSON line.
fn report_one(
    args: &DetectArgs,
    meta: &ModelMeta,
    (stem, path): (&str, &str),
    rgb: &image::RgbImage,
    map_and_score: (&[f32], f32),
    range: (f32, f32),
) -> Result<(), Error> {
    let pictures = Pictures {
        out: &args.out,
        stem,
        dims: (rgb.width() as usize, rgb.height() as usize),
        range,
    };
    let mut line = pictures.write(rgb, map_and_score, meta.calibration.as_ref())?;
    line["path"] = path.into();
    println!("{line}");
    Ok(())
}

/// Every image resized to the detection size and detected in one pass, in
/// batches; returns the images done and the inputs skipped.
fn whole_images<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    opts: &DetectOptions,
    args: &DetectArgs,
) -> Result<(usize, usize), Error> {
    detect::validate(model, opts)?;
    let size = opts.size_for(model);
    let channels = model.net.config.channels;
    let loaded = data::inputs(&args.inputs, ImageSpec { size, channels })?;
    for s in &loaded.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    for (p, &(w, h)) in loaded.paths.iter().zip(&loaded.original_sizes) {
        if (w as usize, h as usize) != (size, size) {
            eprintln!("note: {p} is {w}×{h}; resized to {size}×{size} (--detect-size or --tile to change)");
        }
    }
    eprintln!("{}", describe(opts));
    if let Some(layout) = model.meta.calibration.as_ref().and_then(|c| c.tiles) {
        eprintln!(
            "note: the verdict threshold was set on {} px tiles of images at their own size; pass --tile {} to detect as it was calibrated",
            layout.tile, layout.tile
        );
    }
    let refs: Vec<&[f32]> = loaded.images.iter().map(|v| v.as_slice()).collect();
    let ids = vec![0u64; refs.len()];
    let bar = image_bar(refs.len(), "detecting");
    let found =
        detect::detections_batched(be, model, &refs, &ids, opts, args.flags.batch, &mut |d| {
            bar.set_position(d as u64)
        })?;
    bar.finish_and_clear();
    let meta = &model.meta;
    let range = map_range(meta, found.maps.iter().map(|m| m.as_slice()));
    let mut used = std::collections::HashSet::new();
    for (i, path) in loaded.paths.iter().enumerate() {
        let stem = unique_stem(path, i, &mut used);
        let rgb = viz::image_to_rgb(&loaded.images[i], channels, size);
        let found_i = (found.maps[i].as_slice(), found.scores[i]);
        report_one(args, meta, (&stem, path), &rgb, found_i, range)?;
    }
    Ok((found.maps.len(), loaded.skipped.len()))
}

/// Every image at its own size (or resized to --detect-size) detected in
/// overlapping tiles, one image at a time (so a folder of large images
/// never sits in memory at once), its pictures written as soon as it is
/// done. Without a calibration each map is shown in its own range.
fn tiled_images<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    opts: &DetectOptions,
    args: &DetectArgs,
    tile: usize,
) -> Result<(usize, usize), Error> {
    let channels = model.net.config.channels;
    let tiling = Tiling::new(tile, args.flags.batch).with_overlap(args.tile_overlap);
    detect::validate(
        model,
        &DetectOptions {
            size: Some(tile),
            ..opts.clone()
        },
    )?;
    tiling.validate()?;
    let (files, mut skipped) = data::input_files(&args.inputs)?;
    for s in &skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    eprintln!(
        "{}; in {tile} px tiles overlapping by {} px",
        describe(opts),
        tiling.overlap
    );
    match model.meta.calibration.as_ref().map(|c| c.tiles) {
        Some(Some(layout)) if layout == tiling.layout() => {}
        Some(Some(layout)) => eprintln!(
            "note: the verdict threshold was set on {} px tiles overlapping by {} px, not these; recalibrate with `calibrate --tile {tile}` to match",
            layout.tile, layout.overlap
        ),
        Some(None) => eprintln!(
            "note: the verdict threshold was set on whole images at {} px; it holds for tiles only where they show the parts at the scale the model was calibrated at (`calibrate --tile {tile}` sets it on tiles)",
            model.net.config.image_size
        ),
        None => {}
    }
    let (meta, mut used, mut done) = (&model.meta, std::collections::HashSet::new(), 0);
    for (i, file) in files.iter().enumerate() {
        let path = file.display().to_string();
        let (image, (w, h)) = match data::decode_file(file, channels, opts.size) {
            Ok((image, own)) => (image, opts.size.map_or(own, |s| (s as u32, s as u32))),
            Err(reason) => {
                eprintln!("skipped {path}: {reason}");
                skipped.push(data::Skipped { path, reason });
                continue;
            }
        };
        let (w, h) = (w as usize, h as usize);
        // The bar learns the tile count from the first batch's progress.
        let bar = count_bar(0, &format!("{path}:"), "tiles");
        let found = tiles::tiled_map(be, model, &image, w, h, opts, tiling, &mut |d, total| {
            bar.set_length(total as u64);
            bar.set_position(d as u64)
        })
        .map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{path}: {m}")),
            e => e,
        })?;
        bar.finish_and_clear();
        let (map, score) = (found.maps[0].as_slice(), found.scores[0]);
        let range = map_range(meta, [map]);
        let rgb = viz::image_to_rgb_rect(&image, channels, w, h);
        let stem = unique_stem(&path, i, &mut used);
        report_one(args, meta, (&stem, &path), &rgb, (map, score), range)?;
        done += 1;
    }
    if done == 0 {
        return Err(data::no_usable_images(&skipped));
    }
    Ok((done, skipped.len()))
}
