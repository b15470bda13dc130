//! diffusers' autoencoders (`models/autoencoders/`): AutoencoderKL and VQModel, and the Encoder
//! and Decoder they share (`vae.py`), built on the graph from `model/blocks.rs` (every resnet,
//! attention, downsampler and upsampler is the UNet's). Facts: ../shared/LATENT.md.
//!
//! - encode: image [B, C, H, W] -> encoder -> quant_conv: the posterior's moments (KL: mean and
//!   log-variance, 2L channels) or the latents (VQ: D channels, not quantized);
//! - decode: latents -> (VQ: the nearest code) -> post_quant_conv -> decoder -> image.

pub mod config;
pub mod tiling;

use std::collections::HashMap;
use std::path::Path;

pub use config::{AutoencoderConfig, AutoencoderKind};

use super::blocks::{Blocks, Norm};
use super::tensors::{read_safetensors, HostTensor};
use super::weights::WeightBank;
use crate::gpu::Context;
use crate::graph::{Executable, Graph, TensorId};
use crate::{Error, Result};

/// Every GroupNorm and resnet of diffusers' Encoder and Decoder uses this epsilon.
const EPS: f32 = 1e-6;

/// An autoencoder with its weights on the device.
pub struct Autoencoder {
    pub config: AutoencoderConfig,
    pub bank: WeightBank,
}

/// One of its graphs for a batch at a latent size: the input, the output, the executable.
pub struct AutoencoderExecutable {
    pub exe: Executable,
    pub graph: Graph,
    pub batch: usize,
    pub input: TensorId,
    pub output: TensorId,
    /// The nearest codes [B, H, W] as f32 (a VQModel's decode).
    pub indices: Option<TensorId>,
}

impl AutoencoderExecutable {
    pub fn input_buffer(&self) -> &wgpu::Buffer {
        self.exe.buffer(self.input)
    }
    pub fn output_buffer(&self) -> &wgpu::Buffer {
        self.exe.buffer(self.output)
    }
}

/// Which graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Image to the moments (KL) or the unquantized latents (VQ), as `encode` returns them.
    Encode,
    /// Latents to the image, as `decode` takes them.
    Decode,
    /// A diffusion model's latents to the image: unscaled first, as pipelines decode
    /// (`decode(z / scaling_factor)`, plus the shift where the VAE has one).
    DecodeLatents,
}

impl Autoencoder {
    /// Loads `dir` (config.json + diffusion_pytorch_model.safetensors) as `class` (from
    /// model_index.json; else the config's `_class_name`).
    pub fn load(ctx: &Context, dir: &Path, class: Option<&str>) -> Result<Self> {
        let (config_path, weights) = super::component_files(dir)?;
        let shown = config_path.display().to_string();
        let text = std::fs::read_to_string(&config_path)
            .map_err(|source| Error::Io { path: shown.clone(), source })?;
        let config = AutoencoderConfig::parse(&text, class, &shown)?;
        let tensors = read_safetensors(&weights)?;
        Self::from_tensors(ctx, config, tensors, &weights.display().to_string())
    }

    /// Checks every tensor both graphs need (names and shapes) and uploads it.
    pub fn from_tensors(
        ctx: &Context,
        config: AutoencoderConfig,
        tensors: HashMap<String, HostTensor>,
        source: &str,
    ) -> Result<Self> {
        let mut bank = WeightBank::new(tensors, source);
        take_weights(ctx, &config, &mut bank)?;
        bank.release_host();
        Ok(Self { config, bank })
    }

    /// An architecture with random weights (benchmarks).
    pub fn random(ctx: &Context, config: AutoencoderConfig, seed: u64) -> Result<Self> {
        let mut bank = WeightBank::synthetic(seed);
        take_weights(ctx, &config, &mut bank)?;
        Ok(Self { config, bank })
    }

