//! `txt2img`: Stable Diffusion 1.x / 2.x from a diffusers pipeline folder, as
//! StableDiffusionPipeline runs it, every step on the GPU; PNGs carry the `parameters` text web
//! UIs and image browsers read.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use wgpu_diffusion::diffusion::{SamplerKind, SamplerPlan, Shard};
use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::io::npy;
use wgpu_diffusion::pipeline::latent::{DecodePlan, Posterior, Tiling};
use wgpu_diffusion::pipeline::text::{
    TextJob, TextPipeline, TextStart, DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS,
};
use wgpu_diffusion::{Error, Result};

use super::output::{check_writable, Outputs};
use super::DeviceArgs;

#[derive(Args, Debug)]
pub struct Txt2ImgArgs {
    /// A Stable Diffusion 1.x or 2.x pipeline folder (model_index.json, unet/, vae/,
    /// text_encoder/, tokenizer/, scheduler/), as save_pretrained writes it.
    #[arg(long)]
    pub model: PathBuf,
    /// What to draw.
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from (classifier-free guidance's unconditional text; default "").
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Classifier-free guidance over [negative; prompt]; 1 or less runs the prompt alone.
    #[arg(long, default_value_t = DEFAULT_GUIDANCE_SCALE, allow_hyphen_values = true)]
    pub guidance_scale: f32,
    /// ddpm, ddim, dpm++2m, euler, euler-a or pndm [default: the folder's scheduler].
    #[arg(long)]
    pub scheduler: Option<String>,
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: usize,
    /// Image height in pixels, a multiple of 8 [default: the unet's sample_size x 8].
    #[arg(long)]
    pub height: Option<usize>,
    /// Image width in pixels, a multiple of 8 [default: the unet's sample_size x 8].
    #[arg(long)]
    pub width: Option<usize>,
    /// Images of the prompt.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Image k's noise is keyed by (seed, k).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Standard-normal latents [B, 4, H/8, W/8] as an NCHW f32 .npy, scaled by the scheduler's
    /// init_noise_sigma (a run diffusers made from the same latents, reproduced).
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    /// Also write the VAE's output [B, 3, H, W] (in [-1, 1], before the 8-bit conversion) as .npy.
    #[arg(long)]
    pub save_npy: Option<PathBuf>,
    /// Also write the final latents as .npy.
    #[arg(long)]
    pub save_latents: Option<PathBuf>,
    /// The PNG grid to write.
    #[arg(long, default_value = "txt2img.png")]
    pub out: PathBuf,
    /// One PNG per image in this folder instead of a grid (000123.png by global index).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Make shard I of N of the batch (0-based), as one process of a job array.
    #[arg(long)]
    pub shard: Option<String>,
    /// Decode in diffusers' overlapping tiles (the decode tiles by itself where it would not fit).
    #[arg(long)]
    pub vae_tiling: bool,
    /// The planned memory (MiB) one decode may take; past it the decode runs in tiles.
    #[arg(long)]
    pub memory_budget_mib: Option<u64>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// A1111's name for a sampler, as image browsers read it from `parameters`.
fn sampler_name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Ddpm => "DDPM",
        SamplerKind::Ddim => "DDIM",
        SamplerKind::DpmPP2M => "DPM++ 2M",
        SamplerKind::Euler => "Euler",
        SamplerKind::EulerAncestral => "Euler a",
        SamplerKind::Pndm => "PLMS",
    }
}

/// One text-conditioned run as the command line asks for it, from `txt2img` or from
/// `img2img --prompt`.
pub struct TextRun<'a> {
    pub model: &'a Path,
    pub prompt: &'a str,
    pub negative_prompt: &'a str,
    pub guidance_scale: f32,
    pub scheduler: Option<&'a str>,
    pub steps: usize,
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub batch: usize,
    pub seed: u64,
    pub init_noise: Option<&'a Path>,
    pub save_npy: Option<&'a Path>,
    pub save_latents: Option<&'a Path>,
    pub out: &'a Path,
    pub out_dir: Option<&'a Path>,
    pub shard: Option<&'a str>,
    pub vae_tiling: bool,
    pub memory_budget_mib: Option<u64>,
    pub device: &'a DeviceArgs,
    /// img2img or inpainting instead of text to image.
    pub edit: Option<TextEdit<'a>>,
}

