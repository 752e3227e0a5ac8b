//! Anomaly-detection metrics: hand-computed cases, brute-force agreement on
//! random small cases with many ties, and bad input.

use scoredd::metrics::{aupro, auroc, f1_max, pixel_auroc};
use scoredd::rng::RngStream;
use scoredd::Error;

const T: bool = true;
const F: bool = false;

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: got {a}, expected {b}");
}

/// Deterministic draws from one Philox stream.
struct Draw {
    s: RngStream,
    i: u64,
}

impl Draw {
    fn new(seed: u64, k: u64) -> Self {
        Self {
            s: RngStream::new(seed, k),
            i: 0,
        }
    }
    fn u(&mut self) -> f64 {
        self.i += 1;
        self.s.uniform(self.i - 1) as f64
    }
    /// Uniform integer in [lo, hi].
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        (lo + (self.u() * (hi - lo + 1) as f64) as usize).min(hi)
    }
}

// ---------------------------------------------------------------- brute force

/// O(n²) Mann–Whitney: pairs (positive, negative), ties count 1/2.
fn auroc_bf(s: &[f64], l: &[bool]) -> f64 {
    let (mut num, mut pairs) = (0.0, 0.0);
    for i in 0..s.len() {
        for j in 0..s.len() {
            if l[i] && !l[j] {
                pairs += 1.0;
                if s[i] > s[j] {
                    num += 1.0
                } else if s[i] == s[j] {
                    num += 0.5
                }
            }
        }
    }
    num / pairs
}

fn distinct_desc(s: &[f64]) -> Vec<f64> {
    let mut t = s.to_vec();
    t.sort_by(|a, b| b.partial_cmp(a).unwrap());
    t.dedup();
    t
}

/// Tries every distinct score as threshold (score >= t), highest first; keeps
/// the first best.
fn f1_bf(s: &[f64], l: &[bool]) -> (f64, f64) {
    let mut best = (-1.0, f64::NAN);
    for t in distinct_desc(s) {
        let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
        for i in 0..s.len() {
            match (s[i] >= t, l[i]) {
                (true, true) => tp += 1.0,
                (true, false) => fp += 1.0,
                (false, true) => fn_ += 1.0,
                _ => {}
            }
        }
        let f1 = 2.0 * tp / (2.0 * tp + fp + fn_);
        if f1 > best.0 {
            best = (f1, t);
        }
    }
    best
}

/// 8-connected components by union–find over all neighbour pairs (a different
/// algorithm from the library's flood fill). Returns per-pixel root or None.
fn components_bf(mask: &[u8], w: usize, h: usize) -> Vec<Option<usize>> {
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            x = p[x];
        }
        x
    }
    let mut parent: Vec<usize> = (0..w * h).collect();
    for y in 0..h {
        for x in 0..w {
            for (dx, dy) in [
                (-1i64, -1i64),
                (-1, 0),
                (-1, 1),
                (0, -1),
                (0, 1),
                (1, -1),
                (1, 0),
                (1, 1),
            ] {
                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                    continue;
                }
                let (a, b) = (y * w + x, ny as usize * w + nx as usize);
                if mask[a] != 0 && mask[b] != 0 {
                    let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                    parent[ra] = rb;
                }
            }
        }
    }
    (0..w * h)
        .map(|i| (mask[i] != 0).then(|| find(&mut parent, i)))
        .collect()
}

/// MVTec's `trapezoid(x, y, x_max)` followed by division by x_max.
fn trapezoid_bf(x: &[f64], y: &[f64], x_max: f64) -> f64 {
    let mut correction = 0.0;
    if !x.contains(&x_max) {
        let ins = x.iter().filter(|&&v| v <= x_max).count(); // bisect_right
        assert!(ins > 0 && ins < x.len());
        let yi = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]);
        correction = 0.5 * (yi + y[ins - 1]) * (x_max - x[ins - 1]);
    }
    let mut area = 0.0;
    for i in 1..x.len() {
        if x[i] <= x_max {
            area += 0.5 * (y[i] + y[i - 1]) * (x[i] - x[i - 1]);
        }
    }
    (area + correction) / x_max
}

