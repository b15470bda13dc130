//! UNet2DModel as diffusers computes it, built as a graph for a given batch size.
//!
//! The module names below are diffusers' (`down_blocks.1.resnets.0.conv1`), so a shape error or a
//! missing tensor names the layer a diffusers user knows.

use super::config::{ClassEmbedding, DownBlock, UNetConfig, UpBlock};
use super::weights::WeightBank;
use crate::gpu::Context;
use crate::graph::{Graph, TensorId, WeightId};
use crate::kernels::conv2d::Padding;
use crate::kernels::embedding::EmbeddingConfig;
use crate::{Error, Result};

/// The graph of one UNet forward: inputs (sample [B, C, H, W], timesteps [B] as f32, and for a
/// class-conditional model class labels [B] as f32), output eps.
pub struct UNetGraph {
    pub graph: Graph,
    pub sample: TensorId,
    pub timesteps: TensorId,
    pub class_labels: Option<TensorId>,
    pub output: TensorId,
}

/// What every resnet and attention block of one forward shares.
struct Builder<'a> {
    cfg: &'a UNetConfig,
    ctx: &'a Context,
    bank: &'a mut WeightBank,
    g: Graph,
    /// SiLU(time embedding) [B, time_embed_dim], the input of every resnet's time_emb_proj.
    temb: TensorId,
}

impl Builder<'_> {
    fn channels(&self, t: TensorId) -> usize {
        self.g.shape(t)[1]
    }

    /// ResnetBlock2D: conv2(SiLU(GN2(conv1(SiLU(GN1(x))) + proj(SiLU(temb))))) + shortcut(x), / scale.
    fn resnet(&mut self, p: &str, x: TensorId, cout: usize, output_scale: f32) -> Result<TensorId> {
        let (ctx, cfg) = (self.ctx, self.cfg);
        let cin = self.channels(x);
        let td = cfg.time_embed_dim();
        let groups = cfg.norm_num_groups;
        let n1 = self.bank.norm(ctx, &format!("{p}.norm1"), cin)?;
        let h = self.g.group_norm(&format!("{p}.norm1"), x, n1, groups, cfg.norm_eps, true)?;
        let proj = self.bank.linear(ctx, &format!("{p}.time_emb_proj"), cout, td)?;
        let temb = self.g.linear(&format!("{p}.time_emb_proj"), self.temb, proj, false)?;
        let c1 = self.bank.conv(ctx, &format!("{p}.conv1"), cout, cin, 3)?;
        let h = self.g.conv2d(&format!("{p}.conv1"), h, c1, 1, Padding::same(1), Some(temb), None, 1.0)?;
        let n2 = self.bank.norm(ctx, &format!("{p}.norm2"), cout)?;
        let h = self.g.group_norm(&format!("{p}.norm2"), h, n2, groups, cfg.norm_eps, true)?;
        let shortcut = if cin != cout {
            let sc = self.bank.conv(ctx, &format!("{p}.conv_shortcut"), cout, cin, 1)?;
            self.g.conv2d(&format!("{p}.conv_shortcut"), x, sc, 1, Padding::default(), None, None, 1.0)?
        } else {
            x
        };
        let c2 = self.bank.conv(ctx, &format!("{p}.conv2"), cout, cout, 3)?;
        self.g.conv2d(
            &format!("{p}.conv2"),
            h,
            c2,
            1,
            Padding::same(1),
            None,
            Some(shortcut),
            1.0 / output_scale,
        )
    }

    /// Attention with a GroupNorm in front and the residual added: (to_out(attn(GN(x))) + x) / rescale.
    fn attention(&mut self, p: &str, x: TensorId, groups: usize, rescale: f32) -> Result<TensorId> {
        let (ctx, cfg) = (self.ctx, self.cfg);
        let c = self.channels(x);
        let (heads, head_dim) = cfg.heads(c);
        if heads * head_dim != c {
            return Err(Error::Invalid(format!(
                "{p}: attention_head_dim {head_dim} does not divide {c} channels"
            )));
        }
        let norm = self.bank.norm(ctx, &format!("{p}.group_norm"), c)?;
        let h = self.g.group_norm(&format!("{p}.group_norm"), x, norm, groups, cfg.norm_eps, false)?;
        let mut qkv = [0; 3];
        for (slot, name) in qkv.iter_mut().zip(["to_q", "to_k", "to_v"]) {
            let w = self.bank.linear_as_conv(ctx, &format!("{p}.{name}"), c, c)?;
            *slot = self.g.conv2d(&format!("{p}.{name}"), h, w, 1, Padding::default(), None, None, 1.0)?;
        }
        let a = self.g.attention(&format!("{p}.attention"), qkv[0], qkv[1], qkv[2], heads)?;
        let out = self.bank.linear_as_conv(ctx, &format!("{p}.to_out.0"), c, c)?;
        self.g.conv2d(&format!("{p}.to_out.0"), a, out, 1, Padding::default(), None, Some(x), 1.0 / rescale)
    }
}

