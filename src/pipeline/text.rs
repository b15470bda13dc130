//! Stable Diffusion 1.x and 2.x text to image from a diffusers pipeline folder, as
//! StableDiffusionPipeline runs it (../shared/TEXT2IMG.md section 4): the prompts tokenized and
//! encoded once on the device, the chain on the latents with classifier-free guidance over
//! [negative; prompt] rows in one evaluation, the decode on the device right after. The
//! pipeline composes the models and the scheduler; the math is theirs.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::index::{self, Components};
use super::latent::{self, DecodePlan, Tiling};
use super::Output;
use crate::diffusion::{
    self, AfterChain, ChainInput, SamplerKind, SamplerPlan, SchedulerConfig, TextDenoiser, TextInput,
};
use crate::gpu::Context;
use crate::model::clip::{ClipTextConfig, ClipTextModel, ClipTokenizer};
use crate::model::unet_condition::{UNetCondition, UNetConditionConfig};
use crate::model::vae::{Autoencoder, AutoencoderConfig, AutoencoderKind};
use crate::{Error, Result};

/// StableDiffusionPipeline's default guidance scale.
pub const DEFAULT_GUIDANCE_SCALE: f32 = 7.5;
/// Its default steps.
pub const DEFAULT_STEPS: usize = 50;

