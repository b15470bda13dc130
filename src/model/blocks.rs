//! The blocks diffusers' UNets and autoencoders share, written once on the graph: ResnetBlock2D
//! (with or without a time embedding, `models/resnet.py`), the attention block with its own
//! GroupNorm (`attention_processor.py`'s Attention with a residual), Downsample2D and
//! Upsample2D. Layer names are diffusers' module paths, so an error names the layer a diffusers
//! user knows.

use super::weights::WeightBank;
use crate::gpu::Context;
use crate::graph::{Graph, TensorId};
use crate::kernels::conv2d::Padding;
use crate::{Error, Result};

/// A GroupNorm's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Norm {
    pub groups: usize,
    pub eps: f32,
}

/// A time embedding every resnet adds after its first conv: SiLU(emb) [B, dim].
#[derive(Clone, Copy, Debug)]
pub struct TimeEmbedding {
    pub silu: TensorId,
    pub dim: usize,
}

/// A graph being built, with the weights it takes.
pub struct Blocks<'a> {
    pub ctx: &'a Context,
    pub bank: &'a mut WeightBank,
    pub g: Graph,
}

impl Blocks<'_> {
    pub fn channels(&self, t: TensorId) -> usize {
        self.g.shape(t)[1]
    }

    /// A conv `{p}` of `cout` channels, `k` x `k`, stride 1, "same" padding.
    pub fn conv(&mut self, p: &str, x: TensorId, cout: usize, k: usize) -> Result<TensorId> {
        let cin = self.channels(x);
        let w = self.bank.conv(self.ctx, p, cout, cin, k)?;
        self.g.conv2d(p, x, w, 1, Padding::same(k / 2), None, None, 1.0)
    }

    /// ResnetBlock2D: h = conv1(SiLU(GN1(x))) (+ time_emb_proj(SiLU(temb))), then
    /// conv2(SiLU(GN2(h))) + shortcut(x) (a 1x1 conv_shortcut where the channels change), all
    /// divided by `output_scale`.
    pub fn resnet(
        &mut self,
        p: &str,
        x: TensorId,
        cout: usize,
        norm: Norm,
        temb: Option<TimeEmbedding>,
        output_scale: f32,
    ) -> Result<TensorId> {
        let ctx = self.ctx;
        let cin = self.channels(x);
        let n1 = self.bank.norm(ctx, &format!("{p}.norm1"), cin)?;
        let h = self.g.group_norm(&format!("{p}.norm1"), x, n1, norm.groups, norm.eps, true)?;
        let add = match temb {
            Some(t) => {
                let proj = self.bank.linear(ctx, &format!("{p}.time_emb_proj"), cout, t.dim)?;
                Some(self.g.linear(&format!("{p}.time_emb_proj"), t.silu, proj, false)?)
            }
            None => None,
        };
        let c1 = self.bank.conv(ctx, &format!("{p}.conv1"), cout, cin, 3)?;
        let h = self.g.conv2d(&format!("{p}.conv1"), h, c1, 1, Padding::same(1), add, None, 1.0)?;
        let n2 = self.bank.norm(ctx, &format!("{p}.norm2"), cout)?;
        let h = self.g.group_norm(&format!("{p}.norm2"), h, n2, norm.groups, norm.eps, true)?;
        let shortcut = if cin != cout {
            let sc = self.bank.conv(ctx, &format!("{p}.conv_shortcut"), cout, cin, 1)?;
            self.g.conv2d(&format!("{p}.conv_shortcut"), x, sc, 1, Padding::default(), None, None, 1.0)?
        } else {
            x
        };
        let c2 = self.bank.conv(ctx, &format!("{p}.conv2"), cout, cout, 3)?;
        let scale = 1.0 / output_scale;
        self.g.conv2d(&format!("{p}.conv2"), h, c2, 1, Padding::same(1), None, Some(shortcut), scale)
    }

    /// The attention block: (to_out(attention(GN(x))) + x) / rescale, q, k and v Linear
    /// projections of the normed tokens over `heads` heads.
    pub fn attention(
        &mut self,
        p: &str,
        x: TensorId,
        heads: usize,
        norm: Norm,
        rescale: f32,
    ) -> Result<TensorId> {
        let ctx = self.ctx;
        let c = self.channels(x);
        if heads == 0 || !c.is_multiple_of(heads) {
            return Err(Error::Invalid(format!("{p}: {heads} attention heads do not divide {c} channels")));
        }
        let gn = self.bank.norm(ctx, &format!("{p}.group_norm"), c)?;
        let h = self.g.group_norm(&format!("{p}.group_norm"), x, gn, norm.groups, norm.eps, false)?;
        let mut qkv = [0; 3];
        for (slot, name) in qkv.iter_mut().zip(["to_q", "to_k", "to_v"]) {
            let w = self.bank.linear_as_conv(ctx, &format!("{p}.{name}"), c, c)?;
            *slot = self.g.conv2d(&format!("{p}.{name}"), h, w, 1, Padding::default(), None, None, 1.0)?;
        }
        let a = self.g.attention(&format!("{p}.attention"), qkv[0], qkv[1], qkv[2], heads)?;
        let out = self.bank.linear_as_conv(ctx, &format!("{p}.to_out.0"), c, c)?;
        self.g.conv2d(&format!("{p}.to_out.0"), a, out, 1, Padding::default(), None, Some(x), 1.0 / rescale)
    }

    /// Downsample2D `{p}` (its conv is `{p}.conv`): a 3x3 conv of stride 2; padding 1 pads every
    /// side, padding 0 pads right and bottom by one first (diffusers' `F.pad(x, (0, 1, 0, 1))`).
    pub fn downsample(&mut self, p: &str, x: TensorId, padding: usize) -> Result<TensorId> {
        let c = self.channels(x);
        let name = format!("{p}.conv");
        let w = self.bank.conv(self.ctx, &name, c, c, 3)?;
        let pad = if padding == 0 { Padding::right_bottom(1) } else { Padding::same(1) };
        self.g.conv2d(&name, x, w, 2, pad, None, None, 1.0)
    }

    /// Upsample2D `{p}`: nearest 2x, then its 3x3 conv `{p}.conv`.
    pub fn upsample(&mut self, p: &str, x: TensorId) -> Result<TensorId> {
        let c = self.channels(x);
        let h = self.g.upsample2x(p, x)?;
        self.conv(&format!("{p}.conv"), h, c, 3)
    }

    /// Upsample2D `{p}` given diffusers' `upsample_size`: nearest to `to`, then its conv.
    pub fn upsample_to(&mut self, p: &str, x: TensorId, to: (usize, usize)) -> Result<TensorId> {
        let c = self.channels(x);
        let h = self.g.upsample_to(p, x, to)?;
        self.conv(&format!("{p}.conv"), h, c, 3)
    }

    /// GroupNorm `{p}`, with SiLU fused when `silu`.
    pub fn group_norm(&mut self, p: &str, x: TensorId, norm: Norm, silu: bool) -> Result<TensorId> {
        let w = self.bank.norm(self.ctx, p, self.channels(x))?;
        self.g.group_norm(p, x, w, norm.groups, norm.eps, silu)
    }
}
