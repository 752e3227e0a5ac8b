//! Reading images (MVTec layout, plain folders, MNIST idx) and making batches.
//! All inputs are generated into temp folders; the MTD test reads ../shared/data/mtd.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage};
use scoredd::data::{self, Augment, BatchLoader, ImageSpec};
use scoredd::Error;

/// A fresh, empty temp folder unique to this test.
fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scoredd-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gray_pattern(w: u32, h: u32, seed: u32) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| {
        Luma([((x * 13 + y * 7 + seed * 31) % 256) as u8])
    })
}

fn rgb_pattern(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x * 8 + seed) % 256) as u8,
            ((y * 8 + seed) % 256) as u8,
            (((x + y) * 4) % 256) as u8,
        ])
    })
}

/// White left half, black right half.
fn half_mask(w: u32, h: u32) -> GrayImage {
    GrayImage::from_fn(w, h, |x, _| Luma([if x < w / 2 { 255 } else { 0 }]))
}

fn mkdirs(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
}

fn msg(e: Error) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------
// MVTec layout

/// cat/train/good: 3, test/good: 2, test/crack: 2, test/hole: 1, with masks.
fn make_mvtec(root: &Path) -> PathBuf {
    let cat = root.join("cat");
    for d in [
        "train/good",
        "test/good",
        "test/crack",
        "test/hole",
        "ground_truth/crack",
        "ground_truth/hole",
    ] {
        mkdirs(&cat.join(d));
    }
    for i in 0..3 {
        gray_pattern(16, 16, i)
            .save(cat.join(format!("train/good/{i:03}.png")))
            .unwrap();
    }
    for i in 0..2 {
        gray_pattern(16, 16, 10 + i)
            .save(cat.join(format!("test/good/{i:03}.png")))
            .unwrap();
    }
    for i in 0..2 {
        gray_pattern(16, 16, 20 + i)
            .save(cat.join(format!("test/crack/{i:03}.png")))
            .unwrap();
        half_mask(16, 16)
            .save(cat.join(format!("ground_truth/crack/{i:03}_mask.png")))
            .unwrap();
    }
    rgb_pattern(24, 24, 3)
        .save(cat.join("test/hole/000.jpg"))
        .unwrap();
    half_mask(24, 24)
        .save(cat.join("ground_truth/hole/000_mask.png"))
        .unwrap();
    cat
}