/// Dense sweep over every distinct score, with explicit per-component loops.
fn aupro_bf(maps: &[Vec<f32>], masks: &[Vec<u8>], w: usize, h: usize, max_fpr: f64) -> f64 {
    // (image, root) -> pixel indices
    let mut regions: Vec<Vec<(usize, usize)>> = Vec::new();
    for (i, m) in masks.iter().enumerate() {
        let c = components_bf(m, w, h);
        let mut roots: Vec<usize> = c.iter().flatten().copied().collect();
        roots.sort();
        roots.dedup();
        for r in roots {
            regions.push(
                (0..w * h)
                    .filter(|&j| c[j] == Some(r))
                    .map(|j| (i, j))
                    .collect(),
            );
        }
    }
    let all: Vec<f64> = maps.iter().flatten().map(|&v| v as f64).collect();
    let normals: Vec<f64> = maps
        .iter()
        .zip(masks)
        .flat_map(|(m, k)| {
            m.iter()
                .zip(k)
                .filter(|(_, &l)| l == 0)
                .map(|(&v, _)| v as f64)
        })
        .collect();
    let (mut xs, mut ys) = (vec![0.0], vec![0.0]);
    for t in distinct_desc(&all) {
        let fpr = normals.iter().filter(|&&v| v >= t).count() as f64 / normals.len() as f64;
        let mut pro = 0.0;
        for r in &regions {
            let hit = r.iter().filter(|&&(i, j)| maps[i][j] as f64 >= t).count();
            pro += hit as f64 / r.len() as f64;
        }
        xs.push(fpr);
        ys.push(pro / regions.len() as f64);
    }
    trapezoid_bf(&xs, &ys, max_fpr)
}

// ------------------------------------------------------------- hand cases

#[test]
fn auroc_hand_cases() {
    // Perfect separation, inverted, all tied.
    assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &[F, F, T, T]).unwrap(), 1.0);
    assert_eq!(auroc(&[0.8, 0.9, 0.1, 0.2], &[F, F, T, T]).unwrap(), 0.0);
    assert_eq!(auroc(&[0.5; 5], &[F, T, F, T, T]).unwrap(), 0.5);
    // Positives {0.4, 0.8}, negatives {0.1, 0.4}. Pairs: 0.8>0.1, 0.8>0.4,
    // 0.4>0.1 count 1 each, 0.4=0.4 counts 1/2 → 3.5 / 4 = 0.875.
    assert_eq!(auroc(&[0.1, 0.4, 0.4, 0.8], &[F, T, F, T]).unwrap(), 0.875);
    // The order of the input does not matter.
    assert_eq!(auroc(&[0.4, 0.8, 0.4, 0.1], &[F, T, T, F]).unwrap(), 0.875);
    // -0.0 and +0.0 are one score: positive 0.0 vs negative -0.0 is a tie → 1/2.
    assert_eq!(auroc(&[0.0, -0.0], &[T, F]).unwrap(), 0.5);
    // Infinities are ordinary scores.
    assert_eq!(
        auroc(&[f64::NEG_INFINITY, f64::INFINITY], &[F, T]).unwrap(),
        1.0
    );
}

#[test]
fn f1_max_hand_cases() {
    // scores [0.1,0.4,0.4,0.8], labels [F,T,F,T], P = 2:
    //   t=0.8: TP1 FP0 FN1 → 2/3;  t=0.4: TP2 FP1 FN0 → 4/5;  t=0.1: TP2 FP2 → 4/6.
    let (f, t) = f1_max(&[0.1, 0.4, 0.4, 0.8], &[F, T, F, T]).unwrap();
    assert_eq!((f, t), (0.8, 0.4));
    // A tie in F1: t=0.9 → 2/3, t=0.6 → TP2 FP2 → 4/6; the highest threshold wins.
    let (f, t) = f1_max(&[0.9, 0.8, 0.7, 0.6], &[T, F, F, T]).unwrap();
    assert_eq!((f, t), (2.0 / 3.0, 0.9));
    // Perfect separation: F1 = 1 at the lowest positive score.
    assert_eq!(
        f1_max(&[0.1, 0.2, 0.7, 0.9], &[F, F, T, T]).unwrap(),
        (1.0, 0.7)
    );
    // All tied: everything predicted positive, TP3 FP2 → 6/8.
    assert_eq!(f1_max(&[0.3; 5], &[T, F, T, F, T]).unwrap(), (0.75, 0.3));
}

