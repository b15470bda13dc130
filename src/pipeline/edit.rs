//! The inputs of the editing starts, prepared as diffusers' pipelines prepare them: the mask of
//! inpainting (the image is `io::images::load_as_sample`, as img2img's).

use std::path::Path;

use crate::io::dataset;
use crate::{Error, Result};

/// The mask as the pipeline prepares it: grey, thresholded at 0.5 (127 fills, 128 keeps), on
/// every channel; it must be the image's size. [channels, size, size], 1 keeps, 0 fills.
pub fn load_mask(path: &Path, image: &Path, channels: usize, size: usize) -> Result<Vec<f32>> {
    let m = crate::io::images::open_mask(path, image)?;
    // The image's resize and crop, nearest so the mask stays binary.
    let m = dataset::resize_and_crop(m, size, image::imageops::FilterType::Nearest);
    let plane: Vec<f32> =
        m.to_luma8().pixels().map(|p| if p.0[0] as f32 / 255.0 < 0.5 { 0.0 } else { 1.0 }).collect();
    if plane.iter().all(|&v| v == 1.0) {
        return Err(Error::Invalid(format!(
            "the mask {} keeps every pixel: nothing to fill (black is filled)",
            path.display()
        )));
    }
    if plane.iter().all(|&v| v == 0.0) {
        return Err(Error::Invalid(format!(
            "the mask {} fills every pixel: nothing is kept (white keeps; use `sample` for no input)",
            path.display()
        )));
    }
    Ok(plane.iter().copied().cycle().take(channels * size * size).collect())
}
