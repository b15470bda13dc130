//! LayerNorm over the channels of each pixel of an NCHW tensor (shaders/layer_norm.wgsl): what
//! nn.LayerNorm(C) does to the [N, HW, C] tokens of CLIP's text model and diffusers' transformer
//! blocks, in the engine's channel-major layout. Beside its reference.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::LAYER_NORM,
    entry: "layer_norm",
    bindings: &[Binding::Read, Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};
const WG: usize = 64;

/// [n, c, hw]: `n * hw` tokens of `c` channels each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub eps: f32,
}

impl LayerNormShape {
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tokens: u32,
    c: u32,
    hw: u32,
    eps: f32,
}

/// y = (x - mean) / sqrt(var + eps) * gamma + beta over each token's `c` channels.
pub fn layer_norm(
    ctx: &Context,
    s: &LayerNormShape,
    x: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Dispatch> {
    if s.is_empty() {
        bail_shape!("layer norm: empty tensor {s:?}");
    }
    check_len("layer norm", "x", x, s.len())?;
    check_len("layer norm", "y", y, s.len())?;
    check_len("layer norm", "gamma", gamma, s.c)?;
    check_len("layer norm", "beta", beta, s.c)?;
    let tokens = s.n * s.hw;
    let params = Params { tokens: tokens as u32, c: s.c as u32, hw: s.hw as u32, eps: s.eps };
    let uniform = ctx.uniform(&params);
    ctx.dispatch(
        &SPEC,
        &[],
        &[x, gamma, beta, y, &uniform],
        grid_1d(ctx, tokens, WG),
        Cost { flops: 8 * s.len() as u64, bytes: 4 * (3 * s.len() + 2 * s.c) as u64 },
    )
}

/// The reference, in f64: each token's mean and biased variance over its channels.
pub fn reference(s: &LayerNormShape, x: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for n in 0..s.n {
        for p in 0..s.hw {
            let at = |k: usize| n * s.c * s.hw + k * s.hw + p;
            let mean = (0..s.c).map(|k| x[at(k)] as f64).sum::<f64>() / s.c as f64;
            let var = (0..s.c).map(|k| (x[at(k)] as f64 - mean).powi(2)).sum::<f64>() / s.c as f64;
            let rstd = 1.0 / (var + s.eps as f64).sqrt();
            for k in 0..s.c {
                y[at(k)] = ((x[at(k)] as f64 - mean) * rstd * gamma[k] as f64 + beta[k] as f64) as f32;
            }
        }
    }
    y
}