/// What a text-conditioned run starts from besides noise.
#[derive(Clone, Copy, Debug)]
pub enum TextEdit<'a> {
    /// StableDiffusionImg2ImgPipeline: the image, the strength, the posterior's draw or mode.
    Img2Img { image: &'a Path, strength: f64, posterior: Posterior },
    /// StableDiffusionInpaintPipeline: the image, its mask (white repaints), the strength, the
    /// posterior's draw or mode.
    Inpaint { image: &'a Path, mask: &'a Path, strength: f64, posterior: Posterior },
}

impl TextEdit<'_> {
    fn strength(&self) -> f64 {
        match self {
            TextEdit::Img2Img { strength, .. } | TextEdit::Inpaint { strength, .. } => *strength,
        }
    }
}

pub fn run(args: &Txt2ImgArgs) -> Result<()> {
    execute(&TextRun {
        model: &args.model,
        prompt: &args.prompt,
        negative_prompt: &args.negative_prompt,
        guidance_scale: args.guidance_scale,
        scheduler: args.scheduler.as_deref(),
        steps: args.steps,
        height: args.height,
        width: args.width,
        batch: args.batch,
        seed: args.seed,
        init_noise: args.init_noise.as_deref(),
        save_npy: args.save_npy.as_deref(),
        save_latents: args.save_latents.as_deref(),
        out: &args.out,
        out_dir: args.out_dir.as_deref(),
        shard: args.shard.as_deref(),
        vae_tiling: args.vae_tiling,
        memory_budget_mib: args.memory_budget_mib,
        device: &args.device,
        edit: None,
    })
}

