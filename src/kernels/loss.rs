//! The MSE loss (shaders/loss.wgsl): mean((pred - target)^2) over all elements, as `F.mse_loss`
//! computes it, summed on the device in a fixed order (two passes, no atomics), and its CPU
//! reference. Its gradient is `elementwise::mse_grad`.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static SPEC: KernelSpec = KernelSpec {
    shader: &crate::shaders::LOSS,
    entry: "reduce_sum",
    bindings: &[Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    per_invocation: u32,
    groups_x: u32,
    scale: f32,
}

const WG: usize = 256;
/// Workgroups of the first pass at most: enough to fill a GPU, few enough for one workgroup to
/// sum their partials.
const MAX_PARTIALS: usize = 256;

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
    // The first pass's workgroups fit the grid (x times y) on any device.
    let max_dim = ctx.limits.max_compute_workgroups_per_dimension as usize;
    let partials = len.div_ceil(WG).min(MAX_PARTIALS).min(max_dim * max_dim);
    let per = len.div_ceil(WG * partials);
    let partials = len.div_ceil(WG * per);
    let sums = ctx.scratch_buffer("mse partial sums", partials);
    let pass = |square: bool, n: usize, per: usize, groups: usize, scale: f32, a, b, out| {
        let workgroups = grid_1d(ctx, groups * WG, WG);
        let params = ctx.uniform(&Params {
            len: n as u32,
            per_invocation: per as u32,
            groups_x: workgroups[0],
            scale,
        });
        ctx.dispatch(
            &SPEC,
            &[("SQUARE_DIFF", square as u8 as f64)],
            &[a, b, out, &params],
            workgroups,
            Cost { flops: 3 * n as u64, bytes: 4 * (n * (1 + square as usize)) as u64 },
        )
    };
    Ok(vec![
        pass(true, len, per, partials, 1.0, pred, target, &sums)?,
        pass(
            false,
            partials,
            partials.div_ceil(WG),
            1,
            (1.0 / mean_over as f64) as f32,
            &sums,
            &ctx.dummy,
            loss,
        )?,
    ])
}

/// sum((pred - target)^2) / mean_over, summed in f64.
pub fn reference_mse(pred: &[f32], target: &[f32], mean_over: usize) -> f32 {
    let sum: f64 = pred.iter().zip(target).map(|(&p, &t)| (p as f64 - t as f64).powi(2)).sum();
    (sum / mean_over as f64) as f32
}
