//! Charts: the loss curve's layout (title, tick labels, size), its y scale and
//! its smoothing (no lag after a step, spikes ignored), the trajectory panels,
//! number labels, and bad sizes.
//! `preview_charts_are_written` leaves sample charts in the temp dir
//! (`plot_preview_*.png`) for a human to look at.

use image::RgbImage;
use scoredd::plot::{
    fmt_value, loss_curve, loss_scale, path_panels, running_mean, running_median, save_png,
    smooth_loss, smoothing_half_width, Corner, Mark, PathPanel, Trace, YScale,
};
use scoredd::viz::luma;
use scoredd::Error;

/// Pixels in [x0, x1) × [y0, y1) darker than mid-grey (text, axes, curve).
fn dark_in(img: &RgbImage, (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> usize {
    img.enumerate_pixels()
        .filter(|(x, y, p)| (x0..x1).contains(x) && (y0..y1).contains(y) && luma(p.0) < 128)
        .count()
}

/// A falling, noisy loss with a few spikes: `n` steps from about 2 to 0.05.
fn noisy_loss(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut s = 12345u64;
    let xs: Vec<f64> = (1..=n).map(|i| i as f64).collect();
    let ys = xs
        .iter()
        .map(|&x| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            let spike = if (x as usize).is_multiple_of(97) {
                1.0
            } else {
                0.0
            };
            (2.0 * (-x / 80.0).exp() + 0.05) * (0.6 + 0.8 * u) + spike
        })
        .collect();
    (xs, ys)
}

#[test]
fn loss_curve_has_a_title_tick_labels_and_the_asked_size() {
    let (xs, ys) = noisy_loss(800);
    let img = loss_curve(&xs, &ys, 800, 450).unwrap();
    assert_eq!(img.dimensions(), (800, 450));
    // The title: dark text in the top band, around the middle.
    assert!(dark_in(&img, (200, 600), (0, 40)) > 150, "no title");
    // The y tick labels and axis title, left of the plotting area.
    assert!(dark_in(&img, (0, 85), (60, 390)) > 150, "no y labels");
    // The x tick labels and axis title, under it.
    assert!(dark_in(&img, (100, 790), (395, 450)) > 150, "no x labels");
    // The left and right margins outside any text stay white.
    assert_eq!(dark_in(&img, (0, 12), (0, 450)), 0);
}

#[test]
fn loss_curve_survives_empty_single_and_non_finite_input() {
    for (xs, ys) in [
        (vec![], vec![]),
        (vec![1.0], vec![0.3]),
        (vec![1.0, 2.0, 3.0], vec![f64::NAN, f64::INFINITY, -1.0]),
        (vec![1.0, 2.0], vec![0.0, 0.0]),
        (vec![5.0, 6.0, 7.0], vec![1e-30, 1e30, 1.0]),
    ] {
        let img = loss_curve(&xs, &ys, 320, 200).unwrap();
        assert_eq!(img.dimensions(), (320, 200));
    }
    // Slices of different lengths: the extra values are ignored.
    assert!(loss_curve(&[1.0, 2.0, 3.0], &[0.5], 320, 200).is_ok());
}

#[test]
fn bad_picture_sizes_are_errors() {
    for (w, h) in [(0, 100), (100, 0), (100_000, 10)] {
        match loss_curve(&[1.0], &[1.0], w, h) {
            Err(Error::Invalid(msg)) => assert!(msg.contains("loss curve"), "{msg}"),
            other => panic!("{w}×{h}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn log_scale_when_the_loss_spans_a_decade() {
    assert_eq!(loss_scale(&[2.0, 0.5, 0.1]), YScale::Log);
    assert_eq!(loss_scale(&[1.0, 1e-4]), YScale::Log);
    assert_eq!(loss_scale(&[0.5, 0.45, 0.41]), YScale::Linear);
    // Zero or negative values have no logarithm.
    assert_eq!(loss_scale(&[2.0, 0.0, 0.01]), YScale::Linear);
    assert_eq!(loss_scale(&[2.0, -1.0]), YScale::Linear);
    // Non-finite values are left out, and nothing at all is linear.
    assert_eq!(
        loss_scale(&[f64::NAN, 3.0, 0.2, f64::INFINITY]),
        YScale::Log
    );
    assert_eq!(loss_scale(&[]), YScale::Linear);
    let (_, ys) = noisy_loss(800);
    assert_eq!(loss_scale(&ys), YScale::Log);
}

#[test]
fn log_scale_puts_equal_ratios_at_equal_heights() {
    // A loss halving every 100 steps: on a log axis its curve is a straight
    // line, so the curve's height at the middle step is halfway between its
    // heights at the ends. (On a linear axis it would sit far lower.)
    let xs: Vec<f64> = (0..=400).map(f64::from).collect();
    let ys: Vec<f64> = xs.iter().map(|x| 0.5f64.powf(x / 100.0)).collect();
    let img = loss_curve(&xs, &ys, 800, 450).unwrap();
    let curve = [31u8, 119, 180];
    let row_of = |x: u32| -> f64 {
        let rows: Vec<u32> = (0..450)
            .filter(|&y| {
                let p = img.get_pixel(x, y).0;
                p.iter().zip(curve).all(|(a, b)| a.abs_diff(b) < 40)
            })
            .collect();
        assert!(!rows.is_empty(), "no curve in column {x}");
        rows.iter().map(|&r| r as f64).sum::<f64>() / rows.len() as f64
    };
    let (a, m, b) = (row_of(200), row_of(440), row_of(680));
    assert!(a < m && m < b, "a falling loss goes down: {a} {m} {b}");
    let straight = (a + b) / 2.0;
    assert!(
        (m - straight).abs() < 6.0,
        "middle at row {m}, a straight line would be at {straight}"
    );
}

#[test]
fn running_median_keeps_a_step_sharp() {
    let ys: Vec<f64> = (0..400).map(|i| if i < 200 { 1.0 } else { 0.2 }).collect();
    for half in [1, 5, 20] {
        let m = running_median(&ys, half);
        assert_eq!(m.len(), ys.len());
        assert!(
            m[..200].iter().all(|&v| v == 1.0),
            "half {half}: late before the step"
        );
        assert!(
            m[200..].iter().all(|&v| v == 0.2),
            "half {half}: lags after the step"
        );
    }
}

#[test]
fn running_median_ignores_isolated_spikes() {
    let mut ys = vec![0.5; 100];
    ys[30] = 100.0;
    ys[31] = 80.0;
    ys[70] = -50.0;
    let m = running_median(&ys, 3);
    assert!(m.iter().all(|&v| v == 0.5), "{m:?}");
}

#[test]
fn smoothed_loss_does_not_lag_behind_a_step() {
    // A noisy loss that drops from 1.0 to 0.2 at step 500 of 1000.
    let mut s = 7u64;
    let ys: Vec<f64> = (0..1000)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = 0.1 * ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5);
            (if i < 500 { 1.0 } else { 0.2 }) + noise
        })
        .collect();
    let smooth = smooth_loss(&ys);
    let half = smoothing_half_width(ys.len());
    assert_eq!(half, 20);
    // Within a few steps of the jump (the final mean's half-width, 5) the
    // curve is at the new level; a trailing average of the same window
    // would still be halfway.
    let reach = half / 4 + 1;
    assert!(smooth[500 + reach..].iter().all(|v| (v - 0.2).abs() < 0.05));
    assert!(smooth[..500 - reach].iter().all(|v| (v - 1.0).abs() < 0.05));
    let trailing: f64 =
        ys[500 + reach - 2 * half..=500 + reach].iter().sum::<f64>() / (2 * half + 1) as f64;
    assert!(
        trailing > 0.5,
        "the test's step is not a real test: {trailing}"
    );
}

#[test]
fn smoothed_loss_follows_a_steady_trend_to_both_ends() {
    // Centred windows reproduce a straight line exactly, ends included: no
    // lead at the start, no lag at the end (a trailing window of the same
    // width would sit 20 steps behind at the end).
    let ys: Vec<f64> = (0..1000).map(|i| 2.0 - 0.001 * i as f64).collect();
    let smooth = smooth_loss(&ys);
    for (i, (s, y)) in smooth.iter().zip(&ys).enumerate() {
        assert!((s - y).abs() < 1e-12, "step {i}: {s} vs {y}");
    }
}

#[test]
fn running_mean_and_window_sizes() {
    // Windows shrink symmetrically at the ends: the end values are their own.
    assert_eq!(
        running_mean(&[1.0, 2.0, 3.0, 10.0], 1),
        vec![1.0, 2.0, 5.0, 10.0]
    );
    assert_eq!(
        running_median(&[5.0, 1.0, 4.0, 2.0, 3.0], 2),
        vec![5.0, 4.0, 3.0, 3.0, 3.0]
    );
    assert!(running_mean(&[], 3).is_empty());
    assert!(running_median(&[], 3).is_empty());
    assert_eq!(running_median(&[3.0, 1.0], 0), vec![3.0, 1.0]);
    assert_eq!(smoothing_half_width(10), 2);
    assert_eq!(smoothing_half_width(1000), 20);
    assert_eq!(smoothing_half_width(1_000_000), 50);
}

#[test]
fn tick_values_read_as_numbers() {
    assert_eq!(fmt_value(0.25), "0.25");
    assert_eq!(fmt_value(0.5), "0.5");
    assert_eq!(fmt_value(2.0), "2");
    assert_eq!(fmt_value(150.0), "150");
    assert_eq!(fmt_value(1234.5), "1230");
    assert_eq!(fmt_value(9.996), "10");
    assert_eq!(fmt_value(0.001), "0.001");
    assert_eq!(fmt_value(2e-5), "2e-5");
    assert_eq!(fmt_value(0.000_123_4), "1.23e-4");
    assert_eq!(fmt_value(1.5e6), "1.5e6");
    assert_eq!(fmt_value(-0.03), "-0.03");
    assert_eq!(fmt_value(0.0), "0");
}

fn panel<'a>(shade: &'a dyn Fn(f64, f64) -> f64, extent: f64) -> PathPanel<'a> {
    PathPanel {
        title: "two paths".into(),
        extent,
        shade,
        shade_color: [200, 200, 215],
        traces: vec![Trace {
            points: vec![(-5.0, -5.0), (0.0, 2.0), (5.0, 5.0)],
            color: [214, 39, 40],
            width: 2,
            alpha: 0.9,
        }],
        markers: vec![
            (Mark::Square([20, 20, 20]), (-5.0, -5.0)),
            (Mark::Dot([31, 119, 180]), (5.0, 5.0)),
        ],
        legend: vec![(Mark::Line([214, 39, 40]), "a path".into())],
        legend_corner: Corner::BottomRight,
    }
}

