//! UNet2DConditionModel, Stable Diffusion 1.x's and 2.x's denoiser, as diffusers computes it
//! (`models/unets/unet_2d_condition.py`; ../shared/TEXT2IMG.md section 3), built on the graph
//! from the blocks UNet2DModel and the autoencoders use (resnets, down- and upsamplers, the time
//! embedding) plus Transformer2DModel (`transformer.rs`), for a batch at a latent size.

pub mod config;
pub mod transformer;

use std::collections::HashMap;
use std::path::Path;

pub use config::{CondDownBlock, CondUpBlock, UNetConditionConfig};
use transformer::Text;

use super::blocks::{Blocks, Norm, TimeEmbedding};
use super::tensors::{read_safetensors, HostTensor};
use super::weights::WeightBank;
use crate::gpu::Context;
use crate::graph::{Executable, Graph, TensorId};
use crate::kernels::embedding::EmbeddingConfig;
use crate::{Error, Result};

/// A text-conditioned UNet with its weights on the device.
pub struct UNetCondition {
    pub config: UNetConditionConfig,
    pub bank: WeightBank,
}

/// One forward's graph: sample [B, C, H, W], timesteps [B] (f32), text [B, cross, 1, T] in;
/// the model output [B, out, H, W] out.
pub struct UNetConditionGraph {
    pub graph: Graph,
    /// The latents [B, out_channels, H, W].
    pub sample: TensorId,
    /// An inpainting UNet's further input channels [B, in - out, H, W] (the mask and the masked
    /// image's latents), joined to the latents before conv_in; constant over a chain.
    pub extra: Option<TensorId>,
    pub timesteps: TensorId,
    pub text: TensorId,
    pub output: TensorId,
}

/// Latents, text length and batch of one graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CondShape {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub text_tokens: usize,
}

impl UNetCondition {
    /// Loads a `unet/` folder (config.json, diffusion_pytorch_model[.fp16].safetensors).
    pub fn load(ctx: &Context, dir: &Path) -> Result<Self> {
        let (config_path, weights) = super::component_files(dir)?;
        let shown = config_path.display().to_string();
        let text = std::fs::read_to_string(&config_path)
            .map_err(|source| Error::Io { path: shown.clone(), source })?;
        let config = UNetConditionConfig::parse(&text, &shown)?;
        Self::from_tensors(ctx, config, read_safetensors(&weights)?, &weights.display().to_string())
    }

    /// Checks every tensor the graph needs (names and shapes) and uploads it.
    pub fn from_tensors(
        ctx: &Context,
        config: UNetConditionConfig,
        tensors: HashMap<String, HostTensor>,
        source: &str,
    ) -> Result<Self> {
        let mut bank = WeightBank::new(tensors, source);
        let d = config.downscale();
        build(ctx, &config, &mut bank, CondShape { batch: 1, height: d, width: d, text_tokens: 1 })?;
        bank.release_host();
        Ok(Self { config, bank })
    }

    /// An architecture with random weights (benchmarks, memory plans).
    pub fn random(ctx: &Context, config: UNetConditionConfig, seed: u64) -> Result<Self> {
        let mut bank = WeightBank::synthetic(seed);
        let d = config.downscale();
        build(ctx, &config, &mut bank, CondShape { batch: 1, height: d, width: d, text_tokens: 1 })?;
        Ok(Self { config, bank })
    }

    /// The largest batch at `shape`'s latent size and text length whose every tensor fits one
    /// binding of this device (and a texel view: kernels read operands as texels).
    pub fn max_batch(&mut self, ctx: &Context, shape: CondShape) -> Result<usize> {
        let g = build(ctx, &self.config, &mut self.bank, CondShape { batch: 1, ..shape })?;
        let per_image = g.graph.activations().map(|t| g.graph.bytes(t)).max().unwrap_or(1);
        let limit = ctx.max_binding_bytes().min(ctx.max_texel_bytes());
        Ok((limit / per_image.max(1)) as usize)
    }

    /// Planned (peak, naive) activation bytes at `shape`, without allocating.
    pub fn plan_bytes(&mut self, ctx: &Context, shape: CondShape) -> Result<(u64, u64)> {
        let g = build(ctx, &self.config, &mut self.bank, shape)?;
        let plan = crate::graph::Plan::new(&g.graph);
        Ok((plan.peak_bytes, plan.naive_bytes))
    }

