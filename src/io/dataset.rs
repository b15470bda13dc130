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

/// A dataset in memory: `count` images of [channels, size, size], C-order, and their class
/// labels where the data has them.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub source: String,
    pub count: usize,
    pub channels: usize,
    pub size: usize,
    pub values: Values,
    pub labels: Option<Labels>,
}

/// Class labels: one id an image, and the class names where the data names them (an image
/// folder's subfolders).
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub ids: Vec<u32>,
    pub names: Option<Vec<String>>,
    /// Where the labels came from, for errors.
    pub source: String,
}

impl Labels {
    /// The number of classes: the names', else the largest id + 1.
    pub fn classes(&self) -> usize {
        match &self.names {
            Some(n) => n.len(),
            None => self.ids.iter().max().map_or(0, |&m| m as usize + 1),
        }
    }
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
                return Self::idx(&idx, channels, size)?.with_idx_labels(&idx);
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
        Self::idx(path, channels, size)?.with_idx_labels(path)
    }

    /// Labels from an .npy of integers, one per image (`--labels`), replacing any others.
    pub fn with_labels_file(mut self, path: &Path) -> Result<Self> {
        let ids = npy::read_labels(path)?;
        if ids.len() != self.count {
            return Err(bad(
                path,
                format!("{} labels for the {} images of {}", ids.len(), self.count, self.source),
            ));
        }
        self.labels = Some(Labels { ids, names: None, source: path.display().to_string() });
        Ok(self)
    }

    /// The IDX label file beside IDX images (train-images-idx3-ubyte.gz ->
    /// train-labels-idx1-ubyte.gz), where there is one.
    fn with_idx_labels(mut self, images: &Path) -> Result<Self> {
        let name = images.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let label_name = name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1");
        if label_name == name {
            return Ok(self);
        }
        let path = images.with_file_name(label_name);
        if !path.is_file() {
            return Ok(self);
        }
        let ids = idx_labels(&path)?;
        if ids.len() != self.count {
            return Err(bad(
                &path,
                format!("{} labels for the {} images of {}", ids.len(), self.count, self.source),
            ));
        }
        self.labels = Some(Labels { ids, names: None, source: path.display().to_string() });
        Ok(self)
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
        let bytes = read_maybe_gzip(path)?;
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
        Ok(Self {
            source: path.display().to_string(),
            count: n,
            channels,
            size,
            values: Values::U8(values),
            labels: None,
        })
    }

    /// Every PNG/JPEG under `dir` (sorted by path, so the order is the same everywhere). A folder
    /// holding only subfolders of images is labelled as torchvision's ImageFolder labels it: each
    /// subfolder a class, classes in sorted name order.
    fn folder(dir: &Path, channels: usize, size: usize) -> Result<Self> {
        let mut files = vec![];
        walk(dir, &mut files)?;
        files.sort();
        let labels = folder_labels(dir, &files)?;
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
            labels,
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
                Ok(Self { source, count: n, channels, size, values: Values::F32(v), labels: None })
            }
            Values::U8(v) => {
                let mut out = Vec::with_capacity(n * channels * size * size);
                for img in v.chunks_exact(c * h * w) {
                    out.extend(to_sample(planar_image(img, c, h, w), channels, size));
                }
                Ok(Self { source, count: n, channels, size, values: Values::U8(out), labels: None })
            }
        }
    }
}

/// An ImageFolder's labels for `files` (sorted, all under `dir`): None unless every image sits
/// in a subfolder of `dir`, each subfolder being a class.
fn folder_labels(dir: &Path, files: &[PathBuf]) -> Result<Option<Labels>> {
    let class_of = |f: &PathBuf| -> Option<String> {
        let rel = f.strip_prefix(dir).ok()?;
        let mut parts = rel.components();
        let first = parts.next()?.as_os_str().to_string_lossy().into_owned();
        parts.next().map(|_| first)
    };
    let classes: Option<Vec<String>> = files.iter().map(class_of).collect();
    let Some(classes) = classes else { return Ok(None) };
    let mut names = classes.clone();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(None);
    }
    let ids = classes.iter().map(|c| names.binary_search(c).map_or(0, |i| i as u32)).collect();
    Ok(Some(Labels { ids, names: Some(names), source: format!("the subfolders of {}", dir.display()) }))
}

/// An IDX label file: magic 0x00000801, a big-endian count, one byte a label (gzipped or not).
fn idx_labels(path: &Path) -> Result<Vec<u32>> {
    let bytes = read_maybe_gzip(path)?;
    if bytes.len() < 8 || bytes[..4] != [0, 0, 0x08, 0x01] {
        return Err(bad(path, "not an IDX label file (magic 0x00000801)"));
    }
    let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if bytes.len() < 8 + n {
        return Err(bad(path, format!("holds {} labels, its header says {n}", bytes.len() - 8)));
    }
    Ok(bytes[8..8 + n].iter().map(|&b| b as u32).collect())
}

/// A file's bytes, gunzipped when it starts with gzip's magic.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = vec![];
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|e| bad(path, format!("not a readable gzip file ({e})")))?;
    Ok(out)
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