/// A Stable Diffusion pipeline folder, read and checked; nothing on the device yet.
pub struct TextPipeline {
    pub root: PathBuf,
    pub components: Components,
    pub unet_config: UNetConditionConfig,
    pub text_config: ClipTextConfig,
    pub vae_config: AutoencoderConfig,
    pub tokenizer: ClipTokenizer,
    /// scheduler_config.json's object and its path.
    scheduler_file: Option<(Map<String, Value>, String)>,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

impl TextPipeline {
    /// Reads `dir`'s model_index.json and every component's config, and checks that they fit
    /// together (the text's width is the UNet's cross-attention width, the UNet works on the
    /// VAE's latents).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join(index::INDEX_FILE).is_file() {
            return Err(Error::Invalid(format!(
                "{}: no model_index.json; txt2img takes a Stable Diffusion pipeline folder (save_pretrained)",
                dir.display()
            )));
        }
        let components = index::read(dir)?;
        if !components.is_text() {
            return Err(Error::Invalid(format!(
                "{}: its unet is a UNet2DModel, which takes no prompt: `sample --model {0}` runs it",
                dir.display()
            )));
        }
        let part = |c: &Option<index::Component>| c.clone().expect("checked by index::read"); // ok: index::read requires them
        let (unet, text, tok, vae) = (
            part(&components.unet),
            part(&components.text_encoder),
            part(&components.tokenizer),
            part(&components.autoencoder),
        );
        let (unet_cfg_path, _) = crate::model::component_files(&unet.dir)?;
        let unet_config =
            UNetConditionConfig::parse(&read(&unet_cfg_path)?, &unet_cfg_path.display().to_string())?;
        let text_path = text.dir.join("config.json");
        if !text_path.is_file() {
            return Err(Error::Invalid(format!("{}: no config.json", text.dir.display())));
        }
        let text_config = ClipTextConfig::parse(&read(&text_path)?, &text_path.display().to_string())?;
        let (vae_path, _) = crate::model::component_files(&vae.dir)?;
        let vae_config =
            AutoencoderConfig::parse(&read(&vae_path)?, Some(&vae.class), &vae_path.display().to_string())?;
        let tokenizer = ClipTokenizer::open(&tok.dir)?;
        let scheduler_file = match &components.scheduler {
            Some(s) => {
                let path = s.dir.join("scheduler_config.json");
                let shown = path.display().to_string();
                Some((SchedulerConfig::parse_file(&read(&path)?, &shown)?, shown))
            }
            None => None,
        };
        let p = Self {
            root: dir.to_path_buf(),
            components,
            unet_config,
            text_config,
            vae_config,
            tokenizer,
            scheduler_file,
        };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<()> {
        let root = self.root.display();
        let (u, t, v) = (&self.unet_config, &self.text_config, &self.vae_config);
        if t.hidden_size != u.cross_attention_dim {
            return Err(Error::Invalid(format!(
                "{root}: the text encoder's width is {}, but the unet's cross_attention_dim is {}",
                t.hidden_size, u.cross_attention_dim
            )));
        }
        if v.kind != AutoencoderKind::Kl {
            return Err(Error::Invalid(format!(
                "{root}: a Stable Diffusion pipeline's vae is an AutoencoderKL"
            )));
        }
        let latent = v.latent_width();
        if u.out_channels != latent || (u.in_channels != latent && u.in_channels != 2 * latent + 1) {
            return Err(Error::Invalid(format!(
                "{root}: the vae makes latents of {latent} channels, but the unet takes {} and makes {}",
                u.in_channels, u.out_channels
            )));
        }
        if self.tokenizer.max_length > t.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "{root}: the tokenizer makes {} positions, the text encoder has {}",
                self.tokenizer.max_length, t.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// An inpainting UNet (latents, mask, masked-image latents: 9 channels in SD's).
    pub fn is_inpainting(&self) -> bool {
        self.unet_config.in_channels != self.vae_config.latent_width()
    }

    /// The image's side the pipeline makes when none is asked: the UNet's sample_size in pixels.
    pub fn default_size(&self) -> usize {
        self.unet_config.sample_size * self.vae_config.downscale()
    }

    /// Pixels per latent, each side.
    pub fn downscale(&self) -> usize {
        self.vae_config.downscale()
    }

    /// The folder's scheduler (or `kind`), as StableDiffusionPipeline.__init__ leaves it:
    /// steps_offset 1 and clip_sample off, whatever an old config says.
    pub fn scheduler(&self, kind: Option<SamplerKind>) -> Result<SchedulerConfig> {
        let (file, shown) = match &self.scheduler_file {
            Some((f, s)) => (Some(f.clone()), s.clone()),
            None => (None, format!("{} (no scheduler config)", self.root.display())),
        };
        let own = file
            .as_ref()
            .and_then(|f| f.get("_class_name"))
            .and_then(Value::as_str)
            .and_then(SamplerKind::from_class_name);
        let kind = match (kind, own) {
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => {
                let class = file
                    .as_ref()
                    .and_then(|f| f.get("_class_name"))
                    .and_then(Value::as_str)
                    .unwrap_or("none");
                return Err(Error::Invalid(format!(
                    "{shown}: scheduler class '{class}' is not one this engine runs; choose one with --scheduler ({})",
                    SamplerKind::NAMES
                )));
            }
        };
        let mut file = file.unwrap_or_default();
        file.insert("steps_offset".into(), Value::from(1));
        file.insert("clip_sample".into(), Value::from(false));
        SchedulerConfig::resolve(kind, Some(&file), &shown)
    }

    /// Tokenizes the prompts as encode_prompt does (77 positions, cut with the words reported):
    /// the ids of each, and one line for each prompt that was cut.
    pub fn tokenize(&self, prompts: &[&str]) -> (Vec<u32>, Vec<String>) {
        let mut ids = vec![];
        let mut warnings = vec![];
        for p in prompts {
            let e = self.tokenizer.encode(p);
            if let Some(cut) = e.truncated {
                warnings.push(format!(
                    "The following part of your input was truncated because CLIP can only handle sequences up to {} tokens: {cut}",
                    self.tokenizer.max_length
                ));
            }
            ids.extend(e.ids);
        }
        (ids, warnings)
    }

    /// Loads the text encoder, the UNet and the VAE onto the device.
    pub fn load(&self, ctx: &Context) -> Result<LoadedText<'_>> {
        let part = |c: &Option<index::Component>| c.clone().expect("checked by index::read"); // ok: checked on open
        let text = ClipTextModel::load(ctx, &part(&self.components.text_encoder).dir)?;
        let unet = UNetCondition::load(ctx, &part(&self.components.unet).dir)?;
        let vae_dir = part(&self.components.autoencoder);
        let vae = Autoencoder::load(ctx, &vae_dir.dir, Some(&vae_dir.class))?;
        Ok(LoadedText { pipeline: self, text, unet, vae })
    }
}

/// One part of a run's memory plan: the weights it keeps on the device, the activations its
/// graph plans at once, and its largest single tensor (what must fit one binding).
#[derive(Clone, Debug)]
pub struct PlanRow {
    pub part: String,
    pub parameters: usize,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    /// Kernels' own scratch beside the activations (attention's scores), held while it runs.
    pub scratch_bytes: u64,
    pub largest_tensor: u64,
}

fn largest(g: &crate::graph::Graph) -> u64 {
    g.activations().map(|t| g.bytes(t)).max().unwrap_or(0)
}

