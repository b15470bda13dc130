//! Samples to PNG, as diffusers pipelines convert them: (x / 2 + 0.5) clamped to [0, 1], times 255,
//! rounded to 8 bits. One channel gives grayscale, three give RGB.

use std::path::Path;

use image::{DynamicImage, ImageBuffer, RgbImage};

use crate::{Error, Result};

/// One image [C, H, W] in the model's [-1, 1] range to 8-bit pixels.
pub fn to_u8(x: f32) -> u8 {
    // numpy rounds halves to even.
    ((x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

/// A grid of `images` ([N, C, H, W] values) with `cols` columns and a 2-pixel gray gap.
pub fn grid(images: &[f32], n: usize, c: usize, h: usize, w: usize, cols: usize) -> Result<DynamicImage> {
    if c != 1 && c != 3 {
        return Err(Error::Invalid(format!("cannot write {c}-channel images as PNG (1 or 3 channels)")));
    }
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (gw, gh) = (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap);
    let mut rgb = vec![128u8; gw * gh * 3];
    for i in 0..n {
        let (ox, oy) = ((i % cols) * (w + gap), (i / cols) * (h + gap));
        for y in 0..h {
            for x in 0..w {
                for ch in 0..3 {
                    let src = images[((i * c + ch.min(c - 1)) * h + y) * w + x];
                    rgb[((oy + y) * gw + ox + x) * 3 + ch] = to_u8(src);
                }
            }
        }
    }
    let rgb: RgbImage = ImageBuffer::from_raw(gw as u32, gh as u32, rgb).expect("sized above"); // ok: exact size
    Ok(if c == 1 {
        DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb).to_luma8())
    } else {
        DynamicImage::ImageRgb8(rgb)
    })
}

/// A square-ish grid: ceil(sqrt(n)) columns.
pub fn square_cols(n: usize) -> usize {
    (n as f64).sqrt().ceil().max(1.0) as usize
}

pub fn save_png(img: &DynamicImage, path: &Path) -> Result<()> {
    save_png_with_text(img, path, &[])
}

/// Writes `img` as an 8-bit PNG carrying `text` as tEXt chunks (keyword, value), atomically: into a
/// temporary file beside `path`, renamed over it once whole, so a killed run never leaves a
/// truncated PNG under the final name.
pub fn save_png_with_text(img: &DynamicImage, path: &Path, text: &[(&str, String)]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| Error::Invalid(format!("cannot write {}: {e}", path.display()));
    let (color, pixels) = match img {
        DynamicImage::ImageLuma8(g) => (png::ColorType::Grayscale, g.as_raw().clone()),
        other => (png::ColorType::Rgb, other.to_rgb8().into_raw()),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut enc = png::Encoder::new(file, img.width(), img.height());
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        for (key, value) in text {
            // tEXt is Latin-1; a prompt with other characters (emoji, CJK) goes in an iTXt
            // (UTF-8) chunk, as web UIs write it.
            if value.chars().all(|c| (c as u32) < 256) {
                enc.add_text_chunk(key.to_string(), value.clone())?;
            } else {
                enc.add_itxt_chunk(key.to_string(), value.clone())?;
            }
        }
        let mut writer = enc.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(&e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(&e)
    })
}

/// The text chunks of a PNG file (what `save_png_with_text` wrote): its tEXt chunks in order,
/// then its iTXt ones.
pub fn png_text(path: &Path) -> Result<Vec<(String, String)>> {
    let file =
        std::fs::File::open(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> =
        info.uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    for t in &info.utf8_text {
        let text =
            t.get_text().map_err(|e| Error::Invalid(format!("{}: an iTXt chunk: {e}", path.display())))?;
        out.push((t.keyword.clone(), text));
    }
    Ok(out)
}

/// Reads a PNG or JPEG as [C, size, size] in [-1, 1], as training data is prepared
/// (`dataset::to_sample`: the shorter side resized to `size`, a centre crop, grey or RGB to
/// `channels`).
pub fn load_as_sample(path: &Path, channels: usize, size: usize) -> Result<Vec<f32>> {
    if channels != 1 && channels != 3 {
        return Err(Error::Invalid(format!(
            "cannot make a {channels}-channel sample from an image (1 or 3 channels)"
        )));
    }
    let img = image::open(path)
        .map_err(|e| Error::Invalid(format!("cannot read image {}: {e}", path.display())))?;
    let bytes = super::dataset::to_sample(img, channels, size);
    Ok(bytes.iter().map(|&b| crate::kernels::data::scale_u8(b)).collect())
}

/// An RGB image [3, H, W] in [-1, 1] as diffusers' VaeImageProcessor prepares an img2img
/// input: its own size with each side floored to a multiple of `multiple` (resized with
/// Lanczos where that changes it), /255, 2x - 1. Returns (values, H, W).
pub fn load_rgb_floored(path: &Path, multiple: usize) -> Result<(Vec<f32>, usize, usize)> {
    let img = image::open(path)
        .map_err(|e| Error::Invalid(format!("cannot read image {}: {e}", path.display())))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (fw, fh) = (w / multiple * multiple, h / multiple * multiple);
    if fw == 0 || fh == 0 {
        return Err(Error::Invalid(format!(
            "{}: {w}x{h} is smaller than {multiple} pixels a side",
            path.display()
        )));
    }
    let img = if (fw, fh) != (w, h) {
        img.resize_exact(fw as u32, fh as u32, image::imageops::FilterType::Lanczos3)
    } else {
        img
    };
    let rgb = img.to_rgb8();
    let mut out = vec![0.0f32; 3 * fh * fw];
    for (x, y, p) in rgb.enumerate_pixels() {
        for c in 0..3 {
            out[(c * fh + y as usize) * fw + x as usize] = crate::kernels::data::scale_u8(p[c]);
        }
    }
    Ok((out, fh, fw))
}

/// A mask image, which must be `image`'s size.
pub fn open_mask(path: &Path, image: &Path) -> Result<image::DynamicImage> {
    let open = |p: &Path| {
        image::open(p).map_err(|e| Error::Invalid(format!("cannot read image {}: {e}", p.display())))
    };
    let (m, i) = (open(path)?, open(image)?);
    if (m.width(), m.height()) != (i.width(), i.height()) {
        return Err(Error::Invalid(format!(
            "the mask {} is {}x{}, the image {}x{}: they must be the same size",
            path.display(),
            m.width(),
            m.height(),
            i.width(),
            i.height()
        )));
    }
    Ok(m)
}

/// An inpainting mask [H, W] as StableDiffusionInpaintPipeline's mask processor prepares it:
/// grey by PIL's convert("L") (ITU-R 601-2), resized with Lanczos to `image`'s floored size
/// where that changes it, /255, binarised at 0.5: 1 repaints, 0 keeps. The mask must be the
/// image's size and hold both.
pub fn load_mask_floored(path: &Path, image: &Path, multiple: usize) -> Result<Vec<f32>> {
    let m = open_mask(path, image)?;
    let rgb = m.to_rgb8();
    let luma = image::GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0.map(u32::from);
        image::Luma([((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8])
    });
    let (w, h) = (luma.width() as usize, luma.height() as usize);
    let (fw, fh) = (w / multiple * multiple, h / multiple * multiple);
    let luma = if (fw, fh) != (w, h) && fw > 0 && fh > 0 {
        image::imageops::resize(&luma, fw as u32, fh as u32, image::imageops::FilterType::Lanczos3)
    } else {
        luma
    };
    let mask: Vec<f32> =
        luma.pixels().map(|p| if p.0[0] as f32 / 255.0 >= 0.5 { 1.0 } else { 0.0 }).collect();
    if mask.iter().all(|&v| v == 0.0) {
        return Err(Error::Invalid(format!(
            "the mask {} is black everywhere: nothing to repaint (white is repainted)",
            path.display()
        )));
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_matches_diffusers() {
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(0.0), 128); // 127.5 rounds to even, as numpy does
        assert_eq!(to_u8(-5.0), 0);
        assert_eq!(to_u8(7.0), 255);
        assert_eq!(to_u8(f32::NAN), 0);
    }

    #[test]
    fn grid_layout() {
        let n = 5;
        let imgs: Vec<f32> = (0..n).flat_map(|i| vec![i as f32 / 4.0 * 2.0 - 1.0; 4]).collect();
        let g = grid(&imgs, n, 1, 2, 2, square_cols(n)).unwrap().to_luma8();
        assert_eq!((g.width(), g.height()), (3 * 2 + 2 * 2, 2 * 2 + 2));
        assert_eq!(g.get_pixel(0, 0).0[0], 0); // image 0 is -1
        assert_eq!(g.get_pixel(4, 0).0[0], 64); // image 1 at x = 4
        assert_eq!(g.get_pixel(2, 0).0[0], 128); // the gap
    }
}