/// Builds the forward graph for `batch` images, taking (and on first use uploading) weights from `bank`.
pub fn build(ctx: &Context, cfg: &UNetConfig, bank: &mut WeightBank, batch: usize) -> Result<UNetGraph> {
    if batch == 0 {
        return Err(Error::Invalid("batch must be at least 1".into()));
    }
    let c0 = cfg.block_out_channels[0];
    let td = cfg.time_embed_dim();
    let s = cfg.sample_size;
    let mut g = Graph::new();
    let sample = g.input(&[batch, cfg.in_channels, s, s]);
    let timesteps = g.input(&[batch]);

    // Time embedding: sinusoidal projection, then linear_1 -> SiLU -> linear_2; resnets use SiLU of it.
    let emb_cfg = EmbeddingConfig {
        dim: c0,
        flip_sin_to_cos: cfg.flip_sin_to_cos,
        freq_shift: cfg.freq_shift,
        max_period: 10000.0,
    };
    let freqs: WeightId = bank.constant(ctx, &format!("time_proj.freqs.{c0}"), &emb_cfg.frequencies()?);
    let t = g.timestep_embedding("time_proj", timesteps, emb_cfg, freqs)?;
    let l1 = bank.linear(ctx, "time_embedding.linear_1", td, c0)?;
    let t = g.linear("time_embedding.linear_1", t, l1, true)?;
    let l2 = bank.linear(ctx, "time_embedding.linear_2", td, td)?;
    let mut t = g.linear("time_embedding.linear_2", t, l2, false)?;
    // The class embedding is added after the time MLP; every resnet's SiLU acts on the sum.
    let class_labels = match cfg.class_embedding {
        None => None,
        Some(kind) => {
            let labels = g.input(&[batch]);
            let c = match kind {
                ClassEmbedding::Table { rows } => {
                    let table = bank.table(ctx, "class_embedding.weight", rows, td)?;
                    g.embedding_lookup("class_embedding", labels, table, rows, td)?
                }
                ClassEmbedding::Timestep => {
                    // The label through the same sinusoidal projection, then its own MLP.
                    let p = g.timestep_embedding("class_embedding.time_proj", labels, emb_cfg, freqs)?;
                    let l1 = bank.linear(ctx, "class_embedding.linear_1", td, c0)?;
                    let c = g.linear("class_embedding.linear_1", p, l1, true)?;
                    let l2 = bank.linear(ctx, "class_embedding.linear_2", td, td)?;
                    g.linear("class_embedding.linear_2", c, l2, false)?
                }
            };
            t = g.add("class_embedding.add", t, c)?;
            Some(labels)
        }
    };
    let temb = g.silu("time_embedding.act", t);
    let mut b = Builder { cfg, ctx, bank, g, temb };

    let mut x = sample;
    if cfg.center_input_sample {
        x = b.g.affine("center_input_sample", x, 2.0, -1.0);
    }
    let conv_in = b.bank.conv(ctx, "conv_in", c0, cfg.in_channels, 3)?;
    let mut h = b.g.conv2d("conv_in", x, conv_in, 1, Padding::same(1), None, None, 1.0)?;
    let mut skips = vec![h];

    let levels = cfg.block_out_channels.len();
    for (i, block) in cfg.down_blocks.iter().enumerate() {
        let cout = cfg.block_out_channels[i];
        for j in 0..cfg.layers_per_block {
            h = b.resnet(&format!("down_blocks.{i}.resnets.{j}"), h, cout, 1.0)?;
            if *block == DownBlock::AttnDown {
                h = b.attention(&format!("down_blocks.{i}.attentions.{j}"), h, cfg.norm_num_groups, 1.0)?;
            }
            skips.push(h);
        }
        if i + 1 < levels {
            let p = format!("down_blocks.{i}.downsamplers.0.conv");
            let w = b.bank.conv(ctx, &p, cout, cout, 3)?;
            // padding 0 in diffusers pads right and bottom by one, then convolves without padding.
            let pad = if cfg.downsample_padding == 0 { Padding::right_bottom(1) } else { Padding::same(1) };
            h = b.g.conv2d(&p, h, w, 2, pad, None, None, 1.0)?;
            skips.push(h);
        }
    }

    if cfg.mid_block {
        let c = cfg.block_out_channels[levels - 1];
        let scale = cfg.mid_block_scale_factor;
        h = b.resnet("mid_block.resnets.0", h, c, scale)?;
        if cfg.add_attention {
            let groups = cfg.attn_norm_num_groups.unwrap_or(cfg.norm_num_groups);
            h = b.attention("mid_block.attentions.0", h, groups, scale)?;
        }
        h = b.resnet("mid_block.resnets.1", h, c, scale)?;
    }

    for (i, block) in cfg.up_blocks.iter().enumerate() {
        let cout = cfg.block_out_channels[levels - 1 - i];
        for j in 0..cfg.layers_per_block + 1 {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Invalid("up blocks need more skips than down blocks made".into()))?;
            let p = format!("up_blocks.{i}.resnets.{j}");
            h = b.g.concat(&format!("{p}.concat"), h, skip)?;
            h = b.resnet(&p, h, cout, 1.0)?;
            if *block == UpBlock::AttnUp {
                h = b.attention(&format!("up_blocks.{i}.attentions.{j}"), h, cfg.norm_num_groups, 1.0)?;
            }
        }
        if i + 1 < levels {
            let p = format!("up_blocks.{i}.upsamplers.0.conv");
            h = b.g.upsample2x(&format!("up_blocks.{i}.upsamplers.0"), h)?;
            let w = b.bank.conv(ctx, &p, cout, cout, 3)?;
            h = b.g.conv2d(&p, h, w, 1, Padding::same(1), None, None, 1.0)?;
        }
    }

    let norm = b.bank.norm(ctx, "conv_norm_out", c0)?;
    h = b.g.group_norm("conv_norm_out", h, norm, cfg.norm_num_groups, cfg.norm_eps, true)?;
    let conv_out = b.bank.conv(ctx, "conv_out", cfg.out_channels, c0, 3)?;
    let output = b.g.conv2d("conv_out", h, conv_out, 1, Padding::same(1), None, None, 1.0)?;
    let mut graph = b.g;
    graph.mark_output(output);
    Ok(UNetGraph { graph, sample, timesteps, class_labels, output })
}
