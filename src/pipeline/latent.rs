//! A latent pipeline's ends around the chain (../shared/LATENT.md): the decode that follows each
//! micro-batch's chain on the device, before anything is read back, and the encode that turns
//! img2img's input image into the latents it starts from.

use crate::diffusion::AfterChain;
use crate::gpu::{record_all, Context, CopyOp, Cost, Dispatch};
use crate::kernels::{elementwise, rng};
use crate::model::vae::tiling::{TilePlan, TiledDecoder};
use crate::model::vae::{Autoencoder, AutoencoderExecutable, AutoencoderKind, Stage};
use crate::{Error, Result};

const MIB: f64 = (1u64 << 20) as f64;

/// How the decode runs: whole images, or in tiles (and why).
#[derive(Clone, Debug, PartialEq)]
pub enum DecodePlan {
    /// Whole images, up to `batch` at once.
    Whole { batch: usize },
    /// Tiles, up to `batch` images a tile at once; `reason` says why in one line.
    Tiled { plan: TilePlan, batch: usize, reason: String },
}

/// Tiling as asked (`--vae-tiling`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tiling {
    /// Tiles where the whole decode would not fit the device or the memory budget.
    #[default]
    Auto,
    /// diffusers' `enable_tiling`: tiles wherever the latents are larger than a tile.
    On,
}

/// Plans the decode of latents of `h` x `w`, `batch` images at most at once, within the
/// device's bindings and `budget` bytes of planned activations: whole where it fits, else in
/// diffusers' tiles, else in smaller tiles; an error (before any work) where not even one image's
/// smallest tile fits.
pub fn plan_decode(
    ctx: &Context,
    vae: &mut Autoencoder,
    (h, w): (usize, usize),
    batch: usize,
    tiling: Tiling,
    budget: Option<u64>,
) -> Result<DecodePlan> {
    let budget = budget.unwrap_or(u64::MAX);
    let d = vae.config.downscale();
    // The most images of a (th, tw) graph that fit, 0 if not one.
    let fits = |vae: &mut Autoencoder, th: usize, tw: usize| -> Result<(usize, u64)> {
        let by_binding = vae.max_batch(ctx, Stage::DecodeLatents, th, tw)?;
        let (peak, _) = vae.plan_bytes(ctx, Stage::DecodeLatents, 1, th, tw)?;
        Ok((by_binding.min((budget / peak.max(1)) as usize).min(batch), peak))
    };
    let diffusers = TilePlan::for_autoencoder(vae);
    if tiling == Tiling::On && diffusers.splits(h, w) {
        let (n, _) = fits(vae, diffusers.tile, diffusers.tile)?;
        if n > 0 {
            let reason = format!("decoding in tiles of {0}x{0} latents (--vae-tiling)", diffusers.tile);
            return Ok(DecodePlan::Tiled { plan: diffusers, batch: n, reason });
        }
    }
    let (whole, peak) = fits(vae, h, w)?;
    if whole > 0 && (tiling == Tiling::Auto || !diffusers.splits(h, w)) {
        return Ok(DecodePlan::Whole { batch: whole });
    }
    let why = if vae.max_batch(ctx, Stage::DecodeLatents, h, w)? == 0 {
        format!(
            "one {}x{} decode has a tensor over this device's {} MiB binding limit",
            h * d,
            w * d,
            ctx.max_binding_bytes() >> 20
        )
    } else {
        format!(
            "one {}x{} decode plans {:.1} MiB, over the {:.1} MiB budget",
            h * d,
            w * d,
            peak as f64 / MIB,
            budget as f64 / MIB
        )
    };
    // diffusers' tiles where they split these latents, else smaller ones until one fits.
    let mut tile = if diffusers.splits(h, w) { diffusers.tile } else { h.max(w) / 2 };
    while tile >= 1 {
        let plan = TilePlan { tile, down: d, encode: false };
        let (n, _) = fits(vae, tile.min(h), tile.min(w))?;
        if n > 0 {
            let reason = format!("decoding in tiles of {tile}x{tile} latents: {why}");
            return Ok(DecodePlan::Tiled { plan, batch: n, reason });
        }
        tile /= 2;
    }
    Err(Error::Invalid(format!("the decode cannot run on this device, not even in tiles: {why}")))
}

/// Tiled decodes of each micro-batch's final latents.
pub struct TiledDecode {
    tiles: TiledDecoder,
    latent_len: usize,
    /// The final latents, kept when asked.
    pub latents: Option<Vec<f32>>,
}

impl TiledDecode {
    pub fn new(
        ctx: &Context,
        vae: &mut Autoencoder,
        plan: TilePlan,
        batch: usize,
        (h, w): (usize, usize),
        keep_latents: bool,
    ) -> Result<Self> {
        let tiles = TiledDecoder::new(ctx, vae, plan, Stage::DecodeLatents, batch, h, w)?;
        Ok(Self {
            tiles,
            latent_len: vae.config.latent_width() * h * w,
            latents: keep_latents.then(Vec::new),
        })
    }
}

impl AfterChain for TiledDecode {
    fn finish(&mut self, ctx: &Context, x: &wgpu::Buffer, n: usize) -> Result<Vec<f32>> {
        if let Some(l) = self.latents.as_mut() {
            l.extend(ctx.read_buffer(x, n * self.latent_len)?);
        }
        self.tiles.decode(ctx, x, n)
    }
}

