//! How far is `calibrate --auto` from the best its own grid could do?
//!
//! Computes every tap's distances at every start time of the search grid on a
//! real test split, then scores each setting of that grid (a window of times
//! × one tap or a pair × how the image score is read) by image AUROC on the
//! real anomalies — an oracle the search never sees. When even the oracle is
//! short of a target, no choice among these knobs reaches it: the model is
//! the limit. Prints the best settings, the paper's default and, for a
//! calibrated model, its stored choice (smoothing, profile and the `~rel`
//! distance are left out: plain distances, no blur). It then scores the same
//! settings on synthetic mixes pasted onto the held-out training normals: how
//! well each mix ranks settings as the real anomalies do (Spearman ρ), and
//! what its favourite scores for real. MNIST: the local, semantic and
//! structural mixes; MVTec: the local and structural mixes and both, each at
//! full contrast and blended halfway and three quarters back to the normal.
//!
//! ```sh
//! # one-class MNIST: trains `tiny` (VP, 32 px) on the digit's train half
//! cargo run --release --example oracle_probe -- mnist ../shared/data/mnist 7 1.0
//! # an MVTec-layout category with a trained (or calibrated) model
//! cargo run --release --example oracle_probe -- mvtec model.safetensors ../shared/data/mtd
//! ```
use std::collections::BTreeMap;
use std::path::PathBuf;

use scoredd::backend::cpu::CpuBackend;
use scoredd::calibrate::{
    with_defect_kinds, with_defects_per_normal, DEFECT_KINDS, SEMANTIC_KINDS, STRUCTURAL_KINDS,
    T_GRID,
};
use scoredd::data::ImageSpec;
use scoredd::detect::{self, PairedQuery, TapGrid};
use scoredd::metrics;
use scoredd::model_file::ModelFile;
use scoredd::nn::score_model::ScoreModel;
use scoredd::pipeline::{
    mnist_test_set, ModelStart, Pipeline, Quiet, TestSource, TrainPlan, TrainSource,
};
use scoredd::sde::SdeKind;

type Grids = BTreeMap<String, TapGrid>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let be = CpuBackend::new();
    let mut quiet = Quiet;
    let mut p = Pipeline::new(&be, &mut quiet);
    let mnist = args.first().map(String::as_str) == Some("mnist");
    let pixel = args.first().map(String::as_str) == Some("pixel");
    let (model, test, held) =
        match args.first().map(String::as_str) {
            Some("mnist") => {
                let dir = PathBuf::from(&args[1]);
                let digit: u8 = args[2].parse()?;
                let minutes: f64 = args.get(3).map_or(Ok(1.0), |m| m.parse())?;
                let mut plan = TrainPlan::new(ModelStart::fresh("tiny", 1, SdeKind::Vp)?);
                (plan.steps, plan.minutes) = (u64::MAX / 4, Some(minutes));
                plan.checkpoint_every = u64::MAX / 4;
                let source = TrainSource {
                    data: dir.clone(),
                    category: None,
                    digit: Some(digit),
                    mnist_train_half: true,
                };
                let trained = p.train(&plan, &source)?;
                eprintln!("trained {} steps", trained.summary.step);
                let model = trained.model()?;
                let held = trained.held_out.clone();
                let spec = ImageSpec {
                    size: model.net.config.image_size,
                    channels: 1,
                };
                let test = mnist_test_set(&dir, digit, spec)?;
                (model, test, held)
            }
            Some("mvtec") | Some("pixel") => {
                let file = ModelFile::load(std::path::Path::new(&args[1]))?;
                let model = ScoreModel::from_file(&be, &file)?;
                let source = TestSource {
                    data: PathBuf::from(&args[2]),
                    category: None,
                };
                let opts = detect::DetectOptions::from_settings(model.meta.detection.clone());
                let test = source.load_for(&model, &opts)?.set;
                // The normals calibration would use: the held-out split the model
                // was trained with.
                let holdout = model.meta.training.as_ref().map_or(0.0, |t| t.holdout);
                if holdout <= 0.0 {
                    return Err("the model was trained on every image: nothing held out".into());
                }
                let train = TrainSource {
                    data: PathBuf::from(&args[2]),
                    category: None,
                    digit: None,
                    mnist_train_half: false,
                };
                let spec = ImageSpec {
                    size: model.net.config.image_size,
                    channels: model.net.config.channels,
                };
                let held = train.held_out(holdout, spec)?.0.images;
                (model, test, held)
            }
            _ => return Err(
                "usage: oracle_probe mnist DIR DIGIT [MINUTES] | mvtec MODEL DIR | pixel MODEL DIR"
                    .into(),
            ),
        };
    if pixel {
        return pixel_oracle(&be, &model, &test.items, &held);
    }
    let labels: Vec<bool> = test.items.iter().map(|i| i.defect != "good").collect();
    let images: Vec<Vec<f32>> = test.items.iter().map(|i| i.image.clone()).collect();
    let grids = all_grids(&be, &model, &images)?;
    let rows = report(&model, &grids, &labels)?;
    // How well each synthetic mix ranks the same settings, on the held-out
    // training normals.
    let mut dump = Dump::default();
    match mnist {
        true => mnist_proxies(&be, &model, held, &rows, &mut dump)?,
        false => contrast_proxies(&be, &model, &held, &rows, &mut dump)?,
    }
    if let Ok(path) = std::env::var("PROBE_DUMP") {
        dump.write(std::path::Path::new(&path), &rows)?;
        eprintln!("every setting's real and synthetic AUROC written to {path}");
    }
    Ok(())
}

