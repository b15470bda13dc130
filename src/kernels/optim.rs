//! The optimizer's updates (shaders/optim.wgsl): PyTorch's AdamW and diffusers' EMA of the
//! weights, elementwise over a weight's buffer, with the per-step scalars (learning-rate
//! schedule, bias corrections, EMA decay) in a table the kernels index by a step counter on the
//! device; and their plain references, in the same order of operations.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static ADAMW: KernelSpec = KernelSpec {
    shader: &crate::shaders::OPTIM,
    entry: "adamw",
    bindings: &[
        Binding::Write,
        Binding::Read,
        Binding::Write,
        Binding::Write,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
        Binding::Write,
    ],
};

/// Elements an invocation updates (the shader's PER), 256 invocations a workgroup.
const PER: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    groups_x: u32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    lr_scale: f32,
    _pad: u32,
}

/// AdamW's hyperparameters (PyTorch's names and defaults but the learning rate, which the rows
/// carry).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

/// One optimizer step's scalars (layout = the shader's `StepRow`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepRow {
    /// f32(1 - lr wd): the decoupled weight decay.
    pub decay: f32,
    /// f32(-lr / (1 - beta1^t)).
    pub neg_step: f32,
    /// f32(sqrt(1 - beta2^t)).
    pub bc2_sqrt: f32,
    /// f32(1 - d), d the EMA's decay at this step.
    pub ema_one_minus_decay: f32,
}

impl StepRow {
    /// The row of optimizer step `t` (1-based, as PyTorch counts) at learning rate `lr` and EMA
    /// decay `ema_decay`, each scalar in f64 then rounded once, as PyTorch's Python floats are.
    pub fn new(h: &AdamW, t: u64, lr: f64, ema_decay: f64) -> Self {
        let (bc1, bc2) = (1.0 - h.beta1.powi(t as i32), 1.0 - h.beta2.powi(t as i32));
        Self {
            decay: (1.0 - lr * h.weight_decay) as f32,
            neg_step: (-(lr / bc1)) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            ema_one_minus_decay: (1.0 - ema_decay) as f32,
        }
    }
}

/// The constants of `adamw` in f32, as PyTorch rounds them.
fn params(ctx: &Context, h: &AdamW, len: usize, lr_scale: f32) -> (wgpu::Buffer, [u32; 3]) {
    let workgroups = grid_1d(ctx, len.div_ceil(PER), 256);
    let p = Params {
        len: len as u32,
        groups_x: workgroups[0],
        one_minus_beta1: (1.0 - h.beta1) as f32,
        beta2: h.beta2 as f32,
        one_minus_beta2: (1.0 - h.beta2) as f32,
        eps: h.eps as f32,
        lr_scale,
        _pad: 0,
    };
    (ctx.uniform(&p), workgroups)
}

/// The buffers of one weight's AdamW update.
pub struct AdamWBuffers<'a> {
    /// The weight, updated in place, and its gradient.
    pub param: &'a wgpu::Buffer,
    pub grad: &'a wgpu::Buffer,
    /// The first and second moments, updated in place (zeros before the first step).
    pub m: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
    /// `StepRow`s, one an optimizer step.
    pub rows: &'a wgpu::Buffer,
    /// u32 [2]: the row to use (the step counter) and the bits of the f32 clipping coefficient
    /// the gradient is multiplied by first (1.0 without clipping).
    pub state: &'a wgpu::Buffer,
    /// The EMA's shadow of the weight, updated from the new weight in the same pass (None: no EMA).
    pub shadow: Option<&'a wgpu::Buffer>,
}

/// One AdamW step over `len` values, and the EMA's step where there is a shadow.
/// AdamW over `len` values; `lr_scale` multiplies the run's learning rate for this weight (1: the
/// same, bit for bit PyTorch's step).
pub fn adamw(ctx: &Context, h: &AdamW, len: usize, lr_scale: f32, b: &AdamWBuffers) -> Result<Dispatch> {
    if len == 0 {
        bail_shape!("adamw: an empty weight");
    }
    for (what, buf) in [("weight", b.param), ("gradient", b.grad), ("m", b.m), ("v", b.v)] {
        check_len("adamw", what, buf, len)?;
    }
    check_len("adamw", "state", b.state, 2)?;
    if let Some(s) = b.shadow {
        check_len("adamw", "EMA shadow", s, len)?;
    }
    let (params, workgroups) = params(ctx, h, len, lr_scale);
    let ema = b.shadow.is_some() as u64;
    ctx.dispatch(
        &ADAMW,
        &[("EMA", ema as f64)],
        &[b.param, b.grad, b.m, b.v, b.rows, b.state, &params, b.shadow.unwrap_or(&ctx.dummy)],
        workgroups,
        Cost { flops: (12 + 3 * ema) * len as u64, bytes: (28 + 8 * ema) * len as u64 },
    )
}

/// Plain reference of `adamw`, in f32 in the kernel's (and PyTorch's) order of operations.
#[allow(clippy::too_many_arguments)]
pub fn reference_adamw(
    h: &AdamW,
    row: &StepRow,
    lr_scale: f32,
    clip: f32,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let (b1c, b2, b2c, eps) = ((1.0 - h.beta1) as f32, h.beta2 as f32, (1.0 - h.beta2) as f32, h.eps as f32);
    for i in 0..param.len() {
        let g = grad[i] * clip;
        let x = param[i] * row.decay;
        m[i] = b1c.mul_add(g - m[i], m[i]);
        v[i] = (b2c * g).mul_add(g, v[i] * b2);
        param[i] = x + (row.neg_step * lr_scale * m[i]) / (v[i].sqrt() / row.bc2_sqrt + eps);
    }
}

/// Plain reference of `ema`.
pub fn reference_ema(row: &StepRow, weight: &[f32], shadow: &mut [f32]) {
    for (s, &w) in shadow.iter_mut().zip(weight) {
        *s -= row.ema_one_minus_decay * (*s - w);
    }
}
