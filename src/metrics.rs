//! Evaluation metrics of unsupervised anomaly detection, with the conventions
//! of the MVTec AD benchmark.
//!
//! * [`auroc`] — image-level area under the ROC curve.
//! * [`pixel_auroc`] — the same over every pixel of every image.
//! * [`aupro`] — the normalised area under the Per-Region-Overlap curve up to a
//!   false-positive rate limit (MVTec uses 0.3).
//! * [`f1_max`] — the best F1 score over all thresholds, and that threshold.
//!
//! All of them are *exact*: there is no fixed threshold grid. Every distinct
//! score is a threshold, and samples with equal scores always cross a
//! threshold together (ties move together), so the curves are the exact
//! empirical curves and the results do not depend on the order of the input.
//! A sample is predicted anomalous when `score >= threshold`; higher scores
//! mean "more anomalous". `-0.0` and `+0.0` are the same score.
//!
//! Bad input — empty input, length mismatches, NaN scores, a single class —
//! gives [`Error::Invalid`]; nothing here panics. Infinite scores are allowed
//! (they are ordered like any other score). The module is plain Rust without
//! threads, so it also runs on wasm.

use crate::error::{Error, Result};

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// A maximal run of equal scores: its score and how many positives and
/// negatives share it.
#[derive(Clone, Copy, Debug)]
struct TieGroup {
    score: f64,
    pos: u64,
    neg: u64,
}

/// Validates `scores`/`labels` and returns the tie groups in *descending*
/// score order.
fn tie_groups(op: &str, scores: &[f64], labels: &[bool]) -> Result<Vec<TieGroup>> {
    if scores.len() != labels.len() {
        return Err(invalid(format!(
            "{op}: {} scores but {} labels",
            scores.len(),
            labels.len()
        )));
    }
    if scores.is_empty() {
        return Err(invalid(format!("{op}: no samples")));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(invalid(format!("{op}: score {i} is NaN")));
    }
    // `+ 0.0` maps -0.0 to +0.0; then `total_cmp` agrees with `==` (no NaN left).
    let mut v: Vec<(f64, bool)> = scores
        .iter()
        .zip(labels)
        .map(|(&s, &l)| (s + 0.0, l))
        .collect();
    v.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut groups: Vec<TieGroup> = Vec::new();
    for (s, l) in v {
        match groups.last_mut() {
            Some(g) if g.score == s => {
                if l {
                    g.pos += 1
                } else {
                    g.neg += 1
                }
            }
            _ => groups.push(TieGroup {
                score: s,
                pos: l as u64,
                neg: !l as u64,
            }),
        }
    }
    let p: u64 = groups.iter().map(|g| g.pos).sum();
    let n: u64 = groups.iter().map(|g| g.neg).sum();
    both_classes(op, p, n)?;
    Ok(groups)
}

fn both_classes(op: &str, pos: u64, neg: u64) -> Result<()> {
    if pos == 0 || neg == 0 {
        return Err(invalid(format!(
            "{op}: needs both classes, got {pos} positive and {neg} negative samples"
        )));
    }
    Ok(())
}

/// Exact AUROC from `(pos, neg)` counts of tie groups visited in descending
/// score order.
///
/// Walking the ROC curve down the thresholds, a group with `p` positives and
/// `n` negatives adds the trapezoid `n · (TP_before + p/2)` (in units of one
/// positive × one negative). Twice that is an integer, so the sum is exact and
/// only the final division rounds. This equals the Mann–Whitney U statistic
/// with ties counted as 1/2, divided by `P·N`.
fn auc_from_counts(counts: impl Iterator<Item = (u64, u64)>) -> f64 {
    let (mut tp, mut fp, mut twice_area) = (0u128, 0u128, 0u128);
    for (p, n) in counts {
        let (p, n) = (p as u128, n as u128);
        twice_area += n * (2 * tp + p);
        tp += p;
        fp += n;
    }
    twice_area as f64 / (2 * tp * fp) as f64
}

