//! Deterministic sums (shaders/loss.wgsl): the MSE loss, mean((pred - target)^2) over all elements
//! as `F.mse_loss` computes it, a gradient's sum of squares and clip_grad_norm_'s coefficient, each
//! summed on the device in a fixed order (two passes, no atomics), with CPU references. The loss's
//! gradient is `elementwise::mse_grad`.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::LOSS,
    entry: "reduce_sum",
    bindings: &[Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

static CLIP: KernelSpec = KernelSpec {
    shader: &crate::shaders::LOSS,
    entry: "clip_coefficient",
    bindings: &[Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    per_invocation: u32,
    groups_x: u32,
    scale: f32,
    out_index: u32,
    _pad: [u32; 3],
}

const WG: usize = 256;
/// Workgroups of the first pass at most: enough to fill a GPU, few enough for one workgroup to
/// sum their partials.
const MAX_PARTIALS: usize = 256;

/// What the first pass sums (the shader's MODE).
#[derive(Clone, Copy)]
enum Terms {
    SquaredDifference = 1,
    Square = 2,
}

/// out[out_index] = scale * the sum of `terms` over `len` values of a (and b): two dispatches.
#[allow(clippy::too_many_arguments)]
fn two_pass_sum(
    ctx: &Context,
    what: &str,
    terms: Terms,
    len: usize,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    scale: f32,
    out: &wgpu::Buffer,
    out_index: usize,
) -> Result<Vec<Dispatch>> {
    // The first pass's workgroups fit the grid (x times y) on any device.
    let max_dim = ctx.limits.max_compute_workgroups_per_dimension as usize;
    let partials = len.div_ceil(WG).min(MAX_PARTIALS).min(max_dim * max_dim);
    let per = len.div_ceil(WG * partials);
    let partials = len.div_ceil(WG * per);
    let sums = ctx.scratch_buffer(what, partials);
    let pass = |mode: u32, n: usize, per: usize, groups: usize, scale: f32, a, b, out, out_index: usize| {
        let workgroups = grid_1d(ctx, groups * WG, WG);
        let params = ctx.uniform(&Params {
            len: n as u32,
            per_invocation: per as u32,
            groups_x: workgroups[0],
            scale,
            out_index: out_index as u32,
            _pad: [0; 3],
        });
        let reads = 1 + (mode == Terms::SquaredDifference as u32) as usize;
        ctx.dispatch(
            &SPEC,
            &[("MODE", mode as f64)],
            &[a, b, out, &params],
            workgroups,
            Cost { flops: 3 * n as u64, bytes: 4 * (n * reads) as u64 },
        )
    };
    Ok(vec![
        pass(terms as u32, len, per, partials, 1.0, a, b, &sums, 0)?,
        pass(0, partials, partials.div_ceil(WG), 1, scale, &sums, &ctx.dummy, out, out_index)?,
    ])
}

/// loss[0] = sum((pred - target)^2) / `mean_over` over `len` values: two dispatches. The mean
/// when `mean_over` = `len`; the micro-batches of a batch pass its count, and their losses add up
/// to the batch's.
pub fn mse_loss(
    ctx: &Context,
    len: usize,
    mean_over: usize,
    pred: &wgpu::Buffer,
    target: &wgpu::Buffer,
    loss: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    if len == 0 || mean_over < len {
        bail_shape!("mse loss: a mean over {mean_over} values of {len}");
    }
    check_len("mse loss", "prediction", pred, len)?;
    check_len("mse loss", "target", target, len)?;
    check_len("mse loss", "loss", loss, 1)?;
    let scale = (1.0 / mean_over as f64) as f32;
    two_pass_sum(ctx, "mse partial sums", Terms::SquaredDifference, len, pred, target, scale, loss, 0)
}

/// sums[index] = sum(x^2) over `len` values (a gradient's, for clipping): two dispatches.
pub fn sum_of_squares(
    ctx: &Context,
    len: usize,
    x: &wgpu::Buffer,
    sums: &wgpu::Buffer,
    index: usize,
) -> Result<Vec<Dispatch>> {
    if len == 0 {
        bail_shape!("sum of squares: an empty tensor");
    }
    check_len("sum of squares", "input", x, len)?;
    check_len("sum of squares", "sums", sums, index + 1)?;
    two_pass_sum(ctx, "sum of squares partials", Terms::Square, len, x, &ctx.dummy, 1.0, sums, index)
}

/// `torch.nn.utils.clip_grad_norm_`'s coefficient from the sums of squares of `tensors`
/// gradients: state[1] = min(1, max_norm / (total + 1e-6)) with total = the norm of the
/// per-tensor norms, and state[2] = total (for the log). state[0], the optimizer's step counter,
/// is left alone; AdamW reads state[1] as the coefficient.
pub fn clip_coefficient(
    ctx: &Context,
    tensors: usize,
    max_norm: f32,
    sums: &wgpu::Buffer,
    state: &wgpu::Buffer,
) -> Result<Dispatch> {
    if tensors == 0 {
        bail_shape!("clip coefficient: no gradients");
    }
    check_len("clip coefficient", "sums of squares", sums, tensors)?;
    check_len("clip coefficient", "state", state, 3)?;
    let params = ctx.uniform(&Params { len: tensors as u32, scale: max_norm, ..Default::default() });
    ctx.dispatch(
        &CLIP,
        &[],
        &[sums, &ctx.dummy, state, &params],
        [1, 1, 1],
        Cost { flops: 3 * tensors as u64, bytes: 4 * tensors as u64 },
    )
}

/// Plain reference of `clip_coefficient` from the gradients themselves: (coefficient, total),
/// each tensor's norm from an f64 sum rounded to f32, as the kernel's order.
pub fn reference_clip(grads: &[&[f32]], max_norm: f32) -> (f32, f32) {
    let mut total = 0.0f32;
    for g in grads {
        let norm = (g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() as f32).sqrt();
        total += norm * norm;
    }
    let total = total.sqrt();
    ((max_norm * (1.0 / (total + 1e-6))).min(1.0), total)
}

/// sum((pred - target)^2) / mean_over, summed in f64.
pub fn reference_mse(pred: &[f32], target: &[f32], mean_over: usize) -> f32 {
    let sum: f64 = pred.iter().zip(target).map(|(&p, &t)| (p as f64 - t as f64).powi(2)).sum();
    (sum / mean_over as f64) as f32
}
