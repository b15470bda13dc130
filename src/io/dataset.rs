//! Training data from what users have: a folder of PNG/JPEG images (searched recursively), an IDX
//! image file (MNIST, Fashion-MNIST; gzipped or not), a folder holding one (Debian's
//! `dataset-fashion-mnist` installs `/usr/share/datasets/fashion-mnist/`: its training images are
//! used), or an NCHW `.npy` (uint8 in [0, 255], or float32 already in [-1, 1]). Everything becomes
//! [N, C, S, S] at the model's channels and sample size: images as train_unconditional's
//! transforms make them (shorter side resized to S, bilinear; centre crop; grey or RGB), kept as
//! 8-bit values for the device (`kernels::data` scales them to [-1, 1]). A file that cannot be
//! used is named in a one-line error.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::{imageops::FilterType, DynamicImage};

use super::npy::{self, Values};
use crate::{Error, Result};

/// A dataset in memory: `count` images of [channels, size, size], C-order.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub source: String,
    pub count: usize,
    pub channels: usize,
    pub size: usize,
    pub values: Values,
}

/// The IDX files a dataset folder may hold, training images first.
const IDX_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-images-idx3-ubyte",
    "train-images.idx3-ubyte",
    "train-images-idx3-ubyte.bin",
];
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}

impl Dataset {
    /// Loads `path` as images of `channels` (1 or 3) x `size` x `size`.
    pub fn load(path: &Path, channels: usize, size: usize) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::Invalid(format!(
                "a model with {channels} input channels cannot train on images (1 or 3 channels)"
            )));
        }
        if path.is_dir() {
            if let Some(idx) = IDX_NAMES.iter().map(|n| path.join(n)).find(|p| p.is_file()) {
                return Self::idx(&idx, channels, size);
            }
            return Self::folder(path, channels, size);
        }
        if !path.is_file() {
            return Err(bad(path, "no such file or folder"));
        }
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
            return Self::npy(path, channels, size);
        }
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        if ext.as_deref().is_some_and(|e| IMAGE_EXTENSIONS.contains(&e)) {
            return Err(bad(path, "a single image: give the folder that holds the training images"));
        }
        Self::idx(path, channels, size)
    }

    /// Image `i`'s values, widened to f32 (8-bit values as they are).
    pub fn image(&self, i: usize) -> Vec<f32> {
        let per = self.channels * self.size * self.size;
        match &self.values {
            Values::U8(v) => v[i * per..(i + 1) * per].iter().map(|&b| b as f32).collect(),
            Values::F32(v) => v[i * per..(i + 1) * per].to_vec(),
        }
    }

    /// An IDX file of unsigned bytes, [N, H, W] (gzipped when it starts with gzip's magic).
    fn idx(path: &Path, channels: usize, size: usize) -> Result<Self> {
        let raw =
            std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = vec![];
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .map_err(|e| bad(path, format!("not a readable gzip file ({e})")))?;
            out
        } else {
            raw
        };
        if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
            return Err(bad(path, "not an IDX file (nor a folder of images, nor a .npy)"));
        }
        if bytes[2] != 0x08 {
            return Err(bad(
                path,
                format!("IDX type 0x{:02x}: only unsigned bytes (0x08) are images", bytes[2]),
            ));
        }
        let dims = bytes[3] as usize;
        if dims != 3 {
            return Err(bad(
                path,
                format!("IDX with {dims} dimensions: images are [N, H, W] (labels are not images)"),
            ));
        }
        if bytes.len() < 4 + 4 * dims {
            return Err(bad(path, "truncated IDX header"));
        }
        let dim =
            |k: usize| u32::from_be_bytes(bytes[4 + 4 * k..8 + 4 * k].try_into().expect("4 bytes")) as usize; // ok: checked
        let (n, h, w) = (dim(0), dim(1), dim(2));
        let data = &bytes[4 + 4 * dims..];
        if n == 0 || data.len() < n * h * w {
            return Err(bad(
                path,
                format!("holds {} bytes of images, [{n}, {h}, {w}] needs {}", data.len(), n * h * w),
            ));
        }
        let mut values = Vec::with_capacity(n * channels * size * size);
        for img in data[..n * h * w].chunks_exact(h * w) {
            let grey = image::GrayImage::from_raw(w as u32, h as u32, img.to_vec()).expect("sized"); // ok: h * w bytes
            values.extend(to_sample(DynamicImage::ImageLuma8(grey), channels, size));
        }
        Ok(Self { source: path.display().to_string(), count: n, channels, size, values: Values::U8(values) })
    }

    /// Every PNG/JPEG under `dir` (sorted by path, so the order is the same everywhere).
    fn folder(dir: &Path, channels: usize, size: usize) -> Result<Self> {
        let mut files = vec![];
        walk(dir, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(bad(
                dir,
                "holds no PNG or JPEG images and no IDX file (train-images-idx3-ubyte[.gz]); \
                 on Debian, `apt-get install dataset-fashion-mnist` puts Fashion-MNIST in /usr/share/datasets/fashion-mnist",
            ));
        }
        let mut values = Vec::with_capacity(files.len() * channels * size * size);
        for f in &files {
            let img = image::open(f).map_err(|e| bad(f, format!("cannot read this image ({e})")))?;
            values.extend(to_sample(img, channels, size));
        }
        Ok(Self {
            source: dir.display().to_string(),
            count: files.len(),
            channels,
            size,
            values: Values::U8(values),
        })
    }

    /// An NCHW array: uint8 (resized like images where its size differs) or float32 in [-1, 1]
    /// (at the model's exact shape).
    fn npy(path: &Path, channels: usize, size: usize) -> Result<Self> {
        let (shape, values) = npy::read_values(path)?;
        let [n, c, h, w] = shape[..] else {
            return Err(bad(path, format!("shape {shape:?}: a dataset is NCHW [N, C, H, W]")));
        };
        if n == 0 || (c != 1 && c != 3) {
            return Err(bad(path, format!("shape {shape:?}: N images of 1 or 3 channels")));
        }
        let source = path.display().to_string();
        match values {
            Values::F32(v) => {
                if [c, h, w] != [channels, size, size] {
                    return Err(bad(
                        path,
                        format!("float32 shape {shape:?}: the model takes [N, {channels}, {size}, {size}] (uint8 arrays are resized)"),
                    ));
                }
                if let Some(i) = v.iter().position(|x| !(-1.0..=1.0).contains(x)) {
                    return Err(bad(
                        path,
                        format!(
                            "value {} at {i}: float32 datasets are in [-1, 1] (give uint8 for [0, 255])",
                            v[i]
                        ),
                    ));
                }
                Ok(Self { source, count: n, channels, size, values: Values::F32(v) })
            }
            Values::U8(v) => {
                let mut out = Vec::with_capacity(n * channels * size * size);
                for img in v.chunks_exact(c * h * w) {
                    out.extend(to_sample(planar_image(img, c, h, w), channels, size));
                }
                Ok(Self { source, count: n, channels, size, values: Values::U8(out) })
            }
        }
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| Error::Io { path: dir.display().to_string(), source })?.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
        {
            files.push(path);
        }
    }
    Ok(())
}