#[test]
fn pixel_auroc_hand_case() {
    // Image 1: defect pixels 0.9, 0.4; normal 0.4, 0.1. Image 2: normal 0.2, 0.0.
    // Positives {0.9, 0.4} vs negatives {0.4, 0.1, 0.2, 0.0}:
    // 0.9 beats all 4; 0.4 beats 3 and ties 1 → 7.5 / 8.
    let m1 = [0.9f32, 0.4, 0.4, 0.1];
    let m2 = [0.2f32, 0.0];
    let k1 = [1u8, 255, 0, 0];
    let k2 = [0u8, 0];
    assert_eq!(pixel_auroc(&[&m1, &m2], &[&k1, &k2]).unwrap(), 7.5 / 8.0);
}

/// Two 4×4 images. Image A has two separate defect regions:
///
/// ```text
///   A mask        A scores              B: no defect
///   1 1 0 0       .9 .9  0  0           all 0 except one pixel 0.5
///   1 1 0 0       .9 .9  0  0
///   0 0 0 0        0  0  0  0
///   0 0 1 1        0  0 .9  r
/// ```
///
/// R1 (4 px, top-left) is fully detected at 0.9; R2 (2 px, bottom-right) has
/// one pixel at 0.9 and one at `r`. Normal pixels: 10 in A + 16 in B = 26, all
/// 0 except one in B at 0.5.
fn two_region_case(r: f32) -> (Vec<f32>, Vec<u8>, Vec<f32>, Vec<u8>) {
    #[rustfmt::skip]
    let ka = vec![1u8, 1, 0, 0,
                  1, 1, 0, 0,
                  0, 0, 0, 0,
                  0, 0, 1, 1];
    #[rustfmt::skip]
    let ma = vec![0.9f32, 0.9, 0.0, 0.0,
                  0.9, 0.9, 0.0, 0.0,
                  0.0, 0.0, 0.0, 0.0,
                  0.0, 0.0, 0.9, r];
    let mut mb = vec![0.0f32; 16];
    mb[5] = 0.5;
    (ma, ka, mb, vec![0u8; 16])
}

#[test]
fn aupro_hand_two_regions() {
    // r = 0.1: thresholds 0.9, 0.5, 0.1, 0.0 give the curve
    //   (0,0) → t=.9: FPR 0, PRO (1 + 1/2)/2 = 3/4
    //         → t=.5: FPR 1/26, PRO 3/4
    //         → t=.1: FPR 1/26, PRO (1 + 1)/2 = 1
    //         → t=0 : FPR 1, PRO 1.
    // Area to 0.3: 0 + (3/4)(1/26) + 0 + 1·(0.3 − 1/26) = 0.3 − (1/4)/26;
    // normalised: 1 − 0.25 / (26 · 0.3) = 0.967948717…
    // (Treating pixels instead of regions would give PRO 5/6, not 3/4, at t=.9.)
    let (ma, ka, mb, kb) = two_region_case(0.1);
    let got = aupro(&[&ma, &mb], &[&ka, &kb], 4, 4, 0.3).unwrap();
    close(got, 1.0 - 0.25 / (26.0 * 0.3), 1e-12, "r = 0.1");

    // r = 0 ties R2's second pixel with the normal pixels at 0: it enters with
    // them, so the last segment slopes from (1/26, 3/4) to (1, 1), and PRO at
    // FPR 0.3 is interpolated: 3/4 + (1/4)(0.3 − 1/26)/(1 − 1/26) = 0.818.
    // Area: (3/4)(1/26) + ½(3/4 + 0.818)(0.3 − 1/26) = (0.75 + 0.784·6.8)/26.
    let (ma, ka, mb, kb) = two_region_case(0.0);
    let got = aupro(&[&ma, &mb], &[&ka, &kb], 4, 4, 0.3).unwrap();
    let x1 = 1.0 / 26.0;
    let yi = 0.75 + 0.25 * (0.3 - x1) / (1.0 - x1);
    close(yi, 0.818, 1e-12, "interpolated PRO");
    let want = (0.75 * x1 + 0.5 * (0.75 + yi) * (0.3 - x1)) / 0.3;
    close(want, (0.75 + 0.784 * 6.8) / 26.0 / 0.3, 1e-12, "arithmetic");
    close(got, want, 1e-12, "r = 0");

    // max_fpr = 1 integrates the whole curve: (3/4)(1/26) + 1·(25/26).
    let (ma, ka, mb, kb) = two_region_case(0.1);
    let got = aupro(&[&ma, &mb], &[&ka, &kb], 4, 4, 1.0).unwrap();
    close(got, 0.75 / 26.0 + 25.0 / 26.0, 1e-12, "max_fpr = 1");

    // Exactly at a curve point: max_fpr = 1/26 ends at (1/26, 1) → (3/4)(1/26)/(1/26).
    let got = aupro(&[&ma, &mb], &[&ka, &kb], 4, 4, 1.0 / 26.0).unwrap();
    close(got, 0.75, 1e-12, "max_fpr on a point");
}