/// Area under the ROC curve of `scores` (higher = more anomalous) against
/// `labels` (`true` = anomalous).
///
/// Ties are handled exactly: the result is the probability that a random
/// anomalous sample scores higher than a random normal one, ties counting 1/2
/// (the Mann–Whitney U statistic over `P·N`). O(n log n).
///
/// Errors: length mismatch, no samples, a NaN score, or only one class present.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    let groups = tie_groups("auroc", scores, labels)?;
    Ok(auc_from_counts(groups.iter().map(|g| (g.pos, g.neg))))
}

/// A `u32` whose unsigned order is the numeric order of the (non-NaN) `f32`,
/// with -0.0 and +0.0 mapped to the same key.
fn ord_key(f: f32) -> u32 {
    let bits = (f + 0.0).to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

fn check_maps(op: &str, maps: &[&[f32]], masks: &[&[u8]]) -> Result<usize> {
    if maps.len() != masks.len() {
        return Err(invalid(format!(
            "{op}: {} anomaly maps but {} masks",
            maps.len(),
            masks.len()
        )));
    }
    if maps.is_empty() {
        return Err(invalid(format!("{op}: no images")));
    }
    let mut total = 0usize;
    for (i, (m, k)) in maps.iter().zip(masks).enumerate() {
        if m.len() != k.len() {
            return Err(invalid(format!(
                "{op}: image {i}: anomaly map has {} pixels but its mask has {}",
                m.len(),
                k.len()
            )));
        }
        if let Some(j) = m.iter().position(|s| s.is_nan()) {
            return Err(invalid(format!("{op}: image {i}: pixel {j} is NaN")));
        }
        total += m.len();
    }
    Ok(total)
}

/// AUROC over all pixels of all images: `maps[i][j]` is the anomaly score of
/// pixel `j` of image `i`, `masks[i][j] != 0` marks it as defective.
///
/// Exactly [`auroc`] of the concatenated pixels (f32 scores widen exactly to
/// f64, so ties are the same), but with a compact representation: each pixel
/// becomes one `u64` (order-preserving score key and label) and the whole set
/// is sorted once, O(N log N) with 8 bytes per pixel — 582 images of 256×256
/// take ~300 MB and a few seconds.
///
/// Errors: different numbers of maps and masks, a map and mask of different
/// lengths, no pixels, a NaN score, or only one class present.
pub fn pixel_auroc(maps: &[&[f32]], masks: &[&[u8]]) -> Result<f64> {
    let total = check_maps("pixel_auroc", maps, masks)?;
    let mut keys: Vec<u64> = Vec::with_capacity(total);
    for (m, k) in maps.iter().zip(masks) {
        keys.extend(
            m.iter()
                .zip(k.iter())
                .map(|(&s, &l)| ((ord_key(s) as u64) << 1) | (l != 0) as u64),
        );
    }
    if keys.is_empty() {
        return Err(invalid("pixel_auroc: no pixels"));
    }
    let pos = keys.iter().filter(|&&k| k & 1 == 1).count() as u64;
    both_classes("pixel_auroc", pos, keys.len() as u64 - pos)?;
    keys.sort_unstable();
    // Tie groups, descending.
    let mut counts: Vec<(u64, u64)> = Vec::new();
    let mut last: Option<u64> = None;
    for &k in keys.iter().rev() {
        let s = k >> 1;
        if last != Some(s) {
            counts.push((0, 0));
            last = Some(s);
        }
        let c = counts.last_mut().unwrap();
        if k & 1 == 1 {
            c.0 += 1
        } else {
            c.1 += 1
        }
    }
    Ok(auc_from_counts(counts.into_iter()))
}

/// Labels the 8-connected components of the nonzero pixels of `mask`
/// (row-major, `width × height`), as `scipy.ndimage.label` with a full 3×3
/// structuring element does. Writes component ids into `comp` (0 = normal,
/// otherwise a global id `sizes.len()` at the time the component is found)
/// and pushes each component's pixel count onto `sizes`.
fn label_components(
    mask: &[u8],
    width: usize,
    height: usize,
    comp: &mut [u32],
    sizes: &mut Vec<u64>,
    stack: &mut Vec<usize>,
) {
    for start in 0..mask.len() {
        if mask[start] == 0 || comp[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        let mut size = 0u64;
        comp[start] = id;
        stack.clear();
        stack.push(start);
        while let Some(p) = stack.pop() {
            size += 1;
            let (x, y) = (p % width, p / width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let q = ny * width + nx;
                    if mask[q] != 0 && comp[q] == 0 {
                        comp[q] = id;
                        stack.push(q);
                    }
                }
            }
        }
        sizes.push(size);
    }
}

/// Normalised area under the Per-Region-Overlap curve (AUPRO) up to the
/// false-positive rate `max_fpr`, as in the MVTec AD evaluation code.
///
/// `maps[i]` and `masks[i]` are row-major `width × height` images; a mask
/// value `!= 0` marks a defect pixel.
///
/// * The ground-truth regions are the 8-connected components of every mask
///   (`scipy.ndimage.label` with a full 3×3 structure, as MVTec's reference
///   code uses); each region counts once, whatever its size.
/// * For a threshold `t` (a pixel is predicted defective when its score
///   `>= t`): PRO(t) = mean over all regions of all images of the fraction of
///   the region's pixels predicted defective; FPR(t) = fraction of all normal
///   pixels (mask 0, over all images) predicted defective.
/// * The curve is exact: it starts at (0, 0) and has one point per distinct
///   score, visited from high to low; tied pixels enter together. (This is
///   MVTec's `compute_pro`: cumulative sums over the sorted pixels, kept only at
///   the last pixel of each tie run.)
/// * PRO is integrated over FPR from 0 to `max_fpr` with the trapezoid rule;
///   if no point lies exactly at `max_fpr`, the PRO there is linearly
///   interpolated between its neighbours (MVTec's `trapezoid(…, x_max)`). The
///   area is divided by `max_fpr`, so a perfect detector scores 1.
///
/// Images with no defect pixels contribute only normal pixels. One sort of all
/// pixels, O(N log N), 12 bytes per pixel of working memory.
///
/// Errors: `max_fpr` outside (0, 1]; zero width or height; different numbers
/// of maps and masks; an image of the wrong size; a NaN score; no defect pixel
/// or no normal pixel in the whole set; more than 2³² pixels.
pub fn aupro(
    maps: &[&[f32]],
    masks: &[&[u8]],
    width: usize,
    height: usize,
    max_fpr: f64,
) -> Result<f64> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) {
        return Err(invalid(format!(
            "aupro: max_fpr must lie in (0, 1], got {max_fpr}"
        )));
    }
    if width == 0 || height == 0 {
        return Err(invalid(format!("aupro: empty image size {width}×{height}")));
    }
    let npix = width
        .checked_mul(height)
        .ok_or_else(|| invalid("aupro: image size overflows"))?;
    let total = check_maps("aupro", maps, masks)?;
    if let Some(i) = maps.iter().position(|m| m.len() != npix) {
        return Err(invalid(format!(
            "aupro: image {i} has {} pixels, expected {width}×{height} = {npix}",
            maps[i].len()
        )));
    }
    if total > u32::MAX as usize {
        return Err(invalid(format!(
            "aupro: {total} pixels, at most 2^32 - 1 supported"
        )));
    }

    // Component id of every pixel (0 = normal); sizes[0] is a placeholder.
    let mut comp = vec![0u32; total];
    let mut sizes: Vec<u64> = vec![0];
    let mut stack = Vec::new();
    for (i, k) in masks.iter().enumerate() {
        label_components(
            k,
            width,
            height,
            &mut comp[i * npix..(i + 1) * npix],
            &mut sizes,
            &mut stack,
        );
    }
    let regions = (sizes.len() - 1) as f64;
    let defect_px: u64 = sizes.iter().sum();
    let normal_px = total as u64 - defect_px;
    if sizes.len() == 1 || normal_px == 0 {
        return Err(invalid(format!(
            "aupro: needs both defect and normal pixels, got {defect_px} defect and {normal_px} normal"
        )));
    }
    // What one pixel adds to the PRO sum when it crosses the threshold.
    let weight: Vec<f64> = sizes
        .iter()
        .map(|&s| if s == 0 { 0.0 } else { 1.0 / s as f64 })
        .collect();

    let mut keys: Vec<u64> = Vec::with_capacity(total);
    for (i, m) in maps.iter().enumerate() {
        let base = (i * npix) as u64;
        keys.extend(
            m.iter()
                .enumerate()
                .map(|(j, &s)| ((ord_key(s) as u64) << 32) | (base + j as u64)),
        );
    }
    keys.sort_unstable();

    // Walk the thresholds from high to low, integrating as we go.
    let (mut fp, mut pro_sum, mut pro_c) = (0u64, 0.0f64, 0.0f64); // Neumaier sum
    let (mut px, mut py) = (0.0f64, 0.0f64);
    let mut area = 0.0f64;
    let n = keys.len();
    for idx in (0..n).rev() {
        let k = keys[idx];
        let c = comp[(k & 0xFFFF_FFFF) as usize];
        if c == 0 {
            fp += 1;
        } else {
            let w = weight[c as usize];
            let t = pro_sum + w;
            pro_c += if pro_sum.abs() >= w {
                (pro_sum - t) + w
            } else {
                (w - t) + pro_sum
            };
            pro_sum = t;
        }
        // Emit a curve point at the end of each tie run.
        if idx > 0 && keys[idx - 1] >> 32 == k >> 32 {
            continue;
        }
        let x = fp as f64 / normal_px as f64;
        let y = ((pro_sum + pro_c) / regions).min(1.0);
        if x <= max_fpr {
            area += 0.5 * (y + py) * (x - px);
            px = x;
            py = y;
            if x == max_fpr {
                break;
            }
        } else {
            // px < max_fpr < x: interpolate PRO at max_fpr.
            let yi = py + (y - py) * (max_fpr - px) / (x - px);
            area += 0.5 * (yi + py) * (max_fpr - px);
            break;
        }
    }
    // The last point is FPR = 1 >= max_fpr, so the loop always reaches max_fpr.
    Ok(area / max_fpr)
}

