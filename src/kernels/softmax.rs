//! Row softmax with a scale (shaders/softmax.wgsl), the middle step of composed attention, and its
//! reference.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::SOFTMAX,
    entry: "softmax",
    bindings: &[Binding::Texels, Binding::Write, Binding::Write, Binding::Uniform],
};
const WG: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
    groups_x: u32,
}

/// out[r, :] = softmax(scale * x[r, :]) for `rows` rows of `cols` values. `out` may be `x` itself
/// (the kernel reads a texel copy of x).
pub fn softmax(
    ctx: &Context,
    rows: usize,
    cols: usize,
    scale: f32,
    x: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    launch(ctx, rows, cols, scale, x, out, None)
}

/// The unnormalised softmax: out[r, :] = exp(scale * x[r, :] - max) and inv_sum[r] = 1 / the row's
/// sum, one pass fewer; the consumer multiplies by inv_sum (composed attention does, in the
/// second matmul's epilogue).
pub fn softmax_unnormalized(
    ctx: &Context,
    rows: usize,
    cols: usize,
    scale: f32,
    x: &wgpu::Buffer,
    out: &wgpu::Buffer,
    inv_sum: &wgpu::Buffer,
) -> Result<Dispatch> {
    launch(ctx, rows, cols, scale, x, out, Some(inv_sum))
}

fn launch(
    ctx: &Context,
    rows: usize,
    cols: usize,
    scale: f32,
    x: &wgpu::Buffer,
    out: &wgpu::Buffer,
    inv_sum: Option<&wgpu::Buffer>,
) -> Result<Dispatch> {
    if rows == 0 || cols == 0 {
        bail_shape!("softmax: empty shape {rows}x{cols}");
    }
    check_len("softmax", "input", x, rows * cols)?;
    check_len("softmax", "output", out, rows * cols)?;
    if let Some(b) = inv_sum {
        check_len("softmax", "inverse sums", b, rows)?;
    }
    let workgroups = grid_1d(ctx, rows, WG);
    let params =
        ctx.uniform(&Params { rows: rows as u32, cols: cols as u32, scale, groups_x: workgroups[0] });
    ctx.dispatch_texels(
        &SPEC,
        &[("VEC4", cols.is_multiple_of(4) as u8 as f64), ("NORMALIZE", inv_sum.is_none() as u8 as f64)],
        &[x, out, inv_sum.unwrap_or(&ctx.dummy), &params],
        &[rows * cols],
        workgroups,
        // exp, subtract, scale, sum and divide: ~5 flops a value per pass that uses it.
        Cost { flops: 10 * (rows * cols) as u64, bytes: 8 * (rows * cols) as u64 },
    )
}

/// Plain reference in f64.
pub fn reference(rows: usize, cols: usize, scale: f32, x: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    for row in x.chunks_exact(cols).take(rows) {
        let scaled: Vec<f64> = row.iter().map(|&v| v as f64 * scale as f64).collect();
        let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = scaled.iter().map(|v| (v - max).exp()).sum();
        out.extend(scaled.iter().map(|v| ((v - max).exp() / sum) as f32));
    }
    out
}
