//! A diffusers folder as a pipeline (../shared/DESIGN.md): the models and the scheduler it
//! composes, opened once, and sample, img2img and inpaint as starts of one chain. It holds no math
//! of its own: the sampler plans, the chain and RePaint live in `diffusion`, the UNet in `model`.
//!
//! Use: `Pipeline::open` reads the folder's configs (no device), `Job`s are planned and checked
//! from it before any work, `Pipeline::load` puts the models on the device, `Loaded::run` makes
//! the images.

pub mod classes;
pub mod edit;
pub mod index;
pub mod latent;
pub mod text;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::diffusion::repaint::{self, InpaintInput, RepaintPlan};
use crate::diffusion::{
    self, ChainInput, Conditioning, Guidance, Img2ImgStart, SamplerKind, SamplerPlan, SchedulerConfig,
};
use crate::gpu::Context;
use crate::graph::check::OpCheck;
use crate::model::vae::{Autoencoder, AutoencoderConfig};
use crate::model::{ModelFolder, UNet, UNetConfig};
use crate::{Error, Result};

/// The bundled model, used where no folder is given.
pub const BUNDLED_MODEL: &str = "weights/fashion-mnist";

/// The classifier-free guidance scale `sample` uses on a class-conditional model unless told
/// (README, "Class-conditional models": how it was chosen).
pub const DEFAULT_GUIDANCE_SCALE: f32 = 2.0;

/// The classes of an unlabelled request of `batch` images from a class-conditional model: image
/// k of class k mod the number of classes (so a grid shows every class), at the default
/// guidance with the model's null class. None for an unconditional model; an error for a
/// "timestep" class embedding without class names (it takes any integer: say which).
pub fn default_classes(cfg: &UNetConfig, batch: usize) -> Result<Option<Classes>> {
    if cfg.class_embedding.is_none() {
        return Ok(None);
    }
    let n = cfg.num_classes().ok_or_else(|| {
        Error::Invalid(
            "this model's class embedding takes any integer and its config names no classes: give --class N"
                .into(),
        )
    })?;
    let labels = (0..batch).map(|k| (k % n.max(1)) as f32).collect();
    let guidance = cfg
        .default_null_class()
        .filter(|_| DEFAULT_GUIDANCE_SCALE != 1.0)
        .map(|null| Guidance { scale: DEFAULT_GUIDANCE_SCALE, null_label: null as f32 });
    Ok(Some(Classes { labels, guidance }))
}

/// A diffusers folder's components, read but not yet on a device.
pub struct Pipeline {
    pub folder: ModelFolder,
    pub unet_config: UNetConfig,
    /// scheduler_config.json's object and its path, when the folder has one.
    scheduler_file: Option<(Map<String, Value>, String)>,
    /// A latent pipeline's autoencoder (`vqvae` or `vae` in model_index.json).
    pub autoencoder: Option<AutoencoderComponent>,
}