impl TextPipeline {
    /// The memory a run of `batch` images of `height` x `width` plans, part by part, built
    /// from the configs alone (no weight is read or put on the device): the text encoder over
    /// the prompt rows, the UNet over `batch` images (twice under guidance), the decode (the
    /// tiles it would take, if any, in words).
    pub fn memory_plan(
        &self,
        ctx: &Context,
        height: usize,
        width: usize,
        batch: usize,
        guided: bool,
    ) -> Result<(Vec<PlanRow>, String)> {
        use crate::model::weights::WeightBank;
        let d = self.downscale();
        if height == 0 || width == 0 || !height.is_multiple_of(d) || !width.is_multiple_of(d) {
            return Err(Error::Invalid(format!(
                "--height {height} --width {width}: each a positive multiple of {d}"
            )));
        }
        let (lh, lw) = (height / d, width / d);
        let copies = if guided { 2 } else { 1 };
        let mut rows = vec![];
        let plan = |g: &crate::graph::Graph| crate::graph::Plan::new(g).peak_bytes;
        // The text encoder over the negative and the prompt.
        let mut text = ClipTextModel { config: self.text_config.clone(), bank: WeightBank::planning() };
        let tokens = self.tokenizer.max_length;
        // The negative prompt's row and the prompt's (run() encodes both).
        let e = text.plan_graph(ctx, 2, tokens)?;
        rows.push(PlanRow {
            part: format!("text encoder ({} prompt rows)", e.1),
            parameters: text.bank.parameters,
            weight_bytes: text.bank.weight_bytes(),
            activation_bytes: plan(&e.0),
            scratch_bytes: e.0.attention_scratch(ctx),
            largest_tensor: largest(&e.0),
        });
        let mut unet = UNetCondition { config: self.unet_config.clone(), bank: WeightBank::planning() };
        let shape = crate::model::unet_condition::CondShape {
            batch: batch * copies,
            height: lh,
            width: lw,
            text_tokens: tokens,
        };
        let g = crate::model::unet_condition::build(ctx, &unet.config.clone(), &mut unet.bank, shape)?;
        rows.push(PlanRow {
            part: format!(
                "unet ({} rows of {}x{}x{} latents a step)",
                batch * copies,
                self.unet_config.in_channels,
                lh,
                lw
            ),
            parameters: unet.bank.parameters,
            weight_bytes: unet.bank.weight_bytes(),
            activation_bytes: plan(&g.graph),
            scratch_bytes: g.graph.attention_scratch(ctx),
            largest_tensor: largest(&g.graph),
        });
        let mut vae = Autoencoder { config: self.vae_config.clone(), bank: WeightBank::planning() };
        let decode = latent::plan_decode(ctx, &mut vae, (lh, lw), batch, Tiling::Auto, None)?;
        let (db, note) = match &decode {
            DecodePlan::Whole { batch } => {
                (*batch, format!("the decode runs whole, {batch} image(s) at once"))
            }
            DecodePlan::Tiled { batch, reason, .. } => (*batch, reason.clone()),
        };
        let decode_graph = vae.plan_graph(ctx, crate::model::vae::Stage::DecodeLatents, db.max(1), lh, lw)?;
        let (peak, scratch) = (plan(&decode_graph), decode_graph.attention_scratch(ctx));
        rows.push(PlanRow {
            part: format!("vae decode ({} image(s) at once)", db.max(1)),
            parameters: vae.bank.parameters,
            weight_bytes: vae.bank.weight_bytes(),
            activation_bytes: peak,
            scratch_bytes: scratch,
            largest_tensor: 0,
        });
        Ok((rows, note))
    }
}

/// What one txt2img run makes.
pub struct TextJob {
    /// The prompts, and for each image of the whole batch, the prompt it draws.
    pub prompts: Vec<String>,
    pub image_prompts: Vec<usize>,
    /// The negative prompt ("" when none: diffusers' unconditional text).
    pub negative: String,
    /// Guidance over [negative; prompt] rows above 1; at 1 or below the prompt alone.
    pub guidance_scale: f32,
    pub plan: SamplerPlan,
    /// The image's size in pixels.
    pub height: usize,
    pub width: usize,
    pub seed: u64,
    /// Images in the whole run (over every shard), and those made here.
    pub batch: usize,
    pub images: Range<usize>,
    /// Standard-normal latents [batch, 4, H/8, W/8] for the whole batch.
    pub init_noise: Option<Vec<f32>>,
    pub tiling: Tiling,
    pub memory_budget: Option<u64>,
    /// Where the chain starts: noise, or an image's latents noised to the plan's first step.
    pub start: TextStart,
}

