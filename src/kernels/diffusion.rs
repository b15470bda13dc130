//! The diffusion updates (shaders/diffusion.wgsl): forward noising and the per-step sampler update
//! with coefficients from a table, plus the DDPM and DDIM coefficient rows and plain references.

use crate::gpu::{Binding, Context, Cost, Dispatch, KernelSpec};
use crate::kernels::{check_len, grid_1d};
use crate::{bail_shape, Result};

static ADD_NOISE: KernelSpec = KernelSpec {
    shader: &crate::shaders::DIFFUSION,
    entry: "add_noise",
    bindings: &[Binding::Read, Binding::Read, Binding::Read, Binding::Read, Binding::Write, Binding::Uniform],
};
static SAMPLER_STEP: KernelSpec = KernelSpec {
    shader: &crate::shaders::DIFFUSION,
    entry: "sampler_step",
    bindings: &[Binding::Write, Binding::Read, Binding::Read, Binding::Read, Binding::Read, Binding::Uniform],
};
static ADVANCE_STEP: KernelSpec =
    KernelSpec { shader: &crate::shaders::DIFFUSION, entry: "advance_step", bindings: &[Binding::Write] };

/// What the model predicts (diffusers' `prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    Sample,
    VPrediction,
}

/// DDPM's `variance_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdpmVariance {
    FixedSmall,
    FixedLarge,
}

/// One row of the per-step table read by `sampler_step` (layout = the shader's `StepCoeffs`):
///   x0 = x0_x x + x0_m m;  x0 = clamp(x0, +-clip) if clip > 0;  eps = eps_x x + eps_m m + eps_x0 x0;
///   x <- next_x0 x0 + next_x x + next_eps eps + noise_scale z.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepCoeffs {
    pub x0_x: f32,
    pub x0_m: f32,
    pub clip: f32,
    pub eps_x: f32,
    pub eps_m: f32,
    pub eps_x0: f32,
    pub next_x0: f32,
    pub next_x: f32,
    pub next_eps: f32,
    pub noise_scale: f32,
    pub _pad: [f32; 2],
}

/// (x0_x, x0_m): the x0 implied by the model output `m` at cumulative alpha `abar`.
fn x0_from(prediction: Prediction, abar: f64) -> (f64, f64) {
    let (sa, s1a) = (abar.sqrt(), (1.0 - abar).sqrt());
    match prediction {
        Prediction::Epsilon => (1.0 / sa, -s1a / sa),
        Prediction::Sample => (0.0, 1.0),
        Prediction::VPrediction => (sa, -s1a),
    }
}

impl StepCoeffs {
    /// DDPM (diffusers `DDPMScheduler.step`): posterior mean of x_{prev} given x0 and x_t, plus
    /// noise with the chosen variance when `add_noise` (diffusers adds none at t = 0).
    pub fn ddpm(
        abar_t: f64,
        abar_prev: f64,
        prediction: Prediction,
        clip: Option<f32>,
        variance: DdpmVariance,
        add_noise: bool,
    ) -> Self {
        let (x0_x, x0_m) = x0_from(prediction, abar_t);
        let beta_t = 1.0 - abar_t / abar_prev;
        let var = match variance {
            DdpmVariance::FixedSmall => ((1.0 - abar_prev) / (1.0 - abar_t) * beta_t).max(1e-20),
            DdpmVariance::FixedLarge => beta_t,
        };
        Self {
            x0_x: x0_x as f32,
            x0_m: x0_m as f32,
            clip: clip.unwrap_or(0.0),
            next_x0: (abar_prev.sqrt() * beta_t / (1.0 - abar_t)) as f32,
            next_x: ((1.0 - beta_t).sqrt() * (1.0 - abar_prev) / (1.0 - abar_t)) as f32,
            noise_scale: if add_noise { var.sqrt() as f32 } else { 0.0 },
            ..Default::default()
        }
    }

    /// DDIM (diffusers `DDIMScheduler.step`) with `eta`; the noise direction uses the model's eps, or
    /// the eps re-derived from the clipped x0 when `use_clipped_model_output`.
    pub fn ddim(
        abar_t: f64,
        abar_prev: f64,
        prediction: Prediction,
        clip: Option<f32>,
        eta: f64,
        use_clipped_model_output: bool,
    ) -> Self {
        let (x0_x, x0_m) = x0_from(prediction, abar_t);
        let (sa, s1a) = (abar_t.sqrt(), (1.0 - abar_t).sqrt());
        // eps implied by the model output, as diffusers' pred_epsilon.
        let (mut eps_x, mut eps_m, mut eps_x0) = match prediction {
            Prediction::Epsilon => (0.0, 1.0, 0.0),
            Prediction::Sample => (1.0 / s1a, 0.0, -sa / s1a),
            Prediction::VPrediction => (s1a, sa, 0.0),
        };
        if use_clipped_model_output {
            (eps_x, eps_m, eps_x0) = (1.0 / s1a, 0.0, -sa / s1a);
        }
        let variance = (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev);
        let std = eta * variance.sqrt();
        Self {
            x0_x: x0_x as f32,
            x0_m: x0_m as f32,
            clip: clip.unwrap_or(0.0),
            eps_x: eps_x as f32,
            eps_m: eps_m as f32,
            eps_x0: eps_x0 as f32,
            next_x0: abar_prev.sqrt() as f32,
            next_eps: (1.0 - abar_prev - std * std).max(0.0).sqrt() as f32,
            noise_scale: std as f32,
            ..Default::default()
        }
    }
}

