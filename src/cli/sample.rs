//! `sample`: noise to images with the whole reverse chain on the device.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use wgpu_diffusion::diffusion::{SamplerKind, Shard};
use wgpu_diffusion::gpu::Context;
use wgpu_diffusion::io::npy;
use wgpu_diffusion::model::config::folder_name;
use wgpu_diffusion::pipeline::latent::{DecodePlan, Posterior, Tiling};
use wgpu_diffusion::pipeline::{classes, Classes, Job, Pipeline, Start};
use wgpu_diffusion::{Error, Result};

use super::output::Outputs;
use super::{check, ClassArgs, DeviceArgs};

/// The default sampler chosen for the bundled model (docs/sampling.md, "Choosing the default").
pub const DEFAULT_SAMPLER: &str = "dpm++2m";
pub const DEFAULT_STEPS: usize = 20;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A diffusers model folder (flat or pipeline layout); default: the bundled Fashion-MNIST model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// ddpm, ddim, dpm++2m, euler, euler-a or pndm [default: dpm++2m; a Stable Diffusion
    /// folder's own scheduler].
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Denoising steps [default: 20; 50 for a Stable Diffusion folder, as diffusers].
    #[arg(long)]
    pub steps: Option<usize>,
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
    /// Also write the final samples as an NCHW f32 .npy, in the model's range (before the 8-bit
    /// conversion; a latent pipeline's decoded images).
    #[arg(long)]
    pub save_npy: Option<PathBuf>,
    /// A latent pipeline: also write the final latents (before the decode) as an NCHW f32 .npy.
    #[arg(long)]
    pub save_latents: Option<PathBuf>,
    /// A latent pipeline: decode in overlapping tiles as diffusers' enable_tiling does (it tiles
    /// by itself, and says so, where the whole decode would not fit the device or the budget).
    #[arg(long)]
    pub vae_tiling: bool,
    /// A latent pipeline: decode the final latents as they are, without dividing by the
    /// autoencoder's scaling_factor (img2img: encode without multiplying). diffusers divides;
    /// CompVis/ldm-celebahq-256, whose config leaves the factor at 0.18215, draws distorted faces
    /// that way and right ones this way (diffusers#6725).
    #[arg(long)]
    pub no_latent_scaling: bool,
    /// A latent pipeline: the planned memory (MiB) one decode may take; past it the decode runs in
    /// tiles [default: the device's limits alone].
    #[arg(long)]
    pub memory_budget_mib: Option<u64>,
    /// The PNG grid to write.
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Write one PNG per image into this folder instead of a grid, named by the image's index in
    /// the whole batch (000123.png).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// A labelled dataset from a class-conditional model: N images of each class (or of the
    /// --class asked) into --out-dir as DIR/<class name>/000123.png by global index (image k of
    /// class k / N), which `train --data DIR` reads back with its labels; works with --shard.
    /// Without --out-dir, a grid with one row a class.
    #[arg(long, conflicts_with_all = ["batch", "init_noise"])]
    pub per_class: Option<usize>,
    /// Make only shard I of N of the batch (I from 0): a contiguous range of the images, keyed by
    /// their index in the whole batch, so shards run as separate processes give one run's files.
    /// `auto` reads a Slurm job array or a Kubernetes Indexed Job from the environment.
    #[arg(long)]
    pub shard: Option<String>,
    /// The number of shards for `--shard auto` under a Kubernetes Indexed Job (its completions).
    #[arg(long)]
    pub shard_count: Option<usize>,
    /// Run the chain's first step op by op against the CPU references and name the first op whose
    /// output differs, instead of sampling.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub classes: ClassArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl SampleArgs {
    /// The sampler asked for, or the default.
    pub fn sampler(&self) -> &str {
        self.scheduler.as_deref().unwrap_or(DEFAULT_SAMPLER)
    }

    /// The steps asked for, or the default.
    pub fn step_count(&self) -> usize {
        self.steps.unwrap_or(DEFAULT_STEPS)
    }
}

/// The shard this process makes: `--shard I/N`, `--shard auto` (from the scheduler's environment),
/// or the whole batch.
fn shard(args: &SampleArgs) -> Result<Shard> {
    match args.shard.as_deref() {
        None if args.shard_count.is_some() => {
            Err(Error::Invalid("--shard-count goes with --shard auto".into()))
        }
        None => Ok(Shard::WHOLE),
        Some("auto") => Shard::from_scheduler(|k| std::env::var(k).ok(), args.shard_count),
        Some(_) if args.shard_count.is_some() => {
            Err(Error::Invalid("--shard-count goes with --shard auto; --shard I/N holds the count".into()))
        }
        Some(text) => Shard::parse(text),
    }
}