#[test]
fn aupro_eight_connectivity() {
    // Defect pixels (0,0), (0,1) and (1,2) — the last touches (0,1) only
    // diagonally. 8-connected: ONE region of 3 px. (4-connected would give
    // regions {2 px} and {1 px}.)
    //   scores: (1,2) = 0.9, the other two 0.1; one normal pixel 0.5; other
    //   12 normal pixels 0.
    // Curve: (0,0) → t=.9 (0, 1/3) → t=.5 (1/13, 1/3) → t=.1 (1/13, 1) → (1, 1).
    // AUPRO_0.3 = [(1/3)(1/13) + (0.3 − 1/13)] / 0.3 = 1 − (2/3)/(13·0.3).
    // (With 4-connectivity PRO at t=.9 would be 1/2, giving 1 − (1/2)/3.9.)
    let mut k = vec![0u8; 16];
    let mut m = vec![0.0f32; 16];
    k[0] = 1;
    k[1] = 1;
    k[4 + 2] = 1;
    m[0] = 0.1;
    m[1] = 0.1;
    m[4 + 2] = 0.9;
    m[15] = 0.5;
    let got = aupro(&[&m], &[&k], 4, 4, 0.3).unwrap();
    close(got, 1.0 - (2.0 / 3.0) / 3.9, 1e-12, "8-connectivity");

    // Anti-diagonal neighbours and edges: (0,3) and (1,2) also join.
    let mut k = vec![0u8; 16];
    k[3] = 1;
    k[4 + 2] = 1;
    k[15] = 1; // separate: (3,3) is two rows from (1,2)
    let mut m = vec![0.0f32; 16];
    m[3] = 0.9; // half of region {(0,3),(1,2)} at 0.9
    m[15] = 0.9; // all of region {(3,3)}
    m[4 + 2] = 0.2;
    m[0] = 0.5; // one of 13 normal pixels
                // Curve: t=.9 (0, (1/2 + 1)/2 = 3/4) → t=.5 (1/13, 3/4) → t=.2 (1/13, 1) → (1, 1).
    let got = aupro(&[&m], &[&k], 4, 4, 0.3).unwrap();
    close(got, 1.0 - 0.25 / 3.9, 1e-12, "anti-diagonal");
}

#[test]
fn aupro_perfect_and_worst() {
    let (mut ma, ka, mut mb, kb) = two_region_case(0.9);
    mb[5] = 0.0;
    assert_eq!(aupro(&[&ma, &mb], &[&ka, &kb], 4, 4, 0.3).unwrap(), 1.0);
    // Defects all score below every normal pixel: PRO stays 0 until FPR = 1.
    for (v, &l) in ma.iter_mut().zip(&ka) {
        *v = if l != 0 { -1.0 } else { 0.0 };
    }
    assert_eq!(aupro(&[&ma, &mb], &[&ka, &kb], 4, 4, 0.3).unwrap(), 0.0);
}

// ------------------------------------------------------- brute-force agreement

/// Scores with many ties: a few levels, occasionally negative zero.
fn tied_scores(d: &mut Draw, n: usize) -> Vec<f64> {
    let levels = d.int(1, 6);
    (0..n)
        .map(|_| {
            let v = d.int(0, levels - 1) as f64 / 4.0 - 0.5;
            if v == 0.0 && d.u() < 0.5 {
                -0.0
            } else {
                v
            }
        })
        .collect()
}

