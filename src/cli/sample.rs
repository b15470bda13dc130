//! `sample`: noise to images with the whole reverse chain on the device.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use wgpu_diffusion::diffusion::{self, ChainInput, SamplerKind, SamplerPlan, SchedulerConfig};
use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::io::{images, npy};
use wgpu_diffusion::model::{ModelFolder, UNet};
use wgpu_diffusion::{Error, Result};

use super::DeviceArgs;

/// The bundled model and the default sampler chosen for it (README: "Choosing the default").
pub const DEFAULT_MODEL: &str = "weights/fashion-mnist";
pub const DEFAULT_SAMPLER: &str = "dpm++2m";
pub const DEFAULT_STEPS: usize = 20;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A diffusers model folder (flat or pipeline layout); default: the bundled Fashion-MNIST model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// ddpm, ddim, dpm++2m, euler or euler-a.
    #[arg(long, default_value = DEFAULT_SAMPLER)]
    pub scheduler: String,
    /// Denoising steps.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: usize,
    /// Images to make (default 16, or the batch of --init-noise).
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// DDIM's eta (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Standard-normal x_T as an NCHW f32 .npy [B, C, H, W], scaled by the sampler's init_noise_sigma.
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    /// Also write the final samples as an NCHW f32 .npy, in the model's range (before the 8-bit conversion).
    #[arg(long)]
    pub save_npy: Option<PathBuf>,
    /// The PNG grid to write.
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Write one numbered PNG per image into this folder instead of a grid.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The model folder to use: the one given, or the bundled one (found from the working directory or,
/// for `cargo run` from elsewhere, from the source tree).
pub fn model_folder(given: Option<&Path>) -> Result<ModelFolder> {
    if let Some(dir) = given {
        return ModelFolder::open(dir);
    }
    let here = PathBuf::from(DEFAULT_MODEL);
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL);
    match [here, source_tree].into_iter().find(|p| p.is_dir()) {
        Some(dir) => ModelFolder::open(&dir),
        None => Err(Error::Invalid(format!(
            "the bundled model {DEFAULT_MODEL} is not here; run from the repository or give --model DIR"
        ))),
    }
}

/// The scheduler config for `kind`, from the model folder's scheduler_config.json when it has one.
pub fn scheduler_config(folder: &ModelFolder, kind: SamplerKind) -> Result<SchedulerConfig> {
    match &folder.scheduler_config {
        Some(path) => {
            let shown = path.display().to_string();
            let text =
                std::fs::read_to_string(path).map_err(|source| Error::Io { path: shown.clone(), source })?;
            SchedulerConfig::resolve(kind, Some(&SchedulerConfig::parse_file(&text, &shown)?), &shown)
        }
        None => SchedulerConfig::resolve(kind, None, "default scheduler config"),
    }
}

/// Fails early (before minutes of sampling) when an output cannot be written.
fn check_writable(path: &Path) -> Result<()> {
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

pub fn run(args: &SampleArgs) -> Result<()> {
    let kind = SamplerKind::parse(&args.scheduler)?;
    let folder = model_folder(args.model.as_deref())?;
    let cfg = scheduler_config(&folder, kind)?;
    let plan = SamplerPlan::new(&cfg, args.steps, args.eta)?;
    let init = match &args.init_noise {
        Some(path) => Some(npy::read(path)?),
        None => None,
    };
    let batch = match (&init, args.batch) {
        (Some((shape, _)), Some(b)) if shape.first() != Some(&b) => {
            return Err(Error::Invalid(format!("--batch {b} but --init-noise holds shape {shape:?}")))
        }
        (Some((shape, _)), _) => shape.first().copied().unwrap_or(0),
        (None, b) => b.unwrap_or(16),
    };
    if batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        check_writable(&dir.join("000.png"))?;
    } else {
        check_writable(&args.out)?;
    }
    if let Some(p) = &args.save_npy {
        check_writable(p)?;
    }

    let ctx = Context::new(&args.device.options()?)?;
    let mut unet = UNet::load(&ctx, &folder)?;
    let c = unet.config.clone();
    let (ch, s) = (c.in_channels, c.sample_size);
    if let Some((shape, _)) = &init {
        if shape.as_slice() != [batch, ch, s, s] {
            return Err(Error::Invalid(format!(
                "--init-noise has shape {shape:?}, this model needs [{batch}, {ch}, {s}, {s}]"
            )));
        }
    }
    eprintln!(
        "{}: {batch} image(s) of {s}x{s}, {} with {} steps, seed {}, on {}",
        folder.root.display(),
        args.scheduler,
        args.steps,
        args.seed,
        ctx.info.name
    );
    // The chain reports (done, total); total counts steps over all micro-batches.
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = Instant::now();
    let input = ChainInput { seed: args.seed, batch, init_noise: init.as_ref().map(|(_, v)| v.as_slice()) };
    let mut total_steps = args.steps;
    let out = diffusion::sample(&ctx, &mut unet, &plan, &input, &mut |done, total| {
        total_steps = total;
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();

    if let Some(p) = &args.save_npy {
        npy::write(p, &[batch, ch, s, s], &out)?;
    }
    let written = match &args.out_dir {
        Some(dir) => {
            let per = ch * s * s;
            for i in 0..batch {
                let img = images::grid(&out[i * per..(i + 1) * per], 1, ch, s, s, 1)?;
                images::save_png(&img, &dir.join(format!("{i:03}.png")))?;
            }
            format!("{batch} images in {}", dir.display())
        }
        None => {
            images::save_png(&images::grid(&out, batch, ch, s, s, images::square_cols(batch))?, &args.out)?;
            args.out.display().to_string()
        }
    };
    eprintln!(
        "wrote {written}: {:.1} s, {:.2} steps/s, {:.2} images/s",
        secs,
        total_steps as f64 / secs,
        batch as f64 / secs
    );
    Ok(())
}
