//! `noise`: the forward process of one image, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at evenly
//! spaced t from 0 to T - 1, noised on the device, drawn as one strip.

use std::path::PathBuf;

use clap::Args;
use wgpu_diffusion::diffusion::SamplerKind;
use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::io::images;
use wgpu_diffusion::kernels::{diffusion as diff, rng};
use wgpu_diffusion::pipeline::Pipeline;
use wgpu_diffusion::{Error, Result};

use super::DeviceArgs;

#[derive(Args, Debug)]
pub struct NoiseArgs {
    /// The image to noise (resized to the model's sample size).
    #[arg(long)]
    pub image: PathBuf,
    /// The model folder whose size, channels and noise schedule to use; default: the bundled model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Frames in the strip.
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: &NoiseArgs) -> Result<()> {
    let pipeline = Pipeline::open_or_bundled(args.model.as_deref())?;
    let cfg = &pipeline.unet_config;
    let sched = pipeline.scheduler(SamplerKind::Ddpm)?;
    let t_train = sched.num_train_timesteps()?;
    let frames = args.steps;
    if frames < 2 || frames > t_train {
        return Err(Error::Invalid(format!("--steps {frames}: must be between 2 and {t_train}")));
    }
    let (c, s) = (cfg.in_channels, cfg.sample_size);
    let x0 = images::load_as_sample(&args.image, c, s)?;
    let ctx = Context::new(&args.device.options()?)?;
    let per = x0.len();
    let ts: Vec<u32> =
        (0..frames).map(|k| ((k * (t_train - 1)) as f64 / (frames - 1) as f64).round() as u32).collect();
    let ac: Vec<f64> = sched.alphas_cumprod()?.iter().map(|&a| a as f64).collect();
    let x0s: Vec<f32> = (0..frames).flat_map(|_| x0.iter().copied()).collect();
    let x0_t = ctx.upload(&x0s, &[frames, per])?;
    let eps = ctx.zeros(&[frames, per])?;
    let t_buf = ctx.upload_u32(&ts, &[frames])?;
    let table = ctx.upload(&diff::noise_table(&ac), &[t_train, 2])?;
    let out = ctx.zeros(&[frames, per])?;
    // One noise draw for the whole strip, so each frame shows the same noise growing.
    let key = rng::NoiseKey { seed: args.seed, stream_base: 0, substream: 0 };
    let eps_one = ctx.zeros(&[per])?;
    ctx.run(&[rng::normal(&ctx, key, 1, per, None, &eps_one.buffer)?]);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    for k in 0..frames {
        enc.copy_buffer_to_buffer(&eps_one.buffer, 0, &eps.buffer, (k * per * 4) as u64, (per * 4) as u64);
    }
    ctx.queue.submit([enc.finish()]);
    ctx.run(&[diff::add_noise(
        &ctx,
        frames,
        per,
        t_train,
        &x0_t.buffer,
        &eps.buffer,
        &t_buf.buffer,
        &table.buffer,
        &out.buffer,
    )?]);
    let strip = ctx.read(&out)?;
    images::save_png(&images::grid(&strip, frames, c, s, s, frames)?, &args.out)?;
    eprintln!("wrote {}: t = {ts:?}", args.out.display());
    Ok(())
}
