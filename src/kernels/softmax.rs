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
    causal_period: u32,
    _pad: [u32; 3],
}

/// Which of a row's columns take part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    None,
    /// Rows are queries, `queries` to a (batch, head), columns their keys: row r keeps
    /// columns 0..=(r mod queries), the rest are 0 (CLIP's causal self-attention).
    Causal {
        queries: usize,
    },
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
    launch(ctx, rows, cols, scale, Mask::None, x, out, None)
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
    launch(ctx, rows, cols, scale, Mask::None, x, out, Some(inv_sum))
}

/// `softmax_unnormalized` under `mask`: masked columns are written 0 and left out of the sum.
#[allow(clippy::too_many_arguments)]
pub fn softmax_unnormalized_masked(
    ctx: &Context,
    rows: usize,
    cols: usize,
    scale: f32,
    mask: Mask,
    x: &wgpu::Buffer,
    out: &wgpu::Buffer,
    inv_sum: &wgpu::Buffer,
) -> Result<Dispatch> {
    launch(ctx, rows, cols, scale, mask, x, out, Some(inv_sum))
}

#[allow(clippy::too_many_arguments)]
fn launch(
    ctx: &Context,
    rows: usize,
    cols: usize,
    scale: f32,
    mask: Mask,
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
    let causal_period = match mask {
        Mask::None => 0,
        Mask::Causal { queries } if queries > 0 && rows.is_multiple_of(queries) && cols >= queries => queries,
        Mask::Causal { queries } => {
            bail_shape!("softmax: a causal mask of {queries} queries over {rows}x{cols}")
        }
    };
    let params = ctx.uniform(&Params {
        rows: rows as u32,
        cols: cols as u32,
        scale,
        groups_x: workgroups[0],
        causal_period: causal_period as u32,
        _pad: [0; 3],
    });
    ctx.dispatch_texels(
        &SPEC,
        &[
            ("VEC4", (cols.is_multiple_of(4) && causal_period == 0) as u8 as f64),
            ("NORMALIZE", inv_sum.is_none() as u8 as f64),
        ],
        &[x, out, inv_sum.unwrap_or(&ctx.dummy), &params],
        &[rows * cols],
        workgroups,
        // exp, subtract, scale, sum and divide: ~5 flops a value per pass that uses it.
        Cost { flops: 10 * (rows * cols) as u64, bytes: 8 * (rows * cols) as u64 },
    )
}

/// Plain reference in f64.
static SPEC_BACKWARD: KernelSpec = KernelSpec {
    shader: &crate::shaders::SOFTMAX_BACKWARD,
    entry: "softmax_backward",
    bindings: &[Binding::Read, Binding::Write, Binding::Uniform],
};

/// The backward of a row softmax, in place: grad holds dP on entry and scale * dS on exit, dS =
/// P (dP - rowsum(P dP)), for `rows` rows of `cols` probabilities `probs`.
pub fn softmax_backward(
    ctx: &Context,
    rows: usize,
    cols: usize,
    scale: f32,
    probs: &wgpu::Buffer,
    grad: &wgpu::Buffer,
) -> Result<Dispatch> {
    if rows == 0 || cols == 0 {
        bail_shape!("softmax backward: empty shape {rows}x{cols}");
    }
    // lavapipe stops a shader's loops after 65535 iterations in all (see group_norm.rs).
    if ctx.is_cpu() && 2 * cols > 60_000 {
        bail_shape!("softmax backward: rows of {cols} values are too long for a CPU driver");
    }
    check_len("softmax backward", "probabilities", probs, rows * cols)?;
    check_len("softmax backward", "gradient", grad, rows * cols)?;
    let workgroups = grid_1d(ctx, rows, WG);
    let params = ctx.uniform(&Params {
        rows: rows as u32,
        cols: cols as u32,
        scale,
        groups_x: workgroups[0],
        causal_period: 0, // (the backward has no mask)
        _pad: [0; 3],
    });
    ctx.dispatch(
        &SPEC_BACKWARD,
        &[],
        &[probs, grad, &params],
        workgroups,
        Cost { flops: 4 * (rows * cols) as u64, bytes: 12 * (rows * cols) as u64 },
    )
}

/// Plain reference of `softmax_backward` in f64.
pub fn reference_backward(rows: usize, cols: usize, scale: f32, probs: &[f32], dp: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let row = r * cols..(r + 1) * cols;
        let d: f64 = row.clone().map(|i| probs[i] as f64 * dp[i] as f64).sum();
        for i in row {
            out[i] = (scale as f64 * probs[i] as f64 * (dp[i] as f64 - d)) as f32;
        }
    }
    out
}

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
