//! Synthetic defects with exact masks, pasted onto held-out normal images so
//! the automatic search can score settings without any real defect.
//!
//! The mix matters: a check that every setting passes cannot tell settings
//! apart, and real defects are often tiny (a few pixels), long and thin
//! (cracks), or large and faint (stains, uneven regions). So besides the
//! classic CutPaste patch, scratch and blob, the mix has specks of a few
//! pixels, one-pixel cracks with a kink, and large low-contrast stains.
//! Real anomalies are also structural — a part missing, extra material, a
//! part bent out of place — and a check made only of local marks favours
//! settings that see local marks (the smallest t, the map's maximum) over
//! ones that see wrong shapes. So there are also kinds that erase a region
//! of the object to the background, draw a thick stroke in the object's own
//! tone, or warp a region ([`STRUCTURAL_KINDS`]; measured, and not in the
//! default mix: see [`DEFECT_KINDS`]).

use crate::rng::RngStream;

/// Kinds of synthetic defect pasted onto normal images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefectKind {
    /// A rectangle copied from elsewhere in the image (flipped), CutPaste-style.
    CutPaste,
    /// A thin bright or dark line segment.
    Scratch,
    /// A filled ellipse, darker or brighter than its surroundings.
    Blob,
    /// A dot of 1–3 px radius: the smallest defect that should still be found.
    Speck,
    /// A one-pixel-wide crack of two segments with a kink, moderate contrast.
    Crack,
    /// A large faint ellipse (10–20 % of the side, a small brightness shift).
    Stain,
    /// A missing part: a large ellipse over the object (centred on a pixel
    /// far from the background tone) set to the background tone.
    Erase,
    /// Extra material: a thick stroke of two segments in the object's own
    /// tone (the image's extreme away from its background tone).
    Stroke,
    /// A deformation: a disc around a pixel of the object displaced
    /// smoothly (a shift fading to zero at its rim), resampled bilinearly.
    Warp,
    /// The whole image deformed by a smooth, low-frequency displacement
    /// field (a few sine waves of about one cycle per side, 15–30 % of the
    /// side in amplitude): strokes and texture stay locally natural, the
    /// overall shape changes — a stand-in for the wrong object or class.
    Morph,
}

/// Every kind, in the order [`with_synthetic_defects`] pastes them.
///
/// The structural kinds ([`STRUCTURAL_KINDS`]) are not in it: on one-class
/// MNIST (tiny models, 1 minute of training) adding them made the search
/// reject the normal profile, which is what finds other digits (image AUROC
/// 0.65 instead of 0.87 on digit 0): they sit on the object, where the
/// profile divides by the normals' large distances, and a model finds them
/// at the smallest t by their hard edges alone. They stay available through
/// [`super::SelectOptions::kinds`].
pub const DEFECT_KINDS: [DefectKind; 6] = [
    DefectKind::CutPaste,
    DefectKind::Scratch,
    DefectKind::Blob,
    DefectKind::Speck,
    DefectKind::Crack,
    DefectKind::Stain,
];

/// The kinds that stand for missing, extra or displaced structure.
pub const STRUCTURAL_KINDS: [DefectKind; 3] =
    [DefectKind::Erase, DefectKind::Stroke, DefectKind::Warp];

/// The anomalies of the semantic objective ([`super::Objective::Semantic`]).
///
/// Why: on one-class MNIST (`tiny`, VP, 1 minute of training per digit) the
/// local defect mix led the search to the smallest t and the shallowest
/// decoder taps, where other digits score like the normal one (image AUROC
/// 0.61 on digit 0, 0.39 on digit 8), while settings of the same grid —
/// deep taps (`down.1.block.0`, `mid`), t 0.15–0.4, the mean of the map's
/// top 20 % — reach 0.98 and 0.88 on the real test split
/// (`examples/oracle_probe.rs`). A local mark is found best at the smallest
/// t; a wrong overall shape is not.
pub const SEMANTIC_KINDS: [DefectKind; 1] = [DefectKind::Morph];