/// The best F1 score over all thresholds, and the threshold reaching it.
///
/// A sample is predicted positive when `score >= threshold`; every distinct
/// score is tried (tied samples cross together), so the result is exact.
/// F1 = 2·TP / (2·TP + FP + FN), compared exactly as integer fractions. When
/// several thresholds reach the same best F1, the highest one is returned. The
/// threshold is one of the input scores (-0.0 is reported as 0.0).
///
/// Errors: length mismatch, no samples, a NaN score, or only one class present
/// (the same rule as [`auroc`]).
pub fn f1_max(scores: &[f64], labels: &[bool]) -> Result<(f64, f64)> {
    let groups = tie_groups("f1_max", scores, labels)?;
    let p_total: u64 = groups.iter().map(|g| g.pos).sum();
    let (mut tp, mut fp) = (0u64, 0u64);
    // (numerator, denominator, threshold) of the best F1 so far.
    let mut best: Option<(u128, u128, f64)> = None;
    for g in &groups {
        tp += g.pos;
        fp += g.neg;
        let num = 2 * tp as u128;
        let den = (tp + fp + p_total) as u128; // 2TP + FP + FN
        let better = match best {
            None => true,
            Some((bn, bd, _)) => num * bd > bn * den,
        };
        if better {
            best = Some((num, den, g.score));
        }
    }
    let (num, den, t) = best.expect("at least one group");
    Ok((num as f64 / den as f64, t))
}
