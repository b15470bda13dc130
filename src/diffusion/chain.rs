//! The reverse chain on the device: each step is prepare (model input, timestep) -> UNet -> fresh
//! Philox noise -> sampler update -> step counter + 1, all reading their coefficients from the
//! per-step table by the counter on the device. Steps are recorded many per submission and nothing
//! is read back until the end.

use std::ops::Range;

use super::denoiser::Denoiser;
use super::samplers::SamplerPlan;
use crate::gpu::{Context, CopyOp, Cost, Dispatch, Tensor};
use crate::graph::check::{check_ops, OpCheck};
use crate::graph::replay::replay;
use crate::kernels::{diffusion, elementwise, rng};
use crate::model::UNetExecutable;
use crate::{Error, Result};

/// What a chain starts from.
pub struct ChainInput<'a> {
    pub seed: u64,
    /// Images in the whole run, over every shard: it sizes the micro-batches, so that the images a
    /// shard makes are bit for bit those one process makes of the whole batch.
    pub batch: usize,
    /// Global indices of the images to make here (a shard's share of `0..batch`). Image k's noise
    /// is keyed by (seed, k), never by its place in this range.
    pub images: Range<usize>,
    /// Standard-normal x_T [batch, C, H, W] for the whole batch; generated from the seed when None.
    pub init_noise: Option<&'a [f32]>,
    /// img2img: every image starts from this one, noised, instead of from pure noise.
    pub img2img: Option<Img2ImgStart<'a>>,
    /// The class of each image, for a class-conditional model, with guidance or without.
    pub conditioning: Option<Conditioning<'a>>,
    /// The encoded prompts, for a text-conditioned model, with guidance or without.
    pub text: Option<TextInput<'a>>,
    /// Latent inpainting: the inpainting UNet's further channels, or a blend after each step.
    pub mask: Option<LatentMask<'a>>,
}

/// Latent inpainting as StableDiffusionInpaintPipeline runs it, for every image of the batch.
#[derive(Clone, Copy, Debug)]
pub enum LatentMask<'a> {
    /// An inpainting UNet: its further input channels [E, H, W] (the latent mask, then the
    /// masked image's latents), the same at every step and on every guidance row.
    Channels(&'a [f32]),
    /// Any UNet: after each step, where `mask` [H, W] is 0 (kept), x becomes `image` [C, H, W]
    /// noised to the next step with the chain's starting noise, and `image` itself after the last.
    Blend { image: &'a [f32], mask: &'a [f32] },
}

/// Encoded prompts on the device, and which one each image reads.
#[derive(Clone, Copy, Debug)]
pub struct TextInput<'a> {
    /// The text encoder's states [rows, D, 1, T] (the engine's layout of a sequence).
    pub states: &'a wgpu::Buffer,
    /// The row of each image of the whole batch, by global index.
    pub rows: &'a [usize],
    /// Classifier-free guidance: the row of the negative (or empty) prompt, and the scale.
    pub guidance: Option<(usize, f32)>,
}

/// Classifier-free guidance: each step evaluates the model on [null class; class] rows in one
/// batch and gives the sampler uncond + scale (cond - uncond) (DiT's formula, CONDITIONING.md).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guidance {
    pub scale: f32,
    /// The unconditional label.
    pub null_label: f32,
}

/// A chain's class condition.
#[derive(Clone, Copy, Debug)]
pub struct Conditioning<'a> {
    /// One label per image of the whole batch, by global index (so a shard's images are what one
    /// process makes of them).
    pub labels: &'a [f32],
    /// None: the conditional model alone (guidance scale 1: no unconditional pass).
    pub guidance: Option<Guidance>,
}

impl Conditioning<'_> {
    /// Model evaluations per image a step: 2 with guidance.
    pub fn copies(&self) -> usize {
        if self.guidance.is_some() {
            2
        } else {
            1
        }
    }

    /// The class labels of one evaluation for images `start..start + n` of a micro-batch of
    /// `micro` (a short last one padded with its first image's label): the null rows first
    /// under guidance, as diffusers orders [uncond; cond].
    pub fn rows(&self, start: usize, n: usize, micro: usize) -> Vec<f32> {
        let mut own = self.labels[start..start + n].to_vec();
        own.resize(micro, self.labels[start]);
        match self.guidance {
            Some(g) => {
                let mut rows = vec![g.null_label; micro];
                rows.extend(own);
                rows
            }
            None => own,
        }
    }
}