/// Substream of the posterior's noise (the chain's start with 0, its steps with 1 + step).
const POSTERIOR_SUBSTREAM: u32 = u32::MAX;

/// Decodes each micro-batch's final latents, as pipelines decode them (`decode(z / scaling)`).
pub struct Decode {
    exe: AutoencoderExecutable,
    /// Values of one latent, of one image.
    latent_len: usize,
    image_len: usize,
    /// The final latents, kept when asked (`--save-latents`).
    pub latents: Option<Vec<f32>>,
}

impl Decode {
    /// A decoder for latents of `h` x `w`, decoding `batch` images at once (`plan_decode`'s).
    pub fn new(
        ctx: &Context,
        vae: &mut Autoencoder,
        batch: usize,
        h: usize,
        w: usize,
        keep_latents: bool,
    ) -> Result<Self> {
        let exe = vae.executable(ctx, Stage::DecodeLatents, batch, h, w)?;
        let d = vae.config.downscale();
        Ok(Self {
            exe,
            latent_len: vae.config.latent_width() * h * w,
            image_len: vae.config.out_channels * h * d * w * d,
            latents: keep_latents.then(Vec::new),
        })
    }
}

impl AfterChain for Decode {
    fn finish(&mut self, ctx: &Context, x: &wgpu::Buffer, n: usize) -> Result<Vec<f32>> {
        if let Some(l) = self.latents.as_mut() {
            l.extend(ctx.read_buffer(x, n * self.latent_len)?);
        }
        let batch = self.exe.batch;
        let mut out = Vec::with_capacity(n * self.image_len);
        for start in (0..n).step_by(batch) {
            let m = batch.min(n - start);
            // The chain's latents straight into the decoder's input: nothing read back between.
            let bytes = (4 * self.latent_len) as u64;
            let copy = CopyOp::buffer(x, start as u64 * bytes, self.exe.input_buffer(), 0, m as u64 * bytes);
            let mut list = vec![Dispatch::copies_only("latents to the decoder", vec![copy], Cost::default())];
            list.extend(self.exe.exe.dispatches.iter().cloned());
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            record_all(&mut enc, &list);
            ctx.queue.submit([enc.finish()]);
            out.extend(ctx.read_buffer(self.exe.output_buffer(), m * self.image_len)?);
        }
        Ok(out)
    }
}

/// How img2img turns the encoder's posterior into latents (diffusers' `retrieve_latents`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posterior {
    /// A draw, mean + std eps (the img2img pipelines' default); eps from Philox keyed by the seed.
    Sample,
    /// The mean.
    Mode,
}

/// The latents an image [C, H, W] (the autoencoder's input size) starts img2img from, scaled as
/// the diffusion model sees them: a KL posterior's sample (or mode) times the scaling factor, a
/// VQModel's unquantized latents likewise. A posterior's draw is keyed by (seed, stream): each
/// image one run encodes takes its own stream.
#[allow(clippy::too_many_arguments)]
pub fn encode_image(
    ctx: &Context,
    vae: &mut Autoencoder,
    image: &[f32],
    (h, w): (usize, usize),
    posterior: Posterior,
    tiling: Tiling,
    seed: u64,
    stream: u32,
) -> Result<Vec<f32>> {
    let d = vae.config.downscale();
    let want = vae.config.in_channels * h * d * w * d;
    if image.len() != want {
        return Err(Error::Shape(format!(
            "the input image has {} values, the autoencoder takes {want}",
            image.len()
        )));
    }
    // The encoder's output (the moments, or a VQModel's latents), whole or in diffusers' tiles.
    let tiles = TilePlan::encoder_for(vae);
    let (encoded, mut list) = if tiling == Tiling::On && tiles.splits(h * d, w * d) {
        let input = ctx.upload(image, &[image.len()])?;
        let tiled = TiledDecoder::new(ctx, vae, tiles, Stage::Encode, 1, h * d, w * d)?;
        let moments = tiled.decode(ctx, &input.buffer, 1)?;
        (ctx.upload(&moments, &[moments.len()])?.buffer.clone(), vec![])
    } else {
        let exe = vae.executable(ctx, Stage::Encode, 1, h, w)?;
        ctx.queue.write_buffer(exe.input_buffer(), 0, bytemuck::cast_slice(image));
        (exe.output_buffer().clone(), exe.exe.dispatches.clone())
    };
    let cfg = &vae.config;
    let (l, plane) = (cfg.latent_width(), h * w);
    let out = ctx.scratch_buffer("encoded latents", l * plane);
    let scale = (cfg.scaling_factor, cfg.shift_factor.unwrap_or(0.0));
    match cfg.kind {
        AutoencoderKind::Kl => {
            let eps = ctx.scratch_buffer("posterior noise", l * plane);
            let mode = posterior == Posterior::Mode;
            if !mode {
                let key = rng::NoiseKey { seed, stream_base: stream, substream: POSTERIOR_SUBSTREAM };
                list.push(rng::normal(ctx, key, 1, l * plane, None, &eps)?);
            }
            list.push(elementwise::gaussian_sample(ctx, 1, l, plane, mode, scale, &encoded, &eps, &out)?);
        }
        AutoencoderKind::Vq { .. } => {
            let (a, b) = (scale.0, -scale.1 * scale.0);
            list.push(elementwise::affine(ctx, l * plane, a, b, &encoded, &out)?);
        }
    }
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    record_all(&mut enc, &list);
    ctx.queue.submit([enc.finish()]);
    ctx.read_buffer(&out, l * plane)
}