/// Every mix's synthetic AUROC of every setting (on all its normals, and on
/// each half of them with their own defects), for studying selection rules
/// offline: `PROBE_DUMP=file.tsv`.
#[derive(Default)]
struct Dump {
    columns: Vec<String>,
    values: Vec<Vec<f64>>,
}

impl Dump {
    fn add(&mut self, name: &str, v: Vec<f64>) {
        self.columns.push(name.to_string());
        self.values.push(v);
    }

    fn write(&self, path: &std::path::Path, rows: &[Setting]) -> std::io::Result<()> {
        let mut out = format!("setting\treal\t{}\n", self.columns.join("\t"));
        for (i, s) in rows.iter().enumerate() {
            out += &format!("{}\t{:.6}", describe(&s.taps, &s.js, s.top), s.auroc);
            for v in &self.values {
                out += &format!("\t{:.6}", v[i]);
            }
            out.push('\n');
        }
        std::fs::write(path, out)
    }
}

/// MNIST: how the local, semantic and structural mixes rank the grid's
/// settings, and the search's situation (32 normals, one or three morphs
/// each, several draws).
fn mnist_proxies(
    be: &CpuBackend,
    model: &ScoreModel<CpuBackend>,
    held: Vec<Vec<f32>>,
    rows: &[Setting],
    dump: &mut Dump,
) -> Result<(), Box<dyn std::error::Error>> {
    let normals: Vec<Vec<f32>> = held.into_iter().take(64).collect();
    if normals.len() >= 8 {
        let c = &model.net.config;
        for (name, kinds) in [
            ("local (default)", DEFECT_KINDS.to_vec()),
            ("semantic", SEMANTIC_KINDS.to_vec()),
            ("structural", STRUCTURAL_KINDS.to_vec()),
        ] {
            let (set, _) = with_defect_kinds(&normals, c.channels, c.image_size, 0, &kinds);
            let synth_labels: Vec<bool> = (0..set.len()).map(|i| i >= normals.len()).collect();
            let sg = all_grids(be, model, &set)?;
            proxy(model, &sg, &synth_labels, rows, name, dump);
        }
        // The search's situation: 32 normals, one or three morphs each, over
        // several draws of the normals and morphs.
        for per_normal in [1, 3] {
            for draw in 0..3u64 {
                let pick: Vec<Vec<f32>> = (0..32)
                    .map(|k| normals[(k * 2 + draw as usize) % normals.len()].clone())
                    .collect();
                let (set, _) = with_defects_per_normal(
                    &pick,
                    c.channels,
                    c.image_size,
                    draw,
                    &SEMANTIC_KINDS,
                    per_normal,
                );
                let synth_labels: Vec<bool> = (0..set.len()).map(|i| i >= pick.len()).collect();
                let sg = all_grids(be, model, &set)?;
                proxy(
                    model,
                    &sg,
                    &synth_labels,
                    rows,
                    &format!("32 normals, {per_normal} morph(s) each, draw {draw}"),
                    dump,
                );
            }
        }
    }
    Ok(())
}