/// `img2img`: `sample`'s flags, and the image to redraw.
#[derive(Args, Debug)]
pub struct Img2ImgArgs {
    /// The image to redraw (PNG or JPEG, any size: resized and centre-cropped to the model's).
    #[arg(long)]
    pub image: PathBuf,
    /// How far into the noise the image goes, 0 to 1 (diffusers' img2img default, 0.8): int(steps
    /// x strength) of the --steps steps run; 0 returns the image unchanged.
    #[arg(long, default_value_t = 0.8)]
    pub strength: f64,
    /// A latent pipeline with an AutoencoderKL: start from a draw of the encoder's posterior
    /// (`sample`, diffusers' img2img default) or from its mean (`mode`).
    #[arg(long, default_value = "sample")]
    pub posterior: String,
    /// A Stable Diffusion folder: what to draw (StableDiffusionImg2ImgPipeline).
    #[arg(long)]
    pub prompt: Option<String>,
    /// A Stable Diffusion folder: what to steer away from (default "").
    #[arg(long)]
    pub negative_prompt: Option<String>,
    #[command(flatten)]
    pub sample: SampleArgs,
}

pub fn run_img2img(args: &Img2ImgArgs) -> Result<()> {
    if args.sample.check {
        return Err(Error::Invalid(
            "--check runs sample's first step; it does not take img2img's input".into(),
        ));
    }
    if !(0.0..=1.0).contains(&args.strength) {
        return Err(Error::Invalid(format!("--strength {}: must be between 0 and 1", args.strength)));
    }
    let posterior = parse_posterior(&args.posterior)?;
    let text_model = args
        .sample
        .model
        .as_deref()
        .is_some_and(|m| wgpu_diffusion::pipeline::index::read(m).is_ok_and(|c| c.is_text()));
    if text_model || args.prompt.is_some() {
        return run_text_img2img(args, posterior);
    }
    if args.negative_prompt.is_some() {
        return Err(Error::Invalid(
            "--negative-prompt goes with --prompt and a Stable Diffusion folder".into(),
        ));
    }
    run_edit(&args.sample, Some(&Img2Img { image: &args.image, strength: args.strength, posterior }))
}

/// `--posterior`: a draw of the encoder's posterior or its mean.
pub fn parse_posterior(text: &str) -> Result<Posterior> {
    match text {
        "sample" => Ok(Posterior::Sample),
        "mode" => Ok(Posterior::Mode),
        other => Err(Error::Invalid(format!("--posterior {other}: sample or mode"))),
    }
}

/// `img2img --prompt` on a Stable Diffusion folder: StableDiffusionImg2ImgPipeline.
fn run_text_img2img(args: &Img2ImgArgs, posterior: Posterior) -> Result<()> {
    let s = &args.sample;
    let Some(model) = s.model.as_deref() else {
        return Err(Error::Invalid("--prompt needs --model with a Stable Diffusion pipeline folder".into()));
    };
    let Some(prompt) = args.prompt.as_deref() else {
        return Err(Error::Invalid(format!("{}: a Stable Diffusion folder: give --prompt", model.display())));
    };
    let unused = [
        ("--per-class", s.per_class.is_some()),
        ("--class", s.classes.class.is_some()),
        ("--null-class", s.classes.null_class.is_some()),
        ("--check", s.check),
        ("--no-latent-scaling", s.no_latent_scaling),
        ("--eta", s.eta != 0.0),
        ("--shard-count", s.shard_count.is_some()),
    ];
    if let Some((flag, _)) = unused.iter().find(|u| u.1) {
        return Err(Error::Invalid(format!("{flag} does not apply to a Stable Diffusion folder")));
    }
    super::txt2img::execute(&super::txt2img::TextRun {
        model,
        prompt,
        negative_prompt: args.negative_prompt.as_deref().unwrap_or(""),
        guidance_scale: s
            .classes
            .guidance_scale
            .map_or(wgpu_diffusion::pipeline::text::DEFAULT_GUIDANCE_SCALE, |g| g as f32),
        scheduler: s.scheduler.as_deref(),
        steps: s.steps.unwrap_or(wgpu_diffusion::pipeline::text::DEFAULT_STEPS),
        height: None,
        width: None,
        batch: s.batch.unwrap_or(1),
        seed: s.seed,
        init_noise: s.init_noise.as_deref(),
        save_npy: s.save_npy.as_deref(),
        save_latents: s.save_latents.as_deref(),
        out: &s.out,
        out_dir: s.out_dir.as_deref(),
        shard: s.shard.as_deref(),
        vae_tiling: s.vae_tiling,
        memory_budget_mib: s.memory_budget_mib,
        device: &s.device,
        edit: Some(super::txt2img::TextEdit::Img2Img {
            image: &args.image,
            strength: args.strength,
            posterior,
        }),
    })
}

