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
static PREPARE_STEP: KernelSpec = KernelSpec {
    shader: &crate::shaders::DIFFUSION,
    entry: "prepare_step",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Write,
        Binding::Write,
        Binding::Uniform,
    ],
};
static SAMPLER_STEP: KernelSpec = KernelSpec {
    shader: &crate::shaders::DIFFUSION,
    entry: "sampler_step",
    bindings: &[
        Binding::Write,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Write,
        Binding::Uniform,
    ],
};
static REPAINT_MIX: KernelSpec = KernelSpec {
    shader: &crate::shaders::DIFFUSION,
    entry: "repaint_mix",
    bindings: &[
        Binding::Write,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};
static GUIDE: KernelSpec = KernelSpec {
    shader: &crate::shaders::DIFFUSION,
    entry: "guide",
    bindings: &[Binding::Read, Binding::Write, Binding::Uniform],
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

/// One row of the per-step table read by `prepare_step` and `sampler_step` (layout = the shader's
/// `StepCoeffs`):
///   model input = model_in_scale x, at `timestep`;
///   saved <- x where `save`;  X = saved where `from_saved`, else x;
///   x0 = x0_x X + x0_m m;  x0 = clamp(x0, +-clip) if clip > 0;  eps = eps_x X + eps_m m + eps_x0 x0;
///   x <- next_x0 x0 + next_x X + next_eps eps + next_prev_x0 h1 + next_prev2 h2 + next_prev3 h3
///        + noise_scale z;
///   unless `skip_history`: h1 <- x0 (with `depth` 3, h3 <- h2 and h2 <- h1 first).
/// h1..h3 are the last x0s (for PNDM, with x0 the model output itself: its last outputs).
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
    /// Weight of the previous step's x0 (multistep solvers).
    pub next_prev_x0: f32,
    pub noise_scale: f32,
    /// diffusers' scale_model_input factor (1 for DDPM, DDIM and DPM-Solver).
    pub model_in_scale: f32,
    /// The timestep the UNet sees at this step.
    pub timestep: f32,
    /// Weights of the x0s of two and three steps back (PNDM's linear multistep).
    pub next_prev2: f32,
    pub next_prev3: f32,
    /// 3: keep three past x0s (PNDM); otherwise one.
    pub depth: f32,
    /// 1: this step's x0 joins no history (PNDM's second step).
    pub skip_history: f32,
    /// 1: the step reads the saved sample instead of x (PNDM's second step).
    pub from_saved: f32,
    /// 1: the sample is saved before this step (PNDM's first step).
    pub save: f32,
    pub _pad: [f32; 1],
}

/// Floats of a sampler's state beside x: three past x0s and a saved sample, each as long as x.
pub const HISTORY_SLOTS: usize = 4;

/// f32 values per table row.
pub const ROW_LEN: usize = std::mem::size_of::<StepCoeffs>() / 4;

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
            model_in_scale: 1.0,
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
            // From the model's (unclipped) x0, before any clipping, as diffusers derives it.
            Prediction::Sample => (1.0 / s1a, -sa / s1a, 0.0),
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
            model_in_scale: 1.0,
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
    batch: u32,
    _pad: u32,
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
    let params =
        ctx.uniform(&Params { len: len as u32, per_item: per_item as u32, batch: batch as u32, _pad: 0 });
    ctx.dispatch(
        &ADD_NOISE,
        &[],
        &[x0, eps, t, table, out, &params],
        grid_1d(ctx, len, 256),
        Cost { flops: 3 * len as u64, bytes: 12 * len as u64 },
    )
}