#[test]
fn path_panels_draw_side_by_side_with_titles() {
    let shade = |x: f64, y: f64| (-(x * x + y * y) / 20.0).exp();
    let img = path_panels(
        "figure",
        &[panel(&shade, 10.0), panel(&shade, 10.0)],
        (400, 420),
    )
    .unwrap();
    assert_eq!(img.dimensions(), (800, 460));
    // The figure title, and each panel's title.
    assert!(dark_in(&img, (300, 500), (0, 40)) > 40);
    for x0 in [0, 400] {
        assert!(dark_in(&img, (x0 + 100, x0 + 300), (40, 70)) > 40);
    }
    // The red path is drawn in both halves.
    let red = |x0: u32| {
        img.enumerate_pixels()
            .filter(|(x, _, p)| (x0..x0 + 400).contains(x) && p.0[0] > 180 && p.0[1] < 90)
            .count()
    };
    assert!(red(0) > 50 && red(400) > 50);
}

#[test]
fn path_panels_reject_bad_input() {
    let shade = |_: f64, _: f64| 0.0;
    assert!(matches!(
        path_panels("", &[], (100, 100)),
        Err(Error::Invalid(_))
    ));
    for extent in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            path_panels("", &[panel(&shade, extent)], (300, 300)),
            Err(Error::Invalid(_))
        ));
    }
    assert!(matches!(
        path_panels("", &[panel(&shade, 5.0)], (0, 300)),
        Err(Error::Invalid(_))
    ));
}

/// Writes sample charts (a log-scale and a linear-scale loss curve) to the
/// temp dir for a human to look at, and checks the files read back as the
/// pictures drawn.
#[test]
fn preview_charts_are_written() {
    let (xs, ys) = noisy_loss(800);
    let lin: Vec<f64> = ys.iter().map(|y| 0.4 + 0.05 * y).collect();
    let charts = [
        (
            "plot_preview_loss.png",
            loss_curve(&xs, &ys, 800, 450).unwrap(),
        ),
        (
            "plot_preview_linear.png",
            loss_curve(&xs[..60], &lin[..60], 800, 450).unwrap(),
        ),
    ];
    assert_ne!(
        charts[0].1, charts[1].1,
        "log and linear charts drew the same picture"
    );
    for (name, img) in &charts {
        let path = std::env::temp_dir().join(name);
        save_png(img, &path).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(&back, img, "{} does not read back as drawn", path.display());
    }
}