/// MVTec: how well the local and structural defect mixes, at full and at
/// reduced contrast (each defective image blended back toward its normal:
/// normal + α·(defective − normal)), rank the grid's settings as the real
/// anomalies do. The normals' grids are computed once.
fn contrast_proxies(
    be: &CpuBackend,
    model: &ScoreModel<CpuBackend>,
    held: &[Vec<f32>],
    real: &[Setting],
    dump: &mut Dump,
) -> Result<(), Box<dyn std::error::Error>> {
    let normals: Vec<Vec<f32>> = held.iter().take(64).cloned().collect();
    let n = normals.len();
    let c = &model.net.config;
    let normal_grids = all_grids(be, model, &normals)?;
    let mut both = DEFECT_KINDS.to_vec();
    both.extend_from_slice(&STRUCTURAL_KINDS);
    for (name, kinds) in [
        ("local (default)", DEFECT_KINDS.to_vec()),
        ("structural", STRUCTURAL_KINDS.to_vec()),
        ("local + structural", both),
    ] {
        // A second draw of the defects at full contrast: how much the
        // ranking owes to one draw.
        for (seed, alpha) in [(0u64, 1.0f32), (0, 0.5), (0, 0.25), (1, 1.0)] {
            let (set, _) = with_defect_kinds(&normals, c.channels, c.image_size, seed, &kinds);
            let defects: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    set[n + i]
                        .iter()
                        .zip(&set[i])
                        .map(|(&d, &o)| o + alpha * (d - o))
                        .collect()
                })
                .collect();
            let mut g = normal_grids.clone();
            for (tap, dg) in all_grids(be, model, &defects)? {
                let e = g.get_mut(&tap).expect("same taps");
                e.images += dg.images;
                e.data.extend_from_slice(&dg.data);
            }
            let labels: Vec<bool> = (0..2 * n).map(|i| i >= n).collect();
            proxy(
                model,
                &g,
                &labels,
                real,
                &format!("{name}, contrast ×{alpha}, draw {seed}"),
                dump,
            );
        }
    }
    Ok(())
}

/// For the settings of `real` (real AUROC, description), the synthetic
/// AUROC on `g`: the real AUROC of the synthetic best, and the rank
/// correlation of the two over all settings.
fn proxy(
    model: &ScoreModel<CpuBackend>,
    g: &Grids,
    labels: &[bool],
    real: &[Setting],
    name: &str,
    dump: &mut Dump,
) {
    let size = model.net.config.image_size;
    // Normals first, then as many defects: each half of the normals with
    // its own defects is a smaller, independent check.
    let n = labels.iter().filter(|&&l| !l).count();
    let halves: Vec<Vec<usize>> = (0..2)
        .map(|h| {
            let part = h * n / 2..(h + 1) * n / 2;
            part.clone().chain(part.map(|i| i + n)).collect()
        })
        .collect();
    let mut parts: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let (mut dprime, mut caught) = (Vec::new(), Vec::new());
    let synth: Vec<f64> = real
        .iter()
        .map(|s| {
            let scores = setting_scores(g, &s.taps, &s.js, s.top, labels.len(), size);
            let (d, c) = separation(&scores, labels);
            dprime.push(d);
            caught.push(c);
            for (h, idx) in halves.iter().enumerate() {
                let sc: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
                let lb: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
                parts[h].push(metrics::auroc(&sc, &lb).unwrap_or(f64::NAN));
            }
            metrics::auroc(&scores, labels).unwrap_or(f64::NAN)
        })
        .collect();
    dump.add(name, synth.clone());
    for (h, v) in parts.into_iter().enumerate() {
        dump.add(&format!("{name} [half {h}]"), v);
    }
    dump.add(&format!("{name} [log d']"), dprime);
    dump.add(&format!("{name} [caught above every normal]"), caught);
    let best = (0..real.len())
        .max_by(|&a, &b| synth[a].total_cmp(&synth[b]))
        .unwrap();
    let rank = |v: Vec<f64>| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        idx.iter().enumerate().for_each(|(k, &i)| r[i] = k as f64);
        r
    };
    let (ra, rb) = (
        rank(synth.clone()),
        rank(real.iter().map(|s| s.auroc).collect()),
    );
    let n = ra.len() as f64;
    let m = (n - 1.0) / 2.0;
    let cov: f64 = ra.iter().zip(&rb).map(|(a, b)| (a - m) * (b - m)).sum();
    let var: f64 = ra.iter().map(|a| (a - m).powi(2)).sum();
    println!(
        "{name}: synthetic best {:.4} → real {:.4} ({}); Spearman ρ over {} settings {:.3}",
        synth[best],
        real[best].auroc,
        describe(&real[best].taps, &real[best].js, real[best].top),
        real.len(),
        cov / var
    );
}

