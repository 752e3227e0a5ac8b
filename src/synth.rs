//! A reproducible synthetic data set of industrial textures with defects, in
//! the MVTec AD layout — the built-in data of the one-command demo and of the
//! end-to-end CI test, where a tiny 32 px score net trains for minutes on two
//! CPU cores. So the normal textures are regular and low-frequency (they must
//! survive resizing to 32 px and be learnable fast), and the defects are large
//! and change the luminance strongly (the CI model sees grayscale).
//!
//! # Layout
//!
//! For each category `C` ([`CATEGORIES`]):
//!
//! ```text
//! root/C/train/good/000.png …            defect-free
//! root/C/test/good/000.png …             defect-free
//! root/C/test/<defect>/000.png …         one folder per kind in DEFECTS
//! root/C/ground_truth/<defect>/000_mask.png   8-bit gray, 255 = defect
//! ```
//!
//! Images are 8-bit RGB PNGs (mildly tinted; defects show in luminance), masks
//! 8-bit gray of the same size. Every file is written to a temp name in its
//! folder and renamed, so an interrupted run never leaves half a PNG.
//!
//! # Masks are exact
//!
//! An image with a defect is rendered as the defect-free image plus the defect:
//! both use the same texture parameters and the same pixel noise, and the defect
//! only touches the pixels of its region. So outside the mask a defect image is
//! byte-identical to the defect-free rendering of the same stream ([`render`]
//! with `None`), and the mask is exactly the region the defect was applied to.
//! (Inside, a pixel can coincide with the clean one by chance, as in a cut-paste
//! patch crossing the same stripe; the region is still the defect.)
//!
//! # Randomness
//!
//! Every image is a pure function of `(seed, category, split, index)`: its
//! stream is [`image_stream`], derived from `RngStream::new(seed, SYNTH_STREAM)`
//! by the *names* of the category and defect (so generating a subset of
//! categories gives the same files). The arithmetic is plain `f32` (`+ − × ÷`,
//! `sqrt`, `floor`) with sines from the crate's Philox sin/cos polynomial, no
//! platform `libm`, so the bytes are the same on every machine.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, GrayImage, ImageEncoder, RgbImage};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng::{sincos_2pi, RngStream};

/// Stream id of the synthetic data's randomness.
pub const SYNTH_STREAM: u64 = 0x0000_5E7D_0000_0001;

/// Texture families, easiest first (the first is the demo's default):
/// - `stripes`: corrugated / brushed sheet, parallel soft stripes;
/// - `weave`: plain-woven fabric, threads over and under in a checkerboard;
/// - `dots`: perforated sheet, a hexagonal lattice of round holes;
/// - `grain`: wood, gently curved growth rings.
pub const CATEGORIES: &[&str] = &["stripes", "weave", "dots", "grain"];

/// Defect kinds:
/// - `scratch`: a slightly curved bright or dark line, ≥ 1/16 of the side wide;
/// - `spot`: an irregular filled blob (paint, burn), dark or bright, hiding the texture;
/// - `cut`: cut-paste, a square patch of the texture rotated and magnified;
/// - `stain`: an irregular region darkened or bleached, texture still showing, with a tide line.
pub const DEFECTS: &[&str] = &["scratch", "spot", "cut", "stain"];

/// Smallest generated side: below it defects and textures are a few pixels.
pub const MIN_SIZE: u32 = 16;
/// Largest generated side (memory and time stay small).
pub const MAX_SIZE: u32 = 2048;

/// Pixel noise, standard deviation in luminance (mild sensor noise).
const NOISE_SIGMA: f32 = 0.012;