    /// The graph of `stage` for `batch` images at a latent size of `h` x `w` (the image is
    /// `downscale` times larger each side), planned and lowered.
    pub fn executable(
        &mut self,
        ctx: &Context,
        stage: Stage,
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<AutoencoderExecutable> {
        let (graph, input, output, indices) = build(ctx, &self.config, &mut self.bank, stage, batch, h, w)?;
        let exe = Executable::new(ctx, &graph, &self.bank.buffers)?;
        Ok(AutoencoderExecutable { exe, graph, batch, input, output, indices })
    }

    /// The largest batch of `stage` at a latent size of `h` x `w` whose every tensor fits one
    /// binding of this device (0: not even one image).
    pub fn max_batch(&mut self, ctx: &Context, stage: Stage, h: usize, w: usize) -> Result<usize> {
        let (g, ..) = build(ctx, &self.config, &mut self.bank, stage, 1, h, w)?;
        let per_image = g.activations().map(|t| g.bytes(t)).max().unwrap_or(1);
        Ok((ctx.max_binding_bytes() / per_image.max(1)) as usize)
    }

    /// The graph of `stage` for `batch` at a latent size of `h` x `w`, unlowered (memory plans).
    pub fn plan_graph(
        &mut self,
        ctx: &Context,
        stage: Stage,
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<crate::graph::Graph> {
        Ok(build(ctx, &self.config, &mut self.bank, stage, batch, h, w)?.0)
    }

    /// Planned (peak, naive) activation bytes of `stage` for `batch` at a latent size of `h` x `w`.
    pub fn plan_bytes(
        &mut self,
        ctx: &Context,
        stage: Stage,
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<(u64, u64)> {
        let plan = crate::graph::Plan::new(&self.plan_graph(ctx, stage, batch, h, w)?);
        Ok((plan.peak_bytes, plan.naive_bytes))
    }

    /// Runs `stage` on host data [B, C, H, W] (images to encode, or latents [B, D, h, w] to
    /// decode) and returns its output, and for a VQModel's decode the nearest codes.
    pub fn run(
        &mut self,
        ctx: &Context,
        stage: Stage,
        input: &[f32],
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let e = self.executable(ctx, stage, batch, h, w)?;
        let want: usize = e.graph.shape(e.input).iter().product();
        if input.len() != want {
            return Err(Error::Shape(format!(
                "{} input has {} values, {:?} needs {want}",
                self.config.class_name(),
                input.len(),
                e.graph.shape(e.input)
            )));
        }
        ctx.queue.write_buffer(e.input_buffer(), 0, bytemuck::cast_slice(input));
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        e.exe.record(&mut enc);
        ctx.queue.submit([enc.finish()]);
        let out = ctx.read_buffer(e.output_buffer(), e.graph.shape(e.output).iter().product())?;
        let idx = match e.indices {
            Some(t) => Some(ctx.read_buffer(e.exe.buffer(t), e.graph.shape(t).iter().product())?),
            None => None,
        };
        Ok((out, idx))
    }
}

/// Builds both graphs once, which checks (names, shapes) and uploads every weight they take.
fn take_weights(ctx: &Context, config: &AutoencoderConfig, bank: &mut WeightBank) -> Result<()> {
    let down = config.downscale();
    for stage in [Stage::Encode, Stage::Decode] {
        build(ctx, config, bank, stage, 1, down, down)?;
    }
    Ok(())
}

/// Builds `stage`'s graph for `batch` images at a latent size of `h` x `w`: (graph, input,
/// output, VQ indices).
fn build(
    ctx: &Context,
    cfg: &AutoencoderConfig,
    bank: &mut WeightBank,
    stage: Stage,
    batch: usize,
    h: usize,
    w: usize,
) -> Result<(Graph, TensorId, TensorId, Option<TensorId>)> {
    if batch == 0 || h == 0 || w == 0 {
        return Err(Error::Invalid(format!("an autoencoder graph of {batch} images of {h}x{w} latents")));
    }
    let mut b = Blocks { ctx, bank, g: Graph::new() };
    let norm = Norm { groups: cfg.norm_num_groups, eps: EPS };
    let (input, output, indices) = match stage {
        Stage::Encode => {
            let d = cfg.downscale();
            let x = b.g.input(&[batch, cfg.in_channels, h * d, w * d]);
            let mut y = encoder(&mut b, cfg, norm, x)?;
            if cfg.use_quant_conv {
                let c = match cfg.kind {
                    AutoencoderKind::Kl => 2 * cfg.latent_channels,
                    AutoencoderKind::Vq { vq_embed_dim, .. } => vq_embed_dim,
                };
                y = b.conv("quant_conv", y, c, 1)?;
            }
            (x, y, None)
        }
        Stage::Decode | Stage::DecodeLatents => {
            let z = b.g.input(&[batch, cfg.latent_width(), h, w]);
            let (mut y, mut indices) = (z, None);
            if stage == Stage::DecodeLatents {
                let shift = cfg.shift_factor.unwrap_or(0.0);
                y = b.g.affine("unscale_latents", y, 1.0 / cfg.scaling_factor, shift);
            }
            if let AutoencoderKind::Vq { num_vq_embeddings, vq_embed_dim } = cfg.kind {
                let codebook =
                    b.bank.table(ctx, "quantize.embedding.weight", num_vq_embeddings, vq_embed_dim)?;
                let (q, idx) = b.g.vq_quantize("quantize", y, codebook, num_vq_embeddings)?;
                (y, indices) = (q, Some(idx));
            }
            if cfg.use_post_quant_conv {
                y = b.conv("post_quant_conv", y, cfg.latent_channels, 1)?;
            }
            (z, decoder(&mut b, cfg, norm, y)?, indices)
        }
    };
    let mut graph = b.g;
    graph.mark_output(output);
    if let Some(i) = indices {
        graph.mark_output(i);
    }
    Ok((graph, input, output, indices))
}

/// UNetMidBlock2D as the autoencoders use it: resnet, single-head attention over the channels,
/// resnet.
fn mid_block(b: &mut Blocks, cfg: &AutoencoderConfig, norm: Norm, p: &str, x: TensorId) -> Result<TensorId> {
    let c = b.channels(x);
    let mut h = b.resnet(&format!("{p}.resnets.0"), x, c, norm, None, 1.0)?;
    if cfg.mid_block_add_attention {
        h = b.attention(&format!("{p}.attentions.0"), h, 1, norm, 1.0)?;
    }
    b.resnet(&format!("{p}.resnets.1"), h, c, norm, None, 1.0)
}

/// vae.py's Encoder: conv_in, DownEncoderBlock2D per level (resnets, then a padding-0
/// downsampler but at the last level), the mid block, GroupNorm + SiLU, conv_out.
fn encoder(b: &mut Blocks, cfg: &AutoencoderConfig, norm: Norm, x: TensorId) -> Result<TensorId> {
    let chans = &cfg.block_out_channels;
    let mut h = b.conv("encoder.conv_in", x, chans[0], 3)?;
    for (i, &c) in chans.iter().enumerate() {
        for j in 0..cfg.layers_per_block {
            h = b.resnet(&format!("encoder.down_blocks.{i}.resnets.{j}"), h, c, norm, None, 1.0)?;
        }
        if i + 1 < chans.len() {
            h = b.downsample(&format!("encoder.down_blocks.{i}.downsamplers.0"), h, 0)?;
        }
    }
    h = mid_block(b, cfg, norm, "encoder.mid_block", h)?;
    h = b.group_norm("encoder.conv_norm_out", h, norm, true)?;
    b.conv("encoder.conv_out", h, cfg.encoder_out_channels(), 3)
}

/// vae.py's Decoder: conv_in, the mid block, UpDecoderBlock2D per level on the reversed channels
/// (layers_per_block + 1 resnets, then an upsampler but at the last level), GroupNorm + SiLU,
/// conv_out.
fn decoder(b: &mut Blocks, cfg: &AutoencoderConfig, norm: Norm, z: TensorId) -> Result<TensorId> {
    let chans: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
    let mut h = b.conv("decoder.conv_in", z, chans[0], 3)?;
    h = mid_block(b, cfg, norm, "decoder.mid_block", h)?;
    for (i, &c) in chans.iter().enumerate() {
        for j in 0..cfg.layers_per_block + 1 {
            h = b.resnet(&format!("decoder.up_blocks.{i}.resnets.{j}"), h, c, norm, None, 1.0)?;
        }
        if i + 1 < chans.len() {
            h = b.upsample(&format!("decoder.up_blocks.{i}.upsamplers.0"), h)?;
        }
    }
    h = b.group_norm("decoder.conv_norm_out", h, norm, true)?;
    b.conv("decoder.conv_out", h, cfg.out_channels, 3)
}