/// A CHW image being marked, with its mask.
struct Canvas<'a> {
    out: &'a mut [f32],
    mask: &'a mut [u8],
    channels: usize,
    size: usize,
}

impl Canvas<'_> {
    /// Marks pixel (x, y) and sets it to `paint(old value)` in every channel.
    fn mark(&mut self, x: usize, y: usize, paint: impl Fn(f32) -> f32) {
        let hw = self.size * self.size;
        self.mask[y * self.size + x] = 1;
        for c in 0..self.channels {
            let v = &mut self.out[c * hw + y * self.size + x];
            *v = paint(*v).clamp(0.0, 1.0);
        }
    }

    /// Pixels whose centre is within `half` of the segment (x0, y0)–(x1, y1).
    fn segment(
        &mut self,
        (x0, y0): (f64, f64),
        (x1, y1): (f64, f64),
        half: f64,
        paint: impl Fn(f32) -> f32,
    ) {
        let (vx, vy) = (x1 - x0, y1 - y0);
        let len2 = (vx * vx + vy * vy).max(1e-12);
        for y in 0..self.size {
            for x in 0..self.size {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let t = (((px - x0) * vx + (py - y0) * vy) / len2).clamp(0.0, 1.0);
                let (qx, qy) = (x0 + t * vx - px, y0 + t * vy - py);
                if (qx * qx + qy * qy).sqrt() <= half {
                    self.mark(x, y, &paint);
                }
            }
        }
    }

    /// Pixels whose centre is inside the ellipse (centre, radii, angle).
    fn ellipse(
        &mut self,
        (cx, cy): (f64, f64),
        (ra, rb): (f64, f64),
        angle: f64,
        paint: impl Fn(f32) -> f32,
    ) {
        let (ca, sa) = (angle.cos(), angle.sin());
        for y in 0..self.size {
            for x in 0..self.size {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                let (a, b) = ((dx * ca + dy * sa) / ra, (-dx * sa + dy * ca) / rb);
                if a * a + b * b <= 1.0 {
                    self.mark(x, y, &paint);
                }
            }
        }
    }
}

