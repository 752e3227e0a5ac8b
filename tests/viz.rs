//! Anomaly-map pictures: the colour map against published inferno values, overlay
//! arithmetic, outlines, text (the embedded font), tile and gallery layout, and bad input.
//! `cargo test --release --test viz -- --ignored` also writes /tmp/viz_preview.png.

use image::{Rgb, RgbImage};
use scoredd::text;
use scoredd::viz::{
    colorbar, colormap, dimmed_gray, draw_outline, finite_range, gallery, image_to_rgb, luma,
    overlay, tile, upscale, Tile, ALPHA_MAX, CAPTION_TEXT, NAN_GREY, SMALL_TEXT, TITLE_TEXT,
};
use scoredd::Error;

fn near(a: [u8; 3], b: [u8; 3], tol: i32) -> bool {
    a.iter()
        .zip(&b)
        .all(|(&x, &y)| (x as i32 - y as i32).abs() <= tol)
}

#[test]
fn colormap_endpoints_and_clamping() {
    assert_eq!(colormap(0.0), [0, 0, 4]);
    assert_eq!(colormap(1.0), [252, 255, 164]);
    assert_eq!(colormap(-3.0), colormap(0.0));
    assert_eq!(colormap(7.0), colormap(1.0));
    assert_eq!(colormap(f32::INFINITY), colormap(1.0));
    assert_eq!(colormap(f32::NEG_INFINITY), colormap(0.0));
    assert_eq!(colormap(f32::NAN), NAN_GREY);
}

#[test]
fn colormap_matches_published_inferno() {
    // Rows i of matplotlib's _inferno_data (at v = i / 255), times 255.
    let published: [(usize, [f32; 3]); 6] = [
        (32, [0.129285, 0.047293, 0.290788]),
        (64, [0.341500, 0.062325, 0.429425]),
        (100, [0.565854, 0.143567, 0.408258]),
        (128, [0.735683, 0.215906, 0.330245]),
        (192, [0.978422, 0.557937, 0.034931]),
        (230, [0.964394, 0.843848, 0.273391]),
    ];
    for &(i, rgb) in &published {
        let want = rgb.map(|c| (c * 255.0).round() as u8);
        let got = colormap(i as f32 / 255.0);
        assert!(
            near(got, want, 2),
            "inferno[{i}]: got {got:?}, expected {want:?}"
        );
    }
}

#[test]
fn colormap_luminance_rises_monotonically() {
    let lum = |c: [u8; 3]| 0.2126 * c[0] as f32 + 0.7152 * c[1] as f32 + 0.0722 * c[2] as f32;
    // Fine steps: non-decreasing up to 8-bit rounding (at most ½ per channel).
    let mut prev = -1.0;
    for i in 0..=1000 {
        let v = i as f32 / 1000.0;
        let l = lum(colormap(v));
        assert!(l >= prev - 1.0, "luminance falls at v = {v}: {prev} → {l}");
        prev = prev.max(l);
    }
    // Coarse steps: strictly increasing.
    for k in 0..32 {
        let (a, b) = (k as f32 / 32.0, (k + 1) as f32 / 32.0);
        assert!(
            lum(colormap(b)) > lum(colormap(a)),
            "luminance not rising from {a} to {b}"
        );
    }
    assert!(lum(colormap(1.0)) - lum(colormap(0.0)) > 200.0);
}

#[test]
fn image_to_rgb_replicates_grey_and_keeps_colour() {
    let g = image_to_rgb(&[0.0, 0.5, 1.0, 2.0], 1, 2);
    assert_eq!(g.dimensions(), (2, 2));
    assert_eq!(g.get_pixel(1, 0).0, [128, 128, 128]);
    assert_eq!(g.get_pixel(0, 1).0, [255, 255, 255]);
    assert_eq!(g.get_pixel(1, 1).0, [255, 255, 255]); // clamped
                                                      // CHW: plane R, then G, then B.
    let c = image_to_rgb(&[1.0, 0.0, 0.0, 1.0, 0.0, f32::NAN], 3, 1);
    assert_eq!(c.dimensions(), (1, 1));
    assert_eq!(c.get_pixel(0, 0).0, [255, 0, 0]);
    let c = image_to_rgb(&[0.0, 1.0, 0.2], 3, 1);
    assert_eq!(c.get_pixel(0, 0).0, [0, 255, 51]);
    // Short data and odd channel counts do not panic.
    let s = image_to_rgb(&[1.0], 3, 4);
    assert_eq!(s.dimensions(), (4, 4));
    assert_eq!(s.get_pixel(3, 3).0, [0, 0, 0]);
    assert_eq!(image_to_rgb(&[], 0, 3).dimensions(), (3, 3));
}