/// The UNet's inputs for the current step: `model_in` = model_in_scale * x ([copies * len]: x
/// repeated, one copy per guidance row), and `timesteps` [batch] (every row of every copy) set to
/// the row's timestep. x holds `len` values.
#[allow(clippy::too_many_arguments)]
pub fn prepare_step(
    ctx: &Context,
    batch: usize,
    len: usize,
    copies: usize,
    steps: usize,
    x: &wgpu::Buffer,
    table: &wgpu::Buffer,
    step_counter: &wgpu::Buffer,
    model_in: &wgpu::Buffer,
    timesteps: &wgpu::Buffer,
) -> Result<Dispatch> {
    if len == 0 || batch == 0 || copies == 0 {
        bail_shape!("prepare_step: empty sample");
    }
    let total = copies * len;
    check_len("prepare_step", "sample", x, len)?;
    check_len("prepare_step", "model input", model_in, total)?;
    check_len("prepare_step", "timesteps", timesteps, batch)?;
    check_len("prepare_step", "table", table, steps * ROW_LEN)?;
    check_len("prepare_step", "step counter", step_counter, 1)?;
    let params =
        ctx.uniform(&Params { len: total as u32, per_item: len as u32, batch: batch as u32, _pad: 0 });
    ctx.dispatch(
        &PREPARE_STEP,
        &[],
        &[x, table, step_counter, model_in, timesteps, &params],
        grid_1d(ctx, total.max(batch), 256),
        Cost { flops: total as u64, bytes: 8 * total as u64 },
    )
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GuideParams {
    len: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// Classifier-free guidance: out [len] = uncond + scale (cond - uncond), with `model_out` holding
/// [uncond; cond] (2 len values).
pub fn guide(
    ctx: &Context,
    len: usize,
    scale: f32,
    model_out: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Dispatch> {
    if len == 0 {
        bail_shape!("guide: empty sample");
    }
    check_len("guide", "model output", model_out, 2 * len)?;
    check_len("guide", "output", out, len)?;
    let params = ctx.uniform(&GuideParams { len: len as u32, scale, _pad: [0; 2] });
    ctx.dispatch(
        &GUIDE,
        &[],
        &[model_out, out, &params],
        grid_1d(ctx, len, 256),
        Cost { flops: 3 * len as u64, bytes: 12 * len as u64 },
    )
}

/// Reference of `guide`.
pub fn reference_guide(len: usize, scale: f32, model_out: &[f32]) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let (u, c) = (model_out[i] as f64, model_out[len + i] as f64);
            (u + scale as f64 * (c - u)) as f32
        })
        .collect()
}

/// The buffers one sampler step reads and updates.
pub struct StepBuffers<'a> {
    /// The sample, updated in place.
    pub x: &'a wgpu::Buffer,
    pub model_out: &'a wgpu::Buffer,
    pub noise: &'a wgpu::Buffer,
    /// The past x0s and the saved sample: `HISTORY_SLOTS` times the sample's length.
    pub history: &'a wgpu::Buffer,
    /// `steps` StepCoeffs rows.
    pub table: &'a wgpu::Buffer,
    pub step_counter: &'a wgpu::Buffer,
}

/// One sampler step over `len` values with row `step_counter[0]` of the table.
pub fn sampler_step(ctx: &Context, len: usize, steps: usize, b: &StepBuffers) -> Result<Dispatch> {
    if len == 0 {
        bail_shape!("sampler_step: empty sample");
    }
    for (what, buf) in [("sample", b.x), ("model output", b.model_out), ("noise", b.noise)] {
        check_len("sampler_step", what, buf, len)?;
    }
    check_len("sampler_step", "history", b.history, HISTORY_SLOTS * len)?;
    check_len("sampler_step", "table", b.table, steps * ROW_LEN)?;
    check_len("sampler_step", "step counter", b.step_counter, 1)?;
    let params = ctx.uniform(&Params { len: len as u32, per_item: len as u32, batch: 1, _pad: 0 });
    ctx.dispatch(
        &SAMPLER_STEP,
        &[],
        &[b.x, b.model_out, b.noise, b.table, b.step_counter, b.history, &params],
        grid_1d(ctx, len, 256),
        Cost { flops: 16 * len as u64, bytes: 24 * len as u64 },
    )
}

/// One row of `repaint_mix`'s table (layout = the shader's `MixRow`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MixRow {
    /// The known region: known_orig orig + known_z z (RePaint's join after a step).
    pub known_orig: f32,
    pub known_z: f32,
    /// x <- keep x + fresh z (1 and 0 for the join; sqrt(1 - beta) and sqrt(beta) for a renoising).
    pub keep: f32,
    pub fresh: f32,
    /// 1: blend with the known region through the mask; 0: the whole image.
    pub use_mask: f32,
    pub _pad: [f32; 3],
}

