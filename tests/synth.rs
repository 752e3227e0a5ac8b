//! The synthetic data set: layout, loading through `data`, reproducibility,
//! exact masks, and config validation. Everything goes into temp folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, RgbImage};
use scoredd::data::{self, ImageSpec};
use scoredd::rng::RngStream;
use scoredd::synth::{self, Split, SynthConfig, CATEGORIES, DEFECTS};
use scoredd::Error;

/// A fresh, empty temp folder unique to this test.
fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scoredd-synth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small(seed: u64, categories: &[&str]) -> SynthConfig {
    SynthConfig {
        seed,
        size: 48,
        train: 3,
        test_good: 2,
        test_per_defect: 2,
        categories: categories.iter().map(|s| s.to_string()).collect(),
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every file under `root`, relative path → bytes.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn luma(img: &RgbImage) -> Vec<f32> {
    DynamicImage::ImageRgb8(img.clone())
        .to_luma32f()
        .into_raw()
        .into_iter()
        .map(|v| v * 255.0)
        .collect()
}

/// What the CI model sees: grayscale, bilinear to 32 px (as `data` does).
fn gray32(img: &RgbImage) -> Vec<f32> {
    let g = DynamicImage::ImageRgb8(img.clone()).to_luma32f();
    imageops::resize(&g, 32, 32, FilterType::Triangle)
        .into_raw()
        .into_iter()
        .map(|v| v * 255.0)
        .collect()
}

#[test]
fn layout_masks_and_loading() {
    let root = tmpdir("layout");
    let cfg = small(7, CATEGORIES);
    let sum = synth::generate(&root, &cfg).unwrap();
    assert_eq!(sum.root, root);
    assert_eq!(sum.categories, cfg.categories);
    assert_eq!(
        sum.images_written,
        CATEGORIES.len() * (3 + 2 + 2 * DEFECTS.len())
    );

    for &cat in CATEGORIES {
        let c = root.join(cat);
        assert_eq!(names(&c), ["ground_truth", "test", "train"]);
        assert_eq!(names(&c.join("train")), ["good"]);
        assert_eq!(
            names(&c.join("train/good")),
            ["000.png", "001.png", "002.png"]
        );
        let mut test_dirs: Vec<&str> = DEFECTS.to_vec();
        test_dirs.push("good");
        test_dirs.sort();
        assert_eq!(names(&c.join("test")), test_dirs);
        assert_eq!(names(&c.join("test/good")), ["000.png", "001.png"]);
        let mut defects = DEFECTS.to_vec();
        defects.sort();
        assert_eq!(names(&c.join("ground_truth")), defects);
        for &d in DEFECTS {
            assert_eq!(names(&c.join("test").join(d)), ["000.png", "001.png"]);
            let gt = c.join("ground_truth").join(d);
            assert_eq!(names(&gt), ["000_mask.png", "001_mask.png"]);
            for i in 0..2 {
                let img = image::open(c.join(format!("test/{d}/00{i}.png"))).unwrap();
                let mask = image::open(gt.join(format!("00{i}_mask.png"))).unwrap();
                assert!(
                    matches!(img, DynamicImage::ImageRgb8(_)),
                    "{cat}/{d}: not RGB8"
                );
                let DynamicImage::ImageLuma8(mask) = mask else {
                    panic!("{cat}/{d}: mask is not 8-bit gray");
                };
                assert_eq!(mask.dimensions(), (48, 48));
                assert_eq!(img.width(), 48);
                assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
                let area = mask.pixels().filter(|p| p.0[0] == 255).count() as f32 / 48.0 / 48.0;
                assert!(
                    (0.015..0.3).contains(&area),
                    "{cat}/{d}/{i}: mask area {area}"
                );
                // The file is exactly what `render` gives for its stream.
                let s = synth::image_stream(7, cat, Split::TestDefect(d), i);
                let (r, m) = synth::render(cat, Some(d), 48, s).unwrap();
                assert_eq!(img.to_rgb8(), r);
                assert_eq!(Some(mask), m);
            }
        }
        let s = synth::image_stream(7, cat, Split::Train, 2);
        let (r, m) = synth::render(cat, None, 48, s).unwrap();
        assert!(m.is_none());
        assert_eq!(
            image::open(c.join("train/good/002.png")).unwrap().to_rgb8(),
            r
        );

        // The data loaders take it as it is.
        let spec = ImageSpec::gray(32);
        let train = data::mvtec_train(&c, spec).unwrap();
        assert_eq!(train.images.len(), 3);
        assert!(train.skipped.is_empty(), "{:?}", train.skipped);
        let test = data::mvtec_test(&c, spec).unwrap();
        assert!(test.skipped.is_empty(), "{:?}", test.skipped);
        assert_eq!(test.items.len(), 2 + 2 * DEFECTS.len());
        for item in &test.items {
            if item.is_anomalous() {
                let m = item.mask.as_ref().expect("defect image has a mask");
                assert!(m.contains(&1), "{}: empty mask at 32 px", item.path);
            } else {
                assert!(item.mask.is_none());
            }
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn reproducible_and_overwritable() {
    let (a, b, c) = (tmpdir("rep-a"), tmpdir("rep-b"), tmpdir("rep-c"));
    let cfg = small(11, &["stripes", "dots"]);
    synth::generate(&a, &cfg).unwrap();
    synth::generate(&b, &cfg).unwrap();
    let sa = snapshot(&a);
    assert_eq!(sa.len(), 2 * (3 + 2 + 2 * 2 * DEFECTS.len()));
    assert_eq!(sa, snapshot(&b), "same seed, different bytes");

    // A category's files do not depend on which other categories are generated.
    synth::generate(&c, &small(11, &["dots"])).unwrap();
    for (k, v) in snapshot(&c) {
        assert_eq!(&sa[&k], &v, "{k}");
    }

    // Regenerating over an existing set gives the same bytes, and stale
    // numbered files (and interrupted temp files) from a larger run go.
    let mut bigger = cfg.clone();
    bigger.train = 5;
    synth::generate(&b, &bigger).unwrap();
    assert_eq!(names(&b.join("stripes/train/good")).len(), 5);
    std::fs::write(b.join("stripes/train/good/.004.png.tmp-1"), b"half").unwrap();
    std::fs::write(b.join("stripes/train/good/notes.txt"), b"mine").unwrap();
    synth::generate(&b, &cfg).unwrap();
    std::fs::remove_file(b.join("stripes/train/good/notes.txt")).unwrap();
    assert_eq!(snapshot(&b), sa);

    // Another seed changes every image.
    synth::generate(&c, &small(12, &["stripes", "dots"])).unwrap();
    let sc = snapshot(&c);
    assert_eq!(sc.len(), sa.len());
    for (k, v) in &sc {
        if !k.ends_with("_mask.png") {
            assert_ne!(&sa[k], v, "{k} did not change with the seed");
        }
    }
    // Images within a split differ too.
    assert_ne!(
        sa["stripes/train/good/000.png"],
        sa["stripes/train/good/001.png"]
    );
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn defects_change_exactly_the_masked_pixels() {
    let size = 64;
    for &cat in CATEGORIES {
        for &d in DEFECTS {
            let (mut inside_sum, mut inside32_sum, mut n) = (0f32, 0f32, 0);
            for k in 0..6 {
                let s = RngStream::new(3, 100 + k);
                let (clean, none) = synth::render(cat, None, size, s).unwrap();
                assert!(none.is_none());
                let (bad, mask) = synth::render(cat, Some(d), size, s).unwrap();
                let mask: GrayImage = mask.unwrap();
                let (lc, lb) = (luma(&clean), luma(&bad));
                let mut inside = (0f32, 0usize);
                for (i, (pc, pb)) in clean.pixels().zip(bad.pixels()).enumerate() {
                    if mask.as_raw()[i] == 0 {
                        assert_eq!(pc, pb, "{cat}/{d}: pixel {i} outside the mask changed");
                    } else {
                        inside.0 += (lc[i] - lb[i]).abs();
                        inside.1 += 1;
                    }
                }
                // Big enough: spots ≥ ~1/8 of the side across, scratches ≥ 1/16 wide.
                let area = inside.1 as f32 / (size * size) as f32;
                assert!(area > 0.015, "{cat}/{d}/{k}: area {area}");
                inside_sum += inside.0 / inside.1 as f32;

                // Still visible for the 32 px grayscale model.
                let (c32, b32) = (gray32(&clean), gray32(&bad));
                let m32 = imageops::resize(&mask, 32, 32, FilterType::Nearest);
                let (mut s32, mut n32) = (0f32, 0);
                for (i, m) in m32.as_raw().iter().enumerate() {
                    if *m >= 128 {
                        s32 += (c32[i] - b32[i]).abs();
                        n32 += 1;
                    }
                }
                assert!(n32 > 0);
                inside32_sum += s32 / n32 as f32;
                n += 1;
            }
            let (m, m32) = (inside_sum / n as f32, inside32_sum / n as f32);
            eprintln!("{cat:8} {d:8} mean |Δ luma| inside: {m:5.1} (64 px)  {m32:5.1} (32 px)");
            assert!(m > 25.0, "{cat}/{d}: mean luminance change inside only {m}");
            assert!(m32 > 18.0, "{cat}/{d}: mean change at 32 px only {m32}");
        }
    }
}

#[test]
fn bad_config_is_invalid() {
    let root = tmpdir("bad");
    let invalid = |cfg: SynthConfig| match synth::generate(&root, &cfg) {
        Err(Error::Invalid(m)) => m,
        other => panic!("expected Error::Invalid, got {other:?}"),
    };
    let base = small(0, &["stripes"]);
    assert!(invalid(SynthConfig {
        size: 15,
        ..base.clone()
    })
    .contains("size"));
    assert!(invalid(SynthConfig {
        size: 1 << 20,
        ..base.clone()
    })
    .contains("size"));
    assert!(invalid(SynthConfig {
        train: 0,
        ..base.clone()
    })
    .contains("train"));
    assert!(invalid(SynthConfig {
        test_good: 0,
        ..base.clone()
    })
    .contains("test_good"));
    assert!(invalid(SynthConfig {
        test_per_defect: 0,
        ..base.clone()
    })
    .contains("test_per_defect"));
    let m = invalid(SynthConfig {
        categories: vec![],
        ..base.clone()
    });
    assert!(m.contains("stripes"), "{m}");
    let m = invalid(small(0, &["stripes", "marble"]));
    assert!(
        m.contains("marble") && CATEGORIES.iter().all(|c| m.contains(c)),
        "{m}"
    );
    assert!(invalid(small(0, &["dots", "dots"])).contains("twice"));
    // Nothing was written for a bad config.
    assert!(names(&root).is_empty());

    let s = RngStream::new(0, 0);
    assert!(matches!(
        synth::render("marble", None, 32, s),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        synth::render("dots", Some("dent"), 32, s),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        synth::render("dots", None, 8, s),
        Err(Error::Invalid(_))
    ));
    // A root that is a file is an I/O error, not a panic.
    let file = root.join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        synth::generate(&file, &base),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Contact sheet for eyeballing (`cargo test --release --test synth contact_sheet`).
/// Per category, three rows: the 64 px colour images (3 normal, then one per
/// defect) ×2, the 32 px grayscale the CI model sees ×4, and the masks ×2.
/// Written to `$SYNTH_PREVIEW` or `<temp dir>/synth_preview.png`; the test
/// checks the file reads back as drawn and that every defect tile has a mask.
#[test]
fn contact_sheet() {
    let out = std::env::var_os("SYNTH_PREVIEW")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("synth_preview.png"));
    let cols = 3 + DEFECTS.len() as u32;
    let (tile, gap) = (128u32, 4u32);
    let rows = 3 * CATEGORIES.len() as u32;
    let mut sheet = RgbImage::from_pixel(
        cols * (tile + gap) + gap,
        rows * (tile + gap) + gap,
        image::Rgb([40, 40, 60]),
    );
    for (ci, &cat) in CATEGORIES.iter().enumerate() {
        for col in 0..cols {
            let (split, defect) = if col < 3 {
                (Split::Train, None)
            } else {
                let d = DEFECTS[(col - 3) as usize];
                (Split::TestDefect(d), Some(d))
            };
            let s = synth::image_stream(0, cat, split, col as usize);
            let (img, mask) = synth::render(cat, defect, 64, s).unwrap();
            let big = imageops::resize(&img, tile, tile, FilterType::Nearest);
            let g = DynamicImage::ImageRgb8(img.clone()).to_luma8();
            let g32 = imageops::resize(&g, 32, 32, FilterType::Triangle);
            let g32 =
                DynamicImage::ImageLuma8(imageops::resize(&g32, tile, tile, FilterType::Nearest))
                    .to_rgb8();
            let m = mask.unwrap_or_else(|| GrayImage::new(64, 64));
            let m = DynamicImage::ImageLuma8(imageops::resize(&m, tile, tile, FilterType::Nearest))
                .to_rgb8();
            let x = gap + col * (tile + gap);
            for (r, t) in [big, g32, m].iter().enumerate() {
                let y = gap + (3 * ci as u32 + r as u32) * (tile + gap);
                imageops::replace(&mut sheet, t, x as i64, y as i64);
            }
        }
    }
    sheet.save(&out).unwrap();
    eprintln!("wrote {}", out.display());
    let back = image::open(&out).unwrap().to_rgb8();
    assert_eq!(back, sheet, "the sheet reads back as drawn");
    // The mask row of a defect column is not all black; of a normal one, it is.
    for ci in 0..CATEGORIES.len() as u32 {
        let y0 = gap + (3 * ci + 2) * (tile + gap);
        for col in 0..cols {
            let x0 = gap + col * (tile + gap);
            let lit = (y0..y0 + tile)
                .any(|y| (x0..x0 + tile).any(|x| back.get_pixel(x, y).0 != [0, 0, 0]));
            assert_eq!(lit, col >= 3, "category {ci}, column {col}: mask presence");
        }
    }
}