/// The guided model output of a chain: what the sampler update reads instead of the UNet's.
pub(crate) struct Guide<'a> {
    pub scale: f32,
    pub out: &'a wgpu::Buffer,
}

/// Checks a chain's conditioning against the model before any work: labels exactly for a
/// class-conditional model, one per image of the batch, each (and the null label) a class of it.
pub(crate) fn check_conditioning(
    unet: &dyn Denoiser,
    cond: Option<&Conditioning>,
    batch: usize,
) -> Result<()> {
    unet.check_labels(cond.map(|c| c.labels), batch)?;
    if let Some(g) = cond.and_then(|c| c.guidance) {
        unet.check_labels(Some(&[g.null_label]), 1)?;
        if !g.scale.is_finite() {
            return Err(Error::Invalid(format!("guidance scale {}: must be a finite number", g.scale)));
        }
    }
    Ok(())
}

/// Checks a chain's text against the model: states exactly for a text-conditioned model, a row
/// for every image of the batch.
fn check_text(unet: &dyn Denoiser, text: Option<&TextInput>, batch: usize) -> Result<()> {
    match (unet.text_row_len(), text) {
        (0, None) => Ok(()),
        (0, Some(_)) => Err(Error::Invalid("a prompt was given to a model that takes no text".into())),
        (_, None) => Err(Error::Invalid("this model is text-conditioned: it needs a prompt".into())),
        (row, Some(t)) => {
            let rows = (t.states.size() / 4) as usize / row;
            let bad = t.rows.iter().copied().chain(t.guidance.map(|g| g.0)).find(|&r| r >= rows);
            if t.rows.len() != batch || bad.is_some() {
                return Err(Error::Shape(format!(
                    "{} prompt rows for {batch} images, {rows} encoded",
                    t.rows.len()
                )));
            }
            match t.guidance {
                Some((_, s)) if !s.is_finite() => {
                    Err(Error::Invalid(format!("guidance scale {s}: must be a finite number")))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Checks latent inpainting against the model: an inpainting UNet's further channels exactly
/// when it has them, a mask of the latents' plane and latents of the sample's size to blend.
fn check_mask(unet: &dyn Denoiser, mask: Option<&LatentMask>, per: usize) -> Result<()> {
    let [_, h, w] = unet.sample_dims();
    let extra = unet.extra_channels();
    match (extra, mask) {
        (0, None) => Ok(()),
        (0, Some(LatentMask::Channels(_))) => {
            Err(Error::Invalid("mask channels were given to a UNet that takes none".into()))
        }
        (e, Some(LatentMask::Channels(v))) if v.len() != e * h * w => Err(Error::Shape(format!(
            "the inpainting UNet's further channels have {} values, it takes {e} x {h} x {w}",
            v.len()
        ))),
        (_, Some(LatentMask::Channels(_))) => Ok(()),
        (e, _) if e > 0 => Err(Error::Invalid(format!(
            "an inpainting UNet ({e} further input channels): it needs an image and a mask"
        ))),
        (_, Some(LatentMask::Blend { image, mask })) if image.len() != per || mask.len() != h * w => {
            Err(Error::Shape(format!(
                "a blend of {} image and {} mask values, the latents are {per} of {h} x {w}",
                image.len(),
                mask.len()
            )))
        }
        _ => Ok(()),
    }
}

/// Where an img2img chain starts: x = a x0 + b z, with z the standard normal that would have
/// been x_T (so keyed as in `sample`), at the plan's first row (`SamplerPlan::img2img`).
#[derive(Clone, Copy, Debug)]
pub struct Img2ImgStart<'a> {
    /// [C, H, W] in the model's range.
    pub image: &'a [f32],
    pub noising: (f64, f64),
}

impl<'a> ChainInput<'a> {
    /// Every image of a batch of `batch`.
    pub fn all(seed: u64, batch: usize, init_noise: Option<&'a [f32]>) -> Self {
        Self {
            seed,
            batch,
            images: 0..batch,
            init_noise,
            img2img: None,
            conditioning: None,
            text: None,
            mask: None,
        }
    }

    /// The guidance scale, where the chain guides (by class or by text).
    fn guidance_scale(&self) -> Option<f32> {
        match (self.conditioning.and_then(|c| c.guidance), self.text.and_then(|t| t.guidance)) {
            (Some(g), _) => Some(g.scale),
            (None, Some((_, scale))) => Some(scale),
            (None, None) => None,
        }
    }

    /// Model evaluations per image a step: 2 under guidance.
    fn copies(&self) -> usize {
        if self.guidance_scale().is_some() {
            2
        } else {
            1
        }
    }
}

/// Progress: (steps done, steps in total), over all micro-batches.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Substream of the initial noise; step i's noise uses substream 1 + i.
const INIT_SUBSTREAM: u32 = 0;
const STEP_SUBSTREAM: u32 = 1;

/// The device state of a chain over micro-batches of `micro` images: the UNet executable (over
/// `copies` rows an image: 2 under guidance), the sample, noise and previous-x0 buffers, the
/// guided model output, the step table and counter, and the list of dispatches one step records.
struct Chain<'a> {
    ctx: &'a Context,
    input: &'a ChainInput<'a>,
    plan: &'a SamplerPlan,
    net: UNetExecutable,
    micro: usize,
    copies: usize,
    per: usize,
    /// Floats of one row of text states (0 without text).
    text_row_len: usize,
    guided: Option<Tensor>,
    x: Tensor,
    noise: Tensor,
    history: Tensor,
    table: Tensor,
    counter: Tensor,
    /// img2img: the input image for every image of a micro-batch, the noising row (a, b) and
    /// the timestep 0 of every image that picks it. Held here: a pooled tensor dropped before
    /// its dispatch runs goes back to the pool, and another user (another thread's) could
    /// write it first.
    img2img: Option<(Tensor, Tensor, Tensor)>,
    /// Latent inpainting's device state.
    mask: Option<MaskState>,
}

/// What latent inpainting keeps on the device for a micro-batch.
#[allow(clippy::large_enum_variant)] // one per chain
enum MaskState {
    /// An inpainting UNet's further channels, every row of an evaluation (written at each start).
    Channels(Vec<f32>),
    /// The blend (`repaint_mix` with its known region): the image's latents and the kept mask
    /// (1 keeps) for every image, the starting noise kept past the steps' own, and the table
    /// row by the counter after each advance (row k noises to step k, the last keeps the image).
    Blend { image: Tensor, keep: Tensor, start_noise: Tensor, rows: Tensor },
}

impl<'a> Chain<'a> {
    fn new(
        ctx: &'a Context,
        unet: &mut dyn Denoiser,
        plan: &'a SamplerPlan,
        input: &'a ChainInput<'a>,
    ) -> Result<Self> {
        let [channels, height, width] = unet.sample_dims();
        let per = channels * height * width;
        if channels != unet.out_channels() {
            return Err(Error::Invalid(format!(
                "sampling needs out_channels == in_channels, the model has {} and {channels}",
                unet.out_channels()
            )));
        }
        if input.batch == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        let images = &input.images;
        if images.start > images.end || images.end > input.batch {
            return Err(Error::Invalid(format!(
                "images {images:?} are not within a batch of {}",
                input.batch
            )));
        }
        if let Some(x) = input.init_noise {
            if x.len() != input.batch * per {
                return Err(Error::Shape(format!(
                    "initial noise has {} values, {} images of [{channels}, {height}, {width}] need {}",
                    x.len(),
                    input.batch,
                    input.batch * per
                )));
            }
        }
        check_conditioning(unet, input.conditioning.as_ref(), input.batch)?;
        check_text(unet, input.text.as_ref(), input.batch)?;
        check_mask(unet, input.mask.as_ref(), per)?;
        let copies = input.copies();
        // Sized by the whole batch, not this process's share: a shard then runs the executable one
        // process would, and its images come out bit for bit the same on every device (on GPUs
        // split-K's split count follows the batch).
        let micro = micro_batch(ctx, unet, input.batch, copies)?;
        let net = unet.executable(ctx, micro * copies)?;
        let len = micro * per;
        let steps = plan.rows.len();
        let img2img = match &input.img2img {
            Some(start) => {
                if start.image.len() != per {
                    return Err(Error::Shape(format!(
                        "the input image has {} values, the model takes {per}",
                        start.image.len()
                    )));
                }
                let repeated: Vec<f32> = start.image.iter().copied().cycle().take(len).collect();
                let (a, b) = start.noising;
                Some((
                    ctx.upload(&repeated, &[len])?,
                    ctx.upload(&[a as f32, b as f32], &[2])?,
                    ctx.zeros(&[micro])?,
                ))
            }
            None => None,
        };
        let mask = match input.mask {
            None => None,
            Some(LatentMask::Channels(extra)) => Some(MaskState::Channels(
                extra.iter().copied().cycle().take(micro * copies * extra.len()).collect(),
            )),
            Some(LatentMask::Blend { image, mask }) => {
                if plan.noising.len() != steps {
                    return Err(Error::Invalid(format!(
                        "this sampler's plan has {} noising rows for {steps} steps",
                        plan.noising.len()
                    )));
                }
                let keep: Vec<f32> = mask.iter().map(|&m| 1.0 - m).cycle().take(len).collect();
                let repeated: Vec<f32> = image.iter().copied().cycle().take(len).collect();
                let join = |(a, b): (f64, f64)| diffusion::MixRow {
                    known_orig: a as f32,
                    known_z: b as f32,
                    keep: 1.0,
                    fresh: 0.0,
                    use_mask: 1.0,
                    _pad: [0.0; 3],
                };
                let rows: Vec<diffusion::MixRow> = std::iter::once((0.0, 0.0))
                    .chain(plan.noising[1..].iter().copied())
                    .chain([(1.0, 0.0)])
                    .map(join)
                    .collect();
                Some(MaskState::Blend {
                    image: ctx.upload(&repeated, &[len])?,
                    keep: ctx.upload(&keep, &[len])?,
                    start_noise: ctx.zeros(&[len])?,
                    rows: ctx.upload(bytemuck::cast_slice(&rows), &[rows.len() * 8])?,
                })
            }
        };
        Ok(Self {
            ctx,
            input,
            plan,
            net,
            micro,
            copies,
            per,
            text_row_len: unet.text_row_len(),
            guided: if copies > 1 { Some(ctx.zeros(&[len])?) } else { None },
            x: ctx.zeros(&[len])?,
            noise: ctx.zeros(&[len])?,
            history: ctx.zeros(&[diffusion::HISTORY_SLOTS * len])?,
            table: ctx.upload(bytemuck::cast_slice(&plan.rows), &[steps * diffusion::ROW_LEN])?,
            counter: ctx.upload_u32(&[0], &[1])?,
            img2img,
            mask,
        })
    }

    fn len(&self) -> usize {
        self.micro * self.per
    }

    /// Resets the step counter, writes the micro-batch's class labels and returns the dispatches
    /// that write x_T for the micro-batch whose first image is `start` (global index):
    /// init_noise_sigma * z, with z from the file (written here) or from (seed, image index,
    /// substream 0).
    fn start(&self, start: usize) -> Result<Vec<Dispatch>> {
        let (ctx, per) = (self.ctx, self.per);
        ctx.queue.write_buffer(&self.counter.buffer, 0, bytemuck::cast_slice(&[0u32]));
        if let (Some(c), Some(buf)) = (&self.input.conditioning, self.net.class_labels_buffer()) {
            let n = self.micro.min(self.input.images.end - start);
            ctx.queue.write_buffer(buf, 0, bytemuck::cast_slice(&c.rows(start, n, self.micro)));
        }
        let mut text = vec![];
        if let (Some(t), Some(buf)) = (&self.input.text, self.net.text_buffer()) {
            text.push(self.text_rows(t, buf, start));
        }
        if let (Some(MaskState::Channels(extra)), Some(buf)) = (&self.mask, self.net.extra_buffer()) {
            ctx.queue.write_buffer(buf, 0, bytemuck::cast_slice(extra));
        }
        let blend_noise = match &self.mask {
            Some(MaskState::Blend { start_noise, .. }) => Some(start_noise),
            _ => None,
        };
        if self.img2img.is_some() || blend_noise.is_some() {
            // z into the noise buffer (kept for the blend), then x from it.
            let mut list = self.standard_normal(start, None)?;
            if let Some(kept) = blend_noise {
                let bytes = 4 * self.len() as u64;
                let copy = CopyOp::buffer(&self.noise.buffer, 0, &kept.buffer, 0, bytes);
                list.push(Dispatch::copies_only(
                    "start noise",
                    vec![copy],
                    Cost { flops: 0, bytes: 2 * bytes },
                ));
            }
            text.extend(list);
        }
        if let Some((image, row, zero_t)) = &self.img2img {
            // x = a x0 + b z by the noising kernel with a one-row table at timestep 0 for every
            // image.
            text.push(diffusion::add_noise(
                ctx,
                self.micro,
                per,
                1,
                &image.buffer,
                &self.noise.buffer,
                &zero_t.buffer,
                &row.buffer,
                &self.x.buffer,
            )?);
            return Ok(text);
        }
        let sigma = self.plan.init_noise_sigma as f32;
        if blend_noise.is_some() {
            text.push(elementwise::affine(ctx, self.len(), sigma, 0.0, &self.noise.buffer, &self.x.buffer)?);
            return Ok(text);
        }
        text.extend(self.standard_normal(start, Some(sigma))?);
        Ok(text)
    }

    /// Copies of the prompts' states into the UNet's text rows for the micro-batch from image
    /// `start`: the negative prompt's rows first under guidance ([uncond; cond], as diffusers
    /// orders them); a short last micro-batch repeats its first image's.
    fn text_rows(&self, t: &TextInput, dst: &wgpu::Buffer, start: usize) -> Dispatch {
        let n = self.micro.min(self.input.images.end - start);
        let own = (0..self.micro).map(|j| t.rows[start + j.min(n - 1)]);
        let rows: Vec<usize> = match t.guidance {
            Some((uncond, _)) => std::iter::repeat_n(uncond, self.micro).chain(own).collect(),
            None => own.collect(),
        };
        let bytes = 4 * self.text_row_len as u64;
        let copies = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| CopyOp::buffer(t.states, r as u64 * bytes, dst, i as u64 * bytes, bytes))
            .collect();
        Dispatch::copies_only("text rows", copies, Cost { flops: 0, bytes: 2 * bytes * rows.len() as u64 })
    }

    /// z for the micro-batch from image `start`, from the file (written here) or from (seed,
    /// image index, substream 0): into the noise buffer, or scaled by `x_scale` into x.
    fn standard_normal(&self, start: usize, x_scale: Option<f32>) -> Result<Vec<Dispatch>> {
        let (ctx, per, len) = (self.ctx, self.per, self.len());
        let (out, sigma) = match x_scale {
            Some(s) => (&self.x.buffer, s),
            None => (&self.noise.buffer, 1.0),
        };
        Ok(match self.input.init_noise {
            Some(z) => {
                let n = self.micro.min(self.input.images.end - start);
                let mut chunk: Vec<f32> =
                    z[start * per..(start + n) * per].iter().map(|v| v * sigma).collect();
                chunk.resize(len, 0.0);
                ctx.queue.write_buffer(out, 0, bytemuck::cast_slice(&chunk));
                vec![]
            }
            None => {
                let key = rng::NoiseKey {
                    seed: self.input.seed,
                    stream_base: start as u32,
                    substream: INIT_SUBSTREAM,
                };
                let mut list = vec![rng::normal(ctx, key, self.micro, per, None, &self.noise.buffer)?];
                if x_scale.is_some() {
                    list.push(elementwise::affine(ctx, len, sigma, 0.0, &self.noise.buffer, out)?);
                }
                list
            }
        })
    }

    /// The guidance of this chain, where it has one: its scale and the guided output buffer.
    fn guide(&self) -> Option<Guide<'_>> {
        Some(Guide { scale: self.input.guidance_scale()?, out: &self.guided.as_ref()?.buffer })
    }

    /// The dispatches of one step, in four parts: prepare (model input and timestep from the
    /// table row), the UNet, fresh noise (absent for samplers that add none), and the update
    /// (guidance first, where the chain has it) with the counter's advance.
    fn step(&self, start: usize) -> Result<[Vec<Dispatch>; 4]> {
        let state = StepState {
            x: &self.x.buffer,
            noise: &self.noise.buffer,
            history: &self.history.buffer,
            table: &self.table.buffer,
            counter: &self.counter.buffer,
        };
        let ends = step_ends(self.ctx, &self.net, self.len(), self.plan.rows.len(), &state, self.guide())?;
        let mut update = ends.update();
        if let Some(MaskState::Blend { image, keep, start_noise, rows }) = &self.mask {
            let b = diffusion::MixBuffers {
                x: &self.x.buffer,
                orig: &image.buffer,
                mask: &keep.buffer,
                noise: &start_noise.buffer,
                rows: &rows.buffer,
                counter: &self.counter.buffer,
            };
            update.push(diffusion::repaint_mix(self.ctx, self.len(), self.plan.rows.len() + 1, &b)?);
        }
        let prepare = ends.prepare;
        let mut noise = vec![];
        if self.plan.adds_noise {
            let key =
                rng::NoiseKey { seed: self.input.seed, stream_base: start as u32, substream: STEP_SUBSTREAM };
            noise.push(rng::normal(
                self.ctx,
                key,
                self.micro,
                self.per,
                Some(&self.counter.buffer),
                &self.noise.buffer,
            )?);
        }
        Ok([vec![prepare], self.net.exe.dispatches.clone(), noise, update])
    }
}

/// What a reverse step reads and updates around the UNet: the sample, its fresh noise, the
/// previous x0, the table of step coefficients and the counter that picks its row.
pub(crate) struct StepState<'a> {
    pub x: &'a wgpu::Buffer,
    pub noise: &'a wgpu::Buffer,
    pub history: &'a wgpu::Buffer,
    pub table: &'a wgpu::Buffer,
    pub counter: &'a wgpu::Buffer,
}

