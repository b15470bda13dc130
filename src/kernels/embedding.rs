//! Sinusoidal timestep embedding (shaders/embedding.wgsl), as diffusers' `get_timestep_embedding`,
//! and the class embedding lookup (nn.Embedding) with its backward.

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

static LOOKUP: KernelSpec = KernelSpec {
    shader: &crate::shaders::EMBEDDING,
    entry: "lookup",
    bindings: &[Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};
static LOOKUP_BACKWARD: KernelSpec = KernelSpec {
    shader: &crate::shaders::EMBEDDING,
    entry: "lookup_backward",
    bindings: &[Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LookupParams {
    batch: u32,
    dim: u32,
    rows: u32,
    _pad: u32,
}

/// The shape of a class embedding lookup: `batch` labels into a table [rows, dim].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupShape {
    pub batch: usize,
    pub rows: usize,
    pub dim: usize,
}

impl LookupShape {
    fn check(&self, op: &str) -> Result<()> {
        if self.batch == 0 || self.rows == 0 || self.dim == 0 {
            bail_shape!("{op}: {self:?}");
        }
        Ok(())
    }

    fn params(&self, ctx: &Context) -> wgpu::Buffer {
        ctx.uniform(&LookupParams {
            batch: self.batch as u32,
            dim: self.dim as u32,
            rows: self.rows as u32,
            _pad: 0,
        })
    }
}

/// out [batch, dim] = table[labels[b]] (nn.Embedding), labels [batch] as f32 class ids.
pub fn lookup(
    ctx: &Context,
    s: &LookupShape,
    labels: &wgpu::Buffer,
    table: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    s.check("embedding lookup")?;
    check_len("embedding lookup", "labels", labels, s.batch)?;
    check_len("embedding lookup", "table", table, s.rows * s.dim)?;
    check_len("embedding lookup", "output", out, s.batch * s.dim)?;
    let len = s.batch * s.dim;
    ctx.dispatch(
        &LOOKUP,
        &[],
        &[labels, table, out, &s.params(ctx)],
        grid_1d(ctx, len, 256),
        Cost { flops: 0, bytes: 8 * len as u64 + 4 * s.batch as u64 },
    )
}

/// d_table [rows, dim] = for each row, the sum of dy [batch, dim] over the images with that label
/// (in batch order: deterministic).
pub fn lookup_backward(
    ctx: &Context,
    s: &LookupShape,
    labels: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    d_table: &wgpu::Buffer,
) -> Result<Dispatch> {
    s.check("embedding lookup backward")?;
    check_len("embedding lookup backward", "labels", labels, s.batch)?;
    check_len("embedding lookup backward", "dy", dy, s.batch * s.dim)?;
    check_len("embedding lookup backward", "d table", d_table, s.rows * s.dim)?;
    let len = s.rows * s.dim;
    ctx.dispatch(
        &LOOKUP_BACKWARD,
        &[],
        &[labels, dy, d_table, &s.params(ctx)],
        grid_1d(ctx, len, 256),
        Cost { flops: (len * s.batch) as u64, bytes: 4 * (len * (s.batch + 1)) as u64 },
    )
}

/// The table row a label picks (as the kernel clamps it).
fn row_of(label: f32, rows: usize) -> usize {
    (label.max(0.0) as usize).min(rows - 1)
}

/// Reference of `lookup`.
pub fn reference_lookup(s: &LookupShape, labels: &[f32], table: &[f32]) -> Vec<f32> {
    labels
        .iter()
        .flat_map(|&l| {
            let r = row_of(l, s.rows);
            table[r * s.dim..(r + 1) * s.dim].iter().copied()
        })
        .collect()
}

/// Reference of `lookup_backward` (f64 sums).
pub fn reference_lookup_backward(s: &LookupShape, labels: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut d = vec![0.0f64; s.rows * s.dim];
    for (b, &l) in labels.iter().enumerate() {
        let r = row_of(l, s.rows);
        for j in 0..s.dim {
            d[r * s.dim + j] += dy[b * s.dim + j] as f64;
        }
    }
    d.iter().map(|&v| v as f32).collect()
}

static TOKEN_EMBEDDING: KernelSpec = KernelSpec {
    shader: &crate::shaders::EMBEDDING,
    entry: "token_embedding",
    bindings: &[Binding::Read, Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TokenParams {
    batch: u32,
    tokens: u32,
    dim: u32,
    row_start: u32,
    rows: u32,
    vocab: u32,
    _pad: [u32; 2],
}

/// A text model's token embedding: `batch` sequences of `tokens` ids into a table [vocab, dim],
/// plus a position table [tokens, dim]; out [batch, dim, tokens].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenShape {
    pub batch: usize,
    pub tokens: usize,
    pub dim: usize,
    pub vocab: usize,
}

/// The rows [row_start, row_start + rows) of the token table that `table` holds: one dispatch
/// writes the tokens whose ids fall there (a table larger than a binding is cut in ranges).
pub fn token_embedding(
    ctx: &Context,
    s: &TokenShape,
    (row_start, rows): (usize, usize),
    ids: &wgpu::Buffer,
    table: &wgpu::Buffer,
    positions: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    if s.batch == 0 || s.tokens == 0 || s.dim == 0 || rows == 0 || row_start + rows > s.vocab {
        bail_shape!("token embedding: {s:?}, rows {row_start}..{}", row_start + rows);
    }
    let len = s.batch * s.dim * s.tokens;
    check_len("token embedding", "ids", ids, s.batch * s.tokens)?;
    check_len("token embedding", "table", table, rows * s.dim)?;
    check_len("token embedding", "positions", positions, s.tokens * s.dim)?;
    check_len("token embedding", "output", out, len)?;
    let params = ctx.uniform(&TokenParams {
        batch: s.batch as u32,
        tokens: s.tokens as u32,
        dim: s.dim as u32,
        row_start: row_start as u32,
        rows: rows as u32,
        vocab: s.vocab as u32,
        _pad: [0; 2],
    });
    ctx.dispatch(
        &TOKEN_EMBEDDING,
        &[],
        &[ids, table, positions, out, &params],
        grid_1d(ctx, len, 256),
        Cost { flops: len as u64, bytes: 12 * len as u64 },
    )
}

/// The reference: out [batch, dim, tokens] from the whole table.
pub fn reference_token_embedding(s: &TokenShape, ids: &[f32], table: &[f32], positions: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; s.batch * s.dim * s.tokens];
    for b in 0..s.batch {
        for t in 0..s.tokens {
            let id = (ids[b * s.tokens + t].max(0.0) as usize).min(s.vocab - 1);
            for d in 0..s.dim {
                out[(b * s.dim + d) * s.tokens + t] = table[id * s.dim + d] + positions[t * s.dim + d];
            }
        }
    }
    out
}
