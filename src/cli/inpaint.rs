//! `inpaint`: RePaint, as diffusers' RePaintPipeline, with the whole resampling chain on the
//! device; with `--prompt` on a Stable Diffusion folder, StableDiffusionInpaintPipeline.

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
    /// The mask, the image's size, grey thresholded at 0.5. Each follows its diffusers pipeline:
    /// RePaint (a UNet2DModel folder) keeps white and fills black; a Stable Diffusion folder
    /// repaints white and keeps black.
    #[arg(long)]
    pub mask: PathBuf,
    /// A diffusers model folder (default: the bundled Fashion-MNIST model), or a Stable
    /// Diffusion pipeline folder (with --prompt).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Inference steps [default: 250, RePaintPipeline's; a Stable Diffusion folder's 50].
    #[arg(long)]
    pub steps: Option<usize>,
    /// RePaint: levels each jump back goes up [default: 10].
    #[arg(long)]
    pub jump_length: Option<usize>,
    /// RePaint: times each jump is made (1: no resampling) [default: 10].
    #[arg(long)]
    pub jump_n_sample: Option<usize>,
    /// RePaint: DDIM's eta for the unknown region (0: deterministic given the noise) [default: 0].
    #[arg(long)]
    pub eta: Option<f64>,
    /// Fillings of the same hole to make [default: 4; a Stable Diffusion folder's 1].
    #[arg(long)]
    pub batch: Option<usize>,
    /// A Stable Diffusion folder: what to paint in the hole (StableDiffusionInpaintPipeline).
    #[arg(long)]
    pub prompt: Option<String>,
    /// A Stable Diffusion folder: what to steer away from (default "").
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// A Stable Diffusion folder: how far into the noise the image goes (1: from pure noise, the
    /// pipeline's default; below 1 from the image's latents noised).
    #[arg(long, default_value_t = 1.0)]
    pub strength: f64,
    /// A Stable Diffusion folder: encode the image (and the masked image) as a draw of the
    /// posterior (`sample`, diffusers' default) or its mean (`mode`).
    #[arg(long, default_value = "sample")]
    pub posterior: String,
    /// A Stable Diffusion folder: ddpm, ddim, dpm++2m, euler, euler-a or pndm [default: the
    /// folder's scheduler].
    #[arg(long)]
    pub scheduler: Option<String>,
    /// A Stable Diffusion folder: standard-normal latents [B, 4, H/8, W/8] as an NCHW f32 .npy.
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    /// A Stable Diffusion folder: also write the final latents as .npy.
    #[arg(long)]
    pub save_latents: Option<PathBuf>,
    /// A Stable Diffusion folder: decode (and encode) in diffusers' overlapping tiles.
    #[arg(long)]
    pub vae_tiling: bool,
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
    let text_model = args
        .model
        .as_deref()
        .is_some_and(|m| wgpu_diffusion::pipeline::index::read(m).is_ok_and(|c| c.is_text()));
    if text_model || args.prompt.is_some() {
        return run_text(args);
    }
    let unused = [
        ("--negative-prompt", args.negative_prompt.is_some()),
        ("--strength", args.strength != 1.0),
        ("--posterior", args.posterior != "sample"),
        ("--scheduler", args.scheduler.is_some()),
        ("--init-noise", args.init_noise.is_some()),
        ("--save-latents", args.save_latents.is_some()),
        ("--vae-tiling", args.vae_tiling),
    ];
    if let Some((flag, _)) = unused.iter().find(|u| u.1) {
        return Err(Error::Invalid(format!("{flag} goes with --prompt and a Stable Diffusion folder")));
    }
    let batch = args.batch.unwrap_or(4);
    if batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let pipeline = Pipeline::open_or_bundled(args.model.as_deref())?;
    let options = RepaintOptions {
        steps: args.steps.unwrap_or(250),
        jump_length: args.jump_length.unwrap_or(10),
        jump_n_sample: args.jump_n_sample.unwrap_or(10),
        eta: args.eta.unwrap_or(0.0),
    };
    let inpaint = pipeline.inpaint_start(&args.image, &args.mask, &options)?;
    let (ch, s) = pipeline.image_shape();
    let classes = classes::resolve(&pipeline.unet_config, &args.classes.request(), batch)?;
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
        batch,
        options.steps,
        options.jump_length,
        options.jump_n_sample,
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
    let job = Job { classes, ..Job::new(args.seed, batch, start) };
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
        options.steps,
        options.jump_length,
        options.jump_n_sample,
        options.eta,
        batch,
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
    let mut written = outputs.write(&out, 0..batch, (ch, s, s), &before, &|_| text.clone(), &non_finite)?;
    if args.out_dir.is_none() {
        written += &format!(" (input, mask, {} results)", batch);
    }
    eprintln!("wrote {written}: {secs:.1} s, {:.2} UNet evaluations/s", (unet_evals * batch) as f64 / secs);
    Ok(())
}

/// `inpaint --prompt` on a Stable Diffusion folder: StableDiffusionInpaintPipeline.
fn run_text(args: &InpaintArgs) -> Result<()> {
    let Some(model) = args.model.as_deref() else {
        return Err(Error::Invalid("--prompt needs --model with a Stable Diffusion pipeline folder".into()));
    };
    let Some(prompt) = args.prompt.as_deref() else {
        return Err(Error::Invalid(format!("{}: a Stable Diffusion folder: give --prompt", model.display())));
    };
    let unused = [
        ("--jump-length", args.jump_length.is_some()),
        ("--jump-n-sample", args.jump_n_sample.is_some()),
        ("--eta", args.eta.is_some()),
        ("--class", args.classes.class.is_some()),
        ("--null-class", args.classes.null_class.is_some()),
    ];
    if let Some((flag, _)) = unused.iter().find(|u| u.1) {
        return Err(Error::Invalid(format!("{flag} does not apply to a Stable Diffusion folder")));
    }
    if !(0.0..=1.0).contains(&args.strength) {
        return Err(Error::Invalid(format!("--strength {}: must be between 0 and 1", args.strength)));
    }
    let posterior = super::sample::parse_posterior(&args.posterior)?;
    super::txt2img::execute(&super::txt2img::TextRun {
        model,
        prompt,
        negative_prompt: args.negative_prompt.as_deref().unwrap_or(""),
        guidance_scale: args
            .classes
            .guidance_scale
            .map_or(wgpu_diffusion::pipeline::text::DEFAULT_GUIDANCE_SCALE, |g| g as f32),
        scheduler: args.scheduler.as_deref(),
        steps: args.steps.unwrap_or(wgpu_diffusion::pipeline::text::DEFAULT_STEPS),
        height: None,
        width: None,
        batch: args.batch.unwrap_or(1),
        seed: args.seed,
        init_noise: args.init_noise.as_deref(),
        save_npy: args.save_npy.as_deref(),
        save_latents: args.save_latents.as_deref(),
        out: &args.out,
        out_dir: args.out_dir.as_deref(),
        shard: None,
        vae_tiling: args.vae_tiling,
        memory_budget_mib: None,
        device: &args.device,
        edit: Some(super::txt2img::TextEdit::Inpaint {
            image: &args.image,
            mask: &args.mask,
            strength: args.strength,
            posterior,
        }),
    })
}