/// img2img: the image every result starts from, and how far into the noise it goes.
pub struct Img2Img<'a> {
    pub image: &'a Path,
    pub strength: f64,
    pub posterior: Posterior,
}

/// The PNG text chunks that say how to regenerate an image (or, for a grid, its images); `class`
/// names the image's (or the grid's) class on a class-conditional model.
fn png_text(
    pipeline: &Pipeline,
    args: &SampleArgs,
    edit: Option<&Img2Img>,
    batch: usize,
    index: String,
    classes: Option<(&Classes, String)>,
) -> Vec<(&'static str, String)> {
    let model = pipeline.folder.root.display().to_string();
    let command = match edit {
        Some(e) => format!("img2img --image {} --strength {}", e.image.display(), e.strength),
        None => "sample".into(),
    };
    let parameters = format!(
        "wgpu-diffusion {command} --model {model} --scheduler {} --steps {} {} --seed {} --eta {}{}{}",
        args.sampler(),
        args.step_count(),
        args.per_class.map_or(format!("--batch {batch}"), |n| format!("--per-class {n}")),
        args.seed,
        args.eta,
        args.init_noise.as_ref().map_or(String::new(), |p| format!(" --init-noise {}", p.display())),
        args.classes.flags(),
    );
    let mut text = vec![
        ("Software", format!("wgpu-diffusion {}", env!("CARGO_PKG_VERSION"))),
        ("model", model),
        ("sampler", args.sampler().to_string()),
        ("steps", args.step_count().to_string()),
        ("seed", args.seed.to_string()),
        ("eta", args.eta.to_string()),
        ("batch", batch.to_string()),
        ("image index", index),
        ("parameters", parameters),
    ];
    if let Some((c, class)) = classes {
        text.push(("class", class));
        text.push(("guidance scale", c.guidance.map_or(1.0, |g| g.scale).to_string()));
        if let Some(g) = c.guidance {
            text.push(("null class", g.null_label.to_string()));
        }
    }
    text
}

pub fn run(args: &SampleArgs) -> Result<()> {
    run_edit(args, None)
}

