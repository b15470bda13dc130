//! A latent pipeline's ends around the chain (../shared/LATENT.md): the decode that follows each
//! micro-batch's chain on the device, before anything is read back, and the encode that turns
//! img2img's input image into the latents it starts from.

use crate::diffusion::AfterChain;
use crate::gpu::{record_all, Context, CopyOp, Cost, Dispatch};
use crate::kernels::{elementwise, rng};
use crate::model::vae::{Autoencoder, AutoencoderExecutable, AutoencoderKind, Stage};
use crate::{Error, Result};

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
    /// A decoder for latents of `h` x `w`, decoding up to `batch` images at once (fewer where the
    /// device's bindings cannot hold them).
    pub fn new(
        ctx: &Context,
        vae: &mut Autoencoder,
        batch: usize,
        h: usize,
        w: usize,
        keep_latents: bool,
    ) -> Result<Self> {
        let max = vae.max_batch(ctx, Stage::DecodeLatents, h, w)?;
        if max == 0 {
            return Err(Error::Shape(format!(
                "one {}x{} decode needs a tensor over this device's {} MiB binding limit",
                h * vae.config.downscale(),
                w * vae.config.downscale(),
                ctx.max_binding_bytes() >> 20
            )));
        }
        let exe = vae.executable(ctx, Stage::DecodeLatents, batch.min(max), h, w)?;
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
/// VQModel's unquantized latents likewise.
pub fn encode_image(
    ctx: &Context,
    vae: &mut Autoencoder,
    image: &[f32],
    (h, w): (usize, usize),
    posterior: Posterior,
    seed: u64,
) -> Result<Vec<f32>> {
    let exe = vae.executable(ctx, Stage::Encode, 1, h, w)?;
    let cfg = &vae.config;
    let want: usize = exe.graph.shape(exe.input).iter().product();
    if image.len() != want {
        return Err(Error::Shape(format!(
            "the input image has {} values, the autoencoder takes {want}",
            image.len()
        )));
    }
    ctx.queue.write_buffer(exe.input_buffer(), 0, bytemuck::cast_slice(image));
    let (l, plane) = (cfg.latent_width(), h * w);
    let out = ctx.scratch_buffer("encoded latents", l * plane);
    let scale = (cfg.scaling_factor, cfg.shift_factor.unwrap_or(0.0));
    let mut list = exe.exe.dispatches.clone();
    match cfg.kind {
        AutoencoderKind::Kl => {
            let eps = ctx.scratch_buffer("posterior noise", l * plane);
            let mode = posterior == Posterior::Mode;
            if !mode {
                let key = rng::NoiseKey { seed, stream_base: 0, substream: POSTERIOR_SUBSTREAM };
                list.push(rng::normal(ctx, key, 1, l * plane, None, &eps)?);
            }
            list.push(elementwise::gaussian_sample(
                ctx,
                1,
                l,
                plane,
                mode,
                scale,
                exe.output_buffer(),
                &eps,
                &out,
            )?);
        }
        AutoencoderKind::Vq { .. } => {
            let (a, b) = (scale.0, -scale.1 * scale.0);
            list.push(elementwise::affine(ctx, l * plane, a, b, exe.output_buffer(), &out)?);
        }
    }
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    record_all(&mut enc, &list);
    ctx.queue.submit([enc.finish()]);
    ctx.read_buffer(&out, l * plane)
}