/// The buffers of `repaint_mix`: x updated in place; orig and mask as long as x (mask 1 keeps the
/// original); z this draw's noise; `rows` MixRows read at `counter[0]`.
pub struct MixBuffers<'a> {
    pub x: &'a wgpu::Buffer,
    pub orig: &'a wgpu::Buffer,
    pub mask: &'a wgpu::Buffer,
    pub noise: &'a wgpu::Buffer,
    pub rows: &'a wgpu::Buffer,
    pub counter: &'a wgpu::Buffer,
}

/// RePaint's join or renoising over `len` values with row `counter[0]` of `rows` (`rows_len` rows).
pub fn repaint_mix(ctx: &Context, len: usize, rows_len: usize, b: &MixBuffers) -> Result<Dispatch> {
    if len == 0 {
        bail_shape!("repaint_mix: empty sample");
    }
    for (what, buf) in [("sample", b.x), ("original", b.orig), ("mask", b.mask), ("noise", b.noise)] {
        check_len("repaint_mix", what, buf, len)?;
    }
    check_len("repaint_mix", "table", b.rows, 8 * rows_len)?;
    check_len("repaint_mix", "counter", b.counter, 1)?;
    let params = ctx.uniform(&Params { len: len as u32, per_item: len as u32, batch: 1, _pad: 0 });
    ctx.dispatch(
        &REPAINT_MIX,
        &[],
        &[b.x, b.orig, b.mask, b.noise, b.rows, b.counter, &params],
        grid_1d(ctx, len, 256),
        Cost { flops: 8 * len as u64, bytes: 20 * len as u64 },
    )
}

/// Reference of `repaint_mix`.
pub fn reference_mix(r: &MixRow, x: &[f32], orig: &[f32], mask: &[f32], z: &[f32]) -> Vec<f32> {
    let f = |v: f32| v as f64;
    (0..x.len())
        .map(|i| {
            let y = f(r.keep) * f(x[i]) + f(r.fresh) * f(z[i]);
            if r.use_mask != 0.0 {
                let m = f(mask[i]);
                (m * (f(r.known_orig) * f(orig[i]) + f(r.known_z) * f(z[i])) + (1.0 - m) * y) as f32
            } else {
                y as f32
            }
        })
        .collect()
}

/// step_counter[0] += 1 on the device.
pub fn advance_step(ctx: &Context, step_counter: &wgpu::Buffer) -> Result<Dispatch> {
    check_len("advance_step", "step counter", step_counter, 1)?;
    ctx.dispatch(&ADVANCE_STEP, &[], &[step_counter], [1, 1, 1], Cost { flops: 1, bytes: 8 })
}

/// Reference of `sampler_step` for one coefficient row: the new sample; `history` (past x0s
/// and the saved sample, `HISTORY_SLOTS` x len) is updated as the kernel updates it.
pub fn reference_step(c: &StepCoeffs, x: &[f32], m: &[f32], z: &[f32], history: &mut [f32]) -> Vec<f32> {
    let f = |v: f32| v as f64;
    let len = x.len();
    (0..len)
        .map(|i| {
            if c.save != 0.0 {
                history[3 * len + i] = x[i];
            }
            let xi = if c.from_saved != 0.0 { f(history[3 * len + i]) } else { f(x[i]) };
            let mi = f(m[i]);
            let mut x0 = f(c.x0_x) * xi + f(c.x0_m) * mi;
            if c.clip > 0.0 {
                x0 = x0.clamp(-f(c.clip), f(c.clip));
            }
            let eps = f(c.eps_x) * xi + f(c.eps_m) * mi + f(c.eps_x0) * x0;
            let next = f(c.next_x0) * x0
                + f(c.next_x) * xi
                + f(c.next_eps) * eps
                + f(c.next_prev_x0) * f(history[i])
                + f(c.next_prev2) * f(history[len + i])
                + f(c.next_prev3) * f(history[2 * len + i])
                + f(c.noise_scale) * f(z[i]);
            if c.skip_history == 0.0 {
                if c.depth == 3.0 {
                    history[2 * len + i] = history[len + i];
                    history[len + i] = history[i];
                }
                history[i] = x0 as f32;
            }
            next as f32
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