/// A reverse step's ends around the UNet.
pub(crate) struct StepEnds {
    /// The model input (x once per guidance row) and the timesteps from the counter's row.
    pub prepare: Dispatch,
    /// Classifier-free guidance of the model output, where the chain has it.
    pub guide: Option<Dispatch>,
    /// The sampler update and the counter's advance.
    pub sampler: Vec<Dispatch>,
}

impl StepEnds {
    /// Everything after the UNet: guidance, the sampler update, the advance.
    pub fn update(&self) -> Vec<Dispatch> {
        self.guide.iter().chain(&self.sampler).cloned().collect()
    }
}

/// A reverse step's ends around the UNet `net` (`len` values of samples, `steps` table rows;
/// `net` runs each image once, or twice under `guide`). The sampling chain and RePaint both run
/// them.
pub(crate) fn step_ends(
    ctx: &Context,
    net: &UNetExecutable,
    len: usize,
    steps: usize,
    s: &StepState,
    guide: Option<Guide>,
) -> Result<StepEnds> {
    let copies = if guide.is_some() { 2 } else { 1 };
    let prepare = diffusion::prepare_step(
        ctx,
        net.batch,
        len,
        copies,
        steps,
        s.x,
        s.table,
        s.counter,
        net.sample_buffer(),
        net.timesteps_buffer(),
    )?;
    let guide_dispatch = guide
        .as_ref()
        .map(|g| diffusion::guide(ctx, len, g.scale, net.output_buffer(), g.out))
        .transpose()?;
    let bufs = diffusion::StepBuffers {
        x: s.x,
        model_out: guide.as_ref().map_or(net.output_buffer(), |g| g.out),
        noise: s.noise,
        history: s.history,
        table: s.table,
        step_counter: s.counter,
    };
    let sampler =
        vec![diffusion::sampler_step(ctx, len, steps, &bufs)?, diffusion::advance_step(ctx, s.counter)?];
    Ok(StepEnds { prepare, guide: guide_dispatch, sampler })
}