/// What to generate. Counts are per category (defect images: per kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthConfig {
    /// Everything is a function of this seed (and the names/indices).
    pub seed: u64,
    /// Generated image side in pixels; textures scale with it (same look at any size).
    pub size: u32,
    /// `train/good` images per category.
    pub train: usize,
    /// `test/good` images per category.
    pub test_good: usize,
    /// Test images per defect kind per category.
    pub test_per_defect: usize,
    /// Which of [`CATEGORIES`] to write.
    pub categories: Vec<String>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            size: 64,
            train: 160,
            test_good: 20,
            test_per_defect: 10,
            categories: CATEGORIES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl SynthConfig {
    /// Errors unless `MIN_SIZE ≤ size ≤ MAX_SIZE`, every count is ≥ 1 and the
    /// categories are a non-empty list of distinct names from [`CATEGORIES`].
    pub fn validate(&self) -> Result<()> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(Error::Invalid(format!(
                "synthetic image size must be in {MIN_SIZE}..={MAX_SIZE}, got {}",
                self.size
            )));
        }
        for (what, n) in [
            ("train", self.train),
            ("test_good", self.test_good),
            ("test_per_defect", self.test_per_defect),
        ] {
            if n == 0 {
                return Err(Error::Invalid(format!(
                    "synthetic data: {what} must be at least 1"
                )));
            }
        }
        if self.categories.is_empty() {
            return Err(Error::Invalid(format!(
                "synthetic data: no categories given (valid: {})",
                CATEGORIES.join(", ")
            )));
        }
        let mut seen = HashSet::new();
        for c in &self.categories {
            category_kind(c)?;
            if !seen.insert(c.as_str()) {
                return Err(Error::Invalid(format!(
                    "synthetic data: category {c:?} is listed twice"
                )));
            }
        }
        Ok(())
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthSummary {
    pub root: PathBuf,
    pub categories: Vec<String>,
    /// Image files written (train and test; masks not counted).
    pub images_written: usize,
}

/// Which split an image belongs to (part of its random stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split<'a> {
    Train,
    TestGood,
    /// A test image with this defect (one of [`DEFECTS`]).
    TestDefect(&'a str),
}