/// The add-noise table: (sqrt(abar_t), sqrt(1 - abar_t)) for every training timestep t.
pub fn noise_table(alphas_cumprod: &[f64]) -> Vec<f32> {
    alphas_cumprod.iter().flat_map(|&a| [a.sqrt() as f32, (1.0 - a).sqrt() as f32]).collect()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    per_item: u32,
    _pad: [u32; 2],
}

/// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for `batch` items of `per_item` values; `t` holds
/// one u32 timestep per item, `table` is `noise_table` uploaded with `timesteps` rows.
#[allow(clippy::too_many_arguments)]
pub fn add_noise(
    ctx: &Context,
    batch: usize,
    per_item: usize,
    timesteps: usize,
    x0: &wgpu::Buffer,
    eps: &wgpu::Buffer,
    t: &wgpu::Buffer,
    table: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    let len = batch * per_item;
    if len == 0 {
        bail_shape!("add_noise: empty batch");
    }
    for (what, buf, n) in
        [("x0", x0, len), ("noise", eps, len), ("timesteps", t, batch), ("output", out, len)]
    {
        check_len("add_noise", what, buf, n)?;
    }
    check_len("add_noise", "table", table, 2 * timesteps)?;
    let params = ctx.uniform(&Params { len: len as u32, per_item: per_item as u32, _pad: [0; 2] });
    ctx.dispatch(
        &ADD_NOISE,
        &[],
        &[x0, eps, t, table, out, &params],
        grid_1d(ctx, len, 256),
        Cost { flops: 3 * len as u64, bytes: 12 * len as u64 },
    )
}

#[allow(clippy::too_many_arguments)]
/// One sampler step on `x` in place, with row `step_counter[0]` of `table` (StepCoeffs rows).
pub fn sampler_step(
    ctx: &Context,
    len: usize,
    steps: usize,
    x: &wgpu::Buffer,
    model_out: &wgpu::Buffer,
    noise: &wgpu::Buffer,
    table: &wgpu::Buffer,
    step_counter: &wgpu::Buffer,
) -> Result<Dispatch> {
    if len == 0 {
        bail_shape!("sampler_step: empty sample");
    }
    for (what, buf) in [("sample", x), ("model output", model_out), ("noise", noise)] {
        check_len("sampler_step", what, buf, len)?;
    }
    check_len("sampler_step", "table", table, steps * 12)?;
    check_len("sampler_step", "step counter", step_counter, 1)?;
    let params = ctx.uniform(&Params { len: len as u32, per_item: len as u32, _pad: [0; 2] });
    ctx.dispatch(
        &SAMPLER_STEP,
        &[],
        &[x, model_out, noise, table, step_counter, &params],
        grid_1d(ctx, len, 256),
        Cost { flops: 14 * len as u64, bytes: 16 * len as u64 },
    )
}

/// step_counter[0] += 1 on the device.
pub fn advance_step(ctx: &Context, step_counter: &wgpu::Buffer) -> Result<Dispatch> {
    check_len("advance_step", "step counter", step_counter, 1)?;
    ctx.dispatch(&ADVANCE_STEP, &[], &[step_counter], [1, 1, 1], Cost { flops: 1, bytes: 8 })
}

/// Reference of `sampler_step` for one coefficient row.
pub fn reference_step(c: &StepCoeffs, x: &[f32], m: &[f32], z: &[f32]) -> Vec<f32> {
    let f = |v: f32| v as f64;
    (0..x.len())
        .map(|i| {
            let (xi, mi) = (f(x[i]), f(m[i]));
            let mut x0 = f(c.x0_x) * xi + f(c.x0_m) * mi;
            if c.clip > 0.0 {
                x0 = x0.clamp(-f(c.clip), f(c.clip));
            }
            let eps = f(c.eps_x) * xi + f(c.eps_m) * mi + f(c.eps_x0) * x0;
            (f(c.next_x0) * x0 + f(c.next_x) * xi + f(c.next_eps) * eps + f(c.noise_scale) * f(z[i])) as f32
        })
        .collect()
}

/// Reference of `add_noise`.
pub fn reference_add_noise(alphas_cumprod: &[f64], t: &[u32], x0: &[f32], eps: &[f32]) -> Vec<f32> {
    let per_item = x0.len() / t.len();
    (0..x0.len())
        .map(|i| {
            let a = alphas_cumprod[t[i / per_item] as usize];
            (a.sqrt() * x0[i] as f64 + (1.0 - a).sqrt() * eps[i] as f64) as f32
        })
        .collect()
}