/// The micro-batch of a chain over `batch` images evaluated `copies` times a step: the largest
/// that fits the device's limits, sized by the whole batch so every shard runs the same one.
pub(crate) fn micro_batch(
    ctx: &Context,
    unet: &mut dyn Denoiser,
    batch: usize,
    copies: usize,
) -> Result<usize> {
    let max = unet.max_batch(ctx)? / copies;
    if max == 0 {
        return Err(Error::Shape(format!(
            "guidance evaluates {copies} rows an image in one batch, over this device's limit of {} images",
            unet.max_batch(ctx)?
        )));
    }
    Ok(batch.min(max))
}

/// What follows each micro-batch's chain on the device before anything is read back (a latent
/// pipeline's decode).
pub trait AfterChain {
    /// Runs on `x`, the micro-batch's final samples (the first `n` of them are images), and
    /// returns what the n images become, in order.
    fn finish(&mut self, ctx: &Context, x: &wgpu::Buffer, n: usize) -> Result<Vec<f32>>;
}

/// The samples themselves, read back.
pub struct ReadBack {
    /// Values an image.
    pub per: usize,
}

impl AfterChain for ReadBack {
    fn finish(&mut self, ctx: &Context, x: &wgpu::Buffer, n: usize) -> Result<Vec<f32>> {
        ctx.read_buffer(x, n * self.per)
    }
}