/// Pastes one synthetic defect onto `image` (CHW, `channels × size × size`,
/// values in [0, 1]); returns the defective image and its mask (1 = changed).
/// Deterministic in `rng`.
pub fn synthetic_defect(
    image: &[f32],
    channels: usize,
    size: usize,
    kind: DefectKind,
    rng: RngStream,
) -> (Vec<f32>, Vec<u8>) {
    let mut out = image.to_vec();
    let mut mask = vec![0u8; size * size];
    let u = |i: u64| rng.uniform(i) as f64;
    // Mean brightness decides whether a mark is dark or bright, so it shows.
    let mean: f64 = image.iter().map(|&v| v as f64).sum::<f64>() / image.len().max(1) as f64;
    let sign = if mean < 0.5 { 1.0f32 } else { -1.0 };
    let mut canvas = Canvas {
        out: &mut out,
        mask: &mut mask,
        channels,
        size,
    };
    let s = size as f64;
    match kind {
        DefectKind::CutPaste => cut_paste(image, &mut canvas, &u),
        DefectKind::Scratch => {
            let (x0, y0) = (u(0) * s, u(1) * s);
            let (angle, len) = (u(2) * std::f64::consts::PI, (0.3 + 0.4 * u(3)) * s);
            let end = (x0 + len * angle.cos(), y0 + len * angle.sin());
            let value = if sign > 0.0 { 0.9 } else { 0.1 };
            canvas.segment((x0, y0), end, (0.02 * s).max(0.6), |_| value);
        }
        DefectKind::Blob => {
            let radii = ((0.06 + 0.1 * u(2)) * s, (0.06 + 0.1 * u(3)) * s);
            let shift = (0.25 + 0.2 * u(5)) as f32 * sign;
            canvas.ellipse(
                (u(0) * s, u(1) * s),
                radii,
                u(4) * std::f64::consts::PI,
                |v| v + shift,
            );
        }
        DefectKind::Speck => {
            let r = 1.0 + 2.0 * u(2);
            let shift = (0.3 + 0.3 * u(3)) as f32 * sign;
            let centre = (r + u(0) * (s - 2.0 * r), r + u(1) * (s - 2.0 * r));
            canvas.ellipse(centre, (r, r), 0.0, |v| v + shift);
        }
        DefectKind::Crack => {
            // Kept inside the image (ends clamped), so it is long wherever it starts.
            let inside = |(x, y): (f64, f64)| (x.clamp(1.0, s - 1.0), y.clamp(1.0, s - 1.0));
            let p0 = ((0.2 + 0.6 * u(0)) * s, (0.2 + 0.6 * u(1)) * s);
            let a0 = u(2) * std::f64::consts::TAU;
            let (l0, l1) = ((0.2 + 0.2 * u(3)) * s, (0.15 + 0.2 * u(4)) * s);
            let p1 = inside((p0.0 + l0 * a0.cos(), p0.1 + l0 * a0.sin()));
            let a1 = a0 + (u(5) - 0.5) * 1.2;
            let p2 = inside((p1.0 + l1 * a1.cos(), p1.1 + l1 * a1.sin()));
            let shift = (0.2 + 0.2 * u(6)) as f32 * sign;
            canvas.segment(p0, p1, 0.5, |v| v + shift);
            canvas.segment(p1, p2, 0.5, |v| v + shift);
        }
        DefectKind::Stain => {
            let radii = ((0.1 + 0.1 * u(2)) * s, (0.1 + 0.1 * u(3)) * s);
            let shift = (0.06 + 0.06 * u(5)) as f32 * sign;
            canvas.ellipse(
                (u(0) * s, u(1) * s),
                radii,
                u(4) * std::f64::consts::PI,
                |v| v + shift,
            );
        }
        DefectKind::Erase => {
            let tones = Tones::of(image, channels, size);
            let centre = tones.object_pixel(u(0));
            let r = |k| (0.12 + 0.12 * u(k)) * s;
            let (ra, rb) = (r(1), r(2));
            let angle = u(3) * std::f64::consts::PI;
            let before = canvas.out.to_vec();
            canvas.ellipse(centre, (ra, rb), angle, |v| v);
            paint_mask(&mut canvas, &tones.background);
            keep_changed(&mut canvas, &before);
        }
        DefectKind::Stroke => {
            let tones = Tones::of(image, channels, size);
            let p0 = tones.object_pixel(u(0));
            let a0 = u(1) * std::f64::consts::TAU;
            let (l0, l1) = ((0.2 + 0.2 * u(2)) * s, (0.1 + 0.2 * u(3)) * s);
            let inside = |(x, y): (f64, f64)| (x.clamp(1.0, s - 1.0), y.clamp(1.0, s - 1.0));
            let p1 = inside((p0.0 + l0 * a0.cos(), p0.1 + l0 * a0.sin()));
            let a1 = a0 + (u(4) - 0.5) * 2.0;
            let p2 = inside((p1.0 + l1 * a1.cos(), p1.1 + l1 * a1.sin()));
            let half = ((0.03 + 0.03 * u(5)) * s).max(1.0);
            let before = canvas.out.to_vec();
            canvas.segment(p0, p1, half, |v| v);
            canvas.segment(p1, p2, half, |v| v);
            paint_mask(&mut canvas, &tones.ink);
            keep_changed(&mut canvas, &before);
        }
        DefectKind::Warp => warp(image, &mut canvas, &u),
        DefectKind::Morph => morph(image, &mut canvas, &u),
    }
    (out, mask)
}