/// Where a text-to-image chain starts.
#[derive(Clone, Debug)]
pub enum TextStart {
    /// Latents of noise times init_noise_sigma (txt2img).
    Noise,
    /// StableDiffusionImg2ImgPipeline: `image` [3, H, W] in [-1, 1] (the job's size) encoded
    /// (its posterior drawn, or its mode), scaled, then x = a z0 + b noise with `noising` (the
    /// plan, already cut to the strength, starts at that step).
    Img2Img { image: Vec<f32>, noising: (f64, f64), posterior: latent::Posterior },
    /// StableDiffusionInpaintPipeline: `image` [3, H, W] in [-1, 1] and `mask` [H, W] (1 repaints,
    /// already binarised at 0.5). Below full strength `noising` starts from the image's latents
    /// noised to the plan's first step (None: pure noise). An inpainting UNet reads the latent
    /// mask and the masked image's latents as further channels; any other UNet's latents are
    /// blended with the image's after each step.
    Inpaint { image: Vec<f32>, mask: Vec<f32>, noising: Option<(f64, f64)>, posterior: latent::Posterior },
}

/// StableDiffusionInpaintPipeline's latent mask: the pixel mask [H, W] sampled at (d i, d j), as
/// F.interpolate's nearest takes it.
pub fn latent_mask(mask: &[f32], (lh, lw): (usize, usize), d: usize) -> Vec<f32> {
    let width = lw * d;
    (0..lh).flat_map(|i| (0..lw).map(move |j| mask[i * d * width + j * d])).collect()
}

/// The image with the repainted pixels (mask 1) set to 0, on every channel: what the inpainting
/// UNet's masked-image latents encode (image * (mask < 0.5)).
pub fn masked_image(image: &[f32], mask: &[f32]) -> Vec<f32> {
    let plane = mask.len();
    image.iter().enumerate().map(|(i, &v)| if mask[i % plane] < 0.5 { v } else { 0.0 }).collect()
}

impl TextJob {
    /// Whether guidance runs: diffusers' do_classifier_free_guidance (scale above 1).
    pub fn guided(&self) -> bool {
        self.guidance_scale > 1.0
    }

    fn latent_size(&self, p: &TextPipeline) -> Result<(usize, usize)> {
        let d = p.downscale();
        if self.height == 0
            || self.width == 0
            || !self.height.is_multiple_of(d)
            || !self.width.is_multiple_of(d)
        {
            return Err(Error::Invalid(format!(
                "--height {} --width {}: each a positive multiple of {d} (the vae's downscaling)",
                self.height, self.width
            )));
        }
        Ok((self.height / d, self.width / d))
    }
}

/// A Stable Diffusion pipeline on the device.
pub struct LoadedText<'p> {
    pub pipeline: &'p TextPipeline,
    pub text: ClipTextModel,
    pub unet: UNetCondition,
    pub vae: Autoencoder,
}