#[test]
fn mvtec_round_trip() {
    let root = tmpdir("mvtec");
    let cat = make_mvtec(&root);
    let spec = ImageSpec::gray(8);

    let train = data::mvtec_train(&cat, spec).unwrap();
    assert_eq!(train.images.len(), 3);
    assert_eq!(train.paths.len(), 3);
    assert!(train.skipped.is_empty());
    assert!(train.paths[0].ends_with("000.png") && train.paths[2].ends_with("002.png"));
    for im in &train.images {
        assert_eq!(im.len(), 64);
        assert!(im.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    let test = data::mvtec_test(&cat, spec).unwrap();
    assert_eq!(test.items.len(), 5);
    assert_eq!(test.defect_types(), vec!["crack", "good", "hole"]);
    let n_good = test.items.iter().filter(|i| i.defect == "good").count();
    assert_eq!(n_good, 2);
    // Nearest-neighbour 16 → 8 of a white-left-half mask: columns 0..4 are 1.
    let want: Vec<u8> = (0..64).map(|p| u8::from(p % 8 < 4)).collect();
    for item in &test.items {
        assert_eq!(item.image.len(), 64);
        if item.defect == "good" {
            assert!(item.mask.is_none() && !item.is_anomalous());
        } else {
            assert!(item.is_anomalous());
            let m = item.mask.as_ref().expect("defect item has a mask");
            assert_eq!(m.len(), 64);
            assert_eq!(m, &want, "{}", item.path);
            assert!(item.mask_path.as_ref().unwrap().ends_with("_mask.png"));
        }
    }

    // RGB spec: 3 planes, masks unchanged.
    let test3 = data::mvtec_test(&cat, ImageSpec::rgb(8)).unwrap();
    assert!(test3.items.iter().all(|i| i.image.len() == 3 * 64));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn mvtec_mask_size_mismatch_is_error_naming_both() {
    let root = tmpdir("mvtec-mismatch");
    let cat = make_mvtec(&root);
    half_mask(20, 16)
        .save(cat.join("ground_truth/crack/001_mask.png"))
        .unwrap();
    let e = msg(data::mvtec_test(&cat, ImageSpec::gray(8)).unwrap_err());
    assert!(
        e.contains("001_mask.png") && e.contains("crack/001.png"),
        "{e}"
    );
    assert!(e.contains("20×16") && e.contains("16×16"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn mvtec_missing_mask_is_error_naming_image() {
    let root = tmpdir("mvtec-nomask");
    let cat = make_mvtec(&root);
    std::fs::remove_file(cat.join("ground_truth/hole/000_mask.png")).unwrap();
    let e = msg(data::mvtec_test(&cat, ImageSpec::gray(8)).unwrap_err());
    assert!(e.contains("hole/000.jpg") && e.contains("no mask"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn mvtec_missing_layout_is_clear_error() {
    let root = tmpdir("mvtec-missing");
    let e = msg(data::mvtec_train(&root, ImageSpec::gray(8)).unwrap_err());
    assert!(e.contains("train") && e.contains("does not exist"), "{e}");
    let e = msg(data::mvtec_test(&root, ImageSpec::gray(8)).unwrap_err());
    assert!(e.contains("test") && e.contains("does not exist"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

// ---------------------------------------------------------------------------
// Plain folders

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    rgb_pattern(w, h, 5)
        .write_to(&mut buf, image::ImageFormat::Jpeg)
        .unwrap();
    buf.into_inner()
}

#[test]
fn folder_skips_bad_files_and_loads_16_bit() {
    let dir = tmpdir("folder-mixed");
    gray_pattern(32, 20, 1)
        .save(dir.join("a_good.png"))
        .unwrap();
    std::fs::write(dir.join("b_good.jpg"), jpeg_bytes(40, 40)).unwrap();
    std::fs::write(dir.join("c_notes.txt"), "not an image").unwrap();
    std::fs::write(dir.join("d_fake.png"), "text pretending to be a png").unwrap();
    // A JPEG cut after its first 30 bytes (inside the headers).
    let j = jpeg_bytes(40, 40);
    std::fs::write(dir.join("e_truncated.jpg"), &j[..30]).unwrap();
    // A larger JPEG cut inside its entropy-coded scan.
    let big = jpeg_bytes(128, 128);
    std::fs::write(dir.join("e_cut_scan.jpg"), &big[..big.len() * 3 / 5]).unwrap();
    GrayImage::from_pixel(1, 1, Luma([128]))
        .save(dir.join("f_tiny.png"))
        .unwrap();
    // 16-bit gray: v = 256·(x + 16 y) + 3 at 16×16 (no resize at spec size 16).
    let deep: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(16, 16, |x, y| Luma([(256 * (x + 16 * y) + 3) as u16]));
    deep.save(dir.join("g_deep16.png")).unwrap();
    mkdirs(&dir.join("h_subdir")); // not recursed into, not reported

    let l = data::folder(&dir, ImageSpec::gray(16)).unwrap();
    let names: Vec<_> = l
        .paths
        .iter()
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["a_good.png", "b_good.jpg", "g_deep16.png"]);
    let skipped: Vec<_> = l
        .skipped
        .iter()
        .map(|s| s.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        skipped,
        vec![
            "c_notes.txt",
            "d_fake.png",
            "e_cut_scan.jpg",
            "e_truncated.jpg",
            "f_tiny.png"
        ],
        "{:?}",
        l.skipped
    );
    for s in &l.skipped {
        assert!(!s.reason.is_empty());
    }
    assert!(
        l.skipped[4].reason.contains("1×1"),
        "{}",
        l.skipped[4].reason
    );
    for im in &l.images {
        assert_eq!(im.len(), 256);
        assert!(im.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    let d = &l.images[2];
    for (p, &v) in d.iter().enumerate() {
        let want = (256 * p as u32 + 3) as f32 / 65535.0;
        assert!((v - want).abs() < 1e-6, "pixel {p}: {v} vs {want}");
    }
    // Same 16-bit file as RGB: three identical planes.
    let l3 = data::folder(&dir, ImageSpec::rgb(16)).unwrap();
    let d3 = &l3.images[2];
    assert_eq!(d3.len(), 3 * 256);
    for c in 0..3 {
        for p in 0..256 {
            assert!((d3[c * 256 + p] - d[p]).abs() < 1e-6);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn folder_resizes_and_converts() {
    let dir = tmpdir("folder-resize");
    // Constant colour survives any resize; gray = Rec. 709 luma.
    RgbImage::from_pixel(30, 50, Rgb([255, 0, 0]))
        .save(dir.join("red.png"))
        .unwrap();
    let rgb = data::folder(&dir, ImageSpec::rgb(8)).unwrap();
    let im = &rgb.images[0];
    assert_eq!(im.len(), 3 * 64);
    assert!(im[..64].iter().all(|&v| (v - 1.0).abs() < 1e-6));
    assert!(im[64..].iter().all(|&v| v.abs() < 1e-6));
    let g = data::folder(&dir, ImageSpec::gray(8)).unwrap();
    assert!(
        g.images[0].iter().all(|&v| (v - 0.2126).abs() < 0.01),
        "{:?}",
        &g.images[0][..4]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn empty_missing_or_all_bad_folder_is_error() {
    let dir = tmpdir("folder-empty");
    let e = msg(data::folder(&dir, ImageSpec::gray(8)).unwrap_err());
    assert!(e.contains("no usable images") && e.contains("empty"), "{e}");

    let e = msg(data::folder(dir.join("nope"), ImageSpec::gray(8)).unwrap_err());
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");

    std::fs::write(dir.join("x.txt"), "hello").unwrap();
    std::fs::write(dir.join("y.png"), "not png").unwrap();
    GrayImage::from_pixel(1, 1, Luma([0]))
        .save(dir.join("z.png"))
        .unwrap();
    let e = msg(data::folder(&dir, ImageSpec::gray(8)).unwrap_err());
    assert!(
        e.contains("no usable images") && e.contains("3 file(s) skipped"),
        "{e}"
    );

    assert!(data::folder(
        &dir,
        ImageSpec {
            size: 8,
            channels: 2
        }
    )
    .is_err());
    assert!(data::folder(&dir, ImageSpec::gray(0)).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// MNIST

fn idx_pair(labels: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let n = labels.len() as u32;
    let mut im = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        im.extend_from_slice(&d.to_be_bytes());
    }
    for i in 0..labels.len() {
        im.extend((0..784).map(|p| ((p + 40 * i) % 256) as u8));
    }
    let mut lb = vec![0, 0, 8, 1];
    lb.extend_from_slice(&n.to_be_bytes());
    lb.extend_from_slice(labels);
    (im, lb)
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

const LABELS: [u8; 6] = [3, 1, 3, 7, 3, 0];

#[test]
fn mnist_gz_and_plain_keep_one_digit() {
    let (im, lb) = idx_pair(&LABELS);
    for zipped in [true, false] {
        let dir = tmpdir(&format!("mnist-{zipped}"));
        if zipped {
            std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), gz(&im)).unwrap();
            std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gz(&lb)).unwrap();
        } else {
            std::fs::write(dir.join("t10k-images-idx3-ubyte"), &im).unwrap();
            std::fs::write(dir.join("t10k-labels-idx1-ubyte"), &lb).unwrap();
        }
        let l = data::mnist(&dir, 3, ImageSpec::gray(28)).unwrap();
        assert_eq!(l.images.len(), 3);
        for (k, i) in [0usize, 2, 4].into_iter().enumerate() {
            assert!(l.paths[k].ends_with(&format!("#{i}")), "{}", l.paths[k]);
            for p in 0..784 {
                let want = ((p + 40 * i) % 256) as f32 / 255.0;
                assert!((l.images[k][p] - want).abs() < 1e-6);
            }
        }
        let l = data::mnist(&dir, 7, ImageSpec::rgb(14)).unwrap();
        assert_eq!(l.images.len(), 1);
        assert_eq!(l.images[0].len(), 3 * 14 * 14);
        let e = msg(data::mnist(&dir, 5, ImageSpec::gray(28)).unwrap_err());
        assert!(e.contains("digit 5"), "{e}");
        assert!(data::mnist(&dir, 10, ImageSpec::gray(28)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn mnist_bad_files_are_errors() {
    let (im, lb) = idx_pair(&LABELS);
    let dir = tmpdir("mnist-bad");
    let ip = dir.join("t10k-images-idx3-ubyte");
    let lp = dir.join("t10k-labels-idx1-ubyte");

    let e = msg(data::mnist(&dir, 3, ImageSpec::gray(28)).unwrap_err());
    assert!(e.contains("not found"), "{e}");

    std::fs::write(&lp, &lb).unwrap();
    // Truncated data.
    std::fs::write(&ip, &im[..im.len() - 100]).unwrap();
    let e = msg(data::mnist(&dir, 3, ImageSpec::gray(28)).unwrap_err());
    assert!(e.contains("truncated") && e.contains("t10k-images"), "{e}");
    // Truncated header.
    std::fs::write(&ip, &im[..10]).unwrap();
    let e = msg(data::mnist(&dir, 3, ImageSpec::gray(28)).unwrap_err());
    assert!(e.contains("truncated"), "{e}");
    // Bad magic.
    let mut bad = im.clone();
    bad[3] = 2;
    std::fs::write(&ip, &bad).unwrap();
    let e = msg(data::mnist(&dir, 3, ImageSpec::gray(28)).unwrap_err());
    assert!(e.contains("magic"), "{e}");
    // Label count differs.
    std::fs::write(&ip, &im).unwrap();
    let (_, lb5) = idx_pair(&LABELS[..5]);
    std::fs::write(&lp, &lb5).unwrap();
    let e = msg(data::mnist(&dir, 3, ImageSpec::gray(28)).unwrap_err());
    assert!(e.contains("labels"), "{e}");
    // Truncated gzip stream (gz takes precedence over the plain file).
    std::fs::write(&lp, &lb).unwrap();
    let z = gz(&im);
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), &z[..z.len() / 2]).unwrap();
    let e = msg(data::mnist(&dir, 3, ImageSpec::gray(28)).unwrap_err());
    assert!(e.contains("t10k-images-idx3-ubyte.gz"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Batches

fn batch_images(n: usize, spec: ImageSpec) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            (0..spec.numel())
                .map(|p| ((p * 7 + i * 13) % 97) as f32 / 96.0)
                .collect()
        })
        .collect()
}

#[test]
fn batches_are_pure_functions_of_the_step() {
    let spec = ImageSpec::rgb(12);
    let imgs = batch_images(10, spec);
    let aug = Augment {
        hflip: true,
        vflip: true,
        crop: 0.2,
    };
    let a = data::make_batch(&imgs, spec, 5, &aug, 42, 7).unwrap();
    let b = data::make_batch(&imgs, spec, 5, &aug, 42, 7).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.shape, [5, 3, 12, 12]);
    assert_eq!(a.data.len(), 5 * 3 * 144);
    assert!(a.data.iter().all(|v| (0.0..=1.0).contains(v)));
    let c = data::make_batch(&imgs, spec, 5, &aug, 42, 8).unwrap();
    assert_ne!(a.data, c.data);
    let d = data::make_batch(&imgs, spec, 5, &aug, 43, 7).unwrap();
    assert_ne!(a.data, d.data);

    // The loader yields exactly make_batch; a restart at step s matches the straight run.
    let shared = Arc::new(imgs.clone());
    let straight: Vec<_> = BatchLoader::new(shared.clone(), spec, 5, aug, 42, 0, 2)
        .unwrap()
        .take(8)
        .collect();
    assert_eq!(straight.len(), 8);
    for (s, b) in straight.iter().enumerate() {
        assert_eq!(b.step, s as u64);
        assert_eq!(
            b,
            &data::make_batch(&imgs, spec, 5, &aug, 42, s as u64).unwrap()
        );
    }
    let mut resumed = BatchLoader::new(shared.clone(), spec, 5, aug, 42, 5, 4).unwrap();
    assert_eq!(resumed.next_step(), 5);
    for want in &straight[5..8] {
        assert_eq!(&resumed.next_batch().unwrap(), want);
    }
    assert_eq!(resumed.next_step(), 8);
    drop(resumed); // stops the thread (would hang the test otherwise)

    // Bad arguments are errors.
    assert!(BatchLoader::new(shared.clone(), spec, 0, aug, 1, 0, 2).is_err());
    let bad = Augment { crop: 1.0, ..aug };
    assert!(data::make_batch(&imgs, spec, 2, &bad, 1, 0).is_err());
    assert!(data::make_batch(&imgs, ImageSpec::gray(12), 2, &aug, 1, 0).is_err());
    assert!(data::make_batch(&[], spec, 2, &aug, 1, 0).is_err());
}

#[test]
fn flips_flip_and_no_augment_copies() {
    let spec = ImageSpec::gray(6);
    let img: Vec<f32> = (0..36).map(|p| p as f32 / 35.0).collect();
    let imgs = vec![img.clone()];
    let hflipped: Vec<f32> = (0..36).map(|p| img[(p / 6) * 6 + 5 - p % 6]).collect();
    let vflipped: Vec<f32> = (0..36).map(|p| img[(5 - p / 6) * 6 + p % 6]).collect();
    let both: Vec<f32> = (0..36).map(|p| img[35 - p]).collect();

    let none = data::make_batch(&imgs, spec, 4, &Augment::none(), 1, 0).unwrap();
    assert!(none.data.chunks(36).all(|c| c == img.as_slice()));

    let count = |aug: Augment, want: &[f32]| {
        let b = data::make_batch(&imgs, spec, 64, &aug, 9, 3).unwrap();
        let mut n_orig = 0;
        let mut n_want = 0;
        for c in b.data.chunks(36) {
            if c == img.as_slice() {
                n_orig += 1;
            } else if c == want {
                n_want += 1;
            } else {
                panic!("neither original nor flipped: {c:?}");
            }
        }
        (n_orig, n_want)
    };
    let (o, f) = count(
        Augment {
            hflip: true,
            vflip: false,
            crop: 0.0,
        },
        &hflipped,
    );
    assert!(o > 10 && f > 10, "{o} {f}");
    let (o, f) = count(
        Augment {
            hflip: false,
            vflip: true,
            crop: 0.0,
        },
        &vflipped,
    );
    assert!(o > 10 && f > 10, "{o} {f}");

    let b = data::make_batch(
        &imgs,
        spec,
        64,
        &Augment {
            hflip: true,
            vflip: true,
            crop: 0.0,
        },
        9,
        3,
    )
    .unwrap();
    let kinds = [&img, &hflipped, &vflipped, &both];
    for k in kinds {
        assert!(b.data.chunks(36).any(|c| c == k.as_slice()));
    }
}

#[test]
fn crop_zooms_in() {
    // A horizontal ramp: a crop then resize keeps it monotone but changes it.
    let spec = ImageSpec::gray(32);
    let img: Vec<f32> = (0..32 * 32).map(|p| (p % 32) as f32 / 31.0).collect();
    let b = data::make_batch(
        std::slice::from_ref(&img),
        spec,
        16,
        &Augment {
            hflip: false,
            vflip: false,
            crop: 0.5,
        },
        3,
        0,
    )
    .unwrap();
    let mut changed = 0;
    for c in b.data.chunks(32 * 32) {
        assert!(c.iter().all(|v| (0.0..=1.0).contains(v)));
        let row = &c[..32];
        assert!(row.windows(2).all(|w| w[1] >= w[0] - 1e-6), "{row:?}");
        // Rows are identical (the ramp is constant down columns).
        assert!(c.chunks(32).all(|r| r == row));
        if c != img.as_slice() {
            changed += 1;
        }
    }
    assert!(changed >= 12, "{changed}");
}

// ---------------------------------------------------------------------------
// The Magnetic Tile Defect data set shipped in ../shared/data/mtd.

#[test]
fn mtd_dataset_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mtd");
    if !dir.is_dir() {
        common::skip(&format!("{} not found", dir.display()));
        return;
    }
    let spec = ImageSpec::gray(64);
    let train = data::mvtec_train(&dir, spec).unwrap();
    assert_eq!(train.images.len(), 762, "skipped: {:?}", train.skipped);
    assert!(train.skipped.is_empty());
    assert!(train.images.iter().all(|im| im.len() == 64 * 64));

    let test = data::mvtec_test(&dir, spec).unwrap();
    assert_eq!(test.items.len(), 582, "skipped: {:?}", test.skipped);
    assert_eq!(
        test.defect_types(),
        vec!["blowhole", "break", "crack", "fray", "good", "uneven"]
    );
    assert_eq!(
        test.items.iter().filter(|i| i.defect == "good").count(),
        190
    );
    for item in test.items.iter().filter(|i| i.is_anomalous()) {
        let m = item
            .mask
            .as_ref()
            .unwrap_or_else(|| panic!("no mask for {}", item.path));
        assert_eq!(m.len(), 64 * 64);
        assert!(m.iter().all(|&v| v <= 1));
    }
    let with_defect_pixels = test
        .items
        .iter()
        .filter(|i| i.mask.as_ref().is_some_and(|m| m.contains(&1)))
        .count();
    // Tiny defects can vanish at 64 px under nearest-neighbour; most must survive.
    assert!(with_defect_pixels > 300, "{with_defect_pixels}");
}

#[test]
fn holdout_split_is_every_kth_image_and_covers_all() {
    use scoredd::data::holdout_split;
    assert_eq!(holdout_split(10, 0.1), ((0..9).collect(), vec![9]));
    let (train, held) = holdout_split(762, 0.1);
    assert_eq!(held.len(), 76);
    assert!(held.iter().all(|i| i % 10 == 9));
    let mut all: Vec<usize> = train.iter().chain(&held).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..762).collect::<Vec<_>>());
    assert_eq!(holdout_split(5, 0.0), ((0..5).collect(), vec![]));
    assert_eq!(holdout_split(1, 0.3), (vec![0], vec![]));
    assert_eq!(holdout_split(4, f64::NAN).1, Vec::<usize>::new());
    // A fraction over a half is capped: never more held out than trained on.
    let (t, h) = holdout_split(10, 0.9);
    assert!(h.len() <= t.len() && !h.is_empty());
}
