//! `scoredd eval`: a model against an MVTec-layout test split → report.json,
//! report.md and an overlay gallery.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use scoredd::backend::{open_backend, BackendChoice, NnBackend};
use scoredd::data::{self, ImageSpec, TestSet};
use scoredd::detect::{self, DetectOptions};
use scoredd::evaluate::{self, Metrics};
use scoredd::model_file::{Calibration, ModelFile};
use scoredd::nn::score_model::ScoreModel;
use scoredd::{plot, viz, with_backend, Error};

use super::detect::{defect_mask, describe, image_bar, make_dir, DetectFlags};

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// An MVTec-layout category folder (test/, ground_truth/), or a root of
    /// categories with --category.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long, default_value = "model.safetensors")]
    pub model: PathBuf,
    /// Folder for report.json, report.md and gallery.png.
    #[arg(long, default_value = "scoredd-eval")]
    pub out: PathBuf,
    /// Gallery images per defect type.
    #[arg(long, default_value_t = 4)]
    pub gallery: usize,
    /// Evaluate about this many test images, an evenly spaced subset in which
    /// every defect type keeps its share (for slow settings such as ablations).
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub flags: DetectFlags,
}

/// What `eval` found: the report.json content.
#[derive(serde::Serialize)]
pub struct Report {
    pub model: String,
    pub data: String,
    pub settings: String,
    pub backend: String,
    pub image_auroc: Option<f64>,
    pub pixel_auroc: Option<f64>,
    pub aupro: Option<f64>,
    pub f1_max: Option<f64>,
    pub images: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub seconds_per_image: f64,
    pub images_per_second: f64,
    pub batch: usize,
    pub per_defect: std::collections::BTreeMap<String, Metrics>,
    pub verdicts: Option<evaluate::VerdictStats>,
    pub gallery: String,
}

pub fn run(choice: BackendChoice, args: EvalArgs) -> Result<Report, Error> {
    let file = ModelFile::load(&args.model)?;
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    let name = why.trim_start_matches("backend: ").to_string();
    with_backend!(&backend, |b| eval_on(b, &file, &args, name.clone()))
}

fn category_dir(data: &Path, category: Option<&str>) -> Result<PathBuf, Error> {
    let root = match category {
        Some(c) => data.join(c),
        None => data.to_path_buf(),
    };
    if !root.join("test").is_dir() {
        return Err(Error::Invalid(format!(
            "{} has no test/ folder: give an MVTec-layout category (test/<defect>/, ground_truth/<defect>/), or its parent with --category",
            root.display()
        )));
    }
    Ok(root)
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3}"))
}

fn eval_on<B: NnBackend>(
    be: &B,
    file: &ModelFile,
    args: &EvalArgs,
    backend: String,
) -> Result<Report, Error> {
    let model = ScoreModel::from_file(be, file)?;
    let c = model.net.config.clone();
    let opts = args.flags.options(&file.meta);
    detect::validate(&model, &opts)?;
    let size = opts.size_for(&model);
    let root = category_dir(&args.data, args.category.as_deref())?;
    let mut set = data::mvtec_test(
        &root,
        ImageSpec {
            size,
            channels: c.channels,
        },
    )?;
    if let Some(n) = args.limit {
        if n == 0 {
            return Err(Error::Invalid("--limit must be at least 1".into()));
        }
        // Items are sorted by defect type, so every k-th keeps the proportions.
        let k = set.items.len().div_ceil(n).max(1);
        set.items = set.items.into_iter().step_by(k).collect();
        eprintln!("evaluating every {k}th test image (--limit {n})");
    }
    for s in &set.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    make_dir(&args.out)?;
    eprintln!(
        "{} test images from {}; {}",
        set.items.len(),
        root.display(),
        describe(&opts)
    );
    let maps = detect_all(be, &model, &set, &opts, args.flags.batch)?;
    let (maps, secs) = maps;
    let (overall, per) = evaluate::metrics_by_defect(&set.items, &maps, size)?;
    let verdicts = file
        .meta
        .calibration
        .as_ref()
        .map(|cal| evaluate::verdict_stats(&set.items, &maps, cal.threshold));
    let gallery_path = args.out.join("gallery.png");
    write_gallery(file, &set, &maps, args.gallery, &gallery_path, &opts)?;
    let n = set.items.len().max(1) as f64;
    let report = Report {
        model: args.model.display().to_string(),
        data: root.display().to_string(),
        settings: describe(&opts),
        backend,
        image_auroc: overall.image_auroc,
        pixel_auroc: overall.pixel_auroc,
        aupro: overall.aupro,
        f1_max: overall.f1_max,
        images: set.items.len(),
        skipped: set.skipped.len(),
        seconds: secs,
        seconds_per_image: secs / n,
        images_per_second: n / secs.max(1e-9),
        batch: args.flags.batch,
        per_defect: per,
        verdicts,
        gallery: gallery_path.display().to_string(),
    };
    let json_path = args.out.join("report.json");
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Invalid(format!("report.json: {e}")))?;
    write_file(&json_path, &json)?;
    let md_path = args.out.join("report.md");
    write_file(
        &md_path,
        &markdown(&report, file, model.sde.name(), &overall),
    )?;
    println!(
        "image AUROC {}, pixel AUROC {}, AUPRO@0.3 {}, F1-max {} on {} images ({:.3} s/image)",
        fmt(report.image_auroc),
        fmt(report.pixel_auroc),
        fmt(report.aupro),
        fmt(report.f1_max),
        report.images,
        report.seconds_per_image
    );
    println!(
        "report: {} and {}; gallery: {}",
        md_path.display(),
        json_path.display(),
        gallery_path.display()
    );
    Ok(report)
}