fn two_class_labels(d: &mut Draw, n: usize) -> Vec<bool> {
    let mut l: Vec<bool> = (0..n).map(|_| d.u() < 0.4).collect();
    let i = d.int(0, n - 1);
    let j = (i + 1 + d.int(0, n - 2)) % n;
    l[i] = true;
    l[j] = false;
    l
}

#[test]
fn auroc_and_f1_agree_with_brute_force() {
    for case in 0..200 {
        let mut d = Draw::new(7, case);
        let n = d.int(3, 30);
        let s = tied_scores(&mut d, n);
        let l = two_class_labels(&mut d, n);
        let a = auroc(&s, &l).unwrap();
        close(a, auroc_bf(&s, &l), 1e-12, &format!("auroc case {case}"));
        let (f, t) = f1_max(&s, &l).unwrap();
        let (fb, tb) = f1_bf(&s, &l);
        close(f, fb, 1e-12, &format!("f1 case {case}"));
        assert_eq!(t, tb, "f1 threshold case {case}: {s:?} {l:?}");
    }
}

#[test]
fn pixel_auroc_agrees_with_concatenated_auroc() {
    for case in 0..200 {
        let mut d = Draw::new(11, case);
        let images = d.int(1, 4);
        let mut maps: Vec<Vec<f32>> = Vec::new();
        let mut masks: Vec<Vec<u8>> = Vec::new();
        for _ in 0..images {
            let n = d.int(1, 12);
            maps.push(tied_scores(&mut d, n).iter().map(|&v| v as f32).collect());
            masks.push(
                (0..n)
                    .map(|_| if d.u() < 0.3 { d.int(1, 255) as u8 } else { 0 })
                    .collect(),
            );
        }
        let s: Vec<f64> = maps.iter().flatten().map(|&v| v as f64).collect();
        let l: Vec<bool> = masks.iter().flatten().map(|&v| v != 0).collect();
        let m: Vec<&[f32]> = maps.iter().map(|v| v.as_slice()).collect();
        let k: Vec<&[u8]> = masks.iter().map(|v| v.as_slice()).collect();
        match auroc(&s, &l) {
            Ok(want) => {
                let got = pixel_auroc(&m, &k).unwrap();
                assert_eq!(got, want, "case {case}");
                close(got, auroc_bf(&s, &l), 1e-12, &format!("bf case {case}"));
            }
            Err(_) => assert!(matches!(pixel_auroc(&m, &k), Err(Error::Invalid(_)))),
        }
    }
}

#[test]
fn aupro_agrees_with_brute_force() {
    let mut checked = 0;
    for case in 0..200 {
        let mut d = Draw::new(13, case);
        let (w, h) = (d.int(1, 6), d.int(1, 6));
        let images = d.int(1, 3);
        let p = 0.15 + 0.4 * d.u();
        let levels = d.int(2, 8);
        let mut maps: Vec<Vec<f32>> = Vec::new();
        let mut masks: Vec<Vec<u8>> = Vec::new();
        for _ in 0..images {
            masks.push((0..w * h).map(|_| (d.u() < p) as u8).collect());
            maps.push(
                (0..w * h)
                    .map(|_| d.int(0, levels - 1) as f32 / levels as f32)
                    .collect(),
            );
        }
        let max_fpr = [0.3, 0.05, 1.0, 0.5][case as usize % 4];
        let m: Vec<&[f32]> = maps.iter().map(|v| v.as_slice()).collect();
        let k: Vec<&[u8]> = masks.iter().map(|v| v.as_slice()).collect();
        let defect = masks.iter().flatten().any(|&v| v != 0);
        let normal = masks.iter().flatten().any(|&v| v == 0);
        if !(defect && normal) {
            assert!(matches!(
                aupro(&m, &k, w, h, max_fpr),
                Err(Error::Invalid(_))
            ));
            continue;
        }
        let got = aupro(&m, &k, w, h, max_fpr).unwrap();
        let want = aupro_bf(&maps, &masks, w, h, max_fpr);
        close(
            got,
            want,
            1e-9,
            &format!("aupro case {case} ({w}×{h}×{images})"),
        );
        checked += 1;
    }
    assert!(checked > 150, "only {checked} cases had both classes");
}