#[test]
fn overlay_of_zero_map_is_the_dimmed_grey_image() {
    let mut img = RgbImage::from_pixel(4, 4, Rgb([100, 100, 100]));
    img.put_pixel(2, 1, Rgb([200, 50, 10]));
    let out = overlay(&img, &[0.0; 16], (0.0, 1.0)).unwrap();
    // luma(100, 100, 100) = 100, × 0.7 = 70; luma(200, 50, 10) = 90.29 → 90, × 0.7 = 63.
    assert_eq!(out.get_pixel(0, 0).0, [70, 70, 70]);
    assert_eq!(luma([200, 50, 10]), 90);
    assert_eq!(dimmed_gray([200, 50, 10]), 63);
    assert_eq!(out.get_pixel(2, 1).0, [63, 63, 63]);
    for (p, q) in out.pixels().zip(img.pixels()) {
        let g = dimmed_gray(q.0);
        assert_eq!(p.0, [g, g, g]);
    }
    // Below the range is the same as at its bottom.
    let below = overlay(&img, &[-5.0; 16], (0.0, 1.0)).unwrap();
    assert_eq!(below, out);
    // lo == hi: everything counts as zero.
    let flat = overlay(&img, &[3.0; 16], (3.0, 3.0)).unwrap();
    assert_eq!(flat, out);
}

#[test]
fn overlay_of_high_value_shows_the_colour_map() {
    let img = RgbImage::from_pixel(3, 1, Rgb([100, 100, 100]));
    let out = overlay(&img, &[10.0, 20.0, 15.0], (10.0, 20.0)).unwrap();
    let top = colormap(1.0);
    let hot = out.get_pixel(1, 0).0;
    let tol = ((1.0 - ALPHA_MAX) * 255.0).ceil() as i32 + 1;
    assert!(near(hot, top, tol), "{hot:?} vs colormap(1) = {top:?}");
    // Hotter pixels are more colourful (further from grey) than the middle one.
    let spread = |c: [u8; 3]| *c.iter().max().unwrap() as i32 - *c.iter().min().unwrap() as i32;
    assert!(spread(hot) > spread(out.get_pixel(2, 0).0));
    assert_eq!(out.get_pixel(0, 0).0, [70, 70, 70]);
}