/// Measures that do not saturate where AUROC does: d' of the log scores
/// (defects against normals, pooled spread), and the fraction of defects
/// scoring above every normal.
fn separation(scores: &[f64], labels: &[bool]) -> (f64, f64) {
    let logs = |want: bool| -> Vec<f64> {
        scores
            .iter()
            .zip(labels)
            .filter(|(_, &l)| l == want)
            .map(|(&s, _)| s.max(1e-30).ln())
            .collect()
    };
    let (n, d) = (logs(false), logs(true));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
    let (mn, md) = (mean(&n), mean(&d));
    let pooled = ((var(&n, mn) + var(&d, md)) / 2.0).sqrt().max(1e-12);
    let top = n.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let caught = d.iter().filter(|&&x| x > top).count() as f64 / d.len() as f64;
    ((md - mn) / pooled, caught)
}

/// Every tap's distances at every time of `T_GRID` for every test image.
fn all_grids(
    be: &CpuBackend,
    model: &ScoreModel<CpuBackend>,
    items: &[Vec<f32>],
) -> Result<Grids, Box<dyn std::error::Error>> {
    let taps = model.net.tap_names();
    let s = &model.meta.detection;
    let mut all: Grids = BTreeMap::new();
    for (k, chunk) in items.chunks(8).enumerate() {
        let refs: Vec<&[f32]> = chunk.iter().map(|i| i.as_slice()).collect();
        let ids = vec![0u64; refs.len()];
        let q = PairedQuery {
            images: &refs,
            ids: &ids,
            ts: &T_GRID,
            r: s.r,
            sampler: s.sampler,
            seed: 0,
            draw: 0,
        };
        for (name, g) in detect::tap_distances(be, model, &q, &taps)? {
            match all.get_mut(&name) {
                Some(e) => {
                    e.images += g.images;
                    e.data.extend_from_slice(&g.data);
                }
                None => {
                    all.insert(name, g);
                }
            }
        }
        if k % 20 == 0 {
            eprintln!("grids: {} of {} images", k * 8 + chunk.len(), items.len());
        }
    }
    Ok(all)
}

/// Image AUROC of one setting: times `js`, `taps`, score read as the mean of
/// the map's top `top` fraction (0 = its maximum).
fn auroc(g: &Grids, taps: &[String], js: &[usize], top: f32, labels: &[bool], size: usize) -> f64 {
    let scores = setting_scores(g, taps, js, top, labels.len(), size);
    metrics::auroc(&scores, labels).unwrap_or(f64::NAN)
}

