//! A loss curve as a PNG, drawn without a plotting library: each step's loss (light) and its
//! running mean (dark) over steps, a log-scaled loss axis with labelled ticks (a 3x5 pixel
//! font), and up to two series (ours and a reference run's).

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::Result;

const W: u32 = 720;
const H: u32 = 400;
const LEFT: u32 = 56;
const BOTTOM: u32 = 28;
const TOP: u32 = 16;
const RIGHT: u32 = 16;

/// One curve: (step, loss) points and its colour.
pub struct Series<'a> {
    pub points: &'a [(f64, f64)],
    pub rgb: [u8; 3],
}

/// 3x5 glyphs for tick labels: digits, '.', 'e', '-', 'k'.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        'k' => [4, 5, 6, 5, 5],
        _ => [0; 5],
    }
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, scale: u32) {
    for (i, c) in s.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (px, py) =
                                (x + (i as u32 * 4 + col) * scale + dx, y + row as u32 * scale + dy);
                            if px < W && py < H {
                                img.put_pixel(px, py, Rgb([0, 0, 0]));
                            }
                        }
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for k in 0..=n {
        let t = k as f64 / n as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        if x >= 0.0 && y >= 0.0 && (x as u32) < W && (y as u32) < H {
            img.put_pixel(x as u32, y as u32, Rgb(rgb));
        }
    }
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 1000.0 && v % 1000.0 == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v >= 0.01 {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.0e}")
    }
}

/// The running mean over `window` points.
pub fn running_mean(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= points[i - window].1;
        }
        out.push((x, sum / (i + 1).min(window) as f64));
    }
    out
}

/// Draws `series` (each as its points, light, and their running mean, dark) into a PNG.
pub fn loss_curve(path: &Path, series: &[Series]) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let all = series.iter().flat_map(|s| s.points.iter()).filter(|p| p.1 > 0.0 && p.1.is_finite());
    let (mut x_max, mut lo, mut hi) = (1.0f64, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x_max = x_max.max(x);
        lo = lo.min(y);
        hi = hi.max(y);
    }
    if lo > hi {
        (lo, hi) = (0.01, 1.0);
    }
    let (l0, l1) = (lo.log10().floor(), hi.log10().ceil().max(lo.log10().floor() + 1.0));
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let px = |x: f64| LEFT as f64 + x / x_max * pw;
    let py = |y: f64| TOP as f64 + (l1 - y.max(1e-30).log10()) / (l1 - l0) * ph;
    // Axes, decade ticks with 2x and 5x, and step ticks.
    let grey = [220, 220, 220];
    let mut decade = l0;
    while decade <= l1 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powf(decade);
            let y = py(v);
            if y >= TOP as f64 - 0.5 && y <= (H - BOTTOM) as f64 + 0.5 {
                line(&mut img, (LEFT as f64, y), ((W - RIGHT) as f64, y), grey);
                text(&mut img, 4, (y as u32).saturating_sub(5), &label(v), 2);
            }
        }
        decade += 1.0;
    }
    let step_tick = 10f64.powf((x_max / 4.0).log10().floor()).max(1.0);
    let step_tick =
        [1.0, 2.0, 5.0].iter().map(|m| m * step_tick).find(|t| x_max / t <= 8.0).unwrap_or(step_tick * 10.0);
    let mut x = 0.0;
    while x <= x_max {
        line(&mut img, (px(x), TOP as f64), (px(x), (H - BOTTOM) as f64), grey);
        text(&mut img, (px(x) as u32).saturating_sub(6), H - BOTTOM + 6, &label(x), 2);
        x += step_tick;
    }
    let black = [0, 0, 0];
    line(&mut img, (LEFT as f64, TOP as f64), (LEFT as f64, (H - BOTTOM) as f64), black);
    line(&mut img, (LEFT as f64, (H - BOTTOM) as f64), ((W - RIGHT) as f64, (H - BOTTOM) as f64), black);
    for s in series {
        let light = s.rgb.map(|c| 255 - (255 - c) / 3);
        for w in s.points.windows(2) {
            line(&mut img, (px(w[0].0), py(w[0].1)), (px(w[1].0), py(w[1].1)), light);
        }
        let window = (s.points.len() / 30).max(1);
        let mean = running_mean(s.points, window);
        for w in mean.windows(2) {
            line(&mut img, (px(w[0].0), py(w[0].1)), (px(w[1].0), py(w[1].1)), s.rgb);
            line(&mut img, (px(w[0].0), py(w[0].1) + 1.0), (px(w[1].0), py(w[1].1) + 1.0), s.rgb);
        }
    }
    super::images::save_png(&image::DynamicImage::ImageRgb8(img), path)
}