/// [C, H, W] bytes as an image (grey or RGB).
fn planar_image(img: &[u8], c: usize, h: usize, w: usize) -> DynamicImage {
    if c == 1 {
        return DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w as u32, h as u32, img.to_vec()).expect("sized"),
        ); // ok: h * w
    }
    let mut rgb = Vec::with_capacity(3 * h * w);
    for i in 0..h * w {
        rgb.extend((0..3).map(|ch| img[ch * h * w + i]));
    }
    DynamicImage::ImageRgb8(image::RgbImage::from_raw(w as u32, h as u32, rgb).expect("sized"))
    // ok: 3 * h * w
}

/// The shorter side resized to `size` with `filter`, then a centre crop to `size` x `size`.
pub fn resize_and_crop(img: DynamicImage, size: usize, filter: FilterType) -> DynamicImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == size && h == size {
        return img;
    }
    let short = w.min(h).max(1);
    let (nw, nh) = ((w * size).div_ceil(short).max(size), (h * size).div_ceil(short).max(size));
    let resized = img.resize_exact(nw as u32, nh as u32, filter);
    resized.crop_imm(((nw - size) / 2) as u32, ((nh - size) / 2) as u32, size as u32, size as u32)
}

/// train_unconditional's transforms up to ToTensor: the shorter side resized to `size`
/// (bilinear), a centre crop, then `channels` planes of 8-bit values.
pub fn to_sample(img: DynamicImage, channels: usize, size: usize) -> Vec<u8> {
    let img = resize_and_crop(img, size, FilterType::Triangle);
    if channels == 1 {
        return img.to_luma8().into_raw();
    }
    let rgb = img.to_rgb8();
    let mut out = vec![0; 3 * size * size];
    for (i, p) in rgb.pixels().enumerate() {
        for ch in 0..3 {
            out[ch * size * size + i] = p.0[ch];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorter_side_resize_and_centre_crop() {
        // A 4x2 image (left half black, right half white) to 2x2: resized to 4x2, then the
        // middle two columns.
        let img = image::GrayImage::from_fn(8, 4, |x, _| image::Luma([if x < 4 { 0 } else { 255 }]));
        let out = to_sample(DynamicImage::ImageLuma8(img), 1, 2);
        assert_eq!(out.len(), 4);
        assert!(out[0] < 128 && out[1] > 128, "{out:?}");
        // Grey to RGB repeats the plane.
        let grey = image::GrayImage::from_fn(2, 2, |x, y| image::Luma([(10 * x + y) as u8]));
        let rgb = to_sample(DynamicImage::ImageLuma8(grey), 3, 2);
        assert_eq!(&rgb[..4], &rgb[4..8]);
        assert_eq!(rgb[1], 10);
    }
}
