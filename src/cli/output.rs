//! Where a pipeline's images go: a PNG grid, or one PNG each in a folder named by global index,
//! and optionally the values as an .npy. Checked for writability before any work, refused when an
//! image came out non-finite, every PNG carrying the text that regenerates it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use wgpu_diffusion::io::{images, npy};
use wgpu_diffusion::pipeline::first_non_finite;
use wgpu_diffusion::{Error, Result};

/// Fails early (before minutes of sampling) when an output cannot be written.
pub fn check_writable(path: &Path) -> Result<()> {
    let existed = path.exists();
    let probe = std::fs::OpenOptions::new().create(true).append(true).open(path);
    match probe {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path); // leave nothing behind if sampling fails later
            }
            Ok(())
        }
        Err(e) => Err(Error::Invalid(format!("cannot write {}: {e}", path.display()))),
    }
}

/// The outputs a command was asked for.
pub struct Outputs<'a> {
    /// The grid (when `out_dir` is None).
    pub grid: &'a Path,
    /// One PNG per image instead, `{index:06}.png`.
    pub out_dir: Option<&'a Path>,
    pub save_npy: Option<&'a Path>,
    /// Each image's subfolder of `out_dir` by global index (a labelled dataset's class).
    pub folder: Option<&'a dyn Fn(usize) -> String>,
    /// The grid's columns (default: a square-ish grid).
    pub columns: Option<usize>,
}

/// One image's shape: (channels, height, width).
pub type Shape = (usize, usize, usize);

impl Outputs<'_> {
    /// Checks, before any work, that every output of the images from global index `first` can
    /// be written (creating `out_dir`).
    pub fn check(&self, first: usize) -> Result<()> {
        match self.out_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", dir.display())))?;
                let file = self.file(first);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", parent.display())))?;
                }
                check_writable(&file)?;
            }
            None => check_writable(self.grid)?,
        }
        if let Some(p) = self.save_npy {
            check_writable(p)?;
        }
        Ok(())
    }

    /// The PNG of the image with global index `k` in `out_dir` (in its folder).
    pub fn file(&self, k: usize) -> PathBuf {
        let dir = self.out_dir.unwrap_or(Path::new("."));
        let dir = match self.folder {
            Some(f) => dir.join(f(k)),
            None => dir.to_path_buf(),
        };
        dir.join(format!("{k:06}.png"))
    }

    /// Writes `out` ([images, C, H, W], the images with global indices `images`): the .npy, then
    /// one PNG each with `text(Some(k))` or a grid with `text(None)`, `before` (whole images)
    /// leading the grid's row. Returns what was written, in words. Nothing is written when an
    /// image is not finite: `non_finite(k)` says so.
    pub fn write(
        &self,
        out: &[f32],
        images: Range<usize>,
        (c, h, w): Shape,
        before: &[f32],
        text: &dyn Fn(Option<usize>) -> Vec<(&'static str, String)>,
        non_finite: &dyn Fn(usize) -> String,
    ) -> Result<String> {
        let per = c * h * w;
        let n = images.len();
        if let Some(k) = first_non_finite(out, per, images.start) {
            return Err(Error::Invalid(non_finite(k)));
        }
        if let Some(p) = self.save_npy {
            npy::write(p, &[n, c, h, w], out)?;
        }
        Ok(match self.out_dir {
            Some(dir) => {
                for (k, img) in images.zip(out.chunks(per)) {
                    let file = self.file(k);
                    if let Some(parent) = file.parent().filter(|_| self.folder.is_some()) {
                        std::fs::create_dir_all(parent).map_err(|e| {
                            Error::Invalid(format!("cannot create {}: {e}", parent.display()))
                        })?;
                    }
                    images::save_png_with_text(&images::grid(img, 1, c, h, w, 1)?, &file, &text(Some(k)))?;
                }
                format!("{n} images in {}", dir.display())
            }
            None if before.is_empty() => {
                let cols = self.columns.unwrap_or_else(|| images::square_cols(n));
                let grid = images::grid(out, n, c, h, w, cols)?;
                images::save_png_with_text(&grid, self.grid, &text(None))?;
                self.grid.display().to_string()
            }
            None => {
                // One row: the images before, then the results.
                let mut row = before.to_vec();
                row.extend_from_slice(out);
                let all = row.len() / per;
                images::save_png_with_text(&images::grid(&row, all, c, h, w, all)?, self.grid, &text(None))?;
                self.grid.display().to_string()
            }
        })
    }
}