/// Runs the whole reverse chain for `input.images` and returns their final samples, in order
/// ([images, C, H, W]).
pub fn sample(
    ctx: &Context,
    unet: &mut dyn Denoiser,
    plan: &SamplerPlan,
    input: &ChainInput,
    progress: Progress,
) -> Result<Vec<f32>> {
    let mut read = ReadBack { per: unet.sample_dims().iter().product() };
    sample_then(ctx, unet, plan, input, progress, &mut read)
}

/// `sample` with `after` run on each micro-batch's final samples in place of reading them back.
pub fn sample_then(
    ctx: &Context,
    unet: &mut dyn Denoiser,
    plan: &SamplerPlan,
    input: &ChainInput,
    progress: Progress,
    after: &mut dyn AfterChain,
) -> Result<Vec<f32>> {
    let chain = Chain::new(ctx, unet, plan, input)?;
    let (micro, steps) = (chain.micro, plan.rows.len());
    let images = input.images.clone();
    let total = steps * images.len().div_ceil(micro);
    let mut done = 0;
    let mut out = Vec::new();
    for start in images.clone().step_by(micro) {
        let n = micro.min(images.end - start);
        let init = chain.start(start)?;
        let step_list: Vec<Dispatch> = chain.step(start)?.into_iter().flatten().collect();
        replay(ctx, &init, &step_list, steps, &mut |finished| {
            done += finished;
            progress(done, total);
        })?;
        out.extend(after.finish(ctx, &chain.x.buffer, n)?);
    }
    Ok(out)
}