/// MVTec-sized input: 582 images of 64×64 (2.4 M pixels) in well under a second.
#[test]
fn large_input() {
    let (w, h, n) = (64, 64, 582);
    let s = RngStream::new(3, 0);
    let mut maps = vec![vec![0.0f32; w * h]; n];
    let mut masks = vec![vec![0u8; w * h]; n];
    for (i, (m, k)) in maps.iter_mut().zip(masks.iter_mut()).enumerate() {
        s.derive(i as u64).fill_uniform(0, m);
        if i % 3 == 0 {
            // a square defect that scores a bit higher
            for y in 20..30 {
                for x in 10..25 {
                    k[y * w + x] = 1;
                    m[y * w + x] += 0.5;
                }
            }
        }
    }
    let m: Vec<&[f32]> = maps.iter().map(|v| v.as_slice()).collect();
    let k: Vec<&[u8]> = masks.iter().map(|v| v.as_slice()).collect();
    // Speed belongs in benchmarks; this checks the MVTec-sized case runs and is right.
    let a = pixel_auroc(&m, &k).unwrap();
    let p = aupro(&m, &k, w, h, 0.3).unwrap();
    // Defects ~U(0.5, 1.5) vs normals ~U(0, 1): AUROC = 1 − ½·½·½ = 0.875.
    close(a, 0.875, 5e-3, "pixel auroc");
    assert!(p > 0.0 && p < 1.0, "aupro {p}");
}

// ---------------------------------------------------------------- bad input

fn expect_invalid<T: std::fmt::Debug>(what: &str, r: scoredd::Result<T>) {
    assert!(matches!(r, Err(Error::Invalid(_))), "{what}: got {r:?}");
}

#[test]
fn bad_input_errors() {
    expect_invalid("auroc length", auroc(&[0.1, 0.2], &[T]));
    expect_invalid("auroc empty", auroc(&[], &[]));
    expect_invalid("auroc NaN", auroc(&[0.1, f64::NAN], &[T, F]));
    expect_invalid("auroc one class", auroc(&[0.1, 0.2], &[T, T]));
    expect_invalid("auroc no positive", auroc(&[0.1, 0.2], &[F, F]));
    expect_invalid("f1 length", f1_max(&[0.1], &[T, F]));
    expect_invalid("f1 NaN", f1_max(&[f64::NAN, 0.2], &[T, F]));
    expect_invalid("f1 one class", f1_max(&[0.1, 0.2], &[F, F]));

    let m = [0.1f32, 0.2, 0.3, 0.4];
    let k = [0u8, 1, 0, 0];
    expect_invalid("pixel count", pixel_auroc(&[&m], &[&k, &k]));
    expect_invalid("pixel none", pixel_auroc(&[], &[]));
    expect_invalid("pixel length", pixel_auroc(&[&m[..3]], &[&k]));
    expect_invalid(
        "pixel NaN",
        pixel_auroc(&[&[0.1, f32::NAN, 0.0, 0.0]], &[&k]),
    );
    expect_invalid("pixel one class", pixel_auroc(&[&m], &[&[0, 0, 0, 0]]));

    assert!(aupro(&[&m], &[&k], 2, 2, 0.3).is_ok());
    for bad in [0.0, -0.1, 1.0000001, f64::NAN, f64::INFINITY] {
        expect_invalid(&format!("max_fpr {bad}"), aupro(&[&m], &[&k], 2, 2, bad));
    }
    expect_invalid("aupro size", aupro(&[&m], &[&k], 3, 2, 0.3));
    expect_invalid("aupro zero size", aupro(&[&m], &[&k], 0, 2, 0.3));
    expect_invalid("aupro count", aupro(&[&m, &m], &[&k], 2, 2, 0.3));
    expect_invalid("aupro length", aupro(&[&m[..3]], &[&k], 2, 2, 0.3));
    expect_invalid(
        "aupro NaN",
        aupro(&[&[f32::NAN, 0.0, 0.0, 0.0]], &[&k], 2, 2, 0.3),
    );
    expect_invalid("aupro no defect", aupro(&[&m], &[&[0, 0, 0, 0]], 2, 2, 0.3));
    expect_invalid("aupro no normal", aupro(&[&m], &[&[1, 1, 1, 1]], 2, 2, 0.3));
}