#[test]
fn overlay_paints_non_finite_values_grey_and_rejects_wrong_lengths() {
    let img = RgbImage::from_pixel(2, 2, Rgb([10, 200, 30]));
    let out = overlay(
        &img,
        &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5],
        (0.0, 1.0),
    )
    .unwrap();
    for x in 0..2 {
        assert_eq!(out.get_pixel(x, 0).0, NAN_GREY);
    }
    assert_eq!(out.get_pixel(0, 1).0, NAN_GREY);
    // A NaN or infinite range counts as degenerate, not as an error.
    assert!(overlay(&img, &[0.5; 4], (f32::NAN, 1.0)).is_ok());
    assert!(overlay(&img, &[0.5; 4], (0.0, f32::INFINITY)).is_ok());
    for bad in [3usize, 5, 0] {
        match overlay(&img, &vec![0.0; bad], (0.0, 1.0)) {
            Err(Error::Invalid(msg)) => assert!(msg.contains("overlay"), "{msg}"),
            other => panic!("length {bad}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn finite_range_skips_non_finite_values() {
    let a = [1.0, f32::NAN, -2.0];
    let b = [f32::INFINITY, 5.0];
    assert_eq!(finite_range([&a[..], &b[..]]), (-2.0, 5.0));
    assert_eq!(finite_range([&[f32::NAN][..]]), (0.0, 0.0));
}

#[test]
fn outline_of_a_square_is_its_ring() {
    let mut mask = vec![0u8; 100];
    for y in 3..7 {
        for x in 2..6 {
            mask[y * 10 + x] = 1;
        }
    }
    let count = |mask: &[u8]| {
        let mut img = RgbImage::new(10, 10);
        draw_outline(&mut img, mask, [255, 0, 0]);
        let on: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == [255, 0, 0])
            .map(|(x, y, _)| (x, y))
            .collect();
        on
    };
    let on = count(&mask);
    assert_eq!(on.len(), 12);
    assert!(on
        .iter()
        .all(|&(x, y)| (2..6).contains(&x) && (3..7).contains(&y)));
    assert!(!on.contains(&(3, 4)) && !on.contains(&(4, 5))); // the inside stays
                                                             // 0/255 masks work the same.
    let m255: Vec<u8> = mask.iter().map(|&v| v * 255).collect();
    assert_eq!(count(&m255), on);
    // A full mask: its outline is the image border.
    assert_eq!(count(&[1u8; 100]).len(), 36);
    // The wrong length draws nothing.
    assert!(count(&[1u8; 99]).is_empty());
    assert!(count(&[]).is_empty());
}

#[test]
fn upscale_repeats_pixels() {
    let mut img = RgbImage::new(7, 5);
    img.put_pixel(6, 4, Rgb([9, 8, 7]));
    let up = upscale(&img, 3);
    assert_eq!(up.dimensions(), (21, 15));
    assert_eq!(up.get_pixel(18, 12).0, [9, 8, 7]);
    assert_eq!(up.get_pixel(20, 14).0, [9, 8, 7]);
    assert_eq!(up.get_pixel(17, 14).0, [0, 0, 0]);
    assert_eq!(upscale(&img, 0).dimensions(), (7, 5));
    assert_eq!(upscale(&RgbImage::new(0, 0), 4).dimensions(), (0, 0));
}

/// Pixels of `img` in the rectangle [x0, x1) × [y0, y1) darker than mid-grey.
fn dark_in(img: &RgbImage, (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> usize {
    img.enumerate_pixels()
        .filter(|(x, y, p)| (x0..x1).contains(x) && (y0..y1).contains(y) && luma(p.0) < 128)
        .count()
}

#[test]
fn text_measures_grow_with_the_text() {
    assert_eq!(text::measure("", 16.0), (0, 0));
    let (w1, h1) = text::measure("a", 16.0);
    let (w3, h3) = text::measure("abc", 16.0);
    assert!(w1 > 4 && w1 < 16 && w3 > 2 * w1, "{w1} {w3}");
    assert_eq!(h1, h3);
    assert_eq!(h1, text::line_height(16.0));
    // Twice the size: about twice the box.
    let (w, h) = text::measure("abc", 32.0);
    assert!(
        w.abs_diff(2 * w3) <= 2 && h.abs_diff(2 * h3) <= 2,
        "{w}×{h}"
    );
    // Lines: the widest one, and a line pitch more per line.
    let (wl, hl) = text::measure("ab\nlonger", 16.0);
    assert_eq!(wl, text::measure("longer", 16.0).0);
    assert!(hl > 2 * h1 && hl < 3 * h1, "{hl}");
    // Odd sizes are clamped, not errors.
    for size in [0.0, -3.0, f32::NAN, f32::INFINITY] {
        let (w, h) = text::measure("x", size);
        assert!(w <= 1000 && h <= 1200);
    }
}

#[test]
fn text_stays_in_its_box() {
    let sample = "Score 0.83 (crack_012) = +5% #/,: jpg";
    for size in [SMALL_TEXT, CAPTION_TEXT, TITLE_TEXT] {
        let mut img = RgbImage::new(500, 60);
        let (x, y) = (7, 5);
        text::draw(&mut img, x, y, sample, size, [255, 255, 255]);
        let (w, h) = text::measure(sample, size);
        let mut lit = 0;
        for (px, py, p) in img.enumerate_pixels() {
            if p.0 != [0, 0, 0] {
                lit += 1;
                let inside = px as i32 >= x
                    && (px as i32) < x + w as i32
                    && py as i32 >= y
                    && (py as i32) < y + h as i32;
                assert!(inside, "size {size}: pixel ({px}, {py}) outside the box");
            }
        }
        assert!(
            lit as f32 > 10.0 * size,
            "size {size}: only {lit} pixels drawn"
        );
    }
    // Every printable ASCII glyph except space draws something, and so do
    // letters beyond ASCII that the font has.
    for c in (33u8..=126).map(char::from).chain(['σ', 'é', '✓', '−']) {
        let mut img = RgbImage::new(20, 20);
        text::draw(&mut img, 0, 0, &c.to_string(), 16.0, [255, 255, 255]);
        assert!(
            img.pixels().any(|p| p.0 != [0, 0, 0]),
            "glyph {c:?} is blank"
        );
    }
    // Clipped text does not panic.
    let mut img = RgbImage::new(10, 10);
    text::draw(&mut img, -20, -3, "clipped σ text ✓", 20.0, [1, 2, 3]);
    text::draw(&mut img, 8, 8, "edge", 40.0, [1, 2, 3]);
    text::draw(&mut img, i32::MAX - 5, i32::MIN + 5, "far", 12.0, [1, 2, 3]);
}

#[test]
fn text_is_anti_aliased_and_blends_into_the_background() {
    let mut img = RgbImage::from_pixel(60, 30, Rgb([255, 255, 255]));
    text::draw(&mut img, 2, 2, "Ag", 24.0, [0, 0, 0]);
    let full = img.pixels().filter(|p| p.0 == [0, 0, 0]).count();
    let partial = img
        .pixels()
        .filter(|p| p.0 != [0, 0, 0] && p.0 != [255, 255, 255])
        .count();
    assert!(full > 20 && partial > 20, "{full} full, {partial} partial");
    // Greys only: each pixel is a blend of ink and paper.
    assert!(img.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
}

#[test]
fn colorbar_runs_from_hi_at_the_top_to_lo_at_the_bottom() {
    for h in [0u32, 10, 100, 300] {
        let bar = colorbar(h, (0.0, 1.0));
        assert!(bar.width() >= 60);
        assert_eq!(bar.height(), h.max(16));
    }
    let bar = colorbar(200, (0.25, 0.75));
    let col = 10; // inside the bar
    let top = (0..200).find(|&y| near(bar.get_pixel(col, y).0, colormap(1.0), 3));
    let bottom = (0..200)
        .rev()
        .find(|&y| near(bar.get_pixel(col, y).0, colormap(0.0), 3));
    let (top, bottom) = (top.expect("no hi colour"), bottom.expect("no lo colour"));
    assert!(top < 20 && bottom > 180, "top {top}, bottom {bottom}");
    // Labels: dark text right of the bar, near its top, middle and bottom.
    let w = bar.width();
    for (y0, y1) in [(0, 20), (90, 110), (180, 200)] {
        let ink = dark_in(&bar, (24, w), (y0, y1));
        assert!(ink > 15, "{ink} label pixels in rows {y0}..{y1}");
    }
    // Degenerate and odd ranges still draw.
    colorbar(50, (1.0, 1.0));
    colorbar(50, (f32::NAN, f32::INFINITY));
    colorbar(300, (-1e-7, 3e7));
}

fn synthetic(size: u32, cx: f32, cy: f32) -> (RgbImage, Vec<f32>, Vec<u8>) {
    let img = RgbImage::from_fn(size, size, |x, y| {
        let v = 90 + ((x * 7 + y * 3) % 40) as u8;
        Rgb([v, v + 10, v + 20])
    });
    let mut map = Vec::new();
    let mut mask = Vec::new();
    let s = size as f32;
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f32 - cx * s, y as f32 - cy * s);
            map.push((-(dx * dx + dy * dy) / (2.0 * (0.08 * s).powi(2))).exp());
            mask.push(u8::from(dx.abs() < 0.1 * s && dy.abs() < 0.1 * s));
        }
    }
    (img, map, mask)
}

#[test]
fn tile_and_gallery_sizes() {
    let (img, map, mask) = synthetic(16, 0.5, 0.5);
    let t2 = tile(
        &Tile {
            image: &img,
            map: &map,
            truth: Some(&mask),
            predicted: None,
            caption: "crack 012".into(),
        },
        (0.0, 1.0),
        64,
    )
    .unwrap();
    let t3 = tile(
        &Tile {
            image: &img,
            map: &map,
            truth: None,
            predicted: Some(&mask),
            caption: "crack 012".into(),
        },
        (0.0, 1.0),
        64,
    )
    .unwrap();
    let gap = t2.width() - 128;
    assert!(gap > 0 && gap < 20);
    assert_eq!(t3.width(), 3 * 64 + 2 * gap);
    let caption_h = text::line_height(CAPTION_TEXT);
    assert_eq!(t2.height(), 64 + gap / 2 + caption_h);
    // The caption is under the panels, not over them.
    assert!(dark_in(&t2, (0, t2.width()), (64 + gap / 2, t2.height())) > 30);
    assert_eq!(t2.height(), t3.height());
    // First panel is the input, upscaled 4×.
    assert_eq!(t2.get_pixel(5, 9).0, img.get_pixel(1, 2).0);
    // The ground-truth outline shows on the overlay panel.
    let x0 = 64 + gap;
    assert!((0..64).any(|y| (0..64).any(|x| t2.get_pixel(x0 + x, y).0 == [40, 255, 90])));
    // No caption: just the panels.
    let bare = tile(
        &Tile {
            image: &img,
            map: &map,
            truth: None,
            predicted: None,
            caption: String::new(),
        },
        (0.0, 1.0),
        32,
    )
    .unwrap();
    assert_eq!(bare.dimensions(), (64 + gap, 32));

    let tiles = vec![t2.clone(), t3.clone(), t2.clone(), t3.clone(), t2.clone()];
    let g = gallery(&tiles, 3, "bottle  AUROC 0.97", (0.0, 1.0));
    assert!(g.width() >= 3 * t3.width() + bar_width(), "{}", g.width());
    assert!(g.height() >= 2 * t3.height() + text::line_height(TITLE_TEXT));
    assert!(g.height() < 2 * t3.height() + 80, "{}", g.height());
    let one_col = gallery(&tiles, 0, "t", (0.0, 1.0));
    assert!(one_col.height() >= 5 * t3.height());
    let many = gallery(&tiles[..2], 10, "t", (0.0, 1.0));
    assert!(many.width() < 3 * t3.width() + 200);
    let empty = gallery(&[], 4, "nothing to show", (0.0, 1.0));
    assert!(empty.width() >= text::measure("nothing to show", TITLE_TEXT).0);
    assert!(empty.height() > 14 && empty.height() < 100);
    assert!(dark_in(&empty, (0, empty.width()), (0, empty.height())) > 50);
    gallery(&[], 0, "", (0.0, 0.0));
}

/// A 64 px gallery tile of a 16 px synthetic good image.
fn good_tile() -> RgbImage {
    let (img, map, _) = synthetic(16, 0.5, 0.5);
    tile(
        &Tile {
            image: &img,
            map: &map,
            truth: None,
            predicted: None,
            caption: "good 000".into(),
        },
        (0.0, 1.0),
        64,
    )
    .unwrap()
}

#[test]
fn gallery_title_is_drawn_where_it_says() {
    let t = good_tile();
    let title = "bottle AUROC";
    let g = gallery(&[t.clone(), t], 2, title, (0.0, 1.0));
    let (tw, th) = text::measure(title, TITLE_TEXT);
    let gap = 6;
    assert!(
        dark_in(&g, (gap, gap + tw), (gap, gap + th)) > 100,
        "no title ink"
    );
    // Nothing right of the title on its row: the tiles and the bar start below it.
    assert_eq!(dark_in(&g, (gap + tw + 2, g.width()), (0, gap + th)), 0);
}

/// A title wider than the tiles wraps at spaces to their width instead of
/// widening the gallery; wrapping changes only the breaking spaces.
#[test]
fn a_long_gallery_title_wraps_to_the_tiles_width() {
    let t = good_tile();
    let title = "Score-DD: mode score-dd, t {0.15,0.2}, r 1, taps down.2.block.0+up.1.block.1, smoothing sigma 4 px, image score from its own reading";
    let short = gallery(&[t.clone(), t.clone()], 2, "x", (0.0, 1.0));
    let long = gallery(&[t.clone(), t], 2, title, (0.0, 1.0));
    assert_eq!(long.width(), short.width());
    assert!(long.height() > short.height() + text::line_height(TITLE_TEXT));
    let wrapped = text::wrap(title, TITLE_TEXT, 200);
    assert!(wrapped.lines().count() >= 3, "{wrapped}");
    assert!(wrapped
        .lines()
        .all(|l| text::measure(l, TITLE_TEXT).0 <= 200 || !l.contains(' ')));
    assert_eq!(wrapped.replace('\n', " "), title);
    assert_eq!(text::wrap("a\nb c", TITLE_TEXT, 1000), "a\nb c");
    assert_eq!(text::wrap("", TITLE_TEXT, 10), "");
}

fn bar_width() -> u32 {
    colorbar(100, (0.0, 1.0)).width()
}

#[test]
fn tile_rejects_mismatched_lengths_and_survives_nan() {
    let (img, map, mask) = synthetic(8, 0.5, 0.5);
    let make = |map: &[f32], truth: Option<&[u8]>, predicted: Option<&[u8]>, size: u32| {
        tile(
            &Tile {
                image: &img,
                map,
                truth,
                predicted,
                caption: "x".into(),
            },
            (0.0, 1.0),
            size,
        )
    };
    assert!(matches!(
        make(&map[1..], None, None, 32),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        make(&map, Some(&mask[1..]), None, 32),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        make(&map, None, Some(&[1u8; 65]), 32),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(make(&map, None, None, 0), Err(Error::Invalid(_))));
    let nan = vec![f32::NAN; 64];
    let t = make(&nan, Some(&mask), Some(&mask), 16).unwrap();
    assert!(t.width() > 48);
    // A tile smaller than the image and a non-multiple size work too.
    assert!(make(&map, Some(&mask), None, 5).is_ok());
    assert!(make(&map, Some(&mask), None, 37).is_ok());
    // A caption too long for the normal size falls back to the small one and clips.
    let long = "a very long caption that will never fit in such a small tile at all";
    let t = tile(
        &Tile {
            image: &img,
            map: &map,
            truth: None,
            predicted: None,
            caption: long.into(),
        },
        (0.0, 1.0),
        16,
    )
    .unwrap();
    // Panels plus one small line.
    assert_eq!(t.height(), 16 + 3 + text::line_height(SMALL_TEXT));
}

/// Renders a sample gallery to `<temp dir>/viz_preview.png` (and its small
/// print, magnified, to `viz_text.png`) for a human to look at; checks both
/// read back as drawn.
#[test]
fn preview_gallery() {
    let size = 64;
    let cases = [
        ("crack 012", 0.3, 0.4, true),
        ("good 003", 0.5, 0.5, false),
        ("hole 007", 0.7, 0.65, true),
        ("scratch 021", 0.45, 0.2, true),
    ];
    let mut tiles = Vec::new();
    let mut stored = Vec::new();
    for &(name, cx, cy, defect) in &cases {
        let (img, mut map, mask) = synthetic(size, cx, cy);
        if !defect {
            map.iter_mut().for_each(|v| *v *= 0.2);
        }
        // Real anomaly maps are noisy: add some texture.
        for (i, v) in map.iter_mut().enumerate() {
            let h = (i as u32).wrapping_mul(2654435761) >> 16;
            *v += 0.12 * (h % 1000) as f32 / 1000.0;
        }
        if name.starts_with("hole") {
            // A few missing values, to see how NaN looks.
            map[5 * size as usize + 5..5 * size as usize + 12].fill(f32::NAN);
        }
        stored.push((name, img, map, mask, defect));
    }
    let range = finite_range(stored.iter().map(|s| &s.2[..]));
    for (name, img, map, mask, defect) in &stored {
        let score = map.iter().cloned().fold(0.0f32, f32::max);
        let predicted: Vec<u8> = map.iter().map(|&v| u8::from(v > 0.5)).collect();
        let caption = format!(
            "{name}  score {score:.2}  {}",
            if score > 0.5 { "DEFECT" } else { "ok" }
        );
        let t = Tile {
            image: img,
            map,
            truth: defect.then_some(&mask[..]),
            predicted: Some(&predicted),
            caption,
        };
        tiles.push(tile(&t, range, 128).unwrap());
    }
    let g = gallery(
        &tiles,
        2,
        "scoredd eval - synthetic\ninput | anomaly map + truth | predicted",
        range,
    );
    let preview = std::env::temp_dir().join("viz_preview.png");
    scoredd::plot::save_png(&g, &preview).unwrap();
    assert_eq!(image::open(&preview).unwrap().to_rgb8(), g);
    // Small print, magnified: the small text size and a short colour bar.
    let mut small = RgbImage::from_pixel(260, 70, Rgb([255, 255, 255]));
    let lines = [
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "abcdefghijklmnopqrstuvwxyz",
        "0123456789 .,:-_/%()=+#",
        "jpg qy: score 0.83 (12%)",
    ];
    for (i, l) in lines.iter().enumerate() {
        text::draw(&mut small, 2, 2 + 16 * i as i32, l, SMALL_TEXT, [0, 0, 0]);
    }
    let bar = colorbar(70, (-0.0123, 0.456));
    image::imageops::replace(&mut small, &bar, 260 - bar.width() as i64, 0);
    let text_png = std::env::temp_dir().join("viz_text.png");
    let big = upscale(&small, 3);
    scoredd::plot::save_png(&big, &text_png).unwrap();
    assert_eq!(image::open(&text_png).unwrap().to_rgb8(), big);
    assert_eq!((big.width(), big.height()), (780, 210));
}
