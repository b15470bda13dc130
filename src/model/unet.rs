//! UNet2DModel as diffusers computes it, built as a graph for a given batch size.
//!
//! The module names below are diffusers' (`down_blocks.1.resnets.0.conv1`), so a shape error or a
//! missing tensor names the layer a diffusers user knows.

use super::blocks::{Blocks, Norm, TimeEmbedding};
use super::config::{ClassEmbedding, DownBlock, UNetConfig, UpBlock};
use super::weights::WeightBank;
use crate::gpu::Context;
use crate::graph::{Graph, TensorId, WeightId};
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
    let temb = Some(TimeEmbedding { silu: g.silu("time_embedding.act", t), dim: td });
    let mut b = Blocks { ctx, bank, g };
    let norm = Norm { groups: cfg.norm_num_groups, eps: cfg.norm_eps };
    let heads = |p: &str, c: usize| -> Result<usize> {
        let (heads, head_dim) = cfg.heads(c);
        if heads * head_dim != c {
            return Err(Error::Invalid(format!(
                "{p}: attention_head_dim {head_dim} does not divide {c} channels"
            )));
        }
        Ok(heads)
    };

    let mut x = sample;
    if cfg.center_input_sample {
        x = b.g.affine("center_input_sample", x, 2.0, -1.0);
    }
    let mut h = b.conv("conv_in", x, c0, 3)?;
    let mut skips = vec![h];

    let levels = cfg.block_out_channels.len();
    for (i, block) in cfg.down_blocks.iter().enumerate() {
        let cout = cfg.block_out_channels[i];
        for j in 0..cfg.layers_per_block {
            h = b.resnet(&format!("down_blocks.{i}.resnets.{j}"), h, cout, norm, temb, 1.0)?;
            if *block == DownBlock::AttnDown {
                let p = format!("down_blocks.{i}.attentions.{j}");
                h = b.attention(&p, h, heads(&p, cout)?, norm, 1.0)?;
            }
            skips.push(h);
        }
        if i + 1 < levels {
            h = b.downsample(&format!("down_blocks.{i}.downsamplers.0"), h, cfg.downsample_padding)?;
            skips.push(h);
        }
    }

    if cfg.mid_block {
        let c = cfg.block_out_channels[levels - 1];
        let scale = cfg.mid_block_scale_factor;
        h = b.resnet("mid_block.resnets.0", h, c, norm, temb, scale)?;
        if cfg.add_attention {
            let groups = cfg.attn_norm_num_groups.unwrap_or(cfg.norm_num_groups);
            let attn_norm = Norm { groups, ..norm };
            let p = "mid_block.attentions.0";
            h = b.attention(p, h, heads(p, c)?, attn_norm, scale)?;
        }
        h = b.resnet("mid_block.resnets.1", h, c, norm, temb, scale)?;
    }

    for (i, block) in cfg.up_blocks.iter().enumerate() {
        let cout = cfg.block_out_channels[levels - 1 - i];
        for j in 0..cfg.layers_per_block + 1 {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Invalid("up blocks need more skips than down blocks made".into()))?;
            let p = format!("up_blocks.{i}.resnets.{j}");
            h = b.g.concat(&format!("{p}.concat"), h, skip)?;
            h = b.resnet(&p, h, cout, norm, temb, 1.0)?;
            if *block == UpBlock::AttnUp {
                let p = format!("up_blocks.{i}.attentions.{j}");
                h = b.attention(&p, h, heads(&p, cout)?, norm, 1.0)?;
            }
        }
        if i + 1 < levels {
            h = b.upsample(&format!("up_blocks.{i}.upsamplers.0"), h)?;
        }
    }

    h = b.group_norm("conv_norm_out", h, norm, true)?;
    let output = b.conv("conv_out", h, cfg.out_channels, 3)?;
    let mut graph = b.g;
    graph.mark_output(output);
    Ok(UNetGraph { graph, sample, timesteps, class_labels, output })
}
