//! `inpaint`: RePaint, as diffusers' RePaintPipeline, with the whole resampling chain on the device.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use wgpu_diffusion::diffusion::repaint::{self, InpaintInput, RepaintPlan};
use wgpu_diffusion::diffusion::SamplerKind;
use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::io::{dataset, images, npy};
use wgpu_diffusion::model::{UNet, UNetConfig};
use wgpu_diffusion::{Error, Result};

use super::sample::{check_writable, first_non_finite, model_folder, scheduler_config};
use super::DeviceArgs;

#[derive(Args, Debug)]
pub struct InpaintArgs {
    /// The image (PNG or JPEG, any size: resized and centre-cropped to the model's).
    #[arg(long)]
    pub image: PathBuf,
    /// The mask, the image's size: white keeps the pixel, black is filled (grey thresholded at 0.5).
    #[arg(long)]
    pub mask: PathBuf,
    /// A diffusers model folder (default: the bundled Fashion-MNIST model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Inference steps (diffusers' RePaintPipeline default).
    #[arg(long, default_value_t = 250)]
    pub steps: usize,
    /// Levels each jump back goes up.
    #[arg(long, default_value_t = 10)]
    pub jump_length: usize,
    /// Times each jump is made (1: no resampling).
    #[arg(long, default_value_t = 10)]
    pub jump_n_sample: usize,
    /// DDIM's eta for the unknown region (0: deterministic given the noise).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Fillings of the same hole to make.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A grid, in one row: the input, the mask, then every result.
    #[arg(long, default_value = "inpaint.png")]
    pub out: PathBuf,
    /// One PNG per result instead (000000.png, ...).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Also the results as an NCHW f32 .npy in the model's range.
    #[arg(long)]
    pub save_npy: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The mask as the pipeline prepares it: grey, thresholded at 0.5 (127 fills, 128 keeps), on
/// every channel; it must be the image's size.
fn load_mask(path: &Path, image: &Path, channels: usize, size: usize) -> Result<Vec<f32>> {
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

pub fn run(args: &InpaintArgs) -> Result<()> {
    if args.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let folder = model_folder(args.model.as_deref())?;
    let cfg = scheduler_config(&folder, SamplerKind::Ddpm)?;
    let plan = RepaintPlan::new(&cfg, args.steps, args.jump_length, args.jump_n_sample, args.eta)?;
    let text = std::fs::read_to_string(&folder.unet_config)
        .map_err(|source| Error::Io { path: folder.unet_config.display().to_string(), source })?;
    let c = UNetConfig::parse(&text, &folder.unet_config.display().to_string())?;
    let (ch, s) = (c.in_channels, c.sample_size);
    let image = images::load_as_sample(&args.image, ch, s)?;
    let mask = load_mask(&args.mask, &args.image, ch, s)?;
    match &args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", dir.display())))?;
            check_writable(&dir.join("000000.png"))?;
        }
        None => check_writable(&args.out)?,
    }
    if let Some(p) = &args.save_npy {
        check_writable(p)?;
    }
    let ctx = Context::new(&args.device.options()?)?;
    let mut unet = UNet::load(&ctx, &folder)?;
    let unet_evals = plan.steps.len();
    eprintln!(
        "{}: {} filling(s) of {s}x{s}, RePaint with {} steps (jumps of {} levels, {} times): {} UNet evaluations and {} renoisings each, seed {}, on {}",
        folder.root.display(),
        args.batch,
        args.steps,
        args.jump_length,
        args.jump_n_sample,
        unet_evals,
        plan.mixes.len() - unet_evals,
        args.seed,
        ctx.info.name
    );
    let bar = super::progress_bar(
        plan.entries.len() as u64,
        "{bar:30} {pos}/{len} steps and undo steps  {per_sec}  ETA {eta}",
    );
    let t0 = Instant::now();
    let input = InpaintInput {
        seed: args.seed,
        batch: args.batch,
        images: 0..args.batch,
        image: &image,
        mask: &mask,
        noise_tape: None,
    };
    let out = repaint::inpaint(&ctx, &mut unet, &plan, &input, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let per = ch * s * s;
    if let Some(k) = first_non_finite(&out, per, 0) {
        return Err(Error::Invalid(format!(
            "result {k} came out with NaN or infinite values, so nothing was written"
        )));
    }
    if let Some(p) = &args.save_npy {
        npy::write(p, &[args.batch, ch, s, s], &out)?;
    }
    let params = format!(
        "wgpu-diffusion inpaint --image {} --mask {} --model {} --steps {} --jump-length {} --jump-n-sample {} --eta {} --batch {} --seed {}",
        args.image.display(),
        args.mask.display(),
        folder.root.display(),
        args.steps,
        args.jump_length,
        args.jump_n_sample,
        args.eta,
        args.batch,
        args.seed
    );
    let text =
        vec![("Software", format!("wgpu-diffusion {}", env!("CARGO_PKG_VERSION"))), ("parameters", params)];
    let written = match &args.out_dir {
        Some(dir) => {
            for (k, img) in out.chunks(per).enumerate() {
                images::save_png_with_text(
                    &images::grid(img, 1, ch, s, s, 1)?,
                    &dir.join(format!("{k:06}.png")),
                    &text,
                )?;
            }
            format!("{} results in {}", args.batch, dir.display())
        }
        None => {
            // One row: the input, the mask (white keeps), the results.
            let mut row = image.clone();
            row.extend(mask.iter().map(|&m| 2.0 * m - 1.0));
            row.extend_from_slice(&out);
            let n = args.batch + 2;
            images::save_png_with_text(&images::grid(&row, n, ch, s, s, n)?, &args.out, &text)?;
            format!("{} (input, mask, {} results)", args.out.display(), args.batch)
        }
    };
    eprintln!(
        "wrote {written}: {secs:.1} s, {:.2} UNet evaluations/s",
        (unet_evals * args.batch) as f64 / secs
    );
    Ok(())
}