/// A latent pipeline's autoencoder: the diffusion runs on its latents, its decoder makes the
/// pictures.
#[derive(Clone, Debug)]
pub struct AutoencoderComponent {
    /// Its name in model_index.json.
    pub name: String,
    pub dir: PathBuf,
    pub config: AutoencoderConfig,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

impl Pipeline {
    /// Reads a model folder: a UNet folder (flat, or with unet/ and scheduler/), or a pipeline
    /// folder whose model_index.json names its components (a latent pipeline adds an
    /// autoencoder). Its configs are read and checked against each other; no weights yet.
    pub fn open(dir: &Path) -> Result<Self> {
        let (folder, autoencoder) = if dir.join(index::INDEX_FILE).is_file() {
            let c = index::read(dir)?;
            if c.is_text() {
                return Err(Error::Invalid(format!(
                    "{}: a text-to-image pipeline (Stable Diffusion): `txt2img --model {0} --prompt ...` runs it",
                    dir.display()
                )));
            }
            let unet = c.unet.as_ref().map(|u| u.dir.clone()).unwrap_or_default();
            let scheduler = c.scheduler.as_ref().map(|s| s.dir.join("scheduler_config.json"));
            let folder = ModelFolder::from_dirs(dir, &unet, scheduler.as_deref())?;
            let autoencoder = match c.autoencoder {
                Some(a) => {
                    let (config, _) = crate::model::component_files(&a.dir)?;
                    let shown = config.display().to_string();
                    let config = AutoencoderConfig::parse(&read_text(&config)?, Some(&a.class), &shown)?;
                    Some(AutoencoderComponent { name: a.name, dir: a.dir, config })
                }
                None => None,
            };
            (folder, autoencoder)
        } else {
            (ModelFolder::open(dir)?, None)
        };
        let shown = folder.unet_config.display().to_string();
        let unet_config = UNetConfig::parse(&read_text(&folder.unet_config)?, &shown)?;
        let scheduler_file = match &folder.scheduler_config {
            Some(path) => {
                let shown = path.display().to_string();
                Some((SchedulerConfig::parse_file(&read_text(path)?, &shown)?, shown))
            }
            None => None,
        };
        let pipeline = Self { folder, unet_config, scheduler_file, autoencoder };
        pipeline.check_components()?;
        Ok(pipeline)
    }

    /// A latent pipeline's UNet must work on its autoencoder's latents.
    fn check_components(&self) -> Result<()> {
        let (Some(a), u) = (&self.autoencoder, &self.unet_config) else { return Ok(()) };
        let root = self.folder.root.display();
        let latent = a.config.latent_width();
        if u.in_channels != latent || u.out_channels != latent {
            return Err(Error::Invalid(format!(
                "{root}: the {} makes latents of {latent} channels, but the unet takes {} and makes {}",
                a.name, u.in_channels, u.out_channels
            )));
        }
        let image = u.sample_size * a.config.downscale();
        if image != a.config.sample_size {
            return Err(Error::Invalid(format!(
                "{root}: the unet's sample_size {} is {image} pixels through the {}'s {}x downsampling, \
                 but the {} was made for {} pixels (its sample_size)",
                u.sample_size,
                a.name,
                a.config.downscale(),
                a.name,
                a.config.sample_size
            )));
        }
        Ok(())
    }

    /// The folder given, or the bundled model (found from the working directory or, for `cargo
    /// run` from elsewhere, from the source tree).
    pub fn open_or_bundled(given: Option<&Path>) -> Result<Self> {
        if let Some(dir) = given {
            return Self::open(dir);
        }
        let here = PathBuf::from(BUNDLED_MODEL);
        let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_MODEL);
        match [here, source_tree].into_iter().find(|p| p.is_dir()) {
            Some(dir) => Self::open(&dir),
            None => Err(Error::Invalid(format!(
                "the bundled model {BUNDLED_MODEL} is not here; run from the repository or give --model DIR"
            ))),
        }
    }

    /// The scheduler config for `kind`: the folder's scheduler_config.json applied to the
    /// sampler's defaults, as diffusers' `from_config` does.
    pub fn scheduler(&self, kind: SamplerKind) -> Result<SchedulerConfig> {
        match &self.scheduler_file {
            Some((file, shown)) => SchedulerConfig::resolve(kind, Some(file), shown),
            None => SchedulerConfig::resolve(kind, None, "default scheduler config"),
        }
    }

    /// The shape of one image the pipeline makes: (channels, size): the UNet's, or a latent
    /// pipeline's decoder's.
    pub fn image_shape(&self) -> (usize, usize) {
        match &self.autoencoder {
            Some(a) => (a.config.out_channels, self.unet_config.sample_size * a.config.downscale()),
            None => self.sample_shape(),
        }
    }

    /// The shape the chain runs on: (channels, size) of the UNet's sample (a latent pipeline's
    /// latents).
    pub fn sample_shape(&self) -> (usize, usize) {
        (self.unet_config.in_channels, self.unet_config.sample_size)
    }