/// `sample --check`: the chain's first step for the first micro-batch of `input.images`, one part
/// at a time, each against its CPU reference from the inputs the device gave it: prepare, every
/// UNet op (see `graph::check`), the step's noise and the sampler update. One row per part, in
/// order.
pub fn check_first_step(
    ctx: &Context,
    unet: &mut dyn Denoiser,
    plan: &SamplerPlan,
    input: &ChainInput,
) -> Result<Vec<OpCheck>> {
    let chain = Chain::new(ctx, unet, plan, input)?;
    let (len, start, row, copies) = (chain.len(), input.images.start, plan.rows[0], chain.copies);
    let [prepare, _, noise, mut update] = chain.step(start)?;
    let read = |t: &Tensor| ctx.read_buffer(&t.buffer, len);
    ctx.run(&chain.start(start)?);
    let x = read(&chain.x)?;
    ctx.run(&prepare);
    let mut rows = vec![];
    let want_in: Vec<f32> = x.iter().cycle().take(copies * len).map(|v| v * row.model_in_scale).collect();
    rows.push(OpCheck::new(
        "prepare_step",
        "model input",
        &ctx.read_buffer(chain.net.sample_buffer(), copies * len)?,
        &want_in,
    ));
    let evals = copies * chain.micro;
    let t = ctx.read_buffer(chain.net.timesteps_buffer(), evals)?;
    rows.push(OpCheck::new("prepare_step", "timesteps", &t, &vec![row.timestep; evals]));
    rows.extend(check_ops(ctx, &chain.net.graph, &chain.net.exe)?);
    let mut model_out = ctx.read_buffer(chain.net.output_buffer(), copies * len)?;
    if let (Some(g), Some(guided)) = (chain.guide(), &chain.guided) {
        // The guidance is the update's first dispatch.
        ctx.run(&update[..1]);
        update.remove(0);
        let want = diffusion::reference_guide(len, g.scale, &model_out);
        model_out = read(guided)?;
        rows.push(OpCheck::new("guide", "classifier-free guidance", &model_out, &want));
    }
    if !noise.is_empty() {
        ctx.run(&noise);
        let key = rng::NoiseKey { seed: input.seed, stream_base: start as u32, substream: STEP_SUBSTREAM };
        let want = rng::reference(key, 0, chain.micro, chain.per);
        rows.push(OpCheck::new("step noise", "philox normal", &read(&chain.noise)?, &want));
    }
    // Every history slot: a PNDM step reads the older model outputs and the saved sample.
    let (z, mut prev) =
        (read(&chain.noise)?, ctx.read_buffer(&chain.history.buffer, diffusion::HISTORY_SLOTS * len)?);
    ctx.run(&update);
    let want = diffusion::reference_step(&row, &x, &model_out, &z, &mut prev);
    rows.push(OpCheck::new("sampler_step", "update", &read(&chain.x)?, &want));
    Ok(rows)
}