/// Image scores of the first `n` images under one setting.
fn setting_scores(
    g: &Grids,
    taps: &[String],
    js: &[usize],
    top: f32,
    n: usize,
    size: usize,
) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let map = detect::combine(g, taps, js, i, size).expect("taps are in the grids");
            f64::from(if top == 0.0 {
                detect::image_score(&map)
            } else {
                detect::top_mean(&map, top)
            })
        })
        .collect()
}

/// One setting of the grid and its image AUROC on the real test split.
struct Setting {
    auroc: f64,
    taps: Vec<String>,
    js: Vec<usize>,
    top: f32,
}

fn report(
    model: &ScoreModel<CpuBackend>,
    g: &Grids,
    labels: &[bool],
) -> Result<Vec<Setting>, Box<dyn std::error::Error>> {
    let size = model.net.config.image_size;
    let taps: Vec<String> = g.keys().cloned().collect();
    let readings = [0.0f32, 0.01, 0.2, 1.0];
    let windows = grid_windows();
    let mut rows: Vec<Setting> = Vec::new();
    let add = |taps: &[String], rows: &mut Vec<Setting>| {
        for js in &windows {
            for &top in &readings {
                let auroc = auroc(g, taps, js, top, labels, size);
                let (taps, js) = (taps.to_vec(), js.clone());
                rows.push(Setting {
                    auroc,
                    taps,
                    js,
                    top,
                });
            }
        }
    };
    // Single taps over every window and reading.
    for tap in &taps {
        add(std::slice::from_ref(tap), &mut rows);
    }
    rows.sort_by(|a, b| b.auroc.total_cmp(&a.auroc));
    // Pairs of the six best single taps, over every window and reading.
    let mut best_taps: Vec<String> = Vec::new();
    for s in &rows {
        if !best_taps.contains(&s.taps[0]) {
            best_taps.push(s.taps[0].clone());
        }
    }
    best_taps.truncate(6);
    for (i, a) in best_taps.iter().enumerate() {
        for b in &best_taps[i + 1..] {
            add(&[a.clone(), b.clone()], &mut rows);
        }
    }
    rows.sort_by(|a, b| b.auroc.total_cmp(&a.auroc));
    println!(
        "best of {} settings (image AUROC on the real test split):",
        rows.len()
    );
    for s in rows.iter().take(10) {
        println!("  {:.4}  {}", s.auroc, describe(&s.taps, &s.js, s.top));
    }
    let s = &model.meta.detection;
    let stored: Option<Vec<usize>> =
        s.ts.iter()
            .map(|t| T_GRID.iter().position(|&x| (x - t).abs() < 1e-9))
            .collect();
    match stored {
        Some(js) if s.taps.iter().all(|t| g.contains_key(t)) => {
            let top = s.score_top;
            let a = auroc(g, &s.taps, &js, top, labels, size);
            println!(
                "  {a:.4}  the model's stored settings: {}",
                describe(&s.taps, &js, top)
            );
        }
        _ => println!("  (the model's stored times or taps are off this grid)"),
    }
    Ok(rows)
}

fn describe(taps: &[String], js: &[usize], top: f32) -> String {
    let ts: Vec<String> = js.iter().map(|&j| format!("{}", T_GRID[j])).collect();
    let reading = if top == 0.0 {
        "max".to_string()
    } else {
        format!("top {}%", top * 100.0)
    };
    format!("{} | t {{{}}} | {reading}", taps.join("+"), ts.join(", "))
}