    /// Values in one of the chain's samples.
    pub fn sample_len(&self) -> usize {
        let (c, s) = self.sample_shape();
        c * s * s
    }

    /// Whether the chain runs in an autoencoder's latent space.
    pub fn is_latent(&self) -> bool {
        self.autoencoder.is_some()
    }

    /// The sampler `scheduler` (a name) over `steps` steps with DDIM's `eta`.
    pub fn sampler_plan(&self, scheduler: &str, steps: usize, eta: f64) -> Result<SamplerPlan> {
        SamplerPlan::new(&self.scheduler(SamplerKind::parse(scheduler)?)?, steps, eta)
    }

    /// img2img (SDEdit) from the image at `path` at `strength`, over the steps of `plan` (diffusers'
    /// img2img: int(steps x strength) of them run).
    pub fn img2img_start(&self, plan: SamplerPlan, path: &Path, strength: f64) -> Result<Start> {
        let (c, s) = self.image_shape();
        if self.is_latent() && c != 1 && c != 3 {
            return Err(Error::Invalid(format!(
                "img2img: the autoencoder takes {c}-channel images (1 or 3 are read)"
            )));
        }
        let image = crate::io::images::load_as_sample(path, c, s)?;
        Ok(match plan.img2img(strength)? {
            Some(p) => Start::Chain { plan: p.plan, img2img: Some((image, p.noising)) },
            None => Start::Unchanged { image },
        })
    }

    /// RePaint inpainting of the image at `image` where `mask` is black, as diffusers'
    /// RePaintPipeline (its scheduler is DDPM's config).
    pub fn inpaint_start(&self, image: &Path, mask: &Path, repaint: &RepaintOptions) -> Result<Inpaint> {
        if let Some(a) = &self.autoencoder {
            return Err(Error::Invalid(format!(
                "{}: RePaint inpainting runs on pixel-space models; this pipeline diffuses in its {}'s latent space",
                self.folder.root.display(),
                a.name
            )));
        }
        let cfg = self.scheduler(SamplerKind::Ddpm)?;
        let plan =
            RepaintPlan::new(&cfg, repaint.steps, repaint.jump_length, repaint.jump_n_sample, repaint.eta)?;
        let (c, s) = self.image_shape();
        let pixels = crate::io::images::load_as_sample(image, c, s)?;
        let mask = edit::load_mask(mask, image, c, s)?;
        Ok(Inpaint { plan, image: pixels, mask })
    }

    /// Puts the models on the device.
    pub fn load(&self, ctx: &Context) -> Result<Loaded<'_>> {
        let unet = UNet::load(ctx, &self.folder)?;
        let autoencoder = match &self.autoencoder {
            Some(a) => Some(Autoencoder::load(ctx, &a.dir, Some(a.config.class_name()))?),
            None => None,
        };
        Ok(Loaded { pipeline: self, unet, autoencoder })
    }
}

/// RePaint's settings (diffusers' RePaintPipeline arguments).
#[derive(Clone, Copy, Debug)]
pub struct RepaintOptions {
    pub steps: usize,
    pub jump_length: usize,
    pub jump_n_sample: usize,
    pub eta: f64,
}

/// Where a job's chain starts.
pub enum Start {
    /// From noise through the sampler's plan (`sample`), or, with `img2img`, from the image
    /// [C, H, W] noised to the plan's first step by (a, b): x = a x0 + b z.
    Chain {
        plan: SamplerPlan,
        img2img: Option<(Vec<f32>, (f64, f64))>,
    },
    /// img2img at a strength where no step runs: the input comes back.
    Unchanged {
        image: Vec<f32>,
    },
    Repaint(Inpaint),
}

/// RePaint's start: its plan, the image and the mask (1 keeps, 0 fills), [C, H, W] each.
pub struct Inpaint {
    pub plan: RepaintPlan,
    pub image: Vec<f32>,
    pub mask: Vec<f32>,
}

