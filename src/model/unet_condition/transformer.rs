//! diffusers' Transformer2DModel as Stable Diffusion's UNets use it (`models/transformers/
//! transformer_2d.py`, `models/attention.py`): GroupNorm, proj_in, one BasicTransformerBlock
//! (LayerNorm + self-attention, LayerNorm + cross-attention over the text, LayerNorm + GEGLU
//! feed-forward, each added back), proj_out, plus the input. Tokens stay the feature map's
//! pixels in the engine's NCHW layout, so proj_in / proj_out are 1x1 convs whether the folder
//! stores them as convs (SD 1.x) or Linears (SD 2.x): the same product.

use crate::graph::TensorId;
use crate::kernels::conv2d::Padding;
use crate::kernels::elementwise::Gelu;
use crate::model::blocks::Blocks;
use crate::Result;

/// Transformer2DModel's GroupNorm epsilon, fixed in diffusers whatever the UNet's norm_eps.
const GROUP_NORM_EPS: f32 = 1e-6;
/// BasicTransformerBlock's LayerNorms.
const LAYER_NORM_EPS: f32 = 1e-5;

/// The text the cross-attention reads: [N, cross_attention_dim, 1, T].
#[derive(Clone, Copy, Debug)]
pub struct Text {
    pub states: TensorId,
    pub dim: usize,
}

impl Blocks<'_> {
    /// A 1x1 conv from a Linear `{p}` (with or without its bias), plus `residual`.
    fn project(
        &mut self,
        p: &str,
        x: TensorId,
        fout: usize,
        bias: bool,
        residual: Option<TensorId>,
    ) -> Result<TensorId> {
        let fin = self.channels(x);
        let w = if bias {
            self.bank.linear_as_conv(self.ctx, p, fout, fin)?
        } else {
            self.bank.linear_as_conv_no_bias(self.ctx, p, fout, fin)?
        };
        self.g.conv2d(p, x, w, 1, Padding::default(), None, residual, 1.0)
    }

    /// diffusers' Attention `{p}` of `h`'s tokens over `kv`'s (itself for self-attention):
    /// to_q, to_k, to_v without biases, to_out.0 with one, plus `residual`.
    fn transformer_attention(
        &mut self,
        p: &str,
        h: TensorId,
        kv: TensorId,
        heads: usize,
        residual: TensorId,
    ) -> Result<TensorId> {
        let c = self.channels(h);
        let q = self.project(&format!("{p}.to_q"), h, c, false, None)?;
        let k = self.project(&format!("{p}.to_k"), kv, c, false, None)?;
        let v = self.project(&format!("{p}.to_v"), kv, c, false, None)?;
        let a = self.g.attention_over(p, q, k, v, heads, false)?;
        self.project(&format!("{p}.to_out.0"), a, c, true, Some(residual))
    }

    fn layer_norm(&mut self, p: &str, x: TensorId) -> Result<TensorId> {
        let w = self.bank.norm(self.ctx, p, self.channels(x))?;
        self.g.layer_norm(p, x, w, LAYER_NORM_EPS)
    }

    /// Transformer2DModel `{p}` over `x` [N, C, H, W] with `heads` heads, cross-attending to
    /// `text`; `groups` is the UNet's norm_num_groups.
    pub fn transformer_2d(
        &mut self,
        p: &str,
        x: TensorId,
        text: Text,
        heads: usize,
        groups: usize,
    ) -> Result<TensorId> {
        let c = self.channels(x);
        let gn = self.bank.norm(self.ctx, &format!("{p}.norm"), c)?;
        let h = self.g.group_norm(&format!("{p}.norm"), x, gn, groups, GROUP_NORM_EPS, false)?;
        let mut h = self.project(&format!("{p}.proj_in"), h, c, true, None)?;
        let b = format!("{p}.transformer_blocks.0");
        let n = self.layer_norm(&format!("{b}.norm1"), h)?;
        h = self.transformer_attention(&format!("{b}.attn1"), n, n, heads, h)?;
        let n = self.layer_norm(&format!("{b}.norm2"), h)?;
        // The text's keys and values: to_k / to_v take its width to the block's.
        h = self.transformer_attention(&format!("{b}.attn2"), n, text.states, heads, h)?;
        let n = self.layer_norm(&format!("{b}.norm3"), h)?;
        let ff = self.project(&format!("{b}.ff.net.0.proj"), n, 8 * c, true, None)?;
        let ff = self.g.geglu(&format!("{b}.ff.net.0"), ff, Gelu::Erf)?;
        h = self.project(&format!("{b}.ff.net.2"), ff, c, true, Some(h))?;
        self.project(&format!("{p}.proj_out"), h, c, true, Some(x))
    }
}