/// MVTec, localisation: pooled pixel AUROC on the real masks of every single
/// tap over every window of times, smoothed σ 4, with and without the normal
/// profile of the held-out normals; then pairs of the six best taps over the
/// ten best windows at several σ. The ceiling of the pixel objective's grid.
fn pixel_oracle(
    be: &CpuBackend,
    model: &ScoreModel<CpuBackend>,
    items: &[scoredd::data::TestItem],
    held: &[Vec<f32>],
) -> Result<(), Box<dyn std::error::Error>> {
    use rayon::prelude::*;
    let size = model.net.config.image_size;
    let normals: Vec<Vec<f32>> = held.iter().take(64).cloned().collect();
    let mut set: Vec<Vec<f32>> = items.iter().map(|i| i.image.clone()).collect();
    let n_test = set.len();
    set.extend(normals.iter().cloned());
    let g = all_grids(be, model, &set)?;
    let normal_idx: Vec<usize> = (n_test..set.len()).collect();
    let zeros = vec![0u8; size * size];
    let masks: Vec<&[u8]> = items
        .iter()
        .map(|i| i.mask.as_deref().unwrap_or(&zeros))
        .collect();
    let windows = grid_windows();
    let score = |taps: &[String], js: &[usize], sigma: f32, profiled: bool| -> f64 {
        let ts: Vec<f64> = js.iter().map(|&j| T_GRID[j]).collect();
        let prof = profiled
            .then(|| detect::normal_profile(&g, taps, js, &ts, &normal_idx).expect("profile"));
        let maps: Vec<Vec<f32>> = (0..n_test)
            .map(|i| {
                let m = detect::combine_profiled(&g, taps, js, i, size, prof.as_ref())
                    .expect("taps are in the grids");
                detect::gaussian_blur(&m, size, sigma)
            })
            .collect();
        let refs: Vec<&[f32]> = maps.iter().map(|m| m.as_slice()).collect();
        metrics::pixel_auroc(&refs, &masks).unwrap_or(f64::NAN)
    };
    let taps: Vec<String> = g.keys().cloned().collect();
    let mut singles: Vec<(f64, String, usize, bool)> = taps
        .iter()
        .flat_map(|t| {
            (0..windows.len()).flat_map(move |w| [(t.clone(), w, false), (t.clone(), w, true)])
        })
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(t, w, p)| {
            (
                score(std::slice::from_ref(&t), &windows[w], 4.0, p),
                t,
                w,
                p,
            )
        })
        .collect();
    singles.sort_by(|a, b| b.0.total_cmp(&a.0));
    let ts_of = |w: usize| -> String {
        let v: Vec<String> = windows[w]
            .iter()
            .map(|&j| format!("{}", T_GRID[j]))
            .collect();
        v.join(",")
    };
    println!("best single taps (pixel AUROC, σ 4):");
    for (a, t, w, p) in singles.iter().take(15) {
        println!("  {a:.4}  {t} | t {{{}}} | profile {p}", ts_of(*w));
    }
    let mut best_taps: Vec<String> = Vec::new();
    let mut best_windows: Vec<usize> = Vec::new();
    for (_, t, w, _) in &singles {
        if !best_taps.contains(t) && best_taps.len() < 6 {
            best_taps.push(t.clone());
        }
        if !best_windows.contains(w) && best_windows.len() < 8 {
            best_windows.push(*w);
        }
    }
    let mut jobs = Vec::new();
    for (i, a) in best_taps.iter().enumerate() {
        for b in &best_taps[i + 1..] {
            for &w in &best_windows {
                for sigma in [2.0f32, 4.0, 8.0] {
                    for p in [false, true] {
                        jobs.push((vec![a.clone(), b.clone()], w, sigma, p));
                    }
                }
            }
        }
    }
    for t in &best_taps {
        for &w in &best_windows {
            for sigma in [2.0f32, 8.0] {
                for p in [false, true] {
                    jobs.push((vec![t.clone()], w, sigma, p));
                }
            }
        }
    }
    let mut pairs: Vec<(f64, Vec<String>, usize, f32, bool)> = jobs
        .into_par_iter()
        .map(|(t, w, s, p)| (score(&t, &windows[w], s, p), t, w, s, p))
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("best pairs and smoothings (pixel AUROC):");
    for (a, t, w, s, p) in pairs.iter().take(20) {
        println!(
            "  {a:.4}  {} | t {{{}}} | σ {s} | profile {p}",
            t.join("+"),
            ts_of(*w)
        );
    }
    Ok(())
}

/// Every window of 1 to 5 consecutive times of `T_GRID`, as indices.
fn grid_windows() -> Vec<Vec<usize>> {
    (1..=5)
        .flat_map(|len| (0..=T_GRID.len() - len).map(move |s| (s..s + len).collect()))
        .collect()
}
