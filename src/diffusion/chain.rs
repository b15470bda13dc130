//! The reverse chain on the device: each step is prepare (model input, timestep) -> UNet -> fresh
//! Philox noise -> sampler update -> step counter + 1, all reading their coefficients from the
//! per-step table by the counter on the device. Steps are recorded many per submission and nothing
//! is read back until the end.

use std::time::Instant;

use super::samplers::SamplerPlan;
use crate::gpu::{Context, Dispatch};
use crate::kernels::{diffusion, elementwise, rng};
use crate::model::UNet;
use crate::{Error, Result};

/// What a chain starts from.
pub struct ChainInput<'a> {
    pub seed: u64,
    pub batch: usize,
    /// Standard-normal x_T [batch, C, H, W]; generated from the seed when None.
    pub init_noise: Option<&'a [f32]>,
}

/// Progress: (steps done, steps in total), over all micro-batches.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Substream of the initial noise; step i's noise uses substream 1 + i.
const INIT_SUBSTREAM: u32 = 0;
const STEP_SUBSTREAM: u32 = 1;

/// Runs the whole reverse chain and returns the final samples [batch, C, H, W].
pub fn sample(
    ctx: &Context,
    unet: &mut UNet,
    plan: &SamplerPlan,
    input: &ChainInput,
    progress: Progress,
) -> Result<Vec<f32>> {
    let cfg = unet.config.clone();
    let per = cfg.in_channels * cfg.sample_size * cfg.sample_size;
    if cfg.in_channels != cfg.out_channels {
        return Err(Error::Invalid(format!(
            "sampling needs out_channels == in_channels, the model has {} and {}",
            cfg.out_channels, cfg.in_channels
        )));
    }
    if input.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    if let Some(x) = input.init_noise {
        if x.len() != input.batch * per {
            return Err(Error::Shape(format!(
                "initial noise has {} values, {} images of [{}, {}, {}] need {}",
                x.len(),
                input.batch,
                cfg.in_channels,
                cfg.sample_size,
                cfg.sample_size,
                input.batch * per
            )));
        }
    }
    let micro = input.batch.min(unet.max_batch(ctx)?);
    let net = unet.executable(ctx, micro)?;
    let len = micro * per;
    let steps = plan.rows.len();
    let x = ctx.zeros(&[len])?;
    let noise = ctx.zeros(&[len])?;
    let prev_x0 = ctx.zeros(&[len])?;
    let table = ctx.upload(bytemuck::cast_slice(&plan.rows), &[steps * diffusion::ROW_LEN])?;
    let counter = ctx.upload_u32(&[0], &[1])?;

    let total = steps * input.batch.div_ceil(micro);
    let mut done = 0;
    let mut out = Vec::with_capacity(input.batch * per);
    for start in (0..input.batch).step_by(micro) {
        let n = micro.min(input.batch - start);
        // x_T = init_noise_sigma * z, with z from the file or from (seed, image index, substream 0).
        let sigma = plan.init_noise_sigma as f32;
        let init = match input.init_noise {
            Some(z) => {
                let mut chunk: Vec<f32> =
                    z[start * per..(start + n) * per].iter().map(|v| v * sigma).collect();
                chunk.resize(len, 0.0);
                ctx.queue.write_buffer(&x.buffer, 0, bytemuck::cast_slice(&chunk));
                vec![]
            }
            None => {
                let key =
                    rng::NoiseKey { seed: input.seed, stream_base: start as u32, substream: INIT_SUBSTREAM };
                vec![
                    rng::normal(ctx, key, micro, per, None, &noise.buffer)?,
                    elementwise::affine(ctx, len, sigma, 0.0, &noise.buffer, &x.buffer)?,
                ]
            }
        };
        ctx.queue.write_buffer(&counter.buffer, 0, bytemuck::cast_slice(&[0u32]));
        let mut step_list: Vec<Dispatch> = vec![diffusion::prepare_step(
            ctx,
            micro,
            len,
            steps,
            &x.buffer,
            &table.buffer,
            &counter.buffer,
            net.sample_buffer(),
            net.timesteps_buffer(),
        )?];
        step_list.extend(net.exe.dispatches.iter().cloned());
        if plan.adds_noise {
            let key =
                rng::NoiseKey { seed: input.seed, stream_base: start as u32, substream: STEP_SUBSTREAM };
            step_list.push(rng::normal(ctx, key, micro, per, Some(&counter.buffer), &noise.buffer)?);
        }
        let bufs = diffusion::StepBuffers {
            x: &x.buffer,
            model_out: net.output_buffer(),
            noise: &noise.buffer,
            prev_x0: &prev_x0.buffer,
            table: &table.buffer,
            step_counter: &counter.buffer,
        };
        step_list.push(diffusion::sampler_step(ctx, len, steps, &bufs)?);
        step_list.push(diffusion::advance_step(ctx, &counter.buffer)?);

        // Submit a first step alone, then chunks sized to about half a second each, so progress
        // moves on slow devices while fast ones get many steps per submission.
        let mut recorded = 0;
        let mut per_step = f64::INFINITY;
        while recorded < steps {
            let chunk = if per_step.is_finite() { ((0.5 / per_step) as usize).clamp(1, 64) } else { 1 };
            let chunk = chunk.min(steps - recorded);
            let t0 = Instant::now();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            let first = if recorded == 0 { &init[..] } else { &[] };
            crate::gpu::record_all(&mut enc, first.iter().chain((0..chunk).flat_map(|_| &step_list)));
            ctx.queue.submit([enc.finish()]);
            ctx.wait()?;
            per_step = t0.elapsed().as_secs_f64() / chunk as f64;
            recorded += chunk;
            done += chunk;
            progress(done, total);
        }
        let y = ctx.read_buffer(&x.buffer, len)?;
        out.extend_from_slice(&y[..n * per]);
    }
    Ok(out)
}