/// An image's background tone (per channel, the median) and its object's
/// tone (per channel, the 2nd or 98th percentile, whichever lies farther
/// from the median), and where the object is.
struct Tones {
    background: Vec<f32>,
    ink: Vec<f32>,
    /// Pixels whose distance from the background tone is in the top 10 %
    /// (row-major indices; the whole image when it is flat).
    object: Vec<usize>,
    size: usize,
}

impl Tones {
    fn of(image: &[f32], channels: usize, size: usize) -> Tones {
        let hw = size * size;
        let mut background = Vec::with_capacity(channels);
        let mut ink = Vec::with_capacity(channels);
        for c in 0..channels {
            let mut v = image[c * hw..(c + 1) * hw].to_vec();
            v.sort_by(f32::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            let (med, lo, hi) = (at(0.5), at(0.02), at(0.98));
            background.push(med);
            ink.push(if hi - med >= med - lo { hi } else { lo });
        }
        let far: Vec<f32> = (0..hw)
            .map(|p| {
                (0..channels)
                    .map(|c| (image[c * hw + p] - background[c]).abs())
                    .sum()
            })
            .collect();
        let mut sorted = far.clone();
        sorted.sort_by(f32::total_cmp);
        let cut = sorted[(hw - 1) * 9 / 10];
        let mut object: Vec<usize> = (0..hw).filter(|&p| far[p] >= cut && far[p] > 0.0).collect();
        if object.is_empty() {
            object = (0..hw).collect();
        }
        Tones {
            background,
            ink,
            object,
            size,
        }
    }

    /// The centre of one object pixel, picked by `u` in [0, 1).
    fn object_pixel(&self, u: f64) -> (f64, f64) {
        let k = ((u * self.object.len() as f64) as usize).min(self.object.len() - 1);
        let p = self.object[k];
        ((p % self.size) as f64 + 0.5, (p / self.size) as f64 + 0.5)
    }
}

/// Sets every marked pixel to `tone` (one value per channel).
fn paint_mask(canvas: &mut Canvas, tone: &[f32]) {
    let hw = canvas.size * canvas.size;
    for p in (0..hw).filter(|&p| canvas.mask[p] != 0) {
        for (c, &v) in tone.iter().enumerate() {
            canvas.out[c * hw + p] = v;
        }
    }
}

/// Unmarks the pixels of the mask that `before` → now changed by less than
/// 0.02 in every channel, and puts their `before` values back, so the image
/// changes exactly inside its mask; when that would leave none, keeps the
/// mask.
fn keep_changed(canvas: &mut Canvas, before: &[f32]) {
    let hw = canvas.size * canvas.size;
    let changed = |p: usize| {
        (0..canvas.channels).any(|c| (canvas.out[c * hw + p] - before[c * hw + p]).abs() >= 0.02)
    };
    let keep: Vec<bool> = (0..hw).map(|p| canvas.mask[p] == 0 || changed(p)).collect();
    if (0..hw).any(|p| canvas.mask[p] != 0 && keep[p]) {
        for p in 0..hw {
            if !keep[p] {
                canvas.mask[p] = 0;
                for c in 0..canvas.channels {
                    canvas.out[c * hw + p] = before[c * hw + p];
                }
            }
        }
    }
}

/// A disc of radius 15–30 % of the side around an object pixel, displaced
/// by up to half its radius in a random direction (weight (1 − r²/R²)², so
/// it fades to nothing at the rim), resampled bilinearly; the mask is the
/// pixels that changed.
fn warp(image: &[f32], canvas: &mut Canvas, u: &dyn Fn(u64) -> f64) {
    let (size, channels) = (canvas.size, canvas.channels);
    let s = size as f64;
    let tones = Tones::of(image, channels, size);
    let (cx, cy) = tones.object_pixel(u(0));
    let radius = (0.15 + 0.15 * u(1)) * s;
    let angle = u(2) * std::f64::consts::TAU;
    let amp = (0.35 + 0.15 * u(3)) * radius;
    let (dx, dy) = (amp * angle.cos(), amp * angle.sin());
    let hw = size * size;
    let sample = |c: usize, x: f64, y: f64| bilinear_at(image, size, c, x, y);
    let before = canvas.out.to_vec();
    for y in 0..size {
        for x in 0..size {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let r2 = ((px - cx).powi(2) + (py - cy).powi(2)) / (radius * radius);
            if r2 >= 1.0 {
                continue;
            }
            let w = (1.0 - r2).powi(2);
            canvas.mask[y * size + x] = 1;
            for c in 0..channels {
                canvas.out[c * hw + y * size + x] =
                    sample(c, px - w * dx, py - w * dy).clamp(0.0, 1.0);
            }
        }
    }
    keep_changed(canvas, &before);
}

/// `image` (channel c) at the continuous position (x, y), pixel centres at
/// half-integers, bilinear with the border clamped.
fn bilinear_at(image: &[f32], size: usize, c: usize, x: f64, y: f64) -> f32 {
    let s = size as f64;
    let hw = size * size;
    let x = (x - 0.5).clamp(0.0, s - 1.0);
    let y = (y - 0.5).clamp(0.0, s - 1.0);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(size - 1), (y0 + 1).min(size - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let at = |xx: usize, yy: usize| image[c * hw + yy * size + xx];
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The whole image resampled through a smooth displacement field: per axis
/// the sum of three plane waves of 0.5–1.5 cycles per side in random
/// directions and phases, scaled so the largest shift is 15–30 % of the side.
/// The mask is the pixels that changed.
fn morph(image: &[f32], canvas: &mut Canvas, u: &dyn Fn(u64) -> f64) {
    let (size, channels) = (canvas.size, canvas.channels);
    let s = size as f64;
    let tau = std::f64::consts::TAU;
    // (kx, ky, phase) of each wave, per axis.
    let waves: Vec<[(f64, f64, f64); 3]> = (0..2u64)
        .map(|axis| {
            std::array::from_fn(|k| {
                let i = 10 + 10 * axis + 3 * k as u64;
                let (cycles, dir) = (0.5 + u(i), u(i + 1) * tau);
                let f = cycles * tau / s;
                (f * dir.cos(), f * dir.sin(), u(i + 2) * tau)
            })
        })
        .collect();
    let field = |axis: usize, x: f64, y: f64| -> f64 {
        waves[axis]
            .iter()
            .map(|&(kx, ky, ph)| (kx * x + ky * y + ph).sin())
            .sum::<f64>()
    };
    // Pixel centre and unscaled displacement, each evaluated once.
    let points: Vec<(f64, f64, f64, f64)> = (0..size * size)
        .map(|p| {
            let (x, y) = ((p % size) as f64 + 0.5, (p / size) as f64 + 0.5);
            (x, y, field(0, x, y), field(1, x, y))
        })
        .collect();
    let peak = points
        .iter()
        .map(|&(_, _, dx, dy)| dx.hypot(dy))
        .fold(1e-9, f64::max);
    let scale = (0.15 + 0.15 * u(0)) * s / peak;
    let before = canvas.out.to_vec();
    let hw = size * size;
    for (p, &(x, y, dx, dy)) in points.iter().enumerate() {
        let (sx, sy) = (x + scale * dx, y + scale * dy);
        canvas.mask[p] = 1;
        for c in 0..channels {
            canvas.out[c * hw + p] = bilinear_at(image, size, c, sx, sy).clamp(0.0, 1.0);
        }
    }
    keep_changed(canvas, &before);
}

/// `image` moved by a random shift of 0.25–0.75 px on each axis, resampled
/// as [`morph`] resamples: the same blur, no change of shape.
fn shifted(image: &[f32], channels: usize, size: usize, rng: RngStream) -> Vec<f32> {
    let (dx, dy) = (
        0.25 + 0.5 * rng.uniform(0) as f64,
        0.25 + 0.5 * rng.uniform(1) as f64,
    );
    let hw = size * size;
    let mut out = vec![0f32; image.len()];
    for c in 0..channels {
        for p in 0..hw {
            let (x, y) = ((p % size) as f64 + 0.5, (p / size) as f64 + 0.5);
            out[c * hw + p] = bilinear_at(image, size, c, x + dx, y + dy);
        }
    }
    out
}

/// A rectangle copied (flipped both ways, brightness changed) from one place
/// of `image` to another: a misplaced piece.
fn cut_paste(image: &[f32], canvas: &mut Canvas, u: &dyn Fn(u64) -> f64) {
    let size = canvas.size;
    let s = size as f64;
    let pw = (((0.12 + 0.18 * u(0)) * s).max(2.0) as usize).min(size - 1);
    let ph = (((0.12 + 0.18 * u(1)) * s).max(2.0) as usize).min(size - 1);
    let sx = (u(2) * (size - pw) as f64) as usize;
    let sy = (u(3) * (size - ph) as f64) as usize;
    let dx = (u(4) * (size - pw) as f64) as usize;
    let dy = (u(5) * (size - ph) as f64) as usize;
    let gain = 0.8 + 0.4 * u(6) as f32;
    let hw = size * size;
    for c in 0..canvas.channels {
        for y in 0..ph {
            for x in 0..pw {
                let v = image[c * hw + (sy + ph - 1 - y) * size + (sx + pw - 1 - x)];
                canvas.out[c * hw + (dy + y) * size + dx + x] = (v * gain).clamp(0.0, 1.0);
            }
        }
    }
    for y in 0..ph {
        for x in 0..pw {
            canvas.mask[(dy + y) * size + dx + x] = 1;
        }
    }
}

/// The normal images followed by one synthetic defect pasted onto each
/// (kinds of [`DEFECT_KINDS`] in turn), with the defect masks (empty for the
/// normals).
pub fn with_synthetic_defects(
    normals: &[Vec<f32>],
    channels: usize,
    size: usize,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<Vec<u8>>) {
    with_defect_kinds(normals, channels, size, seed, &DEFECT_KINDS)
}

/// [`with_synthetic_defects`] with the kinds `kinds` in turn (all of
/// [`DEFECT_KINDS`] when empty).
pub fn with_defect_kinds(
    normals: &[Vec<f32>],
    channels: usize,
    size: usize,
    seed: u64,
    kinds: &[DefectKind],
) -> (Vec<Vec<f32>>, Vec<Vec<u8>>) {
    with_defects_per_normal(normals, channels, size, seed, kinds, 1)
}

/// [`with_defect_kinds`] with `per_normal` defective copies of each normal
/// (all of the first round, then the second, …; the first round is what
/// [`with_defect_kinds`] makes): more positives for an AUROC that one
/// defect per normal leaves noisy.
pub fn with_defects_per_normal(
    normals: &[Vec<f32>],
    channels: usize,
    size: usize,
    seed: u64,
    kinds: &[DefectKind],
    per_normal: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<u8>>) {
    let kinds = if kinds.is_empty() {
        &DEFECT_KINDS[..]
    } else {
        kinds
    };
    let root = RngStream::new(seed, 0x5e1ec7);
    // A morph is resampled, which blurs a little: the normals get the same
    // resampling (a rigid sub-pixel shift) so blur is no cue to the search.
    let mut images: Vec<Vec<f32>> = match kinds.contains(&DefectKind::Morph) {
        true => normals
            .iter()
            .enumerate()
            .map(|(i, n)| shifted(n, channels, size, root.derive(1 << 40 | i as u64)))
            .collect(),
        false => normals.to_vec(),
    };
    let mut masks: Vec<Vec<u8>> = vec![vec![0u8; size * size]; normals.len()];
    for j in 0..normals.len() * per_normal.max(1) {
        let n = &normals[j % normals.len()];
        let kind = kinds[j % kinds.len()];
        let (img, mask) = synthetic_defect(n, channels, size, kind, root.derive(j as u64));
        images.push(img);
        masks.push(mask);
    }
    (images, masks)
}
