//! `inpaint`: RePaint, as diffusers' RePaintPipeline, with the whole resampling chain on the device.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::pipeline::{classes, Job, Pipeline, RepaintOptions, Start};
use wgpu_diffusion::{Error, Result};

use super::output::Outputs;
use super::{ClassArgs, DeviceArgs};

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
    pub classes: ClassArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: &InpaintArgs) -> Result<()> {
    if args.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let pipeline = Pipeline::open_or_bundled(args.model.as_deref())?;
    let options = RepaintOptions {
        steps: args.steps,
        jump_length: args.jump_length,
        jump_n_sample: args.jump_n_sample,
        eta: args.eta,
    };
    let inpaint = pipeline.inpaint_start(&args.image, &args.mask, &options)?;
    let (ch, s) = pipeline.image_shape();
    let classes = classes::resolve(&pipeline.unet_config, &args.classes.request(), args.batch)?;
    let outputs = Outputs {
        grid: &args.out,
        out_dir: args.out_dir.as_deref(),
        save_npy: args.save_npy.as_deref(),
        folder: None,
        columns: None,
    };
    outputs.check(0)?;
    let ctx = Context::new(&args.device.options()?)?;
    let mut loaded = pipeline.load(&ctx)?;
    let unet_evals = inpaint.plan.steps.len();
    eprintln!(
        "{}: {} filling(s) of {s}x{s}, RePaint with {} steps (jumps of {} levels, {} times): {} UNet evaluations and {} renoisings each, seed {}, on {}",
        pipeline.folder.root.display(),
        args.batch,
        args.steps,
        args.jump_length,
        args.jump_n_sample,
        unet_evals,
        inpaint.plan.mixes.len() - unet_evals,
        args.seed,
        ctx.info.name
    );
    let (image, mask) = (inpaint.image.clone(), inpaint.mask.clone());
    let start = Start::Repaint(inpaint);
    let bar = super::progress_bar(
        start.steps() as u64,
        "{bar:30} {pos}/{len} steps and undo steps  {per_sec}  ETA {eta}",
    );
    let t0 = Instant::now();
    let job = Job { classes, ..Job::new(args.seed, args.batch, start) };
    let out = loaded.run(&ctx, &job, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let params = format!(
        "wgpu-diffusion inpaint --image {} --mask {} --model {} --steps {} --jump-length {} --jump-n-sample {} --eta {} --batch {} --seed {}{}",
        args.image.display(),
        args.mask.display(),
        pipeline.folder.root.display(),
        args.steps,
        args.jump_length,
        args.jump_n_sample,
        args.eta,
        args.batch,
        args.seed,
        args.classes.flags()
    );
    let mut text =
        vec![("Software", format!("wgpu-diffusion {}", env!("CARGO_PKG_VERSION"))), ("parameters", params)];
    if let Some(c) = &job.classes {
        let cfg = &pipeline.unet_config;
        let names: Vec<String> = c.labels.iter().map(|&l| classes::name_of(cfg, l)).collect();
        text.push(("class", names.join(", ")));
        text.push(("guidance scale", c.guidance.map_or(1.0, |g| g.scale).to_string()));
    }
    // The grid is one row: the input, the mask (white keeps), the results.
    let mut before = image;
    before.extend(mask.iter().map(|&m| 2.0 * m - 1.0));
    let non_finite = |k| format!("result {k} came out with NaN or infinite values, so nothing was written");
    let mut written =
        outputs.write(&out, 0..args.batch, (ch, s, s), &before, &|_| text.clone(), &non_finite)?;
    if args.out_dir.is_none() {
        written += &format!(" (input, mask, {} results)", args.batch);
    }
    eprintln!(
        "wrote {written}: {secs:.1} s, {:.2} UNet evaluations/s",
        (unet_evals * args.batch) as f64 / secs
    );
    Ok(())
}