impl Start {
    /// Steps (or RePaint entries) each micro-batch runs: what progress counts.
    pub fn steps(&self) -> usize {
        match self {
            Start::Chain { plan, .. } => plan.rows.len(),
            Start::Unchanged { .. } => 0,
            Start::Repaint(r) => r.plan.entries.len(),
        }
    }
}

/// What one run makes: images `images` of a batch of `batch` (a shard's share, keyed by global
/// index), from `start`.
pub struct Job {
    pub seed: u64,
    pub batch: usize,
    pub images: Range<usize>,
    /// Standard-normal x_T [batch, C, H, W] for the whole batch (else Philox from the seed).
    pub init_noise: Option<Vec<f32>>,
    pub start: Start,
    /// The class of every image, for a class-conditional model.
    pub classes: Option<Classes>,
    /// A latent pipeline's img2img: the encoder's posterior drawn or its mode.
    pub posterior: latent::Posterior,
    /// A latent pipeline's decode: tiles as asked or needed, within this budget of planned bytes.
    pub tiling: latent::Tiling,
    pub memory_budget: Option<u64>,
}

/// A job's class condition: a label per image of the whole batch, by global index, and the
/// classifier-free guidance (None: scale 1, the conditional model alone).
#[derive(Clone, Debug)]
pub struct Classes {
    pub labels: Vec<f32>,
    pub guidance: Option<Guidance>,
}

impl Job {
    /// Every image of a batch of `batch` from `start`, keyed by `seed`, with the defaults for the
    /// rest (Philox x_T, no classes, the posterior drawn, tiles where needed, no memory budget).
    pub fn new(seed: u64, batch: usize, start: Start) -> Self {
        Self {
            seed,
            batch,
            images: 0..batch,
            init_noise: None,
            start,
            classes: None,
            posterior: latent::Posterior::Sample,
            tiling: latent::Tiling::Auto,
            memory_budget: None,
        }
    }

    /// The chain's view of `classes`.
    pub fn conditioning(&self) -> Option<Conditioning<'_>> {
        self.classes.as_ref().map(|c| Conditioning { labels: &c.labels, guidance: c.guidance })
    }

    /// Checks the job against the pipeline's image shape before any work.
    pub fn check(&self, pipeline: &Pipeline) -> Result<()> {
        let per = pipeline.sample_len();
        let (c, s) = pipeline.sample_shape();
        if self.batch == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        if self.images.start > self.images.end || self.images.end > self.batch {
            return Err(Error::Invalid(format!(
                "images {:?} are not within a batch of {}",
                self.images, self.batch
            )));
        }
        if let Some(z) = &self.init_noise {
            if z.len() != self.batch * per {
                return Err(Error::Invalid(format!(
                    "--init-noise holds {} values, this model needs [{}, {c}, {s}, {s}]",
                    z.len(),
                    self.batch
                )));
            }
        }
        Ok(())
    }
}

/// A pipeline with its models on the device.
pub struct Loaded<'p> {
    pub pipeline: &'p Pipeline,
    pub unet: UNet,
    pub autoencoder: Option<Autoencoder>,
}

/// What a run makes: the images [images, C, H, W] in the model's range, and for a latent
/// pipeline asked for them, the final latents.
pub struct Output {
    pub images: Vec<f32>,
    pub latents: Option<Vec<f32>>,
}

/// Progress: (steps done, steps in total), over all micro-batches.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