    /// The graph for `shape`, planned and lowered.
    pub fn executable(
        &mut self,
        ctx: &Context,
        shape: CondShape,
    ) -> Result<(UNetConditionGraph, Executable)> {
        let g = build(ctx, &self.config, &mut self.bank, shape)?;
        let exe = Executable::new(ctx, &g.graph, &self.bank.buffers)?;
        Ok((g, exe))
    }

    /// One forward on host data, read back (tests and tools; chains stay on the device):
    /// sample [B, C, H, W], timesteps [B], text [B, T, cross] token-major as transformers
    /// returns it.
    pub fn forward(
        &mut self,
        ctx: &Context,
        shape: CondShape,
        sample: &[f32],
        timesteps: &[f32],
        text: &[f32],
    ) -> Result<Vec<f32>> {
        let (g, exe) = self.executable(ctx, shape)?;
        let (b, t, d) = (shape.batch, shape.text_tokens, self.config.cross_attention_dim);
        if text.len() != b * t * d || timesteps.len() != b {
            return Err(Error::Shape(format!(
                "{} text values and {} timesteps for {shape:?}",
                text.len(),
                timesteps.len()
            )));
        }
        let mut channel_major = vec![0.0f32; text.len()];
        for n in 0..b {
            for k in 0..t {
                for c in 0..d {
                    channel_major[(n * d + c) * t + k] = text[(n * t + k) * d + c];
                }
            }
        }
        // The latents and an inpainting UNet's further channels, each image's split.
        let c_in = self.config.in_channels;
        let c_lat = c_in.min(self.config.out_channels);
        let plane = shape.height * shape.width;
        if sample.len() != b * c_in * plane {
            return Err(Error::Shape(format!(
                "{} sample values for {c_in} channels at {shape:?}",
                sample.len()
            )));
        }
        let (mut latents, mut extra) = (vec![], vec![]);
        for image in sample.chunks(c_in * plane) {
            latents.extend_from_slice(&image[..c_lat * plane]);
            extra.extend_from_slice(&image[c_lat * plane..]);
        }
        let mut inputs =
            vec![(g.sample, &latents[..]), (g.timesteps, timesteps), (g.text, &channel_major[..])];
        if let Some(e) = g.extra {
            inputs.push((e, &extra[..]));
        }
        for (id, data) in inputs {
            let want: usize = g.graph.shape(id).iter().product();
            if data.len() != want {
                return Err(Error::Shape(format!(
                    "an input of {} values, {:?} needs {want}",
                    data.len(),
                    g.graph.shape(id)
                )));
            }
            ctx.queue.write_buffer(exe.buffer(id), 0, bytemuck::cast_slice(data));
        }
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        exe.record(&mut enc);
        ctx.queue.submit([enc.finish()]);
        ctx.read_buffer(exe.buffer(g.output), g.graph.shape(g.output).iter().product())
    }
}