/// Maps of every test image, and the seconds they took.
fn detect_all<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    set: &TestSet,
    opts: &DetectOptions,
    batch: usize,
) -> Result<(Vec<Vec<f32>>, f64), Error> {
    let refs: Vec<&[f32]> = set.items.iter().map(|i| i.image.as_slice()).collect();
    let ids = vec![0u64; refs.len()];
    let bar = image_bar(refs.len(), "evaluating");
    let t0 = Instant::now();
    let maps = detect::anomaly_maps_batched(be, model, &refs, &ids, opts, batch, &mut |d| {
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    Ok((maps, t0.elapsed().as_secs_f64()))
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
}

/// Up to `per_type` images of each type (highest-scoring defects and good
/// images first, so the gallery shows both hits and false alarms).
fn write_gallery(
    file: &ModelFile,
    set: &TestSet,
    maps: &[Vec<f32>],
    per_type: usize,
    path: &Path,
    opts: &DetectOptions,
) -> Result<(), Error> {
    let c = &file.meta.model;
    let size = opts.size.unwrap_or(c.image_size);
    // From "typical normal" to the strongest response, so strong defects
    // do not all saturate.
    let top = maps
        .iter()
        .map(|m| detect::image_score(m))
        .fold(f32::MIN, f32::max);
    let range = match &file.meta.calibration {
        Some(c) => (c.low as f32, top.max(c.high as f32)),
        None => viz::finite_range(maps.iter().map(|m| m.as_slice())),
    };
    let cal = file.meta.calibration.as_ref();
    let mut tiles = Vec::new();
    for kind in set.defect_types() {
        let mut idx: Vec<usize> = (0..set.items.len())
            .filter(|&i| set.items[i].defect == kind)
            .collect();
        idx.sort_by(|&a, &b| {
            detect::image_score(&maps[b]).total_cmp(&detect::image_score(&maps[a]))
        });
        for &i in idx.iter().take(per_type) {
            let item = &set.items[i];
            let rgb = viz::image_to_rgb(&item.image, c.channels, size);
            let score = detect::image_score(&maps[i]) as f64;
            let predicted: Option<Vec<u8>> = cal.map(|cal| defect_mask(&maps[i], cal.threshold));
            let name = Path::new(&item.path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let caption = match cal {
                Some(cal) => format!(
                    "{kind} {name} {:.2} {}",
                    cal.normalise(score),
                    if cal.is_defect(score) {
                        "DEFECT"
                    } else {
                        "good"
                    }
                ),
                None => format!("{kind} {name} {score:.3}"),
            };
            tiles.push(viz::tile(
                &viz::Tile {
                    image: &rgb,
                    map: &maps[i],
                    truth: item.mask.as_deref(),
                    predicted: predicted.as_deref(),
                    caption,
                },
                range,
                128,
            )?);
        }
    }
    let title = format!("Score-DD: {}", describe(opts));
    plot::save_png(&viz::gallery(&tiles, per_type.max(1), &title, range), path)
}

fn markdown(r: &Report, file: &ModelFile, sde: &str, overall: &Metrics) -> String {
    let mut s = String::new();
    let m = &file.meta;
    let _ = writeln!(s, "# Score-DD evaluation\n");
    let _ = writeln!(
        s,
        "Model `{}` ({} px, {} channel(s), nf {}, {} SDE, {} training steps) on `{}`.\n",
        r.model, m.model.image_size, m.model.channels, m.model.nf, sde, m.step, r.data
    );
    let _ = writeln!(s, "Settings: {}. Backend: {}.\n", r.settings, r.backend);
    let _ = writeln!(
        s,
        "| subset | images | defective | image AUROC | pixel AUROC | AUPRO@0.3 | F1-max |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let row = |s: &mut String, name: &str, x: &Metrics| {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            x.images,
            x.defective,
            fmt(x.image_auroc),
            fmt(x.pixel_auroc),
            fmt(x.aupro),
            fmt(x.f1_max)
        );
    };
    row(&mut s, "**all**", overall);
    for (k, x) in &r.per_defect {
        row(&mut s, &format!("{k} (+ good)"), x);
    }
    let _ = writeln!(
        s,
        "\nTime: {:.1} s for {} images, {:.3} s per image ({:.2} images/s, batches of {}).\n",
        r.seconds, r.images, r.seconds_per_image, r.images_per_second, r.batch
    );
    if let (Some(v), Some(cal)) = (&r.verdicts, &m.calibration) {
        let _ = writeln!(
            s,
            "Verdicts at the calibrated threshold {:.4e}: accuracy {:.3}, defects caught {:.3}, false alarms on good images {:.3}.\n",
            v.threshold, v.accuracy, v.true_positive_rate, v.false_positive_rate
        );
        let _ = writeln!(s, "{}\n", false_alarm_note(v, cal));
    } else {
        let _ = writeln!(
            s,
            "The model is not calibrated (`scoredd calibrate`), so there are no verdicts.\n"
        );
    }
    if let Some(sel) = &m.selection {
        let _ = writeln!(
            s,
            "{{t}} and taps were chosen automatically on {} held-out normal images with {} synthetic defects: pixel AUROC {:.3} (image {:.3}) against {:.3} ({:.3}) for the default {:?} / {}.\n",
            sel.normals,
            sel.defects,
            sel.chosen_pixel_auroc,
            sel.chosen_image_auroc,
            sel.default_pixel_auroc,
            sel.default_image_auroc,
            sel.default_ts,
            sel.default_taps.join("+")
        );
    }
    if r.skipped > 0 {
        let _ = writeln!(s, "{} file(s) were skipped (see the log).\n", r.skipped);
    }
    let _ = writeln!(
        s,
        "![gallery](gallery.png)\n\nGallery: input | heat map with the ground-truth outline | predicted mask; highest-scoring images of each type first."
    );
    s
}

/// Nominal against observed false alarms, in words a user can act on.
fn false_alarm_note(v: &evaluate::VerdictStats, cal: &Calibration) -> String {
    let (lo, hi) = v.false_positive_interval;
    let nominal = 1.0 - cal.quantile;
    let bound = cal.false_alarm_bound;
    let mut s = format!(
        "False alarms: {} of {} good test images ({:.1} %, 95 % interval {:.1}–{:.1} %); calibration asked for {:.1} % on {} held-out normal images",
        v.false_alarms,
        v.good_images,
        100.0 * v.false_positive_rate,
        100.0 * lo,
        100.0 * hi,
        100.0 * nominal,
        cal.normals
    );
    match bound {
        Some(b) => {
            let _ = write!(s, " and guarantees at most {:.2} %.", 100.0 * b);
            if lo > b {
                s.push_str(" The observed rate is above that: the good test images differ from the held-out normals (another lighting, batch or camera?), or the model has not seen enough good images. Calibrate on normals like the test images.");
            } else if hi < b * 0.5 && v.good_images > 0 {
                s.push_str(" The observed rate is well below the bound: the threshold is conservative for these images.");
            }
        }
        None => s.push_str(" (this model was calibrated before false-alarm bounds were recorded: recalibrate to get one)."),
    }
    s
}