impl Loaded<'_> {
    /// Makes the job's images, [images, C, H, W] in the model's range, in order.
    pub fn run(&mut self, ctx: &Context, job: &Job, progress: Progress) -> Result<Vec<f32>> {
        Ok(self.run_keeping_latents(ctx, job, false, progress)?.images)
    }

    /// `run`, keeping a latent pipeline's final latents when `keep_latents`.
    pub fn run_keeping_latents(
        &mut self,
        ctx: &Context,
        job: &Job,
        keep_latents: bool,
        progress: Progress,
    ) -> Result<Output> {
        job.check(self.pipeline)?;
        let images = match &job.start {
            Start::Chain { plan, img2img } => {
                // A latent pipeline's img2img starts from the input image's latents.
                let start = match (img2img, self.autoencoder.as_mut()) {
                    (Some((image, noising)), Some(vae)) => {
                        let (_, s) = self.pipeline.sample_shape();
                        let z = latent::encode_image(
                            ctx,
                            vae,
                            image,
                            (s, s),
                            job.posterior,
                            job.tiling,
                            job.seed,
                            0,
                        )?;
                        Some((z, *noising))
                    }
                    (other, _) => other.clone(),
                };
                let input = ChainInput {
                    seed: job.seed,
                    batch: job.batch,
                    images: job.images.clone(),
                    init_noise: job.init_noise.as_deref(),
                    img2img: start.as_ref().map(|(image, noising)| Img2ImgStart { image, noising: *noising }),
                    conditioning: job.conditioning(),
                    text: None,
                    mask: None,
                };
                match self.autoencoder.as_mut() {
                    Some(vae) => {
                        let (_, s) = self.pipeline.sample_shape();
                        let micro = job.batch.min(self.unet.max_batch(ctx)?);
                        let mut decode = latent::Decode::new(ctx, vae, micro, s, s, keep_latents)?;
                        let images =
                            diffusion::sample_then(ctx, &mut self.unet, plan, &input, progress, &mut decode)?;
                        return Ok(Output { images, latents: decode.latents });
                    }
                    None => diffusion::sample(ctx, &mut self.unet, plan, &input, progress)?,
                }
            }
            Start::Unchanged { image } => {
                image.iter().copied().cycle().take(job.images.len() * image.len()).collect()
            }
            Start::Repaint(r) => {
                let input = InpaintInput {
                    seed: job.seed,
                    batch: job.batch,
                    images: job.images.clone(),
                    image: &r.image,
                    mask: &r.mask,
                    noise_tape: None,
                    conditioning: job.conditioning(),
                };
                repaint::inpaint(ctx, &mut self.unet, &r.plan, &input, progress)?
            }
        };
        Ok(Output { images, latents: None })
    }

    /// How a latent pipeline's decode runs for `job` (None for a pixel pipeline): planned before
    /// any work, so a decode that cannot run is an error before the chain.
    pub fn decode_plan(&mut self, ctx: &Context, job: &Job) -> Result<Option<latent::DecodePlan>> {
        let Some(vae) = self.autoencoder.as_mut() else { return Ok(None) };
        let (_, s) = self.pipeline.sample_shape();
        let micro = job.batch.min(self.unet.max_batch(ctx)?);
        latent::plan_decode(ctx, vae, (s, s), micro, job.tiling, job.memory_budget).map(Some)
    }

    /// The chain's first step for the job's first micro-batch, op by op against the CPU
    /// references (`sample --check`).
    pub fn check_first_step(&mut self, ctx: &Context, job: &Job) -> Result<Vec<OpCheck>> {
        job.check(self.pipeline)?;
        let Start::Chain { plan, img2img: None } = &job.start else {
            return Err(Error::Invalid("--check runs sample's first step, from noise".into()));
        };
        let input = ChainInput {
            conditioning: job.conditioning(),
            ..ChainInput::all(job.seed, job.batch, job.init_noise.as_deref())
        };
        diffusion::check_first_step(ctx, &mut self.unet, plan, &input)
    }
}

/// The first image holding a NaN or an infinity, by its index in the whole batch (`first` is
/// the index of the first image in `out`).
pub fn first_non_finite(out: &[f32], per: usize, first: usize) -> Option<usize> {
    out.chunks(per).position(|img| img.iter().any(|v| !v.is_finite())).map(|k| first + k)
}