/// Builds the forward graph for `shape`, taking (and on first use uploading) weights from `bank`.
pub fn build(
    ctx: &Context,
    cfg: &UNetConditionConfig,
    bank: &mut WeightBank,
    shape: CondShape,
) -> Result<UNetConditionGraph> {
    let CondShape { batch, height, width, text_tokens } = shape;
    if batch == 0 || text_tokens == 0 || height == 0 || width == 0 {
        return Err(Error::Invalid(format!("an empty UNet input: {shape:?}")));
    }
    // Latents that do not halve evenly down the levels: each up block's upsampler meets the
    // size of the skip it is joined to next, not 2x (diffusers' forward_upsample_size).
    let d = cfg.downscale();
    let to_skip_size = !height.is_multiple_of(d) || !width.is_multiple_of(d);
    let c0 = cfg.block_out_channels[0];
    let td = cfg.time_embed_dim();
    let mut g = Graph::new();
    let latents = cfg.in_channels.min(cfg.out_channels);
    let sample = g.input(&[batch, latents, height, width]);
    let extra =
        (cfg.in_channels > latents).then(|| g.input(&[batch, cfg.in_channels - latents, height, width]));
    let timesteps = g.input(&[batch]);
    let text_states = g.input(&[batch, cfg.cross_attention_dim, 1, text_tokens]);
    let text = Text { states: text_states, dim: cfg.cross_attention_dim };

    // Time: sinusoidal projection, linear_1 -> SiLU -> linear_2; resnets take SiLU of it.
    let emb_cfg = EmbeddingConfig {
        dim: c0,
        flip_sin_to_cos: cfg.flip_sin_to_cos,
        freq_shift: cfg.freq_shift,
        max_period: 10000.0,
    };
    let freqs = bank.constant(ctx, &format!("time_proj.freqs.{c0}"), &emb_cfg.frequencies()?);
    let t = g.timestep_embedding("time_proj", timesteps, emb_cfg, freqs)?;
    let l1 = bank.linear(ctx, "time_embedding.linear_1", td, c0)?;
    let t = g.linear("time_embedding.linear_1", t, l1, true)?;
    let l2 = bank.linear(ctx, "time_embedding.linear_2", td, td)?;
    let t = g.linear("time_embedding.linear_2", t, l2, false)?;
    let temb = Some(TimeEmbedding { silu: g.silu("time_embedding.act", t), dim: td });

    let mut b = Blocks { ctx, bank, g };
    let norm = Norm { groups: cfg.norm_num_groups, eps: cfg.norm_eps };
    let levels = cfg.block_out_channels.len();
    let input = match extra {
        Some(e) => b.g.concat("conv_in.concat", sample, e)?,
        None => sample,
    };
    let mut h = b.conv("conv_in", input, c0, 3)?;
    let mut skips = vec![h];
    for (i, block) in cfg.down_blocks.iter().enumerate() {
        let cout = cfg.block_out_channels[i];
        for j in 0..cfg.layers_per_block {
            h = b.resnet(&format!("down_blocks.{i}.resnets.{j}"), h, cout, norm, temb, 1.0)?;
            if *block == CondDownBlock::CrossAttnDown {
                h = b.transformer_2d(
                    &format!("down_blocks.{i}.attentions.{j}"),
                    h,
                    text,
                    cfg.heads[i],
                    norm.groups,
                )?;
            }
            skips.push(h);
        }
        if i + 1 < levels {
            h = b.downsample(&format!("down_blocks.{i}.downsamplers.0"), h, cfg.downsample_padding)?;
            skips.push(h);
        }
    }

    let c = cfg.block_out_channels[levels - 1];
    let scale = cfg.mid_block_scale_factor;
    h = b.resnet("mid_block.resnets.0", h, c, norm, temb, scale)?;
    h = b.transformer_2d("mid_block.attentions.0", h, text, cfg.heads[levels - 1], norm.groups)?;
    h = b.resnet("mid_block.resnets.1", h, c, norm, temb, scale)?;

    for (i, block) in cfg.up_blocks.iter().enumerate() {
        let level = levels - 1 - i;
        let cout = cfg.block_out_channels[level];
        for j in 0..cfg.layers_per_block + 1 {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Invalid("up blocks need more skips than down blocks made".into()))?;
            let p = format!("up_blocks.{i}.resnets.{j}");
            h = b.g.concat(&format!("{p}.concat"), h, skip)?;
            h = b.resnet(&p, h, cout, norm, temb, 1.0)?;
            if *block == CondUpBlock::CrossAttnUp {
                h = b.transformer_2d(
                    &format!("up_blocks.{i}.attentions.{j}"),
                    h,
                    text,
                    cfg.heads[level],
                    norm.groups,
                )?;
            }
        }
        if i + 1 < levels {
            let p = format!("up_blocks.{i}.upsamplers.0");
            h = match skips.last() {
                Some(&next) if to_skip_size => {
                    let s = b.g.shape(next);
                    b.upsample_to(&p, h, (s[2], s[3]))?
                }
                _ => b.upsample(&p, h)?,
            };
        }
    }

    h = b.group_norm("conv_norm_out", h, norm, true)?;
    let output = b.conv("conv_out", h, cfg.out_channels, 3)?;
    let mut graph = b.g;
    graph.mark_output(output);
    Ok(UNetConditionGraph { graph, sample, extra, timesteps, text: text_states, output })
}