/// FNV-1a, to key streams by name (stable across versions and machines).
fn name_tag(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The stream of one image: `RngStream::new(seed, SYNTH_STREAM)` derived by
/// the category name, the split (0 train, 1 test/good, 2 then the defect
/// name) and the index. [`generate`] writes `render(category, defect, size,
/// image_stream(..))` for every file.
pub fn image_stream(seed: u64, category: &str, split: Split, index: usize) -> RngStream {
    let cat = RngStream::new(seed, SYNTH_STREAM).derive(name_tag(category));
    let split = match split {
        Split::Train => cat.derive(0),
        Split::TestGood => cat.derive(1),
        Split::TestDefect(d) => cat.derive(2).derive(name_tag(d)),
    };
    split.derive(index as u64)
}

// ---------------------------------------------------------------------------
// Deterministic maths: only IEEE-exact operations and the crate's sin/cos.

/// sin(2πt), cos(2πt) for any finite t.
fn sc(t: f32) -> (f32, f32) {
    sincos_2pi(t - t.floor())
}

fn sin_t(t: f32) -> f32 {
    sc(t).0
}

fn cos_t(t: f32) -> f32 {
    sc(t).1
}

fn mix(a: f32, b: f32, w: f32) -> f32 {
    a + (b - a) * w
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// `(lo, hi)` at uniform `u`.
fn lerp_u(u: f32, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * u
}

/// A tint scaled to Rec. 709 luminance 1 (the weights `image` uses for gray),
/// so tinting never moves the luminance the model sees.
fn unit_tint(r: f32, g: f32, b: f32) -> [f32; 3] {
    let l = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    [r / l, g / l, b / l]
}

// ---------------------------------------------------------------------------
// Textures

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Stripes,
    Weave,
    Dots,
    Grain,
}

fn category_kind(name: &str) -> Result<Kind> {
    match name {
        "stripes" => Ok(Kind::Stripes),
        "weave" => Ok(Kind::Weave),
        "dots" => Ok(Kind::Dots),
        "grain" => Ok(Kind::Grain),
        _ => Err(Error::Invalid(format!(
            "unknown synthetic category {name:?} (valid: {})",
            CATEGORIES.join(", ")
        ))),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DefectKind {
    Scratch,
    Spot,
    Cut,
    Stain,
}

fn defect_kind(name: &str) -> Result<DefectKind> {
    match name {
        "scratch" => Ok(DefectKind::Scratch),
        "spot" => Ok(DefectKind::Spot),
        "cut" => Ok(DefectKind::Cut),
        "stain" => Ok(DefectKind::Stain),
        _ => Err(Error::Invalid(format!(
            "unknown synthetic defect {name:?} (valid: {})",
            DEFECTS.join(", ")
        ))),
    }
}

/// One normal image's texture. Coordinates are in image units: `(0,0)` the
/// top-left corner, `(1,1)` the bottom-right, so the look does not depend on
/// the pixel size.
///
/// Normal variety (all small, so the texture stays easy to learn): any phase
/// (translation), orientation ±3–5°, period ±6 %, contrast ±10 %, brightness
/// ±0.04, a linear illumination gradient (up to 0.03 end to end per axis),
/// pixel noise; wood instead varies its ring centre (direction ±12°, distance)
/// and a gentle warp of the rings.
#[derive(Clone, Debug)]
struct Texture {
    kind: Kind,
    /// Rotation of the pattern: (cos, sin).
    rot: (f32, f32),
    period: f32,
    phase: [f32; 2],
    bright: f32,
    contrast: f32,
    /// Illumination gradient per image unit in x and y (about the centre).
    grad: [f32; 2],
    /// Wood: ring centre (far outside the image) and warp terms (fx, fy, phase, amplitude).
    center: [f32; 2],
    warp: [[f32; 4]; 3],
    tint: [f32; 3],
}

/// Uniforms per texture (22 used).
const TEXTURE_UNIFORMS: usize = 24;

impl Texture {
    fn new(kind: Kind, s: RngStream) -> Self {
        let mut u = [0f32; TEXTURE_UNIFORMS];
        s.fill_uniform(0, &mut u);
        // (base angle and jitter in turns, period, brightness, contrast, tint)
        let (jitter, period, bright, contrast, tint) = match kind {
            Kind::Stripes => (5.0 / 360.0, 0.2, 0.5, 0.17, unit_tint(0.94, 1.0, 1.1)),
            Kind::Weave => (3.0 / 360.0, 1.0 / 6.0, 0.5, 0.2, unit_tint(1.08, 1.0, 0.84)),
            Kind::Dots => (4.0 / 360.0, 0.22, 0.64, 0.36, unit_tint(0.97, 1.0, 1.05)),
            Kind::Grain => (0.0, 1.0 / 7.0, 0.5, 0.16, unit_tint(1.25, 0.95, 0.62)),
        };
        let angle = (u[0] - 0.5) * 2.0 * jitter;
        let (sa, ca) = sc(angle);
        // Wood: ring centre 1.3–2 image sides below the image, ±12°.
        let dir = 0.25 + (u[8] - 0.5) * 2.0 * (12.0 / 360.0);
        let dist = lerp_u(u[9], 1.3, 2.0);
        let (sd, cd) = sc(dir);
        let mut warp = [[0f32; 4]; 3];
        for (k, w) in warp.iter_mut().enumerate() {
            let b = 10 + 4 * k;
            let (sf, cf) = sc(u[b]);
            let f = lerp_u(u[b + 1], 0.7, 1.6);
            *w = [f * cf, f * sf, u[b + 2], lerp_u(u[b + 3], 0.012, 0.025)];
        }
        Texture {
            kind,
            rot: (ca, sa),
            period: period * (1.0 + (u[1] - 0.5) * 0.12),
            phase: [u[2], u[3]],
            bright: bright + (u[4] - 0.5) * 0.08,
            contrast: contrast * (1.0 + (u[5] - 0.5) * 0.2),
            grad: [(u[6] - 0.5) * 0.06, (u[7] - 0.5) * 0.06],
            center: [0.5 + dist * cd, 0.5 + dist * sd],
            warp,
            tint,
        }
    }

    /// Luminance of the pattern at `(x, y)` (without illumination and noise).
    fn eval(&self, x: f32, y: f32) -> f32 {
        let (c, s) = self.rot;
        // Along (a) and across (b) the pattern's axes.
        let a = x * c + y * s;
        let b = -x * s + y * c;
        let p = self.period;
        let v = match self.kind {
            Kind::Stripes => {
                // Corrugated profile: a sine with a little second harmonic.
                let f = b / p + self.phase[0];
                0.9 * sin_t(f) + 0.2 * sin_t(2.0 * f + 0.25)
            }
            Kind::Weave => {
                // Threads along a and along b, each bright in its middle;
                // a smooth checkerboard decides which one lies on top.
                let fa = a / p + self.phase[0];
                let fb = b / p + self.phase[1];
                let across = 0.5 - 0.5 * cos_t(fb); // thread running along a
                let along = 0.5 - 0.5 * cos_t(fa); // thread running along b
                let checker = (1.6 * sin_t(fa / 2.0) * sin_t(fb / 2.0)).clamp(-1.0, 1.0);
                let w = 0.5 + 0.5 * checker;
                2.0 * (w * across + (1.0 - w) * along) - 1.0
            }
            Kind::Dots => {
                // Hexagonal lattice = two rectangular lattices (p × p√3),
                // the second offset by half a cell.
                let h = p * 1.732_050_8;
                let fa = a / p + self.phase[0];
                let fb = b / h + self.phase[1];
                let dist = |ga: f32, gb: f32| {
                    let da = (ga - ga.round()) * p;
                    let db = (gb - gb.round()) * h;
                    (da * da + db * db).sqrt()
                };
                let d = dist(fa, fb).min(dist(fa + 0.5, fb + 0.5));
                let r = 0.3 * p;
                let hole = 1.0 - smoothstep(r - 0.012, r + 0.012, d);
                // 1 on the sheet, −1 in a hole.
                1.0 - 2.0 * hole
            }
            Kind::Grain => {
                let dx = x - self.center[0];
                let dy = y - self.center[1];
                let mut r = (dx * dx + dy * dy).sqrt();
                for w in &self.warp {
                    r += w[3] * sin_t(w[0] * x + w[1] * y + w[2]);
                }
                let f = r / p + self.phase[0];
                // Light earlywood, a narrower dark latewood band.
                0.8 * sin_t(f) + 0.3 * sin_t(2.0 * f + 0.25)
            }
        };
        match self.kind {
            // The sheet at `bright`, holes `contrast` darker.
            Kind::Dots => self.bright - 0.5 * self.contrast * (1.0 - v),
            _ => self.bright + self.contrast * v,
        }
    }

    fn illumination(&self, x: f32, y: f32) -> f32 {
        self.grad[0] * (x - 0.5) + self.grad[1] * (y - 0.5)
    }
}

// ---------------------------------------------------------------------------
// Defects

/// `r(φ) = r0 · (1 + Σ_k a_k cos kφ + b_k sin kφ)` for k = 2, 3, 4: an
/// irregular, star-shaped blob. Returns (inside, d / r(φ)).
#[derive(Clone, Debug)]
struct Blob {
    c: [f32; 2],
    r0: f32,
    /// (a_k, b_k) for k = 2, 3, 4.
    h: [[f32; 2]; 3],
}

impl Blob {
    /// Harmonic amplitudes are drawn in `[lo_k, hi_k]` with random phases;
    /// their sum stays < 0.5, so r(φ) > r0 / 2.
    fn new(c: [f32; 2], r0: f32, amp: [(f32, f32); 3], u: &[f32]) -> Self {
        let mut h = [[0f32; 2]; 3];
        for k in 0..3 {
            let a = lerp_u(u[2 * k], amp[k].0, amp[k].1);
            let (s, co) = sc(u[2 * k + 1]);
            h[k] = [a * co, a * s];
        }
        Blob { c, r0, h }
    }

    fn rho(&self, x: f32, y: f32) -> Option<f32> {
        let dx = x - self.c[0];
        let dy = y - self.c[1];
        let d2 = dx * dx + dy * dy;
        // Quick reject outside the largest possible radius.
        if d2 > (1.5 * self.r0) * (1.5 * self.r0) {
            return None;
        }
        let d = d2.sqrt();
        if d == 0.0 {
            return Some(0.0);
        }
        let (c1, s1) = (dx / d, dy / d);
        let (c2, s2) = (c1 * c1 - s1 * s1, 2.0 * s1 * c1);
        let (c3, s3) = (c1 * c2 - s1 * s2, s1 * c2 + c1 * s2);
        let (c4, s4) = (c2 * c2 - s2 * s2, 2.0 * s2 * c2);
        let [[a2, b2], [a3, b3], [a4, b4]] = self.h;
        let r = self.r0 * (1.0 + a2 * c2 + b2 * s2 + a3 * c3 + b3 * s3 + a4 * c4 + b4 * s4);
        (d <= r).then_some(d / r)
    }
}

#[derive(Clone, Debug)]
enum Defect {
    /// A quadratic Bézier as a polyline; inside = within `half_w` of it.
    Scratch {
        pts: Vec<[f32; 2]>,
        half_w: f32,
        target: f32,
        bbox: [f32; 4],
    },
    /// Filled blob: texture replaced by `target` (lighter towards the rim when dark).
    Spot { blob: Blob, dark: bool },
    /// Square patch (side 2h, turned by `turn`) showing the texture rotated by
    /// `rot`, magnified by `mag`, shifted by `shift`, offset by `delta`.
    Cut {
        c: [f32; 2],
        h: f32,
        turn: (f32, f32),
        rot: (f32, f32),
        mag: f32,
        shift: [f32; 2],
        delta: f32,
    },
    /// Darkening (or bleaching) by `k0`, stronger at the rim (tide line).
    Stain { blob: Blob, k0: f32, dark: bool },
}

/// Uniforms per defect.
const DEFECT_UNIFORMS: usize = 24;

/// Tints of defect material (luminance 1): burnt/oily dark, paint white, rust stain.
fn dark_tint() -> [f32; 3] {
    unit_tint(1.1, 0.97, 0.85)
}
fn light_tint() -> [f32; 3] {
    unit_tint(1.0, 1.0, 1.0)
}
fn stain_tint() -> [f32; 3] {
    unit_tint(1.2, 0.97, 0.7)
}

impl Defect {
    fn new(kind: DefectKind, tex: &Texture, s: RngStream) -> Self {
        let mut u = [0f32; DEFECT_UNIFORMS];
        s.fill_uniform(0, &mut u);
        // Centre well inside the image, so the defect is mostly visible.
        let c = [lerp_u(u[0], 0.3, 0.7), lerp_u(u[1], 0.3, 0.7)];
        match kind {
            DefectKind::Scratch => {
                let len = lerp_u(u[2], 0.4, 0.7);
                // 30°–150° away from the texture's axis, so it never hides in a stripe.
                let (ts, tc) = (tex.rot.1, tex.rot.0);
                let (os, oc) = sc(lerp_u(u[3], 30.0, 150.0) / 360.0);
                let dir = [tc * oc - ts * os, ts * oc + tc * os];
                let perp = [-dir[1], dir[0]];
                let bow = lerp_u(u[4], -0.12, 0.12) * len;
                let p0 = [c[0] - 0.5 * len * dir[0], c[1] - 0.5 * len * dir[1]];
                let p2 = [c[0] + 0.5 * len * dir[0], c[1] + 0.5 * len * dir[1]];
                let p1 = [c[0] + bow * perp[0], c[1] + bow * perp[1]];
                const N: usize = 24;
                let pts: Vec<[f32; 2]> = (0..=N)
                    .map(|i| {
                        let t = i as f32 / N as f32;
                        let (a, b, d) = ((1.0 - t) * (1.0 - t), 2.0 * (1.0 - t) * t, t * t);
                        [
                            a * p0[0] + b * p1[0] + d * p2[0],
                            a * p0[1] + b * p1[1] + d * p2[1],
                        ]
                    })
                    .collect();
                // Width 1/16 … 1/10 of the side.
                let half_w = 0.5 * lerp_u(u[5], 1.0 / 16.0, 1.0 / 10.0);
                let target = if u[6] < 0.6 { 0.93 } else { 0.07 };
                let mut bbox = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
                for p in &pts {
                    bbox = [
                        bbox[0].min(p[0] - half_w),
                        bbox[1].min(p[1] - half_w),
                        bbox[2].max(p[0] + half_w),
                        bbox[3].max(p[1] + half_w),
                    ];
                }
                Defect::Scratch {
                    pts,
                    half_w,
                    target,
                    bbox,
                }
            }
            DefectKind::Spot => {
                // Diameter about 0.16–0.26 of the side (≥ 1/8 even where it is narrowest).
                let r0 = lerp_u(u[2], 0.08, 0.13);
                let blob = Blob::new(c, r0, [(0.05, 0.18), (0.0, 0.08), (0.0, 0.05)], &u[3..9]);
                Defect::Spot {
                    blob,
                    dark: u[9] < 0.55,
                }
            }
            DefectKind::Cut => {
                let h = 0.5 * lerp_u(u[2], 0.26, 0.36);
                // Half the texture's symmetry angle ± a quarter of that, so the
                // patch never lines up with its surroundings.
                let sym = match tex.kind {
                    Kind::Weave => 0.25,
                    Kind::Dots => 1.0 / 6.0,
                    Kind::Stripes | Kind::Grain => 0.5,
                };
                let sign = if u[3] < 0.5 { -1.0 } else { 1.0 };
                let rot = sign * sym * lerp_u(u[4], 0.375, 0.625);
                let (rs, rc) = sc(rot);
                let (ts, tc) = sc(u[5]);
                let d = lerp_u(u[8], 0.05, 0.09);
                Defect::Cut {
                    c,
                    h,
                    turn: (tc, ts),
                    rot: (rc, rs),
                    mag: lerp_u(u[6], 1.2, 1.45),
                    shift: [u[7], u[9]],
                    delta: if u[10] < 0.5 { -d } else { d },
                }
            }
            DefectKind::Stain => {
                // Mean diameter about 0.2–0.34 of the side.
                let r0 = lerp_u(u[2], 0.1, 0.17);
                let blob = Blob::new(c, r0, [(0.1, 0.22), (0.05, 0.14), (0.03, 0.08)], &u[3..9]);
                Defect::Stain {
                    blob,
                    k0: lerp_u(u[9], 0.45, 0.58),
                    dark: u[10] < 0.7,
                }
            }
        }
    }

    /// The defect at `(x, y)` over the clean luminance `lum` and tint: the new
    /// luminance and tint, or `None` where the pixel is not part of the defect.
    fn apply(&self, tex: &Texture, x: f32, y: f32, lum: f32) -> Option<(f32, [f32; 3])> {
        match self {
            Defect::Scratch {
                pts,
                half_w,
                target,
                bbox,
            } => {
                if x < bbox[0] || y < bbox[1] || x > bbox[2] || y > bbox[3] {
                    return None;
                }
                let mut best = f32::MAX;
                for w in pts.windows(2) {
                    let (a, b) = (w[0], w[1]);
                    let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
                    let (px, py) = (x - a[0], y - a[1]);
                    let t = ((px * ex + py * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
                    let (qx, qy) = (px - t * ex, py - t * ey);
                    best = best.min(qx * qx + qy * qy);
                }
                let d = best.sqrt();
                if d > *half_w {
                    return None;
                }
                // Strongest along the middle of the groove.
                let q = d / half_w;
                let w = 0.8 + 0.15 * (1.0 - q * q);
                let tint = if *target > 0.5 {
                    light_tint()
                } else {
                    dark_tint()
                };
                Some((mix(lum, *target, w), mix3(tex.tint, tint, w)))
            }
            Defect::Spot { blob, dark } => {
                let rho = blob.rho(x, y)?;
                let (target, tint) = if *dark {
                    (0.08 + 0.08 * rho * rho, dark_tint())
                } else {
                    (0.9 - 0.05 * rho * rho, light_tint())
                };
                Some((mix(lum, target, 0.92), mix3(tex.tint, tint, 0.92)))
            }
            Defect::Cut {
                c,
                h,
                turn,
                rot,
                mag,
                shift,
                delta,
            } => {
                let (dx, dy) = (x - c[0], y - c[1]);
                let la = dx * turn.0 + dy * turn.1;
                let lb = -dx * turn.1 + dy * turn.0;
                if la.abs() > *h || lb.abs() > *h {
                    return None;
                }
                let sx = (dx * rot.0 - dy * rot.1) / mag;
                let sy = (dx * rot.1 + dy * rot.0) / mag;
                let v = tex.eval(c[0] + sx + shift[0], c[1] + sy + shift[1]) + delta;
                Some((v, tex.tint))
            }
            Defect::Stain { blob, k0, dark } => {
                let rho = blob.rho(x, y)?;
                // Tide line: 75 % of the strength inside, full at the rim.
                let k = k0 * (0.75 + 0.25 * rho * rho * rho * rho);
                let v = if *dark {
                    lum * (1.0 - k)
                } else {
                    lum + (1.0 - lum) * 0.8 * k
                };
                Some((v, mix3(tex.tint, stain_tint(), (1.5 * k).min(1.0))))
            }
        }
    }
}

fn mix3(a: [f32; 3], b: [f32; 3], w: f32) -> [f32; 3] {
    [mix(a[0], b[0], w), mix(a[1], b[1], w), mix(a[2], b[2], w)]
}

// ---------------------------------------------------------------------------
// Rendering

/// Sub-stream tags of an image stream.
const TAG_TEXTURE: u64 = 1;
const TAG_DEFECT: u64 = 2;
const TAG_NOISE: u64 = 3;

/// Renders one image of `category` at `size × size` from `stream`, with
/// `defect` (one of [`DEFECTS`]) or none.
///
/// The texture and the pixel noise depend only on `stream`, not on `defect`:
/// `render(c, Some(d), n, s)` is `render(c, None, n, s)` with the pixels of
/// its mask changed and every other pixel byte-identical. The mask is 255
/// inside the defect, 0 elsewhere; `None` for a defect-free image.
pub fn render(
    category: &str,
    defect: Option<&str>,
    size: u32,
    stream: RngStream,
) -> Result<(RgbImage, Option<GrayImage>)> {
    let kind = category_kind(category)?;
    let defect = defect.map(defect_kind).transpose()?;
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return Err(Error::Invalid(format!(
            "synthetic image size must be in {MIN_SIZE}..={MAX_SIZE}, got {size}"
        )));
    }
    let n = size as usize;
    let tex = Texture::new(kind, stream.derive(TAG_TEXTURE));
    let def = defect.map(|d| Defect::new(d, &tex, stream.derive(TAG_DEFECT)));
    let mut noise = vec![0f32; n * n];
    stream.derive(TAG_NOISE).fill_normal(0, &mut noise);

    let mut rgb = vec![0u8; 3 * n * n];
    let mut mask = def.as_ref().map(|_| vec![0u8; n * n]);
    let inv = 1.0 / n as f32;
    for py in 0..n {
        let y = (py as f32 + 0.5) * inv;
        for px in 0..n {
            let x = (px as f32 + 0.5) * inv;
            let i = py * n + px;
            let mut lum = tex.eval(x, y);
            let mut tint = tex.tint;
            if let Some(d) = &def {
                if let Some((l, t)) = d.apply(&tex, x, y, lum) {
                    lum = l;
                    tint = t;
                    if let Some(m) = mask.as_mut() {
                        m[i] = 255;
                    }
                }
            }
            lum += tex.illumination(x, y) + NOISE_SIGMA * noise[i];
            for ch in 0..3 {
                rgb[3 * i + ch] = ((lum * tint[ch]).clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    let img = RgbImage::from_raw(size, size, rgb)
        .ok_or_else(|| Error::Invalid("synthetic image buffer has the wrong length".into()))?;
    let mask =
        match mask {
            Some(m) => Some(GrayImage::from_raw(size, size, m).ok_or_else(|| {
                Error::Invalid("synthetic mask buffer has the wrong length".into())
            })?),
            None => None,
        };
    Ok((img, mask))
}

// ---------------------------------------------------------------------------
// Writing

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn encode_png(path: &Path, data: &[u8], size: u32, color: ExtendedColorType) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    PngEncoder::new(&mut buf)
        .write_image(data, size, size, color)
        .map_err(|e| Error::Image {
            path: path.display().to_string(),
            detail: format!("cannot encode PNG: {e}"),
        })?;
    Ok(buf)
}

/// Suffix of the temp files: `.<name>.tmp-<pid>` next to the target.
const TMP_MARK: &str = ".tmp-";

/// Writes `bytes` to a temp file in the same folder and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}{TMP_MARK}{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

/// Zero-padded file stem: 3 digits, more when the count needs them.
fn stem(index: usize, count: usize) -> String {
    let width = count.saturating_sub(1).to_string().len().max(3);
    format!("{index:0width$}")
}

/// Whether `name` is one of the names this module writes (`<digits>.png`,
/// `<digits>_mask.png`, or a temp file of either).
fn is_generated_name(name: &str) -> bool {
    let base = match name.strip_prefix('.') {
        Some(rest) => match rest.find(TMP_MARK) {
            Some(at) => &rest[..at],
            None => return false,
        },
        None => name,
    };
    let digits = base
        .strip_suffix("_mask.png")
        .or_else(|| base.strip_suffix(".png"));
    matches!(digits, Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Creates `dir` and removes files named like ours that this run will not
/// write (images left from a run with larger counts, temp files of an
/// interrupted run), so the folder ends up holding exactly this data set.
/// Other files are left alone.
fn prepare_dir(dir: &Path, keep: &HashSet<String>) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_generated_name(&name) && !keep.contains(&name) && entry.path().is_file() {
            fs::remove_file(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// One file to render: category, defect (None = good), stream, paths.
struct Job {
    category: String,
    defect: Option<&'static str>,
    stream: RngStream,
    image: PathBuf,
    mask: Option<PathBuf>,
}

/// Writes the data set described by `cfg` under `root` (see the module docs
/// for the layout). Existing files of the same names are replaced, stale
/// numbered files from an earlier, larger run are removed, and the result is
/// byte-identical for the same config. Images are rendered in parallel.
pub fn generate(root: &Path, cfg: &SynthConfig) -> Result<SynthSummary> {
    cfg.validate()?;
    let mut jobs = Vec::new();
    for cat in &cfg.categories {
        let cdir = root.join(cat);
        let mut folder = |dir: PathBuf,
                          defect: Option<&'static str>,
                          split: Split,
                          count: usize,
                          with_masks: bool|
         -> Result<()> {
            let names: Vec<String> = (0..count).map(|i| stem(i, count)).collect();
            let keep = names.iter().map(|s| format!("{s}.png")).collect();
            prepare_dir(&dir, &keep)?;
            let mdir = defect.map(|d| cdir.join("ground_truth").join(d));
            if let (Some(mdir), true) = (&mdir, with_masks) {
                let keep = names.iter().map(|s| format!("{s}_mask.png")).collect();
                prepare_dir(mdir, &keep)?;
            }
            for (i, s) in names.iter().enumerate() {
                jobs.push(Job {
                    category: cat.clone(),
                    defect,
                    stream: image_stream(cfg.seed, cat, split, i),
                    image: dir.join(format!("{s}.png")),
                    mask: mdir.as_ref().map(|m| m.join(format!("{s}_mask.png"))),
                });
            }
            Ok(())
        };
        folder(
            cdir.join("train").join("good"),
            None,
            Split::Train,
            cfg.train,
            false,
        )?;
        folder(
            cdir.join("test").join("good"),
            None,
            Split::TestGood,
            cfg.test_good,
            false,
        )?;
        for &d in DEFECTS {
            folder(
                cdir.join("test").join(d),
                Some(d),
                Split::TestDefect(d),
                cfg.test_per_defect,
                true,
            )?;
        }
    }

    let results: Vec<Result<()>> = jobs
        .par_iter()
        .map(|job| -> Result<()> {
            let (img, mask) = render(&job.category, job.defect, cfg.size, job.stream)?;
            let png = encode_png(&job.image, img.as_raw(), cfg.size, ExtendedColorType::Rgb8)?;
            write_atomic(&job.image, &png)?;
            if let (Some(path), Some(mask)) = (&job.mask, mask) {
                let png = encode_png(path, mask.as_raw(), cfg.size, ExtendedColorType::L8)?;
                write_atomic(path, &png)?;
            }
            Ok(())
        })
        .collect();
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(SynthSummary {
        root: root.to_path_buf(),
        categories: cfg.categories.clone(),
        images_written: jobs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names() {
        for n in [
            "000.png",
            "12345.png",
            "007_mask.png",
            ".000.png.tmp-17",
            ".3_mask.png.tmp-1",
        ] {
            assert!(is_generated_name(n), "{n}");
        }
        for n in [
            "a.png",
            ".png",
            "_mask.png",
            "000.jpg",
            "notes.txt",
            ".000.png",
            "x000.png",
        ] {
            assert!(!is_generated_name(n), "{n}");
        }
        assert_eq!(stem(7, 160), "007");
        assert_eq!(stem(7, 1001), "0007");
        assert_eq!(stem(999, 1000), "999");
    }

    #[test]
    fn tints_keep_luminance() {
        for t in [
            dark_tint(),
            light_tint(),
            stain_tint(),
            unit_tint(1.25, 0.95, 0.62),
        ] {
            let l = 0.2126 * t[0] + 0.7152 * t[1] + 0.0722 * t[2];
            assert!((l - 1.0).abs() < 1e-6);
        }
    }
}
