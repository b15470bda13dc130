//! The optimizer step on the device, after a step's gradients: clip_grad_norm_ (the gradients'
//! global norm, into the state), AdamW on every trained weight in place, the EMA of the weights,
//! and the step counter advanced; all table-driven by that counter, so many steps run per
//! submission with nothing read back.

use crate::gpu::{CopyOp, Dispatch};
use crate::kernels::diffusion::advance_step;
use crate::kernels::loss;
use crate::kernels::optim::{self, AdamW, AdamWBuffers, StepRow};
use crate::model::UNet;
use crate::train::ParamGradient;
use crate::{Error, Result};

/// The optimizer's buffers for one trained weight (the weight's buffer layout).
pub struct WeightState {
    pub weight: usize,
    pub len: usize,
    /// AdamW's moments.
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
    /// The EMA of the weight (None without EMA).
    pub shadow: Option<wgpu::Buffer>,
}

/// Where the optimizer's state words are (u32 [4]).
pub mod state {
    /// The optimizer steps taken: the row of the table the next step uses, and the step index the
    /// batch's random numbers and data order are keyed by.
    pub const STEP: usize = 0;
    /// The bits of the f32 clipping coefficient AdamW multiplies the gradients by.
    pub const CLIP: usize = 1;
    /// The bits of the f32 global gradient norm before clipping (for the log).
    pub const NORM: usize = 2;
}

pub struct Optimizer {
    /// u32 [4]: see `state`.
    pub state: wgpu::Buffer,
    /// One `StepRow` a step of the run.
    pub rows: wgpu::Buffer,
    pub weights: Vec<WeightState>,
    /// One optimizer step: the norm and clipping coefficient, AdamW and the EMA of each weight
    /// (one pass), the counter advanced.
    pub dispatches: Vec<Dispatch>,
}

impl Optimizer {
    /// An optimizer for `gradients` (a `TrainStep`'s) over `unet`'s weights, with the table `rows`
    /// (step k uses row k - 1), global-norm clipping at `max_norm` (None: no clipping, the norm
    /// is still logged) and, with `ema`, shadows initialised from the weights as EMAModel's are.
    pub fn new(
        ctx: &crate::gpu::Context,
        unet: &UNet,
        gradients: &[ParamGradient],
        hyper: &AdamW,
        rows: &[StepRow],
        max_norm: Option<f32>,
        ema: bool,
    ) -> Result<Self> {
        Self::with_lr_scales(ctx, unet, gradients, hyper, rows, max_norm, ema, &|_| 1.0)
    }

    /// `new` with each weight's learning rate scaled by `lr_scale(its file name)` (a new class
    /// table learning faster than the weights it joins).
    #[allow(clippy::too_many_arguments)]
    pub fn with_lr_scales(
        ctx: &crate::gpu::Context,
        unet: &UNet,
        gradients: &[ParamGradient],
        hyper: &AdamW,
        rows: &[StepRow],
        max_norm: Option<f32>,
        ema: bool,
        lr_scale: &dyn Fn(&str) -> f32,
    ) -> Result<Self> {
        if rows.is_empty() || gradients.is_empty() {
            return Err(Error::Invalid("an optimizer needs at least one step and one trained weight".into()));
        }
        let state = ctx.scratch_buffer("optimizer state", 4);
        ctx.queue.write_buffer(&state, 0, bytemuck::cast_slice(&[0u32, 1f32.to_bits(), 0, 0]));
        let rows_buf = ctx.scratch_buffer("optimizer table", 4 * rows.len());
        ctx.queue.write_buffer(&rows_buf, 0, bytemuck::cast_slice(rows));
        let sums = ctx.scratch_buffer("gradient sums of squares", gradients.len());
        let mut dispatches = vec![];
        for (i, g) in gradients.iter().enumerate() {
            dispatches.extend(loss::sum_of_squares(ctx, g.len, &g.buffer, &sums, i)?);
        }
        // Without clipping the coefficient is min(1, inf) = 1, and the norm is still written.
        let max_norm = max_norm.unwrap_or(f32::INFINITY);
        dispatches.push(loss::clip_coefficient(ctx, gradients.len(), max_norm, &sums, &state)?);
        let mut weights = vec![];
        let mut init = vec![];
        for g in gradients {
            let param = &unet.bank.buffers[g.weight];
            let (m, v) = (ctx.scratch_buffer("adam m", g.len), ctx.scratch_buffer("adam v", g.len));
            let shadow = ema.then(|| ctx.scratch_buffer("ema shadow", g.len));
            if let Some(s) = &shadow {
                init.push(CopyOp::buffer(param, 0, s, 0, 4 * g.len as u64));
            }
            let b = AdamWBuffers {
                param,
                grad: &g.buffer,
                m: &m,
                v: &v,
                rows: &rows_buf,
                state: &state,
                shadow: shadow.as_ref(),
            };
            let scale = unet.bank.layouts[g.weight].name().map_or(1.0, lr_scale);
            dispatches.push(optim::adamw(ctx, hyper, g.len, scale, &b)?);
            weights.push(WeightState { weight: g.weight, len: g.len, m, v, shadow });
        }
        dispatches.push(advance_step(ctx, &state)?);
        // m and v start at zero (fresh buffers are), the shadows at the weights.
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        init.iter().for_each(|c| c.record(&mut enc));
        ctx.queue.submit([enc.finish()]);
        Ok(Self { state, rows: rows_buf, weights, dispatches })
    }

    /// The steps taken so far (reads back, so waits for the device).
    pub fn steps_taken(&self, ctx: &crate::gpu::Context) -> Result<u64> {
        let words = ctx.read_raw(&self.state, 16)?;
        Ok(u32::from_le_bytes(words[..4].try_into().expect("4 bytes")) as u64) // ok: read 16
    }

    /// Sets the step counter (a resumed run).
    pub fn set_steps_taken(&self, ctx: &crate::gpu::Context, steps: u64) -> Result<()> {
        let steps = u32::try_from(steps).map_err(|_| Error::Invalid(format!("{steps} steps is too many")))?;
        ctx.queue.write_buffer(&self.state, 0, bytemuck::bytes_of(&steps));
        Ok(())
    }
}

/// Which of the optimizer's per-weight tensors to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Weights,
    Ema,
    FirstMoment,
    SecondMoment,
}

impl Optimizer {
    /// `what` of every trained weight, read back as the file's tensors (by name, sorted). The
    /// EMA of a run without one is the weights.
    pub fn read(
        &self,
        ctx: &crate::gpu::Context,
        unet: &UNet,
        what: Held,
    ) -> Result<Vec<(String, crate::model::HostTensor)>> {
        let mut out = vec![];
        for w in &self.weights {
            let buffer = match what {
                Held::Weights => &unet.bank.buffers[w.weight],
                Held::Ema => w.shadow.as_ref().unwrap_or(&unet.bank.buffers[w.weight]),
                Held::FirstMoment => &w.m,
                Held::SecondMoment => &w.v,
            };
            let data = ctx.read_buffer(buffer, w.len)?;
            out.extend(unet.bank.layouts[w.weight].to_file(&data)?);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
