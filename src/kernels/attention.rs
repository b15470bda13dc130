//! Fused multi-head self-attention with an online softmax (shaders/attention.wgsl) and its reference.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, groups};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::ATTENTION,
    entry: "attention",
    bindings: &[Binding::Read, Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

/// The largest head dimension the kernel keeps in registers (4 * MAX_D4 in the shader).
pub const MAX_HEAD_DIM: usize = 512;
const WG: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Tokens (H * W of the feature map).
    pub tokens: usize,
    /// Usually 1 / sqrt(head_dim).
    pub scale: f32,
}

impl AttentionShape {
    pub fn len(&self) -> usize {
        self.batch * self.heads * self.head_dim * self.tokens
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn flops(&self) -> u64 {
        // q k^T and p v, 2 flops per multiply-add each.
        4 * (self.batch * self.heads * self.tokens * self.tokens * self.head_dim) as u64
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    bh: u32,
    d: u32,
    t: u32,
    scale: f32,
}

/// out = softmax(q k^T * scale) v per (batch, head); all four are [B, heads * D, T].
pub fn attention(
    ctx: &Context,
    s: &AttentionShape,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    if s.is_empty() {
        bail_shape!("attention: empty shape {s:?}");
    }
    if s.head_dim > MAX_HEAD_DIM {
        bail_shape!("attention: head dim {} is over the supported {MAX_HEAD_DIM}", s.head_dim);
    }
    for (what, buf) in [("q", q), ("k", k), ("v", v), ("output", out)] {
        check_len("attention", what, buf, s.len())?;
    }
    let params = ctx.uniform(&Params {
        bh: (s.batch * s.heads) as u32,
        d: s.head_dim as u32,
        t: s.tokens as u32,
        scale: s.scale,
    });
    ctx.dispatch(
        &SPEC,
        &[("WG", WG as f64)],
        &[q, k, v, out, &params],
        [groups(s.tokens, WG), (s.batch * s.heads) as u32, 1],
        Cost { flops: s.flops(), bytes: 16 * s.len() as u64 },
    )
}

/// Plain softmax attention with the full score matrix, in f64.
pub fn reference(s: &AttentionShape, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
    let (d, t) = (s.head_dim, s.tokens);
    let mut out = vec![0.0f32; s.len()];
    let mut scores = vec![0.0f64; t];
    for bh in 0..s.batch * s.heads {
        let base = bh * d * t;
        for i in 0..t {
            for (j, sc) in scores.iter_mut().enumerate() {
                let dot: f64 = (0..d).map(|c| q[base + c * t + i] as f64 * k[base + c * t + j] as f64).sum();
                *sc = dot * s.scale as f64;
            }
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|&x| (x - max).exp()).collect();
            let sum: f64 = weights.iter().sum();
            for c in 0..d {
                let o: f64 = (0..t).map(|j| weights[j] * v[base + c * t + j] as f64).sum();
                out[base + c * t + i] = (o / sum) as f32;
            }
        }
    }
    out
}