/// Runs `r`: txt2img, or img2img from `r.edit`.
pub fn execute(r: &TextRun) -> Result<()> {
    let pipeline = TextPipeline::open(r.model)?;
    let kind = r.scheduler.map(SamplerKind::parse).transpose()?;
    let cfg = pipeline.scheduler(kind)?;
    let mut plan = SamplerPlan::new(&cfg, r.steps, 0.0)?;
    let size = pipeline.default_size();
    let (mut height, mut width) = (r.height.unwrap_or(size), r.width.unwrap_or(size));
    let d = pipeline.downscale();
    // img2img and inpainting: the image's own size (floored to the grid), the plan cut to the
    // strength.
    let mut start = TextStart::Noise;
    if let Some(edit) = r.edit {
        let (TextEdit::Img2Img { image: path, .. } | TextEdit::Inpaint { image: path, .. }) = edit;
        let (image, h, w) = wgpu_diffusion::io::images::load_rgb_floored(path, d)?;
        let strength = edit.strength();
        let Some(cut) = plan.img2img(strength)? else {
            return Err(Error::Invalid(format!(
                "--strength {strength} runs none of the {} steps: raise --strength or --steps",
                r.steps
            )));
        };
        (height, width, plan) = (h, w, cut.plan);
        start = match edit {
            TextEdit::Img2Img { posterior, .. } => {
                TextStart::Img2Img { image, noising: cut.noising, posterior }
            }
            TextEdit::Inpaint { mask, posterior, .. } => TextStart::Inpaint {
                image,
                mask: wgpu_diffusion::io::images::load_mask_floored(mask, path, d)?,
                // Full strength starts from pure noise (diffusers' is_strength_max).
                noising: (strength < 1.0).then_some(cut.noising),
                posterior,
            },
        };
    }
    if pipeline.is_inpainting() && !matches!(start, TextStart::Inpaint { .. }) {
        return Err(Error::Invalid(format!(
            "{}: an inpainting unet ({} input channels): `inpaint --prompt` runs it",
            r.model.display(),
            pipeline.unet_config.in_channels
        )));
    }
    for (flag, v) in [("--height", height), ("--width", width)] {
        if v == 0 || !v.is_multiple_of(d) {
            return Err(Error::Invalid(format!("{flag} {v}: a positive multiple of {d}")));
        }
    }
    if r.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let latent = (pipeline.vae_config.latent_width(), height / d, width / d);
    let init = match r.init_noise {
        Some(path) => {
            let (shape, v) = npy::read(path)?;
            let want = [r.batch, latent.0, latent.1, latent.2];
            if shape != want {
                return Err(Error::Invalid(format!(
                    "--init-noise has shape {shape:?}, this run needs {want:?}"
                )));
            }
            Some(v)
        }
        None => None,
    };
    let shard = match r.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::WHOLE,
    };
    let images = shard.range(r.batch);
    if images.is_empty() {
        eprintln!(
            "shard {} of {} has no images of a batch of {}: nothing to do",
            shard.index, shard.count, r.batch
        );
        return Ok(());
    }
    let outputs =
        Outputs { grid: r.out, out_dir: r.out_dir, save_npy: r.save_npy, folder: None, columns: None };
    outputs.check(images.start)?;
    if let Some(p) = r.save_latents {
        check_writable(p)?;
    }
    let job = TextJob {
        prompts: vec![r.prompt.to_string()],
        image_prompts: vec![0; r.batch],
        negative: r.negative_prompt.to_string(),
        guidance_scale: r.guidance_scale,
        plan,
        height,
        width,
        seed: r.seed,
        batch: r.batch,
        images: images.clone(),
        init_noise: init,
        tiling: if r.vae_tiling { Tiling::On } else { Tiling::Auto },
        memory_budget: r.memory_budget_mib.map(|m| m << 20),
        start,
    };

    let ctx = Context::new(&r.device.options()?)?;
    let mut loaded = pipeline.load(&ctx)?;
    if let DecodePlan::Tiled { reason, .. } = loaded.decode_plan(&ctx, &job)? {
        eprintln!("{reason}");
    }
    let kind = cfg.kind;
    eprintln!(
        "{}: {} image(s) of {width}x{height} from {}x{}x{} latents, {} with {} steps, guidance {}, seed {}, on {}",
        r.model.display(),
        images.len(),
        latent.0,
        latent.1,
        latent.2,
        kind.class_name(),
        r.steps,
        if job.guided() { job.guidance_scale.to_string() } else { "off".into() },
        r.seed,
        ctx.info.name
    );
    let bar =
        super::progress_bar(job.plan.rows.len() as u64, "{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}");
    let t0 = Instant::now();
    let mut total_steps = 0;
    // When the device finished the last step: the decode's time is the rest.
    let mut chain_secs = 0.0;
    let made = loaded.run(
        &ctx,
        &job,
        r.save_latents.is_some(),
        &mut |done, total| {
            total_steps = total;
            chain_secs = t0.elapsed().as_secs_f64();
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        &mut |line| bar.suspend(|| eprintln!("{line}")),
    )?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let model = r.model.display().to_string();
    let parameters = {
        let negative = if r.negative_prompt.is_empty() {
            String::new()
        } else {
            format!("\nNegative prompt: {}", r.negative_prompt)
        };
        format!(
            "{}{negative}\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {width}x{height}, Model: {}",
            r.prompt,
            r.steps,
            sampler_name(kind),
            r.guidance_scale,
            r.seed,
            r.model.file_name().map_or(model.clone(), |n| n.to_string_lossy().to_string()),
        ) + &r.edit.map_or(String::new(), |e| format!(", Denoising strength: {}", e.strength()))
    };
    let text = |k: Option<usize>| {
        vec![
            ("parameters", parameters.clone()),
            ("Software", format!("wgpu-diffusion {}", env!("CARGO_PKG_VERSION"))),
            ("model", model.clone()),
            ("prompt", r.prompt.to_string()),
            ("negative prompt", r.negative_prompt.to_string()),
            ("sampler", kind.class_name().to_string()),
            ("steps", r.steps.to_string()),
            ("guidance scale", r.guidance_scale.to_string()),
            ("seed", r.seed.to_string()),
            ("batch", r.batch.to_string()),
            ("image index", k.map_or(format!("{}-{}", images.start, images.end - 1), |k| k.to_string())),
        ]
    };
    let non_finite = |k| format!("image {k} came out with NaN or infinite values, so nothing was written");
    let n = images.len();
    let written = outputs.write(&made.images, images.clone(), (3, height, width), &[], &text, &non_finite)?;
    if let (Some(p), Some(latents)) = (r.save_latents, &made.latents) {
        npy::write(p, &[n, latent.0, latent.1, latent.2], latents)?;
    }
    eprintln!(
        "wrote {written}: {secs:.1} s, {:.2} steps/s, {:.2} images/s ({chain_secs:.1} s to the last step with \
         the prompt's encoding, {:.2} s a step; {:.1} s after it, decoding and writing)",
        total_steps as f64 / secs,
        n as f64 / secs,
        chain_secs / total_steps.max(1) as f64,
        secs - chain_secs
    );
    Ok(())
}