/// `sample`, or with `edit` img2img: every image starts from the input image, noised to the
/// strength's first kept timestep.
pub fn run_edit(args: &SampleArgs, edit: Option<&Img2Img>) -> Result<()> {
    SamplerKind::parse(args.sampler())?;
    let pipeline = Pipeline::open_or_bundled(args.model.as_deref())?;
    let plan = pipeline.sampler_plan(args.sampler(), args.step_count(), args.eta)?;
    // img2img: the input (read before any work) and where in the plan it starts.
    let start = match edit {
        Some(e) => pipeline.img2img_start(plan, e.image, e.strength)?,
        None => Start::Chain { plan, img2img: None },
    };
    let init = match &args.init_noise {
        Some(path) => Some(npy::read(path)?),
        None => None,
    };
    let mut request = args.classes.request();
    request.per_class = args.per_class;
    let batch = match (&init, args.batch, args.per_class) {
        (_, _, Some(n)) => classes::per_class_batch(&pipeline.unet_config, &request, n)?,
        (Some((shape, _)), Some(b), _) if shape.first() != Some(&b) => {
            return Err(Error::Invalid(format!("--batch {b} but --init-noise holds shape {shape:?}")))
        }
        (Some((shape, _)), _, _) => shape.first().copied().unwrap_or(0),
        (None, b, _) => b.unwrap_or(16),
    };
    if batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let shard = shard(args)?;
    let images = shard.range(batch);
    if images.is_empty() {
        eprintln!(
            "shard {} of {} has no images of a batch of {batch}: nothing to do",
            shard.index, shard.count
        );
        return Ok(());
    }
    let (ch, s) = pipeline.sample_shape();
    if let Some((shape, _)) = &init {
        if shape.as_slice() != [batch, ch, s, s] {
            return Err(Error::Invalid(format!(
                "--init-noise has shape {shape:?}, this model needs [{batch}, {ch}, {s}, {s}]"
            )));
        }
    }
    let classes = classes::resolve(&pipeline.unet_config, &request, batch)?;
    let job = Job {
        images: images.clone(),
        init_noise: init.map(|(_, v)| v),
        classes,
        posterior: edit.map_or(Posterior::Sample, |e| e.posterior),
        tiling: if args.vae_tiling { Tiling::On } else { Tiling::Auto },
        memory_budget: args.memory_budget_mib.map(|m| m << 20),
        ..Job::new(args.seed, batch, start)
    };
    if args.check {
        return check::run(args, &pipeline, &job);
    }
    // --per-class: each image in its class's folder.
    let cfg = &pipeline.unet_config;
    let class_folder = |k: usize| {
        let label = job.classes.as_ref().map_or(0.0, |c| c.labels[k]);
        folder_name(&classes::name_of(cfg, label))
    };
    let outputs = Outputs {
        grid: &args.out,
        out_dir: args.out_dir.as_deref(),
        save_npy: args.save_npy.as_deref(),
        folder: args.per_class.map(|_| &class_folder as &dyn Fn(usize) -> String),
        // A --per-class grid: one row a class.
        columns: args.per_class,
    };
    outputs.check(images.start)?;
    if let Some(p) = &args.save_latents {
        if !pipeline.is_latent() {
            return Err(Error::Invalid(
                "--save-latents: this model samples pixels (no autoencoder in its folder); --save-npy writes them".into(),
            ));
        }
        super::output::check_writable(p)?;
    }
    if args.no_latent_scaling && !pipeline.is_latent() {
        return Err(Error::Invalid(
            "--no-latent-scaling: this model samples pixels (no autoencoder in its folder)".into(),
        ));
    }
    let (ich, is) = pipeline.image_shape();
    let latent_note = match &pipeline.autoencoder {
        Some(a) => format!(" from {ch}x{s}x{s} latents ({})", a.config.class_name()),
        None => String::new(),
    };

    let ctx = Context::new(&args.device.options()?)?;
    let mut loaded = pipeline.load(&ctx)?;
    if let (true, Some(vae)) = (args.no_latent_scaling, loaded.autoencoder.as_mut()) {
        vae.config.scaling_factor = 1.0;
        vae.config.shift_factor = None;
    }
    // A decode that cannot run is refused here, before the chain; tiles are announced.
    if let Some(DecodePlan::Tiled { reason, .. }) = loaded.decode_plan(&ctx, &job)? {
        eprintln!("{reason}");
    }
    let share = if shard == Shard::WHOLE {
        String::new()
    } else {
        format!(
            " (shard {} of {}: images {}..{} of {batch})",
            shard.index, shard.count, images.start, images.end
        )
    };
    eprintln!(
        "{}: {} image(s) of {is}x{is}{latent_note}{share}, {} with {} steps, seed {}, on {}",
        pipeline.folder.root.display(),
        images.len(),
        args.sampler(),
        args.step_count(),
        args.seed,
        ctx.info.name
    );
    // The chain reports (done, total); total counts steps over all micro-batches.
    let bar =
        super::progress_bar(job.start.steps() as u64, "{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}");
    let t0 = Instant::now();
    let mut total_steps = job.start.steps();
    let made = loaded.run_keeping_latents(&ctx, &job, args.save_latents.is_some(), &mut |done, total| {
        total_steps = total;
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    let out = made.images;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();

    let n = images.len();
    let text = |k: Option<usize>| {
        let index = match k {
            Some(k) => k.to_string(),
            None => format!("{}-{} (row by row)", images.start, images.end - 1),
        };
        // The image's class, or the grid's: one, or each image's in order.
        let class = job.classes.as_ref().map(|c| {
            let of = |k: usize| classes::name_of(cfg, c.labels[k]);
            let class = match k {
                Some(k) => of(k),
                None if args.classes.class.is_some() => of(images.start),
                None => images.clone().map(of).collect::<Vec<_>>().join(", "),
            };
            (c, class)
        });
        png_text(&pipeline, args, edit, batch, index, class)
    };
    let non_finite = |k| {
        format!(
            "image {k} came out with NaN or infinite values, so nothing was written; \
             `sample --check` runs the first step op by op against the CPU references and names the op that goes wrong"
        )
    };
    let written = outputs.write(&out, images.clone(), (ich, is, is), &[], &text, &non_finite)?;
    if let (Some(p), Some(latents)) = (&args.save_latents, &made.latents) {
        npy::write(p, &[n, ch, s, s], latents)?;
    }
    if matches!(job.start, Start::Unchanged { .. }) {
        eprintln!("wrote {written}: no step runs at this strength, so the input came back unchanged");
    } else {
        eprintln!(
            "wrote {written}: {:.1} s, {:.2} steps/s, {:.2} images/s",
            secs,
            total_steps as f64 / secs,
            n as f64 / secs
        );
    }
    Ok(())
}