impl LoadedText<'_> {
    /// How the decode runs for `job`, planned before any work.
    pub fn decode_plan(&mut self, ctx: &Context, job: &TextJob) -> Result<DecodePlan> {
        let size = job.latent_size(self.pipeline)?;
        latent::plan_decode(ctx, &mut self.vae, size, job.batch, job.tiling, job.memory_budget)
    }

    /// Makes the job's images [images, 3, H, W] in [-1, 1] (the VAE's output, before any
    /// clamping), and the final latents when `keep_latents`; `warn` hears each prompt that was cut.
    pub fn run(
        &mut self,
        ctx: &Context,
        job: &TextJob,
        keep_latents: bool,
        progress: super::Progress,
        warn: &mut dyn FnMut(&str),
    ) -> Result<Output> {
        let (lh, lw) = job.latent_size(self.pipeline)?;
        if job.image_prompts.len() != job.batch || job.image_prompts.iter().any(|&p| p >= job.prompts.len()) {
            return Err(Error::Shape(format!(
                "{} image prompts for a batch of {}",
                job.image_prompts.len(),
                job.batch
            )));
        }
        if !job.guidance_scale.is_finite() {
            return Err(Error::Invalid(format!("--guidance-scale {}: a finite number", job.guidance_scale)));
        }
        // Rows: the negative prompt first (read only under guidance), then each prompt.
        let mut texts: Vec<&str> = vec![&job.negative];
        texts.extend(job.prompts.iter().map(String::as_str));
        let (ids, warnings) = self.pipeline.tokenize(&texts);
        for w in warnings.iter().skip(if job.guided() { 0 } else { 1 }) {
            warn(w);
        }
        let tokens = self.pipeline.tokenizer.max_length;
        let encoded = self.text.executable(ctx, texts.len(), tokens)?;
        let as_f32: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
        ctx.queue.write_buffer(encoded.exe.buffer(encoded.ids), 0, bytemuck::cast_slice(&as_f32));
        ctx.run(&encoded.exe.dispatches);
        let rows: Vec<usize> = job.image_prompts.iter().map(|p| p + 1).collect();
        let text = TextInput {
            states: encoded.exe.buffer(encoded.output),
            rows: &rows,
            guidance: job.guided().then_some((0, job.guidance_scale)),
        };
        // img2img and inpainting below full strength: the image's latents, every image of the
        // batch starting from them; inpainting's mask channels or blend.
        let mut encode = |image: &[f32], posterior, stream| {
            latent::encode_image(ctx, &mut self.vae, image, (lh, lw), posterior, job.tiling, job.seed, stream)
        };
        let inpainting = self.pipeline.is_inpainting();
        let (start, mask) = match &job.start {
            TextStart::Noise => (None, None),
            TextStart::Img2Img { image, noising, posterior } => {
                (Some((encode(image, *posterior, 0)?, *noising)), None)
            }
            TextStart::Inpaint { image, mask, noising, posterior } => {
                let m = latent_mask(mask, (lh, lw), self.pipeline.downscale());
                let z0 = match noising.is_some() || !inpainting {
                    true => Some(encode(image, *posterior, 0)?),
                    false => None,
                };
                let spec = if inpainting {
                    let mut extra = m;
                    extra.extend(encode(&masked_image(image, mask), *posterior, 1)?);
                    MaskSpec::Channels(extra)
                } else {
                    MaskSpec::Blend { image: z0.clone().expect("encoded above"), mask: m }
                    // ok: encoded when not inpainting
                };
                (z0.zip(*noising), Some(spec))
            }
        };
        if inpainting && mask.is_none() {
            return Err(Error::Invalid(format!(
                "{}: an inpainting unet ({} input channels): `inpaint --prompt` runs it",
                self.pipeline.root.display(),
                self.pipeline.unet_config.in_channels
            )));
        }
        let input = ChainInput {
            seed: job.seed,
            batch: job.batch,
            images: job.images.clone(),
            init_noise: job.init_noise.as_deref(),
            img2img: start
                .as_ref()
                .map(|(z0, noising)| diffusion::Img2ImgStart { image: z0, noising: *noising }),
            conditioning: None,
            text: Some(text),
            mask: mask.as_ref().map(MaskSpec::as_input),
        };
        let mut denoiser = TextDenoiser { unet: &mut self.unet, height: lh, width: lw, text_tokens: tokens };
        let copies = if job.guided() { 2 } else { 1 };
        let micro = job.batch.min(diffusion::Denoiser::max_batch(&mut denoiser, ctx)? / copies).max(1);
        let mut decode: Box<dyn DecodeWithLatents> =
            match latent::plan_decode(ctx, &mut self.vae, (lh, lw), micro, job.tiling, job.memory_budget)? {
                DecodePlan::Whole { batch } => {
                    Box::new(latent::Decode::new(ctx, &mut self.vae, batch.min(micro), lh, lw, keep_latents)?)
                }
                DecodePlan::Tiled { plan, batch, .. } => Box::new(latent::TiledDecode::new(
                    ctx,
                    &mut self.vae,
                    plan,
                    batch.min(micro),
                    (lh, lw),
                    keep_latents,
                )?),
            };
        let images =
            diffusion::sample_then(ctx, &mut denoiser, &job.plan, &input, progress, decode.as_after())?;
        Ok(Output { images, latents: decode.take_latents() })
    }
}

/// Latent inpainting's inputs, held for the chain.
enum MaskSpec {
    Channels(Vec<f32>),
    Blend { image: Vec<f32>, mask: Vec<f32> },
}

impl MaskSpec {
    fn as_input(&self) -> diffusion::LatentMask<'_> {
        match self {
            MaskSpec::Channels(extra) => diffusion::LatentMask::Channels(extra),
            MaskSpec::Blend { image, mask } => diffusion::LatentMask::Blend { image, mask },
        }
    }
}

/// A decode after the chain that may keep the final latents.
trait DecodeWithLatents {
    fn as_after(&mut self) -> &mut dyn AfterChain;
    fn take_latents(&mut self) -> Option<Vec<f32>>;
}

impl DecodeWithLatents for latent::Decode {
    fn as_after(&mut self) -> &mut dyn AfterChain {
        self
    }
    fn take_latents(&mut self) -> Option<Vec<f32>> {
        self.latents.take()
    }
}

impl DecodeWithLatents for latent::TiledDecode {
    fn as_after(&mut self) -> &mut dyn AfterChain {
        self
    }
    fn take_latents(&mut self) -> Option<Vec<f32>> {
        self.latents.take()
    }
}
