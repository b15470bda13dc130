//! Sinusoidal timestep embedding (shaders/embedding.wgsl), as diffusers' `get_timestep_embedding`.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::EMBEDDING,
    entry: "timestep_embedding",
    bindings: &[Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmbeddingConfig {
    pub dim: usize,
    pub flip_sin_to_cos: bool,
    /// diffusers' `downscale_freq_shift` (UNet2DModel's `freq_shift`).
    pub freq_shift: f32,
    pub max_period: f32,
}

impl EmbeddingConfig {
    pub fn half(&self) -> usize {
        self.dim / 2
    }

    /// The frequencies exp(-ln(max_period) * k / (half - shift)) rounded to f32 at each step as
    /// PyTorch computes them (f32 tensor ops; exp correctly rounded from f64).
    pub fn frequencies(&self) -> Result<Vec<f32>> {
        let half = self.half();
        let denom = half as f32 - self.freq_shift;
        if half == 0 || denom == 0.0 {
            bail_shape!(
                "timestep embedding: dim {} with freq_shift {} divides by zero",
                self.dim,
                self.freq_shift
            );
        }
        let neg_log = -(self.max_period as f64).ln() as f32;
        Ok((0..half).map(|k| (((neg_log * k as f32) / denom) as f64).exp() as f32).collect())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    dim: u32,
    half_dim: u32,
    flip: u32,
}

/// out [B, dim] from timesteps [B] (f32) and `freqs` = `cfg.frequencies()` uploaded once.
pub fn timestep_embedding(
    ctx: &Context,
    cfg: &EmbeddingConfig,
    batch: usize,
    timesteps: &wgpu::Buffer,
    freqs: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    if batch == 0 || cfg.dim < 2 {
        bail_shape!("timestep embedding: batch {batch}, dim {}", cfg.dim);
    }
    check_len("timestep embedding", "timesteps", timesteps, batch)?;
    check_len("timestep embedding", "frequencies", freqs, cfg.half())?;
    check_len("timestep embedding", "output", out, batch * cfg.dim)?;
    let params = ctx.uniform(&Params {
        batch: batch as u32,
        dim: cfg.dim as u32,
        half_dim: cfg.half() as u32,
        flip: cfg.flip_sin_to_cos as u32,
    });
    ctx.dispatch(
        &SPEC,
        &[],
        &[timesteps, freqs, out, &params],
        grid_1d(ctx, batch * cfg.dim, 256),
        Cost { flops: 20 * (batch * cfg.dim) as u64, bytes: 4 * (batch * (cfg.dim + 1) + cfg.half()) as u64 },
    )
}

/// Reference: the same f32 frequencies and f32 product t * f, then sin / cos in f64.
pub fn reference(cfg: &EmbeddingConfig, timesteps: &[f32]) -> Vec<f32> {
    let freqs = cfg.frequencies().expect("reference: valid config"); // ok: test-only helper
    let half = cfg.half();
    let mut out = vec![0.0f32; timesteps.len() * cfg.dim];
    for (b, &t) in timesteps.iter().enumerate() {
        for (k, &f) in freqs.iter().enumerate() {
            let arg = (t * f) as f64;
            let (first, second) =
                if cfg.flip_sin_to_cos { (arg.cos(), arg.sin()) } else { (arg.sin(), arg.cos()) };
            out[b * cfg.dim + k] = first as f32;
            out[b * cfg.dim + half + k] = second as f32;
        }
    }
    out
}
